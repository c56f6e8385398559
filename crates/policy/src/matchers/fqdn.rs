//! FQDN patterns (FW-6.3) and a matcher that finds the highest-priority pattern for a host name.
//!
//! # Grammar (FW-6.3)
//!
//! | pattern | kind | matches |
//! |---|---|---|
//! | `www.example.com` | [`FqdnPattern::Exact`] | that name only |
//! | `*.example.com` | [`FqdnPattern::SubdomainWildcard`] | names ending `.example.com`, any depth; not `example.com` |
//! | `*example.com` | [`FqdnPattern::SuffixWildcard`] | names ending `example.com` as raw text: `example.com`, `a.example.com`, `badexample.com` |
//! | `*` | [`FqdnPattern::Any`] | any (non-empty) name |
//!
//! `*` is allowed only as the leftmost character. Patterns and names are compared in one normal
//! form ([`normalize_name`]): lowercase, one trailing dot dropped, internationalised names in their
//! ASCII (punycode) form by UTS-46.
//!
//! # Algorithm and why
//!
//! Exact names and `*.` wildcards are label-anchored, so they live in one **reversed-label trie**
//! (`com` → `example` → `www`) in which every node carries the best rule id of the exact names
//! ending there and the best rule id of the `*.` wildcards whose base is that node. A name is
//! matched by walking its labels from the right: at every proper suffix the node's wildcard id
//! applies, at the full name its exact id applies, and the walk stops at the first label with no
//! node — for most names after one or two labels.
//!
//! The trie is not stored as pointer nodes with child maps but **hashed** (as in hash-based IP
//! lookup and in DNS servers' name trees): a node's key is a 64-bit hash chained over the labels of
//! its suffix, kept in one open-addressing table of `(32-bit fingerprint, node index)` words. The
//! hashes of all suffixes of a name are computed from the name alone — 8 bytes per step — so the
//! table probes of successive labels do not wait for each other and the CPU overlaps their cache
//! misses; a probe's answer is verified exactly by comparing the node's label bytes and its parent
//! node (a collision can cost a probe, never a wrong answer). Per node: 20 bytes + the interned
//! label bytes + ~10 bytes of table; per name about 40–50 bytes on real block lists, against ~470 bytes
//! per name for Unbound's zone tree.
//!
//! Raw-suffix patterns (`*example.com`) are not label-anchored. They are rare, so they go into a
//! small reversed-**character** trie walked only when such patterns exist. `*` patterns are a
//! constant. The best rule is the minimum id over the three sources; ties in priority are resolved
//! by id, lower wins.
//!
//! Lookups do not allocate ([`FqdnMatcher::best`]); the structure is immutable and `Send + Sync`.
//! Adding a name costs one table insert per new label suffix (amortised O(labels)); removing one
//! clears an id at one node — both local, but not exposed: the matcher is rebuilt from its patterns
//! (about a quarter of a second for 260k names).

use std::collections::HashMap;
use std::fmt;

/// "No rule" marker inside the tables.
const NONE: u32 = u32::MAX;
/// Parent of the top-level labels.
const ROOT: u32 = u32::MAX;
/// Empty index slot.
const EMPTY: u64 = u64::MAX;
/// Seed of the suffix hash chain.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// One FW-6.3 target FQDN pattern, already normalised.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FqdnPattern {
    /// `www.example.com`: that name only.
    Exact(String),
    /// `*.example.com` (stored without `*.`): any name strictly below the base, any depth.
    SubdomainWildcard(String),
    /// `*example.com` (stored without `*`): any name whose text ends with the suffix.
    SuffixWildcard(String),
    /// `*`: any name.
    Any,
}

impl fmt::Display for FqdnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FqdnPattern::Exact(s) => f.write_str(s),
            FqdnPattern::SubdomainWildcard(s) => write!(f, "*.{s}"),
            FqdnPattern::SuffixWildcard(s) => write!(f, "*{s}"),
            FqdnPattern::Any => f.write_str("*"),
        }
    }
}

