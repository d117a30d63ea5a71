//! The `hookflow` command: parses the command line, starts logging, runs one subcommand, and
//! turns its result into the exit code (0 ok, 1 bad config or arguments, 2 run-time failure).
//!
//! The library forbids `unsafe`; the binary denies it but for one call into glibc's allocator
//! (`keep_freed_memory`), which no safe crate offers.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use hookflow::{Config, Service, config};

const HELP: &str = "\
hookflow - a self-hosted Webhook Endpoint for conversational bots

USAGE:
    hookflow serve --config FILE [--listen ADDR] [--data-dir DIR] [--workers N]
    hookflow --config FILE            (same as serve)
    hookflow check --config FILE [--connect]
                                      validate the config, every Flow and every transformer
    hookflow try --config FILE [--endpoint NAME]
                                      talk to an endpoint's Flow in the terminal (no server)
    hookflow sink [--listen ADDR] [--user U --password P]
                                      print every webhook POST received (default 127.0.0.1:9000)
    hookflow store copy --config FILE --to postgres://... [--data-dir DIR]
                                      copy a stopped hookflow's SQLite store into PostgreSQL
    hookflow keygen                   print a new API key and its sha256: form for the config
    hookflow COMMAND --help           the usage of one command
    hookflow --version | --help

Exit codes: 0 clean stop, 1 bad config or arguments, 2 run-time failure.
Logs go to stderr; set RUST_LOG=hookflow=debug to see each request, turn and delivery.
";

/// Longest wait between two writes of folded log lines' summaries.
const LOG_TICK: std::time::Duration = std::time::Duration::from_secs(5);
/// A subcommand: its name, the options it takes and its usage (`hookflow NAME --help`).
struct Command {
    name: &'static str,
    options: &'static [&'static str],
    usage: &'static str,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "serve",
        options: &["--config", "-c", "--listen", "--data-dir", "--workers"],
        usage: "\
USAGE:
    hookflow serve --config FILE [--listen ADDR] [--data-dir DIR] [--workers N]
    hookflow --config FILE [...]      (the same)

Runs the server: takes messages on the endpoints' URLs, runs their Flows and delivers the
outputs to their webhooks. SIGTERM or SIGINT (Ctrl-C) stops it cleanly.

OPTIONS:
    -c, --config FILE    the config file (JSON)
    --listen ADDR        instead of the config's \"listen\", e.g. 127.0.0.1:8080
    --data-dir DIR       instead of the config's \"dataDir\" (where the store lives)
    --workers N          instead of the config's \"workers\" (turns run in parallel; 0: one per CPU)
