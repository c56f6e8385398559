//! Merging (FMT-6): children declared on their own join their parents, a resource declared
//! again joins its earlier declaration, subnet associations apply last, and the networks of
//! several files become one.
//!
//! [`Declared`] says, once per resource type, how two declarations of one resource combine: the
//! children of both join by name ([`join_children`]). Who wins differs by where the declarations
//! meet. In one file the later declaration is an update (a nested deployment re-deploying the
//! resource): its settings and its same-named children win ([`Reader::declare`]). Across files
//! a second real declaration is a conflicting copy and is ignored; only a synthetic parent (made
//! to hold separately declared children) joins the real resource, and the separate children win
//! ([`Merger`]).

use super::node::Node;
use super::reader::{
    id_name_path, Ctx, Read, Reader, ASG, FW, IPG, NIC, NSG, PIP, POLICY, RT, VNET,
};
use super::Synthetic;
use crate::diag::{Diagnostic, Diagnostics};
use crate::resources::*;

/// An NSG or route table attached to a subnet from outside the subnet's definition.
pub struct Association {
    pub virtual_network: String,
    pub subnet: String,
    pub network_security_group: Option<String>,
    pub route_table: Option<String>,
    pub origin: Origin,
}

/// Where a separately declared child belongs.
pub(super) struct ChildAt {
    pub(super) parent: String,
    pub(super) child: String,
    /// A missing parent is an error (templates, FMT-6).
    pub(super) parent_required: bool,
}

impl ChildAt {
    pub(super) fn full(&self) -> String {
        format!("{}/{}", self.parent, self.child)
    }
}

/// A child resource declared on its own (`parent/child`, FMT-6).
pub(super) struct Pending {
    parent: String,
    child: Child,
    /// A missing parent is an error (templates) rather than expected (a REST body of one rule).
    parent_required: bool,
    origin: Origin,
}

