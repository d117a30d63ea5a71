//! End-to-end benchmark of hookflow: `make bench` (or `cargo run --release --example bench`).
//!
//! Several scenarios run one after the other, each on a freshly started server (except where
//! said), each printing its detailed lines; a summary table and the goals close the output.
//! Other work on the machine skews absolute numbers, so the load average is printed before every
//! scenario, and the comparisons are ratios of two measurements taken next to each other.
//!
//! | scenario | what it answers |
//! | --- | --- |
//! | echo | the reference: echo Flow (`say {{input.text}}`), `durability: normal`, default senders, `BENCH_N` messages |
//! | bare | the same load and sink against `examples/bare.rs`, the same pipeline shape without store and Flow, right after echo: hookflow ÷ bare delivered/s is the price of what hookflow adds (goal ≥ 0.6, on the median of `BENCH_ROUNDS` pairs; pairs after the first use a fresh hookflow) |
//! | sessions | on the echo server, after echo: `BENCH_IDLE_SESSIONS` new sessions, one message each, then the idle RSS (goal ≤ 40 MiB) |
//! | durability | `normal` vs `full` (fsync before every 200, batched), same load: full ÷ normal |
//! | lanes | a webhook taking `BENCH_SINK_DELAY_MS` per POST, `delivery.senders` 1, 2, 4, 8: speed-up vs 1; once with userIds unrelated to the sessionIds, once with `u<k>`/`s<k>` (the lane is a hash of both) |
//! | templates | `{{input.text}}` (path, no script engine) vs `{{input.text.trim()}}` (QuickJS), same output: delivered/s and server CPU per message |
//! | latency, store, parked | low-load p99s vs bare, a store of a million sessions vs a fresh one, turns parked on a slow API beside the echo load: see `bench/more.rs` |
//! | replicas | one replica on PostgreSQL (a throwaway server the bench starts) vs SQLite, alternating: delivered/s and CPU per message with PostgreSQL's processes (goal ≥ 0.5); then the floor (PostgreSQL's CPU for the least a durable message needs, without hookflow, and the best ratio it leaves); then two replicas on one database, the load sent to one; then a slow webhook (`BENCH_SINK_DELAY_MS`, 4 lanes) on SQLite and on one replica; then the take-over time after `kill -9` (aim ≤ leaseSeconds + 1 s) (`bench/replicas.rs`) |
//! | hanging | a second endpoint whose webhook accepts connections and never answers, fed all along: the echo endpoint's delivered/s and latency with it vs without, `delivery.senders` 1 and 4 (`bench/hanging.rs`) |
//!
//! bare, durability and templates alternate their two servers for `BENCH_ROUNDS` rounds (A B A B ..),
//! so that a change in the machine's load hits both alike; their ratios are given per round and
//! as the median. The summary also shows, per load, the load average and how much the server's
//! threads were runnable but waited for a CPU (`/proc/<pid>/task/*/schedstat`): a high value
//! means the numbers of that row say more about the machine than about the server.
//!
//! The ready time (goal ≤ 50 ms) and idle RSS (goal ≤ 8 MiB) are those of the echo server.
//!
//! Files: this one (the knobs, the run, starting and stopping servers), `bench/scenarios.rs`
//! (echo, bare, sessions, durability, lanes, templates), `bench/more.rs`, `bench/hanging.rs`,
//! `bench/replicas.rs` (their scenarios), `bench/load.rs` (one load: clients, sink, order check,
//! what it measured), `bench/report.rs` (rows, ratios, goals, the summary), `bench/procfs.rs`
//! (what `/proc` says about the server and the machine).
//!
//! What each load measures, and why:
//!
//! - **ready time**: spawn of the server until the first `GET /healthz` answers 200. This is
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
//! - **CPU per message**: the server's user + system time (`/proc/<pid>/stat`) over the load
//!   window, divided by the outputs delivered.
//! - **CPU per server thread** over the load window (from `/proc/<pid>/task/*/schedstat`, ns
//!   precise; `stat` ticks of 10 ms where the kernel has no schedstats): a thread
//!   group near 100% of one core is the bottleneck. The bench's own CPU is printed too, because
//!   clients, sink and server share the machine, and per group the time its threads were
//!   runnable but waited for a CPU (`schedstat`): what the machine's contention cost.
//!
//! Set-up: a temp dir holds, per server, a config (free 127.0.0.1 port, `workers: 0` = one per
//! CPU) and a Flow. The webhook is an in-process tiny_http sink. Each message text is
//! `"<index> <send-µs>"`: the per-session index checks order, the send time (µs since the bench's
//! epoch, same process and clock as the sink) gives the latency.
//!
//! Knobs (environment): `BENCH_N` messages (20000), `BENCH_SESSIONS` (200), `BENCH_CLIENTS` (8)
//! for echo and bare; `BENCH_DURABILITY_N` (5000), `BENCH_TEMPLATE_N` (5000) messages over
//! `BENCH_SESSIONS`; `BENCH_LANES_N` (400) over `BENCH_LANES_SESSIONS` (200), `BENCH_LANES`
//! (`1,2,4,8`), `BENCH_SINK_DELAY_MS` (20); `BENCH_IDLE_SESSIONS` (10000); `BENCH_ONLY`, a comma
//! list of scenario names (echo, bare, sessions, durability, lanes, templates, hanging, latency,
//! store, parked, replicas), runs only those; `BENCH_HANGING_N` (10000) messages of the hanging scenario;
//! `BENCH_ROUNDS` (3). Optional `BENCH_WORKERS` and `BENCH_SENDERS` override `workers` /
//! `delivery.senders` in every config (the lanes scenario sets its own senders) to explore where
//! the limit is (unset: the defaults, as an operator would run it).
//! `BENCH_HOOKFLOW=<path>` runs another hookflow binary in every scenario (e.g. the static one,
//! `target/x86_64-unknown-linux-gnu/release/hookflow`, to see what its size-optimised code costs).
//! For diagnosis: `BENCH_SERVER_LOG=debug` sets the server's `RUST_LOG` (default `warn`) and
//! `BENCH_KEEP=1` keeps the temp dir (configs, data, `server.log`s) instead of removing it.
//! `BENCH_PG_SETTINGS` adds PostgreSQL server settings to the replicas scenario's server, space
//! separated, e.g. `shared_preload_libraries=pg_stat_statements,auto_explain
//! auto_explain.log_min_duration=0 auto_explain.sample_rate=0.02` to see the hot path's plans in
//! its `server.log` (under `/tmp/hookflow-pg-bench-<pid>/` while the bench runs).
//! The temp dir is under `$TMPDIR` (default `/tmp`); its filesystem matters for `full`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::{Value, json};

