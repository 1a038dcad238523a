//! The journal's hash chain: every entry carries its place in the chain (`seq`, counting from 1)
//! and a hash over the one before and itself, so that an entry changed, removed or inserted
//! after it was written shows.
//!
//! A chained line is the entry's JSON object with two members added at its end:
//!
//! ```text
//! {...the entry...,"seq":N,"hash":"H"}
//! H = hex(SHA-256(P "\n" {...the entry...,"seq":N))
//! ```
//!
//! where `P` is the hash of entry `N - 1` ([`GENESIS`] for entry 1): the hash covers every byte
//! of the line before `,"hash":`. Both backends write the same lines (the database computes `H`
//! itself, in the statement that inserts the entry), and one [`Verifier`] checks either.

use ring::digest::{SHA256, digest};

/// The "hash" before the first entry: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain stands after an entry: its `seq` and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    /// Before the first entry.
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.into(),
        }
    }
}

fn hash_of(prev: &str, body: &[u8]) -> String {
    let mut input = Vec::with_capacity(prev.len() + 1 + body.len());
    input.extend_from_slice(prev.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(body);
    hex(digest(&SHA256, &input).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// `line` (one JSON object, unchained) chained after `prev`: the line to write and the new head.
/// `None` when `line` is not an object.
pub fn link(prev: &Head, line: &str) -> Option<(String, Head)> {
    let open = line.strip_suffix('}')?;
    if !line.starts_with('{') {
        return None;
    }
    let seq = prev.seq + 1;
    let separator = if open.trim_end() == "{" { "" } else { "," };
    let body = format!("{open}{separator}\"seq\":{seq}");
    let hash = hash_of(&prev.hash, body.as_bytes());
    let chained = format!("{body},\"hash\":\"{hash}\"}}");
    Some((chained, Head { seq, hash }))
}

/// A chained line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link<'a> {
    pub seq: u64,
    pub hash: &'a str,
    /// Every byte the hash covers: the line up to `,"hash":`.
    pub body: &'a [u8],
}

impl Link<'_> {
    /// Whether this line's hash is right after `prev`.
    pub fn follows(&self, prev: &str) -> bool {
        hash_of(prev, self.body) == self.hash
    }

    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.to_string(),
        }
    }
}

/// The chain members at the end of `line`, if it has them (an entry written before the chain
/// began has not).
pub fn parse(line: &[u8]) -> Option<Link<'_>> {
    // ...,"seq":N,"hash":"<64 hex>"}
    const TAIL: usize = 64 + 2; // the hash, its closing quote and the brace
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < TAIL + 20 || !line.ends_with(b"\"}") {
        return None;
    }
    let hash_at = line.len() - TAIL;
    let hash = std::str::from_utf8(&line[hash_at..hash_at + 64]).ok()?;
    if !hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let body = line[..hash_at].strip_suffix(b",\"hash\":\"")?;
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let before = &body[..body.len() - digits];
    if !before.ends_with(b"\"seq\":") {
        return None;
    }
    let seq = std::str::from_utf8(&body[body.len() - digits..])
        .ok()?
        .parse()
        .ok()?;
    Some(Link { seq, hash, body })
}

/// The head of the last chained line of `text` (whole lines only), looking back from its end.
pub fn last_head(text: &[u8]) -> Option<Head> {
    text.split(|&b| b == b'\n')
        .rev()
        .find_map(|line| parse(line).map(|link| link.head()))
}

/// Where a line is: the file (or table) and its line number there (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub source: String,
    pub line: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database's journal is a table: its entries are rows, in their order.
        let unit = if self.source == TABLE { "row" } else { "line" };
        write!(f, "{} {unit} {}", self.source, self.line)
    }
}

/// The database's journal table, as a [`Place`]'s source.
pub const TABLE: &str = "otnsx_journal";

