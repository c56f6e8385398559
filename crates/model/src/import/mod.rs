//! Import (FMT-1): detect each file's shape, expand templates, read every resource into the
//! model, merge child resources into their parents, and collect every problem on the way.
//!
//! Each file is read into its own [`Network`] first (so that per-file counts can be reported),
//! then merged into one network.

mod blocks;
mod firewall;
mod merge;
mod node;
mod nsg;
mod reader;
mod routes;
mod vnet;
mod yaml;

pub use node::UNRESOLVED_KEY;

use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::json::{self, Document};
use crate::resources::*;
use merge::Merger;
use node::Node;
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Strict mode: unresolvable values are errors instead of warnings (FMT-4).
    pub strict: bool,
    /// Parameter values for templates (`--parameters FILE`): the file name and its JSON.
    pub parameters: Option<(String, Value)>,
    /// `parameters` is the `x.parameters.json` found beside the template, not one the user
    /// named: it applies only when the template declares one of its parameters (a folder may
    /// hold a parameters file for another template whose name merely looks like a pair).
    pub parameters_from_sibling: bool,
}

/// What a file turned out to be (FMT-1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum InputKind {
    Template,
    Parameters,
    RestResource,
    RestList,
    RestExample,
    CliOutput,
    NativeYaml,
    /// A "template building blocks" parameters file (mspnp, `docs/import-support.md`).
    BuildingBlocks,

    /// Effective rules or routes exported from Azure (FMT-10): observations, not configuration.
    Observation,
    #[default]
    Unrecognised,
    Invalid,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub file: String,
    pub kind: InputKind,
    pub counts: Counts,
    /// What the file holds but the model deliberately leaves out.
    pub set_aside: SetAside,
    pub errors: usize,
}

/// Rules and routes a file holds that were read but deliberately not imported as configuration,
/// so that "what the file says" and "what the model holds" can be reconciled. Each is also
/// reported as a note (or, for superseded definitions, a note or warning) at its location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SetAside {
    /// Entries of `defaultSecurityRules[]` arrays (NSG-3, FMT-7: the fixed rules of NSG-4 apply).
    pub default_rules_in_arrays: usize,
    /// Default rules given as resources of their own (`.../defaultSecurityRules/<name>`).
    pub default_rule_resources: usize,
    /// Security rules inside effective-rule or security-group-view outputs (FMT-10).
    pub observed_rules: usize,
    /// Effective routes (FMT-10).
    pub observed_routes: usize,
    /// Routes of virtual hub route tables (`nextHopType: ResourceId`, FMT-8): not modelled.
    pub hub_routes: usize,
    /// Definitions replaced by another of the same name in the same file: a child given both
    /// inline and as a separate resource, or a resource declared again (FMT-6).
    pub superseded: Counts,
}

/// A rule, route, collection or subnet in error and so left out of the network: evaluated with
/// errors ignored, the network behaves as if it were not written (a left-out Deny denies nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// The last segment of its type (`securityRules`, `routes`, `rule`, `ruleCollection`, ...).
    pub kind: String,
    /// `parent/name`.
    pub name: String,
    pub origin: Origin,
}

/// The result of importing a set of files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Imported {
    pub network: Network,
    pub diagnostics: Diagnostics,
    pub files: Vec<FileSummary>,
    /// What was left out because it is in error, in input order.
    pub dropped: Vec<Dropped>,
}

impl Imported {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.has_errors()
    }
}

