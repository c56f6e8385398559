//! # palisade-policy
pub mod matchers;
