//! NSX for vSphere (NSX-V 6.x): the XML API of security tags. A VM is named by its vCenter
//! managed object id (`vm-42`); the tag by its object id (`securitytag-12`), found by name.

use std::collections::BTreeSet;

use anyhow::Context;
use ureq::http::Method;

use crate::config::NsxConfig;
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, Kept, fault};
use crate::http::pages::Pages;
use crate::http::{Call, Http, Reply, ServiceError, basic_auth, encode, query};
use crate::nsx::backend::{Found, TagBackend};
use crate::nsx::via_vcenter::ViaVcenter;
use crate::xml;

const TAGS: &str = "/api/2.0/services/securitytags/tag";
const PAGE_SIZE: usize = 1024;
/// NSX-V error code 101: "Concurrent object access error ... retry".
const CONCURRENT_ACCESS: &str = "101";

pub struct NsxV {
    http: Http,
    authorization: String,
    tag_name: String,
    /// The tag's object id, looked up once per run.
    tag_id: std::sync::Mutex<Option<String>>,
    /// Where the tag's id is remembered between runs (`STATE_DIR/nsx-v.tag`), if anywhere.
    tag_memory: Option<std::path::PathBuf>,
    /// Whether the remembered id is used (help-desk events) or only written (the rest).
    use_memory: bool,
    /// NSX-V tags a VM by vCenter's managed object id: vCenter finds the VMs.
    vcenter: ViaVcenter,
    /// The VMs with the tag, read once by whoever asks first (`prepare` ahead, or the first
    /// `tagged_among`; the other waits), used by the first `tagged_among` only.
    read_ahead: std::sync::OnceLock<Result<BTreeSet<String>, Kept>>,
    read_ahead_used: std::sync::atomic::AtomicBool,
    /// The security group whose members confirm that the tag has taken effect.
    verify_group: Option<String>,
}

const SECURITY_GROUPS: &str = "/api/2.0/services/securitygroup";

/// One entry of the security tag list.
#[derive(Debug, PartialEq, Eq)]
pub struct SecurityTag {
    pub id: String,
    pub name: String,
    pub system: bool,
}

/// `<pagingInfo>` of a list answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Paging {
    pub start_index: usize,
    pub total_count: usize,
}

impl NsxV {
    /// The backend for the security tag `tag_name`; `verify`: the security group to wait for
    /// (its profile's `verify_group`).
    pub fn new(
        config: &NsxConfig,
        tag_name: &str,
        verify: Option<String>,
        vcenter: ViaVcenter,
        tag_memory: Option<(std::path::PathBuf, bool)>,
        deadline: Deadline,
        verbose: bool,
    ) -> anyhow::Result<Self> {
        Ok(NsxV {
            http: Http::new("NSX", &config.endpoint, deadline, verbose)?,
            vcenter,
            authorization: basic_auth(&config.endpoint.user, &config.endpoint.password),
            tag_name: tag_name.to_string(),
            tag_id: std::sync::Mutex::new(None),
            use_memory: tag_memory.as_ref().is_some_and(|(_, used)| *used),
            tag_memory: tag_memory.map(|(path, _)| path),
            read_ahead: std::sync::OnceLock::new(),
            read_ahead_used: std::sync::atomic::AtomicBool::new(false),
            verify_group: verify,
        })
    }

    /// A 404 for the security group: it does not exist, which is a configuration error.
    fn no_group(group: &str, err: anyhow::Error) -> anyhow::Error {
        match not_found(&err) {
            true => fault(
                Exit::Config,
                format!(
                    "nsx.verify_group: NSX-V has no security group {group}; set it to the object id (securitygroup-N) of the group that the tag puts VMs into"
                ),
            ),
            false => err,
        }
    }

    /// The security group's effective VM members, by managed object id.
    fn group_members(&self, group: &str) -> anyhow::Result<BTreeSet<String>> {
        let path = format!(
            "{SECURITY_GROUPS}/{}/translation/virtualmachines",
            encode(group)
        );
        let reply = self
            .send(Call::new(Method::GET, path))
            .map_err(|e| Self::no_group(group, e))?;
        parse_vm_nodes(&xml_body(&reply)?).map_err(|why| {
            ServiceError::malformed(format!("NSX: members of security group {group}: {why}"))
        })
    }

