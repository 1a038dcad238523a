//! The help desk runs otnsx as more than one OS user: the web server's for clicks, the daemon's
//! and the console's for the unlock timeout and time-based jobs. Both must open and, above all,
//! close, through one state directory shared by a group. Run as two real users (needs root).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use crate::support::{T2, World, set};

/// The group the two users share here (Debian's `users`), and the two users: `daemon` as the
/// web server, `nobody` as the help desk's daemon.
const GROUP: u32 = 100;
const WEB: u32 = 1;
const DAEMON: u32 = 65_534;

/// Runs otnsx as `uid` with the shared group, under a web server's umask of 022.
fn as_user(world: &World, uid: u32, args: &[&str]) -> crate::Run {
    let config = world.config_path();
    let output = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={GROUP}"),
            &format!("--groups={GROUP}"),
            "--",
            "sh",
            "-c",
            "umask 022; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_otnsx"),
            "--config",
            config.to_str().unwrap(),
        ])
        .args(args)
        .env_clear()
        .env("USER", format!("uid{uid}"))
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("setpriv");
    crate::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A world whose configuration and secrets the group may read, with the state directory made
/// as the README's install recipe makes it (root:GROUP, 2770).
/// Needs root and setpriv: without them the test is skipped.
fn shared_world() -> World {
    if !crate::is_root() {
        crate::skip("running otnsx as two other users needs root");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        crate::skip("setpriv (util-linux) is not installed");
    }
    let world = World::new();
    for name in [
        "otnsx.toml",
        "otrs.secret",
        "vcenter.secret",
        "nsx.secret",
        "nsxt.secret",
    ] {
        let path = world.dir.path().join(name);
        std::os::unix::fs::chown(&path, Some(0), Some(GROUP)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    }
    fs::set_permissions(world.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let state = world.state_dir();
    fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(0), Some(GROUP)).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o2770)).unwrap();
    world
}

fn the_web_server_opens_and_the_help_desk_daemon_closes() {
    let world = shared_world();
    world.helpdesk.set_lock(T2.0, "lock");
    let run = as_user(&world, WEB, &[T2.1, "2"]);
    assert_eq!(run.code, 0, "the web server's lock: {run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));

    // The unlock timeout, run by the help desk's daemon as another user.
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = as_user(&world, DAEMON, &[T2.1, "2"]);
    assert_eq!(run.code, 0, "the daemon's unlock: {run:?}");
    assert_eq!(world.tagged(), set(&[]));
    let actions = crate::actions(&world);
    assert_eq!(actions, ["grant", "revoke"], "both journaled");

    // Every state file: the directory's group, read and written by it, whoever made it.
    let locks: Vec<String> = fs::read_dir(world.state_dir().join("locks"))
        .unwrap()
        .map(|e| format!("locks/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert!(
        locks.iter().any(|l| l.starts_with("locks/ticket-")),
        "{locks:?}"
    );
    assert!(locks.iter().any(|l| l.starts_with("locks/vm-")), "{locks:?}");
    for name in [
        "leases.lock",
        "leases.gate.lock",
        "leases.json",
        "journal.jsonl",
        "otrs.session",
    ]
    .into_iter()
    .chain(locks.iter().map(String::as_str))
    {
        let meta = fs::metadata(world.state_dir().join(name)).unwrap();
        assert_eq!(meta.gid(), GROUP, "{name}");
        assert_eq!(meta.mode() & 0o777, 0o660, "{name}: mode {:o}", meta.mode());
    }
    // The directory of the ticket and VM locks: the group's too, and setgid.
    let meta = fs::metadata(world.state_dir().join("locks")).unwrap();
    assert_eq!(meta.gid(), GROUP);
    assert_eq!(meta.mode() & 0o7777, 0o2770, "mode {:o}", meta.mode());
    // And either user's check says the directory is shared.
    let run = as_user(&world, DAEMON, &["check"]);
    assert!(
        run.stdout.contains(": shared with group "),
        "{}",
        run.stdout
    );
}

fn check_names_a_state_file_the_group_cannot_write() {
    let world = shared_world();
    world.helpdesk.set_lock(T2.0, "lock");
    assert_eq!(as_user(&world, WEB, &[T2.1, "2"]).code, 0);
    // A journal another user made under a umask otnsx did not correct (an older otnsx).
    let journal = world.state_dir().join("journal.jsonl");
    std::os::unix::fs::chown(&journal, Some(DAEMON), Some(GROUP)).unwrap();
    fs::set_permissions(&journal, fs::Permissions::from_mode(0o640)).unwrap();
    let run = as_user(&world, WEB, &["check"]);
    assert!(
        run.stdout
            .contains("journal.jsonl is mode 640, so the group cannot write it: chmod g+rw"),
        "{}",
        run.stdout
    );
    // A file this user owns is corrected by otnsx itself.
    let lock = world.state_dir().join("leases.lock");
    fs::set_permissions(&lock, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(as_user(&world, WEB, &["status"]).code, 0);
    assert_eq!(
        fs::metadata(&lock).unwrap().mode() & 0o777,
        0o640,
        "status takes no lock"
    );
    // (A journal the group cannot write is exit 74 for every run, closing still done.)
    world.helpdesk.set_lock(T2.0, "unlock");
    let run = as_user(&world, WEB, &[T2.1, "2"]);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    fs::set_permissions(&journal, fs::Permissions::from_mode(0o660)).unwrap();
    world.helpdesk.set_lock(T2.0, "lock");
    assert_eq!(as_user(&world, WEB, &[T2.1, "2"]).code, 0);
    assert_eq!(fs::metadata(&lock).unwrap().mode() & 0o777, 0o660);
    fs::set_permissions(world.state_dir(), fs::Permissions::from_mode(0o770)).unwrap();
    let run = as_user(&world, WEB, &["check"]);
    assert!(run.stdout.contains("chmod 2770"), "{}", run.stdout);
}

crate::tests! {
    the_web_server_opens_and_the_help_desk_daemon_closes,
    check_names_a_state_file_the_group_cannot_write,
}
