//! The lab with IPv6 and ICMP: a dual-stack network (`tests/fixtures/dual-stack.yaml`) built in
//! namespaces — IPv6 addresses, host routes and the router's per-subnet IPv6 tables beside the
//! IPv4 ones, NSG tables matching both families — and real TCP connections and ICMP echo
//! requests of both families compared with `trace`. Root only.

mod common;

use palisade_host::lab::{self, check, Observed};
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

// spec NSG-2.2, NSG-5.1, NSG-7.1, PAL-5.1: both families through the same NSGs, each rule
// matching its own family; ICMP echo and its reply; the kernel logs the deciding deny rule.
#[test]
fn dual_stack_tcp_and_icmp_agree_with_trace() {
    require_kernel!();
    let snap = common::snapshot_of(fixture("dual-stack.yaml"));
    let flows = check::load_flows(&fixture("dual-stack-flows.yaml")).unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let run = format!("d{}", std::process::id() % 100_000);
    let plan = lab::plan(&snap, &run, &check::addresses(&flows)).unwrap();
    assert!(plan.has_ipv6());
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    let web = plan.place_named("web-nic").unwrap();
    assert_eq!(
        web.addresses,
        vec![
            "10.60.1.4".parse::<std::net::IpAddr>().unwrap(),
            "fd00:60:0:1::4".parse().unwrap()
        ]
    );
    let state = lab::up(&snap, plan, vec![], state_dir.path(), None).unwrap();
    let report = check::check(&snap, &state, &flows);
    lab::down(state_dir.path(), &run).unwrap();
    let r = report.unwrap();
    assert!(r.disagree.is_empty(), "{:#?}", r.disagree);
    assert_eq!((r.total, r.agree), (flows.len(), flows.len()));
    let observed = |name: &str| {
        r.flows
            .iter()
            .find(|f| f.flow == name)
            .unwrap()
            .observed
            .clone()
    };
    assert_eq!(observed("v6-https-app-to-web"), Observed::Connected);
    assert_eq!(
        observed("v6-ssh-app-to-web"),
        Observed::Denied("web-nsg/deny-ssh-v6".into())
    );
    assert_eq!(observed("v4-ssh-app-to-web"), Observed::Connected);
    assert_eq!(observed("v6-ping-app-to-web"), Observed::Connected);
    assert_eq!(
        observed("v4-ping-app-to-web"),
        Observed::Denied("app-nsg/deny-ping-to-web-v4".into())
    );
    assert_eq!(
        observed("v6-ping-internet-to-web"),
        Observed::Denied("web-nsg/deny-ping-from-internet".into())
    );
    assert_eq!(observed("v6-http-web-to-internet"), Observed::Connected);
}

// spec NSG-5.1, PAL-5.1: random TCP/UDP flows of both families over the dual-stack network.
#[test]
fn dual_stack_random_flows_agree_with_trace() {
    require_kernel!();
    let snap = common::snapshot_of(fixture("dual-stack.yaml"));
    let flows = lab::random::flows(&snap, 80, 11);
    assert!(flows.iter().any(|f| f.source.is_ipv6()));
    let state_dir = tempfile::tempdir().unwrap();
    let run = format!("r{}", std::process::id() % 100_000);
    let plan = lab::plan(&snap, &run, &check::addresses(&flows)).unwrap();
    let state = lab::up(&snap, plan, vec![], state_dir.path(), None).unwrap();
    let report = check::check(&snap, &state, &flows);
    lab::down(state_dir.path(), &run).unwrap();
    let r = report.unwrap();
    assert!(r.disagree.is_empty(), "{:#?}", r.disagree);
    assert_eq!(r.agree, 80);
    // Both answers occur among the IPv6 flows.
    let v6: Vec<&check::FlowResult> = r.flows.iter().filter(|f| f.flow.contains('[')).collect();
    assert!(v6.iter().any(|f| f.observed == Observed::Connected));
    assert!(v6.iter().any(|f| f.observed != Observed::Connected));
}
