//! Configuration and command-line errors: exit 78 and 2, before any network call.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::World;
use crate::support::nsxt::FIREWALLER;
use crate::{otnsx, run_binary};

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

fn a_world_readable_password_file_is_refused() {
    let world = World::new();
    let secret = world.dir.path().join("nsx.secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("nsx.password_file:"), "{}", run.stderr);
}

fn a_missing_config_file_exits_78() {
    let run = run_binary(
        &["--config", "/nonexistent/otnsx.toml", "grant", "--vm", "x"],
        &[],
    );
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains(
            "no configuration file at /nonexistent/otnsx.toml; write one (see /usr/share/doc/otnsx/otnsx.toml.example)"
        ),
        "{}",
        run.stderr
    );
}

fn the_config_path_may_come_from_the_environment() {
    let world = World::new();
    let path = world.config_path();
    let run = run_binary(
        &["grant", "--vm", "web01"],
        &[("OTNSX_CONFIG", path.to_str().unwrap())],
    );
    assert_eq!(run.code, 0, "{run:?}");
}

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

/// Writes an executable script into the world's directory and returns its path.
fn script(world: &World, name: &str, body: &str) -> String {
    let path = world.dir.path().join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn password_command_supplies_the_secret_without_a_shell_or_secrets_in_argv() {
    let world = World::new();
    let argv_log = world.dir.path().join("argv.log");
    let command = script(
        &world,
        "vault.sh",
        &format!(
            "echo \"$0 $*\" >> {}\nprintf 'nsx-secret-pw\\nignored second line\\n'",
            argv_log.display()
        ),
    );
    let dir = world.dir.path().display().to_string();
    let text = world.config_text().replace(
        &format!("password_file = \"{dir}/nsx.secret\""),
        &format!("password_command = [\"{command}\", \"show\", \"otnsx/nsx\"]"),
    );
    world.write_config(&text);
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 0, "{run:?}");
    let argv = fs::read_to_string(&argv_log).unwrap();
    assert!(argv.ends_with("vault.sh show otnsx/nsx\n"), "{argv}");
    assert!(!argv.contains("secret-pw"), "no secret in any argv: {argv}");
}

