//! # palisade-policy
//!
//! Compiles a [`palisade_model::Network`] into an immutable [`Snapshot`] and evaluates flows
//! against it: NSGs per direction with their default rules ([`nsg`]), effective routes with
//! longest-prefix match ([`routes`]), and the firewall pipeline ([`firewall`]). [`trace`] walks a
//! flow through every layer and names the control that decided it.
//!
//! Lookups go through the [`matchers`]: a 5-tuple classifier, an LPM table and an FQDN matcher,
//! built once per snapshot and never allocating on the lookup path.

pub mod addresses;
pub mod endpoints;
pub mod firewall;
pub mod ids;
pub mod intervals;
pub mod matchers;
pub mod nsg;
pub mod prefixes;
pub mod routes;
pub mod snapshot;
pub mod trace;

pub use firewall::AppProtocol;
pub use ids::{FirewallId, NicId, NsgId, SubnetId};
pub use snapshot::{CompileOptions, Snapshot};
pub use trace::{
    AuditMatch, DecidedBy, Established, Flow, Hop, NextHop, Trace, TraceOptions, Verdict,
};
