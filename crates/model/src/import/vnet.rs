//! Virtual networks with their subnets and peerings, network interfaces and public IP addresses.

use super::merge::{Child, ChildAt};
use super::node::Node;
use super::reader::{Ctx, Reader, NIC, PEERING, SUBNET, VNET};
use crate::address::{parse_ip, parse_prefix};
use crate::resources::*;

impl Reader {
    pub(super) fn vnet(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: VNET, name };
        let mut v = VirtualNetwork {
            name: name.to_string(),
            location: node.field("location").map(|l| l.text()),
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(space) = node.prop("addressSpace") {
            if let Some(list) = space.field("addressPrefixes") {
                v.address_space = self.prefix_list(&ctx, &list, "addressSpace.addressPrefixes");
            }
        }
        if let Some(subnets) = node.prop("subnets") {
            for s in self.items_of(&ctx, &subnets, "subnets") {
                let sname = s.field("name").map(|n| n.text()).unwrap_or_default();
                match self.subnet(name, &s, &sname) {
                    Some(sub) => v.subnets.push(sub),
                    None => self.drop_in_error(SUBNET, format!("{name}/{sname}"), &s),
                }
            }
        }
        if let Some(peerings) = node.prop("virtualNetworkPeerings") {
            for p in self.items_of(&ctx, &peerings, "virtualNetworkPeerings") {
                let pname = p.field("name").map(|n| n.text()).unwrap_or_default();
                v.virtual_network_peerings
                    .push(self.peering(name, &p, &pname));
            }
        }
        self.declare(v);
    }

    fn prefix_list(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Vec<ipnet::IpNet> {
        let items = node.one_or_many();
        let mut out = vec![];
        for item in items {
            if item.unresolved().is_some() {
                self.unresolved(ctx, &item, field);
                continue;
            }
            if item.is_absent() {
                // FMT-7: `""` means absent (e.g. a parameter whose default is empty).
                self.warn(ctx, &item, field, "empty prefix; ignored (FMT-7)");
                continue;
            }
            match parse_prefix(&item.text()) {
                Ok((n, cleared)) => {
                    if cleared {
                        self.host_bits_cleared(ctx, &item, field);
                    }
                    out.push(n);
                }
                Err(e) => self.err(
                    ctx,
                    &item,
                    field,
                    &e.to_string(),
                    "a CIDR prefix such as `10.0.0.0/16`",
                ),
            }
        }
        out
    }

    fn subnet(&mut self, vnet: &str, node: &Node, name: &str) -> Option<Subnet> {
        let full = format!("{vnet}/{name}");
        let ctx = Ctx {
            ty: SUBNET,
            name: &full,
        };
        let mut s = Subnet {
            name: name.to_string(),
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(p) = node.prop("addressPrefix") {
            s.address_prefixes = self.prefix_list(&ctx, &p, "addressPrefix");
        } else if let Some(p) = node.prop("addressPrefixes") {
            s.address_prefixes = self.prefix_list(&ctx, &p, "addressPrefixes");
        }
        if let Some(n) = node.prop("networkSecurityGroup") {
            s.network_security_group = self.reference(&ctx, &n, "networkSecurityGroup");
        }
        if let Some(n) = node.prop("routeTable") {
            s.route_table = self.reference(&ctx, &n, "routeTable");
        }
        if let Some(eps) = node.prop("serviceEndpoints") {
            for e in eps.items() {
                let service = e.field("service").or_else(|| e.prop("service"));
                match service {
                    Some(sv) if sv.unresolved().is_none() => {
                        s.service_endpoints.push(ServiceEndpoint {
                            service: sv.text(),
                            locations: e
                                .field("locations")
                                .map(|l| l.items().iter().map(Node::text).collect())
                                .unwrap_or_default(),
                        })
                    }
                    Some(sv) => self.unresolved(&ctx, &sv, "serviceEndpoints.service"),
                    None => self.err(
                        &ctx,
                        &e,
                        "serviceEndpoints",
                        "service endpoint without `service`",
                        "`{\"service\": \"Microsoft.Storage\"}`",
                    ),
                }
            }
        }
        Some(s)
    }

    pub(super) fn child_subnet(&mut self, node: &Node, at: ChildAt) {
        if let Some(s) = self.subnet(&at.parent, node, &at.child) {
            self.pend(node, at, Child::Subnet(s));
        }
    }

    fn peering(&mut self, vnet: &str, node: &Node, name: &str) -> VirtualNetworkPeering {
        let full = format!("{vnet}/{name}");
        let ctx = Ctx {
            ty: PEERING,
            name: &full,
        };
        let remote = node
            .prop("remoteVirtualNetwork")
            .and_then(|r| self.reference(&ctx, &r, "remoteVirtualNetwork"));
        let space = node
            .prop("remoteAddressSpace")
            .and_then(|s| s.field("addressPrefixes"))
            .map(|l| self.prefix_list(&ctx, &l, "remoteAddressSpace.addressPrefixes"))
            .unwrap_or_default();
        VirtualNetworkPeering {
            name: name.to_string(),
            remote_virtual_network: remote,
            remote_address_space: space,
            origin: self.origin(node),
        }
    }

    pub(super) fn child_peering(&mut self, node: &Node, at: ChildAt) {
        let p = self.peering(&at.parent, node, &at.child);
        self.pend(node, at, Child::Peering(p));
    }

    pub(super) fn nic(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: NIC, name };
        let mut nic = NetworkInterface {
            name: name.to_string(),
            enable_ip_forwarding: self.boolean(&ctx, node, "enableIPForwarding"),
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(n) = node.prop("networkSecurityGroup") {
            nic.network_security_group = self.reference(&ctx, &n, "networkSecurityGroup");
        }
        if let Some(cfgs) = node.prop("ipConfigurations") {
            for c in self.items_of(&ctx, &cfgs, "ipConfigurations") {
                nic.ip_configurations.push(self.ip_configuration(&ctx, &c));
            }
        }
        self.declare(nic);
    }

    pub(super) fn ip_configuration(&mut self, ctx: &Ctx, c: &Node) -> IpConfiguration {
        let mut cfg = IpConfiguration {
            name: c.field("name").map(|n| n.text()).unwrap_or_default(),
            ..Default::default()
        };
        if let Some(ip) = c.prop("privateIPAddress") {
            if ip.unresolved().is_some() {
                self.unresolved(ctx, &ip, "privateIPAddress");
            } else {
                match ip.as_str().and_then(parse_ip) {
                    Some(a) => cfg.private_ip_address = Some(a),
                    None => self.err(
                        ctx,
                        &ip,
                        "privateIPAddress",
                        "not an IP address",
                        "an IPv4 or IPv6 address",
                    ),
                }
            }
        }
        if let Some(s) = c.prop("subnet") {
            cfg.subnet = self.subnet_reference(ctx, &s, "subnet");
        }
        if let Some(p) = c.prop("publicIPAddress") {
            cfg.public_ip_address = self.reference(ctx, &p, "publicIPAddress");
        }
        if let Some(a) = c.prop("applicationSecurityGroups") {
            for item in a.items() {
                if let Some(n) = self.reference(ctx, &item, "applicationSecurityGroups") {
                    cfg.application_security_groups.push(n);
                }
            }
        }
        cfg
    }

    pub(super) fn public_ip(&mut self, node: &Node, name: &str) {
        let ip = node
            .prop("ipAddress")
            .and_then(|i| i.as_str().and_then(parse_ip));
        let origin = self.origin(node);
        let pip = PublicIpAddress {
            name: name.to_string(),
            ip_address: ip,
            origin,
        };
        self.declare(pip);
    }
}
