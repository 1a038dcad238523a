//! A fake NSX-T / NSX 4 manager for `fabric/virtual-machines` as `../shared/reference/nsx.md`
//! describes it: JSON, `tags` omitted when empty, a tag may lack its value, `cursor` paging
//! with `page_size` at most 1000, the add/remove/update tag actions answering 204, basic auth
//! or a session (JSESSIONID cookie + X-XSRF-TOKEN). It can be an old manager without
//! add/remove, rate-limit with 429 and Retry-After, abort transactions (607), and expire
//! session tokens (403, error 98).
//!
//! The same manager serves the Policy API as NSX 4.x does: tag operations
//! (`PUT /policy/api/v1/infra/tags/tag-operations/{id}` answering 200, a `status` that is
//! `Running` for a while and then names each VM's outcome), the realized-state VM list without
//! a cursor or `result_count` once the inventory passes 1000 VMs and in an order that changes
//! per request unless sorted, and the Policy search. Its accounts have the roles NSX 4.1 gives
//! them: `otnsx` is Enterprise Admin, `otnsx-tagger` a custom role with read-only access on
//! VMs and full access on Tags (refused the fabric tag actions, as on NSX 4.1), `otnsx-reader`
//! read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::server::{Request, Response, Server, basic_auth};

pub const USER: &str = "otnsx";
pub const PASSWORD: &str = "nsxt-secret-pw";
/// An account whose role may read the inventory but not change tags (same password).
pub const READER: &str = "otnsx-reader";
/// An account whose custom role has full access on Tags and read-only access on VMs: the
/// Policy tag operations are allowed, the fabric tag actions refused (NSX 4.1).
pub const TAGGER: &str = "otnsx-tagger";
/// An account whose custom role has full access on the distributed firewall and groups and
/// read-only access on VMs: it may write per-agent rules, not tags.
pub const FIREWALLER: &str = "otnsx-firewall";
const TAG_OPERATIONS: &str = "/policy/api/v1/infra/tags/tag-operations/";
const REALIZED_VMS: &str = "/policy/api/v1/infra/realized-state/virtual-machines";
const POLICY_SEARCH: &str = "/policy/api/v1/search/query";
const EFFECTIVE_RESOURCES: &str = "/policy/api/v1/infra/tags/effective-resources";
const DOMAINS: &str = "/policy/api/v1/infra/domains/";
/// The hierarchical Policy API: one write of a tree of objects.
const HIERARCHY: &str = "/policy/api/v1/infra";
const VMS: &str = "/api/v1/fabric/virtual-machines";
const SEARCH: &str = "/api/v1/search/query";
/// User tags a VM may carry (NSX 2.5 and later).
const MAX_TAGS: usize = 25;

#[derive(Debug, Clone)]
pub struct FakeVm {
    pub display_name: String,
    pub external_id: String,
    pub compute_ids: Vec<String>,
    /// (scope, tag); a tag without a value is `None`.
    pub tags: Vec<(String, Option<String>)>,
}

#[derive(Default)]
struct State {
    vms: Vec<FakeVm>,
    /// JSESSIONID → XSRF token.
    sessions: BTreeMap<String, String>,
    sessions_created: usize,
    sessions_destroyed: usize,
    old_manager: bool,
    expire_tokens: bool,
    /// Answer this many requests with 429 and this Retry-After.
    rate_limited: usize,
    retry_after: u64,
    /// Answer this many changes with 500 / error 607.
    aborted: usize,
    /// Answer this many requests with 503 Service Unavailable.
    unavailable: usize,
    /// Answer this many searches with 400 / error 60508 (the index is being built).
    indexing: usize,
    /// No search API at all (404), as on a manager without it.
    no_search: bool,
    /// A search that pages for ever: this many VMs carrying the searched tag on every page,
    /// each page with a new cursor, their names this long (for the tests of otnsx's limits).
    endless_search: Option<(usize, usize)>,
    /// Search pages answered so far.
    search_pages: usize,
    /// Answer this many tag changes with a plain 400 (a request the manager refuses).
    bad_requests: usize,
    /// The sessions of the read-only account, by JSESSIONID.
    reader_sessions: BTreeSet<String>,
    /// The client certificate registered as a principal identity (DER).
    principal: Option<Vec<u8>>,
    /// The sessions of the tagging account, by JSESSIONID.
    tagger_sessions: BTreeSet<String>,
    /// Tag operations by id: how many status reads still answer `Running`, and the outcome.
    operations: BTreeMap<String, Operation>,
    /// Status reads of each new operation that answer `Running` before it ends.
    running_polls: usize,
    /// This many operations end in `Error` for each VM, changing nothing.
    failing_operations: usize,
    /// This many operations end in `Success` for each VM but change nothing (a manager whose
    /// status cannot be taken alone).
    unapplied_operations: usize,
    /// The fabric inventory read is refused (403) to the tagging account.
    fabric_reads_refused: bool,
    /// Realized-state list requests, to make the unsorted order change.
    realized_reads: usize,
    /// Policy groups by (domain, id): their `expression`.
    groups: BTreeMap<(String, String), Value>,
    /// Member reads after each tag change that still show the membership before it.
    membership_lag: usize,
    lag_left: usize,
    /// The members as last realized, by group.
    realized_members: BTreeMap<(String, String), Vec<FakeVm>>,
    /// Security policies the site made, by (domain, id): whether the API marks it PROTECTED.
    security_policies: BTreeMap<(String, String), bool>,
    /// Rules by (domain, policy, id), as stored (with `_revision`).
    rules: BTreeMap<(String, String, String), Value>,
    /// The Applied-To (`scope`) the site gave each security policy, when not ANY.
    policy_scopes: BTreeMap<(String, String), Vec<String>>,
    /// Groups whose last rule was deleted but whose deletion is not yet realized: a group
    /// delete is refused (500030) until the next rule list read (time passing).
    pending_deletion: BTreeSet<String>,
    /// Make rule deletions leave their groups pending as above.
    slow_realization: bool,
    /// Hierarchical writes answered so far.
    hierarchy_writes: usize,
    /// The tags of each Policy group, by (domain, id).
    group_tags: BTreeMap<(String, String), Value>,
    /// This many rule writes find the rule changed meanwhile (412).
    conflicts: usize,
    /// Rules are realized with state ERROR.
    realize_errors: bool,
    /// The addresses of each VM's interfaces (by external id), as VMware Tools report them.
    vm_ips: BTreeMap<String, Vec<String>>,
    /// How security policies' rule lists are answered: as stored, unless a test makes the
    /// manager misbehave.
    rule_list: RuleList,
    /// Rule list pages answered so far.
    rule_pages: usize,
    /// How the account's permissions are answered: with feature ids (NSX 4.x), by feature
    /// name only (an older manager), or not at all (404).
    permissions: Permissions,
    /// A manager without `GET /policy/api/v1/infra/tags/effective-resources` (404).
    no_effective_resources: bool,
    /// A lagging search index: the VMs and their tags as the search last saw them (`None`:
    /// the search shows the inventory as it is).
    search_index: Option<Vec<FakeVm>>,
    /// Answer this many searches with 503 / error 60576 (the page asked for is too large).
    search_too_large: usize,
}

/// How `GET /api/v1/aaa/user-info/permissions` answers.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub enum Permissions {
    #[default]
    ByFeatureId,
    ByNameOnly,
    Missing,
}

/// How the rule list of a security policy is answered (for the tests of otnsx's limits).
#[derive(Default, Clone)]
pub enum RuleList {
    /// The stored rules, in pages of at most `page_size`, with a cursor to the next page.
    #[default]
    Stored,
    /// A server that pages for ever: every page holds `per_page` rules (the site's, not
    /// otnsx's) and a new cursor.
    Endless { per_page: usize },
    /// Every page carries the same cursor (and the stored rules again).
    SameCursor,
    /// One answer of this body (200, JSON), whatever was asked.
    Body(Arc<Vec<u8>>),
}

struct Operation {
    body: Value,
    running: usize,
    /// (list, resource_type, resource id, display name, Success/Error, details)
    outcomes: Vec<(String, String, String, String, &'static str, String)>,
}

pub struct FakeNsxT {
    pub server: Server,
    state: Arc<Mutex<State>>,
}

impl FakeNsxT {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let server = Server::start(move |req| route(&shared, req));
        FakeNsxT { server, state }
    }

