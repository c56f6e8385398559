//! The generated hub-and-spoke network written in the native format and read back by the
//! importer answers every question as the generated network itself does: same trace verdict,
//! deciding control and hops for every flow of a small address and port space (what lets the
//! lab, whose gateway loads its network from a file, run a generated network).

use palisade_analyze::gen::{native, HubSpoke};
use palisade_model::catalog::Catalogs;
use palisade_model::Protocol;
use palisade_policy::{CompileOptions, Flow, Snapshot, TraceOptions};
use std::net::IpAddr;

fn addresses(g: &HubSpoke) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = g.hub().hosts().collect();
    for i in 0..g.spokes {
        out.extend(g.spoke(i).hosts());
    }
    for a in [
        "8.8.8.8",
        "52.0.0.10",
        "203.0.113.3",
        "13.64.38.225",
        "192.0.2.9",
    ] {
        out.push(a.parse().unwrap());
    }
    out
}

fn hops(t: &palisade_policy::Trace) -> serde_json::Value {
    serde_json::to_value(&t.hops).unwrap()
}

fn read_back(g: &HubSpoke) -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("generated.json");
    let value = native(&g.build()).unwrap();
    std::fs::write(&file, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    let loaded = palisade_load::load(&palisade_load::Source::files([file]));
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    loaded.snapshot.unwrap()
}

// spec DIAG-7: the same network gives the same trace, whichever way it was made.
#[test]
fn native_round_trip_gives_the_same_trace_answers() {
    let mut compared = 0;
    for seed in 1..=3 {
        let g = HubSpoke::small(seed);
        let direct = Snapshot::compile(
            &g.build(),
            &Catalogs::embedded(),
            &CompileOptions::default(),
        );
        let imported = read_back(&g);
        let addrs = addresses(&g);
        for &s in &addrs {
            for &d in &addrs {
                for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
                    for port in [22, 80, 443, 1500, 2222, 3389] {
                        let flow = Flow {
                            source: s,
                            source_port: 50000,
                            destination: d,
                            destination_port: port,
                            protocol,
                            host: None,
                            app_protocol: None,
                        };
                        let a = direct.trace(&flow, &TraceOptions::default());
                        let b = imported.trace(&flow, &TraceOptions::default());
                        assert_eq!(
                            (a.verdict, &a.decided_by, hops(&a)),
                            (b.verdict, &b.decided_by, hops(&b)),
                            "seed {seed}: {flow:?}"
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 10_000, "{compared}");
}

#[test]
fn the_generated_target_network_is_written_whole() {
    let g = HubSpoke {
        spokes: 20,
        ..HubSpoke::target()
    };
    let net = g.build();
    let v = native(&net).unwrap();
    assert_eq!(
        v["networkSecurityGroups"].as_array().unwrap().len(),
        net.network_security_groups.len()
    );
    let rules: usize = v["azureFirewalls"][0]["networkRuleCollections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(rules, g.firewall_rules);
}

proptest::proptest! {
    // Failures are kept beside this file (`gen_native.proptest-regressions`) and replayed first.
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..proptest::prelude::ProptestConfig::default()
    })]

    // Any generated shape is written so that the importer reads it back without a diagnostic
    // and with every rule.
    #[test]
    fn every_generated_shape_reads_back_whole(
        seed in 0u64..1000,
        spokes in 1usize..6,
        nsg_rules in 0usize..16,
        firewall_rules in 0usize..120,
        nic_every in 0usize..3,
        prefix_len in 20u8..=29,
    ) {
        let g = HubSpoke { spokes, nsg_rules, firewall_rules, app_rules: 2, prefix_len, nic_every, seed };
        let net = g.build();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("generated.json");
        std::fs::write(&file, native(&net).unwrap().to_string()).unwrap();
        let checked = palisade_load::check(&palisade_load::Source::files([file]));
        proptest::prop_assert!(checked.diagnostics.is_empty(), "{}", checked.diagnostics);
        let back = checked.imported.network;
        proptest::prop_assert_eq!(back.counts(), net.counts());
        proptest::prop_assert_eq!(back.network_interfaces.len(), net.network_interfaces.len());
    }
}
