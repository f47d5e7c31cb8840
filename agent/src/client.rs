//! The controller's side of the southbound: a tonic client of one agent.

use std::time::Duration;

use aiwan_api::agent::v1::agent_service_client::AgentServiceClient;
use tonic::transport::{Channel, Endpoint};

use super::service::MAX_MESSAGE_BYTES;

/// How long connecting to an agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An agent that cannot be reached, naming its endpoint.
#[derive(Debug, thiserror::Error)]
#[error("agent {endpoint}: {problem}")]
pub struct AgentClientError {
    pub endpoint: String,
    pub problem: String,
}

/// Connects to agents.
pub struct AgentClient;

impl AgentClient {
    /// Connects to the agent at `endpoint`: `unix:/path/to.sock` (the lab's
    /// sockets under /run/aiwan/lab/) or `http://HOST:PORT` (`HOST:PORT`
    /// alone means the same). Messages may be as large as the agent allows,
    /// so that a node state of many routes fits.
    pub async fn connect(endpoint: &str) -> Result<AgentServiceClient<Channel>, AgentClientError> {
        let err = |problem: String| AgentClientError {
            endpoint: endpoint.to_string(),
            problem,
        };
        let uri = if endpoint.starts_with("unix:")
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://")
        {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        if uri == "unix:" || uri == "unix://" {
            return Err(err("empty socket path".into()));
        }
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| err(format!("not an endpoint ({e})")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| err(format!("cannot connect ({})", error_text(&e))))?;
        Ok(AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// A transport error with its causes: tonic's own message is just
/// "transport error".
fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreachable_endpoints_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let endpoint = format!("unix:{}", path.display());
        let err = AgentClient::connect(&endpoint).await.unwrap_err();
        assert_eq!(err.endpoint, endpoint);
        assert!(err.to_string().contains("cannot connect"), "{err}");
        let err = AgentClient::connect("unix:").await.unwrap_err();
        assert!(err.to_string().contains("empty socket path"), "{err}");
        let err = AgentClient::connect("http://a b").await.unwrap_err();
        assert!(err.to_string().contains("not an endpoint"), "{err}");
    }
}
