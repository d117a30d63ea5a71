//! A small W3C WebDriver client (https://www.w3.org/TR/webdriver2/, "List of endpoints") over
//! ureq, driving Debian's `chromedriver` and headless `chromium`, for the console's browser
//! tests. One chromedriver and one browser session serve every test of the binary: started on
//! first use, shared behind a mutex (the tests take turns), and ended with the test process (a
//! shell holds chromedriver's process group and ends it when our end of its stdin closes).
//!
//! The routes used, as the standard names them:
//! - `POST /session` (New Session), `GET /status` (Status)
//! - `POST /session/{id}/url` (Navigate To), `POST /session/{id}/window/rect` (Set Window Rect)
//! - `POST /session/{id}/element` (Find Element), `POST /session/{id}/elements` (Find Elements)
//! - `POST /session/{id}/element/{element id}/click` (Element Click),
//!   `POST /session/{id}/element/{element id}/clear` (Element Clear),
//!   `POST /session/{id}/element/{element id}/value` (Element Send Keys),
//!   `GET /session/{id}/element/{element id}/text` (Get Element Text)
//! - `POST /session/{id}/execute/sync` (Execute Script)
//! - `GET /session/{id}/alert/text` (Get Alert Text: "no such alert" when none is open)
//! - `GET /session/{id}/screenshot` (Take Screenshot: a base64 PNG)

#![allow(dead_code)]

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{TempDir, free_port};

/// The key W3C WebDriver gives element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The shared browser; `browser()` hands it out one test at a time.
pub struct Browser {
    url: String,
    agent: ureq::Agent,
    /// Kept for the process's life: dropping it would close chromedriver's stdin and end it.
    _driver: Child,
    _profile: TempDir,
}

/// A found element.
#[derive(Debug, Clone)]
pub struct Elem(String);

/// The shared browser, started on first use; panics with what to install when Chromium or
/// chromedriver is missing.
pub fn browser() -> MutexGuard<'static, Browser> {
    static BROWSER: OnceLock<Mutex<Browser>> = OnceLock::new();
    let b = BROWSER.get_or_init(|| Mutex::new(Browser::start()));
    // A test that failed while holding it leaves the browser usable for the next one.
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

impl Browser {
    fn start() -> Browser {
        let missing = || {
            panic!(
                "the console's browser tests need Debian's chromium and chromedriver on PATH; \
                 install them with `apt-get install -y chromium chromium-driver` (`make test` does this)"
            )
        };
        let driver_bin = which("chromedriver").unwrap_or_else(missing);
        let chromium = which("chromium").or_else(|| which("chromium-browser")).unwrap_or_else(missing);
        let port = free_port();
        // `kill 0` ends the whole process group: chromedriver and the browser it started.
        let script = format!(
            "'{}' --port={port} --log-level=SEVERE >/dev/null 2>&1 & cat >/dev/null; kill 0",
            driver_bin.display()
        );
        let driver = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}"));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let profile = TempDir::new("chromium-profile");
        let mut b = Browser { url: format!("http://127.0.0.1:{port}"), agent, _driver: driver, _profile: profile };
        b.wait_ready();
        b.new_session(&chromium);
        b
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.agent.get(&format!("{}/status", self.url)).call().ok().and_then(|mut r| {
                let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
                v["value"]["ready"].as_bool()
            });
            if ready == Some(true) {
                return;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn new_session(&mut self, chromium: &Path) {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-crash-reporter",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", self._profile.path.display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let v = self.raw("POST", "/session", Some(caps)).unwrap_or_else(|e| panic!("no browser session: {e}"));
        let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {v}"));
        self.url = format!("{}/session/{id}", self.url);
    }

    /// One WebDriver command; `Err` with the error and message of a failed one.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.url);
        let resp = match body {
            Some(b) => self.agent.run(
                ureq::http::Request::builder()
                    .method(method)
                    .uri(&url)
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => self.agent.run(ureq::http::Request::builder().method(method).uri(&url).body(()).unwrap()),
        };
        let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
        let text = resp.body_mut().read_to_string().map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{method} {path}: not JSON ({e}): {text}"))?;
        if resp.status().is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"],
                v["value"]["message"].as_str().unwrap_or("").lines().next().unwrap_or("")
            ))
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, path, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Sets the size of the page's viewport (the window is a little larger: its frame).
    pub fn viewport(&self, width: i64, height: i64) {
        let mut size = (width, height);
        for _ in 0..3 {
            self.cmd("POST", "/window/rect", Some(json!({ "width": size.0, "height": size.1 })));
            let inner = self.exec("return [innerWidth, innerHeight]", json!([]));
            let (w, h) = (inner[0].as_i64().unwrap_or(0), inner[1].as_i64().unwrap_or(0));
            if (w, h) == (width, height) {
                return;
            }
            size = (size.0 + width - w, size.1 + height - h);
        }
    }

