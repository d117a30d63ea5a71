//! The health of one webhook URL, shared by every lane of its group (see the module doc of
//! `delivery`): whether it counts as down, when it may next be probed, and whether a probe is in
//! flight.
//!
//! A target that keeps failing is not hammered: after `DOWN_AFTER` consecutive failed attempts
//! (of any lane, any session) it counts as down, and every lane holds its outputs for it until the
//! next probe time (the retry schedule, stepped by the consecutive failures). Then one lane sends
//! the first due output as the probe while the others keep holding theirs; when the probe ends the
//! group's lanes are woken: after a success they all go on, after a failure they hold until the
//! next probe time. A single failure holds back only its own session.
//!
//! The target also knows how long its POSTs take of late, for the replicas' lanes, which claim
//! as many outputs at once as they can send in a short time (`claimed.rs`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::attempt::Outcome;
use crate::config::Delivery;

/// Consecutive failed attempts (any lane, any session) after which a webhook URL counts as down.
pub(crate) const DOWN_AFTER: usize = 3;

/// What a lane may do with an output for the target now.
#[derive(Debug, PartialEq)]
pub(super) enum Gate {
    /// Send it.
    Go,
    /// Send it as the one probe of a down target; report its end with `probe: true`.
    Probe,
    /// Hold it until `until_ms`, or sooner if `epoch` changes (a probe ended, the target answered).
    Hold { until_ms: i64, epoch: u64 },
}

pub(super) struct Target {
    state: Mutex<State>,
    /// Wake channels of the group's lanes, told when holding outputs may end early.
    lanes: Arc<[Sender<()>]>,
    /// Retry waits, by consecutive failures.
    schedule: Vec<Duration>,
    /// Longer than any attempt can take: a probe in flight for longer is taken to be lost (its
    /// lane died), so that the group is not held for good.
    probe_stale_ms: i64,
}

#[derive(Default)]
struct State {
    failures: usize,
    next_probe_ms: i64,
    /// Start of the probe in flight, if one is.
    probe_since_ms: Option<i64>,
    /// Changes when the target's state changes in a way that may end a hold early.
    epoch: u64,
    /// A moving average of the POSTs' durations, in seconds; none before the first.
    post_s: Option<f64>,
}

