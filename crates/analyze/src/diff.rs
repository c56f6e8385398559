//! Semantic diff of two versions of a network (issue 6, item 5): the flows whose verdict
//! changes, as exact sets (source prefixes × destination prefixes × protocols and ports) with a
//! representative example flow each and the controls that decide them on each side.
//!
//! Both versions are evaluated by [`crate::reach::Engine`] on one grid of address atoms (the
//! boundaries of both). When the versions differ only in NSG rules and firewalls' network and
//! application rules (issue 15, item 4), one engine is built for the old version and the new
//! one derived from it through the re-check, which keeps decision ids: only the pairs whose
//! decision the re-check changed are compared, old decision against new. Otherwise, or when
//! the re-check refuses a change, an engine per version (built at once, `rayon::join`) and
//! every atom pair compared, equal decision pairs once, by verdict class first. Either way the
//! chains of controls are spelled out only for the pieces whose verdict changes, and the report
//! is the same.

use crate::headerspace::{Family, IntervalSet, L4Set};
use crate::reach::{self, Control, Engine, FlowSet, LayerKind, Reach, SavedDecisions, NONE};
use palisade_model::{Direction, Network, RuleCollection, RuleCollectionKind};
use palisade_policy::{FirewallId, NsgId, Snapshot};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::net::IpAddr;

/// One kind of change: every flow in `flows` went from `before` to `after`.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub before: Reach,
    pub after: Reach,
    /// The controls deciding these flows in the old version, in path order.
    pub before_decided_by: Vec<Control>,
    pub after_decided_by: Vec<Control>,
    pub flows: Vec<FlowSet>,
    /// The exact sets, for membership tests.
    #[serde(skip)]
    pub sets: Vec<(Family, IntervalSet, IntervalSet, L4Set)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub changes: Vec<Change>,
    /// Atom pairs with a decision in either version: every one of them is compared, though the
    /// re-check path looks only at those whose decision it changed (the others answer alike).
    pub compared: usize,
    /// Which way the diff ran (not part of the printed report).
    #[serde(skip)]
    pub path: DiffPath,
}

impl DiffReport {
    /// The change holding this flow, if its verdict changes.
    pub fn find(
        &self,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Option<&Change> {
        let f = Family::of(src);
        let (s, d) = (
            crate::headerspace::addr_value(src),
            crate::headerspace::addr_value(dst),
        );
        let v = [proto as u128, sport as u128, dport as u128];
        self.changes.iter().find(|c| {
            c.sets.iter().any(|(ff, ss, ds, l4)| {
                *ff == f && ss.contains(s) && ds.contains(d) && l4.contains(&v)
            })
        })
    }
}

fn unknown() -> reach::Outcome {
    reach::Outcome {
        verdict: Reach::Unknown,
        chain: vec![],
    }
}

/// How [`diff_with`] builds its engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// One after the other, each on the calling thread.
    Serial,
    /// Two engines at once with `rayon::join`, each serial; one engine (through the re-check)
    /// on every thread of the pool.
    Join,
    /// One after the other, each on every thread of the pool ([`Engine::parallel_with_cuts`]).
    Parallel,
}

/// How a diff was computed (the report is the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiffPath {
    /// One engine over the old version, the new one derived from it through the re-check of
    /// the changed NSG directions and firewalls; only the re-planned pairs compared.
    #[default]
    Recheck,
    /// An engine per version, every atom pair compared: the versions differ in more than NSG
    /// and firewall rules, or the re-check refused a change (the reason).
    TwoEngines(&'static str),
}

/// The flows whose verdict differs between `old` and `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> DiffReport {
    diff_with(old, new, Build::Join)
}