/// Files a path stands for: the file itself, or every JSON/YAML file under a folder, sorted.
pub fn input_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = vec![];
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()),
                Some(ref e) if e == "json" || e == "jsonc" || e == "yaml" || e == "yml"
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Import every file under `paths` as one network.
pub fn load(paths: &[PathBuf], options: &ImportOptions) -> Imported {
    let mut imported = Imported::default();
    let mut files = vec![];
    for p in paths {
        match input_files(p) {
            Ok(f) if f.is_empty() => imported.diagnostics.push(
                Diagnostic::error("no JSON or YAML files found")
                    .at(&p.display().to_string(), "")
                    .expected("a file or a folder holding .json/.yaml files"),
            ),
            Ok(f) => files.extend(f),
            Err(e) => imported.diagnostics.push(
                Diagnostic::error(format!("cannot read: {e}"))
                    .at(&p.display().to_string(), "")
                    .expected("a readable file or folder"),
            ),
        }
    }
    // Parameter files of a folder apply to the template beside them with the matching stem.
    let unclaimed = unclaimed_parameters(&files);
    let mut merger = Merger::default();
    for f in &files {
        let name = f.display().to_string();
        let text = match std::fs::read(f) {
            Ok(b) => match String::from_utf8(b) {
                Ok(t) => t,
                Err(e) => {
                    let bytes = e.into_bytes();
                    imported.diagnostics.push(invalid_utf8(&name, &bytes));
                    String::from_utf8_lossy(&bytes).into_owned()
                }
            },
            Err(e) => {
                imported.diagnostics.push(
                    Diagnostic::error(format!("cannot read: {e}"))
                        .at(&name, "")
                        .expected("a readable file"),
                );
                continue;
            }
        };
        let mut opts = options.clone();
        if opts.parameters.is_none() {
            opts.parameters = sibling_parameters(f);
            opts.parameters_from_sibling = true;
            let (found, note) = folder_parameters(f, &name, &text, &opts, &unclaimed);
            imported.diagnostics.extend(note);
            if found.is_some() {
                opts.parameters = found;
            }
        }
        let base = f.parent().map(Path::to_path_buf);
        let file = import_text(&name, &text, &opts, base.as_deref());
        imported.files.push(FileSummary {
            file: name.clone(),
            kind: file.kind,
            counts: file.network.counts(),
            set_aside: file.set_aside,
            errors: file.diagnostics.errors().count(),
        });
        imported.diagnostics.extend(file.diagnostics.0);
        imported.dropped.extend(file.dropped);
        merger.add(file.network, file.synthetic, &mut imported.diagnostics);
    }
    imported.network = merger.finish(&mut imported.diagnostics);
    imported
}

/// FMT-2: the text must be UTF-8. A name in another encoding cannot be matched against the
/// names that refer to it, so the file is in error, located at the first bad byte (line and
/// column in characters, like every other diagnostic); the rest is still read to report more.
fn invalid_utf8(file: &str, bytes: &[u8]) -> Diagnostic {
    let (mut line, mut column, mut bad) = (1, 1, 0);
    let mut first = None;
    for chunk in bytes.utf8_chunks() {
        if first.is_none() {
            for c in chunk.valid().chars() {
                if c == '\n' {
                    line += 1;
                    column = 1;
                } else {
                    column += 1;
                }
            }
        }
        if !chunk.invalid().is_empty() {
            bad += 1;
            if first.is_none() {
                let start = chunk.valid().rfind('\n').map_or(0, |i| i + 1);
                let text: String = chunk.valid()[start..].chars().rev().take(40).collect();
                first = Some(text.chars().rev().collect::<String>());
            }
        }
    }
    let mut d = Diagnostic::error(format!(
        "the text is not valid UTF-8 ({bad} invalid byte sequence(s)); a name in another encoding cannot be matched (FMT-2)"
    ))
    .at(file, "")
    .found(format!(
        "{}{}",
        first.unwrap_or_default().trim_start(),
        char::REPLACEMENT_CHARACTER
    ))
    .expected("UTF-8 text (re-save the file as UTF-8)");
    d.line = Some(line);
    d.column = Some(column);
    d
}

/// `x.json` → `x.parameters.json` beside it, when present: its file name and JSON.
pub fn sibling_parameters(template: &Path) -> Option<(String, Value)> {
    let stem = template.file_stem()?.to_str()?;
    if stem.ends_with(".parameters") {
        return None;
    }
    let p = template.with_file_name(format!("{stem}.parameters.json"));
    let value = read_json(&p)?;
    Some((p.display().to_string(), value))
}

