//! NSX-T 3.x and NSX 4.x through the Policy API (`kind = "nsx-policy"`): the tag is added and
//! removed with a tag bulk operation (`PUT /policy/api/v1/infra/tags/tag-operations/{id}`),
//! which touches that one tag and leaves every other tag of the VM alone, and which a role with
//! read-only access on VMs and full access on Tags may make (the fabric tag actions need
//! Enterprise Admin on NSX 4.1). No fabric tag action is ever sent by this backend.
//!
//! A 200 to the operation is not success: a VM counts as changed when the operation's status
//! names it with `Success` and a read of the VM made after the operation shows the change. The
//! first status read is made at once, with the read of the VM beside it (each a request the lock
//! waits on otherwise). The tagged VMs are listed from `GET /policy/api/v1/infra/tags/
//! effective-resources` (exact), else the search, else the realized-state list. Logging in,
//! finding, reading and listing VMs: `json_api.rs`.

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
/// What the account's role allows, feature by feature.
const PERMISSIONS: &str = "/api/v1/aaa/user-info/permissions";
/// The features the Policy backend needs, by id (and by the name an older manager gives them):
/// full access on VM tags (`GET /policy/api/v1/infra/tags/effective-resources` names
/// `policy_vm_vm_tags`; the tag operations are under it), read on the VM inventory.
const TAGS_FEATURE: (&str, &str) = ("policy_vm_vm_tags", "Tags");
const VMS_FEATURE: (&str, &str) = ("vm_vm_info", "Virtual Machines");
/// The first status read is made at once; while the operation runs, the pauses between reads
/// double from the first to the last.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const LAST_PAUSE: Duration = Duration::from_millis(500);
/// Reads of the VM after a successful operation before its tags are called unchanged: the
/// inventory may show a change a moment after the operation reports it.
const READ_BACKS: u32 = 3;

