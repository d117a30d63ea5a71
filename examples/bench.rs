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
//! | replicas | one replica on PostgreSQL (a throwaway server the bench starts) vs SQLite, alternating: delivered/s and CPU per message with PostgreSQL's processes (goal ≥ 0.5); then the floor (PostgreSQL's CPU for the least a durable message needs, without hookflow, and the best ratio it leaves); then two replicas on one database, the load sent to one; then the take-over time after `kill -9` (aim ≤ leaseSeconds + 1 s) (`bench/replicas.rs`) |
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

    /// echo, then bare right after it with the same sink and load, then the sessions scenario on
    /// the echo server (which sat idle meanwhile).
    fn echo_bare_sessions(&mut self) -> Result<(), String> {
        let k = &self.knobs;
        let load = k.load(k.messages, k.sessions);
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        let senders = k.senders.map_or("default".to_string(), |s| format!("{s} (BENCH_SENDERS)"));
        section("echo", &format!("echo Flow, durability normal, delivery.senders {senders}"));
        let mut server = self.start("echo", &self.hookflow("normal", None, PATH_TEMPLATE), sink.addr)?;
        self.goal("ready time", server.ready.as_secs_f64() * 1e3, "ms", GOAL_READY_MS, false);
        self.goal("idle RSS", kib_to_mib(server.idle_rss), "MiB", GOAL_IDLE_RSS_MIB, false);
        let mut echo_rates = None;
        if self.knobs.wants("echo") {
            let r = self.measure(&mut server, &sink, load)?;
            echo_rates = Some(Rates::of(&r));
            self.row("echo", &r, Some(&server), String::new());
        }

        if self.knobs.wants("bare") {
            // Round 1 pairs bare with the echo load above; further rounds (BENCH_ROUNDS) pair a
            // fresh hookflow with a fresh bare, so that one disturbed run does not decide the goal.
            let n = if echo_rates.is_some() { self.knobs.rounds } else { 1 };
            let mut pairs: Vec<(Rates, Rates)> = Vec::new();
            for round in 1..=n {
                let suffix = if n > 1 { format!(" #{round}") } else { String::new() };
                let echo = match echo_rates {
                    Some(rates) if round == 1 => Some(rates),
                    Some(_) => {
                        section(&format!("echo{suffix}"), "echo Flow again, fresh server, for the next bare round");
                        let target = self.hookflow("normal", None, PATH_TEMPLATE);
                        let mut again = self.start(&format!("echo-{round}"), &target, sink.addr)?;
                        let r = self.measure(&mut again, &sink, load)?;
                        self.row(&format!("echo{suffix}"), &r, Some(&again), String::new());
                        self.stop(&mut again);
                        Some(Rates::of(&r))
                    }
                    None => None,
                };
                section(
                    &format!("bare{suffix}"),
                    "examples/bare.rs: tiny_http ─► 2 workers ─► 1 ureq sender, no store, no Flow",
                );
                let mut bare = self.start(&format!("bare-{round}"), &Target::Bare, sink.addr)?;
                let r = self.measure(&mut bare, &sink, load)?;
                let mut note = String::new();
                if let Some(echo) = echo {
                    let ratio = echo.delivered / r.delivered_rate().max(1e-9);
                    println!("ratio        hookflow echo ÷ bare delivered/s = {ratio:.2} (goal ≥ {GOAL_BARE_RATIO})");
                    note = format!("echo ÷ bare {ratio:.2}");
                    pairs.push((echo, Rates::of(&r)));
                }
                self.row(&format!("bare{suffix}"), &r, Some(&bare), note);
                self.stop(&mut bare);
            }
            if !pairs.is_empty() {
                let of = |f: fn(&Rates) -> f64| Ratios(pairs.iter().map(|(e, b)| f(e) / f(b)).collect());
                let del = of(|r| r.delivered);
                self.goal("hookflow ÷ bare delivered/s (median)", del.median(), "", GOAL_BARE_RATIO, true);
                self.ratios.push(format!(
                    "bare         hookflow echo ÷ bare: delivered/s {}, accepted/s {}, server CPU per message {}",
                    del.text(),
                    of(|r| r.accepted).text(),
                    of(|r| r.cpu_ms).text()
                ));
            }
        }

        if self.knobs.wants("sessions") {
            let n = self.knobs.idle_sessions;
            section("sessions", &format!("{n} new sessions, one message each, on the echo server; then idle RSS"));
            let load = Load { first: FRESH_SESSIONS_FROM, ..self.knobs.load(n, n) };
            let before = proc_status_field(server.pid, "VmRSS").unwrap_or(0);
            let r = self.measure(&mut server, &sink, load)?;
            thread::sleep(IDLE_WAIT);
            let after = proc_status_field(server.pid, "VmRSS").unwrap_or(0);
            println!(
                "idle RSS     {} after {} s idle (was {} before these sessions; goal ≤ {GOAL_SESSIONS_RSS_MIB} MiB)",
                mib(after),
                IDLE_WAIT.as_secs(),
                mib(before)
            );
            self.goal(
                &format!("idle RSS with {n} more sessions"),
                kib_to_mib(after),
                "MiB",
                GOAL_SESSIONS_RSS_MIB,
                false,
            );
            let mut row = self.row_of(&format!("sessions +{n}"), &r, None, String::new());
            row.idle_rss = Some(after);
            self.rows.push(row);
        }
        self.stop(&mut server);
        Ok(())
    }

    /// The same load with `durability: normal` and `full`.
    fn durability(&mut self) -> Result<(), String> {
        let load = self.knobs.load(self.knobs.durability_n, self.knobs.sessions);
        let variants = [
            ("normal", self.hookflow("normal", None, PATH_TEMPLATE), "echo Flow".to_string()),
            ("full", self.hookflow("full", None, PATH_TEMPLATE), "echo Flow, fsync before every 200".to_string()),
        ];
        let rounds = self.pair("durability", variants, load)?;
        let acc = ratios(&rounds, LoadResult::accepted_rate);
        let del = ratios(&rounds, LoadResult::delivered_rate);
        let p50 = ratios(&rounds, |r| r.accept_pct(0.5));
        let line =
            format!("full ÷ normal: accepted/s {}, delivered/s {}, accept p50 {}", acc.text(), del.text(), p50.text());
        println!("\nratio        {line}");
        self.ratios.push(format!("durability   {line}"));
        Ok(())
    }

    /// A slow webhook and 1, 2, 4, 8 sender lanes.
    fn lanes(&mut self) -> Result<(), String> {
        let delay = self.knobs.sink_delay;
        let ms = delay.as_millis();
        let sink = Sink::start(self.epoch, SLOW_SINK_THREADS, delay)?;
        let counts = self.knobs.lanes.clone();
        let mut base: Option<f64> = None;
        // Scattered ids first (how random ids spread over the lanes); then, for more than one
        // lane, paired ids (u<k>/s<k>) to show what the lane hash makes of related ids.
        for ids in [Ids::Scattered, Ids::Paired] {
            let load = Load { ids, ..self.knobs.load(self.knobs.lanes_n, self.knobs.lanes_sessions) };
            let (tag, what) = match ids {
                Ids::Scattered => ("", "userId unrelated to sessionId"),
                Ids::Paired => (" u/s", "userId u<k> for sessionId s<k>"),
            };
            let mut speedups = Vec::new();
            for &lanes in counts.iter().filter(|&&n| ids == Ids::Scattered || n > 1) {
                section(
                    &format!("lanes {lanes}{tag}"),
                    &format!("delivery.senders {lanes}, webhook taking {ms} ms per POST, {what}"),
                );
                let target = self.hookflow("normal", Some(lanes), PATH_TEMPLATE);
                let mut server =
                    self.start(&format!("lanes-{lanes}{}", tag.replace([' ', '/'], "")), &target, sink.addr)?;
                let r = self.measure(&mut server, &sink, load)?;
                self.stop(&mut server);
                let rate = r.delivered_rate();
                let speedup = rate / base.get_or_insert(rate).max(1e-9);
                // Each lane has one POST in flight: `lanes` POSTs per `delay` at best.
                let bound = lanes as f64 / delay.as_secs_f64().max(1e-9);
                println!(
                    "speed-up     {speedup:.2}x delivered/s vs {} lane(s); {:.0}% of the {bound:.0} msg/s that {lanes} lane(s) could do",
                    counts[0],
                    100.0 * rate / bound
                );
                let note = format!("{speedup:.2}x vs {}, {:.0}% of {lanes}/{ms}ms", counts[0], 100.0 * rate / bound);
                self.row(&format!("lanes {lanes}{tag} ({ms} ms sink)"), &r, Some(&server), note);
                speedups.push(format!("{lanes}: {speedup:.2}x"));
            }
            self.ratios.push(format!(
                "lanes{}  delivered/s vs {} lane(s), {what}: {}",
                if tag.is_empty() { "       " } else { " u/s   " },
                counts[0],
                speedups.join(", ")
            ));
        }
        Ok(())
    }

    /// The same output through a path template and through a JavaScript one.
    fn templates(&mut self) -> Result<(), String> {
        let load = self.knobs.load(self.knobs.template_n, self.knobs.sessions);
        let variants = [
            ("path", self.hookflow("normal", None, PATH_TEMPLATE), format!("say {PATH_TEMPLATE}")),
            ("js", self.hookflow("normal", None, JS_TEMPLATE), format!("say {JS_TEMPLATE}")),
        ];
        let rounds = self.pair("template", variants, load)?;
        let del = ratios(&rounds, LoadResult::delivered_rate);
        let cpu = ratios(&rounds, LoadResult::cpu_ms_per_msg);
        let turn = ratios(&rounds, LoadResult::worker_ms_per_msg);
        let extra: Vec<String> =
            rounds.iter().map(|r| format!("{:.3}", r[1].0.worker_ms_per_msg() - r[0].0.worker_ms_per_msg())).collect();
        let line = format!(
            "js ÷ path: delivered/s {}, server CPU per message {}, worker-thread CPU per message {} \
             (JavaScript adds {} ms of worker CPU per message)",
            del.text(),
            cpu.text(),
            turn.text(),
            extra.join(", ")
        );
        println!("\nratio        {line}");
        self.ratios.push(format!("templates    {line}"));
        Ok(())
    }

    /// Runs `load` against two configurations, alternating them for `BENCH_ROUNDS` rounds so that
    /// a change in the machine's load hits both alike. Each gets a fresh server; the second's
    /// rows carry its ratios to the first.
    fn pair(&mut self, scenario: &str, variants: [(&str, Target, String); 2], load: Load) -> Result<Rounds, String> {
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        let n = self.knobs.rounds;
        let mut rounds: Rounds = Vec::new();
        for round in 1..=n {
            let suffix = if n > 1 { format!(" #{round}") } else { String::new() };
            // Every other round runs the second variant first, so that a drift of the machine
            // over the run (load, page cache, a neighbour) does not favour one of them.
            let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
            let mut pair = Vec::new();
            for i in order {
                let (name, target, what) = &variants[i];
                section(&format!("{scenario} {name}{suffix}"), what);
                let mut server = self.start(&format!("{scenario}-{name}-{round}"), target, sink.addr)?;
                let r = self.measure(&mut server, &sink, load)?;
                self.stop(&mut server);
                pair.push((r, server));
            }
            if order[0] == 1 {
                pair.swap(0, 1);
            }
            let (a, b) = (&pair[0], &pair[1]);
            self.row(&format!("{scenario} {}{suffix}", variants[0].0), &a.0, Some(&a.1), String::new());
            let note = format!(
                "÷ {}: acc {:.2}, del {:.2}, CPU {:.2}",
                variants[0].0,
                b.0.accepted_rate() / a.0.accepted_rate().max(1e-9),
                b.0.delivered_rate() / a.0.delivered_rate().max(1e-9),
                b.0.cpu_ms_per_msg() / a.0.cpu_ms_per_msg().max(1e-9),
            );
            self.row(&format!("{scenario} {}{suffix}", variants[1].0), &b.0, Some(&b.1), note);
            rounds.push(pair);
        }
        Ok(rounds)
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

    fn row_of(&self, label: &str, r: &LoadResult, server: Option<&Server>, note: String) -> Row {
        Row {
            label: label.to_string(),
            accepted: r.accepted_rate(),
            delivered: r.delivered_rate(),
            accept_p50: r.accept_pct(0.50),
            accept_p99: r.accept_pct(0.99),
            e2e_p50: r.latency_pct(0.50),
            cpu_ms: r.cpu_ms_per_msg(),
            load_avg: r.load_avg.clone(),
            cpu_wait: r.cpu_wait_pct(),
            ready_ms: server.map(|s| s.ready.as_secs_f64() * 1e3),
            idle_rss: server.map(|s| s.idle_rss),
            peak_rss: r.peak_rss,
            correct: r.correct(),
            note,
        }
    }

    fn row(&mut self, label: &str, r: &LoadResult, server: Option<&Server>, note: String) {
        let row = self.row_of(label, r, server, note);
        self.rows.push(row);
    }

    /// Prints the sizes of the binary under test and of the static one (`make static`, if built; it
    /// is the appliance binary, held under 8 MiB), and records the latter as a goal.
    fn binary_sizes(&mut self) {
        let mib = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len() as f64 / 1_048_576.0);
        let target = self.hookflow.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let static_bin = target.join("x86_64-unknown-linux-gnu/release/hookflow");
        let release = mib(&self.hookflow).map_or("-".to_string(), |m| format!("{m:.2} MiB"));
        let built = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match mib(&static_bin) {
            Some(m) => {
                // Older than the binary under test: the size is of an earlier source.
                let stale = match (built(&static_bin), built(&self.hookflow)) {
                    (Some(s), Some(h)) if s < h => {
                        "; BUILT BEFORE the binary under test: run `make static` (or `make bench`)"
                    }
                    _ => "",
                };
                println!("binary       hookflow {release}; static {m:.2} MiB ({}){stale}", static_bin.display());
                self.goal("static binary size (make static)", m, "MiB", 8.0, false);
            }
            None => {
                println!(
                    "binary       hookflow {release}; static not built (`make size` builds it and prints its size)"
                )
            }
        }
    }

    /// Records a goal: `value` must be at most (or, with `at_least`, at least) `goal`.
    fn goal(&mut self, name: &str, value: f64, unit: &'static str, goal: f64, at_least: bool) {
        self.goals.push(Goal { name: name.to_string(), value, unit, goal, at_least });
    }

    fn summary(&self, load_at_start: &str, took: Duration) {
        println!();
        println!(
            "== summary: {} s in all; load average {load_at_start} at the start, {} at the end ({} CPUs) ==",
            took.as_secs(),
            loadavg(),
            machine().0
        );
        println!(
            "{:<24} {:>5} {:>5} {:>10} {:>11} {:>15} {:>9} {:>7} {:>6} {:>13}  ratio",
            "scenario",
            "load",
            "wait",
            "accepted/s",
            "delivered/s",
            "accept p50/p99",
            "e2e p50",
            "CPU/msg",
            "ready",
            "RSS idle/peak",
        );
        for r in &self.rows {
            let ready = r.ready_ms.map_or("-".to_string(), |ms| format!("{ms:.0}ms"));
            let idle = r.idle_rss.map_or("-".to_string(), |k| format!("{:.1}", kib_to_mib(k)));
            println!(
                "{:<24} {:>5} {:>5} {:>10.0} {:>11.0} {:>15} {:>9} {:>7} {:>6} {:>13}  {}{}",
                r.label,
                r.load_avg,
                format!("{:.0}%", r.cpu_wait),
                r.accepted,
                r.delivered,
                format!("{:.1}/{:.1}ms", r.accept_p50, r.accept_p99),
                format!("{:.0}ms", r.e2e_p50),
                format!("{:.3}ms", r.cpu_ms),
                ready,
                format!("{idle}/{:.1}MiB", kib_to_mib(r.peak_rss)),
                r.note,
                if r.correct { "" } else { "  INCORRECT (see above)" }
            );
        }
        let logged: usize = self.log_lines.iter().sum();
        println!(
            "server logs  {logged} lines from {} servers at RUST_LOG={}{}",
            self.log_lines.len(),
            self.server_log,
            if logged > 0 && self.server_log == "warn" { " (expected none: see the heads above)" } else { "" }
        );
        if !self.ratios.is_empty() {
            println!("ratios (measured next to each other)");
            for r in &self.ratios {
                println!("  {r}");
            }
        }
        let mut line = String::new();
        for g in &self.goals {
            let met = if g.at_least { g.value >= g.goal } else { g.value <= g.goal };
            let (cmp, unit) = (if g.at_least { "≥" } else { "≤" }, if g.unit.is_empty() { "" } else { " " });
            let _ = write!(
                line,
                "\n  {:<38} {:>8.3}{unit}{:<3}  goal {cmp} {}{unit}{:<3}  {}",
                g.name,
                g.value,
                g.unit,
                g.goal,
                g.unit,
                if met { "met" } else { "MISSED" }
            );
        }
        if !line.is_empty() {
            println!("goals{line}");
        }
        println!(
            "(load: 1-min load average at the start of the load; wait: server threads runnable but waiting for a CPU, \
         in % of one core; CPU/msg: server user+system time over the load window \
         ÷ outputs delivered)"
        );
    }
}

