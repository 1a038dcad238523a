//! PgBouncer in transaction mode in front of the PostgreSQL backend (issue 25, item 3), as
//! Debian's package runs it with its defaults (1.18 on Debian 12: it refuses startup options,
//! and a statement prepared by name on one server connection may be run on another): a lock
//! and an unlock, thirty `history` runs at once, a database whose `standard_conforming_strings`
//! is off (also without PgBouncer), and PgBouncer restarted between runs and mid-run. Each test starts a
//! PgBouncer of its own (`support::pg::Bouncer`); without `pgbouncer` they are skipped (CI
//! installs it).

use std::path::Path;

use serde_json::json;

use crate::support::pg::{Bouncer, TestDb};
use crate::support::{T2, T3, World, set};
use crate::{finish, lock, otnsx, spawn, unlock};

/// A PgBouncer of the test's own, or the test is skipped (and fails under CI).
fn bouncer(test: &str) -> Bouncer {
    Bouncer::start(test).unwrap_or_else(|why| crate::skip(why))
}

/// A world whose state is a database reached through `bouncer`.
fn world_through(bouncer: &Bouncer, test: &str) -> World {
    let db = bouncer
        .database(test)
        .unwrap_or_else(|why| crate::skip(why));
    World::on_database(db, Path::new(env!("CARGO_BIN_EXE_otnsx")))
}

