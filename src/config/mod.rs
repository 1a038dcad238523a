//! The configuration file: raw serde structs that reject unknown keys, checked into a typed
//! [`Config`] that reports every problem at once, each with its key's path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Exit, fault};

mod check;
mod raw;
mod secret;
mod url;

pub use secret::Secret;
pub use url::is_moref;

use check::Checker;
use raw::RawConfig;
use secret::read;

/// Where the configuration is looked for when neither `--config` nor `OTNSX_CONFIG` names it.
pub const SYSTEM_CONFIG: &str = "/etc/otnsx/otnsx.toml";

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
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Secret,
    /// The CAs that may sign the server's certificate (`None`: the system's).
    pub ca_file: Option<PathBuf>,
    /// Whether the connection is TLS: always, except to a loopback address without `ca_file`.
    pub tls: bool,
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
}

/// Finds the configuration file: the explicit path (`--config` or `OTNSX_CONFIG`), else
/// [`SYSTEM_CONFIG`], else `otnsx.toml` in the user's config directory. A file that is there
/// but cannot be read is said as such (with the OS's reason and the access otnsx needs), never
/// as missing: exit 78 either way.
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return match readable(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fault(
                Exit::Config,
                format!(
                    "no configuration file at {}; write one (see {EXAMPLE_CONFIG})",
                    path.display()
                ),
            )),
            Err(e) => Err(fault(Exit::Config, unreadable(path, &e))),
            Ok(()) => Ok(path.to_path_buf()),
        };
    }
    let mut tried = vec![PathBuf::from(SYSTEM_CONFIG)];
    if let Some(dirs) = directories::ProjectDirs::from("", "", "otnsx") {
        tried.push(dirs.config_dir().join("otnsx.toml"));
    }
    for path in &tried {
        match readable(path) {
            Ok(()) => return Ok(path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fault(Exit::Config, unreadable(path, &e))),
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(fault(
        Exit::Config,
        format!(
            "no configuration file: looked in {}; write one (see {EXAMPLE_CONFIG}) or pass --config",
            list.join(" and ")
        ),
    ))
}

/// Where the package installs the example configuration.
pub const EXAMPLE_CONFIG: &str = "/usr/share/doc/otnsx/otnsx.toml.example";

/// Whether `path` can be opened for reading: the OS's error if not (a directory on the way
/// that otnsx may not search, or the file's own mode). Opens without blocking, so that a FIFO
/// is no hang; what the file is, is checked when it is read.
fn readable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map(drop)
}

/// Why the configuration at `path` cannot be read, and, for a permission, what access otnsx
/// needs as the user it runs as (the package's file is `root:www-data 0640`).
fn unreadable(path: &Path, err: &std::io::Error) -> String {
    // "Permission denied (os error 13)" as "permission denied".
    let text = err.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    let why: String = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default();
    if err.kind() != std::io::ErrorKind::PermissionDenied {
        return format!("cannot read {}: {why}", path.display());
    }
    let (_, euid) = crate::sys::uids();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == euid).then(|| name.to_string())
        })
        .filter(|name| !name.chars().any(crate::escape::is_hostile))
        .unwrap_or_else(|| format!("uid {euid}"));
    format!(
        "cannot read {}: {why}; otnsx runs as {user} here and needs read access to the file and search access to its directories: the package installs it root:www-data 0640 (in /etc/otnsx, root:www-data 0750), for the help desk's web server user; run otnsx as that user, or add {user} to the file's group",
        path.display()
    )
}

