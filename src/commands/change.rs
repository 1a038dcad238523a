//! Carrying out a decision: which VMs it concerns, what NSX says of them, the NSX changes
//! (`apply.rs`), then what came of each recorded in turn (the leases saved, then the journal
//! entry), and the summary.

use std::collections::{BTreeMap, BTreeSet};

use crate::apply::{Applied, apply, may_land_late};
use crate::domain::cause::{Cause, EntryResult};
use crate::domain::vm::VmRef;
use crate::error::{Exit, exit_code, fault};
use crate::nsx::TagBackend;
use crate::plan::{self, TagChange, VmPlan};
use crate::state::journal::{Action, Entry};
use crate::state::recorder::Subject;
use crate::state::store::{Holder, Lease, LeaseState, StateLock};
use crate::time::Timestamp;

use super::run::Run;

/// How a command wants the leases to change.
pub struct Decision {
    /// Starts the summary line: `ticket 2026112310000011`, `grant by alice`.
    pub heading: String,
    pub before: Vec<Lease>,
    pub after: Vec<Lease>,
    /// The VMs the command is about (their tag is checked even if their leases do not change).
    pub touched: Vec<VmRef>,
    pub refused: Vec<Refusal>,
    /// Why a VM changes, where that differs from the command's own cause (reconcile: `expiry`,
    /// `drift`), by VM id.
    pub causes: BTreeMap<String, Cause>,
    /// Which VMs carry the tag, when the command has read that already (reconcile, revoke
    /// --all); otherwise NSX is asked about the concerned VMs.
    pub tagged: Option<BTreeSet<String>>,
    /// The leases this decision opens again although they were held before (a grant asked
    /// for again), by key and holder: they may reopen a VM that is closed in NSX. No other
    /// lease ever does (see [`plan::end_closed`]).
    pub renewed: Vec<(String, Holder)>,
}

impl Decision {
    pub fn new(
        heading: String,
        before: Vec<Lease>,
        after: Vec<Lease>,
        touched: Vec<VmRef>,
    ) -> Self {
        Decision {
            heading,
            before,
            after,
            touched,
            refused: Vec::new(),
            causes: BTreeMap::new(),
            tagged: None,
            renewed: Vec::new(),
        }
    }
}

/// A decision as it is carried out: its leases after the change, less those that ended
/// because NSX has their VM closed, and why each VM changes.
struct Changed<'a> {
    before: &'a [Lease],
    after: &'a [Lease],
    touched: &'a [VmRef],
    causes: &'a BTreeMap<String, Cause>,
}

/// Leases grouped by VM, in the order the VMs first appear.
struct ByVm {
    order: Vec<String>,
    leases: std::collections::HashMap<String, Vec<Lease>>,
}

impl ByVm {
    fn of(leases: &[Lease]) -> Self {
        let mut grouped = ByVm {
            order: Vec::new(),
            leases: std::collections::HashMap::new(),
        };
        for lease in leases {
            let key = lease.key();
            let list = grouped.leases.entry(key.clone()).or_insert_with(|| {
                grouped.order.push(key);
                Vec::new()
            });
            list.push(lease.clone());
        }
        grouped
    }

    fn get(&self, key: &str) -> &[Lease] {
        self.leases.get(key).map_or(&[], Vec::as_slice)
    }

    fn set(&mut self, key: &str, leases: Vec<Lease>) {
        if !self.leases.contains_key(key) {
            self.order.push(key.to_string());
        }
        self.leases.insert(key.to_string(), leases);
    }

    /// Every lease, VM by VM.
    fn all(&self) -> Vec<Lease> {
        self.order
            .iter()
            .flat_map(|id| self.get(id).iter().cloned())
            .collect()
    }
}

/// A VM name that was not used, and why.
pub type Refusal = (String, anyhow::Error);

