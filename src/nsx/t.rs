//! NSX-T 3.x and NSX 4.x: the Manager API's `fabric/virtual-machines`, JSON. A VM is named by
//! its `external_id`; otnsx's tag is one `{scope, tag}` pair among the VM's tags, and every
//! other tool's tags survive every change otnsx makes.

use std::collections::BTreeSet;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ureq::http::Method;

use crate::config::{NsxAuth, NsxConfig, Resolve, Secret};
use crate::deadline::Deadline;
use crate::domain::vm::VmRef;
use crate::error::{Exit, fault};
use crate::http::{Call, Http, Reply, ServiceError, basic_auth, encode, query};
use crate::nsx::{Found, TagBackend, ViaVcenter};
use crate::sync::lock;

const VMS: &str = "/api/v1/fabric/virtual-machines";
/// User tags a VM may carry (NSX 2.5 and later).
const MAX_TAGS: usize = 25;
/// The search API: the VMs with our tag without listing the whole inventory.
const SEARCH: &str = "/api/v1/search/query";
/// Search errors after which the inventory is listed instead: the index is being built
/// (60508), the search timed out (60514).
const SEARCH_NOT_READY: [i64; 2] = [60508, 60514];
/// The largest page the Manager API serves.
const PAGE_SIZE: &str = "1000";
/// Error 607: the manager aborted a transaction; retry it.
const TRANSACTION_ABORTED: i64 = 607;
/// Error 98: the session's XSRF token expired; log in again.
const SESSION_EXPIRED: i64 = 98;
/// A client certificate the manager does not trust (500, as VMware's client library reads it).
const CERTIFICATE_NOT_TRUSTED: i64 = 99;

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

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    results: Vec<NsxVm>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Clone)]
struct Session {
    cookie: String,
    xsrf: String,
}

pub struct NsxT {
    http: Http,
    user: String,
    password: Secret,
    auth: NsxAuth,
    session: std::sync::Mutex<Option<Session>>,
    ours: Tag,
    /// Learnt on the first change: whether the manager knows `add_tags` / `remove_tags`.
    add_remove: std::sync::Mutex<Option<bool>>,
    /// Said once per run to the journal and stderr: changes were made last-writer-wins.
    warnings: std::sync::Mutex<Vec<String>>,
    /// Whether VMs are found by name in NSX's own inventory rather than through vCenter.
    resolve: Resolve,
    /// How VMs are found with `resolve = "vcenter"`.
    vcenter: ViaVcenter,
    /// The client certificate that logs in (a principal identity), if one does.
    certificate: Option<std::path::PathBuf>,
    /// Whether a VM carries the tag, by external id, as a read made ahead (by `prepare`, or
    /// finding the VM) showed it; taken by the first `tagged_among` that asks.
    read_ahead: std::sync::Mutex<std::collections::BTreeMap<String, bool>>,
    /// The reads `prepare` makes of the VMs it is given: made once, and waited for by the
    /// first `tagged_among` while they are under way.
    prepared: std::sync::OnceLock<std::collections::BTreeMap<String, bool>>,
    prepared_used: std::sync::atomic::AtomicBool,
}

