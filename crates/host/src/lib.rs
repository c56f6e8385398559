//! # palisade-host
//!
//! Palisade enforced by a Linux kernel. [`render`] turns the NSG in force for a subnet or NIC
//! into one nftables table (family `inet`, IPv4 and IPv6 together) with interval sets, a named
//! counter per rule and NFLOG on denies; [`apply`] applies it in one transaction through the
//! `nftables` crate (`nft -j -f -`), incrementally when only some sets or chains changed, and
//! compares the kernel with the model (`host diff`); [`routes`] installs the subnet's user routes
//! through netlink; [`state`] records what Palisade owns so that `remove` takes away exactly that;
//! [`ops`] is plan / apply / diff / remove as whole operations, in the order that keeps the state
//! true; [`nflog`] reads the tables' NFLOG group and turns denials into flow records. See
//! `docs/host.md`.

pub mod apply;
pub mod classify;
pub mod lab;
pub mod nflog;
pub mod nfnl;
pub mod nft;
pub mod ops;
pub mod render;
pub mod routes;
pub mod state;

pub use apply::{ApplyMode, ApplyReport, TableDiff, TableState};
pub use nft::{Nft, NftError};
pub use render::{render, HookMode, RenderOptions, TablePlan, Target};
pub use routes::{OwnedRoute, RoutePlan};
pub use state::HostState;
