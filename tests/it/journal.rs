//! The journal file as the audit reads it: rotated by otnsx under its lock without losing an
//! entry, read whole by `history` (rotated and compressed files too), and hash-chained so that
//! `history --verify` names an entry changed, removed or inserted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::World;
use crate::{otnsx, otnsx_at};

/// The world with the journal rotated at `size`.
fn rotating(size: &str) -> World {
    let world = World::new();
    world.write_config(&format!(
        "{}\n[log]\nrotate_size = \"{size}\"\n",
        world.config_text()
    ));
    world
}

/// The journal's files, oldest first (the live one last), by name.
fn journal_files(world: &World) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = fs::read_dir(world.state_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("journal-") && (name.ends_with(".jsonl") || name.ends_with(".gz"))
        })
        .collect();
    // By time, then by the count within a second (`journal-<time>-2.jsonl` after
    // `journal-<time>.jsonl`).
    rotated.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let time = name
            .trim_end_matches(".gz")
            .trim_end_matches(".jsonl")
            .to_string();
        match time.split_once("Z-") {
            Some((time, n)) => (time.to_string(), n.parse::<u32>().unwrap()),
            None => (time.trim_end_matches('Z').to_string(), 1),
        }
    });
    rotated.push(world.state_dir().join("journal.jsonl"));
    rotated
}

/// Every line of a journal file, decompressed if it is.
fn lines_of(path: &Path) -> Vec<String> {
    let bytes = fs::read(path).unwrap();
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .unwrap();
        out
    } else {
        String::from_utf8(bytes).unwrap()
    };
    text.lines().map(str::to_string).collect()
}

fn every_entry(world: &World) -> Vec<Value> {
    journal_files(world)
        .iter()
        .flat_map(|p| lines_of(p))
        .map(|l| serde_json::from_str(&l).expect("every line is an entry"))
        .collect()
}

fn history_json(world: &World, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["history", "--json"];
    all.extend_from_slice(args);
    let run = otnsx(world, &all);
    let report = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.code, report, run.stderr)
}

/// 1,000 runs, four at a time, with the journal rotated about ten times under them (and the
/// rotated files compressed by a reconcile half-way): every entry is in exactly one file, once,
/// in one chain; `history` counts every access period and `--verify` passes.
fn a_thousand_events_across_ten_rotations_lose_nothing() {
    let world = rotating("40KiB");
    let vms = ["web01", "db01", "app01", "cache01"];
    let rounds = 125; // per VM: a grant and a revoke each
    std::thread::scope(|scope| {
        for vm in vms {
            let world = &world;
            scope.spawn(move || {
                for round in 0..rounds {
                    for command in ["grant", "revoke"] {
                        let run = otnsx(world, &[command, "--vm", vm]);
                        assert_eq!(run.code, 0, "{command} {vm}: {run:?}");
                    }
                    if vm == "web01" && round == rounds / 2 {
                        // Compresses what was rotated so far, while the others append.
                        let run = otnsx(world, &["reconcile"]);
                        assert!(run.code == 0, "{run:?}");
                    }
                }
            });
        }
    });
    let files = journal_files(&world);
    let rotated = files.len() - 1;
    assert!(
        (9..=14).contains(&rotated),
        "{rotated} rotations: {files:?}"
    );
    assert!(
        files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "gz")),
        "reconcile compressed the rotated files: {files:?}"
    );
    let entries = every_entry(&world);
    let opened = entries.iter().filter(|e| e["action"] == "grant").count();
    let closed = entries.iter().filter(|e| e["action"] == "revoke").count();
    let rotations = entries.iter().filter(|e| e["action"] == "rotate").count();
    assert_eq!((opened, closed), (500, 500));
    assert_eq!(rotations, rotated, "one rotate entry begins each new file");
    // One chain: seq 1, 2, 3... in file order, every id once.
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=entries.len() as u64).collect::<Vec<_>>());
    let mut ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), entries.len(), "an entry was appended twice");

    let (code, report, stderr) = history_json(&world, &["--verify"]);
    assert_eq!(code, 0, "{stderr}");
    let periods = report["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 500);
    assert!(periods.iter().all(|p| p["closed_by"] == "revoke"));
    let verify = &report["verify"];
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(verify["chained"], entries.len());
    assert_eq!(verify["head_seq"], entries.len());
    assert_eq!(
        verify["head_hash"],
        entries.last().unwrap()["hash"],
        "the head is the last entry's hash"
    );
    // `--since` still means what it says after the rotations: the first periods are in the
    // oldest (compressed) file.
    let (code, report, _) = history_json(&world, &["--since", "1d"]);
    assert_eq!(code, 0);
    assert_eq!(report["periods"].as_array().unwrap().len(), 500);
}

