//! The connection pool of one replica (up to `store.pool` connections, opened on demand) and a
//! transaction type that prepares each statement once per connection.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, IsolationLevel, Statement};

use crate::store::{ErrorKind, Result, StoreError};

/// How long a caller waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// How connections are made: plain, or TLS through rustls.
#[derive(Clone)]
pub(super) enum Connector {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// One pooled connection and its prepared statements (prepared once per connection: a statement
/// by text costs a second round trip every time).
pub(super) struct Conn {
    pub(super) client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// The connections of this replica, opened on demand up to `store.pool`.
pub(super) struct Pool {
    pub(super) config: postgres::Config,
    pub(super) connector: Connector,
    pub(super) size: usize,
    /// `store.leaseSeconds`: how long the server lets a connection sit idle in a transaction.
    pub(super) lease: Duration,
    pub(super) state: Mutex<PoolState>,
    pub(super) freed: Condvar,
}

#[derive(Default)]
pub(super) struct PoolState {
    idle: Vec<Conn>,
    /// Connections open (idle or in use).
    open: usize,
}

/// A connection taken from the pool; back to it when dropped, unless it broke.
pub(super) struct Pooled<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take().expect("present until dropped");
        let mut s = self.pool.lock();
        if conn.client.is_closed() {
            s.open -= 1;
        } else {
            s.idle.push(conn);
        }
        self.pool.freed.notify_one();
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection made on a thread of its own, waited for at most `limit`: the driver's
    /// `connect_timeout` bounds only the TCP connect, so a server that accepts connections and
    /// never answers (frozen, or not PostgreSQL) held the start, and `check --connect`, for
    /// ever. (On a timeout the thread is left to its fate; this is for the start and `check`.)
    pub(super) fn connect_within(&self, limit: Duration) -> Result<Client> {
        let (config, connector, lease) = (self.config.clone(), self.connector.clone(), self.lease);
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("pg-connect".into())
            .spawn(move || {
                let pool = Pool { config, connector, size: 1, lease, state: Mutex::default(), freed: Condvar::new() };
                let _ = tx.send(pool.connect());
            })
            .map_err(|e| StoreError::new(ErrorKind::Other, format!("cannot start a thread to connect: {e}")))?;
        rx.recv_timeout(limit).unwrap_or_else(|_| {
            Err(StoreError::new(
                ErrorKind::Io,
                "no answer: it takes connections but does not answer as PostgreSQL does (a frozen server, or \
                 not a PostgreSQL port?)"
                    .to_owned(),
            ))
        })
    }

