//! `palisade gateway` stops gracefully on SIGTERM: it logs the drain, closes what is left after
//! `--grace-period`, records it, and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NETWORK: &str = "apiVersion: palisade/v1
azureFirewalls:
  - name: fw
    ipConfigurations: [{name: c, privateIPAddress: 10.0.1.4}]
    applicationRuleCollections:
      - name: allow-apps
        priority: 200
        action: {type: Allow}
        rules:
          - {name: web, sourceAddresses: ['*'], protocols: ['Http:8080'], targetFqdns: [www.allowed.test]}
";

/// Kills the gateway if the test ends before it exits.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_drains_logs_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let network = dir.path().join("network.yaml");
    std::fs::write(&network, NETWORK).unwrap();
    let data = dir.path().join("data");
    let mut gateway = Gateway(
        Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["gateway", "--listen", "127.0.0.1:0", "--admin", "none"])
            .args(["--no-watch", "--no-system-resolver", "--grace-period", "1"])
            .arg("--network")
            .arg(&network)
            .arg("--data")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway"),
    );
    let child = &mut gateway.0;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut log = vec![];
    let next = |log: &mut Vec<String>, what: &str| -> String {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no `{what}` line; log:\n{}", log.join("\n")));
            log.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
    };
    let line = next(&mut log, "explicit proxy on ");
    let proxy: SocketAddr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("the proxy address");
    // A client still sending its request head: in flight, not finished by the grace period.
    let mut client = TcpStream::connect(proxy).unwrap();
    client.write_all(b"CONNECT www.allow").unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // SAFETY: kill(2) on the child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let drain = next(&mut log, "shutting down");
    assert!(drain.contains("(SIGTERM)"), "{drain}");
    assert!(drain.contains("draining 1 connection(s)"), "{drain}");
    let end = next(&mut log, "shutdown complete");
    assert!(end.contains("0 drained, 1 closed"), "{end}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            panic!("the gateway did not exit; log:\n{}", log.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "log:\n{}", log.join("\n"));
    let records: String = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(records.contains("\"reason\":\"Shutdown\""), "{records}");
}
