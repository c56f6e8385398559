//! # palisade-load
//!
//! The one road from files to decisions. Every front end — the CLI, the gateway, `host`, the
//! tests' helpers and the server — describes what to read as a [`Source`] and gets back the
//! same [`Loaded`]: a compiled [`Snapshot`] when the input allows one, and every problem as a
//! located [`Diagnostic`] (file, line:column, JSON pointer, resource, field, found, expected).
//!
//! ```text
//! Source ──check──▶ Checked { imported network, catalogs, name bindings, diagnostics }
//!                      └──compile──▶ Loaded { Option<Snapshot>, diagnostics, bindings }
//! ```
//!
//! Nothing here decides semantics: import and validation are `palisade-model`'s, compilation is
//! `palisade-policy`'s. This crate only fixes the order, turns every failure along the way
//! (a missing parameters file, a bad `--resolve` item, an unreadable catalog) into a diagnostic
//! of the same shape, and applies the one policy about errors: a network in error yields no
//! snapshot unless the caller asked to evaluate anyway ([`Source::ignore_errors`]).

use palisade_model::bindings::{self, Bindings};
use palisade_model::catalog::{Catalogs, FqdnTags, ServiceTags};
use palisade_model::{Diagnostic, Diagnostics, Dropped, ImportOptions, Imported};
use palisade_policy::{CompileOptions, Snapshot};
use std::path::PathBuf;

/// The network's text: files and folders on disk, or a text held in memory (the embedded
/// example, an API request body).
#[derive(Debug, Clone)]
pub enum Input {
    Files(Vec<PathBuf>),
    Text { file: String, text: String },
}

impl Default for Input {
    fn default() -> Self {
        Input::Files(vec![])
    }
}

/// What to load: the same description whoever asks.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub input: Input,
    /// An ARM parameters file for the templates (FMT-5).
    pub parameters: Option<PathBuf>,
    /// A service-tag file (`ServiceTags_<Cloud>_<date>.json`) instead of the embedded copy.
    pub service_tags: Option<PathBuf>,
    /// An FQDN tag file whose tags extend or replace the embedded ones.
    pub fqdn_tags: Option<PathBuf>,
    /// `NAME=IP` name bindings (`--resolve`).
    pub resolve: Vec<String>,
    /// A hosts-format file of name bindings.
    pub hosts_file: Option<PathBuf>,
    /// Unresolvable values and unknown catalog entries are errors, not warnings.
    pub strict: bool,
    /// Compile even when the input has errors: rules, routes and collections whose values do not
    /// parse are left out (listed in [`Loaded::dropped`]; a left-out Deny denies nothing); rules
    /// that failed validation are evaluated as written.
    pub ignore_errors: bool,
}

impl Source {
    /// Files and folders with every other setting at its default.
    pub fn files(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Source {
        Source {
            input: Input::Files(paths.into_iter().map(Into::into).collect()),
            ..Source::default()
        }
    }

    /// A text held in memory, named `file` in diagnostics.
    pub fn text(file: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            input: Input::Text {
                file: file.into(),
                text: text.into(),
            },
            ..Source::default()
        }
    }

    /// The files a watcher should follow to reload this source: the network's paths and every
    /// file beside them that the source names.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let mut out = match &self.input {
            Input::Files(p) => p.clone(),
            Input::Text { .. } => vec![],
        };
        out.extend(
            [
                &self.parameters,
                &self.service_tags,
                &self.fqdn_tags,
                &self.hosts_file,
            ]
            .into_iter()
            .flatten()
            .cloned(),
        );
        out
    }

    /// A short description for messages: the network's paths.
    pub fn describe(&self) -> String {
        match &self.input {
            Input::Files(p) => p
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            Input::Text { file, .. } => file.clone(),
        }
    }
}

/// Imported and validated, not compiled: what `palisade validate` reports.
pub struct Checked {
    pub imported: Imported,
    pub catalogs: Catalogs,
    pub bindings: Bindings,
    /// Import, validation, catalog and binding problems, in that order, located where the text
    /// is known.
    pub diagnostics: Diagnostics,
}

