use super::*;
use crate::{AddressItem, PortRange};

fn import(file: &str, text: &str) -> FileImport {
    import_text(file, text, &ImportOptions::default(), None)
}

#[test]
fn fmt_1_rest_list_and_example_shapes() {
    let list = r#"{"value": [{"name": "nsg1", "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkSecurityGroups/nsg1",
        "properties": {"securityRules": [{"name": "r1", "properties": {"protocol": "TCP", "sourcePortRange": "*",
        "destinationPortRange": "22", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
        "access": "allow", "priority": "200", "direction": "inbound"}}]}}]}"#;
    let f = import("list.json", list);
    assert_eq!(f.kind, InputKind::RestList);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let r = &f.network.network_security_groups[0].security_rules[0];
    assert_eq!(
        (r.priority, r.access, r.direction),
        (200, Access::Allow, Direction::Inbound)
    );

    let example = r#"{"parameters": {"api-version": "2020-11-01", "routeTableName": "rt"},
        "responses": {"200": {"body": {"name": "rt", "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/routeTables/rt",
        "properties": {"routes": [{"name": "r", "properties": {"addressPrefix": "10.0.3.0/24", "nextHopType": "VirtualNetworkGateway"}}]}}}}}"#;
    let f = import("example.json", example);
    assert_eq!(f.kind, InputKind::RestExample);
    assert_eq!(f.network.route_tables[0].routes.len(), 1);
}

#[test]
fn fmt_3_case_insensitive_names_and_string_numbers() {
    let text = r#"{"Name": "nsg", "Type": "Microsoft.Network/networkSecurityGroups", "Properties": {"SecurityRules": [
        {"Name": "r", "Properties": {"Protocol": "tcp", "SourcePortRange": "*", "DestinationPortRanges": ["80", "443-444"],
         "SourceAddressPrefix": "internet", "DestinationAddressPrefix": "*", "Access": "DENY", "Priority": "300", "Direction": "Outbound"}}]}}"#;
    let f = import("ci.json", text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let r = &f.network.network_security_groups[0].security_rules[0];
    assert_eq!(r.destination.port_ranges.len(), 2);
    assert_eq!(
        r.source.address_prefixes[0],
        AddressItem::ServiceTag("Internet".into())
    );
}

#[test]
fn fmt_12_errors_are_located_and_all_reported() {
    let text = "{\n \"name\": \"nsg\", \"type\": \"Microsoft.Network/networkSecurityGroups\", \"properties\": {\"securityRules\": [\n  {\"name\": \"a\", \"properties\": {\"protocol\": \"Tcp\", \"sourcePortRange\": \"90-80\", \"destinationPortRange\": \"*\",\n   \"sourceAddressPrefix\": \"789\", \"destinationAddressPrefix\": \"*\", \"access\": \"Allow\", \"priority\": 100, \"direction\": \"Inbound\"}},\n  {\"name\": \"b\", \"properties\": {\"protocol\": \"Gre\", \"sourcePortRange\": \"*\", \"destinationPortRange\": \"*\",\n   \"sourceAddressPrefix\": \"*\", \"destinationAddressPrefix\": \"*\", \"access\": \"Allow\", \"priority\": 110, \"direction\": \"Inbound\"}}]}}";
    let strict = ImportOptions {
        strict: true,
        ..ImportOptions::default()
    };
    let f = import_text("bad.json", text, &strict, None);
    let errors: Vec<&Diagnostic> = f.diagnostics.errors().collect();
    assert_eq!(errors.len(), 3, "{}", f.diagnostics);

    let port = errors
        .iter()
        .find(|e| e.field.as_deref() == Some("sourcePortRange"))
        .unwrap();
    assert_eq!(port.file, "bad.json");
    assert_eq!(port.line, Some(3));
    assert_eq!(
        port.pointer,
        "/properties/securityRules/0/properties/sourcePortRange"
    );
    assert_eq!(port.resource.as_deref(), Some("nsg/a"));
    assert_eq!(port.found.as_deref(), Some("90-80"));
    assert!(port.expected.is_some());
    assert!(errors.iter().any(|e| e.found.as_deref() == Some("789")));
    assert!(errors
        .iter()
        .any(|e| e.field.as_deref() == Some("protocol") && e.found.as_deref() == Some("Gre")));
}

#[test]
fn fmt_6_child_resources_merge_into_parents() {
    let text = r#"{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "resources": [
      {"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {"routes": []}},
      {"type": "Microsoft.Network/routeTables/routes", "name": "rt/default", "properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.0.4"}},
      {"type": "Microsoft.Network/routeTables/routes", "name": "missing/r", "properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "Internet"}}
    ]}"#;
    let dir = std::env::temp_dir().join(format!("palisade-fmt6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.json");
    std::fs::write(&p, text).unwrap();
    let imported = load(&[p], &ImportOptions::default());
    std::fs::remove_dir_all(&dir).unwrap();
    let rt = imported.network.route_table("rt").unwrap();
    assert_eq!(rt.routes.len(), 1);
    assert!(
        imported
            .diagnostics
            .errors()
            .any(|e| e.message.contains("'missing'")),
        "{}",
        imported.diagnostics
    );
}

