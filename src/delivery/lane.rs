//! The sender lanes: outbox → webhook, one blocking ureq POST at a time per lane.
//!
//! Each lane delivers for the endpoints of one webhook URL (its group, see `delivery`) and owns
//! their sessions whose key hashes to it (`SessionKey::lane_hash % senders`), so outputs of one
//! session always go through one thread, in order. A lane keeps a window of outbox rows in
//! memory, per session; only the head of a session's queue is ever sent, and it leaves the queue
//! when it succeeded or became a dead letter, so output n+1 never overtakes output n. Failed heads
//! wait in a due-time heap: no thread sleeps on one output, and other sessions go on.
//!
//! The window is shared fairly so that rows that cannot go out now never keep others waiting on
//! disk: each endpoint of the group has its own read cursor and share of the window (a flooded
//! endpoint fills only its share), and each session keeps at most `SESSION_ROWS` rows in memory
//! (a flooded session, or one whose head keeps failing, fills only those); the rest of such a
//! session is read back, in order, once the rows in memory are done.
//!
//! Before each attempt the lane asks the URL's shared `Target` (target.rs): while the URL counts
//! as down, heads wait in `held` (not in the due-time heap) until the next probe time or until
//! the target's epoch changes (a probe ended, the target answered; the lane is woken then).
//!
//! The writer hands each commit's new rows to their lane (`Wake::pushed`, into the lane's
//! mailbox) and wakes it; the lane takes them as they are while its read cursor has seen every
//! row before the commit (`take`), and reads the outbox otherwise: at start-up (whatever was
//! pending when the process stopped), after a wake-up from anyone else (a replay, a checkpoint
//! of a parked turn), when its share is full, or when its mailbox overflowed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::select;

use super::attempt::{Outcome, agent, attempt, retry_wait};
use super::target::Gate;
use super::{Group, LaneContext};
use crate::domain::{NewOutbox, OutboxRow, SessionKey};
use crate::store::StoreError;
use crate::util::now_ms;

/// Most outbox rows a lane holds in memory; the rest wait on disk.
const WINDOW: usize = 4096;
/// Most rows of one session a lane holds in memory.
const SESSION_ROWS: usize = 64;
/// Delivered outputs removed from the store in one transaction. Until they are, a crash would
/// send them again (at-least-once); batching keeps one commit per batch, not per POST.
const DELETE_BATCH: usize = 64;

