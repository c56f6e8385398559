//! The classified layout decides every packet as the listed one does (spec NSG-5.1: the first
//! matching rule by priority decides, defaults last; PAL-5.3 audit rules count and pass on):
//! a property test over random small NSGs and packets, both layouts run by the pure evaluator;
//! and the classified table in a kernel, real TCP connections from many sources.

mod common;

use common::Netns;
use palisade_host::apply::{self, ApplyMode};
use palisade_host::classify::{classify, evaluate, ClassifyOptions, Packet, Verdict};
use palisade_host::nft::Nft;
use palisade_host::render::{render, Layout, RenderOptions, Stmt, TablePlan, Target};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

fn snapshot_of_yaml(yaml: &str) -> palisade_policy::Snapshot {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("net.yaml");
    std::fs::write(&file, yaml).unwrap();
    common::snapshot_of(file)
}

fn listed(snap: &palisade_policy::Snapshot, subnet: &str) -> TablePlan {
    let opts = RenderOptions {
        layout: Layout::Listed,
        ..Default::default()
    };
    render(snap, &Target::Subnet(subnet.into()), &opts).unwrap()
}

fn has_vmap(plan: &TablePlan, chain: &str) -> bool {
    plan.chain(chain)
        .unwrap()
        .rules
        .iter()
        .any(|r| r.stmts.iter().any(|s| matches!(s, Stmt::Vmap { .. })))
}

/// One side of a rule: a literal prefix, a tag (a named set or the whole family), or a list.
fn side() -> impl Strategy<Value = String> {
    let v4 = (0u32..4, 0u32..256, 20u8..=32).prop_map(|(a, b, len)| {
        let n: ipnet::Ipv4Net = format!("10.0.{a}.{b}/{len}").parse().unwrap();
        n.trunc().to_string()
    });
    let outside = (0u32..256, 24u8..=32).prop_map(|(b, len)| {
        let n: ipnet::Ipv4Net = format!("203.0.113.{b}/{len}").parse().unwrap();
        n.trunc().to_string()
    });
    let v6 = (0u32..256, 120u8..=128).prop_map(|(b, len)| {
        let n: ipnet::Ipv6Net = format!("2001:db8::{b:x}/{len}").parse().unwrap();
        n.trunc().to_string()
    });
    prop_oneof![
        4 => v4.clone().prop_map(|p| format!("AddressPrefix: {p}")),
        1 => outside.prop_map(|p| format!("AddressPrefix: {p}")),
        1 => v6.prop_map(|p| format!("AddressPrefix: \"{p}\"")),
        1 => Just("AddressPrefix: \"*\"".to_string()),
        1 => prop::sample::select(vec!["VirtualNetwork", "Internet"])
            .prop_map(|t| format!("AddressPrefix: {t}")),
        1 => (v4.clone(), v4).prop_map(|(a, b)| format!("AddressPrefixes: [{a}, {b}]")),
    ]
}

fn ports() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"*\"".to_string()),
        (20u16..40).prop_map(|p| format!("\"{p}\"")),
        (20u16..40, 0u16..8).prop_map(|(p, w)| format!("\"{p}-{}\"", p + w)),
    ]
}

fn rule() -> impl Strategy<Value = (bool, bool, bool, &'static str, String, String, String)> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::sample::select(vec!["Tcp", "Udp", "Icmp", "\"*\""]),
        side(),
        side(),
        ports(),
    )
}

fn network(rules: &[(bool, bool, bool, &str, String, String, String)]) -> String {
    let mut y = String::from(
        "apiVersion: palisade/v1\nvirtualNetworks:\n  - name: v\n    addressSpace: [10.0.0.0/16]\n    subnets:\n      - {name: s, addressPrefix: 10.0.1.0/24, networkSecurityGroup: g}\nnetworkSecurityGroups:\n  - name: g\n    securityRules:\n",
    );
    for (i, (inbound, allow, audit, proto, src, dst, dport)) in rules.iter().enumerate() {
        y.push_str(&format!(
            "      - {{name: r{i}, priority: {}, direction: {}, access: {}, protocol: {proto}, source{src}, destination{dst}, sourcePortRange: \"*\", destinationPortRange: {dport}{}}}\n",
            100 + i,
            if *inbound { "Inbound" } else { "Outbound" },
            if *allow { "Allow" } else { "Deny" },
            if *audit { ", palisade: {mode: Audit}" } else { "" },
        ));
    }
    y
}