#[test]
fn fmt_1_native_yaml() {
    let text = "apiVersion: palisade/v1\nvirtualNetworks:\n  - name: vnet\n    addressSpace: [10.0.0.0/16]\n    subnets:\n      - name: web\n        addressPrefix: 10.0.1.0/24\n        networkSecurityGroup: web-nsg\nnetworkSecurityGroups:\n  - name: web-nsg\n    securityRules:\n      - {name: allow-https, priority: 100, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: Internet, destinationAddressPrefix: '*', destinationPortRange: '443'}\n";
    let f = import("net.yaml", text);
    assert_eq!(f.kind, InputKind::NativeYaml);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert_eq!(
        f.network.virtual_networks[0].subnets[0]
            .network_security_group
            .as_deref(),
        Some("web-nsg")
    );
    assert_eq!(
        f.network.network_security_groups[0].security_rules[0]
            .source
            .port_ranges,
        vec![PortRange::ANY]
    );
}

/// The firewall policy example of docs/native-yaml.md: its inline group holds `ruleCollections`
/// directly (no `properties` wrapper, FMT-11), and its rules must all be imported.
#[test]
fn fmt_11_native_yaml_inline_rule_collection_group() {
    let doc = include_str!("../../../../docs/native-yaml.md");
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/native-yaml.md has a yaml example");
    let f = import("example.yaml", yaml);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let policy = &f.network.firewall_policies[0];
    assert_eq!(policy.name, "base-policy");
    let group = &policy.rule_collection_groups[0];
    assert_eq!((group.name.as_str(), group.priority), ("app", 300));
    assert_eq!(group.rule_collections[0].rules.len(), 1);
}

#[test]
fn fmt_2_invalid_json_is_one_located_error() {
    let f = import("broken.json", "{\"a\": [1, 2,, ]}");
    assert_eq!(f.kind, InputKind::Invalid);
    assert_eq!(f.diagnostics.errors().count(), 1);
}

proptest::proptest! {
    #[test]
    fn import_never_panics(text in "\\PC{0,400}") {
        let _ = import("fuzz.json", &text);
        let _ = import("fuzz.yaml", &text);
    }
}

fn template(resources: &str) -> String {
    format!(
        r#"{{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "parameters": {{"p": {{"type": "string"}}}}, "resources": [{resources}]}}"#
    )
}

const ROUTE: &str = r#"{"addressPrefix": "0.0.0.0/0", "nextHopType": "Internet"}"#;

#[test]
fn nsg_3_lenient_keeps_a_non_address_as_unresolvable() {
    let text = r#"{"name": "n", "type": "Microsoft.Network/networkSecurityGroups", "properties": {"securityRules": [
        {"name": "web", "properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "80",
         "sourceAddressPrefix": "789", "destinationAddressPrefixes": ["Internet"], "access": "Allow", "priority": 100, "direction": "Inbound"}}]}}"#;
    let f = import("n.json", text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let r = &f.network.network_security_groups[0].security_rules[0];
    assert_eq!(
        r.source.address_prefixes,
        vec![AddressItem::Unresolvable("789".into())]
    );
    // A tag in a plural field is kept the same way (NSG-2.4, NSG-3).
    assert_eq!(
        r.destination.address_prefixes,
        vec![AddressItem::Unresolvable("Internet".into())]
    );
    assert_eq!(
        f.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count(),
        2
    );
    let strict = ImportOptions {
        strict: true,
        ..ImportOptions::default()
    };
    let f = import_text("n.json", text, &strict, None);
    assert_eq!(f.diagnostics.errors().count(), 2, "{}", f.diagnostics);
}

#[test]
fn fmt_6_child_inline_and_separate_the_separate_one_wins() {
    let text = template(&format!(
        r#"{{"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {{"routes": [{{"name": "r", "properties": {ROUTE}}}]}}}},
           {{"type": "Microsoft.Network/routeTables/routes", "name": "rt/r", "properties": {{"addressPrefix": "10.0.0.0/8", "nextHopType": "None"}}}}"#
    ));
    let f = import("t.json", &text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let rt = &f.network.route_tables[0];
    assert_eq!(rt.routes.len(), 1);
    assert_eq!(rt.routes[0].next_hop_type, NextHopType::None);
    assert_eq!(f.set_aside.superseded.routes, 1);
    assert!(f
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Warning && d.message.contains("both inline")));
    let strict = ImportOptions {
        strict: true,
        ..ImportOptions::default()
    };
    let f = import_text("t.json", &text, &strict, None);
    assert!(
        f.diagnostics
            .errors()
            .any(|d| d.message.contains("both inline")),
        "{}",
        f.diagnostics
    );
}

