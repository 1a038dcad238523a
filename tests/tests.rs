//! Integration tests: the real binary against in-process fakes of the help desk, vCenter and
//! NSX-V (see `support/`). One test binary, so the suite links once.
//!
//! Its harness is libtest-mimic's (`harness = false` in Cargo.toml): libtest's output and
//! arguments, and a test that needs what this machine lacks (a PostgreSQL server, `../shared`,
//! the help desks, root) calls [`skip`] and is reported as `ignored (reason)`, counted among the
//! ignored in the summary, instead of passing without having run. Under CI it fails instead.

#![allow(clippy::unwrap_used)]

mod support;

/// The modules of `it/`, one file each: every one gives its tests with [`tests!`].
macro_rules! modules {
    ($($module:ident),* $(,)?) => {
        mod it {
            $(pub mod $module;)*
        }

        /// The files of `it/` that are part of the suite.
        const MODULES: &[&str] = &[$(stringify!($module)),*];

        /// Every test of the suite.
        fn all_tests() -> Vec<Test> {
            let mut all = Vec::new();
            $(all.extend(it::$module::tests());)*
            all.push(Test::new(
                "support::agent_ui::the_challenge_token_is_read_from_a_form",
                support::agent_ui::tests::the_challenge_token_is_read_from_a_form,
            ));
            all.push(Test::new(
                "harness::every_test_function_is_given_to_the_harness",
                every_test_function_is_given_to_the_harness,
            ));
            all
        }
    };
}

modules!(
    agent_rules,
    approval,
    bounded,
    check,
    cli,
    concurrency,
    config,
    crash,
    docs,
    e2e,
    fail_closed,
    fakes,
    faults,
    fuzz_seeds,
    helpdesk_files,
    history,
    hostile,
    intake,
    journal,
    keys,
    layers,
    lifecycle,
    manual,
    notes,
    nsx_policy,
    nsxt,
    package,
    pg_bouncer,
    pg_connect,
    pg_faults,
    policy,
    policy_owned,
    postgres,
    profiles,
    shaped,
    shared,
    signals,
    state,
    ticket,
    tls,
    verify_group,
);

/// The tests of one file of `it/`, named as libtest would name them (`it::FILE::NAME`):
///
/// ```ignore
/// crate::tests! {
///     a_test,                  // fn a_test()
///     ; on_both_backends:
///     a_test_on_both,          // fn a_test_on_both(world: World)
///     ; and: more_tests        // fn more_tests() -> Vec<crate::Test>
/// }
/// ```
///
/// A function of `on_both_backends` is a test twice: on the state directory (`FILE::file::NAME`)
/// and on the PostgreSQL backend (`FILE::postgres::NAME`, ignored, and said why, when no server
/// can be had; see `support/pg.rs`).
///
/// This binary has its own harness (`harness = false`, libtest-mimic): a test that cannot run
/// here is reported as ignored with its reason, decided when it runs, which libtest cannot do.
/// So `#[test]` does nothing here (rustc drops such a function): a test is a plain `fn` listed
/// in its file's `tests!`, and one left out is a function never used (a warning).
#[macro_export]
macro_rules! tests {
    (
        $($name:ident),* $(,)?
        $(; on_both_backends: $($both:ident),* $(,)?)?
        $(; and: $more:path)?
    ) => {
        /// This file's tests, for the harness (`tests/tests.rs`).
        #[allow(unused_variables, unused_mut)]
        pub fn tests() -> Vec<$crate::Test> {
            let here = $crate::test_path(module_path!());
            let mut all = vec![
                $($crate::Test::new(format!("{here}::{}", stringify!($name)), $name),)*
            ];
            $($(
                all.push($crate::Test::new(
                    format!("{here}::file::{}", stringify!($both)),
                    || $both($crate::support::World::new()),
                ));
                all.push($crate::Test::new(
                    format!("{here}::postgres::{}", stringify!($both)),
                    || {
                        let test = format!("{}::postgres::{}", module_path!(), stringify!($both));
                        $both($crate::pg_world(&test))
                    },
                ));
            )*)?
            $(all.extend($more());)?
            all
        }
    };
}

/// One test of the suite: its name and what it runs.
pub struct Test {
    name: String,
    run: Box<dyn FnOnce() + Send>,
}

impl Test {
    pub fn new(name: impl Into<String>, run: impl FnOnce() + Send + 'static) -> Test {
        Test {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// A test's module path as libtest names it (without the crate's name).
pub fn test_path(module: &str) -> &str {
    module.strip_prefix("tests::").unwrap_or(module)
}

/// Why a test was stopped by [`skip`] (the payload it unwinds with).
struct Skipped(String);

/// Ends the running test as not run here because of `why` (what it needs that this machine
/// lacks): the harness reports it as ignored, with `why`. Under CI (the variable `CI` set) the
/// test fails instead: CI must run every test.
pub fn skip(why: impl std::fmt::Display) -> ! {
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI must run this test, not skip it");
    }
    // Not a panic: no panic message, and the harness tells it from a failure.
    std::panic::resume_unwind(Box::new(Skipped(why.to_string())))
}

fn main() -> std::process::ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    // As libtest: RUST_TEST_THREADS when --test-threads is not given.
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let tests = all_tests();
    let mut names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
        panic!("the test {} is listed twice", twice[0]);
    }
    let trials = tests
        .into_iter()
        .map(|test| {
            let run = test.run;
            libtest_mimic::Trial::ignorable_test(test.name, move || match std::panic::catch_unwind(
                std::panic::AssertUnwindSafe(run),
            ) {
                Ok(()) => Ok(libtest_mimic::Completion::Completed),
                Err(payload) => match payload.downcast::<Skipped>() {
                    Ok(skipped) => Ok(libtest_mimic::Completion::ignored_with(skipped.0)),
                    Err(payload) => std::panic::resume_unwind(payload),
                },
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // The PostgreSQL server the tests started for themselves, if they did.
    support::pg::stop_own_server();
    conclusion.exit_code()
}

/// Under this harness `#[test]` drops a function without a word: none may be left in the
/// tests, and every file of `it/` must be one of [`MODULES`].
fn every_test_function_is_given_to_the_harness() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut wrong = Vec::new();
    for dir in ["it", "support"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        for file in files {
            let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
            if dir == "it" && !MODULES.contains(&stem.as_str()) {
                wrong.push(format!("{}: not in tests.rs's modules!", file.display()));
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with(concat!("#[", "test")) {
                    wrong.push(format!(
                        "{}:{}: `{}` (list the function in the file's crate::tests! instead)",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "tests the harness would never run:\n{}",
        wrong.join("\n")
    );
}

use std::process::{Command, Output};

use support::World;

/// A world on the PostgreSQL backend (see [`World::on_postgres`]); without a server the test
/// is skipped (see [`skip`]).
pub fn pg_world(test: &str) -> World {
    World::on_postgres(test, std::path::Path::new(env!("CARGO_BIN_EXE_otnsx")))
        .unwrap_or_else(|why| skip(why))
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

/// Whether the tests run as root (CI does): some cases need it, and skip without it (see
/// [`skip`]).
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
