//! `cargo run --release --example store_bench`: what a lock and an unlock event cost with a
//! large lease store. Writes a lease file of 20,000 leases (and then 300,000), starts the
//! simulated help desk, vCenter and NSX-V on 127.0.0.1, and runs 20 lock and 20 unlock events
//! in process (the lease file and journal written and fsynced as in production), printing the
//! median and slowest of each, and the lease file's size, on stderr.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{T2, World};

fn main() {
    for count in [20_000usize, 300_000] {
        let world = World::new();
        let config = world.config_path().to_str().unwrap_or_default().to_string();
        let id = T2.0.to_string();
        std::fs::create_dir_all(world.state_dir()).expect("state dir");
        let leases: Vec<serde_json::Value> = (0..count)
            .map(|i| {
                serde_json::json!({
                    "vm": format!("bulk{i:06}"), "vm_id": format!("vm-{}", 100_000 + i),
                    "holder": {"kind": "ticket", "id": 1_000_000 + i, "number": format!("2026112{i:09}")},
                    "granted_at": "2026-11-23T15:36:43Z", "expires_at": "2026-11-23T23:36:43Z"
                })
            })
            .collect();
        let text =
            serde_json::to_string_pretty(&serde_json::json!({"version": 1, "leases": leases}))
                .expect("json");
        let path = world.state_dir().join("leases.json");
        std::fs::write(&path, text).expect("write leases");
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let rounds = if count > 100_000 { 5 } else { 20 };
        let mut lock = Vec::new();
        let mut unlock = Vec::new();
        for _ in 0..rounds {
            for (state, times) in [("lock", &mut lock), ("unlock", &mut unlock)] {
                world.helpdesk.set_lock(T2.0, state);
                let started = Instant::now();
                let code =
                    otnsx::main_with(["otnsx", "--config", config.as_str(), T2.1, id.as_str()]);
                times.push(started.elapsed());
                assert_eq!(code, std::process::ExitCode::SUCCESS);
            }
        }
        let report = |name: &str, times: &mut Vec<Duration>| {
            times.sort();
            eprintln!(
                "{count:7} leases ({:.1} MiB), {name:6} event: median {:.1} ms, slowest {:.1} ms ({} runs)",
                size as f64 / f64::from(1 << 20),
                times[times.len() / 2].as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3,
                times.len()
            );
        };
        report("lock", &mut lock);
        report("unlock", &mut unlock);
    }
}
