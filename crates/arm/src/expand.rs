//! Walks a template's resources: copy loops and conditions (FMT-5), nested and linked
//! deployments, child resources declared in `resources[]` (FMT-6).

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::eval::{Count, Ctx, Eval, LoopFrame, LoopKind, Loops};
use crate::scope::{given_parameters, Env, Given, Scope};
use crate::util::{
    clip, get_ci, is_marker, map_get_ci, marker, ptr_join, type_name, val_ci, why_of,
};
use crate::{ExpandedResource, Expansion, Options, Severity, UNRESOLVED_KEY};

/// Deepest chain of nested deployments followed (a linked template may link itself).
const MAX_NESTING: usize = 16;

/// Most path suffixes tried when a linked template's URI is absolute.
const MAX_LINK_CANDIDATES: usize = 8;

pub(crate) fn run(template: &Value, options: &Options) -> Expansion {
    let ctx = Ctx::new(options);
    let expander = Expander {
        ctx: &ctx,
        out: RefCell::new(Vec::new()),
    };
    if template.is_object() {
        let supplied = root_parameters(&ctx, template, options);
        let scope = Scope::from_template(&ctx, template, "", Env::root(options), None, supplied);
        expander.template(template, &scope, "", Loops::default(), &Origin::default());
    } else {
        ctx.report(
            None,
            Severity::Error,
            "",
            format!(
                "a template must be a JSON object, found {}",
                type_name(template)
            ),
        );
    }
    let resources = expander.out.into_inner();
    Expansion {
        resources,
        problems: ctx.into_problems(),
    }
}

/// Parameter values from [`Options::parameters`], keyed by lower-case name.
fn root_parameters(
    ctx: &Ctx<'_>,
    template: &Value,
    options: &Options,
) -> HashMap<String, (String, Value)> {
    let mut supplied = HashMap::new();
    let Some(given) = &options.parameters else {
        return supplied;
    };
    if !given.is_object() {
        ctx.report(
            None,
            Severity::Error,
            "",
            format!(
                "parameter values must be a JSON object, found {}",
                type_name(given)
            ),
        );
        return supplied;
    }
    let declares_parameters = val_ci(template, "parameters")
        .and_then(|p| get_ci(p, "parameters"))
        .is_some();
    for (name, g) in given_parameters(given, declares_parameters) {
        let value = match g {
            Given::Value(v) => v,
            Given::KeyVault => {
                ctx.report(
                    None,
                    Severity::Warning,
                    &ptr_join("/parameters", &name),
                    format!("parameter '{name}' is a Key Vault reference; its value is unresolved"),
                );
                marker(
                    &format!("Key Vault reference for parameter '{name}'"),
                    &format!("parameter '{name}' is a Key Vault reference"),
                )
            }
        };
        supplied.insert(name.to_lowercase(), (name, value));
    }
    supplied
}

/// Which file the current text belongs to, and the chain of deployments that led there.
#[derive(Clone, Default)]
struct Origin {
    /// Linked file (relative to the root template's directory); `None` for the root file.
    file: Option<String>,
    /// Linked files being expanded, outermost first (to catch a template that links itself).
    chain: Vec<String>,
    nesting: usize,
}

impl Origin {
    fn nested(&self) -> Origin {
        Origin {
            file: self.file.clone(),
            chain: self.chain.clone(),
            nesting: self.nesting + 1,
        }
    }

    fn linked(&self, file: &str) -> Origin {
        let mut chain = self.chain.clone();
        chain.push(file.to_string());
        Origin {
            file: Some(file.to_string()),
            chain,
            nesting: self.nesting + 1,
        }
    }

    /// Directory of the current file, the base of relative links.
    fn dir(&self) -> &str {
        match &self.file {
            Some(f) => f.rfind('/').map_or("", |i| &f[..i]),
            None => "",
        }
    }
}

/// Type and name of an expanded parent, for its children.
struct Parent {
    type_name: Value,
    name: Value,
}

struct Expander<'a> {
    ctx: &'a Ctx<'a>,
    out: RefCell<Vec<ExpandedResource>>,
}

