// spec PAL-5.4: the proposer's rules, each checked on synthetic flow records shaped as the
// gateway and the kernel's NFLOG reader write them.

use super::*;
use palisade_model::Protocol;
use palisade_policy::trace::{Flow, TraceOptions, Verdict};
use proptest::prelude::*;

const NET: &str = r#"apiVersion: palisade/v1
virtualNetworks:
  - name: vnet
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: app, addressPrefix: 10.0.1.0/24, networkSecurityGroup: app-nsg, routeTable: egress}
      - {name: AzureFirewallSubnet, addressPrefix: 10.0.2.0/24}
networkSecurityGroups:
  - name: app-nsg
    securityRules:
      - {name: allow-dns, priority: 199, direction: Outbound, access: Allow, protocol: Udp, sourceAddressPrefix: "*", destinationAddressPrefix: "*", destinationPortRange: "53"}
      - {name: deny-db, priority: 200, direction: Outbound, access: Deny, protocol: Tcp, sourceAddressPrefix: "*", destinationAddressPrefix: "*", destinationPortRange: "5432-5433"}
routeTables:
  - name: egress
    routes: [{name: default, addressPrefix: 0.0.0.0/0, nextHopType: VirtualAppliance, nextHopIpAddress: 10.0.2.4}]
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.2.4, subnet: vnet/AzureFirewallSubnet}]
    applicationRuleCollections:
      - name: deny-apps
        priority: 100
        action: {type: Deny}
        rules: [{name: no-games, sourceAddresses: ["*"], protocols: ["Https:443"], targetFqdns: [games.example.org]}]
"#;

fn load(text: &str) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("net.yaml");
    std::fs::write(&file, text).unwrap();
    let loaded = palisade_load::load(&palisade_load::Source::files([file]));
    let errors = loaded.error_lines();
    (dir, loaded.snapshot.unwrap_or_else(|| panic!("{errors:?}")))
}

fn at(secs: u64) -> String {
    palisade_flowlog::format_time(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000 + secs),
    )
}

fn fw_deny(t: u64, protocol: &str, name: Option<&str>, dst: &str, port: u16) -> FlowRecord {
    FlowRecord {
        time: at(t),
        protocol: protocol.into(),
        source_ip: Some("10.0.1.4".parse().unwrap()),
        source_port: 40000,
        destination_ip: Some(dst.parse().unwrap()),
        destination_port: port,
        name: name.map(String::from),
        action: "Deny".into(),
        layer: "FirewallDefault".into(),
        decided_by: Some("default".into()),
        reason: "DefaultAction".into(),
        ..Default::default()
    }
}

fn nsg_deny(t: u64, dst: &str, port: u16) -> FlowRecord {
    FlowRecord {
        time: at(t),
        mode: "host".into(),
        protocol: "TCP".into(),
        source_ip: Some("10.0.1.4".parse().unwrap()),
        source_port: 40000,
        destination_ip: Some(dst.parse().unwrap()),
        destination_port: port,
        action: "Deny".into(),
        layer: "SubnetNsg".into(),
        policy: Some("app-nsg".into()),
        rule_collection: Some("app-nsg".into()),
        rule: Some("deny-db".into()),
        priority: Some(200),
        reason: "RuleMatched".into(),
        ..Default::default()
    }
}

fn learn(
    snapshot: &Snapshot,
    records: &[FlowRecord],
    names: &HashMap<String, Vec<IpAddr>>,
) -> Learned {
    let scope = Scope::resolve(snapshot, "app").unwrap();
    propose(&Input {
        snapshot,
        records,
        scope: &scope,
        since: None,
        until: None,
        catalogs: &[],
        names,
        firewall: None,
        samples: DEFAULT_SAMPLES,
    })
    .unwrap()
}

fn app_targets(l: &Learned) -> Vec<String> {
    l.proposals
        .iter()
        .filter_map(|p| match &p.rule {
            ProposedRule::ApplicationRule { target_fqdns, .. } => Some(target_fqdns.join(",")),
            _ => None,
        })
        .collect()
}

