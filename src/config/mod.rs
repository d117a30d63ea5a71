//! The configuration: read once at start-up from a JSON file (config.md), with `${ENV}`
//! expansion, defaults, and validation that reports every problem with the file, the JSON path
//! and the fix. Once a `Config` exists it is valid; nothing downstream re-checks it.
//!
//! We parse into a `serde_json::Value` and walk it by hand instead of deriving `Deserialize`:
//! serde stops at the first error and cannot say "did you mean", while `hookflow check` must list
//! every problem at once. Values that fail a check are replaced by placeholders so the walk can go
//! on; the placeholders never escape, because any error makes the whole load fail.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::util::{edit_distance, kind_of as kind};
use base64::Engine as _;
use serde_json::{Map, Value};

/// Default body cap (http-api.md §1).
pub const DEFAULT_MAX_BODY_BYTES: usize = 65_536;
/// Default number of queued messages before 503 `overloaded`.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Largest `limits.queueCapacity`: far beyond what a small machine runs through before clients
/// give up, and small enough that counts of queued messages cannot overflow.
pub const MAX_QUEUE_CAPACITY: u64 = 10_000_000;
/// Default cap on open client connections (each has a thread); beyond it 503 and close.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest `limits.maxConnections`.
pub const MAX_CONNECTIONS: u64 = 1_000_000;
/// Default bound on a request line plus headers; beyond it 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 65_536;
/// Default cap on Flow nodes run in one turn.
pub const DEFAULT_MAX_NODES_PER_TURN: u32 = 1000;
/// Default JS time limit per script call.
pub const DEFAULT_SCRIPT_TIMEOUT_MS: u64 = 1000;
/// Default JS memory limit per runtime.
pub const DEFAULT_SCRIPT_MEMORY_BYTES: usize = 16 * 1024 * 1024;
/// Default `limits.maxConcurrentCalls` (config.md).
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;
/// Largest `limits.maxConcurrentCalls`: each call in flight holds a thread.
pub const MAX_CONCURRENT_CALLS: u64 = 4096;
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
    /// Absolute (resolved against the config file's folder).
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
    /// The JS file (absolute).
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
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// A JSON path like `endpoints[0].webhook.url`, `line 3, column 7` for syntax errors,
    /// `top level` for the document itself, or empty when the file could not be read.
    pub place: String,
    /// What is wrong and what would be right. Never contains a secret from the file.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match self.place.as_str() {
            "" => write!(f, "{file}: {}", self.message),
            place => write!(f, "{file}: {place}: {}", self.message),
        }
    }
}

/// Every problem of one load, in file order (except that unknown keys of one object come first,
/// sorted).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One problem per line, as `{file}: {place}: {message}`, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, expands and validates the file, taking `${NAME}` from the process environment.
/// On failure, every problem found.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            place: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Same as [`load`] from text.
///
/// `env` looks up `${NAME}` variables. Every string value may contain `${NAME}`; `$${` stands
/// for a literal `${`, and a `$` not followed by `{` is kept as is. Values are not expanded
/// again, so a variable holding `${X}` stays literal. `path` is used for messages and to resolve
/// relative paths (relative to its parent folder).
pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    // Some Windows editors start UTF-8 files with a byte-order mark, which JSON does not allow.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root: Value = serde_json::from_str(text).map_err(|e| ConfigErrors(vec![syntax_error(path, &e)]))?;
    let mut loader = Loader { file: path.to_path_buf(), base: base_dir(path), env, errors: Vec::new() };
    let config = loader.config(&root);
    if loader.errors.is_empty() { Ok(config) } else { Err(ConfigErrors(loader.errors)) }
}

fn syntax_error(file: &Path, e: &serde_json::Error) -> ConfigError {
    // serde_json appends the position to its message; we report it in `place` instead.
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    ConfigError {
        file: file.to_path_buf(),
        place: format!("line {}, column {}", e.line(), e.column()),
        message: format!("invalid JSON: {message}"),
    }
}

