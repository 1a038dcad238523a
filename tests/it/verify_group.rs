//! `nsx.verify_group`: after a change otnsx waits until NSX has put the VM into the group (or
//! taken it out) that opens access, on every kind; what it waited is said, journaled and
//! noted; a group that does not follow within the deadline is exit 69 with the tag and the
//! lease left for the unlock to close.

use serde_json::{Value, json};

use crate::support::nsxt::TAGGER;
use crate::support::{T2, World, uuids};
use crate::{lock, otnsx, unlock};

const GROUP: &str = "ssh-admins";

fn condition(value: &str) -> Value {
    json!([{"resource_type": "Condition", "member_type": "VirtualMachine", "key": "Tag",
            "operator": "EQUALS", "value": value}])
}

fn policy_world(extra: &str) -> World {
    let world = World::new();
    world
        .nsxt
        .add_group("default", GROUP, condition("otnsx|maintenance"));
    let extra = format!("verify_group = \"{GROUP}\"\n{extra}");
    world.write_config(&world.config_text_policy(TAGGER, &extra, false));
    world
}

/// The help desk's notes (PATCH bodies' article texts), in order.
fn notes(world: &World) -> Vec<String> {
    world
        .helpdesk
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["Article"]["Body"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

fn last(world: &World, action: &str) -> Value {
    world
        .journal()
        .into_iter()
        .rev()
        .find(|e| e["action"] == action)
        .unwrap_or_else(|| panic!("no {action} entry"))
}

fn the_wait_for_the_group_is_said_journaled_and_noted() {
    let world = policy_world("");
    world.nsxt.membership_lag(2);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("(in group default/ssh-admins after "),
        "{}",
        run.stdout
    );
    let grant = last(&world, "grant");
    assert_eq!(grant["result"], "ok");
    assert_eq!(grant["group"]["group"], "default/ssh-admins");
    assert_eq!(grant["group"]["confirmed"], true);
    assert!(grant["group"]["waited_ms"].as_u64().is_some());
    // Three reads: two that still show the group as it was, one that shows the VM.
    let reads = world
        .nsxt
        .requests()
        .iter()
        .filter(|r| {
            r.path
                .ends_with("/groups/ssh-admins/members/virtual-machines")
        })
        .count();
    assert_eq!(reads, 3);
    assert!(
        notes(&world)[0].contains("NSX put it into group default/ssh-admins after "),
        "{:?}",
        notes(&world)
    );

    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("(out of group default/ssh-admins after "),
        "{}",
        run.stdout
    );
    assert_eq!(last(&world, "revoke")["group"]["confirmed"], true);
    assert!(notes(&world)[1].contains("NSX took it out of group default/ssh-admins"));
}

fn a_group_that_never_follows_is_69_and_the_lease_stays_for_the_unlock() {
    let world = policy_world("");
    let text = std::fs::read_to_string(world.config_path()).unwrap();
    world.write_config(&text.replace("deadline = \"10s\"", "deadline = \"2s\""));
    world.nsxt.membership_lag(usize::MAX);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr
            .contains("tag set, group membership not confirmed"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged_t().len(), 1, "the tag stays");
    assert_eq!(
        world.leases().len(),
        1,
        "and its lease, so that an unlock closes it"
    );
    let grant = last(&world, "grant");
    assert_eq!(grant["result"], "failed");
    assert_eq!(grant["group"]["confirmed"], false);
    assert!(grant["group"]["waited_ms"].as_u64().unwrap() >= 1000);
    assert!(notes(&world)[0].contains("NSX has not confirmed that web01 is in group"));

    // The group never had the VM: the unlock has nothing to wait for.
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(world.tagged_t().is_empty());
    assert!(world.leases().is_empty());

    // A group that had the VM and does not let it go.
    world.nsxt.membership_lag(0);
    assert_eq!(lock(&world, T2).code, 0);
    world.nsxt.membership_lag(usize::MAX);
    let run = unlock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr
            .contains("tag removed, group membership removal not confirmed"),
        "{}",
        run.stderr
    );
    assert!(world.tagged_t().is_empty(), "closing is never held back");
    assert!(
        world.leases().is_empty(),
        "the tag is gone: nothing is left to close"
    );
    assert_eq!(last(&world, "revoke")["group"]["confirmed"], false);
    assert!(
        notes(&world)
            .last()
            .unwrap()
            .contains("NSX has not confirmed that web01 left group")
    );
}

fn a_group_that_does_not_exist_is_a_configuration_error() {
    let world = World::new();
    world.write_config(&world.config_text_policy(TAGGER, "verify_group = \"nope\"", false));
    let run = lock(&world, T2);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("NSX has no group default/nope"),
        "{}",
        run.stderr
    );
    // The tag was set before the group was asked: its lease stays so that an unlock closes it.
    assert_eq!(world.leases().len(), 1);
    let run = unlock(&world, T2);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(world.tagged_t().is_empty());
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("NSX has no group default/nope"),
        "{}",
        run.stdout
    );
}

