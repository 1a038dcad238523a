//! A small HTTP/1.1 server for the fakes: 127.0.0.1 on a free port, a thread per connection,
//! keep-alive, every request recorded. Nothing here knows any API; the fakes route.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// The raw query string, without `?`.
    pub raw_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client certificate the TLS client presented (DER), if any.
    pub client_cert: Option<Vec<u8>>,
}

/// A connection's stream, and the certificate its client presented, if it is TLS.
trait Peer: Read + Write {
    fn client_cert(&self) -> Option<Vec<u8>> {
        None
    }
}

impl Peer for std::net::TcpStream {}

impl Peer for rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream> {
    fn client_cert(&self) -> Option<Vec<u8>> {
        Some(self.conn.peer_certificates()?.first()?.as_ref().to_vec())
    }
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The query's pairs, split on `&` and `;`, `+` read as a space, percent-decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        self.raw_query
            .split(['&', ';'])
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
            })
            .collect()
    }

    pub fn query_all(&self, key: &str) -> Vec<String> {
        self.query()
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    }

    pub fn query_value(&self, key: &str) -> Option<String> {
        self.query_all(key).into_iter().next()
    }

    pub fn media_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `METHOD /path?query` as sent.
    pub fn line(&self) -> String {
        if self.raw_query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.raw_query)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (a slow or hung server).
    pub delay: Duration,
    /// Send the body one byte per second.
    pub trickle: bool,
    /// Announce the whole body but send only this many bytes of it, then hang up.
    pub truncate: Option<usize>,
    /// Close the connection without answering at all (Znuny 7 for a wrong web service name).
    pub hang_up: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        let mut headers = Vec::new();
        if !content_type.is_empty() {
            headers.push(("Content-Type".to_string(), content_type.to_string()));
        }
        Response {
            status,
            headers,
            body: body.into(),
            delay: Duration::ZERO,
            trickle: false,
            truncate: None,
            hang_up: false,
        }
    }

    /// No answer: the connection is closed after the request was read.
    pub fn hang_up() -> Self {
        Response {
            hang_up: true,
            ..Response::empty(500)
        }
    }

    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status, "application/json", body)
    }

    pub fn empty(status: u16) -> Self {
        Response::new(status, "", Vec::new())
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn trickled(mut self) -> Self {
        self.trickle = true;
        self
    }

    pub fn truncated(mut self, at: usize) -> Self {
        self.truncate = Some(at);
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

pub struct Server {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    net: Arc<Net>,
}

/// What the network around a server does and saw: a delay before every answer (a round trip
/// for the benchmark), the connections accepted, and when each request came and was answered.
#[derive(Default)]
struct Net {
    delay_us: std::sync::atomic::AtomicU64,
    connections: std::sync::atomic::AtomicUsize,
    spans: Mutex<Vec<(std::time::Instant, std::time::Instant)>>,
    /// Whether requests that change something (any method but GET) wait before they are
    /// handled, and how many wait now (see [`Server::hold_writes`]).
    hold: Mutex<(bool, usize)>,
    held: Condvar,
}

/// While it lives, the server's requests that change something wait before they are handled;
/// dropped, they go on. A test disturbs what a run depends on at the moment the run is
/// inside such a request, whatever the machine's load.
pub struct Hold<'a> {
    net: &'a Net,
}

impl Hold<'_> {
    /// Waits (at most 10 s) until a request is held.
    pub fn wait_for_request(&self) {
        let hold = self.net.hold.lock().expect("hold");
        let (hold, timeout) = self
            .net
            .held
            .wait_timeout_while(hold, Duration::from_secs(10), |(_, waiting)| *waiting == 0)
            .expect("hold");
        assert!(
            !timeout.timed_out() || hold.1 > 0,
            "no request came to be held"
        );
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.net.hold.lock().unwrap_or_else(|e| e.into_inner()).0 = false;
        self.net.held.notify_all();
    }
}

