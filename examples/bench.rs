//! `cargo run --release --example bench [-- RUNS [KIND|reconcile|state|history|burst]]`: how long the help
//! desk waits on otnsx.
//!
//! Builds the release binary and runs it as the help desk does (`otnsx NUMBER ID`, a process per
//! event) against the simulated services on 127.0.0.1, each answering after an injected delay
//! (0, 5 and 25 ms: a round trip). For lock and unlock on NSX-V and NSX-T, and for a ticket naming
//! ten VMs, it prints the median and p95 wall time, the requests and connections per service of
//! one event, the longest chain of requests that followed one another, and the ratio of the
//! median to the floor (the requests that must follow one another, times the delay). Then the
//! start-up time (`--version`) and the largest resident set of any run.

#![allow(unsafe_code)] // wait4, for each child's peak resident set

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::server::Server;
use support::{T2, World, uuids};

/// The requests that must follow one another: lock = TicketGet → look-up → attach → read-back →
/// note; unlock = TicketGet → detach → read-back → note; ten VMs add two (bounded parallel
/// look-ups and changes).
const LOCK_FLOOR: u32 = 5;
const UNLOCK_FLOOR: u32 = 4;
/// nsx-policy, with `[vcenter]` finding the VM and the bench's operation answering `Running` to
/// its first status read: lock = TicketGet (beside it the vCenter login) → vCenter look-up by
/// name (beside it TicketHistoryGet) → vCenter read of the VM's instance UUID → NSX read of the
/// VM by that external id (its tags read with it) → tag operation (PUT) → its status (Running;
/// beside it the read of the VM that must show the change) → its status (Success) → note.
/// Unlock = TicketGet (beside it the read of the leased VM) → tag operation → status (Running;
/// beside it the VM read) → status (Success) → note. A VM counts as changed only when the status
/// names it with Success and a read made after the operation shows the change, so neither
/// status read nor the operation can be left off.
const POLICY_LOCK_FLOOR: u32 = 8;
const POLICY_UNLOCK_FLOOR: u32 = 5;

/// The requests of `kind`'s lock and unlock that must follow one another.
fn floors(kind: &str) -> (u32, u32) {
    match kind {
        "nsx-policy" => (POLICY_LOCK_FLOOR, POLICY_UNLOCK_FLOOR),
        _ => (LOCK_FLOOR, UNLOCK_FLOOR),
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "--rusage-of") {
        rusage_of(args);
    }
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(21);
    // `-- RUNS reconcile` runs only the reconcile part, `-- RUNS state` only the comparison
    // of the state backends.
    let only_reconcile = std::env::args().nth(2).as_deref() == Some("reconcile");
    let binary = support::release_binary();
    if std::env::args().nth(2).as_deref() == Some("state") {
        state_backends(&binary, runs);
        return;
    }
    // `-- RUNS burst`: fifty lock (and unlock) events at once.
    if std::env::args().nth(2).as_deref() == Some("burst") {
        burst(&binary, runs.min(5));
        return;
    }
    // `-- RUNS history`: only `history` over 100,000 entries, file and table (and with
    // OTNSX_BENCH_BASELINE=PATH the file read by that binary too).
    if std::env::args().nth(2).as_deref() == Some("history") {
        if support::pg::available("bench") {
            history_over(&binary, 100_000, runs.min(11));
        }
        return;
    }
    println!(
        "{:<20} {:>5} {:>9} {:>9} {:>6} {:>5}  requests h/vc/nsx  connections h/vc/nsx  RSS MiB",
        "event", "delay", "median", "p95", "ratio", "chain"
    );
    let mut peak_rss = 0;
    let kinds = ["nsx-v", "nsx-t", "nsx-t/nsx", "nsx-policy", "policy/agent"];
    // `-- RUNS KIND` (one of `kinds`): only the events on that backend, no reconcile.
    let only_kind = std::env::args()
        .nth(2)
        .filter(|k| kinds.contains(&k.as_str()));
    for nsx in kinds
        .into_iter()
        .filter(|k| !only_reconcile && only_kind.as_deref().is_none_or(|o| o == *k))
    {
        for vms in [1, 10] {
            for delay in [0, 5, 25] {
                let bench = Bench::new(nsx, vms, Duration::from_millis(delay), &binary);
                let (lock_floor, unlock_floor) = floors(nsx);
                for (event, floor) in [("lock", lock_floor), ("unlock", unlock_floor)] {
                    let floor = floor + if vms > 1 { 2 } else { 0 };
                    let result = bench.measure(event, runs);
                    peak_rss = peak_rss.max(result.rss_kib);
                    let name = format!("{nsx} {event} {vms}vm");
                    result.print(&name, delay, floor);
                }
            }
        }
    }
    if only_kind.is_some() {
        return;
    }
    for repair in [0, 100] {
        reconcile(&binary, repair, runs.min(5));
    }
    let mut version = Vec::new();
    for _ in 0..runs.max(11) {
        let started = Instant::now();
        let status = Command::new(&binary)
            .arg("--version")
            .output()
            .expect("run");
        assert!(status.status.success());
        version.push(started.elapsed());
    }
    version.sort();
    println!(
        "--version: median {:.1} ms; largest resident set of any event: {:.1} MiB; release binary {:.1} MiB",
        ms(version[version.len() / 2]),
        peak_rss as f64 / 1024.0,
        std::fs::metadata(&binary).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64
    );
}

