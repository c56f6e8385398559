//! PAL-5.3 audit mode through `trace`: an audit rule is evaluated in its place, listed with its
//! would-be access, and the verdict is the one of the same network without it.

mod common;

use common::{flow, named, network};
use palisade_model::Protocol;
use palisade_policy::{AuditMatch, Flow, Trace, TraceOptions, Verdict};

fn decided(t: &Trace) -> (Verdict, Option<String>) {
    (
        t.verdict,
        t.decided_by.as_ref().and_then(|d| d.rule.clone()),
    )
}

fn audits(t: &Trace) -> Vec<AuditMatch> {
    t.hops.iter().flat_map(|h| h.audit.clone()).collect()
}

/// The network with the audit lines in, and without them: same verdict, same deciding rule.
fn same_as_without(template: &str, audit_lines: &str, f: &Flow, opts: &TraceOptions) -> Trace {
    let with = network(&template.replace("{AUDIT}", audit_lines));
    let without = network(&template.replace("{AUDIT}", ""));
    let t = with.trace(f, opts);
    assert_eq!(decided(&t), decided(&without.trace(f, opts)), "{t:#?}");
    t
}

const NSG: &str = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: vnet
    addressSpace: [10.0.0.0/16]
    subnets: [{name: app, addressPrefix: 10.0.1.0/24, networkSecurityGroup: nsg}]
networkSecurityGroups:
  - name: nsg
    securityRules:
      {AUDIT}
      - {name: allow-in-22, priority: 200, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '22'}
      - {name: deny-in-23, priority: 210, direction: Inbound, access: Deny, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '23'}
      - {name: allow-out-443, priority: 200, direction: Outbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '443'}
      - {name: deny-out-25, priority: 300, direction: Outbound, access: Deny, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '25'}
"#;

const NSG_AUDITS: &str = r#"
      - {name: audit-deny-in, priority: 100, direction: Inbound, access: Deny, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '22', palisade: {mode: Audit}}
      - {name: audit-allow-in, priority: 101, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '23', palisade: {mode: Audit}}
      - {name: audit-deny-out, priority: 100, direction: Outbound, access: Deny, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '443', palisade: {mode: Audit}}
      - {name: audit-allow-out, priority: 101, direction: Outbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '25', palisade: {mode: Audit}}"#;

#[test]
fn pal_5_3_nsg_audit_rules_change_no_verdict_in_either_direction() {
    // spec PAL-5.3: (flow, expected verdict, audit rule listed with its would-be access)
    let cases = [
        (
            ("198.51.100.1", "10.0.1.4", 22),
            Verdict::Allow,
            "audit-deny-in",
            "Deny",
        ),
        (
            ("198.51.100.1", "10.0.1.4", 23),
            Verdict::Deny,
            "audit-allow-in",
            "Allow",
        ),
        (
            ("10.0.1.4", "198.51.100.1", 443),
            Verdict::Allow,
            "audit-deny-out",
            "Deny",
        ),
        (
            ("10.0.1.4", "198.51.100.1", 25),
            Verdict::Deny,
            "audit-allow-out",
            "Allow",
        ),
    ];
    for ((src, dst, port), verdict, rule, access) in cases {
        let f = flow(Protocol::Tcp, src, dst, port);
        let t = same_as_without(NSG, NSG_AUDITS, &f, &TraceOptions::default());
        assert_eq!(t.verdict, verdict, "{f:?}");
        assert_eq!(
            audits(&t),
            vec![AuditMatch {
                layer: "SubnetNsg",
                rule: format!("securityRules/{rule}"),
                access,
            }],
            "{f:?}"
        );
    }
}

const FW: &str = r#"
apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4}]
    networkRuleCollections:
      {AUDIT_NET}
      - name: net
        priority: 200
        action: {type: Allow}
        rules: [{name: dns, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['53']}]
    applicationRuleCollections:
      {AUDIT}
      - name: allow-apps
        priority: 300
        action: {type: Allow}
        rules: [{name: api, sourceAddresses: ['*'], protocols: ['Https:443'], targetFqdns: [api.example.com]}]