impl Server {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
        Server::start_with(handler, None)
    }

    /// The same server speaking HTTPS with this rustls configuration.
    pub fn start_tls(
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
        tls: Arc<rustls::ServerConfig>,
    ) -> Server {
        Server::start_with(handler, Some(tls))
    }

    fn start_with(
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log2 = Arc::clone(&log);
        let net = Arc::new(Net::default());
        let net2 = Arc::clone(&net);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_nodelay(true);
                net2.connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log2);
                let net = Arc::clone(&net2);
                let tls = tls.clone();
                thread::spawn(move || match tls {
                    None => serve_connection(stream, &handler, &log, &net),
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let stream = rustls::StreamOwned::new(conn, stream);
                        serve_connection(stream, &handler, &log, &net);
                    }
                });
            }
        });
        Server { addr, log, net }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("log").clone()
    }

    pub fn clear_log(&self) {
        self.log.lock().expect("log").clear();
        self.net.spans.lock().expect("spans").clear();
    }

    /// Waits this long before every answer, as a network round trip would.
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.net
            .delay_us
            .store(us, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds every request but GET before it is handled, until the guard is dropped.
    pub fn hold_writes(&self) -> Hold<'_> {
        self.net.hold.lock().expect("hold").0 = true;
        Hold { net: &self.net }
    }

    /// The connections accepted so far.
    pub fn connections(&self) -> usize {
        self.net
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// When each request since the last [`Server::clear_log`] arrived and was answered.
    pub fn spans(&self) -> Vec<(std::time::Instant, std::time::Instant)> {
        self.net.spans.lock().expect("spans").clone()
    }
}

fn serve_connection(stream: impl Peer, handler: &Handler, log: &Mutex<Vec<Request>>, net: &Net) {
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(r)) => Request {
                client_cert: reader.get_ref().client_cert(),
                ..r
            },
            Ok(None) => return,
            Err(why) => {
                let _ = write_response(reader.get_mut(), &Response::new(400, "text/plain", why));
                return;
            }
        };
        let arrived = std::time::Instant::now();
        log.lock().expect("log").push(request.clone());
        if request.method != "GET" {
            let mut hold = net.hold.lock().expect("hold");
            if hold.0 {
                hold.1 += 1;
                net.held.notify_all();
                hold = net.held.wait_while(hold, |(on, _)| *on).expect("hold");
                hold.1 -= 1;
            }
        }
        let response = handler(&request);
        let delay = net.delay_us.load(std::sync::atomic::Ordering::SeqCst);
        let delay = response.delay + Duration::from_micros(delay);
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        if response.hang_up {
            return;
        }
        let written = write_response(reader.get_mut(), &response);
        net.spans
            .lock()
            .expect("spans")
            .push((arrived, std::time::Instant::now()));
        let close = response
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        if written.is_err() || response.truncate.is_some() || close {
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, String> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {line:?}"));
    };
    if version != "HTTP/1.1" {
        return Err(format!("unsupported version {version}"));
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).map_err(|e| e.to_string())?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').ok_or("bad header")?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if header("transfer-encoding").is_some() {
        return Err("chunked request bodies are not accepted here".into());
    }
    let length: usize = header("content-length")
        .map_or(Ok(0), |v| v.parse())
        .map_err(|_| "bad length")?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method: method.to_string(),
        path: decode(path),
        raw_query: raw_query.to_string(),
        headers,
        body,
        client_cert: None,
    }))
}

fn write_response(writer: &mut impl Write, response: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if response.status != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    // The fake's own Connection header, unless it answers as a server that says otherwise.
    if !response
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    let body = match response.truncate {
        Some(at) => &response.body[..at.min(response.body.len())],
        None => &response.body[..],
    };
    if response.trickle {
        writer.write_all(head.as_bytes())?;
        for byte in body {
            writer.write_all(&[*byte])?;
            writer.flush()?;
            thread::sleep(Duration::from_secs(1));
        }
    } else {
        // One write: head and body in separate small segments would meet Nagle's algorithm
        // and the client's delayed ACK, and every answer would take 40 ms.
        let mut whole = head.into_bytes();
        whole.extend_from_slice(body);
        writer.write_all(&whole)?;
    }
    writer.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes HTTP basic auth: `(user, password)`.
pub fn basic_auth(request: &Request) -> Option<(String, String)> {
    let value = request.header("authorization")?.strip_prefix("Basic ")?;
    let decoded = base64_decode(value.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
