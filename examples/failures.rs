//! `cargo run --release --example failures`: how long an unlock takes, and what it closes,
//! when something other than NSX fails (issue "closing depends on NSX alone").
//!
//! Builds the release binary and, for each failure mode, locks ticket 2 (web01) against the
//! simulated services on 127.0.0.1, breaks one thing, and runs the unlock as the help desk does
//! (`otnsx NUMBER ID`, deadline 5 s). Prints the unlock's exit status and wall time, and whether
//! web01 is closed in NSX afterwards; then what the next `reconcile` does. The PostgreSQL modes
//! run when OTNSX_TEST_POSTGRES is set (as `.ci/postgres.sh` sets it).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::server::{Response, Server};
use support::{T2, TAG_ID, World};

const DEADLINE: &str = "5s";

/// Breaks one thing in a world whose ticket 2 holds web01; what it returns is kept alive
/// until the unlock has run (a server that hangs, a lock held).
type Break = fn(&World, &std::path::Path) -> Option<Box<dyn std::any::Any>>;

struct Outcome {
    code: i32,
    took: Duration,
    closed: bool,
    after: String,
}

fn main() {
    let binary = support::release_binary();
    println!("deadline {DEADLINE}; unlock of ticket 2 holding web01, then `reconcile`");
    println!(
        "{:<48} {:>5} {:>8}  {:<8} reconcile after",
        "failure", "exit", "unlock", "web01"
    );
    let modes: Vec<(&str, Break)> = vec![
        ("nothing fails", |_, _| None),
        ("help desk refuses otnsx's login", |w, _| {
            w.helpdesk.set_password("otnsx", "rotated-with-a-typo");
            w.helpdesk.expire_sessions();
            None
        }),
        ("help desk unreachable (connection refused)", |w, _| {
            set_config(w, &w.helpdesk.url(), "http://127.0.0.1:9/otrs");
            None
        }),
        ("help desk accepts and never answers", |w, _| {
            let hung = Server::start(|_| Response::empty(200).delayed(Duration::from_secs(60)));
            set_config(w, &w.helpdesk.url(), &hung.url());
            Some(Box::new(hung))
        }),
        ("state lock held by a hung run", |w, _| {
            let held = std::fs::File::open(w.state_dir().join("leases.lock")).expect("lock file");
            held.lock().expect("lock");
            Some(Box::new(held))
        }),
        ("journal cannot be written", |w, _| {
            let journal = w.state_dir().join("journal.jsonl");
            std::fs::rename(&journal, w.state_dir().join("journal.aside")).expect("aside");
            std::fs::create_dir(&journal).expect("dir");
            None
        }),
        ("lease file damaged", |w, _| {
            std::fs::write(w.state_dir().join("leases.json"), "{\"version\":1,\"lea")
                .expect("write");
            None
        }),
    ];
    for (name, break_it) in modes {
        let outcome = measure(&binary, None, break_it, false);
        print(name, &outcome);
    }
    // The daemon's inherited SIGCHLD: the help desk's password comes from a command.
    let outcome = measure(
        &binary,
        None,
        |w, _| {
            let path = w.dir.path().join("vault.sh");
            let secret = w.dir.path().join("otrs.secret");
            std::fs::write(&path, format!("#!/bin/sh\ncat {}\n", secret.display())).expect("vault");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("mode");
            let text = std::fs::read_to_string(w.config_path()).expect("config");
            let text = text.replacen(
                &format!("password_file = \"{}\"", secret.display()),
                &format!("password_command = [\"{}\"]", path.display()),
                1,
            );
            w.write_config(&text);
            None
        },
        true,
    );
    print("daemon ignores SIGCHLD, password_command", &outcome);
    // An attach NSX applies after otnsx gave up on it: the lock fails, the tag lands late.
    let outcome = measure_late_attach(&binary);
    print("an attach that lands after the deadline", &outcome);
    if !support::pg::available("failures") {
        println!("(PostgreSQL modes skipped: OTNSX_TEST_POSTGRES is not set)");
        return;
    }
    let pg_modes: Vec<(&str, Break)> = vec![
        ("PostgreSQL: nothing fails", |_, _| None),
        ("PostgreSQL: accepts and never answers", |w, _| {
            let silent = support::pg::SilentServer::start();
            point_db(w, &silent.addr());
            Some(Box::new(silent))
        }),
        ("PostgreSQL: refuses the login", |w, _| {
            std::fs::write(w.dir.path().join("db.secret"), "wrong\n").expect("secret");
            None
        }),
        ("PostgreSQL: read-only (hot standby)", |w, _| {
            let db = w.db.as_ref().expect("db");
            let name = db.url.rsplit('/').next().expect("name").to_string();
            db.execute(&format!(
                "ALTER DATABASE {name} SET default_transaction_read_only = on"
            ));
            None
        }),
        ("PostgreSQL: state lock held by a stuck session", |w, _| {
            let db = w.db.as_ref().expect("db");
            let mut client = db.client();
            client
                .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(478694765432)")
                .expect("lock");
            Some(Box::new(client))
        }),
    ];
    for (name, break_it) in pg_modes {
        let world = World::on_postgres("failures", &binary).expect("a server");
        let outcome = measure(&binary, Some(world), break_it, false);
        print(name, &outcome);
    }
}

