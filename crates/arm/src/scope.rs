//! What an expression can see: the parameters, variables and user functions of one template
//! (or one nested template with `inner` scope), and the deployment placeholders.
//!
//! Definitions are borrowed from the template; values are computed on first use by the
//! evaluator and cached here, so a variable is evaluated once however often it is used, and a
//! variable that refers to itself is caught (slot [`Slot::Busy`]).

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

use crate::eval::Ctx;
use crate::util::{copy_entries, get_ci, map_get_ci, ptr_join, val_ci};
use crate::Severity;

/// The deployment target the placeholders in `resourceGroup()`, `subscription()`, `deployment()`
/// and `resourceId()` describe.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub deployment_name: String,
    pub management_group: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Param<'t> {
    pub name: String,
    pub ptr: String,
    /// The parameter's definition (`type`, `defaultValue`, ...).
    pub def: &'t Value,
    /// Value given from outside (parameters file or enclosing deployment), already final.
    pub supplied: Option<Value>,
}

#[derive(Debug, Clone)]
pub(crate) enum VarDef<'t> {
    Plain {
        value: &'t Value,
        ptr: String,
    },
    /// One entry of the variables' `copy` array: builds an array variable.
    Copy {
        entry: &'t Value,
        ptr: String,
        name: String,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct FuncDef<'t> {
    pub name: String,
    pub def: &'t Value,
    pub ptr: String,
}

/// Evaluation state of a parameter default or variable.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Busy,
    /// `None`: no value can be known offline (already reported).
    Done(Option<Value>),
}

pub(crate) struct Scope<'t> {
    pub env: Env,
    /// The linked file whose text the pointers of this scope refer to (`None`: the root file).
    pub file: Option<String>,
    pub params: HashMap<String, Param<'t>>,
    pub vars: HashMap<String, VarDef<'t>>,
    pub funcs: HashMap<String, FuncDef<'t>>,
    /// A user function's body: `variables()` and other user functions are not available.
    pub in_function: bool,
    /// Guessing a linked template's path: `_artifactsLocation*` and parameters without a value
    /// read as empty strings, so that only the literal path part of the URI remains.
    pub blank_missing: bool,
    pub param_slots: RefCell<HashMap<String, Slot>>,
    pub var_slots: RefCell<HashMap<String, Slot>>,
}

impl<'t> Scope<'t> {
    /// The scope of a template whose text starts at `base_ptr` (empty for a whole file).
    /// `supplied` maps lower-case parameter names to their given values.
    pub fn from_template(
        ctx: &Ctx<'_>,
        template: &'t Value,
        base_ptr: &str,
        env: Env,
        file: Option<String>,
        mut supplied: HashMap<String, (String, Value)>,
    ) -> Scope<'t> {
        let report = |severity, ptr: &str, msg: String| {
            ctx.report(file.as_deref(), severity, ptr, msg);
        };
        let mut params = HashMap::new();
        if let Some((key, section)) = get_ci(template, "parameters") {
            let section_ptr = ptr_join(base_ptr, key);
            match section {
                Value::Object(defs) => {
                    for (name, def) in defs {
                        let lower = name.to_lowercase();
                        let ptr = ptr_join(&section_ptr, name);
                        if params.contains_key(&lower) {
                            report(
                                Severity::Error,
                                &ptr,
                                format!("parameter '{name}' is declared twice (names are case-insensitive)"),
                            );
                        }
                        let given = supplied.remove(&lower).map(|(_, v)| v);
                        params.insert(
                            lower,
                            Param {
                                name: name.clone(),
                                ptr,
                                def,
                                supplied: given,
                            },
                        );
                    }
                }
                Value::Null => {}
                other => report(
                    Severity::Error,
                    &section_ptr,
                    format!(
                        "'parameters' must be an object, found {}",
                        crate::util::type_name(other)
                    ),
                ),
            }
        }
        let mut extra: Vec<_> = supplied.into_values().map(|(name, _)| name).collect();
        extra.sort();
        for name in extra {
            report(
                Severity::Warning,
                base_ptr,
                format!(
                    "a value is given for parameter '{name}', which the template does not declare"
                ),
            );
        }

