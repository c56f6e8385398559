//! Transparent UDP through TPROXY, in network namespaces the test creates and removes:
//!
//! ```text
//!  ns cli: 10.77.0.2 ──veth── 10.77.0.1 ns gw 10.78.0.1 ──veth── 10.78.0.10, .11 ns srv
//!           default via .1      nft: iifname "vg" udp → tproxy :15002     (UDP echo servers)
//!                               ip rule fwmark 1 → table 100: local 0.0.0.0/0 dev lo
//! ```
//! The gateway runs in this process on a thread moved into ns gw (`setns(2)`); the echo
//! servers and the client are plain sockets on threads moved into ns srv and ns cli. Needs root
//! and `nft`; without root it is skipped with a message.

mod common;

use common::netns::{sh, Pair};
use common::write;
use palisade_flowlog::{query, FlowRecord, Query};
use palisade_gateway::policy::PolicySource;
use palisade_gateway::{Config, Gateway};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POLICY: &str = r#"apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.77.0.1}]
    networkRuleCollections:
      - name: udp
        priority: 100
        action: {type: Allow}
        rules: [{name: echo, protocols: [UDP], sourceAddresses: ['10.77.0.0/24'], destinationAddresses: ['10.78.0.10'], destinationPorts: ['7000']}]
      - name: block
        priority: 200
        action: {type: Deny}
        rules: [{name: no-ntp, protocols: [UDP], sourceAddresses: ['*'], destinationAddresses: ['10.78.0.11'], destinationPorts: ['123']}]
"#;

/// [`Pair`] plus ns srv behind ns gw, which routes between them; srv is removed on drop.
struct Lab {
    pair: Pair,
    srv: String,
}

impl Lab {
    fn new() -> Lab {
        let pair = Pair::new("u", &[]);
        let srv = format!("palus{}", std::process::id());
        let lab = Lab { pair, srv };
        let (gw, srv) = (&lab.pair.gw, &lab.srv);
        for cmd in [
            format!("ip netns add {srv}"),
            format!("ip -n {gw} link add vs type veth peer name vx netns {srv}"),
            format!("ip -n {gw} addr add 10.78.0.1/24 dev vs"),
            format!("ip -n {gw} link set vs up"),
            format!("ip -n {srv} addr add 10.78.0.10/24 dev vx"),
            format!("ip -n {srv} addr add 10.78.0.11/24 dev vx"),
            format!("ip -n {srv} link set vx up"),
            format!("ip -n {srv} link set lo up"),
            format!("ip -n {srv} route add default via 10.78.0.1"),
            format!("ip netns exec {gw} sysctl -qw net.ipv4.ip_forward=1"),
            // TPROXY: marked datagrams are delivered locally, whatever their destination.
            format!("ip -n {gw} rule add fwmark 1 lookup 100"),
            format!("ip -n {gw} route add local 0.0.0.0/0 dev lo table 100"),
        ] {
            sh(&cmd);
        }
        lab.pair.nft(
            "table ip palisade_udp {\n chain prerouting {\n  type filter hook prerouting priority mangle; policy accept;\n  iifname \"vg\" meta l4proto udp tproxy to :15002 meta mark set 1 accept\n }\n}\n",
        );
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
    }
}

/// Run `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {path}"
        );
        f()
    })
}

