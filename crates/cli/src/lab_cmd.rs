//! `palisade lab up|down|status|exec|check`: a network built in network namespaces, and real
//! packets compared with `trace`. The work is in `palisade_host::lab`; this file parses, calls
//! and prints.

use crate::{load, NetworkArgs, Output};
use clap::{Args, Subcommand};
use palisade_host::lab::{self, check, net, FlowCase, LabState};
use serde_json::json;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Build the network in namespaces: a namespace per NIC, a router with each subnet's
    /// routes, the firewalls, an internet with test servers and DNS; NSGs enforced.
    Up(UpArgs),
    /// Remove everything a run built (processes, namespaces with their links, routes and tables).
    Down(RunArgs),
    /// List the runs that are up and what each consists of.
    Status(StatusArgs),
    /// Run a command as a workload: `lab exec NIC -- CMD...` (NIC, subnet, firewall or address).
    Exec(ExecArgs),
    /// Build the lab, send real packets for every flow of a flows.yaml, compare with `trace`,
    /// take the lab down. Exit 1 when any flow disagrees.
    Check(CheckArgs),
    /// Print a generated hub-and-spoke network (the benchmark's) in the native format, for
    /// `lab up|check --network FILE`: spokes peered with a hub whose firewall every spoke
    /// routes through, an NSG per spoke, NICs with their own NSGs.
    Generate(GenerateArgs),
    /// The internet's test server (started by `lab up`).
    #[command(hide = true)]
    Serve(ServeArgs),
    /// Write the NSG tables' denials as flow records (started by `lab up`).
    #[command(hide = true)]
    Log(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Run name: prefixes every namespace (`pal-<run>-…`) and link; 1–8 lowercase letters/digits.
    #[arg(long, default_value = "lab")]
    name: String,
    /// Where runs are recorded.
    #[arg(long = "state", value_name = "DIR", default_value = palisade_host::state::DEFAULT_DIR)]
    state: PathBuf,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    net: NetworkArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Flows whose addresses the lab should hold (default: `flows.yaml` beside the network).
    #[arg(long)]
    flows: Option<PathBuf>,
    /// No test servers and no DNS server in the internet.
    #[arg(long)]
    no_servers: bool,
    /// Firewall namespaces forward without `palisade gateway` (stateful, judging nothing).
    #[arg(long)]
    no_gateway: bool,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long = "state", value_name = "DIR", default_value = palisade_host::state::DEFAULT_DIR)]
    state: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
pub struct ExecArgs {
    /// The workload: a NIC name, a subnet (`vnet/subnet` or its name), a firewall, `internet`,
    /// or an address.
    workload: String,
    #[command(flatten)]
    run: RunArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    net: NetworkArgs,
    #[command(flatten)]
    run: RunArgs,
    /// The flows to send (default: `flows.yaml` beside the network).
    #[arg(long, conflicts_with = "random")]
    flows: Option<PathBuf>,
    /// Send N random flows over the network instead: TCP, UDP and ICMP echo, endpoints and
    /// ports drawn from its NICs, subnets and NSG rules.
    #[arg(long, value_name = "N")]
    random: Option<usize>,
    /// Seed of --random: the same network, N and seed give the same flows.
    #[arg(long, default_value_t = 1, requires = "random")]
    seed: u64,
    /// Firewall namespaces forward without `palisade gateway` (stateful, judging nothing).
    #[arg(long)]
    no_gateway: bool,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// The same seed and sizes give the same network.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    spokes: usize,
    /// Rules of each NSG.
    #[arg(long, default_value_t = 8)]
    nsg_rules: usize,
    /// Network rules of the hub's firewall.
    #[arg(long, default_value_t = 24)]
    firewall_rules: usize,
    /// Prefix length of the hub and of each spoke (16 to 29).
    #[arg(long, default_value_t = 29, value_parser = clap::value_parser!(u8).range(16..=29))]
    prefix_len: u8,
    /// A second firewall after the hub's: the hub's firewall subnet routes `0.0.0.0/0` to an
    /// egress firewall whose network rules name the spokes (two firewalls in a row, DIAG-7),
    /// and the hub's firewall lets the spokes reach the documentation ranges (a last network
    /// rule collection), so that traffic gets there.
    #[arg(long)]
    chained_firewall: bool,
}

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long)]
    address: IpAddr,
    #[arg(long, value_delimiter = ',')]
    ports: Vec<u16>,
}

