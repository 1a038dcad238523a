//! The checked configuration as the rest of otnsx reads it: [`Config`] and its parts, and the
//! limits a value must keep. `check.rs` makes one from the raw file (`raw.rs`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::secret::Secret;

/// The longest duration a configuration may give: ten years.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// vSphere's limit on a VM name, in characters.
pub const MAX_VM_NAME: usize = 80;

/// The longest ticket number otnsx takes (OTRS's ticket number column holds 50 characters).
pub const MAX_TICKET_NUMBER: usize = 64;

/// A ticket number as otnsx takes it (from the command line or the help desk) and stores it:
/// 1 to [`MAX_TICKET_NUMBER`] ASCII digits. The number generators of OTRS, Znuny and OTOBO
/// (DateChecksum, Date, AutoIncrement) make digits only.
pub fn is_ticket_number(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_TICKET_NUMBER && text.bytes().all(|b| b.is_ascii_digit())
}

/// The longest login (of an agent, or an OS user holding a grant) otnsx stores, in characters.
pub const MAX_LOGIN: usize = 256;

/// A login as otnsx takes it (a ticket's owner, `[agents]`, the OS user of a grant) and stores
/// it: 1 to [`MAX_LOGIN`] characters, no control characters.
pub fn is_login(text: &str) -> bool {
    !text.is_empty() && text.chars().count() <= MAX_LOGIN && !text.chars().any(char::is_control)
}

/// An access profile's name: 1 to 32 of `a-z`, `0-9`, `-` and `_`, starting with a letter.
pub fn is_profile_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A password. Its `Debug` and `Display` never show it.
#[derive(Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    pub deadline: Duration,
    pub otrs: Option<OtrsConfig>,
    pub vcenter: Option<VcenterConfig>,
    pub nsx: NsxConfig,
    pub policy: Policy,
    pub log: Log,
    /// The access profiles: that of `[nsx] tag` first (named `default`, key `None`), if it is
    /// given, then `[profiles.NAME]` by name.
    pub profiles: Vec<Profile>,
    /// `[source] mode = "agent"`: a firewall rule per agent instead of the tag.
    pub source: Option<AgentSource>,
    /// `[state] backend = "postgres"`: the leases and the journal in this database (`None`:
    /// in files in `state_dir`).
    pub database: Option<Database>,
}

/// The PostgreSQL database that holds the leases and the journal.
#[derive(Debug, Clone)]
pub struct Database {
    /// As configured, for messages (it carries no password).
    pub url: String,
    /// The servers to try, in order, each with its port: the first that takes the connection
    /// and is writable (libpq's `target_session_attrs=read-write`) serves the run.
    pub hosts: Vec<(String, u16)>,
    pub user: String,
    pub dbname: String,
    pub password: Secret,
    /// The CAs that may sign the server's certificate (`None`: the system's).
    pub ca_file: Option<PathBuf>,
    /// Whether the connection is TLS: always, except to loopback addresses without `ca_file`
    /// (or with `sslmode=disable`, loopback only).
    pub tls: bool,
    /// Whether the server's certificate and name are verified: always, but with
    /// `sslmode=require` and `accept_unverified_server = true` (warned on every run).
    pub verify_server: bool,
    /// The URL's `connect_timeout`, if any: each try of each host waits at most this long (and
    /// never beyond what the deadline leaves).
    pub connect_timeout: Option<std::time::Duration>,
}

/// Per-agent rules: each opening is a distributed-firewall rule from the locking agent's
/// desktop to the VM, for the profile's services, in a security policy the site made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSource {
    pub security_policy: String,
    pub domain: String,
    /// Read each written rule's realized state; an ERROR there fails the change (69).
    pub verify_realized: bool,
    /// The addresses of each agent's desktop (IPv4/IPv6 addresses or CIDRs), by login.
    pub agents: std::collections::BTreeMap<String, Vec<String>>,
    /// For agents not in `agents`: the name of their desktop VM, `{login}` standing for the
    /// agent's login; its addresses are those NSX knows for the VM's interfaces.
    pub desktop: Option<String>,
}

impl AgentSource {
    /// Every network `[agents]` lists, with its agent (the configuration checked them all).
    pub fn listed_networks(&self) -> Vec<(&str, Network)> {
        self.agents
            .iter()
            .flat_map(|(agent, addresses)| {
                addresses
                    .iter()
                    .filter_map(|a| Network::parse(a).ok())
                    .map(move |n| (agent.as_str(), n))
            })
            .collect()
    }
}

