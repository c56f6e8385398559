//! Semantic diff of two versions of a network (issue 6, item 5): the flows whose verdict
//! changes, as exact sets (source prefixes × destination prefixes × protocols and ports) with a
//! representative example flow each and the controls that decide them on each side.
//!
//! Both versions are evaluated by [`crate::reach::Engine`] on one grid of address atoms (the
//! boundaries of both), so every atom pair is compared piece by piece; equal decision pairs are
//! compared once, by verdict first: the chains of controls are spelled out only for the pieces
//! whose verdict changes. The two engines are built at once (`rayon::join`).

use crate::headerspace::{Family, IntervalSet, L4Set};
use crate::reach::{self, Control, Engine, FlowSet, Reach, NONE};
use palisade_policy::Snapshot;
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
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

/// How [`diff_with`] builds the two engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// One after the other, each on the calling thread.
    Serial,
    /// Both at once with `rayon::join`, each serial.
    Join,
    /// One after the other, each on every thread of the pool ([`Engine::parallel_with_cuts`]).
    Parallel,
}

/// The flows whose verdict differs between `old` and `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> DiffReport {
    diff_with(old, new, Build::Join)
}

/// [`diff`], with the two engines built as `build` says (the report is the same).
pub fn diff_with(old: &Snapshot, new: &Snapshot, build: Build) -> DiffReport {
    let (co, cn) = (reach::cuts(old), reach::cuts(new));
    let (a, b) = match build {
        Build::Serial => (Engine::with_cuts(old, &cn), Engine::with_cuts(new, &co)),
        Build::Join => rayon::join(
            || Engine::with_cuts(old, &cn),
            || Engine::with_cuts(new, &co),
        ),
        Build::Parallel => (
            Engine::parallel_with_cuts(old, &cn),
            Engine::parallel_with_cuts(new, &co),
        ),
    };
    compare(&a, &b)
}

/// Every atom pair of two engines over one grid, compared.
fn compare(a: &Engine, b: &Engine) -> DiffReport {
    debug_assert_eq!(a.atoms(), b.atoms());
    let full = L4Set::full();
    let none = unknown();
    type Key = (reach::Outcome, reach::Outcome, Vec<String>);
    // Groups by key, numbered in the order their keys are first met.
    let mut group_ids: HashMap<Key, u32> = HashMap::default();
    let mut groups: Vec<(Key, Vec<reach::Area>, L4Set)> = vec![];
    // (family, decision old, decision new) → the groups its changed pieces fall in, as an index
    // into `lists` (most pairs change nothing: one shared empty list).
    let mut memo: HashMap<(u8, u32, u32), u32> = HashMap::default();
    let mut lists: Vec<Vec<u32>> = vec![vec![]];
    // Decisions by verdict class: a pair in one class changes no verdict (most pairs), and is
    // skipped without its pieces. Only when both engines share their L4 atoms.
    let classes = a.same_l4(b).then(|| {
        let mut table = HashMap::default();
        let ca = a.verdict_classes(&mut table);
        (ca, b.verdict_classes(&mut table))
    });
    let mut compared = 0;
    for f in [Family::V4, Family::V6] {
        let n = if f == Family::V4 {
            a.atoms().0
        } else {
            a.atoms().1
        };
        for sa in 0..n {
            // Neighbouring pairs often share their decisions: the last look-up is kept.
            let mut last = (NONE, NONE, 0u32);
            for da in 0..n {
                let (x, y) = (a.decision(f, sa, da), b.decision(f, sa, da));
                if x == NONE && y == NONE {
                    continue;
                }
                compared += 1;
                if let Some((ca, cb)) = &classes {
                    if x != NONE && y != NONE && ca[x as usize] == cb[y as usize] {
                        continue;
                    }
                }
                let at = if (x, y) == (last.0, last.1) {
                    last.2
                } else {
                    let at = *memo.entry((f.index() as u8, x, y)).or_insert_with(|| {
                        let side = |e: &Engine, d: u32| -> Vec<(L4Set, Option<u64>)> {
                            if d == NONE {
                                vec![(full.clone(), None)]
                            } else {
                                e.decision_pieces(d)
                                    .into_iter()
                                    .map(|(l4, o)| (l4, Some(o)))
                                    .collect()
                            }
                        };
                        let verdict = |o: Option<u64>| o.map_or(Reach::Unknown, Engine::verdict);
                        let spell = |e: &Engine, o: Option<u64>| match o {
                            Some(o) => e.outcome(o),
                            None => none.clone(),
                        };
                        let mut ids = vec![];
                        let right = side(b, y);
                        for (l1, o1) in side(a, x) {
                            for (l2, o2) in &right {
                                if verdict(o1) == verdict(*o2) {
                                    continue;
                                }
                                let mut l = l1.intersect(l2);
                                if l.is_empty() {
                                    continue;
                                }
                                l.compact();
                                let key: Key =
                                    (spell(a, o1), spell(b, *o2), reach::services(f, &l));
                                let id = match group_ids.get(&key) {
                                    Some(id) => *id,
                                    None => {
                                        let id = groups.len() as u32;
                                        group_ids.insert(key.clone(), id);
                                        groups.push((key, vec![], l));
                                        id
                                    }
                                };
                                ids.push(id);
                            }
                        }
                        if ids.is_empty() {
                            0
                        } else {
                            lists.push(ids);
                            lists.len() as u32 - 1
                        }
                    });
                    last = (x, y, at);
                    at
                };
                for &g in &lists[at as usize] {
                    let region = (f, a.atom_range(f, sa), a.atom_range(f, da));
                    groups[g as usize].1.push(region);
                }
            }
        }
    }
    let mut changes: Vec<Change> = vec![];
    for (key, regions, l4) in groups {
        let prods = reach::products(&regions);
        let mut flows = vec![];
        let mut sets = vec![];
        for (f, s, d) in prods {
            if let Some((ex, _)) = reach::example(f, &s, &d, &l4) {
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