fn https(names: &[String]) -> Vec<FlowRecord> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| fw_deny(i as u64, "HTTPS", Some(n), "203.0.113.7", 443))
        .collect()
}

fn names(parent: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}.{parent}")).collect()
}

#[test]
fn pal_5_4_four_siblings_stay_names_five_widen() {
    let (_d, snap) = load(NET);
    let four = learn(&snap, &https(&names("api.example.net", 4)), &HashMap::new());
    assert_eq!(app_targets(&four), names("api.example.net", 4));
    let five = learn(&snap, &https(&names("api.example.net", 5)), &HashMap::new());
    assert_eq!(app_targets(&five), ["*.api.example.net"]);
    assert_eq!(five.proposals[0].evidence.count, 5);
    assert!(
        five.proposals[0].why.contains("5 distinct names"),
        "{}",
        five.proposals[0].why
    );
    // The same name five times is one name: no widening.
    let same: Vec<String> = vec!["a.api.example.net".into(); 5];
    assert_eq!(
        app_targets(&learn(&snap, &https(&same), &HashMap::new())),
        ["a.api.example.net"]
    );
}

#[test]
fn pal_5_4_never_widens_to_a_public_suffix() {
    let (_d, snap) = load(NET);
    for suffix in ["com", "co.uk", "github.io", "test"] {
        let l = learn(&snap, &https(&names(suffix, 7)), &HashMap::new());
        assert_eq!(app_targets(&l).len(), 7, "{suffix}: {:?}", app_targets(&l));
        assert!(app_targets(&l).iter().all(|t| !t.starts_with('*')));
    }
    assert!(
        is_public_suffix("co.uk") && is_public_suffix("com") && !is_public_suffix("example.co.uk")
    );
}

#[test]
fn pal_5_4_nsg_allow_takes_the_free_priority_nearest_before_the_deny() {
    let (_d, snap) = load(NET);
    // 199 is taken by allow-dns: the two services denied by deny-db (200) get 198 and 197.
    let recs = [
        nsg_deny(1, "10.9.0.5", 5432),
        nsg_deny(2, "10.9.0.5", 5433),
        nsg_deny(3, "10.9.0.6", 5432),
    ];
    let l = learn(&snap, &recs, &HashMap::new());
    let got: Vec<(u32, u16, Vec<String>)> = l
        .proposals
        .iter()
        .map(|p| match &p.rule {
            ProposedRule::NsgRule {
                priority,
                port,
                destination_addresses,
                nsg,
                direction,
                before,
                ..
            } => {
                assert_eq!(
                    (nsg.as_str(), direction.as_str(), before.as_str()),
                    ("app-nsg", "Outbound", "deny-db")
                );
                (*priority, *port, destination_addresses.clone())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (197, 5433, vec!["10.9.0.5".to_string()]),
            (
                198,
                5432,
                vec!["10.9.0.5".to_string(), "10.9.0.6".to_string()]
            ),
        ]
    );
    let taken: BTreeSet<u32> = [100, 101, 150].into();
    assert_eq!(free_priority_before(&taken, 102), None);
    assert_eq!(free_priority_before(&taken, 151), Some(149));
    assert_eq!(free_priority_before(&BTreeSet::new(), 65500), Some(4096));
}

#[test]
fn pal_5_4_unnamed_addresses_get_the_smallest_service_tag_holding_them() {
    let (_d, snap) = load(NET);
    let tags = &snap.catalogs.service_tags;
    let storage = tags
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case("Storage.WestUS"))
        .expect("tag");
    let ips: Vec<IpAddr> = storage
        .ipv4()
        .take(2)
        .map(|n| IpAddr::V4(n.network()))
        .collect();
    let recs: Vec<FlowRecord> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| fw_deny(i as u64, "TCP", None, &ip.to_string(), 8443))
        .collect();
    let l = learn(&snap, &recs, &HashMap::new());
    let [p] = l.proposals.as_slice() else {
        panic!("{:?}", l.proposals)
    };
    let ProposedRule::NetworkRule {
        destination: Destination::ServiceTag(tag),
        ..
    } = &p.rule
    else {
        panic!("{p:?}")
    };
    // The answer holds every address, and no tag that holds them all is smaller.
    let chosen = tags.get(tag).unwrap();
    assert!(ips.iter().all(|ip| chosen.contains(*ip)));
    for t in tags.iter().filter(|t| ips.iter().all(|ip| t.contains(*ip))) {
        assert!(
            tag_size(&t.address_prefixes) >= tag_size(&chosen.address_prefixes),
            "{} is smaller than {tag}",
            t.name
        );
    }
    assert!(!tag.eq_ignore_ascii_case("AzureCloud"));
    // An address in no tag stays an address.
    let l = learn(
        &snap,
        &[fw_deny(1, "UDP", None, "192.0.2.1", 9999)],
        &HashMap::new(),
    );
    assert!(
        matches!(&l.proposals[0].rule, ProposedRule::NetworkRule { destination: Destination::Addresses(a), .. } if a == &["192.0.2.1"])
    );
}

