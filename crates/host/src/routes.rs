//! A subnet's effective user routes in the kernel through netlink (`rtnetlink`).
//!
//! `VirtualAppliance` → `via` the appliance address; `None` (and routes whose next hop cannot
//! carry traffic, RT-4) → `blackhole`; `Internet` → via the host's current default gateway.
//! System routes and `VnetLocal`/`VirtualNetworkGateway` user routes are left to the host's own
//! configuration (noted in the plan). Every route Palisade adds is in the main table with
//! protocol [`PROTO`], and is recorded in the state, so `remove` deletes exactly those.

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::AddressFamily;
use palisade_model::NextHopType;
use palisade_policy::routes::{RouteSource, RouteState};
use palisade_policy::{Snapshot, SubnetId};
use rtnetlink::RouteMessageBuilder;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The route protocol number marking Palisade's routes (`ip route show proto 99`).
pub const PROTO: u8 = 99;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "address")]
pub enum RouteAction {
    Via(IpAddr),
    Blackhole,
    /// Via the default gateway of the prefix's family, looked up at apply time.
    Internet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan {
    pub prefix: IpNet,
    pub action: RouteAction,
    /// `<route table>/<route name>`.
    pub from: String,
}

/// A route as added to the kernel (what `remove` deletes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedRoute {
    pub prefix: IpNet,
    /// `None` for a blackhole.
    pub gateway: Option<IpAddr>,
    pub blackhole: bool,
    pub from: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("route {prefix} ({from}): {message}")]
    Kernel {
        prefix: IpNet,
        from: String,
        message: String,
    },
    #[error("route {prefix} ({from}): the kernel already has a route to {prefix} that Palisade does not own; not touching it")]
    Conflict { prefix: IpNet, from: String },
    #[error("route {0} → Internet: the host has no default gateway for that family")]
    NoDefaultGateway(IpNet),
    #[error("network namespace {0}: {1}")]
    Netns(String, #[source] std::io::Error),
}

/// The user routes of a subnet as kernel routes, and notes for those left out.
pub fn plan_routes(snap: &Snapshot, subnet: SubnetId) -> (Vec<RoutePlan>, Vec<String>) {
    let mut out = vec![];
    let mut notes = vec![];
    for r in &snap.subnet(subnet).routes.routes {
        if r.source != RouteSource::User {
            continue;
        }
        let from = format!(
            "{}/{}",
            r.table.as_deref().unwrap_or("?"),
            r.name.as_deref().unwrap_or("?")
        );
        if r.state == RouteState::Invalid && !r.drops {
            notes.push(format!(
                "{from}: {} ({}), not installed",
                "invalid",
                r.invalid_reason.unwrap_or("")
            ));
            continue;
        }
        let action = if r.drops {
            RouteAction::Blackhole
        } else {
            match r.next_hop_type {
                NextHopType::VirtualAppliance => match r.next_hop_ip_address {
                    Some(ip) => RouteAction::Via(ip),
                    None => RouteAction::Blackhole,
                },
                NextHopType::None => RouteAction::Blackhole,
                NextHopType::Internet => RouteAction::Internet,
                other => {
                    notes.push(format!(
                        "{from}: next hop {other:?} is left to the host's own routing"
                    ));
                    continue;
                }
            }
        };
        for p in &r.address_prefix {
            if let RouteAction::Via(ip) = action {
                if ip.is_ipv4() != matches!(p, IpNet::V4(_)) {
                    notes.push(format!(
                        "{from}: {p} and next hop {ip} differ in family, skipped"
                    ));
                    continue;
                }
            }
            out.push(RoutePlan {
                prefix: p.trunc(),
                action: action.clone(),
                from: from.clone(),
            });
        }
    }
    (out, notes)
}

/// Run `f` with a netlink handle, in the named network namespace if given (on a dedicated
/// thread that enters the namespace with `setns`, so the caller's namespace never changes).
fn with_handle<T: Send + 'static>(
    netns: Option<&str>,
    f: impl FnOnce(rtnetlink::Handle) -> futures_util::future::BoxFuture<'static, Result<T, RouteError>>
        + Send
        + 'static,
) -> Result<T, RouteError> {
    let netns = netns.map(String::from);
    std::thread::spawn(move || -> Result<T, RouteError> {
        if let Some(ns) = &netns {
            enter_netns(ns).map_err(|e| RouteError::Netns(ns.clone(), e))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RouteError::Netlink(e.to_string()))?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| RouteError::Netlink(e.to_string()))?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .join()
    .map_err(|_| RouteError::Netlink("netlink thread panicked".into()))?
}

/// Move the calling thread into `/var/run/netns/NAME`.
pub fn enter_netns(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct KernelRoute {
    prefix: IpNet,
    gateway: Option<IpAddr>,
    kind: RouteType,
    protocol: RouteProtocol,
    table: u32,
}

fn addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn parse_route(m: &RouteMessage) -> Option<KernelRoute> {
    let mut dst = None;
    let mut gateway = None;
    let mut table = m.header.table as u32;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = addr(d),
            RouteAttribute::Gateway(g) => gateway = addr(g),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let dst = dst.unwrap_or(match m.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    Some(KernelRoute {
        prefix: IpNet::new(dst, m.header.destination_prefix_length).ok()?,
        gateway,
        kind: m.header.kind,
        protocol: m.header.protocol,
        table,
    })
}

async fn dump(handle: &rtnetlink::Handle) -> Result<Vec<KernelRoute>, RouteError> {
    let mut out = vec![];
    for msg in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut s = handle.route().get(msg).execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| RouteError::Netlink(e.to_string()))?
        {
            if let Some(r) = parse_route(&m) {
                if r.table == 254 {
                    out.push(r);
                }
            }
        }
    }
    Ok(out)
}

fn message(
    prefix: IpNet,
    gateway: Option<IpAddr>,
    blackhole: bool,
) -> Result<RouteMessage, String> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(prefix.addr(), prefix.prefix_len())
        .map_err(|e| e.to_string())?
        .protocol(RouteProtocol::Other(PROTO));
    if blackhole {
        b = b.kind(RouteType::BlackHole);
    }
    if let Some(g) = gateway {
        b = b.gateway(g).map_err(|e| e.to_string())?;
    }
    Ok(b.build())
}

