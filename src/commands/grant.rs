//! `otnsx grant --vm NAME... [--for DURATION] [--reason TEXT]`: open VMs by hand, for a while.

use std::time::Duration;

use crate::error::Exit;
use crate::plan;
use crate::store::Holder;

use super::{Run, Subject};

pub fn run(
    run: &Run,
    names: &[String],
    duration: Option<Duration>,
    reason: Option<&str>,
) -> anyhow::Result<Exit> {
    let subject = Subject::default();
    let result = (|| {
        let lock = if run.dry_run {
            None
        } else {
            Some(run.store.lock(run.deadline)?)
        };
        let before = run.store.load()?;
        let (vms, refused) = run.resolve(names)?;
        let holder = Holder::User {
            name: run.actor.clone(),
        };
        let duration = duration.unwrap_or(run.config.policy.manual_duration);
        let after = vms.iter().fold(before.clone(), |leases, vm| {
            plan::grant(&leases, &holder, vm, run.now, duration, reason)
        });
        let heading = format!("grant by {}", run.actor);
        let (exit, _) = run.change(
            lock.as_ref(),
            &subject,
            &heading,
            &before,
            &after,
            &vms,
            &refused,
        )?;
        Ok(exit)
    })();
    if let Err(err) = &result {
        run.journal_failure(&subject, err);
    }
    result
}