    /// The object id of the configured tag: for a help-desk event as remembered in the state
    /// directory by an earlier run, else looked up by name (and remembered).
    pub fn tag_id(&self) -> anyhow::Result<String> {
        let mut known = crate::sync::lock(&self.tag_id);
        if let Some(id) = &*known {
            return Ok(id.clone());
        }
        if let Some(id) = self.remembered_tag_id().filter(|_| self.use_memory) {
            *known = Some(id.clone());
            return Ok(id);
        }
        let id = self.look_up_tag_id()?;
        self.remember_tag_id(&id);
        *known = Some(id.clone());
        Ok(id)
    }

    /// Forgets a remembered tag id that NSX no longer knows (the tag was deleted and made
    /// again): the next `tag_id` looks it up by name. Returns whether there was one to forget.
    fn forget_remembered(&self, id: &str) -> bool {
        let Some(path) = &self.tag_memory else {
            return false;
        };
        if !self.use_memory || self.remembered_tag_id().as_deref() != Some(id) {
            return false;
        }
        let _ = std::fs::remove_file(path);
        *crate::sync::lock(&self.tag_id) = None;
        true
    }

    /// `nsx.url`, the tag's name and its id, one per line, as an earlier run wrote them.
    fn remembered_tag_id(&self) -> Option<String> {
        let text = crate::state::memo::read(self.tag_memory.as_ref()?)?;
        let mut lines = text.lines();
        let (url, name, id) = (lines.next()?, lines.next()?, lines.next()?);
        (url == self.http.base && name == self.tag_name && crate::config::is_moref(id))
            .then(|| id.to_string())
    }

    fn remember_tag_id(&self, id: &str) {
        if let Some(path) = &self.tag_memory {
            let text = format!("{}\n{}\n{id}\n", self.http.base, self.tag_name);
            crate::state::memo::write(path, &text);
        }
    }

    /// Runs `work` with the tag's id; when NSX answers 404 for a remembered id, forgets it,
    /// looks the tag up by name and runs `work` once more.
    fn with_tag<T>(&self, work: impl Fn(&str) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let tag = self.tag_id()?;
        match work(&tag) {
            Err(e) if not_found(&e) && self.forget_remembered(&tag) => work(&self.tag_id()?),
            other => other,
        }
    }

    /// The tag's id by its name, from NSX's list of security tags.
    fn look_up_tag_id(&self) -> anyhow::Result<String> {
        let mut start = 0;
        let mut pages = Pages::new(format!("NSX-V: listing {TAGS}"));
        loop {
            let path = format!(
                "{TAGS}{}",
                query([
                    ("pageSize", PAGE_SIZE.to_string().as_str()),
                    ("startIndex", start.to_string().as_str())
                ])
            );
            let reply = self
                .send(Call::new(Method::GET, path))
                .context("listing NSX-V security tags")?;
            let (tags, paging) = parse_security_tags(&xml_body(&reply)?)
                .map_err(|why| ServiceError::malformed(format!("NSX: security tag list: {why}")))?;
            let count = tags.len();
            pages.page(count)?;
            if let Some(tag) = tags
                .into_iter()
                .find(|t| t.name == self.tag_name && !t.system)
            {
                return Ok(tag.id);
            }
            // The next start index is the cursor: one asked for before would loop.
            let next = paging
                .filter(|p| p.start_index.saturating_add(count) < p.total_count)
                .map(|p| (p.start_index.saturating_add(count)).to_string());
            match pages.next(next, count == 0)? {
                Some(next) => start = next.parse().unwrap_or(usize::MAX),
                None => break,
            }
        }
        Err(fault(
            Exit::Config,
            format!(
                "NSX has no security tag named {:?}; create it (Networking & Security > Security Tags) or fix nsx.tag",
                self.tag_name
            ),
        ))
    }

