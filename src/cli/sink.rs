//! `hookflow sink`: a webhook receiver for trying things out. Prints every POST it receives
//! (time, `X-Hookflow-Seq`, whether Basic auth matched, the body) and answers 200, also when the
//! credentials do not match.

use std::io::{Read, Write};

use base64::Engine;

/// Expected Basic credentials, if any.
pub struct SinkAuth {
    pub user: String,
    pub password: String,
}

/// Serves until the process is stopped; `Err` when the address cannot be bound.
pub fn run(listen: &str, auth: Option<SinkAuth>) -> Result<(), String> {
    let addr = tiny_http::ConfigListenAddr::from_socket_addrs(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    // Outputs larger than tiny_http's default body bound (1 MiB) are read too: their first
    // MiB is printed.
    let limits = tiny_http::Limits { max_body_bytes: 64 << 20, ..tiny_http::Limits::default() };
    let server = tiny_http::Server::new(tiny_http::ServerConfig { addr, ssl: None, limits })
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let _ = writeln!(std::io::stderr(), "hookflow sink: listening on http://{}", server.server_addr());
    let expected = auth.map(|a| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", a.user, a.password));
        format!("Basic {token}")
    });
    for mut req in server.incoming_requests() {
        let mut body = String::new();
        let _ = req.as_reader().take(1 << 20).read_to_string(&mut body);
        let header = |name: &str| {
            req.headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().to_owned())
        };
        let seq = header("X-Hookflow-Seq").unwrap_or_else(|| "-".into());
        let auth = match (&expected, header("Authorization")) {
            (None, None) => "none",
            (None, Some(_)) => "sent",
            (Some(e), Some(got)) if *e == got => "ok",
            (Some(_), _) => "FAILED",
        };
        // Escaped as the logs are: a body with a newline or an ESC must not pass for two POSTs
        // or recolour the terminal.
        let line = format!(
            "{} {} {} seq={seq} auth={auth} {}",
            crate::util::iso8601(crate::util::now_ms()),
            req.method(),
            crate::ops::logging::escape_controls(req.url()),
            crate::ops::logging::escape_controls(&body)
        );
        let _ = writeln!(std::io::stdout().lock(), "{line}");
        // 200 even when the credentials do not match (config.md): a 401 would turn every output
        // into a dead letter, while `auth=FAILED` on the line shows the mistake where one looks.
        let _ = req.respond(tiny_http::Response::from_string("").with_status_code(200));
    }
    Ok(())
}
