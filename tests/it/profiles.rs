//! Access profiles: `[profiles.NAME]` with a tag each; a ticket's field names the profile per
//! VM (`web01:ssh`) or a profile field names it for all; a lease is per VM and profile.

use serde_json::json;

use crate::support::nsxt::TAGGER;
use crate::support::{T2, World, set, uuids};
use crate::{actions, lock, otnsx, unlock};

const PROFILES: &str = "
[profiles.ssh]
tag = \"maintenance-ssh\"

[profiles.rdp]
tag = \"maintenance-rdp\"
deny = [\"db*\"]
";

/// The Policy backend with `[nsx] tag` (profile `default`) and profiles ssh and rdp.
fn world_with(extra_policy: &str) -> World {
    let world = World::new();
    let text = world
        .config_text_policy(TAGGER, "", false)
        .replace("[policy]\n", &format!("[policy]\n{extra_policy}"));
    world.write_config(&format!("{text}{PROFILES}"));
    world
}

fn carrying(world: &World, tag: &str) -> std::collections::BTreeSet<String> {
    world.nsxt.carrying("otnsx", tag).into_iter().collect()
}

fn each_vm_gets_the_tag_of_the_profile_its_entry_names() {
    let world = world_with("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh, db01"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(carrying(&world, "maintenance-ssh"), set(&["web01"]));
    assert_eq!(
        carrying(&world, "maintenance"),
        set(&["db01"]),
        "no profile: the default"
    );
    assert!(carrying(&world, "maintenance-rdp").is_empty());
    assert!(
        run.stdout
            .contains(&format!("opened web01 ({}) [ssh]", uuids("vm-42").0)),
        "{}",
        run.stdout
    );
    let leases = world.leases();
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0]["profile"], "ssh");
    assert!(
        leases[1].get("profile").is_none(),
        "the default profile is not written"
    );
    let grant = world
        .journal()
        .into_iter()
        .find(|e| e["action"] == "grant")
        .unwrap();
    assert_eq!(grant["profile"], "ssh");

    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(carrying(&world, "maintenance-ssh").is_empty());
    assert!(carrying(&world, "maintenance").is_empty());
    assert!(world.leases().is_empty());
    assert_eq!(actions(&world), ["grant", "grant", "revoke", "revoke"]);
}

fn one_vm_under_two_profiles_is_two_leases_closed_one_by_one() {
    let world = world_with("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh web01:rdp"));
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(carrying(&world, "maintenance-ssh"), set(&["web01"]));
    assert_eq!(carrying(&world, "maintenance-rdp"), set(&["web01"]));
    // The agent edits the field while locked and locks again: ssh goes, rdp stays.
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:rdp"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(carrying(&world, "maintenance-ssh").is_empty());
    assert_eq!(carrying(&world, "maintenance-rdp"), set(&["web01"]));
    assert_eq!(world.leases().len(), 1);
    // check lists the profiles; status names the profile.
    let run = otnsx(&world, &["check"]);
    assert!(
        run.stdout
            .contains("valid (NSX Policy, deadline 10s, access profiles default, rdp, ssh)"),
        "{}",
        run.stdout
    );
    let run = otnsx(&world, &["status"]);
    assert!(run.stdout.contains("web01 [rdp]"), "{}", run.stdout);
    let run = otnsx(&world, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["vms"][0]["profile"], "rdp");
    assert_eq!(unlock(&world, T2).code, 0);
    assert!(carrying(&world, "maintenance-rdp").is_empty());
}

fn a_profile_the_vm_may_not_get_is_77_and_an_unknown_one_65() {
    let world = world_with("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("db01:rdp"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stderr.contains("profile rdp:"), "{}", run.stderr);
    assert!(world.tagged_t().is_empty() && carrying(&world, "maintenance-rdp").is_empty());
    assert!(world.leases().is_empty());
    crate::refused_and_noted(&world, "profile rdp");

    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:telnet"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr
            .contains("access profile \"telnet\" is not configured (there are: default, rdp, ssh)"),
        "{}",
        run.stderr
    );
    assert!(world.nsxt.operations().is_empty(), "nothing was opened");
}

