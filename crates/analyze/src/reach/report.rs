//! The matrix for people: regions clipped to a scope, grouped by (source place, destination
//! place, outcome, services) into prefix × prefix products with an example flow each.

use super::atoms::{zero, Bits};
use super::{Control, Engine, Outcome, Reach, NONE};
use crate::headerspace::{l4_box_text, prefix_set, to_prefixes, Family, IntervalSet, L4Set};
use ipnet::IpNet;
use palisade_model::{FirewallAction, Protocol};
use palisade_policy::addresses::TagContext;
use palisade_policy::{Snapshot, SubnetId};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

impl<'s> Engine<'s> {
    /// Every (family, source atom range, destination atom range, L4 set, outcome) of the matrix
    /// whose source lies in `from` and destination in `to` (each clipped).
    pub fn regions(&self, from: &[IntervalSet; 2], to: &[IntervalSet; 2]) -> Vec<Region> {
        let mut out = vec![];
        for f in [Family::V4, Family::V6] {
            let fi = f.index();
            let g = &self.grid[fi];
            // Only the atoms the scopes touch: `--to SUBNET` reads that subnet's columns.
            let dsts = g.atoms_within(&to[fi]);
            for sa in g.atoms_within(&from[fi]) {
                let s_set = IntervalSet::range(g.starts[sa], g.end(sa)).intersect(&from[fi]);
                if s_set.is_empty() {
                    continue;
                }
                for &da in &dsts {
                    let d = self.rows[fi][sa][da];
                    if d == NONE {
                        continue;
                    }
                    let d_set = IntervalSet::range(g.starts[da], g.end(da)).intersect(&to[fi]);
                    if d_set.is_empty() {
                        continue;
                    }
                    for (l4, o) in self.decision_pieces(d) {
                        out.push(Region {
                            family: f,
                            src_atom: sa,
                            dst_atom: da,
                            src: s_set.clone(),
                            dst: d_set.clone(),
                            l4,
                            outcome: o,
                        });
                    }
                }
            }
        }
        out
    }
}
/// Sources × destinations of one family.
pub type Area = (Family, IntervalSet, IntervalSet);

/// A region of the matrix: `src × dst × l4` with one outcome.
#[derive(Debug, Clone)]
pub struct Region {
    pub family: Family,
    pub src_atom: usize,
    pub dst_atom: usize,
    pub src: IntervalSet,
    pub dst: IntervalSet,
    pub l4: L4Set,
    pub outcome: u64,
}

/// Why a scope text names no set of addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// An item that is no subnet or NIC of the snapshot, not `Internet`, and does not parse as
    /// an address.
    #[error("`{item}` is neither a subnet, a NIC, `Internet`, an address nor a prefix")]
    Unknown { item: String },
}

/// Sources and destinations: subnets by name, addresses, prefixes.
pub fn parse_scope(snap: &Snapshot, text: &str) -> Result<[IntervalSet; 2], ScopeError> {
    let mut prefixes: Vec<IpNet> = vec![];
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(p) = item.parse::<IpNet>() {
            prefixes.push(p.trunc());
        } else if let Ok(a) = item.parse::<IpAddr>() {
            prefixes.push(IpNet::from(a));
        } else if item.eq_ignore_ascii_case("internet") {
            prefixes.extend(internet(snap));
        } else if let Some(s) = snap.subnet_by_name(item) {
            prefixes.extend(snap.subnet(s).prefixes.iter().copied());
        } else if let Some(n) = snap.nic_by_name(item) {
            prefixes.extend(snap.nic(n).addresses.iter().map(|a| IpNet::from(*a)));
        } else {
            return Err(ScopeError::Unknown {
                item: item.to_string(),
            });
        }
    }
    Ok([
        prefix_set(&prefixes, Family::V4),
        prefix_set(&prefixes, Family::V6),
    ])
}

/// `Internet` as a scope (NSG-8.3): public addresses outside the address spaces of every
/// virtual network, so that `--from Internet` asks what the outside world can reach. Not a
/// subnet's `Internet` tag: a route of `0.0.0.0/0` to an appliance makes that tag empty.
fn internet(snap: &Snapshot) -> Vec<IpNet> {
    let spaces: Vec<IpNet> = snap
        .network
        .virtual_networks
        .iter()
        .flat_map(|v| v.address_space.iter().copied())
        .collect();
    TagContext::new(&spaces).internet
}

