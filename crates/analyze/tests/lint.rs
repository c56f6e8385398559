//! Lint checks on small fixtures, each with the finding it must raise and a near variant that
//! must not raise it.

use palisade_analyze::lint::{lint, Finding};
use palisade_model::catalog::Catalogs;
use palisade_model::import::import_text;
use palisade_model::ImportOptions;
use palisade_policy::{CompileOptions, Snapshot};

fn findings(yaml: &str) -> Vec<Finding> {
    let f = import_text("fixture.yaml", yaml, &ImportOptions::default(), None);
    assert!(!f.diagnostics.has_errors(), "{}", f.diagnostics);
    lint(&Snapshot::compile(
        &f.network,
        &Catalogs::embedded(),
        &CompileOptions::default(),
    ))
}

fn codes(f: &[Finding], rule: &str) -> Vec<&'static str> {
    f.iter()
        .filter(|x| x.rule.as_deref() == Some(rule))
        .map(|x| x.code)
        .collect()
}

const HEAD: &str = "apiVersion: palisade/v1\nvirtualNetworks:\n  - {name: v, addressSpace: [10.0.0.0/16], subnets: [{name: s, addressPrefix: 10.0.1.0/24, networkSecurityGroup: nsg}]}\nnetworkSecurityGroups:\n  - name: nsg\n    securityRules:\n";

fn rule(name: &str, prio: u32, access: &str, proto: &str, src: &str, port: &str) -> String {
    format!("      - {{name: {name}, priority: {prio}, direction: Inbound, access: {access}, protocol: '{proto}', sourceAddressPrefix: '{src}', destinationAddressPrefix: '*', destinationPortRange: '{port}'}}\n")
}

/// NSG-5.1: a rule entirely covered by an earlier rule of the other access never decides.
#[test]
fn shadowed_and_redundant_rules() {
    let y = format!(
        "{HEAD}{}{}{}",
        rule("deny-web", 100, "Deny", "*", "10.0.0.0/8", "80-443"),
        rule("allow-https", 200, "Allow", "Tcp", "10.1.0.0/16", "443"),
        rule("deny-again", 300, "Deny", "Tcp", "10.2.0.0/16", "80")
    );
    let f = findings(&y);
    assert_eq!(codes(&f, "allow-https"), vec!["shadowed-rule"]);
    assert_eq!(codes(&f, "deny-again"), vec!["redundant-rule"]);
    // One port outside the earlier rule: not covered, no finding.
    let y = format!(
        "{HEAD}{}{}",
        rule("deny-web", 100, "Deny", "*", "10.0.0.0/8", "80-443"),
        rule("allow-https", 200, "Allow", "Tcp", "10.1.0.0/16", "443-444")
    );
    assert!(codes(&findings(&y), "allow-https").is_empty());
}

#[test]
fn management_and_database_ports_open_to_internet() {
    let f = findings(&format!(
        "{HEAD}{}",
        rule("ssh", 100, "Allow", "Tcp", "*", "22")
    ));
    assert_eq!(codes(&f, "ssh"), vec!["open-to-internet"]);
    let f = findings(&format!(
        "{HEAD}{}",
        rule("sql", 100, "Allow", "Tcp", "Internet", "1433")
    ));
    assert_eq!(codes(&f, "sql"), vec!["open-to-internet"]);
    let f = findings(&format!(
        "{HEAD}{}",
        rule("ssh", 100, "Allow", "Tcp", "10.0.0.0/24", "22")
    ));
    assert!(codes(&f, "ssh").is_empty());
}

#[test]
fn rules_that_can_never_match() {
    let y = format!("{HEAD}      - {{name: mixed, priority: 100, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '10.0.0.0/8', destinationAddressPrefix: '2001:db8::/32', destinationPortRange: '443'}}\n");
    assert_eq!(codes(&findings(&y), "mixed"), vec!["rule-never-matches"]);
}

