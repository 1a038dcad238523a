//! The help-desk side shipped as files (`dist/helpdesk/`): the web service definition holds
//! exactly the routes otnsx calls, the Generic Agent module does what it says under the
//! system's perl, and the OPM package source lists every file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{T2, World};
use crate::{lock, otnsx, unlock};

fn dist() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist/helpdesk")
}

/// The (method, route) pairs of the shipped web service, read from its RouteOperationMapping.
fn shipped_routes() -> Vec<(String, String)> {
    let text = fs::read_to_string(dist().join("GenericTicketConnectorREST-otnsx.yml")).unwrap();
    let mapping = text.split("RouteOperationMapping:").nth(1).unwrap();
    let mut routes = Vec::new();
    let mut method = None;
    for line in mapping.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("- ") {
            method = Some(m.to_string());
        } else if let Some(route) = line.strip_prefix("Route: ") {
            routes.push((method.take().unwrap(), route.to_string()));
        } else if line.starts_with("Type:") {
            break;
        }
    }
    routes
}

fn the_web_service_has_exactly_the_routes_otnsx_calls_and_keeps_no_debug_log() {
    let text = fs::read_to_string(dist().join("GenericTicketConnectorREST-otnsx.yml")).unwrap();
    assert!(
        text.contains("DebugThreshold: error"),
        "no request log with passwords"
    );
    let routes = shipped_routes();
    assert_eq!(routes.len(), 5, "{routes:?}");
    // Every call of a lock, an unlock, a reconcile and a check, mapped to the shipped routes.
    let world = World::new();
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(unlock(&world, T2).code, 0);
    assert_eq!(lock(&world, T2).code, 0);
    world.helpdesk.set_lock(T2.0, "unlock");
    assert_eq!(otnsx(&world, &["reconcile"]).code, 0);
    assert_eq!(otnsx(&world, &["check"]).code, 0);
    let prefix = crate::support::helpdesk::WEBSERVICE;
    let mut used = std::collections::BTreeSet::new();
    for request in world.helpdesk.requests() {
        let path = request.path.strip_prefix(prefix).unwrap();
        let matched = routes
            .iter()
            .find(|(method, route)| *method == request.method && route_matches(route, path));
        let (method, route) = matched.unwrap_or_else(|| {
            panic!(
                "{} {path} is not a route of the shipped web service",
                request.method
            )
        });
        used.insert((method.clone(), route.clone()));
    }
    let unused: Vec<_> = routes.iter().filter(|r| !used.contains(*r)).collect();
    assert!(unused.is_empty(), "shipped but never called: {unused:?}");
}

fn route_matches(route: &str, path: &str) -> bool {
    let (r, p): (Vec<&str>, Vec<&str>) = (route.split('/').collect(), path.split('/').collect());
    r.len() == p.len()
        && r.iter()
            .zip(&p)
            .all(|(r, p)| r.starts_with(':') && !p.is_empty() || r == p)
}

/// Runs the Generic Agent module under the system's perl with a stub object manager whose log
/// prints each message as a line `PRIORITY: MESSAGE`; `stand_in` is the otnsx it runs.
fn run_module(dir: &Path, stand_in: &str, ticket_id: &str, timeout: u32) -> (String, bool) {
    let otnsx = stand_in_at(dir, "otnsx-stand-in", stand_in);
    let settings = format!(
        "$Kernel::System::GenericAgent::Otnsx::Command = ['{}'];\n$Kernel::System::GenericAgent::Otnsx::Timeout = {timeout};",
        otnsx.display()
    );
    run_module_with(dir, "", &settings, ticket_id)
}

