//! The PostgreSQL connection settings (issue 25, items 2 and 4): libpq's URL with several
//! hosts, the writable one found and a read-only one passed over; parameters otnsx cannot
//! honour refused; a failover that costs a retry, not the event (refused connections, or one
//! address answering read-only for a moment); a server that stays down.

use std::time::{Duration, Instant};

use crate::support::pg::{FailoverProxy, LatencyProxy, TestCluster, closed_port};
use crate::support::tls::TestCa;
use crate::support::{T2, T3, World, set};
use crate::{lock, otnsx, pg_world, unlock};

/// The deadline of these tests' runs, and how long a run may take: its deadline and a second.
const DEADLINE: Duration = Duration::from_secs(3);
const BOUND: Duration = Duration::from_secs(4);

/// The `host:port` of the world's database.
fn db_addr(world: &World) -> String {
    let url = &world.db.as_ref().unwrap().url;
    let authority = url.split('@').nth(1).unwrap();
    authority.split('/').next().unwrap().to_string()
}

/// The world's configuration with a deadline of [`DEADLINE`], its database's URL naming
/// `hosts` and ending in `query`.
fn with_hosts(world: &World, hosts: &str, query: &str) {
    let db = world.db.as_ref().unwrap();
    let url = db.url.replacen(&db_addr(world), hosts, 1) + query;
    let text = world
        .config_text()
        .replacen(
            "deadline = \"10s\"",
            &format!("deadline = \"{}s\"", DEADLINE.as_secs()),
            1,
        )
        .replacen(&format!("url = \"{}\"", db.url), &format!("url = \"{url}\""), 1);
    assert!(text.contains(&url), "{text}");
    world.write_config(&text);
}

/// The journal's entries of `action`.
fn journaled(world: &World, action: &str) -> usize {
    world
        .journal()
        .iter()
        .filter(|e| e["action"] == action)
        .count()
}

fn a_read_only_first_host_is_passed_over_for_the_writable_one() {
    let test = "a_read_only_first_host_is_passed_over_for_the_writable_one";
    let world = pg_world(test);
    let cluster = TestCluster::start(test).unwrap_or_else(|why| crate::skip(why));
    let db = world.db.as_ref().unwrap();
    // A server whose sessions are read-only (as a standby's are), with the same database and
    // password: libpq's read-write check, not a failed login, must pass it over.
    cluster.read_only_twin(&db.name, &db.password);
    let standby = format!("127.0.0.1:{}", cluster.port);
    let primary = db_addr(&world);
    with_hosts(
        &world,
        &format!("{standby},{primary}"),
        "?target_session_attrs=read-write&sslmode=verify-full&connect_timeout=2&application_name=otnsx",
    );
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    // The lease is on the writable server (the read-only one has no otnsx tables at all: a
    // run there could not have begun).
    assert_eq!(db.leases().len(), 1, "{:?}", db.leases());
    assert_eq!(journaled(&world, "grant"), 1, "{:?}", world.journal());
    // check names the host that answered, and that it is writable.
    let run = otnsx(&world, &["check"]);
    assert!(
        run.stdout
            .contains(&format!("without TLS); {primary} answered, writable\n")),
        "{}",
        run.stdout
    );
    // The read-only server alone: nothing opens, 74, the host tried named; the unlock still
    // closes in NSX.
    with_hosts(&world, &standby, "");
    let says = "is read-only (a hot standby or a demoted primary?): point state.url at the primary";
    let started = Instant::now();
    let run = lock(&world, T3);
    let took = started.elapsed();
    assert_eq!(run.code, 74, "{run:?}");
    assert!(took < BOUND, "{took:?}");
    assert!(run.stderr.contains(says), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("tried {standby}, none writable")),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let run = unlock(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    assert_eq!(world.tagged(), set(&[]), "{run:?}");
    // check says what it found there.
    let run = otnsx(&world, &["check"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stdout.contains(&format!(
            "; {standby} answered, read-only (no host of the URL is writable)"
        )),
        "{}",
        run.stdout
    );
}

fn parameters_otnsx_cannot_honour_are_refused_by_name() {
    let world = pg_world("parameters_otnsx_cannot_honour_are_refused_by_name");
    let primary = db_addr(&world);
    for (query, says) in [
        ("?target_session_attrs=any", "target_session_attrs=\"any\""),
        ("?target_session_attrs=standby", "target_session_attrs=\"standby\""),
        ("?application_name=helpdesk", "application_name=\"helpdesk\""),
        ("?sslmode=prefer", "use sslmode=verify-full"),
        ("?sslmode=verify-ca", "use sslmode=verify-full"),
        ("?sslmode=require", "accept_unverified_server = true"),
        ("?keepalives=0", "the parameter \"keepalives\" is not supported"),
        ("?password=secret0", "use password_file"),
    ] {
        with_hosts(&world, &primary, query);
        let run = otnsx(&world, &["check"]);
        assert_eq!(run.code, 78, "{query}: {run:?}");
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.contains(says), "{query}: {all}");
        assert!(!all.contains("secret0"), "{query}: {all}");
    }
    // application_name=otnsx and sslmode=disable (loopback) are what otnsx does anyway.
    with_hosts(
        &world,
        &primary,
        "?application_name=otnsx&sslmode=disable&target_session_attrs=read-write",
    );
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
}

fn a_failover_during_a_lock_event_costs_a_retry_not_the_event() {
    let world = pg_world("a_failover_during_a_lock_event_costs_a_retry_not_the_event");
    let db = world.db.as_ref().unwrap();
    // For 150 ms from otnsx's first connection, every connection is reset during its set-up.
    let proxy = FailoverProxy::start(&db_addr(&world), Duration::from_millis(150));
    with_hosts(&world, &proxy.addr(), "");
    let started = Instant::now();
    let run = lock(&world, T2);
    let took = started.elapsed();
    eprintln!("lock through a 150 ms failover: exit {} after {took:.2?}, {:?} (cut, passed)", run.code, proxy.counts());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(took < BOUND, "{took:?}");
    let (cut, passed) = proxy.counts();
    assert!(cut >= 1, "the failover was never met: {cut} cut");
    assert!(passed >= 1, "{passed} passed");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert_eq!(db.leases().len(), 1, "{:?}", db.leases());
    // Journaled once: the retry was of the connection, not of the event.
    assert_eq!(journaled(&world, "grant"), 1, "{:?}", world.journal());
    let ids: std::collections::BTreeSet<String> = world
        .journal()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), world.journal().len());
}

