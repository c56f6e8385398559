//! Where applied policy versions and the audit log live. The server talks to a [`Store`] only,
//! so a shared database (several gateways on one policy) can slot in beside the embedded
//! [`RedbStore`] without touching the handlers: [`postgres::PgStore`].

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use utoipa::ToSchema;

/// One applied version of the policy: every resource, who applied it, when, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Version {
    #[serde(flatten)]
    pub meta: VersionMeta,
    /// The ARM resources of the network, child resources inline in their parents.
    #[schema(value_type = Vec<Object>)]
    pub resources: Vec<Value>,
}

/// A version without its resources (the version list).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionMeta {
    pub version: u64,
    /// The name of the token that applied it (`seed` for the network the server started from).
    pub author: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// What the change was: `PUT networkSecurityGroups/web-nsg`, `rollback to 3`, ...
    pub change: String,
    /// Id of the compiled snapshot (DIAG-1.2 `snapshot`).
    pub snapshot: String,
}

/// One line of the audit log: every change attempt by an admin, applied or refused.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub time: String,
    /// The token's name.
    pub actor: String,
    pub change: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// The version it created, when applied.
    pub version: Option<u64>,
}

pub mod postgres;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Failed(String),
    /// A commit of a change made on `parent` while the store's newest is `head`: another
    /// server committed first, nothing was stored.
    #[error("the change was made on version {parent}, but version {head} was committed meanwhile (by another server)")]
    Stale { parent: u64, head: u64 },
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

/// Policy versions and the audit log. `commit` is atomic: after a crash the store holds the
/// version or not, never part of it.
pub trait Store: Send + Sync {
    fn latest(&self) -> Result<Option<Version>, StoreError>;
    fn version(&self, n: u64) -> Result<Option<Version>, StoreError>;
    /// Newest first.
    fn versions(&self) -> Result<Vec<VersionMeta>, StoreError>;
    /// Store a new version, numbered `parent + 1`, and its audit entry together — only if
    /// `parent` is still the newest version (0: none), else [`StoreError::Stale`] and nothing
    /// stored (compare-and-set across servers); returns the version number.
    fn commit(&self, parent: u64, version: Version, audit: AuditEntry) -> Result<u64, StoreError>;
    fn audit(&self, entry: AuditEntry) -> Result<(), StoreError>;
    /// Newest first.
    fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError>;
    /// Whether other servers may commit to it too (then a server follows their versions).
    fn shared(&self) -> bool {
        false
    }
    /// A PostgreSQL store's connection settings: where notifications are.
    fn postgres(&self) -> Option<&palisade_pgstore::Config> {
        None
    }
    /// The flow records gateways wrote to this store (`--flow-log-store`), from a cursor;
    /// `None` when the store holds none (the embedded one).
    fn flows(
        &self,
        _instance: Option<&str>,
        _page: palisade_pgstore::FlowPage,
        _limit: i64,
    ) -> Option<Result<Vec<palisade_pgstore::StoredFlow>, StoreError>> {
        None
    }
    /// The newest flow record's id: where a live tail starts.
    fn last_flow(&self) -> Option<Result<i64, StoreError>> {
        None
    }
}

const VERSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("versions");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// The embedded default: one redb file (ACID, crash-safe, no server to run).
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(VERSIONS).map_err(err)?;
        tx.open_table(AUDIT).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbStore { db })
    }

    fn read_version(&self, n: Option<u64>) -> Result<Option<Version>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(VERSIONS).map_err(err)?;
        let row = match n {
            Some(n) => t.get(n).map_err(err)?,
            None => t.last().map_err(err)?.map(|(_, v)| v),
        };
        row.map(|v| serde_json::from_slice(v.value()).map_err(err))
            .transpose()
    }
}

fn append(t: &mut redb::Table<u64, &[u8]>, bytes: &[u8]) -> Result<u64, StoreError> {
    let next = t.last().map_err(err)?.map_or(1, |(k, _)| k.value() + 1);
    t.insert(next, bytes).map_err(err)?;
    Ok(next)
}

impl Store for RedbStore {
    fn latest(&self) -> Result<Option<Version>, StoreError> {
        self.read_version(None)
    }

    fn version(&self, n: u64) -> Result<Option<Version>, StoreError> {
        self.read_version(Some(n))
    }

    fn versions(&self) -> Result<Vec<VersionMeta>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(VERSIONS).map_err(err)?;
        let mut out = vec![];
        for row in t.iter().map_err(err)?.rev() {
            let (_, v) = row.map_err(err)?;
            let v: Version = serde_json::from_slice(v.value()).map_err(err)?;
            out.push(v.meta);
        }
        Ok(out)
    }

    fn commit(
        &self,
        parent: u64,
        mut version: Version,
        mut audit: AuditEntry,
    ) -> Result<u64, StoreError> {
        // One write transaction at a time: the head read here is the head at commit.
        let tx = self.db.begin_write().map_err(err)?;
        let n = {
            let mut t = tx.open_table(VERSIONS).map_err(err)?;
            let head = t.last().map_err(err)?.map_or(0, |(k, _)| k.value());
            if head != parent {
                return Err(StoreError::Stale { parent, head });
            }
            let n = head + 1;
            version.meta.version = n;
            let bytes = serde_json::to_vec(&version).map_err(err)?;
            t.insert(n, bytes.as_slice()).map_err(err)?;
            n
        };
        audit.version = Some(n);
        let bytes = serde_json::to_vec(&audit).map_err(err)?;
        append(&mut tx.open_table(AUDIT).map_err(err)?, &bytes)?;
        tx.commit().map_err(err)?;
        Ok(n)
    }

    fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let bytes = serde_json::to_vec(&entry).map_err(err)?;
        append(&mut tx.open_table(AUDIT).map_err(err)?, &bytes)?;
        tx.commit().map_err(err)
    }

    fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(AUDIT).map_err(err)?;
        let mut out = vec![];
        for row in t.iter().map_err(err)?.rev() {
            let (_, v) = row.map_err(err)?;
            out.push(serde_json::from_slice(v.value()).map_err(err)?);
        }
        Ok(out)
    }
}
