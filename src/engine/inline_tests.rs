//! Commits on the caller's thread (`inline.rs`), against a real SQLite store in a temp dir. The
//! writer thread is not started unless a test says so: what is committed without it was
//! committed inline.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::super::Scheduler;
use super::super::writer::{AcceptError, Msg, StoreFailure, Writer, WriterContext, WriterParts};
use crate::config::Durability;
use crate::delivery::{LanePlan, plan};
use crate::domain::{JobKind, NewOutput, SessionKey, SessionRow, TurnRecord};
use crate::store::sqlite::SqliteStore;
use crate::store::{ErrorKind, Store};

/// How long a test waits for what should happen at once.
const BOUND: Duration = Duration::from_secs(10);

struct Rig {
    writer: Writer,
    cx: Option<WriterContext>,
    store: Arc<dyn Store>,
    sched: Arc<Scheduler>,
    lanes: Vec<LanePlan>,
    dir: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(name: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("hookflow-inline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir, Durability::Normal).unwrap());
    let text = r#"{"endpoints": [{"name": "e", "urlToken": "token-of-e", "flow": "f.json", "webhook": {"url": "http://127.0.0.1:9/hook"}}]}"#;
    let config = crate::config::parse(text, std::path::Path::new("/etc/hookflow/hookflow.json"), &|_| None).unwrap();
    let (wake, lanes) = plan(&config);
    let sched = Arc::new(Scheduler::new());
    let parts = WriterParts { store: store.clone(), sched: sched.clone(), wake, capacity: 100, claimer: None };
    let (writer, cx) = Writer::new(parts, None);
    Rig { writer, cx: Some(cx), store, sched, lanes, dir }
}

/// Starts the writer thread of `rig` (`Writer::stop` ends it).
fn run_writer(rig: &mut Rig) -> std::thread::JoinHandle<()> {
    let cx = rig.cx.take().expect("the writer thread is started once");
    std::thread::spawn(move || super::super::writer::run(cx))
}

fn key(session: &str) -> SessionKey {
    SessionKey { endpoint: "e".into(), user_id: "u".into(), session_id: session.into() }
}

/// `Writer::accept` on another thread, its answer awaited for at most `BOUND`.
fn accept_from_a_thread(writer: &Writer, session: &str) -> Receiver<Result<i64, AcceptError>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (writer, key) = (writer.clone(), key(session));
    std::thread::spawn(move || {
        let _ = tx.send(writer.accept(key, JobKind::Message, "{\"text\":\"hi\"}".into()));
    });
    rx
}

fn turn(key: &SessionKey, inbox_id: i64) -> TurnRecord {
    TurnRecord {
        inbox_id,
        key: key.clone(),
        session: Some(SessionRow { state: Some("{}".into()), seq: 0, messages: 1, updated_ms: 1 }),
        profile: None,
        outputs: vec![NewOutput { body: "{\"text\":\"hi\"}".into(), not_before_ms: 0 }],
        now_ms: 1,
        transcript: Vec::new(),
        loaded_messages: 0,
        checkpoint: None,
        trace: None,
    }
}

fn rx(rig: &Rig) -> &Receiver<Msg> {
    &rig.cx.as_ref().expect("the writer thread was not started").rx
}

#[test]
fn with_the_writer_idle_an_accept_and_its_turn_commit_on_the_callers_thread() {
    let rig = rig("idle");
    let id = accept_from_a_thread(&rig.writer, "s").recv_timeout(BOUND).expect("answered without the writer thread");
    let id = id.expect("accepted");
    assert_eq!(rig.store.pending_inbox().unwrap(), [(id, key("s"))], "on disk");
    assert_eq!(rig.sched.head(&key("s")), Some(id), "queued for the workers");
    assert!(rx(&rig).is_empty(), "nothing was handed to the writer");

    // The worker's side: the turn is committed, its output reaches the lane, the session is free.
    rig.sched.start(&key("s"));
    rig.writer.turn(key("s"), turn(&key("s"), id));
    assert!(rx(&rig).is_empty(), "nothing was handed to the writer");
    assert!(rig.store.pending_inbox().unwrap().is_empty(), "the message is done");
    assert_eq!(rig.store.outbox_len().unwrap(), 1, "its output is in the outbox");
    assert!(rig.lanes[0].woken(), "the lane was told");
    assert_eq!(rig.sched.depth(), 0, "the session was released");
}

#[test]
fn an_accept_committed_here_gives_its_runnable_session_to_the_caller_and_tells_no_worker() {
    let mut rig = rig("here");
    let ready = rig.sched.ready();
    let (id, runnable) = rig.writer.accept_here(key("s"), JobKind::Message, "{}".into()).expect("accepted");
    assert_eq!(runnable, Some(key("s")), "the session became runnable: the caller runs its turn");
    assert!(ready.is_empty(), "no worker was told");
    assert_eq!(rig.sched.head(&key("s")), Some(id), "queued in its session");
    // The session's next message waits behind the first: nobody is to run it now.
    let (_, next) = rig.writer.accept_here(key("s"), JobKind::Message, "{}".into()).expect("accepted");
    assert_eq!(next, None);
    assert!(ready.is_empty());

    // Handed to the writer (past the pace), the message is queued for the workers as before,
    // and the caller is given nothing to run.
    let thread = run_writer(&mut rig);
    rig.writer.shared.lock().note(super::PACE_INLINE as usize);
    let (id, runnable) = rig.writer.accept_here(key("t"), JobKind::Message, "{}".into()).expect("accepted");
    assert_eq!(runnable, None, "committed by the writer");
    match ready.recv_timeout(BOUND) {
        Ok(super::super::Job::Run(k)) => assert_eq!((k, rig.sched.head(&key("t"))), (key("t"), Some(id))),
        _ => panic!("the workers were not told of the message the writer committed"),
    }
    rig.writer.stop();
    thread.join().unwrap();
}

#[test]
fn while_the_writer_commits_after_stop_or_while_the_store_fails_the_writer_gets_the_message() {
    let rig = rig("handover");
    let shared = rig.writer.shared.clone();
    let expect_handed_over = |why: &str| {
        let answer = accept_from_a_thread(&rig.writer, why);
        match rx(&rig).recv_timeout(BOUND) {
            // Dropping the message answers its caller Stopped: the writer thread is not running.
            Ok(Msg::Accept(_)) => {}
            _ => panic!("{why}: the message was not handed to the writer"),
        }
        assert!(matches!(answer.recv_timeout(BOUND), Ok(Err(AcceptError::Stopped))), "{why}");
    };
    {
        // The writer's batch holds the lock (not an inline commit): hand over, do not wait.
        let _batch = shared.lock();
        expect_handed_over("batch");
    }
    shared.status.set(Some(StoreFailure { kind: ErrorKind::Full, since: Instant::now() }));
    expect_handed_over("failing");
    shared.status.set(None);
    rig.writer.stop();
    assert!(matches!(rx(&rig).recv_timeout(BOUND), Ok(Msg::Stop)));
    expect_handed_over("stopped");
    assert!(rig.store.pending_inbox().unwrap().is_empty(), "nothing was committed inline");
}

#[test]
fn one_thread_waits_for_an_inline_commit_the_next_hands_over() {
    let rig = rig("wait");
    let shared = rig.writer.shared.clone();
    let first = {
        // As if a thread were committing inline.
        let _inline = shared.lock();
        shared.inline_held.store(true, Ordering::SeqCst);
        let first = accept_from_a_thread(&rig.writer, "a");
        let deadline = Instant::now() + BOUND;
        while !shared.inline_waiting.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the first thread does not wait for the lock");
            std::thread::yield_now();
        }
        let second = accept_from_a_thread(&rig.writer, "b");
        assert!(matches!(rx(&rig).recv_timeout(BOUND), Ok(Msg::Accept(_))), "the second is handed over");
        assert!(matches!(second.recv_timeout(BOUND), Ok(Err(AcceptError::Stopped))));
        shared.inline_held.store(false, Ordering::SeqCst);
        first
    };
    let id = first.recv_timeout(BOUND).expect("the first is answered once the lock is free").expect("accepted");
    assert_eq!(rig.store.pending_inbox().unwrap(), [(id, key("a"))]);
}

