//! The turn side of a handover (handover.md): a `handover` node's start (committed as a
//! checkpoint, then the provider's call), a user's message forwarded instead of running the
//! Flow while a handover is active (or ending it when it is the cancel intent), the agent's jobs
//! (`agent_message`: an output with `source: "agent"`; `agent_end`), the provider's answers
//! with their retries, and the end: the Flow goes on below the node with `input.kind =
//! "handover"`. The handover itself lives in the session state (`SessionState::handover`), so
//! it is committed with every turn and survives a restart on any store.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Conversation, Step, drop_message};
use crate::domain::{JobKind, NewOutput, Speaker, TranscriptLine, TurnRecord};
use crate::engine::driver::{From, drive};
use crate::engine::effects::{Answer, Call};
use crate::engine::handover::{Event, HandoverCall, Outcome, id};
use crate::engine::translate::{self, After};
use crate::flow::script::LazyEngine;
use crate::flow::{HandoverState, HandoverStatus, Turn};
use crate::store::StoreError;
use crate::util::now_ms;
use crate::wire::{AgentAccepted, AiOutput, OutputPayload, output_body};

/// Lines of the transcript sent with a start (handover.md).
const TRANSCRIPT_LINES: usize = 20;

/// What the inbox row keeps while a handover's start is made (the checkpoint of the turn that
/// reached the `handover` node): after a restart the start is made again.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartResume {
    handover_start: HandoverCall,
}

