//! Helpers of the operations, durability, hardening and privacy tests: the `hookflow` binary as
//! a child process (signals, exit status, stderr, RSS), a webhook mock that stamps each request
//! with its arrival time and can answer with headers, a Prometheus text parser, and an HTTP
//! client call that reports transport errors instead of panicking.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use serde_json::Value;

use crate::support::Hit;

// ---------------------------------------------------------------------------------------------
// The binary as a child process

/// A running `hookflow serve --config FILE`, stderr in a file; killed with SIGKILL on drop.
pub struct Proc {
    pub pid: u32,
    /// `http://127.0.0.1:<port>`, read from the start-up log line (the config listens on :0).
    pub base: String,
    pub log: PathBuf,
    exit: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
    waiter: Option<JoinHandle<()>>,
}

/// How to start the binary.
pub struct Launch<'a> {
    pub config: &'a Path,
    pub log: PathBuf,
    pub env: Vec<(&'a str, String)>,
    /// Run under `prlimit --nofile=N:N`.
    pub nofile: Option<u32>,
    /// Options after `serve --config FILE`.
    pub args: Vec<&'a str>,
}

impl<'a> Launch<'a> {
    /// `RUST_LOG=info`, no other variables, no limit.
    pub fn new(config: &'a Path, log: PathBuf) -> Launch<'a> {
        Launch { config, log, env: vec![("RUST_LOG", "info".into())], nofile: None, args: Vec::new() }
    }

    pub fn arg(mut self, arg: &'a str) -> Launch<'a> {
        self.args.push(arg);
        self
    }

    pub fn env(mut self, name: &'a str, value: &str) -> Launch<'a> {
        self.env.retain(|(k, _)| *k != name);
        self.env.push((name, value.to_owned()));
        self
    }

    pub fn nofile(mut self, n: u32) -> Launch<'a> {
        self.nofile = Some(n);
        self
    }

    /// Starts the process and waits (bounded) until it listens.
    pub fn start(self) -> Proc {
        let stderr = std::fs::File::create(&self.log).expect("create the log file");
        let bin = env!("CARGO_BIN_EXE_hookflow");
        let mut cmd = match self.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["serve", "--config"]).arg(self.config).args(&self.args);
        cmd.env_remove("RUST_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().expect("start the hookflow binary");
        let pid = child.id();
        let (tx, exit) = bounded(1);
        let waiter = std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .spawn(move || {
                if let Ok(status) = child.wait() {
                    let _ = tx.send(status);
                }
            })
            .expect("spawn the waiter");
        let mut p = Proc { pid, base: String::new(), log: self.log, exit, status: None, waiter: Some(waiter) };
        p.base = p.wait_listening();
        p
    }
}

impl Proc {
    /// Polls the log for the "listening on" line: nothing else tells when the port is bound.
    fn wait_listening(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log_text();
            if let Some(rest) = log.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                return format!("http://{addr}");
            }
            if let Some(status) = self.wait_exit(Duration::from_millis(20)) {
                panic!("hookflow exited with {status} before listening:\n{log}");
            }
            assert!(Instant::now() < deadline, "hookflow did not start listening in time:\n{log}");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.pid.to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{name} {} failed", self.pid);
    }

    /// The exit status, waiting at most `timeout` for it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.exit.recv_timeout(timeout) {
                Ok(s) => self.status = Some(s),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => panic!("lost the child process {}", self.pid),
            }
            if let Some(w) = self.waiter.take() {
                let _ = w.join();
            }
        }
        self.status
    }

    /// `kill -9`, then reap.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10)).expect("hookflow did not die from SIGKILL");
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("read /proc/<pid>/status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() && self.exit.try_recv().is_err() {
            let _ = Command::new("kill").arg("-KILL").arg(self.pid.to_string()).status();
            let _ = self.exit.recv_timeout(Duration::from_secs(10));
        }
        if let Some(w) = self.waiter.take() {
            let _ = w.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP without panics

/// A client with a short overall timeout, for talking to a process that may be killed.
pub fn quick_agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .max_redirects(0)
            .build()
            .into()
    })
}

