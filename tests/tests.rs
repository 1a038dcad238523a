//! Integration tests: the real binary against in-process fakes of the help desk, vCenter and
//! NSX-V (see `support/`). One test binary, so the suite links once.

#![allow(clippy::unwrap_used)]

mod support;

/// Makes each named test function (`fn name(world: World)`) a test twice: on the state
/// directory (`file::name`) and on the PostgreSQL backend (`postgres::name`, skipped and said
/// so when no server is configured; see `support/pg.rs`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::support::World::new())
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some(world) = $crate::pg_world(test) {
                        super::$name(world)
                    }
                }
            )*
        }
    };
}

mod it {
    pub mod agent_rules;
    pub mod bounded;
    pub mod check;
    pub mod cli;
    pub mod concurrency;
    pub mod config;
    pub mod crash;
    pub mod docs;
    pub mod e2e;
    pub mod fail_closed;
    pub mod fakes;
    pub mod faults;
    pub mod fuzz_seeds;
    pub mod helpdesk_files;
    pub mod history;
    pub mod hostile;
    pub mod intake;
    pub mod journal;
    pub mod layers;
    pub mod lifecycle;
    pub mod manual;
    pub mod notes;
    pub mod nsx_policy;
    pub mod nsxt;
    pub mod package;
    pub mod pg_faults;
    pub mod policy;
    pub mod postgres;
    pub mod profiles;
    pub mod shaped;
    pub mod shared;
    pub mod signals;
    pub mod state;
    pub mod ticket;
    pub mod tls;
    pub mod verify_group;
}

use std::process::{Command, Output};

use support::World;

/// A world on the PostgreSQL backend (see [`World::on_postgres`]), `None` without a server.
pub fn pg_world(test: &str) -> Option<World> {
    World::on_postgres(test, std::path::Path::new(env!("CARGO_BIN_EXE_otnsx")))
}

/// What one run of otnsx did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs otnsx with `args` against the world's configuration, with an empty environment.
pub fn otnsx(world: &World, args: &[&str]) -> Run {
    let config = world.config_path();
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_binary(&all, &[])
}

/// Runs otnsx as [`otnsx`] does, at the time `now` (RFC 3339) by its clock.
pub fn otnsx_at(world: &World, now: &str, args: &[&str]) -> Run {
    let config = world.config_path();
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let run = run_binary(&all, &[("OTNSX_NOW", now)]);
    assert_eq!(
        world.vcenter.open_sessions(),
        0,
        "a vCenter session was left open: {run:?}"
    );
    run
}

/// The name of the test process's real user, as otnsx records a run by hand (every run sets
/// `USER=alice`, which otnsx must not believe).
pub fn real_user() -> String {
    let output = Command::new("id").arg("-run").output().expect("run id");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Whether the tests run as root (CI does): some cases need it, and skip without it.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `text` with what changes from run to run replaced: the world's directory by `[DIR]`, the
/// fakes' ports by `[PORT]`, journal entry ids by `[ID]`, their times by `[TS]` and their
/// chain hashes (over the id and time) by `[HASH]`.
pub fn redact(world: &World, text: &str) -> String {
    let mut out = text.replace(&world.dir.path().display().to_string(), "[DIR]");
    for (marker, end) in [("127.0.0.1:", |c: char| !c.is_ascii_digit())] {
        let mut redacted = String::new();
        let mut rest = out.as_str();
        while let Some(at) = rest.find(marker) {
            redacted.push_str(&rest[..at + marker.len()]);
            rest = &rest[at + marker.len()..];
            let digits = rest.find(end).unwrap_or(rest.len());
            redacted.push_str("[PORT]");
            rest = &rest[digits..];
        }
        redacted.push_str(rest);
        out = redacted;
    }
    out.lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(mut entry) if entry.get("id").is_some() => {
                    entry["id"] = "[ID]".into();
                    entry["ts"] = "[TS]".into();
                    if entry.get("hash").is_some() {
                        entry["hash"] = "[HASH]".into();
                    }
                    entry.to_string()
                }
                _ => line.to_string(),
            },
        )
        .map(|line| line + "\n")
        .collect()
}

