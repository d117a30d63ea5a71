//! One delivery attempt: the POST of one output with its headers (Seq, signature, Basic auth,
//! the endpoint's own), and the class of its answer (http-api.md §2).

use std::time::Duration;

use base64::Engine;

use crate::config::{Config, Endpoint};
use crate::crypto;
use crate::domain::OutboxRow;

/// Longest body read back from a webhook answer (it is only logged).
const MAX_ANSWER_BYTES: u64 = 16 * 1024;

/// An attempt, as the delivery log notes it (`history.rs`).
#[derive(Debug)]
pub(crate) struct Attempted {
    pub outcome: Outcome,
    /// The status, when the webhook answered.
    pub status: Option<u16>,
    /// The first bytes of the answer (lossy UTF-8), or the transport error.
    pub answer: String,
}

/// Bytes of an answer kept for the delivery log (the store keeps at most this many too).
const NOTED_ANSWER_BYTES: usize = 256;

/// How an attempt ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Delivered,
    /// Try again, not before the given wait (from `Retry-After`) if any.
    Retry(String, Option<Duration>),
    /// A 4xx other than 408/429: the receiver refuses it; no retry.
    Final(String),
}

/// The one HTTP client of a lane: timeouts set, redirects not followed, statuses as values.
///
/// The timeouts are per phase (connect; send; wait for the answer; read it) rather than one
/// global bound: with a global timeout ureq resolves the host on a new thread for every request
/// so that the lookup can be timed out too, which cost one thread start per delivery (measured
/// by `make bench`). A delivery can so take up to four times `delivery.timeoutMs` in the worst
/// case of a server that dribbles.
pub(super) fn agent(config: &Config, tls: ureq::tls::TlsConfig) -> ureq::Agent {
    let d = &config.delivery;
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(d.connect_timeout))
        .timeout_send_request(Some(d.timeout))
        .timeout_send_body(Some(d.timeout))
        .timeout_recv_response(Some(d.timeout))
        .timeout_recv_body(Some(d.timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("hookflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One POST of one output; `now_s` is the Unix time for the signature; `limit` bounds the whole
/// attempt (used while draining at shutdown).
pub(crate) fn attempt(
    agent: &ureq::Agent,
    ep: &Endpoint,
    row: &OutboxRow,
    now_s: i64,
    limit: Option<Duration>,
) -> Attempted {
    let mut req = agent
        .post(&ep.webhook.url)
        .header("Content-Type", "application/json")
        .header("X-Hookflow-Seq", row.seq.to_string());
    if let Some(secret) = &ep.webhook.secret {
        let k = &row.key;
        let id = crypto::webhook_id(&k.endpoint, &k.user_id, &k.session_id, row.seq, &row.body);
        let sig = crypto::signature(secret, &id, now_s, row.body.as_bytes());
        req = req
            .header("webhook-id", id)
            .header("webhook-timestamp", now_s.to_string())
            .header("webhook-signature", sig);
    }
    if let Some(user) = &ep.webhook.user {
        let pass = ep.webhook.password.as_deref().unwrap_or("");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req = req.header("Authorization", format!("Basic {token}"));
    }
    for (k, v) in &ep.webhook.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(limit) = limit {
        req = req.config().timeout_global(Some(limit)).build();
    }
    match req.send(row.body.as_bytes()) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = crate::util::retry_after_of(&resp);
            // The first bytes are noted; the rest is read (up to a bound) and dropped: reading an
            // answer to its end lets ureq reuse the connection. (Read whole, an answer over the
            // bound was noted as nothing at all.)
            use std::io::Read as _;
            let mut reader = resp.body_mut().with_config().limit(MAX_ANSWER_BYTES).reader();
            let mut first = Vec::with_capacity(NOTED_ANSWER_BYTES);
            let _ = (&mut reader).take(NOTED_ANSWER_BYTES as u64).read_to_end(&mut first);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            let answer = String::from_utf8_lossy(&first).into_owned();
            Attempted { outcome: classify(status, retry_after), status: Some(status), answer }
        }
        Err(e) => Attempted { outcome: Outcome::Retry(e.to_string(), None), status: None, answer: e.to_string() },
    }
}

/// The wait before attempt `attempts + 1` of an output, by `delivery.retrySchedule` (at least
/// the webhook's `Retry-After`); `None` once the schedule is used up (a dead letter).
pub(super) fn retry_wait(schedule: &[Duration], attempts: i64, after: Option<Duration>) -> Option<Duration> {
    let wait = schedule.get(attempts as usize - 1)?;
    Some(after.map_or(*wait, |a| a.max(*wait)))
}

/// Outcome classes of http-api.md §2: 2xx ok; 4xx other than 408 and 429 final; the rest
/// (redirects included, since they are not followed) retried.
fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 => Outcome::Retry(format!("HTTP {status}"), retry_after),
        400..=499 => Outcome::Final(format!("HTTP {status}")),
        _ => Outcome::Retry(format!("HTTP {status}"), retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_classes_follow_the_spec() {
        assert_eq!(classify(200, None), Outcome::Delivered);
        assert_eq!(classify(204, None), Outcome::Delivered);
        assert!(matches!(classify(301, None), Outcome::Retry(..)));
        assert!(matches!(classify(408, None), Outcome::Retry(..)));
        assert!(matches!(classify(429, Some(Duration::from_secs(3))), Outcome::Retry(_, Some(_))));
        assert!(matches!(classify(400, None), Outcome::Final(_)));
        assert!(matches!(classify(404, None), Outcome::Final(_)));
        assert!(matches!(classify(500, None), Outcome::Retry(..)));
        assert!(matches!(classify(503, None), Outcome::Retry(..)));
    }
}
