//! # palisade-pgstore
//!
//! The PostgreSQL side of several gateways sharing one policy: one schema (embedded,
//! idempotent migrations), the queries the server writes versions with and the gateways read
//! them with, and the flow records every gateway instance appends.
//!
//! - A policy version is one row (`palisade_policy_versions`), written in one transaction
//!   together with its audit entry and `NOTIFY palisade_policy, '<version>'`: a subscriber is
//!   woken only by a committed version, and after a crash the version is there or not.
//! - Documents are `json`, not `jsonb`: the text is kept as written, so a resource's ETag (a hash
//!   of its JSON) is the same after a restart.
//!
//! Only async `tokio-postgres` here; the server's synchronous `Store` wraps these calls.

use futures_util::stream::StreamExt;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
pub use tokio_postgres::{Client, Config, Error};

/// The channel a commit notifies; the payload is the new version number.
pub const CHANNEL: &str = "palisade_policy";

/// Each step runs once, in order, recorded in `palisade_schema`; written so that running one
/// again changes nothing (`IF NOT EXISTS`).
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE IF NOT EXISTS palisade_policy_versions (
        version bigint PRIMARY KEY,
        author text NOT NULL,
        time text NOT NULL,
        change text NOT NULL,
        snapshot text NOT NULL,
        committed_at timestamptz NOT NULL DEFAULT now(),
        document json NOT NULL
    );
    CREATE TABLE IF NOT EXISTS palisade_audit (
        id bigserial PRIMARY KEY,
        time text NOT NULL,
        actor text NOT NULL,
        change text NOT NULL,
        status integer NOT NULL,
        version bigint
    );
    CREATE TABLE IF NOT EXISTS palisade_flow_records (
        id bigserial PRIMARY KEY,
        instance text NOT NULL,
        time text NOT NULL,
        record json NOT NULL
    );
    CREATE INDEX IF NOT EXISTS palisade_flow_records_instance_time
        ON palisade_flow_records (instance, time);",
)];

/// Serialises migrations of concurrent starters (a server and gateways starting together).
const MIGRATION_LOCK: i64 = 0x7061_6c69_7361_6465; // "palisade"

/// Parse a `postgres://` URL (or key=value string), naming the flag on error.
pub fn config(flag: &str, url: &str) -> Result<Config, String> {
    let mut c = Config::from_str(url).map_err(|e| {
        format!("{flag}: not a PostgreSQL connection string (postgres://USER@HOST:PORT/DB): {e}")
    })?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    // Dead peers (a cable pulled, not a clean shutdown) are noticed by the heartbeat query too.
    c.keepalives_idle(Duration::from_secs(10));
    c.application_name("palisade");
    Ok(c)
}

/// Where a config points, without its password: for log lines.
pub fn describe(c: &Config) -> String {
    let host = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        c.get_user().unwrap_or(""),
        c.get_dbname().unwrap_or("")
    )
}

/// A connected client; notifications (LISTEN) arrive on the receiver, which ends when the
/// connection does.
pub async fn connect(c: &Config) -> Result<(Client, mpsc::UnboundedReceiver<String>), Error> {
    let (client, mut connection) = c.connect(tokio_postgres::NoTls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    Ok((client, rx))
}

/// Apply the migrations not yet applied, under an advisory lock, in one transaction.
pub async fn migrate(client: &mut Client) -> Result<(), Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS palisade_schema (
            step integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let done: i32 = tx
        .query_one("SELECT coalesce(max(step), 0) FROM palisade_schema", &[])
        .await?
        .get(0);
    for (step, sql) in MIGRATIONS.iter().filter(|(s, _)| *s > done) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO palisade_schema (step) VALUES ($1)", &[step])
            .await?;
    }
    tx.commit().await
}

/// A policy version's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub version: i64,
    pub author: String,
    pub time: String,
    pub change: String,
    pub snapshot: String,
    /// The JSON document (the server's resource list), as written.
    pub document: String,
}

