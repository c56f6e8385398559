//! `palisade gateway --dns`: the flags' errors name the flag and what was expected.

mod common;

use common::palisade;

#[test]
fn dns_upstream_that_is_not_an_address_is_refused() {
    let (code, _, err) = palisade(&[
        "gateway",
        "--network",
        "examples/ase-egress-lockdown",
        "--listen",
        "none",
        "--admin",
        "none",
        "--dns",
        "127.0.0.1:0",
        "--dns-upstream",
        "resolver.example",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--dns-upstream `resolver.example`: expected IP or IP:PORT"),
        "{err}"
    );
}

#[test]
fn dns_settings_need_dns() {
    let (code, _, err) = palisade(&[
        "gateway",
        "--network",
        "examples/ase-egress-lockdown",
        "--dns-grace",
        "10",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dns"), "{err}");
}
