//! Per-agent rules (`[source] mode = "agent"`, Policy API): instead of a tag, each opening is a
//! distributed-firewall rule in the security policy the site made for otnsx
//! (`/infra/domains/{domain}/security-policies/{id}`), from the locking agent's desktop
//! addresses to the VM (a group of its external id) for the profile's services, ALLOW, applied
//! to that group only (its Applied-To, as VMware's own tools scope rules; the policy's own
//! Applied-To instead, when the site set one). One rule per VM, profile and agent; its tags
//! name what it opens. The rule and its group are written together, in one hierarchical
//! write (`PATCH /policy/api/v1/infra`), and read back.
//!
//! The policy is otnsx's alone: every rule in it is compared whole with the opening it stands
//! for (a rule edited by hand is made again while a lease holds it, removed when none does),
//! and a rule that stands for no opening (the site's, or otnsx's with its tags edited) is a
//! stray: `reconcile` and `revoke --all` remove it when it lets anything through, after
//! journaling it whole, and leave it (and `check` reports it) when it only restricts. A VM
//! group of otnsx's that no rule uses any more is removed by them too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};
use ureq::http::Method;

use crate::config::{AgentSource, Profile};
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};
use crate::http::pages::{Pages, cost};
use crate::http::{Call, ServiceError, encode, query};
use crate::nsx::backend::{Confirms, Found, Membership, Stray, StrayKind, TagBackend};
use crate::nsx::json_api::{JsonApi, TagWriter, json_call};
use crate::nsx::policy::NsxPolicy;
use crate::sync::lock;

/// Writes of one rule answered "changed meanwhile" before the run gives up on it.
const MAX_CONFLICTS: usize = 4;
/// The hierarchical Policy API: several objects in one write.
const HIERARCHY: &str = "/policy/api/v1/infra";
/// The tag of the VM groups otnsx makes.
const GROUP_TAG: (&str, &str) = ("otnsx", "vm-group");
/// A group still used by a rule (or by one whose deletion is not yet realized).
const GROUP_IN_USE: i64 = 500030;

/// Whether NSX refused a write because the object changed (or was being changed) meanwhile:
/// 409 and 412; 400 with 500087 (stale revision), 500232 or 100148 (concurrent update); 404
/// with 500090 (the object is being deleted or was not yet made), as VMware's own client
/// library (vmware-nsxlib) reads them. Read again and decided again, never sent blindly again.
fn stale(reply: &crate::http::Reply) -> bool {
    let code = crate::nsx::json_api::error_code(reply);
    match reply.status {
        409 | 412 => true,
        400 => matches!(code, Some(500087 | 500232 | 100148)),
        404 => code == Some(500090),
        _ => false,
    }
}

/// A rule as NSX lists it, as far as otnsx compares it.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Rule {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub source_groups: Vec<String>,
    #[serde(default)]
    pub destination_groups: Vec<String>,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub sources_excluded: bool,
    #[serde(default)]
    pub destinations_excluded: bool,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub scope: Vec<String>,
    #[serde(default)]
    pub tags: Vec<crate::nsx::json_api::Tag>,
    /// Ports and protocols given in the rule itself, beside `services`.
    #[serde(default)]
    pub service_entries: Vec<Value>,
    /// Context profiles (layer 7, FQDN).
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub ip_protocol: Option<String>,
}

impl Rule {
    /// What keeping it costs, for a paged read's limit.
    fn cost(&self) -> usize {
        let lists = [
            &self.source_groups,
            &self.destination_groups,
            &self.services,
            &self.scope,
            &self.profiles,
        ];
        let strings = lists
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain([self.id.as_str(), self.action.as_str()])
            .chain(
                self.tags
                    .iter()
                    .flat_map(|t| [t.scope.as_str(), t.tag.as_str()]),
            );
        cost(strings) + 128 + 64 * self.service_entries.len()
    }

    /// Whether it lets traffic through: anything but DROP and REJECT (ALLOW, and the
    /// environment category's JUMP_TO_APPLICATION, which lets the next category decide).
    fn opens(&self) -> bool {
        !matches!(self.action.as_str(), "DROP" | "REJECT")
    }

    /// In a few words, for the journal and `check`.
    fn summary(&self) -> String {
        let list = |l: &[String]| match l.is_empty() {
            true => "ANY".to_string(),
            false => l.join(","),
        };
        let mut out = format!(
            "rule {} ({} {} to {}, services {}",
            self.id,
            if self.action.is_empty() {
                "?"
            } else {
                self.action.as_str()
            },
            list(&self.source_groups),
            list(&self.destination_groups),
            list(&self.services)
        );
        if !self.service_entries.is_empty() {
            out.push_str(&format!(
                " and {} service entries",
                self.service_entries.len()
            ));
        }
        if self.disabled {
            out.push_str(", disabled");
        }
        out.push(')');
        out
    }
}

