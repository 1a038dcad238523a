//! The forms text takes in a request: percent-encoded (paths, queries) and as Basic-auth
//! credentials. A leaf: the HTTP client builds requests with it and the secret scrubber
//! registers a password in these forms too.

/// The credentials part of a basic-auth header: base64 of `user:password`.
pub fn basic_auth_value(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// RFC 3986's unreserved characters are the only ones left as they are.
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters, so a value is safe in a
/// path segment and in a query (where the help desk also splits on `;` and reads `+` as space).
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, RESERVED).to_string()
}

/// Builds `?k=v&k=v` with every key and value encoded.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}