    /// The same manager behind HTTPS.
    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let server = Server::start_tls(move |req| route(&shared, req), tls);
        FakeNsxT { server, state }
    }

    /// Registers the certificate (DER) as a principal identity allowed to change tags.
    pub fn trust_client(&self, der: &[u8]) {
        self.state.lock().unwrap().principal = Some(der.to_vec());
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn add_vm(
        &self,
        display_name: &str,
        external_id: &str,
        compute_ids: &[String],
        tags: &[(&str, Option<&str>)],
    ) {
        self.state.lock().unwrap().vms.push(FakeVm {
            display_name: display_name.into(),
            external_id: external_id.into(),
            compute_ids: compute_ids.to_vec(),
            tags: tags
                .iter()
                .map(|(s, t)| (s.to_string(), t.map(str::to_string)))
                .collect(),
        });
    }

    /// The tags of the VM with this external id, as `scope|tag` strings.
    pub fn tags(&self, external_id: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let vm = s
            .vms
            .iter()
            .find(|v| v.external_id == external_id)
            .expect("vm");
        vm.tags
            .iter()
            .map(|(sc, t)| format!("{sc}|{}", t.clone().unwrap_or_default()))
            .collect()
    }

    /// The display names of the VMs carrying `scope|tag`.
    pub fn carrying(&self, scope: &str, tag: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.vms
            .iter()
            .filter(|v| {
                v.tags
                    .iter()
                    .any(|(sc, t)| sc == scope && t.as_deref() == Some(tag))
            })
            .map(|v| v.display_name.clone())
            .collect()
    }

    /// A security policy the site made, for otnsx's rules (`protected`: marked PROTECTED).
    pub fn add_security_policy(&self, domain: &str, id: &str, protected: bool) {
        self.state
            .lock()
            .unwrap()
            .security_policies
            .insert((domain.into(), id.into()), protected);
    }

    /// The rules of a security policy, as stored.
    pub fn rules(&self, domain: &str, policy: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.rules
            .iter()
            .filter(|((d, p, _), _)| d == domain && p == policy)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Changes a stored rule behind otnsx's back (its revision moves on).
    pub fn edit_rule(&self, domain: &str, policy: &str, id: &str, edit: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        let rule = s
            .rules
            .get_mut(&(domain.into(), policy.into(), id.into()))
            .expect("rule");
        edit(rule);
        let revision = rule["_revision"].as_i64().unwrap_or(0) + 1;
        rule["_revision"] = json!(revision);
    }

    /// Deletes a rule behind otnsx's back.
    pub fn remove_rule(&self, domain: &str, policy: &str, id: &str) {
        self.state
            .lock()
            .unwrap()
            .rules
            .remove(&(domain.into(), policy.into(), id.into()));
    }

    /// Adds a rule as the site would (not otnsx's).
    pub fn add_rule(&self, domain: &str, policy: &str, id: &str, rule: Value) {
        let mut rule = rule;
        rule["id"] = json!(id);
        rule["_revision"] = json!(0);
        self.state
            .lock()
            .unwrap()
            .rules
            .insert((domain.into(), policy.into(), id.into()), rule);
    }

    /// From now on the search pages for ever, `per_page` VMs carrying the searched tag on each
    /// page, their display names `name` characters long, and a new cursor (pages counted from
    /// 0 again).
    pub fn endless_search(&self, per_page: usize, name: usize) {
        let mut s = self.state.lock().unwrap();
        s.endless_search = Some((per_page, name));
        s.search_pages = 0;
    }

    /// The search pages answered since the last [`FakeNsxT::endless_search`].
    pub fn search_pages(&self) -> usize {
        self.state.lock().unwrap().search_pages
    }

    /// How security policies' rule lists are answered from now on (and their pages counted
    /// from 0 again).
    pub fn rule_list(&self, mode: RuleList) {
        let mut s = self.state.lock().unwrap();
        s.rule_list = mode;
        s.rule_pages = 0;
    }

    /// The rule list pages answered since the last [`FakeNsxT::rule_list`].
    pub fn rule_pages(&self) -> usize {
        self.state.lock().unwrap().rule_pages
    }

    /// The addresses NSX shows for a VM's interface.
    pub fn set_ips(&self, external_id: &str, ips: &[&str]) {
        self.state.lock().unwrap().vm_ips.insert(
            external_id.into(),
            ips.iter().map(|i| i.to_string()).collect(),
        );
    }

    /// The next `count` rule writes find the rule changed meanwhile (412).
    pub fn rule_conflicts(&self, count: usize) {
        self.state.lock().unwrap().conflicts = count;
    }

    /// Rules are realized with state ERROR (or REALIZED again).
    /// Gives a security policy an Applied-To of its own (group paths).
    pub fn set_policy_scope(&self, domain: &str, id: &str, scope: &[&str]) {
        let mut s = self.state.lock().unwrap();
        s.policy_scopes.insert(
            (domain.into(), id.into()),
            scope.iter().map(|g| g.to_string()).collect(),
        );
    }

    /// Rule deletions leave their groups in use until the next rule list read.
    pub fn slow_realization(&self, slow: bool) {
        self.state.lock().unwrap().slow_realization = slow;
    }

    /// Hierarchical writes (`PATCH /policy/api/v1/infra`) answered so far.
    pub fn hierarchy_writes(&self) -> usize {
        self.state.lock().unwrap().hierarchy_writes
    }

    pub fn realize_errors(&self, errors: bool) {
        self.state.lock().unwrap().realize_errors = errors;
    }

    /// The groups otnsx made (PATCH), by id.
    pub fn group_ids(&self, domain: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.groups
            .keys()
            .filter(|(d, _)| d == domain)
            .map(|(_, g)| g.clone())
            .collect()
    }

    /// A Policy group in `domain` whose expression is `expression` (a JSON array).
    pub fn add_group(&self, domain: &str, id: &str, expression: Value) {
        self.state
            .lock()
            .unwrap()
            .groups
            .insert((domain.into(), id.into()), expression);
    }

    /// After each tag change, this many member reads still show the earlier membership
    /// (`usize::MAX`: the group never follows).
    pub fn membership_lag(&self, reads: usize) {
        let mut s = self.state.lock().unwrap();
        s.membership_lag = reads;
        s.lag_left = s.lag_left.min(reads);
    }

    /// Status reads of each new tag operation that answer `Running` before it ends.
    pub fn running_polls(&self, count: usize) {
        self.state.lock().unwrap().running_polls = count;
    }

    /// Ends the next `count` tag operations in `Error` for each VM, changing nothing.
    pub fn failing_operations(&self, count: usize) {
        self.state.lock().unwrap().failing_operations = count;
    }

    /// Ends the next `count` tag operations in `Success` while changing nothing.
    pub fn unapplied_operations(&self, count: usize) {
        self.state.lock().unwrap().unapplied_operations = count;
    }

    /// Refuses the fabric inventory read to the tagging account (403).
    pub fn refuse_fabric_reads(&self) {
        self.state.lock().unwrap().fabric_reads_refused = true;
    }

    /// The tag operations received (PUT bodies), in order.
    pub fn operations(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.starts_with(TAG_OPERATIONS))
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    /// Puts a tag on a VM behind otnsx's back.
    pub fn add_tag(&self, external_id: &str, scope: &str, tag: &str) {
        let mut s = self.state.lock().unwrap();
        let vm = s
            .vms
            .iter_mut()
            .find(|v| v.external_id == external_id)
            .expect("vm");
        vm.tags.push((scope.into(), Some(tag.into())));
    }

    /// Takes a tag off a VM behind otnsx's back.
    pub fn remove_tag(&self, external_id: &str, scope: &str, tag: &str) {
        let mut s = self.state.lock().unwrap();
        let vm = s
            .vms
            .iter_mut()
            .find(|v| v.external_id == external_id)
            .expect("vm");
        vm.tags
            .retain(|t| *t != (scope.to_string(), Some(tag.to_string())));
    }

    /// Refuses the next `count` tag changes with a plain 400.
    pub fn bad_requests(&self, count: usize) {
        self.state.lock().unwrap().bad_requests = count;
    }

    /// Takes a VM out of the inventory (deleted in vCenter).
    pub fn remove_vm(&self, external_id: &str) {
        self.state
            .lock()
            .unwrap()
            .vms
            .retain(|v| v.external_id != external_id);
    }

    /// Gives a VM other tools' tags up to NSX's maximum.
    pub fn fill_tags(&self, external_id: &str) {
        let mut s = self.state.lock().unwrap();
        let vm = s
            .vms
            .iter_mut()
            .find(|v| v.external_id == external_id)
            .unwrap();
        let mut n = 0;
        while vm.tags.len() < MAX_TAGS {
            vm.tags.push((format!("other{n}"), Some("x".into())));
            n += 1;
        }
    }

    pub fn old_manager(&self, old: bool) {
        self.state.lock().unwrap().old_manager = old;
    }

    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().expire_tokens = true;
    }

    pub fn rate_limit(&self, count: usize, retry_after: u64) {
        let mut s = self.state.lock().unwrap();
        s.rate_limited = count;
        s.retry_after = retry_after;
    }

    /// How the account's permissions are answered from now on.
    pub fn permissions(&self, shape: Permissions) {
        self.state.lock().unwrap().permissions = shape;
    }

    /// A manager without the Policy effective-resources list (before NSX-T 3.0): 404.
    pub fn without_effective_resources(&self) {
        self.state.lock().unwrap().no_effective_resources = true;
    }

    /// From now on the search index lags: it shows the VMs' tags as they are now, until
    /// [`FakeNsxT::search_catches_up`].
    pub fn lagging_search(&self) {
        let mut s = self.state.lock().unwrap();
        s.search_index = Some(s.vms.clone());
    }

    pub fn search_catches_up(&self) {
        self.state.lock().unwrap().search_index = None;
    }

    /// Answers the next `count` searches: the page asked for is too large (503, error 60576).
    pub fn search_too_large(&self, count: usize) {
        self.state.lock().unwrap().search_too_large = count;
    }

    /// Answers the next `count` searches: the index is being built (400, error 60508).
    pub fn indexing(&self, count: usize) {
        self.state.lock().unwrap().indexing = count;
    }

    /// No search API: the manager answers 404 for it.
    pub fn without_search(&self) {
        self.state.lock().unwrap().no_search = true;
    }

    pub fn unavailable(&self, count: usize) {
        self.state.lock().unwrap().unavailable = count;
    }

    pub fn abort_transactions(&self, count: usize) {
        self.state.lock().unwrap().aborted = count;
    }

    /// (created, destroyed, still open)
    pub fn sessions(&self) -> (usize, usize, usize) {
        let s = self.state.lock().unwrap();
        (s.sessions_created, s.sessions_destroyed, s.sessions.len())
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// The tag actions received (`add_tags`, `remove_tags`, `update_tags`), in order.
    pub fn actions(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == VMS)
            .filter_map(|r| r.query_value("action"))
            .collect()
    }
}

