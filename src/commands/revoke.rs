//! `otnsx revoke --vm NAME... [--force]`: close VMs opened by hand. A VM that a locked ticket
//! still holds stays open unless `--force` is given.
//!
//! `otnsx revoke --all`: the emergency close. Every VM that carries the tag in NSX's view is
//! detached, every lease dropped, and every ticket that held access is told so.

use std::collections::BTreeSet;

use crate::domain::cause::Cause;
use crate::error::Exit;
use crate::plan;
use crate::state::journal::Action;
use crate::state::recorder::Subject;
use crate::state::store::{Holder, Scope, StateLock};

use super::change::Decision;
use super::notes;
use super::resolve::vms_of;
use super::run::Run;
use super::strays;
use crate::domain::vm::VmRef;

pub fn run(run: &Run, names: &[String], force: bool) -> anyhow::Result<Exit> {
    let subject = Subject::new(if force { Cause::Forced } else { Cause::Revoke });
    run.journaled(&subject, || {
        run.with_backend(|backend| {
            let begun = run.begin(Scope::Keys)?;
            let heading = format!("revoke by {}", run.recorder.actor());
            let Some(before) = begun.leases else {
                // The leases are unknown: close every named VM, whoever holds it.
                let (vms, refused) = run.resolve(backend, &run.names_of(names))?;
                let vms = run.every_opening(backend, vms)?;
                let exit = run.close_unknown(backend, &subject, heading, vms, None, refused)?;
                return closed_busy(begun.busy, exit);
            };
            let lock = begun.lock;
            // A VM the leases know needs no vCenter to be closed.
            let mut vms = Vec::new();
            let mut unknown = Vec::new();
            for name in &run.names_of(names) {
                let known = vms_of(before.iter().filter(|l| &l.vm == name));
                if known.is_empty() {
                    unknown.push(name.clone());
                }
                vms.extend(known);
            }
            let (found, refused) = if unknown.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                run.resolve(backend, &unknown)?
            };
            vms.extend(found);
            // Every profile (and agent) of the VM: closing by name closes all its access.
            let vms = run.every_opening(backend, vms)?;
            // Locked before anything is decided about them; their leases as they are then.
            let ids = vms.iter().map(|v| v.id.clone());
            let before = match run.hold_vms(lock.as_ref(), backend, ids, true) {
                Ok(fresh) => fresh.unwrap_or(before),
                Err(e) => {
                    // Busy (or its lock unusable): closed as for unknown leases, fail closed.
                    let busy = match crate::error::exit_code(&e) {
                        Exit::TempFail => Some(e),
                        _ => {
                            run.recorder.state_problem(&e);
                            None
                        }
                    };
                    let exit = run.close_unknown(backend, &subject, heading, vms, None, refused)?;
                    return closed_busy(busy, exit);
                }
            };
            let ids: BTreeSet<&str> = vms.iter().map(|v| v.id.as_str()).collect();
            let after = plan::release(&before, |l| {
                ids.contains(l.vm_id.as_str()) && (force || matches!(l.holder, Holder::User { .. }))
            });
            let mut decision = Decision::new(heading, before, after, vms);
            decision.refused = refused;
            let outcomes = run.carry_out(lock.as_ref(), backend, &subject, &decision)?;
            let exit = run.report(&decision, &outcomes);
            let held = outcomes
                .iter()
                .any(|o| o.error.is_none() && !o.plan.held_after.is_empty());
            if held && !force {
                errln!(
                    "otnsx: a ticket still holds access; `otnsx revoke --force --vm NAME` closes it anyway"
                );
            }
            Ok(exit)
        })
    })
}

