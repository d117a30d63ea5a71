//! Shared test harness: a recording webhook sink, temp data dirs, a config/flow writer that
//! starts an in-process `hookflow::Service`, and small HTTP helpers around one ureq agent.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use serde_json::{Value, json};

/// The admin key every test config accepts (stored in the config as its sha256 digest).
pub const ADMIN_KEY: &str = "it-admin-key-5b1f0c9e";
/// URL token of the endpoint named `main` in [`config`].
pub const TOKEN: &str = "main-token-0123456789abcdef";
/// How long a test waits for something the server should do promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// `sha256:<hex>` of a key, the form configs hold.
pub fn key_digest(key: &str) -> String {
    format!("sha256:{}", hookflow::hex(&hookflow::crypto::sha256(key.as_bytes())))
}

// ---------------------------------------------------------------------------------------------
// Temp dirs

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("hookflow-it-{name}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Recording sink

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body as received.
    pub raw: String,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The status the sink answered.
    pub answered: u16,
}

impl Hit {
    /// A request header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// `X-Hookflow-Seq` as a number (panics when missing or not a number).
    pub fn seq(&self) -> u64 {
        let v = self.header("X-Hookflow-Seq").unwrap_or_else(|| panic!("no X-Hookflow-Seq header in {self:?}"));
        v.parse().unwrap_or_else(|_| panic!("X-Hookflow-Seq is not a number: {v:?}"))
    }

    /// `AIOutput.text`.
    pub fn text(&self) -> &str {
        self.body["AIOutput"]["text"].as_str().unwrap_or_else(|| panic!("no AIOutput.text in {}", self.raw))
    }

    /// `AIOutput.traceId`.
    pub fn trace_id(&self) -> &str {
        self.body["AIOutput"]["traceId"].as_str().unwrap_or_else(|| panic!("no AIOutput.traceId in {}", self.raw))
    }

    pub fn session_id(&self) -> &str {
        self.body["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {}", self.raw))
    }

    pub fn user_id(&self) -> &str {
        self.body["userId"].as_str().unwrap_or_else(|| panic!("no userId in {}", self.raw))
    }
}

/// While not `open`, the sink records a request and then holds its answer, except for `passes`
/// more requests (`Sink::release_one`).
struct Gate {
    open: bool,
    passes: usize,
}

struct SinkControl {
    /// Answer when the script is empty.
    status: AtomicU16,
    /// Statuses to answer first, in order.
    script: Mutex<VecDeque<u16>>,
    /// Whether held requests are answered.
    gate: Mutex<Gate>,
    cv: Condvar,
    stop: AtomicBool,
    /// Requests answered so far.
    responded: AtomicUsize,
    /// The body of every answer.
    answer: Mutex<String>,
}

/// A webhook receiver on 127.0.0.1: records every request into a channel and answers a
/// configurable status.
pub struct Sink {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    pub rx: Receiver<Hit>,
    control: Arc<SinkControl>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink answering 200.
    pub fn new() -> Sink {
        Sink::with_status(200)
    }

