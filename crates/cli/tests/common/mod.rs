//! The `palisade` binary as the tests run it: from the repository root, so the README's relative
//! paths (`examples/...`, `../shared/...`) work as written; the server and gateway processes
//! several tests start (`processes.rs`).
#![allow(dead_code, unused_imports)]

mod processes;

pub use processes::{start_gateway, start_server, through, tokens_file, wait_for_port};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run `palisade args`: (exit code, stdout, stderr).
pub fn palisade(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run palisade");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `palisade lab ARGS… --output json`: (exit code, the report it printed, stderr). Output
/// that is not JSON fails the test, showing both streams.
pub fn lab_json(args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["lab"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let (code, out, err) = palisade(&all);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, report, err)
}

/// A plain HTTP server on loopback answering every request with 200 (an upstream for the
/// gateway's tests).
pub fn http_server() -> SocketAddr {
    http_server_on("127.0.0.1")
}

/// [`http_server`] on the loopback address `ip`, for a test whose upstream must stand outside
/// its virtual network's prefixes.
pub fn http_server_on(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = vec![];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                );
            });
        }
    });
    addr
}

/// A loopback port free a moment ago, for a child process to listen on.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) on drop, so a failing test leaves none behind.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
