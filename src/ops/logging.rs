//! The process's logger: env_logger's filter (`RUST_LOG`) and line shape, with two guards on
//! what reaches the journal, where every line is an entry of its own.
//!
//! - Control characters are escaped in the whole line (`\n` as `\\n`, `\r`, `\t`, the others as
//!   `\\u{..}`), so a newline in a userId or sessionId cannot forge an entry, and NUL or terminal
//!   escapes are never written raw. Done once here rather than at each call site, so a new log
//!   line cannot forget it. Backslashes are left as they are (paths and JSON stay readable).
//! - Repeated lines are folded: the same line (same level and module, equal up to its numbers)
//!   is written once a minute, and the repeats in that minute become one
//!   `N more like this in the last minute: …` line, written when the minute is over (at the
//!   next repeat, at `tick`, or at `flush` when the process stops). A full disk fails every
//!   write; before this it wrote 2,693 lines in 2 minutes. Errors, warnings and info lines are
//!   folded; debug and trace lines never are: they show each request on purpose.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use log::{Level, Log, Metadata, Record};

/// How long repeats of a line are folded into one summary.
const WINDOW: Duration = Duration::from_secs(60);
/// Most distinct lines folded at once; beyond, new lines are written unfolded.
const MAX_LINES: usize = 1024;

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger (once per process): `RUST_LOG` as env_logger reads it, `info` by default.
pub fn init() {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // ureq's trace level dumps request headers, Basic credentials included: when anything asks
    // for trace, ureq stays at debug. (Only then: a directive would otherwise raise it.)
    if std::env::var("RUST_LOG").is_ok_and(|v| v.to_ascii_lowercase().contains("trace")) {
        builder.filter_module("ureq", log::LevelFilter::Debug).filter_module("ureq_proto", log::LevelFilter::Debug);
    }
    builder.format(|buf, record| {
        let line = record.args().to_string();
        // RFC 3339 in UTC to the second, as env_logger's own timestamp (whose `humantime`
        // feature would bring a calendar library of ~0.2 MiB into the binary for this).
        let at = crate::util::iso8601(crate::util::now_ms());
        writeln!(buf, "[{}Z {:<5} {}] {}", &at[..19], record.level(), record.target(), escape_controls(&line))
    });
    let inner = builder.build();
    let max = inner.filter();
    let logger = LOGGER.get_or_init(|| Logger { inner, folds: Folds::default() });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
}

/// Writes the summaries of folded lines whose minute is over; the service's main loop calls it
/// every few seconds, so a summary does not wait for the next repeat.
pub fn tick() {
    if let Some(l) = LOGGER.get() {
        let done = l.folds.ended(Instant::now());
        l.summaries(done);
    }
}

/// A debug or trace line of the PostgreSQL driver: those carry every statement's parameters
/// (user ids, texts, Flow state) and would bypass an endpoint's `maskLogging`, so they are never
/// written, whatever RUST_LOG asks (`tokio_postgres::query=debug` included).
fn driver_detail(metadata: &Metadata<'_>) -> bool {
    let t = metadata.target();
    let driver = ["tokio_postgres", "postgres"]
        .iter()
        .any(|d| t == *d || t.strip_prefix(d).is_some_and(|r| r.starts_with("::")));
    driver && metadata.level() > Level::Info
}

/// `s` with control characters escaped (see the file doc); borrowed when there are none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// env_logger behind the folding of repeats.
struct Logger {
    inner: env_logger::Logger,
    folds: Folds,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata) && !driver_detail(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.matches(record) || driver_detail(record.metadata()) {
            return;
        }
        if record.level() > Level::Info {
            return self.inner.log(record);
        }
        let line = record.args().to_string();
        let (write, done) = self.folds.admit(record.level(), record.target(), &line, Instant::now());
        self.summaries(done);
        if write {
            self.inner.log(record);
        }
    }

    /// Writes every pending summary (the process is about to stop), then flushes.
    fn flush(&self) {
        let pending = self.folds.take_all();
        self.summaries(pending);
        self.inner.flush();
    }
}

impl Logger {
    fn summaries(&self, done: Vec<Folded>) {
        for f in done {
            let target = f.target.as_str();
            self.inner.log(
                &Record::builder()
                    .level(f.level)
                    .target(target)
                    .args(format_args!("{} more like this in the last minute: {}", f.repeats, f.first))
                    .build(),
            );
        }
    }
}

/// The lines being folded, by level, module and shape (the line with each number as `#`).
#[derive(Default)]
struct Folds {
    lines: Mutex<HashMap<(Level, String, String), Folded>>,
}

/// One line being folded: written at `since`, repeated `repeats` times since then.
struct Folded {
    level: Level,
    target: String,
    first: String,
    since: Instant,
    repeats: u64,
}

