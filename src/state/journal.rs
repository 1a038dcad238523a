//! The audit journal: `journal.jsonl`, one JSON object per decision, appended and flushed to
//! disk before the run goes on. Nobody reads otnsx's stdout when the help desk runs it; this
//! file is the record of who opened what.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::cause::{Cause, EntryResult};
use crate::error::{Exit, fault};

use crate::state::chain::{self, Head};
use crate::state::rotation::{self, Rotation};
use crate::time::Timestamp;

pub use super::entry::{Action, Entry, GroupWait};

pub struct Journal {
    path: PathBuf,
    /// `[state] backend = "postgres"`: the entries go to its journal table instead.
    db: Option<std::sync::Arc<super::pg::Pg>>,
    /// When the journal file is rotated.
    rotation: Rotation,
    /// The journal's lock stayed busy once in this run: later appends do not wait for it again
    /// (each would spend what closing access needs), they fail at once while it is busy.
    stuck: std::sync::atomic::AtomicBool,
}

/// How long an append waits for the journal's lock: it is held only while one entry is
/// written, so a longer wait means a run stopped in the middle (the entry is then kept on
/// this node, and the run ends with exit 74).
const JOURNAL_LOCK_WAIT: Duration = Duration::from_secs(2);

impl Journal {
    pub fn new(path: PathBuf, db: Option<std::sync::Arc<super::pg::Pg>>) -> Self {
        Journal {
            path,
            db,
            rotation: Rotation::default(),
            stuck: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The journal rotated as `rotation` says.
    pub fn rotating(self, rotation: Rotation) -> Self {
        Journal { rotation, ..self }
    }

    /// Appends `entry`; returns its line as recorded, chained (`None` when the database
    /// records it with the run's commit).
    pub fn append(&self, entry: &Entry) -> anyhow::Result<Option<String>> {
        if let Some(db) = &self.db {
            return db.append(entry);
        }
        let line = self.append_line(&entry.to_json(), &entry.id, entry.ts)?;
        Ok(Some(line))
    }

    /// Where the entry appended last is noted (`<id> <seq> <hash>`): the id, so that an entry
    /// still in the lease file's outbox is not appended twice; the chain's head, so that a
    /// journal file emptied or removed behind otnsx's back shows as a gap in the chain.
    fn marker(&self) -> std::path::PathBuf {
        self.path.with_extension("appended")
    }

    /// Notes that `id` is in the journal now, at `head`. Best effort: without it, the
    /// journal's tail is looked at as before.
    fn mark(&self, id: &str, head: &Head) {
        let written = crate::sys::open_shared(
            OpenOptions::new().create(true).write(true).truncate(true),
            &self.marker(),
        )
        .and_then(|mut file| file.write_all(format!("{id} {} {}", head.seq, head.hash).as_bytes()));
        drop(written);
    }

    /// The marker's id and head.
    fn marked(&self) -> (String, Option<Head>) {
        let text = std::fs::read_to_string(self.marker()).unwrap_or_default();
        let mut words = text.split(' ');
        let id = words.next().unwrap_or_default().to_string();
        let head = match (words.next().and_then(|s| s.parse().ok()), words.next()) {
            (Some(seq), Some(hash)) if hash.len() == 64 => Some(Head {
                seq,
                hash: hash.to_string(),
            }),
            _ => None,
        };
        (id, head)
    }

    /// Whether an entry could be appended now: the journal opens for appending. Checked before
    /// access is opened, so that a journal that cannot take the record opens nothing.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        if let Some(db) = &self.db {
            return db.check_writable();
        }
        self.open().map(drop)
    }

    fn open(&self) -> anyhow::Result<std::fs::File> {
        crate::sys::open_shared(
            OpenOptions::new().create(true).read(true).append(true),
            &self.path,
        )
        .map_err(|e| {
            fault(
                Exit::IoErr,
                format!("opening the journal {}: {e}", self.path.display()),
            )
        })
    }

