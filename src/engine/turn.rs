//! One queued message, from its inbox row to committed outputs: prepare the `input` object and
//! the session, run NLU and the Flow, and commit state and outputs in one transaction.
//!
//! An `http` node makes the turn a sequence of commits: at the node, what came before is saved
//! (its outputs start going out) and the inbox row keeps a `resume` record (the request, the
//! `input`, the accumulated sleep); the call is made; the turn goes on. After a crash during
//! the call, the row is found with its resume record and the turn continues at the node.

mod handover;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::driver::{Driven, From, Host, drive, understand};
use super::effects::{Answer, Call};
use super::trace::TraceBuilder;
use super::translate::{self, After, Finished};
use crate::config::{Config, Endpoint};
use crate::delivery::Wake;
use crate::domain::{InboxRow, JobKind, NewOutput, SessionRow, Speaker, TranscriptLine, TurnInput, TurnRecord};
use crate::flow::script::LazyEngine;
use crate::flow::transform::{Outcome, Transformers};
use crate::flow::{Flow, HttpCall, Output, RunOptions, SessionState, Turn, TurnIo};
use crate::ops::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::util::{now_ms, shown};
use crate::wire::{Accepted, AiOutput, OutputPayload, output_body};

/// The compiled Flow of each endpoint, by endpoint name.
pub(crate) type Flows = HashMap<String, Arc<Flow>>;

/// What running a turn needs; one per process, shared by the workers.
pub(crate) struct Turns {
    pub config: Arc<Config>,
    pub flows: Arc<Flows>,
    pub transformers: Arc<Transformers>,
    pub store: Arc<dyn Store>,
    /// A checkpoint's outputs go out during the call: their lane is woken.
    pub wake: Wake,
    pub metrics: Arc<Metrics>,
}

/// Deepest nesting kept in `context` and `profile` (see `record`).
const MAX_STATE_DEPTH: usize = 100;

/// What the inbox row keeps while a turn waits at an `http` node.
#[derive(Debug, Serialize, Deserialize)]
struct Resume {
    call: HttpCall,
    input: Value,
    delay_ms: u64,
    #[serde(default)]
    steps: u32,
    /// The session's message count this checkpoint wrote: resumed, the turn compares the store's
    /// count against it to see whether the session was forgotten while the call was parked.
    /// (Absent in records of versions before parking.)
    #[serde(default)]
    messages: Option<i64>,
    /// The turn's session state and profile at the checkpoint: the rest of the turn goes on
    /// from them, also when the session was forgotten meanwhile (its new state is then dropped
    /// at the commit, but the turn's outputs are those of its own context).
    #[serde(default)]
    state: Option<SessionState>,
    #[serde(default)]
    profile: Option<Value>,
}

/// A Flow turn being run.
struct Conversation<'a> {
    cx: &'a Turns,
    row: &'a InboxRow,
    ep: &'a Endpoint,
    acc: Accepted,
    flow: Arc<Flow>,
    state: SessionState,
    input: Value,
    profile: Value,
    profile_before: Value,
    messages: i64,
    /// The session's message count as read (see `TurnRecord::loaded_messages`).
    loaded_messages: i64,
    /// Whether the user's line went into the transcript already.
    logged_input: bool,
    /// What the turn does, for the console: test-mode turns only.
    trace: Option<TraceBuilder>,
    /// A checkpoint whose outputs wait for their translation (committed once they have it).
    held: Option<Call>,
}

/// How far one visit of a worker took a message.
pub(crate) enum Step {
    /// The turn ended: the writer commits this record and releases the session.
    Done(TurnRecord),
    /// The turn waits for a call (its checkpoint, if any, is committed); the session stays busy.
    Parked(Call),
    /// The message is no longer queued.
    Gone,
}

