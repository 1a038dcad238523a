//! The commands, and what they share: loading the run's context, resolving VM names, applying
//! a plan to NSX and the store one VM at a time, journaling each decision, and summing up.

mod change;
mod check;
mod completions;
mod grant;
mod history;
mod notes;
mod reconcile;
mod revoke;
mod state;
mod status;
mod ticket;

pub use change::{Decision, Outcome, Refusal, describe_as};

use std::collections::BTreeSet;

use crate::cli::{Cli, Command, Configured, Global};
use crate::config::{self, Config, MAX_VM_NAME};
use crate::deadline::Deadline;
use crate::domain::cause::Cause;
use crate::domain::vm::VmRef;
use crate::error::{Exit, exit_code, fault};
use crate::helpdesk::HelpDesk;
use crate::nsx::TagBackend;
use crate::plan;
use crate::state::journal::{Action, Journal};
use crate::state::recorder::Recorder;
pub use crate::state::recorder::Subject;
use crate::state::store::{Holder, Lease, StateLock, Store};
use crate::state::syslog::Syslog;
use crate::time::{Clock, Timestamp};

/// A VM name wanted open, under an access profile (its key; `None`: `[nsx] tag`'s).
pub type Want = (String, Option<String>);

/// What [`Run::begin`] found: the state lock, and the leases if they could be read.
pub struct Begun {
    pub lock: Option<StateLock>,
    /// `None` when the lease file or the lock could not be read or taken: closing still works
    /// (NSX first), opening is refused.
    pub leases: Option<Vec<Lease>>,
    /// The state lock stayed busy until the deadline (another run holds it, perhaps hung):
    /// why, for the run's exit status (75) once it has closed what it must.
    pub busy: Option<anyhow::Error>,
    /// With a busy lock: the leases as read without it, to know what a closing run must
    /// close (never to save or to open by).
    pub snapshot: Option<Vec<Lease>>,
}

impl Begun {
    fn unknown(lock: Option<StateLock>) -> Self {
        Begun {
            lock,
            leases: None,
            busy: None,
            snapshot: None,
        }
    }
}

/// Everything a command needs besides its own arguments: what it reads (the configuration,
/// the state directory, the clock) and the one recorder of what it does.
pub struct Run {
    pub config: Config,
    pub deadline: Deadline,
    pub verbose: bool,
    pub dry_run: bool,
    pub store: Store,
    pub clock: Clock,
    pub recorder: Recorder,
    /// Files of entries kept on this node that the run's transaction records: removed once it
    /// commits.
    pub kept_files: std::sync::Mutex<Vec<std::path::PathBuf>>,
}

/// The current time, or in a debug build the time in `OTNSX_NOW` (RFC 3339, UTC): a setting
/// for tests, which need a clock they control to make leases expire. A release build never
/// reads it: the environment is not a control channel (documented in the man page).
fn clock() -> anyhow::Result<Timestamp> {
    if !cfg!(debug_assertions) {
        return Ok(Timestamp::now());
    }
    match std::env::var("OTNSX_NOW") {
        Err(_) => Ok(Timestamp::now()),
        Ok(text) => Timestamp::parse(&text).ok_or_else(|| {
            fault(
                Exit::Usage,
                format!("OTNSX_NOW={text:?} is not a UTC time like 2026-11-23T15:36:43Z"),
            )
        }),
    }
}

pub fn execute(cli: Cli) -> anyhow::Result<Exit> {
    // The form of the command line is checked before anything is read.
    if cli.global.dry_run && !cli.changes() {
        let name = cli.command_name().unwrap_or_default();
        return Err(fault(
            Exit::Usage,
            format!(
                "--dry-run is for the commands that change something (grant, revoke, reconcile, a ticket event); `{name}` changes nothing"
            ),
        ));
    }
    let command = match (cli.command, cli.ticket_number, cli.ticket_id) {
        (None, Some(number), Some(ticket_id)) => Command::Configured(Configured::Ticket {
            ticket_id,
            number: Some(number),
        }),
        (Some(command), None, None) => command,
        _ => {
            return Err(fault(
                Exit::Usage,
                "give either TICKET_NUMBER TICKET_ID or a command; see --help",
            ));
        }
    };
    match command {
        Command::Check { ticket, note } => check::run(
            cli.global.config.as_deref(),
            ticket,
            note,
            cli.global.verbose,
        ),
        Command::Completions { shell } => completions::run(shell),
        Command::Configured(command) => execute_configured(command, &cli.global),
    }
}