#[test]
fn many_threads_accepting_for_one_session_queue_its_messages_in_the_order_of_their_ids() {
    let mut rig = rig("order");
    let thread = run_writer(&mut rig);
    std::thread::scope(|t| {
        for _ in 0..6 {
            t.spawn(|| {
                for _ in 0..15 {
                    rig.writer.accept(key("s"), JobKind::Message, "{}".into()).expect("accepted");
                }
            });
        }
    });
    // The scheduler hands the session's messages out in the order they were queued.
    let mut queued = Vec::new();
    while let Some(id) = rig.sched.head(&key("s")) {
        rig.sched.start(&key("s"));
        queued.push(id);
        rig.sched.done(key("s"));
    }
    let stored: Vec<i64> = rig.store.pending_inbox().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored.len(), 90);
    assert_eq!(queued, stored, "queued in the order of the ids");
    rig.writer.stop();
    thread.join().unwrap();
}

#[test]
fn past_about_500_messages_a_second_threads_hand_over_to_group_commit() {
    let rig = rig("pace");
    let shared = rig.writer.shared.clone();
    // A window in which the writer's batches committed PACE_INLINE accepts and turns.
    shared.lock().note(super::PACE_INLINE as usize);
    let answer = accept_from_a_thread(&rig.writer, "busy");
    assert!(matches!(rx(&rig).recv_timeout(BOUND), Ok(Msg::Accept(_))), "handed over at a high load");
    assert!(matches!(answer.recv_timeout(BOUND), Ok(Err(AcceptError::Stopped))));
    // The window is over: the load is low again.
    shared.lock().since = Some(Instant::now() - 2 * super::PACE_WINDOW);
    let id =
        accept_from_a_thread(&rig.writer, "quiet").recv_timeout(BOUND).expect("committed inline").expect("accepted");
    assert_eq!(rig.store.pending_inbox().unwrap(), [(id, key("quiet"))]);
}

#[test]
fn a_checkpoint_asked_of_the_writer_reaches_it_until_it_has_stopped() {
    let mut rig = rig("asker");
    let ask = rig.writer.checkpoint_asker();
    assert!(ask(), "the writer takes it");
    assert!(matches!(rx(&rig).try_recv(), Ok(Msg::Checkpoint)));
    // The writer thread has ended (its receiver is gone): the committing thread copies the log.
    drop(rig.cx.take());
    assert!(!ask());
}
