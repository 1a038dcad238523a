//! A fake NSX-V manager for the security-tag calls in `../shared/reference/nsx.md`: XML
//! answers, basic auth on every call, `<error>` bodies, paging of the tag list. It keeps which
//! VMs carry which tag, and can be told to fail or to lie.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::server::{Request, Response, Server, basic_auth};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "nsx-secret-pw";
const TAGS: &str = "/api/2.0/services/securitytags/tag";
const GROUPS: &str = "/api/2.0/services/securitygroup/";

#[derive(Default)]
struct State {
    /// (objectId, name, systemResource)
    tags: Vec<(String, String, bool)>,
    attached: BTreeMap<String, BTreeSet<String>>,
    /// VMs this manager knows (attach refuses others).
    vms: BTreeMap<String, String>,
    /// Answer attach and detach with this status and an `<error>`.
    fail_changes: Option<u16>,
    /// Answer attach with 200 but attach nothing.
    lie_on_attach: bool,
    /// Answer the next N changes with error 101 (concurrent access).
    concurrent_errors: usize,
    /// Answer the next requests, whatever they are, with these statuses, in order.
    fail_next: Vec<u16>,
    /// Security groups: id → (criteria, value) of one `VM.SECURITY_TAG` dynamic criterion.
    groups: BTreeMap<String, (String, String)>,
    /// Member reads after each tag change that still show the membership before it.
    membership_lag: usize,
    lag_left: usize,
    /// The members as last realized, by group.
    realized: BTreeMap<String, BTreeSet<String>>,
}

pub struct FakeNsxV {
    pub server: Server,
    state: Arc<Mutex<State>>,
}

impl FakeNsxV {
    pub fn start() -> Self {
        FakeNsxV::start_with(None)
    }

    /// The same manager behind HTTPS.
    pub fn start_tls(tls: std::sync::Arc<rustls::ServerConfig>) -> Self {
        FakeNsxV::start_with(Some(tls))
    }

