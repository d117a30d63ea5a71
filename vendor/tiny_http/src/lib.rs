//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![allow(unused_imports, dead_code)] // hookflow: vendored; upstream 0.12.0 has these warnings
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod ssl;
mod test;
mod util;

#[cfg(test)]
mod limits_test;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // hookflow patch: true while the accept thread runs
    listening: Arc<AtomicBool>,

    // hookflow patch: connections being served
    connections: Arc<AtomicUsize>,

    // hookflow patch: requests answered on their connection's own thread (`answer_here`)
    here: Arc<std::sync::OnceLock<AnswerHere>>,

    // hookflow patch: the answer to requests nobody will take (`refuse_with`)
    refusal: Arc<std::sync::OnceLock<Refusal>>,
}

/// hookflow patch: given each request on its connection's own thread; answers it there and
/// gives `None`, or gives it back to be handed out as usual.
pub type AnswerHere = Box<dyn Fn(Request) -> Option<Request> + Send + Sync + 'static>;

/// hookflow patch: makes the answer to a request read after the server began closing, or left
/// queued when it was dropped (`Server::refuse_with`).
pub type Refusal = fn() -> ResponseBox;

/// hookflow patch: answers `rq` with the server's refusal, with `Connection: close` (this server
/// takes no more requests, so a client or proxy should not send another on the connection);
/// without a refusal, dropping it answers 500 with an empty body.
fn refuse(refusal: &std::sync::OnceLock<Refusal>, rq: Request) {
    if let Some(make) = refusal.get() {
        let mut response = make();
        // `add_header` drops `Connection`.
        response.push_connection_close();
        let _ = rq.respond(response);
    }
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,

    /// hookflow patch: bounds on connections and request heads.
    pub limits: Limits,
}

