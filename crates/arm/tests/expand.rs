//! Template expansion: parameters and variables (FMT-4), copy loops, conditions and nested
//! deployments (FMT-5), child resources (FMT-6).

use std::collections::HashMap;

use palisade_arm::{expand, is_template, is_unresolved, Expansion, Options, Severity};
use serde_json::{json, Value};

fn run(template: Value) -> Expansion {
    expand(&template, &Options::default())
}

fn with_params(template: Value, params: Value) -> Expansion {
    expand(
        &template,
        &Options {
            parameters: Some(params),
            ..Options::default()
        },
    )
}

fn values(e: &Expansion) -> Vec<Value> {
    e.resources.iter().map(|r| r.value.clone()).collect()
}

fn problem<'e>(e: &'e Expansion, severity: Severity, needle: &str) -> &'e palisade_arm::Problem {
    e.problems
        .iter()
        .find(|p| p.severity == severity && p.message.contains(needle))
        .unwrap_or_else(|| panic!("no {severity:?} containing {needle:?} in {:#?}", e.problems))
}

fn no_problems(e: &Expansion) {
    assert!(
        e.problems.is_empty(),
        "unexpected problems: {:#?}",
        e.problems
    );
}

#[test]
fn fmt_1_is_template_by_schema_or_resources() {
    assert!(is_template(
        &json!({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"})
    ));
    assert!(is_template(
        &json!({"$schema": "https://x/subscriptionDeploymentTemplate.json#"})
    ));
    assert!(is_template(&json!({"resources": []})));
    assert!(is_template(
        &json!({"languageVersion": "2.0", "resources": {}})
    ));
    assert!(!is_template(&json!({"resources": {}})));
    assert!(!is_template(
        &json!({"$schema": "https://x/deploymentParameters.json#", "parameters": {}})
    ));
    assert!(!is_template(
        &json!({"id": "/subscriptions/x", "properties": {}})
    ));
    assert!(!is_template(&json!([{"resources": []}])));
}

#[test]
fn fmt_4_concat_and_parameters() {
    let t = json!({
        "Parameters": {
            "prefix": {"type": "string"},
            "Suffix": {"type": "string", "DefaultValue": "[concat(parameters('prefix'), '-nsg')]"},
            "unused": {"type": "string"}
        },
        "Variables": {
            "nsgName": "[toUpper(parameters('suffix'))]",
            "neverUsed": "[reference('x').y]"
        },
        "Resources": [{
            "Type": "Microsoft.Network/networkSecurityGroups",
            "Name": "[variables('NSGNAME')]",
            "Properties": {"note": "[concat(parameters('Prefix'), '/', resourceGroup().name)]"}
        }]
    });
    let e = with_params(t, json!({"prefix": "web"}));
    no_problems(&e);
    assert_eq!(
        values(&e),
        vec![json!({
            "Type": "Microsoft.Network/networkSecurityGroups",
            "Name": "WEB-NSG",
            "Properties": {"note": "web/palisade-rg"}
        })]
    );
}

#[test]
fn fmt_4_parameter_values_from_a_parameters_file() {
    let t = json!({
        "parameters": {"a": {"type": "int"}, "b": {"type": "array", "defaultValue": [1]}},
        "resources": [{"type": "T/t", "name": "[string(parameters('a'))]", "properties": {"b": "[parameters('b')]"}}]
    });
    let file = json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"A": {"value": 7}, "b": {"value": ["x", "y"]}, "c": {"value": 1}}
    });
    let e = with_params(t, file);
    assert_eq!(e.resources[0].value["name"], json!("7"));
    assert_eq!(e.resources[0].value["properties"]["b"], json!(["x", "y"]));
    problem(
        &e,
        Severity::Warning,
        "parameter 'c', which the template does not declare",
    );
}