/// A journal of a few entries over two files, for the tampering tests.
fn small_journal() -> World {
    let world = rotating("4KiB");
    for round in 0..14 {
        let vm = if round % 2 == 0 { "web01" } else { "db01" };
        assert_eq!(otnsx(&world, &["grant", "--vm", vm]).code, 0);
        assert_eq!(otnsx(&world, &["revoke", "--vm", vm]).code, 0);
    }
    assert!(
        journal_files(&world).len() >= 3,
        "{:?}",
        journal_files(&world)
    );
    let run = otnsx(&world, &["history", "--verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("journal checked: entries 1 to ")
            && run.stdout.contains("none changed, removed or inserted"),
        "{}",
        run.stdout
    );
    world
}

/// Rewrites the lines of the oldest journal file with `change`.
fn tamper(world: &World, change: impl FnOnce(&mut Vec<String>)) -> String {
    let oldest = journal_files(world).remove(0);
    let mut lines = lines_of(&oldest);
    change(&mut lines);
    fs::write(&oldest, lines.join("\n") + "\n").unwrap();
    oldest.file_name().unwrap().to_string_lossy().into_owned()
}

fn verify_fails(world: &World) -> String {
    let run = otnsx(world, &["history", "--verify"]);
    assert_eq!(run.code, 65, "{run:?}");
    let (code, report, _) = history_json(world, &["--verify"]);
    assert_eq!(code, 65);
    assert_eq!(report["verify"]["intact"], false);
    let broken = report["verify"]["broken"].as_str().unwrap().to_string();
    assert!(
        run.stdout
            .contains(&format!("journal check FAILED: {broken}"))
    );
    broken
}

fn an_edited_line_is_named() {
    let world = small_journal();
    let file = tamper(&world, |lines| {
        // The actor of entry 2 rewritten, its hash left as it was.
        lines[1] = lines[1].replacen("\"actor\":\"", "\"actor\":\"mallory-", 1);
    });
    let broken = verify_fails(&world);
    assert!(
        broken.starts_with(&format!("entry 2 at {file} line 2 (id "))
            && broken
                .ends_with("was changed after it was written: its hash does not match its content"),
        "{broken}"
    );
}

fn a_removed_line_is_named() {
    let world = small_journal();
    let file = tamper(&world, |lines| {
        lines.remove(2);
    });
    let broken = verify_fails(&world);
    assert!(
        broken.starts_with(&format!(
            "entry 3 was removed: it is missing before entry 4 at {file} line 3"
        )),
        "{broken}"
    );
    // The last file removed whole: a gap too, named where the chain goes on.
    let world = small_journal();
    let files = journal_files(&world);
    fs::remove_file(&files[1]).unwrap();
    let broken = verify_fails(&world);
    assert!(
        broken.contains(" were removed: they are missing before entry "),
        "{broken}"
    );
}

fn an_inserted_line_is_named() {
    let world = small_journal();
    let file = tamper(&world, |lines| {
        // A grant that never happened, copied from a real one.
        let forged = lines[0].clone();
        lines.insert(3, forged);
    });
    let broken = verify_fails(&world);
    assert!(
        broken.starts_with(&format!("the line at {file} line 4 (id ")),
        "{broken}"
    );
    // A line without a hash is inserted too.
    let world = small_journal();
    tamper(&world, |lines| {
        let mut entry: Value = serde_json::from_str(&lines[0]).unwrap();
        let members = entry.as_object_mut().unwrap();
        members.remove("seq");
        members.remove("hash");
        lines.insert(2, entry.to_string());
    });
    assert!(verify_fails(&world).contains("line 3"));
}

/// The first files removed (retired by hand): a gap at the start, unless `--since` asks only
/// for what the files still here cover.
fn a_chain_whose_first_files_are_gone_is_reported() {
    let world = rotating("4KiB");
    for (i, vm) in ["web01", "db01", "app01", "cache01"].iter().enumerate() {
        let at = format!("2026-11-{:02}T10:00:00Z", 10 + i * 4);
        for _ in 0..4 {
            assert_eq!(otnsx_at(&world, &at, &["grant", "--vm", vm]).code, 0);
            assert_eq!(otnsx_at(&world, &at, &["revoke", "--vm", vm]).code, 0);
        }
    }
    let files = journal_files(&world);
    assert!(files.len() >= 3, "{files:?}");
    fs::remove_file(&files[0]).unwrap();
    let broken = verify_fails(&world);
    assert!(broken.starts_with("entries 1 to "), "{broken}");
    let run = otnsx_at(
        &world,
        "2026-11-23T10:00:00Z",
        &["history", "--verify", "--since", "2d"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("the chain here begins at entry "),
        "{}",
        run.stdout
    );
}

/// Entries written before the chain began are reported as such, not as tampering; a line cut
/// short by a killed run is reported and the chain goes on past it.
fn older_entries_and_a_torn_line_are_not_tampering() {
    let world = World::new();
    let journal = world.state_dir().join("journal.jsonl");
    fs::create_dir_all(world.state_dir()).unwrap();
    fs::write(
        &journal,
        "{\"id\":\"1.2.1\",\"ts\":\"2026-11-20T10:00:00Z\",\"action\":\"grant\",\"ticket_number\":null,\"ticket_id\":null,\"vm\":\"web01\",\"vm_id\":\"vm-42\",\"result\":\"ok\",\"detail\":\"opened web01\",\"actor\":\"alice\",\"cause\":\"grant\",\"gained\":[{\"kind\":\"user\",\"name\":\"alice\"}]}\n",
    )
    .unwrap();
    assert_eq!(otnsx(&world, &["grant", "--vm", "db01"]).code, 0);
    fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(b"{\"id\":\"9.9.1\",\"ts\":\"2026-")
        .unwrap();
    assert_eq!(otnsx(&world, &["revoke", "--vm", "db01"]).code, 0);
    let run = otnsx(&world, &["history", "--verify"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("1 older entries carry no hash")
            && run
                .stdout
                .contains("journal.jsonl line 3: a line cut short")
            && run
                .stdout
                .contains("journal checked: entries 1 to 2 chained"),
        "{}",
        run.stdout
    );
}

/// A compressed file that cannot be read is a gap `history` reports (exit 74), with what it
/// could read; nothing is skipped silently.
fn an_unreadable_rotated_file_is_reported() {
    let world = small_journal();
    assert_eq!(otnsx(&world, &["reconcile"]).code, 0);
    let files = journal_files(&world);
    let gz = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "gz"))
        .expect("compressed")
        .clone();
    let mut bytes = fs::read(&gz).unwrap();
    let middle = bytes.len() / 2;
    bytes.truncate(middle);
    fs::write(&gz, bytes).unwrap();
    let (code, report, stderr) = history_json(&world, &[]);
    assert_eq!(code, 74, "{stderr}");
    let name = gz.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr.contains(&name) && stderr.contains("could not be read"),
        "{stderr}"
    );
    assert!(
        report["unreadable"][0].as_str().unwrap().contains(&name),
        "{report}"
    );
    assert!(!report["periods"].as_array().unwrap().is_empty());
}

