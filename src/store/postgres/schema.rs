//! The PostgreSQL schema and its migrations: versioned, run at start under an advisory lock, so
//! that replicas starting at once on an empty database create it once, and refused when the
//! database was migrated by a newer version (replicas.md, Faults).

use postgres::Client;

use crate::store::{ErrorKind, Result, StoreError};

/// The schema version this binary writes. Bump it and add a step to `MIGRATIONS` for every change.
pub const VERSION: i64 = 1;

/// The advisory lock key under which migrations run (any constant: "hookflow" in ASCII).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_666c_6f77;

/// `MIGRATIONS[n]` takes a database from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[V1];

/// Version 1: the SQLite tables (store/sqlite/mod.rs) plus `queues`, the per-session claims.
///
/// `queues` has one row per session that ever had a message or an output. It numbers the
/// session's messages (`next_msg`, taken while holding the row lock, so numbers follow commit
/// order in the session), counts what waits (`pending` messages, `outputs`), and holds the two
/// leases: `run_*` (which replica runs the session's messages) and `dl_*` (which replica
/// delivers its head output). A lease is `owner`, `fence` (raised at every claim, checked by
/// every write that the lease guards) and `until` (database clock, ms).
const V1: &str = "
CREATE FUNCTION hookflow_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
CREATE TABLE queues (
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    next_msg BIGINT NOT NULL DEFAULT 0, pending BIGINT NOT NULL DEFAULT 0,
    ready_ms BIGINT NOT NULL DEFAULT 0,
    run_owner TEXT, run_fence BIGINT NOT NULL DEFAULT 0, run_until BIGINT NOT NULL DEFAULT 0,
    outputs BIGINT NOT NULL DEFAULT 0, out_due BIGINT NOT NULL DEFAULT 0,
    dl_owner TEXT, dl_fence BIGINT NOT NULL DEFAULT 0, dl_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, user_id, session_id)
);
CREATE INDEX queues_runnable ON queues (ready_ms) WHERE pending > 0;
CREATE INDEX queues_deliverable ON queues (endpoint, out_due) WHERE outputs > 0;
CREATE TABLE inbox (
    id BIGSERIAL PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL, msg_no BIGINT NOT NULL,
    kind TEXT NOT NULL, payload TEXT NOT NULL, resume TEXT
);
CREATE INDEX inbox_session ON inbox (endpoint, user_id, session_id, msg_no);
CREATE TABLE sessions (
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    state TEXT NOT NULL, seq BIGINT NOT NULL, messages BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
    PRIMARY KEY (endpoint, user_id, session_id)
);
CREATE TABLE profiles (user_id TEXT PRIMARY KEY, profile TEXT NOT NULL, updated_ms BIGINT NOT NULL);
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY, hash BIGINT NOT NULL,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    seq BIGINT NOT NULL, body TEXT NOT NULL,
    not_before_ms BIGINT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX outbox_session ON outbox (endpoint, user_id, session_id, seq);