/// How long a server may take to answer `/healthz` before the bench gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a server sits idle before its RSS is read.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long after the last accepted message the bench waits for the remaining outputs.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// After the last expected output, listen this much longer to catch duplicates or extras.
const GRACE: Duration = Duration::from_millis(300);
/// Threads of the fast sink calling `recv()`; the server sends with `delivery.senders` lanes.
const SINK_THREADS: usize = 4;
/// Threads of the slow sink (lanes scenario): more than the most lanes, so none waits for one.
const SLOW_SINK_THREADS: usize = 64;
/// A client gives up after this many transport errors (the server is most likely gone).
const MAX_CLIENT_ERRORS: u64 = 20;
/// The endpoint's URL token (any `[A-Za-z0-9_-]{8,128}`).
const URL_TOKEN: &str = "bench-0123456789abcdef";
/// Linux reports per-thread CPU time in USER_HZ ticks, which is 100 on every mainstream arch.
const USER_HZ: f64 = 100.0;
/// Session numbers of the sessions scenario start here, apart from the echo load's.
const FRESH_SESSIONS_FROM: usize = 1_000_000;
/// The two templates of the templates scenario: same output, path vs JavaScript.
const PATH_TEMPLATE: &str = "{{input.text}}";
const JS_TEMPLATE: &str = "{{input.text.trim()}}";