/// An operation's status (`TagBulkOperationStatus`): `Pending` and `Running` go on to
/// `Success` or `Error`; each VM's own outcome is under `apply_to` or `remove_from`. VMware's
/// bindings mark `status`, `path` and `tag` required here, `resource_type` in each list and
/// `resource_id` and `tag_status` in each VM's entry; otnsx reads only what it needs, and reads
/// it leniently: a field missing (or null) is empty, which never counts as `Success`.
#[derive(Deserialize, Debug)]
pub struct OperationStatus {
    #[serde(default, deserialize_with = "lenient")]
    pub status: String,
    #[serde(default, deserialize_with = "lenient")]
    pub apply_to: Vec<ResourceTypeStatus>,
    #[serde(default, deserialize_with = "lenient")]
    pub remove_from: Vec<ResourceTypeStatus>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ResourceTypeStatus {
    #[serde(default, deserialize_with = "lenient")]
    pub resource_type: String,
    #[serde(default, deserialize_with = "lenient")]
    pub resource_tag_status: Vec<ResourceStatus>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ResourceStatus {
    #[serde(default, deserialize_with = "lenient")]
    pub resource_id: String,
    #[serde(default, deserialize_with = "lenient")]
    pub tag_status: String,
    #[serde(default)]
    pub details: Option<String>,
}

/// A field that may be null: then its default.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// How one VM came out of an operation.
enum Outcome {
    Success,
    Error(String),
}

/// What a read of a VM made after its operation showed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seen {
    /// The tag added (or removed), as the operation asked.
    Changed,
    Unchanged,
    /// NSX no longer lists the VM.
    Gone,
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

    /// Reads the operation's status until it ends, bounded by the run's deadline: the first
    /// read at once, then after pauses that double. Beside each status read the VM is read too,
    /// until a read shows the change (or the VM gone): the VM's outcome, and what the latest
    /// read of the VM showed (`None`: no read answered).
    fn follow(
        &self,
        path: &str,
        id: &str,
        vm: &VmRef,
        add: bool,
    ) -> anyhow::Result<(Outcome, Option<Seen>)> {
        let deadline = self.api.deadline();
        let mut pause = FIRST_PAUSE;
        let mut last = String::from("not yet readable");
        let mut seen: Option<Seen> = None;
        loop {
            let read_now = !matches!(seen, Some(Seen::Changed | Seen::Gone));
            let status = Call::new(Method::GET, format!("{path}/status"));
            let (reply, read) = std::thread::scope(|scope| {
                let read = read_now.then(|| scope.spawn(|| self.seen(vm, add)));
                let reply = self.api.send_raw(&status);
                (reply, read.map(|r| r.join()))
            });
            // A read that failed says nothing: the read after the operation ends makes it
            // again, and reports its error.
            if let Some(Ok(Ok(now))) = read {
                seen = Some(now);
            }
            let reply = reply?;
            // Just made, an operation may not be readable yet.
            if reply.status != 404 {
                let reply = match reply.is_success() {
                    true => reply,
                    false => return Err(self.api.error(&reply)),
                };
                let status: OperationStatus = reply.json("NSX")?;
                match status.status.as_str() {
                    "Success" | "Error" => return Ok((outcome_for(&status, vm, add, id)?, seen)),
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
            pause = (pause * 2).min(LAST_PAUSE);
        }
    }

    /// Whether a read of `vm` now shows our tag added (`add`) or removed.
    fn seen(&self, vm: &VmRef, add: bool) -> anyhow::Result<Seen> {
        Ok(match self.api.read(vm)? {
            None => Seen::Gone,
            Some(v) if self.api.carries(&v, vm) == add => Seen::Changed,
            Some(_) => Seen::Unchanged,
        })
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
    /// (crud) on VM tags (`policy_vm_vm_tags`) and at least read on the VM inventory
    /// (`vm_vm_info`), found by feature id, or by name where an older manager gives only that.
    /// Where NSX does not list them (404 or 403 to that read, or neither feature listed), a read
    /// of a tag operation that does not exist (404 allowed, 403 refused) shows at least that
    /// the tag operations are open to the account.
    fn role(&self) -> anyhow::Result<String> {
        let reply = self.api.send_raw(&Call::new(Method::GET, PERMISSIONS))?;
        let listed = match reply.status {
            200..=299 => reply.json::<Permissions>("NSX")?.feature_permissions,
            403 | 404 => Vec::new(),
            _ => {
                return Err(self.api.error(&reply))
                    .context("NSX Policy: reading the account's permissions");
            }
        };
        match role_verdict(&listed) {
            Some(verdict) => verdict,
            None => {
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

/// The role the Policy backend needs, in the words of NSX's role editor and by feature id.
const NEEDED: &str = "read-only on Virtual Machines, full access on Tags (feature ids: crud on policy_vm_vm_tags, read on vm_vm_info)";

/// `GET /api/v1/aaa/user-info/permissions`: the account's permission on each feature. Not in
/// VMware's API reference; its entries are the bindings' `FeaturePermission` (`feature`, the
/// id, and `permission`, one of crud/read/execute/none, required; `feature_name` optional).
#[derive(Deserialize, Default)]
struct Permissions {
    #[serde(default, alias = "results", deserialize_with = "lenient")]
    feature_permissions: Vec<FeaturePermission>,
}

#[derive(Deserialize, Default)]
struct FeaturePermission {
    #[serde(default, deserialize_with = "lenient")]
    feature: String,
    #[serde(default, deserialize_with = "lenient")]
    feature_name: String,
    #[serde(default, deserialize_with = "lenient")]
    permission: String,
}

/// The permission listed for a feature: by its id, else (an older manager, which names the
/// feature only, or by another id) by its name. Only `check` asks: a role misread here is a
/// wrong line in its report, never a change refused or made.
fn permission<'a>(listed: &'a [FeaturePermission], (id, name): (&str, &str)) -> Option<&'a str> {
    let by_id = listed.iter().find(|f| f.feature == id);
    let by_name = || {
        listed
            .iter()
            .find(|f| f.feature_name.eq_ignore_ascii_case(name))
    };
    by_id.or_else(by_name).map(|f| f.permission.as_str())
}

/// Whether the listed permissions suffice (`None`: neither feature is listed, so they say
/// nothing).
fn role_verdict(listed: &[FeaturePermission]) -> Option<anyhow::Result<String>> {
    let (tags, vms) = (
        permission(listed, TAGS_FEATURE),
        permission(listed, VMS_FEATURE),
    );
    match (tags, vms) {
        (None, None) => None,
        (Some("crud"), Some("crud" | "read")) => Some(Ok(format!(
            "the account's role has what it needs ({NEEDED})"
        ))),
        (tags, vms) => Some(Err(fault(
            Exit::NoPerm,
            format!(
                "NSX Policy: the account's role has {:?} on {} and {:?} on {}; it needs {NEEDED}: in NSX (System > User Management > Roles) give its role full access on Inventory > Tags and read-only on Inventory > Virtual Machines",
                tags.unwrap_or("none"),
                TAGS_FEATURE.0,
                vms.unwrap_or("none"),
                VMS_FEATURE.0,
            ),
        ))),
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
        let (outcome, seen) = if reply.is_success() {
            self.follow(&path, &id, vm, add)
                .with_context(|| what.clone())?
        } else if reply.status == 404 && crate::nsx::json_api::error_code(&reply) == Some(404) {
            return Err(fault(
                Exit::Unavailable,
                format!(
                    "{what}: the manager has no Policy tag operations ({}); VMware's API bindings have them from NSX-T 3.0 on: upgrade the manager, or set nsx.kind = \"nsx-t\"",
                    error_text(&reply)
                ),
            ));
        } else if matches!(reply.status, 400 | 404 | 409) {
            (Outcome::Error(error_text(&reply)), None)
        } else {
            return Err(self.api.error(&reply)).with_context(|| what.clone());
        };
        if let Outcome::Error(details) = outcome {
            return self.failed(vm, add, &what, &id, &details);
        }
        // The status names the VM with Success: a read made beside it may already show the
        // change; else the VM is read again, a few times (the inventory may show a change a
        // moment after the operation reports it).
        match seen {
            Some(Seen::Changed) => return Ok(()),
            Some(Seen::Gone) if !add => return self.gone(vm),
            _ => {}
        }
        for attempt in 1..=READ_BACKS {
            let now = self
                .seen(vm, add)
                .with_context(|| format!("{what}: reading back"))?;
            match now {
                Seen::Changed => return Ok(()),
                Seen::Gone if !add => return self.gone(vm),
                _ => {}
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

    /// The VMs that carry our tag now: from the tag's effective resources (exact), else (a
    /// manager without them) from the Policy search, else (its index being built, behind, or
    /// no search) from the realized-state list, read page by page.
    fn every_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        if let Some(found) = self
            .api
            .effective_tagged()
            .context("listing the VMs NSX has tagged")?
        {
            return Ok(found);
        }
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

    #[test]
    fn a_status_reads_leniently_and_an_unknown_status_is_never_success() {
        // Nulls and missing optional fields are empty, not errors.
        let ended: OperationStatus = serde_json::from_str(
            r#"{"status":"Success","apply_to":[{"resource_type":"VirtualMachine","resource_tag_status":[
                  {"resource_id":"5012a","tag_status":"Success","details":null}]}],"remove_from":null}"#,
        )
        .expect("parses");
        assert!(matches!(
            outcome_for(&ended, &vm(), true, "op1"),
            Ok(Outcome::Success)
        ));
        // A VM entry without tag_status, or with one otnsx does not know: not success.
        for entry in [
            r#"{"resource_id":"5012a"}"#,
            r#"{"resource_id":"5012a","tag_status":"PartialSuccess"}"#,
            r#"{"resource_id":"5012a","tag_status":null}"#,
        ] {
            let status: OperationStatus = serde_json::from_str(&format!(
                r#"{{"status":"Success","apply_to":[{{"resource_type":"VirtualMachine","resource_tag_status":[{entry}]}}]}}"#
            ))
            .expect("parses");
            assert!(
                matches!(
                    outcome_for(&status, &vm(), true, "op1"),
                    Ok(Outcome::Error(_))
                ),
                "{entry}"
            );
        }
        // No status at all parses (to an empty one, which `follow` calls unknown).
        let bare: OperationStatus = serde_json::from_str("{}").expect("parses");
        assert_eq!(bare.status, "");
    }

    fn listed(json: &str) -> Vec<FeaturePermission> {
        serde_json::from_str::<Permissions>(json)
            .expect("parses")
            .feature_permissions
    }

    #[test]
    fn the_role_is_read_by_feature_id_or_else_by_name() {
        let least = listed(
            r#"{"feature_permissions":[
              {"feature":"policy_vm_vm_tags","feature_name":"Tags","permission":"crud","is_internal":false},
              {"feature":"vm_vm_info","feature_name":"Virtual Machines","permission":"read"},
              {"feature":"policy_groups","feature_name":"Groups","permission":"none"}]}"#,
        );
        assert!(matches!(role_verdict(&least), Some(Ok(_))));
        // Renamed in the UI, the ids still count; a name alone does not beat an id.
        let renamed = listed(
            r#"{"feature_permissions":[
              {"feature":"policy_vm_vm_tags","feature_name":"VM Tags","permission":"crud"},
              {"feature":"vm_vm_info","permission":"crud"},
              {"feature":"other","feature_name":"Tags","permission":"read"}]}"#,
        );
        assert!(matches!(role_verdict(&renamed), Some(Ok(_))));
        // An older manager names the features only, or gives them other ids.
        let by_name = listed(
            r#"{"feature_permissions":[{"feature_name":"Tags","permission":"crud"},{"feature_name":"Virtual Machines","permission":"read"}]}"#,
        );
        assert!(matches!(role_verdict(&by_name), Some(Ok(_))));
        let other_ids = listed(
            r#"{"feature_permissions":[{"feature":"vm_tags","feature_name":"Tags","permission":"crud"},{"feature":"vm_vm_info","permission":"read"}]}"#,
        );
        assert!(matches!(role_verdict(&other_ids), Some(Ok(_))));
        // Read only on tags: refused, naming the feature id and the fix.
        let reader = listed(
            r#"{"feature_permissions":[{"feature":"policy_vm_vm_tags","permission":"read"},{"feature":"vm_vm_info","permission":"read"}]}"#,
        );
        let Some(Err(e)) = role_verdict(&reader) else {
            panic!("refused")
        };
        let text = format!("{e:#}");
        assert!(
            text.contains("\"read\" on policy_vm_vm_tags")
                && text.contains("full access on Inventory > Tags"),
            "{text}"
        );
        // Neither listed: the permissions say nothing.
        assert!(role_verdict(&listed(r#"{"feature_permissions":[]}"#)).is_none());
        assert!(role_verdict(&listed("{}")).is_none());
    }
}
