//! Delivery: the outbox → the customer's webhook. `lane.rs` is one sender thread (its window of
//! outbox rows, per-session order, retries by due time); `target.rs` is the health of one webhook
//! URL (down, probing), shared by the lanes that send to it; `attempt.rs` is one POST and how its
//! answer is classified; `history.rs` notes each attempt for the console's delivery log and
//! overview; the signatures are `crypto.rs`'s.
//!
//! # Lanes are grouped by webhook URL
//!
//! A POST is a blocking call that may take up to the delivery timeouts, and a lane sends one at
//! a time. So that a slow or hanging webhook can only hold up its own outputs, every distinct
//! `webhook.url` of the config gets its own group of `delivery.senders` lanes, and an endpoint's
//! outputs go only through the lanes of its URL's group (a session through lane
//! `lane_hash % senders` of the group, so its outputs keep one lane and their order). Endpoints
//! that share a URL share its lanes: when that receiver is slow or down, it is so for all of them.
//! Isolation holds from the first attempt on, before anything is known about the URL.
//!
//! The thread count is fixed at start: (distinct webhook URLs) × `delivery.senders`; it does not
//! grow with load or failures. The memory bound stays what it was with shared lanes: each
//! endpoint's share of the window is `WINDOW / endpoints` (at least `SESSION_ROWS`), and a lane's
//! window is the sum of its endpoints' shares, so lane number `i` of all groups together holds at
//! most what lane `i` held before.
//!
//! "Down" is known once per URL, for all its lanes (`target::Target`): the consecutive failures
//! of every lane count together, and once the URL counts as down, one probe at a time is sent for
//! the whole group; the probe's end wakes the group's lanes.
//!
//! This module holds the handles other stages use: `Wake` (the writer hands a lane the rows it
//! just committed; the admin API and others tell a lane to read the outbox), `plan` (the lanes
//! to start) and `LaneContext` (what a lane thread is given).

mod attempt;
mod claimed;
mod history;
mod lane;
mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};

pub(crate) use target::DOWN_AFTER;

use crate::config::Config;
use crate::domain::{NewOutbox, OutboxRow, SessionKey};
use crate::ops::metrics::Metrics;
use crate::store::Store;
use target::Target;

/// Wakes the sender lanes; held by the writer, the workers and the admin API.
#[derive(Clone)]
pub(crate) struct Wake {
    /// Endpoint name → its group's lanes (indexes into `all`), in lane order.
    by_endpoint: Arc<HashMap<String, Arc<[usize]>>>,
    /// Every lane's wake-up channel and mailbox.
    all: Arc<[LaneDoor]>,
}

/// A lane's wake-up channel and its mailbox.
type LaneDoor = (Sender<()>, Arc<Mutex<Mail>>);

/// Most commits a lane's mailbox holds; past it the lane reads the outbox instead.
const MAIL_BATCHES: usize = 64;

/// What was left for a lane since it last looked.
#[derive(Default)]
pub(crate) struct Mail {
    /// The commits of the writer since, each with this lane's new rows (maybe none).
    batches: Vec<NewOutbox>,
    /// New rows may be in the outbox that no batch here carries (another writer, an overflow):
    /// read it.
    read: bool,
}

impl Wake {
    /// Tells the lane of `key`'s session that new rows are in the outbox.
    pub(crate) fn session(&self, key: &SessionKey) {
        let Some(lanes) = self.by_endpoint.get(&key.endpoint) else {
            // Not a configured endpoint: no lane reads its rows (they became dead letters).
            return;
        };
        self.read(lanes[key.lane_hash() as usize % lanes.len()]);
    }

    /// Wakes every lane (a dead letter replayed).
    pub(crate) fn all(&self) {
        for lane in 0..self.all.len() {
            self.read(lane);
        }
    }

    fn read(&self, lane: usize) {
        let (wake, mail) = &self.all[lane];
        mail.lock().unwrap_or_else(|p| p.into_inner()).read = true;
        // A full channel means a wake-up is already pending: nothing to add.
        let _ = wake.try_send(());
    }

