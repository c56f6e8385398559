//! Small JSON helpers shared by the evaluator and the expander.

use serde_json::{Map, Value};

use crate::{UNRESOLVED_KEY, WHY_KEY};

/// Largest value (counted in JSON nodes, long strings counting per 64 bytes) an expression may
/// build. It stops templates that double a string or array in a chain of variables from eating
/// all memory; real templates stay far below it.
pub(crate) const MAX_VALUE_NODES: usize = 250_000;

/// Looks up a template keyword or property case-insensitively, preferring an exact match.
/// Returns the key as written (needed for JSON pointers into the original text).
pub(crate) fn get_ci<'v>(obj: &'v Value, key: &str) -> Option<(&'v String, &'v Value)> {
    let map = obj.as_object()?;
    map_get_ci(map, key)
}

pub(crate) fn map_get_ci<'v>(
    map: &'v Map<String, Value>,
    key: &str,
) -> Option<(&'v String, &'v Value)> {
    if let Some(entry) = map.get_key_value(key) {
        return Some(entry);
    }
    map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))
}

/// Value of a case-insensitive key.
pub(crate) fn val_ci<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    get_ci(obj, key).map(|(_, v)| v)
}

/// The entries of a `copy` array (`[{"name": .., "count": .., "input": ..}]`), with their
/// names, when `v` has that shape; `None` for anything else (then it is an ordinary value).
pub(crate) fn copy_entries(v: &Value) -> Option<Vec<(&str, &Value)>> {
    let entries = v.as_array()?;
    if entries.is_empty() {
        return None;
    }
    entries
        .iter()
        .map(|e| {
            let name = val_ci(e, "name")?.as_str()?;
            val_ci(e, "input")?;
            Some((name, e))
        })
        .collect()
}

/// Appends one reference token to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub(crate) fn ptr_join(base: &str, token: &str) -> String {
    let mut out = String::with_capacity(base.len() + token.len() + 1);
    out.push_str(base);
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            _ => out.push(c),
        }
    }
    out
}

/// The marker that stands for a value only known at deployment time: the expression text and
/// why it has no value offline (the root cause: the parameter without a value, the function).
pub(crate) fn marker(text: &str, why: &str) -> Value {
    let mut m = Map::new();
    m.insert(UNRESOLVED_KEY.to_string(), Value::String(text.to_string()));
    m.insert(WHY_KEY.to_string(), Value::String(why.to_string()));
    Value::Object(m)
}

/// True for the unresolved marker object itself (not for values that merely contain one).
pub(crate) fn is_marker(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.contains_key(UNRESOLVED_KEY) && m.keys().all(|k| k == UNRESOLVED_KEY || k == WHY_KEY)
        }
        _ => false,
    }
}

/// Why the first marker in `v` (depth first) has no value.
pub(crate) fn why_of(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if is_marker(v) => m.get(WHY_KEY).and_then(Value::as_str),
        Value::Object(m) => m.values().find_map(why_of),
        Value::Array(a) => a.iter().find_map(why_of),
        _ => None,
    }
}

/// True when the value is or contains an unresolved marker.
pub(crate) fn contains_marker(v: &Value) -> bool {
    match v {
        Value::Object(m) => is_marker(v) || m.values().any(contains_marker),
        Value::Array(a) => a.iter().any(contains_marker),
        _ => false,
    }
}

/// Name of a JSON type in ARM's vocabulary, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value is larger than [`MAX_VALUE_NODES`]; stops counting early.
pub(crate) fn too_big(v: &Value) -> bool {
    let mut budget = MAX_VALUE_NODES;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        let cost = match v {
            Value::String(s) => 1 + s.len() / 64,
            Value::Array(a) => {
                stack.extend(a.iter());
                1
            }
            Value::Object(m) => {
                stack.extend(m.values());
                1 + m.len()
            }
            _ => 1,
        };
        if cost > budget {
            return true;
        }
        budget -= cost;
    }
    false
}

/// Truncates text for messages so one huge expression cannot flood a report.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fmt_3_keys_match_case_insensitively_exact_first() {
        let v = json!({"Properties": 1, "properties": 2, "Copy": 3});
        assert_eq!(val_ci(&v, "properties"), Some(&json!(2)));
        assert_eq!(val_ci(&v, "copy"), Some(&json!(3)));
        assert_eq!(get_ci(&v, "COPY").map(|(k, _)| k.as_str()), Some("Copy"));
        assert!(val_ci(&json!([1]), "x").is_none());
    }

    #[test]
    fn fmt_12_pointer_tokens_are_escaped() {
        assert_eq!(ptr_join("/resources", "a/b~c"), "/resources/a~1b~0c");
    }

    #[test]
    fn fmt_4_markers_are_recognised() {
        let m = marker(
            "[reference('x')]",
            "reference() is known only at deployment",
        );
        assert!(is_marker(&m));
        assert_eq!(
            why_of(&json!({"a": [m.clone()]})),
            Some("reference() is known only at deployment")
        );
        assert!(contains_marker(&json!({"a": [m]})));
        assert!(!is_marker(&json!({"$unresolved": "x", "b": 1})));
    }

    #[test]
    fn size_guard_counts_nodes() {
        assert!(!too_big(&json!({"a": [1, 2, 3]})));
        let big = Value::Array(vec![Value::Null; MAX_VALUE_NODES + 1]);
        assert!(too_big(&big));
    }
}