/// Runs one queued message, from its start or from the answer it was parked for (`answer`):
/// commits its checkpoints itself and returns how far it got.
pub(crate) fn handle(cx: &Turns, engine: &mut LazyEngine, id: i64, answer: Option<Answer>) -> Result<Step, StoreError> {
    let Some(TurnInput { row, session, profile }) = cx.store.load_turn(id)? else {
        return Ok(Step::Gone);
    };
    let started = Instant::now();
    // Fresh JavaScript globals and the whole limits.turnScriptMs for this turn.
    engine.begin_turn();
    let Some(ep) = cx.config.endpoint_by_name(&row.key.endpoint) else {
        log::warn!("message {id} is for endpoint {:?}, which is no longer configured; dropped", row.key.endpoint);
        return Ok(Step::Done(drop_message(&row)));
    };
    let acc: Accepted = match serde_json::from_str(&row.payload) {
        Ok(a) => a,
        Err(e) => {
            log::error!("message {id} has an unreadable payload ({e}); dropped");
            return Ok(Step::Done(drop_message(&row)));
        }
    };
    // A notify runs the output transformer, which may panic too: both are inside the guard.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let notify = row.kind == JobKind::Notify;
        let mut conv = Conversation::new(cx, &row, ep, acc, session, profile);
        if notify {
            let data = conv.acc.data.clone().map(Value::Object).unwrap_or_else(|| json!({}));
            let o = Output { text: conv.acc.text.clone().unwrap_or_default(), data, delay_ms: 0 };
            return Ok(Step::Done(conv.notify_record(engine, &o)));
        }
        // Translated outputs of a finished turn (or part): only their bodies are left to make.
        let answer = match answer {
            Some(Answer::Translate(done)) => match translate::outputs_answered(ep, &cx.metrics, *done) {
                Ok(finished) => return conv.translated(engine, finished),
                Err(done) => Some(Answer::Translate(done)),
            },
            other => other,
        };
        conv.run(engine, answer)
    }));
    let result = match outcome {
        Ok(r) => r,
        Err(_) => {
            // One bad message costs one message: it is dropped, the worker and session live on.
            log::error!("turn of message {id} ({}) panicked; the message is dropped", row.key.endpoint);
            engine.reset();
            Ok(Step::Done(drop_message(&row)))
        }
    };
    cx.metrics.turn_done(started.elapsed());
    result
}

/// Cuts what nests deeper than `MAX_STATE_DEPTH` in a value about to be stored, with a warning.
fn cut_deep(endpoint: &str, what: &str, v: &mut Value) {
    if crate::util::prune_depth(v, MAX_STATE_DEPTH) {
        log::warn!("{endpoint}: {what} nested deeper than {MAX_STATE_DEPTH} levels; the deeper part is set to null");
    }
}

/// Removes a message that cannot run, without outputs.
fn drop_message(row: &InboxRow) -> TurnRecord {
    record(row, None, vec![], vec![], 0)
}

/// A turn's writes that leave the profile alone (see `Conversation::record` for one that
/// changes it).
fn record(
    row: &InboxRow,
    session: Option<SessionRow>,
    outputs: Vec<NewOutput>,
    transcript: Vec<TranscriptLine>,
    loaded_messages: i64,
) -> TurnRecord {
    TurnRecord {
        inbox_id: row.id,
        key: row.key.clone(),
        session,
        profile: None,
        outputs,
        now_ms: now_ms(),
        transcript,
        loaded_messages,
        checkpoint: None,
        trace: None,
    }
}

