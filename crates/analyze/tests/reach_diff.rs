//! Issue 15, item 4: `diff` built fast (one engine derived through the re-check when only rules
//! changed; otherwise both engines at once, verdicts compared before chains are spelled out)
//! gives exactly the report of the plain two-engine comparison, on random edits of small
//! generated networks (DIAG-7: the diff lists the flows whose verdict changes).
//! And the re-check's memory: an engine taking many random edits answers as one built from
//! scratch and its tables stay within a constant factor of a fresh engine's.

use palisade_analyze::diff::{self, Build, DiffPath, DiffReport};
use palisade_analyze::gen::{HubSpoke, Rng};
use palisade_analyze::headerspace::{Family, L4Set};
use palisade_analyze::reach::{self, Engine, FlowSet, NONE};
use palisade_model::catalog::Catalogs;
use palisade_model::{
    Access, AddressItem, FirewallAction, Network, PortRange, RoutePrefix, RuleCollectionKind,
};
use palisade_policy::{CompileOptions, Snapshot};
use std::collections::HashMap;

fn compile(net: &Network) -> Snapshot {
    Snapshot::compile(net, &Catalogs::embedded(), &CompileOptions::default())
}

// The oracle. This is deliberately a copy of the diff as it was first written, kept apart from
// `palisade_analyze::diff`: do not deduplicate it into the code it checks, or the property
// tests below would compare that code with itself.

/// The diff as it was first written: two serial engines, every atom pair's pieces compared and
/// every outcome spelled out. The reference the fast path must equal, report for report.
fn reference_diff(old: &Snapshot, new: &Snapshot) -> DiffReport {
    let (co, cn) = (reach::cuts(old), reach::cuts(new));
    let a = Engine::with_cuts(old, &cn);
    let b = Engine::with_cuts(new, &co);
    let none = reach::Outcome {
        verdict: reach::Reach::Unknown,
        chain: vec![],
    };
    type Key = (reach::Outcome, reach::Outcome, Vec<String>);
    let mut groups: HashMap<Key, (Vec<reach::Area>, L4Set)> = HashMap::new();
    let mut order: Vec<Key> = vec![];
    let mut compared = 0;
    for f in [Family::V4, Family::V6] {
        let n = if f == Family::V4 {
            a.atoms().0
        } else {
            a.atoms().1
        };
        for sa in 0..n {
            for da in 0..n {
                let (x, y) = (a.decision(f, sa, da), b.decision(f, sa, da));
                if x == NONE && y == NONE {
                    continue;
                }
                compared += 1;
                let side = |e: &Engine, d: u32| -> Vec<(L4Set, reach::Outcome)> {
                    if d == NONE {
                        vec![(L4Set::full(), none.clone())]
                    } else {
                        e.decision_pieces(d)
                            .into_iter()
                            .map(|(l4, o)| (l4, e.outcome(o)))
                            .collect()
                    }
                };
                for (l1, o1) in side(&a, x) {
                    for (l2, o2) in side(&b, y) {
                        if o1.verdict == o2.verdict {
                            continue;
                        }
                        let mut l = l1.intersect(&l2);
                        if l.is_empty() {
                            continue;
                        }
                        l.compact();
                        let key: Key = (o1.clone(), o2, reach::services(f, &l));
                        let region = (f, a.atom_range(f, sa), a.atom_range(f, da));
                        match groups.get_mut(&key) {
                            Some(g) => g.0.push(region),
                            None => {
                                order.push(key.clone());
                                groups.insert(key, (vec![region], l));
                            }
                        }
                    }
                }
            }
        }
    }
    let mut changes: Vec<diff::Change> = vec![];
    for key in order {
        let (regions, l4) = &groups[&key];
        let mut flows = vec![];
        let mut sets = vec![];
        for (f, s, d) in reach::products(regions) {
            if let Some((ex, _)) = reach::example(f, &s, &d, l4) {
                flows.push(FlowSet {
                    source_prefixes: reach::prefixes_text(f, &s),
                    destination_prefixes: reach::prefixes_text(f, &d),
                    services: key.2.clone(),
                    example: ex,
                });
            }
            sets.push((f, s, d, l4.clone()));
        }
        match changes.iter_mut().find(|c| {
            (&c.before_decided_by, &c.after_decided_by, c.before, c.after)
                == (&key.0.chain, &key.1.chain, key.0.verdict, key.1.verdict)
        }) {
            Some(c) => {
                c.flows.extend(flows);
                c.sets.extend(sets);
            }
            None => changes.push(diff::Change {
                before: key.0.verdict,
                after: key.1.verdict,
                before_decided_by: key.0.chain.clone(),
                after_decided_by: key.1.chain.clone(),
                flows,
                sets,
            }),
        }
    }
    changes.sort_by_key(|c| (c.before, c.after));
    DiffReport {
        changes,
        compared,
        path: DiffPath::TwoEngines("reference"),
    }
}

