//! The classified layout: an NSG chain's rules split by one address field behind a verdict map.
//!
//! The listed layout walks a packet down every rule of its direction until one decides; with
//! 10,000 rules the first packet of each connection pays for all of them. Classified, the NSG
//! chain keeps its fixed head (`ct state established`, the platform exemption) and then, per
//! address family, one `ip saddr vmap { a-b : goto c, … }` over disjoint intervals that cover
//! the family. Each target chain holds, in the listed order, exactly the rules that can match a
//! packet whose field lies in its interval: a one-level decision tree on the field.
//!
//! Why the semantics are unchanged (NSG-5.1: first match in priority order decides, defaults
//! last): for a packet in interval I, the rules left out of I's chain cannot match it (their
//! range on the field misses I), and the rules kept are in their listed order, so the first rule
//! that matches is the same one. Rules whose field is a named set (service tags, large prefix
//! lists) or unrestricted are kept in every chain of their family, in their position. `goto`
//! (not `jump`) keeps an allow's `return` leaving the NSG chain, as in the listed layout.
//!
//! This is a layer on the rendered [`TablePlan`]: the per-rule model is the listed one, and
//! [`evaluate`] runs either layout on a packet, which is how the tests compare them.

use crate::render::{ChainDef, Elem, Operand, RuleDef, Side, Stmt, TablePlan, VmapEntry};
use crate::render::{CHAIN_IN, CHAIN_OUT};
use ipnet::IpNet;
use palisade_policy::intervals::{addr_value, Family};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// How an NSG chain's rules are laid out in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One chain per direction, every rule in priority order.
    Listed,
    /// Split by source or destination address behind a verdict map (large chains only).
    #[default]
    Classified,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "listed" => Ok(Layout::Listed),
            "classified" => Ok(Layout::Classified),
            _ => Err(format!("layout `{s}`: expected `listed` or `classified`")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClassifyOptions {
    /// Chains with fewer NSG rules than this stay listed: a short walk costs less than a map.
    pub min_rules: usize,
    /// Rules a target chain may hold beyond those every chain of the family holds.
    pub bucket_rules: usize,
    /// Most rule copies (all target chains together) per listed rule before buckets widen.
    pub max_copies: usize,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            min_rules: 64,
            bucket_rules: 32,
            max_copies: 4,
        }
    }
}

/// What classification did to one chain and family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifyStats {
    pub chain: String,
    pub v6: bool,
    /// The field the verdict map is keyed on.
    pub side: Side,
    /// Intervals in the verdict map.
    pub intervals: usize,
    /// Target chains (intervals with the same rules share one).
    pub chains: usize,
    /// The family's rules in the listed chain.
    pub rules_listed: usize,
    /// Rules in all target chains together.
    pub rules_classified: usize,
    /// Rules in the largest target chain: the longest walk a packet can take.
    pub max_chain_rules: usize,
}

/// Classify the NSG chains of `plan` in place; chains below `min_rules` stay listed.
pub fn classify(plan: &mut TablePlan, opts: &ClassifyOptions) -> Vec<ClassifyStats> {
    let mut stats = vec![];
    for name in [CHAIN_IN, CHAIN_OUT] {
        let Some(pos) = plan.chains.iter().position(|c| c.name == name) else {
            continue;
        };
        let (chain, extra, mut s) = classify_chain(plan, &plan.chains[pos], opts);
        plan.chains[pos] = chain;
        for (i, c) in extra.into_iter().enumerate() {
            plan.chains.insert(pos + 1 + i, c);
        }
        stats.append(&mut s);
    }
    for s in &stats {
        plan.notes.push(format!(
            "{} IPv{}: classified on {} address: {} intervals, {} chains, {} rules listed → {} in chains (at most {} a chain)",
            s.chain,
            if s.v6 { 6 } else { 4 },
            if s.side == Side::Src { "source" } else { "destination" },
            s.intervals,
            s.chains,
            s.rules_listed,
            s.rules_classified,
            s.max_chain_rules
        ));
    }
    stats
}

fn family(v6: bool) -> Family {
    if v6 {
        Family::V6
    } else {
        Family::V4
    }
}