/// The folder relative paths are resolved against, made absolute once so that the resolved
/// paths keep meaning the same file whatever the working directory later is.
fn base_dir(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// `base/p` without `.` components (they only make log lines noisier).
fn resolve(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    let mut out = PathBuf::new();
    for component in joined.components() {
        if component != Component::CurDir {
            out.push(component);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Known keys, per object (used for unknown-key errors and their suggestions).

const TOP_KEYS: &[&str] = &[
    "listen",
    "dataDir",
    "workers",
    "adminKeys",
    "limits",
    "durability",
    "sessions",
    "delivery",
    "tls",
    "endpoints",
    "console",
];
const CONSOLE_KEYS: &[&str] = &["enabled"];
const LIMITS_KEYS: &[&str] = &[
    "maxBodyBytes",
    "queueCapacity",
    "maxNodesPerTurn",
    "scriptTimeoutMs",
    "scriptMemoryBytes",
    "maxConcurrentCalls",
    "maxConnections",
    "maxHeaderBytes",
];
const SESSIONS_KEYS: &[&str] = &["ttlSeconds"];
const DELIVERY_KEYS: &[&str] = &["timeoutMs", "connectTimeoutMs", "retrySchedule", "drainSeconds", "senders", "caFile"];
const TLS_KEYS: &[&str] = &["cert", "key"];
const ENDPOINT_KEYS: &[&str] =
    &["name", "urlToken", "enabled", "flow", "webhook", "inboundKeys", "nlu", "dataProtection", "transformer"];
const WEBHOOK_KEYS: &[&str] = &["url", "user", "password", "secret", "headers"];
const NLU_BUILTIN_KEYS: &[&str] = &["type", "threshold"];
const NLU_NONE_KEYS: &[&str] = &["type"];
const NLU_RASA_KEYS: &[&str] = &["type", "url", "token", "timeoutMs"];
const DATA_PROTECTION_KEYS: &[&str] = &["maskLogging", "maskIPAddress", "contactProfiles", "collectConversations"];
const TRANSFORMER_KEYS: &[&str] = &["file", "input", "output", "inject", "notify", "abortOnError"];

/// The ranges of durations in whole seconds and milliseconds.
const SECONDS: RangeInclusive<u64> = 1..=MAX_SECONDS;
const MILLIS: RangeInclusive<u64> = 1..=MAX_SECONDS * 1000;

// ---------------------------------------------------------------------------------------------
// The walk.

/// One JSON object being read, with its path. `map` is `None` when the object is absent, null
/// or not an object (already reported): its keys then read as absent and required keys are not
/// reported again.
struct Obj<'v> {
    path: String,
    map: Option<&'v Map<String, Value>>,
}

impl<'v> Obj<'v> {
    /// The value of `key`; `null` counts as absent (= the default).
    fn value(&self, key: &str) -> Option<&'v Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    fn get(&self, key: &str) -> Option<(String, &'v Value)> {
        self.value(key).map(|v| (join(&self.path, key), v))
    }
}

/// The JSON path of `key` inside `parent`: `a.b` for plain names, `a["x.y"]` otherwise.
fn join(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

/// The state of one load: where relative paths start, how to read variables, and the problems
/// found so far.
struct Loader<'e> {
    file: PathBuf,
    base: PathBuf,
    env: &'e dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Loader<'_> {
    fn error(&mut self, place: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            place: if place.is_empty() { "top level" } else { place }.to_string(),
            message: message.into(),
        });
    }

    /// The whole file. Fields are read in the order of config.md so errors come out in the
    /// order a reader of the file meets them.
    fn config(&mut self, root: &Value) -> Config {
        let top = self.object(String::new(), Some(root), TOP_KEYS);
        let mut config = Config {
            path: self.file.clone(),
            listen: self.listen(&top),
            data_dir: self.data_dir(&top),
            workers: self.workers(&top),
            admin_keys: self.key_list(&top, "adminKeys"),
            limits: self.limits(&top),
            durability: self.durability(&top),
            session_ttl: self.sessions(&top),
            delivery: self.delivery(&top),
            tls: self.tls(&top),
            endpoints: self.endpoints(&top),
            console: Console::default(),
        };
        config.console = self.console(&top, &config.admin_keys);
        config
    }

    /// `console`: off by default; on, it needs an admin key to log in with.
    fn console(&mut self, top: &Obj, admin_keys: &[[u8; 32]]) -> Console {
        let o = self.sub(top, "console", CONSOLE_KEYS);
        let enabled = self.opt_bool(&o, "enabled", false);
        if enabled && admin_keys.is_empty() {
            let message = "the console needs an admin key to log in with: add one to adminKeys (hookflow keygen prints one), or set console.enabled to false";
            self.error("console.enabled", message);
        }
        Console { enabled }
    }

    // --- top-level settings -------------------------------------------------------------------

    fn listen(&mut self, top: &Obj) -> SocketAddr {
        let default = DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN is an address");
        self.opt(top, "listen", Self::socket_addr).unwrap_or(default)
    }

    fn socket_addr(&mut self, path: &str, v: &Value) -> Option<SocketAddr> {
        let s = self.string(path, v)?;
        let addr = s.parse().ok();
        if addr.is_none() {
            let hint = "(an IP address and a port; use 0.0.0.0 for every interface)";
            let message = format!("expected an address like \"{DEFAULT_LISTEN}\" {hint}, got {s:?}");
            self.error(path, message);
        }
        addr
    }

    /// `dataDir`, else `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`), else the default.
    fn data_dir(&mut self, top: &Obj) -> PathBuf {
        if top.value("dataDir").is_some() {
            return self.opt(top, "dataDir", Self::path).unwrap_or_default();
        }
        // systemd joins several state directories with ':'; ours is the first.
        let state = (self.env)("STATE_DIRECTORY").unwrap_or_default();
        match state.split(':').next().filter(|s| !s.is_empty()) {
            Some(dir) => resolve(&self.base, dir),
            None => resolve(&self.base, DEFAULT_DATA_DIR),
        }
    }

    fn workers(&mut self, top: &Obj) -> usize {
        let range = 0..=MAX_WORKERS as u64;
        match self.opt(top, "workers", |l, p, v| l.integer(p, v, range)) {
            Some(n) if n > 0 => n as usize,
            // Not knowing the CPU count is no reason to refuse to start.
            _ => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
        }
    }

    fn limits(&mut self, top: &Obj) -> Limits {
        let o = self.sub(top, "limits", LIMITS_KEYS);
        let usize_max = usize::MAX as u64;
        let script_ms = self.opt_int(&o, "scriptTimeoutMs", DEFAULT_SCRIPT_TIMEOUT_MS, MILLIS);
        Limits {
            max_body_bytes: self.opt_usize(&o, "maxBodyBytes", DEFAULT_MAX_BODY_BYTES, usize_max),
            queue_capacity: self.opt_usize(&o, "queueCapacity", DEFAULT_QUEUE_CAPACITY, MAX_QUEUE_CAPACITY),
            max_nodes_per_turn: self
                .opt(&o, "maxNodesPerTurn", |l, p, v| l.integer(p, v, 1..=u32::MAX.into()))
                .map_or(DEFAULT_MAX_NODES_PER_TURN, |n| n as u32),
            script_timeout: Duration::from_millis(script_ms),
            script_memory_bytes: self.opt_usize(&o, "scriptMemoryBytes", DEFAULT_SCRIPT_MEMORY_BYTES, usize_max),
            max_concurrent_calls: self.opt_usize(
                &o,
                "maxConcurrentCalls",
                DEFAULT_MAX_CONCURRENT_CALLS,
                MAX_CONCURRENT_CALLS,
            ),
            max_connections: self.opt_usize(&o, "maxConnections", DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS),
            max_header_bytes: self.opt_usize(&o, "maxHeaderBytes", DEFAULT_MAX_HEADER_BYTES, usize_max),
        }
    }

    fn durability(&mut self, top: &Obj) -> Durability {
        let read = |l: &mut Self, path: &str, v: &Value| match l.string(path, v)?.as_str() {
            "normal" => Some(Durability::Normal),
            "full" => Some(Durability::Full),
            other => {
                l.error(path, format!("expected \"normal\" or \"full\", got {other:?}"));
                None
            }
        };
        self.opt(top, "durability", read).unwrap_or(Durability::Normal)
    }

    fn sessions(&mut self, top: &Obj) -> Duration {
        let o = self.sub(top, "sessions", SESSIONS_KEYS);
        let ttl = self.opt_int(&o, "ttlSeconds", DEFAULT_SESSION_TTL_SECONDS, SECONDS);
        Duration::from_secs(ttl)
    }

    fn delivery(&mut self, top: &Obj) -> Delivery {
        let o = self.sub(top, "delivery", DELIVERY_KEYS);
        let timeout = self.opt_int(&o, "timeoutMs", DEFAULT_DELIVERY_TIMEOUT_MS, MILLIS);
        let connect = self.opt_int(&o, "connectTimeoutMs", DEFAULT_CONNECT_TIMEOUT_MS, MILLIS);
        let schedule = self.opt(&o, "retrySchedule", Self::retry_schedule);
        // 0 is allowed here: stop at once, leaving undelivered outputs for the next start.
        let drain = self.opt_int(&o, "drainSeconds", DEFAULT_DRAIN_SECONDS, 0..=MAX_SECONDS);
        Delivery {
            timeout: Duration::from_millis(timeout),
            connect_timeout: Duration::from_millis(connect),
            retry_schedule: schedule.unwrap_or_else(default_retry_schedule),
            drain: Duration::from_secs(drain),
            senders: self.opt_usize(&o, "senders", DEFAULT_SENDERS, MAX_SENDERS as u64),
            ca_file: self.opt(&o, "caFile", Self::path),
        }
    }

    fn retry_schedule(&mut self, path: &str, v: &Value) -> Option<Vec<Duration>> {
        let items = self.array(path, v)?;
        if items.is_empty() {
            self.error(path, "expected at least one wait in seconds, like [1, 5, 30]");
        }
        let waits = items.iter().enumerate().map(|(i, item)| {
            let path = format!("{path}[{i}]");
            self.seconds(&path, item).unwrap_or_default()
        });
        Some(waits.collect())
    }

    /// A positive number of seconds, fractions allowed.
    fn seconds(&mut self, path: &str, v: &Value) -> Option<Duration> {
        let n = self.number(path, v)?;
        if n > 0.0 && n <= MAX_SECONDS as f64 {
            return Some(Duration::from_secs_f64(n));
        }
        let message = format!("expected a positive number of seconds up to {MAX_SECONDS}, got {n}");
        self.error(path, message);
        None
    }

    fn tls(&mut self, top: &Obj) -> Option<Tls> {
        top.value("tls")?;
        let o = self.sub(top, "tls", TLS_KEYS);
        Some(Tls {
            cert: self.req(&o, "cert", Self::path).unwrap_or_default(),
            key: self.req(&o, "key", Self::path).unwrap_or_default(),
        })
    }

    // --- endpoints ------------------------------------------------------------------------------

    fn endpoints(&mut self, top: &Obj) -> Vec<Endpoint> {
        let Some(items) = self.req(top, "endpoints", Self::array) else {
            return Vec::new();
        };
        if items.is_empty() {
            self.error("endpoints", "expected at least one endpoint");
        }
        let endpoints: Vec<Endpoint> =
            (items.iter().enumerate()).map(|(i, item)| self.endpoint(format!("endpoints[{i}]"), item)).collect();
        self.check_unique(&endpoints);
        endpoints
    }

    fn endpoint(&mut self, path: String, v: &Value) -> Endpoint {
        let o = self.object(path, Some(v), ENDPOINT_KEYS);
        Endpoint {
            name: self.req(&o, "name", Self::endpoint_name).unwrap_or_default(),
            url_token: self.req(&o, "urlToken", Self::url_token).unwrap_or_default(),
            enabled: self.opt(&o, "enabled", Self::boolean).unwrap_or(true),
            flow: self.req(&o, "flow", Self::path).unwrap_or_default(),
            webhook: self.webhook(&o),
            inbound_keys: self.key_list(&o, "inboundKeys"),
            nlu: self.nlu(&o),
            data_protection: self.data_protection(&o),
            transformer: self.transformer(&o),
        }
    }

    /// Names and URL tokens must be unique. Empty ones failed their own check already.
    fn check_unique(&mut self, endpoints: &[Endpoint]) {
        for (i, endpoint) in endpoints.iter().enumerate() {
            let earlier = &endpoints[..i];
            let name = &endpoint.name;
            if let Some(j) = earlier.iter().position(|e| !name.is_empty() && &e.name == name) {
                let message = format!("duplicate name {name:?} (also endpoints[{j}].name); names must be unique");
                self.error(&format!("endpoints[{i}].name"), message);
            }
            let token = &endpoint.url_token;
            if let Some(j) = earlier.iter().position(|e| !token.is_empty() && &e.url_token == token) {
                // The token is a secret of sorts (it is the URL), so it is not repeated here.
                let message = format!("same urlToken as endpoints[{j}]; each endpoint needs its own");
                self.error(&format!("endpoints[{i}].urlToken"), message);
            }
        }
    }

    fn endpoint_name(&mut self, path: &str, v: &Value) -> Option<String> {
        let name = self.string(path, v)?;
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if name.is_empty() || !name.chars().all(ok) {
            let message = format!(
                "expected lowercase letters, digits, \"_\" and \"-\" only (like \"support\"), \
                 got {name:?}"
            );
            self.error(path, message);
            return None;
        }
        Some(name)
    }

    fn url_token(&mut self, path: &str, v: &Value) -> Option<String> {
        let token = self.string(path, v)?;
        let ok = |c: &char| c.is_ascii_alphanumeric() || *c == '_' || *c == '-';
        let message = match token.chars().find(|c| !ok(c)) {
            Some(bad) => format!(
                "may contain only A-Z, a-z, 0-9, \"_\" and \"-\", found {bad:?}; \
                 \"hookflow keygen\" prints a suitable random value"
            ),
            None if !URL_TOKEN_LEN.contains(&token.len()) => format!(
                "expected {} to {} characters, got {}; \"hookflow keygen\" prints a suitable \
                 random value",
                URL_TOKEN_LEN.start(),
                URL_TOKEN_LEN.end(),
                token.len()
            ),
            None => return Some(token),
        };
        self.error(path, message);
        None
    }

    fn webhook(&mut self, endpoint: &Obj) -> Webhook {
        self.check_present(endpoint, "webhook");
        let o = self.sub(endpoint, "webhook", WEBHOOK_KEYS);
        let url = self.req(&o, "url", Self::http_url).unwrap_or_default();
        let user = self.opt(&o, "user", Self::basic_user);
        let password = self.opt(&o, "password", Self::string);
        if password.is_some() && o.value("user").is_none() {
            let message = "a password needs a user: add \"user\" (HTTP Basic)";
            self.error(&join(&o.path, "password"), message);
        }
        Webhook {
            url,
            user,
            password,
            secret: self.opt(&o, "secret", Self::secret),
            headers: self.opt(&o, "headers", Self::headers).unwrap_or_default(),
        }
    }

    fn http_url(&mut self, path: &str, v: &Value) -> Option<String> {
        let url = self.string(path, v)?;
        match check_http_url(&url) {
            Ok(()) => Some(url),
            Err(problem) => {
                let example = "like \"https://example.com/hook\"";
                self.error(path, format!("expected an http:// or https:// URL {example}: {problem}"));
                None
            }
        }
    }

    /// HTTP Basic cannot carry a `:` in the user name (RFC 7617, section 2).
    fn basic_user(&mut self, path: &str, v: &Value) -> Option<String> {
        let user = self.string(path, v)?;
        if user.contains(':') {
            self.error(path, "must not contain \":\" (HTTP Basic, RFC 7617)");
            return None;
        }
        Some(user)
    }

    /// `whsec_<base64>` as in Standard Webhooks; the value itself is never echoed.
    fn secret(&mut self, path: &str, v: &Value) -> Option<Vec<u8>> {
        let text = self.string(path, v)?;
        let key = (text.strip_prefix("whsec_"))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|key| !key.is_empty());
        if key.is_none() {
            let message = "expected \"whsec_\" followed by the key in standard base64 \
                           (Standard Webhooks), like \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"";
            self.error(path, message);
        }
        key
    }

    /// Checked here so that a bad header is a start-up error, not a failure on every delivery.
    fn headers(&mut self, path: &str, v: &Value) -> Option<BTreeMap<String, String>> {
        let map = self.typed(path, v, "an object of header names to strings", Value::as_object)?;
        let mut headers = BTreeMap::new();
        for (name, value) in map {
            let path = join(path, name);
            let Some(value) = self.string(&path, value) else {
                continue;
            };
            if !is_header_name(name) {
                let message = "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)";
                self.error(&path, message);
            } else if value.chars().any(|c| c.is_control() && c != '\t') {
                self.error(&path, "header values must not contain line breaks or control characters");
            } else {
                headers.insert(name.clone(), value);
            }
        }
        Some(headers)
    }

    fn nlu(&mut self, endpoint: &Obj) -> Nlu {
        let default = Nlu::Builtin { threshold: DEFAULT_NLU_THRESHOLD };
        let Some((path, value)) = endpoint.get("nlu") else {
            return default;
        };
        // The known keys depend on the type, so read the type before checking keys.
        let Some(map) = self.typed(&path, value, "an object", Value::as_object) else {
            return default;
        };
        let probe = Obj { path: path.clone(), map: Some(map) };
        match self.req(&probe, "type", Self::string).as_deref() {
            Some("builtin") => {
                let o = self.object(path, Some(value), NLU_BUILTIN_KEYS);
                let threshold = self.opt(&o, "threshold", Self::fraction);
                Nlu::Builtin { threshold: threshold.unwrap_or(DEFAULT_NLU_THRESHOLD) }
            }
            Some("none") => {
                self.object(path, Some(value), NLU_NONE_KEYS);
                Nlu::None
            }
            Some("rasa") => {
                let o = self.object(path, Some(value), NLU_RASA_KEYS);
                self.rasa(o)
            }
            Some(other) => {
                let message = format!("expected \"builtin\", \"none\" or \"rasa\", got {other:?}");
                self.error(&join(&path, "type"), message);
                default
            }
            None => default,
        }
    }

    fn rasa(&mut self, o: Obj) -> Nlu {
        Nlu::Rasa {
            url: self.req(&o, "url", Self::http_url).unwrap_or_default(),
            token: self.opt(&o, "token", Self::string),
            timeout: Duration::from_millis(self.opt_int(&o, "timeoutMs", DEFAULT_RASA_TIMEOUT_MS, MILLIS)),
        }
    }

    /// A number in `0..=1`.
    fn fraction(&mut self, path: &str, v: &Value) -> Option<f64> {
        let n = self.number(path, v)?;
        if !(0.0..=1.0).contains(&n) {
            self.error(path, format!("expected a number from 0 to 1, got {n}"));
            return None;
        }
        Some(n)
    }

    fn data_protection(&mut self, endpoint: &Obj) -> DataProtection {
        let o = self.sub(endpoint, "dataProtection", DATA_PROTECTION_KEYS);
        DataProtection {
            mask_logging: self.opt_bool(&o, "maskLogging", false),
            mask_ip_address: self.opt_bool(&o, "maskIPAddress", false),
            contact_profiles: self.opt_bool(&o, "contactProfiles", true),
            collect_conversations: self.opt_bool(&o, "collectConversations", false),
        }
    }

    fn transformer(&mut self, endpoint: &Obj) -> Option<Transformer> {
        endpoint.value("transformer")?;
        let o = self.sub(endpoint, "transformer", TRANSFORMER_KEYS);
        // A missing file is reported; the other keys are still checked, so no early return.
        Some(Transformer {
            file: self.req(&o, "file", Self::path).unwrap_or_default(),
            input: self.opt_bool(&o, "input", true),
            output: self.opt_bool(&o, "output", true),
            inject: self.opt_bool(&o, "inject", false),
            notify: self.opt_bool(&o, "notify", false),
            abort_on_error: self.opt_bool(&o, "abortOnError", false),
        })
    }

    /// `adminKeys` or `inboundKeys`: an array of `sha256:<hex>` digests.
    fn key_list(&mut self, o: &Obj, key: &str) -> Vec<[u8; 32]> {
        let Some((path, value)) = o.get(key) else {
            return Vec::new();
        };
        let Some(items) = self.array(&path, value) else {
            return Vec::new();
        };
        let mut digests = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{path}[{i}]");
            let Some(text) = self.string(&path, item) else {
                continue;
            };
            match crate::crypto::parse_key_digest(&text) {
                Ok(digest) => digests.push(digest),
                Err(message) => self.error(&path, message),
            }
        }
        digests
    }

    // --- objects and keys -------------------------------------------------------------------

    /// Checks that `value` (if present) is an object and has only `known` keys.
    fn object<'v>(&mut self, path: String, value: Option<&'v Value>, known: &[&str]) -> Obj<'v> {
        let map = value.and_then(|v| self.typed(&path, v, "an object", Value::as_object));
        for key in map.into_iter().flat_map(|m| m.keys()) {
            if !known.contains(&key.as_str()) {
                self.error(&join(&path, key), unknown_key_message(key, known));
            }
        }
        Obj { path, map }
    }

    /// The object under `key` of `parent`; absent or null reads as all defaults.
    fn sub<'v>(&mut self, parent: &Obj<'v>, key: &str, known: &[&str]) -> Obj<'v> {
        self.object(join(&parent.path, key), parent.value(key), known)
    }

    /// Reports a required key that is absent or null (unless the object itself was bad).
    fn check_present(&mut self, o: &Obj, key: &str) {
        let Some(map) = o.map else { return };
        let message = match map.get(key) {
            None => format!("missing required key {key:?}"),
            Some(Value::Null) => format!("{key:?} is required and cannot be null"),
            Some(_) => return,
        };
        self.error(&join(&o.path, key), message);
    }

    /// Reads optional `key` with `read`; `None` when absent, null or wrong (then reported).
    fn opt<'v, T>(
        &mut self,
        o: &Obj<'v>,
        key: &str,
        read: impl FnOnce(&mut Self, &str, &'v Value) -> Option<T>,
    ) -> Option<T> {
        let (path, value) = o.get(key)?;
        read(self, &path, value)
    }

    /// Like `opt`, and a missing key is reported.
    fn req<'v, T>(
        &mut self,
        o: &Obj<'v>,
        key: &str,
        read: impl FnOnce(&mut Self, &str, &'v Value) -> Option<T>,
    ) -> Option<T> {
        self.check_present(o, key);
        self.opt(o, key, read)
    }

    fn opt_bool(&mut self, o: &Obj, key: &str, default: bool) -> bool {
        self.opt(o, key, Self::boolean).unwrap_or(default)
    }

    fn opt_int(&mut self, o: &Obj, key: &str, default: u64, range: RangeInclusive<u64>) -> u64 {
        self.opt(o, key, |l, p, v| l.integer(p, v, range)).unwrap_or(default)
    }

    /// A count from 1 to `max` (at most `usize::MAX`, so the cast cannot truncate).
    fn opt_usize(&mut self, o: &Obj, key: &str, default: usize, max: u64) -> usize {
        let max = max.min(usize::MAX as u64);
        self.opt(o, key, |l, p, v| l.integer(p, v, 1..=max)).map_or(default, |n| n as usize)
    }

    // --- typed values -----------------------------------------------------------------------

    /// `as_type(v)`, or an "expected X, got Y" error.
    fn typed<'v, T>(
        &mut self,
        path: &str,
        v: &'v Value,
        expected: &str,
        as_type: impl FnOnce(&'v Value) -> Option<T>,
    ) -> Option<T> {
        let got = as_type(v);
        if got.is_none() {
            self.error(path, format!("expected {expected}, got {}", kind(v)));
        }
        got
    }

    /// A string with `${NAME}` expanded (see [`parse`]).
    fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        let raw = self.typed(path, v, "a string", Value::as_str)?;
        match expand(raw, self.env) {
            Ok(s) => Some(s),
            Err(problems) => {
                for problem in problems {
                    self.error(path, problem);
                }
                None
            }
        }
    }

    /// A non-empty path, resolved against the config file's folder.
    fn path(&mut self, path: &str, v: &Value) -> Option<PathBuf> {
        let s = self.string(path, v)?;
        if s.is_empty() {
            self.error(path, "expected a file path, got an empty string");
            return None;
        }
        Some(resolve(&self.base, &s))
    }

    fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        self.typed(path, v, "true or false", Value::as_bool)
    }

    fn number(&mut self, path: &str, v: &Value) -> Option<f64> {
        self.typed(path, v, "a number", Value::as_f64)
    }

    fn array<'v>(&mut self, path: &str, v: &'v Value) -> Option<&'v Vec<Value>> {
        self.typed(path, v, "an array", Value::as_array)
    }

    fn integer(&mut self, path: &str, v: &Value, range: RangeInclusive<u64>) -> Option<u64> {
        let n = v.as_u64().filter(|n| range.contains(n));
        if n.is_none() {
            let got = match v {
                Value::Number(n) => n.to_string(),
                other => kind(other).to_string(),
            };
            self.error(path, format!("expected {}, got {got}", describe(&range)));
        }
        n
    }
}

