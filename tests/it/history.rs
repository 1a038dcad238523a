//! `history`: the journal as access periods, refusals and failures.

use std::fs;

use serde_json::Value;

use crate::support::{T2, World};
use crate::{golden, otnsx_at};

const T0: &str = "2026-11-23T16:00:00Z";

fn periods_follow_what_really_happened() {
    let world = World::new();
    world.helpdesk.set_lock(T2.0, "lock");
    assert_eq!(otnsx_at(&world, T0, &[T2.1, "2"]).code, 0);
    assert_eq!(
        otnsx_at(
            &world,
            T0,
            &["grant", "--vm", "db01", "--for", "30m", "--reason", "patch"]
        )
        .code,
        0
    );
    world.helpdesk.set_lock(T2.0, "unlock");
    assert_eq!(
        otnsx_at(&world, "2026-11-23T16:45:00Z", &[T2.1, "2"]).code,
        0
    );
    assert_eq!(
        otnsx_at(&world, "2026-11-23T16:50:00Z", &["reconcile"]).code,
        0
    );
    assert_eq!(
        otnsx_at(
            &world,
            "2026-11-23T16:55:00Z",
            &["grant", "--vm", "nosuchvm"]
        )
        .code,
        65
    );

    let run = otnsx_at(&world, "2026-11-23T17:00:00Z", &["history", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let periods: Vec<(String, String, String, i64)> = report["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["vm"].as_str().unwrap().into(),
                p["actor"].as_str().unwrap().into(),
                p["closed_by"].as_str().unwrap().into(),
                p["duration_seconds"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        periods,
        [
            (
                "web01".into(),
                "helpdesk:agent1 (user-id 2)".into(),
                "unlock".into(),
                45 * 60
            ),
            ("db01".into(), crate::real_user(), "expiry".into(), 50 * 60),
        ]
    );
    assert_eq!(report["periods"][1]["reason"], "patch");
    let events = report["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0]["action"].as_str(), events[0]["vm"].as_str()),
        (Some("refused"), Some("nosuchvm"))
    );
}

/// A journal written by hand: two tickets and a user over two days, an emergency close, an
/// access still open, a refusal, a failure, and a last line cut short by a crash.
pub const JOURNAL: &str = r#"{"ts":"2026-11-20T08:00:00Z","action":"grant","ticket_number":"2026112010000011","ticket_id":11,"vm":"web01","vm_id":"vm-42","result":"ok","detail":"opened web01 (vm-42)","actor":"helpdesk:agent1","cause":"lock","gained":[{"kind":"ticket","id":11,"number":"2026112010000011"}]}
{"ts":"2026-11-20T08:05:00Z","action":"grant","ticket_number":"2026112010000021","ticket_id":12,"vm":"web01","vm_id":"vm-42","result":"ok","detail":"web01 (vm-42) was already open","actor":"helpdesk:agent2","cause":"lock","gained":[{"kind":"ticket","id":12,"number":"2026112010000021"}]}
{"ts":"2026-11-20T09:00:00Z","action":"revoke","ticket_number":"2026112010000011","ticket_id":11,"vm":"web01","vm_id":"vm-42","result":"ok","detail":"web01 (vm-42) stays open","actor":"helpdesk:agent1","cause":"unlock","lost":[{"kind":"ticket","id":11,"number":"2026112010000011"}]}
{"ts":"2026-11-20T10:00:00Z","action":"refused","ticket_number":"2026112010000031","ticket_id":13,"vm":"dup","vm_id":null,"result":"failed","detail":"2 VMs are named \"dup\" (vm-50, vm-51)","actor":"helpdesk:agent1","cause":"lock"}
{"ts":"2026-11-21T07:00:00Z","action":"grant","ticket_number":null,"ticket_id":null,"vm":"db01","vm_id":"vm-43","result":"ok","detail":"opened db01 (vm-43)","actor":"bob","cause":"grant","gained":[{"kind":"user","name":"bob"}],"reason":"kernel update"}
{"ts":"2026-11-21T07:30:00Z","action":"error","ticket_number":null,"ticket_id":null,"vm":"app01","vm_id":"vm-44","result":"failed","detail":"app01 (vm-44): opening failed, no lease kept: NSX: HTTP 500","actor":"bob","cause":"grant"}
{"ts":"2026-11-21T12:00:00Z","action":"revoke","ticket_number":null,"ticket_id":null,"vm":"web01","vm_id":"vm-42","result":"ok","detail":"closed web01 (vm-42)","actor":"root","cause":"emergency","lost":[{"kind":"ticket","id":12,"number":"2026112010000021"}]}
{"ts":"2026-11-21T12:00:01Z","action":"revoke","ticket_number":null,"ticket_id":null,"vm":"db01","vm_id":"vm-43","result":"ok","detail":"closed db01 (vm-43)","actor":"root","cause":"emergency","lost":[{"kind":"user","name":"bob"}]}
{"ts":"2026-11-22T09:00:00Z","action":"grant","ticket_number":"2026112210000011","ticket_id":14,"vm":"Büro 01 & co","vm_id":"vm-46","result":"ok","detail":"opened","actor":"helpdesk:agent1","cause":"lock","gained":[{"kind":"ticket","id":14,"number":"2026112210000011"}]}
{"ts":"2026-11-22T10:00:00Z","action":"gra"#;

fn world_with_journal() -> World {
    let world = World::new();
    fs::create_dir_all(world.state_dir()).unwrap();
    fs::write(world.state_dir().join("journal.jsonl"), JOURNAL).unwrap();
    world
}

pub const NOW: &str = "2026-11-23T12:00:00Z";

fn history_table_and_json_match_the_golden_files() {
    let world = world_with_journal();
    let run = otnsx_at(&world, NOW, &["history"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("1 unreadable lines skipped"),
        "{}",
        run.stderr
    );
    golden("history.txt", &run.stdout);
    let run = otnsx_at(&world, NOW, &["history", "--json"]);
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&run.stdout).unwrap()).unwrap();
    golden("history.json", &(pretty + "\n"));
    assert!(world.helpdesk.requests().is_empty() && world.nsx.requests().is_empty());
}

fn history_filters() {
    filters_count_as_they_should(&world_with_journal());
}

/// What `history`'s filters keep of [`JOURNAL`], in `world` (which holds it).
pub fn filters_count_as_they_should(world: &World) {
    let count = |args: &[&str]| -> (usize, usize) {
        let mut all = vec!["history", "--json"];
        all.extend_from_slice(args);
        let run = otnsx_at(world, NOW, &all);
        assert_eq!(run.code, 0, "{run:?}");
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        (
            v["periods"].as_array().unwrap().len(),
            v["events"].as_array().unwrap().len(),
        )
    };
    assert_eq!(count(&[]), (4, 2));
    assert_eq!(count(&["--vm", "web01"]), (2, 0));
    assert_eq!(count(&["--ticket", "2026112010000021"]), (1, 0));
    assert_eq!(
        count(&["--ticket", "13"]),
        (0, 0),
        "events match by ticket number"
    );
    assert_eq!(count(&["--ticket", "2026112010000031"]), (0, 1));
    // Since a day ago: only what was still open then, or began since.
    assert_eq!(count(&["--since", "1d"]), (1, 0));
    assert_eq!(count(&["--since", "2026-11-21"]), (3, 1));
    assert_eq!(count(&["--since", "2026-11-21T11:00:00Z"]), (3, 0));
    let run = otnsx_at(world, NOW, &["history", "--since", "last week"]);
    assert_eq!(run.code, 2, "{run:?}");
}

crate::tests! {
    periods_follow_what_really_happened,
    history_table_and_json_match_the_golden_files,
    history_filters,
}