fn a_lock_and_an_unlock_through_pgbouncer() {
    let test = "a_lock_and_an_unlock_through_pgbouncer";
    let bouncer = bouncer(test);
    let world = world_through(&bouncer, test);
    let db = world.db.as_ref().unwrap();
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}\n{}", bouncer.log());
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert_eq!(db.leases().len(), 1);
    let run = otnsx(&world, &["check"]);
    assert!(
        run.stdout
            .contains(&format!("✓ state database {}: logged in as postgres", db.url)),
        "{}",
        run.stdout
    );
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(db.leases().is_empty());
    let (lines, unhashed) = db.verified_chain();
    assert_eq!(unhashed, 0);
    let run = otnsx(&world, &["history", "--verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = otnsx(&world, &["history", "--ticket", T2.1]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("web01"), "{}", run.stdout);
    assert!(lines.len() >= 2, "{lines:?}");
    // It went through PgBouncer: otnsx's logins are in its log, as the database's.
    assert!(
        bouncer
            .log()
            .contains(&format!("login attempt: db={} user=postgres", db.name)),
        "{}",
        bouncer.log()
    );
}

/// Thirty `history` runs at once through PgBouncer in transaction mode all read the journal
/// (named prepared statements failed 19 of 30 such runs).
fn thirty_concurrent_history_runs_all_exit_0() {
    let test = "thirty_concurrent_history_runs_all_exit_0";
    let bouncer = bouncer(test);
    let world = world_through(&bouncer, test);
    for ticket in [T2, T3] {
        assert_eq!(lock(&world, ticket).code, 0);
        assert_eq!(unlock(&world, ticket).code, 0);
    }
    let alone = otnsx(&world, &["history"]);
    assert_eq!(alone.code, 0, "{alone:?}");
    let children: Vec<_> = (0..30)
        .map(|i| match i % 3 {
            0 => spawn(&world, &["history"]),
            1 => spawn(&world, &["history", "--ticket", T2.1]),
            _ => spawn(&world, &["history", "--vm", "web01"]),
        })
        .collect();
    let mut failed = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || (i % 3 == 0 && stdout != alone.stdout) {
            failed.push(format!(
                "run {i}: {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 30 failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// What a customer, an agent's login and a grant's reason may hold: backslashes and quotes.
const VM_FIELD: &str = r"x\";
const AGENT: &str = r"CORP\jdoe";
const REASON: &str = r#"change 'CHG-7' \' for "ops" \\ C:\temp\"#;

/// A database whose default is `standard_conforming_strings = off` (`ALTER DATABASE ... SET`,
/// as a site's role or database may have it), reached through `bouncer` or directly: a lock by
/// `CORP\jdoe` in per-agent mode, a customer's `x\` in the VM field, and a grant with a reason
/// of quotes and backslashes all read back exactly, from the leases and the journal.
fn with_standard_strings_off(test: &str, bouncer: Option<&Bouncer>) {
    let db = match bouncer {
        Some(bouncer) => bouncer.database(test),
        None => TestDb::create(test),
    }
    .unwrap_or_else(|why| crate::skip(why));
    db.execute(&format!(
        "ALTER DATABASE {} SET standard_conforming_strings = off",
        db.name
    ));
    if let Some(bouncer) = bouncer {
        // As otnsx's sessions see it through PgBouncer.
        let rows = bouncer
            .client(&db)
            .simple_query("SHOW standard_conforming_strings")
            .unwrap();
        let Some(postgres::SimpleQueryMessage::Row(row)) = rows
            .iter()
            .find(|m| matches!(m, postgres::SimpleQueryMessage::Row(_)))
        else {
            panic!("no row: {rows:?}");
        };
        assert_eq!(row.get(0), Some("off"));
    }
    let world = World::on_database(db, Path::new(env!("CARGO_BIN_EXE_otnsx")));
    // Per-agent rules, CORP\jdoe's desktop listed (a TOML literal key holds the backslash).
    let world = crate::it::agent_rules::for_agents(
        world,
        "",
        &format!(
            "'{AGENT}' = [\"10.1.2.5/32\"]\n'{}' = [\"10.1.2.6/32\"]",
            crate::real_user()
        ),
    );
    let db = world.db.as_ref().unwrap();
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01:ssh");
        t.owner = AGENT.into();
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let rules = world.nsxt.rules("default", crate::it::agent_rules::POLICY);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["source_groups"], json!(["10.1.2.5/32"]));
    let leases = db.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0]["agent"], AGENT, "{leases:?}");
    // The customer's VM field: refused (no such VM), and journaled as typed.
    world
        .helpdesk
        .update(T3.0, |t| t.vm_field = json!(VM_FIELD));
    let run = lock(&world, T3);
    assert_ne!(run.code, 74, "{run:?}");
    let journal = db.journal();
    let refused = journal
        .iter()
        .find(|e| e["ticket_number"] == T3.1)
        .unwrap_or_else(|| panic!("T3 journaled: {journal:?}"));
    assert_eq!(
        (&refused["action"], &refused["vm"]),
        (&json!("refused"), &json!(VM_FIELD)),
        "{refused}"
    );
    // A grant with a reason of quotes and backslashes.
    let run = otnsx(&world, &["grant", "--vm", "db01", "--for", "30m", "--reason", REASON]);
    assert_eq!(run.code, 0, "{run:?}");
    let leases = db.leases();
    let granted = leases
        .iter()
        .find(|l| l["reason"].is_string())
        .unwrap_or_else(|| panic!("the grant's lease: {leases:?}"));
    assert_eq!(granted["reason"], REASON);
    let journal = db.journal();
    assert!(journal.iter().any(|e| e["reason"] == REASON), "{journal:?}");
    let opened = journal
        .iter()
        .find(|e| e["agent"] == AGENT)
        .expect("the lock's entry names the agent");
    assert!(
        opened["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("from {AGENT}'s desktop")),
        "{opened}"
    );
    // The table is one chain, each row's hash over the line as otnsx wrote it.
    db.verified_chain();
    let run = otnsx(&world, &["history", "--verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    // otnsx reads back what it wrote: status shows both, unlock and revoke close them.
    let run = otnsx(&world, &["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("db01"), "{}", run.stdout);
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let rules = world.nsxt.rules("default", crate::it::agent_rules::POLICY);
    assert_eq!(rules.len(), 1, "only the grant's is left: {rules:?}");
    let run = otnsx(&world, &["revoke", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(db.leases().is_empty(), "{:?}", db.leases());
    let rules = world.nsxt.rules("default", crate::it::agent_rules::POLICY);
    assert!(rules.is_empty(), "{rules:?}");
}

fn standard_conforming_strings_off_through_pgbouncer() {
    let test = "standard_conforming_strings_off_through_pgbouncer";
    let bouncer = bouncer(test);
    with_standard_strings_off(test, Some(&bouncer));
}

fn standard_conforming_strings_off_without_pgbouncer() {
    with_standard_strings_off("standard_conforming_strings_off_without_pgbouncer", None);
}

/// What NSX is tagged with equals what the world's leases say is open.
fn nsx_matches_the_leases(world: &World) {
    let leased: std::collections::BTreeSet<String> = world
        .db
        .as_ref()
        .unwrap()
        .leases()
        .iter()
        .map(|l| l["vm_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(world.tagged(), leased);
}

/// PgBouncer restarted (its connections to otnsx and to the server all end) between runs, while
/// a run holds its transaction, and down while a run connects: each costs at most the run that
/// meets it (74, nothing open without its committed row), never the next, and NSX is tagged
/// exactly where the leases are.
fn pgbouncer_restarted_costs_at_most_the_run_that_meets_it() {
    let test = "pgbouncer_restarted_costs_at_most_the_run_that_meets_it";
    let bouncer = bouncer(test);
    let world = world_through(&bouncer, test);
    let db = world.db.as_ref().unwrap();
    // Between runs: the next one does not notice.
    assert_eq!(lock(&world, T2).code, 0);
    bouncer.restart();
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "the next run after the restart: {run:?}");
    assert_eq!(world.tagged(), set(&[]));
    // While a run holds its transaction (it waits in NSX's attach): that run fails closed.
    world.helpdesk.set_lock(T2.0, "lock");
    let hold = world.nsx.server.hold_writes();
    let child = spawn(&world, &[T2.1, "2"]);
    hold.wait_for_request();
    db.wait_for_vm_lock_holder();
    bouncer.restart();
    drop(hold);
    let run = finish(child);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "open without its row: {run:?}");
    nsx_matches_the_leases(&world);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "the next run: {run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    // Down while a run connects: that run opens nothing; back, the next one works.
    bouncer.stop();
    let down = lock(&world, T3);
    assert_eq!(down.code, 74, "{down:?}");
    bouncer.restart();
    let after = otnsx(&world, &["grant", "--vm", "db01", "--for", "30m"]);
    assert_eq!(after.code, 0, "{after:?}");
    nsx_matches_the_leases(&world);
    assert_eq!(world.tagged(), set(&["vm-42", "vm-43"]));
}

crate::tests! {
    a_lock_and_an_unlock_through_pgbouncer,
    thirty_concurrent_history_runs_all_exit_0,
    standard_conforming_strings_off_through_pgbouncer,
    standard_conforming_strings_off_without_pgbouncer,
    pgbouncer_restarted_costs_at_most_the_run_that_meets_it,
}
