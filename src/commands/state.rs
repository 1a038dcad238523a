//! `otnsx state migrate` and `otnsx state import --from-file DIR`: the PostgreSQL state
//! backend's schema, and moving a node's state directory into the database.

use std::path::Path;

use crate::error::{Exit, fault};
use crate::state::journal::Entry;
use crate::state::store::Store;

use super::run::Run;

fn database(run: &Run) -> anyhow::Result<&crate::state::pg::Pg> {
    run.store.database().ok_or_else(|| {
        fault(
            Exit::Config,
            "state: this configuration keeps the state in files (no [state] backend = \"postgres\"); nothing to do",
        )
    })
}

pub fn migrate(run: &Run) -> anyhow::Result<Exit> {
    let db = database(run)?;
    let (from, to) = db.migrate()?;
    crate::document::fields(serde_json::json!({"schema_from": from, "schema_to": to}));
    if from == to {
        outln!("database {}: schema version {to}, nothing to do", db.url());
    } else {
        outln!(
            "database {}: schema version {from} brought to {to}",
            db.url()
        );
    }
    Ok(Exit::Ok)
}

pub fn import(run: &Run, dir: &Path) -> anyhow::Result<Exit> {
    let db = database(run)?;
    if !dir.join("leases.json").is_file() && !dir.join("journal.jsonl").is_file() {
        return Err(fault(
            Exit::DataErr,
            format!(
                "{} holds neither leases.json nor journal.jsonl: name the state directory to import",
                dir.display()
            ),
        ));
    }
    // Under the directory's own lock: no otnsx of the file backend writes it meanwhile.
    let files = Store::open(dir);
    let _lock = files.lock(run.deadline, crate::state::store::Scope::All)?;
    let (leases, outbox) = files.load_with_outbox()?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut unreadable = 0usize;
    // Every journal file, the rotated ones too; a part that cannot be read stops the import
    // (it would be missing from the database's journal for good).
    let gaps = crate::state::rotation::each_line(&files.journal_path(), &mut |_, line| {
        match std::str::from_utf8(line)
            .ok()
            .and_then(|l| serde_json::from_str::<Entry>(l).ok())
        {
            Some(entry) => entries.push(entry),
            None if line.is_empty() => {}
            None => unreadable += 1,
        }
    });
    if let Some(gap) = gaps.first() {
        return Err(fault(Exit::IoErr, format!("{gap}; nothing was imported")));
    }
    // Entries saved with the leases that a killed run had no time to append.
    for pending in outbox {
        if let Ok(entry) = serde_json::from_value::<Entry>(pending)
            && !entries.iter().any(|e| !e.id.is_empty() && e.id == entry.id)
        {
            entries.push(entry);
        }
    }
    let (added_leases, added_entries) = db.import(&leases, &mut entries)?;
    crate::document::fields(serde_json::json!({
        "leases": leases.len(), "leases_added": added_leases,
        "entries": entries.len(), "entries_added": added_entries, "unreadable_lines": unreadable,
    }));
    outln!(
        "imported {} into {}: {added_leases} of {} leases and {added_entries} of {} journal entries added (the others were there already)",
        dir.display(),
        db.url(),
        leases.len(),
        entries.len()
    );
    if unreadable > 0 {
        errln!(
            "otnsx: {}: {unreadable} unreadable lines were not imported (they stay in the files)",
            files.journal_path().display()
        );
    }
    outln!(
        "the directory was left as it is; once every node uses [state] backend = \"postgres\", move its leases.json and journal files away"
    );
    Ok(Exit::Ok)
}
