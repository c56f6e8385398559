//! `palisade host plan|apply|diff|remove` as a user runs them. `plan` needs no privileges; the
//! others run inside a network namespace this test creates and deletes (root + nft + ip, else
//! skipped with a message).

mod common;
use common::*;

use serde_json::Value;
use std::process::Command;

const LAB: &str = "crates/host/tests/fixtures/lab.yaml";

#[test]
fn host_plan_prints_table_and_routes() {
    let (code, out, err) = palisade(&["host", "plan", "--network", LAB, "--subnet", "app"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("table inet palisade_app_nsg {"), "{out}");
    assert!(
        out.contains("counter name \"in_deny_ssh_from_net\""),
        "{out}"
    );
    assert!(out.contains("10.60.0.0/16 via 10.50.1.1"), "{out}");
    assert!(out.contains("blackhole 192.0.2.0/24"), "{out}");
    let (code, out, err) = palisade(&[
        "host",
        "plan",
        "--network",
        LAB,
        "--nic",
        "app-vm-nic",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["table"]["table"], "palisade_app_nic_nsg");
    assert!(v["nft"]["nftables"].as_array().unwrap().len() > 10);
    // No NSG on the client subnet: an error, not an empty table.
    let (code, _, err) = palisade(&["host", "plan", "--network", LAB, "--subnet", "clients"]);
    assert_ne!(code, 0);
    assert!(err.contains("no NSG"), "{err}");
}

fn kernel_skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        return Some("not root");
    }
    let ok = |c: &str, a: &str| {
        Command::new(c)
            .arg(a)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !ok("nft", "--version") {
        return Some("nft is not installed");
    }
    if !ok("ip", "-V") {
        return Some("ip is not installed");
    }
    None
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// [`palisade`] with a search path that holds no `nft` (nor anything else).
fn palisade_without_nft(args: &[&str]) -> (i32, String, String) {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env("PATH", empty.path())
        .current_dir(root())
        .output()
        .expect("run palisade");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn host_apply_diff_remove_in_a_namespace() {
    if let Some(why) = kernel_skip_reason() {
        eprintln!("SKIPPED: {why}: host apply/diff/remove need root, nft and ip");
        return;
    }
    let ns = Netns(format!("palcli{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    // A default route for `Internet` routes and a link for the appliance address.
    let ipns = |args: &[&str]| {
        let mut a = vec!["netns", "exec", &ns.0, "ip"];
        a.extend_from_slice(args);
        Command::new("ip").args(a).status().unwrap().success()
    };
    assert!(ipns(&[
        "link", "add", "d0", "type", "veth", "peer", "name", "d1"
    ]));
    assert!(ipns(&["link", "set", "d1", "up"]));
    assert!(ipns(&["addr", "add", "10.50.1.4/24", "dev", "d0"]));
    assert!(ipns(&["link", "set", "d0", "up"]));
    let state = std::env::temp_dir().join(format!("palisade-host-cli-{}", std::process::id()));
    let state_s = state.to_str().unwrap();
    let common = [
        "--network",
        LAB,
        "--subnet",
        "app",
        "--netns",
        &ns.0,
        "--state",
        state_s,
    ];
    let run = |verb: &str, extra: &[&str]| {
        let mut a = vec!["host", verb];
        a.extend_from_slice(&common);
        a.extend_from_slice(extra);
        palisade(&a)
    };

    let (code, out, err) = run("apply", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Full"), "{out}");
    assert!(out.contains("route 10.60.0.0/16 via 10.50.1.1"), "{out}");
    let (code, out, err) = run("diff", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no differences"), "{out}");
    let mut a = vec!["host", "diff"];
    a.extend_from_slice(&common);
    let (code, out, err) = palisade_without_nft(&a);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no differences"), "{out}");
    // Idempotent.
    let (code, out, _) = run("apply", &[]);
    assert_eq!(code, 0);
    assert!(out.contains("Unchanged"), "{out}");
    // A hand edit is drift (exit 1), and a reapply repairs it.
    assert!(Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "nft",
            "add",
            "rule",
            "inet",
            "palisade_app_nsg",
            "nsg_out",
            "accept"
        ])
        .status()
        .unwrap()
        .success());
    let (code, out, _) = run("diff", &["--output", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["table"]["rules_drifted"][0], "nsg_out");
    // `host diff` reads the table by netlink: the same report where no `nft` can be run.
    let mut a = vec!["host", "diff"];
    a.extend_from_slice(&common);
    a.extend_from_slice(&["--output", "json"]);
    let (code, without, err) = palisade_without_nft(&a);
    assert_eq!(code, 1, "{without}{err}");
    assert_eq!(serde_json::from_str::<Value>(&without).unwrap(), v);
    let (code, out, _) = run("apply", &[]);
    assert_eq!(code, 0);
    assert!(out.contains("drift"), "{out}");
    assert_eq!(run("diff", &[]).0, 0);
    // RT-1: a route is its prefix and its next hop: the same prefix through another next hop
    // is drift too, and a reapply puts the planned next hop back.
    assert!(ipns(&[
        "route",
        "replace",
        "10.60.0.0/16",
        "via",
        "10.50.1.9",
        "proto",
        "99"
    ]));
    let (code, out, _) = run("diff", &["--output", "json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["routes"]["changed"][0]["live"], "10.60.0.0/16 via 10.50.1.9",
        "{out}"
    );
    assert_eq!(run("apply", &[]).0, 0);
    let (code, out, _) = run("diff", &[]);
    assert_eq!(code, 0, "{out}");

    // Remove takes away exactly what was applied: the kernel is as it was.
    let (code, out, err) = palisade(&["host", "remove", "--netns", &ns.0, "--state", state_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("removed 1 table(s) (palisade_app_nsg) and 2 route(s)"),
        "{out}"
    );
    let tables = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tables.stdout).trim().is_empty());
    let routes = Command::new("ip")
        .args(["netns", "exec", &ns.0, "ip", "route", "show", "proto", "99"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&routes.stdout).trim().is_empty());
    assert!(!state.join(format!("netns-{}.json", ns.0)).exists());
    let _ = std::fs::remove_dir_all(&state);
}
