//! The spec's worked examples, each as a small network in the native YAML format (fixtures as
//! data) and the flows of its table.

mod common;

use common::{flow, named, network};
use palisade_model::catalog::Catalogs;
use palisade_model::import::import_text;
use palisade_model::{Direction, ImportOptions, Protocol};
use palisade_policy::firewall::FirewallInput;
use palisade_policy::{Flow, Trace, TraceOptions, Verdict};

fn decided(t: &Trace) -> (Verdict, String) {
    (
        t.verdict,
        t.decided_by
            .as_ref()
            .and_then(|d| d.rule.clone())
            .unwrap_or_default(),
    )
}

const NSG_5_4: &str = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: vnet
    addressSpace: [10.0.0.0/16]
    subnets: [{name: app, addressPrefix: 10.0.1.0/24, networkSecurityGroup: nsg}]
networkSecurityGroups:
  - name: nsg
    securityRules:
      - {name: allow-443, priority: 100, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '443'}
      - {name: deny-range, priority: 200, direction: Inbound, access: Deny, protocol: '*', sourceAddressPrefix: 203.0.113.0/24, destinationAddressPrefix: '*', destinationPortRange: '*'}
      - {name: deny-smtp, priority: 300, direction: Outbound, access: Deny, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: Internet, destinationPortRange: '25'}
"#;

#[test]
fn nsg_5_4_worked_example() {
    let s = network(NSG_5_4);
    let at = |dir| TraceOptions {
        at: Some("nsg".into()),
        direction: Some(dir),
        ..Default::default()
    };
    let cases = [
        (
            Direction::Inbound,
            "203.0.113.9",
            "10.0.1.4",
            443,
            Verdict::Allow,
            "allow-443",
        ),
        (
            Direction::Inbound,
            "203.0.113.9",
            "10.0.1.4",
            22,
            Verdict::Deny,
            "deny-range",
        ),
        (
            Direction::Inbound,
            "198.51.100.1",
            "10.0.1.4",
            22,
            Verdict::Deny,
            "DenyAllInBound",
        ),
        (
            Direction::Inbound,
            "10.0.2.5",
            "10.0.1.4",
            22,
            Verdict::Allow,
            "AllowVnetInBound",
        ),
        // NSG-5.4's table names AllowAzureLoadBalancerInBound here, but NSG-8.1 puts
        // 168.63.129.16 in `VirtualNetwork`, so AllowVnetInBound (65000) matches first. The tag's
        // definition is followed; the contradiction is reported in the closing notes.
        (
            Direction::Inbound,
            "168.63.129.16",
            "10.0.1.4",
            80,
            Verdict::Allow,
            "AllowVnetInBound",
        ),
        (
            Direction::Inbound,
            "168.63.129.16",
            "198.51.100.9",
            80,
            Verdict::Allow,
            "AllowAzureLoadBalancerInBound",
        ),
        (
            Direction::Outbound,
            "10.0.1.4",
            "198.51.100.7",
            25,
            Verdict::Deny,
            "deny-smtp",
        ),
        (
            Direction::Outbound,
            "10.0.1.4",
            "198.51.100.7",
            443,
            Verdict::Allow,
            "AllowInternetOutBound",
        ),
        (
            Direction::Outbound,
            "10.0.1.4",
            "192.168.5.5",
            443,
            Verdict::Deny,
            "DenyAllOutBound",
        ),
    ];
    for (dir, src, dst, port, verdict, rule) in cases {
        let t = s.trace(&flow(Protocol::Tcp, src, dst, port), &at(dir));
        assert_eq!(
            decided(&t),
            (verdict, rule.to_string()),
            "{src} → {dst}:{port}"
        );
    }
    // The same flows traced end to end: an inbound allow from outside gets a symmetric reply.
    let t = s.trace(
        &flow(Protocol::Tcp, "203.0.113.9", "10.0.1.4", 443),
        &TraceOptions::default(),
    );
    assert_eq!(decided(&t), (Verdict::Allow, "allow-443".into()));
    assert!(t.reply.as_ref().unwrap().symmetric);
    // Denied flows name the nearest allow and what differed.
    let t = s.trace(
        &flow(Protocol::Tcp, "198.51.100.1", "10.0.1.4", 22),
        &TraceOptions::default(),
    );
    let miss = t.hops.last().unwrap().near_miss.clone().unwrap();
    assert_eq!(miss.rule, "securityRules/allow-443");
    assert_eq!(miss.differs, vec!["destinationPortRange".to_string()]);
}