impl<'a> Conversation<'a> {
    fn new(
        cx: &'a Turns,
        row: &'a InboxRow,
        ep: &'a Endpoint,
        acc: Accepted,
        session: Option<SessionRow>,
        profile: Option<String>,
    ) -> Conversation<'a> {
        let flow = cx.flows[&ep.name].clone();
        let mut session = session.unwrap_or_default();
        // A resumed part's checkpoint wrote the session: when the call started.
        let parked_at = row.resume.is_some().then_some(session.updated_ms);
        // What the store holds, for the forgotten-meanwhile check at commit (see `TurnRecord`).
        let loaded_messages = session.messages;
        let ttl = cx.config.session_ttl.as_millis() as i64;
        let expired = session.updated_ms > 0 && now_ms() - session.updated_ms > ttl;
        if (expired || session.state.is_none()) && row.resume.is_none() {
            // Untouched for longer than sessions.ttlSeconds (or expired already, which keeps the
            // count for that check): a fresh session that keeps only its output counter.
            session = SessionRow { seq: session.seq, ..SessionRow::default() };
        }
        let state = session
            .state
            .as_deref()
            .and_then(|s| serde_json::from_str::<SessionState>(s).ok())
            .unwrap_or_else(|| SessionState::new(&flow));
        // A resumed turn was counted when it started.
        let messages = if row.resume.is_some() { session.messages } else { session.messages + 1 };
        let keep = ep.data_protection.contact_profiles;
        let profile: Value =
            profile.filter(|_| keep).and_then(|p| serde_json::from_str(&p).ok()).unwrap_or_else(|| json!({}));
        let input = build_input(ep, row, &acc, messages);
        let trace = acc.test_mode.then(|| TraceBuilder::new(&state.context, parked_at));
        Conversation {
            cx,
            row,
            ep,
            acc,
            flow,
            state,
            input,
            profile_before: profile.clone(),
            profile,
            messages,
            loaded_messages,
            logged_input: row.resume.is_some(),
            trace,
            held: None,
        }
    }

    /// Runs the turn from its start or from the answer it was parked for, to its end or its
    /// next park; checkpoints are committed on the way.
    fn run(&mut self, engine: &mut LazyEngine, mut answer: Option<Answer>) -> Result<Step, StoreError> {
        if let Some(step) = self.handover_first(engine, &mut answer)? {
            return Ok(step);
        }
        let flow = self.flow.clone();
        let from = match self.row.resume.as_deref().map(serde_json::from_str::<Resume>) {
            Some(Ok(r)) => {
                self.input = r.input;
                if let Some(n) = r.messages {
                    (self.messages, self.loaded_messages) = (n, n);
                }
                if let Some(state) = r.state {
                    self.state = state;
                }
                if let Some(profile) = r.profile {
                    (self.profile, self.profile_before) = (profile.clone(), profile);
                }
                let before = Turn { delay_ms: r.delay_ms, steps: r.steps, ..Turn::default() };
                match answer {
                    Some(Answer::Http(answer)) => {
                        if let Some(t) = &mut self.trace {
                            t.answer(&r.call, &answer, now_ms());
                        }
                        From::Answer { call: r.call, answer, before: Box::new(before) }
                    }
                    _ => {
                        // Queued with its checkpoint but no answer: the process stopped while
                        // the call was parked. The call is made again.
                        log::info!(
                            "{}: message {} waits at its http node again after a restart",
                            self.ep.name,
                            self.row.id
                        );
                        return Ok(Step::Parked(Call::Http(r.call)));
                    }
                }
            }
            _ => {
                let (ep, metrics) = (self.ep, &self.cx.metrics);
                if let Err(call) =
                    understand(ep, &flow, metrics, &mut self.state, &mut self.input, self.messages, answer)
                {
                    return Ok(Step::Parked(call));
                }
                if let Some(t) = &mut self.trace {
                    t.nlu(&self.input);
                }
                if let Some(step) = self.handover_intercept() {
                    return Ok(step);
                }
                From::Start
            }
        };
        let driven = drive(self, &flow, engine, from)?;
        self.driven(engine, driven)
    }

    /// Where a run of the Flow ended: a finished turn has its outputs translated (when the
    /// endpoint translates) and committed, or starts the handover its `handover` node asked for;
    /// a part stopped at an `http` node waits for the call (and, first, for the translation of
    /// its outputs, when its checkpoint holds some).
    fn driven(&mut self, engine: &mut LazyEngine, driven: Driven) -> Result<Step, StoreError> {
        match driven {
            Driven::Done(turn) if turn.handover.is_some() => self.handover_after(engine, turn),
            Driven::Done(turn) => self.finish(engine, turn.outputs),
            Driven::Parked(call) => match self.held.take() {
                Some(Call::Translate(mut job)) => {
                    if let translate::Then::Outputs(held) = &mut job.then {
                        held.next = Some(Call::Http(call));
                    }
                    Ok(Step::Parked(Call::Translate(job)))
                }
                _ => Ok(Step::Parked(Call::Http(call))),
            },
        }
    }

    /// The end of the turn: its record, or first the translation of its outputs.
    fn finish(&mut self, engine: &mut LazyEngine, mut outputs: Vec<Output>) -> Result<Step, StoreError> {
        match translate::after_flow(self.ep, &mut self.state, &self.input, &mut outputs) {
            After::Ready => Ok(Step::Done(self.record(engine, &outputs))),
            After::Ask(pending) => {
                let record = self.record_for_translation(engine, &outputs);
                Ok(Step::Parked(pending.hold(record, outputs, None)))
            }
        }
    }

    /// The record of a turn whose outputs go to the provider first: everything but the outputs
    /// (the trace shows what the Flow said).
    fn record_for_translation(&mut self, engine: &mut LazyEngine, outputs: &[Output]) -> TurnRecord {
        let mut record = self.record(engine, &[]);
        if let Some(t) = &self.trace {
            record.trace = Some(Box::new(t.finish(&self.acc.trace_id, &self.input, &self.state.context, outputs)));
        }
        record
    }

    /// A held turn (or checkpoint) with its translated outputs: their bodies, then the commit.
    fn translated(mut self, engine: &mut LazyEngine, f: Finished) -> Result<Step, StoreError> {
        let mut record = f.record;
        let at = record.now_ms;
        record.outputs = f
            .outputs
            .iter()
            .filter_map(|o| Some(NewOutput { body: self.body(engine, o)?, not_before_ms: at + o.delay_ms as i64 }))
            .collect();
        match f.next {
            None => Ok(Step::Done(record)),
            Some(Call::Handover(call)) => self.start_handover(record, *call),
            Some(call) => {
                self.cx.store.commit_turn(&record)?;
                if !record.outputs.is_empty() {
                    self.cx.wake.session(&record.key);
                }
                Ok(Step::Parked(call))
            }
        }
    }

    fn log(&self, turn: &Turn) {
        let name = &self.ep.name;
        if let Some(e) = &turn.error {
            log::warn!("{name}: {e}");
        }
        for w in &turn.warnings {
            log::warn!("{name}: {w}");
        }
        let mask = self.ep.data_protection.mask_logging;
        if log::log_enabled!(log::Level::Debug) && !turn.nodes.is_empty() {
            // Each Flow step (config.md: `debug` shows them): node names and types are the
            // Flow author's, not the user's, so masking leaves them.
            let steps: Vec<String> =
                turn.nodes.iter().map(|(n, kind)| format!("{} ({kind})", self.flow.nodes[*n].name())).collect();
            log::debug!("{name}: turn {} ran {}", self.messages, steps.join(" → "));
        }
        log::debug!(
            "{name}: user={} session={} turn {} produced {} output(s): {:?}",
            shown(mask, &self.row.key.user_id),
            shown(mask, &self.row.key.session_id),
            self.messages,
            turn.outputs.len(),
            turn.outputs.iter().map(|o| shown(mask, &o.text)).collect::<Vec<_>>()
        );
    }

    /// The exact body POSTed for an output: the standard payload, or what the output
    /// transformer made of it; `None` when the transformer drops the output.
    fn body(&self, engine: &mut LazyEngine, o: &Output) -> Option<String> {
        let Some(code) = self.cx.transformers.get(&self.ep.name).filter(|c| c.settings.output) else {
            return Some(output_body(&self.standard_payload(o)));
        };
        let payload = self.standard_payload(o);
        let standard = output_body(&payload);
        let processed = serde_json::to_value(&payload).expect("output payloads are plain JSON values");
        let arg = json!({
            "output": { "text": o.text, "data": o.data },
            "processedOutput": processed,
            "endpoint": crate::flow::transform::endpoint_arg(self.ep),
            "userId": self.row.key.user_id,
            "sessionId": self.row.key.session_id,
        });
        match crate::flow::transform::call(engine.get(), code, "handleOutput", &arg) {
            Outcome::Replaced(v) => Some(v.to_string()),
            Outcome::Dropped => None,
            Outcome::Unchanged => Some(standard),
            Outcome::Failed(e) => {
                log::warn!("{}: handleOutput failed: {e}", self.ep.name);
                (!code.settings.abort_on_error).then_some(standard)
            }
        }
    }

    fn standard_payload<'o>(&'o self, o: &'o Output) -> OutputPayload<'o> {
        OutputPayload {
            user_id: &self.row.key.user_id,
            session_id: &self.row.key.session_id,
            ai_output: AiOutput {
                text: &o.text,
                data: &o.data,
                trace_id: &self.acc.trace_id,
                disable_sensitive_logging: self.ep.data_protection.mask_logging,
                source: "bot",
                agent_name: None,
            },
        }
    }

    /// What the turn so far writes: session, changed profile, outputs, transcript lines.
    fn record(&mut self, engine: &mut LazyEngine, outputs: &[Output]) -> TurnRecord {
        let now = now_ms();
        let new: Vec<NewOutput> = outputs
            .iter()
            .filter_map(|o| Some(NewOutput { body: self.body(engine, o)?, not_before_ms: now + o.delay_ms as i64 }))
            .collect();
        let mut transcript = self.transcript(outputs, now);
        translate::annotate_user_line(self.ep, &self.input, &mut transcript);
        // The stored state must stay readable (serde_json reads 128 levels at most); a Code node
        // can build deeper values.
        cut_deep(&self.ep.name, "context", &mut self.state.context);
        cut_deep(&self.ep.name, "profile", &mut self.profile);
        let state = serde_json::to_string(&self.state).expect("session state is plain JSON");
        let keep = self.ep.data_protection.contact_profiles;
        let profile = (keep && self.profile != self.profile_before).then(|| self.profile.to_string());
        self.profile_before = self.profile.clone();
        let session = SessionRow { state: Some(state), seq: 0, messages: self.messages, updated_ms: now };
        let trace = self
            .trace
            .as_ref()
            .map(|t| Box::new(t.finish(&self.acc.trace_id, &self.input, &self.state.context, outputs)));
        TurnRecord { profile, trace, ..record(self.row, Some(session), new, transcript, self.loaded_messages) }
    }

    fn notify_record(self, engine: &mut LazyEngine, o: &Output) -> TurnRecord {
        let now = now_ms();
        let new: Vec<NewOutput> =
            self.body(engine, o).map(|body| NewOutput { body, not_before_ms: now }).into_iter().collect();
        let transcript = if self.ep.data_protection.collect_conversations {
            vec![TranscriptLine { source: Speaker::Bot, text: o.text.clone(), data: o.data.to_string(), at_ms: now }]
        } else {
            vec![]
        };
        record(self.row, None, new, transcript, self.loaded_messages)
    }

    /// Transcript lines for a commit (`collectConversations`): the user's message once, then
    /// every output.
    fn transcript(&mut self, outputs: &[Output], now: i64) -> Vec<TranscriptLine> {
        if !self.ep.data_protection.collect_conversations {
            return vec![];
        }
        let mut lines = Vec::new();
        if !self.logged_input {
            self.logged_input = true;
            let data = self.acc.data.clone().map_or_else(|| "{}".to_owned(), |d| Value::Object(d).to_string());
            let text = self.acc.text.clone().unwrap_or_default();
            // The turn's time, not the accept time: the next message may have been accepted
            // before this turn's bot lines were written, and the transcript must not go back in
            // time (lines are read in the order of the turns).
            lines.push(TranscriptLine { source: Speaker::User, text, data, at_ms: now });
        }
        for o in outputs {
            lines.push(TranscriptLine {
                source: Speaker::Bot,
                text: o.text.clone(),
                data: o.data.to_string(),
                at_ms: now,
            });
        }
        lines
    }
}

