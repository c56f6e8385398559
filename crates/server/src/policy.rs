//! The policy the server runs: ARM resources (child resources inline in their parents, as
//! Azure's GET returns them), compiled through `palisade-load` into the snapshot every answer
//! comes from. A change builds a new resource list, compiles it beside the running one and is
//! swapped in only when it compiles without errors (PAL-5.5).

use palisade_load::{Input, Source};
use palisade_model::bindings::Bindings;
use palisade_model::{Diagnostic, Diagnostics};
use palisade_policy::Snapshot;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A resource kind served under `/api/{segment}`, and its child resources.
#[derive(Debug)]
pub struct Kind {
    pub segment: &'static str,
    pub arm_type: &'static str,
    pub child: Option<ChildKind>,
}

#[derive(Debug)]
pub struct ChildKind {
    pub segment: &'static str,
    pub storage: Storage,
}

/// Where a child resource lives in the resource list.
#[derive(Debug)]
pub enum Storage {
    /// In an array of the parent's `properties` (security rules, routes, subnets).
    Inline(&'static str),
    /// A resource of its own, named `parent/child` (rule collection groups).
    Separate(&'static str),
}

pub const KINDS: &[Kind] = &[
    Kind {
        segment: "networkSecurityGroups",
        arm_type: "Microsoft.Network/networkSecurityGroups",
        child: Some(ChildKind {
            segment: "securityRules",
            storage: Storage::Inline("securityRules"),
        }),
    },
    Kind {
        segment: "routeTables",
        arm_type: "Microsoft.Network/routeTables",
        child: Some(ChildKind {
            segment: "routes",
            storage: Storage::Inline("routes"),
        }),
    },
    Kind {
        segment: "virtualNetworks",
        arm_type: "Microsoft.Network/virtualNetworks",
        child: Some(ChildKind {
            segment: "subnets",
            storage: Storage::Inline("subnets"),
        }),
    },
    Kind {
        segment: "firewallPolicies",
        arm_type: "Microsoft.Network/firewallPolicies",
        child: Some(ChildKind {
            segment: "ruleCollectionGroups",
            storage: Storage::Separate("Microsoft.Network/firewallPolicies/ruleCollectionGroups"),
        }),
    },
    Kind {
        segment: "azureFirewalls",
        arm_type: "Microsoft.Network/azureFirewalls",
        child: None,
    },
    Kind {
        segment: "ipGroups",
        arm_type: "Microsoft.Network/ipGroups",
        child: None,
    },
    Kind {
        segment: "networkInterfaces",
        arm_type: "Microsoft.Network/networkInterfaces",
        child: None,
    },
    Kind {
        segment: "publicIPAddresses",
        arm_type: "Microsoft.Network/publicIPAddresses",
        child: None,
    },
    Kind {
        segment: "applicationSecurityGroups",
        arm_type: "Microsoft.Network/applicationSecurityGroups",
        child: None,
    },
];

pub fn kind(segment: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.segment.eq_ignore_ascii_case(segment))
}

/// A resource's address: `networkSecurityGroups/web-nsg[/securityRules/Allow-HTTPS]`.
#[derive(Debug, Clone)]
pub struct Path {
    pub kind: &'static Kind,
    pub name: String,
    pub child: Option<String>,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.segment, self.name)?;
        match (&self.child, &self.kind.child) {
            (Some(c), Some(k)) => write!(f, "/{}/{c}", k.segment),
            _ => Ok(()),
        }
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).and_then(Value::as_str).unwrap_or_default()
}

/// Whether `v` is a resource of type `arm_type` (type names are case-insensitive, FMT-3).
pub fn of_type(v: &Value, arm_type: &str) -> bool {
    text(v, "type").eq_ignore_ascii_case(arm_type)
}

fn is(v: &Value, arm_type: &str, name: &str) -> bool {
    text(v, "type").eq_ignore_ascii_case(arm_type) && text(v, "name").eq_ignore_ascii_case(name)
}

/// The `properties` object of a resource, made if missing; `None` when it is not an object.
fn properties_mut(v: &mut Value) -> Option<&mut Map<String, Value>> {
    let obj = v.as_object_mut()?;
    let key = obj
        .keys()
        .find(|k| k.eq_ignore_ascii_case("properties"))
        .cloned()
        .unwrap_or_else(|| "properties".into());
    obj.entry(key)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

fn array_mut<'a>(props: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Vec<Value>> {
    let key = props
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.into());
    props
        .entry(key)
        .or_insert_with(|| Value::Array(vec![]))
        .as_array_mut()
}