fn the_profile_field_names_the_profile_and_an_entry_overrides_it() {
    let world = World::new();
    let text = world.config_text_policy(TAGGER, "", false).replace(
        "vm_field = \"VMName\"",
        "vm_field = \"VMName\"\nprofile_field = \"AccessProfile\"",
    );
    world.write_config(&format!("{text}{PROFILES}"));
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01, app01:ssh");
        t.profile_field = Some(json!("rdp"));
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(carrying(&world, "maintenance-rdp"), set(&["web01"]));
    assert_eq!(carrying(&world, "maintenance-ssh"), set(&["app01"]));
    assert!(world.tagged_t().is_empty());
    assert_eq!(unlock(&world, T2).code, 0);
    // An empty dropdown is no profile: the default.
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!("web01");
        t.profile_field = Some(json!(""));
    });
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.tagged_t(), set(&["web01"]));
}

fn grant_takes_a_profile_and_revoke_closes_every_profile_of_the_vm() {
    let world = world_with("default_profile = \"ssh\"\n");
    let run = otnsx(
        &world,
        &["grant", "--vm", "web01", "--profile", "rdp", "--for", "1h"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    // Without --profile, policy.default_profile.
    let run = otnsx(&world, &["grant", "--vm", "web01", "--for", "1h"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(carrying(&world, "maintenance-rdp"), set(&["web01"]));
    assert_eq!(carrying(&world, "maintenance-ssh"), set(&["web01"]));
    assert!(world.tagged_t().is_empty());
    let run = otnsx(&world, &["grant", "--vm", "web01", "--profile", "nope"]);
    assert_eq!(run.code, 65, "{run:?}");
    let run = otnsx(&world, &["revoke", "--vm", "web01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(carrying(&world, "maintenance-rdp").is_empty());
    assert!(carrying(&world, "maintenance-ssh").is_empty());
    assert!(world.leases().is_empty());
    // history names the profile of each period.
    let run = otnsx(&world, &["history"]);
    assert!(
        run.stdout.contains("web01 [rdp]") && run.stdout.contains("web01 [ssh]"),
        "{}",
        run.stdout
    );
}

fn reconcile_repairs_each_profile_on_its_own() {
    let world = world_with("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    assert_eq!(lock(&world, T2).code, 0);
    // Someone takes the ssh tag off and puts the rdp tag on behind otnsx's back.
    world
        .nsxt
        .remove_tag(&uuids("vm-42").0, "otnsx", "maintenance-ssh");
    world
        .nsxt
        .add_tag(&uuids("vm-42").0, "otnsx", "maintenance-rdp");
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        carrying(&world, "maintenance-ssh").is_empty(),
        "a tag taken off stays off: otnsx never reopens what is closed"
    );
    assert!(world.leases().is_empty(), "the lease ended with it");
    assert!(
        carrying(&world, "maintenance-rdp").is_empty(),
        "the tag without lease is gone"
    );
}

fn nsx_v_profiles_are_security_tags_of_their_own() {
    let world = World::new();
    let text = format!(
        "{}\n[profiles.ssh]\ntag = \"other-tag-3\"\n",
        world.config_text()
    );
    world.write_config(&text);
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh, db01"));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.nsx.tagged("other-tag-3"), set(&["vm-42"]));
    assert_eq!(world.tagged(), set(&["vm-43"]));
    assert_eq!(unlock(&world, T2).code, 0);
    assert!(world.nsx.tagged("other-tag-3").is_empty());
    assert!(world.tagged().is_empty());
}

fn profile_settings_are_checked() {
    let world = World::new();
    let base = world.config_text_policy(TAGGER, "", false);
    for (extra, said) in [
        (
            "[profiles.SSH]\ntag = \"x\"\n",
            "profiles.SSH: a profile's name is 1 to 32 of a-z",
        ),
        ("[profiles.default]\ntag = \"x\"\n", "not \"default\""),
        ("[profiles.ssh]\n", "profiles.ssh.tag: missing"),
        (
            "[profiles.ssh]\ntag = \"maintenance\"\n",
            "profiles.ssh.tag: the same tag as profile \"default\"",
        ),
        (
            "[profiles.ssh]\ntag = \"a|b\"\n",
            "profiles.ssh.tag: at most 128 characters, without '|'",
        ),
        (
            "[profiles.ssh]\ntag = \"x\"\nservices = [\"/infra/services/SSH\"]\n",
            "profiles.ssh.services: used by per-agent rules only",
        ),
    ] {
        world.write_config(&format!("{base}{extra}"));
        let run = otnsx(&world, &["grant", "--vm", "web01"]);
        assert_eq!(run.code, 78, "{extra}: {run:?}");
        assert!(run.stderr.contains(said), "{extra}: {}", run.stderr);
    }
    world.write_config(&base.replace("[policy]\n", "[policy]\ndefault_profile = \"nope\"\n"));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr
            .contains("policy.default_profile: \"nope\" is no profile (there are: default)"),
        "{}",
        run.stderr
    );
    // Without [nsx] tag, two profiles need a default.
    let no_tag = base.replace("tag = \"maintenance\"\n", "");
    world.write_config(&format!("{no_tag}{PROFILES}"));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("policy.default_profile: missing"),
        "{}",
        run.stderr
    );
    // verify_group verifies [nsx] tag's group: without it, nothing.
    world.write_config(&format!(
        "{}{PROFILES}",
        no_tag.replace("[nsx]\n", "[nsx]\nverify_group = \"g\"\n")
    ));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr
            .contains("nsx.verify_group: verifies the group of [nsx] tag's profile"),
        "{}",
        run.stderr
    );
    // NSX-V has no scopes.
    let v = format!(
        "{}\n[profiles.ssh]\ntag = \"x\"\nscope = \"y\"\n",
        world.config_text()
    );
    world.write_config(&v);
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("profiles.ssh.scope: applies to kind"),
        "{}",
        run.stderr
    );
}

fn a_profile_removed_from_the_configuration_fails_its_vm_alone() {
    let world = world_with("");
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh, db01"));
    assert_eq!(lock(&world, T2).code, 0);
    // The site drops the ssh profile while the ticket is locked.
    let text = std::fs::read_to_string(world.config_path()).unwrap();
    world.write_config(&text.replace("[profiles.ssh]\ntag = \"maintenance-ssh\"\n", ""));
    let run = unlock(&world, T2);
    assert_eq!(run.code, 1, "partly done: {run:?}");
    assert!(
        run.stderr
            .contains("access profile \"ssh\" is not configured, so its tag is not known; put [profiles.ssh] back"),
        "{}",
        run.stderr
    );
    assert!(world.tagged_t().is_empty(), "db01 is closed all the same");
    let left = world.leases();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["state"], "detach_failed", "kept for the next run");
    assert_eq!(carrying(&world, "maintenance-ssh"), set(&["web01"]));
}

crate::tests! {
    each_vm_gets_the_tag_of_the_profile_its_entry_names,
    one_vm_under_two_profiles_is_two_leases_closed_one_by_one,
    a_profile_the_vm_may_not_get_is_77_and_an_unknown_one_65,
    the_profile_field_names_the_profile_and_an_entry_overrides_it,
    grant_takes_a_profile_and_revoke_closes_every_profile_of_the_vm,
    reconcile_repairs_each_profile_on_its_own,
    nsx_v_profiles_are_security_tags_of_their_own,
    profile_settings_are_checked,
    a_profile_removed_from_the_configuration_fails_its_vm_alone,
}