pub fn run(cmd: LabCommand) -> Result<ExitCode, String> {
    match cmd {
        LabCommand::Up(a) => up(a),
        LabCommand::Down(a) => down(a),
        LabCommand::Status(a) => status(a),
        LabCommand::Exec(a) => exec(a),
        LabCommand::Check(a) => check_cmd(a),
        LabCommand::Generate(a) => generate(a),
        LabCommand::Log(a) => nsg_log(a),
        LabCommand::Serve(a) => lab::serve::serve(a.address, &a.ports)
            .map(|_| ExitCode::SUCCESS)
            .map_err(|e| format!("lab serve: {e}")),
    }
}

/// The flows file: the one given, else `flows.yaml` beside the (first) network path.
fn flows_file(net: &NetworkArgs, given: &Option<PathBuf>) -> Option<PathBuf> {
    if let Some(f) = given {
        return Some(f.clone());
    }
    let first = net.source.network.first()?;
    let dir = if first.is_dir() {
        first.as_path()
    } else {
        first.parent().unwrap_or(Path::new("."))
    };
    let f = dir.join("flows.yaml");
    f.exists().then_some(f)
}

fn read_flows(net: &NetworkArgs, given: &Option<PathBuf>) -> Result<Vec<FlowCase>, String> {
    match flows_file(net, given) {
        Some(f) => check::load_flows(&f).map_err(|e| e.to_string()),
        None => Ok(vec![]),
    }
}

fn up(a: UpArgs) -> Result<ExitCode, String> {
    let snap = load::load_for_evaluation(&a.net)?.snapshot;
    let flows = read_flows(&a.net, &a.flows)?;
    let mut plan =
        lab::plan(&snap, &a.run.name, &check::addresses(&flows)).map_err(|e| e.to_string())?;
    // The flows' names resolve to the addresses they were dialled at, so `curl http://NAME`
    // from a workload goes where the flow went.
    for f in &flows {
        if let (Some(h), IpAddr::V4(d)) = (&f.host, f.destination) {
            plan.names.entry(h.clone()).or_insert(d);
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("where is this program: {e}"))?;
    let servers = lab::Servers {
        exe,
        internet: !a.no_servers,
        dns: !a.no_servers,
        gateway: (!a.no_gateway).then(|| gateway_args(&a.net)),
        nsg_log: true,
    };
    net::catch_interrupts();
    let network = a
        .net
        .source
        .network
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let state = crate::progress::spin(format!("bringing up lab {}", a.run.name), || {
        lab::up(&snap, plan, network, &a.run.state, Some(&servers))
    })
    .map_err(|e| e.to_string())?;
    if a.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&state).expect("state serialises")
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "lab `{}` is up (router {})",
        state.plan.run, state.plan.router
    );
    for p in &state.plan.places {
        let addrs: Vec<String> = p.addresses.iter().map(|a| a.to_string()).collect();
        let tables: Vec<&str> = p.tables.iter().map(|t| t.table.as_str()).collect();
        println!(
            "  {:<28} {:<18} {}{}",
            place_label(&p.kind),
            p.netns,
            addrs.join(" "),
            if tables.is_empty() {
                String::new()
            } else {
                format!("  [{}]", tables.join(", "))
            }
        );
    }
    for n in &state.plan.notes {
        println!("  note: {n}");
    }
    for p in &state.processes {
        println!("  {} (pid {}) in {}", p.what, p.pid, p.netns);
    }
    if let Some(data) = &state.nsg_log {
        println!(
            "NSG denials: palisade logs --data {}",
            std::path::absolute(data)
                .unwrap_or_else(|_| data.clone())
                .display()
        );
    }
    println!(
        "try: palisade lab exec --name {} {} -- curl -s http://lab.test/",
        state.plan.run,
        state
            .plan
            .places
            .iter()
            .find(|p| matches!(p.kind, lab::PlaceKind::Nic(_) | lab::PlaceKind::Subnet(_)))
            .map(|p| p.addresses[0].to_string())
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// The network input flags again, for `palisade gateway` in a firewall namespace (absolute
/// paths: the gateway may run from another directory).
fn gateway_args(net: &NetworkArgs) -> Vec<String> {
    let abs = |p: &PathBuf| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string()
    };
    let src = &net.source;
    let mut out = vec![];
    for n in &src.network {
        out.extend(["--network".to_string(), abs(n)]);
    }
    for (flag, value) in [
        ("--parameters", &src.parameters),
        ("--service-tags", &src.service_tags),
        ("--fqdn-tags", &src.fqdn_tags),
        ("--hosts-file", &src.hosts_file),
    ] {
        if let Some(v) = value {
            out.extend([flag.to_string(), abs(v)]);
        }
    }
    for r in &src.resolve {
        out.extend(["--resolve".to_string(), r.clone()]);
    }
    if src.strict {
        out.push("--strict".into());
    }
    out
}