fn error(status: u16, code: i64, message: &str) -> Response {
    let http = match status {
        400 => "BAD_REQUEST",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        429 => "TOO_MANY_REQUESTS",
        503 => "SERVICE_UNAVAILABLE",
        _ => "INTERNAL_SERVER_ERROR",
    };
    Response::json(
        status,
        json!({"httpStatus": http, "error_code": code, "module_name": "common-services", "error_message": message}).to_string(),
    )
}

enum Auth {
    Ok,
    /// The read-only account: may read, may not change tags.
    Reader,
    /// The custom role with full access on Tags: the Policy tag operations, no fabric actions.
    Tagger,
    /// The custom role with full access on the firewall and groups, read-only elsewhere.
    Firewaller,
    Refused(Response),
}

fn authenticate(s: &mut State, req: &Request) -> Auth {
    if let Some(cert) = &req.client_cert {
        // A principal identity logs in by its certificate alone.
        if req.header("authorization").is_some() {
            return Auth::Refused(error(400, 400, "Both a client certificate and credentials"));
        }
        if s.principal.as_ref() != Some(cert) {
            return Auth::Refused(error(500, 99, "Client certificate is not trusted"));
        }
        if req.header("cookie").is_none() {
            return Auth::Ok;
        }
    }
    if let Some((user, password)) = basic_auth(req) {
        return if user == USER && password == PASSWORD {
            Auth::Ok
        } else if user == READER && password == PASSWORD {
            Auth::Reader
        } else if user == TAGGER && password == PASSWORD {
            Auth::Tagger
        } else if user == FIREWALLER && password == PASSWORD {
            Auth::Firewaller
        } else {
            Auth::Refused(error(
                403,
                403,
                "The credentials were incorrect or the account specified has been locked.",
            ))
        };
    }
    let cookie = req
        .header("cookie")
        .and_then(|c| {
            c.split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("JSESSIONID="))
        })
        .map(str::to_string);
    let Some(cookie) = cookie.filter(|c| s.sessions.contains_key(c)) else {
        return Auth::Refused(error(
            403,
            403,
            "The credentials were incorrect or the account specified has been locked.",
        ));
    };
    if s.expire_tokens {
        s.expire_tokens = false;
        s.sessions.remove(&cookie);
        return Auth::Refused(error(403, 98, "The XSRF token has expired."));
    }
    if req.header("x-xsrf-token") != s.sessions.get(&cookie).map(String::as_str) {
        return Auth::Refused(error(403, 98, "Bad XSRF token."));
    }
    if s.reader_sessions.contains(&cookie) {
        return Auth::Reader;
    }
    if s.tagger_sessions.contains(&cookie) {
        return Auth::Tagger;
    }
    Auth::Ok
}

fn route(state: &Mutex<State>, req: &Request) -> Response {
    let mut s = state.lock().unwrap();
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/api/session/create") => return session_create(&mut s, req),
        ("POST", "/api/session/destroy") => {
            if let Auth::Refused(r) = authenticate(&mut s, req) {
                return r;
            }
            let cookie = req
                .header("cookie")
                .unwrap_or("")
                .trim_start_matches("JSESSIONID=")
                .to_string();
            s.sessions.remove(&cookie);
            s.sessions_destroyed += 1;
            return Response::empty(200);
        }
        _ => {}
    }
    let auth = authenticate(&mut s, req);
    if let Auth::Refused(r) = auth {
        return r;
    }
    let tag_operation = req.method == "PUT" && req.path.starts_with(TAG_OPERATIONS);
    // Not recorded from a real manager: the shape of NSX's errors, with its 403. NSX 4.1
    // refuses the fabric tag actions to a custom role with full access on Tags.
    let refused = match auth {
        Auth::Reader => req.method != "GET",
        // A hierarchical write is checked object by object, below.
        Auth::Firewaller => {
            req.method != "GET" && !req.path.starts_with(DOMAINS) && req.path != HIERARCHY
        }
        Auth::Tagger => {
            (req.method != "GET" && !tag_operation) || (s.fabric_reads_refused && req.path == VMS)
        }
        _ => false,
    };
    if refused {
        return error(
            403,
            403,
            "The user does not have permission to perform this operation.",
        );
    }
    if s.unavailable > 0 {
        s.unavailable -= 1;
        return error(503, 503, "Service Unavailable: the manager is starting")
            .with_header("Retry-After", "0");
    }
    if s.rate_limited > 0 {
        s.rate_limited -= 1;
        let after = s.retry_after.to_string();
        return error(
            429,
            102,
            "Client 'otnsx' exceeded request rate of 100 per second",
        )
        .with_header("Retry-After", &after);
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", VMS) => list(&s, req),
        // An old manager (2.5, without add_tags / remove_tags) or a current one.
        ("GET", "/api/v1/node/version") => {
            let version = if s.old_manager {
                "2.5.1.0.0.15314288"
            } else {
                "4.1.2.0.0.22589037"
            };
            Response::json(
                200,
                json!({"node_version": version, "product_version": version}).to_string(),
            )
        }
        // What each account's role allows, feature by feature. The container is not in
        // VMware's API reference; each entry is the bindings' `FeaturePermission` (`feature`,
        // the id, and `permission` required, `feature_name` optional). The ids are NSX's:
        // `policy_vm_vm_tags` (the feature VMware's API reference names for the tags'
        // effective resources) and `vm_vm_info` (Inventory > Virtual Machines).
        ("GET", "/api/v1/aaa/user-info/permissions") if s.permissions != Permissions::Missing => {
            let (tags, vms) = match auth {
                Auth::Reader => ("read", "read"),
                Auth::Tagger => ("crud", "read"),
                Auth::Firewaller => ("read", "read"),
                _ => ("crud", "crud"),
            };
            let features = [
                ("policy_vm_vm_tags", "Tags", tags),
                ("vm_vm_info", "Virtual Machines", vms),
                ("policy_groups", "Groups", "read"),
            ];
            let by_id = s.permissions == Permissions::ByFeatureId;
            let listed: Vec<Value> = features
                .iter()
                .map(|(id, name, permission)| match by_id {
                    true => json!({"feature": id, "feature_name": name, "permission": permission,
                                   "is_execute_recommended": false, "is_internal": false}),
                    false => json!({"feature_name": name, "permission": permission}),
                })
                .collect();
            Response::json(200, json!({"feature_permissions": listed}).to_string())
        }
        ("GET", EFFECTIVE_RESOURCES) if !s.no_effective_resources => effective_resources(&s, req),
        ("GET", SEARCH | POLICY_SEARCH) if !s.no_search => search(&mut s, req),
        ("GET", REALIZED_VMS) => realized(&mut s, req),
        ("GET", "/api/v1/fabric/vifs") => vifs(&s, req),
        ("PATCH", HIERARCHY) => hierarchy(&mut s, req),
        (_, HIERARCHY) => error(405, 400, "Method not allowed"),
        (_, path) if path.starts_with(DOMAINS) && path.contains("/security-policies/") => {
            firewall(&mut s, req, &path[DOMAINS.len()..])
        }
        ("PATCH" | "DELETE", path) if path.starts_with(DOMAINS) => {
            group_write(&mut s, req, &path[DOMAINS.len()..])
        }
        ("GET", path) if path.starts_with(DOMAINS) => group(&mut s, req, &path[DOMAINS.len()..]),
        ("GET", "/policy/api/v1/infra/realized-state/realized-entities") => {
            realized_entities(&s, req)
        }
        ("PUT", path) if path.starts_with(TAG_OPERATIONS) => {
            let id = path[TAG_OPERATIONS.len()..].to_string();
            tag_operation_put(&mut s, req, &id)
        }
        ("GET", path) if path.starts_with(TAG_OPERATIONS) => {
            let rest = &path[TAG_OPERATIONS.len()..];
            match rest.strip_suffix("/status") {
                Some(id) => tag_operation_status(&mut s, id),
                None => match s.operations.get(rest) {
                    Some(op) => Response::json(200, op.body.to_string()),
                    None => error(404, 500090, &format!("TagBulkOperation {rest} not found")),
                },
            }
        }
        ("POST", VMS) => change(&mut s, req),
        (_, VMS) => error(405, 400, "Method not allowed"),
        _ => error(404, 404, "The requested URI could not be found."),
    }
}