#[test]
fn fmt_6_a_child_may_come_before_its_parent() {
    let text = template(&format!(
        r#"{{"type": "Microsoft.Network/routeTables/routes", "name": "rt/r", "properties": {ROUTE}}},
           {{"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {{"disableBgpRoutePropagation": true}}}}"#
    ));
    let f = import("t.json", &text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert_eq!(f.network.route_tables.len(), 1);
    assert!(f.network.route_tables[0].disable_bgp_route_propagation);
    assert_eq!(f.network.route_tables[0].routes.len(), 1);
}

#[test]
fn fmt_5_a_resource_redeployed_by_a_nested_deployment_is_merged() {
    // The route is added once the appliance exists (AzureStack ethereum, nested-vms templates).
    let text = template(&format!(
        r#"{{"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {{"routes": []}}}},
           {{"type": "Microsoft.Resources/deployments", "name": "update", "properties": {{"mode": "Incremental", "template": {{
             "resources": [{{"type": "Microsoft.Network/routeTables", "name": "rt", "properties": {{"routes": [{{"name": "r", "properties": {ROUTE}}}]}}}}]}}}}}}"#
    ));
    let f = import("t.json", &text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert_eq!(f.network.route_tables.len(), 1);
    assert_eq!(f.network.route_tables[0].routes.len(), 1);
    assert!(f
        .diagnostics
        .iter()
        .any(|d| d.message.starts_with("declared again")));
}

#[test]
fn fmt_4_children_of_a_parent_with_an_unresolved_name() {
    // A nested child's name is `<parent expression>/<child>`: it still finds its parent. A name
    // built by `concat` from unknown parts cannot: lenient keeps it apart with a warning.
    let text = template(
        r#"{"type": "Microsoft.Network/firewallPolicies", "name": "[parameters('p')]", "resources": [
              {"type": "ruleCollectionGroups", "name": "g", "properties": {"priority": 100, "ruleCollections": []}}]},
           {"type": "Microsoft.Network/virtualNetworks/virtualNetworkPeerings", "name": "[concat(parameters('p'), '/x')]", "properties": {}}"#,
    );
    let f = import("t.json", &text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert_eq!(f.network.firewall_policies.len(), 1);
    assert_eq!(
        f.network.firewall_policies[0].rule_collection_groups.len(),
        1
    );
    assert!(f.diagnostics.iter().any(|d| d
        .message
        .contains("parent of this child resource is unknown")));
}

#[test]
fn fmt_12_resources_of_a_linked_template_are_located_in_it() {
    let dir = std::env::temp_dir().join(format!("palisade-linked-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let main = template(
        r#"{"type": "Microsoft.Resources/deployments", "name": "d", "properties": {"mode": "Incremental",
             "templateLink": {"relativePath": "nested/nsg.json"}}}"#,
    );
    let nested = template(
        r#"{"type": "Microsoft.Network/networkSecurityGroups", "name": "n", "properties": {"securityRules": [
             {"name": "r", "properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "80",
              "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "access": "Allow", "priority": 100, "direction": "Sideways"}}]}}"#,
    );
    std::fs::write(dir.join("main.json"), main).unwrap();
    std::fs::write(dir.join("nested/nsg.json"), nested).unwrap();
    let imported = load(&[dir.join("main.json")], &ImportOptions::default());
    std::fs::remove_dir_all(&dir).unwrap();
    let e = imported
        .diagnostics
        .errors()
        .next()
        .expect("the bad direction");
    assert!(e.file.ends_with("nested/nsg.json"), "{e}");
    assert_eq!(e.line, Some(3)); // in the linked file (the main one has two lines)
    assert_eq!(
        e.pointer,
        "/resources/0/properties/securityRules/0/properties/direction"
    );
}

#[test]
fn fmt_10_observations_and_defaults_are_set_aside() {
    let view = r#"{"networkInterfaces": [{"id": "/x/networkInterfaces/nic1", "securityRuleAssociations": {
        "subnetAssociation": {"id": "s", "securityRules": [{"name": "a"}]},
        "defaultSecurityRules": [{"name": "AllowVnetInBound"}, {"name": "DenyAllInBound"}],
        "effectiveSecurityRules": [{"name": "b"}]}}]}"#;
    let f = import("view.json", view);
    assert_eq!(f.kind, InputKind::Observation);
    assert_eq!(
        (
            f.set_aside.observed_rules,
            f.set_aside.default_rules_in_arrays
        ),
        (2, 2)
    );
    let default = r#"{"name": "AllowVnetInBound", "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkSecurityGroups/n/defaultSecurityRules/AllowVnetInBound",
        "properties": {"access": "Allow", "direction": "Inbound", "priority": 65000}}"#;
    let f = import("d.json", default);
    assert_eq!(f.set_aside.default_rule_resources, 1);
    assert!(f.network.network_security_groups.is_empty());
}

#[test]
fn fmt_8_virtual_hub_route_tables_are_set_aside() {
    let text = template(
        r#"{"type": "Microsoft.Network/virtualHubs/hubRouteTables", "name": "hub/rt", "properties": {"routes": [
             {"name": "a", "destinationType": "CIDR", "destinations": ["10.0.0.0/8"], "nextHopType": "ResourceId", "nextHop": "/x"}]}}"#,
    );
    let f = import("t.json", &text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert_eq!(f.set_aside.hub_routes, 1);
    assert!(f.network.route_tables.is_empty());
}

