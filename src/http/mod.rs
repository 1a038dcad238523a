//! What every API client shares: one `ureq::Agent` per service, the run's deadline applied to
//! every request, bounded retries of transient failures, capped answer sizes, no redirects, and
//! transport failures turned into errors that name the service and the URL.

use std::time::{Duration, Instant};

pub mod pages;
pub mod pin;

pub use crate::encoding::{basic_auth_value, encode, query};
pub use crate::error::{Kind, ServiceError};

use ureq::http::{Method, Request};
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use ureq::{Agent, RequestExt};

use crate::config::{Endpoint, Secret};
use crate::deadline::Deadline;
use crate::error::{Exit, fault};

/// The largest answer any service may send; anything larger is an error, never a truncation.
/// NSX's largest pages (1,000 VMs or rules) are 1 to 3 MiB.
pub const MAX_BODY: u64 = 8 << 20;

/// The most values (JSON) or elements (XML) one answer may hold: parsed, each takes up to a
/// hundred bytes or so whatever its size in the answer (`[0,0,...]`, `<a/><a/>...`), so this,
/// not only the size, bounds what parsing an answer takes (some 20 MiB at most). A page of
/// 1,000 VMs holds some 50,000.
pub const MAX_VALUES: usize = 200_000;

/// No single request may take longer than this, so that a retry still fits in the deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many tries of one request (the first one included).
const MAX_TRIES: u32 = 4;

/// One request, relative to the service's base URL.
#[derive(Clone)]
pub struct Call {
    pub method: Method,
    /// Path and query, already percent-encoded (see [`encode`]).
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<(&'static str, Vec<u8>)>,
    /// Whether a transient failure (429, 500, 502, 503, 504, a dropped connection) may be retried.
    /// True for reads and for writes that are idempotent.
    pub retry: bool,
}

impl Call {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Call {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
            retry: true,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Not retried: for writes that must not happen twice (a ticket note).
    pub fn once(mut self) -> Self {
        self.retry = false;
        self
    }

    pub fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, body));
        self
    }
}

/// A complete answer (any status: the client decides what a status means).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type without parameters, lower case: `application/json`.
    pub fn media_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON of type `T`; an answer that is not JSON, or not that shape, is an
    /// error naming `service` (exit 69).
    pub fn json<T: serde::de::DeserializeOwned>(&self, service: &str) -> anyhow::Result<T> {
        let media = self.media_type();
        if media != "application/json" {
            return Err(ServiceError::malformed(format!(
                "{service} answered {media:?} instead of JSON (HTTP {}): {}",
                self.status,
                self.snippet()
            )));
        }
        serde_json::from_str(&self.body).map_err(|e| {
            ServiceError::malformed(format!("{service} answered unexpected JSON: {e}"))
        })
    }

    /// The start of the body, on one line, for error messages: a server that echoes the
    /// request must not carry a password into any message (every output scrubs again).
    pub fn snippet(&self) -> String {
        let body = crate::secrets::scrub(&self.body);
        let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        match one_line.char_indices().nth(200) {
            Some((cut, _)) => format!("{}...", &one_line[..cut]),
            None => one_line,
        }
    }
}

pub struct Http {
    agent: Agent,
    /// The service's name in messages: "help desk", "vCenter", "NSX".
    pub service: &'static str,
    /// Its configuration section: "otrs", "vcenter", "nsx".
    key: &'static str,
    pub base: String,
    deadline: Deadline,
    verbose: bool,
    /// Whether a connection closed without an answer is worth another try.
    retry_dropped: bool,
    /// What to add to the message of a connection closed without an answer.
    dropped_hint: &'static str,
    /// An error answer that another try cannot change (the help desk's missing route).
    permanent: fn(&Reply) -> bool,
    /// The client certificate this client logs in with, for messages.
    client_cert: Option<std::path::PathBuf>,
}

