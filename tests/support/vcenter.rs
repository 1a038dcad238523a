//! A fake vCenter answering the vSphere Automation REST calls otnsx uses, in the shapes of
//! `../shared/reference/vcenter.md` and the real 6.5 recordings in
//! `../shared/fixtures/vcenter65-real/`: `/api` (7.0U2+, which also serves `/rest`) or `/rest`
//! only (6.5). Strict about basic auth, session headers, methods and query keys; keeps count of
//! the sessions it has open.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::server::{Request, Response, Server, basic_auth};

pub const USER: &str = "otnsx@vsphere.local";
pub const PASSWORD: &str = "vcenter-secret-pw";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 7.0U2 and later: `/api` and `/rest`.
    Modern,
    /// 6.5 / 6.7: `/rest` only; `/api/...` is 404.
    Rest65,
}

#[derive(Debug, Clone)]
pub struct FakeVm {
    pub id: String,
    pub name: String,
    pub folder: String,
    pub datacenter: String,
}

struct State {
    generation: Generation,
    sessions: BTreeSet<String>,
    created: usize,
    vms: Vec<FakeVm>,
    /// Forget every session before the next VM list (a session that expired mid-run).
    expire_sessions: bool,
    /// Answer the login as text/plain, as VMware's simulator does: the session is made all
    /// the same.
    login_as_text: bool,
}

pub struct FakeVcenter {
    pub server: Server,
    state: Arc<Mutex<State>>,
}

