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
//! Exact names and `*.` wildcards are label-anchored: a name can only match them at one of its
//! label suffixes (`www.example.com`, `example.com`, `com`). So every distinct pattern text is
//! stored once, with the best rule id of the exact names equal to it and the best rule id of the
//! `*.` wildcards based on it, in a **hashed suffix table** — the hashed form of a reversed-label
//! trie, as in hash-based longest-prefix match and in DNS servers' name tables. A lookup hashes
//! every label suffix of the name, right to left, 8 bytes per step; at a proper suffix the
//! wildcard id applies, at the full name the exact id applies (apex excluded, FW-6.3).
//!
//! Why hashed and flat rather than a pointer trie: on real lists the trie's upper levels have
//! fan-outs of 10^5 (`com`), so a trie walk is one random memory access per label anyway, and
//! each access depends on the previous one. Here the suffix hashes depend on the name only, so the
//! probes of one name are independent of each other and the CPU overlaps their cache misses. The
//! table is split hot/cold: the probed table holds only `(32-bit fingerprint, record offset)`
//! words (8 bytes per slot, 2 MiB for the 260k-name lists), and a record — ids, length and the
//! pattern text — is read only when a fingerprint matches, and then compared byte for byte: a
//! hash collision costs a probe, never a wrong answer. Memory is about 35 bytes per name on the
//! benchmark lists, against ~470 bytes per name for Unbound's zone tree.
//!
//! Raw-suffix patterns (`*example.com`) are not label-anchored. They are rare, so they go into a
//! small reversed-**character** trie walked only when such patterns exist. `*` patterns are a
//! constant. The best rule is the minimum id over the three sources; ties in priority are resolved
//! by id, lower wins.
//!
//! Lookups do not allocate ([`FqdnMatcher::best`]); the structure is immutable and `Send + Sync`.
//! Adding a pattern costs one table insert and one record append; removing one clears an id in
//! one record — both local, but not exposed: the matcher is rebuilt from its patterns (a few
//! hundred ms for 260k names).

use std::collections::HashMap;
use std::fmt;

use super::mem::Frozen;

/// "No rule" marker inside the tables.
const NONE: u32 = u32::MAX;
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
    normalize_host(name).map(|h| h.as_str().to_string())
}

/// Longest host name in normal form (RFC 1035, without the trailing dot).
const MAX_NAME: usize = 253;

/// A host name in normal form ([`normalize_name`]), held inline so that normalising one on the
/// decision path does not allocate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HostName {
    len: u8,
    buf: [u8; MAX_NAME],
}