/// [`diff`], with the engines built as `build` says (the report is the same).
pub fn diff_with(old: &Snapshot, new: &Snapshot, build: Build) -> DiffReport {
    let (why, built) = match rule_edits(old, new) {
        Ok(edits) => match diff_by_recheck(old, new, &edits, build) {
            Ok(report) => return report,
            Err(refused) => refused,
        },
        Err(why) => (why, None),
    };
    let mut report = two_engines(old, new, build, built.map(|e| *e));
    report.path = DiffPath::TwoEngines(why);
    report
}

/// The two-engine diff alone (what [`diff_with`] falls back to).
pub fn diff_two_engines(old: &Snapshot, new: &Snapshot, build: Build) -> DiffReport {
    two_engines(old, new, build, None)
}

/// [`diff_two_engines`], with the old version's engine already built on both versions' cuts
/// when `built` (a re-check refused before changing it): only the new one is built then.
fn two_engines<'s>(
    old: &'s Snapshot,
    new: &'s Snapshot,
    build: Build,
    built: Option<Engine<'s>>,
) -> DiffReport {
    let co = reach::cuts(old);
    let (a, b) = match (built, build) {
        (Some(a), Build::Serial) => (a, Engine::with_cuts(new, &co)),
        (Some(a), Build::Join | Build::Parallel) => (a, Engine::parallel_with_cuts(new, &co)),
        (None, build) => {
            let cn = reach::cuts(new);
            match build {
                Build::Serial => (Engine::with_cuts(old, &cn), Engine::with_cuts(new, &co)),
                Build::Join => rayon::join(
                    || Engine::with_cuts(old, &cn),
                    || Engine::with_cuts(new, &co),
                ),
                Build::Parallel => (
                    Engine::parallel_with_cuts(old, &cn),
                    Engine::parallel_with_cuts(new, &co),
                ),
            }
        }
    };
    // Decisions by verdict class: a pair in one class changes no verdict (most pairs), and is
    // skipped without its pieces. Only when both engines share their L4 atoms.
    let classes = a.same_l4(&b).then(|| {
        let mut table = HashMap::default();
        let ca = a.verdict_classes(&mut table);
        (ca, b.verdict_classes(&mut table))
    });
    let mut cmp = Compare::new(&a, &b, classes);
    let mut compared = 0;
    for f in [Family::V4, Family::V6] {
        let n = if f == Family::V4 {
            a.atoms().0
        } else {
            a.atoms().1
        };
        for sa in 0..n {
            for da in 0..n {
                let (x, y) = (a.decision(f, sa, da), b.decision(f, sa, da));
                if x == NONE && y == NONE {
                    continue;
                }
                compared += 1;
                cmp.pair(f, sa, da, x, y);
            }
        }
    }
    cmp.finish(compared)
}

/// What the new version changes, when it changes only rules the re-check takes: the NSG
/// directions whose rules differ, and the firewalls to re-check (all of them when any
/// firewall's network or application rules differ). `Err`: why not.
struct Edits {
    nsgs: Vec<(NsgId, Direction)>,
    firewalls: Vec<FirewallId>,
}

fn rule_edits(old: &Snapshot, new: &Snapshot) -> Result<Edits, &'static str> {
    if old.catalogs.versions() != new.catalogs.versions() {
        return Err("other catalogs");
    }
    if old.bindings_id != new.bindings_id {
        return Err("other name bindings");
    }
    if !same_but_rules(&old.network, &new.network) {
        return Err("more than NSG and firewall rules differ");
    }
    let same_shape = old.nsgs().len() == new.nsgs().len()
        && old.firewalls().len() == new.firewalls().len()
        && old.subnets().len() == new.subnets().len()
        && old.nics().len() == new.nics().len()
        && unattached(old) == unattached(new)
        && old
            .subnets()
            .zip(new.subnets())
            .all(|(a, b)| a.1.nsg == b.1.nsg)
        && old.nics().zip(new.nics()).all(|(a, b)| a.1.nsg == b.1.nsg);
    if !same_shape {
        return Err("other NSG attachments");
    }
    let mut nsgs = vec![];
    for ((id, a), (_, b)) in old.nsgs().zip(new.nsgs()) {
        if a.name != b.name || a.names_platform_tags != b.names_platform_tags {
            return Err("other NSGs");
        }
        for dir in [Direction::Inbound, Direction::Outbound] {
            if !all_same(&a.direction(dir).rules, &b.direction(dir).rules) {
                nsgs.push((id, dir));
            }
        }
    }
    let firewalls = if same_rules(&old.network, &new.network) {
        vec![]
    } else {
        old.firewalls().map(|(id, _)| id).collect()
    };
    Ok(Edits { nsgs, firewalls })
}

