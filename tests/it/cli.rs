//! config.md Command line, through the binary: `check` (good and broken configs and Flows),
//! `try` driven through stdin, `sink`, `keygen`, `--version`, each command's `--help`, and
//! mistyped commands and options.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::bot::*;
use crate::support::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn show(o: &Output) -> String {
    format!("status {:?}\n--- stdout\n{}--- stderr\n{}", o.status.code(), stdout(o), stderr(o))
}

#[test]
fn check_accepts_the_example_configs_with_one_line_per_endpoint() {
    let demo = examples_dir().join("hookflow.json");
    let o = run_cli(
        &["check", "--config", demo.to_str().unwrap()],
        &[("DEMO_WEBHOOK_PASSWORD", "secret-pw-123")],
        "",
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "one line per endpoint: {}", show(&o));
    // The unit runs check before every start, so its output is in the journal: no URL token.
    assert!(lines[0].starts_with("ok  demo -> http://"), "{}", show(&o));
    assert!(lines[1].starts_with("ok  demo-translated -> http://"), "{}", show(&o));
    assert!(lines[1].contains("; translated by libretranslate (flow en, user auto)"), "{}", show(&o));
    assert!(!stdout(&o).contains("demo-4e5e2f01110c935fff81ec54"), "check prints the URL token: {}", show(&o));
    assert!(!stdout(&o).contains("secret-pw-123") && !stderr(&o).contains("secret-pw-123"), "the password leaked");

    let support = examples_dir().join("support.json");
    let o = run_cli(&["check", "--config", support.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{}", show(&o));
    assert!(lines[0].starts_with("ok  support -> "), "{}", show(&o));
    assert!(!stdout(&o).contains("support-7f3a9c2e4b1d8f60"), "check prints the URL token: {}", show(&o));
    assert!(lines[0].contains("4 intents"), "the summary counts the Flow's intents: {}", show(&o));
}

#[test]
fn check_reports_a_typo_and_a_bad_token_with_file_path_and_suggestion() {
    let dir = TempDir::new("cli-bad-config");
    let cfg = json!({
        "listen": "127.0.0.1:0",
        "endpoints": [{ "name": "main", "urlToken": "bad token!", "flow": "flow.json",
                        "webhok": { "url": "http://127.0.0.1:9/hook" } }]
    });
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let o = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    let typo = err
        .lines()
        .find(|l| l.contains("endpoints[0].webhok"))
        .unwrap_or_else(|| panic!("the typo's JSON path is not named: {}", show(&o)));
    assert!(typo.contains("hookflow.json"), "the file is named: {typo}");
    assert!(typo.contains("did you mean \"webhook\""), "the key is suggested: {typo}");
    let token = err
        .lines()
        .find(|l| l.contains("endpoints[0].urlToken"))
        .unwrap_or_else(|| panic!("the bad token's JSON path is not named: {}", show(&o)));
    assert!(token.contains("hookflow.json"), "{token}");
}

#[test]
fn check_reports_every_flow_and_transformer_problem_with_its_place() {
    let dir = TempDir::new("cli-bad-flow");
    write_text(&dir.path, "t.js", "function handleInput({ request ) { return request.body; }\n");
    let cfg = json!({
        "listen": "127.0.0.1:0",
        "endpoints": [{ "name": "main", "urlToken": TOKEN, "flow": "flow.json",
                        "webhook": { "url": "http://127.0.0.1:9/hook" },
                        "transformer": { "file": "t.js", "input": true } }]
    });
    let flow = json!({ "name": "broken", "nodes": [
        { "type": "sya", "text": "typo" },
        { "id": "a", "type": "say", "text": "one" },
        { "id": "a", "type": "say", "text": "two" },
        { "type": "goTo", "target": "nowhere" },
        { "type": "code", "code": "let x = ;" },
        { "type": "say", "txt": "typo in a key" },
        { "type": "sleep", "ms": 60000 }
    ]});
    let path = write_files(&dir.path, &cfg, &[("flow.json", &flow)]);
    let o = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    for (file, place, what) in [
        ("flow.json", "nodes[0].type", "did you mean \"say\""),
        ("flow.json", "nodes[2].id", "duplicate"),
        ("flow.json", "nodes[3].target", "nowhere"),
        ("flow.json", "nodes[4].code", "SyntaxError"),
        ("flow.json", "nodes[5].txt", "did you mean \"text\""),
        ("flow.json", "nodes[6].ms", "10000"),
        ("t.js", "", "SyntaxError"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(file) && l.contains(place) && l.contains(what)),
            "{file} {place} ({what}) is not reported: {}",
            show(&o)
        );
    }
}

#[test]
fn check_finds_a_javascript_syntax_error_in_every_template_field() {
    let dir = TempDir::new("cli-bad-templates");
    let bad = "{{ input.text. }}";
    let flow = json!({ "name": "templates", "nodes": [
        { "type": "say", "text": format!("a {bad}") },
        { "type": "say", "texts": [format!("b {bad}")] },
        { "type": "say", "data": { "x": bad } },
        { "type": "http", "url": format!("http://127.0.0.1:9/{bad}"), "headers": { "X-H": bad }, "body": { "b": bad },
          "contextKey": "r" },
        { "type": "question", "text": format!("q {bad}"), "reprompt": format!("r {bad}") }
    ]});
    let path = write_files(&dir.path, &config("http://127.0.0.1:9/hook"), &[("flow.json", &flow)]);
    let o = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    let missing: Vec<&str> = [
        "nodes[0].text",
        "nodes[1].texts[0]",
        // Inside data, the key itself (the place was the whole `data`).
        "nodes[2].data.x",
        "nodes[3].url",
        "nodes[3].headers.X-H",
        "nodes[3].body.b",
        "nodes[4].text",
        "nodes[4].reprompt",
    ]
    .into_iter()
    .filter(|place| !err.lines().any(|l| l.contains(&format!("{place}:")) && l.contains("SyntaxError")))
    .collect();
    assert!(missing.is_empty(), "syntax errors not reported at {missing:?}:\n{}", show(&o));
}

#[test]
fn try_talks_to_the_flow_through_stdin() {
    let dir = TempDir::new("cli-try");
    let api = Mock::new(|hit| MockReply::json(200, json!({ "path": hit.url })));
    let flow = json!({ "name": "try", "nodes": [
        { "type": "question", "questionType": "number", "text": "How many?", "reprompt": "A number, please." },
        { "type": "say", "text": "You said {{input.result}}" },
        { "type": "sleep", "ms": 3000 },
        { "type": "say", "text": "later {{input.text.toUpperCase()}}" },
        { "type": "waitForInput" },
        { "type": "say", "text": "data k={{input.data.k}} mode={{input.mode}}" },
        { "type": "http", "method": "GET", "url": api.url("/things/{{input.data.k}}"), "contextKey": "r" },
        { "type": "code", "code": "api.output('api ' + context.r.body.path);" }
    ]});
    let path = write_files(&dir.path, &config("http://127.0.0.1:9/hook"), &[("flow.json", &flow)]);
    let script = "hi\nmany\n3 apples\n{\"k\": 7}\n/reset\nhello\n";
    let started = Instant::now();
    let o = run_cli(&["try", "--config", path.to_str().unwrap(), "--endpoint", "main"], &[], script, None);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(started.elapsed() < Duration::from_secs(3), "try waited for the sleep");
    let out = stdout(&o);
    let bot: Vec<&str> = out.lines().filter(|l| l.starts_with("bot")).collect();
    assert_eq!(
        bot,
        [
            "bot: How many?",
            "bot: A number, please.",
            "bot: You said 3",
            "bot (after 3000 ms): later 3 APPLES",
            "bot: data k=7 mode=DataOnly",
            "bot: api /things/7",
            "bot: How many?"
        ],
        "{}",
        show(&o)
    );
    assert!(out.contains("(session reset)"), "{}", show(&o));
    assert!(!out.contains("you> "), "no prompt when stdin is not a terminal: {}", show(&o));
    let call = format!("  (http GET {} -> 200)", api.url("/things/7"));
    assert!(out.lines().any(|l| l == call), "the http call and its status are shown: {}", show(&o));
    assert_eq!(api.recv(WAIT).url, "/things/7", "the http node's request is made");

    let o = run_cli(&["try", "--config", path.to_str().unwrap(), "--endpoint", "nope"], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("main"), "the error lists the endpoints: {}", show(&o));

    // A mistyped command is sent as text, with a word saying so.
    let o = run_cli(&["try", "--config", path.to_str().unwrap()], &[], "/rest\n", None);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stdout(&o).contains("(sent as text: /rest is not a command here;"), "{}", show(&o));
    assert!(stdout(&o).contains("bot: How many?"), "the Flow got it: {}", show(&o));
}

