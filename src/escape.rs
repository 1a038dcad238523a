//! Text that a customer or a server can shape (VM names, holders, details, reasons) is printed
//! escaped: control characters (C0 and C1) and the bidirectional controls that can make a line
//! read differently from what it says become `\u{..}`; JSON output gets the same characters as
//! `\uXXXX` escapes. Long values are shortened where they are echoed. A leaf: what otnsx writes
//! is scrubbed of known secrets first, by `output`.

use std::fmt::Write as _;

/// How many characters of a refused or unknown value are echoed back.
pub const ECHO: usize = 100;

/// Whether `c` is one of the characters that reorder or hide text: the bidi embeddings,
/// overrides, isolates and marks, and the invisible separators.
fn is_bidi(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        | '\u{2028}' | '\u{2029}')
}

/// Whether `c` is printed escaped.
pub fn is_hostile(c: char) -> bool {
    c.is_control() || is_bidi(c)
}

/// Whether `text` is printable ASCII only (and line breaks, with `lines`): nothing in it is
/// escaped. A test of its bytes, much faster than one of its characters.
pub fn plain(text: &str, lines: bool) -> bool {
    text.bytes()
        .all(|b| (b' '..=b'~').contains(&b) || (lines && b == b'\n'))
}

/// `text` with every control and bidi character as `\u{XX}`; a backslash stays as it is.
/// (Known secrets are scrubbed before: see `output`.)
pub fn printable(text: &str) -> String {
    if plain(text, false) || !text.chars().any(is_hostile) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_hostile(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// [`printable`], line by line: the line breaks of a multi-line text stay.
pub fn printable_lines(text: &str) -> String {
    if plain(text, true) {
        return text.to_string();
    }
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most [`ECHO`] characters of `text`, with how much was left out. (Escaping is the
/// printing's business: see [`printable`].)
pub fn shorten(text: &str) -> String {
    let count = text.chars().count();
    if count <= ECHO {
        return text.to_string();
    }
    let head: String = text.chars().take(ECHO).collect();
    format!("{head}...({} more characters)", count - ECHO)
}

/// Whether a JSON reader may choke on `c` raw inside a string, although JSON allows it: DEL,
/// the C1 controls, the bidi characters, U+2028 and U+2029 (line breaks to JavaScript and to
/// line-splitting readers), the byte-order mark and the noncharacters U+FFFE and U+FFFF.
/// serde_json escapes the C0 controls itself; outside strings, serialized JSON is ASCII.
fn json_escaped(c: char) -> bool {
    (is_hostile(c) && (c == '\u{7f}' || !c.is_ascii()))
        || matches!(c, '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

/// Serialized JSON with every character a reader may choke on ([`json_escaped`]: DEL, C1,
/// bidi, U+2028/U+2029, ...) as `\uXXXX`. Such characters appear only inside strings, where
/// the escape means the same. The result holds no character that [`printable`] escapes, so
/// `outln!` prints it as it is. (Known secrets are scrubbed before: see `output`.)
pub fn json(text: String) -> String {
    if !text.chars().any(json_escaped) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if json_escaped(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped() {
        assert_eq!(printable("web01"), "web01");
        assert_eq!(printable("Büro 01"), "Büro 01");
        assert_eq!(printable("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(
            printable("x\u{202E}y\u{85}z\n"),
            "x\\u{202e}y\\u{85}z\\u{a}"
        );
        assert_eq!(printable_lines("a\u{7}\nb"), "a\\u{7}\nb");
    }

    #[test]
    fn long_values_are_shortened() {
        let long = "x".repeat(1 << 20);
        let short = shorten(&long);
        assert!(short.len() < 200, "{short}");
        assert!(short.ends_with("(1048476 more characters)"), "{short}");
        assert_eq!(shorten("web01"), "web01");
    }

    #[test]
    fn json_escapes_c1_and_bidi() {
        let text = serde_json::to_string(&"a\u{85}b\u{202E}c\u{1}").expect("json");
        let safe = json(text);
        assert_eq!(safe, "\"a\\u0085b\\u202ec\\u0001\"");
        let back: String = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, "a\u{85}b\u{202E}c\u{1}");
    }

    #[test]
    fn json_escapes_del_and_line_separators_and_survives_printing() {
        let raw = "a\u{7f}b\u{2028}c\u{2029}d\u{9f}e\u{feff}f\u{0}\u{1f}";
        let safe = json(serde_json::to_string(&raw).expect("json"));
        assert_eq!(
            safe,
            "\"a\\u007fb\\u2028c\\u2029d\\u009fe\\ufefff\\u0000\\u001f\""
        );
        assert_eq!(printable_lines(&safe), safe, "outln! leaves it alone");
        let back: String = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, raw);
        let pretty = json(serde_json::to_string_pretty(&[raw]).expect("json"));
        assert!(pretty.contains('\n'), "{pretty}");
        assert_eq!(printable_lines(&pretty), pretty);
    }
}
