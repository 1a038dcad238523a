//! The NSX product that carries the tag. Each variant lists, attaches and detaches; the
//! commands do not care which one answers.

use std::collections::BTreeSet;

use crate::config::{Config, NsxKind, Resolve, VcenterConfig};
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};
use crate::nsxt::NsxT;
use crate::nsxv::NsxV;

pub enum TagBackend {
    NsxV(NsxV),
    /// NSX-T, and whether it finds VMs by name in its own inventory (`nsx.resolve = "nsx"`)
    /// rather than through vCenter.
    NsxT(NsxT, Resolve),
}

/// Takes each looked-up name with what was found for it; an error ends the look-ups.
pub type Found<'a> = dyn FnMut(String, anyhow::Result<VmRef>) -> anyhow::Result<()> + 'a;

impl TagBackend {
    /// Runs `work` with the configured backend, then ends its session (if it made one),
    /// whatever `work` returned. Nothing is sent before `work` asks.
    pub fn with<T>(
        config: &Config,
        deadline: Deadline,
        verbose: bool,
        work: impl FnOnce(&mut TagBackend) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut backend = match config.nsx.kind {
            NsxKind::NsxV => TagBackend::NsxV(NsxV::new(&config.nsx, deadline, verbose)?),
            NsxKind::NsxT => TagBackend::NsxT(
                NsxT::new(&config.nsx, deadline, verbose)?,
                config.nsx.resolve,
            ),
        };
        let result = work(&mut backend);
        if let TagBackend::NsxT(nsx, _) = &mut backend {
            nsx.close();
        }
        result
    }

    /// Which of `vms` carry the tag now.
    pub fn tagged_among(&mut self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>> {
        if vms.is_empty() {
            return Ok(BTreeSet::new());
        }
        match self {
            TagBackend::NsxV(nsx) => {
                let all = nsx.tagged()?;
                Ok(vms
                    .iter()
                    .filter(|v| all.contains(&v.id))
                    .map(|v| v.id.clone())
                    .collect())
            }
            TagBackend::NsxT(nsx, _) => nsx.tagged_among(vms),
        }
    }

    /// Checks that NSX answers, accepts the credentials and knows the tag; says what it found.
    pub fn probe(&mut self) -> anyhow::Result<String> {
        match self {
            TagBackend::NsxV(nsx) => {
                let id = nsx.tag_id()?;
                let count = nsx.tagged()?.len();
                Ok(format!(
                    "NSX-V answers; security tag {:?} is {id}, on {count} VM(s) now",
                    nsx.tag_name()
                ))
            }
            TagBackend::NsxT(nsx, _) => {
                let count = nsx.all_tagged()?.len();
                Ok(format!(
                    "NSX-T answers; the VM inventory is readable; tag {} is on {count} VM(s) now",
                    nsx.tag_label()
                ))
            }
        }
    }

    /// Every VM that carries the tag now, as NSX sees it.
    pub fn all_tagged(&mut self) -> anyhow::Result<Vec<VmRef>> {
        match self {
            TagBackend::NsxV(nsx) => nsx.all_tagged(),
            TagBackend::NsxT(nsx, _) => nsx.all_tagged(),
        }
    }

    /// Attaches the tag and verifies that it is there.
    pub fn attach(&mut self, vm: &VmRef) -> anyhow::Result<()> {
        match self {
            TagBackend::NsxV(nsx) => nsx.attach(vm),
            TagBackend::NsxT(nsx, _) => nsx.attach(vm),
        }
    }

    /// Detaches the tag and verifies that it is gone.
    pub fn detach(&mut self, vm: &VmRef) -> anyhow::Result<()> {
        match self {
            TagBackend::NsxV(nsx) => nsx.detach(vm),
            TagBackend::NsxT(nsx, _) => nsx.detach(vm),
        }
    }

    /// Warnings about how the last changes were made, for the journal.
    pub fn take_warnings(&mut self) -> Vec<String> {
        match self {
            TagBackend::NsxV(_) => Vec::new(),
            TagBackend::NsxT(nsx, _) => std::mem::take(&mut nsx.warnings),
        }
    }

    /// Finds each of `names` as this backend knows VMs: NSX-V by vCenter's managed object id;
    /// NSX-T by display name in its own inventory, or through vCenter (name → instance UUID →
    /// the NSX VM with that external id or compute id). One vCenter session serves all names.
    pub fn find(
        &mut self,
        vcenter: Option<&VcenterConfig>,
        deadline: Deadline,
        verbose: bool,
        names: Vec<String>,
        found: &mut Found<'_>,
    ) -> anyhow::Result<()> {
        if let TagBackend::NsxT(nsx, Resolve::Nsx) = self {
            for name in names {
                let vm = nsx.find_by_name(&name);
                found(name, vm)?;
            }
            return Ok(());
        }
        let vc_config = vcenter.ok_or_else(|| {
            fault(
                Exit::Config,
                "no [vcenter] section: it is needed to find VMs by name",
            )
        })?;
        crate::vcenter::with_session(vc_config, deadline, verbose, |vc| {
            for name in names {
                let vm = vc.find_vm(&name).and_then(|vm| match self {
                    TagBackend::NsxV(_) => Ok(vm),
                    TagBackend::NsxT(nsx, _) => {
                        let (instance, bios) = vc.identity(&vm)?;
                        nsx.find_by_uuid(&vm, &instance, bios.as_deref())
                    }
                });
                found(name, vm)?;
            }
            Ok(())
        })
    }
}
