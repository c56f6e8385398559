//! Reading resources into the model (FMT-6…FMT-9): one function per resource type, each reporting
//! located problems for the fields it reads.

use super::node::Node;
use super::{SetAside, Synthetic};
use crate::address::{
    parse_address_item, parse_ip, parse_port_list, parse_prefix, AddressItem, Protocol,
};
use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::resources::*;

pub struct Reader {
    /// The file being read: the root document, or the linked template a resource came from.
    file: String,
    strict: bool,
    pub network: Network,
    pub diagnostics: Diagnostics,
    /// Effective-rule/route lists seen (FMT-10).
    pub observations: usize,
    set_aside: SetAside,
    synthetic: Vec<Synthetic>,
    /// Child resources declared on their own, attached to their parents in [`Reader::finish`]
    /// (the parent may come later in the file).
    pending: Vec<Pending>,
    /// (child kind, parent, child) of children already attached as separate resources.
    separate: std::collections::HashSet<(&'static str, String, String)>,
    /// Subnet associations declared apart from the subnet (building blocks), applied last.
    associations: Vec<Association>,
}

/// An NSG or route table attached to a subnet from outside the subnet's definition.
pub struct Association {
    pub virtual_network: String,
    pub subnet: String,
    pub network_security_group: Option<String>,
    pub route_table: Option<String>,
    pub origin: Origin,
}

/// What a [`Reader`] produced.
pub struct Read {
    pub network: Network,
    pub diagnostics: Diagnostics,
    pub synthetic: Vec<Synthetic>,
    pub set_aside: SetAside,
}

/// Where a separately declared child belongs.
struct ChildAt {
    parent: String,
    child: String,
    /// A missing parent is an error (templates, FMT-6).
    parent_required: bool,
}

impl ChildAt {
    fn full(&self) -> String {
        format!("{}/{}", self.parent, self.child)
    }
}

/// A child resource declared on its own (`parent/child`, FMT-6).
struct Pending {
    parent: String,
    child: Child,
    /// A missing parent is an error (templates) rather than expected (a REST body of one rule).
    parent_required: bool,
    origin: Origin,
}

enum Child {
    Rule(SecurityRule),
    Route(Route),
    Subnet(Subnet),
    Peering(VirtualNetworkPeering),
    Group(RuleCollectionGroup),
}

impl Child {
    fn label(&self) -> &'static str {
        match self {
            Child::Rule(_) => "security rule",
            Child::Route(_) => "route",
            Child::Subnet(_) => "subnet",
            Child::Peering(_) => "peering",
            Child::Group(_) => "rule collection group",
        }
    }
    fn name(&self) -> &str {
        match self {
            Child::Rule(x) => &x.name,
            Child::Route(x) => &x.name,
            Child::Subnet(x) => &x.name,
            Child::Peering(x) => &x.name,
            Child::Group(x) => &x.name,
        }
    }
    fn parent_type(&self) -> &'static str {
        match self {
            Child::Rule(_) => NSG,
            Child::Route(_) => RT,
            Child::Subnet(_) | Child::Peering(_) => VNET,
            Child::Group(_) => POLICY,
        }
    }
}

/// Rules and routes a definition holds, for [`SetAside::superseded`].
fn rule_counts<T: Counted>(items: &[T]) -> Counts {
    items
        .iter()
        .fold(Counts::default(), |acc, x| add(acc, x.counted()))
}

fn add(a: Counts, b: Counts) -> Counts {
    Counts {
        security_rules: a.security_rules + b.security_rules,
        routes: a.routes + b.routes,
        firewall_rules: a.firewall_rules + b.firewall_rules,
    }
}

trait Counted {
    fn counted(&self) -> Counts;
}
impl Counted for SecurityRule {
    fn counted(&self) -> Counts {
        Counts {
            security_rules: 1,
            ..Counts::default()
        }
    }
}
impl Counted for Route {
    fn counted(&self) -> Counts {
        Counts {
            routes: 1,
            ..Counts::default()
        }
    }
}
impl Counted for Subnet {
    fn counted(&self) -> Counts {
        Counts::default()
    }
}
impl Counted for VirtualNetworkPeering {
    fn counted(&self) -> Counts {
        Counts::default()
    }
}
impl Counted for RuleCollectionGroup {
    fn counted(&self) -> Counts {
        Counts {
            firewall_rules: self.rule_collections.iter().map(|c| c.rules.len()).sum(),
            ..Counts::default()
        }
    }
}

/// Resources with a name and an origin.
trait Declared {
    fn declared_name(&self) -> &str;
    fn declared_origin(&self) -> &Origin;
}
macro_rules! declared {
    ($($t:ty),*) => {$(
        impl Declared for $t {
            fn declared_name(&self) -> &str { &self.name }
            fn declared_origin(&self) -> &Origin { &self.origin }
        }
    )*};
}
declared!(
    NetworkInterface,
    PublicIpAddress,
    ApplicationSecurityGroup,
    IpGroup,
    NetworkSecurityGroup,
    RouteTable,
    VirtualNetwork,
    FirewallPolicy,
    AzureFirewall
);

/// Children with a name.
pub trait ChildName {
    fn child_name(&self) -> &str;
}
macro_rules! child_name {
    ($($t:ty),*) => {$(
        impl ChildName for $t {
            fn child_name(&self) -> &str { &self.name }
        }
    )*};
}
child_name!(
    SecurityRule,
    Route,
    Subnet,
    VirtualNetworkPeering,
    RuleCollectionGroup
);

/// Put `item` into `list`, replacing a child of the same name (case-insensitive); returns the
/// replaced one.
fn replace_named<T: ChildName>(list: &mut Vec<T>, item: T) -> Option<T> {
    match list
        .iter()
        .position(|x| x.child_name().eq_ignore_ascii_case(item.child_name()))
    {
        Some(i) => Some(std::mem::replace(&mut list[i], item)),
        None => {
            list.push(item);
            None
        }
    }
}

/// A resource declared again: the children of the earlier declaration (`old`) join those of the
/// later one (`new`), whose same-named children win. Returns the superseded ones.
fn union_named<T: ChildName>(new: &mut Vec<T>, old: Vec<T>) -> Vec<T> {
    let mut superseded = vec![];
    for x in old {
        if new
            .iter()
            .any(|n| n.child_name().eq_ignore_ascii_case(x.child_name()))
        {
            superseded.push(x);
        } else {
            new.push(x);
        }
    }
    superseded
}

/// The resource a field belongs to, for messages.
struct Ctx<'r> {
    ty: &'r str,
    name: &'r str,
}

const NSG: &str = "Microsoft.Network/networkSecurityGroups";
const RULE: &str = "Microsoft.Network/networkSecurityGroups/securityRules";
const RT: &str = "Microsoft.Network/routeTables";
const ROUTE: &str = "Microsoft.Network/routeTables/routes";
const VNET: &str = "Microsoft.Network/virtualNetworks";
const SUBNET: &str = "Microsoft.Network/virtualNetworks/subnets";
const PEERING: &str = "Microsoft.Network/virtualNetworks/virtualNetworkPeerings";
const NIC: &str = "Microsoft.Network/networkInterfaces";
const ASG: &str = "Microsoft.Network/applicationSecurityGroups";
const PIP: &str = "Microsoft.Network/publicIPAddresses";
const FW: &str = "Microsoft.Network/azureFirewalls";
const POLICY: &str = "Microsoft.Network/firewallPolicies";
const RCG: &str = "Microsoft.Network/firewallPolicies/ruleCollectionGroups";
const IPG: &str = "Microsoft.Network/ipGroups";
/// Not an Azure type: a policy rule collection on its own (a snippet for an RCG).
const LONE_COLLECTION: &str = "palisade/ruleCollection";

impl Reader {
    pub fn new(file: &str, strict: bool) -> Reader {
        Reader {
            file: file.to_string(),
            strict,
            network: Network::default(),
            diagnostics: Diagnostics::default(),
            observations: 0,
            set_aside: SetAside::default(),
            synthetic: vec![],
            pending: vec![],
            separate: Default::default(),
            associations: vec![],
        }
    }

    /// Attach an NSG or route table to a subnet once everything is read.
    pub fn associate(&mut self, a: Association) {
        self.associations.push(a);
    }

