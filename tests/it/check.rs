//! `otnsx check`: every check passes on a good set-up, and each broken part is named with what
//! to do.

use std::fs;

use crate::otnsx;
use crate::support::World;

fn lines(out: &str, mark: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with(mark))
        .map(str::to_string)
        .collect()
}

fn everything_passes_on_a_good_setup() {
    let world = World::new();
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    let passed = lines(&run.stdout, "✓");
    assert_eq!(passed.len(), 9, "{}", run.stdout);
    assert!(
        passed[2].contains("shared with group ") && passed[2].contains(": setgid"),
        "{}",
        passed[2]
    );
    assert!(
        passed[6].contains("help desk operations: SessionCreate, TicketSearch, TicketGet, TicketHistoryGet and TicketUpdate answer"),
        "{}",
        passed[6]
    );
    assert!(
        passed[0].contains("valid (NSX-V, deadline 10s)"),
        "{}",
        passed[0]
    );
    assert!(
        // TicketSearch answers newest first (znuny7/39): ticket 3 is the newest.
        passed[4].contains("help desk field VMName: ticket 2026112310000021 (ID 3) has it: web01"),
        "{}",
        passed[4]
    );
    assert!(
        passed[5].contains("help desk version: otrs.version = 6 matches the articles"),
        "{}",
        passed[5]
    );
    assert!(
        passed[7].contains("API /api (vSphere 7.0U2 or later), session closed again"),
        "{}",
        passed[7]
    );
    assert!(
        passed[8].contains("security tag \"otnsx-maintenance\" is securitytag-12"),
        "{}",
        passed[8]
    );
    assert!(
        run.stdout.ends_with("9 check(s) passed, 0 failed\n"),
        "{}",
        run.stdout
    );
    assert_eq!(world.vcenter.open_sessions(), 0);
    assert!(world.nsx.changes().is_empty(), "check changes nothing");
    assert!(
        world.helpdesk.ticket(3).articles.is_empty(),
        "no note without --note"
    );
    assert_eq!(
        world.helpdesk.ticket(3).lock,
        "unlock",
        "the probe changed nothing"
    );
    // A second check logs in again: it never trusts a kept session (see below).
    assert_eq!(otnsx(&world, &["check"]).code, 0);
    let logins = world
        .helpdesk
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/Session"))
        .count();
    assert_eq!(logins, 2, "one login per check");
}

