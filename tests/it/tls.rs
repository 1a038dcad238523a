//! TLS: verified against the system's trust store by default; ca_file, insecure; failures named
//! with what to set. The fakes serve HTTPS with certificates made at test time.

use std::fs;

use crate::support::nsxv::FakeNsxV;
use crate::support::tls::{Leaf, TestCa};
use crate::support::{T2, World, set};
use crate::{actions, lock};

/// The world with its NSX-V behind HTTPS on `localhost` with `leaf`; `ca` (if any) as
/// nsx.ca_file, and `extra` keys in [nsx].
fn https_world(leaf: &Leaf, ca: Option<&TestCa>, extra: &str) -> World {
    let world = World::new();
    let nsx = FakeNsxV::start_tls(leaf.server_config());
    nsx.add_vm("vm-42", "web01");
    let url = format!("https://localhost:{}", nsx.server.addr.port());
    let mut keys = extra.to_string();
    if let Some(ca) = ca {
        let path = world.dir.path().join("ca.pem");
        fs::write(&path, ca.pem()).unwrap();
        keys.push_str(&format!("\nca_file = \"{}\"", path.display()));
    }
    let text = world.config_text().replace(&world.nsx.url(), &url).replace(
        "tag = \"otnsx-maintenance\"",
        &format!("tag = \"otnsx-maintenance\"\n{keys}"),
    );
    world.write_config(&text);
    World { nsx, ..world }
}

fn the_system_trust_store_refuses_an_unknown_ca() {
    let ca = TestCa::new();
    let world = https_world(&ca.leaf("localhost", false), None, "");
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(run.stderr.contains("NSX"), "{}", run.stderr);
    assert!(run.stderr.contains("https://localhost:"), "{}", run.stderr);
    assert!(run.stderr.contains("unknown issuer"), "{}", run.stderr);
    assert!(run.stderr.contains("nsx.ca_file"), "{}", run.stderr);
    assert!(world.leases().is_empty());
}

fn ca_file_is_trusted() {
    let ca = TestCa::new();
    let world = https_world(&ca.leaf("localhost", false), Some(&ca), "");
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));
}

fn an_expired_or_misnamed_certificate_is_refused() {
    let ca = TestCa::new();
    for (leaf, reason) in [
        (ca.leaf("localhost", true), "expired"),
        (ca.leaf("nsx.example.com", false), "name"),
    ] {
        let world = https_world(&leaf, Some(&ca), "");
        let run = lock(&world, T2);
        assert_eq!(run.code, 69, "{reason}: {run:?}");
        assert!(
            run.stderr.to_lowercase().contains(reason),
            "{reason}: {}",
            run.stderr
        );
        assert!(world.leases().is_empty());
    }
}

fn insecure_accepts_and_warns_every_run() {
    let world = https_world(&Leaf::self_signed("localhost"), None, "insecure = true");
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("TLS verification for the NSX"),
        "{}",
        run.stderr
    );
    assert_eq!(world.tagged(), set(&["vm-42"]));
    let warned = world.journal().iter().any(|e| {
        e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("insecure = true")
    });
    assert!(warned, "{:?}", actions(&world));
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn a_pinned_certificate_is_accepted_even_self_signed_and_anything_else_refused() {
    // Self-signed, and not even for this host name: the pin alone decides.
    let leaf = Leaf::self_signed("nsx.example.com");
    let pin = colon_hex(ring::digest::digest(&ring::digest::SHA256, &leaf.der).as_ref());
    let world = https_world(&leaf, None, &format!("tls_sha256 = \"{pin}\""));
    let run = lock(&world, T2);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(world.tagged(), set(&["vm-42"]));

    // Hex without colons, in lower case, pins the same certificate.
    let hex = pin.replace(':', "").to_lowercase();
    let world = https_world(&leaf, None, &format!("tls_sha256 = \"{hex}\""));
    assert_eq!(lock(&world, T2).code, 0);

    let wrong = "00".repeat(32);
    let world = https_world(&leaf, None, &format!("tls_sha256 = \"{wrong}\""));
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "pin mismatch: the server's certificate has SHA-256 {pin}"
        )),
        "{}",
        run.stderr
    );
    assert!(world.leases().is_empty());

    // A certificate signed by a trusted CA but not the pinned one is refused too.
    let ca = TestCa::new();
    let world = https_world(
        &ca.leaf("localhost", false),
        None,
        &format!("tls_sha256 = \"{pin}\""),
    );
    assert_eq!(lock(&world, T2).code, 69);
}