    fn apply_association(&mut self, a: Association) {
        let subnet = self
            .network
            .virtual_networks
            .iter_mut()
            .filter(|v| v.name.eq_ignore_ascii_case(&a.virtual_network))
            .flat_map(|v| v.subnets.iter_mut())
            .find(|s| s.name.eq_ignore_ascii_case(&a.subnet));
        match subnet {
            Some(s) => {
                if a.network_security_group.is_some() {
                    s.network_security_group = a.network_security_group;
                }
                if a.route_table.is_some() {
                    s.route_table = a.route_table;
                }
            }
            None => {
                let what = a
                    .network_security_group
                    .as_deref()
                    .or(a.route_table.as_deref())
                    .unwrap_or_default()
                    .to_string();
                let d = Diagnostic::warning(format!(
                    "'{what}' is attached to subnet '{}/{}', which is not in the input; the attachment is ignored",
                    a.virtual_network, a.subnet
                ))
                .at(&a.origin.file, &a.origin.pointer)
                .field("virtualNetworks")
                .found(format!("{}/{}", a.virtual_network, a.subnet));
                self.push(d);
            }
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Resources read from now on come from `file` (a linked template).
    pub fn set_file(&mut self, file: &str) {
        if self.file != file {
            self.file = file.to_string();
        }
    }

    /// Attach the separately declared children to their parents and hand over the result.
    pub fn finish(mut self) -> Read {
        for p in std::mem::take(&mut self.pending) {
            self.attach(p);
        }
        for a in std::mem::take(&mut self.associations) {
            self.apply_association(a);
        }

        Read {
            network: self.network,
            diagnostics: self.diagnostics,
            synthetic: self.synthetic,
            set_aside: self.set_aside,
        }
    }

    /// FMT-6: a separately declared child joins its parent (created as a synthetic parent when
    /// the input has none). The same child inline and separate: the separate one wins (lenient,
    /// with a warning) or it is an error (strict); declared twice separately: the later wins.
    fn attach(&mut self, p: Pending) {
        let Pending {
            parent,
            child,
            parent_required,
            origin,
        } = p;
        let label = child.label();
        let parent_type = child.parent_type();
        let child_name = child.name().to_string();
        let key = (
            label,
            parent.to_ascii_lowercase(),
            child_name.to_ascii_lowercase(),
        );
        let twice_separate = !self.separate.insert(key);
        let replaced = match child {
            Child::Rule(r) => {
                let i = self.parent_index("nsg", &parent, &origin, parent_required, |n| {
                    &mut n.network_security_groups
                });
                let list = &mut self.network.network_security_groups[i].security_rules;
                replace_named(list, r).map(|o| o.counted())
            }
            Child::Route(r) => {
                let i = self.parent_index("routeTable", &parent, &origin, parent_required, |n| {
                    &mut n.route_tables
                });
                replace_named(&mut self.network.route_tables[i].routes, r).map(|o| o.counted())
            }
            Child::Subnet(s) => {
                let i =
                    self.parent_index("virtualNetwork", &parent, &origin, parent_required, |n| {
                        &mut n.virtual_networks
                    });
                replace_named(&mut self.network.virtual_networks[i].subnets, s).map(|o| o.counted())
            }
            Child::Peering(x) => {
                let i =
                    self.parent_index("virtualNetwork", &parent, &origin, parent_required, |n| {
                        &mut n.virtual_networks
                    });
                let list = &mut self.network.virtual_networks[i].virtual_network_peerings;
                replace_named(list, x).map(|o| o.counted())
            }
            Child::Group(g) => {
                let i =
                    self.parent_index("firewallPolicy", &parent, &origin, parent_required, |n| {
                        &mut n.firewall_policies
                    });
                let list = &mut self.network.firewall_policies[i].rule_collection_groups;
                replace_named(list, g).map(|o| o.counted())
            }
        };
        let Some(counts) = replaced else {
            return;
        };
        self.set_aside.superseded = add(self.set_aside.superseded, counts);
        let full = format!("{parent}/{child_name}");
        let d = if twice_separate {
            Diagnostic::note(format!(
                "this {label} is declared twice as a separate resource; the later declaration is used"
            ))
        } else if self.strict {
            Diagnostic::error(format!(
                "this {label} is defined both inline in its parent and as a separate resource (FMT-6)"
            ))
            .expected("one definition")
        } else {
            Diagnostic::warning(format!(
                "this {label} is defined both inline in its parent and as a separate resource; the separate resource is used (FMT-6)"
            ))
        };
        self.push(
            d.at(&origin.file, &origin.pointer)
                .resource(parent_type, &full)
                .field("name"),
        );
    }

    /// A resource declared twice in one input (typically re-deployed by a nested deployment
    /// to update it): the later declaration's settings apply, children are merged by name.
    fn redeclared(
        &mut self,
        ty: &str,
        name: &str,
        first: &Origin,
        again: &Origin,
        superseded: Counts,
    ) {
        self.set_aside.superseded = add(self.set_aside.superseded, superseded);
        let d = Diagnostic::note(format!(
            "declared again (first at {}); the later declaration's settings apply and child definitions are merged by name, later ones winning",
            if first.file == again.file {
                first.pointer.clone()
            } else {
                format!("{} {}", first.file, first.pointer)
            }
        ))
        .at(&again.file, &again.pointer)
        .resource(ty, name);
        self.push(d);
    }

    /// Add a resource; one declared again in the same file (typically updated by a nested
    /// deployment) takes the later declaration's settings, and `merge` joins the earlier one's
    /// children into it, returning what the later declaration replaced.
    fn redeclare<T: Declared>(
        &mut self,
        ty: &str,
        item: T,
        list: impl Fn(&mut Network) -> &mut Vec<T>,
        merge: impl FnOnce(&mut T, T) -> Counts,
    ) {
        let l = list(&mut self.network);
        let Some(i) = l
            .iter()
            .position(|x| x.declared_name().eq_ignore_ascii_case(item.declared_name()))
        else {
            l.push(item);
            return;
        };
        let old = std::mem::replace(&mut l[i], item);
        let old_origin = old.declared_origin().clone();
        let gone = merge(&mut l[i], old);
        let (name, again) = (
            l[i].declared_name().to_string(),
            l[i].declared_origin().clone(),
        );
        self.redeclared(ty, &name, &old_origin, &again, gone);
    }

    fn add_nsg(&mut self, nsg: NetworkSecurityGroup) {
        self.redeclare(
            NSG,
            nsg,
            |n| &mut n.network_security_groups,
            |new, old| rule_counts(&union_named(&mut new.security_rules, old.security_rules)),
        );
    }

    fn add_route_table(&mut self, t: RouteTable) {
        self.redeclare(
            RT,
            t,
            |n| &mut n.route_tables,
            |new, old| rule_counts(&union_named(&mut new.routes, old.routes)),
        );
    }

    fn add_vnet(&mut self, v: VirtualNetwork) {
        self.redeclare(
            VNET,
            v,
            |n| &mut n.virtual_networks,
            |new, old| {
                union_named(&mut new.subnets, old.subnets);
                union_named(
                    &mut new.virtual_network_peerings,
                    old.virtual_network_peerings,
                );
                Counts::default()
            },
        );
    }

    fn add_policy(&mut self, p: FirewallPolicy) {
        self.redeclare(
            POLICY,
            p,
            |n| &mut n.firewall_policies,
            |new, old| {
                rule_counts(&union_named(
                    &mut new.rule_collection_groups,
                    old.rule_collection_groups,
                ))
            },
        );
    }

    /// A resource without children declared again (a NIC updated by a nested deployment): the
    /// later declaration replaces the earlier.
    fn add_plain<T: Declared>(
        &mut self,
        ty: &str,
        item: T,
        list: impl Fn(&mut Network) -> &mut Vec<T>,
    ) {
        self.redeclare(ty, item, list, |_, _| Counts::default());
    }

    fn add_firewall(&mut self, fw: AzureFirewall) {
        // Classic collections are one property: a new declaration replaces them all.
        self.redeclare(
            FW,
            fw,
            |n| &mut n.azure_firewalls,
            |_, old| Counts {
                firewall_rules: old.rule_collections.iter().map(|c| c.rules.len()).sum(),
                ..Counts::default()
            },
        );
    }

    fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    fn err(&mut self, ctx: &Ctx, node: &Node, field: &str, msg: &str, expected: &str) {
        let d = Diagnostic::error(msg)
            .at(&self.file, &node.pointer)
            .resource(ctx.ty, ctx.name)
            .field(field)
            .found(node.text())
            .expected(expected);
        self.push(d);
    }

    fn warn(&mut self, ctx: &Ctx, node: &Node, field: &str, msg: &str) {
        let d = Diagnostic::warning(msg)
            .at(&self.file, &node.pointer)
            .resource(ctx.ty, ctx.name)
            .field(field)
            .found(node.text());
        self.push(d);
    }

    /// An unresolved value where one is needed: an error in strict mode, else a warning.
    fn unresolved(&mut self, ctx: &Ctx, node: &Node, field: &str) {
        let sev = if self.strict {
            Severity::Error
        } else {
            Severity::Warning
        };
        let d = Diagnostic::new(
            sev,
            "the value is a template expression that cannot be resolved offline; it is treated as unresolvable",
        )
        .at(&self.file, &node.pointer)
        .resource(ctx.ty, ctx.name)
        .field(field)
        .found(node.text());
        self.push(d);
    }

    fn origin(&self, node: &Node) -> Origin {
        Origin {
            file: self.file.clone(),
            pointer: node.pointer.clone(),
        }
    }

    /// A REST body: a list (`value[]`), an array, or one resource.
    pub fn body(&mut self, node: &Node) {
        if node.value.is_null() {
            return;
        }
        if let Some(list) = node.field("value").filter(|v| v.value.is_array()) {
            if let Some(observed) = effective_list(&list) {
                self.observed(&list, observed);
                return;
            }
            for item in list.items() {
                self.resource(&item, None, false);
            }
            return;
        }
        if node.value.is_array() {
            for item in node.items() {
                self.resource(&item, None, false);
            }
            return;
        }
        if let Some(observed) = security_group_view(node) {
            self.observed(node, observed);
            return;
        }
        self.resource(node, None, false);
    }

    /// FMT-10: effective rules or routes, or a security group view, are observations.
    fn observed(&mut self, node: &Node, o: Observed) {
        self.observations += 1;
        self.set_aside.observed_rules += o.rules;
        self.set_aside.observed_routes += o.routes;
        self.set_aside.default_rules_in_arrays += o.default_rules;
        let what = if o.routes > 0 {
            format!("{} effective route(s)", o.routes)
        } else {
            format!("{} security rule(s)", o.rules + o.default_rules)
        };
        self.push(
            Diagnostic::note(format!(
                "effective rules/routes are observations, not configuration (FMT-10); {what} not imported"
            ))
            .at(&self.file, &node.pointer),
        );
    }

    /// One resource of any supported type. `ty` overrides the type read from the resource.
    pub fn resource(&mut self, node: &Node, ty: Option<&str>, from_template: bool) {
        if !node.value.is_object() {
            return;
        }
        let ty = ty
            .map(str::to_string)
            .or_else(|| {
                node.field("type")
                    .and_then(|t| t.as_str().map(str::to_string))
            })
            .or_else(|| type_from_id(node))
            .or_else(|| type_from_shape(node));
        let Some(ty) = ty else {
            return;
        };
        let name = node
            .field("name")
            .map(|n| n.text())
            .or_else(|| {
                node.field("id")
                    .and_then(|i| i.as_str().map(|s| id_name_path(s, &ty)))
            })
            .unwrap_or_default();
        // A REST body of a child (a lone route or rule) names only itself; its id names the parent.
        let name = match node
            .field("id")
            .and_then(|i| i.as_str().map(str::to_string))
        {
            Some(id) if ty.matches('/').count() >= 2 && !name.contains('/') => {
                let from_id = id_name_path(&id, &ty);
                if from_id.contains('/') && from_id.ends_with(&format!("/{name}")) {
                    from_id
                } else {
                    name
                }
            }
            _ => name,
        };
        let lower = ty.to_ascii_lowercase();
        let child_at = |r: &mut Reader| r.child_at(node, &ty, &name, from_template);
        match lower.as_str() {
            "microsoft.network/networksecuritygroups" => self.nsg(node, &name),
            "microsoft.network/networksecuritygroups/securityrules" => {
                let at = child_at(self);
                self.child_rule(node, at)
            }
            "microsoft.network/networksecuritygroups/defaultsecurityrules" => {
                self.set_aside.default_rule_resources += 1;
                let d = Diagnostic::note(
                    "a default security rule is fixed by Azure (NSG-4) and not imported; the model adds the default rules to every NSG",
                )
                .at(&self.file, &node.pointer)
                .resource(&ty, &name);
                self.push(d);
            }
            "microsoft.network/routetables" => self.route_table(node, &name),
            "microsoft.network/routetables/routes" => {
                let at = child_at(self);
                self.child_route(node, at)
            }
            "microsoft.network/virtualhubs/hubroutetables"
            | "microsoft.network/virtualhubs/routetables" => {
                let routes = node
                    .prop("routes")
                    .map(|r| r.items())
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| r.prop("nextHopType").is_some())
                    .count();
                self.set_aside.hub_routes += routes;
                let d = Diagnostic::note(format!(
                    "virtual hub route tables are not modelled (FMT-8); its {routes} route(s) are not imported"
                ))
                .at(&self.file, &node.pointer)
                .resource(&ty, &name);
                self.push(d);
            }
            "microsoft.network/virtualnetworks" => self.vnet(node, &name),
            "microsoft.network/virtualnetworks/subnets" => {
                let at = child_at(self);
                self.child_subnet(node, at)
            }
            "microsoft.network/virtualnetworks/virtualnetworkpeerings" => {
                let at = child_at(self);
                self.child_peering(node, at)
            }
            "microsoft.network/networkinterfaces" => self.nic(node, &name),
            "microsoft.network/applicationsecuritygroups" => {
                let origin = self.origin(node);
                let asg = ApplicationSecurityGroup { name, origin };
                self.add_plain(ASG, asg, |n| &mut n.application_security_groups);
            }
            "microsoft.network/publicipaddresses" => self.public_ip(node, &name),
            "microsoft.network/azurefirewalls" => self.firewall(node, &name),
            "microsoft.network/firewallpolicies" if node.prop("ruleCollections").is_some() => {
                // A 2020-11-01 REST example answers an RCG PUT with a policy id; the body decides.
                let d = Diagnostic::note(
                    "the type or id says `firewallPolicies`, but the body has the rule collection group shape (`ruleCollections`); read as a rule collection group",
                )
                .at(&self.file, &node.pointer)
                .resource(&ty, &name);
                self.push(d);
                let at = ChildAt {
                    parent: String::new(),
                    child: name.clone(),
                    parent_required: from_template,
                };
                self.child_rcg(node, at)
            }
            "microsoft.network/firewallpolicies" => self.policy(node, &name),
            "palisade/rulecollection" if !from_template => self.lone_collection(node, &name),

            "microsoft.network/firewallpolicies/rulecollectiongroups" => {
                let at = child_at(self);
                self.child_rcg(node, at)
            }
            "microsoft.network/firewallpolicies/rulegroups"
                if node.prop("ruleCollections").is_some() =>
            {
                // The 2020-11-01 REST examples give some rule collection groups an id that says
                // `ruleGroups`; the body decides.
                let d = Diagnostic::note(
                    "the type or id says `ruleGroups`, but the body has the rule collection group shape (`ruleCollections`); read as a rule collection group",
                )
                .at(&self.file, &node.pointer)
                .resource(&ty, &name);
                self.push(d);
                let at = child_at(self);
                self.child_rcg(node, at)
            }
            "microsoft.network/firewallpolicies/rulegroups" => {
                let d = Diagnostic::error(
                    "the pre-2020 `firewallPolicies/ruleGroups` shape is not supported (FMT-9)",
                )
                .at(&self.file, &node.pointer)
                .resource(&ty, &name)
                .field("type")
                .found(&ty)
                .expected("`firewallPolicies/ruleCollectionGroups` with `ruleCollections`");
                self.push(d);
            }
            "microsoft.network/ipgroups" => self.ip_group(node, &name),
            _ => {}
        }
    }

    // ----------------------------------------------------------------------------------- NSG

    fn nsg(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: NSG, name };
        let mut nsg = NetworkSecurityGroup {
            name: name.to_string(),
            location: node.field("location").map(|l| l.text()),
            flush_connection: node
                .prop("flushConnection")
                .and_then(|f| f.value.as_bool())
                .unwrap_or(false),
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(rules) = node.prop("securityRules") {
            for r in rules.items() {
                if let Some(rule) = self.security_rule(&ctx, &r, None) {
                    nsg.security_rules.push(rule);
                }
            }
        }
        if let Some(defaults) = node.prop("defaultSecurityRules") {
            self.set_aside.default_rules_in_arrays += defaults.items().len();
            let d = Diagnostic::note(
                "`defaultSecurityRules` in input are ignored; the fixed default rules of NSG-4 apply",
            )
            .at(&self.file, &node.pointer)
            .resource(NSG, name);
            self.push(d);
        }
        self.add_nsg(nsg);
    }

    fn child_rule(&mut self, node: &Node, at: ChildAt) {
        let full = at.full();
        let ctx = Ctx {
            ty: RULE,
            name: &full,
        };
        if let Some(rule) = self.security_rule(&ctx, node, Some(&at.child)) {
            self.pend(node, at, Child::Rule(rule));
        }
    }

    /// Where a separately declared child belongs: its parent's and its own name (FMT-6).
    fn child_at(&mut self, node: &Node, ty: &str, name: &str, from_template: bool) -> ChildAt {
        let name_node = node.field("name");
        if let Some(text) = name_node.as_ref().and_then(|n| n.unresolved()) {
            // The expander writes a nested child's name as `<parent expression>/<child>`.
            let split = if text.starts_with('[') {
                text.find("]/").map(|i| {
                    (
                        format!("unresolved({})", &text[..=i]),
                        text[i + 2..].to_string(),
                    )
                })
            } else {
                text.split_once('/')
                    .map(|(p, c)| (p.to_string(), format!("unresolved({c})")))
            };
            if let Some((parent, child)) = split {
                return ChildAt {
                    parent,
                    child,
                    parent_required: from_template,
                };
            }
            // `[concat(a, '/', b)]` with `a` unknown: the parent cannot be told.
            let sev = if self.strict {
                Severity::Error
            } else {
                Severity::Warning
            };
            let d = Diagnostic::new(
                sev,
                "the name is a template expression that cannot be resolved offline, so the parent of this child resource is unknown; it is kept under a placeholder parent",
            )
            .at(&self.file, &name_node.as_ref().map(|n| n.pointer.clone()).unwrap_or_default())
            .resource(ty, name)
            .field("name")
            .found(name)
            .expected("a name `<parent>/<child>` that resolves offline");
            self.push(d);
            return ChildAt {
                parent: name.to_string(),
                child: name.to_string(),
                parent_required: false,
            };
        }
        // A REST body of a child names only itself; its id names the parent.
        let full = if name.contains('/') {
            name.to_string()
        } else {
            node.field("id")
                .and_then(|i| i.as_str().map(|s| id_name_path(s, ty)))
                .filter(|n| n.contains('/'))
                .unwrap_or_else(|| name.to_string())
        };
        let (parent, child) = split_child(&full);
        ChildAt {
            parent: parent.to_string(),
            child: child.to_string(),
            parent_required: from_template,
        }
    }

    fn pend(&mut self, node: &Node, at: ChildAt, child: Child) {
        let origin = self.origin(node);
        self.pending.push(Pending {
            parent: at.parent,
            child,
            parent_required: at.parent_required,
            origin,
        });
    }

    /// Find or create (synthetic) the parent of a child resource.
    fn parent_index<T: Named + Default>(
        &mut self,
        kind: &'static str,
        parent: &str,
        origin: &Origin,
        from_template: bool,
        list: impl Fn(&mut Network) -> &mut Vec<T>,
    ) -> usize {
        let origin = origin.clone();
        let l = list(&mut self.network);
        if let Some(i) = l.iter().position(|x| x.name().eq_ignore_ascii_case(parent)) {
            return i;
        }
        let mut t = T::default();
        t.set_name(parent, origin.clone());
        l.push(t);
        let i = l.len() - 1;
        self.synthetic.push(Synthetic {
            kind,
            name: parent.to_string(),
            from_template,
            origin,
            position: None,
        });
        i
    }

    fn security_rule(
        &mut self,
        parent: &Ctx,
        node: &Node,
        name: Option<&str>,
    ) -> Option<SecurityRule> {
        let name = name
            .map(str::to_string)
            .or_else(|| node.field("name").map(|n| n.text()))
            .unwrap_or_default();
        let full = format!("{}/{}", parent.name, name);
        let ctx = Ctx {
            ty: RULE,
            name: if parent.ty == RULE {
                parent.name
            } else {
                &full
            },
        };
        let mut ok = true;
        let protocol = match node.prop("protocol") {
            Some(p) => match p.as_str().and_then(Protocol::parse) {
                Some(x) => Some(x),
                None => {
                    self.err(
                        &ctx,
                        &p,
                        "protocol",
                        "unknown protocol",
                        "one of Tcp, Udp, Icmp, Esp, Ah, * (Any)",
                    );
                    ok = false;
                    None
                }
            },
            None => {
                self.missing(&ctx, node, "protocol", "one of Tcp, Udp, Icmp, Esp, Ah, *");
                ok = false;
                None
            }
        };
        let access = self.enum_field(
            &ctx,
            node,
            "access",
            &[("allow", Access::Allow), ("deny", Access::Deny)],
        );
        let direction = self.enum_field(
            &ctx,
            node,
            "direction",
            &[
                ("inbound", Direction::Inbound),
                ("outbound", Direction::Outbound),
            ],
        );
        let priority = self.integer(&ctx, node, "priority", true);
        let source = self.rule_side(&ctx, node, "source");
        let destination = self.rule_side(&ctx, node, "destination");
        let description = node.prop("description").map(|d| d.text());
        let palisade = self.palisade_settings(&ctx, node);
        let (
            Some(protocol),
            Some(access),
            Some(direction),
            Some(priority),
            Some(source),
            Some(destination),
        ) = (protocol, access, direction, priority, source, destination)
        else {
            return None;
        };
        if !ok {
            return None;
        }
        Some(SecurityRule {
            name,
            description,
            protocol,
            source,
            destination,
            access,
            priority,
            direction,
            is_default: false,
            palisade,
            origin: self.origin(node),
        })
    }

    fn missing(&mut self, ctx: &Ctx, node: &Node, field: &str, expected: &str) {
        let d = Diagnostic::error("required field is missing")
            .at(&self.file, &node.pointer)
            .resource(ctx.ty, ctx.name)
            .field(field)
            .expected(expected);
        self.push(d);
    }

    fn enum_field<T: Copy>(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        field: &str,
        values: &[(&str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        let expected = format!("one of {}", names.join(", "));
        let Some(v) = node.prop(field) else {
            self.missing(ctx, node, field, &expected);
            return None;
        };
        if v.unresolved().is_some() {
            self.unresolved(ctx, &v, field);
            return None;
        }
        let s = v.as_str().map(|s| s.trim().to_ascii_lowercase());
        match s.and_then(|s| values.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)) {
            Some(t) => Some(t),
            None => {
                self.err(ctx, &v, field, "unknown value", &expected);
                None
            }
        }
    }

    /// An integer, possibly written as a decimal string (FMT-3). `priority` fields are checked
    /// against 100–4096 by validation, not here.
    fn integer(&mut self, ctx: &Ctx, node: &Node, field: &str, required: bool) -> Option<u32> {
        let Some(v) = node.prop(field) else {
            if required {
                self.missing(ctx, node, field, "an integer");
            }
            return None;
        };
        if v.unresolved().is_some() {
            self.unresolved(ctx, &v, field);
            return None;
        }
        if let Some(n) = v.value.as_u64() {
            if let Ok(n) = u32::try_from(n) {
                return Some(n);
            }
        }
        if let Some(s) = v.as_str() {
            if let Ok(n) = s.trim().parse::<u32>() {
                let d = Diagnostic::note("number given as a string; coerced")
                    .at(&self.file, &v.pointer)
                    .resource(ctx.ty, ctx.name)
                    .field(field)
                    .found(s);
                self.push(d);
                return Some(n);
            }
        }
        self.err(
            ctx,
            &v,
            field,
            "not a non-negative integer",
            "an integer (a decimal string is accepted)",
        );
        None
    }

    /// NSG-2.3/2.4 and FMT-7: one side of a security rule.
    fn rule_side(&mut self, ctx: &Ctx, node: &Node, side: &str) -> Option<RuleSide> {
        let mut ok = true;
        let mut out = RuleSide::default();
        // Ports.
        let single = node.prop(&format!("{side}PortRange"));
        let plural = node.prop(&format!("{side}PortRanges"));
        let port_items: Vec<Node> = match (&single, &plural) {
            (Some(s), Some(p)) => {
                self.err(
                    ctx,
                    p,
                    &format!("{side}PortRanges"),
                    &format!("both `{side}PortRange` and `{side}PortRanges` are filled"),
                    "only one of the singular and plural forms",
                );
                let _ = s;
                ok = false;
                vec![]
            }
            (Some(s), None) => vec![s.clone()],
            (None, Some(p)) => {
                if p.value.is_array() {
                    p.items()
                } else {
                    vec![p.clone()]
                }
            }
            (None, None) => {
                self.missing(
                    ctx,
                    node,
                    &format!("{side}PortRange"),
                    "`*`, a port `N` or a range `A-B`",
                );
                ok = false;
                vec![]
            }
        };
        for item in port_items {
            let field = format!("{side}PortRange");
            if item.unresolved().is_some() {
                self.unresolved(ctx, &item, &field);
                continue;
            }
            let text = item.text();
            match parse_port_list(&text) {
                Ok(r) => out.port_ranges.extend(r),
                Err(e) => {
                    self.err(
                        ctx,
                        &item,
                        &field,
                        &e.to_string(),
                        "`*`, a port 0-65535 or a range `A-B` with A ≤ B",
                    );
                    ok = false;
                }
            }
        }
        // Addresses.
        let single = node.prop(&format!("{side}AddressPrefix"));
        let plural = node.prop(&format!("{side}AddressPrefixes"));
        let asgs = node.prop(&format!("{side}ApplicationSecurityGroups"));
        if single.is_some() && plural.is_some() {
            self.err(
                ctx,
                plural.as_ref().unwrap_or(node),
                &format!("{side}AddressPrefixes"),
                &format!("both `{side}AddressPrefix` and `{side}AddressPrefixes` are filled"),
                "only one of the singular and plural forms",
            );
            ok = false;
        }
        if (single.is_some() || plural.is_some()) && asgs.is_some() {
            self.err(
                ctx,
                asgs.as_ref().unwrap_or(node),
                &format!("{side}ApplicationSecurityGroups"),
                "address prefixes and application security groups on one side",
                "either addresses or application security groups",
            );
            ok = false;
        }
        if let Some(s) = single.as_ref().or(plural.as_ref()) {
            let is_plural = single.is_none();
            let items = if s.value.is_array() {
                s.items()
            } else {
                vec![s.clone()]
            };
            let field = if is_plural {
                format!("{side}AddressPrefixes")
            } else {
                format!("{side}AddressPrefix")
            };
            for item in items {
                if let Some(t) = item.unresolved() {
                    self.unresolved(ctx, &item, &field);
                    out.address_prefixes
                        .push(AddressItem::Unresolvable(t.to_string()));
                    continue;
                }
                let text = item.text();
                match parse_address_item(&text, false) {
                    Ok((a, cleared)) => {
                        if cleared {
                            self.warn(
                                ctx,
                                &item,
                                &field,
                                "CIDR prefix has host bits set; they are cleared (NSG-3)",
                            );
                        }
                        if is_plural && matches!(a, AddressItem::ServiceTag(_)) {
                            if self.bad_address(
                                ctx,
                                &item,
                                &field,
                                "a service tag in a plural address field (NSG-2.4)",
                                &format!("IP addresses or CIDR prefixes; put a tag in `{side}AddressPrefix`"),
                            ) {
                                out.address_prefixes.push(AddressItem::Unresolvable(text));
                            } else {
                                ok = false;
                            }
                            continue;
                        }
                        out.address_prefixes.push(a);
                    }
                    Err(e) => {
                        if self.bad_address(
                            ctx,
                            &item,
                            &field,
                            &e.to_string(),
                            "an IP address, a CIDR prefix, `*` or a service tag",
                        ) {
                            out.address_prefixes.push(AddressItem::Unresolvable(text));
                        } else {
                            ok = false;
                        }
                    }
                }
            }
        } else if let Some(a) = asgs {
            for item in a.items() {
                match self.reference(ctx, &item, &format!("{side}ApplicationSecurityGroups")) {
                    Some(n) => out.application_security_groups.push(n),
                    None => ok = false,
                }
            }
        } else {
            self.missing(
                ctx,
                node,
                &format!("{side}AddressPrefix"),
                "an address, a CIDR prefix, `*`, a service tag, or application security groups",
            );
            ok = false;
        }
        ok.then_some(out)
    }

    /// A reference `{id: ".../type/name"}` or a plain name; returns the last name segment.
    fn reference(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Option<String> {
        let target = if node.value.is_object() {
            node.field("id")
        } else {
            Some(node.clone())
        };
        let Some(t) = target else {
            self.err(
                ctx,
                node,
                field,
                "reference without an `id`",
                "`{\"id\": \".../<type>/<name>\"}` or a name",
            );
            return None;
        };
        if t.unresolved().is_some() {
            self.unresolved(ctx, &t, field);
            return None;
        }
        match t.as_str().map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or(s)
                    .to_string(),
            ),
            None => {
                self.err(
                    ctx,
                    &t,
                    field,
                    "reference is not a string",
                    "a resource id or name",
                );
                None
            }
        }
    }

    /// A subnet reference: `.../virtualNetworks/<v>/subnets/<s>` or `<v>/<s>`.
    fn subnet_reference(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        field: &str,
    ) -> Option<(String, String)> {
        let t = if node.value.is_object() {
            node.field("id")?
        } else {
            node.clone()
        };
        if t.unresolved().is_some() {
            self.unresolved(ctx, &t, field);
            return None;
        }
        let s = t.as_str()?;
        let parts: Vec<&str> = s.trim_end_matches('/').split('/').collect();
        if let Some(i) = parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case("virtualNetworks"))
        {
            if parts.len() > i + 3 && parts[i + 2].eq_ignore_ascii_case("subnets") {
                return Some((parts[i + 1].to_string(), parts[i + 3].to_string()));
            }
        }
        if parts.len() == 2 {
            return Some((parts[0].to_string(), parts[1].to_string()));
        }
        self.err(
            ctx,
            &t,
            field,
            "not a subnet reference",
            "`.../virtualNetworks/<vnet>/subnets/<subnet>` or `<vnet>/<subnet>`",
        );
        None
    }

