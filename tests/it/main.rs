//! Integration tests of hookflow: real HTTP on 127.0.0.1, temp data dirs, a recording sink.

/// The recording sink, temp dirs, config writer, in-process service and HTTP helpers.
mod support;

/// Shared helpers of the engine, checkpoint, transformer, CLI and support-example tests.
mod bot;
/// The console in a real headless Chromium (WebDriver): send, deliver, retry, replay, sessions,
/// hostile text, a phone-sized screen; screenshots under target/console-screenshots/.
mod browser;
/// The console while outputs flow: pages, focus, views read, waiting messages, reloads.
mod browser_live;
/// Helpers of process, durability, hardening, privacy: the binary as a child, a timed mock, /metrics parsing.
mod child;
/// The console's page and headers, and its admin routes: outputs, sessions, turns, stats, bulk replay.
mod console_api;
/// Questions answered in later messages, and session state across a restart.
mod conversation;
/// A message acknowledged before `kill -9` is delivered after the next start (the binary).
mod crash;
/// A full disk (tmpfs, needs root): 503, /readyz, folded log lines, recovery; one process per data dir.
mod datadir;
/// Delivery retries, dead letters and replay.
mod delivery;
/// kill -9 and restart under load: nothing acknowledged is lost; `durability: "full"`.
mod durability;
/// flows.md end to end: every node type, memory, templates, sleep, limits and the sandbox.
mod engine;
/// http-api.md §1: every row of the error table, and the 200 answer.
mod errors;
/// A flooded session does not starve another one.
mod fairness;
/// HTTP framing: unread request bodies and clients that never send a declared body.
mod framing;
/// handover.md with the generic agent desk: node, events, agent routes, end, cancel, retries, restart.
mod handover;
/// handover.md with Chatwoot: a stand-in of Chatwoot's Application API and its webhook events.
mod handover_chatwoot;
/// HTTP hardening in tiny_http: connection cap, head deadline and size, RFC 9112 framing.
mod http_limits;
/// http-api.md §3: inject and notify, both route styles, and their admin key.
mod inject;
/// One hanging webhook never delays another endpoint; "down" is known once for all lanes.
mod isolation;
/// U+0000 in ids (refused), texts and webhook answers (kept, or shown as U+FFFD on PostgreSQL).
mod nul;
/// http-api.md §4: health, readiness, metrics and the admin API.
mod ops;
/// Per-session order under parallel load (50 sessions × 20 messages).
mod order;
/// Outbound calls of Flows park the turn: they never hold a worker.
mod parking;
/// http-api.md §2: the output payload, its headers, Basic auth and Seq.
mod payload;
/// The throwaway PostgreSQL server of the replica tests.
#[path = "../common/pgserver.rs"]
mod pgserver;
/// replicas.md: several processes on one PostgreSQL database; order, kill -9, the database going away.
mod replicas;
// HTTPS in (tls) and out (delivery.caFile), with a CA made by the test.
/// flows.md `http` node: context, errors, abortOnError; the node as a checkpoint across kill -9.
mod checkpoint;
/// config.md Command line through the binary: check, try, keygen, --version.
mod cli;
/// A thousand idle keep-alive connections; accept() failing with EMFILE (the binary).
mod hardening;
/// dataProtection (maskLogging, maskIPAddress, collectConversations) and secrets in logs.
mod privacy;
/// http-api.md §4/§5: SIGTERM/SIGINT, /metrics, sender lanes, Retry-After, probing, backpressure, memory.
mod process;
/// The README's curl examples against the example config (the binary and the real curl).
mod readme;
/// JavaScript isolation between turns, limits.turnScriptMs, and SIGTERM during a script.
mod scripts;
/// http node headers across redirects, control characters in logs, webhook URL credentials and queries.
mod secrets;
/// The support example (examples/support.json) end to end against a mock order API.
mod support_example;
mod tls;
/// flows.md Transformers: handleInput, handleOutput, handleInject and handleNotify.
mod transformers;
/// translation.md: real-time translation through the service (input, outputs, detection,
/// markers, payloads, api.setUserLanguage, failures, transcript, logs, `try`, parking).
mod translation;
/// Stand-ins of the four providers (DeepL, LibreTranslate, Google, Microsoft), each end to end.
mod translation_standins;
/// A small W3C WebDriver client and the one shared headless Chromium of the browser tests.
mod webdriver;
