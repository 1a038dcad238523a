//! Deciding, apart from acting: how the leases change for an event, and from the leases and
//! what NSX reports, whether each VM's tag must be attached, detached or left alone. Pure
//! functions over plain values; the commands fetch the inputs and apply the result.
//!
//! The rule: a VM carries the tag exactly while at least one live lease holds it.
//!
//! Here: the tag change per VM. `lease.rs`: how an event (a lock, a grant, a release) changes
//! the leases, and what is kept of a change once NSX has answered. `reconcile.rs`: reconcile's
//! decision.

use std::collections::{BTreeSet, HashSet};

use crate::domain::vm::VmRef;
use crate::state::store::{Holder, Lease, LeaseState};
use crate::time::Timestamp;

mod lease;
mod reconcile;

pub use lease::{grant, keep_for_retry, lock_ticket, release, settle, unsure_open};
pub use reconcile::{Reconciled, mark_drift, reconcile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagChange {
    Attach,
    Detach,
    Keep,
}

/// What happens to one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    pub vm: VmRef,
    pub change: TagChange,
    /// Whether NSX reported the tag on the VM before the change.
    pub tagged: bool,
    /// Who held the VM before: every lease, expired or waiting for its detach (access that this
    /// change ends, ends now).
    pub held_before: Vec<Holder>,
    /// Who holds the VM after: the live leases.
    pub held_after: Vec<Holder>,
}

/// The holders of the live leases on a VM (by its key, see [`VmRef::key`]).
pub fn live_holders(leases: &[Lease], key: &str, now: Timestamp) -> Vec<Holder> {
    sorted(leases.iter().filter(|l| l.key() == key && l.is_live(now)))
}

/// The holders of the active leases on a VM, expired or not.
fn holders(leases: &[Lease], key: &str) -> Vec<Holder> {
    sorted(
        leases
            .iter()
            .filter(|l| l.key() == key && l.state == LeaseState::Active),
    )
}

fn sorted<'a>(leases: impl Iterator<Item = &'a Lease>) -> Vec<Holder> {
    let mut holders: Vec<Holder> = leases.map(|l| l.holder.clone()).collect();
    holders.sort();
    holders.dedup();
    holders
}

/// The VMs a change concerns: those in `touched`, those whose leases differ between `before`
/// and `after`, and those with a detach still to retry.
pub fn concerned_vms(before: &[Lease], after: &[Lease], touched: &[VmRef]) -> Vec<VmRef> {
    let before_set: HashSet<&Lease> = before.iter().collect();
    let after_set: HashSet<&Lease> = after.iter().collect();
    let changed = before
        .iter()
        .filter(|l| !after_set.contains(l))
        .chain(
            after
                .iter()
                .filter(|l| !before_set.contains(l) || l.state == LeaseState::DetachFailed),
        )
        .map(Lease::vm_ref);
    let mut seen: HashSet<String> = HashSet::new();
    touched
        .iter()
        .cloned()
        .chain(changed)
        .filter(|vm| seen.insert(vm.key()))
        .collect()
}

/// Whose access to a VM began and ended between two sets of leases: the active holders of
/// `previous` that hold no live lease in `current` lost it; the live holders of `current` that
/// held nothing active in `previous` gained it.
pub fn change_of(
    previous: &[Lease],
    current: &[Lease],
    key: &str,
    now: Timestamp,
) -> (Vec<Holder>, Vec<Holder>) {
    let had = holders(previous, key);
    let has = live_holders(current, key, now);
    let gained = has.iter().filter(|h| !had.contains(h)).cloned().collect();
    let lost = had.iter().filter(|h| !has.contains(h)).cloned().collect();
    (gained, lost)
}

/// Whether two sets of leases hold the same leases on a VM (by its key).
pub fn same_vm(a: &[Lease], b: &[Lease], key: &str) -> bool {
    let of = |leases: &[Lease]| -> Vec<Lease> {
        let mut mine: Vec<Lease> = leases.iter().filter(|l| l.key() == key).cloned().collect();
        mine.sort_by(|x, y| (&x.holder, x.state as u8).cmp(&(&y.holder, y.state as u8)));
        mine
    };
    of(a) == of(b)
}