/// Runs a command that needs a valid configuration and the state directory.
fn execute_configured(command: Configured, global: &Global) -> anyhow::Result<Exit> {
    let path = config::locate(global.config.as_deref())?;
    let config = Config::load(&path)?;
    let deadline = Deadline::after(config.deadline);
    let db = config
        .database
        .as_ref()
        .map(|db| crate::state::pg::Pg::new(db, deadline));
    let store = Store::with_database(&config.state_dir, db.clone());
    let syslog = config
        .log
        .syslog
        .then(|| Syslog::new(config.log.socket.clone(), config.log.facility));
    let clock = Clock::starting_at(clock()?);
    let recorder = Recorder::new(
        Journal::new(store.journal_path(), db).rotating(config.log.rotation),
        syslog,
        global.dry_run,
        clock,
        os_user(),
    );
    let run = Run {
        deadline,
        store,
        config,
        verbose: global.verbose,
        dry_run: global.dry_run,
        clock,
        recorder,
        kept_files: std::sync::Mutex::new(Vec::new()),
    };
    // (`state` contacts none of the services, and may run before the journal's table exists.)
    let contacts_services = !matches!(command, Configured::State(_));
    for (service, endpoint) in run.config.endpoints() {
        if endpoint.tls.insecure && contacts_services {
            let text = format!(
                "TLS verification for the {service} ({}) is off (insecure = true): anyone on the path can read its credentials",
                endpoint.url
            );
            run.recorder.record(&run.recorder.entry(
                &Subject::new(Cause::Config),
                Action::Warning,
                None,
                &text,
            ));
        }
    }
    let exit = match command {
        Configured::Ticket { ticket_id, number } => ticket::run(&run, ticket_id, number),
        Configured::Grant {
            vms,
            duration,
            reason,
            profile,
        } => grant::run(&run, &vms, duration, reason.as_deref(), profile.as_deref()),
        Configured::Revoke { all: true, .. } => revoke::all(&run),
        Configured::Revoke { vms, force, .. } => revoke::run(&run, &vms, force),
        Configured::Reconcile => reconcile::run(&run, global.json),
        Configured::Status { vm } => status::run(&run, vm.as_deref(), global.json),
        Configured::History {
            since,
            vm,
            ticket,
            verify,
        } => {
            let filter = history::Filter {
                since: since.as_deref(),
                vm: vm.as_deref(),
                ticket: ticket.as_deref(),
                verify,
            };
            history::run(&run, &filter, global.json)
        }
        Configured::State(crate::cli::StateCommand::Migrate) => state::migrate(&run),
        Configured::State(crate::cli::StateCommand::Import { from_file }) => {
            state::import(&run, &from_file)
        }
    };
    // What the run staged and did not commit yet (a run that ended before its changes: its
    // journal entries).
    if let Err(e) = run.commit_state() {
        run.recorder.state_problem(&e);
    }
    // A state directory that failed is said by its own exit status, whatever else happened.
    if run.recorder.state_failed() {
        if let Err(e) = &exit {
            errln!("otnsx: {e:#}");
        }
        return Ok(Exit::IoErr);
    }
    exit
}

/// The user who runs otnsx by hand, from facts the caller cannot set: the name of the real
/// uid in /etc/passwd; under sudo as root (real uid 0, `SUDO_UID` and `SUDO_USER` set, and
/// `SUDO_UID` the uid /etc/passwd gives `SUDO_USER`), the user behind sudo. Never `USER` or
/// `LOGNAME`, which anyone sets (`USER=alice otnsx grant ...`); a `SUDO_USER` that does not
/// match its `SUDO_UID` is not believed, and the run is recorded as root's.
fn os_user() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (real, _) = crate::sys::uids();
    os_user_from(real, &passwd, |name| std::env::var(name).ok())
}