    /// The VMs that carry the tag now.
    pub fn all_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        self.with_tag(|tag| {
            let reply = self
                .send(Call::new(Method::GET, format!("{TAGS}/{}/vm", encode(tag))))
                .with_context(|| format!("reading the VMs that carry {tag}"))?;
            parse_basic_info(&xml_body(&reply)?)
                .map_err(|why| ServiceError::malformed(format!("NSX: VM list of {tag}: {why}")))
        })
    }

    /// The VMs with the tag as first read in this run.
    fn read_ahead(&self) -> Result<&BTreeSet<String>, &Kept> {
        self.read_ahead
            .get_or_init(|| self.tagged().map_err(|e| Kept::of(&e)))
            .as_ref()
    }

    /// The ids of the VMs that carry the tag now.
    pub fn tagged(&self) -> anyhow::Result<BTreeSet<String>> {
        Ok(self.all_tagged()?.into_iter().map(|vm| vm.id).collect())
    }

    /// Attaches (PUT) or detaches (DELETE), then reads back to verify.
    fn change(&self, method: Method, vm: &VmRef) -> anyhow::Result<()> {
        self.with_tag(|tag| {
            let verb = if method == Method::PUT {
                "attaching"
            } else {
                "detaching"
            };
            let path = format!("{TAGS}/{}/vm/{}", encode(tag), encode(&vm.id));
            self.send(Call::new(method.clone(), path))
                .with_context(|| format!("NSX-V: {verb} {tag} to {vm}"))?;
            let carries = self
                .tagged()
                .with_context(|| format!("NSX-V: verifying after {verb} {tag} to {vm}"))?
                .contains(&vm.id);
            if carries != (method == Method::PUT) {
                return Err(fault(
                    Exit::Unavailable,
                    format!(
                        "NSX-V: {verb} {tag} to {vm} was accepted but the read-back disagrees (unverified)"
                    ),
                ));
            }
            Ok(())
        })
    }

    /// Sends with basic auth; error 101 (concurrent access) is retried by the HTTP layer's one
    /// loop; any other non-2xx answer becomes an error carrying NSX's own message.
    fn send(&self, call: Call) -> anyhow::Result<Reply> {
        let call = call
            .header("authorization", self.authorization.clone())
            .header("accept", "application/xml");
        let concurrent = &mut |reply: &Reply, _: &mut Call| {
            parse_error(&reply.body).is_some_and(|(code, _)| code == CONCURRENT_ACCESS)
        };
        let reply = self
            .http
            .send_with(&call, self.http.deadline(), concurrent)?;
        if reply.is_success() {
            return Ok(reply);
        }
        let (code, message) =
            parse_error(&reply.body).unwrap_or_else(|| (String::new(), reply.snippet()));
        let code = if code.is_empty() {
            String::new()
        } else {
            format!(" error {code}")
        };
        let hint = match reply.status {
            401 => "; check nsx.user and its password",
            // NSX-V answers a wrong password with 403 too (and an empty body).
            403 => {
                "; check nsx.user and its password (NSX-V refuses a wrong password with 403 too), and that the user has the Security Administrator role"
            }
            300..=399 => "; redirects are not followed: set nsx.url to the final address",
            429 => "; NSX kept asking to slow down",
            _ => "",
        };
        Err(ServiceError::status(
            reply.status,
            format!(
                "NSX: {} {} failed (HTTP {}{code}: {message}){hint}",
                call.method, call.path, reply.status
            ),
        ))
    }
}

impl TagBackend for NsxV {
    fn find(&self, names: Vec<String>, found: &mut Found<'_>) -> anyhow::Result<()> {
        // NSX-V tags a VM by vCenter's managed object id: vCenter's answer is the VM.
        self.vcenter.find(names, found, |_, vm| Ok(vm))
    }

    /// The tag list and the VMs with the tag (one list for all VMs), beside the vCenter login.
    fn prepare(&self, _vms: &[VmRef], finding: bool) {
        std::thread::scope(|scope| {
            if finding {
                scope.spawn(|| self.vcenter.open_ahead());
            }
            let _ = self.read_ahead(); // kept for tagged_among, which says its failure
        });
    }

    fn done_finding(&self) {
        self.vcenter.close();
    }