    fn palisade_settings(&mut self, ctx: &Ctx, node: &Node) -> PalisadeSettings {
        let mut s = PalisadeSettings::default();
        if let Some(p) = node.prop("palisade") {
            if let Some(m) = p.field("mode") {
                match m.as_str().map(|x| x.to_ascii_lowercase()) {
                    Some(x) if x == "audit" => s.mode = RuleMode::Audit,
                    Some(x) if x == "enforce" => s.mode = RuleMode::Enforce,
                    _ => self.err(
                        ctx,
                        &m,
                        "palisade.mode",
                        "unknown mode",
                        "`Enforce` or `Audit`",
                    ),
                }
            }
        }
        s
    }

    // -------------------------------------------------------------------------------- routes

    fn route_table(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: RT, name };
        let mut t = RouteTable {
            name: name.to_string(),
            location: node.field("location").map(|l| l.text()),
            disable_bgp_route_propagation: self.boolean(&ctx, node, "disableBgpRoutePropagation"),
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(routes) = node.prop("routes") {
            for r in routes.items() {
                if let Some(route) = self.route(&ctx, &r, None) {
                    t.routes.push(route);
                }
            }
        }
        self.add_route_table(t);
    }

    fn boolean(&mut self, ctx: &Ctx, node: &Node, field: &str) -> bool {
        match node.prop(field) {
            None => false,
            Some(v) => match v.value {
                serde_json::Value::Bool(b) => *b,
                serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => {
                    if v.unresolved().is_some() {
                        self.unresolved(ctx, &v, field);
                    } else {
                        self.err(ctx, &v, field, "not a boolean", "true or false");
                    }
                    false
                }
            },
        }
    }

