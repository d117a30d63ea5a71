//! The data directory, through the binary: a disk that fills up (503 `store_unavailable`,
//! `/readyz` not ready with the reason, one log line instead of thousands, and recovery once a
//! little space is free, every acknowledged message delivered), and one process per directory.
//! The SQLite store's directory: these tests run on SQLite whatever the default store.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bot::run_cli;
use crate::child::{Launch, try_get, try_post};
use crate::support::*;

/// A small tmpfs mounted on a new directory, unmounted on drop: a disk that really fills up
/// (ENOSPC from the kernel, as SQLite meets it), without filling the machine's disk.
///
/// Mounting needs root (CAP_SYS_ADMIN). The tests run as root in CI; run elsewhere without root,
/// this fails with a message saying so instead of skipping, so that a run that did not test the
/// full disk cannot pass as one that did.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Tmpfs {
        assert!(
            is_root(),
            "this test mounts a {size} tmpfs to fill a disk for real, which needs root (CAP_SYS_ADMIN); \
             run the integration tests as root, as CI does"
        );
        std::fs::create_dir_all(&path).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount(8)");
        assert!(status.success(), "mount -t tmpfs -o size={size} tmpfs {} failed: {status}", path.display());
        Tmpfs { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the child process may still hold files open for a moment after its kill.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Effective uid 0, from /proc (the tests use no libc).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    uid == Some("0")
}

/// Writes `path` until the file system has no room left; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let mut written = 0;
    for chunk in [64 * 1024, 4096, 512] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() && f.flush().is_ok() {
            written += chunk as u64;
        }
    }
    let _ = f.sync_all();
    written
}

/// The files of `dir` and their sizes, for failure messages.
fn listing(dir: &Path) -> String {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| format!("{} {}", e.file_name().to_string_lossy(), e.metadata().map_or(0, |m| m.len())))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.join(", ")
}

/// Gives `bytes` of `path` back to the file system.
fn shrink(path: &Path, bytes: u64) {
    let f = std::fs::File::options().write(true).open(path).expect("open the filler");
    let len = f.metadata().expect("the filler's size").len();
    f.set_len(len.saturating_sub(bytes)).expect("shrink the filler");
}