/// The result of one VM's part of a command.
pub struct Outcome {
    pub plan: VmPlan,
    pub error: Option<anyhow::Error>,
    /// When the VM's access ends, if it is open afterwards.
    pub open_until: Option<Timestamp>,
    /// How the change was made, when that is worth a warning (last-writer-wins tag updates).
    pub warnings: Vec<String>,
    /// With `nsx.verify_group`: whether the change took effect in the group, and how soon.
    pub membership: Option<crate::nsx::Membership>,
    pub cause: Cause,
    /// A failed attach that NSX may still apply: its leases are kept as detaches to do.
    pub unsure: bool,
    /// Whose access began and ended, by the leases before and after this VM's change.
    gained: Vec<Holder>,
    lost: Vec<Holder>,
}

impl Outcome {
    /// The holders whose access to the VM began with this outcome.
    pub fn gained(&self) -> Vec<Holder> {
        self.gained.clone()
    }

    /// The holders whose access to the VM ended with this outcome.
    pub fn lost(&self) -> Vec<Holder> {
        self.lost.clone()
    }
}

/// Where a command's changes go.
#[derive(Clone, Copy)]
pub enum Saving<'a> {
    /// A dry run: nothing changes, in NSX or in the store.
    DryRun,
    /// NSX changes, and the leases are saved under the lock.
    To(&'a StateLock),
    /// The leases are unknown (the state cannot be read or locked): NSX may only be closed,
    /// and nothing is saved.
    Nowhere,
}

impl Run {
    /// Carries out a decision: journals the refused names, asks NSX which of the concerned
    /// VMs carry the tag (unless the decision knows), applies the plan, and makes its records
    /// durable ([`Run::settle`]).
    pub fn carry_out(
        &self,
        lock: Option<&StateLock>,
        backend: &dyn TagBackend,
        subject: &Subject,
        decision: &Decision,
    ) -> anyhow::Result<Vec<Outcome>> {
        let outcomes = self.carry_out_unsettled(lock, backend, subject, decision)?;
        Ok(self.settle(lock, backend, subject, outcomes).0)
    }

    /// [`Run::carry_out`] up to the records: on the database they wait in the run's
    /// transaction, so that what is journaled before [`Run::settle`] (a help-desk event's note)
    /// commits with them, in the same round trip.
    pub fn carry_out_unsettled(
        &self,
        lock: Option<&StateLock>,
        backend: &dyn TagBackend,
        subject: &Subject,
        decision: &Decision,
    ) -> anyhow::Result<Vec<Outcome>> {
        for (name, err) in &decision.refused {
            let vm = VmRef::new(crate::escape::shorten(name), String::new());
            let mut entry =
                self.recorder
                    .entry(subject, Action::Refused, Some(&vm), &format!("{err:#}"));
            entry.result = EntryResult::Failed;
            self.recorder.record(&entry);
        }
        let held = lock
            .filter(|_| !self.dry_run)
            .and_then(|lock| self.only_held(lock, backend, decision));
        let (before, after, touched) = match &held {
            Some((before, after, touched)) => (before, after, touched),
            None => (&decision.before, &decision.after, &decision.touched),
        };
        // Which VMs carry the tag, and of which VMs that is known (`None`: of all).
        let (tagged, asked) = match &decision.tagged {
            Some(known) => (known.clone(), None),
            None => {
                let concerned = plan::concerned_vms(before, after, touched);
                let asked: BTreeSet<String> = concerned.iter().map(VmRef::key).collect();
                (backend.tagged_among(&concerned)?, Some(asked))
            }
        };
        let tampered = backend.tampered();
        // What is closed in NSX stays closed: a lease that held it before ends now.
        let (after, ended) = plan::end_closed(
            before,
            after,
            (&tagged, asked.as_ref()),
            &decision.renewed,
            self.clock.decides_at,
        );
        let mut causes = decision.causes.clone();
        for key in ended {
            causes.entry(key).or_insert(Cause::Drift);
        }
        let plans = plan::plan_repairing(
            before,
            &after,
            touched,
            &tagged,
            &tampered,
            self.clock.decides_at,
        );
        let saving = match lock {
            _ if self.dry_run => Saving::DryRun,
            Some(lock) => Saving::To(lock),
            None => Saving::Nowhere,
        };
        let applied = match saving {
            Saving::DryRun => plans
                .iter()
                .map(|_| Applied {
                    result: Ok(()),
                    warnings: Vec::new(),
                    membership: None,
                    sent: false,
                })
                .collect(),
            _ => apply(backend, &plans, |_| self.may_open(saving)),
        };
        let changed = Changed {
            before,
            after: &after,
            touched,
            causes: &causes,
        };
        Ok(self.record_changes(saving, backend, subject, &changed, plans, applied))
    }