    fn child_route(&mut self, node: &Node, at: ChildAt) {
        let full = at.full();
        let ctx = Ctx {
            ty: ROUTE,
            name: &full,
        };
        if let Some(route) = self.route(&ctx, node, Some(&at.child)) {
            self.pend(node, at, Child::Route(route));
        }
    }

    fn route(&mut self, parent: &Ctx, node: &Node, name: Option<&str>) -> Option<Route> {
        let name = name
            .map(str::to_string)
            .or_else(|| node.field("name").map(|n| n.text()))
            .unwrap_or_default();
        let full = format!("{}/{}", parent.name, name);
        let ctx = Ctx {
            ty: ROUTE,
            name: if parent.ty == ROUTE {
                parent.name
            } else {
                &full
            },
        };
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
                                self.warn(
                                    &ctx,
                                    &p,
                                    "addressPrefix",
                                    "CIDR prefix has host bits set; they are cleared",
                                );
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

    // ---------------------------------------------------------------------- virtual networks

    fn vnet(&mut self, node: &Node, name: &str) {
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
            for s in subnets.items() {
                let sname = s.field("name").map(|n| n.text()).unwrap_or_default();
                if let Some(sub) = self.subnet(name, &s, &sname) {
                    v.subnets.push(sub);
                }
            }
        }
        if let Some(peerings) = node.prop("virtualNetworkPeerings") {
            for p in peerings.items() {
                let pname = p.field("name").map(|n| n.text()).unwrap_or_default();
                v.virtual_network_peerings
                    .push(self.peering(name, &p, &pname));
            }
        }
        self.add_vnet(v);
    }