#[test]
fn pal_5_4_a_bound_name_wins_over_addresses() {
    let (_d, snap) = load(NET);
    let names: HashMap<String, Vec<IpAddr>> = [(
        "db.partner.example".to_string(),
        vec!["192.0.2.10".parse().unwrap()],
    )]
    .into();
    let l = learn(
        &snap,
        &[fw_deny(1, "TCP", None, "192.0.2.10", 1433)],
        &names,
    );
    assert!(
        matches!(&l.proposals[0].rule, ProposedRule::NetworkRule { destination: Destination::Fqdn(f), port: 1433, .. } if f == "db.partner.example")
    );
}

#[test]
fn pal_5_4_explicit_denies_and_other_scopes_are_passed_over() {
    let (_d, snap) = load(NET);
    let mut explicit = fw_deny(1, "HTTPS", Some("games.example.org"), "203.0.113.9", 443);
    explicit.rule_collection = Some("deny-apps".into());
    explicit.rule = Some("no-games".into());
    explicit.decided_by = None;
    let mut elsewhere = fw_deny(2, "HTTPS", Some("x.example.org"), "203.0.113.9", 443);
    elsewhere.source_ip = Some("10.0.3.4".parse().unwrap());
    let l = learn(&snap, &[explicit, elsewhere], &HashMap::new());
    assert!(l.proposals.is_empty(), "{:?}", l.proposals);
    assert_eq!(l.denials, 1);
    assert!(
        l.passed_over[0].why.contains("deny-apps/no-games"),
        "{:?}",
        l.passed_over
    );
}

#[test]
fn pal_5_4_merged_proposals_allow_what_was_seen_and_nothing_broader() {
    let (_d, snap) = load(NET);
    let mut recs = https(&names("api.example.net", 2));
    recs.push(nsg_deny(9, "10.9.0.5", 5432));
    let l = learn(&snap, &recs, &HashMap::new());
    let mut doc: Value = serde_saphyr::from_str(NET).unwrap();
    merge_native(&mut doc, &native_diff(&l)).unwrap();
    let (_d2, merged) = load(&serde_json::to_string(&doc).unwrap());
    let trace = |snap: &Snapshot, to: &str, port: u16, host: Option<&str>| {
        snap.trace(
            &Flow {
                source: "10.0.1.4".parse().unwrap(),
                source_port: 40000,
                destination: to.parse().unwrap(),
                destination_port: port,
                protocol: Protocol::Tcp,
                host: host.map(String::from),
                app_protocol: None,
            },
            &TraceOptions::default(),
        )
    };
    // The NSG's answer for a flow: the outbound hop of app-nsg.
    let nsg = |snap: &Snapshot, to: &str, port: u16| {
        let t = trace(snap, to, port, None);
        let h = t
            .hops
            .iter()
            .find(|h| h.layer == "SubnetNsg")
            .expect("an NSG hop");
        (h.result, h.rule.clone().unwrap_or_default())
    };
    for host in ["n0.api.example.net", "n1.api.example.net"] {
        assert_eq!(
            trace(&snap, "203.0.113.7", 443, Some(host)).verdict,
            Verdict::Deny,
            "before: {host}"
        );
        assert_eq!(
            trace(&merged, "203.0.113.7", 443, Some(host)).verdict,
            Verdict::Allow,
            "after: {host}"
        );
    }
    assert_eq!(nsg(&snap, "10.9.0.5", 5432).0, "Deny");
    assert_eq!(
        nsg(&merged, "10.9.0.5", 5432),
        ("Allow", "securityRules/learn-out-tcp-5432".to_string())
    );
    // Not observed: a sibling name, another port, another address.
    for (port, host) in [(443, "n2.api.example.net"), (8443, "n0.api.example.net")] {
        assert_eq!(
            trace(&merged, "203.0.113.7", port, Some(host)).verdict,
            Verdict::Deny,
            "after: {host}:{port}"
        );
    }
    assert_eq!(
        nsg(&merged, "10.9.0.5", 5433),
        ("Deny", "securityRules/deny-db".to_string())
    );
    assert_eq!(
        nsg(&merged, "10.9.0.7", 5432),
        ("Deny", "securityRules/deny-db".to_string())
    );
}

