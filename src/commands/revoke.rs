//! `otnsx revoke --vm NAME... [--force]`: close VMs opened by hand. A VM that a locked ticket
//! still holds stays open unless `--force` is given.

use std::collections::BTreeSet;

use crate::error::Exit;
use crate::plan;
use crate::store::Holder;

use super::{Decision, Run, Subject, vms_of};

pub fn run(run: &Run, names: &[String], force: bool) -> anyhow::Result<Exit> {
    let subject = Subject::new(if force { "forced" } else { "revoke" });
    run.journaled(&subject, || {
        run.with_backend(|backend| {
        let (lock, before) = run.begin()?;
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
            run.resolve(backend, &unknown)?
        };
        vms.extend(found);
        let ids: BTreeSet<&str> = vms.iter().map(|v| v.id.as_str()).collect();
        let after = plan::release(&before, |l| {
            ids.contains(l.vm_id.as_str()) && (force || matches!(l.holder, Holder::User { .. }))
        });
        let mut decision = Decision::new(format!("revoke by {}", run.actor), before, after, vms);
            decision.refused = refused;
        let (exit, outcomes) = run.carry_out(lock.as_ref(), backend, &subject, &decision)?;
        let held = outcomes
            .iter()
            .any(|o| o.error.is_none() && !o.plan.held_after.is_empty());
        if held && !force {
            eprintln!(
                "otnsx: a ticket still holds access; `otnsx revoke --force --vm NAME` closes it anyway"
            );
        }
        Ok(exit)
        })
    })
}
