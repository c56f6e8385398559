//! Priority-ordered 5-tuple rule classifier over protocol, source and destination prefix *sets*
//! and source and destination port-range *sets*, IPv4 and IPv6.
//!
//! # Algorithm and why
//!
//! Decision trees in the **HyperSplit** style (Qi et al., INFOCOM 2009) over **EffiCuts**-style
//! rule partitions (Vamanan et al., SIGCOMM 2010), with multiway nodes and vectorisable leaves:
//!
//! * Every rule is projected onto each of the five fields as a sorted set of disjoint intervals
//!   (a prefix is an interval of addresses; a prefix *set* or port-range *set* is a union of
//!   intervals). Sets are never expanded into a cross product: a rule with 2,000 prefixes and 10
//!   port ranges is one rule whose address field has ≤ 2,000 intervals.
//! * A node splits the current box of header space on one field. The field is the one whose best
//!   binary split (at an elementary-interval boundary) minimises the larger child's rule count —
//!   HyperSplit's balanced cutting, where a rule goes to every side its interval set touches.
//!   Up to three rounds of such splits on the same field are merged into one node of up to 8
//!   children, so a lookup reads one 48-byte node per three binary levels.
//! * A rule that covers the whole box of a node hides every later rule there, so a node's rule
//!   list is cut after its first covering rule. This removes most of the replication of wide
//!   rules that makes plain decision trees explode on firewall rule sets.
//! * Rules whose source or destination covers at least half the address space ("large") go into
//!   separate trees from the specific ones — EffiCuts' separability: mixing `0.0.0.0/0` with /32
//!   rules forces the wide rules into every leaf (measured on ClassBench fw1_10k: one tree needs
//!   108 MiB and 5 s to build; four partitions 2.6 MiB and 25 ms).
//! * Leaves hold at most ~8 rules, laid out field by field in blocks of 8 lanes, so a leaf is
//!   checked with a few vector compares and one bit scan instead of up to nine unpredictable
//!   branches per rule. The (at most four) trees are walked for a fixed number of steps each —
//!   leaves loop on themselves — so no branch depends on the packet and the walks overlap in the
//!   CPU; the leaves are then scanned in tree order, skipping rules that cannot beat the best
//!   match found so far.
//!
//! Why not the alternatives: decomposition with per-field bit vectors (Lucent BV, DPDK-ACL-like
//! bitmap intersection) suits ≤ 64k rules in memory, but on firewall sets 40 % of the rules have
//! a wildcard source, so every per-field bitmap is dense and a first match near the end of the
//! list costs an AND over 5 × N/64 words (≈ 750 words for 10k rules), and each field needs `N/8`
//! bytes per elementary interval. Tuple-space search and TupleMerge need one hash entry per
//! (source prefix × destination prefix) pair — exactly the cross-product expansion that prefix
//! sets must avoid. A prefix-trie index on one address with per-rule checks was simulated on
//! ClassBench: 4–7 candidates per lookup on acl1 but 570 on fw1, whose destinations are /1 and
//! /2 prefixes. Decision trees bound the work per lookup by tree depth plus one short leaf,
//! independently of how many rules share a wildcard.
//!
//! # Packets, families and NSG-2.2
//!
//! IPv4 and IPv6 packets are classified by separate forests built from the rules' IPv4 and IPv6
//! prefixes, so no rule ever matches across families. A packet whose source and destination are of
//! different families (which no real packet is) is checked against the rules one by one. With
//! [`ClassifierOptions::ports_only_for_tcp_udp`] (NSG-2.2), a packet whose protocol is neither TCP (6)
//! nor UDP (17) is classified by a third forest in which the rules' port sets are widened to all
//! ports.
//!
//! # Updates
//!
//! The classifier is immutable once built. Adding or removing one rule only changes the tree of
//! its partition (one of at most four per family and port mode), and within it only the leaves
//! whose box the rule's intervals touch (a leaf that grows past 8 rules is split locally; a
//! removed rule that was the covering rule of a leaf brings back the rules it hid, from the
//! parent's list). As implemented a change rebuilds the classifier: 20–50 ms for a ClassBench 10k
//! set, about a quarter of that for the one partition concerned (figures in `docs/benchmarks.md`).
//!
//! # Costs
//!
//! [`Classifier::first_match`] does not allocate. [`Classifier::all_matches`] (for explanations)
//! checks every rule of the packet's family: O(rules), about 1–2 ns per rule.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::key::{in_intervals, merge_intervals, Key};
use super::mem::Frozen;

const TCP: u8 = 6;
const UDP: u8 = 17;
/// Leaf size below which a node is not split further.
const BINTH: usize = 8;
/// Depth at which a node becomes a leaf whatever its size (a bound for adversarial rule sets).
const MAX_DEPTH: usize = 48;
const NONE: u32 = u32::MAX;
/// Trees per forest at most: the four (source large?, destination large?) partitions.
const MAX_TREES: usize = 4;

/// The header fields a rule classifies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6...).
    pub protocol: u8,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
}

