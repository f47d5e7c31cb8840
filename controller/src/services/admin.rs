//! AdminService: tokens and the audit log (admin only).

use aiwan_api::v1 as pb;
use aiwan_api::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::{AppState, decode_page_token, into_page, page_size, store_status};
use crate::auth::{Role, caller, new_secret};
use crate::convert::{resource_id, role_to_pb, timestamp};
use crate::model::{TokenRecord, now_ms};

/// Longest token description.
pub const MAX_DESCRIPTION_LEN: usize = 200;

pub struct AdminApi {
    state: AppState,
}

impl AdminApi {
    pub fn new(state: AppState) -> AdminApi {
        AdminApi { state }
    }
}

fn token_to_pb(token: &TokenRecord) -> pb::Token {
    pb::Token {
        name: format!("tokens/{}", token.token_id),
        role: role_to_pb(token.role) as i32,
        description: token.description.clone(),
        create_time: Some(timestamp(token.created_ms)),
        creator: token.creator.clone(),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let role = match pb::Role::try_from(request.role) {
            Ok(pb::Role::Viewer) => Role::Viewer,
            Ok(pb::Role::Operator) => Role::Operator,
            Ok(pb::Role::Admin) => Role::Admin,
            Ok(pb::Role::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(
                    "role: must be VIEWER, OPERATOR or ADMIN",
                ));
            }
        };
        let description = request.description.trim();
        if description.is_empty() {
            return Err(Status::invalid_argument("description: required"));
        }
        if description.len() > MAX_DESCRIPTION_LEN || description.chars().any(char::is_control) {
            return Err(Status::invalid_argument(
                "description: at most 200 printable characters",
            ));
        }
        let secret = new_secret();
        let token = self
            .state
            .store
            .create_token(role, description, &secret, &caller, now_ms())
            .await
            .map_err(store_status)?;
        tracing::info!(token = %token.token_id, role = role.as_str(), actor = %caller.actor(), "token created");
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token_to_pb(&token)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let tokens = self.state.store.list_tokens().await.map_err(store_status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_to_pb).collect(),
        }))
    }

    async fn delete_token(
        &self,
        request: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let caller = caller(&request)?;
        let name = request.into_inner().name;
        let token_id = resource_id("name", &name, "tokens")?;
        self.state
            .store
            .revoke_token(token_id, &caller.actor(), now_ms())
            .await
            .map_err(store_status)?;
        self.state.authenticator.forget(&name);
        tracing::info!(token = %token_id, actor = %caller.actor(), "token revoked");
        Ok(Response::new(pb::DeleteTokenResponse {}))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size("page_size", request.page_size, 100)?;
        let token = decode_page_token("page_token", &request.page_token)?;
        let after = if token.is_empty() {
            0
        } else {
            token.parse().map_err(|_| {
                Status::invalid_argument("page_token: not a token returned by ListAuditEvents")
            })?
        };
        let events = self
            .state
            .store
            .list_audit(after, limit + 1)
            .await
            .map_err(store_status)?;
        let (events, next_page_token) = into_page(events, limit, |e| e.seq.to_string());
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events
                .iter()
                .map(|event| pb::AuditEvent {
                    sequence: event.seq,
                    time: Some(timestamp(event.at_ms)),
                    actor: event.actor.clone(),
                    action: event.action.clone(),
                    resource: event.resource.clone(),
                    detail: event.detail_json.clone(),
                })
                .collect(),
            next_page_token,
        }))
    }
}