fn session_create(s: &mut State, req: &Request) -> Response {
    if req.media_type() != "application/x-www-form-urlencoded" {
        return error(415, 415, "Unsupported media type");
    }
    let form = Request {
        raw_query: req.body_text(),
        ..req.clone()
    };
    let user = form.query_value("j_username").unwrap_or_default();
    let by_certificate = req.client_cert.is_some() && req.body.is_empty();
    if by_certificate && s.principal.as_ref() != req.client_cert.as_ref() {
        return error(500, 99, "Client certificate is not trusted");
    }
    if !by_certificate
        && (![USER, READER, TAGGER, FIREWALLER].contains(&user.as_str())
            || form.query_value("j_password").as_deref() != Some(PASSWORD))
    {
        return error(
            403,
            403,
            "The credentials were incorrect or the account specified has been locked.",
        );
    }
    s.sessions_created += 1;
    let cookie = format!("fakejsession{:08}", s.sessions_created);
    let xsrf = format!("fakexsrf{:08}", s.sessions_created);
    s.sessions.insert(cookie.clone(), xsrf.clone());
    if user == READER {
        s.reader_sessions.insert(cookie.clone());
    }
    if user == TAGGER {
        s.tagger_sessions.insert(cookie.clone());
    }
    Response::empty(200)
        .with_header(
            "Set-Cookie",
            &format!("JSESSIONID={cookie}; Path=/; Secure; HttpOnly"),
        )
        .with_header("X-XSRF-TOKEN", &xsrf)
}

fn vm_json(vm: &FakeVm) -> Value {
    let mut v = json!({
        "resource_type": "VirtualMachine", "display_name": vm.display_name,
        "external_id": vm.external_id, "power_state": "VM_RUNNING", "type": "REGULAR",
        "compute_ids": vm.compute_ids, "_last_sync_time": 1_795_448_203_000u64
    });
    if !vm.tags.is_empty() {
        v["tags"] = vm
            .tags
            .iter()
            .map(|(scope, tag)| match tag {
                Some(t) => json!({"scope": scope, "tag": t}),
                None => json!({"scope": scope}),
            })
            .collect();
    }
    v
}

/// The search API, for the one query otnsx makes: the VMs carrying a scope and tag. Paged like
/// the inventory (2 a page here); anything else is refused as the real API refuses a query it
/// cannot parse.
fn search(s: &mut State, req: &Request) -> Response {
    for (key, _) in req.query() {
        if !["query", "cursor", "page_size"].contains(&key.as_str()) {
            return error(400, 400, &format!("Unknown query parameter {key}"));
        }
    }
    if s.indexing > 0 {
        s.indexing -= 1;
        return error(
            400,
            60508,
            "Re-indexing is in progress. Search results may be incomplete.",
        );
    }
    // As VMware's clients read it: a page too large is 503 / 60576; they ask for 100 fewer.
    if s.search_too_large > 0 {
        s.search_too_large -= 1;
        return error(
            503,
            60576,
            "Search result page is too large. Reduce the page_size.",
        );
    }
    let query = req.query_value("query").unwrap_or_default();
    let Some(wanted) = query
        .strip_prefix("resource_type:VirtualMachine AND tags.scope:")
        .and_then(|rest| rest.split_once(" AND tags.tag:"))
        .map(|(scope, tag)| (unescape(scope), unescape(tag)))
    else {
        return error(400, 60500, &format!("Invalid search query {query:?}"));
    };
    let start: usize = match req.query_value("cursor").map(|c| c.parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(400, 400, "Invalid cursor"),
    };
    s.search_pages += 1;
    if let Some((per_page, name)) = s.endless_search {
        // Written out by hand: pages come by the hundred, and must come fast.
        let results: Vec<String> = (start..start + per_page)
            .map(|n| {
                format!(
                    r#"{{"resource_type":"VirtualMachine","display_name":"vm{n:0name$}","external_id":"5012{n:04}-dddd-eeee-ffff-{n:012}","tags":[{{"scope":{},"tag":{}}}]}}"#,
                    json!(wanted.0),
                    json!(wanted.1)
                )
            })
            .collect();
        return Response::json(
            200,
            format!(
                r#"{{"results":[{}],"cursor":"{:04}"}}"#,
                results.join(","),
                start + per_page.max(1)
            ),
        );
    }
    // A lagging index shows the tags as they were when it last caught up.
    let index = s.search_index.as_ref().unwrap_or(&s.vms);
    let matching: Vec<&FakeVm> = index
        .iter()
        .filter(|v| {
            v.tags
                .iter()
                .any(|(scope, tag)| *scope == wanted.0 && tag.as_deref() == Some(wanted.1.as_str()))
        })
        .collect();
    let end = (start + 2).min(matching.len());
    let results: Vec<Value> = matching[start.min(end)..end]
        .iter()
        .map(|v| vm_json(v))
        .collect();
    let mut body = json!({"results": results, "result_count": matching.len()});
    body["cursor"] = json!(next_cursor(end, matching.len()));
    Response::json(200, body.to_string())
}

/// `GET /policy/api/v1/infra/tags/effective-resources?scope=S&tag=T`, as VMware's bindings
/// define it: the query parameters they list (any other is refused), `page_size` 1 to 1000, an
/// opaque `cursor` of the server's own, `result_count`, and `PolicyResourceReference`s
/// (`target_type`, `target_id`, `target_display_name`, `is_valid`, `path`). It is exact (no
/// index between it and the tags). Here pages hold at most 2, so that the cursor is exercised;
/// the cursor is not an offset, so a client that computes one is refused.
fn effective_resources(s: &State, req: &Request) -> Response {
    let allowed = [
        "cursor",
        "enforcement_point_path",
        "filter_text",
        "include_mark_for_delete_objects",
        "included_fields",
        "page_size",
        "scope",
        "sort_ascending",
        "sort_by",
        "tag",
    ];
    let (start, page_size) = match page_asked(req, &allowed, "er:") {
        Ok(page) => page,
        Err(refused) => return refused,
    };
    let scope = req.query_value("scope");
    let tag = req.query_value("tag");
    let matching: Vec<&FakeVm> = s
        .vms
        .iter()
        .filter(|v| {
            v.tags.iter().any(|(sc, t)| {
                scope.as_ref().is_none_or(|want| sc == want)
                    && tag
                        .as_ref()
                        .is_none_or(|want| t.as_deref() == Some(want.as_str()))
            })
        })
        .collect();
    let end = (start + page_size.min(2)).min(matching.len());
    let results: Vec<Value> = matching[start.min(end)..end]
        .iter()
        .map(|v| {
            json!({"target_type": "VirtualMachine", "target_id": v.external_id,
                   "target_display_name": v.display_name, "is_valid": true,
                   "path": format!("/infra/realized-state/enforcement-points/default/virtual-machines/{}", v.external_id)})
        })
        .collect();
    let mut body = json!({"results": results, "result_count": matching.len()});
    if end < matching.len() {
        body["cursor"] = json!(format!("er:{end}"));
    }
    Response::json(200, body.to_string())
}

/// The cursor of the page after one that ends at `end` of `len`: the offset, or on the last
/// page a null cursor, as real managers may send (VMware's client stops at the `0000` prefix;
/// following it is refused here).
fn next_cursor(end: usize, len: usize) -> String {
    match end < len {
        true => format!("{end:04}"),
        false => "0000ffffffffffff".into(),
    }
}

/// A Lucene term as the search API reads it: `\x` is `x`.
fn unescape(term: &str) -> String {
    let mut out = String::new();
    let mut chars = term.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    out
}

fn list(s: &State, req: &Request) -> Response {
    for (key, _) in req.query() {
        if !["display_name", "external_id", "cursor", "page_size"].contains(&key.as_str()) {
            return error(400, 400, &format!("Unknown query parameter {key}"));
        }
    }
    let page_size: usize = match req.query_value("page_size").map(|v| v.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return error(400, 400, "page_size must be between 1 and 1000"),
    };
    let matching: Vec<&FakeVm> = s
        .vms
        .iter()
        .filter(|v| {
            req.query_value("display_name")
                .is_none_or(|n| v.display_name == n)
        })
        .filter(|v| {
            req.query_value("external_id")
                .is_none_or(|n| v.external_id == n)
        })
        .collect();
    let start: Result<usize, _> = req
        .query_value("cursor")
        .map(|c| c.parse())
        .unwrap_or(Ok(0));
    let Ok(start) = start else {
        return error(400, 400, "Invalid cursor");
    };
    // Pages of at most 2 here, whatever was asked, so that the cursor is exercised.
    let end = (start + page_size.min(2)).min(matching.len());
    let results: Vec<Value> = matching[start.min(end)..end]
        .iter()
        .map(|v| vm_json(v))
        .collect();
    let mut body = json!({"results": results, "sort_ascending": true});
    if start == 0 {
        body["result_count"] = json!(matching.len());
    }
    body["cursor"] = json!(next_cursor(end, matching.len()));
    Response::json(200, body.to_string())
}

