//! The HTTP side: a fixed set of `http-N` threads take requests from tiny_http, route them,
//! validate them, queue messages durably, and answer. Nothing past this file sees tiny_http.
//!
//! Accepting a message is validation plus one short SQLite insert, so it is done right here
//! rather than handed to the workers: the 200 must wait for the insert anyway (http-api.md §1),
//! and the workers stay free for Flows. At low load (one process, the accept committed on this
//! thread, `Writer::accept_here`), the thread then also runs the turn of the session its accept
//! made runnable, after answering: waking an idle worker for it costs tens of microseconds on
//! the message's way to the webhook, more on a busy machine (docs/performance.md).

use std::cell::RefCell;
use std::io::Read;

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response};

use super::HttpContext;
use super::reply::{Reply, Route, admin_ok, header_value, percent_decode};
use crate::config::Endpoint;
use crate::crypto::key_matches;
use crate::domain::{JobKind, SessionKey};
use crate::engine::{AcceptError, Job};
use crate::flow::script::LazyEngine;
use crate::flow::transform;
use crate::util::{now_ms, shown};
use crate::wire::{self, Accepted};

/// Threads answering HTTP requests.
pub(crate) const HTTP_THREADS: usize = 4;

/// The loop of an http thread: answers requests until shutdown.
pub(crate) fn run(cx: &HttpContext, http: &tiny_http::Server) {
    loop {
        match http.recv() {
            Ok(req) => handle(cx, req),
            Err(_) if cx.health.http_stopping() => return,
            Err(e) => {
                // tiny_http's accept thread has ended (transient errors are retried inside it):
                // no new connection will arrive, so the process must be restarted.
                cx.health.fatal(format!("the listener failed: {e}"));
                return;
            }
        }
    }
}

/// `/healthz` and `/readyz`, answered on the connection's own thread (`Server::answer_here`),
/// so that a health check is answered even while every http thread is busy (long turns, a
/// store that makes commits wait); both answer from memory. Anything else is handed out.
pub(crate) fn answer_here(cx: &HttpContext, req: Request) -> Option<Request> {
    let path = req.url().split('?').next().unwrap_or("");
    if matches!(path, "/healthz" | "/readyz") {
        handle(cx, req);
        return None;
    }
    Some(req)
}

fn handle(cx: &HttpContext, mut req: Request) {
    // The path only: the query string may carry an admin key (`api_key`).
    log::debug!("{} {}", req.method(), req.url().split('?').next().unwrap_or(""));
    let mut reply = route(cx, &mut req);
    cx.metrics.request(reply.endpoint.as_deref().unwrap_or("-"), reply.route.label(), reply.status);
    if let Err(e) = req.respond(response(&mut reply)) {
        log::debug!("http: the client went away before the answer: {e}");
    }
    if let Some(key) = reply.run_after {
        run_here(cx, *key);
    }
}

/// The HTTP answer of `reply`: its status, body, content type and headers (taken from it).
fn response(reply: &mut Reply) -> Response<std::io::Cursor<Vec<u8>>> {
    let content_type = reply.content_type.unwrap_or(reply.route.content_type());
    let mut resp = Response::from_string(std::mem::take(&mut reply.body))
        .with_status_code(reply.status)
        .with_header(header("Content-Type", content_type));
    for (k, v) in std::mem::take(&mut reply.headers) {
        resp = resp.with_header(header(k, &v));
    }
    resp
}

thread_local! {
    /// This http thread's JavaScript engine, made at its first script: its input transformers
    /// and the turns it runs (`run_here`) share it, one engine per thread as on a worker.
    static ENGINE: RefCell<Option<LazyEngine>> = const { RefCell::new(None) };
}

/// `f` with this thread's engine.
fn with_engine<T>(cx: &HttpContext, f: impl FnOnce(&mut LazyEngine) -> T) -> T {
    ENGINE.with(|e| {
        let mut e = e.borrow_mut();
        f(e.get_or_insert_with(|| LazyEngine::new(&cx.config).stop_on(cx.health.scripts_stop())))
    })
}