/// [`os_user`] over the real uid, the text of /etc/passwd and the environment.
fn os_user_from(real: u32, passwd: &str, var: impl Fn(&str) -> Option<String>) -> String {
    // (name, uid) of every well-formed line.
    let users = || {
        passwd.lines().filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse::<u32>().ok()?;
            Some((name, uid))
        })
    };
    let printable = |name: &str| !name.is_empty() && !name.chars().any(crate::escape::is_hostile);
    if real == 0
        && let Some(sudo_uid) = var("SUDO_UID").and_then(|v| v.parse::<u32>().ok())
        && let Some(sudo_user) = var("SUDO_USER")
        && printable(&sudo_user)
        && users().any(|(name, uid)| name == sudo_user && uid == sudo_uid)
    {
        return sudo_user.chars().take(64).collect();
    }
    users()
        .find(|&(name, uid)| uid == real && printable(name))
        .map(|(name, _)| name.chars().take(64).collect())
        .unwrap_or_else(|| format!("uid {real}"))
}

impl Run {
    /// Commits what the run staged ([`Store::commit`]); when that fails, the journal entries
    /// that did not commit (or may not have) are kept on this node to be recorded later.
    pub fn commit_state(&self) -> anyhow::Result<()> {
        let result = self.store.commit();
        match &result {
            // The kept entries this run recorded are in the database now.
            Ok(()) => {
                for file in crate::sync::lock(&self.kept_files).drain(..) {
                    let _ = std::fs::remove_file(file);
                }
                if let Some(db) = self.store.database() {
                    self.recorder.committed(&db.take_committed());
                }
            }
            Err(_) => {
                if let Some(db) = self.store.database() {
                    let lines = db.take_unrecorded();
                    self.recorder.committed(&lines);
                    self.recorder.journal().keep(&lines);
                }
            }
        }
        result
    }

    /// Splits names into those that may be opened and those refused: an invalid name (exit
    /// 65) whatever the policy says, then what policy does not allow (exit 77).
    pub fn allowed(&self, names: &[String]) -> (Vec<String>, Vec<Refusal>) {
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for name in names {
            if let Err(e) = check_vm_name(name) {
                refused.push((name.clone(), e));
                continue;
            }
            match self.config.policy.vms.refusal(name) {
                None => allowed.push(name.clone()),
                Some(why) => refused.push((name.clone(), fault(Exit::NoPerm, why))),
            }
        }
        (allowed, refused)
    }

    /// The entries of a ticket's field (or of `grant --vm`) as VM names under access profiles
    /// (by key): where `[profiles.NAME]` sections exist, `web01:ssh` names profile `ssh`; an
    /// entry that names none gets `given` (the ticket's profile field, `grant --profile`), else
    /// `policy.default_profile`. An unknown profile is refused (65), and so is a profile whose
    /// own allow/deny does not let it open the VM (77); `[policy]` is asked by [`Run::allowed`].
    pub fn wants(&self, entries: &[String], given: Option<&str>) -> (Vec<Want>, Vec<Refusal>) {
        let config = &self.config;
        let known: Vec<&str> = config.profiles.iter().map(|p| p.name.as_str()).collect();
        let unknown = |name: &str| {
            fault(
                Exit::DataErr,
                format!(
                    "access profile \"{}\" is not configured (there are: {})",
                    crate::escape::shorten(name),
                    known.join(", ")
                ),
            )
        };
        let mut wants = Vec::new();
        let mut refused = Vec::new();
        for entry in entries {
            let (name, named) = match entry.rsplit_once(':') {
                Some((name, profile)) if config.has_profiles() && !name.is_empty() => {
                    (name.to_string(), Some(profile))
                }
                _ => (entry.clone(), None),
            };
            let profile = match named.or(given) {
                Some(p) => match config.profile(p) {
                    Some(profile) => profile,
                    None => {
                        refused.push((entry.clone(), unknown(p)));
                        continue;
                    }
                },
                None => match config.profile_by_key(config.policy.default_profile.as_deref()) {
                    Some(profile) => profile,
                    None => {
                        refused.push((entry.clone(), unknown("(default)")));
                        continue;
                    }
                },
            };
            if let Some(why) = profile.vms.as_ref().and_then(|vms| vms.refusal(&name)) {
                let why = format!("profile {}: {why}", profile.name);
                refused.push((entry.clone(), fault(Exit::NoPerm, why)));
                continue;
            }
            let want = (name, profile.key.clone());
            if !wants.contains(&want) {
                wants.push(want);
            }
        }
        (wants, refused)
    }