impl Http {
    pub fn new(
        service: &'static str,
        endpoint: &Endpoint,
        deadline: Deadline,
        verbose: bool,
    ) -> anyhow::Result<Self> {
        // The system's trust store by default (corporate CAs installed there just work), or
        // exactly the CAs of ca_file.
        let roots = match &endpoint.tls.ca_file {
            Some(ca_file) => read_ca_file(service, ca_file)?,
            None => RootCerts::PlatformVerifier,
        };
        let mut tls = TlsConfig::builder().root_certs(roots);
        if endpoint.tls.insecure {
            errln!(
                "otnsx: warning: TLS verification for the {service} ({}) is off (insecure = true)",
                endpoint.url
            );
            tls = tls.disable_verification(true);
        }
        let client = endpoint.client.as_ref().map(client_cert).transpose()?;
        if let Some(client) = &client {
            tls = tls.client_cert(Some(client.clone()));
        }
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("otnsx/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .proxy(proxy_from_env())
            // Smaller than ureq's 128 KiB each: requests made at once each hold a connection,
            // and the answers' headers fit in 64 KiB (the most ureq takes anyway).
            .input_buffer_size(64 * 1024)
            .output_buffer_size(16 * 1024)
            // Connections made for requests at once are kept for the next ones.
            .max_idle_connections_per_host(crate::parallel::PER_SERVICE)
            .build();
        let agent = match endpoint.tls.pin {
            None => config.new_agent(),
            Some(pin) => {
                use ureq::unversioned::resolver::DefaultResolver;
                use ureq::unversioned::transport::{
                    ConnectProxyConnector, Connector, TcpConnector,
                };
                let tls = crate::http::pin::PinnedTls::new(pin, client.as_ref()).map_err(|e| {
                    fault(
                        Exit::Config,
                        format!("{service}: TLS set-up for tls_sha256: {e}"),
                    )
                })?;
                let connector =
                    ().chain(ConnectProxyConnector::default())
                        .chain(TcpConnector::default())
                        .chain(tls);
                Agent::with_parts(config, connector, DefaultResolver::default())
            }
        };
        let key = match service {
            "help desk" => "otrs",
            "vCenter" => "vcenter",
            _ => "nsx",
        };
        Ok(Http {
            agent,
            key,
            service,
            base: endpoint.url.clone(),
            deadline,
            verbose,
            retry_dropped: true,
            dropped_hint: "",
            permanent: |_| false,
            client_cert: endpoint.client.as_ref().map(|c| c.cert_path.clone()),
        })
    }

    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Sends `call`, retrying transient failures (see [`Http::send_with`]). Returns the answer
    /// whatever its status; fails only when no answer could be had.
    pub fn send(&self, call: &Call) -> anyhow::Result<Reply> {
        self.send_with(call, self.deadline, &mut |_, _| false)
    }

    /// [`Http::send`] bounded by another deadline: for clean-up that must be tried even when
    /// the run's deadline has passed (logging out of vCenter), or for reads that must leave
    /// part of the deadline to closing (the help desk's).
    pub fn send_by(&self, call: &Call, deadline: Deadline) -> anyhow::Result<Reply> {
        self.send_with(call, deadline, &mut |_, _| false)
    }

    /// The one retry loop: at most [`MAX_TRIES`] attempts of one request, every wait within
    /// `deadline`. Retried: a dropped connection or timeout before the deadline (for a call
    /// that may be repeated), HTTP 429, 500, 502, 503 and 504 (honouring `Retry-After` when it
    /// fits the deadline), and whatever answer the client's `also` says is worth another try
    /// (NSX-V error 101, NSX-T error 607, an expired session); `also` may change the call
    /// for the next attempt (a renewed session's credentials). What `also` accepts is retried
    /// even for a call marked [`Call::once`]: such an answer proves nothing was done.
    pub fn send_with(
        &self,
        call: &Call,
        deadline: Deadline,
        also: &mut dyn FnMut(&Reply, &mut Call) -> bool,
    ) -> anyhow::Result<Reply> {
        let mut call = call.clone();
        let mut tries = 0;
        loop {
            tries += 1;
            let started = Instant::now();
            let outcome = self.send_once(&call, deadline);
            if self.verbose {
                let status = match &outcome {
                    Ok(reply) => reply.status.to_string(),
                    Err(Failure::Deadline) => "deadline reached".to_string(),
                    Err(
                        Failure::Certificate(why)
                        | Failure::Transient(why)
                        | Failure::Dropped(why)
                        | Failure::Permanent(why),
                    ) => format!("failed ({why})"),
                };
                errln!(
                    "otnsx: {} {} {} -> {status} ({} ms)",
                    self.service,
                    call.method,
                    redact_query(&call.path),
                    started.elapsed().as_millis()
                );
            }
            let wait = match &outcome {
                Ok(reply)
                    if matches!(reply.status, 429 | 500 | 502 | 503 | 504)
                        && call.retry
                        && !(self.permanent)(reply) =>
                {
                    retry_after(reply, tries)
                }
                Ok(reply) if !reply.is_success() && also(reply, &mut call) => {
                    retry_after(reply, tries)
                }
                Err(Failure::Transient(_)) if call.retry => backoff(tries),
                Err(Failure::Dropped(_)) if call.retry && self.retry_dropped => backoff(tries),
                _ => return outcome.map_err(|f| self.failure(&call, f)),
            };
            if tries >= MAX_TRIES || wait >= deadline.remaining() {
                return outcome.map_err(|f| self.failure(&call, f));
            }
            deadline.sleep(wait);
        }
    }

    /// The help desk drops the connection without an answer for a wrong web service name
    /// (Znuny 7, OTRS 6 under mod_perl): another try gives the same, so it is not retried.
    pub fn no_retry_when_dropped(mut self, hint: &'static str) -> Self {
        self.retry_dropped = false;
        self.dropped_hint = hint;
        self
    }

    /// Answers that `permanent` accepts are never retried, whatever their status.
    pub fn permanent_when(mut self, permanent: fn(&Reply) -> bool) -> Self {
        self.permanent = permanent;
        self
    }

    fn send_once(&self, call: &Call, deadline: Deadline) -> Result<Reply, Failure> {
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(Failure::Deadline);
        }
        let url = format!("{}{}", self.base, call.path);
        let mut request = Request::builder().method(call.method.clone()).uri(&url);
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        let (content_type, body) = call.body.clone().unwrap_or(("", Vec::new()));
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(body)
            .map_err(|e| Failure::Permanent(format!("building the request: {e}")))?;
        let timeout = left.min(REQUEST_TIMEOUT);
        let mut response = request
            .with_agent(&self.agent)
            .configure()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .allow_non_standard_methods(true)
            .run()
            .map_err(|e| classify(e, timeout == left))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| classify(e, timeout == left))?;
        if values(&bytes) > MAX_VALUES {
            return Err(Failure::Permanent(format!(
                "the answer holds more than {MAX_VALUES} JSON values or XML elements"
            )));
        }
        let body = String::from_utf8(bytes)
            .map_err(|_| Failure::Permanent("the answer is not UTF-8 text".into()))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn failure(&self, call: &Call, failure: Failure) -> anyhow::Error {
        let url = format!("{}{}", self.base, redact_query(&call.path));
        let service = self.service;
        match failure {
            Failure::Deadline => ServiceError::of(
                Kind::Deadline,
                format!(
                    "{service}: no answer from {url} within the run's deadline (raise `deadline` if the service is just slow)"
                ),
            ),
            Failure::Certificate(why) => {
                let key = self.key;
                ServiceError::of(
                    Kind::Certificate,
                    format!(
                        "{service}: {}: {why}; set {key}.ca_file to the CA that signed it, or pin it with {key}.tls_sha256",
                        self.base
                    ),
                )
            }
            Failure::Transient(why) | Failure::Permanent(why) => {
                // A handshake the server broke off may be its refusal of our certificate.
                let hint = match &self.client_cert {
                    Some(cert)
                        if ["TLS", "alert", "certificate"]
                            .iter()
                            .any(|w| why.contains(w)) =>
                    {
                        format!(
                            "; the server may have refused the client certificate {}: check that NSX trusts the CA that signed it",
                            cert.display()
                        )
                    }
                    _ => String::new(),
                };
                ServiceError::of(
                    Kind::NoAnswer,
                    format!("{service}: {} {url}: {why}{hint}", call.method),
                )
            }
            Failure::Dropped(why) => ServiceError::of(
                Kind::NoAnswer,
                format!(
                    "{service}: {} {url}: {why}{}",
                    call.method, self.dropped_hint
                ),
            ),
        }
    }
}