/// A strong ETag: the SHA-256 of the resource's JSON as stored.
pub fn etag(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let h = Sha256::digest(&bytes);
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Where a resource sits in the list: its index and, for an inline child, the index in the
/// parent's array.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub index: usize,
    pub inline: Option<usize>,
}

/// What went wrong with a change before compiling it.
#[derive(Debug)]
pub enum ChangeError {
    NotFound(String),
    BadRequest(String),
}

pub fn locate(resources: &[Value], path: &Path) -> Result<Slot, ChangeError> {
    let not_found = || ChangeError::NotFound(format!("no resource {path}"));
    let parent = resources
        .iter()
        .position(|r| is(r, path.kind.arm_type, &path.name));
    let (Some(child), Some(ck)) = (&path.child, &path.kind.child) else {
        return parent
            .map(|index| Slot {
                index,
                inline: None,
            })
            .ok_or_else(not_found);
    };
    match ck.storage {
        Storage::Inline(prop) => {
            let index = parent.ok_or_else(not_found)?;
            let items = field(&resources[index], "properties")
                .and_then(|p| field(p, prop))
                .and_then(Value::as_array);
            items
                .and_then(|a| {
                    a.iter()
                        .position(|c| text(c, "name").eq_ignore_ascii_case(child))
                })
                .map(|j| Slot {
                    index,
                    inline: Some(j),
                })
                .ok_or_else(not_found)
        }
        Storage::Separate(ty) => resources
            .iter()
            .position(|r| is(r, ty, &format!("{}/{child}", path.name)))
            .map(|index| Slot {
                index,
                inline: None,
            })
            .ok_or_else(not_found),
    }
}

pub fn get<'a>(resources: &'a [Value], slot: Slot, path: &Path) -> &'a Value {
    let r = &resources[slot.index];
    match (slot.inline, &path.kind.child) {
        (
            Some(j),
            Some(ChildKind {
                storage: Storage::Inline(prop),
                ..
            }),
        ) => &field(r, "properties")
            .and_then(|p| field(p, prop))
            .and_then(Value::as_array)
            .expect("located inline child")[j],
        _ => r,
    }
}

/// The JSON pointer of the resource at `slot` in the stored network (as diagnostics locate it).
pub fn pointer(resources: &[Value], slot: Slot, path: &Path) -> String {
    let top = format!("/{}", slot.index);
    match (slot.inline, &path.kind.child) {
        (
            Some(j),
            Some(ChildKind {
                storage: Storage::Inline(prop),
                ..
            }),
        ) => {
            let key = |v: &Value, name: &str| {
                v.as_object()
                    .and_then(|o| o.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned())
                    .unwrap_or_else(|| name.to_string())
            };
            let r = &resources[slot.index];
            let props = key(r, "properties");
            let array = field(r, "properties").map_or(prop.to_string(), |p| key(p, prop));
            format!("{top}/{props}/{array}/{j}")
        }
        _ => top,
    }
}

