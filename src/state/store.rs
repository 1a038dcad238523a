//! The lease store (`leases.json`) and its lock (`leases.lock`) in the state directory.
//!
//! A run changes only the leases of the VMs it has locked (see [`super::keys`]), from reading
//! them to writing them back and across the NSX calls between; runs on other tickets and VMs
//! go on beside it. Each save reads the file again and replaces only its own VMs' leases,
//! under a short lock of the file's own. The file is replaced atomically: temp file, fsync,
//! rename, fsync of the directory. A reader never sees half a file.

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

pub use super::keys::Scope;
use super::keys::{self, Buckets, Held, Kind};
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

/// Proof that the state lock is held, and which keys with it (see [`super::keys`]): the
/// files' locks are released when dropped, the database's by the run's commit
/// ([`Store::commit`]) or the connection's end.
pub struct StateLock {
    scope: Scope,
    held: std::sync::Mutex<Held>,
    /// The state directory, when the leases are in its file: what the run left in the file's
    /// outbox and journaled since is taken out when the lock is let go.
    dir: Option<PathBuf>,
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let held = crate::sync::lock(&self.held);
        if held.journaled.is_empty() || !held.outbox.iter().any(|id| held.journaled.contains(id)) {
            return;
        }
        // Best effort: an entry left in the outbox is found in the journal by the next run
        // that settles leftovers, and not appended again.
        let store = Store::open(dir);
        let journaled: Vec<String> = (held.outbox.iter())
            .filter(|id| held.journaled.contains(*id))
            .cloned()
            .collect();
        let _ = store.rewrite(&held, None, &journaled, &[], DROP_WAIT);
    }
}

impl StateLock {
    /// Whether no other run is under way: the run locked everything, or found nobody else
    /// when it began. Only then are other runs' leftovers (an outbox, a lease to clip) its to
    /// settle.
    pub fn alone(&self) -> bool {
        crate::sync::lock(&self.held).alone
    }

    /// Whether the leases of VM `id` are this run's to change.
    pub fn covers(&self, id: &str) -> bool {
        crate::sync::lock(&self.held).covers(id)
    }
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