impl<'a> Expander<'a> {
    fn report(&self, origin: &Origin, severity: Severity, ptr: &str, message: String) {
        self.ctx
            .report(origin.file.as_deref(), severity, ptr, message);
    }

    /// Expands the `resources` of a template (an array, or an object of symbolic names).
    fn template(
        &self,
        template: &Value,
        scope: &Scope<'_>,
        base_ptr: &str,
        loops: Loops<'_>,
        origin: &Origin,
    ) {
        let Some((key, resources)) = get_ci(template, "resources") else {
            return;
        };
        let rptr = ptr_join(base_ptr, key);
        match resources {
            Value::Array(items) => {
                for (i, r) in items.iter().enumerate() {
                    self.resource(
                        r,
                        &ptr_join(&rptr, &i.to_string()),
                        scope,
                        loops,
                        None,
                        origin,
                    );
                }
            }
            Value::Object(items) => {
                for (name, r) in items {
                    self.resource(r, &ptr_join(&rptr, name), scope, loops, None, origin);
                }
            }
            Value::Null => {}
            other => self.report(
                origin,
                Severity::Error,
                &rptr,
                format!("'resources' must be an array, found {}", type_name(other)),
            ),
        }
    }

    /// One resource declaration: unrolls its `copy` loop.
    fn resource(
        &self,
        raw: &Value,
        ptr: &str,
        scope: &Scope<'_>,
        loops: Loops<'_>,
        parent: Option<&Parent>,
        origin: &Origin,
    ) {
        if !raw.is_object() {
            self.report(
                origin,
                Severity::Error,
                ptr,
                format!("a resource must be an object, found {}", type_name(raw)),
            );
            return;
        }
        if val_ci(raw, "existing") == Some(&Value::Bool(true)) {
            self.report(
                origin,
                Severity::Note,
                ptr,
                "resource marked 'existing' is only referenced, not deployed; skipped".into(),
            );
            return;
        }
        let Some(_guard) = self.ctx.enter() else {
            self.report(
                origin,
                Severity::Error,
                ptr,
                "resources are nested too deeply to expand".into(),
            );
            return;
        };
        let ev = Eval::new(self.ctx, scope);
        let Some((copy_key, copy)) = get_ci(raw, "copy") else {
            if self.ctx.take_budget(1, origin.file.as_deref(), ptr) == 1 {
                self.instance(raw, ptr, scope, loops, parent, origin);
            }
            return;
        };
        let copy_ptr = ptr_join(ptr, copy_key);
        if !copy.is_object() {
            self.report(
                origin,
                Severity::Error,
                &copy_ptr,
                format!(
                    "a resource's copy must be an object, found {}",
                    type_name(copy)
                ),
            );
            return;
        }
        let name = match val_ci(copy, "name") {
            Some(Value::String(n)) => n.clone(),
            _ => {
                self.report(
                    origin,
                    Severity::Error,
                    &copy_ptr,
                    "a resource copy loop needs a 'name'".into(),
                );
                String::new()
            }
        };
        match ev.copy_count(copy, &copy_ptr, loops, &name) {
            Count::N(n) => {
                for i in 0..n {
                    if self.ctx.take_budget(1, origin.file.as_deref(), &copy_ptr) == 0 {
                        break;
                    }
                    let frame = LoopFrame {
                        name: name.clone(),
                        index: i64::try_from(i).unwrap_or(i64::MAX),
                        kind: LoopKind::Resource,
                        parent: loops,
                    };
                    self.instance(raw, ptr, scope, Loops(Some(&frame)), parent, origin);
                }
            }
            Count::Unresolved(text, _) => self.report(
                origin,
                Severity::Warning,
                &copy_ptr,
                format!(
                    "count of resource copy loop '{name}' cannot be evaluated offline ({}); no instances are expanded",
                    clip(&text)
                ),
            ),
            Count::Invalid => {}
        }
    }

