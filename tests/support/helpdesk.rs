//! A fake OTRS 6 GenericTicketConnectorREST web service that answers like the recordings in
//! `../shared/fixtures/otrs6/`: operation errors as HTTP 200 `{"Error":...}`, unknown routes
//! as a text/plain 500, an unknown web service as an HTML 500, GET bodies ignored. otnsx's own
//! exchanges (otrs6/25-34, znuny7/34-40) as recorded: TicketHistoryGet's entries and story
//! (lock, notes, unlock, the unlock timeout's notification), `Connection` as the web service's
//! KeepAlive says, TicketSearch newest first, the first article's keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::server::{Request, Response, Server};

pub const WEBSERVICE: &str = "/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST";
pub const API_USER: &str = "otnsx";
pub const API_PASSWORD: &str = "helpdesk-secret-pw";

#[derive(Debug, Clone)]
pub struct FakeTicket {
    pub number: String,
    pub lock: String,
    pub owner: String,
    /// The VMName field's value: a string, an array (multiselect) or null.
    pub vm_field: Value,
    /// The AccessProfile field's value (a dropdown), if the ticket has that field.
    pub profile_field: Option<Value>,
    /// Whether the API user may read it (the `Restricted` queue of the recordings).
    pub readable: bool,
    /// Whether the API user may add notes (the `note` permission on its queue).
    pub notable: bool,
    /// The articles added through TicketUpdate, as received.
    pub articles: Vec<Value>,
    /// The ticket's history after its creation, as TicketHistoryGet lists it (lock changes,
    /// notes, and what the help desk adds to them), oldest first.
    pub history: Vec<HistoryLine>,
    /// What TicketGet says of the work besides the defaults (`Queue`, `Type`, `State`,
    /// `Priority`, `Service`, `SLA`, `CustomerID`, `Responsible`), by TicketGet's key.
    pub facts: Vec<(String, Value)>,
    /// Dynamic fields besides VMName and AccessProfile, by name.
    pub fields: Vec<(String, Value)>,
}

/// One entry of a ticket's history, in the terms of the recordings (otrs6/26, 27;
/// znuny7/35a-c).
#[derive(Debug, Clone)]
pub struct HistoryLine {
    pub kind: &'static str,
    /// The user who made it (`CreateBy`): 1 is the help desk itself (the unlock timeout).
    pub by: u64,
    /// The ticket's owner then (`OwnerID`).
    pub owner_id: u64,
    pub article_id: u64,
    pub name: String,
}

impl HistoryLine {
    fn new(kind: &'static str, by: u64, owner_id: u64, name: impl Into<String>) -> Self {
        HistoryLine {
            kind,
            by,
            owner_id,
            article_id: 0,
            name: name.into(),
        }
    }

    /// `HistoryTypeID` as both help desks number the types.
    fn type_id(&self) -> u64 {
        match self.kind {
            "NewTicket" => 1,
            "SendAgentNotification" => 9,
            "AddNote" => 15,
            "Lock" => 17,
            "Unlock" => 18,
            "OwnerUpdate" => 23,
            "Misc" => 25,
            other => panic!("no HistoryTypeID for {other}"),
        }
    }
}

#[derive(Default)]
struct State {
    /// 5 for OTRS 5 (articles with ArticleType), else 6 and later (IsVisibleForCustomer).
    generation: u32,
    /// Hand an unlocked ticket to root@localhost, as OTOBO's Ticket::OwnerResetOnUnlock does.
    owner_reset_on_unlock: bool,
    /// Answer TicketHistoryGet as a web service without that route does.
    hide_history: bool,
    /// `Connection: close` and a closed connection after every answer, as the stock web
    /// services (`KeepAlive: ''`) answer; else `Connection: Keep-Alive`, as the web service
    /// otnsx ships (recordings otrs6/29b, 34; znuny7/34-40).
    close_connections: bool,
    /// Answer TicketUpdate as a web service that maps it elsewhere does (Znuny 7's test
    /// sample: `POST /TicketUpdate`).
    hide_update: bool,
    users: HashMap<String, String>,
    sessions: HashMap<String, String>,
    tickets: BTreeMap<u64, FakeTicket>,
    next_session: u64,
}

pub struct FakeHelpDesk {
    pub server: Server,
    state: Arc<Mutex<State>>,
}

