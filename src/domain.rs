//! The vocabulary of the data path: what a queued message, a session, a finished turn and an
//! output are. Every stage speaks these types; the store implements them (`store::Store`) and
//! nothing here knows how they are kept.

/// The conversation a message belongs to: endpoint name, userId, sessionId.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub endpoint: String,
    pub user_id: String,
    pub session_id: String,
}

impl SessionKey {
    /// Whether every store can hold the key: no U+0000 in it (PostgreSQL's text cannot). Ids
    /// with one are refused at intake (`wire`), so on PostgreSQL a key that is not storable names
    /// no session (a SQLite store may keep some from before, `Store::holds_nul`).
    pub fn storable(&self) -> bool {
        ![&self.endpoint, &self.user_id, &self.session_id].iter().any(|s| s.contains('\0'))
    }

    /// The key as PostgreSQL keeps one that a SQLite store took before intake refused U+0000:
    /// with U+FFFD in its place (`store copy`; a handover id of such a session finds it so).
    pub fn storable_form(&self) -> SessionKey {
        let fix = |s: &str| s.replace('\0', "\u{fffd}");
        SessionKey { endpoint: fix(&self.endpoint), user_id: fix(&self.user_id), session_id: fix(&self.session_id) }
    }

    /// FNV-1a of the key, then MurmurHash3's finaliser: stable across restarts and versions
    /// (unlike `DefaultHasher`), and with every bit mixed, so that `hash % senders` spreads
    /// sessions evenly even when userId and sessionId look alike (plain FNV's low bits do not:
    /// measured by `make bench`, "lanes u/s"). Stored with each output, so it must never change.
    pub fn lane_hash(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for part in [&self.endpoint, &self.user_id, &self.session_id] {
            for b in part.bytes().chain([0xff]) {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
        }
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

/// What a queued message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A user message (`POST /{URLToken}`): runs the Flow.
    Message,
    /// `inject`: runs the Flow as if the user had sent it.
    Inject,
    /// `notify`: one output straight to the webhook; the Flow does not run.
    Notify,
    /// An agent's message during a handover: an output with `source: "agent"`.
    AgentMessage,
    /// The agent side ended the handover: the Flow goes on below the `handover` node.
    AgentEnd,
}

impl JobKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Message => "message",
            JobKind::Inject => "inject",
            JobKind::Notify => "notify",
            JobKind::AgentMessage => "agent_message",
            JobKind::AgentEnd => "agent_end",
        }
    }

    /// The kind of a stored name; `None` for a name this version does not know (a newer
    /// version's row), which the store reports instead of running it as something else.
    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "message" => Some(JobKind::Message),
            "inject" => Some(JobKind::Inject),
            "notify" => Some(JobKind::Notify),
            "agent_message" => Some(JobKind::AgentMessage),
            "agent_end" => Some(JobKind::AgentEnd),
            _ => None,
        }
    }
}

/// An accepted message, as queued.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub id: i64,
    pub key: SessionKey,
    pub kind: JobKind,
    /// JSON of the accepted input (`wire::Accepted`).
    pub payload: String,
    /// JSON of a turn interrupted at a checkpoint (an `http` node), to resume from.
    pub resume: Option<String>,
}

/// A session as stored.
#[derive(Debug, Clone, Default)]
pub struct SessionRow {
    /// JSON of `flow::SessionState`; `None` when the session has no state: it never ran a
    /// Flow (only notifies), or it was forgotten (expiry, admin DELETE) and keeps only its
    /// output counter.
    pub state: Option<String>,
    /// The last output sequence number given out (0 = none yet).
    pub seq: i64,
    /// Messages this session has run (inputs of kind message or inject).
    pub messages: i64,
    /// Unix milliseconds of the last change.
    pub updated_ms: i64,
}

/// What a turn starts from.
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub row: InboxRow,
    pub session: Option<SessionRow>,
    /// JSON of the user's profile, if stored.
    pub profile: Option<String>,
}

/// What a turn writes, in one transaction: its session, profile, numbered outputs and
/// transcript lines, and the inbox row deleted — or, at a checkpoint, kept to resume from.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    pub inbox_id: i64,
    pub key: SessionKey,
    /// New session state; `None` leaves the session as it is (a notify, a dropped message).
    pub session: Option<SessionRow>,
    /// New profile of the user, when contact profiles are on and the turn changed it.
    pub profile: Option<String>,
    pub outputs: Vec<NewOutput>,
    pub now_ms: i64,
    /// Transcript lines to keep (`collectConversations`).
    pub transcript: Vec<TranscriptLine>,
    /// The session's message count when the turn read it (or its checkpoint last wrote it): a
    /// lower count at commit time means the session was forgotten meanwhile through the admin
    /// API, and it stays forgotten. (Expiry keeps the count.)
    pub loaded_messages: i64,
    /// Keep the inbox row with this resume record instead of deleting it (an `http` node's
    /// checkpoint: the turn goes on after the call).
    pub checkpoint: Option<String>,
    /// What the turn did, for the console: kept for test-mode turns only (`input.testMode`).
    /// (Boxed: most turns have none, and the record travels by value through the writer.)
    pub trace: Option<Box<Trace>>,
}

/// One output of a turn, before it is numbered.
#[derive(Debug, Clone)]
pub struct NewOutput {
    pub body: String,
    pub not_before_ms: i64,
}

/// The outbox rows one commit added: every row with an id in `(after, last]`. A lane that has
/// read the outbox up to `after` can take them as they are instead of reading them back.
#[derive(Debug, Clone, Default)]
pub struct NewOutbox {
    pub after: i64,
    pub last: i64,
    pub rows: Vec<OutboxRow>,
}