/// The goals, checked in the summary (a missed goal is reported, it does not fail the run).
const GOAL_READY_MS: f64 = 50.0;
const GOAL_IDLE_RSS_MIB: f64 = 8.0;
const GOAL_SESSIONS_RSS_MIB: f64 = 40.0;
const GOAL_BARE_RATIO: f64 = 0.6;

const SCENARIOS: [&str; 11] = [
    "echo",
    "bare",
    "sessions",
    "durability",
    "lanes",
    "templates",
    "hanging",
    "latency",
    "store",
    "parked",
    "replicas",
];

/// The hanging-webhook scenario (a folder of its own: a file beside this one would be an example).
#[path = "bench/hanging.rs"]
mod hanging;
/// Low-load latency, a large store, parked calls.
#[path = "bench/more.rs"]
mod more;
/// Replicas on PostgreSQL against SQLite.
#[path = "bench/replicas.rs"]
mod replicas;

#[path = "bench/load.rs"]
mod load;
use load::*;

#[path = "bench/report.rs"]
mod report;
use report::*;

#[path = "bench/scenarios.rs"]
mod scenarios;

#[path = "bench/procfs.rs"]
mod procfs;
use procfs::*;

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

// ---- Knobs ------------------------------------------------------------------------------------------

/// The knobs, from the environment.
struct Knobs {
    messages: usize,
    sessions: usize,
    clients: usize,
    workers: Option<usize>,
    senders: Option<usize>,
    durability_n: usize,
    template_n: usize,
    lanes_n: usize,
    lanes_sessions: usize,
    lanes: Vec<usize>,
    hanging_n: usize,
    sink_delay: Duration,
    idle_sessions: usize,
    rounds: usize,
    only: Vec<String>,
}

fn env_usize(name: &str) -> Result<Option<usize>, String> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map(Some).map_err(|_| format!("{name} must be a number, got {v:?}")),
        Err(_) => Ok(None),
    }
}

impl Knobs {
    fn from_env() -> Result<Knobs, String> {
        let lanes = match std::env::var("BENCH_LANES") {
            Ok(v) => v
                .split(',')
                .map(|s| s.trim().parse().map_err(|_| format!("BENCH_LANES must be numbers, got {v:?}")))
                .collect::<Result<Vec<usize>, _>>()?,
            Err(_) => vec![1, 2, 4, 8],
        };
        let only: Vec<String> = std::env::var("BENCH_ONLY")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if let Some(bad) = only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
            return Err(format!("BENCH_ONLY: unknown scenario {bad:?} (known: {})", SCENARIOS.join(", ")));
        }
        let k = Knobs {
            messages: env_usize("BENCH_N")?.unwrap_or(20_000),
            sessions: env_usize("BENCH_SESSIONS")?.unwrap_or(200),
            clients: env_usize("BENCH_CLIENTS")?.unwrap_or(8),
            workers: env_usize("BENCH_WORKERS")?,
            senders: env_usize("BENCH_SENDERS")?,
            durability_n: env_usize("BENCH_DURABILITY_N")?.unwrap_or(5_000),
            template_n: env_usize("BENCH_TEMPLATE_N")?.unwrap_or(5_000),
            lanes_n: env_usize("BENCH_LANES_N")?.unwrap_or(400),
            lanes_sessions: env_usize("BENCH_LANES_SESSIONS")?.unwrap_or(200),
            lanes,
            hanging_n: env_usize("BENCH_HANGING_N")?.unwrap_or(10_000),
            sink_delay: Duration::from_millis(env_usize("BENCH_SINK_DELAY_MS")?.unwrap_or(20) as u64),
            idle_sessions: env_usize("BENCH_IDLE_SESSIONS")?.unwrap_or(10_000),
            rounds: env_usize("BENCH_ROUNDS")?.unwrap_or(3),
            only,
        };
        let counts =
            [k.messages, k.sessions, k.clients, k.durability_n, k.template_n, k.lanes_n, k.lanes_sessions, k.hanging_n];
        if counts.contains(&0) || k.idle_sessions == 0 || k.rounds == 0 || k.lanes.is_empty() || k.lanes.contains(&0) {
            return Err("message, session, client and lane counts must be at least 1".into());
        }
        Ok(k)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    /// A load of `messages` over `sessions` with the configured clients, session numbers from 0.
    fn load(&self, messages: usize, sessions: usize) -> Load {
        Load { messages, sessions, first: 0, clients: self.clients, ids: Ids::Paired, rate: None }
    }
}

