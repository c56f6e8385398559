//! `lab up` builds what the plan says and `lab down` leaves nothing behind: no namespace, no
//! veth, no nft table, no route or rule, no state file, no resolver file — also when `up` fails
//! half-way. Root only (skips with a message otherwise).

mod common;

use palisade_host::lab::{self, net, plan::KernelRoute, LabState};
use std::net::IpAddr;
use std::path::Path;

fn run_name(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 1_000_000)
}

/// Everything of `run` visible from the host's own namespace and the state directory.
fn leftovers(run: &str, state_dir: &Path) -> Vec<String> {
    let mut left = vec![];
    let prefix = lab::plan::netns_prefix(run);
    for ns in net::live_namespaces() {
        if ns.starts_with(&prefix) {
            left.push(format!("namespace {ns}"));
        }
    }
    let links = common::sh(&["ip", "-o", "link", "show"]).unwrap();
    for l in links.lines() {
        if l.contains(&format!(" {run}v")) {
            left.push(format!("link {l}"));
        }
    }
    if Path::new("/etc/netns").exists() {
        for e in std::fs::read_dir("/etc/netns").unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                left.push(format!("resolver dir {:?}", e.path()));
            }
        }
    }
    let tables = common::sh(&["nft", "list", "tables"]).unwrap();
    for t in tables.lines().filter(|t| t.contains("pal_")) {
        left.push(format!("nft {t}"));
    }
    let rules = common::sh(&["ip", "rule", "show"]).unwrap();
    for r in rules.lines().filter(|r| r.contains(&format!("{run}v"))) {
        left.push(format!("rule {r}"));
    }
    if LabState::path(state_dir, run).exists() {
        left.push("state file".into());
    }
    left
}

#[test]
fn up_builds_and_down_leaves_nothing() {
    require_kernel!();
    let snap = common::layered_nsg();
    let state_dir = tempfile::tempdir().unwrap();
    let run = run_name("u");
    let extra: Vec<IpAddr> = vec!["203.0.113.20".parse().unwrap()];
    let plan = lab::plan(&snap, &run, &extra).unwrap();
    let state = lab::up(
        &snap,
        plan,
        vec!["layered-nsg".into()],
        state_dir.path(),
        None,
    )
    .unwrap();

    // Built: every namespace, the router's per-subnet rules, the NSG tables in the NIC's place.
    let live = net::live_namespaces();
    for ns in state.plan.namespaces() {
        assert!(live.contains(&ns), "{ns} missing");
    }
    let web1 = state.plan.place_named("web-vm1-nic").unwrap();
    let tables =
        common::sh(&["ip", "netns", "exec", &web1.netns, "nft", "list", "tables"]).unwrap();
    assert!(
        tables.contains("pal_s_web_nsg") && tables.contains("pal_n_web_vm1_nic_nsg"),
        "{tables}"
    );
    let rules = common::sh(&["ip", "-n", &state.plan.router, "rule", "show"]).unwrap();
    assert!(
        rules.contains(&format!("iif {}", web1.router_link)),
        "{rules}"
    );
    let status = lab::status(state_dir.path());
    assert_eq!(status.len(), 1);
    assert!(status[0].namespaces_missing.is_empty());

    // `down` reads only the state file, as another process would.
    drop(state);
    let removed = lab::down(state_dir.path(), &run).unwrap();
    assert_eq!(removed.namespaces.len(), 7);
    let left = leftovers(&run, state_dir.path());
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(lab::status(state_dir.path()).is_empty());
}

#[test]
fn a_failed_up_removes_what_it_built() {
    require_kernel!();
    let snap = common::layered_nsg();
    let state_dir = tempfile::tempdir().unwrap();
    let run = run_name("f");
    let mut plan = lab::plan(&snap, &run, &[]).unwrap();
    // A route over a link that does not exist: the router's batch fails after the namespaces
    // and links are made.
    plan.tables[0].routes.push(KernelRoute::Via {
        prefix: "192.0.2.0/24".parse().unwrap(),
        gateway: "192.0.2.1".parse().unwrap(),
        link: "nosuchlink".into(),
    });
    let err = lab::up(&snap, plan, vec![], state_dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("nosuchlink"), "{err}");
    let left = leftovers(&run, state_dir.path());
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn a_foreign_namespace_is_never_taken_over() {
    require_kernel!();
    let snap = common::layered_nsg();
    let state_dir = tempfile::tempdir().unwrap();
    let run = run_name("x");
    let plan = lab::plan(&snap, &run, &[]).unwrap();
    common::sh(&["ip", "netns", "add", &plan.router]).unwrap();
    let router = plan.router.clone();
    let err = lab::up(&snap, plan, vec![], state_dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    // Still there: it was not ours to remove.
    assert!(net::live_namespaces().contains(&router));
    common::sh(&["ip", "netns", "del", &router]).unwrap();
    assert!(leftovers(&run, state_dir.path()).is_empty());
}
