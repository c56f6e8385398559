//! Network rules with `destinationFqdns` match by the addresses the firewall's resolver
//! returned for those names, given at evaluation time (FW-5, FW-9), in rule order with the
//! other network rules.

use palisade_model::catalog::Catalogs;
use palisade_model::{
    AddressItem, AzureFirewall, FirewallAction, FirewallRule, Network, NetworkProtocol, PortRange,
    RuleCollection, RuleCollectionKind, RuleMode,
};
use palisade_policy::firewall::{
    CompiledFirewall, Detail, FirewallInput, FirewallPass, ResolvedNames,
};
use palisade_policy::matchers::PacketKey;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Remembered (name, address) pairs.
struct Names(HashSet<(String, IpAddr)>);

impl ResolvedNames for Names {
    fn names_of(&self, address: IpAddr, each: &mut dyn FnMut(&str)) {
        for (n, a) in &self.0 {
            if *a == address {
                each(n);
            }
        }
    }
}

fn names(pairs: &[(&str, &str)]) -> Names {
    Names(
        pairs
            .iter()
            .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
            .collect(),
    )
}

/// One network rule: by address (`Some(prefix)`) or by FQDN.
#[derive(Debug, Clone)]
struct Spec {
    action: FirewallAction,
    address: Option<String>,
    fqdn: Option<String>,
    port: u16,
    audit: bool,
}

fn firewall(specs: &[Spec], bindings: &HashMap<String, Vec<IpAddr>>) -> CompiledFirewall {
    // One collection per rule, priorities in list order, so list order is rule order (FW-2).
    let collections = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut rule = FirewallRule {
                source_addresses: vec![AddressItem::Any],
                destination_addresses: s
                    .address
                    .iter()
                    .map(|a| AddressItem::Prefix(a.parse().unwrap()))
                    .collect(),
                destination_fqdns: s.fqdn.iter().cloned().collect(),
                destination_ports: vec![PortRange::single(s.port)],
                ip_protocols: vec![NetworkProtocol::Tcp],
                ..FirewallRule::named(format!("r{i}"))
            };
            if s.audit {
                rule.palisade.mode = RuleMode::Audit;
            }
            RuleCollection::new(
                format!("c{i}"),
                100 + i as u32,
                RuleCollectionKind::Network,
                s.action,
                vec![rule],
            )
        })
        .collect();
    let net = Network {
        azure_firewalls: vec![AzureFirewall {
            name: "fw".into(),
            rule_collections: collections,
            ..Default::default()
        }],
        ..Default::default()
    };
    let fw = CompiledFirewall::compile(
        &net.azure_firewalls[0],
        &net,
        &Catalogs::default(),
        bindings,
    );
    assert!(fw.problems.is_empty(), "{:?}", fw.problems);
    fw
}

fn flow(dst: &str, port: u16) -> FirewallInput<'static> {
    FirewallInput {
        key: PacketKey {
            src: "10.0.0.4".parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: 6,
            src_port: 50000,
            dst_port: port,
        },
        host: None,
        app_protocol: None,
    }
}

fn allow_db() -> Spec {
    Spec {
        action: FirewallAction::Allow,
        address: None,
        fqdn: Some("DB.example.test.".into()),
        port: 5432,
        audit: false,
    }
}

// spec FW-5: matching is by IP — the flow matches only when its destination is an address
// remembered for the rule's name; the outcome names the FQDN.
#[test]
fn fw_5_fqdn_rule_matches_remembered_address_only() {
    let fw = firewall(&[allow_db()], &HashMap::new());
    let remembered = names(&[("db.example.test", "192.0.2.10")]);
    let o = fw.evaluate(&flow("192.0.2.10", 5432));
    assert_eq!(
        o.pass,
        FirewallPass::FirewallDefault,
        "nothing remembered: no match"
    );
    let o = fw.evaluate_with(&flow("192.0.2.10", 5432), &remembered);
    assert_eq!(o.pass, FirewallPass::FirewallNetwork);
    assert!(o.allowed);
    assert_eq!(o.rule.as_ref().unwrap().rule, "r0");
    assert_eq!(
        o.detail,
        Some(Detail::ResolvedFqdn("db.example.test".into()))
    );
    assert!(o.detail.unwrap().to_string().contains("db.example.test"));
    let o = fw.evaluate_with(&flow("192.0.2.11", 5432), &remembered);
    assert!(!o.allowed, "another address");
    let o = fw.evaluate_with(&flow("192.0.2.10", 22), &remembered);
    assert!(!o.allowed, "another port");
}