/// An IPv4 or IPv6 network as `[agents]` gives it: an address (the network of that one
/// address), or an address and a prefix length (`10.1.2.0/24`), no host bit set under the
/// prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Network {
    pub address: IpAddr,
    pub prefix: u8,
}

/// Why a text is not a [`Network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkError {
    /// Not an IPv4 or IPv6 address, or a prefix that is not 0 to 32 (IPv4) or 128 (IPv6).
    Malformed,
    /// A host bit is set under the prefix (`10.1.2.3/24`): the network meant.
    HostBits(Network),
}

/// Addresses no desktop has as its own, by what they are. A network that reaches into one is
/// no source of an agent's desktop. (IPv4: RFC 1122 3.2.1.3 for 0.0.0.0/8 and 127.0.0.0/8,
/// RFC 3927 for 169.254.0.0/16, RFC 5771 for 224.0.0.0/4, RFC 919 for the limited broadcast;
/// IPv6: RFC 4291 2.5.2, 2.5.3, 2.5.5.2, 2.5.6, 2.7.)
const NO_DESKTOP: [(&str, &str); 10] = [
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("::ffff:0:0/96", "IPv4-mapped"),
];

impl Network {
    /// `10.1.2.3`, `10.1.2.0/24`, `fd00::4`, `fd00::/64`. The prefix is decimal digits only.
    pub fn parse(text: &str) -> Result<Network, NetworkError> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| NetworkError::Malformed)?;
        let bits = Self::bits_of(address);
        let prefix = match prefix {
            None => bits,
            Some(p) if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u8>() {
                    Ok(n) if n <= bits => n,
                    _ => return Err(NetworkError::Malformed),
                }
            }
            Some(_) => return Err(NetworkError::Malformed),
        };
        let network = Network {
            address: masked(address, prefix),
            prefix,
        };
        if network.address != address {
            return Err(NetworkError::HostBits(network));
        }
        Ok(network)
    }

    /// The network of one address.
    pub fn host(address: IpAddr) -> Network {
        Network {
            address,
            prefix: Self::bits_of(address),
        }
    }

    fn bits_of(address: IpAddr) -> u8 {
        match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.address.is_ipv4()
    }

    /// Whether `address` lies in this network (never across IPv4 and IPv6).
    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv4() == self.is_ipv4() && masked(address, self.prefix) == self.address
    }

    /// Whether the two share an address: one holds the other.
    pub fn overlaps(&self, other: &Network) -> bool {
        match self.prefix <= other.prefix {
            true => self.contains(other.address),
            false => other.contains(self.address),
        }
    }

    /// What this network holds that no desktop has as its own, and that range, or `None`:
    /// "any address", "unspecified", "loopback", "link-local", "multicast", "broadcast" or
    /// "IPv4-mapped".
    pub fn no_desktop(&self) -> Option<(&'static str, &'static str)> {
        if self.prefix == 0 {
            return Some((
                "any address",
                if self.is_ipv4() { "0.0.0.0/0" } else { "::/0" },
            ));
        }
        NO_DESKTOP.iter().find_map(|&(range, what)| {
            let network = Network::parse(range).ok()?;
            network.overlaps(self).then_some((what, range))
        })
    }
}

/// `address` with every bit past `prefix` cleared.
fn masked(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// The name `[nsx] tag`'s profile goes by, in tickets, `grant --profile` and messages.
pub const NSX_TAG_PROFILE: &str = "default";

/// An access profile: which tag opens the VM, and on which VMs it may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    /// How leases and VMs name it: `None` for `[nsx] tag`'s, else `Some(name)`.
    pub key: Option<String>,
    /// NSX-V: the security tag's name; NSX-T / Policy: the tag's value.
    pub tag: String,
    /// NSX-T / Policy: the tag's scope.
    pub scope: String,
    /// Which VMs it may open, beside `[policy]` (both must allow); `None`: all that
    /// `[policy]` allows.
    pub vms: Option<crate::policy::VmPolicy>,
    /// Policy service paths a per-agent rule opens (`/infra/services/SSH`).
    pub services: Vec<String>,
    /// The group its tag puts VMs into, to wait for after each change (`verify_group`).
    pub verify: Option<VerifyGroup>,
    /// What a ticket must meet to open it, beside `[policy.require]` (`require`).
    pub require: crate::require::Conditions,
}

impl Config {
    /// The profile named `name` (`default` is `[nsx] tag`'s).
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The profile leases and VMs name by `key`.
    pub fn profile_by_key(&self, key: Option<&str>) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.key.as_deref() == key)
    }

    /// Whether `[profiles.NAME]` sections exist (then tickets may name a profile).
    pub fn has_profiles(&self) -> bool {
        self.profiles.iter().any(|p| p.key.is_some())
    }
}

