//! Semantic diff of two versions of a network (issue 6, item 5): the flows whose verdict
//! changes, as exact sets (source prefixes × destination prefixes × protocols and ports) with a
//! representative example flow each and the controls that decide them on each side.
//!
//! Both versions are evaluated by [`crate::reach::Engine`] on one grid of address atoms (the
//! boundaries of both), so every atom pair is compared piece by piece; equal decision pairs are
//! compared once.

use crate::headerspace::{Family, IntervalSet, L4Set};
use crate::reach::{self, Control, Engine, FlowSet, Reach, NONE};
use palisade_policy::Snapshot;
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;

/// One kind of change: every flow in `flows` went from `before` to `after`.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub before: Reach,
    pub after: Reach,
    /// The controls deciding these flows in the old version, in path order.
    pub before_decided_by: Vec<Control>,
    pub after_decided_by: Vec<Control>,
    pub flows: Vec<FlowSet>,
    /// The exact sets, for membership tests.
    #[serde(skip)]
    pub sets: Vec<(Family, IntervalSet, IntervalSet, L4Set)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub changes: Vec<Change>,
    /// Flows (atom pairs × pieces) compared.
    pub compared: usize,
}

impl DiffReport {
    /// The change holding this flow, if its verdict changes.
    pub fn find(
        &self,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Option<&Change> {
        let f = Family::of(src);
        let (s, d) = (
            crate::headerspace::addr_value(src),
            crate::headerspace::addr_value(dst),
        );
        let v = [proto as u128, sport as u128, dport as u128];
        self.changes.iter().find(|c| {
            c.sets.iter().any(|(ff, ss, ds, l4)| {
                *ff == f && ss.contains(s) && ds.contains(d) && l4.contains(&v)
            })
        })
    }
}

fn unknown() -> reach::Outcome {
    reach::Outcome {
        verdict: Reach::Unknown,
        chain: vec![],
    }
}

/// The flows whose verdict differs between `old` and `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> DiffReport {
    let (co, cn) = (reach::cuts(old), reach::cuts(new));
    let a = Engine::with_cuts(old, &cn);
    let b = Engine::with_cuts(new, &co);
    debug_assert_eq!(a.atoms(), b.atoms());
    let full = L4Set::full();
    let none = unknown();
    // (decision old, decision new) → [(l4, outcome old, outcome new)] that differ.
    type Changed = Vec<(L4Set, reach::Outcome, reach::Outcome)>;
    let mut memo: HashMap<(u32, u32), Changed> = HashMap::new();
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
                let diffs = memo.entry((x, y)).or_insert_with(|| {
                    let side = |e: &Engine, d: u32| -> Vec<(L4Set, reach::Outcome)> {
                        if d == NONE {
                            vec![(full.clone(), none.clone())]
                        } else {
                            e.decision_pieces(d)
                                .into_iter()
                                .map(|(l4, o)| (l4, e.outcome(o)))
                                .collect()
                        }
                    };
                    let mut out = vec![];
                    for (l1, o1) in side(&a, x) {
                        for (l2, o2) in side(&b, y) {
                            if o1.verdict == o2.verdict {
                                continue;
                            }
                            let mut l = l1.intersect(&l2);
                            if !l.is_empty() {
                                l.compact();
                                out.push((l, o1.clone(), o2));
                            }
                        }
                    }
                    out
                });
                for (l4, o1, o2) in diffs.iter() {
                    let key: Key = (o1.clone(), o2.clone(), reach::services(f, l4));
                    let region = (f, a.atom_range(f, sa), a.atom_range(f, da));
                    match groups.get_mut(&key) {
                        Some(g) => g.0.push(region),
                        None => {
                            order.push(key.clone());
                            groups.insert(key, (vec![region], l4.clone()));
                        }
                    }
                }
            }
        }
    }
    let mut changes: Vec<Change> = vec![];
    for key in order {
        let (regions, l4) = &groups[&key];
        let prods = reach::products(regions);
        let mut flows = vec![];
        let mut sets = vec![];
        for (f, s, d) in prods {
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
            c.before_decided_by == key.0.chain
                && c.after_decided_by == key.1.chain
                && c.before == key.0.verdict
                && c.after == key.1.verdict
        }) {
            Some(c) => {
                c.flows.extend(flows);
                c.sets.extend(sets);
            }
            None => changes.push(Change {
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
    DiffReport { changes, compared }
}
