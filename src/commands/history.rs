//! `otnsx history [--since DURATION|DATE] [--vm NAME] [--ticket N] [--json]`: the journal read
//! back as access periods (who had which VM open, from when to when, and how it ended), plus the
//! refusals and failures, for the periodic audit. Reads only the journal: no lock, no service.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};

use serde::Serialize;

use crate::domain::cause::{Cause, EntryResult};
use crate::error::{Exit, fault};
use crate::state::journal::{Action, Entry};
use crate::state::store::Holder;
use crate::time::{Timestamp, format_duration, parse_duration};

use super::{Run, aligned};

/// One holder's access to one VM. The field names are a stable interface (see the man page).
#[derive(Debug, Serialize)]
struct Period {
    vm: String,
    vm_id: String,
    /// The access profile, when it is not that of `[nsx] tag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    holder: Holder,
    /// Who opened it: `helpdesk:<login> (user-id N)` or the OS user.
    actor: String,
    reason: Option<String>,
    opened_at: Timestamp,
    /// `null` while still open.
    closed_at: Option<Timestamp>,
    /// `unlock`, `expiry`, `revoke`, `revoke --force`, `emergency`, `reconcile`, `relock`.
    closed_by: Option<String>,
    /// Who closed it, named as `actor` is (the journal entry's actor: the agent who unlocked,
    /// `helpdesk:system (user-id 1)` for the unlock timeout, the OS user of a `revoke` or of
    /// the run that found it expired); `null` while still open.
    closer: Option<String>,
    duration_seconds: i64,
}

/// A refusal or failure.
#[derive(Debug, Serialize)]
struct Event {
    ts: Timestamp,
    action: Action,
    ticket_number: Option<String>,
    vm: Option<String>,
    actor: String,
    detail: String,
}

#[derive(Serialize)]
struct Report {
    periods: Vec<Period>,
    events: Vec<Event>,
}

pub struct Filter<'a> {
    pub since: Option<&'a str>,
    pub vm: Option<&'a str>,
    pub ticket: Option<&'a str>,
}

pub fn run(run: &Run, filter: &Filter<'_>, json: bool) -> anyhow::Result<Exit> {
    let now = run.clock.decides_at;
    let since = filter.since.map(|s| since(s, now)).transpose()?;
    let mut book = Book::default();
    let mut unreadable = 0usize;
    let only = crate::state::pg::JournalFilter {
        vm: filter.vm,
        ticket: filter.ticket,
    };
    let source = read_journal(run, &only, &mut |line| {
        // from_str over a line checked once is faster than from_slice, which checks each string.
        match std::str::from_utf8(line)
            .ok()
            .and_then(|line| serde_json::from_str::<Entry>(line).ok())
        {
            Some(entry) => book.take(entry),
            None => unreadable += 1, // a line cut short by a crash, or not ours
        }
    })?;
    let Book {
        mut periods,
        mut events,
        ..
    } = book;
    for period in periods.iter_mut().filter(|p| p.closed_at.is_none()) {
        period.duration_seconds = now.0 - period.opened_at.0;
    }
    periods.retain(|p| {
        since.is_none_or(|s| p.closed_at.unwrap_or(now) >= s)
            && filter.vm.is_none_or(|vm| p.vm == vm)
            && filter.ticket.is_none_or(|t| holds_ticket(&p.holder, t))
    });
    events.retain(|e| {
        since.is_none_or(|s| e.ts >= s)
            && filter.vm.is_none_or(|vm| e.vm.as_deref() == Some(vm))
            && filter
                .ticket
                .is_none_or(|t| e.ticket_number.as_deref() == Some(t))
    });
    if unreadable > 0 {
        errln!("otnsx: {source}: {unreadable} unreadable lines skipped");
    }
    if json {
        outln!(
            "{}",
            crate::escape::json(serde_json::to_string(&Report { periods, events })?)
        );
    } else {
        outln!("{}", render(&periods, &events).trim_end_matches('\n'));
    }
    Ok(Exit::Ok)
}

/// Feeds the journal's lines to `each`, oldest first; returns where they came from. From the
/// database only those `only` says can matter (by its indexes); from the file every line.
fn read_journal(
    run: &Run,
    only: &crate::state::pg::JournalFilter<'_>,
    each: &mut dyn FnMut(&[u8]),
) -> anyhow::Result<String> {
    if let Some(db) = run.store.database() {
        db.journal_lines(only, |line| {
            each(line);
            true
        })?;
        return Ok(db.url().to_string());
    }
    let path = run.store.journal_path();
    let file = match crate::sys::open_no_follow(std::fs::OpenOptions::new().read(true), &path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(path.display().to_string());
        }
        Err(e) => {
            return Err(fault(
                Exit::IoErr,
                format!("reading {}: {e}", path.display()),
            ));
        }
    };
    for line in BufReader::new(file).split(b'\n') {
        let line =
            line.map_err(|e| fault(Exit::IoErr, format!("reading {}: {e}", path.display())))?;
        each(&line);
    }
    Ok(path.display().to_string())
}

