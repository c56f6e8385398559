//! `check-azure` on exports shaped like Azure's (a REST API example body for the routes, the CLI's
//! `list-effective-nsg` output for the rules) for `web-vm1-nic` of the layered-nsg scenario: the
//! matching model gives no disagreement; each edit gives exactly its disagreements.

use palisade_analyze::azure_check::{check, parse_nsgs, parse_routes, Kind, Report};
use palisade_policy::Snapshot;
use proptest::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/azure")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn network() -> Value {
    let p = shared().join("scenarios/layered-nsg/network.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn snapshot(net: &Value) -> Snapshot {
    let dir = std::env::temp_dir().join(format!("palisade-check-azure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = net.to_string();
    let file = dir.join(format!("{:x}.json", fnv(&text)));
    std::fs::write(&file, text).unwrap();
    let loaded = palisade_load::load(&palisade_load::Source::files(vec![file]));
    loaded.snapshot.expect("the network loads")
}

/// A file name per network text: the tests run in parallel.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn run(net: &Value, routes: &str, nsgs: &str) -> Report {
    let routes = parse_routes("routes.json", routes).unwrap();
    let nsgs = parse_nsgs("nsg.json", nsgs).unwrap();
    check(&snapshot(net), "web-vm1-nic", Some(&routes), Some(&nsgs)).unwrap()
}

fn edit(text: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(text).unwrap();
    f(&mut v);
    v.to_string()
}

fn resource<'a>(net: &'a mut Value, name: &str) -> &'a mut Value {
    net["resources"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == name)
        .unwrap()
}

#[test]
fn matching_model_has_no_disagreement() {
    let r = run(
        &network(),
        &data("web-vm1-nic-effective-routes.json"),
        &data("web-vm1-nic-effective-nsg.json"),
    );
    assert_eq!(r.disagreements, vec![], "{r:#?}");
    assert_eq!(r.routes_compared, 6);
    assert_eq!(r.rules_compared, 12 + 10);
}

#[test]
fn edited_exports_give_exactly_their_disagreements() {
    let routes = edit(&data("web-vm1-nic-effective-routes.json"), |v| {
        let list = v["responses"]["200"]["body"]["value"]
            .as_array_mut()
            .unwrap();
        // 0.0.0.0/0 forced through an appliance, and 100.64.0.0/10 gone.
        list[1]["nextHopType"] = "VirtualAppliance".into();
        list[1]["nextHopIpAddress"] = serde_json::json!(["10.2.0.4"]);
        list.retain(|r| r["addressPrefix"][0] != "100.64.0.0/10");
    });
    let nsgs = edit(&data("web-vm1-nic-effective-nsg.json"), |v| {
        let rules = v["value"][1]["effectiveSecurityRules"]
            .as_array_mut()
            .unwrap();
        rules.push(serde_json::json!({
            "name": "securityRules/Allow-RDP", "protocol": "Tcp", "sourcePortRange": "0-65535",
            "destinationPortRange": "3389-3389", "sourceAddressPrefix": "10.2.0.0/27",
            "destinationAddressPrefix": "0.0.0.0/0", "access": "Allow", "priority": 120,
            "direction": "Inbound"}));
        let web = v["value"][0]["effectiveSecurityRules"]
            .as_array_mut()
            .unwrap();
        let https = web
            .iter_mut()
            .find(|r| r["name"] == "securityRules/Allow-HTTPS-Internet")
            .unwrap();
        let internet = https["expandedSourceAddressPrefix"].as_array_mut().unwrap();
        internet.retain(|p| p != "1.0.0.0/8");
    });
    let r = run(&network(), &routes, &nsgs);
    let got: Vec<(Kind, &str, Option<&str>)> = r
        .disagreements
        .iter()
        .map(|d| (d.kind, d.subject.as_str(), d.field))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Kind::NextHopDiffers,
                "route 0.0.0.0/0 (Default)",
                Some("nextHop")
            ),
            (Kind::ExtraRoute, "route 100.64.0.0/10 (Default)", None),
            (
                Kind::RulePrefixesDiffer,
                "subnet NSG web-nsg: securityRules/Allow-HTTPS-Internet (Inbound)",
                Some("expandedSourceAddressPrefix")
            ),
            (
                Kind::MissingRule,
                "networkInterface NSG web-vm1-nic-nsg: securityRules/Allow-RDP (Inbound)",
                None
            ),
        ],
        "{r:#?}"
    );
    let hop = &r.disagreements[0];
    assert_eq!(
        hop.azure.as_deref(),
        Some("0.0.0.0/0 → VirtualAppliance 10.2.0.4 (Default, Active)")
    );
    assert_eq!(
        hop.model.as_deref(),
        Some("0.0.0.0/0 → Internet (Default, Active)")
    );
    assert_eq!(r.disagreements[2].only_model, vec!["1.0.0.0/8"]);
    assert!(r.disagreements[2].only_azure.is_empty());
}

