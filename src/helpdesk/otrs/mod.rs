//! The help desk (OTRS, Znuny, OTOBO) over the GenericInterface REST web service
//! `GenericTicketConnectorREST`. Operation errors arrive as HTTP 200 with an `Error` object.

mod answer;

use anyhow::Context;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use ureq::http::Method;

use crate::config::{OtrsConfig, Secret};
use crate::deadline::Deadline;
use std::path::PathBuf;

use crate::error::{Exit, exit_code, fault};
use crate::http::{Call, Http, Reply, ServiceError, query};
use crate::sync::lock;
use std::sync::Mutex;

use answer::{OneOrMany, OperationError, SessionCreate, TicketData, TicketHistoryGet};

/// The help desk's name of the one lock state that opens access.
const LOCKED: &str = "lock";

pub use crate::domain::ticket::Ticket;
pub use answer::{TicketGet, TicketSearch};

/// The OTRS family's GenericTicketConnectorREST web service.
pub struct Otrs {
    http: Http,
    user: String,
    password: Secret,
    vm_field: String,
    profile_field: Option<String>,
    version: u32,
    /// Whether the help desk e-mails the ticket's agents about otnsx's notes.
    notify_agents: bool,
    /// The help desk's generation as its articles showed it: 5, or 6 for 6 and later.
    generation: Mutex<Option<u32>>,
    session: Mutex<SessionState>,
    /// Whether the web service was found to have no TicketHistoryGet route (OTRS 4/5's
    /// GenericTicketConnectorREST, kept by upgraded sites): asked and said once per run.
    history_missing: std::sync::atomic::AtomicBool,
    /// Where the SessionID is kept between runs (mode 0600), if anywhere.
    session_file: Option<PathBuf>,
    /// Until when reading may take (the run's deadline less the part kept for closing in
    /// NSX): a help desk that does not answer must not leave an unlock without the time to
    /// close. Notes, written after the NSX changes, may take the whole deadline.
    reads_by: Deadline,
}

/// The help desk's session: its id, and whether it came from the session file (and may have
/// expired).
#[derive(Default)]
struct SessionState {
    id: Option<String>,
    cached: bool,
}

/// TicketSearch's `Limit`: the answer's size bound. Correctness never depends on it: a ticket
/// missing from the answer is read again before its lease is dropped.
const SEARCH_LIMIT: &str = "10000";

impl Otrs {
    /// `session_file`, when given, keeps the SessionID between runs (see [`Otrs::authed`]).
    pub fn new(
        config: &OtrsConfig,
        deadline: Deadline,
        verbose: bool,
        session_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        Ok(Otrs {
            session_file,
            http: Http::new("help desk", &config.endpoint, deadline, verbose)?
                .no_retry_when_dropped(WEB_SERVICE_HINT)
                .permanent_when(no_such_route),
            history_missing: std::sync::atomic::AtomicBool::new(false),
            user: config.endpoint.user.clone(),
            password: config.endpoint.password.clone(),
            vm_field: config.vm_field.clone(),
            profile_field: config.profile_field.clone(),
            version: config.version,
            notify_agents: config.notify_agents,
            generation: Mutex::new(None),
            session: Mutex::new(SessionState::default()),
            reads_by: deadline.for_waiting(),
        })
    }

    /// The name of the ticket field that names the VMs.
    pub fn vm_field(&self) -> &str {
        &self.vm_field
    }

    /// TicketGet with the ticket's dynamic fields; with `otrs.version = 5` also its first
    /// article, whose fields tell the help desk's real generation (see [`Otrs::note`]).
    pub fn ticket(&self, id: u64) -> anyhow::Result<Ticket> {
        self.read_ticket(id, self.version == 5)
    }

    /// TicketGet with the dynamic fields and the first article, for `otnsx check`.
    pub fn ticket_with_articles(&self, id: u64) -> anyhow::Result<Ticket> {
        self.read_ticket(id, true)
    }

    /// The generation this client writes notes for: `otrs.version`, 6 for 6 and later.
    pub fn configured_generation(&self) -> u32 {
        self.version.min(6)
    }

    fn read_ticket(&self, id: u64, articles: bool) -> anyhow::Result<Ticket> {
        let body: TicketGet = self
            .authed("TicketGet", |session| {
                let mut pairs = vec![("SessionID", session), ("DynamicFields", "1")];
                if articles {
                    pairs.extend([("AllArticles", "1"), ("ArticleLimit", "1")]);
                }
                Call::new(Method::GET, format!("/Ticket/{id}{}", query(pairs)))
            })
            .with_context(|| format!("reading ticket ID {id} from the help desk"))?;
        let mut ticket = parse_ticket(&body, &self.vm_field)
            .with_context(|| format!("reading ticket ID {id}"))?;
        if let Some(field) = &self.profile_field {
            ticket.profile =
                profile_of(&body, field).with_context(|| format!("reading ticket ID {id}"))?;
        }
        let mut generation = lock(&self.generation);
        if generation.is_none() {
            *generation = ticket.generation;
        }
        Ok(ticket)
    }

