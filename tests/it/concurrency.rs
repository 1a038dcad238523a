//! Concurrent help-desk workers: many events at once end in a state that matches the tickets.

use std::collections::BTreeSet;
use std::thread;

use serde_json::json;

use crate::otnsx;
use crate::support::{World, set};

#[test]
fn sixteen_concurrent_events_end_consistent_with_the_tickets() {
    let world = World::new();
    // Eight tickets over three VMs; odd tickets end locked, even ones unlocked.
    let vms = ["web01", "db01", "app01"];
    let tickets: Vec<(u64, String)> = (10..18)
        .map(|id| (id, format!("20261123100001{id}")))
        .collect();
    for (i, (id, number)) in tickets.iter().enumerate() {
        world.helpdesk.add_ticket(*id, number, json!(vms[i % 3]));
        world.helpdesk.set_lock(*id, "lock");
    }
    // Round one: every ticket locked, sixteen runs (each ticket twice) at once.
    let run_all = |world: &World| {
        thread::scope(|scope| {
            let handles: Vec<_> = tickets
                .iter()
                .chain(tickets.iter())
                .map(|(id, number)| {
                    let id = id.to_string();
                    scope.spawn(move || otnsx(world, &[number, &id]))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    for run in run_all(&world) {
        assert_eq!(run.code, 0, "{run:?}");
    }
    assert_eq!(world.tagged(), set(&["vm-42", "vm-43", "vm-44"]));
    assert_eq!(world.leases().len(), 8);

    // Round two: even tickets unlocked, again sixteen runs at once, mixed lock and unlock.
    for (i, (id, _)) in tickets.iter().enumerate() {
        if i % 2 == 0 {
            world.helpdesk.set_lock(*id, "unlock");
        }
    }
    for run in run_all(&world) {
        assert_eq!(run.code, 0, "{run:?}");
    }
    // Locked now: tickets 1, 3, 5, 7 (by index) → VMs web01? index%3: 1→db01, 3→web01, 5→app01, 7→db01.
    let locked: BTreeSet<String> = world
        .leases()
        .iter()
        .map(|l| l["holder"]["id"].as_u64().unwrap().to_string())
        .collect();
    assert_eq!(locked, set(&["11", "13", "15", "17"]));
    assert_eq!(world.tagged(), set(&["vm-42", "vm-43", "vm-44"]));
    assert_eq!(world.vcenter.open_sessions(), 0);

    // Every decision journaled once: 16 in round one (8 grants, 8 no-ops) and 16 in round two.
    let (notes, journal): (Vec<_>, Vec<_>) = world
        .journal()
        .into_iter()
        .partition(|e| e["action"] == "note");
    assert_eq!(journal.len(), 32, "{journal:#?}");
    assert_eq!(
        notes.len(),
        12,
        "a note per grant and per revoke, none for no-ops"
    );
    let count = |action: &str| journal.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("grant"), 8);
    assert_eq!(count("revoke"), 4, "one per unlocked ticket");
    assert_eq!(count("noop"), 20);

    // Unlock the rest: everything closes.
    for (id, _) in &tickets {
        world.helpdesk.set_lock(*id, "unlock");
    }
    for run in run_all(&world) {
        assert_eq!(run.code, 0, "{run:?}");
    }
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
}