/// One rule. A field's set matches a packet when the packet's value lies in it; a rule matches
/// when every field matches. A rule with an empty set (no prefix, or no port in its ranges) in any
/// field never matches anything.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClassifierRule {
    /// `None` = any protocol.
    pub protocol: Option<u8>,
    /// Source prefixes (union). `0.0.0.0/0` and `::/0` together = any address.
    pub src: Vec<IpNet>,
    /// Destination prefixes (union).
    pub dst: Vec<IpNet>,
    /// Inclusive source port ranges (union); a range with `lo > hi` is empty.
    pub src_ports: Vec<(u16, u16)>,
    /// Inclusive destination port ranges (union).
    pub dst_ports: Vec<(u16, u16)>,
}

impl ClassifierRule {
    /// Plain definition of a match, rule by rule; the classifier returns exactly the first rule
    /// for which this is true.
    pub fn matches(&self, k: &PacketKey, opts: ClassifierOptions) -> bool {
        let port_in = |set: &[(u16, u16)], p: u16| set.iter().any(|&(lo, hi)| lo <= p && p <= hi);
        let nonempty = |set: &[(u16, u16)]| set.iter().any(|&(lo, hi)| lo <= hi);
        let ports_ignored = opts.ports_only_for_tcp_udp && k.protocol != TCP && k.protocol != UDP;
        self.protocol.is_none_or(|p| p == k.protocol)
            && self.src.iter().any(|n| n.contains(&k.src))
            && self.dst.iter().any(|n| n.contains(&k.dst))
            && nonempty(&self.src_ports)
            && nonempty(&self.dst_ports)
            && (ports_ignored
                || (port_in(&self.src_ports, k.src_port) && port_in(&self.dst_ports, k.dst_port)))
    }
}

/// Build options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifierOptions {
    /// NSG-2.2: port sets only apply to TCP and UDP packets; for any other protocol the ports of
    /// a rule match whatever the packet carries. Default: `true`.
    pub ports_only_for_tcp_udp: bool,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            ports_only_for_tcp_udp: true,
        }
    }
}

/// A rule compiled for one family (36 bytes for IPv4).
#[derive(Clone, Copy, Debug)]
struct CRule<A> {
    /// Source interval, or the hull of the source set when `ext != NONE`.
    s: (A, A),
    d: (A, A),
    sp: (u16, u16),
    dp: (u16, u16),
    id: u32,
    /// Index into `Forest::ext` when some field has more than one interval.
    ext: u32,
    proto: u8,
    proto_any: bool,
}

/// Full interval sets of a multi-interval rule: ranges into the forest's pools.
#[derive(Clone, Copy, Debug)]
struct Ext {
    s: (u32, u32),
    d: (u32, u32),
    sp: (u32, u32),
    dp: (u32, u32),
}

/// A packet in one family's key space.
#[derive(Clone, Copy, Debug)]
struct Pkt<A> {
    s: A,
    d: A,
    sp: u16,
    dp: u16,
    p: u8,
}

impl<A: Key> Pkt<A> {
    #[inline]
    fn fields(&self) -> [A; 5] {
        [
            self.s,
            self.d,
            A::from_u128(u128::from(self.sp)),
            A::from_u128(u128::from(self.dp)),
            A::from_u128(u128::from(self.p)),
        ]
    }
}

/// Children per inner node at most (one field, up to `FANOUT - 1` thresholds).
const FANOUT: usize = 8;
/// Rules per leaf block.
const LANES: usize = 8;

/// Tree node. Inner nodes split one field at up to `FANOUT - 1` ascending thresholds (unused
/// ones are `MAX`): the next node is `a + c`, where `c` is the number of thresholds `<=` the
/// packet's value, capped at `b - 1` (`b` children). A leaf points to itself (`a` = own index,
/// `b = 1`, thresholds `MAX`), so a walk may take more steps than the leaf's depth, and holds
/// the rule blocks `blocks[blk..blk + nblk]`.
#[derive(Clone, Copy, Debug, Default)]
struct Node<A> {
    thresh: [A; FANOUT - 1],
    a: u32,
    b: u32,
    blk: u32,
    nblk: u32,
    field: u8,
}

/// Up to `LANES` rules of a leaf, in priority order, field by field ("structure of arrays"), so
/// that a leaf is checked with a few vector compares and no data-dependent branch. Empty lanes
/// have an empty source interval (`MAX..0`) and id `NONE`.
#[derive(Clone, Copy, Debug)]
struct Block<A> {
    s_lo: [A; LANES],
    s_hi: [A; LANES],
    d_lo: [A; LANES],
    d_hi: [A; LANES],
    sp_lo: [u16; LANES],
    sp_hi: [u16; LANES],
    dp_lo: [u16; LANES],
    dp_hi: [u16; LANES],
    p_lo: [u8; LANES],
    p_hi: [u8; LANES],
    id: [u32; LANES],
    /// `Forest::ext` index of a multi-interval rule (its lane holds the hulls), else `NONE`.
    ext: [u32; LANES],
}

impl<A: Key> Block<A> {
    fn empty() -> Self {
        Block {
            s_lo: [A::MAX; LANES],
            s_hi: [A::default(); LANES],
            d_lo: [A::MAX; LANES],
            d_hi: [A::default(); LANES],
            sp_lo: [u16::MAX; LANES],
            sp_hi: [0; LANES],
            dp_lo: [u16::MAX; LANES],
            dp_hi: [0; LANES],
            p_lo: [u8::MAX; LANES],
            p_hi: [0; LANES],
            id: [NONE; LANES],
            ext: [NONE; LANES],
        }
    }

