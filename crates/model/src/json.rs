//! JSON text as Azure writes it (FMT-2): UTF-8 with or without a BOM, `//` and `/* */` comments,
//! trailing commas. Parsed into a `serde_json::Value` plus an index from JSON pointer to line and
//! column, so that later stages can locate every problem.

use crate::diag::Diagnostic;
use jsonc_parser::ast;
use jsonc_parser::{CollectOptions, ParseOptions};
use serde_json::{Map, Number, Value};
use std::collections::{HashMap, HashSet};

/// A parsed document and where each value sits in its text.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub file: String,
    pub value: Value,
    positions: HashMap<String, (usize, usize)>,
    /// Objects holding two keys that differ only in case (or not at all): FMT-3 makes them an
    /// error, since property names match case-insensitively. (pointer of the object, key).
    pub duplicate_keys: Vec<(String, String)>,
}

impl Document {
    /// 1-based line and column of the value at `pointer`, or of its nearest located ancestor.
    pub fn position(&self, pointer: &str) -> Option<(usize, usize)> {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    /// Fill in line and column of a diagnostic that points into this document.
    pub fn locate(&self, mut d: Diagnostic) -> Diagnostic {
        if d.file.is_empty() {
            d.file = self.file.clone();
        }
        if d.file == self.file && d.line.is_none() {
            if let Some((l, c)) = self.position(&d.pointer) {
                d.line = Some(l);
                d.column = Some(c);
            }
        }
        d
    }

    /// A document built from a value (YAML, tests) without text positions.
    pub fn from_value(file: &str, value: Value) -> Document {
        Document {
            file: file.to_string(),
            value,
            positions: HashMap::new(),
            duplicate_keys: vec![],
        }
    }
}

/// Fill in line and column of diagnostics raised after import (validation), by reading each
/// named JSON file once more. Files that cannot be read or parsed leave their diagnostics as
/// they are (pointer only).
pub fn locate_in_files(diagnostics: &mut crate::diag::Diagnostics) {
    let mut docs: HashMap<String, Option<Document>> = HashMap::new();
    for d in diagnostics
        .0
        .iter_mut()
        .filter(|d| d.line.is_none() && !d.file.is_empty())
    {
        let doc = docs.entry(d.file.clone()).or_insert_with(|| {
            let text = std::fs::read_to_string(&d.file).ok()?;
            if d.file.ends_with(".yaml") || d.file.ends_with(".yml") {
                return None;
            }
            parse(&d.file, &text).ok()
        });
        if let Some(doc) = doc {
            if let Some((l, c)) = doc.position(&d.pointer) {
                d.line = Some(l);
                d.column = Some(c);
            }
        }
    }
}

/// Escape one JSON pointer token (RFC 6901).
pub fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Offsets → 1-based line and column (in characters). Every value of a document is located, so a
/// lookup must not rescan its line: on a one-line (minified) file that made parsing quadratic.
/// Character counts are kept at every `CHUNK` bytes, so a lookup counts at most `CHUNK` bytes.
struct LineIndex {
    starts: Vec<usize>,
    /// Characters before byte `i * CHUNK`, and the total last.
    chars_at: Vec<usize>,
}

const CHUNK: usize = 256;

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut chars_at = Vec::with_capacity(text.len() / CHUNK + 1);
        let mut total = 0;
        for chunk in text.as_bytes().chunks(CHUNK) {
            chars_at.push(total);
            total += chars_in(chunk);
        }
        chars_at.push(total);
        LineIndex { starts, chars_at }
    }
    /// Characters in `text` before byte `offset` (a character boundary, at most `text.len()`).
    fn chars_before(&self, text: &str, offset: usize) -> usize {
        let block = offset / CHUNK;
        self.chars_at[block] + chars_in(&text.as_bytes()[block * CHUNK..offset])
    }
    fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|s| *s <= offset).max(1) - 1;
        let start = self.starts[line];
        let end = offset.min(text.len());
        let col = match text.get(start..end) {
            Some(_) => self.chars_before(text, end) - self.chars_before(text, start),
            None => 0,
        };
        (line + 1, col + 1)
    }
}

/// Characters in UTF-8 bytes: every byte that is not a continuation byte starts one.
fn chars_in(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| (**b as i8) >= -0x40).count()
}

/// Deepest nesting accepted: real configurations stay far below it, and refusing deeper input
/// keeps the recursive parser and converter off the end of the stack.
pub const MAX_DEPTH: usize = 128;

