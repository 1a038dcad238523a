//! Closing always works, whatever state the lease file, the journal or the disk is in, and
//! nothing opens without its record (exit 74 says the state directory failed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{T2, World, set};
use crate::{lock, otnsx, otnsx_at, unlock};

/// The ways a lease file can be unreadable.
const DAMAGE: [(&str, Option<&str>); 6] = [
    ("garbage", Some("{\"version\":1,\"leases\":[{\"vm\":")),
    ("empty", Some("")),
    ("null", Some("null")),
    ("newer version", Some("{\"version\":2,\"leases\":[]}")),
    (
        "a lease past year 9999",
        Some(
            "{\"version\":1,\"leases\":[{\"vm\":\"web01\",\"vm_id\":\"vm-42\",\"holder\":{\"kind\":\"user\",\"name\":\"alice\"},\"granted_at\":\"2026-11-23T15:36:43Z\",\"expires_at\":\"10240-08-21T15:36:43Z\"}]}",
        ),
    ),
    ("a directory", None),
];

fn damage(world: &World, how: Option<&str>) {
    let path = world.state_dir().join("leases.json");
    fs::remove_file(&path).unwrap();
    match how {
        Some(text) => fs::write(&path, text).unwrap(),
        None => fs::create_dir(&path).unwrap(),
    }
}

/// A world with web01 opened by a lock of ticket 2.
fn opened() -> World {
    let world = World::new();
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    world
}

fn a_grant_beyond_policy_max_grant_is_refused_and_nothing_breaks() {
    let world = opened();
    let run = otnsx(&world, &["grant", "--vm", "db01", "--for", "3000000d"]);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr
            .contains("--for 3000000d is longer than policy.max_grant (8h)"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&["vm-42"]));
    // The state stays readable: every closing command still works.
    let run = unlock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert_eq!(
        otnsx(&world, &["grant", "--vm", "db01", "--for", "8h"]).code,
        0
    );
    assert_eq!(otnsx(&world, &["revoke", "--all"]).code, 0);
}

fn a_lease_that_claims_too_long_a_life_is_clipped_on_read() {
    let world = opened();
    let path = world.state_dir().join("leases.json");
    let text = fs::read_to_string(&path).unwrap();
    let lease = &world.leases()[0];
    let granted = lease["granted_at"].as_str().unwrap().to_string();
    let expires = lease["expires_at"].as_str().unwrap().to_string();
    fs::write(&path, text.replace(&expires, "9999-12-31T23:59:59Z")).unwrap();
    let run = otnsx(&world, &["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Status reads only; the next run that takes the lock clips and journals it.
    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.leases()[0]["expires_at"], expires.as_str());
    assert_eq!(world.leases()[0]["granted_at"], granted.as_str());
    let clip = world
        .journal()
        .into_iter()
        .find(|e| e["cause"] == "clip")
        .expect("the clip is journaled");
    assert_eq!(clip["action"], "warning");
    assert!(
        clip["detail"]
            .as_str()
            .unwrap()
            .contains("claimed to last until 9999-12-31T23:59:59Z"),
        "{clip}"
    );
}

fn every_closing_command_works_with_an_unreadable_lease_file() {
    for (what, how) in DAMAGE {
        // An unlock event closes what the ticket's field names now.
        let world = opened();
        damage(&world, how);
        let run = unlock(&world, T2);
        assert_eq!(run.code, 74, "{what}: {run:?}");
        assert_eq!(world.tagged(), set(&[]), "{what}: unlock left web01 open");
        assert!(run.stderr.contains("fail closed"), "{what}: {}", run.stderr);
        assert!(
            run.stdout.contains("closed web01 (vm-42)"),
            "{what}: {run:?}"
        );

        // revoke --vm, reconcile: NSX first, the state problem said afterwards.
        for args in [&["revoke", "--vm", "web01"][..], &["reconcile"][..]] {
            let world = opened();
            damage(&world, how);
            let run = otnsx(&world, args);
            assert_eq!(run.code, 74, "{what}: {args:?}: {run:?}");
            assert_eq!(world.tagged(), set(&[]), "{what}: {args:?} left web01 open");
        }

        // Opening is refused: nothing is opened without its record.
        let world = World::new();
        lock(&world, T2);
        damage(&world, how);
        world.nsx.attach_by_hand("securitytag-12", "vm-43");
        let run = otnsx(&world, &["grant", "--vm", "app01"]);
        assert_eq!(run.code, 74, "{what}: {run:?}");
        assert!(run.stderr.contains("nothing was opened"), "{what}: {run:?}");
        assert_eq!(world.tagged(), set(&["vm-42", "vm-43"]), "{what}");

        // revoke --all closes everything NSX shows, keeps the file aside, starts afresh.
        let run = otnsx(&world, &["revoke", "--all"]);
        assert_eq!(run.code, 74, "{what}: {run:?}");
        assert_eq!(world.tagged(), set(&[]), "{what}");
        let aside = damaged_copies(&world.state_dir());
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        assert!(
            run.stderr.contains(&*aside[0].to_string_lossy()),
            "{what}: says where the old file went: {}",
            run.stderr
        );
        assert!(world.leases().is_empty());
        let run = lock(&world, T2);
        assert_eq!(run.code, 0, "{what}: works again afterwards: {run:?}");
        assert_eq!(world.tagged(), set(&["vm-42"]));
    }
}

fn damaged_copies(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("leases.json.damaged-")
        })
        .collect()
}

