//! Longest-prefix match over IPv4 and IPv6 prefixes in one structure: a **Poptrie**.
//!
//! # Algorithm and why
//!
//! Poptrie (Asai and Ohara, SIGCOMM 2015) is a multibit trie with 6-bit strides whose nodes are
//! compressed with two 64-bit bitmaps and `popcnt`:
//!
//! * `vector` has bit *j* set when child slot *j* is an internal node; the children of a node are
//!   stored contiguously, so the child is at `base1 + popcnt(vector & below(j))`.
//! * `leafvec` has bit *j* set where a run of equal leaves starts (internal slots are skipped), so
//!   the leaf is at `base0 + popcnt(leafvec & upto(j)) - 1`. Runs of equal leaves — the common
//!   case, since a short prefix covers many slots — are stored once ("leaf compression").
//! * The first `s` bits are resolved by one "direct pointing" array of `2^s` words (`s = 18` for
//!   IPv4, `16` for IPv6; 12 and 8 for tables of fewer than 1,024 prefixes of the family), each
//!   either a leaf or the index of a node.
//!
//! A lookup is therefore one direct-array read plus one 24-byte node read per further 6 bits, each
//! with one `popcnt`, and no branches that depend on the data beyond "internal or leaf". A typical
//! IPv4 /24 route is found with three dependent memory reads (direct, node, leaf).
//!
//! Alternatives considered: DIR-24-8 needs 2^24 direct entries (32 MiB with 16-bit next hops, 64 MiB
//! with the 32-bit entry indices needed for a full table) — over the 8 MiB aim; a DIR-16-8-8 with
//! uncompressed 256-entry chunks needs one 1 KiB chunk per populated /16 and /24 and grows past
//! 50 MiB on a BGP table; tree bitmaps (the `prefix-trie` crate) compress as well but need a walk
//! over several nodes and a prefix-bitmap scan per node. Poptrie keeps the compression of the
//! tree bitmap with the lookup shape of DIR-24-8.
//!
//! Leaves are 32-bit entry indices (a full table has more than 2^16 prefixes, so the 16-bit leaves of
//! the paper do not fit); the matched prefix is rebuilt from the address and a one-byte prefix
//! length, so no per-entry `IpNet` is stored.
//!
//! The three arrays of each trie are [`Frozen`](super::mem): copied after the build into fresh,
//! 2 MiB-aligned memory advised for transparent huge pages, which removes most TLB misses of
//! random lookups (the arrays are rounded up to whole 2 MiB pages, which `memory_bytes` counts).
//!
//! [`Lpm::lookup_batch`] answers many addresses at once: up to 16 lookups advance level by level
//! together with software prefetch, so their cache misses overlap (memory-level parallelism)
//! instead of following one another as in a loop of [`Lpm::lookup`] calls, whose every step
//! depends on the previous load.
//!
//! IPv4 and IPv6 live in two separate tries behind one type, so an IPv4 address never matches an
//! IPv6 prefix (not even `::/0` or an IPv4-mapped prefix) and vice versa.
//!
//! # Updates
//!
//! The structure is immutable once built (it is shared across threads). Adding or removing one
//! prefix touches one direct-array range and at most one node per level below it; in Poptrie a
//! single-prefix update rebuilds only the subtree under the direct entry (one /18 for IPv4, at most
//! 64^k slots) and swaps it in. This implementation does not expose incremental update: a full
//! rebuild of a 1M-prefix table takes well under a second (see `docs/benchmarks.md`).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::key::Key;
use super::mem::Frozen;

/// Flag of a direct-array word that holds a leaf rather than a node index.
const LEAF_FLAG: u32 = 1 << 31;

/// One compressed trie node (24 bytes).
#[derive(Clone, Copy, Default, Debug)]
struct Node {
    /// Bit *j*: child slot *j* is an internal node.
    vector: u64,
    /// Bit *j*: a run of equal leaves starts at slot *j* (internal slots skipped).
    leafvec: u64,
    /// Index of this node's first leaf in `leaves`.
    base0: u32,
    /// Index of this node's first child in `nodes`.
    base1: u32,
}

