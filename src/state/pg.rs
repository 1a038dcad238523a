//! The PostgreSQL state backend (`[state] backend = "postgres"`): the leases and the journal in
//! tables of one database that every help-desk node shares.
//!
//! A run that may change leases holds one transaction from its state lock to its commit. The
//! transaction-level advisory lock taken first (`pg_advisory_xact_lock`) serialises the whole
//! read-change-write of every run on every node, as the lock file does for one node, and is
//! released by the commit, a rollback, or the connection's end (a killed otnsx, a restarted
//! server): it can never be left behind. The leases and journal rows a run writes wait in
//! memory and go with the `COMMIT`, in one round trip: they commit together or not at all.
//!
//! The journal is hash-chained (schema version 2; see [`crate::state::chain`]): the server
//! itself gives each row its place in the chain (`n`, 1 for the first row chained) and its
//! `hash`, in the statement that inserts it, from the row before in the chain, so that the
//! table's rows read back as exactly the lines `chain::link` makes (`state import` alone
//! chains its rows itself with `chain::link`, after the chain's last row read under the journal
//! lock, and sends them with their `n` and `hash`: the same rows, a few round trips for a
//! long journal instead of one statement per entry). Rows written before the
//! chain (schema version 1) have neither, and read back as they were: unhashed. Every
//! transaction that inserts journal rows takes a second transaction-level advisory lock, the
//! journal lock ([`JOURNAL_KEY`]), immediately before its inserts and commits right after
//! them (in the same round trip), so that the chain's rows are written one transaction at a
//! time: by the run's commit, by an entry journaled outside a run's transaction, by
//! `state import`. The journal lock is taken after the state lock, never before: nothing waits
//! for the state lock while holding it.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use postgres::error::{Severity, SqlState};
use postgres::types::Type;
use postgres::{Client, SimpleQueryMessage};

use crate::config::Database;
use crate::deadline::Deadline;
use crate::error::{Exit, fault};
use crate::state::entry::Entry;
use crate::state::keys::Scope;
use crate::state::lease::{Holder, Lease};
use crate::sync::lock;

/// The schema this otnsx reads and writes. `otnsx state migrate` brings a database to it.
pub const SCHEMA_VERSION: i64 = 2;

/// The advisory lock every run's transaction takes: "otnsx" in ASCII.
const LOCK_KEY: i64 = 0x006f_746e_7378;

/// The advisory locks of one ticket and of one VM, `(class, hashtext(key))`: the two-key form,
/// apart from [`LOCK_KEY`] and [`JOURNAL_KEY`]. A run that touches some keys takes
/// [`LOCK_KEY`] shared, then its ticket, then its VMs by their `hashtext`, ascending, so that
/// two runs cannot wait for each other (see [`crate::state::keys`]); "otnt" and "otnv".
const TICKET_CLASS: i32 = 0x6f74_6e74;
const VM_CLASS: i32 = 0x6f74_6e76;

/// SQL for the VM a lease's `target` column names: the id before a profile (`#`) or an
/// agent (U+001F).
const TARGET_VM: &str = "split_part(split_part(target, '#', 1), chr(31), 1)";

/// The advisory lock every transaction that inserts journal rows takes right before them, so
/// that the chain is extended by one transaction at a time: "otnsxj" in ASCII. Taken after
/// [`LOCK_KEY`] when a transaction takes both, and held only until its `COMMIT`, sent with the
/// inserts.
const JOURNAL_KEY: i64 = 0x6f74_6e73_786a;

/// How the calls that wait for the journal lock and no other begin their `what`: an entry
/// journaled outside a run's transaction, and the run's commit.
const JOURNALING: &str = "journaling";
const COMMITTING: &str = "committing";

/// The schema, step by step: entry `n` brings version `n` to `n + 1`. Never edit a step that
/// was released; add one.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE otnsx_leases (
    target text NOT NULL,
    holder text NOT NULL,
    granted_at bigint NOT NULL,
    lease text NOT NULL,
    PRIMARY KEY (target, holder)
);
CREATE TABLE otnsx_leases_aside (
    set_aside_at timestamptz NOT NULL DEFAULT now(),
    target text NOT NULL,
    holder text NOT NULL,
    lease text NOT NULL
);
CREATE TABLE otnsx_journal (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    ts bigint NOT NULL,
    vm text,
    vm_id text,
    ticket_number text,
    -- The tickets the entry is about: its own, and those whose access it began or ended, by
    -- number and by ID.
    tickets text[] NOT NULL DEFAULT '{}',
    entry text NOT NULL
);
CREATE INDEX otnsx_journal_ts ON otnsx_journal (ts);
CREATE INDEX otnsx_journal_vm ON otnsx_journal (vm);
CREATE INDEX otnsx_journal_vm_id ON otnsx_journal (vm_id);
CREATE INDEX otnsx_journal_tickets ON otnsx_journal USING gin (tickets);
",
    "
-- The hash chain: each row's place in it (1, 2, ...) and its hash (see src/state/chain.rs).
-- The rows already there keep NULLs: they were written before the chain began.
ALTER TABLE otnsx_journal
    ADD COLUMN n bigint,
    ADD COLUMN hash text,
    ADD CONSTRAINT otnsx_journal_n_key UNIQUE (n),
    ADD CONSTRAINT otnsx_journal_chained CHECK ((n IS NULL) = (hash IS NULL));
",
];

/// What the database user needs on each table for a run, as `check` verifies it.
pub const GRANTS: &[(&str, &[&str])] = &[
    ("otnsx_schema", &["SELECT"]),
    ("otnsx_leases", &["SELECT", "INSERT", "UPDATE", "DELETE"]),
    ("otnsx_leases_aside", &["INSERT"]),
    ("otnsx_journal", &["SELECT", "INSERT"]),
];

/// The run's transaction: what the database has under the lock, and what waits for the commit.
struct Tx {
    /// The leases by (target, holder), as JSON, as they are once the pending statements run.
    rows: BTreeMap<(String, String), String>,
    /// Why the leases read under the lock are not to be trusted, if they are not.
    damaged: Option<String>,
    /// The statements of leases that go with the `COMMIT`.
    pending: Vec<String>,
    /// The journal inserts that go with the `COMMIT`, after the leases' statements and the
    /// journal lock, in the order the entries were staged (one statement each).
    journal: Vec<String>,
    /// Their journal lines (unchained), said on stderr if the commit fails.
    lines: Vec<String>,
    /// The ids of their journal entries.
    ids: HashSet<String>,
    /// The VMs whose leases the run has locked, with their lock key (`hashtext`); `None`: it
    /// locked everything.
    held: Option<BTreeMap<String, i64>>,
    /// What it locked as it began: taken again, with the VMs, when it must start over.
    scope: Scope,
}

impl Tx {
    /// Takes the leases read (`Err`: why they are not to be trusted) as the rows.
    fn take_rows(&mut self, read: Result<Vec<Lease>, String>) {
        match read {
            Ok(leases) => {
                for lease in leases {
                    let json = serde_json::to_string(&lease).unwrap_or_default();
                    self.rows
                        .insert((lease.key(), holder_key(&lease.holder)), json);
                }
            }
            Err(why) => self.damaged = Some(why),
        }
    }

    fn covers(&self, target: &str) -> bool {
        self.held
            .as_ref()
            .is_none_or(|held| held.contains_key(vm_of_target(target)))
    }
}

/// The VM a lease's key (`target`) names: what [`TARGET_VM`] says in SQL.
fn vm_of_target(target: &str) -> &str {
    target.split(['#', '\u{1f}']).next().unwrap_or(target)
}

/// SQL that locks, in the order of their keys, the VMs of `ids` and (with `ticket`, a holder
/// column pattern) those the ticket's leases name, and returns each as `vm, key, locked`:
/// those whose key is above `above` are waited for; those below are only tried (`locked`
/// is `false` when another run holds one).
fn vm_locks(
    ticket: Option<&str>,
    ids: &std::collections::BTreeSet<String>,
    above: Option<i64>,
) -> String {
    let mut sources = Vec::new();
    if !ids.is_empty() {
        let list: Vec<String> = ids.iter().map(|id| literal(id)).collect();
        sources.push(format!(
            "SELECT unnest(ARRAY[{}]::text[]) AS vm",
            list.join(", ")
        ));
    }
    if let Some(pattern) = ticket {
        sources.push(format!(
            "SELECT {TARGET_VM} AS vm FROM otnsx_leases WHERE holder LIKE {}",
            literal(pattern)
        ));
    }
    if sources.is_empty() {
        return "SELECT NULL, NULL, NULL WHERE false".into();
    }
    let lock = match above {
        None => format!("pg_advisory_xact_lock({VM_CLASS}, k)::text"),
        Some(top) => format!(
            "CASE WHEN k > {top} THEN pg_advisory_xact_lock({VM_CLASS}, k)::text ELSE pg_try_advisory_xact_lock({VM_CLASS}, k)::text END"
        ),
    };
    format!(
        "SELECT vm, k, {lock} FROM (SELECT DISTINCT vm, hashtext(vm) AS k FROM ({}) v ORDER BY k) s",
        sources.join(" UNION ")
    )
}

/// The VMs [`vm_locks`] locked, with their keys, and whether one it only tried was busy.
fn locked_vms(rows: Option<&Vec<Vec<Option<String>>>>) -> (BTreeMap<String, i64>, bool) {
    let mut locked = BTreeMap::new();
    let mut busy = false;
    for row in rows.into_iter().flatten() {
        let (Some(Some(vm)), Some(Some(key))) = (row.first(), row.get(1)) else {
            continue;
        };
        if row.get(2).cloned().flatten().as_deref() == Some("false") {
            busy = true;
            continue;
        }
        if let Ok(key) = key.parse::<i64>() {
            locked.insert(vm.clone(), key);
        }
    }
    (locked, busy)
}

/// SQL for the leases of the VMs `ids`.
fn leases_of(ids: &std::collections::BTreeSet<String>) -> String {
    let list: Vec<String> = ids.iter().map(|id| literal(id)).collect();
    format!(
        "SELECT target, holder, lease FROM otnsx_leases WHERE {TARGET_VM} IN ({}) ORDER BY granted_at, target, holder",
        list.join(", ")
    )
}

/// The holder column's pattern of ticket `id`'s leases (see [`holder_key`]).
fn ticket_pattern(id: u64) -> String {
    format!("{{\"kind\":\"ticket\",\"id\":{id},%")
}

#[derive(Default)]
struct Inner {
    /// The thread that owns the connection (see [`Worker`]); started at the first call.
    worker: Option<Worker>,
    /// The TLS set-up, made once.
    tls: Option<rustls::ClientConfig>,
    tx: Option<Tx>,
    /// The server process of the run's transaction (`pg_backend_pid()`): the session to end
    /// when the answer to its `COMMIT` was lost.
    pid: Option<i32>,
    /// Why the database failed for this run (it could not be connected to, or did not answer
    /// within the deadline): every later call fails at once, as each try would spend the time
    /// that closing access in NSX needs.
    failed: Option<String>,
    /// The journal lines of the last commit that failed (see [`Pg::take_unrecorded`]).
    unrecorded: Vec<String>,
    /// The journal lines of the last commit (see [`Pg::take_committed`]).
    committed: Vec<String>,
}

/// What a worker runs: one call on the connection it owns (`None` before the first connect).
type Job = Box<dyn FnOnce(&mut Option<Client>) + Send>;

/// The thread that owns the run's connection. The `postgres` crate's client has no timeout of
/// its own, and a server that accepts connections and then does not answer (a frozen primary,
/// a stalled synchronous standby, PgBouncer in front of a stopped server) would hold a call
/// for ever: each call is a job sent to this thread, and the caller waits for its answer only
/// until the deadline. A worker that does not answer in time is abandoned (the process ends
/// soon after; it is never joined), and the run's database has failed.
struct Worker {
    jobs: mpsc::Sender<Job>,
    /// Disconnected once the thread has closed its connection, after `jobs` was dropped.
    ended: mpsc::Receiver<()>,
}

