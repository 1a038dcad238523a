//! `otnsx reconcile [--json]`, for a timer every minute or so: makes NSX match the leases.
//!
//! - Expired leases are dropped.
//! - Ticket leases whose ticket is no longer locked are dropped: one TicketSearch gives the
//!   locked tickets; only those missing from it are read again (a ticket the API user can no
//!   longer see counts as unlocked).
//! - With conditions on tickets (`[policy.require]`, `[profiles.NAME.require]`), each locked
//!   ticket that holds access is read again (one TicketGet each, several at once), and the
//!   leases whose conditions it no longer meets are dropped, the ticket told why.
//! - Drift is repaired: a VM that carries the tag with no live lease is detached, a failed
//!   detach is retried, and a live lease whose VM lacks the tag ends: otnsx never reopens what
//!   is closed (the close's record may have been lost, here or on another node).
//!
//! Each change is journaled; tickets whose access ended by expiry are told so in a note.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::domain::cause::{Cause, EntryResult};
use crate::error::{Exit, exit_code};
use crate::plan;
use crate::state::journal::Action;
use crate::state::recorder::Subject;
use crate::state::store::{Holder, Lease, LeaseState};

use super::change::{Decision, Outcome, describe_as};
use super::resolve::vms_of;
use super::revoke;
use super::run::Run;
use super::strays;
use crate::domain::vm::VmRef;

pub fn run(run: &Run, json: bool) -> anyhow::Result<Exit> {
    let exit = repair_and_release(run, json);
    // Last, with what time is left: the journal files otnsx rotated are compressed.
    if run.store.database().is_none() && !run.dry_run {
        let path = run.store.journal_path();
        let time_left = || run.deadline.remaining() > std::time::Duration::from_secs(1);
        if let (_, Some(why)) = crate::state::rotation::compress(&path, &time_left) {
            errln!("otnsx: warning: {}", crate::output::printable(&why));
        }
    }
    exit
}

