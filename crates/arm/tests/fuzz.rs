//! Property tests: evaluation and expansion never panic, whatever the input (FMT-4, FMT-5).

use palisade_arm::{evaluate_standalone, expand, Options};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Function names the grammar calls: every family, plus scope functions and unknown names.
const FUNCTIONS: &[&str] = &[
    "concat",
    "format",
    "string",
    "int",
    "bool",
    "json",
    "if",
    "equals",
    "not",
    "and",
    "or",
    "greater",
    "less",
    "greaterOrEquals",
    "lessOrEquals",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "length",
    "toLower",
    "toUpper",
    "replace",
    "split",
    "join",
    "trim",
    "substring",
    "indexOf",
    "lastIndexOf",
    "startsWith",
    "endsWith",
    "contains",
    "empty",
    "first",
    "last",
    "take",
    "skip",
    "union",
    "intersection",
    "createArray",
    "createObject",
    "array",
    "coalesce",
    "min",
    "max",
    "range",
    "uniqueString",
    "guid",
    "resourceId",
    "subscriptionResourceId",
    "extensionResourceId",
    "tenantResourceId",
    "resourceGroup",
    "subscription",
    "deployment",
    "environment",
    "copyIndex",
    "base64",
    "base64ToString",
    "base64ToJson",
    "dataUri",
    "dataUriToString",
    "uri",
    "uriComponent",
    "uriComponentToString",
    "cidrSubnet",
    "cidrHost",
    "parseCidr",
    "padLeft",
    "dateTimeAdd",
    "utcNow",
    "items",
    "objectKeys",
    "tryGet",
    "flatten",
    "shallowMerge",
    "reference",
    "listKeys",
    "parameters",
    "variables",
    "true",
    "false",
    "null",
    "noSuchFunction",
    "ns.func",
];

fn string_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_string()),
        Just("{0}-{1:N0}-{2,5}".to_string()),
        Just("{".to_string()),
        Just("10.0.0.0/16".to_string()),
        Just("fd00::/8".to_string()),
        Just("Microsoft.Network/virtualNetworks".to_string()),
        Just("[1, {\"a\": [true]}]".to_string()),
        Just("SGVsbG8=".to_string()),
        Just("data:text/plain;charset=utf8;base64,SGk=".to_string()),
        Just("%zz%41".to_string()),
        Just("p".to_string()),
        "[ -~]{0,12}",
    ]
    .prop_map(|s| format!("'{}'", s.replace('\'', "''")))
}

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        string_literal(),
        any::<i64>().prop_map(|i| i.to_string()),
        (-3i64..40).prop_map(|i| i.to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
    ]
}

/// Expression text from a small grammar: calls, member access and indexing over atoms.
fn expression() -> impl Strategy<Value = String> {
    atom().prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            (
                prop::sample::select(FUNCTIONS),
                prop::collection::vec(inner.clone(), 0..4)
            )
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (inner.clone(), "[a-zA-Z]{1,6}").prop_map(|(e, m)| format!("{e}.{m}")),
            (inner.clone(), inner).prop_map(|(e, i)| format!("{e}[{i}]")),
        ]
    })
}

proptest! {
    // Failures are kept beside this file (`fuzz.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn fmt_4_evaluate_standalone_never_panics_on_any_text(s in any::<String>()) {
        let _ = evaluate_standalone(&s);
        let _ = evaluate_standalone(&format!("[{s}]"));
    }

    #[test]
    fn fmt_4_evaluate_standalone_never_panics_on_bracketed_noise(s in "\\[[a-z(),'\\[\\]. 0-9-]{0,40}\\]") {
        let _ = evaluate_standalone(&s);
    }

    #[test]
    fn fmt_4_evaluate_standalone_never_panics_on_grammar_expressions(e in expression()) {
        let _ = evaluate_standalone(&format!("[{e}]"));
    }

    #[test]
    fn fmt_5_expand_never_panics_on_generated_templates(
        name in expression(),
        prop in expression(),
        count in expression(),
        cond in expression(),
        var in expression(),
        literal_count in -2i64..5,
        inner in any::<bool>(),
    ) {
        let t = json!({
            "parameters": {"p": {"type": "string", "defaultValue": format!("[{var}]")}, "q": {"type": "int"}},
            "variables": {
                "v": format!("[{var}]"),
                "copy": [{"name": "vc", "count": literal_count, "input": format!("[{prop}]")}]
            },
            "resources": [
                {
                    "type": "Microsoft.Network/networkSecurityGroups",
                    "name": format!("[{name}]"),
                    "condition": format!("[{cond}]"),
                    "copy": {"name": "loop", "count": format!("[{count}]")},
                    "properties": {
                        "x": format!("[{prop}]"),
                        "copy": [{"name": "securityRules", "count": literal_count, "input": {"p": format!("[{prop}]")}}]
                    },
                    "resources": [{"type": "securityRules", "name": format!("[{name}]")}]
                },
                {
                    "type": "Microsoft.Resources/deployments",
                    "name": "d",
                    "properties": {
                        "expressionEvaluationOptions": {"scope": if inner { "inner" } else { "outer" }},
                        "parameters": {"p": {"value": format!("[{var}]")}},
                        "template": {
                            "parameters": {"p": {"type": "string"}},
                            "resources": [{"type": "T/t", "name": format!("[{name}]"), "copy": {"name": "n", "count": literal_count}}]
                        }
                    }
                },
                {
                    "type": "Microsoft.Resources/deployments",
                    "name": "l",
                    "properties": {"templateLink": {"uri": format!("[{prop}]")}}
                }
            ]
        });
        let options = Options {
            read_linked: Some(Box::new(|_| Ok(json!({"resources": [{"type": "T/t", "name": "linked"}]})))),
            ..Options::default()
        };
        let e = expand(&t, &options);
        for r in &e.resources {
            prop_assert!(r.value.is_object());
        }
        let _: Vec<Value> = e.resources.into_iter().map(|r| r.value).collect();
    }
}
