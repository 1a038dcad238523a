//! NSX-T 3.2+ and NSX 4.x through the Policy API (`kind = "nsx-policy"`): the tag is added and
//! removed with a tag bulk operation (`PUT /policy/api/v1/infra/tags/tag-operations/{id}`),
//! which touches that one tag and leaves every other tag of the VM alone, and which a role with
//! read-only access on VMs and full access on Tags may make (the fabric tag actions need
//! Enterprise Admin on NSX 4.1). No fabric tag action is ever sent by this backend.
//!
//! A 200 to the operation is not success: a VM counts as changed when the operation's status
//! names it with `Success` and reading its tags back shows the change. Logging in, finding and
//! reading VMs: `json_api.rs`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use ureq::http::Method;

use crate::config::NsxConfig;
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};
use crate::http::{Call, Reply, ServiceError, encode};
use crate::nsx::json_api::{
    Flavor, JsonApi, MAX_TAGS, TagWriter, error_text, full_tags, json_call, keep_targets, label,
};
use crate::nsx::via_vcenter::ViaVcenter;
use crate::sync::lock;

const TAG_OPERATIONS: &str = "/policy/api/v1/infra/tags/tag-operations";
/// The Policy API's search: the VMs with our tag without listing the whole inventory.
const SEARCH: &str = "/policy/api/v1/search/query";
/// How long to wait between reads of an operation's status, at first and at most.
const FIRST_POLL: Duration = Duration::from_millis(20);
const LAST_POLL: Duration = Duration::from_millis(500);
/// Reads of the VM after a successful operation before its tags are called unchanged: the
/// inventory may show a change a moment after the operation reports it.
const READ_BACKS: u32 = 3;

/// An operation's status (`TagBulkOperationStatus`): `Pending` and `Running` go on to
/// `Success` or `Error`; each VM's own outcome is under `apply_to` or `remove_from`.
#[derive(Deserialize, Debug)]
pub struct OperationStatus {
    pub status: String,
    #[serde(default)]
    pub apply_to: Vec<ResourceTypeStatus>,
    #[serde(default)]
    pub remove_from: Vec<ResourceTypeStatus>,
}

#[derive(Deserialize, Debug)]
pub struct ResourceTypeStatus {
    #[serde(default)]
    pub resource_type: String,
    #[serde(default)]
    pub resource_tag_status: Vec<ResourceStatus>,
}

#[derive(Deserialize, Debug)]
pub struct ResourceStatus {
    pub resource_id: String,
    pub tag_status: String,
    #[serde(default)]
    pub details: Option<String>,
}

/// How one VM came out of an operation.
enum Outcome {
    Success,
    Error(String),
}

pub struct NsxPolicy {
    api: JsonApi,
    warnings: Mutex<Vec<String>>,
    /// Makes each operation id fresh: the process, the start time, a count.
    run: String,
    operations: AtomicU64,
}

