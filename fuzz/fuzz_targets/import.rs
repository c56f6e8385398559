//! The importer on arbitrary bytes, as JSON and as YAML: it must never panic, only report.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_model::import::import_text;
use palisade_model::ImportOptions;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let options = ImportOptions::default();
    let _ = import_text("fuzz.json", &text, &options, None);
    let _ = import_text("fuzz.yaml", &text, &options, None);
});
