//! The JSON that crosses the process boundary: the inbound message body and its validation
//! (http-api.md §1), the queued form of an accepted message, the outbound payload (§2), and the
//! error answer. The serde types of the outside world live here and nowhere else.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest `userId` / `sessionId`, in characters.
pub const MAX_ID_CHARS: usize = 256;
/// Longest `text`, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Deepest nesting of `data`. The session state, the resume record of a checkpoint and the
/// transcript wrap `data` in a few more levels, and serde_json reads at most 128: a deeper
/// `data` would be accepted and then make the session unreadable.
pub const MAX_DATA_DEPTH: usize = 64;

/// A validated inbound message body.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub user_id: String,
    pub session_id: String,
    pub text: Option<String>,
    pub data: Option<Map<String, Value>>,
    /// `URLToken` from the body (the `/new/v2.0/endpoint/*` routes).
    pub url_token: Option<String>,
}

/// Why a body was refused: `invalid_json` or `invalid_request`, with a message naming the field.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> BodyError {
    BodyError { code: "invalid_request", message: message.into() }
}

/// The message of a body that is not JSON: where, then what.
pub fn not_json(e: &serde_json::Error) -> String {
    let (place, what) = crate::util::json_error(e);
    format!("the body is not valid JSON ({place}): {what}")
}

/// Parses and validates a message body.
pub fn parse_inbound(body: &[u8]) -> Result<Inbound, BodyError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| BodyError { code: "invalid_json", message: not_json(&e) })?;
    let Value::Object(mut m) = v else {
        return Err(BodyError { code: "invalid_json", message: "the body must be a JSON object".into() });
    };
    let user_id = id_field(&m, "userId")?;
    let session_id = id_field(&m, "sessionId")?;
    let text = match m.remove("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() > MAX_TEXT_CHARS => {
            return Err(invalid(format!("\"text\" is longer than {MAX_TEXT_CHARS} characters")));
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(invalid("\"text\" must be a string")),
    };
    let data = match m.remove("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) if 1 + d.values().map(crate::util::depth).max().unwrap_or(0) > MAX_DATA_DEPTH => {
            return Err(invalid(format!("\"data\" is nested deeper than {MAX_DATA_DEPTH} levels")));
        }
        Some(Value::Object(d)) => Some(d),
        Some(_) => return Err(invalid("\"data\" must be a JSON object")),
    };
    if data.is_none() && text.as_deref().is_none_or(str::is_empty) {
        return Err(invalid("the message needs a non-empty \"text\" or a \"data\" object"));
    }
    let url_token = match m.remove("URLToken") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(Inbound { user_id, session_id, text, data, url_token })
}

fn id_field(m: &Map<String, Value>, name: &str) -> Result<String, BodyError> {
    match m.get(name) {
        None | Some(Value::Null) => Err(invalid(format!("\"{name}\" is required"))),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(format!("\"{name}\" must not be empty"))),
        Some(Value::String(s)) if s.chars().count() > MAX_ID_CHARS => {
            Err(invalid(format!("\"{name}\" is longer than {MAX_ID_CHARS} characters")))
        }
        // Every store must hold it as it came, and PostgreSQL's text cannot hold U+0000: refused
        // here on either backend, so that moving a deployment to replicas changes no answer.
        Some(Value::String(s)) if s.contains('\0') => {
            Err(invalid(format!("\"{name}\" must not contain U+0000 (the NUL character)")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(format!("\"{name}\" must be a string"))),
    }
}

/// An accepted message as it waits in the inbound queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default)]
    pub test_mode: bool,
    /// Unix milliseconds of acceptance.
    pub at: i64,
}

/// What the agent side sent, as queued for the session (a job of kind `agent_message` or
/// `agent_end`): an `Accepted` (text and data for the user) with the handover it is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentAccepted {
    #[serde(flatten)]
    pub accepted: Accepted,
    pub handover_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
}

/// A new traceId in Cognigy's format.
pub fn new_trace_id() -> String {
    format!("endpoint-httpIncomingMessage-{}", crate::util::uuid_v4())
}

