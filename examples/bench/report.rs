//! What `make bench` prints: a row per load, the ratios of loads measured next to each other,
//! the goals, and the summary at the end.

use super::*;

impl Bench {
    pub(super) fn row_of(&self, label: &str, r: &LoadResult, server: Option<&Server>, note: String) -> Row {
        Row {
            label: label.to_string(),
            accepted: r.accepted_rate(),
            delivered: r.delivered_rate(),
            accept_p50: r.accept_pct(0.50),
            accept_p99: r.accept_pct(0.99),
            e2e_p50: r.latency_pct(0.50),
            cpu_ms: r.cpu_ms_per_msg(),
            load_avg: r.load_avg.clone(),
            cpu_wait: r.cpu_wait_pct(),
            ready_ms: server.map(|s| s.ready.as_secs_f64() * 1e3),
            idle_rss: server.map(|s| s.idle_rss),
            peak_rss: r.peak_rss,
            correct: r.correct(),
            note,
        }
    }

    pub(super) fn row(&mut self, label: &str, r: &LoadResult, server: Option<&Server>, note: String) {
        let row = self.row_of(label, r, server, note);
        self.rows.push(row);
    }

    /// Prints the sizes of the binary under test and of the static one (`make static`, if built; it
    /// is the appliance binary, held under 8 MiB), and records the latter as a goal.
    pub(super) fn binary_sizes(&mut self) {
        let mib = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len() as f64 / 1_048_576.0);
        let target = self.hookflow.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
        let static_bin = target.join("x86_64-unknown-linux-gnu/release/hookflow");
        let release = mib(&self.hookflow).map_or("-".to_string(), |m| format!("{m:.2} MiB"));
        let built = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        match mib(&static_bin) {
            Some(m) => {
                // Older than the binary under test: the size is of an earlier source.
                let stale = match (built(&static_bin), built(&self.hookflow)) {
                    (Some(s), Some(h)) if s < h => {
                        "; BUILT BEFORE the binary under test: run `make static` (or `make bench`)"
                    }
                    _ => "",
                };
                println!("binary       hookflow {release}; static {m:.2} MiB ({}){stale}", static_bin.display());
                self.goal("static binary size (make static)", m, "MiB", 8.0, false);
            }
            None => {
                println!(
                    "binary       hookflow {release}; static not built (`make size` builds it and prints its size)"
                )
            }
        }
    }

    /// Records a goal: `value` must be at most (or, with `at_least`, at least) `goal`.
    pub(super) fn goal(&mut self, name: &str, value: f64, unit: &'static str, goal: f64, at_least: bool) {
        self.goals.push(Goal { name: name.to_string(), value, unit, goal, at_least });
    }

    pub(super) fn summary(&self, load_at_start: &str, took: Duration) {
        println!();
        println!(
            "== summary: {} s in all; load average {load_at_start} at the start, {} at the end ({} CPUs) ==",
            took.as_secs(),
            loadavg(),
            machine().0
        );
        println!(
            "{:<24} {:>5} {:>5} {:>10} {:>11} {:>15} {:>9} {:>7} {:>6} {:>13}  ratio",
            "scenario",
            "load",
            "wait",
            "accepted/s",
            "delivered/s",
            "accept p50/p99",
            "e2e p50",
            "CPU/msg",
            "ready",
            "RSS idle/peak",
        );
        for r in &self.rows {
            let ready = r.ready_ms.map_or("-".to_string(), |ms| format!("{ms:.0}ms"));
            let idle = r.idle_rss.map_or("-".to_string(), |k| format!("{:.1}", kib_to_mib(k)));
            println!(
                "{:<24} {:>5} {:>5} {:>10.0} {:>11.0} {:>15} {:>9} {:>7} {:>6} {:>13}  {}{}",
                r.label,
                r.load_avg,
                format!("{:.0}%", r.cpu_wait),
                r.accepted,
                r.delivered,
                format!("{:.1}/{:.1}ms", r.accept_p50, r.accept_p99),
                format!("{:.0}ms", r.e2e_p50),
                format!("{:.3}ms", r.cpu_ms),
                ready,
                format!("{idle}/{:.1}MiB", kib_to_mib(r.peak_rss)),
                r.note,
                if r.correct { "" } else { "  INCORRECT (see above)" }
            );
        }
        let logged: usize = self.log_lines.iter().sum();
        println!(
            "server logs  {logged} lines from {} servers at RUST_LOG={}{}",
            self.log_lines.len(),
            self.server_log,
            if logged > 0 && self.server_log == "warn" { " (expected none: see the heads above)" } else { "" }
        );
        if !self.ratios.is_empty() {
            println!("ratios (measured next to each other)");
            for r in &self.ratios {
                println!("  {r}");
            }
        }
        let mut line = String::new();
        for g in &self.goals {
            let met = if g.at_least { g.value >= g.goal } else { g.value <= g.goal };
            let (cmp, unit) = (if g.at_least { "≥" } else { "≤" }, if g.unit.is_empty() { "" } else { " " });
            let _ = write!(
                line,
                "\n  {:<38} {:>8.3}{unit}{:<3}  goal {cmp} {}{unit}{:<3}  {}",
                g.name,
                g.value,
                g.unit,
                g.goal,
                g.unit,
                if met { "met" } else { "MISSED" }
            );
        }
        if !line.is_empty() {
            println!("goals{line}");
        }
        println!(
            "(load: 1-min load average at the start of the load; wait: server threads runnable but waiting for a CPU, \
         in % of one core; CPU/msg: server user+system time over the load window \
         ÷ outputs delivered)"
        );
    }
}