/// Reconcile over 2,000 leases of locked tickets on 2,000 tagged VMs among 5,000, at 5 ms per
/// request; with `repair`, that many of them have lost their tag behind otnsx's back.
fn reconcile(binary: &std::path::Path, repair: usize, runs: usize) {
    let world = World::new();
    let now = otnsx::time::Timestamp::now();
    let (granted, expires) = (
        otnsx::time::Timestamp(now.0 - 3600),
        now.plus(Duration::from_secs(7 * 3600)),
    );
    let mut leases = Vec::new();
    for i in 0..5_000u64 {
        let (id, name) = (format!("vm-{}", 10_000 + i), format!("fleet{i:04}"));
        world.vcenter.add_vm(&id, &name, "group-v1");
        world.nsx.add_vm(&id, &name);
        if i < 2_000 {
            let (ticket, number) = (100_000 + i, format!("20261123{:08}", 100_000 + i));
            world.helpdesk.add_ticket(ticket, &number, json!(name));
            world.helpdesk.set_lock(ticket, "lock");
            world.nsx.attach_by_hand(support::TAG_ID, &id);
            leases.push(json!({"vm": name, "vm_id": id,
                "holder": {"kind": "ticket", "id": ticket, "number": number},
                "granted_at": granted.to_string(), "expires_at": expires.to_string()}));
        }
    }
    std::fs::create_dir_all(world.state_dir()).expect("state dir");
    let text = serde_json::to_string(&json!({"version": 1, "leases": leases})).expect("json");
    std::fs::write(world.state_dir().join("leases.json"), text).expect("leases");
    for server in servers(&world) {
        server.set_delay(Duration::from_millis(5));
    }
    let mut times = Vec::new();
    let mut cpu = Duration::ZERO;
    let mut requests = 0;
    for round in 0..=runs {
        for i in 0..repair {
            world
                .nsx
                .detach_by_hand(support::TAG_ID, &format!("vm-{}", 10_000 + i));
        }
        for server in servers(&world) {
            server.clear_log();
        }
        let started = Instant::now();
        let mut command = Command::new(binary);
        command
            .args(["--config".as_ref(), world.config_path().as_os_str()])
            .arg("reconcile")
            .env_clear();
        let (code, _, used, stderr) = run_child(command);
        assert_eq!(code, 0, "reconcile: {stderr}");
        if round > 0 {
            times.push(started.elapsed());
            cpu = cpu.max(used);
            requests = servers(&world).iter().map(|s| s.spans().len()).sum();
        }
    }
    times.sort();
    println!(
        "reconcile, 2,000 leases, {repair} to repair, 5 ms: median {:.0} ms, CPU {:.0} ms, {requests} requests",
        ms(times[times.len() / 2]),
        ms(cpu)
    );
}