#[derive(Deserialize)]
struct RulePage {
    #[serde(default)]
    results: Vec<Value>,
    #[serde(default)]
    cursor: Option<String>,
}

/// The security policy as the site set it up, read once per run: its Applied-To, and what a
/// hierarchical write sends back of it unchanged.
#[derive(Clone)]
struct PolicyInfo {
    /// The policy's own Applied-To (group paths), empty when it has none (`ANY`).
    scope: Vec<String>,
    /// The policy's writable fields as read: a hierarchical write carries the policy whole.
    body: Value,
}

/// A desktop's addresses, and what was left out of them (said once, see `desktops`).
type Desktop = (Vec<String>, Option<String>);

pub struct AgentRules {
    inner: NsxPolicy,
    source: AgentSource,
    profiles: Vec<Profile>,
    /// The keys of the openings whose rule the last read found edited.
    tampered: Mutex<BTreeSet<String>>,
    warnings: Mutex<Vec<String>>,
    /// The desktop addresses found by `source.desktop`, by agent (or why none were).
    /// With the addresses: what was left out of them, said once, with the opening that uses them.
    desktops: Mutex<BTreeMap<String, Result<Desktop, crate::error::Kept>>>,
    /// One lock per VM group, held while the group is made and a rule written into it, and
    /// while it is removed after its last rule: changes run at once, and a rule must never be
    /// written to a group being removed. Other VMs' changes go on meanwhile. (Runs are
    /// serialised by the state lock.)
    groups: Mutex<BTreeMap<String, std::sync::Arc<Mutex<()>>>>,
    /// The security policy, read once (beside the ticket read for an event).
    policy: std::sync::OnceLock<Result<PolicyInfo, crate::error::Kept>>,
    /// The openings the leases know, by rule id ([`TagBackend::known`]).
    known: Mutex<BTreeMap<String, VmRef>>,
    /// What the last listing found that no opening explains.
    strays: Mutex<Vec<Stray>>,
}

impl AgentRules {
    pub fn new(inner: NsxPolicy, source: AgentSource, profiles: Vec<Profile>) -> Self {
        AgentRules {
            inner,
            source,
            profiles,
            tampered: Mutex::new(BTreeSet::new()),
            warnings: Mutex::new(Vec::new()),
            groups: Mutex::new(BTreeMap::new()),
            desktops: Mutex::new(BTreeMap::new()),
            policy: std::sync::OnceLock::new(),
            known: Mutex::new(BTreeMap::new()),
            strays: Mutex::new(Vec::new()),
        }
    }

    fn api(&self) -> &JsonApi {
        self.inner.api()
    }

    fn policy_path(&self) -> String {
        format!(
            "/policy/api/v1/infra/domains/{}/security-policies/{}",
            encode(&self.source.domain),
            encode(&self.source.security_policy)
        )
    }

    fn rule_path(&self, id: &str) -> String {
        format!("{}/rules/{}", self.policy_path(), encode(id))
    }

    /// The group of one VM (by external id) that rules name as their destination.
    fn group_id(vm: &VmRef) -> String {
        let safe: String = vm
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        format!("otnsx-vm-{safe}")
    }

    fn group_path(&self, vm: &VmRef) -> String {
        format!(
            "/infra/domains/{}/groups/{}",
            self.source.domain,
            Self::group_id(vm)
        )
    }

    /// The rule otnsx writes for `vm` (under its profile, from its agent's desktop), and its id.
    /// Every field otnsx compares is written out, so that writing it puts back whatever a hand
    /// edit changed, whether NSX replaces the rule or merges into it.
    fn wanted(&self, vm: &VmRef) -> anyhow::Result<(String, Value)> {
        let agent = vm.agent.as_deref().unwrap_or_default();
        let addresses = self.desktop(agent)?;
        let profile = self
            .profiles
            .iter()
            .find(|p| p.key == vm.profile)
            .ok_or_else(|| crate::nsx::backend::unknown_profile(vm))?;
        let policy = self.policy()?;
        let id = rule_id(&vm.key());
        let mut sources = addresses.clone();
        sources.sort();
        let mut tags = vec![
            json!({"scope": "otnsx-vm", "tag": vm.name}),
            json!({"scope": "otnsx-vm-id", "tag": vm.id}),
            json!({"scope": "otnsx-agent", "tag": agent}),
        ];
        if let Some(p) = &vm.profile {
            tags.push(json!({"scope": "otnsx-profile", "tag": p}));
        }
        // Applied to the VM's group only: the rule is programmed on that VM's interfaces, not
        // on every interface of the distributed firewall. Where the site gave the policy an
        // Applied-To of its own, NSX applies that one, and the rule's is ANY.
        let scope = match policy.scope.is_empty() {
            true => json!([self.group_path(vm)]),
            false => json!(["ANY"]),
        };
        let body = json!({
            "resource_type": "Rule",
            "id": id,
            // NSX takes at most 255 characters of a display name.
            "display_name": format!("otnsx: {} ({}) from {agent}", vm.name, profile.name)
                .chars()
                .take(255)
                .collect::<String>(),
            "source_groups": sources,
            "destination_groups": [self.group_path(vm)],
            "services": profile.services,
            "service_entries": [],
            "profiles": ["ANY"],
            "action": "ALLOW",
            "direction": "IN_OUT",
            "ip_protocol": "IPV4_IPV6",
            "scope": scope,
            "disabled": false,
            "sources_excluded": false,
            "destinations_excluded": false,
            "tags": tags,
        });
        Ok((id, body))
    }

