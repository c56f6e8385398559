//! Built-in ARM template functions that only need their evaluated arguments (and the
//! deployment placeholders). Functions that need the scope or lazy arguments — `parameters`,
//! `variables`, `copyIndex`, `if`, `and`, `or`, `coalesce` — live in the evaluator.
//!
//! Names are matched case-insensitively (`resourceid` and `resourceId` are the same function).
//! Integer arithmetic is checked; a failure is a template error, never a panic.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::cidr;
use crate::eval::{err, Stop, R};
use crate::ids;
use crate::scope::Env;
use crate::text::{self, MAX_PAD};
use crate::util::{map_get_ci, type_name};

/// Largest `range()` ARM allows.
const MAX_RANGE: i64 = 10_000;

/// Fixed time used by `utcNow()`, so that expansion is reproducible.
const FIXED_NOW: &str = "20240101T000000Z";

/// Why a function cannot be evaluated offline, or `None` when it can.
pub(crate) fn deployment_time(lname: &str) -> Option<&'static str> {
    match lname {
        "reference" => Some("reads the state of a deployed resource"),
        "providers" => Some("reads the resource provider registry"),
        "pickzones" => Some("depends on the zones of the target region"),
        "managementgroup" => Some("depends on the target management group"),
        "getsecret" => Some("reads a Key Vault secret"),
        n if n.starts_with("list") => Some("reads keys or state of a deployed resource"),
        _ => None,
    }
}

/// Functions whose result stays meaningful when an argument merely contains an unresolved
/// marker inside an array or object (they move values around without looking into them).
pub(crate) fn keeps_markers(lname: &str) -> bool {
    matches!(
        lname,
        "concat"
            | "createarray"
            | "createobject"
            | "union"
            | "array"
            | "first"
            | "last"
            | "take"
            | "skip"
            | "items"
            | "flatten"
            | "shallowmerge"
            | "length"
            | "empty"
            | "objectkeys"
            | "tryget"
    )
}

/// Checked access to the evaluated arguments of one call.
struct Args<'n> {
    name: &'n str,
    vals: Vec<Value>,
}

impl Args<'_> {
    fn count(&self, min: usize, max: usize) -> R<()> {
        let n = self.vals.len();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return err(format!(
                "{}() takes {want} argument(s), {n} given",
                self.name
            ));
        }
        Ok(())
    }

    fn wrong<T>(&self, i: usize, want: &str) -> R<T> {
        let found = self.vals.get(i).map(type_name).unwrap_or("nothing");
        err(format!(
            "argument {} of {}() must be {want}, found {found}",
            i + 1,
            self.name
        ))
    }

    fn str(&self, i: usize) -> R<&str> {
        match self.vals.get(i) {
            Some(Value::String(s)) => Ok(s),
            _ => self.wrong(i, "a string"),
        }
    }

    fn int(&self, i: usize) -> R<i64> {
        match self.vals.get(i) {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) => Ok(v),
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                    _ => self.wrong(i, "an integer"),
                },
            },
            _ => self.wrong(i, "an integer"),
        }
    }

    fn bool(&self, i: usize) -> R<bool> {
        match self.vals.get(i) {
            Some(Value::Bool(b)) => Ok(*b),
            _ => self.wrong(i, "a bool"),
        }
    }

    fn arr(&self, i: usize) -> R<&Vec<Value>> {
        match self.vals.get(i) {
            Some(Value::Array(a)) => Ok(a),
            _ => self.wrong(i, "an array"),
        }
    }

    fn take(&mut self, i: usize) -> Value {
        self.vals.get_mut(i).map(Value::take).unwrap_or(Value::Null)
    }

    /// Every argument as text (for ids and hashes): strings, numbers and bools.
    fn texts(&self) -> R<Vec<String>> {
        self.vals
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(text::to_text(v)),
                _ => self.wrong(i, "a string"),
            })
            .collect()
    }

    fn overflow<T>(&self) -> R<T> {
        err(format!("{}() overflows 64-bit integers", self.name))
    }
}

