//! Prometheus metrics of the southbound: what the reconcile loop pushed
//! and to whom, how far the routers are from the plan, rollbacks (a refused
//! rollback is the state that needs an operator), the agents' counter
//! samples reaching the telemetry store, and drift the agents saw.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub node: String,
    /// `applied`, `unreachable` or `refused`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub node: String,
    /// `deleted`, `changed` or `overrun`.
    pub kind: &'static str,
    /// `repaired`, `failed` or `skipped`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

/// Cheap to clone: every field shares its values with the registry.
#[derive(Debug, Clone, Default)]
pub struct SouthboundMetrics {
    pub pushes: Family<PushLabels, Counter>,
    pub rounds: Counter,
    pub round_errors: Counter,
    pub plan_version: Gauge,
    pub routers_in_sync: Gauge,
    pub routers_pending: Gauge,
    pub unresolved_links: Gauge,
    pub rollbacks: Counter,
    pub rollbacks_refused: Counter,
    pub counter_updates: Family<NodeLabels, Counter>,
    pub drift: Family<DriftLabels, Counter>,
}

impl SouthboundMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "aiwan_southbound_pushes",
            "Pushes of desired state to a router, by result (applied, unreachable, refused)",
            self.pushes.clone(),
        );
        registry.register(
            "aiwan_southbound_rounds",
            "Reconcile rounds completed",
            self.rounds.clone(),
        );
        registry.register(
            "aiwan_southbound_round_errors",
            "Reconcile rounds that could not run (database, rendering)",
            self.round_errors.clone(),
        );
        registry.register(
            "aiwan_southbound_plan_version",
            "The plan the reconcile loop brings routers to; 0 when none is current",
            self.plan_version.clone(),
        );
        registry.register(
            "aiwan_southbound_routers_in_sync",
            "Routers holding the current plan's state after the last round",
            self.routers_in_sync.clone(),
        );
        registry.register(
            "aiwan_southbound_routers_pending",
            "Routers not reached in the last round (agent down or in backoff)",
            self.routers_pending.clone(),
        );
        registry.register(
            "aiwan_southbound_unresolved_links",
            "Link ends whose next hop could not be found from what the routers report \
             (planned and routed around)",
            self.unresolved_links.clone(),
        );
        registry.register(
            "aiwan_southbound_rollbacks",
            "Automatic rollbacks after a router refused a plan",
            self.rollbacks.clone(),
        );
        registry.register(
            "aiwan_southbound_rollbacks_refused",
            "Automatic rollbacks refused in turn: no plan is current until an operator acts",
            self.rollbacks_refused.clone(),
        );
        registry.register(
            "aiwan_southbound_counter_updates",
            "Interface counter samples from a router's agent stored in the telemetry store",
            self.counter_updates.clone(),
        );
        registry.register(
            "aiwan_southbound_drift",
            "aiwan objects changed or deleted by someone else on a router, and what its agent did",
            self.drift.clone(),
        );
    }

    pub fn drift(&self, node: &str, kind: &'static str, outcome: &'static str) {
        self.drift
            .get_or_create(&DriftLabels {
                node: node.to_string(),
                kind,
                outcome,
            })
            .inc();
    }

    pub fn push(&self, node: &str, result: &'static str) {
        self.pushes
            .get_or_create(&PushLabels {
                node: node.to_string(),
                result,
            })
            .inc();
    }
}
