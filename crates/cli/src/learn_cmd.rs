//! `palisade learn`: the scope's recorded denials → proposed rules (PAL-5.4), printed as a
//! reviewable native YAML diff, ARM JSON or JSON; `--write-network` also writes the network
//! with the proposals merged. Parses, calls `palisade_analyze::learn`, presents.

use crate::load;
use crate::NetworkArgs;
use palisade_analyze::learn::{self, Input, Scope};
use palisade_flowlog::{parse_since, query, FlowRecord, Query};
use palisade_model::catalog::DependencyCatalog;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

#[derive(clap::Args)]
pub struct LearnArgs {
    #[command(flatten)]
    net: NetworkArgs,
    /// The source scope: a subnet, a prefix or address, an application security group or an IP
    /// group (`subnet:`, `asg:`, `ipgroup:` choose when a name is ambiguous).
    #[arg(long)]
    scope: String,
    /// Denials newer than this: a duration (7d, 12h) or an RFC 3339 time.
    #[arg(long, default_value = "7d")]
    since: String,
    /// Denials older than this: a duration before now or an RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Flow-log directories to read: the gateway's data directory, `palisade host log`'s
    /// (default: the gateway's default). Repeatable.
    #[arg(long = "flow-log", value_name = "DIR")]
    flow_log: Vec<PathBuf>,
    /// Dependency catalogs (CAT-5) whose matching entries are named in the evidence. Repeatable.
    #[arg(long)]
    catalog: Vec<PathBuf>,
    /// The firewall whose denials are learned (default: the network's only firewall).
    #[arg(long)]
    firewall: Option<String>,
    /// Samples kept per proposal.
    #[arg(long, default_value_t = learn::DEFAULT_SAMPLES)]
    samples: usize,
    /// `yaml`: the commented native diff; `arm`: child resources; `json`: proposals and evidence.
    #[arg(long, value_enum, default_value = "yaml")]
    output: Format,
    /// Write the proposals to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// Also write the whole network with the proposals merged (the network must be one native
    /// YAML file); it is loaded back and must validate.
    #[arg(long, value_name = "OUT")]
    write_network: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
enum Format {
    Yaml,
    Arm,
    Json,
}

pub fn learn(a: LearnArgs) -> Result<ExitCode, String> {
    let loaded = load::load_for_evaluation(&a.net)?;
    let snapshot = &loaded.snapshot;
    let scope = Scope::resolve(snapshot, &a.scope)?;
    let now = SystemTime::now();
    let since = parse_since(&a.since, now).map_err(|e| e.to_string())?;
    let until = a
        .until
        .as_deref()
        .map(|u| parse_since(u, now).map_err(|e| e.to_string().replace("--since", "--until")))
        .transpose()?;
    let dirs = if a.flow_log.is_empty() {
        vec![crate::serve::default_data_dir()]
    } else {
        a.flow_log.clone()
    };
    let mut records: Vec<FlowRecord> = vec![];
    for dir in &dirs {
        if !dir.is_dir() {
            return Err(format!("--flow-log {}: not a directory", dir.display()));
        }
        let q = Query {
            action: Some("Deny".into()),
            since: Some(since),
            ..Default::default()
        };
        let (r, torn) = query(dir, &q).map_err(|e| format!("{}: {e}", dir.display()))?;
        if torn > 0 {
            eprintln!("note: {}: {torn} unreadable line(s) skipped", dir.display());
        }
        records.extend(r);
    }
    let mut catalogs = vec![];
    for path in &a.catalog {
        let (c, warnings) = DependencyCatalog::load(path);
        for w in warnings
            .iter()
            .filter(|w| w.severity >= palisade_model::Severity::Warning)
        {
            eprintln!("{w}");
        }
        catalogs.push(c.map_err(|d| d.to_string())?);
    }
    let learned = learn::propose(&Input {
        snapshot,
        records: &records,
        scope: &scope,
        since: Some(since),
        until,
        catalogs: &catalogs,
        names: &loaded.bindings,
        firewall: a.firewall.as_deref(),
        samples: a.samples,
    })?;
    let text = match a.output {
        Format::Yaml => learn::yaml_text(&learned)?,
        Format::Arm => pretty(&learn::arm_diff(&learned)?)?,
        Format::Json => pretty(&serde_json::json!({
            "learned": learned,
            "diff": learn::native_diff(&learned),
        }))?,
    };
    match &a.write {
        Some(p) => std::fs::write(p, &text).map_err(|e| format!("{}: {e}", p.display()))?,
        None => print!("{text}"),
    }
    eprintln!(
        "{} proposal(s) for {} from {} denial(s); nothing applied",
        learned.proposals.len(),
        scope.label(),
        learned.denials
    );
    if let Some(out) = &a.write_network {
        write_network(&a.net, &learned, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn pretty(v: &serde_json::Value) -> Result<String, String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

/// The input network with the proposals merged, written to `out` and loaded back: a merge that
/// does not validate is reported, not left behind.
fn write_network(net: &NetworkArgs, learned: &learn::Learned, out: &PathBuf) -> Result<(), String> {
    let [file] = net.source.network.as_slice() else {
        return Err("--write-network: give the network as one native YAML file".into());
    };
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut doc: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|e| format!("--write-network: {}: {e}", file.display()))?;
    learn::merge_native(&mut doc, &learn::native_diff(learned))
        .map_err(|e| format!("--write-network: {}: {e}", file.display()))?;
    let yaml = serde_saphyr::to_string(&doc).map_err(|e| e.to_string())?;
    let header = format!(
        "# {} with the proposals of palisade learn for {} merged.\n",
        file.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default(),
        learned.scope.label()
    );
    std::fs::write(out, header + &yaml).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut merged = net.source.clone();
    merged.network = vec![out.clone()];
    let checked = palisade_load::load(&merged.source());
    if checked.snapshot.is_none() {
        let _ = std::fs::remove_file(out);
        return Err(format!(
            "--write-network: the merged network does not validate:\n{}",
            checked.error_lines().join("\n")
        ));
    }
    eprintln!("wrote {} (validates)", out.display());
    Ok(())
}