/// Calls the built-in `lname` (lower-case; `name` as written, for messages).
pub(crate) fn call(lname: &str, name: &str, vals: Vec<Value>, env: &Env) -> R<Value> {
    let mut a = Args { name, vals };
    match lname {
        "true" | "false" | "null" => {
            a.count(0, 0)?;
            Ok(match lname {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::Null,
            })
        }
        "string" => {
            a.count(1, 1)?;
            Ok(Value::String(text::to_text(&a.vals[0])))
        }
        "int" => {
            a.count(1, 1)?;
            match &a.vals[0] {
                Value::String(s) => s
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| err(format!("int(): '{s}' is not an integer"))),
                Value::Number(_) => a.int(0).map(Value::from),
                _ => a.wrong(0, "a string or integer"),
            }
        }
        "bool" => {
            a.count(1, 1)?;
            match &a.vals[0] {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
                Value::String(s) if s.trim().eq_ignore_ascii_case("false") => {
                    Ok(Value::Bool(false))
                }
                Value::Number(_) => Ok(Value::Bool(a.int(0)? != 0)),
                _ => a.wrong(0, "'true', 'false', a bool or an integer"),
            }
        }
        "json" => {
            a.count(1, 1)?;
            let s = a.str(0)?;
            serde_json::from_str(s).or_else(|e| err(format!("json(): not valid JSON: {e}")))
        }
        "concat" => concat(a),
        "format" => {
            a.count(1, usize::MAX)?;
            let fmt = a.str(0)?;
            text::composite_format(fmt, &a.vals[1..])
                .map(Value::String)
                .or_else(|e| err(format!("format(): {e}")))
        }
        "equals" => {
            a.count(2, 2)?;
            Ok(Value::Bool(json_eq(&a.vals[0], &a.vals[1])))
        }
        "not" => {
            a.count(1, 1)?;
            Ok(Value::Bool(!a.bool(0)?))
        }
        "greater" | "less" | "greaterorequals" | "lessorequals" => {
            a.count(2, 2)?;
            let ord = compare(&a)?;
            Ok(Value::Bool(match lname {
                "greater" => ord == Ordering::Greater,
                "less" => ord == Ordering::Less,
                "greaterorequals" => ord != Ordering::Less,
                _ => ord != Ordering::Greater,
            }))
        }
        "add" | "sub" | "mul" | "div" | "mod" => {
            a.count(2, 2)?;
            let (x, y) = (a.int(0)?, a.int(1)?);
            let r = match lname {
                "add" => x.checked_add(y),
                "sub" => x.checked_sub(y),
                "mul" => x.checked_mul(y),
                _ if y == 0 => return err(format!("{name}(): division by zero")),
                "div" => x.checked_div(y),
                _ => x.checked_rem(y),
            };
            r.map(Value::from).map_or_else(|| a.overflow(), Ok)
        }
        "min" | "max" => min_max(&a, lname == "max"),
        "length" => {
            a.count(1, 1)?;
            let n = match &a.vals[0] {
                Value::String(s) => s.chars().count(),
                Value::Array(x) => x.len(),
                Value::Object(m) => m.len(),
                _ => return a.wrong(0, "a string, array or object"),
            };
            Ok(Value::from(n))
        }
        "empty" => {
            a.count(1, 1)?;
            Ok(Value::Bool(match &a.vals[0] {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(x) => x.is_empty(),
                Value::Object(m) => m.is_empty(),
                _ => false,
            }))
        }
        "tolower" => {
            a.count(1, 1)?;
            Ok(Value::String(a.str(0)?.to_lowercase()))
        }
        "toupper" => {
            a.count(1, 1)?;
            Ok(Value::String(a.str(0)?.to_uppercase()))
        }
        "trim" => {
            a.count(1, 1)?;
            Ok(Value::String(a.str(0)?.trim().to_string()))
        }
        "replace" => {
            a.count(3, 3)?;
            let (s, old, new) = (a.str(0)?, a.str(1)?, a.str(2)?);
            if old.is_empty() {
                return err("replace(): the text to replace must not be empty");
            }
            let occurrences = s.matches(old).count();
            let grown = new
                .len()
                .saturating_sub(old.len())
                .saturating_mul(occurrences);
            if s.len().saturating_add(grown) > crate::util::MAX_VALUE_NODES * 64 {
                return err("replace() builds a string larger than the expansion limit");
            }
            Ok(Value::String(s.replace(old, new)))
        }
        "split" => split(&a),
        "join" => {
            a.count(2, 2)?;
            let delim = a.str(1)?;
            let mut parts = Vec::new();
            for item in a.arr(0)? {
                match text::scalar_text(item) {
                    Some(t) => parts.push(t),
                    None => {
                        return err("join(): the array may only hold strings, integers and bools")
                    }
                }
            }
            Ok(Value::String(parts.join(delim)))
        }
        "substring" => substring(&a),
        "indexof" | "lastindexof" => index_of(&a, lname == "lastindexof"),
        "startswith" | "endswith" => {
            a.count(2, 2)?;
            let s = a.str(0)?.to_lowercase();
            let find = a.str(1)?.to_lowercase();
            Ok(Value::Bool(if lname == "startswith" {
                s.starts_with(&find)
            } else {
                s.ends_with(&find)
            }))
        }
        "contains" => {
            a.count(2, 2)?;
            let found = match (&a.vals[0], &a.vals[1]) {
                (Value::String(s), item) => match text::scalar_text(item) {
                    Some(t) => s.contains(&t),
                    None => return a.wrong(1, "a string or integer"),
                },
                (Value::Array(x), item) => x.iter().any(|e| json_eq(e, item)),
                (Value::Object(m), Value::String(k)) => map_get_ci(m, k).is_some(),
                (Value::Object(_), _) => return a.wrong(1, "a string"),
                _ => return a.wrong(0, "a string, array or object"),
            };
            Ok(Value::Bool(found))
        }
        "first" | "last" => {
            a.count(1, 1)?;
            let first = lname == "first";
            match a.take(0) {
                Value::Array(mut x) => Ok(if first {
                    if x.is_empty() {
                        Value::Null
                    } else {
                        x.swap_remove(0)
                    }
                } else {
                    x.pop().unwrap_or(Value::Null)
                }),
                Value::String(s) => {
                    let c = if first {
                        s.chars().next()
                    } else {
                        s.chars().last()
                    };
                    Ok(Value::String(c.map(String::from).unwrap_or_default()))
                }
                other => {
                    a.vals[0] = other;
                    a.wrong(0, "an array or string")
                }
            }
        }
        "take" | "skip" => take_skip(a, lname == "take"),
        "union" => union(a),
        "intersection" => intersection(&a),
        "createarray" => Ok(Value::Array(a.vals)),
        "createobject" => {
            if !a.vals.len().is_multiple_of(2) {
                return err("createObject() takes key/value pairs (an even number of arguments)");
            }
            let mut m = Map::new();
            let mut it = a.vals.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                match k {
                    Value::String(k) => {
                        m.insert(k, v);
                    }
                    other => {
                        return err(format!(
                            "createObject(): keys must be strings, found {}",
                            type_name(&other)
                        ))
                    }
                }
            }
            Ok(Value::Object(m))
        }
        "array" => {
            a.count(1, 1)?;
            Ok(match a.take(0) {
                Value::Array(x) => Value::Array(x),
                other => Value::Array(vec![other]),
            })
        }
        "range" => {
            a.count(2, 2)?;
            let (start, count) = (a.int(0)?, a.int(1)?);
            if !(0..=MAX_RANGE).contains(&count) {
                return err(format!("range(): count must be between 0 and {MAX_RANGE}"));
            }
            if start.checked_add(count).is_none() {
                return a.overflow();
            }
            Ok(Value::Array(
                (start..start + count).map(Value::from).collect(),
            ))
        }
        "items" => {
            a.count(1, 1)?;
            let Value::Object(m) = a.take(0) else {
                return err("items() takes an object");
            };
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by_key(|x| x.0.to_lowercase());
            Ok(Value::Array(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let mut o = Map::new();
                        o.insert("key".into(), Value::String(k));
                        o.insert("value".into(), v);
                        Value::Object(o)
                    })
                    .collect(),
            ))
        }
        "objectkeys" => {
            a.count(1, 1)?;
            match &a.vals[0] {
                Value::Object(m) => Ok(Value::Array(
                    m.keys().map(|k| Value::String(k.clone())).collect(),
                )),
                _ => a.wrong(0, "an object"),
            }
        }
        "tryget" => {
            a.count(2, usize::MAX)?;
            let mut cur = a.vals[0].clone();
            for key in &a.vals[1..] {
                cur = match (cur, key) {
                    (Value::Object(mut m), Value::String(k)) => {
                        let found = map_get_ci(&m, k).map(|(k, _)| k.clone());
                        match found.and_then(|k| m.remove(&k)) {
                            Some(v) => v,
                            None => return Ok(Value::Null),
                        }
                    }
                    (Value::Array(mut x), Value::Number(n)) => {
                        match n.as_u64().and_then(|i| usize::try_from(i).ok()) {
                            Some(i) if i < x.len() => x.swap_remove(i),
                            _ => return Ok(Value::Null),
                        }
                    }
                    _ => return Ok(Value::Null),
                };
            }
            Ok(cur)
        }
        "flatten" => {
            a.count(1, 1)?;
            let mut out = Vec::new();
            for item in a.arr(0)? {
                match item {
                    Value::Array(inner) => out.extend(inner.iter().cloned()),
                    _ => return err("flatten() takes an array of arrays"),
                }
            }
            Ok(Value::Array(out))
        }
        "shallowmerge" => {
            a.count(1, 1)?;
            let mut out = Map::new();
            for item in a.arr(0)? {
                match item {
                    Value::Object(m) => out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
                    _ => return err("shallowMerge() takes an array of objects"),
                }
            }
            Ok(Value::Object(out))
        }
        "padleft" => {
            a.count(2, 3)?;
            let value = match &a.vals[0] {
                Value::String(s) => s.clone(),
                Value::Number(_) => text::to_text(&a.vals[0]),
                _ => return a.wrong(0, "a string or integer"),
            };
            let width = usize::try_from(a.int(1)?).unwrap_or(0);
            if width > MAX_PAD {
                return err(format!("padLeft(): total length {width} is too large"));
            }
            let pad = if a.vals.len() == 3 {
                let p = a.str(2)?;
                let mut chars = p.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => c,
                    _ => return err("padLeft(): the padding must be a single character"),
                }
            } else {
                ' '
            };
            let len = value.chars().count();
            let mut out: String = std::iter::repeat_n(pad, width.saturating_sub(len)).collect();
            out.push_str(&value);
            Ok(Value::String(out))
        }
        "uniquestring" => {
            a.count(1, usize::MAX)?;
            Ok(Value::String(ids::unique_string(&a.texts()?)))
        }
        "guid" => {
            a.count(1, usize::MAX)?;
            Ok(Value::String(ids::guid(&a.texts()?)))
        }
        "newguid" => {
            a.count(0, 0)?;
            Ok(Value::String(ids::guid(&["newGuid".to_string()])))
        }
        "utcnow" => {
            a.count(0, 1)?;
            let format = if a.vals.is_empty() { "" } else { a.str(0)? };
            Ok(Value::String(
                match format {
                    "" => FIXED_NOW,
                    "u" => "2024-01-01 00:00:00Z",
                    "d" => "1/1/2024",
                    _ => "2024-01-01T00:00:00Z",
                }
                .to_string(),
            ))
        }
        "datetimeadd" => {
            a.count(2, 3)?;
            a.str(1)?;
            Ok(Value::String(a.str(0)?.to_string()))
        }
        "base64" => {
            a.count(1, 1)?;
            Ok(Value::String(text::base64_encode(a.str(0)?.as_bytes())))
        }
        "base64tostring" => {
            a.count(1, 1)?;
            let bytes =
                text::base64_decode(a.str(0)?).or_else(|e| err(format!("{name}(): {e}")))?;
            Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        }
        "base64tojson" => {
            a.count(1, 1)?;
            let bytes =
                text::base64_decode(a.str(0)?).or_else(|e| err(format!("{name}(): {e}")))?;
            serde_json::from_slice(&bytes)
                .or_else(|e| err(format!("{name}(): not valid JSON: {e}")))
        }
        "datauri" => {
            a.count(1, 1)?;
            Ok(Value::String(format!(
                "data:text/plain;charset=utf8;base64,{}",
                text::base64_encode(a.str(0)?.as_bytes())
            )))
        }
        "datauritostring" => {
            a.count(1, 1)?;
            let s = a.str(0)?;
            let Some((head, data)) = s.split_once(',') else {
                return err("dataUriToString(): not a data URI");
            };
            if head.ends_with(";base64") {
                let bytes = text::base64_decode(data).or_else(|e| err(format!("{name}(): {e}")))?;
                Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            } else {
                Ok(Value::String(text::uri_decode(data)))
            }
        }
        "uri" => {
            a.count(2, 2)?;
            Ok(Value::String(text::uri_combine(a.str(0)?, a.str(1)?)))
        }
        "uricomponent" => {
            a.count(1, 1)?;
            Ok(Value::String(text::uri_encode(a.str(0)?)))
        }
        "uricomponenttostring" => {
            a.count(1, 1)?;
            Ok(Value::String(text::uri_decode(a.str(0)?)))
        }
        "parsecidr" => {
            a.count(1, 1)?;
            cidr::parse_cidr(a.str(0)?).or_else(|e| err(format!("{name}(): {e}")))
        }
        "cidrsubnet" => {
            a.count(3, 3)?;
            cidr::cidr_subnet(a.str(0)?, a.int(1)?, a.int(2)?)
                .map(Value::String)
                .or_else(|e| err(format!("{name}(): {e}")))
        }
        "cidrhost" => {
            a.count(2, 2)?;
            cidr::cidr_host(a.str(0)?, a.int(1)?)
                .map(Value::String)
                .or_else(|e| err(format!("{name}(): {e}")))
        }
        "resourceid"
        | "subscriptionresourceid"
        | "tenantresourceid"
        | "extensionresourceid"
        | "managementgroupresourceid" => {
            let parts = a.texts()?;
            let id = match lname {
                "resourceid" => ids::resource_id(env, &parts),
                "subscriptionresourceid" => ids::subscription_resource_id(env, &parts),
                "tenantresourceid" => ids::tenant_resource_id(&parts),
                "extensionresourceid" => ids::extension_resource_id(&parts),
                _ => ids::management_group_resource_id(env, &parts),
            };
            id.map(Value::String).or_else(|e| err(e.to_string()))
        }
        "resourcegroup" => {
            a.count(0, 0)?;
            Ok(ids::resource_group(env))
        }
        "subscription" => {
            a.count(0, 0)?;
            Ok(ids::subscription(env))
        }
        "tenant" => {
            a.count(0, 0)?;
            Ok(ids::tenant())
        }
        "deployment" => {
            a.count(0, 0)?;
            Ok(ids::deployment(env))
        }
        "environment" => {
            a.count(0, 0)?;
            Ok(ids::environment())
        }
        _ => Err(crate::eval::unresolved(format!(
            "function '{name}' is not supported offline"
        ))),
    }
}

