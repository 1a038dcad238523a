//! The lease store (`leases.json`) and its lock (`leases.lock`) in the state directory.
//!
//! Every change happens under an exclusive lock on `leases.lock`, held from reading the leases
//! to writing them back (and across the NSX calls between), so that concurrent help-desk
//! workers are serialised. The file is replaced atomically: temp file, fsync, rename, fsync of
//! the directory. A reader never sees half a file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::error::{Exit, fault};
use crate::sys;
use crate::time::Timestamp;

pub use super::lease::{Holder, Lease, LeaseState, is_vm_id};

const FORMAT_VERSION: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseFile {
    version: u32,
    leases: Vec<Lease>,
    /// Journal entries written with these leases and perhaps not yet appended to the journal
    /// (the process may have been killed in between): the next run appends those missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outbox: Vec<serde_json::Value>,
}

/// [`LeaseFile`] as written, borrowing what it writes.
#[derive(Serialize)]
struct LeaseFileRef<'a> {
    version: u32,
    leases: &'a [Lease],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    outbox: &'a [serde_json::Value],
}

pub struct Store {
    dir: PathBuf,
    /// Why the directory could not be created, if it could not.
    problem: Option<String>,
    /// `[state] backend = "postgres"`: the leases are there, not in `leases.json`.
    db: Option<std::sync::Arc<super::pg::Pg>>,
}

/// Proof that the state lock is held; the lock file's is released when dropped, the
/// database's by the run's commit ([`Store::commit`]) or the connection's end.
pub struct StateLock {
    _file: Option<File>,
}

/// A failure to read or write the state directory: exit 74.
fn io_fault(message: String) -> anyhow::Error {
    fault(Exit::IoErr, message)
}

