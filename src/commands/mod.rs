//! The commands, and what they share: loading the run's context, resolving VM names, applying
//! a plan to NSX and the store one VM at a time, journaling each decision, and summing up.

mod grant;
mod revoke;
mod ticket;

use std::collections::BTreeSet;

use crate::backend::TagBackend;
use crate::cli::{Cli, Command};
use crate::config::{self, Config, MAX_VM_NAME, NsxKind, Resolve};
use crate::deadline::Deadline;
use crate::error::{Exit, exit_code, fault};
use crate::journal::{Action, Entry, Journal};
use crate::plan::{self, TagChange, VmPlan};
use crate::store::{Lease, StateLock, Store};
use crate::time::Timestamp;
use crate::vcenter::{self, VmRef};

/// Everything a command needs besides its own arguments.
pub struct Run {
    pub config: Config,
    pub deadline: Deadline,
    pub verbose: bool,
    pub dry_run: bool,
    pub store: Store,
    journal: Journal,
    /// Who acts: `helpdesk` (with the ticket's owner once known) or the OS user.
    pub actor: String,
    pub now: Timestamp,
}

/// What a journal entry is about besides its VM.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub ticket_number: Option<String>,
    pub ticket_id: Option<u64>,
    /// Added to every entry's detail, in brackets: `forced`.
    pub note: Option<&'static str>,
}

pub fn execute(cli: Cli) -> anyhow::Result<Exit> {
    // The form of the command line is checked before anything is read.
    let command = match (cli.command, cli.ticket_number, cli.ticket_id) {
        (None, Some(number), Some(ticket_id)) => Command::Ticket {
            ticket_id,
            number: Some(number),
        },
        (Some(command), None, None) => command,
        _ => {
            return Err(fault(
                Exit::Usage,
                "give either TICKET_NUMBER TICKET_ID or a command; see --help",
            ));
        }
    };
    let path = config::locate(cli.global.config.as_deref())?;
    let config = Config::load(&path)?;
    let store = Store::open(&config.state_dir)?;
    let run = Run {
        deadline: Deadline::after(config.deadline),
        journal: Journal::new(store.journal_path()),
        store,
        config,
        verbose: cli.global.verbose,
        dry_run: cli.global.dry_run,
        actor: os_user(),
        now: Timestamp::now(),
    };
    match command {
        Command::Ticket { ticket_id, number } => ticket::run(run, ticket_id, number),
        Command::Grant {
            vms,
            duration,
            reason,
        } => grant::run(&run, &vms, duration, reason.as_deref()),
        Command::Revoke { vms, force } => revoke::run(&run, &vms, force),
    }
}

/// The user who runs otnsx by hand (the one behind sudo, if any).
fn os_user() -> String {
    if let Some(name) = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
    {
        return name;
    }
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid.to_string()).then(|| name.to_string())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// How a command wants the leases to change.
pub struct Decision {
    /// Starts the summary line: `ticket 2026112310000011`, `grant by alice`.
    pub heading: String,
    pub before: Vec<Lease>,
    pub after: Vec<Lease>,
    /// The VMs the command is about (their tag is checked even if their leases do not change).
    pub touched: Vec<VmRef>,
    pub refused: Vec<Refusal>,
}

/// A VM name that was not used, and why.
pub type Refusal = (String, anyhow::Error);

/// The result of one VM's part of a command.
pub struct Outcome {
    pub plan: VmPlan,
    pub error: Option<anyhow::Error>,
    /// When the VM's access ends, if it is open afterwards.
    pub open_until: Option<Timestamp>,
    /// How the change was made, when that is worth a warning (last-writer-wins tag updates).
    pub warnings: Vec<String>,
}

