//! Running one load: the server under test, the clients that send the messages, the sink that
//! receives the outputs and checks their order, and what the load measured.

use super::*;

// ---- A server under test ----------------------------------------------------------------------------

/// A running server; killed when dropped.
pub(super) struct Server {
    pub(super) pid: u32,
    pub(super) child: Child,
    /// Where messages are POSTed.
    pub(super) url: String,
    pub(super) ready: Duration,
    pub(super) idle_rss: u64,
    pub(super) log_path: PathBuf,
}

impl Server {
    /// Stops the server and prints the head of its log; returns the log's line count.
    pub(super) fn stop(&mut self, level: &str) -> usize {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        println!("server log   {} lines at RUST_LOG={level}", lines.len());
        for line in lines.iter().take(5) {
            println!("             {line}");
        }
        lines.len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- One load ---------------------------------------------------------------------------------------

/// What one load measured.
pub(super) struct LoadResult {
    pub(super) load: Load,
    /// The 1-minute load average when the load started.
    pub(super) load_avg: String,
    pub(super) pid: u32,
    pub(super) stats: ClientStats,
    pub(super) check: OrderCheck,
    /// Load start to the last expected output (or the delivery timeout), in s.
    pub(super) window: f64,
    pub(super) cpu_before: ThreadCpu,
    pub(super) cpu_after: ThreadCpu,
    /// CPU seconds of the server process (`/proc/<pid>/stat`, exited threads included) and of
    /// the bench over the window.
    pub(super) server_cpu: f64,
    pub(super) self_cpu: f64,
    pub(super) peak_rss: u64,
    pub(super) threads: u64,
    pub(super) exited: Option<ExitStatus>,
}

/// Sends `load` to `server` with client threads and collects the outputs at `sink` until every
/// accepted message's output arrived (or the delivery timeout), plus a grace period.
pub(super) fn run_load(server: &mut Server, sink: &Sink, load: Load, epoch: Instant) -> Result<LoadResult, String> {
    let pid = server.pid;
    let pid_text = pid.to_string();
    let load_avg = loadavg();
    let cpu_before = thread_cpu(pid);
    let server_cpu_before = process_cpu_seconds(&pid_text);
    let self_cpu_before = process_cpu_seconds("self");
    let load_started = Instant::now();
    let mut clients: Vec<JoinHandle<ClientStats>> = (0..load.clients)
        .map(|c| {
            // Client c owns sessions c, c+C, c+2C, ...: disjoint, so per-session order is
            // simply the order in which this one thread sends.
            let owned: Vec<(usize, usize)> =
                (c..load.sessions).step_by(load.clients).map(|k| (load.first + k, load.per_session(k))).collect();
            let url = server.url.clone();
            thread::Builder::new()
                .name(format!("client-{c}"))
                .spawn(move || client(&url, &load, &owned, epoch))
                .map_err(|e| format!("cannot spawn a client thread: {e}"))
        })
        .collect::<Result<_, _>>()?;

    // Collect the outputs while the clients run (the sink's channel is bounded).
    let mut check = OrderCheck::new(&load);
    let mut stats: Option<ClientStats> = None;
    let mut load_done: Option<Instant> = None;
    // Taken when the last expected output arrived (or at the timeout): the end of the load window.
    let mut after: Option<(ThreadCpu, f64, f64)> = None;
    let mut window_end = load_started;
    loop {
        match sink.rx.recv_timeout(Duration::from_millis(20)) {
            Ok(rec) => check.add(rec),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("the sink stopped".into()),
        }
        if stats.is_none() && clients.iter().all(JoinHandle::is_finished) {
            let mut total = ClientStats::default();
            for h in clients.drain(..) {
                total.merge(h.join().map_err(|_| "a client thread panicked".to_string())?);
            }
            stats = Some(total);
            load_done = Some(Instant::now());
        }
        let (Some(s), Some(done)) = (&stats, load_done) else { continue };
        let now = Instant::now();
        if after.is_none() && (check.unique >= s.accepted || now >= done + DELIVERY_TIMEOUT) {
            after = Some((thread_cpu(pid), process_cpu_seconds(&pid_text), process_cpu_seconds("self")));
            window_end = now;
        }
        // Past the last expected output, listen a little longer for duplicates and extras.
        if after.is_some() && now >= window_end + GRACE {
            break;
        }
    }
    let (cpu_after, server_cpu_after, self_cpu_after) = after.unwrap_or_default();
    // If the server died during the run these are 0 (and it is reported).
    let mut r = LoadResult {
        load,
        load_avg,
        pid,
        stats: stats.unwrap_or_default(),
        check,
        window: window_end.duration_since(load_started).as_secs_f64(),
        cpu_before,
        cpu_after,
        server_cpu: server_cpu_after - server_cpu_before,
        self_cpu: self_cpu_after - self_cpu_before,
        peak_rss: proc_status_field(pid, "VmHWM").unwrap_or(0),
        threads: proc_status_field(pid, "Threads").unwrap_or(0),
        exited: server.child.try_wait().ok().flatten(),
    };
    r.stats.accept_us.sort_unstable();
    r.check.latency_us.sort_unstable();
    Ok(r)
}

impl LoadResult {
    pub(super) fn first_send(&self) -> u64 {
        self.stats.first_send_us.unwrap_or(0)
    }

    pub(super) fn accept_secs(&self) -> f64 {
        self.stats.last_accept_us.unwrap_or(self.first_send()).saturating_sub(self.first_send()) as f64 / 1e6
    }

    pub(super) fn deliver_secs(&self) -> f64 {
        self.check.last_recv_us.saturating_sub(self.first_send()) as f64 / 1e6
    }

    pub(super) fn accepted_rate(&self) -> f64 {
        rate(self.stats.accepted, self.accept_secs())
    }

    pub(super) fn delivered_rate(&self) -> f64 {
        rate(self.check.unique, self.deliver_secs())
    }

    pub(super) fn accept_pct(&self, q: f64) -> f64 {
        percentile(&self.stats.accept_us, q)
    }

    pub(super) fn latency_pct(&self, q: f64) -> f64 {
        percentile(&self.check.latency_us, q)
    }

    pub(super) fn cpu_ms_per_msg(&self) -> f64 {
        1e3 * self.server_cpu / self.check.unique.max(1) as f64
    }

    /// Server threads runnable but waiting for a CPU over the window, in % of one core.
    pub(super) fn cpu_wait_pct(&self) -> f64 {
        let waited: f64 = thread_deltas(&self.cpu_before, &self.cpu_after).map(|t| t.3).sum();
        100.0 * waited / self.window.max(1e-9)
    }

    /// CPU of the `worker-N` threads (the Flow turns, in hookflow) per delivered output.
    pub(super) fn worker_ms_per_msg(&self) -> f64 {
        1e3 * prefix_cpu(&self.cpu_before, &self.cpu_after, "worker-") / self.check.unique.max(1) as f64
    }

    pub(super) fn missing(&self) -> usize {
        self.stats.accepted.saturating_sub(self.check.unique)
    }

    pub(super) fn correct(&self) -> bool {
        self.stats.errors == 0
            && self.missing() == 0
            && self.check.violations == 0
            && self.check.duplicates == 0
            && self.check.malformed == 0
            && self.exited.is_none()
    }

    pub(super) fn print(&self) {
        let (l, st, check) = (&self.load, &self.stats, &self.check);
        println!("load         {} messages, {} sessions, {} clients", l.messages, l.sessions, l.clients);
        let accept_secs = self.accept_secs();
        println!(
            "accepted     {}/{} in {:.2} s = {:.0} msg/s (client side; 503 retries {}, errors {})",
            st.accepted,
            l.messages,
            accept_secs,
            self.accepted_rate(),
            st.retries,
            st.errors
        );
        if let Some(e) = &st.first_error {
            println!("             first error: {e}");
        }
        // Outliers matter for a webhook endpoint (the caller may time out), so count them apart.
        let slow = st.accept_us.iter().filter(|&&us| us > 100_000).count();
        println!("accept lat.  {} (POST to its 200; {slow} over 100 ms)", percentiles(&st.accept_us));
        println!(
            "delivered    {}/{} in {:.2} s = {:.0} msg/s (first send to last delivery)",
            check.unique,
            st.accepted,
            self.deliver_secs(),
            self.delivered_rate()
        );
        // Does delivery keep up with ingest? What was delivered by the time the last message was
        // accepted, and the backlog left then: a growing backlog means latency is queueing time.
        let last_accept = st.last_accept_us.unwrap_or(self.first_send());
        let during = check.recv_us.iter().filter(|&&t| t <= last_accept).count();
        println!(
            "             while accepting {:.0} msg/s, backlog {} when the last message was accepted",
            rate(during, accept_secs),
            st.accepted.saturating_sub(during)
        );
        println!("latency      {} (send to sink receipt)", percentiles(&check.latency_us));
        println!(
            "order        {} violations, {} duplicates, {} malformed, {} missing",
            check.violations,
            check.duplicates,
            check.malformed,
            self.missing()
        );
        println!("peak RSS     {} (VmHWM), {} threads", mib(self.peak_rss), self.threads);
        let window = self.window.max(1e-9);
        println!(
            "CPU          over the {:.2} s load window, in % of one core: server {:.0}% ({:.3} ms per message, of which \
             worker threads {:.3} ms), bench (clients + sink) {:.0}%",
            self.window,
            100.0 * self.server_cpu / window,
            self.cpu_ms_per_msg(),
            self.worker_ms_per_msg(),
            100.0 * self.self_cpu / window
        );
        println!(
            "             server threads runnable but waiting for a CPU: {:.0}% of one core (the machine's contention)",
            self.cpu_wait_pct()
        );
        for line in cpu_by_group(self.pid, &self.cpu_before, &self.cpu_after, window) {
            println!("             {line}");
        }
        if let Some(status) = self.exited {
            println!("server       EXITED during the run: {status}");
        }
    }
}

// ---- Clients --------------------------------------------------------------------------------------

/// What one client saw (times in µs since the epoch).
#[derive(Default)]
pub(super) struct ClientStats {
    pub(super) accepted: usize,
    pub(super) retries: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) first_send_us: Option<u64>,
    pub(super) last_accept_us: Option<u64>,
    /// POST to 200, per accepted message.
    pub(super) accept_us: Vec<u64>,
}

impl ClientStats {
    pub(super) fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    pub(super) fn merge(&mut self, o: ClientStats) {
        self.accepted += o.accepted;
        self.retries += o.retries;
        self.errors += o.errors;
        self.first_error = self.first_error.take().or(o.first_error);
        self.first_send_us = self.first_send_us.into_iter().chain(o.first_send_us).min();
        self.last_accept_us = self.last_accept_us.into_iter().chain(o.last_accept_us).max();
        self.accept_us.extend(o.accept_us);
    }
}

/// One client thread: sends the messages of its sessions round-robin (message j of every owned
/// session, then j+1, ...), one POST at a time on one keep-alive connection, each waiting for its
/// 200. Round-robin keeps many sessions in flight, as real traffic does, while the order within
/// each session is the send order.
pub(super) fn client(url: &str, load: &Load, owned: &[(usize, usize)], epoch: Instant) -> ClientStats {
    // Per-phase timeouts, not `timeout_global`: with a global (or per-call) timeout ureq 3
    // resolves the host on a freshly spawned thread for every request, pooled connection or not,
    // and the bench would measure its own thread spawns.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_send_body(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut st = ClientStats::default();
    let rounds = owned.iter().map(|&(_, n)| n).max().unwrap_or(0);
    // Paced: this client's share of `rate`, each send at its slot (not after a fixed sleep, so
    // a slow answer does not lower the rate).
    let interval = load.rate.map(|r| Duration::from_secs_f64(load.clients as f64 / r.max(1e-9)));
    let start = Instant::now();
    let mut sent = 0u32;
    for j in 0..rounds {
        for &(k, n) in owned {
            if j < n {
                if let Some(every) = interval {
                    let slot = start + every * sent;
                    thread::sleep(slot.saturating_duration_since(Instant::now()));
                    sent += 1;
                }
                send(&agent, url, (&load.user_id(k), k), j, epoch, &mut st);
            }
            if st.errors >= MAX_CLIENT_ERRORS {
                return st;
            }
        }
    }
    st
}

/// Sends message `j` of session `k` until it is accepted. A 503 (queue full) is retried after
/// its `Retry-After` (at most 1 s): the message is resent, not skipped, so session order holds.
pub(super) fn send(
    agent: &ureq::Agent,
    url: &str,
    (user, k): (&str, usize),
    j: usize,
    epoch: Instant,
    st: &mut ClientStats,
) {
    const MAX_RETRIES: u32 = 600;
    for _ in 0..MAX_RETRIES {
        // The latency clock starts at the attempt that is accepted (503 retries are counted apart).
        let sent = micros(epoch, Instant::now());
        st.first_send_us.get_or_insert(sent);
        let body = json!({ "userId": user, "sessionId": format!("s{k}"), "text": format!("{j} {sent}") });
        let result = agent.post(url).header("Content-Type", "application/json").send(body.to_string().as_bytes());
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                // Reading the answer to its end lets ureq reuse the connection.
                let _ = resp.body_mut().read_to_vec();
                let done = micros(epoch, Instant::now());
                match status {
                    200 => {
                        st.accepted += 1;
                        st.last_accept_us = Some(done);
                        st.accept_us.push(done - sent);
                        return;
                    }
                    503 => {
                        st.retries += 1;
                        let wait = retry_after.map_or(Duration::from_millis(50), Duration::from_secs);
                        thread::sleep(wait.min(Duration::from_secs(1)));
                    }
                    _ => return st.error(format!("HTTP {status} for s{k} #{j}")),
                }
            }
            Err(e) => return st.error(format!("s{k} #{j}: {e}")),
        }
    }
    st.error(format!("s{k} #{j}: still 503 after {MAX_RETRIES} tries"));
}

