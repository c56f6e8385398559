//! Every template of the real-world corpus expands without panicking (FMT-4…6 robustness).
//! Linked templates are read from the template's directory; a sibling `<name>.parameters.json`
//! supplies parameter values when present.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use palisade_arm::{expand, is_template, Options, Severity};
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/azure-configs")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// Makes ARM's relaxed JSON (BOM, comments, raw control characters in strings, trailing
/// commas) acceptable to serde_json. Deliberately simple: good enough for the corpus.
fn relax(text: &str) -> String {
    let text = text.trim_start_matches('\u{feff}');
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            match c {
                '\\' => {
                    out.push(c);
                    if let Some(n) = chars.get(i + 1) {
                        out.push(*n);
                    }
                    i += 2;
                    continue;
                }
                '"' => in_string = false,
                '\n' => {
                    out.push_str("\\n");
                    i += 1;
                    continue;
                }
                '\r' => {
                    out.push_str("\\r");
                    i += 1;
                    continue;
                }
                '\t' => {
                    out.push_str("\\t");
                    i += 1;
                    continue;
                }
                _ => {}
            }
            out.push(c);
            i += 1;
            continue;
        }
        match (c, chars.get(i + 1)) {
            ('"', _) => {
                in_string = true;
                out.push(c);
                i += 1;
            }
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            (',', _) => {
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if !matches!(next, Some('}') | Some(']')) {
                    out.push(c);
                }
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&relax(&text)).map_err(|e| e.to_string())
}

fn options_for(path: &Path) -> Options {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let params = dir.join(format!("{stem}.parameters.json"));
    let parameters = read_json(&params).ok();
    let base = dir.clone();
    Options {
        parameters,
        read_linked: Some(Box::new(move |rel: &str| read_json(&base.join(rel)))),
        ..Options::default()
    }
}

#[test]
fn fmt_4_corpus_templates_expand_without_panics() {
    let mut files = Vec::new();
    json_files(&corpus_dir(), &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus not found at {}",
        corpus_dir().display()
    );
    let mut templates = 0;
    let mut panics = Vec::new();
    let mut with_errors = BTreeMap::new();
    let mut resources = 0;
    let mut unparsed = 0;
    for path in &files {
        let Ok(doc) = read_json(path) else {
            unparsed += 1;
            continue;
        };
        if !is_template(&doc) {
            continue;
        }
        templates += 1;
        let options = options_for(path);
        match catch_unwind(AssertUnwindSafe(|| expand(&doc, &options))) {
            Ok(expansion) => {
                resources += expansion.resources.len();
                let errors: Vec<String> = expansion
                    .problems
                    .iter()
                    .filter(|p| p.severity == Severity::Error)
                    .map(|p| format!("{} {}", p.pointer, p.message))
                    .collect();
                if !errors.is_empty() {
                    with_errors.insert(path.display().to_string(), errors);
                }
            }
            Err(_) => panics.push(path.display().to_string()),
        }
    }
    for (file, errors) in &with_errors {
        eprintln!("{file}: {} error(s)", errors.len());
        for e in errors {
            eprintln!("    {e}");
        }
    }
    eprintln!(
        "{} files ({unparsed} not JSON even with comments allowed), {templates} templates, \
         {resources} resources, {} templates with errors, {} panics",
        files.len(),
        with_errors.len(),
        panics.len()
    );
    assert!(templates > 50, "only {templates} templates found");
    assert!(panics.is_empty(), "expand panicked on: {panics:#?}");
}
