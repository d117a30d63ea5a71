//! Wiring: opens the store, loads the Flows, spawns the named http, worker and sender threads,
//! owns their join handles, and shuts them down in data-path order (stop accepting, let running
//! turns finish, drain the outbox for up to `delivery.drainSeconds`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::Config;
use crate::flow::Flow;
use crate::metrics::Metrics;
use crate::sender::{self, Senders, StopTx};
use crate::server;
use crate::store::Store;
use crate::worker::{self, Scheduler};
use crate::writer::Writer;

/// A start-up or run-time failure (exit code 2, config.md).
#[derive(Debug)]
pub enum Error {
    /// A Flow file is missing or invalid.
    Flow(String),
    /// The store cannot be opened or read.
    Store(crate::store::StoreError),
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

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::Store(e)
    }
}

/// What every thread shares.
pub(crate) struct Shared {
    pub config: Config,
    pub store: Store,
    /// The Flow of each endpoint, by endpoint name.
    pub flows: HashMap<String, Arc<Flow>>,
    pub sched: Scheduler,
    pub writer: Writer,
    /// Transformer files by endpoint name.
    pub transformers: HashMap<String, Arc<crate::transform::Code>>,
    /// Outbound TLS settings (public roots plus `delivery.caFile`).
    pub tls: ureq::tls::TlsConfig,
    /// The client of `http` nodes and the Rasa NLU.
    pub http_agent: ureq::Agent,
    pub senders: Senders,
    pub metrics: Metrics,
    /// Set when shutdown begins: new messages are refused.
    pub stopping: AtomicBool,
    /// Set when the http threads must end.
    pub http_stop: AtomicBool,
    /// When `worker::expire_sessions` next runs (Unix ms).
    pub next_expiry_ms: std::sync::atomic::AtomicI64,
    /// A failure after which the process cannot go on serving (the listener died): the command
    /// line shuts down and exits with status 2, so the service manager restarts it.
    pub fatal: crossbeam_channel::Sender<String>,
    /// One flag per sender lane, false once the lane's thread has ended.
    pub senders_alive: Vec<Arc<AtomicBool>>,
}

/// A running hookflow.
pub struct Service {
    shared: Arc<Shared>,
    http: Arc<tiny_http::Server>,
    addr: std::net::SocketAddr,
    http_threads: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    senders: Vec<Lane>,
    fatal: crossbeam_channel::Receiver<String>,
    writer: Option<JoinHandle<()>>,
}

/// A sender lane's thread and its shutdown handles.
struct Lane {
    stop: StopTx,
    /// Receives when the lane has finished draining.
    done: crossbeam_channel::Receiver<()>,
    handle: JoinHandle<()>,
}

/// How long past the drain deadline shutdown waits for a lane stuck in a delivery attempt.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Loads the Flow of every endpoint.
pub fn load_flows(config: &Config) -> Result<HashMap<String, Arc<Flow>>, Error> {
    let mut flows = HashMap::new();
    for ep in &config.endpoints {
        let flow = Flow::load(&ep.flow).map_err(|errs| {
            let lines: Vec<String> =
                errs.iter().map(|(place, msg)| format!("{}: {place}: {msg}", ep.flow.display())).collect();
            Error::Flow(lines.join("\n"))
        })?;
        flows.insert(ep.name.clone(), Arc::new(flow));
    }
    Ok(flows)
}

impl Service {
    /// Starts hookflow: everything queued or undelivered in the store is picked up.
    pub fn start(config: Config) -> Result<Service, Error> {
        raise_fd_limit();
        let flows = load_flows(&config)?;
        let tls = tls_config(&config)?;
        let transformers = crate::transform::load(&config).map_err(|e| Error::Flow(e.join("\n")))?;
        let store = Store::open(&config.data_dir, config.durability)?;
        let names: Vec<&str> = config.endpoints.iter().map(|e| e.name.as_str()).collect();
        let orphans = store.dead_unconfigured(&names, crate::util::now_ms())?;
        if orphans > 0 {
            log::warn!("{orphans} output(s) are for endpoints no longer configured; kept as dead letters");
        }
        let pending = store.pending_inbox()?;
        let lanes = config.delivery.senders;
        let (senders, wake_rx) = sender::channels(lanes);
        let http = listen(&config)?;
        let addr = http.server_addr().to_ip().expect("a TCP listener has an IP address");
        let workers = config.workers;
        let (fatal_tx, fatal_rx) = crossbeam_channel::bounded(1);
        let (writer, writer_rx) = Writer::new();
        let shared = Arc::new(Shared {
            sched: Scheduler::new(),
            writer,
            http_agent: crate::http_node::agent(tls.clone()),
            tls,
            transformers,
            metrics: Metrics::new(&config),
            senders_alive: (0..lanes).map(|_| Arc::new(AtomicBool::new(true))).collect(),
            config,
            store,
            flows,
            senders,
            stopping: AtomicBool::new(false),
            http_stop: AtomicBool::new(false),
            next_expiry_ms: std::sync::atomic::AtomicI64::new(0),
            fatal: fatal_tx,
        });
        for (id, key) in pending {
            shared.sched.enqueue(key, id);
        }
        let http = Arc::new(http);
        let mut svc = Service {
            shared,
            http,
            addr,
            http_threads: vec![],
            workers: vec![],
            senders: vec![],
            fatal: fatal_rx,
            writer: None,
        };
        svc.spawn_all(wake_rx, writer_rx).map_err(Error::Spawn)?;
        log::info!(
            "hookflow {} listening on http://{} ({} endpoint(s), {} worker(s), data in {})",
            env!("CARGO_PKG_VERSION"),
            svc.addr,
            svc.shared.config.endpoints.len(),
            workers,
            svc.shared.config.data_dir.display()
        );
        Ok(svc)
    }

