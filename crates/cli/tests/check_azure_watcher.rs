//! `palisade check-azure --watcher`: Network Watcher results replayed against the model, from
//! the command line (issue 17, item 3).

mod common;

use common::palisade;
use serde_json::Value;

const NET: &str = "../shared/scenarios/layered-nsg/network.json";
const RESULTS: &str = "crates/analyze/tests/data/azure/web-vm1-network-watcher.json";

#[test]
fn diag_3_watcher_results_replay_without_a_nic() {
    let (code, out, err) = palisade(&[
        "check-azure",
        "--network",
        NET,
        "--watcher",
        RESULTS,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["questions_replayed"], 6);
    assert_eq!(v["disagreements"], serde_json::json!([]));

    // A different answer from Azure: exit 1, both sides in the text.
    let dir = tempfile::tempdir().unwrap();
    let edited = std::fs::read_to_string(common::root().join(RESULTS))
        .unwrap()
        .replacen("\"access\": \"Allow\"", "\"access\": \"Deny\"", 1);
    let file = dir.path().join("edited.json");
    std::fs::write(&file, edited).unwrap();
    let (code, out, _) = palisade(&[
        "check-azure",
        "--network",
        NET,
        "--watcher",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("AccessDiffers: ipFlowVerify Inbound Tcp 10.2.1.4:443 ↔ 203.0.113.20:51000 [access]\n    azure: Deny by securityRules/Allow-HTTPS\n    model: Allow by Allow-HTTPS"),
        "{out}"
    );

    // Without a NIC the effective exports cannot be compared: a usage error.
    let (code, _, _) = palisade(&[
        "check-azure",
        "--network",
        NET,
        "--effective-routes",
        RESULTS,
    ]);
    assert_eq!(code, 2);
}
