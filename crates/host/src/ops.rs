//! The host operations as a whole — plan, apply, diff, remove — in the one order that keeps the
//! state file true: what is recorded is always what the kernel was last told, so `remove`
//! deletes exactly what Palisade added even after a failure half-way.

use crate::apply::{self, ApplyReport, TableDiff};
use crate::nfnl::Nfnl;
use crate::nft::Unavailable;
use crate::render::{render, RenderError, RenderOptions, TablePlan, Target};
use crate::routes::{self, OwnedRoute, RouteAction, RouteError, RoutePlan};
use crate::state::StateError;
use crate::{HostState, Nft, NftError};
use palisade_policy::Snapshot;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("nft is not usable here (installed? root?): {0}")]
    NftUnavailable(Unavailable),
    /// The state file could not be read or written.
    #[error("state: {0}")]
    State(StateError),
    /// `apply` put the table in place but not the routes; the state records the table.
    #[error("the table was applied, the routes were not: {0}")]
    RoutesNotApplied(RouteError),
}

/// Where the operations act: a network namespace (or the caller's) and its state directory.
#[derive(Debug, Clone)]
pub struct Place {
    pub state_dir: PathBuf,
    pub netns: Option<String>,
}

impl Place {
    fn nft(&self) -> Result<Nft, HostError> {
        let nft = Nft::new(self.netns.clone());
        nft.available().map_err(HostError::NftUnavailable)?;
        Ok(nft)
    }

    fn state(&self) -> Result<HostState, HostError> {
        HostState::load(&self.state_dir, self.netns.as_deref()).map_err(HostError::State)
    }

    fn save(&self, state: &HostState) -> Result<(), HostError> {
        state.save(&self.state_dir).map_err(HostError::State)
    }
}

/// What `apply` would do for one target: its table and, for a subnet, its user routes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub table: TablePlan,
    pub routes: Vec<RoutePlan>,
    /// Routes left to the host's own configuration, and why.
    pub route_notes: Vec<String>,
    /// `subnet NAME` / `nic NAME`: the key the routes are recorded under.
    pub label: String,
    /// Whether routes are managed at all (`--no-routes` turns them off).
    pub with_routes: bool,
}

/// Render the target's NSG and plan its subnet's routes (a NIC's routes are its subnet's).
pub fn plan(
    snap: &Snapshot,
    target: &Target,
    opts: &RenderOptions,
    with_routes: bool,
) -> Result<Plan, HostError> {
    let table = render(snap, target, opts)?;
    let (subnet, label) = match target {
        Target::Subnet(s) => (snap.subnet_by_name(s), format!("subnet {s}")),
        Target::Nic(n) => (
            snap.nic_by_name(n).and_then(|i| snap.nic(i).subnet),
            format!("nic {n}"),
        ),
    };
    let (routes, route_notes) = match subnet {
        Some(i) if with_routes => routes::plan_routes(snap, i),
        _ => (vec![], vec![]),
    };
    Ok(Plan {
        table,
        routes,
        route_notes,
        label,
        with_routes,
    })
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub table: ApplyReport,
    pub routes: Vec<OwnedRoute>,
}

/// Apply the table, record it, then the routes, and record them. Each step is saved before the
/// next starts: a failure leaves the state naming exactly what is in the kernel.
pub fn apply(plan: &Plan, place: &Place) -> Result<Applied, HostError> {
    apply_owned(plan.clone(), place)
}

/// [`apply`], taking the plan: its table moves into the recorded state instead of being copied
/// (for a large table, a copy as costly as the rule change itself).
pub fn apply_owned(plan: Plan, place: &Place) -> Result<Applied, HostError> {
    let Plan {
        table,
        routes,
        label,
        with_routes,
        ..
    } = plan;
    let name = table.table.clone();
    let nft = place.nft()?;
    let mut state = place.state()?;
    // Moved out, not copied (a large table's state is large); on an error the state is not
    // saved, so the file keeps it.
    let prev = state.tables.remove(&name);
    let (applied, report) = apply::apply_owned(&nft, table, prev)?;
    // This apply was the only change since `generation_before`: the namespace's other tables
    // recorded at that generation are still exactly as recorded.
    if let (Some(before), Some(after)) = (report.generation_before, applied.generation) {
        for t in state.tables.values_mut() {
            if t.generation == Some(before) {
                t.generation = Some(after);
            }
        }
    }
    state.tables.insert(name, applied);
    place.save(&state)?;
    let mut owned = vec![];
    if with_routes {
        let before = state.routes.get(&label).cloned().unwrap_or_default();
        let now = routes::apply_routes(place.netns.as_deref(), &routes, &before)
            .map_err(HostError::RoutesNotApplied)?;
        owned = now.clone();
        state.routes.insert(label, now);
        place.save(&state)?;
    }
    Ok(Applied {
        table: report,
        routes: owned,
    })
}

/// A planned route whose kernel route goes elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct ChangedRoute {
    pub planned: RoutePlan,
    pub live: OwnedRoute,
}

/// The routes of a target: planned but absent, present with another next hop, and owned by
/// Palisade but no longer planned.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteDrift {
    pub missing: Vec<RoutePlan>,
    pub changed: Vec<ChangedRoute>,
    pub extra: Vec<OwnedRoute>,
}

impl RouteDrift {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty() && self.extra.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub table: TableDiff,
    pub routes: RouteDrift,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.table.is_clean() && self.routes.is_clean()
    }
}