fn repair_and_release(run: &Run, json: bool) -> anyhow::Result<Exit> {
    let subject = Subject::new(Cause::Reconcile);
    run.journaled(&subject, || {
        run.with_backend(|backend| {
            let begun = run.begin(crate::state::store::Scope::All)?;
            if let Some(busy) = begun.busy {
                // Another run holds the state: the next reconcile comes soon enough.
                return Err(busy);
            }
            let Some(before) = begun.leases else {
                // The leases are unknown: nothing that carries the tag can be vouched for.
                let tagged_vms = backend.all_tagged()?;
                let tagged = tagged_vms.iter().map(VmRef::key).collect();
                let heading = "reconcile".to_string();
                let exit = run.close_unknown(backend, &subject, heading, tagged_vms, Some(tagged), Vec::new())?;
                let (_, failed) = strays::remove(run, backend, &Subject::new(Cause::Drift));
                return Ok(if failed { Exit::Partial } else { exit });
            };
            let lock = begun.lock;
            std::thread::scope(|scope| {
                // The help desk is asked beside the NSX work, and only for what needs it.
                let asking = scope.spawn(|| unlocked_tickets(run, &before));
                let (decision, mut outcomes, expired_tickets) =
                    repair(run, backend, &subject, lock.as_ref(), &before)?;
                let unlocked = asking
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("asking the help desk panicked")));
                let (Asked { unlocked, unapproved }, helpdesk_failed) = match unlocked {
                    Ok(asked) => (asked, None),
                    Err(e) => {
                        let text = format!(
                            "the help desk could not be asked which tickets are still locked ({e:#}); expired leases and drift were handled without it, tickets unlocked behind otnsx's back wait for the next reconcile"
                        );
                        let mut entry = run.recorder.entry(&subject, Action::Warning, None, &text);
                        entry.result = EntryResult::Failed;
                        run.recorder.record(&entry);
                        errln!("otnsx: {text}");
                        (Asked::default(), Some(exit_code(&e)))
                    }
                };
                // Each lease whose ticket no longer meets its conditions, journaled with why.
                for (id, unmet) in unapproved.iter().filter(|(id, _)| !unlocked.contains(id)) {
                    for (vm, words) in unmet {
                        let text = format!("ticket ID {id} no longer meets the conditions for {vm}: {words}; closing its access");
                        run.recorder.record(&run.recorder.entry(&subject, Action::Warning, None, &text));
                    }
                }
                let gone = |l: &Lease| match l.holder {
                    Holder::Ticket { id, .. } => {
                        unlocked.contains(&id)
                            || unapproved
                                .get(&id)
                                .is_some_and(|unmet| unmet.iter().any(|(key, _)| *key == l.key()))
                    }
                    Holder::User { .. } => false,
                };
                if !unlocked.is_empty() || !unapproved.is_empty() {
                    outcomes.extend(release_unlocked(
                        run,
                        backend,
                        &subject,
                        lock.as_ref(),
                        &decision,
                        &gone,
                    )?);
                }
                let (outcomes, _) = run.settle(lock.as_ref(), backend, &subject, outcomes);
                // Then, recorded: what no lease explains goes (journaled whole first).
                let (strays, strays_failed) = strays::remove(run, backend, &Subject::new(Cause::Drift));
                let changes: Vec<&Outcome> = outcomes.iter().filter(|o| changed(o)).collect();
                let failed = changes.iter().any(|o| o.error.is_some())
                    || !decision.refused.is_empty()
                    || strays_failed;
                if json {
                    let list: Vec<serde_json::Value> = changes
                        .iter()
                        .map(|o| {
                            let (action, detail) = describe_as(o, run.dry_run);
                            json!({"vm": o.plan.vm.name, "vm_id": o.plan.vm.id, "action": action,
                                   "cause": o.cause, "result": if o.error.is_some() { "failed" } else { "ok" },
                                   "detail": detail})
                        })
                        .collect();
                    let ok = !failed && helpdesk_failed.is_none();
                    crate::document::fields(json!({"dry_run": run.dry_run, "ok": ok, "changes": list, "strays": strays}));
                } else if changes.is_empty() && decision.refused.is_empty() && strays.is_empty() {
                    let prefix = if run.dry_run { "dry run: " } else { "" };
                    outln!("{prefix}reconcile: NSX matches the leases; nothing to repair");
                } else {
                    run.report(&decision, &outcomes);
                }
                let why = format!(
                    "The ticket's maintenance access ended: it was locked longer than policy.max_duration ({}). Unlock and lock the ticket again to reopen it.",
                    crate::time::format_duration(run.config.policy.max_duration)
                );
                let closed_outside = "The ticket's maintenance access was closed in NSX outside otnsx (by hand, or by a close whose record was lost); otnsx does not reopen what is closed. Unlock and lock the ticket again to reopen it.";
                let drifted: BTreeSet<Holder> = outcomes
                    .iter()
                    .filter(|o| o.cause == Cause::Drift && o.plan.change == plan::TagChange::Keep)
                    .flat_map(Outcome::lost)
                    .collect();
                // Expiry opens its note with why; a ticket unlocked behind otnsx's back gets the
                // note its unlock event would have posted.
                let unapproved_why = |id: &u64| {
                    let unmet = unapproved.get(id)?;
                    let each: Vec<String> = unmet.iter().map(|(_, words)| words.clone()).collect();
                    Some(format!(
                        "The ticket no longer meets the conditions for its maintenance access: {}. Its access was closed; once the ticket meets them again, unlock and lock it to reopen.",
                        each.join("; ")
                    ))
                };
                let why_for = |holder: &Holder| match holder {
                    _ if expired_tickets.contains(holder) => Some(Some(why.clone())),
                    Holder::Ticket { id, .. } if unlocked.contains(id) => Some(None),
                    Holder::Ticket { id, .. } if unapproved.contains_key(id) => {
                        Some(unapproved_why(id))
                    }
                    _ if drifted.contains(holder) => Some(Some(closed_outside.to_string())),
                    _ => None,
                };
                revoke::tell_tickets(run, &subject, &decision, &outcomes, &why_for);
                Ok(match (failed, helpdesk_failed) {
                    (true, _) => Exit::Partial,
                    (false, Some(code)) => code,
                    (false, None) => Exit::Ok,
                })
            })
        })
    })
}

/// What reconcile does without the help desk: expired leases and manual grants end, policy's
/// refusals end, failed detaches are retried, and NSX is made to match the leases (a tag no
/// live lease explains goes; a lease whose VM is closed ends). Carried out, not yet settled.
/// Returns the decision, its outcomes and the tickets whose leases expired.
fn repair(
    run: &Run,
    backend: &dyn crate::nsx::TagBackend,
    subject: &Subject,
    lock: Option<&crate::state::store::StateLock>,
    before: &[Lease],
) -> anyhow::Result<(Decision, Vec<Outcome>, BTreeSet<Holder>)> {
    let now = run.clock.decides_at;
    let policy = &run.config.policy.vms;
    let plan::Reconciled {
        after,
        mut causes,
        expired_tickets,
    } = plan::reconcile(before, &BTreeSet::new(), now, |name| {
        policy.refusal(name).is_some()
    });
    // A per-agent rule under an id the leases know is theirs, whatever its tags say.
    backend.known(&vms_of(before));
    let tagged_vms = backend.all_tagged()?;
    let tagged: BTreeSet<String> = tagged_vms.iter().map(VmRef::key).collect();
    // Drift: the tag where no live lease is, or a live lease where the tag is not.
    let mut touched = tagged_vms;
    touched.extend(vms_of(before));
    plan::mark_drift(&mut causes, &touched, &after, &tagged, now);
    // A per-agent rule edited by hand is drift too.
    for key in backend.tampered() {
        causes.entry(key).or_insert(Cause::Drift);
    }
    let mut decision = Decision::new("reconcile".into(), before.to_vec(), after, touched);
    decision.causes = causes;
    decision.tagged = Some(tagged);
    let outcomes = run.carry_out_unsettled(lock, backend, subject, &decision)?;
    Ok((decision, outcomes, expired_tickets))
}

