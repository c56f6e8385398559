//! Reading catalog JSON the way FMT-3 asks: property names match case-insensitively (two keys
//! differing only in case are an error), integers may be decimal strings, and every problem
//! carries the JSON pointer of the value at fault so the caller can locate it in the text.

use crate::diag::Diagnostic;
use crate::json::{self, pointer_token, Document};
use serde_json::{Map, Value};
use std::path::Path;

/// Deepest nesting a catalog may have. Real catalogs nest five or six levels; the limit keeps
/// hostile input from exhausting the stack of the recursive parsers.
const MAX_DEPTH: usize = 64;

/// Largest catalog file read from disk or inflated from gzip (the 2025 public service-tag file is
/// 4 MB).
pub(crate) const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// A JSON value and its pointer.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub value: &'a Value,
    pub pointer: &'a str,
}

/// A property found by [`get`]: its value and pointer.
#[derive(Debug)]
pub(crate) struct Prop<'a> {
    pub value: &'a Value,
    pub pointer: String,
}

impl Prop<'_> {
    pub fn at(&self) -> At<'_> {
        At {
            value: self.value,
            pointer: &self.pointer,
        }
    }
}

/// The pointer of `key` below `pointer`.
pub(crate) fn child(pointer: &str, key: &str) -> String {
    format!("{pointer}/{}", pointer_token(key))
}

/// The pointer of item `i` below `pointer`.
pub(crate) fn item(pointer: &str, i: usize) -> String {
    format!("{pointer}/{i}")
}

/// Property `name` of `obj`, case-insensitively. `null` counts as absent.
pub(crate) fn get<'a>(
    file: &str,
    obj: &'a Map<String, Value>,
    pointer: &str,
    name: &str,
) -> Result<Option<Prop<'a>>, Diagnostic> {
    let mut found: Option<(&'a String, &'a Value)> = None;
    for (k, v) in obj {
        if k.eq_ignore_ascii_case(name) {
            if let Some((first, _)) = found {
                return Err(Diagnostic::error(format!(
                    "two properties differ only in case: `{first}` and `{k}`"
                ))
                .at(file, &child(pointer, k))
                .field(name)
                .expected("each property once (names match case-insensitively, FMT-3)"));
            }
            found = Some((k, v));
        }
    }
    Ok(found.filter(|(_, v)| !v.is_null()).map(|(k, v)| Prop {
        value: v,
        pointer: child(pointer, k),
    }))
}