    /// Appends the entries of `outbox` that the journal does not have yet (by `id`, looked for
    /// in the journal's last 256 KiB, where the latest entries are, and when the file is
    /// shorter in the newest rotated file too: it may have been rotated since). Returns how
    /// many.
    pub fn recover(&self, outbox: &[serde_json::Value]) -> anyhow::Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        if outbox.is_empty() {
            return Ok(0);
        }
        let mut tail = String::new();
        if let Ok(mut file) = crate::sys::open_no_follow(OpenOptions::new().read(true), &self.path)
        {
            let len = file.metadata().map_or(0, |m| m.len());
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(len.saturating_sub(256 << 10)))
                .and_then(|_| file.read_to_end(&mut bytes))
                .map_err(|e| {
                    fault(
                        Exit::IoErr,
                        format!("reading the journal {}: {e}", self.path.display()),
                    )
                })?;
            tail = String::from_utf8_lossy(&bytes).into_owned();
        }
        // Only whole lines count: a line cut short by a crash may show the id of an entry
        // whose record it lost.
        let id_of = |line: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|entry| entry.get("id")?.as_str().map(str::to_string))
        };
        let mut in_tail: std::collections::HashSet<String> = tail
            .lines()
            .filter_map(|line| id_of(line.as_bytes()))
            .collect();
        // A file rotated since: its entries are in the newest rotated file.
        if tail.len() < 256 << 10
            && let Some(newest) = rotation::files(&self.path)
                .into_iter()
                .rfind(|p| *p != self.path)
        {
            rotation::read_file(&newest, &mut |_, line| {
                in_tail.extend(id_of(line));
            });
        }
        let (last, _) = self.marked();
        let mut appended = 0;
        for entry in outbox {
            let Some(id) = entry.get("id").and_then(serde_json::Value::as_str) else {
                continue;
            };
            let journaled = id == last || in_tail.contains(id);
            if !journaled {
                // Recorded afresh: a chain place it may carry (a kept line) is not its own.
                let mut entry = entry.clone();
                if let Some(members) = entry.as_object_mut() {
                    members.remove("seq");
                    members.remove("hash");
                }
                let ts = entry
                    .get("ts")
                    .and_then(serde_json::Value::as_str)
                    .and_then(Timestamp::parse)
                    .unwrap_or_else(Timestamp::now);
                self.append_line(&crate::output::json(entry.to_string()), id, ts)?;
                appended += 1;
            }
        }
        Ok(appended)
    }

    /// Where entries the journal (or the database) could not take are kept on this node until
    /// they can be recorded: `unrecorded.jsonl` beside the journal file, in the state directory.
    pub fn kept_path(&self) -> PathBuf {
        self.path.with_file_name("unrecorded.jsonl")
    }

    /// Keeps `lines` (journal entries as JSON) durably on this node, appended in order and
    /// synced, to be recorded by a later run ([`Journal::record_kept`]). Said on stderr by the
    /// caller too; returns whether the node could keep them.
    pub fn keep(&self, lines: &[String]) -> bool {
        if lines.is_empty() {
            return true;
        }
        let path = self.kept_path();
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        let kept = crate::sys::open_shared(OpenOptions::new().create(true).append(true), &path)
            .and_then(|mut file| {
                let mut prefix = String::new();
                if !ends_with_newline(&file) {
                    prefix.push('\n');
                }
                file.write_all(format!("{prefix}{text}").as_bytes())?;
                file.sync_data()
            });
        if let Err(e) = &kept {
            errln!(
                "otnsx: state: cannot keep {} unrecorded journal entries in {}: {e}",
                lines.len(),
                path.display()
            );
        }
        kept.is_ok()
    }

    /// Records the entries kept on this node by earlier runs ([`Journal::keep`]), oldest
    /// first, each once (an id the journal has already is left out). Files of a run that is
    /// still recording them (younger than a minute) are left to it. In the journal file they
    /// are durable at once and their files removed; in the database they go with the run's
    /// transaction, and the files to remove once it commits are returned. Returns how many
    /// entries were recorded, and those files.
    pub fn record_kept(&self) -> anyhow::Result<(usize, Vec<PathBuf>)> {
        let path = self.kept_path();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut files: Vec<PathBuf> = Vec::new();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let taken = dir.join(format!(
                "unrecorded.{nanos:024}.{}.replay",
                std::process::id()
            ));
            if std::fs::rename(&path, &taken).is_ok() {
                files.push(taken);
            }
        }
        let stale = std::time::Duration::from_secs(60);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let old = entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > stale);
                if name.starts_with("unrecorded.") && name.ends_with(".replay") && old {
                    files.push(entry.path());
                }
            }
        }
        files.sort();
        files.dedup();
        let mut recorded = 0;
        let mut after_commit = Vec::new();
        for file in files {
            let text = crate::sys::open_no_follow(OpenOptions::new().read(true), &file)
                .and_then(|mut f| {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut f, &mut text).map(|_| text)
                })
                .map_err(|e| {
                    fault(
                        Exit::IoErr,
                        format!("reading the kept journal entries {}: {e}", file.display()),
                    )
                })?;
            let entries: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect();
            recorded += match &self.db {
                Some(db) => {
                    for value in &entries {
                        if let Ok(entry) = serde_json::from_value::<Entry>(value.clone()) {
                            db.append(&entry)?;
                        }
                    }
                    entries.len()
                }
                None => self.recover(&entries)?,
            };
            match self.db {
                Some(_) => after_commit.push(file),
                None => {
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        Ok((recorded, after_commit))
    }

    /// Appends `line` (one entry, unchained) under the journal's lock: rotates the file first
    /// if it is due, chains the line after the last entry, writes it in one write and syncs.
    /// Returns the line as written.
    fn append_line(&self, line: &str, id: &str, now: Timestamp) -> anyhow::Result<String> {
        let _held = self.hold()?;
        let mut file = self.open()?;
        if self.due(&file, now) {
            match self.rotate(&file, now) {
                Ok(()) => file = self.open()?,
                // Not rotated: appending to the same file is still right.
                Err(e) => errln!(
                    "otnsx: warning: {e:#}; the journal goes on in {}",
                    self.path.display()
                ),
            }
        }
        let head = self.head(&file);
        let (chained, head) = chain::link(&head, line).ok_or_else(|| {
            fault(
                Exit::IoErr,
                format!(
                    "a journal entry is not a JSON object: {}",
                    crate::escape::shorten(line)
                ),
            )
        })?;
        self.write(&mut file, &chained)?;
        self.mark(id, &head);
        Ok(chained)
    }

    /// Writes `line` at the end of `file` and syncs it.
    fn write(&self, file: &mut std::fs::File, line: &str) -> anyhow::Result<()> {
        // A run killed in the middle of its write can leave a line cut short (Linux stops a
        // write to a file at a page boundary when SIGKILL arrives): end that line first, so that
        // it stays one unreadable line instead of swallowing this entry too.
        let mut text = String::with_capacity(line.len() + 2);
        if !ends_with_newline(file) {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        // One write of the whole line, under the journal's lock.
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| {
                fault(
                    Exit::IoErr,
                    format!("appending to the journal {}: {e}", self.path.display()),
                )
            })
    }

    /// Takes the journal's lock (`journal.lock`), waiting at most [`JOURNAL_LOCK_WAIT`], once
    /// a run: after a wait that ran out, only a lock that is free at once is taken.
    fn hold(&self) -> anyhow::Result<std::fs::File> {
        let path = self.path.with_extension("lock");
        let file = crate::sys::open_shared(
            OpenOptions::new().create(true).truncate(false).write(true),
            &path,
        )
        .map_err(|e| {
            fault(
                Exit::IoErr,
                format!("opening the journal's lock {}: {e}", path.display()),
            )
        })?;
        let stuck = self.stuck.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = crate::deadline::Deadline::after(if stuck {
            Duration::ZERO
        } else {
            JOURNAL_LOCK_WAIT
        });
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !deadline.sleep(pause) {
                        self.stuck.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(fault(
                            Exit::IoErr,
                            format!(
                                "the journal's lock {} stayed busy for {} s: another otnsx stopped while writing an entry",
                                path.display(),
                                JOURNAL_LOCK_WAIT.as_secs()
                            ),
                        ));
                    }
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(fault(
                        Exit::IoErr,
                        format!("locking {}: {e}", path.display()),
                    ));
                }
            }
        }
    }

    /// Whether the open journal `file` is due for rotation at `now`.
    fn due(&self, file: &std::fs::File, now: Timestamp) -> bool {
        let len = file.metadata().map_or(0, |m| m.len());
        if len == 0 {
            return false;
        }
        if len >= self.rotation.size {
            return true;
        }
        self.rotation.age.is_some_and(|age| {
            rotation::first_ts(file).is_some_and(|first| {
                now.0.saturating_sub(first.0) >= i64::try_from(age.as_secs()).unwrap_or(i64::MAX)
            })
        })
    }

    /// Renames the journal file aside (`journal-<time>.jsonl`) and begins the new one with a
    /// `rotate` entry that continues the chain. Under the journal's lock.
    fn rotate(&self, file: &std::fs::File, now: Timestamp) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let head = self.head(file);
        let len = file.metadata().map_or(0, |m| m.len());
        let aside = rotation::rotated_name(dir, now);
        let name = aside
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::rename(&self.path, &aside)
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(|e| {
                fault(
                    Exit::IoErr,
                    format!(
                        "rotating the journal {} to {}: {e}",
                        self.path.display(),
                        aside.display()
                    ),
                )
            })?;
        let entry = Entry {
            id: format!(
                "{}.{}.rotate",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
            ts: now,
            action: Action::Rotate,
            ticket_number: None,
            ticket_id: None,
            vm: None,
            vm_id: None,
            profile: None,
            agent: None,
            result: EntryResult::Ok,
            detail: format!(
                "the journal before this entry ({} bytes, entries up to {}) is in {name}",
                len, head.seq
            ),
            actor: "otnsx".into(),
            cause: Cause::Journal,
            gained: Vec::new(),
            lost: Vec::new(),
            reason: None,
            opened_by: Vec::new(),
            group: None,
        };
        let (chained, next) = chain::link(&head, &entry.to_json())
            .ok_or_else(|| fault(Exit::IoErr, "the rotation entry is not a JSON object"))?;
        let mut file = self.open()?;
        self.write(&mut file, &chained)?;
        self.mark(&entry.id, &next);
        Ok(())
    }

    /// The chain's head: the last chained line of the journal file (looked for from its end),
    /// or the marker's if that is further on (entries removed from the file show as a gap),
    /// or the newest rotated file's; the chain's beginning if there is none.
    fn head(&self, file: &std::fs::File) -> Head {
        let in_file = last_head_of(file);
        let (_, marked) = self.marked();
        match (in_file, marked) {
            (Some(found), Some(marked)) if marked.seq > found.seq => marked,
            (Some(found), _) => found,
            (None, Some(marked)) => marked,
            (None, None) => self.rotated_head().unwrap_or_else(Head::genesis),
        }
    }

    /// The last head in the newest rotated file.
    fn rotated_head(&self) -> Option<Head> {
        let newest = rotation::files(&self.path)
            .into_iter()
            .rfind(|p| *p != self.path)?;
        let mut head = None;
        rotation::read_file(&newest, &mut |_, line| {
            if let Some(link) = chain::parse(line) {
                head = Some(link.head());
            }
        });
        head
    }
}