fn change(s: &mut State, req: &Request) -> Response {
    let action = req.query_value("action").unwrap_or_default();
    if !["add_tags", "remove_tags", "update_tags"].contains(&action.as_str()) {
        return error(400, 220, &format!("Invalid action '{action}'"));
    }
    if s.bad_requests > 0 {
        s.bad_requests -= 1;
        return error(400, 400, "The request is invalid");
    }
    if s.old_manager && action != "update_tags" {
        return error(400, 220, &format!("Invalid action '{action}'"));
    }
    if req.media_type() != "application/json" {
        return error(415, 415, "Unsupported media type");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, 400, "Malformed request body");
    };
    let external_id = body["external_id"].as_str().unwrap_or_default().to_string();
    let Some(tags) = body["tags"].as_array() else {
        return error(400, 400, "tags is required");
    };
    let tags: Vec<(String, Option<String>)> = tags
        .iter()
        .map(|t| {
            (
                t["scope"].as_str().unwrap_or("").to_string(),
                t["tag"].as_str().map(str::to_string),
            )
        })
        .collect();
    let Some(vm) = s.vms.iter_mut().find(|v| v.external_id == external_id) else {
        return error(404, 600, &format!("VirtualMachine {external_id} not found"));
    };
    if s.aborted > 0 {
        s.aborted -= 1;
        return error(
            500,
            607,
            "The operation failed because the transaction was aborted. Please retry.",
        )
        .with_header("Retry-After", "0");
    }
    // NSX's limits: 25 user tags a VM, scope ≤ 128 and tag ≤ 256 characters.
    if tags.iter().any(|(scope, tag)| {
        scope.chars().count() > 128 || tag.as_ref().is_some_and(|t| t.chars().count() > 256)
    }) {
        return error(400, 400, "Tag scope or value is too long");
    }
    let would_have = match action.as_str() {
        "add_tags" => vm.tags.len() + tags.iter().filter(|t| !vm.tags.contains(t)).count(),
        "remove_tags" => vm.tags.len(),
        _ => tags.len(),
    };
    if would_have > MAX_TAGS {
        return error(
            400,
            400,
            &format!("Number of tags on the object exceeds the maximum of {MAX_TAGS}"),
        );
    }
    snapshot_groups(s);
    let vm = (s.vms.iter_mut())
        .find(|v| v.external_id == external_id)
        .expect("the VM found above");
    match action.as_str() {
        "add_tags" => {
            for tag in tags {
                if !vm.tags.contains(&tag) {
                    vm.tags.push(tag);
                }
            }
        }
        "remove_tags" => vm.tags.retain(|t| !tags.contains(t)),
        _ => vm.tags = tags,
    }
    Response::empty(204)
}

/// The realized-state VM list: sorted when asked (`sort_by=external_id` or `display_name`),
/// else in an order that changes from one request to the next; `cursor` is an offset; once the
/// inventory passes 1000 VMs neither `cursor` nor `result_count` is given, as on NSX 3.x/4.x.
fn realized(s: &mut State, req: &Request) -> Response {
    for (key, _) in req.query() {
        if ![
            "cursor",
            "page_size",
            "sort_by",
            "sort_ascending",
            "include_mark_for_delete_objects",
            "enforcement_point_path",
        ]
        .contains(&key.as_str())
        {
            return error(400, 400, &format!("Unknown query parameter {key}"));
        }
    }
    let page_size: usize = match req.query_value("page_size").map(|v| v.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return error(400, 400, "page_size must be between 1 and 1000"),
    };
    let Ok(start) = req
        .query_value("cursor")
        .unwrap_or_default()
        .parse::<usize>()
        .or_else(|e| {
            if req.query_value("cursor").is_none() {
                Ok(0)
            } else {
                Err(e)
            }
        })
    else {
        return error(400, 400, "Invalid cursor");
    };
    let mut vms: Vec<&FakeVm> = s.vms.iter().collect();
    match req.query_value("sort_by").as_deref() {
        Some("external_id") => vms.sort_by(|a, b| a.external_id.cmp(&b.external_id)),
        Some("display_name") => vms.sort_by(|a, b| a.display_name.cmp(&b.display_name)),
        Some(other) => return error(400, 400, &format!("Invalid sort_by {other}")),
        None => {
            s.realized_reads += 1;
            let n = vms.len().max(1);
            vms.rotate_left(s.realized_reads * 7 % n);
        }
    }
    if req.query_value("sort_ascending").as_deref() == Some("false") {
        vms.reverse();
    }
    // At most 500 a page, whatever was asked: VMware's bindings say the server may return
    // fewer than page_size; its cursor (zero-padded here) is what a client must send back.
    let end = (start + page_size.min(500)).min(vms.len());
    let results: Vec<Value> = vms[start.min(end)..end]
        .iter()
        .map(|v| vm_json(v))
        .collect();
    let mut body = json!({"results": results});
    if vms.len() <= 1000 {
        body["result_count"] = json!(vms.len());
        if end < vms.len() {
            body["cursor"] = json!(format!("{end:04}"));
        }
    }
    Response::json(200, body.to_string())
}

/// A tag bulk operation: the body checked as strictly as NSX's schema (known fields, a tag
/// within NSX's limits, `VirtualMachine` resources named by external id), a fresh id, each VM's
/// outcome kept for the status.
fn tag_operation_put(s: &mut State, req: &Request, id: &str) -> Response {
    if req.media_type() != "application/json" {
        return error(415, 415, "Unsupported media type");
    }
    if id.is_empty() || id.contains('/') {
        return error(400, 400, "Invalid operation id");
    }
    if s.operations.contains_key(id) {
        return error(
            400,
            500091,
            &format!("TagBulkOperation {id} already exists"),
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, 400, "Malformed request body");
    };
    let Some(fields) = body.as_object() else {
        return error(400, 400, "Malformed request body");
    };
    if let Some(unknown) = fields.keys().find(|k| {
        ![
            "tag",
            "apply_to",
            "remove_from",
            "resource_type",
            "display_name",
        ]
        .contains(&k.as_str())
    }) {
        return error(400, 400, &format!("Field {unknown} is not allowed"));
    }
    let scope = body["tag"]["scope"].as_str().unwrap_or("").to_string();
    let Some(value) = body["tag"]["tag"].as_str().map(str::to_string) else {
        return error(400, 400, "Field tag.tag is required");
    };
    if scope.chars().count() > 128 || value.chars().count() > 256 {
        return error(400, 400, "Tag scope or value is too long");
    }
    let tag = (scope, Some(value));
    let mut wanted = Vec::new();
    for list in ["apply_to", "remove_from"] {
        for info in body[list].as_array().into_iter().flatten() {
            let kind = info["resource_type"].as_str().unwrap_or("");
            if kind != "VirtualMachine" {
                return error(400, 400, &format!("Unsupported resource_type {kind:?}"));
            }
            let Some(ids) = info["resource_ids"]
                .as_array()
                .filter(|ids| !ids.is_empty())
            else {
                return error(400, 400, "Field resource_ids is required");
            };
            for rid in ids {
                wanted.push((list.to_string(), rid.as_str().unwrap_or("").to_string()));
            }
        }
    }
    if wanted.is_empty() {
        return error(400, 400, "One of apply_to or remove_from is required");
    }
    let fail = s.failing_operations > 0;
    s.failing_operations = s.failing_operations.saturating_sub(1);
    let unapplied = s.unapplied_operations > 0;
    s.unapplied_operations = s.unapplied_operations.saturating_sub(1);
    snapshot_groups(s);
    let mut outcomes = Vec::new();
    for (list, rid) in wanted {
        let outcome = match s.vms.iter_mut().find(|v| v.external_id == rid) {
            None => ("Error", format!("Can not find VM with the ID {rid}")),
            Some(_) if fail => ("Error", "Internal error while applying the tag".to_string()),
            Some(vm) => {
                let adding = list == "apply_to";
                if adding && !vm.tags.contains(&tag) && vm.tags.len() >= MAX_TAGS {
                    (
                        "Error",
                        format!("Number of tags on the object exceeds the maximum of {MAX_TAGS}"),
                    )
                } else {
                    if !unapplied {
                        if adding && !vm.tags.contains(&tag) {
                            vm.tags.push(tag.clone());
                        } else if !adding {
                            vm.tags.retain(|t| *t != tag);
                        }
                    }
                    ("Success", String::new())
                }
            }
        };
        let name = s
            .vms
            .iter()
            .find(|v| v.external_id == rid)
            .map(|v| v.display_name.clone())
            .unwrap_or_default();
        outcomes.push((
            list,
            "VirtualMachine".to_string(),
            rid,
            name,
            outcome.0,
            outcome.1,
        ));
    }
    let mut echo = body.clone();
    echo["id"] = json!(id);
    echo["path"] = json!(format!("/infra/tags/tag-operations/{id}"));
    echo["resource_type"] = json!("TagBulkOperation");
    s.operations.insert(
        id.to_string(),
        Operation {
            body: echo.clone(),
            running: s.running_polls,
            outcomes,
        },
    );
    Response::json(200, echo.to_string())
}

