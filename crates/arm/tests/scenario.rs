//! Acceptance: the parameterised ASE egress scenario expands to exactly the literal one.

use std::path::PathBuf;

use palisade_arm::{expand, Options, Severity};
use serde_json::Value;

fn scenario_file(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/scenarios/ase-egress-lockdown")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

#[test]
fn fmt_4_ase_egress_parameterised_template_equals_literal_network() {
    let template = scenario_file("network-params.json");
    let expected = scenario_file("network.json");
    let options = Options {
        parameters: Some(scenario_file("network.parameters.json")),
        ..Options::default()
    };
    let expansion = expand(&template, &options);
    assert!(
        expansion
            .problems
            .iter()
            .all(|p| p.severity == Severity::Note),
        "unexpected problems: {:#?}",
        expansion.problems
    );
    let got: Vec<Value> = expansion
        .resources
        .iter()
        .map(|r| r.value.clone())
        .collect();
    let want = expected["resources"]
        .as_array()
        .expect("resources array")
        .clone();
    // serde_json's Value equality compares objects as maps, so key order does not matter.
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "resource {} differs", w["name"]);
    }
    let pointers: Vec<&str> = expansion
        .resources
        .iter()
        .map(|r| r.pointer.as_str())
        .collect();
    assert_eq!(
        pointers,
        [
            "/resources/0",
            "/resources/1",
            "/resources/2",
            "/resources/3",
            "/resources/4"
        ]
    );
    assert!(expansion
        .resources
        .iter()
        .all(|r| r.copy_index.is_none() && r.linked_file.is_none()));
}
