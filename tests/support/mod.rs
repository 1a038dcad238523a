//! In-process fakes of the help desk, vCenter and NSX-V, and a `World` that starts them, writes
//! a configuration pointing at them, and reads back the state otnsx leaves. Shared by the
//! integration tests and `examples/sandbox.rs`. Everything listens on 127.0.0.1 only.

#![allow(dead_code, clippy::unwrap_used)]

pub mod agent_ui;
pub mod helpdesk;
pub mod nsxt;
pub mod nsxv;
pub mod pg;
pub mod server;
pub mod tls;
pub mod vcenter;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

pub use helpdesk::FakeHelpDesk;
pub use nsxt::FakeNsxT;
pub use nsxv::FakeNsxV;
pub use vcenter::{FakeVcenter, Generation};

pub const TAG: &str = "otnsx-maintenance";
pub const TAG_ID: &str = "securitytag-12";
/// NSX-T: otnsx's tag scope and value.
pub const SCOPE: &str = "otnsx";
pub const VALUE: &str = "maintenance";

/// The test tickets: ID 2 and 3 name web01, as in the recordings.
pub const T2: (u64, &str) = (2, "2026112310000011");
pub const T3: (u64, &str) = (3, "2026112310000021");

/// A directory removed again on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("otnsx-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The instance and BIOS UUIDs the fake vCenter gives a VM (`vm-42` →
/// `50120042-aaaa-bbbb-cccc-000000000042`, `42120042-...`).
pub fn uuids(moref: &str) -> (String, String) {
    let n: u32 = moref.trim_start_matches("vm-").parse().unwrap_or(0);
    (
        format!("5012{n:04}-aaaa-bbbb-cccc-{n:012}"),
        format!("4212{n:04}-aaaa-bbbb-cccc-{n:012}"),
    )
}

pub struct World {
    pub helpdesk: FakeHelpDesk,
    pub vcenter: FakeVcenter,
    pub nsx: FakeNsxV,
    pub nsxt: FakeNsxT,
    /// The state backend's database, for a world on `[state] backend = "postgres"` (dropped
    /// before `dir`, so that it can look at the state directory one last time).
    pub db: Option<pg::TestDb>,
    pub dir: TempDir,
}

impl World {
    pub fn new() -> Self {
        World::with(Generation::Modern)
    }