impl FakeHelpDesk {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        {
            let mut s = state.lock().expect("state");
            s.users.insert(API_USER.into(), API_PASSWORD.into());
            s.users.insert("agent1".into(), "agentpw".into());
        }
        let shared = Arc::clone(&state);
        let server = Server::start(move |req| route(&shared, req));
        FakeHelpDesk { server, state }
    }

    /// The web service's base URL, as `otrs.url` takes it.
    pub fn url(&self) -> String {
        format!("{}{WEBSERVICE}", self.server.url())
    }

    pub fn add_ticket(&self, id: u64, number: &str, vm_field: Value) {
        self.state.lock().expect("state").tickets.insert(
            id,
            FakeTicket {
                number: number.into(),
                lock: "unlock".into(),
                owner: "agent1".into(),
                vm_field,
                profile_field: None,
                readable: true,
                notable: true,
                articles: Vec::new(),
                history: Vec::new(),
                facts: Vec::new(),
                fields: Vec::new(),
            },
        );
    }

    /// Sets what TicketGet says of the ticket's work under `key` (`Queue`, `Type`, `State`,
    /// `Priority`, `Service`, `SLA`, `CustomerID`, `Responsible`), as the help desk gives it:
    /// by name, with its id beside it (`ResponsibleID` the agent's user ID; `ServiceID` and
    /// `SLAID` only then, as a ticket without one has them empty and not the name at all).
    pub fn set_fact(&self, id: u64, key: &str, value: &str) {
        self.update(id, |t| {
            t.facts.retain(|(k, _)| k != key);
            t.facts.push((key.into(), json!(value)));
        });
    }

    /// Sets a dynamic field of the ticket besides VMName: a text (a dropdown's value), an
    /// array (a multiselect) or null.
    pub fn set_field(&self, id: u64, name: &str, value: Value) {
        self.update(id, |t| {
            t.fields.retain(|(k, _)| k != name);
            t.fields.push((name.into(), value));
        });
    }

    pub fn update(&self, id: u64, change: impl FnOnce(&mut FakeTicket)) {
        let mut state = self.state.lock().expect("state");
        change(state.tickets.get_mut(&id).expect("ticket exists"));
    }

    /// Answer as OTRS 5 (5) or as OTRS 6 and later (6, the default).
    pub fn set_generation(&self, generation: u32) {
        self.state.lock().expect("state").generation = generation;
    }

    /// Locks or unlocks the ticket as agent1 (user ID 2) does in the agent interface.
    pub fn set_lock(&self, id: u64, lock: &str) {
        self.set_lock_by(id, lock, 2);
    }

    /// Locks or unlocks the ticket as the user with this ID (1: the system, as the daemon's
    /// unlock timeout), recorded in the ticket's history.
    pub fn set_lock_by(&self, id: u64, lock: &str, by: u64) {
        let reset = self.state.lock().expect("state").owner_reset_on_unlock;
        self.update(id, |t| {
            t.lock = lock.into();
            let owner = self::user_id(&t.owner);
            if lock == "lock" {
                // What an agent's lock click leaves (otrs6/26, znuny7/35a).
                t.history.extend([
                    HistoryLine::new("Lock", by, owner, "%%lock"),
                    HistoryLine::new("Misc", by, owner, "Reset of unlock time."),
                    HistoryLine::new("OwnerUpdate", by, owner, format!("%%{}%%{owner}", t.owner)),
                ]);
            } else if lock == "tmp_lock" {
                // OTRS's and Znuny's TicketLockSet: a lock value other than lock and unlock
                // is history type Misc, named after the value.
                t.history
                    .push(HistoryLine::new("Misc", by, owner, "%%tmp_lock"));
            } else {
                t.history
                    .push(HistoryLine::new("Unlock", by, owner, "%%unlock"));
                if by == 1 {
                    // The unlock timeout tells the owner (otrs6/27, znuny7/35c).
                    t.history.push(HistoryLine::new(
                        "SendAgentNotification",
                        1,
                        owner,
                        format!("%%Ticket lock timeout notification%%{}%%Email", t.owner),
                    ));
                }
            }
            if lock == "unlock" && reset {
                t.owner = "root@localhost".into();
            }
        });
    }

    /// A dispatcher (user ID `by`) locks the ticket for another agent, who becomes its owner
    /// (the agent interface's Owner dialog with the lock kept): the `Lock` entry is the
    /// dispatcher's, as is the `OwnerUpdate` naming the new owner.
    pub fn lock_for(&self, id: u64, by: u64, owner: &str) {
        self.update(id, |t| {
            t.lock = "lock".into();
            t.owner = owner.into();
            let owner_id = self::user_id(owner);
            t.history.extend([
                HistoryLine::new("Lock", by, owner_id, "%%lock"),
                HistoryLine::new("Misc", by, owner_id, "Reset of unlock time."),
                HistoryLine::new(
                    "OwnerUpdate",
                    by,
                    owner_id,
                    format!("%%{owner}%%{owner_id}"),
                ),
            ]);
        });
    }

    /// A web service definition without TicketHistoryGet (the stock OTRS 6 one).
    pub fn hide_history(&self, on: bool) {
        self.state.lock().expect("state").hide_history = on;
    }

    /// Answer as a stock web service (`KeepAlive: ''`): `Connection: close`, then close.
    pub fn close_connections(&self, on: bool) {
        self.state.lock().expect("state").close_connections = on;
    }

    /// A session made by a SessionCreate that was not recorded (the recordings' SessionIDs).
    pub fn add_session(&self, id: &str, user: &str) {
        let mut state = self.state.lock().expect("state");
        state.sessions.insert(id.into(), user.into());
    }

    pub fn hide_update(&self, on: bool) {
        self.state.lock().expect("state").hide_update = on;
    }

    pub fn owner_reset_on_unlock(&self, on: bool) {
        self.state.lock().expect("state").owner_reset_on_unlock = on;
    }

    /// Ends every session, as the help desk does after SessionMaxIdleTime.
    pub fn expire_sessions(&self) {
        self.state.lock().expect("state").sessions.clear();
    }

    pub fn set_password(&self, user: &str, password: &str) {
        self.state
            .lock()
            .expect("state")
            .users
            .insert(user.into(), password.into());
    }

    pub fn ticket(&self, id: u64) -> FakeTicket {
        self.state.lock().expect("state").tickets[&id].clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }
}

