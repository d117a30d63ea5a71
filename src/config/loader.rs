//! The walk of the config file: every section in the order of config.md, so errors come out in
//! the order a reader of the file meets them. The checks of single values are `checks.rs`.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::checks::expand;
use super::files;
use super::walk::{Obj, Walk, join};
use super::*;

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
    "store",
];
const CONSOLE_KEYS: &[&str] = &["enabled"];
const LIMITS_KEYS: &[&str] = &[
    "maxBodyBytes",
    "queueCapacity",
    "maxNodesPerTurn",
    "scriptTimeoutMs",
    "scriptMemoryBytes",
    "turnScriptMs",
    "maxConcurrentCalls",
    "maxConnections",
    "maxHeaderBytes",
];
const SESSIONS_KEYS: &[&str] = &["ttlSeconds"];
const DELIVERY_KEYS: &[&str] = &["timeoutMs", "connectTimeoutMs", "retrySchedule", "drainSeconds", "senders", "caFile"];
const TLS_KEYS: &[&str] = &["cert", "key"];
const ENDPOINT_KEYS: &[&str] = &[
    "name",
    "urlToken",
    "enabled",
    "flow",
    "webhook",
    "inboundKeys",
    "nlu",
    "dataProtection",
    "transformer",
    "translation",
    "handover",
];
const WEBHOOK_KEYS: &[&str] = &["url", "user", "password", "secret", "headers"];
const NLU_BUILTIN_KEYS: &[&str] = &["type", "threshold"];
const NLU_NONE_KEYS: &[&str] = &["type"];
const NLU_RASA_KEYS: &[&str] = &["type", "url", "token", "timeoutMs"];
const DATA_PROTECTION_KEYS: &[&str] = &["maskLogging", "maskIPAddress", "contactProfiles", "collectConversations"];
const TRANSFORMER_KEYS: &[&str] = &["file", "input", "output", "inject", "notify", "abortOnError"];

/// The ranges of durations in whole seconds and milliseconds.
const SECONDS: RangeInclusive<u64> = 1..=MAX_SECONDS;
const MILLIS: RangeInclusive<u64> = 1..=MAX_SECONDS * 1000;

/// Walks the parsed file: the config, with placeholders where values were wrong (an empty path,
/// a default), and every problem found.
pub(super) fn walk(root: &Value, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> (Config, Vec<ConfigError>) {
    let mut loader = Loader { file: path.to_path_buf(), base: base_dir(path), env, errors: Vec::new() };
    let config = loader.config(root);
    (config, loader.errors)
}

/// The folder relative paths are resolved against, made absolute once so that the resolved
/// paths keep meaning the same file whatever the working directory later is.
pub(super) fn base_dir(path: &Path) -> PathBuf {
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

/// The state of one load: where relative paths start, how to read variables, and the problems
/// found so far.
pub(super) struct Loader<'e> {
    pub(super) file: PathBuf,
    pub(super) base: PathBuf,
    pub(super) env: &'e dyn Fn(&str) -> Option<String>,
    pub(super) errors: Vec<ConfigError>,
}

impl Walk for Loader<'_> {
    fn report(&mut self, place: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            place: if place.is_empty() { "top level" } else { place }.to_string(),
            message,
        });
    }
}

