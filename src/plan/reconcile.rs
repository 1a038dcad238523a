//! Reconcile's decision over the leases and what NSX shows.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::domain::cause::Cause;
use crate::domain::vm::VmRef;
use crate::state::store::{Holder, Lease, LeaseState};
use crate::time::Timestamp;

/// What `reconcile` decides from the leases alone: the leases to keep, why each VM changes (by
/// key),
/// and the tickets whose access ended by expiry (they are told so in a note).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub after: Vec<Lease>,
    pub causes: BTreeMap<String, Cause>,
    pub expired_tickets: BTreeSet<Holder>,
}

/// Reconcile's decision over the leases: a lease that expired, whose ticket is no longer
/// locked (`unlocked`), or whose VM policy no longer allows (`refused`) is dropped, with the
/// cause that explains the VM's change (expiry first, then the ticket, then policy); a detach
/// still to retry is marked as such.
pub fn reconcile(
    before: &[Lease],
    unlocked: &BTreeSet<u64>,
    now: Timestamp,
    refused: impl Fn(&str) -> bool,
) -> Reconciled {
    let mut out = Reconciled::default();
    for lease in before {
        let active = lease.state == LeaseState::Active;
        let ticket_gone =
            matches!(lease.holder, Holder::Ticket { id, .. } if unlocked.contains(&id));
        let expired = active && lease.expires_at <= now;
        let denied = active && refused(&lease.vm);
        let id = lease.key();
        if expired {
            out.causes.insert(id, Cause::Expiry);
            if matches!(lease.holder, Holder::Ticket { .. }) {
                out.expired_tickets.insert(lease.holder.clone());
            }
        } else if ticket_gone {
            out.causes.entry(id).or_insert(Cause::Reconcile);
        } else if denied {
            out.causes.insert(id, Cause::Policy);
        } else if lease.state == LeaseState::DetachFailed {
            out.causes.entry(id).or_insert(Cause::Retry);
        }
        if !(expired || ticket_gone || denied) {
            out.after.push(lease.clone());
        }
    }
    out
}

/// Drift: for each VM in `touched`, whether its tag disagrees with its live leases in `after`
/// (the tag without a lease, or a lease without the tag). Marks those VMs `drift` in `causes`
/// unless they already have a cause.
pub fn mark_drift(
    causes: &mut BTreeMap<String, Cause>,
    touched: &[VmRef],
    after: &[Lease],
    tagged: &BTreeSet<String>,
    now: Timestamp,
) {
    let live: HashSet<String> = after
        .iter()
        .filter(|l| l.is_live(now))
        .map(Lease::key)
        .collect();
    for vm in touched {
        let key = vm.key();
        if live.contains(&key) != tagged.contains(&key) {
            causes.entry(key).or_insert(Cause::Drift);
        }
    }
}