impl HostName {
    pub fn as_str(&self) -> &str {
        // Only ASCII host bytes are ever stored (checked in `normalize_host`).
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::ops::Deref for HostName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A fixed buffer one byte longer than a name, for the trailing dot; a longer text fails.
struct NameSink {
    len: usize,
    buf: [u8; MAX_NAME + 1],
}

impl fmt::Write for NameSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// [`normalize_name`] without allocating: the name is lowercased (or converted by UTS-46) into
/// a stack buffer. A text that does not fit could not be a host name anyway.
pub fn normalize_host(name: &str) -> Option<HostName> {
    let mut sink = NameSink {
        len: 0,
        buf: [0; MAX_NAME + 1],
    };
    if name.is_ascii() && !has_a_label(name) {
        let b = name.as_bytes();
        if b.len() > sink.buf.len() {
            return None;
        }
        for (d, c) in sink.buf.iter_mut().zip(b) {
            *d = c.to_ascii_lowercase();
        }
        sink.len = b.len();
    } else {
        use idna::uts46::{ErrorPolicy, Hyphens, ProcessingSuccess, Uts46};
        match Uts46::new().process(
            name.as_bytes(),
            idna::AsciiDenyList::EMPTY,
            Hyphens::Allow,
            ErrorPolicy::FailFast,
            |_, _, _| false,
            &mut sink,
            None,
        ) {
            Ok(ProcessingSuccess::WroteToSink) => {}
            // Already in normal form (an ASCII name whose A-labels decode): taken as it is.
            Ok(ProcessingSuccess::Passthrough) => {
                let b = name.as_bytes();
                if b.len() > sink.buf.len() {
                    return None;
                }
                sink.buf[..b.len()].copy_from_slice(b);
                sink.len = b.len();
            }
            Err(_) => return None,
        }
    }
    let mut n = &sink.buf[..sink.len];
    if let Some(rest) = n.strip_suffix(b".") {
        n = rest;
    }
    if n.is_empty() || n.len() > MAX_NAME {
        return None;
    }
    for label in n.split(|&c| c == b'.') {
        if label.is_empty() || label.len() > 63 || !label.iter().all(|&c| host_byte(c)) {
            return None;
        }
    }
    let mut buf = [0; MAX_NAME];
    buf[..n.len()].copy_from_slice(n);
    Some(HostName {
        len: n.len() as u8,
        buf,
    })
}

/// Whether an ASCII name has a label starting `xn--` (an A-label): such a name goes through
/// UTS-46 too, so that an A-label that does not decode (`xn--`) is refused whether the name came
/// in as ASCII or as Unicode, not accepted in one form only.
fn has_a_label(name: &str) -> bool {
    name.split('.')
        .any(|l| l.len() >= 4 && l.as_bytes()[..4].eq_ignore_ascii_case(b"xn--"))
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

/// The hash of a whole text, as `walk` computes it label by label from the right.
fn suffix_hash(b: &[u8]) -> u64 {
    let mut h = SEED;
    let mut end = b.len();
    loop {
        let start = b[..end]
            .iter()
            .rposition(|&c| c == b'.')
            .map_or(0, |p| p + 1);
        h = step(h, &b[start..end]);
        if start == 0 {
            return h;
        }
        end = start - 1;
    }
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
    /// Hot table: `(fingerprint << 32) | record offset`, open addressing, linear probing; on
    /// huge pages when large ([`super::mem`]).
    index: Frozen<u64>,
    mask: usize,
    /// Records: exact id, wildcard id, text length (u32 little-endian each), text.
    records: Frozen<u8>,
    texts: usize,
    /// Records that carry more than one id of a kind (`offset << 1 | is_wildcard`), for `all`.
    multi: HashMap<u64, Box<[u32]>>,
    // raw suffixes
    raw_nodes: Vec<RawNode>,
    raw_edges: Vec<(u8, u32)>,
    raw_ids: HashMap<u32, Box<[u32]>>,
    patterns: usize,
}

/// Exact ids and wildcard ids of one pattern text, at build time.
type IdLists = (Vec<u32>, Vec<u32>);

/// Bytes of a record before its text.
const RECORD_HEAD: usize = 12;

impl FqdnMatcher {
    /// Builds the matcher. Patterns are used as given (build them with [`FqdnPattern::parse`]);
    /// an id may carry several patterns and a pattern several ids.
    pub fn build(patterns: Vec<(FqdnPattern, u32)>) -> FqdnMatcher {
        let n_patterns = patterns.len();
        let mut any = Vec::new();
        // text → (exact ids, wildcard ids)
        let mut texts: HashMap<&str, IdLists> = HashMap::new();
        // raw trie, build form
        let mut raw_children: Vec<std::collections::BTreeMap<u8, u32>> = vec![Default::default()];
        let mut raw_lists: HashMap<u32, Vec<u32>> = HashMap::new();

        for (pat, id) in &patterns {
            match pat {
                FqdnPattern::Any => any.push(*id),
                FqdnPattern::Exact(s) => texts.entry(s.as_str()).or_default().0.push(*id),
                FqdnPattern::SubdomainWildcard(s) => {
                    texts.entry(s.as_str()).or_default().1.push(*id)
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

        // Records and the hot table. Texts in sorted order, so the build is deterministic.
        let mut sorted: Vec<(&str, IdLists)> = texts.into_iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let slots = (sorted.len() * 4 / 3 + 1).next_power_of_two().max(16);
        let mask = slots - 1;
        let mut index = vec![EMPTY; slots];
        let mut records: Vec<u8> = Vec::new();
        let mut multi = HashMap::new();
        let n_texts = sorted.len();
        for (text, (mut exact, mut sub)) in sorted {
            let off = records.len() as u64;
            let mut best_of = |l: &mut Vec<u32>, key: u64| -> u32 {
                l.sort_unstable();
                l.dedup();
                if l.len() > 1 {
                    multi.insert(key, l.clone().into_boxed_slice());
                }
                l.first().copied().unwrap_or(NONE)
            };
            let e = best_of(&mut exact, off << 1);
            let w = best_of(&mut sub, (off << 1) | 1);
            records.extend_from_slice(&e.to_le_bytes());
            records.extend_from_slice(&w.to_le_bytes());
            records.extend_from_slice(&(text.len() as u32).to_le_bytes());
            records.extend_from_slice(text.as_bytes());
            let h = suffix_hash(text.as_bytes());
            let mut slot = h as usize & mask;
            while index[slot] != EMPTY {
                slot = (slot + 1) & mask;
            }
            index[slot] = ((h >> 32) << 32) | off;
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
            index: Frozen::new(&index),
            mask,
            records: Frozen::new(&records),
            texts: n_texts,
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

    /// Number of distinct exact and `*.` pattern texts stored in the suffix table.
    pub fn texts(&self) -> usize {
        self.texts
    }

    /// The record of `text` (hash `h`), if stored: its offset, exact id and wildcard id.
    #[inline]
    fn find(&self, h: u64, text: &[u8]) -> Option<(u64, u32, u32)> {
        let fp = h >> 32;
        let mut slot = h as usize & self.mask;
        loop {
            let e = self.index[slot];
            if e == EMPTY {
                return None;
            }
            if e >> 32 == fp {
                let off = e & 0xffff_ffff;
                let at = off as usize;
                if let Some(head) = self.records.get(at..at + RECORD_HEAD) {
                    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
                    let body = self.records.get(at + RECORD_HEAD..at + RECORD_HEAD + len);
                    if body == Some(text) {
                        let exact = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
                        let sub = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                        return Some((off, exact, sub));
                    }
                }
            }
            slot = (slot + 1) & self.mask;
        }
    }

    /// Calls `visit(record, exact id, wildcard id, is_full_name)` for every label suffix of the
    /// name that is a stored text, shortest first.
    #[inline]
    fn walk(&self, b: &[u8], mut visit: impl FnMut(u64, u32, u32, bool)) {
        let mut h = SEED;
        let mut end = b.len();
        loop {
            let start = b[..end]
                .iter()
                .rposition(|&c| c == b'.')
                .map_or(0, |p| p + 1);
            h = step(h, &b[start..end]);
            if let Some((off, exact, sub)) = self.find(h, &b[start..]) {
                visit(off, exact, sub, start == 0);
            }
            if start == 0 {
                return;
            }
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
        self.first_from(normalized_name, 0)
    }

    /// The lowest rule id `>= from` whose pattern matches `normalized_name`. Calling it again
    /// with the answer + 1 visits the ids [`FqdnMatcher::all`] returns, in order, without
    /// allocating: each call is one walk of the name, and the common case needs one call.
    pub fn first_from(&self, normalized_name: &str, from: u32) -> Option<u32> {
        // Each source stores its lowest id inline; the full list is read only when that one
        // is below `from`.
        let above = |ids: &[u32]| {
            ids.get(ids.partition_point(|&i| i < from))
                .copied()
                .unwrap_or(NONE)
        };
        let b = normalized_name.as_bytes();
        let mut best = if b.is_empty() { NONE } else { above(&self.any) };
        self.walk_raw(b, |n| {
            let id = self.raw_nodes[n as usize].best;
            if id >= from {
                best = best.min(id);
            } else if let Some(ids) = self.raw_ids.get(&n) {
                best = best.min(above(ids));
            }
        });
        self.walk(b, |off, exact, sub, full| {
            let (id, key) = if full {
                (exact, off << 1)
            } else {
                (sub, (off << 1) | 1)
            };
            if id >= from {
                best = best.min(id);
            } else if let Some(ids) = self.multi.get(&key) {
                best = best.min(above(ids));
            }
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
        self.walk(b, |off, exact, sub, full| {
            let (id, key) = if full {
                (exact, off << 1)
            } else {
                (sub, (off << 1) | 1)
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
            + self.index.bytes()
            + self.records.bytes()
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
    fn an_a_label_is_judged_alike_in_ascii_and_unicode() {
        // An A-label that does not decode is no host name, however the name is written.
        assert_eq!(normalize_name("xn--.xn--bcher-kva"), None);
        assert_eq!(normalize_name("xn--.bücher"), None);
        assert_eq!(
            normalize_name("XN--BCHER-KVA.example."),
            Some("xn--bcher-kva.example".into())
        );
        assert_eq!(
            normalize_name("bücher.example"),
            Some("xn--bcher-kva.example".into())
        );
        assert_eq!(
            normalize_name("WWW.Example.COM"),
            Some("www.example.com".into())
        );
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