impl FqdnPattern {
    /// Parses a target FQDN (FW-6.3): `*` only as the leftmost character; the rest is normalised
    /// like a host name ([`normalize_name`]).
    pub fn parse(s: &str) -> Result<FqdnPattern, String> {
        if s == "*" {
            return Ok(FqdnPattern::Any);
        }
        let Some(rest) = s.strip_prefix('*') else {
            if s.contains('*') {
                return Err(format!(
                    "invalid FQDN pattern `{s}`: `*` is allowed only as the leftmost character (FW-6.3)"
                ));
            }
            return normalize_name(s)
                .map(FqdnPattern::Exact)
                .ok_or_else(|| format!("invalid FQDN `{s}`: not a valid host name"));
        };
        if rest.contains('*') {
            return Err(format!(
                "invalid FQDN pattern `{s}`: `*` is allowed only as the leftmost character (FW-6.3)"
            ));
        }
        if let Some(base) = rest.strip_prefix('.') {
            return normalize_name(base)
                .map(FqdnPattern::SubdomainWildcard)
                .ok_or_else(|| {
                    format!("invalid FQDN pattern `{s}`: `{base}` is not a valid host name")
                });
        }
        normalize_suffix(rest)
            .map(FqdnPattern::SuffixWildcard)
            .ok_or_else(|| {
                format!("invalid FQDN pattern `{s}`: `{rest}` is not a valid name suffix")
            })
    }

    /// Whether the pattern matches a name already in normal form ([`normalize_name`]). This is the
    /// plain definition the [`FqdnMatcher`] is tested against.
    pub fn matches(&self, normalized_name: &str) -> bool {
        let n = normalized_name;
        match self {
            FqdnPattern::Exact(s) => n == s,
            FqdnPattern::SubdomainWildcard(b) => {
                n.len() > b.len()
                    && n.ends_with(b.as_str())
                    && n.as_bytes()[n.len() - b.len() - 1] == b'.'
            }
            FqdnPattern::SuffixWildcard(s) => n.ends_with(s.as_str()),
            FqdnPattern::Any => !n.is_empty(),
        }
    }
}

/// Normal form of a host name: one trailing dot dropped, internationalised names converted to
/// ASCII (UTS-46, punycode), lowercase. `None` if the result is not a host name: empty, longer
/// than 253 characters, an empty label or one longer than 63, or a character other than
/// `a-z 0-9 - _`.
pub fn normalize_name(name: &str) -> Option<String> {
    let ascii = to_ascii(name)?;
    let n = ascii.strip_suffix('.').unwrap_or(&ascii);
    if n.is_empty() || n.len() > 253 {
        return None;
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 || !label.bytes().all(host_byte) {
            return None;
        }
    }
    Some(n.to_string())
}

/// Normal form of the text after a leading `*` (raw suffix): like a host name, except that the
/// first label may be partial. Non-ASCII text is converted label by label, so a partial first label
/// of an internationalised name is converted on its own.
fn normalize_suffix(s: &str) -> Option<String> {
    let ascii = to_ascii(s)?;
    let n = ascii.strip_suffix('.').unwrap_or(&ascii);
    if n.is_empty() || n.len() > 253 || n.starts_with('.') {
        return None;
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 || !label.bytes().all(host_byte) {
            return None;
        }
    }
    Some(n.to_string())
}

fn host_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

fn to_ascii(s: &str) -> Option<String> {
    if s.is_ascii() {
        Some(s.to_ascii_lowercase())
    } else {
        idna::domain_to_ascii_cow(s.as_bytes(), idna::AsciiDenyList::EMPTY)
            .ok()
            .map(|c| c.into_owned())
    }
}

/// One step of the suffix hash chain: the hash of `label.parent` from the hash of `parent`.
#[inline]
fn step(h: u64, label: &[u8]) -> u64 {
    let mut h = (h.rotate_left(23) ^ (label.len() as u64)).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut chunks = label.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut w = [0u8; 8];
        w[..rem.len()].copy_from_slice(rem);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    mix(h)
}

#[inline]
fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    let x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

/// A node of the hashed label trie (20 bytes).
#[derive(Clone, Copy, Debug)]
struct LabelNode {
    parent: u32,
    /// Best id of the exact names ending here.
    exact: u32,
    /// Best id of the `*.` wildcards whose base ends here.
    sub: u32,
    /// Label bytes: `arena[label_off..label_off + label_len]`.
    label_off: u32,
    label_len: u32,
}