/// Replaces the journal with a directory: it cannot be opened, even by root.
fn break_journal(world: &World) {
    let journal = world.state_dir().join("journal.jsonl");
    fs::remove_file(&journal).unwrap();
    fs::create_dir(&journal).unwrap();
}

fn closing_works_when_the_journal_cannot_be_opened_and_the_record_goes_to_stderr() {
    let world = opened();
    break_journal(&world);
    let run = unlock(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(run.stderr.contains("opening the journal"), "{}", run.stderr);
    let record = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["action"] == "revoke")
        .expect("the lost entry is on stderr as one JSON line");
    assert_eq!(record["vm"], "web01");
    assert_eq!(record["lost"][0]["number"], T2.1);
    // The lease is gone all the same: the lease file still works.
    assert!(world.leases().is_empty());
}

fn nothing_opens_when_the_journal_cannot_take_the_record() {
    let world = World::new();
    assert_eq!(otnsx(&world, &["status"]).code, 0);
    fs::create_dir_all(world.state_dir().join("journal.jsonl")).unwrap();
    let run = lock(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(world.nsx.changes().is_empty(), "{:?}", world.nsx.changes());
    assert!(world.leases().is_empty());
    let run = otnsx(&world, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
}

fn a_state_directory_that_cannot_be_created_still_lets_closing_work() {
    let world = opened();
    let blocked = world.dir.path().join("blocked");
    fs::write(&blocked, "a file where the directory should be").unwrap();
    let text = world.config_text().replace(
        &format!("{}/state", world.dir.path().display()),
        &format!("{}/sub", blocked.display()),
    );
    world.write_config(&text);
    let run = otnsx(&world, &["revoke", "--vm", "web01"]);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(
        run.stderr.contains("cannot create the state directory"),
        "{}",
        run.stderr
    );
}

/// A tmpfs mounted on the world's state directory, unmounted on drop. Needs root: without it
/// (or where the mount fails) the test is skipped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> SmallDisk {
        fs::create_dir_all(dir).unwrap();
        if !crate::is_root() {
            crate::skip("a full disk is simulated with a tmpfs, which only root may mount");
        }
        match Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k,mode=0750", "tmpfs"])
            .arg(dir)
            .status()
        {
            Ok(status) if status.success() => SmallDisk(dir.to_path_buf()),
            Ok(status) => crate::skip(format!("mounting a tmpfs failed here ({status})")),
            Err(e) => crate::skip(format!("no mount here: {e}")),
        }
    }

    /// Fills the disk until a write fails.
    fn fill(&self) {
        let mut filler = fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut filler, &block).is_ok() {}
        let _ = filler.sync_all();
        let mut i = 0;
        while fs::write(self.0.join(format!("small{i}")), b"x").is_ok() {
            i += 1;
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn on_a_full_disk_an_attach_is_undone_and_closing_still_works() {
    let world = World::new();
    let disk = SmallDisk::mount(&world.state_dir());
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    disk.fill();

    // Closing: NSX first; the lease file cannot take it. The record is in the journal (a
    // line that fits the journal's last page) or else on stderr.
    let run = unlock(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    let on_stderr = run
        .stderr
        .lines()
        .any(|l| l.starts_with('{') && l.contains("\"action\":\"revoke\""));
    let journaled = world.journal().iter().any(|e| e["action"] == "revoke");
    assert!(
        on_stderr || journaled,
        "the close is recorded: {}",
        run.stderr
    );

    // Opening: the attach cannot be recorded, so it is undone (detached, verified).
    let before = world.nsx.changes().len();
    let run = otnsx(&world, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    let changes = world.nsx.changes()[before..].to_vec();
    assert_eq!(changes.len(), 2, "attach, then detach: {changes:?}");
    assert!(
        changes[0].starts_with("PUT") && changes[1].starts_with("DELETE"),
        "{changes:?}"
    );
    assert!(
        run.stdout.contains("opened and closed again at once"),
        "{run:?}"
    );
    drop(disk);
}

fn clipped_times_never_pass_year_9999() {
    let world = World::new();
    // A clock near the end of the format, and the longest grant allowed.
    let text = world
        .config_text()
        .replace("max_duration = \"8h\"", "max_duration = \"3650d\"");
    world.write_config(&text);
    let run = otnsx_at(
        &world,
        "9999-12-01T00:00:00Z",
        &["grant", "--vm", "db01", "--for", "3650d"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.leases()[0]["expires_at"], "9999-12-31T23:59:59Z");
    let run = otnsx_at(&world, "9999-12-01T00:00:10Z", &["revoke", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
}

fn links_in_the_state_directory_are_refused_not_followed() {
    for name in ["journal.jsonl", "leases.lock", "leases.json"] {
        let world = opened();
        let state = world.state_dir();
        let target = world.dir.path().join("elsewhere");
        fs::write(&target, "untouched\n").unwrap();
        let dangling = world.dir.path().join("created-through-a-link");
        let path = state.join(name);
        let _ = fs::remove_file(&path);
        // The journal points at a file otnsx must not append to; the lock and the leases at
        // a file that must not be created.
        let to = if name == "journal.jsonl" {
            &target
        } else {
            &dangling
        };
        std::os::unix::fs::symlink(to, &path).unwrap();

        let run = otnsx(&world, &["grant", "--vm", "db01"]);
        assert_eq!(run.code, 74, "{name}: {run:?}");
        assert!(
            run.stderr.contains("is a symbolic link"),
            "{name}: {}",
            run.stderr
        );
        assert_eq!(world.tagged(), set(&["vm-42"]), "{name}: nothing opened");
        // Closing works all the same.
        let run = unlock(&world, T2);
        assert_eq!(run.code, 74, "{name}: {run:?}");
        assert_eq!(world.tagged(), set(&[]), "{name}");
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "untouched\n",
            "{name}"
        );
        assert!(
            !dangling.exists(),
            "{name}: a file was created through the link"
        );
    }
}

fn a_state_directory_everyone_may_write_opens_nothing_but_still_closes() {
    use std::os::unix::fs::PermissionsExt;
    for mode in [0o777, 0o1777, 0o772] {
        let world = opened();
        fs::set_permissions(world.state_dir(), fs::Permissions::from_mode(mode)).unwrap();
        let run = otnsx(&world, &["grant", "--vm", "db01"]);
        assert_eq!(run.code, 74, "{mode:o}: {run:?}");
        assert!(
            run.stderr.contains("is writable by every user"),
            "{}",
            run.stderr
        );
        assert_eq!(world.tagged(), set(&["vm-42"]));
        let run = unlock(&world, T2);
        assert_eq!(run.code, 0, "{mode:o}: {run:?}");
        assert_eq!(world.tagged(), set(&[]));
    }
    // A relock after the field was edited: what the ticket no longer names is closed, what it
    // names now is not opened.
    let world = opened();
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = serde_json::json!("db01"));
    fs::set_permissions(world.state_dir(), fs::Permissions::from_mode(0o777)).unwrap();
    let run = lock(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "web01 closed, db01 not opened");
}

fn drift_never_reopens_not_even_an_honest_lease() {
    let world = World::new();
    world.vcenter.add_vm("vm-60", "vc01", "group-v1");
    world.nsx.add_vm("vm-60", "vc01");
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    world.nsx.detach_by_hand("securitytag-12", "vm-42"); // web01 closed behind otnsx's back
    // Forged leases on a VM policy denies: they could never have opened anything either.
    let path = world.state_dir().join("leases.json");
    let mut file: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let good = file["leases"][0].clone();
    for (name, id) in [("web99", "vm-60"), ("db01", "vm-60")] {
        let mut forged = good.clone();
        forged["vm"] = name.into();
        forged["vm_id"] = id.into();
        forged["holder"]["name"] = format!("forger-{name}").into();
        file["leases"].as_array_mut().unwrap().push(forged);
    }
    fs::write(&path, file.to_string()).unwrap();

    let run = otnsx(&world, &["reconcile"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "nothing is reopened: {run:?}");
    assert!(
        world.leases().is_empty(),
        "every lease on a closed VM ended"
    );
    assert!(
        run.stdout
            .contains("released web01 (vm-42): it is closed in NSX"),
        "{}",
        run.stdout
    );
    // A grant asked for again opens it afresh.
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    world.nsx.detach_by_hand("securitytag-12", "vm-42");
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]), "{run:?}");
}

crate::tests! {
    a_grant_beyond_policy_max_grant_is_refused_and_nothing_breaks,
    a_lease_that_claims_too_long_a_life_is_clipped_on_read,
    every_closing_command_works_with_an_unreadable_lease_file,
    closing_works_when_the_journal_cannot_be_opened_and_the_record_goes_to_stderr,
    nothing_opens_when_the_journal_cannot_take_the_record,
    a_state_directory_that_cannot_be_created_still_lets_closing_work,
    on_a_full_disk_an_attach_is_undone_and_closing_still_works,
    clipped_times_never_pass_year_9999,
    links_in_the_state_directory_are_refused_not_followed,
    a_state_directory_everyone_may_write_opens_nothing_but_still_closes,
    drift_never_reopens_not_even_an_honest_lease,
}