/// The rates of one load that the bare comparison needs.
#[derive(Clone, Copy)]
pub(super) struct Rates {
    pub(super) delivered: f64,
    pub(super) accepted: f64,
    pub(super) cpu_ms: f64,
}

impl Rates {
    pub(super) fn of(r: &LoadResult) -> Rates {
        Rates { delivered: r.delivered_rate(), accepted: r.accepted_rate(), cpu_ms: r.cpu_ms_per_msg() }
    }
}

/// Per round, the two variants' results (see `Bench::pair`).
pub(super) type Rounds = Vec<Vec<(LoadResult, Server)>>;

/// A ratio (second variant ÷ first) per round.
pub(super) struct Ratios(pub(super) Vec<f64>);

impl Ratios {
    /// The median, not the mean: one round disturbed by a build next door should not move it.
    pub(super) fn median(&self) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// The median alone, or `median (round 1, round 2, ...)`; `n/a` where a denominator was 0.
    pub(super) fn text(&self) -> String {
        let show = |r: f64| if r.is_finite() { format!("{r:.2}") } else { "n/a".into() };
        let median = self.median();
        if self.0.len() < 2 {
            return show(median);
        }
        let each: Vec<String> = self.0.iter().map(|&r| show(r)).collect();
        format!("{} (median; rounds: {})", show(median), each.join(", "))
    }
}

pub(super) fn ratios(rounds: &Rounds, f: impl Fn(&LoadResult) -> f64) -> Ratios {
    Ratios(rounds.iter().map(|r| f(&r[1].0) / f(&r[0].0)).collect())
}

/// One line of the summary table.
pub(super) struct Row {
    pub(super) label: String,
    pub(super) accepted: f64,
    pub(super) delivered: f64,
    pub(super) accept_p50: f64,
    pub(super) accept_p99: f64,
    pub(super) e2e_p50: f64,
    pub(super) cpu_ms: f64,
    pub(super) load_avg: String,
    /// Server threads runnable but waiting for a CPU, in % of one core.
    pub(super) cpu_wait: f64,
    pub(super) ready_ms: Option<f64>,
    pub(super) idle_rss: Option<u64>,
    pub(super) peak_rss: u64,
    pub(super) correct: bool,
    pub(super) note: String,
}

pub(super) struct Goal {
    pub(super) name: String,
    pub(super) value: f64,
    pub(super) unit: &'static str,
    pub(super) goal: f64,
    pub(super) at_least: bool,
}

/// The heading of a scenario, with the load average right before it.
pub(super) fn section(name: &str, what: &str) {
    println!();
    println!("== {name}: {what} (load average {}) ==", loadavg());
}