/// A Poptrie over one address family. Leaf value 0 = no route, otherwise entry index + 1.
/// The three arrays are [`Frozen`]: on huge pages when large (see [`super::mem`]).
#[derive(Clone, Debug)]
struct Poptrie<K: Key> {
    direct_bits: u32,
    /// Node levels below the direct array (longest path).
    levels: u32,
    direct: Frozen<u32>,
    nodes: Frozen<Node>,
    leaves: Frozen<u32>,
    _key: std::marker::PhantomData<K>,
}

/// A Poptrie under construction.
struct PopBuild<K: Key> {
    direct_bits: u32,
    levels: u32,
    direct: Vec<u32>,
    nodes: Vec<Node>,
    leaves: Vec<u32>,
    _key: std::marker::PhantomData<K>,
}

/// Lanes of a batched lookup in flight at once.
const BATCH: usize = 16;

/// Below this many prefixes of a family, the direct array resolves 12 (IPv4) or 8 (IPv6) bits
/// instead of 18 or 16: one or two more node reads per lookup, 64–256× less memory.
const SMALL_TABLE: usize = 1024;

/// Hints the CPU to start loading the cache line of `r` (no effect on results).
#[inline(always)]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and has no architectural effect; SSE is baseline on x86-64.
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// A prefix to insert: network address, length, leaf value (entry index + 1).
type Item<K> = (K, u8, u32);

impl<K: Key> Poptrie<K> {
    /// Builds from items sorted by (address, length) without duplicates.
    fn build(items: &[Item<K>], direct_bits: u32) -> Self {
        let b = PopBuild::build(items, direct_bits);
        Poptrie {
            direct_bits: b.direct_bits,
            levels: b.levels,
            direct: Frozen::new(&b.direct),
            nodes: Frozen::new(&b.nodes),
            leaves: Frozen::new(&b.leaves),
            _key: std::marker::PhantomData,
        }
    }
}

impl<K: Key> PopBuild<K> {
    /// Builds from items sorted by (address, length) without duplicates.
    fn build(items: &[Item<K>], direct_bits: u32) -> Self {
        // Node 0 and leaf 0 are unused, so that no real node has index 0.
        let mut t = PopBuild {
            direct_bits,
            levels: 0,
            direct: vec![LEAF_FLAG; 1usize << direct_bits],
            nodes: vec![Node {
                vector: 0,
                leafvec: 1,
                base0: 0,
                base1: 0,
            }],
            leaves: vec![0],
            _key: std::marker::PhantomData,
        };
        let s = direct_bits as u8;
        // Paint prefixes no longer than the direct stride, shorter first within a block: sorted by
        // (address, length), a prefix always comes before the prefixes nested in it.
        for &(addr, len, val) in items.iter().filter(|it| it.1 <= s) {
            let first = if len == 0 {
                0
            } else {
                addr.top_bits(direct_bits)
            };
            let count = 1usize << (s - len);
            for w in &mut t.direct[first..first + count] {
                *w = LEAF_FLAG | val;
            }
        }
        // Longer prefixes, grouped by their top `s` bits (contiguous in sorted order).
        let long: Vec<Item<K>> = items.iter().copied().filter(|it| it.1 > s).collect();
        let mut i = 0;
        while i < long.len() {
            let slot = long[i].0.top_bits(direct_bits);
            let mut j = i + 1;
            while j < long.len() && long[j].0.top_bits(direct_bits) == slot {
                j += 1;
            }
            let default = t.direct[slot] & !LEAF_FLAG;
            let at = t.nodes.len();
            t.nodes.push(Node::default());
            let levels = t.fill(at, &long[i..j], direct_bits, default);
            t.levels = t.levels.max(levels);
            t.direct[slot] = at as u32;
            i = j;
        }
        t
    }