/// At least as many as the JSON values or XML elements `body` may hold: every value but the
/// first follows a `,` or `:` or opens a container, every element opens with `<`.
fn values(body: &[u8]) -> usize {
    body.iter()
        .filter(|b| matches!(b, b',' | b':' | b'[' | b'{' | b'<'))
        .count()
        + 1
}

/// The client certificate chain and key of `identity`, as ureq takes them (checked at loading,
/// so a failure here is a file changed since).
fn client_cert(identity: &crate::config::ClientIdentity) -> anyhow::Result<ureq::tls::ClientCert> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(identity.cert_pem.as_bytes()).filter_map(Result::ok) {
        if let PemItem::Certificate(cert) = item {
            certs.push(cert);
        }
    }
    let key = ureq::tls::parse_pem(identity.key_pem.expose().as_bytes())
        .filter_map(Result::ok)
        .find_map(|item| match item {
            PemItem::PrivateKey(key) => Some(key),
            _ => None,
        });
    match (certs.is_empty(), key) {
        (false, Some(key)) => Ok(ureq::tls::ClientCert::new_with_certs(&certs, key)),
        _ => Err(fault(
            Exit::Config,
            format!(
                "nsx.client_cert: {} and its key are not a PEM certificate and private key",
                identity.cert_path.display()
            ),
        )),
    }
}