#[test]
fn fmt_4_parameter_without_value_is_unresolved_with_a_warning() {
    let t = json!({
        "parameters": {"ip": {"type": "string"}},
        "resources": [{"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {"routes": [
            {"name": "r", "properties": {"nextHopIpAddress": "[parameters('ip')]", "addressPrefix": "[concat(parameters('ip'), '/32')]"}}
        ]}}]
    });
    let e = run(t);
    let route = &e.resources[0].value["properties"]["routes"][0]["properties"];
    assert_eq!(
        route["nextHopIpAddress"],
        json!({"$unresolved": "[parameters('ip')]", "$why": "parameter 'ip' has no value (none given and no defaultValue)"})
    );
    assert_eq!(
        route["addressPrefix"],
        json!({"$unresolved": "[concat(parameters('ip'), '/32')]", "$why": "parameter 'ip' has no value (none given and no defaultValue)"})
    );
    let p = problem(&e, Severity::Warning, "parameter 'ip' has no value");
    assert_eq!(p.pointer, "/parameters/ip");
    assert_eq!(
        e.problems.len(),
        1,
        "one warning, not one per use: {:#?}",
        e.problems
    );
}

#[test]
fn fmt_4_key_vault_parameter_reference_is_unresolved() {
    let t = json!({"parameters": {"secret": {"type": "securestring"}},
        "resources": [{"type": "T/t", "name": "n", "properties": {"s": "[parameters('secret')]"}}]});
    let e = with_params(
        t,
        json!({"secret": {"reference": {"keyVault": {"id": "/x"}, "secretName": "s"}}}),
    );
    assert!(is_unresolved(&e.resources[0].value["properties"]["s"]));
    problem(&e, Severity::Warning, "Key Vault reference");
}

#[test]
fn fmt_4_reference_is_unresolved_with_a_located_warning() {
    let t = json!({"resources": [
        {"type": "Microsoft.Network/publicIPAddresses", "name": "pip"},
        {"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {"routes": [
            {"name": "r", "properties": {
                "addressPrefix": "0.0.0.0/0",
                "nextHopIpAddress": "[reference(resourceId('Microsoft.Network/azureFirewalls', 'fw')).ipConfigurations[0].properties.privateIPAddress]"
            }}
        ]}}
    ], "outputs": {"ip": {"type": "string", "value": "[reference('pip').ipAddress]"}}});
    let e = run(t);
    let hop = &e.resources[1].value["properties"]["routes"][0]["properties"]["nextHopIpAddress"];
    assert!(is_unresolved(hop));
    let p = problem(
        &e,
        Severity::Warning,
        "reference() reads the state of a deployed resource",
    );
    assert_eq!(
        p.pointer,
        "/resources/1/properties/routes/0/properties/nextHopIpAddress"
    );
    assert_eq!(
        e.problems.len(),
        1,
        "outputs are not evaluated: {:#?}",
        e.problems
    );
}

#[test]
fn fmt_4_whole_array_and_enum_positions() {
    let t = json!({
        "parameters": {"fqdns": {"type": "array", "defaultValue": ["*.a.example", "b.example"]}},
        "resources": [{"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {
            "targetFqdns": "[parameters('fqdns')]",
            "copy": [{"name": "routes", "count": 2, "input": {
                "name": "[concat('r', copyIndex('routes'))]",
                "properties": {"nextHopType": "[if(equals(copyIndex('routes'), 0), 'VirtualAppliance', 'Internet')]"}
            }}]
        }}]
    });
    let e = run(t);
    no_problems(&e);
    let props = &e.resources[0].value["properties"];
    assert_eq!(props["targetFqdns"], json!(["*.a.example", "b.example"]));
    assert_eq!(
        props["routes"],
        json!([
            {"name": "r0", "properties": {"nextHopType": "VirtualAppliance"}},
            {"name": "r1", "properties": {"nextHopType": "Internet"}}
        ])
    );
}