    /// Fills node `at` covering the block at bit `offset`; `group` holds the prefixes longer than
    /// `offset` inside the block, sorted; `default` is the leaf inherited from above.
    /// Returns the number of node levels of the subtree.
    fn fill(&mut self, at: usize, group: &[Item<K>], offset: u32, default: u32) -> u32 {
        let end = offset + 6;
        let mut slots = [default; 64];
        for &(addr, len, val) in group.iter().filter(|it| u32::from(it.1) <= end) {
            let first = addr.six_bits(offset);
            let count = 1usize << (end - u32::from(len));
            for s in &mut slots[first..first + count] {
                *s = val;
            }
        }
        // Children: prefixes longer than `end`, contiguous per slot.
        let mut children: Vec<(usize, usize, usize)> = Vec::new();
        let mut i = 0;
        while i < group.len() {
            let slot = group[i].0.six_bits(offset);
            let mut j = i;
            while j < group.len() && group[j].0.six_bits(offset) == slot {
                j += 1;
            }
            let first_long = group[i..j]
                .iter()
                .position(|it| u32::from(it.1) > end)
                .map(|p| i + p);
            if let Some(k) = first_long {
                children.push((slot, k, j));
            }
            i = j;
        }
        let mut vector = 0u64;
        for &(slot, _, _) in &children {
            vector |= 1u64 << slot;
        }
        let base0 = self.leaves.len() as u32;
        let mut leafvec = 0u64;
        let mut prev: Option<u32> = None;
        for (j, &v) in slots.iter().enumerate() {
            if vector & (1u64 << j) != 0 {
                continue;
            }
            if prev != Some(v) {
                leafvec |= 1u64 << j;
                self.leaves.push(v);
                prev = Some(v);
            }
        }
        let base1 = self.nodes.len() as u32;
        self.nodes
            .resize(self.nodes.len() + children.len(), Node::default());
        self.nodes[at] = Node {
            vector,
            leafvec,
            base0,
            base1,
        };
        let mut levels = 0;
        for (rank, &(slot, a, b)) in children.iter().enumerate() {
            levels = levels.max(self.fill(base1 as usize + rank, &group[a..b], end, slots[slot]));
        }
        levels + 1
    }
}

impl<K: Key> Poptrie<K> {
    /// The leaf value for `addr` (0 = no route).
    #[inline]
    fn lookup(&self, addr: K) -> u32 {
        let d = self.direct[addr.top_bits(self.direct_bits)];
        if d & LEAF_FLAG != 0 {
            return d & !LEAF_FLAG;
        }
        let mut node = self.nodes[d as usize];
        let mut offset = self.direct_bits;
        loop {
            let bit = 1u64 << addr.six_bits(offset);
            if node.vector & bit != 0 {
                let rank = (node.vector & (bit - 1)).count_ones();
                node = self.nodes[(node.base1 + rank) as usize];
                offset += 6;
            } else {
                let rank = (node.leafvec & (bit | (bit - 1))).count_ones();
                return self.leaves[(node.base0 + rank).saturating_sub(1) as usize];
            }
        }
    }

    /// Leaf values of `addrs` into `out` (same length): the lookups of up to [`BATCH`] addresses
    /// advance level by level together, each load prefetched one step ahead, so that their cache
    /// misses overlap instead of following one another.
    #[inline]
    fn lookup_batch(&self, addrs: &[K], out: &mut [u32]) {
        for (a, o) in addrs.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            let n = a.len().min(o.len());
            let mut idx = [0usize; BATCH];
            for i in 0..n {
                idx[i] = a[i].top_bits(self.direct_bits);
                if let Some(d) = self.direct.get(idx[i]) {
                    prefetch(d);
                }
            }
            // Bit i of `inner`: lane i is at node `idx[i]`; of `leaf`: at leaf `idx[i]`.
            let mut inner = 0u32;
            let mut leaf = 0u32;
            for i in 0..n {
                let d = self.direct[idx[i]];
                if d & LEAF_FLAG != 0 {
                    o[i] = d & !LEAF_FLAG;
                } else {
                    idx[i] = d as usize;
                    inner |= 1 << i;
                    if let Some(node) = self.nodes.get(idx[i]) {
                        prefetch(node);
                    }
                }
            }
            let mut offset = self.direct_bits;
            while inner != 0 {
                let mut m = inner;
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let node = self.nodes[idx[i]];
                    let bit = 1u64 << a[i].six_bits(offset);
                    if node.vector & bit != 0 {
                        let rank = (node.vector & (bit - 1)).count_ones();
                        idx[i] = (node.base1 + rank) as usize;
                        if let Some(next) = self.nodes.get(idx[i]) {
                            prefetch(next);
                        }
                    } else {
                        let rank = (node.leafvec & (bit | (bit - 1))).count_ones();
                        idx[i] = (node.base0 + rank).saturating_sub(1) as usize;
                        inner &= !(1 << i);
                        leaf |= 1 << i;
                        if let Some(l) = self.leaves.get(idx[i]) {
                            prefetch(l);
                        }
                    }
                }
                offset += 6;
            }
            while leaf != 0 {
                let i = leaf.trailing_zeros() as usize;
                leaf &= leaf - 1;
                o[i] = self.leaves[idx[i]];
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.direct.bytes() + self.nodes.bytes() + self.leaves.bytes()
    }
}