/// One load: `messages` spread over sessions `s<first>` .. `s<first + sessions - 1>`.
#[derive(Clone, Copy)]
struct Load {
    messages: usize,
    sessions: usize,
    first: usize,
    clients: usize,
    ids: Ids,
    /// Messages per second over all clients (paced sends); `None`: as fast as answers come.
    rate: Option<f64>,
}

/// How the userId of session `s<k>` is made. It matters only with several sender lanes, which
/// hash (endpoint, userId, sessionId) to pick the lane of a session.
#[derive(Clone, Copy, PartialEq)]
enum Ids {
    /// `u<k>`: userId and sessionId share their digits, as when a client derives both from one
    /// counter or uses one value for both.
    Paired,
    /// `u<8 hex digits>`, a fixed scramble of k: unrelated to the sessionId, as two random ids are.
    Scattered,
}

impl Load {
    fn user_id(&self, k: usize) -> String {
        match self.ids {
            Ids::Paired => format!("u{k}"),
            Ids::Scattered => format!("u{:08x}", fmix32(k as u32)),
        }
    }

    /// Messages of session `first + k`: spread as evenly as possible over the sessions.
    fn per_session(&self, k: usize) -> usize {
        self.messages / self.sessions + usize::from(k < self.messages % self.sessions)
    }
}

// ---- The whole run ----------------------------------------------------------------------------------

/// What every scenario needs, and what they leave for the summary.
struct Bench {
    knobs: Knobs,
    epoch: Instant,
    dir: PathBuf,
    hookflow: PathBuf,
    bare: PathBuf,
    server_log: String,
    rows: Vec<Row>,
    /// The headline ratios, one line per scenario.
    ratios: Vec<String>,
    /// Log lines of each server stopped so far.
    log_lines: Vec<usize>,
    goals: Vec<Goal>,
    /// No correctness failure so far (errors, missing, order, a server exit).
    ok: bool,
}

