//! HTTPS both ways: hookflow serving `tls`, and delivering to an HTTPS webhook whose certificate
//! is signed by a private CA given as `delivery.caFile`. The CA and certificates are made by
//! the test with the `openssl` command.

use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{Receiver, unbounded};
use serde_json::{Value, json};

use crate::support::*;

/// A private CA and a server certificate for 127.0.0.1 signed by it.
struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A CA (`ca.crt`) and a server certificate for 127.0.0.1 it signed (`server.crt`,
    /// `server.key`): the same as the test PostgreSQL server's.
    fn new() -> Pki {
        let dir = TempDir::new("pki");
        crate::pgserver::make_certificates(&dir.path);
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

/// An HTTPS webhook on 127.0.0.1:0 that records bodies and answers 200.
fn https_sink(pki: &Pki) -> (String, Receiver<Value>) {
    let ssl = tiny_http::SslConfig { certificate: pki.read("server.crt"), private_key: pki.read("server.key") };
    let server = Arc::new(tiny_http::Server::https("127.0.0.1:0", ssl).expect("https sink"));
    let url = format!("https://{}/hook", server.server_addr().to_ip().unwrap());
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut body = String::new();
            let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
            let _ = tx.send(serde_json::from_str(&body).unwrap_or(Value::Null));
            let _ = req.respond(tiny_http::Response::from_string("ok"));
        }
    });
    (url, rx)
}

/// A client that trusts only the test CA.
fn client(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).unwrap();
    let cert = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[cert])).build();
    ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into()
}

#[test]
fn serves_https_and_delivers_to_an_https_webhook_with_a_private_ca() {
    let pki = Pki::new();
    let (hook, outputs) = https_sink(&pki);
    let mut cfg = config(&hook);
    cfg["tls"] = json!({ "cert": pki.path("server.crt"), "key": pki.path("server.key") });
    cfg["delivery"]["caFile"] = json!(pki.path("ca.crt"));
    let app = App::start("tls", &cfg, &[("flow.json", &echo_flow())]);
    let base = app.base.replacen("http://", "https://", 1);
    let agent = client(&pki.dir.join("ca.crt"));
    let mut resp = agent
        .post(format!("{base}/{TOKEN}"))
        .header("Content-Type", "application/json")
        .send(json!({"userId": "u", "sessionId": "s", "text": "over tls"}).to_string())
        .expect("an HTTPS request to hookflow");
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.body_mut().read_to_string().unwrap_or_default());
    let out = outputs.recv_timeout(WAIT).expect("the output arrives at the HTTPS webhook");
    assert_eq!(out["AIOutput"]["text"], "over tls");
    // Plain HTTP on the TLS port is not served.
    let plain = ureq::get(format!("{}/healthz", app.base)).call();
    assert!(plain.is_err(), "plain HTTP must not be answered on the HTTPS listener");
}