/// The rates of one load that the bare comparison needs.
#[derive(Clone, Copy)]
struct Rates {
    delivered: f64,
    accepted: f64,
    cpu_ms: f64,
}

impl Rates {
    fn of(r: &LoadResult) -> Rates {
        Rates { delivered: r.delivered_rate(), accepted: r.accepted_rate(), cpu_ms: r.cpu_ms_per_msg() }
    }
}

/// Per round, the two variants' results (see `Bench::pair`).
type Rounds = Vec<Vec<(LoadResult, Server)>>;

/// A ratio (second variant ÷ first) per round.
struct Ratios(Vec<f64>);

impl Ratios {
    /// The median, not the mean: one round disturbed by a build next door should not move it.
    fn median(&self) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// The median alone, or `median (round 1, round 2, ...)`; `n/a` where a denominator was 0.
    fn text(&self) -> String {
        let show = |r: f64| if r.is_finite() { format!("{r:.2}") } else { "n/a".into() };
        let median = self.median();
        if self.0.len() < 2 {
            return show(median);
        }
        let each: Vec<String> = self.0.iter().map(|&r| show(r)).collect();
        format!("{} (median; rounds: {})", show(median), each.join(", "))
    }
}

fn ratios(rounds: &Rounds, f: impl Fn(&LoadResult) -> f64) -> Ratios {
    Ratios(rounds.iter().map(|r| f(&r[1].0) / f(&r[0].0)).collect())
}