    /// The security policy, read once per run: a policy that does not exist is a
    /// configuration error, one the account may not change a permission error.
    fn policy(&self) -> anyhow::Result<PolicyInfo> {
        let read = || -> anyhow::Result<PolicyInfo> {
            let reply = self
                .api()
                .send_raw(&Call::new(Method::GET, self.policy_path()))?;
            if reply.status == 404 {
                return Err(self.no_policy());
            }
            if !reply.is_success() {
                return Err(self.api().error(&reply));
            }
            let mut body: Value = reply.json("NSX")?;
            // NSX marks an object its reader may not change as PROTECTED.
            if body["_protection"].as_str() == Some("PROTECTED") {
                return Err(fault(
                    Exit::NoPerm,
                    format!(
                        "NSX Policy: security policy {}/{} is PROTECTED: the account may not write rules into it; give its role full access on Security > Distributed Firewall, or let otnsx own the policy",
                        self.source.domain, self.source.security_policy
                    ),
                ));
            }
            let scope: Vec<String> = body["scope"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|s| *s != "ANY")
                .map(str::to_string)
                .collect();
            if let Some(fields) = body.as_object_mut() {
                // What the server keeps itself, and the rules (written one by one as children).
                fields.retain(|k, _| {
                    !k.starts_with('_') && !["rules", "children"].contains(&k.as_str())
                });
            }
            Ok(PolicyInfo { scope, body })
        };
        self.policy
            .get_or_init(|| read().map_err(|e| crate::error::Kept::of(&e)))
            .clone()
            .map_err(|e| e.again())
    }

    /// The addresses of `agent`'s desktop: listed in `[agents]`, else those NSX knows for
    /// the interfaces of the VM `source.desktop` names (found once per run).
    fn desktop(&self, agent: &str) -> anyhow::Result<Vec<String>> {
        if let Some(listed) = self.source.agents.get(agent) {
            return Ok(listed.clone());
        }
        let Some(pattern) = &self.source.desktop else {
            return Err(no_desktop(agent));
        };
        let mut known = lock(&self.desktops);
        let found = known.entry(agent.to_string()).or_insert_with(|| {
            self.desktop_addresses(&pattern.replace("{login}", agent), agent)
                .map_err(|e| crate::error::Kept::of(&e))
        });
        found
            .as_ref()
            .map(|(addresses, _)| addresses.clone())
            .map_err(crate::error::Kept::again)
    }

    /// What was left out of `agent`'s desktop addresses, if anything, the first time it is
    /// asked: said with the opening that uses them (a close or a listing reads them too, and
    /// says nothing).
    fn desktop_warning(&self, agent: &str) -> Option<String> {
        match lock(&self.desktops).get_mut(agent) {
            Some(Ok((_, warning))) => warning.take(),
            _ => None,
        }
    }