#[test]
fn fmt_4_variable_cycles_and_bad_references_are_errors() {
    let t = json!({
        "variables": {"a": "[variables('b')]", "b": "[concat(variables('a'), 'x')]"},
        "resources": [{"type": "T/t", "name": "[variables('a')]", "properties": {
            "p": "[parameters('missing')]", "q": "[variables('nope')]", "r": "[add(1, 'x')]", "s": "[concat("
        }}]
    });
    let e = run(t);
    assert!(is_unresolved(&e.resources[0].value["name"]));
    problem(&e, Severity::Error, "variable 'a' refers to itself");
    let p = problem(&e, Severity::Error, "parameter 'missing' is not declared");
    assert_eq!(p.pointer, "/resources/0/properties/p");
    problem(&e, Severity::Error, "variable 'nope' is not defined");
    problem(&e, Severity::Error, "must be an integer, found string");
    assert_eq!(e.resources[0].value["properties"]["s"], json!("[concat("));
}

#[test]
fn fmt_4_unknown_functions_are_unresolved_with_a_warning() {
    let t = json!({"resources": [{"type": "T/t", "name": "n", "properties": {"x": "[frobnicate(1)]"}}]});
    let e = run(t);
    assert!(is_unresolved(&e.resources[0].value["properties"]["x"]));
    problem(
        &e,
        Severity::Warning,
        "function 'frobnicate' is not supported offline",
    );
}

#[test]
fn fmt_4_user_defined_functions() {
    let t = json!({
        "functions": [{"namespace": "contoso", "members": {"nsgName": {
            "parameters": [{"name": "app", "type": "string"}, {"name": "n", "type": "int"}],
            "output": {"type": "string", "value": "[format('{0}-nsg-{1}', parameters('app'), parameters('n'))]"}
        }, "bad": {"parameters": [], "output": {"type": "string", "value": "[variables('v')]"}}}}],
        "variables": {"v": "x"},
        "resources": [{"type": "T/t", "name": "[contoso.nsgName('web', 2)]",
                       "properties": {"b": "[contoso.bad()]", "c": "[contoso.nsgName('x')]"}}]
    });
    let e = run(t);
    assert_eq!(e.resources[0].value["name"], json!("web-nsg-2"));
    problem(
        &e,
        Severity::Error,
        "variables() cannot be used inside a user-defined function",
    );
    problem(&e, Severity::Error, "takes 2 argument(s), 1 given");
}

#[test]
fn fmt_5_resource_copy_loop() {
    let t = json!({
        "parameters": {"names": {"type": "array", "defaultValue": ["a", "b", "c"]}},
        "resources": [
            {"type": "Microsoft.Network/networkSecurityGroups",
             "name": "[concat('nsg-', parameters('names')[copyIndex()], '-', copyIndex(1))]",
             "copy": {"name": "nsgLoop", "count": "[length(parameters('names'))]", "mode": "Serial", "batchSize": 1},
             "properties": {"i": "[copyIndex('nsgLoop')]"}},
            {"type": "T/none", "name": "x", "copy": {"name": "zero", "count": 0}},
            {"type": "T/unknown", "name": "y", "copy": {"name": "later", "count": "[length(reference('x').list)]"}}
        ]
    });
    let e = run(t);
    let names: Vec<&Value> = e.resources.iter().map(|r| &r.value["name"]).collect();
    assert_eq!(
        names,
        [&json!("nsg-a-1"), &json!("nsg-b-2"), &json!("nsg-c-3")]
    );
    assert_eq!(
        e.resources.iter().map(|r| r.copy_index).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2)]
    );
    assert!(e.resources.iter().all(|r| r.pointer == "/resources/0"));
    assert!(e.resources.iter().all(|r| r.value.get("copy").is_none()));
    assert_eq!(e.resources[2].value["properties"]["i"], json!(2));
    let p = problem(
        &e,
        Severity::Warning,
        "count of resource copy loop 'later' cannot be evaluated offline",
    );
    assert_eq!(p.pointer, "/resources/2/copy");
}