fn unattached(s: &Snapshot) -> Vec<(String, NsgId)> {
    let mut v: Vec<(String, NsgId)> = s
        .unattached_nsgs()
        .map(|(n, id)| (n.to_string(), id))
        .collect();
    v.sort();
    v
}

/// Equality of two model values with origins (file and place in it) left out: the typed
/// model compared field by field, every field named so that a new one cannot be forgotten
/// (serialising both networks to compare them was a tenth of the diff).
trait Same {
    fn same(&self, other: &Self) -> bool;
}

fn all_same<T: Same>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
}

fn iter_same<'a, T: Same + 'a>(
    a: impl Iterator<Item = &'a T>,
    b: impl Iterator<Item = &'a T>,
) -> bool {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.same(y) => {}
            _ => return false,
        }
    }
}

/// What the re-check cannot take: a NAT collection (its DNAT targets are address boundaries).
fn nat(cs: &[RuleCollection]) -> impl Iterator<Item = &RuleCollection> {
    cs.iter().filter(|c| c.kind == RuleCollectionKind::Nat)
}

fn not_nat(cs: &[RuleCollection]) -> impl Iterator<Item = &RuleCollection> {
    cs.iter().filter(|c| c.kind != RuleCollectionKind::Nat)
}

/// The two networks alike but for what the re-check takes: NSG rules, and firewalls' network
/// and application rule collections.
fn same_but_rules(a: &Network, b: &Network) -> bool {
    let Network {
        virtual_networks,
        network_security_groups,
        route_tables,
        network_interfaces,
        application_security_groups,
        public_ip_addresses,
        azure_firewalls,
        firewall_policies,
        ip_groups,
        unknowns,
    } = a;
    all_same(virtual_networks, &b.virtual_networks)
        && all_same(network_security_groups, &b.network_security_groups)
        && all_same(route_tables, &b.route_tables)
        && all_same(network_interfaces, &b.network_interfaces)
        && all_same(application_security_groups, &b.application_security_groups)
        && all_same(public_ip_addresses, &b.public_ip_addresses)
        && all_same(azure_firewalls, &b.azure_firewalls)
        && all_same(firewall_policies, &b.firewall_policies)
        && all_same(ip_groups, &b.ip_groups)
        && all_same(unknowns, &b.unknowns)
}

/// The firewalls' network and application rule collections alike, one list per owner
/// (firewall, rule collection group): a collection moved from one owner to the next is a
/// change even where the flat order stays the same.
fn same_rules(a: &Network, b: &Network) -> bool {
    let (oa, ob) = (owners(a), owners(b));
    oa.len() == ob.len()
        && oa
            .iter()
            .zip(&ob)
            .all(|(x, y)| iter_same(not_nat(x), not_nat(y)))
}

fn owners(n: &Network) -> Vec<&[RuleCollection]> {
    let fws = n.azure_firewalls.iter().map(|f| &f.rule_collections[..]);
    let groups = n
        .firewall_policies
        .iter()
        .flat_map(|p| &p.rule_collection_groups)
        .map(|g| &g.rule_collections[..]);
    fws.chain(groups).collect()
}

impl Same for palisade_model::VirtualNetwork {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            location,
            address_space,
            subnets,
            virtual_network_peerings,
            origin: _,
        } = self;
        *name == o.name
            && *location == o.location
            && *address_space == o.address_space
            && all_same(subnets, &o.subnets)
            && all_same(virtual_network_peerings, &o.virtual_network_peerings)
    }
}

