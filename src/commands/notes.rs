//! The internal notes otnsx posts to a ticket: the help desk throws otnsx's output away, so the
//! agent learns in the ticket what happened. Short plain text, built from the outcomes alone.

use crate::error::Fault;
use crate::helpdesk::HelpDesk;
use crate::plan::TagChange;
use crate::state::journal::Action;
use crate::state::recorder::Subject;
use crate::state::store::Holder;

use super::change::{Outcome, Refusal};
use super::run::Run;

/// A note's subject and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Note {
    pub subject: String,
    pub body: String,
}

/// With `nsx.verify_group`: a line saying how soon NSX put the VM into (or took it out of) the
/// group, or that it did not in time; whether that is trouble.
fn group_line(lines: &mut Vec<String>, outcome: &Outcome, vm: &str) -> bool {
    let Some(m) = &outcome.membership else {
        return false;
    };
    let opening = outcome.plan.change != TagChange::Detach;
    match &m.result {
        Ok(()) if m.kind == crate::nsx::Confirms::Realized => {
            lines.push(format!(
                "NSX {} its firewall rule {} after {:.1} s.",
                if opening { "realized" } else { "removed" },
                m.group,
                m.waited.as_secs_f64()
            ));
            false
        }
        Ok(()) => {
            lines.push(format!(
                "NSX {} group {} after {:.1} s.",
                if opening {
                    "put it into"
                } else {
                    "took it out of"
                },
                m.group,
                m.waited.as_secs_f64()
            ));
            false
        }
        Err(err) if m.kind == crate::nsx::Confirms::Realized => {
            lines.push(format!(
                "NSX has not confirmed the firewall rule {} for {vm} ({}); tell the administrators.",
                m.group,
                plain(err)
            ));
            true
        }
        Err(err) => {
            lines.push(match opening {
                true => format!(
                    "NSX has not confirmed that {vm} is in group {} ({}); the access may not work yet. Unlock the ticket to close it; tell the administrators.",
                    m.group,
                    plain(err)
                ),
                false => format!(
                    "NSX has not confirmed that {vm} left group {} ({}); tell the administrators.",
                    m.group,
                    plain(err)
                ),
            });
            true
        }
    }
}

/// The note for what one run did to a ticket's access, or none when nothing changed. `why`,
/// when given, opens the note (a change the ticket did not ask for: expiry, emergency).
pub fn for_ticket(
    holder: &Holder,
    outcomes: &[Outcome],
    refused: &[Refusal],
    why: Option<&str>,
) -> Option<Note> {
    let mut lines = Vec::new();
    let (mut opened, mut closed, mut trouble) = (false, false, false);
    for (name, err) in refused {
        trouble = true;
        let name = crate::escape::shorten(name);
        lines.push(format!("{name} was not opened: {}.", plain(err)));
    }
    for outcome in outcomes {
        // A VM under a profile other than [nsx] tag's is named with it.
        let vm = &{
            let target = &outcome.plan.vm;
            let mut how: Vec<String> = Vec::new();
            if let Some(profile) = &target.profile {
                how.push(format!("profile {profile}"));
            }
            if let Some(agent) = &target.agent {
                how.push(format!("from {agent}'s desktop only"));
            }
            match how.is_empty() {
                true => target.name.clone(),
                false => format!("{} ({})", target.name, how.join(", ")),
            }
        };
        let plan = &outcome.plan;
        if !plan.held_before.contains(holder) && !plan.held_after.contains(holder) {
            continue; // another holder's VM, in a run about several
        }
        let others: Vec<String> = outcome
            .plan
            .held_after
            .iter()
            .filter(|h| *h != holder)
            .map(ToString::to_string)
            .collect();
        let mine_gained = outcome.gained().contains(holder);
        let mine_lost = outcome.lost().contains(holder);
        match (&outcome.error, outcome.plan.change) {
            (Some(err), TagChange::Attach) => {
                trouble = true;
                lines.push(format!(
                    "Access to {vm} could not be opened: {}. Unlock and lock the ticket again to retry; if that fails too, tell the administrators.",
                    plain(err)
                ));
            }
            (Some(err), _) => {
                trouble = true;
                lines.push(format!(
                    "Access to {vm} could not be closed yet: {}. otnsx retries on its next run; tell the administrators if it stays open.",
                    plain(err)
                ));
            }
            (None, TagChange::Detach) => {
                closed = true;
                lines.push(format!("Access to {vm} is closed."));
                trouble |= group_line(&mut lines, outcome, vm);
            }
            (None, _) if mine_gained => {
                opened = true;
                let until = outcome
                    .open_until
                    .map(|t| format!(" until {t} (UTC), or until the ticket is unlocked"))
                    .unwrap_or_default();
                lines.push(format!("Access to {vm} is open{until}."));
                trouble |= group_line(&mut lines, outcome, vm);
            }
            (None, _) if mine_lost && !others.is_empty() => {
                closed = true;
                lines.push(format!(
                    "This ticket no longer holds {vm}; it stays open for {}.",
                    others.join(", ")
                ));
            }
            (None, _) if mine_lost => {
                closed = true;
                lines.push(format!("This ticket no longer holds {vm}."));
            }
            (None, _) => {}
        }
    }
    if lines.is_empty() {
        return None;
    }
    if let Some(why) = why {
        lines.insert(0, why.to_string());
    }
    let subject = if trouble {
        "otnsx: maintenance access problem"
    } else if opened && !closed {
        "otnsx: maintenance access opened"
    } else if closed && !opened {
        "otnsx: maintenance access closed"
    } else {
        "otnsx: maintenance access changed"
    };
    Some(Note {
        subject: subject.to_string(),
        body: lines.join("\n"),
    })
}

/// The innermost message that explains an error to an agent, without the call chain.
fn plain(err: &anyhow::Error) -> String {
    err.chain()
        .filter_map(|c| c.downcast_ref::<Fault>())
        .last()
        .map_or_else(|| format!("{err:#}"), |f| f.message.clone())
}

impl Run {
    /// Posts the note (when notes are on and this is no dry run) and journals it. A failed
    /// note changes nothing else: it is journaled and said on stderr.
    pub fn post_note(
        &self,
        helpdesk: &dyn HelpDesk,
        subject: &Subject,
        ticket_id: u64,
        note: &Note,
    ) {
        let notes_on = self.config.otrs.as_ref().is_some_and(|o| o.notes);
        if self.dry_run || !notes_on {
            return;
        }
        // What a customer or a server shaped is shown to the agent escaped, too.
        let body = crate::escape::printable_lines(&crate::secrets::scrub(&note.body));
        let text = format!("{}: {}", note.subject, body.replace('\n', " "));
        let mut entry = self.recorder.entry(subject, Action::Note, None, &text);
        match helpdesk.note(ticket_id, &note.subject, &body) {
            Ok(None) => {}
            Ok(Some(warning)) => {
                errln!("otnsx: warning: {warning}");
                entry.detail = format!("{text} (warning: {warning})");
            }
            Err(err) => {
                errln!("otnsx: warning: {err:#}");
                entry.result = crate::domain::cause::EntryResult::Failed;
                entry.detail = format!("note not posted: {err:#}; it said: {text}");
            }
        }
        self.recorder.record(&entry);
    }
}
