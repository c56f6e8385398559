//! Anti-spoofing in a throwaway lab (root + nft): with the reverse-path filter in the router's
//! table, a datagram whose source belongs behind another interface is dropped, proper ones pass.
//!
//! ```text
//!  client (10.50.2.4) ── cli0 ┐
//!                             rtr (10.50.2.1, 203.0.113.1; UDP receiver on :7777)
//!  inet (203.0.113.20) ─ net0 ┘   inet also holds 10.50.2.4/32 to spoof the client
//! ```

mod common;

use common::Netns;
use palisade_host::apply;
use palisade_host::nflog::{parse_prefix, NflogReader};
use palisade_host::nft::Nft;
use palisade_host::render::{render, HookMode, RenderOptions, Stmt, Target, RPFILTER_RULE};
use palisade_host::routes::enter_netns;
use std::net::UdpSocket;
use std::time::Duration;

/// Send one datagram from `src` inside `ns`; true if the receiver got it within 500 ms.
fn delivered(ns: &str, src: &str, dst: &str, rx: &UdpSocket) -> bool {
    let (ns, from_addr, dst) = (ns.to_string(), src.to_string(), dst.to_string());
    std::thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let s = UdpSocket::bind(format!("{from_addr}:0")).unwrap();
        s.send_to(b"x", format!("{dst}:7777")).unwrap();
    })
    .join()
    .unwrap();
    let mut buf = [0u8; 16];
    match rx.recv_from(&mut buf) {
        Ok((_, from)) => from.ip().to_string() == src,
        Err(_) => false,
    }
}

#[test]
fn spoofed_source_on_the_wrong_interface_is_dropped_proper_ones_pass() {
    require_kernel!();
    let snap = common::lab_snapshot();
    let client = Netns::new("rpcli");
    let inet = Netns::new("rpnet");
    let rtr = Netns::new("rprtr");
    common::link(
        &client,
        "eth0",
        &["10.50.2.4/24"],
        &rtr,
        "cli0",
        &["10.50.2.1/24"],
    );
    common::link(
        &inet,
        "eth0",
        &["203.0.113.20/24"],
        &rtr,
        "net0",
        &["203.0.113.1/24"],
    );
    inet.exec(&["ip", "addr", "add", "10.50.2.4/32", "dev", "eth0"])
        .unwrap();
    // The kernel's own rp_filter off, so only the table decides.
    for key in ["all", "default", "cli0", "net0"] {
        rtr.exec(&["sysctl", "-qw", &format!("net.ipv4.conf.{key}.rp_filter=0")])
            .unwrap();
    }

    let rx = {
        let ns = rtr.name.clone();
        std::thread::spawn(move || {
            enter_netns(&ns).unwrap();
            UdpSocket::bind("0.0.0.0:7777").unwrap()
        })
        .join()
        .unwrap()
    };
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    // Control: without the filter the spoofed datagram arrives, so the oracle can tell.
    assert!(delivered(&inet.name, "10.50.2.4", "203.0.113.1", &rx));

    let opts = RenderOptions {
        hook: HookMode::Router,
        rpfilter: true,
        ..Default::default()
    };
    let plan = render(&snap, &Target::Subnet("app".into()), &opts).unwrap();
    let pre = plan.chain("prerouting").expect("a prerouting chain");
    assert!(pre
        .rules
        .iter()
        .any(|r| r.stmts.contains(&Stmt::ReversePathMissing)));
    let nft = Nft::new(Some(rtr.name.clone()));
    let (state, _) = apply::apply(&nft, &plan, None).unwrap();
    assert!(apply::diff(&nft, &plan, Some(&state)).unwrap().is_clean());

    let mut log = NflogReader::open(plan.log_group, Some(&rtr.name)).unwrap();
    assert!(
        !delivered(&inet.name, "10.50.2.4", "203.0.113.1", &rx),
        "a client address arriving on the internet link must be dropped"
    );
    // The drop is logged under the anti-spoofing name, for `host log`.
    let logged = log.read(Duration::from_millis(500)).unwrap();
    assert!(
        logged
            .iter()
            .filter_map(|e| parse_prefix(&e.prefix))
            .any(|p| p.rule == RPFILTER_RULE),
        "{logged:?}"
    );
    assert!(delivered(&client.name, "10.50.2.4", "10.50.2.1", &rx));
    assert!(delivered(&inet.name, "203.0.113.20", "203.0.113.1", &rx));

    // Removing the table removes the filter with it.
    assert!(apply::remove_table(&nft, &plan.table).unwrap());
    assert!(delivered(&inet.name, "10.50.2.4", "203.0.113.1", &rx));
}
