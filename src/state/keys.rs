//! What a run locks: everything (`reconcile`, `revoke --all`, `state`), or only the tickets and
//! VMs it touches, so that events on different tickets and VMs run side by side.
//!
//! In the state directory every run holds `leases.lock`, exclusively when it touches
//! everything, shared otherwise; it goes through `leases.gate.lock` to take it, which a run
//! that touches everything holds while it waits, so that it is not kept waiting for ever by
//! runs that keep coming. A run that touches some keys locks each one exclusively on a
//! bucket file, `locks/ticket-NN.lock` or `locks/vm-NN.lock` (64 of each; two keys in one
//! bucket wait for each other, which costs time, never correctness). Keys are taken in one
//! order, so that two runs cannot wait for each other: `leases.lock`, then the run's one
//! ticket, then its VMs by bucket, ascending. A run that must add a VM below one it holds tries
//! it without waiting, and when it is busy lets its VMs go and takes them all again in order.
//! A ticket's events thus apply one after the other on every node; a VM is changed by one run
//! at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::deadline::Deadline;
use crate::error::{Exit, fault};
use crate::sys;

/// What a run locks as it begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything, alone: `reconcile`, `revoke --all`, `state`.
    All,
    /// Beside other runs, with the VMs it touches locked as it learns them
    /// ([`super::store::Store::hold_vms`]): `grant`, `revoke --vm`, `check`.
    Keys,
    /// As [`Scope::Keys`], and the ticket first: one ticket's events apply one after the other.
    Ticket(u64),
}

/// Buckets per kind of key.
pub const BUCKETS: u64 = 64;

/// The bucket of a key: FNV-1a, so that every otnsx (of any version) agrees.
pub fn bucket(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % BUCKETS
}

/// The keys a run holds in the state directory: its locks' files, and the VMs they cover.
#[derive(Default)]
pub struct Held {
    /// `leases.lock`.
    pub all: Option<File>,
    /// Whether `all` is held exclusively: no other run is under way.
    pub alone: bool,
    pub ticket: Option<File>,
    /// The VM buckets held, by number.
    pub buckets: BTreeMap<u64, File>,
    /// The VMs (by id) whose leases this run may change; every VM when alone.
    pub vms: BTreeSet<String>,
    /// The ids of the journal entries this run left in the lease file's outbox: its next save
    /// replaces them, and no other run's.
    pub outbox: Vec<String>,
    /// The ids of those the journal has already.
    pub journaled: BTreeSet<String>,
}

impl Held {
    /// Whether the leases of VM `id` are this run's to change.
    pub fn covers(&self, id: &str) -> bool {
        self.alone || self.vms.contains(id)
    }
}

/// How a lock is waited for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exclusive,
    Shared,
}

/// Takes `kind` of lock on `file` (at `path`, for messages), waiting at most until `deadline`
/// (then exit 75, `busy` saying what holds it).
pub fn wait(file: &File, kind: Kind, path: &Path, deadline: Deadline) -> anyhow::Result<()> {
    let mut pause = Duration::from_millis(2);
    loop {
        let tried = match kind {
            Kind::Exclusive => file.try_lock(),
            Kind::Shared => file.try_lock_shared(),
        };
        match tried {
            Ok(()) => return Ok(()),
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
                pause = (pause * 2).min(Duration::from_millis(25));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(fault(
                    Exit::IoErr,
                    format!("locking {}: {e}", path.display()),
                ));
            }
        }
    }
}

/// Whether an exclusive lock on `file` was taken without waiting.
pub fn try_exclusive(file: &File, path: &Path) -> anyhow::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(fault(
            Exit::IoErr,
            format!("locking {}: {e}", path.display()),
        )),
    }
}

/// The bucket files of the state directory `dir`.
pub struct Buckets {
    dir: PathBuf,
}

impl Buckets {
    pub fn new(state_dir: &Path) -> Self {
        Buckets {
            dir: state_dir.join("locks"),
        }
    }

