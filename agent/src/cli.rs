//! The agent's command line, shared by the `aiwan-agent` binary and its
//! alias `aiwan agent`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::service::ServerTls;
use crate::{AgentError, AgentOptions, KernelError, Listen, service};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Where to serve: unix:/path/to.sock (created mode 0600, a stale
    /// socket replaced; only this user and root may connect) or HOST:PORT.
    /// Beyond a loopback address only with mutual TLS (--tls-cert,
    /// --tls-key, --client-ca): without them the agent has no
    /// authentication, and such addresses are refused.
    #[arg(long, default_value = service::DEFAULT_LISTEN)]
    pub listen: String,
    /// The agent's certificate (PEM, its chain), for mutual TLS.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The agent's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "client_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that a controller's client certificate must chain to;
    /// a client without one, or with another, is refused.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub client_ca: Option<PathBuf>,
    /// Program the network namespace /var/run/netns/NAME (as made by `ip
    /// netns add`) instead of the agent's own; the process itself stays in
    /// its namespace, so its unix socket is reachable from there.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Delete aiwan's leftovers (routes, rules, qdiscs of an earlier run)
    /// at start. Without it they stay until the first ApplyState, which
    /// adopts what it wants and removes the rest.
    #[arg(long)]
    pub purge: bool,
}

/// Serves until SIGINT or SIGTERM; a start-up error names the option at
/// fault.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let listen: Listen = args.listen.parse().context("--listen")?;
    let read = |flag: &str, path: &Option<PathBuf>| -> anyhow::Result<Vec<u8>> {
        let path = path.as_ref().map_or(Path::new(""), PathBuf::as_path);
        std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
    };
    let tls = match &args.tls_cert {
        None => None,
        Some(_) => Some(ServerTls {
            cert_pem: read("--tls-cert", &args.tls_cert)?,
            key_pem: read("--tls-key", &args.tls_key)?,
            client_ca_pem: read("--client-ca", &args.client_ca)?,
        }),
    };
    let options = AgentOptions {
        namespace: args.netns.clone(),
        purge: args.purge,
        tls,
    };
    let running = match service::start(&listen, &options).await {
        Ok(running) => running,
        Err(error @ (AgentError::Bind { .. } | AgentError::Listen { .. })) => {
            return Err(anyhow::Error::new(error).context(format!("--listen {listen}")));
        }
        Err(error @ AgentError::Kernel(KernelError::Namespace { .. })) => {
            let name = args.netns.unwrap_or_default();
            return Err(anyhow::Error::new(error).context(format!("--netns {name}")));
        }
        Err(error @ AgentError::Tls(_)) => {
            return Err(anyhow::Error::new(error).context("--tls-cert, --tls-key, --client-ca"));
        }
        Err(error) => return Err(anyhow::Error::new(error).context("agent failed to start")),
    };
    running
        .run_until(async {
            shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await
        .context("agent stopped with an error")
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
