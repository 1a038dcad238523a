//! `otnsx revoke --vm NAME... [--force]`: close VMs opened by hand. A VM that a locked ticket
//! still holds stays open unless `--force` is given.

use std::collections::BTreeSet;

use crate::error::Exit;
use crate::plan;
use crate::store::Holder;

use super::{Run, Subject, vms_of};

pub fn run(run: &Run, names: &[String], force: bool) -> anyhow::Result<Exit> {
    let subject = Subject {
        note: force.then_some("forced"),
        ..Subject::default()
    };
    let result = (|| {
        let lock = if run.dry_run {
            None
        } else {
            Some(run.store.lock(run.deadline)?)
        };
        let before = run.store.load()?;
        // A VM the leases know needs no vCenter to be closed.
        let mut vms = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            let known = vms_of(before.iter().filter(|l| &l.vm == name));
            if known.is_empty() {
                unknown.push(name.clone());
            }
            vms.extend(known);
        }
        let (found, refused) = if unknown.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            run.resolve(&unknown)?
        };
        vms.extend(found);
        let ids: BTreeSet<&str> = vms.iter().map(|v| v.id.as_str()).collect();
        let after = plan::release(&before, |l| {
            ids.contains(l.vm_id.as_str()) && (force || matches!(l.holder, Holder::User { .. }))
        });
        let heading = format!("revoke by {}", run.actor);
        let (exit, outcomes) = run.change(
            lock.as_ref(),
            &subject,
            &heading,
            &before,
            &after,
            &vms,
            &refused,
        )?;
        let held = outcomes
            .iter()
            .any(|o| o.error.is_none() && !o.plan.held_after.is_empty());
        if held && !force {
            eprintln!(
                "otnsx: a ticket still holds access; `otnsx revoke --force --vm NAME` closes it anyway"
            );
        }
        Ok(exit)
    })();
    if let Err(err) = &result {
        run.journal_failure(&subject, err);
    }
    result
}