/// The resource list with `body` put at `path` (created or replaced). The URL names the
/// resource: a body naming another is refused rather than silently renamed.
pub fn put(resources: &[Value], path: &Path, mut body: Value) -> Result<Vec<Value>, ChangeError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ChangeError::BadRequest(
            "the body must be a JSON object: an ARM resource (`name`, `properties`, ...)".into(),
        ));
    };
    let (name, arm_type) = match (&path.child, &path.kind.child) {
        (Some(c), Some(ck)) => match ck.storage {
            Storage::Inline(_) => (c.clone(), None),
            Storage::Separate(ty) => (format!("{}/{c}", path.name), Some(ty)),
        },
        _ => (path.name.clone(), Some(path.kind.arm_type)),
    };
    let last = name.rsplit('/').next().unwrap_or_default().to_string();
    for (key, want) in [("name", Some(name.as_str())), ("type", arm_type)] {
        let given = obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(k, v)| (k.clone(), v.clone()));
        if let (Some((k, v)), Some(want)) = (&given, want) {
            let ok = v.as_str().is_some_and(|s| {
                s.eq_ignore_ascii_case(want) || (key == "name" && s.eq_ignore_ascii_case(&last))
            });
            if !ok {
                return Err(ChangeError::BadRequest(format!(
                    "body field `{k}` is {v}, but the URL names {key} `{want}`"
                )));
            }
            obj.remove(k);
        }
        if let Some(want) = want {
            obj.insert(key.into(), Value::String(want.into()));
        }
    }
    let mut out = resources.to_vec();
    match (&path.child, &path.kind.child) {
        (
            Some(child),
            Some(ChildKind {
                storage: Storage::Inline(prop),
                ..
            }),
        ) => {
            let index = out
                .iter()
                .position(|r| is(r, path.kind.arm_type, &path.name))
                .ok_or_else(|| {
                    ChangeError::NotFound(format!(
                        "no resource {}/{}: create the parent first",
                        path.kind.segment, path.name
                    ))
                })?;
            let items = properties_mut(&mut out[index])
                .and_then(|p| array_mut(p, prop))
                .ok_or_else(|| {
                    ChangeError::BadRequest(format!(
                        "{}/{}: `properties.{prop}` is not an array",
                        path.kind.segment, path.name
                    ))
                })?;
            match items
                .iter()
                .position(|c| text(c, "name").eq_ignore_ascii_case(child))
            {
                Some(j) => items[j] = body,
                None => items.push(body),
            }
        }
        _ => {
            if path.child.is_some() && !out.iter().any(|r| is(r, path.kind.arm_type, &path.name)) {
                return Err(ChangeError::NotFound(format!(
                    "no resource {}/{}: create the parent first",
                    path.kind.segment, path.name
                )));
            }
            let ty = arm_type.unwrap_or_default();
            match out.iter().position(|r| is(r, ty, &name)) {
                Some(i) => out[i] = body,
                None => out.push(body),
            }
        }
    }
    Ok(out)
}

/// The resource list without the resource at `path` (and, for a parent, its separate children).
pub fn delete(resources: &[Value], path: &Path) -> Result<Vec<Value>, ChangeError> {
    let slot = locate(resources, path)?;
    let mut out = resources.to_vec();
    match (slot.inline, &path.kind.child) {
        (
            Some(j),
            Some(ChildKind {
                storage: Storage::Inline(prop),
                ..
            }),
        ) => {
            if let Some(items) =
                properties_mut(&mut out[slot.index]).and_then(|p| array_mut(p, prop))
            {
                items.remove(j);
            }
        }
        _ => {
            out.remove(slot.index);
            if let (
                None,
                Some(ChildKind {
                    storage: Storage::Separate(ty),
                    ..
                }),
            ) = (&path.child, &path.kind.child)
            {
                let prefix = format!("{}/", path.name.to_ascii_lowercase());
                out.retain(|r| {
                    !(text(r, "type").eq_ignore_ascii_case(ty)
                        && text(r, "name").to_ascii_lowercase().starts_with(&prefix))
                });
            }
        }
    }
    Ok(out)
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        let key = t
            .keys()
            .find(|x| x.eq_ignore_ascii_case(k))
            .cloned()
            .unwrap_or_else(|| k.clone());
        if v.is_null() {
            t.remove(&key);
        } else {
            merge_patch(t.entry(key).or_insert(Value::Null), v);
        }
    }
}

/// The resources of the files a [`Source`] names, as ARM resource objects: templates expanded
/// (FMT-4..6, with the source's parameters), REST bodies, REST lists and CLI output read as
/// they are; child resources declared apart folded into their parents.
pub fn seed(source: &Source) -> Result<Vec<Value>, String> {
    let Input::Files(paths) = &source.input else {
        return Err("the server seeds its store from files".into());
    };
    let parameters = match &source.parameters {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("{}: cannot read the parameters file: {e}", p.display()))?;
            Some(
                palisade_model::json::parse(&p.display().to_string(), &text)
                    .map_err(|d| d.to_string())?
                    .value,
            )
        }
        None => None,
    };
    let mut out = vec![];
    for p in paths {
        let files = palisade_model::import::input_files(p)
            .map_err(|e| format!("{}: cannot read: {e}", p.display()))?;
        for f in files {
            let name = f.display().to_string();
            let text =
                std::fs::read_to_string(&f).map_err(|e| format!("{name}: cannot read: {e}"))?;
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                // A YAML file beside the network (flows, notes) describes nothing.
                if let Some(items) = palisade_model::import::native_resources(&name, &text) {
                    let items = items.map_err(|d| d.to_string())?;
                    out.extend(
                        items
                            .into_iter()
                            .flat_map(|(_, ty, item)| arm_shape(&ty, item)),
                    );
                }
                continue;
            }
            let doc = palisade_model::json::parse(&name, &text).map_err(|d| d.to_string())?;
            let v = doc.value;
            if palisade_arm::is_template(&v) {
                let dir = f
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                let read_linked: palisade_arm::LinkedReader = Box::new(move |rel: &str| {
                    let p = dir.join(rel);
                    let text = std::fs::read_to_string(&p)
                        .map_err(|e| format!("cannot read linked template {}: {e}", p.display()))?;
                    palisade_model::json::parse(&p.display().to_string(), &text)
                        .map(|d| d.value)
                        .map_err(|d| d.to_string())
                });
                let options = palisade_arm::Options {
                    parameters: parameters.clone().or_else(|| {
                        palisade_model::import::sibling_parameters(&f)
                            .map(|(_, p)| p)
                            .filter(|p| palisade_model::import::declares_any(&v, p))
                    }),
                    read_linked: Some(read_linked),
                    ..Default::default()
                };
                out.extend(
                    palisade_arm::expand(&v, &options)
                        .resources
                        .into_iter()
                        .map(|r| r.value),
                );
            } else if let Some(Value::Array(items)) = field(&v, "value") {
                out.extend(items.iter().cloned());
            } else if let Value::Array(items) = v {
                out.extend(items);
            } else if field(&v, "type").is_some() {
                out.push(v);
            }
        }
    }
    Ok(fold(out))
}