impl Same for palisade_model::VirtualNetworkPeering {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            remote_virtual_network,
            remote_address_space,
            origin: _,
        } = self;
        *name == o.name
            && *remote_virtual_network == o.remote_virtual_network
            && *remote_address_space == o.remote_address_space
    }
}

impl Same for palisade_model::Subnet {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            address_prefixes,
            network_security_group,
            route_table,
            service_endpoints,
            origin: _,
        } = self;
        *name == o.name
            && *address_prefixes == o.address_prefixes
            && *network_security_group == o.network_security_group
            && *route_table == o.route_table
            && all_same(service_endpoints, &o.service_endpoints)
    }
}

impl Same for palisade_model::ServiceEndpoint {
    fn same(&self, o: &Self) -> bool {
        let Self { service, locations } = self;
        *service == o.service && *locations == o.locations
    }
}

impl Same for palisade_model::NetworkInterface {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            network_security_group,
            enable_ip_forwarding,
            ip_configurations,
            origin: _,
        } = self;
        *name == o.name
            && *network_security_group == o.network_security_group
            && *enable_ip_forwarding == o.enable_ip_forwarding
            && all_same(ip_configurations, &o.ip_configurations)
    }
}

impl Same for palisade_model::IpConfiguration {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            private_ip_address,
            subnet,
            public_ip_address,
            application_security_groups,
        } = self;
        *name == o.name
            && *private_ip_address == o.private_ip_address
            && *subnet == o.subnet
            && *public_ip_address == o.public_ip_address
            && *application_security_groups == o.application_security_groups
    }
}

impl Same for palisade_model::ApplicationSecurityGroup {
    fn same(&self, o: &Self) -> bool {
        let Self { name, origin: _ } = self;
        *name == o.name
    }
}

impl Same for palisade_model::PublicIpAddress {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            ip_address,
            origin: _,
        } = self;
        *name == o.name && *ip_address == o.ip_address
    }
}

/// The NSG without its security rules (the re-check takes those).
impl Same for palisade_model::NetworkSecurityGroup {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            location,
            security_rules: _,
            flush_connection,
            origin: _,
        } = self;
        *name == o.name && *location == o.location && *flush_connection == o.flush_connection
    }
}

impl Same for palisade_model::RouteTable {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            location,
            disable_bgp_route_propagation,
            routes,
            origin: _,
        } = self;
        *name == o.name
            && *location == o.location
            && *disable_bgp_route_propagation == o.disable_bgp_route_propagation
            && all_same(routes, &o.routes)
    }
}

impl Same for palisade_model::Route {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            address_prefix,
            next_hop_type,
            next_hop_ip_address,
            next_hop_unresolved,
            origin: _,
        } = self;
        *name == o.name
            && *address_prefix == o.address_prefix
            && *next_hop_type == o.next_hop_type
            && *next_hop_ip_address == o.next_hop_ip_address
            && *next_hop_unresolved == o.next_hop_unresolved
    }
}

/// The firewall with only its NAT collections (the re-check takes the others).
impl Same for palisade_model::AzureFirewall {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            location,
            private_ip_addresses,
            subnets,
            public_ip_addresses,
            firewall_policy,
            rule_collections,
            threat_intel_mode,
            settings,
            origin: _,
        } = self;
        *name == o.name
            && *location == o.location
            && *private_ip_addresses == o.private_ip_addresses
            && *subnets == o.subnets
            && *public_ip_addresses == o.public_ip_addresses
            && *firewall_policy == o.firewall_policy
            && iter_same(nat(rule_collections), nat(&o.rule_collections))
            && *threat_intel_mode == o.threat_intel_mode
            && settings.same(&o.settings)
    }
}

