//! A throwaway PostgreSQL server for the tests: `initdb` and `pg_ctl` from the system's
//! PostgreSQL binaries (`make test` installs Debian's `postgresql` when they are missing), a temp
//! directory, a free port on 127.0.0.1, trust authentication. As root the server runs as the
//! unprivileged `postgres` user (PostgreSQL refuses to run as root).
//!
//! One server per test process (`shared()`), started on first use; each test takes a fresh
//! database of its own (`fresh_db`), so tests share the server's start-up cost but no data. A
//! test that stops and starts the server takes a server of its own (`PgServer::start`). A
//! watchdog process stops a server once the test process is gone, however it ended, so no
//! server outlives the run.
//!
//! Included by path from the unit tests (`src/store/postgres/tests.rs`) and the integration
//! tests (`tests/it/main.rs`); in `tests/common/` so that cargo does not take it for a test target.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One running server.
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Settings beyond the test defaults (`-c name=value` each), e.g. the bench's statistics.
    extra: Vec<String>,
}

static SHARED: OnceLock<PgServer> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The test process's shared server.
pub fn shared() -> &'static PgServer {
    SHARED.get_or_init(|| PgServer::start("shared"))
}

/// A URL of a new, empty database on the shared server.
pub fn fresh_db(name: &str) -> String {
    shared().fresh_db(name)
}

/// Where the system's PostgreSQL binaries are (the highest version installed).
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: `make test` installs them \
             (apt-get install postgresql); on another system install PostgreSQL's server package"
        )
    })
}

fn is_root() -> bool {
    // The effective uid, without a libc binding: /proc/self/status says it.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// `cmd` as the server's user: `postgres` when we are root.
fn as_server_user(bin: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgServer {
    /// Creates a cluster in a temp dir and starts it; panics with the server's log if it fails.
    pub fn start(name: &str) -> PgServer {
        PgServer::start_with(name, &[])
    }

    /// As `start`, with more server settings (`name=value`).
    pub fn start_with(name: &str, extra: &[&str]) -> PgServer {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("hookflow-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir);
        if is_root() {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(ok.success(), "chown {} to postgres", dir.display());
        }
        let data = dir.join("data");
        let out = as_server_user(
            &bin.join("initdb"),
            &["-D", data.to_str().unwrap(), "-U", "hookflow", "--auth=trust", "--no-sync", "-E", "UTF8"],
        )
        .stdout(Stdio::null())
        .output()
        .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let server =
            PgServer { port: free_port(), dir, bin, extra: extra.iter().map(|e| format!(" -c {e}")).collect() };
        server.start_again();
        server.watchdog();
        server
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_owned()
    }

    /// Starts the (stopped) server again on the same port, and waits until it takes connections.
    pub fn start_again(&self) {
        // fsync off: a test server need not survive a power cut, and it makes commits cheap.
        // TLS on (clients choose: the tests' URLs say sslmode=disable unless they test TLS).
        let opts = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200 -c ssl=on -c ssl_cert_file={dir}/server.crt \
             -c ssl_key_file={dir}/server.key{}",
            self.port,
            self.extra.concat(),
            dir = self.dir.display(),
        );
        let log = self.dir.join("server.log");
        let out = as_server_user(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "-t", "60", "start"],
        )
        .stdout(Stdio::null())
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_err() {
            assert!(Instant::now() < deadline, "the test PostgreSQL server does not take connections");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (as a crash would: `immediate`).
    pub fn stop(&self) {
        let out = as_server_user(&self.bin.join("pg_ctl"), &["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server when this process ends (checked every second by a shell).
    // The shell outlives this process by design (it acts once we are gone), so it is not waited for.
    #[allow(clippy::zombie_processes)]
    fn watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf {dir}",
            pid = std::process::id(),
            stop = if is_root() {
                format!("runuser -u postgres -- {}/pg_ctl -D {} -m immediate stop", self.bin.display(), self.data())
            } else {
                format!("{}/pg_ctl -D {} -m immediate stop", self.bin.display(), self.data())
            },
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the PostgreSQL watchdog");
    }

    /// The pid of the server's main process (from `postmaster.pid`), while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The certificate of the private CA that signed the server's TLS certificate (for
    /// 127.0.0.1 and localhost), for `store.caFile`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://hookflow@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn fresh_db(&self, name: &str) -> String {
        let n = DATABASES.fetch_add(1, Ordering::SeqCst);
        let db =
            format!("t_{}_{n}", name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>());
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        // One statement each: DROP/CREATE DATABASE cannot run in the implicit transaction of a batch.
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        self.url(&db)
    }
}

/// A private CA (`ca.crt`) and a server certificate it signed (`server.crt`, `server.key`) for
/// 127.0.0.1 and localhost, in `dir`, made with the system's `openssl` (ECDSA P-256, valid for
/// two days). The server needs its key readable by itself only.
pub fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=hookflow test CA"],
        &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
}
