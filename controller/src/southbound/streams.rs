//! The router agents' streams, one pair per router of the stored topology,
//! each kept open (re-dialled with backoff when an agent goes away):
//!
//! - `StreamCounters`: interface counters into the telemetry store, each
//!   sample under the node's id and the interface's name, which is how
//!   `GetLinkUtilization` finds a directed link (`{node}:{interface}`);
//! - `WatchDrift`: what someone changed by hand on a router and what its
//!   agent did about it, logged by the controller and counted per router
//!   (`aiwan_southbound_drift_total`), so that drift is seen centrally.
//!
//! Routers come and go with topology imports: the set is read again at
//! each import (and every few seconds), new routers get a subscription and
//! removed ones lose it.

use std::collections::BTreeMap;
use std::time::Duration;

use aiwan_api::agent::v1 as pb;
use aiwan_collectors::listener::now_ms;
use aiwan_collectors::pipeline::{SharedStore, with_store};
use aiwan_collectors::record::InterfaceCounters;
use aiwan_planner::NodeRole;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use super::agents::AgentEndpoints;
use super::metrics::{NodeLabels, SouthboundMetrics};
use crate::agent::AgentClient;
use crate::store::Store;

/// How often the set of routers is read from the database.
const ROUTERS_REFRESH: Duration = Duration::from_secs(5);
/// First and longest wait before dialling an agent again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// See the module documentation.
pub struct AgentStreams {
    pub db: Store,
    /// The telemetry store and the time between the samples the agents are
    /// asked for; `None`: no counters.
    pub counters: Option<(SharedStore, Duration)>,
    pub endpoints: AgentEndpoints,
    pub metrics: SouthboundMetrics,
    /// Drift the agents repaired is told here.
    pub events: crate::events::EventBus,
}

