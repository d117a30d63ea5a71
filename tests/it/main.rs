//! Integration tests of hookflow: real HTTP on 127.0.0.1, temp data dirs, a recording sink.

/// The recording sink, temp dirs, config writer, in-process service and HTTP helpers.
mod support;

/// Questions answered in later messages, and session state across a restart.
mod conversation;
/// A message acknowledged before `kill -9` is delivered after the next start (the binary).
mod crash;
/// Delivery retries, dead letters and replay.
mod delivery;
/// http-api.md §1: every row of the error table, and the 200 answer.
mod errors;
/// A flooded session does not starve another one.
mod fairness;
/// HTTP framing: unread request bodies and clients that never send a declared body.
mod framing;
/// http-api.md §3: inject and notify, both route styles, and their admin key.
mod inject;
/// http-api.md §4: health, readiness, metrics and the admin API.
mod ops;
/// Per-session order under parallel load (50 sessions × 20 messages).
mod order;
/// http-api.md §2: the output payload, its headers, Basic auth and Seq.
mod payload;
