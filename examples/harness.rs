//! `cargo run --example harness -- INFO_FILE [STATUS_PORT]`: the test fakes of vCenter and
//! NSX-V as a server that runs until killed, for the end-to-end tests against real help desks
//! (`.ci/helpdesks.sh`). VMs web01 (vm-42), db01 (vm-43), app01 (vm-44) and vcsa01 (vm-48),
//! which `.ci/helpdesks.sh`'s policy (`deny = ["vc*", "nsx*"]`) refuses; no web99 (a name the
//! policy allows and vCenter does not know).
//!
//! Once everything listens, it writes INFO_FILE (atomically, mode 600) as `KEY=value` lines:
//! `STATUS`, `VCENTER_URL`, `VCENTER_USER`, `VCENTER_PASSWORD`, `NSX_URL`, `NSX_USER`,
//! `NSX_PASSWORD`, `NSX_TAG`, `DENIED_VM`, `UNKNOWN_VM`, `VMS` (`name=moref,...`), `PID`.
//! The status endpoint (127.0.0.1:STATUS_PORT, any free port if 0 or absent) answers
//! `GET /tagged` with the JSON list of the VM ids carrying the tag (sorted) and
//! `GET /changes` with the JSON list of the attach and detach calls NSX received, in order.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use support::{FakeNsxV, FakeVcenter, Generation, TAG, nsxv, vcenter};

const VMS: [(&str, &str); 4] = [
    ("vm-42", "web01"),
    ("vm-43", "db01"),
    ("vm-44", "app01"),
    ("vm-48", "vcsa01"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(info), port) = (args.first(), args.get(1)) else {
        eprintln!("usage: harness INFO_FILE [STATUS_PORT]");
        return ExitCode::from(2);
    };
    let Ok(port) = port.map_or(Ok(0), |p| p.parse::<u16>()) else {
        eprintln!("harness: STATUS_PORT is not a port number");
        return ExitCode::from(2);
    };
    let vcenter = FakeVcenter::start(Generation::Modern);
    let nsx = Arc::new(FakeNsxV::start());
    for (id, name) in VMS {
        vcenter.add_vm(id, name, "group-v1");
        nsx.add_vm(id, name);
    }
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("harness: cannot listen on 127.0.0.1:{port}: {err}");
            return ExitCode::from(69);
        }
    };
    let status = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    let vms: Vec<String> = VMS
        .iter()
        .map(|(id, name)| format!("{name}={id}"))
        .collect();
    let text = format!(
        "STATUS=http://127.0.0.1:{status}\nVCENTER_URL={}\nVCENTER_USER={}\nVCENTER_PASSWORD={}\n\
         NSX_URL={}\nNSX_USER={}\nNSX_PASSWORD={}\nNSX_TAG={TAG}\nDENIED_VM=vcsa01\nUNKNOWN_VM=web99\n\
         VMS={}\nPID={}\n",
        vcenter.url(),
        vcenter::USER,
        vcenter::PASSWORD,
        nsx.url(),
        nsxv::USER,
        nsxv::PASSWORD,
        vms.join(","),
        std::process::id()
    );
    let tmp = format!("{info}.tmp");
    let written = std::fs::write(&tmp, text)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        })
        .and_then(|()| std::fs::rename(&tmp, info));
    if let Err(err) = written {
        eprintln!("harness: cannot write {info}: {err}");
        return ExitCode::from(73);
    }
    println!(
        "harness: vCenter {} NSX-V {} status http://127.0.0.1:{status}",
        vcenter.url(),
        nsx.url()
    );
    for stream in listener.incoming().flatten() {
        let nsx = Arc::clone(&nsx);
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                return;
            }
            // The headers, up to the empty line; a GET has no body.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (code, body) = match path {
                "/tagged" => ("200 OK", serde_json::json!(nsx.tagged(TAG)).to_string()),
                "/changes" => ("200 OK", serde_json::json!(nsx.changes()).to_string()),
                _ => (
                    "404 Not Found",
                    "{\"error\":\"GET /tagged or /changes\"}".into(),
                ),
            };
            let _ = write!(
                &stream,
                "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
    ExitCode::SUCCESS
}
