//! Hostile templates: deep nesting, long chains, huge loops. Expansion must finish, report a
//! problem and never overflow the stack or run away with memory. Each case runs on a thread
//! with a 2 MiB stack (the default for spawned threads) in debug builds.

use palisade_arm::{expand, Options, Severity};
use serde_json::{json, Map, Value};

fn on_small_stack<F: FnOnce() -> T + Send + 'static, T: Send + 'static>(f: F) -> T {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic or stack overflow")
}

fn has_error(problems: &[palisade_arm::Problem], needle: &str) -> bool {
    problems
        .iter()
        .any(|p| p.severity == Severity::Error && p.message.contains(needle))
}

#[test]
fn fmt_4_long_variable_chain_is_cut_off() {
    let n = 3000;
    let mut vars = Map::new();
    for i in 0..n {
        vars.insert(format!("v{i}"), json!(format!("[variables('v{}')]", i + 1)));
    }
    vars.insert(format!("v{n}"), json!("end"));
    let t = json!({"variables": vars, "resources": [{"type": "A/b", "name": "[variables('v0')]"}]});
    let e = on_small_stack(move || expand(&t, &Options::default()));
    assert_eq!(e.resources.len(), 1);
    assert!(
        has_error(&e.problems, "nested too deeply"),
        "{:#?}",
        e.problems
    );
}

#[test]
fn fmt_4_deeply_nested_expressions_in_a_variable_chain() {
    let depth = 60;
    let mut vars = Map::new();
    for i in 0..50 {
        let inner = format!("variables('v{}')", i + 1);
        let expr = format!("[{}{inner}{}]", "concat(".repeat(depth), ")".repeat(depth));
        vars.insert(format!("v{i}"), json!(expr));
    }
    vars.insert("v50".into(), json!("x"));
    let t = json!({"variables": vars, "resources": [{"type": "A/b", "name": "[variables('v0')]"}]});
    let e = on_small_stack(move || expand(&t, &Options::default()));
    assert_eq!(e.resources.len(), 1);
    assert!(has_error(&e.problems, "nested too deeply"));
}

#[test]
fn fmt_4_deep_json_value_is_cut_off() {
    // Built by hand: json!() would serialise the growing value recursively at every step.
    let mut v = json!("leaf");
    for _ in 0..1000 {
        let mut m = Map::new();
        m.insert("a".into(), Value::Array(vec![v]));
        v = Value::Object(m);
    }
    let mut resource = Map::new();
    resource.insert("type".into(), json!("A/b"));
    resource.insert("name".into(), json!("n"));
    resource.insert("properties".into(), v);
    let mut t = Map::new();
    t.insert(
        "resources".into(),
        Value::Array(vec![Value::Object(resource)]),
    );
    let t = Value::Object(t);
    let e = on_small_stack(move || expand(&t, &Options::default()));
    assert_eq!(e.resources.len(), 1);
    assert!(has_error(&e.problems, "nested too deeply"));
}

#[test]
fn fmt_5_deeply_nested_deployments_are_cut_off() {
    let mut t = json!({"resources": [{"type": "A/b", "name": "leaf"}]});
    for i in 0..200 {
        let scope = if i % 2 == 0 { "inner" } else { "outer" };
        t = json!({"resources": [{
            "type": "Microsoft.Resources/deployments", "name": format!("d{i}"),
            "properties": {"expressionEvaluationOptions": {"scope": scope}, "template": t}
        }]});
    }
    let e = on_small_stack(move || expand(&t, &Options::default()));
    assert!(e.resources.is_empty());
    assert!(has_error(&e.problems, "nested more than"));
}