#[test]
fn pal_5_4_evidence_names_the_catalog_entry() {
    let (_d, snap) = load(NET);
    let (catalog, _) = DependencyCatalog::from_json(
        "deps.json",
        r#"{"value":[{"category":"Identity","endpoints":[{"domainName":"login.example.com","endpointDetails":[{"port":443}]}]}]}"#,
    );
    let catalogs = [catalog.unwrap()];
    let scope = Scope::resolve(&snap, "10.0.1.0/24").unwrap();
    let recs = [
        fw_deny(5, "HTTPS", Some("login.example.com"), "203.0.113.7", 443),
        fw_deny(3, "HTTPS", Some("login.example.com"), "203.0.113.8", 443),
    ];
    let l = propose(&Input {
        snapshot: &snap,
        records: &recs,
        scope: &scope,
        since: None,
        until: None,
        catalogs: &catalogs,
        names: &HashMap::new(),
        firewall: None,
        samples: 1,
    })
    .unwrap();
    let e = &l.proposals[0].evidence;
    assert_eq!(
        (e.count, e.first_seen.as_str(), e.last_seen.as_str()),
        (2, at(3).as_str(), at(5).as_str())
    );
    assert_eq!(e.samples.len(), 1);
    assert_eq!(e.catalog[0].category, "Identity");
    // The window: only the later record.
    let since = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_004);
    let l = propose(&Input {
        snapshot: &snap,
        records: &recs,
        scope: &scope,
        since: Some(since),
        until: None,
        catalogs: &catalogs,
        names: &HashMap::new(),
        firewall: None,
        samples: 1,
    })
    .unwrap();
    assert_eq!(l.proposals[0].evidence.count, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // spec PAL-5.4: a widened parent has ≥ 5 distinct children and is never a public suffix.
    #[test]
    fn pal_5_4_widening_rule(labels in prop::collection::vec("[a-e]{1,2}", 0..12), parents in prop::collection::vec(prop::sample::select(vec!["com", "co.uk", "example.com", "a.example.com", "github.io", "x.github.io"]), 1..12)) {
        let names: Vec<String> = labels.iter().zip(parents.iter().cycle()).map(|(l, p)| format!("{l}.{p}")).collect();
        for p in widened_parents(&names) {
            prop_assert!(!is_public_suffix(&p));
            let kids: BTreeSet<&String> = names.iter().filter(|n| parent(n) == Some(p.as_str())).collect();
            prop_assert!(kids.len() >= WIDEN_AT);
        }
    }

    // spec PAL-5.4: the order of the records does not change the proposals.
    #[test]
    fn pal_5_4_deterministic(seed in any::<u64>(), n in 1usize..12) {
        let (_d, snap) = load(NET);
        let mut recs = https(&names("svc.example.net", n));
        recs.push(nsg_deny(50, "10.9.0.5", 5432));
        recs.push(fw_deny(51, "UDP", None, "192.0.2.1", 123));
        let first = serde_json::to_string(&learn(&snap, &recs, &HashMap::new())).unwrap();
        // A seeded shuffle (Fisher-Yates on a small LCG).
        let mut s = seed;
        for i in (1..recs.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            recs.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(first, serde_json::to_string(&learn(&snap, &recs, &HashMap::new())).unwrap());
    }
}

#[test]
fn pal_5_4_arm_diff_joins_the_network_as_child_resources() {
    let (dir, snap) = load(NET);
    let l = learn(&snap, &[nsg_deny(1, "10.9.0.5", 5432)], &HashMap::new());
    let diff = dir.path().join("learned.json");
    std::fs::write(
        &diff,
        serde_json::to_string(&arm_diff(&l).unwrap()).unwrap(),
    )
    .unwrap();
    let loaded = palisade_load::load(&palisade_load::Source::files([
        dir.path().join("net.yaml"),
        diff,
    ]));
    let errors = loaded.error_lines();
    let merged = loaded.snapshot.unwrap_or_else(|| panic!("{errors:?}"));
    let nsg = merged
        .network
        .network_security_groups
        .iter()
        .find(|n| n.name == "app-nsg")
        .unwrap();
    let rule = nsg
        .security_rules
        .iter()
        .find(|r| r.name == "learn-out-tcp-5432")
        .expect("joined");
    assert_eq!((rule.priority, rule.access), (198, Access::Allow));
    // A classic firewall's collections have no child resource: said, not guessed.
    let l = learn(&snap, &https(&names("example.net", 1)), &HashMap::new());
    assert!(arm_diff(&l).unwrap_err().contains("classic firewall"));
}

fn any_record() -> impl Strategy<Value = FlowRecord> {
    (
        prop::sample::select(vec!["HTTP", "HTTPS", "TCP", "UDP", "ICMP", "", "weird"]),
        prop::sample::select(vec![
            "FirewallDefault",
            "FirewallApplication",
            "SubnetNsg",
            "NicNsg",
            "",
            "Other",
        ]),
        prop::option::of("[a-z0-9.*-]{0,20}"),
        prop::option::of(prop::sample::select(vec![
            "deny-db",
            "DenyAllOutBound",
            "nope",
            "",
        ])),
        prop::option::of(prop::sample::select(vec![
            "default",
            "address-check",
            "tunnel-check",
        ])),
        any::<u16>(),
        any::<[u8; 4]>(),
        prop::sample::select(vec!["Deny", "Allow", "deny", "Audit"]),
        "[0-9T:.Z-]{0,24}",
    )
        .prop_map(
            |(protocol, layer, name, rule, decided_by, port, dst, action, time)| FlowRecord {
                time,
                protocol: protocol.into(),
                layer: layer.into(),
                name,
                policy: rule.map(|_| "app-nsg".to_string()),
                rule: rule.map(String::from),
                decided_by: decided_by.map(String::from),
                source_ip: Some("10.0.1.9".parse().unwrap()),
                destination_ip: Some(IpAddr::from(dst)),
                destination_port: port,
                action: action.into(),
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    // spec PAL-5.4: any records — malformed names, unknown layers, missing times — give an
    // answer without panicking; every proposal has evidence and no target is a public suffix
    // wildcard; NSG priorities stay in the NSG-3 range and below the denying rule.
    #[test]
    fn pal_5_4_any_records_any_scope(records in prop::collection::vec(any_record(), 0..40), scope in "[a-z0-9:./]{0,16}") {
        let (_d, snap) = load(NET);
        let _ = Scope::resolve(&snap, &scope);
        let l = learn(&snap, &records, &HashMap::new());
        for p in &l.proposals {
            prop_assert!(p.evidence.count > 0);
            match &p.rule {
                ProposedRule::ApplicationRule { target_fqdns, .. } => {
                    for t in target_fqdns {
                        if let Some(parent) = t.strip_prefix("*.") {
                            prop_assert!(!is_public_suffix(parent), "{t}");
                        }
                    }
                }
                ProposedRule::NsgRule { priority, before_priority, .. } => {
                    prop_assert!((100..=4096).contains(priority) && priority < before_priority);
                }
                ProposedRule::NetworkRule { .. } => {}
            }
        }
        let _ = yaml_text(&l).unwrap();
    }
}