fn tag_operation_status(s: &mut State, id: &str) -> Response {
    let Some(op) = s.operations.get_mut(id) else {
        return error(404, 500090, &format!("TagBulkOperation {id} not found"));
    };
    let mut body = json!({
        "path": format!("/infra/tags/tag-operations/{id}"),
        "tag": op.body["tag"],
    });
    if op.running > 0 {
        op.running -= 1;
        body["status"] = json!("Running");
        return Response::json(200, body.to_string());
    }
    let failed = op.outcomes.iter().any(|o| o.4 == "Error");
    body["status"] = json!(if failed { "Error" } else { "Success" });
    for list in ["apply_to", "remove_from"] {
        let statuses: Vec<Value> = op
            .outcomes
            .iter()
            .filter(|o| o.0 == list)
            .map(|(_, _, rid, name, status, details)| {
                let mut r = json!({"resource_id": rid, "resource_display_name": name, "tag_status": status});
                if !details.is_empty() {
                    r["details"] = json!(details);
                }
                r
            })
            .collect();
        if !statuses.is_empty() {
            body[list] =
                json!([{"resource_type": "VirtualMachine", "resource_tag_status": statuses}]);
        }
    }
    Response::json(200, body.to_string())
}

/// Before a tag change: the groups keep showing their members as they are for a while.
fn snapshot_groups(s: &mut State) {
    if s.membership_lag == 0 {
        return;
    }
    if s.lag_left == 0 {
        let keys: Vec<(String, String)> = s.groups.keys().cloned().collect();
        for key in keys {
            let now = members_now(s, &key);
            s.realized_members.insert(key, now);
        }
    }
    s.lag_left = s.membership_lag;
}

/// The VMs a group's conditions take now: `Tag EQUALS scope|tag` on `VirtualMachine`.
fn members_now(s: &State, key: &(String, String)) -> Vec<FakeVm> {
    let Some(expression) = s.groups.get(key) else {
        return Vec::new();
    };
    let wanted: Vec<(String, Option<String>)> = expression
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["resource_type"] == "Condition"
                && e["key"] == "Tag"
                && e["member_type"] == "VirtualMachine"
                && e["operator"] == "EQUALS"
        })
        .filter_map(|e| e["value"].as_str())
        .filter_map(|v| v.split_once('|'))
        .map(|(scope, tag)| (scope.to_string(), Some(tag.to_string())))
        .collect();
    s.vms
        .iter()
        .filter(|vm| vm.tags.iter().any(|t| wanted.contains(t)))
        .cloned()
        .collect()
}

/// A Policy group (`GET .../domains/{d}/groups/{g}`) and its effective VM members
/// (`.../members/virtual-machines`, realized VMs named by an id of their own, with the
/// external id among their compute ids).
fn group(s: &mut State, req: &Request, rest: &str) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    if let [domain, "groups"] = parts.as_slice() {
        return group_list(s, req, domain);
    }
    let (key, members) = match parts.as_slice() {
        [domain, "groups", id] => ((domain.to_string(), id.to_string()), false),
        [domain, "groups", id, "members", "virtual-machines"] => {
            ((domain.to_string(), id.to_string()), true)
        }
        _ => return error(404, 404, "The requested URI could not be found."),
    };
    let Some(expression) = s.groups.get(&key).cloned() else {
        return error(
            404,
            500012,
            &format!("Invalid path /infra/domains/{}/groups/{}", key.0, key.1),
        );
    };
    if !members {
        let mut body = json!({"resource_type": "Group", "id": key.1, "display_name": key.1,
               "path": format!("/infra/domains/{}/groups/{}", key.0, key.1),
               "expression": expression});
        if let Some(tags) = s.group_tags.get(&key) {
            body["tags"] = tags.clone();
        }
        return Response::json(200, body.to_string());
    }
    let shown = match s.realized_members.get(&key) {
        Some(old) if s.lag_left > 0 => {
            s.lag_left = s.lag_left.saturating_sub(1);
            old.clone()
        }
        _ => members_now(s, &key),
    };
    let results: Vec<Value> = shown
        .iter()
        .map(|vm| {
            let mut compute = vm.compute_ids.clone();
            compute.push(format!("externalId:{}", vm.external_id));
            json!({"resource_type": "RealizedVirtualMachine", "id": format!("realized-{}", vm.display_name),
                   "display_name": vm.display_name, "compute_ids": compute, "power_state": "VM_RUNNING"})
        })
        .collect();
    Response::json(
        200,
        json!({"results": results, "result_count": results.len()}).to_string(),
    )
}

/// The page a list request asks for, as NSX checks it: no query parameter but `allowed`,
/// `page_size` 1 to 1000 (1000 when not given), and the offset its `cursor` names (`prefix`
/// and the offset: the cursors this manager hands out). NSX's 400 otherwise. Returns
/// `(offset, page_size)`.
fn page_asked(req: &Request, allowed: &[&str], prefix: &str) -> Result<(usize, usize), Response> {
    for (key, _) in req.query() {
        if !allowed.contains(&key.as_str()) {
            return Err(error(400, 400, &format!("Unknown query parameter {key}")));
        }
    }
    let page_size: usize = match req.query_value("page_size").map(|v| v.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return Err(error(400, 400, "page_size must be between 1 and 1000")),
    };
    let start: usize = match req.query_value("cursor") {
        None => 0,
        Some(c) => match c.strip_prefix(prefix).and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return Err(error(400, 400, "Invalid cursor")),
        },
    };
    Ok((start, page_size))
}

/// A domain's groups, a page at a time (`cursor`, `page_size` at most 1000), each with its
/// tags, as NSX lists them.
fn group_list(s: &State, req: &Request, domain: &str) -> Response {
    let (start, page_size) = match page_asked(req, &["cursor", "page_size"], "g") {
        Ok(page) => page,
        Err(refused) => return refused,
    };
    let all: Vec<Value> = s
        .groups
        .iter()
        .filter(|((d, _), _)| d == domain)
        .map(|((d, id), expression)| {
            let mut g = json!({"resource_type": "Group", "id": id, "display_name": id,
                               "path": format!("/infra/domains/{d}/groups/{id}"),
                               "expression": expression});
            if let Some(tags) = s.group_tags.get(&(d.clone(), id.clone())) {
                g["tags"] = tags.clone();
            }
            g
        })
        .collect();
    let end = (start + page_size).min(all.len());
    let mut body = json!({"results": all[start.min(end)..end], "result_count": all.len()});
    if end < all.len() {
        body["cursor"] = json!(format!("g{end}"));
    }
    Response::json(200, body.to_string())
}

/// Policy service paths this manager knows.
const SERVICES: [&str; 4] = [
    "/infra/services/SSH",
    "/infra/services/RDP",
    "/infra/services/HTTPS",
    "/infra/services/ICMP-ALL",
];

/// `PATCH` (make or change) and `DELETE` of a group, as otnsx makes one per VM: an
/// `ExternalIDExpression` on VirtualMachine external ids.
fn group_write(s: &mut State, req: &Request, rest: &str) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    let [domain, "groups", id] = parts.as_slice() else {
        return error(404, 404, "The requested URI could not be found.");
    };
    let key = (domain.to_string(), id.to_string());
    if req.method == "DELETE" {
        let path = format!("/infra/domains/{domain}/groups/{id}");
        if s.rules.values().any(|r| {
            r["destination_groups"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g == &json!(path))
        }) {
            return error(400, 500030, &format!("Group {path} is used by a rule"));
        }
        if s.pending_deletion.contains(&path) {
            return error(
                400,
                500030,
                &format!("Group {path} is used by a rule that is being deleted"),
            );
        }
        s.groups.remove(&key);
        s.group_tags.remove(&key);
        return Response::empty(200);
    }
    if req.media_type() != "application/json" {
        return error(415, 415, "Unsupported media type");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, 400, "Malformed request body");
    };
    let expression = body["expression"].clone();
    let valid = expression.as_array().is_some_and(|list| {
        list.iter().all(|e| match e["resource_type"].as_str() {
            Some("ExternalIDExpression") => {
                e["member_type"] == "VirtualMachine"
                    && e["external_ids"]
                        .as_array()
                        .is_some_and(|ids| !ids.is_empty())
            }
            Some("Condition") => true,
            _ => false,
        })
    });
    if !valid {
        return error(400, 500012, "Invalid group expression");
    }
    if let Some(tags) = body.get("tags") {
        s.group_tags.insert(key.clone(), tags.clone());
    }
    s.groups.insert(key, expression);
    Response::json(200, body.to_string())
}

