//! What otnsx writes (stdout and stderr through `outln!` and `errln!`, journal and syslog
//! lines, error texts kept in the state) is made safe here: known secrets scrubbed first
//! ([`crate::secrets`]), then control and bidi characters escaped ([`crate::escape`]).

use crate::escape;
use crate::secrets::scrub;

/// `text` with every known secret scrubbed and every control and bidi character as `\u{XX}`;
/// a backslash stays as it is.
pub fn printable(text: &str) -> String {
    escape::printable(&scrub(text))
}

/// [`printable`], line by line: the line breaks of a multi-line text stay.
pub fn printable_lines(text: &str) -> String {
    if escape::plain(text, true) {
        return scrub(text).into_owned();
    }
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Serialized JSON with known secrets scrubbed, and every character a reader may choke on as
/// `\uXXXX` (see [`escape::json`]).
pub fn json(text: String) -> String {
    let text = match scrub(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(scrubbed) => scrubbed,
    };
    escape::json(text)
}
