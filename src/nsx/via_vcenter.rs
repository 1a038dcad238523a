//! The way to vCenter for the backends that find VMs through it: one session, opened once by
//! whoever needs it first.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::VcenterConfig;
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, Kept, fault};
use crate::vcenter::Vcenter;

use super::backend::Found;

/// The way to vCenter, for backends that find VMs through it. Its session may be opened ahead
/// ([`ViaVcenter::open_ahead`], beside the ticket read) and is ended by [`ViaVcenter::close`]
/// (off the critical path, once the look-ups are done), or when it is dropped.
pub struct ViaVcenter {
    config: Option<VcenterConfig>,
    deadline: Deadline,
    verbose: bool,
    /// The session, or why it could not be had: made once, by whoever needs it first (the
    /// others wait for it).
    session: OnceLock<Result<Vcenter, Kept>>,
    closed: AtomicBool,
}

impl ViaVcenter {
    pub fn new(config: Option<VcenterConfig>, deadline: Deadline, verbose: bool) -> Self {
        ViaVcenter {
            config,
            deadline,
            verbose,
            session: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Logs in now (once), so that the look-ups find the session ready.
    pub fn open_ahead(&self) {
        let _ = self.session();
    }

    fn session(&self) -> anyhow::Result<&Vcenter> {
        let session = self.session.get_or_init(|| {
            let config = self.config.as_ref().ok_or_else(|| {
                Kept::of(&fault(
                    Exit::Config,
                    "no [vcenter] section: it is needed to find VMs by name",
                ))
            })?;
            Vcenter::open(config, self.deadline, self.verbose).map_err(|e| Kept::of(&e))
        });
        session.as_ref().map_err(Kept::again)
    }

    /// Logs out, once, if a session was made.
    pub fn close(&self) {
        if let Some(Ok(vc)) = self.session.get()
            && !self.closed.swap(true, Ordering::SeqCst)
        {
            vc.end();
        }
    }

    /// Finds each of `names` in vCenter, several at once, then turns vCenter's VM into the
    /// backend's with `to_backend`; `found` gets the results in the order of `names`.
    pub fn find(
        &self,
        names: Vec<String>,
        found: &mut Found<'_>,
        to_backend: impl Fn(&Vcenter, VmRef) -> anyhow::Result<VmRef> + Sync,
    ) -> anyhow::Result<()> {
        let vc = self.session()?;
        let results = crate::parallel::map(&names, crate::parallel::PER_SERVICE, |name| {
            vc.find_vm(name).and_then(|vm| to_backend(vc, vm))
        });
        for (name, vm) in names.into_iter().zip(results) {
            found(name, vm)?;
        }
        Ok(())
    }
}

impl Drop for ViaVcenter {
    fn drop(&mut self) {
        self.close();
    }
}