fn packet() -> impl Strategy<Value = Packet> {
    let v4 = prop_oneof![
        4 => (0u8..4, any::<u8>()).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
        1 => any::<u8>().prop_map(|b| format!("203.0.113.{b}")),
        1 => Just("8.8.8.8".to_string()),
        1 => Just("168.63.129.16".to_string()),
    ];
    let v6 = prop_oneof![
        any::<u8>().prop_map(|b| format!("2001:db8::{b:x}")),
        Just("fd00::1".to_string()),
    ];
    let addrs = prop_oneof![
        4 => (v4.clone(), v4),
        1 => (v6.clone(), v6),
    ];
    (
        addrs,
        prop::sample::select(vec![6u8, 17, 1, 58, 50]),
        15u16..45,
        15u16..45,
        prop::bool::weighted(0.2),
    )
        .prop_map(|((s, d), protocol, sp, dp, established)| Packet {
            src: s.parse::<IpAddr>().unwrap(),
            dst: d.parse::<IpAddr>().unwrap(),
            protocol,
            src_port: sp,
            dst_port: dp,
            established,
        })
}

// spec NSG-5.1 (first match by priority), NSG-4 (defaults last), PAL-5.3 (audit passes on)
#[test]
fn classified_decides_every_packet_as_listed() {
    let split_cases = AtomicUsize::new(0);
    // Failures are kept beside this file (`classify.proptest-regressions`) and replayed first;
    // a runner built by hand names its source file itself, as `proptest!` does.
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..ProptestConfig::default()
    });
    let input = (
        prop::collection::vec(rule(), 1..24),
        prop::collection::vec(packet(), 64),
    );
    runner
        .run(&input, |(rules, packets)| {
            let snap = snapshot_of_yaml(&network(&rules));
            let listed = listed(&snap, "s");
            // Every chain classified, into intervals as narrow as they come.
            let mut classified = listed.clone();
            let opts = ClassifyOptions {
                min_rules: 0,
                bucket_rules: 1,
                max_copies: 1000,
            };
            if !classify(&mut classified, &opts).is_empty() {
                split_cases.fetch_add(1, Ordering::Relaxed);
            }
            for chain in ["nsg_in", "nsg_out"] {
                for p in &packets {
                    let want = evaluate(&listed, chain, p);
                    let got = evaluate(&classified, chain, p);
                    prop_assert_eq!(&want.verdict, &got.verdict, "{} {:?}", chain, p);
                    prop_assert_eq!(&want.counters, &got.counters, "{} {:?}", chain, p);
                }
            }
            // NSG-7.1: the host base chains accept replies before their jumps; without that
            // rule they pass and drop the same packets and move the same counters (a base
            // chain's `Continue` is its policy, accept).
            for chain in ["input", "output"] {
                prop_assert_eq!(
                    &classified.chain(chain).unwrap().rules[2].stmts,
                    &vec![Stmt::CtEstablished, Stmt::Accept]
                );
            }
            let mut unshortcut = listed.clone();
            for c in unshortcut.chains.iter_mut().filter(|c| c.base.is_some()) {
                std::sync::Arc::make_mut(&mut c.rules)
                    .retain(|r| r.stmts != [Stmt::CtEstablished, Stmt::Accept]);
            }
            for chain in ["input", "output"] {
                for p in &packets {
                    let want = evaluate(&unshortcut, chain, p);
                    let got = evaluate(&classified, chain, p);
                    prop_assert_eq!(
                        want.verdict == Verdict::Drop,
                        got.verdict == Verdict::Drop,
                        "{} {:?}",
                        chain,
                        p
                    );
                    prop_assert_eq!(&want.counters, &got.counters, "{} {:?}", chain, p);
                }
            }
            Ok(())
        })
        .unwrap();
    // Not a vacuous comparison: most random NSGs do get split.
    assert!(split_cases.into_inner() >= 24);
}

