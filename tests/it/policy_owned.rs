//! otnsx's security policy holds exactly what its leases say (per-agent rules): every rule is
//! compared whole with its lease and put back when edited, an ALLOW rule no lease explains is
//! journaled whole and removed by `reconcile` and `revoke --all`, a DROP/REJECT rule is left
//! and reported by `check`; rules are applied to their VM's group (or the policy's Applied-To)
//! and written with their group in one hierarchical write; a group left behind goes at the next
//! reconcile.

use serde_json::{Value, json};

use crate::it::agent_rules::{POLICY, agent_world, rule_ids, rules, web01};
use crate::support::T2;
use crate::{lock, otnsx, unlock};

crate::tests! {
    a_site_allow_rule_is_journaled_whole_and_removed_and_a_drop_rule_left,
    revoke_all_leaves_no_allow_rule_in_the_policy,
    every_hand_edit_of_a_held_rule_is_put_back,
    a_rule_is_applied_to_its_vms_group_unless_the_policy_has_its_own,
    a_group_left_behind_by_a_close_goes_at_the_next_reconcile,
    a_write_answered_as_changed_meanwhile_is_read_again_and_decided_again,
}

/// A hand edit of a rule.
type Edit = Box<dyn Fn(&mut Value)>;

const GROUPS: &str = "/infra/domains/default/groups";

/// A rule as the site would add it: from anywhere, SSH to anything.
fn site_allow() -> Value {
    json!({"resource_type": "Rule", "display_name": "temporary: vendor access", "action": "ALLOW",
           "source_groups": ["ANY"], "destination_groups": ["ANY"], "services": ["/infra/services/SSH"],
           "scope": ["ANY"], "direction": "IN_OUT"})
}

fn site_drop() -> Value {
    json!({"resource_type": "Rule", "action": "DROP", "source_groups": ["ANY"],
           "destination_groups": ["ANY"], "services": ["ANY"]})
}

/// A rule without what NSX keeps itself, to compare what it opens.
fn content(rule: &Value) -> Value {
    let mut rule = rule.clone();
    if let Some(fields) = rule.as_object_mut() {
        fields.retain(|k, _| !k.starts_with('_') && k != "path");
    }
    rule
}