/// Which families a rule can match (a rendered NSG rule always names one; else both).
fn families(r: &RuleDef) -> [bool; 2] {
    for s in &r.stmts {
        match s {
            Stmt::Addr { v6, .. } | Stmt::Family(v6) | Stmt::Vmap { v6, .. } => {
                return [!v6, *v6];
            }
            _ => {}
        }
    }
    [true, true]
}

/// The rule's range on the field: a literal prefix narrows it; a named set (kept whole, in
/// every chain) or no match on the field leaves the whole family.
fn field_range(r: &RuleDef, v6: bool, side: Side) -> (u128, u128) {
    for s in &r.stmts {
        if let Stmt::Addr {
            v6: f,
            side: sd,
            operand: Operand::Elem(e @ Elem::Net(_)),
        } = s
        {
            if *f == v6 && *sd == side {
                return e.interval();
            }
        }
    }
    (0, family(v6).max())
}

/// The rules' ranges on one field, sorted once for every cut tried on them.
pub struct Ranges {
    max: u128,
    starts: Vec<u128>,
    ends: Vec<u128>,
    /// Where an elementary interval begins: 0, every start, every end + 1.
    points: Vec<u128>,
}

impl Ranges {
    pub fn new(ranges: &[(u128, u128)], max: u128) -> Ranges {
        let mut starts: Vec<u128> = ranges.iter().map(|r| r.0).collect();
        let mut ends: Vec<u128> = ranges.iter().map(|r| r.1).collect();
        starts.sort_unstable();
        ends.sort_unstable();
        let mut points: Vec<u128> = vec![0];
        points.extend(starts.iter().copied());
        points.extend(ends.iter().filter(|&&e| e < max).map(|e| e + 1));
        points.sort_unstable();
        points.dedup();
        Ranges {
            max,
            starts,
            ends,
            points,
        }
    }

    /// Ranges overlapping `[a, b]`.
    pub fn overlapping(&self, a: u128, b: u128) -> usize {
        self.starts.partition_point(|&s| s <= b) - self.ends.partition_point(|&e| e < a)
    }

    /// Cut the family's space into intervals, left to right, each as wide as it can be while
    /// at most `limit` ranges overlap it (an elementary interval over the limit stands alone).
    pub fn intervals(&self, limit: usize) -> Vec<(u128, u128)> {
        let points = &self.points;
        let end = |j: usize| points.get(j + 1).map_or(self.max, |p| p - 1);
        let mut out = vec![];
        let mut j = 0;
        while j < points.len() {
            let a = points[j];
            let mut b = end(j);
            j += 1;
            while j < points.len() && self.overlapping(a, end(j)) <= limit {
                b = end(j);
                j += 1;
            }
            out.push((a, b));
        }
        out
    }
}

/// One family's classification: the field, its intervals and their rule lists.
struct Split {
    side: Side,
    intervals: Vec<(u128, u128)>,
    cost: usize,
}

fn split(body: &[&RuleDef], v6: bool, opts: &ClassifyOptions) -> Option<Split> {
    let max = family(v6).max();
    let mut best: Option<Split> = None;
    for side in [Side::Src, Side::Dst] {
        let ranges: Vec<(u128, u128)> = body.iter().map(|r| field_range(r, v6, side)).collect();
        let everywhere = ranges.iter().filter(|r| **r == (0, max)).count();
        let sorted = Ranges::new(&ranges, max);
        let mut limit = everywhere + opts.bucket_rules.max(1);
        loop {
            let cut = sorted.intervals(limit);
            let cost: usize = cut.iter().map(|&(a, b)| sorted.overlapping(a, b)).sum();
            // Bounded duplication: wider buckets until the copies fit (one bucket always does).
            if cost <= opts.max_copies * body.len() || cut.len() <= 1 {
                if cut.len() > 1 && best.as_ref().is_none_or(|b| cost < b.cost) {
                    best = Some(Split {
                        side,
                        intervals: cut,
                        cost,
                    });
                }
                break;
            }
            limit *= 2;
        }
    }
    best
}