    /// Whether a ticket is locked (`Lock` is `lock`; `unlock` and `tmp_lock` are not):
    /// TicketGet without fields.
    pub fn is_locked(&self, id: u64) -> anyhow::Result<bool> {
        let body: TicketGet = self
            .authed("TicketGet", |session| {
                Call::new(
                    Method::GET,
                    format!("/Ticket/{id}{}", query([("SessionID", session)])),
                )
            })
            .with_context(|| format!("reading ticket ID {id} from the help desk"))?;
        body.tickets
            .iter()
            .flatten()
            .next()
            .and_then(|t| t.lock.as_ref()?.string().map(|lock| lock == LOCKED))
            .ok_or_else(|| {
                ServiceError::malformed(format!("help desk: ticket ID {id} has no Lock"))
            })
    }

    /// The ID of the user who last unlocked the ticket, from TicketHistoryGet (the `CreateBy`
    /// of its latest entry that unlocked it, see [`unlocks`]), if the history has one.
    pub fn unlocked_by(&self, id: u64) -> anyhow::Result<Option<u64>> {
        Ok(self
            .history(id)?
            .iter()
            .rev()
            .find(|h| unlocks(h))
            .and_then(|h| h.by.as_ref()?.id()))
    }

    /// The ID of the user who last locked the ticket, from TicketHistoryGet (the `CreateBy` of
    /// its latest `Lock` entry: a dispatcher who locks for another agent, not the new owner
    /// the `OwnerUpdate` after it names), if the history has one.
    pub fn locked_by(&self, id: u64) -> anyhow::Result<Option<u64>> {
        Ok(self
            .history(id)?
            .iter()
            .rev()
            .find(|h| h.kind.as_ref().and_then(|k| k.string()) == Some("Lock"))
            .and_then(|h| h.by.as_ref()?.id()))
    }

    /// The ticket's history (TicketHistoryGet), oldest first; empty once the web service was
    /// found to have no such route.
    ///
    /// A web service without the TicketHistoryGet route answers HTTP 500 "determine
    /// Operation": that is permanent (never retried), said in the first call's error, and every
    /// later call of the run answers `None` without asking.
    fn history(&self, id: u64) -> anyhow::Result<Vec<answer::HistoryEntry>> {
        use std::sync::atomic::Ordering;
        if self.history_missing.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let body: TicketHistoryGet = match self.authed("TicketHistoryGet", |session| {
            Call::new(
                Method::GET,
                format!("/TicketHistory/{id}{}", query([("SessionID", session)])),
            )
        }) {
            Ok(body) => body,
            Err(e) if format!("{e:#}").contains(NO_SUCH_ROUTE) => {
                self.history_missing.store(true, Ordering::Relaxed);
                return Err(fault(
                    Exit::Unavailable,
                    "the help desk's web service has no TicketHistoryGet route (as OTRS 4/5's GenericTicketConnectorREST, kept by upgraded sites), so who unlocks a ticket is journaled as helpdesk:unknown, and a lock as by the ticket's owner; import dist/helpdesk/GenericTicketConnectorREST-otnsx.yml (README, help-desk set-up)",
                ));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading the history of ticket ID {id}"));
            }
        };
        let history = body
            .tickets
            .into_iter()
            .flatten()
            .next()
            .and_then(|t| t.history)
            .ok_or_else(|| {
                ServiceError::malformed(format!(
                    "help desk: the history of ticket ID {id} has no History list"
                ))
            })?;
        Ok(history)
    }

    /// TicketUpdate's route and the API user's access to ticket `id`, without changing it: a
    /// lock value the help desk rejects only after routing the request, logging the user in and
    /// checking its access (`TicketUpdate.InvalidParameter`, fixture 23).
    pub fn probe_update(&self, id: u64) -> anyhow::Result<()> {
        let result = self.authed::<IgnoredAny>("TicketUpdate", |session| {
            let body = serde_json::json!({"SessionID": session, "Ticket": {"Lock": "otnsx-check-no-such-lock"}});
            Call::new(Method::PATCH, format!("/Ticket/{id}"))
                .body("application/json", body.to_string().into_bytes())
                .once()
        });
        match result {
            Err(e) if format!("{e:#}").contains("TicketUpdate.InvalidParameter") => Ok(()),
            Err(e) => Err(e).with_context(|| format!("TicketUpdate on ticket ID {id}")),
            Ok(_) => Err(fault(
                Exit::Unavailable,
                format!(
                    "TicketUpdate on ticket ID {id} accepted an invalid lock value; is this the GenericTicketConnectorREST web service?"
                ),
            )),
        }
    }

    /// A ticket to check the VM field on: `wanted`, else any ticket the API user may read
    /// (TicketSearch with `Limit=1`, asked either way: `check` says it answers), else none.
    pub fn any_ticket(&self, wanted: Option<u64>) -> anyhow::Result<Option<u64>> {
        let body: TicketSearch = self
            .authed("TicketSearch", |session| {
                Call::new(
                    Method::GET,
                    format!("/Ticket{}", query([("SessionID", session), ("Limit", "1")])),
                )
            })
            .context("searching the help desk for a ticket")?;
        let found = parse_search(&body)?.into_iter().next();
        Ok(wanted.or(found))
    }

