//! The worker pool and the per-session scheduler.
//!
//! The scheduler keeps, in memory, the ids of queued messages per session and a FIFO of sessions
//! that have work and are not running. A worker takes a session from that FIFO, runs exactly one
//! message of it, commits, and puts the session back at the *end* of the FIFO if it has more.
//! So messages of one session run one at a time and in acceptance order, different sessions run
//! in parallel, no worker ever waits for another session, and a session flooded with a thousand
//! messages gets one turn per round like everybody else.
//!
//! The queue is on disk (the `inbox` table); the in-memory part is rebuilt from it at start-up.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use serde_json::{Map, Value, json};

use crate::flow::{self, Output, RunOptions, SessionState};
use crate::service::Shared;
use crate::store::{
    InboxRow, JobKind, NewOutput, SessionKey, SessionRow, StoreError, TranscriptLine, TurnCommit, TurnInput,
};
use crate::util::{now_ms, shown};
use crate::wire::{Accepted, AiOutput, OutputPayload, output_body};

/// What a worker is told to do next.
pub(crate) enum Job {
    /// Run the next message of this session.
    Run(SessionKey),
    /// Exit the loop.
    Stop,
}

/// Per-session queues of message ids, and the FIFO of runnable sessions.
pub(crate) struct Scheduler {
    state: Mutex<Sched>,
    ready_tx: Sender<Job>,
    ready_rx: Receiver<Job>,
}

#[derive(Default)]
struct Sched {
    sessions: HashMap<SessionKey, VecDeque<i64>>,
    /// Messages queued or running, all sessions together.
    queued: usize,
}

impl Scheduler {
    pub(crate) fn new(capacity: usize, workers: usize) -> Scheduler {
        // A session is in the FIFO at most once and has at least one queued message, so
        // capacity + one Stop per worker always fits: sending never blocks.
        let (ready_tx, ready_rx) = bounded(capacity + workers + 1);
        Scheduler { state: Mutex::default(), ready_tx, ready_rx }
    }

    fn lock(&self) -> MutexGuard<'_, Sched> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an already stored message (start-up recovery, or the acceptor). Ids of one
    /// session must arrive in increasing order.
    pub(crate) fn enqueue(&self, key: SessionKey, id: i64) {
        let mut s = self.lock();
        s.queued += 1;
        let q = s.sessions.entry(key.clone()).or_default();
        q.push_back(id);
        if q.len() == 1 {
            self.ready_tx.try_send(Job::Run(key)).expect("the ready FIFO has room for every session");
        }
    }

    /// Messages queued or running.
    pub(crate) fn depth(&self) -> usize {
        self.lock().queued
    }

    /// Sessions with queued or running messages.
    pub(crate) fn active_sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    fn head(&self, key: &SessionKey) -> Option<i64> {
        self.lock().sessions.get(key).and_then(|q| q.front().copied())
    }

    /// The head message of `key` is done: drop it, and requeue the session if it has more.
    fn done(&self, key: SessionKey) {
        let mut s = self.lock();
        s.queued -= 1;
        let q = s.sessions.get_mut(&key).expect("a running session has a queue");
        q.pop_front();
        if q.is_empty() {
            s.sessions.remove(&key);
        } else {
            self.ready_tx.try_send(Job::Run(key)).expect("the ready FIFO has room for every session");
        }
    }

    /// Tells `n` workers to stop after their current turn.
    pub(crate) fn stop(&self, n: usize) {
        for _ in 0..n {
            // Room for one Stop per worker is reserved in `new`.
            let _ = self.ready_tx.try_send(Job::Stop);
        }
    }
}

/// The worker loop: takes a runnable session, runs its next message, repeats until `Stop`.
pub(crate) fn run(shared: Arc<Shared>) {
    let rx = shared.sched.ready_rx.clone();
    while let Ok(Job::Run(key)) = rx.recv() {
        expire_sessions(&shared);
        let Some(id) = shared.sched.head(&key) else { continue };
        match handle(&shared, id) {
            Ok(()) => shared.sched.done(key),
            Err(e) => {
                // The store failed (disk full, I/O error): the message stays queued, on disk and
                // here, and is tried again shortly; nothing is lost or reordered.
                log::error!("cannot run message {id}: {e}; retrying in 1s");
                std::thread::sleep(Duration::from_secs(1));
                shared.sched.ready_tx.try_send(Job::Run(key)).expect("the session's slot in the FIFO is free");
            }
        }
    }
}

