//! The driver that pushes kernel state to the router agents over gRPC
//! (`aiwan.agent.v1`).

use std::collections::BTreeMap;
use std::time::Duration;

use aiwan_api::agent::v1 as pb;
use aiwan_api::agent::v1::agent_service_client::AgentServiceClient;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use super::{Driver, DriverError, Observed};
use crate::agent::client::{AgentClient, ClientTls};
use crate::agent::convert::{
    interfaces_from_pb, node_state_from_pb, node_state_to_pb, report_from_pb,
};
use crate::agent::{ApplyReport, NodeState, Version};

/// Where each node's agent listens.
#[derive(Debug, Clone, Default)]
pub struct AgentEndpoints {
    /// Per node id.
    pub by_node: BTreeMap<String, String>,
    /// For nodes not listed: `{node}` is replaced by the node id
    /// (`unix:/run/aiwan/lab/ai-wan/{node}.sock`).
    pub template: Option<String>,
    /// The controller's side of mutual TLS, for `https://` endpoints.
    pub tls: Option<ClientTls>,
}

impl AgentEndpoints {
    pub fn endpoint(&self, node: &str) -> Option<String> {
        self.by_node.get(node).cloned().or_else(|| {
            self.template
                .as_ref()
                .map(|template| template.replace("{node}", node))
        })
    }
}

/// See the module documentation.
pub struct AgentDriver {
    endpoints: AgentEndpoints,
    /// How long one call may take before the agent counts as unreachable.
    timeout: Duration,
    clients: Mutex<BTreeMap<String, AgentServiceClient<Channel>>>,
}

impl AgentDriver {
    pub fn new(endpoints: AgentEndpoints, timeout: Duration) -> AgentDriver {
        AgentDriver {
            endpoints,
            timeout,
            clients: Mutex::new(BTreeMap::new()),
        }
    }

    async fn client(&self, node: &str) -> Result<AgentServiceClient<Channel>, DriverError> {
        let unreachable = |reason: String| DriverError::Unreachable {
            node: node.to_string(),
            reason,
        };
        if let Some(client) = self.clients.lock().await.get(node) {
            return Ok(client.clone());
        }
        let endpoint = self
            .endpoints
            .endpoint(node)
            .ok_or_else(|| unreachable("no agent endpoint configured for it".into()))?;
        let client = tokio::time::timeout(
            self.timeout,
            AgentClient::connect_with(&endpoint, self.endpoints.tls.as_ref()),
        )
        .await
        .map_err(|_| unreachable(format!("{endpoint}: no answer in {:?}", self.timeout)))?
        .map_err(|error| unreachable(error.to_string()))?;
        self.clients
            .lock()
            .await
            .insert(node.to_string(), client.clone());
        Ok(client)
    }

    /// A failed call: the connection is dropped (the next call dials again)
    /// and the status sorted into unreachable or refused.
    async fn failed(&self, node: &str, status: tonic::Status) -> DriverError {
        self.clients.lock().await.remove(node);
        let reason = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            tonic::Code::Aborted => DriverError::Superseded {
                node: node.to_string(),
                reason,
            },
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                DriverError::Refused {
                    node: node.to_string(),
                    reason,
                }
            }
            _ => DriverError::Unreachable {
                node: node.to_string(),
                reason,
            },
        }
    }

    /// The answer to `call`, within the timeout: no answer in time drops
    /// the connection and counts as unreachable; an error status is sorted
    /// by [`Self::failed`].
    async fn answer<T>(
        &self,
        node: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, DriverError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => {
                self.clients.lock().await.remove(node);
                Err(DriverError::Unreachable {
                    node: node.to_string(),
                    reason: format!("no answer in {:?}", self.timeout),
                })
            }
            Ok(Err(status)) => Err(self.failed(node, status).await),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }
}

#[tonic::async_trait]
impl Driver for AgentDriver {
    fn name(&self) -> &'static str {
        "agents"
    }

    async fn apply(
        &self,
        node: &str,
        version: Version,
        state: &NodeState,
    ) -> Result<ApplyReport, DriverError> {
        let mut client = self.client(node).await?;
        let request = pb::ApplyStateRequest {
            generation: version.generation,
            state: Some(node_state_to_pb(state)),
            epoch: version.epoch,
        };
        let response = self.answer(node, client.apply_state(request)).await?;
        Ok(response
            .report
            .as_ref()
            .map(report_from_pb)
            .unwrap_or_default())
    }

    async fn observe(&self, node: &str) -> Result<Observed, DriverError> {
        let mut client = self.client(node).await?;
        let response = self
            .answer(node, client.get_state(pb::GetStateRequest {}))
            .await?;
        let state = node_state_from_pb("observed_state", response.observed_state.as_ref())
            .map_err(|error| DriverError::Refused {
                node: node.to_string(),
                reason: format!("the agent reported a state we cannot read: {error}"),
            })?;
        let interfaces =
            interfaces_from_pb(&response.interfaces).map_err(|error| DriverError::Refused {
                node: node.to_string(),
                reason: format!("the agent reported interfaces we cannot read: {error}"),
            })?;
        Ok(Observed {
            version: Version {
                epoch: response.desired_epoch,
                generation: response.desired_generation,
            },
            state,
            interfaces,
        })
    }
}
