//! A help-desk ticket, in the terms otnsx decides by.

/// What otnsx needs of a ticket, whichever help desk it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: u64,
    pub number: String,
    /// Whether the ticket is locked: only a locked ticket holds access.
    pub locked: bool,
    /// The help desk's own word for its lock state (`lock`, `unlock`, `tmp_lock`), for messages.
    pub lock: String,
    /// The agent who owns it, by login.
    pub owner: Option<String>,
    /// The owner's user ID (the help desk's `OwnerID`), when it gives one.
    pub owner_id: Option<u64>,
    /// The VM names the field holds, trimmed, in order, without duplicates. Unchecked; with
    /// access profiles an entry may name one (`web01:ssh`).
    pub vms: Vec<String>,
    /// The access profile the profile field (`otrs.profile_field`) names, if it is set.
    pub profile: Option<String>,
    /// The help desk's generation, as its articles tell, when they were read (OTRS family: 5,
    /// or 6 for 6 and later).
    pub generation: Option<u32>,
}

impl Ticket {
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}