#[test]
fn try_asks_the_endpoints_nlu_as_the_server_does() {
    // `try` and the worker share what comes before the Flow (`driver::understand`).
    let dir = TempDir::new("cli-try-nlu");
    let rasa = Mock::new(|hit| {
        let name = if hit.json["text"] == "where is 4711" { "orderStatus" } else { "greeting" };
        MockReply::json(200, json!({ "intent": { "name": name, "confidence": 0.93 }, "entities": [] }))
    });
    let flow = json!({ "name": "nlu", "nodes": [{ "type": "say", "text": "intent={{input.intent}}" }] });
    let mut cfg = config("http://127.0.0.1:9/hook");
    cfg["endpoints"][0]["nlu"] = json!({ "type": "rasa", "url": rasa.base, "timeoutMs": 2000 });
    let path = write_files(&dir.path, &cfg, &[("flow.json", &flow)]);
    let o = run_cli(&["try", "--config", path.to_str().unwrap()], &[], "where is 4711\nhi\n", None);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    let bot: Vec<&str> = out.lines().filter(|l| l.starts_with("bot")).collect();
    assert_eq!(bot, ["bot: intent=orderStatus", "bot: intent=greeting"], "{}", show(&o));
    assert!(out.contains("(intent orderStatus, score 0.93)"), "{}", show(&o));
    assert_eq!(rasa.recv(WAIT).json, json!({ "text": "where is 4711" }));
}

