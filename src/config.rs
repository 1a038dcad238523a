//! The configuration file: raw serde structs that reject unknown keys, checked into a typed
//! [`Config`] that reports every problem at once, each with its key's path.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Exit, fault};
use crate::time::parse_duration;

/// Where the configuration is looked for when neither `--config` nor `OTNSX_CONFIG` names it.
pub const SYSTEM_CONFIG: &str = "/etc/otnsx/otnsx.toml";

/// The longest duration a configuration may give: ten years.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// vSphere's limit on a VM name, in characters.
pub const MAX_VM_NAME: usize = 80;

/// A password. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

#[derive(Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    pub deadline: Duration,
    pub otrs: Option<OtrsConfig>,
    pub vcenter: Option<VcenterConfig>,
    pub nsx: NsxConfig,
    pub policy: Policy,
    pub log: Log,
}

/// How to reach and log in to one service.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Scheme, host, port and path, without a trailing slash.
    pub url: String,
    pub user: String,
    pub password: Secret,
    pub tls: Tls,
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    /// Accept exactly the certificate with this SHA-256 fingerprint.
    pub pin: Option<crate::pin::Fingerprint>,
    pub insecure: bool,
}

#[derive(Debug)]
pub struct OtrsConfig {
    pub endpoint: Endpoint,
    pub vm_field: String,
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

#[derive(Debug)]
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
}

/// Where journal entries also go.
#[derive(Debug, Clone)]
pub struct Log {
    /// Send each journal entry to the local syslog socket too.
    pub syslog: bool,
    pub facility: u8,
    pub socket: PathBuf,
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
}

/// Declares a raw config section: the keys every service takes, plus its own.
macro_rules! raw_service_section {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct $name {
            url: Option<String>,
            user: Option<String>,
            password: Option<String>,
            password_file: Option<PathBuf>,
            password_env: Option<String>,
            password_command: Option<Vec<String>>,
            ca_file: Option<PathBuf>,
            tls_sha256: Option<String>,
            insecure: Option<bool>,
            $($field: $ty,)*
        }

        impl $name {
            fn endpoint_keys(&self) -> RawEndpoint<'_> {
                RawEndpoint {
                    url: self.url.as_deref(),
                    user: self.user.as_deref(),
                    password: self.password.as_deref(),
                    password_file: self.password_file.as_deref(),
                    password_env: self.password_env.as_deref(),
                    password_command: self.password_command.as_deref(),
                    ca_file: self.ca_file.as_deref(),
                    tls_sha256: self.tls_sha256.as_deref(),
                    insecure: self.insecure,
                }
            }
        }
    };
}

raw_service_section!(RawOtrs {
    vm_field: Option<String>,
    notes: Option<bool>,
    notify_agents: Option<bool>,
    version: Option<u32>,
});
raw_service_section!(RawVcenter {
    api: Option<ApiGeneration>,
    folder: Option<String>,
    datacenter: Option<String>,
});
raw_service_section!(RawNsx {
    kind: Option<NsxKind>,
    tag: Option<String>,
    scope: Option<String>,
    auth: Option<NsxAuth>,
    resolve: Option<Resolve>,
});

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    max_duration: Option<String>,
    manual_duration: Option<String>,
    max_grant: Option<String>,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    syslog: Option<bool>,
    facility: Option<String>,
    socket: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    deadline: Option<String>,
    otrs: Option<RawOtrs>,
    vcenter: Option<RawVcenter>,
    nsx: Option<RawNsx>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    log: RawLog,
}

struct RawEndpoint<'a> {
    url: Option<&'a str>,
    user: Option<&'a str>,
    password: Option<&'a str>,
    password_file: Option<&'a Path>,
    password_env: Option<&'a str>,
    password_command: Option<&'a [String]>,
    ca_file: Option<&'a Path>,
    tls_sha256: Option<&'a str>,
    insecure: Option<bool>,
}