/// `-- RUNS state`: a lock and an unlock event (NSX-V, services at 0 and 25 ms) with the state
/// in files and in PostgreSQL (the server of `OTNSX_TEST_POSTGRES`, on loopback): directly, and
/// through a proxy that delays every answer of the database by 5 ms and counts the round trips
/// (each answer the client waited for: [`support::pg::LatencyProxy::turns`]; the fewest and
/// the most of one run). With
/// OTNSX_BENCH_PGBOUNCER=PATH also through that PgBouncer on loopback in front of the proxy
/// (transaction pooling), to count what a connection kept on the node would save (an
/// experiment: otnsx does not document a pooler as a supported set-up). Then `history` over
/// 100,000 journal entries in a file and in the table.
fn state_backends(binary: &std::path::Path, runs: usize) {
    if !support::pg::available("bench") {
        return;
    }
    const DB_DELAY: Duration = Duration::from_millis(5);
    println!(
        "{:<20} {:>5} {:>9} {:>9} {:>6} {:>5}  requests h/vc/nsx  connections h/vc/nsx  RSS MiB",
        "event", "delay", "median", "p95", "ratio", "chain"
    );
    let mut medians = std::collections::BTreeMap::new();
    let mut counted = std::collections::BTreeMap::new();
    // "N" or "N-M": the fewest and the most round trips the proxy counted in one run.
    let range = |(low, high): (usize, usize)| {
        if low == high {
            low.to_string()
        } else {
            format!("{low}-{high}")
        }
    };
    for delay in [0, 25] {
        let pooler = std::env::var_os("OTNSX_BENCH_PGBOUNCER");
        let pooled = pooler.as_ref().map(|_| "postgres+5ms, pooled");
        for state in ["file", "postgres", "postgres+5ms"]
            .into_iter()
            .chain(pooled)
        {
            let world = match state {
                "file" => World::new(),
                _ => World::on_postgres("bench", binary).expect("a server"),
            };
            let proxy = state.starts_with("postgres+5ms").then(|| {
                let db = world.db.as_ref().expect("db");
                let upstream = db.url.split('@').nth(1).unwrap().split('/').next().unwrap();
                let proxy = support::pg::LatencyProxy::start(upstream, DB_DELAY);
                let mut to = proxy.addr();
                let pool = pooler.as_ref().filter(|_| state.ends_with("pooled"));
                let pool = pool.map(|program| Pooler::start(program, &world, &proxy.addr()));
                if let Some(pool) = &pool {
                    to = pool.addr.clone();
                }
                let text = world.config_text().replace(upstream, &to);
                world.write_config(&text);
                (proxy, pool)
            });
            let mut bench =
                Bench::in_world(world, "nsx-v", 1, Duration::from_millis(delay), binary);
            bench.db_turns = proxy.as_ref().map(|(proxy, _)| proxy.turns());
            for (event, floor) in [("lock", LOCK_FLOOR), ("unlock", UNLOCK_FLOOR)] {
                let result = bench.measure(event, runs);
                result.print(&format!("{state} {event}"), delay, floor);
                medians.insert((delay, state, event), result.times[result.times.len() / 2]);
                if let Some(turns) = result.db_turns {
                    counted.insert((delay, state, event), turns);
                }
            }
        }
    }
    for delay in [0, 25] {
        for event in ["lock", "unlock"] {
            if let Some(pooled) = medians.get(&(delay, "postgres+5ms, pooled", event)) {
                println!(
                    "{event} at {delay} ms through a pooler beside otnsx: {:+.1} ms beside the file store, {} round trips between the pooler and the server",
                    ms(*pooled) - ms(medians[&(delay, "file", event)]),
                    range(counted[&(delay, "postgres+5ms, pooled", event)])
                );
            }
            let file = medians[&(delay, "file", event)];
            let direct = medians[&(delay, "postgres", event)];
            let slowed = medians[&(delay, "postgres+5ms", event)];
            println!(
                "{event} at {delay} ms: postgres {:+.1} ms beside the file store on loopback; with 5 ms per database round trip {:+.1} ms, {} round trips (the connection's included)",
                ms(direct) - ms(file),
                ms(slowed) - ms(file),
                range(counted[&(delay, "postgres+5ms", event)])
            );
        }
    }
    history_over(binary, 100_000, runs.min(5));
}

