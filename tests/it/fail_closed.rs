//! Closing needs NSX and nothing else: a help desk that refuses otnsx or does not answer
//! leaves no access open that NSX could close.

use std::collections::BTreeSet;

use crate::support::{T2, TAG_ID, World, set};
use crate::{event, lock, otnsx, otnsx_at};

const T0: &str = "2026-11-23T16:00:00Z";

/// The help desk as otnsx's configuration names it, moved to a port where nothing listens.
fn helpdesk_unreachable(world: &World) {
    let text = world
        .config_text()
        .replace(&world.helpdesk.url(), "http://127.0.0.1:9/otrs");
    world.write_config(&text);
}

/// otnsx's help-desk password rotated with a typo (the help desk at its address).
fn helpdesk_refuses(world: &World) {
    world.write_config(&world.config_text());
    world.helpdesk.set_password("otnsx", "rotated");
    world.helpdesk.expire_sessions();
}

fn fail_closed_warnings(world: &World) -> Vec<serde_json::Value> {
    world
        .journal()
        .into_iter()
        .filter(|e| e["cause"] == "fail_closed" && e["action"] == "warning")
        .collect()
}

fn an_unlock_the_help_desk_refuses_to_tell_still_closes(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    helpdesk_refuses(&world);
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = event(&world, T2);
    assert_eq!(
        run.code, 77,
        "the help desk's refusal is the exit status: {run:?}"
    );
    assert_eq!(world.tagged(), set(&[]), "closed all the same: {run:?}");
    assert!(world.leases().is_empty(), "{run:?}");
    assert!(run.stderr.contains("(fail closed)"), "{}", run.stderr);
    let warnings = fail_closed_warnings(&world);
    assert_eq!(warnings.len(), 1, "{:?}", world.journal());
    assert!(
        warnings[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the help desk refused the login"),
        "{}",
        warnings[0]
    );
    let closed: Vec<_> = world
        .journal()
        .into_iter()
        .filter(|e| e["action"] == "revoke" && e["cause"] == "fail_closed")
        .collect();
    assert_eq!(closed.len(), 1, "{:?}", world.journal());
    assert_eq!(closed[0]["vm_id"], "vm-42");
    // A lock event while the help desk refuses opens nothing.
    world.helpdesk.set_lock(T2.0, "lock");
    let run = event(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
}

fn an_unlock_with_the_help_desk_unreachable_still_closes(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    helpdesk_unreachable(&world);
    let started = std::time::Instant::now();
    let run = event(&world, T2);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(11),
        "{run:?}"
    );
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "{run:?}");
    assert!(world.leases().is_empty(), "{run:?}");
    assert_eq!(fail_closed_warnings(&world).len(), 1);
}

