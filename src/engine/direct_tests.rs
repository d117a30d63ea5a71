//! Grouped accepts of replicas (`direct.rs`) against the tests' throwaway PostgreSQL.

use std::time::Duration;

use super::*;
use crate::config::{Postgres, PostgresTls};
use crate::pgserver;
use crate::store::postgres::PgStore;

fn key_of(session: &str) -> SessionKey {
    SessionKey { endpoint: "e".into(), user_id: "u".into(), session_id: session.into() }
}

#[test]
fn http_threads_accepting_together_get_one_id_each_in_each_sessions_order() {
    let url = pgserver::fresh_db("direct");
    let pg = Postgres {
        url: url.clone(),
        pool: 4,
        lease: Duration::from_secs(10),
        tls: PostgresTls::Disable,
        ca_file: None,
    };
    let store: Arc<dyn Store> = Arc::new(PgStore::open(&pg).unwrap());
    let (wake, woken) = crossbeam_channel::bounded(1);
    let direct = Direct::new(store.clone(), wake, 1000);
    // Eight threads, a session each, twenty messages each, all at once: groups form.
    let ids: Vec<Vec<i64>> = std::thread::scope(|t| {
        let handles: Vec<_> = (0..8)
            .map(|s| {
                let direct = &direct;
                t.spawn(move || {
                    (0..20)
                        .map(|n| {
                            let payload = format!("{{\"n\":{n}}}");
                            direct.accept(key_of(&format!("d{s}")), JobKind::Message, payload).expect("accepted")
                        })
                        .collect::<Vec<i64>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: std::collections::HashSet<i64> = ids.iter().flatten().copied().collect();
    assert_eq!(all.len(), 160, "one id each");
    assert!(woken.try_recv().is_ok(), "the claimer is woken");
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for (s, sent) in ids.iter().enumerate() {
        let rows = raw
            .query("SELECT id, payload FROM inbox WHERE session_id = $1 ORDER BY msg_no", &[&format!("d{s}")])
            .unwrap();
        let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let want: Vec<(i64, String)> = sent.iter().enumerate().map(|(n, id)| (*id, format!("{{\"n\":{n}}}"))).collect();
        assert_eq!(got, want, "session d{s} numbered in the order its messages were accepted");
    }
    // A full queue (limits.queueCapacity, counted in the database) refuses; nothing is written.
    let full = Direct::new(store.clone(), crossbeam_channel::bounded(1).0, 160);
    assert!(matches!(full.accept(key_of("x"), JobKind::Message, "{}".into()), Err(AcceptError::Full)));
    assert_eq!(store.pending_inbox().unwrap().len(), 160);
}