"#;

const FW_AUDITS: &str = r#"
      - name: candidate-deny
        priority: 100
        action: {type: Deny}
        rules: [{name: no-api, sourceAddresses: ['*'], protocols: ['Https:443'], targetFqdns: [api.example.com], palisade: {mode: Audit}}]
      - name: candidate-allow
        priority: 110
        action: {type: Allow}
        palisade: {mode: Audit}
        rules: [{name: new-site, sourceAddresses: ['*'], protocols: ['Https:443'], targetFqdns: [new.example.com]}]"#;

const FW_NET_AUDITS: &str = r#"
      - name: candidate-net
        priority: 100
        action: {type: Deny}
        rules: [{name: no-dns, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['53'], palisade: {mode: Audit}}]
      - name: candidate-net-allow
        priority: 110
        action: {type: Allow}
        palisade: {mode: Audit}
        rules: [{name: ntp, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['123']}]"#;

#[test]
fn pal_5_3_firewall_audit_rules_and_collections_change_no_verdict() {
    // spec PAL-5.3: a rule's mode and a collection's mode (applying to its rules) alike.
    let at = TraceOptions {
        at: Some("firewall".into()),
        ..Default::default()
    };
    let cases = [
        (
            named(
                flow(Protocol::Tcp, "10.0.2.5", "203.0.113.5", 443),
                "api.example.com",
            ),
            Verdict::Allow,
            vec![("FirewallApplication", "candidate-deny/no-api", "Deny")],
        ),
        (
            named(
                flow(Protocol::Tcp, "10.0.2.5", "203.0.113.5", 443),
                "new.example.com",
            ),
            Verdict::Deny,
            vec![("FirewallApplication", "candidate-allow/new-site", "Allow")],
        ),
        (
            flow(Protocol::Udp, "10.0.2.5", "203.0.113.5", 53),
            Verdict::Allow,
            vec![("FirewallNetwork", "candidate-net/no-dns", "Deny")],
        ),
        (
            flow(Protocol::Udp, "10.0.2.5", "203.0.113.5", 123),
            Verdict::Deny,
            vec![("FirewallNetwork", "candidate-net-allow/ntp", "Allow")],
        ),
    ];
    for (f, verdict, listed) in cases {
        let with = network(
            &FW.replace("{AUDIT_NET}", FW_NET_AUDITS)
                .replace("{AUDIT}", FW_AUDITS),
        );
        let without = network(&FW.replace("{AUDIT_NET}", "").replace("{AUDIT}", ""));
        let t = with.trace(&f, &at);
        assert_eq!(decided(&t), decided(&without.trace(&f, &at)), "{t:#?}");
        assert_eq!(t.verdict, verdict, "{f:?}");
        let want: Vec<AuditMatch> = listed
            .into_iter()
            .map(|(layer, rule, access)| AuditMatch {
                layer,
                rule: rule.into(),
                access,
            })
            .collect();
        assert_eq!(audits(&t), want, "{f:?}");
    }
}

#[test]
fn pal_5_3_trace_json_lists_audit_matches() {
    // spec PAL-5.3: the JSON of a hop carries each audit match with its would-be access.
    let s = network(&NSG.replace("{AUDIT}", NSG_AUDITS));
    let t = s.trace(
        &flow(Protocol::Tcp, "198.51.100.1", "10.0.1.4", 22),
        &TraceOptions::default(),
    );
    let json = serde_json::to_value(&t.hops).unwrap();
    let audit = json
        .as_array()
        .unwrap()
        .iter()
        .find_map(|h| h["audit"].as_array().filter(|a| !a.is_empty()))
        .expect("a hop lists the audit match");
    assert_eq!(
        audit[0],
        serde_json::json!({"layer": "SubnetNsg", "rule": "securityRules/audit-deny-in", "access": "Deny"})
    );
}
