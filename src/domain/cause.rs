//! Why access changed, and how a step ended: the journal's `cause` and `result`, as enums, so
//! that a typo fails to compile instead of writing a line nobody can read back.

use serde::{Deserialize, Serialize};

/// Why a journal entry was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A help-desk event before the ticket was read (its lock state decides lock or unlock).
    Event,
    /// The ticket was locked.
    Lock,
    /// The ticket was unlocked.
    Unlock,
    /// `otnsx grant`.
    Grant,
    /// `otnsx revoke`.
    Revoke,
    /// `otnsx revoke --force`.
    Forced,
    /// `otnsx revoke --all`.
    Emergency,
    /// The lease expired.
    Expiry,
    /// `otnsx reconcile` (a ticket unlocked behind otnsx's back).
    Reconcile,
    /// NSX disagreed with the leases.
    Drift,
    /// A detach that failed before was retried.
    Retry,
    /// Policy no longer allows the VM.
    Policy,
    /// Something about the configuration the audit must see (TLS verification off).
    Config,
    /// A lease read from disk claimed a longer life than its kind allows.
    Clip,
    /// The event's ticket could not be read (or its answer not trusted): what it held was
    /// closed.
    FailClosed,
    /// The journal itself (its rotation).
    Journal,
}

impl Cause {
    /// The word the journal writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Event => "event",
            Cause::Lock => "lock",
            Cause::Unlock => "unlock",
            Cause::Grant => "grant",
            Cause::Revoke => "revoke",
            Cause::Forced => "forced",
            Cause::Emergency => "emergency",
            Cause::Expiry => "expiry",
            Cause::Reconcile => "reconcile",
            Cause::Drift => "drift",
            Cause::Retry => "retry",
            Cause::Policy => "policy",
            Cause::Config => "config",
            Cause::Clip => "clip",
            Cause::FailClosed => "fail_closed",
            Cause::Journal => "journal",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the step a journal entry records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryResult {
    Ok,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_words_round_trip() {
        for cause in [
            Cause::Event,
            Cause::Lock,
            Cause::Unlock,
            Cause::Grant,
            Cause::Revoke,
            Cause::Forced,
            Cause::Emergency,
            Cause::Expiry,
            Cause::Reconcile,
            Cause::Drift,
            Cause::Retry,
            Cause::Policy,
            Cause::Config,
            Cause::Clip,
            Cause::FailClosed,
        ] {
            let json = serde_json::to_string(&cause).expect("json");
            assert_eq!(json, format!("\"{}\"", cause.as_str()));
            assert_eq!(serde_json::from_str::<Cause>(&json).expect("back"), cause);
        }
        assert_eq!(
            serde_json::to_string(&EntryResult::Failed).expect("json"),
            "\"failed\""
        );
    }
}