    fn set(&mut self, lane: usize, r: &CRule<A>) {
        self.s_lo[lane] = r.s.0;
        self.s_hi[lane] = r.s.1;
        self.d_lo[lane] = r.d.0;
        self.d_hi[lane] = r.d.1;
        self.sp_lo[lane] = r.sp.0;
        self.sp_hi[lane] = r.sp.1;
        self.dp_lo[lane] = r.dp.0;
        self.dp_hi[lane] = r.dp.1;
        (self.p_lo[lane], self.p_hi[lane]) = if r.proto_any {
            (0, u8::MAX)
        } else {
            (r.proto, r.proto)
        };
        self.id[lane] = r.id;
        self.ext[lane] = r.ext;
    }

    /// Bit `i` set when lane `i`'s intervals (hulls) contain the packet.
    #[inline]
    fn mask(&self, k: &Pkt<A>) -> u32 {
        let mut m = 0u32;
        for i in 0..LANES {
            let hit = (k.s >= self.s_lo[i])
                & (k.s <= self.s_hi[i])
                & (k.d >= self.d_lo[i])
                & (k.d <= self.d_hi[i])
                & (k.sp >= self.sp_lo[i])
                & (k.sp <= self.sp_hi[i])
                & (k.dp >= self.dp_lo[i])
                & (k.dp <= self.dp_hi[i])
                & (k.p >= self.p_lo[i])
                & (k.p <= self.p_hi[i]);
            m |= u32::from(hit) << i;
        }
        m
    }
}

/// A tree of one partition: its root in `Forest::nodes` and its smallest rule position.
#[derive(Clone, Copy, Debug)]
struct Tree {
    root: u32,
    min_pos: u32,
    depth: u32,
    nodes: u32,
    leaf_rules: u32,
}

/// The rules of one family (and port mode) with their trees.
#[derive(Clone, Debug)]
struct Forest<A: Key> {
    rules: Vec<CRule<A>>,
    ext: Vec<Ext>,
    pool: Vec<(A, A)>,
    ppool: Vec<(u16, u16)>,
    /// Nodes of all trees (on huge pages when large, see [`super::mem`]).
    nodes: Frozen<Node<A>>,
    /// Leaf blocks of all trees.
    blocks: Frozen<Block<A>>,
    /// At most `MAX_TREES`, by ascending `min_pos`.
    trees: Vec<Tree>,
    /// Walk steps that reach a leaf in every tree.
    depth: u32,
}

/// A rule in build form: per field, sorted disjoint intervals.
struct BRule<A> {
    f: [Vec<(A, A)>; 5],
}

impl<A: Key> Forest<A> {
    fn empty() -> Self {
        Forest {
            rules: Vec::new(),
            ext: Vec::new(),
            pool: Vec::new(),
            ppool: Vec::new(),
            nodes: Frozen::default(),
            blocks: Frozen::default(),
            trees: Vec::new(),
            depth: 0,
        }
    }

