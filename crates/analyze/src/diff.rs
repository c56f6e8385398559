//! Semantic diff of two versions of a network (issue 6, item 5): the flows whose verdict
//! changes, as exact sets (source prefixes × destination prefixes × protocols and ports) with a
//! representative example flow each and the controls that decide them on each side.
//!
//! Both versions are evaluated by [`crate::reach::Engine`] on one grid of address atoms (the
//! boundaries of both). When the versions differ only in NSG rules and firewalls' network and
//! application rules (issue 15, item 4), one engine is built for the old version and the new
//! one derived from it through the re-check, which keeps decision ids: only the pairs whose
//! decision the re-check changed are compared, old decision against new. Otherwise, or when
//! the re-check refuses a change, an engine per version (built at once, `rayon::join`) and
//! every atom pair compared, equal decision pairs once, by verdict class first. Either way the
//! chains of controls are spelled out only for the pieces whose verdict changes, and the report
//! is the same.

use crate::headerspace::{Family, IntervalSet, L4Set};
use crate::reach::{self, Control, Engine, FlowSet, LayerKind, Reach, SavedDecisions, NONE};
use palisade_model::{Direction, Network, RuleCollection, RuleCollectionKind};
use palisade_policy::{FirewallId, NsgId, Snapshot};
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
    /// Atom pairs with a decision in either version: every one of them is compared, though the
    /// re-check path looks only at those whose decision it changed (the others answer alike).
    pub compared: usize,
    /// Which way the diff ran (not part of the printed report).
    #[serde(skip)]
    pub path: DiffPath,
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

/// How [`diff_with`] builds its engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// One after the other, each on the calling thread.
    Serial,
    /// Two engines at once with `rayon::join`, each serial; one engine (through the re-check)
    /// on every thread of the pool.
    Join,
    /// One after the other, each on every thread of the pool ([`Engine::parallel_with_cuts`]).
    Parallel,
}

/// How a diff was computed (the report is the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiffPath {
    /// One engine over the old version, the new one derived from it through the re-check of
    /// the changed NSG directions and firewalls; only the re-planned pairs compared.
    #[default]
    Recheck,
    /// An engine per version, every atom pair compared: the versions differ in more than NSG
    /// and firewall rules, or the re-check refused a change (the reason).
    TwoEngines(&'static str),
}

/// The flows whose verdict differs between `old` and `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> DiffReport {
    diff_with(old, new, Build::Join)
}

/// [`diff`], with the engines built as `build` says (the report is the same).
pub fn diff_with(old: &Snapshot, new: &Snapshot, build: Build) -> DiffReport {
    let why = match rule_edits(old, new) {
        Ok(edits) => match diff_by_recheck(old, new, &edits, build) {
            Ok(report) => return report,
            Err(why) => why,
        },
        Err(why) => why,
    };
    let mut report = diff_two_engines(old, new, build);
    report.path = DiffPath::TwoEngines(why);
    report
}

/// The two-engine diff alone (what [`diff_with`] falls back to).
pub fn diff_two_engines(old: &Snapshot, new: &Snapshot, build: Build) -> DiffReport {
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
    // Decisions by verdict class: a pair in one class changes no verdict (most pairs), and is
    // skipped without its pieces. Only when both engines share their L4 atoms.
    let classes = a.same_l4(&b).then(|| {
        let mut table = HashMap::default();
        let ca = a.verdict_classes(&mut table);
        (ca, b.verdict_classes(&mut table))
    });
    let mut cmp = Compare::new(&a, &b, classes);
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
                cmp.pair(f, sa, da, x, y);
            }
        }
    }
    cmp.finish(compared)
}

/// What the new version changes, when it changes only rules the re-check takes: the NSG
/// directions whose rules differ, and the firewalls to re-check (all of them when any
/// firewall's network or application rules differ). `Err`: why not.
struct Edits {
    nsgs: Vec<(NsgId, Direction)>,
    firewalls: Vec<FirewallId>,
}

fn rule_edits(old: &Snapshot, new: &Snapshot) -> Result<Edits, &'static str> {
    if old.catalogs.versions() != new.catalogs.versions() {
        return Err("other catalogs");
    }
    if old.bindings_id != new.bindings_id {
        return Err("other name bindings");
    }
    let (o, n) = (without_rules(&old.network), without_rules(&new.network));
    if o.0 != n.0 {
        return Err("more than NSG and firewall rules differ");
    }
    let same_shape = old.nsgs().len() == new.nsgs().len()
        && old.firewalls().len() == new.firewalls().len()
        && old.subnets().len() == new.subnets().len()
        && old.nics().len() == new.nics().len()
        && unattached(old) == unattached(new)
        && old
            .subnets()
            .zip(new.subnets())
            .all(|(a, b)| a.1.nsg == b.1.nsg)
        && old.nics().zip(new.nics()).all(|(a, b)| a.1.nsg == b.1.nsg);
    if !same_shape {
        return Err("other NSG attachments");
    }
    let mut nsgs = vec![];
    for ((id, a), (_, b)) in old.nsgs().zip(new.nsgs()) {
        if a.name != b.name || a.names_platform_tags != b.names_platform_tags {
            return Err("other NSGs");
        }
        for dir in [Direction::Inbound, Direction::Outbound] {
            let text = |n: &palisade_policy::nsg::CompiledNsg| {
                serde_json::to_string(&n.direction(dir).rules).unwrap_or_default()
            };
            if text(a) != text(b) {
                nsgs.push((id, dir));
            }
        }
    }
    let firewalls = if o.1 == n.1 {
        vec![]
    } else {
        old.firewalls().map(|(id, _)| id).collect()
    };
    Ok(Edits { nsgs, firewalls })
}

