//! `cargo run --example sandbox`: the whole path end to end, on this machine alone. Starts a
//! simulated help desk, vCenter and NSX-V on 127.0.0.1, writes a configuration for them, and
//! runs otnsx as the help desk would: lock a ticket (access opens), unlock it (access closes),
//! then a grant and revoke by hand.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;

use support::{T2, TAG, World};

fn main() -> ExitCode {
    let world = World::new();
    let config = world.config_path();
    let config = config.to_str().unwrap_or_default().to_string();
    println!("simulated help desk: {}", world.helpdesk.url());
    println!("simulated vCenter:   {}", world.vcenter.url());
    println!(
        "simulated NSX-V:     {} (security tag {TAG:?})",
        world.nsx.url()
    );
    println!("configuration:       {config}\n");

    let otnsx = |args: &[&str]| {
        let mut all = vec!["otnsx", "--config", config.as_str()];
        all.extend_from_slice(args);
        println!("$ otnsx {}", args.join(" "));
        otnsx::main_with(all)
    };
    let show = |when: &str| {
        let open: Vec<String> = world.tagged().into_iter().collect();
        let open = if open.is_empty() {
            "none".to_string()
        } else {
            open.join(", ")
        };
        println!("  -> {when}: VMs carrying the tag in NSX: {open}\n");
        world.tagged()
    };
    let id = T2.0.to_string();
    let mut ok = true;

    println!(
        "1. An agent locks ticket {} (ID {id}), whose field VMName says web01.",
        T2.1
    );
    world.helpdesk.set_lock(T2.0, "lock");
    ok &= otnsx(&[T2.1, &id]) == ExitCode::SUCCESS;
    ok &= show("after the lock") == support::set(&["vm-42"]);

    println!("2. The agent unlocks the ticket.");
    world.helpdesk.set_lock(T2.0, "unlock");
    ok &= otnsx(&[T2.1, &id]) == ExitCode::SUCCESS;
    ok &= show("after the unlock").is_empty();

    println!("3. An administrator opens db01 by hand for 30 minutes, then closes it.");
    ok &= otnsx(&[
        "grant", "--vm", "db01", "--for", "30m", "--reason", "sandbox",
    ]) == ExitCode::SUCCESS;
    ok &= show("after the grant") == support::set(&["vm-43"]);
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
