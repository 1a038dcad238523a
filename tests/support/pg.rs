//! A database of its own for a test, in a PostgreSQL server: the one the environment names,
//! `OTNSX_TEST_POSTGRES` (the superuser's URL, `postgres://postgres@127.0.0.1:PORT/postgres`)
//! with `OTNSX_TEST_POSTGRES_PASSWORD_FILE`; without them, one the tests start for themselves,
//! once per test process, when PostgreSQL's server binaries are on this machine (`initdb` and
//! `pg_ctl` on PATH or in `/usr/lib/postgresql/*/bin`, or where `OTNSX_TEST_POSTGRES_BIN`
//! says): a throw-away cluster on 127.0.0.1 in a temporary directory, run as an unprivileged
//! user when the tests run as root (`OTNSX_TEST_POSTGRES_RUN_AS`, else `postgres`, else
//! `nobody`), stopped when the tests end (or, if they are killed, by a watcher).
//! Without either the PostgreSQL tests are reported as ignored, with the reason; under CI they
//! fail instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

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

/// The server the tests use: its superuser's connection settings, URL and password.
struct Server {
    admin: postgres::Config,
    url: String,
    password: String,
}

/// Why there is no server: none can be had here (the tests are skipped), or one should have
/// been and is broken (the tests fail).
#[derive(Clone)]
enum NoServer {
    Missing(String),
    Broken(String),
}

/// PostgreSQL's server binaries, and the user that runs them (none: this process's).
#[derive(Clone)]
pub struct Binaries {
    bin: PathBuf,
    /// The user's name, uid and gid.
    run_as: Option<(String, String, String)>,
}

/// The server binaries: in `OTNSX_TEST_POSTGRES_BIN`, else where `initdb` is on PATH (with
/// `pg_ctl` beside it, symbolic links followed), else the newest `/usr/lib/postgresql/*/bin`.
pub fn binaries() -> Result<Binaries, String> {
    let has = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let bin = match std::env::var_os("OTNSX_TEST_POSTGRES_BIN").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let on_path = std::env::var_os("PATH")
                .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
                .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
                .find(|dir| has(dir));
            let mut packaged: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .map(|dirs| {
                    dirs.flatten()
                        .filter_map(|e| {
                            let version = e.file_name().to_str()?.parse().ok()?;
                            Some((version, e.path().join("bin")))
                        })
                        .filter(|(_, dir)| has(dir))
                        .collect()
                })
                .unwrap_or_default();
            packaged.sort();
            on_path
                .or(packaged.pop().map(|(_, dir)| dir))
                .ok_or("no PostgreSQL server for the tests: OTNSX_TEST_POSTGRES names none, and there is no initdb to start one (on PATH or in /usr/lib/postgresql/*/bin; Debian's package is postgresql)")?
        }
    };
    if !has(&bin) {
        return Err(format!(
            "no initdb and pg_ctl in {} (OTNSX_TEST_POSTGRES_BIN)",
            bin.display()
        ));
    }
    let root = id(&["-u"]).as_deref() == Some("0");
    let user = std::env::var("OTNSX_TEST_POSTGRES_RUN_AS")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            root.then(|| {
                if id(&["-u", "postgres"]).is_some() {
                    "postgres".to_string()
                } else {
                    "nobody".to_string()
                }
            })
        });
    let run_as = match user {
        None => None,
        Some(user) => {
            if std::process::Command::new("setpriv")
                .arg("--version")
                .output()
                .is_err()
            {
                return Err(format!(
                    "no setpriv (util-linux) to run PostgreSQL's server as {user}: it refuses to run as root"
                ));
            }
            let uid = id(&["-u", &user]).ok_or(format!("no user {user} to run PostgreSQL"))?;
            let gid = id(&["-g", &user]).ok_or(format!("no user {user} to run PostgreSQL"))?;
            Some((user, uid, gid))
        }
    };
    Ok(Binaries { bin, run_as })
}

