//! The `palisade` binary as a user runs it: the README's commands, exit codes, and the
//! documented JSON schema (`docs/cli-json.md`).

mod common;
use common::*;

use serde_json::Value;

fn json(args: &[&str]) -> (i32, Value) {
    let (code, out, err) = palisade(args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}\n{err}"));
    (code, v)
}

#[test]
fn readme_demo_shows_an_allowed_and_a_denied_flow() {
    let (code, out, _) = palisade(&["demo"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("verdict Allow — firewall ase-firewall / ase-dependencies/ase-fqdn-tags"),
        "{out}"
    );
    assert!(out.contains("verdict Deny — default ase-firewall"), "{out}");
}

/// DIAG-7 / issue schema: verdict, decided_by {layer, resource, collection, rule, priority},
/// hops, next_hop {type, address}.
#[test]
fn trace_json_schema_and_exit_codes() {
    let net = "examples/ase-egress-lockdown";
    let (code, v) = json(&[
        "trace",
        "--network",
        net,
        "--from",
        "10.0.0.10",
        "--to",
        "203.0.113.40",
        "--port",
        "443",
        "--host",
        "api.partner.example",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["verdict"], "Allow");
    assert_eq!(v["decided_by"]["layer"], "firewall");
    assert_eq!(v["decided_by"]["resource"], "ase-firewall");
    assert_eq!(v["decided_by"]["collection"], "app-dependencies");
    assert_eq!(v["decided_by"]["rule"], "app-dependencies/partner-apis");
    assert_eq!(v["decided_by"]["priority"], 400);
    assert_eq!(v["next_hop"]["type"], "VirtualAppliance");
    assert_eq!(v["next_hop"]["address"], "10.0.1.4");
    let layers: Vec<&str> = v["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["layer"].as_str().unwrap())
        .collect();
    // DIAG-7: after the firewall allows it, the firewall subnet's route carries the flow on.
    assert_eq!(
        layers,
        vec!["SubnetNsg", "Route", "FirewallApplication", "Route"]
    );

    let (code, v) = json(&[
        "trace",
        "--network",
        net,
        "--from",
        "10.0.0.10",
        "--to",
        "203.0.113.25",
        "--port",
        "25",
        "--output",
        "json",
    ]);
    assert_eq!(code, 3);
    assert_eq!(
        (v["verdict"].as_str(), v["decided_by"]["rule"].as_str()),
        (Some("Deny"), Some("Deny-SMTP-outbound"))
    );

    // Asymmetric reply of an unrouted management address (RT-9).
    let (code, v) = json(&[
        "trace",
        "--network",
        net,
        "--from",
        "52.151.25.45",
        "--to",
        "10.0.0.10",
        "--port",
        "454",
        "--output",
        "json",
    ]);
    assert_eq!(code, 3);
    assert_eq!(v["verdict"], "Drop");
    assert_eq!(v["reply"]["symmetric"], false);
}

#[test]
fn trace_to_a_name_uses_it_as_sni() {
    let (code, v) = json(&[
        "trace",
        "--network",
        "examples/ase-egress-lockdown",
        "--from",
        "10.0.0.10",
        "--to",
        "login.microsoftonline.com",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["flow"]["host"], "login.microsoftonline.com");
    assert_eq!(v["decided_by"]["rule"], "ase-dependencies/ase-fqdn-tags");
}

#[test]
fn next_hop_json_has_both_shapes() {
    let (code, v) = json(&[
        "next-hop",
        "--network",
        "examples/ase-egress-lockdown",
        "--from",
        "10.0.0.10",
        "--to",
        "13.90.249.229",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["next_hop"]["type"], "Internet");
    assert_eq!(v["route"]["table"], "ase-route-table");
    assert_eq!(v["route"]["name"], "monitor-13-90-249-229");
    assert_eq!(v["route"]["prefix"], "13.90.249.229/32");
    assert_eq!(v["route"]["source"], "User");
    assert_eq!(v["nextHopType"], "Internet");
    assert_eq!(v["routeTableId"], "ase-route-table");
    let (_, v) = json(&[
        "next-hop",
        "--network",
        "examples/ase-egress-lockdown",
        "--from",
        "10.0.0.10",
        "--to",
        "20.42.69.10",
        "--output",
        "json",
    ]);
    assert_eq!(v["route"]["source"], "ServiceEndpoint");
    assert_eq!(v["routeTableId"], "System Route");
}

#[test]
fn validate_reports_located_errors_and_fails() {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name": "nsg", "type": "Microsoft.Network/networkSecurityGroups", "properties": {"securityRules": [
  {"name": "a", "properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
   "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "access": "Allow", "priority": 5000, "direction": "Inbound"}}]}}"#,
    )
    .unwrap();
    let (code, v) = json(&["validate", bad.to_str().unwrap(), "--output", "json"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1);
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["severity"], "Error");
    assert_eq!(d["field"], "priority");
    assert_eq!(d["found"], "5000");
    assert_eq!(d["line"], 2);
    assert!(d["file"].as_str().unwrap().ends_with("bad.json"));
    let (code, _, _) = palisade(&["validate", "examples/ase-egress-lockdown"]);
    assert_eq!(code, 0);
}

#[test]
fn effective_routes_and_rules_render() {
    let (code, v) = json(&[
        "effective-routes",
        "--network",
        "examples/ase-egress-lockdown",
        "--subnet",
        "ase-subnet",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let routes = v["value"].as_array().unwrap();
    let default = routes
        .iter()
        .find(|r| r["source"] == "Default" && r["addressPrefix"][0] == "0.0.0.0/0")
        .unwrap();
    assert_eq!(default["state"], "Invalid");
    assert_eq!(default["invalidReason"], "Overridden");
    let (code, v) = json(&[
        "effective-rules",
        "--network",
        "../shared/scenarios/layered-nsg",
        "--nic",
        "web-vm1-nic",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let groups = v["value"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "subnet NSG and NIC NSG");
    let names: Vec<&str> = groups[1]["effectiveSecurityRules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"securityRules/Allow-HTTPS")
            && names.contains(&"defaultSecurityRules/DenyAllOutBound")
    );
}

#[test]
fn deps_check_exit_code_follows_coverage() {
    let (code, v) = json(&[
        "deps",
        "check",
        "--network",
        "../shared/scenarios/adx-dependencies/network.json",
        "--catalog",
        "../shared/scenarios/adx-dependencies/dependencies.json",
        "--from",
        "10.1.0.10",
        "--output",
        "json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(v["summary"]["covered"], 23);
    let e = &v["entries"][0];
    for key in [
        "category",
        "domainName",
        "port",
        "protocol",
        "status",
        "decided_by",
        "suggestion",
    ] {
        assert!(e.get(key).is_some(), "entry lacks {key}");
    }
}

/// `trace` of HTTPS from the layered-nsg scenario's blocked range to web-vm1, over `network`.
fn trace_from_blocked_range(network: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "trace",
        "--network",
        network,
        "--from",
        "203.0.113.200",
        "--to",
        "10.2.1.4",
        "--port",
        "443",
    ];
    args.extend_from_slice(extra);
    palisade(&args)
}

/// NSG-3: a rule priority outside 100-4096 is an error; `trace` refuses to evaluate a network in
/// error (exit 2, the located error on stderr) unless `--ignore-errors` is given.
#[test]
fn errors_stop_evaluation_unless_asked() {
    let dir = std::env::temp_dir().join(format!("palisade-cli-ignore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(root().join("../shared/scenarios/layered-nsg/network.json"))
        .unwrap();
    // The layered-nsg network with its blocked-range deny moved below the valid range.
    let bad_text = text.replacen("\"priority\": 100,", "\"priority\": 90,", 1);
    assert_ne!(bad_text, text);
    let bad = dir.join("network.json");
    std::fs::write(&bad, bad_text).unwrap();
    let flow = |extra: &[&str]| trace_from_blocked_range(bad.to_str().unwrap(), extra);
    let (code, _, err) = flow(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("priority outside 100-4096"), "{err}");
    assert!(err.contains("network.json:"), "located: {err}");
    let (code, out, _) = flow(&["--ignore-errors"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        code, 3,
        "the deny still decides when evaluated anyway: {out}"
    );
    assert!(out.contains("Deny-Blocked-Range"), "{out}");
}

#[test]
fn pal_5_1_a_flow_has_one_family() {
    let net = "examples/ase-egress-lockdown";
    for cmd in ["trace", "next-hop"] {
        let (code, out, err) = palisade(&[
            cmd,
            "--network",
            net,
            "--from",
            "10.0.0.10",
            "--to",
            "2001:db8::1",
        ]);
        assert_eq!(code, 2, "{cmd}: {out}{err}");
        assert!(err.contains("different IP families"), "{cmd}: {err}");
    }
    // A name traced from an IPv6 source goes to an IPv6 address.
    let (_, v) = json(&[
        "trace",
        "--network",
        net,
        "--from",
        "2001:db8::5",
        "--to",
        "example.com",
        "--output",
        "json",
    ]);
    assert_eq!(v["flow"]["destination"], "2001:db8::1");
    // A trailing dot and a resolved address of the source's family.
    let (_, v) = json(&[
        "trace",
        "--network",
        net,
        "--from",
        "10.0.0.10",
        "--to",
        "example.com.",
        "--resolve",
        "example.com=2001:db8::9",
        "--resolve",
        "example.com=198.51.100.9",
        "--output",
        "json",
    ]);
    assert_eq!(v["flow"]["destination"], "198.51.100.9");
}

#[test]
fn fmt_1_a_yaml_list_at_the_top_is_a_located_error() {
    let dir = std::env::temp_dir().join(format!("palisade-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("list.yaml");
    std::fs::write(&file, "- a\n- b\n").unwrap();
    let (code, out, err) = palisade(&["validate", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("not a resource object") || err.contains("not a resource object"),
        "{out}{err}"
    );
    assert!(!format!("{out}{err}").contains("panicked"));
}

/// Issue 17, NSG-3, FMT-2, FMT-12: malformed input never fails open. Each bad value, put into
/// the layered-nsg network, is a located error: `validate` exits 1, `trace` refuses to evaluate
/// (exit 2) and its hint says what `--ignore-errors` does; with `--ignore-errors` the rules left
/// out are named, with the warning that the result may allow more than the config intends.
#[test]
fn malformed_input_is_a_located_error_and_never_fails_open() {
    let text = std::fs::read(root().join("../shared/scenarios/layered-nsg/network.json")).unwrap();
    let replace = |from: &[u8], to: &[u8]| -> Vec<u8> {
        let at = text
            .windows(from.len())
            .position(|w| w == from)
            .expect("in the scenario");
        [&text[..at], to, &text[at + from.len()..]].concat()
    };
    let prefix = b"\"203.0.113.128/25\"".as_slice();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "prefix length 33",
            replace(prefix, b"\"203.0.113.128/33\""),
            ":22:",
            "securityRules 'web-nsg/Deny-Blocked-Range'",
        ),
        (
            "octet 300",
            replace(prefix, b"\"300.0.113.128/25\""),
            ":22:",
            "securityRules 'web-nsg/Deny-Blocked-Range'",
        ),
        (
            "IPv6 prefix length 129",
            replace(prefix, b"\"2001:db8::/129\""),
            ":22:",
            "securityRules 'web-nsg/Deny-Blocked-Range'",
        ),
        (
            "a list that is a string",
            replace(
                b"\"securityRules\": [",
                b"\"securityRules\": \"notalist\", \"x\": [",
            ),
            ":14:",
            "securityRules 'web-nsg (the whole list)'",
        ),
        (
            "properties null",
            replace(
                b"\"location\": \"southcentralus\",\n      \"properties\": {",
                b"\"location\": \"southcentralus\",\n      \"properties\": null, \"x\": {",
            ),
            ":13:",
            "networkSecurityGroups 'web-nsg'",
        ),
        (
            "a name that is not UTF-8",
            replace(b"Deny-Blocked-Range", b"Deny-Bl\xF6cked-Range"),
            ":16:",
            "",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("network.json");
    let file = path.to_str().unwrap();
    let trace = |extra: &[&str]| trace_from_blocked_range(file, extra);
    for (case, bytes, line, dropped) in cases {
        std::fs::write(&path, bytes).unwrap();
        let (code, out, err) = palisade(&["validate", file]);
        assert_eq!(code, 1, "{case}: {out}{err}");
        let located = format!("error: {file}{line}");
        assert!(
            out.contains(&located) || err.contains(&located),
            "{case}: {out}{err}"
        );

        let (code, _, err) = trace(&[]);
        assert_eq!(code, 2, "{case}: {err}");
        assert!(err.contains(&located), "{case}: {err}");
        assert!(
            err.contains("pass --ignore-errors to evaluate anyway")
                && err.contains("may allow more than the configuration intends"),
            "{case}: {err}"
        );

        let (_, _, err) = trace(&["--ignore-errors"]);
        assert!(
            err.contains("warning: --ignore-errors: evaluating"),
            "{case}: {err}"
        );
        if !dropped.is_empty() {
            assert!(err.contains(dropped), "{case}: {err}");
            let at = format!("({file}{} ", line.trim_end_matches(':'));
            assert!(err.contains(&at), "{case}: {err}");
            assert!(
                err.contains("may allow more than the configuration intends"),
                "{case}: {err}"
            );
        }
    }
}

#[test]
fn check_azure_exit_codes_and_json() {
    let net = "../shared/scenarios/layered-nsg/network.json";
    let routes = "crates/analyze/tests/data/azure/web-vm1-nic-effective-routes.json";
    let nsg = "crates/analyze/tests/data/azure/web-vm1-nic-effective-nsg.json";
    let (code, v) = json(&[
        "check-azure",
        "--network",
        net,
        "--nic",
        "web-vm1-nic",
        "--effective-routes",
        routes,
        "--effective-nsg",
        nsg,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["disagreements"], serde_json::json!([]));
    assert_eq!(v["nic"], "web-vm1-nic");
    assert_eq!(v["routes_compared"], 6);

    // The REST API example of another network: every difference is shown, exit 1.
    let example = "../shared/corpus/azure-configs/azure-rest-api-specs/specification/network/resource-manager/Microsoft.Network/stable/2020-11-01/examples/NetworkInterfaceEffectiveNSGList.json";
    let (code, out, _) = palisade(&[
        "check-azure",
        "--network",
        net,
        "--nic",
        "web-vm1-nic",
        "--effective-nsg",
        example,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NsgDiffers: subnet NSG [networkSecurityGroup]\n    azure: test-nsg\n    model: web-nsg"), "{out}");
    assert!(
        out.contains("MissingRule: subnet NSG test-nsg: securityRules/rule1 (Inbound)"),
        "{out}"
    );
    assert!(
        out.contains("ExtraNsg: networkInterface NSG web-vm1-nic-nsg"),
        "{out}"
    );

    // A malformed export is a located input error.
    let dir = std::env::temp_dir().join(format!("palisade-cli-check-azure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("routes.json");
    std::fs::write(&bad, "{\"value\": [\n {\"nextHopType\": 3}\n]}").unwrap();
    let (code, _, err) = palisade(&[
        "check-azure",
        "--network",
        net,
        "--nic",
        "web-vm1-nic",
        "--effective-routes",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(":2:") && err.contains("/value/0/nextHopType"),
        "{err}"
    );
}

/// FMT-1 (parameters from a parameter file): a `x.parameters.json` beside a template is its parameters file only when the template
/// declares one of its parameters. The ASE scenario folder holds `network.json` (no parameters)
/// beside `network.parameters.json` (for `network-params.json`): the first must not take it.
#[test]
fn a_sibling_parameters_file_applies_only_to_a_template_declaring_its_parameters() {
    let dir = "../shared/scenarios/ase-egress-lockdown";
    let (code, out, err) = palisade(&["validate", &format!("{dir}/network.json")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !format!("{out}{err}").contains("does not declare"),
        "{out}{err}"
    );
    // The parameterised template declares them: beside them as `net.json`, it takes them
    // without being told.
    let tmp = tempfile::tempdir().unwrap();
    let root = root();
    for (from, to) in [
        ("network-params.json", "net.json"),
        ("network.parameters.json", "net.parameters.json"),
    ] {
        std::fs::copy(root.join(dir).join(from), tmp.path().join(to)).unwrap();
    }
    let net = tmp.path().join("net.json");
    let (code, out, err) = palisade(&["validate", net.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !format!("{out}{err}").contains("has no value"),
        "{out}{err}"
    );
}

/// FMT-1: every complete native-YAML example in the docs (a ```yaml block that starts with
/// `apiVersion: palisade/v1`) validates without errors, so the docs stay true as the format grows.
#[test]
fn native_yaml_examples_in_the_docs_validate() {
    let dir = std::env::temp_dir().join(format!("palisade-cli-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for doc in ["docs/native-yaml.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for (i, block) in text.split("```yaml\n").skip(1).enumerate() {
            let body = block.split("```").next().unwrap();
            if !body.starts_with("apiVersion: palisade/v1") {
                continue;
            }
            let file = dir.join(format!("{}-{i}.yaml", doc.replace('/', "-")));
            std::fs::write(&file, body).unwrap();
            let (code, out, err) = palisade(&["validate", file.to_str().unwrap()]);
            assert_eq!(code, 0, "{doc} example {i}: {out}{err}");
            assert!(out.contains(" 0 error(s)"), "{doc} example {i}: {out}");
            checked += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(checked >= 1, "found {checked} examples");
}
