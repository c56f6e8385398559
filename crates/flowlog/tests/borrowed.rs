//! A borrowed record (`FlowRecordRef`) is written as the owned one: same JSON line, byte for
//! byte, so readers of the log cannot tell which one a writer used.

use palisade_flowlog::{AuditEntry, FlowRecord, FlowRecordRef, ShadowDiff, Shown};
use proptest::prelude::*;
use std::net::IpAddr;

/// Any text, with what JSON must escape (quotes, backslashes, control characters) and
/// characters outside ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ./:_-]{0,24}",
        any::<String>(),
        "[\"\\\\\u{0}-\u{1f}\u{7f}é€😀]{0,8}",
    ]
}

fn ip() -> impl Strategy<Value = Option<IpAddr>> {
    proptest::option::of(any::<IpAddr>())
}

fn audit_entry() -> impl Strategy<Value = AuditEntry> {
    (text(), text(), text()).prop_map(|(layer, rule, access)| AuditEntry {
        layer,
        rule,
        access,
    })
}

fn shadow() -> impl Strategy<Value = ShadowDiff> {
    (text(), text(), text(), text(), text()).prop_map(|(la, lr, sa, sr, ss)| ShadowDiff {
        live_action: la,
        live_rule: lr,
        shadow_action: sa,
        shadow_rule: sr,
        shadow_snapshot: ss,
    })
}

prop_compose! {
    fn record()(
        (time, instance, snapshot, mode, protocol) in (text(), text(), text(), text(), text()),
        (source_ip, source_port, destination_ip, destination_port) in (ip(), any::<u16>(), ip(), any::<u16>()),
        (name, tunnel_name, action, layer) in (proptest::option::of(text()), proptest::option::of(text()), text(), text()),
        (policy, rule_collection_group, rule_collection, rule) in (
            proptest::option::of(text()), proptest::option::of(text()),
            proptest::option::of(text()), proptest::option::of(text())),
        (priority, decided_by, reason, detail) in (
            proptest::option::of(any::<u32>()), proptest::option::of(text()), text(),
            proptest::option::of(text())),
        (audit, audit_rules, observe, shadow) in (
            any::<bool>(), proptest::collection::vec(audit_entry(), 0..3),
            proptest::option::of(text()), proptest::option::of(shadow())),
        (translated, translated_source) in (proptest::option::of(text()), proptest::option::of(text())),
        (bytes_sent, bytes_received, duration_ms) in (any::<u64>(), any::<u64>(), any::<u64>()),
    ) -> FlowRecord {
        FlowRecord {
            time, instance, snapshot, mode, protocol, source_ip, source_port, destination_ip,
            destination_port, name, tunnel_name, action, layer, policy, rule_collection_group,
            rule_collection, rule, priority, decided_by, reason, detail, audit, audit_rules,
            observe, shadow, translated, translated_source, bytes_sent, bytes_received,
            duration_ms,
        }
    }
}

proptest! {
    #[test]
    fn a_borrowed_record_encodes_as_the_owned_one(r in record()) {
        let owned = serde_json::to_vec(&r).unwrap();
        let borrowed = serde_json::to_vec(&r.borrowed()).unwrap();
        prop_assert_eq!(&owned, &borrowed);
        // And back: the borrowed view's owned copy is the record.
        prop_assert_eq!(r.borrowed().to_record(), r.clone());
        prop_assert_eq!(r.borrowed().rule_label(), r.rule_label());
    }
}

/// Displayed parts (the time, a detail, an address) are written as their text would be.
#[test]
fn displayed_parts_encode_as_their_text() {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_961_234_567);
    let addr: std::net::SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let detail = "Https name `a\"b\\c`\n";
    let time = palisade_flowlog::Timestamp(at);
    let empty = FlowRecord::default();
    let view = FlowRecordRef {
        time: Shown(&time),
        detail: Some(Shown(&detail)),
        translated: Some(Shown(&addr)),
        ..empty.borrowed()
    };
    let owned = FlowRecord {
        time: palisade_flowlog::format_time(at),
        detail: Some(detail.to_string()),
        translated: Some(addr.to_string()),
        ..FlowRecord::default()
    };
    assert_eq!(owned.time, "2025-12-05T19:00:34.567Z");
    assert_eq!(
        serde_json::to_string(&view).unwrap(),
        serde_json::to_string(&owned).unwrap()
    );
    assert_eq!(view.to_record(), owned);
}