/// `-- RUNS burst`: fifty lock events at once on fifty tickets and fifty VMs (NSX-V, services
/// at 25 ms per request), as agents locking tickets in the same second send them, then their
/// fifty unlocks at once: on the file store, and on PostgreSQL with two nodes (every other
/// event on each; the server of `OTNSX_TEST_POSTGRES`), and with OTNSX_BENCH_PGBOUNCER=PATH
/// through that PgBouncer too (transaction pooling, its default pool of 20 server connections,
/// one per node as PgBouncer on each help-desk node would be). Prints, per round, how many runs exited
/// 0, the wall time of all, and the median and p95 of a run, beside one event's median alone.
/// (Issue 25's figures: every run exits 0, all within 2 s, p95 within 3 x one event's median.)
fn burst(binary: &std::path::Path, rounds: usize) {
    const EVENTS: usize = 50;
    const DELAY: Duration = Duration::from_millis(25);
    let pooler = std::env::var_os("OTNSX_BENCH_PGBOUNCER");
    let pooled = pooler
        .as_ref()
        .map(|_| "postgres through PgBouncer, two nodes");
    for state in ["file", "postgres, two nodes"].into_iter().chain(pooled) {
        let world = match state {
            "file" => World::new(),
            _ => match World::on_postgres("bench", binary) {
                Ok(world) => world,
                Err(why) => {
                    println!("{state}: not measured ({why})");
                    continue;
                }
            },
        };
        // PgBouncer on each node, in front of the server.
        let mut pools = Vec::new();
        if let Some(program) = pooler.as_ref().filter(|_| state.contains("PgBouncer")) {
            let db = world.db.as_ref().expect("db");
            let upstream = db
                .url
                .split('@')
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string();
            let pool = Pooler::start(program, &world, &upstream);
            let text = world.config_text().replace(&upstream, &pool.addr);
            world.write_config(&text);
            pools.push((pool, upstream));
        }
        let mut nodes = vec![world.config_path()];
        if state != "file" {
            let text = world.config_text().replacen(
                &format!("state_dir = \"{}/state\"", world.dir.path().display()),
                &format!("state_dir = \"{}/node2\"", world.dir.path().display()),
                1,
            );
            let text = match (&pools.first(), pooler.as_ref()) {
                (Some((first, upstream)), Some(program)) => {
                    let second = Pooler::start(program, &world, upstream);
                    let text = text.replace(&first.addr, &second.addr);
                    pools.push((second, upstream.clone()));
                    text
                }
                _ => text,
            };
            let path = world.dir.path().join("node2.toml");
            std::fs::write(&path, text).expect("node2.toml");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            nodes.push(path);
        }
        let tickets: Vec<(u64, String)> = (0..EVENTS)
            .map(|n| {
                let (id, name) = (format!("vm-{}", 300 + n), format!("burst{n:02}"));
                world.vcenter.add_vm(&id, &name, "group-v1");
                world.nsx.add_vm(&id, &name);
                let ticket = (2000 + n as u64, format!("20261206{:08}", 2000 + n));
                world.helpdesk.add_ticket(ticket.0, &ticket.1, json!(name));
                ticket
            })
            .collect();
        for server in servers(&world) {
            server.set_delay(DELAY);
        }
        // Its exit code, wall time and CPU time (user and system).
        #[expect(clippy::zombie_processes, reason = "wait() waits for it, by its pid")]
        let event = |node: usize, ticket: &(u64, String)| -> (i32, Duration, Duration) {
            let started = Instant::now();
            let child = Command::new(binary)
                .args(["--config".as_ref(), nodes[node].as_os_str()])
                .arg(&ticket.1)
                .arg(ticket.0.to_string())
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("run otnsx");
            let (code, _, cpu) = wait(child.id());
            (code, started.elapsed(), cpu)
        };
        // One event alone, for comparison (the first pair makes the sessions).
        let mut alone = Vec::new();
        for round in 0..=5 {
            for lock in ["lock", "unlock"] {
                world.helpdesk.set_lock(tickets[0].0, lock);
                let (code, took, _) = event(0, &tickets[0]);
                assert_eq!(code, 0, "{lock} alone");
                if round > 0 && lock == "lock" {
                    alone.push(took);
                }
            }
        }
        alone.sort();
        let single = alone[alone.len() / 2];
        println!(
            "{state}: one lock event alone at 25 ms: median {:.0} ms",
            ms(single)
        );
        for round in 0..rounds {
            for lock in ["lock", "unlock"] {
                for ticket in &tickets {
                    world.helpdesk.set_lock(ticket.0, lock);
                }
                let started = Instant::now();
                let mut results: Vec<(i32, Duration, Duration)> = std::thread::scope(|scope| {
                    let handles: Vec<_> = tickets
                        .iter()
                        .enumerate()
                        .map(|(n, ticket)| {
                            let (event, count) = (&event, nodes.len());
                            scope.spawn(move || event(n % count, ticket))
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let wall = started.elapsed();
                results.sort_by_key(|(_, took, _)| *took);
                let ok = results.iter().filter(|(code, _, _)| *code == 0).count();
                let cpu: Duration = results.iter().map(|(_, _, cpu)| *cpu).sum();
                let median = results[results.len() / 2].1;
                let p95 = results[(results.len() * 95 / 100).min(results.len() - 1)].1;
                println!(
                    "{state}: round {}: {EVENTS} {lock} events at once: {ok} exited 0; all done in {:.2} s; a run's median {:.0} ms, p95 {:.0} ms ({:.1} x one event alone); otnsx's CPU {:.1} ms a run, {:.0} ms in all",
                    round + 1,
                    wall.as_secs_f64(),
                    ms(median),
                    ms(p95),
                    ms(p95) / ms(single),
                    ms(cpu) / EVENTS as f64,
                    ms(cpu)
                );
            }
        }
    }
}

/// A PgBouncer (the program named by OTNSX_BENCH_PGBOUNCER) on loopback in front of
/// `upstream`, pooling by transaction, as it would run on each help-desk node: otnsx's login
/// then stays on the node, and only the statements cross to the database.
struct Pooler {
    addr: String,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Pooler {
    fn start(program: &std::ffi::OsStr, world: &World, upstream: &str) -> Pooler {
        use std::os::unix::fs::PermissionsExt;
        let db = world.db.as_ref().expect("db");
        let user = db
            .url
            .split("://")
            .nth(1)
            .unwrap()
            .split('@')
            .next()
            .unwrap();
        let mut client = db.client();
        let secret: String = client
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&user],
            )
            .expect("the user's SCRAM secret")
            .get(0);
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("otnsx-bench-pooler-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (host, upstream_port) = upstream.split_once(':').unwrap();
        let d = dir.display();
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"{secret}\"\n")).unwrap();
        // otnsx forces standard_conforming_strings in its startup options; the pooler does
        // not pass options on (the server's default is the same).
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={upstream_port}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {d}/users.txt\npool_mode = transaction\nignore_startup_parameters = options\nmax_client_conn = 500\ndefault_pool_size = 20\n"
            ),
        )
        .unwrap();
        for file in ["users.txt", "pgbouncer.ini"] {
            let path = dir.join(file);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        // It refuses to run as root: as the servers' user when that is set.
        let mut command = match std::env::var("OTNSX_TEST_POSTGRES_RUN_AS") {
            Ok(run_as) if unsafe { libc::geteuid() } == 0 => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={run_as}"),
                    format!("--regid={run_as}"),
                    "--clear-groups".into(),
                    "--".into(),
                ])
                .arg(program);
                c
            }
            _ => Command::new(program),
        };
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pgbouncer");
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pgbouncer did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Pooler { addr, child, dir }
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `history` over `entries` journal entries (a year of a busy site), from the file and from
/// the table (imported with `otnsx state import`).
fn history_over(binary: &std::path::Path, entries: usize, runs: usize) {
    let world = World::on_postgres("bench", binary).expect("a server");
    let old = world.dir.path().join("old");
    std::fs::create_dir_all(&old).expect("dir");
    let mut text = String::new();
    for i in 0..entries {
        let (vm, id) = (
            format!("fleet{:04}", i % 5000),
            format!("vm-{}", 10_000 + i % 5000),
        );
        let ts = otnsx::time::Timestamp(1_764_547_200 + (i as i64) * 300);
        let (action, key) = if i % 2 == 0 {
            ("grant", "gained")
        } else {
            ("revoke", "lost")
        };
        let ticket = 100_000 + i / 2;
        text.push_str(&format!(
            "{{\"id\":\"bench.{i}\",\"ts\":\"{ts}\",\"action\":\"{action}\",\"ticket_number\":\"20261201{ticket:08}\",\"ticket_id\":{ticket},\"vm\":\"{vm}\",\"vm_id\":\"{id}\",\"result\":\"ok\",\"detail\":\"{action} {vm} ({id})\",\"actor\":\"helpdesk:agent{}\",\"cause\":\"lock\",\"{key}\":[{{\"kind\":\"ticket\",\"id\":{ticket},\"number\":\"20261201{ticket:08}\"}}]}}\n",
            i % 40
        ));
    }
    std::fs::write(old.join("journal.jsonl"), &text).expect("journal");
    let files = world.dir.path().join("files.toml");
    let file_config = world
        .config_text()
        .replace(&world.state_section(), "")
        .replacen("/state\"", "/old\"", 1);
    std::fs::write(&files, file_config).expect("config");
    let started = Instant::now();
    let mut import = Command::new(binary);
    import
        .args(["--config".as_ref(), world.config_path().as_os_str()])
        .args(["state", "import", "--from-file"])
        .arg(&old)
        .env_clear();
    let (code, _, _, stderr) = run_child(import);
    assert_eq!(code, 0, "import: {stderr}");
    println!(
        "state import of {entries} journal entries: {:.0} ms",
        ms(started.elapsed())
    );
    // A year's journal has been vacuumed along the way (hint bits set, statistics made); just
    // imported, the first reads would do that work, and autovacuum would run beside them.
    world
        .db
        .as_ref()
        .expect("db")
        .execute("VACUUM ANALYZE otnsx_journal");
    let filters: [&[&str]; 3] = [
        &[],
        &["--vm", "fleet0042"],
        &["--ticket", "2026120100100042"],
    ];
    // OTNSX_BENCH_BASELINE=PATH: also the file store read by another otnsx binary (an older
    // build), to compare with what was there before a change.
    let baseline = std::env::var_os("OTNSX_BENCH_BASELINE").map(std::path::PathBuf::from);
    let mut readers = vec![
        ("file", binary.to_path_buf(), files.clone()),
        ("postgres", binary.to_path_buf(), world.config_path()),
    ];
    if let Some(old) = baseline {
        readers.push(("file, baseline binary", old, files.clone()));
    }
    // The readers take turns, run by run, so that a busy moment of the machine falls on all.
    for only in filters {
        let mut times = vec![Vec::new(); readers.len()];
        let mut rss = vec![0; readers.len()];
        for _ in 0..=runs {
            for (i, (_, reader, config)) in readers.iter().enumerate() {
                let mut command = Command::new(reader);
                command
                    .args(["--config".as_ref(), config.as_os_str()])
                    .args(["history", "--json"])
                    .args(only)
                    .env_clear();
                let started = Instant::now();
                let (code, peak, _, stderr) = run_child(command);
                assert_eq!(code, 0, "history: {stderr}");
                times[i].push(started.elapsed());
                rss[i] = rss[i].max(peak);
            }
        }
        for (i, (name, _, _)) in readers.iter().enumerate() {
            times[i].sort();
            println!(
                "history {} over {entries} entries, {name}: median {:.0} ms, {:.1} MiB resident",
                only.join(" "),
                ms(times[i][times[i].len() / 2]),
                rss[i] as f64 / 1024.0
            );
        }
    }
}

