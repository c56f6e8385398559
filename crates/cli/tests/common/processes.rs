//! `palisade server` and `palisade gateway` as child processes on loopback, and curl through
//! the gateway: what the server API, UI and flow-log tests start alike.

use super::{root, Killed};
use palisade_server::auth::sha256_hex;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a child may take to start listening.
const START: Duration = Duration::from_secs(20);

/// Wait until something accepts connections at `addr`; `what` names it if it never does.
pub fn wait_for_port(addr: SocketAddr, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < START, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server token file in `dir` with an admin token and a reader token.
pub fn tokens_file(dir: &Path, admin: &str, reader: &str) -> PathBuf {
    let tokens = dir.join("tokens.txt");
    let text = format!(
        "ci admin {}\nviewer reader {}\n",
        sha256_hex(admin),
        sha256_hex(reader)
    );
    std::fs::write(&tokens, text).unwrap();
    tokens
}

/// A running `palisade server`: its data listener's and admin listener's base URLs.
pub struct ServerProcess {
    pub process: Killed,
    pub base: String,
    pub admin: String,
}

/// `palisade server` on `network` with both listeners on ephemeral loopback ports, `--data` and
/// `--token-file` as given, then `extra`; returns once it says where it listens.
pub fn start_server(network: &str, data: &Path, tokens: &Path, extra: &[&str]) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["server", "--network", network, "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(data)
        .arg("--token-file")
        .arg(tokens)
        .args(extra)
        .current_dir(root())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start palisade server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut admin = String::new();
    let base = loop {
        let line = lines
            .next()
            .expect("the server ended before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("admin API on ") {
            admin = rest.trim().to_string();
        }
        if let Some(rest) = line.strip_prefix("listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    ServerProcess {
        process: Killed(child),
        base,
        admin,
    }
}

/// `palisade gateway` on `network` as an explicit proxy at `proxy`, flow records in `data`,
/// offline (no file watch, no system resolver: names come from `--resolve` in `extra`), its
/// stderr to `stderr`; returns once it accepts connections.
pub fn start_gateway(
    network: &str,
    proxy: SocketAddr,
    data: &Path,
    extra: &[&str],
    stderr: Stdio,
) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["gateway", "-n", network])
        .args(["--listen", &proxy.to_string(), "--admin", "none"])
        .arg("--data")
        .arg(data)
        .args(["--no-watch", "--no-system-resolver"])
        .args(extra)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start palisade gateway");
    let gateway = Killed(child);
    wait_for_port(proxy, "gateway");
    gateway
}

/// `curl -x proxy url`: the HTTP status it got ("000" when none).
pub fn through(proxy: SocketAddr, url: &str) -> String {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code}"])
        .args(["-x", &format!("http://{proxy}"), url])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}
