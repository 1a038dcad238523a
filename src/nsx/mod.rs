//! The NSX product that carries the tag: one trait, one implementation per product (NSX-V in
//! `v.rs`, NSX-T in `t.rs`). Each finds its VMs, lists, attaches and detaches; the
//! commands do not care which one answers. A new product is a new implementation, one variant
//! of `nsx.kind`, and one line in [`with`].

use std::collections::BTreeSet;

use crate::config::{Config, NsxKind, VcenterConfig};
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};
use crate::vcenter::Vcenter;

pub mod t;
pub mod v;

use t::NsxT;
use v::NsxV;

/// Takes each looked-up name with what was found for it; an error ends the look-ups.
pub type Found<'a> = dyn FnMut(String, anyhow::Result<VmRef>) -> anyhow::Result<()> + 'a;

/// Every method takes `&self`: a backend can be shared by requests made at once.
pub trait TagBackend: Send + Sync {
    /// Finds each of `names` as this backend knows VMs, calling `found` for each.
    fn find(&self, names: Vec<String>, found: &mut Found<'_>) -> anyhow::Result<()>;

    /// Which of `vms` carry the tag now.
    fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>>;

    /// Every VM that carries the tag now, as NSX sees it.
    fn all_tagged(&self) -> anyhow::Result<Vec<VmRef>>;

    /// Attaches the tag and verifies that it is there.
    fn attach(&self, vm: &VmRef) -> anyhow::Result<()>;

    /// Detaches the tag and verifies that it is gone.
    fn detach(&self, vm: &VmRef) -> anyhow::Result<()>;

    /// Checks that NSX answers, accepts the credentials and knows the tag; says what it found.
    fn probe(&self) -> anyhow::Result<String>;

    /// Warnings about how the last changes were made, for the journal.
    fn take_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Runs `work` with the configured backend; its session, if it made one, ends when the backend
/// is dropped, whatever `work` returned. Nothing is sent before `work` asks.
pub fn with<T>(
    config: &Config,
    deadline: Deadline,
    verbose: bool,
    work: impl FnOnce(&dyn TagBackend) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let vcenter = ViaVcenter {
        config: config.vcenter.clone(),
        deadline,
        verbose,
    };
    let backend: Box<dyn TagBackend> = match config.nsx.kind {
        NsxKind::NsxV => Box::new(NsxV::new(&config.nsx, vcenter, deadline, verbose)?),
        NsxKind::NsxT => Box::new(NsxT::new(&config.nsx, vcenter, deadline, verbose)?),
    };
    work(backend.as_ref())
}

/// The way to vCenter, for backends that find VMs through it.
pub struct ViaVcenter {
    config: Option<VcenterConfig>,
    deadline: Deadline,
    verbose: bool,
}

impl ViaVcenter {
    /// Finds each of `names` in vCenter (one session for all), then turns vCenter's VM into
    /// the backend's with `to_backend`.
    pub fn find(
        &self,
        names: Vec<String>,
        found: &mut Found<'_>,
        mut to_backend: impl FnMut(&Vcenter, VmRef) -> anyhow::Result<VmRef>,
    ) -> anyhow::Result<()> {
        let (deadline, verbose) = (self.deadline, self.verbose);
        let vc_config = self.config.as_ref().ok_or_else(|| {
            fault(
                Exit::Config,
                "no [vcenter] section: it is needed to find VMs by name",
            )
        })?;
        crate::vcenter::with_session(vc_config, deadline, verbose, |vc| {
            for name in names {
                let vm = vc.find_vm(&name).and_then(|vm| to_backend(vc, vm));
                found(name, vm)?;
            }
            Ok(())
        })
    }
}