/// A security policy (`GET`) and its rules (`GET` list, `GET`/`PUT`/`DELETE` one), with
/// NSX's revision check: a PUT on an existing rule must carry its current `_revision` (else
/// 412), and each write moves it on.
fn firewall(s: &mut State, req: &Request, rest: &str) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    let (domain, policy, rule) = match parts.as_slice() {
        [d, "security-policies", p] => (d.to_string(), p.to_string(), None),
        [d, "security-policies", p, "rules"] => (d.to_string(), p.to_string(), Some(None)),
        [d, "security-policies", p, "rules", r] => {
            (d.to_string(), p.to_string(), Some(Some(r.to_string())))
        }
        _ => return error(404, 404, "The requested URI could not be found."),
    };
    let Some(protected) = s
        .security_policies
        .get(&(domain.clone(), policy.clone()))
        .copied()
    else {
        return error(
            404,
            500012,
            &format!("Invalid path /infra/domains/{domain}/security-policies/{policy}"),
        );
    };
    match (req.method.as_str(), rule) {
        ("GET", None) => {
            let scope = s
                .policy_scopes
                .get(&(domain.clone(), policy.clone()))
                .cloned()
                .unwrap_or_else(|| vec!["ANY".to_string()]);
            Response::json(
                200,
                json!({"resource_type": "SecurityPolicy", "id": policy, "display_name": policy,
                       "path": format!("/infra/domains/{domain}/security-policies/{policy}"),
                       "category": "Application", "sequence_number": 10, "stateful": true,
                       "scope": scope, "rule_count": s.rules.keys().filter(|(d, p, _)| *d == domain && *p == policy).count(),
                       "_revision": 0, "_create_user": "admin",
                       "_protection": if protected { "PROTECTED" } else { "NOT_PROTECTED" }})
                .to_string(),
            )
        }
        ("GET", Some(None)) => rule_list(s, req, &domain, &policy),
        ("GET", Some(Some(id))) => match s.rules.get(&(domain, policy, id.clone())) {
            Some(rule) => Response::json(200, rule.to_string()),
            None => error(404, 500012, &format!("Rule {id} not found")),
        },
        ("DELETE", Some(Some(id))) => {
            if let Some(rule) = s.rules.remove(&(domain, policy, id))
                && s.slow_realization
            {
                for g in rule["destination_groups"].as_array().into_iter().flatten() {
                    if let Some(g) = g.as_str() {
                        s.pending_deletion.insert(g.to_string());
                    }
                }
            }
            Response::empty(200)
        }
        ("PUT", Some(Some(id))) if protected => error(
            403,
            403,
            &format!("The object {id} is protected and may not be changed"),
        ),
        ("PUT", Some(Some(id))) => rule_put(s, req, (domain, policy, id)),
        _ => error(405, 400, "Method not allowed"),
    }
}

/// A security policy's rules, a page at a time as NSX pages them (`cursor`, `page_size` at
/// most 1000), or as the test made the manager misbehave.
fn rule_list(s: &mut State, req: &Request, domain: &str, policy: &str) -> Response {
    // The cursors this manager hands out: `c` and the offset of the next page.
    let (start, page_size) = match page_asked(req, &["cursor", "page_size"], "c") {
        Ok(page) => page,
        Err(refused) => return refused,
    };
    s.rule_pages += 1;
    // Time passes: deletions are realized.
    s.pending_deletion.clear();
    let stored: Vec<Value> = s
        .rules
        .iter()
        .filter(|((d, p, _), _)| d == domain && p == policy)
        .map(|(_, r)| r.clone())
        .collect();
    match s.rule_list.clone() {
        RuleList::Body(body) => Response::json(200, body.to_vec()),
        RuleList::Endless { per_page } => {
            // Written out by hand: pages come by the hundred, and must come fast.
            let results: Vec<String> = (0..per_page.min(page_size))
                .map(|n| {
                    format!(
                        r#"{{"resource_type":"Rule","id":"site-rule-{}","action":"ALLOW","_revision":0}}"#,
                        start + n
                    )
                })
                .collect();
            let next = start + results.len().max(1);
            Response::json(
                200,
                format!(
                    r#"{{"results":[{}],"result_count":{},"cursor":"c{next}"}}"#,
                    results.join(","),
                    usize::MAX
                ),
            )
        }
        RuleList::SameCursor => Response::json(
            200,
            json!({"results": stored, "result_count": stored.len() + 1, "cursor": "c1"})
                .to_string(),
        ),
        RuleList::Stored => {
            let end = (start + page_size).min(stored.len());
            let mut body =
                json!({"results": stored[start.min(end)..end], "result_count": stored.len()});
            if end < stored.len() {
                body["cursor"] = json!(format!("c{end}"));
            }
            Response::json(200, body.to_string())
        }
    }
}

fn rule_put(s: &mut State, req: &Request, key: (String, String, String)) -> Response {
    if req.media_type() != "application/json" {
        return error(415, 415, "Unsupported media type");
    }
    let Ok(mut body) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, 400, "Malformed request body");
    };
    if let Some(refused) = invalid_rule(s, &body, &BTreeSet::new()) {
        return refused;
    }
    let current = s.rules.get(&key).and_then(|r| r["_revision"].as_i64());
    let given = body["_revision"].as_i64();
    if let Some(current) = current {
        if s.conflicts > 0 {
            // Another writer got there first.
            s.conflicts -= 1;
            let rule = s.rules.get_mut(&key).expect("rule");
            rule["_revision"] = json!(current + 1);
            return error(
                412,
                604,
                "The object was modified by somebody else. Please retry.",
            );
        }
        if given != Some(current) {
            return error(
                412,
                604,
                "The object was modified by somebody else. Please retry.",
            );
        }
    } else if given.is_some_and(|g| g != 0) {
        return error(412, 604, "The object does not exist at that revision.");
    }
    body["_revision"] = json!(current.map_or(0, |c| c + 1));
    body["id"] = json!(key.2);
    body["path"] = json!(format!(
        "/infra/domains/{}/security-policies/{}/rules/{}",
        key.0, key.1, key.2
    ));
    s.rules.insert(key, body.clone());
    Response::json(200, body.to_string())
}

/// Why NSX refuses `body` as a rule (as the API reference describes `Rule`), if it does:
/// unknown fields, 1 to 128 sources and destinations (addresses, ANY or groups that exist, or
/// are made in the same hierarchical write: `made`), Applied-To groups that exist, services
/// this manager knows, an action.
fn invalid_rule(s: &State, body: &Value, made: &BTreeSet<(String, String)>) -> Option<Response> {
    let Some(fields) = body.as_object() else {
        return Some(error(400, 400, "Malformed request body"));
    };
    let known = [
        "resource_type",
        "id",
        "display_name",
        "source_groups",
        "destination_groups",
        "services",
        "service_entries",
        "profiles",
        "action",
        "direction",
        "ip_protocol",
        "scope",
        "tags",
        "_revision",
        "disabled",
        "sources_excluded",
        "destinations_excluded",
        "sequence_number",
        "logged",
        "marked_for_delete",
        // Read-only: NSX ignores it in a request.
        "path",
    ];
    if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        return Some(error(400, 400, &format!("Field {unknown} is not allowed")));
    }
    let list = |name: &str| -> Vec<String> {
        body[name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let group_exists = |item: &str| {
        let parts: Vec<&str> = item.split('/').collect();
        matches!(parts.as_slice(), ["", "infra", "domains", d, "groups", g]
            if s.groups.contains_key(&(d.to_string(), g.to_string()))
                || made.contains(&(d.to_string(), g.to_string())))
    };
    for name in ["source_groups", "destination_groups"] {
        let items = list(name);
        if items.is_empty() || items.len() > 128 {
            return Some(error(400, 400, &format!("{name} needs 1 to 128 items")));
        }
        for item in &items {
            let ok = item == "ANY"
                || item
                    .split('/')
                    .next()
                    .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok())
                || (item.starts_with("/infra/domains/") && group_exists(item));
            if !ok {
                return Some(error(
                    400,
                    500012,
                    &format!("Invalid path or address {item} in {name}"),
                ));
            }
        }
    }
    for item in list("scope") {
        if item != "ANY" && !group_exists(&item) {
            return Some(error(400, 500012, &format!("Invalid path {item} in scope")));
        }
    }
    if body["display_name"]
        .as_str()
        .is_some_and(|n| n.chars().count() > 255)
    {
        return Some(error(
            400,
            400,
            "display_name is longer than 255 characters",
        ));
    }
    let services = list("services");
    if services.is_empty()
        || services
            .iter()
            .any(|sv| sv != "ANY" && !SERVICES.contains(&sv.as_str()))
    {
        return Some(error(
            400,
            500012,
            &format!("Invalid services {services:?}"),
        ));
    }
    if !["ALLOW", "DROP", "REJECT"].contains(&body["action"].as_str().unwrap_or("")) {
        return Some(error(400, 400, "Invalid action"));
    }
    None
}

/// The security policy fields a hierarchical write may carry (the API reference's
/// `SecurityPolicy`; the read-only ones are ignored, as NSX ignores them).
const POLICY_FIELDS: [&str; 18] = [
    "resource_type",
    "id",
    "display_name",
    "description",
    "category",
    "sequence_number",
    "stateful",
    "tcp_strict",
    "scope",
    "locked",
    "tags",
    "children",
    "comments",
    "logging_enabled",
    "scheduler_path",
    "path",
    "rule_count",
    "marked_for_delete",
];

/// The stale-object answers NSX gives a write that raced another: 409, 412 (604), 400 with
/// 500087, 404 with 500090, in turn.
fn stale_answer(n: usize) -> Response {
    let text = "The object was modified by somebody else. Please retry.";
    match n % 4 {
        0 => error(409, 409, text),
        1 => error(412, 604, text),
        2 => error(400, 500087, text),
        _ => error(404, 500090, "The object is being modified; try again."),
    }
}