    /// A decision narrowed to the VMs the run holds, when it concerns others (a detach left
    /// to retry by an earlier run, on a VM the command is not about): those are locked if no
    /// other run holds them, and kept if their leases are still as the decision read them;
    /// the others are left as they are, to the run that holds them or the next one. `None`:
    /// the run holds every VM the decision concerns.
    fn only_held(
        &self,
        lock: &StateLock,
        backend: &dyn TagBackend,
        decision: &Decision,
    ) -> Option<(Vec<Lease>, Vec<Lease>, Vec<VmRef>)> {
        let Decision {
            before,
            after,
            touched,
            ..
        } = decision;
        let concerned = plan::concerned_vms(before, after, touched);
        let missing: BTreeSet<String> = concerned
            .iter()
            .map(|vm| vm.id.clone())
            .filter(|id| !lock.covers(id))
            .collect();
        if missing.is_empty() {
            return None;
        }
        let got = self.store.try_vms(lock, &missing);
        // Read before they were held: read again.
        backend.forget(&got, false);
        let fresh = self.store.load().unwrap_or_default();
        let of = |leases: &[Lease], id: &str| -> Vec<Lease> {
            let mut list: Vec<Lease> = leases.iter().filter(|l| l.vm_id == id).cloned().collect();
            list.sort_by_key(|l| (l.key(), l.holder.clone()));
            list
        };
        // Held now, but changed since the decision read them: as they are now, unchanged.
        let changed: BTreeSet<&String> = got
            .iter()
            .filter(|id| of(before, id) != of(&fresh, id))
            .collect();
        let left: BTreeSet<&String> = missing
            .iter()
            .filter(|id| !got.contains(*id) || changed.contains(id))
            .collect();
        let before: Vec<Lease> = before
            .iter()
            .filter(|l| !changed.contains(&l.vm_id))
            .cloned()
            .chain(fresh.into_iter().filter(|l| changed.contains(&l.vm_id)))
            .collect();
        let after: Vec<Lease> = after
            .iter()
            .filter(|l| !left.contains(&l.vm_id))
            .cloned()
            .chain(before.iter().filter(|l| left.contains(&l.vm_id)).cloned())
            .collect();
        let touched = touched
            .iter()
            .filter(|vm| !left.contains(&vm.id))
            .cloned()
            .collect();
        Some((before, after, touched))
    }

