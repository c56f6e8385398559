//! `palisade bench reach` (issue 15, item 3): the generated hub-and-spoke network of
//! [`crate::gen::HubSpoke`], the full matrix timed, the worst of several one-rule re-checks
//! (narrow and broad, NSG and firewall), peak memory, and sample flows checked against
//! [`Snapshot::trace`] — the oracle — so a fast wrong answer cannot pass unnoticed.

use super::{Engine, Reach};
use crate::diff::{diff_with, Build, DiffPath};
use crate::gen::{HubSpoke, Rng, FRONTEND_IP};
use ipnet::IpNet;
use palisade_model::catalog::Catalogs;
use palisade_model::{Access, AddressItem, Direction, Network, PortRange, Protocol, SecurityRule};
use palisade_policy::firewall::CompiledFirewall;
use palisade_policy::nsg::CompiledNsg;
use palisade_policy::{CompileOptions, Flow, Snapshot, TraceOptions, Verdict};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// What `palisade bench reach` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ReachBench {
    pub spokes: usize,
    /// Address atoms (IPv4 + IPv6).
    pub atoms: usize,
    /// Building the engine: every (source, destination) answer of the network.
    pub matrix_s: f64,
    /// Peak resident memory of the process (`VmHWM`) through the matrix and the re-checks,
    /// generation and compilation included.
    pub peak_rss_mib: f64,
    /// Worst re-check time over the NSG one-rule changes (each applied, then reverted).
    pub recheck_nsg_ms: f64,
    /// Worst re-check time over the firewall one-rule changes (each applied, then reverted).
    pub recheck_firewall_ms: f64,
    /// Sample flows whose matrix answer was compared with `trace`.
    pub trace_checked_flows: usize,
    /// Of those, how many disagreed (verdict, or the control that stopped the flow).
    pub mismatches: usize,
    /// The same three timings in CPU time of the measuring thread: on a shared machine the
    /// wall-clock figures include waiting for a core, these do not.
    pub matrix_cpu_s: f64,
    pub recheck_nsg_cpu_ms: f64,
    pub recheck_firewall_cpu_ms: f64,
    /// Issue 15, item 4, read from the built matrix: which subnets reach which (every subnet
    /// pair), and what reaches one spoke from the Internet (`--from Internet --to SUBNET`).
    pub subnet_matrix_s: f64,
    /// Peak resident memory once the questions below were answered too.
    pub peak_rss_after_questions_mib: f64,
    pub subnet_links: usize,
    pub internet_to_spoke_s: f64,
    /// CPU ms of each one-rule change (the slower of applying and reverting it), by
    /// [`CHANGES`] name: which kind of change is the worst.
    pub recheck_cpu_ms_by_change: BTreeMap<&'static str, f64>,
    /// Wall seconds of each phase of the matrix build ([`Engine::build_phases`]).
    pub matrix_phases_s: BTreeMap<&'static str, f64>,
    /// CPU seconds of the whole process (every thread) while the matrix was built: what a
    /// parallel build costs in all, where `matrix_cpu_s` is the calling thread alone.
    pub matrix_process_cpu_s: f64,
    /// Issue 15, item 4: `diff` between the generated network and a copy with one change,
    /// the worst of [`DIFF_CHANGES`] (wall time of [`crate::diff::diff`], the matrix's engine
    /// dropped first), and the number of changes it reported then. Absent when the diff was
    /// not measured (`--no-diff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_changes: Option<usize>,
    /// Peak resident memory once the diffs ran too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_after_diff_mib: Option<f64>,
    /// Which way each diff ran, by [`DIFF_CHANGES`] name (`Recheck`: one engine, the new
    /// version derived through the re-check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_paths: Option<BTreeMap<&'static str, String>>,
}