/// One output to deliver.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub key: SessionKey,
    pub seq: i64,
    /// The exact body to POST.
    pub body: String,
    /// Unix milliseconds before which it must not go out (the `sleep` node, retries).
    pub not_before_ms: i64,
    pub attempts: i64,
}

/// A dead letter, as listed by the admin API.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub key: SessionKey,
    pub seq: i64,
    pub body: String,
    pub attempts: i64,
    pub last_error: String,
    pub died_at_ms: i64,
}

/// Who said a transcript line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    User,
    Bot,
    /// A human agent during a handover.
    Agent,
}

impl Speaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::User => "user",
            Speaker::Bot => "bot",
            Speaker::Agent => "agent",
        }
    }

    /// The speaker of a stored name; `None` for a name this version does not know.
    pub fn parse(s: &str) -> Option<Speaker> {
        [Speaker::User, Speaker::Bot, Speaker::Agent].into_iter().find(|k| k.as_str() == s)
    }
}

/// One line of a conversation transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptLine {
    pub source: Speaker,
    pub text: String,
    /// JSON of the data object, `{}` when none.
    pub data: String,
    pub at_ms: i64,
}

/// What a dead-letter replay did.
#[derive(Debug, PartialEq)]
pub enum Replay {
    /// Back in the outbox as the session's next output.
    Queued { id: i64, seq: i64 },
    /// No dead letter has this id.
    Unknown,
    /// Its endpoint (named) is not configured: no sender would read it.
    EndpointGone(String),
}

/// What one turn (or one part of it, up to or from an `http` node) did, for the console.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    /// A JSON object: nodes run, NLU result, context before and after with its changes, http
    /// calls, expression and Code node errors, outputs (see `engine/trace.rs`).
    pub body: String,
}

/// A trace as kept, with the Seq numbers its turn gave its outputs.
#[derive(Debug, Clone)]
pub struct TraceRow {
    pub at_ms: i64,
    pub trace_id: String,
    /// The outputs of the turn are `first_seq..=last_seq` (`first_seq > last_seq`: none).
    pub first_seq: i64,
    pub last_seq: i64,
    pub body: String,
}

/// One delivery attempt, for the delivery log.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The outbox id of the output.
    pub output_id: i64,
    pub key: SessionKey,
    pub seq: i64,
    /// 1 for the first attempt.
    pub attempt: i64,
    pub at_ms: i64,
    pub latency_ms: i64,
    /// The HTTP status, when the webhook answered.
    pub status: Option<u16>,
    /// The first bytes of the answer, or the transport error.
    pub answer: String,
    pub delivered: bool,
}

/// Where an output stands in the delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputState {
    /// Waiting for its first attempt (or its `sleep`).
    Queued,
    /// Failed at least once; the next attempt is scheduled.
    Retrying,
    Delivered,
    /// A dead letter (see `OutputEntry::dead_letter`).
    Dead,
    /// Was a dead letter and went back to the outbox as a new output (`replayed_as`).
    Replayed,
}

impl OutputState {
    pub const ALL: [OutputState; 5] =
        [OutputState::Queued, OutputState::Retrying, OutputState::Delivered, OutputState::Dead, OutputState::Replayed];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputState::Queued => "queued",
            OutputState::Retrying => "retrying",
            OutputState::Delivered => "delivered",
            OutputState::Dead => "dead",
            OutputState::Replayed => "replayed",
        }
    }

    pub fn parse(s: &str) -> Option<OutputState> {
        OutputState::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Which outputs (or dead letters) a console query is about; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct OutputFilter {
    pub endpoint: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub state: Option<OutputState>,
    /// Only outputs with a smaller id (the paging cursor).
    pub before_id: Option<i64>,
    /// Only outputs whose time (`OutputEntry::at_ms`) is in `since_ms..=until_ms`.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: usize,
}

/// One output in the delivery log.
#[derive(Debug, Clone)]
pub struct OutputEntry {
    /// The outbox id (unique, in commit order).
    pub id: i64,
    pub key: SessionKey,
    pub seq: i64,
    pub body: String,
    pub state: OutputState,
    pub attempts: i64,
    /// When it is due (queued, retrying) or when it was delivered or died.
    pub at_ms: i64,
    pub last_error: Option<String>,
    /// The dead letter's id (for replay), while it is one.
    pub dead_letter: Option<i64>,
    /// The outbox id of the new output a replay made.
    pub replayed_as: Option<i64>,
    /// The attempts kept, oldest first.
    pub tries: Vec<AttemptRecord>,
}

/// A session found by a search.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub key: SessionKey,
    pub messages: i64,
    pub seq: i64,
    pub updated_ms: i64,
    /// False for a forgotten session (only its output counter is kept).
    pub has_state: bool,
}

/// Outputs waiting and dead letters of one endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointCounts {
    pub endpoint: String,
    pub queued: i64,
    pub dead_letters: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_hash_is_a_fixed_function_of_the_key() {
        // Stored with every output: a change would send a session's outputs through two lanes.
        let k = SessionKey { endpoint: "e".into(), user_id: "u".into(), session_id: "s".into() };
        assert_eq!(k.lane_hash(), k.clone().lane_hash());
        let other = SessionKey { session_id: "t".into(), ..k.clone() };
        assert_ne!(k.lane_hash(), other.lane_hash());
    }

    #[test]
    fn job_kinds_round_trip_and_unknown_names_are_refused() {
        for k in [JobKind::Message, JobKind::Inject, JobKind::Notify, JobKind::AgentMessage, JobKind::AgentEnd] {
            assert_eq!(JobKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(JobKind::parse("handover"), None);
        for s in [Speaker::User, Speaker::Bot, Speaker::Agent] {
            assert_eq!(Speaker::parse(s.as_str()), Some(s));
        }
        assert_eq!(Speaker::parse("robot"), None);
    }
}
