//! Per-agent rules (`[source] mode = "agent"`): a ticket locked by agent1 for `web01:ssh` opens
//! exactly SSH to web01 from agent1's desktop, through one firewall rule in the site's security
//! policy, and unlocking closes exactly that.

use serde_json::{Value, json};

use crate::support::nsxt::FIREWALLER;
use crate::support::{T2, T3, World, uuids};
use crate::{lock, otnsx, unlock};

pub(crate) const POLICY: &str = "otnsx-jit";

pub(crate) fn agent_world(extra_source: &str) -> World {
    for_agents(
        World::new(),
        extra_source,
        "agent1 = [\"10.1.2.3/32\"]\nagent2 = [\"10.1.2.4\", \"fd00::4\"]",
    )
}

/// `world` set up for per-agent rules: the security policy `otnsx-jit`, the `ssh` profile,
/// `[source]` (with `extra_source`) and `agents`, the lines of `[agents]`.
pub(crate) fn for_agents(world: World, extra_source: &str, agents: &str) -> World {
    world.nsxt.add_security_policy("default", POLICY, false);
    let text = world.config_text_policy(FIREWALLER, "", false);
    world.write_config(&format!(
        "{text}
[profiles.ssh]
tag = \"maintenance-ssh\"
services = [\"/infra/services/SSH\"]

[source]
mode = \"agent\"
security_policy = \"{POLICY}\"
services = [\"/infra/services/RDP\"]
{extra_source}

[agents]
{agents}
"
    ));
    world
}

pub(crate) fn rules(world: &World) -> Vec<Value> {
    world.nsxt.rules("default", POLICY)
}

/// The ids of the rules in the security policy.
pub(crate) fn rule_ids(world: &World) -> Vec<String> {
    rules(world)
        .iter()
        .map(|r| r["id"].as_str().unwrap_or("").to_string())
        .collect()
}

pub(crate) fn web01() -> String {
    uuids("vm-42").0
}

fn agent1_gets_exactly_ssh_to_web01_from_their_desktop_and_unlock_takes_it_away() {
    let world = agent_world("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let all = rules(&world);
    assert_eq!(all.len(), 1, "{all:?}");
    let rule = &all[0];
    assert_eq!(rule["source_groups"], json!(["10.1.2.3/32"]));
    assert_eq!(rule["services"], json!(["/infra/services/SSH"]));
    assert_eq!(rule["action"], "ALLOW");
    let group = format!("otnsx-vm-{}", web01());
    assert_eq!(
        rule["destination_groups"],
        json!([format!("/infra/domains/default/groups/{group}")])
    );
    assert_eq!(
        world.nsxt.group_ids("default"),
        std::slice::from_ref(&group)
    );
    // No tag: the rule is the opening.
    assert_eq!(world.nsxt.tags(&web01()), ["backup|daily", "owner|"]);
    assert!(world.nsxt.operations().is_empty());
    let lease = &world.leases()[0];
    assert_eq!(
        (lease["profile"].as_str(), lease["agent"].as_str()),
        (Some("ssh"), Some("agent1"))
    );
    let note = world
        .journal()
        .into_iter()
        .find(|e| e["action"] == "note")
        .unwrap();
    assert!(
        note["detail"]
            .as_str()
            .unwrap()
            .contains("Access to web01 (profile ssh, from agent1's desktop only) is open until"),
        "{note}"
    );

    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(rules(&world).is_empty());
    assert!(
        world.nsxt.group_ids("default").is_empty(),
        "the VM's group went with its rule"
    );
    assert!(world.leases().is_empty());
}

fn two_admins_on_one_vm_get_two_rules_each_closed_by_its_own_ticket() {
    let world = agent_world("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    world.helpdesk.add_ticket(T3.0, T3.1, json!("web01:ssh"));
    world.helpdesk.update(T3.0, |t| t.owner = "agent2".into());
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(lock(&world, T3).code, 0);
    let sources: Vec<Value> = rules(&world)
        .iter()
        .map(|r| r["source_groups"].clone())
        .collect();
    assert_eq!(sources.len(), 2);
    assert!(
        sources.contains(&json!(["10.1.2.4", "fd00::4"])),
        "{sources:?}"
    );
    assert_eq!(unlock(&world, T2).code, 0);
    let left = rules(&world);
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0]["source_groups"],
        json!(["10.1.2.4", "fd00::4"]),
        "agent2's stays"
    );
    assert_eq!(unlock(&world, T3).code, 0);
    assert!(rules(&world).is_empty());
}

fn an_agent_without_a_desktop_gets_nothing_and_is_told() {
    let world = agent_world("");
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01");
        t.owner = "agent9".into();
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr
            .contains("agent \"agent9\" has no desktop in [agents]"),
        "{}",
        run.stderr
    );
    assert!(rules(&world).is_empty());
    assert!(world.leases().is_empty());
    crate::refused_and_noted(&world, "agent9");
}

fn a_rule_edited_by_hand_is_put_back_and_a_stray_one_removed() {
    let world = agent_world("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    assert_eq!(lock(&world, T2).code, 0);
    let id = rules(&world)[0]["id"].as_str().unwrap().to_string();
    // Someone widens it to every address, and another writer races otnsx's repair once.
    world.nsxt.edit_rule("default", POLICY, &id, |r| {
        r["source_groups"] = json!(["ANY"])
    });
    world.nsxt.rule_conflicts(1);
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        rules(&world)[0]["source_groups"],
        json!(["10.1.2.3/32"]),
        "put back"
    );
    assert_eq!(
        world.nsxt.hierarchy_writes(),
        3,
        "the first write, one answered as changed meanwhile (read again, decided again), the repair"
    );
    let repair = world
        .journal()
        .into_iter()
        .rev()
        .find(|e| e["action"] == "grant")
        .unwrap();
    assert_eq!(repair["cause"], "drift");
    // The lease goes behind otnsx's back (a lost unlock) and the rule stays: reconcile
    // removes it. The site's own rule is never touched.
    world.nsxt.add_rule("default", POLICY, "site-rule", json!({"action": "DROP", "source_groups": ["ANY"], "destination_groups": ["ANY"], "services": ["ANY"]}));
    let text = std::fs::read_to_string(world.state_dir().join("leases.json")).unwrap();
    let mut file: Value = serde_json::from_str(&text).unwrap();
    file["leases"] = json!([]);
    std::fs::write(world.state_dir().join("leases.json"), file.to_string()).unwrap();
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(rule_ids(&world), ["site-rule"]);
}

fn revoke_all_removes_otnsx_rules_only() {
    let world = agent_world("");
    world.nsxt.add_rule("default", POLICY, "site-rule", json!({"action": "DROP", "source_groups": ["ANY"], "destination_groups": ["ANY"], "services": ["ANY"]}));
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh, db01"));
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(rules(&world).len(), 3);
    let db01 = rules(&world)
        .into_iter()
        .find(|r| r["services"] == json!(["/infra/services/RDP"]))
        .expect("db01 under the default profile: its services");
    assert!(
        db01["destination_groups"][0]
            .as_str()
            .unwrap()
            .contains(&uuids("vm-43").0)
    );
    let run = otnsx(&world, &["revoke", "--all"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(rule_ids(&world), ["site-rule"]);
}

fn a_rule_realized_in_error_is_69_and_its_lease_stays_for_the_unlock() {
    let world = agent_world("verify_realized = true");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    world.nsxt.realize_errors(true);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("realized state is ERROR"),
        "{}",
        run.stderr
    );
    assert_eq!(world.leases().len(), 1, "kept so that it can be closed");
    assert_eq!(rules(&world).len(), 1);
    world.nsxt.realize_errors(false);
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("gone from the realized state"),
        "{}",
        run.stdout
    );
    assert!(rules(&world).is_empty());
    // Realized fine: said so.
    assert_eq!(lock(&world, T2).code, 0);
    let grant = world
        .journal()
        .into_iter()
        .rev()
        .find(|e| e["action"] == "grant")
        .unwrap();
    assert!(
        grant["detail"].as_str().unwrap().contains("realized after"),
        "{grant}"
    );
}

fn check_verifies_the_policy_and_a_missing_one_is_78() {
    let world = agent_world("");
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("security policy default/otnsx-jit exists and may be written")
            && run.stdout.contains("2 agent(s) mapped"),
        "{}",
        run.stdout
    );
    let text = std::fs::read_to_string(world.config_path()).unwrap();
    world.write_config(&text.replace(
        "security_policy = \"otnsx-jit\"",
        "security_policy = \"nope\"",
    ));
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("NSX has no security policy default/nope"),
        "{}",
        run.stdout
    );
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 78, "{run:?}");
    // A policy the account may not change.
    world.nsxt.add_security_policy("default", "locked", true);
    world.write_config(&text.replace(
        "security_policy = \"otnsx-jit\"",
        "security_policy = \"locked\"",
    ));
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("is PROTECTED"), "{}", run.stdout);
}