impl NsxPolicy {
    pub fn new(
        config: &NsxConfig,
        profiles: &[crate::config::Profile],
        vcenter: ViaVcenter,
        deadline: Deadline,
        verbose: bool,
    ) -> anyhow::Result<Self> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(NsxPolicy {
            api: JsonApi::new(Flavor::Policy, config, profiles, vcenter, deadline, verbose)?,
            warnings: Mutex::new(Vec::new()),
            run: format!("otnsx-{}-{}", std::process::id(), started.as_millis()),
            operations: AtomicU64::new(0),
        })
    }

    fn operation_id(&self) -> String {
        let n = self.operations.fetch_add(1, Ordering::SeqCst);
        format!("{}-{n}", self.run)
    }

    /// Reads the operation's status until it ends, bounded by the run's deadline.
    fn follow(&self, path: &str, id: &str, vm: &VmRef, add: bool) -> anyhow::Result<Outcome> {
        let deadline = self.api.deadline();
        let mut pause = FIRST_POLL;
        let mut last = String::from("not yet readable");
        loop {
            let reply = self
                .api
                .send_raw(&Call::new(Method::GET, format!("{path}/status")))?;
            // Just made, an operation may not be readable yet.
            if reply.status != 404 {
                let reply = match reply.is_success() {
                    true => reply,
                    false => return Err(self.api.error(&reply)),
                };
                let status: OperationStatus = reply.json("NSX")?;
                match status.status.as_str() {
                    "Success" | "Error" => return outcome_for(&status, vm, add, id),
                    "Pending" | "Running" => last = status.status,
                    other => {
                        return Err(ServiceError::malformed(format!(
                            "NSX: tag operation {id} has the unknown status {other:?}"
                        )));
                    }
                }
            }
            if !deadline.sleep(pause) {
                return Err(fault(
                    Exit::Unavailable,
                    format!(
                        "tag operation {id} had not ended by the deadline (status {last}); NSX may still make the change: run `otnsx status` to see where the VM stands"
                    ),
                ));
            }
            pause = (pause * 2).min(LAST_POLL);
        }
    }

    /// An operation that did not change the VM: gone from the inventory (a detach is then
    /// done), a full tag list (its own error), or NSX's own reason.
    fn failed(
        &self,
        vm: &VmRef,
        add: bool,
        what: &str,
        id: &str,
        details: &str,
    ) -> anyhow::Result<()> {
        let found = self.api.read(vm).with_context(|| what.to_string())?;
        match found {
            None if !add => self.gone(vm),
            Some(v) if !add && !self.api.carries(&v, vm) => Ok(()),
            Some(v) if add && self.api.carries(&v, vm) => Ok(()),
            Some(v) if add && v.tags.len() >= MAX_TAGS => Err(full_tags(what, v.tags.len())),
            None => Err(fault(
                Exit::DataErr,
                format!("{what}: NSX no longer lists the VM (deleted?)"),
            )),
            Some(_) => Err(fault(
                Exit::Unavailable,
                format!("{what}: tag operation {id} failed: {details}"),
            )),
        }
    }

    /// The VM is gone from the inventory, and its access with it.
    fn gone(&self, vm: &VmRef) -> anyhow::Result<()> {
        lock(&self.warnings).push(format!(
            "NSX no longer knows {vm} (deleted?): its access is gone with it"
        ));
        Ok(())
    }

    /// What the account's role allows, by `GET /api/v1/aaa/user-info/permissions`: full access
    /// (crud) on the feature named Tags, and at least read on Virtual Machines. Where NSX does
    /// not list them, a read of a tag operation that does not exist (404 allowed, 403 refused)
    /// shows at least that the tag operations are open to the account.
    fn role(&self) -> anyhow::Result<String> {
        const NEEDED: &str = "read-only on Virtual Machines, full access on Tags";
        #[derive(Deserialize)]
        struct Permissions {
            #[serde(default)]
            feature_permissions: Vec<FeaturePermission>,
        }
        #[derive(Deserialize)]
        struct FeaturePermission {
            #[serde(default)]
            feature_name: Option<String>,
            #[serde(default)]
            permission: String,
        }
        let reply = self
            .api
            .send_raw(&Call::new(Method::GET, "/api/v1/aaa/user-info/permissions"))?;
        let listed: Vec<FeaturePermission> = match reply.is_success() {
            true => reply.json::<Permissions>("NSX")?.feature_permissions,
            false => Vec::new(),
        };
        let permission = |name: &str| {
            listed
                .iter()
                .find(|f| {
                    f.feature_name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .map(|f| f.permission.as_str())
        };
        match (permission("Tags"), permission("Virtual Machines")) {
            (Some("crud"), Some("crud" | "read")) => {
                Ok(format!("the account's role has what it needs ({NEEDED})"))
            }
            (Some(tags), vms) => Err(fault(
                Exit::NoPerm,
                format!(
                    "NSX Policy: the account's role has {tags:?} on Tags and {:?} on Virtual Machines; it needs {NEEDED} (Inventory > Tags: full access)",
                    vms.unwrap_or("none")
                ),
            )),
            (None, _) => {
                let path = format!("{TAG_OPERATIONS}/{}-check", self.run);
                let reply = self.api.send_raw(&Call::new(Method::GET, path))?;
                if !matches!(reply.status, 200..=299 | 404) {
                    return Err(self.api.error(&reply)).context(format!(
                        "NSX Policy: reading the tag operations (the account's role needs {NEEDED})"
                    ));
                }
                Ok(format!(
                    "NSX does not list the account's permissions; it may read tag operations (the role it needs: {NEEDED}; that it may write them shows on the first change)"
                ))
            }
        }
    }
}

/// The outcome the ended operation names for `vm`; an operation that does not name it is
/// not taken as success.
fn outcome_for(
    status: &OperationStatus,
    vm: &VmRef,
    add: bool,
    id: &str,
) -> anyhow::Result<Outcome> {
    let lists = if add {
        &status.apply_to
    } else {
        &status.remove_from
    };
    let mine = lists
        .iter()
        .filter(|l| l.resource_type == "VirtualMachine")
        .flat_map(|l| &l.resource_tag_status)
        .find(|r| r.resource_id == vm.id);
    match mine {
        Some(r) if r.tag_status == "Success" => Ok(Outcome::Success),
        Some(r) => Ok(Outcome::Error(format!(
            "{}{}",
            r.tag_status,
            r.details
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ))),
        None if status.status == "Error" => Ok(Outcome::Error(
            "the operation ended in Error without naming the VM".into(),
        )),
        None => Err(ServiceError::malformed(format!(
            "NSX: tag operation {id} ended ({}) without naming {vm}",
            status.status
        ))),
    }
}

impl TagWriter for NsxPolicy {
    fn api(&self) -> &JsonApi {
        &self.api
    }

    /// Adds or removes our tag on one VM with a tag operation of its own (so that one VM's
    /// failure never holds up another's), follows it to its end and reads the VM back.
    fn change(&self, vm: &VmRef, add: bool) -> anyhow::Result<()> {
        let verb = if add { "attaching" } else { "detaching" };
        let ours = self.api.tag(vm)?;
        let what = format!("NSX Policy: {verb} {} to {vm}", label(ours));
        let id = self.operation_id();
        let list = if add { "apply_to" } else { "remove_from" };
        let body = json!({
            "tag": ours,
            list: [{"resource_type": "VirtualMachine", "resource_ids": [vm.id]}],
        });
        let path = format!("{TAG_OPERATIONS}/{}", encode(&id));
        let reply = self
            .api
            .send_raw(&json_call(Method::PUT, &path, &body))
            .with_context(|| what.clone())?;
        let outcome = if reply.is_success() {
            self.follow(&path, &id, vm, add)
                .with_context(|| what.clone())?
        } else if reply.status == 404 && crate::nsx::json_api::error_code(&reply) == Some(404) {
            return Err(fault(
                Exit::Unavailable,
                format!(
                    "{what}: the manager has no Policy tag operations ({}); they need NSX-T 3.2 or later, else set nsx.kind = \"nsx-t\"",
                    error_text(&reply)
                ),
            ));
        } else if matches!(reply.status, 400 | 404 | 409) {
            Outcome::Error(error_text(&reply))
        } else {
            return Err(self.api.error(&reply)).with_context(|| what.clone());
        };
        if let Outcome::Error(details) = outcome {
            return self.failed(vm, add, &what, &id, &details);
        }
        for attempt in 1..=READ_BACKS {
            let now = self
                .api
                .read(vm)
                .with_context(|| format!("{what}: reading back"))?;
            if now.as_ref().is_some_and(|v| self.api.carries(v, vm)) == add {
                return Ok(());
            }
            if now.is_none() && !add {
                return self.gone(vm);
            }
            if attempt < READ_BACKS {
                self.api.deadline().sleep(Duration::from_millis(100));
            }
        }
        Err(fault(
            Exit::Unavailable,
            format!(
                "{what}: tag operation {id} reported success but the VM's tags read back unchanged (unverified)"
            ),
        ))
    }

    /// The VMs that carry our tag now: from the Policy search, else (its index being built, or
    /// no search) from the realized-state list, read sorted page by page.
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
            .each_realized(&mut |vm| keep_targets(&self.api, &vm, &mut tagged))
            .context("listing NSX's realized VMs")?;
        Ok(tagged)
    }

    fn probe(&self) -> anyhow::Result<String> {
        let count = self.every_tagged()?.len();
        let role = self.role()?;
        Ok(format!(
            "NSX Policy answers; the VM inventory is readable; {role}; {} on {count} VM(s) now",
            self.api.tags_phrase()
        ))
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.warnings))
    }
}