/// Writes a shell script `name` with `body` into `dir`, executable; its path.
fn stand_in_at(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// As [`run_module`], with Perl code run `before` the module is loaded (what Kernel/Config.pm
/// sets, what the daemon's signal handling is) and `after` it is loaded.
fn run_module_with(dir: &Path, before: &str, after: &str, ticket_id: &str) -> (String, bool) {
    let harness = format!(
        r#"
use strict; use warnings;
package Kernel::System::Log;
sub new {{ return bless {{}}, shift }}
sub Log {{ my ($Self, %P) = @_; binmode STDOUT, ':encoding(UTF-8)'; print "$P{{Priority}}: $P{{Message}}\n"; }}
package StubOM;
sub new {{ return bless {{}}, shift }}
sub Get {{ my ($Self, $Name) = @_; die "unexpected object $Name" if $Name ne 'Kernel::System::Log'; return Kernel::System::Log->new() }}
package main;
$Kernel::OM = StubOM->new();
{before}
require '{module}';
{after}
my $Result = Kernel::System::GenericAgent::Otnsx->new()->Run(TicketID => $ARGV[0], UserID => 1);
print "result: ", ($Result ? 1 : 0), "\n";
"#,
        module = dist().join("Kernel/System/GenericAgent/Otnsx.pm").display(),
    );
    let script = dir.join("harness.pl");
    fs::write(&script, harness).unwrap();
    let output = Command::new("perl")
        .arg(&script)
        .arg(ticket_id)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (stdout.clone(), stdout.contains("result: 1"))
}

fn the_generic_agent_module_runs_otnsx_and_logs_its_failures() {
    need_perl();
    let dir = crate::support::TempDir::new("module");
    let dir = dir.path();
    // Success: otnsx got `ticket ID` and nothing is logged.
    let args = dir.join("args");
    let (log, ok) = run_module(dir, &format!("echo \"$@\" > {}", args.display()), "42", 5);
    assert!(ok, "{log}");
    assert_eq!(log, "result: 1\n");
    assert_eq!(fs::read_to_string(&args).unwrap(), "ticket 42\n");
    // A failure: its exit status and otnsx's message, as characters (UTF-8), on one line.
    let (log, _) = run_module(
        dir,
        "echo 'otnsx: wéb-Zürich: VM not found in vCenter' >&2; echo 'second line'; exit 65",
        "42",
        5,
    );
    assert!(
        log.contains("error: otnsx ticket 42 exited 65: otnsx: wéb-Zürich: VM not found in vCenter\\x0asecond line"),
        "{log}"
    );
    assert!(!log.contains("Ã"), "{log}");
    // A hang is cut by the timeout.
    let started = std::time::Instant::now();
    let (log, _) = run_module(dir, "sleep 30", "42", 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        log.contains("did not finish within 1 s and was stopped"),
        "{log}"
    );
    // A TicketID that is not digits: otnsx is not run.
    fs::remove_file(&args).unwrap();
    let (log, ok) = run_module(
        dir,
        &format!("echo \"$@\" > {}", args.display()),
        "1; rm -rf /",
        5,
    );
    assert!(!ok);
    assert!(
        log.contains("error: otnsx: not run: the TicketID is not a number: 1; rm -rf /"),
        "{log}"
    );
    assert!(!args.exists());
}

/// Skips the test when perl is not there to run the module.
fn need_perl() {
    if Command::new("perl").arg("-v").output().is_err() {
        crate::skip("no perl on this machine");
    }
}

/// A Znuny daemon ignores SIGCHLD: waitpid then returned -1 and the module logged
/// 72057594037927935 for every run, success or not. Now it logs otnsx's own exit status (the
/// real binary, refusing a missing configuration with 78), and nothing for a success.
fn the_generic_agent_module_logs_otnsx_s_real_exit_status_under_a_daemon_ignoring_sigchld() {
    need_perl();
    let dir = crate::support::TempDir::new("module-sigchld");
    let dir = dir.path();
    let ignoring = "$SIG{CHLD} = 'IGNORE';";
    let otnsx = env!("CARGO_BIN_EXE_otnsx");
    let missing = dir.join("missing.toml");
    let settings = format!(
        "$Kernel::System::GenericAgent::Otnsx::Command = ['{otnsx}', '--config', '{}'];",
        missing.display()
    );
    let (log, ok) = run_module_with(dir, ignoring, &settings, "42");
    assert!(ok, "{log}");
    assert!(
        log.contains("error: otnsx ticket 42 exited 78: otnsx: "),
        "{log}"
    );
    assert!(!log.contains("72057594037927935"), "{log}");
    // A success is a success.
    let good = stand_in_at(dir, "succeeds", "exit 0");
    let settings = format!(
        "$Kernel::System::GenericAgent::Otnsx::Command = ['{}'];",
        good.display()
    );
    let (log, _) = run_module_with(dir, ignoring, &settings, "42");
    assert_eq!(log, "result: 1\n");
}

/// Kernel/Config.pm sets the command and the timeout before the module is loaded (the daemon
/// and the console load it later): loading it used to reset both to the defaults.
fn the_generic_agent_module_keeps_the_command_and_timeout_config_pm_set() {
    need_perl();
    let dir = crate::support::TempDir::new("module-config");
    let dir = dir.path();
    let args = dir.join("args");
    let otnsx = stand_in_at(
        dir,
        "configured-otnsx",
        &format!("echo \"$@\" > {}\nsleep 30", args.display()),
    );
    let config_pm = format!(
        "$Kernel::System::GenericAgent::Otnsx::Command = ['{}', '--config', '/etc/otnsx/site.toml'];\n$Kernel::System::GenericAgent::Otnsx::Timeout = 1;",
        otnsx.display()
    );
    let started = std::time::Instant::now();
    let (log, _) = run_module_with(dir, &config_pm, "", "42");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        fs::read_to_string(&args).unwrap_or_default(),
        "--config /etc/otnsx/site.toml ticket 42\n",
        "{log}"
    );
    assert!(
        log.contains("error: otnsx ticket 42 did not finish within 1 s and was stopped"),
        "{log}"
    );
}

