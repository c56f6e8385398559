//! # palisade-bench
//!
//! Benchmark runner for the policy engine's matchers ([`palisade_policy::matchers`]): it loads a
//! real data file, builds the matcher, runs a fixed-seed trace of lookups through it and through a
//! baseline in the same process, checks that both give the same answer on every lookup of the
//! trace, and reports build time, memory and the median time per lookup.
//!
//! | kind | data | our matcher | baseline |
//! |---|---|---|---|
//! | [`Kind::Classifier`] | a ClassBench filter file | [`Classifier`] | linear scan of the same rules, compiled to integer intervals |
//! | [`Kind::Lpm`] | a prefix list, one per line, optionally gzip | [`Lpm`] | `prefix-trie` 0.10 `PrefixMap` (one per family) |
//! | [`Kind::Fqdn`] | a domain list or a directory of them | [`FqdnMatcher`] | hash maps of exact names and of `*.` bases, walked label by label |
//! | [`Kind::Firewall`] | a domain list or a directory of them, as application rules | [`CompiledFirewall::evaluate`](palisade_policy::firewall::CompiledFirewall::evaluate), one decision per flow | [`FqdnMatcher::best`] alone on the same names (the floor) |
//!
//! Timing: the trace is replayed in batches of 1,024 lookups until the time budget is spent;
//! `ns_per_lookup` is the median over batches of the batch's mean. Single thread. For LPM the
//! report adds `batch_ns_per_lookup`: the same trace through `Lpm::lookup_batch`, one call per
//! batch of 1,024 (the baseline has no batched API; its figure is always single lookups), and the
//! batched answers are checked against the baseline like the single ones.
//!
//! The CLI's `palisade bench classifier|lpm|fqdn|firewall --data FILE [--seconds N] [--output json]` calls
//! [`run`]; `cargo run --release -p palisade-bench --example run -- KIND FILE [SECONDS] [--json]`
//! does the same without the CLI.

use std::collections::HashMap;
use std::fmt;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use palisade_policy::matchers::{
    Classifier, ClassifierOptions, FqdnMatcher, FqdnPattern, Lpm, PacketKey,
};
use serde::Serialize;

pub mod firewall;
pub mod load;

pub use load::LoadError;

/// Which matcher to benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// 5-tuple rule classifier on a ClassBench filter file.
    Classifier,
    /// Longest-prefix match on a prefix list.
    Lpm,
    /// FQDN matcher on domain lists.
    Fqdn,
    /// Firewall decisions ([`firewall`]) over application rules made from domain lists.
    Firewall,
}

/// A benchmark kind name that is none of `classifier`, `lpm`, `fqdn`, `firewall`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown benchmark kind `{0}` (expected classifier, lpm, fqdn or firewall)")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        match s {
            "classifier" => Ok(Kind::Classifier),
            "lpm" => Ok(Kind::Lpm),
            "fqdn" => Ok(Kind::Fqdn),
            "firewall" => Ok(Kind::Firewall),
            _ => Err(UnknownKind(s.to_string())),
        }
    }
}

/// Why a benchmark gave no report. `data` is the data file's name as the report shows it.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--seconds must be positive, got {0}")]
    BadSeconds(f64),
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The data file held nothing to build a matcher from; `what` names the entries.
    #[error("{}: no {what}", path.display())]
    Empty { path: PathBuf, what: &'static str },
    /// The data has entries the baseline cannot represent, so there is nothing to compare with.
    #[error("{0}")]
    Unsupported(String),
    /// The benchmark's own generated fixture is invalid: a bug in the benchmark.
    #[error("{0}")]
    Fixture(String),
    /// Our matcher and the baseline answered differently: a bug, not a slow result.
    #[error("{data}: {matchers} disagree on {mismatches}{} trace lookups", lookups.map(|n| format!(" of {n}")).unwrap_or_default())]
    Mismatch {
        data: String,
        matchers: &'static str,
        mismatches: usize,
        lookups: Option<usize>,
    },
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Classifier => "classifier",
            Kind::Lpm => "lpm",
            Kind::Fqdn => "fqdn",
            Kind::Firewall => "firewall",
        })
    }
}

/// Figures of one address family (LPM only).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FamilyReport {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Distinct prefixes of that family.
    pub entries: usize,
    /// Bytes of that family's trie.
    pub bytes: usize,
    /// Median ns per lookup over a trace of addresses of that family only.
    pub ns_per_lookup: f64,
    /// The baseline's median ns per lookup on the same trace.
    pub baseline_ns_per_lookup: f64,
    /// `baseline_ns_per_lookup / ns_per_lookup`.
    pub speedup: f64,
    /// Lookups timed (ours).
    pub lookups: u64,
    /// Median ns per lookup through our batched API (`Lpm::lookup_batch`, 16 in flight) on the
    /// same trace. The baseline has no batched API, so it is compared with its single lookups.
    pub batch_ns_per_lookup: f64,
    /// `baseline_ns_per_lookup / batch_ns_per_lookup` (baseline single, ours batched).
    pub batch_speedup: f64,
}