impl Worker {
    fn start() -> std::io::Result<Worker> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (end, ended) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("otnsx-database".into())
            .spawn(move || {
                let mut client = None;
                for job in queue {
                    job(&mut client);
                }
                // Ends the session (a Terminate message) before saying so.
                drop(client);
                drop(end);
            })?;
        Ok(Worker { jobs, ended })
    }
}

/// Why a call on the worker failed.
enum Failed {
    /// Connecting (or reconnecting) failed: each host tried, in the URL's order, with why
    /// (its last try's).
    Connecting(Vec<(String, postgres::Error)>),
    /// The run's connection was lost before the call: nothing of it reached the server.
    Lost,
    /// The call failed.
    Working(postgres::Error),
    /// The journal's rows were not what its statement makes.
    Reading(std::io::Error),
}

/// A call that failed, by what the server can have done with it.
enum Failure {
    /// The call never reached the server: the connection was lost before, the run's database
    /// has failed, or no time was left.
    NotSent(anyhow::Error),
    /// The server answered with an error: the statement, and its transaction, failed.
    Refused(anyhow::Error),
    /// No answer within the deadline, or the connection broke while waiting for it: what the
    /// server did is unknown.
    NoAnswer(anyhow::Error),
}

impl Failure {
    fn error(self) -> anyhow::Error {
        match self {
            Failure::NotSent(e) | Failure::Refused(e) | Failure::NoAnswer(e) => e,
        }
    }
}

/// Whether a call may connect when the worker has no live connection: not in the run's
/// transaction, whose connection a new one cannot replace.
#[derive(Clone, Copy, PartialEq)]
enum Connect {
    IfNeeded,
    Never,
    /// As `IfNeeded`, but when no host is writable, the first that answers read-only is
    /// connected to all the same (for `check`, which names what it found; it writes nothing).
    Inspecting,
    /// As `IfNeeded`, but the one host of a single-host URL is not asked whether it is
    /// writable when connecting (libpq's `target_session_attrs=read-write` costs a round trip
    /// of its own, through PgBouncer one to the server): the caller's first statement asks, in
    /// its transaction, and connects again with `IfNeeded` when it is not ([`Pg::begin_tx`]).
    /// A URL of several hosts is asked at connecting, to find the writable one.
    AskedLater,
}

/// How the worker connects: each host of the URL in its order, with its own settings (libpq's
/// `target_session_attrs=read-write`: a host whose sessions are read-only is passed over), and
/// until when connecting may be tried again.
struct Connector {
    hosts: Vec<(String, postgres::Config)>,
    tls: Option<rustls::ClientConfig>,
    /// Until when another round over the hosts may begin (see [`open`]).
    retry_until: crate::deadline::Deadline,
}

/// How many rounds over the hosts connecting takes at most: a failover (a primary that
/// refuses connections or still answers read-only for a fraction of a second) costs a
/// retry, not the event.
const CONNECT_TRIES: u32 = 5;

/// A pause of 50 to 200 ms before another round over the hosts, different for each process
/// and each try (from the process id and the clock: no random crate for this), so that runs
/// that failed together do not come back together.
fn jitter(round: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    // splitmix64 over the three.
    let mut z = (u64::from(std::process::id()) << 32 ^ nanos)
        .wrapping_add(u64::from(round).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    Duration::from_millis(50 + z % 151)
}

/// Whether connecting failed in a way that another try may get past: refused or reset before the
/// session began, no answer in time, a server starting up, shutting down or in recovery
/// (SQLSTATE 57P03, 57P01), or one whose sessions are read-only (a standby, a primary being
/// demoted). A refused password, a missing database or a certificate that does not verify
/// are not retried. Nothing of the run's was sent to the server before it failed.
fn transient(e: &postgres::Error) -> bool {
    match e.code() {
        Some(code) => *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::ADMIN_SHUTDOWN,
        None => matches!(
            e.to_string().as_str(),
            "error connecting to server"
                | "error communicating with the server"
                | "connection closed"
                | "timeout waiting for server"
        ),
    }
}

/// Whether `e` is tokio-postgres's refusal of a server whose sessions are read-only
/// (`target_session_attrs=read-write`).
fn read_only_server(e: &postgres::Error) -> bool {
    e.code().is_none()
        && std::error::Error::source(e)
            .is_some_and(|s| s.to_string().contains("does not allow writes"))
}

pub struct Pg {
    db: Database,
    deadline: Deadline,
    /// What of the deadline the database's calls leave to the run: closing access in NSX after
    /// a database that did not answer, and the ticket's note.
    reserve: Duration,
    inner: Mutex<Inner>,
    /// The host that answered, and whether it is writable (see [`Pg::answered`]).
    answered: Arc<Mutex<Option<(String, bool)>>>,
}

impl Drop for Pg {
    /// Ends the session (briefly waited for: a server that does not answer is left to the
    /// process's end).
    fn drop(&mut self) {
        let worker = lock(&self.inner).worker.take();
        if let Some(Worker { jobs, ended }) = worker {
            drop(jobs);
            let wait = self
                .deadline
                .remaining()
                .clamp(Duration::from_millis(100), Duration::from_secs(1));
            let _ = ended.recv_timeout(wait);
        }
    }
}

/// The server's certificate taken unverified (`sslmode=require` with `accept_unverified_server
/// = true`; every run warns): the handshake's signatures are still checked, so that the
/// connection is encrypted to whoever holds the certificate's key, whoever that is.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `host:port` as a URL writes it (`[::1]:5432`).
fn host_port(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// How much longer than the run's deadline the server lets otnsx's transaction sit idle
/// (`idle_in_transaction_session_timeout`) before it ends the session and its state lock: the
/// run ends within its deadline plus a second, so a session idle for longer belongs to a run
/// that hangs or was stopped.
const IDLE_MARGIN: Duration = Duration::from_secs(2);

/// The database's text for `text`: an escape string constant, `E'...'`, with backslashes and
/// quotes doubled. It means the same whether `standard_conforming_strings` is on or off (a
/// role's or a database's default, or what a pooler such as PgBouncer left on the server
/// connection: otnsx sets nothing when it connects), where a standard literal `'...'` would
/// read a backslash as an escape under `off`. A NUL, which no PostgreSQL text may hold,
/// becomes U+FFFD.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn nullable(text: Option<&str>) -> String {
    text.map_or_else(|| "NULL".into(), literal)
}

/// A lease's holder as the key column has it.
fn holder_key(holder: &Holder) -> String {
    serde_json::to_string(holder).unwrap_or_default()
}

/// The hash chain's body of a row, as SQL over its columns `entry` (the unchained line) and `n`
/// (its place in the chain): what `chain::link` hashes, byte for byte: the entry without its
/// closing brace, a comma unless the object is empty (`{}`: only `check`'s probe, rolled back,
/// writes one), and `"seq":n`. Standard literals without a backslash and `chr()`: it means
/// the same whatever `standard_conforming_strings` is.
const BODY: &str = r#"left(entry, -1) || CASE WHEN rtrim(left(entry, -1), ' ' || chr(9) || chr(10) || chr(13)) = '{' THEN '' ELSE ',' END || '"seq":' || n"#;

/// SQL for a chained row's line (as `chain::link` makes it) over its columns `entry`, `n` and
/// `hash`: the body, then `,"hash":"H"}`.
fn chained_line() -> String {
    format!(r#"{BODY} || ',"hash":"' || hash || '"}}'"#)
}

/// SQL for a row's line as the journal reads it: chained when it has a hash, else its entry
/// as it was written (before the chain began).
fn recorded_line() -> String {
    format!(
        "CASE WHEN hash IS NULL THEN entry ELSE {} END",
        chained_line()
    )
}

/// The statement that journals `entry` (once: an id the table has is left alone), chained
/// after the last row of the chain (found by the unique index on `n`) by the server itself:
/// its place is the last one's and 1 (1 for the first), its hash the hex SHA-256 of the last
/// one's hash ([`chain::GENESIS`] for the first), a line feed and its body ([`BODY`]). It
/// returns the row's chained line; none when the table had the id already. It must run under
/// the journal lock ([`JOURNAL_KEY`]), with a snapshot taken after it (read committed): else
/// two rows could take one place, and the unique index on `n` refuses the second.
///
/// [`chain::GENESIS`]: crate::state::chain::GENESIS
fn insert_entry(entry: &Entry, line: &str) -> String {
    let genesis = crate::state::chain::GENESIS;
    format!(
        "WITH last AS (SELECT n, hash FROM otnsx_journal WHERE n IS NOT NULL ORDER BY n DESC LIMIT 1), \
         e AS (SELECT {}::text AS entry, coalesce((SELECT n FROM last), 0) + 1 AS n, coalesce((SELECT hash FROM last), '{genesis}') AS prev) \
         INSERT INTO otnsx_journal (id, ts, vm, vm_id, ticket_number, tickets, entry, n, hash) \
         SELECT {}, entry, n, encode(sha256(convert_to(prev || chr(10) || {BODY}, 'UTF8')), 'hex') FROM e \
         ON CONFLICT (id) DO NOTHING RETURNING {}",
        literal(line),
        entry_columns(entry),
        chained_line()
    )
}

/// The values of an entry's columns `id, ts, vm, vm_id, ticket_number, tickets`, as SQL.
fn entry_columns(entry: &Entry) -> String {
    let mut tickets: Vec<String> = entry.ticket_number.iter().cloned().collect();
    for holder in entry.gained.iter().chain(&entry.lost) {
        if let Holder::Ticket { id, number } = holder {
            tickets.extend([number.clone(), id.to_string()]);
        }
    }
    tickets.sort();
    tickets.dedup();
    let tickets: Vec<String> = tickets.iter().map(|t| literal(t)).collect();
    format!(
        "{}, {}, {}, {}, {}, ARRAY[{}]::text[]",
        literal(&entry.id),
        entry.ts.0,
        nullable(entry.vm.as_deref()),
        nullable(entry.vm_id.as_deref()),
        nullable(entry.ticket_number.as_deref()),
        tickets.join(", "),
    )
}

/// How many ids one `SELECT id ... WHERE id IN (...)` of an import asks about, and how many
/// such statements go in one round trip.
const IDS_PER_STATEMENT: usize = 1000;
const ID_STATEMENTS_PER_TRIP: usize = 20;
/// How many rows one multi-row `INSERT` of an import writes, and how many such statements go
/// in one round trip.
const ROWS_PER_INSERT: usize = 500;
const INSERTS_PER_TRIP: usize = 10;

/// An entry to import: its id and the SQL of its columns but the chain's (see
/// [`entry_columns`]), and its line (unchained) as the table will hold it.
struct ImportRow {
    id: String,
    columns: String,
    line: String,
}

/// The simple query `sql` (statements that return no rows), and the sum of the rows they
/// affected; on an error the transaction is rolled back. Runs on the worker.
fn affected(client: &mut Client, sql: &str) -> Result<u64, Failed> {
    let messages = client.simple_query(sql).map_err(|e| {
        let _ = client.batch_execute("ROLLBACK");
        Failed::Working(e)
    })?;
    Ok(messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => *n,
            _ => 0,
        })
        .sum())
}

