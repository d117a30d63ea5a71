//! The `replicas` scenario of `make bench` (replicas.md): the echo load on one hookflow on SQLite
//! vs one replica on PostgreSQL (a throwaway server the bench starts, as the tests do:
//! `tests/common/pgserver.rs`), alternating for `BENCH_ROUNDS` rounds; delivered/s and CPU per
//! message, PostgreSQL's own processes included (goal: PostgreSQL ≥ 0.5 × SQLite's delivered/s);
//! then the floor (`floor`: what PostgreSQL spends on the least a durable message needs, without
//! hookflow, and the best ratio that leaves on this machine); then two replicas on one database
//! with the load sent to one of them (the other takes part through the claims); then a slow
//! webhook (`BENCH_SINK_DELAY_MS`, 4 sender lanes) on SQLite and on one replica.

use std::io::Read as _;

use super::*;

#[path = "../../tests/common/pgserver.rs"]
mod pgserver;

/// CPU seconds of the PostgreSQL server: the postmaster and every process it started.
fn pg_cpu_seconds(server: &pgserver::PgServer) -> f64 {
    let Some(master) = server.postmaster_pid() else { return 0.0 };
    let mut total = process_cpu_seconds(&master.to_string());
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some(close) = text.rfind(')') else { continue };
        // Field 4, the parent pid, is the second after the name.
        let ppid = text[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(master) {
            total += parse_stat(&text).map_or(0.0, |s| s.1);
        }
    }
    total
}

/// What PostgreSQL did for one database over a load: transactions (`pg_stat_database`) and
/// statements by text (`pg_stat_statements`, preloaded by the bench's server), to count the
/// round trips a message costs.
struct PgWork {
    admin: postgres::Client,
    db: String,
    xacts: i64,
}

impl PgWork {
    /// Starts counting for the database of `url`.
    fn start(server: &pgserver::PgServer, url: &str) -> Result<PgWork, String> {
        let e = |e: postgres::Error| format!("PostgreSQL statistics: {e}");
        let mut admin = postgres::Client::connect(&server.url("postgres"), postgres::NoTls).map_err(e)?;
        admin.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").map_err(e)?;
        admin.batch_execute("SELECT pg_stat_statements_reset()").map_err(e)?;
        let db = url.rsplit('/').next().unwrap_or("").split('?').next().unwrap_or("").to_string();
        let mut w = PgWork { admin, db, xacts: 0 };
        w.xacts = w.transactions()?;
        Ok(w)
    }

    fn transactions(&mut self) -> Result<i64, String> {
        // The statistics collector lags: ask for a fresh snapshot.
        let _ = self.admin.batch_execute("SELECT pg_stat_clear_snapshot()");
        let row = self
            .admin
            .query_one(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
                &[&self.db],
            )
            .map_err(|e| format!("PostgreSQL statistics: {e}"))?;
        Ok(row.get(0))
    }

    /// Prints transactions and statements per message since `start`, the busiest statements
    /// first; returns (transactions, statements) per message.
    fn report(mut self, messages: usize) -> Result<(f64, f64), String> {
        // Statistics reach pg_stat_database when a backend reports (at most every second).
        thread::sleep(Duration::from_millis(1100));
        let xacts = self.transactions()? - self.xacts;
        let rows = self
            .admin
            .query(
                "SELECT s.calls, regexp_replace(s.query, '\\s+', ' ', 'g'), s.total_exec_time FROM pg_stat_statements s
                 JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1 ORDER BY s.calls DESC",
                &[&self.db],
            )
            .map_err(|e| format!("PostgreSQL statistics: {e}"))?;
        let n = messages.max(1) as f64;
        let total: i64 = rows.iter().map(|r| r.get::<_, i64>(0)).sum();
        println!(
            "postgres     {:.2} transactions and {:.2} statements per message ({xacts} and {total} for {messages})",
            xacts as f64 / n,
            total as f64 / n
        );
        for r in rows.iter().take(20) {
            let q: String = r.get(1);
            let q: String = q.chars().take(110).collect();
            let ms: f64 = r.get(2);
            println!("  {:>6.2}/msg {:>6.1} µs/msg  {q}", r.get::<_, i64>(0) as f64 / n, 1e3 * ms / n);
        }
        Ok((xacts as f64 / n, total as f64 / n))
    }
}

