//! PAL-5.2 `addressCheck`: the compiled firewall gives the setting of the deciding rule — the
//! rule's own, else its collection's, else the firewall's (policy's), else the caller's default.

use palisade_model::catalog::Catalogs;
use palisade_model::{
    AddressCheck, AddressItem, ApplicationProtocol, ApplicationProtocolType, AzureFirewall,
    FirewallAction, FirewallPolicy, FirewallRule, Network, PalisadeSettings, RuleCollection,
    RuleCollectionGroup, RuleCollectionKind,
};
use palisade_policy::firewall::{CompiledFirewall, FirewallInput};
use palisade_policy::matchers::PacketKey;
use proptest::prelude::*;

fn setting() -> impl Strategy<Value = Option<AddressCheck>> {
    prop_oneof![
        Just(None),
        Just(Some(AddressCheck::Enforce)),
        Just(Some(AddressCheck::Audit)),
        Just(Some(AddressCheck::Off)),
    ]
}

fn collection(name: &str, check: Option<AddressCheck>, rule: FirewallRule) -> RuleCollection {
    let mut c = RuleCollection::new(
        name,
        100,
        RuleCollectionKind::Application,
        FirewallAction::Allow,
        vec![rule],
    );
    c.palisade.address_check = check;
    c
}

fn rule(fqdn: &str, check: Option<AddressCheck>) -> FirewallRule {
    FirewallRule {
        source_addresses: vec![AddressItem::Any],
        protocols: vec![ApplicationProtocol {
            protocol_type: ApplicationProtocolType::Https,
            port: 443,
        }],
        target_fqdns: vec![fqdn.into()],
        palisade: PalisadeSettings {
            address_check: check,
            ..Default::default()
        },
        ..FirewallRule::named(fqdn)
    }
}

fn decide(fw: &CompiledFirewall, host: &str, default: AddressCheck) -> AddressCheck {
    let input = FirewallInput {
        key: PacketKey {
            src: "10.0.0.4".parse().unwrap(),
            dst: "203.0.113.9".parse().unwrap(),
            protocol: 6,
            src_port: 50000,
            dst_port: 443,
        },
        host: Some(host),
        app_protocol: None,
    };
    let o = fw.evaluate(&input);
    assert!(o.allowed, "{host}: {:?}", o.reason);
    o.address_check(default)
}

fn compile(net: &Network) -> CompiledFirewall {
    CompiledFirewall::compile(
        &net.azure_firewalls[0],
        net,
        &Catalogs::default(),
        &Default::default(),
    )
}

proptest! {
    // Failures are kept beside this file (`address_check.proptest-regressions`) and replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    // spec PAL-5.2: "per firewall and per rule (rule wins)"; the command line is the default.
    #[test]
    fn the_rule_wins_then_collection_then_firewall_then_default(
        on_rule in setting(), on_collection in setting(), on_firewall in setting(), policy in any::<bool>(),
        default in prop_oneof![Just(AddressCheck::Enforce), Just(AddressCheck::Audit), Just(AddressCheck::Off)],
    ) {
        let cols = vec![
            collection("decided", on_collection, rule("a.test", on_rule)),
            collection("other", Some(AddressCheck::Audit), rule("b.test", Some(AddressCheck::Off))),
        ];
        let mut fw = AzureFirewall { name: "fw".into(), ..Default::default() };
        let mut net = Network::default();
        if policy {
            fw.firewall_policy = Some("pol".into());
            let mut p = FirewallPolicy {
                name: "pol".into(),
                rule_collection_groups: vec![RuleCollectionGroup {
                    name: "g".into(), priority: 100, rule_collections: cols, ..Default::default()
                }],
                ..Default::default()
            };
            p.settings.address_check = on_firewall;
            net.firewall_policies.push(p);
        } else {
            fw.rule_collections = cols;
            fw.settings.address_check = on_firewall;
        }
        net.azure_firewalls.push(fw);
        let compiled = compile(&net);
        prop_assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
        let expected = on_rule.or(on_collection).or(on_firewall).unwrap_or(default);
        prop_assert_eq!(decide(&compiled, "a.test", default), expected);
        // Another rule's setting never leaks into this decision, nor this one into that one.
        prop_assert_eq!(decide(&compiled, "b.test", default), AddressCheck::Off);
    }
}

#[test]
fn a_policy_firewall_falls_back_to_the_firewall_resource() {
    // spec PAL-5.2: a policy that says nothing leaves the firewall resource's own setting.
    let mut net = Network::default();
    net.firewall_policies.push(FirewallPolicy {
        name: "pol".into(),
        rule_collection_groups: vec![RuleCollectionGroup {
            name: "g".into(),
            priority: 100,
            rule_collections: vec![collection("c", None, rule("a.test", None))],
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut fw = AzureFirewall {
        name: "fw".into(),
        firewall_policy: Some("pol".into()),
        ..Default::default()
    };
    fw.settings.address_check = Some(AddressCheck::Audit);
    net.azure_firewalls.push(fw);
    assert_eq!(
        decide(&compile(&net), "a.test", AddressCheck::Enforce),
        AddressCheck::Audit
    );
}

/// `trace` shows, on the firewall's application hop, the setting the gateway would apply: the
/// same lookup as the gateway's, with the gateway's default `Enforce`.
#[test]
fn trace_reports_the_deciding_rules_address_check() {
    use palisade_model::Protocol;
    use palisade_policy::{CompileOptions, Flow, Snapshot, TraceOptions};
    let mut fw = AzureFirewall {
        name: "fw".into(),
        rule_collections: vec![
            collection("c", Some(AddressCheck::Audit), rule("a.test", None)),
            collection("d", None, rule("b.test", Some(AddressCheck::Off))),
            collection("e", None, rule("c.test", None)),
        ],
        ..Default::default()
    };
    fw.rule_collections[1].priority = 200;
    fw.rule_collections[2].priority = 300;
    let net = Network {
        azure_firewalls: vec![fw],
        ..Default::default()
    };
    let snap = Snapshot::compile(&net, &Catalogs::embedded(), &CompileOptions::default());
    let trace = |host: &str| {
        let f = Flow {
            source: "10.0.0.4".parse().unwrap(),
            source_port: 50000,
            destination: "203.0.113.9".parse().unwrap(),
            destination_port: 443,
            protocol: Protocol::Tcp,
            host: Some(host.into()),
            app_protocol: None,
        };
        let t = snap.trace(
            &f,
            &TraceOptions {
                at: Some("fw".into()),
                ..Default::default()
            },
        );
        let hop = t
            .hops
            .iter()
            .find(|h| h.layer.starts_with("Firewall"))
            .expect("a firewall hop")
            .clone();
        (hop.address_check, serde_json::to_value(&hop).unwrap())
    };
    // spec PAL-5.2: collection-level Audit, rule-level Off, and the default when none says.
    for (host, want) in [
        ("a.test", "Audit"),
        ("b.test", "Off"),
        ("c.test", "Enforce"),
    ] {
        let (check, json) = trace(host);
        assert_eq!(check.map(|c| format!("{c:?}")).as_deref(), Some(want));
        assert_eq!(json["address_check"], want, "{json}");
    }
    // A deny has no address check to report.
    let (check, json) = trace("unlisted.test");
    assert_eq!(check, None);
    assert!(json.get("address_check").is_none(), "{json}");
}