/// Removes the temp dir however the bench ends (error, panic or success).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("BENCH_KEEP").is_some() {
            eprintln!("bench: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn run() -> Result<bool, String> {
    let knobs = Knobs::from_env()?;
    let load_at_start = loadavg();
    // One clock for clients and sink: µs since this instant travel in the message text.
    let epoch = Instant::now();
    let dir = std::env::temp_dir().join(format!("hookflow-bench-{}-{}", std::process::id(), epoch_nanos()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _cleanup = TempDir(dir.clone());
    let (hookflow, bare) = binaries()?;
    // Another build under test in every scenario (e.g. the static appliance binary).
    let hookflow = std::env::var_os("BENCH_HOOKFLOW").map_or(hookflow, PathBuf::from);
    let mut b = Bench {
        knobs,
        epoch,
        dir,
        hookflow,
        bare,
        server_log: std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        rows: Vec::new(),
        ratios: Vec::new(),
        log_lines: Vec::new(),
        goals: Vec::new(),
        ok: true,
    };

    let (cpus, model, mem) = machine();
    println!("hookflow bench: in-process webhook sink, every POST waits for its 200");
    println!(
        "machine      {cpus} CPUs, {model}, {mem}; load average {load_at_start} at the start; temp dir on {}",
        fs_type(&b.dir)
    );
    b.binary_sizes();
    let started = Instant::now();
    if ["echo", "bare", "sessions"].iter().any(|s| b.knobs.wants(s)) {
        b.echo_bare_sessions()?;
    }
    if b.knobs.wants("durability") {
        b.durability()?;
    }
    if b.knobs.wants("lanes") {
        b.lanes()?;
    }
    if b.knobs.wants("templates") {
        b.templates()?;
    }
    if b.knobs.wants("hanging") {
        b.hanging()?;
    }
    if b.knobs.wants("latency") {
        b.latency()?;
    }
    if b.knobs.wants("store") {
        b.large_store()?;
    }
    if b.knobs.wants("parked") {
        b.parked()?;
    }
    if b.knobs.wants("replicas") {
        b.replicas()?;
    }
    b.summary(&load_at_start, started.elapsed());
    Ok(b.ok)
}

/// A server under test.
enum Target {
    Hookflow(Hookflow),
    Bare,
}

/// The config knobs a scenario varies.
struct Hookflow {
    durability: &'static str,
    senders: Option<usize>,
    workers: Option<usize>,
    /// The text template of the Flow's one `say` node.
    template: &'static str,
    /// Another hookflow binary (`BENCH_BASELINE`: an older build, for before/after rows).
    binary: Option<PathBuf>,
    /// A store file copied into the data directory before the start (a prefilled store).
    store: Option<PathBuf>,
    /// The Flow, when not the one `say` node.
    flow: Option<Value>,
    /// A second endpoint with this webhook URL (the hanging scenario), and `delivery.timeoutMs`.
    broken: Option<(String, u64)>,
    /// The store is this PostgreSQL database instead of SQLite (the replicas scenario).
    postgres: Option<String>,
}

impl Bench {
    fn hookflow(&self, durability: &'static str, senders: Option<usize>, template: &'static str) -> Target {
        Target::Hookflow(Hookflow {
            durability,
            senders: senders.or(self.knobs.senders),
            workers: self.knobs.workers,
            template,
            binary: None,
            store: None,
            flow: None,
            broken: None,
            postgres: None,
        })
    }

    /// Starts a server in its own folder and waits until it answers and has been idle a moment.
    fn start(&self, name: &str, target: &Target, sink: SocketAddr) -> Result<Server, String> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let listen = free_port()?;
        let webhook = format!("http://{sink}/hook");
        let (mut cmd, describe) = match target {
            Target::Hookflow(h) => {
                write_files(&dir, listen, &webhook, h)?;
                if let Some(store) = &h.store {
                    let data = dir.join("data");
                    std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
                    std::fs::copy(store, data.join("hookflow.sqlite3"))
                        .map_err(|e| format!("cannot copy the prefilled store {}: {e}", store.display()))?;
                }
                let mut cmd = Command::new(h.binary.as_ref().unwrap_or(&self.hookflow));
                cmd.args(["serve", "--config"]).arg(dir.join("hookflow.json")).env("RUST_LOG", &self.server_log);
                let describe = format!(
                    "{}{} (workers {}, delivery.senders {}, durability {}, say {}, RUST_LOG={})",
                    h.binary.as_ref().unwrap_or(&self.hookflow).display(),
                    if h.store.is_some() { " on a prefilled store" } else { "" },
                    h.workers.map_or("0 = one per CPU".to_string(), |w| w.to_string()),
                    h.senders.map_or("default (1)".to_string(), |s| s.to_string()),
                    h.durability,
                    h.template,
                    self.server_log
                );
                (cmd, describe)
            }
            Target::Bare => {
                let mut cmd = Command::new(&self.bare);
                cmd.args(["--listen", &listen.to_string(), "--webhook", &webhook]);
                (cmd, self.bare.display().to_string())
            }
        };
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create the server log: {e}"))?;
        let spawned = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {describe}: {e}"))?;
        let base = format!("http://{listen}");
        let ready = match wait_ready(&base, &mut child, &log_path, spawned) {
            Ok(d) => d,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let pid = child.id();
        let mut server = Server { pid, child, url: format!("{base}/{URL_TOKEN}"), ready, idle_rss: 0, log_path };
        // Idle footprint: after start-up allocations have settled and nothing is happening.
        thread::sleep(IDLE_WAIT);
        server.idle_rss = proc_status_field(pid, "VmRSS")?;
        println!("server       {describe}");
        println!("ready        {:.0} ms (spawn to the first /healthz 200)", ready.as_secs_f64() * 1e3);
        println!("idle RSS     {} (VmRSS after {} s idle)", mib(server.idle_rss), IDLE_WAIT.as_secs());
        Ok(server)
    }

    /// Stops a server, counting its log lines for the summary.
    fn stop(&mut self, server: &mut Server) {
        let lines = server.stop(&self.server_log);
        self.log_lines.push(lines);
    }

    /// Runs one load, prints its detailed lines, and records whether it was correct.
    fn measure(&mut self, server: &mut Server, sink: &Sink, load: Load) -> Result<LoadResult, String> {
        let r = run_load(server, sink, load, self.epoch)?;
        r.print();
        self.ok &= r.correct();
        Ok(r)
    }
}
// ---- Set-up ---------------------------------------------------------------------------------------

/// A port that was free a moment ago: bind port 0, read what the kernel chose, let it go.
fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

/// The config and the one-node Flow, in `dir`.
fn write_files(dir: &Path, listen: SocketAddr, webhook: &str, h: &Hookflow) -> Result<(), String> {
    let mut delivery = json!({});
    if let Some(s) = h.senders {
        delivery["senders"] = json!(s);
    }
    let mut endpoints = vec![json!({
        "name": "bench",
        "urlToken": URL_TOKEN,
        "flow": "flow.json",
        "webhook": { "url": webhook }
    })];
    if let Some((url, timeout_ms)) = &h.broken {
        delivery["timeoutMs"] = json!(timeout_ms);
        endpoints.push(
            json!({ "name": "broken", "urlToken": hanging::TOKEN, "flow": "flow.json", "webhook": { "url": url } }),
        );
    }
    let mut config = json!({
        "listen": listen.to_string(),
        "dataDir": dir.join("data"),
        "workers": h.workers.unwrap_or(0),
        "durability": h.durability,
        "delivery": delivery,
        "endpoints": endpoints
    });
    if let Some(url) = &h.postgres {
        config["store"] = json!({"type": "postgres", "url": url, "tls": "disable"});
    }
    let flow = h.flow.clone().unwrap_or_else(|| json!({ "nodes": [{ "type": "say", "text": h.template }] }));
    for (name, value) in [("hookflow.json", config), ("flow.json", flow)] {
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    Ok(())
}

/// `target/release/hookflow` and `target/release/examples/bare`, found from this bench's path
/// (`target/release/examples/bench`).
fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the bench executable: {e}"))?;
    let examples = exe.parent().ok_or("cannot find the examples folder")?;
    let target = examples.parent().ok_or("cannot find the target folder")?;
    let suffix = std::env::consts::EXE_SUFFIX;
    let hookflow = target.join(format!("hookflow{suffix}"));
    let bare = examples.join(format!("bare{suffix}"));
    for bin in [&hookflow, &bare] {
        if !bin.is_file() {
            return Err(format!(
                "{} not found: build it first (`make bench` runs `cargo build --release --bins --examples`)",
                bin.display()
            ));
        }
    }
    Ok((hookflow, bare))
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
