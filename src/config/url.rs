//! The services' URLs and vCenter's object ids, as the configuration takes them.

use std::collections::HashSet;

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

/// Whether a query key names a secret: a password, a token, a key, a signature and the like
/// (percent-escapes decoded, case ignored).
fn secret_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    let key = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    // libpq's parameter, which names a session, not a secret.
    if key == "target_session_attrs" {
        return false;
    }
    [
        "pass", "pwd", "token", "secret", "key", "auth", "cred", "sig", "session", "cookie",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `url` as it may be echoed in a message: the password of its user information becomes
/// `(redacted)`, and so does everything from the value of the first query or fragment key that
/// holds a secret (`password=`, `sslpassword=`, `token=`, ...) on. Whatever else is wrong with
/// the URL, the secret in it is never printed. The user information is taken to end at the
/// last `@` (a password may hold `/`, `?` or `#`), and a secret value at the end of the URL (it
/// may hold `&` or `#`), so a URL shows less than it could, never more.
pub(super) fn redacted(url: &str) -> String {
    let redacted = crate::secrets::REDACTED;
    let start = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(start);
    let (info, rest) = match rest.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => (format!("{user}:{redacted}@"), host),
            None => (format!("{info}@"), host),
        },
        None => (String::new(), rest),
    };
    // From the first key that holds a secret (in the query or a fragment, `#access_token=`),
    // the rest is hidden: a secret may hold `&`, `;` or `#` unencoded.
    let mut rest = rest.to_string();
    let mut at = 0;
    for part in rest.split_inclusive(['?', '&', ';', '#']) {
        let key = part.trim_end_matches(['?', '&', ';', '#']);
        if at > 0
            && let Some((key, _)) = key.split_once('=')
            && secret_key(key)
        {
            rest.replace_range(at + key.len() + 1.., redacted);
            break;
        }
        at += part.len();
    }
    format!("{head}{info}{rest}")
}

/// Accepts `https://host[:port][/path]`, and `http://` only for a loopback host (credentials
/// never cross a network in clear). Returns the URL without a trailing slash. Parsed by the
/// `http` crate's URI parser, which the HTTP client uses too.
pub(super) fn check_url(url: &str) -> Result<String, String> {
    let shown = redacted(url);
    let not_a_url = || format!("{shown:?} is not a URL like https://host.example.com");
    if url.contains(['?', '#', ' ']) {
        return Err(format!(
            "{shown:?} must not contain a query, a fragment or spaces"
        ));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| not_a_url())?;
    let authority = uri.authority().ok_or_else(not_a_url)?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials; use user and password_file".into());
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("{shown:?} has no host"));
    }
    let port = authority
        .as_str()
        .rsplit_once(']')
        .map_or(authority.as_str(), |(_, p)| p);
    if port.contains(':') && authority.port_u16().is_none() {
        return Err(format!("{shown:?} has an invalid port"));
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => {
            return Err("plain http is allowed only for a loopback host; use https".into());
        }
        _ => return Err(format!("{shown:?} is not an http(s) URL")),
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// How the URL's `sslmode` asks the connection to be made (libpq's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    /// TLS, the server's certificate and name verified (the default).
    VerifyFull,
    /// TLS without verifying the server: only with `accept_unverified_server = true`.
    Require,
    /// No TLS: only to loopback addresses.
    Disable,
}

/// A database URL, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DatabaseUrl {
    /// The servers to try, in order, each with its port (5432 when none is given).
    pub(super) hosts: Vec<(String, u16)>,
    pub(super) user: String,
    pub(super) dbname: String,
    /// Whether every host is a loopback address.
    pub(super) loopback: bool,
    /// `sslmode`, if the URL gives one.
    pub(super) sslmode: Option<SslMode>,
    /// `connect_timeout`, if the URL gives one other than 0 (libpq's "no limit").
    pub(super) connect_timeout: Option<std::time::Duration>,
}

