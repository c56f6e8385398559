//! Carrying out a [`LabPlan`] in the kernel: namespaces, veth links, addresses, routes, NSG
//! tables, the firewalls' stateful forwarding and the internet's servers — and taking it all
//! away again. The state of a run is written before anything is created, so `down` (also from
//! another process) removes a half-built lab as well as a whole one.

use super::firewall_nft::{network_rules_chain, FIREWALL_LOG_GROUP};
use super::plan::{LabPlan, PlaceKind, DNS_ADDR, ROUTER_ADDR, ROUTER_ADDR6};
use super::LabError;
use crate::apply;
use crate::nflog::{NflogReader, RecordContext};
use crate::nft::Nft;
use crate::render::{render, RenderOptions};
use crate::HostState;
use palisade_policy::addresses::PLATFORM_ADDRESSES;
use palisade_policy::firewall::CompiledFirewall;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Ports the internet's test server listens on (TCP; UDP echo on the same numbers).
pub const SERVER_PORTS: &[u16] = &[80, 443, 8080];

/// A process the lab started (a server), stopped on `down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub netns: String,
    pub pid: u32,
    pub what: String,
}

/// What a run consists of, kept in `<state dir>/lab-<run>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub plan: LabPlan,
    /// The network's files, as given to `lab up`.
    pub network: Vec<String>,
    pub processes: Vec<Process>,
    /// `palisade gateway` in firewall namespaces, with where each writes its flow records.
    #[serde(default)]
    pub gateways: Vec<GatewayRun>,
    /// Where the NSG tables' denials are written as flow records (`palisade logs --data`).
    #[serde(default)]
    pub nsg_log: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRun {
    pub firewall: String,
    pub netns: String,
    pub data: PathBuf,
}

/// The gateway's transparent listener in a firewall namespace.
pub const GATEWAY_PORT: u16 = 15001;
/// The gateway's transparent UDP (TPROXY) listener in a firewall namespace.
pub const GATEWAY_UDP_PORT: u16 = 15002;
/// The mark TPROXY sets and the routing table that delivers marked datagrams locally.
const TPROXY_MARK: u32 = 2;
const TPROXY_TABLE: u32 = 102;

impl LabState {
    pub fn path(state_dir: &Path, run: &str) -> PathBuf {
        state_dir.join(format!("lab-{run}.json"))
    }

    /// The `host` state of each place's applied NSG tables (what names a logged rule's layer and
    /// priority).
    fn host_dir(state_dir: &Path, run: &str) -> PathBuf {
        state_dir.join(format!("lab-{run}.host"))
    }