/// How to reach and log in to one service.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Scheme, host, port and path, without a trailing slash.
    pub url: String,
    pub user: String,
    /// Empty when the service is logged in to with a client certificate.
    pub password: Secret,
    pub tls: Tls,
    /// A client certificate to log in with (NSX-T's principal identity), instead of a password.
    pub client: Option<ClientIdentity>,
}

/// A client certificate and its private key, as PEM, checked at loading.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub cert_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: Secret,
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    /// Accept exactly the certificate with this SHA-256 fingerprint.
    pub pin: Option<crate::http::pin::Fingerprint>,
    pub insecure: bool,
}

#[derive(Debug)]
pub struct OtrsConfig {
    pub endpoint: Endpoint,
    pub vm_field: String,
    /// A second dynamic field naming the access profile for every VM of the ticket.
    pub profile_field: Option<String>,
    /// Post an internal note to the ticket about every change otnsx makes for it.
    pub notes: bool,
    /// Let the help desk e-mail the ticket's agents about each note (off: `NoAgentNotify`).
    pub notify_agents: bool,
    /// The help desk's major version: 5 writes notes as `ArticleType` `note-internal`.
    pub version: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiGeneration {
    /// Try `/api` and fall back to `/rest` when vCenter answers 404.
    Auto,
    /// vSphere 7.0U2 and later.
    Api,
    /// vSphere 6.5 and later.
    Rest,
}

#[derive(Debug, Clone)]
pub struct VcenterConfig {
    pub endpoint: Endpoint,
    pub api: ApiGeneration,
    pub folder: Option<String>,
    pub datacenter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum NsxKind {
    /// NSX for vSphere 6.x: XML API, tag by name, VM by managed object id.
    #[serde(rename = "nsx-v")]
    NsxV,
    /// NSX-T 3.x and NSX 4.x: JSON API, `{scope, tag}` pairs, VM by `external_id`.
    #[serde(rename = "nsx-t")]
    NsxT,
    /// NSX-T 3.2+ and NSX 4.x through the Policy API: the same tags and VMs as `nsx-t`, changed
    /// by tag operations that a least-privilege role may make.
    #[serde(rename = "nsx-policy")]
    NsxPolicy,
}

impl NsxKind {
    /// The product's name, for messages.
    pub fn product(self) -> &'static str {
        match self {
            NsxKind::NsxV => "NSX-V",
            NsxKind::NsxT => "NSX-T",
            NsxKind::NsxPolicy => "NSX Policy",
        }
    }

    /// Whether tags are `{scope, tag}` pairs on VMs named by `external_id`, in NSX's JSON API
    /// (`nsx-t` and `nsx-policy`), with its ways of logging in.
    pub fn json(self) -> bool {
        matches!(self, NsxKind::NsxT | NsxKind::NsxPolicy)
    }
}

/// How otnsx logs in to NSX-T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsxAuth {
    /// HTTP basic auth on every request.
    Basic,
    /// `POST /api/session/create`: a `JSESSIONID` cookie and an `X-XSRF-TOKEN` header.
    Session,
}

/// Where NSX-T VMs are looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolve {
    /// By `display_name` in NSX's own inventory.
    Nsx,
    /// In vCenter (name → managed object id → instance UUID), then the NSX VM whose
    /// `external_id` or `compute_ids` carry that UUID.
    Vcenter,
}

#[derive(Debug)]
pub struct NsxConfig {
    pub kind: NsxKind,
    pub endpoint: Endpoint,
    /// NSX-V: the security tag's name. NSX-T: the tag's value.
    pub tag: String,
    /// NSX-T: the tag's scope.
    pub scope: String,
    pub auth: NsxAuth,
    pub resolve: Resolve,
    /// The group whose effective members confirm that the tag has taken effect, if any.
    pub verify: Option<VerifyGroup>,
}

/// `nsx.verify_group` (and `verify_domain`): after each change otnsx waits until the VM is in
/// (or out of) this group's effective members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyGroup {
    /// NSX-T / Policy: the group's id; NSX-V: the security group's object id.
    pub group: String,
    /// NSX-T / Policy: the domain the group is in (`default` unless set).
    pub domain: String,
}

/// Where journal entries also go.
#[derive(Debug, Clone)]
pub struct Log {
    /// Send each journal entry to the local syslog socket too.
    pub syslog: bool,
    pub facility: u8,
    pub socket: PathBuf,
    /// When otnsx rotates the journal file.
    pub rotation: crate::state::rotation::Rotation,
}

