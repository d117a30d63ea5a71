//! Scenarios of `make bench` beside the throughput ones (a child module of `bench.rs`, so it uses
//! the same servers, sink, loads and summary):
//!
//! | scenario | what it answers |
//! | --- | --- |
//! | latency | low load (`BENCH_LATENCY_RATE` msg/s, default 100, from 2 clients, `BENCH_LATENCY_N` messages): acknowledgement and end-to-end p99 of hookflow ÷ bare (goal ≤ 1.5 each), alternating for `BENCH_ROUNDS` rounds |
//! | store | the echo load on a fresh store vs one holding `BENCH_STORE_SESSIONS` (1,000,000) idle sessions: delivered/s and CPU per message (goal: within 5 %) |
//! | parked | the echo load alone vs the same load while `BENCH_PARKED` (48) sessions keep an `http` node waiting on an API that answers after `BENCH_PARK_MS` (500 ms): the parked calls must not slow the others (delivered/s ratio, e2e p99) |
//!
//! `BENCH_BASELINE=<path to another hookflow binary>` (e.g. a build of an older commit) adds that
//! binary to latency and parked, so their output shows before and after side by side.

use super::*;

/// The `if` condition that sends a message to the slow API (the parked scenario).
const PARKED_USER_PREFIX: &str = "park";

impl Bench {
    /// Another hookflow binary to compare against, if `BENCH_BASELINE` names one.
    fn baseline(&self) -> Option<PathBuf> {
        std::env::var_os("BENCH_BASELINE").map(PathBuf::from).filter(|p| p.exists())
    }

    /// Low load: acknowledgement and end-to-end p99 against the bare pipeline.
    pub(super) fn latency(&mut self) -> Result<(), String> {
        let n = env_usize("BENCH_LATENCY_N")?.unwrap_or(1500);
        let rate = env_usize("BENCH_LATENCY_RATE")?.unwrap_or(100) as f64;
        let load = Load { clients: 2, rate: Some(rate), ..self.knobs.load(n, 50) };
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        let mut variants = vec![("hookflow", self.hookflow("normal", None, PATH_TEMPLATE))];
        if let Some(b) = self.baseline() {
            let Target::Hookflow(h) = self.hookflow("normal", None, PATH_TEMPLATE) else { unreachable!() };
            variants.push(("baseline", Target::Hookflow(Hookflow { binary: Some(b), ..h })));
        }
        variants.push(("bare", Target::Bare));
        // Per variant and round: (ack p99, e2e p99) and (ack p50, e2e p50) in ms.
        let mut p99: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
        let mut p50: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
        for round in 1..=self.knobs.rounds {
            for (i, (name, target)) in variants.iter().enumerate() {
                section(&format!("latency {name} #{round}"), &format!("{rate:.0} msg/s from 2 clients, {n} messages"));
                let mut server = self.start(&format!("latency-{name}-{round}"), target, sink.addr)?;
                let r = self.measure(&mut server, &sink, load)?;
                self.stop(&mut server);
                p99[i].push((r.accept_pct(0.99), r.latency_pct(0.99)));
                p50[i].push((r.accept_pct(0.5), r.latency_pct(0.5)));
                let note = format!("ack p99 {:.2} ms, e2e p99 {:.2} ms", r.accept_pct(0.99), r.latency_pct(0.99));
                self.row(&format!("latency {name} #{round}"), &r, Some(&server), note);
            }
        }
        let bare = p99.last().expect("bare is a variant").clone();
        for (i, (name, _)) in variants.iter().enumerate().take(variants.len() - 1) {
            let ack = Ratios(p99[i].iter().zip(&bare).map(|(a, b)| a.0 / b.0).collect());
            let e2e = Ratios(p99[i].iter().zip(&bare).map(|(a, b)| a.1 / b.1).collect());
            let line = format!("{name} ÷ bare at {rate:.0} msg/s: ack p99 {}, e2e p99 {}", ack.text(), e2e.text());
            println!("\nratio        {line}");
            self.ratios.push(format!("latency      {line}"));
            // The medians and the p99s' distance from bare's: a p99 ratio cannot be expected
            // below the p50 ratio, and the distance says how much work the tail holds.
            let bare50 = p50.last().expect("bare is a variant");
            let ack50 = Ratios(p50[i].iter().zip(bare50).map(|(a, b)| a.0 / b.0).collect());
            let e2e50 = Ratios(p50[i].iter().zip(bare50).map(|(a, b)| a.1 / b.1).collect());
            let more = |f: fn(&(f64, f64)) -> f64| {
                Ratios(p99[i].iter().zip(&bare).map(|(a, b)| f(a) - f(b)).collect()).median()
            };
            let line = format!(
                "{name} ÷ bare at {rate:.0} msg/s: ack p50 {}, e2e p50 {}; p99 above bare's (median): ack +{:.2} ms, e2e +{:.2} ms",
                ack50.text(),
                e2e50.text(),
                more(|x| x.0),
                more(|x| x.1)
            );
            println!("ratio        {line}");
            self.ratios.push(format!("latency      {line}"));
            if *name == "hookflow" {
                self.goal("latency: ack p99 ÷ bare (median)", ack.median(), "", 1.5, false);
                self.goal("latency: e2e p99 ÷ bare (median)", e2e.median(), "", 1.5, false);
            }
        }
        Ok(())
    }

