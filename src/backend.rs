//! The NSX product that carries the tag. Each variant attaches, detaches and lists; the
//! commands do not care which one answers.

use std::collections::BTreeSet;

use crate::config::{Config, NsxKind};
use crate::deadline::Deadline;
use crate::nsxv::NsxV;
use crate::vcenter::VmRef;

pub enum TagBackend {
    NsxV(NsxV),
}

impl TagBackend {
    pub fn new(config: &Config, deadline: Deadline, verbose: bool) -> anyhow::Result<Self> {
        match config.nsx.kind {
            NsxKind::NsxV => Ok(TagBackend::NsxV(NsxV::new(&config.nsx, deadline, verbose)?)),
        }
    }

    /// The ids of the VMs that carry the tag now.
    pub fn tagged(&mut self) -> anyhow::Result<BTreeSet<String>> {
        match self {
            TagBackend::NsxV(nsx) => nsx.tagged(),
        }
    }

    /// Attaches the tag and verifies that it is there.
    pub fn attach(&mut self, vm: &VmRef) -> anyhow::Result<()> {
        match self {
            TagBackend::NsxV(nsx) => nsx.attach(vm),
        }
    }

    /// Detaches the tag and verifies that it is gone.
    pub fn detach(&mut self, vm: &VmRef) -> anyhow::Result<()> {
        match self {
            TagBackend::NsxV(nsx) => nsx.detach(vm),
        }
    }
}
