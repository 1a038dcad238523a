//! `otnsx check [--ticket ID]`: the first command after install. Reads the configuration (every
//! problem listed), then asks each service what otnsx will need of it, one line per check: ✓ or
//! ✗ with what to do, ! for a warning. Exit 0 only if every check passes.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::config::{self, Config};
use crate::deadline::Deadline;
use crate::error::Exit;
use crate::helpdesk::otrs::Otrs;
use crate::state::store::Store;
use crate::time::format_duration;
use crate::vcenter;

/// The Generic Agent module's default `$Timeout` (`dist/helpdesk/.../Otnsx.pm`): timeout(1)
/// stops otnsx then.
const MODULE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether ticket `ticket` (`check --ticket ID`) meets the conditions for each profile, as if
/// its owner locked it now.
fn meets(list: &mut Checklist, config: &Config, ticket: &crate::domain::ticket::Ticket) {
    let any =
        !config.policy.require.is_empty() || config.profiles.iter().any(|p| !p.require.is_empty());
    if !any {
        return;
    }
    let mut meets = Vec::new();
    let mut not = Vec::new();
    for profile in &config.profiles {
        match super::ticket::unmet(config, ticket, profile.key.as_deref()) {
            None => meets.push(profile.name.clone()),
            Some(why) => not.push(format!("not {}: {why}", profile.name)),
        }
    }
    let owner = ticket.owner.as_deref().unwrap_or("nobody");
    let mut said = Vec::new();
    if !meets.is_empty() {
        said.push(format!("meets them for {}", meets.join(", ")));
    }
    said.extend(not);
    list.pass(
        &format!("conditions on ticket {}", ticket.number),
        &format!(
            "locked by its owner {}, it {}",
            crate::escape::shorten(owner),
            said.join("; ")
        ),
    );
}

/// One check in `check --json`'s `"checks"`: what, `pass`/`fail`/`warn`, and the detail.
fn checked(what: &str, result: &str, detail: &str) {
    if crate::document::json() {
        let check = serde_json::json!({"check": what, "result": result, "detail": detail});
        crate::document::push("checks", check);
    }
}

struct Checklist {
    failed: usize,
    passed: usize,
}

impl Checklist {
    fn pass(&mut self, what: &str, detail: &str) {
        self.passed += 1;
        outln!("✓ {what}: {detail}");
        checked(what, "pass", detail);
    }

    fn fail(&mut self, what: &str, why: &str) {
        self.failed += 1;
        outln!("✗ {what}: {why}");
        checked(what, "fail", why);
    }

    fn warn(&self, what: &str, why: &str) {
        outln!("! {what}: {why}");
        checked(what, "warn", why);
    }

    fn outcome<T>(
        &mut self,
        what: &str,
        result: anyhow::Result<T>,
        detail: impl FnOnce(T) -> String,
    ) {
        match result {
            Ok(v) => self.pass(what, &detail(v)),
            Err(e) => self.fail(what, &format!("{e:#}")),
        }
    }
}

