//! Route tables and their routes (RT-2).

use super::merge::{Child, ChildAt};
use super::node::Node;
use super::reader::{child_name, Ctx, Reader, ROUTE, RT};
use crate::address::{parse_address_item, parse_ip, AddressItem};
use crate::resources::*;

impl Reader {
    pub(super) fn route_table(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: RT, name };
        let mut t = RouteTable {
            name: name.to_string(),
            location: node.field("location").map(|l| l.text()),
            disable_bgp_route_propagation: self.boolean(&ctx, node, "disableBgpRoutePropagation"),
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(routes) = node.prop("routes") {
            for r in self.items_of(&ctx, &routes, "routes") {
                match self.route(&ctx, &r, None) {
                    Some(route) => t.routes.push(route),
                    None => self.drop_in_error(ROUTE, child_name(name, &r), &r),
                }
            }
        }
        self.declare(t);
    }

    pub(super) fn child_route(&mut self, node: &Node, at: ChildAt) {
        self.pend_child(
            node,
            at,
            ROUTE,
            |r, ctx, child| r.route(ctx, node, Some(child)),
            Child::Route,
        );
    }

    fn route(&mut self, parent: &Ctx, node: &Node, name: Option<&str>) -> Option<Route> {
        let inline = name.is_none();
        let name = name
            .map(str::to_string)
            .or_else(|| node.field("name").map(|n| n.text()))
            .unwrap_or_default();
        let full = parent.child_name(ROUTE, &name);
        let ctx = Ctx {
            ty: ROUTE,
            name: &full,
        };
        if inline {
            self.inline_name(&ctx, node);
        }
        let prefix = match node.prop("addressPrefix") {
            None => {
                self.missing(
                    &ctx,
                    node,
                    "addressPrefix",
                    "a CIDR prefix or a service tag",
                );
                None
            }
            Some(p) => {
                if let Some(t) = p.unresolved() {
                    self.unresolved(&ctx, &p, "addressPrefix");
                    Some(RoutePrefix::Unresolved(t.to_string()))
                } else {
                    let text = p.text();
                    match parse_address_item(&text, false) {
                        Ok((AddressItem::Prefix(n), cleared)) => {
                            if cleared {
                                self.host_bits_cleared(&ctx, &p, "addressPrefix");
                            }
                            Some(RoutePrefix::Cidr(n))
                        }
                        Ok((AddressItem::ServiceTag(t), _)) => Some(RoutePrefix::ServiceTag(t)),
                        _ => {
                            self.err(
                                &ctx,
                                &p,
                                "addressPrefix",
                                "not a CIDR prefix or service tag",
                                "a CIDR prefix such as `10.0.0.0/16` or a service tag",
                            );
                            None
                        }
                    }
                }
            }
        };
        let next_hop_type = match node.prop("nextHopType") {
            None => {
                self.missing(
                    &ctx,
                    node,
                    "nextHopType",
                    "VnetLocal, Internet, VirtualAppliance, VirtualNetworkGateway or None",
                );
                None
            }
            Some(v) => {
                if v.unresolved().is_some() {
                    self.unresolved(&ctx, &v, "nextHopType");
                    None
                } else {
                    match v.as_str().and_then(NextHopType::parse) {
                        Some(t) => Some(t),
                        None => {
                            self.err(&ctx, &v, "nextHopType", "unknown next hop type", "VnetLocal, Internet, VirtualAppliance, VirtualNetworkGateway or None (RT-2)");
                            None
                        }
                    }
                }
            }
        };
        let mut next_hop_ip_address = None;
        let mut next_hop_unresolved = None;
        if let Some(ip) = node.prop("nextHopIpAddress") {
            if let Some(t) = ip.unresolved() {
                self.unresolved(&ctx, &ip, "nextHopIpAddress");
                next_hop_unresolved = Some(t.to_string());
            } else {
                match ip.as_str().and_then(parse_ip) {
                    Some(a) => next_hop_ip_address = Some(a),
                    None => {
                        self.err(
                            &ctx,
                            &ip,
                            "nextHopIpAddress",
                            "not an IP address",
                            "an IPv4 or IPv6 address",
                        );
                        return None;
                    }
                }
            }
        }
        Some(Route {
            name,
            address_prefix: prefix?,
            next_hop_type: next_hop_type?,
            next_hop_ip_address,
            next_hop_unresolved,
            origin: self.origin(node),
        })
    }
}