/// Result of one benchmark run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// What was benchmarked.
    pub kind: Kind,
    /// File (or directory) name of the data.
    pub data: String,
    /// Rules, prefixes or patterns loaded.
    pub entries: usize,
    /// Per address family (LPM); empty for the other kinds.
    pub families: Vec<FamilyReport>,
    /// Time to build our matcher, ms.
    pub build_ms: f64,
    /// Bytes of our matcher (see each matcher's `memory_bytes`).
    pub bytes: usize,
    /// `bytes / entries`.
    pub bytes_per_entry: f64,
    /// Median ns per lookup over the whole trace.
    pub ns_per_lookup: f64,
    /// Name of the baseline.
    pub baseline: String,
    /// Time to build the baseline, ms.
    pub baseline_build_ms: f64,
    /// The baseline's median ns per lookup on the same trace.
    pub baseline_ns_per_lookup: f64,
    /// `baseline_ns_per_lookup / ns_per_lookup`.
    pub speedup: f64,
    /// Median ns per lookup through our batched API, where the matcher has one (LPM).
    pub batch_ns_per_lookup: Option<f64>,
    /// `baseline_ns_per_lookup / batch_ns_per_lookup` (the baseline's single lookups).
    pub batch_speedup: Option<f64>,
    /// Lookups timed through our matcher.
    pub lookups: u64,
    /// Lookups timed through the baseline.
    pub baseline_lookups: u64,
    /// Distinct queries in the trace (replayed cyclically).
    pub trace_len: usize,
    /// How the trace was made.
    pub trace: String,
    /// Trace lookups whose answer differed between ours and the baseline (always 0 in a report:
    /// any mismatch fails the run).
    pub mismatches: usize,
    /// Shape figures and remarks.
    pub notes: Vec<String>,
}

fn mib(b: usize) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.kind {
            Kind::Classifier => "rules",
            Kind::Lpm => "prefixes",
            Kind::Fqdn | Kind::Firewall => "patterns",
        };
        writeln!(f, "{:<18}{}", "kind", self.kind)?;
        writeln!(f, "{:<18}{}", "data", self.data)?;
        writeln!(f, "{:<18}{} {unit}", "entries", self.entries)?;
        writeln!(f, "{:<18}{:.1} ms", "build", self.build_ms)?;
        writeln!(
            f,
            "{:<18}{} ({} bytes, {:.1} B/entry)",
            "memory",
            mib(self.bytes),
            self.bytes,
            self.bytes_per_entry
        )?;
        writeln!(
            f,
            "{:<18}{:.1} ns/lookup (median over batches, {} lookups)",
            "lookup", self.ns_per_lookup, self.lookups
        )?;
        writeln!(
            f,
            "{:<18}{}: {:.1} ns/lookup ({} lookups, build {:.1} ms)",
            "baseline",
            self.baseline,
            self.baseline_ns_per_lookup,
            self.baseline_lookups,
            self.baseline_build_ms
        )?;
        writeln!(f, "{:<18}{:.1}x", "speedup", self.speedup)?;
        if let (Some(ns), Some(x)) = (self.batch_ns_per_lookup, self.batch_speedup) {
            writeln!(
                f,
                "{:<18}{:.1} ns/lookup batched (lookup_batch, 16 in flight), {:.1}x the baseline's single lookups",
                "batched", ns, x
            )?;
        }
        writeln!(
            f,
            "{:<18}{} queries: {}",
            "trace", self.trace_len, self.trace
        )?;
        writeln!(f, "{:<18}{}", "mismatches", self.mismatches)?;
        if !self.families.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<8}{:>10}{:>12}{:>12}{:>14}{:>10}{:>12}{:>10}",
                "family",
                "prefixes",
                "trie",
                "ns/lookup",
                "baseline ns",
                "speedup",
                "batched ns",
                "speedup"
            )?;
            for fam in &self.families {
                writeln!(
                    f,
                    "{:<8}{:>10}{:>12}{:>12.1}{:>14.1}{:>9.1}x{:>12.1}{:>9.1}x",
                    fam.family,
                    fam.entries,
                    mib(fam.bytes),
                    fam.ns_per_lookup,
                    fam.baseline_ns_per_lookup,
                    fam.speedup,
                    fam.batch_ns_per_lookup,
                    fam.batch_speedup
                )?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// Loads `data`, builds our matcher and the baseline, checks them against each other on the whole
/// trace and times both for about `seconds` in total.
pub fn run(kind: Kind, data: &Path, seconds: f64) -> Result<Report, BenchError> {
    let seconds = if seconds.is_finite() && seconds > 0.0 {
        seconds
    } else {
        return Err(BenchError::BadSeconds(seconds));
    };
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| data.display().to_string());
    match kind {
        Kind::Classifier => run_classifier(name, data, seconds),
        Kind::Lpm => run_lpm(name, data, seconds),
        Kind::Fqdn => run_fqdn(name, data, seconds),
        Kind::Firewall => firewall::run_firewall(name, data, seconds),
    }
}