/// The leases of tickets the help desk says are no longer locked end, after [`repair`]
/// (`repaired`): carried out, not yet settled.
fn release_unlocked(
    run: &Run,
    backend: &dyn crate::nsx::TagBackend,
    subject: &Subject,
    lock: Option<&crate::state::store::StateLock>,
    repaired: &Decision,
    gone: &dyn Fn(&Lease) -> bool,
) -> anyhow::Result<Vec<Outcome>> {
    // The leases as the repair left them (a dry run saved nothing: as it planned them).
    let current = match run.dry_run {
        true => repaired.after.clone(),
        false => match run.store.load() {
            Ok(leases) => leases,
            Err(e) => {
                run.recorder.state_problem(&e);
                return Ok(Vec::new());
            }
        },
    };
    let touched = vms_of(current.iter().filter(|l| gone(l)));
    let after = plan::release(&current, gone);
    let mut decision = Decision::new("reconcile".into(), current, after, touched);
    for vm in &decision.touched {
        decision.causes.insert(vm.key(), Cause::Reconcile);
    }
    run.carry_out_unsettled(lock, backend, subject, &decision)
}

/// Whether the outcome is a change worth reporting (not a VM that was fine as it was).
fn changed(outcome: &Outcome) -> bool {
    outcome.error.is_some()
        || outcome.plan.change != plan::TagChange::Keep
        || outcome.plan.held_before != outcome.plan.held_after
}

/// What the help desk said of the tickets that hold leases.
#[derive(Default)]
struct Asked {
    /// Those no longer locked.
    unlocked: BTreeSet<u64>,
    /// Of those still locked, the leases (by key) whose conditions the ticket no longer meets,
    /// each with the VM's name and why in the agent's words.
    unapproved: BTreeMap<u64, Vec<(String, String)>>,
}

/// The tickets among the leases' holders that are no longer locked, and (with conditions
/// configured) the leases of locked ones whose conditions they no longer meet.
fn unlocked_tickets(run: &Run, leases: &[Lease]) -> anyhow::Result<Asked> {
    let held: BTreeSet<u64> = leases
        .iter()
        .filter(|l| l.state == LeaseState::Active)
        .filter_map(|l| match l.holder {
            Holder::Ticket { id, .. } => Some(id),
            Holder::User { .. } => None,
        })
        .collect();
    if held.is_empty() {
        return Ok(Asked::default());
    }
    let helpdesk = run.helpdesk("to check the tickets that hold leases")?;
    let unlocked = only_unlocked(helpdesk.as_ref(), &held)?;
    let config = &run.config;
    let conditions =
        !config.policy.require.is_empty() || config.profiles.iter().any(|p| !p.require.is_empty());
    if !conditions {
        return Ok(Asked {
            unlocked,
            unapproved: BTreeMap::new(),
        });
    }
    // The locked tickets that hold access, read again (one TicketGet each).
    let mut held: BTreeMap<u64, Vec<&Lease>> = BTreeMap::new();
    for lease in leases.iter().filter(|l| l.state == LeaseState::Active) {
        if let Holder::Ticket { id, .. } = lease.holder
            && !unlocked.contains(&id)
        {
            held.entry(id).or_default().push(lease);
        }
    }
    let ids: Vec<u64> = held.keys().copied().collect();
    let read = crate::parallel::map(&ids, crate::parallel::PER_SERVICE, |id| {
        helpdesk.ticket(*id)
    });
    let mut asked = Asked {
        unlocked,
        unapproved: BTreeMap::new(),
    };
    for (id, ticket) in ids.iter().zip(read) {
        let ticket = match ticket {
            Ok(ticket) => ticket,
            // Gone, or no longer readable by the API user: as unlocked.
            Err(e) if exit_code(&e) == Exit::DataErr => {
                asked.unlocked.insert(*id);
                continue;
            }
            Err(e) => return Err(e),
        };
        if !ticket.is_locked() {
            asked.unlocked.insert(*id);
            continue;
        }
        let mut unmet = Vec::new();
        for lease in &held[id] {
            if let Some(words) =
                super::ticket::unmet(&run.config, &ticket, lease.profile.as_deref())
            {
                unmet.push((lease.key(), format!("{}: {words}", lease.vm)));
            }
        }
        if !unmet.is_empty() {
            asked.unapproved.insert(*id, unmet);
        }
    }
    Ok(asked)
}

/// The tickets among the leases' holders that are no longer locked.
fn only_unlocked(
    helpdesk: &dyn crate::helpdesk::HelpDesk,
    held: &BTreeSet<u64>,
) -> anyhow::Result<BTreeSet<u64>> {
    let locked = helpdesk.locked_tickets()?;
    let mut unlocked = BTreeSet::new();
    for id in held.difference(&locked) {
        match helpdesk.is_locked(*id) {
            Ok(true) => {}
            Ok(false) => {
                unlocked.insert(*id);
            }
            // No such ticket any more, or the API user may no longer read it: unlocked.
            Err(e) if exit_code(&e) == Exit::DataErr => {
                unlocked.insert(*id);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(unlocked)
}