    fn desktop_addresses(&self, name: &str, agent: &str) -> anyhow::Result<Desktop> {
        let refused = |why: String| {
            fault(
                Exit::NoPerm,
                format!(
                    "agent {:?}'s desktop {:?} {why}: nothing is opened for them; list its addresses in [agents]",
                    crate::escape::shorten(agent),
                    crate::escape::shorten(name)
                ),
            )
        };
        let vm = match self.api().find_by_name(name) {
            Ok(vm) => vm,
            Err(e) if crate::error::exit_code(&e) == Exit::DataErr => {
                return Err(refused(format!("is not found ({e:#})")));
            }
            Err(e) => return Err(e),
        };
        let path = format!(
            "/api/v1/fabric/vifs{}",
            query([("owner_vm_id", vm.id.as_str())])
        );
        let reply = self.api().send(&Call::new(Method::GET, path))?;
        let body: Value = reply.json("NSX")?;
        let mut reported: Vec<std::net::IpAddr> = body["results"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|vif| {
                vif["ip_address_info"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|info| info["ip_addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|ip| ip.as_str().and_then(|t| t.parse::<std::net::IpAddr>().ok()))
            // ::ffff:10.1.2.3 is 10.1.2.3.
            .map(|ip| ip.to_canonical())
            .collect();
        reported.sort();
        reported.dedup();
        if reported.is_empty() {
            return Err(refused(
                "has no address NSX knows (are VMware Tools running?)".into(),
            ));
        }
        let listed = self.source.listed_networks();
        let (addresses, dropped) = desktop_sources(&reported, &listed);
        if addresses.is_empty() {
            return Err(refused(format!(
                "shows no address of its own, only {}",
                dropped.join(", ")
            )));
        }
        let warning = (!dropped.is_empty()).then(|| {
            format!(
                "agent {:?}'s desktop {:?}: {} left out of the rule's sources",
                crate::escape::shorten(agent),
                crate::escape::shorten(name),
                dropped.join(", ")
            )
        });
        Ok((addresses, warning))
    }

    /// Whether a rule NSX holds is exactly what otnsx wrote: sources, destinations, services,
    /// no service entries or context profiles, its Applied-To, ALLOW both ways, enabled,
    /// nothing negated, and its tags.
    fn intact(rule: &Rule, wanted: &Value) -> bool {
        let set = |v: &Value| -> BTreeSet<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let mine = |list: &[String]| list.iter().cloned().collect::<BTreeSet<String>>();
        // NSX may leave out a list that is ANY.
        let any_if_empty = |list: &[String]| match list.is_empty() {
            true => BTreeSet::from(["ANY".to_string()]),
            false => mine(list),
        };
        let tags = |list: &[crate::nsx::json_api::Tag]| -> BTreeSet<(String, String)> {
            list.iter()
                .map(|t| (t.scope.clone(), t.tag.clone()))
                .collect()
        };
        let wanted_tags: BTreeSet<(String, String)> = wanted["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let part = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                (part("scope"), part("tag"))
            })
            .collect();
        mine(&rule.source_groups) == set(&wanted["source_groups"])
            && mine(&rule.destination_groups) == set(&wanted["destination_groups"])
            && mine(&rule.services) == set(&wanted["services"])
            && rule.service_entries.is_empty()
            && any_if_empty(&rule.profiles) == set(&wanted["profiles"])
            && any_if_empty(&rule.scope) == set(&wanted["scope"])
            && rule.action == "ALLOW"
            && !rule.disabled
            && !rule.sources_excluded
            && !rule.destinations_excluded
            && rule.direction.as_deref().is_none_or(|d| d == "IN_OUT")
            && rule.ip_protocol.as_deref().is_none_or(|p| p == "IPV4_IPV6")
            && tags(&rule.tags) == wanted_tags
    }

    /// Each rule in the security policy, page by page, given to `keep`, which says what it
    /// kept ([`cost`]): only that stays of a page (see [`Pages`] for the limits). A policy
    /// that does not exist is a configuration error.
    fn each_rule(&self, keep: &mut dyn FnMut(Rule, Value) -> usize) -> anyhow::Result<()> {
        let mut pages = Pages::new(format!(
            "NSX Policy: listing rules of security policy {}/{}",
            self.source.domain, self.source.security_policy
        ));
        let mut cursor: Option<String> = None;
        loop {
            let mut pairs = vec![("page_size", "1000")];
            if let Some(c) = &cursor {
                pairs.push(("cursor", c));
            }
            let path = format!("{}/rules{}", self.policy_path(), query(pairs));
            let reply = self.api().send_raw(&Call::new(Method::GET, path))?;
            if reply.status == 404 {
                return Err(self.no_policy());
            }
            if !reply.is_success() {
                return Err(self.api().error(&reply));
            }
            let page: RulePage = reply.json("NSX")?;
            drop(reply);
            pages.page(page.results.len())?;
            let empty = page.results.is_empty();
            for raw in page.results {
                let rule: Rule = serde_json::from_value(raw.clone()).map_err(|e| {
                    ServiceError::malformed(format!(
                        "NSX Policy: a rule of security policy {}/{} is not as NSX describes rules: {e}",
                        self.source.domain, self.source.security_policy
                    ))
                })?;
                pages.kept(keep(rule, raw))?;
            }
            cursor = match pages.next(page.cursor, empty)? {
                Some(next) => Some(next),
                None => return Ok(()),
            };
        }
    }

    fn no_policy(&self) -> anyhow::Error {
        fault(
            Exit::Config,
            format!(
                "source.security_policy: NSX has no security policy {}/{}; create it (above the rule that blocks the maintenance ports) or fix source.security_policy and source.domain",
                self.source.domain, self.source.security_policy
            ),
        )
    }

    /// One rule by id: `None` when NSX has none.
    fn read_rule(&self, id: &str) -> anyhow::Result<Option<Rule>> {
        let reply = self
            .api()
            .send_raw(&Call::new(Method::GET, self.rule_path(id)))?;
        match reply.status {
            404 => Ok(None),
            _ if reply.is_success() => Ok(Some(reply.json("NSX")?)),
            _ => Err(self.api().error(&reply)),
        }
    }

    /// The VM groups of otnsx's (by their tag) in the domain that none of the paths in `used`
    /// names: left behind by a close whose group deletion NSX refused at that moment.
    fn unused_groups(&self, used: &BTreeSet<String>) -> anyhow::Result<Vec<Stray>> {
        #[derive(Deserialize)]
        struct GroupPage {
            #[serde(default)]
            results: Vec<Value>,
            #[serde(default)]
            cursor: Option<String>,
        }
        let mut pages = Pages::new(format!(
            "NSX Policy: listing the groups of domain {}",
            self.source.domain
        ));
        let mut cursor: Option<String> = None;
        let mut out = Vec::new();
        loop {
            let mut pairs = vec![("page_size", "1000")];
            if let Some(c) = &cursor {
                pairs.push(("cursor", c));
            }
            let path = format!(
                "/policy/api/v1/infra/domains/{}/groups{}",
                encode(&self.source.domain),
                query(pairs)
            );
            let reply = self.api().send(&Call::new(Method::GET, path))?;
            let page: GroupPage = reply.json("NSX")?;
            drop(reply);
            pages.page(page.results.len())?;
            let empty = page.results.is_empty();
            for group in page.results {
                let ours = group["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["scope"] == GROUP_TAG.0 && t["tag"] == GROUP_TAG.1);
                let id = group["id"].as_str().unwrap_or_default();
                let path = format!("/infra/domains/{}/groups/{id}", self.source.domain);
                if !ours || !id.starts_with("otnsx-vm-") || used.contains(&path) {
                    continue;
                }
                let content = group.to_string();
                pages.kept(cost([content.as_str(), path.as_str()]))?;
                out.push(Stray {
                    kind: StrayKind::Group,
                    summary: format!("group {id} (no rule uses it)"),
                    path,
                    content,
                });
            }
            cursor = match pages.next(page.cursor, empty)? {
                Some(next) => Some(next),
                None => return Ok(out),
            };
        }
    }

    /// The lock of `vm`'s group (see `groups`).
    fn group_lock(&self, vm: &VmRef) -> std::sync::Arc<Mutex<()>> {
        lock(&self.groups)
            .entry(Self::group_id(vm))
            .or_default()
            .clone()
    }

    /// The VM's group (its external id) and `rule` in one hierarchical write: a group made
    /// (or left as it is) with the rule that needs it, in one transaction. The security policy
    /// goes back as it was read: the write changes nothing of it but this one rule.
    fn hierarchy(&self, policy: &PolicyInfo, vm: &VmRef, rule: &Value) -> Value {
        let group_id = Self::group_id(vm);
        let group = json!({
            "resource_type": "Group",
            "id": group_id,
            "display_name": format!("otnsx: {}", vm.name),
            "expression": [{"resource_type": "ExternalIDExpression", "member_type": "VirtualMachine",
                            "external_ids": [vm.id]}],
            "tags": [{"scope": GROUP_TAG.0, "tag": GROUP_TAG.1}],
        });
        let mut security_policy = policy.body.clone();
        security_policy["resource_type"] = json!("SecurityPolicy");
        security_policy["id"] = json!(self.source.security_policy);
        security_policy["children"] = json!([
            {"resource_type": "ChildRule", "id": rule["id"], "Rule": rule},
        ]);
        json!({
            "resource_type": "Infra",
            "children": [{
                "resource_type": "ChildResourceReference",
                "id": self.source.domain,
                "target_type": "Domain",
                "children": [
                    {"resource_type": "ChildGroup", "id": group_id, "Group": group},
                    {"resource_type": "ChildSecurityPolicy", "id": self.source.security_policy,
                     "SecurityPolicy": security_policy},
                ],
            }],
        })
    }

    fn open(&self, vm: &VmRef) -> anyhow::Result<()> {
        let what = format!("NSX Policy: opening {vm}");
        let (id, wanted) = self.wanted(vm).with_context(|| what.clone())?;
        if let Some(warning) = self.desktop_warning(vm.agent.as_deref().unwrap_or_default()) {
            lock(&self.warnings).push(warning);
        }
        let policy = self.policy().with_context(|| what.clone())?;
        let group = self.group_lock(vm);
        let _group = lock(&group);
        let write = json_call(
            Method::PATCH,
            HIERARCHY,
            &self.hierarchy(&policy, vm, &wanted),
        );
        for _ in 0..MAX_CONFLICTS {
            let reply = self.api().send_raw(&write).with_context(|| what.clone())?;
            if stale(&reply) {
                // Changed meanwhile: read again, decide again.
                let now = self.read_rule(&id).with_context(|| what.clone())?;
                if now.is_some_and(|r| Self::intact(&r, &wanted)) {
                    return Ok(());
                }
                continue;
            }
            if !reply.is_success() {
                return Err(self.api().error(&reply)).with_context(|| what.clone());
            }
            // The answer says nothing of the rule; only a read shows what NSX holds.
            let now = self
                .read_rule(&id)
                .with_context(|| format!("{what}: reading back"))?;
            return match now {
                Some(rule) if Self::intact(&rule, &wanted) => Ok(()),
                _ => Err(fault(
                    Exit::Unavailable,
                    format!("{what}: rule {id} was accepted but reads back otherwise (unverified)"),
                )),
            };
        }
        Err(fault(
            Exit::TempFail,
            format!(
                "{what}: rule {id} kept changing under otnsx's writes ({MAX_CONFLICTS} times); try again"
            ),
        ))
    }

    fn close(&self, vm: &VmRef) -> anyhow::Result<()> {
        let id = rule_id(&vm.key());
        let what = format!("NSX Policy: closing {vm}");
        self.delete_rule(&self.rule_path(&id), &what)?;
        // The VM's group goes with its last rule (a group alone opens nothing), beside the
        // read-back. NSX refuses while another rule of the VM uses it, or while the deletion
        // of this one is not yet realized: then the next reconcile removes it.
        let held = self.group_lock(vm);
        let _group = lock(&held);
        let group = format!("/policy/api/v1{}", self.group_path(vm));
        let (gone, group) = std::thread::scope(|scope| {
            let group = scope.spawn(|| self.api().send_raw(&Call::new(Method::DELETE, group)));
            let gone = self.read_rule(&id);
            (gone, group.join())
        });
        if gone
            .with_context(|| format!("{what}: reading back"))?
            .is_some()
        {
            return Err(fault(
                Exit::Unavailable,
                format!("{what}: rule {id} was deleted but reads back (unverified)"),
            ));
        }
        match group {
            Ok(Ok(reply))
                if reply.is_success()
                    || reply.status == 404
                    || crate::nsx::json_api::error_code(&reply) == Some(GROUP_IN_USE) => {}
            Ok(Ok(reply)) => lock(&self.warnings).push(format!(
                "the group of {vm} stays until the next reconcile: {:#}",
                self.api().error(&reply)
            )),
            Ok(Err(e)) => lock(&self.warnings).push(format!(
                "the group of {vm} stays until the next reconcile: {e:#}"
            )),
            Err(_) => {}
        }
        Ok(())
    }

    /// Deletes the rule at `path` (under the policy): gone already is done; a write refused
    /// as changed meanwhile is sent again (a delete cannot undo someone's change).
    fn delete_rule(&self, path: &str, what: &str) -> anyhow::Result<()> {
        for _ in 0..MAX_CONFLICTS {
            let reply = self
                .api()
                .send_raw(&Call::new(Method::DELETE, path))
                .with_context(|| what.to_string())?;
            if reply.is_success() || (reply.status == 404 && !stale(&reply)) {
                return Ok(());
            }
            if !stale(&reply) {
                return Err(self.api().error(&reply)).with_context(|| what.to_string());
            }
        }
        Err(fault(
            Exit::TempFail,
            format!(
                "{what}: NSX kept answering that the rule changed meanwhile ({MAX_CONFLICTS} times); try again"
            ),
        ))
    }

    /// The opening a rule of otnsx's stands for, from its tags; `None` for the site's rules.
    fn target_of(rule: &Rule) -> Option<VmRef> {
        let tag = |scope: &str| {
            rule.tags
                .iter()
                .find(|t| t.scope == scope)
                .map(|t| t.tag.clone())
        };
        let id = tag("otnsx-vm-id")?;
        let vm = VmRef {
            name: tag("otnsx-vm").unwrap_or_else(|| id.clone()),
            id,
            profile: tag("otnsx-profile"),
            agent: Some(tag("otnsx-agent")?),
        };
        // Only a rule under otnsx's own id for what its tags say is otnsx's.
        (rule_id(&vm.key()) == rule.id).then_some(vm)
    }

    /// Waits for the rule's realized state: REALIZED after a write, gone after a delete; an
    /// ERROR fails at once.
    fn realized(&self, vm: &VmRef, member: bool) -> Membership {
        let id = rule_id(&vm.key());
        let intent = format!(
            "/infra/domains/{}/security-policies/{}/rules/{id}",
            self.source.domain, self.source.security_policy
        );
        let members = || -> anyhow::Result<BTreeSet<String>> {
            let path = format!(
                "/policy/api/v1/infra/realized-state/realized-entities{}",
                query([("intent_path", intent.as_str())])
            );
            let reply = self.api().send(&Call::new(Method::GET, path))?;
            let body: Value = reply.json("NSX")?;
            let states: Vec<String> = body["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["state"].as_str().map(str::to_string))
                .collect();
            if let Some(error) = states.iter().find(|s| *s == "ERROR") {
                return Err(fault(
                    Exit::Unavailable,
                    format!(
                        "rule {id} was written, but NSX's realized state is {error}: it may not be in force; unlock (or revoke) to remove it"
                    ),
                ));
            }
            // Written: every realized entity REALIZED; deleted: none left.
            let present = match member {
                true => !states.is_empty() && states.iter().all(|s| s == "REALIZED"),
                false => !states.is_empty(),
            };
            Ok(match present {
                true => BTreeSet::from([vm.id.clone()]),
                false => BTreeSet::new(),
            })
        };
        let mut m = crate::nsx::backend::await_membership(
            id.clone(),
            vm,
            member,
            self.api().deadline(),
            members,
        );
        m.kind = Confirms::Realized;
        m
    }
}

/// The rule id for an opening: `otnsx-` and a 64-bit FNV-1a hash of its key, so that the same
/// opening always has the same rule.
pub fn rule_id(key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("otnsx-{hash:016x}")
}

/// An agent without `[agents]` addresses: nothing can be opened from their desktop.
pub fn no_desktop(agent: &str) -> anyhow::Error {
    fault(
        Exit::NoPerm,
        format!(
            "agent {:?} has no desktop in [agents]: nothing is opened for them; add `{} = [\"<desktop address>\"]` to [agents]",
            crate::escape::shorten(agent),
            crate::escape::shorten(agent)
        ),
    )
}

impl TagBackend for AgentRules {
    fn find(&self, names: Vec<String>, found: &mut Found<'_>) -> anyhow::Result<()> {
        self.inner.find(names, found)
    }

    fn prepare(&self, _vms: &[VmRef], finding: bool) {
        // The policy (its Applied-To, and what a write sends back of it) beside the rest.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _ = self.policy();
            });
            self.inner.prepare(&[], finding);
        });
    }

    fn done_finding(&self) {
        self.inner.done_finding();
    }

    fn forget(&self, ids: &BTreeSet<String>, keep_closed: bool) {
        self.inner.forget(ids, keep_closed);
    }

    /// One read of the policy's rules: which of `vms` have their rule, and which of those
    /// were edited.
    fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>> {
        if vms.is_empty() {
            return Ok(BTreeSet::new());
        }
        let wanted: BTreeSet<String> = vms.iter().map(|vm| rule_id(&vm.key())).collect();
        let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
        self.each_rule(&mut |rule, _| {
            if !wanted.contains(&rule.id) {
                return 0;
            }
            let kept = rule.cost();
            rules.insert(rule.id.clone(), rule);
            kept
        })?;
        let mut tagged = BTreeSet::new();
        let mut tampered = lock(&self.tampered);
        for vm in vms {
            let key = vm.key();
            let Some(rule) = rules.get(&rule_id(&key)) else {
                continue;
            };
            tagged.insert(key.clone());
            // A rule otnsx cannot say how it should be (its agent or profile is gone from the
            // configuration) counts as edited: removed unless held, and then refused.
            if !self.wanted(vm).is_ok_and(|(_, w)| Self::intact(rule, &w)) {
                tampered.insert(key);
            }
        }
        Ok(tagged)
    }

    fn known(&self, vms: &[VmRef]) {
        let mut known = lock(&self.known);
        for vm in vms.iter().filter(|vm| vm.agent.is_some()) {
            known.insert(rule_id(&vm.key()), vm.clone());
        }
    }

    /// Every rule in the policy: an opening's (by an id the leases know, else by its tags), or
    /// a stray; then the VM groups of otnsx's that no rule uses.
    fn all_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        let known = lock(&self.known).clone();
        let mut tampered = BTreeSet::new();
        let mut strays = Vec::new();
        let mut used = BTreeSet::new();
        let mut out = Vec::new();
        self.each_rule(&mut |rule, raw| {
            used.extend(rule.destination_groups.iter().cloned());
            used.extend(rule.source_groups.iter().cloned());
            used.extend(rule.scope.iter().cloned());
            let vm = known
                .get(&rule.id)
                .cloned()
                .or_else(|| Self::target_of(&rule));
            let Some(vm) = vm else {
                let content = raw.to_string();
                let kept = cost([content.as_str()]);
                strays.push(Stray {
                    kind: match rule.opens() {
                        true => StrayKind::Opening,
                        false => StrayKind::Restricting,
                    },
                    path: format!(
                        "/infra/domains/{}/security-policies/{}/rules/{}",
                        self.source.domain, self.source.security_policy, rule.id
                    ),
                    summary: rule.summary(),
                    content,
                });
                return kept;
            };
            if !self.wanted(&vm).is_ok_and(|(_, w)| Self::intact(&rule, &w)) {
                tampered.insert(vm.key());
            }
            let kept = cost([vm.name.as_str(), vm.id.as_str()]);
            out.push(vm);
            kept
        })?;
        match self.unused_groups(&used) {
            Ok(groups) => strays.extend(groups),
            Err(e) => lock(&self.warnings).push(format!(
                "the VM groups otnsx made could not be listed, so none left behind was removed: {e:#}"
            )),
        }
        lock(&self.tampered).extend(tampered);
        *lock(&self.strays) = strays;
        Ok(out)
    }

