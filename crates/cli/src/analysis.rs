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
use serde_json::Value;
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
    show_report(&report, output, &DEPS)
}

/// How an analysis answer is shown, both from its JSON — so a server's answer
/// (`palisade --server URL ...`) prints exactly what the local command prints.
pub struct Presenter {
    text: fn(&Value),
    /// Exit code 1.
    failed: fn(&Value) -> bool,
}

pub const DEPS: Presenter = Presenter {
    text: deps_text,
    failed: |v| v["summary"]["required_not_covered"].as_u64() != Some(0),
};
pub const ASYMMETRIC: Presenter = Presenter {
    text: asymmetric_text,
    failed: |v| !items(&v["findings"]).is_empty(),
};
pub const LINT: Presenter = Presenter {
    text: lint_text,
    failed: |v| {
        items(&v["findings"])
            .iter()
            .any(|f| f["severity"] == "Error")
    },
};
pub const REACHABILITY: Presenter = Presenter {
    text: reachability_text,
    failed: |_| false,
};
pub const SUBNET_MATRIX: Presenter = Presenter {
    text: subnet_matrix_text,
    failed: |_| false,
};
pub const DIFF: Presenter = Presenter {
    text: diff_text,
    failed: |v| !items(&v["changes"]).is_empty(),
};

fn show_report(
    report: &impl serde::Serialize,
    output: Output,
    p: &Presenter,
) -> Result<ExitCode, String> {
    show(
        &serde_json::to_value(report).map_err(|e| e.to_string())?,
        output,
        p,
    )
}

