//! The web console at `/console` (console.md): one page of hand-written HTML, CSS and JavaScript
//! in `console/`, compiled into the binary (no framework, no build step, nothing from a CDN).
//! The page holds no data: everything it shows comes from the admin API (`console_api.rs`, and
//! `admin.rs`), called with the admin key the user gives it.
//!
//! Off unless `console.enabled` (then 404 like any unknown route). Every answer here carries the
//! security headers: a Content-Security-Policy that allows scripts, styles and calls from this
//! origin only (no inline script, no third party), no framing, no referrer.

use tiny_http::{Method, Request};

use super::HttpContext;
use super::reply::{Reply, Route};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const RECORDS: &str = include_str!("console/console-records.js");
const STYLE: &str = include_str!("console/console.css");

/// Everything from this origin only; `data:` images for the favicon; no inline script or style
/// element (the page sets styles through the CSSOM, which CSP allows).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Routes `/console/{rest..}`.
pub(crate) fn route(cx: &HttpContext, req: &Request, rest: &[&str]) -> Reply {
    secure(page(cx, req, rest)).route(Route::Console)
}

fn page(cx: &HttpContext, req: &Request, rest: &[&str]) -> Reply {
    if !cx.config.console.enabled {
        return Reply::error(404, "not_found", "the console is off; set console.enabled to true (it needs adminKeys)");
    }
    if *req.method() != Method::Get && *req.method() != Method::Head {
        return Reply::error(405, "method_not_allowed", "use GET").header("Allow", "GET");
    }
    let (body, content_type) = match rest {
        [] | [""] => (INDEX, "text/html; charset=utf-8"),
        ["console.js"] => (SCRIPT, "text/javascript; charset=utf-8"),
        ["console-records.js"] => (RECORDS, "text/javascript; charset=utf-8"),
        ["console.css"] => (STYLE, "text/css; charset=utf-8"),
        _ => return Reply::error(404, "not_found", "no such console file; open /console"),
    };
    Reply::text(200, body.to_owned()).content_type(content_type)
}

fn secure(reply: Reply) -> Reply {
    reply
        .header("Content-Security-Policy", CSP)
        .header("X-Frame-Options", "DENY")
        .header("Referrer-Policy", "no-referrer")
        .header("X-Content-Type-Options", "nosniff")
        // The files change with the binary: always revalidate (they are small).
        .header("Cache-Control", "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style_and_no_third_party_origin() {
        assert!(!INDEX.contains("<script>") && !INDEX.contains("<style"), "CSP forbids inline code");
        assert!(!INDEX.contains(" style="), "no inline styles");
        let handler = INDEX.split(" on").skip(1).any(|rest| {
            rest.chars().take_while(char::is_ascii_alphabetic).count() > 2
                && rest.trim_start_matches(|c: char| c.is_ascii_alphabetic()).starts_with('=')
        });
        assert!(!handler, "no inline event handlers");
        for file in [INDEX, SCRIPT, RECORDS, STYLE] {
            // The one URL allowed is SVG's namespace name, which is never fetched.
            let urls = file.replace("http://www.w3.org/2000/svg", "");
            assert!(!urls.contains("http://") && !urls.contains("https://"), "everything is from this origin");
        }
        for script in [SCRIPT, RECORDS] {
            assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"), "text only, never HTML");
        }
        let total = INDEX.len() + SCRIPT.len() + RECORDS.len() + STYLE.len();
        assert!(total < 150 * 1024, "the console is {total} bytes; keep it under 150 KB");
    }
}
