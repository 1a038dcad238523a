//! Nothing secret or hostile gets through: known secrets are scrubbed from whatever a server
//! says, sessions are closed on every path, text a customer or a server can shape is printed
//! escaped and bounded, and a closed pipe is no crash.

use std::fs;
use std::io::{BufRead, BufReader};

use serde_json::json;

use crate::support::server::{Request, Response, Server, basic_auth};
use crate::support::{T2, World, nsxv, set};
use crate::{lock, otnsx};

/// Everything a run left where people can read it: stdout, stderr, the journal, the notes.
fn everything(world: &World, runs: &[&crate::Run]) -> String {
    let mut seen = String::new();
    for run in runs {
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
    }
    seen.push_str(&fs::read_to_string(world.state_dir().join("journal.jsonl")).unwrap_or_default());
    for article in world.helpdesk.ticket(T2.0).articles {
        seen.push_str(&article.to_string());
    }
    seen
}

fn a_server_that_echoes_the_request_leaks_no_password_anywhere() {
    let world = World::new();
    // An NSX that checks the credentials, then echoes them back in its error, in every form.
    let echo = Server::start(|req: &Request| {
        let (user, password) = basic_auth(req).unwrap_or_default();
        let header = req.header("authorization").unwrap_or("").to_string();
        let body = format!(
            "<error><details>request by {user}: {header}; password {password}</details><errorCode>999</errorCode></error>"
        );
        Response::new(500, "application/xml", body)
    });
    world.write_config(&world.config_text().replace(&world.nsx.url(), &echo.url()));
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    let seen = everything(&world, &[&run]);
    assert!(
        seen.contains("(redacted)"),
        "the echo was shown, scrubbed: {seen}"
    );
    assert!(seen.contains("Basic (redacted)"), "{seen}");
    assert!(
        !seen.contains(nsxv::PASSWORD),
        "the password leaked: {seen}"
    );
    // The Basic-auth value as otnsx sent it.
    let header = echo.requests()[0]
        .header("authorization")
        .unwrap()
        .to_string();
    let value = header.trim_start_matches("Basic ");
    assert!(value.len() > 8, "{header}");
    assert!(!seen.contains(value), "the Basic-auth value leaked: {seen}");
}

fn a_login_answer_otnsx_cannot_use_still_closes_the_session_and_hides_its_token() {
    let world = World::new();
    world.vcenter.login_as_text(true);
    let run = otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(world.vcenter.sessions_created(), 1);
    assert_eq!(
        world.vcenter.open_sessions(),
        0,
        "the session was closed again"
    );
    assert!(
        run.stderr
            .contains("instead of JSON; the session it made was closed again"),
        "{}",
        run.stderr
    );
    // The token the fake made: 845f1bf9052f35b8 in 32 hex digits.
    let token = format!("{:032x}", 0x845f_1bf9_052f_35b7_u64 + 1);
    let seen = everything(&world, &[&run]);
    assert!(!seen.contains(&token), "the session token leaked: {seen}");
    assert_eq!(world.tagged(), set(&[]));
}

