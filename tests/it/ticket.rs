//! The help desk's path: a ticket's lock opens its VMs, its unlock closes them.

use serde_json::json;

use crate::support::{T2, T3, World, set};
use crate::{actions, event, lock, otnsx, unlock};

fn lock_attaches_the_tag_and_unlock_detaches_it(world: World) {
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert!(
        run.stdout
            .contains("ticket 2026112310000011: opened web01 (vm-42) until"),
        "{}",
        run.stdout
    );
    let leases = world.leases();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["vm_id"], "vm-42");
    assert_eq!(
        leases[0]["holder"],
        json!({"kind": "ticket", "id": 2, "number": "2026112310000011"})
    );
    let entry = &world.journal()[0];
    assert_eq!(entry["action"], "grant");
    assert_eq!(entry["ticket_number"], "2026112310000011");
    assert_eq!(entry["ticket_id"], 2);
    assert_eq!(entry["vm"], "web01");
    assert_eq!(entry["vm_id"], "vm-42");
    assert_eq!(entry["result"], "ok");
    assert_eq!(entry["actor"], "helpdesk:agent1 (user-id 2)");
    assert_eq!(entry["cause"], "lock");
    assert_eq!(
        entry["gained"],
        json!([{"kind": "ticket", "id": 2, "number": "2026112310000011"}])
    );

    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    assert!(
        run.stdout.contains("closed web01 (vm-42)"),
        "{}",
        run.stdout
    );
    assert_eq!(actions(&world), ["grant", "revoke"]);
    assert_eq!(
        world.nsx.changes(),
        [
            "PUT /api/2.0/services/securitytags/tag/securitytag-12/vm/vm-42",
            "DELETE /api/2.0/services/securitytags/tag/securitytag-12/vm/vm-42"
        ]
    );
}

fn the_help_desk_reads_the_ticket_through_a_session_and_its_fields(world: World) {
    lock(&world, T2);
    let mut lines: Vec<String> = world.helpdesk.requests().iter().map(|r| r.line()).collect();
    // Four requests: the history (who locked) is read beside the NSX change, so its place
    // before the note is not fixed.
    assert_eq!(lines.len(), 4, "{lines:?}");
    lines[2..].sort();
    assert!(
        lines[2].starts_with(
            "GET /otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST/TicketHistory/2?SessionID="
        ),
        "{lines:?}"
    );
    lines.remove(2);
    assert_eq!(
        lines[0],
        "POST /otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST/Session"
    );
    assert!(lines[1].starts_with("GET /otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST/Ticket/2?SessionID="));
    assert!(lines[1].ends_with("&DynamicFields=1"), "{}", lines[1]);
    assert_eq!(
        lines[2],
        "PATCH /otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST/Ticket/2"
    );
    // The password travels in the POST body only, never in a URL.
    assert!(lines.iter().all(|l| !l.contains("Password")));
}

fn a_duplicate_lock_event_attaches_once(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    let run = event(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("web01 (vm-42) is already open for ticket 2026112310000011"),
        "{}",
        run.stdout
    );
    assert_eq!(world.nsx.changes().len(), 1, "one attach only");
    assert_eq!(world.leases().len(), 1);
    assert_eq!(actions(&world), ["grant", "noop"]);
}