/// Parses `reply` as an operation's status, for the fuzz targets.
pub fn fuzz_parse(reply: &Reply) {
    let _ = reply.json::<OperationStatus>("NSX");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> VmRef {
        VmRef::new("web01", "5012a")
    }

    #[test]
    fn only_the_vms_own_success_counts() {
        let ended: OperationStatus = serde_json::from_str(
            r#"{"path":"/infra/tags/tag-operations/op1","status":"Success","tag":{"scope":"otnsx","tag":"maintenance"},
                "apply_to":[{"resource_type":"VirtualMachine","resource_tag_status":[
                  {"resource_id":"5012b","resource_display_name":"db01","tag_status":"Success"},
                  {"resource_id":"5012a","resource_display_name":"web01","tag_status":"Error","details":"Can not find VM with the ID"}]}]}"#,
        )
        .expect("parses");
        assert!(matches!(
            outcome_for(&ended, &vm(), true, "op1"),
            Ok(Outcome::Error(d)) if d == "Error: Can not find VM with the ID"
        ));
        // The same VM under remove_from says nothing of an attach.
        assert!(outcome_for(&ended, &vm(), false, "op1").is_err());
    }

    #[test]
    fn an_operation_that_does_not_name_the_vm_is_not_success() {
        let ended: OperationStatus =
            serde_json::from_str(r#"{"path":"/infra/tags/tag-operations/op1","status":"Success","tag":{"scope":"otnsx","tag":"maintenance"}}"#)
                .expect("parses");
        assert!(outcome_for(&ended, &vm(), true, "op1").is_err());
    }
}