fn shaped_text_is_printed_escaped_and_bounded() {
    let world = World::new();
    let long = "x".repeat(1 << 20);
    world.helpdesk.update(T2.0, |t| {
        t.vm_field = json!([
            "web01\u{202E}10bew",
            "db01\u{1b}[2J",
            long,
            format!("vc{}", "y".repeat(79))
        ]);
    });
    let run = lock(&world, T2);
    assert_eq!(run.code, 65, "{run:?}");
    let seen = everything(&world, &[&run]);
    let parts = [
        ("stdout", run.stdout.clone()),
        ("stderr", run.stderr.clone()),
        (
            "journal",
            fs::read_to_string(world.state_dir().join("journal.jsonl")).unwrap(),
        ),
        (
            "notes",
            format!("{:?}", world.helpdesk.ticket(T2.0).articles),
        ),
    ];
    for (part, seen) in &parts {
        for raw in ['\u{202E}', '\u{1b}'] {
            if let Some(at) = seen.find(raw) {
                let from = before(seen, at);
                panic!("{raw:?} printed raw in {part}: ...{}", &seen[from..at]);
            }
        }
    }
    for raw in ['\u{202E}', '\u{1b}'] {
        if let Some(at) = seen.find(raw) {
            let from = before(&seen, at);
            panic!("{raw:?} printed raw: ...{}", &seen[from..at]);
        }
    }
    assert!(run.stdout.contains("web01\\u{202e}10bew"), "{}", run.stdout);
    assert!(run.stdout.contains("db01\\u{1b}[2J"), "{}", run.stdout);
    // 81 characters is refused as a name (65) before policy (deny vc*) is asked.
    assert!(
        run.stdout.contains(&format!(
            "vc{}\" must have 1 to 80 characters",
            "y".repeat(79)
        )),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("not allowed by policy"),
        "{}",
        run.stdout
    );
    // The 1 MiB name is echoed shortened everywhere.
    let journal = fs::read_to_string(world.state_dir().join("journal.jsonl")).unwrap();
    assert!(
        journal.len() < 20_000,
        "journal entry of {} bytes",
        journal.len()
    );
    assert!(journal.contains("(1048476 more characters)"), "{journal}");
    let notes: usize = world
        .helpdesk
        .ticket(T2.0)
        .articles
        .iter()
        .map(|a| a.to_string().len())
        .sum();
    assert!(notes < 20_000, "notes of {notes} bytes");
    assert!(run.stdout.len() < 20_000 && run.stderr.len() < 20_000);
    // The journal escapes C1 and bidi controls, not only C0.
    assert!(journal.contains("\\u202e"), "{journal}");
    assert_eq!(world.tagged(), set(&[]));
}

fn too_many_names_in_one_field_are_refused_before_any_look_up() {
    let world = World::new();
    let names: Vec<String> = (0..10_000).map(|i| format!("vm{i}")).collect();
    world.helpdesk.update(T2.0, |t| t.vm_field = json!(names));
    let run = lock(&world, T2);
    assert_eq!(run.code, 65, "{run:?}");
    assert!(
        run.stderr
            .contains("names 10000 VMs, more than the 20 one ticket may hold"),
        "{}",
        run.stderr
    );
    // The vCenter login and NSX's view of the tag are made beside the ticket read; no name is
    // looked up, nothing changed, no session left open.
    crate::nothing_looked_up_or_changed(&world);
}

fn history_survives_any_journal() {
    let world = World::new();
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    let path = world.state_dir().join("journal.jsonl");
    let mut journal = fs::read_to_string(&path).unwrap();
    let huge = json!({"id": "9.9.9", "ts": "2026-11-23T15:36:43Z", "action": "error",
        "ticket_number": "1".repeat(65_536), "ticket_id": 1, "vm": "v\u{202E}".repeat(40_000),
        "vm_id": null, "result": "failed", "detail": "d\u{85}".repeat(65_536), "actor": "a",
        "cause": "grant"});
    journal.push_str(&format!(
        "{huge}\n{{\"id\":[\nnot json at all\n\u{0}\u{1}\n"
    ));
    let mut bytes = journal.into_bytes();
    bytes.extend_from_slice(b"\xff\xfe not UTF-8 \xc3\n");
    fs::write(&path, bytes).unwrap();
    for args in [&["history"][..], &["history", "--json"][..]] {
        let run = otnsx(&world, args);
        assert_eq!(
            run.code,
            0,
            "{args:?}: {}",
            run.stderr.chars().take(2000).collect::<String>()
        );
        assert!(!run.stdout.contains('\u{202E}') && !run.stdout.contains('\u{85}'));
        if args.len() == 2 {
            let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            assert_eq!(report["events"][0]["detail"], "d\u{85}".repeat(65_536));
        } else {
            assert!(
                run.stdout.len() < 100_000,
                "{args:?}: {} bytes",
                run.stdout.len()
            );
        }
    }
}

fn a_closed_pipe_is_no_crash() {
    let world = World::new();
    for args in [&["check"][..], &["history"][..], &["status"][..]] {
        let mut child = crate::spawn(&world, args);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        drop(out); // `| head -1`
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Where the 300 bytes before `at` in `text` begin, on a character boundary.
fn before(text: &str, at: usize) -> usize {
    let mut from = at.saturating_sub(300);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    from
}

crate::tests! {
    a_server_that_echoes_the_request_leaks_no_password_anywhere,
    a_login_answer_otnsx_cannot_use_still_closes_the_session_and_hides_its_token,
    shaped_text_is_printed_escaped_and_bounded,
    too_many_names_in_one_field_are_refused_before_any_look_up,
    history_survives_any_journal,
    a_closed_pipe_is_no_crash,
}