fn parameters_stem(p: &Path) -> bool {
    p.file_stem().and_then(|s| s.to_str()).is_some_and(|s| {
        let s = s.to_ascii_lowercase();
        s.ends_with(".parameters") || s == "parameters"
    })
}

fn is_json(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json") || e.eq_ignore_ascii_case("jsonc"))
}

fn read_json(p: &Path) -> Option<Value> {
    let file = p.display().to_string();
    Some(
        json::parse(&file, &std::fs::read_to_string(p).ok()?)
            .ok()?
            .value,
    )
}

/// The parameters files among `files` (read once per load) that no template of the input
/// claims: `y.parameters.json` is `y.json`'s when that is in the input and declares one of its
/// names. What is left may serve a template named apart ([`folder_parameters`]).
fn unclaimed_parameters(files: &[PathBuf]) -> Vec<(PathBuf, Value)> {
    let claimed = |p: &Path, value: &Value| {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let Some(owner) = stem.strip_suffix(".parameters") else {
            return false;
        };
        files.iter().any(|f| {
            f.parent() == p.parent()
                && is_json(f)
                && f.file_stem().and_then(|s| s.to_str()) == Some(owner)
                && read_json(f).is_some_and(|t| declares_any(&t, value))
        })
    };
    files
        .iter()
        .filter(|p| is_json(p) && parameters_stem(p))
        .filter_map(|p| Some((p.clone(), read_json(p)?)))
        .filter(|(p, value)| !claimed(p, value))
        .collect()
}

/// When `x.parameters.json` is missing beside `template` or gives none of its parameters: the
/// one parameters file of the same folder that names them (a template and its values named
/// apart, e.g. `network-params.json` with `network.parameters.json`, or a portal export's
/// `template.json` with `parameters.json`), and a note saying so. Only files no other template
/// claims are candidates ([`unclaimed_parameters`]). With several candidates none is taken
/// (the note lists them); with none, nothing is said.
fn folder_parameters(
    template: &Path,
    name: &str,
    text: &str,
    opts: &ImportOptions,
    unclaimed: &[(PathBuf, Value)],
) -> (Option<(String, Value)>, Option<Diagnostic>) {
    if parameters_stem(template) || !is_json(template) {
        return (None, None);
    }
    let Ok(doc) = json::parse(name, text) else {
        return (None, None);
    };
    if doc
        .value
        .get("parameters")
        .and_then(Value::as_object)
        .is_none()
        || opts
            .parameters
            .as_ref()
            .is_some_and(|(_, p)| declares_any(&doc.value, p))
    {
        return (None, None);
    }
    let found: Vec<(String, Value)> = unclaimed
        .iter()
        .filter(|(p, value)| p.parent() == template.parent() && declares_any(&doc.value, value))
        .map(|(p, value)| (p.display().to_string(), value.clone()))
        .collect();
    match <[_; 1]>::try_from(found) {
        Ok([one]) => {
            let note = Diagnostic::note(format!(
                "parameter values taken from {}, the one parameters file beside it that names its parameters",
                one.0
            ))
            .at(name, "/parameters");
            (Some(one), Some(note))
        }
        Err(found) if found.is_empty() => (None, None),
        Err(found) => {
            let names: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
            let note = Diagnostic::note(format!(
                "{} parameters files beside it name its parameters ({}); none is taken",
                names.len(),
                names.join(", ")
            ))
            .at(name, "/parameters")
            .expected(
                "one of them named with --parameters, or a <template>.parameters.json beside it",
            );
            (None, Some(note))
        }
    }
}

/// Whether `template` declares any parameter that `parameters` (a parameters file, or its bare
/// `parameters` object) gives a value for; names compare case-insensitively, as in ARM. A
/// sibling parameters file ([`sibling_parameters`]) applies only when this holds.
pub fn declares_any(template: &Value, parameters: &Value) -> bool {
    let values = parameters
        .get("parameters")
        .and_then(Value::as_object)
        .or(parameters.as_object());
    let declared = template.get("parameters").and_then(Value::as_object);
    match (values, declared) {
        (Some(v), Some(d)) => d
            .keys()
            .any(|k| v.keys().any(|g| g.eq_ignore_ascii_case(k))),
        _ => false,
    }
}