    fn prefix_list(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Vec<ipnet::IpNet> {
        let items = if node.value.is_array() {
            node.items()
        } else {
            vec![node.clone()]
        };
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
                        self.warn(
                            ctx,
                            &item,
                            field,
                            "CIDR prefix has host bits set; they are cleared",
                        );
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

    fn child_subnet(&mut self, node: &Node, at: ChildAt) {
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

    fn child_peering(&mut self, node: &Node, at: ChildAt) {
        let p = self.peering(&at.parent, node, &at.child);
        self.pend(node, at, Child::Peering(p));
    }

    // ------------------------------------------------------------------ NICs and public IPs

    fn nic(&mut self, node: &Node, name: &str) {
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
            for c in cfgs.items() {
                nic.ip_configurations.push(self.ip_configuration(&ctx, &c));
            }
        }
        self.add_plain(NIC, nic, |n| &mut n.network_interfaces);
    }

    fn ip_configuration(&mut self, ctx: &Ctx, c: &Node) -> IpConfiguration {
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

    fn public_ip(&mut self, node: &Node, name: &str) {
        let ip = node
            .prop("ipAddress")
            .and_then(|i| i.as_str().and_then(parse_ip));
        let origin = self.origin(node);
        let pip = PublicIpAddress {
            name: name.to_string(),
            ip_address: ip,
            origin,
        };
        self.add_plain(PIP, pip, |n| &mut n.public_ip_addresses);
    }

    // ------------------------------------------------------------------------------ firewall

    fn firewall(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: FW, name };
        let mut fw = AzureFirewall {
            name: name.to_string(),
            location: node.field("location").map(|l| l.text()),
            origin: self.origin(node),
            threat_intel_mode: node.prop("threatIntelMode").map(|t| t.text()),
            ..Default::default()
        };
        if let Some(cfgs) = node.prop("ipConfigurations") {
            for c in cfgs.items() {
                let cfg = self.ip_configuration(&ctx, &c);
                fw.private_ip_addresses.extend(cfg.private_ip_address);
                fw.subnets.extend(cfg.subnet);
                fw.public_ip_addresses.extend(cfg.public_ip_address);
            }
        }
        if let Some(p) = node.prop("firewallPolicy") {
            fw.firewall_policy = self.reference(&ctx, &p, "firewallPolicy");
        }
        if let Some(ap) = node.prop("additionalProperties") {
            if let Some(v) = ap.key("Network.SNAT.PrivateRanges") {
                fw.settings.snat_private_ranges = Some(
                    v.text()
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                );
            }
            if let Some(v) = ap.key("Network.DNS.EnableProxy") {
                fw.settings.dns_enable_proxy = Some(v.text().eq_ignore_ascii_case("true"));
            }
        }
        for (field, kind) in [
            ("natRuleCollections", RuleCollectionKind::Nat),
            ("networkRuleCollections", RuleCollectionKind::Network),
            (
                "applicationRuleCollections",
                RuleCollectionKind::Application,
            ),
        ] {
            if let Some(list) = node.prop(field) {
                for c in list.items() {
                    if let Some(col) = self.classic_collection(&ctx, &c, kind) {
                        fw.rule_collections.push(col);
                    }
                }
            }
        }
        if fw.firewall_policy.is_some() && !fw.rule_collections.is_empty() {
            let d = Diagnostic::error(
                "a firewall with both a policy reference and classic rule collections (FW-1)",
            )
            .at(&self.file, &node.pointer)
            .resource(FW, name)
            .field("firewallPolicy")
            .expected("either `firewallPolicy` or classic rule collections");
            self.push(d);
        }
        self.add_firewall(fw);
    }

    fn classic_collection(
        &mut self,
        fw: &Ctx,
        node: &Node,
        kind: RuleCollectionKind,
    ) -> Option<RuleCollection> {
        let name = node.field("name").map(|n| n.text()).unwrap_or_default();
        let full = format!("{}/{}", fw.name, name);
        let ctx = Ctx {
            ty: FW,
            name: &full,
        };
        let priority = self.integer(&ctx, node, "priority", true);
        let action = self.collection_action(&ctx, node, kind);
        let palisade = self.palisade_settings(&ctx, node);
        let mut rules = vec![];
        if let Some(list) = node.prop("rules") {
            for r in list.items() {
                if let Some(rule) = self.firewall_rule(&ctx, &r, kind) {
                    rules.push(rule);
                }
            }
        }
        // A missing priority is reported above and fails the import; the collection is kept so
        // that its rules are still checked and counted (FMT-12: report every problem).
        Some(RuleCollection {
            name,
            priority: priority.unwrap_or(0),
            kind,
            action: action?,
            rules,
            palisade,
            origin: self.origin(node),
        })
    }

    fn collection_action(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        kind: RuleCollectionKind,
    ) -> Option<FirewallAction> {
        let Some(a) = node.prop("action") else {
            if kind == RuleCollectionKind::Nat {
                return Some(FirewallAction::Dnat);
            }
            self.missing(
                ctx,
                node,
                "action",
                "`{\"type\": \"Allow\"}` or `{\"type\": \"Deny\"}`",
            );
            return None;
        };
        let t = a.field("type").unwrap_or(a.clone());
        if t.unresolved().is_some() {
            self.unresolved(ctx, &t, "action.type");
            return None;
        }
        match (kind, t.text().to_ascii_lowercase().as_str()) {
            (RuleCollectionKind::Nat, "dnat" | "snat") => Some(FirewallAction::Dnat),
            (RuleCollectionKind::Nat, _) => {
                self.err(ctx, &t, "action.type", "unknown NAT action", "`Dnat`");
                None
            }
            (_, "allow") => Some(FirewallAction::Allow),
            (_, "deny") => Some(FirewallAction::Deny),
            _ => {
                self.err(
                    ctx,
                    &t,
                    "action.type",
                    "unknown action",
                    "`Allow` or `Deny`",
                );
                None
            }
        }
    }

    fn firewall_rule(
        &mut self,
        col: &Ctx,
        node: &Node,
        kind: RuleCollectionKind,
    ) -> Option<FirewallRule> {
        let name = node.field("name").map(|n| n.text()).unwrap_or_default();
        let full = format!("{}/{}", col.name, name);
        let ctx = Ctx {
            ty: col.ty,
            name: &full,
        };
        let mut r = FirewallRule::named(name);
        r.origin = self.origin(node);
        r.description = node.prop("description").map(|d| d.text());
        r.palisade = self.palisade_settings(&ctx, node);
        let mut ok = true;
        r.source_addresses = self.address_list(&ctx, node, "sourceAddresses", &mut ok);
        r.source_ip_groups = self.ref_list(&ctx, node, "sourceIpGroups");
        r.destination_addresses = self.address_list(&ctx, node, "destinationAddresses", &mut ok);
        r.destination_ip_groups = self.ref_list(&ctx, node, "destinationIpGroups");
        r.destination_fqdns = self.string_list(&ctx, node, "destinationFqdns");
        if let Some(p) = node.prop("destinationPorts") {
            let items = if p.value.is_array() {
                p.items()
            } else {
                vec![p.clone()]
            };
            for item in items {
                if item.unresolved().is_some() {
                    self.unresolved(&ctx, &item, "destinationPorts");
                    continue;
                }
                match parse_port_list(&item.text()) {
                    Ok(list) => r.destination_ports.extend(list),
                    Err(e) => {
                        self.err(
                            &ctx,
                            &item,
                            "destinationPorts",
                            &e.to_string(),
                            "`*`, a port `N` or a range `A-B` within 0-65535",
                        );
                        ok = false;
                    }
                }
            }
        }
        match kind {
            RuleCollectionKind::Application => {
                if let Some(p) = node.prop("protocols") {
                    for item in p.items() {
                        match self.app_protocol(&ctx, &item) {
                            Some(x) => r.protocols.push(x),
                            None => ok = false,
                        }
                    }
                }
                r.target_fqdns = self.string_list(&ctx, node, "targetFqdns");
                r.fqdn_tags = self.string_list(&ctx, node, "fqdnTags");
                r.target_urls = self.string_list(&ctx, node, "targetUrls");
                r.web_categories = self.string_list(&ctx, node, "webCategories");
                r.terminate_tls = node
                    .prop("terminateTLS")
                    .and_then(|t| t.value.as_bool())
                    .unwrap_or(false);
            }
            RuleCollectionKind::Network | RuleCollectionKind::Nat => {
                let field = if node.prop("ipProtocols").is_some() {
                    "ipProtocols"
                } else {
                    "protocols"
                };
                if let Some(p) = node.prop(field) {
                    for item in p.items() {
                        let t = item.text().to_ascii_lowercase();
                        let proto = match t.as_str() {
                            "tcp" => Some(NetworkProtocol::Tcp),
                            "udp" => Some(NetworkProtocol::Udp),
                            "icmp" => Some(NetworkProtocol::Icmp),
                            "any" | "*" => Some(NetworkProtocol::Any),
                            _ => None,
                        };
                        match proto {
                            Some(x) => r.ip_protocols.push(x),
                            None => {
                                self.err(
                                    &ctx,
                                    &item,
                                    field,
                                    "unknown protocol",
                                    "TCP, UDP, ICMP or Any",
                                );
                                ok = false;
                            }
                        }
                    }
                }
                if kind == RuleCollectionKind::Nat {
                    if let Some(t) = node.prop("translatedAddress") {
                        if let Some(u) = t.unresolved() {
                            self.unresolved(&ctx, &t, "translatedAddress");
                            r.translated_address = Some(AddressItem::Unresolvable(u.to_string()));
                        } else {
                            match parse_address_item(&t.text(), false) {
                                Ok((a @ AddressItem::Prefix(_), _)) => {
                                    r.translated_address = Some(a)
                                }
                                _ => {
                                    self.err(
                                        &ctx,
                                        &t,
                                        "translatedAddress",
                                        "not an IP address",
                                        "an IP address",
                                    );
                                    ok = false;
                                }
                            }
                        }
                    }
                    r.translated_fqdn = node.prop("translatedFqdn").map(|t| t.text());
                    if let Some(p) = node.prop("translatedPort") {
                        match p.text().trim().parse::<u16>() {
                            Ok(n) => r.translated_port = Some(n),
                            Err(_) if p.unresolved().is_some() => {
                                self.unresolved(&ctx, &p, "translatedPort")
                            }
                            Err(_) => {
                                self.err(
                                    &ctx,
                                    &p,
                                    "translatedPort",
                                    "not a port",
                                    "a port 0-65535",
                                );
                                ok = false;
                            }
                        }
                    }
                }
            }
        }
        ok.then_some(r)
    }

    fn app_protocol(&mut self, ctx: &Ctx, node: &Node) -> Option<ApplicationProtocol> {
        let (ty, port) = if node.value.is_object() {
            (
                node.field("protocolType")
                    .map(|t| t.text())
                    .unwrap_or_default(),
                node.field("port").map(|p| p.text()),
            )
        } else {
            let t = node.text();
            match t.split_once(':') {
                Some((a, b)) => (a.to_string(), Some(b.to_string())),
                None => (t, None),
            }
        };
        let protocol_type = match ty.trim().to_ascii_lowercase().as_str() {
            "http" => ApplicationProtocolType::Http,
            "https" => ApplicationProtocolType::Https,
            "mssql" => ApplicationProtocolType::Mssql,
            _ => {
                self.err(
                    ctx,
                    node,
                    "protocols",
                    "unknown application protocol",
                    "Http, Https or Mssql with a port, e.g. `Https:443`",
                );
                return None;
            }
        };
        let port = match port {
            Some(p) => match p.trim().parse::<u16>() {
                Ok(n) if n <= 64000 => n,
                _ => {
                    self.err(
                        ctx,
                        node,
                        "protocols.port",
                        "application rule port outside 0-64000 (FW-6.1)",
                        "a port 0-64000",
                    );
                    return None;
                }
            },
            None => match protocol_type {
                ApplicationProtocolType::Http => 80,
                ApplicationProtocolType::Https => 443,
                ApplicationProtocolType::Mssql => 1433,
            },
        };
        Some(ApplicationProtocol {
            protocol_type,
            port,
        })
    }

    fn string_list(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Vec<String> {
        let Some(v) = node.prop(field) else {
            return vec![];
        };
        let items = if v.value.is_array() {
            v.items()
        } else {
            vec![v.clone()]
        };
        let mut out = vec![];
        for i in items {
            if i.unresolved().is_some() {
                self.unresolved(ctx, &i, field);
            } else if !i.is_absent() {
                out.push(i.text().trim().to_string());
            }
        }
        out
    }

    fn ref_list(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Vec<String> {
        let Some(v) = node.prop(field) else {
            return vec![];
        };
        let items = if v.value.is_array() {
            v.items()
        } else {
            vec![v.clone()]
        };
        items
            .iter()
            .filter_map(|i| self.reference(ctx, i, field))
            .collect()
    }

    fn address_list(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        field: &str,
        ok: &mut bool,
    ) -> Vec<AddressItem> {
        let Some(v) = node.prop(field) else {
            return vec![];
        };
        let items = if v.value.is_array() {
            v.items()
        } else {
            vec![v.clone()]
        };
        let mut out = vec![];
        for item in items {
            if let Some(t) = item.unresolved() {
                self.unresolved(ctx, &item, field);
                out.push(AddressItem::Unresolvable(t.to_string()));
                continue;
            }
            if item.is_absent() {
                continue;
            }
            match parse_address_item(&item.text(), true) {
                Ok((a, cleared)) => {
                    if cleared {
                        self.warn(
                            ctx,
                            &item,
                            field,
                            "CIDR prefix has host bits set; they are cleared",
                        );
                    }
                    out.push(a);
                }
                Err(e) => {
                    if self.bad_address(
                        ctx,
                        &item,
                        field,
                        &e.to_string(),
                        "an IP address, CIDR, range `a-b`, `*` or a service tag",
                    ) {
                        out.push(AddressItem::Unresolvable(item.text()));
                    } else {
                        *ok = false;
                    }
                }
            }
        }
        out
    }

    /// An address item that is not an address (NSG-3: `"789"`, a tag in a plural field;
    /// placeholders such as `xx.xx.xx.xx/yy` in samples). Strict: an error. Lenient: a warning,
    /// and the caller keeps the item as `unresolvable`, which matches nothing (NSG-3, CAT).
    /// Returns whether the item is kept.
    fn bad_address(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        field: &str,
        msg: &str,
        expected: &str,
    ) -> bool {
        if self.strict {
            self.err(ctx, node, field, msg, expected);
            return false;
        }
        let d = Diagnostic::warning(format!(
            "{msg}; kept as unresolvable: it matches nothing, and the rule cannot be enforced (NSG-3)"
        ))
        .at(&self.file, &node.pointer)
        .resource(ctx.ty, ctx.name)
        .field(field)
        .found(node.text())
        .expected(expected);
        self.push(d);
        true
    }

    fn policy(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: POLICY, name };
        let mut p = FirewallPolicy {
            name: name.to_string(),
            location: node.field("location").map(|l| l.text()),
            threat_intel_mode: node.prop("threatIntelMode").map(|t| t.text()),
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(b) = node.prop("basePolicy") {
            p.base_policy = self.reference(&ctx, &b, "basePolicy");
        }
        if let Some(s) = node.prop("snat") {
            if let Some(r) = s.field("privateRanges") {
                p.settings.snat_private_ranges = Some(r.items().iter().map(Node::text).collect());
            }
        }
        if let Some(d) = node.prop("dnsSettings") {
            p.settings.dns_enable_proxy = d.field("enableProxy").and_then(|e| e.value.as_bool());
            p.settings.dns_servers = d
                .field("servers")
                .map(|s| s.items().iter().map(Node::text).collect())
                .unwrap_or_default();
        }
        if let Some(groups) = node.prop("ruleCollectionGroups") {
            // REST responses list child ids here; groups with properties are inline definitions.
            for g in groups.items() {
                if g.key("properties")
                    .and_then(|pp| pp.key("ruleCollections"))
                    .is_some()
                {
                    let gname = g.field("name").map(|n| n.text()).unwrap_or_default();
                    if let Some(rcg) = self.rcg(&ctx, &g, &gname) {
                        p.rule_collection_groups.push(rcg);
                    }
                }
            }
        }
        self.add_policy(p);
    }

    fn child_rcg(&mut self, node: &Node, at: ChildAt) {
        let full = at.full();
        let ctx = Ctx {
            ty: RCG,
            name: &full,
        };
        if let Some(rcg) = self.rcg(&ctx, node, &at.child) {
            self.pend(node, at, Child::Group(rcg));
        }
    }

    fn rcg(&mut self, parent: &Ctx, node: &Node, name: &str) -> Option<RuleCollectionGroup> {
        let full = if parent.ty == RCG {
            parent.name.to_string()
        } else {
            format!("{}/{}", parent.name, name)
        };
        let ctx = Ctx {
            ty: RCG,
            name: &full,
        };
        let priority = self.integer(&ctx, node, "priority", true);
        let mut g = RuleCollectionGroup {
            name: name.to_string(),
            priority: 0,
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(cols) = node.prop("ruleCollections") {
            for c in cols.items() {
                if let Some(col) = self.policy_collection(&ctx, &c) {
                    g.rule_collections.push(col);
                }
            }
        }
        // As for collections: a missing priority is reported; the group is kept.
        g.priority = priority.unwrap_or(0);
        Some(g)
    }

    fn policy_collection(&mut self, group: &Ctx, node: &Node) -> Option<RuleCollection> {
        let name = node.field("name").map(|n| n.text()).unwrap_or_default();
        let full = format!("{}/{}", group.name, name);
        let ctx = Ctx {
            ty: RCG,
            name: &full,
        };
        let ty = node
            .field("ruleCollectionType")
            .map(|t| t.text().to_ascii_lowercase())
            .unwrap_or_default();
        let rules_node = node.field("rules");
        // The collection kind comes from its type (NAT) or from its rules' `ruleType`.
        let rule_kind = |r: &Node| -> Option<RuleCollectionKind> {
            match r.field("ruleType")?.text().to_ascii_lowercase().as_str() {
                "natrule" => Some(RuleCollectionKind::Nat),
                "networkrule" => Some(RuleCollectionKind::Network),
                "applicationrule" => Some(RuleCollectionKind::Application),
                _ => None,
            }
        };
        let rules: Vec<Node> = rules_node.map(|r| r.items()).unwrap_or_default();
        let kind = if ty.contains("nat") {
            RuleCollectionKind::Nat
        } else {
            match rules.iter().find_map(rule_kind) {
                Some(k) => k,
                None if rules.is_empty() => RuleCollectionKind::Network,
                None => {
                    self.err(
                        &ctx,
                        node,
                        "rules",
                        "cannot tell the rule type",
                        "rules with `ruleType` NetworkRule, ApplicationRule or NatRule",
                    );
                    return None;
                }
            }
        };
        let priority = self.integer(&ctx, node, "priority", true);
        let action = self.collection_action(&ctx, node, kind);
        let palisade = self.palisade_settings(&ctx, node);
        let mut out = vec![];
        for r in &rules {
            if let Some(k) = rule_kind(r) {
                if k != kind {
                    self.err(
                        &ctx,
                        r,
                        "ruleType",
                        "rule type differs from the collection's (FW-1)",
                        &format!("{kind:?}Rule"),
                    );
                    continue;
                }
            }
            if let Some(rule) = self.firewall_rule(&ctx, r, kind) {
                out.push(rule);
            }
        }
        // A missing priority is reported above and fails the import; the collection is kept so
        // that its rules are still checked and counted (FMT-12: report every problem).
        Some(RuleCollection {
            name,
            priority: priority.unwrap_or(0),
            kind,
            action: action?,
            rules: out,
            palisade,
            origin: self.origin(node),
        })
    }

    /// A firewall-policy rule collection on its own, as Microsoft's rule samples are published
    /// (meant to be pasted into a group's `ruleCollections`): held in an unnamed group of an
    /// unnamed policy, so its rules can be checked and evaluated.
    fn lone_collection(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: RCG, name: "" };
        let d = Diagnostic::note(
            "a rule collection on its own (a snippet for a rule collection group); it is held in an unnamed group of an unnamed policy",
        )
        .at(&self.file, &node.pointer)
        .resource(RCG, name);
        self.push(d);
        let Some(col) = self.policy_collection(&ctx, node) else {
            return;
        };
        let group = RuleCollectionGroup {
            name: String::new(),
            priority: 0,
            rule_collections: vec![col],
            origin: self.origin(node),
        };
        let at = ChildAt {
            parent: String::new(),
            child: String::new(),
            parent_required: false,
        };
        self.pend(node, at, Child::Group(group));
    }

    fn ip_group(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: IPG, name };
        let mut ok = true;
        let ips = self.address_list(&ctx, node, "ipAddresses", &mut ok);
        let origin = self.origin(node);
        let group = IpGroup {
            name: name.to_string(),
            ip_addresses: ips,
            origin,
        };
        self.add_plain(IPG, group, |n| &mut n.ip_groups);
    }
}

/// Resources that can be a synthetic parent.
pub trait Named {
    fn name(&self) -> &str;
    fn set_name(&mut self, name: &str, origin: Origin);
    fn origin(&self) -> &Origin;
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn name(&self) -> &str { &self.name }
            fn set_name(&mut self, name: &str, origin: Origin) { self.name = name.to_string(); self.origin = origin; }
            fn origin(&self) -> &Origin { &self.origin }
        }
    )*};
}
named!(
    NetworkSecurityGroup,
    RouteTable,
    VirtualNetwork,
    FirewallPolicy
);