/// Finds the configuration file: the explicit path (`--config` or `OTNSX_CONFIG`), else
/// [`SYSTEM_CONFIG`], else `otnsx.toml` in the user's config directory.
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let mut tried = vec![PathBuf::from(SYSTEM_CONFIG)];
    if let Some(dirs) = directories::ProjectDirs::from("", "", "otnsx") {
        tried.push(dirs.config_dir().join("otnsx.toml"));
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(fault(
        Exit::Config,
        format!(
            "no configuration file: looked in {}; write one (see otnsx.toml.example) or pass --config",
            list.join(" and ")
        ),
    ))
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

/// The file's text and permission bits.
fn read(path: &Path) -> Result<(String, u32), String> {
    let (text, meta) = read_trusted(path, MAX_CONFIG)?;
    Ok((text, meta.permissions().mode()))
}

/// The largest configuration or secret file otnsx reads.
const MAX_CONFIG: u64 = 1 << 20;

/// Reads a configuration or secret file that otnsx may trust: a regular file (never a FIFO or
/// a device, which could block or never end) of at most `max` bytes, not writable by every
/// user, and, when otnsx runs as root, owned by root or by the user otnsx runs as (the rule
/// of ssh's StrictModes): another user could otherwise rewrite what root believes.
fn read_trusted(path: &Path, max: u64) -> Result<(String, fs::Metadata), String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let file = crate::sys::open_regular(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the permissions of {}: {e}", path.display()))?;
    if meta.len() > max {
        return Err(format!(
            "{} is larger than {} KiB; it cannot be a configuration or secret file",
            path.display(),
            max >> 10
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "{} is writable by every user (mode {:o}); chmod o-w it",
            path.display(),
            mode & 0o7777
        ));
    }
    let (_, euid) = crate::sys::uids();
    if euid == 0 && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to uid {}, but otnsx runs as root: only root may own the files root trusts (chown root it)",
            path.display(),
            meta.uid()
        ));
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > max {
        return Err(format!(
            "{} grew past {} KiB while read",
            path.display(),
            max >> 10
        ));
    }
    Ok((text, meta))
}

struct Checker {
    problems: Vec<String>,
    /// Whether to read password files and run password commands (not when fuzzing).
    read_secrets: bool,
    /// How long a password_command may take: the run's deadline.
    command_timeout: Duration,
    base: PathBuf,
    world_readable: bool,
}