/// Rotation by age: a journal whose first entry is older than `rotate_age` is rotated by the
/// next append, whatever its size.
fn the_journal_is_rotated_by_age() {
    let world = World::new();
    world.write_config(&format!(
        "{}\n[log]\nrotate_age = \"7d\"\n",
        world.config_text()
    ));
    assert_eq!(
        otnsx_at(&world, "2026-11-01T10:00:00Z", &["grant", "--vm", "web01"]).code,
        0
    );
    assert_eq!(
        otnsx_at(&world, "2026-11-07T10:00:00Z", &["revoke", "--vm", "web01"]).code,
        0
    );
    assert_eq!(journal_files(&world).len(), 1);
    assert_eq!(
        otnsx_at(&world, "2026-11-08T10:00:00Z", &["grant", "--vm", "db01"]).code,
        0
    );
    let files = journal_files(&world);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        files[0].file_name().unwrap().to_string_lossy(),
        "journal-20261108T100000Z.jsonl"
    );
    let live = lines_of(&files[1]);
    let first: Value = serde_json::from_str(&live[0]).unwrap();
    assert_eq!(
        (first["action"].as_str(), first["seq"].as_u64()),
        (Some("rotate"), Some(3))
    );
    assert!(
        first["detail"]
            .as_str()
            .unwrap()
            .ends_with("entries up to 2) is in journal-20261108T100000Z.jsonl"),
        "{first}"
    );
    let run = otnsx_at(&world, "2026-11-08T10:00:00Z", &["history", "--verify"]);
    assert_eq!(run.code, 0, "{run:?}");
}