/// The lane loop: loads outbox rows, sends due heads, schedules retries, until `stop` is set
/// and either the window is empty or `l.drain_until` has passed.
pub(crate) fn run(cx: LaneContext) {
    let agent = agent(&cx.config, cx.tls.clone());
    let group = &cx.plan.group;
    let lane = cx.lane;
    log::debug!(
        "sender-{lane}: lane {} of {} for endpoint(s) {}",
        cx.plan.index + 1,
        cx.config.delivery.senders,
        group.endpoints.join(", ")
    );
    // The share is taken of all endpoints, not of the group's: the lanes of all groups together
    // hold at most what the shared lanes held (the delivery module doc). With more than 64
    // endpoints it grows to 64 rows per endpoint.
    let share = (WINDOW / cx.config.endpoints.len().max(1)).max(SESSION_ROWS);
    let mut l = Lane {
        cx: &cx,
        group,
        lane,
        agent,
        queues: HashMap::new(),
        ready: VecDeque::new(),
        timers: BinaryHeap::new(),
        feeds: group.endpoints.iter().map(|e| (e.clone(), Feed::default())).collect(),
        share,
        window: share * group.endpoints.len(),
        in_memory: 0,
        read_pause_until: Instant::now(),
        write_pause_until: Instant::now(),
        delivered: Vec::with_capacity(DELETE_BATCH),
        held: Vec::new(),
        held_until_ms: i64::MAX,
        held_epoch: 0,
        drain_until: None,
    };
    loop {
        // Read new rows when there is nothing left to send (or little in memory): under load the
        // lane then reads the outbox in large batches instead of one query per commit.
        if l.more_on_disk() && (l.ready.is_empty() || l.in_memory < l.window / 8) {
            l.load();
        }
        l.promote_due();
        l.release_held();
        if let Some(deadline) = l.drain_until
            && (l.in_memory == 0 || Instant::now() >= deadline)
        {
            break;
        }
        if let Some(key) = l.ready.pop_front() {
            l.send_head(key);
            if l.delivered.len() >= DELETE_BATCH {
                l.flush();
            }
            continue;
        }
        // Outputs committed while the last POST was under way go out before the delivered ones
        // are written down: that commit would hold them back (at 100 msg/s, two clients' outputs
        // arrive together and the second waited for the first's POST and its commit). The write
        // comes at the next idle moment, or at DELETE_BATCH.
        if !l.delivered.is_empty() && cx.plan.woken() {
            l.open_mail();
            continue;
        }
        l.flush();
        let mut wait = l.next_due().unwrap_or(Duration::from_secs(3600));
        if !l.held.is_empty() {
            wait = wait.min(Duration::from_millis((l.held_until_ms - now_ms()).max(0) as u64));
        }
        if l.read_pause_until > Instant::now() {
            wait = wait.min(l.read_pause_until - Instant::now());
        }
        if !l.delivered.is_empty() {
            wait = wait.min(l.write_pause_until.saturating_duration_since(Instant::now()));
        }
        let wait = l.drain_until.map_or(wait, |d| wait.min(d.saturating_duration_since(Instant::now())));
        select! {
            recv(cx.plan.wake) -> _ => l.open_mail(),
            recv(cx.stop) -> d => {
                if l.drain_until.is_none() {
                    l.drain_until = Some(d.unwrap_or_else(|_| Instant::now()));
                }
            }
            default(wait) => {}
        }
    }
    // The last chance to write down what was delivered: not put off by a pause after a failure.
    l.write_pause_until = Instant::now();
    l.flush();
    cx.alive.store(false, Ordering::SeqCst);
    let _ = cx.done.send(());
    log::debug!("sender-{lane}: stopped with {} output(s) left for the next start", l.in_memory);
}

struct Lane<'a> {
    cx: &'a LaneContext,
    /// The endpoints this lane delivers for and their webhook URL's health.
    group: &'a Group,
    lane: usize,
    agent: ureq::Agent,
    queues: HashMap<SessionKey, Queue>,
    /// Sessions whose head is due, in the order they became due.
    ready: VecDeque<SessionKey>,
    /// Sessions whose head waits (a retry, a `sleep`), by due time.
    timers: BinaryHeap<Reverse<(i64, SessionKey)>>,
    /// The read cursor of each configured endpoint.
    feeds: HashMap<String, Feed>,
    /// Most rows of one endpoint in memory.
    share: usize,
    /// Most rows in memory: the shares of the group's endpoints.
    window: usize,
    in_memory: usize,
    /// After a failed read of the store, reading waits until then (instead of spinning).
    read_pause_until: Instant,
    /// After a failed write of delivered outputs, the next try waits until then.
    write_pause_until: Instant,
    /// Delivered outputs not yet removed from the store.
    delivered: Vec<i64>,
    /// Sessions whose head is due but waits for the down target (`Gate::Hold`).
    held: Vec<SessionKey>,
    /// They go back to `ready` at this time (the earliest hold's end)...
    held_until_ms: i64,
    /// ...or as soon as the target's epoch differs from this one.
    held_epoch: u64,
    /// Set at shutdown: deliver until the outbox is empty or this instant.
    drain_until: Option<Instant>,
}

/// The outputs of one session that are in memory.
#[derive(Default)]
struct Queue {
    rows: VecDeque<OutboxRow>,
    /// The head became a dead letter (this reason) but its record failed: it is recorded
    /// again when the session is next due, not sent.
    dying: Option<String>,
    /// More rows of this session, up to its feed's cursor, are on disk only: while set, newer
    /// rows are not admitted either, and the rest is read back when `rows` runs out.
    spilled: bool,
    /// The id of the last row that left `rows`.
    last_id: i64,
}