/// Deep equality; numbers compare by value (`1` equals `1.0`), strings case-sensitively.
pub(crate) fn json_eq(x: &Value, y: &Value) -> bool {
    match (x, y) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => a.as_f64() == b.as_f64(),
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => x == y,
    }
}

fn concat(mut a: Args<'_>) -> R<Value> {
    a.count(1, usize::MAX)?;
    let array_mode = a
        .vals
        .iter()
        .find(|v| !v.is_null())
        .is_some_and(Value::is_array);
    if array_mode {
        let mut out = Vec::new();
        for i in 0..a.vals.len() {
            match a.take(i) {
                Value::Array(x) => out.extend(x),
                Value::Null => {}
                other => {
                    a.vals[i] = other;
                    return a.wrong(i, "an array (concat() does not mix arrays and strings)");
                }
            }
        }
        return Ok(Value::Array(out));
    }
    let mut out = String::new();
    for (i, v) in a.vals.iter().enumerate() {
        match text::scalar_text(v) {
            Some(t) => out.push_str(&t),
            None => return a.wrong(i, "a string (concat() does not mix arrays and strings)"),
        }
    }
    Ok(Value::String(out))
}

fn compare(a: &Args<'_>) -> R<Ordering> {
    match (&a.vals[0], &a.vals[1]) {
        (Value::Number(_), Value::Number(_)) => Ok(a.int(0)?.cmp(&a.int(1)?)),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (x, y) => err(format!(
            "{}() compares two integers or two strings, found {} and {}",
            a.name,
            type_name(x),
            type_name(y)
        )),
    }
}