fn print(name: &str, o: &Outcome) {
    println!(
        "{:<48} {:>5} {:>6.2} s  {:<8} {}",
        name,
        o.code,
        o.took.as_secs_f64(),
        if o.closed { "closed" } else { "OPEN" },
        o.after
    );
}

fn set_config(world: &World, from: &str, to: &str) {
    let text = std::fs::read_to_string(world.config_path()).expect("config");
    world.write_config(&text.replace(from, to));
}

fn point_db(world: &World, addr: &str) {
    let url = &world.db.as_ref().expect("db").url;
    let upstream = url
        .split('@')
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("addr");
    set_config(world, upstream, addr);
}

fn world_with_deadline(world: Option<World>) -> World {
    let world = world.unwrap_or_else(World::new);
    let text = world.config_text().replacen(
        "deadline = \"10s\"",
        &format!("deadline = \"{DEADLINE}\""),
        1,
    );
    world.write_config(&text);
    world
}

fn otnsx(
    binary: &std::path::Path,
    world: &World,
    args: &[&str],
    ignore_sigchld: bool,
) -> (i32, Duration) {
    let mut command = if ignore_sigchld {
        let mut c = Command::new("perl");
        c.arg("-e")
            .arg("$SIG{CHLD} = 'IGNORE'; exec @ARGV or die")
            .arg("--")
            .arg(binary);
        c
    } else {
        Command::new(binary)
    };
    command
        .arg("--config")
        .arg(world.config_path())
        .args(args)
        .env_clear()
        .env("USER", "alice");
    let started = Instant::now();
    let output = command.output().expect("run otnsx");
    (output.status.code().unwrap_or(-1), started.elapsed())
}

fn measure(
    binary: &std::path::Path,
    world: Option<World>,
    break_it: impl Fn(&World, &std::path::Path) -> Option<Box<dyn std::any::Any>>,
    ignore_sigchld: bool,
) -> Outcome {
    let world = world_with_deadline(world);
    world.helpdesk.set_lock(T2.0, "lock");
    let (code, _) = otnsx(binary, &world, &[T2.1, "2"], false);
    assert_eq!(code, 0, "the lock before the failure");
    assert!(world.tagged().contains("vm-42"));
    let kept = break_it(&world, binary);
    world.helpdesk.set_lock(T2.0, "unlock");
    let (code, took) = otnsx(binary, &world, &[T2.1, "2"], ignore_sigchld);
    drop(kept);
    outcome(binary, &world, code, took)
}

fn measure_late_attach(binary: &std::path::Path) -> Outcome {
    let world = world_with_deadline(None);
    world.nsx.lie_on_attach(true);
    world.helpdesk.set_lock(T2.0, "lock");
    let (code, _) = otnsx(binary, &world, &[T2.1, "2"], false);
    assert_eq!(code, 69, "the attach that does not read back");
    world.nsx.lie_on_attach(false);
    world.nsx.attach_by_hand(TAG_ID, "vm-42");
    world.helpdesk.set_lock(T2.0, "unlock");
    let (code, took) = otnsx(binary, &world, &[T2.1, "2"], false);
    outcome(binary, &world, code, took)
}

/// The unlock's exit status and time, whether web01 is closed now, and what the next
/// `reconcile` does.
fn outcome(binary: &std::path::Path, world: &World, code: i32, took: Duration) -> Outcome {
    let closed = !world.tagged().contains("vm-42");
    let (after_code, _) = otnsx(binary, world, &["reconcile"], false);
    let web01 = match world.tagged().contains("vm-42") {
        true => "OPEN",
        false => "closed",
    };
    Outcome {
        code,
        took,
        closed,
        after: format!("exit {after_code}, web01 {web01}"),
    }
}