    pub fn load(state_dir: &Path, run: &str) -> Result<LabState, LabError> {
        let path = Self::path(state_dir, run);
        if !path.exists() {
            return Err(LabError::NotUp {
                run: run.to_string(),
                state: path,
            });
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| LabError::State(path.clone(), e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| LabError::State(path, e.to_string()))
    }

    fn save(&self, state_dir: &Path) -> Result<(), LabError> {
        let path = Self::path(state_dir, &self.plan.run);
        let err = |e: std::io::Error| LabError::State(path.clone(), e.to_string());
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("the state serialises");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// Every run recorded in `state_dir`.
    pub fn all(state_dir: &Path) -> Vec<LabState> {
        let mut out = vec![];
        let Ok(dir) = std::fs::read_dir(state_dir) else {
            return out;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(run) = name
                .strip_prefix("lab-")
                .and_then(|n| n.strip_suffix(".json"))
            {
                if let Ok(s) = LabState::load(state_dir, run) {
                    out.push(s);
                }
            }
        }
        out.sort_by(|a, b| a.plan.run.cmp(&b.plan.run));
        out
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turn SIGINT and SIGTERM into a flag the long steps poll, so that Ctrl-C tears the lab down
/// instead of leaving namespaces behind.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn check_interrupt() -> Result<(), LabError> {
    if interrupted() {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

/// Run a command; its stderr is the error.
pub(crate) fn run(args: &[&str]) -> Result<String, LabError> {
    run_with_input(args, None)
}

fn run_with_input(args: &[&str], input: Option<&str>) -> Result<String, LabError> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::Command(args.join(" "), e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| LabError::Command(args.join(" "), e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::Command(args.join(" "), e.to_string()))?;
    if !out.status.success() {
        return Err(LabError::Command(
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut a = vec!["ip", "netns", "exec", ns];
    a.extend_from_slice(args);
    run(&a)
}

/// The namespaces that exist now.
pub fn live_namespaces() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// The processes `up` starts.
#[derive(Debug, Clone)]
pub struct Servers {
    /// The `palisade` binary (runs the hidden `lab serve` and `gateway`).
    pub exe: PathBuf,
    /// The internet's test servers.
    pub internet: bool,
    /// Start dnsmasq as the DNS server (when it is installed).
    pub dns: bool,
    /// Run `palisade gateway` (transparent, TCP and UDP) in each firewall namespace, with these network
    /// input arguments (`-n FILE`, `--parameters FILE`, ...).
    pub gateway: Option<Vec<String>>,
    /// Record the NSG tables' denials as flow records (`palisade lab log` in the router
    /// namespace; `LabState::nsg_log` says where).
    pub nsg_log: bool,
}

/// Build the lab. On any error — or SIGINT/SIGTERM — everything built so far is removed
/// before the error is returned.
pub fn up(
    snap: &palisade_policy::Snapshot,
    plan: LabPlan,
    network: Vec<String>,
    state_dir: &Path,
    servers: Option<&Servers>,
) -> Result<LabState, LabError> {
    if LabState::path(state_dir, &plan.run).exists() {
        return Err(LabError::AlreadyUp(plan.run.clone()));
    }
    let live = live_namespaces();
    if let Some(ns) = plan.namespaces().iter().find(|n| live.contains(n)) {
        return Err(LabError::Exists(ns.clone()));
    }
    let mut state = LabState {
        plan,
        network,
        processes: vec![],
        gateways: vec![],
        nsg_log: None,
    };
    state.save(state_dir)?;
    match build(snap, &mut state, state_dir, servers) {
        Ok(()) => Ok(state),
        Err(e) => {
            let _ = down(state_dir, &state.plan.run);
            Err(e)
        }
    }
}

fn build(
    snap: &palisade_policy::Snapshot,
    state: &mut LabState,
    state_dir: &Path,
    servers: Option<&Servers>,
) -> Result<(), LabError> {
    let plan = state.plan.clone();
    let v6 = plan.has_ipv6();
    for ns in plan.namespaces() {
        check_interrupt()?;
        run(&["ip", "netns", "add", &ns])?;
        in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        if v6 {
            // Set before the links exist: their addresses are usable at once, not after
            // duplicate address detection.
            in_ns(
                &ns,
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )?;
        }
    }
    let rtr = plan.router.as_str();
    // rp_filter off: the router forwards asymmetric paths on purpose (a reply captured by a
    // route to a firewall must reach the firewall to be judged there).
    for kv in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        in_ns(rtr, &["sysctl", "-qw", kv])?;
    }
    if v6 {
        in_ns(rtr, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    }
    let router_addr = format!("{ROUTER_ADDR}/32");
    let router_ip = ROUTER_ADDR.to_string();
    let router_addr6 = format!("{ROUTER_ADDR6}/64");
    let router_ip6 = ROUTER_ADDR6.to_string();
    let mut router_batch = String::new();
    // IPv6 policy rules: a batch line takes no `-6`, so they go in a batch of their own.
    let mut rules6 = String::new();
    for p in &plan.places {
        check_interrupt()?;
        let ns = p.netns.as_str();
        let link = p.router_link.as_str();
        run(&[
            "ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", link,
            "netns", rtr,
        ])?;
        in_ns(ns, &["ip", "link", "set", "eth0", "up"])?;
        for a in &p.addresses {
            let host = if a.is_ipv6() { 128 } else { 32 };
            in_ns(
                ns,
                &["ip", "addr", "add", &format!("{a}/{host}"), "dev", "eth0"],
            )?;
            router_batch.push_str(&format!("route add {a}/{host} dev {link}\n"));
        }
        in_ns(ns, &["ip", "route", "add", &router_ip, "dev", "eth0"])?;
        in_ns(
            ns,
            &[
                "ip", "route", "add", "default", "via", &router_ip, "dev", "eth0",
            ],
        )?;
        if v6 {
            in_ns(
                ns,
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &router_ip6,
                    "dev",
                    "eth0",
                ],
            )?;
        }
        in_ns(rtr, &["ip", "link", "set", link, "up"])?;
        in_ns(rtr, &["ip", "addr", "add", &router_addr, "dev", link])?;
        if v6 {
            in_ns(rtr, &["ip", "addr", "add", &router_addr6, "dev", link])?;
        }
        if p.kind == PlaceKind::Internet {
            router_batch.push_str(&format!("route add default dev {link}\n"));
            if v6 {
                router_batch.push_str(&format!("route add ::/0 dev {link}\n"));
            }
        }
        if let Some(t) = p
            .subnet
            .as_ref()
            .and_then(|s| plan.tables.iter().find(|t| &t.subnet == s))
        {
            router_batch.push_str(&format!("rule add iif {link} lookup {} pref 100\n", t.id));
            if v6 {
                rules6.push_str(&format!("rule add iif {link} lookup {} pref 100\n", t.id));
            }
        }
    }
    for t in &plan.tables {
        for r in &t.routes {
            router_batch.push_str(&format!("route add {r} table {}\n", t.id));
        }
    }
    router_batch.push_str(&format!(
        "rule add fwmark {PLATFORM_MARK} lookup main pref 50\n"
    ));
    let returns = return_paths(&plan);
    for r in &returns {
        router_batch.push_str(&format!(
            "rule add fwmark {} lookup {} pref 60\nroute add default via {} dev {} onlink table {}\n",
            r.mark, r.mark, r.firewall, r.link, r.mark
        ));
    }
    run_with_input(&["ip", "-n", rtr, "-batch", "-"], Some(&router_batch))?;
    if !rules6.is_empty() {
        run_with_input(&["ip", "-6", "-n", rtr, "-batch", "-"], Some(&rules6))?;
    }
    run_with_input(
        &["ip", "netns", "exec", rtr, "nft", "-f", "-"],
        Some(&platform_rules(&returns)),
    )?;

    for p in &plan.places {
        check_interrupt()?;
        let nft = Nft::new(Some(p.netns.clone()));
        let mut host = HostState {
            version: 1,
            netns: Some(p.netns.clone()),
            ..HostState::default()
        };
        for t in &p.tables {
            let opts = RenderOptions {
                table: Some(t.table.clone()),
                ..RenderOptions::default()
            };
            let table = render(snap, &t.target, &opts)
                .map_err(|e| LabError::Render(p.netns.clone(), e.to_string()))?;
            let (applied, _) = apply::apply(&nft, &table, None)
                .map_err(|e| LabError::Render(p.netns.clone(), e.to_string()))?;
            host.tables.insert(t.table.clone(), applied);
        }
        if !p.tables.is_empty() {
            let dir = LabState::host_dir(state_dir, &plan.run);
            host.save(&dir)
                .map_err(|e| LabError::State(dir.clone(), e.to_string()))?;
        }
        if let PlaceKind::Firewall(name) = &p.kind {
            let gateway = servers.and_then(|s| s.gateway.as_ref().map(|args| (s, args)));
            let judge = match gateway {
                Some(_) => Some(
                    snap.firewall_by_name(name)
                        .map(|id| snap.firewall(id))
                        .ok_or_else(|| {
                            LabError::Render(p.netns.clone(), format!("no firewall `{name}`"))
                        })?,
                ),
                None => None,
            };
            // Towards a second firewall of a chain the client's address is kept, as `trace`
            // keeps it: the last firewall translates.
            let onward = p
                .subnet
                .as_deref()
                .map(|s| plan.appliance_prefixes(s))
                .unwrap_or_default();
            let v6 = p.addresses.iter().any(IpAddr::is_ipv6);
            firewall(&p.netns, judge, &onward, v6)?;
            if let Some((s, args)) = gateway {
                let data = state_dir.join(format!("lab-{}-{}.flows", plan.run, p.netns));
                state.gateways.push(GatewayRun {
                    firewall: name.clone(),
                    netns: p.netns.clone(),
                    data: data.clone(),
                });
                let process = start_gateway(&s.exe, args, name, p, &data, &onward, state_dir)?;
                state.processes.push(process);
                state.save(state_dir)?;
                wait_listening(&p.netns, GATEWAY_PORT, state_dir)?;
            }
        }
    }
    if let Some(servers) = servers.filter(|s| s.nsg_log) {
        start_nsg_log(state, &servers.exe, state_dir)?;
        state.save(state_dir)?;
    }
    if let Some(servers) = servers.filter(|s| s.internet) {
        start_servers(state, servers)?;
        state.save(state_dir)?;
    }
    Ok(())
}

/// Start `palisade lab log` in the router namespace and wait until it reads the NFLOG group of
/// every place with NSG tables, so that no denial after `up` returns is missed.
fn start_nsg_log(state: &mut LabState, exe: &Path, state_dir: &Path) -> Result<(), LabError> {
    let run = state.plan.run.clone();
    let data = state_dir.join(format!("lab-{run}.nsg"));
    state.nsg_log = Some(data);
    state.save(state_dir)?;
    let rtr = state.plan.router.clone();
    let mut args: Vec<String> = ["ip", "netns", "exec", &rtr]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend([
        exe.to_string_lossy().into_owned(),
        "lab".into(),
        "log".into(),
        "--name".into(),
        run,
        "--state".into(),
        std::path::absolute(state_dir)
            .unwrap_or_else(|_| state_dir.to_path_buf())
            .to_string_lossy()
            .into_owned(),
    ]);
    state
        .processes
        .push(spawn(&rtr, "NSG flow records", &mut args)?);
    state.save(state_dir)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for (netns, group) in log_groups(state) {
        // The kernel lists the NFLOG groups a socket is bound to, per namespace.
        while !in_ns(&netns, &["cat", "/proc/net/netfilter/nfnetlink_log"])
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&group.to_string()))
        {
            check_interrupt()?;
            if Instant::now() > deadline {
                return Err(LabError::Command(
                    format!("palisade lab log in {rtr}"),
                    format!("not reading NFLOG group {group} in {netns} after 10 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The NFLOG group the rendered NSG tables log their denials to.
pub const NSG_LOG_GROUP: u16 = 100;

/// Every (namespace, NFLOG group) of a run the kernel logs decisions to: the places with NSG
/// tables, and the firewalls judging what their gateway does not relay.
pub fn log_groups(state: &LabState) -> Vec<(String, u16)> {
    let nsgs = state
        .plan
        .places
        .iter()
        .filter(|p| !p.tables.is_empty())
        .map(|p| (p.netns.clone(), NSG_LOG_GROUP));
    let firewalls = state
        .gateways
        .iter()
        .map(|g| (g.netns.clone(), FIREWALL_LOG_GROUP));
    nsgs.chain(firewalls).collect()
}

/// Read the NSG denials of every place of a running lab, and the decisions its firewalls make
/// in the kernel (ICMP, ...), and write them as flow records to `LabState::nsg_log` until
/// `stop` is set (`palisade lab log`, started by `up`).
pub fn record_nsg_denials(
    state_dir: &Path,
    run: &str,
    stop: &std::sync::Arc<AtomicBool>,
) -> Result<(), LabError> {
    let state = LabState::load(state_dir, run)?;
    let Some(data) = &state.nsg_log else {
        return Err(LabError::State(
            LabState::path(state_dir, run),
            "this lab records no NSG denials (no `nsg_log`)".into(),
        ));
    };
    let log = std::sync::Arc::new(
        palisade_flowlog::FlowLog::open(data, palisade_flowlog::Options::default())
            .map_err(|e| LabError::State(data.clone(), e.to_string()))?,
    );
    let host_dir = LabState::host_dir(state_dir, run);
    let mut workers = vec![];
    for (netns, group) in log_groups(&state) {
        let ctx = if group == NSG_LOG_GROUP {
            let host = HostState::load(&host_dir, Some(&netns))
                .map_err(|e| LabError::State(host_dir.clone(), e.to_string()))?;
            RecordContext::from_state(format!("lab-{run}"), &host)
        } else {
            // Firewall records name their rule and layer in the prefix itself.
            RecordContext {
                instance: format!("lab-{netns}"),
                ..RecordContext::default()
            }
        };
        let mut reader = NflogReader::open(group, Some(&netns)).map_err(|e| {
            LabError::Command(format!("NFLOG group {group} in {netns}"), e.to_string())
        })?;
        let (log, stop) = (log.clone(), stop.clone());
        workers.push((
            netns,
            std::thread::spawn(move || reader.run(&ctx, &stop, |r| log.append(&r))),
        ));
    }
    let mut failed = vec![];
    for (netns, w) in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{netns}: {e}")),
            Err(_) => failed.push(format!("{netns}: the reader panicked")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(LabError::Command("NFLOG".into(), failed.join("; ")))
    }
}

/// `onward`: what the firewall's subnet routes to another firewall; the gateway keeps the
/// client's address towards it, as `trace` does (the last firewall of a chain translates).
fn start_gateway(
    exe: &Path,
    network_args: &[String],
    firewall: &str,
    place: &super::plan::Place,
    data: &Path,
    onward: &[ipnet::IpNet],
    state_dir: &Path,
) -> Result<Process, LabError> {
    let netns = place.netns.as_str();
    let v6 = place.addresses.iter().any(IpAddr::is_ipv6);
    let mut args: Vec<String> = vec![
        "ip".into(),
        "netns".into(),
        "exec".into(),
        netns.into(),
        exe.to_string_lossy().into_owned(),
        "gateway".into(),
    ];
    args.extend(network_args.iter().cloned());
    args.extend(
        [
            "--firewall",
            firewall,
            "--listen",
            "none",
            "--admin",
            "127.0.0.1:9180",
            "--transparent",
            // With IPv6 one dual-stack listener takes both families (IPv4 as mapped addresses).
            &if v6 {
                format!("[::]:{GATEWAY_PORT}")
            } else {
                format!("0.0.0.0:{GATEWAY_PORT}")
            },
            "--transparent-udp",
            &format!("0.0.0.0:{GATEWAY_UDP_PORT}"),
            "--data",
            &data.to_string_lossy(),
            "--instance",
            &format!("lab-{netns}"),
            // Azure's firewall does not check names against addresses (PAL-5); the scenarios'
            // flows are evaluated the same way.
            "--address-check",
            "off",
            "--no-watch",
            "--grace-period",
            "0",
        ]
        .map(String::from),
    );
    if v6 {
        args.push("--transparent-udp".into());
        args.push(format!("[::]:{GATEWAY_UDP_PORT}"));
    }
    for prefix in onward {
        args.push("--keep-source-to".into());
        args.push(prefix.to_string());
    }
    let log = state_dir.join(format!("{netns}.gateway.log"));
    let err =
        std::fs::File::create(&log).map_err(|e| LabError::State(log.clone(), e.to_string()))?;
    let child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| LabError::Command(args.join(" "), e.to_string()))?;
    Ok(Process {
        netns: netns.to_string(),
        pid: child.id(),
        what: format!("gateway ({firewall})"),
    })
}

/// Wait until something listens on `port` in `netns` (the gateway has loaded its network).
fn wait_listening(netns: &str, port: u16, state_dir: &Path) -> Result<(), LabError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let filter = format!("sport = :{port}");
    while Instant::now() < deadline {
        check_interrupt()?;
        let out = in_ns(netns, &["ss", "-ltnH", &filter]).unwrap_or_default();
        if !out.trim().is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = state_dir.join(format!("{netns}.gateway.log"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Err(LabError::Command(
        format!("palisade gateway in {netns}"),
        format!(
            "not listening on :{port} after 20 s; its log: {}",
            text.trim()
        ),
    ))
}

/// Router mark of connections the platform began.
const PLATFORM_MARK: u32 = 1;

/// First router mark (and routing table) of the return paths to firewalls that hand traffic on
/// to another firewall; one per such firewall.
const RETURN_MARK_BASE: u32 = 3000;
/// Connection mark of a connection the router saw begin elsewhere than at such a firewall.
const RETURN_SEEN_MARK: u32 = 2999;

/// The way back to a firewall whose gateway keeps the client's address towards the next
/// firewall (`--keep-source-to`): that next firewall answers the client's address, and the
/// router would deliver the answer to the client directly, past the socket in the first
/// firewall that waits for it. The router marks the connections the firewall begins and sends
/// their replies back to it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReturnPath {
    /// Router mark and routing table.
    mark: u32,
    link: String,
    firewall: IpAddr,
}

/// A return path for every firewall whose subnet routes some destinations to another
/// appliance (it is not the last of its chain).
fn return_paths(plan: &LabPlan) -> Vec<ReturnPath> {
    plan.places
        .iter()
        .filter(|p| matches!(p.kind, PlaceKind::Firewall(_)))
        .filter(|p| {
            p.subnet
                .as_deref()
                .is_some_and(|s| !plan.appliance_prefixes(s).is_empty())
        })
        .filter_map(|p| {
            let firewall = p.addresses.iter().copied().find(|a| a.is_ipv4())?;
            Some((p, firewall))
        })
        .enumerate()
        .map(|(i, (p, firewall))| ReturnPath {
            mark: RETURN_MARK_BASE + i as u32,
            link: p.router_link.clone(),
            firewall,
        })
        .collect()
}

/// Connections the platform's addresses begin (the load balancer's probes, NSG-8) are answered
/// straight back, whatever the subnet's UDRs say (RT-9: their replies are never asymmetric);
/// connections *to* them follow the routes like any other. The router marks the first and
/// looks them up in the main table. Replies to connections a firewall of a chain began go
/// back to it ([`ReturnPath`]).
fn platform_rules(returns: &[ReturnPath]) -> String {
    let addrs: Vec<String> = PLATFORM_ADDRESSES
        .iter()
        .filter(|a| a.is_ipv4())
        .map(|a| a.to_string())
        .collect();
    // A connection is the firewall's when the router first sees it from the firewall's link
    // (its gateway's upstream connection); one the firewall forwards was seen first elsewhere,
    // and its replies keep their routes (RT-9 asymmetry stays observable). A reply coming from
    // the firewall itself goes on by the routes, or it would loop back to the firewall.
    let mut chain = String::new();
    for r in returns {
        chain.push_str(&format!(
            "    ct state new ct mark 0 iifname \"{}\" ct mark set {}\n",
            r.link, r.mark
        ));
    }
    if !returns.is_empty() {
        chain.push_str(&format!(
            "    ct state new ct mark 0 ct mark set {RETURN_SEEN_MARK}\n"
        ));
    }
    for r in returns {
        chain.push_str(&format!(
            "    ct direction reply ct mark {} iifname != \"{}\" meta mark set {}\n",
            r.mark, r.link, r.mark
        ));
    }
    format!(
        "table inet palisade_lab_router {{
  chain prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    ip saddr {{ {} }} ct state new ct mark set {PLATFORM_MARK}
    ct mark {PLATFORM_MARK} meta mark set {PLATFORM_MARK}
{chain}  }}
}}
",
        addrs.join(", ")
    )
}

/// A firewall namespace forwards statefully: it passes what it has seen begin and drops what
/// it has not (a reply whose request took another path, RT-9), and translates the source of
/// what it sends to public addresses to its own address, as Azure Firewall does (FW-8.1), so
/// that replies come back through it — except what its subnet routes to another appliance
/// (`onward`): the last firewall of a chain translates.
///
/// With the gateway, new TCP connections are redirected to its transparent listener (only the
/// first packet of a connection passes the nat hook, so the gateway's own outbound connections
/// and their replies are not looped back), and UDP datagrams passing through are handed to its
/// TPROXY listener (marked, and delivered locally by a policy route); datagrams addressed to
/// the firewall itself — replies to the gateway's own sockets — are not. Every other protocol
/// (ICMP, ...) is forwarded by the kernel and judged there by the firewall's network rules
/// (`firewall_nft.rs`), each decision logged on NFLOG group
/// [`FIREWALL_LOG_GROUP`](super::firewall_nft::FIREWALL_LOG_GROUP).
fn firewall(
    ns: &str,
    gateway: Option<&CompiledFirewall>,
    onward: &[ipnet::IpNet],
    v6: bool,
) -> Result<(), LabError> {
    in_ns(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    if v6 {
        in_ns(ns, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    }
    let redirect = if let Some(fw) = gateway {
        let (mark, table) = (TPROXY_MARK.to_string(), TPROXY_TABLE.to_string());
        let families: &[(&str, &str)] = if v6 {
            &[("-4", "0.0.0.0/0"), ("-6", "::/0")]
        } else {
            &[("-4", "0.0.0.0/0")]
        };
        for (family, all) in families {
            in_ns(
                ns,
                &[
                    "ip", family, "rule", "add", "fwmark", &mark, "lookup", &table,
                ],
            )?;
            in_ns(
                ns,
                &[
                    "ip", family, "route", "add", "local", all, "dev", "lo", "table", &table,
                ],
            )?;
        }
        let tproxy6 = if v6 {
            format!("    iifname \"eth0\" meta nfproto ipv6 meta l4proto udp tproxy ip6 to :{GATEWAY_UDP_PORT} meta mark set {TPROXY_MARK} accept\n")
        } else {
            String::new()
        };
        format!(
            "  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"eth0\" meta l4proto tcp redirect to :{GATEWAY_PORT}
  }}
  chain udp_to_gateway {{
    type filter hook prerouting priority mangle; policy accept;
    fib daddr type local return
    meta l4proto {{ tcp, udp }} socket transparent 1 meta mark set {TPROXY_MARK} accept comment \"a reply to the client's address the gateway kept\"
    iifname \"eth0\" meta nfproto ipv4 meta l4proto udp tproxy ip to :{GATEWAY_UDP_PORT} meta mark set {TPROXY_MARK} accept
{tproxy6}  }}
{}",
            network_rules_chain(fw)
        )
    } else {
        String::new()
    };
    let onward = if onward.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = onward.iter().map(ToString::to_string).collect();
        format!(" ip daddr != {{ {} }}", list.join(", "))
    };
    let rules = format!(
        "table inet palisade_lab_fw {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ct state invalid counter drop comment \"no session: the firewall never saw this connection begin\"
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip daddr != {{ 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 }}{onward} masquerade
  }}
"
    );
    let rules = format!("{rules}{redirect}}}\n");
    run_with_input(&["ip", "netns", "exec", ns, "nft", "-f", "-"], Some(&rules))?;
    Ok(())
}

fn start_servers(state: &mut LabState, servers: &Servers) -> Result<(), LabError> {
    let inet = state.plan.internet().netns.clone();
    let ports: Vec<String> = SERVER_PORTS.iter().map(u16::to_string).collect();
    let exe = servers.exe.to_string_lossy().into_owned();
    let mut args = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        inet.clone(),
        exe,
        "lab".into(),
        "serve".into(),
        // Every address of the internet answers, so that a flow's destination does too.
        "--address".into(),
        "0.0.0.0".into(),
        "--ports".into(),
        ports.join(","),
    ];
    state.processes.push(spawn(&inet, "lab serve", &mut args)?);
    if servers.dns && which("dnsmasq") {
        let mut args: Vec<String> = [
            "ip",
            "netns",
            "exec",
            &inet,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--listen-address={DNS_ADDR}"));
        for (name, addr) in &state.plan.names {
            args.push(format!("--address=/{name}/{addr}"));
        }
        state.processes.push(spawn(&inet, "dnsmasq", &mut args)?);
        for p in &state.plan.places {
            if p.kind != PlaceKind::Internet {
                let dir = Path::new("/etc/netns").join(&p.netns);
                std::fs::create_dir_all(&dir)
                    .and_then(|_| {
                        std::fs::write(dir.join("resolv.conf"), format!("nameserver {DNS_ADDR}\n"))
                    })
                    .map_err(|e| LabError::State(dir.clone(), e.to_string()))?;
            }
        }
    }
    Ok(())
}

fn which(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn spawn(netns: &str, what: &str, args: &mut [String]) -> Result<Process, LabError> {
    let child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| LabError::Command(args.join(" "), e.to_string()))?;
    Ok(Process {
        netns: netns.to_string(),
        pid: child.id(),
        what: what.to_string(),
    })
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removed {
    pub namespaces: Vec<String>,
    pub processes: Vec<u32>,
}

/// Stop the run's processes and delete its namespaces (their links, routes and tables go with
/// them), then its state file.
pub fn down(state_dir: &Path, name: &str) -> Result<Removed, LabError> {
    let state = LabState::load(state_dir, name)?;
    let mut removed = Removed::default();
    for p in &state.processes {
        if stop(p) {
            removed.processes.push(p.pid);
        }
    }
    let live = live_namespaces();
    let mut failed = vec![];
    for ns in state.plan.namespaces() {
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&ns));
        if !live.contains(&ns) {
            continue;
        }
        match run(&["ip", "netns", "del", &ns]) {
            Ok(_) => removed.namespaces.push(ns),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        return Err(LabError::Down(failed.join("; ")));
    }
    for g in &state.gateways {
        let _ = std::fs::remove_dir_all(&g.data);
        let _ = std::fs::remove_file(state_dir.join(format!("{}.gateway.log", g.netns)));
    }
    if let Some(data) = &state.nsg_log {
        let _ = std::fs::remove_dir_all(data);
    }
    let _ = std::fs::remove_dir_all(LabState::host_dir(state_dir, name));
    let path = LabState::path(state_dir, name);
    std::fs::remove_file(&path).map_err(|e| LabError::State(path, e.to_string()))?;
    Ok(removed)
}

/// Is the process still the one the lab started? Its network namespace is the lab's.
fn ours(p: &Process) -> bool {
    let Ok(link) = std::fs::read_link(format!("/proc/{}/ns/net", p.pid)) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata(format!("/var/run/netns/{}", p.netns)) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    link.to_string_lossy() == format!("net:[{}]", meta.ino())
}

/// SIGTERM, then SIGKILL after a second; true if it was running.
fn stop(p: &Process) -> bool {
    if !ours(p) {
        return false;
    }
    let pid = p.pid as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; the pid was checked to be ours above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        // Reap it if it is our own child; otherwise just wait for it to go.
        // SAFETY: waitpid with WNOHANG and a null status pointer.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        std::thread::sleep(Duration::from_millis(20));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // A namespace is deleted next: let the process leave it first.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && ours(p) {
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    true
}

/// A run as `status` shows it: which namespaces and processes are up.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub run: String,
    pub network: Vec<String>,
    pub namespaces_up: Vec<String>,
    pub namespaces_missing: Vec<String>,
    pub processes_up: Vec<Process>,
}

pub fn status(state_dir: &Path) -> Vec<RunStatus> {
    let live = live_namespaces();
    LabState::all(state_dir)
        .into_iter()
        .map(|s| {
            let (up, missing) = s
                .plan
                .namespaces()
                .into_iter()
                .partition(|n| live.contains(n));
            RunStatus {
                run: s.plan.run.clone(),
                network: s.network.clone(),
                namespaces_up: up,
                namespaces_missing: missing,
                processes_up: s.processes.iter().filter(|p| ours(p)).cloned().collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::Snapshot;

    fn snapshot(yaml: &str) -> Snapshot {
        let file = palisade_model::import::import_text("f.yaml", yaml, &Default::default(), None);
        Snapshot::compile(
            &file.network,
            &palisade_model::catalog::Catalogs::embedded(),
            &Default::default(),
        )
    }

    // spec DIAG-7: only a firewall whose subnet routes traffic on to another appliance gets a
    // return path: the router marks the connections it first sees from that firewall and
    // sends their replies back to it, unless they come from the firewall itself.
    #[test]
    fn only_a_firewall_followed_by_another_gets_a_return_path() {
        let chain = snapshot(include_str!("../../tests/fixtures/firewall-chain.yaml"));
        let plan = super::super::plan(&chain, "t", &[]).unwrap();
        let fw1 = plan.place_named("fw1").unwrap();
        let returns = return_paths(&plan);
        assert_eq!(
            returns,
            vec![ReturnPath {
                mark: RETURN_MARK_BASE,
                link: fw1.router_link.clone(),
                firewall: "10.0.1.4".parse().unwrap(),
            }]
        );
        let rules = platform_rules(&returns);
        let link = &fw1.router_link;
        for line in [
            format!("ct state new ct mark 0 iifname \"{link}\" ct mark set 3000"),
            format!("ct state new ct mark 0 ct mark set {RETURN_SEEN_MARK}"),
            format!("ct direction reply ct mark 3000 iifname != \"{link}\" meta mark set 3000"),
        ] {
            assert!(rules.contains(&line), "no `{line}` in\n{rules}");
        }
        let single = snapshot(include_str!("../../tests/fixtures/firewall-icmp.yaml"));
        let plan = super::super::plan(&single, "t", &[]).unwrap();
        assert!(return_paths(&plan).is_empty());
        assert!(!platform_rules(&[]).contains("ct direction reply"));
    }
}
