//! The policy a gateway runs: the network loaded through `palisade-load` (the same road as
//! `palisade trace`), the firewall chosen, and the snapshot the data plane uses.

use palisade_load::{Input, Source};
use palisade_model::bindings::Bindings;
use palisade_model::Severity;
use palisade_policy::firewall::CompiledFirewall;
use palisade_policy::{FirewallId, Snapshot};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// What to load and which firewall to run.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// The network, parameters, catalogs and name bindings, as `palisade trace` takes them.
    /// `ignore_errors` is not honoured: a gateway never runs a network in error (PAL-5.5).
    pub source: Source,
    /// The firewall (`azureFirewalls` name) this gateway is; `None`: the only one.
    pub firewall: Option<String>,
}

impl PolicySource {
    /// The network in these files and folders, with every other setting at its default.
    pub fn files(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> PolicySource {
        PolicySource {
            source: Source::files(paths),
            firewall: None,
        }
    }
}

/// A version fetched from the policy store, compiled with the catalogs and name bindings of
/// `base` (its files, if any, are not read).
pub fn from_store(base: &PolicySource, doc: &crate::store::Document) -> PolicySource {
    PolicySource {
        source: Source {
            input: Input::Text {
                file: format!("policy version {}", doc.version),
                text: doc.text.to_string(),
            },
            parameters: None,
            ..base.source.clone()
        },
        firewall: base.firewall.clone(),
    }
}

/// A compiled snapshot in force.
pub struct Active {
    pub snapshot: Snapshot,
    pub firewall: FirewallId,
    /// The name bindings it was compiled with; the gateway's resolver answers from them first,
    /// so FQDN network rules and the PAL-5.2 address check see the same addresses.
    pub bindings: Bindings,
    pub loaded_at: SystemTime,
    /// Warnings printed when it was loaded.
    pub warnings: Vec<String>,
    /// The snapshot id and the firewall's policy name, shared by every judgement's
    /// [`crate::Version`] instead of copied into each.
    pub(crate) shared_id: Arc<str>,
    pub(crate) policy: Option<Arc<str>>,
}

impl Active {
    pub fn id(&self) -> &str {
        &self.snapshot.id
    }
    pub fn firewall(&self) -> &CompiledFirewall {
        self.snapshot.firewall(self.firewall)
    }
}

/// Import, validate and compile. Every error is returned located exactly as `palisade validate`
/// prints it (FMT-12); a network with errors is refused as a whole (PAL-5.5).
pub fn load(source: &PolicySource) -> Result<Active, Vec<String>> {
    let loaded = palisade_load::load(&Source {
        ignore_errors: false,
        ..source.source.clone()
    });
    let Some(snapshot) = loaded.snapshot else {
        return Err(loaded.error_lines());
    };
    if snapshot.firewalls().next().is_none() {
        return Err(vec![format!(
            "{}: the network has no firewall (azureFirewalls) for the gateway to run",
            source.source.describe()
        )]);
    }
    let names = || {
        snapshot
            .firewalls()
            .map(|(_, f)| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let firewall = match &source.firewall {
        Some(name) => snapshot.firewall_by_name(name).ok_or_else(|| {
            vec![format!(
                "--firewall {name}: no such firewall (the network has {})",
                names()
            )]
        })?,
        None => snapshot.sole_firewall().ok_or_else(|| {
            vec![format!(
                "the network has {} firewalls ({}); choose one with --firewall",
                snapshot.firewalls().len(),
                names()
            )]
        })?,
    };
    let mut warnings: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.to_string())
        .collect();
    warnings.extend(snapshot.firewall(firewall).problems.iter().cloned());
    Ok(Active {
        shared_id: Arc::from(snapshot.id.as_str()),
        policy: snapshot.firewall(firewall).policy.as_deref().map(Arc::from),
        snapshot,
        firewall,
        bindings: loaded.bindings,
        loaded_at: SystemTime::now(),
        warnings,
    })
}
