//! Connecting: the driver's config from `store` (URL, TLS, timeouts), the rustls setup, this
//! replica's name, and `hookflow check --connect`.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::pool::{Connector, Pool};
use super::schema;
use crate::config::{Postgres, PostgresTls};
use crate::store::{ErrorKind, Result, StoreError};

/// `host:port` of the URL's first host, for messages (never the password).
pub fn target_of(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}

/// The driver's config for `store`: the URL, with `store.tls` and timeouts that notice a
/// vanished server.
pub fn driver_config(pg: &Postgres) -> Result<(postgres::Config, bool)> {
    let mut config: postgres::Config = pg.url.parse().map_err(|e| {
        let why = crate::util::with_causes(&e);
        StoreError::new(ErrorKind::Other, format!("store.url is not a valid PostgreSQL URL: {why}"))
    })?;
    config.application_name("hookflow");
    config.connect_timeout(Duration::from_secs(5));
    config.keepalives_idle(Duration::from_secs(10));
    config.tcp_user_timeout(Duration::from_secs(15));
    // `store.tls` already holds the URL's `sslmode` (config/store.rs); the driver is told it.
    let tls = match pg.tls {
        PostgresTls::Disable => {
            config.ssl_mode(postgres::config::SslMode::Disable);
            false
        }
        PostgresTls::Prefer => {
            config.ssl_mode(postgres::config::SslMode::Prefer);
            true
        }
        PostgresTls::Require => {
            config.ssl_mode(postgres::config::SslMode::Require);
            true
        }
    };
    Ok((config, tls))
}

/// The rustls client config: Mozilla's roots (built in) plus `store.caFile`.
pub(super) fn rustls_config(pg: &Postgres) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let _ = roots.add(der.clone());
    }
    if let Some(file) = &pg.ca_file {
        let bad = |e: String| StoreError::new(ErrorKind::Io, format!("store.caFile {}: {e}", file.display()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
            .map_err(|e| bad(e.to_string()))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::new(ErrorKind::Other, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A name for this replica: host name, pid and 4 random bytes (a restarted replica is a new one).
pub(super) fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    let host = if host.is_empty() { "hookflow" } else { host };
    format!("{host}-{}-{:08x}", std::process::id(), u32::from_le_bytes(r))
}

/// `hookflow check --connect`: connects once (no retries, nothing changed) and says what it
/// found: the server's version and whether the schema is current, older (migrated at the next
/// start) or newer (refused).
pub fn check_connect(pg: &Postgres) -> std::result::Result<String, String> {
    let (config, tls) = driver_config(pg).map_err(|e| e.message)?;
    let target = target_of(&config);
    let connector = if tls {
        Connector::Tls(tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config(pg).map_err(|e| e.message)?))
    } else {
        Connector::Plain
    };
    let pool = Pool { config, connector, size: 1, lease: pg.lease, state: Mutex::default(), freed: Condvar::new() };
    let fail = |e: StoreError| match super::refusal_fix(&e) {
        Some(fix) => format!("cannot connect to PostgreSQL at {target}: {}; {fix}", e.message),
        None => format!("cannot connect to PostgreSQL at {target}: {}", e.message),
    };
    let mut client = pool.connect_within(Duration::from_secs(15)).map_err(fail)?;
    let version: String = client.query_one("SHOW server_version", &[]).map_err(|e| fail(e.into()))?.get(0);
    let found = schema::version(&mut client).map_err(fail)?;
    let vacuum = match found {
        Some(_) if !super::queue::may_vacuum(&mut client).map_err(fail)? => {
            "; this role does not own the tables, so replicas leave their old row versions to autovacuum \
             (README: Replicas vacuum what their claims churn)"
        }
        _ => "",
    };
    if found.is_some()
        && let Some(missing) = schema::missing_privileges(&mut client).map_err(fail)?
    {
        return Err(format!("PostgreSQL {version} at {target}: {missing}"));
    }
    let schema = match found {
        None if !schema::may_create(&mut client).map_err(fail)? => {
            return Err(format!("PostgreSQL {version} at {target}: {}", schema::cannot_create(&mut client)));
        }
        None => "empty (the schema is created at the first start)".to_owned(),
        Some(v) if v == schema::VERSION => format!("schema version {v}, current"),
        Some(v) if v < schema::VERSION => {
            format!("schema version {v}, migrated to {} at the next start", schema::VERSION)
        }
        Some(v) => {
            return Err(format!(
                "PostgreSQL {version} at {target}: schema version {v} is newer than this hookflow's {}: it would \
                 refuse to start; run the newer hookflow",
                schema::VERSION
            ));
        }
    };
    Ok(format!("store: PostgreSQL {version} at {target}: {schema}{vacuum}"))
}