",
    },
    Command {
        name: "check",
        options: &["--config", "-c", "--connect"],
        usage: "\
USAGE:
    hookflow check --config FILE [--connect]

Validates the config, every Flow (JavaScript syntax included) and every transformer, without
starting anything. Prints one line per endpoint; on errors prints each of them
(file: place: message) and exits 1. With --connect and a PostgreSQL store, also connects and
prints the server's version and whether the schema is current; exit 2 when it cannot connect,
when the schema is newer than this hookflow's, when the database is empty and the role may not
create tables, or when the role lacks privileges on the tables (each said with the GRANT).
",
    },
    Command {
        name: "try",
        options: &["--config", "-c", "--endpoint"],
        usage: "\
USAGE:
    hookflow try --config FILE [--endpoint NAME]

Talks to an endpoint's Flow in the terminal: no server, no store, no webhook. Each line is a
message; a line starting with { is sent as data; /reset starts over, /quit ends. During a
handover (started by a handover node; the provider is not called), /agent TEXT answers as the
agent, /agent-name NAME gives it a name and /agent-end ends it. http nodes make their
requests; sleep is shown, not waited for. --endpoint may be left out when the config has one
endpoint. The config is loaded whole, so the ${NAME} secrets it names must be set.
",
    },
    Command {
        name: "sink",
        options: &["--listen", "--user", "--password"],
        usage: "\
USAGE:
    hookflow sink [--listen ADDR] [--user U --password P]

A webhook receiver for trying hookflow out: prints every POST it receives (time, Seq, auth=ok or
auth=FAILED when --user is given, else auth=none, or auth=sent for a POST with credentials, the
body) and answers 200. --user without --password expects an empty password, as a webhook user
without one sends. Listens on 127.0.0.1:9000 unless --listen says otherwise.
",
    },
    Command {
        name: "store",
        options: &["--config", "-c", "--to", "--data-dir"],
        usage: "\
USAGE:
    hookflow store copy --config FILE --to postgres://user:password@host:5432/db [--data-dir DIR]

Copies the SQLite store of a stopped single-node hookflow (sessions, profiles, queued messages,
undelivered outputs, dead letters, transcripts, Seq counters) into an empty PostgreSQL database,
in one transaction, and says what it copied. Then set \"store\" in the config to that database
and start the replicas. The console's delivery log and traces are not copied. The SQLite store
is then marked (a file COPIED-TO-POSTGRESQL in its data directory): a single node refuses to
start on it, as it would send the copied outputs again. The URL holds
the password: pass it from the environment (--to \"$HOOKFLOW_DATABASE_URL\") rather than typing it.
TLS: as the config's store section says when it is PostgreSQL's, else as the URL's sslmode
(disable, prefer (the default) or require; both of the latter verify the server's certificate).
",
    },
    Command {
        name: "keygen",
        options: &[],
        usage: "\
USAGE:
    hookflow keygen

Prints a new random API key and its sha256: form for \"adminKeys\" or \"inboundKeys\".
",
    },
];

/// Why the command failed, and so its exit code.
enum Failure {
    /// Bad arguments or config: exit 1.
    Usage(String),
    /// Run-time failure: exit 2.
    Runtime(String),
}

/// `println!`, but a closed standard output (`hookflow check | head`) ends nothing: the output
/// is only information, and `println!` panics on a broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!`, likewise (`hookflow bogus 2>&1 | true` must still exit 1, not panic).
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `print!` of a usage text, likewise.
fn usage(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    keep_freed_memory();
    // Escapes control characters and folds repeated errors (see `logging`).
    hookflow::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            err!("{m}");
            ExitCode::from(1)
        }
        Err(Failure::Runtime(m)) => {
            err!("hookflow: {m}");
            ExitCode::from(2)
        }
    }
}

/// How much free memory at the top of a thread's heap glibc keeps instead of handing it back to
/// the kernel (its default is 128 KiB).
const TRIM_THRESHOLD: i32 = 8 << 20;

/// Sets glibc's trim threshold to `TRIM_THRESHOLD`; true when glibc took it.
///
/// In WAL mode a SQLite connection drops its whole page cache when another connection has
/// committed since its last read, so the reading connection (workers, senders) frees and
/// fetches its pages again after nearly every commit of the writer. With glibc's default, those
/// frees hand the top of the thread's heap back to the kernel (`madvise`, which interrupts the
/// other CPU to flush its TLB) and the next fetches fault the pages in again: with a million
/// stored sessions (deeper trees, more pages per read) that was about 5 % of the server's CPU
/// and most of what it lost against a fresh store (docs/performance.md). Keeping up to 8 MiB
/// costs a little peak memory, no idle memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() -> bool {
    // glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: mallopt only sets a parameter of glibc's allocator (documented in mallopt(3));
    // it is called first thing in main, before any other thread exists.
    unsafe { mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 }
}

/// Other C libraries have their own policies (musl hands memory back in larger steps).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() -> bool {
    false
}

/// Options after the subcommand.
#[derive(Default)]
struct Opts {
    /// The subcommand's usage, for errors about its arguments.
    usage: &'static str,
    help: bool,
    config: Option<PathBuf>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    workers: Option<usize>,
    user: Option<String>,
    password: Option<String>,
    endpoint: Option<String>,
    /// `check --connect`.
    connect: bool,
    /// `store copy --to URL`.
    to: Option<String>,
}