#[test]
fn subnet_without_nsg_and_platform_subnets() {
    let y = "apiVersion: palisade/v1\nvirtualNetworks:\n  - {name: v, addressSpace: [10.0.0.0/16], subnets: [{name: app, addressPrefix: 10.0.1.0/24}, {name: AzureFirewallSubnet, addressPrefix: 10.0.2.0/26}]}\n";
    let f = findings(y);
    let subnets: Vec<&str> = f
        .iter()
        .filter(|x| x.code == "subnet-without-nsg")
        .map(|x| x.resource.as_str())
        .collect();
    assert_eq!(subnets, vec!["v/app"]);
}

#[test]
fn fw_6_3_raw_suffix_and_protocol_port_mismatch() {
    let y = "apiVersion: palisade/v1\nazureFirewalls:\n  - name: fw\n    applicationRuleCollections:\n      - name: c\n        priority: 100\n        action: {type: Allow}\n        rules:\n          - {name: raw, sourceAddresses: ['*'], protocols: ['Https:443'], targetFqdns: ['*example.com']}\n          - {name: wrong-port, sourceAddresses: ['*'], protocols: ['Https:80'], targetFqdns: ['*.example.com']}\n";
    let f = findings(y);
    assert_eq!(codes(&f, "c/raw"), vec!["raw-suffix-wildcard"]);
    assert_eq!(codes(&f, "c/wrong-port"), vec!["fqdn-rule-on-unused-port"]);
}

/// FW-4: DNAT matches TCP and UDP only. A DNAT rule naming ICMP is warned about, in the field
/// its schema names (`protocols` classic, `ipProtocols` policy), saying what the ICMP does;
/// `Any` and TCP/UDP rules are not.
#[test]
fn fw_4_dnat_rule_naming_icmp() {
    let y = "apiVersion: palisade/v1\nazureFirewalls:\n  - name: fw\n    natRuleCollections:\n      - name: in\n        priority: 100\n        action: {type: Dnat}\n        rules:\n          - {name: mixed, protocols: [TCP, ICMP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], destinationPorts: ['2222'], translatedAddress: 10.0.2.4, translatedPort: '22'}\n          - {name: ping, protocols: [ICMP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], translatedAddress: 10.0.2.5}\n          - {name: any, protocols: [Any], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], destinationPorts: ['8080'], translatedAddress: 10.0.2.6, translatedPort: '80'}\n          - {name: tcp-udp, protocols: [TCP, UDP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], destinationPorts: ['53'], translatedAddress: 10.0.2.7}\n";
    let f = findings(y);
    assert_eq!(codes(&f, "in/mixed"), vec!["dnat-icmp"]);
    assert_eq!(codes(&f, "in/ping"), vec!["dnat-icmp"]);
    assert!(codes(&f, "in/any").is_empty());
    assert!(codes(&f, "in/tcp-udp").is_empty());
    let at = |rule: &str| f.iter().find(|x| x.rule.as_deref() == Some(rule)).unwrap();
    let mixed = at("in/mixed");
    assert_eq!(
        (mixed.file.as_str(), mixed.resource.as_str()),
        ("fixture.yaml", "fw")
    );
    assert!(!mixed.pointer.is_empty());
    for needle in [
        "`mixed`",
        "`protocols`",
        "TCP and UDP only (FW-4)",
        "not translated",
    ] {
        assert!(
            mixed.message.contains(needle),
            "{needle}: {}",
            mixed.message
        );
    }
    assert!(
        at("in/ping").message.contains("never matches"),
        "{}",
        at("in/ping").message
    );

    let y = "apiVersion: palisade/v1\nfirewallPolicies:\n  - name: pol\n    ruleCollectionGroups:\n      - name: g\n        properties:\n          priority: 100\n          ruleCollections:\n            - {ruleCollectionType: FirewallPolicyNatRuleCollection, name: in, priority: 100, action: {type: Dnat}, rules: [{ruleType: NatRule, name: ping, ipProtocols: [ICMP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], translatedAddress: 10.0.2.5}]}\n";
    let f = findings(y);
    assert_eq!(codes(&f, "in/ping"), vec!["dnat-icmp"]);
    let ping = &f[f.iter().position(|x| x.code == "dnat-icmp").unwrap()];
    assert_eq!(ping.resource, "pol");
    assert!(ping.message.contains("`ipProtocols`"), "{}", ping.message);
}
