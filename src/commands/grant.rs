//! `otnsx grant --vm NAME... [--for DURATION] [--reason TEXT] [--profile NAME]`: open VMs by
//! hand, for a while, under an access profile.

use std::time::Duration;

use crate::domain::cause::Cause;
use crate::error::{Exit, fault};
use crate::plan;
use crate::state::recorder::Subject;
use crate::state::store::Holder;
use crate::time::format_duration;

use super::change::Decision;
use super::run::Run;

pub fn run(
    run: &Run,
    names: &[String],
    duration: Option<Duration>,
    reason: Option<&str>,
    profile: Option<&str>,
) -> anyhow::Result<Exit> {
    let subject = Subject::new(Cause::Grant);
    run.journaled(&subject, || {
        let max = run.config.policy.max_grant;
        let duration = duration.unwrap_or(run.config.policy.manual_duration);
        if duration > max {
            return Err(fault(
                Exit::DataErr,
                format!(
                    "--for {} is longer than policy.max_grant ({}); nothing was opened",
                    format_duration(duration),
                    format_duration(max)
                ),
            ));
        }
        run.with_backend(|backend| {
            let (lock, mut before) =
                run.for_opening(run.begin(crate::state::store::Scope::Keys)?)?;
            let (wants, mut refused) = run.wants(names, profile);
            let (_, vms, not_found) = run.targets(backend, &wants)?;
            refused.extend(not_found);
            // Per-agent rules: from the desktop of the user who grants.
            let (vms, no_desktop) = run.opened_by_agent(vms, Some(&run.recorder.actor()));
            refused.extend(no_desktop);
            // Locked before anything is decided about them; their leases as they are then.
            let ids = vms.iter().map(|v| v.id.clone());
            if let Some(fresh) = run.hold_vms(lock.as_ref(), backend, ids, false)? {
                before = fresh;
            }
            let holder = Holder::User {
                name: run.recorder.actor(),
            };
            let after = vms.iter().fold(before.clone(), |leases, vm| {
                plan::grant(&leases, &holder, vm, run.clock.decides_at, duration, reason)
            });
            let mut decision = Decision::new(
                format!("grant by {}", run.recorder.actor()),
                before,
                after,
                vms,
            );
            decision.refused = refused;
            // Asked for again: reopens a VM closed in NSX since the last grant.
            decision.renewed = decision
                .touched
                .iter()
                .map(|vm| (vm.key(), holder.clone()))
                .collect();
            let outcomes = run.carry_out(lock.as_ref(), backend, &subject, &decision)?;
            Ok(run.report(&decision, &outcomes))
        })
    })
}
