//! Fast matchers of the policy engine (issue 4): a 5-tuple rule classifier, a longest-prefix
//! match for routes and an FQDN matcher.
//!
//! Every structure here is compiled once from a list of rules, prefixes or patterns, is immutable
//! afterwards and `Send + Sync`, so one compiled snapshot is shared by every thread of the gateway
//! and the analyzer. The single-answer lookups ([`Classifier::first_match`], [`Lpm::lookup`],
//! [`FqdnMatcher::best`]) do not allocate.
//!
//! | matcher | algorithm | module |
//! |---|---|---|
//! | [`Classifier`] | HyperSplit decision trees over EffiCuts-style partitions, prefix and port *sets* kept as interval sets | [`classifier`] |
//! | [`Lpm`] | Poptrie (6-bit strides, popcount-compressed nodes, direct pointing 18/16 bits), one trie per family, arrays on huge pages; batched lookups with prefetch | [`lpm`] |
//! | [`FqdnMatcher`] | hashed reversed-label trie (exact and `*.` names) + reversed-character trie (`*suffix`) | [`fqdn`] |
//!
//! Each module's documentation says why that algorithm was chosen over the alternatives and what an
//! update costs; `docs/benchmarks.md` has the measured figures. The property tests in this module
//! check every matcher against a plain rule-by-rule evaluator.

pub mod classifier;
pub mod fqdn;
mod key;
pub mod lpm;
mod mem;

#[cfg(test)]
mod proptests;

pub use classifier::{Classifier, ClassifierOptions, ClassifierRule, ClassifierStats, PacketKey};
pub use fqdn::{normalize_host, normalize_name, FqdnMatcher, FqdnPattern, HostName};
pub use lpm::{Lpm, LpmFamilyStats};

#[cfg(test)]
mod send_sync {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn matchers_are_send_and_sync() {
        assert_send_sync::<Classifier>();
        assert_send_sync::<Lpm<u32>>();
        assert_send_sync::<FqdnMatcher>();
    }
}
