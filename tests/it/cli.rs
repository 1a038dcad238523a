//! The command line's conventions (issue 23): a mistyped command gets a suggestion, completion
//! scripts come from the binary, an unreadable configuration is said as such, `--json` is one
//! document of one shape on every command, `status` exits 1 on drift, `--dry-run` only where
//! something would change, `--quiet`, and no colour under `NO_COLOR`.

use serde_json::Value;

use crate::support::{TAG_ID, World, set};
use crate::{lock, otnsx, run_binary};

/// The one JSON document `run` printed: one line, the envelope's fields, `exit` the status.
fn document(run: &crate::Run, command: Option<&str>) -> Value {
    assert_eq!(run.stdout.lines().count(), 1, "one line: {run:?}");
    let doc: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(doc["command"], serde_json::json!(command), "{doc}");
    assert_eq!(doc["exit"], run.code, "{doc}");
    assert_eq!(doc["ok"], run.code == 0, "{doc}");
    match run.code {
        0 => assert_eq!(doc["error"], Value::Null, "{doc}"),
        _ => assert!(
            doc["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{doc}"
        ),
    }
    doc
}

fn a_mistyped_command_gets_the_nearest_one() {
    for (typo, meant) in [
        ("stauts", "status"),
        ("completion", "completions"),
        ("histroy", "history"),
        ("revok", "revoke"),
    ] {
        let run = run_binary(&[typo], &[]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(
            run.stderr.contains(&format!(
                "unknown command `{typo}`: did you mean `{meant}`?"
            )),
            "{run:?}"
        );
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    // Past the global options, and whatever follows the word.
    for args in [
        &["--config", "/x", "stauts"][..],
        &["-v", "stauts", "--vm", "web01"],
    ] {
        let run = run_binary(args, &[]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains("did you mean `status`?"), "{run:?}");
    }
    // Nothing near: the commands are listed.
    let run = run_binary(&["frobnicate", "4"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("the commands are check, completions,"),
        "{run:?}"
    );
    // A ticket number stays digits only: a word with digits is a bad number, not a command.
    let run = run_binary(&["12a", "4"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("\"12a\" is not a ticket number (digits only)"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("did you mean"), "{run:?}");
    // With --json, the refusal is a document too (no command known).
    let run = run_binary(&["stauts", "--json"], &[]);
    assert_eq!(run.code, 2);
    let doc = document(&run, None);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("did you mean `status`?"),
        "{doc}"
    );
}

fn the_help_desk_form_still_works() {
    let world = World::new();
    let run = lock(&world, crate::support::T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
}

fn completions_for_every_shell_need_no_configuration() {
    let shipped = |file: &str| {
        std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("dist/completions")
                .join(file),
        )
        .unwrap()
    };
    for (shell, says, file) in [
        ("bash", "complete -F _otnsx", Some("otnsx.bash")),
        ("zsh", "#compdef otnsx", Some("_otnsx")),
        ("fish", "complete -c otnsx", Some("otnsx.fish")),
        ("elvish", "edit:completion:arg-completer[otnsx]", None),
        ("powershell", "Register-ArgumentCompleter", None),
    ] {
        // No --config, no OTNSX_CONFIG, and a configuration path that does not exist.
        let run = run_binary(
            &["completions", shell],
            &[("OTNSX_CONFIG", "/nonexistent/otnsx.toml")],
        );
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(run.stdout.contains(says), "{shell}: {}", run.stdout);
        assert!(run.stdout.contains("completions"), "{shell}");
        if let Some(file) = file {
            assert_eq!(
                run.stdout,
                shipped(file),
                "{shell}: dist/completions/{file}"
            );
        }
    }
    let run = run_binary(&["completions", "tcsh"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = run_binary(&["completions", "bash", "--json"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
}

fn an_unreadable_configuration_is_not_called_missing() {
    let world = World::new();
    let config = world.config_path();
    let (args, user): (Vec<String>, String) = if crate::is_root() {
        // Root reads any file: run as nobody, with a directory nobody may enter.
        let dir = std::env::temp_dir().join(format!("otnsx-unreadable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("otnsx.toml");
        std::fs::copy(&config, &file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let has_setpriv = std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_setpriv {
            eprintln!("skipped: running as root without setpriv");
            return;
        }
        let args = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_otnsx"),
            "--config",
            file.to_str().unwrap(),
        ];
        (args.map(String::from).to_vec(), "nobody".into())
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o000)).unwrap();
        let args = [
            env!("CARGO_BIN_EXE_otnsx"),
            "--config",
            config.to_str().unwrap(),
        ];
        (args.map(String::from).to_vec(), crate::real_user())
    };
    let path = args.last().unwrap().clone();
    for command in [&["status"][..], &["check"], &["status", "--json"]] {
        let output = std::process::Command::new(&args[0])
            .args(&args[1..])
            .args(command)
            .env_clear()
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{command:?}: {stderr}");
        let says = format!(
            "cannot read {path}: permission denied; otnsx runs as {user} here and needs read access"
        );
        assert!(stderr.contains(&says), "{command:?}: {stderr}");
        assert!(stderr.contains("root:www-data 0640"), "{stderr}");
        assert!(!stderr.contains("no configuration file"), "{stderr}");
        if command.contains(&"--json") {
            let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(doc["exit"], 78);
            assert!(doc["error"].as_str().unwrap().contains(&says), "{doc}");
        }
    }
    if crate::is_root() {
        let _ = std::fs::remove_dir_all(std::path::Path::new(&path).parent().unwrap());
    }
}

fn json_is_one_document_of_one_shape_on_every_command() {
    let world = World::new();
    // A ticket event.
    world.helpdesk.set_lock(crate::support::T2.0, "lock");
    let run = otnsx(&world, &["--json", crate::support::T2.1, "2"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = document(&run, Some("ticket"));
    assert_eq!(doc["changes"][0]["vm"], "web01", "{doc}");
    assert_eq!(doc["changes"][0]["action"], "grant", "{doc}");
    assert_eq!(doc["dry_run"], false);
    // grant: one opened, one refused (no such VM): partly done, 1.
    let run = otnsx(
        &world,
        &["grant", "--vm", "db01", "--vm", "nosuch", "--json"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let doc = document(&run, Some("grant"));
    assert_eq!(doc["changes"][0]["vm"], "db01", "{doc}");
    assert_eq!(doc["changes"][0]["result"], "ok", "{doc}");
    assert_eq!(doc["refused"][0]["vm"], "nosuch", "{doc}");
    assert_eq!(doc["refused"][0]["exit"], 65, "{doc}");
    // grant refused whole: its status.
    let run = otnsx(&world, &["grant", "--vm", "nosuch", "--json"]);
    assert_eq!(run.code, 65, "{run:?}");
    document(&run, Some("grant"));
    // status, history: the fields they had, beside the envelope.
    let run = otnsx(&world, &["status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = document(&run, Some("status"));
    assert_eq!(doc["vms"].as_array().unwrap().len(), 2, "{doc}");
    assert_eq!(doc["drift"], false);
    let run = otnsx(&world, &["history", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = document(&run, Some("history"));
    assert_eq!(doc["periods"].as_array().unwrap().len(), 2, "{doc}");
    // revoke, reconcile.
    let run = otnsx(&world, &["revoke", "--vm", "db01", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = document(&run, Some("revoke"));
    assert_eq!(doc["changes"][0]["action"], "revoke", "{doc}");
    let run = otnsx(&world, &["reconcile", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = document(&run, Some("reconcile"));
    assert_eq!(doc["changes"], serde_json::json!([]), "{doc}");
    // check: each check, and the counts.
    let run = otnsx(&world, &["check", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = document(&run, Some("check"));
    assert_eq!(doc["failed"], 0, "{doc}");
    assert!(
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["result"] != "fail" && c["check"].is_string()),
        "{doc}"
    );
    // reconcile failing (NSX down): still one document, with the failure and its status.
    world.nsx.fail_next(&[503; 64]);
    let run = otnsx(&world, &["reconcile", "--json"]);
    assert_eq!(run.code, 69, "{run:?}");
    let doc = document(&run, Some("reconcile"));
    assert!(doc["error"].as_str().unwrap().contains("503"), "{doc}");
    // A configuration that cannot be found: the command is known, its fields are not.
    let run = run_binary(
        &["--config", "/nonexistent/otnsx.toml", "status", "--json"],
        &[],
    );
    assert_eq!(run.code, 78, "{run:?}");
    let doc = document(&run, Some("status"));
    assert!(doc.get("vms").is_none(), "{doc}");
}

fn status_exits_1_on_drift_and_quiet_prints_nothing() {
    let world = World::new();
    let run = otnsx(&world, &["status", "-q"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
    // A tag no lease explains.
    world.nsx.attach_by_hand(TAG_ID, "vm-44");
    let run = otnsx(&world, &["status"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("DRIFT"), "{run:?}");
    assert!(
        run.stderr.contains("NSX and the leases disagree"),
        "{run:?}"
    );
    let run = otnsx(&world, &["status", "--quiet"]);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:?}");
    let run = otnsx(&world, &["status", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc = document(&run, Some("status"));
    assert_eq!(doc["drift"], true);
    // Repaired: 0 again.
    assert_eq!(otnsx(&world, &["reconcile", "-q"]).code, 0);
    assert_eq!(otnsx(&world, &["status", "-q"]).code, 0);
}

fn dry_run_only_where_something_would_change_and_in_its_words() {
    let world = World::new();
    for args in [
        &["status"][..],
        &["history"],
        &["check"],
        &["state", "migrate"],
        &["completions", "bash"],
    ] {
        let mut all = vec!["--dry-run"];
        all.extend_from_slice(args);
        let run = otnsx(&world, &all);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr
                .contains("--dry-run is for the commands that change something"),
            "{run:?}"
        );
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    let run = otnsx(&world, &["grant", "--vm", "web01", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(": would open web01 (vm-42) until"),
        "{run:?}"
    );
    assert!(world.tagged().is_empty());
    assert_eq!(otnsx(&world, &["grant", "--vm", "web01"]).code, 0);
    let run = otnsx(&world, &["revoke", "--vm", "web01", "--dry-run", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = document(&run, Some("revoke"));
    assert_eq!(doc["dry_run"], true);
    assert!(
        doc["changes"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("would close web01"),
        "{doc}"
    );
    assert_eq!(world.tagged(), set(&["vm-42"]));
}

fn quiet_leaves_stdout_empty_and_errors_on_stderr() {
    let world = World::new();
    let run = otnsx(&world, &["grant", "--vm", "web01", "-q"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let run = otnsx(&world, &["grant", "--vm", "nosuch", "--quiet"]);
    assert_eq!((run.code, run.stdout.as_str()), (65, ""), "{run:?}");
    assert!(run.stderr.contains("nosuch"), "{run:?}");
    let run = otnsx(&world, &["revoke", "--vm", "web01", "-q"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
    assert!(world.tagged().is_empty());
}

fn no_color_is_honoured() {
    // clap colours its errors only when asked to or on a terminal; NO_COLOR wins over both.
    let forced = run_binary(&["--bogus"], &[("CLICOLOR_FORCE", "1")]);
    assert_eq!(forced.code, 2);
    assert!(forced.stderr.contains('\x1b'), "{forced:?}");
    let plain = run_binary(&["--bogus"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert_eq!(plain.code, 2);
    assert!(!plain.stderr.contains('\x1b'), "{plain:?}");
    // Not a terminal: none either.
    let piped = run_binary(&["--bogus"], &[]);
    assert!(!piped.stderr.contains('\x1b'), "{piped:?}");
}

crate::tests! {
    a_mistyped_command_gets_the_nearest_one,
    the_help_desk_form_still_works,
    completions_for_every_shell_need_no_configuration,
    an_unreadable_configuration_is_not_called_missing,
    json_is_one_document_of_one_shape_on_every_command,
    status_exits_1_on_drift_and_quiet_prints_nothing,
    dry_run_only_where_something_would_change_and_in_its_words,
    quiet_leaves_stdout_empty_and_errors_on_stderr,
    no_color_is_honoured,
}