#[test]
fn a_full_disk_is_reported_and_recovered_from_with_every_acknowledged_message_delivered() {
    let sink = Sink::new();
    let dir = TempDir::new("full-disk");
    let disk = Tmpfs::mount(dir.join("data"), "8m");
    let path = write_files(&dir.path, &on_sqlite(config(&sink.url)), &[("flow.json", &echo_flow())]);
    let mut p = Launch::new(&path, dir.join("run.log")).start();
    let url = p.url(&format!("/{TOKEN}"));
    let readyz = p.url("/readyz");
    assert_eq!(try_get(&readyz).expect("/readyz").0, 200);
    let pad = "x".repeat(2000);
    let message = |n: usize| {
        (
            format!("m{n} {pad}"),
            json!({"userId": "u", "sessionId": format!("s{}", n % 7), "text": format!("m{n} {pad}")}),
        )
    };

    // The webhook hangs, so outputs pile up in the store as the disk fills: a store whose data
    // does not grow keeps reusing its log and never needs new space.
    sink.hold();
    // A working day first: the store's log (SQLite's WAL) grows.
    let mut acked = BTreeSet::new();
    for n in 0..200 {
        let (text, body) = message(n);
        send_to(&url, &body);
        acked.insert(text);
    }
    let wal = disk.path.join("hookflow.sqlite3-wal");

    // The disk fills up, but for a few messages' room: some are acknowledged (and their turns
    // may then fail to commit), then every write fails.
    let filler = disk.path.join("filler");
    let filled = fill(&filler);
    shrink(&filler, 64 * 1024);
    let mut refused = 0;
    for n in 200..2200 {
        let (text, body) = message(n);
        let (status, _, answer) = try_post(&url, &body).expect("the server answers while the disk is full");
        match status {
            200 => {
                acked.insert(text);
            }
            503 => {
                assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
                refused += 1;
                if refused == 200 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(refused, 200, "the disk never filled up");
    let wal_before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let (status, body) = try_get(&readyz).expect("/readyz while full");
    assert_eq!(status, 503, "/readyz while writes fail: {body}");
    assert!(body.contains("the disk is full"), "{body}");

    // 200 failed writes and more (turns, delivery bookkeeping): a handful of lines, not hundreds.
    let log = p.log_text();
    let errors = log.lines().filter(|l| l.contains(" ERROR ")).count();
    assert!(errors <= 10, "{errors} error lines for 200 failed writes:\n{log}");

    // Some space comes back (three eighths of the disk, room for the log's last pages in the
    // database): the store recovers by itself, and cutting the log gives back far more room
    // than was freed.
    // (3 MiB: the outputs queued meanwhile go out now, and the console's delivery log keeps the
    // last 1,000 of them with their bodies: that room must be there too.)
    shrink(&filler, 3 * 1024 * 1024);
    let t = Instant::now();
    let deadline = t + Duration::from_secs(20);
    while try_get(&readyz).map(|r| r.0) != Ok(200) {
        assert!(
            Instant::now() < deadline,
            "not ready 20 s after space was freed:\n{}\n{}",
            listing(&disk.path),
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready_after = t.elapsed();
    let wal_after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(wal_after < wal_before / 2, "the log was not cut: {wal_before} B before, {wal_after} B after");
    sink.release();
    // Back to work: the 2,000 outputs queued meanwhile go out while new messages come in. On a
    // disk this small that burst may fill it again for a moment; a client told 503
    // store_unavailable sends again after Retry-After (http-api.md), and then it must be taken.
    let mut again = 0;
    for n in 5000..5100 {
        let (text, body) = message(n);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, retry_after, answer) = try_post(&url, &body).expect("the server answers");
            if status == 200 {
                break;
            }
            assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("store_unavailable")), "{answer}");
            assert!(
                Instant::now() < deadline,
                "m{n} was refused for 20 s after the store recovered:\n{}\n{}",
                listing(&disk.path),
                p.log_text()
            );
            again += 1;
            let wait: u64 = retry_after.and_then(|v| v.parse().ok()).unwrap_or(1);
            std::thread::sleep(Duration::from_secs(wait.min(5)));
        }
        acked.insert(text);
    }
    println!(
        "full disk: log {wal_before} B when full, {wal_after} B after; {refused} refused; ready {ready_after:?} \
         after 3 MiB of {filled} B were freed; {} acknowledged in all; {again} sends after the recovery \
         were refused once and sent again",
        acked.len()
    );

    // Every acknowledged message is delivered (a retried delivery may come twice).
    let mut delivered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !acked.is_subset(&delivered) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sink.rx.recv_timeout(left) {
            Ok(hit) => {
                delivered.insert(hit.text().to_owned());
            }
            Err(_) => panic!(
                "{} of {} acknowledged messages were never delivered:\n{}",
                acked.difference(&delivered).count(),
                acked.len(),
                p.log_text()
            ),
        }
    }

    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).and_then(|s| s.code()), Some(0), "{}", p.log_text());
    let log = p.log_text();
    assert!(log.contains("the store takes writes again"), "{log}");
    assert!(log.contains("more like this in the last minute: cannot write"), "the repeats are summed up:\n{log}");
}