#[test]
fn fmt_9_rule_groups_by_shape() {
    // An id that says `ruleGroups` over the rule collection group shape (2020-11-01 examples).
    let rcg = r#"{"name": "g", "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/firewallPolicies/p/ruleGroups/g",
        "properties": {"priority": 110, "ruleCollections": [{"ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "c",
        "priority": 200, "action": {"type": "Deny"}, "rules": [{"ruleType": "NetworkRule", "name": "r", "ipProtocols": ["TCP"],
        "sourceAddresses": ["*"], "destinationAddresses": ["*"], "destinationPorts": ["*"]}]}]}}"#;
    let f = import("g.json", rcg);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert_eq!(f.network.counts().firewall_rules, 1);
    assert_eq!(f.network.firewall_policies[0].name, "p");
    // The pre-2020 shape (`rules` in the group, conditions in the rules) is read, with a warning.
    let legacy = r#"{"name": "g", "type": "Microsoft.Network/firewallPolicies/ruleGroups", "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/firewallPolicies/p/ruleGroups/g",
        "properties": {"priority": 100, "rules": [
        {"name": "net", "priority": 200, "ruleType": "FirewallPolicyFilterRule", "action": {"type": "Deny"},
         "ruleConditions": [{"name": "a", "ruleConditionType": "NetworkRuleCondition", "ipProtocols": ["TCP"],
           "sourceAddresses": ["*"], "destinationAddresses": ["10.0.0.0/8"], "destinationPorts": ["22"]},
          {"name": "b", "ruleConditionType": "NetworkRuleCondition", "ipProtocols": ["UDP"],
           "sourceAddresses": ["*"], "destinationAddresses": ["*"], "destinationPorts": ["53"]}]},
        {"name": "dnat", "priority": 100, "ruleType": "FirewallPolicyNatRule", "action": {"type": "Dnat"},
         "ruleCondition": {"name": "web", "ruleConditionType": "NetworkRuleCondition", "ipProtocols": ["TCP"],
           "sourceAddresses": ["*"], "destinationAddresses": ["20.1.2.3"], "destinationPorts": ["443"]},
         "translatedAddress": "10.0.0.4", "translatedPort": "8443"}]}}"#;
    let f = import("l.json", legacy);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert!(f
        .diagnostics
        .0
        .iter()
        .any(|d| d.severity == Severity::Warning && d.message.contains("deprecated")));
    let g = &f.network.firewall_policies[0].rule_collection_groups[0];
    assert_eq!((g.name.as_str(), g.priority), ("g", 100));
    assert_eq!(g.rule_collections.len(), 2);
    let net = &g.rule_collections[0];
    assert_eq!(
        (net.kind, net.priority, net.action, net.rules.len()),
        (RuleCollectionKind::Network, 200, FirewallAction::Deny, 2)
    );
    let nat = &g.rule_collections[1];
    assert_eq!(nat.kind, RuleCollectionKind::Nat);
    assert_eq!(nat.rules[0].translated_port, Some(8443));
    assert!(nat.rules[0].translated_address.is_some());
}

#[test]
fn a_lone_rule_collection_is_held_in_an_unnamed_group() {
    let text = r#"{"name": "AllowWeb", "priority": 201, "ruleCollectionType": "FirewallPolicyFilterRuleCollection",
        "action": {"type": "Allow"}, "rules": [{"ruleType": "ApplicationRule", "name": "web",
        "protocols": [{"protocolType": "Https", "port": 443}], "targetFqdns": ["*.example.com"], "sourceAddresses": ["*"]}]}"#;
    let f = import("snippet.json", text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let p = &f.network.firewall_policies[0];
    assert_eq!(
        (p.name.as_str(), p.rule_collection_groups[0].name.as_str()),
        ("", "")
    );
    assert_eq!(
        p.rule_collection_groups[0].rule_collections[0].name,
        "AllowWeb"
    );
}

#[test]
fn building_blocks_parameter_files() {
    let text = r#"{"$schema": "https://raw.githubusercontent.com/mspnp/template-building-blocks/master/schemas/buildingBlocks.json",
      "parameters": {"buildingBlocks": {"value": [
        {"type": "VirtualNetwork", "settings": [{"name": "v", "addressPrefixes": ["10.0.0.0/16"], "subnets": [{"name": "web", "addressPrefix": "10.0.1.0/24"}]}]},
        {"type": "NetworkSecurityGroup", "settings": [{"name": "web-nsg", "virtualNetworks": [{"name": "v", "subnets": ["web"]}],
          "securityRules": [{"name": "http", "direction": "Inbound", "priority": 100, "sourceAddressPrefix": "*", "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": 80, "access": "Allow", "protocol": "TCP"}]}]},
        {"type": "RouteTable", "settings": {"name": "rt", "virtualNetworks": [{"name": "v", "subnets": ["web"]}],
          "routes": [{"name": "fw", "addressPrefix": "0.0.0.0/0", "nextHop": "10.0.4.4"}, {"name": "local", "addressPrefix": "10.0.0.0/16", "nextHop": "VnetLocal"}]}},
        {"type": "Template", "settings": {"template": {"resources": [{"type": "Microsoft.Network/virtualNetworks/subnets", "name": "v/extra",
          "properties": {"addressPrefix": "10.0.2.0/24"}}]}}},
        {"type": "VirtualMachine", "settings": {"namePrefix": "vm"}}]}}}"#;
    let f = import("bb.json", text);
    assert_eq!(f.kind, InputKind::BuildingBlocks);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let v = &f.network.virtual_networks[0];
    assert_eq!(v.subnets.len(), 2);
    assert_eq!(
        v.subnets[0].network_security_group.as_deref(),
        Some("web-nsg")
    );
    assert_eq!(v.subnets[0].route_table.as_deref(), Some("rt"));
    let rt = &f.network.route_tables[0];
    assert_eq!(rt.routes[0].next_hop_type, NextHopType::VirtualAppliance);
    assert_eq!(rt.routes[1].next_hop_type, NextHopType::VnetLocal);
    assert_eq!(f.network.counts().security_rules, 1);
}

