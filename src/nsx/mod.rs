//! The NSX product that carries the tag: one trait (`backend.rs`), one implementation per
//! product (NSX-V in `v.rs`, NSX-T's Manager API in `t.rs`, the Policy API in `policy.rs`; the
//! last two share `json_api.rs`; per-agent rules in `rules.rs`), the way to vCenter for those
//! that find VMs through it (`via_vcenter.rs`). Each finds its VMs, lists, attaches and
//! detaches; the commands do not care which one answers. A new product is a new
//! implementation, one variant of `nsx.kind`, and one line in [`with`], here.

use crate::config::{Config, NsxKind};
use crate::deadline::Deadline;

pub mod backend;
pub mod json_api;
pub mod policy;
pub mod rules;
pub mod t;
pub mod v;
pub mod via_vcenter;

pub use backend::{Confirms, Membership, TagBackend};

use policy::NsxPolicy;
use t::NsxT;
use v::{NsxV, NsxVProfiles};
use via_vcenter::ViaVcenter;

/// Whether a backend may use what earlier runs remembered in the state directory (NSX-V's tag
/// id).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// A help-desk event: the remembered tag id saves a request on the agent's wait.
    Use,
    /// Every other command (reconcile, revoke, status, check) looks the tag up by name and
    /// remembers it for the events: a wrong id in the file misleads at most the events until
    /// the next reconcile, which then closes what they could not.
    Refresh,
}

/// Runs `work` with the configured backend; its session, if it made one, ends when the backend
/// is dropped, whatever `work` returned. Nothing is sent before `work` asks.
pub fn with<T>(
    config: &Config,
    deadline: Deadline,
    verbose: bool,
    memory: Memory,
    work: impl FnOnce(&dyn TagBackend) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let vcenter = || ViaVcenter::new(config.vcenter.clone(), deadline, verbose);
    let backend: Box<dyn TagBackend> = match config.nsx.kind {
        NsxKind::NsxV => {
            // The tag's id is remembered only in a state directory nobody else may write: a
            // planted id would make closing detach another tag.
            let store = crate::state::store::Store::open(&config.state_dir);
            let path = store
                .unsafe_dir()
                .is_none()
                .then(|| store.tag_memory_path());
            let memory = path.map(|path| (path, memory == Memory::Use));
            let mut each = Vec::new();
            for (n, profile) in config.profiles.iter().enumerate() {
                // One vCenter login, by the first; the tag id memo is `[nsx] tag`'s.
                let vcenter = match n {
                    0 => ViaVcenter::new(config.vcenter.clone(), deadline, verbose),
                    _ => ViaVcenter::new(None, deadline, verbose),
                };
                let memory = memory.clone().filter(|_| profile.key.is_none());
                let backend = NsxV::new(
                    &config.nsx,
                    &profile.tag,
                    profile.verify.as_ref().map(|v| v.group.clone()),
                    vcenter,
                    memory,
                    deadline,
                    verbose,
                )?;
                each.push((profile.key.clone(), backend));
            }
            match each.len() {
                1 if each[0].0.is_none() => Box::new(each.remove(0).1),
                _ => Box::new(NsxVProfiles::new(each)),
            }
        }
        NsxKind::NsxT => Box::new(NsxT::new(
            &config.nsx,
            &config.profiles,
            vcenter(),
            deadline,
            verbose,
        )?),
        NsxKind::NsxPolicy => {
            let policy =
                NsxPolicy::new(&config.nsx, &config.profiles, vcenter(), deadline, verbose)?;
            match &config.source {
                // Per-agent rules instead of the tag.
                Some(source) => Box::new(rules::AgentRules::new(
                    policy,
                    source.clone(),
                    config.profiles.clone(),
                )),
                None => Box::new(policy),
            }
        }
    };
    work(backend.as_ref())
}