/// Nesting depth of `[`/`{` outside strings and comments, and the offset where it passed `limit`.
fn too_deep(text: &str, limit: usize) -> Option<usize> {
    let b = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parse JSON text (with comments, BOM, trailing commas).
pub fn parse(file: &str, text: &str) -> Result<Document, Diagnostic> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = LineIndex::new(text);
    if let Some(at) = too_deep(text, MAX_DEPTH) {
        let (l, c) = lines.position(text, at);
        let mut d = Diagnostic::error(format!("nesting deeper than {MAX_DEPTH} levels"))
            .at(file, "")
            .expected(format!(
                "a JSON document nested at most {MAX_DEPTH} levels deep"
            ));
        d.line = Some(l);
        d.column = Some(c);
        return Err(d);
    }
    let options = ParseOptions {
        allow_comments: true,
        allow_loose_object_property_names: false,
        allow_trailing_commas: true,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        ..ParseOptions::default()
    };
    let parsed =
        jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options).map_err(|e| {
            let (l, c) = lines.position(text, e.range().start);
            let mut d = Diagnostic::error(format!("invalid JSON: {}", e.kind()))
                .at(file, "")
                .expected("a JSON document (comments and trailing commas are accepted)");
            d.line = Some(l);
            d.column = Some(c);
            d
        })?;
    let mut positions = HashMap::new();
    let mut duplicate_keys = vec![];
    let value = match parsed.value {
        Some(v) => convert(
            &v,
            String::new(),
            text,
            &lines,
            &mut positions,
            &mut duplicate_keys,
        ),
        None => {
            return Err(Diagnostic::error("the file holds no JSON value")
                .at(file, "")
                .expected("a JSON object"))
        }
    };
    Ok(Document {
        file: file.to_string(),
        value,
        positions,
        duplicate_keys,
    })
}

fn convert(
    v: &ast::Value<'_>,
    pointer: String,
    text: &str,
    lines: &LineIndex,
    positions: &mut HashMap<String, (usize, usize)>,
    duplicates: &mut Vec<(String, String)>,
) -> Value {
    let start = match v {
        ast::Value::StringLit(s) => s.range.start,
        ast::Value::NumberLit(n) => n.range.start,
        ast::Value::BooleanLit(b) => b.range.start,
        ast::Value::Object(o) => o.range.start,
        ast::Value::Array(a) => a.range.start,
        ast::Value::NullKeyword(n) => n.range.start,
    };
    positions.insert(pointer.clone(), lines.position(text, start));
    match v {
        ast::Value::StringLit(s) => Value::String(s.value.to_string()),
        ast::Value::NumberLit(n) => number(n.value),
        ast::Value::BooleanLit(b) => Value::Bool(b.value),
        ast::Value::NullKeyword(_) => Value::Null,
        ast::Value::Array(a) => Value::Array(
            a.elements
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    convert(
                        e,
                        format!("{pointer}/{i}"),
                        text,
                        lines,
                        positions,
                        duplicates,
                    )
                })
                .collect(),
        ),
        ast::Value::Object(o) => {
            let mut m = Map::new();
            // Lower-cased keys seen so far: comparing each key with every earlier one was
            // quadratic in the keys of one object.
            let mut seen = HashSet::with_capacity(o.properties.len());
            for p in &o.properties {
                let key = p.name.as_str().to_string();
                if !seen.insert(key.to_ascii_lowercase()) {
                    duplicates.push((pointer.clone(), key.clone()));
                }
                let child = format!("{pointer}/{}", pointer_token(&key));
                let val = convert(&p.value, child, text, lines, positions, duplicates);
                m.insert(key, val);
            }
            Value::Object(m)
        }
    }
}

fn number(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Value::Number(u.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_2_bom_comments_and_positions() {
        let text = "\u{feff}{\n  // a comment\n  \"a\": [1, /* x */ {\"b\": \"c\"},],\n}";
        let doc = parse("t.json", text).unwrap();
        assert_eq!(doc.value["a"][1]["b"], "c");
        assert_eq!(doc.position("/a/1/b"), Some((3, 26)));
        assert_eq!(doc.position("/a/1/zz"), Some((3, 20)));
    }

    #[test]
    fn columns_deep_in_a_one_line_file_count_characters() {
        // Far past the first checkpoints, with multi-byte characters before the value.
        let item = r#"{"d":"é€😀","n":1},"#;
        let text = format!("[{}{{\"last\": true}}]", item.repeat(500));
        let doc = parse("one.json", &text).unwrap();
        let before = 1 + item.chars().count() * 500;
        assert_eq!(doc.position("/500/last"), Some((1, before + 10)));
        assert_eq!(doc.position("/499/n"), Some((1, before - 2)));
    }

    #[test]
    fn fmt_2_deep_nesting_is_refused_not_a_stack_overflow() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse("deep.json", &text).unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(parse("ok.json", "{\"a\": \"[[[[\", \"b\": [[1]]}").is_ok());
    }

    #[test]
    fn fmt_3_keys_differing_only_in_case_are_recorded() {
        let doc = parse("k.json", "{\"a\": {\"Name\": 1, \"name\": 2}}").unwrap();
        assert_eq!(
            doc.duplicate_keys,
            vec![("/a".to_string(), "name".to_string())]
        );
    }

    #[test]
    fn fmt_2_invalid_json_is_located() {
        let e = parse("bad.json", "{\n  \"a\": tru\n}").unwrap_err();
        assert_eq!(e.file, "bad.json");
        assert_eq!(e.line, Some(2));
    }

    proptest::proptest! {
        /// The checkpointed index gives the line and character column that scanning the text
        /// from its start gives, at every character boundary.
        #[test]
        fn line_index_matches_a_scan(text in "(\\PC|\n){0,700}") {
            let index = LineIndex::new(&text);
            let (mut line, mut col) = (1, 1);
            for (offset, c) in text.char_indices().chain([(text.len(), ' ')]) {
                proptest::prop_assert_eq!(index.position(&text, offset), (line, col));
                if c == '\n' {
                    (line, col) = (line + 1, 1);
                } else {
                    col += 1;
                }
            }
        }
    }
}
