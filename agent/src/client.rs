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

/// The controller's side of mutual TLS, PEM: the CA the agents'
/// certificates chain to, and the controller's client certificate and key.
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("ClientTls { .. }")
    }
}

/// Connects to agents.
pub struct AgentClient;

impl AgentClient {
    /// Connects to the agent at `endpoint`: `unix:/path/to.sock` (the lab's
    /// sockets under /run/aiwan/lab/) or `http://HOST:PORT` (`HOST:PORT`
    /// alone means the same). Messages may be as large as the agent allows,
    /// so that a node state of many routes fits.
    pub async fn connect(endpoint: &str) -> Result<AgentServiceClient<Channel>, AgentClientError> {
        AgentClient::connect_with(endpoint, None).await
    }

    /// The same, and `https://HOST:PORT` with mutual TLS (`tls` required
    /// then: the agent's certificate must chain to its CA and name HOST).
    pub async fn connect_with(
        endpoint: &str,
        tls: Option<&ClientTls>,
    ) -> Result<AgentServiceClient<Channel>, AgentClientError> {
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
        let mut dial = Endpoint::from_shared(uri.clone())
            .map_err(|e| err(format!("not an endpoint ({e})")))?;
        if uri.starts_with("https://") {
            let tls = tls.ok_or_else(|| {
                err(
                    "an https endpoint needs the controller's client certificate, key and \
                     the agents' CA (southbound.agent_tls_*)"
                        .into(),
                )
            })?;
            let config = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
                .identity(tonic::transport::Identity::from_pem(
                    &tls.cert_pem,
                    &tls.key_pem,
                ));
            dial = dial
                .tls_config(config)
                .map_err(|e| err(format!("TLS ({})", error_text(&e))))?;
        }
        let channel = dial
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
pub(crate) fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
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
