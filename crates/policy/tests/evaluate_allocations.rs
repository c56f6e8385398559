//! The firewall's decision path allocates nothing (ARCHITECTURE.md, `crates/policy`): a counting
//! global allocator in this test binary counts the calling thread's allocations around each
//! `CompiledFirewall::evaluate_with` (`evaluate` plus remembered DNS answers for FQDN network
//! rules, FW-5) and requires zero, for every kind of outcome.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use palisade_model::catalog::Catalogs;
use palisade_model::{
    AddressCheck, AddressItem, ApplicationProtocol, ApplicationProtocolType, AzureFirewall,
    FirewallAction, FirewallRule, Network, NetworkProtocol, PortRange, RuleCollection,
    RuleCollectionKind,
};
use palisade_policy::firewall::{CompiledFirewall, FirewallInput, FirewallPass, ResolvedNames};
use palisade_policy::matchers::PacketKey;

struct Counting;

thread_local! {
    // Per thread, so that the test harness's other threads do not count.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCS.with(Cell::get);
    let out = f();
    (out, ALLOCS.with(Cell::get) - before)
}

fn prefix(s: &str) -> AddressItem {
    AddressItem::Prefix(s.parse().unwrap())
}

fn https() -> Vec<ApplicationProtocol> {
    vec![ApplicationProtocol {
        protocol_type: ApplicationProtocolType::Https,
        port: 443,
    }]
}

