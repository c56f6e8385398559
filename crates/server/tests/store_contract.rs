//! The `Store` contract, checked on both implementations: the embedded redb file and
//! PostgreSQL (a real cluster started for the test). The handlers rely on exactly this.

use palisade_pgstore::cluster::Cluster;
use palisade_server::store::postgres::PgStore;
use palisade_server::store::{AuditEntry, RedbStore, Store, StoreError, Version, VersionMeta};
use serde_json::json;

fn version(change: &str, resources: Vec<serde_json::Value>) -> Version {
    Version {
        meta: VersionMeta {
            version: 0,
            author: "ci".into(),
            time: "2026-12-04T23:00:00Z".into(),
            change: change.into(),
            snapshot: format!("snap-{change}"),
        },
        resources,
    }
}

fn audit(change: &str, status: u16) -> AuditEntry {
    AuditEntry {
        time: "2026-12-04T23:00:00Z".into(),
        actor: "ci".into(),
        change: change.into(),
        status,
        version: None,
    }
}

fn contract(store: &dyn Store) {
    assert!(store.latest().unwrap().is_none());
    assert!(store.versions().unwrap().is_empty());
    // Key order is part of the resource (ETags hash it): kept as written.
    let r1 = json!({"type": "Microsoft.Network/ipGroups", "name": "g", "zeta": 1, "alpha": [2, {"b": 1, "a": 2}]});
    assert_eq!(
        store
            .commit(0, version("one", vec![r1.clone()]), audit("one", 201))
            .unwrap(),
        1
    );
    store.audit(audit("refused", 422)).unwrap();
    assert_eq!(
        store
            .commit(1, version("two", vec![]), audit("two", 200))
            .unwrap(),
        2
    );

    // Compare-and-set: a change made on an older version (or a newer one) stores nothing and
    // says what the head is, so the server can follow it.
    for parent in [0, 1, 3] {
        match store.commit(parent, version("stale", vec![]), audit("stale", 200)) {
            Err(StoreError::Stale { parent: p, head }) => assert_eq!((p, head), (parent, 2)),
            other => panic!("parent {parent}: {other:?}"),
        }
    }
    let latest = store.latest().unwrap().unwrap();
    assert_eq!(latest.meta.version, 2);
    assert_eq!(latest.meta.change, "two");
    let one = store.version(1).unwrap().unwrap();
    assert_eq!(
        serde_json::to_string(&one.resources).unwrap(),
        serde_json::to_string(&[r1]).unwrap()
    );
    assert_eq!(one.meta.snapshot, "snap-one");
    assert!(store.version(3).unwrap().is_none());
    let list: Vec<(u64, String)> = store
        .versions()
        .unwrap()
        .into_iter()
        .map(|m| (m.version, m.change))
        .collect();
    assert_eq!(list, [(2, "two".to_string()), (1, "one".to_string())]);
    let log: Vec<(String, u16, Option<u64>)> = store
        .audit_log()
        .unwrap()
        .into_iter()
        .map(|a| (a.change, a.status, a.version))
        .collect();
    assert_eq!(
        log,
        [
            ("two".to_string(), 200, Some(2)),
            ("refused".to_string(), 422, None),
            ("one".to_string(), 201, Some(1)),
        ]
    );
}

#[test]
fn redb_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&RedbStore::open(&dir.path().join("policy.redb")).unwrap());
}

#[test]
fn postgres_keeps_the_contract_and_survives_a_restart_of_the_database() {
    let pg = match Cluster::start("store-contract") {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "\n*** SKIPPED: no PostgreSQL binaries (apt-get install -y postgresql) ***\n"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _entered = rt.enter();
    let store = PgStore::open(&pg.url()).unwrap();
    contract(&store);
    // A second opener migrates nothing twice and sees the same versions.
    assert_eq!(
        PgStore::open(&pg.url()).unwrap().versions().unwrap().len(),
        2
    );

    // The database goes away: calls fail with a message naming it, nothing panics; once it is
    // back the store reconnects by itself.
    pg.down().unwrap();
    let e = store.latest().unwrap_err().to_string();
    assert!(e.contains(&format!("127.0.0.1:{}", pg.port)), "{e}");
    assert!(store
        .commit(2, version("lost", vec![]), audit("lost", 200))
        .is_err());
    pg.up().unwrap();
    assert_eq!(store.latest().unwrap().unwrap().meta.version, 2);
    assert_eq!(
        store
            .commit(2, version("three", vec![]), audit("three", 200))
            .unwrap(),
        3
    );

    let e = PgStore::open("postgres://nobody@127.0.0.1:1/x")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("127.0.0.1:1"), "{e}");
}