impl Store {
    /// Opens the state directory, creating it (mode 2770: the group's, setgid) if needed. A
    /// directory that cannot
    /// be created is not fatal here: closing access must still work, so the problem is kept and
    /// every read or write of the state then fails with it (exit 74).
    pub fn open(dir: &Path) -> Store {
        use std::os::unix::fs::PermissionsExt;
        let existed = dir.is_dir();
        let created = fs::DirBuilder::new()
            .recursive(true)
            .mode(sys::SHARED_DIR)
            .create(dir);
        if created.is_ok() && !existed {
            // The umask may have taken the group's bits; setgid is never set by mkdir's mode.
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(sys::SHARED_DIR));
        }
        let problem = created.err().map(|e| {
                format!(
                    "cannot create the state directory {}: {e}; set state_dir to a directory this user may write",
                    dir.display()
                )
            });
        Store {
            dir: dir.to_path_buf(),
            problem,
            db: None,
        }
    }

    /// The store of `dir` whose leases are in `db`, if it is given.
    pub fn with_database(dir: &Path, db: Option<std::sync::Arc<super::pg::Pg>>) -> Store {
        Store {
            db,
            ..Store::open(dir)
        }
    }

    /// The database the leases are in, if they are in one.
    pub fn database(&self) -> Option<&super::pg::Pg> {
        self.db.as_deref()
    }

    /// Makes what the run saved durable: the database's transaction commits (and its lock is
    /// released); the lease file's saves are durable each already.
    pub fn commit(&self) -> anyhow::Result<()> {
        self.db.as_ref().map_or(Ok(()), |db| db.commit())
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn leases_path(&self) -> PathBuf {
        self.dir.join("leases.json")
    }

    /// Where the help desk's SessionID is kept between runs.
    pub fn session_path(&self) -> PathBuf {
        self.dir.join("otrs.session")
    }

    /// Where NSX-V's tag id is remembered between runs.
    pub fn tag_memory_path(&self) -> PathBuf {
        self.dir.join("nsx-v.tag")
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    /// Why access may not be opened with this directory: it is writable by users other than
    /// its owner and group (0777, 1777), so anyone could replace the leases or the journal.
    pub fn unsafe_dir(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&self.dir).ok()?.permissions().mode();
        (mode & 0o002 != 0).then(|| {
            format!(
                "the state directory {} is writable by every user (mode {:o}); chmod o-w it",
                self.dir.display(),
                mode & 0o7777
            )
        })
    }

    /// Takes the exclusive state lock, waiting at most until `deadline` (then exit 75). A lock
    /// file that cannot be opened (or is a symbolic link) is exit 74.
    pub fn lock(&self, deadline: Deadline) -> anyhow::Result<StateLock> {
        if let Some(db) = &self.db {
            db.lock(deadline)?;
            return Ok(StateLock { _file: None });
        }
        if let Some(problem) = &self.problem {
            return Err(io_fault(problem.clone()));
        }
        let path = self.dir.join("leases.lock");
        let file = sys::open_shared(
            OpenOptions::new().create(true).truncate(false).write(true),
            &path,
        )
        .map_err(|e| io_fault(format!("cannot open the lock file {}: {e}", path.display())))?;
        let mut pause = Duration::from_millis(5);
        loop {
            match file.try_lock() {
                Ok(()) => {
                    self.remove_stale_temp_files();
                    return Ok(StateLock { _file: Some(file) });
                }
                Err(fs::TryLockError::WouldBlock) => {
                    if !deadline.sleep(pause) {
                        return Err(fault(
                            Exit::TempFail,
                            format!(
                                "the state lock {} stayed busy for half of what the deadline lets a run wait (the rest is kept for the ticket and for closing); another otnsx is still running, or hung",
                                path.display()
                            ),
                        ));
                    }
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(io_fault(format!("locking {}: {e}", path.display())));
                }
            }
        }
    }

    /// Temporary files of a run killed while saving: with the lock held, nobody else writes.
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".leases.json.") && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Reads the leases; a missing file means none.
    pub fn load(&self) -> anyhow::Result<Vec<Lease>> {
        Ok(self.load_with_outbox()?.0)
    }

    /// Reads the leases and the journal entries saved with them. Anything but a file this
    /// otnsx wrote (garbage, empty, `null`, another format version, a lease that breaks the
    /// rules, a link) is an error of exit 74 that names the file and what to do.
    pub fn load_with_outbox(&self) -> anyhow::Result<(Vec<Lease>, Vec<serde_json::Value>)> {
        if let Some(db) = &self.db {
            return Ok((db.load()?, Vec::new()));
        }
        if let Some(problem) = &self.problem {
            return Err(io_fault(problem.clone()));
        }
        let path = self.leases_path();
        let mut text = String::new();
        match sys::open_no_follow(OpenOptions::new().read(true), &path) {
            Ok(file) => {
                let read = file.take(MAX_FILE + 1).read_to_string(&mut text);
                read.map_err(|e| io_fault(format!("reading {}: {e}", path.display())))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()));
            }
            Err(e) => return Err(io_fault(format!("reading {}: {e}", path.display()))),
        }
        let damaged = |why: String| {
            io_fault(format!(
                "{} is damaged ({why}); it was left as it is. `otnsx revoke --all` closes every VM and starts afresh (keeping the file aside); journal.jsonl keeps the history",
                path.display()
            ))
        };
        if text.len() as u64 > MAX_FILE {
            return Err(damaged(format!("larger than {} MiB", MAX_FILE >> 20)));
        }
        let file: LeaseFile =
            serde_json::from_str(&text).map_err(|e| damaged(format!("not a lease file: {e}")))?;
        if file.version != FORMAT_VERSION {
            return Err(damaged(format!(
                "format version {}, this otnsx reads version {FORMAT_VERSION}",
                file.version
            )));
        }
        for lease in &file.leases {
            lease.check().map_err(damaged)?;
        }
        Ok((file.leases, file.outbox))
    }

    /// Replaces the leases, with the journal entries that record the change (`outbox`),
    /// atomically. Needs the state lock.
    pub fn save(
        &self,
        _lock: &StateLock,
        leases: &[Lease],
        outbox: &[serde_json::Value],
    ) -> anyhow::Result<()> {
        if let Some(db) = &self.db {
            return db.save(leases, outbox);
        }
        let path = self.leases_path();
        let temp = self
            .dir
            .join(format!(".leases.json.{}.tmp", std::process::id()));
        let file = LeaseFileRef {
            version: FORMAT_VERSION,
            leases,
            outbox,
        };
        let mut text = serde_json::to_string_pretty(&file).context("encoding the leases")?;
        text.push('\n');
        let write = || -> std::io::Result<()> {
            let _ = fs::remove_file(&temp);
            let mut out = sys::open_shared(OpenOptions::new().create_new(true).write(true), &temp)?;
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
            fs::rename(&temp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temp);
            io_fault(format!("writing {}: {e}", path.display()))
        })
    }

    /// Moves an unreadable lease file aside, to `leases.json.damaged-<time>` (the database's
    /// rows to `otnsx_leases_aside`), and starts an empty store. Returns where the old leases
    /// went.
    pub fn set_aside(&self, lock: &StateLock, now: Timestamp) -> anyhow::Result<String> {
        if let Some(db) = &self.db {
            return db.set_aside();
        }
        let stamp = now.to_string().replace(':', "");
        let aside = self.dir.join(format!("leases.json.damaged-{stamp}"));
        fs::rename(self.leases_path(), &aside).map_err(|e| {
            io_fault(format!(
                "moving {} aside to {}: {e}",
                self.leases_path().display(),
                aside.display()
            ))
        })?;
        self.save(lock, &[], &[])?;
        Ok(aside.display().to_string())
    }
}

