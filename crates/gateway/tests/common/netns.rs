//! Two network namespaces joined by a veth pair, the shape of the transparent-mode tests:
//!
//! ```text
//!  ns cli: 10.77.0.2 ──veth── 10.77.0.1 ns gw (servers on its loopback addresses)
//!           default via .1
//! ```
//! Both are removed on drop (and with them the veth pair and any nft table), even on panic.
//! [`Lab`] adds a third, ns srv, routed behind ns gw; [`in_netns`] runs code inside one of them
//! and [`InNs`] a gateway (with the servers its test needs) inside ns gw.

use palisade_gateway::policy::PolicySource;
use palisade_gateway::{Config, Gateway};
use std::future::Future;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Whether `test` can run here: false (saying SKIPPED, and `needs` what) unless root. A missing
/// tool from `tools` (command, package) fails the test instead, so a CI image without it is seen.
pub fn can_run(test: &str, needs: &str, tools: &[(&str, &str)]) -> bool {
    // SAFETY: a plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root ({needs})");
        return false;
    }
    for (tool, package) in tools {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is missing: apt-get install -y {package}"
        );
    }
    true
}

/// Runs `f` on a fresh thread moved into network namespace `ns` (threads it spawns inherit it).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: moves only this fresh thread into the namespace.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {path}: {}",
            std::io::Error::last_os_error()
        );
        f()
    })
}