/// Puts `rows` in the journal table, chained after the chain's last row in their order, as
/// one transaction's part under the journal lock (taken here; the state lock is held). An id
/// the table has already, or one that came before in `rows`, is left out. The rows are
/// chained here, as [`chain::link`] does, byte for byte what [`insert_entry`] has the server
/// do, and written with their `n` and `hash` in multi-row inserts, a few per round trip.
/// `Ok(Err)` (the transaction rolled back) when the table took fewer rows than were sent: the
/// chain would have a gap. Runs on the worker.
///
/// [`chain::link`]: crate::state::chain::link
fn import_rows(client: &mut Client, rows: Vec<ImportRow>) -> Result<Result<u64, String>, Failed> {
    use crate::state::chain::{Head, link};
    let head = query(
        client,
        &format!(
            "SELECT pg_advisory_xact_lock({JOURNAL_KEY}); SELECT n, hash FROM otnsx_journal WHERE n IS NOT NULL ORDER BY n DESC LIMIT 1"
        ),
    )?;
    let mut head = match head.get(1).and_then(|rows| rows.first()) {
        None => Head::genesis(),
        Some(row) => {
            let seq = row.first().cloned().flatten().and_then(|n| n.parse().ok());
            let hash = row.get(1).cloned().flatten();
            match (seq, hash) {
                (Some(seq), Some(hash)) => Head { seq, hash },
                _ => {
                    let _ = client.batch_execute("ROLLBACK");
                    return Ok(Err(
                        "the last row of the journal's chain has no valid n and hash".into(),
                    ));
                }
            }
        }
    };
    // The ids the table has already.
    let mut known: HashSet<String> = HashSet::new();
    for trip in rows.chunks(IDS_PER_STATEMENT * ID_STATEMENTS_PER_TRIP) {
        let sql: Vec<String> = trip
            .chunks(IDS_PER_STATEMENT)
            .map(|chunk| {
                let ids: Vec<String> = chunk.iter().map(|row| literal(&row.id)).collect();
                format!(
                    "SELECT id FROM otnsx_journal WHERE id IN ({})",
                    ids.join(", ")
                )
            })
            .collect();
        for statement in query(
            client,
            &sql.join(
                ";
",
            ),
        )? {
            known.extend(
                statement
                    .into_iter()
                    .filter_map(|row| row.into_iter().next().flatten()),
            );
        }
    }
    // The fresh ones, chained in order.
    let mut values = Vec::new();
    for row in rows {
        if !known.insert(row.id) {
            continue;
        }
        let Some((_, next)) = link(&head, &row.line) else {
            let _ = client.batch_execute("ROLLBACK");
            return Ok(Err(format!("an entry is not a JSON object: {}", row.line)));
        };
        values.push(format!(
            "({}, {}, {}, '{}')",
            row.columns,
            literal(&row.line),
            next.seq,
            next.hash
        ));
        head = next;
    }
    let mut inserted = 0;
    for trip in values.chunks(ROWS_PER_INSERT * INSERTS_PER_TRIP) {
        let sql: Vec<String> = trip
            .chunks(ROWS_PER_INSERT)
            .map(|chunk| {
                format!(
                    "INSERT INTO otnsx_journal (id, ts, vm, vm_id, ticket_number, tickets, entry, n, hash) VALUES {} ON CONFLICT (id) DO NOTHING",
                    chunk.join(",\n")
                )
            })
            .collect();
        inserted += affected(client, &sql.join(";\n"))?;
    }
    if inserted != values.len() as u64 {
        let _ = client.batch_execute("ROLLBACK");
        return Ok(Err(format!(
            "the journal table took {inserted} of the {} entries sent, not all: the chain would have a gap (was a row written beside the journal lock?); nothing was imported",
            values.len()
        )));
    }
    Ok(Ok(inserted))
}

/// The lines the journal inserts returned in a simple query's `results` ([`results`]) whose
/// last statement is a `COMMIT` and whose `count` statements before it are the inserts.
fn returned_lines(results: &[Vec<Vec<Option<String>>>], count: usize) -> Vec<String> {
    // One result per statement, then an empty one after the last.
    let commit = results.len().saturating_sub(2);
    let first = commit.saturating_sub(count);
    results
        .get(first..commit)
        .unwrap_or_default()
        .iter()
        .flatten()
        .filter_map(|row| row.first().cloned().flatten())
        .collect()
}

/// The one value of a statement's rows (its first row's first column), if there is one.
fn scalar(rows: &[Vec<Option<String>>]) -> Option<String> {
    rows.first()?.first()?.clone()
}

/// The rows of each statement of a simple query, in order.
fn results(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<Vec<Option<String>>>> {
    let mut out = vec![Vec::new()];
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => {
                let values = (0..row.len()).map(|i| row.get(i).map(str::to_string));
                if let Some(last) = out.last_mut() {
                    last.push(values.collect());
                }
            }
            SimpleQueryMessage::CommandComplete(_) => out.push(Vec::new()),
            _ => {}
        }
    }
    out
}

/// The first column of the first row of the first statement's answer: a `SHOW`'s setting.
fn setting(answer: &[Vec<Vec<Option<String>>>]) -> Option<String> {
    answer.first()?.first()?.first()?.clone()
}

/// The rows of `sql`'s statements; on an error the transaction is rolled back (the session
/// would otherwise stay in a failed one). Runs on the worker.
fn query(client: &mut Client, sql: &str) -> Result<Vec<Vec<Vec<Option<String>>>>, Failed> {
    client.simple_query(sql).map(results).map_err(|e| {
        let _ = client.batch_execute("ROLLBACK");
        Failed::Working(e)
    })
}

/// [`query`] for statements whose rows do not matter.
fn execute(client: &mut Client, sql: &str) -> Result<(), Failed> {
    client.batch_execute(sql).map_err(|e| {
        let _ = client.batch_execute("ROLLBACK");
        Failed::Working(e)
    })
}

/// Connects with `config`, over TLS when there is a `tls` set-up. Runs on the worker.
fn open_host(
    config: &postgres::Config,
    tls: &Option<rustls::ClientConfig>,
) -> Result<Client, postgres::Error> {
    match tls {
        Some(tls) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone())),
        None => config.connect(postgres::NoTls),
    }
}

/// Connects to the first writable host of `to`, trying them in order; when a round fails in a
/// way another may not ([`transient`]), tries again after a pause ([`jitter`]), at most
/// [`CONNECT_TRIES`] rounds and none begun after `retry_until`. Returns the client, the host
/// that answered, and whether it is writable (always, but for `Connect::Inspecting`'s last
/// resort); or each host with why it failed in the last round. Nothing of the run's has been
/// sent when this fails: a retry here cannot repeat a statement. Runs on the worker.
fn open(to: &Connector, connect: Connect) -> Result<(Client, String, bool), Failed> {
    let mut round = 0;
    loop {
        round += 1;
        let mut failures = Vec::new();
        let asked_later = connect == Connect::AskedLater && to.hosts.len() == 1;
        for (host, config) in &to.hosts {
            let mut any;
            let config = if asked_later {
                any = config.clone();
                any.target_session_attrs(postgres::config::TargetSessionAttrs::Any);
                &any
            } else {
                config
            };
            match open_host(config, &to.tls) {
                // (Writable for `AskedLater` too: its caller goes on only on a writable one.)
                Ok(client) => return Ok((client, host.clone(), true)),
                Err(e) => failures.push((host.clone(), e)),
            }
        }
        let again = failures.iter().any(|(_, e)| transient(e));
        let pause = jitter(round);
        if !again || round >= CONNECT_TRIES || to.retry_until.remaining() <= pause {
            if connect == Connect::Inspecting {
                let read_only = failures
                    .iter()
                    .filter(|(_, e)| read_only_server(e))
                    .filter_map(|(host, _)| to.hosts.iter().find(|(h, _)| h == host));
                for (host, config) in read_only {
                    let mut any = config.clone();
                    any.target_session_attrs(postgres::config::TargetSessionAttrs::Any);
                    if let Ok(client) = open_host(&any, &to.tls) {
                        return Ok((client, host.clone(), false));
                    }
                }
            }
            return Err(Failed::Connecting(failures));
        }
        std::thread::sleep(pause);
    }
}

/// How long the server itself may wait (for a lock, on a statement) when the client waits
/// `wait` for it, in milliseconds: a little less, so that the server's own answer (a busy
/// lock, exit 75) comes before the client gives up on the server (exit 74).
fn server_wait(wait: Duration) -> u128 {
    wait.saturating_sub((wait / 10).min(Duration::from_millis(250)))
        .as_millis()
        .max(1)
}

/// The `SET LOCAL`s that bound a transaction's wait for the journal lock and its statements
/// when the client waits for them until `until`: the server answers first (a busy journal lock,
/// exit 75, before a statement cancelled, before the client gives up).
fn journal_waits(until: Deadline) -> String {
    let statement = server_wait(until.remaining());
    let lock = (statement - statement / 10).max(1);
    format!("SET LOCAL statement_timeout = {statement}; SET LOCAL lock_timeout = {lock}")
}

impl Pg {
    pub fn new(db: &Database, deadline: Deadline) -> Arc<Pg> {
        Arc::new(Pg {
            db: db.clone(),
            deadline,
            // As NSX's own waits: a quarter of the run, at most 3 s.
            reserve: (deadline.remaining() / 4).min(Duration::from_secs(3)),
            inner: Mutex::new(Inner::default()),
            answered: Arc::default(),
        })
    }

    /// `postgres://otnsx@db.example.com/otnsx`, for messages.
    pub fn url(&self) -> &str {
        &self.db.url
    }

    /// Until when the database's calls may take: the run's deadline less the reserve.
    fn budget(&self) -> Deadline {
        Deadline::after(self.deadline.remaining().saturating_sub(self.reserve))
    }

    /// The error of a server that is read-only, while doing `what`.
    fn read_only(&self, what: &str) -> anyhow::Error {
        fault(
            Exit::IoErr,
            format!(
                "database {} is read-only (a hot standby or a demoted primary?): point state.url at the primary ({what})",
                self.db.url
            ),
        )
    }

