//! The run's context: what every configured command reads (the configuration, the state, the
//! clock, who runs it) and the one recorder of what it does; taking the state lock and reading
//! the leases ([`Run::begin`]), committing what the run staged, the services' clients.

use crate::config::Config;
use crate::deadline::Deadline;
use crate::domain::cause::Cause;
use crate::error::{Exit, exit_code, fault};
use crate::helpdesk::HelpDesk;
use crate::nsx::TagBackend;
use crate::state::journal::Action;
use crate::state::recorder::{Recorder, Subject};
use crate::state::store::{Holder, Lease, Scope, StateLock, Store};
use crate::time::{Clock, Timestamp};

/// What [`Run::begin`] found: the state lock, and the leases if they could be read.
pub struct Begun {
    pub lock: Option<StateLock>,
    /// `None` when the lease file or the lock could not be read or taken: closing still works
    /// (NSX first), opening is refused.
    pub leases: Option<Vec<Lease>>,
    /// The state lock stayed busy until the deadline (another run holds it, perhaps hung):
    /// why, for the run's exit status (75) once it has closed what it must.
    pub busy: Option<anyhow::Error>,
    /// With a busy lock: the leases as read without it, to know what a closing run must
    /// close (never to save or to open by).
    pub snapshot: Option<Vec<Lease>>,
}

impl Begun {
    fn unknown(lock: Option<StateLock>) -> Self {
        Begun {
            lock,
            leases: None,
            busy: None,
            snapshot: None,
        }
    }
}

/// Everything a command needs besides its own arguments: what it reads (the configuration,
/// the state directory, the clock) and the one recorder of what it does.
pub struct Run {
    pub config: Config,
    pub deadline: Deadline,
    pub verbose: bool,
    pub dry_run: bool,
    pub store: Store,
    pub clock: Clock,
    pub recorder: Recorder,
    /// Files of entries kept on this node that the run's transaction records: removed once it
    /// commits.
    pub kept_files: std::sync::Mutex<Vec<std::path::PathBuf>>,
}

/// The current time, or in a debug build the time in `OTNSX_NOW` (RFC 3339, UTC): a setting
/// for tests, which need a clock they control to make leases expire. A release build never
/// reads it: the environment is not a control channel (documented in the man page).
pub fn clock() -> anyhow::Result<Timestamp> {
    if !cfg!(debug_assertions) {
        return Ok(Timestamp::now());
    }
    match std::env::var("OTNSX_NOW") {
        Err(_) => Ok(Timestamp::now()),
        Ok(text) => Timestamp::parse(&text).ok_or_else(|| {
            fault(
                Exit::Usage,
                format!("OTNSX_NOW={text:?} is not a UTC time like 2026-11-23T15:36:43Z"),
            )
        }),
    }
}

/// The user who runs otnsx by hand, from facts the caller cannot set: the name of the real
/// uid in /etc/passwd; under sudo as root (real uid 0, `SUDO_UID` and `SUDO_USER` set, and
/// `SUDO_UID` the uid /etc/passwd gives `SUDO_USER`), the user behind sudo. Never `USER` or
/// `LOGNAME`, which anyone sets (`USER=alice otnsx grant ...`); a `SUDO_USER` that does not
/// match its `SUDO_UID` is not believed, and the run is recorded as root's.
pub fn os_user() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (real, _) = crate::sys::uids();
    os_user_from(real, &passwd, |name| std::env::var(name).ok())
}

/// [`os_user`] over the real uid, the text of /etc/passwd and the environment.
fn os_user_from(real: u32, passwd: &str, var: impl Fn(&str) -> Option<String>) -> String {
    // (name, uid) of every well-formed line.
    let users = || {
        passwd.lines().filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse::<u32>().ok()?;
            Some((name, uid))
        })
    };
    let printable = |name: &str| !name.is_empty() && !name.chars().any(crate::escape::is_hostile);
    if real == 0
        && let Some(sudo_uid) = var("SUDO_UID").and_then(|v| v.parse::<u32>().ok())
        && let Some(sudo_user) = var("SUDO_USER")
        && printable(&sudo_user)
        && users().any(|(name, uid)| name == sudo_user && uid == sudo_uid)
    {
        return sudo_user.chars().take(64).collect();
    }
    users()
        .find(|&(name, uid)| uid == real && printable(name))
        .map(|(name, _)| name.chars().take(64).collect())
        .unwrap_or_else(|| format!("uid {real}"))
}