fn two_tickets_on_one_vm_keep_it_open_until_both_unlock(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    let run = lock(&world, T3);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains(
            "was already open; now also held by ticket 2026112310000011, ticket 2026112310000021"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(world.leases().len(), 2);

    let run = unlock(&world, T2);
    assert_eq!(run.code, 0);
    assert_eq!(
        world.tagged(),
        set(&["vm-42"]),
        "ticket 3 still holds web01"
    );
    assert!(
        run.stdout
            .contains("stays open, still held by ticket 2026112310000021"),
        "{}",
        run.stdout
    );

    assert_eq!(unlock(&world, T3).code, 0);
    assert_eq!(world.tagged(), set(&[]));
    assert_eq!(world.nsx.changes().len(), 2, "one attach, one detach");
    assert_eq!(actions(&world), ["grant", "grant", "revoke", "revoke"]);
}

fn unlock_closes_what_the_ticket_opened_even_if_the_field_was_edited(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    world.helpdesk.update(T2.0, |t| t.vm_field = json!("db01"));
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    // Closing needs no vCenter: the lease knows the VM's id.
    assert_eq!(world.vcenter.sessions_created(), 1);
}

fn a_relock_after_the_field_changed_follows_the_field(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    world.helpdesk.update(T2.0, |t| t.vm_field = json!("db01"));
    let run = event(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-43"]));
}

fn several_vms_in_one_field(world: World) {
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01, db01;app01\ncache01 web01")
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42", "vm-43", "vm-44", "vm-45"]));
    assert_eq!(world.leases().len(), 4);
    assert_eq!(
        world.vcenter.sessions_created(),
        1,
        "one vCenter session for all names"
    );
    assert_eq!(unlock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&[]));
}

fn a_multiselect_field_names_vms_with_spaces(world: World) {
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!(["Büro 01 & co", "db01"]));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-43", "vm-46"]));
    let lookups: Vec<String> = world
        .vcenter
        .requests()
        .iter()
        .filter(|r| r.path == "/api/vcenter/vm")
        .map(|r| r.raw_query.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Looked up at once, so in either order.
    assert_eq!(lookups, ["names=B%C3%BCro%2001%20%26%20co", "names=db01"]);
}

fn an_empty_field_is_nothing_to_do(world: World) {
    world.helpdesk.update(T2.0, |t| t.vm_field = json!(null));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("field VMName names no VM; nothing to open"),
        "{}",
        run.stdout
    );
    // NSX's view and the vCenter login are had beside the ticket read; nothing is looked up
    // or changed, and the session is closed again.
    crate::nothing_looked_up_or_changed(&world);
    let journal = world.journal();
    assert_eq!(journal.len(), 2, "the no-op, and the note that says so");
    assert_eq!(journal[0]["action"], "noop");
    assert_eq!(journal[1]["action"], "note");
    assert!(
        journal[0]["detail"]
            .as_str()
            .unwrap()
            .contains("names no VM")
    );
}