    /// Hands a commit's new outbox rows to their lanes (every lane learns of the commit, so
    /// that its read cursor can pass it), waking those that got rows.
    pub(crate) fn pushed(&self, new: NewOutbox) {
        let mut rows_of: Vec<Vec<OutboxRow>> = self.all.iter().map(|_| Vec::new()).collect();
        for row in new.rows {
            if let Some(lanes) = self.by_endpoint.get(&row.key.endpoint) {
                rows_of[lanes[row.key.lane_hash() as usize % lanes.len()]].push(row);
            }
        }
        for ((wake, mail), rows) in self.all.iter().zip(rows_of) {
            let got = !rows.is_empty();
            {
                let mut m = mail.lock().unwrap_or_else(|p| p.into_inner());
                if m.batches.len() >= MAIL_BATCHES {
                    m.batches.clear();
                    m.read = true;
                }
                m.batches.push(NewOutbox { after: new.after, last: new.last, rows });
            }
            if got {
                let _ = wake.try_send(());
            }
        }
    }
}

/// The lanes of one webhook URL.
pub(crate) struct Group {
    /// The endpoints (names, in config order) whose webhook is this URL.
    endpoints: Vec<String>,
    /// The URL's health, shared by the group's lanes.
    target: Target,
}

/// One lane to start: its group, its number in the group, its wake-up channel.
pub(crate) struct LanePlan {
    group: Arc<Group>,
    /// Of `delivery.senders`: the lane takes the sessions whose `lane_hash % senders` is this.
    index: usize,
    wake: Receiver<()>,
    /// What the writer left for this lane (`Wake::pushed`).
    mail: Arc<Mutex<Mail>>,
}

impl LanePlan {
    /// Whether the lane was woken since it last looked (taking the wake-up).
    pub(crate) fn woken(&self) -> bool {
        self.wake.try_recv().is_ok()
    }

