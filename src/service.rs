//! Wiring: opens the store, loads the Flows, builds each thread's context (the handles it uses,
//! nothing more), spawns the named writer, sender, worker and http threads, owns their join
//! handles, and shuts them down in data-path order (stop accepting, let running turns finish,
//! drain the outbox for up to `delivery.drainSeconds`). The only module that knows every part;
//! nothing imports it back.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::Config;
use crate::delivery::{self, LaneContext};
use crate::engine::calls::Calls;
use crate::engine::turn::{Flows, Turns};
use crate::engine::worker::WorkerContext;
use crate::engine::writer::WriterParts;
use crate::engine::{self, Scheduler, Writer};
use crate::flow::Flow;
use crate::flow::transform;
use crate::intake::{self, HttpContext};
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::store::StoreError;
use crate::util::now_ms;

/// A start-up or run-time failure (exit code 2, config.md).
#[derive(Debug)]
pub enum Error {
    /// A Flow file is missing or invalid.
    Flow(String),
    /// The store cannot be opened or read.
    Store(StoreError),
    /// The listen address cannot be bound.
    Listen(String),
    /// A thread could not be started.
    Spawn(std::io::Error),
    /// A TLS file (`tls.cert`, `tls.key`, `delivery.caFile`) cannot be used.
    Tls(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Flow(m) => write!(f, "{m}"),
            Error::Store(e) => write!(f, "{e}"),
            Error::Listen(m) => write!(f, "{m}"),
            Error::Spawn(e) => write!(f, "cannot start a thread: {e}"),
            Error::Tls(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

/// A running hookflow.
pub struct Service {
    health: Arc<Health>,
    sched: Arc<Scheduler>,
    writer_handle: Writer,
    drain: std::time::Duration,
    http: Arc<tiny_http::Server>,
    addr: std::net::SocketAddr,
    http_threads: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    senders: Vec<SenderThread>,
    fatal: crossbeam_channel::Receiver<String>,
    writer: Option<JoinHandle<()>>,
    /// The call threads of parked turns (not joined: a call may take `timeoutMs`).
    calls: Option<Calls>,
    /// With replicas: the claimer, renewer, listener and vacuum threads.
    replicas: Option<ReplicaThreads>,
}

/// The threads of a replica (`engine::claimer`) and what stops them.
struct ReplicaThreads {
    store: Arc<dyn crate::store::Store>,
    /// Dropped at shutdown: the renewer and the vacuum thread end when it is closed.
    threads_stop: crossbeam_channel::Sender<()>,
    handles: Vec<JoinHandle<()>>,
}

/// What the replica threads are built from.
struct ReplicaParts {
    store: Arc<dyn crate::store::Store>,
    sched: Arc<Scheduler>,
    health: Arc<Health>,
    status: Arc<engine::writer::StoreStatus>,
    wake: delivery::Wake,
    claim: (crossbeam_channel::Sender<()>, crossbeam_channel::Receiver<()>),
    max_active: usize,
    lease: std::time::Duration,
}

fn start_replica_threads(p: ReplicaParts) -> Result<ReplicaThreads, Error> {
    use engine::claimer::{ClaimerContext, ListenerContext, RenewerContext, VacuumContext};
    let (threads_stop, stop) = crossbeam_channel::bounded::<()>(1);
    let claimer = ClaimerContext {
        store: p.store.clone(),
        sched: p.sched,
        wake: p.claim.1,
        health: p.health.clone(),
        max_active: p.max_active,
    };
    let vacuum = VacuumContext { store: p.store.clone(), stop: stop.clone() };
    let renewer = RenewerContext { store: p.store.clone(), lease: p.lease, status: p.status, stop };
    let listener = ListenerContext { store: p.store.clone(), claimer: p.claim.0, lanes: p.wake, health: p.health };
    let handles = vec![
        spawn("renewer".into(), move || engine::claimer::renew(renewer)).map_err(Error::Spawn)?,
        spawn("claimer".into(), move || engine::claimer::run(claimer)).map_err(Error::Spawn)?,
        spawn("listener".into(), move || engine::claimer::listen(listener)).map_err(Error::Spawn)?,
        spawn("vacuum".into(), move || engine::claimer::vacuum(vacuum)).map_err(Error::Spawn)?,
    ];
    Ok(ReplicaThreads { store: p.store, threads_stop, handles })
}

/// A sender lane's thread and its shutdown handles.
struct SenderThread {
    stop: crossbeam_channel::Sender<Instant>,
    /// Receives when the lane has finished draining.
    done: crossbeam_channel::Receiver<()>,
    handle: JoinHandle<()>,
}

/// How long past the drain deadline shutdown waits for a lane stuck in a delivery attempt.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Loads the Flow of every endpoint.
pub(crate) fn load_flows(config: &Config) -> Result<Flows, Error> {
    let mut flows = Flows::new();
    for (i, ep) in config.endpoints.iter().enumerate() {
        let flow = Flow::load(&ep.flow, &config.dir).map_err(|errs| {
            let lines: Vec<String> =
                errs.iter().map(|(place, msg)| format!("{}: {place}: {msg}", ep.flow.display())).collect();
            Error::Flow(lines.join("\n"))
        })?;
        if flow.has_handover() && ep.handover.is_none() {
            return Err(Error::Flow(crate::config::handover_missing(&config.path, i, &ep.flow).to_string()));
        }
        flows.insert(ep.name.clone(), Arc::new(flow));
    }
    Ok(flows)
}

impl Service {
    /// Starts hookflow: everything queued or undelivered in the store is picked up.
    pub fn start(config: Config) -> Result<Service, Error> {
        raise_fd_limit();
        let flows = Arc::new(load_flows(&config)?);
        let tls = crate::tls::outbound(&config).map_err(Error::Tls)?;
        // A CA file the replica cannot use is a mistake in the config (exit 1), found before
        // any connection is tried.
        if let crate::config::StoreKind::Postgres(pg) = &config.store
            && pg.ca_file.is_some()
        {
            crate::store::postgres::check_ca_file(pg).map_err(Error::Tls)?;
        }
        let transformers = Arc::new(transform::load(&config).map_err(|e| Error::Flow(e.join("\n")))?);
        let store = crate::store::open(&config)?;
        let orphans = store.dead_unconfigured(&config.endpoint_names(), now_ms())?;
        if orphans > 0 {
            log::warn!("{orphans} output(s) are for endpoints no longer configured; kept as dead letters");
        }
        // Replicas claim their work from the database; one process finds its queue there at start.
        let replicated = store.claims().is_some();
        let pending = if replicated { Vec::new() } else { store.pending_inbox()? };
        // `delivery.senders` lanes per distinct webhook URL (see `delivery`).
        let (wake, lanes) = delivery::plan(&config);
        let http = Arc::new(listen(&config)?);
        let addr = http.server_addr().to_ip().expect("a TCP listener has an IP address");
        let (fatal_tx, fatal) = crossbeam_channel::bounded(1);
        let (claim_tx, claim_rx) = crossbeam_channel::bounded(1);
        let direct = replicated
            .then(|| engine::writer::Direct::new(store.clone(), claim_tx.clone(), config.limits.queue_capacity));
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(lanes.len(), fatal_tx));
        let sched = Arc::new(Scheduler::new());
        for (id, key) in pending {
            sched.enqueue(key, id);
        }
        let (writer, writer_cx) = Writer::new(
            WriterParts {
                store: store.clone(),
                sched: sched.clone(),
                wake: wake.clone(),
                capacity: config.limits.queue_capacity,
                claimer: replicated.then(|| claim_tx.clone()),
            },
            direct,
        );
        if !replicated {
            store.checkpoints_by(writer.checkpoint_asker());
        }
        let mut svc = Service {
            health: health.clone(),
            sched: sched.clone(),
            writer_handle: writer.clone(),
            drain: config.delivery.drain,
            http: http.clone(),
            addr,
            http_threads: vec![],
            workers: vec![],
            senders: vec![],
            fatal,
            writer: None,
            calls: None,
            replicas: None,
        };
        svc.writer = Some(spawn("writer".into(), move || engine::writer::run(writer_cx)).map_err(Error::Spawn)?);
        for (lane, plan) in lanes.into_iter().enumerate() {
            let (stop_tx, stop) = crossbeam_channel::bounded(1);
            let (done, done_rx) = crossbeam_channel::bounded(1);
            let cx = LaneContext {
                config: config.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                tls: tls.clone(),
                lane,
                plan,
                stop,
                done,
                alive: health.lane_flag(lane),
            };
            let handle = spawn(format!("sender-{lane}"), move || delivery::run(cx)).map_err(Error::Spawn)?;
            svc.senders.push(SenderThread { stop: stop_tx, done: done_rx, handle });
        }
        let agent = engine::http_node::agent(tls);
        let calls = Calls::new(
            config.limits.max_concurrent_calls,
            config.endpoints.len(),
            agent,
            sched.clone(),
            metrics.clone(),
        );
        svc.calls = Some(calls.clone());
        let turns = Arc::new(Turns {
            config: config.clone(),
            flows: flows.clone(),
            transformers: transformers.clone(),
            store: store.clone(),
            wake: wake.clone(),
            metrics: metrics.clone(),
        });
        let expiry = Arc::new(engine::worker::Expiry::default());
        let worker_cx = || WorkerContext {
            turns: turns.clone(),
            sched: sched.clone(),
            writer: writer.clone(),
            calls: calls.clone(),
            health: health.clone(),
            expiry: expiry.clone(),
        };
        // The http threads run the turn of a session their accept made runnable (single node:
        // replicas' sessions are claimed by the claimer thread).
        let turns_here = (!replicated).then(|| Arc::new(worker_cx()));
        for i in 0..config.workers {
            let cx = worker_cx();
            svc.workers.push(spawn(format!("worker-{i}"), move || engine::worker::run(cx)).map_err(Error::Spawn)?);
        }
        if let (true, crate::config::StoreKind::Postgres(pg)) = (replicated, &config.store) {
            svc.replicas = Some(start_replica_threads(ReplicaParts {
                store: store.clone(),
                sched: sched.clone(),
                health: health.clone(),
                status: writer.status(),
                wake: wake.clone(),
                claim: (claim_tx, claim_rx),
                // Enough to keep every worker busy with a turn waiting behind it, plus every turn that
                // may be parked at an outbound call (which holds its session's claim meanwhile).
                max_active: 2 * config.workers + config.limits.max_concurrent_calls,
                lease: pg.lease,
            })?);
        }
        let where_ = match &config.store {
            // The directory exists by now: said without the config's `..`s and symlinks.
            crate::config::StoreKind::Sqlite => {
                let dir = std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
                format!("data in {}", dir.display())
            }
            crate::config::StoreKind::Postgres(pg) => format!(
                "data in PostgreSQL at {}, replica {}",
                crate::config::shown_url(&pg.url),
                store.claims().map_or("?", |c| c.replica())
            ),
        };
        let http_cx = Arc::new(HttpContext {
            config: config.clone(),
            flows,
            store,
            writer,
            sched,
            transformers,
            metrics,
            health,
            wake,
            turns_here,
            turn_running_here: Default::default(),
        });
        // Weak: a connection's thread may outlive the service for a moment (an idle keep-alive
        // connection), and must not keep the store (and its data directory's lock) alive.
        let here = Arc::downgrade(&http_cx);
        http.answer_here(Box::new(move |req| match here.upgrade() {
            Some(cx) => intake::answer_here(&cx, req),
            None => Some(req),
        }));
        http.refuse_with(intake::refusal);
        for i in 0..intake::HTTP_THREADS {
            let (cx, http) = (http_cx.clone(), http.clone());
            svc.http_threads.push(spawn(format!("http-{i}"), move || intake::run(&cx, &http)).map_err(Error::Spawn)?);
        }
        log::info!(
            "hookflow {} listening on http://{} ({} endpoint(s), {} worker(s), {} sender lane(s), {})",
            env!("CARGO_PKG_VERSION"),
            svc.addr,
            config.endpoints.len(),
            config.workers,
            svc.senders.len(),
            where_
        );
        Ok(svc)
    }

    /// Receives a message when the service can no longer serve and must be restarted.
    pub fn fatal(&self) -> &crossbeam_channel::Receiver<String> {
        &self.fatal
    }

    /// True while every sender lane runs and the store takes the writer's writes (`/readyz`
    /// without the shutdown part): false from a failed commit until a write succeeds again,
    /// and once the listener has stopped accepting connections.
    pub fn healthy(&self) -> bool {
        self.health.lanes_alive() && self.writer_handle.store_failure().is_none() && self.http.is_listening()
    }

    /// The address the server listens on (useful with port 0).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops in data-path order: new requests get 503, running turns finish (a turn whose
    /// script is interrupted stays queued instead), the outbox drains
    /// for up to `delivery.drainSeconds`; what is left stays on disk for the next start.
    pub fn shutdown(self) {
        // The http threads keep answering (503 `shutting_down` for new messages, /healthz) until
        // the outbox has drained; they are the last to go.
        self.health.begin_stop();
        let deadline = Instant::now() + self.drain;
        // Started turns finish (a turn parked at an `http` node, if its calls answer within the
        // drain); the others keep their checkpoint and go on after the next start.
        if !self.sched.wait_started(deadline) {
            // Waiting for outbound calls, or for the store (a full disk) to take their commit.
            let why = match self.writer_handle.store_failure() {
                Some(failure) => format!("the store could not take them ({})", failure.reason()),
                None => "they wait for outbound calls".to_owned(),
            };
            log::warn!("running turns did not finish within the drain: {why}; they go on after the next start");
        }
        // A script still running past the drain would hold its worker (and so the exit) until
        // its limits; its turn is not committed and runs again after the next start.
        self.health.interrupt_scripts();
        self.sched.stop(self.workers.len());
        join(self.workers);
        if let Some(calls) = &self.calls {
            calls.stop();
        }
        // Finished turns are committed before the drain, so their outputs go out in it.
        self.writer_handle.flush();
        for lane in &self.senders {
            let _ = lane.stop.send(deadline);
        }
        for lane in self.senders {
            // An attempt started before the drain may still hang on a slow webhook; it is not
            // waited for past the drain: its output stays in the outbox for the next start.
            if lane.done.recv_deadline(deadline + DRAIN_GRACE).is_ok() {
                join(vec![lane.handle]);
            } else {
                let name = lane.handle.thread().name().unwrap_or("sender").to_owned();
                log::warn!(
                    "{name} is still in a delivery attempt at the end of the drain; its output is kept for the next start"
                );
            }
        }
        if let Some(r) = self.replicas {
            // What this replica claimed and did not finish goes back to the others at once,
            // instead of after `leaseSeconds`.
            if let Some(Err(e)) = r.store.claims().map(|c| c.release_all()) {
                log::warn!("cannot give back this replica's claims ({e}); they expire after store.leaseSeconds");
            }
            // Closed: the renewer and the vacuum thread both hear it.
            drop(r.threads_stop);
            join(r.handles);
        }
        self.health.stop_http();
        for _ in &self.http_threads {
            self.http.unblock();
        }
        join(self.http_threads);
        self.writer_handle.stop();
        join(self.writer.into_iter().collect());
        log::info!("hookflow stopped");
    }
}

/// Binds the listen address, with TLS when `tls` is configured.
fn listen(config: &Config) -> Result<tiny_http::Server, Error> {
    let bind_error =
        |e: Box<dyn std::error::Error + Send + Sync>| Error::Listen(format!("cannot listen on {}: {e}", config.listen));
    // Connection cap, head size and head deadline, enforced inside tiny_http (vendor/README.md).
    let limits = tiny_http::Limits {
        max_connections: config.limits.max_connections,
        max_header_bytes: config.limits.max_header_bytes,
        // Bodies are read on each connection's own thread, up to this, so that a client that
        // sends its body slowly holds only its own connection (vendor/README.md).
        max_body_bytes: config.limits.max_body_bytes,
        ..tiny_http::Limits::default()
    };
    let server = |ssl| {
        let addr = tiny_http::ConfigListenAddr::IP(vec![config.listen]);
        tiny_http::Server::new(tiny_http::ServerConfig { addr, ssl, limits: limits.clone() })
    };
    let Some(tls) = &config.tls else {
        return server(None).map_err(bind_error);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::Tls(format!("cannot read the TLS file {}: {e}", p.display())))
    };
    let ssl = tiny_http::SslConfig { certificate: read(&tls.cert)?, private_key: read(&tls.key)? };
    // A certificate and key that do not belong together are a mistake in the config (exit 1),
    // not a failure to listen.
    ssl.check().map_err(|e| {
        Error::Tls(format!("tls.key {} does not go with tls.cert {}: {e}", tls.key.display(), tls.cert.display()))
    })?;
    server(Some(ssl)).map_err(|e| {
        Error::Listen(format!(
            "cannot serve HTTPS on {} with {} and {}: {e}",
            config.listen,
            tls.cert.display(),
            tls.key.display()
        ))
    })
}

/// The TLS files the config names, checked as `serve` will read them (`hookflow check`).
pub fn check_tls_files(config: &Config) -> Vec<String> {
    let mut problems = crate::tls::check_files(config);
    if let crate::config::StoreKind::Postgres(pg) = &config.store
        && pg.ca_file.is_some()
        && let Err(e) = crate::store::postgres::check_ca_file(pg)
    {
        problems.push(e);
    }
    problems
}

/// Raises the soft limit on open files to the hard limit: each keep-alive connection holds a
/// descriptor, and the usual soft limit of 1024 is low for a server.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => log::debug!("open file limit: {n}"),
        Err(e) => log::warn!("cannot raise the open file limit: {e}"),
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

fn join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let name = h.thread().name().unwrap_or("?").to_owned();
        if h.join().is_err() {
            log::error!("thread {name} panicked");
        }
    }
}