    /// `addr(net)` gives the net's interval in this family or `None`; `keep(rule)` filters rules;
    /// `widen_ports` makes every port set "all ports".
    fn build(
        rules: &[ClassifierRule],
        addr: impl Fn(&IpNet) -> Option<(A, A)>,
        keep: impl Fn(&ClassifierRule) -> bool,
        widen_ports: bool,
    ) -> Self {
        let mut forest = Forest::empty();
        let mut brules: Vec<BRule<A>> = Vec::new();
        let all_ports = vec![(A::from_u128(0), A::from_u128(65535))];
        for (id, r) in rules.iter().enumerate() {
            if !keep(r) {
                continue;
            }
            let s = merge_intervals(r.src.iter().filter_map(&addr).collect());
            let d = merge_intervals(r.dst.iter().filter_map(&addr).collect());
            let ports = |v: &[(u16, u16)]| -> Vec<(A, A)> {
                merge_intervals(
                    v.iter()
                        .map(|&(lo, hi)| {
                            (A::from_u128(u128::from(lo)), A::from_u128(u128::from(hi)))
                        })
                        .collect(),
                )
            };
            let mut sp = ports(&r.src_ports);
            let mut dp = ports(&r.dst_ports);
            if s.is_empty() || d.is_empty() || sp.is_empty() || dp.is_empty() {
                continue;
            }
            if widen_ports {
                sp.clone_from(&all_ports);
                dp.clone_from(&all_ports);
            }
            let p = match r.protocol {
                Some(p) => vec![(A::from_u128(u128::from(p)), A::from_u128(u128::from(p)))],
                None => vec![(A::from_u128(0), A::from_u128(255))],
            };
            let to16 = |v: &[(A, A)]| -> Vec<(u16, u16)> {
                v.iter()
                    .map(|&(lo, hi)| (lo.to_u128() as u16, hi.to_u128() as u16))
                    .collect()
            };
            let (sp16, dp16) = (to16(&sp), to16(&dp));
            let hull = |v: &[(A, A)]| (v[0].0, v[v.len() - 1].1);
            let hull16 = |v: &[(u16, u16)]| (v[0].0, v[v.len() - 1].1);
            let multi = s.len() > 1 || d.len() > 1 || sp16.len() > 1 || dp16.len() > 1;
            let ext = if multi {
                let mut range_a = |v: &[(A, A)]| {
                    let off = forest.pool.len() as u32;
                    forest.pool.extend_from_slice(v);
                    (off, v.len() as u32)
                };
                let (es, ed) = (range_a(&s), range_a(&d));
                let mut range_p = |v: &[(u16, u16)]| {
                    let off = forest.ppool.len() as u32;
                    forest.ppool.extend_from_slice(v);
                    (off, v.len() as u32)
                };
                let (esp, edp) = (range_p(&sp16), range_p(&dp16));
                forest.ext.push(Ext {
                    s: es,
                    d: ed,
                    sp: esp,
                    dp: edp,
                });
                (forest.ext.len() - 1) as u32
            } else {
                NONE
            };
            forest.rules.push(CRule {
                s: hull(&s),
                d: hull(&d),
                sp: hull16(&sp16),
                dp: hull16(&dp16),
                id: id as u32,
                ext,
                proto: r.protocol.unwrap_or(0),
                proto_any: r.protocol.is_none(),
            });
            brules.push(BRule {
                f: [s, d, sp, dp, p],
            });
        }
        // EffiCuts-style partitions: (source large, destination large).
        let half = A::MAX.to_u128() / 2;
        let large = |v: &[(A, A)]| {
            let mut total: u128 = 0;
            for &(lo, hi) in v {
                total = total.saturating_add(hi.to_u128() - lo.to_u128());
            }
            total >= half
        };
        let mut parts: [Vec<u32>; 4] = Default::default();
        for (pos, r) in brules.iter().enumerate() {
            let c = usize::from(large(&r.f[0])) | (usize::from(large(&r.f[1])) << 1);
            parts[c].push(pos as u32);
        }
        let mut b = TreeBuilder {
            rules: &brules,
            compiled: &forest.rules,
            nodes: Vec::new(),
            blocks: Vec::new(),
            leaves: HashMap::new(),
            max_depth: 0,
            leaf_rules: 0,
        };
        let mut trees = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            trees.push(b.tree(part));
        }
        trees.sort_by_key(|t| t.min_pos);
        forest.depth = trees.iter().map(|t| t.depth).max().unwrap_or(0);
        forest.trees = trees;
        forest.nodes = Frozen::new(&b.nodes);
        forest.blocks = Frozen::new(&b.blocks);
        forest.rules.shrink_to_fit();
        forest
    }

    #[inline]
    fn rule_matches(&self, r: &CRule<A>, k: &Pkt<A>) -> bool {
        // Non-short-circuit `&`: one predictable branch per rule instead of up to nine
        // data-dependent ones.
        let hit = (k.s >= r.s.0)
            & (k.s <= r.s.1)
            & (k.d >= r.d.0)
            & (k.d <= r.d.1)
            & (k.sp >= r.sp.0)
            & (k.sp <= r.sp.1)
            & (k.dp >= r.dp.0)
            & (k.dp <= r.dp.1)
            & (r.proto_any | (k.p == r.proto));
        if !hit {
            return false;
        }
        r.ext == NONE || self.ext_matches(r.ext, k)
    }

    /// Exact check of a multi-interval rule whose hulls contain the packet.
    fn ext_matches(&self, ext: u32, k: &Pkt<A>) -> bool {
        let Some(e) = self.ext.get(ext as usize) else {
            return false;
        };
        let a = |(off, len): (u32, u32)| &self.pool[off as usize..(off + len) as usize];
        let p = |(off, len): (u32, u32)| &self.ppool[off as usize..(off + len) as usize];
        in_intervals(a(e.s), k.s)
            && in_intervals(a(e.d), k.d)
            && in_intervals(p(e.sp), k.sp)
            && in_intervals(p(e.dp), k.dp)
    }

    #[inline]
    fn first(&self, k: &Pkt<A>) -> Option<u32> {
        let f = k.fields();
        let n = self.trees.len().min(MAX_TREES);
        let mut at = [0u32; MAX_TREES];
        // Each tree is walked for a fixed number of steps, its depth (leaves loop on themselves):
        // no branch depends on the data, so the walks of the trees overlap in the CPU.
        for (slot, t) in at.iter_mut().zip(&self.trees) {
            let mut i = t.root;
            for _ in 0..t.depth {
                let node = &self.nodes[i as usize];
                let v = f[usize::from(node.field)];
                let mut c = 0u32;
                for t in node.thresh {
                    c += u32::from(v >= t);
                }
                i = node.a + c.min(node.b.saturating_sub(1));
            }
            *slot = i;
        }
        let mut best = NONE;
        for &slot in &at[..n] {
            let node = &self.nodes[slot as usize];
            let blocks = &self.blocks[node.blk as usize..(node.blk + node.nblk) as usize];
            'leaf: for blk in blocks {
                if blk.id[0] >= best {
                    break;
                }
                let mut m = blk.mask(k);
                while m != 0 {
                    let lane = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let id = blk.id[lane];
                    if id >= best {
                        break 'leaf;
                    }
                    if blk.ext[lane] == NONE || self.ext_matches(blk.ext[lane], k) {
                        best = id;
                        break 'leaf;
                    }
                }
            }
        }
        (best != NONE).then_some(best)
    }

    fn all(&self, k: &Pkt<A>, out: &mut Vec<u32>) {
        out.extend(
            self.rules
                .iter()
                .filter(|r| self.rule_matches(r, k))
                .map(|r| r.id),
        );
    }

    fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.rules.capacity() * size_of::<CRule<A>>()
            + self.ext.capacity() * size_of::<Ext>()
            + self.pool.capacity() * size_of::<(A, A)>()
            + self.ppool.capacity() * 4
            + self.nodes.bytes()
            + self.blocks.bytes()
            + self.trees.capacity() * size_of::<Tree>()
    }
}