// ---------------------------------------------------------------- trace helpers

/// xorshift64*: a tiny deterministic generator for the traces (fixed seed, reproducible).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with the given non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else if hi - lo == u64::MAX {
            self.next_u64()
        } else {
            lo + self.below(hi - lo + 1)
        }
    }
    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

const SEED: u64 = 0x5eed_0f7a_115a_de00;

/// A random address inside `net`.
fn addr_in(net: &IpNet, rng: &mut Rng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host = (rng.next_u64() as u32) & !u32::from(n.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
        }
        IpNet::V6(n) => {
            let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            IpAddr::V6(Ipv6Addr::from(
                u128::from(n.network()) | (r & !u128::from(n.netmask())),
            ))
        }
    }
}

struct Timing {
    ns_per_lookup: f64,
    lookups: u64,
}

/// Replays `f(0..n)` cyclically in batches of 1,024 for about `seconds` (at least 5 batches);
/// returns the median over batches of the mean ns per lookup.
fn time_lookups(n: usize, seconds: f64, mut f: impl FnMut(usize) -> u64) -> Timing {
    const BATCH: usize = 1024;
    let mut batches: Vec<f64> = Vec::new();
    let mut sink = 0u64;
    let mut i = 0usize;
    // Warm-up: one batch, not timed.
    for _ in 0..BATCH.min(n) {
        sink = sink.wrapping_add(f(i));
        i = (i + 1) % n.max(1);
    }
    let start = Instant::now();
    loop {
        let t = Instant::now();
        for _ in 0..BATCH {
            sink = sink.wrapping_add(f(i));
            i += 1;
            if i == n {
                i = 0;
            }
        }
        batches.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
        if batches.len() >= 5 && start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    black_box(sink);
    batches.sort_by(f64::total_cmp);
    Timing {
        ns_per_lookup: batches[batches.len() / 2],
        lookups: (batches.len() * BATCH) as u64,
    }
}

/// Like [`time_lookups`], but each batch of 1,024 lookups is one call `f(start, len)` over the
/// trace positions `start..start + len` (wrapping at `n` splits a batch into two calls).
fn time_batched(n: usize, seconds: f64, mut f: impl FnMut(usize, usize) -> u64) -> Timing {
    const BATCH: usize = 1024;
    let mut batches: Vec<f64> = Vec::new();
    let mut sink = 0u64;
    let mut i = 0usize;
    let mut run = |i: &mut usize, sink: &mut u64| {
        let mut left = BATCH;
        while left > 0 {
            let len = left.min(n - *i);
            *sink = sink.wrapping_add(f(*i, len));
            left -= len;
            *i += len;
            if *i == n {
                *i = 0;
            }
        }
    };
    run(&mut i, &mut sink);
    let start = Instant::now();
    loop {
        let t = Instant::now();
        run(&mut i, &mut sink);
        batches.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
        if batches.len() >= 5 && start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    black_box(sink);
    batches.sort_by(f64::total_cmp);
    Timing {
        ns_per_lookup: batches[batches.len() / 2],
        lookups: (batches.len() * BATCH) as u64,
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn ratio(base: f64, ours: f64) -> f64 {
    if ours > 0.0 {
        base / ours
    } else {
        0.0
    }
}

// ---------------------------------------------------------------- classifier

/// The linear-scan baseline: the same rules, compiled to integer intervals (IPv4, one interval
/// per field as in ClassBench), checked in priority order.
struct LinearRule {
    s: (u32, u32),
    d: (u32, u32),
    sp: (u16, u16),
    dp: (u16, u16),
    proto: Option<u8>,
}

fn v4_hull(set: &[IpNet]) -> Result<(u32, u32), BenchError> {
    match set {
        [IpNet::V4(n)] => Ok((u32::from(n.network()), u32::from(n.broadcast()))),
        _ => Err(BenchError::Unsupported(
            "linear baseline expects one IPv4 prefix per field".into(),
        )),
    }
}

fn one_range(set: &[(u16, u16)]) -> Result<(u16, u16), BenchError> {
    match set {
        [r] => Ok(*r),
        _ => Err(BenchError::Unsupported(
            "linear baseline expects one port range per field".into(),
        )),
    }
}

fn linear_first(rules: &[LinearRule], k: &(u32, u32, u16, u16, u8)) -> Option<u32> {
    let &(s, d, sp, dp, p) = k;
    rules
        .iter()
        .position(|r| {
            r.s.0 <= s
                && s <= r.s.1
                && r.d.0 <= d
                && d <= r.d.1
                && r.sp.0 <= sp
                && sp <= r.sp.1
                && r.dp.0 <= dp
                && dp <= r.dp.1
                && r.proto.is_none_or(|x| x == p)
        })
        .map(|i| i as u32)
}

fn run_classifier(name: String, data: &Path, seconds: f64) -> Result<Report, BenchError> {
    let (rules, skipped) = load::classbench(data)?;
    if rules.is_empty() {
        return Err(BenchError::Empty {
            path: data.to_path_buf(),
            what: "rules",
        });
    }
    let n = rules.len();
    // ClassBench semantics: port fields are compared for every protocol.
    let opts = ClassifierOptions {
        ports_only_for_tcp_udp: false,
    };
    let t = Instant::now();
    let c = Classifier::build(rules.clone(), opts);
    let build_ms = ms_since(t);
    let stats = c.stats();

    let t = Instant::now();
    let linear: Vec<LinearRule> = rules
        .iter()
        .map(|r| {
            Ok(LinearRule {
                s: v4_hull(&r.src)?,
                d: v4_hull(&r.dst)?,
                sp: one_range(&r.src_ports)?,
                dp: one_range(&r.dst_ports)?,
                proto: r.protocol,
            })
        })
        .collect::<Result<_, BenchError>>()?;
    let baseline_build_ms = ms_since(t);

    // Trace: one header inside each rule, plus as many uniformly random headers.
    let mut rng = Rng::new(SEED);
    let protos = [6u8, 17, 1];
    let mut trace: Vec<PacketKey> = Vec::with_capacity(2 * n);
    for r in &rules {
        let pick = |set: &[(u16, u16)], rng: &mut Rng| {
            let (lo, hi) = set[0];
            rng.range(u64::from(lo), u64::from(hi)) as u16
        };
        trace.push(PacketKey {
            src: addr_in(&r.src[0], &mut rng),
            dst: addr_in(&r.dst[0], &mut rng),
            protocol: r.protocol.unwrap_or(protos[rng.below(3) as usize]),
            src_port: pick(&r.src_ports, &mut rng),
            dst_port: pick(&r.dst_ports, &mut rng),
        });
    }
    for _ in 0..n {
        let protocol = match rng.below(4) {
            3 => rng.below(256) as u8,
            i => protos[i as usize],
        };
        trace.push(PacketKey {
            src: IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32)),
            dst: IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32)),
            protocol,
            src_port: rng.next_u64() as u16,
            dst_port: rng.next_u64() as u16,
        });
    }
    rng.shuffle(&mut trace);
    let flat: Vec<(u32, u32, u16, u16, u8)> = trace
        .iter()
        .map(|k| match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (
                u32::from(s),
                u32::from(d),
                k.src_port,
                k.dst_port,
                k.protocol,
            ),
            _ => (0, 0, 0, 0, 0),
        })
        .collect();

    let mut mismatches = 0;
    let mut matched = 0;
    for (k, f) in trace.iter().zip(&flat) {
        let ours = c.first_match(k);
        if ours != linear_first(&linear, f) {
            mismatches += 1;
        }
        matched += usize::from(ours.is_some());
    }
    if mismatches > 0 {
        return Err(BenchError::Mismatch {
            data: name,
            matchers: "classifier and linear scan",
            mismatches,
            lookups: Some(trace.len()),
        });
    }
    let ours = time_lookups(trace.len(), seconds / 2.0, |i| {
        u64::from(c.first_match(&trace[i]).unwrap_or(u32::MAX))
    });
    let base = time_lookups(flat.len(), seconds / 2.0, |i| {
        u64::from(linear_first(&linear, &flat[i]).unwrap_or(u32::MAX))
    });
    let bytes = c.memory_bytes();
    let mut notes = vec![
        format!(
            "{} trees, {} nodes, {} leaf entries, max depth {}",
            stats.trees, stats.nodes, stats.leaf_entries, stats.max_depth
        ),
        format!("{matched} of {} trace headers match a rule", trace.len()),
        "ClassBench semantics: ports compared for every protocol; TCP-flag field ignored".into(),
    ];
    if skipped > 0 {
        notes.push(format!("{skipped} blank lines skipped"));
    }
    Ok(Report {
        kind: Kind::Classifier,
        data: name,
        entries: n,
        families: Vec::new(),
        build_ms,
        bytes,
        bytes_per_entry: bytes as f64 / n as f64,
        ns_per_lookup: ours.ns_per_lookup,
        baseline: "linear scan (same rules as integer intervals)".into(),
        baseline_build_ms,
        baseline_ns_per_lookup: base.ns_per_lookup,
        speedup: ratio(base.ns_per_lookup, ours.ns_per_lookup),
        batch_ns_per_lookup: None,
        batch_speedup: None,
        lookups: ours.lookups,
        baseline_lookups: base.lookups,
        trace_len: trace.len(),
        trace: format!(
            "{n} headers drawn inside each rule + {n} uniformly random IPv4 headers, shuffled, seed {SEED:#x}"
        ),
        mismatches,
        notes,
    })
}