#[test]
fn fmt_5_property_copy_loop() {
    let t = json!({
        "parameters": {"rules": {"type": "array", "defaultValue": [
            {"name": "allow-https", "port": "443", "priority": 100},
            {"name": "allow-ssh", "port": "22", "priority": 110}
        ]}},
        "resources": [{
            "type": "Microsoft.Network/networkSecurityGroups", "name": "nsg",
            "properties": {
                "Copy": [{"name": "securityRules", "count": "[length(parameters('rules'))]", "input": {
                    "name": "[parameters('rules')[copyIndex('securityRules')].name]",
                    "properties": {
                        "priority": "[parameters('rules')[copyIndex('securityRules')].priority]",
                        "destinationPortRange": "[parameters('rules')[copyIndex('securityRules')].port]",
                        "copy": [{"name": "sourceAddressPrefixes", "count": 2,
                                  "input": "[concat('10.0.', copyIndex('sourceAddressPrefixes'), '.0/24')]"}]
                    }
                }}]
            }
        }]
    });
    let e = run(t);
    no_problems(&e);
    assert_eq!(
        e.resources[0].value["properties"],
        json!({"securityRules": [
            {"name": "allow-https", "properties": {"priority": 100, "destinationPortRange": "443",
              "sourceAddressPrefixes": ["10.0.0.0/24", "10.0.1.0/24"]}},
            {"name": "allow-ssh", "properties": {"priority": 110, "destinationPortRange": "22",
              "sourceAddressPrefixes": ["10.0.0.0/24", "10.0.1.0/24"]}}
        ]})
    );
}

#[test]
fn fmt_5_property_copy_beside_a_literal_of_the_same_name_is_an_error() {
    let t = json!({"resources": [{"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {
        "routes": [{"name": "literal"}],
        "copy": [{"name": "routes", "count": 1, "input": {"name": "[concat('copied', copyIndex('routes'))]"}}]
    }}]});
    let e = run(t);
    assert_eq!(
        e.resources[0].value["properties"]["routes"],
        json!([{"name": "copied0"}])
    );
    let p = problem(
        &e,
        Severity::Error,
        "written literally and also built by a copy loop",
    );
    assert_eq!(p.pointer, "/resources/0/properties/routes");
}

#[test]
fn fmt_5_property_copy_with_unresolved_count() {
    let t = json!({"parameters": {"n": {"type": "int"}},
    "resources": [{"type": "T/t", "name": "x", "properties": {
        "copy": [{"name": "items", "count": "[parameters('n')]", "input": "[copyIndex('items')]"}]
    }}]});
    let e = run(t);
    assert!(is_unresolved(&e.resources[0].value["properties"]["items"]));
    problem(
        &e,
        Severity::Warning,
        "count of copy loop 'items' cannot be evaluated offline",
    );
}

#[test]
fn fmt_5_variable_copy_loops() {
    let t = json!({
        "variables": {
            "base": "10.1",
            "copy": [{"name": "subnets", "count": 3, "input": {
                "name": "[concat('sn', copyIndex('subnets'))]",
                "prefix": "[concat(variables('base'), '.', copyIndex('subnets'), '.0/24')]"
            }}],
            "withProperty": {"copy": [{"name": "disks", "count": 2, "input": {"lun": "[copyIndex('disks')]"}}]}
        },
        "resources": [{"type": "T/t", "name": "x", "properties": {
            "subnets": "[variables('subnets')]", "p": "[variables('withProperty')]",
            "second": "[variables('subnets')[1].prefix]"
        }}]
    });
    let e = run(t);
    no_problems(&e);
    let props = &e.resources[0].value["properties"];
    assert_eq!(
        props["subnets"][2],
        json!({"name": "sn2", "prefix": "10.1.2.0/24"})
    );
    assert_eq!(props["p"], json!({"disks": [{"lun": 0}, {"lun": 1}]}));
    assert_eq!(props["second"], json!("10.1.1.0/24"));
}