fn agent_settings_are_checked() {
    let world = World::new();
    let policy = world.config_text_policy(FIREWALLER, "", false);
    for (text, said) in [
        (
            format!("{policy}\n[source]\nmode = \"agent\"\nsecurity_policy = \"p\"\n"),
            "source.services: missing",
        ),
        (
            format!("{policy}\n[source]\nmode = \"agent\"\nservices = [\"/infra/services/SSH\"]\n"),
            "source.security_policy: missing",
        ),
        (
            format!(
                "{policy}\n[source]\nmode = \"agent\"\nsecurity_policy = \"p\"\nservices = [\"SSH\"]\n"
            ),
            "is not a Policy service path",
        ),
        (
            format!(
                "{policy}\n[source]\nmode = \"agent\"\nsecurity_policy = \"p\"\nservices = [\"/infra/services/SSH\"]\n[agents]\nagent1 = [\"10.1.2.300\"]\n"
            ),
            "is not an IPv4 or IPv6 address or CIDR",
        ),
        (
            format!("{policy}\n[agents]\nagent1 = [\"10.1.2.3\"]\n"),
            "agents: set only with [source] mode = \"agent\"",
        ),
        (
            format!(
                "{policy}\n[source]\nmode = \"agent\"\nsecurity_policy = \"p\"\nservices = [\"/infra/services/SSH\"]\ndesktop = \"vdi\"\n"
            ),
            "source.desktop: a desktop VM's name with {login}",
        ),
        (
            format!("{policy}\n[source]\nmode = \"everyone\"\n"),
            "source.mode: \"everyone\": write \"any\"",
        ),
        (
            format!(
                "{}\n[source]\nmode = \"agent\"\nsecurity_policy = \"p\"\nservices = [\"/infra/services/SSH\"]\n",
                world.config_text_nsxt("", false)
            ),
            "needs nsx.kind = \"nsx-policy\"",
        ),
        (
            format!(
                "{policy}\n[profiles.ssh]\ntag = \"x\"\nservices = [\"/infra/services/SSH\"]\n"
            ),
            "used by per-agent rules only",
        ),
        (
            format!(
                "{}\n[source]\nmode = \"agent\"\nsecurity_policy = \"p\"\nservices = [\"/infra/services/SSH\"]\n",
                world.config_text_policy(FIREWALLER, "verify_group = \"g\"", false)
            ),
            "no tag puts VMs into a group",
        ),
    ] {
        world.write_config(&text);
        let run = otnsx(&world, &["grant", "--vm", "web01"]);
        assert_eq!(run.code, 78, "{said}: {run:?}");
        assert!(run.stderr.contains(said), "{said}: {}", run.stderr);
    }
}

