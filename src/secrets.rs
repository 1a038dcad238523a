//! Known secrets never leave the process. Every configured password (with the forms a server
//! may echo it in: URL-encoded, form-encoded, JSON- and XML-escaped, inside the Basic-auth
//! value) and every session token otnsx is given is registered here, and [`scrub`] replaces
//! them in any text before it reaches stderr, stdout, the journal, syslog or a ticket note: the
//! output paths (`outln!`, `errln!`, journal and syslog lines, notes) and the error snippets of
//! server answers scrub. Answers themselves are left as they came, so that nothing a server
//! says is changed before otnsx reads it.

use std::sync::Mutex;

/// Secrets shorter than this are not scrubbed: replacing every "ab" would garble all output,
/// and a password that short offers no protection to keep.
const MIN_LEN: usize = 4;

static KNOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// What replaces a secret.
pub const REDACTED: &str = "(redacted)";

fn add(form: String) {
    if form.chars().count() < MIN_LEN {
        return;
    }
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if !known.contains(&form) {
        known.push(form);
        // Longest first, so that a secret inside a longer one is replaced as part of it.
        known.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers a password and the forms a server may echo it in; `user` for its Basic-auth
/// value.
pub fn password(user: &str, password: &str) {
    let encoded = crate::encoding::encode(password);
    add(encoded.to_ascii_lowercase());
    add(encoded.replace("%20", "+"));
    add(encoded);
    if let Ok(json) = serde_json::to_string(password) {
        add(json.trim_matches('"').to_string());
    }
    add(password
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;"));
    let basic = crate::encoding::basic_auth_value(user, password);
    add(basic);
    add(password.to_string());
}

/// Registers a session token (or anything else a server gave that must not be shown).
pub fn token(token: &str) {
    let token = token.trim();
    add(token.to_string());
    add(crate::encoding::encode(token));
}

/// `text` with every known secret replaced by `(redacted)` (borrowed when it holds none).
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = std::borrow::Cow::Borrowed(text);
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED).into();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_password_is_scrubbed() {
        password("admin", "p@ss w&rd\"x");
        for echoed in [
            "p@ss w&rd\"x",
            "p%40ss%20w%26rd%22x",
            "p%40ss+w%26rd%22x",
            "p@ss w&amp;rd&quot;x",
            "p@ss w&rd\\\"x",
        ] {
            let text = format!("the server said: {echoed}!");
            assert_eq!(scrub(&text), "the server said: (redacted)!", "{echoed}");
        }
        let basic = crate::encoding::basic_auth_value("admin", "p@ss w&rd\"x");
        assert_eq!(
            scrub(&format!("Authorization: {basic}")),
            "Authorization: (redacted)"
        );
        token("vmware-api-session-0123456789");
        assert_eq!(scrub("id vmware-api-session-0123456789."), "id (redacted).");
        assert_eq!(scrub("nothing secret"), "nothing secret");
    }
}
