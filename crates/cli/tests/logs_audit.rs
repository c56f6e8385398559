//! PAL-5.3: `palisade logs --audit` and `--shadow-diff` over a flow log written by the flow-log
//! library, and `palisade trace` listing audit matches in text and JSON.

mod common;
use common::*;

use palisade_flowlog::{AuditEntry, FlowLog, FlowRecord, Options, ShadowDiff};

fn record(name: &str, action: &str) -> FlowRecord {
    FlowRecord {
        time: "2026-12-04T23:00:00.000Z".into(),
        mode: "explicit".into(),
        protocol: "HTTP".into(),
        source_ip: Some("10.0.0.5".parse().unwrap()),
        destination_port: 80,
        name: Some(name.into()),
        action: action.into(),
        reason: "RuleMatched".into(),
        ..Default::default()
    }
}

fn names(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pal_5_3_logs_filters_audit_and_shadow_diff_records() {
    // spec PAL-5.3
    let data = tempfile::tempdir().unwrap();
    let log = FlowLog::open(data.path(), Options::default()).unwrap();
    let audited = FlowRecord {
        audit: true,
        audit_rules: vec![AuditEntry {
            layer: "FirewallApplication".into(),
            rule: "candidates/trial".into(),
            access: "Allow".into(),
        }],
        ..record("trial.audit.test", "Deny")
    };
    let observed = FlowRecord {
        audit: true,
        observe: Some("10.0.0.0/24".into()),
        ..record("observed.test", "Allow")
    };
    let diff = FlowRecord {
        shadow: Some(ShadowDiff {
            live_action: "Allow".into(),
            live_rule: "allow-apps/web".into(),
            shadow_action: "Deny".into(),
            shadow_rule: "default".into(),
            shadow_snapshot: "abc".into(),
        }),
        ..record("www.allowed.test", "ShadowDiff")
    };
    log.append_all(&[
        record("plain.test", "Allow"),
        audited,
        record("www.allowed.test", "Allow"),
        diff,
        observed,
    ])
    .unwrap();
    // A record an older version wrote: the audit rule paths as a list.
    drop(log);
    let segment = data.path().join("flows-00000001.jsonl");
    let mut text = std::fs::read_to_string(&segment).unwrap();
    text.push_str(
        r#"{"time":"2026-12-04T22:00:00.000Z","action":"Deny","name":"old.test","audit":["c/r"]}"#,
    );
    text.push('\n');
    std::fs::write(&segment, text).unwrap();
    let dir = data.path().to_str().unwrap();

    let (code, out, err) = palisade(&["logs", "--data", dir, "--audit", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        names(&out),
        ["old.test", "observed.test", "trial.audit.test"]
    );
    let (code, out, err) = palisade(&["logs", "--data", dir, "--audit"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("audit [candidates/trial would Allow]"),
        "{out}"
    );
    assert!(
        out.contains("[observe 10.0.0.0/24: default deny audited]"),
        "{out}"
    );

    let (code, out, err) = palisade(&["logs", "--data", dir, "--shadow-diff", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(names(&out), ["www.allowed.test"]);
    let (_, out, _) = palisade(&["logs", "--data", dir, "--shadow-diff"]);
    assert!(
        out.contains("live=Allow (allow-apps/web) shadow=Deny (default)"),
        "{out}"
    );
    // Without a filter every record is listed.
    let (_, out, _) = palisade(&["logs", "--data", dir, "--output", "json"]);
    assert_eq!(names(&out).len(), 6);
}

#[test]
fn pal_5_3_trace_lists_audit_matches_in_text_and_json() {
    // spec PAL-5.3: an audit Deny above an Allow changes no verdict and is listed.
    let dir = tempfile::tempdir().unwrap();
    let network = dir.path().join("network.yaml");
    std::fs::write(
        &network,
        r#"apiVersion: palisade/v1
virtualNetworks:
  - {name: vnet, addressSpace: [10.0.0.0/16], subnets: [{name: app, addressPrefix: 10.0.1.0/24, networkSecurityGroup: nsg}]}
networkSecurityGroups:
  - name: nsg
    securityRules:
      - {name: candidate, priority: 100, direction: Inbound, access: Deny, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '22', palisade: {mode: Audit}}
      - {name: ssh, priority: 200, direction: Inbound, access: Allow, protocol: Tcp, sourceAddressPrefix: '*', destinationAddressPrefix: '*', destinationPortRange: '22'}
"#,
    )
    .unwrap();
    let n = network.to_str().unwrap();
    let args = [
        "trace",
        "-n",
        n,
        "--from",
        "198.51.100.1",
        "--to",
        "10.0.1.4",
        "--port",
        "22",
    ];
    let (code, out, err) = palisade(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("verdict Allow"), "{out}");
    assert!(
        out.contains("audit rule matched and passed over: securityRules/candidate (would Deny)"),
        "{out}"
    );
    let (code, out, err) = palisade(&[&args[..], &["--output", "json"]].concat());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "Allow");
    assert_eq!(
        v["hops"][0]["audit"],
        serde_json::json!([{"layer": "SubnetNsg", "rule": "securityRules/candidate", "access": "Deny"}])
    );
}
