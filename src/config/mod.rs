//! The configuration file: found ([`locate`]), read, and checked from raw serde structs that
//! reject unknown keys (`raw.rs`) into the typed [`Config`] (`model.rs`) by `check.rs`, which
//! reports every problem at once, each with its key's path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Exit, fault};

mod check;
mod model;
mod raw;
mod secret;
mod url;

pub use model::*;
pub use secret::Secret;
pub use url::is_moref;

use check::Checker;
use raw::RawConfig;
use secret::read;

/// Where the configuration is looked for when neither `--config` nor `OTNSX_CONFIG` names it.
pub const SYSTEM_CONFIG: &str = "/etc/otnsx/otnsx.toml";

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
            (db.hosts.as_slice(), db.user.as_str(), db.dbname.as_str()),
            (
                &[("db.example.com".to_string(), 5432)][..],
                "otnsx",
                "otnsx"
            )
        );
        assert!(db.tls, "a database off loopback is reached over TLS");
        assert_eq!(db.password.expose(), "x");
        let local = text.replace("db.example.com", "127.0.0.1");
        let config = Config::parse(&local, Path::new("/etc/otnsx/otnsx.toml"), 0o640).unwrap();
        assert!(!config.database.unwrap().tls, "loopback without ca_file");
        let unverified = parse(&format!(
            "{MINIMAL}\n[state]\nbackend = \"postgres\"\nurl = \"postgres://o@db1,db2:6432/d?sslmode=require&connect_timeout=3\"\npassword = \"x\"\naccept_unverified_server = true\n"
        ))
        .unwrap()
        .database
        .unwrap();
        assert!(unverified.tls && !unverified.verify_server);
        assert_eq!(unverified.hosts.len(), 2);
        assert_eq!(
            unverified.connect_timeout,
            Some(std::time::Duration::from_secs(3))
        );
        let plain = parse(&format!(
            "{MINIMAL}\n[state]\nbackend = \"postgres\"\nurl = \"postgres://o@127.0.0.1/d?sslmode=disable\"\npassword = \"x\"\n"
        ))
        .unwrap()
        .database
        .unwrap();
        assert!(!plain.tls);
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
            (
                "backend = \"postgres\"\nurl = \"postgres://o@h/d?sslmode=require\"\npassword = \"x\"",
                "state.url: sslmode=require does not verify the server",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://o@h/d?sslmode=disable\"\npassword = \"x\"",
                "state.url: sslmode=disable is for loopback addresses only",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://o@127.0.0.1,h/d?sslmode=disable\"\npassword = \"x\"",
                "state.url: sslmode=disable is for loopback addresses only",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://o@h/d\"\npassword = \"x\"\naccept_unverified_server = true",
                "state.accept_unverified_server: only with sslmode=require",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://o@h/d?target_session_attrs=any\"\npassword = \"x\"",
                "target_session_attrs=\"any\"",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://o@h/d?application_name=x\"\npassword = \"x\"",
                "application_name=\"x\"",
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
