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
    /// What the ticket says of the work, by the help desk's names.
    pub facts: Facts,
}

/// What a ticket says of the work it is for, as TicketGet names it: what conditions on a
/// ticket (`require`) are checked against. `None`: the ticket has none (TicketGet gives
/// `Service` and `SLA` only when they are set) or the help desk did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub queue: Option<String>,
    /// `Type`.
    pub kind: Option<String>,
    pub state: Option<String>,
    pub priority: Option<String>,
    pub service: Option<String>,
    pub sla: Option<String>,
    pub customer_id: Option<String>,
    /// The agent responsible for it, by login.
    pub responsible: Option<String>,
    pub responsible_id: Option<u64>,
    /// Each dynamic field's values as text, by the field's name: a multiselect's each, a
    /// dropdown's or a text's one; none when it is empty or null.
    pub fields: std::collections::BTreeMap<String, Vec<String>>,
}

impl Ticket {
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}