fn check_verifies_the_group_and_its_criterion() {
    let world = policy_world("");
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("group default/ssh-admins takes VMs tagged otnsx|maintenance"),
        "{}",
        run.stdout
    );
    // A group in another domain whose condition names another tag.
    world
        .nsxt
        .add_group("prod", "wrong", condition("otnsx|other"));
    world.write_config(&world.config_text_policy(
        TAGGER,
        "verify_group = \"wrong\"\nverify_domain = \"prod\"",
        false,
    ));
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("group prod/wrong has no condition Tag EQUALS \"otnsx|maintenance\""),
        "{}",
        run.stdout
    );
}

fn the_manager_api_kind_waits_for_the_policy_group_too() {
    let world = World::new();
    world
        .nsxt
        .add_group("default", GROUP, condition("otnsx|maintenance"));
    world.nsxt.membership_lag(1);
    world.write_config(&world.config_text_nsxt(&format!("verify_group = \"{GROUP}\""), false));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("(in group default/ssh-admins after "),
        "{}",
        run.stdout
    );
    assert_eq!(world.nsxt.actions(), ["add_tags"]);
    let _ = uuids("vm-42");
}

fn nsx_v_waits_for_the_security_groups_translation() {
    let world = World::new();
    world
        .nsx
        .add_group("securitygroup-10", "=", "otnsx-maintenance");
    world.nsx.membership_lag(2);
    let text = world.config_text().replace(
        "tag = \"otnsx-maintenance\"",
        "tag = \"otnsx-maintenance\"\nverify_group = \"securitygroup-10\"",
    );
    world.write_config(&text);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("(in group securitygroup-10 after "),
        "{}",
        run.stdout
    );
    let reads = world
        .nsx
        .requests()
        .iter()
        .filter(|r| {
            r.path
                .ends_with("/securitygroup-10/translation/virtualmachines")
        })
        .count();
    assert_eq!(reads, 3);
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(
            "security group securitygroup-10 takes VMs with security tag \"otnsx-maintenance\""
        ),
        "{}",
        run.stdout
    );
    // A criterion the tag does not satisfy, and a group that does not exist.
    world
        .nsx
        .add_group("securitygroup-11", "starts_with", "web-");
    for (group, said) in [
        (
            "securitygroup-11",
            "has no dynamic criterion VM.SECURITY_TAG",
        ),
        (
            "securitygroup-99",
            "NSX-V has no security group securitygroup-99",
        ),
    ] {
        world.write_config(&text.replace("securitygroup-10", group));
        let run = otnsx(&world, &["check"]);
        assert_eq!(run.code, 1, "{group}: {run:?}");
        assert!(run.stdout.contains(said), "{group}: {}", run.stdout);
    }
}

fn verify_settings_are_checked() {
    let world = World::new();
    for (extra, said) in [
        (
            "verify_domain = \"prod\"",
            "nsx.verify_domain: set only beside nsx.verify_group",
        ),
        (
            "verify_group = \"a/b\"",
            "nsx.verify_group: the Policy group's id",
        ),
        (
            "verify_group = \"\"",
            "nsx.verify_group: the Policy group's id",
        ),
    ] {
        world.write_config(&world.config_text_policy(TAGGER, extra, false));
        let run = otnsx(&world, &["grant", "--vm", "web01"]);
        assert_eq!(run.code, 78, "{extra}: {run:?}");
        assert!(run.stderr.contains(said), "{extra}: {}", run.stderr);
    }
    let text = world.config_text().replace(
        "tag = \"otnsx-maintenance\"",
        "tag = \"otnsx-maintenance\"\nverify_group = \"securitygroup-10\"\nverify_domain = \"default\"",
    );
    world.write_config(&text);
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("NSX-V security groups have no domain"),
        "{}",
        run.stderr
    );
}

fn each_profile_waits_for_its_own_group() {
    let world = World::new();
    world
        .nsxt
        .add_group("default", GROUP, condition("otnsx|maintenance"));
    world
        .nsxt
        .add_group("default", "ssh-only", condition("otnsx|maintenance-ssh"));
    world.nsxt.membership_lag(1);
    let text = world.config_text_policy(TAGGER, &format!("verify_group = \"{GROUP}\""), false);
    world.write_config(&format!(
        "{text}\n[profiles.ssh]\ntag = \"maintenance-ssh\"\nverify_group = \"ssh-only\"\n"
    ));
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh, db01"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("[ssh] until"), "{}", run.stdout);
    assert!(
        run.stdout.contains("(in group default/ssh-only after "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("(in group default/ssh-admins after "),
        "{}",
        run.stdout
    );
    let run = otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("group default/ssh-admins takes VMs tagged otnsx|maintenance; group default/ssh-only takes VMs tagged otnsx|maintenance-ssh"),
        "{}",
        run.stdout
    );
    assert_eq!(unlock(&world, T2).code, 0);
}

crate::tests! {
    the_wait_for_the_group_is_said_journaled_and_noted,
    a_group_that_never_follows_is_69_and_the_lease_stays_for_the_unlock,
    a_group_that_does_not_exist_is_a_configuration_error,
    check_verifies_the_group_and_its_criterion,
    the_manager_api_kind_waits_for_the_policy_group_too,
    nsx_v_waits_for_the_security_groups_translation,
    verify_settings_are_checked,
    each_profile_waits_for_its_own_group,
}