    /// A sink answering `status` to everything (until changed).
    pub fn with_status(status: u16) -> Sink {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the sink"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let control = Arc::new(SinkControl {
            status: AtomicU16::new(status),
            script: Mutex::new(VecDeque::new()),
            gate: Mutex::new(Gate { open: true, passes: 0 }),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            responded: AtomicUsize::new(0),
            answer: Mutex::new(String::new()),
        });
        let (tx, rx) = unbounded();
        let (s, c) = (server.clone(), control.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sink-{port}"))
            .spawn(move || sink_loop(&s, &c, &tx))
            .expect("spawn the sink");
        Sink { url: format!("http://127.0.0.1:{port}/hook"), rx, control, server, thread: Some(thread) }
    }

    /// Answer `status` from now on (after any scripted statuses).
    pub fn set_status(&self, status: u16) {
        self.control.status.store(status, Ordering::SeqCst);
    }

    /// Answer with this body from now on (empty at first).
    pub fn set_answer(&self, body: &str) {
        *self.control.answer.lock().unwrap() = body.to_owned();
    }

    /// Answer these statuses to the next requests, then the default one.
    pub fn script(&self, statuses: &[u16]) {
        self.control.script.lock().unwrap().extend(statuses);
    }

    /// Hold every answer (the request is still recorded at once) until [`Sink::release`].
    pub fn hold(&self) {
        self.control.gate.lock().unwrap().open = false;
    }

    /// Let one held (or the next) request be answered; the sink stays closed for the rest.
    pub fn release_one(&self) {
        self.control.gate.lock().unwrap().passes += 1;
        self.control.cv.notify_all();
    }

    /// Let held and future requests be answered.
    pub fn release(&self) {
        self.control.gate.lock().unwrap().open = true;
        self.control.cv.notify_all();
    }

    /// How many requests have been answered (a held one is not, until released).
    pub fn responded(&self) -> usize {
        self.control.responded.load(Ordering::SeqCst)
    }

    /// The next request, or panics after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Hit {
        recv_n(&self.rx, 1, timeout).remove(0)
    }

    /// The next `n` requests, or panics after `timeout` (for all of them).
    pub fn recv_n(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        recv_n(&self.rx, n, timeout)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.release();
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sink_loop(server: &tiny_http::Server, control: &SinkControl, tx: &Sender<Hit>) {
    loop {
        let mut req = match server.recv() {
            Ok(r) => r,
            Err(_) if control.stop.load(Ordering::SeqCst) => return,
            Err(_) => continue,
        };
        let mut raw = String::new();
        let _ = req.as_reader().read_to_string(&mut raw);
        let headers =
            req.headers().iter().map(|h| (h.field.as_str().as_str().to_owned(), h.value.as_str().to_owned())).collect();
        let answered =
            control.script.lock().unwrap().pop_front().unwrap_or_else(|| control.status.load(Ordering::SeqCst));
        let hit = Hit {
            method: req.method().as_str().to_owned(),
            path: req.url().to_owned(),
            headers,
            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
            answered,
        };
        let _ = tx.send(hit);
        {
            let mut gate = control.gate.lock().unwrap();
            while !gate.open && gate.passes == 0 {
                gate = control.cv.wait(gate).unwrap();
            }
            if !gate.open {
                gate.passes -= 1;
            }
        }
        let body = control.answer.lock().unwrap().clone();
        let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(answered));
        control.responded.fetch_add(1, Ordering::SeqCst);
    }
}

/// The next `n` items of `rx`, waiting at most `timeout` in total; panics with what arrived.
pub fn recv_n(rx: &Receiver<Hit>, n: usize, timeout: Duration) -> Vec<Hit> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match rx.recv_deadline(deadline) {
            Ok(hit) => out.push(hit),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                let texts: Vec<String> = out.iter().rev().take(5).map(|h| h.raw.clone()).collect();
                panic!("expected {n} webhook requests within {timeout:?}, got {} (last ones: {texts:?})", out.len());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Configs and the in-process service

/// The echo Flow: one output per message, the message's text.
pub fn echo_flow() -> Value {
    json!({ "name": "echo", "nodes": [ { "type": "say", "text": "{{input.text}}" } ] })
}

/// Echoes the text; when `data.spin` is "yes", then loops until `limits.maxNodesPerTurn` stops
/// the turn, which makes the turn take CPU time in proportion to that limit.
pub fn spin_flow() -> Value {
    json!({
        "name": "spin",
        "nodes": [
            { "type": "say", "text": "{{input.text}}" },
            { "type": "if", "condition": "input.data.spin == 'yes'", "then": [
                { "id": "spin", "type": "setContext", "key": "n", "value": "{{input.text}}" },
                { "type": "goTo", "target": "spin" }
            ] }
        ]
    })
}

/// An endpoint entry using `flow.json`.
pub fn endpoint(name: &str, token: &str, webhook_url: &str) -> Value {
    json!({ "name": name, "urlToken": token, "flow": "flow.json", "webhook": { "url": webhook_url } })
}

/// A config with one endpoint `main` (token [`TOKEN`], flow `flow.json`), listening on a free
/// port, data in `./data`, two workers, the test admin key, and fast retries.
pub fn config(webhook_url: &str) -> Value {
    json!({
        "listen": "127.0.0.1:0",
        "dataDir": "./data",
        "workers": 2,
        "adminKeys": [key_digest(ADMIN_KEY)],
        "delivery": { "retrySchedule": [0.05, 0.1], "drainSeconds": 0, "timeoutMs": 5000 },
        "endpoints": [endpoint("main", TOKEN, webhook_url)]
    })
}

/// The store a test's config gets when it names none. This is the one line to change to run
/// every integration test on another backend through the store seam; `HOOKFLOW_IT_STORE=postgres`
/// does the same without an edit (a fresh database on the test process's throwaway server).
pub fn default_store() -> Backend {
    match std::env::var("HOOKFLOW_IT_STORE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("HOOKFLOW_IT_STORE={other:?}: expected sqlite or postgres"),
    }
}

/// The store backends the integration tests can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `config` on SQLite whatever [`default_store`] says: for a test of SQLite itself (its file and
/// lock in the data directory, commits made by the thread at hand, a lane that writes down
/// after sending), or of a SQLite store being copied.
pub fn on_sqlite(mut config: Value) -> Value {
    config["store"] = json!({ "type": "sqlite" });
    config
}

/// `config` with the default store filled in when it names none (see [`default_store`]). A
/// config written again into the same directory (a restart with changes) keeps its database.
fn with_default_store(dir: &Path, config: &Value) -> Value {
    static DATABASES: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
    let mut config = config.clone();
    if default_store() == Backend::Postgres && config.get("store").is_none() {
        let mut dbs = DATABASES.lock().unwrap();
        let db = match dbs.iter().find(|(d, _)| d == dir) {
            Some((_, db)) => db.clone(),
            None => {
                let db = crate::pgserver::fresh_db("it");
                dbs.push((dir.to_owned(), db.clone()));
                db
            }
        };
        config["store"] = json!({ "type": "postgres", "url": db, "tls": "disable", "leaseSeconds": 3 });
    }
    config
}

/// Writes `hookflow.json` and the flow files into `dir`; returns the config path.
pub fn write_files(dir: &Path, config: &Value, flows: &[(&str, &Value)]) -> PathBuf {
    let config = &with_default_store(dir, config);
    for (name, flow) in flows {
        std::fs::write(dir.join(name), serde_json::to_string_pretty(flow).unwrap()).expect("write a flow");
    }
    let path = dir.join("hookflow.json");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).expect("write the config");
    path
}

