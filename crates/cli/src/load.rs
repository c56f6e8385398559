//! Loading a network and its catalogs from the command line's arguments.

use crate::NetworkArgs;
use palisade_model::catalog::{Catalogs, FqdnTags, ServiceTags};
use palisade_model::{Diagnostics, ImportOptions, Imported};
use palisade_policy::{CompileOptions, Snapshot};
use std::collections::HashMap;
use std::net::IpAddr;

/// The example network shipped in the binary (`examples/ase-egress-lockdown/network.json`).
const EXAMPLE: &str = include_str!("../../../examples/ase-egress-lockdown/network.json");

pub struct Loaded {
    pub imported: Imported,
    pub diagnostics: Diagnostics,
    pub catalogs: Catalogs,
}

pub struct Evaluable {
    pub snapshot: Snapshot,
    pub resolve: HashMap<String, Vec<IpAddr>>,
}

pub fn catalogs(args: &NetworkArgs) -> Result<Catalogs, String> {
    let mut c = Catalogs::embedded();
    if let Some(p) = &args.service_tags {
        c.service_tags = ServiceTags::load(p).map_err(|d| d.to_string())?;
    }
    if let Some(p) = &args.fqdn_tags {
        c.fqdn_tags
            .extend(FqdnTags::load(p).map_err(|d| d.to_string())?);
    }
    Ok(c)
}

/// Import and validate; diagnostics are returned, not printed.
pub fn load(args: &NetworkArgs) -> Result<Loaded, String> {
    let catalogs = catalogs(args)?;
    let mut options = ImportOptions {
        strict: args.strict,
        parameters: None,
    };
    if let Some(p) = &args.parameters {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let doc = palisade_model::json::parse(&p.display().to_string(), &text)
            .map_err(|d| d.to_string())?;
        options.parameters = Some((p.display().to_string(), doc.value));
    }
    let imported = palisade_model::load(&args.network, &options);
    let mut diagnostics = imported.diagnostics.clone();
    let mut validation = palisade_model::validate(&imported.network, &catalogs, args.strict);
    palisade_model::json::locate_in_files(&mut validation);
    diagnostics.extend(validation.0);
    Ok(Loaded {
        imported,
        diagnostics,
        catalogs,
    })
}

/// Import, validate, print problems to stderr, and compile. Errors stop evaluation unless
/// `--ignore-errors` is given: a trace of a half-imported network would mislead.
pub fn load_for_evaluation(args: &NetworkArgs) -> Result<Evaluable, String> {
    let loaded = load(args)?;
    for d in loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity >= palisade_model::Severity::Warning)
    {
        eprintln!("{d}");
    }
    if loaded.diagnostics.has_errors() && !args.ignore_errors {
        return Err(format!(
            "the input has {} error(s); fix them or pass --ignore-errors to evaluate without the rules in error",
            loaded.diagnostics.errors().count()
        ));
    }
    if loaded.imported.network.is_empty() {
        return Err("the input describes no network resources".into());
    }
    let resolve = palisade_gateway::resolver::parse_bindings(&args.resolve)?;
    let snapshot = Snapshot::compile(
        &loaded.imported.network,
        &loaded.catalogs,
        &CompileOptions {
            resolve: resolve.clone(),
        },
    );
    Ok(Evaluable { snapshot, resolve })
}

pub fn embedded_example() -> Result<Snapshot, String> {
    let file = palisade_model::import::import_text(
        "examples/ase-egress-lockdown/network.json",
        EXAMPLE,
        &ImportOptions::default(),
        None,
    );
    if file.diagnostics.has_errors() {
        return Err(file.diagnostics.to_string());
    }
    Ok(Snapshot::compile(
        &file.network,
        &Catalogs::embedded(),
        &CompileOptions::default(),
    ))
}
