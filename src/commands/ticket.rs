//! `otnsx <TICKET_NUMBER> <TICKET_ID>` and `otnsx ticket <TICKET_ID>`: what the help desk runs
//! when a ticket's lock changes. The ticket is read again (never trust the event) under the
//! state lock, so concurrent events for one ticket apply in order.

use crate::domain::cause::Cause;
use crate::error::{Exit, fault};
use crate::plan;
use crate::state::journal::Action;
use crate::state::recorder::Subject;
use crate::state::store::{Holder, Lease};

use super::change::Decision;
use super::notes;
use super::resolve::{MAX_VMS_PER_TICKET, vms_of};
use super::run::Run;

pub fn run(run: &Run, id: u64, number: Option<String>) -> anyhow::Result<Exit> {
    run.recorder.act_as("helpdesk".into());
    let mut subject = Subject {
        ticket_number: number.clone(),
        ticket_id: Some(id),
        cause: Cause::Event,
    };
    let result = handle(run, &mut subject, id, number.as_deref());
    if let Err(err) = &result {
        run.recorder.failure(&subject, err);
    }
    result
}

/// How the journal names a help-desk user: `helpdesk:LOGIN (user-id N)` when both are known,
/// `helpdesk:LOGIN` or `helpdesk:user-id N` when only one is, `helpdesk:system (user-id 1)` for
/// the help desk itself (its unlock timeout, run by its daemon, acts as user 1).
pub fn helpdesk_actor(login: Option<&str>, user_id: Option<u64>) -> String {
    match (login, user_id) {
        (_, Some(1)) => "helpdesk:system (user-id 1)".into(),
        (Some(login), Some(id)) => format!("helpdesk:{login} (user-id {id})"),
        (Some(login), None) => format!("helpdesk:{login}"),
        (None, Some(id)) => format!("helpdesk:user-id {id}"),
        (None, None) => "helpdesk:unknown".into(),
    }
}

/// Who unlocked, named as the lock named them: the user the ticket's history names (`user`),
/// with the login of the ticket's owner when it is that user (TicketGet gives `Owner` and
/// `OwnerID`), else the login a lease's opener gave that user ID (OTOBO hands an unlocked
/// ticket to root@localhost before the event runs).
pub fn unlocker(user: Option<u64>, owner: Option<(&str, u64)>, openers: &[String]) -> String {
    let Some(user) = user else {
        return helpdesk_actor(None, None);
    };
    if let Some((login, _)) = owner.filter(|(_, id)| *id == user) {
        return helpdesk_actor(Some(login), Some(user));
    }
    let suffix = format!(" (user-id {user})");
    match openers
        .iter()
        .find(|o| o.starts_with("helpdesk:") && o.ends_with(&suffix))
    {
        Some(opener) if user != 1 => opener.clone(),
        _ => helpdesk_actor(None, Some(user)),
    }
}

/// The journal's name for who last unlocked the ticket (see [`unlocker`]), or
/// `helpdesk:unknown` (the history is not readable, or names nobody).
fn unlocked_by(
    helpdesk: &dyn crate::helpdesk::HelpDesk,
    id: u64,
    owner: Option<(&str, u64)>,
    openers: &[String],
) -> String {
    match helpdesk.unlocked_by(id) {
        Ok(user) => unlocker(user, owner, openers),
        Err(e) => {
            errln!("otnsx: warning: who unlocked ticket ID {id} is not known: {e:#}");
            helpdesk_actor(None, None)
        }
    }
}

/// Who locked, as the ticket's history names them (the `CreateBy` of its latest `Lock`
/// entry): with the owner's login when that user is the owner, else `helpdesk:user-id N` (a
/// dispatcher who locked for another agent). The owner when the history names nobody or
/// cannot be read.
fn locked_by(
    helpdesk: &dyn crate::helpdesk::HelpDesk,
    id: u64,
    owner: (&str, Option<u64>),
) -> String {
    let by_owner = || helpdesk_actor(Some(owner.0), owner.1);
    match helpdesk.locked_by(id) {
        Ok(Some(user)) if Some(user) != owner.1 => helpdesk_actor(None, Some(user)),
        Ok(_) => by_owner(),
        Err(e) => {
            errln!(
                "otnsx: warning: who locked ticket ID {id} is not known, the owner is named: {e:#}"
            );
            by_owner()
        }
    }
}

