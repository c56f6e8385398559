//! A decision carries the version that made it: `Gateway::judge` returns the snapshot id (and
//! firewall policy name) of the very snapshot that evaluated, so a flow record written after a
//! reload swapped in another snapshot still names the one that decided (PAL-5.5).

mod common;

use common::*;
use palisade_gateway::{outcome_record, Gateway, ReloadOutcome};
use palisade_policy::firewall::FirewallInput;
use palisade_policy::matchers::PacketKey;

#[tokio::test]
async fn pal_5_5_records_name_the_version_that_decided() {
    let (_dir, path) = tempdir();
    let policy = path.join("network.yaml");
    write(&policy, &policy_yaml(8080, 8443, 9000, true));
    let config = loopback_config(&policy, &path.join("data"), &[]);
    let running = Gateway::start(config).await.unwrap();
    let gw = running.gateway.clone();

    let input = FirewallInput {
        key: PacketKey {
            src: "10.0.0.5".parse().unwrap(),
            dst: "127.0.0.1".parse().unwrap(),
            src_port: 40000,
            dst_port: 9000,
            protocol: 6,
        },
        host: None,
        app_protocol: None,
    };
    let (outcome, before) = gw.judge(&input);
    assert!(outcome.allowed, "raw-tcp allows port 9000");
    assert_eq!(before, gw.version());
    assert_eq!(&*before.snapshot, gw.active().unwrap().id());

    // Another policy is swapped in before the first decision is recorded.
    write(&policy, &policy_yaml(8080, 8443, 9001, true));
    let ReloadOutcome::Applied {
        snapshot: after, ..
    } = gw.reload("test").await
    else {
        panic!("the new policy is valid");
    };
    assert_ne!(after, &*before.snapshot);
    assert_eq!(&*gw.version().snapshot, after);
    let record = outcome_record(&outcome, &before);
    assert_eq!(
        record.snapshot, &*before.snapshot,
        "the record names the deciding version"
    );
    let (denied, now) = gw.judge(&input);
    assert!(!denied.allowed, "port 9000 is no longer allowed");
    assert_eq!(&*now.snapshot, after);
    drop(running);
}