    /// One instance of a resource: condition, evaluation, children.
    fn instance(
        &self,
        raw: &Value,
        ptr: &str,
        scope: &Scope<'_>,
        loops: Loops<'_>,
        parent: Option<&Parent>,
        origin: &Origin,
    ) {
        let ev = Eval::new(self.ctx, scope);
        let Some(obj) = raw.as_object() else {
            return;
        };
        if let Some((key, cond)) = map_get_ci(obj, "condition") {
            let cptr = ptr_join(ptr, key);
            match ev.json(cond, &cptr, loops) {
                Value::Bool(true) => {}
                Value::Bool(false) => return,
                Value::String(s) if s.eq_ignore_ascii_case("true") => {}
                Value::String(s) if s.eq_ignore_ascii_case("false") => return,
                v if is_marker(&v) => self.report(
                    origin,
                    Severity::Warning,
                    &cptr,
                    "condition cannot be evaluated offline; the resource is kept".into(),
                ),
                other => self.report(
                    origin,
                    Severity::Error,
                    &cptr,
                    format!(
                        "condition must be a bool, found {}; the resource is kept",
                        type_name(&other)
                    ),
                ),
            }
        }
        let type_value = map_get_ci(obj, "type").map(|(k, t)| ev.json(t, &ptr_join(ptr, k), loops));
        if let Some(Value::String(t)) = &type_value {
            if t.eq_ignore_ascii_case("Microsoft.Resources/deployments") {
                self.deployment(raw, ptr, scope, loops, origin);
                return;
            }
        }
        let mut value = Map::new();
        let mut children = None;
        for (key, v) in obj {
            match key.to_ascii_lowercase().as_str() {
                "copy" | "condition" => {}
                "resources" if v.is_array() => children = Some((key, v)),
                "type" => {
                    value.insert(key.clone(), type_value.clone().unwrap_or(Value::Null));
                }
                _ => {
                    value.insert(key.clone(), ev.json(v, &ptr_join(ptr, key), loops));
                }
            }
        }
        if map_get_ci(&value, "type").is_none() {
            self.report(
                origin,
                Severity::Error,
                ptr,
                "resource has no 'type'".into(),
            );
        }
        if map_get_ci(&value, "name").is_none() {
            self.report(
                origin,
                Severity::Error,
                ptr,
                "resource has no 'name'".into(),
            );
        }
        if let Some(parent) = parent {
            qualify_child(&mut value, parent);
        }
        let me = Parent {
            type_name: map_get_ci(&value, "type")
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null),
            name: map_get_ci(&value, "name")
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null),
        };
        self.out.borrow_mut().push(ExpandedResource {
            value: Value::Object(value),
            pointer: ptr.to_string(),
            copy_index: loops.resource_index(),
            linked_file: origin.file.clone(),
        });
        if let Some((key, Value::Array(kids))) = children {
            let kids_ptr = ptr_join(ptr, key);
            for (j, kid) in kids.iter().enumerate() {
                self.resource(
                    kid,
                    &ptr_join(&kids_ptr, &j.to_string()),
                    scope,
                    loops,
                    Some(&me),
                    origin,
                );
            }
        }
    }

    /// A `Microsoft.Resources/deployments` resource: expands what it deploys, not itself.
    fn deployment(
        &self,
        raw: &Value,
        ptr: &str,
        scope: &Scope<'_>,
        loops: Loops<'_>,
        origin: &Origin,
    ) {
        let ev = Eval::new(self.ctx, scope);
        let Some((props_key, props)) = get_ci(raw, "properties") else {
            self.report(
                origin,
                Severity::Warning,
                ptr,
                "deployment has no 'properties'; nothing to expand".into(),
            );
            return;
        };
        let props_ptr = ptr_join(ptr, props_key);
        if origin.nesting >= MAX_NESTING {
            self.report(
                origin,
                Severity::Error,
                ptr,
                format!("deployments are nested more than {MAX_NESTING} levels deep; not expanded"),
            );
            return;
        }
        let Some(_guard) = self.ctx.enter() else {
            self.report(
                origin,
                Severity::Error,
                ptr,
                "deployments are nested too deeply to expand".into(),
            );
            return;
        };
        let inner = match get_ci(props, "expressionEvaluationOptions") {
            Some((k, opts)) => match get_ci(opts, "scope") {
                Some((sk, s)) => {
                    let sptr = ptr_join(&ptr_join(&props_ptr, k), sk);
                    matches!(ev.json(s, &sptr, loops), Value::String(s) if s.eq_ignore_ascii_case("inner"))
                }
                None => false,
            },
            None => false,
        };
        if let Some((template_key, template)) = get_ci(props, "template") {
            let template_ptr = ptr_join(&props_ptr, template_key);
            if !template.is_object() {
                self.report(
                    origin,
                    Severity::Error,
                    &template_ptr,
                    format!(
                        "a nested template must be an object, found {}",
                        type_name(template)
                    ),
                );
                return;
            }
            if inner {
                let supplied = self.nested_parameters(&ev, props, &props_ptr, loops, origin);
                let env = self.nested_env(&ev, raw, ptr, loops, scope);
                let nested = Scope::from_template(
                    self.ctx,
                    template,
                    &template_ptr,
                    env,
                    scope.file.clone(),
                    supplied,
                );
                self.template(
                    template,
                    &nested,
                    &template_ptr,
                    Loops::default(),
                    &origin.nested(),
                );
            } else {
                for section in ["parameters", "variables"] {
                    if let Some((k, Value::Object(m))) = get_ci(template, section) {
                        if !m.is_empty() {
                            self.report(
                                origin,
                                Severity::Warning,
                                &ptr_join(&template_ptr, k),
                                format!(
                                    "with the default 'outer' expression scope a nested template uses the parent's {section}; its own are ignored"
                                ),
                            );
                        }
                    }
                }
                self.template(template, scope, &template_ptr, loops, &origin.nested());
            }
            return;
        }
        if let Some((link_key, link)) = get_ci(props, "templateLink") {
            let link_ptr = ptr_join(&props_ptr, link_key);
            self.linked(
                raw, ptr, props, &props_ptr, link, &link_ptr, scope, loops, origin,
            );
            return;
        }
        self.report(
            origin,
            Severity::Warning,
            &props_ptr,
            "deployment has neither 'template' nor 'templateLink'; nothing to expand".into(),
        );
    }

    /// Follows a `templateLink` to a local file through [`Options::read_linked`].
    #[allow(clippy::too_many_arguments)]
    fn linked(
        &self,
        raw: &Value,
        ptr: &str,
        props: &Value,
        props_ptr: &str,
        link: &Value,
        link_ptr: &str,
        scope: &Scope<'_>,
        loops: Loops<'_>,
        origin: &Origin,
    ) {
        let Some(reader) = &self.ctx.options.read_linked else {
            self.report(
                origin,
                Severity::Warning,
                link_ptr,
                "linked template not followed (no reader configured); its resources are missing"
                    .into(),
            );
            return;
        };
        let candidates = self.link_candidates(link, link_ptr, scope, loops, origin);
        if candidates.is_empty() {
            self.report(
                origin,
                Severity::Warning,
                link_ptr,
                "the linked template's location cannot be resolved to a local path offline; its resources are missing"
                    .into(),
            );
            return;
        }
        let dir = origin.dir();
        let mut tried = Vec::new();
        let mut last_error = String::new();
        let mut found = None;
        for rel in candidates {
            let path = join_path(dir, &rel);
            if origin.chain.contains(&path) {
                self.report(
                    origin,
                    Severity::Error,
                    link_ptr,
                    format!("linked template '{path}' links back to itself; not expanded again"),
                );
                return;
            }
            match reader(&path) {
                Ok(v) => {
                    found = Some((path, v));
                    break;
                }
                Err(e) => {
                    last_error = e;
                    tried.push(path);
                }
            }
        }
        let Some((path, template)) = found else {
            self.report(
                origin,
                Severity::Warning,
                link_ptr,
                format!(
                    "linked template could not be read (tried {}): {last_error}; its resources are missing",
                    tried.join(", ")
                ),
            );
            return;
        };
        if !template.is_object() {
            self.report(
                origin,
                Severity::Error,
                link_ptr,
                format!("linked template '{path}' is not a JSON object"),
            );
            return;
        }
        let ev = Eval::new(self.ctx, scope);
        let supplied = self.nested_parameters(&ev, props, props_ptr, loops, origin);
        let env = self.nested_env(&ev, raw, ptr, loops, scope);
        let child_origin = origin.linked(&path);
        let nested = Scope::from_template(self.ctx, &template, "", env, Some(path), supplied);
        self.template(&template, &nested, "", Loops::default(), &child_origin);
    }

    /// Local paths a `templateLink` may point at, best first. `relativePath` is used as is; a
    /// `uri` is evaluated with `_artifactsLocation*` and value-less parameters read as empty, so
    /// `uri(parameters('_artifactsLocation'), 'nested/x.json')` gives `nested/x.json`. An
    /// absolute URI yields its path suffixes, longest first.
    fn link_candidates(
        &self,
        link: &Value,
        link_ptr: &str,
        scope: &Scope<'_>,
        loops: Loops<'_>,
        origin: &Origin,
    ) -> Vec<String> {
        if let Some((k, rel)) = get_ci(link, "relativePath") {
            let v = Eval::new(self.ctx, scope).json(rel, &ptr_join(link_ptr, k), loops);
            return match v {
                Value::String(s) if !s.trim().is_empty() => vec![s],
                _ => {
                    self.report(
                        origin,
                        Severity::Warning,
                        &ptr_join(link_ptr, k),
                        "templateLink.relativePath is not a resolvable string".into(),
                    );
                    Vec::new()
                }
            };
        }
        let Some((k, uri)) = get_ci(link, "uri") else {
            return Vec::new();
        };
        let uri_ptr = ptr_join(link_ptr, k);
        let blank = scope.blanked();
        let guessed = self
            .ctx
            .quietly(|| Eval::new(self.ctx, &blank).json(uri, &uri_ptr, loops));
        let Value::String(text) = guessed else {
            return Vec::new();
        };
        let text = text
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string();
        match text.find("://") {
            Some(i) => {
                let after_host = text[i + 3..].split_once('/').map_or("", |(_, p)| p);
                let segments: Vec<&str> = after_host.split('/').filter(|s| !s.is_empty()).collect();
                let first = segments.len().saturating_sub(MAX_LINK_CANDIDATES);
                (first..segments.len())
                    .map(|j| segments[j..].join("/"))
                    .collect()
            }
            None => {
                let rel = text.trim_start_matches('/');
                if rel.is_empty() {
                    Vec::new()
                } else {
                    vec![rel.to_string()]
                }
            }
        }
    }

    /// Values for a nested template's parameters: `properties.parameters` evaluated in the
    /// enclosing scope.
    fn nested_parameters(
        &self,
        ev: &Eval<'_>,
        props: &Value,
        props_ptr: &str,
        loops: Loops<'_>,
        origin: &Origin,
    ) -> HashMap<String, (String, Value)> {
        let mut supplied = HashMap::new();
        if let Some((k, _)) = get_ci(props, "parametersLink") {
            self.report(
                origin,
                Severity::Warning,
                &ptr_join(props_ptr, k),
                "parametersLink is not followed; the nested template's parameters use their defaults".into(),
            );
        }
        let Some((k, params)) = get_ci(props, "parameters") else {
            return supplied;
        };
        let params_ptr = ptr_join(props_ptr, k);
        let Value::Object(params) = params else {
            self.report(
                origin,
                Severity::Error,
                &params_ptr,
                format!(
                    "deployment parameters must be an object, found {}",
                    type_name(params)
                ),
            );
            return supplied;
        };
        for (name, spec) in params {
            let spec_ptr = ptr_join(&params_ptr, name);
            let value = if let Some((vk, v)) = get_ci(spec, "value") {
                ev.json(v, &ptr_join(&spec_ptr, vk), loops)
            } else if get_ci(spec, "reference").is_some() {
                self.report(
                    origin,
                    Severity::Warning,
                    &spec_ptr,
                    format!("parameter '{name}' is a Key Vault reference; its value is unresolved"),
                );
                marker(
                    &format!("Key Vault reference for parameter '{name}'"),
                    &format!("parameter '{name}' is a Key Vault reference"),
                )
            } else {
                self.report(
                    origin,
                    Severity::Error,
                    &spec_ptr,
                    format!("deployment parameter '{name}' must be written {{\"value\": ...}}"),
                );
                continue;
            };
            supplied.insert(name.to_lowercase(), (name.clone(), value));
        }
        supplied
    }

    /// The placeholders inside a nested deployment: its name, and its target resource group or
    /// subscription when the deployment names one.
    fn nested_env(
        &self,
        ev: &Eval<'_>,
        raw: &Value,
        ptr: &str,
        loops: Loops<'_>,
        scope: &Scope<'_>,
    ) -> Env {
        let mut env = scope.env.clone();
        let evaluated_text = |key: &str| match get_ci(raw, key) {
            Some((k, v)) => match ev.json(v, &ptr_join(ptr, k), loops) {
                Value::String(s) => Some(s),
                _ => None,
            },
            None => None,
        };
        if let Some(name) = evaluated_text("name") {
            env.deployment_name = name;
        }
        if let Some(rg) = evaluated_text("resourceGroup") {
            env.resource_group = rg;
        }
        if let Some(sub) = evaluated_text("subscriptionId") {
            env.subscription_id = sub;
        }
        env
    }
}