fn locked_web01(world: &crate::support::World) -> Value {
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    let run = lock(world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    rules(world)[0].clone()
}

fn a_site_allow_rule_is_journaled_whole_and_removed_and_a_drop_rule_left() {
    let world = agent_world("");
    let ours = locked_web01(&world);
    world.nsxt.add_rule("default", POLICY, "vendor", site_allow());
    world.nsxt.add_rule("default", POLICY, "site-drop", site_drop());
    // check names both: the ALLOW rule fails it, the DROP rule is a warning.
    let check = otnsx(&world, &["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stdout.contains("rule vendor (ALLOW ANY to ANY, services /infra/services/SSH)")
            && check.stdout.contains("no lease explains it"),
        "{check:?}"
    );
    assert!(check.stdout.contains("rule site-drop (DROP"), "{check:?}");
    // A dry run says what it would do and does nothing.
    let dry = otnsx(&world, &["--dry-run", "reconcile"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("would remove rule vendor"), "{dry:?}");
    assert_eq!(rule_ids(&world).len(), 3);
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("removed rule vendor"), "{run:?}");
    assert!(run.stdout.contains("left rule site-drop"), "{run:?}");
    let mut left = rule_ids(&world);
    left.sort();
    let mut want = vec![ours["id"].as_str().unwrap().to_string(), "site-drop".into()];
    want.sort();
    assert_eq!(left, want, "the lease's rule and the DROP rule stay");
    assert_eq!(content(&rules(&world).into_iter().find(|r| r["id"] == ours["id"]).unwrap()), content(&ours));
    // Journaled whole before it went: the record holds what NSX held.
    let journal = world.journal();
    let before = journal
        .iter()
        .position(|e| e["action"] == "warning" && e["detail"].as_str().unwrap().contains("removing rule vendor"))
        .expect("the rule's content, journaled first");
    let detail = journal[before]["detail"].as_str().unwrap();
    let held: Value = serde_json::from_str(detail.split("as NSX held it: ").nth(1).unwrap()).unwrap();
    assert_eq!(held["source_groups"], json!(["ANY"]));
    assert_eq!(held["display_name"], "temporary: vendor access");
    let removed = journal
        .iter()
        .position(|e| e["action"] == "revoke" && e["detail"].as_str().unwrap().starts_with("removed rule vendor"))
        .expect("the removal");
    assert!(before < removed);
    assert_eq!(journal[removed]["result"], "ok");
    // Nothing left to say, but the DROP rule.
    let again = otnsx(&world, &["reconcile"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(!again.stdout.contains("removed"), "{again:?}");
}

fn revoke_all_leaves_no_allow_rule_in_the_policy() {
    let world = agent_world("");
    let ours = locked_web01(&world);
    let id = ours["id"].as_str().unwrap().to_string();
    world.nsxt.add_rule("default", POLICY, "vendor", site_allow());
    world.nsxt.add_rule("default", POLICY, "site-drop", site_drop());
    // otnsx's own rule with its tags edited: it no longer says whose it is.
    world.nsxt.edit_rule("default", POLICY, &id, |r| {
        r["tags"] = json!([{"scope": "owner", "tag": "someone"}])
    });
    let run = otnsx(&world, &["revoke", "--all"]);
    assert_eq!(run.code, 0, "{run:?}");
    let allow: Vec<Value> = rules(&world)
        .into_iter()
        .filter(|r| r["action"] != "DROP" && r["action"] != "REJECT")
        .collect();
    assert!(allow.is_empty(), "no ALLOW rule is left: {allow:?}");
    assert_eq!(rule_ids(&world), ["site-drop"]);
    assert!(!run.stdout.contains("already closed"), "{run:?}");
    assert!(world.leases().is_empty());
}

fn every_hand_edit_of_a_held_rule_is_put_back() {
    let world = agent_world("");
    let ours = locked_web01(&world);
    let id = ours["id"].as_str().unwrap().to_string();
    world.nsxt.add_group("default", "site-web", json!([{"resource_type": "ExternalIDExpression",
        "member_type": "VirtualMachine", "external_ids": ["5012aaaa-0000-0000-0000-000000000099"]}]));
    let edits: Vec<(&str, Edit)> = vec![
        ("a service entry for every TCP port", Box::new(|r: &mut Value| {
            r["service_entries"] = json!([{"resource_type": "L4PortSetServiceEntry", "id": "all-tcp",
                "l4_protocol": "TCP", "destination_ports": ["1-65535"]}])
        })),
        ("its VM group widened", Box::new(|r: &mut Value| {
            r["destination_groups"].as_array_mut().unwrap().push(json!(format!("{GROUPS}/site-web")))
        })),
        ("applied to the whole firewall", Box::new(|r: &mut Value| r["scope"] = json!(["ANY"]))),
        ("its tags changed", Box::new(|r: &mut Value| {
            r["tags"] = json!([{"scope": "otnsx-vm", "tag": "db01"}])
        })),
        ("disabled", Box::new(|r: &mut Value| r["disabled"] = json!(true))),
        ("sources negated", Box::new(|r: &mut Value| r["sources_excluded"] = json!(true))),
        ("a context profile", Box::new(|r: &mut Value| r["profiles"] = json!(["/infra/context-profiles/SSL"]))),
        ("one direction only", Box::new(|r: &mut Value| r["direction"] = json!("OUT"))),
    ];
    for (what, edit) in edits {
        world.nsxt.edit_rule("default", POLICY, &id, |r| edit(r));
        let run = otnsx(&world, &["reconcile"]);
        assert_eq!(run.code, 0, "{what}: {run:?}");
        let now = rules(&world);
        assert_eq!(now.len(), 1, "{what}: {now:?}");
        assert_eq!(content(&now[0]), content(&ours), "{what}: put back as otnsx wrote it");
        assert_eq!(world.leases().len(), 1, "{what}: the lease holds");
    }
}

fn a_rule_is_applied_to_its_vms_group_unless_the_policy_has_its_own() {
    let world = agent_world("");
    let ours = locked_web01(&world);
    let group = format!("{GROUPS}/otnsx-vm-{}", web01());
    assert_eq!(ours["scope"], json!([group]), "applied to the VM's group only");
    // The rule and its group in one hierarchical write: no group or rule written alone.
    assert_eq!(world.nsxt.hierarchy_writes(), 1);
    let alone = world
        .nsxt
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.path != "/policy/api/v1/infra" && !r.path.contains("/session/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect::<Vec<_>>();
    assert!(alone.is_empty(), "{alone:?}");
    assert!(unlock(&world, T2).code == 0);
    assert!(rules(&world).is_empty());

    // A site that gave the policy an Applied-To of its own: NSX applies that one; otnsx's
    // write leaves it as it was.
    let world = agent_world("");
    world.nsxt.add_group("default", "admin-targets", json!([{"resource_type": "ExternalIDExpression",
        "member_type": "VirtualMachine", "external_ids": ["5012aaaa-0000-0000-0000-000000000099"]}]));
    world.nsxt.set_policy_scope("default", POLICY, &[&format!("{GROUPS}/admin-targets")]);
    let ours = locked_web01(&world);
    assert_eq!(ours["scope"], json!(["ANY"]));
    let check = otnsx(&world, &["check"]);
    assert!(check.stdout.contains("the policy's own Applied-To"), "{check:?}");
    let policy = world
        .nsxt
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "PATCH" && r.path == "/policy/api/v1/infra")
        .unwrap();
    let sent: Value = serde_json::from_slice(&policy.body).unwrap();
    let children = &sent["children"][0]["children"];
    let security_policy = children
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["resource_type"] == "ChildSecurityPolicy")
        .unwrap();
    assert_eq!(
        security_policy["SecurityPolicy"]["scope"],
        json!([format!("{GROUPS}/admin-targets")]),
        "the policy goes back as it was read"
    );
    assert_eq!(security_policy["SecurityPolicy"]["sequence_number"], 10);
}

fn a_group_left_behind_by_a_close_goes_at_the_next_reconcile() {
    let world = agent_world("");
    locked_web01(&world);
    let group = format!("otnsx-vm-{}", web01());
    // NSX refuses the group's deletion while the rule's is not yet realized.
    world.nsxt.slow_realization(true);
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(rules(&world).is_empty());
    assert_eq!(world.nsxt.group_ids("default"), std::slice::from_ref(&group));
    let check = otnsx(&world, &["check"]);
    assert!(check.stdout.contains(&format!("group {group} (no rule uses it)")), "{check:?}");
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(world.nsxt.group_ids("default").is_empty(), "{run:?}");
    assert!(world.journal().iter().any(|e| e["action"] == "revoke"
        && e["detail"].as_str().unwrap().starts_with(&format!("removed group {group}"))));
    // A group the site made is never touched.
    world.nsxt.add_group("default", "site-web", json!([{"resource_type": "ExternalIDExpression",
        "member_type": "VirtualMachine", "external_ids": ["5012aaaa-0000-0000-0000-000000000099"]}]));
    assert_eq!(otnsx(&world, &["reconcile"]).code, 0);
    assert_eq!(world.nsxt.group_ids("default"), ["site-web"]);
}

fn a_write_answered_as_changed_meanwhile_is_read_again_and_decided_again() {
    // 409, 412, 400 with 500087, then accepted.
    let world = agent_world("");
    world.nsxt.rule_conflicts(3);
    let ours = locked_web01(&world);
    assert_eq!(ours["action"], "ALLOW");
    assert_eq!(world.nsxt.hierarchy_writes(), 4);
    // Answered so every time: nothing opened, exit 75.
    let world = agent_world("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    world.nsxt.rule_conflicts(10);
    let run = lock(&world, T2);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(run.stderr.contains("kept changing"), "{run:?}");
    assert!(rules(&world).is_empty());
    // What the failed opening may have left is for the next reconcile to close: never active.
    let leases = world.leases();
    assert!(leases.iter().all(|l| l["state"] == "detach_failed"), "{leases:?}");
    world.nsxt.rule_conflicts(0);
    assert_eq!(otnsx(&world, &["reconcile"]).code, 0);
    assert!(world.leases().is_empty());
    assert!(rules(&world).is_empty());
}