/// UDP echo servers in `ns` until `stop` is set.
fn echo_servers(ns: &str, addrs: &[&str], stop: Arc<AtomicBool>) {
    for a in addrs {
        let (a, stop) = (a.parse::<SocketAddr>().unwrap(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        in_netns(ns, move || {
            let s = UdpSocket::bind(a).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
}

/// From `from` in `ns`, send each payload to `to` and collect the replies (payload, sender)
/// that arrive within a second of each.
fn exchange(ns: &str, from: &str, to: &str, payloads: &[&str]) -> Vec<(String, SocketAddr)> {
    let (from, to) = (from.parse::<SocketAddr>().unwrap(), to.to_string());
    let payloads: Vec<String> = payloads.iter().map(|p| p.to_string()).collect();
    in_netns(ns, move || {
        let s = UdpSocket::bind(from).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut replies = vec![];
        let mut buf = [0u8; 2048];
        for p in payloads {
            s.send_to(p.as_bytes(), &to).unwrap();
            if let Ok((n, sender)) = s.recv_from(&mut buf) {
                replies.push((String::from_utf8_lossy(&buf[..n]).into_owned(), sender));
            }
        }
        replies
    })
    .join()
    .unwrap()
}

fn records(dir: &Path, pred: impl Fn(&FlowRecord) -> bool) -> Vec<FlowRecord> {
    let (recs, _) = query(dir, &Query::default()).unwrap();
    recs.into_iter().filter(|r| pred(r)).collect()
}

fn wait_for(dir: &Path, what: &str, pred: impl Fn(&FlowRecord) -> bool) -> FlowRecord {
    let start = Instant::now();
    loop {
        if let Some(r) = records(dir, &pred).into_iter().next() {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no record {what}; have:\n{:#?}",
            records(dir, |_| true)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn udp_from(port: u16) -> impl Fn(&FlowRecord) -> bool {
    move |r| r.protocol == "UDP" && r.source_port == port
}

// spec FW-2, FW-3: UDP is judged by network rules in priority order, then denied by default;
// one session per 5-tuple with one record per decision, not per datagram.
#[test]
fn transparent_udp_sessions_in_namespaces() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED transparent_udp_sessions_in_namespaces: needs root (network namespaces, nft, IP_TRANSPARENT)");
        return;
    }
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "nft is missing: apt-get install -y nftables"
    );
    let lab = Lab::new();
    let stop = Arc::new(AtomicBool::new(false));
    echo_servers(
        &lab.srv,
        &["10.78.0.10:7000", "10.78.0.10:9999", "10.78.0.11:123"],
        stop.clone(),
    );

    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("network.yaml");
    write(&policy, POLICY);
    let data: PathBuf = dir.path().join("data");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let data2 = data.clone();
    let gateway = in_netns(&lab.pair.gw, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut config = Config::new(
                PolicySource {
                    source: palisade_load::Source::files(vec![policy]),
                    firewall: None,
                },
                data2,
            );
            config.transparent_udp = vec!["0.0.0.0:15002".parse().unwrap()];
            config.sighup = false;
            config.watch = false;
            // Longer than the client's 1 s wait between datagrams.
            config.limits.udp_idle_timeout = Duration::from_secs(2);
            config.limits.max_udp_sessions = 3;
            match Gateway::start(config).await {
                Ok(running) => {
                    let _ = ready_tx.send(Ok(running.gateway.clone()));
                    let _ = stop_rx.await;
                    drop(running);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        });
    });
    let gw = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("gateway thread started")
        .expect("gateway started in the namespace");

    // Allowed: the echo comes back from the address the client sent to, both datagrams in one
    // session.
    let cli = lab.pair.cli.clone();
    let replies = exchange(
        &cli,
        "10.77.0.2:40001",
        "10.78.0.10:7000",
        &["ping", "pong!"],
    );
    let sender: SocketAddr = "10.78.0.10:7000".parse().unwrap();
    assert_eq!(
        replies,
        vec![("ping".to_string(), sender), ("pong!".to_string(), sender)]
    );
    let opened = wait_for(&data, "of the allowed session", udp_from(40001));
    assert_eq!(
        (opened.action.as_str(), opened.mode.as_str()),
        ("Allow", "transparent")
    );
    assert_eq!(opened.rule_path().as_deref(), Some("udp/echo"));
    assert_eq!(opened.destination_ip, Some("10.78.0.10".parse().unwrap()));

    // Denied by a rule: nothing comes back, though a server answers there; one record for
    // three datagrams.
    let dropped_before = gw.metrics.udp_datagrams_dropped.get();
    let replies = exchange(&cli, "10.77.0.2:40002", "10.78.0.11:123", &["a", "b", "c"]);
    assert!(replies.is_empty(), "{replies:?}");
    let denied = wait_for(&data, "of the denied session", udp_from(40002));
    assert_eq!(denied.action, "Deny");
    assert_eq!(denied.rule_path().as_deref(), Some("block/no-ntp"));
    assert_eq!(records(&data, udp_from(40002)).len(), 1);
    assert_eq!(gw.metrics.udp_datagrams_dropped.get() - dropped_before, 3);

    // No rule matches: denied by default (FW-3).
    let replies = exchange(&cli, "10.77.0.2:40003", "10.78.0.10:9999", &["x"]);
    assert!(replies.is_empty(), "{replies:?}");
    let default = wait_for(&data, "of the default deny", udp_from(40003));
    assert_eq!(
        (default.action.as_str(), default.decided_by.as_deref()),
        ("Deny", Some("default"))
    );

    // Expiry: quiet for the idle time (2 s), the allowed session ends with its bytes; the
    // same 5-tuple then opens a new session.
    let ended = wait_for(&data, "of the session's end", |r| {
        udp_from(40001)(r) && r.bytes_sent > 0
    });
    assert_eq!((ended.bytes_sent, ended.bytes_received), (9, 9));
    assert!(
        ended.detail.as_deref().unwrap_or("").contains("quiet"),
        "{ended:?}"
    );
    let replies = exchange(&cli, "10.77.0.2:40001", "10.78.0.10:7000", &["again"]);
    assert_eq!(replies.len(), 1);
    let start = Instant::now();
    while records(&data, |r| udp_from(40001)(r) && r.bytes_sent == 0).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no second session"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The table holds 3 sessions: a fourth evicts the least recently active.
    std::thread::sleep(Duration::from_millis(2500));
    for port in 41001..=41004 {
        let replies = exchange(
            &cli,
            &format!("10.77.0.2:{port}"),
            "10.78.0.10:7000",
            &["e"],
        );
        assert_eq!(replies.len(), 1, "from port {port}");
    }
    assert!(gw.metrics.udp_sessions_evicted.get() >= 1);
    let evicted = wait_for(&data, "of the evicted session", |r| {
        udp_from(41001)(r) && r.detail.as_deref().unwrap_or("").contains("evicted")
    });
    assert_eq!((evicted.bytes_sent, evicted.bytes_received), (1, 1));

    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(());
    gateway.join().unwrap();
}