fn parse_opts(cmd: &Command, args: &[String]) -> Result<Opts, Failure> {
    let usage = cmd.usage;
    let mut o = Opts { usage, ..Opts::default() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--help" || a == "-h" {
            o.help = true;
            continue;
        }
        if a == "--connect" && cmd.options.contains(&"--connect") {
            o.connect = true;
            continue;
        }
        if !cmd.options.contains(&a.as_str()) {
            let known = COMMANDS.iter().any(|c| c.options.contains(&a.as_str()));
            let msg = if known {
                format!("hookflow {} does not take {a}", cmd.name)
            } else {
                let hint = hookflow::suggest(a, cmd.options);
                format!("unknown argument {a:?} for hookflow {}{hint}", cmd.name)
            };
            return Err(Failure::Usage(format!("{msg}\n\n{usage}")));
        }
        let mut value = || it.next().cloned().ok_or_else(|| Failure::Usage(format!("{a} needs a value\n\n{usage}")));
        match a.as_str() {
            "--config" | "-c" => o.config = Some(value()?.into()),
            "--listen" => o.listen = Some(value()?),
            "--data-dir" => o.data_dir = Some(value()?.into()),
            "--workers" => {
                let v = value()?;
                o.workers =
                    Some(v.parse().map_err(|_| Failure::Usage(format!("--workers expects a number, got {v:?}")))?);
            }
            "--user" => o.user = Some(value()?),
            "--endpoint" => o.endpoint = Some(value()?),
            "--password" => o.password = Some(value()?),
            "--to" => o.to = Some(value()?),
            other => unreachable!("{other} is in the options of {} but not parsed", cmd.name),
        }
    }
    Ok(o)
}