fn min_max(a: &Args<'_>, max: bool) -> R<Value> {
    a.count(1, usize::MAX)?;
    let values: Vec<i64> = match a.vals.as_slice() {
        [Value::Array(items)] => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_i64() {
                    Some(i) => out.push(i),
                    None => return err(format!("{}(): the array must hold integers", a.name)),
                }
            }
            out
        }
        _ => (0..a.vals.len()).map(|i| a.int(i)).collect::<R<_>>()?,
    };
    let r = if max {
        values.iter().max()
    } else {
        values.iter().min()
    };
    r.map(|v| Value::from(*v))
        .ok_or_else(|| Stop::Error(format!("{}() of an empty array", a.name)))
}

fn split(a: &Args<'_>) -> R<Value> {
    a.count(2, 2)?;
    let s = a.str(0)?;
    let delims: Vec<&str> = match &a.vals[1] {
        Value::String(d) => vec![d.as_str()],
        Value::Array(ds) => {
            let mut out = Vec::new();
            for d in ds {
                match d {
                    Value::String(d) => out.push(d.as_str()),
                    _ => return err("split(): delimiters must be strings"),
                }
            }
            out
        }
        _ => return a.wrong(1, "a string or array of strings"),
    };
    let delims: Vec<&str> = delims.into_iter().filter(|d| !d.is_empty()).collect();
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let next = delims
            .iter()
            .filter_map(|d| rest.find(d).map(|i| (i, d.len())))
            .min_by_key(|(i, _)| *i);
        match next {
            Some((i, len)) => {
                parts.push(Value::String(rest[..i].to_string()));
                rest = &rest[i + len..];
            }
            None => {
                parts.push(Value::String(rest.to_string()));
                break;
            }
        }
    }
    Ok(Value::Array(parts))
}

