//! The answer type of every route, and the request helpers the routes and the admin API share.

use serde_json::Value;
use tiny_http::Request;

use crate::crypto::key_matches;
use crate::domain::SessionKey;
use crate::wire;

/// Which route answered, for the request metric and the content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Message,
    Test,
    Inject,
    Notify,
    Ready,
    Metrics,
    Admin,
    Console,
    /// The agent side of a handover (`/handover/{URLToken}/...`).
    Handover,
    Other,
}

impl Route {
    /// The `route` label of `hookflow_http_requests_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::Message => "message",
            Route::Test => "test",
            Route::Inject => "inject",
            Route::Notify => "notify",
            Route::Ready => "readyz",
            Route::Metrics => "metrics",
            Route::Admin => "admin",
            Route::Console => "console",
            Route::Handover => "handover",
            Route::Other => "other",
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Route::Metrics => "text/plain; version=0.0.4",
            _ => "application/json; charset=utf-8",
        }
    }
}

/// An answer, before it is written.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The endpoint the request was for, once known (the request metric's label).
    pub(crate) endpoint: Option<String>,
    pub(crate) route: Route,
    /// Overrides the route's content type (the console's files).
    pub(crate) content_type: Option<&'static str>,
    /// A session this request made runnable, whose turn this thread runs once it has answered
    /// (boxed: every `Reply` carries the field, few a session).
    pub(crate) run_after: Option<Box<crate::domain::SessionKey>>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Reply {
        Reply::text(status, body.to_string())
    }

    pub(crate) fn text(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            headers: vec![],
            endpoint: None,
            route: Route::Other,
            content_type: None,
            run_after: None,
        }
    }

    pub(crate) fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::text(status, wire::error_body(code, message))
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn route(mut self, route: Route) -> Reply {
        self.route = route;
        self
    }

    pub(crate) fn content_type(mut self, content_type: &'static str) -> Reply {
        self.content_type = Some(content_type);
        self
    }

    pub(crate) fn endpoint(mut self, name: Option<&str>) -> Reply {
        self.endpoint = name.map(str::to_owned);
        self
    }
}

/// The value of a request header, if present.
pub(crate) fn header_value<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

/// The admin key from `X-API-Key` or the `api_key` query parameter, checked against `digests`
/// (`adminKeys`).
pub(crate) fn admin_ok(req: &Request, digests: &[[u8; 32]]) -> bool {
    let from_query = || {
        req.url()
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("api_key=")).map(percent_decode))
    };
    let key = header_value(req, "X-API-Key").map(str::to_owned).or_else(from_query);
    key.is_some_and(|k| key_matches(&k, digests))
}

/// The session a `/{endpoint}/{userId}/{sessionId}` path names, each part percent-decoded. On a
/// store that cannot hold U+0000 (`Store::holds_nul`), a part with one is 404 `unknown_session`
/// (no session there can have one), rather than a store error.
pub(crate) fn path_key(endpoint: &str, user: &str, session: &str, holds_nul: bool) -> Result<SessionKey, Reply> {
    let key = SessionKey {
        endpoint: percent_decode(endpoint),
        user_id: percent_decode(user),
        session_id: percent_decode(session),
    };
    if holds_nul || key.storable() {
        Ok(key)
    } else {
        Err(Reply::error(404, "unknown_session", "no session has U+0000 (the NUL character) in its ids"))
    }
}

/// Decodes `%XX` escapes (a `+` stays a `+`: user and session ids may contain it).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
