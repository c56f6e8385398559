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
    let f = import("bad.json", text);
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
