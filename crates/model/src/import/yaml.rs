//! The native YAML format (FMT-1, `docs/native-yaml.md`): the ARM field names without the ARM
//! ceremony. Resources are listed under their type's plural name, fields sit at the top level of
//! each item (no `properties` wrapper), references are plain names, and a few hand-writing
//! conveniences apply (a security rule's ports default to `*`).

use crate::diag::{Diagnostic, Diagnostics};
use crate::json::Document;
use serde_json::{Map, Value};

/// The resource lists a native file may hold, with their ARM types.
const KINDS: &[(&str, &str)] = &[
    ("virtualNetworks", "Microsoft.Network/virtualNetworks"),
    (
        "networkSecurityGroups",
        "Microsoft.Network/networkSecurityGroups",
    ),
    ("routeTables", "Microsoft.Network/routeTables"),
    ("networkInterfaces", "Microsoft.Network/networkInterfaces"),
    (
        "applicationSecurityGroups",
        "Microsoft.Network/applicationSecurityGroups",
    ),
    ("publicIPAddresses", "Microsoft.Network/publicIPAddresses"),
    ("azureFirewalls", "Microsoft.Network/azureFirewalls"),
    ("firewalls", "Microsoft.Network/azureFirewalls"),
    ("firewallPolicies", "Microsoft.Network/firewallPolicies"),
    ("ipGroups", "Microsoft.Network/ipGroups"),
];

pub fn parse(file: &str, text: &str) -> Result<Document, Diagnostic> {
    // YAML 1.2 Core booleans only: a rule or collection named `no`, `yes`, `on` or `off` is a
    // name, not `false`/`true` as YAML 1.1 would read it.
    let options = serde_saphyr::options! { strict_booleans: true };
    match serde_saphyr::from_str_with_options::<Value>(text, options) {
        Ok(v) => Ok(Document::from_value(file, v)),
        Err(e) => {
            let mut d = Diagnostic::error(format!("invalid YAML: {e}"))
                .at(file, "")
                .expected("a YAML document");
            if let Some(loc) = e.location() {
                d.line = Some(loc.line() as usize);
                d.column = Some(loc.column() as usize);
            }
            Err(d)
        }
    }
}

pub fn is_native(v: &Value) -> bool {
    v.get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| s.to_ascii_lowercase().starts_with("palisade/"))
}

/// The resources of a native file as (pointer, ARM type, value in CLI shape).
pub fn resources(v: &Value, diags: &mut Diagnostics) -> Vec<(String, String, Value)> {
    let mut out = vec![];
    let Some(obj) = v.as_object() else {
        return out;
    };
    let version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !version.eq_ignore_ascii_case("palisade/v1") {
        diags.push(
            Diagnostic::error("unsupported native format version")
                .at("", "/apiVersion")
                .field("apiVersion")
                .found(version)
                .expected("`palisade/v1`"),
        );
        return out;
    }
    for (key, value) in obj {
        if key.eq_ignore_ascii_case("apiVersion") || key.eq_ignore_ascii_case("description") {
            continue;
        }
        let Some((_, ty)) = KINDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) else {
            let names: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            diags.push(
                Diagnostic::error("unknown top-level key")
                    .at("", &format!("/{key}"))
                    .found(key)
                    .expected(format!("one of apiVersion, {}", names.join(", "))),
            );
            continue;
        };
        let Some(items) = value.as_array() else {
            diags.push(
                Diagnostic::error("expected a list of resources")
                    .at("", &format!("/{key}"))
                    .expected("a YAML list"),
            );
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            out.push((format!("/{key}/{i}"), ty.to_string(), convenience(ty, item)));
        }
    }
    out
}

/// Hand-writing conveniences, applied before the common reader sees the item.
fn convenience(ty: &str, item: &Value) -> Value {
    let mut item = item.clone();
    let Some(obj) = item.as_object_mut() else {
        return item;
    };
    if ty.ends_with("/networkSecurityGroups") {
        if let Some(Value::Array(rules)) = obj.get_mut("securityRules") {
            for r in rules.iter_mut().filter_map(Value::as_object_mut) {
                default_port(r, "sourcePortRange");
                default_port(r, "destinationPortRange");
            }
        }
    }
    if ty.ends_with("/virtualNetworks") {
        // `addressSpace: [10.0.0.0/16]` for `addressSpace: {addressPrefixes: [...]}`.
        if let Some(space @ Value::Array(_)) = obj.get("addressSpace").cloned() {
            let mut m = Map::new();
            m.insert("addressPrefixes".into(), space);
            obj.insert("addressSpace".into(), Value::Object(m));
        }
    }
    item
}

fn default_port(rule: &mut Map<String, Value>, field: &str) {
    let plural = format!("{field}s");
    let has = |k: &str| {
        rule.iter()
            .any(|(key, v)| key.eq_ignore_ascii_case(k) && !v.is_null())
    };
    if !has(field) && !has(&plural) {
        rule.insert(field.to_string(), Value::String("*".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FMT-1: the native format has the ARM field names and JSON's types; YAML 1.1's `yes`/`no`
    /// spellings stay strings, so a collection named `no` keeps its name.
    #[test]
    fn yaml_1_1_boolean_spellings_stay_strings() {
        let text = "name: no\nother: yes\nflag: true\noff: On\n";
        let doc = parse("net.yaml", text).unwrap();
        assert_eq!(doc.value["name"], Value::from("no"));
        assert_eq!(doc.value["other"], Value::from("yes"));
        assert_eq!(doc.value["off"], Value::from("On"));
        assert_eq!(doc.value["flag"], Value::Bool(true));
    }
}