/// `parent/child` → (`parent`, `child`); a name without a slash is its own child.
fn split_child(full: &str) -> (&str, &str) {
    match full.rsplit_once('/') {
        Some((p, c)) => (p.rsplit('/').next().unwrap_or(p), c),
        None => ("", full),
    }
}

/// The resource type an id names (`.../providers/Microsoft.Network/networkSecurityGroups/x/securityRules/y`).
fn type_from_id(node: &Node) -> Option<String> {
    let id = node.field("id")?.as_str()?.to_string();
    let lower = id.to_ascii_lowercase();
    let i = lower.rfind("/providers/")?;
    let rest: Vec<&str> = id[i + "/providers/".len()..].split('/').collect();
    if rest.len() < 3 {
        return None;
    }
    let mut ty = format!("{}/{}", rest[0], rest[1]);
    let mut j = 3;
    while j + 1 < rest.len() {
        ty.push('/');
        ty.push_str(rest[j]);
        j += 2;
    }
    Some(ty)
}

/// For an id-named resource of a child type, `parent/child`; else the last segment.
fn id_name_path(id: &str, ty: &str) -> String {
    let segs: Vec<&str> = id.trim_end_matches('/').split('/').collect();
    let depth = ty.matches('/').count();
    if depth >= 2 && segs.len() >= 3 {
        format!("{}/{}", segs[segs.len() - 3], segs[segs.len() - 1])
    } else {
        segs.last().copied().unwrap_or_default().to_string()
    }
}