/// A report as compared: its changes (flow sets, exact sets, controls) and its count, not the
/// way it was computed.
fn text(r: &DiffReport) -> String {
    format!("{:?} compared {}", r.changes, r.compared)
}

/// An edit outside the rules the re-check takes (a route added, an NSG's connection flushing
/// turned on, a DNAT rule's translated port changed): `diff` must take the two-engine path.
fn edit_outside_rules(net: &mut Network, rng: &mut Rng) {
    match rng.below(3) {
        0 => {
            let Some(t) = net.route_tables.first_mut() else {
                return;
            };
            let mut r = t
                .routes
                .first()
                .cloned()
                .expect("the generator makes routes");
            r.name.push_str("-extra");
            r.address_prefix = RoutePrefix::Cidr("198.51.100.0/24".parse().expect("a prefix"));
            t.routes.push(r);
        }
        1 => {
            let n = &mut net.network_security_groups[0];
            n.flush_connection = !n.flush_connection;
        }
        _ => {
            let fw = &mut net.azure_firewalls[0];
            if let Some(c) = fw
                .rule_collections
                .iter_mut()
                .find(|c| c.kind == RuleCollectionKind::Nat)
            {
                if let Some(r) = c.rules.first_mut() {
                    r.translated_port = Some(r.translated_port.unwrap_or(80).wrapping_add(1));
                }
            }
        }
    }
}

/// One random edit of the generated network's rules (as the re-check property test of
/// `reach.rs` makes them): NSG — access flipped, ports opened, source widened to any, renamed,
/// priority moved, a rule added or deleted; firewall — a rule moved to the front, a collection's
/// priority changed, a rule added or deleted, the action flipped, ports opened or narrowed,
/// renamed. Returns what changed: `Some(true)` an NSG (by name), `Some(false)` the firewall.
fn edit(net: &mut Network, rng: &mut Rng) -> Option<(bool, String)> {
    let (a, b, op) = (rng.below(64), rng.below(64), rng.below(10));
    if rng.below(2) == 0 {
        let count = net.network_security_groups.len();
        let n = &mut net.network_security_groups[a % count];
        if n.security_rules.is_empty() {
            return None;
        }
        let k = b % n.security_rules.len();
        let len = n.security_rules.len();
        let r = &mut n.security_rules[k];
        match op {
            0 | 1 => {
                r.access = match r.access {
                    Access::Allow => Access::Deny,
                    Access::Deny => Access::Allow,
                }
            }
            2 => r.destination.port_ranges = vec![PortRange::ANY],
            3 => r.source.address_prefixes = vec![AddressItem::Any],
            4 => r.name.push_str("-r"),
            // NSG-4: its priority moved (before or after others).
            5 | 6 => r.priority = 95 + 10 * (a % (len + 1)) as u32,
            7 | 8 => {
                let mut copy = r.clone();
                copy.name.push_str("-added");
                copy.priority += 5;
                n.security_rules.push(copy);
            }
            _ => {
                n.security_rules.remove(k);
            }
        }
        Some((true, n.name.clone()))
    } else {
        let fw = &mut net.azure_firewalls[0];
        let network: Vec<usize> = (0..fw.rule_collections.len())
            .filter(|i| fw.rule_collections[*i].kind == RuleCollectionKind::Network)
            .collect();
        let at = network[a % network.len()];
        let c = &mut fw.rule_collections[at];
        if c.rules.is_empty() {
            return None;
        }
        let k = b % c.rules.len();
        match op {
            // FW-2.4: a rule moved to the front of its collection.
            0 => {
                let r = c.rules.remove(k);
                c.rules.insert(0, r);
            }
            // FW-1: the collection's priority changed.
            1 => c.priority = 100 + 10 * (b % 8) as u32 + (a % 2) as u32,
            2 | 3 => {
                let mut copy = c.rules[k].clone();
                copy.name.push_str(&format!("-added{}", rng.below(1000)));
                c.rules.insert(k + 1, copy);
            }
            4 => {
                c.action = if c.action == FirewallAction::Allow {
                    FirewallAction::Deny
                } else {
                    FirewallAction::Allow
                }
            }
            5 => c.rules[k].destination_ports = vec![PortRange::ANY],
            6 => c.rules[k].destination_ports = vec![PortRange::single(3389)],
            7 => c.rules[k].name.push_str("-r"),
            _ => {
                c.rules.remove(k);
            }
        }
        Some((false, String::new()))
    }
}

