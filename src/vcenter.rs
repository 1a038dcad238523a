//! vCenter, through the vSphere Automation REST API: `/api` (7.0U2+) or `/rest` (6.5+). Used
//! only to turn a VM's name into its managed object id. The session is always closed again.

use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;
use ureq::http::Method;

use crate::config::{ApiGeneration, Secret, VcenterConfig, is_moref};
use crate::deadline::Deadline;
use crate::error::{Exit, fault};
use crate::http::{Call, Http, Reply, ServiceError, basic_auth, encode, query};
use crate::sync::lock;
use std::sync::Mutex;

use crate::domain::vm::VmRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generation {
    Api,
    Rest,
}

impl Generation {
    fn session_path(self) -> &'static str {
        match self {
            Generation::Api => "/api/session",
            Generation::Rest => "/rest/com/vmware/cis/session",
        }
    }
}

/// A logged-in vCenter session.
pub struct Vcenter {
    http: Http,
    user: String,
    password: Secret,
    /// The API generation that answered, and the session's token.
    session: Mutex<(Generation, String)>,
    folder: Option<String>,
    datacenter: Option<String>,
}

/// Logs in, runs `work`, and logs out again whatever `work` returned.
pub fn with_session<T>(
    config: &VcenterConfig,
    deadline: Deadline,
    verbose: bool,
    work: impl FnOnce(&Vcenter) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let vc = Vcenter::open(config, deadline, verbose)?;
    let result = work(&vc);
    vc.close();
    result
}

impl Vcenter {
    /// A logged-in session; end it with [`Vcenter::close`].
    pub fn open(config: &VcenterConfig, deadline: Deadline, verbose: bool) -> anyhow::Result<Self> {
        let http = Http::new("vCenter", &config.endpoint, deadline, verbose)?;
        let vc = Vcenter {
            http,
            user: config.endpoint.user.clone(),
            password: config.endpoint.password.clone(),
            session: Mutex::new((Generation::Api, String::new())),
            folder: config.folder.clone(),
            datacenter: config.datacenter.clone(),
        };
        vc.login(config.api)?;
        Ok(vc)
    }

    /// Logs out; a failure is only a warning (the session times out on its own).
    pub fn close(self) {
        self.end();
    }

    /// Logs out, for a session shared by reference; a failure is only a warning.
    pub fn end(&self) {
        if let Err(e) = self.logout() {
            errln!("otnsx: warning: {e:#}");
        }
    }
}

/// The session token in a login answer: a JSON string (`/api`) or `{"value": "..."}`
/// (`/rest`), read whatever the media type says.
fn session_token(generation: Generation, body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    let token = match (generation, &value) {
        (Generation::Api, Value::String(t)) => t.clone(),
        (Generation::Rest, Value::Object(o)) => o.get("value")?.as_str()?.to_string(),
        _ => return None,
    };
    (!token.is_empty() && token.len() <= 4096).then_some(token)
}

impl Vcenter {
    fn generation(&self) -> Generation {
        lock(&self.session).0
    }

    fn token(&self) -> String {
        lock(&self.session).1.clone()
    }

    fn set_session(&self, generation: Generation, token: String) {
        *lock(&self.session) = (generation, token);
    }

    fn login(&self, api: ApiGeneration) -> anyhow::Result<()> {
        let order: &[Generation] = match api {
            ApiGeneration::Auto => &[Generation::Api, Generation::Rest],
            ApiGeneration::Api => &[Generation::Api],
            ApiGeneration::Rest => &[Generation::Rest],
        };
        for (i, generation) in order.iter().enumerate() {
            let call = Call::new(Method::POST, generation.session_path())
                .header("authorization", basic_auth(&self.user, &self.password))
                .header("accept", "application/json");
            let reply = self.http.send(&call).context("logging in to vCenter")?;
            if reply.status == 404 && i + 1 < order.len() {
                continue; // vCenter 6.5/6.7: no /api yet
            }
            if !reply.is_success() {
                let why = error_text(&reply);
                let hint = match reply.status {
                    401 => format!("; check vcenter.user ({}) and its password", self.user),
                    404 => {
                        "; set vcenter.api to \"rest\" for vCenter 6.5/6.7, or check vcenter.url"
                            .into()
                    }
                    _ => String::new(),
                };
                return Err(ServiceError::status(
                    reply.status,
                    format!(
                        "vCenter refused the login at {}{} ({why}){hint}",
                        self.http.base,
                        generation.session_path()
                    ),
                ));
            }
            // A 2xx answer made a session, whatever it looks like: its token is a secret from
            // here on, and a session otnsx cannot use is closed again before failing.
            let token = session_token(*generation, &reply.body);
            if let Some(token) = &token {
                crate::secrets::token(token);
            }
            let usable = reply.media_type() == "application/json";
            match token {
                Some(token) if usable => self.set_session(*generation, token),
                Some(token) => {
                    self.set_session(*generation, token);
                    let closed = match self.logout() {
                        Ok(()) => "the session it made was closed again".to_string(),
                        Err(e) => format!("closing the session it made failed too: {e:#}"),
                    };
                    self.set_session(*generation, String::new());
                    return Err(ServiceError::malformed(format!(
                        "vCenter answered the login with {:?} instead of JSON; {closed}",
                        reply.media_type()
                    )));
                }
                None => {
                    return Err(ServiceError::malformed(
                        "vCenter: the login answer holds no session token",
                    ));
                }
            }
            return Ok(());
        }
        Err(fault(
            Exit::Unavailable,
            "vCenter: no API generation answered",
        ))
    }