/// How often sessions older than `sessions.ttlSeconds` are removed from the store.
const EXPIRY_EVERY_MS: i64 = 10 * 60 * 1000;

/// Removes expired sessions, at most once per `EXPIRY_EVERY_MS` across all workers (and at the
/// first message after start).
pub(crate) fn expire_sessions(shared: &Shared) {
    let now = now_ms();
    let next = shared.next_expiry_ms.load(std::sync::atomic::Ordering::Relaxed);
    if now < next
        || shared
            .next_expiry_ms
            .compare_exchange(
                next,
                now + EXPIRY_EVERY_MS,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_err()
    {
        return;
    }
    let before = now - shared.config.session_ttl.as_millis() as i64;
    match shared.store.expire_sessions(before) {
        Ok(0) => {}
        Ok(n) => log::info!("forgot {n} session(s) untouched for longer than sessions.ttlSeconds"),
        Err(e) => log::error!("cannot expire sessions: {e}"),
    }
}

/// Runs one queued message and commits its effects.
fn handle(shared: &Shared, id: i64) -> Result<(), StoreError> {
    let Some(TurnInput { row, session, profile }) = shared.store.load_turn(id)? else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let plan = match catch_unwind(AssertUnwindSafe(|| plan_turn(shared, &row, session, profile))) {
        Ok(plan) => plan,
        Err(_) => {
            // One bad message costs one message: it is dropped, the worker and session live on.
            log::error!("turn of message {id} ({}) panicked; the message is dropped", row.key.endpoint);
            TurnPlan::default()
        }
    };
    let now = now_ms();
    let lane = crate::sender::lane_hash(&row.key);
    shared.store.commit_turn(&TurnCommit {
        inbox_id: id,
        key: &row.key,
        session: plan.session.as_ref(),
        profile: plan.profile.as_deref(),
        outputs: &plan.outputs,
        lane_hash: lane,
        now_ms: now,
        checkpoint: None,
        transcript: &plan.transcript,
    })?;
    shared.metrics.turn_done(started.elapsed());
    if !plan.outputs.is_empty() {
        shared.senders.wake(lane);
    }
    Ok(())
}

/// What a turn will commit.
#[derive(Default)]
struct TurnPlan {
    session: Option<SessionRow>,
    profile: Option<String>,
    outputs: Vec<NewOutput>,
    transcript: Vec<TranscriptLine>,
}

fn plan_turn(shared: &Shared, row: &InboxRow, session: Option<SessionRow>, profile: Option<String>) -> TurnPlan {
    let mut plan = run_turn(shared, row, session, profile);
    let Some(ep) = shared.config.endpoint_by_name(&row.key.endpoint) else { return plan };
    if ep.data_protection.collect_conversations {
        plan.transcript = transcript(row, &plan);
    }
    plan
}

/// The transcript lines of a turn: the user's message (not for a notify) and every output.
fn transcript(row: &InboxRow, plan: &TurnPlan) -> Vec<TranscriptLine> {
    let now = now_ms();
    let mut lines = Vec::new();
    if row.kind != JobKind::Notify
        && let Ok(acc) = serde_json::from_str::<Accepted>(&row.payload)
    {
        let data = acc.data.map_or_else(|| "{}".to_owned(), |d| Value::Object(d).to_string());
        lines.push(TranscriptLine { source: "user", text: acc.text.unwrap_or_default(), data, at_ms: acc.at });
    }
    for o in &plan.outputs {
        let body: Value = serde_json::from_str(&o.body).unwrap_or(Value::Null);
        let out = &body["AIOutput"];
        let text = out["text"].as_str().unwrap_or("").to_owned();
        lines.push(TranscriptLine { source: "bot", text, data: out["data"].to_string(), at_ms: now });
    }
    lines
}

fn run_turn(shared: &Shared, row: &InboxRow, session: Option<SessionRow>, profile: Option<String>) -> TurnPlan {
    let Some(ep) = shared.config.endpoint_by_name(&row.key.endpoint) else {
        log::warn!("message {} is for endpoint {:?}, which is no longer configured; dropped", row.id, row.key.endpoint);
        return TurnPlan::default();
    };
    let acc: Accepted = match serde_json::from_str(&row.payload) {
        Ok(a) => a,
        Err(e) => {
            log::error!("message {} has an unreadable payload ({e}); dropped", row.id);
            return TurnPlan::default();
        }
    };
    let mask = ep.data_protection.mask_logging;
    let body = |o: &Output| {
        output_body(&OutputPayload {
            user_id: &row.key.user_id,
            session_id: &row.key.session_id,
            ai_output: AiOutput {
                text: &o.text,
                data: &o.data,
                trace_id: &acc.trace_id,
                disable_sensitive_logging: mask,
                source: "bot",
            },
        })
    };
    let new_output = |o: &Output| NewOutput { body: body(o), not_before_ms: 0 };
    if row.kind == JobKind::Notify {
        let data = acc.data.clone().map(Value::Object).unwrap_or_else(|| json!({}));
        let o = Output { text: acc.text.clone().unwrap_or_default(), data };
        return TurnPlan { outputs: vec![new_output(&o)], ..TurnPlan::default() };
    }
    let flow = &shared.flows[&ep.name];
    let mut session = session.unwrap_or_default();
    let ttl = shared.config.session_ttl.as_millis() as i64;
    if session.updated_ms > 0 && now_ms() - session.updated_ms > ttl {
        // Untouched for longer than sessions.ttlSeconds: forgotten, as if expired already.
        session = SessionRow { seq: session.seq, ..SessionRow::default() };
    }
    let mut state: SessionState = match serde_json::from_str(&session.state) {
        Ok(s) if !session.state.is_empty() => s,
        _ => SessionState::new(flow),
    };
    let messages = session.messages + 1;
    let mut input = build_input(shared, row, &acc, messages);
    let keep_profile = ep.data_protection.contact_profiles;
    let mut profile_v: Value =
        profile.filter(|_| keep_profile).and_then(|p| serde_json::from_str(&p).ok()).unwrap_or_else(|| json!({}));
    let before = profile_v.clone();
    let random = u64::from_le_bytes(crate::util::random_bytes::<8>());
    let opts = RunOptions { max_nodes: shared.config.limits.max_nodes_per_turn, random };
    let turn = flow::run(flow, &mut state, &mut input, &mut profile_v, opts);
    if let Some(e) = &turn.error {
        log::warn!("endpoint {}: {e}", ep.name);
    }
    log::debug!(
        "{}: user={} session={} turn {messages} produced {} output(s): {:?}",
        ep.name,
        shown(mask, &row.key.user_id),
        shown(mask, &row.key.session_id),
        turn.outputs.len(),
        turn.outputs.iter().map(|o| shown(mask, &o.text)).collect::<Vec<_>>()
    );
    let state_json = serde_json::to_string(&state).expect("session state is plain JSON");
    TurnPlan {
        session: Some(SessionRow { state: state_json, seq: session.seq, messages, updated_ms: 0 }),
        profile: (keep_profile && profile_v != before).then(|| profile_v.to_string()),
        outputs: turn.outputs.iter().map(new_output).collect(),
        transcript: vec![],
    }
}

/// The `input` object of flows.md's Memory table.
fn build_input(shared: &Shared, row: &InboxRow, acc: &Accepted, execution: i64) -> Value {
    let ep = shared.config.endpoint_by_name(&row.key.endpoint).expect("checked by the caller");
    let mode = match (acc.text.as_deref().is_some_and(|t| !t.is_empty()), acc.data.is_some()) {
        (true, true) => "TextData",
        (false, true) => "DataOnly",
        _ => "TextOnly",
    };
    let mut m = Map::new();
    m.insert("text".into(), acc.text.clone().map_or(Value::Null, Value::String));
    m.insert("data".into(), acc.data.clone().map_or(Value::Null, Value::Object));
    m.insert("userId".into(), row.key.user_id.clone().into());
    m.insert("sessionId".into(), row.key.session_id.clone().into());
    m.insert("URLToken".into(), ep.url_token.clone().into());
    m.insert("channel".into(), "webhook".into());
    m.insert("endpointName".into(), ep.name.clone().into());
    m.insert("traceId".into(), acc.trace_id.clone().into());
    m.insert("mode".into(), mode.into());
    m.insert("execution".into(), execution.into());
    m.insert("currentTime".into(), crate::util::iso8601(now_ms()).into());
    m.insert("ip".into(), acc.ip.clone().map_or(Value::Null, Value::String));
    m.insert("intent".into(), Value::Null);
    m.insert("intentScore".into(), Value::Null);
    m.insert("intentRanking".into(), json!([]));
    m.insert("slots".into(), json!({}));
    m.insert("result".into(), Value::Null);
    m.insert("activeQuestion".into(), Value::Null);
    m.insert("codeNodeError".into(), Value::Null);
    m.insert("testMode".into(), acc.test_mode.into());
    m.insert("kind".into(), if row.kind == JobKind::Inject { "inject" } else { "message" }.into());
    Value::Object(m)
}