/// POSTs JSON; `Err` on a transport failure (refused, reset), else the status, the
/// `Retry-After` header and the JSON answer.
pub fn try_post(url: &str, body: &Value) -> Result<(u16, Option<String>, Value), String> {
    let mut resp = quick_agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = resp.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, retry_after, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// GET; `Err` on a transport failure, else the status and the body.
pub fn try_get(url: &str) -> Result<(u16, String), String> {
    let mut resp = quick_agent().get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.body_mut().read_to_string().map_err(|e| e.to_string())?))
}

/// One request over a new connection (no pooled keep-alive connection can stand in for it).
/// `(0, why)` when the connection failed or no answer came within `timeout`. `addr` is
/// `host:port`.
pub fn fresh_request(addr: &str, method: &str, path: &str, body: Option<&Value>, timeout: Duration) -> (u16, String) {
    use std::io::Write as _;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (0, format!("connect: {e}")),
    };
    s.set_read_timeout(Some(timeout)).unwrap();
    if let Err(e) = s.write_all(request.as_bytes()) {
        return (0, format!("write: {e}"));
    }
    match crate::support::read_response(&mut std::io::BufReader::new(s)) {
        Some(r) => (r.status, r.body),
        None => (0, format!("no answer within {timeout:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// A webhook mock with arrival times and scripted answers

/// One scripted answer: status and extra headers.
pub type Answer = (u16, Vec<(&'static str, &'static str)>);

struct MockControl {
    status: AtomicU16,
    script: Mutex<VecDeque<Answer>>,
    open: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
}

/// Like `support::Sink`, but each request comes with the `Instant` it arrived, and scripted
/// answers may carry headers (`Retry-After`).
pub struct Mock {
    pub url: String,
    pub rx: Receiver<(Instant, Hit)>,
    control: Arc<MockControl>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Mock {
    pub fn with_status(status: u16) -> Mock {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the mock"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let control = Arc::new(MockControl {
            status: AtomicU16::new(status),
            script: Mutex::new(VecDeque::new()),
            open: Mutex::new(true),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = unbounded();
        let (s, c) = (server.clone(), control.clone());
        let thread = std::thread::Builder::new()
            .name(format!("mock-{port}"))
            .spawn(move || mock_loop(&s, &c, &tx))
            .expect("spawn the mock");
        Mock { url: format!("http://127.0.0.1:{port}/hook"), rx, control, server, thread: Some(thread) }
    }

    pub fn set_status(&self, status: u16) {
        self.control.status.store(status, Ordering::SeqCst);
    }

    pub fn script(&self, answers: Vec<Answer>) {
        self.control.script.lock().unwrap().extend(answers);
    }

    pub fn hold(&self) {
        *self.control.open.lock().unwrap() = false;
    }

    pub fn release(&self) {
        *self.control.open.lock().unwrap() = true;
        self.control.cv.notify_all();
    }

    /// The next request and when it arrived, or panics after `timeout`.
    pub fn recv(&self, timeout: Duration) -> (Instant, Hit) {
        self.rx.recv_timeout(timeout).unwrap_or_else(|_| panic!("no request at the mock within {timeout:?}"))
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.release();
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mock_loop(server: &tiny_http::Server, control: &MockControl, tx: &Sender<(Instant, Hit)>) {
    loop {
        let mut req = match server.recv() {
            Ok(r) => r,
            Err(_) if control.stop.load(Ordering::SeqCst) => return,
            Err(_) => continue,
        };
        let at = Instant::now();
        let mut raw = String::new();
        let _ = req.as_reader().read_to_string(&mut raw);
        let headers =
            req.headers().iter().map(|h| (h.field.as_str().as_str().to_owned(), h.value.as_str().to_owned())).collect();
        let (status, extra) = control
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| (control.status.load(Ordering::SeqCst), vec![]));
        let hit = Hit {
            method: req.method().as_str().to_owned(),
            path: req.url().to_owned(),
            headers,
            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
            answered: status,
        };
        let _ = tx.send((at, hit));
        {
            let mut open = control.open.lock().unwrap();
            while !*open {
                open = control.cv.wait(open).unwrap();
            }
        }
        let mut resp = tiny_http::Response::from_string("").with_status_code(status);
        for (k, v) in extra {
            resp = resp.with_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("a header"));
        }
        let _ = req.respond(resp);
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page: samples in order, and `# TYPE` / `# HELP` per family.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses the text strictly; panics with the offending line on any deviation from the
    /// format: every sample line is `name{k="v",...} value` with a numeric value, and belongs
    /// to a family declared (HELP and TYPE) above it.
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for (n, line) in text.lines().enumerate() {
            let here = || format!("line {}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kind, name, what) = (parts.next(), parts.next(), parts.next());
                let (Some(kind), Some(name)) = (kind, name) else { panic!("malformed comment at {}", here()) };
                assert!(is_metric_name(name), "bad metric name at {}", here());
                match kind {
                    "HELP" => {
                        assert!(what.is_some_and(|h| !h.trim().is_empty()), "empty HELP at {}", here());
                        m.helps.insert(name.to_owned(), what.unwrap_or_default().to_owned());
                    }
                    "TYPE" => {
                        let t = what.unwrap_or_default();
                        let known = ["counter", "gauge", "histogram", "summary", "untyped"];
                        assert!(known.contains(&t), "unknown TYPE at {}", here());
                        assert!(!m.types.contains_key(name), "TYPE given twice at {}", here());
                        m.types.insert(name.to_owned(), t.to_owned());
                    }
                    _ => {}
                }
                continue;
            }
            assert!(!line.starts_with('#'), "a comment without a space at {}", here());
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value at {}", here()));
            let value = parse_value(value).unwrap_or_else(|| panic!("value is not a number at {}", here()));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels at {}", here()));
                    (name, parse_labels(body).unwrap_or_else(|| panic!("malformed labels at {}", here())))
                }
                None => (series, BTreeMap::new()),
            };
            assert!(is_metric_name(name), "bad metric name at {}", here());
            let family = m.family_of(name).unwrap_or_else(|| panic!("sample without HELP/TYPE above it at {}", here()));
            assert!(m.helps.contains_key(&family), "family {family} has no HELP ({})", here());
            m.samples.push(Sample { name: name.to_owned(), labels, value });
        }
        m
    }

    /// The declared family a sample name belongs to (`x_bucket` → `x` for a histogram).
    fn family_of(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.to_owned());
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && matches!(self.types.get(base).map(String::as_str), Some("histogram" | "summary"))
            {
                return Some(base.to_owned());
            }
        }
        None
    }

    /// Samples of `name` whose labels include all of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .collect()
    }

    /// The sum of the matching samples; panics when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.find(name, labels);
        assert!(!found.is_empty(), "no sample {name} with {labels:?}");
        found.iter().map(|s| s.value).sum()
    }

    /// The one unlabelled sample of `name`; panics when absent.
    pub fn value(&self, name: &str) -> f64 {
        let found: Vec<_> = self.samples.iter().filter(|s| s.name == name && s.labels.is_empty()).collect();
        assert_eq!(found.len(), 1, "expected one unlabelled {name} sample, got {found:?}");
        found[0].value
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `k="v",k2="v2"` (with `\"`, `\\` and `\n` escapes) into a map.
fn parse_labels(body: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        if !is_metric_name(name) || name.contains(':') {
            return None;
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c @ ('"' | '\\') => value.push(c),
                    _ => return None,
                },
                c => value.push(c),
            }
        };
        if out.insert(name.to_owned(), value).is_some() {
            return None;
        }
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}
