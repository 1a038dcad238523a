//! The NSX step of a decision: each VM's tag attached or detached as its plan says, and nothing
//! else. This step touches neither the leases nor the journal: what came of each change is
//! recorded afterwards, one VM after the other, by the command (`commands/change.rs`). So the
//! requests of this step are free to be made at once.

use crate::nsx::TagBackend;
use crate::plan::{TagChange, VmPlan};

/// What came of one VM's change.
pub struct Applied {
    pub result: anyhow::Result<()>,
    /// How the change was made, when that is worth a warning (last-writer-wins tag updates).
    pub warnings: Vec<String>,
}

/// Changes each VM's tag as its plan says, in the plans' order; one [`Applied`] per plan.
/// `may_open` is asked before each attach: an error is that VM's result, and nothing is sent.
pub fn apply(
    backend: &dyn TagBackend,
    plans: &[VmPlan],
    may_open: impl Fn(&VmPlan) -> anyhow::Result<()>,
) -> Vec<Applied> {
    plans
        .iter()
        .map(|plan| {
            let result = match plan.change {
                TagChange::Keep => Ok(()),
                TagChange::Attach => may_open(plan).and_then(|()| backend.attach(&plan.vm)),
                TagChange::Detach => backend.detach(&plan.vm),
            };
            Applied {
                result,
                warnings: backend.take_warnings(),
            }
        })
        .collect()
}
