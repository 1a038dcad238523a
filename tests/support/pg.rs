//! A database of its own for a test, in the PostgreSQL server the environment names:
//! `OTNSX_TEST_POSTGRES` (the superuser's URL, `postgres://postgres@127.0.0.1:PORT/postgres`)
//! with `OTNSX_TEST_POSTGRES_PASSWORD_FILE`, as `.ci/run` sets them for its throw-away cluster.
//! Without them the PostgreSQL tests skip, and say so; under CI they fail instead.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub struct TestDb {
    /// This database's URL for otnsx's `[state] url`.
    pub url: String,
    pub name: String,
    pub password: String,
    /// A state directory that must hold no lease file or journal when the test ends: the
    /// database backend keeps them in the database only.
    pub watch: Option<std::path::PathBuf>,
    admin: postgres::Config,
}

/// The server's superuser connection settings, or why there is no server.
fn server() -> Result<(postgres::Config, String, String), String> {
    let url = std::env::var("OTNSX_TEST_POSTGRES").map_err(|_| {
        "no PostgreSQL server for the tests: set OTNSX_TEST_POSTGRES and OTNSX_TEST_POSTGRES_PASSWORD_FILE (.ci/run starts one)".to_string()
    })?;
    let file = std::env::var("OTNSX_TEST_POSTGRES_PASSWORD_FILE")
        .map_err(|_| "OTNSX_TEST_POSTGRES_PASSWORD_FILE is not set".to_string())?;
    let password = std::fs::read_to_string(&file)
        .map_err(|e| format!("{file}: {e}"))?
        .trim()
        .to_string();
    let mut config: postgres::Config = url.parse().map_err(|e| format!("{url}: {e}"))?;
    config.password(&password);
    Ok((config, url, password))
}

/// Whether a server is configured; prints why not (and fails under CI, which must not skip).
pub fn available(test: &str) -> bool {
    match server() {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: {why}; CI must run the PostgreSQL tests"
            );
            // Once, and past the test harness's capture, so that a quick `cargo test` shows it.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "the PostgreSQL backend's tests are skipped ({test} and the others): {why}"
                );
            });
            false
        }
    }
}

impl TestDb {
    /// A new, empty database (no schema yet), or `None` (said why) without a server.
    pub fn create(test: &str) -> Option<TestDb> {
        if !available(test) {
            return None;
        }
        let (admin, url, password) = server().unwrap();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "otnsx_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut client = admin.connect(postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = url.rsplit_once('/').unwrap().0;
        Some(TestDb {
            url: format!("{base}/{name}"),
            name,
            password,
            watch: None,
            admin,
        })
    }

    /// A superuser connection to this database.
    pub fn client(&self) -> postgres::Client {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        config.connect(postgres::NoTls).unwrap()
    }

    /// The rows of the leases table, as otnsx's lease JSON, oldest first.
    pub fn leases(&self) -> Vec<Value> {
        self.client()
            .query(
                "SELECT lease FROM otnsx_leases ORDER BY granted_at, target, holder",
                &[],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The journal table's entries, in order.
    pub fn journal(&self) -> Vec<Value> {
        self.client()
            .query("SELECT entry FROM otnsx_journal ORDER BY seq", &[])
            .map(|rows| {
                rows.iter()
                    .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs SQL as the superuser in this database.
    pub fn execute(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.watch
            && !std::thread::panicking()
        {
            for file in ["leases.json", "journal.jsonl"] {
                assert!(
                    !dir.join(file).exists(),
                    "the postgres backend wrote {file} in the state directory"
                );
            }
        }
        if let Ok(mut client) = self.admin.connect(postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