/// Runs the turn of a session this thread's accept made runnable, as a worker would. (A stop
/// asked by `run_job` is the shutdown's: this thread goes on answering until it ends.)
fn run_here(cx: &HttpContext, key: SessionKey) {
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
    match &cx.turns_here {
        // One http thread at a time runs a turn; while one does, the session goes to the
        // workers, as at higher load (four turns of a few seconds each held all four http
        // threads, and /healthz went unanswered for seconds).
        Some(w) if cx.turn_running_here.compare_exchange(false, true, AcqRel, Acquire).is_ok() => {
            // Let go however the turn ends (a panic past the turn's own guard included).
            struct Running<'a>(&'a std::sync::atomic::AtomicBool);
            impl Drop for Running<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Release);
                }
            }
            let _running = Running(&cx.turn_running_here);
            with_engine(cx, |engine| crate::engine::worker::run_job(w, engine, Job::Run(key)));
        }
        // Another http thread runs a turn; or replicas, where `accept_here` gives no session to
        // run (announcing it is the safe answer).
        _ => cx.sched.announce(key),
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("header names and values we build are ASCII")
}

/// Which kind of message route.
#[derive(Clone, Copy)]
struct MessageRoute {
    kind: JobKind,
    test: bool,
}

impl MessageRoute {
    fn route(self) -> Route {
        match (self.kind, self.test) {
            (JobKind::Inject, _) => Route::Inject,
            (JobKind::Notify, _) => Route::Notify,
            (JobKind::Message, true) => Route::Test,
            (JobKind::Message, false) => Route::Message,
            (JobKind::AgentMessage | JobKind::AgentEnd, _) => Route::Handover,
        }
    }
}

fn route(cx: &HttpContext, req: &mut Request) -> Reply {
    let url = req.url().to_owned();
    let path = url.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let msg = |kind, test| MessageRoute { kind, test };
    match parts.as_slice() {
        ["healthz"] => get_only(req, |_| Reply::json(200, json!({"status": "ok"}))),
        ["readyz"] => get_only(req, |_| ready(cx)),
        ["metrics"] => get_only(req, |_| metrics(cx)),
        ["api", rest @ ..] => super::admin::route(cx, req, rest),
        // Not a URL token: those are at least 8 characters long.
        ["console", rest @ ..] => super::console::route(cx, req, rest),
        // The older API-service routes carry the token in the body.
        ["new", "v2.0", "endpoint", "inject"] => message(cx, req, None, msg(JobKind::Inject, false)),
        ["new", "v2.0", "endpoint", "notify"] => message(cx, req, None, msg(JobKind::Notify, false)),
        ["inject", token] => message(cx, req, Some(token), msg(JobKind::Inject, false)),
        ["notify", token] => message(cx, req, Some(token), msg(JobKind::Notify, false)),
        ["test", token] => message(cx, req, Some(token), msg(JobKind::Message, true)),
        ["handover", token, what] => super::handover::route(cx, req, token, what),
        [token] if !token.is_empty() => message(cx, req, Some(token), msg(JobKind::Message, false)),
        _ => Reply::error(404, "not_found", "no such route; messages go to POST /{URLToken}"),
    }
}

fn get_only(req: &Request, f: impl FnOnce(&Request) -> Reply) -> Reply {
    if *req.method() == Method::Get || *req.method() == Method::Head {
        f(req)
    } else {
        Reply::error(405, "method_not_allowed", "use GET").header("Allow", "GET")
    }
}

fn ready(cx: &HttpContext) -> Reply {
    let reason = if cx.health.stopping() {
        Some("shutting down")
    } else if !cx.health.lanes_alive() {
        Some("a sender thread has stopped")
    } else {
        // The writer's last commit failed (a full disk, say) and no write has succeeded since.
        cx.writer.store_failure().map(|failure| failure.reason())
    };
    match reason {
        None => Reply::json(200, json!({"status": "ready"})),
        // An error answer, in the one error shape (http-api.md), the reason as its message.
        Some(r) => Reply::error(503, "not_ready", r),
    }
    .route(Route::Ready)
}

fn metrics(cx: &HttpContext) -> Reply {
    let replica = cx.store.claims().map(|c| c.replica());
    let (depth, sessions) = backlog(cx);
    Reply::text(200, cx.metrics.render(depth, sessions, replica)).route(Route::Metrics)
}

