//! End-to-end benchmark of hookflow: `make bench` (or `cargo run --release --example bench`).
//!
//! What it measures, and why:
//!
//! - **ready time**: spawn of `hookflow serve` until the first `GET /healthz` answers 200. This is
//!   what a restart (deploy, crash, `systemctl restart`) costs in unavailability.
//! - **idle RSS**: `VmRSS` of the server after ~1 s without traffic, the floor an install pays.
//! - **accepted/s**: messages answered 200 per second, seen from the clients. Every POST waits for
//!   its 200, and a 200 means "durably queued" (http-api.md §1), so this is the ingest rate with the
//!   storage commit included.
//! - **delivered/s**: messages whose output reached the webhook per second, from the first send to
//!   the last delivery: the whole pipeline (accept ─► flow turn ─► outbox ─► webhook POST).
//!   Also the delivery rate while messages were still being accepted and the backlog left when
//!   the last one was: if delivery cannot keep up with ingest, latency is mostly queueing.
//! - **end-to-end latency** p50/p99/max: from the client's send to the sink's receipt of the
//!   output, which is what a user of a chat bot waits.
//! - **peak RSS**: `VmHWM` of the server at the end, i.e. memory under this load.
//! - **order**: per session, outputs must arrive in send order (http-api.md §2); violations,
//!   duplicates and missing outputs are counted, and the process exits 1 if any occur, so the
//!   benchmark doubles as a smoke test of the ordering guarantee under concurrency.
//! - **CPU per server thread** over the load window (from `/proc/<pid>/task/*/stat`): a thread
//!   group near 100% of one core is the bottleneck. The bench's own CPU is printed too, because
//!   clients, sink and server share the machine.
//!
//! Set-up: a temp dir holds a config (free 127.0.0.1 port, `workers: 0` = one per CPU, durability
//! `normal`) and an echo Flow (`say {{input.text}}`). The webhook is an in-process tiny_http sink.
//! Each message text is `"<index> <send-µs>"`: the per-session index checks order, the send time
//! (µs since the bench's epoch, same process and clock as the sink) gives the latency.
//!
//! Knobs (environment): `BENCH_N` messages (20000), `BENCH_SESSIONS` (200), `BENCH_CLIENTS` (8);
//! optional `BENCH_WORKERS` and `BENCH_SENDERS` override `workers` / `delivery.senders` in the
//! config to explore where the limit is (unset: the defaults, as an operator would run it).
//! For diagnosis: `BENCH_SERVER_LOG=debug` sets the server's `RUST_LOG` (default `warn`) and
//! `BENCH_KEEP=1` keeps the temp dir (config, data, `server.log`) instead of removing it.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::{Value, json};

/// How long the server may take to answer `/healthz` before the bench gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server sits idle before its RSS is read.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long after the last accepted message the bench waits for the remaining outputs.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// After the last expected output, listen this much longer to catch duplicates or extras.
const GRACE: Duration = Duration::from_millis(300);
/// Threads of the sink calling `recv()`; the server sends with `delivery.senders` lanes (default 1).
const SINK_THREADS: usize = 4;
/// A client gives up after this many transport errors (the server is most likely gone).
const MAX_CLIENT_ERRORS: u64 = 20;
/// The endpoint's URL token (any `[A-Za-z0-9_-]{8,128}`).
const URL_TOKEN: &str = "bench-0123456789abcdef";
/// Linux reports per-thread CPU time in USER_HZ ticks, which is 100 on every mainstream arch.
const USER_HZ: f64 = 100.0;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: FAILED (missing outputs, order violations or request errors; see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// The knobs, from the environment.
struct Params {
    messages: usize,
    sessions: usize,
    clients: usize,
    workers: Option<usize>,
    senders: Option<usize>,
}

fn env_usize(name: &str) -> Result<Option<usize>, String> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map(Some).map_err(|_| format!("{name} must be a number, got {v:?}")),
        Err(_) => Ok(None),
    }
}

