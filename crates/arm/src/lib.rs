//! # palisade-arm
//!
//! Offline expansion of Azure Resource Manager (ARM) deployment templates into the plain resources
//! they would deploy, so that Palisade can check NSGs, routes and firewalls written as templates
//! without talking to Azure (spec FMT-4, FMT-5, FMT-6).
//!
//! [`expand`] evaluates every template expression (`"[concat('a', parameters('b'))]"`), applies
//! parameter values, lazily evaluates variables, unrolls resource, property and variable `copy`
//! loops, drops resources whose `condition` is false, follows nested deployments (inline and, via
//! [`Options::read_linked`], local linked templates) and flattens child resources declared in a
//! parent's `resources[]`. Each resulting resource keeps the JSON pointer of its declaration in the
//! original text, so later validation errors can point at the template.
//!
//! What cannot be known offline — `reference()`, `list*()`, parameters without a value, unknown
//! functions — does not stop expansion: the value becomes the marker object
//! `{"$unresolved": "<expression text>", "$why": "<cause>"}` ([`UNRESOLVED_KEY`], [`WHY_KEY`])
//! and a located [`Problem`] explains why. Decisions about such values are left to the caller
//! (strict or lenient import).
//!
//! Nothing here panics on any input: recursion, loop counts (800 per loop, 10,000 per
//! expansion) and value sizes are bounded and every violation becomes a [`Problem`].
//!
//! Not evaluated: lambda functions (`map`, `filter`, `reduce`, `sort`, `toObject`), `float`,
//! `dateTimeToEpoch`/`dateTimeFromEpoch`, template `outputs`. `uniqueString` and `guid` are
//! deterministic but not ARM's own hashes; `utcNow` and `newGuid` return fixed values and
//! `dateTimeAdd` its base time unchanged, so that expansion is reproducible.

mod cidr;
mod eval;
mod expand;
mod functions;
mod ids;
mod lexer;
mod parser;
mod scope;
mod text;
mod util;

use std::fmt;

use serde_json::Value;

pub use eval::EvalError;
pub use parser::SyntaxError;

/// An unresolvable value is represented in the output JSON as the object
/// `{"$unresolved": "<expression text>", "$why": "<cause>"}`.
pub const UNRESOLVED_KEY: &str = "$unresolved";

/// The marker's cause: what has no value offline, in words (`parameter 'x' has no value (none
/// given and no defaultValue)`, `reference() is known only at deployment time`). A value built
/// from another unknown value carries that value's cause, so the cause names the root.
pub const WHY_KEY: &str = "$why";

/// Reads a linked template given its path relative to the linking template's directory.
pub type LinkedReader = Box<dyn Fn(&str) -> Result<Value, String>>;

/// How to expand a template: parameter values and the placeholders that stand in for the
/// deployment target.
pub struct Options {
    /// Parameter values: a parameters file's whole JSON (`{"$schema": .., "parameters": {"x":
    /// {"value": ..}}}`), or a plain `{"x": {"value": ..}}` / `{"x": value}` map.
    pub parameters: Option<Value>,
    /// Used by `subscription()`, `resourceId()` and friends.
    pub subscription_id: String,
    /// Used by `resourceGroup()` and `resourceId()`.
    pub resource_group: String,
    /// `resourceGroup().location`.
    pub location: String,
    /// Reads a linked template. The argument is a path relative to the root template's
    /// directory: `templateLink.relativePath`, or the path part of `templateLink.uri` left when
    /// `_artifactsLocation*` parameters read as empty (`nestedtemplates/vnet.json`), joined with
    /// the directory of the linking file; it may start with `..`. For an absolute URI the path
    /// suffixes are tried longest first. Returns the parsed JSON or an error text. `None`:
    /// linked templates are not followed and give a warning.
    pub read_linked: Option<LinkedReader>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parameters: None,
            subscription_id: "00000000-0000-0000-0000-000000000000".to_string(),
            resource_group: "palisade-rg".to_string(),
            location: "eastus".to_string(),
            read_linked: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("parameters", &self.parameters)
            .field("subscription_id", &self.subscription_id)
            .field("resource_group", &self.resource_group)
            .field("location", &self.location)
            .field("read_linked", &self.read_linked.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

/// One deployed resource after expansion.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandedResource {
    /// The resource object with every expression evaluated (`type`, `name`, `properties`, ...),
    /// `copy`/`condition` removed. Child resources declared in `resources[]` are separate
    /// entries with full type `parent/type/child` and name `parent/child` (FMT-6).
    pub value: Value,
    /// JSON pointer of the resource's declaration in the original template text (of the linked
    /// file when `linked_file` is set), e.g. `/resources/3`,
    /// `/resources/2/properties/template/resources/0` or `/resources/1/resources/0`.
    pub pointer: String,
    /// `copyIndex()` of the innermost resource-level copy loop this instance came from.
    pub copy_index: Option<i64>,
    /// The linked template (path relative to the root template's directory) the resource came
    /// from.
    pub linked_file: Option<String>,
}

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The template is wrong; ARM would reject it.
    Error,
    /// Expansion went on, but a value or resource may not be what Azure would deploy.
    Warning,
    /// Information, e.g. a skipped `existing` resource.
    Note,
}

/// Something noticed while expanding, located by a JSON pointer into the original text.
/// Problems from a linked template name the file at the start of the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    pub severity: Severity,
    pub pointer: String,
    pub message: String,
}

/// The result of [`expand`]: resources in template order, and every problem found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expansion {
    pub resources: Vec<ExpandedResource>,
    pub problems: Vec<Problem>,
}

/// Whether a JSON document is an ARM deployment template: its `$schema` names a
/// `deploymentTemplate`, or it has a `resources` array (or, with `languageVersion`, a symbolic
/// `resources` object).
pub fn is_template(v: &Value) -> bool {
    if !v.is_object() {
        return false;
    }
    if let Some(Value::String(schema)) = util::val_ci(v, "$schema") {
        if schema.to_ascii_lowercase().contains("deploymenttemplate") {
            return true;
        }
    }
    match util::val_ci(v, "resources") {
        Some(Value::Array(_)) => true,
        Some(Value::Object(_)) => util::val_ci(v, "languageVersion").is_some(),
        _ => false,
    }
}

/// True for the `{"$unresolved": ..}` marker that stands for a value only known at deployment
/// time.
pub fn is_unresolved(v: &Value) -> bool {
    util::is_marker(v)
}

/// Why the first unresolved marker in `v` has no value ([`WHY_KEY`]).
pub fn unresolved_why(v: &Value) -> Option<&str> {
    util::why_of(v)
}

/// Expands a template into its resources (FMT-4, FMT-5, FMT-6). Never panics; everything that
/// goes wrong is a [`Problem`].
pub fn expand(template: &Value, options: &Options) -> Expansion {
    expand::run(template, options)
}

/// Evaluates one expression string (`"[concat('a', 'b')]"`) in an empty scope: no parameters,
/// no variables, default placeholders. A string that is not an expression is returned as is
/// (with `[[` unescaped). Values only known at deployment time come back as the unresolved
/// marker; errors as `Err`, a malformed expression ([`EvalError::Syntax`]) apart from one ARM
/// would reject when evaluating it ([`EvalError::Invalid`]).
pub fn evaluate_standalone(expr: &str) -> Result<Value, EvalError> {
    eval::evaluate_standalone(expr)
}