fn default_retry_schedule() -> Vec<Duration> {
    DEFAULT_RETRY_SCHEDULE.iter().map(|&s| Duration::from_secs_f64(s)).collect()
}

/// "a positive integer", "an integer from 1 to 64", ...
fn describe(range: &RangeInclusive<u64>) -> String {
    match (*range.start(), *range.end()) {
        (1, u64::MAX) => "a positive integer".to_string(),
        (start, end) => format!("an integer from {start} to {end}"),
    }
}

/// Suggests the nearest known key when it is close enough to be a typo, else lists them all.
fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let nearest = known.iter().map(|k| (edit_distance(&key.to_lowercase(), &k.to_lowercase()), *k)).min();
    match nearest {
        // Short keys need a closer match, or "x" would suggest every three-letter key.
        Some((d, k)) if d <= 3 && 2 * d <= key.chars().count() => {
            format!("unknown key {key:?}; did you mean {k:?}?")
        }
        _ => format!("unknown key {key:?}; known keys here: {}", known.join(", ")),
    }
}

/// Replaces `${NAME}` with `env(NAME)`; `$${` is a literal `${`. Reports every missing variable.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut problems = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                problems.push("unterminated \"${\"; write \"${NAME}\", or \"$${\" for a literal \"${\"".into());
                break;
            };
            let name = &after[..end];
            match lookup(name, env) {
                Ok(value) => out.push_str(&value),
                Err(problem) => problems.push(problem),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn lookup(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "invalid variable name {name:?} in \"${{...}}\" (letters, digits and \"_\"); \
             write \"$${{\" for a literal \"${{\""
        ));
    }
    env(name).ok_or_else(|| format!("environment variable {name} is not set"))
}

