//! Concurrent help-desk workers: many events at once end in a state that matches the tickets.

use std::collections::BTreeSet;
use std::thread;

use serde_json::json;

use crate::otnsx;
use crate::support::{World, set};

fn sixteen_concurrent_events_end_consistent_with_the_tickets(world: World) {
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

/// The VMs the mixed tests spread their tickets over.
pub const VMS: [&str; 4] = ["web01", "db01", "app01", "cache01"];

/// Tickets `ids` in the fake help desk, each naming one of [`VMS`] in turn; every third
/// (from the first) unlocked, the others locked.
pub fn mixed_tickets(world: &World, ids: std::ops::Range<u64>) -> Vec<(u64, String)> {
    let tickets: Vec<(u64, String)> = ids.map(|id| (id, format!("20261123100002{id}"))).collect();
    for (i, (id, number)) in tickets.iter().enumerate() {
        world.helpdesk.add_ticket(*id, number, json!(VMS[i % 4]));
        world
            .helpdesk
            .set_lock(*id, if i % 3 == 0 { "unlock" } else { "lock" });
    }
    tickets
}

fn thirty_two_mixed_invocations_end_with_nsx_matching_the_leases(world: World) {
    let vms = VMS;
    let tickets = mixed_tickets(&world, 20..28);
    // Every ticket's event twice, and eight grants and eight revokes over the four VMs, mixed.
    let runs: Vec<Vec<String>> = (0..32)
        .map(|i| match i % 2 {
            0 => {
                let (id, number) = &tickets[(i / 2) % 8];
                vec![number.clone(), id.to_string()]
            }
            _ if i % 4 == 1 => vec!["grant".into(), "--vm".into(), vms[(i / 4) % 4].into()],
            _ => vec!["revoke".into(), "--vm".into(), vms[(i / 4 + 1) % 4].into()],
        })
        .collect();
    thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|args| {
                let world = &world;
                scope.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    otnsx(world, &args)
                })
            })
            .collect();
        for handle in handles {
            let run = handle.join().unwrap();
            assert!(run.code == 0, "{run:?}");
        }
    });
    nsx_matches_the_leases_of_the_locked_tickets(&world, &tickets);
}

/// NSX carries the tag exactly on the VMs the leases hold, and exactly the locked tickets
/// (all but every third of `tickets`) hold leases. Returns the leases.
pub fn nsx_matches_the_leases_of_the_locked_tickets(
    world: &World,
    tickets: &[(u64, String)],
) -> Vec<serde_json::Value> {
    let leases = world.leases();
    let held: BTreeSet<String> = leases
        .iter()
        .map(|l| l["vm_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        world.tagged(),
        held,
        "NSX carries the tag exactly on the VMs the leases hold"
    );
    let ticket_holders: BTreeSet<u64> = leases
        .iter()
        .filter_map(|l| l["holder"]["id"].as_u64())
        .collect();
    let locked: BTreeSet<u64> = tickets
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, (id, _))| *id)
        .collect();
    assert_eq!(
        ticket_holders, locked,
        "exactly the locked tickets hold leases"
    );
    assert_eq!(world.vcenter.open_sessions(), 0);
    leases
}

crate::tests! {
    ; on_both_backends:
    sixteen_concurrent_events_end_consistent_with_the_tickets,
    thirty_two_mixed_invocations_end_with_nsx_matching_the_leases,
}
