//! policy.allow / policy.deny: which VMs a ticket or a grant may open.

use serde_json::json;

use crate::support::{T2, World, set};
use crate::{lock, otnsx, unlock};

fn with_policy(world: &World, allow: &str, deny: &str) {
    let text = world
        .config_text()
        .replace("allow = [\"*\"]", &format!("allow = {allow}"))
        .replace("deny = [\"vc*\", \"nsx*\"]", &format!("deny = {deny}"));
    world.write_config(&text);
}

fn a_denied_vm_is_refused_journaled_noted_and_never_attached() {
    let world = World::new();
    with_policy(&world, "[\"*\"]", "[\"web*\"]");
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr
            .contains("VM \"web01\" is not allowed by policy (policy.deny \"web*\")"),
        "{}",
        run.stderr
    );
    crate::nothing_looked_up_or_changed(&world);
    let entry = &world.journal()[0];
    assert_eq!(
        (entry["action"].as_str(), entry["vm"].as_str()),
        (Some("refused"), Some("web01"))
    );
    let note = world.helpdesk.ticket(T2.0).articles[0].clone();
    assert!(
        note["Body"]
            .as_str()
            .unwrap()
            .contains("web01 was not opened: VM \"web01\" is not allowed by policy"),
        "{note}"
    );
}

fn patterns_are_case_insensitive_globs_and_deny_wins() {
    let world = World::new();
    with_policy(&world, "[\"WEB??\", \"db*\"]", "[\"db01\"]");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01 db01 app01"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert!(
        run.stdout
            .contains("db01: VM \"db01\" is not allowed by policy (policy.deny \"db01\")"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "app01: VM \"app01\" is not allowed by policy (no policy.allow pattern matches)"
        ),
        "{}",
        run.stdout
    );
}

fn without_an_allow_list_nothing_opens() {
    let world = World::new();
    world.write_config(&world.config_text().replace("allow = [\"*\"]\n", ""));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr
            .contains("policy.allow is empty, so no VM may be opened"),
        "{}",
        run.stderr
    );
    let run = otnsx(&world, &["check"]);
    assert!(
        run.stdout.contains("! policy: policy.allow is empty"),
        "{}",
        run.stdout
    );
}

fn closing_is_never_refused_and_reconcile_drops_what_policy_no_longer_allows() {
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(otnsx(&world, &["grant", "--vm", "db01"]).code, 0);
    with_policy(&world, "[\"*\"]", "[\"web*\", \"db*\"]");
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("(policy no longer allows it)"),
        "{}",
        run.stdout
    );
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    // Unlocking and revoking still work on denied VMs.
    world.nsx.attach_by_hand(crate::support::TAG_ID, "vm-42");
    assert_eq!(otnsx(&world, &["revoke", "--vm", "web01"]).code, 0);
    assert_eq!(world.tagged(), set(&[]));
    assert_eq!(unlock(&world, T2).code, 0);
}

fn check_warns_when_everything_is_allowed() {
    let world = World::new();
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("! policy: policy.allow = [\"*\"] lets a ticket open any VM"),
        "{}",
        run.stdout
    );
}

crate::tests! {
    a_denied_vm_is_refused_journaled_noted_and_never_attached,
    patterns_are_case_insensitive_globs_and_deny_wins,
    without_an_allow_list_nothing_opens,
    closing_is_never_refused_and_reconcile_drops_what_policy_no_longer_allows,
    check_warns_when_everything_is_allowed,
}