/// One `host[:port]` of a URL's host list: a name, an IPv4 address or an `[IPv6]` address.
fn check_host(shown: &str, hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{shown:?} has an unclosed [ in its host"))?;
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("{shown:?}: {hostport:?} is not [ADDRESS]:PORT"))?,
                ),
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{shown:?}: [{host}] is not an IPv6 address"));
            }
            (host, port)
        }
        None => match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        },
    };
    if host.is_empty() || host.starts_with('/') || host.starts_with('%') {
        return Err(format!(
            "{shown:?} has no host (a Unix socket is not supported: name the TCP address)"
        ));
    }
    let bracketed = hostport.starts_with('[');
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || (bracketed && b == b':'))
    {
        return Err(format!(
            "{shown:?}: {host:?} is not a host name or address (an IPv6 address goes in brackets: [::1]:5432)"
        ));
    }
    let port = match port {
        None => 5432,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{shown:?} has an invalid port"))?,
    };
    Ok((host.to_string(), port))
}

/// The URL's parameters: `target_session_attrs` (`read-write` only: a run may write, and the
/// default is `read-write` whatever is given), `sslmode`, `connect_timeout` and
/// `application_name` (`otnsx` only: the lost commit is resolved by finding the session by it).
/// Anything else is refused by name; a password never.
fn check_parameters(query: &str, url: &mut DatabaseUrl) -> Result<(), String> {
    let mut seen = HashSet::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if secret_key(key) {
            return Err(format!(
                "the parameter {key:?} must not be in the URL; use password_file (or password_env, password_command)"
            ));
        }
        if !seen.insert(key) {
            return Err(format!("the parameter {key:?} is given twice"));
        }
        match key {
            "target_session_attrs" => match value {
                "read-write" => {}
                other => {
                    return Err(format!(
                        "target_session_attrs={other:?}: otnsx writes, and only ever runs on the writable server; write target_session_attrs=read-write (the default) or leave it out"
                    ));
                }
            },
            "sslmode" => {
                url.sslmode = Some(match value {
                    "verify-full" => SslMode::VerifyFull,
                    "require" => SslMode::Require,
                    "disable" => SslMode::Disable,
                    "verify-ca" => {
                        return Err(
                            "sslmode=verify-ca is not supported (the server's name is always verified): use sslmode=verify-full (the default) with ca_file naming the CA".into(),
                        );
                    }
                    "prefer" | "allow" => {
                        return Err(format!(
                            "sslmode={value} is not supported (it falls back to no TLS without saying so): use sslmode=verify-full (the default), or sslmode=disable for a loopback address"
                        ));
                    }
                    other => {
                        return Err(format!(
                            "sslmode={other:?} is not an sslmode: verify-full (the default), require (with accept_unverified_server = true) or disable (loopback only)"
                        ));
                    }
                })
            }
            "connect_timeout" => match value.parse::<u64>() {
                Ok(0) => url.connect_timeout = None,
                Ok(seconds) if seconds <= 3600 => {
                    url.connect_timeout = Some(std::time::Duration::from_secs(seconds));
                }
                _ => {
                    return Err(format!(
                        "connect_timeout={value:?}: a whole number of seconds, at most 3600 (the run's deadline bounds it anyway)"
                    ));
                }
            },
            "application_name" => {
                if value != "otnsx" {
                    return Err(format!(
                        "application_name={value:?}: otnsx's sessions are named otnsx (a lost commit is resolved by finding the old session by that name); leave it out"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "the parameter {other:?} is not supported (only target_session_attrs, sslmode, connect_timeout and application_name)"
                ));
            }
        }
    }
    Ok(())
}

