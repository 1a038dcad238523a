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

#[test]
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
    let otnsx = dir.join("otnsx-stand-in");
    fs::write(&otnsx, format!("#!/bin/sh\n{stand_in}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&otnsx, fs::Permissions::from_mode(0o755)).unwrap();
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
require '{module}';
$Kernel::System::GenericAgent::Otnsx::Command = ['{otnsx}'];
$Kernel::System::GenericAgent::Otnsx::Timeout = {timeout};
my $Result = Kernel::System::GenericAgent::Otnsx->new()->Run(TicketID => $ARGV[0], UserID => 1);
print "result: ", ($Result ? 1 : 0), "\n";
"#,
        module = dist().join("Kernel/System/GenericAgent/Otnsx.pm").display(),
        otnsx = otnsx.display(),
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

#[test]
fn the_generic_agent_module_runs_otnsx_and_logs_its_failures() {
    if Command::new("perl").arg("-v").output().is_err() {
        eprintln!("skipped: no perl on this machine");
        return;
    }
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

#[test]
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
