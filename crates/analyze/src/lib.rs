//! # palisade-analyze
//!
//! Questions about a whole network rather than one flow, answered from the same compiled
//! [`palisade_policy::Snapshot`] that `trace` uses:
//! - [`deps`]: is every outbound dependency of a workload allowed, and by what (DIAG-8)?
//! - [`asymmetric`]: which inbound paths get their replies sent through a firewall that never
//!   saw the request (RT-9, DIAG-9)?
//! - [`lint`]: shadowed, redundant and over-permissive rules and risky layouts.
//! - [`azure_check`]: does Azure's own view of a NIC (effective routes and rules) agree with the model?

pub mod asymmetric;
pub mod azure_check;
pub mod deps;
pub mod diff;
pub mod fqdn;
pub mod gen;
pub mod headerspace;
pub mod learn;
pub mod lint;
pub mod reach;
