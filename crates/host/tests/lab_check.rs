//! `lab check` on the shared scenarios: every flow of `flows.yaml` sent as real packets through
//! the lab agrees with `trace` (verdict, and for an NSG deny the rule the kernel logged), and a
//! lab whose kernel differs from the model is reported, not hidden. Root only.

mod common;

use palisade_host::lab::{self, check, Observed};
use palisade_policy::{Snapshot, Verdict};
use std::path::PathBuf;
use std::time::Instant;

fn scenario(name: &str) -> (Snapshot, Vec<check::FlowCase>) {
    let dir = common::shared().join("scenarios").join(name);
    let snap = common::snapshot_of(dir.join("network.json"));
    let flows = check::load_flows(&dir.join("flows.yaml")).unwrap();
    (snap, flows)
}

/// Build, check, take down (also when the check fails).
fn run_check(
    built_from: &Snapshot,
    checked_against: &Snapshot,
    flows: &[check::FlowCase],
    tag: &str,
) -> check::CheckReport {
    let state_dir = tempfile::tempdir().unwrap();
    let run = format!("{tag}{}", std::process::id() % 100_000);
    let plan = lab::plan(built_from, &run, &check::addresses(flows)).unwrap();
    let state = lab::up(built_from, plan, vec![], state_dir.path(), None).unwrap();
    let report = check::check(checked_against, &state, flows);
    lab::down(state_dir.path(), &run).unwrap();
    report.unwrap()
}

fn observed<'r>(r: &'r check::CheckReport, flow: &str) -> &'r Observed {
    &r.flows.iter().find(|f| f.flow == flow).unwrap().observed
}

// spec NSG-5.1, NSG-6, NSG-7.1: subnet and NIC NSGs in series, first match decides, replies pass.
#[test]
fn layered_nsg_every_flow_agrees() {
    require_kernel!();
    let started = Instant::now();
    let (snap, flows) = scenario("layered-nsg");
    let r = run_check(&snap, &snap, &flows, "cl");
    eprintln!("layered-nsg: {} flows in {:?}", r.total, started.elapsed());
    assert_eq!(r.total, flows.len());
    assert!(r.disagree.is_empty(), "{:#?}", r.disagree);
    assert_eq!(r.agree, flows.len());
    assert_eq!(
        observed(&r, "internet-http-to-web-vm1"),
        &Observed::Denied("web-vm1-nic-nsg/Deny-All-Other".into())
    );
    assert_eq!(
        observed(&r, "internet-https-to-web-vm1"),
        &Observed::Connected
    );
}

// spec RT-5, RT-8, RT-9: on rt-broken the reply goes to the firewall, which never saw the
// request, and the connection times out; on rt-fixed the Internet routes carry it back.
#[test]
fn asymmetric_routing_broken_and_fixed() {
    require_kernel!();
    let started = Instant::now();
    let (snap, flows) = scenario("asymmetric-routing");
    let r = run_check(&snap, &snap, &flows, "ca");
    eprintln!(
        "asymmetric-routing: {} flows in {:?}",
        r.total,
        started.elapsed()
    );
    assert!(r.disagree.is_empty(), "{:#?}", r.disagree);
    assert_eq!(r.agree, flows.len());
    assert_eq!(observed(&r, "mgmt-454-broken"), &Observed::TimedOut);
    assert_eq!(observed(&r, "mgmt-454-fixed"), &Observed::Connected);
    assert_eq!(
        observed(&r, "app-https-fixed-unlisted-client"),
        &Observed::TimedOut
    );
    // Through the firewall and back (UDP).
    assert_eq!(
        observed(&r, "egress-ntp-broken-subnet"),
        &Observed::Connected
    );
}

// A kernel that differs from the model is reported: the lab is built from layered-nsg, the
// check traces a copy whose SMTP deny became an allow.
#[test]
fn a_disagreement_is_reported() {
    require_kernel!();
    let (snap, flows) = scenario("layered-nsg");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::shared().join("scenarios/layered-nsg/network.json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let changed = allow_rule(v, "Deny-SMTP-Internet");
    let file: PathBuf = dir.path().join("network.json");
    std::fs::write(&file, changed.to_string()).unwrap();
    let model = common::snapshot_of(file);
    let smtp: Vec<_> = flows
        .into_iter()
        .filter(|f| f.name == "web-smtp-out")
        .collect();
    assert_eq!(smtp.len(), 1);
    let r = run_check(&snap, &model, &smtp, "cd");
    assert_eq!((r.total, r.agree), (1, 0));
    let d = &r.disagree[0];
    assert_eq!(d.trace_verdict, Verdict::Allow);
    assert_eq!(d.logged_rule.as_deref(), Some("web-nsg/Deny-SMTP-Internet"));
}

/// The same network with one rule's access turned to Allow.
fn allow_rule(mut v: serde_json::Value, rule: &str) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value, rule: &str) {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("name").and_then(|n| n.as_str()) == Some(rule) {
                    if let Some(p) = m.get_mut("properties").and_then(|p| p.as_object_mut()) {
                        p.insert("access".into(), "Allow".into());
                    }
                }
                m.values_mut().for_each(|x| walk(x, rule));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, rule)),
            _ => {}
        }
    }
    walk(&mut v, rule);
    v
}

// 150 random flows (TCP and UDP, inside, out and in) over layered-nsg: the kernel agrees with trace
// on each, NSG denies named by the rule logged.
#[test]
fn random_flows_agree_on_layered_nsg() {
    require_kernel!();
    let started = Instant::now();
    let (snap, _) = scenario("layered-nsg");
    let flows = lab::random::flows(&snap, 150, 11);
    let r = run_check(&snap, &snap, &flows, "cr");
    eprintln!(
        "layered-nsg random: {} flows in {:?}",
        r.total,
        started.elapsed()
    );
    assert!(r.disagree.is_empty(), "{:#?}", r.disagree);
    assert_eq!(r.agree, 150);
    let connected = r
        .flows
        .iter()
        .filter(|f| f.observed == Observed::Connected)
        .count();
    let denied = r
        .flows
        .iter()
        .filter(|f| matches!(f.observed, Observed::Denied(_)))
        .count();
    assert!(
        connected > 0 && denied > 0,
        "{connected} connected, {denied} denied"
    );
}
