//! What NSX-T 3.x and NSX 4.x share whichever API changes the tag: logging in (basic auth, a
//! session, or a client certificate), NSX's JSON errors, finding VMs (by name in NSX's
//! inventory, or through vCenter by UUID), reading their tags and the search API. The Manager
//! API backend (`t.rs`) and the Policy API backend (`policy.rs`) each add how they change the
//! tag and list the tagged VMs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ureq::http::Method;

use crate::config::{NsxAuth, NsxConfig, Resolve, Secret};
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};
use crate::http::pages::{Pages, cost, id_cost};
use crate::http::{Call, Http, Reply, ServiceError, basic_auth, encode, query};
use crate::nsx::backend::{Found, TagBackend};
use crate::nsx::via_vcenter::ViaVcenter;
use crate::sync::lock;

/// The Manager API's VM inventory: a read that roles limited to tags may also make.
pub const FABRIC_VMS: &str = "/api/v1/fabric/virtual-machines";
/// The Policy API's VM list: no `display_name` filter, no cursor past 1000 VMs, an unstable
/// order unless sorted.
pub const REALIZED_VMS: &str = "/policy/api/v1/infra/realized-state/virtual-machines";
/// User tags a VM may carry (NSX 2.5 and later).
pub const MAX_TAGS: usize = 25;
/// The Policy API's exact list of what carries a tag (NSX-T 3.0 and later).
pub const EFFECTIVE_RESOURCES: &str = "/policy/api/v1/infra/tags/effective-resources";
/// Search errors (HTTP 400) after which the inventory is listed instead: the index is being
/// built (60508), the search timed out (60514), the index is out of sync (60515).
const SEARCH_NOT_READY: [i64; 3] = [60508, 60514, 60515];
/// Search errors that say the page asked for is too large: 60576 (HTTP 503) and 255 (HTTP
/// 400). VMware's clients then ask again for 100 fewer results a page; so does otnsx, and lists
/// the inventory instead once the pages would be empty.
const SEARCH_PAGE_TOO_LARGE: [(u16, i64); 2] = [(503, 60576), (400, 255)];
const PAGE_STEP: usize = 100;
/// The largest page NSX serves.
const PAGE_SIZE: usize = 1000;
/// Error 607: the manager aborted a transaction; retry it.
const TRANSACTION_ABORTED: i64 = 607;
/// Error 98: the session's XSRF token expired; log in again.
const SESSION_EXPIRED: i64 = 98;
/// A client certificate the manager does not trust (500, as VMware's client library reads it).
pub const CERTIFICATE_NOT_TRUSTED: i64 = 99;
/// One tag of a VM. Either part may be missing in NSX's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub tag: String,
}

/// A VM in NSX's inventory, as far as otnsx reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NsxVm {
    pub display_name: String,
    pub external_id: String,
    #[serde(default)]
    pub compute_ids: Vec<String>,
    /// Omitted by NSX when the VM has none.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl NsxVm {
    /// What keeping it costs, for a paged read's limit.
    pub fn cost(&self) -> usize {
        let strings = [self.display_name.as_str(), self.external_id.as_str()]
            .into_iter()
            .chain(self.compute_ids.iter().map(String::as_str))
            .chain(
                self.tags
                    .iter()
                    .flat_map(|t| [t.scope.as_str(), t.tag.as_str()]),
            );
        cost(strings)
    }
}

#[derive(Deserialize)]
pub struct Page {
    #[serde(default)]
    pub results: Vec<NsxVm>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub result_count: Option<usize>,
}

#[derive(Clone)]
struct Session {
    cookie: String,
    xsrf: String,
}

/// Which API changes the tag, and so which role the account needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    /// The Manager API's fabric tag actions (NSX 4.1: Enterprise Admin only).
    Manager,
    /// The Policy API's tag operations (read-only on VMs, full access on Tags).
    Policy,
}

impl Flavor {
    fn product(self) -> &'static str {
        match self {
            Flavor::Manager => "NSX-T",
            Flavor::Policy => "NSX Policy",
        }
    }

    /// What a 401 or 403 asks the admin to check.
    fn role_hint(self) -> &'static str {
        match self {
            Flavor::Manager => {
                "; check nsx.user, its password and its role (it must be allowed to change VM tags; NSX 4.1 allows the fabric tag actions to Enterprise Admin only: a least-privilege role needs kind = \"nsx-policy\")"
            }
            Flavor::Policy => {
                "; check nsx.user, its password and its role (read-only on Inventory > Virtual Machines, full access on Inventory > Tags: features vm_vm_info read, policy_vm_vm_tags crud)"
            }
        }
    }
}

pub struct JsonApi {
    http: Http,
    pub flavor: Flavor,
    user: String,
    password: Secret,
    auth: NsxAuth,
    session: Mutex<Option<Session>>,
    /// Each access profile's tag, by the profile's key.
    tags: Vec<(Option<String>, Tag)>,
    /// Whether VMs are found by name in NSX's own inventory rather than through vCenter.
    resolve: Resolve,
    /// How VMs are found with `resolve = "vcenter"`.
    vcenter: ViaVcenter,
    /// The client certificate that logs in (a principal identity), if one does.
    certificate: Option<std::path::PathBuf>,
    /// The groups whose members confirm that a profile's tag has taken effect
    /// (`verify_group`), by the profile's key.
    verify: Vec<(Option<String>, crate::config::VerifyGroup)>,
    /// Policy only: the manager refused the fabric read (403 or 404), so VMs are read from the
    /// realized-state list instead, for the rest of the run.
    fabric_refused: AtomicBool,
    /// A VM's tags (`None`: NSX does not list it), by external id, as a read made ahead (by
    /// `prepare`, or finding the VM) showed them; taken by the first `tagged_among` that asks.
    read_ahead: Mutex<BTreeMap<String, Option<Vec<Tag>>>>,
    /// The reads `prepare` makes of the VMs it is given: made once, and waited for by the
    /// first `tagged_among` while they are under way.
    prepared: OnceLock<BTreeMap<String, Option<Vec<Tag>>>>,
    prepared_used: AtomicBool,
    /// VMs whose reads ahead are out of date (see [`TagBackend::forget`]).
    forgotten: Mutex<BTreeSet<String>>,
}