fn substring(a: &Args<'_>) -> R<Value> {
    a.count(1, 3)?;
    let chars: Vec<char> = a.str(0)?.chars().collect();
    let start = if a.vals.len() > 1 { a.int(1)? } else { 0 };
    let len_total = i64::try_from(chars.len()).unwrap_or(i64::MAX);
    let length = if a.vals.len() > 2 {
        a.int(2)?
    } else {
        len_total.saturating_sub(start)
    };
    let end = start.checked_add(length);
    match end {
        Some(end) if start >= 0 && length >= 0 && end <= len_total => {
            let (s, e) = (
                usize::try_from(start).unwrap_or(0),
                usize::try_from(end).unwrap_or(0),
            );
            Ok(Value::String(chars[s..e].iter().collect()))
        }
        _ => err(format!(
            "substring(): index {start} and length {length} must lie within the string (length {len_total})"
        )),
    }
}

fn index_of(a: &Args<'_>, last: bool) -> R<Value> {
    a.count(2, 2)?;
    if let Value::Array(items) = &a.vals[0] {
        let found = if last {
            items.iter().rposition(|x| json_eq(x, &a.vals[1]))
        } else {
            items.iter().position(|x| json_eq(x, &a.vals[1]))
        };
        return Ok(found.map_or(Value::from(-1), Value::from));
    }
    let lower = |s: &str| -> Vec<char> {
        s.chars()
            .map(|c| c.to_lowercase().next().unwrap_or(c))
            .collect()
    };
    let hay = lower(a.str(0)?);
    let needle = lower(a.str(1)?);
    if needle.is_empty() {
        return Ok(Value::from(if last { hay.len() } else { 0 }));
    }
    if needle.len() > hay.len() {
        return Ok(Value::from(-1));
    }
    let starts = 0..=hay.len() - needle.len();
    let matches = |i: &usize| hay[*i..*i + needle.len()] == needle[..];
    let found = if last {
        starts.rev().find(matches)
    } else {
        starts.clone().find(matches)
    };
    Ok(found.map_or(Value::from(-1), Value::from))
}