/// Messages accepted and not yet finished, and their sessions: the scheduler's count, or with
/// replicas the database's (`Claims::backlog`; this replica's own count while it is out of reach).
pub(super) fn backlog(cx: &HttpContext) -> (usize, usize) {
    let local = || (cx.sched.depth(), cx.sched.active_sessions());
    // While the store is known to fail, a scrape does not wait for it (a connection attempt to
    // an unreachable host takes seconds, as long as a scrape's timeout).
    if cx.writer.store_failure().is_some() {
        return local();
    }
    match cx.store.claims().map(|c| c.backlog()) {
        None => local(),
        Some(Ok(counts)) => counts,
        Some(Err(e)) => {
            log::warn!("the queue depth is this replica's alone: the database's could not be counted: {e}");
            local()
        }
    }
}

/// `POST /{URLToken}` and its siblings: validate, queue durably, answer 200 with the traceId.
fn message(cx: &HttpContext, req: &mut Request, token: Option<&str>, r: MessageRoute) -> Reply {
    match accept(cx, req, token, r) {
        Ok(reply) | Err(reply) => reply.route(r.route()),
    }
}

/// Errors before the endpoint is known carry no endpoint label; the endpoint's own gates and
/// everything after carry its name (`Reply::endpoint`).
fn accept(cx: &HttpContext, req: &mut Request, token: Option<&str>, r: MessageRoute) -> Result<Reply, Reply> {
    if *req.method() != Method::Post {
        return Err(Reply::error(405, "method_not_allowed", "this route only accepts POST").header("Allow", "POST"));
    }
    let admin = r.kind != JobKind::Message;
    if admin && !admin_ok(req, &cx.config.admin_keys) {
        return Err(Reply::error(
            401,
            "unauthorized",
            "inject and notify need an admin API key in X-API-Key or api_key",
        ));
    }
    let mut ep = match token {
        Some(t) => Some(open_endpoint(cx, req, t, admin)?),
        None => None,
    };
    fn label(ep: Option<&Endpoint>) -> impl Fn(Reply) -> Reply + '_ {
        move |reply| reply.endpoint(ep.map(|e| e.name.as_str()))
    }
    if cx.health.stopping() {
        return Err(label(ep)(shutting_down()));
    }
    // With an input transformer, any body may come in (a form post, a foreign JSON shape).
    let transformed = ep.is_some_and(|e| transformer_for(cx, e, r.kind).is_some());
    if !transformed {
        check_content_type(req).map_err(label(ep))?;
    }
    let body = read_body(req, cx.config.limits.max_body_bytes).map_err(label(ep))?;
    let ep = match ep.take() {
        Some(e) => e,
        None => {
            // The older routes carry the token in the body.
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| Reply::error(400, "invalid_json", &crate::wire::not_json(&e)))?;
            if !v.is_object() {
                return Err(Reply::error(400, "invalid_json", "the body must be a JSON object"));
            }
            let Some(t) = v.get("URLToken").and_then(Value::as_str) else {
                return Err(Reply::error(400, "invalid_request", "\"URLToken\" is required on this route"));
            };
            open_endpoint(cx, req, t, admin)?
        }
    };
    let label = label(Some(ep));
    let inbound = match transformer_for(cx, ep, r.kind) {
        Some((code, hook)) => match transform_input(cx, req, ep, code, hook, &body).map_err(&label)? {
            Some(m) => m,
            None => return Ok(label(Reply::json(200, json!({"status": "dropped"})))),
        },
        None => wire::parse_inbound(&body).map_err(|e| label(Reply::error(400, e.code, &e.message)))?,
    };
    Ok(label(queue(cx, req, ep, inbound, r)))
}

/// The client's address for `input.ip` and transformers, unless the endpoint masks it.
fn client_ip(req: &Request, ep: &Endpoint) -> Option<String> {
    (!ep.data_protection.mask_ip_address).then(|| req.remote_addr().map(|a| a.ip().to_string())).flatten()
}

pub(super) fn shutting_down() -> Reply {
    Reply::error(503, "shutting_down", "hookflow is shutting down; send again shortly").header("Retry-After", "5")
}

/// The answer to a request read while the server closes, or left unanswered when it stopped
/// (`Server::refuse_with`): 503 `shutting_down`, as a message gets once the shutdown began
/// (it was an empty 500, which a load balancer passes to the client instead of trying another
/// replica). tiny_http adds `Connection: close`: this process takes no more requests.
pub(crate) fn refusal() -> tiny_http::ResponseBox {
    response(&mut shutting_down()).boxed()
}