/// Scheme, host, and a numeric port if any; the rest is left to the HTTP client.
fn check_http_url(url: &str) -> Result<(), String> {
    let rest = (url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("it does not start with http:// or https://")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials belong in "user"/"password"; skip them to find the host.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or((v6, ""), |(h, p)| (h, p)),
        None => host_port.split_once(':').map_or((host_port, ""), |(h, p)| (h, p)),
    };
    let port = port.strip_prefix(':').unwrap_or(port);
    if host.is_empty() {
        return Err("it has no host".into());
    }
    if !port.is_empty() && port.parse::<u16>().is_err() {
        return Err(format!("the port {port:?} is not a number from 0 to 65535"));
    }
    Ok(())
}

/// An HTTP token (RFC 9110, section 5.6.2).
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{key_matches, parse_key_digest, sha256};

    const FILE: &str = "/etc/hookflow/hookflow.json";

    /// The example of config.md, verbatim.
    const EXAMPLE: &str = r#"{
  "listen": "127.0.0.1:8080",
  "dataDir": "./hookflow-data",
  "workers": 0,
  "adminKeys": ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
  "limits": {
    "maxBodyBytes": 65536,
    "queueCapacity": 10000,
    "maxNodesPerTurn": 1000,
    "scriptTimeoutMs": 1000,
    "scriptMemoryBytes": 16777216
  },
  "durability": "normal",
  "sessions": { "ttlSeconds": 604800 },
  "delivery": {
    "timeoutMs": 15000,
    "connectTimeoutMs": 5000,
    "retrySchedule": [1, 2, 5, 10, 30, 60, 120, 300],
    "drainSeconds": 10,
    "senders": 1,
    "caFile": null
  },
  "tls": null,
  "endpoints": [
    {
      "name": "support",
      "urlToken": "4e5e2f01110c935fff81ec54bbce12c175b831d8105dc69face36a8983feec17",
      "enabled": true,
      "flow": "flows/support.json",
      "webhook": {
        "url": "http://127.0.0.1:9000/hook",
        "user": "bot",
        "password": "${SUPPORT_WEBHOOK_PASSWORD}",
        "secret": null,
        "headers": {}
      },
      "inboundKeys": [],
      "nlu": { "type": "builtin", "threshold": 0.4 },
      "dataProtection": {
        "maskLogging": false,
        "maskIPAddress": false,
        "contactProfiles": true,
        "collectConversations": false
      },
      "transformer": null
    }
  ]
}"#;

    const TOKEN: &str = "abcdefgh12345678";

    fn env(name: &str) -> Option<String> {
        match name {
            "SUPPORT_WEBHOOK_PASSWORD" => Some("s3cret".to_string()),
            "HOST" => Some("example.com".to_string()),
            _ => None,
        }
    }

    fn ok(text: &str) -> Config {
        match parse(text, Path::new(FILE), &env) {
            Ok(config) => config,
            Err(errors) => panic!("expected a valid config, got:\n{errors}"),
        }
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match parse(text, Path::new(FILE), &env) {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.0,
        }
    }

    /// A minimal valid config with the members `endpoint` set in its single endpoint and `top`
    /// at the top level (both the inside of a JSON object, possibly empty).
    fn config_with(top: &str, endpoint: &str) -> String {
        let mut doc = serde_json::json!({"endpoints": [{
            "name": "support",
            "urlToken": TOKEN,
            "flow": "f.json",
            "webhook": {"url": "http://127.0.0.1:9000/hook"},
        }]});
        merge(&mut doc["endpoints"][0], endpoint);
        merge(&mut doc, top);
        doc.to_string()
    }

    fn merge(target: &mut Value, members: &str) {
        let members: Map<String, Value> = serde_json::from_str(&format!("{{{members}}}")).unwrap();
        target.as_object_mut().unwrap().extend(members);
    }

    /// The only error of `text` is at `place` and its message contains `fragment`.
    fn check_error(text: &str, place: &str, fragment: &str) {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{text}\n{errors:#?}");
        assert_eq!(errors[0].place, place, "{text}\n{errors:#?}");
        assert!(errors[0].message.contains(fragment), "{:?} does not contain {fragment:?}", errors[0].message);
        assert_eq!(errors[0].file, Path::new(FILE));
    }

    #[test]
    fn example_parses() {
        let config = ok(EXAMPLE);
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.data_dir, Path::new("/etc/hookflow/hookflow-data"));
        assert!(config.workers >= 1);
        assert_eq!(config.admin_keys, vec![sha256(b"test")]);
        assert_eq!(config.limits.max_body_bytes, 65536);
        assert_eq!(config.limits.queue_capacity, 10000);
        assert_eq!(config.limits.max_nodes_per_turn, 1000);
        assert_eq!(config.limits.script_timeout, Duration::from_secs(1));
        assert_eq!(config.limits.script_memory_bytes, 16_777_216);
        assert_eq!(config.durability, Durability::Normal);
        assert_eq!(config.session_ttl, Duration::from_secs(604_800));
        assert_eq!(config.delivery.timeout, Duration::from_secs(15));
        assert_eq!(config.delivery.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.delivery.retry_schedule, default_retry_schedule());
        assert_eq!(config.delivery.drain, Duration::from_secs(10));
        assert_eq!(config.delivery.senders, 1);
        assert_eq!(config.delivery.ca_file, None);
        assert!(config.tls.is_none());

        let [e] = &config.endpoints[..] else { panic!("one endpoint") };
        assert_eq!(e.name, "support");
        assert_eq!(e.url_token.len(), 64);
        assert!(e.enabled);
        assert_eq!(e.flow, Path::new("/etc/hookflow/flows/support.json"));
        assert_eq!(e.webhook.url, "http://127.0.0.1:9000/hook");
        assert_eq!(e.webhook.user.as_deref(), Some("bot"));
        assert_eq!(e.webhook.password.as_deref(), Some("s3cret"));
        assert_eq!(e.webhook.secret, None);
        assert!(e.webhook.headers.is_empty());
        assert!(e.inbound_keys.is_empty());
        assert!(matches!(e.nlu, Nlu::Builtin { threshold } if threshold == 0.4));
        let dp = e.data_protection;
        assert!(!dp.mask_logging && !dp.mask_ip_address);
        assert!(dp.contact_profiles && !dp.collect_conversations);
        assert!(e.transformer.is_none());

        assert_eq!(config.endpoint_by_name("support").unwrap().name, "support");
        assert!(config.endpoint_by_name("sales").is_none());
        assert_eq!(config.endpoint_by_token(&e.url_token).unwrap().name, "support");
        assert!(config.endpoint_by_token("4e5e2f01").is_none());
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let config = ok(&config_with("", ""));
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.data_dir, Path::new("/etc/hookflow/hookflow-data"));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.workers, cpus.min(MAX_WORKERS));
        assert!(config.admin_keys.is_empty());
        assert_eq!(config.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(config.limits.queue_capacity, DEFAULT_QUEUE_CAPACITY);
        assert_eq!(config.limits.max_nodes_per_turn, DEFAULT_MAX_NODES_PER_TURN);
        assert_eq!(config.limits.script_timeout.as_millis(), 1000);
        assert_eq!(config.limits.script_memory_bytes, DEFAULT_SCRIPT_MEMORY_BYTES);
        assert_eq!(config.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.limits.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert_eq!(config.durability, Durability::Normal);
        assert_eq!(config.session_ttl.as_secs(), 7 * 24 * 3600);
        assert_eq!(config.delivery.timeout.as_millis(), 15_000);
        assert_eq!(config.delivery.connect_timeout.as_millis(), 5_000);
        let waits: Vec<f64> = config.delivery.retry_schedule.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(waits, DEFAULT_RETRY_SCHEDULE);
        assert_eq!(config.delivery.drain.as_secs(), 10);
        assert_eq!(config.delivery.senders, 1);
        assert!(config.delivery.ca_file.is_none());
        assert!(config.tls.is_none());

        let e = &config.endpoints[0];
        assert!(e.enabled);
        assert_eq!(e.flow, Path::new("/etc/hookflow/f.json"));
        assert!(e.webhook.user.is_none() && e.webhook.password.is_none());
        assert!(e.webhook.secret.is_none() && e.webhook.headers.is_empty());
        assert!(e.inbound_keys.is_empty());
        assert!(matches!(e.nlu, Nlu::Builtin { threshold } if threshold == 0.4));
        let dp = e.data_protection;
        assert!(!dp.mask_logging && !dp.mask_ip_address);
        assert!(dp.contact_profiles && !dp.collect_conversations);
        assert!(e.transformer.is_none());
    }

    #[test]
    fn null_means_default() {
        let top = r#""listen": null, "workers": null, "limits": null, "delivery": {"senders": null}"#;
        let config = ok(&config_with(top, r#""enabled": null, "nlu": null"#));
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.delivery.senders, 1);
        assert!(config.endpoints[0].enabled);
    }

    #[test]
    fn every_option_is_read() {
        let top = r#""listen": "0.0.0.0:9999", "dataDir": "/var/lib/hf", "workers": 3,
            "durability": "full", "sessions": {"ttlSeconds": 60},
            "delivery": {"retrySchedule": [0.2, 1.5], "senders": 4, "caFile": "ca.pem",
                         "drainSeconds": 0},
            "tls": {"cert": "tls/cert.pem", "key": "/abs/key.pem"}"#;
        let endpoint = r#""enabled": false,
            "webhook": {"url": "https://${HOST}:8443/x?y#z", "user": "u", "password": "p",
                        "secret": "whsec_aGVsbG8=", "headers": {"X-Api-Key": "k"}},
            "inboundKeys": ["SHA256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"],
            "nlu": {"type": "rasa", "url": "http://rasa:5005", "token": "t"},
            "dataProtection": {"maskLogging": true},
            "transformer": {"file": "transformers/x.js", "notify": true}"#;
        // "SHA256:" is not the documented prefix; fix it and the rest must load.
        let text = config_with(top, endpoint);
        check_error(&text, "endpoints[0].inboundKeys[0]", "hookflow keygen");
        let config = ok(&text.replace("SHA256:", "sha256:"));
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.data_dir, Path::new("/var/lib/hf"));
        assert_eq!(config.workers, 3);
        assert_eq!(config.durability, Durability::Full);
        assert_eq!(config.session_ttl.as_secs(), 60);
        let waits = &config.delivery.retry_schedule;
        assert_eq!(waits, &[Duration::from_millis(200), Duration::from_millis(1500)]);
        assert_eq!(config.delivery.senders, 4);
        assert_eq!(config.delivery.drain, Duration::ZERO);
        assert_eq!(config.delivery.ca_file.as_deref(), Some(Path::new("/etc/hookflow/ca.pem")));
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/etc/hookflow/tls/cert.pem"));
        assert_eq!(tls.key, Path::new("/abs/key.pem"));

        let e = &config.endpoints[0];
        assert!(!e.enabled);
        assert_eq!(e.webhook.url, "https://example.com:8443/x?y#z");
        assert_eq!(e.webhook.secret.as_deref(), Some(&b"hello"[..]));
        assert_eq!(e.webhook.headers["X-Api-Key"], "k");
        assert_eq!(e.inbound_keys, vec![sha256(b"test")]);
        let Nlu::Rasa { url, token, timeout } = &e.nlu else { panic!("rasa") };
        assert_eq!((url.as_str(), token.as_deref()), ("http://rasa:5005", Some("t")));
        assert_eq!(timeout.as_millis(), 2000);
        assert!(e.data_protection.mask_logging && e.data_protection.contact_profiles);
        let t = e.transformer.as_ref().unwrap();
        assert_eq!(t.file, Path::new("/etc/hookflow/transformers/x.js"));
        assert!(t.input && t.output && !t.inject && t.notify && !t.abort_on_error);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        ok(&format!("\u{feff}{}", config_with("", "")));
    }

    #[test]
    fn nlu_none() {
        let config = ok(&config_with("", r#""nlu": {"type": "none"}"#));
        assert!(matches!(config.endpoints[0].nlu, Nlu::None));
    }

    #[test]
    fn data_dir_from_state_directory() {
        let env = |name: &str| (name == "STATE_DIRECTORY").then(|| "/var/lib/hookflow:/var/lib/other".to_string());
        let config = parse(&config_with("", ""), Path::new(FILE), &env).unwrap();
        assert_eq!(config.data_dir, Path::new("/var/lib/hookflow"));
        // An explicit dataDir wins.
        let text = config_with(r#""dataDir": "data""#, "");
        let config = parse(&text, Path::new(FILE), &env).unwrap();
        assert_eq!(config.data_dir, Path::new("/etc/hookflow/data"));
    }

    #[test]
    fn env_expansion() {
        let env = |name: &str| match name {
            "A" => Some("1".to_string()),
            "B" => Some("${A}".to_string()),
            _ => None,
        };
        assert_eq!(expand("x${A}y${A}", &env).unwrap(), "x1y1");
        assert_eq!(expand("$${A} $5 $", &env).unwrap(), "${A} $5 $");
        assert_eq!(expand("${B}", &env).unwrap(), "${A}", "values are not expanded again");
        assert_eq!(expand("${C}${D}", &env).unwrap_err().len(), 2);
        assert!(expand("${A", &env).unwrap_err()[0].contains("unterminated"));
        assert!(expand("${1x}", &env).unwrap_err()[0].contains("invalid variable name"));
    }

    /// Checks `(top members, endpoint members, place, message fragment)` cases, each giving
    /// exactly one error.
    fn check_cases(cases: &[(&str, &str, &str, &str)]) {
        for &(top, endpoint, place, fragment) in cases {
            check_error(&config_with(top, endpoint), place, fragment);
        }
    }

    #[test]
    fn unknown_key_suggests_nearest() {
        let text = config_with("", r#""urlTokn": "x""#).replace(r#""urlToken""#, r#""old""#);
        let errors = errors(&text);
        let places: Vec<&str> = errors.iter().map(|e| e.place.as_str()).collect();
        let expected = ["endpoints[0].old", "endpoints[0].urlTokn", "endpoints[0].urlToken"];
        assert_eq!(places, expected, "{errors:#?}");
        assert!(errors[0].message.contains("known keys here: name, urlToken, enabled"));
        let suggestion = r#"unknown key "urlTokn"; did you mean "urlToken"?"#;
        assert_eq!(errors[1].message, suggestion);
        assert_eq!(errors[2].message, r#"missing required key "urlToken""#);

        #[rustfmt::skip]
        check_cases(&[
            (r#""limits": {"maxbodybytes": 1}"#, "", "limits.maxbodybytes", r#"did you mean "maxBodyBytes"?"#),
            (r#""x": 1"#, "", "x", "known keys here: listen, dataDir"),
            ("", r#""nlu": {"type": "none", "threshold": 1}"#, "endpoints[0].nlu.threshold", "known keys here: type"),
            ("", r#""webhook": {"url": "http://h", "headrs": {}}"#, "endpoints[0].webhook.headrs", r#"did you mean "headers"?"#),
        ]);
    }

    #[test]
    fn wrong_types_and_values_say_expected_and_got() {
        #[rustfmt::skip]
        check_cases(&[
            (r#""listen": 8080"#, "", "listen", "expected a string, got a number"),
            (r#""listen": "localhost:8080""#, "", "listen", r#"expected an address like "127.0.0.1:8080""#),
            (r#""limits": []"#, "", "limits", "expected an object, got an array"),
            (r#""adminKeys": "sha256:00""#, "", "adminKeys", "expected an array, got a string"),
            (r#""workers": 5000"#, "", "workers", "expected an integer from 0 to 1024, got 5000"),
            (r#""limits": {"maxBodyBytes": 0}"#, "", "limits.maxBodyBytes", "expected a positive integer, got 0"),
            (r#""limits": {"queueCapacity": 1.5}"#, "", "limits.queueCapacity", "expected an integer from 1 to 10000000, got 1.5"),
            (r#""limits": {"queueCapacity": 10000001}"#, "", "limits.queueCapacity", "from 1 to 10000000, got 10000001"),
            (r#""limits": {"maxNodesPerTurn": "9"}"#, "", "limits.maxNodesPerTurn", "got a string"),
            (r#""durability": "fsync""#, "", "durability", r#"expected "normal" or "full", got "fsync""#),
            (r#""sessions": {"ttlSeconds": 0}"#, "", "sessions.ttlSeconds", "expected an integer from 1 to"),
            (r#""delivery": {"senders": 65}"#, "", "delivery.senders", "expected an integer from 1 to 64, got 65"),
            (r#""delivery": {"timeoutMs": -1}"#, "", "delivery.timeoutMs", "got -1"),
            (r#""delivery": {"retrySchedule": [1, 0]}"#, "", "delivery.retrySchedule[1]", "expected a positive number of seconds"),
            (r#""delivery": {"retrySchedule": [1, "2"]}"#, "", "delivery.retrySchedule[1]", "expected a number, got a string"),
            (r#""delivery": {"retrySchedule": []}"#, "", "delivery.retrySchedule", "at least one wait"),
            (r#""delivery": {"caFile": ""}"#, "", "delivery.caFile", "empty"),
            ("", r#""enabled": "yes""#, "endpoints[0].enabled", "expected true or false, got a string"),
            ("", r#""nlu": {"type": "builtin", "threshold": 2}"#, "endpoints[0].nlu.threshold", "from 0 to 1, got 2"),
            ("", r#""nlu": {"type": "luis"}"#, "endpoints[0].nlu.type", r#"expected "builtin", "none" or "rasa""#),
            ("", r#""nlu": "builtin""#, "endpoints[0].nlu", "expected an object, got a string"),
            ("", r#""dataProtection": {"maskLogging": 1}"#, "endpoints[0].dataProtection.maskLogging", "expected true or false"),
        ]);
        check_error("[]", "top level", "expected an object, got an array");
    }

    #[test]
    fn missing_required_keys() {
        check_error(r#"{}"#, "endpoints", r#"missing required key "endpoints""#);
        check_error(r#"{"endpoints": []}"#, "endpoints", "at least one endpoint");
        let no_flow = config_with("", "").replace(r#""flow":"f.json","#, "");
        check_error(&no_flow, "endpoints[0].flow", r#"missing required key "flow""#);
        #[rustfmt::skip]
        check_cases(&[
            ("", r#""webhook": null"#, "endpoints[0].webhook", "is required and cannot be null"),
            ("", r#""webhook": {}"#, "endpoints[0].webhook.url", r#"missing required key "url""#),
            (r#""tls": {"cert": "c.pem"}"#, "", "tls.key", r#"missing required key "key""#),
            ("", r#""transformer": {"input": false}"#, "endpoints[0].transformer.file", "missing"),
            ("", r#""transformer": "x.js""#, "endpoints[0].transformer", "expected an object, got a string"),
            ("", r#""nlu": {"type": "rasa"}"#, "endpoints[0].nlu.url", "missing"),
            ("", r#""nlu": {}"#, "endpoints[0].nlu.type", "missing"),
        ]);
    }

    #[test]
    fn a_missing_key_does_not_hide_its_siblings() {
        let text = config_with("", r#""transformer": {"input": "yes"}"#);
        let places: Vec<String> = errors(&text).into_iter().map(|e| e.place).collect();
        let expected = ["endpoints[0].transformer.file", "endpoints[0].transformer.input"];
        assert_eq!(places, expected);
    }

    #[test]
    fn names_and_tokens() {
        let base = config_with("", "");
        let short = base.replace(TOKEN, "short");
        check_error(&short, "endpoints[0].urlToken", "expected 8 to 128 characters, got 5");
        let slash = base.replace(TOKEN, "abcdefgh/123");
        check_error(&slash, "endpoints[0].urlToken", "found '/'");
        let upper = base.replace("support", "Support");
        check_error(&upper, "endpoints[0].name", "lowercase");

        let mut doc: Value = serde_json::from_str(&base).unwrap();
        let second = doc["endpoints"][0].clone();
        doc["endpoints"].as_array_mut().unwrap().push(second);
        doc["endpoints"][1]["urlToken"] = "zzzzzzzz".into();
        let duplicate = r#"duplicate name "support" (also endpoints[0].name)"#;
        check_error(&doc.to_string(), "endpoints[1].name", duplicate);
        doc["endpoints"][1]["urlToken"] = TOKEN.into();
        doc["endpoints"][1]["name"] = "sales".into();
        let same = "same urlToken as endpoints[0]";
        check_error(&doc.to_string(), "endpoints[1].urlToken", same);
    }

    #[test]
    fn webhook_checks() {
        let url = |u: &str| config_with("", &format!(r#""webhook": {{"url": "{u}"}}"#));
        let place = "endpoints[0].webhook.url";
        check_error(&url("ftp://h/x"), place, "expected an http:// or https:// URL");
        check_error(&url("http:///x"), place, "no host");
        check_error(&url("http://h:99999/"), place, "port");
        check_error(&url("http://h /"), place, "spaces");
        ok(&url("http://[::1]:9000/hook"));
        ok(&url("https://u:p@example.com"));

        let webhook = |members: &str| format!(r#""webhook": {{"url": "http://h", {members}}}"#);
        #[rustfmt::skip]
        let cases = [
            (r#""password": "p""#, "endpoints[0].webhook.password", "needs a user"),
            (r#""user": "a:b""#, "endpoints[0].webhook.user", "must not contain"),
            (r#""secret": "hello""#, "endpoints[0].webhook.secret", "whsec_"),
            (r#""secret": "whsec_!!""#, "endpoints[0].webhook.secret", "base64"),
            (r#""headers": {"Bad Name": "v"}"#, r#"endpoints[0].webhook.headers["Bad Name"]"#, "header name"),
            (r#""headers": {"X-A": "a\nb"}"#, "endpoints[0].webhook.headers.X-A", "line breaks"),
            (r#""headers": {"X-A": 1}"#, "endpoints[0].webhook.headers.X-A", "expected a string, got a number"),
        ];
        for (members, place, fragment) in cases {
            check_error(&config_with("", &webhook(members)), place, fragment);
        }
    }

    #[test]
    fn missing_env_var_names_variable_and_path() {
        let text = EXAMPLE.replace("SUPPORT_WEBHOOK_PASSWORD", "NOPE");
        check_error(&text, "endpoints[0].webhook.password", "environment variable NOPE is not set");
    }

    #[test]
    fn bad_key_digests() {
        let keys = |k: &str| config_with(&format!(r#""adminKeys": ["{k}"]"#), "");
        check_error(&keys("my-plain-key"), "adminKeys[0]", "run \"hookflow keygen\"");
        check_error(&keys("sha256:abcd"), "adminKeys[0]", "expected 64 hex digits after \"sha256:\", got 4");
        check_error(&keys(&format!("sha256:{}", "g".repeat(64))), "adminKeys[0]", "only hex digits");
        // The plain key is never echoed.
        assert!(!errors(&keys("my-plain-key"))[0].message.contains("my-plain-key"));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let errors = errors("{\n  \"listen\": \"x\",\n}");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].place, "line 3, column 1");
        assert!(errors[0].message.starts_with("invalid JSON: trailing comma"), "{errors:?}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let top = r#""listen": "nowhere", "workers": -1, "lmits": {}, "adminKeys": ["plain"]"#;
        let endpoint = r#""enabled": 1, "nlu": {"type": "builtin", "threshold": "high"}"#;
        let text = config_with(top, endpoint).replace("f.json", "${MISSING}");
        let errors = parse(&text, Path::new(FILE), &env).unwrap_err();
        let places: Vec<&str> = errors.0.iter().map(|e| e.place.as_str()).collect();
        assert_eq!(
            places,
            [
                "lmits",
                "listen",
                "workers",
                "adminKeys[0]",
                "endpoints[0].enabled",
                "endpoints[0].flow",
                "endpoints[0].nlu.threshold",
            ]
        );
        let shown = errors.to_string();
        assert_eq!(shown.lines().count(), 7);
        assert!(
            shown.starts_with("/etc/hookflow/hookflow.json: lmits: unknown key \"lmits\"; did you mean \"limits\"?\n")
        );
    }

    #[test]
    fn load_reads_a_real_file_and_resolves_relative_paths() {
        let dir = std::env::temp_dir().join(format!("hookflow-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hookflow.json");
        std::fs::write(&file, config_with(r#""dataDir": "data""#, "")).unwrap();
        let config = load(&file);
        let missing = load(&dir.join("nope.json"));
        std::fs::remove_dir_all(&dir).unwrap();

        let config = config.unwrap();
        assert_eq!(config.path, file);
        assert_eq!(config.data_dir, dir.join("data"));
        assert_eq!(config.endpoints[0].flow, dir.join("f.json"));
        let errors = missing.unwrap_err();
        assert_eq!(errors.0[0].place, "");
        assert!(errors.to_string().contains("nope.json: cannot read the config file"));
    }

    #[test]
    fn relative_config_path_gives_absolute_paths() {
        let config = parse(&config_with("", ""), Path::new("hookflow.json"), &env).unwrap();
        assert!(config.endpoints[0].flow.is_absolute());
        assert!(config.data_dir.is_absolute());
    }

    #[test]
    fn digests_and_keys() {
        let digest = sha256(b"test");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
        assert_eq!(parse_key_digest(&format!("sha256:{hex}")), Ok(digest));
        assert_eq!(parse_key_digest(&format!("sha256:{}", hex.to_uppercase())), Ok(digest));

        let other = sha256(b"other");
        assert!(key_matches("test", &[other, digest]));
        assert!(key_matches("test", &[digest]));
        assert!(!key_matches("tesT", &[other, digest]));
        assert!(!key_matches("test", &[]));
    }

    #[test]
    fn console_is_off_by_default_and_needs_admin_keys() {
        assert!(!ok(&config_with("", "")).console.enabled);
        let key = r#""adminKeys": ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]"#;
        assert!(ok(&config_with(&format!(r#"{key}, "console": {{"enabled": true}}"#), "")).console.enabled);
        check_error(&config_with(r#""console": {"enabled": true}"#, ""), "console.enabled", "needs an admin key");
        check_error(&config_with(r#""console": {"enable": true}"#, ""), "console.enable", r#"did you mean "enabled"?"#);
        check_error(&config_with(r#""console": {"enabled": "yes"}"#, ""), "console.enabled", "got a string");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("urlTokn", "urlToken"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn error_type_stays_small() {
        // Errors travel by value through `?`; a Vec keeps ConfigErrors one pointer wide-ish.
        assert_eq!(std::mem::size_of::<ConfigErrors>(), 3 * std::mem::size_of::<usize>());
    }
}