/// HyperSplit tree construction.
struct TreeBuilder<'a, A> {
    rules: &'a [BRule<A>],
    compiled: &'a [CRule<A>],
    nodes: Vec<Node<A>>,
    blocks: Vec<Block<A>>,
    /// Identical leaves share their blocks: rule list → (first block, blocks).
    leaves: HashMap<Vec<u32>, (u32, u32)>,
    max_depth: usize,
    leaf_rules: usize,
}

/// Does some interval of `ivs` meet `[lo, hi]`?
fn meets<A: Key>(ivs: &[(A, A)], lo: A, hi: A) -> bool {
    let i = ivs.partition_point(|&(_, h)| h < lo);
    i < ivs.len() && ivs[i].0 <= hi
}

/// Does one interval of `ivs` contain `[lo, hi]`?
fn contains<A: Key>(ivs: &[(A, A)], lo: A, hi: A) -> bool {
    let i = ivs.partition_point(|&(_, h)| h < lo);
    i < ivs.len() && ivs[i].0 <= lo && ivs[i].1 >= hi
}

impl<'a, A: Key> TreeBuilder<'a, A> {
    /// Builds the tree of one partition (rule positions, ascending) into `self.nodes`.
    fn tree(&mut self, list: Vec<u32>) -> Tree {
        let min_pos = list.first().copied().unwrap_or(NONE);
        let root = self.nodes.len();
        let (nodes0, rules0) = (self.nodes.len(), self.leaf_rules);
        self.max_depth = 0;
        self.nodes.push(Node::default());
        let max = [
            A::MAX,
            A::MAX,
            A::from_u128(65535),
            A::from_u128(65535),
            A::from_u128(255),
        ];
        let region = max.map(|m| (A::from_u128(0), m));
        self.node(root, list, region, 0);
        Tree {
            root: root as u32,
            min_pos,
            depth: self.max_depth as u32,
            nodes: (self.nodes.len() - nodes0) as u32,
            leaf_rules: (self.leaf_rules - rules0) as u32,
        }
    }

    fn make_leaf(&mut self, at: usize, list: Vec<u32>) {
        let (blk, nblk) = match self.leaves.get(&list) {
            Some(&b) => b,
            None => {
                let blk = self.blocks.len() as u32;
                for chunk in list.chunks(LANES) {
                    let mut b = Block::empty();
                    for (lane, &pos) in chunk.iter().enumerate() {
                        b.set(lane, &self.compiled[pos as usize]);
                    }
                    self.blocks.push(b);
                }
                self.leaf_rules += list.len();
                let nblk = self.blocks.len() as u32 - blk;
                self.leaves.insert(list, (blk, nblk));
                (blk, nblk)
            }
        };
        self.nodes[at] = Node {
            thresh: [A::MAX; FANOUT - 1],
            a: at as u32,
            b: 1,
            blk,
            nblk,
            field: 0,
        };
    }

    /// Cuts `list` after its first rule covering `region` (later rules are hidden there).
    fn truncate(&self, list: &mut Vec<u32>, region: &[(A, A); 5]) {
        let covers = |r: &BRule<A>| (0..5).all(|f| contains(&r.f[f], region[f].0, region[f].1));
        if let Some(p) = list.iter().position(|&r| covers(&self.rules[r as usize])) {
            list.truncate(p + 1);
        }
    }

