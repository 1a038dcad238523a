//! Answers no service should give, and services that fail for a while: each bad answer is a
//! clear error naming the service, exit 69, and opens nothing; a transient failure is retried.

use std::time::{Duration, Instant};

use crate::support::server::{Response, Server};
use crate::support::{T2, World, set};
use crate::{lock, otnsx};

/// A bad answer, by name.
fn variant(name: &str) -> Response {
    let xml_and_json =
        "<securityTags><securityTag><objectId>x</objectId></securityTag></securityTags>";
    match name {
        "malformed" => Response::new(
            200,
            "application/json",
            "{\"Ticket\":[{\"x\" <securityTags><securityTag>",
        ),
        "truncated" => Response::new(
            200,
            "application/json",
            format!("{{\"value\":\"{}\"}}", "a".repeat(4000)),
        )
        .truncated(100),
        "wrong type" => Response::new(200, "text/plain", xml_and_json),
        "html page" => Response::new(
            500,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
        // An injected failure says "now", so that its retries cost no time here.
        .with_header("Retry-After", "0"),
        "redirect" => {
            Response::empty(302).with_header("Location", "https://elsewhere.example.com/login")
        }
        "empty 200" => Response::new(200, "application/xml", ""),
        "too large" => Response::new(200, "application/json", vec![b' '; 17 << 20]),
        other => panic!("no hostile answer {other:?}"),
    }
}

/// One service answers `name` to everything: exit 69 naming the service, nothing opened,
/// the failure journaled.
fn fails_closed(service: &str, name: &str) {
    let world = World::new();
    let response = variant(name);
    let hostile = Server::start(move |_| response.clone());
    let (config, real) = match service {
        "help desk" => (world.config_text(), world.helpdesk.server.url()),
        "vCenter" => (world.config_text(), world.vcenter.url()),
        "NSX" => (world.config_text(), world.nsx.url()),
        _ => (world.config_text_nsxt("", false), world.nsxt.url()),
    };
    // A short deadline: retries of a dropped answer end sooner; the outcome is the same.
    let config = config.replace("deadline = \"10s\"", "deadline = \"1s\"");
    world.write_config(&config.replace(&real, &hostile.url()));
    let service = if service == "NSX-T" { "NSX" } else { service };
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{service}, {name}: {run:?}");
    assert!(
        run.stderr.contains(service),
        "{service}, {name}: {}",
        run.stderr
    );
    assert!(world.leases().is_empty(), "{service}, {name}");
    assert_eq!(world.tagged(), set(&[]), "{service}, {name}");
    assert!(world.tagged_t().is_empty(), "{service}, {name}");
    assert_eq!(
        world.journal().last().unwrap()["action"],
        "error",
        "{service}, {name}"
    );
    if name == "redirect" {
        assert_eq!(hostile.requests().len(), 1, "a redirect is not followed");
        assert!(run.stderr.contains("redirect"), "{}", run.stderr);
    }
}

/// One test per service and bad answer, so that one failure does not hide the others:
/// `hostile_answers()` gives them to the harness, named `it::hostile::TEST`.
macro_rules! hostile {
    ($($test:ident: $service:literal, $name:literal;)*) => {
        fn hostile_answers() -> Vec<crate::Test> {
            let here = crate::test_path(module_path!());
            vec![$(crate::Test::new(format!("{here}::{}", stringify!($test)), || {
                fails_closed($service, $name)
            })),*]
        }
    };
}

hostile! {
    help_desk_malformed: "help desk", "malformed";
    help_desk_truncated: "help desk", "truncated";
    help_desk_wrong_type: "help desk", "wrong type";
    help_desk_html_page: "help desk", "html page";
    help_desk_redirect: "help desk", "redirect";
    help_desk_empty_200: "help desk", "empty 200";
    help_desk_too_large: "help desk", "too large";
    vcenter_malformed: "vCenter", "malformed";
    vcenter_truncated: "vCenter", "truncated";
    vcenter_wrong_type: "vCenter", "wrong type";
    vcenter_html_page: "vCenter", "html page";
    vcenter_redirect: "vCenter", "redirect";
    vcenter_empty_200: "vCenter", "empty 200";
    vcenter_too_large: "vCenter", "too large";
    nsx_v_malformed: "NSX", "malformed";
    nsx_v_truncated: "NSX", "truncated";
    nsx_v_wrong_type: "NSX", "wrong type";
    nsx_v_html_page: "NSX", "html page";
    nsx_v_redirect: "NSX", "redirect";
    nsx_v_empty_200: "NSX", "empty 200";
    nsx_v_too_large: "NSX", "too large";
    nsx_t_malformed: "NSX-T", "malformed";
    nsx_t_truncated: "NSX-T", "truncated";
    nsx_t_wrong_type: "NSX-T", "wrong type";
    nsx_t_html_page: "NSX-T", "html page";
    nsx_t_redirect: "NSX-T", "redirect";
    nsx_t_empty_200: "NSX-T", "empty 200";
    nsx_t_too_large: "NSX-T", "too large";
}

fn a_server_failing_once_is_retried() {
    for status in [500, 502, 503] {
        let world = World::new();
        world.nsx.fail_next(&[status]);
        let run = lock(&world, T2);
        assert_eq!(run.code, 0, "{status}: {run:?}");
        assert_eq!(world.tagged(), set(&["vm-42"]));
    }
}

fn a_server_unavailable_until_the_deadline_exits_69_in_time() {
    let world = World::new();
    world.write_config(
        &world
            .config_text()
            .replace("deadline = \"10s\"", "deadline = \"3s\""),
    );
    world.nsx.fail_next(&[503; 1000]);
    let started = Instant::now();
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(world.leases().is_empty());
}

fn a_server_answering_one_byte_per_second_is_cut_at_the_deadline() {
    let world = World::new();
    let slow = Server::start(|_| {
        Response::new(200, "application/xml", "<securityTags></securityTags>").trickled()
    });
    let text = world
        .config_text()
        .replace(&world.nsx.url(), &slow.url())
        .replace("deadline = \"10s\"", "deadline = \"2s\"");
    world.write_config(&text);
    let started = Instant::now();
    let run = lock(&world, T2);
    assert!(run.code == 69 || run.code == 75, "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(world.leases().is_empty());
}

fn a_host_name_that_does_not_resolve_exits_69() {
    let world = World::new();
    let text = world
        .config_text()
        .replace(&world.vcenter.url(), "https://vcenter.otnsx-test.invalid")
        .replace("deadline = \"10s\"", "deadline = \"3s\"");
    world.write_config(&text);
    let started = Instant::now();
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("vcenter.otnsx-test.invalid"),
        "{}",
        run.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

fn vm_names_with_every_reserved_character_are_encoded() {
    let world = World::new();
    let odd = "odd +/#%\"' näme&x=1;y";
    world.vcenter.add_vm("vm-48", odd, "group-v1");
    world.nsx.add_vm("vm-48", odd);
    let run = otnsx(&world, &["grant", "--vm", odd]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-48"]));
    let lookup = world
        .vcenter
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/vcenter/vm")
        .unwrap();
    assert_eq!(
        lookup.raw_query,
        "names=odd%20%2B%2F%23%25%22%27%20n%C3%A4me%26x%3D1%3By"
    );
    assert_eq!(lookup.query_value("names").as_deref(), Some(odd));
}

fn a_retry_after_beyond_the_deadline_exits_75_at_once() {
    let world = World::new();
    let busy = Server::start(|_| {
        Response::new(
            429,
            "application/xml",
            "<error><details>Too many requests</details><errorCode>429</errorCode></error>",
        )
        .with_header("Retry-After", "3600")
    });
    world.write_config(&world.config_text().replace(&world.nsx.url(), &busy.url()));
    let started = Instant::now();
    let run = lock(&world, T2);
    assert_eq!(run.code, 75, "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slept past the answer: {:?}",
        started.elapsed()
    );
    assert_eq!(
        busy.requests().len(),
        1,
        "no retry when Retry-After is beyond the deadline"
    );
    assert!(world.leases().is_empty());
    assert_eq!(world.journal().last().unwrap()["action"], "error");
}

/// Every line of `text` (that `keep` keeps) parses with serde_json and with Python's `json`;
/// returns the lines parsed.
fn strict_json_lines(what: &str, text: &str, keep: impl Fn(&str) -> bool) -> usize {
    use std::io::Write as _;
    let lines: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
    for line in &lines {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(line) {
            panic!("{what}: serde_json: {e}: {line:?}");
        }
    }
    let mut python = std::process::Command::new("python3")
        .args(["-c", "import json,sys\nfor l in sys.stdin: json.loads(l)"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = python.stdin.take().unwrap();
    for line in &lines {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    drop(stdin);
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: python's json: {}\n{lines:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines.len()
}

fn every_json_output_parses_whatever_the_vm_field_holds() {
    let world = World::new();
    let mut hostile = String::from("web");
    hostile.extend(
        (0u32..0x20)
            .chain([0x7f])
            .chain(0x80..0xa0)
            .filter_map(char::from_u32),
    );
    hostile.extend(['\u{2028}', '\u{2029}', '\u{feff}', '\u{202e}']);
    world
        .helpdesk
        .update(T2.0, |t| t.vm_field = serde_json::json!([hostile]));
    assert_eq!(lock(&world, T2).code, 65);
    // A VM of that name carries the tag with no lease: status shows it, reconcile closes it.
    world.nsx.add_vm("vm-77", &hostile);
    world.nsx.attach_by_hand(crate::support::TAG_ID, "vm-77");
    let status = otnsx(&world, &["status", "--json"]);
    // NSX and the leases disagree (drift): 1.
    assert_eq!(status.code, 1, "{status:?}");
    let report: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(
        // (NSX-V's XML turns the carriage return into a line feed.)
        report["vms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["vm_id"] == "vm-77"
                && v["vm"]
                    .as_str()
                    .unwrap()
                    .contains("\u{1f}\u{7f}\u{80}\u{81}")),
        "{}",
        status.stdout
    );
    // One document on one line, as every --json output.
    assert_eq!(
        strict_json_lines("status --json", &status.stdout, |_| true),
        1
    );
    let reconcile = otnsx(&world, &["reconcile", "--json"]);
    assert_eq!(reconcile.code, 0, "{reconcile:?}");
    assert!(reconcile.stdout.contains("\\u007f"), "{}", reconcile.stdout);
    assert_eq!(
        strict_json_lines("reconcile --json", &reconcile.stdout, |_| true),
        1
    );
    let history = otnsx(&world, &["history", "--json"]);
    assert_eq!(history.code, 0, "{history:?}");
    assert!(history.stdout.contains("\\u007f"), "{}", history.stdout);
    strict_json_lines("history --json", &history.stdout.replace('\n', " "), |_| {
        true
    });
    let journal = std::fs::read_to_string(world.state_dir().join("journal.jsonl")).unwrap();
    strict_json_lines("journal", &journal, |_| true);
    // The journal cannot take the refusal: its entries go to stderr, one JSON line each.
    let path = world.state_dir().join("journal.jsonl");
    std::fs::rename(&path, world.state_dir().join("journal.aside")).unwrap();
    std::fs::create_dir(&path).unwrap();
    let run = lock(&world, T2);
    assert_eq!(run.code, 74, "{run:?}");
    let fallback = strict_json_lines("stderr", &run.stderr, |l| l.starts_with('{'));
    assert!(fallback > 0, "{}", run.stderr);
    assert!(run.stderr.contains("\\u007f"), "{}", run.stderr);
}

crate::tests! {
    a_server_failing_once_is_retried,
    a_server_unavailable_until_the_deadline_exits_69_in_time,
    a_server_answering_one_byte_per_second_is_cut_at_the_deadline,
    a_host_name_that_does_not_resolve_exits_69,
    vm_names_with_every_reserved_character_are_encoded,
    a_retry_after_beyond_the_deadline_exits_75_at_once,
    every_json_output_parses_whatever_the_vm_field_holds,
    ; and: hostile_answers
}
