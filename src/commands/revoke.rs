//! `otnsx revoke --vm NAME... [--force]`: close VMs opened by hand. A VM that a locked ticket
//! still holds stays open unless `--force` is given.
//!
//! `otnsx revoke --all`: the emergency close. Every VM that carries the tag in NSX's view is
//! detached, every lease dropped, and every ticket that held access is told so.

use std::collections::BTreeSet;

use crate::error::Exit;
use crate::plan;
use crate::store::Holder;

use super::{Decision, Run, Subject, notes, vms_of};

pub fn run(run: &Run, names: &[String], force: bool) -> anyhow::Result<Exit> {
    let subject = Subject::new(if force { "forced" } else { "revoke" });
    run.journaled(&subject, || {
        run.with_backend(|backend| {
            let (lock, before) = run.begin()?;
            // A VM the leases know needs no vCenter to be closed.
            let mut vms = Vec::new();
            let mut unknown = Vec::new();
            for name in names {
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
            let ids: BTreeSet<&str> = vms.iter().map(|v| v.id.as_str()).collect();
            let after = plan::release(&before, |l| {
                ids.contains(l.vm_id.as_str()) && (force || matches!(l.holder, Holder::User { .. }))
            });
            let mut decision = Decision::new(format!("revoke by {}", run.actor), before, after, vms);
            decision.refused = refused;
            let outcomes = run.carry_out(lock.as_ref(), backend, &subject, &decision)?;
            let exit = run.report(&decision, &outcomes);
            let held = outcomes
                .iter()
                .any(|o| o.error.is_none() && !o.plan.held_after.is_empty());
            if held && !force {
                eprintln!(
                    "otnsx: a ticket still holds access; `otnsx revoke --force --vm NAME` closes it anyway"
                );
            }
            Ok(exit)
        })
    })
}

pub fn all(run: &Run) -> anyhow::Result<Exit> {
    let subject = Subject::new("emergency");
    run.journaled(&subject, || {
        run.with_backend(|backend| {
            let (lock, before) = run.begin()?;
            let tagged_vms = backend.all_tagged()?;
            let tagged: BTreeSet<String> = tagged_vms.iter().map(|v| v.id.clone()).collect();
            let mut touched = tagged_vms;
            touched.extend(vms_of(&before));
            let heading = format!("emergency revoke by {}", run.actor);
            let mut decision = Decision::new(heading, before, Vec::new(), touched);
            decision.tagged = Some(tagged);
            let outcomes = run.carry_out(lock.as_ref(), backend, &subject, &decision)?;
            let exit = run.report(&decision, &outcomes);
            let why = format!(
                "An administrator ({}) closed all maintenance access at once (otnsx revoke --all).",
                run.actor
            );
            tell_tickets(run, &subject, &decision, &outcomes, &why, None);
            Ok(exit)
        })
    })
}

/// Posts a note to every ticket whose access this decision ended (of those in `only`, if
/// given). The help desk is used only if there is such a ticket, and a failure to reach it
/// changes nothing else.
pub fn tell_tickets(
    run: &Run,
    subject: &Subject,
    decision: &Decision,
    outcomes: &[super::Outcome],
    why: &str,
    only: Option<&BTreeSet<Holder>>,
) {
    let mut tickets: Vec<Holder> = outcomes
        .iter()
        .flat_map(|o| o.lost())
        .filter(|h| matches!(h, Holder::Ticket { .. }))
        .filter(|h| only.is_none_or(|set| set.contains(h)))
        .collect();
    tickets.sort();
    tickets.dedup();
    let notes_on = run.config.otrs.as_ref().is_some_and(|o| o.notes);
    if tickets.is_empty() || !notes_on || run.dry_run {
        return;
    }
    let mut helpdesk = match run.helpdesk("to note the tickets") {
        Ok(h) => h,
        Err(e) => return eprintln!("otnsx: warning: {e:#}"),
    };
    for holder in tickets {
        let Holder::Ticket { id, number } = &holder else {
            continue;
        };
        if let Some(note) = notes::for_ticket(&holder, outcomes, &decision.refused, Some(why)) {
            let about = Subject {
                ticket_number: Some(number.clone()),
                ticket_id: Some(*id),
                cause: subject.cause,
            };
            run.post_note(&mut helpdesk, &about, *id, &note);
        }
    }
}