struct Bench<'a> {
    world: World,
    binary: &'a std::path::Path,
    ticket: (u64, String),
    /// The database's round trips so far, counted by the proxy in front of it (see
    /// [`support::pg::LatencyProxy::turns`]).
    db_turns: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
}

struct Measured {
    times: Vec<Duration>,
    requests: [usize; 3],
    connections: [usize; 3],
    chain: usize,
    rss_kib: i64,
    /// The fewest and the most database round trips one measured run made.
    db_turns: Option<(usize, usize)>,
}

impl<'a> Bench<'a> {
    fn new(nsx: &str, vms: usize, delay: Duration, binary: &'a std::path::Path) -> Bench<'a> {
        Bench::in_world(World::new(), nsx, vms, delay, binary)
    }

    fn in_world(
        world: World,
        nsx: &str,
        vms: usize,
        delay: Duration,
        binary: &'a std::path::Path,
    ) -> Bench<'a> {
        let mut names = vec!["web01".to_string()];
        for n in 1..vms {
            let (id, name) = (format!("vm-{}", 100 + n), format!("bench{n:02}"));
            world.vcenter.add_vm(&id, &name, "group-v1");
            world.nsx.add_vm(&id, &name);
            let (instance, bios) = uuids(&id);
            let compute = [
                format!("instanceUuid:{instance}"),
                format!("biosUuid:{bios}"),
            ];
            world.nsxt.add_vm(&name, &instance, &compute, &[]);
            names.push(name);
        }
        let ticket = if vms == 1 {
            (T2.0, T2.1.to_string())
        } else {
            world
                .helpdesk
                .add_ticket(9, "2026112310000091", json!(names.join(",")));
            (9, "2026112310000091".to_string())
        };
        // nsx-t/nsx: NSX-T with `resolve = "nsx"` (VMs found by name in NSX's inventory).
        match nsx {
            "nsx-t" => world.write_config(&world.config_text_nsxt("", true)),
            "nsx-t/nsx" => world.write_config(&world.config_text_nsxt("resolve = \"nsx\"", false)),
            // nsx-policy: the Policy backend with a role limited to tags; one status read
            // answers Running before the operation ends.
            "nsx-policy" => {
                world.nsxt.running_polls(1);
                world.write_config(&world.config_text_policy(support::nsxt::TAGGER, "", true));
            }
            // policy/agent: per-agent rules instead of the tag (agent1's desktop, SSH).
            "policy/agent" => {
                world
                    .nsxt
                    .add_security_policy("default", "otnsx-jit", false);
                let text = world.config_text_policy(support::nsxt::FIREWALLER, "", true);
                world.write_config(&format!(
                    "{text}\n[source]\nmode = \"agent\"\nsecurity_policy = \"otnsx-jit\"\nservices = [\"/infra/services/SSH\"]\n\n[agents]\nagent1 = [\"10.1.2.3/32\"]\n"
                ));
            }
            _ => {}
        }
        for server in servers(&world) {
            server.set_delay(delay);
        }
        Bench {
            world,
            binary,
            ticket,
            db_turns: None,
        }
    }

