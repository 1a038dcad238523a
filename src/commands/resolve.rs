//! Name resolution: the VM names a ticket or a command line gives, checked, allowed by policy
//! and the access profiles, and found in vCenter or NSX; and the openings there are to close.

use std::collections::BTreeSet;

use crate::config::MAX_VM_NAME;
use crate::domain::vm::VmRef;
use crate::error::{Exit, exit_code, fault};
use crate::nsx::TagBackend;
use crate::state::store::Lease;

use super::change::Refusal;
use super::run::Run;

/// A VM name wanted open, under an access profile (its key; `None`: `[nsx] tag`'s).
pub type Want = (String, Option<String>);

impl Run {
    /// Splits names into those that may be opened and those refused: an invalid name (exit
    /// 65) whatever the policy says, then what policy does not allow (exit 77).
    pub fn allowed(&self, names: &[String]) -> (Vec<String>, Vec<Refusal>) {
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for name in names {
            if let Err(e) = check_vm_name(name) {
                refused.push((name.clone(), e));
                continue;
            }
            match self.config.policy.vms.refusal(name) {
                None => allowed.push(name.clone()),
                Some(why) => refused.push((name.clone(), fault(Exit::NoPerm, why))),
            }
        }
        (allowed, refused)
    }

    /// The entries of a ticket's field (or of `grant --vm`) as VM names under access profiles
    /// (by key): where `[profiles.NAME]` sections exist, `web01:ssh` names profile `ssh`; an
    /// entry that names none gets `given` (the ticket's profile field, `grant --profile`), else
    /// `policy.default_profile`. An unknown profile is refused (65), and so is a profile whose
    /// own allow/deny does not let it open the VM (77); `[policy]` is asked by [`Run::allowed`].
    pub fn wants(&self, entries: &[String], given: Option<&str>) -> (Vec<Want>, Vec<Refusal>) {
        let config = &self.config;
        let known: Vec<&str> = config.profiles.iter().map(|p| p.name.as_str()).collect();
        let unknown = |name: &str| {
            fault(
                Exit::DataErr,
                format!(
                    "access profile \"{}\" is not configured (there are: {})",
                    crate::escape::shorten(name),
                    known.join(", ")
                ),
            )
        };
        let mut wants = Vec::new();
        let mut refused = Vec::new();
        for entry in entries {
            let (name, named) = match entry.rsplit_once(':') {
                Some((name, profile)) if config.has_profiles() && !name.is_empty() => {
                    (name.to_string(), Some(profile))
                }
                _ => (entry.clone(), None),
            };
            let profile = match named.or(given) {
                Some(p) => match config.profile(p) {
                    Some(profile) => profile,
                    None => {
                        refused.push((entry.clone(), unknown(p)));
                        continue;
                    }
                },
                None => match config.profile_by_key(config.policy.default_profile.as_deref()) {
                    Some(profile) => profile,
                    None => {
                        refused.push((entry.clone(), unknown("(default)")));
                        continue;
                    }
                },
            };
            if let Some(why) = profile.vms.as_ref().and_then(|vms| vms.refusal(&name)) {
                let why = format!("profile {}: {why}", profile.name);
                refused.push((entry.clone(), fault(Exit::NoPerm, why)));
                continue;
            }
            let want = (name, profile.key.clone());
            if !wants.contains(&want) {
                wants.push(want);
            }
        }
        (wants, refused)
    }

    /// The VM names of a ticket's field entries, any `:profile` left off: what closing goes
    /// by, whatever profile an entry names.
    pub fn names_of(&self, entries: &[String]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let name = match entry.rsplit_once(':') {
                Some((name, _)) if self.config.has_profiles() && !name.is_empty() => name,
                _ => entry.as_str(),
            };
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        names
    }

    /// Every opening of `vms` there is to close: each under every configured profile, and
    /// with per-agent rules every agent's rule on them that NSX shows.
    pub fn every_opening(
        &self,
        backend: &dyn TagBackend,
        vms: Vec<VmRef>,
    ) -> anyhow::Result<Vec<VmRef>> {
        let ids: BTreeSet<String> = vms.iter().map(|v| v.id.clone()).collect();
        let mut out = self.under_every_profile(vms);
        if self.config.source.is_some() {
            for vm in backend.all_tagged()? {
                if ids.contains(&vm.id) && !out.iter().any(|o| o.key() == vm.key()) {
                    out.push(vm);
                }
            }
        }
        Ok(out)
    }

    /// Each of `vms` under every configured profile: closing a VM by name closes all its
    /// access.
    pub fn under_every_profile(&self, vms: Vec<VmRef>) -> Vec<VmRef> {
        let mut out: Vec<VmRef> = Vec::new();
        for vm in vms {
            for profile in &self.config.profiles {
                let each = VmRef {
                    profile: profile.key.clone(),
                    ..vm.clone()
                };
                if !out.iter().any(|o| o.key() == each.key()) {
                    out.push(each);
                }
            }
        }
        out
    }