/// The body POSTed to the webhook for one output (http-api.md §2), keys in the documented order.
#[derive(Debug, Serialize)]
pub struct OutputPayload<'a> {
    #[serde(rename = "userId")]
    pub user_id: &'a str,
    #[serde(rename = "sessionId")]
    pub session_id: &'a str,
    #[serde(rename = "AIOutput")]
    pub ai_output: AiOutput<'a>,
}

/// The `AIOutput` object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AiOutput<'a> {
    pub text: &'a str,
    pub data: &'a Value,
    pub trace_id: &'a str,
    pub disable_sensitive_logging: bool,
    /// `bot`, or `agent` for an agent's message during a handover.
    pub source: &'static str,
    /// The agent's name, on an agent's message when the agent side gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<&'a str>,
}

/// Serialises an output payload.
pub fn output_body(p: &OutputPayload<'_>) -> String {
    serde_json::to_string(p).expect("output payloads are plain JSON values")
}

/// `{"error": {"code": ..., "message": ...}}`.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> BodyError {
        parse_inbound(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn valid_bodies_are_accepted() {
        let m = parse_inbound(br#"{"userId":"u","sessionId":"s","text":"hi","extra":1}"#).unwrap();
        assert_eq!((m.user_id.as_str(), m.text.as_deref(), m.data), ("u", Some("hi"), None));
        let m = parse_inbound(br#"{"userId":"u","sessionId":"s","text":null,"data":{"a":1}}"#).unwrap();
        assert_eq!(m.text, None);
        assert_eq!(m.data.unwrap()["a"], 1);
        let m = parse_inbound(br#"{"userId":"u","sessionId":"s","text":"","data":{}}"#).unwrap();
        assert_eq!(m.text.as_deref(), Some(""));
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(err("{").code, "invalid_json");
        assert!(err("{\n\"a\":").message.contains("line 2"));
        assert_eq!(err("[1]").code, "invalid_json");
        assert!(err(r#"{"sessionId":"s","text":"hi"}"#).message.contains("\"userId\" is required"));
        assert!(err(r#"{"userId":"u","text":"hi"}"#).message.contains("\"sessionId\" is required"));
        assert!(err(r#"{"userId":5,"sessionId":"s","text":"hi"}"#).message.contains("\"userId\" must be a string"));
        assert!(err(r#"{"userId":"","sessionId":"s","text":"hi"}"#).message.contains("\"userId\" must not be empty"));
        let long = "x".repeat(257);
        assert!(
            err(&format!(r#"{{"userId":"{long}","sessionId":"s","text":"hi"}}"#)).message.contains("longer than 256")
        );
        let long = "x".repeat(10_001);
        assert!(
            err(&format!(r#"{{"userId":"u","sessionId":"s","text":"{long}"}}"#)).message.contains("\"text\" is longer")
        );
        assert!(err(r#"{"userId":"u","sessionId":"s","text":1}"#).message.contains("\"text\" must be a string"));
        assert!(err(r#"{"userId":"u","sessionId":"s","data":[1]}"#).message.contains("\"data\" must be a JSON object"));
        assert!(err(r#"{"userId":"u","sessionId":"s","text":""}"#).message.contains("non-empty \"text\""));
        assert!(err(r#"{"userId":"u","sessionId":"s"}"#).message.contains("non-empty \"text\""));
    }

    #[test]
    fn output_payload_has_the_documented_shape() {
        let data = serde_json::json!({"k": 1});
        let body = output_body(&OutputPayload {
            user_id: "u",
            session_id: "s",
            ai_output: AiOutput {
                text: "t",
                data: &data,
                trace_id: "tr",
                disable_sensitive_logging: false,
                source: "bot",
                agent_name: None,
            },
        });
        assert_eq!(
            body,
            r#"{"userId":"u","sessionId":"s","AIOutput":{"text":"t","data":{"k":1},"traceId":"tr","disableSensitiveLogging":false,"source":"bot"}}"#
        );
    }
}