/// One address (a virtual IP, PgBouncer, HAProxy before Patroni) whose server answers
/// read-only for a moment: the run learns it from its first statement (a single host is not
/// asked at connecting, which would cost a round trip of every event), connects again as for
/// several hosts, and opens once the server takes writes; journaled once.
fn one_address_read_only_for_a_moment_costs_a_retry_not_the_event() {
    let world = pg_world("one_address_read_only_for_a_moment_costs_a_retry_not_the_event");
    let db = world.db.as_ref().unwrap();
    let proxy = LatencyProxy::start(&db_addr(&world), Duration::ZERO);
    let turns = proxy.turns();
    with_hosts(&world, &proxy.addr(), "");
    // A writable server: the event's round trips, the connection's 3 (start-up and SCRAM's
    // two) and 3 statements (the lock with the leases, web01's lock, the commit): no `SHOW`.
    let count = || turns.load(std::sync::atomic::Ordering::SeqCst);
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(count(), 6, "round trips of a lock event");
    let before = count();
    assert_eq!(unlock(&world, T2).code, 0);
    assert_eq!(count() - before, 5, "round trips of an unlock event");
    // Read-only from the next session on; writable again once otnsx's first session there
    // had its first statement answered (so it learnt it from that answer).
    let name = &db.name;
    db.execute(&format!(
        "ALTER DATABASE {name} SET default_transaction_read_only = on"
    ));
    world.helpdesk.set_lock(T2.0, "lock");
    let before = count();
    let child = crate::spawn(&world, &[T2.1, "2"]);
    let started = Instant::now();
    while count() < before + 4 {
        assert!(started.elapsed() < BOUND, "otnsx never asked");
        std::thread::sleep(Duration::from_millis(1));
    }
    db.execute(&format!(
        "BEGIN READ WRITE; ALTER DATABASE {name} RESET default_transaction_read_only; COMMIT"
    ));
    let run = crate::finish(child);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(count() - before > 6, "connected once only: {} round trips", count() - before);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert_eq!(db.leases().len(), 1, "{:?}", db.leases());
    assert_eq!(journaled(&world, "grant"), 2, "{:?}", world.journal());
}

