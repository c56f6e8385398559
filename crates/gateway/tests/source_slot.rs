//! A source's slot under `--max-connections-per-source` goes back when its connection's sockets
//! close, not when the connection's end record is durable (issue 14, item 5): a slow disk must
//! not refuse a client's next tunnels. The flow log lives on a small ext4 filesystem on a loop
//! device; `fsfreeze` stops every write to it, so no record can reach the disk while a source
//! limited to one connection opens tunnel after tunnel. Once the filesystem thaws, every record
//! lands, and until then the connections count as in flight, so a drain still waits for them.

mod common;

use common::netns::can_run;
use common::*;
use palisade_flowlog::{query, FlowRecord, Query};
use palisade_gateway::{Gateway, LogSink};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An ext4 filesystem in an image file, mounted on a loop device; thawed, unmounted and
/// detached on drop, even on panic.
struct LoopDisk {
    mount: PathBuf,
    device: String,
    frozen: bool,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl LoopDisk {
    fn new(dir: &Path) -> LoopDisk {
        let image = dir.join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let image = image.to_str().unwrap();
        sh("mkfs.ext4", &["-q", "-F", image]);
        let device = sh("losetup", &["--find", "--show", image]);
        let mount = dir.join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let disk = LoopDisk {
            mount,
            device,
            frozen: false,
        };
        sh("mount", &[&disk.device, disk.mount.to_str().unwrap()]);
        disk
    }

    fn freeze(&mut self) {
        sh("fsfreeze", &["--freeze", self.mount.to_str().unwrap()]);
        self.frozen = true;
    }

    fn thaw(&mut self) {
        sh("fsfreeze", &["--unfreeze", self.mount.to_str().unwrap()]);
        self.frozen = false;
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let mount = self.mount.to_str().unwrap();
        if self.frozen {
            let _ = Command::new("fsfreeze")
                .args(["--unfreeze", mount])
                .status();
        }
        // Lazy: a gateway's writer thread may still hold its segment open.
        let _ = Command::new("umount").args(["-l", mount]).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn allows(data: &Path) -> Vec<FlowRecord> {
    query(data, &Query::default())
        .unwrap()
        .0
        .into_iter()
        .filter(|r| r.action == "Allow" && r.name.as_deref() == Some("api.allowed.test"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_slot_goes_back_when_the_sockets_close_not_after_the_record_fsync() {
    if !can_run(
        "source_slot",
        "a loop device and fsfreeze",
        &[
            ("mkfs.ext4", "e2fsprogs"),
            ("losetup", "mount"),
            ("fsfreeze", "util-linux"),
            ("curl", "curl"),
        ],
    ) {
        return;
    }
    let (dir, path) = tempdir();
    let mut disk = LoopDisk::new(&path);
    let http = http_server("127.0.0.1:0").await;
    let (tls, pem) = tls_server("127.0.0.1:0", &["api.allowed.test"]).await;
    let ca = path.join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(http.port(), tls.port(), 1, true));
    let data = disk.mount.join("data");
    let mut config = loopback_config(&policy, &data, &["api.allowed.test=127.0.0.1"]);
    config.limits.max_connections_per_source = 1;
    config.log_sink = Some(LogSink(Arc::new(|_: &str| {})));
    let gw = Gateway::start(config).await.unwrap();
    let proxy = gw.listen.unwrap();
    let url = format!("https://api.allowed.test:{}/", tls.port());
    let tunnel = || async {
        let out = curl_proxy(proxy, &url, &["--cacert", ca.to_str().unwrap()]).await;
        assert!(
            out.stdout.ends_with("\n200") && out.stdout.contains("tls hello"),
            "tunnel refused: {} {}",
            out.stdout,
            out.stderr
        );
    };

    // One tunnel on a working disk, its record durable.
    tunnel().await;
    wait_record(
        &data,
        |r| r.name.as_deref() == Some("api.allowed.test"),
        "of the first tunnel",
    )
    .await;
    assert_eq!(allows(&data).len(), 1);

    disk.freeze();
    // Each tunnel's end record now waits for the disk; the next tunnel from the same source
    // (cap 1) must still be served.
    for _ in 0..3 {
        tunnel().await;
    }
    let source: IpAddr = "127.0.0.1".parse().unwrap();
    let start = Instant::now();
    while gw.gateway.source_connections(source) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the source still holds a slot after its sockets closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not vacuous: none of the three records has reached the disk while it was frozen, and
    // the three connections stay in flight (a drain waits for them) until they do.
    assert_eq!(
        allows(&data).len(),
        1,
        "a record was written on a frozen disk"
    );
    assert_eq!(gw.gateway.in_flight(), 3);

    disk.thaw();
    let start = Instant::now();
    while allows(&data).len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "records after the thaw: {}",
            allows(&data).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    while gw.gateway.in_flight() > 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "still in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(gw);
    drop(disk);
    drop(dir);
}