/// One file's import.
#[derive(Debug, Default)]
pub struct FileImport {
    pub kind: InputKind,
    pub network: Network,
    pub diagnostics: Diagnostics,
    pub set_aside: SetAside,
    pub dropped: Vec<Dropped>,
    /// Parents created only to hold a child resource (name, kind, whether from a template).
    synthetic: Vec<Synthetic>,
}

#[derive(Debug, Clone)]
struct Synthetic {
    kind: &'static str,
    name: String,
    /// A parent that never appears is an error (templates, FMT-6).
    from_template: bool,
    /// Where the child that needs it is declared, and its line and column.
    origin: Origin,
    position: Option<(usize, usize)>,
}

/// One resource of a native YAML file: (JSON pointer, ARM type, item with its fields at the top
/// level, the format's conveniences applied).
pub type NativeResource = (String, String, Value);

/// The resources of a native YAML file: what a store of ARM resources keeps of it. `None` when
/// the text is not a native network.
pub fn native_resources(
    file: &str,
    text: &str,
) -> Option<Result<Vec<NativeResource>, Diagnostics>> {
    let doc = match yaml::parse(file, text) {
        Ok(d) => d,
        Err(d) => return Some(Err(Diagnostics(vec![d]))),
    };
    if !yaml::is_native(&doc.value) {
        return None;
    }
    let mut diags = Diagnostics::default();
    let out = yaml::resources(&doc.value, &mut diags);
    Some(if diags.has_errors() {
        Err(diags)
    } else {
        Ok(out)
    })
}

/// Import one file's text. `base_dir` resolves linked templates.
pub fn import_text(
    file: &str,
    text: &str,
    options: &ImportOptions,
    base_dir: Option<&Path>,
) -> FileImport {
    let mut out = FileImport::default();
    let is_yaml = file.ends_with(".yaml") || file.ends_with(".yml");
    let doc = if is_yaml {
        match yaml::parse(file, text) {
            Ok(d) => d,
            Err(d) => {
                out.kind = InputKind::Invalid;
                out.diagnostics.push(d);
                return out;
            }
        }
    } else {
        match json::parse(file, text) {
            Ok(d) => d,
            Err(d) => {
                out.kind = InputKind::Invalid;
                out.diagnostics.push(d);
                return out;
            }
        }
    };
    // FMT-3: names match case-insensitively, so two keys differing only in case are ambiguous.
    for (pointer, key) in &doc.duplicate_keys {
        out.diagnostics.push(
            Diagnostic::error(format!(
                "two properties named `{key}` (ignoring case) in one object"
            ))
            .at(file, &format!("{pointer}/{}", json::pointer_token(key)))
            .field(key)
            .expected("each property once; property names are case-insensitive (FMT-3)"),
        );
    }
    let linked = import_document(&doc, options, base_dir, &mut out);
    let located: Vec<Diagnostic> = out
        .diagnostics
        .0
        .drain(..)
        .map(|d| match linked.iter().find(|l| l.file == d.file) {
            Some(l) => l.locate(d),
            None => doc.locate(d),
        })
        .collect();
    out.diagnostics.0 = located;
    // The missing-parent error comes after all files are read (`Merger::finish`): keep the
    // child's line and column for it.
    for s in &mut out.synthetic {
        let d = linked
            .iter()
            .find(|l| l.file == s.origin.file)
            .unwrap_or(&doc);
        s.position = d.position(&s.origin.pointer);
    }
    out
}

/// The prefix `palisade-arm` puts before a problem found in a linked template.
const LINKED_PREFIX: &str = "in linked template '";