    fn strays(&self) -> Vec<Stray> {
        lock(&self.strays).clone()
    }

    fn remove_stray(&self, stray: &Stray) -> anyhow::Result<()> {
        let path = format!("/policy/api/v1{}", stray.path);
        let what = format!("NSX Policy: removing {}", stray.summary);
        match stray.kind {
            StrayKind::Restricting => Err(fault(
                Exit::Partial,
                format!("{what}: a rule that only restricts is left where it is"),
            )),
            StrayKind::Opening => {
                self.delete_rule(&path, &what)?;
                let reply = self
                    .api()
                    .send_raw(&Call::new(Method::GET, path))
                    .with_context(|| format!("{what}: reading back"))?;
                match reply.status {
                    404 => Ok(()),
                    _ if reply.is_success() => Err(fault(
                        Exit::Unavailable,
                        format!("{what}: it was deleted but reads back (unverified)"),
                    )),
                    _ => Err(self.api().error(&reply))
                        .with_context(|| format!("{what}: reading back")),
                }
            }
            StrayKind::Group => {
                let reply = self
                    .api()
                    .send_raw(&Call::new(Method::DELETE, path))
                    .with_context(|| what.clone())?;
                if reply.is_success() || reply.status == 404 {
                    return Ok(());
                }
                Err(self.api().error(&reply)).with_context(|| what.clone())
            }
        }
    }

