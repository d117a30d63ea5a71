//! The `handoverId`: `ho_` + base64url of `[endpoint, userId, sessionId]` + `.` + 24 random hex
//! digits. It names its session, so the agent routes find the session without an index of
//! handovers (the store has none, on any backend), and the random part tells this handover from
//! the session's earlier ones: a route compares the whole id with the one in the session state.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::SessionKey;

/// A new id for a handover of `key`.
pub(crate) fn new(key: &SessionKey) -> String {
    let names = serde_json::json!([key.endpoint, key.user_id, key.session_id]).to_string();
    let random = crate::util::hex(&crate::util::random_bytes::<12>());
    format!("ho_{}.{random}", URL_SAFE_NO_PAD.encode(names))
}

/// The session an id names; `None` when it is not one of ours.
pub(crate) fn session(id: &str) -> Option<SessionKey> {
    let (names, random) = id.strip_prefix("ho_")?.rsplit_once('.')?;
    if random.len() != 24 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(names).ok()?;
    let (endpoint, user_id, session_id): (String, String, String) = serde_json::from_slice(&bytes).ok()?;
    Some(SessionKey { endpoint, user_id, session_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_session_and_differs_each_time() {
        let key = SessionKey { endpoint: "shop".into(), user_id: "u.1/ä".into(), session_id: "s\"1".into() };
        let (a, b) = (new(&key), new(&key));
        assert_ne!(a, b);
        assert_eq!(session(&a), Some(key));
        assert_eq!(session("ho_e30.0123"), None);
        assert_eq!(session("nonsense"), None);
        assert_eq!(session(&a.replace("ho_", "hx_")), None);
    }
}