/// Accepts libpq's URL form `postgres://user@host[:port][,host[:port]...]/dbname[?params]`
/// (or `postgresql://`): a user and a database named, one host or several tried in order, no
/// password (it comes from password_file and the like), and only the parameters
/// [`check_parameters`] takes.
pub(super) fn check_database_url(url: &str) -> Result<DatabaseUrl, String> {
    let shown = redacted(url);
    let example = "like postgres://otnsx@db.example.com/otnsx";
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{shown:?} is not a postgres:// URL {example}"))?;
    if rest.contains(['#', ' ']) {
        return Err(format!("{shown:?} must not carry a fragment or spaces"));
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = rest
        .split_once('/')
        .ok_or_else(|| format!("{shown:?} names no database; write it {example}"))?;
    let (user, hostlist) = authority
        .rsplit_once('@')
        .ok_or_else(|| format!("{shown:?} names no user; write it {example}"))?;
    if user.contains(':') {
        return Err("must not carry the password; use password_file".into());
    }
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    };
    if !valid(user) {
        return Err(format!(
            "user {user:?}: 1 to 63 of letters, digits, '_', '-' and '.'"
        ));
    }
    if !valid(dbname) {
        return Err(format!(
            "database {dbname:?}: 1 to 63 of letters, digits, '_', '-' and '.'"
        ));
    }
    let hosts = hostlist
        .split(',')
        .map(|hostport| check_host(&shown, hostport))
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.len() > 16 {
        return Err(format!("{shown:?} names more than 16 hosts"));
    }
    let mut parsed = DatabaseUrl {
        loopback: hosts.iter().all(|(host, _)| is_loopback(host)),
        hosts,
        user: user.to_string(),
        dbname: dbname.to_string(),
        sslmode: None,
        connect_timeout: None,
    };
    check_parameters(query, &mut parsed).map_err(|why| format!("{shown:?}: {why}"))?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(check_url("https://:443").is_err());
        assert!(check_url("https://a.example:").is_err());
        assert!(check_url("a.example").is_err());
    }

    #[test]
    fn secrets_in_urls_are_redacted() {
        for (url, shown) in [
            (
                "postgres://u:pw0secret@host/db?sslmode=require",
                "postgres://u:(redacted)@host/db?sslmode=require",
            ),
            (
                "https://admin:pw0secret@nsx.example/api",
                "https://admin:(redacted)@nsx.example/api",
            ),
            (
                "postgres://u:p/w?0secret@host/db",
                "postgres://u:(redacted)@host/db",
            ),
            (
                "postgres://u@host/db?sslmode=require&password=pw0secret",
                "postgres://u@host/db?sslmode=require&password=(redacted)",
            ),
            (
                "postgres://u@host/db?SSLPassword=pw0#secret",
                "postgres://u@host/db?SSLPassword=(redacted)",
            ),
            (
                "postgres://u@host/db?password=pw0&secret&sslmode=require",
                "postgres://u@host/db?password=(redacted)",
            ),
            (
                "https://a.example/?a=1;access_%74oken=pw0secret",
                "https://a.example/?a=1;access_%74oken=(redacted)",
            ),
            ("u:pw0secret@host", "u:(redacted)@host"),
            (
                "https://a.example/cb#access_token=pw0secret&x=1",
                "https://a.example/cb#access_token=(redacted)",
            ),
            ("https://a.example/x", "https://a.example/x"),
            (
                "postgres://u@h1,h2/db?target_session_attrs=read-write&session=pw0secret",
                "postgres://u@h1,h2/db?target_session_attrs=read-write&session=(redacted)",
            ),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn database_urls_are_checked() {
        let url = check_database_url("postgres://otnsx@db.example.com/otnsx").unwrap();
        assert_eq!(
            url,
            DatabaseUrl {
                hosts: vec![("db.example.com".into(), 5432)],
                user: "otnsx".into(),
                dbname: "otnsx".into(),
                loopback: false,
                sslmode: None,
                connect_timeout: None,
            }
        );
        let url = check_database_url("postgresql://o@127.0.0.1:5433/state").unwrap();
        assert!(url.loopback && url.hosts == [("127.0.0.1".into(), 5433)] && url.dbname == "state");
        let url = check_database_url("postgres://o@[::1]:6000/s").unwrap();
        assert!(url.loopback && url.hosts == [("::1".into(), 6000)]);
        assert!(
            !check_database_url("postgres://o@127.evil.example/s")
                .unwrap()
                .loopback
        );
        let url = check_database_url(
            "postgresql://otnsx@db1:5433,10.0.0.2,[2001:db8::1]:6432/otnsx?target_session_attrs=read-write&sslmode=verify-full&connect_timeout=3&application_name=otnsx",
        )
        .unwrap();
        assert_eq!(
            url.hosts,
            [
                ("db1".to_string(), 5433),
                ("10.0.0.2".to_string(), 5432),
                ("2001:db8::1".to_string(), 6432)
            ]
        );
        assert!(!url.loopback);
        assert_eq!(url.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(url.connect_timeout, Some(std::time::Duration::from_secs(3)));
        let url =
            check_database_url("postgres://o@127.0.0.1,[::1]/s?sslmode=disable&connect_timeout=0")
                .unwrap();
        assert!(
            url.loopback && url.sslmode == Some(SslMode::Disable) && url.connect_timeout.is_none()
        );
        assert!(
            !check_database_url("postgres://o@127.0.0.1,db.example.com/s")
                .unwrap()
                .loopback
        );
        assert_eq!(
            check_database_url("postgres://o@h/d?sslmode=require")
                .unwrap()
                .sslmode,
            Some(SslMode::Require)
        );
        for (bad, says) in [
            ("https://db.example.com/otnsx", "not a postgres"),
            ("postgres://db.example.com/otnsx", "no user"),
            ("postgres://o:pw@db.example.com/otnsx", "password"),
            ("postgres://o@db.example.com", "no database"),
            ("postgres://o@db.example.com/", "database"),
            (
                "postgres://o@db.example.com/otnsx?password=pw",
                "password_file",
            ),
            (
                "postgres://o@db.example.com/otnsx?target_session_attrs=any",
                "read-write",
            ),
            (
                "postgres://o@db.example.com/otnsx?target_session_attrs=read-only",
                "read-write",
            ),
            (
                "postgres://o@db.example.com/otnsx?target_session_attrs=standby",
                "read-write",
            ),
            (
                "postgres://o@db.example.com/otnsx?sslmode=verify-ca",
                "verify-full",
            ),
            (
                "postgres://o@db.example.com/otnsx?sslmode=prefer",
                "verify-full",
            ),
            (
                "postgres://o@db.example.com/otnsx?sslmode=allow",
                "verify-full",
            ),
            (
                "postgres://o@db.example.com/otnsx?sslmode=on",
                "not an sslmode",
            ),
            (
                "postgres://o@db.example.com/otnsx?application_name=app",
                "application_name",
            ),
            (
                "postgres://o@db.example.com/otnsx?connect_timeout=x",
                "connect_timeout",
            ),
            (
                "postgres://o@db.example.com/otnsx?connect_timeout=-1",
                "connect_timeout",
            ),
            (
                "postgres://o@db.example.com/otnsx?options=-c%20x%3Dy",
                "\"options\"",
            ),
            (
                "postgres://o@db.example.com/otnsx?sslrootcert=/x",
                "\"sslrootcert\"",
            ),
            (
                "postgres://o@db.example.com/otnsx?sslmode=require&sslmode=disable",
                "twice",
            ),
            ("postgres://o@db.example.com/otnsx#x", "fragment"),
            ("postgres://o@db.example.com:0/otnsx", "port"),
            ("postgres://o@db.example.com:99999/otnsx", "port"),
            ("postgres://o@db1,,db2/otnsx", "no host"),
            ("postgres://o@db1:5432,db2:x/otnsx", "port"),
            ("postgres://o@[::1/otnsx", "unclosed"),
            ("postgres://o@[db.example.com]/otnsx", "IPv6"),
            ("postgres://o@::1/otnsx", "in brackets"),
            ("postgres://o@db1,2001:db8::1:5432/otnsx", "in brackets"),
            ("postgres://o@/otnsx", "no host"),
            ("postgres://o@%2Frun%2Fpostgresql/otnsx", "no host"),
            ("postgres://o'x@db.example.com/otnsx", "user"),
        ] {
            let why = check_database_url(bad).expect_err(bad);
            assert!(why.contains(says), "{bad}: {why}");
        }
    }
}
