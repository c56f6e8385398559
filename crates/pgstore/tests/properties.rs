//! Properties: connection strings never panic the parser and errors name the flag; any JSON
//! document the server writes comes back byte for byte (ETags hash it), through a real cluster.

use palisade_pgstore::cluster::Cluster;
use palisade_pgstore::{AuditRow, VersionRow};
use proptest::prelude::*;
use serde_json::Value;

proptest! {
    // Failures are kept beside this file (`properties.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn config_never_panics_and_names_the_flag(url in ".{0,80}") {
        if let Err(e) = palisade_pgstore::config("--policy-store", &url) {
            prop_assert!(e.starts_with("--policy-store: "), "{}", e);
        }
    }
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[test]
fn documents_come_back_byte_for_byte() {
    let pg = match Cluster::start("properties") {
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
    let config = palisade_pgstore::config("test", &pg.url()).unwrap();
    let client = std::sync::Mutex::new(rt.block_on(async {
        let (mut c, _) = palisade_pgstore::connect(&config).await.unwrap();
        palisade_pgstore::migrate(&mut c).await.unwrap();
        c
    }));
    // A runner built by hand names its source file itself, as `proptest!` does.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        source_file: Some(file!()),
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(json(), 0..4), |resources| {
            let document = serde_json::to_string(&resources).unwrap();
            let row = VersionRow {
                version: 0,
                author: "p".into(),
                time: "t".into(),
                change: "c".into(),
                snapshot: "s".into(),
                document: document.clone(),
            };
            let audit = AuditRow {
                time: "t".into(),
                actor: "p".into(),
                change: "c".into(),
                status: 200,
                version: None,
            };
            let mut client = client.lock().unwrap();
            let back = rt.block_on(async {
                let head = palisade_pgstore::version(&client, None)
                    .await
                    .unwrap()
                    .map_or(0, |v| v.version);
                let palisade_pgstore::Commit::Committed(n) =
                    palisade_pgstore::commit(&mut client, head, &row, &audit)
                        .await
                        .unwrap()
                else {
                    panic!("one writer: its parent is the head");
                };
                palisade_pgstore::version(&client, Some(n))
                    .await
                    .unwrap()
                    .unwrap()
            });
            prop_assert_eq!(back.document, document);
            Ok(())
        })
        .unwrap();
}
