//! `grant` and `revoke` by hand.

use crate::support::{T2, World, set};
use crate::{actions, lock, otnsx};

fn grant_opens_for_a_while_and_revoke_closes(world: World) {
    let run = otnsx(
        &world,
        &[
            "grant", "--vm", "web01", "--for", "2h", "--reason", "patching",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let user = crate::real_user();
    assert!(
        run.stdout
            .starts_with(&format!("grant by {user}: opened web01 (vm-42) until")),
        "{}",
        run.stdout
    );
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let lease = &world.leases()[0];
    assert_eq!(
        lease["holder"],
        serde_json::json!({"kind": "user", "name": user})
    );
    assert_eq!(lease["reason"], "patching");
    let granted = lease["granted_at"].as_str().unwrap();
    let expires = lease["expires_at"].as_str().unwrap();
    assert_eq!(seconds(expires) - seconds(granted), 2 * 3600);
    assert_eq!(world.journal()[0]["actor"], user.as_str());

    let run = otnsx(&world, &["revoke", "--vm", "web01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    assert_eq!(actions(&world), ["grant", "revoke"]);
    // Closing a VM the leases know needs no vCenter.
    assert_eq!(world.vcenter.sessions_created(), 1);
}

/// Seconds of the day and days, enough to subtract two close RFC 3339 times.
fn seconds(t: &str) -> i64 {
    let day: i64 = t[8..10].parse().unwrap();
    let h: i64 = t[11..13].parse().unwrap();
    let m: i64 = t[14..16].parse().unwrap();
    let s: i64 = t[17..19].parse().unwrap();
    ((day * 24 + h) * 60 + m) * 60 + s
}

fn grant_without_for_uses_manual_duration(world: World) {
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01", "db01"]).code, 0);
    let leases = world.leases();
    assert_eq!(leases.len(), 2);
    let l = &leases[0];
    assert_eq!(
        seconds(l["expires_at"].as_str().unwrap()) - seconds(l["granted_at"].as_str().unwrap()),
        3600
    );
    assert_eq!(world.tagged(), set(&["vm-42", "vm-43"]));
}

fn revoke_leaves_a_ticket_holding_the_vm_open_unless_forced(world: World) {
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    let run = otnsx(&world, &["revoke", "--vm", "web01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("web01 (vm-42) stays open, still held by ticket 2026112310000011"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert_eq!(world.leases().len(), 1);

    let run = otnsx(&world, &["revoke", "--vm", "web01", "--force"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.leases().is_empty());
    let last = world.journal().last().cloned().unwrap();
    assert_eq!(last["action"], "revoke");
    assert_eq!(last["cause"], "forced", "{last}");
    assert_eq!(
        last["lost"],
        serde_json::json!([{"kind": "ticket", "id": 2, "number": "2026112310000011"}])
    );
}

fn revoke_closes_a_vm_tagged_by_hand(world: World) {
    world.nsx.attach_by_hand(crate::support::TAG_ID, "vm-43");
    let run = otnsx(&world, &["revoke", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("closed db01 (vm-43)"), "{}", run.stdout);
    assert_eq!(world.tagged(), set(&[]));
}

fn grant_of_an_unknown_vm_exits_65(world: World) {
    let run = otnsx(&world, &["grant", "--vm", "nosuchvm"]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(world.leases().is_empty());
    let too_long = "x".repeat(81);
    let run = otnsx(&world, &["grant", "--vm", &too_long]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr.contains("must have 1 to 80 characters"),
        "{}",
        run.stderr
    );
}

/// The user recorded for a run by hand is a fact: the real uid's name, never `USER` or
/// `LOGNAME`; `SUDO_USER` only under sudo as root, and only when `SUDO_UID` is that user's uid.
fn the_user_recorded_is_the_real_one(world: World) {
    let config = world.config_path();
    let config = config.to_str().unwrap();
    let real = crate::real_user();
    let holders = |world: &World| -> Vec<String> {
        world
            .leases()
            .iter()
            .map(|l| l["holder"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let run = crate::run_binary(
        &["--config", config, "grant", "--vm", "web01"],
        &[("USER", "alice"), ("LOGNAME", "alice")],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(holders(&world), vec![real.clone()]);
    assert_eq!(world.journal()[0]["actor"], real.as_str());
    // Without SUDO_UID, SUDO_USER is just a variable anyone can set.
    let run = crate::run_binary(
        &["--config", config, "grant", "--vm", "web01"],
        &[("SUDO_USER", "mallory")],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(holders(&world), vec![real.clone()]);
    if !crate::is_root() {
        crate::skip("the sudo half needs a run as root (the half before it passed)");
    }
    // A user of this machine other than root, and its uid.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let (name, uid) = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.to_string()))
        })
        .find(|(_, uid)| uid != "0")
        .unwrap();
    // SUDO_UID not SUDO_USER's: not believed.
    let run = crate::run_binary(
        &["--config", config, "grant", "--vm", "db01"],
        &[("SUDO_USER", &name), ("SUDO_UID", "4242424")],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!holders(&world).contains(&name), "{:?}", holders(&world));
    // SUDO_UID and SUDO_USER agreeing, under root: the user behind sudo.
    let run = crate::run_binary(
        &["--config", config, "grant", "--vm", "db01"],
        &[("SUDO_USER", &name), ("SUDO_UID", &uid)],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(holders(&world).contains(&name), "{:?}", holders(&world));
}

crate::tests! {
    ; on_both_backends:
    grant_opens_for_a_while_and_revoke_closes,
    grant_without_for_uses_manual_duration,
    revoke_leaves_a_ticket_holding_the_vm_open_unless_forced,
    revoke_closes_a_vm_tagged_by_hand,
    grant_of_an_unknown_vm_exits_65,
    the_user_recorded_is_the_real_one,
}