    /// The list read ahead is not used (unless it has none of `ids` and `keep_closed`): the
    /// next `tagged_among` reads it again. A read that failed is said where it is needed, not
    /// made twice.
    fn forget(&self, ids: &BTreeSet<String>, keep_closed: bool) {
        let Ok(tagged) = self.read_ahead() else {
            return;
        };
        // Nothing to forget, or only VMs read without the tag, which an opening run keeps.
        let closed = ids.iter().all(|id| !tagged.contains(id));
        if !(ids.is_empty() || keep_closed && closed) {
            self.read_ahead_used
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>> {
        if vms.is_empty() {
            return Ok(BTreeSet::new());
        }
        let first = !self
            .read_ahead_used
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        let all = if first {
            self.read_ahead().map_err(Kept::again)?.clone()
        } else {
            self.tagged()?
        };
        Ok(vms
            .iter()
            .filter(|v| all.contains(&v.id))
            .map(VmRef::key)
            .collect())
    }

    fn all_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        NsxV::all_tagged(self)
    }

    fn attach(&self, vm: &VmRef) -> anyhow::Result<()> {
        self.change(Method::PUT, vm)
    }

    fn detach(&self, vm: &VmRef) -> anyhow::Result<()> {
        self.change(Method::DELETE, vm)
    }

    fn membership(&self, vm: &VmRef, member: bool) -> Option<crate::nsx::backend::Membership> {
        let group = self.verify_group.as_deref()?;
        Some(crate::nsx::backend::await_membership(
            group.to_string(),
            vm,
            member,
            self.http.deadline(),
            || self.group_members(group),
        ))
    }

    fn check_group(&self) -> Option<anyhow::Result<String>> {
        let group = self.verify_group.as_deref()?;
        let check = || -> anyhow::Result<String> {
            let reply = self
                .send(Call::new(
                    Method::GET,
                    format!("{SECURITY_GROUPS}/{}", encode(group)),
                ))
                .map_err(|e| Self::no_group(group, e))?;
            let root = xml_body(&reply)?;
            if takes_tag(&root, &self.tag_name) {
                Ok(format!(
                    "security group {group} takes VMs with security tag {:?}",
                    self.tag_name
                ))
            } else {
                Err(fault(
                    Exit::Config,
                    format!(
                        "nsx.verify_group: security group {group} has no dynamic criterion VM.SECURITY_TAG that matches {:?}: the tag would not put VMs into it; fix the group or nsx.verify_group",
                        self.tag_name
                    ),
                ))
            }
        };
        Some(check())
    }

    fn probe(&self) -> anyhow::Result<String> {
        // By name, whatever was remembered: a renamed tag is noticed here.
        let id = self.look_up_tag_id()?;
        if self.remembered_tag_id().as_deref() != Some(id.as_str()) {
            self.remember_tag_id(&id);
        }
        *crate::sync::lock(&self.tag_id) = Some(id.clone());
        let count = self.tagged()?.len();
        Ok(format!(
            "NSX-V answers; security tag {:?} is {id}, on {count} VM(s) now",
            self.tag_name
        ))
    }
}

/// NSX-V with several access profiles: one [`NsxV`] per profile's security tag, each change
/// going to the backend of the VM's profile. VMs are found through vCenter once, by the first.
pub struct NsxVProfiles {
    each: Vec<(Option<String>, NsxV)>,
}

impl NsxVProfiles {
    pub fn new(each: Vec<(Option<String>, NsxV)>) -> Self {
        NsxVProfiles { each }
    }

    fn of(&self, vm: &VmRef) -> anyhow::Result<&NsxV> {
        self.each
            .iter()
            .find(|(key, _)| *key == vm.profile)
            .map(|(_, backend)| backend)
            .ok_or_else(|| crate::nsx::backend::unknown_profile(vm))
    }

    fn first(&self) -> &NsxV {
        &self.each[0].1
    }
}

impl TagBackend for NsxVProfiles {
    fn find(&self, names: Vec<String>, found: &mut Found<'_>) -> anyhow::Result<()> {
        self.first().find(names, found)
    }

    fn prepare(&self, vms: &[VmRef], finding: bool) {
        std::thread::scope(|scope| {
            for (n, (key, backend)) in self.each.iter().enumerate() {
                let mine: Vec<VmRef> = vms.iter().filter(|v| v.profile == *key).cloned().collect();
                scope.spawn(move || backend.prepare(&mine, finding && n == 0));
            }
        });
    }

    fn done_finding(&self) {
        self.first().done_finding();
    }

    fn forget(&self, ids: &BTreeSet<String>, keep_closed: bool) {
        for (_, backend) in &self.each {
            backend.forget(ids, keep_closed);
        }
    }

    fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>> {
        // A VM under a profile no longer configured: its tag is not known, so it cannot be
        // called closed; taken as tagged, its detach then fails alone, naming why.
        let mut tagged: BTreeSet<String> = vms
            .iter()
            .filter(|vm| self.of(vm).is_err())
            .map(VmRef::key)
            .collect();
        for (key, backend) in &self.each {
            let mine: Vec<VmRef> = vms.iter().filter(|v| v.profile == *key).cloned().collect();
            if !mine.is_empty() {
                tagged.extend(backend.tagged_among(&mine)?);
            }
        }
        Ok(tagged)
    }