/// Kind, subject, field, Azure's side, the model's side.
type Seen<'a> = (
    Kind,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

#[test]
fn edited_model_gives_exactly_its_disagreements() {
    let mut net = network();
    // A changed priority on the subnet NSG, and the NIC's own NSG removed.
    let nsg = resource(&mut net, "web-nsg");
    nsg["properties"]["securityRules"][1]["properties"]["priority"] = 106.into();
    let nic = resource(&mut net, "web-vm1-nic");
    nic["properties"]
        .as_object_mut()
        .unwrap()
        .remove("networkSecurityGroup");
    let r = run(
        &net,
        &data("web-vm1-nic-effective-routes.json"),
        &data("web-vm1-nic-effective-nsg.json"),
    );
    let got: Vec<Seen> = r
        .disagreements
        .iter()
        .map(|d| {
            (
                d.kind,
                d.subject.as_str(),
                d.field,
                d.azure.as_deref(),
                d.model.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Kind::RuleDiffers,
                "subnet NSG web-nsg: securityRules/Allow-HTTPS-Internet (Inbound)",
                Some("priority"),
                Some("105"),
                Some("106")
            ),
            (
                Kind::MissingNsg,
                "networkInterface NSG web-vm1-nic-nsg",
                None,
                Some("web-vm1-nic-nsg"),
                None
            ),
        ],
        "{r:#?}"
    );
}

#[test]
fn rest_api_examples_parse() {
    let dir = shared().join(
        "corpus/azure-configs/azure-rest-api-specs/specification/network/resource-manager/Microsoft.Network/stable/2020-11-01/examples",
    );
    let text =
        std::fs::read_to_string(dir.join("NetworkInterfaceEffectiveRouteTableList.json")).unwrap();
    let routes = parse_routes("routes.json", &text).unwrap();
    assert_eq!(routes.len(), 6);
    assert_eq!(routes[0].next_hop_type, "VnetLocal");
    let text = std::fs::read_to_string(dir.join("NetworkInterfaceEffectiveNSGList.json")).unwrap();
    let nsgs = parse_nsgs("nsg.json", &text).unwrap();
    assert_eq!(nsgs.len(), 1);
    assert_eq!(nsgs[0].nsg, "test-nsg");
    assert_eq!(nsgs[0].association, "subnet");
    assert_eq!(nsgs[0].rules.len(), 3);
    assert_eq!(nsgs[0].rules[2].destination.as_ref().unwrap().len(), 4);
}

#[test]
fn located_errors() {
    let text = "{\"value\": [\n  {\"addressPrefix\": [\"10.0.0.0/33\"], \"nextHopType\": \"None\"},\n  {\"source\": \"User\"}\n]}";
    let problems = parse_routes("r.json", text).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].pointer, "/value/0/addressPrefix/0");
    assert_eq!(problems[0].line, Some(2));
    assert_eq!(problems[1].pointer, "/value/1");
    assert_eq!(problems[1].line, Some(3));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("10.0.0.0/8".to_string()),
            Just("*".to_string()),
            Just("Tcp".to_string()),
            "[a-zA-Z0-9/.:*-]{0,12}"
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let keys = prop_oneof![
            Just("value".to_string()),
            Just("responses".to_string()),
            Just("200".to_string()),
            Just("body".to_string()),
            Just("addressPrefix".to_string()),
            Just("nextHopType".to_string()),
            Just("nextHopIpAddress".to_string()),
            Just("effectiveSecurityRules".to_string()),
            Just("networkSecurityGroup".to_string()),
            Just("association".to_string()),
            Just("subnet".to_string()),
            Just("id".to_string()),
            Just("name".to_string()),
            Just("priority".to_string()),
            Just("sourcePortRange".to_string()),
            Just("expandedSourceAddressPrefix".to_string()),
            "[a-z]{1,6}"
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    // Failures are kept beside this file (`azure_check.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn parsers_never_panic(v in arb_json(), text in "\\PC{0,64}") {
        let s = v.to_string();
        let _ = parse_routes("x.json", &s);
        let _ = parse_nsgs("x.json", &s);
        let _ = parse_routes("x.json", &text);
        let _ = parse_nsgs("x.json", &text);
    }
}