/// Figures of one address family inside an [`Lpm`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LpmFamilyStats {
    /// Distinct prefixes stored.
    pub prefixes: usize,
    /// Bytes of the trie (direct array, nodes, leaves), without the values.
    pub index_bytes: usize,
    /// Trie nodes.
    pub nodes: usize,
    /// Compressed leaves.
    pub leaves: usize,
    /// Node levels below the direct array on the longest path.
    pub levels: u32,
}

/// Longest-prefix-match table over IPv4 and IPv6 prefixes (see the module docs).
#[derive(Clone, Debug)]
pub struct Lpm<V> {
    v4: Poptrie<u32>,
    v6: Poptrie<u128>,
    /// Entry `i`: its prefix length (the prefix itself is rebuilt from the looked-up address).
    lens: Vec<u8>,
    values: Vec<V>,
    n_v4: usize,
}

impl<V: Clone> Lpm<V> {
    /// Builds the table. Host bits of a prefix are ignored (`10.0.0.1/8` is `10.0.0.0/8`); when a
    /// prefix occurs more than once the first entry wins.
    pub fn build(entries: Vec<(IpNet, V)>) -> Lpm<V> {
        // (family, address, len, input position, value)
        let mut v4: Vec<(u32, u8, usize)> = Vec::new();
        let mut v6: Vec<(u128, u8, usize)> = Vec::new();
        let mut vals: Vec<Option<V>> = Vec::with_capacity(entries.len());
        for (i, (net, v)) in entries.into_iter().enumerate() {
            match net.trunc() {
                IpNet::V4(n) => v4.push((u32::from(n.network()), n.prefix_len(), i)),
                IpNet::V6(n) => v6.push((u128::from(n.network()), n.prefix_len(), i)),
            }
            vals.push(Some(v));
        }
        v4.sort_unstable();
        v4.dedup_by_key(|e| (e.0, e.1));
        v6.sort_unstable();
        v6.dedup_by_key(|e| (e.0, e.1));
        let mut lens = Vec::with_capacity(v4.len() + v6.len());
        let mut values = Vec::with_capacity(v4.len() + v6.len());
        let mut items4: Vec<Item<u32>> = Vec::with_capacity(v4.len());
        for &(a, l, i) in &v4 {
            items4.push((a, l, lens.len() as u32 + 1));
            lens.push(l);
            values.push(vals[i].take());
        }
        let mut items6: Vec<Item<u128>> = Vec::with_capacity(v6.len());
        for &(a, l, i) in &v6 {
            items6.push((a, l, lens.len() as u32 + 1));
            lens.push(l);
            values.push(vals[i].take());
        }
        let mut values: Vec<V> = values.into_iter().flatten().collect();
        values.shrink_to_fit();
        // A small table (a subnet's effective routes: a few hundred prefixes) gets a small direct
        // array: 2^18 words each would be 1.25 MiB per subnet, most of a landing zone's snapshot.
        let small = |n: usize| n < SMALL_TABLE;
        Lpm {
            v4: Poptrie::build(&items4, if small(items4.len()) { 12 } else { 18 }),
            v6: Poptrie::build(&items6, if small(items6.len()) { 8 } else { 16 }),
            lens,
            values,
            n_v4: v4.len(),
        }
    }