/// [`in_netns`] with a two-worker tokio runtime (started inside the namespace) driving `f`.
pub fn in_netns_async<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    ns: &str,
    f: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<T> {
    in_netns(ns, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

pub struct Pair {
    pub gw: String,
    pub cli: String,
}

impl Pair {
    /// Names end in this process's id, so parallel runs do not collide; `tag` tells tests apart.
    pub fn new(tag: &str, gw_loopback: &[&str]) -> Pair {
        let id = std::process::id();
        let pair = Pair {
            gw: format!("pal{tag}g{id}"),
            cli: format!("pal{tag}c{id}"),
        };
        let (gw, cli) = (&pair.gw, &pair.cli);
        let mut cmds = vec![
            format!("ip netns add {gw}"),
            format!("ip netns add {cli}"),
            format!("ip -n {gw} link add vg type veth peer name vc netns {cli}"),
            format!("ip -n {gw} addr add 10.77.0.1/24 dev vg"),
            format!("ip -n {gw} link set vg up"),
            format!("ip -n {gw} link set lo up"),
            format!("ip -n {cli} addr add 10.77.0.2/24 dev vc"),
            format!("ip -n {cli} link set vc up"),
            format!("ip -n {cli} link set lo up"),
            format!("ip -n {cli} route add default via 10.77.0.1"),
        ];
        cmds.extend(
            gw_loopback
                .iter()
                .map(|a| format!("ip -n {gw} addr add {a} dev lo")),
        );
        for cmd in cmds {
            sh(&cmd);
        }
        pair
    }

    /// Loads an nftables ruleset in ns gw.
    pub fn nft(&self, rules: &str) {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.gw, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for n in [&self.gw, &self.cli] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// [`Pair`] plus ns srv (10.78.0.1/24 on gw's side, `srv_addrs` on its own) behind ns gw, which
/// routes between them and delivers packets marked 1 locally (for TPROXY); srv is removed on drop.
///
/// ```text
///  ns cli: 10.77.0.2 ──── 10.77.0.1 ns gw 10.78.0.1 ──vs/vx── ns srv: 10.78.0.10, …
/// ```
pub struct Lab {
    pub pair: Pair,
    pub srv: String,
}

impl Lab {
    /// `tag` tells tests apart (the tests of one file run at once in one process).
    pub fn new(tag: &str, srv_addrs: &[&str]) -> Lab {
        let pair = Pair::new(tag, &[]);
        let srv = format!("pal{tag}s{}", std::process::id());
        let lab = Lab { pair, srv };
        let (gw, srv) = (&lab.pair.gw, &lab.srv);
        let mut cmds = vec![
            format!("ip netns add {srv}"),
            format!("ip -n {gw} link add vs type veth peer name vx netns {srv}"),
            format!("ip -n {gw} addr add 10.78.0.1/24 dev vs"),
            format!("ip -n {gw} link set vs up"),
        ];
        cmds.extend(
            srv_addrs
                .iter()
                .map(|a| format!("ip -n {srv} addr add {a} dev vx")),
        );
        cmds.extend([
            format!("ip -n {srv} link set vx up"),
            format!("ip -n {srv} link set lo up"),
            format!("ip -n {srv} route add default via 10.78.0.1"),
            format!("ip netns exec {gw} sysctl -qw net.ipv4.ip_forward=1"),
            // TPROXY: marked packets are delivered locally, whatever their destination.
            format!("ip -n {gw} rule add fwmark 1 lookup 100"),
            format!("ip -n {gw} route add local 0.0.0.0/0 dev lo table 100"),
        ]);
        for cmd in cmds {
            sh(&cmd);
        }
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

/// Runs a command (words split on spaces) and asserts it succeeded.
pub fn sh(cmd: &str) {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command in `ns`, bounded in time: (exit code, stdout, stderr).
pub fn in_ns(ns: &str, cmd: &[&str]) -> (i32, String, String) {
    let mut args = vec!["netns", "exec", ns, "timeout", "15"];
    args.extend_from_slice(cmd);
    let out = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A gateway running on a thread inside a namespace, with the servers its test started there;
/// stopped, and its thread joined, on drop.
pub struct InNs {
    pub gateway: Arc<Gateway>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InNs {
    /// On a thread in `ns`, run `setup` — it starts the test's servers and returns the
    /// gateway's configuration — then the gateway; returns once the gateway serves.
    pub fn start<F>(ns: &str, setup: impl FnOnce() -> F + Send + 'static) -> InNs
    where
        F: Future<Output = Config> + 'static,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = in_netns_async(ns, move || async move {
            let config = setup().await;
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
        let gateway = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway thread started")
            .expect("gateway started in the namespace");
        InNs {
            gateway,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// [`InNs::start`] with no servers: the network in `policy`, records in `data`, no SIGHUP
    /// handler or file watch, listeners served on two threads of their own (as `palisade
    /// gateway` serves them), then `configure`.
    pub fn with_policy(
        ns: &str,
        policy: PathBuf,
        data: PathBuf,
        configure: impl FnOnce(&mut Config) + Send + 'static,
    ) -> InNs {
        InNs::start(ns, move || async move {
            let mut config = Config::new(
                PolicySource {
                    source: palisade_load::Source::files(vec![policy]),
                    firewall: None,
                },
                data,
            );
            config.sighup = false;
            config.watch = false;
            config.serving_threads = 2;
            configure(&mut config);
            config
        })
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `curl -s` from `ns` with `args` (options, then the URL), bounded in time: the HTTP status
/// (`000` when there was no answer).
pub fn curl_status(ns: &str, args: &[&str]) -> String {
    let mut all = vec![
        "curl",
        "-s",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ];
    all.extend_from_slice(args);
    in_ns(ns, &all).1
}

/// Send `bytes` over TCP from inside `ns` to `to` and read until the other side closes (at most
/// 10 s): what came back.
pub fn tcp_send_from(ns: &str, to: &str, bytes: &[u8]) -> Vec<u8> {
    let (to, bytes) = (to.to_string(), bytes.to_vec());
    in_netns(ns, move || {
        use std::io::Read;
        let mut s =
            std::net::TcpStream::connect_timeout(&to.parse().unwrap(), Duration::from_secs(5))
                .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut out = vec![];
        let _ = s.read_to_end(&mut out);
        out
    })
    .join()
    .unwrap()
}
