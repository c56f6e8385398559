//! Prometheus metrics (served on the admin listener's `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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

pub struct Metrics {
    pub registry: Registry,
    pub connections: Family<ListenerLabels, Counter>,
    pub active: Gauge,
    pub rejected_over_limit: Counter,
    pub rejected_over_source_limit: Counter,
    pub decisions: Family<DecisionLabels, Counter>,
    pub decision_seconds: Histogram,
    pub reloads: Family<OutcomeLabels, Counter>,
    pub closed_on_reload: Counter,
    pub bytes: Family<DirectionLabels, Counter>,
    pub policy_loaded: Gauge,
    pub flowlog_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
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
        Metrics {
            registry,
            connections,
            active,
            rejected_over_limit,
            rejected_over_source_limit,
            decisions,
            decision_seconds,
            reloads,
            closed_on_reload,
            bytes,
            policy_loaded,
            flowlog_errors,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