#[test]
fn small_chains_stay_listed_and_large_ones_are_classified() {
    let snap = common::layered_nsg();
    let small = listed(&snap, "web-subnet");
    let default = render(
        &snap,
        &Target::Subnet("web-subnet".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    assert_eq!(
        small, default,
        "below min_rules the classified layout is the listed one"
    );

    let (_, plan) = classified_80();
    assert!(
        !has_vmap(&plan, "nsg_out"),
        "outbound has only the defaults"
    );
    assert!(plan
        .notes
        .iter()
        .any(|n| n.starts_with("nsg_in IPv4: classified on source address")));
}

/// An NSG of `n` inbound rules on 198.18.<i>.0/24, allow and deny mixed, two ports, an audit.
fn many_rules(n: usize) -> String {
    let mut y = String::from(
        "apiVersion: palisade/v1\nvirtualNetworks:\n  - name: v\n    addressSpace: [10.60.0.0/16]\n    subnets:\n      - {name: srv, addressPrefix: 10.60.1.0/24, networkSecurityGroup: g}\nnetworkSecurityGroups:\n  - name: g\n    securityRules:\n",
    );
    y.push_str("      - {name: audit-5001, priority: 100, direction: Inbound, access: Deny, protocol: Tcp, sourceAddressPrefix: \"*\", destinationAddressPrefix: \"*\", destinationPortRange: \"5001\", palisade: {mode: Audit}}\n");
    for i in 0..n {
        y.push_str(&format!(
            "      - {{name: r{i}, priority: {}, direction: Inbound, access: {}, protocol: Tcp, sourceAddressPrefix: 198.18.{i}.0/24, destinationAddressPrefix: \"*\", destinationPortRange: \"{}\"}}\n",
            101 + i,
            if i % 3 == 0 { "Deny" } else { "Allow" },
            5000 + i % 2,
        ));
    }
    y.push_str("      - {name: allow-range, priority: 1000, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: 198.18.0.0/18, destinationAddressPrefix: \"*\", destinationPortRange: \"5000-5001\"}\n");
    y
}

/// The 80-rule NSG of [`many_rules`] and its default rendering for subnet `srv`: inbound is
/// long enough to be classified (a verdict map on the source address).
fn classified_80() -> (palisade_policy::Snapshot, TablePlan) {
    let snap = snapshot_of_yaml(&many_rules(80));
    let plan = render(
        &snap,
        &Target::Subnet("srv".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    assert!(has_vmap(&plan, "nsg_in"));
    (snap, plan)
}

// spec NSG-5.1, NSG-7.1: the kernel, given the classified table, connects exactly the flows the
// listed rules allow, and the deciding rules' counters are the ones that move.
#[test]
fn classified_table_in_the_kernel_agrees_with_the_listed_rules() {
    require_kernel!();
    let (snap, plan) = classified_80();
    let listed = listed(&snap, "srv");

    let srv = Netns::new("clsrv");
    let cli = Netns::new("clcli");
    // Sources under rules early, in the middle and late in the list, under the wide allow only,
    // and under no rule at all (DenyAllInBound).
    let sources: Vec<String> = [0, 1, 2, 9, 40, 41, 42, 78, 79, 100, 200]
        .iter()
        .map(|i| format!("198.18.{i}.10"))
        .collect();
    let with_len: Vec<String> = sources.iter().map(|s| format!("{s}/16")).collect();
    let refs: Vec<&str> = with_len.iter().map(String::as_str).collect();
    common::link(&cli, "eth0", &refs, &srv, "eth0", &["10.60.1.4/24"]);
    cli.exec(&["ip", "route", "add", "10.60.1.0/24", "dev", "eth0"])
        .unwrap();
    srv.exec(&["ip", "route", "add", "198.18.0.0/16", "dev", "eth0"])
        .unwrap();
    let nft = Nft::new(Some(srv.name.clone()));
    let (state, report) = apply::apply(&nft, &plan, None).unwrap();
    assert_eq!(report.mode, ApplyMode::Full);
    let (_, again) = apply::apply(&nft, &plan, Some(&state)).unwrap();
    assert_eq!(
        again.mode,
        ApplyMode::Unchanged,
        "the kernel listing reads back as applied"
    );
    let _l0 = common::listen(srv.name.clone(), 5000);
    let _l1 = common::listen(srv.name.clone(), 5001);

    let server: IpAddr = "10.60.1.4".parse().unwrap();
    let flows: Vec<(IpAddr, u16)> = sources
        .iter()
        .flat_map(|s| [5000, 5001].map(|p| (s.parse().unwrap(), p)))
        .collect();
    let connected: Vec<bool> = std::thread::scope(|sc| {
        let handles: Vec<_> = flows
            .iter()
            .enumerate()
            .map(|(i, &(src, dport))| {
                let ns = cli.name.clone();
                sc.spawn(move || common::connect(ns, src, 40000 + i as u16, server, dport))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut want_counters = std::collections::BTreeSet::new();
    let mut allowed = 0;
    let (mut walked_total, mut listed_total) = (0, 0);
    for (i, (&(src, dport), got)) in flows.iter().zip(&connected).enumerate() {
        let p = Packet {
            src,
            dst: server,
            protocol: 6,
            src_port: 40000 + i as u16,
            dst_port: dport,
            established: false,
        };
        let want = evaluate(&listed, "nsg_in", &p);
        let walked = evaluate(&plan, "nsg_in", &p);
        assert_eq!(want.verdict, walked.verdict);
        // At most the verdict map more, whatever the source.
        assert!(
            walked.rules <= want.rules + 1,
            "{src}: {walked:?} vs {want:?}"
        );
        walked_total += walked.rules;
        listed_total += want.rules;
        assert_eq!(
            *got,
            want.verdict != Verdict::Drop,
            "{src} → :{dport}: {want:?}"
        );
        allowed += *got as usize;
        want_counters.extend(want.counters);
    }
    assert!(
        allowed > 0 && allowed < flows.len(),
        "both verdicts exercised"
    );
    assert!(
        walked_total * 2 < listed_total,
        "{walked_total} vs {listed_total}"
    );
    let moved: std::collections::BTreeSet<String> = apply::counters(&nft, &plan.table)
        .unwrap()
        .into_iter()
        .filter(|(_, (packets, _))| *packets > 0)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(moved, want_counters);

    // One rule's port changed: the chains stay, so the change goes in piecewise (the rule in
    // each interval chain that holds it) and the kernel then equals the new model.
    let changed = snapshot_of_yaml(&many_rules(80).replace(
        "sourceAddressPrefix: 198.18.40.0/24, destinationAddressPrefix: \"*\", destinationPortRange: \"5000\"",
        "sourceAddressPrefix: 198.18.40.0/24, destinationAddressPrefix: \"*\", destinationPortRange: \"5002\"",
    ));
    let new_plan = render(
        &changed,
        &Target::Subnet("srv".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    assert_ne!(new_plan, plan);
    let (state, report) = apply::apply(&nft, &new_plan, Some(&state)).unwrap();
    assert_eq!(report.mode, ApplyMode::Incremental, "{report:?}");
    assert!(apply::diff(&nft, &new_plan, Some(&state))
        .unwrap()
        .is_clean());
}

// The JSON transaction `host plan --output json` shows, applied with `nft -j -f`, gives the same
// table as the text one `apply` sends: the verdict map and its interval chains included.
#[test]
fn classified_json_transaction_lists_as_the_text_one() {
    require_kernel!();
    let (_, plan) = classified_80();
    let (text, json) = (Netns::new("cltxt"), Netns::new("cljson"));
    Nft::new(Some(text.name.clone()))
        .apply(&plan.replace_text())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.json");
    let payload = serde_json::json!({"nftables": plan.replace_commands()});
    std::fs::write(&file, payload.to_string()).unwrap();
    json.exec(&["nft", "-j", "-f", file.to_str().unwrap()])
        .unwrap();
    let list = |ns: &Netns| {
        ns.exec(&["nft", "list", "table", "inet", &plan.table])
            .unwrap()
    };
    let (a, b) = (list(&text), list(&json));
    assert!(a.contains("vmap {") && a.contains("goto nsg_in_4_"), "{a}");
    assert_eq!(a, b);
}