/// How the chain is broken, at its first break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The entry at `at` is not as written: its hash does not cover what it says.
    Changed { at: Place, seq: u64, id: String },
    /// Entries `from..=to` are missing before the entry at `at`.
    Removed {
        at: Place,
        from: u64,
        to: u64,
        id: String,
    },
    /// The line at `at` was not written by the chain: inserted.
    Inserted { at: Place, id: String },
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = |id: &str| {
            if id.is_empty() {
                String::new()
            } else {
                format!(" (id {})", crate::escape::shorten(id))
            }
        };
        match self {
            Break::Changed { at, seq, id: i } => write!(
                f,
                "entry {seq} at {at}{} was changed after it was written: its hash does not match its content",
                id(i)
            ),
            Break::Removed {
                at,
                from,
                to,
                id: i,
            } => {
                let (which, were, they) = if from == to {
                    (format!("entry {from}"), "was", "it is")
                } else {
                    (format!("entries {from} to {to}"), "were", "they are")
                };
                write!(
                    f,
                    "{which} {were} removed: {they} missing before entry {} at {at}{}",
                    to + 1,
                    id(i)
                )
            }
            Break::Inserted { at, id: i } => write!(
                f,
                "the line at {at}{} was inserted: the chain does not lead to it",
                id(i)
            ),
        }
    }
}

/// What [`Verifier::finish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Entries whose place in the chain was checked.
    pub chained: u64,
    /// Entries written before the chain began (by an otnsx before 0.2): nothing to check.
    pub unhashed: u64,
    /// Lines that are not entries (cut short by a run killed while writing it): the chain
    /// goes on past them, so nothing was lost with them.
    pub cut_short: Vec<Place>,
    /// Where the chain began when its first entries are not here (`seq` of the first one
    /// seen, above 1), and where.
    pub starts_at: Option<(u64, Place)>,
    /// The chain's last entry.
    pub head: Option<Head>,
    /// The first break, if the chain is broken.
    pub broken: Option<Break>,
}