    /// The VM names of a ticket's field entries, any `:profile` left off: what closing goes
    /// by, whatever profile an entry names.
    pub fn names_of(&self, entries: &[String]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let name = match entry.rsplit_once(':') {
                Some((name, _)) if self.config.has_profiles() && !name.is_empty() => name,
                _ => entry.as_str(),
            };
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        names
    }

    /// Every opening of `vms` there is to close: each under every configured profile, and
    /// with per-agent rules every agent's rule on them that NSX shows.
    pub fn every_opening(
        &self,
        backend: &dyn TagBackend,
        vms: Vec<VmRef>,
    ) -> anyhow::Result<Vec<VmRef>> {
        let ids: BTreeSet<String> = vms.iter().map(|v| v.id.clone()).collect();
        let mut out = self.under_every_profile(vms);
        if self.config.source.is_some() {
            for vm in backend.all_tagged()? {
                if ids.contains(&vm.id) && !out.iter().any(|o| o.key() == vm.key()) {
                    out.push(vm);
                }
            }
        }
        Ok(out)
    }

    /// Each of `vms` under every configured profile: closing a VM by name closes all its
    /// access.
    pub fn under_every_profile(&self, vms: Vec<VmRef>) -> Vec<VmRef> {
        let mut out: Vec<VmRef> = Vec::new();
        for vm in vms {
            for profile in &self.config.profiles {
                let each = VmRef {
                    profile: profile.key.clone(),
                    ..vm.clone()
                };
                if !out.iter().any(|o| o.key() == each.key()) {
                    out.push(each);
                }
            }
        }
        out
    }

    /// With per-agent rules: `vms` opened from `agent`'s desktop, or, when the agent has no
    /// `[agents]` addresses (or is unknown), none of them, each refused (77). Without: `vms`.
    pub fn opened_by_agent(
        &self,
        vms: Vec<VmRef>,
        agent: Option<&str>,
    ) -> (Vec<VmRef>, Vec<Refusal>) {
        let Some(source) = &self.config.source else {
            return (vms, Vec::new());
        };
        // A desktop by pattern is found when its rule is written (and refused there, 77).
        let known = |a: &str| source.agents.contains_key(a) || source.desktop.is_some();
        match agent.filter(|a| known(a)) {
            Some(agent) => (
                vms.into_iter()
                    .map(|vm| VmRef {
                        agent: Some(agent.to_string()),
                        ..vm
                    })
                    .collect(),
                Vec::new(),
            ),
            None => {
                let who = agent.unwrap_or("(nobody: the ticket has no owner)");
                let refused = vms
                    .iter()
                    .map(|vm| (vm.name.clone(), crate::nsx::rules::no_desktop(who)))
                    .collect();
                (Vec::new(), refused)
            }
        }
    }

    /// The VMs for `wants`: each name allowed by `[policy]` and found, under its profile;
    /// what was refused or not found, by name.
    pub fn targets(
        &self,
        backend: &dyn TagBackend,
        wants: &[Want],
    ) -> anyhow::Result<(Vec<Want>, Vec<VmRef>, Vec<Refusal>)> {
        let mut unique: Vec<String> = Vec::new();
        for (name, _) in wants {
            if !unique.contains(name) {
                unique.push(name.clone());
            }
        }
        let (allowed, mut refused) = self.allowed(&unique);
        let (found, not_found) = self.resolve(backend, &allowed)?;
        refused.extend(not_found);
        let kept: Vec<Want> = wants
            .iter()
            .filter(|(name, _)| allowed.contains(name))
            .cloned()
            .collect();
        let vms = kept
            .iter()
            .filter_map(|(name, profile)| {
                found.iter().find(|vm| vm.name == *name).map(|vm| VmRef {
                    profile: profile.clone(),
                    ..vm.clone()
                })
            })
            .collect();
        Ok((kept, vms, refused))
    }