impl Loader<'_> {
    /// The whole file. Fields are read in the order of config.md so errors come out in the
    /// order a reader of the file meets them.
    fn config(&mut self, root: &Value) -> Config {
        let top = self.object(String::new(), Some(root), TOP_KEYS);
        let mut config = Config {
            path: self.file.clone(),
            dir: self.base.clone(),
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
            store: self.store(&top),
        };
        config.console = self.console(&top, &config.admin_keys);
        config
    }

    /// `console`: off by default; on, it needs an admin key to log in with.
    fn console(&mut self, top: &Obj, admin_keys: &[[u8; 32]]) -> Console {
        let o = self.sub(top, "console", CONSOLE_KEYS);
        let enabled = self.opt_bool(&o, "enabled", false);
        if enabled && admin_keys.is_empty() {
            let message = "the console needs an admin key to log in with: add one to adminKeys (hookflow keygen \
                           prints one), or set console.enabled to false";
            self.error("console.enabled", message);
        }
        Console { enabled }
    }

    fn listen(&mut self, top: &Obj) -> SocketAddr {
        let default = DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN is an address");
        self.opt(top, "listen", Self::socket_addr).unwrap_or(default)
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
        workers_for(self.opt(top, "workers", |l, p, v| l.integer(p, v, range)).unwrap_or(0) as usize)
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
            // Below these, nothing works: QuickJS cannot make a context (every turn with
            // JavaScript failed), and a request's line and usual headers do not fit.
            script_memory_bytes: self.opt_usize_from(
                &o,
                "scriptMemoryBytes",
                DEFAULT_SCRIPT_MEMORY_BYTES,
                1 << 20,
                usize_max,
            ),
            turn_script: Duration::from_millis(self.opt_int(&o, "turnScriptMs", DEFAULT_TURN_SCRIPT_MS, MILLIS)),
            max_concurrent_calls: self.opt_usize(
                &o,
                "maxConcurrentCalls",
                DEFAULT_MAX_CONCURRENT_CALLS,
                MAX_CONCURRENT_CALLS,
            ),
            max_connections: self.opt_usize(&o, "maxConnections", DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS),
            max_header_bytes: self.opt_usize_from(&o, "maxHeaderBytes", DEFAULT_MAX_HEADER_BYTES, 1024, usize_max),
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

    fn tls(&mut self, top: &Obj) -> Option<Tls> {
        top.value("tls")?;
        let o = self.sub(top, "tls", TLS_KEYS);
        Some(Tls {
            cert: self.req(&o, "cert", Self::path).unwrap_or_default(),
            key: self.req(&o, "key", Self::path).unwrap_or_default(),
        })
    }

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
            flow: self.req(&o, "flow", Self::code_file).unwrap_or_default(),
            webhook: self.webhook(&o),
            inbound_keys: self.key_list(&o, "inboundKeys"),
            nlu: self.nlu(&o),
            data_protection: self.data_protection(&o),
            transformer: self.transformer(&o),
            translation: self.translation(&o),
            handover: self.handover(&o),
        }
    }

    fn webhook(&mut self, endpoint: &Obj) -> Webhook {
        self.check_present(endpoint, "webhook");
        let o = self.sub(endpoint, "webhook", WEBHOOK_KEYS);
        let url = self.req(&o, "url", Self::http_url).unwrap_or_default();
        if checks::has_userinfo(&url) {
            // A URL is shown (check, the admin API); "user" and "password" never are.
            let message = format!(
                "must not contain credentials (\"user:password@\"): set \"user\" and \"password\" in {} \
                 instead (HTTP Basic), so that they are never shown with the URL",
                o.path
            );
            self.error(&o.at("url"), message);
        }
        let user = self.opt(&o, "user", Self::basic_user);
        let password = self.opt(&o, "password", Self::string);
        if password.is_some() && o.value("user").is_none() {
            let message = "a password needs a user: add \"user\" (HTTP Basic)";
            self.error(&o.at("password"), message);
        }
        Webhook {
            url,
            user,
            password,
            secret: self.opt(&o, "secret", Self::secret),
            headers: self.opt(&o, "headers", Self::headers).unwrap_or_default(),
        }
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
            file: self.req(&o, "file", Self::code_file).unwrap_or_default(),
            input: self.opt_bool(&o, "input", true),
            output: self.opt_bool(&o, "output", true),
            inject: self.opt_bool(&o, "inject", false),
            notify: self.opt_bool(&o, "notify", false),
            abort_on_error: self.opt_bool(&o, "abortOnError", false),
        })
    }

    /// A count from 1 to `max` (at most `usize::MAX`, so the cast cannot truncate).
    fn opt_usize(&mut self, o: &Obj, key: &str, default: usize, max: u64) -> usize {
        self.opt_usize_from(o, key, default, 1, max)
    }

    fn opt_usize_from(&mut self, o: &Obj, key: &str, default: usize, min: u64, max: u64) -> usize {
        let max = max.min(usize::MAX as u64);
        self.opt(o, key, |l, p, v| l.integer(p, v, min..=max)).map_or(default, |n| n as usize)
    }

    /// A string with `${NAME}` expanded (see [`parse`]).
    pub(super) fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        let raw = self.str(path, v)?;
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
    pub(super) fn path(&mut self, path: &str, v: &Value) -> Option<PathBuf> {
        let s = self.string(path, v)?;
        if s.is_empty() {
            self.error(path, "expected a file path, got an empty string");
            return None;
        }
        Some(resolve(&self.base, &s))
    }

    /// A path of a file hookflow reads as code (a Flow, a transformer): like `path`, and inside
    /// the config file's folder by its text (`files.rs` checks the rest when reading it).
    fn code_file(&mut self, path: &str, v: &Value) -> Option<PathBuf> {
        let file = self.path(path, v)?;
        match files::check_inside(&self.base, &file) {
            Ok(()) => Some(file),
            Err(e) => {
                self.error(path, format!("cannot use {}: {e}", file.display()));
                None
            }
        }
    }
}