// ---------------------------------------------------------------- LPM

fn run_lpm(name: String, data: &Path, seconds: f64) -> Result<Report, BenchError> {
    let nets = load::prefixes(data)?;
    if nets.is_empty() {
        return Err(BenchError::Empty {
            path: data.to_path_buf(),
            what: "prefixes",
        });
    }
    let entries: Vec<(IpNet, u32)> = nets
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i as u32))
        .collect();
    let t = Instant::now();
    let lpm = Lpm::build(entries.clone());
    let build_ms = ms_since(t);

    let t = Instant::now();
    let mut base4: prefix_trie::PrefixMap<Ipv4Net, u32> = prefix_trie::PrefixMap::new();
    let mut base6: prefix_trie::PrefixMap<Ipv6Net, u32> = prefix_trie::PrefixMap::new();
    for &(net, v) in &entries {
        match net.trunc() {
            IpNet::V4(n) => {
                base4.entry(n).or_insert(v);
            }
            IpNet::V6(n) => {
                base6.entry(n).or_insert(v);
            }
        }
    }
    let baseline_build_ms = ms_since(t);
    let base_lookup = |a: IpAddr| -> Option<(IpNet, u32)> {
        match a {
            IpAddr::V4(a) => base4
                .get_lpm(&Ipv4Net::from(a))
                .map(|(n, v)| (IpNet::V4(n), *v)),
            IpAddr::V6(a) => base6
                .get_lpm(&Ipv6Net::from(a))
                .map(|(n, v)| (IpNet::V6(n), *v)),
        }
    };

    // Traces per family: half inside random stored prefixes, half uniform (IPv6: over 2000::/3).
    let mut rng = Rng::new(SEED);
    let (v4nets, v6nets): (Vec<IpNet>, Vec<IpNet>) =
        nets.iter().partition(|n| matches!(n, IpNet::V4(_)));
    let per_family = 1 << 20;
    let mut make = |fam_nets: &[IpNet], v6: bool| -> Vec<IpAddr> {
        let mut t = Vec::with_capacity(per_family);
        if fam_nets.is_empty() {
            return t;
        }
        for i in 0..per_family {
            if i % 2 == 0 {
                let n = fam_nets[rng.below(fam_nets.len() as u64) as usize];
                t.push(addr_in(&n, &mut rng));
            } else if v6 {
                let hi = (rng.next_u64() & (u64::MAX >> 3)) | (1u64 << 61);
                t.push(IpAddr::V6(Ipv6Addr::from(
                    (u128::from(hi) << 64) | u128::from(rng.next_u64()),
                )));
            } else {
                t.push(IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32)));
            }
        }
        t
    };
    let trace4 = make(&v4nets, false);
    let trace6 = make(&v6nets, true);
    let mut mixed: Vec<IpAddr> = Vec::with_capacity(per_family);
    for i in 0..per_family {
        // In proportion to the families' prefix counts.
        let pick6 = !trace6.is_empty()
            && (trace4.is_empty() || rng.below(nets.len() as u64) < v6nets.len() as u64);
        mixed.push(if pick6 { trace6[i] } else { trace4[i] });
    }

    let mut mismatches = 0usize;
    for a in trace4.iter().chain(&trace6) {
        let ours = lpm.lookup(*a).map(|(n, v)| (n, *v));
        if ours != base_lookup(*a) {
            mismatches += 1;
        }
    }
    // The batched API must give the same answers too.
    let mut out = vec![None; 1024];
    for t in [&trace4, &trace6, &mixed] {
        for chunk in t.chunks(1024) {
            lpm.lookup_batch(chunk, &mut out[..chunk.len()]);
            for (a, o) in chunk.iter().zip(&out) {
                if o.map(|(n, v)| (n, *v)) != base_lookup(*a) {
                    mismatches += 1;
                }
            }
        }
    }
    if mismatches > 0 {
        return Err(BenchError::Mismatch {
            data: name,
            matchers: "Poptrie and prefix-trie",
            mismatches,
            lookups: None,
        });
    }
    let budget = seconds / 9.0;
    let ours_of = |t: &[IpAddr]| {
        time_lookups(t.len(), budget, |i| {
            lpm.lookup(t[i]).map_or(0, |(_, v)| u64::from(*v))
        })
    };
    let batch_of = |t: &[IpAddr]| {
        let mut out = vec![None; 1024];
        time_batched(t.len(), budget, |i, len| {
            lpm.lookup_batch(&t[i..i + len], &mut out[..len]);
            out[..len]
                .iter()
                .map(|r| r.map_or(0, |(_, v)| u64::from(*v)))
                .fold(0, u64::wrapping_add)
        })
    };
    let base_of = |t: &[IpAddr]| {
        time_lookups(t.len(), budget, |i| {
            base_lookup(t[i]).map_or(0, |(_, v)| u64::from(v))
        })
    };
    let ours = ours_of(&mixed);
    let batched = batch_of(&mixed);
    let base = base_of(&mixed);
    let stats = lpm.family_stats();
    let mut families = Vec::new();
    for (fam, trace, st) in [("ipv4", &trace4, stats[0]), ("ipv6", &trace6, stats[1])] {
        if trace.is_empty() {
            continue;
        }
        let o = ours_of(trace);
        let ob = batch_of(trace);
        let b = base_of(trace);
        families.push(FamilyReport {
            family: fam.into(),
            entries: st.prefixes,
            bytes: st.index_bytes,
            ns_per_lookup: o.ns_per_lookup,
            baseline_ns_per_lookup: b.ns_per_lookup,
            speedup: ratio(b.ns_per_lookup, o.ns_per_lookup),
            lookups: o.lookups,
            batch_ns_per_lookup: ob.ns_per_lookup,
            batch_speedup: ratio(b.ns_per_lookup, ob.ns_per_lookup),
        });
    }
    let bytes = lpm.memory_bytes();
    let index: usize = stats.iter().map(|s| s.index_bytes).sum();
    let notes = vec![
        format!(
            "tries {} (IPv4 {} nodes / {} leaves, IPv6 {} nodes / {} leaves); per-entry prefix length and u32 value {}",
            mib(index),
            stats[0].nodes,
            stats[0].leaves,
            stats[1].nodes,
            stats[1].leaves,
            mib(bytes - index)
        ),
        format!(
            "{} input lines, {} distinct prefixes",
            nets.len(),
            lpm.len()
        ),
    ];
    Ok(Report {
        kind: Kind::Lpm,
        data: name,
        entries: nets.len(),
        families,
        build_ms,
        bytes,
        bytes_per_entry: bytes as f64 / nets.len() as f64,
        ns_per_lookup: ours.ns_per_lookup,
        baseline: "prefix-trie 0.10 PrefixMap::get_lpm (one map per family)".into(),
        baseline_build_ms,
        baseline_ns_per_lookup: base.ns_per_lookup,
        speedup: ratio(base.ns_per_lookup, ours.ns_per_lookup),
        batch_ns_per_lookup: Some(batched.ns_per_lookup),
        batch_speedup: Some(ratio(base.ns_per_lookup, batched.ns_per_lookup)),
        lookups: ours.lookups,
        baseline_lookups: base.lookups,
        trace_len: mixed.len(),
        trace: format!(
            "per family 2^20 addresses: half inside random stored prefixes, half uniform (IPv6 over 2000::/3); the top-line trace mixes the families in proportion to their prefix counts; seed {SEED:#x}"
        ),
        mismatches,
        notes,
    })
}

