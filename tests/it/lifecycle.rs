//! Access that ends by itself and that everyone can see: expiry, reconcile, revoke --all,
//! status. The clock is set with OTNSX_NOW.

use serde_json::{Value, json};

use crate::support::{T2, T3, TAG_ID, World, set};
use crate::{golden, note_entries, otnsx_at};

const T0: &str = "2026-11-23T16:00:00Z";

fn lock_at(world: &World, ticket: (u64, &str), now: &str) -> crate::Run {
    world.helpdesk.set_lock(ticket.0, "lock");
    otnsx_at(world, now, &[ticket.1, &ticket.0.to_string()])
}

fn a_grant_expires_and_reconcile_closes_it(world: World) {
    assert_eq!(
        otnsx_at(&world, T0, &["grant", "--vm", "db01", "--for", "30m"]).code,
        0
    );
    let run = otnsx_at(&world, "2026-11-23T16:29:59Z", &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("NSX matches the leases; nothing to repair"),
        "{}",
        run.stdout
    );
    assert_eq!(world.tagged(), set(&["vm-43"]));

    let run = otnsx_at(&world, "2026-11-23T16:30:00Z", &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("closed db01 (vm-43) (lease expired)"),
        "{}",
        run.stdout
    );
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    let last = world.journal().last().cloned().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["cause"].as_str()),
        (Some("revoke"), Some("expiry"))
    );
    assert_eq!(
        last["lost"],
        json!([{"kind": "user", "name": crate::real_user()}])
    );
}

fn a_grant_on_a_held_vm_extends_it(world: World) {
    assert_eq!(
        otnsx_at(&world, T0, &["grant", "--vm", "db01", "--for", "30m"]).code,
        0
    );
    assert_eq!(
        otnsx_at(
            &world,
            "2026-11-23T16:20:00Z",
            &["grant", "--vm", "db01", "--for", "30m"]
        )
        .code,
        0
    );
    assert_eq!(world.leases()[0]["expires_at"], "2026-11-23T16:50:00Z");
    assert_eq!(
        otnsx_at(&world, "2026-11-23T16:40:00Z", &["reconcile"]).code,
        0
    );
    assert_eq!(world.tagged(), set(&["vm-43"]));
}

