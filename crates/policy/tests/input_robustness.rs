//! Inputs that once made compilation or a trace panic: each is fed as written and must give an
//! answer, never a panic (ARCHITECTURE: "Nothing panics on input").

use palisade_model::catalog::Catalogs;
use palisade_model::import::import_text;
use palisade_model::{ImportOptions, Protocol};
use palisade_policy::{CompileOptions, Flow, Snapshot, TraceOptions, Verdict};

fn compile(yaml: &str) -> Snapshot {
    let file = import_text("fixture.yaml", yaml, &ImportOptions::default(), None);
    assert!(!file.diagnostics.has_errors(), "{}", file.diagnostics);
    Snapshot::compile(
        &file.network,
        &Catalogs::embedded(),
        &CompileOptions::default(),
    )
}

fn flow(src: &str, dst: &str) -> Flow {
    Flow {
        source: src.parse().unwrap(),
        source_port: 50000,
        destination: dst.parse().unwrap(),
        destination_port: 443,
        protocol: Protocol::Tcp,
        host: None,
        app_protocol: None,
    }
}

/// A firewall without a private address is found by the `.4` of its subnet (scenarios README);
/// a subnet at the top of the address space has no `.4` and must not overflow.
#[test]
fn rt_2_virtual_appliance_next_hop_with_firewall_subnet_at_top_of_address_space() {
    for (space, fw_subnet, next_hop, dst) in [
        (
            "255.255.255.0/24",
            "255.255.255.252/30",
            "255.255.255.254",
            "8.8.8.8",
        ),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db8::1",
        ),
    ] {
        let yaml = format!(
            r#"
apiVersion: palisade/v1
virtualNetworks:
  - name: v
    addressSpace: ['{space}']
    subnets:
      - {{name: AzureFirewallSubnet, addressPrefix: '{fw_subnet}'}}
      - {{name: app, addressPrefix: '{app}', routeTable: rt}}
routeTables:
  - name: rt
    routes: [{{name: all, addressPrefix: '{default}', nextHopType: VirtualAppliance, nextHopIpAddress: '{next_hop}'}}]
azureFirewalls:
  - name: fw
    ipConfigurations: [{{name: c, subnet: v/AzureFirewallSubnet}}]
"#,
            app = if space.contains(':') {
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/121"
            } else {
                "255.255.255.0/25"
            },
            default = if space.contains(':') {
                "::/0"
            } else {
                "0.0.0.0/0"
            },
        );
        let snap = compile(&yaml);
        let src = if space.contains(':') {
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff04"
        } else {
            "255.255.255.4"
        };
        let t = snap.trace(&flow(src, dst), &TraceOptions::default());
        // The appliance is not a modelled firewall: the answer is "unknown", not a guess.
        assert_eq!(t.verdict, Verdict::Unknown, "{space}: {t:?}");
    }
}
