//! FMT-1, FMT-4: a folder's template gets its values from the parameters file beside it, even
//! when the two are named apart (`network-params.json` with `network.parameters.json`).

use palisade_model::{load, ImportOptions, Severity};
use std::path::{Path, PathBuf};

const TEMPLATE: &str = r#"{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "parameters": { "prefix": { "type": "string" } },
  "resources": [{
    "type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-04-01", "name": "vnet",
    "properties": { "addressSpace": { "addressPrefixes": ["[parameters('prefix')]"] } }
  }]
}"#;

fn parameters(prefix: &str) -> String {
    format!(
        r#"{{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
  "parameters": {{ "prefix": {{ "value": "{prefix}" }} }} }}"#
    )
}

/// A fresh folder holding `files`, removed when the guard drops.
struct Folder(PathBuf);
impl Folder {
    fn new(tag: &str, files: &[(&str, &str)]) -> Folder {
        let dir = std::env::temp_dir().join(format!("palisade-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Folder(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn address_space(folder: &Folder) -> (Vec<String>, usize, Vec<String>) {
    let imported = load(&[folder.path().to_path_buf()], &ImportOptions::default());
    let space = imported
        .network
        .virtual_networks
        .iter()
        .flat_map(|v| v.address_space.iter().map(|p| p.to_string()))
        .collect();
    let warnings = imported
        .diagnostics
        .0
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    let notes = imported
        .diagnostics
        .0
        .iter()
        .filter(|d| d.severity == Severity::Note)
        .map(|d| d.to_string())
        .collect();
    (space, warnings, notes)
}

#[test]
fn the_one_parameters_file_of_a_folder_applies_to_a_template_named_apart() {
    let folder = Folder::new(
        "apart",
        &[
            ("network-params.json", TEMPLATE),
            ("network.parameters.json", &parameters("10.7.0.0/16")),
        ],
    );
    let (space, warnings, notes) = address_space(&folder);
    assert_eq!(space, ["10.7.0.0/16"]);
    assert_eq!(warnings, 0);
    assert!(
        notes.iter().any(|n| n.contains("network.parameters.json")),
        "a note names the parameters file used: {notes:?}"
    );
}

#[test]
fn the_matching_stem_wins_and_two_candidates_apply_to_neither() {
    let folder = Folder::new(
        "stem",
        &[
            ("t.json", TEMPLATE),
            ("t.parameters.json", &parameters("10.1.0.0/16")),
            ("other.parameters.json", &parameters("10.2.0.0/16")),
        ],
    );
    assert_eq!(address_space(&folder).0, ["10.1.0.0/16"]);
    // Two parameters files beside a template named apart: no guess, the value stays unknown.
    let folder = Folder::new(
        "two",
        &[
            ("t-params.json", TEMPLATE),
            ("a.parameters.json", &parameters("10.1.0.0/16")),
            ("b.parameters.json", &parameters("10.2.0.0/16")),
        ],
    );
    let (space, warnings, notes) = address_space(&folder);
    assert!(space.is_empty(), "{space:?}");
    assert!(warnings > 0, "the unresolved parameter is reported");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("a.parameters.json") && n.contains("b.parameters.json")),
        "the candidates are named: {notes:?}"
    );
}

#[test]
fn a_portal_export_pairs_template_json_with_parameters_json() {
    let folder = Folder::new(
        "portal",
        &[
            ("template.json", TEMPLATE),
            ("parameters.json", &parameters("10.9.0.0/16")),
        ],
    );
    assert_eq!(address_space(&folder).0, ["10.9.0.0/16"]);
}

#[test]
fn another_templates_parameters_file_is_left_to_it() {
    // `hub.parameters.json` is hub's: `spoke.json`, which declares the same name, does not
    // take hub's value, and says nothing about it.
    let spoke = TEMPLATE.replace("\"vnet\"", "\"spoke\"");
    let folder = Folder::new(
        "owned",
        &[
            ("hub.json", TEMPLATE),
            ("hub.parameters.json", &parameters("10.1.0.0/16")),
            ("spoke.json", &spoke),
        ],
    );
    let (space, _, notes) = address_space(&folder);
    assert_eq!(space, ["10.1.0.0/16"], "only the hub resolves");
    assert!(notes.iter().all(|n| !n.contains("taken from")), "{notes:?}");
}

#[test]
fn the_ase_scenario_folder_loads_without_errors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/scenarios/ase-egress-lockdown");
    let imported = load(&[dir], &ImportOptions::default());
    assert!(
        !imported.diagnostics.has_errors(),
        "{}",
        imported.diagnostics
    );
    let n = &imported.network;
    assert_eq!(n.virtual_networks.len(), 1);
    assert_eq!(
        n.virtual_networks[0].address_space[0].to_string(),
        "10.0.0.0/16"
    );
    assert_eq!(n.azure_firewalls.len(), 1);
    assert!(
        n.unknowns.is_empty(),
        "every parameter resolved: {:?}",
        n.unknowns
    );
}