/// Compare the kernel with the plan: the table (rules, sets, counters) and the routes. The
/// table is read by netlink dumps; `nft` only where netlink cannot be used, or for a state
/// written by a version that recorded rules as `nft` listed them.
pub fn diff(plan: &Plan, place: &Place) -> Result<Drift, HostError> {
    let state = place.state()?;
    let recorded = state.tables.get(&plan.table.table);
    let link = Nfnl::open(place.netns.as_deref())
        .ok()
        .and_then(|mut l| l.generation().is_ok().then_some(l));
    let by_netlink = match link {
        Some(mut l) => apply::diff_by_netlink(&mut l, &plan.table, recorded)
            .map_err(|e| NftError::Exec(e.to_string()))?,
        None => None,
    };
    let table = match by_netlink {
        Some(t) => t,
        None => apply::diff(&place.nft()?, &plan.table, recorded)?,
    };
    let routes = if plan.with_routes {
        let live = routes::live_routes(place.netns.as_deref())?;
        let owned = state.routes.get(&plan.label).cloned().unwrap_or_default();
        route_drift(&plan.routes, &owned, &live)
    } else {
        RouteDrift::default()
    };
    Ok(Drift { table, routes })
}

/// The route half of [`diff`], pure: `owned` is what the state recorded at apply, `live` the
/// Palisade-owned routes in the kernel now.
pub fn route_drift(planned: &[RoutePlan], owned: &[OwnedRoute], live: &[OwnedRoute]) -> RouteDrift {
    let mut drift = RouteDrift::default();
    for r in planned {
        match live.iter().find(|l| l.prefix == r.prefix) {
            None => drift.missing.push(r.clone()),
            Some(l) => {
                let recorded = owned.iter().find(|o| o.prefix == r.prefix);
                if !same_next_hop(r, recorded, l) {
                    drift.changed.push(ChangedRoute {
                        planned: r.clone(),
                        live: l.clone(),
                    });
                }
            }
        }
    }
    for l in live {
        if owned.iter().any(|o| o.prefix == l.prefix)
            && !planned.iter().any(|r| r.prefix == l.prefix)
        {
            drift.extra.push(l.clone());
        }
    }
    drift
}

/// Does the kernel route carry the planned next hop? An `Internet` route goes via the default
/// gateway found at apply time, which only the recorded route knows.
fn same_next_hop(planned: &RoutePlan, recorded: Option<&OwnedRoute>, live: &OwnedRoute) -> bool {
    match planned.action {
        RouteAction::Via(ip) => !live.blackhole && live.gateway == Some(ip),
        RouteAction::Blackhole => live.blackhole,
        RouteAction::Internet => {
            !live.blackhole
                && live.gateway.is_some()
                && recorded.is_none_or(|o| o.gateway == live.gateway)
        }
    }
}

/// What `remove` took away.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removed {
    pub tables: Vec<String>,
    pub routes: usize,
}

/// Remove what the state records — one table, or every table and route — saving after each
/// step so an interrupted remove can be run again.
pub fn remove(place: &Place, only_table: Option<&str>) -> Result<Removed, HostError> {
    let nft = place.nft()?;
    let mut state = place.state()?;
    let tables: Vec<String> = state
        .tables
        .keys()
        .filter(|t| only_table.is_none_or(|x| x == *t))
        .cloned()
        .collect();
    let mut removed = Removed::default();
    for t in tables {
        apply::remove_table(&nft, &t)?;
        state.tables.remove(&t);
        place.save(&state)?;
        removed.tables.push(t);
    }
    if only_table.is_none() {
        let all: Vec<OwnedRoute> = state.routes.values().flatten().cloned().collect();
        removed.routes = routes::remove_routes(place.netns.as_deref(), &all)?;
        state.routes.clear();
        place.save(&state)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(prefix: &str, action: RouteAction) -> RoutePlan {
        RoutePlan {
            prefix: prefix.parse().unwrap(),
            action,
            from: "rt/r".into(),
        }
    }

    fn live(prefix: &str, gateway: Option<&str>, blackhole: bool) -> OwnedRoute {
        OwnedRoute {
            prefix: prefix.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            blackhole,
            from: String::new(),
        }
    }

    /// RT-1: a route is its prefix and its next hop; a kernel route to the same prefix through
    /// another next hop is drift, as much as a missing one.
    #[test]
    fn rt_1_changed_next_hop_is_drift() {
        let via = |ip: &str| RouteAction::Via(ip.parse().unwrap());
        let plan = vec![
            planned("0.0.0.0/0", via("10.0.1.4")),
            planned("10.9.0.0/16", RouteAction::Blackhole),
            planned("10.8.0.0/16", via("10.0.1.4")),
            planned("198.51.100.0/24", RouteAction::Internet),
        ];
        let owned = vec![
            live("0.0.0.0/0", Some("10.0.1.4"), false),
            live("10.9.0.0/16", None, true),
            live("10.7.0.0/16", Some("10.0.1.4"), false),
            live("198.51.100.0/24", Some("192.0.2.1"), false),
        ];
        let clean = route_drift(&plan[..2], &owned, &owned[..2]);
        assert!(clean.is_clean(), "{clean:?}");
        let now = vec![
            live("0.0.0.0/0", Some("10.0.1.5"), false),
            live("10.9.0.0/16", Some("10.0.1.4"), false),
            live("10.7.0.0/16", Some("10.0.1.4"), false),
            live("198.51.100.0/24", Some("192.0.2.9"), false),
        ];
        let d = route_drift(&plan, &owned, &now);
        let changed: Vec<String> = d
            .changed
            .iter()
            .map(|c| c.planned.prefix.to_string())
            .collect();
        assert_eq!(changed, ["0.0.0.0/0", "10.9.0.0/16", "198.51.100.0/24"]);
        assert_eq!(d.missing.len(), 1);
        assert_eq!(d.missing[0].prefix.to_string(), "10.8.0.0/16");
        assert_eq!(d.extra.len(), 1);
        assert_eq!(d.extra[0].prefix.to_string(), "10.7.0.0/16");
    }
}