fn handle(run: &Run, subject: &mut Subject, id: u64, number: Option<&str>) -> anyhow::Result<Exit> {
    // A help desk that cannot even be asked (no [otrs] section, a password_command that
    // fails) is a ticket that cannot be read: closing still goes on, below.
    let helpdesk = run.helpdesk("to read tickets");
    let begun = run.begin(crate::state::store::Scope::Ticket(id))?;
    let mine = |l: &Lease| matches!(l.holder, Holder::Ticket { id: t, .. } if t == id);
    // The VMs the ticket holds (unknown: the leases could not be read; with a busy state
    // lock, as read without it).
    let held = begun
        .leases
        .as_ref()
        .or(begun.snapshot.as_ref())
        .map(|leases| vms_of(leases.iter().filter(|l| mine(l))));
    let holds = held.as_ref().is_none_or(|vms| !vms.is_empty());
    // Who opened what the ticket holds, as journaled then: an unlock names them alike.
    let openers: Vec<String> = (begun.leases.as_ref().or(begun.snapshot.as_ref()))
        .map(|leases| {
            let by = leases
                .iter()
                .filter(|l| mine(l))
                .filter_map(|l| l.by.clone());
            by.collect()
        })
        .unwrap_or_default();
    run.with_event_backend(|backend| {
        std::thread::scope(|scope| {
            // Beside the ticket read: NSX's view of the VMs the ticket holds, and the vCenter
            // login when it holds none (a lock then needs look-ups; an unlock does not).
            scope.spawn(|| backend.prepare(held.as_deref().unwrap_or_default(), !holds));
            let read = helpdesk
                .as_ref()
                .map_err(|e| crate::error::Kept::of(e).again())
                .and_then(|helpdesk| helpdesk.ticket(id).map(|t| (helpdesk, t)));
            let (helpdesk, ticket) = match read {
                Ok(read) => read,
                Err(err) => {
                    return close_unread(run, backend, subject, begun, held.as_deref(), id, err);
                }
            };
            if let Some(given) = number
                && given != ticket.number
            {
                let err = fault(
                    Exit::DataErr,
                    format!(
                        "ticket ID {id} has number {}, not {given}; refusing to act on a mismatched ticket",
                        ticket.number
                    ),
                );
                return close_unread(run, backend, subject, begun, held.as_deref(), id, err);
            }
            // Who acts: the agent who locked (the ticket's owner then); for an unlock, who the
            // ticket's history says unlocked it, never the owner: OTOBO hands an unlocked
            // ticket to root@localhost before the event runs. The history is read beside the
            // NSX change; the first journal entry waits for it.
            match &ticket.owner {
                // Who locked, by the history (a dispatcher may lock for another agent, who is
                // then the owner), read beside the NSX change as for an unlock.
                Some(owner) if ticket.is_locked() => {
                    let (tell, told) = std::sync::mpsc::channel();
                    run.recorder.act_as_soon(told);
                    let owner = (owner.clone(), ticket.owner_id);
                    scope.spawn(move || {
                        tell.send(locked_by(helpdesk.as_ref(), id, (&owner.0, owner.1)))
                    });
                }
                _ if ticket.is_locked() => run.recorder.act_as("helpdesk".into()),
                _ if holds => {
                    let (tell, told) = std::sync::mpsc::channel();
                    run.recorder.act_as_soon(told);
                    // The owner's login only where it is one (it is not checked after an unlock).
                    let owner = (ticket.owner.clone())
                        .filter(|o| crate::config::is_login(o))
                        .zip(ticket.owner_id);
                    let openers = &openers;
                    scope.spawn(move || {
                        let owner = owner.as_ref().map(|(login, id)| (login.as_str(), *id));
                        tell.send(unlocked_by(helpdesk.as_ref(), id, owner, openers))
                    });
                }
                _ => run.recorder.act_as("helpdesk:unknown".into()),
            }
            let event = Event {
                helpdesk: helpdesk.as_ref(),
                subject,
                begun,
                ticket: &ticket,
                id,
            };
            decide(run, backend, scope, event)
        })
    })
}