    fn start_with(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        {
            let mut s = state.lock().expect("state");
            // A system tag first, and enough others that the list takes more than one page.
            s.tags
                .push(("securitytag-1".into(), "AntiVirus.virusFound".into(), true));
            for n in 2..12 {
                s.tags
                    .push((format!("securitytag-{n}"), format!("other-tag-{n}"), false));
            }
            s.tags
                .push(("securitytag-12".into(), "otnsx-maintenance".into(), false));
        }
        let shared = Arc::clone(&state);
        let handler = move |req: &Request| route(&shared, req);
        let server = match tls {
            None => Server::start(handler),
            Some(tls) => Server::start_tls(handler, tls),
        };
        FakeNsxV { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn add_vm(&self, id: &str, name: &str) {
        self.state
            .lock()
            .expect("state")
            .vms
            .insert(id.into(), name.into());
    }

    /// The VMs carrying the tag named `name`.
    pub fn tagged(&self, name: &str) -> BTreeSet<String> {
        let s = self.state.lock().expect("state");
        let id = s
            .tags
            .iter()
            .find(|t| t.1 == name)
            .map(|t| t.0.clone())
            .unwrap_or_default();
        s.attached.get(&id).cloned().unwrap_or_default()
    }

    /// Puts the tag on a VM behind otnsx's back.
    pub fn attach_by_hand(&self, tag_id: &str, vm: &str) {
        let mut s = self.state.lock().expect("state");
        s.attached
            .entry(tag_id.into())
            .or_default()
            .insert(vm.into());
    }

    /// Takes the tag off a VM behind otnsx's back.
    pub fn detach_by_hand(&self, tag_id: &str, vm: &str) {
        let mut s = self.state.lock().expect("state");
        s.attached.entry(tag_id.into()).or_default().remove(vm);
    }

    pub fn fail_changes(&self, status: Option<u16>) {
        self.state.lock().expect("state").fail_changes = status;
    }

    pub fn lie_on_attach(&self, lie: bool) {
        self.state.lock().expect("state").lie_on_attach = lie;
    }

    /// The next requests, whatever they are, get these statuses (with an `<error>`), in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state.lock().expect("state").fail_next = statuses.to_vec();
    }

    pub fn concurrent_errors(&self, count: usize) {
        self.state.lock().expect("state").concurrent_errors = count;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// A security group taking VMs whose security tag's name matches (`criteria` one of
    /// `=`, `contains`, `starts_with`, `ends_with`) `value`.
    pub fn add_group(&self, id: &str, criteria: &str, value: &str) {
        self.state
            .lock()
            .expect("state")
            .groups
            .insert(id.into(), (criteria.into(), value.into()));
    }

    /// After each tag change, this many member reads still show the earlier membership
    /// (`usize::MAX`: the group never follows).
    pub fn membership_lag(&self, reads: usize) {
        let mut s = self.state.lock().expect("state");
        s.membership_lag = reads;
        s.lag_left = s.lag_left.min(reads);
    }

    /// The attach (PUT) and detach (DELETE) calls received.
    pub fn changes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PUT" || r.method == "DELETE")
            .map(|r| r.line())
            .collect()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn xml(status: u16, body: String) -> Response {
    Response::new(status, "application/xml", body)
}

fn error(status: u16, code: u32, details: &str) -> Response {
    xml(
        status,
        format!(
            "<error><details>{details}</details><errorCode>{code}</errorCode><moduleName>core-services</moduleName></error>"
        ),
    )
}

fn route(state: &Mutex<State>, req: &Request) -> Response {
    // No credentials: 401 with a challenge. A wrong password: 403 with an empty body, as NSX-V
    // answers it (PowerNSX #501, #519), the same status as a missing role.
    match basic_auth(req) {
        None => {
            return Response::empty(401).with_header("WWW-Authenticate", "Basic realm=\"NSX\"");
        }
        Some((user, password)) if user != USER || password != PASSWORD => {
            return Response::empty(403);
        }
        Some(_) => {}
    }
    let mut s = state.lock().expect("state");
    if !s.fail_next.is_empty() {
        let status = s.fail_next.remove(0);
        // Injected failures say "now", so that the retries they cause cost the suite no time.
        return error(status, 100, "Service temporarily failing").with_header("Retry-After", "0");
    }
    if let Some(rest) = req.path.strip_prefix(GROUPS) {
        return security_group(&mut s, req, rest);
    }
    let Some(rest) = req.path.strip_prefix(TAGS) else {
        return error(404, 100, "The requested URL was not found");
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", []) => list_tags(&s, req),
        ("GET", [tag, "vm"]) => match s.tags.iter().find(|t| t.0 == *tag) {
            None => error(
                404,
                202,
                &format!("The requested object : {tag} could not be found."),
            ),
            Some(_) => {
                let names = s.vms.clone();
                let body: String = s
                    .attached
                    .get(*tag)
                    .into_iter()
                    .flatten()
                    .map(|vm| {
                        let name = escape(&names.get(vm).cloned().unwrap_or_default());
                        format!("<basicinfo><objectId>{vm}</objectId><objectTypeName>VirtualMachine</objectTypeName><name>{name}</name></basicinfo>")
                    })
                    .collect();
                xml(
                    200,
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><basicinfolist>{body}</basicinfolist>"
                    ),
                )
            }
        },
        (method @ ("PUT" | "DELETE"), [tag, "vm", vm]) => {
            if !req.body.is_empty() {
                return error(400, 100, "No request body expected");
            }
            if !s.tags.iter().any(|t| t.0 == *tag) {
                return error(
                    404,
                    202,
                    &format!("The requested object : {tag} could not be found."),
                );
            }
            if !s.vms.contains_key(*vm) {
                return error(
                    400,
                    202,
                    &format!("The requested object : {vm} could not be found."),
                );
            }
            if s.concurrent_errors > 0 {
                s.concurrent_errors -= 1;
                return error(
                    500,
                    101,
                    "Concurrent object access error. Please retry the operation.",
                )
                .with_header("Retry-After", "0");
            }
            if let Some(status) = s.fail_changes {
                return error(status, 100, "Internal server error: core-services failed")
                    .with_header("Retry-After", "0");
            }
            // The groups show what they showed before the change for a while.
            if s.lag_left == 0 {
                let ids: Vec<String> = s.groups.keys().cloned().collect();
                for g in ids {
                    let now = members_now(&s, &g);
                    s.realized.insert(g, now);
                }
            }
            s.lag_left = s.membership_lag;
            if method == "PUT" {
                if !s.lie_on_attach {
                    s.attached
                        .entry(tag.to_string())
                        .or_default()
                        .insert(vm.to_string());
                }
            } else {
                s.attached.entry(tag.to_string()).or_default().remove(*vm);
            }
            Response::empty(200)
        }
        _ => error(405, 100, "Method not allowed"),
    }
}

fn list_tags(s: &State, req: &Request) -> Response {
    // Pages of at most 5 here, whatever was asked, so that paging is exercised.
    let asked: usize = req
        .query_value("pageSize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let size = asked.min(5);
    let start: usize = req
        .query_value("startIndex")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let page: String = s
        .tags
        .iter()
        .skip(start)
        .take(size)
        .map(|(id, name, system)| {
            let name = escape(name);
            let count = s.attached.get(id).map_or(0, BTreeSet::len);
            format!("<securityTag><objectId>{id}</objectId><objectTypeName>SecurityTag</objectTypeName><name>{name}</name><description/><vmCount>{count}</vmCount><systemResource>{system}</systemResource></securityTag>")
        })
        .collect();
    xml(
        200,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><securityTags><pagingInfo><pageSize>{size}</pageSize><startIndex>{start}</startIndex><totalCount>{}</totalCount><sortOrderAscending>true</sortOrderAscending></pagingInfo>{page}</securityTags>",
            s.tags.len()
        ),
    )
}

/// A security group (`GET .../securitygroup/{id}`) and its effective VM members
/// (`.../translation/virtualmachines`, `<vmnodes>`), computed from the tags' names and the
/// group's criterion, following tag changes after the configured lag.
fn security_group(s: &mut State, req: &Request, rest: &str) -> Response {
    if req.method != "GET" {
        return error(405, 100, "Method not allowed");
    }
    let (id, members) = match rest.strip_suffix("/translation/virtualmachines") {
        Some(id) => (id.to_string(), true),
        None => (rest.to_string(), false),
    };
    let Some((criteria, value)) = s.groups.get(&id).cloned() else {
        return error(
            404,
            202,
            &format!("The requested object : {id} could not be found."),
        );
    };
    if !members {
        return xml(
            200,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><securitygroup><objectId>{id}</objectId><objectTypeName>SecurityGroup</objectTypeName><name>admins-ssh</name><dynamicMemberDefinition><dynamicSet><operator>OR</operator><dynamicCriteria><operator>OR</operator><key>VM.SECURITY_TAG</key><criteria>{}</criteria><value>{}</value><isValid>true</isValid></dynamicCriteria></dynamicSet></dynamicMemberDefinition></securitygroup>",
                escape(&criteria),
                escape(&value)
            ),
        );
    }
    let shown = match s.realized.get(&id) {
        Some(old) if s.lag_left > 0 => {
            s.lag_left = s.lag_left.saturating_sub(1);
            old.clone()
        }
        _ => members_now(s, &id),
    };
    let body: String = shown
        .iter()
        .map(|vm| {
            let name = escape(&s.vms.get(vm).cloned().unwrap_or_default());
            format!("<vmnode><vmId>{vm}</vmId><vmName>{name}</vmName></vmnode>")
        })
        .collect();
    xml(
        200,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><vmnodes>{body}</vmnodes>"),
    )
}

/// The VMs the group's criterion takes now, by the tags they carry.
fn members_now(s: &State, id: &str) -> BTreeSet<String> {
    let Some((criteria, value)) = s.groups.get(id) else {
        return BTreeSet::new();
    };
    s.tags
        .iter()
        .filter(|(_, name, _)| match criteria.as_str() {
            "=" => name == value,
            "contains" => name.contains(value.as_str()),
            "starts_with" => name.starts_with(value.as_str()),
            "ends_with" => name.ends_with(value.as_str()),
            _ => false,
        })
        .flat_map(|(tag, _, _)| s.attached.get(tag).cloned().unwrap_or_default())
        .collect()
}