    /// Takes what was left in the mailbox.
    fn take_mail(&self) -> Mail {
        std::mem::take(&mut *self.mail.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Lays out the lanes: one group per distinct webhook URL, in config order, `delivery.senders`
/// lanes each. Returns the wake handle and the lanes to start, numbered in that order.
pub(crate) fn plan(config: &Config) -> (Wake, Vec<LanePlan>) {
    let senders = config.delivery.senders;
    let mut urls: Vec<(&str, Vec<String>)> = Vec::new();
    for ep in &config.endpoints {
        match urls.iter_mut().find(|(url, _)| *url == ep.webhook.url) {
            Some((_, names)) => names.push(ep.name.clone()),
            None => urls.push((&ep.webhook.url, vec![ep.name.clone()])),
        }
    }
    let mut by_endpoint = HashMap::new();
    let mut all = Vec::new();
    let mut plans = Vec::new();
    for (_, endpoints) in urls {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..senders).map(|_| bounded(1)).unzip();
        let tx: Arc<[Sender<()>]> = tx.into();
        let lanes: Arc<[usize]> = (all.len()..all.len() + senders).collect();
        for name in &endpoints {
            by_endpoint.insert(name.clone(), lanes.clone());
        }
        let mails: Vec<Arc<Mutex<Mail>>> = (0..senders).map(|_| Arc::default()).collect();
        all.extend(tx.iter().cloned().zip(mails.iter().cloned()));
        let group = Arc::new(Group { endpoints, target: Target::new(&config.delivery, tx) });
        plans.extend(rx.into_iter().zip(mails).enumerate().map(|(index, (wake, mail))| LanePlan {
            group: group.clone(),
            index,
            wake,
            mail,
        }));
    }
    (Wake { by_endpoint: Arc::new(by_endpoint), all: all.into() }, plans)
}

/// A sender lane's loop: over the outbox in memory (one process), or over claims (replicas).
pub(crate) fn run(cx: LaneContext) {
    if cx.store.claims().is_some() { claimed::run(cx) } else { lane::run(cx) }
}

/// What a sender lane thread is given by the wiring.
pub(crate) struct LaneContext {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Outbound TLS settings (public roots plus `delivery.caFile`).
    pub tls: ureq::tls::TlsConfig,
    /// This lane's number among all lanes (its thread is `sender-<lane>`).
    pub lane: usize,
    /// Its group and place in it, from `plan`.
    pub plan: LanePlan,
    /// Receives the drain deadline at shutdown.
    pub stop: Receiver<Instant>,
    /// Told once the lane has drained and is about to end.
    pub done: Sender<()>,
    /// Cleared when the lane's thread ends (`/readyz`).
    pub alive: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(urls: &[(&str, &str)], senders: usize) -> Config {
        let endpoints: Vec<String> = urls
            .iter()
            .map(|(name, url)| {
                format!(
                    r#"{{"name": "{name}", "urlToken": "token-of-{name}", "flow": "f.json", "webhook": {{"url": "{url}"}}}}"#
                )
            })
            .collect();
        let text = format!(r#"{{"delivery": {{"senders": {senders}}}, "endpoints": [{}]}}"#, endpoints.join(","));
        crate::config::parse(&text, std::path::Path::new("/etc/hookflow/hookflow.json"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_webhook_url_gets_its_own_lanes_and_endpoints_sharing_one_share_them() {
        let c = config(&[("a", "http://a.test/hook"), ("b", "http://b.test/hook"), ("c", "http://a.test/hook")], 3);
        let (wake, plans) = plan(&c);
        assert_eq!(plans.len(), 2 * 3, "two URLs × three senders");
        let groups: Vec<(Vec<String>, usize)> = plans.iter().map(|p| (p.group.endpoints.clone(), p.index)).collect();
        let ac = vec!["a".to_owned(), "c".to_owned()];
        let b = vec!["b".to_owned()];
        assert_eq!(groups, [(ac.clone(), 0), (ac.clone(), 1), (ac, 2), (b.clone(), 0), (b.clone(), 1), (b, 2)]);

        // A session's wake-up reaches exactly the lane of its group that reads its rows.
        for endpoint in ["a", "b", "c"] {
            for s in 0..20 {
                let key = SessionKey { endpoint: endpoint.into(), user_id: "u".into(), session_id: format!("s{s}") };
                wake.session(&key);
                let woken: Vec<usize> = (0..plans.len()).filter(|&i| plans[i].wake.try_recv().is_ok()).collect();
                let want = plans
                    .iter()
                    .position(|p| p.group.endpoints.contains(&key.endpoint) && p.index == key.lane_hash() as usize % 3)
                    .expect("a lane for every configured endpoint");
                assert_eq!(woken, [want], "{key:?}");
            }
        }
        wake.all();
        assert!(plans.iter().all(|p| p.wake.try_recv().is_ok()), "all() wakes every lane");
    }

    fn row(endpoint: &str, session: usize, id: i64) -> OutboxRow {
        let key = SessionKey { endpoint: endpoint.into(), user_id: "u".into(), session_id: format!("s{session}") };
        OutboxRow { id, key, seq: 1, body: "{}".into(), not_before_ms: 0, attempts: 0 }
    }

    #[test]
    fn a_commits_rows_reach_their_lanes_and_every_lane_learns_of_the_commit() {
        let c = config(&[("a", "http://a.test/hook"), ("b", "http://b.test/hook")], 2);
        let (wake, plans) = plan(&c);
        let rows: Vec<OutboxRow> = (0..8).map(|s| row("a", s, 11 + s as i64)).collect();
        wake.pushed(NewOutbox { after: 10, last: 18, rows: rows.clone() });
        for p in &plans {
            let woken = p.wake.try_recv().is_ok();
            let mail = p.take_mail();
            assert!(!mail.read);
            let [batch] = &mail.batches[..] else { panic!("one commit, one batch: {}", mail.batches.len()) };
            assert_eq!((batch.after, batch.last), (10, 18), "every lane learns where the commit stands");
            let mine: Vec<i64> = rows
                .iter()
                .filter(|r| p.group.endpoints.contains(&r.key.endpoint) && r.key.lane_hash() as usize % 2 == p.index)
                .map(|r| r.id)
                .collect();
            assert_eq!(
                batch.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
                mine,
                "lane {} of {:?}",
                p.index,
                p.group.endpoints
            );
            assert_eq!(woken, !mine.is_empty(), "only lanes that got rows are woken");
        }
        // A mailbox nobody empties is bounded: past MAIL_BATCHES commits its lane reads instead.
        for i in 0..=MAIL_BATCHES as i64 {
            wake.pushed(NewOutbox { after: 18 + i, last: 19 + i, rows: vec![row("b", 0, 19 + i)] });
        }
        let mail = plans
            .iter()
            .find(|p| p.group.endpoints == ["b"] && p.index == row("b", 0, 0).key.lane_hash() as usize % 2)
            .unwrap()
            .take_mail();
        assert!(mail.read && mail.batches.len() == 1, "{} batches kept", mail.batches.len());
        // Any other wake-up asks for a read.
        wake.session(&row("a", 0, 0).key);
        assert!(plans.iter().any(|p| p.take_mail().read));
    }
}