    /// Makes the records of `outcomes` durable: the database's transaction commits (the lease
    /// file's saves are durable each already). When it does not, what the run opened has no
    /// record: it is closed again. Returns the outcomes, and whether any was undone.
    pub fn settle(
        &self,
        lock: Option<&StateLock>,
        backend: &dyn TagBackend,
        subject: &Subject,
        outcomes: Vec<Outcome>,
    ) -> (Vec<Outcome>, bool) {
        if lock.is_none() || self.dry_run {
            return (outcomes, false);
        }
        let Err(e) = self.commit_state() else {
            return (outcomes, false);
        };
        self.recorder.state_problem(&e);
        let mut undone = false;
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| match outcome.error {
                None if outcome.plan.change == TagChange::Attach => {
                    undone = true;
                    self.undo_open(None, backend, subject, outcome)
                }
                _ => outcome,
            })
            .collect();
        (outcomes, undone)
    }

    /// Why `plan`'s VM must not be opened now, if it must not: the state directory cannot hold
    /// its record (the journal must take it before any attach).
    fn may_open(&self, saving: Saving<'_>) -> anyhow::Result<()> {
        if let Saving::Nowhere = saving {
            return Err(fault(
                Exit::IoErr,
                "not opened: the state directory cannot hold its record",
            ));
        }
        if let Some(why) = self.store.unsafe_dir() {
            let err = fault(Exit::IoErr, format!("not opened: {why}"));
            self.recorder.state_problem(&err);
            return Err(err);
        }
        self.recorder
            .journal()
            .check_writable()
            .map_err(|e| e.context("not opened: the journal cannot take its record"))
    }

    /// Records what came of each VM's change, one VM after the other: its leases saved, then
    /// its journal entry. A failed attach leaves no lease; a failed detach leaves its leases
    /// marked for retry. Access that was opened is closed again when the lease file or the
    /// journal cannot hold its record after all. Closing goes on whatever the store does: its
    /// failures are said, and the run ends with exit 74.
    fn record_changes(
        &self,
        saving: Saving<'_>,
        backend: &dyn TagBackend,
        subject: &Subject,
        decision: &Changed<'_>,
        plans: Vec<VmPlan>,
        applied: Vec<Applied>,
    ) -> Vec<Outcome> {
        // The leases by VM: each change touches one VM's leases only, so that a store of many
        // VMs costs each change its own VM, not the whole store.
        let before_of = ByVm::of(decision.before);
        let after_of = ByVm::of(decision.after);
        let mut current = ByVm::of(decision.before);
        let touched: std::collections::HashSet<String> =
            decision.touched.iter().map(VmRef::key).collect();
        let mut outcomes = Vec::new();
        for (
            plan,
            Applied {
                result,
                warnings,
                membership,
                sent,
            },
        ) in plans.into_iter().zip(applied)
        {
            let id = plan.vm.key();
            // This VM's leases before its change (the others do not change with it).
            let previous: Vec<Lease> = current.get(&id).to_vec();
            let (before, after) = (before_of.get(&id), after_of.get(&id));
            let mut wanted = after.to_vec();
            let unsure = match &result {
                Err(e) => plan.change == TagChange::Attach && may_land_late(sent, e),
                Ok(()) => false,
            };
            match (&result, plan.change) {
                // The leases it would have made stay as detaches to do: the holder's release
                // (an unlock) or the next run closes a tag that lands late.
                (Err(_), TagChange::Attach) if unsure => {
                    wanted = plan::unsure_open(before, &wanted, &id)
                }
                (Err(_), TagChange::Attach) => wanted = before.to_vec(),
                (Err(_), TagChange::Detach) => wanted = plan::keep_for_retry(before, &wanted, &id),
                (Ok(()), TagChange::Detach) => wanted = plan::settle(&wanted, &id),
                (Ok(()), TagChange::Keep) if !plan.tagged => wanted = plan::settle(&wanted, &id),
                _ => {}
            }
            // A lease made now records who opened it.
            let actor = self.recorder.actor();
            for lease in wanted.iter_mut().filter(|l| l.by.is_none()) {
                if !previous.iter().any(|p| p.holder == lease.holder) {
                    lease.by = Some(actor.clone());
                }
            }
            let opened = result.is_ok() && plan.change == TagChange::Attach;
            // A detach left pending by an earlier run, and retried by this one.
            let retried = !touched.contains(&id)
                && before.iter().any(|l| l.state == LeaseState::DetachFailed);
            let cause = match decision.causes.get(&id) {
                Some(cause) => *cause,
                None if retried => Cause::Retry,
                None => subject.cause,
            };
            let mut outcome = self.outcome(cause, plan, result, &previous, &wanted);
            outcome.unsure = unsure;
            outcome.warnings = warnings;
            outcome.membership = membership;
            let mut entry = self.entry_for(subject, &outcome, &wanted);
            entry.opened_by = previous
                .iter()
                .filter(|l| outcome.lost.contains(&l.holder))
                .filter_map(|l| l.by.clone())
                .collect();
            entry.opened_by.dedup();
            let unchanged = plan::same_vm(&previous, &wanted, &id);
            current.set(&id, wanted);
            let kept = match saving {
                Saving::To(lock) if !unchanged => {
                    let outbox = [serde_json::to_value(&entry).unwrap_or_default()];
                    match self.store.save(lock, &current.all(), &outbox) {
                        Ok(()) if self.recorder.record(&entry) => {
                            self.store.journaled(lock, &entry.id);
                            true
                        }
                        Ok(()) => !opened,
                        Err(e) => {
                            self.recorder.state_problem(&e);
                            self.recorder.record(&entry);
                            !opened
                        }
                    }
                }
                _ => self.recorder.record(&entry) || !opened,
            };
            if !kept {
                // Opened, but its record is not durable: close it again.
                let lock = match saving {
                    Saving::To(lock) => Some(lock),
                    _ => None,
                };
                current.set(&id, previous);
                let restored = current.all();
                let record = lock.map(|lock| (lock, &entry, restored.as_slice()));
                outcome = self.undo_open(record, backend, subject, outcome);
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    /// The outcome of one VM's change, with whose access began and ended.
    fn outcome(
        &self,
        cause: Cause,
        plan: VmPlan,
        result: anyhow::Result<()>,
        previous: &[Lease],
        current: &[Lease],
    ) -> Outcome {
        let id = plan.vm.key();
        let open_until = current
            .iter()
            .filter(|l| l.key() == id && l.is_live(self.clock.decides_at))
            .map(|l| l.expires_at)
            .max()
            .filter(|_| result.is_ok() || plan.change != TagChange::Attach);
        let (gained, lost) = plan::change_of(previous, current, &id, self.clock.decides_at);
        Outcome {
            cause,
            plan,
            error: result.err(),
            open_until,
            warnings: Vec::new(),
            membership: None,
            unsure: false,
            gained,
            lost,
        }
    }

    /// The journal entry that records an outcome.
    fn entry_for(&self, subject: &Subject, outcome: &Outcome, current: &[Lease]) -> Entry {
        let id = &outcome.plan.vm.key();
        let (action, detail) = describe(outcome);
        let mut entry = self
            .recorder
            .entry(subject, action, Some(&outcome.plan.vm), &detail);
        entry.cause = outcome.cause;
        entry.gained = outcome.gained();
        entry.lost = outcome.lost();
        entry.reason = current
            .iter()
            .find(|l| &l.key() == id && entry.gained.contains(&l.holder))
            .and_then(|l| l.reason.clone());
        if let Some(m) = &outcome.membership {
            entry.group = Some(crate::state::journal::GroupWait {
                group: m.group.clone(),
                confirmed: m.result.is_ok(),
                waited_ms: u64::try_from(m.waited.as_millis()).unwrap_or(u64::MAX),
            });
        }
        if outcome.error.is_some()
            || outcome
                .membership
                .as_ref()
                .is_some_and(|m| m.result.is_err())
        {
            entry.result = EntryResult::Failed;
        }
        entry
    }

    /// Access was opened but its record could not be made durable: detach again (verified),
    /// put the VM's leases back (`record`: under the lock, the entry of the opening and the
    /// leases without it), and record both steps wherever they can go.
    fn undo_open(
        &self,
        record: Option<(&StateLock, &Entry, &[Lease])>,
        backend: &dyn TagBackend,
        subject: &Subject,
        mut outcome: Outcome,
    ) -> Outcome {
        let vm = outcome.plan.vm.clone();
        let undone = backend.detach(&vm);
        let mut entry = self.recorder.entry(subject, Action::Revoke, Some(&vm), "");
        entry.result = EntryResult::Failed;
        entry.cause = outcome.cause;
        let why = "its record could not be written to the state directory or database";
        match &undone {
            Ok(()) => {
                entry.lost = outcome.gained();
                entry.detail = format!("closed {vm} again at once: {why}");
                outcome.error = Some(fault(
                    Exit::IoErr,
                    format!("opened and closed again at once: {why}"),
                ));
            }
            Err(e) => {
                entry.action = Action::Error;
                entry.detail = format!(
                    "{vm} is OPEN without a durable record ({why}) and closing it again failed: {e:#}; run `otnsx revoke --force --vm {}`",
                    vm.name
                );
                outcome.error = Some(fault(Exit::IoErr, entry.detail.clone()));
            }
        }
        if let (Some((lock, opened, restored)), Ok(())) = (record, &undone) {
            let outbox = [opened, &entry].map(|e| serde_json::to_value(e).unwrap_or_default());
            if let Err(e) = self.store.save(lock, restored, &outbox) {
                self.recorder.state_problem(&e);
            }
        }
        self.recorder.record(&entry);
        outcome.gained.clear();
        outcome.open_until = None;
        outcome
    }

    /// Prints the one-line summary on stdout, and the failures among it as one line on
    /// stderr; returns the exit status the outcomes add up to.
    pub fn report(&self, decision: &Decision, outcomes: &[Outcome]) -> Exit {
        let (heading, refused) = (&decision.heading, &decision.refused);
        let mut parts: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut exits: Vec<Exit> = Vec::new();
        for (name, err) in refused {
            failures.push(format!("{}: {err:#}", crate::escape::shorten(name)));
            exits.push(exit_code(err));
        }
        parts.extend(failures.iter().cloned());
        let mut changes = Vec::new();
        for outcome in outcomes {
            let (action, detail) = describe_as(outcome, self.dry_run);
            let unconfirmed = outcome
                .membership
                .as_ref()
                .and_then(|m| m.result.as_ref().err());
            let failed = outcome.error.as_ref().or(unconfirmed);
            if let Some(err) = failed {
                failures.push(detail.clone());
                exits.push(exit_code(err));
            } else {
                exits.push(Exit::Ok);
            }
            changes.push(
                serde_json::json!({"vm": outcome.plan.vm.name, "vm_id": outcome.plan.vm.id,
                "action": action, "cause": outcome.cause,
                "result": if failed.is_some() { "failed" } else { "ok" }, "detail": detail}),
            );
            parts.push(detail);
        }
        if crate::document::json() {
            let refused: Vec<serde_json::Value> = refused
                .iter()
                .map(|(name, err)| {
                    serde_json::json!({"vm": name, "exit": exit_code(err).code(), "error": format!("{err:#}")})
                })
                .collect();
            crate::document::fields(serde_json::json!({"heading": heading,
                "dry_run": self.dry_run, "changes": changes, "refused": refused}));
        }
        if parts.is_empty() {
            parts.push("nothing to do".into());
        }
        let prefix = if self.dry_run { "dry run: " } else { "" };
        outln!("{prefix}{heading}: {}", parts.join("; "));
        if !failures.is_empty() {
            errln!("otnsx: {heading}: {}", failures.join("; "));
        }
        combine(&exits)
    }
}

/// All fine → 0; some fine and some not → 1; all failed → the first failure's code.
pub fn combine(exits: &[Exit]) -> Exit {
    let failed: Vec<Exit> = exits.iter().copied().filter(|e| *e != Exit::Ok).collect();
    match failed.first() {
        None => Exit::Ok,
        Some(_) if failed.len() < exits.len() => Exit::Partial,
        Some(first) => *first,
    }
}

/// The journal action and the human sentence for an outcome, with its warnings.
pub fn describe(outcome: &Outcome) -> (Action, String) {
    describe_as(outcome, false)
}

/// [`describe`], in a dry run's words when `dry_run`: what would change ("would open",
/// "would close"), since nothing did.
pub fn describe_as(outcome: &Outcome, dry_run: bool) -> (Action, String) {
    let (action, mut detail) = describe_change(outcome, dry_run);
    if let Some(m) = &outcome.membership {
        match &m.result {
            Ok(()) => detail.push_str(&format!(
                " ({} after {:.1} s)",
                m.said(outcome.plan.change == TagChange::Attach),
                m.waited.as_secs_f64()
            )),
            Err(e) => detail.push_str(&format!("; {e:#}")),
        }
    }
    for warning in &outcome.warnings {
        detail.push_str(&format!(" (warning: {warning})"));
    }
    (action, detail)
}

fn describe_change(outcome: &Outcome, dry_run: bool) -> (Action, String) {
    let plan = &outcome.plan;
    // A dry run's verbs: what would be done.
    let (open, close, release) = match dry_run {
        true => ("would open", "would close", "would release"),
        false => ("opened", "closed", "released"),
    };
    let vm = &plan.vm;
    let holders = |list: &[Holder]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let until = outcome
        .open_until
        .map(|t| format!(" until {t}"))
        .unwrap_or_default();
    let why = match outcome.cause {
        Cause::Expiry => " (lease expired)",
        Cause::Drift => " (NSX disagreed with the leases)",
        Cause::Retry => " (retried)",
        Cause::Policy => " (policy no longer allows it)",
        _ => "",
    };
    if let Some(err) = &outcome.error {
        let what = match plan.change {
            TagChange::Attach if outcome.unsure => {
                "opening failed, and NSX may still apply it: kept to be closed by the unlock or the next run"
            }
            TagChange::Attach => "opening failed, no lease kept",
            _ => "closing failed, kept for retry on the next run",
        };
        return (Action::Error, format!("{vm}: {what}: {err:#}"));
    }
    let gained = !outcome.gained().is_empty();
    let lost = !outcome.lost().is_empty();
    match plan.change {
        TagChange::Attach => (Action::Grant, format!("{open} {vm}{until}{why}")),
        TagChange::Detach => (Action::Revoke, format!("{close} {vm}{why}")),
        TagChange::Keep if gained => (
            Action::Grant,
            format!(
                "{vm} {} {}{until}",
                match dry_run {
                    true => "is already open; would also be held by",
                    false => "was already open; now also held by",
                },
                holders(&plan.held_after)
            ),
        ),
        TagChange::Keep if lost && !plan.held_after.is_empty() => (
            Action::Revoke,
            format!(
                "{vm} {}, still held by {}{why}",
                if dry_run {
                    "would stay open"
                } else {
                    "stays open"
                },
                holders(&plan.held_after)
            ),
        ),
        TagChange::Keep if lost && outcome.cause == Cause::Drift => (
            Action::Revoke,
            format!(
                "{release} {vm}: it is closed in NSX (by hand, or by a close whose record was lost), and otnsx does not reopen what is closed"
            ),
        ),
        TagChange::Keep if lost => (
            Action::Revoke,
            format!("{release} {vm} (it was already closed){why}"),
        ),
        TagChange::Keep if plan.held_after.is_empty() => {
            (Action::Noop, format!("{vm} is already closed"))
        }
        TagChange::Keep => (
            Action::Noop,
            format!(
                "{vm} is already open for {}{until}",
                holders(&plan.held_after)
            ),
        ),
    }
}

impl Run {
    /// Closes `vms` while the leases are unknown (the lease file or the lock could not be read
    /// or taken): NSX first, nothing saved, every step journaled where it can be. Fails closed:
    /// whoever else held these VMs loses access too, and the summary says so.
    pub fn close_unknown(
        &self,
        backend: &dyn TagBackend,
        subject: &Subject,
        heading: String,
        vms: Vec<VmRef>,
        tagged: Option<BTreeSet<String>>,
        refused: Vec<Refusal>,
    ) -> anyhow::Result<Exit> {
        let mut decision = Decision::new(heading, Vec::new(), Vec::new(), vms);
        decision.tagged = tagged;
        decision.refused = refused;
        let outcomes = self.carry_out(None, backend, subject, &decision)?;
        let exit = self.report(&decision, &outcomes);
        let closed: Vec<String> = outcomes
            .iter()
            .filter(|o| o.error.is_none() && o.plan.change == plan::TagChange::Detach)
            .map(|o| crate::output::printable(&o.plan.vm.name))
            .collect();
        if !closed.is_empty() {
            let text = match self.dry_run {
                true => format!(
                    "dry run: the leases could not be read, so otnsx would close {} without knowing who else held them (fail closed)",
                    closed.join(", ")
                ),
                false => format!(
                    "the leases could not be read, so otnsx closed {} without knowing who else held them (fail closed): another ticket or grant on them lost access too",
                    closed.join(", ")
                ),
            };
            self.recorder
                .record(&self.recorder.entry(subject, Action::Warning, None, &text));
            errln!("otnsx: warning: {text}");
        }
        Ok(exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_combine() {
        assert_eq!(combine(&[]), Exit::Ok);
        assert_eq!(combine(&[Exit::Ok, Exit::Ok]), Exit::Ok);
        assert_eq!(combine(&[Exit::Ok, Exit::Unavailable]), Exit::Partial);
        assert_eq!(combine(&[Exit::DataErr, Exit::Unavailable]), Exit::DataErr);
    }
}
