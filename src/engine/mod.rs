//! The engine: from a committed message to a committed turn.
//!
//! - `writer.rs`: the one thread that commits — accepted messages (group commit before the 200)
//!   and finished turns (state + outputs + inbox row in one transaction). While it is idle, an
//!   http thread or a worker commits its own accept or turn (`inline.rs`: no wake-ups at low
//!   load). With replicas the http threads write their accepts themselves, together
//!   (`direct.rs`), and the writer only turns.
//! - `scheduler.rs`: per-session FIFO of queued messages; the ready queue of sessions.
//! - `worker.rs`: the `worker-N` threads; one message of one session at a time, in parts when
//!   it parks at outbound calls.
//! - `turn.rs`: one turn — the `input` object, NLU, the Flow, checkpoints at `http` nodes,
//!   output bodies (through the output transformer). `trace.rs`: what a test-mode turn did,
//!   for the console, committed with the turn.
//! - `driver.rs`: run → stop at an `http` node → perform or park → resume, written once for the
//!   worker and `hookflow try`.
//! - `effects.rs`, `calls.rs`: the outbound calls a turn waits for (an `http` node's request,
//!   `nlu.rs`'s Rasa client, `http_node.rs`) and the `call-N` threads that make them while the
//!   turn is parked, so a slow API never holds a worker. The Flow itself (`flow/`) does no I/O.
//! - `translate/`: real-time translation — the user's text before NLU, the turn's outputs
//!   before they are queued, both as calls of parked turns; one file per provider API.
//! - `handover/`: handover to a human agent — the provider calls (`webhook.rs`, `chatwoot.rs`)
//!   made as effects, and the self-describing `handoverId` (`id.rs`); what a turn does with a
//!   handover is `turn/handover.rs`.

pub(crate) mod calls;
pub(crate) mod claimer;
mod direct;
pub(crate) mod driver;
pub(crate) mod effects;
pub(crate) mod handover;
pub(crate) mod http_node;
mod inline;
pub(crate) mod nlu;
mod scheduler;
mod trace;
pub(crate) mod translate;
pub(crate) mod turn;
pub(crate) mod worker;
pub(crate) mod writer;

pub(crate) use scheduler::{Job, Scheduler};
pub(crate) use writer::{AcceptError, Writer};
