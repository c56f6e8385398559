//! Two network namespaces joined by a veth pair, the shape of the transparent-mode tests:
//!
//! ```text
//!  ns cli: 10.77.0.2 ──veth── 10.77.0.1 ns gw (servers on its loopback addresses)
//!           default via .1
//! ```
//! Both are removed on drop (and with them the veth pair and any nft table), even on panic.

use std::io::Write;
use std::process::{Command, Stdio};

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
