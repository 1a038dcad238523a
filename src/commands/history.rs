//! `otnsx history [--since DURATION|DATE] [--vm NAME] [--ticket N] [--json]`: the journal read
//! back as access periods (who had which VM open, from when to when, and how it ended), plus the
//! refusals and failures, for the periodic audit. Reads only the journal: no lock, no service.

use std::collections::HashMap;

use serde::Serialize;

use crate::domain::cause::{Cause, EntryResult};
use crate::error::{Exit, fault};
use crate::state::chain::{Break, Place, Verdict, Verifier};
use crate::state::journal::{Action, Entry};
use crate::state::rotation::{self, Gap};
use crate::state::store::Holder;
use crate::time::{Timestamp, format_duration, parse_duration};

use super::run::Run;
use super::table::aligned;

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
    /// Parts of the journal that could not be read: their entries are missing above.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unreadable: Vec<String>,
    /// With `--verify`: what the check of the hash chain found.
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<Verification>,
}

/// `history --verify`'s findings. The field names are a stable interface (see the man page).
#[derive(Serialize)]
struct Verification {
    /// Nothing changed, removed or inserted, and every part of the journal read.
    intact: bool,
    /// Entries whose place in the chain was checked.
    chained: u64,
    /// Entries written before the chain began: nothing to check them by.
    unhashed: u64,
    /// Lines cut short by a run killed while writing them (the chain goes on past them).
    cut_short: Vec<String>,
    /// The chain's first entry here, when it is not entry 1 (earlier files removed).
    starts_at: Option<u64>,
    /// The chain's last entry: compare with the last otnsx line the log server received.
    head_seq: Option<u64>,
    head_hash: Option<String>,
    /// The first break, in words.
    broken: Option<String>,
}

pub struct Filter<'a> {
    pub since: Option<&'a str>,
    pub vm: Option<&'a str>,
    pub ticket: Option<&'a str>,
    /// Check the hash chain too.
    pub verify: bool,
}

