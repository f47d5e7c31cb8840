//! The collectors the controller runs: started from `collector.*` settings
//! with the stored topology's site prefixes, exported to Prometheus per
//! exporter, and shared with TelemetryService through the store.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use aiwan_collectors::listener::{ListenerConfig, StatsBoard, kernel_drops};
use aiwan_collectors::pipeline::{self, Pipeline, SharedStore};
use aiwan_collectors::store::{SitePrefix, TelemetryStore};
use aiwan_planner::Topology;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use crate::config::ControllerConfig;
use crate::server::ServeError;

/// The telemetry store as the services share it, with the site prefixes
/// the operator configured (the topology's are added to them).
#[derive(Clone)]
pub struct Telemetry {
    pub store: SharedStore,
    configured_sites: Vec<SitePrefix>,
}

impl Telemetry {
    /// Points the store at the sites of a newly imported topology.
    pub fn refresh_sites(&self, topology: &Topology) {
        let mut sites = self.configured_sites.clone();
        sites.extend(site_prefixes(topology));
        let mut store = self.store.write().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = store.set_sites(sites) {
            tracing::warn!(%error, "telemetry store keeps its old sites");
        }
    }
}

/// The collectors (when a listen address is configured) and the telemetry
/// store they and the router agents' counters feed: the store exists when
/// either does. Without collectors a clock task moves the store's time
/// once a second (closing buckets, applying retention) until `stop`.
pub async fn start(
    config: &ControllerConfig,
    topology: &Topology,
    agent_counters: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Option<Pipeline>, Option<Telemetry>), ServeError> {
    let settings = &config.collector;
    let collectors = settings.netflow_listen.is_some() || settings.sflow_listen.is_some();
    if !collectors && !agent_counters {
        return Ok((None, None));
    }
    let mut store_config = settings.store.clone();
    let configured_sites = store_config.sites.clone();
    store_config.sites.extend(site_prefixes(topology));
    let store = TelemetryStore::new(store_config).map_err(ServeError::TelemetryStore)?;
    let store: SharedStore = Arc::new(RwLock::new(store));
    let telemetry = Telemetry {
        store: Arc::clone(&store),
        configured_sites,
    };
    if !collectors {
        tokio::spawn(store_clock(Arc::clone(&store), stop));
        return Ok((None, Some(telemetry)));
    }
    let shards = match settings.shards {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    let listener = ListenerConfig {
        netflow_listen: settings.netflow_listen,
        sflow_listen: settings.sflow_listen,
        shards,
        receive_buffer_bytes: settings.receive_buffer_bytes,
        key_by_source_port: settings.key_by_source_port,
        template_file: Some(config.data_dir.join("collector-templates.json")),
        netflow_limits: settings.limits.netflow(settings.key_by_source_port),
        sflow_limits: settings.limits.sflow(settings.key_by_source_port),
        netns: settings.netns.clone(),
        ..ListenerConfig::default()
    };
    let running = pipeline::start(&listener, store).await?;
    tracing::info!(
        netflow = ?running.collector.netflow_address,
        sflow = ?running.collector.sflow_address,
        shards,
        "collectors listening"
    );
    Ok((Some(running), Some(telemetry)))
}

/// The store's clock when no collector pipeline moves it.
async fn store_clock(store: SharedStore, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        let now = aiwan_collectors::listener::now_ms();
        if let Err(error) = pipeline::with_store(&store, move |store| store.advance(now)).await {
            tracing::warn!(%error, "telemetry store could not move its clock");
        }
    }
}