impl Params {
    fn from_env() -> Result<Params, String> {
        let p = Params {
            messages: env_usize("BENCH_N")?.unwrap_or(20_000),
            sessions: env_usize("BENCH_SESSIONS")?.unwrap_or(200),
            clients: env_usize("BENCH_CLIENTS")?.unwrap_or(8),
            workers: env_usize("BENCH_WORKERS")?,
            senders: env_usize("BENCH_SENDERS")?,
        };
        if p.messages == 0 || p.sessions == 0 || p.clients == 0 {
            return Err("BENCH_N, BENCH_SESSIONS and BENCH_CLIENTS must be at least 1".into());
        }
        Ok(p)
    }

    /// Messages of session `k`: `messages` spread as evenly as possible over the sessions.
    fn per_session(&self, k: usize) -> usize {
        self.messages / self.sessions + usize::from(k < self.messages % self.sessions)
    }
}

/// Kills the server and removes the temp dir however the bench ends (error, panic or success).
struct Cleanup {
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("BENCH_KEEP").is_some() {
            eprintln!("bench: kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn run() -> Result<bool, String> {
    let params = Params::from_env()?;
    // Other work on the machine (a build, a test run) skews every number below: say so.
    let loadavg =
        std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| Some(l.split_whitespace().next()?.to_string()));
    // One clock for clients and sink: µs since this instant travel in the message text.
    let epoch = Instant::now();

    // -- The sink (the webhook target) --------------------------------------------------------
    let sink = Sink::start(epoch)?;

    // -- Temp dir, config, Flow -----------------------------------------------------------------
    let dir = std::env::temp_dir().join(format!("hookflow-bench-{}-{}", std::process::id(), epoch_nanos()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cleanup = Cleanup { dir: dir.clone(), child: None };
    let listen = free_port()?;
    write_files(&dir, listen, sink.addr, &params)?;

    // -- Start the server and wait until it answers ----------------------------------------------
    let binary = server_binary()?;
    let server_log = std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into());
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create the server log: {e}"))?;
    let spawned = Instant::now();
    let child = Command::new(&binary)
        .args(["serve", "--config"])
        .arg(dir.join("hookflow.json"))
        .env("RUST_LOG", &server_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id();
    let child = cleanup.child.insert(child);
    let base = format!("http://{listen}");
    let ready = wait_ready(&base, child, &log_path, spawned)?;

    // Idle footprint: after start-up allocations have settled and nothing is happening.
    thread::sleep(IDLE_WAIT);
    let idle_rss = proc_status_field(pid, "VmRSS")?;

    // -- Load -----------------------------------------------------------------------------------
    let server_cpu_before = thread_cpu(pid);
    let self_cpu_before = process_cpu_seconds("self");
    let load_started = Instant::now();
    let url = format!("{base}/{URL_TOKEN}");
    let mut clients: Vec<JoinHandle<ClientStats>> = (0..params.clients)
        .map(|c| {
            // Client c owns sessions c, c+C, c+2C, ...: disjoint, so per-session order is
            // simply the order in which this one thread sends.
            let owned: Vec<(usize, usize)> =
                (c..params.sessions).step_by(params.clients).map(|k| (k, params.per_session(k))).collect();
            let url = url.clone();
            thread::Builder::new()
                .name(format!("client-{c}"))
                .spawn(move || client(&url, &owned, epoch))
                .map_err(|e| format!("cannot spawn a client thread: {e}"))
        })
        .collect::<Result<_, _>>()?;

    // -- Collect the outputs while the clients run (the sink's channel is bounded) ---------------
    let mut check = OrderCheck::new(&params);
    let mut stats: Option<ClientStats> = None;
    let mut load_done: Option<Instant> = None;
    // Taken when the last expected output arrived (or at the timeout): the end of the load window.
    let mut server_cpu_after = None;
    let mut self_cpu_after = 0.0;
    let mut window_end = load_started;
    loop {
        match sink.rx.recv_timeout(Duration::from_millis(20)) {
            Ok(rec) => check.add(rec),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("the sink stopped".into()),
        }
        if stats.is_none() && clients.iter().all(JoinHandle::is_finished) {
            let mut total = ClientStats::default();
            for h in clients.drain(..) {
                total.merge(h.join().map_err(|_| "a client thread panicked".to_string())?);
            }
            stats = Some(total);
            load_done = Some(Instant::now());
        }
        let (Some(s), Some(done)) = (&stats, load_done) else { continue };
        let now = Instant::now();
        if server_cpu_after.is_none() && (check.unique >= s.accepted || now >= done + DELIVERY_TIMEOUT) {
            server_cpu_after = Some(thread_cpu(pid));
            self_cpu_after = process_cpu_seconds("self");
            window_end = now;
        }
        // Past the last expected output, listen a little longer for duplicates and extras.
        if server_cpu_after.is_some() && now >= window_end + GRACE {
            break;
        }
    }
    let stats = stats.unwrap_or_default();
    let server_cpu_after = server_cpu_after.unwrap_or_default();
    // Read before the kill; if the server died during the run these are 0 (and it is reported).
    let peak_rss = proc_status_field(pid, "VmHWM").unwrap_or(0);
    let threads = proc_status_field(pid, "Threads").unwrap_or(0);
    let exited = child.try_wait().ok().flatten();
    if let Some(mut child) = cleanup.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(sink);

    // -- Report -----------------------------------------------------------------------------------
    let p = &params;
    let (cpus, model, mem) = machine();
    println!("hookflow bench: echo Flow, in-process webhook sink, every POST waits for its 200");
    println!(
        "machine      {cpus} CPUs, {model}, {mem}; load average {} before the run",
        loadavg.as_deref().unwrap_or("unknown")
    );
    println!(
        "server       {} (workers {}, delivery.senders {}, durability normal, RUST_LOG={server_log})",
        binary.display(),
        p.workers.map_or("0 = one per CPU".to_string(), |w| w.to_string()),
        p.senders.map_or("default (1)".to_string(), |s| s.to_string()),
    );
    println!("ready        {:.0} ms (spawn to the first /healthz 200)", ready.as_secs_f64() * 1e3);
    println!("idle RSS     {} (VmRSS after {} s idle)", mib(idle_rss), IDLE_WAIT.as_secs());
    println!("load         {} messages, {} sessions, {} clients", p.messages, p.sessions, p.clients);
    let first_send = stats.first_send_us.unwrap_or(0);
    let accept_secs = stats.last_accept_us.unwrap_or(first_send).saturating_sub(first_send) as f64 / 1e6;
    println!(
        "accepted     {}/{} in {:.2} s = {:.0} msg/s (client side; 503 retries {}, errors {})",
        stats.accepted,
        p.messages,
        accept_secs,
        rate(stats.accepted, accept_secs),
        stats.retries,
        stats.errors
    );
    if let Some(e) = &stats.first_error {
        println!("             first error: {e}");
    }
    let mut accept_us = stats.accept_us;
    // Outliers matter for a webhook endpoint (the caller may time out), so count them apart.
    let slow = accept_us.iter().filter(|&&us| us > 100_000).count();
    println!("accept lat.  {} (POST to its 200; {slow} over 100 ms)", percentiles(&mut accept_us));
    let deliver_secs = check.last_recv_us.saturating_sub(first_send) as f64 / 1e6;
    println!(
        "delivered    {}/{} in {:.2} s = {:.0} msg/s (first send to last delivery)",
        check.unique,
        stats.accepted,
        deliver_secs,
        rate(check.unique, deliver_secs)
    );
    // Does delivery keep up with ingest? What was delivered by the time the last message was
    // accepted, and the backlog left then: a growing backlog means latency is queueing time.
    let last_accept = stats.last_accept_us.unwrap_or(first_send);
    let during = check.recv_us.iter().filter(|&&t| t <= last_accept).count();
    println!(
        "             while accepting {:.0} msg/s, backlog {} when the last message was accepted",
        rate(during, accept_secs),
        stats.accepted.saturating_sub(during)
    );
    println!("latency      {} (send to sink receipt)", percentiles(&mut check.latency_us));
    let missing = stats.accepted.saturating_sub(check.unique);
    println!(
        "order        {} violations, {} duplicates, {} malformed, {} missing",
        check.violations, check.duplicates, check.malformed, missing
    );
    println!("peak RSS     {} (VmHWM), {threads} threads", mib(peak_rss));
    let window = window_end.duration_since(load_started).as_secs_f64();
    println!(
        "CPU          over the {window:.2} s load window, in % of one core: server {:.0}%, bench (clients + sink) {:.0}%",
        100.0 * (process_cpu_total(&server_cpu_after) - process_cpu_total(&server_cpu_before)) / window,
        100.0 * (self_cpu_after - self_cpu_before) / window
    );
    for line in cpu_by_group(pid, &server_cpu_before, &server_cpu_after, window) {
        println!("             {line}");
    }
    if let Some(status) = exited {
        println!("server       EXITED during the run: {status}");
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let log_lines: Vec<&str> = log.lines().collect();
    println!("server log   {} lines at RUST_LOG={server_log}", log_lines.len());
    for line in log_lines.iter().take(5) {
        println!("             {line}");
    }
    drop(cleanup);
    Ok(stats.errors == 0
        && missing == 0
        && check.violations == 0
        && check.duplicates == 0
        && check.malformed == 0
        && exited.is_none())
}

// ---- Set-up ---------------------------------------------------------------------------------------

/// A port that was free a moment ago: bind port 0, read what the kernel chose, let it go.
fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

/// The config and the echo Flow, in `dir`.
fn write_files(dir: &Path, listen: SocketAddr, sink: SocketAddr, p: &Params) -> Result<(), String> {
    let mut delivery = json!({});
    if let Some(s) = p.senders {
        delivery["senders"] = json!(s);
    }
    let config = json!({
        "listen": listen.to_string(),
        "dataDir": dir.join("data"),
        "workers": p.workers.unwrap_or(0),
        "durability": "normal",
        "delivery": delivery,
        "endpoints": [{
            "name": "bench",
            "urlToken": URL_TOKEN,
            "flow": "flow.json",
            "webhook": { "url": format!("http://{sink}/hook") }
        }]
    });
    let flow = json!({ "nodes": [{ "type": "say", "text": "{{input.text}}" }] });
    for (name, value) in [("hookflow.json", config), ("flow.json", flow)] {
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    Ok(())
}

/// `target/release/hookflow`, next to the `examples/` folder this bench runs from.
fn server_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the bench executable: {e}"))?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(format!("hookflow{}", std::env::consts::EXE_SUFFIX)))
        .ok_or("cannot find the target folder")?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} not found: build it first (`make bench` runs `cargo build --release --bins`)", bin.display()))
    }
}

/// Polls `/healthz` until it answers 200; returns the time since `spawned`. Bounded, and fails
/// at once (with the server's log) if the process exits.
fn wait_ready(base: &str, child: &mut Child, log: &Path, spawned: Instant) -> Result<Duration, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}/healthz");
    loop {
        if let Ok(resp) = agent.get(&url).call()
            && resp.status() == 200
        {
            return Ok(spawned.elapsed());
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited before it was ready ({status}):\n{}", log_text()));
        }
        if spawned.elapsed() > READY_TIMEOUT {
            return Err(format!("/healthz did not answer within {READY_TIMEOUT:?}:\n{}", log_text()));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

// ---- Clients --------------------------------------------------------------------------------------

/// What one client saw (times in µs since the epoch).
#[derive(Default)]
struct ClientStats {
    accepted: usize,
    retries: u64,
    errors: u64,
    first_error: Option<String>,
    first_send_us: Option<u64>,
    last_accept_us: Option<u64>,
    /// POST to 200, per accepted message.
    accept_us: Vec<u64>,
}

impl ClientStats {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, o: ClientStats) {
        self.accepted += o.accepted;
        self.retries += o.retries;
        self.errors += o.errors;
        self.first_error = self.first_error.take().or(o.first_error);
        self.first_send_us = self.first_send_us.into_iter().chain(o.first_send_us).min();
        self.last_accept_us = self.last_accept_us.into_iter().chain(o.last_accept_us).max();
        self.accept_us.extend(o.accept_us);
    }
}

/// One client thread: sends the messages of its sessions round-robin (message j of every owned
/// session, then j+1, ...), one POST at a time on one keep-alive connection, each waiting for its
/// 200. Round-robin keeps many sessions in flight, as real traffic does, while the order within
/// each session is the send order.
fn client(url: &str, owned: &[(usize, usize)], epoch: Instant) -> ClientStats {
    // Per-phase timeouts, not `timeout_global`: with a global (or per-call) timeout ureq 3
    // resolves the host on a freshly spawned thread for every request, pooled connection or not,
    // and the bench would measure its own thread spawns.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_send_body(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut st = ClientStats::default();
    let rounds = owned.iter().map(|&(_, n)| n).max().unwrap_or(0);
    for j in 0..rounds {
        for &(k, n) in owned {
            if j < n {
                send(&agent, url, k, j, epoch, &mut st);
            }
            if st.errors >= MAX_CLIENT_ERRORS {
                return st;
            }
        }
    }
    st
}

/// Sends message `j` of session `k` until it is accepted. A 503 (queue full) is retried after
/// its `Retry-After` (at most 1 s): the message is resent, not skipped, so session order holds.
fn send(agent: &ureq::Agent, url: &str, k: usize, j: usize, epoch: Instant, st: &mut ClientStats) {
    const MAX_RETRIES: u32 = 600;
    for _ in 0..MAX_RETRIES {
        // The latency clock starts at the attempt that is accepted (503 retries are counted apart).
        let sent = micros(epoch, Instant::now());
        st.first_send_us.get_or_insert(sent);
        let body = json!({ "userId": format!("u{k}"), "sessionId": format!("s{k}"), "text": format!("{j} {sent}") });
        let result = agent.post(url).header("Content-Type", "application/json").send(body.to_string().as_bytes());
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                // Reading the answer to its end lets ureq reuse the connection.
                let _ = resp.body_mut().read_to_vec();
                let done = micros(epoch, Instant::now());
                match status {
                    200 => {
                        st.accepted += 1;
                        st.last_accept_us = Some(done);
                        st.accept_us.push(done - sent);
                        return;
                    }
                    503 => {
                        st.retries += 1;
                        let wait = retry_after.map_or(Duration::from_millis(50), Duration::from_secs);
                        thread::sleep(wait.min(Duration::from_secs(1)));
                    }
                    _ => return st.error(format!("HTTP {status} for s{k} #{j}")),
                }
            }
            Err(e) => return st.error(format!("s{k} #{j}: {e}")),
        }
    }
    st.error(format!("s{k} #{j}: still 503 after {MAX_RETRIES} tries"));
}

