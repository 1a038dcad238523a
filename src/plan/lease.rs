//! How an event changes the leases: a ticket locked, a grant made, leases released, and what
//! is kept of a change once NSX has answered.

use std::time::Duration;

use crate::domain::vm::VmRef;
use crate::state::store::{Holder, Lease, LeaseState};
use crate::time::Timestamp;

/// A locked ticket holds exactly the VMs its field names now: a lease is added for each VM in
/// `vms` (under its profile) that the ticket does not hold yet, and the ticket's leases on VMs
/// the field no longer names (by name and profile key, in `named`) are dropped. Existing
/// leases are not extended: a ticket stays open at most `max` after it was first locked.
pub fn lock_ticket(
    leases: &[Lease],
    holder: &Holder,
    named: &[(String, Option<String>)],
    vms: &[VmRef],
    now: Timestamp,
    max: Duration,
) -> Vec<Lease> {
    let mut out: Vec<Lease> = leases
        .iter()
        .filter(|l| {
            // With per-agent rules, a VM now opened from another agent's desktop (the ticket
            // changed hands) is no longer held from the old one's.
            let moved = vms
                .iter()
                .any(|v| v.name == l.vm && v.profile == l.profile && v.agent != l.agent);
            l.holder != *holder
                || (l.state == LeaseState::Active
                    && !moved
                    && named.iter().any(|(n, p)| *n == l.vm && *p == l.profile))
        })
        .cloned()
        .collect();
    for vm in vms {
        let held = out
            .iter()
            .any(|l| l.holder == *holder && l.key() == vm.key());
        if !held {
            out.push(Lease::opening(vm, holder, now, now.plus(max), None));
        }
    }
    out
}

/// A manual grant: a new lease, or the caller's existing lease on the VM extended.
pub fn grant(
    leases: &[Lease],
    holder: &Holder,
    vm: &VmRef,
    now: Timestamp,
    duration: Duration,
    reason: Option<&str>,
) -> Vec<Lease> {
    let mut out: Vec<Lease> = leases
        .iter()
        .filter(|l| !(l.holder == *holder && l.key() == vm.key() && l.state != LeaseState::Active))
        .cloned()
        .collect();
    let expires_at = now.plus(duration);
    match out
        .iter_mut()
        .find(|l| l.holder == *holder && l.key() == vm.key())
    {
        Some(existing) => {
            existing.expires_at = existing.expires_at.max(expires_at);
            if let Some(reason) = reason {
                existing.reason = Some(reason.to_string());
            }
        }
        None => out.push(Lease::opening(vm, holder, now, expires_at, reason)),
    }
    out
}

/// All leases except those `drop` selects.
pub fn release(leases: &[Lease], drop: impl Fn(&Lease) -> bool) -> Vec<Lease> {
    leases.iter().filter(|l| !drop(l)).cloned().collect()
}

/// After a failed detach: the leases this change dropped on the VM (by its key, see
/// [`VmRef::key`]) stay, marked, so that a later run retries the detach.
pub fn keep_for_retry(before: &[Lease], after: &[Lease], key: &str) -> Vec<Lease> {
    let mut out = after.to_vec();
    for lease in before.iter().filter(|l| l.key() == key) {
        if !after
            .iter()
            .any(|a| a.key() == key && a.holder == lease.holder)
        {
            out.push(Lease {
                state: LeaseState::DetachFailed,
                ..lease.clone()
            });
        }
    }
    out
}

/// Once the tag is known to be off the VM: nothing is left to retry there.
pub fn settle(after: &[Lease], key: &str) -> Vec<Lease> {
    release(after, |l| {
        l.key() == key && l.state == LeaseState::DetachFailed
    })
}

/// After an attach that failed but may still take effect in NSX (no answer, an answer after
/// the deadline, a change that did not read back yet): the VM's leases as before, and those the
/// attach was to make kept as detaches to do (holding nothing open), so that the holder's
/// release, or the next run, closes the tag if it lands late.
pub fn unsure_open(before: &[Lease], after: &[Lease], key: &str) -> Vec<Lease> {
    let mut out = before.to_vec();
    for lease in after.iter().filter(|l| l.key() == key) {
        if !before
            .iter()
            .any(|b| b.key() == key && b.holder == lease.holder)
        {
            out.push(Lease {
                state: LeaseState::DetachFailed,
                ..lease.clone()
            });
        }
    }
    out
}