/// An otnsx that does not stop on timeout's SIGTERM is killed 5 s later, and the log says so
/// (not "exited 137", nor a signal number alone).
fn the_generic_agent_module_says_when_timeout_had_to_kill_otnsx() {
    need_perl();
    let dir = crate::support::TempDir::new("module-kill");
    let dir = dir.path();
    let started = std::time::Instant::now();
    let (log, ok) = run_module(dir, "trap '' TERM\nsleep 30", "42", 1);
    assert!(ok, "{log}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert!(
        log.contains("error: otnsx ticket 42 did not finish within 1 s nor stop on timeout's SIGTERM, and was killed with SIGKILL 5 s later"),
        "{log}"
    );
}

fn the_package_source_lists_every_file_it_should() {
    let text = fs::read_to_string(dist().join("Otnsx.sopm")).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut listed = Vec::new();
    let mut version = String::new();
    let mut in_version = false;
    loop {
        match reader.read_event().expect("the .sopm is well-formed XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) if e.local_name().as_ref() == "Version" => {
                in_version = true
            }
            quick_xml::events::Event::Text(t) if in_version => {
                version = t.xml10_content().to_string();
                in_version = false;
            }
            quick_xml::events::Event::Empty(e) if e.local_name().as_ref() == "File" => {
                let location = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == "Location")
                    .map(|a| a.value.to_string())
                    .expect("a File has a Location");
                listed.push(location);
            }
            _ => {}
        }
    }
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "the package's version is otnsx's"
    );
    // Every file under Kernel/ is listed, and every listed file exists.
    let mut present = Vec::new();
    let mut stack = vec![dist().join("Kernel")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                present.push(path.strip_prefix(dist()).unwrap().display().to_string());
            }
        }
    }
    listed.sort();
    present.sort();
    assert_eq!(listed, present);
}

crate::tests! {
    the_web_service_has_exactly_the_routes_otnsx_calls_and_keeps_no_debug_log,
    the_generic_agent_module_runs_otnsx_and_logs_its_failures,
    the_generic_agent_module_logs_otnsx_s_real_exit_status_under_a_daemon_ignoring_sigchld,
    the_generic_agent_module_keeps_the_command_and_timeout_config_pm_set,
    the_generic_agent_module_says_when_timeout_had_to_kill_otnsx,
    the_package_source_lists_every_file_it_should,
}