fn a_ticket_lease_expires_after_max_duration_and_the_ticket_is_told(world: World) {
    assert_eq!(lock_at(&world, T2, T0).code, 0);
    let run = otnsx_at(&world, "2026-11-24T00:00:00Z", &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    let article = world
        .helpdesk
        .ticket(T2.0)
        .articles
        .last()
        .cloned()
        .unwrap();
    assert_eq!(article["Subject"], "otnsx: maintenance access closed");
    assert_eq!(
        article["Body"],
        "The ticket's maintenance access ended: it was locked longer than policy.max_duration (8h). Unlock and lock the ticket again to reopen it.\nAccess to web01 is closed."
    );
    assert_eq!(note_entries(&world).last().unwrap()["cause"], "reconcile");
    // A repeated lock event does not reopen it; unlocking and locking again does.
    world.helpdesk.set_lock(T2.0, "unlock");
    assert_eq!(
        otnsx_at(&world, "2026-11-24T00:01:00Z", &[T2.1, "2"]).code,
        0
    );
    assert_eq!(lock_at(&world, T2, "2026-11-24T00:02:00Z").code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
}

fn a_missed_unlock_is_caught_by_reconcile(world: World) {
    assert_eq!(lock_at(&world, T2, T0).code, 0);
    world.helpdesk.set_lock(T2.0, "unlock"); // the help desk never ran otnsx for it
    let run = otnsx_at(&world, "2026-11-23T16:05:00Z", &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    // One TicketSearch, then a TicketGet only for the ticket missing from it.
    let calls: Vec<String> = world
        .helpdesk
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(&calls[calls.len() - 2..], ["Ticket", "2"]);
    let search = world
        .helpdesk
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/Ticket"))
        .unwrap();
    assert_eq!(search.query_value("Locks").as_deref(), Some("lock"));
    assert_eq!(search.query_value("Limit").as_deref(), Some("10000"));
}

fn a_ticket_the_api_user_can_no_longer_see_counts_as_unlocked(world: World) {
    assert_eq!(lock_at(&world, T2, T0).code, 0);
    world.helpdesk.update(T2.0, |t| t.readable = false);
    assert_eq!(
        otnsx_at(&world, "2026-11-23T16:05:00Z", &["reconcile"]).code,
        0
    );
    assert_eq!(world.tagged(), set(&[]));
}

fn locked_tickets_survive_reconcile_untouched(world: World) {
    assert_eq!(lock_at(&world, T2, T0).code, 0);
    assert_eq!(lock_at(&world, T3, T0).code, 0);
    let before = world.leases();
    let requests = world.helpdesk.requests().len();
    let run = otnsx_at(&world, "2026-11-23T17:00:00Z", &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.leases(), before);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    // One TicketSearch (with the session kept from the events): no TicketGet, both tickets
    // were in the search.
    assert_eq!(world.helpdesk.requests().len(), requests + 1);
}

/// Drift both ways: a tag without a lease goes; a lease whose VM was closed behind otnsx's back
/// ends, and the VM stays closed (otnsx never reopens what is closed: the close's record may
/// have been lost).
fn drift_is_repaired_both_ways(world: World) {
    assert_eq!(lock_at(&world, T2, T0).code, 0);
    world.nsx.attach_by_hand(TAG_ID, "vm-44"); // opened in NSX by hand
    world.nsx.detach_by_hand(TAG_ID, "vm-42"); // closed in NSX by hand, lease still live
    let run = otnsx_at(&world, "2026-11-23T16:05:00Z", &["reconcile", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let changes: Vec<(String, String, String)> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["vm_id"].as_str().unwrap().into(),
                c["action"].as_str().unwrap().into(),
                c["cause"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("vm-44".into(), "revoke".into(), "drift".into()),
            ("vm-42".into(), "revoke".into(), "drift".into())
        ]
    );
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    assert!(
        report["changes"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("otnsx does not reopen what is closed"),
        "{report}"
    );
    // The next run finds nothing to do.
    let run = otnsx_at(&world, "2026-11-23T16:06:00Z", &["reconcile", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap()["changes"],
        json!([])
    );
}

fn reconcile_dry_run_lists_and_changes_nothing(world: World) {
    world.nsx.attach_by_hand(TAG_ID, "vm-44");
    let run = otnsx_at(&world, T0, &["--dry-run", "reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "dry run: reconcile: would close app01 (vm-44) (NSX disagreed with the leases)"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(world.tagged(), set(&["vm-44"]));
    assert!(world.journal().is_empty());
}

fn reconcile_exits_1_when_something_cannot_be_repaired(world: World) {
    world.nsx.attach_by_hand(TAG_ID, "vm-44");
    world.nsx.fail_changes(Some(500));
    let run = otnsx_at(&world, T0, &["reconcile"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("app01 (vm-44): closing failed"),
        "{}",
        run.stderr
    );
}

fn revoke_all_closes_everything_and_tells_every_ticket(world: World) {
    assert_eq!(lock_at(&world, T2, T0).code, 0);
    world.helpdesk.update(T3.0, |t| t.vm_field = json!("db01"));
    assert_eq!(lock_at(&world, T3, T0).code, 0);
    assert_eq!(otnsx_at(&world, T0, &["grant", "--vm", "app01"]).code, 0);
    world.nsx.attach_by_hand(TAG_ID, "vm-45");
    let run = otnsx_at(&world, "2026-11-23T16:10:00Z", &["revoke", "--all"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    for ticket in [T2.0, T3.0] {
        let article = world
            .helpdesk
            .ticket(ticket)
            .articles
            .last()
            .cloned()
            .unwrap();
        assert!(
            article["Body"].as_str().unwrap().starts_with(&format!(
                "An administrator ({}) closed all maintenance access at once",
                crate::real_user()
            )),
            "{article}"
        );
    }
    let causes: Vec<Value> = world
        .journal()
        .iter()
        .rev()
        .take(6)
        .map(|e| e["cause"].clone())
        .collect();
    assert!(causes.iter().all(|c| c == "emergency"), "{causes:?}");
}

fn status_shows_leases_tags_and_drift(world: World) {
    assert_eq!(lock_at(&world, T2, T0).code, 0);
    assert_eq!(
        otnsx_at(
            &world,
            T0,
            &[
                "grant",
                "--vm",
                "db01",
                "--for",
                "2h",
                "--reason",
                "kernel update"
            ]
        )
        .code,
        0
    );
    world.nsx.attach_by_hand(TAG_ID, "vm-44");
    world.nsx.detach_by_hand(TAG_ID, "vm-43");
    // The grant's holder is the test's real user, whoever runs the tests: `[USER]` in the
    // snapshots, the table's column kept as wide.
    let user = crate::real_user();
    let run = otnsx_at(&world, "2026-11-23T17:00:00Z", &["status"]);
    // Drift on two VMs: 1, and said on stderr.
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("NSX and the leases disagree"),
        "{run:?}"
    );
    let held = format!("user {user}");
    let width = "ticket 2026112310000011  ".len();
    golden(
        "status.txt",
        &run.stdout.replace(
            &format!("{held:width$}"),
            &format!("{:width$}", "user [USER]"),
        ),
    );
    let run = otnsx_at(&world, "2026-11-23T17:00:00Z", &["status", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    // One line; pretty-printed here for the golden file's diffs.
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    golden(
        "status.json",
        &(serde_json::to_string_pretty(&report).unwrap() + "\n")
            .replace(&format!("\"name\": \"{user}\""), "\"name\": \"[USER]\""),
    );

    let run = otnsx_at(
        &world,
        "2026-11-23T17:00:00Z",
        &["status", "--vm", "cache01"],
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "cache01: no lease and no tag; access is closed\n")
    );
}

fn journal_entries_also_go_to_syslog() {
    use std::os::unix::net::UnixDatagram;
    let world = World::new();
    let socket = world.dir.path().join("log.sock");
    let receiver = UnixDatagram::bind(&socket).unwrap();
    receiver.set_nonblocking(true).unwrap();
    world.write_config(&format!(
        "{}\n[log]\nsyslog = true\nsocket = \"{}\"\n",
        world.config_text(),
        socket.display()
    ));
    assert_eq!(otnsx_at(&world, T0, &["grant", "--vm", "db01"]).code, 0);
    assert_eq!(
        otnsx_at(&world, T0, &["grant", "--vm", "nosuchvm"]).code,
        65
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = receiver.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("<86>1 2026-11-23T16:00:00Z "),
        "{}",
        messages[0]
    );
    assert!(
        messages[0].contains(" otnsx ") && messages[0].contains(" grant - {"),
        "{}",
        messages[0]
    );
    let json: Value = serde_json::from_str(messages[0].split(" - ").nth(1).unwrap()).unwrap();
    assert_eq!(json, world.journal()[0]);
    // With the chain's head: the log server holds what an edit on this host cannot rewrite.
    assert_eq!(json["seq"], 1);
    assert_eq!(json["hash"].as_str().map(str::len), Some(64));
    assert!(
        messages[1].starts_with("<84>1 "),
        "refused is a warning: {}",
        messages[1]
    );

    // An unknown facility is a configuration error.
    world.write_config(&format!(
        "{}\n[log]\nsyslog = true\nfacility = \"nope\"\n",
        world.config_text()
    ));
    let run = otnsx_at(&world, T0, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr
            .contains("log.facility: \"nope\" is not a syslog facility"),
        "{}",
        run.stderr
    );
}

fn status_shows_the_leases_even_when_nsx_is_down(world: World) {
    assert_eq!(lock_at(&world, T2, T0).code, 0);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    world.write_config(
        &world
            .config_text()
            .replace(&world.nsx.url(), &format!("http://127.0.0.1:{port}"))
            .replace("deadline = \"10s\"", "deadline = \"1s\""),
    );
    let run = otnsx_at(&world, "2026-11-23T17:00:00Z", &["status"]);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stdout.contains("web01  vm-42  ticket 2026112310000011"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.trim_end().ends_with("unknown"), "{}", run.stdout);
    assert!(
        run.stderr.contains("showing the leases without NSX's view"),
        "{}",
        run.stderr
    );
    let run = otnsx_at(&world, "2026-11-23T17:00:00Z", &["status", "--json"]);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(report["nsx_error"].as_str().unwrap().contains("NSX"));
    assert_eq!(report["vms"][0]["tagged"], Value::Null);
}

crate::tests! {
    journal_entries_also_go_to_syslog,
    ; on_both_backends:
    a_grant_expires_and_reconcile_closes_it,
    a_grant_on_a_held_vm_extends_it,
    a_ticket_lease_expires_after_max_duration_and_the_ticket_is_told,
    a_missed_unlock_is_caught_by_reconcile,
    a_ticket_the_api_user_can_no_longer_see_counts_as_unlocked,
    locked_tickets_survive_reconcile_untouched,
    drift_is_repaired_both_ways,
    reconcile_dry_run_lists_and_changes_nothing,
    reconcile_exits_1_when_something_cannot_be_repaired,
    revoke_all_closes_everything_and_tells_every_ticket,
    status_shows_leases_tags_and_drift,
    status_shows_the_leases_even_when_nsx_is_down,
}