fn firewall() -> CompiledFirewall {
    let net = Network {
        azure_firewalls: vec![AzureFirewall {
            name: "fw".into(),
            rule_collections: vec![
                RuleCollection::new(
                    "dnat",
                    100,
                    RuleCollectionKind::Nat,
                    FirewallAction::Dnat,
                    vec![FirewallRule {
                        source_addresses: vec![AddressItem::Any],
                        destination_addresses: vec![prefix("198.51.100.10/32")],
                        destination_ports: vec![PortRange::single(8443)],
                        ip_protocols: vec![NetworkProtocol::Tcp],
                        translated_address: Some(prefix("10.0.1.5/32")),
                        translated_port: Some(443),
                        ..FirewallRule::named("web-in")
                    }],
                ),
                RuleCollection::new(
                    "net-deny",
                    150,
                    RuleCollectionKind::Network,
                    FirewallAction::Deny,
                    vec![FirewallRule {
                        source_addresses: vec![AddressItem::Any],
                        destination_addresses: vec![prefix("192.0.2.66/32")],
                        destination_ports: vec![PortRange::ANY],
                        ip_protocols: vec![NetworkProtocol::Any],
                        ..FirewallRule::named("blackhole")
                    }],
                ),
                RuleCollection::new(
                    "net-allow",
                    200,
                    RuleCollectionKind::Network,
                    FirewallAction::Allow,
                    vec![
                        FirewallRule {
                            source_addresses: vec![prefix("10.0.0.0/8")],
                            destination_addresses: vec![prefix("192.0.2.0/24")],
                            destination_ports: vec![PortRange::single(22)],
                            ip_protocols: vec![NetworkProtocol::Tcp],
                            ..FirewallRule::named("ssh")
                        },
                        FirewallRule {
                            source_addresses: vec![prefix("10.0.0.0/8")],
                            destination_fqdns: vec!["db.example.test".into()],
                            destination_ports: vec![PortRange::single(5432)],
                            ip_protocols: vec![NetworkProtocol::Tcp],
                            ..FirewallRule::named("db")
                        },
                    ],
                ),
                RuleCollection::new(
                    "app-deny",
                    300,
                    RuleCollectionKind::Application,
                    FirewallAction::Deny,
                    vec![FirewallRule {
                        source_addresses: vec![prefix("10.9.0.0/16")],
                        protocols: https(),
                        target_fqdns: vec!["*.example.com".into()],
                        ..FirewallRule::named("lab-only")
                    }],
                ),
                RuleCollection::new(
                    "app-allow",
                    400,
                    RuleCollectionKind::Application,
                    FirewallAction::Allow,
                    vec![
                        FirewallRule {
                            source_addresses: vec![AddressItem::Any],
                            protocols: https(),
                            target_fqdns: vec![
                                "*.example.com".into(),
                                "www.contoso.com".into(),
                                "bücher.example".into(),
                            ],
                            ..FirewallRule::named("web")
                        },
                        FirewallRule {
                            source_addresses: vec![AddressItem::Any],
                            protocols: https(),
                            target_fqdns: vec!["*partner.example".into()],
                            ..FirewallRule::named("partner")
                        },
                    ],
                ),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let fw = CompiledFirewall::compile(
        &net.azure_firewalls[0],
        &net,
        &Catalogs::default(),
        &Default::default(),
    );
    assert!(fw.problems.is_empty(), "{:?}", fw.problems);
    fw
}

fn key(src: &str, dst: &str, protocol: u8, port: u16) -> PacketKey {
    PacketKey {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol,
        src_port: 50000,
        dst_port: port,
    }
}

/// The DNS proxy's answer for the FQDN network rule (FW-5): db.example.test is 198.18.0.5.
struct Resolved;

impl ResolvedNames for Resolved {
    fn names_of(&self, address: std::net::IpAddr, each: &mut dyn FnMut(&str)) {
        if address == std::net::IpAddr::from([198, 18, 0, 5]) {
            each("other.example.test");
            each("db.example.test");
        }
    }
}

/// Flow, host, expected pass, expected allowed, expected rule path.
type Case = (
    PacketKey,
    Option<&'static str>,
    FirewallPass,
    bool,
    Option<&'static str>,
);

#[test]
fn evaluate_allocates_nothing_for_any_outcome() {
    let fw = firewall();
    let cases: Vec<Case> = vec![
        (
            key("203.0.113.7", "198.51.100.10", 6, 8443),
            None,
            FirewallPass::FirewallDnat,
            true,
            Some("dnat/web-in"),
        ),
        (
            key("10.0.0.4", "192.0.2.66", 17, 53),
            None,
            FirewallPass::FirewallNetwork,
            false,
            Some("net-deny/blackhole"),
        ),
        (
            key("10.0.0.4", "192.0.2.9", 6, 22),
            None,
            FirewallPass::FirewallNetwork,
            true,
            Some("net-allow/ssh"),
        ),
        (
            key("10.0.0.4", "198.18.0.5", 6, 5432),
            None,
            FirewallPass::FirewallNetwork,
            true,
            Some("net-allow/db"),
        ),
        (
            key("10.0.0.4", "198.18.0.6", 6, 5432),
            None,
            FirewallPass::FirewallDefault,
            false,
            None,
        ),
        (
            key("10.0.0.4", "203.0.113.9", 6, 443),
            Some("WWW.Example.COM."),
            FirewallPass::FirewallApplication,
            true,
            Some("app-allow/web"),
        ),
        (
            key("10.9.0.4", "203.0.113.9", 6, 443),
            Some("api.example.com"),
            FirewallPass::FirewallApplication,
            false,
            Some("app-deny/lab-only"),
        ),
        (
            key("10.0.0.4", "203.0.113.9", 6, 443),
            Some("evilpartner.example"),
            FirewallPass::FirewallApplication,
            true,
            Some("app-allow/partner"),
        ),
        (
            key("10.0.0.4", "203.0.113.9", 6, 443),
            Some("Bücher.example"),
            FirewallPass::FirewallApplication,
            true,
            Some("app-allow/web"),
        ),
        (
            key("10.0.0.4", "203.0.113.9", 6, 443),
            Some("unlisted.org"),
            FirewallPass::FirewallDefault,
            false,
            None,
        ),
        (
            key("10.0.0.4", "203.0.113.9", 6, 80),
            Some("www.contoso.com"),
            FirewallPass::FirewallDefault,
            false,
            None,
        ),
        (
            key("10.0.0.4", "203.0.113.9", 6, 443),
            None,
            FirewallPass::FirewallDefault,
            false,
            None,
        ),
        (
            key("10.0.0.4", "203.0.113.9", 17, 443),
            Some("www.contoso.com"),
            FirewallPass::FirewallDefault,
            false,
            None,
        ),
    ];
    for (k, host, pass, allowed, rule) in cases {
        let input = FirewallInput {
            key: k,
            host,
            app_protocol: None,
        };
        // The PAL-5.2 lookup the gateway makes after every decision is counted too.
        let ((outcome, _check), allocs) = allocations_during(|| {
            let o = fw.evaluate_with(&input, &Resolved);
            let check = o.address_check(AddressCheck::Enforce);
            (o, check)
        });
        assert_eq!(allocs, 0, "{host:?} {k:?}: {allocs} allocations");
        assert_eq!(outcome.pass, pass, "{host:?}");
        assert_eq!(outcome.allowed, allowed, "{host:?}");
        assert_eq!(
            outcome.rule.as_ref().map(|r| r.path()).as_deref(),
            rule,
            "{host:?}"
        );
    }
}

#[test]
fn the_counter_sees_allocations() {
    let (_, allocs) = allocations_during(|| vec![1u8; 16]);
    assert_eq!(allocs, 1);
}