/// What `id ARGS` says, if it succeeds.
fn id(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("id").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The cluster the tests started for themselves, until [`stop_own_server`].
static OWN: Mutex<Option<TestCluster>> = Mutex::new(None);

/// The server: the environment's, or one of the tests' own, started at the first call.
fn server() -> Result<&'static Server, NoServer> {
    static SERVER: OnceLock<Result<Server, NoServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("OTNSX_TEST_POSTGRES") {
            Ok(url) => {
                let file = std::env::var("OTNSX_TEST_POSTGRES_PASSWORD_FILE").map_err(|_| {
                    NoServer::Broken(
                        "OTNSX_TEST_POSTGRES is set, OTNSX_TEST_POSTGRES_PASSWORD_FILE is not"
                            .into(),
                    )
                })?;
                let password = std::fs::read_to_string(&file)
                    .map_err(|e| NoServer::Broken(format!("{file}: {e}")))?
                    .trim()
                    .to_string();
                let mut admin: postgres::Config = url
                    .parse()
                    .map_err(|e| NoServer::Broken(format!("{url}: {e}")))?;
                admin.password(&password);
                Ok(Server {
                    admin,
                    url,
                    password,
                })
            }
            Err(_) => {
                let binaries = binaries().map_err(NoServer::Missing)?;
                let cluster = TestCluster::launch(&binaries, 200).map_err(|e| {
                    NoServer::Broken(format!("starting PostgreSQL for the tests: {e}"))
                })?;
                let url = cluster.url();
                let mut admin: postgres::Config = url.parse().unwrap();
                admin.password(&cluster.password);
                let password = cluster.password.clone();
                *OWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(cluster);
                Ok(Server {
                    admin,
                    url,
                    password,
                })
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Stops the server the tests started for themselves, if they did.
pub fn stop_own_server() {
    drop(OWN.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// The server, or why the tests cannot have one here; panics when one should be there and is
/// broken (a server named by the environment that does not answer is a failure, not a skip).
fn usable(test: &str) -> Result<&'static Server, String> {
    match server() {
        Ok(server) => Ok(server),
        Err(NoServer::Missing(why)) => Err(why),
        Err(NoServer::Broken(why)) => panic!("{test}: {why}"),
    }
}

/// Whether there is a server (starting one, if the tests can); prints why not.
pub fn available(test: &str) -> bool {
    match usable(test) {
        Ok(_) => true,
        Err(why) => {
            eprintln!("{test}: no PostgreSQL: {why}");
            false
        }
    }
}

impl TestDb {
    /// A new, empty database (no schema yet), or why there is no server here.
    pub fn create(test: &str) -> Result<TestDb, String> {
        let server = usable(test)?;
        let mut db = TestDb::create_in(server.admin.clone(), &server.url, server.password.clone());
        db.url = through_pgbouncer(&db.url);
        Ok(db)
    }

    /// A new, empty database in the server of `admin` (whose URL is `url`).
    fn create_in(admin: postgres::Config, url: &str, password: String) -> TestDb {
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
        TestDb {
            url: format!("{base}/{name}"),
            name,
            password,
            watch: None,
            admin,
        }
    }

    /// Waits until otnsx holds a VM's lock in this database (the advisory class "otnv"): the
    /// run's transaction is open, it has locked the VMs it changes, and goes on to NSX. At most
    /// 5 s.
    pub fn wait_for_vm_lock_holder(&self) {
        self.wait_for_advisory(" AND l.classid = 1869901430 AND l.objsubid = 2");
    }

    /// Waits until otnsx holds an advisory lock that `condition` (SQL over `pg_locks l`)
    /// narrows down.
    fn wait_for_advisory(&self, condition: &str) {
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(5) {
            let held: i64 = self
                .client()
                .query_one(
                    &format!("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'otnsx'{condition}"),
                    &[],
                )
                .unwrap()
                .get(0);
            if held > 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("otnsx never took the lock it was waited for");
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

    /// The journal table's rows in order (`seq`), each as its line: chained
    /// (`{...,"seq":n,"hash":"H"}`, built here from `entry`, `n` and `hash`) when the row has a
    /// hash, else its entry. Asserts the table is one hash chain, checked here with SHA-256 as
    /// `src/state/chain.rs` defines it: the rows without a hash come first (written before the
    /// chain began), then `n` runs 1, 2, ... with no gap, and every hash is the SHA-256 of the
    /// hash before (64 zeros for the first), a line feed, and the line up to `,"hash":`.
    /// Returns the lines and how many rows were unhashed.
    pub fn verified_chain(&self) -> (Vec<String>, usize) {
        self.chain().unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`TestDb::verified_chain`], or where the table is not one hash chain.
    pub fn chain(&self) -> Result<(Vec<String>, usize), String> {
        let rows = self
            .client()
            .query("SELECT entry, n, hash FROM otnsx_journal ORDER BY seq", &[])
            .unwrap();
        let mut prev = "0".repeat(64);
        let mut expected_n = 1i64;
        let mut unhashed = 0;
        let mut lines = Vec::new();
        for row in &rows {
            let entry: String = row.get(0);
            let n: Option<i64> = row.get(1);
            let hash: Option<String> = row.get(2);
            let (Some(n), Some(hash)) = (n, hash) else {
                if expected_n != 1 {
                    return Err(format!(
                        "a row without a hash after the chain began: {entry}"
                    ));
                }
                unhashed += 1;
                lines.push(entry);
                continue;
            };
            if n != expected_n {
                return Err(format!("the chain has a gap or a repeat at {entry}"));
            }
            let open = entry.strip_suffix('}').expect("an object");
            let body = format!("{open},\"seq\":{n}");
            let mut input = prev.clone().into_bytes();
            input.push(b'\n');
            input.extend_from_slice(body.as_bytes());
            let digest = ring::digest::digest(&ring::digest::SHA256, &input);
            let computed: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            if hash != computed {
                return Err(format!(
                    "row {n}'s hash is not the chain's: {entry}: {hash}, computed {computed}"
                ));
            }
            lines.push(format!("{body},\"hash\":\"{hash}\"}}"));
            prev = hash;
            expected_n += 1;
        }
        Ok((lines, unhashed))
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

/// A PostgreSQL server of a test's own, for what would disturb the shared one (a restart), or
/// the tests' own shared one: initdb'd in a temporary directory from [`binaries`], on a free
/// loopback port.
pub struct TestCluster {
    dir: PathBuf,
    binaries: Binaries,
    pub port: u16,
    password: String,
}

impl TestCluster {
    /// The cluster, started; or why there are no server binaries here.
    pub fn start(test: &str) -> Result<TestCluster, String> {
        let binaries = binaries()?;
        Ok(TestCluster::launch(&binaries, 100).unwrap_or_else(|e| panic!("{test}: {e}")))
    }

    /// A new cluster from `binaries`, started, that takes `connections` at once.
    fn launch(binaries: &Binaries, connections: u32) -> Result<TestCluster, String> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        // The server's user must reach it: not under a TMPDIR private to this user.
        let tmp = match binaries.run_as {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let dir = tmp.join(format!(
            "otnsx-cluster-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut random = [0u8; 16];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut random,
        )
        .unwrap();
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, &password).unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let cluster = TestCluster {
            dir,
            binaries: binaries.clone(),
            port,
            password,
        };
        // From here on the cluster's drop (or the watcher, if this process is killed) stops
        // the server and removes the directory.
        cluster.watch();
        give_to(cluster.binaries.run_as.as_ref(), &cluster.dir)?;
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                &format!("--pwfile={}", pwfile.display()),
                "-A",
                "scram-sha-256",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        )?;
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = {connections}\nfsync = off\n",
            cluster.dir.display()
        );
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), text).unwrap();
        cluster.ctl(&["start"])?;
        Ok(cluster)
    }

    /// Starts a watcher, in a process group of its own (a ^C to the tests does not reach it),
    /// that stops the server and removes its directory once this process is gone, however it
    /// ended.
    fn watch(&self) {
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null) && kill -QUIT "$pid" 2>/dev/null
sleep 1; rm -rf "$2""#;
        let _ = std::os::unix::process::CommandExt::process_group(
            std::process::Command::new("sh")
                .args(["-c", script, "otnsx-pg-watch"])
                .arg(std::process::id().to_string())
                .arg(&self.dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
            0,
        )
        .spawn();
    }

    /// The superuser's URL.
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `program` of the server's binaries, run as the server's user.
    fn command(&self, program: &str) -> std::process::Command {
        run_by(
            self.binaries.run_as.as_ref(),
            &self.binaries.bin.join(program),
        )
    }

    /// Runs `program`; what it said, and the server's log, if it failed.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        Err(format!(
            "{} {}: {}\n{}{}\n{log}",
            program,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ))
    }

    fn ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let mut all = vec![
            "-D",
            data.to_str().unwrap(),
            "-w",
            "-l",
            log.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Restarts the server (fast shutdown: every session ends, as in a real restart).
    pub fn restart(&self) {
        self.ctl(&["restart", "-m", "fast"]).unwrap();
    }

    /// A new database in this cluster.
    pub fn database(&self) -> TestDb {
        let url = self.url();
        let mut admin: postgres::Config = url.parse().unwrap();
        admin.password(&self.password);
        TestDb::create_in(admin, &url, self.password.clone())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["stop", "-m", "immediate"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy on 127.0.0.1 in front of a database that delays every answer by `delay` (as a
/// network round trip would), for the benchmark to count the round trips a run waits on.
pub struct LatencyProxy {
    addr: std::net::SocketAddr,
    turns: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl LatencyProxy {
    pub fn start(upstream: &str, delay: std::time::Duration) -> LatencyProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = upstream.to_string();
        let turns = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&turns);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                // Whether the client sent something the server has not answered yet: the
                // server's next answer ends a round trip.
                let spoke = Arc::new(AtomicBool::new(false));
                // Requests pass at once.
                let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let spoke_up = Arc::clone(&spoke);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        spoke_up.store(true, Ordering::SeqCst);
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
                // Answers arrive `delay` after the server sent them, in order.
                let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>)>();
                let mut server = server;
                let turns = Arc::clone(&counted);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = server.read(&mut buf) {
                        if n > 0 && spoke.swap(false, Ordering::SeqCst) {
                            turns.fetch_add(1, Ordering::SeqCst);
                        }
                        if n == 0
                            || tx
                                .send((std::time::Instant::now(), buf[..n].to_vec()))
                                .is_err()
                        {
                            break;
                        }
                    }
                });
                let mut client = client;
                std::thread::spawn(move || {
                    for (at, bytes) in rx {
                        let due = at + delay;
                        let now = std::time::Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if client.write_all(&bytes).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        LatencyProxy { addr, turns }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The round trips through the proxy so far: each answer of the server that came after
    /// the client had sent something (requests sent together before an answer count once;
    /// what the client sends expecting no answer, such as the session's end, not at all).
    pub fn turns(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        std::sync::Arc::clone(&self.turns)
    }
}

/// A server on 127.0.0.1 that accepts connections and never answers (a frozen primary, a
/// stalled standby, PgBouncer in front of a stopped server): what it is sent stays unread.
pub struct SilentServer {
    addr: std::net::SocketAddr,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        SilentServer { addr }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

/// What a [`CutProxy`] does to the first query, once armed, that ends with `COMMIT`.
#[derive(Clone, Copy, PartialEq)]
pub enum Cut {
    /// Passes it on to the server, and drops the server's answer: the server commits, the
    /// client never hears so.
    AnswerLost,
    /// Keeps it from the server: nothing commits.
    CommitLost,
    /// Passes it on, and closes the client's connection when the server answers (instead of
    /// passing the answer on): the server committed, the client sees the connection end.
    ClosedAfterCommit,
}

/// A TCP proxy on 127.0.0.1 in front of a database that, once armed, cuts one connection at
/// its `COMMIT` (see [`Cut`]): from then on that connection passes nothing either way, and
/// stays open (no answer, no end). Every other connection passes.
pub struct CutProxy {
    addr: std::net::SocketAddr,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: std::sync::Arc<AtomicUsize>,
}

impl CutProxy {
    pub fn start(upstream: &str, cut: Cut) -> CutProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let (armed2, cuts2) = (armed.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let muted = Arc::new(AtomicBool::new(false));
                // The server's answers, until the cut.
                let (mut from, mut to) = (server.try_clone().unwrap(), client.try_clone().unwrap());
                let muted2 = muted.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if muted2.load(Ordering::SeqCst) {
                            if cut == Cut::ClosedAfterCommit {
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            }
                            continue;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    if !muted2.load(Ordering::SeqCst) {
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    }
                    // A cut connection stays open to the client.
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                });
                // The client's messages, whole (the startup message has no type byte), until
                // the cut.
                let (armed, cuts) = (armed2.clone(), cuts2.clone());
                let (mut from, mut to) = (client, server);
                std::thread::spawn(move || {
                    let mut pending: Vec<u8> = Vec::new();
                    let mut started = false;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if muted.load(Ordering::SeqCst) {
                            continue;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        loop {
                            let head = if started { 1 } else { 0 };
                            if pending.len() < head + 4 {
                                break;
                            }
                            let len =
                                u32::from_be_bytes(pending[head..head + 4].try_into().unwrap())
                                    as usize;
                            if pending.len() < head + len {
                                break;
                            }
                            let message: Vec<u8> = pending.drain(..head + len).collect();
                            let commit = started
                                && message[0] == b'Q'
                                && String::from_utf8_lossy(&message[5..])
                                    .trim_end_matches('\0')
                                    .trim_end()
                                    .ends_with("COMMIT");
                            started = true;
                            if commit && armed.swap(false, Ordering::SeqCst) {
                                cuts.fetch_add(1, Ordering::SeqCst);
                                muted.store(true, Ordering::SeqCst);
                                if cut != Cut::CommitLost {
                                    let _ = to.write_all(&message);
                                }
                                break;
                            }
                            if to.write_all(&message).is_err() {
                                return;
                            }
                        }
                    }
                    if !muted.load(Ordering::SeqCst) {
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    }
                });
            }
        });
        CutProxy { addr, armed, cuts }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Cuts the next connection that commits.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many connections were cut.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// A TCP proxy on 127.0.0.1 in front of a database that, from the first connection it takes,
/// for `window`, cuts every connection at once (it accepts it, leaves the client's startup
/// message unread and closes: the kernel answers with a reset, as a server going away during a
/// failover does), and after that passes connections on. The moment otnsx first connects
/// opens the window, so that the run meets the failover whatever its start took.
pub struct FailoverProxy {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<AtomicUsize>,
    passed: std::sync::Arc<AtomicUsize>,
}

impl FailoverProxy {
    pub fn start(upstream: &str, window: std::time::Duration) -> FailoverProxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, passed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (cut2, passed2) = (cut.clone(), passed.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            let mut first: Option<std::time::Instant> = None;
            for client in listener.incoming().flatten() {
                let opened = *first.get_or_insert_with(std::time::Instant::now);
                if opened.elapsed() < window {
                    cut2.fetch_add(1, Ordering::SeqCst);
                    // Closed with the startup message unread: a reset.
                    std::thread::spawn(move || {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        drop(client);
                    });
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                passed2.fetch_add(1, Ordering::SeqCst);
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                let (mut s2, mut c2) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        FailoverProxy { addr, cut, passed }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// How many connections were cut, and how many passed.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.cut.load(Ordering::SeqCst),
            self.passed.load(Ordering::SeqCst),
        )
    }
}

/// A loopback port nothing listens on (bound, then let go): connections to it are refused.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl TestCluster {
    /// Makes this cluster answer as a standby does to libpq's `target_session_attrs`
    /// (`default_transaction_read_only = on`, so `SHOW transaction_read_only` is `on`), with
    /// database `name` in it and its superuser's password `password` (those of another
    /// server's database, so that a URL listing both hosts logs in to either).
    pub fn read_only_twin(&self, name: &str, password: &str) {
        let mut admin: postgres::Config = self.url().parse().unwrap();
        admin.password(&self.password);
        let mut client = admin.connect(postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let password = password.replace('\'', "''");
        client
            .batch_execute(&format!("ALTER USER postgres PASSWORD '{password}'"))
            .unwrap();
        // Last: from here on, this server's transactions are read-only.
        client
            .batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
            .unwrap();
        client.batch_execute("SELECT pg_reload_conf()").unwrap();
    }
}

impl TestCluster {
    /// Turns TLS on in this cluster (`ssl = on`, reloaded) with the certificate and key given
    /// as PEM; connections without TLS are still taken.
    pub fn with_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.dir.join("data");
        for (file, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(file);
            std::fs::write(&path, pem).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((_, uid, gid)) = &self.binaries.run_as {
                std::os::unix::fs::chown(&path, uid.parse().ok(), gid.parse().ok()).unwrap();
            }
        }
        let mut admin: postgres::Config = self.url().parse().unwrap();
        admin.password(&self.password);
        let mut client = admin.connect(postgres::NoTls).unwrap();
        client.batch_execute("ALTER SYSTEM SET ssl = on").unwrap();
        client.batch_execute("SELECT pg_reload_conf()").unwrap();
        // The reload is asynchronous: wait until new sessions see it.
        for _ in 0..100 {
            let mut probe = admin.connect(postgres::NoTls).unwrap();
            let on: String = probe.query_one("SHOW ssl", &[]).unwrap().get(0);
            if on == "on" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("ssl never turned on");
    }
}

/// The URL otnsx is given for a database of the tests' server: through the PgBouncer at
/// `OTNSX_TEST_PGBOUNCER` (`127.0.0.1:PORT`, in front of that server) when it is set, as for
/// CI's second pass of the PostgreSQL tests (`.ci/run`), else the server's own. The tests'
/// own connections (creating and dropping the database, reading its tables) go to the server.
fn through_pgbouncer(url: &str) -> String {
    match std::env::var("OTNSX_TEST_PGBOUNCER") {
        Ok(bouncer) if !bouncer.is_empty() => {
            let (user, rest) = url.split_once('@').unwrap();
            let (_, path) = rest.split_once('/').unwrap();
            format!("{user}@{bouncer}/{path}")
        }
        _ => url.to_string(),
    }
}

/// PgBouncer's binary: on PATH or where Debian's package puts it (`/usr/sbin`).
fn pgbouncer_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|file| file.is_file())
}

/// A PgBouncer of a test's own on a free loopback port, in front of the tests' server, as
/// `.ci/postgres.sh` starts the one of CI's second pass: transaction mode (`pool_mode =
/// transaction`), every database (`* = host=127.0.0.1 port=...`), SCRAM against a userlist
/// that holds the superuser, other users looked up in the server as the superuser
/// (`auth_user`, for tests that make a role), and everything else PgBouncer's defaults (Debian
/// 12's package is 1.18: it refuses startup options and tracks no prepared statements). Run as
/// the server's user when the tests run as root (PgBouncer refuses root); stopped when dropped
/// (or, if the tests are killed, by a watcher).
pub struct Bouncer {
    dir: PathBuf,
    binary: PathBuf,
    run_as: Option<(String, String, String)>,
    pub port: u16,
    child: Mutex<Option<std::process::Child>>,
}

impl Bouncer {
    /// A PgBouncer, started; or why there is none here (no PostgreSQL server, or no
    /// `pgbouncer`: Debian's package is pgbouncer).
    pub fn start(test: &str) -> Result<Bouncer, String> {
        let binary = pgbouncer_binary().ok_or(
            "no pgbouncer (on PATH, or /usr/sbin/pgbouncer) for the PgBouncer tests: Debian's package is pgbouncer",
        )?;
        let server = usable(test)?;
        let root = id(&["-u"]).as_deref() == Some("0");
        let run_as = match (root, binaries()) {
            (false, _) => None,
            (true, Ok(binaries)) => binaries.run_as,
            (true, Err(_)) => {
                let user = std::env::var("OTNSX_TEST_POSTGRES_RUN_AS")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| "postgres".into());
                let uid = id(&["-u", &user]).ok_or(format!("no user {user} to run PgBouncer"))?;
                let gid = id(&["-g", &user]).ok_or(format!("no user {user} to run PgBouncer"))?;
                Some((user, uid, gid))
            }
        };
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from("/tmp").join(format!(
            "otnsx-pgbouncer-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let address = server.url.split_once('@').unwrap().1;
        let server_port = address
            .split_once('/')
            .unwrap()
            .0
            .rsplit_once(':')
            .unwrap()
            .1;
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {dir}\npool_mode = transaction\nauth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\nauth_user = postgres\nlogfile = {dir}/pgbouncer.log\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(
            dir.join("userlist.txt"),
            format!("\"postgres\" \"{}\"\n", server.password),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("userlist.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let bouncer = Bouncer {
            dir,
            binary,
            run_as,
            port,
            child: Mutex::new(None),
        };
        give_to(bouncer.run_as.as_ref(), &bouncer.dir)?;
        bouncer.launch().unwrap_or_else(|e| panic!("{test}: {e}"));
        Ok(bouncer)
    }

    /// Starts the process and waits until it takes connections (at most 10 s).
    fn launch(&self) -> Result<(), String> {
        let child = run_by(self.run_as.as_ref(), &self.binary)
            .arg(self.dir.join("pgbouncer.ini"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        let pid = child.id();
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        // Stops it once this process is gone, however it ended.
        let script =
            r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null"#;
        let _ = std::os::unix::process::CommandExt::process_group(
            std::process::Command::new("sh")
                .args(["-c", script, "otnsx-pgbouncer-watch"])
                .arg(std::process::id().to_string())
                .arg(pid.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
            0,
        )
        .spawn();
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(format!(
            "pgbouncer did not listen on 127.0.0.1:{} within 10 s:\n{}",
            self.port,
            self.log()
        ))
    }

    /// Stops the process at once (SIGKILL: every client's connection and every server
    /// connection ends, as when PgBouncer or its host goes down).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it and starts it again on the same port.
    pub fn restart(&self) {
        self.stop();
        self.launch().unwrap();
    }

    /// What PgBouncer logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A new database in the tests' server, otnsx's URL for it through this PgBouncer.
    pub fn database(&self, test: &str) -> Result<TestDb, String> {
        let mut db = TestDb::create(test)?;
        db.url = format!("postgres://postgres@{}/{}", self.addr(), db.name);
        Ok(db)
    }

    /// A superuser connection to `db` through this PgBouncer (as otnsx's are).
    pub fn client(&self, db: &TestDb) -> postgres::Client {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(&db.password)
            .dbname(&db.name);
        config.connect(postgres::NoTls).unwrap()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `program`, run as the servers' user when there is one (`setpriv`, its groups cleared).
fn run_by(
    run_as: Option<&(String, String, String)>,
    program: &std::path::Path,
) -> std::process::Command {
    match run_as {
        Some((_, uid, gid)) => {
            let mut c = std::process::Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}

/// Gives `dir` and all in it to the user the servers run as (`run_as`: name, uid, gid), when
/// they run as another user than the tests.
fn give_to(run_as: Option<&(String, String, String)>, dir: &std::path::Path) -> Result<(), String> {
    let Some((_, uid, gid)) = run_as else {
        return Ok(());
    };
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(dir)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("chown {}: {status}", dir.display())),
    }
}
