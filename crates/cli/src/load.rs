//! The command line's arguments as a [`palisade_load::Source`], and the diagnostics printed the
//! way every command prints them. The road itself is `palisade-load`'s.

use crate::{NetworkArgs, SourceArgs};
use palisade_load::{Checked, Source};
use palisade_model::bindings::Bindings;
use palisade_model::Severity;
use palisade_policy::Snapshot;

/// The example network shipped in the binary (`examples/ase-egress-lockdown/network.json`).
const EXAMPLE: &str = include_str!("../../../examples/ase-egress-lockdown/network.json");

pub struct Evaluable {
    pub snapshot: Snapshot,
    pub bindings: Bindings,
}

impl SourceArgs {
    pub fn source(&self) -> Source {
        Source {
            parameters: self.parameters.clone(),
            service_tags: self.service_tags.clone(),
            fqdn_tags: self.fqdn_tags.clone(),
            resolve: self.resolve.clone(),
            hosts_file: self.hosts_file.clone(),
            strict: self.strict,
            ..Source::files(self.network.clone())
        }
    }
}

/// Import and validate (`palisade validate`); diagnostics are returned, not printed.
pub fn check(args: &SourceArgs) -> Checked {
    palisade_load::check(&args.source())
}

/// Load, print warnings and errors to stderr, and hand back the snapshot. Errors stop
/// evaluation unless `--ignore-errors` is given: a trace of a half-imported network would mislead.
pub fn load_for_evaluation(args: &NetworkArgs) -> Result<Evaluable, String> {
    let source = Source {
        ignore_errors: args.ignore_errors,
        ..args.source.source()
    };
    evaluable(palisade_load::load(&source), args.ignore_errors)
}

fn evaluable(loaded: palisade_load::Loaded, ignore_errors: bool) -> Result<Evaluable, String> {
    for d in loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Warning)
    {
        eprintln!("{d}");
    }
    match loaded.snapshot {
        Some(snapshot) => Ok(Evaluable {
            snapshot,
            bindings: loaded.bindings,
        }),
        None if ignore_errors => Err(format!(
            "the input has {} error(s) and nothing could be evaluated",
            loaded.diagnostics.errors().count()
        )),
        None => Err(format!(
            "the input has {} error(s); fix them or pass --ignore-errors to evaluate without the rules in error",
            loaded.diagnostics.errors().count()
        )),
    }
}

pub fn embedded_example() -> Result<Snapshot, String> {
    evaluable(
        palisade_load::load(&Source::text(
            "examples/ase-egress-lockdown/network.json",
            EXAMPLE,
        )),
        false,
    )
    .map(|e| e.snapshot)
}