/// Checks a journal's lines, fed oldest first, across files.
pub struct Verifier {
    head: Option<Head>,
    /// A line that did not follow, waiting for the next one to tell changed from inserted.
    suspect: Option<(Place, u64, String)>,
    verdict: Verdict,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier {
            head: None,
            suspect: None,
            verdict: Verdict {
                chained: 0,
                unhashed: 0,
                cut_short: Vec::new(),
                starts_at: None,
                head: None,
                broken: None,
            },
        }
    }

    /// Checks the next line.
    pub fn feed(&mut self, at: Place, line: &[u8]) {
        if self.verdict.broken.is_some() {
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let link = parse(line);
        let object = link.is_some()
            || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line).is_ok();
        let id = || {
            serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        if let Some((place, seq, suspect_id)) = self.suspect.take() {
            // The line before did not follow the chain. If this one follows where the chain
            // stood before it, that line was inserted; else it was changed.
            let head = self.head.clone().unwrap_or_else(Head::genesis);
            let resumes = link
                .as_ref()
                .is_some_and(|l| l.seq == head.seq + 1 && l.follows(&head.hash));
            self.verdict.broken = Some(if resumes {
                Break::Inserted {
                    at: place,
                    id: suspect_id,
                }
            } else {
                Break::Changed {
                    at: place,
                    seq,
                    id: suspect_id,
                }
            });
            return;
        }
        let Some(link) = link else {
            if !object {
                self.verdict.cut_short.push(at);
            } else if self.head.is_none() {
                self.verdict.unhashed += 1;
            } else {
                // An entry without a hash after the chain began: not written by otnsx.
                self.verdict.broken = Some(Break::Inserted { at, id: id() });
            }
            return;
        };
        let Some(head) = self.head.clone() else {
            // The chain's first line here.
            let prev_ok = link.seq != 1 || link.follows(GENESIS);
            if !prev_ok {
                self.suspect = Some((at, link.seq, id()));
                return;
            }
            if link.seq > 1 {
                self.verdict.starts_at = Some((link.seq, at));
            }
            self.accept(&link);
            return;
        };
        if link.seq > head.seq + 1 {
            self.verdict.broken = Some(Break::Removed {
                at,
                from: head.seq + 1,
                to: link.seq - 1,
                id: id(),
            });
        } else if link.seq <= head.seq {
            self.verdict.broken = Some(Break::Inserted { at, id: id() });
        } else if link.follows(&head.hash) {
            self.accept(&link);
        } else {
            self.suspect = Some((at, link.seq, id()));
        }
    }

    fn accept(&mut self, link: &Link<'_>) {
        self.verdict.chained += 1;
        self.head = Some(link.head());
    }

    /// The verdict once every line was fed.
    pub fn finish(mut self) -> Verdict {
        if let Some((at, seq, id)) = self.suspect.take() {
            // The last line did not follow: nothing after it tells more.
            self.verdict.broken = Some(Break::Changed { at, seq, id });
        }
        self.verdict.head = self.head;
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(lines: &[&str]) -> Vec<String> {
        let mut head = Head::genesis();
        lines
            .iter()
            .map(|line| {
                let (chained, next) = link(&head, line).expect("object");
                head = next;
                chained
            })
            .collect()
    }

    fn verify(lines: &[String]) -> Verdict {
        let mut v = Verifier::new();
        for (i, line) in lines.iter().enumerate() {
            v.feed(
                Place {
                    source: "j".into(),
                    line: i as u64 + 1,
                },
                line.as_bytes(),
            );
        }
        v.finish()
    }

    fn entries(n: usize) -> Vec<String> {
        let lines: Vec<String> = (1..=n).map(|i| format!("{{\"id\":\"e{i}\"}}")).collect();
        chain(&lines.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn a_chained_line_reads_back_and_verifies() {
        let lines = entries(3);
        assert_eq!(
            lines[0],
            format!(
                "{{\"id\":\"e1\",\"seq\":1,\"hash\":\"{}\"}}",
                hash_of(GENESIS, b"{\"id\":\"e1\",\"seq\":1")
            )
        );
        let link = parse(lines[1].as_bytes()).expect("chained");
        assert_eq!(link.seq, 2);
        assert_eq!(link.body, b"{\"id\":\"e2\",\"seq\":2");
        assert_eq!(last_head(lines.join("\n").as_bytes()).expect("head").seq, 3);
        let verdict = verify(&lines);
        assert_eq!(verdict.broken, None);
        assert_eq!(verdict.chained, 3);
        assert_eq!(verdict.head.expect("head").seq, 3);
        // An empty object chains too.
        assert!(link_of("{}").starts_with("{\"seq\":1,"));
    }

    fn link_of(line: &str) -> String {
        link(&Head::genesis(), line).expect("object").0
    }

    #[test]
    fn a_changed_entry_is_named() {
        let mut lines = entries(4);
        lines[1] = lines[1].replace("e2", "e9");
        match verify(&lines).broken {
            Some(Break::Changed { at, seq: 2, id }) => {
                assert_eq!((at.line, id.as_str()), (2, "e9"));
            }
            other => panic!("{other:?}"),
        }
        // The last entry changed: nothing after it, still changed.
        let mut lines = entries(3);
        lines[2] = lines[2].replace("e3", "e7");
        assert!(matches!(
            verify(&lines).broken,
            Some(Break::Changed { seq: 3, .. })
        ));
    }

    #[test]
    fn a_removed_entry_is_named() {
        let mut lines = entries(5);
        lines.remove(2);
        match verify(&lines).broken {
            Some(Break::Removed { at, from, to, id }) => {
                assert_eq!((at.line, from, to, id.as_str()), (3, 3, 3, "e4"));
            }
            other => panic!("{other:?}"),
        }
        let text = verify(&lines).broken.expect("broken").to_string();
        assert!(text.starts_with("entry 3 was removed"), "{text}");
    }

    #[test]
    fn an_inserted_entry_is_named() {
        // A copy of an entry, a line without a hash, and a forged line with the right seq.
        let base = entries(4);
        let mut copied = base.clone();
        copied.insert(2, base[0].clone());
        let mut bare = base.clone();
        bare.insert(2, "{\"id\":\"x\"}".into());
        let mut forged = base.clone();
        forged.insert(
            2,
            format!("{{\"id\":\"x\",\"seq\":3,\"hash\":\"{}\"}}", "a".repeat(64)),
        );
        for lines in [copied, bare, forged] {
            match verify(&lines).broken {
                Some(Break::Inserted { at, .. }) => assert_eq!(at.line, 3, "{lines:?}"),
                other => panic!("{other:?} in {lines:?}"),
            }
        }
    }

    #[test]
    fn older_entries_and_lines_cut_short_are_not_tampering() {
        let mut lines = vec!["{\"id\":\"old\"}".to_string()];
        lines.extend(entries(2));
        lines.insert(2, "{\"id\":\"cut".into());
        let verdict = verify(&lines);
        assert_eq!(verdict.broken, None);
        assert_eq!((verdict.unhashed, verdict.chained), (1, 2));
        assert_eq!(verdict.cut_short.len(), 1);
    }

    #[test]
    fn a_chain_whose_first_entries_are_gone_says_where_it_starts() {
        let lines = entries(5);
        let verdict = verify(&lines[2..]);
        assert_eq!(verdict.broken, None);
        assert_eq!(verdict.starts_at.map(|(seq, _)| seq), Some(3));
    }
}
