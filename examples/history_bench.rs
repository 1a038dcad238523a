//! `cargo run --release --example history_bench > /dev/null`: times `otnsx history` over a
//! journal of 100,000 lines (a year of a busy help desk: 50,000 access periods on 500 VMs),
//! in process, five times, and prints the fastest and the median on stderr. The report itself
//! goes to stdout; send it to /dev/null so that the terminal is not what is measured.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const LINES: usize = 100_000;

fn main() {
    let dir = std::env::temp_dir().join(format!("otnsx-history-bench-{}", std::process::id()));
    let state = dir.join("state");
    fs::create_dir_all(&state).expect("state dir");
    let config = dir.join("otnsx.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[vcenter]\nurl = \"https://vc.invalid\"\nuser = \"u\"\npassword = \"p\"\n\
             [nsx]\nkind = \"nsx-v\"\nurl = \"https://nsx.invalid\"\nuser = \"u\"\npassword = \"p\"\ntag = \"t\"\n",
            state.display()
        ),
    )
    .expect("config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).expect("chmod");

    // Open and close pairs, one minute apart, spread over a year.
    let mut journal = String::with_capacity(LINES * 330);
    let start = 1_764_547_200i64; // 2025-12-01T00:00:00Z
    for i in 0..LINES / 2 {
        let vm = i % 500;
        let ticket = 2_025_120_110_000_000u64 + i as u64;
        let opened = start + (i as i64) * 600;
        for (offset, action, key, cause) in [
            (0, "grant", "gained", "lock"),
            (3600, "revoke", "lost", "unlock"),
        ] {
            let ts = format_ts(opened + offset);
            let _ = writeln!(
                journal,
                r#"{{"ts":"{ts}","action":"{action}","ticket_number":"{ticket}","ticket_id":{i},"vm":"vm{vm:03}","vm_id":"vm-{vm}","result":"ok","detail":"{action} vm{vm:03} (vm-{vm})","actor":"helpdesk:agent{}","cause":"{cause}","{key}":[{{"kind":"ticket","id":{i},"number":"{ticket}"}}]}}"#,
                i % 40
            );
        }
    }
    fs::write(state.join("journal.jsonl"), &journal).expect("journal");
    eprintln!("journal: {LINES} lines, {} MiB", journal.len() >> 20);

    let config = config.to_str().expect("utf-8 path").to_string();
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let code = otnsx::main_with(["otnsx", "--config", &config, "history", "--json"]);
            assert_eq!(code, std::process::ExitCode::SUCCESS);
            started.elapsed()
        })
        .collect();
    times.sort();
    eprintln!(
        "otnsx history --json over {LINES} lines: fastest {:.0} ms, median {:.0} ms (5 runs)",
        times[0].as_secs_f64() * 1e3,
        times[2].as_secs_f64() * 1e3
    );
    fs::remove_dir_all(&dir).ok();
}

fn format_ts(secs: i64) -> String {
    otnsx::time::Timestamp(secs).to_string()
}