    /// Runs `event` `runs` times (after one run that makes the help desk session and is not
    /// counted), each preceded by the opposite event so that every run changes NSX.
    fn measure(&self, event: &str, runs: usize) -> Measured {
        let other = if event == "lock" { "unlock" } else { "lock" };
        let mut times = Vec::new();
        let mut measured = Measured {
            times: Vec::new(),
            requests: [0; 3],
            connections: [0; 3],
            chain: 0,
            rss_kib: 0,
            db_turns: None,
        };
        let turns = || {
            self.db_turns
                .as_ref()
                .map(|t| t.load(std::sync::atomic::Ordering::SeqCst))
        };
        for round in 0..=runs {
            self.run(other);
            let servers = servers(&self.world);
            let before: Vec<usize> = servers.iter().map(|s| s.connections()).collect();
            for server in &servers {
                server.clear_log();
            }
            let turns_before = turns();
            let started = Instant::now();
            measured.rss_kib = measured.rss_kib.max(self.run(event));
            let took = started.elapsed();
            if round == 0 {
                continue;
            }
            if let (Some(before), Some(after)) = (turns_before, turns()) {
                let n = after - before;
                measured.db_turns = Some(match measured.db_turns {
                    None => (n, n),
                    Some((low, high)) => (low.min(n), high.max(n)),
                });
            }
            times.push(took);
            let spans: Vec<_> = servers.iter().flat_map(|s| s.spans()).collect();
            measured.chain = measured.chain.max(chain(spans));
            let count = |i: usize, s: &[&Server]| match i {
                0 => s[0].spans().len(),
                1 => s[1].spans().len(),
                _ => s[2].spans().len() + s[3].spans().len(),
            };
            for i in 0..3 {
                measured.requests[i] = count(i, &servers);
                let connections = |k: usize| servers[k].connections() - before[k];
                measured.connections[i] = match i {
                    2 => connections(2) + connections(3),
                    k => connections(k),
                };
            }
        }
        times.sort();
        measured.times = times;
        measured
    }