/// Where reading the outbox of one endpoint stands.
struct Feed {
    /// Every row of the endpoint up to this id has been read (kept in memory or spilled).
    loaded: i64,
    in_memory: usize,
    /// New rows may be on disk (woken, or the share was full).
    more: bool,
    /// Spilled sessions whose rows in memory are done, waiting for room in the share to be read
    /// back; served before new rows, so that they cannot be crowded out.
    waiting: VecDeque<SessionKey>,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed { loaded: 0, in_memory: 0, more: true, waiting: VecDeque::new() }
    }
}

/// What a lane does with the rows one commit added for one of its endpoints.
#[derive(Debug, PartialEq)]
enum Take {
    /// Keep the rows above the feed's cursor and move the cursor to the commit's last id.
    Rows,
    /// The next read of the outbox finds them (one is due already).
    Leave,
    /// Read the outbox: rows may have been added that this commit does not carry, or there is
    /// no room for them in memory.
    Read,
}

/// Decides `Take` for `n` rows of a commit that added the ids `(after, ..]`, for an endpoint
/// whose feed has read every row up to `loaded`, with `room` rows left in its share.
fn take(feed: &Feed, after: i64, n: usize, room: usize) -> Take {
    if feed.more || !feed.waiting.is_empty() {
        // A read is due (or spilled sessions come first): it finds these rows on disk.
        Take::Leave
    } else if feed.loaded < after || n > room {
        Take::Read
    } else {
        Take::Rows
    }
}

