//! The README's curl examples, run as a reader would paste them, so the README cannot drift
//! from what hookflow answers.
//!
//! Every fenced block of README.md with a line starting with `curl` is run by bash, whole and in
//! order (so its variables, like `T=...`, and functions, like `say`, are the README's own),
//! against the `hookflow` binary started on the example config. What is rewritten, and nothing
//! else:
//! - in the blocks, `localhost:8080` and `127.0.0.1:8080` (the example's `listen`) become
//!   `127.0.0.1:<free port>`;
//! - in a copy of `examples/hookflow.json`: `listen` is that port, `webhook.url` the recording
//!   sink's URL (instead of the demo `hookflow sink` on :9000), `dataDir` a temp dir, and its
//!   Flow files copied beside it; `DEMO_WEBHOOK_PASSWORD` is set as `make run`
//!   sets it;
//! - `curl` is a bash function that calls the real curl (adding `-S`, so a transport error is
//!   printed) and records each call's status and arguments, and its answer;
//! - the commands that start services the example needs beside hookflow (`docker run` of a
//!   LibreTranslate server, say: `STUBBED`) are bash functions that only say they were skipped
//!   (the test must not start containers; without the server, the message goes through
//!   untranslated, as the README says). Any other line that fails fails the test (`set -e`).
//!
//! Every call must answer 2xx, and the Notify's text must reach the webhook.
//!
//! The handover section's block is for `examples/handover.json` (another config, and its
//! `handoverId` is read off the sink by the reader): its steps are run by
//! `handover::the_handover_example_passes_check_and_hands_over_to_the_sink` instead.

use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::bot::examples_dir;
use crate::child::Launch;
use crate::support::*;

/// The URL token of `examples/handover.json`: blocks with it are not for the demo config.
const HANDOVER_EXAMPLE_TOKEN: &str = "helpdesk-8a41c07d2e9b5f36";

/// Commands of the README's blocks that start other services: not run by the test.
const STUBBED: [&str; 3] = ["docker", "pip", "libretranslate"];

/// Where the README's examples expect hookflow.
const README_ADDRS: [&str; 2] = ["localhost:8080", "127.0.0.1:8080"];

/// The fenced blocks of a Markdown text, each as its lines.
fn fenced_blocks(md: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(b) => blocks.push(b),
                None => current = Some(Vec::new()),
            }
        } else if let Some(b) = current.as_mut() {
            b.push(line);
        }
    }
    blocks
}

/// The commands of a block that start with `curl`, with their `\` continuation lines joined.
fn curl_commands(block: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = block.iter();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("curl ") {
            continue;
        }
        let mut cmd = line.trim().to_owned();
        while let Some(head) = cmd.strip_suffix('\\') {
            cmd = format!("{} {}", head.trim_end(), lines.next().map_or("", |l| l.trim()));
        }
        out.push(cmd);
    }
    out
}

/// The example config with the rewrites named in the module doc; its Flow files are copied
/// beside it (Flow files must be in the config's folder).
fn example_config(port: u16, webhook: &str, dir: &std::path::Path) -> Value {
    let data_dir = dir.join("data");
    let text = std::fs::read_to_string(examples_dir().join("hookflow.json")).expect("read examples/hookflow.json");
    let mut cfg: Value = serde_json::from_str(&text).expect("examples/hookflow.json is JSON");
    assert_eq!(cfg["listen"], "127.0.0.1:8080", "the README's examples expect the example's listen address");
    cfg["listen"] = format!("127.0.0.1:{port}").into();
    cfg["dataDir"] = data_dir.to_str().expect("a UTF-8 temp path").into();
    let endpoints = cfg["endpoints"].as_array_mut().expect("endpoints");
    for ep in endpoints {
        let flow = ep["flow"].as_str().expect("a flow path").to_owned();
        let to = dir.join(&flow);
        std::fs::create_dir_all(to.parent().expect("a Flow file is in a folder")).expect("create the flows folder");
        std::fs::copy(examples_dir().join(&flow), &to).expect("copy the example Flow");
        ep["webhook"]["url"] = webhook.into();
    }
    cfg
}

#[test]
fn the_readme_curl_examples_answer_2xx_against_the_example_config() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let blocks: Vec<Vec<&str>> = fenced_blocks(&readme)
        .into_iter()
        .filter(|b| !curl_commands(b).is_empty() && !b.iter().any(|l| l.contains(HANDOVER_EXAMPLE_TOKEN)))
        .collect();
    let commands: Vec<String> = blocks.iter().flat_map(|b| curl_commands(b)).collect();
    assert!(commands.len() >= 2, "the README's curl examples were not found: {commands:?}");
    for c in &commands {
        assert!(README_ADDRS.iter().any(|a| c.contains(a)), "a curl example this test cannot point at hookflow: {c}");
        assert!(!c.contains(" -o ") && !c.contains(" -w "), "the recording wrapper sets -o and -w itself: {c}");
    }

    let sink = Sink::new();
    let dir = TempDir::new("readme");
    let port = free_port();
    let cfg = example_config(port, &sink.url, &dir.path);
    let config_path = dir.join("hookflow.json");
    std::fs::write(&config_path, cfg.to_string()).expect("write the config");
    // The password `make run` gives the demo sink (Makefile, DEMO_PASSWORD).
    let _server =
        Launch::new(&config_path, dir.join("server.log")).env("DEMO_WEBHOOK_PASSWORD", "demo-password").start();

    let calls = dir.join("calls");
    let mut prelude = r#"set -eu
curl() {
  local code
  code=$(command curl -S -o "$HF_ANSWER" -w '%{http_code}' "$@") || code="curl-failed-$?"
  printf '%s %s | %s\n' "$code" "$*" "$(head -c 300 "$HF_ANSWER" 2>/dev/null)" >> "$HF_CALLS"
}
"#
    .to_owned();
    for name in STUBBED {
        prelude.push_str(&format!("{name}() {{ echo \"(not run by the test: {name} $*)\" >&2; }}\n"));
    }
    for block in &blocks {
        let mut script = format!("{prelude}{}\n", block.join("\n"));
        for addr in README_ADDRS {
            script = script.replace(addr, &format!("127.0.0.1:{port}"));
        }
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("HF_CALLS", &calls)
            .env("HF_ANSWER", dir.join("answer"))
            .output()
            .expect("run bash");
        assert!(out.status.success(), "the block failed:\n{script}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let recorded = std::fs::read_to_string(&calls).unwrap_or_default();
    let recorded: Vec<&str> = recorded.lines().collect();
    assert!(recorded.len() >= commands.len(), "fewer calls than curl lines ran: {recorded:#?}");
    for call in &recorded {
        assert!(call.starts_with('2'), "a README example did not answer 2xx: {call}");
    }

    // The Notify goes straight to the webhook: its text arrives (with the other outputs).
    let notify_text = commands
        .iter()
        .filter(|c| c.contains("/notify/"))
        .find_map(|c| {
            let data = c.split("-d '").nth(1)?.split('\'').next()?;
            serde_json::from_str::<Value>(data).ok()?["text"].as_str().map(str::to_owned)
        })
        .expect("the README has a Notify example with a JSON body");
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !seen.contains(&notify_text) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sink.rx.recv_timeout(left) {
            Ok(hit) => {
                assert!(hit.header("Authorization").is_some_and(|a| a.starts_with("Basic ")), "Basic auth is sent");
                seen.push(hit.text().to_owned());
            }
            Err(_) => panic!("the Notify text {notify_text:?} did not reach the webhook; got {seen:?}"),
        }
    }
}
