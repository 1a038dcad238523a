//! The PostgreSQL backend when the server misbehaves (issue 20, items 3, 4 and 7): a server
//! that accepts connections and never answers, a `COMMIT` whose answer is lost or that never
//! arrives, a stopped otnsx holding the state lock, a read-only server, a database whose
//! default is to commit asynchronously. Every run ends within its deadline plus a second, and
//! closing still reaches NSX.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::pg::{Cut, CutProxy, SilentServer, TestCluster, TestDb};
use crate::support::{T2, T3, World, set};
use crate::{Run, finish, lock, otnsx, pg_world, spawn, unlock};

/// The deadline of these tests' runs.
const DEADLINE: Duration = Duration::from_secs(3);

/// How long a run may take: its deadline and a second.
const BOUND: Duration = Duration::from_secs(4);

/// The `host:port` of the world's database.
fn db_addr(world: &World) -> String {
    let url = &world.db.as_ref().unwrap().url;
    url.split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// The world's configuration with a deadline of [`DEADLINE`], its database reached at `addr`.
fn point_at(world: &World, addr: &str) {
    let text = world
        .config_text()
        .replacen(
            "deadline = \"10s\"",
            &format!("deadline = \"{}s\"", DEADLINE.as_secs()),
            1,
        )
        .replacen(&db_addr(world), addr, 1);
    assert!(text.contains("deadline = \"3s\"") && text.contains(addr));
    world.write_config(&text);
}

/// Runs otnsx, and kills it if it is still running long past [`BOUND`] (a hang fails the test
/// instead of stopping the suite). Returns what it did and how long it took.
fn bounded(world: &World, args: &[&str]) -> (Run, Duration) {
    let started = Instant::now();
    let mut child = spawn(world, args);
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > BOUND + Duration::from_secs(10) {
            let _ = child.kill();
            let run = finish(child);
            panic!(
                "otnsx {args:?} still ran after {:?}: {run:?}",
                started.elapsed()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    (finish(child), took)
}

/// [`bounded`], asserting the bound.
fn within_bound(world: &World, args: &[&str]) -> Run {
    let (run, took) = bounded(world, args);
    eprintln!("otnsx {args:?}: exit {} after {took:.2?}", run.code);
    assert!(
        took < BOUND,
        "otnsx {args:?} took {took:?}, past its deadline and a second: {run:?}"
    );
    run
}

/// The help desk's event for `ticket`, locked or unlocked first, within the bound.
fn event_within_bound(world: &World, ticket: (u64, &str), state: &str) -> Run {
    world.helpdesk.set_lock(ticket.0, state);
    let id = ticket.0.to_string();
    within_bound(world, &[ticket.1, &id])
}

fn a_database_that_never_answers_bounds_every_command_and_closing_still_reaches_nsx() {
    let world = pg_world("a_database_that_never_answers_bounds_every_command_and_closing_still_reaches_nsx");
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let silent = SilentServer::start();
    point_at(&world, &silent.addr());
    // The unlock closes web01 in NSX, within the bound.
    let run = event_within_bound(&world, T2, "unlock");
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "closed in NSX: {run:?}");
    assert!(
        run.stderr
            .contains(&format!("database postgres://postgres@{}/", silent.addr()))
            && run.stderr.contains("no answer within the deadline while"),
        "{}",
        run.stderr
    );
    // A lock opens nothing.
    let changes = world.nsx.changes().len();
    let run = event_within_bound(&world, T2, "lock");
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "{run:?}");
    assert_eq!(
        world.nsx.changes().len(),
        changes,
        "{:?}",
        world.nsx.changes()
    );
    // Every other command ends within the bound too, and says the state failed; the emergency
    // close and reconcile still close every tagged VM (the leases are unknown).
    for args in [
        &["status"][..],
        &["history"],
        &["history", "--vm", "web01"],
        &["grant", "--vm", "db01"],
        &["revoke", "--vm", "db01"],
        &["revoke", "--all"],
        &["reconcile"],
    ] {
        let closes = matches!(args[0], "revoke" | "reconcile");
        if closes {
            world.nsx.attach_by_hand("securitytag-12", "vm-43");
        }
        let run = within_bound(&world, args);
        assert_eq!(run.code, 74, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("no answer within the deadline while"),
            "{args:?}: {}",
            run.stderr
        );
        if closes {
            assert_eq!(world.tagged(), set(&[]), "{args:?}: {run:?}");
        }
    }
    assert_eq!(world.tagged(), set(&[]));
}

fn a_commit_whose_answer_was_lost_is_asked_about_and_counts_as_committed() {
    let world = pg_world("a_commit_whose_answer_was_lost_is_asked_about_and_counts_as_committed");
    // Open, with its lease and journal entry: nothing was closed again.
    let _proxy = locked_through_a_cut_commit(&world, Cut::AnswerLost);
    let actions = crate::actions(&world);
    assert_eq!(actions, ["grant"], "{actions:?}");
    // The state lock is free: the next run does not wait.
    let run = event_within_bound(&world, T2, "unlock");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
}

fn a_connection_that_ends_after_the_commit_is_asked_about_at_once() {
    let world = pg_world("a_connection_that_ends_after_the_commit_is_asked_about_at_once");
    locked_through_a_cut_commit(&world, Cut::ClosedAfterCommit);
}

/// A lock event whose COMMIT the proxy cuts as `cut` says, after the server committed: the
/// run asks after reconnecting, finds it committed, and keeps web01 open with its lease.
fn locked_through_a_cut_commit(world: &World, cut: Cut) -> CutProxy {
    let proxy = CutProxy::start(&db_addr(world), cut);
    point_at(world, &proxy.addr());
    proxy.arm();
    let run = event_within_bound(world, T2, "lock");
    assert_eq!(proxy.cuts(), 1, "the commit was not cut: {run:?}");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("asked after reconnecting, the database has it: it committed"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert_eq!(world.leases().len(), 1);
    // The commit's rows are in the chain, which verifies.
    let (chained, unhashed) = world.db.as_ref().unwrap().verified_chain();
    assert_eq!((chained.len(), unhashed), (world.journal().len(), 0));
    proxy
}

fn a_commit_that_never_reached_the_server_is_asked_about_and_closed_again() {
    let world = pg_world("a_commit_that_never_reached_the_server_is_asked_about_and_closed_again");
    let proxy = CutProxy::start(&db_addr(&world), Cut::CommitLost);
    point_at(&world, &proxy.addr());
    proxy.arm();
    let run = event_within_bound(&world, T2, "lock");
    assert_eq!(proxy.cuts(), 1, "the commit was not cut: {run:?}");
    assert_eq!(run.code, 74, "{run:?}");
    assert!(
        run.stderr
            .contains("no answer within the deadline while committing")
            && run.stderr.contains(
                "asked after reconnecting, the database does not have it: it did not commit"
            ),
        "{}",
        run.stderr
    );
    // Closed again, no lease; the entries that did not commit are on stderr.
    assert_eq!(world.tagged(), set(&[]), "{run:?}");
    assert!(world.leases().is_empty());
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("{\"id\":") && l.contains("\"action\":\"grant\"")),
        "{}",
        run.stderr
    );
    // ... and kept on the node, to be recorded by the next run.
    let kept = std::fs::read_to_string(world.state_dir().join("unrecorded.jsonl")).unwrap();
    assert!(kept.contains("\"action\":\"grant\""), "{kept}");
    // The session that held the state lock was ended: the next run takes it at once.
    let run = event_within_bound(&world, T2, "lock");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert_eq!(world.leases().len(), 1);
    // The opening that did not commit and its closing again are in the journal now, in order.
    let actions: Vec<String> = crate::actions(&world);
    assert!(
        actions.starts_with(&["grant".to_string(), "revoke".to_string()]),
        "{actions:?}"
    );
    assert!(!world.state_dir().join("unrecorded.jsonl").exists());
    // The commit that did not happen left no place in the chain taken: the kept entries,
    // recorded by the next run, and its own follow without a gap.
    let (chained, unhashed) = world.db.as_ref().unwrap().verified_chain();
    assert_eq!((chained.len(), unhashed), (world.journal().len(), 0));
}

