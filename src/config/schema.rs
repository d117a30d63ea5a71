//! The configuration's types and defaults (config.md): what a loaded, valid `Config` holds.
//! Reading and checking the file is `loader.rs` and `checks.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// Default body cap (http-api.md §1).
pub const DEFAULT_MAX_BODY_BYTES: usize = 65_536;
/// Default number of queued messages before 503 `overloaded`.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Largest `limits.queueCapacity`: far beyond what a small machine runs through before clients
/// give up, and small enough that counts of queued messages cannot overflow.
pub const MAX_QUEUE_CAPACITY: u64 = 10_000_000;
/// Default cap on Flow nodes run in one turn.
pub const DEFAULT_MAX_NODES_PER_TURN: u32 = 1000;
/// Default JS time limit per script call.
pub const DEFAULT_SCRIPT_TIMEOUT_MS: u64 = 1000;
/// Default JS memory limit per runtime.
pub const DEFAULT_SCRIPT_MEMORY_BYTES: usize = 16 * 1024 * 1024;
/// Default JS time of one whole turn (all its script calls).
pub const DEFAULT_TURN_SCRIPT_MS: u64 = 5000;
/// Default `limits.maxConcurrentCalls` (config.md).
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;
/// Largest `limits.maxConcurrentCalls`: each call in flight holds a thread.
pub const MAX_CONCURRENT_CALLS: u64 = 4096;
/// Default cap on open client connections (each has a thread); beyond it 503 and close.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest `limits.maxConnections`.
pub const MAX_CONNECTIONS: u64 = 1_000_000;
/// Default bound on a request line plus headers; beyond it 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 65_536;
/// Cognigy keeps session state for 7 days.
pub const DEFAULT_SESSION_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// Default retry waits, in seconds (http-api.md §2).
pub const DEFAULT_RETRY_SCHEDULE: [f64; 8] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Default `listen`: loopback only, so a fresh install is not reachable from the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `dataDir` when `$STATE_DIRECTORY` is not set (relative to the config file's folder).
pub const DEFAULT_DATA_DIR: &str = "./hookflow-data";
/// Upper bound on `workers`, so a typo cannot ask for a million threads.
pub const MAX_WORKERS: usize = 1024;

/// The worker threads `workers: n` asks for: `n`, or one per CPU for 0 (and when the CPUs
/// cannot be counted, which is no reason to refuse to start: one).
pub fn workers_for(n: usize) -> usize {
    if n > 0 {
        return n.min(MAX_WORKERS);
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS))
}
/// Default bound on one delivery attempt.
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 15_000;
/// Default bound on connecting for one delivery attempt.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default time shutdown keeps delivering.
pub const DEFAULT_DRAIN_SECONDS: u64 = 10;
/// Default number of sender threads.
pub const DEFAULT_SENDERS: usize = 1;
/// Upper bound on `delivery.senders`.
pub const MAX_SENDERS: usize = 64;
/// Upper bound on every duration in the file (ten years): larger values are typos, and keeping
/// them bounded means `Instant + duration` can never overflow downstream.
pub const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// Default score an intent needs in the built-in NLU.
pub const DEFAULT_NLU_THRESHOLD: f64 = 0.4;
/// Default bound on one Rasa `/model/parse` call.
pub const DEFAULT_RASA_TIMEOUT_MS: u64 = 2_000;
/// Allowed length of `endpoints[].urlToken`.
pub const URL_TOKEN_LEN: RangeInclusive<usize> = 8..=128;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// The config file's folder (absolute): relative paths start here, and Flow and transformer
    /// files must be inside it (see `files.rs`).
    pub dir: PathBuf,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Where the SQLite store lives (absolute).
    pub data_dir: PathBuf,
    /// Resolved worker count (0 in the file = number of CPUs).
    pub workers: usize,
    /// `sha256` digests of the admin keys.
    pub admin_keys: Vec<[u8; 32]>,
    /// Caps on inputs and work.
    pub limits: Limits,
    /// What an acknowledged message survives.
    pub durability: Durability,
    /// A session untouched for longer is forgotten.
    pub session_ttl: Duration,
    /// How outputs are sent to webhooks.
    pub delivery: Delivery,
    /// Serve HTTPS directly when set.
    pub tls: Option<Tls>,
    /// At least one, with unique names and URL tokens.
    pub endpoints: Vec<Endpoint>,
    /// The web console at `/console` (console.md).
    pub console: Console,
    /// Where the state lives: SQLite in `data_dir`, or a PostgreSQL database (replicas.md).
    pub store: StoreKind,
}