// ---- The sink ---------------------------------------------------------------------------------------

/// One output as the sink received it.
struct Record {
    /// Session number and message index, `None` when the body was not one of ours.
    id: Option<(usize, usize)>,
    /// When the client sent the message (from the text), µs since the epoch.
    sent_us: u64,
    /// When the sink got the POST, µs since the epoch.
    recv_us: u64,
}

impl Record {
    fn parse(body: &[u8], recv_us: u64) -> Record {
        let parsed = || -> Option<((usize, usize), u64)> {
            let v: Value = serde_json::from_slice(body).ok()?;
            let k = v["sessionId"].as_str()?.strip_prefix('s')?.parse().ok()?;
            let (j, sent) = v["AIOutput"]["text"].as_str()?.split_once(' ')?;
            Some(((k, j.parse().ok()?), sent.parse().ok()?))
        };
        match parsed() {
            Some((id, sent_us)) => Record { id: Some(id), sent_us, recv_us },
            None => Record { id: None, sent_us: 0, recv_us },
        }
    }
}

/// The webhook target: tiny_http with a few threads calling `recv()`, answering 200 to every
/// request and passing each POST's record to the bench over a bounded channel.
struct Sink {
    addr: SocketAddr,
    rx: Receiver<Record>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Sink {
    fn start(epoch: Instant) -> Result<Sink, String> {
        let server = tiny_http::Server::http("127.0.0.1:0").map_err(|e| format!("sink: cannot listen: {e}"))?;
        let server = Arc::new(server);
        let addr = server.server_addr().to_ip().ok_or("sink: not an IP address")?;
        let (tx, rx) = crossbeam_channel::bounded(8192);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..SINK_THREADS)
            .map(|i| {
                let (server, tx, stop) = (server.clone(), tx.clone(), stop.clone());
                thread::Builder::new()
                    .name(format!("sink-{i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match server.recv_timeout(Duration::from_millis(50)) {
                                Ok(Some(req)) => sink_one(req, &tx, epoch),
                                Ok(None) => {}
                                Err(_) => break,
                            }
                        }
                    })
                    .map_err(|e| format!("cannot spawn a sink thread: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Sink { addr, rx, stop, threads })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Records one request, then answers 200. Recording before answering matters for the order
/// check: the server sends a session's output n+1 only after n's 200, so n is in the channel first.
fn sink_one(mut req: tiny_http::Request, tx: &Sender<Record>, epoch: Instant) {
    let recv_us = micros(epoch, Instant::now());
    if *req.method() == tiny_http::Method::Post {
        let mut body = Vec::new();
        let _ = req.as_reader().take(1 << 20).read_to_end(&mut body);
        // Bounded wait: if the bench stopped reading, the record is dropped (and shows as missing).
        let _ = tx.send_timeout(Record::parse(&body, recv_us), Duration::from_secs(1));
    }
    let _ = req.respond(tiny_http::Response::empty(200));
}

// ---- Checks and statistics ------------------------------------------------------------------------

/// Per-session order, duplicates and latency of the received outputs.
struct OrderCheck {
    /// `seen[k][j]`: output j of session k arrived.
    seen: Vec<Vec<bool>>,
    /// Highest index that arrived per session.
    highest: Vec<Option<usize>>,
    unique: usize,
    duplicates: usize,
    /// A new output arrived after one with a higher index of the same session.
    violations: usize,
    malformed: usize,
    last_recv_us: u64,
    /// Receipt time of each first arrival.
    recv_us: Vec<u64>,
    latency_us: Vec<u64>,
}

impl OrderCheck {
    fn new(p: &Params) -> OrderCheck {
        OrderCheck {
            seen: (0..p.sessions).map(|k| vec![false; p.per_session(k)]).collect(),
            highest: vec![None; p.sessions],
            unique: 0,
            duplicates: 0,
            violations: 0,
            malformed: 0,
            last_recv_us: 0,
            recv_us: Vec::with_capacity(p.messages),
            latency_us: Vec::with_capacity(p.messages),
        }
    }

    fn add(&mut self, r: Record) {
        let Some((k, j)) = r.id.filter(|&(k, j)| k < self.seen.len() && j < self.seen[k].len()) else {
            self.malformed += 1;
            return;
        };
        if std::mem::replace(&mut self.seen[k][j], true) {
            self.duplicates += 1;
            return;
        }
        if self.highest[k].is_some_and(|h| h > j) {
            self.violations += 1;
        }
        self.highest[k] = self.highest[k].max(Some(j));
        self.unique += 1;
        self.last_recv_us = self.last_recv_us.max(r.recv_us);
        self.recv_us.push(r.recv_us);
        self.latency_us.push(r.recv_us.saturating_sub(r.sent_us));
    }
}

/// `p50 / p99 / max` of µs values, in ms (nearest-rank percentiles).
fn percentiles(v: &mut [u64]) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort_unstable();
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e3;
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", at(0.50), at(0.99), at(1.0))
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn micros(epoch: Instant, t: Instant) -> u64 {
    t.duration_since(epoch).as_micros() as u64
}

fn epoch_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ---- /proc ------------------------------------------------------------------------------------------

/// A numeric field of `/proc/<pid>/status` (`VmRSS`, `VmHWM` in KiB; `Threads` a count).
fn proc_status_field(pid: u32, key: &str) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
}

/// `(comm, user + system CPU seconds)` from a `/proc/.../stat` file. The name is in parentheses
/// and may hold spaces, so the numeric fields are counted from the last `)`: field 3 (state) is
/// the first after it, so utime (14) and stime (15) are the 12th and 13th.
fn parse_stat(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((text[open + 1..close].to_string(), ticks as f64 / USER_HZ))
}

/// CPU seconds of a whole process (`self` or a pid), exited threads included.
fn process_cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parse_stat).map_or(0.0, |s| s.1)
}

/// Per thread of `pid`: tid ─► (name, CPU seconds).
fn thread_cpu(pid: u32) -> BTreeMap<u64, (String, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return BTreeMap::new() };
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            Some((tid, parse_stat(&stat)?))
        })
        .collect()
}