impl Folds {
    /// Whether to write `line` now, and the summaries of windows that are over (to write first).
    /// The lock is held only to decide; the caller writes.
    fn admit(&self, level: Level, target: &str, line: &str, now: Instant) -> (bool, Vec<Folded>) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let key = (level, target.to_owned(), shape(line));
        if let Some(f) = lines.get_mut(&key)
            && now.duration_since(f.since) < WINDOW
        {
            f.repeats += 1;
            return (false, vec![]);
        }
        let mut done: Vec<Folded> = match lines.remove(&key) {
            Some(f) if f.repeats > 0 => vec![f],
            _ => vec![],
        };
        if lines.len() >= MAX_LINES {
            done.extend(ended_in(&mut lines, now));
        }
        if lines.len() < MAX_LINES {
            let folded = Folded { level, target: target.to_owned(), first: line.to_owned(), since: now, repeats: 0 };
            lines.insert(key, folded);
        }
        (true, done)
    }

    /// Removes the lines whose window is over; returns those that had repeats.
    fn ended(&self, now: Instant) -> Vec<Folded> {
        ended_in(&mut self.lines.lock().unwrap_or_else(|p| p.into_inner()), now)
    }

    /// Removes every line; returns those that had repeats.
    fn take_all(&self) -> Vec<Folded> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.drain().map(|(_, f)| f).filter(|f| f.repeats > 0).collect()
    }
}

fn ended_in(lines: &mut HashMap<(Level, String, String), Folded>, now: Instant) -> Vec<Folded> {
    let over: Vec<_> =
        lines.iter().filter(|(_, f)| now.duration_since(f.since) >= WINDOW).map(|(k, _)| k.clone()).collect();
    let mut done: Vec<Folded> = over.into_iter().filter_map(|k| lines.remove(&k)).filter(|f| f.repeats > 0).collect();
    done.sort_by_key(|f| f.since);
    done
}

/// The line with every run of digits as one `#`: "cannot write 3 message(s)" and "cannot write
/// 12 message(s)" are the same line.
fn shape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_number = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        let forged = "u1\n[2026-01-01T00:00:00Z INFO  hookflow] forged\r\t\0\x1b[31m\u{85}é\\n";
        let got = escape_controls(forged);
        assert_eq!(got, "u1\\n[2026-01-01T00:00:00Z INFO  hookflow] forged\\r\\t\\u{0}\\u{1b}[31m\\u{85}é\\n");
        assert!(!got.chars().any(char::is_control));
        assert!(matches!(escape_controls("plain \"text\" é"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_postgres_drivers_detail_is_never_written() {
        let at = |target: &str, level: Level| driver_detail(&Metadata::builder().target(target).level(level).build());
        assert!(at("tokio_postgres::query", Level::Debug), "its statements with their parameters");
        assert!(at("tokio_postgres", Level::Trace) && at("postgres::client", Level::Debug));
        assert!(!at("tokio_postgres::connection", Level::Info) && !at("tokio_postgres", Level::Warn));
        assert!(!at("hookflow::store::postgres", Level::Debug) && !at("postgresql_like", Level::Debug));
    }

    #[test]
    fn repeats_within_a_minute_become_one_summary() {
        let folds = Folds::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let t = "hookflow::engine::writer";
        assert!(folds.admit(Level::Error, t, "cannot write 1 message(s): full", at(0)).0);
        for n in 0..5 {
            let (write, done) = folds.admit(Level::Error, t, &format!("cannot write {n}2 message(s): full"), at(n));
            assert!(!write && done.is_empty(), "a repeat within the minute is folded");
        }
        // Another line, or the same from another module, is its own.
        assert!(folds.admit(Level::Error, t, "cannot read the outbox", at(1)).0);
        assert!(folds.admit(Level::Error, "hookflow::delivery", "cannot write 1 message(s): full", at(1)).0);
        assert!(folds.ended(at(59)).is_empty(), "the minute is not over");

        let done = folds.ended(at(60));
        assert_eq!(done.len(), 1, "lines without repeats need no summary");
        assert_eq!((done[0].repeats, done[0].first.as_str()), (5, "cannot write 1 message(s): full"));
        // After the summary, the next repeat is written again and starts a new minute.
        assert!(folds.admit(Level::Error, t, "cannot write 7 message(s): full", at(61)).0);
        assert!(!folds.admit(Level::Error, t, "cannot write 8 message(s): full", at(62)).0);
        let pending = folds.take_all();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].repeats, pending[0].first.as_str()), (1, "cannot write 7 message(s): full"));
    }

    #[test]
    fn a_repeat_after_the_minute_writes_the_summary_first() {
        let folds = Folds::default();
        let t0 = Instant::now();
        let t = "hookflow";
        folds.admit(Level::Warn, t, "down 1", t0);
        folds.admit(Level::Warn, t, "down 2", t0 + Duration::from_secs(1));
        let (write, done) = folds.admit(Level::Warn, t, "down 3", t0 + WINDOW);
        assert!(write);
        assert_eq!(done.iter().map(|f| (f.repeats, f.first.as_str())).collect::<Vec<_>>(), vec![(1, "down 1")]);
    }

    #[test]
    fn numbers_do_not_make_a_line_new() {
        assert_eq!(shape("message 17 of 250 failed after 1.5s"), "message # of # failed after #.#s");
        assert_ne!(shape("endpoint a failed"), shape("endpoint b failed"));
    }
}