// ---- The sink ---------------------------------------------------------------------------------------

/// One output as the sink received it.
pub(super) struct Record {
    /// Session number and message index, `None` when the body was not one of ours.
    pub(super) id: Option<(usize, usize)>,
    /// When the client sent the message (from the text), µs since the epoch.
    pub(super) sent_us: u64,
    /// When the sink got the POST, µs since the epoch.
    pub(super) recv_us: u64,
}

impl Record {
    pub(super) fn parse(body: &[u8], recv_us: u64) -> Record {
        let parsed = || -> Option<((usize, usize), u64)> {
            let v: Value = serde_json::from_slice(body).ok()?;
            let k = v["sessionId"].as_str()?.strip_prefix('s')?.parse().ok()?;
            let (j, sent) = v["AIOutput"]["text"].as_str()?.split_once(' ')?;
            Some(((k, j.parse().ok()?), sent.parse().ok()?))
        };
        match parsed() {
            Some((id, sent_us)) => Record { id: Some(id), sent_us, recv_us },
            None => Record { id: None, sent_us: 0, recv_us },
        }
    }
}

/// The webhook target: tiny_http with a few threads calling `recv()`, answering 200 to every
/// request and passing each POST's record to the bench over a bounded channel.
pub(super) struct Sink {
    pub(super) addr: SocketAddr,
    pub(super) rx: Receiver<Record>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl Sink {
    /// A sink with `threads` threads, each sleeping `delay` before it answers a POST (a slow
    /// webhook; the thread is taken meanwhile, as in a synchronous web app).
    pub(super) fn start(epoch: Instant, threads: usize, delay: Duration) -> Result<Sink, String> {
        let server = tiny_http::Server::http("127.0.0.1:0").map_err(|e| format!("sink: cannot listen: {e}"))?;
        let server = Arc::new(server);
        let addr = server.server_addr().to_ip().ok_or("sink: not an IP address")?;
        let (tx, rx) = crossbeam_channel::bounded(8192);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|i| {
                let (server, tx, stop) = (server.clone(), tx.clone(), stop.clone());
                thread::Builder::new()
                    .name(format!("sink-{i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match server.recv_timeout(Duration::from_millis(50)) {
                                Ok(Some(req)) => sink_one(req, &tx, epoch, delay),
                                Ok(None) => {}
                                Err(_) => break,
                            }
                        }
                    })
                    .map_err(|e| format!("cannot spawn a sink thread: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Sink { addr, rx, stop, threads })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Records one request, then (after `delay`) answers 200. Recording before answering matters for
/// the order check: the server sends a session's output n+1 only after n's 200, so n is in the
/// channel first.
pub(super) fn sink_one(mut req: tiny_http::Request, tx: &Sender<Record>, epoch: Instant, delay: Duration) {
    let recv_us = micros(epoch, Instant::now());
    if *req.method() == tiny_http::Method::Post {
        let mut body = Vec::new();
        let _ = req.as_reader().take(1 << 20).read_to_end(&mut body);
        // Bounded wait: if the bench stopped reading, the record is dropped (and shows as missing).
        let _ = tx.send_timeout(Record::parse(&body, recv_us), Duration::from_secs(1));
        if !delay.is_zero() {
            thread::sleep(delay);
        }
    }
    let _ = req.respond(tiny_http::Response::empty(200));
}

// ---- Checks and statistics ------------------------------------------------------------------------

/// Per-session order, duplicates and latency of the received outputs.
pub(super) struct OrderCheck {
    /// Number of the load's first session (`s<first>`).
    pub(super) first: usize,
    /// `seen[k][j]`: output j of session k arrived.
    pub(super) seen: Vec<Vec<bool>>,
    /// Highest index that arrived per session.
    pub(super) highest: Vec<Option<usize>>,
    pub(super) unique: usize,
    pub(super) duplicates: usize,
    /// A new output arrived after one with a higher index of the same session.
    pub(super) violations: usize,
    pub(super) malformed: usize,
    pub(super) last_recv_us: u64,
    /// Receipt time of each first arrival.
    pub(super) recv_us: Vec<u64>,
    pub(super) latency_us: Vec<u64>,
}

impl OrderCheck {
    pub(super) fn new(p: &Load) -> OrderCheck {
        OrderCheck {
            first: p.first,
            seen: (0..p.sessions).map(|k| vec![false; p.per_session(k)]).collect(),
            highest: vec![None; p.sessions],
            unique: 0,
            duplicates: 0,
            violations: 0,
            malformed: 0,
            last_recv_us: 0,
            recv_us: Vec::with_capacity(p.messages),
            latency_us: Vec::with_capacity(p.messages),
        }
    }

    pub(super) fn add(&mut self, r: Record) {
        let first = self.first;
        let id = r.id.and_then(|(k, j)| Some((k.checked_sub(first)?, j)));
        let Some((k, j)) = id.filter(|&(k, j)| k < self.seen.len() && j < self.seen[k].len()) else {
            self.malformed += 1;
            return;
        };
        if std::mem::replace(&mut self.seen[k][j], true) {
            self.duplicates += 1;
            return;
        }
        if self.highest[k].is_some_and(|h| h > j) {
            self.violations += 1;
        }
        self.highest[k] = self.highest[k].max(Some(j));
        self.unique += 1;
        self.last_recv_us = self.last_recv_us.max(r.recv_us);
        self.recv_us.push(r.recv_us);
        self.latency_us.push(r.recv_us.saturating_sub(r.sent_us));
    }
}

/// `p50 / p99 / max` of sorted µs values, in ms.
pub(super) fn percentiles(sorted: &[u64]) -> String {
    if sorted.is_empty() {
        return "no samples".into();
    }
    let at = |q| percentile(sorted, q);
    let mean = sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 1e3;
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {mean:.2} ms", at(0.50), at(0.99), at(1.0))
}

/// The nearest-rank `q` percentile of sorted µs values, in ms (0 without samples).
pub(super) fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1] as f64 / 1e3
}

pub(super) fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

pub(super) fn micros(epoch: Instant, t: Instant) -> u64 {
    t.duration_since(epoch).as_micros() as u64
}

pub(super) fn epoch_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

pub(super) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib_to_mib(kib))
}

pub(super) fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// MurmurHash3's 32-bit finaliser: a fixed, well-spread scramble of `k`.
pub(super) fn fmix32(k: u32) -> u32 {
    let mut h = k.wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