fn process_cpu_total(threads: &BTreeMap<u64, (String, f64)>) -> f64 {
    threads.values().map(|t| t.1).sum()
}

/// Server CPU over the window, per thread group (`worker-3` ─► `worker-*`), busiest first: the
/// group's total and its busiest thread, in % of one core. A thread near 100% is a bottleneck
/// that more CPUs cannot fix; a group near `threads × 100%` is saturated. hookflow names its own
/// threads; the unnamed ones (they inherit the process name) are tiny_http's accept thread and
/// connection pool, which read requests off the sockets.
fn cpu_by_group(
    pid: u32,
    before: &BTreeMap<u64, (String, f64)>,
    after: &BTreeMap<u64, (String, f64)>,
    window: f64,
) -> Vec<String> {
    let mut groups: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    let process_name = after.get(&u64::from(pid)).map(|t| t.0.clone());
    for (tid, (name, secs)) in after {
        let used = secs - before.get(tid).map_or(0.0, |b| b.1);
        let group = match name.rsplit_once('-') {
            _ if *tid == u64::from(pid) => "main".to_string(),
            _ if Some(name) == process_name.as_ref() => "(unnamed)".to_string(),
            Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("{stem}-*"),
            _ => name.clone(),
        };
        let g = groups.entry(group).or_default();
        g.0 += 1;
        g.1 += used;
        g.2 = g.2.max(used);
    }
    let mut rows: Vec<_> = groups.into_iter().filter(|g| g.1.1 > 0.0).collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    rows.iter()
        .map(|(name, (n, total, max))| {
            let pct = |s: f64| 100.0 * s / window.max(1e-9);
            format!("{name:<16} x{n:<3} {:>5.0}%  (busiest thread {:.0}%)", pct(*total), pct(*max))
        })
        .collect()
}

/// CPU count, model name and memory of this machine.
fn machine() -> (usize, String, String) {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU model".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| "unknown memory".into(), |kib| format!("{:.1} GiB RAM", kib as f64 / 1048576.0));
    (cpus, model, mem)
}
