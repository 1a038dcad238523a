//! The NSX product that carries the tag: one trait, one implementation per product (NSX-V in
//! `v.rs`, NSX-T's Manager API in `t.rs`, the Policy API in `policy.rs`; the last two share
//! `json_api.rs`). Each finds its VMs, lists, attaches and detaches; the
//! commands do not care which one answers. A new product is a new implementation, one variant
//! of `nsx.kind`, and one line in [`with`].

use std::collections::BTreeSet;

use crate::config::{Config, NsxKind, VcenterConfig};
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::Kept;
use crate::error::{Exit, fault};
use crate::vcenter::Vcenter;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub mod json_api;
pub mod policy;
pub mod rules;
pub mod t;
pub mod v;

use policy::NsxPolicy;
use t::NsxT;
use v::{NsxV, NsxVProfiles};

/// Takes each looked-up name with what was found for it; an error ends the look-ups.
pub type Found<'a> = dyn FnMut(String, anyhow::Result<VmRef>) -> anyhow::Result<()> + 'a;

/// Every method takes `&self`: a backend can be shared by requests made at once.
pub trait TagBackend: Send + Sync {
    /// Finds each of `names` as this backend knows VMs, calling `found` for each.
    fn find(&self, names: Vec<String>, found: &mut Found<'_>) -> anyhow::Result<()>;

    /// Which of `vms` carry the tag now.
    fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>>;

    /// Every VM that carries the tag now, as NSX sees it.
    fn all_tagged(&self) -> anyhow::Result<Vec<VmRef>>;

    /// Attaches the tag and verifies that it is there.
    fn attach(&self, vm: &VmRef) -> anyhow::Result<()>;

    /// Detaches the tag and verifies that it is gone.
    fn detach(&self, vm: &VmRef) -> anyhow::Result<()>;

    /// Checks that NSX answers, accepts the credentials and knows the tag; says what it found.
    fn probe(&self) -> anyhow::Result<String>;

    /// Gets ready beside the ticket read, before anything is asked: NSX's view of the tag (on
    /// `vms` where it is read per VM), and with `finding` the way to find VMs (the vCenter
    /// login). What fails here is kept and said where it is needed, not asked twice.
    fn prepare(&self, vms: &[VmRef], finding: bool) {
        let _ = (vms, finding);
    }

    /// The look-ups are done: ends their sessions (vCenter's logout), off the critical path.
    fn done_finding(&self) {}

    /// Warnings about how the last changes were made, for the journal.
    fn take_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// The openings (by key) that the last read found changed since otnsx made them: made
    /// again where a lease still holds them. Tags cannot be changed in place: none.
    fn tampered(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }

    /// With `nsx.verify_group`: waits until `vm` is among the group's effective members (or,
    /// `member` false, no longer is), within the run's deadline. `None` without a group.
    fn membership(&self, vm: &VmRef, member: bool) -> Option<Membership> {
        let _ = (vm, member);
        None
    }

    /// With `nsx.verify_group`, for `check`: that the group exists and includes the VMs by
    /// the configured tag; what was found. `None` without a group.
    fn check_group(&self) -> Option<anyhow::Result<String>> {
        None
    }
}

/// A VM under an access profile that is not configured (any more): its tag is not known.
pub fn unknown_profile(vm: &VmRef) -> anyhow::Error {
    let profile = vm
        .profile
        .as_deref()
        .unwrap_or(crate::config::NSX_TAG_PROFILE);
    let section = match &vm.profile {
        Some(p) => format!("[profiles.{p}]"),
        None => "[nsx] tag".to_string(),
    };
    fault(
        Exit::Config,
        format!(
            "{vm}: access profile {profile:?} is not configured, so its tag is not known; put {section} back to close it, or take its tag off the VM by hand"
        ),
    )
}

/// What the wait for a group's effective members came to.
#[derive(Debug)]
pub struct Membership {
    /// The group, as the admin names it (`default/ssh-admins`, `securitygroup-10`); for a
    /// per-agent rule, the rule's id.
    pub group: String,
    /// What was waited for: a group's members, or a rule's realized state.
    pub kind: Confirms,
    /// How long the wait took.
    pub waited: Duration,
    /// Whether the membership was confirmed; why not (the deadline, a group that does not
    /// exist, NSX's error).
    pub result: anyhow::Result<()>,
}

/// What a [`Membership`] confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirms {
    /// The VM entered (left) a group's effective members.
    Group,
    /// A per-agent rule was realized (left the realized state).
    Realized,
}

