//! Prometheus metrics (served on the admin listener's `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub action: String,
    pub layer: String,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

/// The source scope of a denied name: the source's subnet, or `outside`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: String,
}

/// (scope, name) pairs already denied, for the new-denied-name alert. Bounded: at
/// [`DeniedNames::CAP`] pairs it stops remembering, so later names are no longer reported as
/// new (said once in the log) instead of memory growing with every name a client tries.
#[derive(Default)]
pub struct DeniedNames {
    seen: Mutex<HashSet<(String, String)>>,
}

/// Whether a denied name is news for its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Novelty {
    New,
    Known,
    /// Not remembered: the set is full. `first` is true only the first time.
    Full {
        first: bool,
    },
}

impl DeniedNames {
    pub const CAP: usize = 65_536;

    pub fn observe(&self, scope: &str, name: &str) -> Novelty {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (
            scope.to_string(),
            name.trim_end_matches('.').to_ascii_lowercase(),
        );
        if seen.contains(&key) {
            Novelty::Known
        } else if seen.len() >= Self::CAP {
            // One sentinel beyond the cap marks that the "full" line was written.
            let first = seen.insert((String::new(), String::new()));
            Novelty::Full { first }
        } else {
            seen.insert(key);
            Novelty::New
        }
    }
}

/// A decision's labels as borrowed from its flow record: the rule's path in its parts (the
/// collection group, the collection, the rule), else what decided without a rule.
pub struct Decision<'a> {
    pub action: &'a str,
    pub layer: &'a str,
    pub group: Option<&'a str>,
    pub collection: &'a str,
    pub rule: Option<&'a str>,
    pub decided_by: Option<&'a str>,
}

impl Decision<'_> {
    /// The `rule` label: as `palisade logs` prints it.
    fn rule_label(&self) -> String {
        match (self.rule, self.group) {
            (Some(r), Some(g)) => format!("{g}/{}/{r}", self.collection),
            (Some(r), None) => format!("{}/{r}", self.collection),
            (None, _) => self.decided_by.unwrap_or_default().to_string(),
        }
    }

    /// Whether `label` is this decision's `rule` label, compared without building it.
    fn rule_is(&self, label: &str) -> bool {
        let Some(r) = self.rule else {
            return label == self.decided_by.unwrap_or_default();
        };
        let rest = match self.group {
            Some(g) => match label.strip_prefix(g).and_then(|l| l.strip_prefix('/')) {
                Some(rest) => rest,
                None => return false,
            },
            None => label,
        };
        rest.strip_prefix(self.collection)
            .and_then(|l| l.strip_prefix('/'))
            == Some(r)
    }
}

/// How many decision handles are kept: the rules a gateway's traffic hits most are few; a
/// policy with more only pays the family lookup for the rest.
const DECISION_HANDLES: usize = 64;