#[test]
fn fmt_5_conditions() {
    let t = json!({
        "parameters": {"deployFirewall": {"type": "bool", "defaultValue": false}, "unknown": {"type": "bool"}},
        "resources": [
            {"type": "T/skipped", "name": "a", "condition": "[parameters('deployFirewall')]"},
            {"type": "T/kept", "name": "b", "Condition": "[not(parameters('deployFirewall'))]"},
            {"type": "T/literal", "name": "c", "condition": true},
            {"type": "T/unresolved", "name": "d", "condition": "[parameters('unknown')]"},
            {"type": "T/loop", "name": "[concat('e', copyIndex())]", "copy": {"name": "l", "count": 3},
             "condition": "[not(equals(copyIndex(), 1))]"}
        ]
    });
    let e = run(t);
    let names: Vec<&str> = e
        .resources
        .iter()
        .filter_map(|r| r.value["name"].as_str())
        .collect();
    assert_eq!(names, ["b", "c", "d", "e0", "e2"]);
    assert!(e
        .resources
        .iter()
        .all(|r| r.value.get("condition").is_none() && r.value.get("Condition").is_none()));
    let p = problem(
        &e,
        Severity::Warning,
        "condition cannot be evaluated offline; the resource is kept",
    );
    assert_eq!(p.pointer, "/resources/3/condition");
}

#[test]
fn fmt_5_nested_deployment_with_outer_scope_sees_parent_parameters() {
    let t = json!({
        "parameters": {"prefix": {"type": "string", "defaultValue": "hub"}},
        "variables": {"vnet": "[concat(parameters('prefix'), '-vnet')]"},
        "resources": [{
            "type": "Microsoft.Resources/deployments", "apiVersion": "2021-04-01", "name": "nested",
            "properties": {"mode": "Incremental", "template": {
                "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
                "resources": [{"type": "Microsoft.Network/virtualNetworks", "name": "[variables('vnet')]"}]
            }}
        }]
    });
    let e = run(t);
    no_problems(&e);
    assert_eq!(
        e.resources.len(),
        1,
        "the deployment resource itself is not emitted"
    );
    assert_eq!(e.resources[0].value["name"], json!("hub-vnet"));
    assert_eq!(
        e.resources[0].pointer,
        "/resources/0/properties/template/resources/0"
    );
}

#[test]
fn fmt_5_nested_deployment_with_inner_scope_has_its_own_parameters() {
    let t = json!({
        "parameters": {"spokes": {"type": "array", "defaultValue": ["a", "b"]}},
        "resources": [{
            "type": "Microsoft.Resources/deployments", "name": "[concat('spoke-', copyIndex())]",
            "resourceGroup": "spoke-rg",
            "copy": {"name": "spokeLoop", "count": "[length(parameters('spokes'))]"},
            "properties": {
                "expressionEvaluationOptions": {"scope": "inner"},
                "parameters": {
                    "name": {"value": "[parameters('spokes')[copyIndex()]]"},
                    "index": {"value": "[copyIndex()]"}
                },
                "template": {
                    "parameters": {"name": {"type": "string"}, "index": {"type": "int"}, "spokes": {"type": "string", "defaultValue": "inner-default"}},
                    "variables": {"id": "[resourceId('Microsoft.Network/virtualNetworks', parameters('name'))]"},
                    "resources": [{"type": "Microsoft.Network/virtualNetworks", "name": "[parameters('name')]",
                                   "properties": {"id": "[variables('id')]", "spokes": "[parameters('spokes')]",
                                                  "deployment": "[deployment().name]", "prefix": "[concat('10.', parameters('index'), '.0.0/16')]"}}]
                }
            }
        }]
    });
    let e = run(t);
    no_problems(&e);
    assert_eq!(e.resources.len(), 2);
    let second = &e.resources[1].value;
    assert_eq!(second["name"], json!("b"));
    assert_eq!(
        second["properties"],
        json!({
            "id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/spoke-rg/providers/Microsoft.Network/virtualNetworks/b",
            "spokes": "inner-default",
            "deployment": "spoke-1",
            "prefix": "10.1.0.0/16"
        })
    );
    assert_eq!(e.resources[1].copy_index, None);
}