impl Host for Conversation<'_> {
    type Scripts = LazyEngine;

    fn io<'s>(&'s mut self, engine: &'s mut LazyEngine) -> TurnIo<'s> {
        TurnIo { state: &mut self.state, input: &mut self.input, profile: &mut self.profile, scripts: engine }
    }

    fn opts(&mut self) -> RunOptions {
        let random = u64::from_le_bytes(crate::util::random_bytes::<8>());
        // The nodes run are recorded for the console's trace, and for the debug log's steps.
        let trace = self.trace.is_some() || log::log_enabled!(log::Level::Debug);
        RunOptions { max_nodes: self.cx.config.limits.max_nodes_per_turn, random, trace }
    }

    fn part_done(&mut self, turn: &Turn) {
        self.log(turn);
        if let Some(t) = &mut self.trace {
            t.part(&self.flow, turn);
        }
    }

    /// Commits the turn so far before an `http` node's call, keeping the message with its
    /// resume record, so that its outputs go out during the call and a crash resumes at the node.
    fn checkpoint(&mut self, engine: &mut LazyEngine, turn: &Turn, call: &HttpCall) -> Result<(), StoreError> {
        // A Code node may have made `input` deeper than the resume record can be read (`record`
        // cuts context and profile the same way, before they go into it).
        cut_deep(&self.ep.name, "input", &mut self.input);
        // The call goes into this part's trace, which `record` finishes.
        if let Some(t) = &mut self.trace {
            t.call(call);
        }
        let mut outputs = turn.outputs.clone();
        let pending = match translate::after_flow(self.ep, &mut self.state, &self.input, &mut outputs) {
            After::Ready => None,
            After::Ask(p) => Some(p),
        };
        let record = match pending {
            None => self.record(engine, &outputs),
            Some(_) => self.record_for_translation(engine, &outputs),
        };
        let r = Resume {
            call: call.clone(),
            input: self.input.clone(),
            delay_ms: turn.delay_ms,
            steps: turn.steps,
            messages: Some(self.messages),
            state: Some(self.state.clone()),
            profile: Some(self.profile.clone()),
        };
        let resume = serde_json::to_string(&r).expect("a resume record is plain JSON");
        let record = TurnRecord { checkpoint: Some(resume), ..record };
        if let Some(p) = pending {
            // Committed with its outputs once they are translated (`translated`); the call is
            // added when the driver parks.
            self.held = Some(p.hold(record, outputs, None));
            return Ok(());
        }
        self.cx.store.commit_turn(&record)?;
        // The store now holds this turn's count: a forget from here on shows as a lower one.
        self.loaded_messages = self.messages;
        if !record.outputs.is_empty() {
            self.cx.wake.session(&record.key);
        }
        Ok(())
    }

    /// The worker never waits for a call: the turn parks and the call threads make it.
    fn perform(&mut self, _call: &HttpCall) -> Option<Value> {
        None
    }
}

/// The `input` object of flows.md's Memory table.
pub(crate) fn build_input(ep: &Endpoint, row: &InboxRow, acc: &Accepted, execution: i64) -> Value {
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
