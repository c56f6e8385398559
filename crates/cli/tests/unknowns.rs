//! Values unknown offline (FMT-4, issue 17): a template whose values come from parameters
//! without a value validates with a warning per unknown field, and `trace` says when its verdict
//! assumed something about them.

mod common;

use common::palisade;
use serde_json::{json, Value};
use std::path::Path;

/// A network whose web subnet's NSG denies a range given by a parameter without a default,
/// before allowing HTTPS from anywhere; a second subnet has no NSG.
fn template() -> Value {
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"blockedRange": {"type": "string"}},
        "resources": [
            {
                "type": "Microsoft.Network/networkSecurityGroups",
                "apiVersion": "2023-04-01",
                "name": "web-nsg",
                "properties": {"securityRules": [
                    {"name": "deny-blocked", "properties": {
                        "protocol": "*", "sourcePortRange": "*", "destinationPortRange": "*",
                        "sourceAddressPrefix": "[parameters('blockedRange')]",
                        "destinationAddressPrefix": "*", "access": "Deny", "priority": 100,
                        "direction": "Inbound"}},
                    {"name": "allow-https", "properties": {
                        "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "443",
                        "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
                        "access": "Allow", "priority": 200, "direction": "Inbound"}}
                ]}
            },
            {
                "type": "Microsoft.Network/virtualNetworks",
                "apiVersion": "2023-04-01",
                "name": "vnet",
                "properties": {
                    "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                    "subnets": [
                        {"name": "web", "properties": {"addressPrefix": "10.0.1.0/24",
                            "networkSecurityGroup": {"id": "[resourceId('Microsoft.Network/networkSecurityGroups', 'web-nsg')]"}}},
                        {"name": "tools", "properties": {"addressPrefix": "10.0.2.0/24"}}
                    ]
                }
            }
        ]
    })
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p.display().to_string()
}

fn trace(net: &str, from: &str, to: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "trace",
        "--network",
        net,
        "--from",
        from,
        "--to",
        to,
        "--port",
        "443",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let (_, out, err) = palisade(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

#[test]
fn fmt_4_unknown_values_validate_and_answers_say_what_they_assumed() {
    let dir = tempfile::tempdir().unwrap();
    let net = write(dir.path(), "network.json", &template());

    // Valid: the unknown is a warning at its own line, naming the parameter.
    let (code, out, _) = palisade(&["validate", &net]);
    assert_eq!(code, 0, "{out}");
    let warning = out
        .lines()
        .find(|l| l.contains("`sourceAddressPrefix` unknown"))
        .unwrap_or_else(|| panic!("no unknown warning: {out}"));
    assert!(warning.starts_with("warning: "), "{warning}");
    assert!(
        warning.contains("parameter 'blockedRange' has no value"),
        "{warning}"
    );
    assert!(warning.contains("--parameters"), "{warning}");
    assert!(warning.contains("network.json:"), "not located: {warning}");
    let reports = out.matches("`sourceAddressPrefix` unknown").count();
    assert_eq!(reports, 1, "reported once: {out}");

    // The deny's unknown source matches nothing: HTTPS is allowed, and the answer says that it
    // assumed so, in JSON and in text.
    let v = trace(&net, "203.0.113.5", "10.0.1.4", &[]);
    assert_eq!(v["verdict"], "Allow", "{v:#}");
    let assumed = v["assumed"].as_array().unwrap();
    assert_eq!(assumed.len(), 1, "{v:#}");
    let a = assumed[0].as_str().unwrap();
    assert!(
        a.contains("`sourceAddressPrefix` of 'web-nsg/deny-blocked' is unknown"),
        "{a}"
    );
    assert!(a.contains("parameter 'blockedRange' has no value"), "{a}");
    let (_, text, _) = palisade(&[
        "trace",
        "--network",
        &net,
        "--from",
        "203.0.113.5",
        "--to",
        "10.0.1.4",
        "--port",
        "443",
    ]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("assumed ") && l.contains("deny-blocked")),
        "{text}"
    );

    // The reachability matrix says the same of the entries the NSG decided.
    let (code, out, err) = palisade(&[
        "analyze",
        "reachability",
        "--network",
        &net,
        "--from",
        "203.0.113.0/24",
        "--to",
        "web",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "{v:#}");
    for e in entries {
        let a = e["assumed"].as_array().unwrap();
        assert!(
            a.iter()
                .any(|a| a.as_str().unwrap().contains("deny-blocked")),
            "{e:#}"
        );
    }

    // A flow that meets no resource with an unknown assumes nothing.
    let v = trace(&net, "10.0.2.4", "203.0.113.9", &[]);
    assert_eq!(v["assumed"], json!([]), "{v:#}");

    // Given the value, the same flow is denied and nothing is assumed.
    let params = write(
        dir.path(),
        "values.json",
        &json!({"parameters": {"blockedRange": {"value": "203.0.113.0/24"}}}),
    );
    let v = trace(&net, "203.0.113.5", "10.0.1.4", &["--parameters", &params]);
    assert_eq!(v["verdict"], "Deny", "{v:#}");
    assert_eq!(v["decided_by"]["rule"], "deny-blocked", "{v:#}");
    assert_eq!(v["assumed"], json!([]), "{v:#}");
}

/// `deps check` over the adx-dependencies scenario with one application rule's targets given by
/// a parameter without a value: the entries that rule covered are no longer covered, and say what
/// their answer assumed.
#[test]
fn fmt_4_deps_check_says_what_it_assumed() {
    let root = common::root();
    let scenario = root.join("../shared/scenarios/adx-dependencies");
    let mut net: Value =
        serde_json::from_str(&std::fs::read_to_string(scenario.join("network.json")).unwrap())
            .unwrap();
    net["parameters"] = json!({"monitorTargets": {"type": "array"}});
    let rule = net["resources"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .flat_map(|r| {
            r["properties"]["ruleCollections"]
                .as_array_mut()
                .into_iter()
                .flatten()
        })
        .flat_map(|c| c["rules"].as_array_mut().into_iter().flatten())
        .find(|r| r["name"] == "azure-monitor")
        .unwrap();
    rule["targetFqdns"] = json!("[parameters('monitorTargets')]");
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "network.json", &net);
    let catalog = scenario.join("dependencies.json");
    let (code, out, err) = palisade(&[
        "deps",
        "check",
        "--network",
        &file,
        "--catalog",
        catalog.to_str().unwrap(),
        "--from",
        "10.1.0.10",
        "--output",
        "json",
    ]);
    assert_eq!(code, 1, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let entry = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["domainName"] == "prod.warmpath.msftcloudes.com")
        .unwrap();
    assert_ne!(entry["status"], "Covered", "{entry:#}");
    let assumed: Vec<&str> = entry["assumed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        assumed.iter().any(|a| a.contains("`targetFqdns`")
            && a.contains("azure-monitor")
            && a.contains("parameter 'monitorTargets' has no value")),
        "{assumed:#?}"
    );
}