fn unattached(s: &Snapshot) -> Vec<(String, NsgId)> {
    let mut v: Vec<(String, NsgId)> = s
        .unattached_nsgs()
        .map(|(n, id)| (n.to_string(), id))
        .collect();
    v.sort();
    v
}

/// A network as JSON without what the re-check takes (NSG rules; firewalls' network and
/// application rule collections) and without origins (file and place in it), then those
/// rules alone, one list per owner (firewall, rule collection group): a collection moved from
/// one owner to the next is a change even where the flat order stays the same.
fn without_rules(net: &Network) -> (serde_json::Value, serde_json::Value) {
    let mut net = net.clone();
    let mut rules: Vec<Vec<RuleCollection>> = vec![];
    for n in &mut net.network_security_groups {
        n.security_rules.clear();
    }
    let not_nat = |c: &RuleCollection| c.kind != RuleCollectionKind::Nat;
    for fw in &mut net.azure_firewalls {
        rules.push(fw.rule_collections.extract_if(.., |c| not_nat(c)).collect());
    }
    for p in &mut net.firewall_policies {
        for g in &mut p.rule_collection_groups {
            rules.push(g.rule_collections.extract_if(.., |c| not_nat(c)).collect());
        }
    }
    let mut a = serde_json::to_value(&net).unwrap_or_default();
    let mut b = serde_json::to_value(&rules).unwrap_or_default();
    drop_origins(&mut a);
    drop_origins(&mut b);
    (a, b)
}

fn drop_origins(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("origin");
            m.values_mut().for_each(drop_origins);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_origins),
        _ => {}
    }
}

/// One engine over the grid of both versions, built for the old one; the changed NSG
/// directions and firewalls applied through the re-check, keeping decision ids; the pairs
/// whose decision changed compared, old decision against new. `Err` when the re-check refuses a
/// change (a new protocol or port boundary).
fn diff_by_recheck(
    old: &Snapshot,
    new: &Snapshot,
    edits: &Edits,
    build: Build,
) -> Result<DiffReport, &'static str> {
    let cn = reach::cuts(new);
    let mut e = match build {
        Build::Serial => Engine::with_cuts(old, &cn),
        Build::Join | Build::Parallel => Engine::parallel_with_cuts(old, &cn),
    };
    let saved = e.save_decisions();
    for &(nsg, dir) in &edits.nsgs {
        // An NSG no flow meets (attached nowhere) has no layer and changes nothing.
        if e.layer_id(LayerKind::Nsg {
            nsg,
            direction: dir,
        })
        .is_none()
        {
            continue;
        }
        e.update_nsg_keeping_ids(nsg, dir, new.nsg(nsg).direction(dir))
            .map_err(|_| "the re-check refused an NSG change")?;
    }
    for &fw in &edits.firewalls {
        e.update_firewall_keeping_ids(fw, new.firewall(fw))
            .map_err(|_| "the re-check refused a firewall change")?;
    }
    let (pairs, compared) = e.changed_pairs(&saved);
    // Both sides are read from the one engine: an id saved before the re-check still spells
    // out the old version's answers.
    let mut cmp = Compare::new(&e, &e, None);
    cmp.saved = Some(&saved);
    for (f, sa, da, x, y) in pairs {
        cmp.pair(f, sa as usize, da as usize, x, y);
    }
    let mut report = cmp.finish(compared);
    report.path = DiffPath::Recheck;
    Ok(report)
}

type Key = (reach::Outcome, reach::Outcome, Vec<String>);

/// Atom pairs compared one by one, in (family, source, destination) order: the pieces whose
/// verdict changes grouped by (old outcome, new outcome, services), groups numbered in the
/// order their keys are first met.
struct Compare<'a, 'e> {
    a: &'a Engine<'e>,
    b: &'a Engine<'e>,
    classes: Option<(Vec<u32>, Vec<u32>)>,
    group_ids: HashMap<Key, u32>,
    groups: Vec<(Key, Vec<reach::Area>, L4Set)>,
    /// (family, decision old, decision new) → the groups its changed pieces fall in, as an
    /// index into `lists` (most pairs change nothing: one shared empty list).
    memo: HashMap<(u8, u32, u32), u32>,
    lists: Vec<Vec<u32>>,
    /// Neighbouring pairs often share their decisions: the last look-up is kept.
    last: (u8, u32, u32, u32),
    /// When `a` is `b` after a re-check: the old side's outcomes are spelled out as saved.
    saved: Option<&'a SavedDecisions>,
}