/// The largest lease file otnsx reads (about 300,000 leases).
const MAX_FILE: u64 = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("otnsx-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Store::open(&dir)
    }

    fn lease() -> Lease {
        Lease {
            vm: "web01".into(),
            vm_id: "vm-42".into(),
            profile: None,
            agent: None,
            holder: Holder::Ticket {
                id: 2,
                number: "2026112310000011".into(),
            },
            granted_at: Timestamp(1_795_448_203),
            expires_at: Timestamp(1_795_477_003),
            reason: None,
            state: LeaseState::Active,
            by: None,
        }
    }

    #[test]
    fn a_profile_is_kept_and_checked() {
        let with = Lease {
            profile: Some("ssh".into()),
            ..lease()
        };
        let text = serde_json::to_string(&with).unwrap();
        assert!(text.contains("\"profile\":\"ssh\""), "{text}");
        let back: Lease = serde_json::from_str(&text).unwrap();
        assert_eq!(back, with);
        assert!(back.check().is_ok());
        assert!(!serde_json::to_string(&lease()).unwrap().contains("profile"));
        for bad in ["", "SSH", "ssh rdp", "1ssh", "ssh#x"] {
            let bad = Lease {
                profile: Some(bad.into()),
                ..lease()
            };
            assert!(bad.check().is_err(), "{:?}", bad.profile);
        }
    }

    #[test]
    fn saves_and_loads() {
        let store = temp_store("roundtrip");
        assert_eq!(store.load().expect("empty"), vec![]);
        let lock = store
            .lock(Deadline::after(Duration::from_secs(1)))
            .expect("lock");
        store.save(&lock, &[lease()], &[]).expect("save");
        assert_eq!(store.load().expect("load"), vec![lease()]);
        let text = fs::read_to_string(store.leases_path()).expect("text");
        assert!(
            text.contains("\"expires_at\": \"2026-11-23T23:36:43Z\""),
            "{text}"
        );
        fs::remove_dir_all(store.dir()).ok();
    }

    #[test]
    fn a_second_lock_waits_until_the_deadline() {
        let store = temp_store("busy");
        let _held = store
            .lock(Deadline::after(Duration::from_secs(1)))
            .expect("lock");
        let err = store
            .lock(Deadline::after(Duration::from_millis(100)))
            .err()
            .expect("busy");
        assert_eq!(crate::error::exit_code(&err), Exit::TempFail);
        fs::remove_dir_all(store.dir()).ok();
    }

    #[test]
    fn clipping_allows_for_clocks_that_disagree_a_little() {
        let hour = Duration::from_secs(3600);
        let mut l = lease();
        l.expires_at = l.granted_at.plus(hour);
        // Read by a run whose clock is a second behind the grant's: not a lease from the future.
        assert_eq!(l.clipped(hour, Timestamp(l.granted_at.0 - 1)), None);
        // Longer than its kind allows: clipped to its grant plus the maximum.
        assert_eq!(
            l.clipped(hour / 2, l.granted_at).map(|c| c.expires_at),
            Some(l.granted_at.plus(hour / 2))
        );
        // Granted a day "later" than now: clipped to now plus the maximum (and the slack).
        let now = Timestamp(l.granted_at.0 - 86_400);
        let clipped = l.clipped(hour, now).expect("clipped");
        assert_eq!(
            clipped.expires_at,
            now.plus(Duration::from_secs(300)).plus(hour)
        );
    }

    #[test]
    fn a_damaged_file_is_reported_not_replaced() {
        let store = temp_store("damaged");
        fs::write(store.leases_path(), "{\"version\":1,\"leas").expect("write");
        let err = store.load().unwrap_err();
        assert!(format!("{err:#}").contains("is damaged"));
        fs::remove_dir_all(store.dir()).ok();
    }
}