/// One line of the summary table.
struct Row {
    label: String,
    accepted: f64,
    delivered: f64,
    accept_p50: f64,
    accept_p99: f64,
    e2e_p50: f64,
    cpu_ms: f64,
    load_avg: String,
    /// Server threads runnable but waiting for a CPU, in % of one core.
    cpu_wait: f64,
    ready_ms: Option<f64>,
    idle_rss: Option<u64>,
    peak_rss: u64,
    correct: bool,
    note: String,
}

struct Goal {
    name: String,
    value: f64,
    unit: &'static str,
    goal: f64,
    at_least: bool,
}

/// The heading of a scenario, with the load average right before it.
fn section(name: &str, what: &str) {
    println!();
    println!("== {name}: {what} (load average {}) ==", loadavg());
}

// ---- A server under test ----------------------------------------------------------------------------

/// A running server; killed when dropped.
struct Server {
    pid: u32,
    child: Child,
    /// Where messages are POSTed.
    url: String,
    ready: Duration,
    idle_rss: u64,
    log_path: PathBuf,
}

impl Server {
    /// Stops the server and prints the head of its log; returns the log's line count.
    fn stop(&mut self, level: &str) -> usize {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        println!("server log   {} lines at RUST_LOG={level}", lines.len());
        for line in lines.iter().take(5) {
            println!("             {line}");
        }
        lines.len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- One load ---------------------------------------------------------------------------------------

/// What one load measured.
struct LoadResult {
    load: Load,
    /// The 1-minute load average when the load started.
    load_avg: String,
    pid: u32,
    stats: ClientStats,
    check: OrderCheck,
    /// Load start to the last expected output (or the delivery timeout), in s.
    window: f64,
    cpu_before: ThreadCpu,
    cpu_after: ThreadCpu,
    /// CPU seconds of the server process (`/proc/<pid>/stat`, exited threads included) and of
    /// the bench over the window.
    server_cpu: f64,
    self_cpu: f64,
    peak_rss: u64,
    threads: u64,
    exited: Option<ExitStatus>,
}

/// Sends `load` to `server` with client threads and collects the outputs at `sink` until every
/// accepted message's output arrived (or the delivery timeout), plus a grace period.
fn run_load(server: &mut Server, sink: &Sink, load: Load, epoch: Instant) -> Result<LoadResult, String> {
    let pid = server.pid;
    let pid_text = pid.to_string();
    let load_avg = loadavg();
    let cpu_before = thread_cpu(pid);
    let server_cpu_before = process_cpu_seconds(&pid_text);
    let self_cpu_before = process_cpu_seconds("self");
    let load_started = Instant::now();
    let mut clients: Vec<JoinHandle<ClientStats>> = (0..load.clients)
        .map(|c| {
            // Client c owns sessions c, c+C, c+2C, ...: disjoint, so per-session order is
            // simply the order in which this one thread sends.
            let owned: Vec<(usize, usize)> =
                (c..load.sessions).step_by(load.clients).map(|k| (load.first + k, load.per_session(k))).collect();
            let url = server.url.clone();
            thread::Builder::new()
                .name(format!("client-{c}"))
                .spawn(move || client(&url, &load, &owned, epoch))
                .map_err(|e| format!("cannot spawn a client thread: {e}"))
        })
        .collect::<Result<_, _>>()?;

    // Collect the outputs while the clients run (the sink's channel is bounded).
    let mut check = OrderCheck::new(&load);
    let mut stats: Option<ClientStats> = None;
    let mut load_done: Option<Instant> = None;
    // Taken when the last expected output arrived (or at the timeout): the end of the load window.
    let mut after: Option<(ThreadCpu, f64, f64)> = None;
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
        if after.is_none() && (check.unique >= s.accepted || now >= done + DELIVERY_TIMEOUT) {
            after = Some((thread_cpu(pid), process_cpu_seconds(&pid_text), process_cpu_seconds("self")));
            window_end = now;
        }
        // Past the last expected output, listen a little longer for duplicates and extras.
        if after.is_some() && now >= window_end + GRACE {
            break;
        }
    }
    let (cpu_after, server_cpu_after, self_cpu_after) = after.unwrap_or_default();
    // If the server died during the run these are 0 (and it is reported).
    let mut r = LoadResult {
        load,
        load_avg,
        pid,
        stats: stats.unwrap_or_default(),
        check,
        window: window_end.duration_since(load_started).as_secs_f64(),
        cpu_before,
        cpu_after,
        server_cpu: server_cpu_after - server_cpu_before,
        self_cpu: self_cpu_after - self_cpu_before,
        peak_rss: proc_status_field(pid, "VmHWM").unwrap_or(0),
        threads: proc_status_field(pid, "Threads").unwrap_or(0),
        exited: server.child.try_wait().ok().flatten(),
    };
    r.stats.accept_us.sort_unstable();
    r.check.latency_us.sort_unstable();
    Ok(r)
}

impl LoadResult {
    fn first_send(&self) -> u64 {
        self.stats.first_send_us.unwrap_or(0)
    }

