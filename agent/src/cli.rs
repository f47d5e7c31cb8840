//! The agent's command line, shared by the `aiwan-agent` binary and its
//! alias `aiwan agent`.

use anyhow::Context;

use crate::{AgentError, AgentOptions, KernelError, Listen, service};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Where to serve: unix:/path/to.sock (created mode 0600, a stale
    /// socket replaced) or HOST:PORT on a loopback address. The agent has
    /// no authentication yet, so other addresses are refused.
    #[arg(long, default_value = service::DEFAULT_LISTEN)]
    pub listen: String,
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
    let options = AgentOptions {
        namespace: args.netns.clone(),
        purge: args.purge,
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