impl Target {
    pub(super) fn new(delivery: &Delivery, lanes: Arc<[Sender<()>]>) -> Target {
        // Four phases of `timeoutMs` at most (attempt.rs), plus connecting, plus a margin.
        let worst = delivery.connect_timeout + 4 * delivery.timeout + Duration::from_secs(1);
        Target {
            state: Mutex::default(),
            lanes,
            schedule: delivery.retry_schedule.clone(),
            probe_stale_ms: worst.as_millis().min(i64::MAX as u128) as i64,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a few numbers updated together: a lane that panicked cannot have left it
        // half written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an output for the target may be sent now.
    pub(super) fn gate(&self, now_ms: i64) -> Gate {
        let mut s = self.state();
        if s.failures < DOWN_AFTER {
            return Gate::Go;
        }
        if let Some(since) = s.probe_since_ms
            && now_ms < since + self.probe_stale_ms
        {
            return Gate::Hold { until_ms: since + self.probe_stale_ms, epoch: s.epoch };
        }
        if s.next_probe_ms > now_ms {
            return Gate::Hold { until_ms: s.next_probe_ms, epoch: s.epoch };
        }
        s.probe_since_ms = Some(now_ms);
        Gate::Probe
    }

    /// Whether the target counts as up (not down).
    pub(super) fn is_up(&self) -> bool {
        self.state().failures < DOWN_AFTER
    }

    /// The current epoch (see `Gate::Hold`).
    pub(super) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Notes how long a POST to the target took, whatever its outcome.
    pub(super) fn note_post(&self, took: Duration) {
        let took = took.as_secs_f64();
        let mut s = self.state();
        // Each POST weighs a fifth: a webhook that turns slow is noticed within a few POSTs.
        s.post_s = Some(s.post_s.map_or(took, |avg| avg * 0.8 + took * 0.2));
    }

    /// How many of the target's outputs one lane should claim at once: as many as its POSTs of
    /// late send in `time`, from 1 to `most` (1 before any POST was timed).
    pub(super) fn claim_size(&self, time: Duration, most: usize) -> usize {
        match self.state().post_s {
            None => 1,
            Some(s) => ((time.as_secs_f64() / s.max(1e-6)).round() as usize).clamp(1, most),
        }
    }

    /// Wakes the group's lanes (outputs they may take were given back).
    pub(super) fn wake_lanes(&self) {
        for lane in self.lanes.iter() {
            let _ = lane.try_send(());
        }
    }

    /// Records how an attempt ended (`probe`: it was sent after `Gate::Probe`); a failing target
    /// is next probed at the retry pace. Wakes the group's lanes when held outputs may go now;
    /// true when the target was down and answers again.
    pub(super) fn record(&self, probe: bool, outcome: &Outcome, now_ms: i64) -> bool {
        let mut s = self.state();
        let was_down = s.failures >= DOWN_AFTER;
        if probe {
            s.probe_since_ms = None;
        }
        match outcome {
            Outcome::Retry(_, after) => {
                s.failures += 1;
                let step = self.schedule[(s.failures - 1).min(self.schedule.len() - 1)];
                let wait = after.map_or(step, |a| a.max(step));
                s.next_probe_ms = now_ms + wait.as_millis().min(i64::MAX as u128) as i64;
            }
            // Any answer, even a refusal, shows that the target is up.
            Outcome::Delivered | Outcome::Final(_) => s.failures = 0,
        }
        let back = was_down && s.failures == 0;
        let changed = probe || back;
        if changed {
            s.epoch += 1;
        }
        drop(s);
        if changed {
            self.wake_lanes();
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(lanes: usize) -> (Target, Vec<crossbeam_channel::Receiver<()>>) {
        let delivery = Delivery {
            timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(500),
            retry_schedule: vec![Duration::from_secs(2), Duration::from_secs(5)],
            drain: Duration::ZERO,
            senders: lanes,
            ca_file: None,
        };
        let (tx, rx): (Vec<_>, Vec<_>) = (0..lanes).map(|_| crossbeam_channel::bounded(1)).unzip();
        (Target::new(&delivery, tx.into()), rx)
    }

    fn fail() -> Outcome {
        Outcome::Retry("timed out".into(), None)
    }

    #[test]
    fn lanes_claim_what_the_target_answers_in_the_claim_time() {
        let (t, _rx) = target(2);
        let time = Duration::from_millis(100);
        assert_eq!(t.claim_size(time, 64), 1, "nothing known yet: one output");
        t.note_post(Duration::from_micros(300));
        assert_eq!(t.claim_size(time, 64), 64, "a fast webhook: the most");
        t.note_post(Duration::from_millis(1500));
        assert_eq!(t.claim_size(time, 64), 1, "one slow POST weighs enough to claim one at a time");
        for _ in 0..40 {
            t.note_post(Duration::from_millis(10));
        }
        assert_eq!(t.claim_size(time, 64), 10, "10 ms POSTs: ten in 100 ms");
    }

    #[test]
    fn failures_of_all_lanes_count_together_and_one_probe_at_a_time_goes_out() {
        let (t, wakes) = target(4);
        // Three lanes fail once each: together that is down, for every lane.
        for _ in 0..DOWN_AFTER {
            assert_eq!(t.gate(0), Gate::Go);
            t.record(false, &fail(), 0);
        }
        let epoch = t.epoch();
        // Probed at the schedule's step for the third failure (the last, 5 s).
        assert_eq!(t.gate(1_000), Gate::Hold { until_ms: 5_000, epoch });
        assert_eq!(t.gate(5_000), Gate::Probe);
        // While the probe is in flight, no other lane sends: they hold until it ends (or is lost:
        // 500 + 4 × 1000 + 1000 ms later).
        assert_eq!(t.gate(5_001), Gate::Hold { until_ms: 10_500, epoch });
        assert!(wakes.iter().all(|w| w.try_recv().is_err()), "nothing to wake for yet");
        // The probe fails: a new epoch wakes every lane, which holds until the next probe.
        t.record(true, &fail(), 6_000);
        assert!(wakes.iter().all(|w| w.try_recv().is_ok()), "every lane is woken");
        assert_eq!(t.gate(6_001), Gate::Hold { until_ms: 11_000, epoch: epoch + 1 });
        // The next probe succeeds: every lane goes on.
        assert_eq!(t.gate(11_000), Gate::Probe);
        t.record(true, &Outcome::Delivered, 11_100);
        assert!(wakes.iter().all(|w| w.try_recv().is_ok()));
        assert_eq!(t.gate(11_101), Gate::Go);
    }

    #[test]
    fn an_answer_from_an_attempt_sent_before_the_outage_was_known_ends_it() {
        let (t, wakes) = target(2);
        for _ in 0..DOWN_AFTER {
            t.record(false, &fail(), 0);
        }
        assert!(matches!(t.gate(1), Gate::Hold { .. }));
        // A refusal (4xx) is an answer too.
        t.record(false, &Outcome::Final("HTTP 400".into()), 2);
        assert!(wakes.iter().all(|w| w.try_recv().is_ok()));
        assert_eq!(t.gate(3), Gate::Go);
    }

    #[test]
    fn a_lost_probe_does_not_hold_the_target_for_good() {
        let (t, _wakes) = target(2);
        for _ in 0..DOWN_AFTER {
            t.record(false, &fail(), 0);
        }
        assert_eq!(t.gate(5_000), Gate::Probe);
        // Its lane never reports back; once an attempt cannot still be running, another probes.
        assert!(matches!(t.gate(10_499), Gate::Hold { .. }));
        assert_eq!(t.gate(10_500), Gate::Probe);
    }

    #[test]
    fn retry_after_pushes_the_next_probe_further() {
        let (t, _wakes) = target(1);
        for _ in 0..DOWN_AFTER - 1 {
            t.record(false, &fail(), 0);
        }
        t.record(false, &Outcome::Retry("HTTP 503".into(), Some(Duration::from_secs(60))), 0);
        assert!(matches!(t.gate(1), Gate::Hold { until_ms: 60_000, .. }));
    }
}
