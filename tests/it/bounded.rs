//! Bounded memory and time whatever NSX sends: a rule list that pages for ever, a cursor that
//! comes back, an answer too large, an answer of too many values. Each run ends with exit 69
//! and a message naming the list and the limit, within the deadline (10 s) plus 1 s, and its
//! peak resident set (`VmHWM`) stays under 64 MiB.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::nsxt::RuleList;
use crate::support::{T2, World};
use crate::{Run, lock};

/// What otnsx may hold resident, at most.
const MAX_RESIDENT_KIB: u64 = 64 * 1024;
/// The world's deadline, plus the second a run may take past it.
const MAX_RUN: Duration = Duration::from_secs(11);

/// Per-agent rules in the Policy security policy `otnsx-jit` (the rule list is read by every
/// run), with ticket 2 naming web01 under profile ssh.
fn agent_world() -> World {
    let world = crate::it::agent_rules::for_agents(
        World::new(),
        "",
        "agent1 = [\"10.1.2.3/32\"]",
    );
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = json!("web01:ssh"));
    world
}

/// What a run measured: how it ended, how long it took, its peak resident set in KiB.
struct Measured {
    run: Run,
    took: Duration,
    peak_kib: u64,
}

/// Runs otnsx with the world's configuration, reading its peak resident set (`VmHWM` in
/// `/proc/<pid>/status`, the kernel's high-water mark of this process image) every few
/// milliseconds while it runs. (wait4's `ru_maxrss` would not do: a child started with
/// vfork counts the test process's own peak from before its exec.)
fn measured(world: &World, args: &[&str]) -> Measured {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_otnsx"))
        .arg("--config")
        .arg(world.config_path())
        .args(args)
        .env_clear()
        .env("USER", "alice")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start otnsx");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    // The child is not reaped before the sampling ends, so its pid cannot name another
    // process meanwhile; once it has exited, its status has no VmHWM any more.
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    while let Some(kib) = std::fs::read_to_string(&status)
        .ok()
        .and_then(|text| vm_hwm(&text))
    {
        peak_kib = peak_kib.max(kib);
        std::thread::sleep(Duration::from_millis(2));
    }
    let code = child.wait().expect("wait for otnsx").code().unwrap_or(-1);
    let took = started.elapsed();
    Measured {
        run: Run {
            code,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        },
        took,
        peak_kib,
    }
}

/// `VmHWM:   12345 kB` in a `/proc/<pid>/status`.
fn vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The run ended with 69 and `says` on stderr, in time, under 64 MiB resident.
fn bounded(m: &Measured, says: &str) {
    eprintln!(
        "otnsx took {:.1} s, peak resident set {} KiB",
        m.took.as_secs_f64(),
        m.peak_kib
    );
    assert_eq!(m.run.code, 69, "{:?}", m.run);
    assert!(m.run.stderr.contains(says), "{:?}", m.run);
    assert!(m.took < MAX_RUN, "took {:?}: {:?}", m.took, m.run);
    assert!(
        m.peak_kib < MAX_RESIDENT_KIB,
        "peak resident set {} KiB",
        m.peak_kib
    );
}

/// A world where web01's rule is open for ticket 2, and then the rule list misbehaves.
fn opened_then(list: RuleList) -> World {
    let world = agent_world();
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    world.nsxt.rule_list(list);
    world
}

fn a_rule_list_that_pages_for_ever_stops_at_the_limit_within_the_deadline() {
    let world = opened_then(RuleList::Endless { per_page: 1000 });
    let m = measured(&world, &["reconcile"]);
    bounded(
        &m,
        "NSX Policy: listing rules of security policy default/otnsx-jit: more than 1000 pages / 200000 entries / 16 MiB kept; otnsx stops here (a server that pages for ever?)",
    );
    // Every rule on these pages is the site's ALLOW rule: each is kept whole (a stray, to be
    // journaled and removed), so the 16 MiB of what is kept ends the listing before the 200
    // pages of 1000 entries would.
    let pages = world.nsxt.rule_pages();
    assert!((2..201).contains(&pages), "{pages} pages");
}

fn a_rule_list_whose_cursor_comes_back_is_an_error_at_once() {
    let world = opened_then(RuleList::SameCursor);
    let m = measured(&world, &["reconcile"]);
    bounded(
        &m,
        "NSX Policy: listing rules of security policy default/otnsx-jit: the cursor \"c1\" came back after 2 pages; otnsx stops here (a server that pages for ever?)",
    );
    assert_eq!(world.nsxt.rule_pages(), 2);
}

/// `{"results":[{},{},...]}` of about `size` bytes: every `{}` a rule.
fn empty_rules(size: usize) -> RuleList {
    let mut body = b"{\"results\":[".to_vec();
    while body.len() < size {
        body.extend_from_slice(b"{},");
    }
    body.extend_from_slice(b"{}]}");
    RuleList::Body(Arc::new(body))
}

fn an_answer_larger_than_8_mib_is_refused_unread() {
    let world = opened_then(empty_rules(15 << 20));
    let m = measured(&world, &["reconcile"]);
    bounded(&m, "the answer is larger than 8 MiB");
}

fn an_answer_of_too_many_values_is_refused_unparsed() {
    let world = opened_then(empty_rules(7 << 20));
    let m = measured(&world, &["reconcile"]);
    bounded(
        &m,
        "the answer holds more than 200000 JSON values or XML elements",
    );
}

fn a_search_that_pages_for_ever_stops_at_the_limit_and_keeps_only_ids_and_names() {
    let world = World::new();
    world.write_config(&world.config_text_nsxt("", false));
    // 1000 tagged VMs a page: every one is kept, until the limit of what may be kept (16 MiB
    // by otnsx's count: some 70,000 VMs) comes before the limit of entries.
    world.nsxt.endless_search(1000, 6);
    let m = measured(&world, &["reconcile"]);
    bounded(
        &m,
        "NSX-T: searching /api/v1/search/query for the VMs tagged otnsx|maintenance: more than 1000 pages / 200000 entries / 16 MiB kept; otnsx stops here (a server that pages for ever?)",
    );
    let pages = world.nsxt.search_pages();
    assert!((50..200).contains(&pages), "{pages} pages");
}

fn a_search_of_long_names_stops_at_what_may_be_kept() {
    let world = World::new();
    world.write_config(&world.config_text_nsxt("", false));
    // 40 VMs a page with names of 50,000 characters: 2 MB a page, within the limits of one
    // answer; kept, 1,000 pages of them would be 2 GB.
    world.nsxt.endless_search(40, 50_000);
    let m = measured(&world, &["reconcile"]);
    bounded(
        &m,
        "NSX-T: searching /api/v1/search/query for the VMs tagged otnsx|maintenance: more than 1000 pages / 200000 entries / 16 MiB kept",
    );
    // Some 50 KB kept a VM: the 335th VM, on page 9, passes 16 MiB.
    assert_eq!(world.nsxt.search_pages(), 9);
}

crate::tests! {
    a_rule_list_that_pages_for_ever_stops_at_the_limit_within_the_deadline,
    a_rule_list_whose_cursor_comes_back_is_an_error_at_once,
    an_answer_larger_than_8_mib_is_refused_unread,
    an_answer_of_too_many_values_is_refused_unparsed,
    a_search_that_pages_for_ever_stops_at_the_limit_and_keeps_only_ids_and_names,
    a_search_of_long_names_stops_at_what_may_be_kept,
}
