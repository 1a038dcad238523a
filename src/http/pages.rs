//! The limits of one paged read (a cursor loop over `results`, NSX-V's `startIndex`): at most
//! [`MAX_PAGES`] pages and [`MAX_ENTRIES`] entries, at most [`MAX_KEPT`] bytes kept of them,
//! and a cursor sent twice is an error at once. A server that pages for ever then ends the
//! read with an error naming the service, what was listed and the limit (exit 69) long before
//! the deadline, and the memory the read holds stays bounded: each caller keeps only what it
//! needs of a page (ids and names) and says how much ([`cost`]).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use crate::http::ServiceError;

/// Pages one read may take: 1,000 pages of NSX's largest page (1,000 entries) are a million
/// entries, far beyond any manager.
pub const MAX_PAGES: usize = 1_000;
/// Entries one read may take in all: several times the VMs (or rules of a security policy)
/// the largest NSX manager holds.
pub const MAX_ENTRIES: usize = 200_000;
/// Bytes a read may keep of its entries (see [`cost`]): some 100,000 VMs by id and name, far
/// more than are ever open at once.
pub const MAX_KEPT: usize = 16 << 20;
/// What one entry kept costs beyond its strings: the struct, its place in a list.
const ENTRY_COST: usize = 128;
/// What one string kept costs beyond its bytes: its header, its allocation.
const STRING_COST: usize = 32;
/// A real last page may carry a cursor that starts with this; VMware's own client (nsxlib's
/// `NULL_CURSOR_PREFIX`) takes it as the end.
const NULL_CURSOR: &str = "0000";
/// A cursor longer than this is not NSX's (they are a few dozen characters).
const MAX_CURSOR: usize = 4096;

/// One paged read under way.
pub struct Pages {
    /// What is read, for messages: "NSX Policy: listing rules of security policy default/jit".
    what: String,
    pages: usize,
    entries: usize,
    kept: usize,
    /// The cursors followed so far, by hash (a cursor may be long; these are a few bytes).
    cursors: BTreeSet<u64>,
}

impl Pages {
    pub fn new(what: impl Into<String>) -> Self {
        Pages {
            what: what.into(),
            pages: 0,
            entries: 0,
            kept: 0,
            cursors: BTreeSet::new(),
        }
    }

    /// Counts a page of `entries` entries just read: an error once the read has taken more
    /// than [`MAX_PAGES`] pages or [`MAX_ENTRIES`] entries.
    pub fn page(&mut self, entries: usize) -> anyhow::Result<()> {
        self.pages += 1;
        self.entries = self.entries.saturating_add(entries);
        self.check()
    }

    /// Counts what the caller kept of an entry (its [`cost`]): an error once the read has
    /// kept more than [`MAX_KEPT`] bytes.
    pub fn kept(&mut self, bytes: usize) -> anyhow::Result<()> {
        self.kept = self.kept.saturating_add(bytes);
        self.check()
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.pages > MAX_PAGES || self.entries > MAX_ENTRIES || self.kept > MAX_KEPT {
            return Err(ServiceError::malformed(format!(
                "{}: more than {MAX_PAGES} pages / {MAX_ENTRIES} entries / {} MiB kept; otnsx stops here (a server that pages for ever?)",
                self.what,
                MAX_KEPT >> 20
            )));
        }
        Ok(())
    }

    /// The cursor of the next page, given the one the last page carried (`None`, empty or
    /// NSX's null cursor: the read is complete; so is an empty page). A cursor followed before
    /// is an error: the server would send the same pages again.
    pub fn next(&mut self, cursor: Option<String>, empty: bool) -> anyhow::Result<Option<String>> {
        let Some(cursor) =
            cursor.filter(|c| !c.is_empty() && !c.starts_with(NULL_CURSOR) && !empty)
        else {
            return Ok(None);
        };
        if cursor.len() > MAX_CURSOR {
            return Err(ServiceError::malformed(format!(
                "{}: a cursor of more than {MAX_CURSOR} characters; otnsx stops here",
                self.what
            )));
        }
        let mut hasher = std::hash::DefaultHasher::new();
        cursor.hash(&mut hasher);
        if !self.cursors.insert(hasher.finish()) {
            return Err(ServiceError::malformed(format!(
                "{}: the cursor {:?} came back after {} pages; otnsx stops here (a server that pages for ever?)",
                self.what,
                crate::escape::shorten(&cursor),
                self.pages
            )));
        }
        Ok(Some(cursor))
    }
}

/// What keeping an entry made of `strings` costs, for [`Pages::kept`].
pub fn cost<'a>(strings: impl IntoIterator<Item = &'a str>) -> usize {
    strings
        .into_iter()
        .map(|s| s.len() + STRING_COST)
        .sum::<usize>()
        + ENTRY_COST
}

/// What keeping `id` in a set of ids costs, for [`Pages::kept`].
pub fn id_cost(id: &str) -> usize {
    id.len() + STRING_COST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_cursor_is_an_error_at_once() {
        let mut pages = Pages::new("NSX: listing VMs");
        pages.page(1).unwrap();
        assert_eq!(
            pages.next(Some("a".into()), false).unwrap().as_deref(),
            Some("a")
        );
        pages.page(1).unwrap();
        assert_eq!(
            pages.next(Some("b".into()), false).unwrap().as_deref(),
            Some("b")
        );
        pages.page(1).unwrap();
        let err = pages.next(Some("a".into()), false).unwrap_err();
        assert!(
            format!("{err}").contains("the cursor \"a\" came back after 3 pages"),
            "{err}"
        );
        assert_eq!(
            crate::error::exit_code(&err),
            crate::error::Exit::Unavailable
        );
    }

    #[test]
    fn the_end_is_no_cursor_an_empty_one_or_an_empty_page() {
        let mut pages = Pages::new("x");
        assert_eq!(pages.next(None, false).unwrap(), None);
        assert_eq!(pages.next(Some(String::new()), false).unwrap(), None);
        assert_eq!(pages.next(Some("c".into()), true).unwrap(), None);
        assert_eq!(pages.next(Some("0000a1b2".into()), false).unwrap(), None);
        assert_eq!(
            pages.next(Some("0036fe".into()), false).unwrap().as_deref(),
            Some("0036fe")
        );
    }

    #[test]
    fn pages_and_entries_are_limited() {
        let mut pages = Pages::new("NSX: listing VMs");
        for _ in 0..MAX_PAGES {
            pages.page(0).unwrap();
        }
        let err = pages.page(0).unwrap_err();
        assert_eq!(
            format!("{err}"),
            "NSX: listing VMs: more than 1000 pages / 200000 entries / 16 MiB kept; otnsx stops here (a server that pages for ever?)"
        );
        let mut pages = Pages::new("x");
        pages.page(MAX_ENTRIES).unwrap();
        assert!(pages.page(1).is_err());
        let mut pages = Pages::new("x");
        pages.kept(MAX_KEPT - cost(["a"])).unwrap();
        pages.kept(cost(["a"])).unwrap();
        assert!(pages.kept(1).is_err());
    }
}