impl Run {
    pub fn journal(
        &self,
        subject: &Subject,
        action: Action,
        vm: Option<&VmRef>,
        failed: bool,
        detail: &str,
    ) {
        if self.dry_run {
            return;
        }
        let detail = match subject.note {
            Some(note) => format!("{detail} [{note}]"),
            None => detail.to_string(),
        };
        let entry = Entry {
            ts: Timestamp::now(),
            action,
            ticket_number: subject.ticket_number.clone(),
            ticket_id: subject.ticket_id,
            vm: vm.map(|v| v.name.clone()),
            vm_id: vm.map(|v| v.id.clone()).filter(|id| !id.is_empty()),
            result: if failed { "failed" } else { "ok" },
            detail,
            actor: self.actor.clone(),
        };
        if let Err(e) = self.journal.append(&entry) {
            // The decision stands; say loudly that its record is missing.
            eprintln!(
                "otnsx: error: {e:#}; lost entry: {}",
                serde_json::to_string(&entry).unwrap_or_default()
            );
        }
    }

    /// Journals a failure of the whole command, refusals as `refused`.
    pub fn journal_failure(&self, subject: &Subject, err: &anyhow::Error) {
        let action = match exit_code(err) {
            Exit::NoPerm | Exit::DataErr => Action::Refused,
            _ => Action::Error,
        };
        self.journal(subject, action, None, true, &format!("{err:#}"));
    }