        let mut vars = HashMap::new();
        if let Some((key, section)) = get_ci(template, "variables") {
            let section_ptr = ptr_join(base_ptr, key);
            match section {
                Value::Object(defs) => {
                    let mut insert = |lower: String, ptr: &str, name: &str, def: VarDef<'t>| {
                        if vars.insert(lower, def).is_some() {
                            report(
                                Severity::Error,
                                ptr,
                                format!("variable '{name}' is defined twice (names are case-insensitive)"),
                            );
                        }
                    };
                    for (name, value) in defs {
                        let ptr = ptr_join(&section_ptr, name);
                        match copy_entries(value).filter(|_| name.eq_ignore_ascii_case("copy")) {
                            Some(entries) => {
                                for (k, (copy_name, entry)) in entries.into_iter().enumerate() {
                                    let entry_ptr = ptr_join(&ptr, &k.to_string());
                                    insert(
                                        copy_name.to_lowercase(),
                                        &entry_ptr,
                                        copy_name,
                                        VarDef::Copy {
                                            entry,
                                            ptr: entry_ptr.clone(),
                                            name: copy_name.to_string(),
                                        },
                                    );
                                }
                            }
                            None => insert(
                                name.to_lowercase(),
                                &ptr,
                                name,
                                VarDef::Plain {
                                    value,
                                    ptr: ptr.clone(),
                                },
                            ),
                        }
                    }
                }
                Value::Null => {}
                other => report(
                    Severity::Error,
                    &section_ptr,
                    format!(
                        "'variables' must be an object, found {}",
                        crate::util::type_name(other)
                    ),
                ),
            }
        }

        let mut funcs = HashMap::new();
        if let Some((key, Value::Array(namespaces))) = get_ci(template, "functions") {
            let section_ptr = ptr_join(base_ptr, key);
            for (i, ns) in namespaces.iter().enumerate() {
                let ns_ptr = ptr_join(&section_ptr, &i.to_string());
                let namespace = val_ci(ns, "namespace").and_then(Value::as_str);
                let members = get_ci(ns, "members");
                match (namespace, members) {
                    (Some(namespace), Some((mkey, Value::Object(members)))) => {
                        let members_ptr = ptr_join(&ns_ptr, mkey);
                        for (name, def) in members {
                            let full = format!("{namespace}.{name}");
                            funcs.insert(
                                full.to_lowercase(),
                                FuncDef {
                                    name: full,
                                    def,
                                    ptr: ptr_join(&members_ptr, name),
                                },
                            );
                        }
                    }
                    _ => report(
                        Severity::Error,
                        &ns_ptr,
                        "a user function namespace needs 'namespace' and a 'members' object".into(),
                    ),
                }
            }
        }

        Scope {
            env,
            file,
            params,
            vars,
            funcs,
            in_function: false,
            blank_missing: false,
            param_slots: RefCell::new(HashMap::new()),
            var_slots: RefCell::new(HashMap::new()),
        }
    }

    /// The scope of one call of a user function: its parameters bound to the call's arguments.
    pub fn for_function(&self, params: HashMap<String, Param<'t>>) -> Scope<'t> {
        Scope {
            env: self.env.clone(),
            file: self.file.clone(),
            params,
            vars: HashMap::new(),
            funcs: HashMap::new(),
            in_function: true,
            blank_missing: self.blank_missing,
            param_slots: RefCell::new(HashMap::new()),
            var_slots: RefCell::new(HashMap::new()),
        }
    }

    /// A copy of the definitions in link-guessing mode (see [`Scope::blank_missing`]), with
    /// fresh caches.
    pub fn blanked(&self) -> Scope<'t> {
        Scope {
            env: self.env.clone(),
            file: self.file.clone(),
            params: self.params.clone(),
            vars: self.vars.clone(),
            funcs: self.funcs.clone(),
            in_function: self.in_function,
            blank_missing: true,
            param_slots: RefCell::new(HashMap::new()),
            var_slots: RefCell::new(HashMap::new()),
        }
    }
}

/// A parameter value given from outside.
pub(crate) enum Given {
    Value(Value),
    /// A Key Vault reference (`{"reference": {"keyVault": ..., "secretName": ...}}`): the secret
    /// is not available offline.
    KeyVault,
}

/// Reads [`crate::Options::parameters`]: a parameters file (`$schema`/`contentVersion` and a
/// `parameters` object), or a plain map of `{"value": x}` wrappers or bare values.
/// `declares_parameters` says whether the template has a parameter literally named
/// `parameters`, which makes `{"parameters": {...}}` a plain map.
pub(crate) fn given_parameters(v: &Value, declares_parameters: bool) -> Vec<(String, Given)> {
    let Some(obj) = v.as_object() else {
        return Vec::new();
    };
    let file_form = map_get_ci(obj, "$schema").is_some()
        || map_get_ci(obj, "contentVersion").is_some()
        || (obj.len() == 1
            && !declares_parameters
            && matches!(map_get_ci(obj, "parameters"), Some((_, Value::Object(_)))));
    let map = if file_form {
        match map_get_ci(obj, "parameters") {
            Some((_, Value::Object(m))) => m,
            _ => return Vec::new(),
        }
    } else {
        obj
    };
    map.iter()
        .map(|(name, entry)| (name.clone(), unwrap_given(entry)))
        .collect()
}

/// `{"value": x}` → x; `{"reference": ..}` → Key Vault; anything else is the value itself.
pub(crate) fn unwrap_given(entry: &Value) -> Given {
    if let Value::Object(e) = entry {
        let only_wrapper_keys = e.keys().all(|k| {
            ["value", "metadata", "reference"]
                .iter()
                .any(|w| k.eq_ignore_ascii_case(w))
        });
        if only_wrapper_keys {
            if let Some((_, v)) = map_get_ci(e, "value") {
                return Given::Value(v.clone());
            }
            if map_get_ci(e, "reference").is_some() {
                return Given::KeyVault;
            }
        }
    }
    Given::Value(entry.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &Value, declares: bool) -> Vec<(String, Option<Value>)> {
        given_parameters(v, declares)
            .into_iter()
            .map(|(n, g)| {
                (
                    n,
                    match g {
                        Given::Value(v) => Some(v),
                        Given::KeyVault => None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn fmt_1_parameter_values_in_every_shape() {
        let file = json!({"$schema": "x", "contentVersion": "1.0.0.0",
            "parameters": {"a": {"value": 1}, "b": {"reference": {"keyVault": {"id": "k"}, "secretName": "s"}}}});
        assert_eq!(
            names(&file, false),
            vec![("a".into(), Some(json!(1))), ("b".into(), None)]
        );
        let wrapped = json!({"parameters": {"a": {"value": [1]}}});
        assert_eq!(names(&wrapped, false), vec![("a".into(), Some(json!([1])))]);
        assert_eq!(
            names(&wrapped, true),
            vec![("parameters".into(), Some(json!({"a": {"value": [1]}})))]
        );
        let plain = json!({"a": "x", "b": {"k": 1}, "c": {"Value": 2}});
        assert_eq!(
            names(&plain, false),
            vec![
                ("a".into(), Some(json!("x"))),
                ("b".into(), Some(json!({"k": 1}))),
                ("c".into(), Some(json!(2)))
            ]
        );
        assert!(names(&json!([1]), false).is_empty());
    }
}
