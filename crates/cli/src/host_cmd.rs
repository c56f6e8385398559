//! `palisade host plan|apply|diff|remove`: a subnet's or NIC's NSG as one nftables table and its
//! user routes through netlink, on this host (or in a named network namespace). The work is in
//! `palisade-host`; this file parses, calls and prints.

use crate::{load, NetworkArgs, Output};
use clap::{Args, Subcommand};
use palisade_host::apply::{self, ApplyReport, TableDiff};
use palisade_host::render::{render, HookMode, RenderOptions, TablePlan, Target};
use palisade_host::routes::{self, OwnedRoute, RoutePlan};
use palisade_host::{HostState, Nft};
use palisade_policy::Snapshot;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum HostCommand {
    /// Print the nftables table and the routes `apply` would install (changes nothing).
    Plan(TargetArgs),
    /// Apply the table (one atomic transaction; incremental when only sets or chains changed)
    /// and the routes; record what Palisade owns. Idempotent.
    Apply(TargetArgs),
    /// Compare the kernel's live table and routes with the model: rules, set elements,
    /// counters, routes. Exit code 1 when they differ.
    Diff(TargetArgs),
    /// Remove exactly what `apply` recorded: its tables and its routes.
    Remove(RemoveArgs),
}

#[derive(Args)]
pub struct TargetArgs {
    #[command(flatten)]
    net: NetworkArgs,
    /// Enforce the NSG of this subnet (inbound = to its prefixes, outbound = from them).
    #[arg(long, conflicts_with = "nic", required_unless_present = "nic")]
    subnet: Option<String>,
    /// Enforce the NSG of this NIC (inbound = to its addresses, outbound = from them).
    #[arg(long)]
    nic: Option<String>,
    /// Hook `forward` (a router for the target) instead of `input`/`output` (the target itself).
    #[arg(long)]
    router: bool,
    /// Table name (default `palisade_<nsg>`).
    #[arg(long)]
    table: Option<String>,
    /// NFLOG group of deny and audit records.
    #[arg(long, default_value_t = 100)]
    log_group: u16,
    /// Leave routes alone (NSG table only).
    #[arg(long)]
    no_routes: bool,
    #[command(flatten)]
    place: PlaceArgs,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
pub struct PlaceArgs {
    /// Where Palisade records what it owns.
    #[arg(long = "state", value_name = "DIR", default_value = palisade_host::state::DEFAULT_DIR)]
    state: PathBuf,
    /// Work inside this named network namespace (`ip netns`) instead of the host's own.
    #[arg(long)]
    netns: Option<String>,
}

#[derive(Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    place: PlaceArgs,
    /// Remove only this table (default: every table and route recorded).
    #[arg(long)]
    table: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

pub fn run(cmd: HostCommand) -> Result<ExitCode, String> {
    match cmd {
        HostCommand::Plan(a) => plan(a),
        HostCommand::Apply(a) => apply_cmd(a),
        HostCommand::Diff(a) => diff_cmd(a),
        HostCommand::Remove(a) => remove(a),
    }
}

struct Planned {
    table: TablePlan,
    routes: Vec<RoutePlan>,
    route_notes: Vec<String>,
    label: String,
}

fn make_plan(a: &TargetArgs) -> Result<Planned, String> {
    let snap: Snapshot = load::load_for_evaluation(&a.net)?.snapshot;
    let target = match (&a.subnet, &a.nic) {
        (Some(s), _) => Target::Subnet(s.clone()),
        (None, Some(n)) => Target::Nic(n.clone()),
        (None, None) => return Err("give --subnet NAME or --nic NAME".into()),
    };
    let opts = RenderOptions {
        hook: if a.router {
            HookMode::Router
        } else {
            HookMode::Host
        },
        log_group: a.log_group,
        table: a.table.clone(),
        ..Default::default()
    };
    let table = render(&snap, &target, &opts).map_err(|e| e.to_string())?;
    let subnet = match &target {
        Target::Subnet(s) => snap.subnet_by_name(s),
        Target::Nic(n) => snap.nic_by_name(n).and_then(|i| snap.nics[i].subnet),
    };
    let (routes, route_notes) = match subnet {
        Some(i) if !a.no_routes => routes::plan_routes(&snap, i),
        _ => (vec![], vec![]),
    };
    let label = match &target {
        Target::Subnet(s) => format!("subnet {s}"),
        Target::Nic(n) => format!("nic {n}"),
    };
    Ok(Planned {
        table,
        routes,
        route_notes,
        label,
    })
}

fn route_text(r: &RoutePlan) -> String {
    match &r.action {
        routes::RouteAction::Via(ip) => format!("{} via {ip}  # {}", r.prefix, r.from),
        routes::RouteAction::Blackhole => format!("blackhole {}  # {}", r.prefix, r.from),
        routes::RouteAction::Internet => {
            format!("{} via <default gateway>  # {}", r.prefix, r.from)
        }
    }
}

fn plan(a: TargetArgs) -> Result<ExitCode, String> {
    let p = make_plan(&a)?;
    if a.output == Output::Json {
        let doc = json!({
            "target": p.label,
            "table": p.table,
            "nft": {"nftables": p.table.replace_commands()},
            "routes": p.routes,
            "notes": p.table.notes.iter().chain(&p.route_notes).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "# {}: NSG {} as nftables table inet {}",
        p.label, p.table.nsg, p.table.table
    );
    print!("{}", p.table.to_text());
    println!("\n# routes (main table, proto {})", routes::PROTO);
    if p.routes.is_empty() {
        println!("# (none)");
    }
    for r in &p.routes {
        println!("{}", route_text(r));
    }
    for n in p.table.notes.iter().chain(&p.route_notes) {
        println!("# note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn preflight(nft: &Nft) -> Result<(), String> {
    nft.available()
        .map_err(|e| format!("nft is not usable here (installed? root?): {e}"))
}

fn apply_cmd(a: TargetArgs) -> Result<ExitCode, String> {
    let p = make_plan(&a)?;
    let netns = a.place.netns.clone();
    let nft = Nft::new(netns.clone());
    preflight(&nft)?;
    let mut state = HostState::load(&a.place.state, netns.as_deref())?;
    let prev = state.tables.get(&p.table.table).cloned();
    let (ts, report) = apply::apply(&nft, &p.table, prev.as_ref()).map_err(|e| e.to_string())?;
    state.tables.insert(p.table.table.clone(), ts);
    state.save(&a.place.state)?;
    let mut owned_routes: Vec<OwnedRoute> = vec![];
    let mut route_error = None;
    if !a.no_routes {
        let before = state.routes.get(&p.label).cloned().unwrap_or_default();
        match routes::apply_routes(netns.as_deref(), &p.routes, &before) {
            Ok(now) => {
                owned_routes = now.clone();
                state.routes.insert(p.label.clone(), now);
                state.save(&a.place.state)?;
            }
            Err(e) => route_error = Some(e.to_string()),
        }
    }
    print_report(&report, &owned_routes, a.output)?;
    match route_error {
        Some(e) => Err(format!("the table was applied, the routes were not: {e}")),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn print_report(r: &ApplyReport, routes: &[OwnedRoute], output: Output) -> Result<(), String> {
    if output == Output::Json {
        let doc = json!({"table": r, "routes": routes});
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "table inet {}: {:?}{} ({} command(s))",
        r.table,
        r.mode,
        r.reason
            .as_ref()
            .map(|x| format!(" — {x}"))
            .unwrap_or_default(),
        r.commands
    );
    if !r.chains_rewritten.is_empty() {
        println!("  chains written: {}", r.chains_rewritten.join(", "));
    }
    if !r.sets_changed.is_empty() {
        println!(
            "  sets changed: {} (+{} / -{} elements)",
            r.sets_changed.len(),
            r.elements_added,
            r.elements_removed
        );
    }
    for o in routes {
        println!(
            "  route {} {}  # {}",
            o.prefix,
            if o.blackhole {
                "blackhole".to_string()
            } else {
                format!(
                    "via {}",
                    o.gateway.map(|g| g.to_string()).unwrap_or_default()
                )
            },
            o.from
        );
    }
    Ok(())
}

fn diff_cmd(a: TargetArgs) -> Result<ExitCode, String> {
    let p = make_plan(&a)?;
    let netns = a.place.netns.clone();
    let nft = Nft::new(netns.clone());
    preflight(&nft)?;
    let state = HostState::load(&a.place.state, netns.as_deref())?;
    let d =
        apply::diff(&nft, &p.table, state.tables.get(&p.table.table)).map_err(|e| e.to_string())?;
    // Routes: planned (as recorded at apply) vs Palisade-owned routes in the kernel.
    let mut route_missing = vec![];
    let mut route_extra = vec![];
    if !a.no_routes {
        let live = routes::live_routes(netns.as_deref()).map_err(|e| e.to_string())?;
        let owned = state.routes.get(&p.label).cloned().unwrap_or_default();
        for r in &p.routes {
            if !live.iter().any(|l| l.prefix == r.prefix) {
                route_missing.push(route_text(r));
            }
        }
        for l in &live {
            if owned.iter().any(|o| o.prefix == l.prefix)
                && !p.routes.iter().any(|r| r.prefix == l.prefix)
            {
                route_extra.push(l.prefix.to_string());
            }
        }
    }
    let clean = d.is_clean() && route_missing.is_empty() && route_extra.is_empty();
    if a.output == Output::Json {
        let doc = json!({"clean": clean, "table": d, "routes": {"missing": route_missing, "extra": route_extra}});
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
    } else {
        print_diff(&d);
        for r in &route_missing {
            println!("  route missing: {r}");
        }
        for r in &route_extra {
            println!("  route no longer in the model: {r}");
        }
        if clean {
            println!("no differences");
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_diff(d: &TableDiff) {
    println!("table inet {}", d.table);
    if !d.present {
        println!("  missing from the kernel");
        return;
    }
    let list = |label: &str, v: &[String]| {
        if !v.is_empty() {
            println!("  {label}: {}", v.join(", "));
        }
    };
    list("sets missing", &d.missing_sets);
    list("sets not in the model", &d.extra_sets);
    for s in &d.set_elements {
        println!(
            "  set {}: {} element(s) missing, {} not in the model",
            s.set,
            s.missing.len(),
            s.extra.len()
        );
        for m in s.missing.iter().take(20) {
            println!("    - {m}");
        }
        for m in s.extra.iter().take(20) {
            println!("    + {m}");
        }
    }
    list("chains missing", &d.missing_chains);
    list("chains not in the model", &d.extra_chains);
    list("rules changed in the kernel (drift)", &d.rules_drifted);
    list(
        "rules changed in the model since apply",
        &d.rules_model_changed,
    );
    list("counters missing", &d.missing_counters);
    list("counters not in the model", &d.extra_counters);
    for n in &d.notes {
        println!("  note: {n}");
    }
    let hits: Vec<String> = d
        .counters
        .iter()
        .filter(|c| c.packets > 0)
        .map(|c| format!("{}={}p/{}B", c.name, c.packets, c.bytes))
        .collect();
    if !hits.is_empty() {
        println!("  counters: {}", hits.join(" "));
    }
}

fn remove(a: RemoveArgs) -> Result<ExitCode, String> {
    let netns = a.place.netns.clone();
    let nft = Nft::new(netns.clone());
    preflight(&nft)?;
    let mut state = HostState::load(&a.place.state, netns.as_deref())?;
    let tables: Vec<String> = state
        .tables
        .keys()
        .filter(|t| a.table.as_ref().is_none_or(|x| x == *t))
        .cloned()
        .collect();
    let mut removed = vec![];
    for t in &tables {
        apply::remove_table(&nft, t).map_err(|e| e.to_string())?;
        state.tables.remove(t);
        removed.push(t.clone());
        state.save(&a.place.state)?;
    }
    let mut routes_removed = 0;
    if a.table.is_none() {
        let all: Vec<OwnedRoute> = state.routes.values().flatten().cloned().collect();
        routes_removed =
            routes::remove_routes(netns.as_deref(), &all).map_err(|e| e.to_string())?;
        state.routes.clear();
        state.save(&a.place.state)?;
    }
    if a.output == Output::Json {
        println!("{}", json!({"tables": removed, "routes": routes_removed}));
    } else {
        println!(
            "removed {} table(s){} and {routes_removed} route(s)",
            removed.len(),
            if removed.is_empty() {
                String::new()
            } else {
                format!(" ({})", removed.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