    /// `locks/KIND-NN.lock`, opened (the directory made if needed).
    pub fn open(&self, kind: &str, bucket: u64) -> anyhow::Result<(File, PathBuf)> {
        use std::os::unix::fs::PermissionsExt;
        if !self.dir.is_dir() {
            let made = fs::DirBuilder::new()
                .recursive(true)
                .mode(sys::SHARED_DIR)
                .create(&self.dir);
            if made.is_ok() {
                let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(sys::SHARED_DIR));
            }
        }
        let path = self.dir.join(format!("{kind}-{bucket:02}.lock"));
        let file = sys::open_shared(
            OpenOptions::new().create(true).truncate(false).write(true),
            &path,
        )
        .map_err(|e| {
            fault(
                Exit::IoErr,
                format!("cannot open the lock file {}: {e}", path.display()),
            )
        })?;
        Ok((file, path))
    }

    /// Locks the VMs `ids` for `held`, besides those it holds: waiting for each bucket in
    /// order; a bucket below one already held is tried without waiting, and when it is busy
    /// every VM bucket is let go and all are taken again in order. Returns whether any VM
    /// was added.
    pub fn hold_vms(
        &self,
        held: &mut Held,
        ids: &BTreeSet<String>,
        deadline: Deadline,
    ) -> anyhow::Result<bool> {
        let new: BTreeSet<String> = ids.iter().filter(|id| !held.covers(id)).cloned().collect();
        if new.is_empty() {
            return Ok(false);
        }
        let wanted: BTreeSet<u64> = new
            .iter()
            .map(|id| bucket(id))
            .filter(|b| !held.buckets.contains_key(b))
            .collect();
        let highest = held.buckets.keys().next_back().copied();
        for &b in &wanted {
            let (file, path) = self.open("vm", b)?;
            match highest {
                Some(top) if b < top => {
                    if !try_exclusive(&file, &path)? {
                        // Out of order and busy: let go, and take them all in order.
                        let mut all: BTreeSet<u64> = held.buckets.keys().copied().collect();
                        all.extend(wanted.iter().copied());
                        held.buckets.clear();
                        // Held again only once every bucket is.
                        let before = std::mem::take(&mut held.vms);
                        for b in all {
                            let (file, path) = self.open("vm", b)?;
                            wait(&file, Kind::Exclusive, &path, deadline)?;
                            held.buckets.insert(b, file);
                        }
                        held.vms = before;
                        break;
                    }
                }
                _ => wait(&file, Kind::Exclusive, &path, deadline)?,
            }
            held.buckets.insert(b, file);
        }
        held.vms.extend(new);
        Ok(true)
    }

    /// Locks the VMs of `ids` that are free now, without waiting; returns those it holds now
    /// (the ones held before among them too).
    pub fn try_vms(&self, held: &mut Held, ids: &BTreeSet<String>) -> BTreeSet<String> {
        let mut got = BTreeSet::new();
        for id in ids {
            if held.covers(id) {
                got.insert(id.clone());
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(free) = held.buckets.entry(bucket(id))
            {
                let Ok((file, path)) = self.open("vm", *free.key()) else {
                    continue;
                };
                if !matches!(try_exclusive(&file, &path), Ok(true)) {
                    continue;
                }
                free.insert(file);
            }
            held.vms.insert(id.clone());
            got.insert(id.clone());
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // Fixed: every otnsx, of any version, must agree.
        assert_eq!(bucket("vm-42"), bucket("vm-42"));
        let spread: BTreeSet<u64> = (0..1000).map(|i| bucket(&format!("vm-{i}"))).collect();
        assert_eq!(spread.len(), BUCKETS as usize);
        assert!(spread.iter().all(|b| *b < BUCKETS));
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("otnsx-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_busy_vm_below_those_held_lets_go_and_retakes_in_order() {
        let dir = temp("order");
        let buckets = Buckets::new(&dir);
        // Two VMs in different buckets, the second lower.
        let ids: Vec<String> = (0..200).map(|i| format!("vm-{i}")).collect();
        let high = ids.iter().max_by_key(|id| bucket(id)).unwrap().clone();
        let low = ids.iter().min_by_key(|id| bucket(id)).unwrap().clone();
        assert!(bucket(&low) < bucket(&high));
        let mut mine = Held::default();
        let one = |id: &str| BTreeSet::from([id.to_string()]);
        let soon = || Deadline::after(Duration::from_millis(300));
        assert!(buckets.hold_vms(&mut mine, &one(&high), soon()).unwrap());
        // Another run holds the low one: adding it means waiting for it in order, which
        // times out here, having let the high one go meanwhile.
        let mut other = Held::default();
        assert!(buckets.hold_vms(&mut other, &one(&low), soon()).unwrap());
        let err = buckets.hold_vms(&mut mine, &one(&low), soon()).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), Exit::TempFail);
        // It let the high one go to take both in order, and holds neither now.
        assert!(
            mine.buckets.is_empty() && !mine.covers(&high),
            "{:?}",
            mine.vms
        );
        // Once the other lets go, both are held.
        drop(other);
        let mut mine = Held::default();
        assert!(buckets.hold_vms(&mut mine, &one(&high), soon()).unwrap());
        assert!(buckets.hold_vms(&mut mine, &one(&low), soon()).unwrap());
        assert!(mine.covers(&high) && mine.covers(&low));
        // Held already: nothing added.
        assert!(!buckets.hold_vms(&mut mine, &one(&low), soon()).unwrap());
        // Another run cannot have them, but tries without waiting.
        let mut third = Held::default();
        let both = BTreeSet::from([high.clone(), low.clone()]);
        assert!(buckets.try_vms(&mut third, &both).is_empty());
        drop(mine);
        assert_eq!(buckets.try_vms(&mut third, &both), both);
        fs::remove_dir_all(&dir).ok();
    }
}