#[test]
fn fmt_5_linked_templates_are_read_through_the_reader() {
    let linked = json!({
        "parameters": {"vnetName": {"type": "string"}},
        "resources": [
            {"type": "Microsoft.Network/virtualNetworks", "name": "[parameters('vnetName')]"},
            {"type": "Microsoft.Resources/deployments", "name": "deeper",
             "properties": {"templateLink": {"relativePath": "../shared/nsg.json"}}}
        ]
    });
    let nsg = json!({"resources": [{"type": "Microsoft.Network/networkSecurityGroups", "name": "shared-nsg"}]});
    let files: HashMap<String, Value> = [
        ("nestedtemplates/vnet.json".to_string(), linked),
        ("shared/nsg.json".to_string(), nsg),
    ]
    .into_iter()
    .collect();
    let t = json!({
        "parameters": {
            "_artifactsLocation": {"type": "string", "defaultValue": "https://raw.githubusercontent.com/x/y/master/z/"},
            "_artifactsLocationSasToken": {"type": "securestring", "defaultValue": ""}
        },
        "variables": {"uri": "[uri(parameters('_artifactsLocation'), concat('nestedtemplates/vnet.json', parameters('_artifactsLocationSasToken')))]"},
        "resources": [
            {"type": "Microsoft.Resources/deployments", "name": "vnet",
             "properties": {"templateLink": {"uri": "[variables('uri')]"}, "parameters": {"vnetName": {"value": "[concat('hub', '-vnet')]"}}}},
            {"type": "Microsoft.Resources/deployments", "name": "missing",
             "properties": {"templateLink": {"uri": "https://example.com/templates/nothing.json?sv=1"}}}
        ]
    });
    let options = Options {
        read_linked: Some(Box::new(move |path: &str| {
            files
                .get(path)
                .cloned()
                .ok_or_else(|| format!("no file {path}"))
        })),
        ..Options::default()
    };
    let e = expand(&t, &options);
    assert_eq!(
        values(&e),
        vec![
            json!({"type": "Microsoft.Network/virtualNetworks", "name": "hub-vnet"}),
            json!({"type": "Microsoft.Network/networkSecurityGroups", "name": "shared-nsg"})
        ]
    );
    assert_eq!(
        e.resources[0].linked_file.as_deref(),
        Some("nestedtemplates/vnet.json")
    );
    assert_eq!(e.resources[0].pointer, "/resources/0");
    assert_eq!(
        e.resources[1].linked_file.as_deref(),
        Some("shared/nsg.json")
    );
    let p = problem(&e, Severity::Warning, "linked template could not be read");
    assert!(
        p.message.contains("templates/nothing.json, nothing.json"),
        "{}",
        p.message
    );
    assert_eq!(p.pointer, "/resources/1/properties/templateLink");

    let no_reader = run(t);
    assert!(no_reader.resources.is_empty());
    problem(&no_reader, Severity::Warning, "no reader configured");
}