/// Install `plan` (idempotent): routes already present as Palisade's are kept, routes recorded
/// in `owned` but no longer planned are deleted. Returns what is now owned.
pub fn apply_routes(
    netns: Option<&str>,
    plan: &[RoutePlan],
    owned: &[OwnedRoute],
) -> Result<Vec<OwnedRoute>, RouteError> {
    let plan = plan.to_vec();
    let owned = owned.to_vec();
    with_handle(netns, move |handle| {
        Box::pin(async move {
            let live = dump(&handle).await?;
            let default_gw = |v6: bool| {
                live.iter()
                    .find(|r| {
                        r.prefix.prefix_len() == 0
                            && r.prefix.addr().is_ipv6() == v6
                            && r.gateway.is_some()
                            && r.protocol != RouteProtocol::Other(PROTO)
                    })
                    .and_then(|r| r.gateway)
            };
            let mut want = vec![];
            for p in &plan {
                let (gateway, blackhole) = match &p.action {
                    RouteAction::Via(ip) => (Some(*ip), false),
                    RouteAction::Blackhole => (None, true),
                    RouteAction::Internet => (
                        Some(
                            default_gw(p.prefix.addr().is_ipv6())
                                .ok_or(RouteError::NoDefaultGateway(p.prefix))?,
                        ),
                        false,
                    ),
                };
                want.push(OwnedRoute {
                    prefix: p.prefix,
                    gateway,
                    blackhole,
                    from: p.from.clone(),
                });
            }
            // Delete what we own and no longer want (or want differently).
            for o in &owned {
                let still = want.iter().any(|w| {
                    w.prefix == o.prefix && w.gateway == o.gateway && w.blackhole == o.blackhole
                });
                let present = live
                    .iter()
                    .any(|r| r.prefix == o.prefix && r.protocol == RouteProtocol::Other(PROTO));
                if !still && present {
                    delete(&handle, o).await?;
                }
            }
            let live = dump(&handle).await?;
            for w in &want {
                let same = live.iter().find(|r| r.prefix == w.prefix);
                match same {
                    Some(r) if r.protocol == RouteProtocol::Other(PROTO) => {
                        let blackhole = r.kind == RouteType::BlackHole;
                        if r.gateway == w.gateway && blackhole == w.blackhole {
                            continue;
                        }
                        delete(&handle, w).await?;
                    }
                    Some(_) => {
                        return Err(RouteError::Conflict {
                            prefix: w.prefix,
                            from: w.from.clone(),
                        })
                    }
                    None => {}
                }
                let msg =
                    message(w.prefix, w.gateway, w.blackhole).map_err(|m| RouteError::Kernel {
                        prefix: w.prefix,
                        from: w.from.clone(),
                        message: m,
                    })?;
                handle
                    .route()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(|e| RouteError::Kernel {
                        prefix: w.prefix,
                        from: w.from.clone(),
                        message: e.to_string(),
                    })?;
            }
            Ok(want)
        })
    })
}

async fn delete(handle: &rtnetlink::Handle, o: &OwnedRoute) -> Result<(), RouteError> {
    let msg = message(o.prefix, None, o.blackhole).map_err(|m| RouteError::Kernel {
        prefix: o.prefix,
        from: o.from.clone(),
        message: m,
    })?;
    match handle.route().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains("No such process") => Ok(()),
        Err(e) => Err(RouteError::Kernel {
            prefix: o.prefix,
            from: o.from.clone(),
            message: e.to_string(),
        }),
    }
}

/// Delete exactly the routes in `owned` that are still present with Palisade's protocol.
pub fn remove_routes(netns: Option<&str>, owned: &[OwnedRoute]) -> Result<usize, RouteError> {
    let owned = owned.to_vec();
    with_handle(netns, move |handle| {
        Box::pin(async move {
            let live = dump(&handle).await?;
            let mut n = 0;
            for o in &owned {
                if live
                    .iter()
                    .any(|r| r.prefix == o.prefix && r.protocol == RouteProtocol::Other(PROTO))
                {
                    delete(&handle, o).await?;
                    n += 1;
                }
            }
            Ok(n)
        })
    })
}

/// Palisade-owned routes in the kernel (for `diff`): prefix, gateway, blackhole.
pub fn live_routes(netns: Option<&str>) -> Result<Vec<OwnedRoute>, RouteError> {
    with_handle(netns, move |handle| {
        Box::pin(async move {
            Ok(dump(&handle)
                .await?
                .into_iter()
                .filter(|r| r.protocol == RouteProtocol::Other(PROTO))
                .map(|r| OwnedRoute {
                    prefix: r.prefix,
                    gateway: r.gateway,
                    blackhole: r.kind == RouteType::BlackHole,
                    from: String::new(),
                })
                .collect())
        })
    })
}