/// hookflow patch (see vendor/README.md): what one client, or many, can hold of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections (each is read by a thread of its own). A new one beyond this is
    /// answered 503 `overloaded` with `Retry-After: 1` and closed; over HTTPS, where an answer
    /// would need a TLS handshake on the accept thread, it is closed unanswered.
    pub max_connections: usize,
    /// Bytes of a request line plus headers (CRLFs included); beyond it the request is
    /// answered 431 `headers_too_large` and the connection closed, nothing more buffered.
    pub max_header_bytes: usize,
    /// Time within which a request line and all its headers must arrive, counted from the
    /// accept (the first request) or from the request's first byte (later ones on a keep-alive
    /// connection); past it 408 and close, however slowly bytes keep coming.
    pub header_timeout: Duration,
    /// hookflow patch: bytes of a request body read on the connection's own thread before the
    /// request is handed out; a body declared larger is not read (`Request::body_length` says
    /// how large it claims to be) and a chunked one larger is cut one byte past it, and the
    /// connection closes after the answer (`Connection: close`).
    pub max_body_bytes: usize,
    /// hookflow patch: time within which a body (up to `max_body_bytes`) must arrive, counted
    /// from the end of its head; past it 408 and close.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl SslConfig {
    /// hookflow patch: builds the TLS server configuration as `Server::new` does, without
    /// listening, so that a certificate and key that do not belong together (or cannot be
    /// read) are found by a configuration check rather than at the start.
    #[cfg(feature = "ssl-rustls")]
    pub fn check(&self) -> Result<(), Box<dyn Error + Send + Sync + 'static>> {
        crate::ssl::SslContextImpl::from_pem(
            self.certificate.clone(),
            Zeroizing::new(self.private_key.clone()),
        )
        .map(|_| ())
    }
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
            limits: Limits::default(),
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
            limits: Limits::default(),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
            limits: Limits::default(),
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener_with_limits(listener, config.ssl, config.limits)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_limits(listener, ssl_config, Limits::default())
    }

    /// hookflow patch: `from_listener` with bounds on connections and request heads.
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        type SslContext = ();
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        type SslContext = crate::ssl::SslContextImpl;
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let listening = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(AtomicUsize::new(0));
        let inside_connections = connections.clone();
        let here: Arc<std::sync::OnceLock<AnswerHere>> = Arc::default();
        let inside_here = here.clone();
        let refusal: Arc<std::sync::OnceLock<Refusal>> = Arc::default();
        let inside_refusal = refusal.clone();
        // hookflow patch: however the accept thread ends (an error, a panic), `is_listening`
        // turns false and `recv` returns an error, unless the server is being dropped.
        let mut alive = AcceptThreadAlive {
            listening: listening.clone(),
            close: close_trigger.clone(),
            messages: messages.clone(),
            error: None,
        };
        thread::Builder::new().name("tiny_http accept".into()).spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();
            let mut refused = LogEvery::default();
            let mut unspawned = LogEvery::default();

            log::debug!("Running accept thread");
            // hookflow patch (see vendor/README.md): back-off for transient accept errors.
            let mut backoff = std::time::Duration::from_millis(5);
            while !inside_close_trigger.load(Relaxed) {
                let new_client = match server.accept() {
                    // hookflow patch: beyond `max_connections`, 503 and close.
                    Ok((sock, _)) if inside_connections.load(Ordering::SeqCst) >= limits.max_connections => {
                        refused.log(|n| log::warn!("Too many open connections ({}): {} new one(s) answered 503", limits.max_connections, n));
                        refuse_overloaded(sock, ssl.is_some());
                        continue;
                    }
                    Ok((sock, _)) => {
                        use util::RefinedTcpStream;
                        // hookflow patch: a client that stops sending (in the middle of a
                        // body, or idle on keep-alive) is timed out instead of holding a
                        // thread forever; tiny_http answers 408 and closes.
                        if let connection::Connection::Tcp(ref s) = sock {
                            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(SOCKET_TIMEOUT_SECS)));
                            let _ = s.set_write_timeout(Some(std::time::Duration::from_secs(SOCKET_TIMEOUT_SECS)));
                            // hookflow patch: an answer over the writer's 1 KiB buffer goes out
                            // in two writes; with Nagle's algorithm the second waited for the
                            // client's delayed ACK of the first (40 ms on Linux).
                            let _ = s.set_nodelay(true);
                        }
                        let pair = match ssl {
                            None => RefinedTcpStream::new(sock),
                            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                            Some(ref ssl) => {
                                // trying to apply SSL over the connection
                                // if an error occurs, we just close the socket and resume listening
                                let sock = match ssl.accept(sock) {
                                    Ok(s) => s,
                                    Err(_) => continue,
                                };

                                RefinedTcpStream::new(sock)
                            }
                            #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                            Some(ref _ssl) => unreachable!(),
                        };
                        // hookflow patch: out of descriptors for the second handle of the
                        // connection: drop this connection, pause, and keep accepting.
                        let (read_closable, mut write_closable) = match pair {
                            Ok(pair) => pair,
                            Err(e) => {
                                log::error!("Error setting up a new client (will retry): {}", e);
                                thread::sleep(backoff);
                                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                                continue;
                            }
                        };

                        // hookflow patch: counted as open until the write half (which the
                        // connection's requests share until answered) is dropped.
                        write_closable.hold(ConnectionSlot::new(&inside_connections));
                        Ok(ClientConnection::with_limits(write_closable, read_closable, limits.clone()))
                    }
                    Err(e) => Err(e),
                };

                match new_client {
                    Ok(client) => {
                        backoff = std::time::Duration::from_millis(5);
                        let messages = inside_messages.clone();
                        let here = inside_here.clone();
                        let refusal = inside_refusal.clone();
                        let closed = inside_close_trigger.clone();
                        let mut client = Some(client);
                        let spawned = tasks_pool.spawn(Box::new(move || {
                            // hookflow patch: a request `answer_here` answers is not handed out.
                            // Once the server is dropped nobody takes requests any more: one
                            // handed out then would never be answered, and this thread would wait
                            // for that answer for ever; it gets the refusal (`refuse_with`).
                            let queued = |rq: Request| match here.get() {
                                _ if closed.load(Relaxed) => {
                                    refuse(&refusal, rq);
                                    None
                                }
                                Some(answer) => answer(rq),
                                None => Some(rq),
                            };
                            if let Some(client) = client.take() {
                                // Synchronization is needed for HTTPS requests to avoid a deadlock
                                if client.secure() {
                                    let (sender, receiver) = mpsc::channel();
                                    for rq in client.filter_map(queued) {
                                        messages.push(rq.with_notify_sender(sender.clone()).into());
                                        receiver.recv().unwrap();
                                    }
                                } else {
                                    for rq in client.filter_map(queued) {
                                        messages.push(rq.into());
                                    }
                                }
                            }
                        }));
                        // hookflow patch: no thread for this connection (a thread or memory
                        // limit): it is closed, the accept loop pauses and goes on.
                        if let Err(e) = spawned {
                            unspawned.log(|n| log::error!("Cannot start a thread for a new connection, {} connection(s) closed: {}", n, e));
                            thread::sleep(backoff);
                            backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                        }
                    }

                    // hookflow patch: out of file descriptors or memory, or a connection that
                    // was reset while queued, is no reason to stop accepting for good (which
                    // left a running server that no longer accepted). Wait, growing the pause up
                    // to one second as Go's net/http does, and try again.
                    Err(e) if is_transient_accept_error(&e) => {
                        log::error!("Error accepting new client (will retry): {}", e);
                        thread::sleep(backoff);
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                        continue;
                    }
                    Err(e) => {
                        log::error!("Error accepting new client: {}", e);
                        alive.error = Some(e);
                        break;
                    }
                }
            }
            log::debug!("Terminating accept thread");
            drop(alive);
        })?;

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            listening,
            connections,
            here,
            refusal,
        })
    }

    /// hookflow patch: what a request nobody will take is answered (one read after the server
    /// began closing, or left queued when it was dropped) instead of an empty 500: for a
    /// server that stops on purpose, a 503 that says to send again, which a load balancer
    /// passes on to another replica. Set once; a second call is ignored.
    pub fn refuse_with(&self, f: Refusal) {
        let _ = self.refusal.set(f);
    }

    /// hookflow patch: `f` sees every request first, on its connection's own thread, and may
    /// answer it there (returning `None`) instead of its being handed to `recv`: for answers
    /// that must come even while every thread that calls `recv` is busy (a health check). It
    /// must be quick and never wait. Set once; a second call is ignored.
    pub fn answer_here(&self, f: AnswerHere) {
        let _ = self.here.set(f);
    }

    /// hookflow patch: false once the accept thread has ended (a non-transient accept error,
    /// or a panic): no new connection will be served, and the process should be restarted.
    /// `recv` then also returns an error (once, to one of its callers).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    ///
    /// hookflow patch: upstream left this unimplemented; it counts the accepted connections
    /// not yet closed (those `Limits::max_connections` bounds): a connection is open while its
    /// thread reads from it or a request of it is not yet answered.
    pub fn num_connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // hookflow patch: requests handed out and never taken are answered (`refuse_with`; else
        // 500, by their drop), so that their connections' threads, which write the answers, do
        // not wait for ever.
        while let Some(message) = self.messages.try_pop() {
            if let Message::NewRequest(rq) = message {
                refuse(&self.refusal, rq);
            }
        }
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// hookflow patch: accept errors after which the listener is still usable (Linux errno values:
/// ENOMEM 12, ENFILE 23, EMFILE 24, ENOBUFS 105, ECONNABORTED 103, EPROTO 71, EPERM 1 from
/// firewalls), plus interrupted and would-block.
fn is_transient_accept_error(e: &IoError) -> bool {
    matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::ConnectionAborted)
        || matches!(e.raw_os_error(), Some(1 | 12 | 23 | 24 | 71 | 103 | 105))
}