fn a_failing_or_hanging_password_command_is_a_config_error() {
    let world = World::new();
    let dir = world.dir.path().display().to_string();
    for (name, body, expected) in [
        (
            "fails.sh",
            "echo 'vault is sealed' >&2; exit 3",
            "failed (exit status: 3): vault is sealed",
        ),
        (
            "hangs.sh",
            "sleep 30",
            "did not finish within the deadline (1s); it was stopped",
        ),
        ("empty.sh", "true", "the password is empty"),
    ] {
        let command = script(&world, name, body);
        let text = world
            .config_text()
            .replace("deadline = \"10s\"", "deadline = \"1s\"")
            .replace(
                &format!("password_file = \"{dir}/nsx.secret\""),
                &format!("password_command = [\"{command}\"]"),
            );
        world.write_config(&text);
        let started = std::time::Instant::now();
        let run = otnsx(&world, &["grant", "--vm", "web01"]);
        assert_eq!(run.code, 78, "{name}: {run:?}");
        assert!(
            run.stderr.contains(&format!(
                "nsx.password_command: {}",
                if name == "fails.sh" || name == "hangs.sh" {
                    format!("{command} {expected}")
                } else {
                    expected.to_string()
                }
            )),
            "{name}: {}",
            run.stderr
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    assert!(world.nsx.requests().is_empty());
}

const PW: &str = crate::support::nsxv::PASSWORD;

fn a_password_command_is_bounded_by_the_deadline_even_when_its_children_hold_stdout() {
    let world = World::new();
    let dir = world.dir.path().display().to_string();
    for (name, body, code) in [
        // The command exits, its child keeps stdout open: the group is ended at once.
        ("lingers.sh", format!("sleep 30 &\nprintf '{PW}\\n'"), 0),
        // A child that leaves the group holds stdout past the deadline: stopped there.
        // (The pause lets setsid leave the group before the command exits.)
        (
            "escapes.sh",
            format!("setsid sleep 30 &\nsleep 1\nprintf '{PW}\\n'"),
            78,
        ),
    ] {
        let command = script(&world, name, &body);
        let text = world
            .config_text()
            .replace("deadline = \"10s\"", "deadline = \"3s\"")
            .replace(
                &format!("password_file = \"{dir}/nsx.secret\""),
                &format!("password_command = [\"{command}\"]"),
            );
        world.write_config(&text);
        let started = std::time::Instant::now();
        let run = otnsx(&world, &["status"]);
        let took = started.elapsed();
        assert_eq!(run.code, code, "{name}: {run:?}");
        // Generous bound for a busy machine: the point is 3 s, not 30.
        assert!(
            took < std::time::Duration::from_secs(8),
            "{name}: took {took:?}"
        );
    }
}

fn a_password_command_sees_only_path_home_and_lang() {
    let world = World::new();
    let dir = world.dir.path().display().to_string();
    let env_log = world.dir.path().join("env.log");
    let command = script(
        &world,
        "env.sh",
        &format!("env > {}\nprintf '{PW}\\n'", env_log.display()),
    );
    let text = world.config_text().replace(
        &format!("password_file = \"{dir}/nsx.secret\""),
        &format!("password_command = [\"{command}\"]"),
    );
    world.write_config(&text);
    let config = world.config_path();
    let run = crate::run_binary(
        &["--config", config.to_str().unwrap(), "status"],
        &[
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/root"),
            ("LANG", "C.UTF-8"),
            ("OTNSX_OTRS_PASSWORD", "helpdesk-secret"),
            ("REQUEST_METHOD", "POST"),
            ("HTTP_COOKIE", "OTRSAgentInterface=abc"),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let seen = fs::read_to_string(&env_log).unwrap();
    let names: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !["PWD", "SHLVL", "_", "OLDPWD"].contains(k))
        .collect();
    assert_eq!(names.len(), 3, "{seen}");
    for name in ["PATH", "HOME", "LANG"] {
        assert!(names.contains(&name), "{seen}");
    }
    assert!(
        !seen.contains("helpdesk-secret") && !seen.contains("REQUEST_METHOD"),
        "{seen}"
    );
}

fn config_and_secret_files_that_others_may_write_are_refused() {
    let world = World::new();
    for mode in [0o666, 0o602, 0o622] {
        fs::set_permissions(world.config_path(), fs::Permissions::from_mode(mode)).unwrap();
        let run = otnsx(&world, &["status"]);
        assert_eq!(run.code, 78, "{mode:o}: {run:?}");
        assert!(
            run.stderr.contains("is writable by every user"),
            "{}",
            run.stderr
        );
    }
    fs::set_permissions(world.config_path(), fs::Permissions::from_mode(0o640)).unwrap();
    let secret = world.dir.path().join("nsx.secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o602)).unwrap();
    let run = otnsx(&world, &["status"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("nsx.password_file"), "{}", run.stderr);
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(otnsx(&world, &["status"]).code, 0);
}

fn files_root_trusts_must_belong_to_root() {
    let world = World::new();
    if !crate::is_root() {
        crate::skip("only a run as root checks who owns its files");
    }
    for file in ["otnsx.toml", "nsx.secret"] {
        let path = world.dir.path().join(file);
        let status = std::process::Command::new("chown")
            .arg("65534")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let run = otnsx(&world, &["status"]);
        assert_eq!(run.code, 78, "{file}: {run:?}");
        assert!(
            run.stderr
                .contains("belongs to uid 65534, but otnsx runs as root"),
            "{}",
            run.stderr
        );
        std::process::Command::new("chown")
            .arg("0")
            .arg(&path)
            .status()
            .unwrap();
    }
    assert_eq!(otnsx(&world, &["status"]).code, 0);
}

fn a_config_that_is_no_regular_file_or_too_large_is_refused_at_once() {
    let world = World::new();
    let fifo = world.dir.path().join("fifo.toml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let large = world.dir.path().join("large.toml");
    fs::write(
        &large,
        format!("# {}\n{}", "x".repeat(1 << 20), world.config_text()),
    )
    .unwrap();
    for path in [
        fifo.as_path(),
        std::path::Path::new("/dev/zero"),
        large.as_path(),
    ] {
        let started = std::time::Instant::now();
        let run = crate::run_binary(&["--config", path.to_str().unwrap(), "status"], &[]);
        assert_eq!(run.code, 78, "{}: {run:?}", path.display());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let why = if path == large {
            "larger than 1024 KiB"
        } else {
            "is not a regular file"
        };
        assert!(
            run.stderr.contains(why),
            "{}: {}",
            path.display(),
            run.stderr
        );
    }
}

fn a_secret_in_a_url_is_never_echoed_whatever_is_reported_first() {
    let world = World::new();
    let secret = "url-secret-pw0";
    let postgres =
        "\n[state]\nbackend = \"postgres\"\npassword_file = \"/nonexistent/db.secret\"\n";
    for (section, url) in [
        (
            "state",
            format!("postgres://u:{secret}@db.example/db?sslmode=require"),
        ),
        ("state", format!("postgresql://u:p/w{secret}@db.example/db")),
        (
            "state",
            format!("postgres://u@db.example/db?password={secret}"),
        ),
        (
            "state",
            format!("postgres://u@db.example/db?sslmode=require&sslpassword={secret}"),
        ),
        ("nsx", format!("https://admin:{secret}@nsx.example/api?x=1")),
        (
            "otrs",
            format!("https://helpdesk.example/otrs?token={secret}"),
        ),
        (
            "vcenter",
            format!("https://admin:{secret}@vc.example/sdk#top"),
        ),
    ] {
        // The deadline's problem is reported before the URL's.
        let mut text = world
            .config_text()
            .replace("deadline = \"10s\"", "deadline = \"soon\"");
        if section == "state" {
            text.push_str(&format!("{postgres}url = \"{url}\"\n"));
        } else {
            let start = text.find(&format!("[{section}]\n")).unwrap();
            let from = start + text[start..].find("url = ").unwrap();
            let end = from + text[from..].find('\n').unwrap();
            text.replace_range(from..end, &format!("url = \"{url}\""));
        }
        world.write_config(&text);
        let run = otnsx(&world, &["grant", "--vm", "web01"]);
        assert_eq!(run.code, 78, "{url}: {run:?}");
        assert!(run.stderr.contains("deadline: \"soon\""), "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{section}.url: ")),
            "{url}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(secret) && !run.stdout.contains(secret),
            "{url}: {run:?}"
        );
    }
    assert!(world.nsx.requests().is_empty());
}

fn a_failing_password_commands_stderr_is_shown_without_any_secret() {
    let world = World::new();
    let dir = world.dir.path().display().to_string();
    let other = crate::support::vcenter::PASSWORD;
    let command = script(
        &world,
        "leaky.sh",
        &format!(
            "echo 'cmd-stdout-pw0'\necho 'vault: sealed; got cmd-stdout-pw0 and {other}' >&2\nexit 1"
        ),
    );
    let text = world.config_text().replace(
        &format!("password_file = \"{dir}/nsx.secret\""),
        &format!("password_command = [\"{command}\"]"),
    );
    world.write_config(&text);
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "nsx.password_command: {command} failed (exit status: 1): vault: sealed; got (redacted) and (redacted)"
        )),
        "{}",
        run.stderr
    );
    for secret in ["cmd-stdout-pw0", other] {
        assert!(
            !run.stderr.contains(secret) && !run.stdout.contains(secret),
            "{secret}: {run:?}"
        );
    }
    assert!(world.nsx.requests().is_empty());
}

/// `[agents]` takes only networks a desktop can own, each in one agent's list: every other is
/// 78 naming the key and the address, before any network call.
fn agents_networks_no_desktop_owns_are_refused_naming_the_key() {
    let world = World::new();
    let source = format!(
        "{}\n[source]\nmode = \"agent\"\nsecurity_policy = \"p\"\nservices = [\"/infra/services/SSH\"]\n",
        world.config_text_policy(FIREWALLER, "", false)
    );
    for (extra, agents, said) in [
        ("", "x = [\"0.0.0.0/0\"]", "agents.x: \"0.0.0.0/0\" is any address (0.0.0.0/0)"),
        ("", "x = [\"::/0\"]", "agents.x: \"::/0\" is any address (::/0)"),
        // Whatever the site allows, never any address.
        ("widest_ipv4 = 8\nwidest_ipv6 = 32\n", "x = [\"10.1.2.3\", \"0.0.0.0/0\"]", "agents.x: \"0.0.0.0/0\" is any address"),
        ("", "x = [\"0.0.0.0\"]", "agents.x: \"0.0.0.0\" is unspecified (0.0.0.0/8)"),
        ("", "x = [\"::\"]", "agents.x: \"::\" is unspecified (::/128)"),
        ("", "x = [\"10.0.0.0/16\"]", "agents.x: \"10.0.0.0/16\" is wider than /24: list the desktop's own addresses, or, if the whole network is this agent's desktops, set [source] widest_ipv4 = 16"),
        ("", "x = [\"fd00::/48\"]", "agents.x: \"fd00::/48\" is wider than /64: list the desktop's own addresses, or, if the whole network is this agent's desktops, set [source] widest_ipv6 = 48"),
        ("widest_ipv4 = 16\n", "x = [\"10.0.0.0/15\"]", "agents.x: \"10.0.0.0/15\" is wider than /16"),
        ("", "x = [\"127.0.0.1\"]", "agents.x: \"127.0.0.1\" is loopback (127.0.0.0/8), never a desktop's own address"),
        ("", "x = [\"::1\"]", "agents.x: \"::1\" is loopback (::1/128)"),
        ("", "x = [\"169.254.7.0/24\"]", "agents.x: \"169.254.7.0/24\" is link-local (169.254.0.0/16)"),
        ("", "x = [\"fe80::1\"]", "agents.x: \"fe80::1\" is link-local (fe80::/10)"),
        ("", "x = [\"224.0.0.1\"]", "agents.x: \"224.0.0.1\" is multicast (224.0.0.0/4)"),
        ("", "x = [\"ff02::1\"]", "agents.x: \"ff02::1\" is multicast (ff00::/8)"),
        ("", "x = [\"255.255.255.255\"]", "agents.x: \"255.255.255.255\" is broadcast"),
        ("", "x = [\"::ffff:10.1.2.3\"]", "agents.x: \"::ffff:10.1.2.3\" is IPv4-mapped"),
        ("", "x = [\"10.1.2.3/24\"]", "agents.x: \"10.1.2.3/24\" has host bits set under its prefix: write the network \"10.1.2.0/24\", or the desktop's own address \"10.1.2.3\""),
        ("", "x = [\"fd00::1/64\"]", "write the network \"fd00::/64\""),
        ("", "a = [\"10.1.2.0/24\"]\nb = [\"10.9.9.9\", \"10.1.2.7\"]", "agents.a: \"10.1.2.0/24\" overlaps agents.b's \"10.1.2.7\""),
        ("", "a = [\"10.1.2.3\"]\nb = [\"10.1.2.3/32\"]", "agents.a: \"10.1.2.3\" overlaps agents.b's \"10.1.2.3/32\""),
        ("", "a = [\"fd00::/64\"]\nb = [\"fd00::7\"]", "agents.a: \"fd00::/64\" overlaps agents.b's \"fd00::7\""),
        ("widest_ipv4 = 7\n", "x = [\"10.1.2.3\"]", "source.widest_ipv4: 7: a prefix length from 8 to 32 (default 24)"),
        ("widest_ipv6 = 129\n", "x = [\"fd00::3\"]", "source.widest_ipv6: 129: a prefix length from 32 to 128 (default 64)"),
    ] {
        world.write_config(&format!("{source}{extra}\n[agents]\n{agents}\n"));
        let run = otnsx(&world, &["grant", "--vm", "web01"]);
        assert_eq!(run.code, 78, "{said}: {run:?}");
        assert!(run.stderr.contains(said), "{said}: {}", run.stderr);
    }
    // Both problems of one agent are listed, and one agent's own networks may nest.
    world.write_config(&format!(
        "{source}\n[agents]\nx = [\"127.0.0.1\", \"10.0.0.0/8\"]\ny = [\"10.1.2.0/24\", \"10.1.2.3\"]\n"
    ));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("\"127.0.0.1\" is loopback") && run.stderr.contains("\"10.0.0.0/8\" is wider than /24"), "{}", run.stderr);
    assert!(!run.stderr.contains("overlaps"), "{}", run.stderr);
    // The widest settings belong to per-agent rules.
    world.write_config(&format!(
        "{}\n[source]\nmode = \"any\"\nwidest_ipv4 = 16\n",
        world.config_text_policy(FIREWALLER, "", false)
    ));
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("source.widest_ipv4: applies to mode = \"agent\" only"), "{}", run.stderr);
    assert!(world.nsxt.requests().is_empty(), "refused before any call");
}

crate::tests! {
    an_unknown_config_key_exits_78_naming_it,
    every_config_problem_is_listed_at_once,
    a_world_readable_config_with_an_inline_password_is_refused,
    a_world_readable_password_file_is_refused,
    a_missing_config_file_exits_78,
    the_config_path_may_come_from_the_environment,
    bad_ticket_arguments_are_usage_errors_before_any_call,
    help_and_version_exit_0,
    password_command_supplies_the_secret_without_a_shell_or_secrets_in_argv,
    a_failing_or_hanging_password_command_is_a_config_error,
    a_password_command_is_bounded_by_the_deadline_even_when_its_children_hold_stdout,
    a_password_command_sees_only_path_home_and_lang,
    config_and_secret_files_that_others_may_write_are_refused,
    files_root_trusts_must_belong_to_root,
    a_config_that_is_no_regular_file_or_too_large_is_refused_at_once,
    a_secret_in_a_url_is_never_echoed_whatever_is_reported_first,
    a_failing_password_commands_stderr_is_shown_without_any_secret,
    agents_networks_no_desktop_owns_are_refused_naming_the_key,
}