fn route(state: &Mutex<State>, req: &Request) -> Response {
    if state.lock().expect("state").generation == 0 {
        state.lock().expect("state").generation = 6;
    }
    let Some(route) = req.path.strip_prefix(WEBSERVICE) else {
        // An unknown web service: the web server's HTML error page (fixture 20).
        return Response::new(500, "text/html", UNKNOWN_WEBSERVICE_PAGE);
    };
    let mut state = state.lock().expect("state");
    let connection = if state.close_connections {
        "close"
    } else {
        "Keep-Alive"
    };
    let mut response = operation(&mut state, req, route);
    response
        .headers
        .push(("Connection".into(), connection.into()));
    response
}

fn operation(state: &mut State, req: &Request, route: &str) -> Response {
    let state = &mut *state;
    match (req.method.as_str(), route) {
        ("POST", "/Session") => session_create(state, req),
        ("GET", r) if r.starts_with("/Ticket/") => ticket_get(state, req, &r["/Ticket/".len()..]),
        ("PATCH", r) if r.starts_with("/Ticket/") && !state.hide_update => {
            ticket_update(state, req, &r["/Ticket/".len()..])
        }
        ("GET", "/Ticket") => ticket_search(state, req),
        ("GET", r) if r.starts_with("/TicketHistory/") && !state.hide_history => {
            ticket_history(state, req, &r["/TicketHistory/".len()..])
        }
        _ => Response::new(
            500,
            "text/plain; charset=UTF-8",
            format!("HTTP::REST Error while determine Operation for request URI '{route}'."),
        ),
    }
}

fn json_utf8(body: String) -> Response {
    Response::new(200, "application/json; charset=UTF-8", body)
}

fn error(code: &str, message: &str) -> Response {
    json_utf8(json!({"Error": {"ErrorCode": code, "ErrorMessage": message}}).to_string())
}