/// The ticket could not be read, or its answer cannot be trusted (`err`): nothing opens, and
/// what the ticket holds is closed (fail closed: closing needs NSX and nothing else). The run
/// still ends with `err`'s exit status, so the help desk's log shows the failure.
fn close_unread(
    run: &Run,
    backend: &dyn crate::nsx::TagBackend,
    subject: &mut Subject,
    begun: super::run::Begun,
    held: Option<&[crate::domain::vm::VmRef]>,
    id: u64,
    err: anyhow::Error,
) -> anyhow::Result<Exit> {
    let code = crate::error::exit_code(&err);
    let held = match held {
        Some(held) if !held.is_empty() => held.to_vec(),
        // Nothing held, or nothing known of it: there is nothing to close. A busy state lock
        // is why the run could not go on, whatever the help desk said in the time left.
        _ => return Err(begun.busy.unwrap_or(err)),
    };
    subject.cause = Cause::FailClosed;
    let mine = |l: &Lease| matches!(l.holder, Holder::Ticket { id: t, .. } if t == id);
    let begun = run.hold_for_closing(backend, begun, held.iter().map(|v| v.id.clone()));
    let heading = format!("ticket ID {id}");
    let exit = match begun.leases {
        Some(before) => {
            let after = plan::release(&before, mine);
            let decision = Decision::new(heading, before, after, held.clone());
            let outcomes = run.carry_out(begun.lock.as_ref(), backend, subject, &decision)?;
            run.report(&decision, &outcomes)
        }
        // The state lock stayed busy: closed as read without it, whoever else holds the VMs.
        None => {
            let vms = run.every_opening(backend, held.clone())?;
            run.close_unknown(backend, subject, heading, vms, None, Vec::new())?
        }
    };
    let names: Vec<String> = held.iter().map(|v| v.name.clone()).collect();
    let text = format!(
        "ticket ID {id} could not be read ({err:#}); what it held was closed (fail closed): {}. Lock the ticket again once the help desk answers otnsx",
        names.join(", ")
    );
    let mut entry = run.recorder.entry(subject, Action::Warning, None, &text);
    entry.result = crate::domain::cause::EntryResult::Failed;
    run.recorder.record(&entry);
    errln!("otnsx: {text}");
    if let Some(busy) = begun.busy {
        return Err(busy);
    }
    Ok(match exit {
        Exit::Ok => code,
        other => other,
    })
}

/// The openings whose conditions the ticket meets (`[policy.require]`, then the profile's
/// `require`), for the agent who holds its lock; the others refused (77) in the agent's
/// words: "ticket type is Incident, db-admin needs Change".
fn approved(
    run: &Run,
    wants: Vec<super::resolve::Want>,
    ticket: &crate::domain::ticket::Ticket,
) -> (Vec<super::resolve::Want>, Vec<super::change::Refusal>) {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for want in wants {
        match unmet(&run.config, ticket, want.1.as_deref()) {
            Some(words) => refused.push((want.0.clone(), fault(Exit::NoPerm, words))),
            None => kept.push(want),
        }
    }
    (kept, refused)
}

/// Why `ticket` may not hold access under the profile of `key`, in the agent's words, if it
/// may not: `[policy.require]` first, then the profile's `require`, for the agent who holds
/// the ticket's lock (its owner).
pub fn unmet(
    config: &crate::config::Config,
    ticket: &crate::domain::ticket::Ticket,
    key: Option<&str>,
) -> Option<String> {
    let holder = ticket.owner.as_deref();
    let every = (config.policy.require)
        .unmet(&ticket.facts, holder)
        .map(|unmet| unmet.words("every ticket"));
    every.or_else(|| {
        let profile = config.profile_by_key(key)?;
        let unmet = profile.require.unmet(&ticket.facts, holder)?;
        Some(unmet.words(&profile.name))
    })
}

/// A help-desk event's inputs to [`decide`]: the ticket as read again, its ID, the state as
/// the run began, the help desk it came from, and the subject the run records it under.
struct Event<'a> {
    helpdesk: &'a dyn crate::helpdesk::HelpDesk,
    subject: &'a mut Subject,
    begun: super::run::Begun,
    ticket: &'a crate::domain::ticket::Ticket,
    id: u64,
}

