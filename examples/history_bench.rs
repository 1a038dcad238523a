//! `cargo run --release --example history_bench > /dev/null`: times `otnsx history` and
//! `otnsx history --verify` over a chained journal of 100,000 lines (a year of a busy help desk:
//! 50,000 access periods on 500 VMs) in ten files, five of them compressed, in process, five
//! times each, and prints the fastest and the median on stderr. The report itself
//! goes to stdout; send it to /dev/null so that the terminal is not what is measured.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
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

    // Open and close pairs, one minute apart, spread over a year, chained as otnsx writes
    // them, in ten files: nine rotated (the older five compressed, as reconcile leaves them)
    // and the live one.
    let mut files: Vec<String> = vec![String::new()];
    let mut head = otnsx::chain::Head::genesis();
    let mut bytes = 0;
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
            let line = format!(
                r#"{{"id":"1.{i}.{offset}","ts":"{ts}","action":"{action}","ticket_number":"{ticket}","ticket_id":{i},"vm":"vm{vm:03}","vm_id":"vm-{vm}","result":"ok","detail":"{action} vm{vm:03} (vm-{vm})","actor":"helpdesk:agent{} (user-id {})","cause":"{cause}","{key}":[{{"kind":"ticket","id":{i},"number":"{ticket}"}}]}}"#,
                i % 40,
                i % 40 + 2
            );
            let (chained, next) = otnsx::chain::link(&head, &line).expect("an object");
            head = next;
            bytes += chained.len() + 1;
            let _ = writeln!(files.last_mut().expect("a file"), "{chained}");
        }
        if (i + 1) % (LINES / 20) == 0 && i + 1 < LINES / 2 {
            files.push(String::new());
        }
    }
    let last = files.len() - 1;
    for (n, text) in files.iter().enumerate() {
        if n == last {
            fs::write(state.join("journal.jsonl"), text).expect("journal");
        } else if n < 5 {
            let out = fs::File::create(
                state.join(format!("journal-2026{:02}01T000000Z.jsonl.gz", n + 1)),
            )
            .expect("rotated");
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            gz.write_all(text.as_bytes()).expect("compress");
            gz.finish().expect("compress");
        } else {
            fs::write(
                state.join(format!("journal-2026{:02}01T000000Z.jsonl", n + 1)),
                text,
            )
            .expect("rotated");
        }
    }
    eprintln!(
        "journal: {LINES} lines, {} MiB, in {} files (5 of them compressed)",
        bytes >> 20,
        files.len()
    );

    let config = config.to_str().expect("utf-8 path").to_string();
    for extra in [&[][..], &["--verify"][..]] {
        let mut args = vec!["otnsx", "--config", &config, "history", "--json"];
        args.extend_from_slice(extra);
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                let code = otnsx::main_with(args.clone());
                assert_eq!(code, std::process::ExitCode::SUCCESS);
                started.elapsed()
            })
            .collect();
        times.sort();
        eprintln!(
            "otnsx {} over {LINES} lines: fastest {:.0} ms, median {:.0} ms (5 runs)",
            args[3..].join(" "),
            times[0].as_secs_f64() * 1e3,
            times[2].as_secs_f64() * 1e3
        );
    }
    fs::remove_dir_all(&dir).ok();
}

fn format_ts(secs: i64) -> String {
    otnsx::time::Timestamp(secs).to_string()
}