#[test]
fn without_the_ca_file_an_untrusted_webhook_is_not_delivered_to() {
    let pki = Pki::new();
    let (hook, outputs) = https_sink(&pki);
    let mut cfg = config(&hook);
    cfg["delivery"]["retrySchedule"] = json!([0.05]);
    let app = App::start("tls-untrusted", &cfg, &[("flow.json", &echo_flow())]);
    let (status, _) = post_json(&app.msg_url(), &json!({"userId": "u", "sessionId": "s", "text": "secret"}));
    assert_eq!(status, 200);
    // Two attempts fail the TLS handshake, then the output is a dead letter naming the cause.
    let deadline = std::time::Instant::now() + WAIT;
    let dead = loop {
        let list = request("GET", &app.url("/api/deadletters"), None, &[("X-API-Key", ADMIN_KEY)]);
        let v: Value = serde_json::from_str(&list.body).unwrap();
        if let Some(d) = v["deadLetters"].as_array().and_then(|a| a.first()).cloned() {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter within {WAIT:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let err = dead["lastError"].as_str().unwrap_or_default().to_lowercase();
    assert!(err.contains("certificate") || err.contains("tls") || err.contains("issuer"), "{dead}");
    assert!(outputs.try_recv().is_err(), "nothing reached the untrusted webhook");
}

#[test]
fn check_reads_the_certificate_files_and_serve_calls_a_bad_one_a_bad_config() {
    let pki = Pki::new();
    let dir = TempDir::new("tls-check");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate").unwrap();
    let mut cfg = config("http://127.0.0.1:9/");
    cfg["delivery"]["caFile"] = json!(not_pem);
    cfg["tls"] = json!({ "cert": dir.join("missing.crt"), "key": pki.path("server.crt") });
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let file = path.display().to_string();
    let out = crate::bot::run_cli(&["check", "--config", &file], &[], "", None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines = [
        format!("{file}: delivery.caFile {} holds no PEM certificate", not_pem.display()),
        format!("{file}: tls.cert: cannot read {}", dir.join("missing.crt").display()),
        format!("{file}: tls.key: {} holds no PEM private key", pki.path("server.crt")),
    ];
    for line in &lines {
        assert!(err.contains(line.as_str()), "no {line:?} in:\n{err}");
    }
    // The good files pass.
    cfg["delivery"]["caFile"] = json!(pki.path("ca.crt"));
    cfg["tls"] = json!({ "cert": pki.path("server.crt"), "key": pki.path("server.key") });
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let out = crate::bot::run_cli(&["check", "--config", path.to_str().unwrap()], &[], "", None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // serve: a certificate file it cannot use is a bad config (exit 1), not a runtime failure.
    cfg["delivery"]["caFile"] = json!(not_pem);
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let out = crate::bot::run_cli(&["serve", "--config", path.to_str().unwrap()], &[], "", None);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate and a key that do not belong together (the CA's key beside the server's
/// certificate) passed `check`, and `serve` then stopped with exit 2, naming no setting.
#[test]
fn a_key_that_is_not_the_certificates_fails_check_and_serve_calls_it_a_bad_config() {
    let pki = Pki::new();
    let dir = TempDir::new("tls-mismatch");
    let mut cfg = config("http://127.0.0.1:9/");
    cfg["tls"] = json!({ "cert": pki.path("server.crt"), "key": pki.path("ca.key") });
    let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
    let file = path.display().to_string();
    let out = crate::bot::run_cli(&["check", "--config", &file], &[], "", None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{file}: tls.key: {} and tls.cert", pki.path("ca.key"))), "{err}");
    assert!(err.contains("is the key that of this certificate?"), "{err}");
    // No "ok" line beside the error: the endpoints are not in use.
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = crate::bot::run_cli(&["serve", "--config", &file], &[], "", None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not go with tls.cert"), "{err}");
}

/// `store.caFile` is read by `check` as a replica reads it, and `serve` calls a bad one a bad
/// config before it tries to connect (it passed `check`, then `serve` exited 2).
#[test]
fn a_store_ca_file_that_cannot_be_used_fails_check_and_serve_with_exit_1() {
    let dir = TempDir::new("store-ca");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let mut cfg = config("http://127.0.0.1:9/");
    cfg["store"] = json!({ "type": "postgres", "url": "postgres://u:pw@127.0.0.1:9/db", "caFile": "missing.pem" });
    for (ca, why) in [("missing.pem", "No such file"), ("not.pem", "holds no PEM certificate")] {
        cfg["store"]["caFile"] = json!(ca);
        let path = write_files(&dir.path, &cfg, &[("flow.json", &echo_flow())]);
        let file = path.display().to_string();
        for command in ["check", "serve"] {
            let out = crate::bot::run_cli(&[command, "--config", &file], &[], "", None);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(1), "{command} with {ca}: {err}");
            assert!(err.contains("store.caFile") && err.contains(why), "{command} with {ca}: {err}");
        }
    }
}
