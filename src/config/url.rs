//! The services' URLs and vCenter's object ids, as the configuration takes them.

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

/// A database URL, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DatabaseUrl {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) dbname: String,
    pub(super) loopback: bool,
}

/// Accepts `postgres://user@host[:port]/dbname` (or `postgresql://`): a user and a database
/// named, no password (it comes from password_file and the like) and no parameters (TLS is
/// decided by otnsx: always, but to a loopback address).
pub(super) fn check_database_url(url: &str) -> Result<DatabaseUrl, String> {
    let shown = redacted(url);
    let example = "like postgres://otnsx@db.example.com/otnsx";
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{shown:?} is not a postgres:// URL {example}"))?;
    if rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "{shown:?} must not carry parameters, a fragment or spaces (TLS is always verified; ca_file names the CA)"
        ));
    }
    let (authority, dbname) = rest
        .split_once('/')
        .ok_or_else(|| format!("{shown:?} names no database; write it {example}"))?;
    let (user, hostport) = authority
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
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{shown:?} has an unclosed [ in its host"))?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        },
    };
    if host.is_empty() || host.starts_with('/') {
        return Err(format!(
            "{shown:?} has no host (a Unix socket is not supported: name the TCP address)"
        ));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
    {
        return Err(format!("{shown:?}: the host is not a host name or address"));
    }
    let port = match port {
        None => 5432,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{shown:?} has an invalid port"))?,
    };
    Ok(DatabaseUrl {
        loopback: is_loopback(host),
        host: host.to_string(),
        port,
        user: user.to_string(),
        dbname: dbname.to_string(),
    })
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
                host: "db.example.com".into(),
                port: 5432,
                user: "otnsx".into(),
                dbname: "otnsx".into(),
                loopback: false
            }
        );
        let url = check_database_url("postgresql://o@127.0.0.1:5433/state").unwrap();
        assert!(url.loopback && url.port == 5433 && url.dbname == "state");
        let url = check_database_url("postgres://o@[::1]:6000/s").unwrap();
        assert!(url.loopback && url.host == "::1" && url.port == 6000);
        assert!(
            !check_database_url("postgres://o@127.evil.example/s")
                .unwrap()
                .loopback
        );
        for bad in [
            "https://db.example.com/otnsx",
            "postgres://db.example.com/otnsx",
            "postgres://o:pw@db.example.com/otnsx",
            "postgres://o@db.example.com",
            "postgres://o@db.example.com/",
            "postgres://o@db.example.com/otnsx?sslmode=disable",
            "postgres://o@db.example.com:0/otnsx",
            "postgres://o@db.example.com:99999/otnsx",
            "postgres://o@/otnsx",
            "postgres://o@%2Frun%2Fpostgresql/otnsx",
            "postgres://o'x@db.example.com/otnsx",
        ] {
            assert!(check_database_url(bad).is_err(), "{bad}");
        }
    }
}
