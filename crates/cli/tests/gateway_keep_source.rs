//! `palisade gateway --keep-source-to` given garbage: a clear error naming the flag, the value
//! and what was expected, a non-zero exit, never a panic; prefixes of both families accepted.

mod common;

use common::palisade;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// `palisade gateway --keep-source-to=VALUE --listen not-an-address`: clap parses the flag
/// first, and a good value gets as far as the bad `--listen`, which stops the gateway before it
/// starts anything. (`=`: a value starting with `-` is the value, not another flag.)
fn gateway_with(value: &str) -> (i32, String) {
    let (code, _, err) = palisade(&[
        "gateway",
        &format!("--keep-source-to={value}"),
        "--network",
        "no-such-network.yaml",
        "--listen",
        "not-an-address",
    ]);
    (code, err)
}

#[test]
fn a_bad_prefix_names_the_flag_and_what_was_expected() {
    for (value, expected) in [
        (
            "10.0.2.0/33",
            "expected a prefix ADDRESS/LENGTH such as 10.0.2.0/24",
        ),
        ("10.0.2/24", "expected a prefix ADDRESS/LENGTH"),
        ("firewall", "expected a prefix ADDRESS/LENGTH"),
        ("", "expected a prefix ADDRESS/LENGTH"),
        ("fd00::/129", "expected a prefix ADDRESS/LENGTH"),
        // A host address where a prefix is expected: the /32 that means it alone is suggested.
        ("10.0.2.4", "an address, not a prefix"),
        ("10.0.2.4", "`10.0.2.4/32` for this address alone"),
        ("fd00::4", "`fd00::4/128` for this address alone"),
        // A host address with a length: the network is the prefix, not the address.
        (
            "10.0.2.4/24",
            "host bits are set; expected the prefix's network address, `10.0.2.0/24`",
        ),
        ("fd00::4/64", "`fd00::/64`"),
    ] {
        let (code, err) = gateway_with(value);
        assert_eq!(code, 2, "`{value}`: {err}");
        assert!(
            err.contains("--keep-source-to") && err.contains(expected),
            "`{value}`: want {expected:?} in: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn prefixes_of_both_families_are_accepted() {
    for value in [
        "10.0.2.0/24",
        "0.0.0.0/0",
        "10.0.2.4/32",
        "fd00::/64",
        "::/0",
    ] {
        let (code, err) = gateway_with(value);
        assert_ne!(code, 0, "`--listen` is bad");
        assert!(
            !err.contains("--keep-source-to") && err.contains("--listen `not-an-address`"),
            "`{value}`: {err}"
        );
    }
}

proptest! {
    // Failures are kept beside this file (`gateway_keep_source.proptest-regressions`) and
    // replayed first. Few cases: each one runs the program.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn any_value_is_a_prefix_or_an_error_naming_the_flag(value in "[0-9a-f:./]{0,24}|\\PC{0,24}") {
        let (code, err) = gateway_with(&value);
        prop_assert!(!err.contains("panicked"), "{}", err);
        prop_assert_ne!(code, 0);
        if err.contains("--keep-source-to") {
            prop_assert_eq!(code, 2, "{}", err);
            prop_assert!(err.contains("expected"), "{}", err);
        }
    }
}