    /// Takes the state lock for `scope`, waiting at most until `deadline` (then exit 75). A
    /// lock file that cannot be opened (or is a symbolic link) is exit 74.
    ///
    /// [`Scope::All`] holds `leases.lock` exclusively. The others try that first: a run that
    /// finds nobody else under way settles what earlier runs left (see [`Store::share`]), then
    /// shares it; otherwise it waits to share it. The ticket's key is taken by
    /// [`Store::share`], after that.
    pub fn lock(&self, deadline: Deadline, scope: Scope) -> anyhow::Result<StateLock> {
        let mut held = Held::default();
        if let Some(db) = &self.db {
            db.lock(deadline, scope)?;
            held.alone = scope == Scope::All;
            return Ok(StateLock {
                scope,
                held: std::sync::Mutex::new(held),
                dir: None,
            });
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
        // The way in: a run that locks everything waits here exclusively, so that the runs
        // that come after it wait behind it, not it for ever behind them.
        let gate_path = self.dir.join("leases.gate.lock");
        let gate = sys::open_shared(
            OpenOptions::new().create(true).truncate(false).write(true),
            &gate_path,
        )
        .map_err(|e| {
            io_fault(format!(
                "cannot open the lock file {}: {e}",
                gate_path.display()
            ))
        })?;
        let through = match scope {
            Scope::All => Kind::Exclusive,
            _ => Kind::Shared,
        };
        keys::wait(&gate, through, &gate_path, deadline)?;
        held.alone = match scope {
            Scope::All => {
                keys::wait(&file, Kind::Exclusive, &path, deadline)?;
                true
            }
            _ if keys::try_exclusive(&file, &path)? => true,
            _ => {
                keys::wait(&file, Kind::Shared, &path, deadline)?;
                false
            }
        };
        drop(gate);
        if held.alone {
            self.remove_stale_temp_files();
        }
        held.all = Some(file);
        Ok(StateLock {
            scope,
            held: std::sync::Mutex::new(held),
            dir: Some(self.dir.clone()),
        })
    }

    /// After a run that found itself alone settled what earlier runs left: lets other runs in
    /// beside it (unless it locked everything), then takes its ticket's key, waiting at most
    /// until `deadline`.
    pub fn share(&self, lock: &StateLock, deadline: Deadline) -> anyhow::Result<()> {
        if self.db.is_some() || lock.scope == Scope::All {
            return Ok(());
        }
        let mut held = crate::sync::lock(&lock.held);
        if held.alone {
            let path = self.dir.join("leases.lock");
            if let Some(file) = &held.all {
                // Converting the lock lets a run waiting for it in first: waited for, as any.
                keys::wait(file, Kind::Shared, &path, deadline)?;
            }
            held.alone = false;
        }
        if let Scope::Ticket(id) = lock.scope
            && held.ticket.is_none()
        {
            let (file, path) =
                Buckets::new(&self.dir).open("ticket", keys::bucket(&id.to_string()))?;
            keys::wait(&file, Kind::Exclusive, &path, deadline)?;
            held.ticket = Some(file);
        }
        Ok(())
    }

    /// Locks the VMs `ids` for the run holding `lock`, waiting at most until `deadline` (then
    /// exit 75), in the order [`super::keys`] sets. Returns whether any was added: the leases
    /// must then be read again ([`Store::load`]) before the run decides anything about them.
    pub fn hold_vms(
        &self,
        lock: &StateLock,
        ids: &std::collections::BTreeSet<String>,
        deadline: Deadline,
    ) -> anyhow::Result<bool> {
        if lock.scope == Scope::All {
            return Ok(false);
        }
        if let Some(db) = &self.db {
            return db.hold_vms(ids, deadline);
        }
        let mut held = crate::sync::lock(&lock.held);
        Buckets::new(&self.dir).hold_vms(&mut held, ids, deadline)
    }

    /// Whether the run holding `lock` holds VM `id`.
    pub fn covers(&self, lock: &StateLock, id: &str) -> bool {
        match &self.db {
            Some(db) => db.covers(id),
            None => lock.covers(id),
        }
    }

    /// Locks the VMs of `ids` that no other run holds now, without waiting; returns those the
    /// run holds (with the leases of those added read again into the database's
    /// transaction; the lease file's are read by [`Store::load`]).
    pub fn try_vms(
        &self,
        lock: &StateLock,
        ids: &std::collections::BTreeSet<String>,
    ) -> std::collections::BTreeSet<String> {
        if lock.scope == Scope::All {
            return ids.clone();
        }
        if let Some(db) = &self.db {
            return db.try_vms(ids);
        }
        let mut held = crate::sync::lock(&lock.held);
        Buckets::new(&self.dir).try_vms(&mut held, ids)
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

    /// Replaces the leases of the VMs the run holds with those of `leases` (all of them when
    /// it is alone), with the journal entries that record the change (`outbox`, replacing the
    /// run's own earlier ones), atomically. What other runs saved meanwhile for their VMs, and
    /// their outbox entries, are kept: the file is read again under a short lock of its own
    /// (`leases.write.lock`), held only while it is read and replaced.
    pub fn save(
        &self,
        lock: &StateLock,
        leases: &[Lease],
        outbox: &[serde_json::Value],
    ) -> anyhow::Result<()> {
        if let Some(db) = &self.db {
            return db.save(leases, outbox);
        }
        let mut held = crate::sync::lock(&lock.held);
        if held.alone {
            // Nobody else writes: the run's leases and outbox are the file.
            self.write(leases, outbox)?;
            held.outbox = outbox.iter().filter_map(entry_id).collect();
            return Ok(());
        }
        let replaced = held.outbox.clone();
        held.outbox = self.rewrite(&held, Some(leases), &replaced, outbox, SECTION_WAIT)?;
        Ok(())
    }

    /// Notes that the journal has the entry `id`, which the run saved in the outbox.
    pub fn journaled(&self, lock: &StateLock, id: &str) {
        if self.db.is_none() {
            crate::sync::lock(&lock.held)
                .journaled
                .insert(id.to_string());
        }
    }

    /// Under the lease file's own lock: reads the file again, replaces the leases of the VMs
    /// `held` covers with theirs in `leases` (`None`: keeps them), and the outbox entries
    /// `replaced` (the run's) with `outbox`; returns the ids of `outbox`.
    fn rewrite(
        &self,
        held: &Held,
        leases: Option<&[Lease]>,
        replaced: &[String],
        outbox: &[serde_json::Value],
        wait: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let path = self.dir.join("leases.write.lock");
        let section = sys::open_shared(
            OpenOptions::new().create(true).truncate(false).write(true),
            &path,
        )
        .map_err(|e| io_fault(format!("cannot open the lock file {}: {e}", path.display())))?;
        keys::wait(&section, Kind::Exclusive, &path, Deadline::after(wait))?;
        let (fresh, fresh_outbox) = self.load_with_outbox()?;
        let merged: Vec<Lease> = match leases {
            None => fresh,
            Some(leases) => fresh
                .into_iter()
                .filter(|l| !held.covers(&l.vm_id))
                .chain(leases.iter().filter(|l| held.covers(&l.vm_id)).cloned())
                .collect(),
        };
        let mut all_outbox: Vec<serde_json::Value> = fresh_outbox
            .into_iter()
            .filter(|v| entry_id(v).is_none_or(|id| !replaced.contains(&id)))
            .collect();
        let mine: Vec<String> = outbox.iter().filter_map(entry_id).collect();
        all_outbox.extend(outbox.iter().cloned());
        self.write(&merged, &all_outbox)?;
        Ok(mine)
    }

    /// Writes the lease file: temp file, fsync, rename, fsync of the directory.
    fn write(&self, leases: &[Lease], outbox: &[serde_json::Value]) -> anyhow::Result<()> {
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
    pub fn set_aside(&self, _lock: &StateLock, now: Timestamp) -> anyhow::Result<String> {
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
        self.write(&[], &[])?;
        Ok(aside.display().to_string())
    }
}

/// The id of a journal entry in the outbox.
fn entry_id(entry: &serde_json::Value) -> Option<String> {
    entry
        .get("id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// How long a save waits for the lease file's own lock: it is held while one run reads and
/// replaces the file (milliseconds), so a longer wait means a run stopped in the middle.
const SECTION_WAIT: Duration = Duration::from_secs(2);

/// How long a run that ends waits to take its journaled entries out of the outbox: best
/// effort, after everything else; the next run that settles leftovers finds them journaled.
const DROP_WAIT: Duration = Duration::from_millis(500);

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
            .lock(Deadline::after(Duration::from_secs(1)), Scope::All)
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
    fn runs_on_different_vms_keep_each_others_saves_and_outbox_entries() {
        let store = temp_store("merge");
        let soon = || Deadline::after(Duration::from_secs(1));
        let entry = |id: &str| serde_json::json!({ "id": id });
        let on = |id: &str| Lease {
            vm_id: id.into(),
            ..lease()
        };
        // The first run finds nobody else, settles, and lets the second in beside it.
        let a = store.lock(soon(), Scope::Keys).expect("a");
        assert!(a.alone());
        store.share(&a, soon()).expect("share");
        let b = store.lock(soon(), Scope::Keys).expect("b");
        assert!(!a.alone() && !b.alone());
        let ids = |id: &str| std::collections::BTreeSet::from([id.to_string()]);
        assert!(store.hold_vms(&a, &ids("vm-42"), soon()).expect("a's VM"));
        assert!(store.hold_vms(&b, &ids("vm-43"), soon()).expect("b's VM"));
        // Each saves from what it read (nothing), and keeps what the other saved.
        store
            .save(&a, &[on("vm-42")], &[entry("e1")])
            .expect("a saves");
        store
            .save(&b, &[on("vm-43")], &[entry("e2")])
            .expect("b saves");
        let (leases, outbox) = store.load_with_outbox().expect("load");
        assert_eq!(leases, vec![on("vm-42"), on("vm-43")]);
        assert_eq!(outbox, vec![entry("e1"), entry("e2")]);
        // A lease of a VM the run does not hold is not its to write; its next entry replaces
        // its last one, not the other run's.
        store
            .save(&a, &[on("vm-43"), on("vm-44")], &[entry("e3")])
            .expect("a saves again");
        let (leases, outbox) = store.load_with_outbox().expect("load");
        assert_eq!(leases, vec![on("vm-43")]);
        assert_eq!(outbox, vec![entry("e2"), entry("e3")]);
        // A run that ends takes out the entries the journal has, and leaves the others.
        store.journaled(&b, "e2");
        drop(b);
        drop(a);
        let (leases, outbox) = store.load_with_outbox().expect("load");
        assert_eq!(leases, vec![on("vm-43")]);
        assert_eq!(outbox, vec![entry("e3")], "e3 was never journaled");
        fs::remove_dir_all(store.dir()).ok();
    }

    #[test]
    fn a_second_lock_waits_until_the_deadline() {
        let store = temp_store("busy");
        let _held = store
            .lock(Deadline::after(Duration::from_secs(1)), Scope::All)
            .expect("lock");
        let err = store
            .lock(Deadline::after(Duration::from_millis(100)), Scope::All)
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