    /// One event as the help desk runs it; returns the child's peak resident set in KiB.
    fn run(&self, lock: &str) -> i64 {
        self.world.helpdesk.set_lock(self.ticket.0, lock);
        let config = self.world.config_path();
        let mut command = Command::new(self.binary);
        command
            .args(["--config".as_ref(), config.as_os_str()])
            .arg(&self.ticket.1)
            .arg(self.ticket.0.to_string())
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        let (code, rss, _, stderr) = run_child(command);
        assert_eq!(code, 0, "{lock}: {stderr}");
        rss
    }
}

impl Measured {
    fn print(&self, name: &str, delay: u64, floor: u32) {
        let median = self.times[self.times.len() / 2];
        let p95 = self.times[(self.times.len() * 95 / 100).min(self.times.len() - 1)];
        let ratio = if delay == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", ms(median) / (f64::from(floor) * delay as f64))
        };
        let [h, v, n] = self.requests;
        let [ch, cv, cn] = self.connections;
        println!(
            "{name:<20} {:>3}ms {:>7.1}ms {:>7.1}ms {ratio:>6} {:>5}  {h:>2}/{v:>2}/{n:>2}            {ch}/{cv}/{cn}       {:>5.1}",
            delay,
            ms(median),
            ms(p95),
            self.chain,
            self.rss_kib as f64 / 1024.0
        );
    }
}

