//! # palisade-model
//!
//! The network model Palisade reasons about, and the way in: ARM deployment templates, REST
//! bodies, CLI output and the native YAML format are imported into [`Network`], validated with
//! located errors ([`Diagnostic`]), and paired with the catalogs the rules name ([`catalog`]).
//!
//! Data flows one way: files → [`json`] / YAML → template expansion (`palisade-arm`) → [`import`] →
//! [`Network`] → [`validate`]. Nothing here evaluates flows; that is `palisade-policy`'s job.

// Located diagnostics are the error type throughout; they are built once on a cold path, so
// their size does not matter and boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod address;
pub mod bindings;
pub mod catalog;
pub mod diag;
pub mod import;
pub mod json;
pub mod resources;
pub mod validate;

pub use address::{AddressItem, PortRange, Protocol};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use import::{load, Dropped, ImportOptions, Imported, InputKind};
pub use resources::*;
pub use validate::validate;