#[test]
fn fmt_7_an_empty_prefix_is_absent() {
    let text = template(
        r#"{"type": "Microsoft.Network/virtualNetworks", "name": "v", "properties": {"addressSpace": {"addressPrefixes": [""]}}}"#,
    );
    let f = import("t.json", &text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert!(f.network.virtual_networks[0].address_space.is_empty());
}

#[test]
fn fmt_6_inline_and_separate_across_files() {
    let dir = std::env::temp_dir().join(format!("palisade-fmt6-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vnet = template(
        r#"{"type": "Microsoft.Network/virtualNetworks", "name": "v", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
             "subnets": [{"name": "web", "properties": {"addressPrefix": "10.0.1.0/24"}}]}}"#,
    );
    let update = template(
        r#"{"type": "Microsoft.Network/virtualNetworks/subnets", "name": "v/web", "properties": {"addressPrefix": "10.0.1.0/24",
             "networkSecurityGroup": {"id": "/x/networkSecurityGroups/web-nsg"}}}"#,
    );
    std::fs::write(dir.join("a.json"), vnet).unwrap();
    std::fs::write(dir.join("b.json"), update).unwrap();
    let imported = load(std::slice::from_ref(&dir), &ImportOptions::default());
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!imported.has_errors(), "{}", imported.diagnostics);
    let v = imported
        .network
        .virtual_networks
        .iter()
        .find(|v| v.name == "v")
        .unwrap();
    assert_eq!(v.subnets.len(), 1);
    assert_eq!(
        v.subnets[0].network_security_group.as_deref(),
        Some("web-nsg")
    );
    assert!(imported
        .diagnostics
        .iter()
        .any(|d| d.message.contains("both inline")));
}

#[test]
fn fmt_3_keys_differing_only_in_case_are_an_error() {
    let f = import(
        "dup.json",
        r#"{"name": "nsg", "Name": "other", "type": "Microsoft.Network/networkSecurityGroups", "properties": {}}"#,
    );
    let e: Vec<&Diagnostic> = f.diagnostics.errors().collect();
    assert_eq!(e.len(), 1, "{}", f.diagnostics);
    assert_eq!(e[0].pointer, "/Name");
    assert_eq!(e[0].line, Some(1));
}

#[test]
fn fmt_1_a_top_level_list_of_non_resources_is_an_error() {
    for (file, text) in [("list.yaml", "- a\n- b\n"), ("list.json", "[\"a\", 1]")] {
        let f = import(file, text);
        assert_eq!(
            f.diagnostics.errors().count(),
            2,
            "{file}: {}",
            f.diagnostics
        );
        let d = f.diagnostics.errors().next().unwrap();
        assert_eq!((d.file.as_str(), d.pointer.as_str()), (file, "/0"));
        assert!(d.to_string().contains("resource object"), "{d}");
    }
    // CLI output: a list of resources (here none) stays valid.
    assert!(!import("empty.json", "[]").diagnostics.has_errors());
}

#[test]
fn fmt_1_a_lone_child_body_takes_its_parent_from_the_id() {
    let body = r#"{"name": "r1", "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/routeTables/rt/routes/r1",
        "properties": {"addressPrefix": "10.0.3.0/24", "nextHopType": "None"}}"#;
    let f = import("route.json", body);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert_eq!(f.network.route_tables[0].name, "rt");
    assert_eq!(f.network.route_tables[0].routes[0].name, "r1");
}

/// An NSG holding one Deny rule whose source is `prefix`.
fn deny_from(prefix: &str) -> String {
    format!(
        r#"{{"name": "n", "type": "Microsoft.Network/networkSecurityGroups", "properties": {{"securityRules": [
        {{"name": "block", "properties": {{"protocol": "*", "sourcePortRange": "*", "destinationPortRange": "*",
         "sourceAddressPrefix": "{prefix}", "destinationAddressPrefix": "*", "access": "Deny", "priority": 100, "direction": "Inbound"}}}}]}}}}"#
    )
}

