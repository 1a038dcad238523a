//! The commands: the form of the command line checked, the run's context set up, and each
//! command dispatched. What they share lives beside them: the run's context (`run.rs`), name
//! resolution (`resolve.rs`), carrying out a decision and its summary (`change.rs`), tables
//! (`table.rs`).

mod change;
mod check;
mod completions;
mod grant;
mod history;
mod notes;
mod reconcile;
mod resolve;
mod revoke;
mod run;
mod state;
mod status;
mod strays;
mod table;
mod ticket;

use crate::cli::{Cli, Command, Configured, Global};
use crate::config::{self, Config};
use crate::deadline::Deadline;
use crate::domain::cause::Cause;
use crate::error::{Exit, fault};
use crate::state::journal::{Action, Journal};
use crate::state::recorder::{Recorder, Subject};
use crate::state::store::Store;
use crate::state::syslog::Syslog;
use crate::time::Clock;

use run::{Run, clock, os_user};

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
    if let Some(db) = &run.config.database
        && !db.verify_server
        && contacts_services
    {
        let text = format!(
            "TLS verification for the state database ({}) is off (sslmode=require, accept_unverified_server = true): anyone on the path can read its password and the leases",
            db.url
        );
        run.recorder.record(&run.recorder.entry(
            &Subject::new(Cause::Config),
            Action::Warning,
            None,
            &text,
        ));
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