impl Same for palisade_model::FirewallSettings {
    fn same(&self, o: &Self) -> bool {
        let Self {
            snat_private_ranges,
            dns_enable_proxy,
            dns_servers,
            address_check,
        } = self;
        *snat_private_ranges == o.snat_private_ranges
            && *dns_enable_proxy == o.dns_enable_proxy
            && *dns_servers == o.dns_servers
            && *address_check == o.address_check
    }
}

impl Same for palisade_model::FirewallPolicy {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            location,
            base_policy,
            rule_collection_groups,
            threat_intel_mode,
            settings,
            origin: _,
        } = self;
        *name == o.name
            && *location == o.location
            && *base_policy == o.base_policy
            && all_same(rule_collection_groups, &o.rule_collection_groups)
            && *threat_intel_mode == o.threat_intel_mode
            && settings.same(&o.settings)
    }
}

/// The group with only its NAT collections (the re-check takes the others).
impl Same for palisade_model::RuleCollectionGroup {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            priority,
            rule_collections,
            origin: _,
        } = self;
        *name == o.name
            && *priority == o.priority
            && iter_same(nat(rule_collections), nat(&o.rule_collections))
    }
}

impl Same for RuleCollection {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            priority,
            kind,
            action,
            rules,
            palisade,
            origin: _,
        } = self;
        *name == o.name
            && *priority == o.priority
            && *kind == o.kind
            && *action == o.action
            && all_same(rules, &o.rules)
            && *palisade == o.palisade
    }
}

impl Same for palisade_model::FirewallRule {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            description,
            source_addresses,
            source_ip_groups,
            destination_addresses,
            destination_ip_groups,
            destination_fqdns,
            destination_ports,
            ip_protocols,
            protocols,
            target_fqdns,
            fqdn_tags,
            target_urls,
            web_categories,
            terminate_tls,
            translated_address,
            translated_fqdn,
            translated_port,
            palisade,
            origin: _,
        } = self;
        *name == o.name
            && *description == o.description
            && *source_addresses == o.source_addresses
            && *source_ip_groups == o.source_ip_groups
            && *destination_addresses == o.destination_addresses
            && *destination_ip_groups == o.destination_ip_groups
            && *destination_fqdns == o.destination_fqdns
            && *destination_ports == o.destination_ports
            && *ip_protocols == o.ip_protocols
            && *protocols == o.protocols
            && *target_fqdns == o.target_fqdns
            && *fqdn_tags == o.fqdn_tags
            && *target_urls == o.target_urls
            && *web_categories == o.web_categories
            && *terminate_tls == o.terminate_tls
            && *translated_address == o.translated_address
            && *translated_fqdn == o.translated_fqdn
            && *translated_port == o.translated_port
            && *palisade == o.palisade
    }
}

impl Same for palisade_model::IpGroup {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            ip_addresses,
            origin: _,
        } = self;
        *name == o.name && *ip_addresses == o.ip_addresses
    }
}

impl Same for palisade_model::Unknown {
    fn same(&self, o: &Self) -> bool {
        let Self {
            origin: _,
            resource_type,
            resource,
            field,
            expression,
            why,
        } = self;
        *resource_type == o.resource_type
            && *resource == o.resource
            && *field == o.field
            && *expression == o.expression
            && *why == o.why
    }
}

/// A compiled NSG rule (the explanations name all of it).
impl Same for palisade_policy::nsg::CompiledRule {
    fn same(&self, o: &Self) -> bool {
        let Self {
            name,
            priority,
            access,
            is_default,
            audit,
            protocol,
            source,
            destination,
            source_ports,
            destination_ports,
            unresolvable,
            model_index,
        } = self;
        *name == o.name
            && *priority == o.priority
            && *access == o.access
            && *is_default == o.is_default
            && *audit == o.audit
            && *protocol == o.protocol
            && *source == o.source
            && *destination == o.destination
            && *source_ports == o.source_ports
            && *destination_ports == o.destination_ports
            && *unresolvable == o.unresolvable
            && *model_index == o.model_index
    }
}

