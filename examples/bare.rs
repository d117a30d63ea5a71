//! The yardstick of `make bench`: a bare pipeline of hookflow's shape, without store and Flow.
//!
//! ```text
//! tiny_http, 4 http-N threads (as hookflow's server.rs): read the body, parse it with serde_json,
//!     check userId/sessionId, hand it over, answer 200 {"status":"accepted","traceId":...}
//!   ─► bounded crossbeam channel ─► worker-N (2 threads): build the output payload
//!      (hookflow's `wire::OutputPayload`, the text echoed, `data: {}`) and number it per session
//!   ─► bounded crossbeam channel ─► sender (1 thread): blocking ureq 3 POST to the webhook,
//!      with `X-Hookflow-Seq`
//! ```
//!
//! What it leaves out is what hookflow adds: SQLite (inbox, session state, outbox), the Flow
//! interpreter, retries with a schedule, dead letters, metrics, shutdown draining. So hookflow's
//! delivered/s ÷ this one's, measured by the bench under the same load, is the price of those.
//!
//! Order per session holds as in hookflow: the message is in a channel before its 200 goes out
//! (the client sends the session's next one only after that 200), each session always goes to
//! the same worker (its channel is FIFO), and there is one sender. The worker channels are one
//! per worker for that reason: with one shared channel two workers could swap a session's
//! consecutive messages.
//!
//! A full channel blocks the http thread (backpressure) instead of answering 503. A failed POST
//! is tried again a few times, then dropped with a line on stderr: there is nothing to keep it in.
//!
//! Usage: `bare --listen 127.0.0.1:8081 --webhook http://127.0.0.1:9000/hook`. Runs until killed.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use hookflow::wire::{self, AiOutput, OutputPayload};
use serde_json::{Value, json};

/// Threads answering HTTP requests, as hookflow's `server::HTTP_THREADS`.
const HTTP_THREADS: usize = 4;
/// Threads building outputs (hookflow: `workers: 0` = one per CPU, 2 on the bench machine).
const WORKERS: usize = 2;
/// Messages waiting for a worker, in all (hookflow's default `limits.queueCapacity`).
const QUEUE: usize = 10_000;
/// Outputs waiting for the sender.
const OUT_QUEUE: usize = 4096;
/// Largest body read (hookflow's default `limits.maxBodyBytes`).
const MAX_BODY: u64 = 65_536;
/// Attempts per output before it is dropped.
const ATTEMPTS: u32 = 5;

/// An accepted message on its way to a worker.
struct Job {
    user_id: String,
    session_id: String,
    text: String,
    trace_id: String,
}

/// A built output on its way to the sender.
struct Out {
    seq: u64,
    body: String,
}

fn main() -> ExitCode {
    let (listen, webhook) = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare: {e}\nusage: bare --listen ADDR --webhook URL");
            return ExitCode::from(1);
        }
    };
    let server = match tiny_http::Server::http(&listen) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("bare: cannot listen on {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    let (out_tx, out_rx) = bounded::<Out>(OUT_QUEUE);
    let workers: Vec<Sender<Job>> = (0..WORKERS)
        .map(|i| {
            let (tx, rx) = bounded::<Job>(QUEUE / WORKERS);
            let out_tx = out_tx.clone();
            spawn(format!("worker-{i}"), move || worker(&rx, &out_tx));
            tx
        })
        .collect();
    drop(out_tx);
    spawn("sender".into(), move || sender(&out_rx, &webhook));
    let http: Vec<_> = (0..HTTP_THREADS)
        .map(|i| {
            let (server, workers) = (server.clone(), workers.clone());
            spawn(format!("http-{i}"), move || {
                while let Ok(req) = server.recv() {
                    handle(req, &workers);
                }
            })
        })
        .collect();
    for h in http {
        let _ = h.join();
    }
    ExitCode::SUCCESS
}

fn args() -> Result<(String, String), String> {
    let mut listen = None;
    let mut webhook = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let slot = match a.as_str() {
            "--listen" => &mut listen,
            "--webhook" => &mut webhook,
            _ => return Err(format!("unknown argument {a:?}")),
        };
        *slot = Some(it.next().ok_or_else(|| format!("{a} needs a value"))?);
    }
    Ok((listen.ok_or("--listen is required")?, webhook.ok_or("--webhook is required")?))
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    thread::Builder::new().name(name).spawn(f).expect("the OS lets us start a few threads")
}

