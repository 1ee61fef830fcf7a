//! The registry's schema as forward-only migrations, tracked in `PRAGMA user_version`.

use rusqlite::Connection;

/// Migration `i` takes the schema from version `i` to `i + 1`. Never edit a released one:
/// add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE services (
    name        TEXT PRIMARY KEY,
    active      INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
) STRICT;

CREATE TABLE components (
    service        TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    position       INTEGER NOT NULL,
    image          TEXT NOT NULL,
    desired_state  TEXT NOT NULL CHECK (desired_state IN ('running', 'stopped')),
    network        TEXT NOT NULL,
    user           TEXT,
    restart        TEXT NOT NULL,
    cmd            TEXT NOT NULL,   -- JSON array of strings
    env            TEXT NOT NULL,   -- JSON object
    volumes        TEXT NOT NULL,   -- JSON array of "host:container[:opts]"
    ports          TEXT NOT NULL,   -- JSON array of "[ip:]host:container/proto"
    PRIMARY KEY (service, name)
) STRICT;

CREATE TABLE routes (
    service    TEXT NOT NULL,
    component  TEXT NOT NULL,
    name       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    port       INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    mode       TEXT NOT NULL CHECK (mode IN ('l7', 'l4')),
    hostname   TEXT,
    host_port  INTEGER UNIQUE CHECK (host_port BETWEEN 1 AND 65535),
    PRIMARY KEY (service, component, name),
    FOREIGN KEY (service, component) REFERENCES components (service, name) ON DELETE CASCADE
) STRICT;

-- Observed state, not desired: kept across re-applies, dropped with the service.
CREATE TABLE component_status (
    service        TEXT NOT NULL,
    component      TEXT NOT NULL,
    state          TEXT NOT NULL,
    container_id   TEXT,
    last_error     TEXT,
    restarts       INTEGER NOT NULL DEFAULT 0,
    next_retry_ms  INTEGER,
    updated_ms     INTEGER NOT NULL,
    PRIMARY KEY (service, component)
) STRICT;
"#,
    // 1 -> 2: whether each route is registered with the proxy (NULL: not yet).
    r#"
ALTER TABLE routes ADD COLUMN proxy_state TEXT;
ALTER TABLE routes ADD COLUMN proxy_error TEXT;
"#,
    // 2 -> 3: each service's TLS certificate as last observed (docs/design.md §7), for
    // `status`.
    r#"
CREATE TABLE cert_status (
    service        TEXT PRIMARY KEY REFERENCES services (name) ON DELETE CASCADE,
    state          TEXT NOT NULL,
    names          TEXT NOT NULL,   -- JSON array of the hostnames the service needs
    not_after_ms   INTEGER,
    serial         TEXT,
    last_error     TEXT,
    next_retry_ms  INTEGER,
    updated_ms     INTEGER NOT NULL
) STRICT;
"#, // 3 -> 4: a counter of desired-state changes, kept by triggers, so the daemon can
    // tell them from status writes (both change PRAGMA data_version).
    r#"
CREATE TABLE desired_generation (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    value  INTEGER NOT NULL
) STRICT;
INSERT INTO desired_generation (id, value) VALUES (1, 0);
CREATE TRIGGER desired_services_insert AFTER INSERT ON services
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_services_update AFTER UPDATE ON services
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_services_delete AFTER DELETE ON services
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_components_insert AFTER INSERT ON components
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_components_update AFTER UPDATE ON components
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_components_delete AFTER DELETE ON components
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_routes_insert AFTER INSERT ON routes
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_routes_update AFTER UPDATE OF name, port, mode, hostname, host_port ON routes
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_routes_delete AFTER DELETE ON routes
BEGIN UPDATE desired_generation SET value = value + 1; END;
"#,
    // 4 -> 5: the registry's identity (docs/design.md §9). `registry_id` is stamped on
    // every container as `mcp.registry`; a registry migrated from an older version made
    // its containers without that label and adopts them (`adopts_unlabelled`); a new one
    // clears it in `migrate`. `adopted` holds containers of other registries taken over
    // by `mcp-agent adopt`; it counts as desired state (the plan reads it).
    r#"
CREATE TABLE registry_meta (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    registry_id        TEXT NOT NULL,
    created_ms         INTEGER NOT NULL,
    adopts_unlabelled  INTEGER NOT NULL
) STRICT;
INSERT INTO registry_meta (id, registry_id, created_ms, adopts_unlabelled)
VALUES (1, lower(hex(randomblob(16))),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), 1);
CREATE TABLE adopted (
    container_id  TEXT PRIMARY KEY,
    registry      TEXT,            -- the `mcp.registry` it carries; NULL: none
    service       TEXT NOT NULL,
    component     TEXT NOT NULL,
    adopted_ms    INTEGER NOT NULL
) STRICT;
CREATE TRIGGER desired_adopted_insert AFTER INSERT ON adopted
BEGIN UPDATE desired_generation SET value = value + 1; END;
CREATE TRIGGER desired_adopted_delete AFTER DELETE ON adopted
BEGIN UPDATE desired_generation SET value = value + 1; END;
"#,
    // 5 -> 6: a component's process, security, resource and metadata keys (issue 13),
    // one JSON object of the keys it sets; '{}' (none) for the components of before.
    r#"
ALTER TABLE components ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
"#,
    // 6 -> 7: health checks and one-shot components (issue 14): a component's check as
    // last seen (JSON, NULL: none), and the spec hash a one-shot component completed.
    r#"
ALTER TABLE component_status ADD COLUMN health TEXT;
ALTER TABLE component_status ADD COLUMN completed_hash TEXT;
"#,
    // 7 -> 8: a service's network options (`[networks.NAME]`, docs/design.md §3.1): a JSON
    // object by the name its components use; '{}' (none) for the services of before.
    r#"
ALTER TABLE services ADD COLUMN networks TEXT NOT NULL DEFAULT '{}';
"#,
];

/// `PRAGMA application_id` of a registry ("mcpa"): tells our file from any other SQLite
/// database. Registries made before version 5 have 0 there.
pub const APPLICATION_ID: i64 = 0x6d63_7061;

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema to [`VERSION`] in one transaction. A file at version 0 must be a new,
/// empty database: only `apply` gets here with one (`Registry::open`); it becomes a
/// registry of its own that adopts nothing.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {current} is newer than this agent's {VERSION}: upgrade the agent"
            )),
        ));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    if current == 0 {
        tx.execute("UPDATE registry_meta SET adopts_unlabelled = 0", [])?;
    }
    if current < VERSION {
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    tx.commit()
}