/// DIAG-7, issue 17: for a flow denied by a rule that comes before an allow matching it exactly,
/// the nearest allow is that allow (no field differs), named with the deny that shadows it — not
/// an allow that differs in some field.
#[test]
fn diag_7_nearest_allow_prefers_an_exact_match_after_the_decider() {
    let s = network(
        r#"
apiVersion: palisade/v1
networkSecurityGroups:
  - name: nsg
    securityRules:
      - {name: deny-range, priority: 100, direction: Inbound, access: Deny, protocol: "*",
         sourceAddressPrefix: 203.0.113.128/25, sourcePortRange: "*", destinationAddressPrefix: "*", destinationPortRange: "*"}
      - {name: allow-80, priority: 110, direction: Inbound, access: Allow, protocol: Tcp,
         sourceAddressPrefix: "*", sourcePortRange: "*", destinationAddressPrefix: "*", destinationPortRange: "80"}
      - {name: allow-443, priority: 120, direction: Inbound, access: Allow, protocol: Tcp,
         sourceAddressPrefix: "*", sourcePortRange: "*", destinationAddressPrefix: "*", destinationPortRange: "443"}
virtualNetworks:
  - name: vnet
    addressSpace: {addressPrefixes: [10.0.0.0/16]}
    subnets:
      - {name: web, addressPrefix: 10.0.1.0/24, networkSecurityGroup: {id: nsg}}
"#,
    );
    let denied = |port| {
        let t = s.trace(
            &flow(Protocol::Tcp, "203.0.113.130", "10.0.1.4", port),
            &TraceOptions::default(),
        );
        assert_eq!(decided(&t), (Verdict::Deny, "deny-range".into()));
        t.hops.last().unwrap().near_miss.clone().unwrap()
    };
    let miss = denied(443);
    assert_eq!(miss.rule, "securityRules/allow-443");
    assert!(miss.differs.is_empty());
    assert_eq!(
        miss.shadowed_by.as_deref(),
        Some("securityRules/deny-range (priority 100)")
    );
    // With no exact match, the fewest differing fields, first in order, as before.
    let miss = denied(22);
    assert_eq!(miss.rule, "securityRules/allow-80");
    assert_eq!(miss.differs, vec!["destinationPortRange".to_string()]);
    assert_eq!(miss.shadowed_by, None);
}

#[test]
fn pal_5_3_audit_rule_is_reported_then_passed_over() {
    let s = network(
        r#"
apiVersion: palisade/v1
networkSecurityGroups:
  - name: nsg
    securityRules:
      - {name: candidate-deny, priority: 100, direction: Inbound, access: Deny, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '22', palisade: {mode: Audit}}
      - {name: allow-ssh, priority: 200, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '22'}
"#,
    );
    let t = s.trace(
        &flow(Protocol::Tcp, "198.51.100.1", "10.0.1.4", 22),
        &TraceOptions::default(),
    );
    assert_eq!(decided(&t), (Verdict::Allow, "allow-ssh".into()));
    assert_eq!(
        t.hops[0].audit,
        vec![palisade_policy::AuditMatch {
            layer: "SubnetNsg",
            rule: "securityRules/candidate-deny".into(),
            access: "Deny",
        }]
    );
}

