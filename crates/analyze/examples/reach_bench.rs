//! Reachability benchmark (issue 6 targets): the generated hub-and-spoke network (500 spokes,
//! NSGs of 50 rules, a firewall with 5,000 network rules), full matrix and one-rule re-checks,
//! against the brute-force baseline (one `trace` per flow).
//!
//! `cargo run --release -p palisade-analyze --example reach_bench [spokes nsg_rules fw_rules]`

use palisade_analyze::gen::{HubSpoke, Rng};
use palisade_analyze::reach::Engine;
use palisade_model::catalog::Catalogs;
use palisade_model::{Access, Direction, Protocol};
use palisade_policy::firewall::CompiledFirewall;
use palisade_policy::nsg::CompiledNsg;
use palisade_policy::{CompileOptions, Flow, Snapshot, TraceOptions};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let args = palisade_analyze::reach::bench::example_args(std::env::args().skip(1), 1);
    let (spokes, nsg_rules, firewall_rules, _) = args.unwrap_or_else(|e| {
        eprintln!("reach_bench: {e}");
        std::process::exit(2)
    });
    let mut g = HubSpoke::target();
    (g.spokes, g.nsg_rules, g.firewall_rules) = (spokes, nsg_rules, firewall_rules);
    let catalogs = Catalogs::embedded();
    let t = Instant::now();
    let net = g.build();
    let gen_ms = ms(t);
    let t = Instant::now();
    let snap = Snapshot::compile(&net, &catalogs, &CompileOptions::default());
    let compile_ms = ms(t);
    println!(
        "network: {} spokes, {} NSGs × {} rules, {} firewall network rules, {} app rules (generate {gen_ms:.0} ms, compile {compile_ms:.0} ms)",
        g.spokes,
        net.network_security_groups.len(),
        g.nsg_rules,
        g.firewall_rules,
        g.app_rules
    );

    // Full matrix, best of ROUNDS (default 1).
    let mut full = f64::MAX;
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let mut engine = None;
    for _ in 0..rounds.max(1) {
        drop(engine.take());
        let t = Instant::now();
        engine = Some(Engine::new(&snap));
        full = full.min(ms(t));
    }
    let mut engine = engine.expect("one round");
    let (a4, a6) = engine.atoms();
    let (plans, cells, chains) = engine.stats();
    let pairs = a4 * a4 + a6 * a6;
    println!("full matrix: {full:.0} ms; atoms v4 {a4} v6 {a6} ({pairs} atom pairs), {plans} distinct plans, {cells} cells, {chains} chains of controls");

    // One-rule NSG change: flip an outbound rule of the middle spoke's NSG.
    let j = g.spokes / 2;
    let s = snap
        .subnet_by_name(&format!("spoke{j}/workload"))
        .expect("spoke");
    let idx = snap.subnet(s).nsg.expect("nsg");
    let mut changed = net.clone();
    let nsg = changed
        .network_security_groups
        .iter_mut()
        .find(|n| n.name == format!("nsg-{j}"))
        .expect("nsg");
    let r = &mut nsg.security_rules[3];
    r.access = if r.access == Access::Allow {
        Access::Deny
    } else {
        Access::Allow
    };
    let nsg = nsg.clone();
    let t = Instant::now();
    let compiled = CompiledNsg::compile(&nsg, &catalogs, &snap.subnet(s).tags, &HashMap::new());
    let nsg_compile = ms(t);
    let mut nsg_times = vec![];
    for round in 0..5 {
        let rules = if round % 2 == 0 {
            &compiled.outbound
        } else {
            &snap.nsg(idx).outbound
        };
        let t = Instant::now();
        let n = engine
            .update_nsg(idx, Direction::Outbound, rules)
            .expect("update");
        nsg_times.push((ms(t), n));
    }
    println!("NSG one-rule re-check: {:?} ms (pairs re-evaluated {:?}); recompiling that NSG {nsg_compile:.2} ms",
        nsg_times.iter().map(|x| (x.0 * 100.0).round() / 100.0).collect::<Vec<_>>(),
        nsg_times.iter().map(|x| x.1).collect::<Vec<_>>());

    // One-rule firewall changes: a narrow one (spoke-to-spoke rule's ports), a broad one.
    let fw_model = &net.azure_firewalls[0];
    let (fw0, fw0_compiled) = snap.firewalls().next().expect("a firewall");
    let mut fw_times = vec![];
    for (label, col, rule, broad) in [
        ("narrow", 20usize, 7usize, false),
        ("broad (destination *)", 10, 11, true),
    ] {
        let mut fw = fw_model.clone();
        let r = &mut fw.rule_collections[col].rules[rule];
        r.destination_ports = vec![palisade_model::PortRange::single(3389)];
        if broad {
            r.destination_addresses = vec![palisade_model::AddressItem::Any];
            r.source_addresses = vec![palisade_model::AddressItem::Prefix(g.spoke(3))];
        } else {
            r.source_addresses = vec![palisade_model::AddressItem::Prefix(g.spoke(3))];
            r.destination_addresses = vec![palisade_model::AddressItem::Prefix(g.spoke(4))];
        }
        let t = Instant::now();
        let cfw = CompiledFirewall::compile(&fw, &changed, &catalogs, &HashMap::new());
        let fw_compile = ms(t);
        let t = Instant::now();
        let n = engine.update_firewall(fw0, &cfw).expect("update");
        let there = ms(t);
        let t = Instant::now();
        let m = engine.update_firewall(fw0, fw0_compiled).expect("update");
        let back = ms(t);
        fw_times.push((label, there, back, n, m, fw_compile));
        println!("firewall one-rule re-check ({label}): {there:.2} ms ({n} pairs), back {back:.2} ms ({m} pairs); recompiling the firewall {fw_compile:.1} ms");
    }

    // Brute force: one trace per flow.
    let mut rng = Rng::new(7);
    let n = 200_000;
    let flows: Vec<Flow> = (0..n)
        .map(|_| {
            let s = g.spoke(rng.below(g.spokes));
            let d = g.spoke(rng.below(g.spokes));
            let host = |p: ipnet::IpNet, r: &mut Rng| match p {
                ipnet::IpNet::V4(v) => IpAddr::V4(Ipv4Addr::from(
                    u32::from(v.network()) + 4 + r.below(200) as u32,
                )),
                _ => unreachable!(),
            };
            Flow {
                source: host(s, &mut rng),
                source_port: 50000,
                destination: host(d, &mut rng),
                destination_port: [22u16, 80, 443, 3389, 8080, 1500][rng.below(6)],
                protocol: if rng.below(4) == 0 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                host: None,
                app_protocol: None,
            }
        })
        .collect();
    let t = Instant::now();
    let mut allowed = 0;
    for f in &flows {
        if snap.trace(f, &TraceOptions::default()).verdict == palisade_policy::Verdict::Allow {
            allowed += 1;
        }
    }
    let per_trace_us = ms(t) * 1e3 / n as f64;
    // An exact brute force must try every flow; even one per (source subnet, destination
    // subnet, protocol TCP/UDP, destination port) with a single address per subnet is:
    let minimal = (g.spokes as f64).powi(2) * 2.0 * 65536.0;
    let brute_s = minimal * per_trace_us / 1e6;
    println!("brute force: {per_trace_us:.2} µs per trace ({allowed}/{n} allowed); one flow per (src subnet, dst subnet, TCP/UDP, dst port) = {minimal:.2e} traces ≈ {:.1} h", brute_s / 3600.0);
    println!(
        "ratio full matrix vs that brute force: {:.0}×",
        brute_s * 1e3 / full
    );
    let atom_brute = pairs as f64 * 2.0 * 65536.0 * per_trace_us / 1e6;
    println!("brute force over the same atoms (one address per atom, TCP/UDP, every dst port): {atom_brute:.0} s, ratio {:.0}×", atom_brute * 1e3 / full);
}
