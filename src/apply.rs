//! The NSX step of a decision: each VM's tag attached or detached as its plan says, and nothing
//! else. This step touches neither the leases nor the journal: what came of each change is
//! recorded afterwards, one VM after the other, by the command (`commands/change.rs`). So the
//! requests of this step are free to be made at once.

use crate::nsx::{Membership, TagBackend};
use crate::plan::{TagChange, VmPlan};

/// What came of one VM's change.
pub struct Applied {
    pub result: anyhow::Result<()>,
    /// How the change was made, when that is worth a warning (last-writer-wins tag updates).
    pub warnings: Vec<String>,
    /// With `nsx.verify_group`, after a change that succeeded: whether NSX put the VM into
    /// (or took it out of) the group in time.
    pub membership: Option<Membership>,
}

/// Changes each VM's tag as its plan says, several VMs at once (at most
/// [`crate::parallel::PER_SERVICE`]); one [`Applied`] per plan, in the plans' order. `may_open`
/// is asked before each attach: an error is that VM's result, and nothing is sent.
pub fn apply(
    backend: &dyn TagBackend,
    plans: &[VmPlan],
    may_open: impl Fn(&VmPlan) -> anyhow::Result<()> + Sync,
) -> Vec<Applied> {
    let changing: Vec<&VmPlan> = plans
        .iter()
        .filter(|p| p.change != TagChange::Keep)
        .collect();
    let mut results = crate::parallel::map(&changing, crate::parallel::PER_SERVICE, |plan| {
        let attach = plan.change == TagChange::Attach;
        let result = match attach {
            true => may_open(plan).and_then(|()| backend.attach(&plan.vm)),
            false => backend.detach(&plan.vm),
        };
        // Where access takes effect: the group, once the tag is verified.
        let membership = match &result {
            Ok(()) => backend.membership(&plan.vm, attach),
            Err(_) => None,
        };
        (result, membership)
    })
    .into_iter();
    // A warning is about how this run changes tags; it goes with the first change.
    let mut warnings = backend.take_warnings();
    plans
        .iter()
        .map(|plan| {
            let (result, membership) = match plan.change {
                TagChange::Keep => (Ok(()), None),
                _ => results
                    .next()
                    .unwrap_or_else(|| (Err(anyhow::anyhow!("no result for {}", plan.vm)), None)),
            };
            Applied {
                result,
                membership,
                warnings: match plan.change {
                    TagChange::Keep => Vec::new(),
                    _ => std::mem::take(&mut warnings),
                },
            }
        })
        .collect()
}