pub(super) enum Child {
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

/// A child resource: its name, and the rules and routes it holds (for
/// [`SetAside::superseded`](super::SetAside::superseded)).
trait ChildResource {
    fn name(&self) -> &str;
    fn counted(&self) -> Counts;
}
macro_rules! child_resource {
    ($t:ty, |$child:pat_param| $counted:expr) => {
        impl ChildResource for $t {
            fn name(&self) -> &str {
                &self.name
            }
            fn counted(&self) -> Counts {
                let $child = self;
                $counted
            }
        }
    };
}

child_resource!(SecurityRule, |_| Counts {
    security_rules: 1,
    ..Counts::default()
});
child_resource!(Route, |_| Counts {
    routes: 1,
    ..Counts::default()
});
child_resource!(Subnet, |_| Counts::default());
child_resource!(VirtualNetworkPeering, |_| Counts::default());
child_resource!(RuleCollectionGroup, |group| Counts {
    firewall_rules: firewall_rules(&group.rule_collections),
    ..Counts::default()
});

fn firewall_rules(collections: &[RuleCollection]) -> usize {
    collections.iter().map(|c| c.rules.len()).sum()
}

fn add(a: Counts, b: Counts) -> Counts {
    Counts {
        security_rules: a.security_rules + b.security_rules,
        routes: a.routes + b.routes,
        firewall_rules: a.firewall_rules + b.firewall_rules,
    }
}

/// Children defined in both of two declarations.
#[derive(Default)]
pub(super) struct Clashes {
    /// Their names, as the joining declaration writes them.
    names: Vec<String>,
    /// The rules and routes of the definitions that lost.
    superseded: Counts,
}

impl Clashes {
    fn and(mut self, other: Clashes) -> Clashes {
        self.names.extend(other.names);
        self.superseded = add(self.superseded, other.superseded);
        self
    }
}

/// The one merge of child lists (FMT-6): `from`'s children join `into` by name
/// (case-insensitive); a child of a new name is appended, and on a clash `from`'s child replaces
/// the one in `into` when `from_wins`, else it is dropped.
fn join_children<T: ChildResource>(into: &mut Vec<T>, from: Vec<T>, from_wins: bool) -> Clashes {
    let mut clashes = Clashes::default();
    for c in from {
        match into
            .iter()
            .position(|x| x.name().eq_ignore_ascii_case(c.name()))
        {
            Some(i) => {
                clashes.names.push(c.name().to_string());
                let lost = if from_wins {
                    std::mem::replace(&mut into[i], c)
                } else {
                    c
                };
                clashes.superseded = add(clashes.superseded, lost.counted());
            }
            None => into.push(c),
        }
    }
    clashes
}

/// A top-level resource, which the input may declare more than once.
pub(super) trait Declared: Sized {
    /// Its resource type, for messages; also tells synthetic parents of different types apart.
    const TYPE: &'static str;
    fn name(&self) -> &str;
    fn origin(&self) -> &Origin;
    /// Name a synthetic parent after the children it holds.
    fn set_name(&mut self, name: &str, origin: Origin);
    /// The network's resources of this type.
    fn list(network: &mut Network) -> &mut Vec<Self>;
    /// Join `other`'s children into this declaration's ([`join_children`]), leaving `other`
    /// without children. A resource without children has nothing to join.
    fn join(&mut self, _other: &mut Self, _other_wins: bool) -> Clashes {
        Clashes::default()
    }
}

/// A resource that holds children, so may be created as a synthetic parent for them.
trait Parent: Declared + Default {
    /// The real declaration `other` replaces a synthetic parent: its settings apply, and this
    /// parent's (already joined) children stay.
    fn take_settings(&mut self, other: Self);
}

/// Position of the resource named `name` (case-insensitive).
fn find<T: Declared>(list: &[T], name: &str) -> Option<usize> {
    list.iter()
        .position(|x| x.name().eq_ignore_ascii_case(name))
}

macro_rules! declared {
    ($t:ty, $type:expr, $list:ident $(, { $($method:tt)* })?) => {
        impl Declared for $t {
            const TYPE: &'static str = $type;
            fn name(&self) -> &str {
                &self.name
            }
            fn origin(&self) -> &Origin {
                &self.origin
            }
            fn set_name(&mut self, name: &str, origin: Origin) {
                (self.name, self.origin) = (name.to_string(), origin);
            }
            fn list(network: &mut Network) -> &mut Vec<Self> {
                &mut network.$list
            }
            $($($method)*)?
        }
    };
}

declared!(NetworkSecurityGroup, NSG, network_security_groups, {
    fn join(&mut self, other: &mut Self, other_wins: bool) -> Clashes {
        let rules = std::mem::take(&mut other.security_rules);
        join_children(&mut self.security_rules, rules, other_wins)
    }
});
declared!(RouteTable, RT, route_tables, {
    fn join(&mut self, other: &mut Self, other_wins: bool) -> Clashes {
        join_children(
            &mut self.routes,
            std::mem::take(&mut other.routes),
            other_wins,
        )
    }
});
declared!(VirtualNetwork, VNET, virtual_networks, {
    fn join(&mut self, other: &mut Self, other_wins: bool) -> Clashes {
        let subnets = std::mem::take(&mut other.subnets);
        let peerings = std::mem::take(&mut other.virtual_network_peerings);
        join_children(&mut self.subnets, subnets, other_wins).and(join_children(
            &mut self.virtual_network_peerings,
            peerings,
            other_wins,
        ))
    }
});
declared!(FirewallPolicy, POLICY, firewall_policies, {
    fn join(&mut self, other: &mut Self, other_wins: bool) -> Clashes {
        let groups = std::mem::take(&mut other.rule_collection_groups);
        join_children(&mut self.rule_collection_groups, groups, other_wins)
    }
});
declared!(AzureFirewall, FW, azure_firewalls, {
    /// Classic collections are one property, not children: the winning declaration's replace
    /// the other's whole.
    fn join(&mut self, other: &mut Self, other_wins: bool) -> Clashes {
        if other_wins {
            std::mem::swap(&mut self.rule_collections, &mut other.rule_collections);
        }
        let lost = std::mem::take(&mut other.rule_collections);
        Clashes {
            names: vec![],
            superseded: Counts {
                firewall_rules: firewall_rules(&lost),
                ..Counts::default()
            },
        }
    }
});
declared!(NetworkInterface, NIC, network_interfaces);
declared!(ApplicationSecurityGroup, ASG, application_security_groups);
declared!(PublicIpAddress, PIP, public_ip_addresses);
declared!(IpGroup, IPG, ip_groups);

impl Parent for NetworkSecurityGroup {
    fn take_settings(&mut self, other: Self) {
        self.origin = other.origin;
        self.location = other.location;
        self.flush_connection = other.flush_connection;
    }
}
impl Parent for RouteTable {
    fn take_settings(&mut self, other: Self) {
        self.origin = other.origin;
        self.location = other.location;
        self.disable_bgp_route_propagation = other.disable_bgp_route_propagation;
    }
}
impl Parent for VirtualNetwork {
    fn take_settings(&mut self, other: Self) {
        self.origin = other.origin;
        self.location = other.location;
        self.address_space = other.address_space;
    }
}
impl Parent for FirewallPolicy {
    /// Unlike the others, the policy takes the real declaration's name too.
    fn take_settings(&mut self, other: Self) {
        let groups = std::mem::take(&mut self.rule_collection_groups);
        *self = other;
        self.rule_collection_groups = groups;
    }
}

impl Reader {
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
            skipped_types: self.skipped_types,
            dropped: self.dropped,
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
        let (parent_at, required) = ((parent.as_str(), &origin), parent_required);
        let clashes = match child {
            Child::Rule(r) => self.adopt(parent_at, required, r, |n: &mut NetworkSecurityGroup| {
                &mut n.security_rules
            }),
            Child::Route(r) => {
                self.adopt(parent_at, required, r, |t: &mut RouteTable| &mut t.routes)
            }
            Child::Subnet(s) => self.adopt(parent_at, required, s, |v: &mut VirtualNetwork| {
                &mut v.subnets
            }),
            Child::Peering(x) => self.adopt(parent_at, required, x, |v: &mut VirtualNetwork| {
                &mut v.virtual_network_peerings
            }),
            Child::Group(g) => self.adopt(parent_at, required, g, |p: &mut FirewallPolicy| {
                &mut p.rule_collection_groups
            }),
        };
        if clashes.names.is_empty() {
            return;
        }
        self.set_aside.superseded = add(self.set_aside.superseded, clashes.superseded);
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

