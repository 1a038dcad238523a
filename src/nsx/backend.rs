//! What every NSX backend is to the commands: the [`TagBackend`] trait, and what the backends
//! share (waiting for a group's members, the error for a profile no longer configured).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};

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

    /// What was read of VMs `ids` before the run held them (ahead, or while finding them)
    /// may be out of date: another run may have changed them since. [`TagBackend::tagged_among`]
    /// reads them again; with `keep_closed`, not those read without the tag (a run that only
    /// opens them attaches the tag either way).
    fn forget(&self, ids: &BTreeSet<String>, keep_closed: bool) {
        let _ = (ids, keep_closed);
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

    /// The openings the leases know, before [`TagBackend::all_tagged`]: a per-agent rule found
    /// under one of their ids belongs to that opening, whatever its tags were edited to.
    fn known(&self, vms: &[VmRef]) {
        let _ = vms;
    }

    /// What the last [`TagBackend::all_tagged`] found in otnsx's own place in NSX that no
    /// opening explains: with per-agent rules, rules in otnsx's security policy that are not
    /// otnsx's (or no longer say whose they are) and VM groups of otnsx's that no rule uses.
    /// Tags carry nothing of the kind: none.
    fn strays(&self) -> Vec<Stray> {
        Vec::new()
    }

    /// Removes one of [`TagBackend::strays`] and verifies that it is gone.
    fn remove_stray(&self, stray: &Stray) -> anyhow::Result<()> {
        let _ = stray;
        Ok(())
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

/// Something in otnsx's own place in NSX that no opening explains (see
/// [`TagBackend::strays`]).
#[derive(Debug, Clone)]
pub struct Stray {
    pub kind: StrayKind,
    /// Its NSX path (`/infra/domains/default/security-policies/otnsx-jit/rules/r1`).
    pub path: String,
    /// In a few words: `rule r1 (ALLOW ANY to ANY, /infra/services/SSH)`.
    pub summary: String,
    /// The object as NSX listed it (JSON), so that a person can make it again.
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrayKind {
    /// A rule that lets traffic through (ALLOW, or anything but DROP and REJECT): removed.
    Opening,
    /// A rule that only restricts (DROP, REJECT): left where it is, and reported.
    Restricting,
    /// A VM group otnsx made that no rule uses any more (it opens nothing): removed.
    Group,
}

impl Stray {
    /// Whether `reconcile` and `revoke --all` remove it.
    pub fn removed(&self) -> bool {
        self.kind != StrayKind::Restricting
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