fn a_stopped_run_holding_the_state_lock_is_cut_off_by_the_server() {
    let world = pg_world("a_stopped_run_holding_the_state_lock_is_cut_off_by_the_server");
    let db = world.db.as_ref().unwrap();
    point_at(&world, &db_addr(&world));
    // A lock event, stopped (SIGSTOP) while it holds the state lock and waits for NSX.
    world.helpdesk.set_lock(T2.0, "lock");
    let hold = world.nsx.server.hold_writes();
    let mut child = spawn(&world, &[T2.1, "2"]);
    hold.wait_for_request();
    db.wait_for_vm_lock_holder();
    let pid = child.id().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    let stopped_at = Instant::now();
    drop(hold);
    // Another node's run, with a longer deadline (it waits for the lock at most half of it less
    // the part kept for closing), gets the lock once the server ended the
    // stopped run's session: its deadline and a margin after it began.
    let text = world
        .config_text()
        .replacen("deadline = \"10s\"", "deadline = \"20s\"", 1);
    let node2 = world.dir.path().join("node2.toml");
    std::fs::write(&node2, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&node2, std::fs::Permissions::from_mode(0o640)).unwrap();
    let run = crate::run_binary(
        &["--config", node2.to_str().unwrap(), "grant", "--vm", "db01"],
        &[],
    );
    let waited = stopped_at.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(run.code, 0, "the stopped run kept the state lock: {run:?}");
    assert!(world.tagged().contains("vm-43"), "{run:?}");
    assert!(waited < Duration::from_secs(7), "{waited:?}");
}

