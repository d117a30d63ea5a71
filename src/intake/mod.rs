//! Intake: HTTP in. `routes.rs` is the loop of the `http-N` threads (route, validate, hand the
//! message to the writer, answer); `admin.rs` is the admin API under `/api/`, and
//! `console_api.rs` its routes for the console; `handover.rs` the agent side of a handover; `console.rs` serves the console's page;
//! `reply.rs` the answer type and request helpers they use. Nothing past this folder sees tiny_http's
//! requests (the wiring binds the listener; `cli::sink` is a separate little server).

mod admin;
mod console;
mod console_api;
mod handover;
mod reply;
mod routes;

use std::sync::Arc;

pub(crate) use routes::{HTTP_THREADS, answer_here, refusal, run};

use crate::config::Config;
use crate::delivery::Wake;
use crate::engine::turn::Flows;
use crate::engine::{Scheduler, Writer};
use crate::flow::transform::Transformers;
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::store::Store;

/// What an http thread is given by the wiring.
pub(crate) struct HttpContext {
    pub config: Arc<Config>,
    /// The compiled Flows, by endpoint: the admin API names a session's positions by node.
    pub flows: Arc<Flows>,
    pub store: Arc<dyn Store>,
    /// Durable accept: the writer commits a message before it is answered.
    pub writer: Writer,
    /// Queue depth and active sessions for `/metrics`.
    pub sched: Arc<Scheduler>,
    /// Input transformers run here, on the http threads, before the message is stored.
    pub transformers: Arc<Transformers>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// A replayed dead letter wakes the sender lanes.
    pub wake: Wake,
    /// What a worker is given: an http thread runs the turn its accept made runnable, after
    /// answering (`routes::handle`). `None` with replicas.
    pub turns_here: Option<Arc<crate::engine::worker::WorkerContext>>,
    /// Set while an http thread runs a turn: one at a time, so that turns that take long (Code
    /// nodes near `turnScriptMs`) leave the other http threads to answer (`routes::run_here`).
    pub turn_running_here: std::sync::atomic::AtomicBool,
}