    fn accept_secs(&self) -> f64 {
        self.stats.last_accept_us.unwrap_or(self.first_send()).saturating_sub(self.first_send()) as f64 / 1e6
    }

    fn deliver_secs(&self) -> f64 {
        self.check.last_recv_us.saturating_sub(self.first_send()) as f64 / 1e6
    }

    fn accepted_rate(&self) -> f64 {
        rate(self.stats.accepted, self.accept_secs())
    }

    fn delivered_rate(&self) -> f64 {
        rate(self.check.unique, self.deliver_secs())
    }

    fn accept_pct(&self, q: f64) -> f64 {
        percentile(&self.stats.accept_us, q)
    }

    fn latency_pct(&self, q: f64) -> f64 {
        percentile(&self.check.latency_us, q)
    }

    fn cpu_ms_per_msg(&self) -> f64 {
        1e3 * self.server_cpu / self.check.unique.max(1) as f64
    }

    /// Server threads runnable but waiting for a CPU over the window, in % of one core.
    fn cpu_wait_pct(&self) -> f64 {
        let waited: f64 = thread_deltas(&self.cpu_before, &self.cpu_after).map(|t| t.3).sum();
        100.0 * waited / self.window.max(1e-9)
    }

    /// CPU of the `worker-N` threads (the Flow turns, in hookflow) per delivered output.
    fn worker_ms_per_msg(&self) -> f64 {
        1e3 * prefix_cpu(&self.cpu_before, &self.cpu_after, "worker-") / self.check.unique.max(1) as f64
    }