fn run(args: &[String]) -> Result<(), Failure> {
    let (name, rest) = match args.first().map(String::as_str) {
        None | Some("--help" | "-h") => {
            usage(HELP);
            return Ok(());
        }
        // `hookflow help` and `hookflow help COMMAND` (`help --help` is the general help too).
        Some("help") => match args.get(1).map(String::as_str) {
            None | Some("--help" | "-h") => {
                usage(HELP);
                return Ok(());
            }
            Some(c) => (c, &args[..0]),
        },
        Some("--version" | "-V") => {
            if let Some(extra) = args.get(1) {
                return Err(Failure::Usage(format!("hookflow --version takes no arguments, got {extra:?}")));
            }
            out!("hookflow {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Some(c) if c.starts_with('-') => ("serve", args),
        // `store` has one action so far: `store copy`.
        Some("store") => match args.get(1).map(String::as_str) {
            Some("copy") => ("store", &args[2..]),
            Some("--help" | "-h") | None => ("store", &args[1..]),
            Some(other) => {
                let hint = hookflow::suggest(other, &["copy"]);
                return Err(Failure::Usage(format!(
                    "unknown action {other:?} for hookflow store{hint}; try: hookflow store copy --help"
                )));
            }
        },
        Some(c) => (c, &args[1..]),
    };
    let Some(cmd) = COMMANDS.iter().find(|c| c.name == name) else {
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        let hint = hookflow::suggest(name, &names);
        return Err(Failure::Usage(format!("unknown command {name:?}{hint}\n\n{HELP}")));
    };
    let opts = parse_opts(cmd, rest)?;
    if opts.help || args[0] == "help" {
        usage(cmd.usage);
        return Ok(());
    }
    match cmd.name {
        "serve" => serve(opts),
        "check" => check(opts),
        "store" => store_copy(opts),
        "sink" => sink(opts),
        "try" => try_flow(opts),
        _ => {
            keygen();
            Ok(())
        }
    }
}

fn load_config(opts: &Opts) -> Result<Config, Failure> {
    let path =
        opts.config.as_ref().ok_or_else(|| Failure::Usage(format!("--config FILE is required\n\n{}", opts.usage)))?;
    let config = config::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    apply_overrides(config, opts)
}

/// `--listen`, `--data-dir` and `--workers` over the file's values.
fn apply_overrides(mut config: Config, opts: &Opts) -> Result<Config, Failure> {
    if let Some(l) = &opts.listen {
        config.listen = l
            .parse()
            .map_err(|_| Failure::Usage(format!("--listen expects an address like 127.0.0.1:8080, got {l:?}")))?;
    }
    if let Some(d) = &opts.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(w) = opts.workers {
        // As the file's `workers`: 0 is one per CPU.
        if w > hookflow::config::MAX_WORKERS {
            let max = hookflow::config::MAX_WORKERS;
            return Err(Failure::Usage(format!("--workers must be from 0 (one per CPU) to {max}, got {w}")));
        }
        config.workers = hookflow::config::workers_for(w);
    }
    Ok(config)
}

fn serve(opts: Opts) -> Result<(), Failure> {
    let config = load_config(&opts)?;
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Registered before the service starts, so a signal during start-up is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Failure::Runtime(format!("cannot install signal handlers: {e}")))?;
    let service = Service::start(config).map_err(|e| match e {
        // A bad Flow or certificate file is a bad config (exit 1), as `check` says too.
        hookflow::Error::Flow(m) | hookflow::Error::Tls(m) => Failure::Usage(m),
        other => Failure::Runtime(other.to_string()),
    })?;
    // The service's threads do the work; this one waits for SIGTERM/SIGINT (http-api.md §5) or
    // a fatal failure, then shuts down in order.
    let (sig_tx, sig_rx) = crossbeam_channel::bounded(1);
    let handle = signals.handle();
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = sig_tx.send(sig);
            }
        })
        .map_err(|e| Failure::Runtime(format!("cannot start the signal thread: {e}")))?;
    hookflow::systemd::notify("READY=1");
    let watchdog = hookflow::systemd::watchdog_interval();
    // The loop also writes the summaries of folded log lines, so it wakes at least this often.
    let tick = watchdog.map_or(LOG_TICK, |w| w.min(LOG_TICK));
    let fatal = loop {
        crossbeam_channel::select! {
            recv(sig_rx) -> sig => {
                let name = if sig == Ok(SIGTERM) { "SIGTERM" } else { "SIGINT" };
                log::info!("{name} received: finishing running turns and draining the outbox");
                break None;
            }
            recv(service.fatal()) -> msg => break Some(msg.unwrap_or_default()),
            default(tick) => {
                // Pet the watchdog only while the service is healthy; a hung sender lane or a
                // store whose writes fail (a full disk) lets systemd restart us.
                if watchdog.is_some() && service.healthy() {
                    hookflow::systemd::notify("WATCHDOG=1");
                }
                hookflow::logging::tick();
            }
        }
    };
    hookflow::systemd::notify("STOPPING=1");
    handle.close();
    let _ = watcher.join();
    if let Some(m) = &fatal {
        log::error!("{m}; shutting down so that the service manager restarts hookflow");
    }
    service.shutdown();
    // Summaries of folded lines still pending.
    log::logger().flush();
    match fatal {
        None => Ok(()),
        Some(m) => Err(Failure::Runtime(m)),
    }
}

/// `; translated by libretranslate (flow en, user auto)` for `check`'s endpoint line (no key, no URL).
fn translation_summary(t: &config::Translation) -> String {
    let provider = match t.provider.kind {
        config::ProviderKind::Deepl => "deepl",
        config::ProviderKind::Libretranslate => "libretranslate",
        config::ProviderKind::Google => "google",
        config::ProviderKind::Microsoft => "microsoft",
    };
    let user = match &t.user_language {
        config::UserLanguage::Auto => "auto",
        config::UserLanguage::Fixed(code) => code,
    };
    format!("; translated by {provider} (flow {}, user {user})", t.flow_language)
}