impl Run {
    /// Commits what the run staged ([`Store::commit`]); when that fails, the journal entries
    /// that did not commit (or may not have) are kept on this node to be recorded later.
    pub fn commit_state(&self) -> anyhow::Result<()> {
        let result = self.store.commit();
        match &result {
            // The kept entries this run recorded are in the database now.
            Ok(()) => {
                for file in crate::sync::lock(&self.kept_files).drain(..) {
                    let _ = std::fs::remove_file(file);
                }
                if let Some(db) = self.store.database() {
                    self.recorder.committed(&db.take_committed());
                }
            }
            Err(_) => {
                if let Some(db) = self.store.database() {
                    let lines = db.take_unrecorded();
                    self.recorder.committed(&lines);
                    self.recorder.journal().keep(&lines);
                }
            }
        }
        result
    }

    /// The help-desk client, with the session kept between runs, its reads bounded by the
    /// deadline less the part kept for closing; `need` says what for, in the error when there
    /// is no `[otrs]` section.
    pub fn helpdesk(&self, need: &str) -> anyhow::Result<Box<dyn HelpDesk>> {
        let otrs = self.config.otrs.as_ref().ok_or_else(|| {
            fault(
                Exit::Config,
                format!("no [otrs] section: it is needed {need}"),
            )
        })?;
        // The help desk's reads may take all but the part of the deadline kept for closing
        // (see Otrs::reads_by): a help desk that hangs leaves an unlock the time to close.
        let client = crate::helpdesk::otrs::Otrs::new(
            otrs,
            self.deadline,
            self.verbose,
            Some(self.store.session_path()),
        )?;
        Ok(Box::new(client))
    }

    /// Runs `work` with the NSX backend, ending its session afterwards.
    pub fn with_backend<T>(
        &self,
        work: impl FnOnce(&dyn TagBackend) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let memory = crate::nsx::Memory::Refresh;
        crate::nsx::with(&self.config, self.deadline, self.verbose, memory, work)
    }

    /// [`Run::with_backend`] for a help-desk event, which may use what earlier runs remembered.
    pub fn with_event_backend<T>(
        &self,
        work: impl FnOnce(&dyn TagBackend) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let memory = crate::nsx::Memory::Use;
        crate::nsx::with(&self.config, self.deadline, self.verbose, memory, work)
    }

    /// Takes the state lock for `scope` (none in a dry run, which changes nothing) and reads
    /// the leases. A lock that stays busy until the deadline (exit 75 in the end) and any other
    /// state problem (said, exit 74 at the end) leave the leases unknown, so that closing still
    /// works and opening is refused; with a busy lock, the leases as read without it come
    /// along to say what to close. A run that touches some keys locks its VMs once it knows
    /// them ([`Run::hold_vms`]).
    ///
    /// A run that finds no other under way first settles what earlier runs left: journal
    /// entries saved with the leases by a run that was killed before it appended them to the
    /// journal are appended now, so that the journal records every saved change; a lease that
    /// claims to live longer than its kind allows is clipped, and the clip journaled. (On the
    /// database, a run that locks everything does that.)
    pub fn begin(&self, scope: Scope) -> anyhow::Result<Begun> {
        let lock = if self.dry_run {
            None
        } else {
            match self.store.lock(self.deadline.for_locking(), scope) {
                Ok(lock) => Some(lock),
                Err(e) if exit_code(&e) == Exit::TempFail => {
                    return Ok(Begun {
                        snapshot: self.store.load().ok(),
                        busy: Some(e),
                        ..Begun::unknown(None)
                    });
                }
                Err(e) => {
                    self.recorder.state_problem(&e);
                    return Ok(Begun::unknown(None));
                }
            }
        };
        // What earlier runs on this node could not record comes first, in order (in the
        // database: with this run's transaction).
        if lock.is_some() {
            match self.recorder.journal().record_kept() {
                Ok((0, _)) => {}
                Ok((n, files)) => {
                    errln!(
                        "otnsx: recording {n} journal entries kept on this node by earlier runs"
                    );
                    crate::sync::lock(&self.kept_files).extend(files);
                }
                Err(e) => self.recorder.state_problem(&e),
            }
        }
        let (mut leases, outbox) = match self.store.load_with_outbox() {
            Ok(read) => read,
            Err(e) => {
                self.recorder.state_problem(&e);
                return Ok(Begun::unknown(lock));
            }
        };
        if let Some(lock) = &lock
            && lock.alone()
        {
            self.settle_leftovers(lock, &mut leases, outbox);
        }
        if let Some(held) = &lock
            && scope != Scope::All
        {
            // The ticket's key; then the VMs the ticket holds, before NSX is read ahead about
            // them (the database's lock statement locked both already).
            let keys = self
                .store
                .share(held, self.deadline.for_locking())
                .and_then(|()| {
                    let Scope::Ticket(id) = scope else {
                        return Ok(false);
                    };
                    let mine = leases
                        .iter()
                        .filter(|l| matches!(l.holder, Holder::Ticket { id: t, .. } if t == id));
                    let ids = mine.map(|l| l.vm_id.clone()).collect();
                    match self.store.database() {
                        Some(_) => Ok(false),
                        None => self.store.hold_vms(held, &ids, self.deadline.for_locking()),
                    }
                });
            if let Err(e) = keys {
                if exit_code(&e) == Exit::TempFail {
                    return Ok(Begun {
                        snapshot: Some(leases),
                        busy: Some(e),
                        ..Begun::unknown(None)
                    });
                }
                self.recorder.state_problem(&e);
                return Ok(Begun::unknown(None));
            }
            // Others may have saved while this run waited for its ticket.
            if self.store.database().is_none() {
                match self.store.load() {
                    Ok(read) => leases = read,
                    Err(e) => {
                        self.recorder.state_problem(&e);
                        return Ok(Begun::unknown(lock));
                    }
                }
            }
        }
        Ok(Begun {
            leases: Some(leases),
            ..Begun::unknown(lock)
        })
    }