impl<'a, 'e> Compare<'a, 'e> {
    fn new(a: &'a Engine<'e>, b: &'a Engine<'e>, classes: Option<(Vec<u32>, Vec<u32>)>) -> Self {
        debug_assert_eq!(a.atoms(), b.atoms());
        Compare {
            a,
            b,
            classes,
            group_ids: HashMap::default(),
            groups: vec![],
            memo: HashMap::default(),
            lists: vec![vec![]],
            last: (u8::MAX, NONE, NONE, 0),
            saved: None,
        }
    }

    /// One atom pair: `x` its decision in `a`, `y` in `b` (not both [`NONE`]).
    fn pair(&mut self, f: Family, sa: usize, da: usize, x: u32, y: u32) {
        let a = self.a;
        if let Some((ca, cb)) = &self.classes {
            if x != NONE && y != NONE && ca[x as usize] == cb[y as usize] {
                return;
            }
        }
        let fam = f.index() as u8;
        let at = if (fam, x, y) == (self.last.0, self.last.1, self.last.2) {
            self.last.3
        } else {
            let at = match self.memo.get(&(fam, x, y)) {
                Some(at) => *at,
                None => {
                    let at = self.spell(f, x, y);
                    self.memo.insert((fam, x, y), at);
                    at
                }
            };
            self.last = (fam, x, y, at);
            at
        };
        for &g in &self.lists[at as usize] {
            let region = (f, a.atom_range(f, sa), a.atom_range(f, da));
            self.groups[g as usize].1.push(region);
        }
    }

    /// The groups the changed pieces of a decision pair fall in, as an index into `lists`.
    fn spell(&mut self, f: Family, x: u32, y: u32) -> u32 {
        let (a, b) = (self.a, self.b);
        let full = L4Set::full();
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
        let saved = self.saved;
        let spell = |e: &Engine, o: Option<u64>| match o {
            Some(o) => e.outcome(o),
            None => unknown(),
        };
        let spell_old = |o: Option<u64>| match (o, saved) {
            (Some(o), Some(saved)) => a.saved_outcome(saved, o),
            _ => spell(a, o),
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
                let key: Key = (spell_old(o1), spell(b, *o2), reach::services(f, &l));
                let id = match self.group_ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = self.groups.len() as u32;
                        self.group_ids.insert(key.clone(), id);
                        self.groups.push((key, vec![], l));
                        id
                    }
                };
                ids.push(id);
            }
        }
        if ids.is_empty() {
            0
        } else {
            self.lists.push(ids);
            self.lists.len() as u32 - 1
        }
    }

    /// The report: the groups' regions as flow sets, one change per (old, new) outcome.
    fn finish(self, compared: usize) -> DiffReport {
        let groups = self.groups;
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
        DiffReport {
            changes,
            compared,
            path: DiffPath::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::CompileOptions;
    use std::path::Path;

    fn adx() -> Snapshot {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/scenarios/adx-dependencies/network.json");
        palisade_load::load(&palisade_load::Source::files([file]))
            .snapshot
            .expect("the scenario compiles")
    }

    /// A rule collection moved from one rule collection group to the front of the next keeps
    /// the flat order of all collections; it is still a firewall rule change (the group's
    /// priority and name decide it afterwards), so the re-check must take the firewalls.
    #[test]
    fn a_collection_moved_to_the_next_group_is_a_rule_change() {
        let old = adx().network;
        let mut new = old.clone();
        let groups = &mut new.firewall_policies[0].rule_collection_groups;
        let moved = groups[0].rule_collections.pop().expect("a collection");
        assert_ne!(moved.kind, RuleCollectionKind::Nat);
        groups[1].rule_collections.insert(0, moved);
        let (o, n) = (without_rules(&old), without_rules(&new));
        assert_eq!(o.0, n.0, "only rules moved");
        assert_ne!(o.1, n.1, "the move must be seen");
    }

    /// FW-5: the same network compiled with other name bindings resolves its FQDN network rules
    /// to other addresses; the re-check cannot take that, so the diff uses two engines.
    #[test]
    fn other_name_bindings_take_two_engines() {
        let old = adx();
        let mut options = CompileOptions::default();
        options
            .resolve
            .insert("example.test".into(), vec!["192.0.2.7".parse().unwrap()]);
        let new = Snapshot::compile(&old.network, &old.catalogs, &options);
        assert_eq!(rule_edits(&old, &new).err(), Some("other name bindings"));
        assert!(rule_edits(&old, &old).is_ok());
    }
}