/// One request: `GET /healthz` (for the bench's ready time) or a message POST to any other path.
fn handle(mut req: tiny_http::Request, workers: &[Sender<Job>]) {
    let (status, body) = if req.url() == "/healthz" {
        (200, json!({"status": "ok"}))
    } else if *req.method() != tiny_http::Method::Post {
        (405, json!({"error": {"code": "method_not_allowed", "message": "POST a message"}}))
    } else {
        let mut body = Vec::new();
        let _ = req.as_reader().take(MAX_BODY).read_to_end(&mut body);
        match validate(&body) {
            Ok(job) => {
                let trace_id = job.trace_id.clone();
                let mut h = DefaultHasher::new();
                (&job.user_id, &job.session_id).hash(&mut h);
                // Before the 200: the session's next message cannot overtake this one.
                match workers[h.finish() as usize % workers.len()].send(job) {
                    Ok(()) => (200, json!({"status": "accepted", "traceId": trace_id})),
                    Err(_) => (503, json!({"error": {"code": "stopping", "message": "the worker is gone"}})),
                }
            }
            Err(msg) => (400, json!({"error": {"code": "invalid_request", "message": msg}})),
        }
    };
    let resp = tiny_http::Response::from_string(body.to_string()).with_status_code(status).with_header(
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json; charset=utf-8"[..])
            .expect("a valid header"),
    );
    let _ = req.respond(resp);
}

/// The minimum of hookflow's validation: a JSON object with non-empty string ids.
fn validate(body: &[u8]) -> Result<Job, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let id = |name: &str| match v.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("\"{name}\" must be a non-empty string")),
    };
    Ok(Job {
        user_id: id("userId")?,
        session_id: id("sessionId")?,
        text: v.get("text").and_then(Value::as_str).unwrap_or("").to_owned(),
        trace_id: wire::new_trace_id(),
    })
}

/// Builds each output (the echo Flow's, in hookflow's payload shape) and numbers it per session.
fn worker(rx: &Receiver<Job>, out: &Sender<Out>) {
    let data = json!({});
    let mut seqs: HashMap<(String, String), u64> = HashMap::new();
    for job in rx {
        let body = wire::output_body(&OutputPayload {
            user_id: &job.user_id,
            session_id: &job.session_id,
            ai_output: AiOutput {
                text: &job.text,
                data: &data,
                trace_id: &job.trace_id,
                disable_sensitive_logging: false,
                source: "bot",
                agent_name: None,
            },
        });
        let seq = seqs.entry((job.user_id, job.session_id)).or_insert(0);
        *seq += 1;
        if out.send(Out { seq: *seq, body }).is_err() {
            return;
        }
    }
}

/// POSTs the outputs one at a time, as one hookflow sender lane.
fn sender(rx: &Receiver<Out>, url: &str) {
    // As hookflow's `sender::agent()`: per-phase timeouts, no `timeout_global` (which would
    // resolve the host on a new thread for every request).
    let timeout = Some(Duration::from_secs(15));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_send_request(timeout)
        .timeout_send_body(timeout)
        .timeout_recv_response(timeout)
        .timeout_recv_body(timeout)
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent("hookflow-bare")
        .build()
        .into();
    for out in rx {
        let mut last = String::new();
        let delivered = (0..ATTEMPTS).any(|attempt| {
            if attempt > 0 {
                thread::sleep(Duration::from_millis(100));
            }
            let sent = agent
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Hookflow-Seq", out.seq.to_string())
                .send(out.body.as_bytes());
            match sent {
                Ok(mut resp) => {
                    let _ = resp.body_mut().with_config().limit(16 * 1024).read_to_vec();
                    last = format!("HTTP {}", resp.status());
                    resp.status().is_success()
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        if !delivered {
            eprintln!("bare: output dropped after {ATTEMPTS} attempts: {last}");
        }
    }
}