    /// The longest stored prefix containing `addr`, and its value.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<(IpNet, &V)> {
        let leaf = match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        };
        self.entry(addr, leaf)
    }

    /// [`Lpm::lookup`] of every address of `addrs`, into `out[i]` for `addrs[i]` (`out` must be
    /// at least as long; extra slots are left alone). Up to 16 lookups are in flight at once,
    /// advancing level by level with software prefetch, so their cache misses overlap: on tables
    /// larger than the cache this is several times the throughput of one-by-one lookups. The
    /// answers are exactly those of [`Lpm::lookup`]. Does not allocate.
    pub fn lookup_batch<'a>(&'a self, addrs: &[IpAddr], out: &mut [Option<(IpNet, &'a V)>]) {
        for (a, o) in addrs.chunks(BATCH).zip(out.chunks_mut(BATCH)) {
            let mut k4 = [0u32; BATCH];
            let mut k6 = [0u128; BATCH];
            let mut pos4 = [0u8; BATCH];
            let mut pos6 = [0u8; BATCH];
            let (mut n4, mut n6) = (0, 0);
            for (i, addr) in a.iter().enumerate() {
                match addr {
                    IpAddr::V4(x) => {
                        k4[n4] = u32::from(*x);
                        pos4[n4] = i as u8;
                        n4 += 1;
                    }
                    IpAddr::V6(x) => {
                        k6[n6] = u128::from(*x);
                        pos6[n6] = i as u8;
                        n6 += 1;
                    }
                }
            }
            let mut leaf = [0u32; BATCH];
            let mut leaf6 = [0u32; BATCH];
            self.v4.lookup_batch(&k4[..n4], &mut leaf[..n4]);
            self.v6.lookup_batch(&k6[..n6], &mut leaf6[..n6]);
            leaf[n4..n4 + n6].copy_from_slice(&leaf6[..n6]);
            let n = n4 + n6;
            for &l in &leaf[..n] {
                if let Some(v) = self.values.get((l as usize).wrapping_sub(1)) {
                    prefetch(v);
                }
            }
            for (j, &l) in leaf[..n].iter().enumerate() {
                let i = if j < n4 { pos4[j] } else { pos6[j - n4] } as usize;
                if let Some(slot) = o.get_mut(i) {
                    *slot = self.entry(a[i], l);
                }
            }
        }
    }

    /// The answer for `addr` whose trie leaf is `leaf`.
    #[inline]
    fn entry(&self, addr: IpAddr, leaf: u32) -> Option<(IpNet, &V)> {
        let idx = leaf.checked_sub(1)? as usize;
        let len = *self.lens.get(idx)?;
        let net = match addr {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, len).ok()?.trunc()),
            IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, len).ok()?.trunc()),
        };
        Some((net, self.values.get(idx)?))
    }

    /// Bytes used: both tries plus the per-entry prefix lengths and values (the values' own heap
    /// data, if any, is not counted).
    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes()
            + self.v6.memory_bytes()
            + self.lens.capacity()
            + self.values.capacity() * std::mem::size_of::<V>()
    }

    /// Number of distinct prefixes stored.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether no prefix is stored.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Per-family figures: `[IPv4, IPv6]`.
    pub fn family_stats(&self) -> [LpmFamilyStats; 2] {
        [
            LpmFamilyStats {
                prefixes: self.n_v4,
                index_bytes: self.v4.memory_bytes(),
                nodes: self.v4.nodes.len(),
                leaves: self.v4.leaves.len(),
                levels: self.v4.levels,
            },
            LpmFamilyStats {
                prefixes: self.lens.len() - self.n_v4,
                index_bytes: self.v6.memory_bytes(),
                nodes: self.v6.nodes.len(),
                leaves: self.v6.leaves.len(),
                levels: self.v6.levels,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn lpm_basic_longest_wins() {
        let t = Lpm::build(vec![
            (net("0.0.0.0/0"), 0),
            (net("10.0.0.0/8"), 1),
            (net("10.1.0.0/16"), 2),
            (net("10.1.2.0/24"), 3),
            (net("10.1.2.3/32"), 4),
            (net("::/0"), 5),
            (net("2001:db8::/32"), 6),
        ]);
        let l = |a: &str| {
            t.lookup(a.parse().unwrap())
                .map(|(n, v)| (n.to_string(), *v))
        };
        assert_eq!(l("10.1.2.3"), Some(("10.1.2.3/32".into(), 4)));
        assert_eq!(l("10.1.2.4"), Some(("10.1.2.0/24".into(), 3)));
        assert_eq!(l("10.1.3.4"), Some(("10.1.0.0/16".into(), 2)));
        assert_eq!(l("10.2.3.4"), Some(("10.0.0.0/8".into(), 1)));
        assert_eq!(l("11.2.3.4"), Some(("0.0.0.0/0".into(), 0)));
        assert_eq!(l("2001:db8::1"), Some(("2001:db8::/32".into(), 6)));
        assert_eq!(l("2001:db9::1"), Some(("::/0".into(), 5)));
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn lpm_never_crosses_families() {
        let t = Lpm::build(vec![(net("::/0"), 1), (net("::ffff:0:0/96"), 2)]);
        assert_eq!(t.lookup("10.0.0.1".parse().unwrap()), None);
        let t = Lpm::build(vec![(net("0.0.0.0/0"), 1)]);
        assert_eq!(t.lookup("::ffff:10.0.0.1".parse().unwrap()), None);
        assert_eq!(t.lookup("::".parse().unwrap()), None);
    }

    #[test]
    fn lpm_duplicate_first_wins_and_host_bits_ignored() {
        let t = Lpm::build(vec![
            (net("10.0.0.1/8"), "a"),
            (net("10.0.0.0/8"), "b"),
            (net("2001:db8::1/128"), "c"),
            (net("2001:db8::1/128"), "d"),
        ]);
        assert_eq!(t.len(), 2);
        let (n, v) = t.lookup("10.9.9.9".parse().unwrap()).unwrap();
        assert_eq!((n.to_string().as_str(), *v), ("10.0.0.0/8", "a"));
        let (_, v) = t.lookup("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(*v, "c");
    }

    #[test]
    fn lpm_batch_equals_single() {
        let mut entries = vec![(net("0.0.0.0/1"), 0u32), (net("2001:db8::/32"), 1)];
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..3000u32 {
            let r = next();
            let n = if i % 3 == 0 {
                IpNet::V6(Ipv6Net::new((u128::from(r) << 64).into(), (r % 129) as u8).unwrap())
            } else {
                IpNet::V4(Ipv4Net::new((r as u32).into(), ((r >> 32) % 33) as u8).unwrap())
            };
            entries.push((n, i + 2));
        }
        let addrs: Vec<IpAddr> = entries
            .iter()
            .map(|(n, _)| n.network())
            .chain((0..5000).map(|i| {
                let r = next();
                if i % 2 == 0 {
                    IpAddr::V4((r as u32).into())
                } else {
                    IpAddr::V6((u128::from(r) << 64 | u128::from(next())).into())
                }
            }))
            .collect();
        let t = Lpm::build(entries);
        let mut out = vec![None; addrs.len()];
        t.lookup_batch(&addrs, &mut out);
        for (a, o) in addrs.iter().zip(&out) {
            assert_eq!(*o, t.lookup(*a), "{a}");
        }
        let mut short = vec![None; 5];
        t.lookup_batch(&addrs, &mut short);
        assert_eq!(short[4], t.lookup(addrs[4]));
    }

    #[test]
    fn lpm_empty_and_edges() {
        let t: Lpm<u8> = Lpm::build(vec![]);
        assert!(t.is_empty());
        assert_eq!(t.lookup("1.2.3.4".parse().unwrap()), None);
        let t = Lpm::build(vec![
            (net("255.255.255.255/32"), 1),
            (net("0.0.0.0/32"), 2),
            (net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 3),
            (net("::/128"), 4),
        ]);
        let v = |a: &str| t.lookup(a.parse().unwrap()).map(|(_, v)| *v);
        assert_eq!(v("255.255.255.255"), Some(1));
        assert_eq!(v("255.255.255.254"), None);
        assert_eq!(v("0.0.0.0"), Some(2));
        assert_eq!(v("0.0.0.1"), None);
        assert_eq!(v("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Some(3));
        assert_eq!(v("::"), Some(4));
        assert_eq!(v("::1"), None);
    }
}