    /// Best binary split of `list` on field `f` inside `region`: (larger side, both sides,
    /// threshold); the left side is `[lo, threshold - 1]`.
    fn split_on(&self, list: &[u32], region: &[(A, A); 5], f: usize) -> Option<(usize, usize, A)> {
        let (lo, hi) = region[f];
        if lo == hi {
            return None;
        }
        let mut starts: Vec<A> = Vec::with_capacity(list.len());
        let mut ends: Vec<A> = Vec::with_capacity(list.len());
        let mut bounds: Vec<A> = Vec::new();
        for &r in list {
            let ivs = &self.rules[r as usize].f[f];
            let first = ivs.partition_point(|&(_, h)| h < lo);
            let mut min = None;
            let mut max = lo;
            for &(a, b) in &ivs[first..] {
                if a > hi {
                    break;
                }
                let (a, b) = (a.max(lo), b.min(hi));
                if min.is_none() {
                    min = Some(a);
                }
                max = b;
                if a > lo {
                    bounds.push(a);
                }
                if b < hi {
                    bounds.push(b.succ());
                }
            }
            starts.push(min.unwrap_or(lo));
            ends.push(max);
        }
        if bounds.is_empty() {
            return None;
        }
        starts.sort_unstable();
        ends.sort_unstable();
        bounds.sort_unstable();
        bounds.dedup();
        let n = list.len();
        // left(s): rules meeting [lo, s-1]; right(s): rules meeting [s, hi].
        let left = |s: A| starts.partition_point(|&x| x < s);
        let right = |s: A| n - ends.partition_point(|&x| x < s);
        let i = bounds.partition_point(|&s| left(s) < right(s));
        let mut best: Option<(usize, usize, A)> = None;
        for j in [i.wrapping_sub(1), i] {
            let Some(&s) = bounds.get(j) else { continue };
            let (l, r) = (left(s), right(s));
            let cand = (l.max(r), l + r, s);
            if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                best = Some(cand);
            }
        }
        best
    }

    fn node(&mut self, at: usize, mut list: Vec<u32>, region: [(A, A); 5], depth: usize) {
        self.max_depth = self.max_depth.max(depth);
        self.truncate(&mut list, &region);
        if list.len() <= BINTH || depth >= MAX_DEPTH {
            return self.make_leaf(at, list);
        }
        // The field of the best binary split (HyperSplit)...
        let mut best: Option<(usize, usize, usize, A)> = None;
        for f in 0..5 {
            if let Some((l, sum, s)) = self.split_on(&list, &region, f) {
                if best.is_none_or(|b| (l, sum) < (b.0, b.1)) {
                    best = Some((l, sum, f, s));
                }
            }
        }
        let Some((larger, _, f, _)) = best else {
            return self.make_leaf(at, list);
        };
        if larger >= list.len() {
            return self.make_leaf(at, list);
        }
        // ...then up to three rounds of binary splits on that field, merged into one node of up
        // to FANOUT children, so that a lookup reads one node per three binary levels.
        let mut parts: Vec<((A, A), Vec<u32>)> = vec![(region[f], list)];
        while parts.len() < FANOUT {
            let mut next = Vec::with_capacity(parts.len() * 2);
            let mut changed = false;
            for (i, (range, l)) in parts.iter().enumerate() {
                let room = FANOUT - (next.len() + parts.len() - i);
                let mut sub = region;
                sub[f] = *range;
                let split = if room > 0 && l.len() > BINTH {
                    self.split_on(l, &sub, f)
                        .filter(|&(larger, _, _)| larger < l.len())
                } else {
                    None
                };
                match split {
                    Some((_, _, s)) => {
                        let (lo, hi) = *range;
                        let side = |a: A, b: A| {
                            let mut v: Vec<u32> = l
                                .iter()
                                .copied()
                                .filter(|&r| meets(&self.rules[r as usize].f[f], a, b))
                                .collect();
                            let mut reg = region;
                            reg[f] = (a, b);
                            self.truncate(&mut v, &reg);
                            ((a, b), v)
                        };
                        next.push(side(lo, s.pred()));
                        next.push(side(s, hi));
                        changed = true;
                    }
                    None => next.push((*range, l.clone())),
                }
            }
            parts = next;
            if !changed {
                break;
            }
        }
        let child = self.nodes.len();
        self.nodes.resize(child + parts.len(), Node::default());
        let mut thresh = [A::MAX; FANOUT - 1];
        for (t, (range, _)) in thresh.iter_mut().zip(parts.iter().skip(1)) {
            *t = range.0;
        }
        self.nodes[at] = Node {
            thresh,
            a: child as u32,
            b: parts.len() as u32,
            blk: 0,
            nblk: 0,
            field: f as u8,
        };
        for (i, (range, l)) in parts.into_iter().enumerate() {
            let mut reg = region;
            reg[f] = range;
            self.node(child + i, l, reg, depth + 1);
        }
    }
}

/// The forests of one address family.
#[derive(Clone, Debug)]
struct Family<A: Key> {
    /// All rules, ports as given (TCP/UDP packets, or every packet without the NSG-2.2 option).
    normal: Forest<A>,
    /// Rules that can match a non-TCP/UDP packet, ports widened (NSG-2.2 option only).
    other: Forest<A>,
}

impl<A: Key> Family<A> {
    fn build(
        rules: &[ClassifierRule],
        opts: ClassifierOptions,
        addr: impl Fn(&IpNet) -> Option<(A, A)> + Copy,
    ) -> Self {
        if opts.ports_only_for_tcp_udp {
            Family {
                normal: Forest::build(
                    rules,
                    addr,
                    |r| matches!(r.protocol, None | Some(TCP) | Some(UDP)),
                    false,
                ),
                other: Forest::build(
                    rules,
                    addr,
                    |r| !matches!(r.protocol, Some(TCP) | Some(UDP)),
                    true,
                ),
            }
        } else {
            Family {
                normal: Forest::build(rules, addr, |_| true, false),
                other: Forest::empty(),
            }
        }
    }

    #[inline]
    fn forest(&self, proto: u8, opts: ClassifierOptions) -> &Forest<A> {
        if opts.ports_only_for_tcp_udp && proto != TCP && proto != UDP {
            &self.other
        } else {
            &self.normal
        }
    }
}