impl Conversation<'_> {
    /// Before the Flow: a provider call's answer, a start interrupted by a restart, or an agent
    /// job. `None`: the turn goes on as usual.
    pub(super) fn handover_first(
        &mut self,
        engine: &mut LazyEngine,
        answer: &mut Option<Answer>,
    ) -> Result<Option<Step>, StoreError> {
        if matches!(answer, Some(Answer::Handover(..))) {
            let Some(Answer::Handover(call, outcome)) = answer.take() else { unreachable!("matched above") };
            return self.answered(engine, *call, outcome).map(Some);
        }
        if let Some(r) = self.row.resume.as_deref().and_then(|r| serde_json::from_str::<StartResume>(r).ok()) {
            log::info!("{}: message {} starts its handover again after a restart", self.ep.name, self.row.id);
            let call = HandoverCall { attempt: 0, due_ms: 0, provider: self.ep.handover.clone(), ..r.handover_start };
            return Ok(Some(Step::Parked(Call::Handover(Box::new(call)))));
        }
        if self.row.resume.is_some() || !matches!(self.row.kind, JobKind::AgentMessage | JobKind::AgentEnd) {
            return Ok(None);
        }
        // Not a user's message: not counted, and no user line in the transcript.
        self.messages -= 1;
        self.logged_input = true;
        let Some(job) = self.agent_job() else { return Ok(Some(Step::Done(drop_message(self.row)))) };
        if self.row.kind == JobKind::AgentEnd {
            if let (Some(h), Some(name)) = (self.state.handover.as_mut(), &job.agent_name) {
                h.agent_name = Some(name.clone());
            }
            return self.end(engine, HandoverStatus::Completed).map(Some);
        }
        Ok(Some(Step::Done(self.agent_message(engine, &job))))
    }

    /// The agent job of this row, if it is for the session's active handover.
    fn agent_job(&self) -> Option<AgentAccepted> {
        let job: AgentAccepted = serde_json::from_str(&self.row.payload).ok()?;
        let current =
            self.state.handover.as_ref().filter(|h| h.status == HandoverStatus::Active && h.id == job.handover_id);
        if current.is_none() {
            // Accepted while the handover was active, run after it ended (the user cancelled).
            log::info!(
                "{}: an agent's {} came after its handover ended; dropped",
                self.ep.name,
                self.row.kind.as_str()
            );
        }
        current.is_some().then_some(job)
    }

    /// An agent's message: one output with `source: "agent"`, in the session's Seq order.
    fn agent_message(&mut self, engine: &mut LazyEngine, job: &AgentAccepted) -> TurnRecord {
        if let (Some(h), Some(name)) = (self.state.handover.as_mut(), &job.agent_name) {
            h.agent_name = Some(name.clone());
        }
        // The name the agent gave last, when this message names none.
        let agent_name = self.state.handover.as_ref().and_then(|h| h.agent_name.clone());
        let data = job.accepted.data.clone().map_or_else(|| json!({}), Value::Object);
        let text = job.accepted.text.clone().unwrap_or_default();
        let body = output_body(&OutputPayload {
            user_id: &self.row.key.user_id,
            session_id: &self.row.key.session_id,
            ai_output: AiOutput {
                text: &text,
                data: &data,
                trace_id: &self.acc.trace_id,
                disable_sensitive_logging: self.ep.data_protection.mask_logging,
                source: "agent",
                agent_name: agent_name.as_deref(),
            },
        });
        let mut record = self.record(engine, &[]);
        let now = now_ms();
        record.outputs = vec![NewOutput { body, not_before_ms: now }];
        if self.ep.data_protection.collect_conversations {
            record.transcript.push(TranscriptLine { source: Speaker::Agent, text, data: data.to_string(), at_ms: now });
        }
        record
    }

    /// After NLU: during an active handover a user's message (or inject) is forwarded to the
    /// provider instead of running the Flow; the cancel intent ends the handover.
    pub(super) fn handover_intercept(&mut self) -> Option<Step> {
        if !matches!(self.row.kind, JobKind::Message | JobKind::Inject) {
            return None;
        }
        let h = self.state.handover.as_ref().filter(|h| h.status == HandoverStatus::Active)?;
        let provider = self.ep.handover.clone()?;
        let event = if h.cancelled_by(&self.input) {
            Event::Cancel
        } else {
            Event::Message { text: self.acc.text.clone(), data: self.acc.data.clone().map(Value::Object) }
        };
        let mut call = self.call(event, h.id.clone());
        call.conversation = h.conversation.clone();
        call.provider = Some(provider);
        Some(Step::Parked(Call::Handover(Box::new(call))))
    }

    fn call(&self, event: Event, handover_id: String) -> HandoverCall {
        let key = &self.row.key;
        HandoverCall {
            event,
            handover_id,
            endpoint: key.endpoint.clone(),
            user_id: key.user_id.clone(),
            session_id: key.session_id.clone(),
            conversation: None,
            message_id: self.row.id,
            attempt: 0,
            due_ms: 0,
            provider: None,
        }
    }

    /// After the Flow: the turn ends, or — when it reached a `handover` node — its outputs
    /// (translated first, when the endpoint translates) and the new handover are committed as a
    /// checkpoint and the start is made (`start_handover`).
    pub(super) fn handover_after(&mut self, engine: &mut LazyEngine, turn: Turn) -> Result<Step, StoreError> {
        let Some(req) = turn.handover else { return self.finish(engine, turn.outputs) };
        let Some(provider) = &self.ep.handover else {
            // `hookflow check` and the start refuse this; an endpoint changed under a running turn.
            log::warn!("{}: a handover node ran but the endpoint has no handover provider", self.ep.name);
            return self.finish(engine, turn.outputs);
        };
        let handover_id = id::new(&self.row.key);
        self.state.replace_handover(HandoverState {
            id: handover_id.clone(),
            status: HandoverStatus::Starting,
            provider: provider.name().into(),
            since_ms: now_ms(),
            cancel_intent: req.cancel_intent,
            agent_name: None,
            conversation: None,
        });
        // The node's `text` goes to the desk as the Flow wrote it; the transcript is added at
        // the start, so that it ends with this turn's lines as the user got them.
        let event = Event::Start { text: req.text, transcript: Vec::new(), context: self.state.context.clone() };
        let call = self.call(event, handover_id);
        let mut outputs = turn.outputs;
        match translate::after_flow(self.ep, &mut self.state, &self.input, &mut outputs) {
            After::Ready => {
                let record = self.record(engine, &outputs);
                self.start_handover(record, call)
            }
            After::Ask(pending) => {
                let record = self.record_for_translation(engine, &outputs);
                Ok(Step::Parked(pending.hold(record, outputs, Some(Call::Handover(Box::new(call))))))
            }
        }
    }

    /// Commits the turn that reached a `handover` node (its outputs as the user gets them, the
    /// handover starting) as a checkpoint, then makes the start: a restart makes it again.
    pub(super) fn start_handover(
        &mut self,
        mut record: TurnRecord,
        mut call: HandoverCall,
    ) -> Result<Step, StoreError> {
        if let Event::Start { transcript, .. } = &mut call.event {
            *transcript = self.transcript_for_agent(&record.transcript)?;
        }
        let resume = StartResume { handover_start: call.clone() };
        record.checkpoint = Some(serde_json::to_string(&resume).expect("a resume record is plain JSON"));
        self.cx.store.commit_turn(&record)?;
        self.loaded_messages = self.messages;
        if !record.outputs.is_empty() {
            self.cx.wake.session(&record.key);
        }
        call.provider = self.ep.handover.clone();
        Ok(Step::Parked(Call::Handover(Box::new(call))))
    }

    /// The session's last lines, with this turn's (`collectConversations`; else none).
    fn transcript_for_agent(&self, this_turn: &[TranscriptLine]) -> Result<Vec<Value>, StoreError> {
        if !self.ep.data_protection.collect_conversations {
            return Ok(vec![]);
        }
        let mut lines = self.cx.store.transcript(&self.row.key)?;
        lines.extend(this_turn.iter().cloned());
        let skip = lines.len().saturating_sub(TRANSCRIPT_LINES);
        let line = |l: &TranscriptLine| {
            let data: Value = serde_json::from_str(&l.data).unwrap_or_else(|_| json!({}));
            json!({ "source": l.source.as_str(), "text": l.text, "data": data, "at": crate::util::iso8601(l.at_ms) })
        };
        Ok(lines[skip..].iter().map(line).collect())
    }

    /// A provider call's answer: success goes on, a failure worth it is retried on the delivery
    /// schedule, anything else ends the handover.
    fn answered(
        &mut self,
        engine: &mut LazyEngine,
        mut call: HandoverCall,
        outcome: Outcome,
    ) -> Result<Step, StoreError> {
        let schedule = &self.cx.config.delivery.retry_schedule;
        let what = match call.event {
            Event::Start { .. } => "start",
            Event::Message { .. } => "message",
            Event::Cancel => "cancel",
        };
        match outcome {
            Ok(conversation) => match call.event {
                Event::Start { .. } => {
                    if let Some(h) = self.state.handover.as_mut().filter(|h| h.id == call.handover_id) {
                        h.status = HandoverStatus::Active;
                        h.conversation = conversation;
                        self.cx.metrics.handover_started(&call.handover_id);
                    }
                    Ok(Step::Done(self.record(engine, &[])))
                }
                Event::Message { .. } => Ok(Step::Done(self.record(engine, &[]))),
                Event::Cancel => self.end(engine, HandoverStatus::Cancelled),
            },
            Err(f) if f.retry && (call.attempt as usize) < schedule.len() => {
                // The schedule's step, or the provider's `Retry-After` when that is longer.
                let step = schedule[call.attempt as usize];
                let wait = f.retry_after.map_or(step, |a| a.max(step));
                log::warn!("{}: the handover {what} failed ({}); trying again in {wait:?}", self.ep.name, f.error);
                call.attempt += 1;
                call.due_ms = now_ms() + wait.as_millis() as i64;
                call.provider = self.ep.handover.clone();
                Ok(Step::Parked(Call::Handover(Box::new(call))))
            }
            Err(f) => {
                log::warn!("{}: the handover {what} failed for good ({}); the handover ends", self.ep.name, f.error);
                match call.event {
                    // The user asked to go back: that happens whatever the desk said.
                    Event::Cancel => self.end(engine, HandoverStatus::Cancelled),
                    _ => self.end(engine, HandoverStatus::Error),
                }
            }
        }
    }

    /// Ends the handover as `status` and runs the Flow from below the `handover` node.
    fn end(&mut self, engine: &mut LazyEngine, status: HandoverStatus) -> Result<Step, StoreError> {
        let Some(h) = self.state.handover.as_mut() else { return Ok(Step::Done(self.record(engine, &[]))) };
        self.cx.metrics.handover_ended(status.as_str(), &h.id);
        h.status = status;
        let handover = json!({ "status": status.as_str(), "provider": h.provider, "agentName": h.agent_name });
        // No user text came with this run (an agent's job, or a provider's answer): the outputs
        // are translated into the language the session speaks.
        let language = self.state.language.as_ref().map(|l| l.code.clone());
        if let Value::Object(m) = &mut self.input {
            m.insert("kind".into(), "handover".into());
            m.insert("text".into(), Value::Null);
            m.insert("handover".into(), handover);
            if let Some(code) = language {
                m.insert("language".into(), code.into());
            }
        } else {
            self.input = Value::Object(Map::new());
        }
        let flow = self.flow.clone();
        let driven = drive(self, &flow, engine, From::Start)?;
        self.driven(engine, driven)
    }
}
