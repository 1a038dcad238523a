//! The run's one recorder: it makes the journal entries, writes each where it must go (the
//! journal, syslog, stderr when the journal cannot take it), and remembers what went wrong with
//! the state directory, so that the run ends with exit 74. It is shared by reference, also by
//! requests made at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::cause::{Cause, EntryResult};
use crate::domain::vm::VmRef;
use crate::error::{Exit, exit_code};
use crate::state::journal::{Action, Entry, Journal};
use crate::state::syslog::Syslog;
use crate::sync::lock;
use crate::time::Clock;

/// What a journal entry is about besides its VM.
#[derive(Debug, Clone)]
pub struct Subject {
    pub ticket_number: Option<String>,
    pub ticket_id: Option<u64>,
    /// Why access changes.
    pub cause: Cause,
}

impl Subject {
    pub fn new(cause: Cause) -> Self {
        Subject {
            ticket_number: None,
            ticket_id: None,
            cause,
        }
    }
}

/// Who acts, or where that will come from.
enum Actor {
    Known(String),
    /// Being found out (an unlock's history, read beside the NSX change); the first entry
    /// waits for it.
    Pending(std::sync::mpsc::Receiver<String>),
}

pub struct Recorder {
    journal: Journal,
    syslog: Option<Syslog>,
    /// A dry run records nothing.
    dry_run: bool,
    clock: Clock,
    /// Who acts: `helpdesk` (with the ticket's owner once known) or the OS user.
    actor: Mutex<Actor>,
    /// The process id and the start time in nanoseconds: the first part of every entry id.
    run_id: String,
    /// The entries made so far: the last part of every entry id.
    entries: AtomicU64,
    /// The state directory's problems met so far, as said on stderr.
    trouble: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn new(
        journal: Journal,
        syslog: Option<Syslog>,
        dry_run: bool,
        clock: Clock,
        actor: String,
    ) -> Self {
        let started_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Recorder {
            journal,
            syslog,
            dry_run,
            clock,
            actor: Mutex::new(Actor::Known(actor)),
            run_id: format!("{}.{started_ns}", std::process::id()),
            entries: AtomicU64::new(0),
            trouble: Mutex::new(Vec::new()),
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Who the entries made from now on name as acting.
    pub fn act_as(&self, actor: String) {
        *lock(&self.actor) = Actor::Known(actor);
    }

    /// Who acts will come from `later` (`helpdesk:unknown` if it never does); the first entry
    /// made waits for it.
    pub fn act_as_soon(&self, later: std::sync::mpsc::Receiver<String>) {
        *lock(&self.actor) = Actor::Pending(later);
    }

    pub fn actor(&self) -> String {
        let mut actor = lock(&self.actor);
        if let Actor::Pending(later) = &*actor {
            let known = later.recv().unwrap_or_else(|_| "helpdesk:unknown".into());
            *actor = Actor::Known(known);
        }
        match &*actor {
            Actor::Known(name) => name.clone(),
            Actor::Pending(_) => "helpdesk:unknown".into(),
        }
    }

    /// A journal entry about `subject` (and `vm`), stamped now.
    pub fn entry(
        &self,
        subject: &Subject,
        action: Action,
        vm: Option<&VmRef>,
        detail: &str,
    ) -> Entry {
        let n = self.entries.fetch_add(1, Ordering::Relaxed) + 1;
        Entry {
            id: format!("{}.{n}", self.run_id),
            ts: self.clock.now(),
            action,
            ticket_number: subject.ticket_number.clone(),
            ticket_id: subject.ticket_id,
            vm: vm.map(|v| v.name.clone()),
            vm_id: vm.map(|v| v.id.clone()).filter(|id| !id.is_empty()),
            profile: vm.and_then(|v| v.profile.clone()),
            agent: vm.and_then(|v| v.agent.clone()),
            result: EntryResult::Ok,
            detail: detail.to_string(),
            actor: self.actor(),
            cause: subject.cause,
            gained: Vec::new(),
            lost: Vec::new(),
            reason: None,
            opened_by: Vec::new(),
            group: None,
        }
    }

    /// Appends an entry to the journal (not in a dry run), and sends it to syslog when that is
    /// configured. Returns whether the journal has it durably. When it cannot take the entry,
    /// the entry goes to stderr as one JSON line (and to syslog), and the run ends with exit 74.
    pub fn record(&self, entry: &Entry) -> bool {
        if self.dry_run {
            return true;
        }
        match self.journal.append(entry) {
            // Syslog gets the line as recorded: with the chain's head, which an edit on this
            // host cannot take back from the log server.
            Ok(Some(line)) => {
                self.to_syslog(entry, &line);
                true
            }
            // With the run's commit ([`Recorder::committed`]).
            Ok(None) => true,
            Err(e) => {
                let line = entry.to_json();
                self.to_syslog(entry, &line);
                self.state_problem(&e);
                errln!("{line}");
                // Kept on this node for the next run to record; still not durable in the
                // journal, so what it records may not stay open.
                self.journal.keep(&[line]);
                false
            }
        }
    }

    fn to_syslog(&self, entry: &Entry, line: &str) {
        if let Some(syslog) = &self.syslog {
            syslog.send(entry, line);
        }
    }

    /// Sends the lines the database recorded with the run's commit (chained) to syslog; the
    /// lines of a commit that failed are sent unchained.
    pub fn committed(&self, lines: &[String]) {
        for line in lines {
            if let Ok(entry) = serde_json::from_str::<Entry>(line) {
                self.to_syslog(&entry, line);
            }
        }
    }

    /// Records a failure of the whole command, refusals as `refused`.
    pub fn failure(&self, subject: &Subject, err: &anyhow::Error) {
        let action = match exit_code(err) {
            Exit::NoPerm | Exit::DataErr => Action::Refused,
            _ => Action::Error,
        };
        let mut entry = self.entry(subject, action, None, &format!("{err:#}"));
        entry.result = EntryResult::Failed;
        self.record(&entry);
    }

    /// Says on stderr that the state directory failed, once per kind of problem, and makes the
    /// run end with exit 74 whatever else it did.
    pub fn state_problem(&self, err: &anyhow::Error) {
        let text = crate::output::printable(&format!("{err:#}"));
        let mut said = lock(&self.trouble);
        if !said.contains(&text) {
            errln!("otnsx: state: {text}");
            said.push(text);
        }
    }

    /// Whether the state directory failed during this run.
    pub fn state_failed(&self) -> bool {
        !lock(&self.trouble).is_empty()
    }
}