fn a_ticket_that_changes_hands_moves_its_rule_to_the_new_agents_desktop() {
    let world = agent_world("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    assert_eq!(lock(&world, T2).code, 0);
    // agent2 takes the ticket over while it stays locked; the lock event comes again.
    world.helpdesk.update(T2.0, |t| t.owner = "agent2".into());
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let all = rules(&world);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        all[0]["source_groups"],
        json!(["10.1.2.4", "fd00::4"]),
        "agent1's is gone"
    );
    // And to an agent without a desktop: nothing stays open.
    world.helpdesk.update(T2.0, |t| t.owner = "agent9".into());
    let run = lock(&world, T2);
    assert_eq!(run.code, 1, "agent2's closed, agent9 refused: {run:?}");
    assert!(run.stdout.contains("closed web01"), "{}", run.stdout);
    assert!(rules(&world).is_empty());
    assert!(world.leases().is_empty());
}

fn a_desktop_pattern_finds_the_agents_desktop_vm_and_its_addresses_in_nsx() {
    let world = agent_world("desktop = \"vdi-{login}\"");
    world.nsxt.add_vm(
        "vdi-agent3",
        "5099aaaa-0000-0000-0000-000000000003",
        &[],
        &[],
    );
    world.nsxt.set_ips(
        "5099aaaa-0000-0000-0000-000000000003",
        &["fd00::93", "10.9.9.3"],
    );
    world.nsxt.add_vm(
        "vdi-agent5",
        "5099aaaa-0000-0000-0000-000000000005",
        &[],
        &[],
    );
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01:ssh");
        t.owner = "agent3".into();
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        rules(&world)[0]["source_groups"],
        json!(["10.9.9.3", "fd00::93"])
    );
    assert_eq!(unlock(&world, T2).code, 0);
    assert!(rules(&world).is_empty());
    // [agents] still wins: agent1's listed desktop, not a VM.
    world.helpdesk.update(T2.0, |t| t.owner = "agent1".into());
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(rules(&world)[0]["source_groups"], json!(["10.1.2.3/32"]));
    assert_eq!(unlock(&world, T2).code, 0);
    // No such VM, or one without addresses: nothing opens, 77.
    for (agent, said) in [
        ("agent4", "\"vdi-agent4\" is not found"),
        ("agent5", "has no address NSX knows"),
    ] {
        world.helpdesk.update(T2.0, |t| t.owner = agent.into());
        let run = lock(&world, T2);
        assert_eq!(run.code, 77, "{agent}: {run:?}");
        assert!(run.stderr.contains(said), "{agent}: {}", run.stderr);
        assert!(rules(&world).is_empty(), "{agent}");
        assert!(world.leases().is_empty(), "{agent}");
    }
}