/// The prefixes of each site, as the store maps addresses to sites: the
/// site's own and those of its nodes.
pub fn site_prefixes(topology: &Topology) -> Vec<SitePrefix> {
    let own = topology.sites.iter().flat_map(|site| {
        site.prefixes.iter().map(|prefix| SitePrefix {
            prefix: *prefix,
            site: site.id.clone(),
        })
    });
    let of_nodes = topology.nodes.iter().flat_map(|node| {
        node.site.iter().flat_map(|site| {
            node.prefixes.iter().map(|prefix| SitePrefix {
                prefix: *prefix,
                site: site.clone(),
            })
        })
    });
    own.chain(of_nodes).collect()
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLabels {
    exporter: String,
    observation_domain: String,
    protocol: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenLabels {
    listen: String,
}

/// Per-exporter counters read from the collectors' board at each scrape.
#[derive(Debug)]
pub struct CollectorMetrics {
    board: Arc<StatsBoard>,
    listens: Vec<SocketAddr>,
}

impl CollectorMetrics {
    pub fn new(pipeline: &Pipeline) -> CollectorMetrics {
        let collector = &pipeline.collector;
        CollectorMetrics {
            board: collector.board(),
            listens: collector
                .netflow_address
                .into_iter()
                .chain(collector.sflow_address)
                .collect(),
        }
    }
}

type CounterOf = fn(&aiwan_collectors::stats::ExporterCounters) -> u64;

/// Each exported counter: name (without `_total`), help, field.
const EXPORTER_COUNTERS: [(&str, &str, CounterOf); 8] = [
    (
        "aiwan_collector_datagrams",
        "Datagrams received per exporter",
        |c| c.datagrams,
    ),
    (
        "aiwan_collector_records",
        "Flow records decoded per exporter",
        |c| c.records,
    ),
    (
        "aiwan_collector_bytes",
        "Bytes carried in flow records, after sampling",
        |c| c.bytes_scaled,
    ),
    (
        "aiwan_collector_counter_samples",
        "sFlow interface counter records",
        |c| c.counter_samples,
    ),
    (
        "aiwan_collector_decode_errors",
        "Datagrams, sets or records that could not be decoded",
        |c| c.decode_errors,
    ),
    (
        "aiwan_collector_template_misses",
        "Data sets that arrived before their template",
        |c| c.template_misses,
    ),
    (
        "aiwan_collector_sequence_gaps",
        "Gaps in exporter sequence numbers, each counted once",
        |c| c.sequence_gaps,
    ),
    (
        "aiwan_collector_sequence_lost",
        "Units (flows, packets, records, datagrams) the gaps held",
        |c| c.sequence_lost,
    ),
];

impl Collector for CollectorMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let exporters = self.board.exporters();
        for (name, help, field) in EXPORTER_COUNTERS {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for exporter in &exporters {
                let labels = ExporterLabels {
                    exporter: exporter.key.address.to_string(),
                    observation_domain: exporter.key.domain.to_string(),
                    protocol: exporter.key.protocol.as_str().to_string(),
                };
                ConstCounter::new(field(&exporter.counters))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in [
            (
                "aiwan_collector_rejected_datagrams",
                "Datagrams of new exporters dropped because the exporter table was full",
                self.board.rejected_datagrams(),
            ),
            (
                "aiwan_collector_evicted_exporters",
                "Idle exporters forgotten to make room for new ones",
                self.board.evicted_exporters(),
            ),
        ] {
            let family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            ConstCounter::new(value).encode(family)?;
        }
        let mut family = encoder.encode_descriptor(
            "aiwan_collector_kernel_drops",
            "Datagrams the kernel dropped on the collector's sockets (receive buffer full)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for listen in &self.listens {
            let labels = ListenLabels {
                listen: listen.to_string(),
            };
            ConstCounter::new(kernel_drops(listen.port()))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_owns_its_nodes_prefixes() {
        let topology =
            aiwan_planner::formats::clab::parse_clab(include_str!("../../lab/ai-wan.clab.yml"))
                .expect("lab file");
        let sites: Vec<(String, String)> = site_prefixes(&topology)
            .into_iter()
            .map(|p| (p.prefix.to_string(), p.site))
            .collect();
        assert!(
            sites.contains(&("10.1.1.0/24".to_string(), "dc1".to_string())),
            "{sites:?}"
        );
        assert!(sites.iter().any(|(_, site)| site == "dc2"), "{sites:?}");
    }
}