    /// The echo load on a fresh store and on one holding a million idle sessions.
    pub(super) fn large_store(&mut self) -> Result<(), String> {
        let sessions = env_usize("BENCH_STORE_SESSIONS")?.unwrap_or(1_000_000);
        let file = self.dir.join("prefilled").join("hookflow.sqlite3");
        let took = Instant::now();
        prefill(&file, sessions)?;
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        println!(
            "\nstore        {sessions} idle sessions written in {:.1} s, {:.0} MiB",
            took.elapsed().as_secs_f64(),
            size as f64 / 1048576.0
        );
        let load = self.knobs.load(self.knobs.messages, self.knobs.sessions);
        let fresh = self.hookflow("normal", None, PATH_TEMPLATE);
        let Target::Hookflow(h) = self.hookflow("normal", None, PATH_TEMPLATE) else { unreachable!() };
        let full = Target::Hookflow(Hookflow { store: Some(file), ..h });
        let variants = [
            ("fresh", fresh, "echo Flow, empty store".to_string()),
            ("large", full, format!("echo Flow, {sessions} idle sessions stored")),
        ];
        let rounds = self.pair("store", variants, load)?;
        let del = ratios(&rounds, LoadResult::delivered_rate);
        let cpu = ratios(&rounds, LoadResult::cpu_ms_per_msg);
        let line =
            format!("{sessions} sessions ÷ fresh: delivered/s {}, server CPU per message {}", del.text(), cpu.text());
        println!("\nratio        {line}");
        self.ratios.push(format!("store        {line}"));
        self.goal("large store ÷ fresh delivered/s (median)", del.median(), "", 0.95, true);
        Ok(())
    }

    /// The echo load alone, then beside sessions whose turns wait on a slow API.
    pub(super) fn parked(&mut self) -> Result<(), String> {
        let parked = env_usize("BENCH_PARKED")?.unwrap_or(48);
        let park = Duration::from_millis(env_usize("BENCH_PARK_MS")?.unwrap_or(500) as u64);
        let api = SlowApi::start(park, parked + 16)?;
        let flow = json!({ "nodes": [{
            "type": "if", "condition": format!("input.userId.startsWith('{PARKED_USER_PREFIX}')"),
            "then": [{ "type": "http", "method": "GET", "url": api.url, "contextKey": "api", "timeoutMs": 60000 }],
            "else": [{ "type": "say", "text": PATH_TEMPLATE }]
        }]});
        let with_flow = |t: Target, binary: Option<PathBuf>| match t {
            Target::Hookflow(h) => Target::Hookflow(Hookflow { flow: Some(flow.clone()), binary, ..h }),
            Target::Bare => Target::Bare,
        };
        let mut variants = vec![("hookflow", with_flow(self.hookflow("normal", None, PATH_TEMPLATE), None))];
        if let Some(b) = self.baseline() {
            variants.push(("baseline", with_flow(self.hookflow("normal", None, PATH_TEMPLATE), Some(b))));
        }
        let load = self.knobs.load(self.knobs.messages / 4, self.knobs.sessions);
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        for (name, target) in &variants {
            let mut alone_beside: Vec<(f64, f64)> = Vec::new();
            for round in 1..=self.knobs.rounds {
                let mut pair = Vec::new();
                for busy in [false, true] {
                    let what = if busy {
                        format!("beside {parked} sessions parked {} ms", park.as_millis())
                    } else {
                        "alone".into()
                    };
                    section(
                        &format!("parked {name} {what} #{round}"),
                        "if userId starts with park: http node, else say",
                    );
                    let tag = if busy { "busy" } else { "alone" };
                    let mut server = self.start(&format!("parked-{name}-{tag}-{round}"), target, sink.addr)?;
                    let background = busy.then(|| Background::start(&server.url, parked, park));
                    let r = self.measure(&mut server, &sink, load);
                    let calls = background.map(Background::stop).unwrap_or(0);
                    self.stop(&mut server);
                    let r = r?;
                    let note = format!(
                        "e2e p99 {:.1} ms{}",
                        r.latency_pct(0.99),
                        if busy { format!(", {calls} parked messages sent") } else { String::new() }
                    );
                    self.row(&format!("parked {name} {tag} #{round}"), &r, Some(&server), note);
                    pair.push(r);
                }
                alone_beside.push((
                    pair[1].delivered_rate() / pair[0].delivered_rate().max(1e-9),
                    pair[1].latency_pct(0.99) / pair[0].latency_pct(0.99).max(1e-9),
                ));
            }
            let del = Ratios(alone_beside.iter().map(|r| r.0).collect());
            let p99 = Ratios(alone_beside.iter().map(|r| r.1).collect());
            let line = format!(
                "{name} beside {parked} parked turns ÷ alone: delivered/s {}, e2e p99 {}",
                del.text(),
                p99.text()
            );
            println!("\nratio        {line}");
            self.ratios.push(format!("parked       {line}"));
        }
        Ok(())
    }
}