/// Compiled classifier (see the module docs). Rule index = priority: index 0 wins.
#[derive(Clone, Debug)]
pub struct Classifier {
    opts: ClassifierOptions,
    v4: Family<u32>,
    v6: Family<u128>,
    /// The rules as given, for packets whose two addresses are of different families.
    rules: Vec<ClassifierRule>,
}

/// Shape figures of a built classifier, for benchmarks and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifierStats {
    /// Trees over all families and port modes.
    pub trees: usize,
    /// Tree nodes (inner and leaves).
    pub nodes: usize,
    /// Rule references stored in leaves (after sharing identical leaves).
    pub leaf_entries: usize,
    /// Deepest leaf.
    pub max_depth: usize,
}

fn v4_interval(n: &IpNet) -> Option<(u32, u32)> {
    match n {
        IpNet::V4(n) => Some((u32::from(n.network()), u32::from(n.broadcast()))),
        IpNet::V6(_) => None,
    }
}

fn v6_interval(n: &IpNet) -> Option<(u128, u128)> {
    match n {
        IpNet::V6(n) => Some((u128::from(n.network()), u128::from(n.broadcast()))),
        IpNet::V4(_) => None,
    }
}

impl Classifier {
    /// Compiles `rules`; the index of a rule in `rules` is its id and its priority (0 wins).
    pub fn build(rules: Vec<ClassifierRule>, opts: ClassifierOptions) -> Classifier {
        let v4 = Family::build(&rules, opts, v4_interval);
        let v6 = Family::build(&rules, opts, v6_interval);
        Classifier {
            opts,
            v4,
            v6,
            rules,
        }
    }