    /// Put a separately declared child into its parent's list (`children`), where it replaces
    /// a same-named one.
    fn adopt<P: Parent, C: ChildResource>(
        &mut self,
        (parent, origin): (&str, &Origin),
        parent_required: bool,
        child: C,
        children: impl FnOnce(&mut P) -> &mut Vec<C>,
    ) -> Clashes {
        let i = self.parent_index::<P>(parent, origin, parent_required);
        let p = &mut P::list(&mut self.network)[i];
        join_children(children(p), vec![child], true)
    }

    /// Find or create (synthetic) the parent of a child resource.
    fn parent_index<T: Parent>(
        &mut self,
        parent: &str,
        origin: &Origin,
        from_template: bool,
    ) -> usize {
        let origin = origin.clone();
        let l = T::list(&mut self.network);
        if let Some(i) = find(l, parent) {
            return i;
        }
        let mut t = T::default();
        t.set_name(parent, origin.clone());
        l.push(t);
        let i = l.len() - 1;
        self.synthetic.push(Synthetic {
            kind: T::TYPE,
            name: parent.to_string(),
            from_template,
            origin,
            position: None,
        });
        i
    }

    /// Add a resource. One declared again in the same file (typically re-deployed by a nested
    /// deployment to update it) takes the later declaration's settings, and the earlier one's
    /// children join it, the later's same-named children winning.
    pub(super) fn declare<T: Declared>(&mut self, item: T) {
        let l = T::list(&mut self.network);
        let Some(i) = find(l, item.name()) else {
            l.push(item);
            return;
        };
        let mut old = std::mem::replace(&mut l[i], item);
        let gone = l[i].join(&mut old, false).superseded;
        let (name, again) = (l[i].name().to_string(), l[i].origin().clone());
        self.redeclared(T::TYPE, &name, old.origin(), &again, gone);
    }

    /// Report a resource declared twice in one input and count what the later one replaced.
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