    /// With per-agent rules: `vms` opened from `agent`'s desktop, or, when the agent has no
    /// `[agents]` addresses (or is unknown), none of them, each refused (77). Without: `vms`.
    pub fn opened_by_agent(
        &self,
        vms: Vec<VmRef>,
        agent: Option<&str>,
    ) -> (Vec<VmRef>, Vec<Refusal>) {
        let Some(source) = &self.config.source else {
            return (vms, Vec::new());
        };
        // A desktop by pattern is found when its rule is written (and refused there, 77).
        let known = |a: &str| source.agents.contains_key(a) || source.desktop.is_some();
        match agent.filter(|a| known(a)) {
            Some(agent) => (
                vms.into_iter()
                    .map(|vm| VmRef {
                        agent: Some(agent.to_string()),
                        ..vm
                    })
                    .collect(),
                Vec::new(),
            ),
            None => {
                let who = agent.unwrap_or("(nobody: the ticket has no owner)");
                let refused = vms
                    .iter()
                    .map(|vm| (vm.name.clone(), crate::nsx::rules::no_desktop(who)))
                    .collect();
                (Vec::new(), refused)
            }
        }
    }

    /// The VMs for `wants`: each name allowed by `[policy]` and found, under its profile;
    /// what was refused or not found, by name.
    pub fn targets(
        &self,
        backend: &dyn TagBackend,
        wants: &[Want],
    ) -> anyhow::Result<(Vec<Want>, Vec<VmRef>, Vec<Refusal>)> {
        let mut unique: Vec<String> = Vec::new();
        for (name, _) in wants {
            if !unique.contains(name) {
                unique.push(name.clone());
            }
        }
        let (allowed, mut refused) = self.allowed(&unique);
        let (found, not_found) = self.resolve(backend, &allowed)?;
        refused.extend(not_found);
        let kept: Vec<Want> = wants
            .iter()
            .filter(|(name, _)| allowed.contains(name))
            .cloned()
            .collect();
        let vms = kept
            .iter()
            .filter_map(|(name, profile)| {
                found.iter().find(|vm| vm.name == *name).map(|vm| VmRef {
                    profile: profile.clone(),
                    ..vm.clone()
                })
            })
            .collect();
        Ok((kept, vms, refused))
    }

    /// Finds each name: in vCenter (one session for all), in NSX-T's inventory, or in vCenter
    /// and then NSX-T, as `nsx.kind` and `nsx.resolve` say. A name that is invalid, missing or
    /// ambiguous is refused alone; a service that cannot be used fails the whole command.
    pub fn resolve(
        &self,
        backend: &dyn TagBackend,
        names: &[String],
    ) -> anyhow::Result<(Vec<VmRef>, Vec<Refusal>)> {
        let mut refused = Vec::new();
        let mut valid = Vec::new();
        for name in names {
            match check_vm_name(name) {
                Ok(()) => valid.push(name.clone()),
                Err(e) => refused.push((name.clone(), e)),
            }
        }
        if valid.is_empty() {
            return Ok((Vec::new(), refused));
        }
        let mut vms = Vec::new();
        // Only "this name" failures (exit 65) stay per VM; anything else ends the run.
        let mut sort = |name: String, found: anyhow::Result<VmRef>| {
            match found {
                // An id the lease store could not read back is refused here, not written.
                Ok(vm) if !crate::state::store::is_vm_id(&vm.id) => refused.push((
                    name,
                    fault(
                        Exit::DataErr,
                        format!(
                            "VM {} has the id \"{}\" from the service, which otnsx cannot record (1 to 128 characters, no white space, control character or #); nothing was opened",
                            crate::escape::shorten(&vm.name),
                            crate::escape::shorten(&vm.id)
                        ),
                    ),
                )),
                Ok(vm) => vms.push(vm),
                Err(e) if exit_code(&e) == Exit::DataErr => refused.push((name, e)),
                Err(e) => return Err(e),
            }
            Ok(())
        };
        backend.find(valid, &mut sort)?;
        Ok((vms, refused))
    }
}

/// The most VM names one ticket's field may hold; a ticket naming more is refused (exit 65)
/// before anything is looked up.
pub const MAX_VMS_PER_TICKET: usize = 20;

/// Checks a VM name taken from a ticket or the command line: vSphere's 80 characters, no
/// control or bidi characters. What is echoed of a refused name is shortened and escaped.
pub fn check_vm_name(name: &str) -> anyhow::Result<()> {
    let shown = crate::escape::shorten(name);
    if name.is_empty() || name.chars().count() > MAX_VM_NAME {
        return Err(fault(
            Exit::DataErr,
            format!("VM name \"{shown}\" must have 1 to {MAX_VM_NAME} characters"),
        ));
    }
    if name.chars().any(crate::escape::is_hostile) {
        return Err(fault(
            Exit::DataErr,
            format!("VM name \"{shown}\" contains control or bidi characters"),
        ));
    }
    Ok(())
}

/// The VMs of `leases` as references, without duplicates.
pub fn vms_of<'a>(leases: impl IntoIterator<Item = &'a Lease>) -> Vec<VmRef> {
    let mut seen = BTreeSet::new();
    leases
        .into_iter()
        .filter(|l| seen.insert(l.key()))
        .map(Lease::vm_ref)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_are_checked() {
        assert!(check_vm_name("Büro-01 & co #1").is_ok());
        assert!(check_vm_name(&"x".repeat(80)).is_ok());
        assert!(check_vm_name(&"x".repeat(81)).is_err());
        assert!(check_vm_name("web\u{0}01").is_err());
        assert!(check_vm_name("").is_err());
    }
}