    /// TicketSearch for every locked ticket the API user may read.
    pub fn locked_tickets(&self) -> anyhow::Result<std::collections::BTreeSet<u64>> {
        let body: TicketSearch = self
            .authed("TicketSearch", |session| {
                let pairs = [
                    ("SessionID", session),
                    ("Locks", LOCKED),
                    ("Limit", SEARCH_LIMIT),
                ];
                Call::new(Method::GET, format!("/Ticket{}", query(pairs)))
            })
            .context("searching the help desk for locked tickets")?;
        parse_search(&body)
    }

    /// TicketUpdate with an internal article: never visible to the customer. Help desks of
    /// generation 6 and later ignore OTRS 5's `ArticleType` and make such a note visible to the
    /// customer, so with `otrs.version = 5` the help desk's generation is read from a ticket's
    /// article first: a later help desk gets the 6 form (and a warning comes back), and when no
    /// article tells, no note is posted.
    pub fn note(&self, id: u64, subject: &str, text: &str) -> anyhow::Result<Option<String>> {
        let mut warning = None;
        if self.version == 5 && lock(&self.generation).is_none() {
            let body: TicketGet = self
                .authed("TicketGet", |session| {
                    let pairs = [
                        ("SessionID", session),
                        ("AllArticles", "1"),
                        ("ArticleLimit", "1"),
                    ];
                    Call::new(Method::GET, format!("/Ticket/{id}{}", query(pairs)))
                })
                .with_context(|| format!("reading an article of ticket ID {id}"))?;
            *lock(&self.generation) = body.tickets.iter().flatten().next().and_then(generation_of);
        }
        let generation = *lock(&self.generation);
        let old_form = match (self.version, generation) {
            (5, Some(5)) => true,
            (5, Some(_)) => {
                warning = Some(
                    "otrs.version = 5, but the help desk is of generation 6 or later (its articles say so): the note was posted in the 6 form, internal; set otrs.version = 6".to_string(),
                );
                false
            }
            (5, None) => {
                return Err(fault(
                    Exit::Config,
                    format!(
                        "otrs.version = 5, but no article of ticket ID {id} tells whether the help desk really is OTRS 5; no note was posted, since an OTRS 5 note on a later help desk is visible to the customer"
                    ),
                ));
            }
            _ => false,
        };
        // MimeType and Charset beside ContentType: without them OTRS 6 leaves a Perl warning
        // in the web server's log for every note. NoAgentNotify: no e-mail to the owner.
        let mut article = serde_json::json!({"SenderType": "agent", "Subject": subject,
            "Body": text, "ContentType": "text/plain; charset=utf8", "MimeType": "text/plain",
            "Charset": "utf8", "NoAgentNotify": u8::from(!self.notify_agents)});
        if old_form {
            article["ArticleType"] = "note-internal".into();
        } else {
            article["CommunicationChannel"] = "Internal".into();
            article["IsVisibleForCustomer"] = 0.into();
        }
        self.authed::<IgnoredAny>("TicketUpdate", |session| {
            let body = serde_json::json!({"SessionID": session, "Article": article});
            Call::new(Method::PATCH, format!("/Ticket/{id}"))
                .body("application/json", body.to_string().into_bytes())
                .once()
        })
        .with_context(|| format!("adding a note to ticket ID {id}"))?;
        Ok(warning)
    }

    /// Sends an operation with the session. A session kept from an earlier run may have
    /// expired (the help desk then says AuthFail): it is dropped, a new one made, and the
    /// operation sent once more.
    fn authed<T: DeserializeOwned>(
        &self,
        operation: &str,
        build: impl Fn(&str) -> Call,
    ) -> anyhow::Result<T> {
        let (session, cached) = self.session_id()?;
        match self.send(operation, build(&session)) {
            Err(e) if cached && exit_code(&e) == Exit::NoPerm => {
                self.forget_session();
                let (fresh, _) = self.session_id()?;
                self.send(operation, build(&fresh))
            }
            other => other,
        }
    }