impl Config {
    /// Reads and checks the file at `path`, reading the secrets it points to.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let (text, mode) = read(path).map_err(|why| fault(Exit::Config, why))?;
        Config::parse(&text, path, mode)
    }

    /// Like [`Config::load`], with every problem apart (for `otnsx check`).
    pub fn check_file(path: &Path) -> Result<Config, Vec<String>> {
        let (text, mode) = read(path).map_err(|why| vec![why])?;
        Config::check_text(&text, path, mode)
    }

    /// Checks configuration text as if read from `path` with permission bits `mode`.
    pub fn parse(text: &str, path: &Path, mode: u32) -> anyhow::Result<Config> {
        Config::check_text(text, path, mode).map_err(|problems| {
            fault(
                Exit::Config,
                format!("{} is invalid: {}", path.display(), problems.join("; ")),
            )
        })
    }

    /// Checks configuration text without reading any secret: no password file is read and no
    /// password command is run (for the fuzz target, whose input may name anything).
    pub fn check_offline(text: &str) -> Result<Config, Vec<String>> {
        Config::check_with(text, Path::new("/nonexistent/otnsx.toml"), 0o600, false)
    }

    fn check_text(text: &str, path: &Path, mode: u32) -> Result<Config, Vec<String>> {
        Config::check_with(text, path, mode, true)
    }

    fn check_with(
        text: &str,
        path: &Path,
        mode: u32,
        read_secrets: bool,
    ) -> Result<Config, Vec<String>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim_end().to_string();
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            vec![match line {
                Some(line) => format!("line {line}: {msg}"),
                None => msg,
            }]
        })?;
        let mut check = Checker {
            problems: Vec::new(),
            read_secrets,
            command_timeout: Duration::from_secs(20),
            base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            world_readable: mode & 0o004 != 0,
        };
        match check.config(raw) {
            Some(config) if check.problems.is_empty() => Ok(config),
            _ => Err(check.problems),
        }
    }
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, Path::new("/etc/otnsx/otnsx.toml"), 0o640)
    }

    const MINIMAL: &str = r#"
        state_dir = "/var/lib/otnsx"
        [vcenter]
        url = "https://vc.example.com"
        user = "otnsx@vsphere.local"
        password = "vc-secret"
        [nsx]
        kind = "nsx-v"
        url = "https://nsx.example.com/"
        user = "admin"
        password = "nsx-secret"
        tag = "otnsx-maintenance"
    "#;

    #[test]
    fn example_config_parses() {
        let dir = std::env::temp_dir().join(format!("otnsx-example-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        for name in ["otrs.secret", "vcenter.secret", "nsx.secret"] {
            let file = dir.join(name);
            fs::write(&file, "pw\n").expect("write secret");
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let text = include_str!("../../otnsx.toml.example").replace("/etc/otnsx/", "");
        let config = Config::parse(&text, &dir.join("otnsx.toml"), 0o640).expect("example parses");
        assert_eq!(config.deadline, Duration::from_secs(20));
        assert_eq!(config.policy.max_duration, Duration::from_secs(8 * 3600));
        assert_eq!(
            config.otrs.as_ref().map(|o| o.vm_field.as_str()),
            Some("VMName")
        );
        assert_eq!(config.nsx.endpoint.password.expose(), "pw");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn example_profile_parses() {
        let example = include_str!("../../otnsx.toml.example");
        let start = example.find("# [profiles.ssh]").expect("profile block");
        let block: String = example[start..]
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let text = format!("{}\n{block}", example)
            .replace("/etc/otnsx/", "")
            .replace("password_file = \"otrs.secret\"", "password = \"x\"")
            .replace("password_file = \"vcenter.secret\"", "password = \"x\"")
            .replace("password_file = \"nsx.secret\"", "password = \"x\"");
        let config = Config::parse(&text, Path::new("/etc/otnsx/otnsx.toml"), 0o640)
            .expect("the profile example parses");
        let ssh = config.profile("ssh").expect("ssh");
        assert_eq!(ssh.tag, "maintenance-ssh");
        assert_eq!(config.profile("default").map(|p| p.key.clone()), Some(None));
        assert_eq!(config.policy.default_profile, None);
    }

    /// The commented block of the example that starts at `start`, up to a blank line,
    /// uncommented once.
    fn example_block(start: &str) -> String {
        let example = include_str!("../../otnsx.toml.example");
        let at = example.find(start).expect("block");
        example[at..]
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| {
                format!(
                    "{}\n",
                    l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#'))
                )
            })
            .collect()
    }

    #[test]
    fn example_state_database_parses_and_is_tls_off_loopback() {
        let example = include_str!("../../otnsx.toml.example");
        let text = format!(
            "{}{}",
            &example[..example.find("[otrs]").expect("[otrs]")],
            example_block("# [state]").replace(
                "password_file = \"/etc/otnsx/db.secret\"",
                "password = \"x\""
            )
        ) + &example[example.find("[otrs]").expect("[otrs]")..];
        let text = inline_passwords(&text);
        let config = Config::parse(&text, Path::new("/etc/otnsx/otnsx.toml"), 0o640)
            .expect("the [state] example parses");
        let db = config.database.expect("postgres");
        assert_eq!(
            (
                db.host.as_str(),
                db.port,
                db.user.as_str(),
                db.dbname.as_str()
            ),
            ("db.example.com", 5432, "otnsx", "otnsx")
        );
        assert!(db.tls, "a database off loopback is reached over TLS");
        assert_eq!(db.password.expose(), "x");
        let local = text.replace("db.example.com", "127.0.0.1");
        let config = Config::parse(&local, Path::new("/etc/otnsx/otnsx.toml"), 0o640).unwrap();
        assert!(!config.database.unwrap().tls, "loopback without ca_file");
        let file = parse(&format!("{MINIMAL}\n[state]\nbackend = \"file\"\n")).unwrap();
        assert!(file.database.is_none());
        for (bad, says) in [
            ("backend = \"sqlite\"", "state.backend"),
            (
                "backend = \"file\"\nurl = \"postgres://o@h/d\"",
                "state.url: only for",
            ),
            (
                "backend = \"postgres\"\npassword = \"x\"",
                "state.url: missing",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://o@h/d\"",
                "state.password: missing",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://o:pw@h/d\"\npassword = \"x\"",
                "state.url: must not carry the password",
            ),
        ] {
            let err = parse(&format!("{MINIMAL}\n[state]\n{bad}\n")).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{bad}: {err:#}");
        }
    }

    #[test]
    fn example_agent_rules_parse() {
        let text = format!(
            "{}\n{}\n{}",
            nsxt_example(),
            // The profile's services, optional there, are what agent mode needs.
            example_block("# [profiles.ssh]").replace("# services = ", "services = "),
            example_block("# [source]")
        );
        let config = Config::parse(&text, Path::new("/etc/otnsx/otnsx.toml"), 0o640)
            .expect("the per-agent example parses");
        let source = config.source.clone().expect("agent mode");
        assert_eq!(source.security_policy, "otnsx-jit");
        assert_eq!(source.agents["agent1"], ["10.1.2.3/32"]);
        assert_eq!(
            config.profile("ssh").unwrap().services,
            ["/infra/services/SSH"]
        );
        assert_eq!(
            config.profile("default").unwrap().services,
            ["/infra/services/RDP"]
        );
    }

    #[test]
    fn example_nsxt_alternative_parses() {
        let config = Config::parse(&nsxt_example(), Path::new("/etc/otnsx/otnsx.toml"), 0o640)
            .expect("NSX-T example parses");
        assert_eq!(config.nsx.kind, NsxKind::NsxPolicy);
        assert_eq!(config.nsx.verify, None);
        assert_eq!(
            (config.nsx.scope.as_str(), config.nsx.tag.as_str()),
            ("otnsx", "maintenance")
        );
        assert_eq!(config.nsx.resolve, Resolve::Vcenter);
        assert_eq!(config.nsx.auth, NsxAuth::Basic);
    }

    /// The example with its NSX-T alternative instead of the NSX-V `[nsx]`, inline passwords.
    fn nsxt_example() -> String {
        let example = include_str!("../../otnsx.toml.example");
        let start = example.find("# --- NSX-T").expect("NSX-T block");
        let end = example
            .find("# --- end of the NSX-T alternative ---")
            .expect("block end");
        let block: String = example[start..end]
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let nsx_v = example.find("[nsx]\n").expect("[nsx]");
        inline_passwords(&format!(
            "{}{block}\n{}",
            &example[..nsx_v],
            &example[end..]
        ))
    }

    /// The example's services with inline passwords instead of their password files.
    fn inline_passwords(text: &str) -> String {
        ["otrs", "vcenter", "nsx"]
            .iter()
            .fold(text.to_string(), |text, service| {
                text.replace(
                    &format!("password_file = \"/etc/otnsx/{service}.secret\""),
                    "password = \"x\"",
                )
            })
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).expect("parses");
        assert_eq!(c.deadline, Duration::from_secs(20));
        assert_eq!(c.policy.manual_duration, Duration::from_secs(3600));
        assert_eq!(c.nsx.endpoint.url, "https://nsx.example.com");
        assert!(c.otrs.is_none());
        assert_eq!(c.vcenter.as_ref().map(|v| v.api), Some(ApiGeneration::Auto));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = parse(&MINIMAL.replace("tag =", "tagg =")).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), Exit::Config);
        assert!(format!("{err:#}").contains("tagg"), "{err:#}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = MINIMAL
            .replace("https://vc.example.com", "vc.example.com")
            .replace("kind = \"nsx-v\"\n", "")
            .replace("state_dir", "deadline = \"soon\"\nstate_dir");
        let msg = format!("{:#}", parse(&text).unwrap_err());
        for key in ["vcenter.url", "nsx.kind", "deadline"] {
            assert!(msg.contains(key), "{key} missing from {msg}");
        }
    }

    #[test]
    fn inline_password_in_world_readable_file_is_refused() {
        let err = Config::parse(MINIMAL, Path::new("/x/otnsx.toml"), 0o644).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("world-readable"), "{msg}");
        assert!(!msg.contains("nsx-secret"), "{msg}");
        assert!(Config::parse(MINIMAL, Path::new("/x/otnsx.toml"), 0o640).is_ok());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = parse(MINIMAL).expect("parses");
        let shown = format!("{c:?}");
        assert!(!shown.contains("nsx-secret") && !shown.contains("vc-secret"));
        assert!(shown.contains("(redacted)"));
    }
}