    /// Closes `vms` while the leases are unknown (the lease file or the lock could not be read
    /// or taken): NSX first, nothing saved, every step journaled where it can be. Fails closed:
    /// whoever else held these VMs loses access too, and the summary says so.
    pub fn close_unknown(
        &self,
        backend: &dyn TagBackend,
        subject: &Subject,
        heading: String,
        vms: Vec<VmRef>,
        tagged: Option<BTreeSet<String>>,
        refused: Vec<Refusal>,
    ) -> anyhow::Result<Exit> {
        let mut decision = Decision::new(heading, Vec::new(), Vec::new(), vms);
        decision.tagged = tagged;
        decision.refused = refused;
        let outcomes = self.carry_out(None, backend, subject, &decision)?;
        let exit = self.report(&decision, &outcomes);
        let closed: Vec<String> = outcomes
            .iter()
            .filter(|o| o.error.is_none() && o.plan.change == plan::TagChange::Detach)
            .map(|o| crate::escape::printable(&o.plan.vm.name))
            .collect();
        if !closed.is_empty() {
            let text = match self.dry_run {
                true => format!(
                    "dry run: the leases could not be read, so otnsx would close {} without knowing who else held them (fail closed)",
                    closed.join(", ")
                ),
                false => format!(
                    "the leases could not be read, so otnsx closed {} without knowing who else held them (fail closed): another ticket or grant on them lost access too",
                    closed.join(", ")
                ),
            };
            self.recorder
                .record(&self.recorder.entry(subject, Action::Warning, None, &text));
            errln!("otnsx: warning: {text}");
        }
        Ok(exit)
    }

    /// Finds each name: in vCenter (one session for all), in NSX-T's inventory, or in vCenter
    /// and then NSX-T, as `nsx.kind` and `nsx.resolve` say. A name that is invalid, missing or
    /// ambiguous is refused alone; a service that cannot be used fails the whole command.
    pub fn resolve(
        &self,
        backend: &dyn TagBackend,
        names: &[String],
    ) -> anyhow::Result<(Vec<VmRef>, Vec<Refusal>)> {
        let mut refused = Vec::new();
        let mut valid = Vec::new();
        for name in names {
            match check_vm_name(name) {
                Ok(()) => valid.push(name.clone()),
                Err(e) => refused.push((name.clone(), e)),
            }
        }
        if valid.is_empty() {
            return Ok((Vec::new(), refused));
        }
        let mut vms = Vec::new();
        // Only "this name" failures (exit 65) stay per VM; anything else ends the run.
        let mut sort = |name: String, found: anyhow::Result<VmRef>| {
            match found {
                // An id the lease store could not read back is refused here, not written.
                Ok(vm) if !crate::state::store::is_vm_id(&vm.id) => refused.push((
                    name,
                    fault(
                        Exit::DataErr,
                        format!(
                            "VM {} has the id \"{}\" from the service, which otnsx cannot record (1 to 128 characters, no white space, control character or #); nothing was opened",
                            crate::escape::shorten(&vm.name),
                            crate::escape::shorten(&vm.id)
                        ),
                    ),
                )),
                Ok(vm) => vms.push(vm),
                Err(e) if exit_code(&e) == Exit::DataErr => refused.push((name, e)),
                Err(e) => return Err(e),
            }
            Ok(())
        };
        backend.find(valid, &mut sort)?;
        Ok((vms, refused))
    }

    /// The help-desk client, with the session kept between runs, its reads bounded by the
    /// deadline less the part kept for closing; `need` says what for, in the error when there
    /// is no `[otrs]` section.
    pub fn helpdesk(&self, need: &str) -> anyhow::Result<Box<dyn HelpDesk>> {
        let otrs = self.config.otrs.as_ref().ok_or_else(|| {
            fault(
                Exit::Config,
                format!("no [otrs] section: it is needed {need}"),
            )
        })?;
        // The help desk's reads may take all but the part of the deadline kept for closing
        // (see Otrs::reads_by): a help desk that hangs leaves an unlock the time to close.
        let client = crate::helpdesk::otrs::Otrs::new(
            otrs,
            self.deadline,
            self.verbose,
            Some(self.store.session_path()),
        )?;
        Ok(Box::new(client))
    }

    /// Runs `work` with the NSX backend, ending its session afterwards.
    pub fn with_backend<T>(
        &self,
        work: impl FnOnce(&dyn TagBackend) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let memory = crate::nsx::Memory::Refresh;
        crate::nsx::with(&self.config, self.deadline, self.verbose, memory, work)
    }