/// Fields that stay beside `properties` in an ARM resource.
const ENVELOPE: &[&str] = &[
    "name", "type", "id", "location", "tags", "etag", "zones", "sku",
];

/// `{name, properties: {the rest}}`: a native YAML item (fields at the top level) in ARM shape.
fn wrap(item: Value, envelope: &[&str]) -> Value {
    let Value::Object(fields) = item else {
        return item;
    };
    let (outer, inner): (
        serde_json::Map<String, Value>,
        serde_json::Map<String, Value>,
    ) = fields
        .into_iter()
        .partition(|(k, _)| envelope.iter().any(|e| e.eq_ignore_ascii_case(k)));
    let mut outer = outer;
    outer.insert("properties".into(), Value::Object(inner));
    Value::Object(outer)
}

/// A native YAML resource as the ARM resources a template would declare: its own fields under
/// `properties`, inline children (security rules, routes, subnets) likewise, and a firewall
/// policy's rule collection groups as resources of their own (`policy/group`), as in ARM.
fn arm_shape(ty: &str, item: Value) -> Vec<Value> {
    let mut top = wrap(item, ENVELOPE);
    if let Some(o) = top.as_object_mut() {
        o.insert("type".into(), Value::String(ty.to_string()));
    }
    let name = text(&top, "name").to_string();
    let mut out = vec![];
    let child = KINDS
        .iter()
        .find(|k| k.arm_type.eq_ignore_ascii_case(ty))
        .and_then(|k| k.child.as_ref());
    if let (Some(c), Some(props)) = (child, properties_mut(&mut top)) {
        let key = props
            .keys()
            .find(|k| k.eq_ignore_ascii_case(c.segment))
            .cloned();
        if let Some(items) = key.and_then(|k| props.remove(&k)) {
            let items: Vec<Value> = match items {
                Value::Array(a) => a,
                other => vec![other],
            };
            match c.storage {
                Storage::Inline(prop) => {
                    let wrapped = items.into_iter().map(|i| wrap(i, &["name"])).collect();
                    props.insert(prop.to_string(), Value::Array(wrapped));
                }
                Storage::Separate(child_ty) => {
                    for i in items {
                        let mut g = wrap(i, &["name"]);
                        if let Some(o) = g.as_object_mut() {
                            let own = o
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string();
                            o.insert("name".into(), Value::String(format!("{name}/{own}")));
                            o.insert("type".into(), Value::String(child_ty.to_string()));
                        }
                        out.push(g);
                    }
                }
            }
        }
    }
    out.insert(0, top);
    out
}