fn place_label(k: &lab::PlaceKind) -> String {
    match k {
        lab::PlaceKind::Nic(n) | lab::PlaceKind::Subnet(n) | lab::PlaceKind::Firewall(n) => {
            n.clone()
        }
        lab::PlaceKind::Internet => "internet".into(),
    }
}

fn down(a: RunArgs) -> Result<ExitCode, String> {
    let removed = lab::down(&a.state, &a.name).map_err(|e| e.to_string())?;
    println!(
        "lab `{}` is down: {} namespace(s), {} process(es) removed",
        a.name,
        removed.namespaces.len(),
        removed.processes.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn status(a: StatusArgs) -> Result<ExitCode, String> {
    let runs = lab::status(&a.state);
    if a.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).expect("status serialises")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no lab is up");
    }
    for r in runs {
        println!(
            "{}: {} ({} namespace(s) up, {} missing, {} process(es))",
            r.run,
            r.network.join(" "),
            r.namespaces_up.len(),
            r.namespaces_missing.len(),
            r.processes_up.len()
        );
        for n in &r.namespaces_missing {
            println!("  missing: {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exec(a: ExecArgs) -> Result<ExitCode, String> {
    let state = LabState::load(&a.run.state, &a.run.name).map_err(|e| e.to_string())?;
    let place = state.plan.place_named(&a.workload).ok_or_else(|| {
        format!(
            "lab `{}` has no workload `{}`; expected a NIC, subnet, firewall, `internet` or an address of the lab",
            a.run.name, a.workload
        )
    })?;
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &place.netns])
        .args(&a.command)
        .status()
        .map_err(|e| format!("ip netns exec {}: {e}", place.netns))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn check_cmd(a: CheckArgs) -> Result<ExitCode, String> {
    let snap = load::load_for_evaluation(&a.net)?.snapshot;
    let flows = match a.random {
        Some(n) => lab::random::flows(&snap, n, a.seed),
        None => {
            let file = flows_file(&a.net, &a.flows).ok_or(
                "no flows: give --flows FILE or --random N (no flows.yaml beside the network)",
            )?;
            check::load_flows(&file).map_err(|e| e.to_string())?
        }
    };
    let plan =
        lab::plan(&snap, &a.run.name, &check::addresses(&flows)).map_err(|e| e.to_string())?;
    net::catch_interrupts();
    let network = a
        .net
        .source
        .network
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let exe = std::env::current_exe().map_err(|e| format!("where is this program: {e}"))?;
    let servers = lab::Servers {
        exe,
        internet: false,
        dns: false,
        gateway: (!a.no_gateway).then(|| gateway_args(&a.net)),
        // `check` reads the NFLOG groups itself.
        nsg_log: false,
    };
    let state = crate::progress::spin(format!("bringing up lab {}", a.run.name), || {
        lab::up(&snap, plan, network, &a.run.state, Some(&servers))
    })
    .map_err(|e| e.to_string())?;
    let steps = crate::progress::Steps::new(flows.len(), "sending flows");
    let result = check::check_with_progress(&snap, &state, &flows, &mut |n| steps.set(n));
    drop(steps);
    let removed = lab::down(&a.run.state, &a.run.name);
    let report = result.map_err(|e| e.to_string())?;
    removed.map_err(|e| e.to_string())?;
    if a.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        println!(
            "{} flow(s): {} agree, {} disagree",
            report.total,
            report.agree,
            report.disagree.len()
        );
        for d in &report.disagree {
            println!(
                "  {}: trace {:?} ({}), observed {}",
                d.flow,
                d.trace_verdict,
                d.trace_rule.as_deref().unwrap_or("-"),
                json!(d.observed)
            );
        }
    }
    Ok(if report.disagree.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn generate(a: GenerateArgs) -> Result<ExitCode, String> {
    let g = palisade_analyze::gen::HubSpoke {
        spokes: a.spokes,
        nsg_rules: a.nsg_rules,
        firewall_rules: a.firewall_rules,
        prefix_len: a.prefix_len,
        seed: a.seed,
        ..palisade_analyze::gen::HubSpoke::small(a.seed)
    };
    let mut network = palisade_analyze::gen::native(&g.build())?;
    if a.chained_firewall {
        chain_egress_firewall(&mut network, &g);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&network).expect("a JSON value serialises")
    );
    Ok(ExitCode::SUCCESS)
}

/// The egress firewall's address space, subnet and address (`lab generate --chained-firewall`).
const EGRESS_SPACE: &str = "10.254.0.0/29";
const EGRESS_FIREWALL: &str = "10.254.0.4";

/// Add an egress firewall behind the hub's: a subnet of the hub (its address space grows by
/// [`EGRESS_SPACE`]), the hub firewall subnet's `0.0.0.0/0` route to it, and network rules by
/// spoke — the odd spokes' HTTPS denied, everything else of the spokes allowed, the rest (the
/// hub's addresses: the first firewall's, were it to translate) left to its default deny — so
/// its verdicts depend on seeing the client's address. The hub's firewall gets a last network
/// rule collection letting the spokes reach the documentation ranges the random flows use.
fn chain_egress_firewall(network: &mut serde_json::Value, g: &palisade_analyze::gen::HubSpoke) {
    use serde_json::json;
    let hub_space = g.hub().to_string();
    for vnet in network["virtualNetworks"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if vnet["name"] == "hub" {
            if let Some(space) = vnet["addressSpace"].as_array_mut() {
                space.push(json!(EGRESS_SPACE));
            }
            for s in vnet["subnets"].as_array_mut().into_iter().flatten() {
                if s["name"] == "AzureFirewallSubnet" {
                    s["routeTable"] = json!("rt-hub-firewall");
                }
            }
            if let Some(subnets) = vnet["subnets"].as_array_mut() {
                subnets.push(json!({
                    "name": "egress-firewall",
                    "addressPrefixes": [EGRESS_SPACE],
                    "serviceEndpoints": [],
                }));
            }
        }
        // The spokes' peerings with the hub see its whole address space.
        for p in vnet["virtualNetworkPeerings"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let prefixes = &mut p["remoteAddressSpace"]["addressPrefixes"];
            if prefixes
                .as_array()
                .is_some_and(|a| a.contains(&json!(hub_space)))
            {
                if let Some(a) = prefixes.as_array_mut() {
                    a.push(json!(EGRESS_SPACE));
                }
            }
        }
    }
    if let Some(tables) = network["routeTables"].as_array_mut() {
        tables.push(json!({
            "name": "rt-hub-firewall",
            "disableBgpRoutePropagation": false,
            "routes": [{
                "name": "default-to-egress-firewall",
                "addressPrefix": "0.0.0.0/0",
                "nextHopType": "VirtualAppliance",
                "nextHopIpAddress": EGRESS_FIREWALL,
            }],
        }));
    }
    let spokes = |only_odd: bool| -> Vec<String> {
        (0..g.spokes)
            .filter(|i| !only_odd || i % 2 == 1)
            .map(|i| g.spoke(i).to_string())
            .collect()
    };
    let mut collections = vec![];
    if !spokes(true).is_empty() {
        collections.push(json!({
            "name": "egress-deny",
            "priority": 100,
            "action": {"type": "Deny"},
            "rules": [{"name": "no-https-odd-spokes", "protocols": ["TCP"],
                       "sourceAddresses": spokes(true), "destinationAddresses": ["*"],
                       "destinationPorts": ["443"]}],
        }));
    }
    collections.push(json!({
        "name": "egress-allow",
        "priority": 200,
        "action": {"type": "Allow"},
        "rules": [{"name": "spokes", "protocols": ["Any"],
                   "sourceAddresses": spokes(false), "destinationAddresses": ["*"],
                   "destinationPorts": ["*"]}],
    }));
    if let Some(firewalls) = network["azureFirewalls"].as_array_mut() {
        for fw in firewalls.iter_mut() {
            if let Some(c) = fw["networkRuleCollections"].as_array_mut() {
                c.push(json!({
                    "name": "spokes-to-egress",
                    "priority": 65000,
                    "action": {"type": "Allow"},
                    "rules": [{"name": "documentation-ranges", "protocols": ["Any"],
                               "sourceAddresses": spokes(false),
                               "destinationAddresses": ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"],
                               "destinationPorts": ["*"]}],
                }));
            }
        }
        firewalls.push(json!({
            "name": "egress-fw",
            "ipConfigurations": [{"name": "ipconfig0", "privateIPAddress": EGRESS_FIREWALL,
                                  "subnet": "hub/egress-firewall"}],
            "natRuleCollections": [],
            "networkRuleCollections": collections,
            "applicationRuleCollections": [],
        }));
    }
}

fn nsg_log(a: RunArgs) -> Result<ExitCode, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    net::catch_interrupts();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        while !net::interrupted() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        flag.store(true, Ordering::Relaxed);
    });
    net::record_nsg_denials(&a.state, &a.name, &stop).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