fn a_ticket_that_holds_nothing_and_cannot_be_read_changes_nothing(world: World) {
    assert_eq!(otnsx(&world, &["grant", "--vm", "db01"]).code, 0);
    helpdesk_refuses(&world);
    let run = event(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert_eq!(
        world.tagged(),
        set(&["vm-43"]),
        "another holder keeps its access"
    );
    assert!(fail_closed_warnings(&world).is_empty());
}

fn reconcile_closes_expired_access_and_drift_without_the_help_desk(world: World) {
    world.helpdesk.set_lock(T2.0, "lock");
    assert_eq!(otnsx_at(&world, T0, &[T2.1, "2"]).code, 0);
    assert_eq!(
        otnsx_at(&world, T0, &["grant", "--vm", "db01", "--for", "1h"]).code,
        0
    );
    world.nsx.attach_by_hand(TAG_ID, "vm-44"); // app01: no lease explains it
    for broken in [helpdesk_unreachable, helpdesk_refuses] {
        broken(&world);
        // Two hours on: the grant has expired, the ticket's lease (8 h) has not.
        let run = otnsx_at(&world, "2026-11-23T18:00:00Z", &["reconcile"]);
        assert!([69, 77].contains(&run.code), "{run:?}");
        assert!(
            run.stderr
                .contains("the help desk could not be asked which tickets are still locked"),
            "{}",
            run.stderr
        );
        assert_eq!(world.tagged(), set(&["vm-42"]), "{run:?}");
        let left: BTreeSet<String> = world
            .leases()
            .iter()
            .map(|l| l["vm_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(left, set(&["vm-42"]));
    }
    // Past max_duration the ticket's lease expires too, the help desk still down.
    let run = otnsx_at(&world, "2026-11-24T00:00:01Z", &["reconcile"]);
    assert_eq!(run.code, 77, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "{run:?}");
    assert!(world.leases().is_empty());
}


/// An attach that NSX accepts but that reads back unchanged (it may land later, as a Policy
/// tag operation past the deadline does) is the ticket's all the same: its unlock closes it.
fn an_attach_that_lands_late_is_closed_by_the_unlock() {
    let world = World::new();
    world.nsx.lie_on_attach(true);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(run.stdout.contains("NSX may still apply it"), "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    world.nsx.lie_on_attach(false);
    world.nsx.attach_by_hand(TAG_ID, "vm-42"); // the attach lands after otnsx gave up
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = event(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "the unlock closed it: {run:?}");
    assert!(world.leases().is_empty(), "{run:?}");
    // When it never lands, the next run finds nothing to close and forgets it.
    world.nsx.lie_on_attach(true);
    assert_eq!(lock(&world, T2).code, 69);
    assert_eq!(world.leases().len(), 1);
    world.nsx.lie_on_attach(false);
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(world.leases().is_empty(), "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
}

/// The entries of closing runs that could not be recorded: kept on the node, in order.
fn kept(world: &World) -> Vec<serde_json::Value> {
    std::fs::read_to_string(world.state_dir().join("unrecorded.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn unlock_entries(world: &World) -> usize {
    world
        .journal()
        .iter()
        .filter(|e| e["action"] == "revoke" && e["cause"] == "unlock" && e["vm_id"] == "vm-42")
        .count()
}

fn entries_the_journal_cannot_take_are_kept_on_the_node_and_recorded_once_later() {
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    let journal = world.state_dir().join("journal.jsonl");
    let aside = world.state_dir().join("journal.aside");
    std::fs::rename(&journal, &aside).unwrap();
    std::fs::create_dir(&journal).unwrap(); // the journal cannot be written
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = event(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "closed all the same");
    let kept = kept(&world);
    assert!(
        kept.iter()
            .any(|e| e["action"] == "revoke" && e["vm_id"] == "vm-42"),
        "{kept:?}"
    );
    std::fs::remove_dir(&journal).unwrap();
    std::fs::rename(&aside, &journal).unwrap();
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("recording 2 journal entries"),
        "{run:?}"
    );
    assert_eq!(unlock_entries(&world), 1, "{:?}", world.journal());
    assert!(!world.state_dir().join("unrecorded.jsonl").exists());
    // In the order they happened: the lock's entries before the unlock's.
    let actions: Vec<String> = crate::actions(&world);
    let opened = actions.iter().position(|a| a == "grant").unwrap();
    let closed = actions.iter().position(|a| a == "revoke").unwrap();
    assert!(opened < closed, "{actions:?}");
    assert_eq!(otnsx(&world, &["reconcile"]).code, 0);
    assert_eq!(unlock_entries(&world), 1, "recorded once");
    // The audit sees the access period closed by the unlock, and one unbroken chain.
    closed_in_history(&world, "unlock");
}

/// `history --verify` shows ticket 2's access to web01 closed (`how`), chain intact.
fn closed_in_history(world: &World, how: &str) {
    let run = otnsx(world, &["history", "--json", "--verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let periods = report["periods"].as_array().unwrap();
    assert!(
        periods
            .iter()
            .any(|p| p["vm"] == "web01" && p["closed_by"] == how),
        "{report}"
    );
    assert_eq!(report["verify"]["intact"], true, "{report}");
}

fn a_closing_run_the_database_refuses_is_kept_on_the_node_and_recorded_later() {
    let world = crate::pg_world("a_closing_run_the_database_refuses_is_kept_on_the_node_and_recorded_later");
    assert_eq!(lock(&world, T2).code, 0);
    let secret = world.dir.path().join("db.secret");
    let password = std::fs::read_to_string(&secret).unwrap();
    std::fs::write(&secret, "not-the-password\n").unwrap();
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = event(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "closed without the database");
    assert!(!kept(&world).is_empty(), "{run:?}");
    std::fs::write(&secret, password).unwrap();
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        world
            .journal()
            .iter()
            .any(|e| e["action"] == "revoke" && e["vm_id"] == "vm-42"),
        "{:?}",
        world.journal()
    );
    assert!(kept(&world).is_empty());
    assert_eq!(world.tagged(), set(&[]), "never reopened: {run:?}");
    // The unlock closed without the leases (the database refused it), so its entry ends no
    // period; the lease it could not drop ended at the reconcile that found web01 closed.
    closed_in_history(&world, "reconcile");
}

/// A help desk that accepts the connection and never answers: the unlock still closes, within
/// the deadline.
fn an_unlock_with_a_help_desk_that_hangs_still_closes_within_the_deadline() {
    use crate::support::server::{Response, Server};
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    let hung = Server::start(|_| Response::empty(200).delayed(std::time::Duration::from_secs(60)));
    let text = world
        .config_text()
        .replace(&world.helpdesk.url(), &hung.url())
        .replace("deadline = \"10s\"", "deadline = \"3s\"");
    world.write_config(&text);
    let started = std::time::Instant::now();
    let run = event(&world, T2);
    let took = started.elapsed();
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "{run:?}");
    assert!(took < std::time::Duration::from_secs(4), "took {took:?}");
}

/// A run stopped while it holds the journal's lock (inside an append): an unlock still closes,
/// waits for that lock once (2 s) and not once per entry, keeps its entries on the node and
/// exits 74; once the lock is free they are recorded.
fn a_journal_lock_held_by_a_stopped_run_delays_closing_once_at_most() {
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(world.state_dir().join("journal.lock"))
        .unwrap();
    held.lock().unwrap();
    world.helpdesk.set_lock(T2.0, "unlock");
    let started = std::time::Instant::now();
    let run = event(&world, T2);
    let took = started.elapsed();
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "closed all the same: {run:?}");
    assert!(
        took < std::time::Duration::from_millis(3500),
        "waited for the journal's lock more than once: {took:?} {run:?}"
    );
    assert!(!kept(&world).is_empty(), "{run:?}");
    drop(held);
    assert_eq!(otnsx(&world, &["reconcile"]).code, 0);
    assert_eq!(unlock_entries(&world), 1, "{:?}", world.journal());
    assert!(kept(&world).is_empty());
}

crate::tests! {
    a_journal_lock_held_by_a_stopped_run_delays_closing_once_at_most,
    an_attach_that_lands_late_is_closed_by_the_unlock,
    entries_the_journal_cannot_take_are_kept_on_the_node_and_recorded_once_later,
    a_closing_run_the_database_refuses_is_kept_on_the_node_and_recorded_later,
    an_unlock_with_a_help_desk_that_hangs_still_closes_within_the_deadline,
    ; on_both_backends:
    an_unlock_the_help_desk_refuses_to_tell_still_closes,
    an_unlock_with_the_help_desk_unreachable_still_closes,
    a_ticket_that_holds_nothing_and_cannot_be_read_changes_nothing,
    reconcile_closes_expired_access_and_drift_without_the_help_desk,
}