fn session_create(state: &mut State, req: &Request) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return Response::new(
            500,
            "text/plain; charset=UTF-8",
            "Error while decoding request content.",
        );
    };
    let user = body.get("UserLogin").and_then(Value::as_str).unwrap_or("");
    let password = body.get("Password").and_then(Value::as_str).unwrap_or("");
    if state.users.get(user).is_none_or(|p| p != password) {
        return error(
            "SessionCreate.AuthFail",
            "SessionCreate: Authorization failing!",
        );
    }
    state.next_session += 1;
    let id = format!("{:0>32}", format!("fakeSession{}", state.next_session));
    state.sessions.insert(id.clone(), user.to_string());
    json_utf8(json!({"SessionID": id}).to_string())
}

/// Who is asking: a valid SessionID, or UserLogin and Password, in the query string. A JSON
/// body on a GET is ignored, as the real help desk does (fixture 09c).
fn authenticate(state: &State, req: &Request) -> Option<String> {
    if let Some(session) = req.query_value("SessionID") {
        return state.sessions.get(&session).cloned();
    }
    let user = req.query_value("UserLogin")?;
    let password = req.query_value("Password")?;
    (state.users.get(&user) == Some(&password)).then_some(user)
}

/// TicketSearch over GET: only the query string counts (fixture 09b: a dynamic-field
/// condition there is ignored); `Locks=lock` filters, `Limit` caps.
fn ticket_search(state: &State, req: &Request) -> Response {
    if authenticate(state, req).is_none() {
        return error(
            "TicketSearch.AuthFail",
            "TicketSearch: Authorization failing!",
        );
    }
    let locks = req.query_all("Locks");
    let limit: usize = req
        .query_value("Limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(500);
    // Newest first, the help desks' default order (SortBy Age, OrderBy Down): Limit=1 gives
    // the newest readable ticket (znuny7/39).
    let ids: Vec<String> = state
        .tickets
        .iter()
        .rev()
        .filter(|(_, t)| t.readable)
        .filter(|(_, t)| locks.is_empty() || locks.contains(&t.lock))
        .map(|(id, _)| id.to_string())
        .take(limit)
        .collect();
    if ids.is_empty() {
        return json_utf8("{}".into());
    }
    json_utf8(json!({"TicketID": ids}).to_string())
}

/// TicketUpdate: credentials in the JSON body; a lock change and/or an article.
fn ticket_update(state: &mut State, req: &Request, id: &str) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return Response::new(
            500,
            "text/plain; charset=UTF-8",
            "Error while decoding request content.",
        );
    };
    let user = match body.get("SessionID").and_then(Value::as_str) {
        Some(session) => state.sessions.get(session).cloned(),
        None => {
            let user = body.get("UserLogin").and_then(Value::as_str).unwrap_or("");
            let password = body.get("Password").and_then(Value::as_str).unwrap_or("");
            (state.users.get(user).map(String::as_str) == Some(password)).then(|| user.to_string())
        }
    };
    if user.is_none() {
        return error(
            "TicketUpdate.AuthFail",
            "TicketUpdate: Authorization failing!",
        );
    }
    let denied = || {
        error(
            "TicketUpdate.AccessDenied",
            "TicketUpdate: User does not have access to the ticket!",
        )
    };
    let Some(id) = id
        .parse::<u64>()
        .ok()
        .filter(|id| state.tickets.get(id).is_some_and(|t| t.readable))
    else {
        return denied();
    };
    let state_generation = state.generation;
    let ticket = state.tickets.get_mut(&id).expect("checked");
    if let Some(lock) = body.pointer("/Ticket/Lock").and_then(Value::as_str) {
        if !["lock", "unlock", "tmp_lock"].contains(&lock) {
            return error(
                "TicketUpdate.InvalidParameter",
                "TicketUpdate: Ticket->LockID or Ticket->Lock parameter is invalid!",
            );
        }
        ticket.lock = lock.to_string();
    }
    let mut answer = json!({"TicketNumber": ticket.number, "TicketID": id.to_string()});
    if let Some(article) = body.get("Article") {
        if !ticket.notable {
            // OTRS 6 with ro only on the queue (Znuny 7.0.19 does not check it: fixture 32a).
            return error(
                "TicketUpdate.AccessDenied",
                "TicketUpdate: Does not have permissions to create new articles!",
            );
        }
        let mut article = article.clone();
        if state_generation == 5 {
            // OTRS 5 knows articles by type only.
            if article.get("ArticleType").is_none() && article.get("ArticleTypeID").is_none() {
                return error(
                    "TicketUpdate.MissingParameter",
                    "TicketUpdate: Article->ArticleTypeID or Article->ArticleType parameter is required!",
                );
            }
        } else if article.get("IsVisibleForCustomer").is_none() {
            // 6 and later ignore ArticleType: without the flag, visible (fixture znuny7/29c).
            article["IsVisibleForCustomer"] = json!(1);
        }
        ticket.articles.push(article);
        let article_id = 4 + ticket.articles.len() as u64;
        answer["ArticleID"] = json!(article_id);
        // The note and the unlock-time reset every agent article brings (otrs6/26, znuny7/35b).
        let (by, owner) = (
            user_id(user.as_deref().unwrap_or("")),
            user_id(&ticket.owner),
        );
        ticket.history.extend([
            HistoryLine {
                article_id,
                ..HistoryLine::new("AddNote", by, owner, "%%GenericInterface Note")
            },
            HistoryLine::new("Misc", by, owner, "Reset of unlock time."),
        ]);
    }
    json_utf8(answer.to_string())
}