fn a_database_that_stays_down_ends_within_the_deadline_and_unlock_still_closes() {
    let world =
        pg_world("a_database_that_stays_down_ends_within_the_deadline_and_unlock_still_closes");
    with_hosts(&world, &db_addr(&world), "");
    assert_eq!(lock(&world, T2).code, 0);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    // Both hosts refuse every connection, for good.
    let (a, b) = (closed_port(), closed_port());
    with_hosts(&world, &format!("127.0.0.1:{a},127.0.0.1:{b}"), "");
    let changes = world.nsx.changes().len();
    let started = Instant::now();
    let run = lock(&world, T3);
    let took = started.elapsed();
    eprintln!(
        "lock with the database down: exit {} after {took:.2?}: {}",
        run.code, run.stderr
    );
    assert_eq!(run.code, 74, "{run:?}");
    assert!(took < BOUND, "{took:?}");
    assert!(
        run.stderr.contains(&format!(
            "no writable server among 127.0.0.1:{a}, 127.0.0.1:{b}"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(world.nsx.changes().len(), changes, "nothing opened");
    let started = Instant::now();
    let run = unlock(&world, T2);
    let took = started.elapsed();
    eprintln!("unlock with the database down: exit {} after {took:.2?}", run.code);
    assert_eq!(run.code, 74, "{run:?}");
    assert!(took < BOUND, "{took:?}");
    assert_eq!(world.tagged(), set(&[]), "the unlock still closes: {run:?}");
}

/// The world's configuration's `[state] url` with `query` appended and `extra` lines after it.
fn with_state(world: &World, query: &str, extra: &str) {
    let db = world.db.as_ref().unwrap();
    let text = world.config_text().replacen(
        &format!("url = \"{}\"", db.url),
        &format!("url = \"{}{query}\"\n{extra}", db.url),
        1,
    );
    assert!(text.contains(query) && text.contains(extra), "{text}");
    world.write_config(&text);
}

fn an_unverified_server_is_taken_only_when_accepted_and_warned_on_every_run() {
    let test = "an_unverified_server_is_taken_only_when_accepted_and_warned_on_every_run";
    let cluster = TestCluster::start(test).unwrap_or_else(|why| crate::skip(why));
    let ca = TestCa::new();
    let leaf = ca.leaf("127.0.0.1", false);
    cluster.with_tls(&leaf.cert_pem(), &leaf.key_pem());
    let world = World::on_database(
        cluster.database(),
        std::path::Path::new(env!("CARGO_BIN_EXE_otnsx")),
    );
    let warning = "TLS verification for the state database";
    let warnings = |world: &World| {
        world
            .journal()
            .iter()
            .filter(|e| {
                e["action"] == "warning"
                    && e["cause"] == "config"
                    && e["detail"].as_str().unwrap_or("").contains(warning)
            })
            .count()
    };
    // sslmode=require alone is refused.
    with_state(&world, "?sslmode=require", "");
    let run = lock(&world, T2);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("accept_unverified_server = true"), "{}", run.stderr);
    // Accepted: TLS to a server whose CA otnsx does not know, warned on stderr and journaled,
    // on every run.
    with_state(&world, "?sslmode=require", "accept_unverified_server = true");
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(warning), "{}", run.stderr);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    assert_eq!(warnings(&world), 1, "{:?}", world.journal());
    let run = otnsx(&world, &["check"]);
    assert!(
        run.stdout.contains("TLS NOT verified (sslmode=require, accept_unverified_server = true)"),
        "{}",
        run.stdout
    );
    // verify-full (the default) with ca_file: TLS even to loopback, the certificate verified;
    // one from another CA is refused at once (74, not retried), and nothing opens.
    let dir = world.dir.path();
    std::fs::write(dir.join("db-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), TestCa::new().pem()).unwrap();
    with_state(
        &world,
        "",
        &format!("ca_file = \"{}\"", dir.join("other-ca.pem").display()),
    );
    let started = Instant::now();
    let run = lock(&world, T3);
    let took = started.elapsed();
    eprintln!(
        "lock to a server of another CA: exit {} after {took:.2?}: {}",
        run.code, run.stderr
    );
    assert_eq!(run.code, 74, "{run:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(run.stderr.contains("TLS"), "{}", run.stderr);
    assert_eq!(world.tagged(), set(&["vm-42"]));
    with_state(
        &world,
        "?sslmode=verify-full",
        &format!("ca_file = \"{}\"", dir.join("db-ca.pem").display()),
    );
    let run = lock(&world, T3);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains(warning), "{}", run.stderr);
    // (Both tickets name web01: now two leases hold it.)
    assert_eq!(world.db.as_ref().unwrap().leases().len(), 2);
    assert_eq!(warnings(&world), 1, "verified runs do not warn");
}

crate::tests! {
    a_read_only_first_host_is_passed_over_for_the_writable_one,
    parameters_otnsx_cannot_honour_are_refused_by_name,
    a_failover_during_a_lock_event_costs_a_retry_not_the_event,
    one_address_read_only_for_a_moment_costs_a_retry_not_the_event,
    a_database_that_stays_down_ends_within_the_deadline_and_unlock_still_closes,
    an_unverified_server_is_taken_only_when_accepted_and_warned_on_every_run,
}
