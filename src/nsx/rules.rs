//! Per-agent rules (`[source] mode = "agent"`, Policy API): instead of a tag, each opening is a
//! distributed-firewall rule in the security policy the site made for otnsx
//! (`/infra/domains/{domain}/security-policies/{id}`), from the locking agent's desktop
//! addresses to the VM (a group of its external id) for the profile's services, ALLOW. One
//! rule per VM, profile and agent; its tags name what it opens, so that `reconcile` and
//! `revoke --all` find otnsx's rules (never the site's own). A rule is written with its
//! `_revision`: a 412 is read again and decided again, never sent blindly again. A rule whose
//! content differs from what otnsx wrote (edited by hand) counts as tampered: made again while
//! a lease holds it, removed when none does.

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
use crate::http::{Call, encode, query};
use crate::nsx::backend::{Confirms, Found, Membership, TagBackend};
use crate::nsx::json_api::{JsonApi, TagWriter, json_call};
use crate::nsx::policy::NsxPolicy;
use crate::sync::lock;

/// Writes of one rule answered 412 (changed meanwhile) before the run gives up on it.
const MAX_CONFLICTS: usize = 3;

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
    #[serde(default, rename = "_revision")]
    pub revision: Option<i64>,
}

impl Rule {
    /// What keeping it costs, for a paged read's limit.
    fn cost(&self) -> usize {
        let lists = [
            &self.source_groups,
            &self.destination_groups,
            &self.services,
            &self.scope,
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
        cost(strings) + 128
    }
}

#[derive(Deserialize)]
struct RulePage {
    #[serde(default)]
    results: Vec<Rule>,
    #[serde(default)]
    cursor: Option<String>,
}

pub struct AgentRules {
    inner: NsxPolicy,
    source: AgentSource,
    profiles: Vec<Profile>,
    /// The keys of the openings whose rule the last read found edited.
    tampered: Mutex<BTreeSet<String>>,
    warnings: Mutex<Vec<String>>,
    /// The desktop addresses found by `source.desktop`, by agent (or why none were).
    desktops: Mutex<BTreeMap<String, Result<Vec<String>, crate::error::Kept>>>,
    /// One lock per VM group, held while the group is made and a rule written into it, and
    /// while it is removed after its last rule: changes run at once, and a rule must never be
    /// written to a group being removed. Other VMs' changes go on meanwhile. (Runs are
    /// serialised by the state lock.)
    groups: Mutex<BTreeMap<String, std::sync::Arc<Mutex<()>>>>,
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
    fn wanted(&self, vm: &VmRef) -> anyhow::Result<(String, Value)> {
        let agent = vm.agent.as_deref().unwrap_or_default();
        let addresses = self.desktop(agent)?;
        let profile = self
            .profiles
            .iter()
            .find(|p| p.key == vm.profile)
            .ok_or_else(|| crate::nsx::backend::unknown_profile(vm))?;
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
            "action": "ALLOW",
            "direction": "IN_OUT",
            "scope": ["ANY"],
            "tags": tags,
        });
        Ok((id, body))
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
            .map(Clone::clone)
            .map_err(crate::error::Kept::again)
    }

    fn desktop_addresses(&self, name: &str, agent: &str) -> anyhow::Result<Vec<String>> {
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
        if !dropped.is_empty() {
            lock(&self.warnings).push(format!(
                "agent {:?}'s desktop {:?}: {} left out of the rule's sources",
                crate::escape::shorten(agent),
                crate::escape::shorten(name),
                dropped.join(", ")
            ));
        }
        Ok(addresses)
    }

    /// Whether a rule NSX holds opens exactly what otnsx wrote, and nothing more.
    fn intact(rule: &Rule, wanted: &Value) -> bool {
        let set = |v: &Value| -> BTreeSet<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let mine = |list: &[String]| list.iter().cloned().collect::<BTreeSet<String>>();
        mine(&rule.source_groups) == set(&wanted["source_groups"])
            && mine(&rule.destination_groups) == set(&wanted["destination_groups"])
            && mine(&rule.services) == set(&wanted["services"])
            && rule.action == "ALLOW"
            && !rule.disabled
            && !rule.sources_excluded
            && !rule.destinations_excluded
            && rule.direction.as_deref().is_none_or(|d| d == "IN_OUT")
            && (rule.scope.is_empty() || rule.scope == ["ANY"])
    }

    /// Each rule in the security policy, page by page, given to `keep`, which says what it
    /// kept ([`cost`]): only that stays of a page (see [`Pages`] for the limits). A policy
    /// that does not exist is a configuration error.
    fn each_rule(&self, keep: &mut dyn FnMut(Rule) -> usize) -> anyhow::Result<()> {
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
            for rule in page.results {
                pages.kept(keep(rule))?;
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

    /// The lock of `vm`'s group (see `groups`).
    fn group_lock(&self, vm: &VmRef) -> std::sync::Arc<Mutex<()>> {
        lock(&self.groups)
            .entry(Self::group_id(vm))
            .or_default()
            .clone()
    }

    /// The VM's group, made if it is missing (PATCH: made or left as it is).
    fn ensure_group(&self, vm: &VmRef) -> anyhow::Result<()> {
        let path = format!(
            "/policy/api/v1/infra/domains/{}/groups/{}",
            encode(&self.source.domain),
            encode(&Self::group_id(vm))
        );
        let body = json!({
            "display_name": format!("otnsx: {}", vm.name),
            "expression": [{"resource_type": "ExternalIDExpression", "member_type": "VirtualMachine",
                            "external_ids": [vm.id]}],
            "tags": [{"scope": "otnsx", "tag": "vm-group"}],
        });
        self.api()
            .send(&json_call(Method::PATCH, &path, &body))
            .with_context(|| format!("NSX Policy: making the group of {vm}"))?;
        Ok(())
    }

    fn open(&self, vm: &VmRef) -> anyhow::Result<()> {
        let what = format!("NSX Policy: opening {vm}");
        let (id, wanted) = self.wanted(vm).with_context(|| what.clone())?;
        let group = self.group_lock(vm);
        let _group = lock(&group);
        self.ensure_group(vm)?;
        for _ in 0..MAX_CONFLICTS {
            let current = self.read_rule(&id).with_context(|| what.clone())?;
            if current.as_ref().is_some_and(|r| Self::intact(r, &wanted)) {
                return Ok(());
            }
            let mut body = wanted.clone();
            if let Some(revision) = current.and_then(|r| r.revision) {
                body["_revision"] = json!(revision);
            }
            let reply = self
                .api()
                .send_raw(&json_call(Method::PUT, &self.rule_path(&id), &body))
                .with_context(|| what.clone())?;
            if reply.status == 412 {
                continue; // changed meanwhile: read again, decide again
            }
            if reply.status == 404 {
                return Err(self.no_policy());
            }
            if !reply.is_success() {
                return Err(self.api().error(&reply)).with_context(|| what.clone());
            }
            // The answer echoes what was sent; only a read shows what NSX holds.
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
                "{what}: rule {id} kept changing under otnsx's writes ({MAX_CONFLICTS} times 412); try again"
            ),
        ))
    }

    fn close(&self, vm: &VmRef) -> anyhow::Result<()> {
        let id = rule_id(&vm.key());
        let what = format!("NSX Policy: closing {vm}");
        if self.read_rule(&id).with_context(|| what.clone())?.is_none() {
            return Ok(());
        }
        let reply = self
            .api()
            .send_raw(&Call::new(Method::DELETE, self.rule_path(&id)))
            .with_context(|| what.clone())?;
        if !reply.is_success() && reply.status != 404 {
            return Err(self.api().error(&reply)).with_context(|| what.clone());
        }
        if self
            .read_rule(&id)
            .with_context(|| format!("{what}: reading back"))?
            .is_some()
        {
            return Err(fault(
                Exit::Unavailable,
                format!("{what}: rule {id} was deleted but reads back (unverified)"),
            ));
        }
        // The VM's group goes with its last rule (a group alone opens nothing).
        let held = self.group_lock(vm);
        let _group = lock(&held);
        let group = self.group_path(vm);
        let mut used = false;
        let listed = self.each_rule(&mut |rule| {
            used = used || rule.destination_groups.contains(&group);
            0
        });
        match listed {
            Ok(()) if !used => {
                let path = format!("/policy/api/v1{group}");
                if let Err(e) = self.api().send(&Call::new(Method::DELETE, path)) {
                    lock(&self.warnings).push(format!("the group of {vm} stays: {e:#}"));
                }
            }
            _ => {}
        }
        Ok(())
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
        self.inner.prepare(&[], finding);
    }

    fn done_finding(&self) {
        self.inner.done_finding();
    }

    /// One read of the policy's rules: which of `vms` have their rule, and which of those
    /// were edited.
    fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>> {
        if vms.is_empty() {
            return Ok(BTreeSet::new());
        }
        let wanted: BTreeSet<String> = vms.iter().map(|vm| rule_id(&vm.key())).collect();
        let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
        self.each_rule(&mut |rule| {
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

    fn all_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        let mut tampered = lock(&self.tampered);
        let mut out = Vec::new();
        self.each_rule(&mut |rule| {
            let Some(vm) = Self::target_of(&rule) else {
                return 0;
            };
            if !self.wanted(&vm).is_ok_and(|(_, w)| Self::intact(&rule, &w)) {
                tampered.insert(vm.key());
            }
            let kept = cost([vm.name.as_str(), vm.id.as_str()]);
            out.push(vm);
            kept
        })?;
        Ok(out)
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
        let reply = self
            .api()
            .send_raw(&Call::new(Method::GET, self.policy_path()))?;
        if reply.status == 404 {
            return Err(self.no_policy());
        }
        if !reply.is_success() {
            return Err(self.api().error(&reply));
        }
        let policy: Value = reply.json("NSX")?;
        // NSX marks an object its reader may not change as PROTECTED.
        if policy["_protection"].as_str() == Some("PROTECTED") {
            return Err(fault(
                Exit::NoPerm,
                format!(
                    "NSX Policy: security policy {}/{} is PROTECTED: the account may not write rules into it; give its role full access on Security > Distributed Firewall, or let otnsx own the policy",
                    self.source.domain, self.source.security_policy
                ),
            ));
        }
        let rules = self.all_tagged()?.len();
        let agents = self.source.agents.len();
        Ok(format!(
            "{inventory}; security policy {}/{} exists and may be written; {rules} rule(s) of otnsx's in it; {agents} agent(s) mapped to desktop addresses",
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