/// TicketHistoryGet: `{"TicketHistory":[{"TicketID":..,"History":[..]}]}` with the safe
/// attributes of OTRS's operation (HistoryType, CreateBy, CreateTime, Name, ...).
fn ticket_history(state: &State, req: &Request, id: &str) -> Response {
    if authenticate(state, req).is_none() {
        return error(
            "TicketHistoryGet.AuthFail",
            "TicketHistoryGet: Authorization failing!",
        );
    }
    let Some((id, ticket)) = id
        .parse::<u64>()
        .ok()
        .and_then(|id| state.tickets.get(&id).map(|t| (id, t)))
        .filter(|(_, t)| t.readable)
    else {
        return error(
            "TicketHistoryGet.AccessDenied",
            &format!("TicketHistoryGet: User does not have access to the ticket {id}!"),
        );
    };
    // Every entry has the recordings' keys and value types: TicketID a string, the IDs numbers.
    let entry = |line: &HistoryLine| {
        json!({"ArticleID": line.article_id, "CreateBy": line.by,
            "CreateTime": "2026-12-06 11:44:21", "HistoryType": line.kind,
            "HistoryTypeID": line.type_id(), "Name": line.name, "OwnerID": line.owner_id,
            "PriorityID": 3, "QueueID": 2, "StateID": 4, "TicketID": id.to_string(), "TypeID": 1})
    };
    let created = HistoryLine::new(
        "NewTicket",
        1,
        1,
        format!("%%{}%%Raw%%3 normal%%open%%{id}", ticket.number),
    );
    let history: Vec<Value> = std::iter::once(&created)
        .chain(&ticket.history)
        .map(entry)
        .collect();
    json_utf8(
        json!({"TicketHistory": [{"TicketID": id.to_string(), "History": history}]}).to_string(),
    )
}