/// The proxy the environment names, except `HTTP_PROXY` when the help desk runs otnsx as a CGI
/// child: there any web client can set it with a `Proxy:` request header ("httpoxy"), and would
/// receive the services' credentials.
fn proxy_from_env() -> Option<ureq::Proxy> {
    let proxy = ureq::Proxy::try_from_env()?;
    let under_cgi = ["REQUEST_METHOD", "GATEWAY_INTERFACE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    let only_http_proxy = ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"]
        .iter()
        .all(|v| std::env::var_os(v).is_none());
    if under_cgi && only_http_proxy {
        return None;
    }
    Some(proxy)
}

enum Failure {
    /// The deadline ran out.
    Deadline,
    /// The server's certificate was not accepted.
    Certificate(String),
    /// Worth another try: the connection failed, or timed out before the deadline.
    Transient(String),
    /// The server closed the connection without answering.
    Dropped(String),
    /// Not worth another try.
    Permanent(String),
}

fn classify(err: ureq::Error, deadline_bound: bool) -> Failure {
    use ureq::Error as E;
    if let Some(reason) = tls_reason(&err.to_string()) {
        return Failure::Certificate(reason);
    }
    match err {
        E::Timeout(_) if deadline_bound => Failure::Deadline,
        E::Timeout(t) => Failure::Transient(format!("timed out ({t})")),
        E::ConnectionFailed => Failure::Transient("connection refused or failed".into()),
        E::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Failure::Dropped("the server closed the connection without an answer".into())
        }
        E::Io(e) => Failure::Transient(e.to_string()),
        E::HostNotFound => Failure::Permanent("host name does not resolve (check url)".into()),
        E::BodyExceedsLimit(_) => {
            Failure::Permanent(format!("the answer is larger than {} MiB", MAX_BODY >> 20))
        }
        E::Tls(why) => Failure::Permanent(format!("TLS failed: {why}")),
        other => Failure::Permanent(other.to_string()),
    }
}