    fn tampered(&self) -> BTreeSet<String> {
        lock(&self.tampered).clone()
    }

    fn attach(&self, vm: &VmRef) -> anyhow::Result<()> {
        self.open(vm)
    }

    fn detach(&self, vm: &VmRef) -> anyhow::Result<()> {
        self.close(vm)
    }

    fn probe(&self) -> anyhow::Result<String> {
        // The inventory is readable (a role for rules needs no access on Tags).
        let read = Call::new(
            Method::GET,
            format!(
                "{}{}",
                crate::nsx::json_api::FABRIC_VMS,
                query([("page_size", "1")])
            ),
        );
        self.api()
            .send(&read)
            .context("reading NSX's VM inventory")?;
        let inventory = "NSX Policy answers; the VM inventory is readable".to_string();
        let policy = self.policy()?;
        let applied = match policy.scope.is_empty() {
            true => "each rule applied to its VM's group only".to_string(),
            false => format!(
                "the policy's own Applied-To ({}) applies to every rule",
                policy.scope.join(", ")
            ),
        };
        let rules = self.all_tagged()?.len();
        let agents = self.source.agents.len();
        Ok(format!(
            "{inventory}; security policy {}/{} exists and may be written ({applied}); {rules} rule(s) of otnsx's in it; {agents} agent(s) mapped to desktop addresses",
            self.source.domain, self.source.security_policy
        ))
    }

