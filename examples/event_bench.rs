//! `cargo run --release --example event_bench`: how long the help desk's web request waits on
//! otnsx, and how many requests one event makes. Starts the simulated help desk, vCenter and
//! NSX-V on 127.0.0.1 and runs 100 lock and 100 unlock events in process (the lease file and
//! journal written and fsynced as in production), then prints the median and slowest of each,
//! and the requests per event by service, on stderr.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{T2, World};

fn main() {
    let world = World::new();
    let config = world.config_path().to_str().unwrap_or_default().to_string();
    let id = T2.0.to_string();
    let mut lock = Vec::new();
    let mut unlock = Vec::new();
    let mut requests = (0, 0, 0);
    for round in 0..100 {
        for (state, times) in [("lock", &mut lock), ("unlock", &mut unlock)] {
            world.helpdesk.set_lock(T2.0, state);
            let before = (
                world.helpdesk.requests().len(),
                world.vcenter.requests().len(),
                world.nsx.requests().len(),
            );
            let started = Instant::now();
            let code = otnsx::main_with(["otnsx", "--config", config.as_str(), T2.1, id.as_str()]);
            times.push(started.elapsed());
            assert_eq!(code, std::process::ExitCode::SUCCESS);
            if round == 0 && state == "lock" {
                requests = (
                    world.helpdesk.requests().len() - before.0,
                    world.vcenter.requests().len() - before.1,
                    world.nsx.requests().len() - before.2,
                );
            }
        }
    }
    let report = |name: &str, times: &mut Vec<Duration>| {
        times.sort();
        eprintln!(
            "{name:6} event: median {:.1} ms, slowest {:.1} ms (100 runs)",
            times[50].as_secs_f64() * 1e3,
            times[99].as_secs_f64() * 1e3
        );
    };
    report("lock", &mut lock);
    report("unlock", &mut unlock);
    eprintln!(
        "requests of one lock event: help desk {}, vCenter {}, NSX {} (the fake NSX-V pages its tag list 5 at a time)",
        requests.0, requests.1, requests.2
    );
}