#[test]
fn nsg_6_subnet_then_nic_inbound_and_diag_2_examples() {
    let yaml = |nic_nsg: &str, subnet_allows_22: bool| {
        format!(
            r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: vnet
    addressSpace: [10.0.0.0/16]
    subnets: [{{name: app, addressPrefix: 10.0.1.0/24, networkSecurityGroup: subnet-nsg}}]
networkSecurityGroups:
  - name: subnet-nsg
    securityRules: {}
  - name: nic-nsg
networkInterfaces:
  - name: vm-nic
    {nic_nsg}
    ipConfigurations: [{{name: c, privateIPAddress: 10.0.1.4, subnet: vnet/app}}]
"#,
            if subnet_allows_22 {
                "[{name: allow-22, priority: 100, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '22'}]"
            } else {
                "[]"
            }
        )
    };
    let f = flow(Protocol::Tcp, "198.51.100.1", "10.0.1.4", 22);
    // DIAG-2 row 1: subnet NSG only, defaults.
    let t = network(&yaml("", false)).trace(&f, &TraceOptions::default());
    assert_eq!(decided(&t), (Verdict::Deny, "DenyAllInBound".into()));
    assert_eq!(t.decided_by.unwrap().resource, "subnet-nsg");
    // Row 2: the subnet allows 22, the NIC's NSG has only defaults: the NIC denies.
    let t =
        network(&yaml("networkSecurityGroup: nic-nsg", true)).trace(&f, &TraceOptions::default());
    assert_eq!(decided(&t), (Verdict::Deny, "DenyAllInBound".into()));
    assert_eq!(t.decided_by.unwrap().resource, "nic-nsg");
    let layers: Vec<&str> = t.hops.iter().map(|h| h.layer).collect();
    assert_eq!(layers, vec!["SubnetNsg", "NicNsg"]);
}

const RT_5: &str = r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: vnet
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: app, addressPrefix: 10.0.1.0/24, routeTable: rt, serviceEndpoints: [{service: Microsoft.Storage}]}
    virtualNetworkPeerings:
      - {name: to-spoke, remoteAddressSpace: {addressPrefixes: [10.10.0.0/16]}}
routeTables:
  - name: rt
    routes:
      - {name: vnet-to-nva, addressPrefix: 10.0.0.0/16, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.100.4}
      - {name: local-24, addressPrefix: 10.0.0.0/24, nextHopType: VnetLocal}
      - {name: default, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.100.4}
      - {name: drop-spoke, addressPrefix: 10.10.0.0/16, nextHopType: None}
      - {name: mgmt, addressPrefix: 13.64.38.225/32, nextHopType: Internet}
"#;

#[test]
fn rt_5_selection_table_and_diag_3() {
    let s = network(RT_5);
    let routes = &s.subnets().next().unwrap().1.routes;
    let hop = |d: &str| {
        let (_, r) = routes.lookup(d.parse().unwrap()).unwrap();
        (r.next_hop_type.as_str().to_string(), r.label())
    };
    assert_eq!(
        hop("10.0.2.5"),
        ("VirtualAppliance".into(), "vnet-to-nva".into())
    );
    assert_eq!(hop("10.0.0.9"), ("VnetLocal".into(), "local-24".into()));
    assert_eq!(
        hop("8.8.8.8"),
        ("VirtualAppliance".into(), "default".into())
    );
    assert_eq!(hop("13.64.38.225"), ("Internet".into(), "mgmt".into()));
    // A Storage address: the service-endpoint route is longer than 0.0.0.0/0 (RT-7).
    assert_eq!(
        hop("13.82.152.20"),
        (
            "VirtualNetworkServiceEndpoint".into(),
            "Microsoft.Storage".into()
        )
    );
    // User beats system on an equal prefix: the peering's range is dropped.
    assert_eq!(hop("10.10.0.1"), ("None".into(), "drop-spoke".into()));
    // The overridden system routes are Invalid (RT-5, DIAG-5).
    let invalid: Vec<String> = routes
        .routes
        .iter()
        .filter(|r| r.state == palisade_policy::routes::RouteState::Invalid)
        .map(|r| r.label())
        .collect();
    assert!(invalid.contains(&"10.0.0.0/16".to_string()), "{invalid:?}");
    assert!(invalid.contains(&"0.0.0.0/0".to_string()), "{invalid:?}");
}

