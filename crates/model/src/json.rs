//! JSON text as Azure writes it (FMT-2): UTF-8 with or without a BOM, `//` and `/* */` comments,
//! trailing commas. Parsed into a `serde_json::Value` plus an index from JSON pointer to line and
//! column, so that later stages can locate every problem.

use crate::diag::Diagnostic;
use jsonc_parser::ast;
use jsonc_parser::{CollectOptions, ParseOptions};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// A parsed document and where each value sits in its text.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub file: String,
    pub value: Value,
    /// One entry per value, the root first. A pointer string per value made the index the
    /// largest part of an import's memory; a pointer is now followed through `value` instead.
    positions: Vec<Position>,
    /// Objects holding two keys that differ only in case (or not at all): FMT-3 makes them an
    /// error, since property names match case-insensitively. (pointer of the object, key).
    pub duplicate_keys: Vec<(String, String)>,
}

/// Where one value starts (1-based line and character column), and the block of its children:
/// `children` entries from `first`, in the order of the parsed value's items or keys.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    line: u32,
    column: u32,
    first: u32,
    children: u32,
}

impl Document {
    /// 1-based line and column of the value at `pointer`, or of its nearest located ancestor.
    pub fn position(&self, pointer: &str) -> Option<(usize, usize)> {
        let mut at = *self.positions.first()?;
        let mut value = &self.value;
        for token in pointer.split('/').skip(1) {
            let step = match value {
                Value::Object(m) => {
                    let key = unescape(token);
                    m.iter()
                        .enumerate()
                        .find(|(_, (k, _))| **k == *key)
                        .map(|(i, (_, v))| (i, v))
                }
                Value::Array(a) => token
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| Some((i, a.get(i)?))),
                _ => None,
            };
            // A value changed after parsing has no entry: its nearest located ancestor stands.
            let Some((i, child)) = step.filter(|(i, _)| *i < at.children as usize) else {
                break;
            };
            match self.positions.get(at.first as usize + i) {
                Some(p) => (at, value) = (*p, child),
                None => break,
            }
        }
        Some((at.line as usize, at.column as usize))
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
            positions: vec![],
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

/// Unescape one JSON pointer token (RFC 6901).
fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
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
    let Some(root) = parsed.value else {
        return Err(Diagnostic::error("the file holds no JSON value")
            .at(file, "")
            .expected("a JSON object"));
    };
    let mut b = Builder {
        text,
        lines: &lines,
        positions: vec![Position::default()],
        duplicate_keys: vec![],
        path: vec![],
    };
    let value = b.value(&root, 0);
    Ok(Document {
        file: file.to_string(),
        value,
        positions: b.positions,
        duplicate_keys: b.duplicate_keys,
    })
}

/// One step of the path to the value being converted, for the pointer of a duplicate key.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Converts the syntax tree into a `Value`, recording each value's position in its slot.
struct Builder<'t, 'a> {
    text: &'t str,
    lines: &'t LineIndex,
    positions: Vec<Position>,
    duplicate_keys: Vec<(String, String)>,
    path: Vec<Step<'a>>,
}

