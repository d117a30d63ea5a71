//! Setting replicas up and keeping them running (a child of `replicas`, whose helpers it uses):
//! `check --connect`, TLS to the database, a database unreachable at start, and the vacuum of
//! the tables the claims churn.

use super::*;

#[test]
fn a_replica_vacuums_the_tables_its_claims_churn() {
    let dir = TempDir::new("replicas-vacuum");
    let sink = Sink::new();
    let db = pgserver::fresh_db("vacuum");
    let path = replica_config(&dir, &sink.url, &db);
    let replica = start(&path, &dir, "replica");
    let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    // Autovacuum would run at random moments and take the count down (the replica created the
    // tables as it started).
    client
        .batch_execute(
            "ALTER TABLE queues SET (autovacuum_enabled = false); ALTER TABLE inbox SET (autovacuum_enabled = false);
             ALTER TABLE outbox SET (autovacuum_enabled = false);",
        )
        .unwrap();
    // 400 messages leave over a thousand old row versions in `queues`, `inbox` and `outbox`.
    let acked = spray(&[replica.url(&format!("/{TOKEN}"))], 20, 20, "s", "m");
    collect(&sink, &acked, Duration::from_secs(60), &db);
    // `last_vacuum` is set by a VACUUM command only (autovacuum sets `last_autovacuum`).
    // Statistics lag: up to ten seconds for a backend that went idle just after a report.
    let vacuumed = wait_until(Duration::from_secs(30), || {
        let row = client
            .query_one("SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'queues'", &[])
            .unwrap();
        row.get::<_, bool>(0).then_some(())
    });
    assert!(vacuumed.is_some(), "the replica did not vacuum `queues`:\n{}", replica.log_text());
}

