//! A journal entry: one decision (who, what, which VM, why, with what result) as the journal
//! file, the database's journal table and syslog record it.

use serde::{Deserialize, Serialize};

use crate::domain::cause::{Cause, EntryResult};
use crate::state::lease::Holder;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Grant,
    Revoke,
    Noop,
    Refused,
    Error,
    /// A note was posted to the ticket (or failed to be).
    Note,
    /// Something about the run itself that the audit must see (TLS verification off).
    Warning,
    /// The journal file was rotated: the first entry of the new file, continuing the chain.
    Rotate,
}

impl Action {
    /// The word the journal writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Grant => "grant",
            Action::Revoke => "revoke",
            Action::Noop => "noop",
            Action::Refused => "refused",
            Action::Error => "error",
            Action::Note => "note",
            Action::Warning => "warning",
            Action::Rotate => "rotate",
        }
    }
}

/// One journal line, as written and as `history` reads it back. What a reader may not find in
/// an older line has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Unique: the run (process id and start time) and a count within it.
    #[serde(default)]
    pub id: String,
    pub ts: Timestamp,
    pub action: Action,
    #[serde(default)]
    pub ticket_number: Option<String>,
    #[serde(default)]
    pub ticket_id: Option<u64>,
    #[serde(default)]
    pub vm: Option<String>,
    #[serde(default)]
    pub vm_id: Option<String>,
    /// The access profile the VM was opened or closed under, when it is not that of
    /// `[nsx] tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// With per-agent rules: the agent whose desktop the opening is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub result: EntryResult,
    pub detail: String,
    /// `helpdesk` (with the ticket's owner) or the OS user who ran the command.
    pub actor: String,
    pub cause: Cause,
    /// The holders whose access to the VM began with this entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gained: Vec<Holder>,
    /// The holders whose access to the VM ended with this entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<Holder>,
    /// The reason given with a manual grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who had opened the access this entry ends (from the leases): the locking agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opened_by: Vec<String>,
    /// With `nsx.verify_group`: how the wait for the group's effective members went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupWait>,
}

/// How long NSX took to put a VM into (or take it out of) the verified group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupWait {
    pub group: String,
    pub confirmed: bool,
    pub waited_ms: u64,
}

impl Entry {
    /// The entry as one JSON line, C1 and bidi controls escaped.
    pub fn to_json(&self) -> String {
        // An entry is strings, numbers and lists of them: encoding cannot fail.
        crate::output::json(serde_json::to_string(self).unwrap_or_default())
    }
}