/// An analysis answer (local or a server's) as `--output` asks, with its exit code.
pub fn show(v: &Value, output: Output, p: &Presenter) -> Result<ExitCode, String> {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
        );
    } else {
        (p.text)(v);
    }
    Ok(if (p.failed)(v) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A string field, `""` when absent.
fn st<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<&str> {
    items(v).iter().filter_map(Value::as_str).collect()
}

fn deps_text(v: &Value) {
    let sum = &v["summary"];
    let n = |k: &str| sum[k].as_u64().unwrap_or(0);
    println!(
        "dependency coverage from {} ({} entries)",
        st(v, "source"),
        n("entries")
    );
    let mut category = "";
    for e in items(&v["entries"]) {
        if st(e, "category") != category {
            category = st(e, "category");
            println!("{category}");
        }
        let by = match &e["decided_by"] {
            Value::Null => String::new(),
            d => format!("{} {} {}", st(d, "layer"), st(d, "resource"), st(d, "rule")),
        };
        let optional = if e["required"] == true {
            ""
        } else {
            " (optional)"
        };
        println!(
            "  {:<22} {:<45} {:>5}/{:<3} {by}{optional}",
            st(e, "status"),
            st(e, "domainName"),
            e["port"].as_u64().unwrap_or_default(),
            st(e, "protocol")
        );
        if let Some(s) = e["suggestion"].as_str() {
            println!("  {:<22} fix: {s}", "");
        }
        for a in strings(&e["assumed"]) {
            println!("  {:<22} assumed: {a}", "");
        }
    }
    let r = n("required_not_covered");
    println!(
        "covered {}, bypassed {}, denied {}, partial {}, not coverable {}, missing service endpoint {}; {r} required entr{} not covered",
        n("covered"), n("bypassed"), n("denied"), n("partial"), n("not_coverable"), n("missing_service_endpoint"), if r == 1 { "y" } else { "ies" }
    );
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
    show_report(&report, output, &ASYMMETRIC)
}

fn asymmetric_text(v: &Value) {
    let findings = items(&v["findings"]);
    for f in findings {
        let sources = strings(&f["source_prefixes"]);
        let n = sources.len();
        println!(
            "Asymmetric  subnet {}  entry {}",
            st(f, "subnet"),
            st(f, "entry")
        );
        println!(
            "    sources  {}{}",
            sources[..n.min(4)].join(", "),
            if n > 4 {
                format!(" (+{} more)", n - 4)
            } else {
                String::new()
            }
        );
        println!(
            "    reply    {} / {} → {}{}",
            st(f, "route_table"),
            st(f, "route"),
            st(f, "reply_next_hop"),
            f["reply_next_hop_address"]
                .as_str()
                .map(|a| format!(" {a}"))
                .unwrap_or_default()
        );
        println!("    fix      {}", st(f, "suggestion"));
        for a in strings(&f["assumed"]) {
            println!("    assumed  {a}");
        }
    }
    println!(
        "{} finding(s) over {} subnet(s) and {} inbound entr(ies)",
        findings.len(),
        v["subnets"],
        v["entries"]
    );
}

pub fn lint(net: NetworkArgs, output: Output) -> Result<ExitCode, String> {
    let loaded = load::load_for_evaluation(&net)?;
    let findings = lint::lint(&loaded.snapshot);
    show_report(&serde_json::json!({ "findings": findings }), output, &LINT)
}

fn lint_text(v: &Value) {
    let findings = items(&v["findings"]);
    for f in findings {
        let rule = f["rule"]
            .as_str()
            .map(|r| format!(" rule {r}"))
            .unwrap_or_default();
        let at = if st(f, "pointer").is_empty() {
            st(f, "file").to_string()
        } else {
            format!("{} {}", st(f, "file"), st(f, "pointer"))
        };
        println!(
            "{}[{}] {} ({at}){rule}: {}",
            st(f, "severity"),
            st(f, "code"),
            st(f, "resource"),
            st(f, "message")
        );
        println!("    fix: {}", st(f, "suggestion"));
    }
    println!("{} finding(s)", findings.len());
}

fn print_flowsets(flows: &Value) {
    let flows = items(flows);
    for f in flows.iter().take(12) {
        let short = |v: &Value| {
            let all = strings(v);
            format!(
                "{}{}",
                all[..all.len().min(4)].join(","),
                if all.len() > 4 {
                    format!(" (+{} more)", all.len() - 4)
                } else {
                    String::new()
                }
            )
        };
        println!(
            "      {} → {}  {}",
            short(&f["source_prefixes"]),
            short(&f["destination_prefixes"]),
            strings(&f["services"]).join("; ")
        );
        let e = &f["example"];
        println!(
            "        e.g. {} {}:{} → {}:{}",
            st(e, "protocol"),
            st(e, "source"),
            e["source_port"],
            st(e, "destination"),
            e["destination_port"]
        );
    }
    if flows.len() > 12 {
        println!(
            "      … {} more set(s) (--output json lists all)",
            flows.len() - 12
        );
    }
}

/// A chain of controls (`reach::Control` as JSON) as `Control::text` writes each.
fn chain_text(chain: &Value) -> String {
    let chain = items(chain);
    if chain.is_empty() {
        return "(no rule)".into();
    }
    chain
        .iter()
        .map(|c| {
            let rule = c["rule"]
                .as_str()
                .map(|r| format!("/{r}"))
                .unwrap_or_default();
            format!("{} {}{rule}", st(c, "step"), st(c, "resource"))
        })
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
    show(
        &present::reachability(&report, &assumed),
        output,
        &REACHABILITY,
    )
}

fn reachability_text(v: &Value) {
    let entries = items(&v["entries"]);
    for e in entries {
        println!(
            "{}  {} → {}",
            st(e, "verdict"),
            st(e, "source"),
            st(e, "destination")
        );
        println!("    decided by {}", chain_text(&e["decided_by"]));
        for a in strings(&e["assumed"]) {
            println!("    assumed {a}");
        }
        print_flowsets(&e["flows"]);
    }
    let rules = items(&v["application_rules"]);
    if !rules.is_empty() {
        println!("application rules (allowed by HTTP Host / TLS SNI name, not by address; `ByName` above):");
        for a in rules {
            let names = strings(&a["names"]);
            let more = if names.len() > 5 {
                format!(" (+{} more)", names.len() - 5)
            } else {
                String::new()
            };
            println!(
                "    {} {}  {} from {} to {}{more}",
                st(a, "firewall"),
                st(a, "rule"),
                strings(&a["protocols"]).join(","),
                strings(&a["sources"]).join(","),
                names[..names.len().min(5)].join(",")
            );
        }
    }
    println!(
        "{} entr{} ({} IPv4 and {} IPv6 address atoms, {} distinct paths)",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        v["atoms"][0],
        v["atoms"][1],
        v["plans"]
    );
}

/// `analyze reachability --summary`: which subnets reach which, from the same matrix.
fn subnet_matrix(net: NetworkArgs, output: Output) -> Result<ExitCode, String> {
    let loaded = load::load_for_evaluation(&net)?;
    let snap = &loaded.snapshot;
    let engine = crate::progress::spin("building the reachability classes", || Engine::new(snap));
    let m = crate::progress::spin("summarising", || engine.subnet_matrix());
    show_report(&m, output, &SUBNET_MATRIX)
}

fn subnet_matrix_text(v: &Value) {
    let links = items(&v["links"]);
    for l in links {
        let e = &l["example"];
        println!(
            "{} → {}  {}  (e.g. {} {}:{} → {}:{})",
            st(l, "source"),
            st(l, "destination"),
            strings(&l["services"]).join("; "),
            st(e, "protocol"),
            st(e, "source"),
            e["source_port"],
            st(e, "destination"),
            e["destination_port"]
        );
    }
    println!(
        "{} subnet pair(s) with some flow allowed, of {} subnets",
        links.len(),
        v["subnets"]
    );
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
    show_report(&report, args.output, &DIFF)
}

fn diff_text(v: &Value) {
    let changes = items(&v["changes"]);
    for c in changes {
        println!("{} → {}", st(c, "before"), st(c, "after"));
        println!("    before: {}", chain_text(&c["before_decided_by"]));
        println!("    after:  {}", chain_text(&c["after_decided_by"]));
        print_flowsets(&c["flows"]);
    }
    println!(
        "{} change(s) over {} compared address-atom pairs",
        changes.len(),
        v["compared"]
    );
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