    fn forget_session(&self) {
        *lock(&self.session) = SessionState::default();
        if let Some(path) = &self.session_file {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The SessionID kept by an earlier run, if any and well-formed.
    fn kept_session(&self) -> Option<String> {
        let text = crate::state::memo::read(self.session_file.as_ref()?)?;
        let id = text.trim();
        (!id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .then(|| id.to_string())
    }

    /// Keeps the SessionID for the next run (shared with the help desk's other users through
    /// the state directory's group, as the other state files).
    fn keep_session(&self, id: &str) {
        if let Some(path) = &self.session_file {
            crate::state::memo::write(path, id);
        }
    }

    /// The session, and whether it was kept from an earlier run (or else made now with
    /// SessionCreate: the password travels in a POST body, never in a URL). The lock is held
    /// across the login, so that requests made at once share one session.
    fn session_id(&self) -> anyhow::Result<(String, bool)> {
        let mut state = lock(&self.session);
        if let Some(id) = &state.id {
            return Ok((id.clone(), state.cached));
        }
        if let Some(id) = self.kept_session() {
            crate::secrets::token(&id);
            *state = SessionState {
                id: Some(id.clone()),
                cached: true,
            };
            return Ok((id, true));
        }
        let body = serde_json::json!({"UserLogin": self.user, "Password": self.password.expose()});
        let answer: SessionCreate = self
            .send(
                "SessionCreate",
                Call::new(Method::POST, "/Session")
                    .body("application/json", body.to_string().into_bytes()),
            )
            .with_context(|| format!("logging in to the help desk as {}", self.user))?;
        let id = answer
            .session_id
            .as_ref()
            .and_then(|id| id.string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ServiceError::malformed("help desk: SessionCreate answered without a SessionID")
            })?
            .to_string();
        crate::secrets::token(&id);
        *state = SessionState {
            id: Some(id.clone()),
            cached: false,
        };
        self.keep_session(&id);
        Ok((id, false))
    }

    /// Sends one operation and returns its answer as `T`, or the help desk's error.
    fn send<T: DeserializeOwned>(&self, operation: &str, call: Call) -> anyhow::Result<T> {
        let by = match operation {
            "TicketUpdate" => self.http.deadline(),
            _ => self.reads_by,
        };
        let reply = self.http.send_by(&call, by)?;
        let value = answer(operation, &self.user, &reply)?;
        serde_json::from_value(value).map_err(|e| {
            ServiceError::malformed(format!(
                "help desk: {operation} answered JSON of an unexpected shape: {e}"
            ))
        })
    }
}

impl crate::helpdesk::HelpDesk for Otrs {
    fn vm_field(&self) -> &str {
        Otrs::vm_field(self)
    }

    fn ticket(&self, id: u64) -> anyhow::Result<Ticket> {
        Otrs::ticket(self, id)
    }

    fn locked_tickets(&self) -> anyhow::Result<std::collections::BTreeSet<u64>> {
        Otrs::locked_tickets(self)
    }

    fn is_locked(&self, id: u64) -> anyhow::Result<bool> {
        Otrs::is_locked(self, id)
    }

    fn unlocked_by(&self, id: u64) -> anyhow::Result<Option<u64>> {
        Otrs::unlocked_by(self, id)
    }

    fn locked_by(&self, id: u64) -> anyhow::Result<Option<u64>> {
        Otrs::locked_by(self, id)
    }

    fn note(&self, id: u64, subject: &str, text: &str) -> anyhow::Result<Option<String>> {
        Otrs::note(self, id, subject, text)
    }
}

/// How the GenericInterface answers (HTTP 500, text/plain) a request its web service has no
/// route for. Another try gets the same.
const NO_SUCH_ROUTE: &str = "HTTP::REST Error while determine Operation";

/// The help desk's answer for a route the web service lacks (recordings otrs6/33, otrs6/19).
/// Whether a history entry is one that took the ticket's lock away: `Unlock`, or the `Misc`
/// entry `%%tmp_lock` that OTRS's and Znuny's TicketLockSet write for a lock value other than
/// lock and unlock (a tmp_lock is not locked, for otnsx). Not the `Misc` "Reset of unlock
/// time." that follows a lock or a note.
fn unlocks(entry: &answer::HistoryEntry) -> bool {
    let text = |s: &Option<answer::Scalar>| s.as_ref().and_then(|s| s.string().map(str::to_owned));
    match text(&entry.kind).as_deref() {
        Some("Unlock") => true,
        Some("Misc") => text(&entry.name).as_deref() == Some("%%tmp_lock"),
        _ => false,
    }
}

fn no_such_route(reply: &Reply) -> bool {
    reply.status == 500
        && reply.media_type() == "text/plain"
        && reply.body.trim_start().starts_with(NO_SUCH_ROUTE)
}

/// What a wrong web service name in `otrs.url` looks like to otnsx, and what to do.
pub const WEB_SERVICE_HINT: &str = "; check the web service name in otrs.url (it must end with …/Webservice/NAME, the name the help desk's web service has: GenericTicketConnectorREST unless it was imported under another)";

/// Turns the help desk's answer into JSON or a clear error.
fn answer(operation: &str, user: &str, reply: &Reply) -> anyhow::Result<Value> {
    let media = reply.media_type();
    match reply.status {
        200 if media == "application/json" => {}
        300..=399 => {
            return Err(ServiceError::status(
                reply.status,
                format!(
                    "help desk: {operation} was redirected (HTTP {}) to {}; set otrs.url to the final address",
                    reply.status,
                    reply.header("location").unwrap_or("?")
                ),
            ));
        }
        401 | 403 | 429 => {
            return Err(ServiceError::status(
                reply.status,
                format!(
                    "help desk: {operation} refused (HTTP {}): {}",
                    reply.status,
                    reply.snippet()
                ),
            ));
        }
        // OTRS 6 answers a wrong web service name with an HTML page, OTOBO with an empty 500.
        500 if media == "text/html" || reply.body.trim().is_empty() => {
            return Err(ServiceError::status(
                500,
                format!(
                    "help desk: {operation} failed with HTTP 500 and {}{WEB_SERVICE_HINT}",
                    if media == "text/html" {
                        "an HTML error page"
                    } else {
                        "no text at all"
                    }
                ),
            ));
        }
        500 if media == "text/plain" => {
            return Err(ServiceError::status(
                500,
                format!(
                    "help desk: the web service failed {operation} (HTTP 500): {}; check otrs.url and the web service's routes",
                    reply.snippet()
                ),
            ));
        }
        200 => {
            return Err(ServiceError::malformed(format!(
                "help desk: {operation} answered {media:?} instead of JSON: {}",
                reply.snippet()
            )));
        }
        status => {
            return Err(ServiceError::status(
                status,
                format!(
                    "help desk: {operation} failed (HTTP {status}): {}",
                    reply.snippet()
                ),
            ));
        }
    }
    let value: Value = serde_json::from_str(&reply.body).map_err(|e| {
        ServiceError::malformed(format!(
            "help desk: {operation} answered malformed JSON: {e}"
        ))
    })?;
    let Some(error) = value.get("Error") else {
        if !value.is_object() {
            return Err(ServiceError::malformed(format!(
                "help desk: {operation} answered JSON that is not an object: {}",
                reply.snippet()
            )));
        }
        return Ok(value);
    };
    let error = OperationError::deserialize(error).unwrap_or(OperationError {
        code: None,
        message: None,
    });
    let code = error.code.as_ref().and_then(|c| c.string()).unwrap_or("?");
    let message = error
        .message
        .as_ref()
        .and_then(|m| m.string())
        .unwrap_or("");
    let (exit, hint) = match code.rsplit('.').next().unwrap_or("") {
        "AuthFail" => (
            Exit::NoPerm,
            format!(
                "the help desk refused the login of {user:?}; check otrs.user and its password"
            ),
        ),
        "AccessDenied" if operation == "TicketUpdate" => (
            Exit::NoPerm,
            format!(
                "the API user {user:?} may not add a note to this ticket: it needs ro + note on the ticket's queue (Admin → Agents ↔ Groups, or Roles ↔ Groups, the \"note\" column)"
            ),
        ),
        "AccessDenied" => (
            Exit::DataErr,
            format!("no such ticket, or the API user {user:?} may not read it"),
        ),
        _ => (
            Exit::Unavailable,
            format!("the help desk refused {operation}"),
        ),
    };
    Err(fault(exit, format!("{hint} ({code}: {message})")))
}

/// Reads a TicketSearch answer: `{"TicketID":["2","7"]}`, or `{}` when nothing matches.
pub fn parse_search(body: &TicketSearch) -> anyhow::Result<std::collections::BTreeSet<u64>> {
    let ids = match &body.ids {
        None => return Ok(Default::default()),
        Some(OneOrMany::One(id)) => std::slice::from_ref(id),
        Some(OneOrMany::Many(ids)) => ids.as_slice(),
    };
    ids.iter()
        .map(|id| {
            id.id().ok_or_else(|| {
                ServiceError::malformed(format!(
                    "help desk: unexpected TicketSearch answer: the ticket ID {id:?}"
                ))
            })
        })
        .collect()
}

/// The help desk's generation as a ticket's articles show it: `IsVisibleForCustomer` or
/// `CommunicationChannelID` (6 and later), or `ArticleType` (OTRS 5); `None` without articles.
fn generation_of(ticket: &TicketData) -> Option<u32> {
    let article = ticket.articles.as_ref()?.first()?;
    if article.visible_for_customer || article.channel {
        Some(6)
    } else if article.article_type {
        Some(5)
    } else {
        None
    }
}

/// Reads a TicketGet answer: `{"Ticket":[{...}]}`.
pub fn parse_ticket(body: &TicketGet, vm_field: &str) -> anyhow::Result<Ticket> {
    let bad = |what: &str| ServiceError::malformed(format!("help desk: TicketGet answer {what}"));
    let tickets = body
        .tickets
        .as_ref()
        .ok_or_else(|| bad("has no Ticket array"))?;
    let [ticket] = tickets.as_slice() else {
        return Err(bad(&format!("holds {} tickets, not one", tickets.len())));
    };
    let id = (ticket.id.as_ref().and_then(answer::Scalar::id))
        .ok_or_else(|| bad("has no numeric TicketID"))?;
    let number = (ticket.number.as_ref().and_then(answer::Scalar::text))
        .ok_or_else(|| bad("has no TicketNumber"))?;
    // Refused here, before anything is looked up or changed: a number or a login the lease
    // store could not read back would damage it for every other ticket.
    if !crate::config::is_ticket_number(&number) {
        return Err(fault(
            Exit::DataErr,
            format!(
                "its number \"{}\" is not a ticket number otnsx can hold (1 to {} digits, as the help desk's number generators make); refused before anything was looked up or changed",
                crate::escape::shorten(&number),
                crate::config::MAX_TICKET_NUMBER
            ),
        ));
    }
    let lock = (ticket.lock.as_ref().and_then(|l| l.string()))
        .ok_or_else(|| bad("has no Lock"))?
        .to_string();
    let owner = ticket
        .owner
        .as_ref()
        .and_then(|o| o.string())
        .filter(|o| !o.is_empty())
        .map(str::to_string);
    // The locking agent is journaled and kept with the lease (with per-agent rules, as the
    // desktop it opens to); after an unlock the owner is not used.
    if lock == LOCKED
        && let Some(owner) = owner.as_deref().filter(|o| !crate::config::is_login(o))
    {
        return Err(fault(
            Exit::DataErr,
            format!(
                "ticket {number} is locked by owner \"{}\", which is not a login otnsx can hold (1 to {} characters, no control characters); refused before anything was looked up or changed",
                crate::escape::shorten(owner),
                crate::config::MAX_LOGIN
            ),
        ));
    }
    let fields = ticket.fields.as_deref().unwrap_or_default();
    let name_of = |f: &answer::Field| f.name.as_ref().and_then(|n| n.string().map(str::to_string));
    let Some(field) = fields
        .iter()
        .find(|f| name_of(f).as_deref() == Some(vm_field))
    else {
        let names: Vec<String> = fields.iter().filter_map(name_of).collect();
        return Err(fault(
            Exit::Config,
            format!(
                "ticket {number} has no dynamic field {vm_field:?} (it has: {}); check otrs.vm_field and that the field is valid",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    let vms = vm_names(&field.value).map_err(|why| {
        fault(
            Exit::DataErr,
            format!("ticket {number}: field {vm_field}: {why}"),
        )
    })?;
    Ok(Ticket {
        generation: generation_of(ticket),
        id,
        number,
        locked: lock == LOCKED,
        lock,
        owner,
        owner_id: ticket.owner_id.as_ref().and_then(answer::Scalar::id),
        vms,
        profile: None,
        facts: facts_of(ticket),
    })
}

/// What a ticket says of the work (see [`crate::domain::ticket::Facts`]): texts as given,
/// empty ones as none.
fn facts_of(ticket: &answer::TicketData) -> crate::domain::ticket::Facts {
    let text = |value: &Option<answer::Scalar>| {
        value
            .as_ref()
            .and_then(answer::Scalar::text)
            .filter(|t| !t.is_empty())
    };
    let mut fields = std::collections::BTreeMap::new();
    for field in ticket.fields.as_deref().unwrap_or_default() {
        let Some(name) = field.name.as_ref().and_then(|n| n.string()) else {
            continue;
        };
        let one = |v: &Value| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let values: Vec<String> = match &field.value {
            Value::Array(items) => items.iter().filter_map(one).collect(),
            other => one(other).into_iter().collect(),
        };
        fields.insert(name.to_string(), values);
    }
    crate::domain::ticket::Facts {
        queue: text(&ticket.queue),
        kind: text(&ticket.kind),
        state: text(&ticket.state),
        priority: text(&ticket.priority),
        service: text(&ticket.service),
        sla: text(&ticket.sla),
        customer_id: text(&ticket.customer_id),
        responsible: text(&ticket.responsible),
        responsible_id: ticket.responsible_id.as_ref().and_then(answer::Scalar::id),
        fields,
    }
}

/// The access profile a ticket's profile field names: a text (a dropdown's value) or a list of
/// one; empty, null or a ticket without the field: none (the default profile then).
pub fn profile_of(body: &TicketGet, field: &str) -> anyhow::Result<Option<String>> {
    let ticket = body.tickets.as_deref().and_then(<[_]>::first);
    let value = ticket
        .and_then(|t| t.fields.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|f| f.name.as_ref().and_then(|n| n.string()) == Some(field))
        .map(|f| &f.value);
    let bad = |why: String| fault(Exit::DataErr, format!("field {field}: {why}"));
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.trim().to_string(),
        Some(Value::Array(items)) => match items.as_slice() {
            [] => return Ok(None),
            [Value::String(text)] => text.trim().to_string(),
            _ => return Err(bad("names more than one access profile".into())),
        },
        Some(other) => return Err(bad(format!("unexpected value {other}"))),
    };
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// The VM names in a field's value: text separated by commas, semicolons, white space or new
/// lines, or a JSON array (a multiselect field) whose entries are names. Null means none.
pub fn vm_names(value: &Value) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let name = name.trim();
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    };
    match value {
        Value::Null => {}
        Value::String(text) => text
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .for_each(&mut add),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => add(s),
                    Value::Null => {}
                    other => return Err(format!("unexpected entry {other} in the list")),
                }
            }
        }
        other => return Err(format!("unexpected value {other}")),
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIXTURE_07: &str = r#"{"Ticket":[{"ArchiveFlag":"n","UnlockTimeout":1795448203,"Title":"VM vm-test-01 request","TypeID":1,"DynamicField":[{"Name":"ProcessManagementActivityID","Value":null},{"Value":null,"Name":"ProcessManagementProcessID"},{"Value":"vm-test-01","Name":"VMName"}],"OwnerID":2,"StateType":"new","TicketNumber":"2026112310000011","Lock":"lock","Owner":"agent1","LockID":2,"Queue":"Raw","State":"new","TicketID":2}]}"#;

    #[test]
    fn parses_a_recorded_ticket() {
        let body: TicketGet = serde_json::from_str(FIXTURE_07).expect("json");
        let t = parse_ticket(&body, "VMName").expect("parses");
        assert_eq!(t.id, 2);
        assert_eq!(t.number, "2026112310000011");
        assert!(t.is_locked());
        assert_eq!(t.owner.as_deref(), Some("agent1"));
        assert_eq!(t.vms, ["vm-test-01"]);
    }

    #[test]
    fn a_missing_field_names_the_fields_there_are() {
        let body: TicketGet = serde_json::from_str(FIXTURE_07).expect("json");
        let err = parse_ticket(&body, "VMNames").unwrap_err();
        assert_eq!(crate::error::exit_code(&err), Exit::Config);
        assert!(
            format!("{err}")
                .contains("ProcessManagementActivityID, ProcessManagementProcessID, VMName")
        );
    }

    #[test]
    fn reads_search_answers() {
        let search = |value: Value| parse_search(&serde_json::from_value(value).expect("shape"));
        assert_eq!(
            search(json!({"TicketID": ["2", 7]})).expect("ids"),
            [2, 7].into()
        );
        assert_eq!(search(json!({"TicketID": "9"})).expect("one"), [9].into());
        assert_eq!(search(json!({})).expect("none"), Default::default());
        assert!(search(json!({"TicketID": [{"x": 1}]})).is_err());
        assert!(search(json!({"TicketID": ["-1"]})).is_err());
    }

    #[test]
    fn ids_and_numbers_come_either_way() {
        let body: TicketGet = serde_json::from_value(json!({"Ticket": [{"TicketID": "2",
            "TicketNumber": 2026112310000011_u64, "Lock": "unlock", "Owner": 7,
            "DynamicField": [{"Name": 3, "Value": "x"}, {"Name": "VMName"}],
            "Article": [{"IsVisibleForCustomer": null}]}]}))
        .expect("shape");
        let t = parse_ticket(&body, "VMName").expect("parses");
        assert_eq!((t.id, t.number.as_str()), (2, "2026112310000011"));
        assert!(!t.is_locked());
        assert_eq!(t.owner, None);
        assert!(t.vms.is_empty());
        assert_eq!(t.generation, Some(6));
    }

    #[test]
    fn a_number_or_owner_the_store_could_not_hold_is_refused() {
        let ticket = |number: Value, lock: &str, owner: &str| {
            let body: TicketGet = serde_json::from_value(json!({"Ticket": [{"TicketID": 4,
                "TicketNumber": number, "Lock": lock, "Owner": owner,
                "DynamicField": [{"Name": "VMName", "Value": "web01"}]}]}))
            .expect("shape");
            parse_ticket(&body, "VMName")
        };
        for number in [
            "INC-2026-0001",
            "2026112310000011 ",
            "",
            "１２３",
            &"1".repeat(65),
        ] {
            let err = ticket(json!(number), "lock", "agent1").unwrap_err();
            assert_eq!(crate::error::exit_code(&err), Exit::DataErr, "{number:?}");
            assert!(format!("{err}").contains("is not a ticket number"), "{err}");
            // An unlock as well: such a ticket cannot hold anything.
            assert!(ticket(json!(number), "unlock", "agent1").is_err());
        }
        assert!(ticket(json!("1".repeat(64)), "lock", "agent1").is_ok());
        for owner in ["agent\u{1f}1", "agent\n1", &"a".repeat(257)] {
            let err = ticket(json!("2026112310000011"), "lock", owner).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), Exit::DataErr, "{owner:?}");
            assert!(format!("{err}").contains("is not a login"), "{err}");
            // After an unlock the owner is not used: closing is not refused for it.
            assert!(ticket(json!("2026112310000011"), "unlock", owner).is_ok());
        }
        let t = ticket(json!("2026112310000011"), "lock", "").expect("no owner");
        assert_eq!(t.owner, None);
        assert!(ticket(json!("2026112310000011"), "lock", "Zoë Müller@example").is_ok());
    }