/// hookflow patch: read and write timeout of accepted connections, in seconds.
const SOCKET_TIMEOUT_SECS: u64 = 15;

/// hookflow patch: dropped when the accept thread ends, normally or by a panic.
struct AcceptThreadAlive {
    listening: Arc<AtomicBool>,
    close: Arc<AtomicBool>,
    messages: Arc<MessagesQueue<Message>>,
    /// The accept error that ended the thread.
    error: Option<IoError>,
}

impl Drop for AcceptThreadAlive {
    fn drop(&mut self) {
        self.listening.store(false, Ordering::SeqCst);
        if self.close.load(Relaxed) {
            return;
        }
        let e = self.error.take().unwrap_or_else(|| {
            let why = if thread::panicking() {
                "the accept thread panicked"
            } else {
                "the accept thread ended"
            };
            log::error!("{}: no new connection will be accepted", why);
            IoError::new(IoErrorKind::Other, why)
        });
        self.messages.push(e.into());
    }
}

/// hookflow patch: one connection counted against `Limits::max_connections` while it lives.
pub(crate) struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        ConnectionSlot(count.clone())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// hookflow patch: logs a repeated event at most once a second, with how often it happened.
#[derive(Default)]
struct LogEvery {
    last: Option<Instant>,
    count: u64,
}

impl LogEvery {
    fn log(&mut self, f: impl FnOnce(u64)) {
        self.count += 1;
        if self.last.map_or(true, |t| t.elapsed() >= Duration::from_secs(1)) {
            f(self.count);
            self.count = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// hookflow patch: answers a connection over `Limits::max_connections` with 503 and closes it,
/// on the accept thread and without blocking it: what the client already sent is read (so
/// that closing does not reset the connection under the answer), the answer goes into the
/// fresh socket's empty send buffer. Over HTTPS the connection is just closed.
fn refuse_overloaded(mut sock: Connection, secure: bool) {
    use std::io::{Read, Write};
    if secure || sock.set_nonblocking(true).is_err() {
        return;
    }
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match sock.read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let mut answer = Vec::with_capacity(512);
    let _ = response::json_error(
        503,
        "overloaded",
        "the server has too many open connections; retry later",
    )
    .with_header(Header::from_bytes(&b"Retry-After"[..], &b"1"[..]).unwrap())
    .raw_print(&mut answer, HTTPVersion(1, 1), &[], false, None);
    let _ = sock.write_all(&answer);
    let _ = sock.shutdown(Shutdown::Write);
}