// ---------------------------------------------------------------- FQDN

/// The hash-set baseline: exact names and `*.` bases in two std hash maps (name → best id),
/// looked up for the full name and then for every label suffix.
struct HashWalk {
    exact: HashMap<String, u32>,
    wild: HashMap<String, u32>,
}

impl HashWalk {
    fn best(&self, name: &str) -> Option<u32> {
        let mut best = self.exact.get(name).copied();
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(&id) = self.wild.get(rest) {
                best = Some(best.map_or(id, |b| b.min(id)));
            }
        }
        best
    }
}

fn random_label(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b'a' + rng.below(26) as u8))
        .collect()
}

fn run_fqdn(name: String, data: &Path, seconds: f64) -> Result<Report, BenchError> {
    let (patterns, files) = load::domains(data)?;
    if patterns.is_empty() {
        return Err(BenchError::Empty {
            path: data.to_path_buf(),
            what: "domain names",
        });
    }
    let n = patterns.len();
    let with_ids: Vec<(FqdnPattern, u32)> = patterns
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, p)| (p, i as u32))
        .collect();
    let t = Instant::now();
    let m = FqdnMatcher::build(with_ids);
    let build_ms = ms_since(t);

    let t = Instant::now();
    let mut base = HashWalk {
        exact: HashMap::new(),
        wild: HashMap::new(),
    };
    let mut other = 0usize;
    for (i, p) in patterns.iter().enumerate() {
        match p {
            FqdnPattern::Exact(s) => {
                base.exact.entry(s.clone()).or_insert(i as u32);
            }
            FqdnPattern::SubdomainWildcard(s) => {
                base.wild.entry(s.clone()).or_insert(i as u32);
            }
            _ => other += 1,
        }
    }
    if other > 0 {
        return Err(BenchError::Unsupported(format!(
            "{name}: {other} patterns are `*suffix` or `*`, which the hash-set baseline does not model"
        )));
    }
    let baseline_build_ms = ms_since(t);

    // Trace: a quarter each of listed exact names, subdomains of `*.` bases, the bases themselves
    // (apex: the wildcard must not match) and names that are in no list.
    let exact: Vec<&String> = base.exact.keys().collect();
    let wild: Vec<&String> = base.wild.keys().collect();
    let mut exact_sorted = exact.clone();
    exact_sorted.sort();
    let mut wild_sorted = wild.clone();
    wild_sorted.sort();
    let mut rng = Rng::new(SEED);
    let tlds = ["com", "net", "org", "io", "de"];
    let len = 1 << 18;
    let mut trace: Vec<String> = Vec::with_capacity(len);
    for i in 0..len {
        let q = match i % 4 {
            0 if !exact_sorted.is_empty() => {
                exact_sorted[rng.below(exact_sorted.len() as u64) as usize].clone()
            }
            1 if !wild_sorted.is_empty() => {
                let b = wild_sorted[rng.below(wild_sorted.len() as u64) as usize];
                let l = 3 + rng.below(6) as usize;
                if rng.below(3) == 0 {
                    let l2 = 2 + rng.below(4) as usize;
                    format!(
                        "{}.{}.{b}",
                        random_label(&mut rng, l),
                        random_label(&mut rng, l2)
                    )
                } else {
                    format!("{}.{b}", random_label(&mut rng, l))
                }
            }
            2 if !wild_sorted.is_empty() => {
                wild_sorted[rng.below(wild_sorted.len() as u64) as usize].clone()
            }
            _ => {
                let l = 4 + rng.below(9) as usize;
                let tld = tlds[rng.below(tlds.len() as u64) as usize];
                if rng.below(2) == 0 {
                    format!("www.{}.{tld}", random_label(&mut rng, l))
                } else {
                    format!("{}.{tld}", random_label(&mut rng, l))
                }
            }
        };
        trace.push(q);
    }
    rng.shuffle(&mut trace);

    let mut mismatches = 0;
    let mut matched = 0;
    for q in &trace {
        let ours = m.best(q);
        if ours != base.best(q) {
            mismatches += 1;
        }
        matched += usize::from(ours.is_some());
    }
    if mismatches > 0 {
        return Err(BenchError::Mismatch {
            data: name,
            matchers: "FQDN matcher and hash-set walk",
            mismatches,
            lookups: Some(trace.len()),
        });
    }
    let ours = time_lookups(trace.len(), seconds / 2.0, |i| {
        u64::from(m.best(&trace[i]).unwrap_or(u32::MAX))
    });
    let baseline = time_lookups(trace.len(), seconds / 2.0, |i| {
        u64::from(base.best(&trace[i]).unwrap_or(u32::MAX))
    });
    let bytes = m.memory_bytes();
    Ok(Report {
        kind: Kind::Fqdn,
        data: name,
        entries: n,
        families: Vec::new(),
        build_ms,
        bytes,
        bytes_per_entry: bytes as f64 / n as f64,
        ns_per_lookup: ours.ns_per_lookup,
        baseline: "per-label walk over std HashMaps of exact names and `*.` bases".into(),
        baseline_build_ms,
        baseline_ns_per_lookup: baseline.ns_per_lookup,
        speedup: ratio(baseline.ns_per_lookup, ours.ns_per_lookup),
        batch_ns_per_lookup: None,
        batch_speedup: None,
        lookups: ours.lookups,
        baseline_lookups: baseline.lookups,
        trace_len: trace.len(),
        trace: format!(
            "2^18 names, a quarter each: listed exact names, random subdomains (1-2 labels) of `*.` bases, the bases themselves, random unlisted names; shuffled, seed {SEED:#x}"
        ),
        mismatches,
        notes: vec![
            format!(
                "{} exact names, {} `*.` wildcards, {} distinct pattern texts; files: {}",
                base.exact.len(),
                base.wild.len(),
                m.texts(),
                files.join(", ")
            ),
            format!("{matched} of {} trace names match a pattern", trace.len()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmp(name: &str, body: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("palisade-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(body).unwrap();
        p
    }

    #[test]
    fn bench_classifier_small_file() {
        let p = tmp(
            "cb",
            b"@10.0.0.0/8\t192.168.0.0/16\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n\
              @0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n",
        );
        let r = run(Kind::Classifier, &p, 0.05).unwrap();
        assert_eq!(r.entries, 2);
        assert_eq!(r.mismatches, 0);
        assert!(r.ns_per_lookup > 0.0 && r.baseline_ns_per_lookup > 0.0);
        let text = r.to_string();
        assert!(text.contains("speedup"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kind"], "classifier");
    }

    #[test]
    fn bench_lpm_small_file_plain_and_gzip() {
        let body = b"10.0.0.0/8\r\n10.1.0.0/16\r\n2001:db8::/32\r\n\r\n";
        let p = tmp("prefixes.txt", body);
        let r = run(Kind::Lpm, &p, 0.05).unwrap();
        assert_eq!(r.entries, 3);
        assert_eq!(r.families.len(), 2);
        assert_eq!(r.families[0].entries, 2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).unwrap();
        let p = tmp("prefixes.txt.gz", &gz.finish().unwrap());
        assert_eq!(run(Kind::Lpm, &p, 0.05).unwrap().entries, 3);
    }

    #[test]
    fn bench_fqdn_small_file() {
        let p = tmp(
            "list.txt",
            b"# comment\n0.0.0.0 ads.example.com\n*.tracker.net\nplain.org # tail\n\n",
        );
        let r = run(Kind::Fqdn, &p, 0.05).unwrap();
        assert_eq!(r.entries, 3);
        assert_eq!(r.mismatches, 0);
    }

    #[test]
    fn bench_firewall_small_file() {
        let p = tmp(
            "fw-list.txt",
            b"ads.example.com\n*.tracker.net\nplain.org\n",
        );
        let r = run(Kind::Firewall, &p, 0.05).unwrap();
        assert_eq!(r.entries, 3);
        assert!(r.ns_per_lookup > 0.0);
        assert!(r.notes[2].contains("network"), "{:?}", r.notes);
    }

    #[test]
    fn bench_bad_lines_name_file_and_line() {
        let p = tmp(
            "bad-cb",
            b"@10.0.0.0/8\t1.2.3.4/32\t0 : 65535\t80 : 80\t0x06/0xFF\t0/0\t\n@oops\n",
        );
        let e = run(Kind::Classifier, &p, 0.05).unwrap_err().to_string();
        assert!(e.contains("bad-cb:2"), "{e}");
        let p = tmp("bad-prefixes", b"10.0.0.0/8\n10.0.0.0/33\n");
        let e = run(Kind::Lpm, &p, 0.05).unwrap_err().to_string();
        assert!(e.contains("bad-prefixes:2"), "{e}");
        let p = tmp("bad-domains", b"ok.example\nwww.*.example\n");
        let e = run(Kind::Fqdn, &p, 0.05).unwrap_err().to_string();
        assert!(e.contains("bad-domains:2"), "{e}");
        assert!(run(Kind::Lpm, Path::new("/nonexistent/x"), 0.05).is_err());
        assert!(run(Kind::Lpm, &p, -1.0).is_err());
        assert!("nope".parse::<Kind>().is_err());
    }

    #[test]
    fn bench_errors_tell_a_missing_file_from_a_bad_line() {
        match run(Kind::Lpm, Path::new("/nonexistent/x"), 0.05) {
            Err(BenchError::Load(e)) => assert!(e.is_missing(), "{e}"),
            other => panic!("expected a missing file, got {other:?}"),
        }
        let p = tmp(
            "bad-line",
            b"10.0.0.0/8
not-a-prefix
",
        );
        match load::prefixes(&p) {
            Err(LoadError::BadLine { line, problem, .. }) => {
                assert_eq!(line, 2);
                assert_eq!(
                    problem,
                    load::LineError::NotAPrefix {
                        text: "not-a-prefix".into()
                    }
                );
            }
            other => panic!("expected a bad line, got {other:?}"),
        }
        assert!(matches!(
            run(Kind::Lpm, &p, -1.0),
            Err(BenchError::BadSeconds(_))
        ));
    }
}