#[test]
fn rt_3_1_system_routes() {
    let s = network(
        "apiVersion: palisade/v1\nvirtualNetworks:\n  - {name: v, addressSpace: [10.1.0.0/16], subnets: [{name: s, addressPrefix: 10.1.0.0/24}]}\n",
    );
    let hop = |d: &str| {
        s.subnets()
            .next()
            .unwrap()
            .1
            .routes
            .lookup(d.parse().unwrap())
            .unwrap()
            .1
            .next_hop_type
            .as_str()
    };
    assert_eq!(hop("10.1.3.4"), "VnetLocal");
    assert_eq!(hop("10.2.0.5"), "None");
    assert_eq!(hop("8.8.8.8"), "Internet");
    assert_eq!(hop("100.64.1.1"), "None");
    // RT-10: IPv6 defaults.
    assert_eq!(hop("2001:db8::1"), "Internet");
    assert_eq!(hop("fd00::1"), "None");
}

const FW_3: &str = r#"
apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4, publicIPAddress: fw-pip}]
    networkRuleCollections:
      - name: web
        priority: 200
        action: {type: Allow}
        rules: [{name: web-ports, protocols: [TCP], sourceAddresses: ['10.0.0.0/24'], destinationAddresses: ['*'], destinationPorts: ['80']}]
    applicationRuleCollections:
      - name: deny-www
        priority: 100
        action: {type: Deny}
        rules: [{name: www, sourceAddresses: ['*'], protocols: ['Http:80'], targetFqdns: [www.example.com]}]
      - name: allow-example
        priority: 300
        action: {type: Allow}
        rules: [{name: sub, sourceAddresses: ['*'], protocols: ['Https:443'], targetFqdns: ['*.example.com']}]
    natRuleCollections:
      - name: ssh-in
        priority: 100
        action: {type: Dnat}
        rules: [{name: ssh, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [52.0.0.10], destinationPorts: ['2222'], translatedAddress: 10.0.2.4, translatedPort: '22'}]
publicIPAddresses:
  - {name: fw-pip, ipAddress: 52.0.0.10}
"#;

#[test]
fn fw_3_pipeline_examples() {
    let s = network(FW_3);
    let at = TraceOptions {
        at: Some("firewall".into()),
        ..Default::default()
    };
    // A network rule allows before the application Deny is reached.
    let t = s.trace(
        &named(
            flow(Protocol::Tcp, "10.0.0.5", "203.0.113.5", 80),
            "www.example.com",
        ),
        &at,
    );
    assert_eq!(decided(&t), (Verdict::Allow, "web/web-ports".into()));
    // Outside the network rule's sources, the application Deny applies.
    let t = s.trace(
        &named(
            flow(Protocol::Tcp, "10.0.9.5", "203.0.113.5", 80),
            "www.example.com",
        ),
        &at,
    );
    assert_eq!(decided(&t), (Verdict::Deny, "deny-www/www".into()));
    // FW-6.3: the subdomain wildcard matches any depth, never the apex.
    let t = s.trace(
        &named(
            flow(Protocol::Tcp, "10.0.9.5", "203.0.113.5", 443),
            "api.example.com",
        ),
        &at,
    );
    assert_eq!(decided(&t), (Verdict::Allow, "allow-example/sub".into()));
    let t = s.trace(
        &named(
            flow(Protocol::Tcp, "10.0.9.5", "203.0.113.5", 443),
            "example.com",
        ),
        &at,
    );
    assert_eq!(t.verdict, Verdict::Deny);
    assert!(t.decided_by.unwrap().rule.is_none());
    // FW-6.2: HTTPS without SNI is denied with its reason.
    let t = s.trace(&flow(Protocol::Tcp, "10.0.9.5", "203.0.113.5", 443), &at);
    assert_eq!(t.hops[0].reason, "SniMissing");
    // No rule for SSH: default deny.
    let t = s.trace(&flow(Protocol::Tcp, "10.0.9.5", "203.0.113.5", 22), &at);
    assert_eq!(
        (t.verdict, t.hops[0].reason),
        (Verdict::Deny, "DefaultAction")
    );
}