/// A resource without `type` or `id` (CLI output, bare REST bodies): guess from its fields.
fn type_from_shape(node: &Node) -> Option<String> {
    let has = |k: &str| node.prop(k).is_some();
    let t = if has("securityRules") || has("defaultSecurityRules") {
        NSG
    } else if has("access") && has("direction") {
        RULE
    } else if has("routes") && !has("addressSpace") {
        RT
    } else if has("nextHopType") && has("addressPrefix") {
        ROUTE
    } else if has("addressSpace") {
        VNET
    } else if has("ipConfigurations")
        && (has("applicationRuleCollections")
            || has("networkRuleCollections")
            || has("natRuleCollections")
            || has("firewallPolicy"))
    {
        FW
    } else if has("ipConfigurations") {
        NIC
    } else if has("ruleCollections") {
        RCG
    } else if has("ruleCollectionType") && has("rules") {
        LONE_COLLECTION
    } else if has("ipAddresses") {
        IPG
    } else {
        return None;
    };
    Some(t.to_string())
}

/// What an observation output holds (FMT-10).
#[derive(Default)]
struct Observed {
    rules: usize,
    default_rules: usize,
    routes: usize,
}

/// `{value: [...]}` of effective rules (per NSG association) or effective routes (FMT-10).
fn effective_list(list: &Node) -> Option<Observed> {
    let items = list.items();
    let first = items.first()?;
    let rules = |i: &Node| i.field("effectiveSecurityRules").map(|r| r.items().len());
    if rules(first).is_some()
        || first.field("networkSecurityGroup").is_some() && first.field("association").is_some()
    {
        return Some(Observed {
            rules: items.iter().filter_map(rules).sum(),
            ..Observed::default()
        });
    }
    if first.field("nextHopType").is_some()
        && first.field("state").is_some()
        && first.field("source").is_some()
    {
        return Some(Observed {
            routes: items.len(),
            ..Observed::default()
        });
    }
    None
}

/// Network Watcher's security group view (`networkInterfaces[].securityRuleAssociations`): the
/// rules that apply to each NIC, an observation like effective rules (FMT-10).
fn security_group_view(node: &Node) -> Option<Observed> {
    let nics = node.field("networkInterfaces")?.items();
    let assoc: Vec<Node> = nics
        .iter()
        .filter_map(|n| n.field("securityRuleAssociations"))
        .collect();
    if assoc.is_empty() {
        return None;
    }
    let len = |n: Option<Node>| n.map(|x| x.items().len()).unwrap_or(0);
    let mut o = Observed::default();
    for a in &assoc {
        for side in ["subnetAssociation", "networkInterfaceAssociation"] {
            o.rules += len(a.field(side).and_then(|s| s.field("securityRules")));
        }
        o.rules += len(a.field("effectiveSecurityRules"));
        o.default_rules += len(a.field("defaultSecurityRules"));
    }
    Some(o)
}
