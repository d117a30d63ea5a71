//! Helpers for the engine, checkpoint, transformer, CLI and support-example tests: a running
//! endpoint with its sink and per-session Seq bookkeeping ([`Bot`]), a programmable mock API on
//! 127.0.0.1 ([`Mock`]), a `hookflow serve` child process ([`ServerProc`]) and the CLI runner.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, unbounded};
use serde_json::{Value, json};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// A running endpoint and its sink

/// The in-process service with the `main` endpoint and its recording sink. Fields drop in order:
/// the service first, then the sink.
pub struct Bot {
    pub app: App,
    pub sink: Sink,
    /// Last Seq seen per session, to check that outputs are consecutive (no extra, none lost).
    seqs: RefCell<HashMap<String, u64>>,
}

impl Bot {
    /// Starts `main` (see `support::config`) with these Flow files (the first one should be
    /// `flow.json`); `tweak` edits the config before it is written.
    pub fn start(name: &str, flows: &[(&str, &Value)], tweak: impl FnOnce(&mut Value)) -> Bot {
        Bot::start_files(name, flows, &[], tweak)
    }

    /// Same, with text files beside the config (see [`App::start_files`]).
    pub fn start_files(
        name: &str,
        flows: &[(&str, &Value)],
        texts: &[(&str, &str)],
        tweak: impl FnOnce(&mut Value),
    ) -> Bot {
        let sink = Sink::new();
        let mut cfg = config(&sink.url);
        tweak(&mut cfg);
        let app = App::start_files(name, &cfg, flows, texts, &[]);
        Bot { app, sink, seqs: RefCell::new(HashMap::new()) }
    }

    /// Sends a text message of `user`/`session`; returns the traceId.
    pub fn text(&self, user: &str, session: &str, text: &str) -> String {
        self.app.send(user, session, text)
    }

    /// Sends a message with optional text and data; returns the traceId.
    pub fn send(&self, user: &str, session: &str, text: Option<&str>, data: Option<Value>) -> String {
        let mut body = json!({ "userId": user, "sessionId": session });
        if let Some(t) = text {
            body["text"] = json!(t);
        }
        if let Some(d) = data {
            body["data"] = d;
        }
        send_to(&self.app.msg_url(), &body)
    }

    /// Receives `texts.len()` outputs and asserts they belong to `session`, carry these texts
    /// in this order, and continue the session's Seq without a gap.
    pub fn expect(&self, session: &str, texts: &[&str]) -> Vec<Hit> {
        let hits = self.sink.recv_n(texts.len(), WAIT);
        let got: Vec<(&str, &str)> = hits.iter().map(|h| (h.session_id(), h.text())).collect();
        let want: Vec<(&str, &str)> = texts.iter().map(|t| (session, *t)).collect();
        assert_eq!(got, want, "outputs (session, text)");
        let mut seqs = self.seqs.borrow_mut();
        let last = seqs.entry(session.to_owned()).or_insert(0);
        for h in &hits {
            assert_eq!(h.seq(), *last + 1, "Seq of {:?} in session {session}: an output is missing or extra", h.text());
            *last += 1;
        }
        hits
    }

    /// [`Bot::expect`] for exactly one output; returns it.
    pub fn expect1(&self, session: &str, text: &str) -> Hit {
        self.expect(session, &[text]).remove(0)
    }

    /// The admin API's view of a session (asserts 200).
    pub fn session(&self, user: &str, session: &str) -> Value {
        let r = admin_get(&self.app.url(&format!("/api/sessions/main/{user}/{session}")));
        assert_eq!(r.status, 200, "GET session {user}/{session}: {}", r.body);
        r.json()
    }

    /// Shuts down and starts again on the same config and data dir.
    pub fn restart(&mut self) {
        self.app.restart();
    }
}

// ---------------------------------------------------------------------------------------------
// A mock API

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct MockHit {
    pub method: String,
    /// Path and query.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body as JSON (`Null` when it is not).
    pub json: Value,
    /// When it arrived.
    pub at: Instant,
}

impl MockHit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The mock's answer to one request.
pub struct MockReply {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl MockReply {
    pub fn json(status: u16, body: Value) -> MockReply {
        MockReply { status, body: body.to_string(), content_type: "application/json", headers: vec![] }
    }