    pub(super) fn connect(&self) -> Result<Client> {
        // The driver builds a runtime for each connection and unwraps it: out of file
        // descriptors, that panicked the thread connecting (the vacuum thread, in a test that
        // exhausts them), which then vacuumed no more. A connection refused for want of
        // descriptors is an I/O error, tried again as any other: said before the driver is
        // called when there are none to spare (the runtime takes a few), and caught if they run
        // out in between.
        let spare = std::os::unix::net::UnixStream::pair;
        if let Err(e) = spare().and_then(|a| spare().map(|b| (a, b))) {
            return Err(StoreError::new(ErrorKind::Io, format!("cannot open a PostgreSQL connection: {e}")));
        }
        let connected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &self.connector {
            Connector::Plain => self.config.connect(postgres::NoTls),
            Connector::Tls(tls) => self.config.connect(tls.clone()),
        }));
        let mut client = match connected {
            Ok(c) => c?,
            Err(_) => {
                return Err(StoreError::new(
                    ErrorKind::Io,
                    "the PostgreSQL driver could not start a connection (out of file descriptors?)",
                ));
            }
        };
        // A replica cut off in the middle of a transaction would leave its row locks to the
        // server until the server's keepalive noticed (two hours by default): the sessions it had
        // locked could not be claimed by anyone. The server ends such a transaction after a lease
        // instead; by then the replica has stopped trusting its claims anyway. (A SET, not the
        // startup `options`, which connection poolers such as PgBouncer refuse by default.)
        client.batch_execute(&format!("SET idle_in_transaction_session_timeout = {}", self.lease.as_millis()))?;
        Ok(client)
    }

    pub(super) fn get(&self) -> Result<Pooled<'_>> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut s = self.lock();
        loop {
            if let Some(conn) = s.idle.pop() {
                return Ok(Pooled { pool: self, conn: Some(conn) });
            }
            if s.open < self.size {
                s.open += 1;
                drop(s);
                return match self.connect() {
                    Ok(client) => Ok(Pooled { pool: self, conn: Some(Conn { client, statements: HashMap::new() }) }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::new(ErrorKind::Busy, "no free PostgreSQL connection (store.pool) within 10s"));
            }
            s = self.freed.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Conn {
    /// A transaction, with the prepared statements at hand.
    pub(super) fn tx(&mut self) -> Result<Tx<'_>> {
        let Conn { client, statements } = self;
        Ok(Tx { tx: On::Tx(client.transaction()?), statements })
    }

    /// A read-only transaction whose statements all see one snapshot (`REPEATABLE READ`): for a
    /// read of several statements that must agree, such as the outbox and the log of one page of
    /// the delivery log (under `READ COMMITTED` an output delivered between the two showed in
    /// both).
    pub(super) fn snapshot(&mut self) -> Result<Tx<'_>> {
        let Conn { client, statements } = self;
        let tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?;
        Ok(Tx { tx: On::Tx(tx), statements })
    }

    /// Statements without a transaction around them, each its own (autocommit): for work of one
    /// statement, or reads that need no common snapshot. `BEGIN` and `COMMIT` are each a round
    /// trip, as many as the statement itself.
    pub(super) fn auto(&mut self) -> Tx<'_> {
        let Conn { client, statements } = self;
        Tx { tx: On::Auto(client), statements }
    }
}

/// Where a `Tx`'s statements run.
enum On<'c> {
    Tx(postgres::Transaction<'c>),
    Auto(&'c mut Client),
}

/// Dispatches a `GenericClient` method to the transaction or the bare client.
macro_rules! on {
    ($self:ident, $c:ident => $e:expr) => {
        match &mut $self.tx {
            On::Tx($c) => $e,
            On::Auto($c) => $e,
        }
    };
}

/// A transaction (or autocommit statements, `Conn::auto`) and the connection's prepared
/// statements.
pub(super) struct Tx<'c> {
    tx: On<'c>,
    statements: &'c mut HashMap<&'static str, Statement>,
}

/// Parameters of a statement.
pub(super) type Params<'a> = [&'a (dyn postgres::types::ToSql + Sync)];

impl Tx<'_> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = on!(self, c => c.prepare(sql))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    pub(super) fn execute(&mut self, sql: &'static str, params: &Params<'_>) -> Result<u64> {
        let st = self.statement(sql)?;
        Ok(on!(self, c => c.execute(&st, params))?)
    }

    pub(super) fn query(&mut self, sql: &'static str, params: &Params<'_>) -> Result<Vec<postgres::Row>> {
        let st = self.statement(sql)?;
        Ok(on!(self, c => c.query(&st, params))?)
    }

    pub(super) fn query_opt(&mut self, sql: &'static str, params: &Params<'_>) -> Result<Option<postgres::Row>> {
        let st = self.statement(sql)?;
        Ok(on!(self, c => c.query_opt(&st, params))?)
    }

    /// A statement built at run time (the console's filters): prepared each time.
    pub(super) fn query_text(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<postgres::Row>> {
        Ok(on!(self, c => c.query(sql, params))?)
    }

    /// A statement built at run time: prepared each time.
    #[allow(dead_code)]
    pub(super) fn execute_text(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        Ok(on!(self, c => c.execute(sql, params))?)
    }

    pub(super) fn commit(self) -> Result<()> {
        match self.tx {
            On::Tx(t) => Ok(t.commit()?),
            On::Auto(_) => Ok(()),
        }
    }
}