CREATE TABLE transcripts (
    id BIGSERIAL PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    source TEXT NOT NULL, text TEXT NOT NULL, data TEXT NOT NULL, at_ms BIGINT NOT NULL
);
CREATE INDEX transcripts_session ON transcripts (endpoint, user_id, session_id, id);
CREATE TABLE probe (id BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL);
CREATE TABLE deadletters (
    id BIGSERIAL PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    seq BIGINT NOT NULL, body TEXT NOT NULL,
    attempts BIGINT NOT NULL, last_error TEXT NOT NULL, died_ms BIGINT NOT NULL
);
CREATE TABLE output_log (
    id BIGINT PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    seq BIGINT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, attempts BIGINT NOT NULL,
    last_error TEXT, done_ms BIGINT NOT NULL, dead_id BIGINT, replayed_as BIGINT,
    final_at_ms BIGINT, final_latency_ms BIGINT, final_status BIGINT, final_answer TEXT
);
CREATE INDEX output_log_endpoint ON output_log (endpoint, id);
CREATE INDEX output_log_dead ON output_log (dead_id) WHERE dead_id IS NOT NULL;
CREATE TABLE attempts (
    output_id BIGINT NOT NULL, attempt BIGINT NOT NULL, at_ms BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL, status BIGINT, answer TEXT NOT NULL, delivered BOOLEAN NOT NULL,
    PRIMARY KEY (output_id, attempt)
);
CREATE TABLE traces (
    id BIGSERIAL PRIMARY KEY,
    endpoint TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL, trace_id TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX traces_session ON traces (endpoint, user_id, session_id, id);
";

/// An index the expiry's purge uses to ask whether a session has dead letters (a replay is
/// numbered after the session's last Seq, which the purge would forget). Not a schema version:
/// only the tables' owner may create an index, and replicas running as a role that only uses the
/// tables must still start; without it the purge is right, only slower. Nor does it keep an older
/// hookflow from running on the database.
const DEADLETTERS_SESSION: &str = "CREATE INDEX deadletters_session ON deadletters (endpoint, user_id, session_id)";

/// Brings the database to `VERSION` (creating it when empty), under the migration lock; refuses
/// a database of a newer version. Returns the version found before.
pub fn migrate(client: &mut Client) -> Result<i64> {
    let mut tx = client.transaction()?;
    // Held to the end of the transaction: a second replica waits here, then finds the work done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // Created only when missing: `CREATE TABLE IF NOT EXISTS` asks for the CREATE privilege
    // even when the table is there, so a role that only uses the tables could not start (and
    // PostgreSQL logged a NOTICE at every start).
    let exists: bool = tx.query_one("SELECT to_regclass('hookflow_schema') IS NOT NULL", &[])?.get(0);
    if !exists {
        if !may_create(&mut tx)? {
            return Err(StoreError::new(ErrorKind::Data, cannot_create(&mut tx)));
        }
        tx.batch_execute("CREATE TABLE hookflow_schema (version BIGINT NOT NULL)")?;
    }
    // max(): a table someone gave a second row still has one version, the newest.
    let found: Option<i64> = tx.query_one("SELECT max(version) FROM hookflow_schema", &[])?.get(0);
    let found = found.unwrap_or(0);
    if found > VERSION {
        return Err(StoreError::new(
            ErrorKind::Data,
            format!(
                "the database has schema version {found}, newer than this hookflow's {VERSION} (version {}): \
                 run the newer hookflow, or restore a backup taken before the upgrade",
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    for step in &MIGRATIONS[found as usize..] {
        tx.batch_execute(step)?;
    }
    if found == 0 {
        tx.execute("INSERT INTO hookflow_schema (version) VALUES ($1)", &[&VERSION])?;
    } else if found < VERSION {
        tx.execute("UPDATE hookflow_schema SET version = $1", &[&VERSION])?;
    }
    if let Some(missing) = missing_privileges(&mut tx)? {
        return Err(StoreError::new(ErrorKind::Data, missing));
    }
    let indexed: bool = tx.query_one("SELECT to_regclass('deadletters_session') IS NOT NULL", &[])?.get(0);
    if !indexed {
        // The role that owns the tables (one role created them all) may index them.
        match super::queue::may_vacuum(&mut tx)? {
            true => tx.batch_execute(DEADLETTERS_SESSION)?,
            false => log::warn!(
                "the index deadletters_session is missing and only the tables' owner may create it: the expiry \
                 sweep works without it, more slowly; have the owner run {DEADLETTERS_SESSION}"
            ),
        }
    }
    tx.commit()?;
    Ok(found)
}

/// Why an empty database cannot be set up by this role, and the fix (start and `check --connect`).
pub fn cannot_create(client: &mut impl postgres::GenericClient) -> String {
    let (role, schema) = role_and_schema(client);
    format!(
        "the database is empty and role {role} may not create tables in it: GRANT CREATE ON SCHEMA {schema} TO \
         {role} (or let the schema's owner start hookflow once)"
    )
}

/// The current role and schema, quoted as SQL identifiers, for the GRANTs a message suggests.
fn role_and_schema(client: &mut impl postgres::GenericClient) -> (String, String) {
    client
        .query_one("SELECT quote_ident(current_user), quote_ident(COALESCE(current_schema(), 'public'))", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or_else(|_| ("this_role".into(), "public".into()))
}

/// The tables of `V1` and the sequences behind their ids: what a replica reads and writes.
const TABLES: &[&str] = &[
    "queues",
    "inbox",
    "sessions",
    "profiles",
    "outbox",
    "transcripts",
    "probe",
    "deadletters",
    "output_log",
    "attempts",
    "traces",
];
const SEQUENCES: &[&str] = &["inbox", "outbox", "transcripts", "deadletters", "traces"];

/// What this role lacks of what replicas need on an existing schema, with the GRANTs that give
/// it; `None` when it has it all. A role that may use the tables but not their id sequences
/// (`GRANT ... ON ALL TABLES` alone) passed `check --connect`, started, and answered every
/// message 503 (`permission denied for sequence inbox_id_seq`) while `/readyz` said 200.
pub fn missing_privileges(client: &mut impl postgres::GenericClient) -> Result<Option<String>> {
    // A list of privileges in has_sequence_privilege is "any of": nextval needs USAGE or UPDATE.
    let rows = client.query(
        "SELECT t || ' (' || p || ')' FROM unnest($1::text[]) AS t, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p
             WHERE to_regclass(t) IS NOT NULL AND NOT has_table_privilege(to_regclass(t), p)
         UNION ALL
         SELECT pg_get_serial_sequence(t, 'id') || ' (USAGE)' FROM unnest($2::text[]) AS t
             WHERE to_regclass(t) IS NOT NULL AND pg_get_serial_sequence(t, 'id') IS NOT NULL
               AND NOT has_sequence_privilege(pg_get_serial_sequence(t, 'id'), 'USAGE, UPDATE')
         UNION ALL
         SELECT 'hookflow_schema (SELECT)' WHERE NOT has_table_privilege('hookflow_schema', 'SELECT')",
        &[&TABLES, &SEQUENCES],
    )?;
    if rows.is_empty() {
        return Ok(None);
    }
    let missing: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let (role, schema) = role_and_schema(client);
    Ok(Some(format!(
        "role {role} lacks privileges the replicas need: {}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN \
         SCHEMA {schema} TO {role}; GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        missing.join(", ")
    )))
}

/// Whether this role may create tables in its current schema (an empty database needs it).
pub fn may_create(client: &mut impl postgres::GenericClient) -> Result<bool> {
    Ok(client
        .query_one("SELECT COALESCE(has_schema_privilege(current_user, current_schema(), 'CREATE'), false)", &[])?
        .get(0))
}

/// The version of the database's schema without changing it (`hookflow check --connect`).
pub fn version(client: &mut Client) -> Result<Option<i64>> {
    let exists: bool = client.query_one("SELECT to_regclass('hookflow_schema') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client.query_one("SELECT max(version) FROM hookflow_schema", &[])?.get(0))
}
