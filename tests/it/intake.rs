//! What the help desk answers is taken only when the lease store can hold it: a ticket number
//! that is not all digits, or a locking agent's login with control characters, is refused
//! (65) before anything is looked up or changed, and the store stays readable for every other
//! ticket.

use serde_json::json;

use crate::support::{T2, World, set};
use crate::{lock, nothing_looked_up_or_changed, otnsx};

/// The ticket the help desk calls ID 4, naming web01, with `number`.
const ODD: u64 = 4;

/// Locks ticket 4 with `number` through `otnsx ticket 4` (the Znuny module's call, which
/// brings no number to check against) and asserts that it was refused and left nothing
/// behind, then that a normal ticket still opens and the store still reads.
fn refused_then_others_still_open(world: &World, number: &str, says: &str) {
    world.helpdesk.add_ticket(ODD, number, json!("web01"));
    world.helpdesk.set_lock(ODD, "lock");
    let run = otnsx(world, &["ticket", &ODD.to_string()]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(run.stderr.contains(says), "{}", run.stderr);
    nothing_looked_up_or_changed(world);
    assert!(world.tagged().is_empty());
    assert!(world.leases().is_empty(), "{:?}", world.leases());
    let journal = world.journal();
    let refused: Vec<_> = journal
        .iter()
        .filter(|e| e["action"] == "refused" && e["ticket_id"] == ODD)
        .collect();
    assert_eq!(refused.len(), 1, "{journal:?}");
    assert_eq!(refused[0]["result"], "failed");
    let detail = refused[0]["detail"].as_str().unwrap();
    assert!(detail.contains(says), "{detail}");

    // Its unlock has nothing to close, and changes nothing either.
    world.helpdesk.set_lock(ODD, "unlock");
    let run = otnsx(world, &["ticket", &ODD.to_string()]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(world.nsx.changes().is_empty());

    // Another ticket opens and closes as ever: the store was not damaged.
    let run = lock(world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let run = otnsx(world, &["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = crate::unlock(world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(world.tagged().is_empty());
}

/// A ticket number with letters (a site's own number generator) was taken as it came, opened
/// the VM with exit 0, and made the lease store unreadable (every later lock: 74).
fn a_ticket_number_with_letters_is_refused_and_damages_nothing(world: World) {
    refused_then_others_still_open(
        &world,
        "INC-2026-0001",
        "its number \"INC-2026-0001\" is not a ticket number otnsx can hold (1 to 64 digits",
    );
}

/// The same for a number with a trailing space.
fn a_ticket_number_with_a_trailing_space_is_refused_and_damages_nothing(world: World) {
    refused_then_others_still_open(
        &world,
        "2026112310000011 ",
        "its number \"2026112310000011 \" is not a ticket number",
    );
}

/// The help desk's call with the number (`otnsx NUMBER ID`) refuses such a ticket too: the
/// command line takes digits only, and the ticket's own number does not match them.
fn the_numbered_call_refuses_a_ticket_whose_number_is_not_digits(world: World) {
    world
        .helpdesk
        .add_ticket(ODD, "2026112310000011 ", json!("web01"));
    world.helpdesk.set_lock(ODD, "lock");
    let run = otnsx(&world, &["2026112310000011", &ODD.to_string()]);
    assert_eq!(run.code, 65, "{run:?}");
    nothing_looked_up_or_changed(&world);
    let run = otnsx(&world, &["INC-2026-0001", &ODD.to_string()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(world.tagged().is_empty());
}

/// The locking agent's login goes into the lease (and, with per-agent rules, is the desktop
/// it opens to): a login with a control character is refused at the lock, and the store stays
/// readable.
fn a_locking_owner_whose_login_the_store_cannot_hold_is_refused(world: World) {
    world
        .helpdesk
        .add_ticket(ODD, "2026112310000041", json!("web01"));
    world
        .helpdesk
        .update(ODD, |t| t.owner = "agent\u{1f}1".into());
    world.helpdesk.set_lock(ODD, "lock");
    let run = otnsx(&world, &["ticket", &ODD.to_string()]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr.contains(
            "ticket 2026112310000041 is locked by owner \"agent\\u{1f}1\", which is not a login otnsx can hold"
        ),
        "{}",
        run.stderr
    );
    nothing_looked_up_or_changed(&world);
    assert!(world.leases().is_empty());
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    // Its unlock is not refused for the owner: closing does not depend on it.
    world.helpdesk.set_lock(ODD, "unlock");
    let run = otnsx(&world, &["ticket", &ODD.to_string()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(otnsx(&world, &["status"]).code, 0);
}


/// An id NSX returns that the lease store could not read back (white space, a `#`) is refused
/// before anything opens, and the store stays readable for every other ticket.
fn a_vm_id_the_store_could_not_read_back_is_refused_at_intake() {
    let world = World::new();
    world.write_config(&world.config_text_nsxt("", false));
    world.nsxt.add_vm("odd01", "5012 0099#x", &[], &[]);
    world
        .helpdesk
        .add_ticket(9, "2026112310000099", serde_json::json!("odd01"));
    world.helpdesk.set_lock(9, "lock");
    let run = crate::otnsx(&world, &["ticket", "9"]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr.contains("which otnsx cannot record"),
        "{}",
        run.stderr
    );
    assert!(world.leases().is_empty());
    assert!(world.nsxt.tags("5012 0099#x").is_empty());
    let run = crate::lock(&world, T2);
    assert_eq!(run.code, 0, "the store still reads: {run:?}");
}

crate::tests! {
    a_vm_id_the_store_could_not_read_back_is_refused_at_intake,
    ; on_both_backends:
    a_ticket_number_with_letters_is_refused_and_damages_nothing,
    a_ticket_number_with_a_trailing_space_is_refused_and_damages_nothing,
    the_numbered_call_refuses_a_ticket_whose_number_is_not_digits,
    a_locking_owner_whose_login_the_store_cannot_hold_is_refused,
}