/// The chain with its head and one verdict map per classified family, plus the target chains.
fn classify_chain(
    plan: &TablePlan,
    chain: &ChainDef,
    opts: &ClassifyOptions,
) -> (ChainDef, Vec<ChainDef>, Vec<ClassifyStats>) {
    // The head: the fixed rules before the first NSG rule (every NSG rule has its counter).
    let head_len = chain
        .rules
        .iter()
        .position(|r| r.stmts.iter().any(|s| matches!(s, Stmt::Counter(_))))
        .unwrap_or(chain.rules.len());
    let (head, body) = chain.rules.split_at(head_len);
    let mut out = ChainDef {
        name: chain.name.clone(),
        base: chain.base.clone(),
        rules: head.to_vec().into(),
    };
    let mut extra: Vec<ChainDef> = vec![];
    let mut stats = vec![];
    let mut classified = [false, false];
    let taken: std::collections::BTreeSet<&str> =
        plan.chains.iter().map(|c| c.name.as_str()).collect();
    if body.len() >= opts.min_rules {
        for v6 in [false, true] {
            let fam: Vec<&RuleDef> = body.iter().filter(|r| families(r)[v6 as usize]).collect();
            let Some(sp) = split(&fam, v6, opts) else {
                continue;
            };
            let ranges: Vec<(u128, u128)> =
                fam.iter().map(|r| field_range(r, v6, sp.side)).collect();
            let mut by_rules: HashMap<Vec<usize>, String> = HashMap::new();
            let mut entries: Vec<VmapEntry> = vec![];
            let mut rules_classified = 0;
            let mut max_chain_rules = 0;
            for &(a, b) in &sp.intervals {
                let members: Vec<usize> = (0..fam.len())
                    .filter(|&i| ranges[i].0 <= b && ranges[i].1 >= a)
                    .collect();
                let target = match by_rules.get(&members) {
                    Some(name) => name.clone(),
                    None => {
                        let mut name =
                            format!("{}_{}_{}", chain.name, 4 + 2 * v6 as u8, extra.len());
                        while taken.contains(name.as_str()) {
                            name.push('_');
                        }
                        rules_classified += members.len();
                        max_chain_rules = max_chain_rules.max(members.len());
                        extra.push(ChainDef {
                            name: name.clone(),
                            base: None,
                            rules: members
                                .iter()
                                .map(|&i| fam[i].clone())
                                .collect::<Vec<_>>()
                                .into(),
                        });
                        by_rules.insert(members, name.clone());
                        name
                    }
                };
                match entries.last_mut() {
                    // Neighbouring intervals with the same rules are one map element.
                    Some(last) if last.chain == target => last.last = family(v6).addr(b),
                    _ => entries.push(VmapEntry {
                        first: family(v6).addr(a),
                        last: family(v6).addr(b),
                        chain: target,
                    }),
                }
            }
            stats.push(ClassifyStats {
                chain: chain.name.clone(),
                v6,
                side: sp.side,
                intervals: entries.len(),
                chains: by_rules.len(),
                rules_listed: fam.len(),
                rules_classified,
                max_chain_rules,
            });
            Arc::make_mut(&mut out.rules).push(RuleDef {
                comment: format!(
                    "classified IPv{} rules by {} address",
                    if v6 { 6 } else { 4 },
                    if sp.side == Side::Src {
                        "source"
                    } else {
                        "destination"
                    }
                ),
                stmts: vec![Stmt::Vmap {
                    v6,
                    side: sp.side,
                    entries,
                }],
            });
            classified[v6 as usize] = true;
        }
    }
    // Packets of a classified family never come back from the map (it covers the family and
    // every entry is a goto): the rest serve the other family, listed.
    Arc::make_mut(&mut out.rules).extend(
        body.iter()
            .filter(|r| {
                let f = families(r);
                (f[0] && !classified[0]) || (f[1] && !classified[1])
            })
            .cloned(),
    );
    (out, extra, stats)
}

/// A packet as the NSG chains see it, for [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 / 58 ICMP).
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// Part of a connection conntrack already knows (a reply).
    pub established: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Left the chain without a verdict: the base chain goes on (its policy accepts).
    Continue,
}

/// What the chains did with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub verdict: Verdict,
    /// Named counters the packet moved, in order (audit rules, then the deciding rule).
    pub counters: Vec<String>,
    /// Rules looked at, verdict map rules included: the per-packet cost.
    pub rules: usize,
}