/// One engine over the grid of both versions, built for the old one; the changed NSG
/// directions and firewalls applied through the re-check, keeping decision ids; the pairs
/// whose decision changed compared, old decision against new. `Err` when the re-check refuses a
/// change (a new protocol or port boundary): why, and the engine when no change had been
/// applied to it yet (it is then the old version's, for the two-engine diff).
fn diff_by_recheck<'s>(
    old: &'s Snapshot,
    new: &'s Snapshot,
    edits: &Edits,
    build: Build,
) -> Result<DiffReport, Refused<'s>> {
    let cn = reach::cuts(new);
    let mut e = match build {
        Build::Serial => Engine::with_cuts(old, &cn),
        Build::Join | Build::Parallel => Engine::parallel_with_cuts(old, &cn),
    };
    let mut saved = e.save_decisions();
    // Whether a re-check has changed the engine (one that refuses changes nothing).
    let mut applied = false;
    for &(nsg, dir) in &edits.nsgs {
        // An NSG no flow meets (attached nowhere) has no layer and changes nothing.
        if e.layer_id(LayerKind::Nsg {
            nsg,
            direction: dir,
        })
        .is_none()
        {
            continue;
        }
        if e.update_nsg_keeping_ids(nsg, dir, new.nsg(nsg).direction(dir), &mut saved)
            .is_err()
        {
            let why = "the re-check refused an NSG change";
            return Err((why, (!applied).then(|| Box::new(e))));
        }
        applied = true;
    }
    for &fw in &edits.firewalls {
        if e.update_firewall_keeping_ids(fw, new.firewall(fw), &mut saved)
            .is_err()
        {
            let why = "the re-check refused a firewall change";
            return Err((why, (!applied).then(|| Box::new(e))));
        }
        applied = true;
    }
    let (pairs, compared) = e.changed_pairs(&mut saved);
    // Both sides are read from the one engine: an id saved before the re-check still spells
    // out the old version's answers.
    let mut cmp = Compare::new(&e, &e, None);
    cmp.saved = Some(&saved);
    for (f, sa, da, x, y) in pairs {
        cmp.pair(f, sa as usize, da as usize, x, y);
    }
    let mut report = cmp.finish(compared);
    report.path = DiffPath::Recheck;
    e.drop_elsewhere();
    Ok(report)
}

/// Why the re-check path was left, and the old version's engine when still untouched.
type Refused<'s> = (&'static str, Option<Box<Engine<'s>>>);

type Key = (reach::Outcome, reach::Outcome, Vec<String>);

/// Atom pairs compared one by one, in (family, source, destination) order: the pieces whose
/// verdict changes grouped by (old outcome, new outcome, services), groups numbered in the
/// order their keys are first met.
struct Compare<'a, 'e> {
    a: &'a Engine<'e>,
    b: &'a Engine<'e>,
    classes: Option<(Vec<u32>, Vec<u32>)>,
    group_ids: HashMap<Key, u32>,
    groups: Vec<(Key, Vec<reach::Area>, L4Set)>,
    /// (family, decision old, decision new) → the groups its changed pieces fall in, as an
    /// index into `lists` (most pairs change nothing: one shared empty list).
    memo: HashMap<(u8, u32, u32), u32>,
    lists: Vec<Vec<u32>>,
    /// Neighbouring pairs often share their decisions: the last look-up is kept.
    last: (u8, u32, u32, u32),
    /// When `a` is `b` after a re-check: the old side's outcomes are spelled out as saved.
    saved: Option<&'a SavedDecisions>,
}

impl<'a, 'e> Compare<'a, 'e> {
    fn new(a: &'a Engine<'e>, b: &'a Engine<'e>, classes: Option<(Vec<u32>, Vec<u32>)>) -> Self {
        debug_assert_eq!(a.atoms(), b.atoms());
        Compare {
            a,
            b,
            classes,
            group_ids: HashMap::default(),
            groups: vec![],
            memo: HashMap::default(),
            lists: vec![vec![]],
            last: (u8::MAX, NONE, NONE, 0),
            saved: None,
        }
    }