/// Parses the config file at `path` with `env` for `${NAME}`.
pub fn load(path: &Path, env: &[(&str, &str)]) -> hookflow::Config {
    let text = std::fs::read_to_string(path).expect("read the config");
    let vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    hookflow::config::parse(&text, path, &lookup).unwrap_or_else(|e| panic!("the test config is invalid:\n{e}"))
}

/// A running in-process hookflow with its own temp dir.
pub struct App {
    /// Shut down first (Drop), then the dir is removed.
    svc: Option<hookflow::Service>,
    pub base: String,
    pub config_path: PathBuf,
    env: Vec<(String, String)>,
    pub dir: TempDir,
}

impl App {
    /// Writes `config` and `flows` into a new temp dir and starts the service.
    pub fn start(name: &str, config: &Value, flows: &[(&str, &Value)]) -> App {
        App::start_env(name, config, flows, &[])
    }

    /// Same, with `${NAME}` variables.
    pub fn start_env(name: &str, config: &Value, flows: &[(&str, &Value)], env: &[(&str, &str)]) -> App {
        App::start_files(name, config, flows, &[], env)
    }

    /// Same, with text files (`(path relative to the config, text)`: transformers, Flow files
    /// as text) written beside the config, where Flow and transformer files must be.
    pub fn start_files(
        name: &str,
        config: &Value,
        flows: &[(&str, &Value)],
        texts: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> App {
        let dir = TempDir::new(name);
        for (rel, text) in texts {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().expect("a file in a folder")).expect("create the folder");
            std::fs::write(&path, text).expect("write a file");
        }
        let config_path = write_files(&dir.path, config, flows);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut app = App { svc: None, base: String::new(), config_path, env, dir };
        app.boot();
        app
    }

