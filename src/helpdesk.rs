//! The help desk, in domain terms: what the commands ask of it, whichever help desk answers.
//! `otrs.rs` implements it for the OTRS family (OTRS 5/6, Znuny, OTOBO); a second kind of help
//! desk is a second implementation.

use std::collections::BTreeSet;

use crate::domain::ticket::Ticket;

pub trait HelpDesk {
    /// The name of the ticket field that names the VMs.
    fn vm_field(&self) -> &str;

    /// The ticket, with the VMs its field names.
    fn ticket(&mut self, id: u64) -> anyhow::Result<Ticket>;

    /// Every locked ticket the API user may read.
    fn locked_tickets(&mut self) -> anyhow::Result<BTreeSet<u64>>;

    /// Whether the ticket is locked now.
    fn is_locked(&mut self, id: u64) -> anyhow::Result<bool>;

    /// The user the ticket's history names as the last to unlock it, if it names one.
    fn unlocked_by(&mut self, id: u64) -> anyhow::Result<Option<u64>>;

    /// Adds an internal note, never visible to the customer; returns a warning worth the
    /// journal, if any.
    fn note(&mut self, id: u64, subject: &str, text: &str) -> anyhow::Result<Option<String>>;
}
