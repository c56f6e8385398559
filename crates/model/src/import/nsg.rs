//! Network security groups and their security rules (NSG-2, NSG-3, FMT-7).

use super::merge::{Child, ChildAt};
use super::node::Node;
use super::reader::{child_name, Ctx, Reader, NSG, RULE};
use crate::address::{parse_address_item, parse_port_list, AddressItem, Protocol};
use crate::diag::Diagnostic;
use crate::resources::*;

impl Reader {
    pub(super) fn nsg(&mut self, node: &Node, name: &str) {
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
            for r in self.items_of(&ctx, &rules, "securityRules") {
                match self.security_rule(&ctx, &r, None) {
                    Some(rule) => nsg.security_rules.push(rule),
                    None => self.drop_in_error(RULE, child_name(name, &r), &r),
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
        self.declare(nsg);
    }

    pub(super) fn child_rule(&mut self, node: &Node, at: ChildAt) {
        self.pend_child(
            node,
            at,
            RULE,
            |r, ctx, child| r.security_rule(ctx, node, Some(child)),
            Child::Rule,
        );
    }

    fn security_rule(
        &mut self,
        parent: &Ctx,
        node: &Node,
        name: Option<&str>,
    ) -> Option<SecurityRule> {
        let inline = name.is_none();
        let name = name
            .map(str::to_string)
            .or_else(|| node.field("name").map(|n| n.text()))
            .unwrap_or_default();
        let full = parent.child_name(RULE, &name);
        let ctx = Ctx {
            ty: RULE,
            name: &full,
        };
        if inline {
            self.inline_name(&ctx, node);
        }
        let mut ok = true;
        let protocol = match node.prop("protocol") {
            // Unknown: the rule cannot be placed, so it is left out (matches nothing), said once.
            Some(p) if p.unresolved().is_some() => {
                self.unresolved(&ctx, &p, "protocol");
                None
            }
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
            (None, Some(p)) => p.one_or_many(),
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
            let items = s.one_or_many();
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
                                false,
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
                            e.is_malformed(),
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
}
