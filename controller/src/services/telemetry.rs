//! TelemetryService. The telemetry store (collectors and their Polars
//! store) arrives with the collectors issue; until then every method answers
//! UNAVAILABLE rather than inventing figures.

use aiwan_api::v1 as pb;
use aiwan_api::v1::telemetry_service_server::TelemetryService;
use tonic::{Request, Response, Status};

const NO_STORE: &str = "telemetry is not available in this build: the collectors and their \
                        telemetry store land with the collectors issue";

pub struct TelemetryApi;

#[tonic::async_trait]
impl TelemetryService for TelemetryApi {
    async fn get_link_utilization(
        &self,
        _request: Request<pb::GetLinkUtilizationRequest>,
    ) -> Result<Response<pb::GetLinkUtilizationResponse>, Status> {
        Err(Status::unavailable(NO_STORE))
    }

    async fn list_top_flows(
        &self,
        _request: Request<pb::ListTopFlowsRequest>,
    ) -> Result<Response<pb::ListTopFlowsResponse>, Status> {
        Err(Status::unavailable(NO_STORE))
    }

    async fn get_traffic_matrix(
        &self,
        _request: Request<pb::GetTrafficMatrixRequest>,
    ) -> Result<Response<pb::GetTrafficMatrixResponse>, Status> {
        Err(Status::unavailable(NO_STORE))
    }
}
