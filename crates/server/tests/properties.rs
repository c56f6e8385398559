//! Property tests of the server's parsers and resource edits: arbitrary input never panics,
//! and what is written is what is read back.

use palisade_server::auth::{sha256_hex, Role, Tokens};
use palisade_server::policy::{self, Path};
use proptest::prelude::*;
use serde_json::{json, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z/ -]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("name".to_string()),
                        Just("type".to_string()),
                        Just("properties".to_string()),
                        Just("securityRules".to_string()),
                        "[a-z]{1,5}"
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn paths() -> impl Strategy<Value = Path> {
    (
        0..policy::KINDS.len(),
        "[a-zA-Z][a-zA-Z0-9-]{0,6}",
        prop::option::of("[a-zA-Z][a-zA-Z0-9-]{0,6}"),
    )
        .prop_map(|(k, name, child)| {
            let kind = &policy::KINDS[k];
            Path {
                kind,
                name,
                child: child.filter(|_| kind.child.is_some()),
            }
        })
}

proptest! {
    // Failures are kept beside this file (`properties.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn token_files_never_panic(text in "\\PC{0,200}") {
        let _ = Tokens::parse("tokens", &text);
    }

    #[test]
    fn written_tokens_verify_to_their_name_and_role(
        entries in prop::collection::vec(("[a-z]{1,8}", any::<bool>(), "[ -~]{1,40}"), 1..6)
    ) {
        let text: String = entries
            .iter()
            .map(|(n, admin, t)| format!("{n} {} {}\n", if *admin { "admin" } else { "reader" }, sha256_hex(t)))
            .collect();
        let tokens = Tokens::parse("tokens", &text).unwrap();
        for (n, admin, t) in &entries {
            // With a repeated token the last entry wins; find that one.
            let (n, admin) = entries.iter().rev().find(|e| &e.2 == t).map_or((n, admin), |e| (&e.0, &e.1));
            let c = tokens.verify(t).unwrap();
            prop_assert_eq!(&c.name, n);
            prop_assert_eq!(c.role, if *admin { Role::Admin } else { Role::Reader });
        }
    }

    /// Any body put anywhere in any resource list: no panic; when accepted, the resource is
    /// found again under its URL with the URL's name.
    #[test]
    fn put_and_delete_never_panic(
        resources in prop::collection::vec(json_value(), 0..4),
        path in paths(),
        body in json_value(),
    ) {
        if let Ok(out) = policy::put(&resources, &path, body) {
            let slot = policy::locate(&out, &path).expect("put resource is found");
            let got = policy::get(&out, slot, &path);
            let name = got["name"].as_str().unwrap_or_default();
            let last = path.child.as_deref().unwrap_or(&path.name);
            prop_assert!(name.eq_ignore_ascii_case(last) || name.to_ascii_lowercase().ends_with(&format!("/{}", last.to_ascii_lowercase())), "{} at {}", name, path);
            let _ = policy::pointer(&out, slot, &path);
            let gone = policy::delete(&out, &path).expect("delete what was put");
            prop_assert!(policy::locate(&gone, &path).is_err() || gone.len() == out.len());
        }
        let _ = policy::delete(&resources, &path);
    }

    /// RFC 7396: patching with a document's own content changes nothing; null removes.
    #[test]
    fn merge_patch_laws(target in json_value(), key in "[a-z]{1,5}") {
        let mut t = target.clone();
        policy::merge_patch(&mut t, &target);
        if target.is_object() && !target.to_string().contains("null") {
            prop_assert_eq!(&t, &target);
        }
        let mut t = json!({key.clone(): target});
        policy::merge_patch(&mut t, &json!({key.clone(): null}));
        prop_assert_eq!(t, json!({}));
    }
}