/// otnsx never reopens what is closed: the live leases of `after` whose VM is not open in NSX
/// (`tagged`, by key, among the VMs NSX was asked about: `asked`, or all when `None`) and
/// that held it before the change end, unless the change opens them
/// again on purpose (`renewed`: a grant asked for again, by key and holder). A close whose
/// record was lost (on this node or another), a tag taken off by hand: the VM stays closed,
/// and the lease that no longer holds anything goes. A lease the change makes anew opens as
/// usual. Returns the leases kept and the keys of those that ended.
pub fn end_closed(
    before: &[Lease],
    after: &[Lease],
    (tagged, asked): (&BTreeSet<String>, Option<&BTreeSet<String>>),
    renewed: &[(String, Holder)],
    now: Timestamp,
) -> (Vec<Lease>, BTreeSet<String>) {
    let held: HashSet<(String, &Holder)> = before
        .iter()
        .filter(|l| l.is_live(now))
        .map(|l| (l.key(), &l.holder))
        .collect();
    let mut ended = BTreeSet::new();
    let kept = after
        .iter()
        .filter(|l| {
            let key = l.key();
            let closed = l.is_live(now)
                && asked.is_none_or(|asked| asked.contains(&key))
                && !tagged.contains(&key)
                && held.contains(&(key.clone(), &l.holder))
                && !renewed.iter().any(|(k, h)| *k == key && *h == l.holder);
            if closed {
                ended.insert(key);
            }
            !closed
        })
        .cloned()
        .collect();
    (kept, ended)
}

