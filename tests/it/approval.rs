//! Only approved work opens access: conditions on the ticket (`[policy.require]` for every
//! ticket, `[profiles.NAME.require]` for one profile), checked when the ticket is locked and
//! again by reconcile while access is open.

use serde_json::json;

use crate::support::nsxt::TAGGER;
use crate::support::{T2, World, set};
use crate::{lock, otnsx, unlock};

/// The Policy backend, `[nsx] tag` as profile `default`, and profile db-admin, with
/// `conditions` appended (sections `[policy.require]`, `[profiles.db-admin.require]`).
fn world_with(conditions: &str) -> World {
    let world = World::new();
    let text = world.config_text_policy(TAGGER, "", false);
    world.write_config(&format!(
        "{text}\n[profiles.db-admin]\ntag = \"maintenance-dba\"\n{conditions}"
    ));
    world
}

const THE_EXAMPLE: &str = "
[policy.require]
queue = [\"Maintenance\", \"Change::*\"]

[profiles.db-admin.require]
type = [\"Change\"]
state = [\"approved\", \"in progress\"]
dynamic_field.ChangeApproval = [\"approved\"]
responsible_differs = true
";

fn carrying(world: &World, tag: &str) -> std::collections::BTreeSet<String> {
    world.nsxt.carrying("otnsx", tag).into_iter().collect()
}

/// The notes otnsx added to ticket 2, in order.
fn notes(world: &World) -> Vec<String> {
    world
        .helpdesk
        .ticket(T2.0)
        .articles
        .iter()
        .map(|a| a["Body"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A change ticket that meets the example's conditions for db-admin, locked by agent1.
fn approved_change(world: &World, field: &str) {
    let facts = [
        ("Queue", "Change::Database"),
        ("Type", "Change"),
        ("State", "approved"),
        ("Responsible", "agent2"),
    ];
    for (key, value) in facts {
        world.helpdesk.set_fact(T2.0, key, value);
    }
    world
        .helpdesk
        .set_field(T2.0, "ChangeApproval", json!("approved"));
    world.helpdesk.update(T2.0, |t| t.vm_field = json!(field));
}

fn an_incident_cannot_open_db_admin_an_approved_change_can_and_withdrawing_closes_it() {
    let world = world_with(THE_EXAMPLE);
    approved_change(&world, "db01:db-admin");
    world.helpdesk.set_fact(T2.0, "Type", "Incident");
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(carrying(&world, "maintenance-dba").is_empty());
    let why = "ticket type is Incident, db-admin needs Change";
    assert!(
        run.stderr.contains(&format!("db01: {why}")),
        "{}",
        run.stderr
    );
    let said = format!("db01 was not opened: {why}");
    assert!(notes(&world).iter().any(|n| n.contains(&said)), "{:?}", notes(&world));
    let refused = world
        .journal()
        .into_iter()
        .find(|e| e["action"] == "refused")
        .expect("the refusal is journaled");
    assert!(
        refused["detail"].as_str().unwrap().contains("ticket type is Incident, db-admin needs Change"),
        "{refused}"
    );

    // The same ticket as an approved change: opened.
    world.helpdesk.set_fact(T2.0, "Type", "Change");
    unlock(&world, T2);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(carrying(&world, "maintenance-dba"), set(&["db01"]));

    // A reconcile while it still meets them changes nothing.
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(carrying(&world, "maintenance-dba"), set(&["db01"]));

    // The approval is withdrawn while it is open: the next reconcile closes it, and says why.
    world
        .helpdesk
        .set_field(T2.0, "ChangeApproval", json!("withdrawn"));
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(carrying(&world, "maintenance-dba").is_empty(), "{run:?}");
    assert!(world.leases().is_empty());
    let why = "field ChangeApproval is withdrawn, db-admin needs approved";
    let last = notes(&world).last().cloned().unwrap_or_default();
    assert!(last.contains(why), "{last}");
    let warned = world
        .journal()
        .into_iter()
        .any(|e| e["action"] == "warning" && e["detail"].as_str().unwrap_or("").contains(why));
    assert!(warned, "the reason is journaled");
    // The ticket is still locked: nothing reopens it at the next reconcile.
    assert_eq!(otnsx(&world, &["reconcile"]).code, 0);
    assert!(carrying(&world, "maintenance-dba").is_empty());
}

fn four_eyes_need_a_responsible_other_than_the_agent_who_locks() {
    let world = world_with(THE_EXAMPLE);
    approved_change(&world, "db01:db-admin");
    for (responsible, said) in [
        ("agent1", "its Responsible is agent1, who holds the lock"),
        ("root@localhost", "the ticket has no Responsible"),
    ] {
        world.helpdesk.set_fact(T2.0, "Responsible", responsible);
        let run = lock(&world, T2);
        assert_eq!(run.code, 77, "{responsible}: {run:?}");
        assert!(run.stderr.contains(said), "{}", run.stderr);
        assert!(carrying(&world, "maintenance-dba").is_empty());
        unlock(&world, T2);
    }
    world.helpdesk.set_fact(T2.0, "Responsible", "agent2");
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(carrying(&world, "maintenance-dba"), set(&["db01"]));
}

fn a_profile_mix_opens_what_passes() {
    let world = world_with(THE_EXAMPLE);
    approved_change(&world, "web01, db01:db-admin");
    world.helpdesk.set_fact(T2.0, "State", "new");
    let run = lock(&world, T2);
    assert_eq!(run.code, 1, "one opened, one refused: {run:?}");
    assert_eq!(carrying(&world, "maintenance"), set(&["web01"]));
    assert!(carrying(&world, "maintenance-dba").is_empty());
    let said = "db01 was not opened: ticket state is new, db-admin needs approved or in progress";
    assert!(notes(&world).iter().any(|n| n.contains(said)), "{:?}", notes(&world));
    // Every ticket's own condition fails: nothing opens, for any profile.
    world.helpdesk.set_fact(T2.0, "Queue", "Raw");
    world.helpdesk.set_fact(T2.0, "State", "approved");
    unlock(&world, T2);
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr.contains(
            "web01: ticket queue is Raw, every ticket needs Maintenance or Change::*"
        ),
        "{}",
        run.stderr
    );
    assert!(carrying(&world, "maintenance").is_empty());
    // A manual grant is not a ticket: [policy] alone governs it.
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
}

fn each_key_is_checked_against_the_tickets_value() {
    for (key, fact, matching, other) in [
        ("queue", "Queue", "Change::Database", "Raw"),
        ("type", "Type", "Change", "Incident"),
        ("state", "State", "approved", "new"),
        ("priority", "Priority", "2 low", "3 normal"),
        ("service", "Service", "Database", "Mail"),
        ("sla", "SLA", "Gold", "Silver"),
        ("customer_id", "CustomerID", "acme", "globex"),
    ] {
        let world = world_with(&format!(
            "[profiles.db-admin.require]\n{key} = [\"{}\"]\n",
            matching.to_uppercase()
        ));
        world.helpdesk.update(T2.0, |t| t.vm_field = json!("db01:db-admin"));
        world.helpdesk.set_fact(T2.0, fact, other);
        let run = lock(&world, T2);
        assert_eq!(run.code, 77, "{key}: {run:?}");
        assert!(run.stderr.contains(&format!("is {other}, db-admin needs")), "{key}: {}", run.stderr);
        world.helpdesk.set_fact(T2.0, fact, matching);
        unlock(&world, T2);
        let run = lock(&world, T2);
        assert_eq!(run.code, 0, "{key}: {run:?}");
        assert_eq!(carrying(&world, "maintenance-dba"), set(&["db01"]), "{key}");
    }
    // A ticket without a service (TicketGet gives no Service key then) does not meet one.
    let world = world_with("[profiles.db-admin.require]\nservice = [\"*\"]\n");
    world.helpdesk.update(T2.0, |t| t.vm_field = json!("db01:db-admin"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stderr.contains("ticket service is not set"), "{}", run.stderr);
}

fn a_multiselect_field_matches_when_any_value_does() {
    let world = world_with("[profiles.db-admin.require]\ndynamic_field.Teams = [\"dba\"]\n");
    world.helpdesk.update(T2.0, |t| t.vm_field = json!("db01:db-admin"));
    world.helpdesk.set_field(T2.0, "Teams", json!(["ops"]));
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stderr.contains("field Teams is ops, db-admin needs dba"), "{}", run.stderr);
    // A value with control characters is said escaped.
    world.helpdesk.set_field(T2.0, "Teams", json!(["o\u{1b}[2Jps"]));
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stderr.contains("field Teams is o\\u{1b}[2Jps"), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
    let note = notes(&world).last().cloned().unwrap_or_default();
    assert!(!note.contains('\u{1b}'), "{note}");
    world.helpdesk.set_field(T2.0, "Teams", json!(["ops", "DBA"]));
    unlock(&world, T2);
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(carrying(&world, "maintenance-dba"), set(&["db01"]));
}

fn conditions_are_checked_and_shown_by_check() {
    for (bad, says) in [
        ("[policy.require]\nowner = [\"x\"]\n", "unknown field `owner`"),
        ("[policy.require]\nqueue = []\n", "policy.require.queue: 1 to 64 patterns"),
        (
            "[profiles.db-admin.require]\ndynamic_field.\"Change Approval\" = [\"x\"]\n",
            "is not a dynamic field's name",
        ),
        ("[policy.require]\ntype = [\"\"]\n", "policy.require.type"),
    ] {
        let world = world_with(bad);
        let run = lock(&world, T2);
        assert_eq!(run.code, 78, "{bad}: {run:?}");
        assert!(run.stderr.contains(says), "{bad}: {}", run.stderr);
    }
    let world = world_with(THE_EXAMPLE);
    approved_change(&world, "db01:db-admin");
    let run = otnsx(&world, &["check", "--ticket", "2"]);
    assert!(
        run.stdout.contains(
            "conditions: a ticket opens access only when every ticket: ticket queue is Maintenance or Change::*; profile db-admin: ticket type is Change, ticket state is approved or in progress, field ChangeApproval is approved, its Responsible is an agent other than the one who locks it"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("conditions on ticket 2026112310000011: locked by its owner agent1, it meets them for default, db-admin"),
        "{}",
        run.stdout
    );
    world.helpdesk.set_fact(T2.0, "State", "new");
    let run = otnsx(&world, &["check", "--ticket", "2"]);
    assert!(
        run.stdout.contains("it meets them for default; not db-admin: ticket state is new, db-admin needs approved or in progress"),
        "{}",
        run.stdout
    );
}

crate::tests! {
    an_incident_cannot_open_db_admin_an_approved_change_can_and_withdrawing_closes_it,
    four_eyes_need_a_responsible_other_than_the_agent_who_locks,
    a_profile_mix_opens_what_passes,
    each_key_is_checked_against_the_tickets_value,
    a_multiselect_field_matches_when_any_value_does,
    conditions_are_checked_and_shown_by_check,
}