fn check_logs_in_afresh_and_asks_ticket_search() {
    let world = World::new();
    // An event keeps its session in the state directory for the next runs.
    world.helpdesk.set_lock(2, "lock");
    assert_eq!(otnsx(&world, &["2026112310000011", "2"]).code, 0);
    assert!(world.state_dir().join("otrs.session").exists());
    // The password changes at the help desk; the kept session still works there.
    world
        .helpdesk
        .set_password("otnsx", "changed-at-the-help-desk");
    let run = otnsx(&world, &["check", "--ticket", "2"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("✗ help desk ")
            && run
                .stdout
                .contains("the help desk refused the login of \"otnsx\""),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("login as \"otnsx\" accepted"),
        "{}",
        run.stdout
    );
    // With the right password, --ticket still asks TicketSearch (check says it answers).
    world
        .helpdesk
        .set_password("otnsx", crate::support::helpdesk::API_PASSWORD);
    let before = world.helpdesk.requests().len();
    let run = otnsx(&world, &["check", "--ticket", "2"]);
    assert_eq!(run.code, 0, "{run:?}");
    let searches: Vec<String> = world.helpdesk.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/Ticket"))
        .map(|r| r.raw_query.clone())
        .collect();
    assert_eq!(searches.len(), 1, "{searches:?}");
    assert!(searches[0].ends_with("&Limit=1"), "{searches:?}");
}

fn nsxt_and_a_chosen_ticket() {
    let world = World::new();
    world.write_config(&world.config_text_nsxt("auth = \"session\"", false));
    let run = otnsx(&world, &["check", "--ticket", "3"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("ticket 2026112310000021 (ID 3) has it"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "NSX-T answers; the VM inventory is readable; tag otnsx|maintenance is on 0 VM(s) now"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        world.nsxt.sessions().2,
        0,
        "the NSX session is closed again"
    );
}

fn config_problems_are_listed_one_per_line() {
    let world = World::new();
    let text = world
        .config_text()
        .replace("deadline = \"10s\"", "deadline = \"soon\"")
        .replace("tag = \"otnsx-maintenance\"", "tag = \"\"");
    world.write_config(&text);
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 78, "{run:?}");
    let failed = lines(&run.stdout, "✗");
    assert_eq!(failed.len(), 2, "{}", run.stdout);
    assert!(
        failed[0].ends_with("deadline: \"soon\" is not a duration like 20s, 15m, 8h, 1h30m or 2d"),
        "{}",
        failed[0]
    );
    assert!(
        failed[1].ends_with("nsx.tag: missing; name the security tag that opens access (or define [profiles.NAME] sections, each with its tag)"),
        "{}",
        failed[1]
    );
    assert!(world.helpdesk.requests().is_empty());
}

fn each_broken_service_is_named_with_the_fix() {
    let world = World::new();
    let cases: Vec<(String, &str)> = vec![
        (
            world
                .config_text()
                .replace("GenericTicketConnectorREST", "NoSuchWS"),
            "✗ help desk",
        ),
        (
            world
                .config_text()
                .replace("vm_field = \"VMName\"", "vm_field = \"VMNames\""),
            "✗ help desk field VMNames",
        ),
        (
            world
                .config_text()
                .replace("tag = \"otnsx-maintenance\"", "tag = \"no-such-tag\""),
            "✗ NSX",
        ),
        (
            world.config_text().replace(
                &format!("{}/state", world.dir.path().display()),
                &format!("{}/otnsx.toml/state", world.dir.path().display()),
            ),
            "✗ state directory",
        ),
    ];
    for (text, expected) in cases {
        world.write_config(&text);
        let run = otnsx(&world, &["check"]);
        assert_eq!(run.code, 1, "{expected}: {run:?}");
        let failed = lines(&run.stdout, "✗");
        assert_eq!(failed.len(), 1, "{expected}: {}", run.stdout);
        assert!(failed[0].starts_with(expected), "{expected}: {}", failed[0]);
    }
    world.write_config(&world.config_text());
    fs::write(world.dir.path().join("vcenter.secret"), "wrong\n").unwrap();
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    let failed = lines(&run.stdout, "✗");
    assert!(
        failed[0].contains("check vcenter.user (otnsx@vsphere.local) and its password"),
        "{}",
        failed[0]
    );
}

fn insecure_tls_is_warned_about() {
    let world = World::new();
    world.write_config(&world.config_text().replace(
        "tag = \"otnsx-maintenance\"",
        "tag = \"otnsx-maintenance\"\ninsecure = true",
    ));
    let run = otnsx(&world, &["check"]);
    assert!(
        lines(&run.stdout, "!")
            .iter()
            .any(|l| l.contains("TLS verification of") && l.contains("set ca_file instead")),
        "{}",
        run.stdout
    );
}

fn a_hung_service_does_not_fail_the_healthy_ones() {
    use crate::support::server::{Response, Server};
    let world = World::new();
    let hung = Server::start(|_| Response::empty(200).delayed(std::time::Duration::from_secs(30)));
    let text = world
        .config_text()
        .replace(&world.helpdesk.url(), &hung.url())
        .replace("deadline = \"10s\"", "deadline = \"3s\"");
    world.write_config(&text);
    let started = std::time::Instant::now();
    let run = otnsx(&world, &["check"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.code, 1, "{run:?}");
    let failed = lines(&run.stdout, "✗");
    assert_eq!(failed.len(), 1, "only the help desk fails: {}", run.stdout);
    assert!(failed[0].starts_with("✗ help desk"), "{}", failed[0]);
    assert!(run.stdout.contains("✓ vCenter"), "{}", run.stdout);
    assert!(run.stdout.contains("✓ NSX"), "{}", run.stdout);
}

fn check_finds_a_missing_route_and_a_missing_note_permission() {
    let world = World::new();
    world.helpdesk.hide_update(true);
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    let failed = lines(&run.stdout, "✗");
    assert_eq!(failed.len(), 1, "{}", run.stdout);
    assert!(
        failed[0].starts_with("✗ help desk operations: TicketUpdate on ticket ID 3"),
        "{}",
        failed[0]
    );
    // ro only on the queue: --note finds it out.
    let world = World::new();
    world.helpdesk.update(2, |t| t.notable = false);
    let run = otnsx(&world, &["check", "--ticket", "2", "--note"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("✗ help desk note permission:")
            && run.stdout.contains("it needs ro + note"),
        "{}",
        run.stdout
    );
    world.helpdesk.update(2, |t| t.notable = true);
    let run = otnsx(&world, &["check", "--ticket", "2", "--note"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.helpdesk.ticket(2).articles.len(), 1);
    assert_eq!(
        world.helpdesk.ticket(2).articles[0]["IsVisibleForCustomer"],
        0
    );
}

fn check_warns_of_a_second_instance_on_the_same_tag() {
    let world = World::new();
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    let run = otnsx(&world, &["check"]);
    assert!(!run.stdout.contains("! NSX tag"), "{}", run.stdout);
    // Another help desk's otnsx tags db01: this one holds no lease for it and never opened it.
    world.nsx.attach_by_hand("securitytag-12", "vm-43");
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "a warning, not a failure: {run:?}");
    assert!(
        run.stdout.contains("! NSX tag: NSX shows the tag on 1 VM(s) this otnsx holds no lease for and never opened (db01 (vm-43))"),
        "{}",
        run.stdout
    );
}

/// What this otnsx opened before the journal was rotated still counts as its own: a VM it
/// once opened is not taken for a second instance's.
fn check_reads_the_rotated_journal_for_what_this_otnsx_opened() {
    let world = World::new();
    world.write_config(&format!(
        "{}\n[log]\nrotate_size = \"4KiB\"\n",
        world.config_text()
    ));
    assert_eq!(otnsx(&world, &["grant", "--vm", "db01"]).code, 0);
    assert_eq!(otnsx(&world, &["revoke", "--vm", "db01"]).code, 0);
    while !std::fs::read_dir(world.state_dir())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("journal-"))
    {
        assert_eq!(otnsx(&world, &["grant", "--vm", "nosuchvm"]).code, 65);
    }
    world.nsx.attach_by_hand("securitytag-12", "vm-43");
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("! NSX tag"), "{}", run.stdout);
}

fn check_output_is_pinned() {
    let world = World::new();
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    // The state directory's group is whatever the user running the tests has.
    let out: String = crate::redact(&world, &run.stdout)
        .lines()
        .map(|line| match line.split_once("shared with group ") {
            Some((head, tail)) => {
                let rest = tail.split_once(':').map_or("", |(_, rest)| rest);
                format!("{head}shared with group [GROUP]:{rest}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    crate::golden("check.txt", &out);
}

crate::tests! {
    everything_passes_on_a_good_setup,
    check_logs_in_afresh_and_asks_ticket_search,
    nsxt_and_a_chosen_ticket,
    config_problems_are_listed_one_per_line,
    each_broken_service_is_named_with_the_fix,
    insecure_tls_is_warned_about,
    a_hung_service_does_not_fail_the_healthy_ones,
    check_finds_a_missing_route_and_a_missing_note_permission,
    check_warns_of_a_second_instance_on_the_same_tag,
    check_output_is_pinned,
    check_reads_the_rotated_journal_for_what_this_otnsx_opened,
}