fn an_unknown_vm_is_refused_with_exit_65(world: World) {
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("nosuchvm"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr.contains("vCenter has no VM named \"nosuchvm\""),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    let entry = &world.journal()[0];
    assert_eq!(
        (entry["action"].as_str(), entry["vm"].as_str()),
        (Some("refused"), Some("nosuchvm"))
    );
}

fn one_unknown_vm_among_several_opens_the_others_and_exits_1(world: World) {
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01 nosuchvm"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    // The summary names both on stdout; stderr carries only the failure.
    assert!(
        run.stdout.contains("nosuchvm: vCenter has no VM") && run.stdout.contains("opened web01"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("nosuchvm") && !run.stderr.contains("opened web01"),
        "{}",
        run.stderr
    );
}

fn an_ambiguous_vm_name_is_refused_and_lists_the_candidates(world: World) {
    world.helpdesk.update(T2.0, |t| t.vm_field = json!("dup"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr
            .contains("2 VMs are named \"dup\" (vm-50, vm-51); set vcenter.folder"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&[]));

    // A folder narrows the look-up to one.
    world.write_config(
        &world
            .config_text()
            .replace("api = \"auto\"", "api = \"auto\"\nfolder = \"group-v2\""),
    );
    let run = event(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-51"]));
}

fn a_ticket_number_that_does_not_match_the_id_is_refused(world: World) {
    world.helpdesk.set_lock(T2.0, "lock");
    let run = otnsx(&world, &["2026112310000021", "2"]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr
            .contains("ticket ID 2 has number 2026112310000011, not 2026112310000021"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&[]));
    crate::nothing_looked_up_or_changed(&world);
    let entry = &world.journal()[0];
    assert_eq!(entry["action"], "refused");
    assert_eq!(entry["ticket_id"], 2);
}

fn the_ticket_subcommand_works_with_and_without_the_number(world: World) {
    world.helpdesk.set_lock(T2.0, "lock");
    let run = otnsx(&world, &["ticket", "2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    world.helpdesk.set_lock(T2.0, "unlock");
    // A mismatch opens nothing and closes what the ticket ID holds (fail closed), exit 65.
    let run = otnsx(&world, &["ticket", "2", "--number", "999"]);
    assert_eq!(run.code, 65, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "{run:?}");
    assert!(run.stderr.contains("(fail closed)"), "{}", run.stderr);
    assert_eq!(otnsx(&world, &["ticket", "2", "--number", T2.1]).code, 0);
    assert_eq!(world.tagged(), set(&[]));
}

fn a_tmp_lock_counts_as_unlocked(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    world.helpdesk.set_lock(T2.0, "tmp_lock");
    assert_eq!(event(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&[]));
}

/// A tmp_lock leaves no `Unlock` in the history but a `Misc` "%%tmp_lock" (TicketLockSet):
/// the closing names its user, not whoever made an older `Unlock`.
fn a_tmp_lock_is_attributed_to_its_user_not_an_older_unlock(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    // Last week: user 3 unlocked.
    world.helpdesk.set_lock_by(T2.0, "unlock", 3);
    assert_eq!(event(&world, T2).code, 0);
    assert_eq!(lock(&world, T2).code, 0);
    // Now user 5 sets tmp_lock.
    world.helpdesk.set_lock_by(T2.0, "tmp_lock", 5);
    assert_eq!(event(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&[]));
    let journal = world.journal();
    let revoke = journal.iter().rfind(|e| e["action"] == "revoke").unwrap();
    assert_eq!(revoke["actor"], "helpdesk:user-id 5", "{revoke}");
}

/// A dispatcher (user ID 5) locks the ticket for agent2, the new owner: the opening is the
/// dispatcher's, as the history's `Lock` entry says, not the owner's.
fn a_dispatchers_lock_is_attributed_to_the_dispatcher(world: World) {
    world.helpdesk.lock_for(T2.0, 5, "agent2");
    let run = event(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let journal = world.journal();
    let grant = journal.iter().find(|e| e["action"] == "grant").unwrap();
    assert_eq!(grant["actor"], "helpdesk:user-id 5", "{grant}");
    // agent2 locking for itself is named with its login.
    world.helpdesk.set_lock(T2.0, "unlock");
    assert_eq!(event(&world, T2).code, 0);
    world.helpdesk.lock_for(T2.0, 3, "agent2");
    assert_eq!(event(&world, T2).code, 0);
    let journal = world.journal();
    let grant = journal.iter().rfind(|e| e["action"] == "grant").unwrap();
    assert_eq!(grant["actor"], "helpdesk:agent2 (user-id 3)", "{grant}");
}

fn help_desk_credentials_refused_exit_77(world: World) {
    world.helpdesk.set_password("otnsx", "changed");
    world.helpdesk.set_lock(T2.0, "lock");
    let run = event(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr
            .contains("the help desk refused the login of \"otnsx\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("SessionCreate.AuthFail"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&[]));
    assert_eq!(world.journal()[0]["action"], "refused");
}

fn a_ticket_the_api_user_cannot_read_exits_65(world: World) {
    world.helpdesk.update(T2.0, |t| t.readable = false);
    let run = event(&world, T2);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr
            .contains("no such ticket, or the API user \"otnsx\" may not read it"),
        "{}",
        run.stderr
    );
    let run = otnsx(&world, &["999999", "999999"]);
    assert_eq!(run.code, 65, "{run:?}");
}

fn nsx_failing_to_attach_leaves_no_lease_and_exits_69(world: World) {
    world.nsx.fail_changes(Some(500));
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr
            .contains("opening failed, and NSX may still apply it"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("HTTP 500 error 100: Internal server error: core-services failed"),
        "{}",
        run.stderr
    );
    assert!(crate::open_leases(&world).is_empty());
    assert_eq!(world.tagged(), set(&[]));
    let entry = &world.journal()[0];
    assert_eq!(
        (entry["action"].as_str(), entry["result"].as_str()),
        (Some("error"), Some("failed"))
    );

    // Once NSX works again, the same event opens access.
    world.nsx.fail_changes(None);
    assert_eq!(event(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
}

fn a_failed_detach_is_kept_and_retried_by_the_next_run(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    world.nsx.fail_changes(Some(503));
    let run = unlock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("closing failed, kept for retry"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let leases = world.leases();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["state"], "detach_failed");

    // Any later run retries it: here an unrelated grant.
    world.nsx.fail_changes(None);
    let run = otnsx(&world, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-43"]));
    assert_eq!(world.leases().len(), 1);
}

fn dry_run_changes_nothing(world: World) {
    world.helpdesk.set_lock(T2.0, "lock");
    let run = otnsx(&world, &["--dry-run", T2.1, "2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("dry run: ticket 2026112310000011: would open web01 (vm-42)"),
        "{}",
        run.stdout
    );
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.nsx.changes().is_empty());
    assert!(world.leases().is_empty());
    assert!(world.journal().is_empty());
    assert_eq!(world.vcenter.open_sessions(), 0);

    assert_eq!(lock(&world, T2).code, 0);
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = otnsx(&world, &["--dry-run", T2.1, "2"]);
    assert!(
        run.stdout
            .contains("dry run: ticket 2026112310000011: would close web01 (vm-42)"),
        "{}",
        run.stdout
    );
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert_eq!(world.leases().len(), 1);
}

fn a_vcenter_65_with_only_rest_works_with_api_auto() {
    let world = World::with(crate::support::Generation::Rest65);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let lines: Vec<String> = world.vcenter.requests().iter().map(|r| r.line()).collect();
    assert_eq!(
        lines,
        [
            "POST /api/session",
            "POST /rest/com/vmware/cis/session",
            "GET /rest/vcenter/vm?filter.names=web01",
            "DELETE /rest/com/vmware/cis/session"
        ]
    );
}

fn vcenter_sessions_are_closed_on_failure_too(world: World) {
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("nosuchvm dup"));
    let run = lock(&world, T2); // `lock` asserts no session is left open
    assert_eq!(run.code, 65);
    world.nsx.fail_changes(Some(500));
    world.helpdesk.update(T2.0, |t| t.vm_field = json!("web01"));
    assert_eq!(event(&world, T2).code, 69);
    assert_eq!(world.vcenter.sessions_created(), 2);
    assert_eq!(world.vcenter.open_sessions(), 0);
}

fn the_help_desk_session_is_kept_between_runs_and_renewed_when_it_expires() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    let logins = |world: &World| {
        world
            .helpdesk
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/Session"))
            .count()
    };
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(unlock(&world, T2).code, 0);
    assert_eq!(logins(&world), 1, "the second run reused the session");
    let kept = world.state_dir().join("otrs.session");
    // The group's (the help desk's users share it), nobody else's.
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o660
    );

    world.helpdesk.expire_sessions();
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(logins(&world), 2, "an expired session is replaced once");
    assert_eq!(world.tagged(), set(&["vm-42"]));
}

fn the_journal_names_who_opened_and_who_closed_never_an_owner_the_help_desk_set(world: World) {
    // OTOBO's Ticket::OwnerResetOnUnlock: the unlocked ticket belongs to root@localhost.
    world.helpdesk.owner_reset_on_unlock(true);
    assert_eq!(lock(&world, T2).code, 0);
    // The unlock timeout, by the help desk's daemon (user ID 1).
    world.helpdesk.set_lock_by(T2.0, "unlock", 1);
    assert_eq!(event(&world, T2).code, 0);
    assert_eq!(world.helpdesk.ticket(T2.0).owner, "root@localhost");
    let journal = world.journal();
    let grant = journal.iter().find(|e| e["action"] == "grant").unwrap();
    assert_eq!(grant["actor"], "helpdesk:agent1 (user-id 2)");
    let revoke = journal.iter().find(|e| e["action"] == "revoke").unwrap();
    assert_eq!(revoke["actor"], "helpdesk:system (user-id 1)", "{revoke}");
    assert_eq!(
        revoke["opened_by"],
        json!(["helpdesk:agent1 (user-id 2)"]),
        "{revoke}"
    );
    assert!(
        !world
            .journal()
            .iter()
            .any(|e| e["actor"] == "helpdesk:root@localhost")
    );
    // One agent, one name: agent1 locks and unlocks, with the owner kept (OTRS, Znuny) and
    // with it reset to root@localhost (OTOBO): the unlock names agent1 as the lock did.
    for reset in [false, true] {
        world.helpdesk.owner_reset_on_unlock(false);
        world.helpdesk.update(T2.0, |t| t.owner = "agent1".into());
        assert_eq!(lock(&world, T2).code, 0);
        world.helpdesk.owner_reset_on_unlock(reset);
        assert_eq!(unlock(&world, T2).code, 0);
        let journal = world.journal();
        let revoke = journal.iter().rfind(|e| e["action"] == "revoke").unwrap();
        assert_eq!(
            revoke["actor"], "helpdesk:agent1 (user-id 2)",
            "reset {reset}: {revoke}"
        );
        let grant = journal.iter().rfind(|e| e["action"] == "grant").unwrap();
        assert_eq!(grant["actor"], revoke["actor"], "reset {reset}");
    }
    // Another agent (user ID 3) unlocks agent1's ticket: only its ID is known.
    world.helpdesk.owner_reset_on_unlock(false);
    assert_eq!(lock(&world, T2).code, 0);
    world.helpdesk.set_lock_by(T2.0, "unlock", 3);
    assert_eq!(event(&world, T2).code, 0);
    let journal = world.journal();
    let revoke = journal.iter().rfind(|e| e["action"] == "revoke").unwrap();
    assert_eq!(revoke["actor"], "helpdesk:user-id 3", "{revoke}");
    // A web service without TicketHistoryGet: the closer is unknown, and closing still works.
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    world.helpdesk.set_lock(T2.0, "unlock");
    world.helpdesk.hide_history(true);
    let history_asked = || {
        world
            .helpdesk
            .requests()
            .iter()
            .filter(|r| r.path.contains("/TicketHistory/"))
            .count()
    };
    let before = history_asked();
    let started = std::time::Instant::now();
    let run = event(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    // The route is missing for good (recording otrs6/33): asked once, never retried, said once.
    assert_eq!(
        history_asked() - before,
        1,
        "TicketHistoryGet is not retried"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "no back-off: {:?}",
        started.elapsed()
    );
    assert_eq!(
        run.stderr.matches("no TicketHistoryGet route").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("who unlocked ticket ID 2 is not known")
            && run.stderr.contains("journaled as helpdesk:unknown"),
        "{}",
        run.stderr
    );
    let revoke = world
        .journal()
        .into_iter()
        .find(|e| e["action"] == "revoke")
        .unwrap();
    assert_eq!(revoke["actor"], "helpdesk:unknown");
    assert!(world.tagged().is_empty());
}

fn nsx_v_s_tag_id_is_remembered_and_looked_up_again_when_nsx_no_longer_knows_it(world: World) {
    let memory = world.state_dir().join("nsx-v.tag");
    assert_eq!(lock(&world, T2).code, 0);
    let remembered = std::fs::read_to_string(&memory).unwrap();
    assert!(remembered.ends_with("securitytag-12\n"), "{remembered}");
    assert_eq!(unlock(&world, T2).code, 0);
    // The next events do not list the tags again.
    world.nsx.server.clear_log();
    assert_eq!(lock(&world, T2).code, 0);
    let listed = |world: &World| {
        world
            .nsx
            .requests()
            .iter()
            .filter(|r| r.path == "/api/2.0/services/securitytags/tag")
            .count()
    };
    assert_eq!(listed(&world), 0);
    assert_eq!(unlock(&world, T2).code, 0);
    // A tag made again has another id: the remembered one is answered 404, looked up anew.
    std::fs::write(
        &memory,
        remembered.replace("securitytag-12", "securitytag-99"),
    )
    .unwrap();
    world.nsx.server.clear_log();
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert!(listed(&world) > 0);
    assert!(
        std::fs::read_to_string(&memory)
            .unwrap()
            .ends_with("securitytag-12\n")
    );
    // Another tag's id in the file (written by hand): an event is misled, but reconcile looks
    // the tag up by name, closes what the event could not, and remembers the right id.
    std::fs::write(
        &memory,
        remembered.replace("securitytag-12", "securitytag-5"),
    )
    .unwrap();
    assert_eq!(unlock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]), "the event was misled");
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    let text = std::fs::read_to_string(&memory).unwrap();
    assert!(text.ends_with("securitytag-12\n"), "{text}");
}

crate::tests! {
    a_vcenter_65_with_only_rest_works_with_api_auto,
    the_help_desk_session_is_kept_between_runs_and_renewed_when_it_expires,
    ; on_both_backends:
    lock_attaches_the_tag_and_unlock_detaches_it,
    the_help_desk_reads_the_ticket_through_a_session_and_its_fields,
    a_duplicate_lock_event_attaches_once,
    two_tickets_on_one_vm_keep_it_open_until_both_unlock,
    unlock_closes_what_the_ticket_opened_even_if_the_field_was_edited,
    a_relock_after_the_field_changed_follows_the_field,
    several_vms_in_one_field,
    a_multiselect_field_names_vms_with_spaces,
    an_empty_field_is_nothing_to_do,
    an_unknown_vm_is_refused_with_exit_65,
    one_unknown_vm_among_several_opens_the_others_and_exits_1,
    an_ambiguous_vm_name_is_refused_and_lists_the_candidates,
    a_ticket_number_that_does_not_match_the_id_is_refused,
    the_ticket_subcommand_works_with_and_without_the_number,
    a_tmp_lock_counts_as_unlocked,
    a_tmp_lock_is_attributed_to_its_user_not_an_older_unlock,
    a_dispatchers_lock_is_attributed_to_the_dispatcher,
    help_desk_credentials_refused_exit_77,
    a_ticket_the_api_user_cannot_read_exits_65,
    nsx_failing_to_attach_leaves_no_lease_and_exits_69,
    a_failed_detach_is_kept_and_retried_by_the_next_run,
    dry_run_changes_nothing,
    vcenter_sessions_are_closed_on_failure_too,
    the_journal_names_who_opened_and_who_closed_never_an_owner_the_help_desk_set,
    nsx_v_s_tag_id_is_remembered_and_looked_up_again_when_nsx_no_longer_knows_it,
}
