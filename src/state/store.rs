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
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};
use crate::sys;
use crate::time::Timestamp;

const FORMAT_VERSION: u32 = 1;

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Holder {
    Ticket { id: u64, number: String },
    User { name: String },
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Ticket { number, .. } => write!(f, "ticket {number}"),
            Holder::User { name } => write!(f, "user {name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Holds the VM open until it expires.
    #[default]
    Active,
    /// A detach still to do: released, but detaching the tag failed; or an attach that failed
    /// but that NSX may still apply late. Holds nothing open; kept so that the holder's release
    /// or the next run detaches the tag if it is there.
    DetachFailed,
}

/// "`holder` holds VM `vm` open until `expires_at`."
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub vm: String,
    pub vm_id: String,
    /// The access profile the lease opens the VM under; `None`: the profile of `[nsx] tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// With per-agent rules: the agent whose desktop the lease opens the VM to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub holder: Holder,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "is_active")]
    pub state: LeaseState,
    /// Who opened it: the locking agent (`helpdesk:agent1 (user-id 2)`) or the OS user. Kept so that the
    /// journal can name who held access when it ends, whoever the help desk says owns the
    /// ticket by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

fn is_active(state: &LeaseState) -> bool {
    *state == LeaseState::Active
}

impl Lease {
    /// A new active lease: `holder` holds `vm` (under its profile, from its agent's desktop)
    /// from `granted_at` until `expires_at`.
    pub fn opening(
        vm: &VmRef,
        holder: &Holder,
        granted_at: Timestamp,
        expires_at: Timestamp,
        reason: Option<&str>,
    ) -> Lease {
        Lease {
            vm: vm.name.clone(),
            vm_id: vm.id.clone(),
            profile: vm.profile.clone(),
            agent: vm.agent.clone(),
            holder: holder.clone(),
            granted_at,
            expires_at,
            reason: reason.map(str::to_string),
            state: LeaseState::Active,
            by: None,
        }
    }

    pub fn vm_ref(&self) -> VmRef {
        VmRef {
            name: self.vm.clone(),
            id: self.vm_id.clone(),
            profile: self.profile.clone(),
            agent: self.agent.clone(),
        }
    }

    /// What plans match this lease by: its VM under its profile.
    pub fn key(&self) -> String {
        crate::domain::vm::target_key(&self.vm_id, self.profile.as_deref(), self.agent.as_deref())
    }

    /// Whether this lease holds its VM open at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.state == LeaseState::Active && self.expires_at > now
    }

    /// Whether the lease is one otnsx could have written: names, ids and texts within their
    /// limits, without control characters, and granted before it expires.
    pub(super) fn check(&self) -> Result<(), String> {
        let fits = |text: &str, max: usize| {
            !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
        };
        // The rules intake applies (config::is_ticket_number, config::is_login): what otnsx
        // takes it can read back.
        let holder_ok = match &self.holder {
            Holder::Ticket { number, .. } => crate::config::is_ticket_number(number),
            Holder::User { name } => crate::config::is_login(name),
        };
        let ok = fits(&self.vm, crate::config::MAX_VM_NAME)
            && is_vm_id(&self.vm_id)
            && self
                .profile
                .as_deref()
                .is_none_or(crate::config::is_profile_name)
            && self.agent.as_deref().is_none_or(crate::config::is_login)
            && holder_ok
            && self
                .reason
                .as_deref()
                .is_none_or(|r| r.chars().count() <= MAX_REASON)
            && self.granted_at <= self.expires_at;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "a lease on {} breaks the rules otnsx writes by",
                crate::escape::shorten(&self.vm)
            ))
        }
    }

    /// The lease with its expiry brought within `max` of when it was granted (or of `now`, if
    /// it claims to be granted later than clocks can disagree): a lease read from disk never
    /// lives longer than its kind allows. `None` when it is within already.
    pub fn clipped(&self, max: Duration, now: Timestamp) -> Option<Lease> {
        // Another run (another node) may have stamped its grant a little after this one's
        // clock: that is not a lease from the future.
        let latest = now.plus(Duration::from_secs(300));
        let limit = self.granted_at.min(latest).plus(max);
        (self.expires_at > limit).then(|| Lease {
            expires_at: limit,
            ..self.clone()
        })
    }
}

/// Whether `id` is a VM id the store holds and reads back: 1 to 128 characters, no control
/// character, no white space, no `#` (the separator of a lease's key). What NSX or vCenter
/// returns is checked by it before it becomes a lease.
pub fn is_vm_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= 128
        && !id
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '#')
}

/// The longest reason a manual grant may carry, in characters.
pub const MAX_REASON: usize = 500;

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