    #[test]
    fn splits_field_values() {
        assert_eq!(vm_names(&json!(null)), Ok(vec![]));
        assert_eq!(vm_names(&json!("  ")), Ok(vec![]));
        assert_eq!(
            vm_names(&json!("web01, db01;app01\nweb01\tcache01")),
            Ok(vec![
                "web01".into(),
                "db01".into(),
                "app01".into(),
                "cache01".into()
            ])
        );
        assert_eq!(
            vm_names(&json!(["web 01", "db01", "web 01"])),
            Ok(vec!["web 01".into(), "db01".into()])
        );
        assert!(vm_names(&json!(42)).is_err());
        assert!(vm_names(&json!([{"x": 1}])).is_err());
    }

    fn reply(status: u16, content_type: &str, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    #[test]
    fn http_200_errors_map_to_exit_codes() {
        let json = "application/json; charset=UTF-8";
        let cases = [
            (
                r#"{"Error":{"ErrorMessage":"TicketGet: Authorization failing!","ErrorCode":"TicketGet.AuthFail"}}"#,
                Exit::NoPerm,
            ),
            (
                r#"{"Error":{"ErrorCode":"TicketGet.AccessDenied","ErrorMessage":"TicketGet: User does not have access to the ticket!"}}"#,
                Exit::DataErr,
            ),
            (
                r#"{"Error":{"ErrorCode":"TicketUpdate.InvalidParameter","ErrorMessage":"x"}}"#,
                Exit::Unavailable,
            ),
        ];
        for (body, exit) in cases {
            let err = answer("TicketGet", "otnsx", &reply(200, json, body)).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), exit, "{body}");
        }
        let denied = answer("TicketGet", "otnsx", &reply(200, json, cases[1].0)).unwrap_err();
        assert!(
            denied
                .to_string()
                .contains("no such ticket, or the API user")
        );
    }

    #[test]
    fn transport_errors_are_explained() {
        let text = answer(
            "TicketGet",
            "otnsx",
            &reply(
                500,
                "text/plain; charset=UTF-8",
                "HTTP::REST Error while determine Operation for request URI '/Nope/2'.",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("determine Operation"), "{text}");
        let html = answer("TicketGet", "otnsx", &reply(500, "text/html", "<html>")).unwrap_err();
        assert!(
            html.to_string()
                .contains("check the web service name in otrs.url")
        );
        assert!(
            answer(
                "TicketGet",
                "otnsx",
                &reply(200, "application/json", "{\"Tick")
            )
            .is_err()
        );
        assert!(answer("TicketGet", "otnsx", &reply(200, "text/html", "<html>")).is_err());
    }

    #[test]
    fn what_a_ticket_says_of_the_work_is_read_by_name() {
        // As TicketGet gives a ticket with a service and an SLA (the keys are there only then),
        // a dropdown, a multiselect, a null and an empty field.
        let body: TicketGet = serde_json::from_value(json!({"Ticket": [{
        "TicketID": 7, "TicketNumber": "2026120610000071", "Lock": "lock", "Owner": "agent1",
        "OwnerID": 2, "Queue": "Change::Approved", "QueueID": 4, "Type": "Change",
        "TypeID": 3, "State": "approved", "StateID": 12, "Priority": "3 normal",
        "Service": "Database", "ServiceID": 2, "SLA": "Gold", "SLAID": 1,
        "CustomerID": "acme", "Responsible": "agent2", "ResponsibleID": 3,
        "DynamicField": [
            {"Name": "VMName", "Value": "db01"},
            {"Name": "ChangeApproval", "Value": "approved"},
            {"Name": "Teams", "Value": ["dba", "ops"]},
            {"Name": "ProcessManagementProcessID", "Value": null},
            {"Name": "Note", "Value": ""}
        ]}]}))
        .unwrap();
        let facts = parse_ticket(&body, "VMName").unwrap().facts;
        assert_eq!(facts.queue.as_deref(), Some("Change::Approved"));
        assert_eq!(facts.kind.as_deref(), Some("Change"));
        assert_eq!(facts.state.as_deref(), Some("approved"));
        assert_eq!(facts.priority.as_deref(), Some("3 normal"));
        assert_eq!(facts.service.as_deref(), Some("Database"));
        assert_eq!(facts.sla.as_deref(), Some("Gold"));
        assert_eq!(facts.customer_id.as_deref(), Some("acme"));
        assert_eq!(facts.responsible.as_deref(), Some("agent2"));
        assert_eq!(facts.responsible_id, Some(3));
        assert_eq!(facts.fields["ChangeApproval"], ["approved"]);
        assert_eq!(facts.fields["Teams"], ["dba", "ops"]);
        assert!(facts.fields["ProcessManagementProcessID"].is_empty());
        assert!(facts.fields["Note"].is_empty());
        // Without a service or an SLA (the keys absent, the ids empty), and an empty customer.
        let body: TicketGet = serde_json::from_value(json!({"Ticket": [{
            "TicketID": 7, "TicketNumber": "2026120610000071", "Lock": "unlock",
            "ServiceID": "", "SLAID": "", "CustomerID": "",
            "DynamicField": [{"Name": "VMName", "Value": null}]}]}))
        .unwrap();
        let facts = parse_ticket(&body, "VMName").unwrap().facts;
        assert_eq!(
            (facts.service, facts.sla, facts.customer_id),
            (None, None, None)
        );
    }
}