/// Every problem at once: the config's, and those of every Flow and transformer it names with a
/// usable path, even when the config itself has errors (config.md: "every error found").
fn check(opts: Opts) -> Result<(), Failure> {
    let path =
        opts.config.as_ref().ok_or_else(|| Failure::Usage(format!("--config FILE is required\n\n{}", opts.usage)))?;
    let checked = config::check(path);
    let mut failed: Vec<String> = match &checked.config {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    };
    // The endpoints found good, said only when nothing else failed ("ok" beside an error read
    // as if part of the config were in use).
    let mut oks = Vec::new();
    for (i, files) in checked.files.iter().enumerate() {
        let Some(file) = &files.flow else { continue };
        match hookflow::flow::Flow::load(file, &checked.dir) {
            Ok(flow) => {
                if flow.has_handover() && !files.handover {
                    failed.push(config::handover_missing(path, i, file).to_string());
                    continue;
                }
                // The summary line needs the whole endpoint, so only for a config without errors.
                if let Ok(config) = &checked.config {
                    let ep = &config.endpoints[i];
                    let mut summary = hookflow::flow::model::summary(&flow);
                    if let Some(t) = &ep.translation {
                        summary.push_str(&translation_summary(t));
                    }
                    // Run by the systemd unit before every start, so this goes to the journal:
                    // no URL token, and the webhook URL without its query (config::shown_url).
                    oks.push(format!(
                        "ok  {} -> {} ({summary}; flow {})",
                        ep.name,
                        config::shown_url(&ep.webhook.url),
                        file.display()
                    ));
                }
            }
            Err(errs) => {
                for (place, msg) in errs {
                    // A file that cannot be read is the config's mistake: said at its key.
                    if place.is_empty() && msg.starts_with(hookflow::flow::model::UNREADABLE) {
                        failed.push(format!(
                            "{}: endpoints[{i}].flow: {msg} ({}; the path is relative to the config's folder)",
                            path.display(),
                            file.display()
                        ));
                        continue;
                    }
                    let place = if place.is_empty() { String::new() } else { format!("{place}: ") };
                    failed.push(format!("{}: {place}{msg}", file.display()));
                }
            }
        }
    }
    for file in checked.files.iter().filter_map(|f| f.transformer.as_ref()) {
        if let Err(e) = hookflow::flow::transform::read(file, &checked.dir) {
            failed.push(e);
        }
    }
    // The overrides of the command line are checked too, as `serve` would.
    let config = match checked.config {
        Ok(config) => Some(apply_overrides(config, &opts)?),
        Err(_) => None,
    };
    // The certificate files, read and parsed as `serve` will.
    if let Some(config) = &config {
        let file = path.display();
        failed.extend(hookflow::service::check_tls_files(config).into_iter().map(|p| format!("{file}: {p}")));
    }
    if !failed.is_empty() {
        // A Flow or transformer file shared by several endpoints is checked for each: its
        // problems are said once.
        let mut said = std::collections::HashSet::new();
        failed.retain(|line| said.insert(line.clone()));
        return Err(Failure::Usage(failed.join("\n")));
    }
    for ok in oks {
        out!("{ok}");
    }
    match (opts.connect, config.as_ref().map(|c| &c.store)) {
        (true, Some(hookflow::config::StoreKind::Postgres(pg))) => {
            out!("{}", hookflow::store::postgres::check_connect(pg).map_err(Failure::Runtime)?);
        }
        (true, Some(hookflow::config::StoreKind::Sqlite)) => {
            out!(
                "store: SQLite in {} (nothing to connect to)",
                config.as_ref().map_or_else(String::new, |c| c.data_dir.display().to_string())
            );
        }
        _ => {}
    }
    Ok(())
}