/// Prints, per table of the database at `url`, its row changes per message and how many
/// updates were HOT (no index touched) and its size: where PostgreSQL's work goes.
fn table_report(url: &str, messages: usize) -> Result<(), String> {
    let e = |e: postgres::Error| format!("PostgreSQL table statistics: {e}");
    let mut c = postgres::Client::connect(url, postgres::NoTls).map_err(e)?;
    let rows = c
        .query(
            "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, n_dead_tup,
                    pg_total_relation_size(relid), coalesce(seq_scan, 0), coalesce(seq_tup_read, 0),
                    coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0)
             FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY n_tup_upd DESC",
            &[],
        )
        .map_err(e)?;
    let n = messages.max(1) as f64;
    for r in &rows {
        let (ins, upd, hot, del, dead, size): (i64, i64, i64, i64, i64, i64) =
            (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
        let (seq, seq_rows, idx, idx_rows): (i64, i64, i64, i64) = (r.get(7), r.get(8), r.get(9), r.get(10));
        println!(
            "  table {:<12} per message: {:.2} inserted, {:.2} updated ({:.0} % HOT), {:.2} deleted; {dead} dead rows, {:.1} MiB; \
             {:.2} full scans ({:.0} rows), {:.2} index scans ({:.1} rows)",
            r.get::<_, String>(0),
            ins as f64 / n,
            upd as f64 / n,
            100.0 * hot as f64 / (upd.max(1)) as f64,
            del as f64 / n,
            size as f64 / 1048576.0,
            seq as f64 / n,
            seq_rows as f64 / seq.max(1) as f64,
            idx as f64 / n,
            idx_rows as f64 / idx.max(1) as f64,
        );
    }
    Ok(())
}

/// What the floor load measured.
struct Floor {
    rate: f64,
    pg_ms: f64,
}

/// The floor of the replicas scenario: what PostgreSQL spends, on this machine, on the least a
/// durable message needs, with no hookflow at all: `clients` threads, each over its share of
/// `sessions`, each message three transactions of prepared statements: the accept (insert it),
/// the turn (delete it, update the session, insert the output), the delivery (delete the output,
/// log it). No numbering, no leases, no counts: what any design must write, in tables shaped
/// like the backend's (store/postgres/schema.rs). A replica's PostgreSQL CPU per message can
/// only approach this.
fn floor(server: &pgserver::PgServer, messages: usize, sessions: usize, clients: usize) -> Result<Floor, String> {
    section("replicas floor", "the least a durable message costs PostgreSQL, without hookflow");
    let url = server.fresh_db("floor");
    let e = |e: postgres::Error| format!("floor: {e}");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).map_err(e)?;
    c.batch_execute(&format!(
        "CREATE TABLE inbox (id BIGSERIAL PRIMARY KEY, endpoint TEXT NOT NULL, user_id TEXT NOT NULL,
             session_id TEXT NOT NULL, msg_no BIGINT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL);
         CREATE INDEX inbox_session ON inbox (endpoint, user_id, session_id, msg_no);
         CREATE TABLE sessions (endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
             state TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (endpoint, user_id, session_id));
         CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, endpoint TEXT NOT NULL, user_id TEXT NOT NULL,
             session_id TEXT NOT NULL, seq BIGINT NOT NULL, body TEXT NOT NULL);
         CREATE INDEX outbox_session ON outbox (endpoint, user_id, session_id, seq);
         CREATE TABLE output_log (id BIGINT PRIMARY KEY, endpoint TEXT NOT NULL, body TEXT NOT NULL);
         INSERT INTO sessions SELECT 'echo', 'u' || g, 's' || g, '{{}}', 0 FROM generate_series(0, {}) g;",
        sessions.max(1) - 1
    ))
    .map_err(e)?;
    let clients = clients.clamp(1, sessions.max(1));
    let before = pg_cpu_seconds(server);
    let started = Instant::now();
    // The clients' connections stay open until PostgreSQL's CPU is read: a backend's time is
    // counted while it lives (`pg_cpu_seconds`).
    let done: Vec<Result<(usize, postgres::Client), String>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|t| {
                let url = &url;
                scope.spawn(move || floor_client(url, t, clients, sessions, messages / clients))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("floor: a client panicked".into()))).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let pg = pg_cpu_seconds(server) - before;
    let done = done.into_iter().collect::<Result<Vec<_>, String>>()?;
    let n: usize = done.iter().map(|(n, _)| n).sum();
    drop(done);
    let f = Floor { rate: n as f64 / secs.max(1e-9), pg_ms: 1e3 * pg / n.max(1) as f64 };
    println!("load         {n} messages in {secs:.2} s from {clients} clients");
    Ok(f)
}