/// The head of the last chained line of `file`, read from its end in growing pieces (at most
/// 16 MiB: an entry is far shorter).
fn last_head_of(file: &std::fs::File) -> Option<Head> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().map_or(0, |m| m.len());
    let mut want: u64 = 16 << 10;
    loop {
        let start = len.saturating_sub(want);
        let mut bytes = vec![0u8; usize::try_from(len - start).ok()?];
        file.read_exact_at(&mut bytes, start).ok()?;
        // The first piece may start inside a line: only lines after its first newline count.
        let whole = if start == 0 {
            &bytes[..]
        } else {
            let nl = bytes.iter().position(|&b| b == b'\n')?;
            &bytes[nl + 1..]
        };
        if let Some(head) = chain::last_head(whole) {
            return Some(head);
        }
        if start == 0 || want >= 16 << 20 {
            return None;
        }
        want *= 4;
    }
}

/// Whether the file is empty or its last byte is a newline (what cannot be read counts as
/// one: the line about to be written must not be held back by it).
fn ends_with_newline(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().map_or(0, |m| m.len());
    let mut last = [b'\n'];
    len == 0 || file.read_at(&mut last, len - 1).is_err() || last[0] == b'\n'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written_and_older_lines_still_read() {
        for action in [
            Action::Grant,
            Action::Revoke,
            Action::Noop,
            Action::Refused,
            Action::Error,
            Action::Note,
            Action::Warning,
        ] {
            let json = serde_json::to_string(&action).expect("json");
            assert_eq!(json, format!("\"{}\"", action.as_str()));
        }
        let line = r#"{"id":"1.2.3","ts":"2026-11-23T15:36:43Z","action":"grant","ticket_number":null,"ticket_id":2,"vm":"web01","vm_id":"vm-42","result":"ok","detail":"opened","actor":"helpdesk:agent1","cause":"lock","gained":[{"kind":"ticket","id":2,"number":"2026112310000011"}]}"#;
        let entry: Entry = serde_json::from_str(line).expect("reads");
        assert_eq!(entry.to_json(), line);
        let older = r#"{"ts":"2026-11-23T15:36:43Z","action":"noop","result":"ok","detail":"","actor":"alice","cause":"grant"}"#;
        let entry: Entry = serde_json::from_str(older).expect("reads");
        assert!(entry.id.is_empty() && entry.gained.is_empty() && entry.vm.is_none());
    }
}