impl Checker {
    fn problem(&mut self, key: &str, what: impl fmt::Display) {
        self.problems.push(format!("{key}: {what}"));
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let state_dir = match raw.state_dir {
            Some(dir) => self.resolve(&dir),
            None => directories::ProjectDirs::from("", "", "otnsx")
                .map(|d| d.data_dir().to_path_buf())
                .unwrap_or_else(|| {
                    self.problem("state_dir", "no default for this user; set it");
                    PathBuf::new()
                }),
        };
        let deadline = self.duration("deadline", raw.deadline.as_deref(), "20s", true);
        if !deadline.is_zero() {
            self.command_timeout = deadline;
        }
        let otrs = raw.otrs.map(|o| self.otrs(&o));
        let vcenter = raw.vcenter.as_ref().map(|v| self.vcenter(v));
        let nsx = match raw.nsx {
            Some(n) => self.nsx(&n, raw.vcenter.is_some()),
            None => {
                self.problem("nsx", "section missing");
                None
            }
        };
        let nsx = nsx?;
        if vcenter.is_none() && (nsx.kind == NsxKind::NsxV || nsx.resolve == Resolve::Vcenter) {
            let why = if nsx.kind == NsxKind::NsxV {
                "nsx.kind = \"nsx-v\" needs it"
            } else {
                "nsx.resolve = \"vcenter\" needs it"
            };
            self.problem("vcenter", format!("section missing ({why})"));
        }
        for (key, patterns) in [
            ("policy.allow", &raw.policy.allow),
            ("policy.deny", &raw.policy.deny),
        ] {
            for pattern in patterns.iter().flatten() {
                if pattern.is_empty()
                    || pattern.chars().count() > MAX_VM_NAME
                    || pattern.chars().any(char::is_control)
                {
                    self.problem(
                        key,
                        format!("{pattern:?} is not a pattern of 1 to {MAX_VM_NAME} characters"),
                    );
                }
            }
        }
        let max_duration = self.duration(
            "policy.max_duration",
            raw.policy.max_duration.as_deref(),
            "8h",
            true,
        );
        let max_grant = match raw.policy.max_grant.as_deref() {
            Some(text) => self.duration("policy.max_grant", Some(text), "", true),
            None => max_duration,
        };
        let manual_duration = self.duration(
            "policy.manual_duration",
            raw.policy.manual_duration.as_deref(),
            "1h",
            true,
        );
        if manual_duration > max_grant && !max_grant.is_zero() {
            self.problem(
                "policy.manual_duration",
                format!(
                    "{} is longer than policy.max_grant ({})",
                    crate::time::format_duration(manual_duration),
                    crate::time::format_duration(max_grant)
                ),
            );
        }
        let policy = Policy {
            vms: crate::policy::VmPolicy {
                allow: raw.policy.allow.clone().unwrap_or_default(),
                deny: raw.policy.deny.clone().unwrap_or_default(),
            },
            max_duration,
            max_grant,
            manual_duration,
        };
        let facility_name = raw.log.facility.as_deref().unwrap_or("authpriv");
        let facility = crate::syslog::FACILITIES
            .iter()
            .find(|(name, _)| *name == facility_name)
            .map(|(_, code)| *code)
            .unwrap_or_else(|| {
                self.problem("log.facility", format!("{facility_name:?} is not a syslog facility (authpriv, auth, daemon, local0 to local7, ...)"));
                10
            });
        let log = Log {
            syslog: raw.log.syslog.unwrap_or(false),
            facility,
            socket: raw
                .log
                .socket
                .as_deref()
                .map_or_else(|| PathBuf::from("/dev/log"), |p| self.resolve(p)),
        };
        Some(Config {
            log,
            state_dir,
            deadline,
            otrs: otrs.flatten(),
            vcenter: vcenter.flatten(),
            nsx,
            policy,
        })
    }

    fn otrs(&mut self, raw: &RawOtrs) -> Option<OtrsConfig> {
        let vm_field = raw.vm_field.clone().unwrap_or_else(|| "VMName".into());
        if vm_field.trim().is_empty() {
            self.problem("otrs.vm_field", "must name the ticket's dynamic field");
        }
        let version = raw.version.unwrap_or(6);
        if version < 5 {
            self.problem(
                "otrs.version",
                "otnsx needs OTRS 5 or later (Znuny and OTOBO count as 6)",
            );
        }
        let endpoint = self.endpoint("otrs", &raw.endpoint_keys());
        Some(OtrsConfig {
            endpoint: endpoint?,
            vm_field,
            notes: raw.notes.unwrap_or(true),
            notify_agents: raw.notify_agents.unwrap_or(false),
            version,
        })
    }

    fn vcenter(&mut self, raw: &RawVcenter) -> Option<VcenterConfig> {
        for (key, value) in [("folder", &raw.folder), ("datacenter", &raw.datacenter)] {
            if let Some(v) = value
                && !is_moref(v)
            {
                self.problem(
                    &format!("vcenter.{key}"),
                    format!("{v:?} is not a managed object id like group-v22 or datacenter-2"),
                );
            }
        }
        let endpoint = self.endpoint("vcenter", &raw.endpoint_keys());
        Some(VcenterConfig {
            endpoint: endpoint?,
            api: raw.api.unwrap_or(ApiGeneration::Auto),
            folder: raw.folder.clone(),
            datacenter: raw.datacenter.clone(),
        })
    }