/// The access periods and events of the entries taken so far, in journal order.
#[derive(Default)]
struct Book {
    periods: Vec<Period>,
    /// The periods still open, by target and holder.
    open: HashMap<(String, Holder), usize>,
    events: Vec<Event>,
}

impl Book {
    fn take(&mut self, entry: Entry) {
        let Book {
            periods,
            open,
            events,
        } = self;
        let ts = entry.ts;
        if matches!(entry.action, Action::Refused | Action::Error)
            || entry.result == EntryResult::Failed
        {
            events.push(Event {
                ts,
                action: entry.action,
                ticket_number: entry.ticket_number.clone(),
                vm: entry.vm.clone(),
                actor: entry.actor.clone(),
                detail: entry.detail.clone(),
            });
        }
        let Some(vm_id) = &entry.vm_id else { return };
        let target =
            crate::domain::vm::target_key(vm_id, entry.profile.as_deref(), entry.agent.as_deref());
        for holder in entry.lost {
            if let Some(i) = open.remove(&(target.clone(), holder)) {
                let period = &mut periods[i];
                period.closed_at = Some(ts);
                period.closed_by = Some(closed_by(entry.cause).into());
                period.closer = Some(entry.actor.clone());
                period.duration_seconds = ts.0 - period.opened_at.0;
            }
        }
        for holder in entry.gained {
            let key = (target.clone(), holder.clone());
            if open.contains_key(&key) {
                return;
            }
            open.insert(key, periods.len());
            periods.push(Period {
                vm: entry.vm.clone().unwrap_or_default(),
                vm_id: vm_id.clone(),
                profile: entry.profile.clone(),
                holder,
                actor: entry.actor.clone(),
                reason: entry.reason.clone(),
                opened_at: ts,
                closed_at: None,
                closed_by: None,
                closer: None,
                duration_seconds: 0,
            });
        }
    }
}

fn holds_ticket(holder: &Holder, wanted: &str) -> bool {
    matches!(holder, Holder::Ticket { id, number } if number == wanted || id.to_string() == wanted)
}

fn closed_by(cause: Cause) -> &'static str {
    match cause {
        Cause::Reconcile | Cause::Drift | Cause::Retry => "reconcile",
        Cause::Forced => "revoke --force",
        Cause::Lock => "relock",
        other => other.as_str(),
    }
}

/// `--since`: a duration back from now (`7d`), a day (`2026-11-01`), or a time (RFC 3339).
fn since(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(d) = parse_duration(text) {
        return Ok(Timestamp(
            now.0 - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        ));
    }
    Timestamp::parse(text)
        .or_else(|| Timestamp::parse(&format!("{text}T00:00:00Z")))
        .ok_or_else(|| {
            fault(
                Exit::Usage,
                format!("--since {text:?}: give a duration (7d, 12h) or a date (2026-11-01) or a UTC time (2026-11-01T08:00:00Z)"),
            )
        })
}

fn render(periods: &[Period], events: &[Event]) -> String {
    let mut out = String::new();
    if periods.is_empty() {
        out.push_str("no access periods\n");
    } else {
        let header = [
            "VM",
            "ID",
            "WHO",
            "REASON",
            "OPENED",
            "CLOSED",
            "HOW",
            "CLOSED BY",
            "DURATION",
        ];
        let mut rows = vec![header.map(String::from).to_vec()];
        for p in periods {
            let who = match &p.holder {
                Holder::Ticket { .. } => format!("{} ({})", p.holder, p.actor),
                Holder::User { .. } => p.holder.to_string(),
            };
            let duration = format_duration(std::time::Duration::from_secs(
                p.duration_seconds.max(0).unsigned_abs(),
            ));
            let vm = match &p.profile {
                Some(profile) => format!("{} [{profile}]", p.vm),
                None => p.vm.clone(),
            };
            rows.push(vec![
                vm,
                p.vm_id.clone(),
                who,
                p.reason.clone().unwrap_or_else(|| "-".into()),
                p.opened_at.to_string(),
                p.closed_at
                    .map_or_else(|| "(open)".into(), |t| t.to_string()),
                p.closed_by.clone().unwrap_or_else(|| "-".into()),
                p.closer.clone().unwrap_or_else(|| "-".into()),
                duration,
            ]);
        }
        out.push_str(&aligned(&rows));
    }
    if !events.is_empty() {
        out.push_str("\nrefusals and failures:\n");
        let mut rows = vec![
            ["TIME", "WHAT", "TICKET", "VM", "BY", "DETAIL"]
                .map(String::from)
                .to_vec(),
        ];
        for e in events {
            rows.push(vec![
                e.ts.to_string(),
                e.action.as_str().to_string(),
                e.ticket_number.clone().unwrap_or_else(|| "-".into()),
                e.vm.clone().unwrap_or_else(|| "-".into()),
                e.actor.clone(),
                e.detail.clone(),
            ]);
        }
        out.push_str(&aligned(&rows));
    }
    out
}