    /// A database failure in words that name the database and, where there is one, the fix.
    /// Most are exit 74 (the state cannot be read or written); a lock that stayed busy and the
    /// deadline are 75.
    fn error(&self, what: &str, e: &postgres::Error) -> anyhow::Error {
        let url = &self.db.url;
        let user = &self.db.user;
        let Some(db) = e.as_db_error() else {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            return fault(Exit::IoErr, format!("database {url}: {what}: {text}"));
        };
        let code = db.code();
        let message = db.message();
        let journal_lock = what.starts_with(JOURNALING) || what.starts_with(COMMITTING);
        let (exit, hint) = if *code == SqlState::LOCK_NOT_AVAILABLE && journal_lock {
            // The only lock waited for there: the run's commit holds the state lock already.
            return fault(
                Exit::TempFail,
                format!(
                    "database {url}: {what}: the journal lock (pg_advisory_xact_lock({JOURNAL_KEY})) stayed busy for what the deadline left; another otnsx (on this node or another) is writing journal rows, or hung while doing so"
                ),
            );
        } else if *code == SqlState::LOCK_NOT_AVAILABLE {
            return fault(
                Exit::TempFail,
                format!(
                    "the state lock in database {url} stayed busy for half of what the deadline lets a run wait (the rest is kept for the ticket and for closing); another otnsx (on this node or another) is still running, or hung"
                ),
            );
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            return self.read_only(&format!("{what}: {message}"));
        } else if *code == SqlState::QUERY_CANCELED {
            (
                Exit::TempFail,
                "the run's deadline passed while the database worked".to_string(),
            )
        } else if *code == SqlState::UNDEFINED_COLUMN {
            (
                Exit::IoErr,
                format!(
                    "the database's otnsx schema is older than this otnsx's version {SCHEMA_VERSION}: run `otnsx state migrate` as the database's owner"
                ),
            )
        } else if *code == SqlState::UNDEFINED_TABLE {
            (
                Exit::IoErr,
                "the database has no otnsx schema: run `otnsx state migrate` as the database's owner".into(),
            )
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            (
                Exit::IoErr,
                format!(
                    "user {user} lacks a grant; `otnsx check` lists what it needs (GRANT SELECT, INSERT, UPDATE, DELETE ON otnsx_leases ...)"
                ),
            )
        } else if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            (
                Exit::IoErr,
                format!(
                    "the database refused user {user}: check state.password_file and the server's pg_hba.conf"
                ),
            )
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            (
                Exit::IoErr,
                format!(
                    "database {:?} does not exist: create it (see the README)",
                    self.db.dbname
                ),
            )
        } else {
            (Exit::IoErr, format!("SQLSTATE {}", code.code()))
        };
        fault(exit, format!("database {url}: {what}: {message} ({hint})"))
    }

    /// How to connect: within a quarter of what is left of the database's share of the
    /// deadline (at most 5 s), so that a database that does not take connections leaves the
    /// rest to closing access in NSX. (The client's own bound on every call, connecting
    /// included, is the worker's: [`Pg::answer`].)
    ///
    /// Each host is tried with the URL's `connect_timeout`, if it gives one, never longer than
    /// that quarter; and connecting is tried again ([`open`]) until that quarter has passed.
    fn config(&self, inner: &mut Inner) -> anyhow::Result<Connector> {
        let share =
            (self.budget().remaining() / 4).clamp(Duration::from_millis(1), Duration::from_secs(5));
        let timeout = self.db.connect_timeout.map_or(share, |t| t.min(share));
        let mut config = postgres::Config::new();
        config
            .target_session_attrs(postgres::config::TargetSessionAttrs::ReadWrite)
            .user(&self.db.user)
            .dbname(&self.db.dbname)
            .password(self.db.password.expose())
            .application_name("otnsx")
            .connect_timeout(timeout)
            // A server that stops taking what is sent is given up as soon.
            .tcp_user_timeout(share)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5));
        let tls = if self.db.tls {
            config.ssl_mode(postgres::config::SslMode::Require);
            if inner.tls.is_none() {
                inner.tls = Some(self.tls_config()?);
            }
            inner.tls.clone()
        } else {
            config.ssl_mode(postgres::config::SslMode::Disable);
            None
        };
        let hosts = self
            .db
            .hosts
            .iter()
            .map(|(host, port)| {
                let mut one = config.clone();
                one.host(host).port(*port);
                (host_port(host, *port), one)
            })
            .collect();
        Ok(Connector {
            hosts,
            tls,
            retry_until: Deadline::after(share),
        })
    }

    /// The host that answered the run's connection (`host:port`), and whether it is writable
    /// (it is, but for `check`'s last resort on a read-only server); `None` before connecting.
    pub fn answered(&self) -> Option<(String, bool)> {
        lock(&self.answered).clone()
    }

    /// Sends `work` to the worker (started now if there is none), connecting first when it
    /// has no live connection and `connect` allows. Returns where its answer will come.
    fn submit<T: Send + 'static>(
        &self,
        inner: &mut Inner,
        connect: Connect,
        work: impl FnOnce(&mut Client) -> Result<T, Failed> + Send + 'static,
    ) -> Result<mpsc::Receiver<Result<T, Failed>>, Failure> {
        if let Some(why) = &inner.failed {
            return Err(Failure::NotSent(fault(Exit::IoErr, why.clone())));
        }
        let connector = self.config(inner).map_err(Failure::NotSent)?;
        let answered_by = self.answered.clone();
        if inner.worker.is_none() {
            let worker = Worker::start().map_err(|e| {
                Failure::NotSent(fault(
                    Exit::IoErr,
                    format!(
                        "database {}: starting the thread that talks to it: {e}",
                        self.db.url
                    ),
                ))
            })?;
            inner.worker = Some(worker);
        }
        let (answer, answered) = mpsc::channel();
        let job: Job = Box::new(move |slot: &mut Option<Client>| {
            let run = || {
                if slot.as_ref().is_none_or(Client::is_closed) {
                    *slot = None;
                    if connect == Connect::Never {
                        return Err(Failed::Lost);
                    }
                    let (client, host, writable) = open(&connector, connect)?;
                    *lock(&answered_by) = Some((host, writable));
                    *slot = Some(client);
                }
                work(slot.as_mut().ok_or(Failed::Lost)?)
            };
            let _ = answer.send(run());
        });
        let sent = inner
            .worker
            .as_ref()
            .is_some_and(|worker| worker.jobs.send(job).is_ok());
        if !sent {
            inner.worker = None;
            return Err(Failure::NotSent(fault(
                Exit::IoErr,
                format!(
                    "database {}: the thread that talks to it has ended",
                    self.db.url
                ),
            )));
        }
        Ok(answered)
    }

    /// Gives the run's database up: the worker is abandoned where it waits (never joined: the
    /// process ends soon), and every later call fails at once.
    fn give_up(&self, inner: &mut Inner, what: &str, why: &str) -> anyhow::Error {
        let text = format!("database {}: {why} while {what}", self.db.url);
        inner.failed = Some(text.clone());
        inner.worker = None;
        fault(Exit::IoErr, text)
    }

    /// Waits for the answer to a job, until `until` at the latest.
    fn answer<T>(
        &self,
        inner: &mut Inner,
        what: &str,
        until: Deadline,
        answered: mpsc::Receiver<Result<T, Failed>>,
    ) -> Result<T, Failure> {
        match answered.recv_timeout(until.remaining()) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failed)) => Err(self.failed(inner, what, failed)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Failure::NoAnswer(self.give_up(
                inner,
                what,
                "no answer within the deadline",
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Failure::NoAnswer(self.give_up(
                inner,
                what,
                "the thread that talks to it ended",
            ))),
        }
    }

    /// What a failed job means.
    fn failed(&self, inner: &mut Inner, what: &str, failed: Failed) -> Failure {
        match failed {
            Failed::Connecting(failures) => {
                let error = self.connecting_failed(&failures);
                inner.failed = Some(format!("{error:#}"));
                Failure::NotSent(error)
            }
            Failed::Lost => Failure::NotSent(fault(
                Exit::IoErr,
                format!("database {}: {what}: the connection was lost", self.db.url),
            )),
            Failed::Working(e) => {
                let refused = e
                    .as_db_error()
                    .is_some_and(|db| matches!(db.parsed_severity(), Some(Severity::Error)));
                match refused {
                    true => Failure::Refused(self.error(what, &e)),
                    false => Failure::NoAnswer(self.error(what, &e)),
                }
            }
            Failed::Reading(e) => Failure::NoAnswer(fault(
                Exit::IoErr,
                format!("database {}: {what}: {e}", self.db.url),
            )),
        }
    }

    /// Why no host could be connected to, naming each host tried: a server that was only ever
    /// read-only is named as such (point the URL at the primary), one host's failure in the
    /// words of [`Pg::error`], several hosts' one after the other.
    fn connecting_failed(&self, failures: &[(String, postgres::Error)]) -> anyhow::Error {
        let tried: Vec<&str> = failures.iter().map(|(host, _)| host.as_str()).collect();
        let tried = tried.join(", ");
        if !failures.is_empty() && failures.iter().all(|(_, e)| read_only_server(e)) {
            return self.read_only(&format!(
                "connecting: tried {tried}, none writable (target_session_attrs=read-write)"
            ));
        }
        match failures {
            [(host, e)] => self.error(&format!("connecting to {host}"), e),
            _ => {
                let prefix = format!("database {}: ", self.db.url);
                let each: Vec<String> = failures
                    .iter()
                    .map(|(host, e)| {
                        let text = format!("{:#}", self.error(&format!("connecting to {host}"), e));
                        text.strip_prefix(&prefix).unwrap_or(&text).to_string()
                    })
                    .collect();
                fault(
                    Exit::IoErr,
                    format!(
                        "database {}: no writable server among {tried}: {}",
                        self.db.url,
                        each.join("; ")
                    ),
                )
            }
        }
    }

    /// Runs `work` on the connection, waiting for it until `until` at the latest.
    fn call_by<T: Send + 'static>(
        &self,
        inner: &mut Inner,
        what: &str,
        until: Deadline,
        connect: Connect,
        work: impl FnOnce(&mut Client) -> Result<T, Failed> + Send + 'static,
    ) -> Result<T, Failure> {
        if until.remaining().is_zero() {
            return Err(Failure::NotSent(self.give_up(
                inner,
                what,
                "no time was left within the deadline",
            )));
        }
        let answered = self.submit(inner, connect, work)?;
        self.answer(inner, what, until, answered)
    }

    /// [`Pg::call_by`] within the database's share of the deadline.
    fn call<T: Send + 'static>(
        &self,
        inner: &mut Inner,
        what: &str,
        connect: Connect,
        work: impl FnOnce(&mut Client) -> Result<T, Failed> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.call_by(inner, what, self.budget(), connect, work)
            .map_err(Failure::error)
    }

    /// Ends the run's transaction without its changes, if the connection still answers.
    fn roll_back(&self, inner: &mut Inner) {
        let _ = self.call(inner, "rolling back", Connect::Never, |client| {
            client.batch_execute("ROLLBACK").map_err(Failed::Working)
        });
    }

    /// TLS as for the other services: the server's certificate verified against ca_file, or
    /// the system's trust store, and its name against the URL's host.
    fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fault(Exit::Config, format!("TLS set-up: {e}")))?;
        if !self.db.verify_server {
            // sslmode=require with accept_unverified_server = true: encrypted, not verified.
            errln!(
                "otnsx: warning: TLS verification for the state database ({}) is off (sslmode=require, accept_unverified_server = true)",
                self.db.url
            );
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth());
        }
        let config = match &self.db.ca_file {
            Some(path) => {
                let unreadable = |why: String| {
                    fault(
                        Exit::Config,
                        format!("state.ca_file {}: {why}", path.display()),
                    )
                };
                let mut roots = rustls::RootCertStore::empty();
                let certs =
                    CertificateDer::pem_file_iter(path).map_err(|e| unreadable(e.to_string()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| unreadable(e.to_string()))?;
                    roots.add(cert).map_err(|e| unreadable(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(unreadable("holds no PEM certificate".into()));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => {
                use rustls_platform_verifier::BuilderVerifierExt;
                builder
                    .with_platform_verifier()
                    .map_err(|e| fault(Exit::Config, format!("TLS set-up: {e}")))?
                    .with_no_client_auth()
            }
        };
        Ok(config)
    }

    /// Begins the run's transaction: waits for the state lock until `deadline` (then exit 75;
    /// the caller gives a deadline that keeps the reserve for closing already), checks the server takes writes and the schema version, and
    /// reads the leases, in one round trip. Taken once a run.
    ///
    /// The transaction commits synchronously whatever the database's default (a lock that
    /// exited 0 must survive the server's crash), and a session that sits idle in it for
    /// longer than the run could (the deadline and [`IDLE_MARGIN`]: a hung or stopped otnsx)
    /// is ended by the server, and the state lock with it. It is read committed whatever the
    /// database's default: what it reads after a lock (the leases after the state lock, the
    /// chain's last row after the journal lock at the commit) is read as committed then.
    pub fn lock(&self, deadline: Deadline, scope: Scope) -> anyhow::Result<()> {
        let mut inner = lock(&self.inner);
        if inner.tx.is_some() {
            return Ok(());
        }
        let empty = std::collections::BTreeSet::new();
        self.begin_tx(&mut inner, deadline, scope, &empty, Connect::AskedLater)
    }

    /// Begins the run's transaction with the locks of `scope` (and of the VMs `vms`), and
    /// reads the leases; staged journal rows of a transaction begun before are kept.
    ///
    /// Connecting with `Connect::AskedLater`, the transaction itself says whether the server
    /// takes writes; when it does not, the session is ended (nothing was written) and the
    /// transaction begun once more on a connection made as `Connect::IfNeeded` makes it: a
    /// writable host found, a server still read-only for a moment of a failover tried again.
    fn begin_tx(
        &self,
        inner: &mut Inner,
        deadline: Deadline,
        scope: Scope,
        vms: &std::collections::BTreeSet<String>,
        connect: Connect,
    ) -> anyhow::Result<()> {
        let until = deadline;
        let run = self.deadline;
        let what = "taking the state lock";
        let (lock_sql, vm_sql) = match scope {
            Scope::All => (
                format!("SELECT pg_advisory_xact_lock({LOCK_KEY})"),
                vm_locks(None, vms, None),
            ),
            Scope::Keys => (
                format!("SELECT pg_advisory_xact_lock_shared({LOCK_KEY})"),
                vm_locks(None, vms, None),
            ),
            Scope::Ticket(id) => (
                format!(
                    "SELECT pg_advisory_xact_lock_shared({LOCK_KEY}), pg_advisory_xact_lock({TICKET_CLASS}, hashtext({}))",
                    literal(&id.to_string())
                ),
                vm_locks(Some(&ticket_pattern(id)), vms, None),
            ),
        };
        let results = self
            .call_by(inner, what, until, connect, move |client| {
                // (Once connected: the server's waits count from here.)
                let wait = server_wait(until.remaining());
                let idle = (run.remaining() + IDLE_MARGIN).as_millis();
                let sql = format!(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = on; SET LOCAL idle_in_transaction_session_timeout = {idle}; SET LOCAL lock_timeout = {wait}; SELECT pg_backend_pid(), current_setting('transaction_read_only'); {lock_sql}; SET LOCAL statement_timeout = {wait}; SELECT max(version) FROM otnsx_schema; {vm_sql}; SELECT target, holder, lease FROM otnsx_leases ORDER BY granted_at, target, holder"
                );
                match query(client, &sql) {
                    // Refused before it said whether the server takes writes (a read-only
                    // server without otnsx's tables): asked now, on this path only. None: it
                    // does not.
                    Err(Failed::Working(e))
                        if connect == Connect::AskedLater && e.as_db_error().is_some() =>
                    {
                        match query(client, "SHOW transaction_read_only") {
                            Ok(answer) if setting(&answer).as_deref() == Some("on") => Ok(None),
                            _ => Err(Failed::Working(e)),
                        }
                    }
                    answer => answer.map(Some),
                }
            })
            .map_err(Failure::error)?;
        let asked_again = |inner: &mut Inner| {
            // Its session ends with the worker (the transaction with it, unwritten).
            inner.worker = None;
            inner.pid = None;
            self.begin_tx(inner, deadline, scope, vms, Connect::IfNeeded)
        };
        let Some(results) = results else {
            return asked_again(inner);
        };
        let session = results.get(4).and_then(|rows| rows.first());
        let column = |i: usize| session.and_then(|row| row.get(i)).cloned().flatten();
        inner.pid = column(0).and_then(|pid| pid.parse().ok());
        let refused = match column(1).as_deref() {
            Some("on") if connect == Connect::AskedLater => return asked_again(inner),
            Some("on") => Some(self.read_only(what)),
            _ => self.check_version(results.get(7)).err(),
        };
        if let Some(e) = refused {
            self.roll_back(inner);
            return Err(e);
        }
        let held = match scope {
            Scope::All => None,
            _ => Some(locked_vms(results.get(8)).0),
        };
        let mut tx = Tx {
            rows: BTreeMap::new(),
            damaged: None,
            pending: Vec::new(),
            journal: Vec::new(),
            lines: Vec::new(),
            ids: HashSet::new(),
            held,
            scope,
        };
        if let Some(before) = inner.tx.take() {
            tx.journal = before.journal;
            tx.lines = before.lines;
            tx.ids = before.ids;
        }
        tx.take_rows(self.parse(results.get(9).map_or(&[][..], Vec::as_slice)));
        inner.tx = Some(tx);
        Ok(())
    }

    /// Locks the VMs `ids` in the run's transaction, besides those it holds, and reads their
    /// leases again: in one round trip, VMs whose key is above those held waited for, those
    /// below tried. When one of those is busy, the transaction starts over with every VM
    /// locked in order (nothing was written in it yet). Returns whether any VM was added.
    pub fn hold_vms(
        &self,
        ids: &std::collections::BTreeSet<String>,
        deadline: Deadline,
    ) -> anyhow::Result<bool> {
        let mut inner = lock(&self.inner);
        let tx = self.tx(&mut inner)?;
        let Some(held) = &tx.held else {
            return Ok(false);
        };
        let new: std::collections::BTreeSet<String> = ids
            .iter()
            .filter(|id| !held.contains_key(*id))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(false);
        }
        let top = held.values().max().copied();
        let locks = vm_locks(None, &new, top);
        let read = leases_of(&new);
        let what = "locking the run's VMs";
        let until = deadline;
        let results = self
            .call_by(&mut inner, what, until, Connect::Never, move |client| {
                // A VM another run holds is waited for until the lock's share of the deadline
                // (then "stayed busy", 75), before the statement's own limit.
                let wait = server_wait(until.remaining());
                let sql = format!(
                    "SET LOCAL lock_timeout = {wait}; SET LOCAL statement_timeout = {}; {locks}; {read}",
                    wait + 1000
                );
                query(client, &sql).map(|mut results| results.split_off(2.min(results.len())))
            })
            .map_err(Failure::error);
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                // The server rolled the transaction back: what the run records goes on its own.
                inner.tx = None;
                return Err(e);
            }
        };
        let (locked, busy) = locked_vms(results.first());
        if busy {
            // Out of order and busy: start over, with every VM in order.
            let tx = self.tx(&mut inner)?;
            let scope = tx.scope;
            let mut all: std::collections::BTreeSet<String> =
                tx.held.iter().flatten().map(|(vm, _)| vm.clone()).collect();
            all.extend(new);
            self.roll_back(&mut inner);
            self.begin_tx(&mut inner, deadline, scope, &all, Connect::AskedLater)?;
            return Ok(true);
        }
        let fresh = self.parse(results.get(1).map_or(&[][..], Vec::as_slice));
        let tx = self.tx(&mut inner)?;
        tx.rows
            .retain(|(target, _), _| !new.contains(vm_of_target(target)));
        tx.take_rows(fresh);
        tx.held.get_or_insert_default().extend(locked);
        Ok(true)
    }

    /// Whether the run's transaction holds VM `id` (every VM when it locked everything).
    pub fn covers(&self, id: &str) -> bool {
        let inner = lock(&self.inner);
        inner
            .tx
            .as_ref()
            .is_some_and(|tx| tx.held.as_ref().is_none_or(|held| held.contains_key(id)))
    }

    /// Locks the VMs of `ids` that no other run holds now, without waiting, and reads their
    /// leases again; returns those the run holds now.
    pub fn try_vms(
        &self,
        ids: &std::collections::BTreeSet<String>,
    ) -> std::collections::BTreeSet<String> {
        let mut inner = lock(&self.inner);
        let Ok(tx) = self.tx(&mut inner) else {
            return Default::default();
        };
        let Some(held) = &tx.held else {
            return ids.clone();
        };
        let new: std::collections::BTreeSet<String> = ids
            .iter()
            .filter(|id| !held.contains_key(*id))
            .cloned()
            .collect();
        let mut got: std::collections::BTreeSet<String> = ids
            .iter()
            .filter(|id| held.contains_key(*id))
            .cloned()
            .collect();
        if new.is_empty() {
            return got;
        }
        // Below every key: only tried.
        let sql = format!(
            "{}; {}",
            vm_locks(None, &new, Some(i64::from(i32::MAX))),
            leases_of(&new)
        );
        let what = "locking VMs left to retry";
        let Ok(results) = self.call(&mut inner, what, Connect::Never, move |client| {
            query(client, &sql)
        }) else {
            return got;
        };
        let Ok(tx) = self.tx(&mut inner) else {
            return Default::default();
        };
        let (locked, _) = locked_vms(results.first());
        let Ok(leases) = self.parse(results.get(1).map_or(&[][..], Vec::as_slice)) else {
            return got;
        };
        let mut rows = Vec::new();
        for lease in leases {
            if locked.contains_key(&lease.vm_id) {
                let json = serde_json::to_string(&lease).unwrap_or_default();
                rows.push(((lease.key(), holder_key(&lease.holder)), json));
            }
        }
        tx.rows
            .retain(|(target, _), _| !locked.contains_key(vm_of_target(target)));
        tx.rows.extend(rows);
        got.extend(locked.keys().cloned());
        tx.held.get_or_insert_default().extend(locked);
        got
    }

    fn check_version(&self, rows: Option<&Vec<Vec<Option<String>>>>) -> anyhow::Result<()> {
        let found = rows
            .and_then(|rows| scalar(rows))
            .and_then(|v| v.parse::<i64>().ok());
        let url = &self.db.url;
        match found {
            Some(SCHEMA_VERSION) => Ok(()),
            Some(v) if v > SCHEMA_VERSION => Err(fault(
                Exit::IoErr,
                format!(
                    "database {url} has schema version {v}, newer than this otnsx's {SCHEMA_VERSION}: upgrade otnsx on this node"
                ),
            )),
            Some(v) => Err(fault(
                Exit::IoErr,
                format!(
                    "database {url} has schema version {v}, this otnsx needs {SCHEMA_VERSION}: run `otnsx state migrate`"
                ),
            )),
            None => Err(fault(
                Exit::IoErr,
                format!("database {url} has no otnsx schema version: run `otnsx state migrate`"),
            )),
        }
    }

    /// The leases of the rows `target, holder, lease`; what is wrong with the first row that
    /// otnsx could not have written, if one is.
    fn parse(&self, rows: &[Vec<Option<String>>]) -> Result<Vec<Lease>, String> {
        let mut leases = Vec::with_capacity(rows.len());
        for row in rows {
            let [Some(target), Some(holder), Some(text)] = row.as_slice() else {
                return Err("a row of otnsx_leases has empty columns".into());
            };
            let damaged = |why: String| {
                format!(
                    "the lease of {} on {} in otnsx_leases of {} is damaged ({why}); it was left as it is. `otnsx revoke --all` closes every VM and starts afresh (setting the rows aside in otnsx_leases_aside)",
                    crate::escape::shorten(holder),
                    crate::escape::shorten(target),
                    self.db.url
                )
            };
            let lease: Lease =
                serde_json::from_str(text).map_err(|e| damaged(format!("not a lease: {e}")))?;
            lease.check().map_err(damaged)?;
            if lease.key() != *target || holder_key(&lease.holder) != *holder {
                return Err(damaged("its key columns do not match the lease".into()));
            }
            leases.push(lease);
        }
        Ok(leases)
    }

    /// The leases: as read under the lock when this run holds it, else read now. A server
    /// that is read-only is said on stderr (what it has may lag behind the primary's).
    pub fn load(&self) -> anyhow::Result<Vec<Lease>> {
        let mut inner = lock(&self.inner);
        if let Some(tx) = &inner.tx {
            if let Some(why) = &tx.damaged {
                return Err(fault(Exit::IoErr, why.clone()));
            }
            return tx
                .rows
                .values()
                .map(|json| {
                    serde_json::from_str(json).map_err(|e| fault(Exit::IoErr, e.to_string()))
                })
                .collect();
        }
        let what = "reading the leases";
        let results = self.call(&mut inner, what, Connect::IfNeeded, |client| {
            query(client, "SELECT max(version) FROM otnsx_schema; SELECT target, holder, lease FROM otnsx_leases ORDER BY granted_at, target, holder; SELECT current_setting('transaction_read_only')")
        })?;
        if results.get(2).and_then(|rows| scalar(rows)).as_deref() == Some("on") {
            errln!("otnsx: warning: {:#}", self.read_only(what));
        }
        self.check_version(results.first())?;
        self.parse(results.get(1).map_or(&[][..], Vec::as_slice))
            .map_err(|why| fault(Exit::IoErr, why))
    }

    fn tx<'a>(&self, inner: &'a mut Inner) -> anyhow::Result<&'a mut Tx> {
        inner.tx.as_mut().ok_or_else(|| {
            fault(
                Exit::IoErr,
                format!(
                    "database {}: the run's transaction has ended; nothing more can be written in it",
                    self.db.url
                ),
            )
        })
    }

    /// Makes `leases` the leases, with the journal entries that record the change; both go
    /// with the run's commit. Only the rows that change are written.
    pub fn save(&self, leases: &[Lease], outbox: &[serde_json::Value]) -> anyhow::Result<()> {
        let mut inner = lock(&self.inner);
        let tx = self.tx(&mut inner)?;
        let mut rows = BTreeMap::new();
        // Only the leases of the VMs the run holds are its to write; another run may be
        // changing the others.
        for (key, json) in tx.rows.iter().filter(|((target, _), _)| !tx.covers(target)) {
            rows.insert(key.clone(), json.clone());
        }
        let covered: Vec<&Lease> = leases.iter().filter(|l| tx.covers(&l.key())).collect();
        for lease in covered {
            let json =
                serde_json::to_string(lease).map_err(|e| fault(Exit::IoErr, e.to_string()))?;
            let key = (lease.key(), holder_key(&lease.holder));
            if tx.rows.get(&key) != Some(&json) {
                tx.pending.push(format!(
                    "INSERT INTO otnsx_leases (target, holder, granted_at, lease) VALUES ({}, {}, {}, {}) ON CONFLICT (target, holder) DO UPDATE SET granted_at = EXCLUDED.granted_at, lease = EXCLUDED.lease",
                    literal(&key.0),
                    literal(&key.1),
                    lease.granted_at.0,
                    literal(&json)
                ));
            }
            rows.insert(key, json);
        }
        for (target, holder) in tx.rows.keys().filter(|k| !rows.contains_key(*k)) {
            tx.pending.push(format!(
                "DELETE FROM otnsx_leases WHERE target = {} AND holder = {}",
                literal(target),
                literal(holder)
            ));
        }
        tx.rows = rows;
        tx.damaged = None;
        for value in outbox {
            let entry: Entry = serde_json::from_value(value.clone())
                .map_err(|e| fault(Exit::IoErr, format!("a journal entry: {e}")))?;
            stage(tx, &entry);
        }
        Ok(())
    }

    /// Moves every lease row to otnsx_leases_aside (with the commit) and starts with none.
    pub fn set_aside(&self) -> anyhow::Result<String> {
        let mut inner = lock(&self.inner);
        let tx = self.tx(&mut inner)?;
        tx.pending.push(
            "INSERT INTO otnsx_leases_aside (target, holder, lease) SELECT target, holder, lease FROM otnsx_leases; DELETE FROM otnsx_leases".into(),
        );
        tx.rows.clear();
        tx.damaged = None;
        Ok(format!("otnsx_leases_aside in {}", self.db.url))
    }

    /// Journals `entry`: with the run's commit while it holds the lock (once, if its lease
    /// change staged it already; `None`: its line comes with [`Pg::take_committed`]), at once
    /// otherwise, in a transaction of its own under the journal lock, in one round trip:
    /// `Some` line as recorded (chained). `None` too when the table had the entry already (by
    /// id): it was recorded before, and is left alone.
    pub fn append(&self, entry: &Entry) -> anyhow::Result<Option<String>> {
        let mut inner = lock(&self.inner);
        if let Some(tx) = &mut inner.tx {
            if !tx.ids.contains(&entry.id) {
                stage(tx, entry);
            }
            return Ok(None);
        }
        let insert = insert_entry(entry, &entry.to_json());
        let until = self.budget();
        let results = self.call(&mut inner, JOURNALING, Connect::IfNeeded, move |client| {
            let waits = journal_waits(until);
            query(
                client,
                &format!(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; {waits}; SELECT pg_advisory_xact_lock({JOURNAL_KEY}); {insert}; COMMIT"
                ),
            )
        })?;
        Ok(returned_lines(&results, 1).pop())
    }

    /// The journal lines, as recorded (chained), of the entries the last commit recorded, in
    /// the chain's order; an entry the table had already (by id) is not among them: it was
    /// recorded before. After a commit whose answer was lost and that was found to have
    /// committed ([`Pg::resolve`]), the lines the table has for the run's entries. Taken: a
    /// second call returns none.
    pub fn take_committed(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.inner).committed)
    }

    /// Whether what is staged now can still commit: the run holds its transaction on a live
    /// connection. Asked before access is opened.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        let mut inner = lock(&self.inner);
        self.tx(&mut inner)?;
        self.call(
            &mut inner,
            "keeping the run's transaction",
            Connect::Never,
            |_| Ok(()),
        )
    }

    /// Commits the run's transaction, with everything staged, in one round trip; the state
    /// lock is released. `Ok` when it committed; an error when it did not, or when whether it
    /// did cannot be known: then its journal lines go to stderr and stay for
    /// [`Pg::take_unrecorded`].
    ///
    /// When the answer to the `COMMIT` was lost (the connection broke, no answer within the
    /// deadline, a session ended by the server) the transaction may have committed: the
    /// database is asked after reconnecting ([`Pg::resolve`]) before the run decides to close
    /// again what it opened. An error the server answered before the `COMMIT` (a constraint,
    /// a read-only server) rolled back for sure, and is not asked about.
    pub fn commit(&self) -> anyhow::Result<()> {
        let mut inner = lock(&self.inner);
        let Some(tx) = inner.tx.take() else {
            return Ok(());
        };
        // The leases' statements, then the journal lock, the journal's inserts and the COMMIT:
        // the journal lock is held from the inserts to the commit, in the same round trip.
        let mut sql = tx.pending.join(";\n");
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        let inserts = tx.journal.join(";\n");
        let count = tx.journal.len();
        let what = "committing the run's leases and journal (its journal lines are on stderr)";
        let until = self.budget();
        let committed = self.call_by(&mut inner, what, until, Connect::Never, move |client| {
            if count > 0 {
                let waits = journal_waits(until);
                sql.push_str(&format!(
                    "{waits};\nSELECT pg_advisory_xact_lock({JOURNAL_KEY});\n{inserts};\n"
                ));
            }
            sql.push_str("COMMIT");
            query(client, &sql).map(|results| returned_lines(&results, count))
        });
        let error = match committed {
            Ok(lines) => {
                inner.committed = lines;
                return Ok(());
            }
            Err(Failure::NotSent(e) | Failure::Refused(e)) => e,
            Err(Failure::NoAnswer(e)) => match self.resolve(&mut inner, &tx) {
                Ok(Some(lines)) => {
                    inner.committed = lines;
                    errln!(
                        "otnsx: database {}: the answer to the run's commit was lost; asked after reconnecting, the database has it: it committed",
                        self.db.url
                    );
                    return Ok(());
                }
                Ok(None) => fault(
                    Exit::IoErr,
                    format!(
                        "{e:#}; asked after reconnecting, the database does not have it: it did not commit"
                    ),
                ),
                Err(why) => fault(
                    Exit::IoErr,
                    format!("{e:#}; whether it committed is unknown ({why})"),
                ),
            },
        };
        for line in &tx.lines {
            errln!("{line}");
        }
        inner.unrecorded = tx.lines;
        Err(error)
    }

    /// The journal lines (JSON, one entry each) of the last commit that failed: it did not
    /// commit, or whether it did is unknown. Taken: a second call returns none. Empty when no
    /// commit failed. The caller keeps them on the node, to be recorded later.
    pub fn take_unrecorded(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.inner).unrecorded)
    }

    /// Whether the run's transaction `tx` committed, when the answer to its `COMMIT` was lost:
    /// asked on a new connection, within what the database's share of the deadline leaves or
    /// half the reserve. First the session that sent the `COMMIT` is ended if it is still there
    /// (a transaction still open can then no longer commit) and is not the one asking (through
    /// PgBouncer in transaction mode the server connection that ran the commit may be handed
    /// to the new one once the transaction ended), then the state lock is taken (so
    /// that transaction has surely ended), then the journal table is asked for the entries
    /// `tx` staged: all there, it committed (`Ok(Some)`, with their lines as the table has
    /// them, chained, in the chain's order); none, it did not (`Ok(None)`). Every change of
    /// leases is journaled, so a transaction that changed anything staged an entry; one that
    /// staged none cannot be asked about (an error: unknown).
    fn resolve(&self, inner: &mut Inner, tx: &Tx) -> Result<Option<Vec<String>>, String> {
        if tx.ids.is_empty() {
            return Err("it staged no journal entry to look for".into());
        }
        let until = Deadline::after(self.budget().remaining().max(self.deadline.remaining() / 2));
        // A new connection on a new worker: the old one is abandoned where it waits.
        inner.worker = None;
        inner.failed = None;
        let session = inner
            .pid
            .take()
            .map_or("NULL".into(), |pid| pid.to_string());
        let ids: Vec<String> = tx.ids.iter().map(|id| literal(id)).collect();
        let ids = ids.join(", ");
        let what = "asking whether the run's commit happened";
        let results = self
            .call_by(inner, what, until, Connect::IfNeeded, move |client| {
                let wait = server_wait(until.remaining());
                query(
                    client,
                    &format!(
                        "BEGIN; SET LOCAL lock_timeout = {wait}; SET LOCAL statement_timeout = {wait}; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = {session} AND pid <> pg_backend_pid() AND application_name = 'otnsx' AND usename = current_user; SELECT pg_advisory_xact_lock({LOCK_KEY}); SELECT {line} FROM otnsx_journal WHERE id IN ({ids}) ORDER BY seq; ROLLBACK",
                        line = recorded_line()
                    ),
                )
            })
            .map_err(|failure| format!("{:#}", failure.error()))?;
        // The statements' results and the empty one after them: an answer cut short has fewer.
        let Some(rows) = results.get(5).filter(|_| results.len() == 8) else {
            return Err("the database's answer held no journal rows".into());
        };
        let lines: Vec<String> = rows
            .iter()
            .filter_map(|row| row.first().cloned().flatten())
            .collect();
        match lines.len() {
            n if n == tx.ids.len() => Ok(Some(lines)),
            0 => Ok(None),
            n => Err(format!(
                "{n} of its {} journal entries are in otnsx_journal",
                tx.ids.len()
            )),
        }
    }

    /// Feeds every journal entry, oldest first, to `each`, as the JSON line it was recorded:
    /// chained (`...,"seq":n,"hash":"..."}`, made by the server from the row's columns) when
    /// the row has a hash, else as it was written before the chain began; `each` returns false
    /// to stop. They come as rows of arrays of entries, in binary, from one unnamed statement
    /// (one round trip; nothing prepared by name, so it works through PgBouncer in transaction
    /// mode): the server makes and sends the next array while `each` works on the last, the
    /// client's cost per entry is that of reading a length, nothing is unescaped, and memory
    /// holds a few arrays (the worker reads them and hands them over, each wait bounded by the
    /// deadline).
    ///
    /// `only` narrows the rows by the journal's indexes to those that can matter for one VM
    /// name or one ticket (number or ID): every entry of every VM id ever journaled under that
    /// name, or every entry about the ticket (its own, or one that began or ended its access).
    pub fn journal_lines(
        &self,
        only: &JournalFilter<'_>,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> anyhow::Result<()> {
        let mut conditions = Vec::new();
        if let Some(vm) = only.vm {
            let vm = literal(vm);
            conditions.push(format!(
                "(vm = {vm} OR vm_id IN (SELECT vm_id FROM otnsx_journal WHERE vm = {vm} AND vm_id IS NOT NULL))"
            ));
        }
        if let Some(ticket) = only
            .ticket
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        {
            conditions.push(format!("tickets @> ARRAY[{}]", literal(ticket)));
        }
        // Rows of (a position, an array of entries), so that the client's cost per entry stays
        // small: all the entries that can matter to a filter in one array, the whole journal
        // in arrays of CHUNK consecutive entries, each found by the primary key and sent as
        // soon as it is made (an ORDER BY over the arrays would sort them all first: the
        // client checks the order instead).
        let line = recorded_line();
        let rows = match conditions.is_empty() {
            true => format!(
                "SELECT lo, (SELECT array_agg({line} ORDER BY seq) FROM otnsx_journal WHERE seq > lo AND seq <= lo + {CHUNK}) FROM generate_series(0::bigint, (SELECT coalesce(max(seq), 0) FROM otnsx_journal), {CHUNK}) AS chunk (lo)"
            ),
            false => format!(
                "SELECT 0::bigint, array_agg({line} ORDER BY seq) FROM otnsx_journal WHERE {}",
                conditions.join(" AND ")
            ),
        };
        let sql = rows;
        let what = "reading the journal";
        let mut inner = lock(&self.inner);
        let until = self.budget();
        if until.remaining().is_zero() {
            return Err(self.give_up(&mut inner, what, "no time was left within the deadline"));
        }
        let (hand, arrays) = mpsc::sync_channel::<Vec<u8>>(4);
        let answered = self
            .submit(&mut inner, Connect::IfNeeded, move |client| {
                // One unnamed statement, parsed, bound and run in one round trip, its rows in
                // binary: no named prepared statement, which a pooler in transaction mode
                // (PgBouncer) may have parsed on another server connection than the one that
                // runs it.
                let none: [(&str, Type); 0] = [];
                let rows = client
                    .query_typed_raw(&sql, none)
                    .map_err(Failed::Working)?;
                hand_arrays(rows, |array| hand.send(array.to_vec()).is_ok())
            })
            .map_err(Failure::error)?;
        loop {
            match arrays.recv_timeout(until.remaining()) {
                Ok(array) => {
                    let Some(elements) = array_elements(&array) else {
                        return Err(fault(
                            Exit::IoErr,
                            format!(
                                "database {}: {what}: {}",
                                self.db.url,
                                invalid("not an array of text")
                            ),
                        ));
                    };
                    // (The worker stops at its next array when this one was enough.)
                    if !elements.into_iter().all(&mut each) {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(self.give_up(&mut inner, what, "no answer within the deadline"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.answer(&mut inner, what, until, answered)
            .map_err(Failure::error)
    }

    /// Creates or brings the schema to [`SCHEMA_VERSION`], under the state lock, in one
    /// transaction. Returns the versions before and after.
    pub fn migrate(&self) -> anyhow::Result<(i64, i64)> {
        let mut inner = lock(&self.inner);
        let until = self.budget();
        let found = self.call(&mut inner, "migrating", Connect::IfNeeded, move |client| {
            let wait = server_wait(until.remaining());
            query(client, &format!(
                "BEGIN; SET LOCAL lock_timeout = {wait}; SELECT pg_advisory_xact_lock({LOCK_KEY}); CREATE TABLE IF NOT EXISTS otnsx_schema (version bigint PRIMARY KEY, migrated_at timestamptz NOT NULL DEFAULT now()); SELECT coalesce(max(version), 0) FROM otnsx_schema"
            ))
        })?;
        let from = found
            .get(4)
            .and_then(|rows| scalar(rows))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if from > SCHEMA_VERSION {
            self.roll_back(&mut inner);
            return Err(fault(
                Exit::IoErr,
                format!(
                    "database {} has schema version {from}, newer than this otnsx's {SCHEMA_VERSION}: upgrade otnsx",
                    self.db.url
                ),
            ));
        }
        for (step, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            let what = format!("migrating to version {}", step + 1);
            self.call(&mut inner, &what, Connect::Never, move |client| {
                execute(client, sql)?;
                execute(
                    client,
                    &format!("INSERT INTO otnsx_schema (version) VALUES ({})", step + 1),
                )
            })?;
        }
        self.call(&mut inner, "migrating", Connect::Never, |client| {
            execute(client, "COMMIT")
        })?;
        Ok((from, SCHEMA_VERSION))
    }

    /// Puts a state directory's leases and journal entries in, as one transaction under the
    /// state lock. The leases must be all the database has, or it must have none: two states
    /// are never mixed. An entry the journal table has already (by id) is left alone, so that
    /// importing twice adds nothing. Returns how many leases and entries were added.
    pub fn import(&self, leases: &[Lease], entries: &mut [Entry]) -> anyhow::Result<(u64, u64)> {
        let mut inner = lock(&self.inner);
        let until = self.budget();
        let read = self.call(&mut inner, "importing", Connect::IfNeeded, move |client| {
            let wait = server_wait(until.remaining());
            query(client, &format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {wait}; SELECT pg_advisory_xact_lock({LOCK_KEY}); SELECT max(version) FROM otnsx_schema; SELECT target, holder, lease FROM otnsx_leases; SELECT count(*) FROM otnsx_journal"
            ))
        })?;
        let count = |rows: Option<&Vec<Vec<Option<String>>>>| {
            rows.and_then(|rows| scalar(rows))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let journal_before = count(read.get(5));
        let checked = self.check_version(read.get(3)).and_then(|()| {
            let present = self
                .parse(read.get(4).map_or(&[][..], Vec::as_slice))
                .map_err(|why| fault(Exit::IoErr, why))?;
            match present.iter().find(|p| !leases.contains(p)) {
                Some(other) => Err(fault(
                    Exit::DataErr,
                    format!(
                        "database {} already holds leases the directory does not (the lease of {} on {}, and maybe more): importing would mix two states; import into an empty database",
                        self.db.url, other.holder, other.vm
                    ),
                )),
                None => Ok(present),
            }
        });
        let present = match checked {
            Ok(present) => present,
            Err(e) => {
                self.roll_back(&mut inner);
                return Err(e);
            }
        };
        let statements: Vec<String> = leases
            .iter()
            .filter(|l| !present.contains(l))
            .map(import_lease)
            .collect();
        let added_leases = statements.len() as u64;
        // The entries after the journal lock, chained anew in the file's order after the
        // table's chain (a chained file's seq and hash are not kept: the table's chain has its
        // own), by [`import_rows`]. The journal lock is held over the round trips of a long
        // journal: the state lock, taken first, keeps every run's commit out meanwhile; an
        // entry journaled outside a run waits for it, bounded by its own lock_timeout.
        let rows: Vec<ImportRow> = entries
            .iter_mut()
            .enumerate()
            .map(|(n, entry)| {
                if entry.id.is_empty() {
                    entry.id = format!("import.{}", n + 1);
                }
                // As the table holds it: `literal` makes a NUL U+FFFD.
                let line = entry.to_json().replace('\0', "\u{fffd}");
                ImportRow {
                    id: entry.id.replace('\0', "\u{fffd}"),
                    columns: entry_columns(entry),
                    line,
                }
            })
            .collect();
        let after = self.call(&mut inner, "importing", Connect::Never, move |client| {
            for chunk in statements.chunks(500) {
                execute(client, &chunk.join(";\n"))?;
            }
            if !rows.is_empty()
                && let Err(why) = import_rows(client, rows)?
            {
                return Ok(Err(why));
            }
            let after = query(client, "SELECT count(*) FROM otnsx_journal")?;
            execute(client, "COMMIT")?;
            Ok(Ok(after))
        })?;
        let after = after.map_err(|why| {
            fault(
                Exit::IoErr,
                format!("database {}: importing: {why}", self.db.url),
            )
        })?;
        let added_entries = count(after.first()).saturating_sub(journal_before);
        Ok((added_leases, added_entries))
    }

    /// What `check` says of the database: the server's version, the schema's, the grants the
    /// user lacks, if any, and whether it takes writes: a journal row is written in a
    /// transaction that is rolled back.
    pub fn inspect(&self) -> anyhow::Result<Inspection> {
        let mut inner = lock(&self.inner);
        let mut sql =
            String::from("SHOW server_version; SELECT to_regclass('otnsx_schema') IS NOT NULL");
        for (table, privileges) in GRANTS {
            for privilege in *privileges {
                sql.push_str(&format!(
                    "; SELECT to_regclass({t}) IS NULL OR has_table_privilege(current_user, {t}, {p})",
                    t = literal(table),
                    p = literal(privilege)
                ));
            }
        }
        sql.push_str("; SELECT to_regclass('otnsx_journal_seq_seq') IS NULL OR has_sequence_privilege(current_user, 'otnsx_journal_seq_seq', 'USAGE')");
        // Whether the server takes writes: its transactions' default, then a journal row
        // written and rolled back.
        let at = 3 + GRANTS.iter().map(|(_, p)| p.len()).sum::<usize>();
        sql.push_str("; SELECT current_setting('transaction_read_only'), to_regclass('otnsx_journal') IS NOT NULL");
        let (results, schema, read_only, probe) =
            self.call(&mut inner, "inspecting", Connect::Inspecting, move |client| {
                let results = query(client, &sql)?;
                let value = |i: usize, column: usize| {
                    results
                        .get(i)
                        .and_then(|rows| rows.first())
                        .and_then(|row| row.get(column).cloned().flatten())
                };
                let schema = match value(1, 0).as_deref() {
                    Some("t") => Some(query(client, "SELECT max(version) FROM otnsx_schema")?),
                    None | Some(_) => None,
                };
                let read_only = value(at, 0).as_deref() != Some("off");
                let probe = (!read_only && value(at, 1).as_deref() == Some("t")).then(|| {
                    client
                        .batch_execute("BEGIN; INSERT INTO otnsx_journal (id, ts, entry) VALUES ('otnsx-check.' || pg_backend_pid(), 0, '{}') ON CONFLICT (id) DO NOTHING; ROLLBACK")
                        .inspect_err(|_| {
                            let _ = client.batch_execute("ROLLBACK");
                        })
                });
                Ok((results, schema, read_only, probe))
            })?;
        let writes = match (read_only, probe) {
            (true, _) => Some(Err(format!("{:#}", self.read_only("check")))),
            // No journal table: the schema's check says so.
            (false, None) => None,
            (false, Some(Ok(()))) => Some(Ok(())),
            (false, Some(Err(e))) => Some(Err(format!(
                "{:#}",
                self.error("writing a journal row and rolling it back", &e)
            ))),
        };
        let value = |i: usize| {
            results
                .get(i)
                .and_then(|rows| scalar(rows))
                .unwrap_or_default()
        };
        let server = value(0);
        let schema = schema.and_then(|rows| {
            rows.first()
                .and_then(|rows| scalar(rows))
                .and_then(|v| v.parse::<i64>().ok())
        });
        let mut missing = Vec::new();
        let mut i = 2;
        for (table, privileges) in GRANTS {
            for privilege in *privileges {
                if value(i) != "t" {
                    missing.push(format!("{privilege} ON {table}"));
                }
                i += 1;
            }
        }
        if value(i) != "t" {
            missing.push("USAGE ON SEQUENCE otnsx_journal_seq_seq".into());
        }
        Ok(Inspection {
            server,
            schema,
            missing,
            writes,
        })
    }
}

/// What of the journal a reader needs ([`Pg::journal_lines`]); the reader still filters.
#[derive(Default)]
pub struct JournalFilter<'a> {
    pub vm: Option<&'a str>,
    pub ticket: Option<&'a str>,
}

/// What `check` found in the database.
pub struct Inspection {
    pub server: String,
    pub schema: Option<i64>,
    /// Grants the user lacks, as `PRIVILEGE ON table`.
    pub missing: Vec<String>,
    /// Whether a journal row could be written (in a transaction rolled back), or why not (a
    /// read-only server named as such); `None` when there is no journal table to write in.
    pub writes: Option<Result<(), String>>,
}

/// Journal entries per array when the whole journal is read.
const CHUNK: u32 = 500;

/// The type of PostgreSQL's `text`, the journal's entries.
const TEXT_OID: i32 = 25;

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// A `text[]` value as the server sent it, in binary (read by [`array_elements`]).
struct RawArray<'a>(&'a [u8]);

impl<'a> postgres::types::FromSql<'a> for RawArray<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawArray(raw))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }
}