pub struct Metrics {
    pub registry: Registry,
    pub connections: Family<ListenerLabels, Counter>,
    pub active: Gauge,
    pub rejected_over_limit: Counter,
    pub rejected_over_source_limit: Counter,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Handles of `decisions` already looked up, so a record of a known decision costs no
    /// label strings nor a family lookup.
    decision_handles: Mutex<Vec<(DecisionLabels, Counter)>>,
    pub decision_seconds: Histogram,
    pub reloads: Family<OutcomeLabels, Counter>,
    pub closed_on_reload: Counter,
    pub bytes: Family<DirectionLabels, Counter>,
    /// `bytes{direction="sent"}` and `"received"`, looked up once rather than per connection.
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    pub policy_loaded: Gauge,
    pub flowlog_errors: Counter,
    pub udp_sessions: Gauge,
    pub udp_sessions_evicted: Counter,
    pub udp_datagrams_dropped: Counter,
    pub policy_store_up: Gauge,
    pub policy_store_version: Gauge,
    pub policy_store_seconds_since_contact: Gauge<f64, AtomicU64>,
    pub policy_store_reconnects: Counter,
    pub flow_store_up: Gauge,
    pub flow_store_written: Counter,
    pub flow_store_dropped: Counter,
    pub flow_store_queued: Gauge,
    /// Names denied for the first time in a scope (the alert of a lockdown's first weeks).
    pub new_denied_names: Family<ScopeLabels, Counter>,
    pub denied_names: DeniedNames,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Count one decision.
    pub fn count_decision(&self, d: &Decision<'_>) {
        let mut handles = self
            .decision_handles
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let hit = handles
            .iter()
            .find(|(l, _)| l.action == d.action && l.layer == d.layer && d.rule_is(&l.rule));
        if let Some((_, c)) = hit {
            c.inc();
            return;
        }
        let labels = DecisionLabels {
            action: d.action.to_string(),
            layer: d.layer.to_string(),
            rule: d.rule_label(),
        };
        let c = self.decisions.get_or_create(&labels).clone();
        c.inc();
        if handles.len() < DECISION_HANDLES {
            handles.push((labels, c));
        }
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade_gateway");
        let connections = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections",
            "Client connections accepted, by listener",
            connections.clone(),
        );
        let active = Gauge::default();
        registry.register(
            "connections_active",
            "Connections (from accept to their last flow record) and DNAT UDP sessions in flight",
            active.clone(),
        );
        let rejected_over_limit = Counter::default();
        registry.register(
            "connections_rejected_over_limit",
            "Connections closed at accept because the connection cap was reached",
            rejected_over_limit.clone(),
        );
        let rejected_over_source_limit = Counter::default();
        registry.register(
            "connections_rejected_over_source_limit",
            "Connections closed at accept because their source held its per-source cap",
            rejected_over_source_limit.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Firewall decisions by action, layer and rule path",
            decisions.clone(),
        );
        let decision_seconds = Histogram::new(exponential_buckets(0.000_001, 2.0, 20));
        registry.register(
            "decision_seconds",
            "Time to evaluate the compiled policy for one decision",
            decision_seconds.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reloads",
            "Policy reloads by outcome (applied, refused)",
            reloads.clone(),
        );
        let closed_on_reload = Counter::default();
        registry.register(
            "closed_on_reload",
            "Established connections closed because a reloaded policy denies them (FW-11)",
            closed_on_reload.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "bytes",
            "Payload bytes relayed (sent: client to server, received: server to client)",
            bytes.clone(),
        );
        let direction = |d: &str| {
            bytes
                .get_or_create(&DirectionLabels {
                    direction: d.into(),
                })
                .clone()
        };
        let (bytes_sent, bytes_received) = (direction("sent"), direction("received"));
        let policy_loaded = Gauge::default();
        registry.register(
            "policy_loaded",
            "1 when a valid policy is in force, 0 when failing closed",
            policy_loaded.clone(),
        );
        let flowlog_errors = Counter::default();
        registry.register(
            "flowlog_errors",
            "Flow records that could not be written",
            flowlog_errors.clone(),
        );
        let udp_sessions = Gauge::default();
        registry.register(
            "udp_sessions",
            "Transparent UDP sessions in the session table (allowed and denied)",
            udp_sessions.clone(),
        );
        let udp_sessions_evicted = Counter::default();
        registry.register(
            "udp_sessions_evicted",
            "Transparent UDP sessions evicted because the session table was full",
            udp_sessions_evicted.clone(),
        );
        let udp_datagrams_dropped = Counter::default();
        registry.register(
            "udp_datagrams_dropped",
            "Transparent UDP datagrams dropped because their session is denied",
            udp_datagrams_dropped.clone(),
        );
        let new_denied_names = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "new_denied_names",
            "Names denied for the first time from a scope (the source's subnet, or outside); at most 65536 remembered",
            new_denied_names.clone(),
        );
        Metrics {
            registry,
            new_denied_names,
            denied_names: DeniedNames::default(),
            connections,
            active,
            rejected_over_limit,
            rejected_over_source_limit,
            decisions,
            decision_handles: Mutex::default(),
            decision_seconds,
            reloads,
            closed_on_reload,
            bytes,
            bytes_sent,
            bytes_received,
            policy_loaded,
            flowlog_errors,
            udp_sessions,
            udp_sessions_evicted,
            udp_datagrams_dropped,
            policy_store_up: Gauge::default(),
            policy_store_version: Gauge::default(),
            policy_store_seconds_since_contact: Gauge::default(),
            policy_store_reconnects: Counter::default(),
            flow_store_up: Gauge::default(),
            flow_store_written: Counter::default(),
            flow_store_dropped: Counter::default(),
            flow_store_queued: Gauge::default(),
        }
    }

    /// The policy store's metrics, for a gateway that follows one (`--policy-store`).
    pub fn register_policy_store(&mut self) {
        let r = &mut self.registry;
        r.register(
            "policy_store_up",
            "1 while the policy store answers; 0 while it is unreachable (the last good snapshot keeps deciding)",
            self.policy_store_up.clone(),
        );
        r.register(
            "policy_store_version",
            "The store's policy version in force (0: none)",
            self.policy_store_version.clone(),
        );
        r.register(
            "policy_store_seconds_since_contact",
            "Seconds since the policy store last answered",
            self.policy_store_seconds_since_contact.clone(),
        );
        r.register(
            "policy_store_reconnects",
            "Attempts to reconnect to the policy store",
            self.policy_store_reconnects.clone(),
        );
    }

    /// The flow store's metrics (`--flow-log-store`).
    pub fn register_flow_store(&mut self) {
        let r = &mut self.registry;
        r.register(
            "flow_store_up",
            "1 while flow records reach the flow store, 0 after a failed insert",
            self.flow_store_up.clone(),
        );
        r.register(
            "flow_store_written",
            "Flow records inserted into the flow store",
            self.flow_store_written.clone(),
        );
        r.register(
            "flow_store_dropped",
            "Flow records not sent to the flow store because its queue was full (the local flow log has them)",
            self.flow_store_dropped.clone(),
        );
        r.register(
            "flow_store_queued",
            "Flow records waiting for the flow store",
            self.flow_store_queued.clone(),
        );
    }

    /// PAL-5.4 `--observe`: 1 while default denies of the observed scopes are audited only.
    pub fn register_observe(&mut self) -> Gauge {
        let g = Gauge::default();
        self.registry.register(
            "observe_active",
            "1 while --observe turns the default deny of its scopes into an audit deny (PAL-5.4)",
            g.clone(),
        );
        g
    }

    /// Count a denied name the first time its scope sees it; whether it was news.
    pub fn denied_name(&self, scope: &str, name: &str) -> Novelty {
        let n = self.denied_names.observe(scope, name);
        if n == Novelty::New {
            self.new_denied_names
                .get_or_create(&ScopeLabels {
                    scope: scope.to_string(),
                })
                .inc();
        }
        n
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision<'a>(
        action: &'a str,
        group: Option<&'a str>,
        collection: &'a str,
        rule: Option<&'a str>,
        decided_by: Option<&'a str>,
    ) -> Decision<'a> {
        Decision {
            action,
            layer: "FirewallApplication",
            group,
            collection,
            rule,
            decided_by,
        }
    }

    #[test]
    fn a_kept_decision_handle_counts_only_its_own_labels() {
        let m = Metrics::new();
        // Paths that share a prefix must not share a handle; parts that join to the same path
        // are the same `rule` label, as `palisade logs` prints it.
        let ds = [
            decision("Allow", Some("g"), "c", Some("r"), None),
            decision("Allow", Some("g"), "c", Some("r"), None),
            decision("Allow", Some("g/c"), "r", Some("x"), None),
            decision("Allow", Some("g"), "c/r", Some("x"), None),
            decision("Allow", None, "c", Some("r"), None),
            decision("Deny", None, "c", Some("r"), None),
            decision("Deny", None, "", None, Some("default")),
            decision("Deny", None, "", None, Some("default")),
            decision("Deny", None, "", None, None),
        ];
        for d in &ds {
            m.count_decision(d);
        }
        let text = m.encode();
        for (rule, action, n) in [
            ("g/c/r", "Allow", 2),
            ("g/c/r/x", "Allow", 2),
            ("c/r", "Allow", 1),
            ("c/r", "Deny", 1),
            ("default", "Deny", 2),
            ("", "Deny", 1),
        ] {
            let line = format!(
                "palisade_gateway_decisions_total{{action=\"{action}\",layer=\"FirewallApplication\",rule=\"{rule}\"}} {n}"
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }

    #[test]
    fn a_name_is_new_once_per_scope() {
        let m = Metrics::new();
        assert_eq!(m.denied_name("app", "x.example.com"), Novelty::New);
        assert_eq!(m.denied_name("app", "X.example.com."), Novelty::Known);
        assert_eq!(m.denied_name("db", "x.example.com"), Novelty::New);
        let text = m.encode();
        assert!(
            text.contains("palisade_gateway_new_denied_names_total{scope=\"app\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("palisade_gateway_new_denied_names_total{scope=\"db\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn the_set_is_bounded() {
        let d = DeniedNames::default();
        for i in 0..DeniedNames::CAP {
            assert_eq!(d.observe("s", &format!("n{i}")), Novelty::New);
        }
        assert_eq!(d.observe("s", "n0"), Novelty::Known);
        assert_eq!(d.observe("s", "late-1"), Novelty::Full { first: true });
        assert_eq!(d.observe("s", "late-2"), Novelty::Full { first: false });
        assert_eq!(d.seen.lock().unwrap().len(), DeniedNames::CAP + 1);
    }
}