    /// Starts the service from the config file (again, after [`App::shutdown`]).
    pub fn boot(&mut self) {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let svc = start_service(&self.config_path, &env);
        self.base = format!("http://{}", svc.addr());
        self.svc = Some(svc);
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The message URL of the `main` endpoint.
    pub fn msg_url(&self) -> String {
        self.url(&format!("/{TOKEN}"))
    }

    /// Shuts down (drains and joins).
    pub fn shutdown(&mut self) {
        if let Some(svc) = self.svc.take() {
            svc.shutdown();
        }
    }

    /// Shuts down and starts again on the same config and data dir.
    pub fn restart(&mut self) {
        self.shutdown();
        self.boot();
    }

    /// POSTs a message to `main`, asserts 200, returns the traceId.
    pub fn send(&self, user: &str, session: &str, text: &str) -> String {
        send_to(&self.msg_url(), &json!({ "userId": user, "sessionId": session, "text": text }))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// The shared client: statuses are values, not errors.
pub fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_redirects(0)
            .build()
            .into()
    })
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request with exactly these headers (no Content-Type is added).
pub fn request(method: &str, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Resp {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let result = match body {
        Some(s) => agent().run(b.body(s.to_owned()).expect("a valid request")),
        None => agent().run(b.body(()).expect("a valid request")),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_else(|e| panic!("{method} {url}: unreadable answer: {e}"));
    Resp { status, headers, body }
}

/// POSTs `body` with these headers; returns the status and the JSON answer (`Null` if none).
pub fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let r = request("POST", url, Some(body), headers);
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
}

/// POSTs a JSON value with `Content-Type: application/json`.
pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    post(url, &body.to_string(), &[("Content-Type", "application/json")])
}

/// POSTs a message, asserts the documented 200 answer, returns its traceId.
pub fn send_to(url: &str, body: &Value) -> String {
    let (status, answer) = post_json(url, body);
    assert_eq!(status, 200, "POST {url} {body} answered {answer}");
    assert_accepted(&answer)
}

/// GET with the admin key.
pub fn admin_get(url: &str) -> Resp {
    request("GET", url, None, &[("X-API-Key", ADMIN_KEY)])
}

/// Asserts `{"status":"accepted","traceId":"endpoint-httpIncomingMessage-<uuid>"}` exactly;
/// returns the traceId.
pub fn assert_accepted(answer: &Value) -> String {
    let obj = answer.as_object().unwrap_or_else(|| panic!("200 answer is not an object: {answer}"));
    assert_eq!(obj.len(), 2, "200 answer has other keys than status and traceId: {answer}");
    assert_eq!(answer["status"], "accepted", "{answer}");
    let trace = answer["traceId"].as_str().unwrap_or_else(|| panic!("no traceId string in {answer}"));
    let uuid = trace
        .strip_prefix("endpoint-httpIncomingMessage-")
        .unwrap_or_else(|| panic!("traceId {trace:?} lacks the endpoint-httpIncomingMessage- prefix"));
    assert!(is_uuid(uuid), "traceId {trace:?} does not end in a UUID");
    trace.to_owned()
}

/// `8-4-4-4-12` lowercase or uppercase hex.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Asserts `status` and an error body of exactly `{"error":{"code","message"}}` with `code`;
/// returns the message.
pub fn assert_error(status: u16, answer: &Value, want_status: u16, code: &str) -> String {
    assert_eq!(status, want_status, "expected {want_status} {code}, got {status} {answer}");
    let top = answer.as_object().unwrap_or_else(|| panic!("error body is not an object: {answer}"));
    assert_eq!(top.len(), 1, "error body has keys besides \"error\": {answer}");
    let err = answer["error"].as_object().unwrap_or_else(|| panic!("\"error\" is not an object: {answer}"));
    assert_eq!(err.len(), 2, "\"error\" has keys besides code and message: {answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_else(|| panic!("no message string: {answer}"));
    assert!(!message.trim().is_empty(), "empty error message: {answer}");
    message.to_owned()
}

/// Sends raw bytes over a new TCP connection and reads one answer; returns its status and body
/// (status 0 when no complete answer came within `timeout`).
pub fn raw_http(addr: &str, request: &[u8], timeout: Duration) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).expect("write the request");
    let mut r = std::io::BufReader::new(s);
    read_response(&mut r).map(|a| (a.status, a.body)).unwrap_or((0, String::new()))
}

/// Reads one HTTP/1.1 answer with a Content-Length body. `None` on EOF,
/// a timeout (set on the stream) or a malformed answer.
pub fn read_response(r: &mut std::io::BufReader<TcpStream>) -> Option<Resp> {
    use std::io::BufRead as _;
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// A port that was free a moment ago.
/// Starts hookflow in this process on the config at `path`, soon after something else in this
/// process let go of the same data directory (a stopped service, an opened store).
///
/// The directory's lock (an exclusive `flock` on its lock file) can outlive that release for a
/// moment: a child that another test is spawning at that instant holds a copy of every open
/// descriptor from its fork until its exec, and a lock taken with `flock` belongs to the open
/// file, which the copy shares; and a stopped service does not wait for a sender lane past the
/// drain (`drainSeconds` 0 here: half a second of grace). A real restart is a new process and
/// has neither. So a start refused because this very process holds the directory is tried
/// again, for up to 10 s.
pub fn start_service(path: &Path, env: &[(&str, &str)]) -> hookflow::Service {
    let held_by_us = format!("in use by another hookflow process (pid {})", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match hookflow::Service::start(load(path, env)) {
            Ok(svc) => return svc,
            Err(e) if e.to_string().contains(&held_by_us) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("hookflow did not start: {e}"),
        }
    }
}

/// A port on 127.0.0.1 where nothing listens, for calls that must be refused. Port 1: the
/// kernel never hands it out for a bind to port 0 (the ephemeral range starts far above), so
/// no other test's server can be listening there. (`free_port` cannot promise that: between
/// its bind and the call, another test may be given the same port, and a Flow's call to a
/// "closed" port once reached another test's sink.)
pub const CLOSED_PORT: u16 = 1;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().unwrap().port()
}

/// HMAC-SHA256 (RFC 2104), written out here so signature checks do not reuse hookflow's code.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new().chain_update(k.map(|b| b ^ 0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(k.map(|b| b ^ 0x5c)).chain_update(inner).finalize().into()
}
