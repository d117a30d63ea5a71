//! `endpoints[].handover` (handover.md): the agent desk a `handover` node hands the conversation
//! to. The known keys depend on `type`, so the type is read first (as for `nlu`).

use serde_json::Value;

use super::loader::Loader;
use super::walk::{Obj, Walk, join};
use super::*;

const WEBHOOK_KEYS: &[&str] = &["type", "url", "user", "password", "secret", "agentKeys"];
const CHATWOOT_KEYS: &[&str] = &["type", "baseUrl", "accountId", "inboxId", "apiToken", "webhookToken"];

impl Loader<'_> {
    pub(super) fn handover(&mut self, endpoint: &Obj) -> Option<Handover> {
        let (path, value) = endpoint.get("handover")?;
        if value.is_null() {
            return None;
        }
        let map = self.typed(&path, value, "an object", Value::as_object)?;
        let probe = Obj { path: path.clone(), map: Some(map) };
        match self.req(&probe, "type", Self::string).as_deref() {
            Some("webhook") => {
                let o = self.object(path, Some(value), WEBHOOK_KEYS);
                Some(Handover::Webhook(self.handover_webhook(&o)))
            }
            Some("chatwoot") => {
                let o = self.object(path, Some(value), CHATWOOT_KEYS);
                Some(Handover::Chatwoot(self.chatwoot(&o)))
            }
            Some(other) => {
                let message = format!("expected \"webhook\" or \"chatwoot\", got {other:?}");
                self.error(&join(&path, "type"), message);
                None
            }
            None => None,
        }
    }

    fn handover_webhook(&mut self, o: &Obj) -> HandoverWebhook {
        let url = self.req(o, "url", Self::http_url).unwrap_or_default();
        let user = self.opt(o, "user", Self::basic_user);
        let password = self.opt(o, "password", Self::string);
        if password.is_some() && user.is_none() {
            self.error(&o.at("password"), "a password needs a user: add \"user\" (HTTP Basic)");
        }
        let secret = self.opt(o, "secret", Self::secret);
        let agent_keys = self.key_list(o, "agentKeys");
        if agent_keys.is_empty() && !self.has_errors_at(&o.at("agentKeys")) {
            // Without a key the agent routes would let anyone speak as an agent.
            let message = "the agent desk answers through /handover/{URLToken}/messages and /end, which need a \
                           key: add \"agentKeys\": [\"sha256:...\"] (\"hookflow keygen\" prints one)";
            self.error(&o.at("agentKeys"), message);
        }
        HandoverWebhook { url, user, password, secret, agent_keys }
    }

    fn chatwoot(&mut self, o: &Obj) -> Chatwoot {
        let base_url = self.req(o, "baseUrl", Self::http_url).unwrap_or_default();
        let id = |l: &mut Self, p: &str, v: &Value| l.integer(p, v, 1..=u64::MAX);
        let account_id = self.req(o, "accountId", id).unwrap_or_default();
        let inbox_id = self.req(o, "inboxId", id).unwrap_or_default();
        let api_token = self.req(o, "apiToken", Self::nonempty).unwrap_or_default();
        let webhook_token = self.req(o, "webhookToken", Self::nonempty).unwrap_or_default();
        Chatwoot { base_url: base_url.trim_end_matches('/').to_owned(), account_id, inbox_id, api_token, webhook_token }
    }

    /// A string that must not be empty (a token); never echoed.
    fn nonempty(&mut self, path: &str, v: &Value) -> Option<String> {
        let s = self.string(path, v)?;
        if s.is_empty() {
            self.error(path, "expected a non-empty string (usually \"${NAME}\" of an environment variable)");
            return None;
        }
        Some(s)
    }

    /// Whether a problem was reported at `place` already (so one mistake gets one message).
    fn has_errors_at(&self, place: &str) -> bool {
        self.errors.iter().any(|e| e.place.starts_with(place))
    }
}