/// A node of the reversed-character trie of raw suffixes.
#[derive(Clone, Copy, Debug)]
struct RawNode {
    first_edge: u32,
    n_edges: u32,
    best: u32,
}

/// Matcher over many [`FqdnPattern`]s, each with a rule id (lower id = higher priority).
#[derive(Clone, Debug)]
pub struct FqdnMatcher {
    any: Vec<u32>,
    // hashed label trie
    index: Vec<u64>,
    mask: usize,
    nodes: Vec<LabelNode>,
    /// Interned label bytes.
    arena: Vec<u8>,
    /// Ids of nodes that carry more than one id of a kind (`node << 1 | is_sub`), for `all`.
    multi: HashMap<u32, Box<[u32]>>,
    // raw suffixes
    raw_nodes: Vec<RawNode>,
    raw_edges: Vec<(u8, u32)>,
    raw_ids: HashMap<u32, Box<[u32]>>,
    patterns: usize,
}

impl FqdnMatcher {
    /// Builds the matcher. Patterns are used as given (build them with [`FqdnPattern::parse`]);
    /// an id may carry several patterns and a pattern several ids.
    pub fn build(patterns: Vec<(FqdnPattern, u32)>) -> FqdnMatcher {
        let n_patterns = patterns.len();
        let mut any = Vec::new();
        // label trie, build form
        let mut children: HashMap<(u32, &[u8]), u32> = HashMap::new();
        let mut hashes: Vec<u64> = Vec::new();
        let mut node_labels: Vec<&[u8]> = Vec::new();
        let mut parents: Vec<u32> = Vec::new();
        let mut exact_ids: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut sub_ids: HashMap<u32, Vec<u32>> = HashMap::new();
        // raw trie, build form
        let mut raw_children: Vec<std::collections::BTreeMap<u8, u32>> = vec![Default::default()];
        let mut raw_lists: HashMap<u32, Vec<u32>> = HashMap::new();

        for (pat, id) in &patterns {
            match pat {
                FqdnPattern::Any => any.push(*id),
                FqdnPattern::Exact(s) | FqdnPattern::SubdomainWildcard(s) => {
                    let b = s.as_bytes();
                    let mut parent = ROOT;
                    let mut h = SEED;
                    let mut end = b.len();
                    loop {
                        let start = b[..end]
                            .iter()
                            .rposition(|&c| c == b'.')
                            .map_or(0, |p| p + 1);
                        let label = &b[start..end];
                        h = step(h, label);
                        let next = hashes.len() as u32;
                        let node = *children.entry((parent, label)).or_insert_with(|| {
                            hashes.push(h);
                            node_labels.push(label);
                            parents.push(parent);
                            next
                        });
                        parent = node;
                        if start == 0 {
                            break;
                        }
                        end = start - 1;
                    }
                    let map = if matches!(pat, FqdnPattern::Exact(_)) {
                        &mut exact_ids
                    } else {
                        &mut sub_ids
                    };
                    map.entry(parent).or_default().push(*id);
                }
                FqdnPattern::SuffixWildcard(s) => {
                    let mut node = 0u32;
                    for &c in s.as_bytes().iter().rev() {
                        let next = raw_children.len() as u32;
                        let child = *raw_children[node as usize].entry(c).or_insert(next);
                        if child == next {
                            raw_children.push(Default::default());
                        }
                        node = child;
                    }
                    raw_lists.entry(node).or_default().push(*id);
                }
            }
        }
        any.sort_unstable();
        any.dedup();

        // Flatten the label trie.
        let mut arena: Vec<u8> = Vec::new();
        let mut interned: HashMap<&[u8], u32> = HashMap::new();
        let mut nodes = Vec::with_capacity(hashes.len());
        let mut multi = HashMap::new();
        let mut best_of = |list: Option<&mut Vec<u32>>, key: u32| -> u32 {
            match list {
                None => NONE,
                Some(l) => {
                    l.sort_unstable();
                    l.dedup();
                    if l.len() > 1 {
                        multi.insert(key, l.clone().into_boxed_slice());
                    }
                    l.first().copied().unwrap_or(NONE)
                }
            }
        };
        for (i, label) in node_labels.iter().enumerate() {
            let off = *interned.entry(label).or_insert_with(|| {
                let off = arena.len() as u32;
                arena.extend_from_slice(label);
                off
            });
            let i32_ = i as u32;
            nodes.push(LabelNode {
                parent: parents[i],
                exact: best_of(exact_ids.get_mut(&i32_), i32_ << 1),
                sub: best_of(sub_ids.get_mut(&i32_), (i32_ << 1) | 1),
                label_off: off,
                label_len: label.len() as u32,
            });
        }
        let slots = (nodes.len() * 4 / 3 + 1).next_power_of_two().max(16);
        let mask = slots - 1;
        let mut index = vec![EMPTY; slots];
        for (i, &h) in hashes.iter().enumerate() {
            let mut slot = h as usize & mask;
            while index[slot] != EMPTY {
                slot = (slot + 1) & mask;
            }
            index[slot] = ((h >> 32) << 32) | i as u64;
        }

        // Flatten the raw trie.
        let mut raw_nodes = Vec::with_capacity(raw_children.len());
        let mut raw_edges = Vec::new();
        let mut raw_ids = HashMap::new();
        for (i, ch) in raw_children.iter().enumerate() {
            let first_edge = raw_edges.len() as u32;
            raw_edges.extend(ch.iter().map(|(&c, &n)| (c, n)));
            let best = match raw_lists.get_mut(&(i as u32)) {
                None => NONE,
                Some(l) => {
                    l.sort_unstable();
                    l.dedup();
                    raw_ids.insert(i as u32, l.clone().into_boxed_slice());
                    l[0]
                }
            };
            raw_nodes.push(RawNode {
                first_edge,
                n_edges: ch.len() as u32,
                best,
            });
        }
        FqdnMatcher {
            any,
            index,
            mask,
            nodes,
            arena,
            multi,
            raw_nodes,
            raw_edges,
            raw_ids,
            patterns: n_patterns,
        }
    }