    /// One atom pair: `x` its decision in `a`, `y` in `b` (not both [`NONE`]).
    fn pair(&mut self, f: Family, sa: usize, da: usize, x: u32, y: u32) {
        let a = self.a;
        if let Some((ca, cb)) = &self.classes {
            if x != NONE && y != NONE && ca[x as usize] == cb[y as usize] {
                return;
            }
        }
        let fam = f.index() as u8;
        let at = if (fam, x, y) == (self.last.0, self.last.1, self.last.2) {
            self.last.3
        } else {
            let at = match self.memo.get(&(fam, x, y)) {
                Some(at) => *at,
                None => {
                    let at = self.spell(f, x, y);
                    self.memo.insert((fam, x, y), at);
                    at
                }
            };
            self.last = (fam, x, y, at);
            at
        };
        for &g in &self.lists[at as usize] {
            let region = (f, a.atom_range(f, sa), a.atom_range(f, da));
            self.groups[g as usize].1.push(region);
        }
    }

    /// The groups the changed pieces of a decision pair fall in, as an index into `lists`.
    fn spell(&mut self, f: Family, x: u32, y: u32) -> u32 {
        let (a, b) = (self.a, self.b);
        let full = L4Set::full();
        let side = |e: &Engine, d: u32| -> Vec<(L4Set, Option<u64>)> {
            if d == NONE {
                vec![(full.clone(), None)]
            } else {
                e.decision_pieces(d)
                    .into_iter()
                    .map(|(l4, o)| (l4, Some(o)))
                    .collect()
            }
        };
        let verdict = |o: Option<u64>| o.map_or(Reach::Unknown, Engine::verdict);
        let saved = self.saved;
        let spell = |e: &Engine, o: Option<u64>| match o {
            Some(o) => e.outcome(o),
            None => unknown(),
        };
        let spell_old = |o: Option<u64>| match (o, saved) {
            (Some(o), Some(saved)) => a.saved_outcome(saved, o),
            _ => spell(a, o),
        };
        let mut ids = vec![];
        let right = side(b, y);
        for (l1, o1) in side(a, x) {
            for (l2, o2) in &right {
                if verdict(o1) == verdict(*o2) {
                    continue;
                }
                let mut l = l1.intersect(l2);
                if l.is_empty() {
                    continue;
                }
                l.compact();
                let key: Key = (spell_old(o1), spell(b, *o2), reach::services(f, &l));
                let id = match self.group_ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = self.groups.len() as u32;
                        self.group_ids.insert(key.clone(), id);
                        self.groups.push((key, vec![], l));
                        id
                    }
                };
                ids.push(id);
            }
        }
        if ids.is_empty() {
            0
        } else {
            self.lists.push(ids);
            self.lists.len() as u32 - 1
        }
    }

    /// The report: the groups' regions as flow sets, one change per (old, new) outcome.
    fn finish(self, compared: usize) -> DiffReport {
        let groups = self.groups;
        let mut changes: Vec<Change> = vec![];
        for (key, regions, l4) in groups {
            let prods = reach::products(&regions);
            let mut flows = vec![];
            let mut sets = vec![];
            for (f, s, d) in prods {
                if let Some((ex, _)) = reach::example(f, &s, &d, &l4) {
                    flows.push(FlowSet {
                        source_prefixes: reach::prefixes_text(f, &s),
                        destination_prefixes: reach::prefixes_text(f, &d),
                        services: key.2.clone(),
                        example: ex,
                    });
                }
                sets.push((f, s, d, l4.clone()));
            }
            match changes.iter_mut().find(|c| {
                c.before_decided_by == key.0.chain
                    && c.after_decided_by == key.1.chain
                    && c.before == key.0.verdict
                    && c.after == key.1.verdict
            }) {
                Some(c) => {
                    c.flows.extend(flows);
                    c.sets.extend(sets);
                }
                None => changes.push(Change {
                    before: key.0.verdict,
                    after: key.1.verdict,
                    before_decided_by: key.0.chain.clone(),
                    after_decided_by: key.1.chain.clone(),
                    flows,
                    sets,
                }),
            }
        }
        changes.sort_by_key(|c| (c.before, c.after));
        DiffReport {
            changes,
            compared,
            path: DiffPath::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::CompileOptions;
    use std::path::Path;

    fn adx() -> Snapshot {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/scenarios/adx-dependencies/network.json");
        palisade_load::load(&palisade_load::Source::files([file]))
            .snapshot
            .expect("the scenario compiles")
    }

    /// A rule collection moved from one rule collection group to the front of the next keeps
    /// the flat order of all collections; it is still a firewall rule change (the group's
    /// priority and name decide it afterwards), so the re-check must take the firewalls.
    #[test]
    fn a_collection_moved_to_the_next_group_is_a_rule_change() {
        let old = adx().network;
        let mut new = old.clone();
        let groups = &mut new.firewall_policies[0].rule_collection_groups;
        let moved = groups[0].rule_collections.pop().expect("a collection");
        assert_ne!(moved.kind, RuleCollectionKind::Nat);
        groups[1].rule_collections.insert(0, moved);
        assert!(same_but_rules(&old, &new), "only rules moved");
        assert!(!same_rules(&old, &new), "the move must be seen");
    }

    /// Origins (file and place in it) are not part of a version: the same network read from
    /// another file differs in nothing the re-check or the two engines would see.
    #[test]
    fn origins_are_not_compared() {
        let old = adx().network;
        let mut new = old.clone();
        let moved = |o: &mut palisade_model::Origin| {
            o.file = "elsewhere.json".into();
            o.pointer.push_str("/0");
        };
        for v in &mut new.virtual_networks {
            moved(&mut v.origin);
            v.subnets.iter_mut().for_each(|s| moved(&mut s.origin));
        }
        for n in &mut new.network_security_groups {
            moved(&mut n.origin);
            n.security_rules
                .iter_mut()
                .for_each(|r| moved(&mut r.origin));
        }
        for p in &mut new.firewall_policies {
            moved(&mut p.origin);
            for g in &mut p.rule_collection_groups {
                moved(&mut g.origin);
                for c in &mut g.rule_collections {
                    moved(&mut c.origin);
                    c.rules.iter_mut().for_each(|r| moved(&mut r.origin));
                }
            }
        }
        assert!(same_but_rules(&old, &new));
        assert!(same_rules(&old, &new));
        let rule = new.firewall_policies[0]
            .rule_collection_groups
            .iter_mut()
            .flat_map(|g| &mut g.rule_collections)
            .find(|c| c.kind != RuleCollectionKind::Nat && !c.rules.is_empty())
            .expect("a network or application rule");
        rule.rules[0]
            .destination_ports
            .push(palisade_model::PortRange::single(4711));
        assert!(
            same_but_rules(&old, &new),
            "a rule's ports are the re-check's"
        );
        assert!(!same_rules(&old, &new), "the rule change must be seen");
    }

    /// FW-5: the same network compiled with other name bindings resolves its FQDN network rules
    /// to other addresses; the re-check cannot take that, so the diff uses two engines.
    #[test]
    fn other_name_bindings_take_two_engines() {
        let old = adx();
        let mut options = CompileOptions::default();
        options
            .resolve
            .insert("example.test".into(), vec!["192.0.2.7".parse().unwrap()]);
        let new = Snapshot::compile(&old.network, &old.catalogs, &options);
        assert_eq!(rule_edits(&old, &new).err(), Some("other name bindings"));
        assert!(rule_edits(&old, &old).is_ok());
    }
}