    /// [`Run::with_backend`] for a help-desk event, which may use what earlier runs remembered.
    pub fn with_event_backend<T>(
        &self,
        work: impl FnOnce(&dyn TagBackend) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let memory = crate::nsx::Memory::Use;
        crate::nsx::with(&self.config, self.deadline, self.verbose, memory, work)
    }

    /// Takes the state lock (none in a dry run, which changes nothing) and reads the leases.
    /// A lock that stays busy until the deadline (exit 75 in the end) and any other state
    /// problem (said, exit 74 at the end) leave the leases unknown, so that closing still
    /// works and opening is refused; with a busy lock, the leases as read without it come
    /// along to say what to close.
    ///
    /// Journal entries saved with the leases by a run that was killed before it appended them
    /// to the journal are appended now, so that the journal records every saved change. A lease
    /// that claims to live longer than its kind allows is clipped, and the clip journaled.
    pub fn begin(&self) -> anyhow::Result<Begun> {
        let lock = if self.dry_run {
            None
        } else {
            match self.store.lock(self.deadline.for_locking()) {
                Ok(lock) => Some(lock),
                Err(e) if exit_code(&e) == Exit::TempFail => {
                    return Ok(Begun {
                        snapshot: self.store.load().ok(),
                        busy: Some(e),
                        ..Begun::unknown(None)
                    });
                }
                Err(e) => {
                    self.recorder.state_problem(&e);
                    return Ok(Begun::unknown(None));
                }
            }
        };
        // What earlier runs on this node could not record comes first, in order (in the
        // database: with this run's transaction).
        if lock.is_some() {
            match self.recorder.journal().record_kept() {
                Ok((0, _)) => {}
                Ok((n, files)) => {
                    errln!(
                        "otnsx: recording {n} journal entries kept on this node by earlier runs"
                    );
                    crate::sync::lock(&self.kept_files).extend(files);
                }
                Err(e) => self.recorder.state_problem(&e),
            }
        }
        let (mut leases, mut outbox) = match self.store.load_with_outbox() {
            Ok(read) => read,
            Err(e) => {
                self.recorder.state_problem(&e);
                return Ok(Begun::unknown(lock));
            }
        };
        for lease in &mut leases {
            let max = match lease.holder {
                Holder::Ticket { .. } => self.config.policy.max_duration,
                Holder::User { .. } => self.config.policy.max_grant,
            };
            if let Some(clipped) = lease.clipped(max, self.clock.now()) {
                let vm = lease.vm_ref();
                let text = format!(
                    "the lease of {} on {} claimed to last until {}, longer than its kind allows; clipped to {}",
                    lease.holder, vm.name, lease.expires_at, clipped.expires_at
                );
                let mut entry = self.recorder.entry(
                    &Subject::new(Cause::Clip),
                    Action::Warning,
                    Some(&vm),
                    &text,
                );
                entry.lost = vec![lease.holder.clone()];
                entry.gained = vec![lease.holder.clone()];
                outbox.push(serde_json::to_value(&entry).unwrap_or_default());
                *lease = clipped;
            }
        }
        if let Some(lock) = &lock
            && !outbox.is_empty()
        {
            match self.recorder.journal().recover(&outbox) {
                Ok(recovered) => {
                    if recovered > 0 {
                        errln!(
                            "otnsx: recovered {recovered} journal entries of an interrupted run"
                        );
                    }
                    outbox.clear();
                }
                Err(e) => self.recorder.state_problem(&e),
            }
            // The outbox stays in the file while the journal cannot take it.
            if let Err(e) = self.store.save(lock, &leases, &outbox) {
                self.recorder.state_problem(&e);
            }
        }
        Ok(Begun {
            leases: Some(leases),
            ..Begun::unknown(lock)
        })
    }

    /// The leases and the lock, for a command that may open access: refused (exit 74) when the
    /// state is unknown. (A state directory writable by every user refuses each attach, in
    /// `apply`, and lets the closing a command also does go on.)
    pub fn for_opening(&self, begun: Begun) -> anyhow::Result<(Option<StateLock>, Vec<Lease>)> {
        if let Some(busy) = begun.busy {
            return Err(busy.context("nothing was opened"));
        }
        let Some(leases) = begun.leases else {
            return Err(fault(
                Exit::IoErr,
                "nothing was opened: access opens only with its record, and the state directory cannot hold it now",
            ));
        };
        Ok((begun.lock, leases))
    }