pub fn all(run: &Run) -> anyhow::Result<Exit> {
    let subject = Subject::new(Cause::Emergency);
    run.journaled(&subject, || {
        run.with_backend(|backend| {
            let begun = run.begin(Scope::All)?;
            if let Some(leases) = &begun.leases {
                backend.known(&vms_of(leases));
            }
            let tagged_vms = backend.all_tagged()?;
            let tagged: BTreeSet<String> = tagged_vms.iter().map(VmRef::key).collect();
            let heading = format!("emergency revoke by {}", run.recorder.actor());
            let Some(before) = begun.leases else {
                let exit = run.close_unknown(
                    backend,
                    &subject,
                    heading,
                    tagged_vms,
                    Some(tagged),
                    Vec::new(),
                )?;
                start_afresh(run, begun.lock.as_ref());
                let (_, failed) = strays::remove(run, backend, &subject);
                let exit = if failed { Exit::Partial } else { exit };
                return closed_busy(begun.busy, exit);
            };
            let lock = begun.lock;
            let mut touched = tagged_vms;
            touched.extend(vms_of(&before));
            let mut decision = Decision::new(heading, before, Vec::new(), touched);
            decision.tagged = Some(tagged);
            let outcomes = run.carry_out(lock.as_ref(), backend, &subject, &decision)?;
            let exit = run.report(&decision, &outcomes);
            // Then every rule in otnsx's policy that lets anything through goes.
            let (strays, failed) = strays::remove(run, backend, &subject);
            crate::document::field("strays", strays);
            let exit = if failed { Exit::Partial } else { exit };
            let why = format!(
                "An administrator ({}) closed all maintenance access at once (otnsx revoke --all).",
                run.recorder.actor()
            );
            tell_tickets(run, &subject, &decision, &outcomes, &|_| {
                Some(Some(why.clone()))
            });
            Ok(exit)
        })
    })
}

/// A closing run's exit: with a busy state lock, closed without it and exit 75 (the leases
/// still name what was closed; the next run that holds the lock ends them).
fn closed_busy(busy: Option<anyhow::Error>, exit: Exit) -> anyhow::Result<Exit> {
    match busy {
        Some(busy) => Err(busy.context("closed without the state lock (fail closed)")),
        None => Ok(exit),
    }
}

/// After an emergency revoke over an unreadable lease file: the file is kept aside and an
/// empty store started, so that the next runs work again. Says where the old file went.
fn start_afresh(run: &Run, lock: Option<&StateLock>) {
    let Some(lock) = lock else {
        errln!(
            "otnsx: the lease file was left where it is: the state lock could not be taken (see above)"
        );
        return;
    };
    if run.dry_run {
        return;
    }
    match run.store.set_aside(lock, run.clock.now()) {
        Ok(aside) => {
            let text =
                format!("the unreadable leases were moved to {aside}; otnsx starts with no leases");
            run.recorder.record(&run.recorder.entry(
                &Subject::new(Cause::Emergency),
                Action::Warning,
                None,
                &text,
            ));
            errln!("otnsx: {text}");
        }
        Err(e) => run.recorder.state_problem(&e),
    }
}

/// Posts a note to every ticket whose access this decision ended and that `why` names: `why`
/// gives the sentence that opens its note (a change the ticket did not ask for), or `None` for
/// the note an unlock event would post. The help desk is used only if there is such a ticket,
/// and a failure to reach it changes nothing else.
pub fn tell_tickets(
    run: &Run,
    subject: &Subject,
    decision: &Decision,
    outcomes: &[super::change::Outcome],
    why: &dyn Fn(&Holder) -> Option<Option<String>>,
) {
    let mut tickets: Vec<(Holder, Option<String>)> = outcomes
        .iter()
        .flat_map(|o| o.lost())
        .filter(|h| matches!(h, Holder::Ticket { .. }))
        .filter_map(|h| why(&h).map(|w| (h, w)))
        .collect();
    tickets.sort();
    tickets.dedup();
    let notes_on = run.config.otrs.as_ref().is_some_and(|o| o.notes);
    if tickets.is_empty() || !notes_on || run.dry_run {
        return;
    }
    let helpdesk = match run.helpdesk("to note the tickets") {
        Ok(h) => h,
        Err(e) => return errln!("otnsx: warning: {e:#}"),
    };
    for (holder, why) in tickets {
        let Holder::Ticket { id, number } = &holder else {
            continue;
        };
        if let Some(note) = notes::for_ticket(&holder, outcomes, &decision.refused, why.as_deref())
        {
            let about = Subject {
                ticket_number: Some(number.clone()),
                ticket_id: Some(*id),
                cause: subject.cause,
            };
            run.post_note(helpdesk.as_ref(), &about, *id, &note);
        }
    }
}
