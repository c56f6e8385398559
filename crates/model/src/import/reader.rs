//! Reading resources into the model (FMT-6…FMT-9): the [`Reader`], which detects each
//! resource's type and hands it to the reader of its kind (`nsg.rs`, `routes.rs`, `vnet.rs`,
//! `firewall.rs`), the located diagnostics they report, and the field readers they share.

use super::merge::{Association, ChildAt, Pending};
use super::node::Node;
use super::{SetAside, Synthetic};
use crate::address::{parse_address_item, AddressItem};
use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::resources::*;

pub struct Reader {
    /// The file being read: the root document, or the linked template a resource came from.
    pub(super) file: String,
    pub(super) strict: bool,
    pub network: Network,
    pub diagnostics: Diagnostics,
    /// Effective-rule/route lists seen (FMT-10).
    pub observations: usize,
    pub(super) set_aside: SetAside,
    pub(super) synthetic: Vec<Synthetic>,
    /// Child resources declared on their own, attached to their parents in [`Reader::finish`]
    /// (the parent may come later in the file).
    pub(super) pending: Vec<Pending>,
    /// (child kind, parent, child) of children already attached as separate resources.
    pub(super) separate: std::collections::HashSet<(&'static str, String, String)>,
    /// Subnet associations declared apart from the subnet (building blocks), applied last.
    pub(super) associations: Vec<Association>,
    /// Resource types read but not modelled, in order of appearance, for messages.
    pub(super) skipped_types: Vec<String>,
    /// Rules, routes, collections and subnets left out because they are in error.
    pub(super) dropped: Vec<super::Dropped>,
}

/// What a [`Reader`] produced.
pub struct Read {
    pub network: Network,
    pub diagnostics: Diagnostics,
    pub synthetic: Vec<Synthetic>,
    pub set_aside: SetAside,
    pub skipped_types: Vec<String>,
    pub dropped: Vec<super::Dropped>,
}

/// The resource a field belongs to, for messages.
pub(super) struct Ctx<'r> {
    pub(super) ty: &'r str,
    pub(super) name: &'r str,
}

impl Ctx<'_> {
    /// The full name (`parent/child`) of a child of type `ty` read in this context; a context
    /// of that child already names it.
    pub(super) fn child_name(&self, ty: &str, name: &str) -> String {
        if self.ty == ty {
            self.name.to_string()
        } else {
            format!("{}/{}", self.name, name)
        }
    }
}

/// `parent/<name of the item at node>`, for an inline child.
pub(super) fn child_name(parent: &str, node: &Node) -> String {
    let name = node.field("name").map(|n| n.text()).unwrap_or_default();
    format!("{parent}/{name}")
}

/// "`field` unknown: <why>; <what to do>".
pub(super) fn unknown_message(field: &str, why: &str) -> String {
    let hint = if why.contains("parameter '") {
        "pass its value with --parameters"
    } else {
        "it is known only at deployment"
    };
    format!("`{field}` unknown: {why}; {hint}")
}