    fn nsx(&mut self, raw: &RawNsx, has_vcenter: bool) -> Option<NsxConfig> {
        let kind = raw.kind;
        if kind.is_none() {
            self.problem(
                "nsx.kind",
                "missing; write kind = \"nsx-t\" (NSX-T 3.x, NSX 4.x) or \"nsx-v\"",
            );
        }
        let tag = raw.tag.clone().unwrap_or_default();
        if tag.trim().is_empty() {
            self.problem(
                "nsx.tag",
                "missing; name the security tag that opens access",
            );
        }
        let scope = raw.scope.clone().unwrap_or_default();
        match kind {
            Some(NsxKind::NsxT) if scope.trim().is_empty() => {
                self.problem(
                    "nsx.scope",
                    "missing; NSX-T tags are a scope and a value, e.g. scope = \"otnsx\"",
                );
            }
            Some(NsxKind::NsxV) => {
                for (key, given) in [
                    ("scope", raw.scope.is_some()),
                    ("auth", raw.auth.is_some()),
                    ("resolve", raw.resolve.is_some()),
                ] {
                    if given {
                        self.problem(&format!("nsx.{key}"), "applies to kind = \"nsx-t\" only");
                    }
                }
            }
            _ => {}
        }
        for (key, value) in [("nsx.scope", &scope), ("nsx.tag", &tag)] {
            if kind == Some(NsxKind::NsxT) && (value.chars().count() > 128 || value.contains('|')) {
                self.problem(key, "at most 128 characters, without '|'");
            }
        }
        let resolve = raw.resolve.unwrap_or(if has_vcenter {
            Resolve::Vcenter
        } else {
            Resolve::Nsx
        });
        let endpoint = self.endpoint("nsx", &raw.endpoint_keys());
        Some(NsxConfig {
            kind: kind?,
            endpoint: endpoint?,
            tag,
            scope,
            auth: raw.auth.unwrap_or(NsxAuth::Basic),
            resolve,
        })
    }

    fn endpoint(&mut self, section: &str, raw: &RawEndpoint<'_>) -> Option<Endpoint> {
        let url = match raw.url {
            None => {
                self.problem(&format!("{section}.url"), "missing");
                None
            }
            Some(u) => match check_url(u) {
                Ok(url) => Some(url),
                Err(why) => {
                    self.problem(&format!("{section}.url"), why);
                    None
                }
            },
        };
        let user = match raw.user {
            Some(u) if !u.is_empty() => Some(u.to_string()),
            _ => {
                self.problem(&format!("{section}.user"), "missing");
                None
            }
        };
        let pin = raw.tls_sha256.and_then(|text| {
            let pin = crate::pin::parse_fingerprint(text);
            if pin.is_none() {
                self.problem(
                    &format!("{section}.tls_sha256"),
                    "not a SHA-256 fingerprint (64 hex digits, with or without colons)",
                );
            }
            pin
        });
        let tls_keys = [
            raw.ca_file.is_some(),
            raw.tls_sha256.is_some(),
            raw.insecure == Some(true),
        ];
        if tls_keys.iter().filter(|k| **k).count() > 1 {
            self.problem(
                section,
                "give only one of ca_file, tls_sha256 and insecure = true",
            );
        }
        let ca_file = raw.ca_file.map(|p| self.resolve(p));
        if let Some(ca) = &ca_file
            && !ca.is_file()
        {
            self.problem(
                &format!("{section}.ca_file"),
                format!("{} is not a readable file", ca.display()),
            );
        }
        let password = self.password(section, raw);
        if let (Some(user), Some(password)) = (&user, &password)
            && self.read_secrets
        {
            crate::secrets::password(user, password.expose());
        }
        Some(Endpoint {
            url: url?,
            user: user?,
            password: password?,
            tls: Tls {
                ca_file,
                pin,
                insecure: raw.insecure.unwrap_or(false),
            },
        })
    }

