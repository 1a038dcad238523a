//! Configuration and command-line errors: exit 78 and 2, before any network call.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::World;
use crate::{otnsx, run_binary};

#[test]
fn an_unknown_config_key_exits_78_naming_it() {
    let world = World::new();
    world.write_config(&world.config_text().replace("vm_field =", "vm_feild ="));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("unknown field `vm_feild`"),
        "{}",
        run.stderr
    );
    assert!(world.vcenter.requests().is_empty() && world.nsx.requests().is_empty());
}

#[test]
fn every_config_problem_is_listed_at_once() {
    let world = World::new();
    let text = world
        .config_text()
        .replace("deadline = \"10s\"", "deadline = \"soon\"")
        .replace("tag = \"otnsx-maintenance\"", "tag = \"\"");
    world.write_config(&text);
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("deadline: \"soon\" is not a duration"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nsx.tag: missing"), "{}", run.stderr);
}

#[test]
fn a_world_readable_config_with_an_inline_password_is_refused() {
    let world = World::new();
    let dir = world.dir.path().display().to_string();
    let text = world.config_text().replace(
        &format!("password_file = \"{dir}/nsx.secret\""),
        "password = \"nsx-secret-pw\"",
    );
    world.write_config(&text);
    fs::set_permissions(world.config_path(), fs::Permissions::from_mode(0o644)).unwrap();
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr
            .contains("nsx.password: an inline password in a world-readable file is refused"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("nsx-secret-pw"));

    fs::set_permissions(world.config_path(), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
}

#[test]
fn a_world_readable_password_file_is_refused() {
    let world = World::new();
    let secret = world.dir.path().join("nsx.secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("nsx.password_file:"), "{}", run.stderr);
}

#[test]
fn a_missing_config_file_exits_78() {
    let run = run_binary(
        &["--config", "/nonexistent/otnsx.toml", "grant", "--vm", "x"],
        &[],
    );
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("cannot read /nonexistent/otnsx.toml"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_config_path_may_come_from_the_environment() {
    let world = World::new();
    let path = world.config_path();
    let run = run_binary(
        &["grant", "--vm", "web01"],
        &[("OTNSX_CONFIG", path.to_str().unwrap())],
    );
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn bad_ticket_arguments_are_usage_errors_before_any_call() {
    let world = World::new();
    for args in [
        vec!["2026112310000011", "2;reboot"],
        vec!["2026112310000011", "0"],
        vec!["abc", "2"],
        vec!["2026112310000011"],
        vec!["ticket", "-5"],
        vec!["grant", "--vm", "x", "--for", "forever"],
    ] {
        let run = otnsx(&world, &args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
    }
    assert!(world.helpdesk.requests().is_empty());
    assert!(world.journal().is_empty());
    let run = run_binary(&[], &[]);
    assert_eq!(run.code, 2, "no arguments shows help and exits 2");
    assert!(run.stderr.contains("Usage"), "{}", run.stderr);
}

#[test]
fn help_and_version_exit_0() {
    let run = run_binary(&["--help"], &[]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("grant")
            && run.stdout.contains("revoke")
            && run.stdout.contains("ticket")
    );
    let run = run_binary(&["--version"], &[]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.starts_with("otnsx "), "{}", run.stdout);
}