impl Lane<'_> {
    /// Takes what the writer left: the rows of its commits (no read of the outbox needed while
    /// the lane's cursors follow them), or a request to read the outbox.
    fn open_mail(&mut self) {
        let mail = self.cx.plan.take_mail();
        if mail.read || mail.batches.is_empty() {
            // Woken by another writer, the admin API or a probe's end: read as before.
            self.feeds.values_mut().for_each(|f| f.more = true);
        }
        for batch in mail.batches {
            self.take_commit(batch);
        }
    }

    fn take_commit(&mut self, batch: NewOutbox) {
        let NewOutbox { after, last, rows } = batch;
        let mut by_endpoint: HashMap<String, Vec<OutboxRow>> = HashMap::new();
        for row in rows {
            by_endpoint.entry(row.key.endpoint.clone()).or_default().push(row);
        }
        for name in &self.group.endpoints {
            let rows = by_endpoint.remove(name).unwrap_or_default();
            let feed = self.feeds.get_mut(name).expect("one feed per endpoint");
            let room = self.share.saturating_sub(feed.in_memory);
            match take(feed, after, rows.len(), room) {
                Take::Leave => {}
                Take::Read => feed.more = true,
                Take::Rows => {
                    let loaded = feed.loaded;
                    feed.loaded = loaded.max(last);
                    for row in rows.into_iter().filter(|r| r.id > loaded) {
                        self.admit(row);
                    }
                }
            }
        }
    }

    /// Removes delivered outputs from the store. When that fails (a full disk), they are kept
    /// and written again a second later: dropped, they would stay queued on disk (shown as
    /// waiting, counted in the queue) and go out a second time after the next start.
    fn flush(&mut self) {
        if self.delivered.is_empty() || Instant::now() < self.write_pause_until {
            return;
        }
        match self.cx.store.delivered(&self.delivered) {
            Ok(()) => self.delivered.clear(),
            Err(e) => {
                log::error!(
                    "sender-{}: cannot record {} delivered output(s): {e}; trying again in 1s",
                    self.lane,
                    self.delivered.len()
                );
                self.write_pause_until = Instant::now() + Duration::from_secs(1);
            }
        }
    }

    fn more_on_disk(&self) -> bool {
        Instant::now() >= self.read_pause_until
            && self.feeds.values().any(|f| (f.more || !f.waiting.is_empty()) && f.in_memory < self.share)
    }

    fn read_failed(&mut self, e: &StoreError) {
        log::error!("sender-{}: cannot read the outbox: {e}; trying again in 1s", self.lane);
        self.read_pause_until = Instant::now() + Duration::from_secs(1);
    }

    /// Reads outbox rows of every endpoint up to its share of the window: first the rest of
    /// spilled sessions, then new rows, until a read comes back short or the share is full (rows
    /// of sessions at their `SESSION_ROWS` stay on disk, so one read may take in few).
    fn load(&mut self) {
        let shared = self.cx;
        let upto = match shared.store.outbox_max_id() {
            Ok(max) => max,
            Err(e) => return self.read_failed(&e),
        };
        let (index, lanes) = (shared.plan.index, shared.config.delivery.senders);
        for name in &self.group.endpoints {
            if !self.serve_waiting(name) {
                return;
            }
            loop {
                let feed = self.feeds.get_mut(name).expect("one feed per endpoint");
                let room = self.share.saturating_sub(feed.in_memory);
                if !feed.more || room == 0 || !feed.waiting.is_empty() {
                    break;
                }
                let rows = match shared.store.outbox_after(index, lanes, name, feed.loaded, upto, room) {
                    Ok(rows) => rows,
                    Err(e) => return self.read_failed(&e),
                };
                // A short read saw every row of the endpoint up to `upto`.
                (feed.loaded, feed.more) = match rows.last() {
                    Some(last) if rows.len() == room => (last.id, true),
                    _ => (feed.loaded.max(upto), false),
                };
                for row in rows {
                    self.admit(row);
                }
            }
        }
    }

    /// Takes a row read from the outbox into its session's queue, or leaves it on disk when the
    /// session already holds `SESSION_ROWS`.
    fn admit(&mut self, row: OutboxRow) {
        let q = self.queues.entry(row.key.clone()).or_default();
        if q.spilled || q.rows.len() >= SESSION_ROWS {
            q.spilled = true;
            return;
        }
        let feed = self.feeds.get_mut(&row.key.endpoint).expect("one feed per endpoint");
        feed.in_memory += 1;
        debug_assert!(feed.in_memory <= self.share, "endpoint {} is over its share", row.key.endpoint);
        self.in_memory += 1;
        q.rows.push_back(row);
        if q.rows.len() == 1 {
            let key = q.rows[0].key.clone();
            self.schedule(key);
        }
    }

    /// The memory bound: no endpoint holds more than its share.
    fn check_bound(&self, endpoint: &str) {
        debug_assert!(
            self.feeds[endpoint].in_memory <= self.share,
            "endpoint {endpoint} holds {} rows, over its share of {}",
            self.feeds[endpoint].in_memory,
            self.share
        );
    }

    /// Reads back spilled sessions of `endpoint` while its share has room; false when the store
    /// could not be read (they stay waiting).
    fn serve_waiting(&mut self, endpoint: &str) -> bool {
        loop {
            let feed = &self.feeds[endpoint];
            let room = self.share.saturating_sub(feed.in_memory);
            let Some(key) = feed.waiting.front().filter(|_| room > 0).cloned() else { return true };
            let limit = room.min(SESSION_ROWS);
            let loaded = feed.loaded;
            let q = self.queues.get_mut(&key).expect("a spilled session keeps its queue");
            let rows = match self.cx.store.outbox_of_session(&key, q.last_id, loaded, limit) {
                Ok(rows) => rows,
                Err(e) => {
                    self.read_failed(&e);
                    return false;
                }
            };
            // A full read may have left more on disk; a short one took in everything up to the
            // cursor, and what comes later arrives through the feed.
            q.spilled = rows.len() == limit;
            let n = rows.len();
            q.rows.extend(rows);
            self.in_memory += n;
            let feed = self.feeds.get_mut(endpoint).expect("one feed per endpoint");
            feed.in_memory += n;
            feed.waiting.pop_front();
            self.check_bound(endpoint);
            self.after_change(key);
        }
    }

    /// Puts a session whose head changed into `ready` or `timers`.
    fn schedule(&mut self, key: SessionKey) {
        let due = self.queues[&key].rows[0].not_before_ms;
        if due <= now_ms() {
            self.ready.push_back(key);
        } else {
            self.timers.push(Reverse((due, key)));
        }
    }

    fn promote_due(&mut self) {
        let now = now_ms();
        while self.timers.peek().is_some_and(|Reverse((due, _))| *due <= now) {
            let Reverse((_, key)) = self.timers.pop().expect("peeked");
            self.ready.push_back(key);
        }
    }

    /// Puts held sessions back into `ready` once their hold may be over; they ask the target
    /// again (one of them may become the probe, the others are held anew).
    fn release_held(&mut self) {
        if self.held.is_empty() || (now_ms() < self.held_until_ms && self.group.target.epoch() == self.held_epoch) {
            return;
        }
        self.ready.extend(self.held.drain(..));
        self.held_until_ms = i64::MAX;
    }

    fn hold(&mut self, key: SessionKey, until_ms: i64, epoch: u64) {
        if self.held.is_empty() {
            self.held_epoch = epoch;
        }
        // A hold under a newer epoch than `held_epoch` releases them all at the next turn of the
        // loop, and they are held again under the current one.
        self.held_until_ms = self.held_until_ms.min(until_ms);
        self.held.push(key);
    }

    fn next_due(&self) -> Option<Duration> {
        let Reverse((due, _)) = self.timers.peek()?;
        Some(Duration::from_millis((due - now_ms()).max(0) as u64))
    }

    /// Sends the head output of `key` once and acts on the outcome.
    fn send_head(&mut self, key: SessionKey) {
        // A dead letter whose record failed: record it again, never send it again.
        if let Some(reason) = self.queues.get_mut(&key).and_then(|q| q.dying.take()) {
            return self.finish(key, Err(reason));
        }
        let row = &self.queues[&key].rows[0];
        // Outputs of endpoints no longer configured were made dead letters at start-up.
        let ep = self.cx.config.endpoint_by_name(&key.endpoint).expect("feeds read configured endpoints only");
        let probe = match self.group.target.gate(now_ms()) {
            Gate::Go => false,
            Gate::Probe => true,
            // The target is down and this is not the probe: wait for it with the others.
            Gate::Hold { until_ms, epoch } => return self.hold(key, until_ms, epoch),
        };
        let started = Instant::now();
        // While draining, an attempt may not outlast the drain (delivery.drainSeconds).
        let limit = self.drain_until.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        let tried = attempt(&self.agent, ep, row, now_ms() / 1000, limit);
        let attempts = row.attempts + 1;
        super::history::note(self.cx, row, attempts, &tried, started.elapsed());
        let outcome = tried.outcome;
        log::debug!("sender-{}: output {} seq {} attempt {attempts}: {outcome:?}", self.lane, row.id, row.seq);
        self.group.target.record(probe, &outcome, now_ms());
        match outcome {
            Outcome::Delivered => {
                self.cx.metrics.delivered(started.elapsed());
                self.finish(key, Ok(()))
            }
            Outcome::Final(e) => {
                log::warn!("endpoint {}: output refused by the webhook ({e}); kept as a dead letter", ep.name);
                self.finish(key, Err(e))
            }
            Outcome::Retry(e, after) => self.retry(key, attempts, e, after),
        }
    }

    fn retry(&mut self, key: SessionKey, attempts: i64, error: String, after: Option<Duration>) {
        let Some(wait) = retry_wait(&self.cx.config.delivery.retry_schedule, attempts, after) else {
            log::warn!(
                "endpoint {}: output undeliverable after {attempts} attempts ({error}); kept as a dead letter",
                key.endpoint
            );
            return self.finish(key, Err(error));
        };
        let due = now_ms() + wait.as_millis() as i64;
        // At info, so that a failing webhook shows in the journal before its first dead letter
        // (repeated lines are folded by the logger).
        log::info!("endpoint {}: delivery failed ({error}); retrying in {wait:?}", key.endpoint);
        self.cx.metrics.retried();
        let row = self.queues.get_mut(&key).and_then(|q| q.rows.front_mut()).expect("the head is being sent");
        row.attempts = attempts;
        row.not_before_ms = due;
        if let Err(e) = self.cx.store.attempt_failed(row.id, attempts, due, &error) {
            log::error!("sender-{}: cannot record a failed attempt: {e}", self.lane);
        }
        self.timers.push(Reverse((due, key)));
    }

    /// The head of `key` is done: delivered (`Ok`) or a dead letter (`Err`).
    fn finish(&mut self, key: SessionKey, result: Result<(), String>) {
        let q = self.queues.get_mut(&key).expect("the head is being sent");
        if let Err(reason) = &result {
            let head = q.rows.front().expect("the head is being sent");
            if let Err(e) = self.cx.store.dead(head.id, head.attempts + 1, reason, now_ms()) {
                // Not a dead letter until it is one on disk: the head stays (the session's next
                // output waits behind it, as http-api.md has it) and its record is tried again.
                log::error!("sender-{}: cannot record dead letter {}: {e}; trying again in 1s", self.lane, head.id);
                q.dying = result.err();
                self.timers.push(Reverse((now_ms() + 1000, key)));
                return;
            }
            self.cx.metrics.dead();
        }
        let row = q.rows.pop_front().expect("the head is being sent");
        q.last_id = row.id;
        if result.is_ok() {
            self.delivered.push(row.id);
        }
        self.in_memory -= 1;
        let feed = self.feeds.get_mut(&key.endpoint).expect("one feed per endpoint");
        feed.in_memory -= 1;
        if self.queues[&key].rows.is_empty() && self.queues[&key].spilled {
            feed.waiting.push_back(key.clone());
            self.serve_waiting(&key.endpoint);
            return;
        }
        self.after_change(key);
    }

    /// Forgets a session with nothing left in memory or on disk, or schedules its new head.
    fn after_change(&mut self, key: SessionKey) {
        let q = &self.queues[&key];
        if q.rows.is_empty() && !q.spilled {
            self.queues.remove(&key);
        } else if !q.rows.is_empty() {
            self.schedule(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_evenly_used_even_when_ids_look_alike() {
        for lanes in [2u32, 4, 8] {
            let mut count = vec![0; lanes as usize];
            for k in 0..400 {
                let key = SessionKey { endpoint: "main".into(), user_id: format!("u{k}"), session_id: format!("s{k}") };
                count[(key.lane_hash() % lanes) as usize] += 1;
            }
            let (min, max) = (count.iter().min().unwrap(), count.iter().max().unwrap());
            assert!(*min as f64 > 0.6 * 400.0 / f64::from(lanes), "{lanes} lanes: {count:?}");
            assert!(*max as f64 <= 1.6 * 400.0 / f64::from(lanes), "{lanes} lanes: {count:?}");
        }
    }

    #[test]
    fn a_commits_rows_are_taken_only_when_the_cursor_has_seen_everything_before_them() {
        let caught_up = Feed { loaded: 100, in_memory: 0, more: false, waiting: VecDeque::new() };
        // The commit added the ids after 100: nothing can lie between the cursor and its rows.
        assert_eq!(take(&caught_up, 100, 3, 10), Take::Rows);
        // The lane read past the commit's start already (a read after the commit): the rows
        // above its cursor are taken, the rest it has.
        assert_eq!(take(&caught_up, 90, 3, 10), Take::Rows);
        // Something else added rows 101..=105 (a replay): read them all, in order.
        assert_eq!(take(&caught_up, 105, 3, 10), Take::Read);
        // No room for them in the endpoint's share: they wait on disk.
        assert_eq!(take(&caught_up, 100, 11, 10), Take::Read);
        // A read is due anyway, or spilled sessions come first: it finds them on disk.
        let reading = Feed { more: true, ..Feed::default() };
        assert_eq!(take(&reading, 0, 3, 10), Take::Leave);
        let key = SessionKey { endpoint: "e".into(), user_id: "u".into(), session_id: "s".into() };
        let spilled = Feed { loaded: 100, in_memory: 0, more: false, waiting: VecDeque::from([key]) };
        assert_eq!(take(&spilled, 100, 3, 10), Take::Leave);
    }
}