pub fn run(run: &Run, filter: &Filter<'_>, json: bool) -> anyhow::Result<Exit> {
    let now = run.clock.decides_at;
    let since = filter.since.map(|s| since(s, now)).transpose()?;
    let mut book = Book::default();
    let mut unreadable = 0usize;
    // The chain needs every entry: the database is then read whole.
    let only = if filter.verify {
        crate::state::pg::JournalFilter {
            vm: None,
            ticket: None,
        }
    } else {
        crate::state::pg::JournalFilter {
            vm: filter.vm,
            ticket: filter.ticket,
        }
    };
    let mut verifier = filter.verify.then(Verifier::new);
    let mut first_ts = None;
    let (source, gaps) = read_journal(run, &only, &mut |place, line| {
        if let Some(verifier) = &mut verifier {
            verifier.feed(place.clone(), line);
        }
        // from_str over a line checked once is faster than from_slice, which checks each string.
        match std::str::from_utf8(line)
            .ok()
            .and_then(|line| serde_json::from_str::<Entry>(line).ok())
        {
            Some(entry) => {
                first_ts.get_or_insert(entry.ts);
                book.take(entry);
            }
            None if line.is_empty() => {}
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
    let gaps: Vec<String> = gaps.iter().map(ToString::to_string).collect();
    for gap in &gaps {
        errln!("otnsx: history: {}", crate::output::printable(gap));
    }
    let verify = verifier.map(|v| verification(v.finish(), gaps.is_empty(), since, first_ts));
    if json {
        let report = Report {
            periods,
            events,
            unreadable: gaps.clone(),
            verify,
        };
        let exit = exit_of(&report.verify, &gaps);
        crate::document::fields(&report);
        return Ok(exit);
    }
    outln!("{}", render(&periods, &events).trim_end_matches('\n'));
    let exit = exit_of(&verify, &gaps);
    if let Some(v) = &verify {
        outln!("\n{}", crate::output::printable(&said(v)));
    }
    Ok(exit)
}

/// 65 for a broken chain, 74 for a part of the journal that could not be read, else 0.
fn exit_of(verify: &Option<Verification>, gaps: &[String]) -> Exit {
    if verify.as_ref().is_some_and(|v| v.broken.is_some()) {
        Exit::DataErr
    } else if !gaps.is_empty() {
        Exit::IoErr
    } else {
        Exit::Ok
    }
}

/// The verifier's verdict as `history` reports it. A chain whose first entries are not here
/// (their files removed) is broken unless `--since` asks only for what came after them.
fn verification(
    mut verdict: Verdict,
    all_read: bool,
    since: Option<Timestamp>,
    first_ts: Option<Timestamp>,
) -> Verification {
    if let Some((seq, at)) = &verdict.starts_at
        && verdict.broken.is_none()
        && since.is_none_or(|s| first_ts.is_none_or(|first| first > s))
    {
        verdict.broken = Some(Break::Removed {
            at: at.clone(),
            from: 1,
            to: seq - 1,
            id: String::new(),
        });
    }
    Verification {
        intact: verdict.broken.is_none() && all_read,
        chained: verdict.chained,
        unhashed: verdict.unhashed,
        cut_short: verdict.cut_short.iter().map(ToString::to_string).collect(),
        starts_at: verdict.starts_at.as_ref().map(|(seq, _)| *seq),
        head_seq: verdict.head.as_ref().map(|h| h.seq),
        head_hash: verdict.head.as_ref().map(|h| h.hash.clone()),
        broken: verdict.broken.as_ref().map(ToString::to_string),
    }
}

/// The verification in words, for the end of `history`'s table.
fn said(v: &Verification) -> String {
    let mut out = String::new();
    match (&v.broken, v.head_seq, &v.head_hash) {
        (Some(broken), _, _) => {
            out.push_str(&format!("journal check FAILED: {broken}"));
        }
        (None, Some(seq), Some(hash)) => {
            let from = v.starts_at.unwrap_or(1);
            out.push_str(&format!(
                "journal checked: entries {from} to {seq} chained, none changed, removed or inserted; the last is entry {seq}, hash {hash} (the log server's last otnsx entry must show the same)"
            ));
        }
        _ => out.push_str("journal checked: no chained entries yet"),
    }
    if let Some(seq) = v.starts_at {
        out.push_str(&format!(
            "\nthe chain here begins at entry {seq}: the journal files with entries 1 to {} are not here",
            seq - 1
        ));
    }
    if v.unhashed > 0 {
        out.push_str(&format!(
            "\n{} older entries carry no hash (written before the chain began): nothing to check them by",
            v.unhashed
        ));
    }
    for place in &v.cut_short {
        out.push_str(&format!(
            "\n{place}: a line cut short (a run killed while writing it); the chain goes on past it"
        ));
    }
    if !v.intact && v.broken.is_none() {
        out.push_str("\nparts of the journal could not be read (see above): they are not checked");
    }
    out
}

/// Feeds the journal's lines to `each`, oldest first, with where each is; returns where they
/// came from and what could not be read. From the database only those `only` says can matter
/// (by its indexes); from the files every line of the journal file and of the rotated ones.
fn read_journal(
    run: &Run,
    only: &crate::state::pg::JournalFilter<'_>,
    each: &mut dyn FnMut(&Place, &[u8]),
) -> anyhow::Result<(String, Vec<Gap>)> {
    if let Some(db) = run.store.database() {
        let mut place = Place {
            source: crate::state::chain::TABLE.into(),
            line: 0,
        };
        db.journal_lines(only, |line| {
            place.line += 1;
            each(&place, line);
            true
        })?;
        return Ok((db.url().to_string(), Vec::new()));
    }
    let path = run.store.journal_path();
    let gaps = rotation::each_line(&path, each);
    Ok((path.display().to_string(), gaps))
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