/// One client of the floor: `n` messages round robin over its sessions (those `s` with
/// `s % clients == t`); how many it sent, and its connection.
fn floor_client(
    url: &str,
    t: usize,
    clients: usize,
    sessions: usize,
    n: usize,
) -> Result<(usize, postgres::Client), String> {
    let e = |e: postgres::Error| format!("floor: {e}");
    let mut c = postgres::Client::connect(url, postgres::NoTls).map_err(e)?;
    let accept = c
        .prepare(
            "INSERT INTO inbox (endpoint, user_id, session_id, msg_no, kind, payload)
             VALUES ('echo', $1, $2, $3, 'message', $4) RETURNING id",
        )
        .map_err(e)?;
    let taken = c.prepare("DELETE FROM inbox WHERE id = $1").map_err(e)?;
    let state = c
        .prepare(
            "UPDATE sessions SET state = $3, seq = seq + 1
             WHERE endpoint = 'echo' AND user_id = $1 AND session_id = $2 RETURNING seq",
        )
        .map_err(e)?;
    let output = c
        .prepare("INSERT INTO outbox (endpoint, user_id, session_id, seq, body) VALUES ('echo', $1, $2, $3, $4) RETURNING id")
        .map_err(e)?;
    let sent = c.prepare("DELETE FROM outbox WHERE id = $1 RETURNING body").map_err(e)?;
    let logged = c.prepare("INSERT INTO output_log (id, endpoint, body) VALUES ($1, 'echo', $2)").map_err(e)?;
    let mine: Vec<usize> = (0..sessions).filter(|s| s % clients == t).collect();
    for i in 0..n {
        let s = mine[i % mine.len()];
        let (user, session) = (format!("u{s}"), format!("s{s}"));
        let payload = format!(r#"{{"text":"message {i}","data":{{}}}}"#);
        let id: i64 = c.query_one(&accept, &[&user, &session, &(i as i64), &payload]).map_err(e)?.get(0);
        let mut tx = c.transaction().map_err(e)?;
        tx.execute(&taken, &[&id]).map_err(e)?;
        let seq: i64 = tx.query_one(&state, &[&user, &session, &payload]).map_err(e)?.get(0);
        let out: i64 = tx.query_one(&output, &[&user, &session, &seq, &payload]).map_err(e)?.get(0);
        tx.commit().map_err(e)?;
        let mut tx = c.transaction().map_err(e)?;
        let body: String = tx.query_one(&sent, &[&out]).map_err(e)?.get(0);
        tx.execute(&logged, &[&out, &body]).map_err(e)?;
        tx.commit().map_err(e)?;
    }
    Ok((n, c))
}

impl Bench {
    pub(super) fn replicas(&mut self) -> Result<(), String> {
        // BENCH_PG_SETTINGS: more server settings, space separated (e.g. auto_explain's, to see plans).
        let extra = std::env::var("BENCH_PG_SETTINGS").unwrap_or_default();
        let mut settings = vec!["shared_preload_libraries=pg_stat_statements"];
        settings.extend(extra.split_whitespace());
        let server = pgserver::PgServer::start_with("bench", &settings);
        let k = &self.knobs;
        let load = k.load(k.messages, k.sessions);
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        let mut ratios_del = Vec::new();
        let mut ratios_cpu = Vec::new();
        // The SQLite rounds' delivered/s, server CPU and bench CPU per message (for the floor).
        let (mut lite_rate, mut lite_ms, mut bench_ms) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=self.knobs.rounds {
            section(&format!("replicas sqlite #{round}"), "echo Flow on SQLite (the default store)");
            let target = self.hookflow("normal", None, PATH_TEMPLATE);
            let mut lite = self.start(&format!("replicas-sqlite-{round}"), &target, sink.addr)?;
            let a = self.measure(&mut lite, &sink, load)?;
            self.stop(&mut lite);
            self.row(&format!("replicas sqlite #{round}"), &a, Some(&lite), String::new());
            lite_rate.push(a.delivered_rate());
            lite_ms.push(a.cpu_ms_per_msg());
            bench_ms.push(1e3 * a.self_cpu / a.check.unique.max(1) as f64);

            section(&format!("replicas postgres #{round}"), "echo Flow, one replica on PostgreSQL (fsync off)");
            let Target::Hookflow(h) = self.hookflow("normal", None, PATH_TEMPLATE) else { unreachable!() };
            let url = server.fresh_db(&format!("bench{round}"));
            let target = Target::Hookflow(Hookflow { postgres: Some(url.clone()), ..h });
            let mut pg = self.start(&format!("replicas-postgres-{round}"), &target, sink.addr)?;
            let work = PgWork::start(&server, &url)?;
            let pg_before = pg_cpu_seconds(&server);
            let b = self.measure(&mut pg, &sink, load)?;
            let pg_ms = 1e3 * (pg_cpu_seconds(&server) - pg_before) / b.check.unique.max(1) as f64;
            let (xacts, statements) = work.report(b.check.unique)?;
            table_report(&url, b.check.unique)?;
            self.stop(&mut pg);
            let del = b.delivered_rate() / a.delivered_rate().max(1e-9);
            let cpu = (b.cpu_ms_per_msg() + pg_ms) / a.cpu_ms_per_msg().max(1e-9);
            println!(
                "ratio        postgres ÷ sqlite: delivered/s {del:.2}, CPU per message {cpu:.2} (hookflow {:.3} ms + PostgreSQL {pg_ms:.3} ms vs {:.3} ms)",
                b.cpu_ms_per_msg(),
                a.cpu_ms_per_msg()
            );
            ratios_del.push(del);
            ratios_cpu.push(cpu);
            let note = format!(
                "÷ sqlite {del:.2}; PostgreSQL {pg_ms:.3} ms CPU/msg, {xacts:.1} transactions and {statements:.1} statements/msg"
            );
            self.row(&format!("replicas postgres #{round}"), &b, Some(&pg), note);
        }
        let (del, cpu) = (Ratios(ratios_del), Ratios(ratios_cpu));
        self.goal("replicas: one on PostgreSQL ÷ SQLite delivered/s (median)", del.median(), "", 0.5, true);
        self.ratios.push(format!(
            "replicas     one replica on PostgreSQL ÷ SQLite: delivered/s {}, CPU per message (PostgreSQL's included) {}",
            del.text(),
            cpu.text()
        ));
        let (messages, sessions, clients) = (self.knobs.messages, self.knobs.sessions, self.knobs.clients);
        let floor = floor(&server, messages, sessions, clients)?;
        let (lite_rate, lite_ms, bench_ms) =
            (Ratios(lite_rate).median(), Ratios(lite_ms).median(), Ratios(bench_ms).median());
        let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let bound = 1e3 * cpus / (floor.pg_ms + lite_ms + bench_ms);
        println!(
            "floor        the least a durable message costs PostgreSQL here (no queue bookkeeping, no leases; {} clients): \
             {:.0} msg/s, PostgreSQL {:.3} ms CPU per message",
            clients, floor.rate, floor.pg_ms
        );
        println!(
            "bound        a replica costing PostgreSQL only that floor, and itself what hookflow on SQLite costs ({lite_ms:.3} ms), \
             with the bench's {bench_ms:.3} ms, fills {cpus} CPUs at {bound:.0} msg/s = {:.2} × SQLite's delivered/s",
            bound / lite_rate.max(1e-9)
        );
        self.ratios.push(format!(
            "replicas     floor: PostgreSQL's least CPU per durable message {:.3} ms; at best {:.2} × SQLite's delivered/s on this machine",
            floor.pg_ms,
            bound / lite_rate.max(1e-9)
        ));

        section("replicas two", "two replicas on one PostgreSQL database; the load goes to the first");
        let db = server.fresh_db("benchtwo");
        let Target::Hookflow(h) = self.hookflow("normal", None, PATH_TEMPLATE) else { unreachable!() };
        let target = Target::Hookflow(Hookflow { postgres: Some(db.clone()), ..h });
        let mut first = self.start("replicas-two-a", &target, sink.addr)?;
        let mut second = self.start("replicas-two-b", &target, sink.addr)?;
        let pg_before = pg_cpu_seconds(&server);
        let second_before = process_cpu_seconds(&second.pid.to_string());
        let r = self.measure(&mut first, &sink, load)?;
        let pg_ms = 1e3 * (pg_cpu_seconds(&server) - pg_before) / r.check.unique.max(1) as f64;
        let other_ms =
            1e3 * (process_cpu_seconds(&second.pid.to_string()) - second_before) / r.check.unique.max(1) as f64;
        self.stop(&mut first);
        self.stop(&mut second);
        let note = format!("second replica {other_ms:.3} ms CPU/msg, PostgreSQL {pg_ms:.3} ms");
        self.row("replicas two (load to one)", &r, Some(&first), note);
        self.slow_webhook(&server)?;
        self.take_over(&server)?;
        server.stop();
        Ok(())
    }

    /// A slow webhook and 4 sender lanes, on SQLite and on one replica: the replica's lanes claim
    /// as many heads as they send in 100 ms, so its outputs spread over the lanes as SQLite's do
    /// (by session). The bound is one POST in flight per lane.
    fn slow_webhook(&mut self, server: &pgserver::PgServer) -> Result<(), String> {
        const LANES: usize = 4;
        let delay = self.knobs.sink_delay;
        let ms = delay.as_millis();
        let sink = Sink::start(self.epoch, SLOW_SINK_THREADS, delay)?;
        let load = self.knobs.load(self.knobs.lanes_n, self.knobs.lanes_sessions);
        let bound = LANES as f64 / delay.as_secs_f64().max(1e-9);
        let mut rates = Vec::new();
        for pg in [false, true] {
            let name = if pg { "replicas slow postgres" } else { "replicas slow sqlite" };
            let store = if pg { "one replica on PostgreSQL" } else { "SQLite" };
            section(name, &format!("delivery.senders {LANES}, webhook taking {ms} ms per POST, {store}"));
            let Target::Hookflow(h) = self.hookflow("normal", Some(LANES), PATH_TEMPLATE) else { unreachable!() };
            let postgres = pg.then(|| server.fresh_db("benchslow"));
            let mut hf =
                self.start(&name.replace(' ', "-"), &Target::Hookflow(Hookflow { postgres, ..h }), sink.addr)?;
            let r = self.measure(&mut hf, &sink, load)?;
            self.stop(&mut hf);
            rates.push(r.delivered_rate());
            let note = format!("{:.0}% of the {bound:.0} msg/s of {LANES} lanes", 100.0 * r.delivered_rate() / bound);
            self.row(name, &r, Some(&hf), note);
        }
        let ratio = rates[1] / rates[0].max(1e-9);
        println!("ratio        a {ms} ms webhook, {LANES} lanes: PostgreSQL ÷ SQLite delivered/s {ratio:.2}");
        self.ratios
            .push(format!("replicas     a {ms} ms webhook, {LANES} lanes: PostgreSQL ÷ SQLite delivered/s {ratio:.2}"));
        Ok(())
    }

    /// Take-over: two replicas (default `leaseSeconds`, 10); a session's turn waits at an `http`
    /// node on an API that holds its first request and answers every later one at once, so the
    /// replica running the turn holds the session; that replica is killed (SIGKILL) and the time
    /// until the session's next output reaches the webhook is measured: the other replica claims
    /// the session once the lease expired, makes the call again and delivers (aim: ≤
    /// leaseSeconds + 1 s).
    fn take_over(&mut self, server: &pgserver::PgServer) -> Result<(), String> {
        section("replicas take-over", "kill -9 of the replica holding a session; the other delivers its next output");
        let api = FirstHangs::start()?;
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        let flow = json!({"nodes": [
            {"type": "http", "method": "GET", "url": format!("http://{}/api", api.addr), "contextKey": "api", "timeoutMs": 120000},
            {"type": "say", "text": "after the call"}
        ]});
        let db = server.fresh_db("takeover");
        let Target::Hookflow(h) = self.hookflow("normal", None, PATH_TEMPLATE) else { unreachable!() };
        let target = Target::Hookflow(Hookflow { postgres: Some(db.clone()), flow: Some(flow), ..h });
        let mut servers = [
            self.start("replicas-takeover-a", &target, sink.addr)?,
            self.start("replicas-takeover-b", &target, sink.addr)?,
        ];
        let body = json!({"userId": "u", "sessionId": "takeover", "text": "x"}).to_string();
        ureq::post(&servers[0].url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| format!("take-over: cannot send: {e}"))?;
        // The API holds the first call: the turn is parked there, its session claimed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.calls() == 0 {
            if Instant::now() > deadline {
                return Err("take-over: the Flow never called the API".into());
            }
            thread::sleep(Duration::from_millis(5));
        }
        let mut client = postgres::Client::connect(&db, postgres::NoTls).map_err(|e| e.to_string())?;
        let holder: String = client
            .query_opt("SELECT run_owner FROM queues WHERE session_id = 'takeover' AND run_until > 0", &[])
            .map_err(|e| e.to_string())?
            .and_then(|r| r.get(0))
            .ok_or("take-over: no replica holds the session while its turn waits for the API")?;
        let i =
            servers.iter().position(|s| holder.contains(&format!("-{}-", s.pid))).ok_or("take-over: unknown holder")?;
        let killed = Instant::now();
        let _ = servers[i].child.kill();
        let _ = servers[i].child.wait();
        let secs = match sink.rx.recv_timeout(Duration::from_secs(60)) {
            Ok(_) => killed.elapsed().as_secs_f64(),
            Err(_) => return Err("take-over: the session's output was not delivered within 60 s of the kill".into()),
        };
        println!(
            "take-over    {secs:.2} s from kill -9 to the next delivery of the killed replica's session \
             (leaseSeconds 10; API calls {})",
            api.calls()
        );
        self.goal("replicas: take-over, kill -9 to next delivery (leaseSeconds 10)", secs, "s", 11.0, false);
        for s in &mut servers {
            self.stop(s);
        }
        Ok(())
    }
}

/// An API on 127.0.0.1 that holds its first request (reads until the caller goes away) and
/// answers every later one at once with `200 {}`.
struct FirstHangs {
    addr: SocketAddr,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl FirstHangs {
    fn start() -> Result<FirstHangs, String> {
        use std::io::Write as _;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("take-over API: cannot listen: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = calls.clone();
        // Runs until the bench exits: it holds nothing but a port.
        thread::Builder::new()
            .name("takeover-api".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let first = n.fetch_add(1, Ordering::SeqCst) == 0;
                    let _ = thread::Builder::new().name("takeover-conn".into()).spawn(move || {
                        let mut buf = [0u8; 4096];
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf) {
                                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                                _ => return,
                            }
                        }
                        if first {
                            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                        } else {
                            let _ = conn.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                            );
                        }
                    });
                }
            })
            .map_err(|e| format!("cannot spawn the take-over API: {e}"))?;
        Ok(FirstHangs { addr, calls })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}