#[test]
fn fmt_5_linked_uri_with_unresolved_base_uses_the_literal_path() {
    let t = json!({
        "parameters": {"baseUrl": {"type": "string"}},
        "resources": [{"type": "Microsoft.Resources/deployments", "name": "lb",
            "properties": {"templateLink": {"uri": "[concat(parameters('baseUrl'), '/nested/loadBalancer.json')]"}}}]
    });
    let options = Options {
        read_linked: Some(Box::new(|path: &str| {
            if path == "nested/loadBalancer.json" {
                Ok(
                    json!({"resources": [{"type": "Microsoft.Network/loadBalancers", "name": "lb"}]}),
                )
            } else {
                Err(format!("unexpected {path}"))
            }
        })),
        ..Options::default()
    };
    let e = expand(&t, &options);
    assert_eq!(e.resources.len(), 1);
    assert_eq!(
        e.resources[0].linked_file.as_deref(),
        Some("nested/loadBalancer.json")
    );
    assert!(
        e.problems.is_empty(),
        "guessing the path reports nothing: {:#?}",
        e.problems
    );
}

#[test]
fn fmt_6_child_resources_are_flattened() {
    let t = json!({"resources": [
        {"type": "Microsoft.Network/virtualNetworks", "name": "vnet",
         "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}},
         "resources": [
            {"type": "subnets", "name": "app", "dependsOn": ["vnet"], "properties": {"addressPrefix": "10.0.1.0/24"}},
            {"type": "Microsoft.Network/virtualNetworks/subnets", "name": "vnet/db", "properties": {"addressPrefix": "10.0.2.0/24"}},
            {"type": "virtualNetworkPeerings", "name": "[concat('to-', 'hub')]", "copy": {"name": "p", "count": 1}}
         ]},
        {"type": "Microsoft.Network/networkSecurityGroups/securityRules", "name": "nsg/allow", "properties": {"priority": 100}}
    ]});
    let e = run(t);
    no_problems(&e);
    let summary: Vec<(String, String, String)> = e
        .resources
        .iter()
        .map(|r| {
            (
                r.value["type"].as_str().unwrap_or_default().to_string(),
                r.value["name"].as_str().unwrap_or_default().to_string(),
                r.pointer.clone(),
            )
        })
        .collect();
    let expected = [
        ("Microsoft.Network/virtualNetworks", "vnet", "/resources/0"),
        (
            "Microsoft.Network/virtualNetworks/subnets",
            "vnet/app",
            "/resources/0/resources/0",
        ),
        (
            "Microsoft.Network/virtualNetworks/subnets",
            "vnet/db",
            "/resources/0/resources/1",
        ),
        (
            "Microsoft.Network/virtualNetworks/virtualNetworkPeerings",
            "vnet/to-hub",
            "/resources/0/resources/2",
        ),
        (
            "Microsoft.Network/networkSecurityGroups/securityRules",
            "nsg/allow",
            "/resources/1",
        ),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(summary, expected);
    assert!(e.resources[0].value.get("resources").is_none());
    assert_eq!(
        e.resources[1].value["properties"]["addressPrefix"],
        json!("10.0.1.0/24")
    );
}

#[test]
fn fmt_6_children_of_a_copied_parent_follow_each_instance() {
    let t = json!({"resources": [{
        "type": "Microsoft.Network/routeTables", "name": "[concat('rt', copyIndex())]",
        "copy": {"name": "tables", "count": 2},
        "resources": [{"type": "routes", "name": "default", "properties": {"nextHopType": "[if(equals(copyIndex(), 0), 'Internet', 'None')]"}}]
    }]});
    let e = run(t);
    let names: Vec<&str> = e
        .resources
        .iter()
        .filter_map(|r| r.value["name"].as_str())
        .collect();
    assert_eq!(names, ["rt0", "rt0/default", "rt1", "rt1/default"]);
    assert_eq!(
        e.resources[3].value["properties"]["nextHopType"],
        json!("None")
    );
    assert_eq!(e.resources[3].copy_index, Some(1));
}

#[test]
fn fmt_6_child_of_an_unresolved_parent_name_is_unresolved() {
    let t = json!({"parameters": {"n": {"type": "string"}}, "resources": [{
        "type": "Microsoft.Network/virtualNetworks", "name": "[parameters('n')]",
        "resources": [{"type": "subnets", "name": "s"}]
    }]});
    let e = run(t);
    assert_eq!(
        e.resources[1].value["type"],
        json!("Microsoft.Network/virtualNetworks/subnets")
    );
    assert_eq!(
        e.resources[1].value["name"],
        json!({"$unresolved": "[parameters('n')]/s", "$why": "parameter 'n' has no value (none given and no defaultValue)"})
    );
}

#[test]
fn fmt_6_symbolic_name_resources() {
    let t = json!({
        "languageVersion": "2.0",
        "resources": {
            "hub": {"type": "Microsoft.Network/virtualNetworks", "name": "hub"},
            "existingNsg": {"type": "Microsoft.Network/networkSecurityGroups", "name": "old", "existing": true},
            "rt/x": {"type": "Microsoft.Network/routeTables", "name": "rt"}
        }
    });
    let e = run(t);
    let pointers: Vec<&str> = e.resources.iter().map(|r| r.pointer.as_str()).collect();
    assert_eq!(pointers, ["/resources/hub", "/resources/rt~1x"]);
    let p = problem(&e, Severity::Note, "'existing'");
    assert_eq!(p.pointer, "/resources/existingNsg");
}

#[test]
fn fmt_4_problems_in_loops_are_reported_once() {
    let t = json!({"resources": [{"type": "T/t", "name": "[concat('n', copyIndex())]",
        "copy": {"name": "l", "count": 5},
        "properties": {"x": "[reference('a').b]"}}]});
    let e = run(t);
    assert_eq!(e.resources.len(), 5);
    assert_eq!(e.problems.len(), 1, "{:#?}", e.problems);
}

#[test]
fn fmt_4_literal_bracket_strings_and_markers_in_input() {
    let t = json!({"resources": [{"type": "T/t", "name": "[[x]", "properties": {
        "already": {"$unresolved": "[something]"}, "not": "[ x", "n": 5, "b": null
    }}]});
    let e = run(t);
    no_problems(&e);
    assert_eq!(
        values(&e)[0],
        json!({"type": "T/t", "name": "[x]", "properties": {
            "already": {"$unresolved": "[something]"}, "not": "[ x", "n": 5, "b": null
        }})
    );
}

#[test]
fn fmt_4_an_unknown_value_carries_its_root_cause_through_variables() {
    // The cause names what has no value, however many variables and functions lie between.
    let t = json!({
        "parameters": {"names": {"type": "object"}},
        "variables": {
            "policy": "[parameters('names').firewallPolicy]",
            "full": "[concat(variables('policy'), '-fw')]",
            "ip": "[reference('pip').ipAddress]",
            "doubled": "[map(createArray(1, 2), lambda('x', mul(lambdaVariables('x'), 2)))]"
        },
        "resources": [{"type": "T/x", "name": "[variables('full')]", "properties": {
            "ip": "[concat(variables('ip'), '/32')]",
            "list": "[variables('doubled')]",
            "copy": [{"name": "routes", "count": "[length(parameters('names').routes)]",
                "input": {"n": "[copyIndex('routes')]"}}]
        }}]
    });
    let e = run(t);
    let r = &e.resources[0].value;
    assert_eq!(
        palisade_arm::unresolved_why(&r["name"]),
        Some("parameter 'names' has no value (none given and no defaultValue)")
    );
    let ip = palisade_arm::unresolved_why(&r["properties"]["ip"]).unwrap();
    assert!(ip.starts_with("reference()"), "{ip}");
    let list = palisade_arm::unresolved_why(&r["properties"]["list"]).unwrap();
    assert!(list.contains("map"), "{list}");
    let routes = palisade_arm::unresolved_why(&r["properties"]["routes"]).unwrap();
    assert!(routes.contains("copy loop 'routes'"), "{routes}");
    assert!(
        routes.contains("parameter 'names' has no value"),
        "{routes}"
    );
}