/// `PATCH /policy/api/v1/infra` in hierarchical mode, as far as otnsx uses it: an `Infra`
/// whose children are `ChildResourceReference`s to domains (or `ChildDomain`s), each with
/// `ChildGroup`s and `ChildSecurityPolicy`s, the latter with `ChildRule`s. One transaction:
/// every object is checked before any is written, and a refusal writes nothing. A child's
/// object is patched: the fields given replace those stored, the others stay. A rule may name a
/// group made in the same write. `marked_for_delete` deletes.
fn hierarchy(s: &mut State, req: &Request) -> Response {
    if req.media_type() != "application/json" {
        return error(415, 415, "Unsupported media type");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, 400, "Malformed request body");
    };
    if body["resource_type"] != "Infra" {
        return error(
            400,
            255,
            "resource_type Infra is required at the top of the tree",
        );
    }
    s.hierarchy_writes += 1;
    if s.conflicts > 0 {
        s.conflicts -= 1;
        return stale_answer(s.conflicts);
    }
    // Checked first, written after.
    let mut groups: Vec<((String, String), Value, bool)> = Vec::new();
    let mut policies: Vec<((String, String), Value)> = Vec::new();
    let mut rules: Vec<((String, String, String), Value, bool)> = Vec::new();
    for child in body["children"].as_array().into_iter().flatten() {
        let domain = match child["resource_type"].as_str() {
            Some("ChildResourceReference") if child["target_type"] == "Domain" => {
                child["id"].as_str().unwrap_or_default().to_string()
            }
            Some("ChildDomain") => child["Domain"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            other => {
                return error(400, 255, &format!("Invalid child of Infra: {other:?}"));
            }
        };
        if domain.is_empty() {
            return error(400, 255, "A domain reference needs its id");
        }
        let children = match child["resource_type"].as_str() {
            Some("ChildDomain") => &child["Domain"]["children"],
            _ => &child["children"],
        };
        for item in children.as_array().into_iter().flatten() {
            let deleting = item["marked_for_delete"] == true;
            match item["resource_type"].as_str() {
                Some("ChildGroup") => {
                    let group = &item["Group"];
                    let Some(id) = group["id"].as_str() else {
                        return error(400, 255, "ChildGroup needs a Group with its id");
                    };
                    if group["resource_type"] != "Group" {
                        return error(400, 255, "Group needs resource_type Group");
                    }
                    groups.push(((domain.clone(), id.to_string()), group.clone(), deleting));
                }
                Some("ChildSecurityPolicy") => {
                    let policy = &item["SecurityPolicy"];
                    let Some(id) = policy["id"].as_str() else {
                        return error(
                            400,
                            255,
                            "ChildSecurityPolicy needs a SecurityPolicy with its id",
                        );
                    };
                    if policy["resource_type"] != "SecurityPolicy" {
                        return error(
                            400,
                            255,
                            "SecurityPolicy needs resource_type SecurityPolicy",
                        );
                    }
                    let unknown = policy.as_object().and_then(|fields| {
                        fields
                            .keys()
                            .find(|k| !k.starts_with('_') && !POLICY_FIELDS.contains(&k.as_str()))
                    });
                    if let Some(unknown) = unknown {
                        return error(
                            400,
                            255,
                            &format!("Field {unknown} is not allowed in SecurityPolicy"),
                        );
                    }
                    let key = (domain.clone(), id.to_string());
                    if s.security_policies.get(&key) == Some(&true) {
                        return error(
                            403,
                            403,
                            &format!("The object {id} is protected and may not be changed"),
                        );
                    }
                    for rule_child in policy["children"].as_array().into_iter().flatten() {
                        if rule_child["resource_type"] != "ChildRule" {
                            return error(400, 255, "A SecurityPolicy's children are ChildRules");
                        }
                        let rule = &rule_child["Rule"];
                        let Some(rule_id) = rule["id"].as_str() else {
                            return error(400, 255, "ChildRule needs a Rule with its id");
                        };
                        rules.push((
                            (domain.clone(), id.to_string(), rule_id.to_string()),
                            rule.clone(),
                            rule_child["marked_for_delete"] == true,
                        ));
                    }
                    let mut stored = policy.clone();
                    if let Some(fields) = stored.as_object_mut() {
                        fields.remove("children");
                    }
                    policies.push((key, stored));
                }
                other => return error(400, 255, &format!("Invalid child of Domain: {other:?}")),
            }
        }
    }
    let made: BTreeSet<(String, String)> = groups
        .iter()
        .filter(|(_, _, deleting)| !deleting)
        .map(|(k, _, _)| k.clone())
        .collect();
    for (key, group, deleting) in &groups {
        if *deleting {
            continue;
        }
        let valid = group["expression"].as_array().is_some_and(|list| {
            list.iter().all(|e| {
                e["resource_type"] == "ExternalIDExpression"
                    && e["member_type"] == "VirtualMachine"
                    && e["external_ids"]
                        .as_array()
                        .is_some_and(|ids| !ids.is_empty())
            })
        });
        if !valid {
            return error(
                400,
                500012,
                &format!("Invalid group expression in {}", key.1),
            );
        }
    }
    for (key, rule, deleting) in &rules {
        if *deleting {
            continue;
        }
        // Patched: what is stored, with the fields given.
        let mut merged = s.rules.get(key).cloned().unwrap_or_else(|| json!({}));
        if let (Some(into), Some(from)) = (merged.as_object_mut(), rule.as_object()) {
            for (k, v) in from {
                into.insert(k.clone(), v.clone());
            }
        }
        if let Some(given) = rule["_revision"].as_i64()
            && s.rules.get(key).and_then(|r| r["_revision"].as_i64()) != Some(given)
        {
            return error(
                412,
                604,
                "The object was modified by somebody else. Please retry.",
            );
        }
        if let Some(refused) = invalid_rule(s, &merged, &made) {
            return refused;
        }
    }
    // Written.
    for (key, group, deleting) in groups {
        if deleting {
            s.groups.remove(&key);
            s.group_tags.remove(&key);
            continue;
        }
        if let Some(tags) = group.get("tags") {
            s.group_tags.insert(key.clone(), tags.clone());
        }
        s.groups.insert(key, group["expression"].clone());
    }
    for (key, policy) in policies {
        s.security_policies.entry(key.clone()).or_insert(false);
        let scope: Vec<String> = policy["scope"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_string))
            .filter(|g| g != "ANY")
            .collect();
        match scope.is_empty() {
            true => s.policy_scopes.remove(&key),
            false => s.policy_scopes.insert(key, scope),
        };
    }
    for (key, rule, deleting) in rules {
        if deleting {
            s.rules.remove(&key);
            continue;
        }
        let current = s.rules.get(&key).and_then(|r| r["_revision"].as_i64());
        let mut merged = s.rules.get(&key).cloned().unwrap_or_else(|| json!({}));
        if let (Some(into), Some(from)) = (merged.as_object_mut(), rule.as_object()) {
            for (k, v) in from {
                into.insert(k.clone(), v.clone());
            }
        }
        merged["_revision"] = json!(current.map_or(0, |c| c + 1));
        merged["path"] = json!(format!(
            "/infra/domains/{}/security-policies/{}/rules/{}",
            key.0, key.1, key.2
        ));
        s.rules.insert(key, merged);
    }
    Response::empty(200)
}

/// The realized state of a rule: REALIZED (or ERROR when told so) while it exists, none once
/// it is gone.
fn realized_entities(s: &State, req: &Request) -> Response {
    let intent = req.query_value("intent_path").unwrap_or_default();
    let parts: Vec<&str> = intent.split('/').collect();
    let exists = match parts.as_slice() {
        [
            "",
            "infra",
            "domains",
            d,
            "security-policies",
            p,
            "rules",
            r,
        ] => s
            .rules
            .contains_key(&(d.to_string(), p.to_string(), r.to_string())),
        _ => return error(400, 500012, &format!("Invalid intent path {intent}")),
    };
    let results: Vec<Value> = match exists {
        true => vec![
            json!({"resource_type": "GenericPolicyRealizedResource", "intent_paths": [intent],
                            "state": if s.realize_errors { "ERROR" } else { "REALIZED" },
                            "entity_type": "RealizedFirewallRule"}),
        ],
        false => Vec::new(),
    };
    Response::json(
        200,
        json!({"results": results, "result_count": results.len()}).to_string(),
    )
}

/// A VM's virtual interfaces (`?owner_vm_id=`), one with the addresses set for the VM.
fn vifs(s: &State, req: &Request) -> Response {
    for (key, _) in req.query() {
        if !["owner_vm_id", "cursor", "page_size"].contains(&key.as_str()) {
            return error(400, 400, &format!("Unknown query parameter {key}"));
        }
    }
    let owner = req.query_value("owner_vm_id").unwrap_or_default();
    let results: Vec<Value> = s
        .vms
        .iter()
        .filter(|v| v.external_id == owner)
        .map(|v| {
            let ips = s.vm_ips.get(&v.external_id).cloned().unwrap_or_default();
            let mut vif = json!({"resource_type": "VirtualNetworkInterface", "owner_vm_id": v.external_id,
                                 "mac_address": "00:50:56:00:00:01", "device_key": "4000"});
            if !ips.is_empty() {
                vif["ip_address_info"] = json!([{"source": "VM_TOOLS", "ip_addresses": ips}]);
            }
            vif
        })
        .collect();
    Response::json(
        200,
        json!({"results": results, "result_count": results.len()}).to_string(),
    )
}
