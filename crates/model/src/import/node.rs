//! A located view of a JSON value with the lookups ARM input needs: case-insensitive property
//! names (FMT-3), properties read from `properties.x` or from the top level (CLI output, native
//! YAML), `""`/`[]`/`null` as absent (FMT-7), numbers given as strings, and unresolved template
//! expressions (FMT-4).

use crate::json::pointer_token;
use serde_json::Value;

/// The marker the template expander leaves where an expression could not be resolved offline.
pub const UNRESOLVED_KEY: &str = "$unresolved";
/// The marker's cause (see `palisade_arm::WHY_KEY`).
pub const WHY_KEY: &str = "$why";

/// A value and its JSON pointer.
#[derive(Clone)]
pub struct Node<'a> {
    pub value: &'a Value,
    pub pointer: String,
}

impl<'a> Node<'a> {
    pub fn root(value: &'a Value, pointer: &str) -> Node<'a> {
        Node {
            value,
            pointer: pointer.to_string(),
        }
    }

    /// A property, case-insensitive, not looking into `properties`.
    pub fn key(&self, name: &str) -> Option<Node<'a>> {
        let obj = self.value.as_object()?;
        let (k, v) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        Some(Node {
            value: v,
            pointer: child_pointer(&self.pointer, k),
        })
    }

    /// A resource property: `properties.<name>` first, then `<name>` at the top level.
    /// Absent values (`null`, `""`, `[]`) count as missing.
    pub fn prop(&self, name: &str) -> Option<Node<'a>> {
        let found = self
            .key("properties")
            .and_then(|p| p.key(name))
            .filter(|c| !c.is_absent())
            .or_else(|| self.key(name).filter(|c| !c.is_absent()));
        found
    }

    /// A plain key with absent values filtered out.
    pub fn field(&self, name: &str) -> Option<Node<'a>> {
        self.key(name).filter(|c| !c.is_absent())
    }

    pub fn is_absent(&self) -> bool {
        match self.value {
            Value::Null => true,
            Value::String(s) => s.trim().is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }

    pub fn unresolved(&self) -> Option<&'a str> {
        unresolved_text(self.value)
    }

    /// Why the unresolved value has no value offline.
    pub fn unresolved_why(&self) -> &'a str {
        unresolved_why(self.value)
            .unwrap_or("a template expression that cannot be resolved offline")
    }

    pub fn items(&self) -> Vec<Node<'a>> {
        match self.value {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| Node {
                    value: v,
                    pointer: child_pointer(&self.pointer, itoa(i).as_str()),
                })
                .collect(),
            _ => vec![],
        }
    }

    /// A list's items, or the value itself where one value stands for a list of one.
    pub fn one_or_many(&self) -> Vec<Node<'a>> {
        if self.value.is_array() {
            self.items()
        } else {
            vec![self.clone()]
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        self.value.as_str()
    }

    /// Text of a scalar (numbers and booleans rendered), for messages and lenient reads.
    pub fn text(&self) -> String {
        match self.value {
            Value::String(s) => s.clone(),
            Value::Null => "null".into(),
            other => {
                if let Some(t) = unresolved_text(other) {
                    format!("unresolved({t})")
                } else {
                    other.to_string()
                }
            }
        }
    }
}

/// `parent/token`, escaped (RFC 6901). Built for every property read, so without `format!`.
fn child_pointer(parent: &str, token: &str) -> String {
    let mut p = String::with_capacity(parent.len() + 1 + token.len());
    p.push_str(parent);
    p.push('/');
    if token.contains(['~', '/']) {
        p.push_str(&pointer_token(token));
    } else {
        p.push_str(token);
    }
    p
}

/// Decimal digits of an index, on the stack.
fn itoa(mut n: usize) -> Digits {
    let mut d = Digits([0; 20], 20);
    loop {
        d.1 -= 1;
        d.0[d.1] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return d;
        }
    }
}

struct Digits([u8; 20], usize);

impl Digits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[self.1..]).unwrap_or("0")
    }
}

/// The expression text of an unresolved marker (`{"$unresolved": text, "$why": cause}`).
pub fn unresolved_text(v: &Value) -> Option<&str> {
    let o = v.as_object()?;
    let only_marker_keys = o.keys().all(|k| k == UNRESOLVED_KEY || k == WHY_KEY);
    if only_marker_keys {
        o.get(UNRESOLVED_KEY)?.as_str()
    } else {
        None
    }
}

/// Why an unresolved marker has no value; the first marker's cause for a value holding several.
pub fn unresolved_why(v: &Value) -> Option<&str> {
    match v {
        Value::Object(o) if unresolved_text(v).is_some() => o.get(WHY_KEY)?.as_str(),
        Value::Object(o) => o.values().find_map(unresolved_why),
        Value::Array(a) => a.iter().find_map(unresolved_why),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fmt_12_child_pointers_are_escaped_and_indexed() {
        let v = json!({"a/b": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, {"~k": 1}]});
        let root = Node::root(&v, "");
        let list = root.key("A/B").unwrap();
        assert_eq!(list.pointer, "/a~1b");
        let items = list.items();
        assert_eq!(items[0].pointer, "/a~1b/0");
        assert_eq!(items[11].key("~K").unwrap().pointer, "/a~1b/11/~0k");
        assert_eq!(itoa(usize::MAX).as_str(), usize::MAX.to_string());
    }
}