    /// What earlier runs left, settled by a run under way alone: the outbox's entries
    /// appended to the journal where they are missing, and leases that claim to live longer
    /// than their kind allows clipped, the clip journaled.
    fn settle_leftovers(
        &self,
        lock: &StateLock,
        leases: &mut [Lease],
        mut outbox: Vec<serde_json::Value>,
    ) {
        for lease in leases.iter_mut() {
            let max = match lease.holder {
                Holder::Ticket { .. } => self.config.policy.max_duration,
                Holder::User { .. } => self.config.policy.max_grant,
            };
            if let Some(clipped) = lease.clipped(max, self.clock.now()) {
                let vm = lease.vm_ref();
                let text = format!(
                    "the lease of {} on {} claimed to last until {}, longer than its kind allows; clipped to {}",
                    lease.holder, vm.name, lease.expires_at, clipped.expires_at
                );
                let mut entry = self.recorder.entry(
                    &Subject::new(Cause::Clip),
                    Action::Warning,
                    Some(&vm),
                    &text,
                );
                entry.lost = vec![lease.holder.clone()];
                entry.gained = vec![lease.holder.clone()];
                outbox.push(serde_json::to_value(&entry).unwrap_or_default());
                *lease = clipped;
            }
        }
        if outbox.is_empty() {
            return;
        }
        match self.recorder.journal().recover(&outbox) {
            Ok(recovered) => {
                if recovered > 0 {
                    errln!("otnsx: recovered {recovered} journal entries of an interrupted run");
                }
                outbox.clear();
            }
            Err(e) => self.recorder.state_problem(&e),
        }
        // The outbox stays in the file while the journal cannot take it.
        if let Err(e) = self.store.save(lock, leases, &outbox) {
            self.recorder.state_problem(&e);
        }
    }

    /// Locks the VMs `ids` for the run (see [`crate::state::keys`]), waiting at most for the
    /// locking share of the deadline (then exit 75). Returns the leases as read again when a
    /// VM was added (the run decides by those), `None` when the run held them all already,
    /// or holds no lock (a dry run, unknown leases). What `backend` read of the VMs added
    /// before the run held them is read again, where it could mislead: always for a run that
    /// closes them (`closing`); for one that opens them, where it said the VM carries the tag
    /// (else it attaches either way) or where other leases hold the VM now (a read without
    /// the tag would end them as closed in NSX).
    pub fn hold_vms(
        &self,
        lock: Option<&StateLock>,
        backend: &dyn crate::nsx::TagBackend,
        ids: impl IntoIterator<Item = String>,
        closing: bool,
    ) -> anyhow::Result<Option<Vec<Lease>>> {
        let Some(lock) = lock.filter(|_| !self.dry_run) else {
            return Ok(None);
        };
        let ids: std::collections::BTreeSet<String> = ids.into_iter().collect();
        let new: std::collections::BTreeSet<String> = (ids.iter())
            .filter(|id| !self.store.covers(lock, id))
            .cloned()
            .collect();
        if !self
            .store
            .hold_vms(lock, &ids, self.deadline.for_locking())?
        {
            return Ok(None);
        }
        // Read (while finding them) before the run held them: another run may have opened and
        // closed them since, leaving their leases as they were.
        let fresh = self.store.load()?;
        let (held, free): (std::collections::BTreeSet<String>, _) = new
            .into_iter()
            .partition(|id| fresh.iter().any(|l| &l.vm_id == id));
        backend.forget(&held, false);
        backend.forget(&free, !closing);
        Ok(Some(fresh))
    }