impl AgentStreams {
    /// Runs until `stop` turns true; `topology` ticks at each import.
    pub async fn run(self, mut topology: watch::Receiver<i64>, mut stop: watch::Receiver<bool>) {
        let mut feeds: BTreeMap<String, (String, JoinHandle<()>)> = BTreeMap::new();
        loop {
            match self.db.load_topology().await {
                Ok(stored) => {
                    let mut wanted = BTreeMap::new();
                    for node in stored.topology.nodes.iter() {
                        if node.role == NodeRole::Host {
                            continue;
                        }
                        if let Some(endpoint) = self.endpoints.endpoint(&node.id) {
                            wanted.insert(node.id.clone(), endpoint);
                        }
                    }
                    feeds.retain(|node, (endpoint, task)| {
                        let keep = wanted.get(node) == Some(endpoint) && !task.is_finished();
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for (node, endpoint) in wanted {
                        if feeds.contains_key(&node) {
                            continue;
                        }
                        let task = tokio::spawn(node_streams(
                            node.clone(),
                            Dial {
                                endpoint: endpoint.clone(),
                                tls: self.endpoints.tls.clone(),
                            },
                            self.counters.clone(),
                            self.metrics.clone(),
                            self.events.clone(),
                        ));
                        feeds.insert(node, (endpoint, task));
                    }
                }
                Err(error) => tracing::warn!(%error, "agent streams cannot read the topology"),
            }
            tokio::select! {
                _ = tokio::time::sleep(ROUTERS_REFRESH) => {}
                changed = topology.changed() => {
                    if changed.is_err() {
                        break; // the controller is gone
                    }
                }
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        for (_, (_, task)) in feeds {
            task.abort();
        }
    }
}

/// How to reach one agent.
struct Dial {
    endpoint: String,
    tls: Option<crate::agent::ClientTls>,
}

impl Dial {
    async fn connect(
        &self,
    ) -> Result<
        aiwan_api::agent::v1::agent_service_client::AgentServiceClient<tonic::transport::Channel>,
        String,
    > {
        AgentClient::connect_with(&self.endpoint, self.tls.as_ref())
            .await
            .map_err(|error| error.to_string())
    }
}

/// One router's streams, for as long as the task lives.
async fn node_streams(
    node: String,
    endpoint: Dial,
    counters: Option<(SharedStore, Duration)>,
    metrics: SouthboundMetrics,
    events: crate::events::EventBus,
) {
    let drift = watch_drift(&node, &endpoint, &metrics, &events);
    match counters {
        Some((telemetry, interval)) => {
            let counters = feed_counters(&node, &endpoint, interval, telemetry, &metrics);
            tokio::join!(drift, counters);
        }
        None => drift.await,
    }
}

/// Logs and counts the router's drift events, re-subscribing with backoff.
async fn watch_drift(
    node: &str,
    endpoint: &Dial,
    metrics: &SouthboundMetrics,
    events: &crate::events::EventBus,
) {
    let mut retry = RETRY_FIRST;
    loop {
        match drift_once(node, endpoint, metrics, events).await {
            Ok(true) => retry = RETRY_FIRST,
            Ok(false) => {}
            Err(error) => tracing::debug!(%node, %error, "no drift stream from the agent"),
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Subscribes once; true when at least one event came.
async fn drift_once(
    node: &str,
    endpoint: &Dial,
    metrics: &SouthboundMetrics,
    events: &crate::events::EventBus,
) -> Result<bool, String> {
    let mut client = endpoint.connect().await?;
    let mut stream = client
        .watch_drift(pb::WatchDriftRequest {})
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    let mut seen = false;
    while let Some(message) = stream.next().await {
        let message =
            message.map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        let Some(event) = message.event else {
            continue;
        };
        seen = true;
        let kind = match event.kind() {
            pb::DriftKind::Deleted => "deleted",
            pb::DriftKind::Changed => "changed",
            pb::DriftKind::Overrun => "overrun",
            pb::DriftKind::Unspecified => "unspecified",
        };
        let outcome = match event.outcome() {
            pb::RepairOutcome::Repaired => "repaired",
            pb::RepairOutcome::Failed => "failed",
            pb::RepairOutcome::Skipped => "skipped",
            pb::RepairOutcome::Unspecified => "unspecified",
        };
        metrics.drift(node, kind, outcome);
        if outcome == "failed" {
            tracing::error!(%node, kind, object = %event.object, error = %event.error, "drift on a router, not repaired");
        } else {
            tracing::warn!(%node, kind, object = %event.object, outcome, generation = event.generation, "drift on a router");
            if outcome == "repaired" {
                events.publish(
                    crate::events::EventKind::DriftRepaired,
                    format!("nodes/{node}"),
                    format!("drift on {node} repaired: {} {kind}", event.object),
                    &[],
                );
            }
        }
    }
    Ok(seen)
}

/// Stores the router's counters, re-subscribing with backoff.
async fn feed_counters(
    node: &str,
    endpoint: &Dial,
    interval: Duration,
    telemetry: SharedStore,
    metrics: &SouthboundMetrics,
) {
    let mut retry = RETRY_FIRST;
    let updates = metrics
        .counter_updates
        .get_or_create(&NodeLabels {
            node: node.to_string(),
        })
        .clone();
    loop {
        match stream_once(node, endpoint, interval, &telemetry, &updates).await {
            // A stream that delivered something was healthy: start the
            // backoff from the beginning.
            Ok(true) => retry = RETRY_FIRST,
            Ok(false) => {}
            Err(error) => tracing::debug!(%node, %error, "no counters from the agent"),
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Subscribes once and stores samples until the stream ends; true when
/// at least one sample came.
async fn stream_once(
    node: &str,
    endpoint: &Dial,
    interval: Duration,
    telemetry: &SharedStore,
    updates: &prometheus_client::metrics::counter::Counter,
) -> Result<bool, String> {
    let mut client = endpoint.connect().await?;
    let request = pb::StreamCountersRequest {
        interval: Some(prost_types::Duration {
            seconds: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(interval.subsec_nanos()).unwrap_or(0),
        }),
    };
    let mut stream = client
        .stream_counters(request)
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    let mut delivered = false;
    while let Some(message) = stream.next().await {
        let message =
            message.map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        let Some(update) = message.update else {
            continue;
        };
        let samples = interface_counters(node, &update, now_ms());
        let result = with_store(telemetry, move |store| store.ingest_counters(&samples)).await;
        match result {
            Ok(()) => {
                updates.inc();
            }
            Err(error) => {
                tracing::warn!(%node, %error, "telemetry store refused the agent's counters")
            }
        }
        delivered = true;
    }
    Ok(delivered)
}

/// An agent's sample as the store's interface counters: keyed by the
/// node's id and each interface's index and name; timed by the agent's
/// clock when it says (so that rates come from when the kernel was read,
/// not from when the sample crossed the network), else by `received_ms`.
pub fn interface_counters(
    node: &str,
    update: &pb::CountersUpdate,
    received_ms: i64,
) -> Vec<InterfaceCounters> {
    let time_ms = update
        .time
        .as_ref()
        .map(|time| {
            time.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(time.nanos / 1_000_000))
        })
        .filter(|ms| *ms > 0)
        .unwrap_or(received_ms);
    update
        .interfaces
        .iter()
        .map(|interface| InterfaceCounters {
            received_ms: time_ms,
            device: node.to_string(),
            if_index: interface.if_index,
            if_name: Some(interface.name.clone()),
            speed_bps: 0,
            in_octets: interface.rx_bytes,
            in_packets: interface.rx_packets,
            in_errors: interface.rx_errors,
            in_discards: interface.rx_drops,
            out_octets: interface.tx_bytes,
            out_packets: interface.tx_packets,
            out_errors: interface.tx_errors,
            out_discards: interface.tx_drops,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_keyed_by_node_and_interface_and_timed_by_the_agent() {
        let update = pb::CountersUpdate {
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000,
            }),
            interfaces: vec![pb::InterfaceCounters {
                name: "eth1".into(),
                if_index: 7,
                rx_bytes: 1,
                tx_bytes: 2,
                rx_packets: 3,
                tx_packets: 4,
                rx_errors: 5,
                tx_errors: 6,
                rx_drops: 7,
                tx_drops: 8,
            }],
        };
        let samples = interface_counters("r1", &update, 5);
        assert_eq!(
            samples,
            vec![InterfaceCounters {
                received_ms: 1_700_000_000_250,
                device: "r1".into(),
                if_index: 7,
                if_name: Some("eth1".into()),
                speed_bps: 0,
                in_octets: 1,
                in_packets: 3,
                in_errors: 5,
                in_discards: 7,
                out_octets: 2,
                out_packets: 4,
                out_errors: 6,
                out_discards: 8,
            }]
        );
        let untimed = pb::CountersUpdate {
            time: None,
            ..update
        };
        assert_eq!(interface_counters("r1", &untimed, 5)[0].received_ms, 5);
    }
}