/// Ready to evaluate, or the reasons why not.
pub struct Loaded {
    /// `None` when the input has errors (and errors were not to be ignored) or describes no
    /// network resources; the reasons are among the diagnostics.
    pub snapshot: Option<Snapshot>,
    pub diagnostics: Diagnostics,
    pub bindings: Bindings,
    /// Rules, routes, collections and subnets left out because they are in error; with
    /// `ignore_errors` the snapshot is compiled without them.
    pub dropped: Vec<Dropped>,
}

impl Loaded {
    /// The error diagnostics, as lines (`error: file:line:column (...): ...`).
    pub fn error_lines(&self) -> Vec<String> {
        self.diagnostics.errors().map(|d| d.to_string()).collect()
    }
}

/// Import and validate; read catalogs and name bindings. Never fails: every problem is a
/// diagnostic.
pub fn check(source: &Source) -> Checked {
    let mut diagnostics = Diagnostics::default();
    let catalogs = catalogs(source, &mut diagnostics);
    let bindings = name_bindings(source, &mut diagnostics);
    let mut options = ImportOptions {
        strict: source.strict,
        parameters: None,
        parameters_from_sibling: false,
    };
    if let Some(p) = &source.parameters {
        let file = p.display().to_string();
        match std::fs::read_to_string(p) {
            Ok(text) => match palisade_model::json::parse(&file, &text) {
                Ok(doc) => options.parameters = Some((file, doc.value)),
                Err(d) => diagnostics.push(d),
            },
            Err(e) => diagnostics.push(
                Diagnostic::error(format!("cannot read the parameters file: {e}")).at(&file, ""),
            ),
        }
    }
    let imported = match &source.input {
        Input::Files(paths) => palisade_model::load(paths, &options),
        Input::Text { file, text } => {
            let f = palisade_model::import::import_text(file, text, &options, None);
            Imported {
                network: f.network,
                diagnostics: f.diagnostics,
                files: vec![],
                dropped: f.dropped,
            }
        }
    };
    let mut all = imported.diagnostics.clone();
    let mut validation = palisade_model::validate(&imported.network, &catalogs, source.strict);
    palisade_model::json::locate_in_files(&mut validation);
    all.extend(validation.0);
    all.extend(diagnostics.0);
    Checked {
        imported,
        catalogs,
        bindings,
        diagnostics: all,
    }
}

impl Checked {
    /// Compile, unless the input has errors (PAL-5.5: a network in error is refused as a whole)
    /// and `ignore_errors` is off, or there is nothing to compile.
    pub fn compile(self, ignore_errors: bool) -> Loaded {
        let Checked {
            imported,
            catalogs,
            bindings,
            mut diagnostics,
        } = self;
        if imported.network.is_empty() && !imported.diagnostics.has_errors() {
            diagnostics.push(
                Diagnostic::error("the input describes no network resources").expected(
                    "virtual networks, NSGs, route tables, NICs, firewalls or firewall policies",
                ),
            );
        }
        let evaluable =
            !imported.network.is_empty() && (ignore_errors || !diagnostics.has_errors());
        let snapshot = evaluable.then(|| {
            Snapshot::compile(
                &imported.network,
                &catalogs,
                &CompileOptions {
                    resolve: bindings.clone(),
                },
            )
        });
        Loaded {
            snapshot,
            dropped: imported.dropped,
            diagnostics,
            bindings,
        }
    }
}

/// Check and compile: the road every front end takes.
pub fn load(source: &Source) -> Loaded {
    check(source).compile(source.ignore_errors)
}

fn catalogs(source: &Source, diagnostics: &mut Diagnostics) -> Catalogs {
    let mut c = Catalogs::embedded();
    if let Some(p) = &source.service_tags {
        match ServiceTags::load(p) {
            Ok(tags) => c.service_tags = tags,
            Err(d) => diagnostics.push(d),
        }
    }
    if let Some(p) = &source.fqdn_tags {
        match FqdnTags::load(p) {
            Ok(tags) => c.fqdn_tags.extend(tags),
            Err(d) => diagnostics.push(d),
        }
    }
    c
}

fn name_bindings(source: &Source, diagnostics: &mut Diagnostics) -> Bindings {
    let (mut out, problems) = bindings::parse_items("--resolve", &source.resolve);
    diagnostics.extend(problems);
    if let Some(h) = &source.hosts_file {
        let (more, problems) = bindings::read_hosts_file(h);
        diagnostics.extend(problems);
        bindings::merge(&mut out, more);
    }
    out
}
