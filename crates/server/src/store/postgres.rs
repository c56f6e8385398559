//! [`Store`] on PostgreSQL (`--store postgres://...`): the tables and queries of
//! `palisade-pgstore`, so gateways subscribed to the same database see each committed version
//! (LISTEN/NOTIFY) within a second.

use super::{err, AuditEntry, Store, StoreError, Version, VersionMeta};
use palisade_pgstore::{AuditRow, Client, Commit, Config, FlowPage, StoredFlow, VersionRow};
use std::sync::Mutex;

/// One connection, reopened when the database went away. The `Store` trait is synchronous
/// (handlers call it on blocking threads): each call blocks on the server's runtime, which
/// also drives the connection.
pub struct PgStore {
    config: Config,
    runtime: tokio::runtime::Handle,
    client: Mutex<Option<Client>>,
}

impl PgStore {
    /// Connect and bring the schema up to date. Call it inside a tokio runtime, off its
    /// workers (a blocking thread or `block_in_place`).
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let config = palisade_pgstore::config("--store", url).map_err(StoreError::Failed)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(err)?;
        let store = PgStore {
            config,
            runtime,
            client: Mutex::new(None),
        };
        store.run(async |c| palisade_pgstore::migrate(c).await)?;
        Ok(store)
    }

    fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, palisade_pgstore::Error>,
    ) -> Result<T, StoreError> {
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let at = || palisade_pgstore::describe(&self.config);
        self.runtime.block_on(async {
            if slot.as_ref().is_none_or(Client::is_closed) {
                let (c, _) = palisade_pgstore::connect(&self.config)
                    .await
                    .map_err(|e| StoreError::Failed(format!("{}: {e}", at())))?;
                *slot = Some(c);
            }
            let client = slot.as_mut().expect("connected above");
            f(client)
                .await
                .map_err(|e| StoreError::Failed(format!("{}: {e}", at())))
        })
    }
}

fn to_version(r: VersionRow) -> Result<Version, StoreError> {
    let resources = if r.document.is_empty() {
        vec![]
    } else {
        serde_json::from_str(&r.document).map_err(|e| {
            StoreError::Failed(format!(
                "version {}: the stored document is not a resource list: {e}",
                r.version
            ))
        })?
    };
    Ok(Version {
        meta: meta(&r),
        resources,
    })
}

fn meta(r: &VersionRow) -> VersionMeta {
    VersionMeta {
        version: r.version as u64,
        author: r.author.clone(),
        time: r.time.clone(),
        change: r.change.clone(),
        snapshot: r.snapshot.clone(),
    }
}

fn audit_row(a: &AuditEntry) -> AuditRow {
    AuditRow {
        time: a.time.clone(),
        actor: a.actor.clone(),
        change: a.change.clone(),
        status: a.status.into(),
        version: a.version.map(|v| v as i64),
    }
}

impl Store for PgStore {
    fn shared(&self) -> bool {
        true
    }

    fn postgres(&self) -> Option<&Config> {
        Some(&self.config)
    }

    fn flows(
        &self,
        instance: Option<&str>,
        page: FlowPage,
        limit: i64,
    ) -> Option<Result<Vec<StoredFlow>, StoreError>> {
        Some(self.run(async |c| palisade_pgstore::flow_page(c, instance, page, limit).await))
    }

    fn last_flow(&self) -> Option<Result<i64, StoreError>> {
        Some(self.run(async |c| palisade_pgstore::last_flow_id(c).await))
    }

    fn latest(&self) -> Result<Option<Version>, StoreError> {
        self.run(async |c| palisade_pgstore::version(c, None).await)?
            .map(to_version)
            .transpose()
    }

    fn version(&self, n: u64) -> Result<Option<Version>, StoreError> {
        let n = i64::try_from(n).map_err(err)?;
        self.run(async |c| palisade_pgstore::version(c, Some(n)).await)?
            .map(to_version)
            .transpose()
    }

    fn versions(&self) -> Result<Vec<VersionMeta>, StoreError> {
        Ok(self
            .run(async |c| palisade_pgstore::versions(c).await)?
            .iter()
            .map(meta)
            .collect())
    }

    fn commit(&self, parent: u64, version: Version, audit: AuditEntry) -> Result<u64, StoreError> {
        let row = VersionRow {
            version: 0,
            author: version.meta.author,
            time: version.meta.time,
            change: version.meta.change,
            snapshot: version.meta.snapshot,
            document: serde_json::to_string(&version.resources).map_err(err)?,
        };
        let audit = audit_row(&audit);
        let p = i64::try_from(parent).map_err(err)?;
        match self.run(async |c| palisade_pgstore::commit(c, p, &row, &audit).await)? {
            Commit::Committed(n) => Ok(n as u64),
            Commit::Stale { head } => Err(StoreError::Stale {
                parent,
                head: head as u64,
            }),
        }
    }

    fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let row = audit_row(&entry);
        self.run(async |c| palisade_pgstore::audit(c, &row).await)
    }

    fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self
            .run(async |c| palisade_pgstore::audit_log(c).await)?
            .into_iter()
            .map(|a| AuditEntry {
                time: a.time,
                actor: a.actor,
                change: a.change,
                status: u16::try_from(a.status).unwrap_or(0),
                version: a.version.map(|v| v as u64),
            })
            .collect())
    }
}
