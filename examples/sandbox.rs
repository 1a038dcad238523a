//! `cargo run --example sandbox [-- nsx-t|nsx-policy]`: the whole path end to end, on this
//! machine alone. Starts a simulated help desk, vCenter and NSX (NSX-V; NSX-T's Manager API
//! with `nsx-t`; NSX 4's Policy API with `nsx-policy`, logged in with a least-privilege role
//! and waiting for the group the tag puts VMs into; last an access profile and a per-agent
//! firewall rule) on 127.0.0.1, writes a configuration for them, and runs otnsx as the help desk
//! would: lock a ticket (access opens), unlock it (access closes), then a grant and revoke by
//! hand.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::ExitCode;

use support::{SCOPE, T2, TAG, VALUE, World};

fn main() -> ExitCode {
    let kind = std::env::args().nth(1).unwrap_or_else(|| "nsx-v".into());
    if !["nsx-v", "nsx-t", "nsx-policy"].contains(&kind.as_str()) {
        eprintln!("usage: cargo run --example sandbox [-- nsx-v|nsx-t|nsx-policy] (not {kind:?})");
        return ExitCode::from(2);
    }
    let nsxt = kind != "nsx-v";
    let policy = kind == "nsx-policy";
    let world = World::new();
    if policy {
        // A role with read-only access on VMs and full access on Tags, and the group that
        // opens access, which NSX fills a moment after the tag changes.
        world.nsxt.add_group(
            "default",
            "admin-ssh",
            serde_json::json!([{"resource_type": "Condition", "member_type": "VirtualMachine",
                "key": "Tag", "operator": "EQUALS", "value": format!("{SCOPE}|{VALUE}")}]),
        );
        world.nsxt.membership_lag(2);
        world.nsxt.running_polls(1);
        // And an access profile: SSH only, with a tag (and at the site a group and rule) of
        // its own.
        let text =
            world.config_text_policy(support::nsxt::TAGGER, "verify_group = \"admin-ssh\"", true);
        world.write_config(&format!("{text}\n[profiles.ssh]\ntag = \"{VALUE}-ssh\"\n"));
    } else if nsxt {
        world.write_config(&world.config_text_nsxt("", true));
    }
    let config = world.config_path();
    let config = config.to_str().unwrap_or_default().to_string();
    println!("simulated help desk: {}", world.helpdesk.url());
    println!("simulated vCenter:   {}", world.vcenter.url());
    if policy {
        println!(
            "simulated NSX 4:     {} (Policy API, account {}, tag {SCOPE}|{VALUE}, group default/admin-ssh)",
            world.nsxt.url(),
            support::nsxt::TAGGER
        );
    } else if nsxt {
        println!(
            "simulated NSX-T:     {} (tag {SCOPE}|{VALUE})",
            world.nsxt.url()
        );
    } else {
        println!(
            "simulated NSX-V:     {} (security tag {TAG:?})",
            world.nsx.url()
        );
    }
    println!("configuration:       {config}\n");

    let otnsx = |args: &[&str]| {
        let mut all = vec!["otnsx", "--config", config.as_str()];
        all.extend_from_slice(args);
        println!("$ otnsx {}", args.join(" "));
        otnsx::main_with(all)
    };
    // The names of the VMs carrying the tag.
    let show = |when: &str| {
        let open: BTreeSet<String> = if nsxt {
            world.tagged_t()
        } else {
            let names = [("vm-42", "web01"), ("vm-43", "db01")];
            world
                .tagged()
                .iter()
                .map(|id| {
                    names
                        .iter()
                        .find(|(i, _)| i == id)
                        .map_or(id.as_str(), |(_, n)| n)
                        .to_string()
                })
                .collect()
        };
        let list: Vec<&str> = open.iter().map(String::as_str).collect();
        let list = if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        };
        println!("  -> {when}: VMs carrying the tag in NSX: {list}\n");
        open
    };
    let id = T2.0.to_string();
    let mut ok = true;

    println!(
        "1. An agent locks ticket {} (ID {id}), whose field VMName says web01.",
        T2.1
    );
    world.helpdesk.set_lock(T2.0, "lock");
    ok &= otnsx(&[T2.1, &id]) == ExitCode::SUCCESS;
    ok &= show("after the lock") == support::set(&["web01"]);

    println!("2. The agent unlocks the ticket.");
    world.helpdesk.set_lock(T2.0, "unlock");
    ok &= otnsx(&[T2.1, &id]) == ExitCode::SUCCESS;
    ok &= show("after the unlock").is_empty();

    println!("3. An administrator opens db01 by hand for 30 minutes, then closes it.");
    ok &= otnsx(&[
        "grant", "--vm", "db01", "--for", "30m", "--reason", "sandbox",
    ]) == ExitCode::SUCCESS;
    ok &= show("after the grant") == support::set(&["db01"]);
    ok &= otnsx(&["revoke", "--vm", "db01"]) == ExitCode::SUCCESS;
    ok &= show("after the revoke").is_empty();

    if policy {
        println!(
            "4. An agent locks ticket {} whose field says web01:ssh: the ssh profile's tag only.",
            support::T3.1
        );
        world.helpdesk.update(support::T3.0, |t| {
            t.vm_field = serde_json::json!("web01:ssh")
        });
        world.helpdesk.set_lock(support::T3.0, "lock");
        let t3 = support::T3.0.to_string();
        ok &= otnsx(&[support::T3.1, &t3]) == ExitCode::SUCCESS;
        let ssh: BTreeSet<String> = world
            .nsxt
            .carrying(SCOPE, &format!("{VALUE}-ssh"))
            .into_iter()
            .collect();
        println!("  -> VMs carrying {SCOPE}|{VALUE}-ssh: {ssh:?}");
        ok &= ssh == support::set(&["web01"]) && show("beside it, the default tag").is_empty();
        world.helpdesk.set_lock(support::T3.0, "unlock");
        ok &= otnsx(&[support::T3.1, &t3]) == ExitCode::SUCCESS;
        ok &= world
            .nsxt
            .carrying(SCOPE, &format!("{VALUE}-ssh"))
            .is_empty();
        println!("  -> after the unlock: no VM carries {SCOPE}|{VALUE}-ssh\n");
        let ops = world.nsxt.operations().len();
        let fabric = world.nsxt.actions().len();
        println!("NSX saw {ops} tag operations and {fabric} fabric tag actions.\n");
        ok &= ops == 6 && fabric == 0;

        println!(
            "5. The site turns on per-agent rules: agent1 locks ticket {} for web01:ssh again.",
            support::T3.1
        );
        world
            .nsxt
            .add_security_policy("default", "otnsx-jit", false);
        let text = std::fs::read_to_string(world.config_path()).unwrap_or_default();
        let text = text
            .replacen(
                &format!("user = \"{}\"", support::nsxt::TAGGER),
                &format!("user = \"{}\"", support::nsxt::FIREWALLER),
                1,
            )
            .replace("verify_group = \"admin-ssh\"\n", "")
            .replace(
                &format!("tag = \"{VALUE}-ssh\"\n"),
                &format!("tag = \"{VALUE}-ssh\"\nservices = [\"/infra/services/SSH\"]\n"),
            );
        world.write_config(&format!(
            "{text}\n[source]\nmode = \"agent\"\nsecurity_policy = \"otnsx-jit\"\nservices = [\"/infra/services/RDP\"]\nverify_realized = true\n\n[agents]\nagent1 = [\"10.1.2.3/32\"]\n"
        ));
        world.helpdesk.set_lock(support::T3.0, "lock");
        ok &= otnsx(&[support::T3.1, &t3]) == ExitCode::SUCCESS;
        let rules = world.nsxt.rules("default", "otnsx-jit");
        for rule in &rules {
            println!(
                "  -> rule {}: {} -> {} {} {}",
                rule["id"].as_str().unwrap_or(""),
                rule["source_groups"],
                rule["destination_groups"],
                rule["services"],
                rule["action"].as_str().unwrap_or("")
            );
        }
        ok &= rules.len() == 1
            && rules[0]["source_groups"] == serde_json::json!(["10.1.2.3/32"])
            && rules[0]["services"] == serde_json::json!(["/infra/services/SSH"]);
        ok &= world
            .nsxt
            .carrying(SCOPE, &format!("{VALUE}-ssh"))
            .is_empty();
        world.helpdesk.set_lock(support::T3.0, "unlock");
        ok &= otnsx(&[support::T3.1, &t3]) == ExitCode::SUCCESS;
        let left = world.nsxt.rules("default", "otnsx-jit").len();
        println!("  -> after the unlock: {left} rule(s) of otnsx's in otnsx-jit\n");
        ok &= left == 0;
    }
    println!(
        "The audit journal ({}):",
        world.state_dir().join("journal.jsonl").display()
    );
    for entry in world.journal() {
        println!("  {entry}");
    }
    if ok {
        println!("\nsandbox: every step did what it should");
        ExitCode::SUCCESS
    } else {
        println!("\nsandbox: a step did not do what it should (see above)");
        ExitCode::FAILURE
    }
}