fn a_read_only_database_is_named_opens_nothing_and_still_closes() {
    let world = pg_world("a_read_only_database_is_named_opens_nothing_and_still_closes");
    let db = world.db.as_ref().unwrap();
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    // `check` proves the database takes writes, and leaves nothing behind.
    let journal = world.journal().len();
    let run = otnsx(&world, &["check"]);
    assert!(
        run.stdout.contains(&format!(
            "✓ state database {} writes: a journal row written and rolled back",
            db.url
        )),
        "{}",
        run.stdout
    );
    assert_eq!(world.journal().len(), journal);
    // The database turns read-only (as a hot standby's or a demoted primary's sessions are).
    db.execute(&format!(
        "ALTER DATABASE {} SET default_transaction_read_only = on",
        db.name
    ));
    let says = format!(
        "database {} is read-only (a hot standby or a demoted primary?): point state.url at the primary",
        db.url
    );
    // Nothing opens: not even for a moment (no attach reaches NSX).
    let changes = world.nsx.changes().len();
    for args in [&[T3.1, "3"][..], &["grant", "--vm", "db01"]] {
        world.helpdesk.set_lock(T3.0, "lock");
        let run = otnsx(&world, args);
        assert_eq!(run.code, 74, "{args:?}: {run:?}");
        assert!(run.stderr.contains(&says), "{args:?}: {}", run.stderr);
        assert_eq!(
            world.nsx.changes().len(),
            changes,
            "{args:?}: {:?}",
            world.nsx.changes()
        );
    }
    // The unlock still closes in NSX, and says why the state failed.
    let run = unlock(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "{run:?}");
    assert!(run.stderr.contains(&says), "{}", run.stderr);
    // status reads, and warns.
    let run = otnsx(&world, &["status"]);
    assert!(run.stderr.contains(&says), "{run:?}");
    // check names it.
    let run = otnsx(&world, &["check"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stdout
            .contains(&format!("✗ state database {} writes: {says}", db.url)),
        "{}",
        run.stdout
    );
    let mut admin = db.client();
    admin
        .batch_execute("SET default_transaction_read_only = off")
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            db.name
        ))
        .unwrap();
}