    /// Where a separately declared child belongs: its parent's and its own name (FMT-6).
    pub(super) fn child_at(
        &mut self,
        node: &Node,
        ty: &str,
        name: &str,
        from_template: bool,
    ) -> ChildAt {
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
            let d = Diagnostic::new(
                self.unresolved_severity(),
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

    /// A child declared on its own: `read` reads it in the context of its full name
    /// (`parent/child`), and it waits for its parent until [`Reader::finish`].
    pub(super) fn pend_child<C>(
        &mut self,
        node: &Node,
        at: ChildAt,
        ty: &str,
        read: impl FnOnce(&mut Reader, &Ctx, &str) -> Option<C>,
        child: impl FnOnce(C) -> Child,
    ) {
        let full = at.full();
        let ctx = Ctx { ty, name: &full };
        match read(self, &ctx, &at.child) {
            Some(c) => self.pend(node, at, child(c)),
            None => self.drop_in_error(ty, full, node),
        }
    }

    pub(super) fn pend(&mut self, node: &Node, at: ChildAt, child: Child) {
        let origin = self.origin(node);
        self.pending.push(Pending {
            parent: at.parent,
            child,
            parent_required: at.parent_required,
            origin,
        });
    }
}

/// `parent/child` → (`parent`, `child`); a name without a slash is its own child.
fn split_child(full: &str) -> (&str, &str) {
    match full.rsplit_once('/') {
        Some((p, c)) => (p.rsplit('/').next().unwrap_or(p), c),
        None => ("", full),
    }
}

/// Merges per-file networks into one; children held in synthetic parents join the real parent.
#[derive(Default)]
pub(super) struct Merger {
    network: Network,
    synthetic: Vec<Synthetic>,
}

impl Merger {
    /// Merge one file's network.
    pub(super) fn add(&mut self, net: Network, synthetic: Vec<Synthetic>, diags: &mut Diagnostics) {
        // Synthetic parents of this file that joined a real resource already merged.
        let mut resolved: Vec<(&'static str, String)> = vec![];
        let incoming = synthetic.as_slice();
        self.parents(net.network_security_groups, incoming, &mut resolved, diags);
        self.parents(net.route_tables, incoming, &mut resolved, diags);
        self.parents(net.virtual_networks, incoming, &mut resolved, diags);
        self.parents(net.firewall_policies, incoming, &mut resolved, diags);
        self.plain(net.network_interfaces, diags);
        self.plain(net.application_security_groups, diags);
        self.plain(net.public_ip_addresses, diags);
        self.plain(net.azure_firewalls, diags);
        self.plain(net.ip_groups, diags);
        self.network.unknowns.extend(net.unknowns);
        let known = &mut self.synthetic;
        for s in synthetic {
            let resolved = resolved
                .iter()
                .any(|(k, n)| *k == s.kind && n.eq_ignore_ascii_case(&s.name));
            if !resolved
                && !known
                    .iter()
                    .any(|x| x.kind == s.kind && x.name.eq_ignore_ascii_case(&s.name))
            {
                known.push(s);
            }
        }
    }

    /// The parents of one type from one file; `incoming` are the file's synthetic parents.
    fn parents<T: Parent>(
        &mut self,
        items: Vec<T>,
        incoming: &[Synthetic],
        resolved: &mut Vec<(&'static str, String)>,
        diags: &mut Diagnostics,
    ) {
        for item in items {
            let synthetic = incoming
                .iter()
                .any(|s| s.kind == T::TYPE && s.name.eq_ignore_ascii_case(item.name()));
            let name = item.name().to_string();
            if self.merge(item, synthetic, diags) {
                resolved.push((T::TYPE, name));
            }
        }
    }

    /// Merge one parent: a synthetic parent (made to hold a child) and the real resource of its
    /// name join, the separately declared children winning; of two real resources of one name
    /// the first is kept, with a warning. Returns whether the incoming synthetic parent joined a
    /// real resource.
    fn merge<T: Parent>(
        &mut self,
        mut item: T,
        incoming_synthetic: bool,
        diags: &mut Diagnostics,
    ) -> bool {
        let Merger {
            network,
            synthetic: known,
        } = self;
        let name = item.name().to_string();
        let origin = item.origin().clone();
        let existing_synthetic = known
            .iter()
            .any(|s| s.kind == T::TYPE && s.name.eq_ignore_ascii_case(&name));
        let list = T::list(network);
        match find(list, &name) {
            Some(i) if incoming_synthetic || existing_synthetic => {
                let e = &mut list[i];
                let clashes = e.join(&mut item, incoming_synthetic);
                if !incoming_synthetic {
                    e.take_settings(item);
                    known.retain(|s| !(s.kind == T::TYPE && s.name.eq_ignore_ascii_case(&name)));
                }
                for child in clashes.names {
                    diags.push(
                        Diagnostic::warning(format!(
                            "child '{child}' is defined both inline in its parent and as a separate resource; the separate resource is used (FMT-6)"
                        ))
                        .at(&origin.file, &origin.pointer)
                        .resource(T::TYPE, &name),
                    );
                }
                incoming_synthetic && !existing_synthetic
            }
            Some(_) => {
                diags.push(duplicate(T::TYPE, &name, &origin));
                false
            }
            None => {
                list.push(item);
                false
            }
        }
    }

    /// Resources of one type that hold no children: the first of a name is kept.
    fn plain<T: Declared>(&mut self, items: Vec<T>, diags: &mut Diagnostics) {
        for r in items {
            let list = T::list(&mut self.network);
            if find(list, r.name()).is_some() {
                diags.push(duplicate(T::TYPE, r.name(), r.origin()));
            } else {
                list.push(r);
            }
        }
    }

    pub(super) fn finish(mut self, diags: &mut Diagnostics) -> Network {
        // A child whose parent never appeared: an error for templates (FMT-6); REST bodies of a
        // lone rule or route legitimately come without their parent.
        for s in std::mem::take(&mut self.synthetic) {
            if s.from_template {
                let mut d = Diagnostic::error(format!(
                    "child resource names parent '{}', which is not defined in the input",
                    s.name
                ))
                .at(&s.origin.file, &s.origin.pointer)
                .field("name")
                .expected("the parent resource in the same template or input folder");
                if let Some((line, column)) = s.position {
                    d.line = Some(line);
                    d.column = Some(column);
                }
                diags.push(d);
            }
        }
        self.network
    }
}

fn duplicate(ty: &str, name: &str, origin: &Origin) -> Diagnostic {
    Diagnostic::warning(
        "a resource of this type and name was already imported from another file; this one is ignored",
    )
    .at(&origin.file, &origin.pointer)
    .resource(ty, name)
}
