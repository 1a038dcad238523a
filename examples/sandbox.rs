//! `cargo run --example sandbox [-- nsx-t]`: the whole path end to end, on this machine alone.
//! Starts a simulated help desk, vCenter and NSX (NSX-V, or NSX-T with `nsx-t`) on 127.0.0.1,
//! writes a configuration for them, and runs otnsx as the help desk would: lock a ticket
//! (access opens), unlock it (access closes), then a grant and revoke by hand.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::ExitCode;

use support::{SCOPE, T2, TAG, VALUE, World};

fn main() -> ExitCode {
    let nsxt = match std::env::args().nth(1).as_deref() {
        None | Some("nsx-v") => false,
        Some("nsx-t") => true,
        Some(other) => {
            eprintln!("usage: cargo run --example sandbox [-- nsx-v|nsx-t] (not {other:?})");
            return ExitCode::from(2);
        }
    };
    let world = World::new();
    if nsxt {
        world.write_config(&world.config_text_nsxt("", true));
    }
    let config = world.config_path();
    let config = config.to_str().unwrap_or_default().to_string();
    println!("simulated help desk: {}", world.helpdesk.url());
    println!("simulated vCenter:   {}", world.vcenter.url());
    if nsxt {
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