    /// [`Run::hold_vms`] for a run that closes `ids`: VMs that stay busy until the deadline
    /// leave the leases unknown (`busy`, with the leases as read without them to say what to
    /// close), as a busy state lock does, so that closing goes on (fail closed).
    pub fn hold_for_closing(
        &self,
        backend: &dyn crate::nsx::TagBackend,
        mut begun: Begun,
        ids: impl IntoIterator<Item = String>,
    ) -> Begun {
        if begun.leases.is_none() {
            return begun;
        }
        match self.hold_vms(begun.lock.as_ref(), backend, ids, true) {
            Ok(Some(fresh)) => begun.leases = Some(fresh),
            Ok(None) => {}
            Err(e) if exit_code(&e) == Exit::TempFail => {
                return Begun {
                    snapshot: begun.leases,
                    busy: Some(e),
                    ..Begun::unknown(None)
                };
            }
            Err(e) => {
                self.recorder.state_problem(&e);
                return Begun::unknown(None);
            }
        }
        begun
    }

    /// The leases and the lock, for a command that may open access: refused (exit 74) when the
    /// state is unknown. (A state directory writable by every user refuses each attach, in
    /// `apply`, and lets the closing a command also does go on.)
    pub fn for_opening(&self, begun: Begun) -> anyhow::Result<(Option<StateLock>, Vec<Lease>)> {
        if let Some(busy) = begun.busy {
            return Err(busy.context("nothing was opened"));
        }
        let Some(leases) = begun.leases else {
            return Err(fault(
                Exit::IoErr,
                "nothing was opened: access opens only with its record, and the state directory cannot hold it now",
            ));
        };
        Ok((begun.lock, leases))
    }

    /// Runs `work`; journals its failure, if any, before passing it on.
    pub fn journaled<T>(
        &self,
        subject: &Subject,
        work: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let result = work();
        if let Err(err) = &result {
            self.recorder.failure(subject, err);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_the_real_uids_or_a_consistent_sudo_user() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/sh\n";
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        // USER and LOGNAME are never believed.
        let spoofed: &[(&str, &str)] = &[("USER", "alice"), ("LOGNAME", "alice")];
        assert_eq!(os_user_from(0, passwd, env(spoofed)), "root");
        assert_eq!(os_user_from(1001, passwd, env(spoofed)), "bob");
        // Under sudo as root, with SUDO_UID naming SUDO_USER's uid: the user behind sudo.
        let sudo: &[(&str, &str)] = &[("SUDO_USER", "alice"), ("SUDO_UID", "1000")];
        assert_eq!(os_user_from(0, passwd, env(sudo)), "alice");
        // Not root: SUDO_USER is a variable like any other.
        assert_eq!(os_user_from(1001, passwd, env(sudo)), "bob");
        // SUDO_UID of another user, missing or not a number: root.
        for pairs in [
            &[("SUDO_USER", "alice"), ("SUDO_UID", "1001")][..],
            &[("SUDO_USER", "alice")][..],
            &[("SUDO_USER", "alice"), ("SUDO_UID", "x")][..],
            &[("SUDO_USER", "mallory"), ("SUDO_UID", "1000")][..],
        ] {
            let pairs: &'static [(&str, &str)] = Box::leak(pairs.to_vec().into_boxed_slice());
            assert_eq!(os_user_from(0, passwd, env(pairs)), "root", "{pairs:?}");
        }
        // A uid without a name.
        assert_eq!(os_user_from(4242, passwd, env(spoofed)), "uid 4242");
    }
}