    pub fn find(&self, css: &str) -> Option<Elem> {
        let v = self.raw("POST", "/element", Some(json!({ "using": "css selector", "value": css }))).ok()?;
        v[ELEMENT].as_str().map(|s| Elem(s.to_owned()))
    }

    pub fn find_all(&self, css: &str) -> Vec<Elem> {
        let v = self.cmd("POST", "/elements", Some(json!({ "using": "css selector", "value": css })));
        v.as_array().into_iter().flatten().filter_map(|e| e[ELEMENT].as_str()).map(|s| Elem(s.to_owned())).collect()
    }

    /// The element, waiting for it to appear.
    pub fn get(&self, css: &str) -> Elem {
        self.wait(&format!("an element {css}"), || self.find(css))
    }

    /// Runs `f` on the element `css`, again on a fresh one when the page replaced it meanwhile
    /// (the console re-renders as it polls: a "stale element reference").
    fn on<T>(&self, css: &str, f: impl Fn(&Elem) -> Result<T, String>) -> T {
        self.wait(&format!("an element {css} to act on"), || {
            let e = self.find(css)?;
            match f(&e) {
                Ok(v) => Some(v),
                Err(err) if err.contains("stale element") => None,
                Err(err) => panic!("WebDriver on {css}: {err}"),
            }
        })
    }

    pub fn click(&self, css: &str) {
        self.on(css, |e| self.raw("POST", &format!("/element/{}/click", e.0), Some(json!({}))));
    }

    /// Replaces the text of an input.
    pub fn fill(&self, css: &str, text: &str) {
        self.on(css, |e| {
            self.raw("POST", &format!("/element/{}/clear", e.0), Some(json!({})))?;
            self.raw("POST", &format!("/element/{}/value", e.0), Some(json!({ "text": text })))
        });
    }

    pub fn text(&self, css: &str) -> String {
        let v = self.on(css, |e| self.raw("GET", &format!("/element/{}/text", e.0), None));
        v.as_str().unwrap_or("").to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// The text of an open alert, if any.
    pub fn alert(&self) -> Option<String> {
        self.raw("GET", "/alert/text", None).ok().map(|v| v.as_str().unwrap_or("").to_owned())
    }

    /// Saves a screenshot of the viewport as `target/console-screenshots/{name}.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.cmd("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or("")).expect("a base64 PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("create the screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::File::create(&path).and_then(|mut f| f.write_all(&bytes)).expect("write the screenshot");
        path
    }

    /// What the page shows and logged, for a failure message.
    pub fn dump(&self) -> String {
        let text = self.exec("return document.body ? document.body.innerText.slice(0, 3000) : ''", json!([]));
        let log = self.raw("POST", "/se/log", Some(json!({ "type": "browser" }))).unwrap_or(Value::Null);
        let messages: Vec<String> =
            log.as_array().into_iter().flatten().filter_map(|e| e["message"].as_str().map(str::to_owned)).collect();
        format!("page text:\n{}\nbrowser log:\n{}", text.as_str().unwrap_or(""), messages.join("\n"))
    }

    /// Polls `f` (every 50 ms, for at most 15 s) until it gives a value; panics with `what`
    /// and the page's state.
    pub fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("waited 15 s for {what}\n{}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the script returns a truthy value, and returns it.
    pub fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        self.wait(what, || {
            let v = self.exec(script, args.clone());
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            truthy.then_some(v)
        })
    }
}