    fn spawn_all(
        &mut self,
        wake_rx: Vec<crossbeam_channel::Receiver<()>>,
        writer_rx: crossbeam_channel::Receiver<crate::writer::Msg>,
    ) -> std::io::Result<()> {
        let shared = self.shared.clone();
        self.writer = Some(spawn("writer".into(), move || crate::writer::run(shared, writer_rx))?);
        for (lane, wake) in wake_rx.into_iter().enumerate() {
            let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
            let (shared, alive) = (self.shared.clone(), self.shared.senders_alive[lane].clone());
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            let h = spawn(format!("sender-{lane}"), move || sender::run(shared, lane, wake, stop_rx, alive, done_tx))?;
            self.senders.push(Lane { stop: stop_tx, done: done_rx, handle: h });
        }
        for i in 0..self.shared.config.workers {
            let shared = self.shared.clone();
            self.workers.push(spawn(format!("worker-{i}"), move || worker::run(shared))?);
        }
        for i in 0..server::HTTP_THREADS {
            let (shared, http) = (self.shared.clone(), self.http.clone());
            self.http_threads.push(spawn(format!("http-{i}"), move || server::run(&shared, &http))?);
        }
        Ok(())
    }

    /// Receives a message when the service can no longer serve and must be restarted.
    pub fn fatal(&self) -> &crossbeam_channel::Receiver<String> {
        &self.fatal
    }

    /// True while every sender lane runs, the store accepts writes (`/readyz` without the
    /// shutdown part) and the listener accepts connections.
    pub fn healthy(&self) -> bool {
        self.shared.senders_alive.iter().all(|a| a.load(Ordering::SeqCst))
            && self.shared.store.writable()
            && self.http.is_listening()
    }

    /// The address the server listens on (useful with port 0).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops in data-path order: new requests get 503, running turns finish, the outbox drains
    /// for up to `delivery.drainSeconds`; what is left stays on disk for the next start.
    pub fn shutdown(self) {
        // The http threads keep answering (503 `shutting_down` for new messages, /healthz) until
        // the outbox has drained; they are the last to go.
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.sched.stop(self.workers.len());
        join(self.workers);
        // Finished turns are committed before the drain, so their outputs go out in it.
        self.shared.writer.flush();
        let deadline = Instant::now() + self.shared.config.delivery.drain;
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
        self.shared.http_stop.store(true, Ordering::SeqCst);
        for _ in &self.http_threads {
            self.http.unblock();
        }
        join(self.http_threads);
        self.shared.writer.stop();
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
    server(Some(ssl)).map_err(|e| {
        Error::Listen(format!(
            "cannot serve HTTPS on {} with {} and {}: {e}",
            config.listen,
            tls.cert.display(),
            tls.key.display()
        ))
    })
}

/// The TLS settings of outbound HTTPS (webhooks, `http` nodes, Rasa): the public roots
/// (Mozilla's, built in, so a minimal chroot needs no CA store) plus `delivery.caFile`. Without
/// a CA file ureq's own Mozilla roots are used, loaded on the first HTTPS call rather than at
/// start (a few hundred KiB that a plain-HTTP installation never needs).
pub(crate) fn tls_config(config: &Config) -> Result<ureq::tls::TlsConfig, Error> {
    if config.delivery.ca_file.is_none() {
        return Ok(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::WebPki).build());
    }
    let mut roots: Vec<ureq::tls::Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c).to_owned())
        .collect();
    if let Some(file) = &config.delivery.ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| Error::Tls(format!("cannot read delivery.caFile {}: {e}", file.display())))?;
        let mut n = 0;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => {
                    roots.push(c);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => return Err(Error::Tls(format!("delivery.caFile {}: {e}", file.display()))),
            }
        }
        if n == 0 {
            return Err(Error::Tls(format!("delivery.caFile {} holds no PEM certificate", file.display())));
        }
    }
    Ok(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots)).build())
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