    fn password(&mut self, section: &str, raw: &RawEndpoint<'_>) -> Option<Secret> {
        let given = [
            raw.password.is_some(),
            raw.password_file.is_some(),
            raw.password_env.is_some(),
            raw.password_command.is_some(),
        ];
        let key = format!("{section}.password");
        match given.iter().filter(|g| **g).count() {
            0 => {
                self.problem(
                    &key,
                    "missing; set password_file, password_env, password_command or password",
                );
                return None;
            }
            1 => {}
            _ => {
                self.problem(
                    &key,
                    "give only one of password_file, password_env, password_command and password",
                );
                return None;
            }
        }
        if !self.read_secrets && raw.password.is_none() {
            return Some(Secret("(not read)".into()));
        }
        if let Some(command) = raw.password_command {
            let key = format!("{section}.password_command");
            return match run_password_command(command, self.command_timeout) {
                Ok(secret) => self.non_empty(&key, secret),
                Err(why) => {
                    self.problem(&key, why);
                    None
                }
            };
        }
        if let Some(inline) = raw.password {
            if self.world_readable {
                self.problem(
                    &key,
                    "an inline password in a world-readable file is refused; chmod o-r the file or use password_file",
                );
                return None;
            }
            return self.non_empty(&key, inline.to_string());
        }
        if let Some(file) = raw.password_file {
            let file = self.resolve(file);
            let key = format!("{section}.password_file");
            let (text, meta) = match read_trusted(&file, MAX_CONFIG) {
                Ok(read) => read,
                Err(why) => {
                    self.problem(&key, why);
                    return None;
                }
            };
            if meta.permissions().mode() & 0o004 != 0 {
                self.problem(
                    &key,
                    format!("{} is world-readable; chmod o-r it", file.display()),
                );
                return None;
            }
            return self.non_empty(&key, first_line(&text));
        }
        let var = raw.password_env.unwrap_or_default();
        let key = format!("{section}.password_env");
        match std::env::var(var) {
            Ok(value) => self.non_empty(&key, first_line(&value)),
            Err(_) => {
                self.problem(&key, format!("environment variable {var} is not set"));
                None
            }
        }
    }

    fn non_empty(&mut self, key: &str, secret: String) -> Option<Secret> {
        if secret.is_empty() {
            self.problem(key, "the password is empty");
            return None;
        }
        Some(Secret(secret))
    }

    fn duration(
        &mut self,
        key: &str,
        text: Option<&str>,
        default: &str,
        positive: bool,
    ) -> Duration {
        match parse_duration(text.unwrap_or(default)) {
            Ok(d) if d > MAX_DURATION => {
                self.problem(key, "must be at most 3650d (ten years)");
                Duration::ZERO
            }
            Ok(d) if positive && d.is_zero() => {
                self.problem(key, "must be longer than zero");
                d
            }
            Ok(d) => d,
            Err(why) => {
                self.problem(key, why);
                Duration::ZERO
            }
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}

/// Runs a password command (no shell, no standard input, an environment of PATH, HOME and
/// LANG only: not the other services' secrets, nor the help desk's CGI variables) and takes
/// the first line of what it prints. It runs in a process group of its own, which is killed
/// when the command exits (nothing it started lingers) and at `timeout`, when it is stopped
/// whether or not something still holds its output open.
fn run_password_command(argv: &[String], timeout: Duration) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Some((program, args)) = argv.split_first().filter(|(p, _)| !p.is_empty()) else {
        return Err("must name a program, e.g. [\"pass\", \"show\", \"otnsx/nsx\"]".into());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    let started = std::time::Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = child.id();
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        crate::sys::kill_process_group(group);
        let _ = child.wait();
        return Err(format!("cannot read the output of {program}"));
    };
    // Read both pipes while waiting, so that a chatty command cannot block on a full pipe.
    let (sender, results) = std::sync::mpsc::channel();
    for (stream, pipe, limit) in [
        (0, Box::new(out) as Box<dyn Read + Send>, 1u64 << 20),
        (1, Box::new(err), 1 << 16),
    ] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.take(limit).read_to_end(&mut buf);
            let _ = sender.send((stream, buf));
        });
    }
    let late = || {
        format!(
            "{program} did not finish within the deadline ({}s); it was stopped",
            timeout.as_secs()
        )
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                crate::sys::kill_process_group(group);
                let _ = child.wait();
                return Err(late());
            }
            Err(e) => {
                crate::sys::kill_process_group(group);
                return Err(format!("waiting for {program}: {e}"));
            }
        }
    };
    // Whatever the command left running in its group would hold the pipes open.
    crate::sys::kill_process_group(group);
    let mut output: [Option<Vec<u8>>; 2] = [None, None];
    while output.iter().any(Option::is_none) {
        let left = timeout.saturating_sub(started.elapsed());
        match results.recv_timeout(left.max(Duration::from_millis(100))) {
            Ok((stream, buf)) => output[stream] = Some(buf),
            Err(_) => return Err(late()),
        }
    }
    let [stdout, stderr] = output.map(Option::unwrap_or_default);
    if !status.success() {
        let said = String::from_utf8_lossy(&stderr);
        let said: String = said
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(format!(
            "{program} failed ({status}): {}",
            crate::escape::printable(&said)
        ));
    }
    let text = String::from_utf8(stdout)
        .map_err(|_| format!("{program} printed something that is not UTF-8"))?;
    Ok(first_line(&text))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

