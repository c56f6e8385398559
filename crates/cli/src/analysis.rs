//! `palisade deps check`, `palisade analyze asymmetric|reachability`, `palisade lint`,
//! `palisade diff`: argument handling and presentation of the network-wide analyses in
//! `palisade-analyze`.

use crate::load;
use crate::{NetworkArgs, Output, SourceArgs};
use clap::Subcommand;
use palisade_analyze::reach::{self, Engine};
use palisade_analyze::{asymmetric, azure_check, deps, diff as semdiff, lint};
use palisade_model::catalog::DependencyCatalog;
use palisade_policy::Snapshot;
use palisade_server::present;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DepsCommand {
    /// Is every outbound dependency of a workload allowed, and by what (DIAG-8)?
    Check {
        #[command(flatten)]
        net: NetworkArgs,
        /// A dependency list in the OutboundNetworkDependenciesEndpoints shape.
        #[arg(long)]
        catalog: PathBuf,
        /// The workload: a subnet name (its first usable address is used) or an address.
        #[arg(long)]
        from: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum AnalyzeCommand {
    /// Inbound paths whose replies leave through a device that never saw the request (DIAG-9).
    Asymmetric {
        #[command(flatten)]
        net: NetworkArgs,
        /// A dependency list whose `via: Route` entries are declared inbound sources.
        #[arg(long)]
        catalog: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Which sources reach which destinations on which protocols and ports, as exact sets, with
    /// the deciding rules; both directions (header spaces, not sampling).
    Reachability {
        #[command(flatten)]
        net: NetworkArgs,
        /// Sources: subnet names (`vnet/subnet` or `subnet`), NIC names, addresses or prefixes,
        /// `Internet` (public addresses outside every virtual network), comma-separated.
        #[arg(long)]
        from: Option<String>,
        /// Destinations, same forms.
        #[arg(long)]
        to: Option<String>,
        /// Also list denied and dropped flows.
        #[arg(long)]
        all: bool,
        /// Only which subnets reach which (one line per subnet pair with some flow allowed,
        /// and the services allowed between them).
        #[arg(long, conflicts_with_all = ["from", "to", "all"])]
        summary: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

/// `palisade diff OLD NEW`: flows whose verdict changes between two versions of a network.
#[derive(clap::Args)]
pub struct DiffArgs {
    /// The old version: a file or folder.
    pub old: PathBuf,
    /// The new version: a file or folder.
    pub new: PathBuf,
    /// Parameter values for the templates of both versions.
    #[arg(long)]
    pub parameters: Option<PathBuf>,
    /// Parameter values for the new version only (default: --parameters).
    #[arg(long)]
    pub new_parameters: Option<PathBuf>,
    #[arg(long)]
    pub service_tags: Option<PathBuf>,
    #[arg(long)]
    pub fqdn_tags: Option<PathBuf>,
    /// Evaluate even when the input has errors: rules whose values do not parse are left out and
    /// listed (the result may allow more than the configuration intends); rules that fail
    /// validation are evaluated as written.
    #[arg(long)]
    pub ignore_errors: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

/// Source address of the check: an address, or a subnet's first usable address (`.4`).
fn source(snap: &Snapshot, from: Option<&str>) -> Result<IpAddr, String> {
    palisade_policy::endpoints::workload_address(snap, from).map_err(|e| e.to_string())
}

fn catalog(path: &std::path::Path) -> Result<DependencyCatalog, String> {
    let (c, warnings) = DependencyCatalog::load(path);
    for w in warnings
        .iter()
        .filter(|w| w.severity >= palisade_model::Severity::Warning)
    {
        eprintln!("{w}");
    }
    c.map_err(|d| d.to_string())
}

pub fn deps(cmd: DepsCommand) -> Result<ExitCode, String> {
    let DepsCommand::Check {
        net,
        catalog: path,
        from,
        output,
    } = cmd;
    let loaded = load::load_for_evaluation(&net)?;
    let catalog = catalog(&path)?;
    let src = source(&loaded.snapshot, from.as_deref())?;
    let report = deps::check(&loaded.snapshot, &catalog, src);
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "dependency coverage from {src} ({} entries)",
            report.summary.entries
        );
        let mut category = String::new();
        for e in &report.entries {
            if e.category != category {
                category = e.category.clone();
                println!("{category}");
            }
            let by = e
                .decided_by
                .as_ref()
                .map(|d| {
                    format!(
                        "{} {} {}",
                        d.layer,
                        d.resource,
                        d.rule.clone().unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            let optional = if e.required { "" } else { " (optional)" };
            println!(
                "  {:<22} {:<45} {:>5}/{:<3} {by}{optional}",
                format!("{:?}", e.status),
                e.domain_name,
                e.port,
                e.protocol
            );
            if let Some(s) = &e.suggestion {
                println!("  {:<22} fix: {s}", "");
            }
            for a in &e.assumed {
                println!("  {:<22} assumed: {a}", "");
            }
        }
        let s = &report.summary;
        println!(
            "covered {}, bypassed {}, denied {}, partial {}, not coverable {}, missing service endpoint {}; {} required entr{} not covered",
            s.covered, s.bypassed, s.denied, s.partial, s.not_coverable, s.missing_service_endpoint, s.required_not_covered, if s.required_not_covered == 1 { "y" } else { "ies" }
        );
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn analyze(cmd: AnalyzeCommand) -> Result<ExitCode, String> {
    let (net, path, output) = match cmd {
        AnalyzeCommand::Asymmetric {
            net,
            catalog,
            output,
        } => (net, catalog, output),
        AnalyzeCommand::Reachability {
            net,
            summary: true,
            output,
            ..
        } => return subnet_matrix(net, output),
        AnalyzeCommand::Reachability {
            net,
            from,
            to,
            all,
            summary: false,
            output,
        } => return reachability(net, from, to, all, output),
    };
    let loaded = load::load_for_evaluation(&net)?;
    let declared = match &path {
        Some(p) => present::declared_sources(&catalog(p)?),
        None => vec![],
    };
    let report = asymmetric::check(&loaded.snapshot, &declared);
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        for f in &report.findings {
            let n = f.source_prefixes.len();
            let shown: Vec<&str> = f
                .source_prefixes
                .iter()
                .take(4)
                .map(String::as_str)
                .collect();
            println!("Asymmetric  subnet {}  entry {}", f.subnet, f.entry);
            println!(
                "    sources  {}{}",
                shown.join(", "),
                if n > 4 {
                    format!(" (+{} more)", n - 4)
                } else {
                    String::new()
                }
            );
            println!(
                "    reply    {} / {} → {}{}",
                f.route_table,
                f.route,
                f.reply_next_hop,
                f.reply_next_hop_address
                    .as_ref()
                    .map(|a| format!(" {a}"))
                    .unwrap_or_default()
            );
            println!("    fix      {}", f.suggestion);
            for a in &f.assumed {
                println!("    assumed  {a}");
            }
        }
        println!(
            "{} finding(s) over {} subnet(s) and {} inbound entr(ies)",
            report.findings.len(),
            report.subnets,
            report.entries
        );
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn lint(net: NetworkArgs, output: Output) -> Result<ExitCode, String> {
    let loaded = load::load_for_evaluation(&net)?;
    let findings = lint::lint(&loaded.snapshot);
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "findings": findings }))
                .map_err(|e| e.to_string())?
        );
    } else {
        for f in &findings {
            let rule = f
                .rule
                .as_deref()
                .map(|r| format!(" rule {r}"))
                .unwrap_or_default();
            println!(
                "{:?}[{}] {} ({}){rule}: {}",
                f.severity,
                f.code,
                f.resource,
                if f.pointer.is_empty() {
                    f.file.clone()
                } else {
                    format!("{} {}", f.file, f.pointer)
                },
                f.message
            );
            println!("    fix: {}", f.suggestion);
        }
        println!("{} finding(s)", findings.len());
    }
    let worst = findings.iter().map(|f| f.severity).max();
    Ok(match worst {
        Some(lint::Severity::Error) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

fn print_flowsets(flows: &[reach::FlowSet]) {
    for f in flows.iter().take(12) {
        let short = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(4).map(String::as_str).collect();
            format!(
                "{}{}",
                shown.join(","),
                if v.len() > 4 {
                    format!(" (+{} more)", v.len() - 4)
                } else {
                    String::new()
                }
            )
        };
        println!(
            "      {} → {}  {}",
            short(&f.source_prefixes),
            short(&f.destination_prefixes),
            f.services.join("; ")
        );
        let e = &f.example;
        println!(
            "        e.g. {} {}:{} → {}:{}",
            e.protocol, e.source, e.source_port, e.destination, e.destination_port
        );
    }
    if flows.len() > 12 {
        println!(
            "      … {} more set(s) (--output json lists all)",
            flows.len() - 12
        );
    }
}

fn chain_text(chain: &[reach::Control]) -> String {
    if chain.is_empty() {
        return "(no rule)".into();
    }
    chain
        .iter()
        .map(|c| c.text())
        .collect::<Vec<_>>()
        .join(" → ")
}

pub fn reachability(
    net: NetworkArgs,
    from: Option<String>,
    to: Option<String>,
    all: bool,
    output: Output,
) -> Result<ExitCode, String> {
    let loaded = load::load_for_evaluation(&net)?;
    let snap = &loaded.snapshot;
    let scope =
        |s: &Option<String>| -> Result<[palisade_analyze::headerspace::IntervalSet; 2], String> {
            match s {
                Some(t) => reach::parse_scope(snap, t).map_err(|e| e.to_string()),
                None => Ok(reach::everything()),
            }
        };
    let (f, t) = (scope(&from)?, scope(&to)?);
    let engine = crate::progress::spin("building the reachability classes", || Engine::new(snap));
    let verdicts = present::reach_verdicts(all);
    let both = from.is_some() || to.is_some();
    let report = crate::progress::spin("computing reachability", || {
        reach::report(&engine, &f, &t, both, &verdicts)
    });
    let assumed = present::reach_assumed(snap, &report);
    if output == Output::Json {
        let v = present::reachability(&report, &assumed);
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (e, assumed) in report.entries.iter().zip(&assumed) {
        println!("{:?}  {} → {}", e.verdict, e.source, e.destination);
        println!("    decided by {}", chain_text(&e.decided_by));
        for a in assumed {
            println!("    assumed {a}");
        }
        print_flowsets(&e.flows);
    }
    if !report.application_rules.is_empty() {
        println!("application rules (allowed by HTTP Host / TLS SNI name, not by address; `ByName` above):");
        for a in &report.application_rules {
            let names: Vec<&str> = a.names.iter().take(5).map(String::as_str).collect();
            let more = if a.names.len() > 5 {
                format!(" (+{} more)", a.names.len() - 5)
            } else {
                String::new()
            };
            println!(
                "    {} {}  {} from {} to {}{more}",
                a.firewall,
                a.rule,
                a.protocols.join(","),
                a.sources.join(","),
                names.join(",")
            );
        }
    }
    println!(
        "{} entr{} ({} IPv4 and {} IPv6 address atoms, {} distinct paths)",
        report.entries.len(),
        if report.entries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        report.atoms.0,
        report.atoms.1,
        report.plans
    );
    Ok(ExitCode::SUCCESS)
}

/// `analyze reachability --summary`: which subnets reach which, from the same matrix.
fn subnet_matrix(net: NetworkArgs, output: Output) -> Result<ExitCode, String> {
    let loaded = load::load_for_evaluation(&net)?;
    let snap = &loaded.snapshot;
    let engine = crate::progress::spin("building the reachability classes", || Engine::new(snap));
    let m = crate::progress::spin("summarising", || engine.subnet_matrix());
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for l in &m.links {
        let e = &l.example;
        println!(
            "{} → {}  {}  (e.g. {} {}:{} → {}:{})",
            l.source,
            l.destination,
            l.services.join("; "),
            e.protocol,
            e.source,
            e.source_port,
            e.destination,
            e.destination_port
        );
    }
    println!(
        "{} subnet pair(s) with some flow allowed, of {} subnets",
        m.links.len(),
        m.subnets
    );
    Ok(ExitCode::SUCCESS)
}

pub fn diff(args: DiffArgs) -> Result<ExitCode, String> {
    let version = |path: &PathBuf, parameters: Option<PathBuf>| NetworkArgs {
        source: SourceArgs {
            network: vec![path.clone()],
            parameters,
            service_tags: args.service_tags.clone(),
            fqdn_tags: args.fqdn_tags.clone(),
            strict: false,
            resolve: vec![],
            hosts_file: None,
        },
        ignore_errors: args.ignore_errors,
    };
    let old = load::load_for_evaluation(&version(&args.old, args.parameters.clone()))?;
    let new = load::load_for_evaluation(&version(
        &args.new,
        args.new_parameters.clone().or(args.parameters.clone()),
    ))?;
    let report = crate::progress::spin("comparing the two versions", || {
        semdiff::diff(&old.snapshot, &new.snapshot)
    });
    if args.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        for c in &report.changes {
            println!("{:?} → {:?}", c.before, c.after);
            println!("    before: {}", chain_text(&c.before_decided_by));
            println!("    after:  {}", chain_text(&c.after_decided_by));
            print_flowsets(&c.flows);
        }
        println!(
            "{} change(s) over {} compared address-atom pairs",
            report.changes.len(),
            report.compared
        );
    }
    Ok(if report.changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `palisade check-azure`: Azure's exports of a NIC's effective routes and rules against the model.
#[derive(clap::Args)]
pub struct CheckAzureArgs {
    #[command(flatten)]
    pub net: NetworkArgs,
    /// The NIC the exports describe.
    #[arg(long, required_unless_present = "watcher")]
    pub nic: Option<String>,
    /// Output of `az network nic show-effective-route-table` (or the REST `effectiveRouteTable` body).
    #[arg(long, required_unless_present_any = ["effective_nsg", "watcher"], requires = "nic")]
    pub effective_routes: Option<PathBuf>,
    /// Output of `az network nic list-effective-nsg` (or the REST `effectiveNetworkSecurityGroups` body).
    #[arg(long, requires = "nic")]
    pub effective_nsg: Option<PathBuf>,
    /// A Network Watcher `ipFlowVerify` or `nextHop` result (REST API example shape: the question
    /// in `parameters`, Azure's answer in `responses.200.body`; or an array of them), replayed
    /// against the model. Repeatable.
    #[arg(long)]
    pub watcher: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

/// Read and parse one export; its located problems go to stderr like the network's.
fn azure_export<T>(
    path: &Option<PathBuf>,
    parse: fn(&str, &str) -> Result<T, Vec<palisade_model::Diagnostic>>,
) -> Result<Option<T>, String> {
    let Some(path) = path else { return Ok(None) };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    parse(&name, &text).map(Some).map_err(|problems| {
        for d in &problems {
            eprintln!("{d}");
        }
        format!("{name}: {} problem(s)", problems.len())
    })
}

pub fn check_azure(a: CheckAzureArgs) -> Result<ExitCode, String> {
    let routes = azure_export(&a.effective_routes, azure_check::parse_routes)?;
    let nsgs = azure_export(&a.effective_nsg, azure_check::parse_nsgs)?;
    let mut watcher = vec![];
    for w in &a.watcher {
        watcher.extend(
            azure_export(&Some(w.clone()), azure_check::parse_watcher)?.unwrap_or_default(),
        );
    }
    let loaded = load::load_for_evaluation(&a.net)?;
    let mut report = match &a.nic {
        Some(nic) => azure_check::check(&loaded.snapshot, nic, routes.as_deref(), nsgs.as_deref())?,
        None => azure_check::Report::default(),
    };
    azure_check::replay(&loaded.snapshot, &watcher, &mut report);
    if a.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        for d in &report.disagreements {
            let field = d.field.map(|f| format!(" [{f}]")).unwrap_or_default();
            println!("{:?}: {}{field}", d.kind, d.subject);
            println!("    azure: {}", d.azure.as_deref().unwrap_or("(absent)"));
            println!("    model: {}", d.model.as_deref().unwrap_or("(absent)"));
            if !d.only_azure.is_empty() {
                println!("    only in azure: {}", d.only_azure.join(", "));
            }
            if !d.only_model.is_empty() {
                println!("    only in model: {}", d.only_model.join(", "));
            }
        }
        for n in &report.notes {
            println!("note: {n}");
        }
        let nic = if report.nic.is_empty() {
            "network watcher".to_string()
        } else {
            report.nic.clone()
        };
        println!(
            "{nic}: {} route(s), {} rule(s), {} Network Watcher question(s) compared; {} disagreement(s)",
            report.routes_compared,
            report.rules_compared,
            report.questions_replayed,
            report.disagreements.len()
        );
    }
    Ok(if report.disagreements.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
