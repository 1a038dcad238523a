//! NSX-T 3.x and NSX 4.x through the Manager API: the tag is added and removed with the
//! `fabric/virtual-machines` actions. A VM is named by its `external_id`; otnsx's tag is one
//! `{scope, tag}` pair among the VM's tags, and every other tool's tags survive every change
//! otnsx makes. Logging in, finding and reading VMs: `json_api.rs`.

use anyhow::Context;
use serde::Deserialize;
use ureq::http::Method;

use crate::config::NsxConfig;
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};
use crate::http::{Call, query};
use crate::nsx::json_api::{
    FABRIC_VMS, Flavor, JsonApi, MAX_TAGS, Tag, TagWriter, full_tags, json_call, keep_targets,
    label,
};
use crate::nsx::via_vcenter::ViaVcenter;
use crate::sync::lock;

/// The search API: the VMs with our tag without listing the whole inventory.
const SEARCH: &str = "/api/v1/search/query";

pub struct NsxT {
    api: JsonApi,
    /// Learnt on the first change: whether the manager knows `add_tags` / `remove_tags`.
    add_remove: std::sync::Mutex<Option<bool>>,
    /// Said once per run to the journal and stderr: changes were made last-writer-wins.
    warnings: std::sync::Mutex<Vec<String>>,
}

impl NsxT {
    pub fn new(
        config: &NsxConfig,
        profiles: &[crate::config::Profile],
        vcenter: ViaVcenter,
        deadline: Deadline,
        verbose: bool,
    ) -> anyhow::Result<Self> {
        Ok(NsxT {
            api: JsonApi::new(
                Flavor::Manager,
                config,
                profiles,
                vcenter,
                deadline,
                verbose,
            )?,
            add_remove: std::sync::Mutex::new(None),
            warnings: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Whether the manager is older than the first version known to have `add_tags` and
    /// `remove_tags` (3.1.2, from its users' reports), by `GET /api/v1/node/version`. A version
    /// that cannot be read is no evidence: then the change fails instead of falling back.
    fn predates_add_remove(&self) -> anyhow::Result<bool> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(default)]
            product_version: Option<String>,
            #[serde(default)]
            node_version: Option<String>,
        }
        let reply = self
            .api
            .send(&Call::new(Method::GET, "/api/v1/node/version"))?;
        let version: Version = reply.json("NSX")?;
        let text = version
            .product_version
            .or(version.node_version)
            .unwrap_or_default();
        let parts: Vec<u32> = text
            .split('.')
            .take(3)
            .map_while(|p| p.parse().ok())
            .collect();
        Ok(
            matches!(parts.as_slice(), [major, minor, patch] if (*major, *minor, *patch) < (3, 1, 2)),
        )
    }
}

impl TagWriter for NsxT {
    fn api(&self) -> &JsonApi {
        &self.api
    }

    /// Adds or removes our tag with `add_tags` / `remove_tags`, or, on a manager without them,
    /// with `update_tags` over a fresh read of the VM's tags; then reads back to verify.
    fn change(&self, vm: &VmRef, add: bool) -> anyhow::Result<()> {
        let verb = if add { "attaching" } else { "detaching" };
        let action = if add { "add_tags" } else { "remove_tags" };
        let ours = self.api.tag(vm)?;
        let what = format!("NSX-T: {verb} {} to {vm}", label(ours));
        let known = *lock(&self.add_remove);
        if known != Some(false) {
            let body = serde_json::json!({"external_id": vm.id, "tags": [ours]});
            let reply = self.api.send_raw(&json_call(
                Method::POST,
                &format!("{FABRIC_VMS}{}", query([("action", action)])),
                &body,
            ))?;
            if reply.is_success() {
                *lock(&self.add_remove) = Some(true);
            } else if matches!(reply.status, 400 | 404) {
                let found = self.api.read(vm)?;
                match found {
                    // The VM is gone from the inventory, and its access with it.
                    None if !add => {
                        lock(&self.warnings).push(format!(
                            "NSX no longer knows {vm} (deleted?): its access is gone with it"
                        ));
                        return Ok(());
                    }
                    Some(v) if add && v.tags.len() >= MAX_TAGS => {
                        return Err(full_tags(&what, v.tags.len()));
                    }
                    // The fallback needs evidence that the manager lacks the action: its version.
                    Some(_) if known.is_none() && self.predates_add_remove()? => {
                        *lock(&self.add_remove) = Some(false);
                        lock(&self.warnings).push(format!(
                            "NSX manager answered {action} with HTTP {} and is older than 3.1.2; changing tags with update_tags (last writer wins against other tools)",
                            reply.status
                        ));
                    }
                    _ => return Err(self.api.error(&reply)).with_context(|| what.clone()),
                }
            } else {
                return Err(self.api.error(&reply)).with_context(|| what.clone());
            }
        }
        if *lock(&self.add_remove) == Some(false) {
            let current = self.api.read(vm)?.ok_or_else(|| {
                fault(
                    Exit::Unavailable,
                    format!("{what}: NSX no longer lists the VM"),
                )
            })?;
            let mut tags: Vec<Tag> = current.tags.into_iter().filter(|t| t != ours).collect();
            if add {
                tags.push(ours.clone());
            }
            let body = serde_json::json!({"external_id": vm.id, "tags": tags});
            self.api
                .send(&json_call(
                    Method::POST,
                    &format!("{FABRIC_VMS}{}", query([("action", "update_tags")])),
                    &body,
                ))
                .with_context(|| what.clone())?;
        }
        let now = self
            .api
            .read(vm)
            .with_context(|| format!("{what}: reading back"))?;
        if now.is_some_and(|v| self.api.carries(&v, vm)) != add {
            return Err(fault(
                Exit::Unavailable,
                format!("{what} was accepted but the read-back disagrees (unverified)"),
            ));
        }
        Ok(())
    }

    /// The VMs that carry our tag now: from the search API, else (its index being built, or no
    /// search API) from the whole inventory, read page by page.
    fn every_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        if let Some(found) = self
            .api
            .search_tagged(SEARCH)
            .context("searching NSX for the tagged VMs")?
        {
            return Ok(found);
        }
        let mut tagged = Vec::new();
        self.api
            .each_fabric(None, &mut |vm| keep_targets(&self.api, &vm, &mut tagged))
            .context("listing NSX's VMs")?;
        Ok(tagged)
    }

    fn probe(&self) -> anyhow::Result<String> {
        let count = self.every_tagged()?.len();
        Ok(format!(
            "NSX-T answers; the VM inventory is readable; {} on {count} VM(s) now",
            self.api.tags_phrase()
        ))
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.warnings))
    }
}