    fn all_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        let mut all = Vec::new();
        for (key, backend) in &self.each {
            all.extend(NsxV::all_tagged(backend)?.into_iter().map(|vm| VmRef {
                profile: key.clone(),
                ..vm
            }));
        }
        Ok(all)
    }

    fn attach(&self, vm: &VmRef) -> anyhow::Result<()> {
        self.of(vm)?.attach(vm)
    }

    fn detach(&self, vm: &VmRef) -> anyhow::Result<()> {
        self.of(vm)?.detach(vm)
    }

    fn probe(&self) -> anyhow::Result<String> {
        let said: anyhow::Result<Vec<String>> = self
            .each
            .iter()
            .map(|(_, backend)| backend.probe())
            .collect();
        Ok(said?.join("; "))
    }

    fn membership(&self, vm: &VmRef, member: bool) -> Option<crate::nsx::backend::Membership> {
        self.of(vm).ok()?.membership(vm, member)
    }

    fn check_group(&self) -> Option<anyhow::Result<String>> {
        self.each
            .iter()
            .find_map(|(_, backend)| backend.check_group())
    }
}

/// Whether NSX answered 404: the object is not there.
fn not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<ServiceError>()
            .is_some_and(|e| e.kind == crate::http::Kind::Status(404))
    })
}

fn xml_body(reply: &Reply) -> anyhow::Result<xml::Element> {
    let media = reply.media_type();
    if media != "application/xml" && media != "text/xml" {
        return Err(ServiceError::malformed(format!(
            "NSX answered {media:?} instead of XML: {}",
            reply.snippet()
        )));
    }
    xml::parse(&reply.body).map_err(|why| ServiceError::malformed(format!("NSX: {why}")))
}

/// Reads `<securityTags>`: the tags and, when present, the paging information.
pub fn parse_security_tags(
    root: &xml::Element,
) -> Result<(Vec<SecurityTag>, Option<Paging>), String> {
    if root.name != "securityTags" {
        return Err(format!("expected <securityTags>, got <{}>", root.name));
    }
    let mut tags = Vec::new();
    for tag in root.children_named("securityTag") {
        let id = tag
            .text_of("objectId")
            .filter(|s| !s.is_empty())
            .ok_or("a tag has no objectId")?;
        tags.push(SecurityTag {
            id: id.to_string(),
            name: tag.text_of("name").unwrap_or("").to_string(),
            system: tag.text_of("systemResource") == Some("true"),
        });
    }
    let paging = match root.child("pagingInfo") {
        None => None,
        Some(p) => {
            let number = |key: &str| -> Result<usize, String> {
                p.text_of(key)
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| format!("pagingInfo has no number {key}"))
            };
            Some(Paging {
                start_index: number("startIndex")?,
                total_count: number("totalCount")?,
            })
        }
    };
    Ok((tags, paging))
}

/// Reads `<basicinfolist>`: the VMs listed, by id and name.
pub fn parse_basic_info(root: &xml::Element) -> Result<Vec<VmRef>, String> {
    if root.name != "basicinfolist" {
        return Err(format!("expected <basicinfolist>, got <{}>", root.name));
    }
    root.children_named("basicinfo")
        .map(|vm| {
            let id = vm
                .text_of("objectId")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| "a VM has no objectId".to_string())?;
            Ok(VmRef::new(vm.text_of("name").unwrap_or(id), id))
        })
        .collect()
}

/// Reads `<vmnodes>`: the managed object ids of a security group's effective VM members.
pub fn parse_vm_nodes(root: &xml::Element) -> Result<BTreeSet<String>, String> {
    if root.name != "vmnodes" {
        return Err(format!("expected <vmnodes>, got <{}>", root.name));
    }
    root.children_named("vmnode")
        .map(|node| {
            node.text_of("vmId")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| "a vmnode has no vmId".to_string())
        })
        .collect()
}