/// Apply the edited network's change to the engine; `false` when the engine refused it (a new
/// address, protocol or port boundary: a new engine's job).
fn apply(engine: &mut Engine, snap: &Snapshot, what: &(bool, String)) -> bool {
    if what.0 {
        let (idx, n) = snap.nsgs().find(|(_, x)| x.name == what.1).unwrap();
        [
            palisade_model::Direction::Inbound,
            palisade_model::Direction::Outbound,
        ]
        .into_iter()
        .all(|dir| engine.update_nsg(idx, dir, n.direction(dir)).is_ok())
    } else {
        let (fw0, compiled) = snap.firewalls().next().unwrap();
        engine.update_firewall(fw0, compiled).is_ok()
    }
}

/// Every atom pair answers alike in both engines (verdicts, chains and L4 sets).
fn same_answers(a: &Engine, b: &Engine) {
    assert_eq!(a.atoms(), b.atoms());
    let mut seen = std::collections::HashSet::new();
    for f in [Family::V4, Family::V6] {
        let n = if f == Family::V4 {
            a.atoms().0
        } else {
            a.atoms().1
        };
        for sa in 0..n {
            for da in 0..n {
                if !seen.insert((a.decision(f, sa, da), b.decision(f, sa, da))) {
                    continue;
                }
                let (x, y) = (a.answers(f, sa, da), b.answers(f, sa, da));
                assert_eq!(x.len(), y.len(), "atoms {sa} {da}");
                for (l4, o) in &x {
                    let (l4b, _) = y
                        .iter()
                        .find(|(_, ob)| ob == o)
                        .unwrap_or_else(|| panic!("atoms {sa} {da}: {o:?} missing"));
                    assert!(
                        l4.subtract(l4b).is_empty() && l4b.subtract(l4).is_empty(),
                        "atoms {sa} {da}"
                    );
                }
            }
        }
    }
}

/// One random case: a small generated network, `edits` random rule edits (NSG and firewall,
/// rules added and deleted), and with `outside` one edit outside the rules. Every build of
/// [`diff::diff_with`] that runs its own code, and the two-engine diff, give the reference's
/// report; returns which way the default diff ran.
fn check_case(seed: u64, edits: usize, pick: u64, outside: bool) -> Result<DiffPath, String> {
    let g = HubSpoke::small(seed);
    let old = g.build();
    let mut net = old.clone();
    let mut rng = Rng::new(pick);
    for _ in 0..edits {
        edit(&mut net, &mut rng);
    }
    if outside {
        edit_outside_rules(&mut net, &mut rng);
    }
    let (a, b) = (compile(&old), compile(&net));
    let want = text(&reference_diff(&a, &b));
    // `diff` is the join build. Through the re-check, the join and parallel builds run the
    // same code (one engine on every thread), so the parallel build is run only where it
    // differs: on the two-engine path.
    let got = diff::diff(&a, &b);
    if text(&got) != want {
        return Err(format!("diff ({:?}) differs from the reference", got.path));
    }
    let mut builds = vec![Build::Serial];
    if got.path != DiffPath::Recheck {
        builds.push(Build::Parallel);
    }
    for build in builds {
        let other = diff::diff_with(&a, &b, build);
        if text(&other) != want {
            return Err(format!(
                "{build:?} ({:?}) differs from the reference",
                other.path
            ));
        }
        // The way it ran does not depend on the build.
        if other.path != got.path {
            return Err(format!(
                "{build:?} took {:?}, the join build {:?}",
                other.path, got.path
            ));
        }
    }
    // The two-engine diff alone, where `diff` did not already run it.
    if got.path == DiffPath::Recheck && text(&diff::diff_two_engines(&a, &b, Build::Join)) != want {
        return Err("the two-engine diff differs from the reference".into());
    }
    if outside && got.path == DiffPath::Recheck {
        return Err("an edit outside the rules went through the re-check".into());
    }
    Ok(got.path)
}