/// An audit log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub time: String,
    pub actor: String,
    pub change: String,
    pub status: i32,
    pub version: Option<i64>,
}

const VERSION_COLUMNS: &str = "version, author, time, change, snapshot, document::text";

fn version_row(r: &tokio_postgres::Row) -> VersionRow {
    VersionRow {
        version: r.get(0),
        author: r.get(1),
        time: r.get(2),
        change: r.get(3),
        snapshot: r.get(4),
        document: r.get(5),
    }
}

/// The newest version, or one by number.
pub async fn version(client: &Client, n: Option<i64>) -> Result<Option<VersionRow>, Error> {
    let row = match n {
        Some(n) => {
            let q = format!(
                "SELECT {VERSION_COLUMNS} FROM palisade_policy_versions WHERE version = $1"
            );
            client.query_opt(&q, &[&n]).await?
        }
        None => {
            let q = format!(
                "SELECT {VERSION_COLUMNS} FROM palisade_policy_versions ORDER BY version DESC LIMIT 1"
            );
            client.query_opt(&q, &[]).await?
        }
    };
    Ok(row.as_ref().map(version_row))
}

/// Every version without its document, newest first.
pub async fn versions(client: &Client) -> Result<Vec<VersionRow>, Error> {
    let rows = client
        .query(
            "SELECT version, author, time, change, snapshot, '' FROM palisade_policy_versions ORDER BY version DESC",
            &[],
        )
        .await?;
    Ok(rows.iter().map(version_row).collect())
}

/// What a [`commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Stored as this version.
    Committed(i64),
    /// Nothing stored: the change was made on `parent`, but the store's newest is `head`
    /// (another writer committed first). The caller catches up and asks again.
    Stale { head: i64 },
}

/// Store `v` as the version after `parent` (its `version` field is ignored) with its audit
/// line, and notify subscribers — one transaction, and only if `parent` is still the store's
/// newest version (0: the store holds none). Two servers committing changes made on the same
/// version cannot both succeed: compare-and-set, the loser gets [`Commit::Stale`].
pub async fn commit(
    client: &mut Client,
    parent: i64,
    v: &VersionRow,
    audit: &AuditRow,
) -> Result<Commit, Error> {
    let tx = client.transaction().await?;
    // Writers take turns: the head read below cannot move before this transaction ends.
    tx.execute(
        "LOCK TABLE palisade_policy_versions IN SHARE ROW EXCLUSIVE MODE",
        &[],
    )
    .await?;
    let head: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM palisade_policy_versions",
            &[],
        )
        .await?
        .get(0);
    if head != parent {
        tx.rollback().await?;
        return Ok(Commit::Stale { head });
    }
    let n = parent + 1;
    // The primary key guards the number too, should anything write without the lock.
    tx.execute(
        "INSERT INTO palisade_policy_versions (version, author, time, change, snapshot, document)
         VALUES ($1, $2, $3, $4, $5, $6::text::json)",
        &[&n, &v.author, &v.time, &v.change, &v.snapshot, &v.document],
    )
    .await?;
    insert_audit(&tx, audit, Some(n)).await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &n.to_string()])
        .await?;
    tx.commit().await?;
    Ok(Commit::Committed(n))
}

async fn insert_audit(
    c: &impl tokio_postgres::GenericClient,
    a: &AuditRow,
    version: Option<i64>,
) -> Result<(), Error> {
    c.execute(
        "INSERT INTO palisade_audit (time, actor, change, status, version) VALUES ($1, $2, $3, $4, $5)",
        &[&a.time, &a.actor, &a.change, &a.status, &version.or(a.version)],
    )
    .await
    .map(drop)
}

/// Append an audit line (a refused change: no version).
pub async fn audit(client: &Client, a: &AuditRow) -> Result<(), Error> {
    insert_audit(client, a, None).await
}