/// Run `chain` of `plan` on a packet as the kernel would (the statements the renderer writes;
/// interface and neighbour-discovery matches are false). A missing chain or a loop fails closed.
pub fn evaluate(plan: &TablePlan, chain: &str, p: &Packet) -> Walk {
    let mut walk = Walk {
        verdict: Verdict::Continue,
        counters: vec![],
        rules: 0,
    };
    walk.verdict = run(plan, chain, p, &mut walk, 0);
    walk
}

fn run(plan: &TablePlan, chain: &str, p: &Packet, walk: &mut Walk, depth: usize) -> Verdict {
    let Some(c) = plan.chain(chain).filter(|_| depth < 16) else {
        return Verdict::Drop;
    };
    'rules: for r in c.rules.iter() {
        walk.rules += 1;
        for s in &r.stmts {
            match s {
                Stmt::Counter(n) => walk.counters.push(n.clone()),
                Stmt::Log { .. } => {}
                Stmt::Accept => return Verdict::Accept,
                Stmt::Drop => return Verdict::Drop,
                Stmt::Return => return Verdict::Continue,
                Stmt::Jump(target) => match run(plan, target, p, walk, depth + 1) {
                    Verdict::Continue => continue 'rules,
                    v => return v,
                },
                Stmt::Vmap { v6, side, entries } => {
                    let a = if *side == Side::Src { p.src } else { p.dst };
                    if a.is_ipv6() != *v6 {
                        continue 'rules;
                    }
                    match entries.iter().find(|e| e.first <= a && a <= e.last) {
                        Some(e) => return run(plan, &e.chain, p, walk, depth + 1),
                        None => continue 'rules,
                    }
                }
                m => {
                    if !matches(plan, m, p) {
                        continue 'rules;
                    }
                }
            }
        }
    }
    Verdict::Continue
}

fn operand_has(plan: &TablePlan, o: &Operand, x: u128, v6: Option<bool>) -> bool {
    let hit = |e: &Elem| {
        let fam_ok = match (e, v6) {
            (Elem::Net(IpNet::V4(_)), Some(v6)) => !v6,
            (Elem::Net(IpNet::V6(_)), Some(v6)) => v6,
            _ => true,
        };
        let (lo, hi) = e.interval();
        fam_ok && lo <= x && x <= hi
    };
    match o {
        Operand::Elem(e) => hit(e),
        Operand::Set(name) => plan.set(name).is_some_and(|s| s.elements.iter().any(hit)),
    }
}

fn matches(plan: &TablePlan, s: &Stmt, p: &Packet) -> bool {
    let v6 = p.src.is_ipv6();
    let tcp_udp = matches!(p.protocol, 6 | 17);
    match s {
        Stmt::CtEstablished => p.established,
        Stmt::Loopback(_) | Stmt::NeighbourDiscovery | Stmt::ReversePathMissing => false,
        Stmt::Family(f) => *f == v6,
        Stmt::L4proto(n) => *n == p.protocol,
        Stmt::TcpUdp(yes) => *yes == tcp_udp,
        Stmt::Addr {
            v6: f,
            side,
            operand,
        } => {
            let a = if *side == Side::Src { p.src } else { p.dst };
            *f == v6 && operand_has(plan, operand, addr_value(a), Some(v6))
        }
        Stmt::Port { side, operand } => {
            let port = if *side == Side::Src {
                p.src_port
            } else {
                p.dst_port
            };
            tcp_udp && operand_has(plan, operand, port as u128, None)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_cover_the_family_and_respect_the_limit() {
        let max = u32::MAX as u128;
        let ranges = [(10, 19), (15, 30), (100, 200), (0, max), (150, 150)];
        let sorted = Ranges::new(&ranges, max);
        let cut = sorted.intervals(2);
        assert_eq!(cut.first().unwrap().0, 0);
        assert_eq!(cut.last().unwrap().1, max);
        for w in cut.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0, "{cut:?}");
        }
        for &(a, b) in &cut {
            let n = sorted.overlapping(a, b);
            let brute = ranges.iter().filter(|r| r.0 <= b && r.1 >= a).count();
            assert_eq!(n, brute);
            // Over the limit only when no range begins or ends inside: it cannot be cut finer.
            let elementary = !ranges
                .iter()
                .any(|r| (r.0 > a && r.0 <= b) || (r.1 >= a && r.1 < b));
            assert!(n <= 2 || elementary, "{a}-{b}: {n}");
        }
    }
}