    fn logout(&self) -> anyhow::Result<()> {
        let call = Call::new(Method::DELETE, self.generation().session_path())
            .header("vmware-api-session-id", self.token());
        // Logging out must be tried even when the run's deadline has passed.
        let grace = Deadline::after(self.http.deadline().remaining().max(Duration::from_secs(2)));
        let reply = self
            .http
            .send_by(&call, grace)
            .context("logging out of vCenter")?;
        if !reply.is_success() && reply.status != 401 {
            return Err(fault(
                Exit::Unavailable,
                format!("vCenter: logging out failed ({})", error_text(&reply)),
            ));
        }
        Ok(())
    }

    /// The API generation in use, for `otnsx check`.
    pub fn api_generation(&self) -> &'static str {
        match self.generation() {
            Generation::Api => "/api (vSphere 7.0U2 or later)",
            Generation::Rest => "/rest (vSphere 6.5 or 6.7)",
        }
    }

    /// Finds the one VM named exactly `name` (within the configured folder and datacenter).
    pub fn find_vm(&self, name: &str) -> anyhow::Result<VmRef> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let (names, folders, datacenters) = match self.generation() {
            Generation::Api => ("names", "folders", "datacenters"),
            Generation::Rest => ("filter.names", "filter.folders", "filter.datacenters"),
        };
        pairs.push((names, name));
        if let Some(f) = &self.folder {
            pairs.push((folders, f));
        }
        if let Some(d) = &self.datacenter {
            pairs.push((datacenters, d));
        }
        let prefix = match self.generation() {
            Generation::Api => "/api/vcenter/vm",
            Generation::Rest => "/rest/vcenter/vm",
        };
        let path = format!("{prefix}{}", query(pairs));
        let reply = self
            .get(&path)
            .with_context(|| format!("looking up VM {name:?} in vCenter"))?;
        let body = reply.json::<Value>("vCenter")?;
        let list = match self.generation() {
            Generation::Api => &body,
            Generation::Rest => body.get("value").unwrap_or(&Value::Null),
        };
        let summaries: Vec<VmSummary> = serde_json::from_value(list.clone()).map_err(|e| {
            ServiceError::malformed(format!("vCenter: unexpected VM list for {name:?}: {e}"))
        })?;
        let matches: Vec<&VmSummary> = summaries.iter().filter(|vm| vm.name == name).collect();
        let scope = match (&self.folder, &self.datacenter) {
            (None, None) => String::new(),
            (f, d) => format!(
                " in{}{}",
                f.as_ref()
                    .map(|f| format!(" folder {f}"))
                    .unwrap_or_default(),
                d.as_ref()
                    .map(|d| format!(" datacenter {d}"))
                    .unwrap_or_default()
            ),
        };
        match matches.as_slice() {
            [] => Err(fault(
                Exit::DataErr,
                format!("vCenter has no VM named {name:?}{scope}; check the name in the ticket"),
            )),
            [vm] if is_moref(&vm.vm) => Ok(VmRef::new(vm.name.clone(), vm.vm.clone())),
            [vm] => Err(ServiceError::malformed(format!(
                "vCenter: VM {name:?} has an unusable id {:?}",
                vm.vm
            ))),
            many => {
                let ids: Vec<&str> = many.iter().map(|vm| vm.vm.as_str()).collect();
                Err(fault(
                    Exit::DataErr,
                    format!(
                        "{} VMs are named {name:?}{scope} ({}); set vcenter.folder or vcenter.datacenter so that one matches",
                        many.len(),
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    /// The VM's instance UUID and BIOS UUID (`identity`, vCenter 6.7U1 and later).
    pub fn identity(&self, vm: &VmRef) -> anyhow::Result<(String, Option<String>)> {
        let path = match self.generation() {
            Generation::Api => format!("/api/vcenter/vm/{}", encode(&vm.id)),
            Generation::Rest => format!("/rest/vcenter/vm/{}", encode(&vm.id)),
        };
        let reply = self
            .get(&path)
            .with_context(|| format!("reading the identity of {vm} in vCenter"))?;
        let body = reply.json::<Value>("vCenter")?;
        let info = match self.generation() {
            Generation::Api => &body,
            Generation::Rest => body.get("value").unwrap_or(&Value::Null),
        };
        let identity = info.get("identity");
        let field = |key: &str| {
            identity
                .and_then(|i| i.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let instance = field("instance_uuid").ok_or_else(|| {
            fault(
                Exit::Unavailable,
                format!("vCenter does not tell the instance UUID of {vm} (it needs 6.7U1 or later); set nsx.resolve = \"nsx\""),
            )
        })?;
        Ok((instance, field("bios_uuid")))
    }

    /// GET with the session; a session that expired mid-run is renewed once.
    fn get(&self, path: &str) -> anyhow::Result<Reply> {
        for attempt in 0..2 {
            let call = Call::new(Method::GET, path)
                .header("vmware-api-session-id", self.token())
                .header("accept", "application/json");
            let reply = self.http.send(&call)?;
            if reply.status == 401 && attempt == 0 {
                let api = match self.generation() {
                    Generation::Api => ApiGeneration::Api,
                    Generation::Rest => ApiGeneration::Rest,
                };
                self.login(api)
                    .context("renewing the expired vCenter session")?;
                continue;
            }
            if !reply.is_success() {
                return Err(ServiceError::status(
                    reply.status,
                    format!(
                        "vCenter: GET {path} failed (HTTP {}: {})",
                        reply.status,
                        error_text(&reply)
                    ),
                ));
            }
            return Ok(reply);
        }
        Err(fault(
            Exit::NoPerm,
            "vCenter keeps rejecting a fresh session",
        ))
    }
}

#[derive(Deserialize)]
struct VmSummary {
    vm: String,
    name: String,
}

/// The error type and first message of a vCenter error, from either API generation.
fn error_text(reply: &Reply) -> String {
    let status = format!("HTTP {}", reply.status);
    if (300..400).contains(&reply.status) {
        return format!(
            "{status}, redirected to {}; set vcenter.url to the final address",
            reply.header("location").unwrap_or("?")
        );
    }
    let Ok(body) = serde_json::from_str::<Value>(&reply.body) else {
        return format!("{status}: {}", reply.snippet());
    };
    let inner = body.get("value").filter(|v| v.is_object()).unwrap_or(&body);
    let kind = inner
        .get("error_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = inner
        .get("messages")
        .and_then(|m| m.get(0))
        .and_then(|m| m.get("default_message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{status} {kind}: {message}")
        .trim_end_matches([' ', ':'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    #[test]
    fn reads_errors_of_both_generations() {
        let rest = r#"{"type":"com.vmware.vapi.std.errors.unauthenticated","value":{"messages":[{"id":"x","default_message":"Authentication required.","args":[]}],"error_type":"UNAUTHENTICATED"}}"#;
        assert_eq!(
            error_text(&reply(401, rest)),
            "HTTP 401 UNAUTHENTICATED: Authentication required."
        );
        let api = r#"{"error_type":"UNABLE_TO_ALLOCATE_RESOURCE","messages":[{"id":"y","default_message":"Too many matches.","args":[]}]}"#;
        assert_eq!(
            error_text(&reply(500, api)),
            "HTTP 500 UNABLE_TO_ALLOCATE_RESOURCE: Too many matches."
        );
        assert_eq!(error_text(&reply(503, "busy")), "HTTP 503: busy");
    }

    #[test]
    fn reads_the_recorded_vm_list() {
        let body = r#"{"value":[{"memory_size_MiB":256,"vm":"vm-58","name":"standalone-5a6b49911-esx.0-vm.0","power_state":"POWERED_OFF","cpu_count":1},{"vm":"vm-79","name":"Sample_Exhaustive_VM_for_Simple_Testbed","power_state":"POWERED_OFF"}]}"#;
        let value: Value = serde_json::from_str(body).expect("json");
        let list: Vec<VmSummary> = serde_json::from_value(value["value"].clone()).expect("shape");
        assert_eq!(list[1].vm, "vm-79");
    }
}