/// NSG-3, issue 17: address-shaped text that is not a valid address is malformed input, an
/// error at its location in lenient mode too; the rule is left out and listed as such, never
/// kept as "matches nothing" (which would make a Deny deny nothing). Contrast
/// `nsg_3_lenient_keeps_a_non_address_as_unresolvable`.
#[test]
fn nsg_3_malformed_prefix_is_an_error_even_lenient() {
    for bad in ["10.0.0.0/33", "300.1.2.3/24", "2001:db8::/129"] {
        let f = import("n.json", &deny_from(bad));
        let errors: Vec<&Diagnostic> = f.diagnostics.errors().collect();
        assert_eq!(errors.len(), 1, "{bad}: {}", f.diagnostics);
        let e = errors[0];
        assert_eq!(
            e.pointer, "/properties/securityRules/0/properties/sourceAddressPrefix",
            "{bad}"
        );
        assert_eq!((e.line, e.found.as_deref()), (Some(3), Some(bad)), "{bad}");
        assert!(e.column.is_some(), "{bad}");
        assert!(f.network.network_security_groups[0]
            .security_rules
            .is_empty());
        assert_eq!(f.dropped.len(), 1, "{bad}");
        assert_eq!(
            (f.dropped[0].kind.as_str(), f.dropped[0].name.as_str()),
            ("securityRules", "n/block")
        );
    }
}

/// FMT-12, issue 17: a list field that is not a list is an error at the field, not an empty
/// list (which would drop every rule without a word).
#[test]
fn fmt_12_a_list_field_of_the_wrong_type_is_an_error() {
    let text = r#"{"name": "n", "type": "Microsoft.Network/networkSecurityGroups",
        "properties": {"securityRules": "notalist"}}"#;
    let f = import("n.json", text);
    let e: Vec<&Diagnostic> = f.diagnostics.errors().collect();
    assert_eq!(e.len(), 1, "{}", f.diagnostics);
    assert_eq!(e[0].pointer, "/properties/securityRules");
    assert_eq!(e[0].line, Some(2));
    assert_eq!(e[0].found.as_deref(), Some("notalist"));
    let text = r#"{"name": "rt", "type": "Microsoft.Network/routeTables", "properties": {"routes": {"name": "r"}}}"#;
    let f = import("rt.json", text);
    assert_eq!(f.diagnostics.errors().count(), 1, "{}", f.diagnostics);
}

/// FMT-12, issue 17: a network resource whose `properties` is not an object is an error, not an
/// empty resource; other types are not read, so their `properties` are not checked.
#[test]
fn fmt_12_properties_that_are_not_an_object_are_an_error() {
    for props in ["null", "\"x\"", "[]", "3"] {
        let text = format!(
            r#"{{"name": "n", "type": "Microsoft.Network/networkSecurityGroups", "properties": {props}}}"#
        );
        let f = import("n.json", &text);
        let e: Vec<&Diagnostic> = f.diagnostics.errors().collect();
        assert_eq!(e.len(), 1, "{props}: {}", f.diagnostics);
        assert_eq!(e[0].pointer, "/properties", "{props}");
        assert_eq!(e[0].line, Some(1), "{props}");
        assert!(f.network.network_security_groups.is_empty(), "{props}");
    }
    let vm = r#"{"name": "vm", "type": "Microsoft.Compute/virtualMachines", "properties": null}"#;
    assert!(!import("vm.json", vm).diagnostics.has_errors());
}

/// Issue 17: the warning about a file with nothing Palisade reads names the type it found.
#[test]
fn an_unknown_resource_type_is_named() {
    let text =
        r#"{"name": "x", "type": "Microsoft.Network/networkSecurityGroup", "properties": {}}"#;
    let f = import("x.json", text);
    let w: Vec<String> = f.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        w.iter().any(|w| w.starts_with("warning:")
            && w.contains("`Microsoft.Network/networkSecurityGroup` is not modelled")),
        "{w:?}"
    );
}