/// `store` (replicas.md).
#[derive(Debug, Clone, Default)]
pub enum StoreKind {
    /// One process, one SQLite file in `dataDir`.
    #[default]
    Sqlite,
    /// Replicas sharing one PostgreSQL database.
    Postgres(Postgres),
}

/// `store` with `"type": "postgres"`.
#[derive(Clone)]
pub struct Postgres {
    /// libpq-style URL; holds the password, so it is never shown (see `Debug`).
    pub url: String,
    /// Connections this replica keeps open.
    pub pool: usize,
    /// How long a claim on a session lasts without renewal.
    pub lease: Duration,
    pub tls: PostgresTls,
    /// Extra PEM CA bundle for the server's certificate (absolute).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &super::shown_url(&self.url))
            .field("pool", &self.pool)
            .field("lease", &self.lease)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `store.tls`; ordered from the least strict to the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PostgresTls {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it (its certificate is then verified), else plain.
    Prefer,
    /// TLS, verified (the certificate chains to a public root or `caFile` and names the host).
    Require,
}

impl PostgresTls {
    /// The mode a PostgreSQL URL asks for with `sslmode=`, when it does (`verify-ca` and
    /// `verify-full` are refused where the URL is read).
    pub fn of_url(url: &str) -> Option<PostgresTls> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        match query.split('&').find_map(|kv| kv.strip_prefix("sslmode="))? {
            "disable" => Some(PostgresTls::Disable),
            "require" => Some(PostgresTls::Require),
            _ => Some(PostgresTls::Prefer),
        }
    }
}

/// `console`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Console {
    /// Serve `/console`; needs `adminKeys` (the page logs in with one).
    pub enabled: bool,
}

/// `limits.*`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Total queued messages before 503 `overloaded`.
    pub queue_capacity: usize,
    /// Flow nodes run per message before the turn is stopped.
    pub max_nodes_per_turn: u32,
    /// JS time per script call.
    pub script_timeout: Duration,
    /// JS memory per runtime.
    pub script_memory_bytes: usize,
    /// JS time of one turn, all its script calls together.
    pub turn_script: Duration,
    /// Outbound calls of Flows (http node, Rasa) in flight at once, on their own threads.
    pub max_concurrent_calls: usize,
    /// Open client connections; beyond it a new one gets 503 and is closed.
    pub max_connections: usize,
    /// Request line plus headers; beyond it 431.
    pub max_header_bytes: usize,
}

/// `durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Nothing acknowledged is lost when the process dies (WAL, synchronous=NORMAL).
    Normal,
    /// Also not when the machine loses power (fsync before every 200, batched).
    Full,
}

/// `delivery.*`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Bound on one delivery attempt.
    pub timeout: Duration,
    /// Bound on connecting for one delivery attempt.
    pub connect_timeout: Duration,
    /// Waits between attempts; after the last one the output is a dead letter.
    pub retry_schedule: Vec<Duration>,
    /// How long shutdown keeps delivering.
    pub drain: Duration,
    /// Sender threads, `1..=MAX_SENDERS`.
    pub senders: usize,
    /// Extra PEM CA bundle for HTTPS webhooks (absolute).
    pub ca_file: Option<PathBuf>,
}

/// `tls`.
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain (absolute).
    pub cert: PathBuf,
    /// PEM private key (absolute).
    pub key: PathBuf,
}

/// One `endpoints[]` entry.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Unique, `[a-z0-9_-]+`; used in logs, metrics and the admin API.
    pub name: String,
    /// Unique, `[A-Za-z0-9_-]{8,128}`; the path of the endpoint URL.
    pub url_token: String,
    /// False: 403 `endpoint_disabled`.
    pub enabled: bool,
    /// Absolute (resolved against the config file's folder), and inside that folder.
    pub flow: PathBuf,
    /// Where the outputs go.
    pub webhook: Webhook,
    /// `sha256` digests; empty = no key needed.
    pub inbound_keys: Vec<[u8; 32]>,
    /// How intents are found.
    pub nlu: Nlu,
    /// What is kept and logged about users.
    pub data_protection: DataProtection,
    /// Cognigy-style JS transformer, if any.
    pub transformer: Option<Transformer>,
    /// Real-time translation (translation.md), if any.
    pub translation: Option<super::Translation>,
    /// Where a `handover` node hands the conversation to a human agent (handover.md), if any.
    pub handover: Option<Handover>,
}