/// A short rendering of a value for `found` in a diagnostic.
pub(crate) fn describe(v: &Value) -> String {
    let text = match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(_) => "an object".to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// A "wrong type" error for the value at `at`.
pub(crate) fn wrong(file: &str, at: At<'_>, field: &str, expected: &str) -> Diagnostic {
    Diagnostic::error(format!("`{field}` has the wrong type or value"))
        .at(file, at.pointer)
        .field(field)
        .found(describe(at.value))
        .expected(expected)
}

/// A missing required property.
pub(crate) fn missing(file: &str, pointer: &str, field: &str, expected: &str) -> Diagnostic {
    Diagnostic::error(format!("required property `{field}` is missing"))
        .at(file, pointer)
        .field(field)
        .expected(expected)
}

/// An unsigned integer given as a JSON number or a decimal string (FMT-3).
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                t.parse().ok()
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A boolean given as JSON `true`/`false` or the strings `"true"`/`"false"`.
pub(crate) fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Whether `text` nests arrays and objects deeper than `limit`. Brackets inside strings do not
/// count; brackets inside comments do, which can only make the check stricter.
fn too_deep(text: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn too_deep_error(file: &str) -> Diagnostic {
    Diagnostic::error(format!(
        "the JSON nests deeper than {MAX_DEPTH} levels; this is not a catalog"
    ))
    .at(file, "")
    .expected("a catalog file")
}

/// Parse catalog text with positions ([`json::parse`]: BOM, comments, trailing commas).
pub(crate) fn parse_located(file: &str, text: &str) -> Result<Document, Diagnostic> {
    if too_deep(text, MAX_DEPTH) {
        return Err(too_deep_error(file));
    }
    json::parse(file, text)
}

/// Parse catalog text quickly, without positions, when it is strict JSON; fall back to
/// [`parse_located`] otherwise. Large files (the 4 MB service-tag file) take the fast path;
/// positions are computed later only if a problem needs locating.
pub(crate) fn parse_fast(file: &str, text: &str) -> Result<(Value, bool), Diagnostic> {
    if too_deep(text, MAX_DEPTH) {
        return Err(too_deep_error(file));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok((v, false)),
        Err(_) => parse_located(file, text).map(|d| (d.value, true)),
    }
}

/// Fill in line and column of diagnostics pointing into `text`, parsing it once more if needed.
pub(crate) fn locate_all(file: &str, text: &str, ds: Vec<Diagnostic>) -> Vec<Diagnostic> {
    if ds.iter().all(|d| d.line.is_some() || d.file != file) {
        return ds;
    }
    match parse_located(file, text) {
        Ok(doc) => ds.into_iter().map(|d| doc.locate(d)).collect(),
        Err(_) => ds,
    }
}

/// Read a catalog file as bytes, bounded by [`MAX_BYTES`].
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    use std::io::Read;
    let file = path.display().to_string();
    let fail = |e: std::io::Error| {
        Diagnostic::error(format!("cannot read the catalog: {e}"))
            .at(&file, "")
            .expected("a readable catalog file")
    };
    let f = std::fs::File::open(path).map_err(fail)?;
    let mut bytes = Vec::new();
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Diagnostic::error(format!(
            "the catalog is larger than {} MiB",
            MAX_BYTES / (1024 * 1024)
        ))
        .at(&file, ""));
    }
    Ok(bytes)
}

fn not_utf8(file: &str, e: std::str::Utf8Error) -> Diagnostic {
    Diagnostic::error(format!(
        "the catalog is not UTF-8 text (invalid byte at offset {})",
        e.valid_up_to()
    ))
    .at(file, "")
    .expected("a UTF-8 JSON file")
}

/// Bytes as UTF-8 text, or a located error.
pub(crate) fn utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, Diagnostic> {
    std::str::from_utf8(bytes).map_err(|e| not_utf8(file, e))
}

/// Read a catalog file as UTF-8 text.
pub(crate) fn read_text(path: &Path) -> Result<String, Diagnostic> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes).map_err(|e| not_utf8(&path.display().to_string(), e.utf8_error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fmt_3_property_names_match_case_insensitively() {
        let v = json!({"ChangeNumber": 3});
        let p = get("f", v.as_object().unwrap(), "", "changeNumber")
            .unwrap()
            .unwrap();
        assert_eq!(p.pointer, "/ChangeNumber");
        assert_eq!(as_u64(p.value), Some(3));
    }

    #[test]
    fn fmt_3_keys_differing_in_case_are_an_error() {
        let v = json!({"name": "a", "Name": "b"});
        let e = get("f", v.as_object().unwrap(), "/x", "NAME").unwrap_err();
        assert!(e.is_error());
        assert_eq!(e.pointer, "/x/Name");
    }

    #[test]
    fn fmt_3_numbers_may_be_decimal_strings() {
        assert_eq!(as_u64(&json!("63")), Some(63));
        assert_eq!(as_u64(&json!(" 7 ")), Some(7));
        assert_eq!(as_u64(&json!("-1")), None);
        assert_eq!(as_u64(&json!("0x10")), None);
        assert_eq!(as_u64(&json!(1.5)), None);
        assert_eq!(as_u64(&json!(-3)), None);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing() {
        let text = "[".repeat(100_000);
        assert!(parse_fast("f", &text).is_err());
        assert!(parse_located("f", &text).is_err());
        assert!(!too_deep(
            r#"{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#,
            8
        ));
    }
}
