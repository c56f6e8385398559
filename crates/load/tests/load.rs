//! The one road: every way a source can go wrong ends as a located diagnostic and no snapshot;
//! a good source compiles whatever front end asks.

use palisade_load::{check, load, Source};
use std::path::{Path, PathBuf};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn ase() -> PathBuf {
    shared().join("scenarios/ase-egress-lockdown")
}

/// NSG-3: a priority outside 100-4096 is an error; PAL-5.5: a network in error yields no
/// snapshot, and the error is located by file, line and column.
#[test]
fn nsg_3_errors_refuse_the_network_with_a_location() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("nsg.json");
    std::fs::write(
        &bad,
        r#"{"name": "nsg", "type": "Microsoft.Network/networkSecurityGroups", "properties": {"securityRules": [
  {"name": "a", "properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
   "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "access": "Allow", "priority": 5000, "direction": "Inbound"}}]}}"#,
    )
    .unwrap();
    let loaded = load(&Source::files([&bad]));
    assert!(loaded.snapshot.is_none());
    let errors = loaded.error_lines();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("error: {}:2:", bad.display())),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("field `priority`"), "{}", errors[0]);
    // Asked to evaluate anyway, it compiles.
    let anyway = load(&Source {
        ignore_errors: true,
        ..Source::files([&bad])
    });
    assert!(anyway.snapshot.is_some());
}

/// FMT-5: template parameters come from a parameters file; the parameterised template then
/// compiles to the same snapshot as the literal one.
#[test]
fn fmt_5_parameters_file() {
    let with = load(&Source {
        parameters: Some(ase().join("network.parameters.json")),
        ..Source::files([ase().join("network-params.json")])
    });
    assert!(!with.diagnostics.has_errors(), "{}", with.diagnostics);
    let literal = load(&Source::files([ase().join("network.json")]));
    let (a, b) = (with.snapshot.unwrap(), literal.snapshot.unwrap());
    assert_eq!(a.firewalls().len(), 1);
    assert_eq!(a.subnets().len(), b.subnets().len());
}

#[test]
fn every_side_input_failure_is_a_diagnostic_naming_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.parameters.json");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "203.0.113.9 api.example.test\nnot-an-address x.test\n",
    )
    .unwrap();
    let loaded = load(&Source {
        parameters: Some(missing.clone()),
        service_tags: Some(dir.path().join("no-tags.json")),
        resolve: vec!["nonsense".into(), "ok.test=198.51.100.1".into()],
        hosts_file: Some(hosts.clone()),
        ..Source::files([ase().join("network.json")])
    });
    assert!(loaded.snapshot.is_none());
    let errors = loaded.error_lines().join("\n");
    assert!(errors.contains(&missing.display().to_string()), "{errors}");
    assert!(errors.contains("no-tags.json"), "{errors}");
    assert!(
        errors.contains("--resolve") && errors.contains("nonsense"),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{}:2:1", hosts.display())),
        "{errors}"
    );
    // The good bindings are kept: hosts file and --resolve together.
    assert_eq!(
        loaded.bindings["api.example.test"],
        vec!["203.0.113.9".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(loaded.bindings.contains_key("ok.test"));
}

#[test]
fn nothing_to_evaluate_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "apiVersion: palisade/v1\n").unwrap();
    let loaded = load(&Source::files([dir.path()]));
    assert!(loaded.snapshot.is_none());
    assert!(
        loaded
            .error_lines()
            .iter()
            .any(|e| e.contains("no network resources")),
        "{:?}",
        loaded.error_lines()
    );
}

/// A text held in memory takes the same road as a file with the same content.
#[test]
fn text_and_files_agree() {
    let file = ase().join("network.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let a = load(&Source::text(file.display().to_string(), text))
        .snapshot
        .unwrap();
    let b = load(&Source::files([file])).snapshot.unwrap();
    assert_eq!(a.id, b.id);
}

/// `check` reports without compiling; `watched_paths` lists every file the source reads.
#[test]
fn check_and_watched_paths() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "# none yet\n").unwrap();
    let source = Source {
        parameters: Some(ase().join("network.parameters.json")),
        hosts_file: Some(hosts),
        ..Source::files([ase().join("network-params.json")])
    };
    let checked = check(&source);
    assert!(!checked.diagnostics.has_errors(), "{}", checked.diagnostics);
    assert!(!checked.imported.network.is_empty());
    assert_eq!(source.watched_paths().len(), 3);
}
