//! Learning mode (PAL-5.4) on arbitrary flow-log lines: records that parse are learned from for
//! a fixed network; never panics, and the proposals merge into the network document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_analyze::learn::{self, Input, Scope};
use palisade_flowlog::FlowRecord;
use palisade_policy::Snapshot;
use std::collections::HashMap;
use std::sync::OnceLock;

const NET: &str = r#"apiVersion: palisade/v1
virtualNetworks:
  - name: vnet
    addressSpace: [10.0.0.0/16]
    subnets:
      - {name: app, addressPrefix: 10.0.1.0/24, networkSecurityGroup: app-nsg}
      - {name: AzureFirewallSubnet, addressPrefix: 10.0.2.0/24}
networkSecurityGroups:
  - name: app-nsg
    securityRules:
      - {name: deny-db, priority: 200, direction: Outbound, access: Deny, protocol: Tcp, sourceAddressPrefix: "*", destinationAddressPrefix: "*", destinationPortRange: "5432"}
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.2.4, subnet: vnet/AzureFirewallSubnet}]
"#;

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("palisade-fuzz-learn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("net.yaml");
        std::fs::write(&file, NET).unwrap();
        let loaded = palisade_load::load(&palisade_load::Source::files([file]));
        let _ = std::fs::remove_dir_all(&dir);
        loaded.snapshot.expect("the fixed network loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let records: Vec<FlowRecord> = data
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let snap = snapshot();
    let scope = Scope::resolve(snap, "10.0.0.0/8").unwrap();
    let Ok(learned) = learn::propose(&Input {
        snapshot: snap,
        records: &records,
        scope: &scope,
        since: None,
        until: None,
        catalogs: &[],
        names: &HashMap::new(),
        firewall: None,
        samples: 3,
    }) else {
        return;
    };
    let _ = learn::yaml_text(&learned);
    let mut doc: serde_json::Value = serde_saphyr::from_str(NET).unwrap();
    learn::merge_native(&mut doc, &learn::native_diff(&learned)).expect("targets exist");
});
