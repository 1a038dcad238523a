//! The signal state otnsx inherits is not trusted: a help desk's daemon that ignores SIGCHLD, a
//! caller that ignores or blocks SIGTERM. otnsx is started through perl, which sets the state
//! up and then execs it (ignored and blocked signals survive an exec).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Run;
use crate::support::{T2, World, set};

/// Makes NSX's password come from a `password_command` that prints it (and touches `started`,
/// a file in the world's directory, if given), instead of a password file.
fn password_from_command(world: &World, body: &str) {
    let path = world.dir.path().join("vault.sh");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let dir = world.dir.path().display().to_string();
    let text = world.config_text().replace(
        &format!("password_file = \"{dir}/nsx.secret\""),
        &format!("password_command = [\"{}\"]", path.display()),
    );
    assert!(text.contains("password_command"));
    world.write_config(&text);
}

/// otnsx with `args` (after `--config`), started by perl after running `setup` (Perl code).
fn under_perl(world: &World, setup: &str, args: &[&str]) -> Command {
    let mut command = Command::new("perl");
    command
        .arg("-e")
        .arg(format!("{setup}; exec @ARGV or die \"exec: $!\""))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_otnsx"))
        .arg("--config")
        .arg(world.config_path())
        .args(args)
        .env_clear()
        .env("USER", "alice");
    command
}

/// Runs a ticket event as a daemon ignoring SIGCHLD would.
fn event_ignoring_sigchld(world: &World, lock: &str) -> Run {
    world.helpdesk.set_lock(T2.0, lock);
    let output = under_perl(
        world,
        "$SIG{CHLD} = 'IGNORE'",
        &["ticket", &T2.0.to_string()],
    )
    .output()
    .expect("run perl");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}


/// OTRS's daemon ignores SIGCHLD: with it ignored, waiting for the password command failed
/// ("No child processes"), and the unlock timeout closed nothing. Both events work now.
fn a_daemon_ignoring_sigchld_opens_and_closes_with_a_password_command(world: World) {
    let pw = crate::support::nsxv::PASSWORD;
    password_from_command(&world, &format!("printf '{pw}\\n'"));
    let run = event_ignoring_sigchld(&world, "lock");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let run = event_ignoring_sigchld(&world, "unlock");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&[]));
    assert!(!run.stderr.contains("No child processes"), "{run:?}");
    assert_eq!(crate::actions(&world), ["grant", "revoke"]);
}

/// Starts otnsx (`status`) under `setup` with a password command that says it started and then
/// sleeps for 20 s, sends otnsx SIGTERM once the command runs, and says how otnsx ended and
/// how long that took after the signal.
fn terminated_under(setup: &str) -> (std::process::ExitStatus, Duration) {
    let world = World::new();
    let started = world.dir.path().join("started");
    password_from_command(
        &world,
        &format!("touch {}\nexec sleep 20", started.display()),
    );
    let text = fs::read_to_string(world.config_path())
        .unwrap()
        .replace("deadline = \"10s\"", "deadline = \"30s\"");
    world.write_config(&text);
    let mut child = under_perl(&world, setup, &["status"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start perl");
    let waiting = Instant::now();
    while !started.exists() {
        assert!(
            waiting.elapsed() < Duration::from_secs(20),
            "the password command never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    (status, sent.elapsed())
}

/// A caller that blocked SIGTERM (and SIGCHLD): `timeout`'s SIGTERM used to wait until the
/// password command ended; now it ends otnsx at once.
fn sigterm_ends_otnsx_even_when_the_caller_blocked_it() {
    let (status, took) = terminated_under(
        "use POSIX (); POSIX::sigprocmask(POSIX::SIG_BLOCK(), POSIX::SigSet->new(POSIX::SIGTERM(), POSIX::SIGCHLD())) or die \"sigprocmask: $!\"",
    );
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A caller that ignored SIGTERM (`nohup`-like wrappers, some daemons): the same.
fn sigterm_ends_otnsx_even_when_the_caller_ignored_it() {
    let (status, took) = terminated_under("$SIG{TERM} = 'IGNORE'");
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// The Generic Agent module stops otnsx after 30 s: `check` warns about a deadline that would
/// let a run go past it, naming both values and the fix, and is silent below.
fn check_warns_when_the_deadline_outlasts_the_generic_agent_module_s_timeout() {
    let world = World::new();
    let text = world.config_text();
    world.write_config(&text.replace("deadline = \"10s\"", "deadline = \"45s\""));
    let run = crate::otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    let warning = run
        .stdout
        .lines()
        .find(|l| l.starts_with("! deadline: "))
        .unwrap_or_else(|| panic!("no warning: {}", run.stdout));
    for says in [
        "deadline 45s",
        "stops otnsx after 30s",
        "set deadline to 29s or less",
        "$Kernel::System::GenericAgent::Otnsx::Timeout in Kernel/Config.pm",
    ] {
        assert!(warning.contains(says), "{warning}");
    }
    world.write_config(&text.replace("deadline = \"10s\"", "deadline = \"29s\""));
    let run = crate::otnsx(&world, &["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("! deadline"), "{}", run.stdout);
}

crate::tests! {
    sigterm_ends_otnsx_even_when_the_caller_blocked_it,
    sigterm_ends_otnsx_even_when_the_caller_ignored_it,
    check_warns_when_the_deadline_outlasts_the_generic_agent_module_s_timeout,
    ; on_both_backends:
    a_daemon_ignoring_sigchld_opens_and_closes_with_a_password_command,
}
