//! `palisade host plan|apply|diff|remove|log`: a subnet's or NIC's NSG as one nftables table and its
//! user routes through netlink, on this host (or in a named network namespace). The work is in
//! `palisade-host`; this file parses, calls and prints.

use crate::{load, NetworkArgs, Output};
use clap::{Args, Subcommand};
use palisade_host::apply::{ApplyReport, TableDiff};
use palisade_host::ops::{self, Place, Plan};
use palisade_host::render::{HookMode, Layout, RenderOptions, Target};
use palisade_host::routes::{self, OwnedRoute, RoutePlan};
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
    /// Read the kernel's NFLOG denials (and audit matches) of the applied tables and write them
    /// as flow records (`palisade logs`), until SIGINT or SIGTERM.
    Log(LogArgs),
}

#[derive(Args)]
pub struct LogArgs {
    /// NFLOG group the tables log to (`apply --log-group`).
    #[arg(long, default_value_t = 100)]
    group: u16,
    /// Flow log directory (as `palisade logs --data`).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Instance name written into flow records (default: hostname:pid).
    #[arg(long)]
    instance: Option<String>,
    #[command(flatten)]
    place: PlaceArgs,
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
    /// Drop packets whose source is not routed back out of their input interface (strict
    /// reverse-path filter, `prerouting`). Default: on with --router, off otherwise.
    #[arg(long, conflicts_with = "no_rpfilter")]
    rpfilter: bool,
    /// No reverse-path filter, also with --router.
    #[arg(long)]
    no_rpfilter: bool,
    /// Leave routes alone (NSG table only).
    #[arg(long)]
    no_routes: bool,
    /// `classified`: large NSG chains split by address behind a verdict map, so a new
    /// connection walks only the rules that can match it; `listed`: one chain, every rule.
    #[arg(long, default_value = "classified", value_name = "listed|classified")]
    layout: Layout,
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
        HostCommand::Log(a) => log_cmd(a),
    }
}

fn make_plan(a: &TargetArgs) -> Result<Plan, String> {
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
        // A router forwards for others, so it is where spoofed sources arrive.
        rpfilter: a.rpfilter || (a.router && !a.no_rpfilter),
        layout: a.layout,
        ..Default::default()
    };
    ops::plan(&snap, &target, &opts, !a.no_routes).map_err(|e| e.to_string())
}

fn place(p: &PlaceArgs) -> Place {
    Place {
        state_dir: p.state.clone(),
        netns: p.netns.clone(),
    }
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
            "nft_text": p.table.replace_text(),
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

fn apply_cmd(a: TargetArgs) -> Result<ExitCode, String> {
    let p = make_plan(&a)?;
    let applied = ops::apply_owned(p, &place(&a.place)).map_err(|e| e.to_string())?;
    print_report(&applied.table, &applied.routes, a.output)?;
    Ok(ExitCode::SUCCESS)
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
    if let Some(why) = &r.netlink_fallback {
        println!("  through nft, not netlink: {why}");
    }
    if !r.chains_rewritten.is_empty() {
        println!(
            "  chains changed: {} (-{} / +{} rules)",
            r.chains_rewritten.join(", "),
            r.rules_removed,
            r.rules_added
        );
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
    let drift = ops::diff(&p, &place(&a.place)).map_err(|e| e.to_string())?;
    let clean = drift.is_clean();
    if a.output == Output::Json {
        let routes = &drift.routes;
        let doc = json!({
            "clean": clean,
            "table": drift.table,
            "routes": {
                "missing": routes.missing.iter().map(route_text).collect::<Vec<_>>(),
                "changed": routes.changed.iter().map(|c| json!({
                    "planned": route_text(&c.planned),
                    "live": owned_text(&c.live),
                })).collect::<Vec<_>>(),
                "extra": routes.extra.iter().map(|l| l.prefix.to_string()).collect::<Vec<_>>(),
            },
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        );
    } else {
        print_diff(&drift.table);
        for r in &drift.routes.missing {
            println!("  route missing: {}", route_text(r));
        }
        for c in &drift.routes.changed {
            println!(
                "  route changed in the kernel: {} is now {}",
                route_text(&c.planned),
                owned_text(&c.live)
            );
        }
        for r in &drift.routes.extra {
            println!("  route no longer in the model: {}", r.prefix);
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

fn owned_text(o: &OwnedRoute) -> String {
    if o.blackhole {
        format!("blackhole {}", o.prefix)
    } else {
        format!(
            "{} via {}",
            o.prefix,
            o.gateway.map(|g| g.to_string()).unwrap_or_default()
        )
    }
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
    let ops::Removed {
        tables: removed,
        routes: routes_removed,
    } = ops::remove(&place(&a.place), a.table.as_deref()).map_err(|e| e.to_string())?;
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

fn log_cmd(a: LogArgs) -> Result<ExitCode, String> {
    use palisade_host::nflog::{NflogReader, RecordContext};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // The state names each table's target and rule priorities; a missing state still logs.
    let state = palisade_host::HostState::load(&a.place.state, a.place.netns.as_deref())
        .map_err(|e| e.to_string())?;
    let instance = a
        .instance
        .unwrap_or_else(palisade_gateway::default_instance);
    let ctx = RecordContext::from_state(instance, &state);
    let log = palisade_flowlog::FlowLog::open(&a.data, palisade_flowlog::Options::default())
        .map_err(|e| format!("{}: {e}", a.data.display()))?;
    let mut reader = NflogReader::open(a.group, a.place.netns.as_deref())
        .map_err(|e| format!("NFLOG group {}: {e}", a.group))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let worker = std::thread::spawn(move || reader.run(&ctx, &flag, |r| log.append(&r)));
    eprintln!(
        "reading NFLOG group {} into {} (SIGINT/SIGTERM stops)",
        a.group,
        a.data.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut watch = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                // The reader stops by itself only on an error: report it instead of waiting.
                _ = watch.tick() => if worker.is_finished() { break },
            }
        }
        Ok::<(), String>(())
    })?;
    stop.store(true, Ordering::Relaxed);
    worker
        .join()
        .map_err(|_| "NFLOG reader panicked".to_string())?
        .map_err(|e| format!("NFLOG reader: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