/// Why the server's certificate was refused, in words, from rustls's error text.
fn tls_reason(text: &str) -> Option<String> {
    if !text.contains("certificate") {
        return None;
    }
    if let Some(at) = text.find("PinMismatch: ") {
        let rest = &text[at + "PinMismatch: ".len()..];
        return Some(format!(
            "pin mismatch: {}",
            rest.trim_end_matches([')', '"'])
        ));
    }
    let reason = if text.contains("UnknownIssuer") {
        "unknown issuer: no CA this machine trusts signed it"
    } else if text.contains("Expired") {
        "expired"
    } else if text.contains("NotValidYet") {
        "not valid yet (check this machine's clock)"
    } else if text.contains("NotValidForName") {
        "name mismatch: it is not for this host name"
    } else if text.contains("Revoked") {
        "revoked"
    } else {
        text
    };
    Some(format!(
        "the server's TLS certificate was refused: {reason}"
    ))
}

/// How long to wait before the next try: the server's `Retry-After` (in seconds) if it gave
/// one, else [`backoff`].
fn retry_after(reply: &Reply, tries: u32) -> Duration {
    reply
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or_else(|| backoff(tries), Duration::from_secs)
}

/// Exponential backoff with jitter: about 200 ms, 400 ms, 800 ms, ... at most about 3 s.
fn backoff(tries: u32) -> Duration {
    let base = 200u64 << tries.saturating_sub(1).min(4);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

/// `Authorization` header value for HTTP basic auth.
pub fn basic_auth(user: &str, password: &Secret) -> String {
    format!("Basic {}", basic_auth_value(user, password.expose()))
}

/// Hides query values that are credentials, for messages and `--verbose`.
fn redact_query(path: &str) -> String {
    let Some((head, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if ["SessionID", "Password", "UserLogin"].contains(&k) => {
                format!("{k}=(redacted)")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

fn read_ca_file(service: &str, path: &std::path::Path) -> anyhow::Result<RootCerts> {
    let pem = std::fs::read(path).map_err(|e| {
        fault(
            Exit::Config,
            format!("{service}: cannot read ca_file {}: {e}", path.display()),
        )
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let Ok(PemItem::Certificate(cert)) = item {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(fault(
            Exit::Config,
            format!(
                "{service}: ca_file {} holds no PEM certificate",
                path.display()
            ),
        ));
    }
    Ok(RootCerts::new_with_certs(&certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc7617s_example() {
        assert_eq!(
            basic_auth_value("Aladdin", "open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth_value("a", "ü"), "YTrDvA==");
    }

    #[test]
    fn encodes_every_reserved_character() {
        assert_eq!(
            encode("web 01&x=#%+/;'\"Büro"),
            "web%2001%26x%3D%23%25%2B%2F%3B%27%22B%C3%BCro"
        );
        assert_eq!(encode("vm-42_a.b~"), "vm-42_a.b~");
        assert_eq!(query([("names", "a b"), ("x", "1")]), "?names=a%20b&x=1");
    }

    #[test]
    fn values_are_counted_high_never_low() {
        assert_eq!(values(b"0"), 1);
        assert!(values(br#"[0,0,0]"#) >= 3);
        assert!(values(br#"{"a":[{},{}],"b":"x"}"#) >= 6);
        assert!(values(b"<a><b/><b/></a>") >= 3);
    }

    #[test]
    fn credentials_are_redacted_from_paths() {
        assert_eq!(
            redact_query("/Ticket/2?SessionID=abc&DynamicFields=1"),
            "/Ticket/2?SessionID=(redacted)&DynamicFields=1"
        );
    }
}