#[test]
fn a_replica_whose_database_is_unreachable_at_start_exits_2_naming_it() {
    let dir = TempDir::new("replicas-unreachable");
    let db = format!("postgres://hookflow@127.0.0.1:{CLOSED_PORT}/x");
    let path = replica_config(&dir, "http://127.0.0.1:9/hook", &db);
    let started = Instant::now();
    let out = run_cli(&["serve", "--config", path.to_str().unwrap()], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // Tried for 15 s (a database restarting with the machine), then given up on, for systemd.
    assert!(started.elapsed() >= Duration::from_secs(15), "gave up after {:?}", started.elapsed());
    assert!(stderr.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{CLOSED_PORT} within 15s")), "{stderr}");
}

#[test]
fn check_connect_reports_the_server_and_the_schema_and_check_validates_the_store_section() {
    let dir = TempDir::new("replicas-check");
    let db = pgserver::fresh_db("check");
    let path = replica_config(&dir, "http://127.0.0.1:9/hook", &db);
    let cfg = path.to_str().unwrap();
    let out = run_cli(&["check", "--config", cfg, "--connect"], &[], "", None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("store: PostgreSQL 15") || stdout.contains("store: PostgreSQL 1"), "{stdout}");
    assert!(stdout.contains("empty (the schema is created at the first start)"), "{stdout}");
    // After a replica ran, the schema is there and current.
    drop(start(&path, &dir, "once"));
    let out = run_cli(&["check", "--config", cfg, "--connect"], &[], "", None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("schema version {}, current", hookflow::store::postgres::schema::VERSION);
    assert!(stdout.contains(&want) && !stdout.contains("does not own"), "{stdout}");
    // A role that may use the tables but not their id sequences (GRANT ... ON ALL TABLES alone)
    // is told what it lacks, by check and by serve: it passed both, then answered every
    // message 503 ("permission denied for sequence inbox_id_seq") while /readyz said 200.
    let mut admin = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "CREATE ROLE hookflow_guest LOGIN;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO hookflow_guest",
        )
        .unwrap();
    let mut guest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    guest["store"]["url"] = json!(db.replacen("postgres://hookflow@", "postgres://hookflow_guest@", 1));
    std::fs::write(&path, guest.to_string()).unwrap();
    for command in ["check", "serve"] {
        let args: &[&str] = match command {
            "check" => &["check", "--config", cfg, "--connect"],
            _ => &["serve", "--config", cfg],
        };
        let out = run_cli(args, &[], "", None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("role hookflow_guest lacks privileges the replicas need: "), "{command}: {stderr}");
        assert!(stderr.contains("inbox_id_seq (USAGE)"), "{command}: {stderr}");
        assert!(stderr.contains("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO hookflow_guest"), "{stderr}");
    }
    // With them, a role that does not own the tables is told that replicas cannot vacuum them.
    admin.batch_execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO hookflow_guest").unwrap();
    let out = run_cli(&["check", "--config", cfg, "--connect"], &[], "", None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&want) && stdout.contains("this role does not own the tables"), "{stdout}");
    // Without --connect nothing is contacted: a server that is not there is no error.
    let mut gone: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    gone["store"]["url"] = json!(format!("postgres://hookflow@127.0.0.1:{CLOSED_PORT}/x"));
    std::fs::write(&path, gone.to_string()).unwrap();
    assert!(run_cli(&["check", "--config", cfg], &[], "", None).status.success());
    let out = run_cli(&["check", "--config", cfg, "--connect"], &[], "", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to PostgreSQL at 127.0.0.1:"));
    // A bad store section: the place and the fix.
    gone["store"] = json!({"type": "postgress", "url": "mysql://x"});
    std::fs::write(&path, gone.to_string()).unwrap();
    let out = run_cli(&["check", "--config", cfg], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("store.type") && stderr.contains("did you mean \"postgres\"?"), "{stderr}");
    gone["store"] = json!({"type": "postgres", "url": "mysql://x", "leaseSeconds": 1});
    std::fs::write(&path, gone.to_string()).unwrap();
    let stderr = String::from_utf8_lossy(&run_cli(&["check", "--config", cfg], &[], "", None).stderr).into_owned();
    assert!(stderr.contains("store.url") && stderr.contains("postgres://user:password@host:5432/db"), "{stderr}");
    assert!(stderr.contains("store.leaseSeconds"), "{stderr}");
}

#[test]
fn a_replica_talks_to_postgres_over_tls_verified_against_the_store_ca_file() {
    // The test server has TLS on, with a certificate for 127.0.0.1 from a private CA.
    let server = pgserver::shared();
    let db = server.fresh_db("tls");
    let name = db.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let dir = TempDir::new("replicas-tls");
    let sink = Sink::new();
    let path = replica_config(&dir, &sink.url, &db);
    let ca = dir.join("postgres-ca.crt");
    std::fs::copy(server.ca_file(), &ca).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["store"]["tls"] = json!("require");
    cfg["store"]["caFile"] = json!(ca.to_str().unwrap());
    std::fs::write(&path, cfg.to_string()).unwrap();
    let config = path.to_str().unwrap();

    let out = run_cli(&["check", "--config", config, "--connect"], &[], "", None);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut replica = start(&path, &dir, "tls");
    send_to(&replica.url(&format!("/{TOKEN}")), &json!({"userId": "u", "sessionId": "t", "text": "over TLS"}));
    assert_eq!(sink.recv(WAIT).text(), "over TLS");
    // Every connection of the replica to its database is encrypted (the server's own view).
    let mut admin = postgres::Client::connect(&server.url("postgres"), postgres::NoTls).unwrap();
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'hookflow' AND a.datname = $1",
            &[&name],
        )
        .unwrap();
    assert!(!rows.is_empty(), "the replica holds connections to {name}");
    assert!(rows.iter().all(|r| r.get::<_, bool>(0)), "a connection without TLS among {} of them", rows.len());
    replica.signal("TERM");
    replica.wait_exit(WAIT).expect("the replica stops");

    // `prefer` verifies too (verify-full semantics, replicas.md): a certificate that chains to no
    // known root is refused, naming the reason, whatever the mode.
    for mode in ["require", "prefer"] {
        cfg["store"]["tls"] = json!(mode);
        cfg["store"]["caFile"] = serde_json::Value::Null;
        std::fs::write(&path, cfg.to_string()).unwrap();
        let out = run_cli(&["check", "--config", config, "--connect"], &[], "", None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode}: {stderr}");
        assert!(stderr.contains("cannot connect to PostgreSQL at 127.0.0.1:"), "{mode}: {stderr}");
        assert!(stderr.to_lowercase().contains("certificate"), "{mode}: {stderr}");
    }
    // The certificate must also name the host of the URL (verify-full): the same server, reached
    // at its address under a name the certificate does not have, is refused.
    let port = db.split_once("127.0.0.1:").unwrap().1.split('/').next().unwrap().to_owned();
    let renamed = db.replacen(&format!("127.0.0.1:{port}"), &format!("db.example:{port}"), 1);
    cfg["store"]["url"] = json!(format!("{renamed}&hostaddr=127.0.0.1"));
    cfg["store"]["tls"] = json!("require");
    cfg["store"]["caFile"] = json!(ca.to_str().unwrap());
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = run_cli(&["check", "--config", config, "--connect"], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("certificate not valid for name \"db.example\""), "{stderr}");
}

/// A role that may use hookflow's tables but not create any starts (it failed on
/// `CREATE TABLE IF NOT EXISTS`, "permission denied for schema public", while `check --connect`
/// said all was well); on an empty database such a role is told what to grant, by `check
/// --connect` and by `serve`; a schema newer than this hookflow's fails `check --connect`.
#[test]
fn roles_without_create_and_newer_schemas_are_told_apart_by_check_connect() {
    let dir = TempDir::new("replicas-roles");
    let sink = Sink::new();
    let db = pgserver::fresh_db("roles");
    let path = replica_config(&dir, &sink.url, &db);
    drop(start(&path, &dir, "owner"));
    let mut admin = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "CREATE ROLE hookflow_user LOGIN;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO hookflow_user;
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO hookflow_user;
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        )
        .unwrap();
    let as_user = |url: &str| {
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg["store"]["url"] = json!(url.replacen("postgres://hookflow@", "postgres://hookflow_user@", 1));
        std::fs::write(&path, cfg.to_string()).unwrap();
    };
    as_user(&db);
    let cfg = path.to_str().unwrap();
    // A database made by an older hookflow has no index of dead letters by session, which only
    // the owner may create: such a role starts all the same, and says what the owner should run.
    admin.batch_execute("DROP INDEX deadletters_session").unwrap();
    let user = start(&path, &dir, "user");
    assert!(user.log_text().contains("only the tables' owner may create it"), "{}", user.log_text());
    let acked = spray(&[user.url(&format!("/{TOKEN}"))], 2, 2, "r", "m");
    collect(&sink, &acked, Duration::from_secs(30), &db);
    drop(user);

    let empty = pgserver::fresh_db("roles-empty");
    as_user(&empty);
    let out = run_cli(&["check", "--config", cfg, "--connect"], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("role hookflow_user may not create tables in it: GRANT CREATE ON SCHEMA public TO hookflow_user"),
        "{stderr}"
    );
    let out = run_cli(&["serve", "--config", cfg], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("role hookflow_user may not create tables in it: GRANT CREATE ON SCHEMA public TO hookflow_user"),
        "{stderr}"
    );

    admin.batch_execute("UPDATE hookflow_schema SET version = version + 1").unwrap();
    as_user(&db);
    let out = run_cli(&["check", "--config", cfg, "--connect"], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is newer than this hookflow's"), "{stderr}");
}

/// A server that takes connections and never answers (frozen, or not PostgreSQL): the driver's
/// connect timeout covers only TCP, so `serve` waited for ever at start (deaf to SIGTERM) and
/// so did `check --connect`. Both now give up after 15 s, exit 2, and say what they met.
#[test]
fn a_database_port_that_never_answers_fails_the_start_and_check_connect_in_bounded_time() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Connections are taken (the kernel's backlog) and never read.
    let dir = TempDir::new("replicas-silent");
    let path = replica_config(&dir, "http://127.0.0.1:9/hook", &format!("postgres://hookflow@127.0.0.1:{port}/x"));
    let cfg = path.to_str().unwrap().to_owned();
    let check = std::thread::spawn(move || run_cli(&["check", "--config", &cfg, "--connect"], &[], "", None));
    let started = Instant::now();
    let out = run_cli(&["serve", "--config", path.to_str().unwrap()], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(40), "gave up after {:?}", started.elapsed());
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("does not answer as PostgreSQL"),
        "{stderr}"
    );
    let out = check.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not answer as PostgreSQL"), "{stderr}");
    drop(silent);
}

/// A server that answers "no" (a database that does not exist, a wrong password) is not an
/// unreachable one: `serve` said "cannot reach" after 15 s of retries. Now at once, with the fix.
#[test]
fn a_database_that_does_not_exist_is_said_at_once_with_the_fix() {
    let dir = TempDir::new("replicas-nosuch");
    let url = pgserver::shared().url("no_such_database");
    let path = replica_config(&dir, "http://127.0.0.1:9/hook", &url);
    let started = Instant::now();
    let out = run_cli(&["serve", "--config", path.to_str().unwrap()], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
    assert!(stderr.contains("refused this replica") && stderr.contains("create the database"), "{stderr}");
    let out = run_cli(&["check", "--config", path.to_str().unwrap(), "--connect"], &[], "", None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("create the database"), "{stderr}");
}