/// Gives a child declared inside its parent's `resources[]` its full type
/// (`Microsoft.Network/virtualNetworks/subnets`) and name (`vnet/subnet`). A child already
/// written with a full type keeps it, and its name is prefixed only when it has fewer segments
/// than the type needs.
fn qualify_child(value: &mut Map<String, Value>, parent: &Parent) {
    let type_key = map_get_ci(value, "type").map(|(k, _)| k.clone());
    let name_key = map_get_ci(value, "name").map(|(k, _)| k.clone());
    let child_type = type_key.as_ref().and_then(|k| value.get(k)).cloned();
    let child_name = name_key.as_ref().and_then(|k| value.get(k)).cloned();
    let (full_type, short) = match (&child_type, &parent.type_name) {
        (Some(Value::String(ct)), _) if ct.contains('/') => (Value::String(ct.clone()), false),
        (Some(Value::String(ct)), Value::String(pt)) => (Value::String(format!("{pt}/{ct}")), true),
        (Some(ct), pt) => (joined_marker(pt, ct), true),
        (None, _) => return,
    };
    let needs_prefix = short
        || match (&full_type, &child_name) {
            (Value::String(t), Some(Value::String(n))) => {
                n.split('/').count() < t.split('/').count().saturating_sub(1)
            }
            _ => false,
        };
    if let Some(k) = type_key {
        value.insert(k, full_type);
    }
    if !needs_prefix {
        return;
    }
    if let (Some(k), Some(child_name)) = (name_key, child_name) {
        let full_name = match (&parent.name, &child_name) {
            (Value::String(p), Value::String(c)) => Value::String(format!("{p}/{c}")),
            (p, c) => joined_marker(p, c),
        };
        value.insert(k, full_name);
    }
}

/// The marker for `<parent>/<child>` where either part is unresolved; the first one's cause.
fn joined_marker(parent: &Value, child: &Value) -> Value {
    let why = why_of(parent).or_else(|| why_of(child));
    marker(
        &format!("{}/{}", text_of(parent), text_of(child)),
        why.unwrap_or("an unresolved value"),
    )
}

/// Text of a name part for building a combined unresolved marker.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if is_marker(v) => m
            .get(UNRESOLVED_KEY)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        other => other.to_string(),
    }
}

/// Joins a relative link to the linking file's directory, resolving `.` and `..`.
fn join_path(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for seg in rel.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_5_linked_paths_join_relative_to_the_linking_file() {
        assert_eq!(join_path("", "nested/a.json"), "nested/a.json");
        assert_eq!(join_path("nested", "b.json"), "nested/b.json");
        assert_eq!(join_path("nested/x", "../c.json"), "nested/c.json");
        assert_eq!(join_path("", "../../c.json"), "../../c.json");
        assert_eq!(join_path("a", "./b\\c.json"), "a/b/c.json");
    }
}
