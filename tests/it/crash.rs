//! otnsx killed (SIGKILL) at random points, 200 times, while it changes the leases: the lease
//! file always parses, and says what the journal says, counting the entries saved with the
//! leases that the killed run had no time to append (the next run appends them). Whatever NSX
//! was left with, reconcile then brings in line.

use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::otnsx;
use crate::support::{World, set};

/// Whether the test's user holds web01, by the journal's last decision about it, the lease file's
/// outbox included.
fn journal_says(world: &World) -> bool {
    let (mut entries, _) = world.journal_with_torn();
    let file: serde_json::Value = std::fs::read_to_string(world.state_dir().join("leases.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_default();
    for pending in file["outbox"].as_array().into_iter().flatten() {
        if !entries.iter().any(|e| e["id"] == pending["id"]) {
            entries.push(pending.clone());
        }
    }
    let mut held = false;
    let alice = serde_json::json!({"kind": "user", "name": crate::real_user()});
    for entry in entries {
        let has = |key: &str| entry[key].as_array().is_some_and(|a| a.contains(&alice));
        if entry["vm_id"] == "vm-42" && has("gained") {
            held = true;
        }
        if entry["vm_id"] == "vm-42" && has("lost") {
            held = false;
        }
    }
    held
}

fn killed_runs_never_leave_a_broken_or_lying_lease_file() {
    let world = World::new();
    // OTNSX_SEED=<seed> replays a run; the seed is printed either way.
    let seed = std::env::var("OTNSX_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("crash test seed {seed} (OTNSX_SEED={seed} replays it)");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let config = world.config_path();
    // Kill times spread over a whole run, measured here: grant and revoke once, unhurried.
    let started = std::time::Instant::now();
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    assert_eq!(otnsx(&world, &["revoke", "--vm", "web01"]).code, 0);
    let mut span = (started.elapsed().as_micros() as u64 / 2).max(1000) * 5 / 4;
    let mut killed = 0;
    for round in 0..200 {
        let grant = round % 2 == 0;
        let args: &[&str] = if grant {
            &["grant", "--vm", "web01"]
        } else {
            &["revoke", "--vm", "web01"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_otnsx"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_clear()
            .env("USER", "alice")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_micros(next() % span));
        // Aim at killing about half the runs, however fast the machine is right now.
        if child.try_wait().unwrap().is_none() {
            killed += 1;
            span = span * 11 / 10;
        } else {
            span = (span * 9 / 10).max(500);
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let leases = world.leases(); // panics if the file does not parse
        let in_file = leases
            .iter()
            .any(|l| l["vm_id"] == "vm-42" && l["holder"]["name"] == crate::real_user().as_str());
        let journal = journal_says(&world);
        assert_eq!(
            in_file,
            journal,
            "seed {seed}, round {round}: the lease file and the journal disagree after a killed {}",
            if grant { "grant" } else { "revoke" }
        );
    }
    eprintln!("killed {killed} of 200 runs mid-way (seed {seed}, last kill window {span} µs)");
    assert!(
        killed > 20,
        "seed {seed}: only {killed} runs were killed mid-way; the test proves little"
    );
    assert!(
        killed < 180,
        "seed {seed}: {killed} of 200 runs were killed mid-way; few got as far as writing"
    );
    let run = otnsx(&world, &["reconcile"]);
    assert!(run.code == 0, "{run:?}");
    let held = world.leases().iter().any(|l| l["vm_id"] == "vm-42");
    assert_eq!(
        world.tagged(),
        if held { set(&["vm-42"]) } else { set(&[]) }
    );
    // Every entry saved with the leases is in the journal now, once; a line cut short by a
    // kill stays a line of its own.
    let (journal, torn) = world.journal_with_torn();
    eprintln!("{} journal lines were cut short by a kill", torn.len());
    let mut ids: Vec<&str> = journal.iter().filter_map(|e| e["id"].as_str()).collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "an entry was appended twice");
}

/// As if the run that journaled `line` last had been killed after saving its lease change,
/// before it let go of the lock: the entry is still in the lease file's outbox (a run that
/// ends takes the entries it journaled out of it).
fn left_in_the_outbox(world: &World, line: &str) {
    let path = world.state_dir().join("leases.json");
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut entry: serde_json::Value = serde_json::from_str(line).unwrap();
    let fields = entry.as_object_mut().unwrap();
    fields.remove("seq");
    fields.remove("hash");
    file["outbox"] = serde_json::json!([entry]);
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
}

fn an_entry_saved_but_not_journaled_is_appended_by_the_next_run() {
    let world = World::new();
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    // As if the grant had been killed after saving, before appending: drop its journal line.
    let journal_path = world.state_dir().join("journal.jsonl");
    let saved = std::fs::read_to_string(&journal_path).unwrap();
    left_in_the_outbox(&world, saved.lines().next().unwrap());
    std::fs::write(&journal_path, "").unwrap();
    // (A run killed before its append never noted the entry as appended either.)
    std::fs::remove_file(world.state_dir().join("journal.appended")).unwrap();
    std::fs::write(
        world.state_dir().join(".leases.json.99999.tmp"),
        "{\"version\":1,\"lea",
    )
    .unwrap();
    let run = otnsx(&world, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("recovered 1 journal entries of an interrupted run"),
        "{}",
        run.stderr
    );
    let mut journal = world.journal();
    assert_eq!(journal.len(), 2);
    let mut first: serde_json::Value = serde_json::from_str(saved.lines().next().unwrap()).unwrap();
    // Recorded afresh, it is chained afresh: its place in the chain is the same, its hash
    // covers the line as written now.
    assert_eq!(journal[0]["seq"], 1);
    first.as_object_mut().unwrap().remove("hash");
    journal[0].as_object_mut().unwrap().remove("hash");
    assert_eq!(
        journal[0], first,
        "the recovered entry is the one that was lost"
    );
    assert_eq!(journal[1]["vm"], "db01");
    // The next run finds nothing to recover, and the stale temporary file is gone.
    let run = otnsx(&world, &["revoke", "--vm", "db01"]);
    assert!(!run.stderr.contains("recovered"), "{}", run.stderr);
    assert_eq!(world.journal().len(), 3);
    assert!(!world.state_dir().join(".leases.json.99999.tmp").exists());
}

fn a_journal_line_cut_short_by_a_kill_swallows_no_entry() {
    let world = World::new();
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    // As if the grant had been killed in the middle of its write: Linux ends a write to a file
    // at a page boundary when SIGKILL arrives, so the line stops after its id.
    let journal_path = world.state_dir().join("journal.jsonl");
    let saved = std::fs::read_to_string(&journal_path).unwrap();
    left_in_the_outbox(&world, saved.lines().next().unwrap());
    let cut = saved.find("\"ts\"").unwrap() + 3;
    std::fs::write(&journal_path, &saved[..cut]).unwrap();
    std::fs::remove_file(world.state_dir().join("journal.appended")).unwrap();
    let run = otnsx(&world, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("recovered 1 journal entries of an interrupted run"),
        "the id on the cut line is no proof that the entry was journaled: {}",
        run.stderr
    );
    let (entries, torn) = world.journal_with_torn();
    assert_eq!(torn, [saved[..cut].to_string()]);
    let vms: Vec<&str> = entries.iter().map(|e| e["vm"].as_str().unwrap()).collect();
    assert_eq!(vms, ["web01", "db01"]);
    let run = otnsx(&world, &["history", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("web01") && run.stdout.contains("db01"),
        "{}",
        run.stdout
    );
}

fn a_rotated_journal_gets_no_entry_twice() {
    let world = World::new();
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    // logrotate's copytruncate: the journal is copied away and emptied.
    let journal = world.state_dir().join("journal.jsonl");
    std::fs::copy(&journal, world.state_dir().join("journal.jsonl.1")).unwrap();
    std::fs::write(&journal, "").unwrap();
    let run = otnsx(&world, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("recovered"), "{}", run.stderr);
    let entries = world.journal();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["vm"], "db01");
}

/// The journal rotated by a run that records without the state lock (a revoke while the lock
/// is busy) between a grant's append and the next run's look at its outbox: the entry is found
/// in the rotated file, not appended again.
fn a_journal_rotated_since_the_last_run_gets_no_entry_twice() {
    let world = World::new();
    world.write_config(
        &format!("{}\n[log]\nrotate_size = \"4KiB\"\n", world.config_text())
            .replace("deadline = \"10s\"", "deadline = \"3s\""),
    );
    let journal_len =
        || std::fs::metadata(world.state_dir().join("journal.jsonl")).map_or(0, |m| m.len());
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    let mut entry = world.journal().pop().unwrap();
    while journal_len() < 4096 {
        assert_eq!(otnsx(&world, &["grant", "--vm", "nosuchvm"]).code, 65);
    }
    // As if the grant had been killed after its append, before its outbox was emptied.
    let members = entry.as_object_mut().unwrap();
    members.remove("seq");
    members.remove("hash");
    let leases_path = world.state_dir().join("leases.json");
    let mut leases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&leases_path).unwrap()).unwrap();
    leases["outbox"] = serde_json::json!([entry]);
    std::fs::write(&leases_path, leases.to_string()).unwrap();
    // A revoke while another run holds the state lock closes and records without it: its
    // entries rotate the journal.
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(world.state_dir().join("leases.lock"))
        .unwrap();
    held.lock().unwrap();
    let run = otnsx(&world, &["revoke", "--vm", "web01"]);
    assert_eq!(run.code, 75, "{run:?}");
    drop(held);
    let rotated = std::fs::read_dir(world.state_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        .count();
    assert_eq!(rotated, 1);
    let run = otnsx(&world, &["grant", "--vm", "db01"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("recovered"), "{}", run.stderr);
    let again = world
        .journal()
        .iter()
        .filter(|e| e["action"] == "grant" && e["vm"] == "web01")
        .count();
    assert_eq!(again, 0, "web01's grant is in the rotated file only");
    let run = otnsx(&world, &["history", "--verify"]);
    assert_eq!(run.code, 0, "{run:?}");
}

crate::tests! {
    killed_runs_never_leave_a_broken_or_lying_lease_file,
    an_entry_saved_but_not_journaled_is_appended_by_the_next_run,
    a_journal_line_cut_short_by_a_kill_swallows_no_entry,
    a_rotated_journal_gets_no_entry_twice,
    a_journal_rotated_since_the_last_run_gets_no_entry_twice,
}