/// FMT-2, issue 17: text that is not UTF-8 (here a Latin-1 rule name) is an error located at
/// the first bad byte, not silently replaced.
#[test]
fn fmt_2_text_that_is_not_utf8_is_a_located_error() {
    let dir = std::env::temp_dir().join(format!("palisade-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("n.json");
    let mut bytes = deny_from("10.0.0.0/8")
        .replace("block", "bl\u{1}ck")
        .into_bytes();
    let at = bytes.iter().position(|b| *b == 1).unwrap();
    bytes[at] = 0xF6; // `ö` in Latin-1
    std::fs::write(&path, bytes).unwrap();
    let imported = load(std::slice::from_ref(&path), &ImportOptions::default());
    std::fs::remove_dir_all(&dir).unwrap();
    let e: Vec<&Diagnostic> = imported.diagnostics.errors().collect();
    assert_eq!(e.len(), 1, "{}", imported.diagnostics);
    assert_eq!(e[0].file, path.display().to_string());
    assert_eq!((e[0].line, e[0].column), (Some(2), Some(21)), "{}", e[0]);
    assert!(e[0].message.contains("not valid UTF-8"), "{}", e[0]);
    assert_eq!(e[0].found.as_deref(), Some("{\"name\": \"bl\u{FFFD}"));
}

/// NSG-3 / FW-5, issue 17: a malformed address in an IP group or a firewall rule is an error in
/// lenient mode too (an inverted range, a prefix longer than the family allows).
#[test]
fn fw_5_malformed_addresses_are_errors_even_lenient() {
    let ipg = r#"{"name": "g", "type": "Microsoft.Network/ipGroups", "properties": {"ipAddresses": ["10.0.0.9-10.0.0.1"]}}"#;
    let f = import("g.json", ipg);
    let e: Vec<&Diagnostic> = f.diagnostics.errors().collect();
    assert_eq!(e.len(), 1, "{}", f.diagnostics);
    assert_eq!(e[0].pointer, "/properties/ipAddresses/0");
    let placeholder = ipg.replace("10.0.0.9-10.0.0.1", "xx.xx.xx.xx/yy");
    assert!(!import("g.json", &placeholder).diagnostics.has_errors());
}

/// FMT-1: a scenario's `flows.yaml` beside its network is not a network; loading the folder
/// notes it without a warning, while another unrecognised body still warns.
#[test]
fn fmt_1_a_flows_file_is_noted_not_warned() {
    let f = import(
        "flows.yaml",
        "flows:\n  - {source: 10.0.0.4, destination: 10.0.1.4, port: 443}\n",
    );
    assert!(f.network.is_empty());
    assert!(
        f.diagnostics.iter().all(|d| d.severity == Severity::Note),
        "{}",
        f.diagnostics
    );
    assert_eq!(f.diagnostics.len(), 1);
    let other = import("other.yaml", "stuff:\n  - 1\n");
    assert!(
        other
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning),
        "{}",
        other.diagnostics
    );
}

fn address_check_yaml(firewall: &str, collection: &str, rule: &str) -> String {
    format!(
        "apiVersion: palisade/v1\nazureFirewalls:\n  - name: fw\n    {firewall}\n    applicationRuleCollections:\n      - name: web\n        priority: 200\n        action: {{type: Allow}}\n        {collection}\n        rules:\n          - {{name: a, sourceAddresses: ['*'], protocols: ['Https:443'], targetFqdns: [a.test], {rule}}}\n"
    )
}

#[test]
fn pal_5_2_address_check_per_firewall_collection_and_rule() {
    // spec PAL-5.2: `addressCheck` per firewall and per rule, in the native YAML.
    let f = import(
        "fw.yaml",
        &address_check_yaml(
            "palisade: {addressCheck: audit}",
            "palisade: {addressCheck: Enforce}",
            "palisade: {addressCheck: Off}",
        ),
    );
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let fw = &f.network.azure_firewalls[0];
    assert_eq!(fw.settings.address_check, Some(AddressCheck::Audit));
    let c = &fw.rule_collections[0];
    assert_eq!(c.palisade.address_check, Some(AddressCheck::Enforce));
    assert_eq!(c.rules[0].palisade.address_check, Some(AddressCheck::Off));

    let f = import("fw.yaml", &address_check_yaml("location: x", "", ""));
    let fw = &f.network.azure_firewalls[0];
    assert_eq!(fw.settings.address_check, None);
    assert_eq!(fw.rule_collections[0].rules[0].palisade.address_check, None);
}

#[test]
fn pal_5_2_address_check_as_an_arm_extension_property() {
    // spec PAL-5.2 / FMT-11: the same setting under `properties.palisade` of a policy and rule.
    let text = r#"{"name": "pol", "type": "Microsoft.Network/firewallPolicies", "properties": {
        "palisade": {"addressCheck": "Off"},
        "ruleCollectionGroups": [{"name": "g", "properties": {"priority": 100, "ruleCollections": [
          {"name": "web", "priority": 200, "ruleCollectionType": "FirewallPolicyFilterRuleCollection",
           "action": {"type": "Allow"}, "rules": [
             {"name": "a", "ruleType": "ApplicationRule", "sourceAddresses": ["*"],
              "protocols": [{"protocolType": "Https", "port": 443}], "targetFqdns": ["a.test"],
              "palisade": {"addressCheck": "Audit"}}]}]}}]}}"#;
    let f = import("pol.json", text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let p = &f.network.firewall_policies[0];
    assert_eq!(p.settings.address_check, Some(AddressCheck::Off));
    let rule = &p.rule_collection_groups[0].rule_collections[0].rules[0];
    assert_eq!(rule.palisade.address_check, Some(AddressCheck::Audit));
}

#[test]
fn pal_5_2_a_bad_address_check_names_the_allowed_values() {
    for (fw, rule) in [
        ("palisade: {addressCheck: sometimes}", ""),
        ("location: x", "palisade: {addressCheck: 3}"),
    ] {
        let f = import("fw.yaml", &address_check_yaml(fw, "", rule));
        let text = f.diagnostics.to_string();
        assert_eq!(f.diagnostics.errors().count(), 1, "{text}");
        for part in [
            "fw.yaml",
            "palisade.addressCheck",
            "`Enforce`, `Audit` or `Off`",
        ] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
    }
}

proptest::proptest! {
    #[test]
    fn pal_5_2_address_check_reads_exactly_the_three_values(value in "[A-Za-z]{0,8}") {
        let f = import("fw.yaml", &address_check_yaml(&format!("palisade: {{addressCheck: '{value}'}}"), "", ""));
        let expected = match value.to_ascii_lowercase().as_str() {
            "enforce" => Some(AddressCheck::Enforce),
            "audit" => Some(AddressCheck::Audit),
            "off" => Some(AddressCheck::Off),
            _ => None,
        };
        // An empty value is absent (FMT-7), anything else unknown is an error.
        proptest::prop_assert_eq!(f.diagnostics.has_errors(), expected.is_none() && !value.is_empty());
        proptest::prop_assert_eq!(f.network.azure_firewalls[0].settings.address_check, expected);
    }
}

