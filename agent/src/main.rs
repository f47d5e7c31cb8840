//! `aiwan-agent`: what runs on a router. Programs the router's kernel over
//! rtnetlink as the controller asks and serves `aiwan.agent.v1`.

use std::io::IsTerminal;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "aiwan-agent",
    version,
    about = "aiwan's router agent: programs this router's kernel (routes, SRv6, policy rules, rate limits) as the controller asks"
)]
struct Cli {
    #[command(flatten)]
    agent: aiwan_agent::cli::AgentArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    aiwan_agent::cli::run(cli.agent).await
}