    /// Runs `work`; journals its failure, if any, before passing it on.
    pub fn journaled<T>(
        &self,
        subject: &Subject,
        work: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let result = work();
        if let Err(err) = &result {
            self.recorder.failure(subject, err);
        }
        result
    }
}

/// Rows as a table: columns padded to their widest cell, two spaces apart, the last column
/// unpadded. Cells are printable (controls and bidi escaped, secrets scrubbed) and at most
/// [`MAX_CELL`] characters.
pub fn aligned(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| cell_text(cell)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i != last {
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The longest cell [`aligned`] prints, in characters.
const MAX_CELL: usize = 300;

fn cell_text(cell: &str) -> String {
    let cell = crate::escape::printable(cell);
    let count = cell.chars().count();
    if count <= MAX_CELL {
        return cell;
    }
    let head: String = cell.chars().take(MAX_CELL).collect();
    format!("{head}...({} more characters)", count - MAX_CELL)
}

/// The most VM names one ticket's field may hold; a ticket naming more is refused (exit 65)
/// before anything is looked up.
pub const MAX_VMS_PER_TICKET: usize = 20;

/// Checks a VM name taken from a ticket or the command line: vSphere's 80 characters, no
/// control or bidi characters. What is echoed of a refused name is shortened and escaped.
pub fn check_vm_name(name: &str) -> anyhow::Result<()> {
    let shown = crate::escape::shorten(name);
    if name.is_empty() || name.chars().count() > MAX_VM_NAME {
        return Err(fault(
            Exit::DataErr,
            format!("VM name \"{shown}\" must have 1 to {MAX_VM_NAME} characters"),
        ));
    }
    if name.chars().any(crate::escape::is_hostile) {
        return Err(fault(
            Exit::DataErr,
            format!("VM name \"{shown}\" contains control or bidi characters"),
        ));
    }
    Ok(())
}

/// The VMs of `leases` as references, without duplicates.
pub fn vms_of<'a>(leases: impl IntoIterator<Item = &'a Lease>) -> Vec<VmRef> {
    let mut seen = BTreeSet::new();
    leases
        .into_iter()
        .filter(|l| seen.insert(l.key()))
        .map(Lease::vm_ref)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_are_checked() {
        assert!(check_vm_name("Büro-01 & co #1").is_ok());
        assert!(check_vm_name(&"x".repeat(80)).is_ok());
        assert!(check_vm_name(&"x".repeat(81)).is_err());
        assert!(check_vm_name("web\u{0}01").is_err());
        assert!(check_vm_name("").is_err());
    }

    #[test]
    fn the_user_is_the_real_uids_or_a_consistent_sudo_user() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/sh\n";
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        // USER and LOGNAME are never believed.
        let spoofed: &[(&str, &str)] = &[("USER", "alice"), ("LOGNAME", "alice")];
        assert_eq!(os_user_from(0, passwd, env(spoofed)), "root");
        assert_eq!(os_user_from(1001, passwd, env(spoofed)), "bob");
        // Under sudo as root, with SUDO_UID naming SUDO_USER's uid: the user behind sudo.
        let sudo: &[(&str, &str)] = &[("SUDO_USER", "alice"), ("SUDO_UID", "1000")];
        assert_eq!(os_user_from(0, passwd, env(sudo)), "alice");
        // Not root: SUDO_USER is a variable like any other.
        assert_eq!(os_user_from(1001, passwd, env(sudo)), "bob");
        // SUDO_UID of another user, missing or not a number: root.
        for pairs in [
            &[("SUDO_USER", "alice"), ("SUDO_UID", "1001")][..],
            &[("SUDO_USER", "alice")][..],
            &[("SUDO_USER", "alice"), ("SUDO_UID", "x")][..],
            &[("SUDO_USER", "mallory"), ("SUDO_UID", "1000")][..],
        ] {
            let pairs: &'static [(&str, &str)] = Box::leak(pairs.to_vec().into_boxed_slice());
            assert_eq!(os_user_from(0, passwd, env(pairs)), "root", "{pairs:?}");
        }
        // A uid without a name.
        assert_eq!(os_user_from(4242, passwd, env(spoofed)), "uid 4242");
    }
}