/// The syslog facility names `log.facility` may give, and their numbers (RFC 5424, section
/// 6.2.1).
pub const FACILITIES: [(&str, u8); 20] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

#[derive(Debug)]
pub struct Policy {
    pub max_duration: Duration,
    pub manual_duration: Duration,
    /// The longest `grant --for` (and manual lease) allowed: `policy.max_grant`, by default
    /// `max_duration`.
    pub max_grant: Duration,
    /// Which VMs may be opened.
    pub vms: crate::policy::VmPolicy,
    /// The profile a ticket or grant gets when it names none (its key).
    pub default_profile: Option<String>,
    /// What every ticket must meet to open anything (`[policy.require]`).
    pub require: crate::require::Conditions,
}

impl Config {
    /// The services, by their names in messages, with how to reach them.
    pub fn endpoints(&self) -> Vec<(&'static str, &Endpoint)> {
        let mut out = Vec::new();
        if let Some(o) = &self.otrs {
            out.push(("help desk", &o.endpoint));
        }
        if let Some(v) = &self.vcenter {
            out.push(("vCenter", &v.endpoint));
        }
        out.push(("NSX", &self.nsx.endpoint));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Network {
        Network::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn networks_parse_with_and_without_a_prefix() {
        assert_eq!(net("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(net("10.1.2.0/24").to_string(), "10.1.2.0/24");
        assert_eq!(net("fd00::4").to_string(), "fd00::4/128");
        assert_eq!(net("fd00::/64").to_string(), "fd00::/64");
        assert_eq!(net("0.0.0.0/0").prefix, 0);
        assert_eq!(net("::/0").prefix, 0);
        for bad in [
            "",
            "10.1.2",
            "10.1.2.300",
            "10.1.2.3/33",
            "fd00::/129",
            "10.1.2.3/",
            "10.1.2.3/+8",
            "10.1.2.3/-1",
            "10.1.2.3/ 8",
            "10.1.2.3/0008",
            "10.1.2.3/24/1",
            "010.1.2.3",
            "host.example",
            "[fd00::1]",
            "fd00::1%eth0",
        ] {
            assert_eq!(Network::parse(bad), Err(NetworkError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_host_bit_under_the_prefix_names_the_network_meant() {
        assert_eq!(
            Network::parse("10.1.2.3/24"),
            Err(NetworkError::HostBits(net("10.1.2.0/24")))
        );
        assert_eq!(
            Network::parse("fd00::1:2/64"),
            Err(NetworkError::HostBits(net("fd00::/64")))
        );
        assert_eq!(
            Network::parse("10.1.2.3/0"),
            Err(NetworkError::HostBits(net("0.0.0.0/0")))
        );
        assert!(Network::parse("10.1.2.3/32").is_ok());
        assert!(Network::parse("10.1.2.128/25").is_ok());
    }

    #[test]
    fn containment_and_overlap_stay_within_one_family() {
        let lan = net("10.1.2.0/24");
        assert!(lan.contains("10.1.2.0".parse().unwrap()));
        assert!(lan.contains("10.1.2.255".parse().unwrap()));
        assert!(!lan.contains("10.1.3.0".parse().unwrap()));
        assert!(!lan.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(lan.overlaps(&net("10.1.2.4")) && net("10.1.2.4").overlaps(&lan));
        assert!(lan.overlaps(&lan));
        assert!(!lan.overlaps(&net("10.1.3.0/24")));
        assert!(net("10.0.0.0/8").overlaps(&lan));
        let v6 = net("fd00:1::/64");
        assert!(v6.contains("fd00:1::ffff".parse().unwrap()));
        assert!(!v6.contains("fd00:2::1".parse().unwrap()));
        assert!(!v6.overlaps(&net("0.0.0.0/0")));
        assert!(net("::/0").contains("fd00:2::1".parse().unwrap()));
    }

    #[test]
    fn what_no_desktop_owns_is_named() {
        for (text, what) in [
            ("0.0.0.0/0", "any address"),
            ("::/0", "any address"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.0.0.0/8", "loopback"),
            ("::1", "loopback"),
            ("169.254.1.2", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::/16", "link-local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::ffff:10.1.2.3", "IPv4-mapped"),
            // A wide network that reaches into one.
            ("192.0.0.0/2", "multicast"),
        ] {
            assert_eq!(net(text).no_desktop().map(|w| w.0), Some(what), "{text}");
        }
        for text in [
            "10.1.2.3",
            "192.168.0.0/16",
            "fd00::4",
            "2001:db8::/64",
            "fec0::1",
        ] {
            assert_eq!(net(text).no_desktop(), None, "{text}");
        }
    }
}