    /// The index of the first (highest-priority) rule matching `k`. Does not allocate.
    #[inline]
    pub fn first_match(&self, k: &PacketKey) -> Option<u32> {
        match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.v4.forest(k.protocol, self.opts).first(&Pkt {
                s: u32::from(s),
                d: u32::from(d),
                sp: k.src_port,
                dp: k.dst_port,
                p: k.protocol,
            }),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.v6.forest(k.protocol, self.opts).first(&Pkt {
                s: u128::from(s),
                d: u128::from(d),
                sp: k.src_port,
                dp: k.dst_port,
                p: k.protocol,
            }),
            _ => self
                .rules
                .iter()
                .position(|r| r.matches(k, self.opts))
                .map(|i| i as u32),
        }
    }

    /// The first rule after `after` matching `k`, by a check of each later rule. Does not
    /// allocate; for passes where the first match may have to be skipped (audit mode).
    pub fn next_match_after(&self, k: &PacketKey, after: u32) -> Option<u32> {
        let from = after as usize + 1;
        self.rules
            .get(from..)?
            .iter()
            .position(|r| r.matches(k, self.opts))
            .map(|i| (from + i) as u32)
    }

    /// Every rule matching `k`, ascending (priority order). `out` is cleared first. Costs one
    /// check per rule of the packet's family.
    pub fn all_matches(&self, k: &PacketKey, out: &mut Vec<u32>) {
        out.clear();
        match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.v4.forest(k.protocol, self.opts).all(
                &Pkt {
                    s: u32::from(s),
                    d: u32::from(d),
                    sp: k.src_port,
                    dp: k.dst_port,
                    p: k.protocol,
                },
                out,
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.v6.forest(k.protocol, self.opts).all(
                &Pkt {
                    s: u128::from(s),
                    d: u128::from(d),
                    sp: k.src_port,
                    dp: k.dst_port,
                    p: k.protocol,
                },
                out,
            ),
            _ => out.extend(
                self.rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.matches(k, self.opts))
                    .map(|(i, _)| i as u32),
            ),
        }
    }

    /// Number of rules the classifier was built from.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the classifier was built from no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The options it was built with.
    pub fn options(&self) -> ClassifierOptions {
        self.opts
    }

    /// Bytes used by the compiled forests and by the copy of the rules kept for mixed-family
    /// packets.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let rules: usize = self
            .rules
            .iter()
            .map(|r| {
                size_of::<ClassifierRule>()
                    + (r.src.capacity() + r.dst.capacity()) * size_of::<IpNet>()
                    + (r.src_ports.capacity() + r.dst_ports.capacity()) * 4
            })
            .sum();
        self.v4.normal.memory_bytes()
            + self.v4.other.memory_bytes()
            + self.v6.normal.memory_bytes()
            + self.v6.other.memory_bytes()
            + rules
    }

    /// Shape figures of the trees.
    pub fn stats(&self) -> ClassifierStats {
        let mut s = ClassifierStats::default();
        let mut add = |trees: &[Tree]| {
            for t in trees {
                s.trees += 1;
                s.nodes += t.nodes as usize;
                s.leaf_entries += t.leaf_rules as usize;
                s.max_depth = s.max_depth.max(t.depth as usize);
            }
        };
        add(&self.v4.normal.trees);
        add(&self.v4.other.trees);
        add(&self.v6.normal.trees);
        add(&self.v6.other.trees);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn key(src: &str, dst: &str, protocol: u8, sp: u16, dp: u16) -> PacketKey {
        PacketKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            src_port: sp,
            dst_port: dp,
        }
    }

    fn any_rule() -> ClassifierRule {
        ClassifierRule {
            protocol: None,
            src: vec![net("0.0.0.0/0"), net("::/0")],
            dst: vec![net("0.0.0.0/0"), net("::/0")],
            src_ports: vec![(0, 65535)],
            dst_ports: vec![(0, 65535)],
        }
    }

    #[test]
    fn classifier_priority_and_sets() {
        let rules = vec![
            ClassifierRule {
                protocol: Some(6),
                src: vec![
                    net("10.0.0.0/8"),
                    net("192.168.1.0/24"),
                    net("2001:db8::/32"),
                ],
                dst: vec![net("0.0.0.0/0"), net("::/0")],
                src_ports: vec![(0, 65535)],
                dst_ports: vec![(80, 80), (443, 443), (8000, 8999)],
            },
            ClassifierRule {
                protocol: Some(17),
                dst_ports: vec![(53, 53)],
                ..any_rule()
            },
            any_rule(),
        ];
        let c = Classifier::build(rules, ClassifierOptions::default());
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.first_match(&key("10.1.2.3", "8.8.8.8", 6, 1000, 443)),
            Some(0)
        );
        assert_eq!(
            c.first_match(&key("192.168.1.9", "8.8.8.8", 6, 1000, 8500)),
            Some(0)
        );
        assert_eq!(
            c.first_match(&key("192.168.2.9", "8.8.8.8", 6, 1000, 443)),
            Some(2)
        );
        assert_eq!(
            c.first_match(&key("2001:db8::5", "2001::1", 6, 1, 80)),
            Some(0)
        );
        assert_eq!(
            c.first_match(&key("2001:db9::5", "2001::1", 17, 1, 53)),
            Some(1)
        );
        let mut out = Vec::new();
        c.all_matches(&key("10.1.2.3", "8.8.8.8", 6, 1000, 443), &mut out);
        assert_eq!(out, vec![0, 2]);
    }

    #[test]
    fn nsg_2_2_ports_ignored_for_other_protocols() {
        let rules = vec![ClassifierRule {
            dst_ports: vec![(22, 22)],
            ..any_rule()
        }];
        let on = Classifier::build(rules.clone(), ClassifierOptions::default());
        let off = Classifier::build(
            rules,
            ClassifierOptions {
                ports_only_for_tcp_udp: false,
            },
        );
        let icmp = key("10.0.0.1", "10.0.0.2", 1, 0, 0);
        assert_eq!(on.first_match(&icmp), Some(0));
        assert_eq!(off.first_match(&icmp), None);
        let tcp = key("10.0.0.1", "10.0.0.2", 6, 0, 0);
        assert_eq!(on.first_match(&tcp), None);
        assert_eq!(
            on.first_match(&key("10.0.0.1", "10.0.0.2", 6, 0, 22)),
            Some(0)
        );
    }

    #[test]
    fn classifier_empty_sets_never_match_and_families_do_not_cross() {
        let rules = vec![
            ClassifierRule {
                src: vec![],
                ..any_rule()
            },
            ClassifierRule {
                dst_ports: vec![(10, 5)],
                ..any_rule()
            },
            ClassifierRule {
                src: vec![net("::/0")],
                dst: vec![net("::/0")],
                ..any_rule()
            },
        ];
        let c = Classifier::build(rules, ClassifierOptions::default());
        assert_eq!(c.first_match(&key("10.0.0.1", "10.0.0.2", 1, 0, 0)), None);
        assert_eq!(
            c.first_match(&key("::ffff:10.0.0.1", "::1", 1, 0, 0)),
            Some(2)
        );
        // Mixed-family packets fall back to the rule-by-rule check.
        let c = Classifier::build(vec![any_rule()], ClassifierOptions::default());
        assert_eq!(c.first_match(&key("10.0.0.1", "::1", 6, 1, 1)), Some(0));
        let empty = Classifier::build(vec![], ClassifierOptions::default());
        assert!(empty.is_empty());
        assert_eq!(
            empty.first_match(&key("10.0.0.1", "10.0.0.1", 6, 1, 1)),
            None
        );
    }

    #[test]
    fn classifier_port_edges() {
        let rules = vec![
            ClassifierRule {
                protocol: Some(6),
                src_ports: vec![(0, 0)],
                dst_ports: vec![(65535, 65535)],
                ..any_rule()
            },
            ClassifierRule {
                protocol: Some(6),
                ..any_rule()
            },
        ];
        let c = Classifier::build(rules, ClassifierOptions::default());
        assert_eq!(
            c.first_match(&key("1.1.1.1", "2.2.2.2", 6, 0, 65535)),
            Some(0)
        );
        assert_eq!(
            c.first_match(&key("1.1.1.1", "2.2.2.2", 6, 1, 65535)),
            Some(1)
        );
        assert_eq!(
            c.first_match(&key("1.1.1.1", "2.2.2.2", 6, 0, 65534)),
            Some(1)
        );
        assert_eq!(
            c.first_match(&key("1.1.1.1", "2.2.2.2", 17, 0, 65535)),
            None
        );
    }
}