fn a_long_login_still_fits_nsx_display_name_limit() {
    let world = agent_world("");
    let login = "a".repeat(240);
    let text = std::fs::read_to_string(world.config_path()).unwrap();
    world.write_config(&format!("{text}{login} = [\"10.1.2.9\"]\n"));
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01:ssh");
        t.owner = login.clone();
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let rule = &rules(&world)[0];
    assert_eq!(rule["display_name"].as_str().unwrap().chars().count(), 255);
    assert_eq!(unlock(&world, T2).code, 0);
}

fn revoke_by_name_closes_every_agents_rule_on_the_vm() {
    let world = agent_world("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    world.helpdesk.add_ticket(T3.0, T3.1, json!("web01"));
    world.helpdesk.update(T3.0, |t| t.owner = "agent2".into());
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(lock(&world, T3).code, 0);
    assert_eq!(rules(&world).len(), 2);
    let run = otnsx(&world, &["revoke", "--force", "--vm", "web01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(rules(&world).is_empty());
    assert!(world.leases().is_empty());
    // A rule the leases do not know (lost state) is found in NSX and closed by name too.
    assert_eq!(lock(&world, T2).code, 0);
    std::fs::write(
        world.state_dir().join("leases.json"),
        "{\"version\":1,\"leases\":[]}",
    )
    .unwrap();
    let run = otnsx(&world, &["revoke", "--vm", "web01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(rules(&world).is_empty(), "{:?}", rules(&world));
}

fn a_rule_deleted_by_hand_is_not_made_again_and_its_lease_ends() {
    let world = agent_world("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    assert_eq!(lock(&world, T2).code, 0);
    let id = rule_ids(&world).remove(0);
    world.nsxt.remove_rule("default", POLICY, &id);
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        rule_ids(&world).is_empty(),
        "otnsx never reopens what is closed"
    );
    assert!(world.leases().is_empty(), "{run:?}");
    // Unlocking and locking again opens it afresh.
    world.helpdesk.set_lock(T2.0, "unlock");
    assert_eq!(crate::event(&world, T2).code, 0);
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(rules(&world)[0]["source_groups"], json!(["10.1.2.3/32"]));
}

/// A wider `[agents]` network than /24 (/64) is the site's explicit choice: with
/// `source.widest_ipv4` / `widest_ipv6` it is accepted and becomes the rule's source, and
/// `check` lists each agent's networks.
fn a_wider_agent_network_opens_when_the_site_sets_widest() {
    let world = agent_world("widest_ipv4 = 16\nwidest_ipv6 = 48");
    let text = std::fs::read_to_string(world.config_path()).unwrap();
    world.write_config(&format!("{text}agent7 = [\"10.7.0.0/16\", \"fd07::/48\"]\n"));
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    for line in [
        "✓ agent agent1: rules from 10.1.2.3/32\n",
        "✓ agent agent2: rules from 10.1.2.4, fd00::4\n",
        "✓ agent agent7: rules from 10.7.0.0/16, fd07::/48\n",
    ] {
        assert!(run.stdout.contains(line), "{line}: {}", run.stdout);
    }
    assert!(!run.stdout.contains("agent desktops"), "{}", run.stdout);
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01:ssh");
        t.owner = "agent7".into();
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        rules(&world)[0]["source_groups"],
        json!(["10.7.0.0/16", "fd07::/48"])
    );
    // Without the settings the same networks are refused (78), nothing changed.
    world.write_config(
        &std::fs::read_to_string(world.config_path())
            .unwrap()
            .replace("widest_ipv4 = 16\nwidest_ipv6 = 48", ""),
    );
    let run = unlock(&world, T2);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("agents.agent7: \"10.7.0.0/16\" is wider than /24")
            && run.stderr.contains("agents.agent7: \"fd07::/48\" is wider than /64"),
        "{}",
        run.stderr
    );
    assert_eq!(rules(&world).len(), 1);
}

/// A desktop VM's addresses that are no desktop's own (0.0.0.0, ::, loopback, link-local,
/// multicast) or another agent's (`[agents]`) never become a rule's source: each is said in
/// the output and the journal; a desktop showing only such addresses opens nothing (77).
fn a_desktop_vms_addresses_it_does_not_own_are_left_out_and_said() {
    let world = agent_world("desktop = \"vdi-{login}\"");
    let vdi3 = "5099aaaa-0000-0000-0000-000000000003";
    world.nsxt.add_vm("vdi-agent3", vdi3, &[], &[]);
    world.nsxt.set_ips(
        vdi3,
        &[
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "fe80::1",
            "224.0.0.1",
            "10.1.2.4",
            "10.9.9.3",
        ],
    );
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01:ssh");
        t.owner = "agent3".into();
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(rules(&world)[0]["source_groups"], json!(["10.9.9.3"]));
    let said = "agent \"agent3\"'s desktop \"vdi-agent3\": 0.0.0.0 (unspecified), 10.1.2.4 (in agents.agent2's 10.1.2.4/32), 127.0.0.1 (loopback), 224.0.0.1 (multicast), :: (unspecified), fe80::1 (link-local) left out of the rule's sources";
    assert!(run.stdout.contains(said), "{}", run.stdout);
    let opened = world
        .journal()
        .into_iter()
        .find(|e| e["action"] == "grant")
        .unwrap();
    assert!(
        opened["detail"].as_str().unwrap().contains(&format!("(warning: {said})")),
        "{opened}"
    );
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(rules(&world).is_empty());
    // Said with the opening only: the close reads the addresses too, and says nothing of them.
    assert!(!run.stdout.contains("left out"), "{}", run.stdout);
    let closed = world
        .journal()
        .into_iter()
        .rfind(|e| e["action"] == "revoke")
        .unwrap();
    assert!(!closed["detail"].as_str().unwrap().contains("left out"), "{closed}");

    // Only such addresses: refused, nothing opened.
    world.nsxt.set_ips(
        vdi3,
        &["0.0.0.0", "::", "127.0.0.1", "fe80::1", "224.0.0.1", "10.1.2.4"],
    );
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr.contains("agent \"agent3\"'s desktop \"vdi-agent3\" shows no address of its own, only 0.0.0.0 (unspecified), 10.1.2.4 (in agents.agent2's 10.1.2.4/32), 127.0.0.1 (loopback), 224.0.0.1 (multicast), :: (unspecified), fe80::1 (link-local): nothing is opened for them; list its addresses in [agents]"),
        "{}",
        run.stderr
    );
    assert!(rules(&world).is_empty());
    assert!(world.leases().is_empty());
    // Journaled and noted as the other desktop refusals are: an opening that failed.
    let failed = world
        .journal()
        .into_iter()
        .find(|e| e["action"] == "error")
        .unwrap();
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("shows no address of its own"),
        "{failed}"
    );
    assert!(
        world.journal().iter().any(|e| e["action"] == "note"
            && e["detail"]
                .as_str()
                .unwrap()
                .contains("could not be opened: agent \"agent3\"'s desktop")),
        "noted in the ticket"
    );
    // `check` says how desktop addresses are taken.
    let run = otnsx(&world, &["check"]);
    assert!(
        run.stdout.contains("✓ agent desktops: any other agent's rules come from the addresses NSX shows for their VM \"vdi-{login}\", less unspecified"),
        "{}",
        run.stdout
    );
}

crate::tests! {
    agent1_gets_exactly_ssh_to_web01_from_their_desktop_and_unlock_takes_it_away,
    two_admins_on_one_vm_get_two_rules_each_closed_by_its_own_ticket,
    an_agent_without_a_desktop_gets_nothing_and_is_told,
    a_rule_edited_by_hand_is_put_back_and_a_stray_one_removed,
    revoke_all_removes_otnsx_rules_only,
    a_rule_realized_in_error_is_69_and_its_lease_stays_for_the_unlock,
    check_verifies_the_policy_and_a_missing_one_is_78,
    agent_settings_are_checked,
    a_ticket_that_changes_hands_moves_its_rule_to_the_new_agents_desktop,
    a_desktop_pattern_finds_the_agents_desktop_vm_and_its_addresses_in_nsx,
    a_long_login_still_fits_nsx_display_name_limit,
    revoke_by_name_closes_every_agents_rule_on_the_vm,
    a_rule_deleted_by_hand_is_not_made_again_and_its_lease_ends,
    a_wider_agent_network_opens_when_the_site_sets_widest,
    a_desktop_vms_addresses_it_does_not_own_are_left_out_and_said,
}