impl NsxT {
    pub fn new(
        config: &NsxConfig,
        vcenter: ViaVcenter,
        deadline: Deadline,
        verbose: bool,
    ) -> anyhow::Result<Self> {
        Ok(NsxT {
            http: Http::new("NSX", &config.endpoint, deadline, verbose)?,
            vcenter,
            user: config.endpoint.user.clone(),
            password: config.endpoint.password.clone(),
            auth: config.auth,
            session: std::sync::Mutex::new(None),
            ours: Tag {
                scope: config.scope.clone(),
                tag: config.tag.clone(),
            },
            add_remove: std::sync::Mutex::new(None),
            warnings: std::sync::Mutex::new(Vec::new()),
            resolve: config.resolve,
            certificate: config.endpoint.client.as_ref().map(|c| c.cert_path.clone()),
            read_ahead: std::sync::Mutex::new(Default::default()),
            prepared: std::sync::OnceLock::new(),
            prepared_used: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// `scope|tag`, as a Policy group's condition names it.
    pub fn tag_label(&self) -> String {
        format!("{}|{}", self.ours.scope, self.ours.tag)
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
    pub fn find_by_uuid(
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
        let reply = self.send(&Call::new(Method::GET, "/api/v1/node/version"))?;
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

    /// A VM found now, its tag state remembered for `tagged_among`.
    fn found(&self, vm: &NsxVm) -> VmRef {
        let found = vm_ref(vm);
        lock(&self.read_ahead).insert(found.id.clone(), self.carries(vm));
        found
    }

    /// Ends the session, if one was made.
    fn close(&self) {
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

    fn carries(&self, vm: &NsxVm) -> bool {
        vm.tags.contains(&self.ours)
    }

    /// Adds or removes our tag with `add_tags` / `remove_tags`, or, on a manager without them,
    /// with `update_tags` over a fresh read of the VM's tags; then reads back to verify.
    fn change(&self, vm: &VmRef, add: bool) -> anyhow::Result<()> {
        let verb = if add { "attaching" } else { "detaching" };
        let action = if add { "add_tags" } else { "remove_tags" };
        let what = format!(
            "NSX-T: {verb} {}|{} to {vm}",
            self.ours.scope, self.ours.tag
        );
        let known = *lock(&self.add_remove);
        if known != Some(false) {
            let body = serde_json::json!({"external_id": vm.id, "tags": [self.ours]});
            let reply = self.send_raw(&post_json(
                &format!("{VMS}{}", query([("action", action)])),
                &body,
            ))?;
            if reply.is_success() {
                *lock(&self.add_remove) = Some(true);
            } else if matches!(reply.status, 400 | 404) {
                let found = self.read(vm)?;
                match found {
                    // The VM is gone from the inventory, and its access with it.
                    None if !add => {
                        lock(&self.warnings).push(format!(
                            "NSX no longer knows {vm} (deleted?): its access is gone with it"
                        ));
                        return Ok(());
                    }
                    Some(v) if add && v.tags.len() >= MAX_TAGS => {
                        return Err(fault(
                            Exit::Unavailable,
                            format!(
                                "{what}: the VM already carries {} tags, the most NSX allows ({MAX_TAGS}); otnsx adds only its own and rewrites nobody's, so remove one of the VM's other tags",
                                v.tags.len()
                            ),
                        ));
                    }
                    // The fallback needs evidence that the manager lacks the action: its version.
                    Some(_) if known.is_none() && self.predates_add_remove()? => {
                        *lock(&self.add_remove) = Some(false);
                        lock(&self.warnings).push(format!(
                            "NSX manager answered {action} with HTTP {} and is older than 3.1.2; changing tags with update_tags (last writer wins against other tools)",
                            reply.status
                        ));
                    }
                    _ => return Err(self.error(&reply)).with_context(|| what.clone()),
                }
            } else {
                return Err(self.error(&reply)).with_context(|| what.clone());
            }
        }
        if *lock(&self.add_remove) == Some(false) {
            let current = self.read(vm)?.ok_or_else(|| {
                fault(
                    Exit::Unavailable,
                    format!("{what}: NSX no longer lists the VM"),
                )
            })?;
            let mut tags: Vec<Tag> = current
                .tags
                .into_iter()
                .filter(|t| *t != self.ours)
                .collect();
            if add {
                tags.push(self.ours.clone());
            }
            let body = serde_json::json!({"external_id": vm.id, "tags": tags});
            self.send(&post_json(
                &format!("{VMS}{}", query([("action", "update_tags")])),
                &body,
            ))
            .with_context(|| what.clone())?;
        }
        let now = self
            .read(vm)
            .with_context(|| format!("{what}: reading back"))?;
        if now.is_some_and(|v| self.carries(&v)) != add {
            return Err(fault(
                Exit::Unavailable,
                format!("{what} was accepted but the read-back disagrees (unverified)"),
            ));
        }
        Ok(())
    }

    /// The VM with this external id, if NSX lists it.
    fn read(&self, vm: &VmRef) -> anyhow::Result<Option<NsxVm>> {
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

    /// The VMs with our scope and tag by the search API, page by page; `None` when the search
    /// cannot answer now (400 with error 60508, the index being built, or 60514, a search
    /// timeout) or not at all (404): then the inventory is listed. A result that does not
    /// carry the tag (a stale index) is left out.
    fn search_tagged(&self) -> anyhow::Result<Option<Vec<VmRef>>> {
        let term = format!(
            "resource_type:VirtualMachine AND tags.scope:{} AND tags.tag:{}",
            lucene(&self.ours.scope),
            lucene(&self.ours.tag)
        );
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut pairs = vec![("query", term.as_str()), ("page_size", PAGE_SIZE)];
            if let Some(c) = &cursor {
                pairs.push(("cursor", c));
            }
            let reply =
                self.send_raw(&Call::new(Method::GET, format!("{SEARCH}{}", query(pairs))))?;
            if reply.status == 404
                || (reply.status == 400
                    && error_code(&reply).is_some_and(|c| SEARCH_NOT_READY.contains(&c)))
            {
                return Ok(None);
            }
            if !reply.is_success() {
                return Err(self.error(&reply));
            }
            let page: Page = reply.json("NSX")?;
            let empty = page.results.is_empty();
            out.extend(
                page.results
                    .iter()
                    .filter(|vm| self.carries(vm))
                    .map(vm_ref),
            );
            match page.cursor {
                Some(next)
                    if !next.is_empty() && !empty && cursor.as_deref() != Some(next.as_str()) =>
                {
                    cursor = Some(next);
                }
                _ => return Ok(Some(out)),
            }
        }
        Err(ServiceError::malformed(
            "NSX: the search results do not end",
        ))
    }

    /// Every VM matching one filter, following `cursor` over the pages.
    fn list(&self, filter: (&str, &str)) -> anyhow::Result<Vec<NsxVm>> {
        self.list_where(Some(filter))
    }

    /// The VMs that carry our tag now: from the search API, else (its index being built, or no
    /// search API) from the whole inventory, read page by page.
    fn every_tagged(&self) -> anyhow::Result<Vec<VmRef>> {
        if let Some(found) = self
            .search_tagged()
            .context("searching NSX for the tagged VMs")?
        {
            return Ok(found);
        }
        let all = self.list_where(None).context("listing NSX's VMs")?;
        Ok(all
            .iter()
            .filter(|vm| self.carries(vm))
            .map(vm_ref)
            .collect())
    }

    fn list_where(&self, filter: Option<(&str, &str)>) -> anyhow::Result<Vec<NsxVm>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut pairs: Vec<(&str, &str)> = filter.into_iter().collect();
            pairs.push(("page_size", PAGE_SIZE));
            if let Some(c) = &cursor {
                pairs.push(("cursor", c));
            }
            let reply = self.send(&Call::new(Method::GET, format!("{VMS}{}", query(pairs))))?;
            let page: Page = reply.json("NSX")?;
            let empty = page.results.is_empty();
            out.extend(page.results);
            match page.cursor {
                Some(next)
                    if !next.is_empty() && !empty && cursor.as_deref() != Some(next.as_str()) =>
                {
                    cursor = Some(next);
                }
                _ => return Ok(out),
            }
        }
        Err(ServiceError::malformed("NSX: the VM list does not end"))
    }

    /// Sends and turns a non-2xx answer into an error.
    fn send(&self, call: &Call) -> anyhow::Result<Reply> {
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
    fn send_raw(&self, call: &Call) -> anyhow::Result<Reply> {
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

    fn error(&self, reply: &Reply) -> anyhow::Error {
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
            401 | 403 => {
                "; check nsx.user, its password and its role (it must be allowed to change VM tags)"
            }
            300..=399 => "; redirects are not followed: set nsx.url to the final address",
            429 => "; NSX kept asking to slow down",
            _ => "",
        };
        ServiceError::status(
            reply.status,
            format!("NSX: HTTP {}: {}{hint}", reply.status, error_text(reply)),
        )
    }
}

impl TagBackend for NsxT {
    fn find(&self, names: Vec<String>, found: &mut Found<'_>) -> anyhow::Result<()> {
        if self.resolve == Resolve::Nsx {
            let vms = crate::parallel::map(&names, crate::parallel::PER_SERVICE, |name| {
                self.find_by_name(name)
            });
            for (name, vm) in names.into_iter().zip(vms) {
                found(name, vm)?;
            }
            return Ok(());
        }
        // Through vCenter: name → instance UUID → the NSX VM with that external or compute id.
        self.vcenter.find(names, found, |vc, vm| {
            let (instance, bios) = vc.identity(&vm)?;
            self.find_by_uuid(&vm, &instance, bios.as_deref())
        })
    }

    /// Beside the vCenter login: the session (when it is one), and the VMs' tags read ahead.
    fn prepare(&self, vms: &[VmRef], finding: bool) {
        std::thread::scope(|scope| {
            if finding && self.resolve == Resolve::Vcenter {
                scope.spawn(|| self.vcenter.open_ahead());
            }
            self.prepared.get_or_init(|| {
                if self.auth == NsxAuth::Session && self.session().is_err() {
                    return Default::default(); // said where a request needs the session
                }
                let read = crate::parallel::map(vms, crate::parallel::PER_SERVICE, |vm| {
                    self.read(vm)
                        .map(|found| found.is_some_and(|f| self.carries(&f)))
                });
                // A read that failed is made again where it is needed.
                vms.iter()
                    .zip(read)
                    .filter_map(|(vm, tagged)| Some((vm.id.clone(), tagged.ok()?)))
                    .collect()
            });
        });
    }

    fn done_finding(&self) {
        self.vcenter.close();
    }

    /// One read per VM, several at once, unless it was read ahead.
    fn tagged_among(&self, vms: &[VmRef]) -> anyhow::Result<BTreeSet<String>> {
        // The reads made ahead (waited for, if they are under way), for the first call only.
        let first = !self
            .prepared_used
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        let prepared = match first {
            true => self.prepared.get_or_init(Default::default).clone(),
            false => Default::default(),
        };
        let known: Vec<Option<bool>> = {
            let mut read_ahead = lock(&self.read_ahead);
            vms.iter()
                .map(|vm| read_ahead.remove(&vm.id).or(prepared.get(&vm.id).copied()))
                .collect()
        };
        let read = crate::parallel::map(
            &vms.iter().zip(known).collect::<Vec<_>>(),
            crate::parallel::PER_SERVICE,
            |(vm, known)| match known {
                Some(tagged) => Ok(*tagged),
                None => self
                    .read(vm)
                    .map(|found| found.is_some_and(|f| self.carries(&f))),
            },
        );
        let mut tagged = BTreeSet::new();
        for (vm, carries) in vms.iter().zip(read) {
            if carries? {
                tagged.insert(vm.id.clone());
            }
        }
        Ok(tagged)
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
        let count = self.every_tagged()?.len();
        Ok(format!(
            "NSX-T answers; the VM inventory is readable; tag {} is on {count} VM(s) now",
            self.tag_label()
        ))
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.warnings))
    }
}

/// The session is ended however the run ends.
impl Drop for NsxT {
    fn drop(&mut self) {
        self.close();
    }
}

/// Parses `data` as NSX-T answers are parsed, for the fuzz targets.
pub fn fuzz_parse(data: &[u8]) {
    let reply = Reply {
        status: 400,
        headers: vec![("content-type".into(), "application/json".into())],
        body: String::from_utf8_lossy(data).into_owned(),
    };
    let _ = reply.json::<Page>("NSX");
    let _ = error_text(&reply);
    let _ = error_code(&reply);
}

/// A term for the search API's Lucene syntax: its special characters (and white space)
/// escaped with a backslash.
fn lucene(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        if "+-&|!(){}[]^\"~*?:\\/ ".contains(c) || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn vm_ref(vm: &NsxVm) -> VmRef {
    VmRef {
        name: vm.display_name.clone(),
        id: vm.external_id.clone(),
    }
}

fn post_json(path: &str, body: &Value) -> Call {
    Call::new(Method::POST, path).body("application/json", body.to_string().into_bytes())
}

fn error_code(reply: &Reply) -> Option<i64> {
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
