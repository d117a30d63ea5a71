//! The `store` section (replicas.md): SQLite in `dataDir` (the default), or a PostgreSQL database
//! shared by replicas. Only the settings are checked here; `hookflow check --connect` connects.

use std::time::Duration;

use serde_json::Value;

use super::loader::Loader;
use super::walk::{Obj, Walk};
use super::{Postgres, PostgresTls, StoreKind};

const STORE_KEYS: &[&str] = &["type", "url", "pool", "leaseSeconds", "tls", "caFile"];
const SQLITE_KEYS: &[&str] = &["type"];
/// Default `store.pool`: connections one replica keeps open.
pub const DEFAULT_POOL: usize = 8;
/// Largest `store.pool`: PostgreSQL's default `max_connections` is 100 for all replicas.
pub const MAX_POOL: u64 = 64;
/// Default `store.leaseSeconds`.
pub const DEFAULT_LEASE_SECONDS: u64 = 10;
/// Bounds of `store.leaseSeconds`: below 2 s a renewal every third of it is too tight for a
/// busy database; beyond an hour a dead replica's sessions would wait that long.
const LEASE_SECONDS: std::ops::RangeInclusive<u64> = 2..=3600;

impl Loader<'_> {
    pub(super) fn store(&mut self, top: &Obj) -> StoreKind {
        let Some((path, value)) = top.get("store") else {
            return StoreKind::Sqlite;
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        // An unknown type is said (with the nearest); its keys are then judged as postgres's,
        // so that a typo in the type does not also call `url` unknown.
        let known = if kind == "sqlite" { SQLITE_KEYS } else { STORE_KEYS };
        let o = self.object(path, Some(value), known);
        match self.req(&o, "type", |l, p, v| l.choice(p, v, &["sqlite", "postgres"])) {
            Some("postgres") => StoreKind::Postgres(self.postgres(&o)),
            _ => StoreKind::Sqlite,
        }
    }

    fn postgres(&mut self, o: &Obj) -> Postgres {
        let url = self.req(o, "url", Self::postgres_url).unwrap_or_default();
        let given = match self.opt_choice(o, "tls", &["disable", "prefer", "require"]) {
            Some("disable") => Some(PostgresTls::Disable),
            Some("require") => Some(PostgresTls::Require),
            Some(_) => Some(PostgresTls::Prefer),
            None => None,
        };
        // With an `sslmode` in the URL too, the stricter of the two (a URL saying `require` fell
        // back to plain text under the default `prefer`); without `store.tls`, the URL's (its
        // `disable` was overridden by `prefer`, which then failed on a self-signed certificate).
        let tls = match (given, PostgresTls::of_url(&url)) {
            (Some(t), Some(u)) => t.max(u),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => PostgresTls::Prefer,
        };
        let ca_file = self.opt(o, "caFile", |l, p, v| if v.is_null() { None } else { l.path(p, v) });
        if ca_file.is_some() && tls == PostgresTls::Disable {
            self.error(&o.at("caFile"), "a CA file is only used with TLS: remove it, or set store.tls to \"require\"");
        }
        Postgres {
            url,
            pool: self.opt_int(o, "pool", DEFAULT_POOL as u64, 1..=MAX_POOL) as usize,
            lease: Duration::from_secs(self.opt_int(o, "leaseSeconds", DEFAULT_LEASE_SECONDS, LEASE_SECONDS)),
            tls,
            ca_file,
        }
    }

    /// A libpq-style URL (`postgres://user:password@host:5432/db`), as the driver reads it.
    fn postgres_url(&mut self, path: &str, v: &Value) -> Option<String> {
        let url = self.string(path, v)?;
        match check_postgres_url(&url) {
            Ok(()) => Some(url),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }
}

/// What is wrong with a PostgreSQL URL, if anything, as the driver would read it (`store.url`,
/// and `store copy --to`). The driver's messages do not quote the URL, so no password is shown.
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("expected a URL like \"postgres://user:password@host:5432/db\" (usually \"${NAME}\", so \
                    the password stays out of the file)"
            .into());
    }
    if url.contains("sslmode=verify") {
        return Err("sslmode=verify-ca and verify-full are libpq's: here the certificate is always verified \
                    when TLS is used; write sslmode=require (or set store.tls)"
            .into());
    }
    match url.parse::<postgres::Config>() {
        Ok(c) if c.get_hosts().is_empty() => {
            Err("the URL names no host: write postgres://user:password@host:5432/db".into())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(format!("not a valid PostgreSQL URL: {}", crate::util::with_causes(&e))),
    }
}