/// `endpoints[].handover`: the agent desk a `handover` node hands the conversation to.
#[derive(Debug, Clone)]
pub enum Handover {
    /// Any agent desk that speaks HTTP: events out to `url`, agent routes in.
    Webhook(HandoverWebhook),
    /// Chatwoot's Application API and webhooks.
    Chatwoot(Chatwoot),
}

impl Handover {
    /// The provider's name, as `input.handover.provider` and the admin API show it.
    pub fn name(&self) -> &'static str {
        match self {
            Handover::Webhook(_) => "webhook",
            Handover::Chatwoot(_) => "chatwoot",
        }
    }
}

/// `handover` of type `webhook`.
#[derive(Debug, Clone)]
pub struct HandoverWebhook {
    /// Where the events go (`http://` or `https://`).
    pub url: String,
    /// HTTP Basic user, as for outputs.
    pub user: Option<String>,
    pub password: Option<String>,
    /// The decoded `whsec_` key: events are signed like outputs.
    pub secret: Option<Vec<u8>>,
    /// `sha256` digests of the keys the agent desk presents in `X-API-Key` (at least one).
    pub agent_keys: Vec<[u8; 32]>,
}

/// `handover` of type `chatwoot`.
#[derive(Debug, Clone)]
pub struct Chatwoot {
    /// The Chatwoot installation, like `https://chatwoot.example.com` (no trailing `/`).
    pub base_url: String,
    pub account_id: u64,
    /// The API inbox the conversations are created in.
    pub inbox_id: u64,
    /// An agent's or bot's access token (`api_access_token` header).
    pub api_token: String,
    /// The `token` query parameter Chatwoot's webhook URL carries.
    pub webhook_token: String,
}

/// `endpoints[].webhook`.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `http://` or `https://` URL with a host.
    pub url: String,
    /// HTTP Basic user (never contains `:`).
    pub user: Option<String>,
    /// HTTP Basic password; only set together with `user`.
    pub password: Option<String>,
    /// The decoded key bytes of a `whsec_<base64>` secret.
    pub secret: Option<Vec<u8>>,
    /// Extra headers on every delivery (valid names, values without line breaks).
    pub headers: BTreeMap<String, String>,
}

/// `endpoints[].nlu`.
#[derive(Debug, Clone)]
pub enum Nlu {
    /// The built-in intent scorer.
    Builtin {
        /// Lowest score that counts as a match, in `0..=1`.
        threshold: f64,
    },
    /// No intents.
    None,
    /// Rasa's `/model/parse`.
    Rasa {
        /// Base URL of the Rasa server.
        url: String,
        /// Rasa's `token` query parameter, if the server needs one.
        token: Option<String>,
        /// Bound on one call.
        timeout: Duration,
    },
}

/// `endpoints[].dataProtection`.
#[derive(Debug, Clone, Copy)]
pub struct DataProtection {
    /// Logs show `***` for userId, text and data.
    pub mask_logging: bool,
    /// `input.ip` is null.
    pub mask_ip_address: bool,
    /// Keep a profile per userId across sessions.
    pub contact_profiles: bool,
    /// Keep a transcript per session.
    pub collect_conversations: bool,
}

/// `endpoints[].transformer`.
#[derive(Debug, Clone)]
pub struct Transformer {
    /// The JS file (absolute), inside the config file's folder.
    pub file: PathBuf,
    /// Call `handleInput`.
    pub input: bool,
    /// Call `handleOutput`.
    pub output: bool,
    /// Call `handleInject`.
    pub inject: bool,
    /// Call `handleNotify`.
    pub notify: bool,
    /// A throwing transformer fails the request instead of falling back.
    pub abort_on_error: bool,
}

impl Config {
    /// The endpoint whose URL token is `token`.
    ///
    /// Compares against every endpoint without an early exit, so the answer time does not tell
    /// an attacker how much of a guessed token was right.
    pub fn endpoint_by_token(&self, token: &str) -> Option<&Endpoint> {
        let mut found = None;
        for endpoint in &self.endpoints {
            if crate::crypto::constant_time_eq(endpoint.url_token.as_bytes(), token.as_bytes()) {
                found = Some(endpoint);
            }
        }
        found
    }

    /// The endpoint named `name` (names are not secret, so a plain search).
    pub fn endpoint_by_name(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The endpoints' names, in the config's order.
    pub fn endpoint_names(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.name.as_str()).collect()
    }
}

/// `DEFAULT_RETRY_SCHEDULE` as durations.
pub(super) fn default_retry_schedule() -> Vec<Duration> {
    DEFAULT_RETRY_SCHEDULE.iter().map(|&s| Duration::from_secs_f64(s)).collect()
}