    /// Finds each name: in vCenter (one session for all), in NSX-T's inventory, or in vCenter
    /// and then NSX-T, as `nsx.kind` and `nsx.resolve` say. A name that is invalid, missing or
    /// ambiguous is refused alone; a service that cannot be used fails the whole command.
    pub fn resolve(
        &self,
        backend: &mut TagBackend,
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
                Ok(vm) => vms.push(vm),
                Err(e) if exit_code(&e) == Exit::DataErr => refused.push((name, e)),
                Err(e) => return Err(e),
            }
            Ok(())
        };
        let by_nsx =
            self.config.nsx.kind == NsxKind::NsxT && self.config.nsx.resolve == Resolve::Nsx;
        match backend.nsxt() {
            Some(nsx) if by_nsx => {
                for name in valid {
                    let found = nsx.find_by_name(&name);
                    sort(name, found)?;
                }
            }
            nsxt => {
                let vc_config = self.config.vcenter.as_ref().ok_or_else(|| {
                    fault(
                        Exit::Config,
                        "no [vcenter] section: it is needed to find VMs by name",
                    )
                })?;
                vcenter::with_session(vc_config, self.deadline, self.verbose, |vc| {
                    let mut nsxt = nsxt;
                    for name in valid {
                        let found = vc.find_vm(&name).and_then(|vm| match nsxt.as_deref_mut() {
                            None => Ok(vm),
                            Some(nsx) => {
                                let (instance, bios) = vc.identity(&vm)?;
                                nsx.find_by_uuid(&vm, &instance, bios.as_deref())
                            }
                        });
                        sort(name, found)?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok((vms, refused))
    }

    /// Runs `work` with the NSX backend, ending its session afterwards.
    pub fn with_backend<T>(
        &self,
        work: impl FnOnce(&mut TagBackend) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        TagBackend::with(&self.config, self.deadline, self.verbose, work)
    }

    /// Takes the state lock (none in a dry run, which changes nothing) and reads the leases.
    pub fn begin(&self) -> anyhow::Result<(Option<StateLock>, Vec<Lease>)> {
        let lock = if self.dry_run {
            None
        } else {
            Some(self.store.lock(self.deadline)?)
        };
        Ok((lock, self.store.load()?))
    }

    /// Runs `work`; journals its failure, if any, before passing it on.
    pub fn journaled<T>(
        &self,
        subject: &Subject,
        work: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let result = work();
        if let Err(err) = &result {
            self.journal_failure(subject, err);
        }
        result
    }

    /// Carries out a decision: journals the refused names, asks NSX which VMs carry the tag
    /// (only if any VM is concerned), applies the plan, and prints the summary.
    pub fn carry_out(
        &self,
        lock: Option<&StateLock>,
        backend: &mut TagBackend,
        subject: &Subject,
        decision: &Decision,
    ) -> anyhow::Result<(Exit, Vec<Outcome>)> {
        let Decision {
            heading,
            before,
            after,
            touched,
            refused,
        } = decision;
        for (name, err) in refused {
            let vm = VmRef {
                name: name.clone(),
                id: String::new(),
            };
            self.journal(
                subject,
                Action::Refused,
                Some(&vm),
                true,
                &format!("{err:#}"),
            );
        }
        let vms = plan::concerned_vms(before, after, touched);
        let tagged = backend.tagged_among(&vms)?;
        let plans = plan::plan(before, after, touched, &tagged, self.now);
        let outcomes = self.apply(lock, backend, subject, before, after, plans)?;
        let exit = self.report(heading, refused, &outcomes);
        Ok((exit, outcomes))
    }

    /// Applies the plan VM by VM: the NSX change, then the VM's leases saved, then the journal
    /// entry. A failed attach leaves no lease; a failed detach leaves its leases marked for
    /// retry. Without a lock (dry run) nothing is changed.
    pub fn apply(
        &self,
        lock: Option<&StateLock>,
        backend: &mut TagBackend,
        subject: &Subject,
        before: &[Lease],
        after: &[Lease],
        plans: Vec<VmPlan>,
    ) -> anyhow::Result<Vec<Outcome>> {
        let mut current = before.to_vec();
        let mut outcomes = Vec::new();
        for plan in plans {
            let id = plan.vm.id.clone();
            let result = match (lock, plan.change) {
                (None, _) | (_, TagChange::Keep) => Ok(()),
                (Some(_), TagChange::Attach) => backend.attach(&plan.vm),
                (Some(_), TagChange::Detach) => backend.detach(&plan.vm),
            };
            let mut wanted = plan::take_vm(&current, after, &id);
            match (&result, plan.change) {
                (Err(_), TagChange::Attach) => wanted = plan::take_vm(&wanted, before, &id),
                (Err(_), TagChange::Detach) => wanted = plan::keep_for_retry(before, &wanted, &id),
                (Ok(()), TagChange::Detach) => wanted = plan::settle(&wanted, &id),
                (Ok(()), TagChange::Keep) if !plan.tagged => wanted = plan::settle(&wanted, &id),
                _ => {}
            }
            current = wanted;
            if let Some(lock) = lock {
                self.store.save(lock, &current)?;
            }
            let open_until = current
                .iter()
                .filter(|l| l.vm_id == id && l.is_live(self.now))
                .map(|l| l.expires_at)
                .max()
                .filter(|_| result.is_ok() || plan.change != TagChange::Attach);
            let outcome = Outcome {
                plan,
                error: result.err(),
                open_until,
                warnings: backend.take_warnings(),
            };
            let (action, detail) = describe(&outcome);
            self.journal(
                subject,
                action,
                Some(&outcome.plan.vm),
                outcome.error.is_some(),
                &detail,
            );
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Prints the one-line summary and returns the exit status the outcomes add up to.
    /// Prints the one-line summary on stdout, and the failures among it as one line on
    /// stderr; returns the exit status the outcomes add up to.
    pub fn report(&self, heading: &str, refused: &[Refusal], outcomes: &[Outcome]) -> Exit {
        let mut parts: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut exits: Vec<Exit> = Vec::new();
        for (name, err) in refused {
            failures.push(format!("{name}: {err:#}"));
            exits.push(exit_code(err));
        }
        parts.extend(failures.iter().cloned());
        for outcome in outcomes {
            let (_, detail) = describe(outcome);
            if let Some(err) = &outcome.error {
                failures.push(detail.clone());
                exits.push(exit_code(err));
            } else {
                exits.push(Exit::Ok);
            }
            parts.push(detail);
        }
        if parts.is_empty() {
            parts.push("nothing to do".into());
        }
        let prefix = if self.dry_run { "dry run: " } else { "" };
        println!("{prefix}{heading}: {}", parts.join("; "));
        if !failures.is_empty() {
            eprintln!("otnsx: {heading}: {}", failures.join("; "));
        }
        combine(&exits)
    }
}

/// All fine → 0; some fine and some not → 1; all failed → the first failure's code.
fn combine(exits: &[Exit]) -> Exit {
    let failed: Vec<Exit> = exits.iter().copied().filter(|e| *e != Exit::Ok).collect();
    match failed.first() {
        None => Exit::Ok,
        Some(_) if failed.len() < exits.len() => Exit::Partial,
        Some(first) => *first,
    }
}

/// The journal action and the human sentence for an outcome, with its warnings.
fn describe(outcome: &Outcome) -> (Action, String) {
    let (action, mut detail) = describe_change(outcome);
    for warning in &outcome.warnings {
        detail.push_str(&format!(" (warning: {warning})"));
    }
    (action, detail)
}

fn describe_change(outcome: &Outcome) -> (Action, String) {
    let plan = &outcome.plan;
    let vm = &plan.vm;
    let holders = |list: &[crate::store::Holder]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let until = outcome
        .open_until
        .map(|t| format!(" until {t}"))
        .unwrap_or_default();
    if let Some(err) = &outcome.error {
        let what = match plan.change {
            TagChange::Attach => "opening failed, no lease kept",
            _ => "closing failed, kept for retry on the next run",
        };
        return (Action::Error, format!("{vm}: {what}: {err:#}"));
    }
    let gained = plan
        .held_after
        .iter()
        .any(|h| !plan.held_before.contains(h));
    let lost = plan
        .held_before
        .iter()
        .any(|h| !plan.held_after.contains(h));
    match plan.change {
        TagChange::Attach => (Action::Grant, format!("opened {vm}{until}")),
        TagChange::Detach => (Action::Revoke, format!("closed {vm}")),
        TagChange::Keep if gained => (
            Action::Grant,
            format!(
                "{vm} was already open; now also held by {}{until}",
                holders(&plan.held_after)
            ),
        ),
        TagChange::Keep if lost && !plan.held_after.is_empty() => (
            Action::Revoke,
            format!(
                "{vm} stays open, still held by {}",
                holders(&plan.held_after)
            ),
        ),
        TagChange::Keep if lost => (
            Action::Revoke,
            format!("released {vm} (it was already closed)"),
        ),
        TagChange::Keep if plan.held_after.is_empty() => {
            (Action::Noop, format!("{vm} is already closed"))
        }
        TagChange::Keep => (
            Action::Noop,
            format!(
                "{vm} is already open for {}{until}",
                holders(&plan.held_after)
            ),
        ),
    }
}

/// Checks a VM name taken from a ticket or the command line: vSphere's 80 characters, no
/// control characters.
pub fn check_vm_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.chars().count() > MAX_VM_NAME {
        return Err(fault(
            Exit::DataErr,
            format!("VM name {name:?} must have 1 to {MAX_VM_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(fault(
            Exit::DataErr,
            format!("VM name {name:?} contains control characters"),
        ));
    }
    Ok(())
}

/// The VMs of `leases` as references, without duplicates.
pub fn vms_of<'a>(leases: impl IntoIterator<Item = &'a Lease>) -> Vec<VmRef> {
    let mut seen = BTreeSet::new();
    leases
        .into_iter()
        .filter(|l| seen.insert(l.vm_id.clone()))
        .map(Lease::vm_ref)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_combine() {
        assert_eq!(combine(&[]), Exit::Ok);
        assert_eq!(combine(&[Exit::Ok, Exit::Ok]), Exit::Ok);
        assert_eq!(combine(&[Exit::Ok, Exit::Unavailable]), Exit::Partial);
        assert_eq!(combine(&[Exit::DataErr, Exit::Unavailable]), Exit::DataErr);
    }

    #[test]
    fn vm_names_are_checked() {
        assert!(check_vm_name("Büro-01 & co #1").is_ok());
        assert!(check_vm_name(&"x".repeat(80)).is_ok());
        assert!(check_vm_name(&"x".repeat(81)).is_err());
        assert!(check_vm_name("web\u{0}01").is_err());
        assert!(check_vm_name("").is_err());
    }
}