impl<'a> Builder<'_, 'a> {
    /// `n` consecutive slots for the children of one value; the index of the first.
    fn reserve(&mut self, n: usize) -> u32 {
        let first = self.positions.len();
        self.positions.resize(first + n, Position::default());
        u32::try_from(first).unwrap_or(u32::MAX)
    }

    fn pointer(&self) -> String {
        let mut p = String::new();
        for s in &self.path {
            match s {
                Step::Key(k) => {
                    p.push('/');
                    p.push_str(&pointer_token(k));
                }
                Step::Index(i) => p.push_str(&format!("/{i}")),
            }
        }
        p
    }

    fn value(&mut self, v: &'a ast::Value<'a>, slot: usize) -> Value {
        let start = match v {
            ast::Value::StringLit(s) => s.range.start,
            ast::Value::NumberLit(n) => n.range.start,
            ast::Value::BooleanLit(b) => b.range.start,
            ast::Value::Object(o) => o.range.start,
            ast::Value::Array(a) => a.range.start,
            ast::Value::NullKeyword(n) => n.range.start,
        };
        let (line, column) = self.lines.position(self.text, start);
        let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.positions[slot].line = small(line);
        self.positions[slot].column = small(column);
        match v {
            ast::Value::StringLit(s) => Value::String(s.value.to_string()),
            ast::Value::NumberLit(n) => number(n.value),
            ast::Value::BooleanLit(b) => Value::Bool(b.value),
            ast::Value::NullKeyword(_) => Value::Null,
            ast::Value::Array(a) => {
                let first = self.reserve(a.elements.len());
                let mut items = Vec::with_capacity(a.elements.len());
                for (i, e) in a.elements.iter().enumerate() {
                    self.path.push(Step::Index(i));
                    items.push(self.value(e, first as usize + i));
                    self.path.pop();
                }
                self.positions[slot].first = first;
                self.positions[slot].children = small(items.len());
                Value::Array(items)
            }
            ast::Value::Object(o) => {
                let first = self.reserve(o.properties.len());
                let mut m = Map::new();
                // Lower-cased keys seen so far (comparing each key with every earlier one was
                // quadratic in the keys of one object), and each exact key's place in `m`: a
                // repeated key keeps its first place and takes the later value.
                let mut seen = HashSet::with_capacity(o.properties.len());
                let mut place: HashMap<&str, usize> = HashMap::with_capacity(o.properties.len());
                for p in &o.properties {
                    let key = p.name.as_str();
                    if !seen.insert(key.to_ascii_lowercase()) {
                        self.duplicate_keys.push((self.pointer(), key.to_string()));
                    }
                    let next = place.len();
                    let index = *place.entry(key).or_insert(next);
                    self.path.push(Step::Key(key));
                    let val = self.value(&p.value, first as usize + index);
                    self.path.pop();
                    m.insert(key.to_string(), val);
                }
                self.positions[slot].first = first;
                self.positions[slot].children = small(m.len());
                Value::Object(m)
            }
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

    #[test]
    fn fmt_2_pointers_follow_escaped_keys_repeated_keys_and_stop_at_the_last_known_value() {
        let text = "{\n \"a/b\": {\"~x\": 1},\n \"k\": 1,\n \"k\": [true,\n  null]\n}";
        let doc = parse("p.json", text).unwrap();
        assert_eq!(doc.position(""), Some((1, 1)));
        assert_eq!(doc.position("/a~1b"), Some((2, 9)));
        assert_eq!(doc.position("/a~1b/~0x"), Some((2, 16)));
        // The later value of a repeated key is the one kept, and located.
        assert_eq!(doc.position("/k"), Some((4, 7)));
        assert_eq!(doc.position("/k/1"), Some((5, 3)));
        // Missing keys and indexes: the nearest located ancestor.
        assert_eq!(doc.position("/k/7"), Some((4, 7)));
        assert_eq!(doc.position("/a~1b/zz/0"), Some((2, 9)));
        assert_eq!(Document::from_value("v", Value::Null).position(""), None);
    }

    /// Every pointer into `v`, with the value there.
    fn pointers<'v>(v: &'v Value, at: String, out: &mut Vec<(String, &'v Value)>) {
        out.push((at.clone(), v));
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    pointers(c, format!("{at}/{}", pointer_token(k)), out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    pointers(c, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-zé/~ ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Zé/~]{1,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Every pointer of a document, pretty-printed or on one line, is located at the first
        /// character of its value's text.
        #[test]
        fn every_pointer_is_located_at_its_value(v in arb_value(), pretty in proptest::bool::ANY) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            let doc = parse("v.json", &text).unwrap();
            let mut all = vec![];
            pointers(&doc.value, String::new(), &mut all);
            for (p, value) in all {
                let (line, column) = doc.position(&p).unwrap();
                let at: String = text.lines().nth(line - 1).unwrap().chars().skip(column - 1).collect();
                let expected = serde_json::to_string(value).unwrap();
                let first = expected.chars().next().unwrap();
                proptest::prop_assert!(at.starts_with(first), "{} at {}:{} is {:?}", p, line, column, at);
                if !matches!(value, Value::Object(_) | Value::Array(_)) {
                    proptest::prop_assert!(at.starts_with(&expected), "{} at {:?}", p, at);
                }
            }
        }
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
