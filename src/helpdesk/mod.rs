//! The help desk, in domain terms: what the commands ask of it, whichever help desk answers.
//! `otrs/` implements it for the OTRS family (OTRS 5/6, Znuny, OTOBO); a second kind of help
//! desk is a second implementation beside it.

use std::collections::BTreeSet;

pub mod otrs;

use crate::domain::ticket::Ticket;

/// Every method takes `&self`: a client can be shared by requests made at once.
pub trait HelpDesk: Send + Sync {
    /// The name of the ticket field that names the VMs.
    fn vm_field(&self) -> &str;

    /// The ticket, with the VMs its field names.
    fn ticket(&self, id: u64) -> anyhow::Result<Ticket>;

    /// Every locked ticket the API user may read.
    fn locked_tickets(&self) -> anyhow::Result<BTreeSet<u64>>;

    /// Whether the ticket is locked now.
    fn is_locked(&self, id: u64) -> anyhow::Result<bool>;

    /// The user the ticket's history names as the last to unlock it, if it names one.
    fn unlocked_by(&self, id: u64) -> anyhow::Result<Option<u64>>;

    /// The user the ticket's history names as the last to lock it (a dispatcher who locks a
    /// ticket for another agent, not its new owner), if it names one.
    fn locked_by(&self, id: u64) -> anyhow::Result<Option<u64>>;

    /// Adds an internal note, never visible to the customer; returns a warning worth the
    /// journal, if any.
    fn note(&self, id: u64, subject: &str, text: &str) -> anyhow::Result<Option<String>>;
}