mod fast_diff {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    proptest! {
        #![proptest_config(ProptestConfig {
            // Each case spells out every pair's outcome in the oracle (most of this test's
            // time); the deterministic cases below cover both paths on every run.
            cases: 6,
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
            ..ProptestConfig::default()
        })]
        /// DIAG-7: every way of building the engines — through the re-check or two engines —
        /// gives the reference report, change for change, flow set for flow set, after one to
        /// four random NSG and firewall edits, and with an edit outside the rules (the
        /// two-engine path).
        #[test]
        fn fast_diff_equals_the_two_engine_diff(
            seed in 1u64..8,
            edits in 1usize..5,
            pick in any::<u64>(),
            outside in proptest::bool::weighted(0.25),
        ) {
            let r = check_case(seed, edits, pick, outside);
            prop_assert!(r.is_ok(), "{:?}", r);
        }
    }
}

/// DIAG-7: both ways `diff` runs are met — the re-check for rule edits (one and several, NSG
/// and firewall), the two engines for other edits and for changes the re-check refuses — each
/// giving the reference report.
#[test]
fn both_diff_paths_run_and_agree() {
    let (mut recheck, mut refused, mut outside) = (0, 0, 0);
    for i in 0..12u64 {
        let is_outside = i % 6 == 5;
        let path = check_case(1 + i % 7, 1 + (i as usize % 4), 1000 + i, is_outside)
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        match path {
            DiffPath::Recheck => recheck += 1,
            DiffPath::TwoEngines(_) if is_outside => outside += 1,
            DiffPath::TwoEngines(_) => refused += 1,
        }
    }
    assert!(recheck >= 5, "only {recheck} diffs through the re-check");
    assert_eq!(outside, 2, "edits outside the rules must take two engines");
    assert!(recheck + refused + outside == 12);
}

/// Issue 15 review: an engine taking hundreds of random edits (rules added and deleted, so that
/// firewall slots die) answers as a fresh engine over the edited snapshot, checked along the
/// way, and its tables stay bounded: within twice the last full build plus a floor, deleted
/// slots at most half the live ones — and a rebuild did happen.
#[test]
fn many_edits_keep_the_tables_bounded() {
    many_edits(HubSpoke::small(3).build());
}

/// The same with a DNAT rule that names only ICMP (FW-4: it matches nothing, so it has no
/// entries and no item): a firewall edit gives it no slot, and the rebuild past the growth
/// limit must still lay the layer out.
#[test]
fn many_edits_with_an_icmp_only_dnat_rule() {
    let mut net = HubSpoke::small(3).build();
    let fw = &mut net.azure_firewalls[0];
    let nat = fw
        .rule_collections
        .iter_mut()
        .find(|c| c.kind == RuleCollectionKind::Nat)
        .expect("the generator makes a DNAT collection");
    let mut icmp = nat.rules[0].clone();
    icmp.name = "icmp-only".into();
    icmp.ip_protocols = vec![palisade_model::NetworkProtocol::Icmp];
    nat.rules.insert(0, icmp);
    many_edits(net);
}

fn many_edits(mut net: Network) {
    let snap0 = compile(&net);
    let grid = reach::cuts(&snap0);
    let mut engine = Engine::new(&snap0);
    let mut rng = Rng::new(42);
    let (mut applied, mut rebuilds) = (0, 0);
    let fresh_tables = engine.growth().tables;
    for step in 0..400 {
        let before = net.clone();
        let Some(what) = edit(&mut net, &mut rng) else {
            continue;
        };
        let snap = compile(&net);
        let baseline = engine.growth().baseline;
        if !apply(&mut engine, &snap, &what) {
            // Refused: the engine is unchanged; the edit is undone.
            net = before;
            let snap = compile(&net);
            same_answers(&engine, &Engine::with_cuts(&snap, &grid));
            continue;
        }
        applied += 1;
        let gr = engine.growth();
        rebuilds += usize::from(gr.baseline != baseline);
        assert!(gr.tables <= 2 * gr.baseline + 1024, "step {step}: {gr:?}");
        assert!(
            2 * gr.dead_slots <= gr.live_slots.max(1),
            "step {step}: {gr:?}"
        );
        assert!(
            gr.tables <= 4 * fresh_tables.max(gr.baseline) + 1024,
            "step {step}: {gr:?}"
        );
        if step % 20 == 0 {
            same_answers(&engine, &Engine::with_cuts(&snap, &grid));
        }
    }
    assert!(applied > 100, "only {applied} edits applied");
    assert!(rebuilds > 0, "no rebuild in {applied} edits");
    same_answers(&engine, &Engine::with_cuts(&compile(&net), &grid));
}