    /// The fakes with VMs web01 (vm-42), db01 (vm-43), app01 (vm-44), cache01 (vm-45),
    /// "Büro 01 & co" (vm-46), two VMs named dup (vm-50 in group-v1, vm-51 in group-v2), and
    /// tickets 2 and 3 naming web01; a configuration that points at them.
    pub fn with(generation: Generation) -> Self {
        let world = World {
            helpdesk: FakeHelpDesk::start(),
            vcenter: FakeVcenter::start(generation),
            nsx: FakeNsxV::start(),
            nsxt: FakeNsxT::start(),
            db: None,
            dir: TempDir::new("world"),
        };
        for (id, name, folder) in [
            ("vm-42", "web01", "group-v1"),
            ("vm-43", "db01", "group-v1"),
            ("vm-44", "app01", "group-v1"),
            ("vm-45", "cache01", "group-v1"),
            ("vm-46", "Büro 01 & co", "group-v1"),
            ("vm-50", "dup", "group-v1"),
            ("vm-51", "dup", "group-v2"),
        ] {
            world.vcenter.add_vm(id, name, folder);
            world.nsx.add_vm(id, name);
            // NSX-T knows the VM by its instance UUID, and carries another tool's tags on it.
            let (instance, bios) = uuids(id);
            let compute = [
                format!("instanceUuid:{instance}"),
                format!("biosUuid:{bios}"),
                "moIdOnHost:1".into(),
            ];
            world.nsxt.add_vm(
                name,
                &instance,
                &compute,
                &[("backup", Some("daily")), ("owner", None)],
            );
        }
        // A VM that NSX-T knows by its BIOS UUID, with no tags at all.
        world.vcenter.add_vm("vm-47", "legacy01", "group-v1");
        let (instance, bios) = uuids("vm-47");
        world.nsxt.add_vm(
            "legacy01",
            &bios,
            &[
                format!("instanceUuid:{instance}"),
                format!("biosUuid:{bios}"),
            ],
            &[],
        );
        world.helpdesk.add_ticket(T2.0, T2.1, json!("web01"));
        world.helpdesk.add_ticket(T3.0, T3.1, json!("web01"));
        for (file, secret) in [
            ("otrs.secret", helpdesk::API_PASSWORD),
            ("vcenter.secret", vcenter::PASSWORD),
            ("nsx.secret", nsxv::PASSWORD),
            ("nsxt.secret", nsxt::PASSWORD),
        ] {
            let path = world.dir.path().join(file);
            fs::write(&path, format!("{secret}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        world.write_config(&world.config_text());
        world
    }

    /// A world as [`World::new`] with its state in a database of its own (schema made by
    /// `otnsx state migrate`), or why there is no PostgreSQL server here (see `pg.rs`).
    /// `binary` is the otnsx to migrate with.
    pub fn on_postgres(test: &str, binary: &Path) -> Result<Self, String> {
        Ok(World::on_database(pg::TestDb::create(test)?, binary))
    }

    /// A world as [`World::new`] with its state in `db` (schema made by `binary`'s
    /// `otnsx state migrate`).
    pub fn on_database(db: pg::TestDb, binary: &Path) -> Self {
        let mut world = World::new();
        let path = world.dir.path().join("db.secret");
        fs::write(&path, format!("{}\n", db.password)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let mut db = db;
        db.watch = Some(world.state_dir());
        world.db = Some(db);
        world.write_config(&world.config_text());
        let out = std::process::Command::new(binary)
            .arg("--config")
            .arg(world.config_path())
            .args(["state", "migrate"])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "state migrate: {out:?}");
        world
    }

    /// The `[state]` section of this world's backend (none for the files).
    pub fn state_section(&self) -> String {
        match &self.db {
            None => String::new(),
            Some(db) => format!(
                "\n[state]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}/db.secret\"\n",
                db.url,
                self.dir.path().display()
            ),
        }
    }

    pub fn config_text(&self) -> String {
        let dir = self.dir.path().display();
        let state = self.state_section();
        format!(
            r#"state_dir = "{dir}/state"
deadline = "10s"

[otrs]
url = "{otrs}"
user = "{otrs_user}"
password_file = "{dir}/otrs.secret"
vm_field = "VMName"

[vcenter]
url = "{vcenter}"
user = "{vc_user}"
password_file = "{dir}/vcenter.secret"
api = "auto"

[nsx]
kind = "nsx-v"
url = "{nsx}"
user = "{nsx_user}"
password_file = "{dir}/nsx.secret"
tag = "{TAG}"

[policy]
max_duration = "8h"
manual_duration = "1h"
allow = ["*"]
deny = ["vc*", "nsx*"]
{state}"#,
            otrs = self.helpdesk.url(),
            otrs_user = helpdesk::API_USER,
            vcenter = self.vcenter.url(),
            vc_user = vcenter::USER,
            nsx = self.nsx.url(),
            nsx_user = nsxv::USER,
        )
    }

    /// The configuration for NSX-T: `[nsx]` with `kind = "nsx-t"` and the given extra keys;
    /// without `[vcenter]` unless `with_vcenter`.
    pub fn config_text_nsxt(&self, extra: &str, with_vcenter: bool) -> String {
        let text = self.config_text();
        let nsx_start = text.find("[nsx]").unwrap();
        let policy_start = text.find("[policy]").unwrap();
        let dir = self.dir.path().display();
        let nsx = format!(
            "[nsx]\nkind = \"nsx-t\"\nurl = \"{}\"\nuser = \"{}\"\npassword_file = \"{dir}/nsxt.secret\"\nscope = \"{SCOPE}\"\ntag = \"{VALUE}\"\n{extra}\n\n",
            self.nsxt.url(),
            nsxt::USER
        );
        let mut out = format!("{}{nsx}{}", &text[..nsx_start], &text[policy_start..]);
        if !with_vcenter {
            let start = out.find("[vcenter]").unwrap();
            let end = out.find("[nsx]").unwrap();
            out.replace_range(start..end, "");
        }
        out
    }

    /// The configuration for the Policy backend: as [`World::config_text_nsxt`] with
    /// `kind = "nsx-policy"`, logging in as `user` (an account of the fake manager).
    pub fn config_text_policy(&self, user: &str, extra: &str, with_vcenter: bool) -> String {
        self.config_text_nsxt(extra, with_vcenter)
            .replacen("kind = \"nsx-t\"", "kind = \"nsx-policy\"", 1)
            .replacen(
                &format!(
                    "user = \"{}\"\npassword_file = \"{}/nsxt",
                    nsxt::USER,
                    self.dir.path().display()
                ),
                &format!(
                    "user = \"{user}\"\npassword_file = \"{}/nsxt",
                    self.dir.path().display()
                ),
                1,
            )
    }

    /// The VMs carrying otnsx's scope and tag in the fake NSX-T.
    pub fn tagged_t(&self) -> BTreeSet<String> {
        self.nsxt.carrying(SCOPE, VALUE).into_iter().collect()
    }

    pub fn write_config(&self, text: &str) {
        let path = self.config_path();
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("otnsx.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The journal's entries.
    pub fn journal(&self) -> Vec<Value> {
        if let Some(db) = &self.db {
            return db.journal();
        }
        fs::read_to_string(self.state_dir().join("journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every journal line is JSON"))
            .collect()
    }

    /// The journal's whole entries, and the lines that a run killed in its write cut short
    /// (each must be the start of an entry, on a line of its own).
    pub fn journal_with_torn(&self) -> (Vec<Value>, Vec<String>) {
        if let Some(db) = &self.db {
            return (db.journal(), Vec::new());
        }
        let text = fs::read_to_string(self.state_dir().join("journal.jsonl")).unwrap_or_default();
        let (mut entries, mut torn) = (Vec::new(), Vec::new());
        for line in text.lines() {
            match serde_json::from_str(line) {
                Ok(entry) => entries.push(entry),
                Err(_) => {
                    assert!(
                        line.starts_with("{\"id\":") && !line[1..].contains("{\"id\":"),
                        "a journal line is neither an entry nor one cut short: {line:?}"
                    );
                    torn.push(line.to_string());
                }
            }
        }
        (entries, torn)
    }

    /// The leases in the lease file (none if there is no file).
    pub fn leases(&self) -> Vec<Value> {
        if let Some(db) = &self.db {
            return db.leases();
        }
        match fs::read_to_string(self.state_dir().join("leases.json")) {
            Ok(text) => {
                let file: Value = serde_json::from_str(&text).expect("the lease file is JSON");
                file["leases"].as_array().cloned().unwrap_or_default()
            }
            Err(_) => Vec::new(),
        }
    }

    /// The VMs carrying otnsx's tag in the fake NSX.
    pub fn tagged(&self) -> BTreeSet<String> {
        self.nsx.tagged(TAG)
    }
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Builds otnsx's release binary (for the examples that measure it) and returns its path.
pub fn release_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "otnsx"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "the release build failed");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), Into::into);
    target.join("release/otnsx")
}