#[test]
fn a_second_process_on_the_same_data_directory_exits_2_naming_the_first() {
    let sink = Sink::new();
    let dir = TempDir::new("one-process");
    let path = write_files(&dir.path, &on_sqlite(config(&sink.url)), &[("flow.json", &echo_flow())]);
    let mut first = Launch::new(&path, dir.join("first.log")).start();

    // Same config, so same dataDir; the port is 0, so the listen address would not clash.
    let o = run_cli(&["serve", "--config", path.to_str().unwrap()], &[], "", None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is in use by another hookflow process"), "{stderr}");
    assert!(stderr.contains(&format!("(pid {})", first.pid)), "the message names the other process: {stderr}");
    send_to(&first.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "s", "text": "first still serves"}));
    assert_eq!(sink.recv(WAIT).text(), "first still serves");

    // The kernel drops the lock with the process, even after kill -9: the next start is quiet.
    first.kill9();
    let mut second = Launch::new(&path, dir.join("second.log")).start();
    send_to(&second.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "s", "text": "second"}));
    // The first output may come again first: the kill can fall between its 200 and the removal
    // of it from the outbox (delivery is at-least-once).
    let mut hit = sink.recv(WAIT);
    if hit.text() == "first still serves" {
        hit = sink.recv(WAIT);
    }
    assert_eq!(hit.text(), "second");
    let pid = std::fs::read_to_string(dir.join("data/hookflow.lock")).expect("the lock file");
    assert_eq!(pid.trim(), second.pid.to_string(), "the lock file names the process that has it");
    second.kill9();
}

/// Waits (bounded) until `GET path` with the admin key satisfies `ok`; returns the answer.
fn admin_until(
    p: &crate::child::Proc,
    path: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = admin_get(&p.url(path));
        if r.status == 200 && ok(&r.json()) {
            return r.json();
        }
        assert!(Instant::now() < deadline, "waited 20 s for {what}; last: {} {}\n{}", r.status, r.body, p.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Outputs delivered, and outputs refused for good, while the disk is full: their fate cannot be
/// written, so the lane keeps it and writes it once there is room. Delivered ones must not stay
/// queued (to go out again after the next start); a dead letter must not be skipped (the
/// session's next output sent before it is one, and the dead letter missing from the admin API).
#[test]
fn what_a_lane_could_not_write_down_on_a_full_disk_is_written_once_there_is_room() {
    let sink = Sink::new();
    let dir = TempDir::new("full-disk-fates");
    let disk = Tmpfs::mount(dir.join("data"), "8m");
    let path = write_files(&dir.path, &on_sqlite(config(&sink.url)), &[("flow.json", &echo_flow())]);
    let p = Launch::new(&path, dir.join("run.log")).start();
    let url = p.url(&format!("/{TOKEN}"));
    let filler = disk.path.join("filler");

    // Delivered while full: 60 outputs wait for the webhook, the disk fills, the webhook answers.
    sink.hold();
    for n in 0..60 {
        send_to(&url, &json!({"userId": "u", "sessionId": format!("s{}", n % 3), "text": format!("ok{n}")}));
    }
    admin_until(&p, "/api/stats", "60 outputs queued", |v| v["endpoints"][0]["queued"] == 60);
    fill(&filler);
    sink.release();
    sink.recv_n(60, WAIT);
    std::fs::remove_file(&filler).expect("free the disk");
    admin_until(&p, "/api/stats", "the delivered outputs written down", |v| v["endpoints"][0]["queued"] == 0);

    // Refused for good while full: each is a dead letter once written down, in session order.
    sink.set_status(400);
    sink.hold();
    for n in 0..5 {
        send_to(&url, &json!({"userId": "u", "sessionId": "dead", "text": format!("no{n}")}));
    }
    admin_until(&p, "/api/stats", "5 outputs queued", |v| v["endpoints"][0]["queued"] == 5);
    fill(&filler);
    sink.release();
    let first = sink.recv(WAIT);
    assert_eq!(first.text(), "no0");
    std::fs::remove_file(&filler).expect("free the disk");
    let dead = admin_until(&p, "/api/deadletters", "5 dead letters", |v| {
        v["deadLetters"].as_array().is_some_and(|d| d.len() == 5)
    });
    let seqs: Vec<i64> = dead["deadLetters"].as_array().unwrap().iter().map(|d| d["seq"].as_i64().unwrap()).collect();
    let mut texts: Vec<String> = vec![first.text().to_owned()];
    texts.extend(sink.recv_n(4, WAIT).iter().map(|h| h.text().to_owned()));
    assert_eq!(texts, ["no0", "no1", "no2", "no3", "no4"], "each sent once, in order: {seqs:?}");
    admin_until(&p, "/api/stats", "nothing left queued", |v| v["endpoints"][0]["queued"] == 0);
}