/// Reads one document; returns the linked templates it read (to locate their diagnostics).
fn import_document(
    doc: &Document,
    options: &ImportOptions,
    base_dir: Option<&Path>,
    out: &mut FileImport,
) -> Vec<Document> {
    let root = Node::root(&doc.value, "");
    let file = doc.file.as_str();
    let mut reader = reader::Reader::new(file, options.strict);
    let linked: Rc<RefCell<Vec<Document>>> = Rc::default();
    // A linked template's path as given (relative to the root template's folder) → its file name.
    let linked_name = |rel: &str| -> String {
        match base_dir {
            Some(dir) => dir.join(rel).display().to_string(),
            None => rel.to_string(),
        }
    };
    if yaml::is_native(&doc.value) {
        out.kind = InputKind::NativeYaml;
        for (pointer, ty, value) in yaml::resources(&doc.value, &mut reader.diagnostics) {
            reader.resource(&Node::root(&value, &pointer), Some(&ty), false);
        }
    } else if palisade_arm::is_template(&doc.value) {
        out.kind = InputKind::Template;
        let mut arm = palisade_arm::Options::default();
        if let Some((_, p)) = &options.parameters {
            if !options.parameters_from_sibling || declares_any(&doc.value, p) {
                arm.parameters = Some(p.clone());
            }
        }
        if let Some(dir) = base_dir {
            let dir = dir.to_path_buf();
            let seen = Rc::clone(&linked);
            arm.read_linked = Some(Box::new(move |rel: &str| {
                let p = dir.join(rel);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read linked template {}: {e}", p.display()))?;
                let d = json::parse(&p.display().to_string(), &text).map_err(|d| d.to_string())?;
                let value = d.value.clone();
                seen.borrow_mut().push(d);
                Ok(value)
            }));
        }
        expand_into(
            &mut reader,
            &doc.value,
            &arm,
            "",
            options.strict,
            &linked_name,
        );
    } else if blocks::is_building_blocks(&doc.value) {
        out.kind = InputKind::BuildingBlocks;
        blocks::read(&mut reader, &doc.value, options.strict);
    } else if is_parameters_file(&doc.value) {
        out.kind = InputKind::Parameters;
    } else if let Some(body) = rest_example_body(&root) {
        out.kind = InputKind::RestExample;
        reader.body(&body);
    } else if root.field("value").is_some_and(|v| v.value.is_array()) {
        out.kind = InputKind::RestList;
        reader.body(&root);
    } else if root.value.is_array() {
        out.kind = InputKind::CliOutput;
        // CLI output is a list of resource objects; a list of anything else (a YAML file whose
        // top level is a list of strings) describes no network.
        for item in root.items().iter().filter(|i| !i.value.is_object()) {
            reader.diagnostics.push(
                Diagnostic::error("a list item that is not a resource object")
                    .at(file, &item.pointer)
                    .found(item.text())
                    .expected("a resource object (CLI output is a list of resources)"),
            );
        }
        reader.body(&root);
    } else if root.value.is_object() {
        out.kind = if root.key("properties").is_some() {
            InputKind::RestResource
        } else {
            InputKind::CliOutput
        };
        reader.body(&root);
    } else {
        reader.diagnostics.push(
            Diagnostic::error("the file is not a network description")
                .at(file, "")
                .expected("an ARM template, a REST body, CLI output or a palisade YAML file"),
        );
    }
    if reader.observations > 0 && reader.network.is_empty() {
        out.kind = InputKind::Observation;
    }
    let read = reader.finish();
    // A body that is none of the shapes Palisade reads should not pass as an empty network.
    let nothing_read =
        read.network.is_empty() && read.synthetic.is_empty() && read.diagnostics.is_empty();
    if nothing_read
        && matches!(out.kind, InputKind::RestResource | InputKind::CliOutput)
        && doc.value.as_object().is_some_and(|o| !o.is_empty())
    {
        // Name what was found, so that a typo in a type is not a mystery (issue 17).
        let message = match read.skipped_types.as_slice() {
            [] => "no network resource recognised in this file (no `type`, `id` or resource fields Palisade reads); it is ignored".to_string(),
            types => format!(
                "no network resource recognised in this file: resource type {} is not modelled; it is ignored",
                types.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            ),
        };
        // A scenario's `flows.yaml` (expected outcomes, read by tests and `lab check`) sits
        // beside its network on purpose: loading the folder should not warn about it.
        let flows_file = read.skipped_types.is_empty()
            && doc
                .value
                .as_object()
                .is_some_and(|o| o.contains_key("flows"));
        let d = if flows_file {
            Diagnostic::note(
                "a flows file (expected outcomes), not a network description; it is ignored",
            )
        } else {
            Diagnostic::warning(message)
                .expected("an NSG, route table, virtual network, subnet, NIC, firewall, firewall policy, rule collection group or IP group (FMT-1)")
        };
        out.diagnostics.push(d.at(&doc.file, ""));
    }
    out.network = read.network;
    out.diagnostics.extend(read.diagnostics.0);
    out.synthetic = read.synthetic;
    out.set_aside = read.set_aside;
    out.dropped = read.dropped;
    let docs = std::mem::take(&mut *linked.borrow_mut());
    docs
}