/// Sets the cluster's `synchronous_standby_names` (empty: none), as the superuser.
fn synchronous_standby(db: &TestDb, names: &str) {
    db.execute(&format!(
        "ALTER SYSTEM SET synchronous_standby_names = '{names}'"
    ));
    db.execute("SELECT pg_reload_conf()");
}

/// Ends the test's synchronous replication when it ends, passed or failed (the database's
/// drop commits, and would wait for ever).
struct NoStandby<'a>(&'a TestDb);

impl Drop for NoStandby<'_> {
    fn drop(&mut self) {
        synchronous_standby(self.0, "");
    }
}

fn the_run_commits_synchronously_whatever_the_database_default() {
    let test = "the_run_commits_synchronously_whatever_the_database_default";
    let cluster = TestCluster::start(test).unwrap_or_else(|why| crate::skip(why));
    let world = World::on_database(cluster.database(), Path::new(env!("CARGO_BIN_EXE_otnsx")));
    let db = world.db.as_ref().unwrap();
    point_at(&world, &db_addr(&world));
    // Twice the others' deadline: the commit waits out its share, and asking afterwards whether
    // it committed (a new connection and login, the old session ended, the state lock) gets half
    // of what is left, which at 3 s is some 0.4 s: too little on a machine busy with the rest
    // of the suite, where the run then closes again, as it must when it cannot know.
    let text = std::fs::read_to_string(world.config_path()).unwrap();
    world.write_config(&text.replacen("deadline = \"3s\"", "deadline = \"6s\"", 1));
    let bound = BOUND + Duration::from_secs(3);
    // The database commits asynchronously by default; the cluster names a synchronous
    // standby that never comes: a commit that is synchronous waits for it (SyncRep), one that
    // is not returns at once.
    db.execute(&format!(
        "ALTER DATABASE {} SET synchronous_commit = off",
        db.name
    ));
    synchronous_standby(db, "otnsx_test_standby");
    let _reset = NoStandby(db);
    world.helpdesk.set_lock(T2.0, "lock");
    let started = Instant::now();
    let child = spawn(&world, &[T2.1, "2"]);
    let mut waited_for_standby = false;
    while started.elapsed() < bound && !waited_for_standby {
        let waiting: i64 = db
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'otnsx' AND wait_event = 'SyncRep'",
                &[],
            )
            .unwrap()
            .get(0);
        waited_for_standby = waiting > 0;
        thread::sleep(Duration::from_millis(20));
    }
    let run = finish(child);
    assert!(
        waited_for_standby,
        "otnsx's commit did not wait for the synchronous standby: it committed asynchronously: {run:?}"
    );
    // The commit that never got its answer is asked about: it committed (locally), and what
    // it opened stays open. Within the whole suite the question itself sometimes gets no
    // answer in time either (not reproduced alone, also not under CPU load; open in the
    // closing note of issue 22): then the run cannot know, and closes again what it opened,
    // as it must. Either way it ends in time, and nothing stays open without its record.
    assert!(started.elapsed() < bound, "{run:?}");
    if run.code == 0 {
        assert!(run.stderr.contains("it committed"), "{}", run.stderr);
        assert_eq!(world.tagged(), set(&["vm-42"]));
        assert_eq!(world.leases().len(), 1);
    } else {
        assert_eq!(run.code, 74, "{run:?}");
        assert!(
            run.stderr.contains("whether it committed is unknown"),
            "{}",
            run.stderr
        );
        assert_eq!(world.tagged(), set(&[]), "closed again: {run:?}");
    }
}

crate::tests! {
    a_database_that_never_answers_bounds_every_command_and_closing_still_reaches_nsx,
    a_commit_whose_answer_was_lost_is_asked_about_and_counts_as_committed,
    a_connection_that_ends_after_the_commit_is_asked_about_at_once,
    a_commit_that_never_reached_the_server_is_asked_about_and_closed_again,
    a_stopped_run_holding_the_state_lock_is_cut_off_by_the_server,
    a_read_only_database_is_named_opens_nothing_and_still_closes,
    the_run_commits_synchronously_whatever_the_database_default,
}