/// Whether a `<securitygroup>`'s dynamic membership has a `VM.SECURITY_TAG` criterion that
/// `tag` (the security tag's name) satisfies.
pub fn takes_tag(group: &xml::Element, tag: &str) -> bool {
    fn criteria<'a>(e: &'a xml::Element, out: &mut Vec<&'a xml::Element>) {
        for child in &e.children {
            if child.name == "dynamicCriteria" {
                out.push(child);
            }
            criteria(child, out);
        }
    }
    let mut found = Vec::new();
    criteria(group, &mut found);
    found.iter().any(|c| {
        let value = c.text_of("value").unwrap_or("");
        c.text_of("key") == Some("VM.SECURITY_TAG")
            && match c.text_of("criteria").unwrap_or("") {
                "=" => value == tag,
                "contains" => !value.is_empty() && tag.contains(value),
                "starts_with" => !value.is_empty() && tag.starts_with(value),
                "ends_with" => !value.is_empty() && tag.ends_with(value),
                _ => false,
            }
    })
}

/// Reads NSX-V's `<error>` (or the first of `<errors>`): its code and details.
pub fn parse_error(body: &str) -> Option<(String, String)> {
    let root = xml::parse(body).ok()?;
    let error = if root.name == "errors" {
        root.child("error")?
    } else {
        &root
    };
    if error.name != "error" {
        return None;
    }
    Some((
        error.text_of("errorCode").unwrap_or("").to_string(),
        error.text_of("details").unwrap_or("").to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags_with_paging() {
        let root = xml::parse(
            "<securityTags><pagingInfo><pageSize>2</pageSize><startIndex>0</startIndex><totalCount>3</totalCount></pagingInfo>\
             <securityTag><objectId>securitytag-1</objectId><name>AntiVirus.virusFound</name><systemResource>true</systemResource></securityTag>\
             <securityTag><objectId>securitytag-12</objectId><name>otnsx-maintenance</name><description/><vmCount>3</vmCount><systemResource>false</systemResource></securityTag></securityTags>",
        )
        .expect("xml");
        let (tags, paging) = parse_security_tags(&root).expect("shape");
        assert_eq!(tags.len(), 2);
        assert!(tags[0].system);
        assert_eq!(tags[1].id, "securitytag-12");
        assert_eq!(
            paging,
            Some(Paging {
                start_index: 0,
                total_count: 3
            })
        );
    }

    #[test]
    fn reads_group_members_and_criteria() {
        let nodes = xml::parse(
            "<vmnodes><vmnode><vmId>vm-42</vmId><vmName>web01</vmName></vmnode></vmnodes>",
        )
        .unwrap();
        assert_eq!(
            parse_vm_nodes(&nodes).unwrap(),
            BTreeSet::from(["vm-42".to_string()])
        );
        assert!(parse_vm_nodes(&xml::parse("<vmnodes><vmnode/></vmnodes>").unwrap()).is_err());
        let group = |criteria: &str, value: &str| {
            xml::parse(&format!("<securitygroup><dynamicMemberDefinition><dynamicSet><dynamicCriteria><key>VM.SECURITY_TAG</key><criteria>{criteria}</criteria><value>{value}</value></dynamicCriteria></dynamicSet></dynamicMemberDefinition></securitygroup>")).unwrap()
        };
        assert!(takes_tag(
            &group("=", "otnsx-maintenance"),
            "otnsx-maintenance"
        ));
        assert!(takes_tag(&group("contains", "maint"), "otnsx-maintenance"));
        assert!(!takes_tag(&group("=", "otnsx"), "otnsx-maintenance"));
        assert!(!takes_tag(&group("contains", ""), "otnsx-maintenance"));
        assert!(!takes_tag(
            &group("similar_to", "otnsx-maintenance"),
            "otnsx-maintenance"
        ));
    }

    #[test]
    fn reads_vm_lists_and_errors() {
        let root = xml::parse("<basicinfolist><basicinfo><objectId>vm-42</objectId><name>web01</name></basicinfo></basicinfolist>")
            .expect("xml");
        assert_eq!(
            parse_basic_info(&root),
            Ok(vec![VmRef::new("web01", "vm-42")])
        );
        assert_eq!(
            parse_error(
                "<error><details>Concurrent object access error</details><errorCode>101</errorCode><moduleName>core-services</moduleName></error>"
            ),
            Some(("101".into(), "Concurrent object access error".into()))
        );
        assert_eq!(
            parse_error(
                "<errors><error><details>x</details><errorCode>203</errorCode></error></errors>"
            ),
            Some(("203".into(), "x".into()))
        );
        assert_eq!(parse_error("<html/>"), None);
    }
}