#[test]
fn fmt_6_deep_child_resource_chain_is_cut_off() {
    let mut child = Map::new();
    child.insert("type".into(), json!("leaf"));
    child.insert("name".into(), json!("l"));
    let mut v = Value::Object(child);
    for i in 0..1000 {
        let mut m = Map::new();
        m.insert("type".into(), json!(format!("t{i}")));
        m.insert("name".into(), json!(format!("n{i}")));
        m.insert("resources".into(), Value::Array(vec![v]));
        v = Value::Object(m);
    }
    let mut t = Map::new();
    t.insert("resources".into(), Value::Array(vec![v]));
    let t = Value::Object(t);
    let e = on_small_stack(move || expand(&t, &Options::default()));
    assert!(e.resources.len() > 100 && e.resources.len() < 1000);
    assert!(has_error(&e.problems, "nested too deeply"));
}

#[test]
fn fmt_5_copy_counts_are_capped() {
    let t = json!({"resources": [{
        "type": "A/b", "name": "[concat('n', copyIndex())]",
        "copy": {"name": "l", "count": 100000},
        "properties": {"copy": [{"name": "items", "count": 800, "input": "[copyIndex('items')]"}]}
    }]});
    let e = on_small_stack(move || expand(&t, &Options::default()));
    assert!(has_error(&e.problems, "above ARM's limit of 800"));
    assert!(has_error(
        &e.problems,
        "more than 10000 copy-loop iterations"
    ));
    assert!(e.resources.len() < 20);
}

#[test]
fn fmt_4_exponential_values_are_refused() {
    let mut vars = Map::new();
    vars.insert(
        "v0".into(),
        json!("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
    );
    for i in 1..40 {
        vars.insert(
            format!("v{i}"),
            json!(format!(
                "[concat(variables('v{0}'), variables('v{0}'))]",
                i - 1
            )),
        );
        vars.insert(
            format!("a{i}"),
            json!(format!(
                "[createArray(variables('a{0}'), variables('a{0}'))]",
                i - 1
            )),
        );
    }
    vars.insert("a0".into(), json!([1, 2, 3, 4]));
    let t = json!({"variables": vars, "resources": [
        {"type": "A/b", "name": "s", "properties": {"s": "[variables('v39')]", "a": "[variables('a39')]"}}
    ]});
    let e = on_small_stack(move || expand(&t, &Options::default()));
    assert_eq!(e.resources.len(), 1);
    assert!(has_error(&e.problems, "larger than the expansion limit"));
    let props = &e.resources[0].value["properties"];
    assert!(palisade_arm::is_unresolved(&props["s"]));
    assert!(palisade_arm::is_unresolved(&props["a"]));
}

#[test]
fn fmt_5_linked_template_that_links_itself_stops() {
    let t = json!({"resources": [
        {"type": "A/b", "name": "r"},
        {"type": "Microsoft.Resources/deployments", "name": "again",
         "properties": {"templateLink": {"relativePath": "self.json"}}}
    ]});
    let e = on_small_stack(move || {
        let linked = t.clone();
        let options = Options {
            read_linked: Some(Box::new(move |_| Ok(linked.clone()))),
            ..Options::default()
        };
        expand(&t, &options)
    });
    assert_eq!(e.resources.len(), 2);
    assert_eq!(e.resources[1].linked_file.as_deref(), Some("self.json"));
    assert!(has_error(&e.problems, "links back to itself"));
}

#[test]
fn fmt_4_non_object_inputs_do_not_fail() {
    for t in [
        json!(null),
        json!([1, 2]),
        json!("x"),
        json!({"resources": 5}),
        json!({"resources": [1, "x", null, {"copy": 3}, {"copy": {"count": "x"}}]}),
        json!({"parameters": [], "variables": 3, "functions": {}, "resources": {}}),
    ] {
        let e = expand(&t, &Options::default());
        assert!(e.resources.is_empty());
    }
    let e = expand(
        &json!({"resources": []}),
        &Options {
            parameters: Some(json!(3)),
            ..Options::default()
        },
    );
    assert!(has_error(
        &e.problems,
        "parameter values must be a JSON object"
    ));
    let _: Value = json!(null);
}
