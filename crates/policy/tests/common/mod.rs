//! The setup the spec-example tests share: a small network in the native YAML format, compiled
//! after import and validation found no error, and flows over it.
#![allow(dead_code)]

use palisade_model::catalog::Catalogs;
use palisade_model::import::import_text;
use palisade_model::{ImportOptions, Protocol};
use palisade_policy::{CompileOptions, Flow, Snapshot};

/// Import, validate (no error allowed) and compile a native YAML network.
pub fn network(yaml: &str) -> Snapshot {
    let file = import_text("fixture.yaml", yaml, &ImportOptions::default(), None);
    let catalogs = Catalogs::embedded();
    let mut d = file.diagnostics.clone();
    d.extend(palisade_model::validate(&file.network, &catalogs, false).0);
    assert!(!d.has_errors(), "{d}");
    Snapshot::compile(&file.network, &catalogs, &CompileOptions::default())
}

/// A flow from source port 50000, without a name.
pub fn flow(proto: Protocol, src: &str, dst: &str, port: u16) -> Flow {
    Flow {
        source: src.parse().unwrap(),
        source_port: 50000,
        destination: dst.parse().unwrap(),
        destination_port: port,
        protocol: proto,
        host: None,
        app_protocol: None,
    }
}

/// The same flow carrying a name (SNI or Host) for the application rules.
pub fn named(f: Flow, host: &str) -> Flow {
    Flow {
        host: Some(host.to_string()),
        ..f
    }
}