impl FakeVcenter {
    pub fn start(generation: Generation) -> Self {
        let state = Arc::new(Mutex::new(State {
            generation,
            sessions: BTreeSet::new(),
            created: 0,
            vms: Vec::new(),
            expire_sessions: false,
            login_as_text: false,
        }));
        let shared = Arc::clone(&state);
        let server = Server::start(move |req| route(&shared, req));
        FakeVcenter { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn add_vm(&self, id: &str, name: &str, folder: &str) {
        self.state.lock().expect("state").vms.push(FakeVm {
            id: id.into(),
            name: name.into(),
            folder: folder.into(),
            datacenter: "datacenter-2".into(),
        });
    }

    /// Sessions logged in and not logged out.
    pub fn open_sessions(&self) -> usize {
        self.state.lock().expect("state").sessions.len()
    }

    /// Sessions created so far.
    pub fn sessions_created(&self) -> usize {
        self.state.lock().expect("state").created
    }

    pub fn login_as_text(&self, on: bool) {
        self.state.lock().expect("state").login_as_text = on;
    }

    /// The tokens of the sessions made so far that are still open.
    pub fn open_tokens(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("state")
            .sessions
            .iter()
            .cloned()
            .collect()
    }

    pub fn expire_sessions_before_next_list(&self) {
        self.state.lock().expect("state").expire_sessions = true;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }
}

fn route(state: &Mutex<State>, req: &Request) -> Response {
    let mut s = state.lock().expect("state");
    let path = req.path.as_str();
    if path.starts_with("/api/") && s.generation == Generation::Rest65 {
        return Response::empty(404);
    }
    let rest = path.starts_with("/rest/");
    match (req.method.as_str(), path) {
        ("POST", "/api/session") | ("POST", "/rest/com/vmware/cis/session") => {
            login(&mut s, req, rest)
        }
        ("DELETE", "/api/session") | ("DELETE", "/rest/com/vmware/cis/session") => {
            match session(&s, req) {
                Some(token) => {
                    s.sessions.remove(&token);
                    if rest {
                        Response::empty(200)
                    } else {
                        Response::empty(204)
                    }
                }
                None => unauthenticated(rest),
            }
        }
        ("GET", "/api/vcenter/vm") | ("GET", "/rest/vcenter/vm") => {
            if s.expire_sessions {
                s.sessions.clear();
                s.expire_sessions = false;
            }
            if session(&s, req).is_none() {
                return unauthenticated(rest);
            }
            list_vms(&s, req, rest)
        }
        ("GET", p) if p.starts_with("/api/vcenter/vm/") || p.starts_with("/rest/vcenter/vm/") => {
            if session(&s, req).is_none() {
                return unauthenticated(rest);
            }
            let id = p.rsplit('/').next().unwrap_or("");
            vm_details(&s, id, rest)
        }
        (
            _,
            "/api/session"
            | "/rest/com/vmware/cis/session"
            | "/api/vcenter/vm"
            | "/rest/vcenter/vm",
        ) => Response::empty(405),
        _ => Response::empty(404),
    }
}

fn login(s: &mut State, req: &Request, rest: bool) -> Response {
    if basic_auth(req) != Some((USER.to_string(), PASSWORD.to_string())) {
        return unauthenticated(rest);
    }
    s.created += 1;
    let token = format!("{:032x}", 0x845f_1bf9_052f_35b7_u64 + s.created as u64);
    s.sessions.insert(token.clone());
    if rest {
        // As recorded: 200, {"value": token}, and a cookie otnsx must not rely on.
        Response::json(200, json!({"value": token}).to_string()).with_header(
            "Set-Cookie",
            &format!("vmware-api-session-id={token};Path=/rest;Secure;HttpOnly"),
        )
    } else if s.login_as_text {
        Response::new(201, "text/plain", Value::String(token).to_string())
    } else {
        Response::json(201, Value::String(token).to_string())
    }
}

fn session(s: &State, req: &Request) -> Option<String> {
    let token = req.header("vmware-api-session-id")?;
    s.sessions.contains(token).then(|| token.to_string())
}

fn unauthenticated(rest: bool) -> Response {
    let messages = json!([{"args": [], "default_message": "Authentication required.", "id": "com.vmware.vapi.endpoint.method.authentication.required"}]);
    let body = if rest {
        json!({"type": "com.vmware.vapi.std.errors.unauthenticated", "value": {"messages": messages, "error_type": "UNAUTHENTICATED"}})
    } else {
        json!({"error_type": "UNAUTHENTICATED", "messages": messages})
    };
    Response::json(401, body.to_string())
}

fn invalid_argument(rest: bool, what: &str) -> Response {
    let messages =
        json!([{"args": [], "default_message": what, "id": "vapi.bindings.typeconverter.invalid"}]);
    let body = if rest {
        json!({"type": "com.vmware.vapi.std.errors.invalid_argument", "value": {"messages": messages, "error_type": "INVALID_ARGUMENT"}})
    } else {
        json!({"error_type": "INVALID_ARGUMENT", "messages": messages})
    };
    Response::json(400, body.to_string())
}

/// `GET .../vcenter/vm/{vm}`: `identity` only from 6.7U1 on, so not on the 6.5 fake.
fn vm_details(s: &State, id: &str, rest: bool) -> Response {
    let Some(vm) = s.vms.iter().find(|v| v.id == id) else {
        let messages = json!([{"args": [id], "default_message": format!("Virtual machine with identifier '{id}' does not exist."), "id": "com.vmware.api.vcenter.vm.not_found"}]);
        let body = if rest {
            json!({"type": "com.vmware.vapi.std.errors.not_found", "value": {"messages": messages, "error_type": "NOT_FOUND"}})
        } else {
            json!({"error_type": "NOT_FOUND", "messages": messages})
        };
        return Response::json(404, body.to_string());
    };
    let (instance, bios) = super::uuids(&vm.id);
    let mut info = json!({"name": vm.name, "power_state": "POWERED_ON", "guest_OS": "OTHER_LINUX_64",
                          "cpu": {"count": 2}, "memory": {"size_MiB": 4096}});
    if s.generation == Generation::Modern {
        info["identity"] = json!({"name": vm.name, "instance_uuid": instance, "bios_uuid": bios});
    }
    if rest {
        Response::json(200, json!({"value": info}).to_string())
    } else {
        Response::json(200, info.to_string())
    }
}

fn list_vms(s: &State, req: &Request, rest: bool) -> Response {
    let prefix = if rest { "filter." } else { "" };
    let query = req.query();
    for (key, _) in &query {
        let known = ["names", "folders", "datacenters"].map(|k| format!("{prefix}{k}"));
        if !known.contains(key) {
            return invalid_argument(rest, &format!("Unexpected query parameter {key}"));
        }
    }
    let wanted = |key: &str| -> Vec<String> { req.query_all(&format!("{prefix}{key}")) };
    let (names, folders, dcs) = (wanted("names"), wanted("folders"), wanted("datacenters"));
    let list: Vec<Value> = s
        .vms
        .iter()
        .filter(|vm| names.is_empty() || names.contains(&vm.name))
        .filter(|vm| folders.is_empty() || folders.contains(&vm.folder))
        .filter(|vm| dcs.is_empty() || dcs.contains(&vm.datacenter))
        .map(|vm| {
            // The recorded entry shape; the memory key is spelt as 6.5 spelt it.
            json!({"memory_size_MiB": 4096, "vm": vm.id, "name": vm.name, "power_state": "POWERED_ON", "cpu_count": 2})
        })
        .collect();
    if rest {
        Response::json(200, json!({"value": list}).to_string())
    } else {
        Response::json(200, Value::Array(list).to_string())
    }
}
