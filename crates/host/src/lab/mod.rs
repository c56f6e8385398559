//! The network lab (`palisade lab`): a network built in Linux network namespaces — one per NIC
//! (and one per subnet for addresses on no NIC), a router carrying each subnet's effective
//! routes, a stateful namespace per firewall, an "internet" with test servers — with every NSG
//! enforced by the `host` renderer; and `check`, which sends real packets for a scenario's flows
//! and compares what happened with `trace`. `plan` is pure (the topology as data); `net` builds
//! and removes it; `check` drives traffic; `serve` is the internet's test server. See
//! `docs/host.md`, "The lab".

pub mod check;
pub mod firewall_nft;
pub mod net;
pub mod plan;
pub mod random;
pub mod serve;

pub use check::{CheckReport, FlowCase, Observed};
pub use net::{down, status, up, LabState, RunStatus, Servers};
pub use plan::{plan, LabPlan, PlaceKind};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("`{0}` failed: {1}")]
    Command(String, String),
    #[error("lab state {0}: {1}")]
    State(PathBuf, String),
    #[error("no lab `{run}` is up (no state file {})", state.display())]
    NotUp { run: String, state: PathBuf },
    #[error("lab `{0}` is already up (`palisade lab down --name {0}` first)")]
    AlreadyUp(String),
    #[error("network namespace {0} already exists and is not this lab's; not touching it")]
    Exists(String),
    #[error("{0}: {1}")]
    Render(String, String),
    #[error("interrupted; the lab was taken down")]
    Interrupted,
    #[error("could not remove everything: {0}")]
    Down(String),
    #[error("{file}: {message}")]
    Flows { file: PathBuf, message: String },
}
