//! A run locks what it touches: its ticket and its VMs. An event waits only for runs on the same
//! ticket or VM; every other event goes on beside them. Each key is held here by the test, as a
//! run that hangs would hold it: in the state directory the bucket file's lock, on PostgreSQL
//! the advisory lock of the same class and key.

use std::fs;

use serde_json::json;

use crate::support::{T2, World, set};
use crate::{event, lock, otnsx};

/// The bucket of a key, as otnsx computes it (FNV-1a over its bytes, 64 buckets): part of the
/// state directory's format, which every otnsx on a node must agree on.
fn bucket(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 64
}

/// Something that holds a key until it is dropped.
enum Held {
    File(#[allow(dead_code)] fs::File),
    Session(#[allow(dead_code)] Box<postgres::Client>),
}

/// Holds the key of `kind` ("ticket" or "vm") `key` as a hung run would.
fn hold(world: &World, kind: &str, key: &str) -> Held {
    if let Some(db) = &world.db {
        // The two-key advisory locks: "otnt" for tickets, "otnv" for VMs.
        let class = match kind {
            "ticket" => 0x6f74_6e74,
            _ => 0x6f74_6e76,
        };
        let mut client = db.client();
        client
            .batch_execute(&format!(
                "SELECT pg_advisory_lock({class}, hashtext('{key}'))"
            ))
            .unwrap();
        return Held::Session(Box::new(client));
    }
    let dir = world.state_dir().join("locks");
    fs::create_dir_all(&dir).unwrap();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{kind}-{:02}.lock", bucket(key))))
        .unwrap();
    file.lock().unwrap();
    Held::File(file)
}

fn short_deadline(world: &World) {
    world.write_config(
        &world
            .config_text()
            .replacen("deadline = \"10s\"", "deadline = \"2s\"", 1),
    );
}

/// Ticket 30, locked, naming db01 (vm-43), whose key is in another bucket than web01's.
const T30: (u64, &str) = (30, "2026112310000030");

fn with_ticket_on_db01(world: &World) {
    assert_ne!(bucket("vm-42"), bucket("vm-43"));
    assert_ne!(bucket("2"), bucket("30"));
    world.helpdesk.add_ticket(T30.0, T30.1, json!("db01"));
    world.helpdesk.set_lock(T30.0, "lock");
}

fn a_held_vm_holds_up_only_the_events_that_touch_it(world: World) {
    short_deadline(&world);
    with_ticket_on_db01(&world);
    let held = hold(&world, "vm", "vm-42");
    // Another ticket on another VM goes on.
    let run = event(&world, T30);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-43"]));
    // A ticket on web01 waits for it, then opens nothing.
    let run = lock(&world, T2);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(run.stderr.contains("stayed busy"), "{}", run.stderr);
    assert_eq!(world.tagged(), set(&["vm-43"]), "no access without its lock");
    // So does a grant of web01; one of db01 goes on.
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 75);
    let run = otnsx(&world, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    drop(held);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42", "vm-43"]));

    // Held again while ticket 2 is unlocked: web01 is closed all the same (fail closed).
    let held = hold(&world, "vm", "vm-42");
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = event(&world, T2);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(run.stderr.contains("(fail closed)"), "{}", run.stderr);
    assert_eq!(world.tagged(), set(&["vm-43"]), "{run:?}");
    drop(held);
    // The lease the busy run could not drop ends at the next run, and web01 is not reopened;
    // db01's two leases stay.
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-43"]), "{run:?}");
    let vms: Vec<String> = world
        .leases()
        .iter()
        .map(|l| l["vm"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(vms, ["db01", "db01"], "{run:?}");
}

fn a_held_ticket_holds_up_only_its_own_events(world: World) {
    short_deadline(&world);
    with_ticket_on_db01(&world);
    let held = hold(&world, "ticket", "2");
    let run = lock(&world, T2);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(run.stderr.contains("nothing was opened"), "{}", run.stderr);
    let run = event(&world, T30);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-43"]));
    drop(held);
    assert_eq!(event(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42", "vm-43"]));
}

/// A run that locks everything waits for the runs under way, and the runs that come after it
/// wait for it: one consistent state, and nobody kept out for ever.
fn a_reconcile_sees_one_state_while_events_go_on(world: World) {
    with_ticket_on_db01(&world);
    world.helpdesk.set_lock(T2.0, "lock");
    std::thread::scope(|scope| {
        let events: Vec<_> = (0..6)
            .map(|n| {
                let world = &world;
                scope.spawn(move || {
                    let (id, number) = if n % 2 == 0 { T2 } else { T30 };
                    otnsx(world, &[number, &id.to_string()])
                })
            })
            .collect();
        let reconcile = otnsx(&world, &["reconcile"]);
        assert_eq!(reconcile.code, 0, "{reconcile:?}");
        for run in events {
            let run = run.join().unwrap();
            assert_eq!(run.code, 0, "{run:?}");
        }
    });
    assert_eq!(world.tagged(), set(&["vm-42", "vm-43"]));
    assert_eq!(world.leases().len(), 2);
    let grants = world
        .journal()
        .into_iter()
        .filter(|e| e["action"] == "grant")
        .count();
    assert_eq!(grants, 2, "each ticket opened once");
}

fn a_run_that_ends_leaves_nothing_in_the_outbox() {
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(otnsx(&world, &["grant", "--vm", "db01"]).code, 0);
    let file: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(world.state_dir().join("leases.json")).unwrap())
            .unwrap();
    assert_eq!(file["leases"].as_array().unwrap().len(), 2);
    assert!(file.get("outbox").is_none(), "{file:#}");
    // Every file a run uses to lock: the group's, as every state file.
    use std::os::unix::fs::PermissionsExt;
    for name in ["leases.gate.lock", "leases.write.lock", "locks"] {
        let path = world.state_dir().join(name);
        assert!(path.exists(), "{name}");
    }
    let dir = fs::metadata(world.state_dir().join("locks")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o7777, 0o2770);
}

crate::tests! {
    a_run_that_ends_leaves_nothing_in_the_outbox,
    ; on_both_backends:
    a_held_vm_holds_up_only_the_events_that_touch_it,
    a_held_ticket_holds_up_only_its_own_events,
    a_reconcile_sees_one_state_while_events_go_on,
}