/// Finds the endpoint of a token and applies its gates (403, 401).
fn open_endpoint<'s>(cx: &'s HttpContext, req: &Request, token: &str, admin: bool) -> Result<&'s Endpoint, Reply> {
    let ep = endpoint(cx, token)?;
    endpoint_gate(ep, req, admin).map_err(|r| r.endpoint(Some(&ep.name)))?;
    Ok(ep)
}

/// 415 unless the body is declared as JSON (or not declared at all).
pub(super) fn check_content_type(req: &Request) -> Result<(), Reply> {
    let Some(ct) = header_value(req, "Content-Type") else { return Ok(()) };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        return Ok(());
    }
    let msg = format!("the body must be JSON (Content-Type: application/json), not {mime}");
    Err(Reply::error(415, "unsupported_media_type", &msg))
}

/// The endpoint's transformer and the function name for this route, when it transforms it.
fn transformer_for<'s>(
    cx: &'s HttpContext,
    ep: &Endpoint,
    kind: JobKind,
) -> Option<(&'s transform::Code, &'static str)> {
    let code = cx.transformers.get(&ep.name)?;
    let s = &code.settings;
    match kind {
        JobKind::Message if s.input => Some((code, "handleInput")),
        JobKind::Inject if s.inject => Some((code, "handleInject")),
        JobKind::Notify if s.notify => Some((code, "handleNotify")),
        _ => None,
    }
}

/// Runs the input-side transformer: `Ok(None)` when it drops the request.
fn transform_input(
    cx: &HttpContext,
    req: &Request,
    ep: &Endpoint,
    code: &transform::Code,
    hook: &str,
    body: &[u8],
) -> Result<Option<wire::Inbound>, Reply> {
    let arg = json!({ "endpoint": transform::endpoint_arg(ep), "request": request_arg(req, ep, body) });
    // A turn of its own: the transformer sees pristine globals (`Engine::begin_turn`).
    let transformed = match with_engine(cx, |e| {
        let engine = e.get();
        engine.begin_turn();
        transform::call(engine, code, hook, &arg)
    }) {
        transform::Outcome::Replaced(v) => v,
        transform::Outcome::Dropped => return Ok(None),
        transform::Outcome::Unchanged => {
            return wire::parse_inbound(body).map(Some).map_err(|e| Reply::error(400, e.code, &e.message));
        }
        transform::Outcome::Failed(e) => {
            log::warn!("{}: {hook} failed: {e}", ep.name);
            if code.settings.abort_on_error {
                return Err(Reply::error(400, "transformer_error", &format!("the {hook} transformer failed: {e}")));
            }
            return wire::parse_inbound(body).map(Some).map_err(|e| Reply::error(400, e.code, &e.message));
        }
    };
    let bytes = serde_json::to_vec(&transformed).expect("a JSON value serialises");
    wire::parse_inbound(&bytes).map(Some).map_err(|e| {
        let msg = format!("the {hook} transformer returned an invalid message: {}", e.message);
        Reply::error(400, "invalid_request", &msg)
    })
}

/// The `request` argument of input transformers: body (JSON, form fields, or text), headers,
/// query, method, path, ip.
fn request_arg(req: &Request, ep: &Endpoint, body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    let is_form = header_value(req, "Content-Type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let body = if is_form {
        Value::Object(form_fields(&text))
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()))
    };
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), Value::String(h.value.as_str().to_owned())))
        .collect();
    let (path, query) = req.url().split_once('?').unwrap_or((req.url(), ""));
    let ip = client_ip(req, ep);
    json!({ "body": body, "headers": headers, "query": form_fields(query), "method": req.method().as_str(),
            "path": path, "ip": ip })
}

/// `a=1&b=x+y` → `{"a": "1", "b": "x y"}`.
fn form_fields(s: &str) -> serde_json::Map<String, Value> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(&k.replace('+', " ")), Value::String(percent_decode(&v.replace('+', " "))))
        })
        .collect()
}

/// 404 for an unknown token (without saying which exist).
fn endpoint<'s>(cx: &'s HttpContext, token: &str) -> Result<&'s Endpoint, Reply> {
    cx.config
        .endpoint_by_token(token)
        .ok_or_else(|| Reply::error(404, "unknown_endpoint", "no endpoint has this URL token"))
}