fn ticket_get(state: &State, req: &Request, id: &str) -> Response {
    if authenticate(state, req).is_none() {
        return error("TicketGet.AuthFail", "TicketGet: Authorization failing!");
    }
    let ticket = id
        .parse::<u64>()
        .ok()
        .and_then(|id| state.tickets.get(&id).map(|t| (id, t)));
    let Some((id, ticket)) = ticket.filter(|(_, t)| t.readable) else {
        return error(
            "TicketGet.AccessDenied",
            "TicketGet: User does not have access to the ticket!",
        );
    };
    let lock_id = match ticket.lock.as_str() {
        "unlock" => 1,
        "lock" => 2,
        _ => 3,
    };
    // The keys and value types of fixture 07 (TicketGet after lock).
    let mut body = json!({
        "ArchiveFlag": "n", "UnlockTimeout": 1_795_448_203, "Title": format!("VM request {id}"),
        "RealTillTimeNotUsed": 0, "TypeID": 1, "OwnerID": user_id(&ticket.owner), "CreateBy": 2,
        "PriorityColor": "#cdcdcd", "SLAID": "", "StateType": "new", "TimeUnit": 0, "StateID": 1,
        "QueueID": 2, "Responsible": "root@localhost", "EscalationTime": 0,
        "TicketNumber": ticket.number, "ServiceID": "", "Created": "2026-11-23 15:35:54",
        "Lock": ticket.lock, "Owner": ticket.owner, "ChangeBy": 2, "Type": "Unclassified",
        "GroupID": 1, "PriorityID": 3, "Age": 59, "EscalationSolutionTime": 0,
        "Changed": "2026-11-23 15:36:43", "EscalationUpdateTime": 0, "UntilTime": 0,
        "LockID": lock_id, "EscalationResponseTime": 0, "ResponsibleID": 1, "Queue": "Raw",
        "State": "new", "Priority": "3 normal", "CustomerID": "",
        "CustomerUserID": "customer@example.invalid", "TicketID": id
    });
    for (key, value) in &ticket.facts {
        body[key] = value.clone();
        let name = value.as_str().unwrap_or_default();
        match key.as_str() {
            "Responsible" => body["ResponsibleID"] = json!(user_id(name)),
            "Service" => body["ServiceID"] = json!(2),
            "SLA" => body["SLAID"] = json!(1),
            "Queue" => body["QueueID"] = json!(5),
            "Type" => body["TypeID"] = json!(3),
            _ => {}
        }
    }
    if req.query_value("DynamicFields").as_deref() == Some("1") {
        body["DynamicField"] = json!([
            {"Name": "ProcessManagementActivityID", "Value": null},
            {"Value": null, "Name": "ProcessManagementProcessID"},
            {"Value": ticket.vm_field, "Name": "VMName"}
        ]);
        for (name, value) in &ticket.fields {
            body["DynamicField"]
                .as_array_mut()
                .expect("a list")
                .push(json!({"Value": value, "Name": name}));
        }
        if let Some(profile) = &ticket.profile_field {
            body["DynamicField"]
                .as_array_mut()
                .expect("a list")
                .push(json!({"Value": profile, "Name": "AccessProfile"}));
        }
    }
    if req.query_value("AllArticles").as_deref() == Some("1") {
        // The ticket's first article (made by the customer), then those added, in the fields
        // of the help desk's generation (fixture znuny7/29c for 6 and later).
        let first = if state.generation == 5 {
            json!({"ArticleID": 1, "ArticleType": "email-external", "SenderType": "customer",
                   "Subject": "Initial", "Body": "Please patch web01", "TicketID": id})
        } else {
            // The keys and value types of otrs6/30 and znuny7/38 (the customer's phone call).
            json!({"ArticleID": 1, "ArticleNumber": 1, "Bcc": "", "Body": "Please patch web01",
                   "Cc": "", "ChangeBy": 2, "ChangeTime": "2026-12-06 11:44:22",
                   "Charset": "utf8", "CommunicationChannelID": 2, "ContentCharset": "utf8",
                   "ContentType": "text/plain; charset=utf8", "CreateBy": 2,
                   "CreateTime": "2026-12-06 11:44:22", "From": "customer@example.com",
                   "InReplyTo": "", "IncomingTime": 1_796_557_462, "IsVisibleForCustomer": 1,
                   "MessageID": "", "MimeType": "text/plain", "References": "", "ReplyTo": "",
                   "SenderType": "customer", "SenderTypeID": "3", "Subject": "Initial",
                   "TicketID": id, "TimeUnit": 0, "To": ""})
        };
        let limit: usize = req
            .query_value("ArticleLimit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(usize::MAX);
        let articles: Vec<Value> = std::iter::once(first)
            .chain(ticket.articles.iter().cloned())
            .take(limit)
            .collect();
        body["Article"] = json!(articles);
    }
    json_utf8(json!({"Ticket": [body]}).to_string())
}

/// The user ID of a login, as the recordings' help desks number their users (root@localhost 1,
/// agent1 2, agent2 3, otnsx 4); any other login a later one.
pub fn user_id(login: &str) -> u64 {
    match login {
        "root@localhost" => 1,
        "agent1" => 2,
        "agent2" => 3,
        API_USER => 4,
        _ => 99,
    }
}

const UNKNOWN_WEBSERVICE_PAGE: &str = "<html>\n<head><title>An Error Occurred</title></head>\n<body>\n<h1>An Error Occurred</h1>\n<p>500 Internal Server Error</p>\n</body>\n</html>\n";