#[test]
fn pal_5_2_the_documented_address_check_example() {
    let doc = include_str!("../../../../docs/native-yaml.md");
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/native-yaml.md has a yaml example");
    let f = import("example.yaml", yaml);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let fw = &f.network.azure_firewalls[0];
    assert_eq!(fw.settings.address_check, Some(AddressCheck::Enforce));
    let web = fw.rule_collections.iter().find(|c| c.name == "allow-web");
    let rules = &web.expect("the allow-web collection").rules;
    assert_eq!(rules[0].palisade.address_check, None);
    assert_eq!(rules[1].palisade.address_check, Some(AddressCheck::Off));
}

fn mode_yaml(nsg_rule: &str, net_rule: &str, nat_collection: &str) -> String {
    format!(
        r#"apiVersion: palisade/v1
networkSecurityGroups:
  - name: nsg
    securityRules:
      - {{name: r, priority: 100, direction: Inbound, access: Deny, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '22', {nsg_rule}}}
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4}}]
    networkRuleCollections:
      - name: net
        priority: 100
        action: {{type: Allow}}
        rules: [{{name: n, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['53'], {net_rule}}}]
    natRuleCollections:
      - name: nat
        priority: 100
        action: {{type: Dnat}}
        {nat_collection}
        rules: [{{name: d, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], destinationPorts: ['2222'], translatedAddress: 10.0.2.4, translatedPort: '22'}}]
"#
    )
}

#[test]
fn pal_5_3_mode_on_nsg_rules_firewall_rules_and_collections() {
    // spec PAL-5.3 / FMT-11: `palisade: {mode: Audit}` in the native YAML.
    let f = import(
        "modes.yaml",
        &mode_yaml(
            "palisade: {mode: Audit}",
            "palisade: {mode: audit}",
            "palisade: {mode: AUDIT}",
        ),
    );
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let nsg = &f.network.network_security_groups[0];
    assert_eq!(nsg.security_rules[0].palisade.mode, RuleMode::Audit);
    let fw = &f.network.azure_firewalls[0];
    let by_name = |n: &str| fw.rule_collections.iter().find(|c| c.name == n).unwrap();
    assert_eq!(by_name("net").rules[0].palisade.mode, RuleMode::Audit);
    assert_eq!(by_name("nat").palisade.mode, RuleMode::Audit);
    assert_eq!(by_name("nat").rules[0].palisade.mode, RuleMode::Enforce);
    // Absent: Enforce.
    let f = import("modes.yaml", &mode_yaml("", "", ""));
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    assert_eq!(
        f.network.network_security_groups[0].security_rules[0]
            .palisade
            .mode,
        RuleMode::Enforce
    );
}

#[test]
fn pal_5_3_mode_as_an_arm_extension_property() {
    // spec FMT-11: JSON `properties.palisade.mode` on a security rule.
    let text = r#"{"name": "nsg", "type": "Microsoft.Network/networkSecurityGroups", "properties": {
        "securityRules": [{"name": "candidate", "properties": {"priority": 100, "direction": "Inbound",
          "access": "Deny", "protocol": "Tcp", "sourceAddressPrefix": "*", "sourcePortRange": "*",
          "destinationAddressPrefix": "*", "destinationPortRange": "22",
          "palisade": {"mode": "Audit"}}}]}}"#;
    let f = import("nsg.json", text);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    let r = &f.network.network_security_groups[0].security_rules[0];
    assert_eq!(r.palisade.mode, RuleMode::Audit);
}

#[test]
fn pal_5_3_a_bad_mode_is_a_located_error_naming_the_values() {
    for (nsg_rule, net_rule, nat, resource) in [
        ("palisade: {mode: Dry}", "", "", "nsg"),
        ("", "palisade: {mode: 1}", "", "fw"),
        ("", "", "palisade: {mode: Shadow}", "fw"),
    ] {
        let f = import("modes.yaml", &mode_yaml(nsg_rule, net_rule, nat));
        let text = f.diagnostics.to_string();
        assert_eq!(f.diagnostics.errors().count(), 1, "{text}");
        for part in [
            "modes.yaml",
            "palisade.mode",
            "`Enforce` or `Audit`",
            resource,
        ] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
    }
}

proptest::proptest! {
    #[test]
    fn pal_5_3_mode_reads_exactly_the_two_values(value in "[A-Za-z]{1,8}") {
        let f = import("modes.yaml", &mode_yaml(&format!("palisade: {{mode: '{value}'}}"), "", ""));
        let expected = match value.to_ascii_lowercase().as_str() {
            "enforce" => Some(RuleMode::Enforce),
            "audit" => Some(RuleMode::Audit),
            _ => None,
        };
        proptest::prop_assert_eq!(f.diagnostics.has_errors(), expected.is_none());
        if let Some(m) = expected {
            proptest::prop_assert_eq!(f.network.network_security_groups[0].security_rules[0].palisade.mode, m);
        }
    }
}