/// What the ticket's lock state means for its leases, carried out with `backend`.
fn decide<'scope>(
    run: &'scope Run,
    backend: &'scope dyn crate::nsx::TagBackend,
    scope: &'scope std::thread::Scope<'scope, '_>,
    event: Event<'_>,
) -> anyhow::Result<Exit> {
    let Event {
        helpdesk,
        subject,
        begun,
        ticket,
        id,
    } = event;
    subject.ticket_number = Some(ticket.number.clone());
    subject.cause = if ticket.is_locked() {
        Cause::Lock
    } else {
        Cause::Unlock
    };
    let holder = Holder::Ticket {
        id,
        number: ticket.number.clone(),
    };
    let heading = format!("ticket {}", ticket.number);
    let mine = |l: &Lease| matches!(l.holder, Holder::Ticket { id: t, .. } if t == id);
    if ticket.vms.len() > MAX_VMS_PER_TICKET && (ticket.is_locked() || begun.leases.is_none()) {
        return Err(fault(
            Exit::DataErr,
            format!(
                "field {} names {} VMs, more than the {MAX_VMS_PER_TICKET} one ticket may hold; nothing was looked up",
                helpdesk.vm_field(),
                ticket.vms.len()
            ),
        ));
    }
    let begun = match &begun.leases {
        // The VMs it holds, locked before anything is decided about them.
        Some(leases) if !ticket.is_locked() => {
            let ids: Vec<String> = vms_of(leases.iter().filter(|l| mine(l)))
                .into_iter()
                .map(|v| v.id)
                .collect();
            run.hold_for_closing(backend, begun, ids)
        }
        _ => begun,
    };
    let (lock, mut before) = match begun.leases {
        Some(_) if ticket.is_locked() => run.for_opening(begun)?,
        Some(leases) => (begun.lock, leases),
        None if ticket.is_locked() => run.for_opening(begun)?,
        None => {
            // The leases are unknown: close what the ticket's field names now, and with a busy
            // state lock also what the leases read without it say the ticket holds.
            // Closing is not subject to policy; only the names must be valid. Every profile of
            // the VMs is closed, whatever profile the field names.
            let mine = |l: &&Lease| matches!(l.holder, Holder::Ticket { id: t, .. } if t == id);
            let held = vms_of(begun.snapshot.iter().flatten().filter(mine));
            let known: Vec<&str> = held.iter().map(|v| v.name.as_str()).collect();
            let names: Vec<String> = run
                .names_of(&ticket.vms)
                .into_iter()
                .filter(|n| !known.contains(&n.as_str()))
                .collect();
            let (mut vms, refused) = run.resolve(backend, &names)?;
            vms.extend(held);
            let vms = run.every_opening(backend, vms)?;
            scope.spawn(|| backend.done_finding());
            let exit = run.close_unknown(backend, subject, heading.clone(), vms, None, refused)?;
            return match begun.busy {
                Some(busy) => Err(busy.context(format!(
                    "closed what ticket {} held without the state lock (fail closed)",
                    ticket.number
                ))),
                None => Ok(exit),
            };
        }
    };
    {
        let (after, touched, refused) = if ticket.is_locked() {
            // A name policy refuses is not held either, even by a lease from before.
            let (wants, mut refused) = run.wants(&ticket.vms, ticket.profile.as_deref());
            // Only approved work: the ticket's conditions, for each profile.
            let (wants, unmet) = approved(run, wants, ticket);
            refused.extend(unmet);
            let (allowed, vms, not_found) = run.targets(backend, &wants)?;
            // vCenter's logout, off the critical path.
            scope.spawn(|| backend.done_finding());
            refused.extend(not_found);
            // Per-agent rules: from the desktop of the agent who locked it (its owner now).
            let (vms, no_desktop) = run.opened_by_agent(vms, ticket.owner.as_deref());
            // The VMs it names and those it holds, locked before anything is decided about
            // them; their leases as they are then.
            let held = before.iter().filter(|l| mine(l)).map(|l| l.vm_id.clone());
            let ids: Vec<String> = vms.iter().map(|v| v.id.clone()).chain(held).collect();
            if let Some(fresh) = run.hold_vms(lock.as_ref(), backend, ids, false)? {
                before = fresh;
            }
            // An owner without a desktop holds nothing, not even what an earlier owner opened.
            let allowed = match no_desktop.is_empty() {
                true => allowed,
                false => Vec::new(),
            };
            refused.extend(no_desktop);
            let after = plan::lock_ticket(
                &before,
                &holder,
                &allowed,
                &vms,
                run.clock.decides_at,
                run.config.policy.max_duration,
            );
            (after, vms, refused)
        } else {
            let mine = |l: &Lease| matches!(l.holder, Holder::Ticket { id: t, .. } if t == id);
            let touched = vms_of(before.iter().filter(|l| mine(l)));
            (plan::release(&before, mine), touched, Vec::new())
        };
        if touched.is_empty() && refused.is_empty() && after == before {
            let why = if ticket.is_locked() {
                format!("field {} names no VM; nothing to open", helpdesk.vm_field())
            } else {
                format!(
                    "ticket is not locked ({}) and holds no access; nothing to close",
                    ticket.lock
                )
            };
            run.recorder
                .record(&run.recorder.entry(subject, Action::Noop, None, &why));
            outln!("{heading}: {why}");
            crate::document::fields(
                serde_json::json!({"heading": heading, "dry_run": run.dry_run,
                "changes": [], "refused": [], "detail": why}),
            );
            if ticket.is_locked() {
                // The agent locked the ticket to work on a VM: say why nothing opened.
                let note = notes::Note {
                    subject: "otnsx: no maintenance access".into(),
                    body: format!(
                        "This ticket names no VM in its field {}; nothing was opened. Fill in the field, then unlock and lock the ticket again.",
                        helpdesk.vm_field()
                    ),
                };
                run.post_note(helpdesk, subject, id, &note);
            }
            return Ok(Exit::Ok);
        }
        let mut decision = Decision::new(heading, before, after, touched);
        decision.refused = refused;
        let outcomes = run.carry_out_unsettled(lock.as_ref(), backend, subject, &decision)?;
        // The note's journal entry commits with the change (one round trip to a database).
        if let Some(note) = notes::for_ticket(&holder, &outcomes, &decision.refused, None) {
            run.post_note(helpdesk, subject, id, &note);
        }
        let (outcomes, undone) = run.settle(lock.as_ref(), backend, subject, outcomes);
        if undone && let Some(note) = notes::for_ticket(&holder, &outcomes, &decision.refused, None)
        {
            // The note above said it opened; it was closed again for want of a record.
            run.post_note(helpdesk, subject, id, &note);
        }
        Ok(run.report(&decision, &outcomes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_person_is_named_one_way() {
        // A lock by agent1 (TicketGet: Owner agent1, OwnerID 2), and agent1's own unlock.
        assert_eq!(
            helpdesk_actor(Some("agent1"), Some(2)),
            "helpdesk:agent1 (user-id 2)"
        );
        assert_eq!(
            unlocker(Some(2), Some(("agent1", 2)), &[]),
            "helpdesk:agent1 (user-id 2)"
        );
        // The unlock timeout: the history names user 1, the owner stays agent1.
        assert_eq!(
            unlocker(Some(1), Some(("agent1", 2)), &[]),
            "helpdesk:system (user-id 1)"
        );
        // Another agent's unlock: only its ID is known.
        assert_eq!(
            unlocker(Some(3), Some(("agent1", 2)), &[]),
            "helpdesk:user-id 3"
        );
        // OTOBO's owner reset: the opener's name for the same ID.
        let openers = ["helpdesk:agent1 (user-id 2)".to_string()];
        assert_eq!(
            unlocker(Some(2), Some(("root@localhost", 1)), &openers),
            "helpdesk:agent1 (user-id 2)"
        );
        assert_eq!(
            unlocker(None, Some(("agent1", 2)), &openers),
            "helpdesk:unknown"
        );
        assert_eq!(helpdesk_actor(Some("agent1"), None), "helpdesk:agent1");
    }
}