#[test]
fn fw_4_dnat_translates_and_allows() {
    let s = network(FW_3);
    let t = s.trace(
        &flow(Protocol::Tcp, "198.51.100.7", "52.0.0.10", 2222),
        &TraceOptions::default(),
    );
    assert_eq!(decided(&t), (Verdict::Allow, "ssh-in/ssh".into()));
    assert_eq!(t.hops[0].layer, "FirewallDnat");
    assert_eq!(t.hops[0].result, "Dnat");
}

/// FW-4 with `Any`: a firewall with an IPv4 and an IPv6 frontend, each behind a DNAT rule with
/// protocols `Any` on one port, and network rules that allow ICMP from one source range. The
/// CLI's `trace` and `lint` tests read the same file.
const FW_4_ANY: &str = include_str!("data/fw-4-dnat.yaml");

// FW-4: DNAT matches TCP and UDP only. `Any` on a DNAT rule is TCP and UDP; an ICMP (ICMPv6)
// flow to the frontend is not translated, whatever the rule's ports, and goes on to the network
// rules, then the default deny (FW-3). A rule naming only ICMP translates nothing.
#[test]
fn fw_4_dnat_with_any_translates_tcp_and_udp_only() {
    let s = network(FW_4_ANY);
    let all = TraceOptions::default();
    let fw = s.firewall(s.firewall_by_name("fw").unwrap());
    // `trace` reports the DNAT hop; the compiled firewall it asks gives the translation.
    let translated = |f: &Flow| {
        fw.evaluate(&FirewallInput {
            key: f.key(),
            host: None,
            app_protocol: None,
        })
        .translated
    };
    for (proto, frontend, rule, to) in [
        (Protocol::Tcp, "52.0.0.10", "inbound/web", "10.0.2.4"),
        (Protocol::Udp, "52.0.0.10", "inbound/web", "10.0.2.4"),
        (Protocol::Tcp, "2001:db8:52::10", "inbound/web6", "fd00::4"),
        (Protocol::Udp, "2001:db8:52::10", "inbound/web6", "fd00::4"),
    ] {
        let f = flow(proto, "198.51.100.7", frontend, 8080);
        let t = s.trace(&f, &all);
        let what = format!("{proto:?} to {frontend}: {t:?}");
        assert_eq!(decided(&t), (Verdict::Allow, rule.into()), "{what}");
        assert_eq!(t.hops[0].layer, "FirewallDnat", "{what}");
        assert_eq!(t.hops[0].result, "Dnat", "{what}");
        assert_eq!(translated(&f), Some((to.parse().unwrap(), 80)), "{what}");
    }
    // ICMP from the allowed range: decided by the network rule, untranslated; the port a flow
    // record gives ICMP (0 or the DNAT port) makes no difference.
    for (src, frontend) in [
        ("198.51.100.7", "52.0.0.10"),
        ("2001:db8:1::7", "2001:db8:52::10"),
    ] {
        for port in [0, 8080] {
            let f = flow(Protocol::Icmp, src, frontend, port);
            let t = s.trace(&f, &all);
            let what = format!("ICMP {src} → {frontend} port {port}: {t:?}");
            assert_eq!(decided(&t), (Verdict::Allow, "pings/ping".into()), "{what}");
            assert_eq!(t.hops.len(), 1, "{what}");
            assert_eq!(t.hops[0].layer, "FirewallNetwork", "{what}");
            assert_eq!(t.hops[0].result, "Allow", "{what}");
            assert_eq!(translated(&f), None, "{what}");
        }
    }
    // ICMP from elsewhere: no network rule matches, the default deny.
    for (src, frontend) in [
        ("203.0.113.7", "52.0.0.10"),
        ("2001:db8:9::7", "2001:db8:52::10"),
    ] {
        let f = flow(Protocol::Icmp, src, frontend, 8080);
        let t = s.trace(&f, &all);
        let what = format!("ICMP {src} → {frontend}: {t:?}");
        assert_eq!(t.verdict, Verdict::Deny, "{what}");
        assert_eq!(t.hops[0].layer, "FirewallDefault", "{what}");
        assert_eq!(t.hops[0].reason, "DefaultAction", "{what}");
        assert_eq!(translated(&f), None, "{what}");
    }
    // The ICMP-only rule is in the DNAT pass but has no entry: it matches no flow.
    let pass = fw.dnat_pass();
    assert_eq!(pass.rules.len(), 3);
    let protocols: Vec<(Option<u8>, &str)> = pass
        .entries
        .iter()
        .zip(pass.entry_rule)
        .map(|(e, &r)| (e.protocol, pass.rules[r as usize].rule.as_str()))
        .collect();
    assert_eq!(
        protocols,
        [
            (Some(6), "web"),
            (Some(17), "web"),
            (Some(6), "web6"),
            (Some(17), "web6")
        ]
    );
}