pub fn run(
    explicit: Option<&Path>,
    ticket: Option<u64>,
    note: bool,
    verbose: bool,
) -> anyhow::Result<Exit> {
    let mut list = Checklist {
        failed: 0,
        passed: 0,
    };
    let path = config::locate(explicit)?;
    let config = match Config::check_file(&path) {
        Ok(config) => {
            list.pass(
                &format!("configuration {}", path.display()),
                &format!(
                    "valid ({}, deadline {}{})",
                    config.nsx.kind.product(),
                    format_duration(config.deadline),
                    match config.has_profiles() {
                        true => format!(
                            ", access profiles {}",
                            config
                                .profiles
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        false => String::new(),
                    }
                ),
            );
            config
        }
        Err(problems) => {
            for problem in problems {
                list.fail(&format!("configuration {}", path.display()), &problem);
            }
            outln!(
                "{} problem(s) in the configuration; the services were not checked",
                list.failed
            );
            crate::document::field("passed", list.passed);
            crate::document::field("failed", list.failed);
            crate::document::said(&format!("{} problem(s) in the configuration", list.failed));
            return Ok(Exit::Config);
        }
    };
    if let Some(source) = &config.source {
        agent_sources(&mut list, source);
    }
    // Each service gets its own share of the deadline, so that one that hangs does not leave
    // the others no time and mark them failed too.
    let services = u32::try_from(config.endpoints().len()).unwrap_or(1).max(1);
    let share = config.deadline / services;
    for (name, endpoint) in config.endpoints() {
        if endpoint.tls.insecure {
            list.warn(
                name,
                &format!(
                    "TLS verification of {} is off (insecure = true); set ca_file instead",
                    endpoint.url
                ),
            );
        }
    }

    let vms = &config.policy.vms;
    if vms.allow.is_empty() {
        list.warn("policy", "policy.allow is empty: no VM can be opened; list the VMs that may be, e.g. allow = [\"srv-*\"]");
    } else if vms.allow.iter().any(|p| p.chars().all(|c| c == '*')) {
        list.warn("policy", "policy.allow = [\"*\"] lets a ticket open any VM, vCenter and NSX included; list the VMs that may be opened, and deny the infrastructure");
    }

    // Only approved work: what a ticket must meet, in words.
    let mut conditions = Vec::new();
    if !config.policy.require.is_empty() {
        let words = config.policy.require.describe().join(", ");
        conditions.push(format!("every ticket: {words}"));
    }
    for profile in config.profiles.iter().filter(|p| !p.require.is_empty()) {
        let words = profile.require.describe().join(", ");
        conditions.push(format!("profile {}: {words}", profile.name));
    }
    if !conditions.is_empty() {
        list.pass(
            "conditions",
            &format!("a ticket opens access only when {}", conditions.join("; ")),
        );
    }

    if config.otrs.is_some() && config.deadline + Duration::from_secs(1) > MODULE_TIMEOUT {
        list.warn(
            "deadline",
            &format!(
                "deadline {}: the Generic Agent module Otnsx.pm (Znuny 6.3+) stops otnsx after {} ($Timeout), and a run may take its deadline plus 1 s, so a slow event may be killed before it has closed, journaled or noted what it did; set deadline to {} or less, or raise $Kernel::System::GenericAgent::Otnsx::Timeout in Kernel/Config.pm above the deadline",
                format_duration(config.deadline),
                format_duration(MODULE_TIMEOUT),
                format_duration(MODULE_TIMEOUT - Duration::from_secs(1)),
            ),
        );
    }

    let state = &config.state_dir;
    let what = format!("state directory {}", state.display());
    let usable = writable(state);
    let usable_ok = usable.is_ok();
    list.outcome(&what, usable, |()| "writable, lock file usable".into());
    if usable_ok {
        list.outcome(&what, shared(state), |group| {
            format!("shared with group {group}: setgid, and every state file read and written by the group")
        });
    }

    if let Some(db) = &config.database {
        database(&mut list, db, Deadline::after(share));
    }

    match &config.otrs {
        None => list.warn(
            "help desk",
            "no [otrs] section: ticket events and reconcile of ticket leases cannot work",
        ),
        Some(otrs) => {
            let what = format!("help desk {}", otrs.endpoint.url);
            // A fresh login, never the session kept by earlier runs: a kept session would
            // hide a wrong password until it expires.
            let helpdesk = Otrs::new(otrs, Deadline::after(share), verbose, None)?;
            let ticket_given = ticket;
            match helpdesk.any_ticket(ticket) {
                Err(e) => list.fail(&what, &format!("{e:#}")),
                Ok(None) => {
                    list.pass(
                        &what,
                        &format!(
                            "the web service answers; login as {:?} accepted",
                            otrs.endpoint.user
                        ),
                    );
                    list.warn(
                        "help desk",
                        "no ticket to check the VM field on; run `otnsx check --ticket ID`",
                    );
                }
                Ok(Some(id)) => {
                    list.pass(
                        &what,
                        &format!(
                            "the web service answers; login as {:?} accepted",
                            otrs.endpoint.user
                        ),
                    );
                    let ticket = helpdesk.ticket_with_articles(id);
                    let generation = ticket.as_ref().ok().and_then(|t| t.generation);
                    if let (Some(_), Ok(read)) = (ticket_given, &ticket) {
                        meets(&mut list, &config, read);
                    }
                    list.outcome(&format!("help desk field {}", otrs.vm_field), ticket, |t| {
                        let vms = if t.vms.is_empty() {
                            "empty".to_string()
                        } else {
                            t.vms.join(", ")
                        };
                        format!("ticket {} (ID {id}) has it: {vms}", t.number)
                    });
                    check_generation(&mut list, helpdesk.configured_generation(), generation, id);
                    list.outcome(
                        "help desk operations",
                        helpdesk
                            .unlocked_by(id)
                            .and_then(|_| helpdesk.probe_update(id)),
                        |()| {
                            format!("SessionCreate, TicketSearch, TicketGet, TicketHistoryGet and TicketUpdate answer on ticket ID {id} (nothing was changed; the TicketUpdate probe leaves two ERROR lines in the help desk's log, \"No Lock for otnsx-check-no-such-lock found!\" and TicketUpdate.InvalidParameter)")
                        },
                    );
                    if note && otrs.notes {
                        list.outcome(
                            "help desk note permission",
                            helpdesk.note(
                                id,
                                "otnsx check",
                                "A test note from `otnsx check --note`: the API user may add internal notes to this ticket's queue.",
                            ),
                            |warning| match warning {
                                None => format!("an internal note was added to ticket ID {id}"),
                                Some(w) => format!("an internal note was added to ticket ID {id} ({w})"),
                            },
                        );
                    } else if otrs.notes {
                        list.warn(
                            "help desk note permission",
                            "not tested (it takes writing a note): `otnsx check --ticket ID --note` adds one internal note to that ticket",
                        );
                    }
                }
            }
        }
    }

    if let Some(vc) = &config.vcenter {
        let result = vcenter::with_session(vc, Deadline::after(share), verbose, |session| {
            Ok(session.api_generation())
        });
        list.outcome(
            &format!("vCenter {}", vc.endpoint.url),
            result,
            |generation| {
                format!(
                    "login as {:?} accepted, API {generation}, session closed again",
                    vc.endpoint.user
                )
            },
        );
    }

    let nsx = &config.nsx;
    let what = format!("NSX {}", nsx.endpoint.url);
    let memory = crate::nsx::Memory::Refresh;
    let probe = crate::nsx::with(
        &config,
        Deadline::after(share),
        verbose,
        memory,
        |backend| {
            let found = backend.probe()?;
            let tagged = backend.all_tagged()?;
            Ok((found, tagged, backend.check_group(), backend.strays()))
        },
    );
    let (probe, group, strays) = match probe {
        Ok((found, tagged, group, strays)) => (Ok((found, tagged)), group, strays),
        Err(e) => (Err(e), None, Vec::new()),
    };
    let tagged = probe.as_ref().ok().map(|(_, tagged)| tagged.clone());
    list.outcome(&what, probe, |(found, _)| found);
    if let Some(group) = group {
        list.outcome("NSX verify_group", group, |found| found);
    }
    for stray in &strays {
        let what = super::strays::what(stray);
        match stray.kind {
            crate::nsx::backend::StrayKind::Opening => list.fail(
                "NSX security policy",
                &format!("{what} lets traffic through, and no lease explains it: the policy is otnsx's alone; `otnsx reconcile` (or `revoke --all`) removes it, journaling it whole first"),
            ),
            crate::nsx::backend::StrayKind::Restricting => list.warn(
                "NSX security policy",
                &format!("{what} only restricts, and is not otnsx's: otnsx leaves it, but the policy is otnsx's alone; move it to a policy of the site's"),
            ),
            crate::nsx::backend::StrayKind::Group => list.warn(
                "NSX groups",
                &format!("{what} was left behind by a close; the next `otnsx reconcile` removes it"),
            ),
        }
    }
    if let Some(tagged) = tagged {
        let strangers = never_opened(&config, &tagged);
        if !strangers.is_empty() {
            list.warn(
                "NSX tag",
                &format!(
                    "NSX shows the tag on {} VM(s) this otnsx holds no lease for and never opened ({}): another otnsx (another help desk) may use the same tag, and this one's reconcile would close them as drift; give each instance its own tag and state directory",
                    strangers.len(),
                    strangers.join(", ")
                ),
            );
        }
    }

    outln!("{} check(s) passed, {} failed", list.passed, list.failed);
    crate::document::field("passed", list.passed);
    crate::document::field("failed", list.failed);
    if list.failed > 0 {
        crate::document::said(&format!("{} check(s) failed", list.failed));
    }
    Ok(if list.failed == 0 {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

/// Per-agent rules: where each agent's rules come from, one line per `[agents]` entry (its
/// networks passed the configuration's checks), and how a desktop VM's addresses are taken.
fn agent_sources(list: &mut Checklist, source: &config::AgentSource) {
    for (agent, addresses) in &source.agents {
        list.pass(
            &format!("agent {agent}"),
            &format!("rules from {}", addresses.join(", ")),
        );
    }
    if let Some(pattern) = &source.desktop {
        list.pass(
            "agent desktops",
            &format!(
                "any other agent's rules come from the addresses NSX shows for their VM {pattern:?}, less unspecified, loopback, link-local, multicast and broadcast addresses and those in another agent's [agents] networks (each left out is a warning)"
            ),
        );
    }
}

/// Whether `otrs.version` matches the help desk the articles show: an OTRS 5 note on a later
/// help desk would be visible to the customer.
fn check_generation(list: &mut Checklist, configured: u32, seen: Option<u32>, id: u64) {
    let what = "help desk version";
    match seen {
        None => list.warn(
            what,
            &format!("ticket ID {id} has no article to tell the help desk's generation; run `otnsx check --ticket ID` with a ticket that has one"),
        ),
        Some(seen) if seen == configured => list.pass(
            what,
            &format!(
                "otrs.version = {configured} matches the articles ({})",
                if seen == 5 { "ArticleType" } else { "IsVisibleForCustomer" }
            ),
        ),
        Some(6) => list.fail(
            what,
            "otrs.version = 5, but the articles are those of OTRS 6 or later (Znuny, OTOBO): an OTRS 5 note would be visible to the customer there, so otnsx posts the 6 form; set otrs.version = 6",
        ),
        Some(_) => list.fail(
            what,
            "the articles are those of OTRS 5 (ArticleType): set otrs.version = 5",
        ),
    }
}

/// The state directory is shared by the help desk's users through its group: group rwx and
/// setgid on the directory, and every state file in the directory's group with g+rw. Returns
/// the group's name.
fn shared(dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir)?;
    let group = group_name(meta.gid());
    let mut problems = Vec::new();
    if meta.mode() & 0o2070 != 0o2070 {
        problems.push(format!(
            "the directory is mode {:o}; the help desk's users (web server, daemon, console) share it through its group: chmod 2770 {}",
            meta.mode() & 0o7777,
            dir.display()
        ));
    }
    let mut names: Vec<String> = [
        "leases.lock",
        "leases.gate.lock",
        "leases.write.lock",
        "leases.json",
        "journal.jsonl",
        "journal.appended",
        "journal.lock",
        "otrs.session",
        "locks",
    ]
    .map(String::from)
    .into();
    // The ticket and VM locks (see state::keys).
    if let Ok(entries) = fs::read_dir(dir.join("locks")) {
        let mut locks: Vec<String> = entries
            .flatten()
            .map(|e| format!("locks/{}", e.file_name().to_string_lossy()))
            .collect();
        locks.sort();
        names.extend(locks);
    }
    for name in &names {
        let path = dir.join(name);
        let Ok(file) = fs::symlink_metadata(&path) else {
            continue;
        };
        // A directory's group must also enter it.
        let needed = if file.is_dir() { 0o070 } else { 0o060 };
        if file.gid() != meta.gid() {
            problems.push(format!(
                "{name} belongs to group {}, not {group}: chgrp {group} {}",
                group_name(file.gid()),
                path.display()
            ));
        } else if file.mode() & needed != needed {
            problems.push(format!(
                "{name} is mode {:o}, so the group cannot write it: chmod {} {}",
                file.mode() & 0o7777,
                if file.is_dir() { "g+rwx" } else { "g+rw" },
                path.display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(group)
    } else {
        anyhow::bail!("{}", problems.join("; "))
    }
}

/// The VMs among `tagged` that have no lease here and that this otnsx's journal never shows
/// opened: the sign of a second instance using the same tag.
fn never_opened(config: &Config, tagged: &[crate::domain::vm::VmRef]) -> Vec<String> {
    let db = config
        .database
        .as_ref()
        .map(|db| crate::state::pg::Pg::new(db, Deadline::after(config.deadline)));
    let store = Store::with_database(&config.state_dir, db);
    let leased: Vec<String> = store
        .load()
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.key())
        .collect();
    let mut opened_lines: Vec<String> = Vec::new();
    let keep = |line: &str, opened: &mut Vec<String>| {
        if line.contains("\"gained\"") {
            opened.push(line.to_string());
        }
    };
    match store.database() {
        Some(db) => {
            let _ = db.journal_lines(&Default::default(), |line| {
                keep(&String::from_utf8_lossy(line), &mut opened_lines);
                true
            });
        }
        None => {
            // Every journal file: what was opened before the last rotation counts too.
            let _ = crate::state::rotation::each_line(&store.journal_path(), &mut |_, line| {
                keep(&String::from_utf8_lossy(line), &mut opened_lines);
            });
        }
    }
    let opened = |id: &str| {
        let needle = format!("\"vm_id\":{}", serde_json::Value::from(id));
        opened_lines.iter().any(|line| line.contains(&needle))
    };
    let mut strangers: Vec<String> = tagged
        .iter()
        .filter(|vm| !leased.contains(&vm.key()) && !opened(&vm.id))
        .map(|vm| vm.to_string())
        .collect();
    strangers.sort();
    strangers.dedup();
    strangers
}

/// The state database: reachable and logged in to, at this otnsx's schema version, and the
/// user granted what runs need.
fn database(list: &mut Checklist, db: &crate::config::Database, deadline: Deadline) {
    use crate::state::pg::{Pg, SCHEMA_VERSION};
    let what = format!("state database {}", db.url);
    let pg = Pg::new(db, deadline);
    let found = match pg.inspect() {
        Ok(found) => found,
        Err(e) => return list.fail(&what, &format!("{e:#}")),
    };
    let tls = match (db.tls, db.verify_server, &db.ca_file) {
        (true, false, _) => {
            "TLS NOT verified (sslmode=require, accept_unverified_server = true)".into()
        }
        (true, true, Some(ca)) => format!("TLS verified against {}", ca.display()),
        (true, true, None) => "TLS verified against the system's CAs".into(),
        (false, _, _) => "loopback, without TLS".into(),
    };
    let host = match pg.answered() {
        Some((host, true)) => format!("; {host} answered, writable"),
        Some((host, false)) => {
            format!("; {host} answered, read-only (no host of the URL is writable)")
        }
        None => String::new(),
    };
    list.pass(
        &what,
        &format!(
            "logged in as {} (PostgreSQL {}, {tls}){host}",
            db.user, found.server
        ),
    );
    let schema = format!("{what} schema");
    match found.schema {
        Some(SCHEMA_VERSION) => list.pass(&schema, &format!("version {SCHEMA_VERSION}")),
        Some(v) if v > SCHEMA_VERSION => list.fail(
            &schema,
            &format!("version {v} is newer than this otnsx's {SCHEMA_VERSION}: upgrade otnsx on this node"),
        ),
        Some(v) => list.fail(
            &schema,
            &format!("version {v}, this otnsx needs {SCHEMA_VERSION}: run `otnsx state migrate`"),
        ),
        None => list.fail(
            &schema,
            "no otnsx tables: run `otnsx state migrate` as the database's owner",
        ),
    }
    let grants = format!("{what} grants");
    if found.missing.is_empty() {
        list.pass(
            &grants,
            &format!("{} may read and write the leases and the journal", db.user),
        );
    } else {
        list.fail(
            &grants,
            &format!(
                "{} lacks {}: GRANT them TO {} as the tables' owner",
                db.user,
                found.missing.join(", "),
                db.user
            ),
        );
    }
    match &found.writes {
        Some(Ok(())) => list.pass(
            &format!("{what} writes"),
            "a journal row written and rolled back",
        ),
        Some(Err(why)) => list.fail(&format!("{what} writes"), why),
        None => {}
    }
}

/// The name of group `gid` from /etc/group, or the number.
fn group_name(gid: u32) -> String {
    fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == gid.to_string()).then(|| name.to_string())
        })
        .unwrap_or_else(|| gid.to_string())
}

/// The state directory can be created, written and locked by this user.
fn writable(dir: &Path) -> anyhow::Result<()> {
    let store = Store::open(dir);
    if let Some(why) = store.unsafe_dir() {
        anyhow::bail!("{why}: otnsx opens no access with it");
    }
    let probe = dir.join(format!(".otnsx-check.{}", std::process::id()));
    fs::write(&probe, b"check\n").map_err(|e| {
        anyhow::anyhow!(
            "cannot write in {}: {e}; make it writable by this user (the help desk's)",
            dir.display()
        )
    })?;
    fs::remove_file(&probe)?;
    drop(store.lock(
        Deadline::after(std::time::Duration::from_secs(2)),
        crate::state::store::Scope::Keys,
    )?);
    Ok(())
}
