//! Shared test helpers: the layered-nsg snapshot and the plans rendered from the fixtures,
//! what the kernel holds of a table, root/nft checks, and network namespaces that are removed
//! on drop (also when a test fails).
#![allow(dead_code)]

use palisade_host::apply::{LiveTable, TableState};
use palisade_host::nft::Nft;
use palisade_host::render::{render, RenderOptions, TablePlan, Target};
use palisade_host::routes::enter_netns;
use palisade_policy::Snapshot;
use socket2::{Domain, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// A network loaded the way every front end loads it; it must have no errors.
pub fn snapshot_of(file: PathBuf) -> Snapshot {
    let loaded = palisade_load::load(&palisade_load::Source::files([file]));
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    loaded.snapshot.expect("a network without errors compiles")
}

/// layered-nsg, which validates with no errors.
pub fn layered_nsg() -> Snapshot {
    snapshot_of(shared().join("scenarios/layered-nsg/network.json"))
}

/// The lab network of `tests/fixtures/lab.yaml`.
pub fn lab_snapshot() -> Snapshot {
    snapshot_of(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab.yaml"))
}

/// A fixture of `tests/fixtures`, loaded.
pub fn fixture(name: &str) -> Snapshot {
    snapshot_of(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

/// A service tag of thousands of prefixes (`big-tag.yaml`): the large set.
pub fn big_tag_snapshot() -> Snapshot {
    fixture("big-tag.yaml")
}

pub fn plan_of(snap: &Snapshot, target: Target) -> TablePlan {
    render(snap, &target, &RenderOptions::default()).unwrap()
}

/// layered-nsg's web subnet, the plan most apply tests change.
pub fn web_plan() -> TablePlan {
    plan_of(&layered_nsg(), Target::Subnet("web-subnet".into()))
}

/// The six rendered tables every rule form of the renderer appears in: layered-nsg's web
/// subnet and NIC, the lab's app subnet and NIC, the dual-stack fixture's two subnets.
pub fn fixture_plans() -> Vec<TablePlan> {
    let layered = layered_nsg();
    let lab = lab_snapshot();
    let dual = fixture("dual-stack.yaml");
    vec![
        plan_of(&layered, Target::Subnet("web-subnet".into())),
        plan_of(&layered, Target::Nic("web-vm1-nic".into())),
        plan_of(&lab, Target::Subnet("app".into())),
        plan_of(&lab, Target::Nic("app-vm-nic".into())),
        plan_of(&dual, Target::Subnet("web".into())),
        plan_of(&dual, Target::Subnet("app".into())),
    ]
}

/// What the kernel holds of `table` as `nft` lists it, without handles and counter values:
/// rules per chain, set intervals, chain definitions and counter names.
pub fn contents(nft: &Nft, table: &str) -> String {
    let live = LiveTable::read(nft, table).unwrap().expect("table present");
    let counters: Vec<&String> = live.counters.keys().collect();
    format!(
        "{:#?}\n{:?}\n{:?}\n{:?}",
        live.rules, live.sets, live.chains, counters
    )
}

/// The state's handles are the kernel's (as `nft -a` lists them), chain by chain.
pub fn assert_handles_true(nft: &Nft, st: &TableState) {
    let live = LiveTable::read(nft, &st.plan.table).unwrap().unwrap();
    for c in &st.plan.chains {
        assert_eq!(
            st.handles.get(&c.name).filter(|h| !h.is_empty()),
            live.handles.get(&c.name),
            "handles of {}",
            c.name
        );
    }
}

/// Why kernel tests cannot run here, if they cannot.
pub fn kernel_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for (tool, flag) in [("nft", "--version"), ("ip", "-V")] {
        let ok = Command::new(tool)
            .arg(flag)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

#[macro_export]
macro_rules! require_kernel {
    () => {
        if let Some(why) = common::kernel_skip_reason() {
            eprintln!(
                "SKIPPED: {why}: this test needs root, nft and ip (it creates network namespaces)"
            );
            return;
        }
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace named with this run's prefix, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "pal{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]).expect("ip netns add");
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]).unwrap();
        ns
    }

    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair between two namespaces with one address (and more) on each end.
pub fn link(a: &Netns, a_if: &str, a_addrs: &[&str], b: &Netns, b_if: &str, b_addrs: &[&str]) {
    sh(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", b_if, "netns", &b.name,
    ])
    .unwrap();
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for ad in addrs {
            ns.exec(&["ip", "addr", "add", ad, "dev", ifname]).unwrap();
        }
        ns.exec(&["ip", "link", "set", ifname, "up"]).unwrap();
    }
}

/// A TCP listener on `port` inside a namespace, accepting (and closing) connections until it
/// is dropped; dropping it waits for its thread, so the port is free again afterwards.
pub struct Listener {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn listen(ns: String, port: u16) -> Listener {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(stop_rx.try_recv(), Err(mpsc::TryRecvError::Empty))
            && Instant::now() < deadline
        {
            match l.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    ready_rx.recv().expect("listener thread failed to bind");
    Listener {
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

/// Connect from `src:sport` inside `ns`; true if the handshake completed within the timeout.
pub fn connect(ns: String, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> bool {
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let domain = if src.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let s = Socket::new(domain, Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&SockAddr::from(SocketAddr::new(src, sport)))
            .unwrap();
        s.connect_timeout(
            &SockAddr::from(SocketAddr::new(dst, dport)),
            Duration::from_millis(800),
        )
        .is_ok()
    })
    .join()
    .unwrap()
}

/// The classified table (default layout) of an NSG of `n` inbound rules on 198.18.<i>.0/24,
/// allow and deny mixed: with 64 or more rules its `nsg_in` is a verdict map over interval
/// chains.
pub fn classified_plan(n: usize) -> TablePlan {
    let mut y = String::from(
        "apiVersion: palisade/v1\nvirtualNetworks:\n  - name: v\n    addressSpace: [10.60.0.0/16]\n    subnets:\n      - {name: srv, addressPrefix: 10.60.1.0/24, networkSecurityGroup: g}\nnetworkSecurityGroups:\n  - name: g\n    securityRules:\n",
    );
    for i in 0..n {
        y.push_str(&format!(
            "      - {{name: r{i}, priority: {}, direction: Inbound, access: {}, protocol: Tcp, sourceAddressPrefix: 198.18.{i}.0/24, destinationAddressPrefix: \"*\", destinationPortRange: \"{}\"}}\n",
            101 + i,
            if i % 3 == 0 { "Deny" } else { "Allow" },
            5000 + i % 2,
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("net.yaml");
    std::fs::write(&file, y).unwrap();
    plan_of(&snapshot_of(file), Target::Subnet("srv".into()))
}