/// Writes a store holding `n` idle sessions (as a week of a busy bot would leave), through the
/// SQLite backend's own schema.
fn prefill(file: &Path, n: usize) -> Result<(), String> {
    let dir = file.parent().expect("the store file is in a folder");
    hookflow::store::sqlite::SqliteStore::open(dir, hookflow::config::Durability::Normal)
        .map_err(|e| format!("cannot create the prefilled store: {e}"))?;
    let mut conn = rusqlite::Connection::open(file).map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    {
        let mut ins = tx
            .prepare("INSERT INTO sessions (endpoint, user_id, session_id, state, seq, messages, updated_ms) VALUES ('bench', ?1, ?2, ?3, 4, 2, ?4)")
            .map_err(|e| e.to_string())?;
        for k in 0..n {
            let state =
                format!(r#"{{"context":{{"name":"user {k}","step":2}},"entry":0,"question":null,"version":1}}"#);
            // `u` and 16 scrambled hex digits: the idle sessions' keys fall between the load's
            // (`u<k>`), as the ids of a week of users would, so the load's rows are spread over
            // the sessions table's leaves instead of sitting together at its end.
            let scrambled = format!("{:016x}", (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            ins.execute(rusqlite::params![format!("u{scrambled}"), format!("s{scrambled}"), state, now])
                .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(|e| e.to_string())?;
    Ok(())
}

/// An API that answers every request after `delay`, on enough threads that none waits.
struct SlowApi {
    url: String,
    server: Arc<tiny_http::Server>,
}

impl SlowApi {
    fn start(delay: Duration, threads: usize) -> Result<SlowApi, String> {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").map_err(|e| format!("slow API: {e}"))?);
        let addr = server.server_addr().to_ip().ok_or("slow API: not an IP address")?;
        for _ in 0..threads {
            let server = server.clone();
            thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    thread::sleep(delay);
                    let _ = req.respond(tiny_http::Response::from_string("{}"));
                }
            });
        }
        Ok(SlowApi { url: format!("http://{addr}/slow"), server })
    }
}

impl Drop for SlowApi {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// Keeps about `sessions` turns parked: one message per parked session every `park`.
struct Background {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<usize>,
}

impl Background {
    fn start(url: &str, sessions: usize, park: Duration) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, flag) = (url.to_string(), stop.clone());
        let thread = thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let every = park / sessions.max(1) as u32;
            let mut sent = 0;
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let k = sent % sessions;
                let body = json!({ "userId": format!("{PARKED_USER_PREFIX}{k}"), "sessionId": format!("{PARKED_USER_PREFIX}{k}"), "text": "x" });
                let _ = agent.post(&url).header("Content-Type", "application/json").send(body.to_string().as_bytes());
                sent += 1;
                thread::sleep((start + every * sent as u32).saturating_duration_since(Instant::now()));
            }
            sent
        });
        Background { stop, thread }
    }

    /// Stops sending; returns how many parked messages were sent.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}