/// A managed object id as vCenter writes them: `vm-42`, `group-v22`, `datacenter-2`.
pub fn is_moref(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b':')
}

/// Whether `host` is a loopback address (127.0.0.0/8, ::1) or exactly `localhost`, decided by
/// parsing it: `127.evil.example` is a name like any other, resolved who knows where.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Accepts `https://host[:port][/path]`, and `http://` only for a loopback host (credentials
/// never cross a network in clear). Returns the URL without a trailing slash.
fn check_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL like https://host.example.com"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not carry credentials; use user and password_file".into());
    }
    if url.contains(['?', '#', ' ']) {
        return Err(format!(
            "{url:?} must not contain a query, a fragment or spaces"
        ));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = authority
        .rsplit_once(']')
        .map_or(authority, |(_, after)| after)
        .split_once(':')
        .map(|(_, p)| p);
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{url:?} has an invalid port"));
    }
    match scheme {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => return Err("plain http is allowed only for a loopback host; use https".into()),
        _ => return Err(format!("{url:?} is not an http(s) URL")),
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = include_str!("../otnsx.toml.example").replace("/etc/otnsx/", "");
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
    fn example_nsxt_alternative_parses() {
        let example = include_str!("../otnsx.toml.example");
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
        let text = format!("{}{block}\n{}", &example[..nsx_v], &example[end..])
            .replace(
                "password_file = \"/etc/otnsx/otrs.secret\"",
                "password = \"x\"",
            )
            .replace(
                "password_file = \"/etc/otnsx/vcenter.secret\"",
                "password = \"x\"",
            )
            .replace(
                "password_file = \"/etc/otnsx/nsx.secret\"",
                "password = \"x\"",
            );
        let config = Config::parse(&text, Path::new("/etc/otnsx/otnsx.toml"), 0o640)
            .expect("NSX-T example parses");
        assert_eq!(config.nsx.kind, NsxKind::NsxT);
        assert_eq!(
            (config.nsx.scope.as_str(), config.nsx.tag.as_str()),
            ("otnsx", "maintenance")
        );
        assert_eq!(config.nsx.resolve, Resolve::Vcenter);
        assert_eq!(config.nsx.auth, NsxAuth::Basic);
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

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            check_url("https://a.example/x/"),
            Ok("https://a.example/x".into())
        );
        assert!(check_url("http://127.0.0.1:8080/otrs").is_ok());
        assert!(check_url("http://[::1]:80").is_ok());
        assert!(check_url("http://helpdesk.example.com").is_err());
        assert!(check_url("http://localhost:8080").is_ok());
        assert!(check_url("http://127.255.0.1").is_ok());
        for spoof in [
            "http://127.evil.example",
            "http://127.0.0.1.nip.io",
            "http://localhost.evil.example",
            "http://LOCALHOST.evil",
            "http://[::ffff:8.8.8.8]",
            "http://0x7f.1",
            "http://2130706433",
        ] {
            assert!(check_url(spoof).is_err(), "{spoof}");
        }
        assert!(check_url("https://user:pw@a.example").is_err());
        assert!(check_url("https://a.example:99999").is_err());
        assert!(check_url("ftp://a.example").is_err());
        assert!(check_url("https://a.example/?x=1").is_err());
    }
}