fn rotation_settings_are_checked() {
    let world = World::new();
    for (key, value, says) in [
        (
            "rotate_size",
            "\"1KiB\"",
            "log.rotate_size: must be at least 4KiB",
        ),
        (
            "rotate_size",
            "\"64 MB\"",
            "log.rotate_size: \"64 MB\" is not a size",
        ),
        ("rotate_age", "\"soon\"", "log.rotate_age:"),
    ] {
        world.write_config(&format!(
            "{}\n[log]\n{key} = {value}\n",
            world.config_text()
        ));
        let run = otnsx(&world, &["status"]);
        assert_eq!(run.code, 78, "{run:?}");
        assert!(run.stderr.contains(says), "{}", run.stderr);
    }
}

/// On either backend: a lock, a grant and their closing chain up, `history --verify` passes
/// and names the last entry's hash as the head, and syslog received that same line.
fn the_chain_verifies_and_its_head_reaches_syslog(world: World) {
    use std::os::unix::net::UnixDatagram;
    let socket = world.dir.path().join("log.sock");
    let receiver = UnixDatagram::bind(&socket).unwrap();
    receiver.set_nonblocking(true).unwrap();
    world.write_config(&format!(
        "{}\n[log]\nsyslog = true\nsocket = \"{}\"\n",
        world.config_text(),
        socket.display()
    ));
    assert_eq!(crate::lock(&world, crate::support::T2).code, 0);
    assert_eq!(otnsx(&world, &["grant", "--vm", "db01"]).code, 0);
    assert_eq!(crate::unlock(&world, crate::support::T2).code, 0);
    assert_eq!(otnsx(&world, &["revoke", "--vm", "db01"]).code, 0);
    let (code, report, stderr) = history_json(&world, &["--verify"]);
    assert_eq!(code, 0, "{stderr}");
    let verify = &report["verify"];
    assert_eq!(verify["intact"], true, "{verify}");
    let chained = verify["chained"].as_u64().unwrap();
    assert!(chained >= 6, "{verify}");
    assert_eq!(verify["head_seq"], chained);
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = receiver.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let last: Value = serde_json::from_str(
        messages
            .last()
            .expect("syslog got the entries")
            .split_once(" - ")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(last["seq"], verify["head_seq"], "{messages:?}");
    assert_eq!(last["hash"], verify["head_hash"], "{messages:?}");
    assert_eq!(
        messages.len() as u64,
        chained,
        "one syslog message per entry: {messages:?}"
    );
}


/// In the database: a row's entry edited, a row deleted and a row inserted (each by the
/// database's superuser, as an intruder with its password would) are each named.
fn verify_names_rows_changed_removed_or_inserted_in_the_database() {
    for (case, sql, says) in [
        (
            "changed",
            "UPDATE otnsx_journal SET entry = replace(entry, '\"actor\":\"', '\"actor\":\"mallory-') WHERE n = 2",
            "entry 2 at otnsx_journal row 2",
        ),
        (
            "removed",
            "DELETE FROM otnsx_journal WHERE n = 3",
            "entry 3 was removed: it is missing before entry 4 at otnsx_journal row 3",
        ),
        (
            "inserted",
            // Room made in the table's order, and a copy of the first grant put there.
            "UPDATE otnsx_journal SET seq = seq + 1000 WHERE n >= 3; INSERT INTO otnsx_journal (seq, id, ts, entry) SELECT seq + 500, 'forged', ts, entry FROM otnsx_journal WHERE n = 1",
            // (The id is the copied entry's own.)
            "was inserted: the chain does not lead to it",
        ),
    ] {
        let test = format!("verify_names_rows_changed_removed_or_inserted_in_the_database::{case}");
        let world = crate::pg_world(&test);
        for vm in ["web01", "db01", "app01"] {
            assert_eq!(otnsx(&world, &["grant", "--vm", vm]).code, 0);
            assert_eq!(otnsx(&world, &["revoke", "--vm", vm]).code, 0);
        }
        assert_eq!(otnsx(&world, &["history", "--verify"]).code, 0);
        world.db.as_ref().unwrap().execute(sql);
        let run = otnsx(&world, &["history", "--verify"]);
        assert_eq!(run.code, 65, "{case}: {run:?}");
        assert!(run.stdout.contains(says), "{case}: {}", run.stdout);
    }
}

crate::tests! {
    a_thousand_events_across_ten_rotations_lose_nothing,
    an_edited_line_is_named,
    a_removed_line_is_named,
    an_inserted_line_is_named,
    a_chain_whose_first_files_are_gone_is_reported,
    older_entries_and_a_torn_line_are_not_tampering,
    an_unreadable_rotated_file_is_reported,
    the_journal_is_rotated_by_age,
    rotation_settings_are_checked,
    verify_names_rows_changed_removed_or_inserted_in_the_database,
    ; on_both_backends:
    the_chain_verifies_and_its_head_reaches_syslog,
}