pub(super) const NSG: &str = "Microsoft.Network/networkSecurityGroups";
pub(super) const RULE: &str = "Microsoft.Network/networkSecurityGroups/securityRules";
pub(super) const RT: &str = "Microsoft.Network/routeTables";
pub(super) const ROUTE: &str = "Microsoft.Network/routeTables/routes";
pub(super) const VNET: &str = "Microsoft.Network/virtualNetworks";
pub(super) const SUBNET: &str = "Microsoft.Network/virtualNetworks/subnets";
pub(super) const PEERING: &str = "Microsoft.Network/virtualNetworks/virtualNetworkPeerings";
pub(super) const NIC: &str = "Microsoft.Network/networkInterfaces";
pub(super) const ASG: &str = "Microsoft.Network/applicationSecurityGroups";
pub(super) const PIP: &str = "Microsoft.Network/publicIPAddresses";
pub(super) const FW: &str = "Microsoft.Network/azureFirewalls";
pub(super) const POLICY: &str = "Microsoft.Network/firewallPolicies";
pub(super) const RCG: &str = "Microsoft.Network/firewallPolicies/ruleCollectionGroups";
pub(super) const IPG: &str = "Microsoft.Network/ipGroups";
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
            skipped_types: vec![],
            dropped: vec![],
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

    /// `d` located at `node`, a field of the resource `ctx`, with the value found there.
    fn about(&self, d: Diagnostic, ctx: &Ctx, node: &Node, field: &str) -> Diagnostic {
        d.at(&self.file, &node.pointer)
            .resource(ctx.ty, ctx.name)
            .field(field)
            .found(node.text())
    }

    /// `name`, a `ty` at `node`, is in error and left out of the model.
    pub(super) fn drop_in_error(&mut self, ty: &str, name: String, node: &Node) {
        let origin = self.origin(node);
        self.dropped.push(super::Dropped {
            kind: ty.rsplit('/').next().unwrap_or(ty).to_string(),
            name,
            origin,
        });
    }

    pub(super) fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    pub(super) fn err(&mut self, ctx: &Ctx, node: &Node, field: &str, msg: &str, expected: &str) {
        let d = self
            .about(Diagnostic::error(msg), ctx, node, field)
            .expected(expected);
        self.push(d);
    }

    pub(super) fn warn(&mut self, ctx: &Ctx, node: &Node, field: &str, msg: &str) {
        let d = self.about(Diagnostic::warning(msg), ctx, node, field);
        self.push(d);
    }

    /// A note about a whole resource.
    fn note(&mut self, node: &Node, ty: &str, name: &str, message: impl Into<String>) {
        let d = Diagnostic::note(message)
            .at(&self.file, &node.pointer)
            .resource(ty, name);
        self.push(d);
    }

    /// A CIDR prefix whose host bits were set (and are now cleared).
    pub(super) fn host_bits_cleared(&mut self, ctx: &Ctx, node: &Node, field: &str) {
        self.warn(
            ctx,
            node,
            field,
            "CIDR prefix has host bits set; they are cleared",
        );
    }

    /// What cannot be resolved offline is an error in strict mode, else a warning (FMT-4).
    pub(super) fn unresolved_severity(&self) -> Severity {
        if self.strict {
            Severity::Error
        } else {
            Severity::Warning
        }
    }

    /// An unresolved value where one is needed: kept as [`Unknown`] and reported once, where it
    /// stands; an error in strict mode, else a warning.
    pub(super) fn unresolved(&mut self, ctx: &Ctx, node: &Node, field: &str) {
        let why = node.unresolved_why();
        let d = Diagnostic::new(self.unresolved_severity(), unknown_message(field, why));
        let d = self.about(d, ctx, node, field);
        self.push(d);
        self.network.unknowns.push(Unknown {
            origin: self.origin(node),
            resource_type: ctx.ty.to_string(),
            resource: ctx.name.to_string(),
            field: field.to_string(),
            expression: node.unresolved().unwrap_or_default().to_string(),
            why: why.to_string(),
        });
    }

    /// An inline child's name that is unknown: kept as its expression text, said once.
    pub(super) fn inline_name(&mut self, ctx: &Ctx, node: &Node) {
        if let Some(n) = node.field("name").filter(|n| n.unresolved().is_some()) {
            self.unresolved(ctx, &n, "name");
        }
    }

    pub(super) fn origin(&self, node: &Node) -> Origin {
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
        if !self.properties_object(node, &ty, &name, &lower) {
            return;
        }
        // Only the names of resources Palisade models: others are skipped with a note.
        let modelled =
            lower.starts_with("microsoft.network/") || lower == "palisade/rulecollection";
        if let Some(n) = node
            .field("name")
            .filter(|n| modelled && n.unresolved().is_some())
        {
            let ctx = Ctx {
                ty: &ty,
                name: &name,
            };
            self.unresolved(&ctx, &n, "name");
        }
        let child_at = |r: &mut Reader| r.child_at(node, &ty, &name, from_template);
        match lower.as_str() {
            "microsoft.network/networksecuritygroups" => self.nsg(node, &name),
            "microsoft.network/networksecuritygroups/securityrules" => {
                let at = child_at(self);
                self.child_rule(node, at)
            }
            "microsoft.network/networksecuritygroups/defaultsecurityrules" => {
                self.set_aside.default_rule_resources += 1;
                self.note(
                    node,
                    &ty,
                    &name,
                    "a default security rule is fixed by Azure (NSG-4) and not imported; the model adds the default rules to every NSG",
                );
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
                self.note(
                    node,
                    &ty,
                    &name,
                    format!("virtual hub route tables are not modelled (FMT-8); its {routes} route(s) are not imported"),
                );
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
                self.declare(asg);
            }
            "microsoft.network/publicipaddresses" => self.public_ip(node, &name),
            "microsoft.network/azurefirewalls" => self.firewall(node, &name),
            "microsoft.network/firewallpolicies" if node.prop("ruleCollections").is_some() => {
                // A 2020-11-01 REST example answers an RCG PUT with a policy id; the body decides.
                self.note(
                    node,
                    &ty,
                    &name,
                    "the type or id says `firewallPolicies`, but the body has the rule collection group shape (`ruleCollections`); read as a rule collection group",
                );
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
                self.note(
                    node,
                    &ty,
                    &name,
                    "the type or id says `ruleGroups`, but the body has the rule collection group shape (`ruleCollections`); read as a rule collection group",
                );
                let at = child_at(self);
                self.child_rcg(node, at)
            }
            "microsoft.network/firewallpolicies/rulegroups" => {
                let at = child_at(self);
                self.child_legacy_rule_group(node, at)
            }
            "microsoft.network/ipgroups" => self.ip_group(node, &name),
            _ => {
                if !self.skipped_types.contains(&ty) {
                    self.skipped_types.push(ty);
                }
            }
        }
    }

    /// A network resource's `properties`, when present, must be an object: `"properties": null`
    /// or a string would otherwise read as a resource with nothing in it (issue 17, FMT-12).
    /// Returns whether the resource can be read.
    fn properties_object(&mut self, node: &Node, ty: &str, name: &str, lower: &str) -> bool {
        let modelled =
            lower.starts_with("microsoft.network/") || lower == "palisade/rulecollection";
        let Some(p) = node.key("properties").filter(|_| modelled) else {
            return true;
        };
        if p.value.is_object() && p.unresolved().is_none() {
            return true;
        }
        let ctx = Ctx { ty, name };
        if p.unresolved().is_some() {
            self.unresolved(&ctx, &p, "properties");
        } else {
            self.err(
                &ctx,
                &p,
                "properties",
                "`properties` is not an object",
                "a JSON object",
            );
            self.drop_in_error(ty, name.to_string(), node);
        }
        false
    }

    pub(super) fn missing(&mut self, ctx: &Ctx, node: &Node, field: &str, expected: &str) {
        let d = Diagnostic::error("required field is missing")
            .at(&self.file, &node.pointer)
            .resource(ctx.ty, ctx.name)
            .field(field)
            .expected(expected);
        self.push(d);
    }

    pub(super) fn enum_field<T: Copy>(
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
    pub(super) fn integer(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        field: &str,
        required: bool,
    ) -> Option<u32> {
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

    /// A reference `{id: ".../type/name"}` or a plain name; returns the last name segment.
    pub(super) fn reference(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Option<String> {
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
    pub(super) fn subnet_reference(
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

    pub(super) fn palisade_settings(&mut self, ctx: &Ctx, node: &Node) -> PalisadeSettings {
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
        s.address_check = self.address_check(ctx, node);
        s
    }

    /// PAL-5.2 `palisade.addressCheck` (rules, collections, firewalls and policies).
    pub(super) fn address_check(&mut self, ctx: &Ctx, node: &Node) -> Option<AddressCheck> {
        let v = node.prop("palisade")?.field("addressCheck")?;
        // YAML 1.1 reads an unquoted `Off` as false.
        if v.value == &serde_json::Value::Bool(false) {
            return Some(AddressCheck::Off);
        }
        match v.as_str().map(|x| x.to_ascii_lowercase()).as_deref() {
            Some("enforce") => Some(AddressCheck::Enforce),
            Some("audit") => Some(AddressCheck::Audit),
            Some("off") => Some(AddressCheck::Off),
            _ => {
                self.err(
                    ctx,
                    &v,
                    "palisade.addressCheck",
                    "unknown address check",
                    "`Enforce`, `Audit` or `Off`",
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, ctx: &Ctx, node: &Node, field: &str) -> bool {
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

    pub(super) fn string_list(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Vec<String> {
        let Some(v) = node.prop(field) else {
            return vec![];
        };
        let items = v.one_or_many();
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

    /// The items of a list property `v`. A value of another type is an error: read as an empty
    /// list, `"securityRules": "notalist"` would drop every rule without a word (issue 17).
    pub(super) fn items_of<'a>(&mut self, ctx: &Ctx, v: &Node<'a>, field: &str) -> Vec<Node<'a>> {
        if v.value.is_array() {
            return v.items();
        }
        if v.unresolved().is_some() {
            self.unresolved(ctx, v, field);
        } else {
            self.err(ctx, v, field, "not a list", "a JSON array");
            self.drop_in_error(field, format!("{} (the whole list)", ctx.name), v);
        }
        vec![]
    }

    pub(super) fn ref_list(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Vec<String> {
        let Some(v) = node.prop(field) else {
            return vec![];
        };
        let items = v.one_or_many();
        items
            .iter()
            .filter_map(|i| self.reference(ctx, i, field))
            .collect()
    }

    pub(super) fn address_list(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        field: &str,
        ok: &mut bool,
    ) -> Vec<AddressItem> {
        let Some(v) = node.prop(field) else {
            return vec![];
        };
        let items = v.one_or_many();
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
                        self.host_bits_cleared(ctx, &item, field);
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
                        e.is_malformed(),
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
    /// A malformed address (`10.0.0.0/33`) is an error in both modes: it is broken input, not
    /// a value lenient analysis may set aside. Returns whether the item is kept.
    pub(super) fn bad_address(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        field: &str,
        msg: &str,
        expected: &str,
        malformed: bool,
    ) -> bool {
        if malformed {
            let msg = format!(
                "{msg}; a malformed address is an error, not an unresolvable value (NSG-3)"
            );
            self.err(ctx, node, field, &msg, expected);
            return false;
        }
        if self.strict {
            self.err(ctx, node, field, msg, expected);
            return false;
        }
        let d = Diagnostic::warning(format!(
            "{msg}; kept as unresolvable: it matches nothing, and the rule cannot be enforced (NSG-3)"
        ));
        let d = self.about(d, ctx, node, field).expected(expected);
        self.push(d);
        true
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
pub(super) fn id_name_path(id: &str, ty: &str) -> String {
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
