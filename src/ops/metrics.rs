//! Counters and histograms for `/metrics`, in the Prometheus text format. Updated with atomics
//! on the hot path; only the per-endpoint request counter takes a short lock, and so do the
//! per-endpoint delivery counters of the console's overview (`/api/stats`: totals since start
//! and one bucket a minute for the last hour).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Most handover ids `hookflow_handovers_active` keeps (about 1 MiB of them).
const MAX_TRACKED_HANDOVERS: usize = 10_000;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A cumulative histogram of durations.
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: Default::default(), sum_micros: AtomicU64::new(0), total: AtomicU64::new(0) }
    }

    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
        self.total.fetch_add(1, Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cum += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let total = self.total.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// Every metric hookflow exports.
pub(crate) struct Metrics {
    /// (endpoint name or "-", route kind, status) → count.
    requests: Mutex<BTreeMap<(String, &'static str, u16), u64>>,
    turns: Histogram,
    delivery: Histogram,
    delivered: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    /// Outbound calls of parked turns (engine/calls.rs): waiting for a thread, in flight, done.
    calls_waiting: AtomicU64,
    calls_in_flight: AtomicU64,
    calls_done: AtomicU64,
    /// Failed translation requests (engine/translate) by endpoint.
    translation_failures: Mutex<BTreeMap<String, u64>>,
    /// Handovers accepted by their provider; active ones (see `handover_ended`); ended, by status.
    handovers_started: AtomicU64,
    /// The ids of the handovers this process saw start and has not seen end: a handover that
    /// started before a restart (or on another replica) and ends here is not taken off the count
    /// of one this process started.
    handovers_active: Mutex<HashSet<String>>,
    handovers_ended: Mutex<BTreeMap<String, u64>>,
    /// Delivery attempts by endpoint, for the console.
    attempts: Mutex<BTreeMap<String, EndpointAttempts>>,
    started: std::time::Instant,
}

/// Minutes of history of the console's charts.
pub(crate) const MINUTES: usize = 60;

/// Delivery attempts of one endpoint since start, and per minute for the last hour.
#[derive(Debug, Clone)]
pub(crate) struct EndpointAttempts {
    pub delivered: u64,
    pub failed: u64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// Unix ms of the last attempt.
    pub last_ms: i64,
    /// `MINUTES` slots, indexed by minute number % `MINUTES`.
    pub minutes: Vec<Minute>,
}

impl Default for EndpointAttempts {
    fn default() -> EndpointAttempts {
        EndpointAttempts {
            delivered: 0,
            failed: 0,
            consecutive_failures: 0,
            last_ms: 0,
            minutes: vec![Minute::default(); MINUTES],
        }
    }
}

/// One minute of attempts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Minute {
    /// Minutes since the Unix epoch; a slot holding an older minute counts as empty.
    pub minute: i64,
    pub delivered: u64,
    pub failed: u64,
    /// Sum of the latencies of the delivered ones, in ms.
    pub latency_ms: f64,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            requests: Mutex::default(),
            turns: Histogram::new(),
            delivery: Histogram::new(),
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            calls_waiting: AtomicU64::new(0),
            calls_in_flight: AtomicU64::new(0),
            calls_done: AtomicU64::new(0),
            translation_failures: Mutex::default(),
            handovers_started: AtomicU64::new(0),
            handovers_active: Mutex::default(),
            handovers_ended: Mutex::default(),
            attempts: Mutex::default(),
            started: std::time::Instant::now(),
        }
    }

    /// A delivery attempt of `endpoint` at `now_ms` (for the console's overview).
    pub(crate) fn attempt(&self, endpoint: &str, delivered: bool, took: Duration) {
        let now = crate::util::now_ms();
        let minute = now / 60_000;
        let mut all = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let e = match all.get_mut(endpoint) {
            Some(e) => e,
            None => all.entry(endpoint.to_owned()).or_default(),
        };
        let slot = &mut e.minutes[minute as usize % MINUTES];
        if slot.minute != minute {
            *slot = Minute { minute, ..Minute::default() };
        }
        e.last_ms = now;
        if delivered {
            (e.delivered, e.consecutive_failures) = (e.delivered + 1, 0);
            slot.delivered += 1;
            slot.latency_ms += took.as_secs_f64() * 1000.0;
        } else {
            (e.failed, e.consecutive_failures) = (e.failed + 1, e.consecutive_failures + 1);
            slot.failed += 1;
        }
    }

    /// The attempts of every endpoint that had one.
    pub(crate) fn endpoint_attempts(&self) -> BTreeMap<String, EndpointAttempts> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Outputs delivered, failed attempts to be retried, dead letters made, since start.
    pub(crate) fn delivery_totals(&self) -> (u64, u64, u64) {
        (self.delivered.load(Relaxed), self.retried.load(Relaxed), self.dead.load(Relaxed))
    }

    /// Time since start.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn request(&self, endpoint: &str, route: &'static str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((endpoint.to_owned(), route, status)).or_default() += 1;
    }

    pub(crate) fn turn_done(&self, d: Duration) {
        self.turns.observe(d);
    }

    pub(crate) fn delivered(&self, d: Duration) {
        self.delivered.fetch_add(1, Relaxed);
        self.delivery.observe(d);
    }

    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Relaxed);
    }

    pub(crate) fn dead(&self) {
        self.dead.fetch_add(1, Relaxed);
    }

    pub(crate) fn call_queued(&self) {
        self.calls_waiting.fetch_add(1, Relaxed);
    }

    pub(crate) fn call_started(&self) {
        self.calls_waiting.fetch_sub(1, Relaxed);
        self.calls_in_flight.fetch_add(1, Relaxed);
    }

    pub(crate) fn call_done(&self) {
        self.calls_in_flight.fetch_sub(1, Relaxed);
        self.calls_done.fetch_add(1, Relaxed);
    }

    /// A translation request of `endpoint` failed (error answer or timeout); the text went on
    /// untranslated.
    pub(crate) fn translation_failed(&self, endpoint: &str) {
        *self.translation_failures.lock().unwrap_or_else(|p| p.into_inner()).entry(endpoint.to_owned()).or_default() +=
            1;
    }

    /// The handover `id`'s start was accepted by its provider.
    pub(crate) fn handover_started(&self, id: &str) {
        self.handovers_started.fetch_add(1, Relaxed);
        let mut active = self.handovers_active.lock().unwrap_or_else(|p| p.into_inner());
        // Ids whose end this process never sees (the session forgotten meanwhile, the end taken
        // by another replica) stay: the set is bounded so that they cannot grow it for ever.
        if active.len() < MAX_TRACKED_HANDOVERS {
            active.insert(id.to_owned());
        }
    }

    /// The handover `id` ended as `status`.
    pub(crate) fn handover_ended(&self, status: &str, id: &str) {
        self.handovers_active.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let mut m = self.handovers_ended.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(status.to_owned()).or_default() += 1;
    }

    /// The text of `/metrics`; `queue_depth` and `sessions` are read by the caller, and so is
    /// `replica`, this replica's name when the store is shared (replicas.md: each replica's
    /// metrics name it).
    pub(crate) fn render(&self, queue_depth: usize, sessions: usize, replica: Option<&str>) -> String {
        let mut out = String::new();
        if let Some(name) = replica {
            let name = name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = writeln!(
                out,
                "# HELP hookflow_replica_info This replica's name in the shared database's claims and in its logs.\n\
                 # TYPE hookflow_replica_info gauge\nhookflow_replica_info{{replica=\"{name}\"}} 1"
            );
        }
        out.push_str("# HELP hookflow_requests_total HTTP requests by endpoint, route and status.\n# TYPE hookflow_requests_total counter\n");
        for ((ep, route, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ =
                writeln!(out, "hookflow_requests_total{{endpoint=\"{ep}\",route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "hookflow_inbound_queue_depth",
            "Messages accepted and not yet finished (queued or running).",
            queue_depth as u64,
        );
        gauge(&mut out, "hookflow_sessions_active", "Sessions with queued or running messages.", sessions as u64);
        let calls = |v: &AtomicU64| v.load(Relaxed);
        gauge(
            &mut out,
            "hookflow_calls_waiting",
            "Outbound calls of parked turns (http node, Rasa, handover provider) waiting for a call thread.",
            calls(&self.calls_waiting),
        );
        gauge(
            &mut out,
            "hookflow_calls_in_flight",
            "Outbound calls of parked turns in flight.",
            calls(&self.calls_in_flight),
        );
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        };
        counter(&mut out, "hookflow_outputs_delivered_total", "Outputs the webhook accepted.", &self.delivered);
        counter(
            &mut out,
            "hookflow_outputs_retried_total",
            "Failed delivery attempts that will be retried.",
            &self.retried,
        );
        counter(&mut out, "hookflow_outputs_dead_total", "Outputs that became dead letters.", &self.dead);
        counter(&mut out, "hookflow_calls_total", "Outbound calls of parked turns completed.", &self.calls_done);
        out.push_str("# HELP hookflow_translation_failures_total Translation requests that failed (the text went on untranslated), by endpoint.\n# TYPE hookflow_translation_failures_total counter\n");
        for (ep, n) in self.translation_failures.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "hookflow_translation_failures_total{{endpoint=\"{ep}\"}} {n}");
        }
        counter(
            &mut out,
            "hookflow_handovers_started_total",
            "Handovers to a human agent that the provider accepted.",
            &self.handovers_started,
        );
        out.push_str("# HELP hookflow_handovers_ended_total Handovers ended, by status (completed, cancelled, error).\n# TYPE hookflow_handovers_ended_total counter\n");
        for (status, n) in self.handovers_ended.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "hookflow_handovers_ended_total{{status=\"{status}\"}} {n}");
        }
        gauge(
            &mut out,
            "hookflow_handovers_active",
            "Handovers this process saw start and has not seen end (since it started).",
            self.handovers_active.lock().unwrap_or_else(|p| p.into_inner()).len() as u64,
        );
        self.turns.write(&mut out, "hookflow_flow_run_seconds", "Worker time of one part of a turn: a message through its Flow to its end or to a parked call (a turn with http nodes has several parts).");
        self.delivery.write(&mut out, "hookflow_delivery_seconds", "Time of one successful webhook POST.");
        out
    }
}