    fn missing(&self) -> usize {
        self.stats.accepted.saturating_sub(self.check.unique)
    }

    fn correct(&self) -> bool {
        self.stats.errors == 0
            && self.missing() == 0
            && self.check.violations == 0
            && self.check.duplicates == 0
            && self.check.malformed == 0
            && self.exited.is_none()
    }

    fn print(&self) {
        let (l, st, check) = (&self.load, &self.stats, &self.check);
        println!("load         {} messages, {} sessions, {} clients", l.messages, l.sessions, l.clients);
        let accept_secs = self.accept_secs();
        println!(
            "accepted     {}/{} in {:.2} s = {:.0} msg/s (client side; 503 retries {}, errors {})",
            st.accepted,
            l.messages,
            accept_secs,
            self.accepted_rate(),
            st.retries,
            st.errors
        );
        if let Some(e) = &st.first_error {
            println!("             first error: {e}");
        }
        // Outliers matter for a webhook endpoint (the caller may time out), so count them apart.
        let slow = st.accept_us.iter().filter(|&&us| us > 100_000).count();
        println!("accept lat.  {} (POST to its 200; {slow} over 100 ms)", percentiles(&st.accept_us));
        println!(
            "delivered    {}/{} in {:.2} s = {:.0} msg/s (first send to last delivery)",
            check.unique,
            st.accepted,
            self.deliver_secs(),
            self.delivered_rate()
        );
        // Does delivery keep up with ingest? What was delivered by the time the last message was
        // accepted, and the backlog left then: a growing backlog means latency is queueing time.
        let last_accept = st.last_accept_us.unwrap_or(self.first_send());
        let during = check.recv_us.iter().filter(|&&t| t <= last_accept).count();
        println!(
            "             while accepting {:.0} msg/s, backlog {} when the last message was accepted",
            rate(during, accept_secs),
            st.accepted.saturating_sub(during)
        );
        println!("latency      {} (send to sink receipt)", percentiles(&check.latency_us));
        println!(
            "order        {} violations, {} duplicates, {} malformed, {} missing",
            check.violations,
            check.duplicates,
            check.malformed,
            self.missing()
        );
        println!("peak RSS     {} (VmHWM), {} threads", mib(self.peak_rss), self.threads);
        let window = self.window.max(1e-9);
        println!(
            "CPU          over the {:.2} s load window, in % of one core: server {:.0}% ({:.3} ms per message, of which \
             worker threads {:.3} ms), bench (clients + sink) {:.0}%",
            self.window,
            100.0 * self.server_cpu / window,
            self.cpu_ms_per_msg(),
            self.worker_ms_per_msg(),
            100.0 * self.self_cpu / window
        );
        println!(
            "             server threads runnable but waiting for a CPU: {:.0}% of one core (the machine's contention)",
            self.cpu_wait_pct()
        );
        for line in cpu_by_group(self.pid, &self.cpu_before, &self.cpu_after, window) {
            println!("             {line}");
        }
        if let Some(status) = self.exited {
            println!("server       EXITED during the run: {status}");
        }
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
fn client(url: &str, load: &Load, owned: &[(usize, usize)], epoch: Instant) -> ClientStats {
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
    // Paced: this client's share of `rate`, each send at its slot (not after a fixed sleep, so
    // a slow answer does not lower the rate).
    let interval = load.rate.map(|r| Duration::from_secs_f64(load.clients as f64 / r.max(1e-9)));
    let start = Instant::now();
    let mut sent = 0u32;
    for j in 0..rounds {
        for &(k, n) in owned {
            if j < n {
                if let Some(every) = interval {
                    let slot = start + every * sent;
                    thread::sleep(slot.saturating_duration_since(Instant::now()));
                    sent += 1;
                }
                send(&agent, url, (&load.user_id(k), k), j, epoch, &mut st);
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
fn send(agent: &ureq::Agent, url: &str, (user, k): (&str, usize), j: usize, epoch: Instant, st: &mut ClientStats) {
    const MAX_RETRIES: u32 = 600;
    for _ in 0..MAX_RETRIES {
        // The latency clock starts at the attempt that is accepted (503 retries are counted apart).
        let sent = micros(epoch, Instant::now());
        st.first_send_us.get_or_insert(sent);
        let body = json!({ "userId": user, "sessionId": format!("s{k}"), "text": format!("{j} {sent}") });
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
    /// A sink with `threads` threads, each sleeping `delay` before it answers a POST (a slow
    /// webhook; the thread is taken meanwhile, as in a synchronous web app).
    fn start(epoch: Instant, threads: usize, delay: Duration) -> Result<Sink, String> {
        let server = tiny_http::Server::http("127.0.0.1:0").map_err(|e| format!("sink: cannot listen: {e}"))?;
        let server = Arc::new(server);
        let addr = server.server_addr().to_ip().ok_or("sink: not an IP address")?;
        let (tx, rx) = crossbeam_channel::bounded(8192);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|i| {
                let (server, tx, stop) = (server.clone(), tx.clone(), stop.clone());
                thread::Builder::new()
                    .name(format!("sink-{i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match server.recv_timeout(Duration::from_millis(50)) {
                                Ok(Some(req)) => sink_one(req, &tx, epoch, delay),
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

/// Records one request, then (after `delay`) answers 200. Recording before answering matters for
/// the order check: the server sends a session's output n+1 only after n's 200, so n is in the
/// channel first.
fn sink_one(mut req: tiny_http::Request, tx: &Sender<Record>, epoch: Instant, delay: Duration) {
    let recv_us = micros(epoch, Instant::now());
    if *req.method() == tiny_http::Method::Post {
        let mut body = Vec::new();
        let _ = req.as_reader().take(1 << 20).read_to_end(&mut body);
        // Bounded wait: if the bench stopped reading, the record is dropped (and shows as missing).
        let _ = tx.send_timeout(Record::parse(&body, recv_us), Duration::from_secs(1));
        if !delay.is_zero() {
            thread::sleep(delay);
        }
    }
    let _ = req.respond(tiny_http::Response::empty(200));
}

// ---- Checks and statistics ------------------------------------------------------------------------

/// Per-session order, duplicates and latency of the received outputs.
struct OrderCheck {
    /// Number of the load's first session (`s<first>`).
    first: usize,
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
    fn new(p: &Load) -> OrderCheck {
        OrderCheck {
            first: p.first,
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
        let first = self.first;
        let id = r.id.and_then(|(k, j)| Some((k.checked_sub(first)?, j)));
        let Some((k, j)) = id.filter(|&(k, j)| k < self.seen.len() && j < self.seen[k].len()) else {
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

/// `p50 / p99 / max` of sorted µs values, in ms.
fn percentiles(sorted: &[u64]) -> String {
    if sorted.is_empty() {
        return "no samples".into();
    }
    let at = |q| percentile(sorted, q);
    let mean = sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 1e3;
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {mean:.2} ms", at(0.50), at(0.99), at(1.0))
}

/// The nearest-rank `q` percentile of sorted µs values, in ms (0 without samples).
fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1] as f64 / 1e3
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
    format!("{:.1} MiB", kib_to_mib(kib))
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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

/// One thread's cumulative times.
#[derive(Clone, Default)]
struct ThreadTimes {
    name: String,
    /// CPU seconds: the run time of `schedstat` (ns), else user + system time of `stat` (in
    /// ticks of 10 ms, too coarse for a thread that ran a few ms).
    cpu: f64,
    /// Seconds spent runnable but waiting for a CPU (`schedstat`; 0 without schedstats): time
    /// lost to the other threads and processes on the machine, not to locks or I/O.
    wait: f64,
}

/// Per thread of a process: tid ─► times.
type ThreadCpu = BTreeMap<u64, ThreadTimes>;

/// Per thread of `pid`: tid ─► times.
fn thread_cpu(pid: u32) -> ThreadCpu {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return BTreeMap::new() };
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let (name, ticks) = parse_stat(&std::fs::read_to_string(e.path().join("stat")).ok()?)?;
            // "<run ns> <wait ns> <timeslices>"
            let sched: Vec<f64> = std::fs::read_to_string(e.path().join("schedstat"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|f| f.parse::<u64>().ok().map(|ns| ns as f64 / 1e9))
                .collect();
            let (cpu, wait) = match sched[..] {
                [run, wait, ..] => (run, wait),
                _ => (ticks, 0.0),
            };
            Some((tid, ThreadTimes { name, cpu, wait }))
        })
        .collect()
}

/// The group of a thread: `worker-3` ─► `worker-*`; the main thread; `(unnamed)` for threads that
/// kept the process name.
fn thread_group(pid: u32, tid: u64, name: &str, process_name: Option<&str>) -> String {
    match name.rsplit_once('-') {
        _ if tid == u64::from(pid) => "main".to_string(),
        _ if Some(name) == process_name => "(unnamed)".to_string(),
        Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("{stem}-*"),
        _ => name.to_string(),
    }
}

/// CPU and CPU-wait seconds of each thread over the window (threads that ended are missing).
fn thread_deltas<'a>(before: &'a ThreadCpu, after: &'a ThreadCpu) -> impl Iterator<Item = (u64, &'a str, f64, f64)> {
    after.iter().map(|(tid, t)| {
        let b = before.get(tid);
        (*tid, t.name.as_str(), t.cpu - b.map_or(0.0, |b| b.cpu), t.wait - b.map_or(0.0, |b| b.wait))
    })
}

/// Server CPU over the window, per thread group (`worker-3` ─► `worker-*`), busiest first: the
/// group's total and its busiest thread, in % of one core. A thread near 100% is a bottleneck
/// that more CPUs cannot fix; a group near `threads × 100%` is saturated. hookflow names its own
/// threads; the unnamed ones (they inherit the process name) are tiny_http's accept thread and
/// connection pool, which read requests off the sockets.
fn cpu_by_group(pid: u32, before: &ThreadCpu, after: &ThreadCpu, window: f64) -> Vec<String> {
    let mut groups: BTreeMap<String, (usize, f64, f64, f64)> = BTreeMap::new();
    let process_name = after.get(&u64::from(pid)).map(|t| t.name.as_str());
    for (tid, name, used, waited) in thread_deltas(before, after) {
        let g = groups.entry(thread_group(pid, tid, name, process_name)).or_default();
        g.0 += 1;
        g.1 += used;
        g.2 = g.2.max(used);
        g.3 += waited;
    }
    let mut rows: Vec<_> = groups.into_iter().filter(|g| g.1.1 > 0.0).collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    rows.iter()
        .map(|(name, (n, total, max, waited))| {
            let pct = |s: f64| 100.0 * s / window.max(1e-9);
            format!(
                "{name:<16} x{n:<3} {:>5.0}%  (busiest thread {:.0}%; runnable, waiting for a CPU {:.0}%)",
                pct(*total),
                pct(*max),
                pct(*waited)
            )
        })
        .collect()
}

/// CPU seconds over the window of the threads whose name starts with `prefix`.
fn prefix_cpu(before: &ThreadCpu, after: &ThreadCpu, prefix: &str) -> f64 {
    thread_deltas(before, after).filter(|t| t.1.starts_with(prefix)).map(|t| t.2).sum()
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

/// The 1-minute load average: other work on the machine (a build, a test run) skews every number.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| Some(l.split_whitespace().next()?.to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The filesystem type holding `dir` (longest mount point that is a prefix of it), from
/// `/proc/mounts`: what an fsync costs (`durability: full`) depends on it.
fn fs_type(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point).then(|| (point.len(), kind.to_string()))
        })
        .max()
        .map_or_else(|| "an unknown filesystem".into(), |(_, kind)| kind)
}

/// MurmurHash3's 32-bit finaliser: a fixed, well-spread scramble of `k`.
fn fmix32(k: u32) -> u32 {
    let mut h = k.wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
