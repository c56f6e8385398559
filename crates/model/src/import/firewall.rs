//! Azure Firewall with classic rule collections, firewall policies with their rule collection
//! groups, and IP groups (FW-1, FW-5, FW-6).

use super::merge::{Child, ChildAt};
use super::node::Node;
use super::reader::{child_name, Ctx, Reader, FW, IPG, POLICY, RCG};
use crate::address::{parse_address_item, parse_port_list, AddressItem};
use crate::diag::Diagnostic;
use crate::resources::*;

impl Reader {
    pub(super) fn firewall(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: FW, name };
        let mut fw = AzureFirewall {
            name: name.to_string(),
            location: node.field("location").map(|l| l.text()),
            origin: self.origin(node),
            threat_intel_mode: node.prop("threatIntelMode").map(|t| t.text()),
            ..Default::default()
        };
        if let Some(cfgs) = node.prop("ipConfigurations") {
            for c in self.items_of(&ctx, &cfgs, "ipConfigurations") {
                let cfg = self.ip_configuration(&ctx, &c);
                fw.private_ip_addresses.extend(cfg.private_ip_address);
                fw.subnets.extend(cfg.subnet);
                fw.public_ip_addresses.extend(cfg.public_ip_address);
            }
        }
        if let Some(p) = node.prop("firewallPolicy") {
            fw.firewall_policy = self.reference(&ctx, &p, "firewallPolicy");
        }
        fw.settings.address_check = self.address_check(&ctx, node);
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
                for c in self.items_of(&ctx, &list, field) {
                    match self.classic_collection(&ctx, &c, kind) {
                        Some(col) => fw.rule_collections.push(col),
                        None => self.drop_in_error(field, child_name(name, &c), &c),
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
        self.declare(fw);
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
        self.inline_name(&ctx, node);
        let priority = self.integer(&ctx, node, "priority", true);
        let action = self.collection_action(&ctx, node, kind);
        let palisade = self.palisade_settings(&ctx, node);
        let mut rules = vec![];
        if let Some(list) = node.prop("rules") {
            for r in self.items_of(&ctx, &list, "rules") {
                match self.firewall_rule(&ctx, &r, kind) {
                    Some(rule) => rules.push(rule),
                    None => self.drop_in_error("rule", child_name(&full, &r), &r),
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
        self.inline_name(&ctx, node);
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
            let items = p.one_or_many();
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

    pub(super) fn policy(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: POLICY, name };
        let mut p = FirewallPolicy {
            name: name.to_string(),
            location: node.field("location").map(|l| l.text()),
            threat_intel_mode: node.prop("threatIntelMode").map(|t| t.text()),
            origin: self.origin(node),
            ..Default::default()
        };
        p.settings.address_check = self.address_check(&ctx, node);
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
            // REST responses list child ids here; groups with collections are inline definitions
            // (under `properties` in ARM JSON, directly in the native YAML).
            for g in groups.items() {
                if g.prop("ruleCollections").is_some() {
                    let gname = g.field("name").map(|n| n.text()).unwrap_or_default();
                    if let Some(rcg) = self.rcg(&ctx, &g, &gname) {
                        p.rule_collection_groups.push(rcg);
                    }
                }
            }
        }
        self.declare(p);
    }

    pub(super) fn child_rcg(&mut self, node: &Node, at: ChildAt) {
        self.pend_child(
            node,
            at,
            RCG,
            |r, ctx, child| r.rcg(ctx, node, child),
            Child::Group,
        );
    }

    fn rcg(&mut self, parent: &Ctx, node: &Node, name: &str) -> Option<RuleCollectionGroup> {
        self.group(
            parent,
            node,
            name,
            "ruleCollections",
            Self::policy_collection,
            None,
        )
    }

    /// A rule collection group whose collections are the items of `field`, each read by
    /// `collection`; `deprecated` is the warning a legacy shape gets first.
    fn group(
        &mut self,
        parent: &Ctx,
        node: &Node,
        name: &str,
        field: &str,
        collection: fn(&mut Self, &Ctx, &Node) -> Option<RuleCollection>,
        deprecated: Option<&str>,
    ) -> Option<RuleCollectionGroup> {
        let full = parent.child_name(RCG, name);
        let ctx = Ctx {
            ty: RCG,
            name: &full,
        };
        if let Some(message) = deprecated {
            self.warn(&ctx, node, "type", message);
        }
        let priority = self.integer(&ctx, node, "priority", true);
        let mut g = RuleCollectionGroup {
            name: name.to_string(),
            priority: 0,
            origin: self.origin(node),
            ..Default::default()
        };
        if let Some(items) = node.prop(field) {
            for c in self.items_of(&ctx, &items, field) {
                match collection(self, &ctx, &c) {
                    Some(col) => g.rule_collections.push(col),
                    None => self.drop_in_error("ruleCollection", child_name(&full, &c), &c),
                }
            }
        }
        // As for collections: a missing priority is reported; the group is kept.
        g.priority = priority.unwrap_or(0);
        Some(g)
    }

    pub(super) fn child_legacy_rule_group(&mut self, node: &Node, at: ChildAt) {
        self.pend_child(
            node,
            at,
            RCG,
            |r, ctx, child| r.legacy_rule_group(ctx, node, child),
            Child::Group,
        );
    }

    /// The pre-2020 `firewallPolicies/ruleGroups` shape (API versions 2019-06-01 to 2020-04-01,
    /// still in published templates): the group's `rules[]` are what a rule collection is today
    /// (name, priority, action, `ruleType` `FirewallPolicyFilterRule` or `FirewallPolicyNatRule`)
    /// and their `ruleConditions[]` (a NAT rule: one `ruleCondition`, with the translation on the
    /// rule) are today's rules. Read as a rule collection group, with a warning.
    fn legacy_rule_group(
        &mut self,
        parent: &Ctx,
        node: &Node,
        name: &str,
    ) -> Option<RuleCollectionGroup> {
        self.group(
            parent,
            node,
            name,
            "rules",
            Self::legacy_collection,
            Some("the pre-2020 `firewallPolicies/ruleGroups` shape is deprecated (FMT-9); read as a rule collection group, each rule as a rule collection and each rule condition as a rule"),
        )
    }

    /// A collection's kind: NAT when its type says so, else the kind of its first typed item
    /// (a rule, or a legacy rule's condition); with no items, Network; items none of which has a
    /// known type are an error at `field`.
    fn collection_kind(
        &mut self,
        ctx: &Ctx,
        node: &Node,
        nat: bool,
        items: &[Node],
        kind_of: &dyn Fn(&Node) -> Option<RuleCollectionKind>,
        (field, message, expected): (&str, &str, &str),
    ) -> Option<RuleCollectionKind> {
        if nat {
            return Some(RuleCollectionKind::Nat);
        }
        match items.iter().find_map(kind_of) {
            Some(k) => Some(k),
            None if items.is_empty() => Some(RuleCollectionKind::Network),
            None => {
                self.err(ctx, node, field, message, expected);
                None
            }
        }
    }

    /// One legacy rule as a rule collection.
    fn legacy_collection(&mut self, group: &Ctx, node: &Node) -> Option<RuleCollection> {
        let name = node.field("name").map(|n| n.text()).unwrap_or_default();
        let full = format!("{}/{}", group.name, name);
        let ctx = Ctx {
            ty: RCG,
            name: &full,
        };
        self.inline_name(&ctx, node);
        let nat = node
            .field("ruleType")
            .is_some_and(|t| t.text().eq_ignore_ascii_case("FirewallPolicyNatRule"));
        let conditions = match (node.field("ruleConditions"), node.field("ruleCondition")) {
            (Some(c), _) => self.items_of(&ctx, &c, "ruleConditions"),
            (None, Some(c)) => vec![c],
            (None, None) => vec![],
        };
        let condition_kind = |c: &Node| -> Option<RuleCollectionKind> {
            match c
                .field("ruleConditionType")?
                .text()
                .to_ascii_lowercase()
                .as_str()
            {
                "networkrulecondition" => Some(RuleCollectionKind::Network),
                "applicationrulecondition" => Some(RuleCollectionKind::Application),
                _ => None,
            }
        };
        let kind = self.collection_kind(
            &ctx,
            node,
            nat,
            &conditions,
            &condition_kind,
            (
                "ruleConditions",
                "cannot tell the rule condition type",
                "rule conditions with `ruleConditionType` NetworkRuleCondition or ApplicationRuleCondition",
            ),
        )?;
        let priority = self.integer(&ctx, node, "priority", true);
        let action = self.collection_action(&ctx, node, kind);
        let palisade = self.palisade_settings(&ctx, node);
        let mut out = vec![];
        for c in &conditions {
            if !nat && condition_kind(c).is_some_and(|k| k != kind) {
                self.err(
                    &ctx,
                    c,
                    "ruleConditionType",
                    "rule condition type differs from the rule's other conditions (FW-1)",
                    &format!("{kind:?}RuleCondition"),
                );
                continue;
            }
            // A NAT rule keeps its translation beside the condition; today it is in the rule.
            let merged;
            let c = if nat {
                let mut v = c.value.clone();
                if let (Some(o), Some(rule)) = (v.as_object_mut(), node.value.as_object()) {
                    for (k, x) in rule
                        .iter()
                        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("translated"))
                    {
                        o.insert(k.clone(), x.clone());
                    }
                }
                merged = v;
                Node {
                    value: &merged,
                    pointer: c.pointer.clone(),
                }
            } else {
                c.clone()
            };
            match self.firewall_rule(&ctx, &c, kind) {
                Some(rule) => out.push(rule),
                None => self.drop_in_error("rule", child_name(&full, &c), &c),
            }
        }
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

    fn policy_collection(&mut self, group: &Ctx, node: &Node) -> Option<RuleCollection> {
        let name = node.field("name").map(|n| n.text()).unwrap_or_default();
        let full = format!("{}/{}", group.name, name);
        let ctx = Ctx {
            ty: RCG,
            name: &full,
        };
        self.inline_name(&ctx, node);
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
        let rules: Vec<Node> = match &rules_node {
            Some(r) => self.items_of(&ctx, r, "rules"),
            None => vec![],
        };
        let kind = self.collection_kind(
            &ctx,
            node,
            ty.contains("nat"),
            &rules,
            &rule_kind,
            (
                "rules",
                "cannot tell the rule type",
                "rules with `ruleType` NetworkRule, ApplicationRule or NatRule",
            ),
        )?;
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
            match self.firewall_rule(&ctx, r, kind) {
                Some(rule) => out.push(rule),
                None => self.drop_in_error("rule", child_name(&full, r), r),
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
    pub(super) fn lone_collection(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: RCG, name: "" };
        let d = Diagnostic::note(
            "a rule collection on its own (a snippet for a rule collection group); it is held in an unnamed group of an unnamed policy",
        )
        .at(&self.file, &node.pointer)
        .resource(RCG, name);
        self.push(d);
        let Some(col) = self.policy_collection(&ctx, node) else {
            self.drop_in_error("ruleCollection", name.to_string(), node);
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

    pub(super) fn ip_group(&mut self, node: &Node, name: &str) {
        let ctx = Ctx { ty: IPG, name };
        let mut ok = true;
        let ips = self.address_list(&ctx, node, "ipAddresses", &mut ok);
        let origin = self.origin(node);
        let group = IpGroup {
            name: name.to_string(),
            ip_addresses: ips,
            origin,
        };
        self.declare(group);
    }
}