// spec FW-5: names sharing an address are indistinguishable — any name of the rule will do.
#[test]
fn fw_5_static_binding_still_matches_by_address() {
    let bindings = HashMap::from([(
        "db.example.test".to_string(),
        vec!["192.0.2.10".parse().unwrap()],
    )]);
    let fw = firewall(&[allow_db()], &bindings);
    let o = fw.evaluate(&flow("192.0.2.10", 5432));
    assert!(o.allowed);
    assert_eq!(o.detail, None, "matched by its compiled address");
}

// spec FW-2, FW-5: the first matching rule decides, whichever way it matched.
#[test]
fn fw_5_rule_order_holds_across_address_and_name_matches() {
    let deny_addr = Spec {
        action: FirewallAction::Deny,
        address: Some("192.0.2.0/24".into()),
        fqdn: None,
        port: 5432,
        audit: false,
    };
    let remembered = names(&[("db.example.test", "192.0.2.10")]);
    let fw = firewall(&[deny_addr.clone(), allow_db()], &HashMap::new());
    let o = fw.evaluate_with(&flow("192.0.2.10", 5432), &remembered);
    assert!(!o.allowed);
    assert_eq!(o.rule.unwrap().rule, "r0");
    let fw = firewall(&[allow_db(), deny_addr], &HashMap::new());
    let o = fw.evaluate_with(&flow("192.0.2.10", 5432), &remembered);
    assert!(o.allowed);
    assert_eq!(o.rule.unwrap().rule, "r0");
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            "192.0.2.0/25",
            "192.0.2.10/32",
            "192.0.2.128/25",
        ])),
        prop::option::of(prop::sample::select(vec!["a.test", "b.test"])),
        prop::sample::select(vec![80u16, 5432]),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(allow, address, fqdn, port, audit)| Spec {
            action: if allow {
                FirewallAction::Allow
            } else {
                FirewallAction::Deny
            },
            address: address.map(String::from),
            fqdn: fqdn.map(String::from),
            port,
            audit,
        })
}

proptest! {
    // Failures are kept beside this file (`fqdn_network_rules.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    // spec FW-5, FW-2, PAL-5.3: the compiled pass equals a linear scan of the rules — a rule
    // matches when the port matches and the destination is in its addresses or remembered for
    // its FQDN; audit rules are collected and passed over.
    #[test]
    fn fw_5_matches_linear_scan(
        specs in prop::collection::vec(spec_strategy(), 1..8),
        remembered in prop::collection::vec(
            (prop::sample::select(vec!["a.test", "b.test"]), prop::sample::select(vec!["192.0.2.10", "192.0.2.200", "192.0.2.1"])),
            0..4),
        dst in prop::sample::select(vec!["192.0.2.10", "192.0.2.200", "192.0.2.1"]),
        port in prop::sample::select(vec![80u16, 5432]),
    ) {
        let fw = firewall(&specs, &HashMap::new());
        let pairs: Vec<(&str, &str)> = remembered.clone();
        let outcome = fw.evaluate_with(&flow(dst, port), &names(&pairs));
        let ip: IpAddr = dst.parse().unwrap();
        let mut audit = vec![];
        let mut expected = None;
        for (i, s) in specs.iter().enumerate() {
            let by_address = s.address.as_ref().is_some_and(|a| a.parse::<ipnet::IpNet>().unwrap().contains(&ip));
            let by_name = s.fqdn.as_ref().is_some_and(|n| remembered.contains(&(n.as_str(), dst)));
            if s.port != port || !(by_address || by_name) {
                continue;
            }
            if s.audit {
                audit.push(format!("r{i}"));
                continue;
            }
            expected = Some((i, s.action == FirewallAction::Allow, !by_address));
            break;
        }
        let got_audit: Vec<String> = outcome.audit.iter().map(|r| r.rule.clone()).collect();
        prop_assert_eq!(got_audit, audit);
        match expected {
            None => prop_assert_eq!(outcome.pass, FirewallPass::FirewallDefault),
            Some((i, allowed, named)) => {
                prop_assert_eq!(outcome.pass, FirewallPass::FirewallNetwork);
                prop_assert_eq!(&outcome.rule.as_ref().unwrap().rule, &format!("r{i}"));
                prop_assert_eq!(outcome.allowed, allowed);
                prop_assert_eq!(matches!(outcome.detail, Some(Detail::ResolvedFqdn(_))), named);
            }
        }
    }
}
