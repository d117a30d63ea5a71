//! The `store-checkpoint` thread: moves committed pages from SQLite's write-ahead log into the
//! database file on its own connection, so that no commit pays for it.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses 1,000 log pages: that commit
//! (and every request waiting on the writer behind it) waits for a thousand page copies and an
//! fsync of the database file — the tail of the acknowledgement latency at low load, measured by
//! `make bench` (latency). Here the writer's connection has the automatic checkpoint off, and
//! this thread runs a PASSIVE checkpoint (which never blocks the writer or the readers) whenever
//! the log has grown by `EVERY_FRAMES`, looking every `TICK`. `journal_size_limit` cuts the log
//! file back when SQLite rewinds it, so it does not keep its largest size.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the thread checkpoints (a PASSIVE checkpoint with nothing new to copy costs a few
/// microseconds).
const TICK: Duration = Duration::from_millis(100);
/// Log frames (pages, ~32 MiB) past which the log is rewound by force (RESTART, which makes the
/// writer wait a moment): under sustained writes a PASSIVE checkpoint may never find the log
/// fully copied at the start of a write, which is when SQLite rewinds it.
const RESTART_FRAMES: i64 = 8192;

/// The running thread; stopped and joined on drop.
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        // A RESTART waits at most this long for readers and the writer to step aside.
        conn.execute_batch("PRAGMA busy_timeout=200; PRAGMA cache_size=-256;").map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("store-checkpoint".into()).spawn(move || run(&conn, &flag))?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(conn: &Connection, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::park_timeout(TICK);
        // (busy, frames in the log, frames copied into the database)
        let checkpoint =
            |mode: &str| conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1));
        match checkpoint("PASSIVE") {
            Ok(frames) if frames >= RESTART_FRAMES => {
                if let Err(e) = checkpoint("RESTART") {
                    log::debug!("store: background checkpoint (RESTART) failed: {e}");
                }
            }
            Ok(_) => {}
            // A full disk, for one: the writer reports and handles it (see engine/writer.rs).
            Err(e) => log::debug!("store: background checkpoint failed: {e}"),
        }
    }
}