impl Membership {
    /// What was confirmed, for the summary: "in group G" / "rule R realized".
    pub fn said(&self, opening: bool) -> String {
        match (self.kind, opening) {
            (Confirms::Group, true) => format!("in group {}", self.group),
            (Confirms::Group, false) => format!("out of group {}", self.group),
            (Confirms::Realized, true) => format!("rule {} realized", self.group),
            (Confirms::Realized, false) => {
                format!("rule {} gone from the realized state", self.group)
            }
        }
    }
}

/// Reads the group's members (`members`, by the backend's VM ids) until `vm` is in it
/// (`member`) or out of it, pausing a little longer each time, until the deadline less a
/// reserve (a quarter of what is left, at most 3 s) for what the run still has to do after
/// (the ticket's note, the logouts).
pub fn await_membership(
    group: String,
    vm: &VmRef,
    member: bool,
    deadline: Deadline,
    members: impl Fn() -> anyhow::Result<BTreeSet<String>>,
) -> Membership {
    let started = Instant::now();
    let left = deadline.remaining();
    let deadline = Deadline::after(left.saturating_sub((left / 4).min(Duration::from_secs(3))));
    let mut pause = Duration::from_millis(25);
    let result = loop {
        match members() {
            Err(e) => break Err(e),
            Ok(ids) if ids.contains(&vm.id) == member => break Ok(()),
            Ok(_) => {}
        }
        if !deadline.sleep(pause) {
            let what = match member {
                true => "tag set, group membership not confirmed",
                false => "tag removed, group membership removal not confirmed",
            };
            break Err(fault(
                Exit::Unavailable,
                format!(
                    "{what}: NSX had not {} group {group} after {:.1} s, when the run's deadline ended the wait",
                    if member {
                        "put the VM into"
                    } else {
                        "taken the VM out of"
                    },
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        pause = (pause * 2).min(Duration::from_millis(500));
    };
    Membership {
        group,
        kind: Confirms::Group,
        waited: started.elapsed(),
        result,
    }
}

/// Runs `work` with the configured backend; its session, if it made one, ends when the backend
/// is dropped, whatever `work` returned. Nothing is sent before `work` asks.
/// Whether a backend may use what earlier runs remembered in the state directory (NSX-V's tag
/// id).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// A help-desk event: the remembered tag id saves a request on the agent's wait.
    Use,
    /// Every other command (reconcile, revoke, status, check) looks the tag up by name and
    /// remembers it for the events: a wrong id in the file misleads at most the events until
    /// the next reconcile, which then closes what they could not.
    Refresh,
}

pub fn with<T>(
    config: &Config,
    deadline: Deadline,
    verbose: bool,
    memory: Memory,
    work: impl FnOnce(&dyn TagBackend) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let vcenter = || ViaVcenter::new(config.vcenter.clone(), deadline, verbose);
    let backend: Box<dyn TagBackend> = match config.nsx.kind {
        NsxKind::NsxV => {
            // The tag's id is remembered only in a state directory nobody else may write: a
            // planted id would make closing detach another tag.
            let store = crate::state::store::Store::open(&config.state_dir);
            let path = store
                .unsafe_dir()
                .is_none()
                .then(|| store.tag_memory_path());
            let memory = path.map(|path| (path, memory == Memory::Use));
            let mut each = Vec::new();
            for (n, profile) in config.profiles.iter().enumerate() {
                // One vCenter login, by the first; the tag id memo is `[nsx] tag`'s.
                let vcenter = match n {
                    0 => ViaVcenter::new(config.vcenter.clone(), deadline, verbose),
                    _ => ViaVcenter::new(None, deadline, verbose),
                };
                let memory = memory.clone().filter(|_| profile.key.is_none());
                let backend = NsxV::new(
                    &config.nsx,
                    &profile.tag,
                    profile.verify.as_ref().map(|v| v.group.clone()),
                    vcenter,
                    memory,
                    deadline,
                    verbose,
                )?;
                each.push((profile.key.clone(), backend));
            }
            match each.len() {
                1 if each[0].0.is_none() => Box::new(each.remove(0).1),
                _ => Box::new(NsxVProfiles::new(each)),
            }
        }
        NsxKind::NsxT => Box::new(NsxT::new(
            &config.nsx,
            &config.profiles,
            vcenter(),
            deadline,
            verbose,
        )?),
        NsxKind::NsxPolicy => {
            let policy =
                NsxPolicy::new(&config.nsx, &config.profiles, vcenter(), deadline, verbose)?;
            match &config.source {
                // Per-agent rules instead of the tag.
                Some(source) => Box::new(rules::AgentRules::new(
                    policy,
                    source.clone(),
                    config.profiles.clone(),
                )),
                None => Box::new(policy),
            }
        }
    };
    work(backend.as_ref())
}

/// The way to vCenter, for backends that find VMs through it. Its session may be opened ahead
/// ([`ViaVcenter::open_ahead`], beside the ticket read) and is ended by [`ViaVcenter::close`]
/// (off the critical path, once the look-ups are done), or when it is dropped.
pub struct ViaVcenter {
    config: Option<VcenterConfig>,
    deadline: Deadline,
    verbose: bool,
    /// The session, or why it could not be had: made once, by whoever needs it first (the
    /// others wait for it).
    session: OnceLock<Result<Vcenter, Kept>>,
    closed: AtomicBool,
}

impl ViaVcenter {
    pub fn new(config: Option<VcenterConfig>, deadline: Deadline, verbose: bool) -> Self {
        ViaVcenter {
            config,
            deadline,
            verbose,
            session: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Logs in now (once), so that the look-ups find the session ready.
    pub fn open_ahead(&self) {
        let _ = self.session();
    }

    fn session(&self) -> anyhow::Result<&Vcenter> {
        let session = self.session.get_or_init(|| {
            let config = self.config.as_ref().ok_or_else(|| {
                Kept::of(&fault(
                    Exit::Config,
                    "no [vcenter] section: it is needed to find VMs by name",
                ))
            })?;
            Vcenter::open(config, self.deadline, self.verbose).map_err(|e| Kept::of(&e))
        });
        session.as_ref().map_err(Kept::again)
    }

    /// Logs out, once, if a session was made.
    pub fn close(&self) {
        if let Some(Ok(vc)) = self.session.get()
            && !self.closed.swap(true, Ordering::SeqCst)
        {
            vc.end();
        }
    }

    /// Finds each of `names` in vCenter, several at once, then turns vCenter's VM into the
    /// backend's with `to_backend`; `found` gets the results in the order of `names`.
    pub fn find(
        &self,
        names: Vec<String>,
        found: &mut Found<'_>,
        to_backend: impl Fn(&Vcenter, VmRef) -> anyhow::Result<VmRef> + Sync,
    ) -> anyhow::Result<()> {
        let vc = self.session()?;
        let results = crate::parallel::map(&names, crate::parallel::PER_SERVICE, |name| {
            vc.find_vm(name).and_then(|vm| to_backend(vc, vm))
        });
        for (name, vm) in names.into_iter().zip(results) {
            found(name, vm)?;
        }
        Ok(())
    }
}

impl Drop for ViaVcenter {
    fn drop(&mut self) {
        self.close();
    }
}