/// Child resources declared apart (`nsg/securityRules`, name `nsg/rule`) moved into their
/// parent's array when the parent is in the list.
fn fold(resources: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = vec![];
    let mut children = vec![];
    for r in resources {
        let ty = text(&r, "type").to_ascii_lowercase();
        let inline = KINDS.iter().find_map(|k| match &k.child {
            Some(ChildKind {
                segment,
                storage: Storage::Inline(prop),
            }) if ty == format!("{}/{}", k.arm_type, segment).to_ascii_lowercase() => {
                Some((k, *prop))
            }
            _ => None,
        });
        match inline {
            Some(kp) => children.push((kp, r)),
            None => out.push(r),
        }
    }
    for ((kind, prop), mut child) in children {
        let full = text(&child, "name").to_string();
        let Some((parent, name)) = full.split_once('/') else {
            out.push(child);
            continue;
        };
        let Some(i) = out.iter().position(|r| is(r, kind.arm_type, parent)) else {
            out.push(child);
            continue;
        };
        if let Some(obj) = child.as_object_mut() {
            obj.retain(|k, _| {
                !["type", "apiVersion", "dependsOn", "name"]
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(k))
            });
            obj.insert("name".into(), Value::String(name.into()));
        }
        if let Some(items) = properties_mut(&mut out[i]).and_then(|p| array_mut(p, prop)) {
            match items
                .iter()
                .position(|c| text(c, "name").eq_ignore_ascii_case(name))
            {
                Some(j) => items[j] = child,
                None => items.push(child),
            }
        }
    }
    out
}

/// A compiled policy version: what every answer is computed from.
pub struct Running {
    pub version: u64,
    pub resources: Vec<Value>,
    pub snapshot: Snapshot,
    pub bindings: Bindings,
    pub diagnostics: Diagnostics,
}

/// The file name diagnostics of the stored network carry.
pub const NETWORK_FILE: &str = "network";

/// Compile a resource list through `palisade-load`, with the catalogs and name bindings of
/// `base`. Errors (PAL-5.5): the located diagnostics, nothing compiled.
pub fn compile(base: &Source, version: u64, resources: Vec<Value>) -> Result<Running, Diagnostics> {
    let text = serde_json::to_string_pretty(&resources).unwrap_or_default();
    let source = Source {
        input: Input::Text {
            file: NETWORK_FILE.into(),
            text,
        },
        ignore_errors: false,
        ..base.clone()
    };
    let loaded = palisade_load::load(&source);
    match loaded.snapshot {
        Some(snapshot) => Ok(Running {
            version,
            resources,
            snapshot,
            bindings: loaded.bindings,
            diagnostics: loaded.diagnostics,
        }),
        None => {
            let mut d = loaded.diagnostics;
            if !d.has_errors() {
                d.push(Diagnostic::error("the network could not be compiled"));
            }
            Err(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nsg() -> Vec<Value> {
        vec![
            json!({"type": "Microsoft.Network/networkSecurityGroups", "name": "web-nsg",
            "properties": {"securityRules": [{"name": "a", "properties": {"priority": 100}}]}}),
        ]
    }

    fn path(child: Option<&str>) -> Path {
        Path {
            kind: kind("networkSecurityGroups").unwrap(),
            name: "WEB-nsg".into(),
            child: child.map(Into::into),
        }
    }

    #[test]
    fn put_replaces_or_adds_an_inline_child() {
        let out = put(
            &nsg(),
            &path(Some("b")),
            json!({"properties": {"priority": 200}}),
        )
        .unwrap();
        let rules = out[0]["properties"]["securityRules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1]["name"], "b");
        let out = put(
            &out,
            &path(Some("A")),
            json!({"name": "a", "properties": {"priority": 300}}),
        )
        .unwrap();
        assert_eq!(
            out[0]["properties"]["securityRules"][0]["properties"]["priority"],
            300
        );
        let out = delete(&out, &path(Some("a"))).unwrap();
        assert_eq!(
            out[0]["properties"]["securityRules"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_body_naming_another_resource_is_refused() {
        assert!(matches!(
            put(&nsg(), &path(None), json!({"name": "other"})),
            Err(ChangeError::BadRequest(_))
        ));
        assert!(matches!(
            put(&nsg(), &path(Some("x")), json!([1])),
            Err(ChangeError::BadRequest(_))
        ));
        let mut p = path(Some("x"));
        p.name = "missing".into();
        assert!(matches!(
            put(&nsg(), &p, json!({})),
            Err(ChangeError::NotFound(_))
        ));
    }

    #[test]
    fn children_declared_apart_are_folded_into_their_parent() {
        let out = fold(vec![
            json!({"type": "Microsoft.Network/networkSecurityGroups/securityRules", "name": "web-nsg/b", "apiVersion": "x", "properties": {"priority": 200}}),
            nsg()[0].clone(),
        ]);
        assert_eq!(out.len(), 1);
        let rules = out[0]["properties"]["securityRules"].as_array().unwrap();
        assert_eq!(
            rules[1],
            json!({"properties": {"priority": 200}, "name": "b"})
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }
}