/// The arguments of the reach examples, `SPOKES NSG_RULES FIREWALL_RULES [N]`: the generated
/// network's size (500 / 50 / 5,000 when none is given) and `N` (`default_n` when absent; at
/// least 1). An error names the argument and what was expected.
pub fn example_args(
    args: impl IntoIterator<Item = String>,
    default_n: usize,
) -> Result<(usize, usize, usize, usize), String> {
    const NAMES: [&str; 4] = ["SPOKES", "NSG_RULES", "FIREWALL_RULES", "N"];
    let args: Vec<String> = args.into_iter().collect();
    if args.len() > NAMES.len() || (1..3).contains(&args.len()) {
        return Err(format!(
            "expected no arguments or SPOKES NSG_RULES FIREWALL_RULES [N], got {} arguments",
            args.len()
        ));
    }
    let mut v = [500, 50, 5000, default_n];
    for (i, a) in args.iter().enumerate() {
        v[i] = a.parse().map_err(|_| {
            format!(
                "argument {} ({}): expected a whole number, got {a:?}",
                i + 1,
                NAMES[i]
            )
        })?;
    }
    Ok((v[0], v[1], v[2], v[3].max(1)))
}

/// Wall-clock and thread CPU time since a start.
#[derive(Clone, Copy)]
struct Clock(Instant, f64);

impl Clock {
    fn start() -> Clock {
        Clock(Instant::now(), thread_cpu_s())
    }
    /// (wall ms, CPU ms).
    fn ms(self) -> (f64, f64) {
        (
            self.0.elapsed().as_secs_f64() * 1e3,
            (thread_cpu_s() - self.1) * 1e3,
        )
    }
}

