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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{Value, json};

    use super::super::{ConfigError, parse};
    use super::*;

    fn with(handover: Value) -> String {
        json!({"endpoints": [{ "name": "support", "urlToken": "abcdefgh12345678", "flow": "f.json",
                               "webhook": {"url": "http://127.0.0.1:9000/hook"}, "handover": handover }]})
        .to_string()
    }

    fn errors(handover: Value) -> Vec<ConfigError> {
        let env = |n: &str| (n == "CW").then(|| "token-1".to_owned());
        parse(&with(handover), Path::new("/etc/hookflow.json"), &env).expect_err("expected errors").0
    }

    fn one_error(handover: Value, place: &str, fragment: &str) {
        let e = errors(handover);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!((e[0].place.as_str(), e[0].file.as_path()), (place, Path::new("/etc/hookflow.json")));
        assert!(e[0].message.contains(fragment), "{:?} does not contain {fragment:?}", e[0].message);
    }

    const KEY: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn both_providers_are_read() {
        let env = |n: &str| (n == "CW").then(|| "token-1".to_owned());
        let text = with(json!({"type": "webhook", "url": "https://desk.example.com/h", "agentKeys": [KEY]}));
        let c = parse(&text, Path::new("/etc/hookflow.json"), &env).unwrap();
        let Some(Handover::Webhook(w)) = &c.endpoints[0].handover else { panic!("{:?}", c.endpoints[0].handover) };
        assert_eq!((w.url.as_str(), w.agent_keys.len(), w.secret.is_none()), ("https://desk.example.com/h", 1, true));
        let text = with(json!({"type": "chatwoot", "baseUrl": "https://cw.example.com/", "accountId": 1,
                               "inboxId": 5, "apiToken": "${CW}", "webhookToken": "hook"}));
        let c = parse(&text, Path::new("/etc/hookflow.json"), &env).unwrap();
        let Some(Handover::Chatwoot(cw)) = &c.endpoints[0].handover else { panic!() };
        assert_eq!((cw.base_url.as_str(), cw.account_id, cw.inbox_id), ("https://cw.example.com", 1, 5));
        assert_eq!((cw.api_token.as_str(), cw.webhook_token.as_str()), ("token-1", "hook"));
        let c = parse(&with(Value::Null), Path::new("/etc/hookflow.json"), &env).unwrap();
        assert!(c.endpoints[0].handover.is_none());
    }

    #[test]
    fn each_mistake_names_its_place_and_the_fix() {
        one_error(json!({"type": "zendesk"}), "endpoints[0].handover.type", "expected \"webhook\" or \"chatwoot\"");
        one_error(json!({"url": "https://d.example.com"}), "endpoints[0].handover.type", "required");
        one_error(
            json!({"type": "webhook", "url": "https://d.example.com"}),
            "endpoints[0].handover.agentKeys",
            "hookflow keygen",
        );
        one_error(json!({"type": "webhook", "agentKeys": [KEY]}), "endpoints[0].handover.url", "required");
        one_error(
            json!({"type": "webhook", "url": "https://d.example.com", "agentKeys": ["plain"]}),
            "endpoints[0].handover.agentKeys[0]",
            "sha256:",
        );
        one_error(
            json!({"type": "webhook", "url": "https://d.example.com", "agentKeys": [KEY], "secret": "x"}),
            "endpoints[0].handover.secret",
            "whsec_",
        );
        one_error(
            json!({"type": "webhook", "url": "https://d.example.com", "agentKeys": [KEY], "agentKey": 1}),
            "endpoints[0].handover.agentKey",
            "did you mean \"agentKeys\"",
        );
        let full = json!({"type": "chatwoot", "baseUrl": "https://cw.example.com", "accountId": 1, "inboxId": 5,
                          "apiToken": "t", "webhookToken": "h"});
        for key in ["baseUrl", "accountId", "inboxId", "apiToken", "webhookToken"] {
            let mut h = full.clone();
            h.as_object_mut().unwrap().remove(key);
            one_error(h, &format!("endpoints[0].handover.{key}"), "required");
        }
        let mut h = full.clone();
        h["apiToken"] = json!("${NOT_SET}");
        one_error(h, "endpoints[0].handover.apiToken", "NOT_SET is not set");
        let mut h = full;
        h["inboxId"] = json!(0);
        assert_eq!(errors(h)[0].place, "endpoints[0].handover.inboxId");
    }
}