/// Reads rows of (a bigint position, an array of text or NULL) and hands each array to `each`
/// until it returns false. Positions that do not rise are an `InvalidData` error. Runs on the
/// worker.
fn hand_arrays(
    mut rows: postgres::RowIter<'_>,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Result<(), Failed> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut last = None;
    while let Some(row) = rows.next().map_err(Failed::Working)? {
        let position: i64 = row.try_get(0).map_err(Failed::Working)?;
        if last.is_some_and(|last| position <= last) {
            return Err(Failed::Reading(invalid("rows out of order")));
        }
        last = Some(position);
        let array: Option<RawArray<'_>> = row.try_get(1).map_err(Failed::Working)?;
        if let Some(array) = array
            && !each(array.0)
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The elements of a one-dimensional array in PostgreSQL's binary format (NULLs left out);
/// `None` when `data` is not one.
fn array_elements(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut words = [0i32; 3];
    for word in &mut words {
        let (head, rest) = data.split_first_chunk::<4>()?;
        *word = i32::from_be_bytes(*head);
        data = rest;
    }
    let [dimensions, _has_nulls, element_type] = words;
    if element_type != TEXT_OID {
        return None;
    }
    match dimensions {
        0 => return data.is_empty().then(Vec::new),
        1 => {}
        _ => return None,
    }
    let (count, rest) = data.split_first_chunk::<4>()?;
    let count = usize::try_from(i32::from_be_bytes(*count)).ok()?;
    data = rest.get(4..)?; // the lower bound
    let mut elements = Vec::with_capacity(count.min(data.len() / 4));
    for _ in 0..count {
        let (head, rest) = data.split_first_chunk::<4>()?;
        data = rest;
        let Ok(len) = usize::try_from(i32::from_be_bytes(*head)) else {
            continue; // NULL
        };
        let (element, rest) = (data.get(..len)?, &data[len..]);
        elements.push(element);
        data = rest;
    }
    data.is_empty().then_some(elements)
}

/// Adds `entry` to what the transaction commits.
fn stage(tx: &mut Tx, entry: &Entry) {
    let line = entry.to_json();
    tx.journal.push(insert_entry(entry, &line));
    tx.ids.insert(entry.id.clone());
    tx.lines.push(line);
}

/// The statement that puts a lease read from a file in (left alone if the table has it).
fn import_lease(lease: &Lease) -> String {
    format!(
        "INSERT INTO otnsx_leases (target, holder, granted_at, lease) VALUES ({}, {}, {}, {}) ON CONFLICT (target, holder) DO NOTHING",
        literal(&lease.key()),
        literal(&holder_key(&lease.holder)),
        lease.granted_at.0,
        literal(&serde_json::to_string(lease).unwrap_or_default())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Escape strings, quotes and backslashes doubled: `E'...'` reads the same under either
    /// `standard_conforming_strings` (the server's reading is tested in
    /// `literals_read_back_exactly_under_either_setting`).
    #[test]
    fn literals_double_quotes_and_hold_no_nul() {
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(
            literal(r"a\'; DROP TABLE x; --"),
            r"E'a\\''; DROP TABLE x; --'"
        );
        assert_eq!(literal(r"CORP\jdoe"), r"E'CORP\\jdoe'");
        assert_eq!(literal("x\\"), r"E'x\\'");
        assert_eq!(literal("a\0b"), "E'a\u{fffd}b'");
        assert_eq!(nullable(None), "NULL");
        // Every backslash and quote of the text is doubled, and the constant is closed only at
        // its end: after `E'`, the quotes come in pairs, then the closing one.
        for text in [r"\", r"\'", r"'\", r"\\'\''", "E'x'", "\n\t"] {
            let sql = literal(text);
            let body = &sql[2..sql.len() - 1];
            assert_eq!(body.replace("''", "'").replace(r"\\", r"\"), text);
            assert_eq!(body.matches('\'').count() % 2, 0, "{sql}");
        }
    }

    /// A database of its own in the test server (`OTNSX_TEST_POSTGRES`, as for the integration
    /// tests), at this otnsx's schema, dropped when done; `None` (said) without a server.
    struct Scratch {
        admin: postgres::Config,
        name: String,
        client: Client,
    }

    impl Scratch {
        /// `tag` names the database beside the process id (tests run at once); `conforming`
        /// off sets `standard_conforming_strings = off` as the database's default (`ALTER
        /// DATABASE ... SET`), as a site's may be.
        fn create(tag: &str, conforming: bool) -> Option<Scratch> {
            let (Ok(url), Ok(file)) = (
                std::env::var("OTNSX_TEST_POSTGRES"),
                std::env::var("OTNSX_TEST_POSTGRES_PASSWORD_FILE"),
            ) else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the PostgreSQL tests"
                );
                eprintln!("skipped: no PostgreSQL server (OTNSX_TEST_POSTGRES)");
                return None;
            };
            let mut admin: postgres::Config = url.parse().unwrap();
            admin.password(std::fs::read_to_string(file).unwrap().trim());
            let name = format!("otnsx_unit_{}_{tag}", std::process::id());
            let mut server = admin.connect(postgres::NoTls).unwrap();
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                server.batch_execute(&sql).unwrap();
            }
            if !conforming {
                server
                    .batch_execute(&format!(
                        "ALTER DATABASE {name} SET standard_conforming_strings = off"
                    ))
                    .unwrap();
            }
            let mut config = admin.clone();
            config.dbname(&name);
            let mut client = config.connect(postgres::NoTls).unwrap();
            let setting = results(
                client
                    .simple_query("SHOW standard_conforming_strings")
                    .unwrap(),
            );
            let expected = if conforming { "on" } else { "off" };
            assert_eq!(scalar(&setting[0]).as_deref(), Some(expected));
            for step in MIGRATIONS {
                client.batch_execute(step).unwrap();
            }
            Some(Scratch {
                admin,
                name,
                client,
            })
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Ok(mut server) = self.admin.connect(postgres::NoTls) {
                let _ = server.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    /// The rows of `sql`'s statements ([`results`]).
    fn run(client: &mut Client, sql: &str) -> Vec<Vec<Vec<Option<String>>>> {
        results(
            client
                .simple_query(sql)
                .unwrap_or_else(|e| panic!("{e:?}: {sql}")),
        )
    }

    /// The server chains each entry exactly as [`chain::link`] does, byte for byte, also for
    /// text beyond ASCII and quotes, and reads the lines back (`journal_lines`' SQL) as they
    /// were returned; the chain verifies, with the rows from before the chain unhashed.
    ///
    /// [`chain::link`]: crate::state::chain::link
    #[test]
    fn the_server_chains_entries_as_chain_link_does() {
        for conforming in [true, false] {
            server_chains_entries_as_chain_link_does(conforming);
        }
    }

    /// [`the_server_chains_entries_as_chain_link_does`] in a database whose
    /// `standard_conforming_strings` is `conforming`.
    fn server_chains_entries_as_chain_link_does(conforming: bool) {
        use crate::state::chain::{Head, Place, Verifier, link};
        let Some(mut db) = Scratch::create(&format!("chain_{conforming}"), conforming) else {
            return;
        };
        // A row from before the chain (schema version 1 wrote no n, no hash).
        db.client
            .batch_execute(r#"INSERT INTO otnsx_journal (id, ts, entry) VALUES ('old', 0, '{"id":"old","ts":"2026-11-20T08:00:00Z"}')"#)
            .unwrap();
        let template = r#"{"id":"x","ts":"2026-11-20T08:00:00Z","action":"grant","ticket_number":"2026112010000011","ticket_id":11,"vm":"web01","vm_id":"vm-42","result":"ok","detail":"opened web01 (vm-42)","actor":"helpdesk:agent1","cause":"lock","gained":[{"kind":"ticket","id":11,"number":"2026112010000011"}]}"#;
        let mut head = Head::genesis();
        let mut returned = Vec::new();
        for (i, detail) in [
            "opened web01 (vm-42)",
            "Wartung für Müller ä 🚀 — 日本",
            "it's \\ \"quoted\" \\' ; -- DROP TABLE otnsx_journal",
            "tab\there, line\nfeed",
        ]
        .iter()
        .enumerate()
        {
            let mut entry: Entry = serde_json::from_str(template).unwrap();
            entry.id = format!("e{i}");
            entry.detail = detail.to_string();
            let line = entry.to_json();
            let results = run(
                &mut db.client,
                &format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({JOURNAL_KEY}); {}; COMMIT",
                    insert_entry(&entry, &line)
                ),
            );
            let (expected, next) = link(&head, &line).unwrap();
            assert_eq!(
                returned_lines(&results, 1),
                std::slice::from_ref(&expected),
                "{line}"
            );
            head = next;
            returned.push(expected);
            // Once: the same id again is left alone, and returns nothing.
            let again = run(
                &mut db.client,
                &format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({JOURNAL_KEY}); {}; COMMIT",
                    insert_entry(&entry, &line)
                ),
            );
            assert!(returned_lines(&again, 1).is_empty());
        }
        // A backslash at the end of a text and before a quote, as a VM field or a login may
        // hold.
        let mut entry: Entry = serde_json::from_str(template).unwrap();
        entry.id = "backslashes".into();
        entry.vm = Some(r"x\".into());
        entry.actor = r"helpdesk:CORP\jdoe".into();
        entry.detail = r"a reason with 'quotes' and \' and \\ and \n".into();
        let line = entry.to_json();
        let results = run(
            &mut db.client,
            &format!(
                "BEGIN; SELECT pg_advisory_xact_lock({JOURNAL_KEY}); {}; COMMIT",
                insert_entry(&entry, &line)
            ),
        );
        let (expected, next) = link(&head, &line).unwrap();
        assert_eq!(returned_lines(&results, 1), std::slice::from_ref(&expected));
        let vm = run(
            &mut db.client,
            "SELECT vm FROM otnsx_journal WHERE id = 'backslashes'",
        );
        assert_eq!(scalar(&vm[0]).as_deref(), Some(r"x\"));
        head = next;
        returned.push(expected);
        // An empty object (only check's probe, rolled back, writes one) chains as link does.
        let results = run(
            &mut db.client,
            &format!(
                "BEGIN; {}; ROLLBACK",
                insert_entry(&serde_json::from_str(template).unwrap(), "{}")
            ),
        );
        let rows = &results[1];
        assert_eq!(
            rows[0][0].as_deref(),
            Some(link(&head, "{}").unwrap().0.as_str())
        );
        // Read back as the journal reads it.
        let read = run(
            &mut db.client,
            &format!("SELECT {} FROM otnsx_journal ORDER BY seq", recorded_line()),
        );
        let lines: Vec<String> = read[0].iter().map(|row| row[0].clone().unwrap()).collect();
        assert_eq!(lines[0], r#"{"id":"old","ts":"2026-11-20T08:00:00Z"}"#);
        assert_eq!(lines[1..], returned[..]);
        let mut verifier = Verifier::new();
        for (i, line) in lines.iter().enumerate() {
            let at = Place {
                source: "otnsx_journal".into(),
                line: i as u64 + 1,
            };
            verifier.feed(at, line.as_bytes());
        }
        let verdict = verifier.finish();
        assert_eq!(verdict.broken, None);
        assert_eq!((verdict.unhashed, verdict.chained), (1, 5), "{conforming}");
        assert_eq!(verdict.head, Some(head));
    }

    /// What [`literal`] writes, the server reads back exactly, under either
    /// `standard_conforming_strings` (a database's default, and `SET` in the session): the
    /// texts a customer, an agent's login or a grant's reason may hold, and in an array.
    #[test]
    fn literals_read_back_exactly_under_either_setting() {
        let texts = [
            r"x\",
            r"CORP\jdoe",
            r"it's \' \\ '' \n \t \x41 \101 \u0041",
            "Wartung für Müller 🚀 — 日本",
            r"E'x' || 'y'",
            r"\",
            "'",
            "tab\there, line\nfeed",
            "",
        ];
        for conforming in [true, false] {
            let Some(mut db) = Scratch::create(&format!("literal_{conforming}"), conforming) else {
                return;
            };
            for setting in ["on", "off"] {
                let mut sql = format!("SET standard_conforming_strings = {setting}");
                for text in texts {
                    sql.push_str(&format!("; SELECT {}", literal(text)));
                }
                let list: Vec<String> = texts.iter().map(|t| literal(t)).collect();
                sql.push_str(&format!(
                    "; SELECT array_to_json(ARRAY[{}]::text[])::text",
                    list.join(", ")
                ));
                let results = run(&mut db.client, &sql);
                for (i, text) in texts.iter().enumerate() {
                    assert_eq!(
                        scalar(&results[i + 1]).as_deref(),
                        Some(*text),
                        "database default {conforming}, session {setting}"
                    );
                }
                let array: Vec<String> =
                    serde_json::from_str(&scalar(&results[texts.len() + 1]).unwrap()).unwrap();
                assert_eq!(array, texts);
            }
        }
    }

    /// A `text[]` in PostgreSQL's binary format, as the server sends it.
    fn array_of(elements: &[&str]) -> Vec<u8> {
        let mut data = Vec::new();
        for word in [1, 0, 25, elements.len() as i32, 1] {
            data.extend(word.to_be_bytes());
        }
        for e in elements {
            data.extend((e.len() as i32).to_be_bytes());
            data.extend(e.as_bytes());
        }
        data
    }

    fn elements_of(array: &[u8]) -> Option<Vec<String>> {
        let elements = array_elements(array)?;
        Some(
            elements
                .iter()
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect(),
        )
    }

    #[test]
    fn a_binary_text_array_reads_back_in_order() {
        let array = array_of(&["a", "b", "", "c"]);
        assert_eq!(elements_of(&array).unwrap(), ["a", "b", "", "c"]);
        // The empty array: no dimensions.
        assert_eq!(
            elements_of(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_damaged_array_is_refused_not_a_panic() {
        let good = array_of(&["one", "two"]);
        for cut in 0..good.len() {
            assert!(array_elements(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut lying = good.clone();
        lying[12..16].copy_from_slice(&9i32.to_be_bytes()); // the element count
        assert!(array_elements(&lying).is_none());
        let mut longer = good.clone();
        longer.push(0);
        assert!(array_elements(&longer).is_none());
        assert!(array_elements(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 25]).is_none());
        // An array of anything but text (here jsonb, 3802) is not read as entries.
        assert!(array_elements(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0e, 0xda]).is_none());
    }
}
