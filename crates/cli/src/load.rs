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
    let loaded = crate::progress::spin(format!("loading {}", source.describe()), || {
        palisade_load::load(&source)
    });
    evaluable(loaded, args.ignore_errors)
}

fn evaluable(loaded: palisade_load::Loaded, ignore_errors: bool) -> Result<Evaluable, String> {
    for d in loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Warning)
    {
        eprintln!("{d}");
    }
    let errors = loaded.diagnostics.errors().count();
    if errors > 0 && loaded.snapshot.is_some() {
        eprintln!(
            "{}",
            ignored_errors(errors, &loaded.dropped, &loaded.diagnostics)
        );
    }
    match loaded.snapshot {
        Some(snapshot) => Ok(Evaluable {
            snapshot,
            bindings: loaded.bindings,
        }),
        None if ignore_errors => Err(format!(
            "the input has {errors} error(s) and nothing could be evaluated"
        )),
        None => Err(format!(
            "the input has {errors} error(s); fix them, or pass --ignore-errors to evaluate anyway: \
             rules, routes and collections whose values do not parse are then left out (a left-out \
             Deny denies nothing, so the result may allow more than the configuration intends) and \
             rules that fail validation are evaluated as written"
        )),
    }
}

/// What `--ignore-errors` did, said plainly: which definitions were left out, and what that
/// means for the answer (issue 17: a dropped Deny fails open).
fn ignored_errors(
    errors: usize,
    dropped: &[palisade_model::Dropped],
    diagnostics: &palisade_model::Diagnostics,
) -> String {
    let mut s = format!("warning: --ignore-errors: evaluating a network with {errors} error(s).");
    if dropped.is_empty() {
        s.push_str(" No rule or route was left out; the rules in error are evaluated as written.");
        return s;
    }
    s.push_str(&format!(
        " Left out because they are in error ({}):",
        dropped.len()
    ));
    for d in dropped {
        // Its line is that of the first error inside it, which the diagnostics already located.
        let line = diagnostics
            .errors()
            .filter(|e| e.file == d.origin.file && e.pointer.starts_with(&d.origin.pointer))
            .find_map(|e| e.line)
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "\n  {} '{}' ({}{line} {})",
            d.kind, d.name, d.origin.file, d.origin.pointer
        ));
    }
    s.push_str(
        "\nThe result may allow more than the configuration intends: a left-out Deny denies nothing.",
    );
    s
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