/// Expand a template (FMT-4…6) and read its resources. `prefix` is the template's JSON pointer
/// inside the file (empty for a template file); `linked_name` turns a linked template's path into
/// its file name.
fn expand_into(
    reader: &mut reader::Reader,
    template: &Value,
    arm: &palisade_arm::Options,
    prefix: &str,
    strict: bool,
    linked_name: &dyn Fn(&str) -> String,
) {
    let file = reader.file().to_string();
    let expansion = palisade_arm::expand(template, arm);
    for p in expansion.problems {
        let sev = match p.severity {
            palisade_arm::Severity::Error => Severity::Error,
            palisade_arm::Severity::Warning if strict => Severity::Error,
            palisade_arm::Severity::Warning => Severity::Warning,
            palisade_arm::Severity::Note => Severity::Note,
        };
        // Problems of a linked template point into that file.
        let (at, pointer, message) = match p
            .message
            .strip_prefix(LINKED_PREFIX)
            .and_then(|rest| rest.split_once("': "))
        {
            Some((rel, msg)) => (linked_name(rel), p.pointer.clone(), msg.to_string()),
            None => (file.clone(), format!("{prefix}{}", p.pointer), p.message),
        };
        reader
            .diagnostics
            .push(Diagnostic::new(sev, message).at(&at, &pointer));
    }
    for r in &expansion.resources {
        // Resources of a linked template are located in that file (FMT-12).
        match r.linked_file.as_deref() {
            Some(rel) => {
                reader.set_file(&linked_name(rel));
                reader.resource(&Node::root(&r.value, &r.pointer), None, true);
            }
            None => {
                reader.set_file(&file);
                let pointer = format!("{prefix}{}", r.pointer);
                reader.resource(&Node::root(&r.value, &pointer), None, true);
            }
        }
    }
    reader.set_file(&file);
}

fn is_parameters_file(v: &Value) -> bool {
    let schema = v
        .get("$schema")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    schema.contains("deploymentparameters")
        || (v.get("parameters").is_some_and(Value::is_object)
            && v.get("resources").is_none()
            && v.get("responses").is_none()
            && v.get("properties").is_none())
}

/// FMT-1: an API example's response body (200, else 201), else its request body.
fn rest_example_body<'a>(root: &Node<'a>) -> Option<Node<'a>> {
    let responses = root.field("responses")?;
    root.field("parameters")?;
    for code in ["200", "201"] {
        if let Some(body) = responses.key(code).and_then(|r| r.field("body")) {
            return Some(body);
        }
    }
    let params = root.field("parameters")?;
    for key in [
        "parameters",
        "securityRuleParameters",
        "routeParameters",
        "subnetParameters",
        "VirtualNetworkPeeringParameters",
        "routeTableParameters",
        "ruleCollectionGroupParameters",
    ] {
        if let Some(b) = params.field(key) {
            return Some(b);
        }
    }
    // Examples with only a 202/204 response and no body describe no configuration.
    Some(Node::root(&Value::Null, "/responses"))
}

#[cfg(test)]
mod tests;