    /// Number of patterns the matcher was built from.
    pub fn len(&self) -> usize {
        self.patterns
    }

    /// Whether the matcher was built from no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns == 0
    }

    /// Number of nodes of the label trie (distinct label suffixes of the exact and `*.` patterns).
    pub fn label_nodes(&self) -> usize {
        self.nodes.len()
    }

    #[inline]
    fn label_of(&self, node: usize) -> &[u8] {
        let n = &self.nodes[node];
        let off = n.label_off as usize;
        self.arena
            .get(off..off + n.label_len as usize)
            .unwrap_or(&[])
    }

    #[inline]
    fn find(&self, h: u64, parent: u32, label: &[u8]) -> Option<u32> {
        let fp = h >> 32;
        let mut slot = h as usize & self.mask;
        loop {
            let e = self.index[slot];
            if e == EMPTY {
                return None;
            }
            if e >> 32 == fp {
                let i = e as u32;
                if self.nodes[i as usize].parent == parent && self.label_of(i as usize) == label {
                    return Some(i);
                }
            }
            slot = (slot + 1) & self.mask;
        }
    }

    /// Walks the label trie; calls `visit(node, is_full_name)` for every node on the path.
    #[inline]
    fn walk(&self, b: &[u8], mut visit: impl FnMut(u32, bool)) {
        let mut h = SEED;
        let mut parent = ROOT;
        let mut end = b.len();
        loop {
            let start = b[..end]
                .iter()
                .rposition(|&c| c == b'.')
                .map_or(0, |p| p + 1);
            let label = &b[start..end];
            h = step(h, label);
            let Some(node) = self.find(h, parent, label) else {
                return;
            };
            visit(node, start == 0);
            if start == 0 {
                return;
            }
            parent = node;
            end = start - 1;
        }
    }

    /// Walks the raw-suffix trie; calls `visit(node)` for every node whose suffix the name ends with.
    #[inline]
    fn walk_raw(&self, b: &[u8], mut visit: impl FnMut(u32)) {
        if self.raw_nodes.len() <= 1 && self.raw_ids.is_empty() {
            return;
        }
        let mut node = 0u32;
        visit(0);
        for &c in b.iter().rev() {
            let n = &self.raw_nodes[node as usize];
            let edges = &self.raw_edges[n.first_edge as usize..(n.first_edge + n.n_edges) as usize];
            match edges.binary_search_by_key(&c, |e| e.0) {
                Ok(i) => node = edges[i].1,
                Err(_) => return,
            }
            visit(node);
        }
    }

    /// The lowest rule id whose pattern matches `normalized_name` ([`normalize_name`]), if any.
    /// Does not allocate.
    pub fn best(&self, normalized_name: &str) -> Option<u32> {
        let b = normalized_name.as_bytes();
        let mut best = match (b.is_empty(), self.any.first()) {
            (false, Some(&id)) => id,
            _ => NONE,
        };
        self.walk_raw(b, |n| best = best.min(self.raw_nodes[n as usize].best));
        self.walk(b, |n, full| {
            let node = &self.nodes[n as usize];
            best = best.min(if full { node.exact } else { node.sub });
        });
        (best != NONE).then_some(best)
    }

    /// All rule ids whose pattern matches `normalized_name`, ascending and without duplicates.
    /// `out` is cleared first.
    pub fn all(&self, normalized_name: &str, out: &mut Vec<u32>) {
        out.clear();
        let b = normalized_name.as_bytes();
        if !b.is_empty() {
            out.extend_from_slice(&self.any);
        }
        self.walk_raw(b, |n| {
            if let Some(ids) = self.raw_ids.get(&n) {
                out.extend_from_slice(ids);
            }
        });
        self.walk(b, |n, full| {
            let node = &self.nodes[n as usize];
            let (id, key) = if full {
                (node.exact, n << 1)
            } else {
                (node.sub, (n << 1) | 1)
            };
            if let Some(ids) = self.multi.get(&key) {
                out.extend_from_slice(ids);
            } else if id != NONE {
                out.push(id);
            }
        });
        out.sort_unstable();
        out.dedup();
    }

    /// Bytes used by the tables (hash maps counted by their entries).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.any.capacity() * 4
            + self.index.capacity() * 8
            + self.nodes.capacity() * size_of::<LabelNode>()
            + self.arena.capacity()
            + self
                .multi
                .values()
                .map(|v| v.len() * 4 + 16 + 4)
                .sum::<usize>()
            + self.raw_nodes.capacity() * size_of::<RawNode>()
            + self.raw_edges.capacity() * size_of::<(u8, u32)>()
            + self
                .raw_ids
                .values()
                .map(|v| v.len() * 4 + 16 + 4)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FqdnPattern {
        FqdnPattern::parse(s).unwrap()
    }

    fn norm(s: &str) -> String {
        normalize_name(s).unwrap()
    }

    #[test]
    fn fw_6_3_exact_matches_that_name_only() {
        let pat = p("www.example.com");
        assert!(pat.matches("www.example.com"));
        assert!(!pat.matches("a.www.example.com"));
        assert!(!pat.matches("example.com"));
        let m = FqdnMatcher::build(vec![(pat, 1)]);
        assert_eq!(m.best("www.example.com"), Some(1));
        assert_eq!(m.best("a.www.example.com"), None);
    }

    #[test]
    fn fw_6_3_subdomain_wildcard_excludes_apex() {
        let pat = p("*.example.com");
        assert_eq!(pat, FqdnPattern::SubdomainWildcard("example.com".into()));
        assert!(pat.matches("a.example.com"));
        assert!(pat.matches("a.b.c.example.com"));
        assert!(!pat.matches("example.com"));
        assert!(!pat.matches("badexample.com"));
        let m = FqdnMatcher::build(vec![(pat, 7)]);
        assert_eq!(m.best("a.b.c.example.com"), Some(7));
        assert_eq!(m.best("example.com"), None);
        assert_eq!(m.best("badexample.com"), None);
    }

    #[test]
    fn fw_6_3_suffix_wildcard_is_raw_text_suffix() {
        let pat = p("*example.com");
        assert_eq!(pat, FqdnPattern::SuffixWildcard("example.com".into()));
        for n in ["example.com", "a.example.com", "badexample.com"] {
            assert!(pat.matches(n), "{n}");
        }
        assert!(!pat.matches("example.org"));
        let m = FqdnMatcher::build(vec![(pat, 3)]);
        assert_eq!(m.best("badexample.com"), Some(3));
        assert_eq!(m.best("example.com"), Some(3));
        assert_eq!(m.best("example.org"), None);
    }

    #[test]
    fn fw_6_3_star_alone_matches_any_name() {
        assert_eq!(p("*"), FqdnPattern::Any);
        let m = FqdnMatcher::build(vec![(FqdnPattern::Any, 9)]);
        assert_eq!(m.best("anything.example"), Some(9));
        assert_eq!(m.best("x"), Some(9));
        assert_eq!(m.best(""), None, "missing SNI is not a name");
    }

    #[test]
    fn fw_6_3_star_only_leftmost() {
        for bad in [
            "www.example.*",
            "*.example.*",
            "a*.example.com",
            "**",
            "*.*",
            "w*w",
        ] {
            assert!(FqdnPattern::parse(bad).is_err(), "{bad}");
        }
        for bad in ["", ".", "*.", "a..b", "-*", "exa mple.com"] {
            assert!(FqdnPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fw_6_3_case_trailing_dot_and_idn_normalised() {
        assert_eq!(
            p("WWW.Example.COM."),
            FqdnPattern::Exact("www.example.com".into())
        );
        assert_eq!(
            p("*.Example.com."),
            FqdnPattern::SubdomainWildcard("example.com".into())
        );
        assert_eq!(
            p("bücher.example"),
            FqdnPattern::Exact("xn--bcher-kva.example".into())
        );
        assert_eq!(norm("BÜCHER.example."), "xn--bcher-kva.example");
        assert_eq!(norm("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(
            p("*.bücher.example"),
            FqdnPattern::SubdomainWildcard("xn--bcher-kva.example".into())
        );
        assert_eq!(normalize_name("example.com.."), None);
        assert_eq!(normalize_name(""), None);
        assert_eq!(normalize_name("."), None);
        assert_eq!(normalize_name(&"a".repeat(64)), None);
        assert!(normalize_name(&"a".repeat(63)).is_some());
    }

    #[test]
    fn fw_6_3_priority_lowest_id_wins() {
        let m = FqdnMatcher::build(vec![
            (p("*"), 50),
            (p("*example.com"), 40),
            (p("*.example.com"), 30),
            (p("www.example.com"), 20),
            (p("*.www.example.com"), 10),
        ]);
        assert_eq!(m.best("www.example.com"), Some(20));
        assert_eq!(m.best("a.www.example.com"), Some(10));
        assert_eq!(m.best("a.example.com"), Some(30));
        assert_eq!(m.best("badexample.com"), Some(40));
        assert_eq!(m.best("other.org"), Some(50));
        let mut out = vec![99];
        m.all("a.www.example.com", &mut out);
        assert_eq!(out, vec![10, 30, 40, 50]);
        m.all("www.example.com", &mut out);
        assert_eq!(out, vec![20, 30, 40, 50]);
    }

    #[test]
    fn fqdn_duplicates_and_shared_ids() {
        let m = FqdnMatcher::build(vec![
            (p("a.example.com"), 5),
            (p("a.example.com"), 2),
            (p("a.example.com"), 5),
            (p("*.example.com"), 2),
        ]);
        assert_eq!(m.best("a.example.com"), Some(2));
        let mut out = Vec::new();
        m.all("a.example.com", &mut out);
        assert_eq!(out, vec![2, 5]);
        assert!(m.memory_bytes() > 0);
    }

    #[test]
    fn fqdn_unnormalised_input_never_panics() {
        let m = FqdnMatcher::build(vec![(p("*.example.com"), 1), (p("*ample.com"), 2)]);
        for n in [
            "",
            ".",
            "..",
            "x.",
            ".example.com",
            "ÄÖ.example.com",
            "a..example.com",
        ] {
            let _ = m.best(n);
        }
        assert_eq!(m.best(".example.com"), Some(1));
    }
}