pub fn everything() -> [IntervalSet; 2] {
    [
        IntervalSet::range(0, Family::V4.max()),
        IntervalSet::range(0, Family::V6.max()),
    ]
}

/// Flows of one outcome between two places, as exact sets.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSet {
    pub source_prefixes: Vec<String>,
    pub destination_prefixes: Vec<String>,
    /// `Tcp :443`, `Icmp`, `* ` ... one item per box of (protocol, ports).
    pub services: Vec<String>,
    /// One flow of the set, in `trace` terms.
    pub example: ExampleFlow,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExampleFlow {
    pub protocol: String,
    pub source: String,
    pub source_port: u16,
    pub destination: String,
    pub destination_port: u16,
}

/// An example flow of `src × dst × l4`: the first address of each side, the first protocol
/// (TCP preferred), the first ports.
pub fn example(
    f: Family,
    src: &IntervalSet,
    dst: &IntervalSet,
    l4: &L4Set,
) -> Option<(ExampleFlow, Protocol)> {
    let order = [6u128, 17, if f == Family::V4 { 1 } else { 58 }, 50, 51];
    for p in order {
        for b in &l4.boxes {
            if b.0[0].contains(p) {
                let proto = match p {
                    6 => Protocol::Tcp,
                    17 => Protocol::Udp,
                    50 => Protocol::Esp,
                    51 => Protocol::Ah,
                    _ => Protocol::Icmp,
                };
                let has_ports = matches!(p, 6 | 17);
                let sp = if has_ports {
                    b.0[1].first().unwrap_or(0) as u16
                } else {
                    0
                };
                let dp = if has_ports {
                    b.0[2].first().unwrap_or(0) as u16
                } else {
                    0
                };
                return Some((
                    ExampleFlow {
                        protocol: proto.as_str().to_string(),
                        source: f.addr(src.first()?).to_string(),
                        source_port: sp,
                        destination: f.addr(dst.first()?).to_string(),
                        destination_port: dp,
                    },
                    proto,
                ));
            }
        }
    }
    None
}

pub fn services(f: Family, l4: &L4Set) -> Vec<String> {
    let mut v: Vec<String> = l4.boxes.iter().map(|b| l4_box_text(b, f)).collect();
    v.sort();
    v
}

/// Group regions that share a key into products `sources × destinations`: regions with the
/// same destination set merge their sources.
pub fn products(
    regions: &[(Family, IntervalSet, IntervalSet)],
) -> Vec<(Family, IntervalSet, IntervalSet)> {
    let mut by_src: Vec<(Family, IntervalSet, IntervalSet)> = vec![];
    // Same source: unite destinations.
    let mut idx: HashMap<(Family, IntervalSet), usize> = HashMap::default();
    for (f, s, d) in regions {
        match idx.get(&(*f, s.clone())) {
            Some(i) => by_src[*i].2 = by_src[*i].2.union(d),
            None => {
                idx.insert((*f, s.clone()), by_src.len());
                by_src.push((*f, s.clone(), d.clone()));
            }
        }
    }
    // Same destinations: unite sources.
    let mut out: Vec<(Family, IntervalSet, IntervalSet)> = vec![];
    let mut idx2: HashMap<(Family, IntervalSet), usize> = HashMap::default();
    for (f, s, d) in by_src {
        match idx2.get(&(f, d.clone())) {
            Some(i) => out[*i].1 = out[*i].1.union(&s),
            None => {
                idx2.insert((f, d.clone()), out.len());
                out.push((f, s, d));
            }
        }
    }
    out
}

pub fn prefixes_text(f: Family, set: &IntervalSet) -> Vec<String> {
    to_prefixes(set, f).iter().map(|p| p.to_string()).collect()
}

