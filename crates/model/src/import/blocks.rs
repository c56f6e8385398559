//! "Template building blocks" parameter files (mspnp/template-building-blocks v2, used by the
//! Azure reference architectures): `parameters.buildingBlocks.value[]` lists blocks of a `type`
//! with `settings` (one object or an array). Beyond FMT-1; what is read is listed in
//! `docs/import-support.md`:
//!
//! * `VirtualNetwork`: `{name, addressPrefixes[], subnets[{name, addressPrefix}],
//!   virtualNetworkPeerings[]}`;
//! * `NetworkSecurityGroup`: `{name, securityRules[] (ARM field names, no properties wrapper),
//!   virtualNetworks[{name, subnets[]}]}` (the subnets it is attached to);
//! * `RouteTable`: `{name, disableBgpRoutePropagation, routes[{name, addressPrefix, nextHop}],
//!   virtualNetworks[...]}`, where `nextHop` is an IP address (a `VirtualAppliance` route) or a
//!   next hop type;
//! * `Template`: `settings.template` is an ARM template, expanded like a nested deployment
//!   (`settings.parameters` supplies its parameter values).
//!
//! Other block types (virtual machines, load balancers, gateways, connections) hold no network
//! policy and are skipped with a note.

use super::merge::Association;
use super::node::Node;
use super::reader::{Reader, NSG, RT, VNET};
use crate::address::parse_ip;
use crate::diag::Diagnostic;
use crate::resources::Origin;
use serde_json::{json, Map, Value};

fn blocks(v: &Value) -> Option<&Vec<Value>> {
    v.get("parameters")?
        .get("buildingBlocks")?
        .get("value")?
        .as_array()
}

pub fn is_building_blocks(v: &Value) -> bool {
    blocks(v).is_some_and(|b| {
        b.iter()
            .all(|x| x.get("type").is_some_and(Value::is_string))
    })
}

pub fn read(reader: &mut Reader, doc: &Value, strict: bool) {
    let root = Node::root(doc, "");
    let Some(list) = root
        .key("parameters")
        .and_then(|p| p.key("buildingBlocks"))
        .and_then(|b| b.key("value"))
    else {
        return;
    };
    for block in list.items() {
        let ty = block.field("type").map(|t| t.text()).unwrap_or_default();
        let Some(settings) = block.key("settings") else {
            continue;
        };
        let items = settings.one_or_many();
        match ty.to_ascii_lowercase().as_str() {
            "virtualnetwork" => items.iter().for_each(|s| vnet(reader, s)),
            "networksecuritygroup" => items.iter().for_each(|s| {
                reader.resource(s, Some(NSG), true);
                attachments(reader, s, Some(NSG));
            }),
            "routetable" => items.iter().for_each(|s| {
                route_table(reader, s);
                attachments(reader, s, Some(RT));
            }),
            "template" => {
                if let Some(t) = settings.key("template") {
                    let options = palisade_arm::Options {
                        parameters: settings.key("parameters").map(|p| p.value.clone()),
                        ..palisade_arm::Options::default()
                    };
                    let no_links = |rel: &str| rel.to_string();
                    super::expand_into(reader, t.value, &options, &t.pointer, strict, &no_links);
                }
            }
            _ => {
                let d = Diagnostic::note(format!(
                    "building block `{ty}` holds no network policy; not read"
                ))
                .at(reader.file(), &block.pointer);
                reader.diagnostics.push(d);
            }
        }
    }
}

/// A `VirtualNetwork` block: `addressPrefixes` is `addressSpace.addressPrefixes` in ARM, and a
/// peering names its remote network by `name`.
fn vnet(reader: &mut Reader, s: &Node) {
    let mut v: Map<String, Value> = s.value.as_object().cloned().unwrap_or_default();
    if let Some(prefixes) = v.get("addressPrefixes").cloned() {
        v.insert(
            "addressSpace".into(),
            json!({ "addressPrefixes": prefixes }),
        );
    }
    if let Some(Value::Array(peerings)) = v.get_mut("virtualNetworkPeerings") {
        for p in peerings.iter_mut() {
            if let Some(remote) = p.get_mut("remoteVirtualNetwork") {
                if remote.get("id").is_none() {
                    if let Some(n) = remote.get("name").cloned() {
                        remote["id"] = n;
                    }
                }
            }
        }
    }
    let value = Value::Object(v);
    reader.resource(&Node::root(&value, &s.pointer), Some(VNET), true);
}

/// A `RouteTable` block: `nextHop` is an IP address (`VirtualAppliance`) or a next hop type.
fn route_table(reader: &mut Reader, s: &Node) {
    let mut routes = vec![];
    for r in s.field("routes").map(|r| r.items()).unwrap_or_default() {
        let mut route: Map<String, Value> = r.value.as_object().cloned().unwrap_or_default();
        if let Some(hop) = route.remove("nextHop") {
            match hop.as_str().and_then(parse_ip) {
                Some(_) => {
                    route.insert("nextHopType".into(), json!("VirtualAppliance"));
                    route.insert("nextHopIpAddress".into(), hop);
                }
                None => {
                    route.insert("nextHopType".into(), hop);
                }
            }
        }
        routes.push(Value::Object(route));
    }
    let mut t: Map<String, Value> = s.value.as_object().cloned().unwrap_or_default();
    t.insert("routes".into(), Value::Array(routes));
    let value = Value::Object(t);
    reader.resource(&Node::root(&value, &s.pointer), Some(RT), true);
}

/// `virtualNetworks: [{name, subnets: [..]}]`: the subnets an NSG or route table is attached to.
fn attachments(reader: &mut Reader, s: &Node, ty: Option<&str>) {
    let name = s.field("name").map(|n| n.text()).unwrap_or_default();
    for v in s
        .field("virtualNetworks")
        .map(|v| v.items())
        .unwrap_or_default()
    {
        let vname = v.field("name").map(|n| n.text()).unwrap_or_default();
        for sub in v.field("subnets").map(|x| x.items()).unwrap_or_default() {
            let is_nsg = ty == Some(NSG);
            reader.associate(Association {
                virtual_network: vname.clone(),
                subnet: sub.text(),
                network_security_group: is_nsg.then(|| name.clone()),
                route_table: (!is_nsg).then(|| name.clone()),
                origin: Origin {
                    file: reader.file().to_string(),
                    pointer: sub.pointer.clone(),
                },
            });
        }
    }
}
