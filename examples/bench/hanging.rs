//! The hanging-webhook scenario (issue 13, item 2). A second endpoint, `broken`, has a webhook
//! that accepts every connection and never answers; it gets a message every `FEED_EVERY` during
//! the whole load. The echo endpoint gets the same load as in "echo". The same set-up with no
//! traffic to `broken`, on a fresh server right before, is the yardstick: the echo endpoint's
//! delivered/s and latency with ÷ without, per `delivery.senders`. Attempts at `broken` time out
//! after `TIMEOUT_MS`, so that it becomes known to be down (three failures) during the load, and
//! the load covers both the first attempts in flight and the time after.

use std::io::Read as _;
use std::net::TcpStream;
use std::sync::atomic::AtomicUsize;

use super::*;

/// URL token of the `broken` endpoint.
pub(super) const TOKEN: &str = "broken-0123456789abcdef";
/// `delivery.timeoutMs` of both runs (the echo endpoint's sink answers at once).
const TIMEOUT_MS: u64 = 1000;
/// How often `broken` gets a message, over `FEED_SESSIONS` sessions.
const FEED_EVERY: Duration = Duration::from_millis(10);
const FEED_SESSIONS: usize = 50;
const LANES: [usize; 2] = [1, 4];

/// A webhook on 127.0.0.1 that accepts every connection, reads what comes and never answers.
pub(super) struct Hanging {
    pub(super) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hanging {
    pub(super) fn start() -> Result<Hanging, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("hanging webhook: cannot listen: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (accepted, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (n, s) = (accepted.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("hanging".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut conn) = conn else { continue };
                    n.fetch_add(1, Ordering::SeqCst);
                    // Holds the connection until the server gives up on it (or is stopped).
                    let _ = thread::Builder::new().name("hanging-conn".into()).spawn(move || {
                        let mut buf = [0u8; 4096];
                        while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                    });
                }
            })
            .map_err(|e| format!("cannot spawn the hanging webhook: {e}"))?;
        Ok(Hanging { addr, accepted, stop, thread: Some(thread) })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblocks `accept`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the feeder of `broken` saw.
struct Fed {
    sent: usize,
    /// From the feeder's start until `/metrics` showed three failed attempts (known down).
    down_after: Option<Duration>,
}

/// Sends a message to `broken` every `FEED_EVERY` until `stop`, and watches `/metrics` for the
/// failed attempts that make it known to be down (only `broken` fails in this scenario).
fn feed(base: String, stop: Arc<AtomicBool>) -> Fed {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let started = Instant::now();
    let mut fed = Fed { sent: 0, down_after: None };
    for i in 0usize.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let body = json!({ "userId": "a", "sessionId": format!("a{}", i % FEED_SESSIONS), "text": "x" });
        let url = format!("{base}/{TOKEN}");
        if let Ok(mut r) = agent.post(&url).header("Content-Type", "application/json").send(body.to_string().as_bytes())
        {
            let _ = r.body_mut().read_to_vec();
            fed.sent += usize::from(r.status() == 200);
        }
        if fed.down_after.is_none() && i.is_multiple_of(5) {
            let retried = agent.get(&format!("{base}/metrics")).call().ok().and_then(|mut r| {
                let text = r.body_mut().read_to_string().ok()?;
                let line = text.lines().find(|l| l.starts_with("hookflow_outputs_retried_total "))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            });
            if retried.is_some_and(|n| n >= 3) {
                fed.down_after = Some(started.elapsed());
            }
        }
        thread::sleep(FEED_EVERY);
    }
    fed
}

impl Bench {
    /// The echo endpoint's load beside a hanging webhook, with 1 and 4 sender lanes.
    pub(super) fn hanging(&mut self) -> Result<(), String> {
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        let hanging = Hanging::start()?;
        let load = self.knobs.load(self.knobs.hanging_n, self.knobs.sessions);
        let broken = format!("http://{}/hook", hanging.addr);
        for lanes in LANES {
            let target = Target::Hookflow(Hookflow {
                durability: "normal",
                senders: Some(lanes),
                workers: self.knobs.workers,
                template: PATH_TEMPLATE,
                broken: Some((broken.clone(), TIMEOUT_MS)),
                binary: None,
                store: None,
                flow: None,
                postgres: None,
            });
            section(
                &format!("hanging {lanes} without"),
                &format!("delivery.senders {lanes}, a second endpoint with a hanging webhook, no traffic to it"),
            );
            let mut server = self.start(&format!("hanging-{lanes}-without"), &target, sink.addr)?;
            let quiet = self.measure(&mut server, &sink, load)?;
            self.stop(&mut server);
            self.row(&format!("hanging {lanes}, none"), &quiet, Some(&server), String::new());

            section(
                &format!("hanging {lanes} with"),
                &format!(
                    "delivery.senders {lanes}, the second endpoint gets a message every {} ms; its webhook never \
                     answers (timeoutMs {TIMEOUT_MS})",
                    FEED_EVERY.as_millis()
                ),
            );
            let mut server = self.start(&format!("hanging-{lanes}-with"), &target, sink.addr)?;
            let before = hanging.accepted();
            let stop = Arc::new(AtomicBool::new(false));
            let base = server.url.trim_end_matches(&format!("/{URL_TOKEN}")).to_owned();
            let feeder = {
                let stop = stop.clone();
                thread::Builder::new()
                    .name("feeder".into())
                    .spawn(move || feed(base, stop))
                    .map_err(|e| format!("cannot spawn the feeder: {e}"))?
            };
            // The load starts once the first attempt at the hanging webhook is in flight.
            let deadline = Instant::now() + Duration::from_secs(5);
            while hanging.accepted() == before && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            let loaded = self.measure(&mut server, &sink, load)?;
            stop.store(true, Ordering::Relaxed);
            let fed = feeder.join().map_err(|_| "the feeder panicked".to_string())?;
            let attempts = hanging.accepted() - before;
            self.stop(&mut server);

            let down =
                fed.down_after.map_or("not within the load".to_string(), |d| format!("{:.1} s in", d.as_secs_f64()));
            println!(
                "broken       {} messages to it, {attempts} attempts at its webhook, known down {down} (the load took {:.1} s)",
                fed.sent, loaded.window
            );
            let del = loaded.delivered_rate() / quiet.delivered_rate().max(1e-9);
            let lat = |q: f64| loaded.latency_pct(q) / quiet.latency_pct(q).max(1e-9);
            let (p50, p99, max) = (lat(0.5), lat(0.99), lat(1.0));
            let line = format!(
                "senders {lanes}: with ÷ without a hanging webhook: delivered/s {del:.2}, latency p50 {p50:.2}, p99 \
                 {p99:.2}, max {max:.2} (max {:.0} ms vs {:.0} ms)",
                loaded.latency_pct(1.0),
                quiet.latency_pct(1.0)
            );
            println!("\nratio        {line}");
            self.row(&format!("hanging {lanes}, with"), &loaded, Some(&server), format!("del {del:.2}, p50 {p50:.2}"));
            self.ratios.push(format!("hanging      {line}"));
        }
        Ok(())
    }
}
