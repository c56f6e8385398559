//! The schema and queries against a real PostgreSQL cluster started for the test.

use palisade_pgstore::cluster::Cluster;
use palisade_pgstore::{AuditRow, Commit, FlowRow, VersionRow};
use std::time::Duration;

fn cluster(name: &str) -> Option<Cluster> {
    match Cluster::start(name) {
        Ok(Some(c)) => Some(c),
        Ok(None) => {
            eprintln!("SKIPPED: PostgreSQL binaries not installed (apt-get install postgresql)");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn row(doc: &str) -> VersionRow {
    VersionRow {
        version: 0,
        author: "ci".into(),
        time: "2026-01-01T00:00:00Z".into(),
        change: "PUT x".into(),
        snapshot: "s".into(),
        document: doc.into(),
    }
}

fn audit() -> AuditRow {
    AuditRow {
        time: "2026-01-01T00:00:00Z".into(),
        actor: "ci".into(),
        change: "PUT x".into(),
        status: 200,
        version: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_numbered_notified_and_kept_verbatim() {
    let Some(pg) = cluster("schema") else { return };
    let config = palisade_pgstore::config("--store", &pg.url()).unwrap();
    let (mut writer, _) = palisade_pgstore::connect(&config).await.unwrap();
    // Idempotent: a second run (another starter) changes nothing.
    palisade_pgstore::migrate(&mut writer).await.unwrap();
    palisade_pgstore::migrate(&mut writer).await.unwrap();
    let (listener, mut notes) = palisade_pgstore::connect(&config).await.unwrap();
    palisade_pgstore::listen(&listener).await.unwrap();

    assert_eq!(
        palisade_pgstore::version(&writer, None).await.unwrap(),
        None
    );
    // Key order and spacing survive (ETags hash the text).
    let doc = r#"[{"z": 1, "a": {"y": [1, 2], "b": null}}]"#;
    let n1 = palisade_pgstore::commit(&mut writer, 0, &row(doc), &audit())
        .await
        .unwrap();
    let n2 = palisade_pgstore::commit(&mut writer, 1, &row("[]"), &audit())
        .await
        .unwrap();
    assert_eq!((n1, n2), (Commit::Committed(1), Commit::Committed(2)));
    let got = |s: Option<String>| s.expect("a notification");
    let wait = Duration::from_secs(5);
    assert_eq!(
        got(tokio::time::timeout(wait, notes.recv()).await.unwrap()),
        "1"
    );
    assert_eq!(
        got(tokio::time::timeout(wait, notes.recv()).await.unwrap()),
        "2"
    );

    let v1 = palisade_pgstore::version(&writer, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.document, doc);
    assert_eq!(v1.version, 1);
    let latest = palisade_pgstore::version(&writer, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, 2);
    let all = palisade_pgstore::versions(&writer).await.unwrap();
    assert_eq!(all.iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1]);
    let log = palisade_pgstore::audit_log(&writer).await.unwrap();
    assert_eq!(
        log.iter().map(|a| a.version).collect::<Vec<_>>(),
        [Some(2), Some(1)]
    );

    // A document that is not JSON is refused by the database and leaves no version, no audit
    // line and no notification: one transaction.
    assert!(
        palisade_pgstore::commit(&mut writer, 2, &row("{not json"), &audit())
            .await
            .is_err()
    );
    assert_eq!(palisade_pgstore::versions(&writer).await.unwrap().len(), 2);
    assert_eq!(palisade_pgstore::audit_log(&writer).await.unwrap().len(), 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notes.recv())
            .await
            .is_err()
    );

    // Compare-and-set: a change made on version 1 (a second server that had not seen 2 yet)
    // is refused, with the head to catch up to; nothing is written or notified.
    let (mut other, _) = palisade_pgstore::connect(&config).await.unwrap();
    for parent in [1, 0, 3] {
        assert_eq!(
            palisade_pgstore::commit(&mut other, parent, &row("[1]"), &audit())
                .await
                .unwrap(),
            Commit::Stale { head: 2 },
            "parent {parent}"
        );
    }
    // Racing writers on the same parent: exactly one wins.
    let (mut third, _) = palisade_pgstore::connect(&config).await.unwrap();
    let (r2, r3, line) = (row("[2]"), row("[3]"), audit());
    let (a, b) = tokio::join!(
        palisade_pgstore::commit(&mut other, 2, &r2, &line),
        palisade_pgstore::commit(&mut third, 2, &r3, &line),
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|c| matches!(c, Commit::Stale { .. }));
    assert_eq!(outcomes, [Commit::Committed(3), Commit::Stale { head: 3 }]);

    let flows: Vec<FlowRow> = (0..3)
        .map(|i| FlowRow {
            instance: if i == 0 { "a" } else { "b" }.into(),
            time: format!("t{i}"),
            record: format!(r#"{{"n": {i}}}"#),
        })
        .collect();
    assert_eq!(
        palisade_pgstore::insert_flows(&writer, &flows)
            .await
            .unwrap(),
        3
    );
    let b = palisade_pgstore::flows(&writer, Some("b"), 10)
        .await
        .unwrap();
    assert_eq!(
        b.iter().map(|f| f.time.as_str()).collect::<Vec<_>>(),
        ["t2", "t1"]
    );
    assert_eq!(
        palisade_pgstore::flows(&writer, None, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // Cursors: pages newest first below an id, a tail oldest first above one, per instance.
    use palisade_pgstore::{flow_page, last_flow_id, FlowPage};
    let times = |v: Vec<palisade_pgstore::StoredFlow>| {
        v.into_iter().map(|f| f.row.time).collect::<Vec<_>>()
    };
    let newest = flow_page(&writer, None, FlowPage::Before(None), 2)
        .await
        .unwrap();
    assert_eq!(newest[0].id, last_flow_id(&writer).await.unwrap());
    let cursor = newest[1].id;
    assert_eq!(times(newest), ["t2", "t1"]);
    let older = flow_page(&writer, None, FlowPage::Before(Some(cursor)), 2)
        .await
        .unwrap();
    assert_eq!(times(older), ["t0"]);
    let after = flow_page(&writer, None, FlowPage::After(cursor - 1), 10)
        .await
        .unwrap();
    assert_eq!(times(after), ["t1", "t2"]);
    let of_a = flow_page(&writer, Some("a"), FlowPage::After(0), 10)
        .await
        .unwrap();
    assert_eq!(times(of_a), ["t0"]);
}

#[test]
fn a_bad_url_names_the_flag() {
    let e = palisade_pgstore::config("--store", "postgres://[::1").unwrap_err();
    assert!(e.starts_with("--store: "), "{e}");
}
