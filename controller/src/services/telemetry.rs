//! TelemetryService: answers from the collectors' telemetry store. When
//! the controller runs no collector, every method answers UNAVAILABLE
//! saying how to turn them on, rather than inventing figures.

use aiwan_api::v1 as pb;
use aiwan_api::v1::telemetry_service_server::TelemetryService;
use aiwan_collectors::pipeline::{SharedStore, read_store};
use aiwan_collectors::store::{StoreError, TimeWindow};
use tonic::{Request, Response, Status};

use super::{AppState, store_status};
use crate::convert::{FieldViolation, resource_id, timestamp, timestamp_ms};
use crate::model::now_ms;

const NO_COLLECTOR: &str = "telemetry is not collected by this controller: start it with \
                            --netflow-listen and/or --sflow-listen (collector.netflow_listen, \
                            collector.sflow_listen)";

/// The window a request without `start_time` covers.
const DEFAULT_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Flows in a ListTopFlows answer when the request says 0, and at most.
const DEFAULT_TOP_FLOWS: usize = 10;
const MAX_TOP_FLOWS: usize = 1000;

pub struct TelemetryApi {
    state: AppState,
}

impl TelemetryApi {
    pub fn new(state: AppState) -> TelemetryApi {
        TelemetryApi { state }
    }

    fn store(&self) -> Result<&SharedStore, Status> {
        self.state
            .telemetry
            .as_ref()
            .map(|telemetry| &telemetry.store)
            .ok_or_else(|| Status::unavailable(NO_COLLECTOR))
    }
}

/// `[start_time, end_time)`, defaulting to the last five minutes.
fn window(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> Result<TimeWindow, FieldViolation> {
    let end_ms = match end {
        Some(end) => timestamp_ms("end_time", end)?,
        None => now_ms(),
    };
    let start_ms = match start {
        Some(start) => timestamp_ms("start_time", start)?,
        None => end_ms - DEFAULT_WINDOW_MS,
    };
    if start_ms >= end_ms {
        return Err(FieldViolation::new("start_time", "must be before end_time"));
    }
    Ok(TimeWindow::new(start_ms, end_ms))
}

fn telemetry_status(error: StoreError) -> Status {
    tracing::error!(%error, "telemetry store query failed");
    Status::internal(format!("telemetry store query failed: {error}"))
}

/// An address as a host prefix, the form `FlowSummary` carries.
fn host_prefix(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V4(v4) => format!("{v4}/32"),
        std::net::IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

#[tonic::async_trait]
impl TelemetryService for TelemetryApi {
    async fn get_link_utilization(
        &self,
        request: Request<pb::GetLinkUtilizationRequest>,
    ) -> Result<Response<pb::GetLinkUtilizationResponse>, Status> {
        let request = request.into_inner();
        let id = resource_id("link", &request.link, "links")?;
        let window = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        let store = self.store()?;
        let topology = self
            .state
            .store
            .load_topology()
            .await
            .map_err(store_status)?
            .topology;
        let link = topology
            .links
            .iter()
            .find(|link| format!("{}:{}", link.src, link.src_interface) == id)
            .ok_or_else(|| Status::not_found(format!("link {} not found", request.link)))?;
        let (node, interface) = id
            .split_once(':')
            .ok_or_else(|| FieldViolation::new("link", "is not links/{node}:{interface}"))?;
        // Counters come keyed by the node's name and the interface's name
        // (the router agent sends both); a directed link is what leaves
        // the node through the interface.
        let (node, interface) = (node.to_string(), interface.to_string());
        let points = read_store(store, move |store| {
            match store.interface_index(&node, &interface) {
                Some(if_index) => store.link_counter_series(&node, if_index, window),
                None => Ok(Vec::new()),
            }
        })
        .await
        .map_err(telemetry_status)?;
        let capacity = link.capacity_bps as f64;
        let points = points
            .iter()
            .map(|point| pb::UtilizationPoint {
                time: Some(timestamp(point.time_ms)),
                rate_bps: point.out_bps,
                utilization: if capacity > 0.0 {
                    point.out_bps / capacity
                } else {
                    0.0
                },
            })
            .collect();
        Ok(Response::new(pb::GetLinkUtilizationResponse {
            utilization: Some(pb::LinkUtilization {
                link: request.link,
                points,
            }),
        }))
    }

    async fn list_top_flows(
        &self,
        request: Request<pb::ListTopFlowsRequest>,
    ) -> Result<Response<pb::ListTopFlowsResponse>, Status> {
        let request = request.into_inner();
        let window = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        let limit = match request.limit {
            n if n < 0 => return Err(FieldViolation::new("limit", "must not be negative").into()),
            0 => DEFAULT_TOP_FLOWS,
            n => usize::try_from(n)
                .unwrap_or(MAX_TOP_FLOWS)
                .min(MAX_TOP_FLOWS),
        };
        let flows = read_store(self.store()?, move |store| store.top_flows(window, limit))
            .await
            .map_err(telemetry_status)?
            .into_iter()
            .map(|flow| pb::FlowSummary {
                src_prefix: host_prefix(flow.src_addr),
                dst_prefix: host_prefix(flow.dst_addr),
                protocol: u32::from(flow.protocol),
                src_port: u32::from(flow.src_port),
                dst_port: u32::from(flow.dst_port),
                dscp: u32::from(flow.dscp),
                bytes: flow.bytes,
                packets: flow.packets,
            })
            .collect();
        Ok(Response::new(pb::ListTopFlowsResponse { flows }))
    }

    async fn get_traffic_matrix(
        &self,
        request: Request<pb::GetTrafficMatrixRequest>,
    ) -> Result<Response<pb::GetTrafficMatrixResponse>, Status> {
        let request = request.into_inner();
        let window = window(request.start_time.as_ref(), request.end_time.as_ref())?;
        let cells = read_store(self.store()?, move |store| {
            store.traffic_matrix_average(window, None)
        })
        .await
        .map_err(telemetry_status)?;
        // Classes added up per site pair; traffic from or to addresses in
        // no site's prefixes is not site-to-site traffic and is left out.
        let mut pairs: std::collections::BTreeMap<(String, String), f64> = Default::default();
        for cell in cells {
            if cell.src_site.is_empty() || cell.dst_site.is_empty() {
                continue;
            }
            *pairs.entry((cell.src_site, cell.dst_site)).or_default() += cell.rate_bps;
        }
        let entries = pairs
            .into_iter()
            .map(|((src_site, dst_site), rate_bps)| pb::TrafficMatrixEntry {
                src_site: format!("sites/{src_site}"),
                dst_site: format!("sites/{dst_site}"),
                rate_bps,
            })
            .collect();
        Ok(Response::new(pb::GetTrafficMatrixResponse {
            matrix: Some(pb::TrafficMatrix {
                start_time: Some(timestamp(window.start_ms)),
                end_time: Some(timestamp(window.end_ms)),
                entries,
            }),
        }))
    }
}
