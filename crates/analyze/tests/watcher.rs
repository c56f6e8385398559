//! `check-azure` replays Network Watcher results (DIAG-3, issue 17): IP flow verify and next hop,
//! in the REST API example shape (`parameters.parameters` the question, `responses.200.body`
//! Azure's answer), asked again of the layered-nsg scenario. Answers that match give no
//! disagreement; an edited model gives exactly the disagreements of the edit, both sides shown.

use palisade_analyze::azure_check::{parse_watcher, replay, Disagreement, Kind, Report};
use palisade_policy::Snapshot;
use serde_json::{json, Value};
use std::path::Path;

fn data(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/azure")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn network() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/scenarios/layered-nsg/network.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn snapshot(net: &Value, tag: &str) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{tag}.json"));
    std::fs::write(&file, net.to_string()).unwrap();
    let loaded = palisade_load::load(&palisade_load::Source::files(vec![file]));
    loaded.snapshot.expect("the network loads")
}

fn run(net: &Value, tag: &str, results: &str) -> Report {
    let results = parse_watcher("watcher.json", results).expect("parses");
    let mut report = Report::default();
    replay(&snapshot(net, tag), &results, &mut report);
    report
}

/// The security rule `rule` of NSG `nsg` in the layered-nsg template.
fn rule_mut<'a>(net: &'a mut Value, nsg: &str, rule: &str) -> &'a mut Value {
    net["resources"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == nsg)
        .unwrap()["properties"]["securityRules"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == rule)
        .unwrap()
}

#[test]
fn diag_3_matching_answers_give_no_disagreement() {
    // spec NSG-6: inbound the subnet NSG then the NIC's; outbound the NIC's first (the fourth
    // question is decided by the NIC's Deny-All-Outbound, not the subnet's Deny-SMTP-Internet).
    let report = run(&network(), "same", &data("web-vm1-network-watcher.json"));
    assert_eq!(report.questions_replayed, 6);
    assert_eq!(report.disagreements, vec![], "{report:#?}");
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn diag_3_an_edited_model_gives_exactly_its_disagreements() {
    let mut net = network();
    // HTTPS no longer allowed at the NIC: the first question's access differs.
    rule_mut(&mut net, "web-vm1-nic-nsg", "Allow-HTTPS")["properties"]["destinationPortRange"] =
        json!("8443");
    // The outbound deny renamed: same access, another rule name.
    rule_mut(&mut net, "web-vm1-nic-nsg", "Deny-All-Outbound")["name"] = json!("Deny-Egress");
    let report = run(&net, "edited", &data("web-vm1-network-watcher.json"));
    let got: Vec<(Kind, &str, &str, &str)> = report
        .disagreements
        .iter()
        .map(|d: &Disagreement| {
            (
                d.kind,
                d.subject.as_str(),
                d.azure.as_deref().unwrap(),
                d.model.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Kind::AccessDiffers,
                "ipFlowVerify Inbound Tcp 10.2.1.4:443 ↔ 203.0.113.20:51000",
                "Allow by securityRules/Allow-HTTPS",
                "Deny by Deny-All-Other",
            ),
            (
                Kind::RuleNameDiffers,
                "ipFlowVerify Outbound Tcp 10.2.1.4:50000 ↔ 198.51.100.7:25",
                "Deny by securityRules/Deny-All-Outbound",
                "Deny by Deny-Egress",
            ),
        ]
    );
}

#[test]
fn diag_3_next_hop_differences_show_both_sides() {
    // The REST API example's own answer shape: an Internet hop with an address, decided by a
    // user route table; and an appliance the model does not route to.
    let results = json!([
        {"parameters": {"parameters": {"targetResourceId": "vm", "sourceIPAddress": "10.2.1.4",
            "destinationIPAddress": "192.0.2.80"}},
         "responses": {"200": {"body": {"nextHopType": "Internet", "nextHopIpAddress": "12.0.0.1",
            "routeTableId": "/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Network/routeTables/rt1"}}}},
        {"parameters": {"parameters": {"targetResourceId": "vm", "sourceIPAddress": "10.2.1.4",
            "destinationIPAddress": "10.2.3.4"}},
         "responses": {"200": {"body": {"nextHopType": "VirtualAppliance",
            "nextHopIpAddress": "10.2.0.4", "routeTableId": "System Route"}}}}
    ]);
    let report = run(&network(), "nexthop", &results.to_string());
    let got: Vec<(Kind, &str, &str)> = report
        .disagreements
        .iter()
        .map(|d| {
            (
                d.kind,
                d.azure.as_deref().unwrap(),
                d.model.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Kind::RouteTableDiffers, "rt1", "System Route"),
            (
                Kind::NextHopDiffers,
                "VirtualAppliance 10.2.0.4",
                "VnetLocal"
            ),
        ]
    );
}

#[test]
fn diag_3_a_malformed_result_is_a_located_error() {
    let text = "[\n {\"parameters\": {\"parameters\": {\"direction\": \"Inbound\", \"protocol\": \"TCP\",\n  \"localIPAddress\": \"10.2.1.999\", \"localPort\": \"443\", \"remoteIPAddress\": \"203.0.113.20\", \"remotePort\": \"x\"}},\n  \"responses\": {\"200\": {\"body\": {\"access\": \"Allow\"}}}}\n]";
    let problems = parse_watcher("w.json", text).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    for p in &problems {
        assert_eq!(p.file, "w.json");
        assert_eq!(p.line, Some(3), "{p}");
    }
    assert!(
        problems[0].message.contains("an IP address"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].message.contains("a port number"),
        "{}",
        problems[1]
    );
    let no_answer = r#"{"parameters": {"parameters": {"sourceIPAddress": "10.2.1.4", "destinationIPAddress": "10.2.3.4"}}}"#;
    let problems = parse_watcher("w.json", no_answer).unwrap_err();
    assert!(
        problems[0].message.contains("responses.200.body"),
        "{problems:#?}"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[0-9.:a-fA-F]{0,20}".prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(json!([])),
            Just(json!({})),
        ]
    }

    proptest! {
        // Failures are kept beside this file (`watcher.proptest-regressions`) and replayed first.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
            ..ProptestConfig::default()
        })]
        /// Any values in the question and answer fields: never a panic; a result or located
        /// problems, one file named.
        #[test]
        fn parse_watcher_never_panics(
            fields in proptest::collection::vec(scalar(), 9),
            ip_flow in any::<bool>(),
        ) {
            let question = if ip_flow {
                json!({"direction": fields[0], "protocol": fields[1], "localIPAddress": fields[2],
                    "localPort": fields[3], "remoteIPAddress": fields[4], "remotePort": fields[5]})
            } else {
                json!({"sourceIPAddress": fields[2], "destinationIPAddress": fields[4]})
            };
            let doc = json!({"parameters": {"parameters": question},
                "responses": {"200": {"body": {"access": fields[6], "ruleName": fields[7],
                    "nextHopType": fields[6], "nextHopIpAddress": fields[8]}}}});
            let text = serde_json::to_string_pretty(&doc).unwrap();
            match parse_watcher("w.json", &text) {
                Ok(results) => prop_assert_eq!(results.len(), 1),
                Err(problems) => {
                    prop_assert!(!problems.is_empty());
                    for p in &problems {
                        prop_assert_eq!(&p.file, "w.json");
                        prop_assert!(p.line.is_some(), "{}", p);
                    }
                }
            }
        }
    }
}
