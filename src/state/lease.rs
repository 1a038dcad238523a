//! A lease: who holds which VM open under which profile, until when, and what a lease must
//! be to be read back. The lease store (`store.rs`) and the PostgreSQL backend (`pg.rs`) keep
//! them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::vm::VmRef;
use crate::time::Timestamp;

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Holder {
    Ticket { id: u64, number: String },
    User { name: String },
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Ticket { number, .. } => write!(f, "ticket {number}"),
            Holder::User { name } => write!(f, "user {name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Holds the VM open until it expires.
    #[default]
    Active,
    /// A detach still to do: released, but detaching the tag failed; or an attach that failed
    /// but that NSX may still apply late. Holds nothing open; kept so that the holder's release
    /// or the next run detaches the tag if it is there.
    DetachFailed,
}

/// "`holder` holds VM `vm` open until `expires_at`."
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub vm: String,
    pub vm_id: String,
    /// The access profile the lease opens the VM under; `None`: the profile of `[nsx] tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// With per-agent rules: the agent whose desktop the lease opens the VM to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub holder: Holder,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "is_active")]
    pub state: LeaseState,
    /// Who opened it: the locking agent (`helpdesk:agent1 (user-id 2)`) or the OS user. Kept so that the
    /// journal can name who held access when it ends, whoever the help desk says owns the
    /// ticket by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

fn is_active(state: &LeaseState) -> bool {
    *state == LeaseState::Active
}

impl Lease {
    /// A new active lease: `holder` holds `vm` (under its profile, from its agent's desktop)
    /// from `granted_at` until `expires_at`.
    pub fn opening(
        vm: &VmRef,
        holder: &Holder,
        granted_at: Timestamp,
        expires_at: Timestamp,
        reason: Option<&str>,
    ) -> Lease {
        Lease {
            vm: vm.name.clone(),
            vm_id: vm.id.clone(),
            profile: vm.profile.clone(),
            agent: vm.agent.clone(),
            holder: holder.clone(),
            granted_at,
            expires_at,
            reason: reason.map(str::to_string),
            state: LeaseState::Active,
            by: None,
        }
    }

    pub fn vm_ref(&self) -> VmRef {
        VmRef {
            name: self.vm.clone(),
            id: self.vm_id.clone(),
            profile: self.profile.clone(),
            agent: self.agent.clone(),
        }
    }

    /// What plans match this lease by: its VM under its profile.
    pub fn key(&self) -> String {
        crate::domain::vm::target_key(&self.vm_id, self.profile.as_deref(), self.agent.as_deref())
    }

    /// Whether this lease holds its VM open at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.state == LeaseState::Active && self.expires_at > now
    }

    /// Whether the lease is one otnsx could have written: names, ids and texts within their
    /// limits, without control characters, and granted before it expires.
    pub(super) fn check(&self) -> Result<(), String> {
        let fits = |text: &str, max: usize| {
            !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
        };
        // The rules intake applies (config::is_ticket_number, config::is_login): what otnsx
        // takes it can read back.
        let holder_ok = match &self.holder {
            Holder::Ticket { number, .. } => crate::config::is_ticket_number(number),
            Holder::User { name } => crate::config::is_login(name),
        };
        let ok = fits(&self.vm, crate::config::MAX_VM_NAME)
            && is_vm_id(&self.vm_id)
            && self
                .profile
                .as_deref()
                .is_none_or(crate::config::is_profile_name)
            && self.agent.as_deref().is_none_or(crate::config::is_login)
            && holder_ok
            && self
                .reason
                .as_deref()
                .is_none_or(|r| r.chars().count() <= MAX_REASON)
            && self.granted_at <= self.expires_at;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "a lease on {} breaks the rules otnsx writes by",
                crate::escape::shorten(&self.vm)
            ))
        }
    }

    /// The lease with its expiry brought within `max` of when it was granted (or of `now`, if
    /// it claims to be granted later than clocks can disagree): a lease read from disk never
    /// lives longer than its kind allows. `None` when it is within already.
    pub fn clipped(&self, max: Duration, now: Timestamp) -> Option<Lease> {
        // Another run (another node) may have stamped its grant a little after this one's
        // clock: that is not a lease from the future.
        let latest = now.plus(Duration::from_secs(300));
        let limit = self.granted_at.min(latest).plus(max);
        (self.expires_at > limit).then(|| Lease {
            expires_at: limit,
            ..self.clone()
        })
    }
}

/// Whether `id` is a VM id the store holds and reads back: 1 to 128 characters, no control
/// character, no white space, no `#` (the separator of a lease's key). What NSX or vCenter
/// returns is checked by it before it becomes a lease.
pub fn is_vm_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= 128
        && !id
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '#')
}

/// The longest reason a manual grant may carry, in characters.
pub const MAX_REASON: usize = 500;
