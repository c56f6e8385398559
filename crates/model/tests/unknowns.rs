//! Unknown values (FMT-4, issue 17): what a template cannot tell offline is kept as unknown,
//! reported once where it stands, and not held against the configuration.

use palisade_model::catalog::Catalogs;
use palisade_model::import::import_text;
use palisade_model::{validate, Diagnostic, ImportOptions, Severity};
use serde_json::json;

/// `priority`: of the rule whose name is unknown.
fn template(priority: u32) -> String {
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "parameters": {
            "names": {"type": "object"},
            "proto": {"type": "string"},
            "targets": {"type": "array"}
        },
        "resources": [
            {
                "type": "Microsoft.Network/networkSecurityGroups",
                "name": "nsg",
                "properties": {"securityRules": [
                    {"name": "[parameters('names').rule]", "properties": {
                        "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "443",
                        "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
                        "access": "Allow", "priority": priority, "direction": "Inbound"}},
                    {"name": "by-protocol", "properties": {
                        "protocol": "[parameters('proto')]", "sourcePortRange": "*",
                        "destinationPortRange": "*", "sourceAddressPrefix": "*",
                        "destinationAddressPrefix": "*", "access": "Deny", "priority": 200,
                        "direction": "Inbound"}}
                ]}
            },
            {
                "type": "Microsoft.Network/firewallPolicies",
                "name": "[parameters('names').policy]",
                "properties": {},
                "resources": [{
                    "type": "ruleCollectionGroups",
                    "name": "rcg",
                    "properties": {"priority": 100, "ruleCollections": [{
                        "ruleCollectionType": "FirewallPolicyFilterRuleCollection",
                        "name": "apps", "priority": 100, "action": {"type": "Allow"},
                        "rules": [{
                            "ruleType": "ApplicationRule", "name": "web",
                            "sourceAddresses": ["10.0.0.0/24"],
                            "protocols": [{"protocolType": "Https", "port": 443}],
                            "targetFqdns": "[parameters('targets')]"
                        }]
                    }]}
                }]
            }
        ]
    })
    .to_string()
}

fn unknown_reports<'a>(d: &'a [Diagnostic], field: &str) -> Vec<&'a Diagnostic> {
    let needle = format!("`{field}` unknown");
    d.iter().filter(|d| d.message.contains(&needle)).collect()
}

#[test]
fn fmt_4_unknown_names_protocols_and_targets_are_warnings_not_errors() {
    let f = import_text("t.json", &template(100), &ImportOptions::default(), None);
    let v = validate(&f.network, &Catalogs::embedded(), false);
    let all: Vec<Diagnostic> = f.diagnostics.0.iter().chain(&v.0).cloned().collect();
    let errors: Vec<&Diagnostic> = all
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // Each unknown once, as a warning at the value, with the parameter that has no value.
    for (field, param) in [
        ("name", "names"),
        ("protocol", "proto"),
        ("targetFqdns", "targets"),
    ] {
        let r = unknown_reports(&all, field);
        let want = format!("parameter '{param}' has no value");
        let r: Vec<_> = r
            .into_iter()
            .filter(|d| d.message.contains(&want))
            .collect();
        assert!(!r.is_empty(), "no report of `{field}`: {all:#?}");
        for d in &r {
            assert_eq!(d.severity, Severity::Warning);
            assert!(d.message.contains("--parameters"), "{}", d.message);
        }
    }
    let rule_name = f
        .network
        .unknowns
        .iter()
        .filter(|u| u.field == "name" && u.resource_type.ends_with("securityRules"))
        .count();
    assert_eq!(rule_name, 1, "{:#?}", f.network.unknowns);

    // The rule with an unknown name is kept (its known fields decide); the rule whose protocol
    // is unknown cannot be placed and matches nothing: it is not in the model.
    let nsg = &f.network.network_security_groups[0];
    let names: Vec<&str> = nsg.security_rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].contains("parameters('names').rule"), "{names:?}");
    // The application rule is kept without targets: it matches nothing, and is no error.
    let policy = &f.network.firewall_policies[0];
    let rule = &policy.rule_collection_groups[0].rule_collections[0].rules[0];
    assert!(rule.target_fqdns.is_empty());
    assert!(f.network.unknown_field(&rule.origin, "targetFqdns"));
}

#[test]
fn fmt_4_strict_mode_refuses_unknown_values() {
    let options = ImportOptions {
        strict: true,
        ..Default::default()
    };
    let f = import_text("t.json", &template(100), &options, None);
    let errors: Vec<&Diagnostic> = f.diagnostics.errors().collect();
    assert!(
        errors
            .iter()
            .any(|d| d.message.contains("`protocol` unknown")),
        "{errors:#?}"
    );
}

#[test]
fn fmt_4_a_wrong_value_next_to_an_unknown_one_is_still_an_error() {
    // Only what is wrong whatever the unknowns resolve to is an error: here a priority.
    let f = import_text("t.json", &template(5000), &ImportOptions::default(), None);
    let v = validate(&f.network, &Catalogs::embedded(), false);
    let all: Vec<&Diagnostic> = f.diagnostics.errors().chain(v.errors()).collect();
    assert!(
        all.iter().any(|d| d.field.as_deref() == Some("priority")),
        "{all:#?}"
    );
}