/// Reachability between places, grouped by (source place, destination place, outcome).
#[derive(Debug, Clone, Serialize)]
pub struct ReachEntry {
    /// `vnet/subnet`, or `outside` for addresses in no subnet.
    pub source: String,
    pub destination: String,
    pub verdict: Reach,
    /// The deciding controls, in path order.
    pub decided_by: Vec<Control>,
    pub flows: Vec<FlowSet>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReachReport {
    pub entries: Vec<ReachEntry>,
    /// Application rules: allowed by name, on these ports, from these sources (FW-6).
    pub application_rules: Vec<AppRuleSummary>,
    pub atoms: (usize, usize),
    pub plans: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppRuleSummary {
    pub firewall: String,
    pub rule: String,
    pub protocols: Vec<String>,
    pub sources: Vec<String>,
    pub names: Vec<String>,
}

fn place(snap: &Snapshot, s: Option<SubnetId>) -> String {
    match s.map(|i| snap.subnet(i)) {
        Some(s) => format!("{}/{}", s.vnet, s.name),
        None => "outside".into(),
    }
}

/// The report for flows from `from` to `to` and, when `both`, from `to` to `from`.
/// `verdicts`: which verdicts to list (reachable only by default).
pub fn report(
    engine: &Engine,
    from: &[IntervalSet; 2],
    to: &[IntervalSet; 2],
    both: bool,
    verdicts: &[Reach],
) -> ReachReport {
    let mut regions = engine.regions(from, to);
    if both && (from != to) {
        regions.extend(engine.regions(to, from));
    }
    type Key = (String, String, u64, Vec<String>);
    let mut groups: HashMap<Key, (Vec<Area>, L4Set)> = HashMap::default();
    let mut order: Vec<Key> = vec![];
    // Outcomes of paths stored whole and of factorised paths can be equal under two ids: group
    // by the first id of each outcome.
    let mut first_id: HashMap<Outcome, u64> = HashMap::default();
    for r in regions {
        let o = engine.outcome(r.outcome);
        if !verdicts.contains(&o.verdict) {
            continue;
        }
        let id = *first_id.entry(o).or_insert(r.outcome);
        let k: Key = (
            place(engine.snap, engine.atom_subnet(r.family, r.src_atom)),
            place(engine.snap, engine.atom_subnet(r.family, r.dst_atom)),
            id,
            services(r.family, &r.l4),
        );
        match groups.get_mut(&k) {
            Some(g) => g.0.push((r.family, r.src, r.dst)),
            None => {
                order.push(k.clone());
                groups.insert(k, (vec![(r.family, r.src, r.dst)], r.l4));
            }
        }
    }
    let mut entries: Vec<ReachEntry> = vec![];
    for k in order {
        let (regs, l4) = &groups[&k];
        let o = engine.outcome(k.2);
        let flows: Vec<FlowSet> = products(regs)
            .into_iter()
            .filter_map(|(f, s, d)| {
                let (ex, _) = example(f, &s, &d, l4)?;
                Some(FlowSet {
                    source_prefixes: prefixes_text(f, &s),
                    destination_prefixes: prefixes_text(f, &d),
                    services: k.3.clone(),
                    example: ex,
                })
            })
            .collect();
        match entries.iter_mut().find(|e| {
            e.source == k.0
                && e.destination == k.1
                && e.verdict == o.verdict
                && e.decided_by == o.chain
        }) {
            Some(e) => e.flows.extend(flows),
            None => entries.push(ReachEntry {
                source: k.0.clone(),
                destination: k.1.clone(),
                verdict: o.verdict,
                decided_by: o.chain.clone(),
                flows,
            }),
        }
    }
    entries.sort_by(|a, b| {
        (&a.source, &a.destination, a.verdict).cmp(&(&b.source, &b.destination, b.verdict))
    });
    let mut application_rules = vec![];
    for (_, fw) in engine.snap.firewalls() {
        for a in fw.application_rules() {
            if a.rule.action != FirewallAction::Allow {
                continue;
            }
            application_rules.push(AppRuleSummary {
                firewall: fw.name.clone(),
                rule: a.rule.path(),
                protocols: a
                    .protocols
                    .iter()
                    .map(|p| format!("{:?}:{}", p.protocol_type, p.port))
                    .collect(),
                sources: a.sources.iter().map(|p| p.to_string()).collect(),
                names: a.patterns.to_vec(),
            });
        }
    }
    ReachReport {
        entries,
        application_rules,
        atoms: engine.atoms(),
        plans: engine.stats().0,
    }
}

/// Which subnets reach which (issue 15, item 4): one link per (source subnet, destination
/// subnet) with some flow allowed between them.
#[derive(Debug, Clone, Serialize)]
pub struct SubnetLink {
    pub source: String,
    pub destination: String,
    /// The allowed protocols and ports between some address of each (union over the subnets'
    /// addresses; a service may be allowed from part of a subnet only).
    pub services: Vec<String>,
    /// One allowed flow, in `trace` terms.
    pub example: ExampleFlow,
    #[serde(skip)]
    pub family: Family,
    /// The allowed flows' protocol × ports, exact.
    #[serde(skip)]
    pub l4: Arc<L4Set>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubnetMatrix {
    pub subnets: usize,
    pub links: Vec<SubnetLink>,
}

impl<'s> Engine<'s> {
    /// The subnet-to-subnet summary of the matrix: per (source subnet, destination subnet), the
    /// union of the allowed L4 sets of their atom pairs. Read from the stored decisions, each
    /// decision's allowed bits computed once.
    pub fn subnet_matrix(&self) -> SubnetMatrix {
        let names: Vec<String> = self
            .snap
            .subnets()
            .map(|(_, s)| format!("{}/{}", s.vnet, s.name))
            .collect();
        let mut links = vec![];
        let mut allowed: Vec<Option<Bits>> = vec![None; self.decisions.len()];
        for f in [Family::V4, Family::V6] {
            let fi = f.index();
            let g = &self.grid[fi];
            // Per place pair: the allowed bits and the first atom pair allowing something.
            let mut acc: HashMap<(usize, usize), (Bits, usize, usize, Bits)> = HashMap::default();
            let inside: Vec<(usize, usize)> = (0..g.len())
                .filter_map(|a| g.loc[a].subnet.map(|s| (a, s.index())))
                .collect();
            for &(sa, sp) in &inside {
                let row = &self.rows[fi][sa];
                for &(da, dp) in &inside {
                    let d = row[da];
                    if d == NONE {
                        continue;
                    }
                    let bits = allowed[d as usize].get_or_insert_with(|| {
                        let mut b = Bits::from_elem(0, self.l4.words);
                        for (l4, o) in self.decision_bits(d) {
                            if (o >> 61) as usize == Reach::Allow as usize {
                                b.iter_mut().zip(&l4).for_each(|(x, y)| *x |= y);
                            }
                        }
                        b
                    });
                    if zero(bits) {
                        continue;
                    }
                    match acc.get_mut(&(sp, dp)) {
                        Some(e) => e.0.iter_mut().zip(bits.iter()).for_each(|(x, y)| *x |= y),
                        None => {
                            acc.insert((sp, dp), (bits.clone(), sa, da, bits.clone()));
                        }
                    }
                }
            }
            let mut pairs: Vec<_> = acc.into_iter().collect();
            pairs.sort_unstable_by_key(|(k, _)| *k);
            // Bits to sets once per distinct bit set: most subnet pairs share a few.
            let mut sets: HashMap<Bits, (Arc<L4Set>, Vec<String>)> = HashMap::default();
            let mut set_of = |b: &Bits| {
                sets.entry(b.clone())
                    .or_insert_with(|| {
                        let l4 = self.l4.set(b);
                        let text = services(f, &l4);
                        (Arc::new(l4), text)
                    })
                    .clone()
            };
            for ((sp, dp), (bits, sa, da, first)) in pairs {
                let (l4, services) = set_of(&bits);
                let first = set_of(&first).0;
                let Some((example, _)) =
                    example(f, &self.atom_range(f, sa), &self.atom_range(f, da), &first)
                else {
                    continue;
                };
                links.push(SubnetLink {
                    source: names[sp].clone(),
                    destination: names[dp].clone(),
                    services,
                    example,
                    family: f,
                    l4,
                });
            }
        }
        SubnetMatrix {
            subnets: names.len(),
            links,
        }
    }
}
