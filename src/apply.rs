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
    /// Whether the change was sent to NSX (an attach `may_open` refused was not).
    pub sent: bool,
}

/// Whether an attach that failed may still take effect in NSX: it was sent, it did not fail
/// as a refusal (77, 65, 78: rights, a VM or desktop not found, the configuration), and NSX did
/// not answer it with a 4xx nor fail the TLS handshake. A request without an answer, an answer
/// after the deadline, a server error, a change that did not read back (NSX may apply it
/// later): unsure.
pub fn may_land_late(sent: bool, err: &anyhow::Error) -> bool {
    use crate::error::{Exit, exit_code};
    use crate::http::{Kind, ServiceError};
    let service = err.chain().find_map(|e| e.downcast_ref::<ServiceError>());
    let answered_no = match service.map(|e| e.kind) {
        Some(Kind::Status(status)) => (400..500).contains(&status),
        Some(Kind::Certificate) => true,
        _ => false,
    };
    let refused = matches!(
        exit_code(err),
        Exit::NoPerm | Exit::DataErr | Exit::Config | Exit::Usage
    );
    sent && !answered_no && !refused
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
        let allowed = match attach {
            true => may_open(plan),
            false => Ok(()),
        };
        let sent = allowed.is_ok();
        let result = match attach {
            true => allowed.and_then(|()| backend.attach(&plan.vm)),
            false => backend.detach(&plan.vm),
        };
        // Where access takes effect: the group, once the tag is verified.
        let membership = match &result {
            Ok(()) => backend.membership(&plan.vm, attach),
            Err(_) => None,
        };
        (result, membership, sent)
    })
    .into_iter();
    // A warning is about how this run changes tags; it goes with the first change.
    let mut warnings = backend.take_warnings();
    plans
        .iter()
        .map(|plan| {
            let (result, membership, sent) = match plan.change {
                TagChange::Keep => (Ok(()), None, false),
                _ => results.next().unwrap_or_else(|| {
                    (
                        Err(anyhow::anyhow!("no result for {}", plan.vm)),
                        None,
                        false,
                    )
                }),
            };
            Applied {
                result,
                membership,
                sent,
                warnings: match plan.change {
                    TagChange::Keep => Vec::new(),
                    _ => std::mem::take(&mut warnings),
                },
            }
        })
        .collect()
}