#[test]
fn nsg_8_4_platform_addresses_are_exempt_outbound() {
    let s = network(
        r#"
apiVersion: palisade/v1
virtualNetworks:
  - {name: v, addressSpace: [10.0.0.0/16], subnets: [{name: s, addressPrefix: 10.0.1.0/24, networkSecurityGroup: nsg}]}
networkSecurityGroups:
  - name: nsg
    securityRules:
      - {name: deny-out, priority: 100, direction: Outbound, access: Deny, protocol: '*', sourceAddressPrefix: '*', destinationAddressPrefix: '*'}
"#,
    );
    let t = s.trace(
        &flow(Protocol::Udp, "10.0.1.4", "168.63.129.16", 53),
        &TraceOptions::default(),
    );
    assert_eq!(t.verdict, Verdict::Allow);
    assert_eq!(t.hops[0].reason, "PlatformExempt");
    let t = s.trace(
        &flow(Protocol::Udp, "10.0.1.4", "8.8.8.8", 53),
        &TraceOptions::default(),
    );
    assert_eq!(decided(&t), (Verdict::Deny, "deny-out".into()));
}

/// NSG-1 / NSG-3: an ASG rule whose groups have members in different virtual networks is refused.
#[test]
fn nsg_1_asgs_from_different_virtual_networks_are_an_error() {
    let yaml = r#"
apiVersion: palisade/v1
virtualNetworks:
  - {name: a, addressSpace: [10.0.0.0/16], subnets: [{name: s, addressPrefix: 10.0.1.0/24}]}
  - {name: b, addressSpace: [10.1.0.0/16], subnets: [{name: s, addressPrefix: 10.1.1.0/24}]}
applicationSecurityGroups: [{name: web}, {name: db}]
networkInterfaces:
  - {name: n1, ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4, subnet: a/s, applicationSecurityGroups: [web]}]}
  - {name: n2, ipConfigurations: [{name: c, privateIPAddress: 10.1.1.4, subnet: b/s, applicationSecurityGroups: [db]}]}
networkSecurityGroups:
  - name: nsg
    securityRules:
      - {name: web-to-db, priority: 100, direction: Inbound, access: Allow, protocol: Tcp, sourceApplicationSecurityGroups: [web], destinationApplicationSecurityGroups: [db], destinationPortRange: '1433'}
"#;
    let file = import_text("asg.yaml", yaml, &ImportOptions::default(), None);
    assert!(!file.diagnostics.has_errors(), "{}", file.diagnostics);
    let d = palisade_model::validate(&file.network, &Catalogs::embedded(), false);
    let errors: Vec<String> = d.errors().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("NSG-1") && errors[0].contains("web-to-db"),
        "{errors:?}"
    );
}