/// 403 for a disabled endpoint, 401 for a missing or wrong `X-Webhook-Key`.
fn endpoint_gate(ep: &Endpoint, req: &Request, admin: bool) -> Result<(), Reply> {
    if !ep.enabled {
        return Err(Reply::error(403, "endpoint_disabled", "this endpoint is disabled"));
    }
    if !admin && !ep.inbound_keys.is_empty() {
        let ok = header_value(req, "X-Webhook-Key").is_some_and(|k| key_matches(k, &ep.inbound_keys));
        if !ok {
            return Err(Reply::error(401, "unauthorized", "this endpoint needs a valid X-Webhook-Key header"));
        }
    }
    Ok(())
}

/// Reads at most `max` bytes; a declared or actual larger body is 413.
pub(super) fn read_body(req: &mut Request, max: usize) -> Result<Vec<u8>, Reply> {
    let too_large = || {
        Reply::error(413, "payload_too_large", &format!("the body is larger than {max} bytes (limits.maxBodyBytes)"))
    };
    if req.body_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(req.body_length().unwrap_or(1024).min(max));
    if let Err(e) = req.as_reader().take(max as u64 + 1).read_to_end(&mut body) {
        return Err(Reply::error(400, "invalid_request", &format!("the body could not be read: {e}")));
    }
    if body.len() > max {
        return Err(too_large());
    }
    // A byte order mark (some Windows HTTP clients send one) is no part of the JSON: it was
    // refused as invalid JSON at line 1, column 1, which said nothing of it.
    if body.starts_with(b"\xEF\xBB\xBF") {
        body.drain(..3);
    }
    Ok(body)
}

fn queue(cx: &HttpContext, req: &Request, ep: &Endpoint, m: wire::Inbound, r: MessageRoute) -> Reply {
    let trace_id = wire::new_trace_id();
    let ip = client_ip(req, ep);
    let acc = Accepted { text: m.text, data: m.data, trace_id: trace_id.clone(), ip, test_mode: r.test, at: now_ms() };
    let payload = serde_json::to_string(&acc).expect("an accepted message is plain JSON");
    let mask = ep.data_protection.mask_logging;
    log::debug!(
        "{}: {route:?} user={} session={} text={:?} data={} trace={trace_id}",
        ep.name,
        shown(mask, &m.user_id),
        shown(mask, &m.session_id),
        shown(mask, acc.text.as_deref().unwrap_or("")),
        shown(mask, &acc.data.as_ref().map(|d| Value::Object(d.clone()).to_string()).unwrap_or_default()),
        route = r.kind,
    );
    let key = SessionKey { endpoint: ep.name.clone(), user_id: m.user_id, session_id: m.session_id };
    match cx.writer.accept_here(key, r.kind, payload) {
        Ok((_, runnable)) => {
            let mut reply = Reply::json(200, json!({"status": "accepted", "traceId": trace_id}));
            reply.run_after = runnable.map(Box::new);
            reply
        }
        Err(AcceptError::Full) => Reply::error(503, "overloaded", "too many messages are waiting; send again shortly")
            .header("Retry-After", "1"),
        Err(AcceptError::Store) => {
            Reply::error(503, "store_unavailable", "the message could not be stored; send it again")
                .header("Retry-After", "5")
        }
        Err(AcceptError::Stopped) => shutting_down(),
    }
}

#[cfg(test)]
mod tests {
    /// What a request gets that is read while the server closes (`Server::refuse_with`): the
    /// 503 `shutting_down` of a message refused during the shutdown, with its headers (tiny_http
    /// adds `Connection: close`).
    #[test]
    fn the_refusal_is_the_shutdown_503() {
        let resp = super::refusal();
        assert_eq!(resp.status_code().0, 503);
        let header = |name: &str| {
            resp.headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().to_owned())
        };
        assert_eq!(header("Content-Type").as_deref(), Some("application/json; charset=utf-8"));
        assert_eq!(header("Retry-After").as_deref(), Some("5"));
        let mut body = String::new();
        std::io::Read::read_to_string(&mut resp.into_reader(), &mut body).unwrap();
        assert!(body.starts_with(r#"{"error":{"code":"shutting_down""#), "{body}");
    }
}