/// The audit log, newest first.
pub async fn audit_log(client: &Client) -> Result<Vec<AuditRow>, Error> {
    let rows = client
        .query(
            "SELECT time, actor, change, status, version FROM palisade_audit ORDER BY id DESC",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditRow {
            time: r.get(0),
            actor: r.get(1),
            change: r.get(2),
            status: r.get(3),
            version: r.get(4),
        })
        .collect())
}

/// Subscribe this connection to new versions.
pub async fn listen(client: &Client) -> Result<(), Error> {
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await
}

/// One flow record: its instance, time and JSON text.
#[derive(Debug, Clone)]
pub struct FlowRow {
    pub instance: String,
    pub time: String,
    pub record: String,
}

/// Insert a batch of flow records in one statement.
pub async fn insert_flows(client: &Client, rows: &[FlowRow]) -> Result<u64, Error> {
    let (instances, times, records): (Vec<&str>, Vec<&str>, Vec<&str>) = rows
        .iter()
        .map(|r| (r.instance.as_str(), r.time.as_str(), r.record.as_str()))
        .fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (x, y, z)| {
                a.push(x);
                b.push(y);
                c.push(z);
                (a, b, c)
            },
        );
    client
        .execute(
            "INSERT INTO palisade_flow_records (instance, time, record)
             SELECT i, t, r::json FROM unnest($1::text[], $2::text[], $3::text[]) AS u(i, t, r)",
            &[&instances, &times, &records],
        )
        .await
}

/// Flow records of one instance (or all), newest first.
pub async fn flows(
    client: &Client,
    instance: Option<&str>,
    limit: i64,
) -> Result<Vec<FlowRow>, Error> {
    let rows = client
        .query(
            "SELECT instance, time, record::text FROM palisade_flow_records
             WHERE $1::text IS NULL OR instance = $1 ORDER BY id DESC LIMIT $2",
            &[&instance, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| FlowRow {
            instance: r.get(0),
            time: r.get(1),
            record: r.get(2),
        })
        .collect())
}

/// A flow record with its row id: the id orders records across instances (newest is
/// highest) and is the cursor of paging and of a live tail.
#[derive(Debug, Clone)]
pub struct StoredFlow {
    pub id: i64,
    pub row: FlowRow,
}

/// Which flow records to read: `Before(None)` the newest, `Before(Some(id))` older than `id`
/// (newest first), `After(id)` newer than `id` (oldest first: a tail).
#[derive(Debug, Clone, Copy)]
pub enum FlowPage {
    Before(Option<i64>),
    After(i64),
}

/// Up to `limit` flow records of one instance (or all), from a cursor.
pub async fn flow_page(
    client: &Client,
    instance: Option<&str>,
    page: FlowPage,
    limit: i64,
) -> Result<Vec<StoredFlow>, Error> {
    let (sql, cursor) = match page {
        FlowPage::Before(id) => (
            "SELECT id, instance, time, record::text FROM palisade_flow_records
             WHERE ($1::text IS NULL OR instance = $1) AND id < $2 ORDER BY id DESC LIMIT $3",
            id.unwrap_or(i64::MAX),
        ),
        FlowPage::After(id) => (
            "SELECT id, instance, time, record::text FROM palisade_flow_records
             WHERE ($1::text IS NULL OR instance = $1) AND id > $2 ORDER BY id ASC LIMIT $3",
            id,
        ),
    };
    let rows = client.query(sql, &[&instance, &cursor, &limit]).await?;
    Ok(rows
        .iter()
        .map(|r| StoredFlow {
            id: r.get(0),
            row: FlowRow {
                instance: r.get(1),
                time: r.get(2),
                record: r.get(3),
            },
        })
        .collect())
}

/// The id of the newest flow record (0 when there is none): where a live tail starts.
pub async fn last_flow_id(client: &Client) -> Result<i64, Error> {
    let row = client
        .query_one(
            "SELECT COALESCE(max(id), 0)::bigint FROM palisade_flow_records",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(feature = "cluster")]
pub mod cluster;