fn tls_settings_are_checked() {
    let world = World::new();
    let text = world.config_text().replace(
        "tag = \"otnsx-maintenance\"",
        "tag = \"otnsx-maintenance\"\ntls_sha256 = \"AB:CD\"\ninsecure = true",
    );
    world.write_config(&text);
    let run = crate::otnsx(&world, &["grant", "--vm", "web01"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr
            .contains("nsx.tls_sha256: not a SHA-256 fingerprint"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("nsx: give only one of ca_file, tls_sha256 and insecure = true"),
        "{}",
        run.stderr
    );
}

/// NSX-T behind HTTPS on `localhost`, asking for client certificates signed by `clients`; otnsx
/// logs in with `client` (signed by whichever CA the test chose) instead of a password.
fn principal_world(
    clients: &TestCa,
    client: &Leaf,
    auth: &str,
    pinned: bool,
) -> (World, crate::support::nsxt::FakeNsxT) {
    use crate::support::uuids;
    let world = World::new();
    let server_ca = TestCa::new();
    let server = server_ca.leaf("localhost", false);
    let nsxt =
        crate::support::nsxt::FakeNsxT::start_tls(server.server_config_with_clients(clients));
    let (instance, bios) = uuids("vm-42");
    let compute = [
        format!("instanceUuid:{instance}"),
        format!("biosUuid:{bios}"),
    ];
    nsxt.add_vm("web01", &instance, &compute, &[]);
    let dir = world.dir.path();
    fs::write(dir.join("server-ca.pem"), server_ca.pem()).unwrap();
    fs::write(dir.join("client.pem"), client.cert_pem()).unwrap();
    fs::write(dir.join("client.key"), client.key_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("client.key"), fs::Permissions::from_mode(0o600)).unwrap();
    // The server trusted by its CA, or pinned (the pinning connector carries the certificate).
    let trust = match pinned {
        true => format!(
            "tls_sha256 = \"{}\"",
            colon_hex(ring::digest::digest(&ring::digest::SHA256, &server.der).as_ref())
        ),
        false => format!("ca_file = \"{}/server-ca.pem\"", dir.display()),
    };
    let keys = format!(
        "auth = \"{auth}\"\n{trust}\nclient_cert = \"{d}/client.pem\"\nclient_key = \"{d}/client.key\"",
        d = dir.display()
    );
    let text = world.config_text_nsxt(&keys, true).replace(
        &world.nsxt.url(),
        &format!("https://localhost:{}", nsxt.server.addr.port()),
    );
    // No password for NSX: the certificate logs in.
    let nsx = text.find("[nsx]").unwrap();
    let (head, tail) = text.split_at(nsx);
    let tail: String = tail
        .lines()
        .filter(|l| !l.starts_with("password_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    world.write_config(&format!("{head}{tail}"));
    (world, nsxt)
}

fn a_registered_client_certificate_logs_in_without_a_password() {
    for (auth, pinned) in [("basic", false), ("session", false), ("basic", true)] {
        let clients = TestCa::new();
        let client = clients.leaf("otnsx-principal", false);
        let (world, nsxt) = principal_world(&clients, &client, auth, pinned);
        nsxt.trust_client(client.der.as_ref());
        let run = lock(&world, T2);
        assert_eq!(run.code, 0, "{auth}: {run:?}");
        assert_eq!(nsxt.carrying("otnsx", "maintenance"), ["web01"], "{auth}");
        let requests = nsxt.requests();
        assert!(
            requests.iter().all(|r| r.header("authorization").is_none()),
            "{auth}: no Authorization header with a certificate"
        );
        if auth == "session" {
            let create = requests
                .iter()
                .find(|r| r.path == "/api/session/create")
                .expect("a session");
            assert!(
                create.body.is_empty(),
                "the session is made by the certificate alone"
            );
        }
    }
}

fn the_policy_backend_logs_in_with_a_client_certificate_too() {
    for auth in ["basic", "session"] {
        let clients = TestCa::new();
        let client = clients.leaf("otnsx-principal", false);
        let (world, nsxt) = principal_world(&clients, &client, auth, false);
        let text = fs::read_to_string(world.config_path()).unwrap();
        world.write_config(&text.replacen("kind = \"nsx-t\"", "kind = \"nsx-policy\"", 1));
        nsxt.trust_client(client.der.as_ref());
        let run = lock(&world, T2);
        assert_eq!(run.code, 0, "{auth}: {run:?}");
        assert_eq!(nsxt.carrying("otnsx", "maintenance"), ["web01"], "{auth}");
        assert_eq!(nsxt.operations().len(), 1, "{auth}: by a tag operation");
        assert!(
            nsxt.requests()
                .iter()
                .all(|r| r.header("authorization").is_none()),
            "{auth}: no Authorization header with a certificate"
        );
    }
}

fn a_client_certificate_nsx_does_not_trust_is_named() {
    // Signed by the CA NSX knows, but not registered as a principal identity: 500, error 99.
    let clients = TestCa::new();
    let client = clients.leaf("otnsx-principal", false);
    let (world, _nsxt) = principal_world(&clients, &client, "basic", false);
    let run = lock(&world, T2);
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stderr.contains("does not trust the client certificate")
            && run.stderr.contains("client.pem"),
        "{}",
        run.stderr
    );
    assert!(world.leases().is_empty());
    // Signed by a CA NSX does not know: the handshake is broken off, and the certificate named.
    let other = TestCa::new().leaf("otnsx-principal", false);
    let (world, _nsxt) = principal_world(&clients, &other, "basic", false);
    let run = lock(&world, T2);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("client certificate") && run.stderr.contains("client.pem"),
        "{}",
        run.stderr
    );
}

fn client_certificate_settings_are_checked() {
    let clients = TestCa::new();
    let client = clients.leaf("otnsx-principal", false);
    let (world, _nsxt) = principal_world(&clients, &client, "basic", false);
    let text = fs::read_to_string(world.config_path()).unwrap();
    let dir = world.dir.path().display().to_string();
    use std::os::unix::fs::PermissionsExt;
    // A key every user may read.
    let key = world.dir.path().join("client.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let run = lock(&world, T2);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("nsx.client_key") && run.stderr.contains("world-readable"),
        "{}",
        run.stderr
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    for (change, key_named) in [
        // A password beside the certificate.
        (
            text.replace(
                "auth = \"basic\"",
                &format!("auth = \"basic\"\npassword_file = \"{dir}/nsxt.secret\""),
            ),
            "nsx.client_cert",
        ),
        // A certificate without its key.
        (
            text.lines()
                .filter(|l| !l.starts_with("client_key"))
                .map(|l| format!("{l}\n"))
                .collect(),
            "nsx.client_key",
        ),
        // Not a certificate.
        (text.replace("client.pem", "client.key"), "nsx.client_cert"),
    ] {
        world.write_config(&change);
        let run = lock(&world, T2);
        assert_eq!(run.code, 78, "{key_named}: {run:?}");
        assert!(run.stderr.contains(key_named), "{}", run.stderr);
    }
    // NSX-V takes no client certificate.
    let nsxv = world.config_text().replace(
        "tag = \"otnsx-maintenance\"",
        &format!("tag = \"otnsx-maintenance\"\nclient_cert = \"{dir}/client.pem\"\nclient_key = \"{dir}/client.key\""),
    );
    world.write_config(&nsxv);
    let run = lock(&world, T2);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("nsx.client_cert"), "{}", run.stderr);
}

crate::tests! {
    the_system_trust_store_refuses_an_unknown_ca,
    ca_file_is_trusted,
    an_expired_or_misnamed_certificate_is_refused,
    insecure_accepts_and_warns_every_run,
    a_pinned_certificate_is_accepted_even_self_signed_and_anything_else_refused,
    tls_settings_are_checked,
    a_registered_client_certificate_logs_in_without_a_password,
    the_policy_backend_logs_in_with_a_client_certificate_too,
    a_client_certificate_nsx_does_not_trust_is_named,
    client_certificate_settings_are_checked,
}
