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

/// The closed loop's view, or UNAVAILABLE saying why there is none.
fn loop_view(state: &AppState) -> Result<crate::closed_loop::SharedView, Status> {
    let view = state
        .closed_loop
        .clone()
        .ok_or_else(|| Status::unavailable(NO_COLLECTOR))?;
    let idle = view
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .idle_reason
        .clone();
    match idle {
        Some(reason) if state.telemetry.is_none() => Err(Status::unavailable(format!(
            "the closed loop is not measuring: {reason}"
        ))),
        _ => Ok(view),
    }
}

fn class_to_pb(class: aiwan_planner::classes::Class) -> pb::TrafficClass {
    match class {
        aiwan_planner::classes::Class::AiSync => pb::TrafficClass::AiSync,
        aiwan_planner::classes::Class::AiBulk => pb::TrafficClass::AiBulk,
        aiwan_planner::classes::Class::BestEffort => pb::TrafficClass::BestEffort,
    }
}

/// Intervals a ListDemandMatrices answer holds when asked for 0, and at
/// most.
const DEFAULT_INTERVALS: usize = 10;
const MAX_INTERVALS: usize = 3600;

#[tonic::async_trait]
impl TelemetryService for TelemetryApi {
    async fn list_demand_matrices(
        &self,
        request: Request<pb::ListDemandMatricesRequest>,
    ) -> Result<Response<pb::ListDemandMatricesResponse>, Status> {
        let wanted = match request.into_inner().max_intervals {
            n if n < 0 => {
                return Err(Status::invalid_argument(
                    "max_intervals: must not be negative",
                ));
            }
            0 => DEFAULT_INTERVALS,
            n => usize::try_from(n)
                .unwrap_or(MAX_INTERVALS)
                .min(MAX_INTERVALS),
        };
        let view = loop_view(&self.state)?;
        let view = view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let skip = view.intervals.len().saturating_sub(wanted);
        let matrices = view
            .intervals
            .iter()
            .skip(skip)
            .map(|interval| {
                let mut entries = Vec::new();
                for (class, matrix) in aiwan_planner::classes::Class::ALL
                    .into_iter()
                    .zip(&interval.classes)
                {
                    for (src, dst, rate) in matrix.demands() {
                        let node = |i: usize| {
                            format!("nodes/{}", view.nodes.get(i).map_or("", String::as_str))
                        };
                        entries.push(pb::DemandEntry {
                            src_node: node(src),
                            dst_node: node(dst),
                            traffic_class: class_to_pb(class) as i32,
                            rate_bps: rate,
                        });
                    }
                }
                pb::DemandMatrix {
                    start_time: Some(timestamp(interval.start_ms)),
                    duration: Some(super::plan::duration_of_ms(interval.duration_ms)),
                    entries,
                    unknown_exporter_bytes: interval.unknown_exporter_bytes,
                    unknown_exporters: interval.unknown_exporters.clone(),
                    unknown_destination_bytes: interval.unknown_destination_bytes,
                    transit_bytes: interval.transit_bytes,
                    local_bytes: interval.local_bytes,
                }
            })
            .collect();
        Ok(Response::new(pb::ListDemandMatricesResponse { matrices }))
    }

    async fn list_link_forecasts(
        &self,
        _request: Request<pb::ListLinkForecastsRequest>,
    ) -> Result<Response<pb::ListLinkForecastsResponse>, Status> {
        let view = loop_view(&self.state)?;
        let view = view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let links = view
            .links
            .iter()
            .map(|link| pb::LinkForecast {
                link: format!("links/{}", link.link),
                capacity_bps: link.capacity_bps,
                counter_bps: link.counter_bps.unwrap_or(0.0),
                has_counters: link.counter_bps.is_some(),
                estimated_bps: link.estimated_bps,
                disagreement_bps: link.disagreement_bps,
                tolerance_bps: link.tolerance_bps,
                agrees: link.agrees,
                predicted_bps: link.predicted_bps,
                predicted_low_bps: link.predicted_low_bps,
                predicted_high_bps: link.predicted_high_bps,
                predicted_utilization: link.predicted_utilization,
                congestion_probability: link.congestion_probability,
                dominant_class: class_to_pb(link.dominant_class) as i32,
                covered_by_flows: link.covered,
            })
            .collect();
        Ok(Response::new(pb::ListLinkForecastsResponse {
            interval_start_time: view.last_interval_start_ms.map(timestamp),
            interval: Some(super::plan::duration_of_ms(view.interval_ms)),
            congestion_threshold: self.state.loop_config.congestion_threshold,
            links,
            predicted_mlu: view.predicted_mlu,
            measured_mlu: view.measured_mlu,
        }))
    }

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
