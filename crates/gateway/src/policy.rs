//! Loading the network into a compiled snapshot, and the snapshot the data plane uses.

use palisade_model::catalog::Catalogs;
use palisade_model::{ImportOptions, Severity};
use palisade_policy::firewall::CompiledFirewall;
use palisade_policy::{CompileOptions, Snapshot};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

/// What to load and which firewall to run.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// Files or folders describing one network (as `palisade validate` takes them).
    pub network: Vec<PathBuf>,
    /// The firewall (`azureFirewalls` name) this gateway is; `None`: the only one.
    pub firewall: Option<String>,
    /// Name bindings for FQDN network rules, from `--resolve` / the hosts file.
    pub resolve: HashMap<String, Vec<IpAddr>>,
    pub strict: bool,
}

/// A compiled snapshot in force.
pub struct Active {
    pub snapshot: Snapshot,
    pub firewall: usize,
    pub loaded_at: SystemTime,
    /// Warnings printed when it was loaded.
    pub warnings: Vec<String>,
}

impl Active {
    pub fn id(&self) -> &str {
        &self.snapshot.id
    }
    pub fn firewall(&self) -> &CompiledFirewall {
        &self.snapshot.firewalls[self.firewall]
    }
}

/// Import, validate and compile. Every error is returned with its location (FMT-12); a
/// network with errors is refused as a whole (PAL-5.5).
pub fn load(source: &PolicySource) -> Result<Active, Vec<String>> {
    let catalogs = Catalogs::embedded();
    let options = ImportOptions {
        strict: source.strict,
        parameters: None,
    };
    let imported = palisade_model::load(&source.network, &options);
    let mut diagnostics = imported.diagnostics.clone();
    diagnostics.extend(palisade_model::validate(&imported.network, &catalogs, source.strict).0);
    if diagnostics.has_errors() {
        return Err(diagnostics.errors().map(|d| d.to_string()).collect());
    }
    if imported.network.azure_firewalls.is_empty() {
        return Err(vec![format!(
            "{}: the network has no firewall (azureFirewalls) for the gateway to run",
            source
                .network
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )]);
    }
    let warnings: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.to_string())
        .collect();
    let snapshot = Snapshot::compile(
        &imported.network,
        &catalogs,
        &CompileOptions {
            resolve: source.resolve.clone(),
        },
    );
    let firewall = match &source.firewall {
        Some(name) => snapshot
            .firewalls
            .iter()
            .position(|f| f.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<&str> = snapshot.firewalls.iter().map(|f| f.name.as_str()).collect();
                vec![format!(
                    "--firewall {name}: no such firewall (the network has {})",
                    names.join(", ")
                )]
            })?,
        None if snapshot.firewalls.len() == 1 => 0,
        None => {
            let names: Vec<&str> = snapshot.firewalls.iter().map(|f| f.name.as_str()).collect();
            return Err(vec![format!(
                "the network has {} firewalls ({}); choose one with --firewall",
                names.len(),
                names.join(", ")
            )]);
        }
    };
    let mut warnings = warnings;
    warnings.extend(snapshot.firewalls[firewall].problems.iter().cloned());
    Ok(Active {
        snapshot,
        firewall,
        loaded_at: SystemTime::now(),
        warnings,
    })
}