/// The tag change for each VM the change concerns (see [`concerned_vms`]), given which VMs
/// carry their profile's tag now (`tagged`, by key).
#[cfg(test)]
pub fn plan(
    before: &[Lease],
    after: &[Lease],
    touched: &[VmRef],
    tagged: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<VmPlan> {
    plan_repairing(before, after, touched, tagged, &BTreeSet::new(), now)
}

/// [`plan`], where the openings of `tampered` (by key) exist but were changed since otnsx
/// made them (a per-agent rule edited by hand): one that stays held is made again (an
/// attach), one that no lease holds goes (a detach) as any other.
pub fn plan_repairing(
    before: &[Lease],
    after: &[Lease],
    touched: &[VmRef],
    tagged: &BTreeSet<String>,
    tampered: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<VmPlan> {
    // By VM, so that each VM costs its own leases, not the whole store.
    fn group(leases: &[Lease]) -> std::collections::HashMap<String, Vec<Lease>> {
        let mut by_vm: std::collections::HashMap<String, Vec<Lease>> = Default::default();
        for lease in leases {
            by_vm.entry(lease.key()).or_default().push(lease.clone());
        }
        by_vm
    }
    let (before_of, after_of) = (group(before), group(after));
    let of = |by_vm: &std::collections::HashMap<String, Vec<Lease>>, key: &str| {
        by_vm.get(key).cloned().unwrap_or_default()
    };
    concerned_vms(before, after, touched)
        .into_iter()
        .map(|vm| {
            let key = vm.key();
            let (before, after) = (of(&before_of, &key), of(&after_of, &key));
            let held_after = live_holders(&after, &key, now);
            let is_tagged = tagged.contains(&key);
            let intact = is_tagged && !tampered.contains(&key);
            let change = match (!held_after.is_empty(), is_tagged, intact) {
                (true, _, false) => TagChange::Attach,
                (false, true, _) => TagChange::Detach,
                _ => TagChange::Keep,
            };
            VmPlan {
                held_before: holders(&before, &key),
                held_after,
                tagged: is_tagged,
                change,
                vm,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cause::Cause;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const NOW: Timestamp = Timestamp(1_795_448_203);
    const HOUR: Duration = Duration::from_secs(3600);

    fn vm(n: u32) -> VmRef {
        VmRef::new(format!("web{n:02}"), format!("vm-{n}"))
    }

    fn ticket(id: u64) -> Holder {
        Holder::Ticket {
            id,
            number: format!("20261123100000{id}"),
        }
    }

    fn names(vms: &[VmRef]) -> Vec<(String, Option<String>)> {
        vms.iter()
            .map(|v| (v.name.clone(), v.profile.clone()))
            .collect()
    }

    fn tagged(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn locking_attaches_and_a_duplicate_event_changes_nothing() {
        let vms = [vm(1)];
        let after = lock_ticket(&[], &ticket(2), &names(&vms), &vms, NOW, 8 * HOUR);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].expires_at, NOW.plus(8 * HOUR));
        let p = plan(&[], &after, &vms, &tagged(&[]), NOW);
        assert_eq!(p[0].change, TagChange::Attach);

        let later = Timestamp(NOW.0 + 60);
        let again = lock_ticket(&after, &ticket(2), &names(&vms), &vms, later, 8 * HOUR);
        assert_eq!(again, after, "no second lease, no extension");
        let p = plan(&after, &again, &vms, &tagged(&["vm-1"]), later);
        assert_eq!(p[0].change, TagChange::Keep);
    }

    #[test]
    fn two_tickets_share_a_vm() {
        let vms = [vm(1)];
        let one = lock_ticket(&[], &ticket(2), &names(&vms), &vms, NOW, HOUR);
        let both = lock_ticket(&one, &ticket(3), &names(&vms), &vms, NOW, HOUR);
        let p = plan(&one, &both, &vms, &tagged(&["vm-1"]), NOW);
        assert_eq!(p[0].change, TagChange::Keep);

        let rest = release(&both, |l| l.holder == ticket(2));
        let p = plan(&both, &rest, &vms, &tagged(&["vm-1"]), NOW);
        assert_eq!(p[0].change, TagChange::Keep);
        assert_eq!(p[0].held_after, vec![ticket(3)]);

        let none = release(&rest, |l| l.holder == ticket(3));
        let p = plan(&rest, &none, &vms, &tagged(&["vm-1"]), NOW);
        assert_eq!(p[0].change, TagChange::Detach);
    }

    #[test]
    fn a_relock_follows_the_edited_field() {
        let first = [vm(1)];
        let leases = lock_ticket(&[], &ticket(2), &names(&first), &first, NOW, HOUR);
        let second = [vm(2)];
        let after = lock_ticket(&leases, &ticket(2), &names(&second), &second, NOW, HOUR);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].vm_id, "vm-2");
        let p = plan(&leases, &after, &[vm(1), vm(2)], &tagged(&["vm-1"]), NOW);
        assert_eq!(p[0].change, TagChange::Detach);
        assert_eq!(p[1].change, TagChange::Attach);
    }

    #[test]
    fn an_expired_ticket_lease_is_not_renewed_by_a_repeated_event() {
        let vms = [vm(1)];
        let leases = lock_ticket(&[], &ticket(2), &names(&vms), &vms, NOW, HOUR);
        let late = NOW.plus(2 * HOUR);
        let after = lock_ticket(&leases, &ticket(2), &names(&vms), &vms, late, HOUR);
        let p = plan(&leases, &after, &vms, &tagged(&["vm-1"]), late);
        assert_eq!(p[0].change, TagChange::Detach);
    }

    #[test]
    fn failures_keep_the_leases_honest() {
        let vms = [vm(1)];
        let after = lock_ticket(&[], &ticket(2), &names(&vms), &vms, NOW, HOUR);
        let released = release(&after, |l| l.holder == ticket(2));
        let kept = keep_for_retry(&after, &released, "vm-1");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].state, LeaseState::DetachFailed);
        // The next run touching anything retries it, and a success clears it.
        let p = plan(&kept, &kept, &[], &tagged(&["vm-1"]), NOW);
        assert_eq!(p[0].change, TagChange::Detach);
        assert_eq!(settle(&kept, "vm-1"), vec![]);
        // Locking the ticket again replaces the marked lease with a live one.
        let relocked = lock_ticket(&kept, &ticket(2), &names(&vms), &vms, NOW, HOUR);
        assert_eq!(relocked.len(), 1);
        assert_eq!(relocked[0].state, LeaseState::Active);
    }

    #[test]
    fn reconcile_drops_what_expired_was_unlocked_or_is_denied_and_says_why() {
        let vms = [vm(1), vm(2), vm(3), vm(4)];
        let mut leases = lock_ticket(&[], &ticket(2), &names(&vms[..1]), &vms[..1], NOW, HOUR);
        leases = lock_ticket(
            &leases,
            &ticket(3),
            &names(&vms[1..2]),
            &vms[1..2],
            NOW,
            3 * HOUR,
        );
        leases = lock_ticket(
            &leases,
            &ticket(4),
            &names(&vms[2..3]),
            &vms[2..3],
            NOW,
            3 * HOUR,
        );
        let alice = Holder::User {
            name: "alice".into(),
        };
        leases = grant(&leases, &alice, &vms[3], NOW, 3 * HOUR, None);
        let later = NOW.plus(2 * HOUR);
        let unlocked: BTreeSet<u64> = [3].into_iter().collect();
        let r = reconcile(&leases, &unlocked, later, |name| name == "web04");
        // Ticket 2 expired, ticket 3 was unlocked, web04 is denied; ticket 4 stays.
        assert_eq!(r.after.len(), 1);
        assert_eq!(r.after[0].holder, ticket(4));
        assert_eq!(r.causes["vm-1"], Cause::Expiry);
        assert_eq!(r.causes["vm-2"], Cause::Reconcile);
        assert_eq!(r.causes["vm-4"], Cause::Policy);
        assert!(!r.causes.contains_key("vm-3"));
        assert_eq!(r.expired_tickets, [ticket(2)].into_iter().collect());
    }

    #[test]
    fn reconcile_retries_a_pending_detach_and_drift_is_marked_both_ways() {
        let vms = [vm(1)];
        let leases = lock_ticket(&[], &ticket(2), &names(&vms), &vms, NOW, HOUR);
        let pending = keep_for_retry(&leases, &[], "vm-1");
        let r = reconcile(&pending, &BTreeSet::new(), NOW, |_| false);
        assert_eq!(r.causes["vm-1"], Cause::Retry);
        assert_eq!(r.after, pending, "kept: the detach is retried");

        let mut causes = BTreeMap::new();
        let touched = [vm(1), vm(2)];
        // web01 has a live lease but no tag; web02 the tag but no lease.
        mark_drift(&mut causes, &touched, &leases, &tagged(&["vm-2"]), NOW);
        assert_eq!(causes["vm-1"], Cause::Drift);
        assert_eq!(causes["vm-2"], Cause::Drift);
        let mut causes = BTreeMap::new();
        mark_drift(&mut causes, &touched, &leases, &tagged(&["vm-1"]), NOW);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn one_vm_under_two_profiles_is_two_targets() {
        let ssh = VmRef {
            profile: Some("ssh".into()),
            ..vm(1)
        };
        let rdp = VmRef {
            profile: Some("rdp".into()),
            ..vm(1)
        };
        let both = lock_ticket(
            &[],
            &ticket(2),
            &names(&[ssh.clone(), rdp.clone()]),
            &[ssh.clone(), rdp.clone()],
            NOW,
            HOUR,
        );
        assert_eq!(both.len(), 2, "a lease per profile");
        assert_eq!(both[0].key(), "vm-1#ssh");
        // Only the ssh tag is on: rdp must be attached, ssh kept.
        let p = plan(
            &[],
            &both,
            &[ssh.clone(), rdp.clone()],
            &tagged(&["vm-1#ssh"]),
            NOW,
        );
        assert_eq!(
            p.iter().map(|p| (p.vm.key(), p.change)).collect::<Vec<_>>(),
            [
                ("vm-1#ssh".to_string(), TagChange::Keep),
                ("vm-1#rdp".to_string(), TagChange::Attach)
            ]
        );
        // Releasing the rdp lease detaches rdp alone.
        let rest = release(&both, |l| l.profile.as_deref() == Some("rdp"));
        let p = plan(&both, &rest, &[], &tagged(&["vm-1#ssh", "vm-1#rdp"]), NOW);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].vm.key(), p[0].change),
            ("vm-1#rdp".into(), TagChange::Detach)
        );
        assert_eq!(p[0].vm.to_string(), "web01 (vm-1) [rdp]");
    }

    #[test]
    fn a_tampered_opening_is_made_again_while_held_and_removed_when_not() {
        let vms = [vm(1)];
        let held = lock_ticket(&[], &ticket(2), &names(&vms), &vms, NOW, HOUR);
        let tampered = tagged(&["vm-1"]);
        let p = plan_repairing(&held, &held, &vms, &tagged(&["vm-1"]), &tampered, NOW);
        assert_eq!(p[0].change, TagChange::Attach, "put back as otnsx made it");
        let p = plan_repairing(&held, &[], &vms, &tagged(&["vm-1"]), &tampered, NOW);
        assert_eq!(p[0].change, TagChange::Detach);
    }

    #[test]
    fn a_grant_extends_the_callers_lease() {
        let alice = Holder::User {
            name: "alice".into(),
        };
        let one = grant(&[], &alice, &vm(1), NOW, HOUR, Some("patching"));
        let two = grant(&one, &alice, &vm(1), NOW.plus(HOUR / 2), HOUR, None);
        assert_eq!(two.len(), 1);
        assert_eq!(two[0].expires_at, NOW.plus(HOUR + HOUR / 2));
        assert_eq!(two[0].reason.as_deref(), Some("patching"));
        assert_eq!(two[0].granted_at, NOW);
    }
}