    pub fn text(status: u16, body: &str) -> MockReply {
        MockReply { status, body: body.to_owned(), content_type: "text/plain; charset=utf-8", headers: vec![] }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> MockReply {
        self.headers.push((name, value.to_owned()));
        self
    }
}

type Handler = dyn Fn(&MockHit) -> MockReply + Send + Sync;

/// Longest a held mock request waits for [`Mock::release`] (a bound, not a timing assumption).
const MOCK_HOLD_MAX: Duration = Duration::from_secs(30);

struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

/// An HTTP API on 127.0.0.1 (port 0): records every request into a channel, then answers with
/// `handler`; while held, requests are recorded at once and answered only after release.
pub struct Mock {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub rx: Receiver<MockHit>,
    gate: Arc<Gate>,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Mock {
    pub fn new(handler: impl Fn(&MockHit) -> MockReply + Send + Sync + 'static) -> Mock {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the mock"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let gate = Arc::new(Gate { open: Mutex::new(true), cv: Condvar::new() });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = unbounded();
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, g, st) = (server.clone(), gate.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("mock-{port}"))
            .spawn(move || mock_loop(&s, &g, &st, &tx, &handler))
            .expect("spawn the mock");
        Mock { base: format!("http://127.0.0.1:{port}"), rx, gate, stop, server, thread: Some(thread) }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Hold every answer (requests are still recorded at once) until [`Mock::release`].
    pub fn hold(&self) {
        *self.gate.open.lock().unwrap() = false;
    }

    /// Answer held and future requests.
    pub fn release(&self) {
        *self.gate.open.lock().unwrap() = true;
        self.gate.cv.notify_all();
    }

    /// The next request, or panics after `timeout`.
    pub fn recv(&self, timeout: Duration) -> MockHit {
        self.rx.recv_timeout(timeout).unwrap_or_else(|_| panic!("the mock API got no request within {timeout:?}"))
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release();
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mock_loop(server: &tiny_http::Server, gate: &Arc<Gate>, stop: &AtomicBool, tx: &Sender<MockHit>, h: &Arc<Handler>) {
    loop {
        let mut req = match server.recv() {
            Ok(r) => r,
            Err(_) if stop.load(Ordering::SeqCst) => return,
            Err(_) => continue,
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut body = String::new();
        let _ = req.as_reader().read_to_string(&mut body);
        let hit = MockHit {
            method: req.method().as_str().to_owned(),
            url: req.url().to_owned(),
            headers: req
                .headers()
                .iter()
                .map(|h| (h.field.as_str().as_str().to_owned(), h.value.as_str().to_owned()))
                .collect(),
            json: serde_json::from_str(&body).unwrap_or(Value::Null),
            body,
            at: Instant::now(),
        };
        let reply = h(&hit);
        let _ = tx.send(hit);
        // Answer on its own thread, so one held request does not hold the others' recording.
        let gate = gate.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + MOCK_HOLD_MAX;
            {
                let mut open = gate.open.lock().unwrap();
                while !*open && Instant::now() < deadline {
                    open = gate.cv.wait_timeout(open, deadline - Instant::now()).unwrap().0;
                }
            }
            let mut resp = tiny_http::Response::from_string(reply.body).with_status_code(reply.status).with_header(
                tiny_http::Header::from_bytes("Content-Type", reply.content_type).expect("a valid header"),
            );
            for (k, v) in reply.headers {
                resp = resp.with_header(tiny_http::Header::from_bytes(k, v.as_bytes()).expect("a valid header"));
            }
            let _ = req.respond(resp);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The binary

/// Runs `hookflow` with `args`, extra `env` and `stdin`; returns its output (bounded: panics if
/// it has not exited within 20 s).
pub fn run_cli(args: &[&str], env: &[(&str, &str)], stdin: &str, cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookflow"));
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("start the hookflow binary");
    let mut input = child.stdin.take().expect("piped stdin");
    let text = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let pid = child.id();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(Duration::from_secs(20)).is_err() {
        // Only the child we started, by its id.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("hookflow {args:?} did not exit within 20 s");
    }
    let _ = writer.join();
    waiter.join().expect("the waiter thread").expect("wait for hookflow")
}

// ---------------------------------------------------------------------------------------------
// Small things

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Writes `text` to `dir/rel` (creating folders); returns the path.
pub fn write_text(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the folder");
    }
    std::fs::write(&path, text).expect("write the file");
    path
}

/// Milliseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.fff]Z`; `None` when `s` has
/// another shape.
pub fn parse_iso8601_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        (!part.is_empty() && part.bytes().all(|c| c.is_ascii_digit())).then(|| part.parse().ok()).flatten()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, sec) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let rest = &s[19..];
    let millis = match rest {
        "Z" => 0,
        _ => {
            let frac = rest.strip_prefix('.')?.strip_suffix('Z')?;
            if frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            format!("{frac:0<3}")[..3].parse::<i64>().ok()?
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + millis)
}

/// Now, in Unix milliseconds.
pub fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[test]
fn iso8601_parser_of_the_tests_is_right() {
    assert_eq!(parse_iso8601_utc("1970-01-01T00:00:00.000Z"), Some(0));
    assert_eq!(parse_iso8601_utc("2026-11-22T07:47:51.123Z"), Some(1_795_333_671_123));
    assert_eq!(parse_iso8601_utc("2000-02-29T00:00:00Z"), Some(951_782_400_000));
    assert_eq!(parse_iso8601_utc("2000-02-29 00:00:00Z"), None);
    assert_eq!(parse_iso8601_utc("yesterday"), None);
}