/// CPU time of the calling thread in seconds.
fn thread_cpu_s() -> f64 {
    cpu_s(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (every thread) in seconds: what a parallel build costs.
fn process_cpu_s() -> f64 {
    cpu_s(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_s(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Peak resident set size of this process in MiB (0 where `/proc` is not available).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Run the benchmark on the generated network with these parameters, the matrix built on
/// every thread of the pool ([`Engine::parallel`], the same ids as the serial build): on the
/// idle 2-core machine it took 0.64× the serial wall time at 500 / 50 / 5,000.
pub fn run(spokes: usize, nsg_rules: usize, firewall_rules: usize) -> ReachBench {
    run_with(spokes, nsg_rules, firewall_rules, true)
}

/// [`run`], with the matrix built by [`Engine::parallel`] when `parallel`.
pub fn run_with(
    spokes: usize,
    nsg_rules: usize,
    firewall_rules: usize,
    parallel: bool,
) -> ReachBench {
    run_measuring(spokes, nsg_rules, firewall_rules, parallel, true)
}

/// [`run_with`]; the diffs measured only when `diff` (their fields are `None` otherwise).
pub fn run_measuring(
    spokes: usize,
    nsg_rules: usize,
    firewall_rules: usize,
    parallel: bool,
    diff: bool,
) -> ReachBench {
    let gen = Generated::new(spokes, nsg_rules, firewall_rules);
    let (bed, snap, g) = (gen.bed(), &gen.snap, &gen.g);
    let (t, p) = (Clock::start(), process_cpu_s());
    let mut engine = if parallel {
        Engine::parallel(snap)
    } else {
        Engine::new(snap)
    };
    let (matrix_ms, matrix_cpu_ms) = t.ms();
    let matrix_process_cpu_s = process_cpu_s() - p;
    let matrix_phases_s = engine.build_phases().iter().copied().collect();
    let (a4, a6) = engine.atoms();
    let rc = rechecks(bed, &mut engine);
    let ((recheck_nsg_ms, recheck_nsg_cpu_ms), (recheck_firewall_ms, recheck_firewall_cpu_ms)) =
        (rc.nsg, rc.firewall);
    // Every change was reverted: the engine must answer as the original snapshot does.
    let (trace_checked_flows, mismatches) = check_sample(g, snap, &engine, 4000, 11);
    // The matrix's peak, before the item-4 questions add their own results.
    let peak_rss_mib = peak_rss_mib();
    let t = Clock::start();
    let subnet_links = engine.subnet_matrix().links.len();
    let subnet_matrix_s = t.ms().0 / 1e3;
    let t = Clock::start();
    let spoke = format!("spoke{}/workload", g.spokes / 2);
    let scopes = (
        super::parse_scope(snap, "Internet"),
        super::parse_scope(snap, &spoke),
    );
    if let (Ok(internet), Ok(to)) = scopes {
        super::report(&engine, &internet, &to, false, &[Reach::Allow]);
    }
    let internet_to_spoke_s = t.ms().0 / 1e3;
    let peak_rss_after_questions_mib = self::peak_rss_mib();
    drop(engine);
    let runs = if diff {
        diffs(bed, Build::Join)
    } else {
        vec![]
    };
    let worst = runs
        .iter()
        .map(|d| (d.wall_s, d.changes))
        .fold((0.0, 0), |w, d| if d.0 > w.0 { d } else { w });
    let measured = |v| diff.then_some(v);
    ReachBench {
        spokes: g.spokes,
        atoms: a4 + a6,
        matrix_s: matrix_ms / 1e3,
        peak_rss_mib,
        peak_rss_after_questions_mib,
        diff_s: measured(worst.0),
        diff_changes: diff.then_some(worst.1),
        peak_rss_after_diff_mib: measured(self::peak_rss_mib()),
        diff_paths: diff.then(|| {
            runs.iter()
                .map(|d| (d.change, format!("{:?}", d.path)))
                .collect()
        }),
        recheck_nsg_ms,
        recheck_firewall_ms,
        trace_checked_flows,
        mismatches,
        matrix_cpu_s: matrix_cpu_ms / 1e3,
        recheck_nsg_cpu_ms,
        recheck_firewall_cpu_ms,
        subnet_matrix_s,
        subnet_links,
        internet_to_spoke_s,
        recheck_cpu_ms_by_change: CHANGES.into_iter().zip(rc.cpu_ms).collect(),
        matrix_phases_s,
        matrix_process_cpu_s,
    }
}

/// Only the re-checks, `rounds` times over one engine: per round the CPU time of each change and
/// the worst of the NSG and of the firewall changes. For profiling the re-check and for figures
/// steadier than one round on a shared machine (the matrix is built once, outside the timings).
pub fn recheck_rounds(
    spokes: usize,
    nsg_rules: usize,
    firewall_rules: usize,
    rounds: usize,
) -> Vec<Rechecks> {
    let gen = Generated::new(spokes, nsg_rules, firewall_rules);
    let (bed, snap) = (gen.bed(), &gen.snap);
    let mut engine = Engine::new(snap);
    (0..rounds).map(|_| rechecks(bed, &mut engine)).collect()
}

/// The first round of re-checks only, each on a fresh engine built as `palisade bench reach`
/// builds it ([`Engine::parallel`] when `parallel`): what the bench's single round measures, as
/// a distribution. Later rounds over one engine ([`recheck_rounds`]) meet tables the first
/// round already laid out again, so they miss the first round's costs.
pub fn recheck_first_rounds(
    spokes: usize,
    nsg_rules: usize,
    firewall_rules: usize,
    rounds: usize,
    parallel: bool,
) -> Vec<Rechecks> {
    let gen = Generated::new(spokes, nsg_rules, firewall_rules);
    let (bed, snap) = (gen.bed(), &gen.snap);
    (0..rounds)
        .map(|_| {
            let mut engine = if parallel {
                Engine::parallel(snap)
            } else {
                Engine::new(snap)
            };
            rechecks(bed, &mut engine)
        })
        .collect()
}

/// Only the matrix, built `rounds` times from one snapshot (serial, or with
/// [`Engine::parallel`]): per round (wall s, CPU s of the calling thread, CPU s of the whole
/// process). For profiling the build and for figures steadier than one run on a shared machine.
pub fn matrix_rounds(
    spokes: usize,
    nsg_rules: usize,
    firewall_rules: usize,
    rounds: usize,
    parallel: bool,
) -> Vec<(f64, f64, f64)> {
    let gen = Generated::new(spokes, nsg_rules, firewall_rules);
    let snap = &gen.snap;
    (0..rounds)
        .map(|_| {
            let (t, p) = (Clock::start(), process_cpu_s());
            let engine = if parallel {
                Engine::parallel(snap)
            } else {
                Engine::new(snap)
            };
            let (wall, cpu) = t.ms();
            let process = process_cpu_s() - p;
            drop(engine);
            (wall / 1e3, cpu / 1e3, process)
        })
        .collect()
}

/// The changes `diff` is timed on, each alone against the generated network: an NSG rule's
/// access flipped (in a spoke without a NIC), and a firewall rule collection moved ahead of
/// the one before it (its priority changed).
pub const DIFF_CHANGES: [&str; 2] = ["nsg-access", "fw-collection-priority"];

/// One timed `diff` (see [`DIFF_CHANGES`]).
#[derive(Debug, Clone)]
pub struct DiffRun {
    pub change: &'static str,
    pub wall_s: f64,
    /// CPU time of the whole process (both engines' threads).
    pub cpu_s: f64,
    pub changes: usize,
    pub compared: usize,
    /// Which way the diff ran.
    pub path: DiffPath,
}

/// The generated network with one of [`DIFF_CHANGES`] made (`None` when it has nothing to
/// change).
pub fn changed_network(g: &HubSpoke, net: &Network, change: &str) -> Option<Network> {
    let mut new = net.clone();
    match change {
        "nsg-access" => {
            let mid = if (g.spokes / 2).is_multiple_of(g.nic_every.max(1)) {
                g.spokes / 2 + 1
            } else {
                g.spokes / 2
            }
            .min(g.spokes - 1);
            let nsg = new
                .network_security_groups
                .iter_mut()
                .find(|n| n.name == format!("nsg-{mid}"))?;
            let r = nsg.security_rules.get_mut(3)?;
            r.access = match r.access {
                Access::Allow => Access::Deny,
                Access::Deny => Access::Allow,
            };
        }
        "fw-collection-priority" => {
            let cols = &mut new.azure_firewalls.first_mut()?.rule_collections;
            let col = 20.min(cols.len().checked_sub(1)?);
            let (p, other) = (
                cols.get(col.checked_sub(1)?)?.priority,
                cols[col - 1].name.clone(),
            );
            let c = &mut cols[col];
            // Ahead of the collection before it (FW-1: ties go by name).
            c.priority = if c.name.to_ascii_lowercase() < other.to_ascii_lowercase() {
                p
            } else {
                p.saturating_sub(1)
            };
        }
        _ => return None,
    }
    Some(new)
}

/// Each of [`DIFF_CHANGES`] made, compiled, and `diff`'d against the original snapshot with
/// the engines built as `build` says.
fn diffs(bed: Bed, build: Build) -> Vec<DiffRun> {
    let mut out = vec![];
    for change in DIFF_CHANGES {
        let Some(net) = changed_network(bed.g, bed.net, change) else {
            continue;
        };
        let new = Snapshot::compile(&net, bed.catalogs, &CompileOptions::default());
        let (t, p) = (Instant::now(), process_cpu_s());
        let d = diff_with(bed.snap, &new, build);
        out.push(DiffRun {
            change,
            wall_s: t.elapsed().as_secs_f64(),
            cpu_s: process_cpu_s() - p,
            changes: d.changes.len(),
            compared: d.compared,
            path: d.path,
        });
    }
    out
}

/// Only the diffs, `rounds` times (for the `reach_diff` example): every round runs each of
/// [`DIFF_CHANGES`].
pub fn diff_rounds(
    spokes: usize,
    nsg_rules: usize,
    firewall_rules: usize,
    rounds: usize,
    build: Build,
) -> Vec<DiffRun> {
    let gen = Generated::new(spokes, nsg_rules, firewall_rules);
    let bed = gen.bed();
    (0..rounds).flat_map(|_| diffs(bed, build)).collect()
}

/// The generated hub-and-spoke network of one size, compiled: what every entry point starts
/// from.
struct Generated {
    g: HubSpoke,
    catalogs: Catalogs,
    net: Network,
    snap: Snapshot,
}

impl Generated {
    fn new(spokes: usize, nsg_rules: usize, firewall_rules: usize) -> Generated {
        let mut g = HubSpoke::target();
        (g.spokes, g.nsg_rules, g.firewall_rules) = (spokes.max(1), nsg_rules, firewall_rules);
        let catalogs = Catalogs::embedded();
        let net = g.build();
        let snap = Snapshot::compile(&net, &catalogs, &CompileOptions::default());
        Generated {
            g,
            catalogs,
            net,
            snap,
        }
    }

    fn bed(&self) -> Bed<'_> {
        Bed {
            g: &self.g,
            net: &self.net,
            snap: &self.snap,
            catalogs: &self.catalogs,
        }
    }
}

/// What every series of re-checks starts from: the generated network and its snapshot.
#[derive(Clone, Copy)]
struct Bed<'a> {
    g: &'a HubSpoke,
    net: &'a Network,
    snap: &'a Snapshot,
    catalogs: &'a Catalogs,
}

/// The bench's one-rule changes, each applied and then reverted, by name, in the order they
/// run: NSG changes first, then firewall changes.
pub const CHANGES: [&str; 10] = [
    "nsg-narrow",
    "nsg-broad",
    "nsg-dnat-target",
    "nsg-priority",
    "nsg-delete",
    "fw-narrow",
    "fw-broad",
    "fw-delete",
    "fw-rule-order",
    "fw-collection-priority",
];

/// CPU ms of each change in [`CHANGES`] (the slower of applying and reverting it; 0 for a
/// change this network cannot make), and the worst wall and CPU ms of the NSG and the firewall
/// changes.
#[derive(Debug, Clone, Default)]
pub struct Rechecks {
    pub cpu_ms: Vec<f64>,
    pub nsg: (f64, f64),
    pub firewall: (f64, f64),
}

fn rechecks(bed: Bed, engine: &mut Engine) -> Rechecks {
    let mut out = Rechecks::default();
    for (name, ms) in nsg_rechecks(bed, engine)
        .into_iter()
        .chain(firewall_rechecks(bed, engine))
    {
        let worst = if name.starts_with("nsg") {
            &mut out.nsg
        } else {
            &mut out.firewall
        };
        *worst = (worst.0.max(ms.0), worst.1.max(ms.1));
        let at = CHANGES.iter().position(|c| *c == name).expect("listed");
        out.cpu_ms.resize(CHANGES.len(), 0.0);
        out.cpu_ms[at] = out.cpu_ms[at].max(ms.1);
    }
    out.cpu_ms.resize(CHANGES.len(), 0.0);
    out
}

/// NSG one-rule changes (an experienced user's edits): the access of an outbound rule flipped
/// in a spoke without a NIC (narrow); an inbound rule of spoke 0 — it holds the DNAT target —
/// opened to any source, protocol and port (broad); an inbound rule there made to allow SSH from
/// anywhere to anything, so that its destination holds both the DNAT's translated address and
/// the frontend (every DNAT'd flow meets it, FW-4); a rule of spoke 0 moved to the front (its
/// priority changed); a rule deleted. Each applied, then reverted: (name, (wall ms, CPU ms)).
fn nsg_rechecks(bed: Bed, engine: &mut Engine) -> Vec<(&'static str, (f64, f64))> {
    let Bed {
        g,
        net,
        snap,
        catalogs,
    } = bed;
    let mid = if (g.spokes / 2).is_multiple_of(g.nic_every.max(1)) {
        g.spokes / 2 + 1
    } else {
        g.spokes / 2
    }
    .min(g.spokes - 1);
    let mut out = vec![];
    for (name, spoke) in [
        ("nsg-narrow", mid),
        ("nsg-broad", 0),
        ("nsg-dnat-target", 0),
        ("nsg-priority", 0),
        ("nsg-delete", mid),
    ] {
        let Some(model) = net
            .network_security_groups
            .iter()
            .find(|n| n.name == format!("nsg-{spoke}"))
        else {
            continue;
        };
        let mut nsg = model.clone();
        let rules = &mut nsg.security_rules;
        let inbound = |rules: &[SecurityRule], skip: usize| {
            (0..rules.len())
                .filter(|k| rules[*k].direction == Direction::Inbound)
                .nth(skip)
        };
        let k = match name {
            "nsg-narrow" | "nsg-delete" => Some(3),
            "nsg-broad" => Some(2),
            "nsg-dnat-target" => inbound(rules, 1),
            _ => rules.len().checked_sub(1),
        };
        let Some(k) = k.filter(|k| *k < rules.len()) else {
            continue;
        };
        let dir = rules[k].direction;
        let r = &mut rules[k];
        match name {
            "nsg-narrow" => {
                r.access = match r.access {
                    Access::Allow => Access::Deny,
                    Access::Deny => Access::Allow,
                }
            }
            "nsg-broad" => {
                r.access = Access::Allow;
                r.protocol = Protocol::Any;
                r.source.address_prefixes = vec![AddressItem::Any];
                r.source.port_ranges = vec![PortRange::ANY];
                r.destination.port_ranges = vec![PortRange::ANY];
            }
            "nsg-dnat-target" => {
                r.access = Access::Allow;
                r.protocol = Protocol::Tcp;
                r.source.address_prefixes = vec![AddressItem::Any];
                r.source.port_ranges = vec![PortRange::ANY];
                r.destination.address_prefixes = vec![AddressItem::Any];
                r.destination.port_ranges = vec![PortRange::single(22)];
            }
            // The last rule moved to second place (NSG-4: priorities 100-4096, first is 100).
            "nsg-priority" => r.priority = 105,
            _ => {
                rules.remove(k);
            }
        }
        let Some(s) = snap.subnet_by_name(&format!("spoke{spoke}/workload")) else {
            continue;
        };
        let Some(idx) = snap.subnet(s).nsg else {
            continue;
        };
        let compiled = CompiledNsg::compile(&nsg, catalogs, &snap.subnet(s).tags, &HashMap::new());
        let mut worst = None;
        for rules in [compiled.direction(dir), snap.nsg(idx).direction(dir)] {
            let t = Clock::start();
            // Refused (a port or address no rule of a small network used: a new engine's
            // job), the engine is unchanged and the change is left out.
            if engine.update_nsg(idx, dir, rules).is_err() {
                break;
            }
            let (wall, cpu) = t.ms();
            let (w0, c0) = worst.unwrap_or((0.0f64, 0.0f64));
            worst = Some((w0.max(wall), c0.max(cpu)));
        }
        out.extend(worst.map(|w| (name, w)));
    }
    out
}

/// Firewall one-rule changes: a narrow one (one spoke to another on one port), a broad one (one
/// spoke to any destination), a rule deleted, a rule moved to the front of its collection, and
/// a rule collection moved ahead of the one before it (its priority changed). Each applied,
/// then reverted: (name, (wall ms, CPU ms)).
fn firewall_rechecks(bed: Bed, engine: &mut Engine) -> Vec<(&'static str, (f64, f64))> {
    let Bed {
        g,
        net,
        snap,
        catalogs,
    } = bed;
    let (Some(model), Some((fw0, original))) =
        (net.azure_firewalls.first(), snap.firewalls().next())
    else {
        return vec![];
    };
    let mut out = vec![];
    let last = model.rule_collections.len().saturating_sub(1);
    for (name, col, rule) in [
        ("fw-narrow", 20usize, 7usize),
        ("fw-broad", 10, 11),
        ("fw-delete", 20, 7),
        ("fw-rule-order", 20, 7),
        ("fw-collection-priority", 20, 0),
    ] {
        let mut fw = model.clone();
        let col = col.min(last);
        let before = col.checked_sub(1).map(|c| {
            (
                fw.rule_collections[c].priority,
                fw.rule_collections[c].name.clone(),
            )
        });
        let Some(c) = fw.rule_collections.get_mut(col) else {
            continue;
        };
        if rule >= c.rules.len() {
            continue;
        }
        match name {
            "fw-delete" => {
                c.rules.remove(rule);
            }
            "fw-rule-order" => {
                let r = c.rules.remove(rule);
                c.rules.insert(0, r);
            }
            "fw-collection-priority" => {
                // Ahead of the collection before it (FW-1: ties go by name).
                let Some((p, other)) = before else {
                    continue;
                };
                c.priority = if c.name.to_ascii_lowercase() < other.to_ascii_lowercase() {
                    p
                } else {
                    p.saturating_sub(1)
                };
            }
            _ => {
                let r = &mut c.rules[rule];
                r.destination_ports = vec![PortRange::single(3389)];
                r.source_addresses = vec![AddressItem::Prefix(g.spoke(3 % g.spokes))];
                r.destination_addresses = if name == "fw-broad" {
                    vec![AddressItem::Any]
                } else {
                    vec![AddressItem::Prefix(g.spoke(4 % g.spokes))]
                };
            }
        }
        let compiled = CompiledFirewall::compile(&fw, net, catalogs, &HashMap::new());
        let mut worst = None;
        for cfw in [&compiled, original] {
            let t = Clock::start();
            // Refused: unchanged, left out (as for the NSG changes).
            if engine.update_firewall(fw0, cfw).is_err() {
                break;
            }
            let (wall, cpu) = t.ms();
            let (w0, c0) = worst.unwrap_or((0.0f64, 0.0f64));
            worst = Some((w0.max(wall), c0.max(cpu)));
        }
        out.extend(worst.map(|w| (name, w)));
    }
    out
}

/// Check `n` random flows (spoke hosts, NIC, hub, frontend, Internet) against `trace`:
/// (flows compared, mismatches).
pub fn check_sample(
    g: &HubSpoke,
    snap: &Snapshot,
    engine: &Engine,
    n: usize,
    seed: u64,
) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let host = |p: IpNet, r: &mut Rng| match p {
        IpNet::V4(v) => {
            let size = 1u32 << (32 - v.prefix_len());
            IpAddr::V4(Ipv4Addr::from(
                u32::from(v.network()) + r.below(size as usize) as u32,
            ))
        }
        IpNet::V6(v) => IpAddr::V6(v.network()),
    };
    let outside: [IpAddr; 5] = [
        FRONTEND_IP.parse().expect("literal"),
        IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 3)),
        IpAddr::V4(Ipv4Addr::new(13, 64, 38, 225)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    ];
    let pick = |rng: &mut Rng| -> IpAddr {
        match rng.below(10) {
            0 => outside[rng.below(outside.len())],
            1 => g.nic_address(rng.below(g.spokes.div_ceil(g.nic_every.max(1))) * g.nic_every),
            2 => host(g.hub(), rng),
            _ => host(g.spoke(rng.below(g.spokes)), rng),
        }
    };
    let ports = [22u16, 80, 443, 1433, 1500, 2222, 3389, 8080, 53, 50000];
    let (mut checked, mut bad) = (0, 0);
    for _ in 0..n {
        let (source, destination) = (pick(&mut rng), pick(&mut rng));
        let protocol = [Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Icmp][rng.below(4)];
        let flow = Flow {
            source,
            source_port: if rng.below(2) == 0 { 50000 } else { 1000 },
            destination,
            destination_port: ports[rng.below(ports.len())],
            protocol,
            host: None,
            app_protocol: None,
        };
        match agrees(snap, engine, &flow) {
            Some(true) => checked += 1,
            Some(false) => {
                checked += 1;
                bad += 1;
            }
            None => {}
        }
    }
    (checked, bad)
}

/// Does the matrix give `trace`'s verdict and, for a stopped flow, its deciding control?
/// `None`: the flow is outside the matrix (neither end in the network) and `trace` agrees.
pub fn agrees(snap: &Snapshot, engine: &Engine, flow: &Flow) -> Option<bool> {
    let t = snap.trace(flow, &TraceOptions::default());
    let k = flow.key();
    let Some(o) = engine.lookup(
        k.protocol,
        flow.source,
        flow.destination,
        k.src_port,
        k.dst_port,
    ) else {
        let outside = snap.locate(flow.source).subnet.is_none()
            && snap.locate(flow.destination).subnet.is_none()
            && snap.firewall_frontend(flow.destination).is_none();
        return if outside { None } else { Some(false) };
    };
    let want = match o.verdict {
        Reach::Allow => Verdict::Allow,
        Reach::Deny | Reach::ByName => Verdict::Deny,
        Reach::Drop => Verdict::Drop,
        Reach::Unknown => Verdict::Unknown,
    };
    if t.verdict != want {
        return Some(false);
    }
    if matches!(o.verdict, Reach::Deny | Reach::Drop) {
        if let Some(db) = &t.decided_by {
            let Some(last) = o.chain.last() else {
                return Some(false);
            };
            return Some(
                (last.layer, last.resource.as_str(), last.rule.as_deref())
                    == (db.layer, db.resource.as_str(), db.rule.as_deref()),
            );
        }
    }
    Some(true)
}