    fn take_warnings(&self) -> Vec<String> {
        let mut all = TagBackend::take_warnings(&self.inner);
        all.append(&mut lock(&self.warnings));
        all
    }

    fn membership(&self, vm: &VmRef, member: bool) -> Option<Membership> {
        self.source
            .verify_realized
            .then(|| self.realized(vm, member))
    }
}

/// A desktop VM's addresses (as NSX reports them) split into the rule's sources and those
/// left out, each said with why: unspecified, loopback, link-local, multicast or broadcast
/// (no desktop's own), or inside another agent's `[agents]` network (that agent's desktop).
pub fn desktop_sources(
    reported: &[std::net::IpAddr],
    listed: &[(&str, crate::config::Network)],
) -> (Vec<String>, Vec<String>) {
    let mut sources = Vec::new();
    let mut dropped = Vec::new();
    for &ip in reported {
        if let Some((what, _)) = crate::config::Network::host(ip).no_desktop() {
            dropped.push(format!("{ip} ({what})"));
        } else if let Some((agent, network)) = listed.iter().find(|(_, n)| n.contains(ip)) {
            dropped.push(format!(
                "{ip} (in agents.{}'s {network})",
                crate::escape::shorten(agent)
            ));
        } else {
            sources.push(ip.to_string());
        }
    }
    (sources, dropped)
}

#[cfg(test)]
mod desktop_tests {
    use super::desktop_sources;
    use crate::config::Network;

    #[test]
    fn a_desktops_sources_are_its_own_addresses_only() {
        let reported: Vec<std::net::IpAddr> = [
            "0.0.0.0",
            "10.1.2.4",
            "10.9.9.3",
            "127.0.0.1",
            "169.254.3.3",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00::93",
            "fe80::1",
            "ff02::1",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        let listed = [("agent2", Network::parse("10.1.2.4").unwrap())];
        let (sources, dropped) = desktop_sources(&reported, &listed);
        assert_eq!(sources, ["10.9.9.3", "fd00::93"]);
        assert_eq!(
            dropped,
            [
                "0.0.0.0 (unspecified)",
                "10.1.2.4 (in agents.agent2's 10.1.2.4/32)",
                "127.0.0.1 (loopback)",
                "169.254.3.3 (link-local)",
                "224.0.0.1 (multicast)",
                "255.255.255.255 (broadcast)",
                ":: (unspecified)",
                "::1 (loopback)",
                "fe80::1 (link-local)",
                "ff02::1 (multicast)",
            ]
        );
    }
}
