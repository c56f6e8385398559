//! NFLOG → flow records in a throwaway namespace (root + nft): a denied connection is found in
//! the flow log, with its NSG rule, within a second.

mod common;

use common::Netns;
use palisade_flowlog::{query, FlowLog, Options, Query};
use palisade_host::apply;
use palisade_host::nflog::{NflogReader, RecordContext};
use palisade_host::nft::Nft;
use palisade_host::render::{render, RenderOptions, Target};
use palisade_host::HostState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stops the reader thread on drop, so a failing assertion does not leave it running.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn kernel_denial_appears_in_the_flow_log_with_its_rule_within_a_second() {
    require_kernel!();
    let snap = common::lab_snapshot();
    let app = Netns::new("nfapp");
    let inet = Netns::new("nfnet");
    common::link(
        &app,
        "eth0",
        &["10.50.1.4/24"],
        &inet,
        "eth0",
        &["203.0.113.20/24"],
    );
    app.exec(&["ip", "route", "add", "203.0.113.0/24", "dev", "eth0"])
        .unwrap();
    inet.exec(&["ip", "route", "add", "10.50.1.0/24", "dev", "eth0"])
        .unwrap();

    let plan = render(
        &snap,
        &Target::Subnet("app".into()),
        &RenderOptions::default(),
    )
    .unwrap();
    let (table, _) = apply::apply(&Nft::new(Some(app.name.clone())), &plan, None).unwrap();
    let mut state = HostState::default();
    state.tables.insert(plan.table.clone(), table);
    let ctx = RecordContext::from_state("lab-host".into(), &state);

    let data = tempfile::tempdir().unwrap();
    let log = FlowLog::open(data.path(), Options::default()).unwrap();
    let mut reader = NflogReader::open(plan.log_group, Some(&app.name)).unwrap();
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let flag = stop.0.clone();
    let thread = std::thread::spawn(move || reader.run(&ctx, &flag, |r| log.append(&r)));

    let _listener = common::listen(app.name.clone(), 22);
    let sent = Instant::now();
    let client = {
        let ns = inet.name.clone();
        std::thread::spawn(move || {
            common::connect(
                ns,
                "203.0.113.20".parse().unwrap(),
                40022,
                "10.50.1.4".parse().unwrap(),
                22,
            )
        })
    };
    let q = Query {
        rule: Some("deny-ssh-from-net".into()),
        action: Some("deny".into()),
        ..Default::default()
    };
    let found = loop {
        let (records, _) = query(data.path(), &q).unwrap();
        if let Some(r) = records.into_iter().next() {
            break Some((r, sent.elapsed()));
        }
        if sent.elapsed() > Duration::from_secs(1) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!client.join().unwrap(), "the deny rule should drop the SYN");
    drop(stop);
    thread.join().unwrap().unwrap();
    let (r, after) = found.expect("no flow record for deny-ssh-from-net within 1 s");
    assert!(after <= Duration::from_secs(1), "{after:?}");
    assert_eq!(
        (
            r.action.as_str(),
            r.layer.as_str(),
            r.instance.as_str(),
            r.protocol.as_str()
        ),
        ("Deny", "SubnetNsg", "lab-host", "TCP")
    );
    assert_eq!(r.rule_path().as_deref(), Some("app-nsg/deny-ssh-from-net"));
    assert_eq!(r.priority, Some(110));
    assert_eq!(
        (
            r.source_ip,
            r.source_port,
            r.destination_ip,
            r.destination_port
        ),
        (
            Some("203.0.113.20".parse().unwrap()),
            40022,
            Some("10.50.1.4".parse().unwrap()),
            22
        )
    );
}