/// `hookflow store copy`: the SQLite store of the config's dataDir into an empty PostgreSQL.
fn store_copy(opts: Opts) -> Result<(), Failure> {
    let config = load_config(&opts)?;
    let to =
        opts.to.clone().ok_or_else(|| Failure::Usage(format!("--to postgres://... is required\n\n{}", opts.usage)))?;
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(Failure::Usage(format!(
            "--to expects a URL like postgres://user:password@host:5432/db\n\n{}",
            opts.usage
        )));
    }
    hookflow::config::check_postgres_url(&to).map_err(|e| Failure::Usage(format!("--to: {e}")))?;
    let pg = match &config.store {
        hookflow::config::StoreKind::Postgres(p) => hookflow::config::Postgres { url: to, ..p.clone() },
        // No store section to take TLS from: the URL's own `sslmode` says it, `prefer` without
        // one. (The driver knows disable, prefer and require; libpq's verify-ca and verify-full
        // are refused with the URL, and `require` verifies as verify-full does.)
        hookflow::config::StoreKind::Sqlite => hookflow::config::Postgres {
            tls: hookflow::config::PostgresTls::of_url(&to).unwrap_or(hookflow::config::PostgresTls::Prefer),
            url: to,
            pool: 1,
            lease: std::time::Duration::from_secs(10),
            ca_file: None,
        },
    };
    // `held` keeps the data directory's lock until the store is marked copied.
    let (export, held) =
        hookflow::store::sqlite::export(&config.data_dir).map_err(|e| Failure::Runtime(e.to_string()))?;
    let said = hookflow::store::postgres::import(&pg, export).map_err(|e| Failure::Runtime(e.to_string()))?;
    out!("{said}");
    // The single node must not run on this store again: it would send the copied outputs too.
    match hookflow::store::sqlite::mark_copied(&config.data_dir, &pg.url) {
        Ok(()) => out!(
            "{} now refuses to start a single node (the file {} says why; delete it to use the store again)",
            config.data_dir.display(),
            hookflow::store::sqlite::COPIED_MARK
        ),
        Err(e) => err!(
            "hookflow: the copy is done, but {} could not be marked as copied ({e}): do not start the single \
             node on it again, or it sends the copied outputs a second time",
            config.data_dir.display()
        ),
    }
    drop(held);
    Ok(())
}

fn try_flow(opts: Opts) -> Result<(), Failure> {
    let config = load_config(&opts)?;
    let endpoint = match (&opts.endpoint, config.endpoints.as_slice()) {
        (Some(e), _) => e.clone(),
        (None, [only]) => only.name.clone(),
        (None, _) => {
            return Err(Failure::Usage(format!(
                "--endpoint NAME is required when the config has several; it has: {}",
                config.endpoint_names().join(", ")
            )));
        }
    };
    let stdin = std::io::stdin();
    // A prompt only for a person at a terminal: piped input is not echoed, so there it would
    // only run into the bot's lines.
    let prompt = std::io::IsTerminal::is_terminal(&stdin);
    hookflow::cli::try_cmd::run(&config, &endpoint, stdin.lock(), &mut std::io::stdout(), prompt)
        .map_err(Failure::Usage)
}

fn sink(opts: Opts) -> Result<(), Failure> {
    let listen = opts.listen.unwrap_or_else(|| "127.0.0.1:9000".into());
    let auth = match (opts.user, opts.password) {
        (Some(user), password) => Some(hookflow::cli::sink::SinkAuth { user, password: password.unwrap_or_default() }),
        (None, Some(_)) => return Err(Failure::Usage("--password needs --user".into())),
        (None, None) => None,
    };
    hookflow::cli::sink::run(&listen, auth).map_err(Failure::Runtime)
}

fn keygen() {
    let key = format!("hf_{}", hookflow::hex(&hookflow::random_bytes::<24>()));
    out!("key:    {key}");
    out!("config: sha256:{}", hookflow::hex(&hookflow::crypto::sha256(key.as_bytes())));
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_takes_the_trim_threshold() {
        assert!(super::keep_freed_memory(), "mallopt(M_TRIM_THRESHOLD) was refused");
    }
}