fn take_skip(mut a: Args<'_>, take: bool) -> R<Value> {
    a.count(2, 2)?;
    let n = usize::try_from(a.int(1)?.max(0)).unwrap_or(usize::MAX);
    match a.take(0) {
        Value::Array(x) => Ok(Value::Array(if take {
            x.into_iter().take(n).collect()
        } else {
            x.into_iter().skip(n).collect()
        })),
        Value::String(s) => Ok(Value::String(if take {
            s.chars().take(n).collect()
        } else {
            s.chars().skip(n).collect()
        })),
        other => {
            a.vals[0] = other;
            a.wrong(0, "an array or string")
        }
    }
}

/// Arrays: all distinct elements in order. Objects: keys of later objects win; nested objects
/// merge.
fn union(a: Args<'_>) -> R<Value> {
    a.count(1, usize::MAX)?;
    if a.vals.iter().all(Value::is_array) {
        let mut out: Vec<Value> = Vec::new();
        for v in a.vals {
            if let Value::Array(items) = v {
                for item in items {
                    if !out.iter().any(|o| json_eq(o, &item)) {
                        out.push(item);
                    }
                }
            }
        }
        return Ok(Value::Array(out));
    }
    if a.vals.iter().all(Value::is_object) {
        let mut out = Map::new();
        for v in a.vals {
            if let Value::Object(m) = v {
                merge(&mut out, m);
            }
        }
        return Ok(Value::Object(out));
    }
    err("union() takes only arrays or only objects")
}

fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(existing)), Value::Object(new)) => merge(existing, new),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn intersection(a: &Args<'_>) -> R<Value> {
    a.count(1, usize::MAX)?;
    if let Some(Value::Array(first)) = a.vals.first() {
        let mut out: Vec<Value> = Vec::new();
        for item in first {
            let everywhere = a.vals[1..].iter().all(|v| match v {
                Value::Array(x) => x.iter().any(|e| json_eq(e, item)),
                _ => false,
            });
            if everywhere && !out.iter().any(|o| json_eq(o, item)) {
                out.push(item.clone());
            }
        }
        if a.vals.iter().all(Value::is_array) {
            return Ok(Value::Array(out));
        }
    }
    if let Some(Value::Object(first)) = a.vals.first() {
        if a.vals.iter().all(Value::is_object) {
            let out: Map<String, Value> = first
                .iter()
                .filter(|(k, v)| {
                    a.vals[1..]
                        .iter()
                        .all(|o| o.get(k.as_str()).is_some_and(|w| json_eq(v, w)))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            return Ok(Value::Object(out));
        }
    }
    err("intersection() takes only arrays or only objects")
}