/// The help desk, vCenter, NSX-V and NSX-T servers.
fn servers(world: &World) -> [&Server; 4] {
    [
        &world.helpdesk.server,
        &world.vcenter.server,
        &world.nsx.server,
        &world.nsxt.server,
    ]
}

/// The most requests that followed one another (each began after the one before was
/// answered): the chain the event waited on.
fn chain(mut spans: Vec<(Instant, Instant)>) -> usize {
    spans.sort_by_key(|(_, end)| *end);
    let mut count = 0;
    let mut last_end: Option<Instant> = None;
    for (start, end) in spans {
        if last_end.is_none_or(|last| start >= last) {
            count += 1;
            last_end = Some(end);
        }
    }
    count
}

/// Runs `command` (stdout dropped): its exit status, peak resident set in KiB, CPU time and
/// stderr.
#[allow(clippy::zombie_processes)] // waited for by wait4, which also tells its rusage
/// Runs `command` through a small helper (this program, started afresh with
/// `--rusage-of`), which runs it and reports its peak resident set and CPU time. Run directly,
/// a child's peak resident set would include this process's, which grows with the fakes'
/// request logs: Linux keeps the high-water mark of the memory a child was forked with across
/// its exec.
fn run_child(command: Command) -> (i32, i64, Duration, String) {
    let mut helper = Command::new(std::env::current_exe().expect("this program"));
    helper.arg("--rusage-of").arg(command.get_program());
    helper.args(command.get_args());
    helper.env_clear();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            helper.env(key, value);
        }
    }
    let output = helper
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run otnsx");
    let report = String::from_utf8_lossy(&output.stdout);
    let mut fields = report
        .split_whitespace()
        .map(|f| f.parse::<i64>().unwrap_or(0));
    let (rss, cpu_us) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
    (
        output.status.code().unwrap_or(-1),
        rss,
        Duration::from_micros(u64::try_from(cpu_us).unwrap_or(0)),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `--rusage-of PROGRAM ARGS...`: runs it (its output to null, its errors through), and
/// prints its peak resident set (KiB) and CPU time (µs); exits with its code.
fn rusage_of(mut args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    let program = args.next().expect("a program");
    let child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run it");
    let (code, rss, cpu) = wait(child.id());
    println!("{rss} {}", cpu.as_micros());
    std::process::exit(code);
}

/// Waits for the child `pid`: its exit status, its peak resident set in KiB, and the CPU time
/// it used (user and system).
fn wait(pid: u32) -> (i32, i64, Duration) {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: wait4 writes the status and a whole rusage into the pointers it is given; the
    // child is ours and not yet waited for.
    let usage = unsafe {
        let pid = libc::pid_t::try_from(pid).unwrap_or(-1);
        assert_eq!(libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()), pid);
        usage.assume_init()
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    (
        code,
        usage.ru_maxrss,
        time(usage.ru_utime) + time(usage.ru_stime),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