/// Compares `actual` with the file `tests/golden/NAME` (snapbox: a diff when they differ;
/// `SNAPSHOTS=overwrite cargo test` rewrites the file).
pub fn golden(name: &str, actual: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    snapshot(&path, actual);
}

/// Compares `actual` with the file at `path`, as [`golden`] does.
pub fn snapshot(path: &std::path::Path, actual: &str) {
    snapbox::Assert::new()
        .action_env(snapbox::assert::DEFAULT_ACTION_ENV)
        .eq(
            actual.to_string(),
            snapbox::Data::read_from(path, None).raw(),
        );
}

/// What a refused event leaves: no VM name looked up in vCenter, nothing changed in NSX-V, no
/// vCenter session left open. (NSX's view and the vCenter login are had beside the ticket read,
/// before anything is refused.)
pub fn nothing_looked_up_or_changed(world: &World) {
    let lookups: Vec<String> = world
        .vcenter
        .requests()
        .iter()
        .filter(|r| r.path == "/api/vcenter/vm")
        .map(|r| r.line())
        .collect();
    assert!(lookups.is_empty(), "looked up: {lookups:?}");
    assert!(
        world.nsx.changes().is_empty(),
        "NSX changed: {:?}",
        world.nsx.changes()
    );
    assert_eq!(
        world.vcenter.open_sessions(),
        0,
        "a vCenter session left open"
    );
}

pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_otnsx"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .env("USER", "alice")
        .output()
        .expect("run otnsx");
    Run::of(output)
}

impl Run {
    fn of(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// otnsx started in the background with the world's configuration, its output piped.
pub fn spawn(world: &World, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_otnsx"))
        .arg("--config")
        .arg(world.config_path())
        .args(args)
        .env_clear()
        .env("USER", "alice")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start otnsx")
}

/// What a run started with [`spawn`] did, once it ends.
pub fn finish(child: std::process::Child) -> Run {
    Run::of(child.wait_with_output().expect("wait for otnsx"))
}

/// The help desk's call for a ticket: `otnsx <TICKET_NUMBER> <TICKET_ID>`.
pub fn event(world: &World, ticket: (u64, &str)) -> Run {
    let id = ticket.0.to_string();
    let run = otnsx(world, &[ticket.1, &id]);
    assert_eq!(
        world.vcenter.open_sessions(),
        0,
        "a vCenter session was left open: {run:?}"
    );
    run
}

/// Locks the ticket in the fake help desk and runs the event.
pub fn lock(world: &World, ticket: (u64, &str)) -> Run {
    world.helpdesk.set_lock(ticket.0, "lock");
    event(world, ticket)
}

pub fn unlock(world: &World, ticket: (u64, &str)) -> Run {
    world.helpdesk.set_lock(ticket.0, "unlock");
    event(world, ticket)
}

/// The journal's `action` values of decisions (notes left out), in order.
/// The leases that hold a VM open (not the detaches still to do that a failed attach leaves).
pub fn open_leases(world: &World) -> Vec<serde_json::Value> {
    world
        .leases()
        .into_iter()
        .filter(|l| l["state"] != "detach_failed")
        .collect()
}

pub fn actions(world: &World) -> Vec<String> {
    world
        .journal()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .filter(|a| a != "note")
        .collect()
}

/// Asserts that a refusal was journaled with `says` in its detail and told in a ticket note.
pub fn refused_and_noted(world: &World, says: &str) {
    let refused = world
        .journal()
        .into_iter()
        .find(|e| e["action"] == "refused")
        .expect("a refusal is journaled");
    assert!(
        refused["detail"].as_str().unwrap_or("").contains(says),
        "{refused}"
    );
    assert!(
        world
            .helpdesk
            .requests()
            .iter()
            .any(|r| r.method == "PATCH"),
        "the refusal is noted in the ticket"
    );
}

/// The journal's entries about notes posted to tickets.
pub fn note_entries(world: &World) -> Vec<serde_json::Value> {
    world
        .journal()
        .into_iter()
        .filter(|e| e["action"] == "note")
        .collect()
}