#[test]
fn keygen_prints_a_key_and_its_sha256_form() {
    let o = run_cli(&["keygen"], &[], "", None);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no key line: {}", show(&o)));
    let digest = out
        .lines()
        .find_map(|l| l.split_once("sha256:").map(|(_, d)| d.trim()))
        .unwrap_or_else(|| panic!("no sha256: line: {}", show(&o)));
    assert!(key.len() >= 32, "a short key: {key:?}");
    let want: String = Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, want, "the sha256: form is the digest of the printed key");
    let again = run_cli(&["keygen"], &[], "", None);
    assert_ne!(stdout(&again), out, "keys are random");
}

#[test]
fn version_and_an_unknown_command() {
    let o = run_cli(&["--version"], &[], "", None);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(stdout(&o).trim(), format!("hookflow {}", env!("CARGO_PKG_VERSION")));

    let o = run_cli(&["frobnicate"], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("frobnicate"), "{}", show(&o));
    assert!(!stderr(&o).contains("did you mean"), "nothing is near frobnicate: {}", show(&o));
}

#[test]
fn a_mistyped_command_or_option_gets_the_nearest_one() {
    let o = run_cli(&["serv", "--config", "x.json"], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(stderr(&o).lines().next(), Some(r#"unknown command "serv"; did you mean "serve"?"#), "{}", show(&o));
    assert!(stdout(&o).is_empty(), "{}", show(&o));

    let o = run_cli(&["check", "--confg", "x.json"], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let first = stderr(&o).lines().next().unwrap_or_default().to_owned();
    assert_eq!(first, r#"unknown argument "--confg" for hookflow check; did you mean "--config"?"#, "{}", show(&o));
    assert!(stderr(&o).contains("hookflow check --config FILE"), "check's usage follows: {}", show(&o));

    // An option of another command is named as such, not silently ignored.
    let o = run_cli(&["sink", "--config", "x.json"], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(stderr(&o).lines().next(), Some("hookflow sink does not take --config"), "{}", show(&o));
}

#[test]
fn every_command_prints_its_usage_with_help_and_no_arguments_print_the_overview() {
    for cmd in ["serve", "check", "try", "sink", "keygen"] {
        for help in ["--help", "-h"] {
            let o = run_cli(&[cmd, help], &[], "", None);
            assert_eq!(o.status.code(), Some(0), "{cmd} {help}: {}", show(&o));
            let out = stdout(&o);
            assert!(out.starts_with(&format!("USAGE:\n    hookflow {cmd}")), "{cmd} {help}: {}", show(&o));
            let others = ["serve", "check", "try ", "sink", "keygen"].iter().filter(|c| !c.starts_with(cmd));
            for other in others {
                assert!(!out.contains(&format!("hookflow {other}")), "{cmd}'s usage only: {}", show(&o));
            }
        }
        // A missing value is an error, --help or not.
        let o = run_cli(&[cmd, "--help", "--config"], &[], "", None);
        assert_eq!(o.status.code(), Some(1), "a missing value is still an error: {}", show(&o));
        let o = run_cli(&["help", cmd], &[], "", None);
        assert_eq!(o.status.code(), Some(0), "help {cmd}: {}", show(&o));
        assert!(stdout(&o).starts_with(&format!("USAGE:\n    hookflow {cmd}")), "help {cmd}: {}", show(&o));
    }
    let o = run_cli(&["--config", "x.json", "--help"], &[], "", None);
    assert_eq!(o.status.code(), Some(0), "serve is the default command: {}", show(&o));
    assert!(stdout(&o).starts_with("USAGE:\n    hookflow serve"), "{}", show(&o));

    for args in [&[][..], &["--help"][..], &["help"][..]] {
        let o = run_cli(args, &[], "", None);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", show(&o));
        for cmd in ["serve", "check", "try", "sink", "keygen"] {
            assert!(stdout(&o).contains(&format!("hookflow {cmd}")), "{args:?} lists {cmd}: {}", show(&o));
        }
    }
}

/// `hookflow sink` as a child: its address (from stderr) and its printed lines (stdout).
struct SinkProc {
    child: std::process::Child,
    url: String,
    lines: crossbeam_channel::Receiver<String>,
}

impl SinkProc {
    fn start(args: &[&str]) -> SinkProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookflow"))
            .args(["sink", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hookflow sink");
        let (tx, lines) = crossbeam_channel::unbounded();
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        std::thread::spawn(move || out.lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
        let (addr_tx, addr_rx) = crossbeam_channel::bounded(1);
        let err = BufReader::new(child.stderr.take().expect("piped stderr"));
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                if let Some(a) = l.split("listening on ").nth(1) {
                    let _ = addr_tx.send(a.trim().to_owned());
                }
            }
        });
        let mut sink = SinkProc { child, url: String::new(), lines };
        sink.url = addr_rx.recv_timeout(WAIT).expect("the sink says where it listens");
        sink
    }
}

impl Drop for SinkProc {
    fn drop(&mut self) {
        // Only the child this test started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sink_answers_200_and_prints_whether_basic_auth_matched() {
    use base64::Engine as _;
    let basic = |cred: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(cred));
    let sink = SinkProc::start(&["--user", "bot", "--password", "pw-1"]);
    let url = format!("{}/hook", sink.url);
    for (auth, seq, shown) in [
        (Some(basic("bot:wrong")), "7", "auth=FAILED"),
        (None, "8", "auth=FAILED"),
        (Some(basic("bot:pw-1")), "9", "auth=ok"),
    ] {
        let mut headers = vec![("X-Hookflow-Seq", seq), ("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let r = request("POST", &url, Some(r#"{"text":"hi"}"#), &headers);
        assert_eq!(r.status, 200, "the sink answers 200 whatever the credentials ({shown}): {}", r.body);
        let line = sink.lines.recv_timeout(WAIT).expect("the sink prints a line per POST");
        assert!(line.contains(&format!("seq={seq} {shown} ")), "{line}");
        assert!(line.contains("POST /hook") && line.ends_with(r#"{"text":"hi"}"#), "{line}");
    }

    let open = SinkProc::start(&[]);
    let r = request("POST", &format!("{}/x", open.url), Some("{}"), &[("Authorization", &basic("a:b"))]);
    assert_eq!(r.status, 200, "{}", r.body);
    let line = open.lines.recv_timeout(WAIT).expect("a line");
    assert!(line.contains("auth=sent"), "{line}");
    // A body with a newline and an ESC is one line, escaped as the logs escape them: it passed
    // for two POSTs, or recoloured the terminal.
    let r = request("POST", &format!("{}/x", open.url), Some("{}\nfake line \u{1b}[31m"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let line = open.lines.recv_timeout(WAIT).expect("a line");
    assert!(line.ends_with("{}\\nfake line \\u{1b}[31m"), "{line}");
}

#[test]
fn check_reports_config_and_flow_errors_in_one_run() {
    let dir = TempDir::new("cli-all-errors");
    let mut cfg = config("http://127.0.0.1:9/hook");
    cfg["workers"] = json!(-1);
    let flow = json!({ "name": "typo", "nodes": [{ "type": "sya", "text": "hi" }] });
    // A second endpoint whose Flow hands over, without a handover provider: the config's
    // error does not hide that one either.
    let mut second = cfg["endpoints"][0].clone();
    second["name"] = json!("agents");
    second["urlToken"] = json!("agents-token-0001");
    second["flow"] = json!("agents.json");
    cfg["endpoints"].as_array_mut().unwrap().push(second);
    let agents = json!({ "name": "agents", "nodes": [{ "type": "handover", "text": "one moment" }] });
    let path = write_files(&dir.path, &cfg, &[("flow.json", &flow), ("agents.json", &agents)]);
    let o = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "one config error, one Flow error, one missing provider: {}", show(&o));
    assert!(lines[0].contains("hookflow.json: workers: expected an integer"), "{}", show(&o));
    assert!(lines[1].contains("flow.json: nodes[0].type: unknown node type \"sya\""), "{}", show(&o));
    assert!(
        lines[2].contains("hookflow.json: endpoints[1]: the Flow") && lines[2].contains("no handover provider"),
        "{}",
        show(&o)
    );
    assert!(lines[2].contains("add \"handover\": {\"type\": \"webhook\""), "one line, one space: {}", show(&o));
    assert!(stdout(&o).is_empty(), "no summary for a config with errors: {}", show(&o));
}

#[test]
fn check_refuses_flow_and_transformer_files_outside_the_config_folder() {
    let outside = TempDir::new("cli-outside-secret");
    write_text(&outside.path, "secret.json", &json!({ "nodes": [] }).to_string());
    write_text(&outside.path, "t.js", "function handleInput({ request }) { return request.body; }\n");
    let dir = TempDir::new("cli-outside");
    std::os::unix::fs::symlink(outside.path.join("secret.json"), dir.path.join("link.json")).unwrap();
    let flow = json!({ "name": "escape", "nodes": [
        { "type": "goTo", "target": "/dev/zero#x" },
        { "type": "executeFlow", "flow": "link.json" }
    ]});
    let mut cfg = config("http://127.0.0.1:9/hook");
    let t = outside.path.join("t.js");
    cfg["endpoints"][0]["transformer"] = json!({ "file": t.to_str().unwrap() });
    let mut second = cfg["endpoints"][0].clone();
    second["name"] = json!("second");
    second["urlToken"] = json!("second-token-0001");
    second["flow"] = json!("link.json");
    second.as_object_mut().unwrap().remove("transformer");
    cfg["endpoints"].as_array_mut().unwrap().push(second);
    let path = write_files(&dir.path, &cfg, &[("flow.json", &flow)]);
    let started = Instant::now();
    let o = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert!(started.elapsed() < Duration::from_secs(10), "check hung: {}", show(&o));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = stderr(&o);
    for (file, place, what) in [
        ("hookflow.json", "endpoints[0].transformer.file", "outside the config folder"),
        ("flow.json", "nodes[0].target", "outside the config folder"),
        ("flow.json", "link.json", "outside the config folder"),
        ("link.json", "cannot read the Flow file", "outside the config folder"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(file) && l.contains(place) && l.contains(what)),
            "{file} {place} ({what}) is not reported: {}",
            show(&o)
        );
    }
    assert_eq!(err.lines().count(), 4, "{}", show(&o));
}

/// A Flow file that is not there is the config's mistake: said at the config's key (it named
/// only the missing file).
#[test]
fn check_names_the_config_key_of_a_missing_flow_file() {
    let dir = TempDir::new("cli-missing-flow");
    let mut cfg = config("http://127.0.0.1:9/hook");
    cfg["endpoints"][0]["flow"] = json!("flows/missing.json");
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let o = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let line = stderr(&o).lines().find(|l| l.contains("missing.json")).map(str::to_owned).unwrap_or_default();
    assert!(line.contains("hookflow.json: endpoints[0].flow: cannot read the Flow file"), "{}", show(&o));
    assert!(line.contains("the path is relative to the config's folder"), "{}", show(&o));
}

#[test]
fn serve_workers_0_is_one_per_cpu_as_in_the_file_and_too_many_is_refused() {
    let dir = TempDir::new("cli-workers");
    let path = write_files(&dir.path, &config("http://127.0.0.1:9/"), &[("flow.json", &echo_flow())]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let p = crate::child::Launch::new(&path, dir.path.join("serve.log")).arg("--workers").arg("0").start();
    assert!(p.log_text().contains(&format!(", {cpus} worker(s),")), "{}", p.log_text());
    drop(p);
    let o = run_cli(&["serve", "--config", path.to_str().unwrap(), "--workers", "5000"], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "a usage error: {}", show(&o));
    assert!(stderr(&o).contains("--workers must be from 0 (one per CPU) to 1024, got 5000"), "{}", show(&o));
}

/// The test config with `n` endpoints, all on `flow.json`.
fn endpoints_sharing_one_flow(n: usize) -> serde_json::Value {
    let mut cfg = config("http://127.0.0.1:9/");
    for i in 1..n {
        let mut ep = cfg["endpoints"][0].clone();
        ep["name"] = json!(format!("ep{i}"));
        ep["urlToken"] = json!(format!("token-{i:02}-0123456789abcdef"));
        cfg["endpoints"].as_array_mut().unwrap().push(ep);
    }
    cfg
}

/// `hookflow check ... | head -1`: the reader goes away before everything is printed. The
/// output is information only; `println!` panicked on the broken pipe ("failed printing to
/// stdout"), and the exit status no longer said whether the config was good.
#[test]
fn check_into_a_closed_pipe_still_exits_with_the_verdict() {
    let dir = TempDir::new("cli-pipe");
    let cfg = endpoints_sharing_one_flow(40);
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookflow"))
        .args(["check", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// The usage, a usage error and `--version` into closed pipes (`hookflow --help | head -1`,
/// `hookflow bogus 2>&1 | true`): `print!` and `eprintln!` panicked with exit 101.
#[test]
fn usage_and_errors_into_closed_pipes_keep_their_exit_codes() {
    for (args, code) in
        [(&["--help"][..], 0), (&["check", "--help"][..], 0), (&["bogus"][..], 1), (&["--version"][..], 0)]
    {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookflow"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        drop(child.stderr.take());
        assert_eq!(child.wait().unwrap().code(), Some(code), "{args:?}");
    }
}

#[test]
fn try_without_endpoint_names_the_configs_endpoints() {
    let dir = TempDir::new("cli-try-several");
    let path = write_files(&dir.path, &endpoints_sharing_one_flow(3), &[("flow.json", &echo_flow())]);
    let o = run_cli(&["try", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("when the config has several; it has: main, ep1, ep2"), "{}", show(&o));
}

#[test]
fn a_data_dir_that_is_a_file_is_said_so() {
    let dir = TempDir::new("cli-data-file");
    let cfg = on_sqlite(config("http://127.0.0.1:9/hook"));
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let file = write_text(&dir.path, "not-a-dir", "x");
    let o =
        run_cli(&["serve", "--config", path.to_str().unwrap(), "--data-dir", file.to_str().unwrap()], &[], "", None);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("it is a file, not a directory: point dataDir (or --data-dir) at a directory"),
        "{}",
        show(&o)
    );
}

#[test]
fn help_help_and_stray_version_arguments() {
    let o = run_cli(&["help", "--help"], &[], "", None);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stdout(&o).contains("hookflow check --config FILE"), "the overview: {}", show(&o));
    let o = run_cli(&["--version", "extra"], &[], "", None);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("takes no arguments, got \"extra\""), "{}", show(&o));
    // The overview says what `try --help` says: --endpoint may be left out.
    let o = run_cli(&[], &[], "", None);
    assert!(stdout(&o).contains("hookflow try --config FILE [--endpoint NAME]"), "{}", show(&o));
}

/// A broken Flow file used by several endpoints: each of its problems is said once (it was said
/// once per endpoint, six times in an audit).
#[test]
fn check_says_a_shared_flows_problems_once() {
    let dir = TempDir::new("cli-shared-flow");
    let cfg = endpoints_sharing_one_flow(4);
    let broken = json!({ "nodes": [ { "type": "say" } ] });
    let path = write_files(&dir.path, &cfg, &[("flow.json", &broken)]);
    let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("nodes[0]").count(), 1, "{stderr}");
}