impl JsonApi {
    pub fn new(
        flavor: Flavor,
        config: &NsxConfig,
        profiles: &[crate::config::Profile],
        vcenter: ViaVcenter,
        deadline: Deadline,
        verbose: bool,
    ) -> anyhow::Result<Self> {
        Ok(JsonApi {
            // A search page too large (503, error 60576) is asked again smaller, not as it was.
            http: Http::new("NSX", &config.endpoint, deadline, verbose)?
                .permanent_when(|reply| reply.status == 503 && error_code(reply) == Some(60576)),
            flavor,
            vcenter,
            user: config.endpoint.user.clone(),
            password: config.endpoint.password.clone(),
            auth: config.auth,
            session: Mutex::new(None),
            tags: profiles
                .iter()
                .map(|p| {
                    let tag = Tag {
                        scope: p.scope.clone(),
                        tag: p.tag.clone(),
                    };
                    (p.key.clone(), tag)
                })
                .collect(),
            resolve: config.resolve,
            verify: profiles
                .iter()
                .filter_map(|p| Some((p.key.clone(), p.verify.clone()?)))
                .collect(),
            certificate: config.endpoint.client.as_ref().map(|c| c.cert_path.clone()),
            fabric_refused: AtomicBool::new(false),
            read_ahead: Mutex::new(Default::default()),
            prepared: OnceLock::new(),
            prepared_used: AtomicBool::new(false),
            forgotten: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn deadline(&self) -> Deadline {
        self.http.deadline()
    }

    /// The tag of `vm`'s access profile.
    pub fn tag(&self, vm: &VmRef) -> anyhow::Result<&Tag> {
        self.tags
            .iter()
            .find(|(key, _)| *key == vm.profile)
            .map(|(_, tag)| tag)
            .ok_or_else(|| crate::nsx::backend::unknown_profile(vm))
    }

    /// "tag `scope|tag` is" (or "tags ... are", one per profile), for what `probe` says.
    pub fn tags_phrase(&self) -> String {
        let labels: Vec<String> = self.tags.iter().map(|(_, t)| label(t)).collect();
        match labels.as_slice() {
            [one] => format!("tag {one} is"),
            many => format!("tags {} are", many.join(", ")),
        }
    }

    /// Whether NSX's VM carries the tag of `vm`'s profile.
    pub fn carries(&self, nsx: &NsxVm, vm: &VmRef) -> bool {
        self.tag(vm).is_ok_and(|tag| nsx.tags.contains(tag))
    }

    /// NSX's VM under each profile whose tag it carries.
    pub fn targets(&self, nsx: &NsxVm) -> Vec<VmRef> {
        self.tags
            .iter()
            .filter(|(_, tag)| nsx.tags.contains(tag))
            .map(|(profile, _)| VmRef {
                profile: profile.clone(),
                ..vm_ref(nsx)
            })
            .collect()
    }

    /// Finds each of `names`: by display name in NSX, or through vCenter (name → instance
    /// UUID → the NSX VM with that external or compute id).
    pub fn find(&self, names: Vec<String>, found: &mut Found<'_>) -> anyhow::Result<()> {
        if self.resolve == Resolve::Nsx {
            let vms = crate::parallel::map(&names, crate::parallel::PER_SERVICE, |name| {
                self.find_by_name(name)
            });
            for (name, vm) in names.into_iter().zip(vms) {
                found(name, vm)?;
            }
            return Ok(());
        }
        self.vcenter.find(names, found, |vc, vm| {
            let (instance, bios) = vc.identity(&vm)?;
            self.find_by_uuid(&vm, &instance, bios.as_deref())
        })
    }

    /// The one VM whose display name is `name`.
    pub fn find_by_name(&self, name: &str) -> anyhow::Result<VmRef> {
        let found = self
            .list(("display_name", name))
            .with_context(|| format!("looking up VM {name:?} in NSX"))?;
        let found: Vec<&NsxVm> = found.iter().filter(|vm| vm.display_name == name).collect();
        match found.as_slice() {
            [] => Err(fault(
                Exit::DataErr,
                format!("NSX has no VM named {name:?}; check the name in the ticket"),
            )),
            [vm] => Ok(self.found(vm)),
            many => {
                let ids: Vec<&str> = many.iter().map(|vm| vm.external_id.as_str()).collect();
                Err(fault(
                    Exit::DataErr,
                    format!(
                        "{} VMs are named {name:?} in NSX (external ids {}); rename one, or set nsx.resolve = \"vcenter\" with vcenter.folder to tell them apart",
                        many.len(),
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    /// The NSX VM for a vCenter VM: the one whose `external_id` is its instance UUID, else the
    /// one whose `external_id` is its BIOS UUID and whose `compute_ids` name its instance UUID.
    fn find_by_uuid(
        &self,
        vm: &VmRef,
        instance_uuid: &str,
        bios_uuid: Option<&str>,
    ) -> anyhow::Result<VmRef> {
        let by_instance = self.list(("external_id", instance_uuid))?;
        if let [one] = by_instance.as_slice() {
            return Ok(self.found(one));
        }
        let wanted = format!("instanceUuid:{instance_uuid}");
        if let Some(bios) = bios_uuid {
            let by_bios = self.list(("external_id", bios))?;
            let matching: Vec<&NsxVm> = by_bios
                .iter()
                .filter(|v| {
                    v.compute_ids
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(&wanted))
                })
                .collect();
            if let [one] = matching.as_slice() {
                return Ok(self.found(one));
            }
        }
        Err(fault(
            Exit::DataErr,
            format!(
                "NSX has no VM for {vm} (instance UUID {instance_uuid}); is the VM on a host that NSX manages?"
            ),
        ))
    }

    /// A VM found now, its tag state remembered for `tagged_among`.
    fn found(&self, vm: &NsxVm) -> VmRef {
        let found = vm_ref(vm);
        lock(&self.read_ahead).insert(found.id.clone(), Some(vm.tags.clone()));
        found
    }

    /// Beside the vCenter login: the session (when it is one), and the VMs' tags read ahead.
    pub fn prepare(&self, vms: &[VmRef], finding: bool) {
        std::thread::scope(|scope| {
            if finding && self.resolve == Resolve::Vcenter {
                scope.spawn(|| self.vcenter.open_ahead());
            }
            self.prepared.get_or_init(|| {
                if self.auth == NsxAuth::Session && self.session().is_err() {
                    return Default::default(); // said where a request needs the session
                }
                let read = crate::parallel::map(vms, crate::parallel::PER_SERVICE, |vm| {
                    self.read(vm).map(|found| found.map(|f| f.tags))
                });
                // A read that failed is made again where it is needed.
                vms.iter()
                    .zip(read)
                    .filter_map(|(vm, tagged)| Some((vm.id.clone(), tagged.ok()?)))
                    .collect()
            });
        });
    }

    pub fn done_finding(&self) {
        self.vcenter.close();
    }

    /// See [`TagBackend::forget`].
    pub fn forget(&self, ids: &BTreeSet<String>, keep_closed: bool) {
        let prepared = self.prepared.get();
        let mut read_ahead = lock(&self.read_ahead);
        let mut forgotten = lock(&self.forgotten);
        for id in ids {
            let read = (read_ahead.get(id))
                .or_else(|| prepared.and_then(|p| p.get(id)))
                .cloned();
            // Read, and without any of the tags otnsx sets.
            let closed = read.is_some_and(|tags| {
                let tags = tags.unwrap_or_default();
                !self.tags.iter().any(|(_, tag)| tags.contains(tag))
            });
            if keep_closed && closed {
                continue;
            }
            read_ahead.remove(id);
            forgotten.insert(id.clone());
        }
    }

    /// One read per VM, several at once, unless it was read ahead.
    pub fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>> {
        // The reads made ahead (waited for, if they are under way), for the first call only.
        let first = !self.prepared_used.swap(true, Ordering::SeqCst);
        let prepared = match first {
            true => self.prepared.get_or_init(Default::default).clone(),
            false => Default::default(),
        };
        // What was read ahead, taken once per VM (a VM may come under several profiles).
        let mut known: BTreeMap<String, Option<Vec<Tag>>> = BTreeMap::new();
        {
            let mut read_ahead = lock(&self.read_ahead);
            let forgotten = lock(&self.forgotten);
            for vm in vms.iter().filter(|vm| !forgotten.contains(&vm.id)) {
                if let Some(tags) = read_ahead.remove(&vm.id).or(prepared.get(&vm.id).cloned()) {
                    known.insert(vm.id.clone(), tags);
                }
            }
        }
        let mut unread: Vec<&VmRef> = vms.iter().filter(|v| !known.contains_key(&v.id)).collect();
        unread.dedup_by(|a, b| a.id == b.id);
        let read = crate::parallel::map(&unread, crate::parallel::PER_SERVICE, |vm| {
            self.read(vm).map(|found| found.map(|f| f.tags))
        });
        for (vm, tags) in unread.iter().zip(read) {
            known.insert(vm.id.clone(), tags?);
        }
        let mut tagged = BTreeSet::new();
        for vm in vms {
            let tags = known.get(&vm.id).cloned().flatten().unwrap_or_default();
            // A VM under a profile no longer configured: its tag is not known, so it cannot
            // be called closed; taken as tagged, its detach then fails alone, naming why.
            let carries = match self.tag(vm) {
                Ok(tag) => tags.contains(tag),
                Err(_) => true,
            };
            if carries {
                tagged.insert(vm.key());
            }
        }
        Ok(tagged)
    }

    /// The VM with this external id, if NSX lists it.
    pub fn read(&self, vm: &VmRef) -> anyhow::Result<Option<NsxVm>> {
        let mut found = self.list(("external_id", &vm.id))?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(ServiceError::malformed(format!(
                "NSX lists {n} VMs with external id {}",
                vm.id
            ))),
        }
    }

    /// The VMs matching one filter: from the fabric inventory, which filters; or, for the
    /// Policy backend on a manager that refuses that read, from the realized-state list.
    fn list(&self, filter: (&str, &str)) -> anyhow::Result<Vec<NsxVm>> {
        if self.flavor == Flavor::Policy && self.fabric_refused.load(Ordering::SeqCst) {
            return self.list_realized(Some(filter));
        }
        match self.list_fabric(Some(filter)) {
            Err(e)
                if self.flavor == Flavor::Policy
                    && matches!(ServiceError::status_of(&e), Some(403 | 404)) =>
            {
                self.fabric_refused.store(true, Ordering::SeqCst);
                self.list_realized(Some(filter))
            }
            other => other,
        }
    }

    /// The fabric inventory, following NSX's `cursor` over the pages.
    pub fn list_fabric(&self, filter: Option<(&str, &str)>) -> anyhow::Result<Vec<NsxVm>> {
        let mut out = Vec::new();
        self.each_fabric(filter, &mut |vm| {
            let cost = vm.cost();
            out.push(vm);
            cost
        })?;
        Ok(out)
    }

    /// Each VM of the fabric inventory (matching `filter`), page by page, given to `keep`,
    /// which says what it kept ([`cost`]): only that stays of a page (see [`Pages`] for the
    /// limits).
    pub fn each_fabric(
        &self,
        filter: Option<(&str, &str)>,
        keep: &mut dyn FnMut(NsxVm) -> usize,
    ) -> anyhow::Result<()> {
        let page_size = PAGE_SIZE.to_string();
        let mut pages = Pages::new(format!("{}: listing {FABRIC_VMS}", self.flavor.product()));
        let mut cursor: Option<String> = None;
        loop {
            let mut pairs: Vec<(&str, &str)> = filter.into_iter().collect();
            pairs.push(("page_size", &page_size));
            if let Some(c) = &cursor {
                pairs.push(("cursor", c));
            }
            let reply = self.send(&Call::new(
                Method::GET,
                format!("{FABRIC_VMS}{}", query(pairs)),
            ))?;
            let page: Page = reply.json("NSX")?;
            drop(reply);
            pages.page(page.results.len())?;
            let empty = page.results.is_empty();
            for vm in page.results {
                pages.kept(keep(vm))?;
            }
            cursor = match pages.next(page.cursor, empty)? {
                Some(next) => Some(next),
                None => return Ok(()),
            };
        }
    }

    /// The Policy realized-state VM list, with `filter` applied here (the list has none). NSX
    /// gives no cursor past 1000 VMs and no stable order unless sorted, so the pages are read
    /// sorted by external id, following the server's cursor where it gives one and else the
    /// cursor otnsx computes (the count read so far), up to an empty page; a VM seen twice is
    /// kept once.
    pub fn list_realized(&self, filter: Option<(&str, &str)>) -> anyhow::Result<Vec<NsxVm>> {
        let mut out = Vec::new();
        self.each_realized(&mut |vm| {
            let wanted = filter.is_none_or(|(key, value)| match key {
                "display_name" => vm.display_name == value,
                _ => vm.external_id == value,
            });
            if !wanted {
                return 0;
            }
            let cost = vm.cost();
            out.push(vm);
            cost
        })?;
        Ok(out)
    }

    /// Each VM of the realized-state list, once, page by page, given to `keep`, which says
    /// what it kept (see [`JsonApi::list_realized`] and [`Pages`] for the limits).
    pub fn each_realized(&self, keep: &mut dyn FnMut(NsxVm) -> usize) -> anyhow::Result<()> {
        let page_size = PAGE_SIZE.to_string();
        let mut pages = Pages::new(format!("NSX Policy: listing {REALIZED_VMS}"));
        let mut seen = BTreeSet::new();
        let mut read = 0usize;
        let mut total: Option<usize> = None;
        let mut cursor: Option<String> = None;
        loop {
            let mut pairs = vec![
                ("sort_by", "external_id"),
                ("sort_ascending", "true"),
                ("page_size", page_size.as_str()),
            ];
            if let Some(c) = &cursor {
                pairs.push(("cursor", c));
            }
            let reply = self.send(&Call::new(
                Method::GET,
                format!("{REALIZED_VMS}{}", query(pairs)),
            ))?;
            let page: Page = reply.json("NSX")?;
            drop(reply);
            pages.page(page.results.len())?;
            if read == 0 {
                total = page.result_count;
            }
            if page.results.is_empty() {
                return Ok(());
            }
            read += page.results.len();
            for vm in page.results {
                if seen.insert(vm.external_id.clone()) {
                    let seen_cost = id_cost(&vm.external_id);
                    pages.kept(keep(vm) + seen_cost)?;
                }
            }
            if total.is_some_and(|t| read >= t) {
                return Ok(());
            }
            // The server's cursor wins; where it gives none (past 1000 VMs), the offset.
            cursor = match page.cursor.filter(|c| !c.is_empty()) {
                Some(server) => match pages.next(Some(server), false)? {
                    Some(next) => Some(next),
                    None => return Ok(()),
                },
                None => Some(read.to_string()),
            };
        }
    }

    /// The VMs with a profile's tag by `GET /policy/api/v1/infra/tags/effective-resources`
    /// (one list per profile, following the server's cursor), under the profiles whose tags
    /// they carry; `None` on a manager without it (404, error 404: "could not be found"). The
    /// list is exact: it does not lag like the search index. A resource reference names a VM by
    /// `target_id`, its external id.
    pub fn effective_tagged(&self) -> anyhow::Result<Option<Vec<VmRef>>> {
        let mut out = Vec::new();
        for (profile, tag) in &self.tags {
            match self.effective_one(tag)? {
                None => return Ok(None),
                Some(found) => out.extend(found.into_iter().map(|vm| VmRef {
                    profile: profile.clone(),
                    ..vm
                })),
            }
        }
        Ok(Some(out))
    }

    fn effective_one(&self, tag: &Tag) -> anyhow::Result<Option<Vec<VmRef>>> {
        let page_size = PAGE_SIZE.to_string();
        let mut out = Vec::new();
        let mut pages = Pages::new(format!(
            "NSX Policy: listing {EFFECTIVE_RESOURCES} for tag {}",
            label(tag)
        ));
        let mut cursor: Option<String> = None;
        loop {
            let mut pairs = vec![
                ("scope", tag.scope.as_str()),
                ("tag", tag.tag.as_str()),
                ("page_size", page_size.as_str()),
            ];
            if let Some(c) = &cursor {
                pairs.push(("cursor", c));
            }
            let reply = self.send_raw(&Call::new(
                Method::GET,
                format!("{EFFECTIVE_RESOURCES}{}", query(pairs)),
            ))?;
            if reply.status == 404 && cursor.is_none() && no_such_api(&reply) {
                return Ok(None);
            }
            if !reply.is_success() {
                return Err(self.error(&reply));
            }
            let page: ReferencePage = reply.json("NSX")?;
            drop(reply);
            pages.page(page.results.len())?;
            let empty = page.results.is_empty();
            for r in page.results {
                if r.target_type != "VirtualMachine" || r.target_id.is_empty() {
                    continue;
                }
                pages.kept(cost([r.target_display_name.as_str(), r.target_id.as_str()]))?;
                out.push(VmRef::new(r.target_display_name, r.target_id));
            }
            cursor = match pages.next(page.cursor, empty)? {
                Some(next) => Some(next),
                None => return Ok(Some(out)),
            };
        }
    }

    /// The VMs with a profile's tag by the search API at `path` (one search per profile), page
    /// by page, under the profiles whose tags they carry; `None` when the search cannot answer
    /// now (400 with error 60508, 60514 or 60515: the index being built, a timeout, the index
    /// out of sync; a page too large even at 100 results) or not at all (404): then the
    /// inventory is listed. A result that does not carry the tag (a stale index) is left out.
    pub fn search_tagged(&self, path: &str) -> anyhow::Result<Option<Vec<VmRef>>> {
        let mut out = Vec::new();
        for (profile, tag) in &self.tags {
            match self.search_one(path, tag)? {
                None => return Ok(None),
                Some(found) => out.extend(found.into_iter().map(|vm| VmRef {
                    profile: profile.clone(),
                    ..vm
                })),
            }
        }
        Ok(Some(out))
    }

    fn search_one(&self, path: &str, tag: &Tag) -> anyhow::Result<Option<Vec<VmRef>>> {
        let term = format!(
            "resource_type:VirtualMachine AND tags.scope:{} AND tags.tag:{}",
            lucene(&tag.scope),
            lucene(&tag.tag)
        );
        let mut page_size = PAGE_SIZE;
        let mut out = Vec::new();
        let mut pages = Pages::new(format!(
            "{}: searching {path} for the VMs tagged {}",
            self.flavor.product(),
            label(tag)
        ));
        let mut cursor: Option<String> = None;
        loop {
            let size = page_size.to_string();
            let mut pairs = vec![("query", term.as_str()), ("page_size", &size)];
            if let Some(c) = &cursor {
                pairs.push(("cursor", c));
            }
            let reply =
                self.send_raw(&Call::new(Method::GET, format!("{path}{}", query(pairs))))?;
            let code = error_code(&reply);
            if SEARCH_PAGE_TOO_LARGE.contains(&(reply.status, code.unwrap_or(0))) {
                match page_size.checked_sub(PAGE_STEP).filter(|n| *n > 0) {
                    Some(smaller) => {
                        page_size = smaller;
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            if reply.status == 404
                || (reply.status == 400 && code.is_some_and(|c| SEARCH_NOT_READY.contains(&c)))
            {
                return Ok(None);
            }
            if !reply.is_success() {
                return Err(self.error(&reply));
            }
            let page: Page = reply.json("NSX")?;
            drop(reply);
            pages.page(page.results.len())?;
            let empty = page.results.is_empty();
            for vm in page.results.iter().filter(|vm| vm.tags.contains(tag)) {
                pages.kept(cost([vm.display_name.as_str(), vm.external_id.as_str()]))?;
                out.push(vm_ref(vm));
            }
            cursor = match pages.next(page.cursor, empty)? {
                Some(next) => Some(next),
                None => return Ok(Some(out)),
            };
        }
    }

    /// Sends and turns a non-2xx answer into an error.
    pub fn send(&self, call: &Call) -> anyhow::Result<Reply> {
        let reply = self.send_raw(call)?;
        if reply.is_success() {
            Ok(reply)
        } else {
            Err(self.error(&reply))
        }
    }

    /// Sends with our credentials. Error 607 (transaction aborted) is retried by the HTTP
    /// layer's one loop; an expired session (403, error 98) is renewed once and the request
    /// sent again. Any status comes back.
    pub fn send_raw(&self, call: &Call) -> anyhow::Result<Reply> {
        let mut renewed = false;
        loop {
            let mut call = call.clone().header("accept", "application/json");
            match self.auth {
                // A client certificate logs in by itself: no Authorization header.
                NsxAuth::Basic if self.certificate.is_some() => {}
                NsxAuth::Basic => {
                    call = call.header("authorization", basic_auth(&self.user, &self.password))
                }
                NsxAuth::Session => {
                    let session = self.session()?;
                    call = call
                        .header("cookie", session.cookie)
                        .header("x-xsrf-token", session.xsrf);
                }
            }
            let aborted = &mut |reply: &Reply, _: &mut Call| {
                reply.status == 500 && error_code(reply) == Some(TRANSACTION_ABORTED)
            };
            let reply = self.http.send_with(&call, self.http.deadline(), aborted)?;
            if reply.status == 403
                && error_code(&reply) == Some(SESSION_EXPIRED)
                && self.auth == NsxAuth::Session
                && !renewed
            {
                *lock(&self.session) = None;
                renewed = true;
                continue;
            }
            return Ok(reply);
        }
    }

    /// The session, logging in once (the lock is held across the login, so that requests
    /// made at once share one session).
    fn session(&self) -> anyhow::Result<Session> {
        let mut kept = lock(&self.session);
        if kept.is_none() {
            // With a client certificate (a principal identity) the body is empty.
            let form = match &self.certificate {
                Some(_) => String::new(),
                None => format!(
                    "j_username={}&j_password={}",
                    encode(&self.user),
                    encode(self.password.expose())
                ),
            };
            let call = Call::new(Method::POST, "/api/session/create")
                .body("application/x-www-form-urlencoded", form.into_bytes());
            let reply = self.http.send(&call).context("logging in to NSX")?;
            if !reply.is_success() {
                return Err(ServiceError::status(
                    reply.status,
                    format!(
                        "NSX refused the session login of {:?} (HTTP {}); check nsx.user and its password",
                        self.user, reply.status
                    ),
                ));
            }
            let cookie = reply
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
                .filter_map(|(_, v)| v.split(';').next())
                .find(|c| c.trim_start().starts_with("JSESSIONID="))
                .map(|c| c.trim().to_string());
            let xsrf = reply.header("x-xsrf-token").map(str::to_string);
            for token in cookie.iter().chain(&xsrf) {
                crate::secrets::token(token.trim_start_matches("JSESSIONID="));
            }
            let (Some(cookie), Some(xsrf)) = (cookie, xsrf) else {
                return Err(ServiceError::malformed(
                    "NSX: the session login answered without a JSESSIONID cookie and an X-XSRF-TOKEN header",
                ));
            };
            *kept = Some(Session { cookie, xsrf });
        }
        kept.clone()
            .ok_or_else(|| fault(Exit::Unavailable, "NSX: no session"))
    }

    /// Ends the session, if one was made.
    pub fn close(&self) {
        let Some(session) = lock(&self.session).take() else {
            return;
        };
        let call = Call::new(Method::POST, "/api/session/destroy")
            .header("cookie", session.cookie)
            .header("x-xsrf-token", session.xsrf);
        let grace = Deadline::after(
            self.http
                .deadline()
                .remaining()
                .max(std::time::Duration::from_secs(2)),
        );
        if let Err(e) = self.http.send_by(&call, grace) {
            errln!("otnsx: warning: ending the NSX session: {e:#}");
        }
    }

    /// The Policy group of a profile's `verify_group`, as `domain/group`, and its API path.
    fn group(&self, profile: Option<&str>) -> Option<(String, String)> {
        let (_, v) = self
            .verify
            .iter()
            .find(|(key, _)| key.as_deref() == profile)?;
        Some((
            format!("{}/{}", v.domain, v.group),
            format!(
                "/policy/api/v1/infra/domains/{}/groups/{}",
                encode(&v.domain),
                encode(&v.group)
            ),
        ))
    }

    /// A 404 for the group: it does not exist, which is a configuration error.
    fn no_group(&self, name: &str, reply: &Reply) -> anyhow::Error {
        fault(
            Exit::Config,
            format!(
                "verify_group: NSX has no group {name} ({}); set verify_group (and verify_domain) to the id of the group that the tag puts VMs into",
                error_text(reply)
            ),
        )
    }

    /// Waits for `vm` to enter (or leave) the group's effective members.
    pub fn membership(&self, vm: &VmRef, member: bool) -> Option<crate::nsx::backend::Membership> {
        let (name, path) = self.group(vm.profile.as_deref())?;
        let members = || -> anyhow::Result<BTreeSet<String>> {
            let mut ids = BTreeSet::new();
            let mut pages = Pages::new(format!("NSX Policy: listing the members of group {name}"));
            let mut cursor: Option<String> = None;
            loop {
                let page_size = PAGE_SIZE.to_string();
                let mut pairs = vec![("page_size", page_size.as_str())];
                if let Some(c) = &cursor {
                    pairs.push(("cursor", c));
                }
                let call = Call::new(
                    Method::GET,
                    format!("{path}/members/virtual-machines{}", query(pairs)),
                );
                let reply = self.send_raw(&call)?;
                if reply.status == 404 {
                    return Err(self.no_group(&name, &reply));
                }
                if !reply.is_success() {
                    return Err(self.error(&reply));
                }
                let page: MemberPage = reply.json("NSX")?;
                drop(reply);
                pages.page(page.results.len())?;
                let empty = page.results.is_empty();
                for id in page.results.into_iter().flat_map(Member::ids) {
                    pages.kept(id_cost(&id))?;
                    ids.insert(id);
                }
                cursor = match pages.next(page.cursor, empty)? {
                    Some(next) => Some(next),
                    None => return Ok(ids),
                };
            }
        };
        Some(crate::nsx::backend::await_membership(
            name.clone(),
            vm,
            member,
            self.deadline(),
            members,
        ))
    }

    /// For `check`: each profile's group exists and one of its conditions takes VMs by that
    /// profile's tag.
    pub fn check_group(&self) -> Option<anyhow::Result<String>> {
        if self.verify.is_empty() {
            return None;
        }
        let check = |profile: &Option<String>| -> anyhow::Result<String> {
            let (name, path) = self
                .group(profile.as_deref())
                .ok_or_else(|| ServiceError::malformed("no group"))?;
            let reply = self.send_raw(&Call::new(Method::GET, path.clone()))?;
            if reply.status == 404 {
                return Err(self.no_group(&name, &reply));
            }
            if !reply.is_success() {
                return Err(self.error(&reply));
            }
            let group: Value = reply.json("NSX")?;
            let label = self
                .tags
                .iter()
                .find(|(key, _)| key == profile)
                .map(|(_, tag)| label(tag))
                .unwrap_or_default();
            if names_tag(&group["expression"], &label) {
                Ok(format!("group {name} takes VMs tagged {label}"))
            } else {
                Err(fault(
                    Exit::Config,
                    format!(
                        "verify_group: group {name} has no condition Tag EQUALS {label:?} on VirtualMachine: the tag would not put VMs into it; fix the group's criteria or verify_group"
                    ),
                ))
            }
        };
        let said: anyhow::Result<Vec<String>> = self
            .verify
            .iter()
            .map(|(profile, _)| check(profile))
            .collect();
        Some(said.map(|s| s.join("; ")))
    }

    /// NSX's answer as an error, with what to check.
    pub fn error(&self, reply: &Reply) -> anyhow::Error {
        if let Some(cert) = &self.certificate
            && reply.status == 500
            && error_code(reply) == Some(CERTIFICATE_NOT_TRUSTED)
        {
            return fault(
                Exit::NoPerm,
                format!(
                    "NSX does not trust the client certificate {} (error {CERTIFICATE_NOT_TRUSTED}): register it as a principal identity in NSX (System > User Management), or fix nsx.client_cert",
                    cert.display()
                ),
            );
        }
        let hint = match reply.status {
            401 | 403 => self.flavor.role_hint(),
            300..=399 => "; redirects are not followed: set nsx.url to the final address",
            429 => "; NSX kept asking to slow down",
            _ => "",
        };
        ServiceError::status(
            reply.status,
            format!(
                "{}: HTTP {}: {}{hint}",
                self.flavor.product(),
                reply.status,
                error_text(reply)
            ),
        )
    }
}

/// What each JSON backend adds to [`JsonApi`]: how it changes the tag, lists the tagged VMs and
/// checks its rights. Everything else a [`TagBackend`] does, the shared part does.
pub trait TagWriter: Send + Sync {
    fn api(&self) -> &JsonApi;
    /// Adds (`add`) or removes our tag on one VM, verified.
    fn change(&self, vm: &VmRef, add: bool) -> anyhow::Result<()>;
    fn every_tagged(&self) -> anyhow::Result<Vec<VmRef>>;
    fn probe(&self) -> anyhow::Result<String>;
    fn take_warnings(&self) -> Vec<String>;
}

impl<W: TagWriter> TagBackend for W {
    fn find(&self, names: Vec<String>, found: &mut Found<'_>) -> anyhow::Result<()> {
        self.api().find(names, found)
    }

    fn prepare(&self, vms: &[VmRef], finding: bool) {
        self.api().prepare(vms, finding);
    }

    fn done_finding(&self) {
        self.api().done_finding();
    }

    fn forget(&self, ids: &BTreeSet<String>, keep_closed: bool) {
        self.api().forget(ids, keep_closed);
    }

    fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>> {
        self.api().tagged_among(vms)
    }

    fn all_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        self.every_tagged()
    }

    fn attach(&self, vm: &VmRef) -> anyhow::Result<()> {
        self.change(vm, true)
    }

    fn detach(&self, vm: &VmRef) -> anyhow::Result<()> {
        self.change(vm, false)
    }

    fn probe(&self) -> anyhow::Result<String> {
        TagWriter::probe(self)
    }

    fn take_warnings(&self) -> Vec<String> {
        TagWriter::take_warnings(self)
    }

    fn membership(&self, vm: &VmRef, member: bool) -> Option<crate::nsx::backend::Membership> {
        self.api().membership(vm, member)
    }

    fn check_group(&self) -> Option<anyhow::Result<String>> {
        self.api().check_group()
    }
}

/// A VM whose tag list is full: what to do, nothing rewritten.
pub fn full_tags(what: &str, count: usize) -> anyhow::Error {
    fault(
        Exit::Unavailable,
        format!(
            "{what}: the VM already carries {count} tags, the most NSX allows ({MAX_TAGS}); otnsx adds only its own and rewrites nobody's, so remove one of the VM's other tags"
        ),
    )
}

/// The session is ended however the run ends.
impl Drop for JsonApi {
    fn drop(&mut self) {
        self.close();
    }
}

/// A page of `effective-resources`: resource references (`PolicyResourceReference`).
#[derive(Deserialize)]
struct ReferencePage {
    #[serde(default)]
    results: Vec<Reference>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct Reference {
    #[serde(default)]
    target_type: String,
    #[serde(default)]
    target_id: String,
    #[serde(default)]
    target_display_name: String,
}

/// A 404 that says the API itself is missing (an older manager), not an object.
fn no_such_api(reply: &Reply) -> bool {
    error_code(reply) == Some(404) || error_text(reply).contains("could not be found")
}

/// A page of a group's effective VM members (`RealizedVirtualMachine`s).
#[derive(Deserialize)]
struct MemberPage {
    #[serde(default)]
    results: Vec<Member>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct Member {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    compute_ids: Vec<String>,
}

impl Member {
    /// Every id the member is known by: its id, external id and the UUIDs among its compute
    /// ids (a realized VM's `id` is not documented to be the external id otnsx names it by).
    fn ids(self) -> impl Iterator<Item = String> {
        let uuids = self.compute_ids.into_iter().filter_map(|c| {
            ["externalId:", "instanceUuid:", "biosUuid:"]
                .iter()
                .find_map(|p| c.strip_prefix(p).map(str::to_string))
        });
        self.id.into_iter().chain(self.external_id).chain(uuids)
    }
}

/// Whether a Policy group's expression list (conditions, nested expressions) holds a
/// condition that takes VMs by the tag `label` (`scope|tag`).
fn names_tag(expression: &Value, label: &str) -> bool {
    expression.as_array().into_iter().flatten().any(|e| {
        let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
        match field("resource_type") {
            "Condition" => {
                field("key") == "Tag"
                    && field("member_type") == "VirtualMachine"
                    && field("operator") == "EQUALS"
                    && field("value") == label
            }
            "NestedExpression" => names_tag(&e["expressions"], label),
            _ => false,
        }
    })
}

/// Parses `data` as NSX-T answers are parsed, for the fuzz targets.
/// Returns the answer, for the Policy API's parser (`policy::fuzz_parse`).
pub fn fuzz_parse(data: &[u8]) -> Reply {
    let reply = Reply {
        status: 400,
        headers: vec![("content-type".into(), "application/json".into())],
        body: String::from_utf8_lossy(data).into_owned(),
    };
    let _ = reply.json::<Page>("NSX");
    let _ = error_text(&reply);
    let _ = error_code(&reply);
    reply
}

/// A term for the search API's Lucene syntax: its special characters (and white space)
/// escaped with a backslash.
fn lucene(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        if "+-=&|><!(){}[]^\"~*?:\\/".contains(c) || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Keeps NSX's VM in `out` under each profile whose tag it carries; what that costs (see
/// [`Pages::kept`]).
pub fn keep_targets(api: &JsonApi, vm: &NsxVm, out: &mut Vec<VmRef>) -> usize {
    let targets = api.targets(vm);
    let kept = targets
        .iter()
        .map(|t| cost([t.name.as_str(), t.id.as_str()]))
        .sum();
    out.extend(targets);
    kept
}

/// `scope|tag`, as a Policy group's condition names a tag.
pub fn label(tag: &Tag) -> String {
    format!("{}|{}", tag.scope, tag.tag)
}

pub fn vm_ref(vm: &NsxVm) -> VmRef {
    VmRef::new(vm.display_name.clone(), vm.external_id.clone())
}

pub fn json_call(method: Method, path: &str, body: &Value) -> Call {
    Call::new(method, path).body("application/json", body.to_string().into_bytes())
}

pub fn error_code(reply: &Reply) -> Option<i64> {
    serde_json::from_str::<Value>(&reply.body)
        .ok()?
        .get("error_code")?
        .as_i64()
}
/// NSX's error: code, message, details and related errors, on one line.
pub fn error_text(reply: &Reply) -> String {
    let Ok(body) = serde_json::from_str::<Value>(&reply.body) else {
        return reply.snippet();
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = match body.get("error_code").and_then(Value::as_i64) {
        Some(code) => format!("error {code}: {}", text(&body, "error_message")),
        None => text(&body, "error_message"),
    };
    let details = text(&body, "details");
    if !details.is_empty() {
        out.push_str(&format!(" ({details})"));
    }
    for related in body
        .get("related_errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!("; related: {}", text(related, "error_message")));
    }
    if out.is_empty() { reply.snippet() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vms_leniently() {
        let page: Page = serde_json::from_str(
            r#"{"result_count":2,"cursor":"0042","results":[
              {"resource_type":"VirtualMachine","display_name":"web01","external_id":"5012a","power_state":"VM_RUNNING",
               "compute_ids":["instanceUuid:5012a","biosUuid:4212b"],"tags":[{"scope":"otnsx","tag":"maintenance"},{"scope":"backup"}]},
              {"display_name":"db01","external_id":"5012c"}]}"#,
        )
        .expect("parses");
        assert_eq!(page.cursor.as_deref(), Some("0042"));
        assert_eq!(
            page.results[0].tags[1],
            Tag {
                scope: "backup".into(),
                tag: String::new()
            }
        );
        assert!(page.results[1].tags.is_empty());
    }

    #[test]
    fn a_group_names_the_tag_in_a_condition_nested_or_not() {
        let tag = |value: &str| {
            serde_json::json!({"resource_type": "Condition", "member_type": "VirtualMachine",
                               "key": "Tag", "operator": "EQUALS", "value": value})
        };
        let direct = serde_json::json!([tag("otnsx|maintenance")]);
        assert!(names_tag(&direct, "otnsx|maintenance"));
        let nested = serde_json::json!([{"resource_type": "NestedExpression",
            "expressions": [tag("other|x"), {"resource_type": "ConjunctionOperator", "conjunction_operator": "OR"}, tag("otnsx|maintenance")]}]);
        assert!(names_tag(&nested, "otnsx|maintenance"));
        assert!(!names_tag(
            &serde_json::json!([tag("otnsx|other")]),
            "otnsx|maintenance"
        ));
        let segments = serde_json::json!([{"resource_type": "Condition", "member_type": "Segment",
            "key": "Tag", "operator": "EQUALS", "value": "otnsx|maintenance"}]);
        assert!(!names_tag(&segments, "otnsx|maintenance"));
    }

    #[test]
    fn a_member_is_known_by_its_ids_and_compute_ids() {
        let m: Member = serde_json::from_str(
            r#"{"id":"realized-1","display_name":"web01","compute_ids":["externalId:5012a","moIdOnHost:1","instanceUuid:5012b"]}"#,
        )
        .unwrap();
        let ids: BTreeSet<String> = m.ids().collect();
        assert_eq!(
            ids,
            BTreeSet::from(["realized-1", "5012a", "5012b"].map(String::from))
        );
    }

    #[test]
    fn lucene_escapes_what_the_query_syntax_reads() {
        assert_eq!(lucene("a=b<c>d"), "a\\=b\\<c\\>d");
        assert_eq!(lucene("x:y/z (1)"), "x\\:y\\/z\\ \\(1\\)");
        assert_eq!(lucene("tab\there"), "tab\\\there");
        assert_eq!(lucene("plain_text.1"), "plain_text.1");
    }

    #[test]
    fn an_effective_resources_page_reads_leniently() {
        let page: ReferencePage = serde_json::from_str(
            r#"{"result_count":2,"cursor":"opaque","results":[
              {"target_type":"VirtualMachine","target_id":"5012a","target_display_name":"web01","is_valid":true,
               "path":"/infra/realized-state/enforcement-points/default/virtual-machines/5012a"},
              {"target_type":"Segment","target_id":"seg1"}]}"#,
        )
        .expect("parses");
        assert_eq!(page.cursor.as_deref(), Some("opaque"));
        assert_eq!(page.results[0].target_id, "5012a");
        assert_eq!(page.results[1].target_display_name, "");
    }

    #[test]
    fn error_text_carries_code_message_and_related() {
        let reply = Reply {
            status: 400,
            headers: vec![],
            body: r#"{"httpStatus":"BAD_REQUEST","error_code":8327,"module_name":"common-services","error_message":"Tag scope too long.","related_errors":[{"error_code":1,"error_message":"first"}]}"#.into(),
        };
        assert_eq!(
            error_text(&reply),
            "error 8327: Tag scope too long.; related: first"
        );
    }
}
