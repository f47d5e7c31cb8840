//! The CLI's side of the northbound API: connecting with a bearer token, and
//! the subcommands that talk to a running controller.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use aiwan_api::v1 as pb;
use aiwan_api::v1::admin_service_client::AdminServiceClient;
use aiwan_api::v1::topology_service_client::TopologyServiceClient;
use anyhow::{Context, bail};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::convert::{role_to_pb, topology_to_pb};

/// How to reach the controller.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Controller gRPC endpoint.
    #[arg(long, env = "AIWAN_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// Bearer token. Visible to other users of this machine in the process
    /// list: prefer --token-file or AIWAN_TOKEN.
    #[arg(
        long,
        env = "AIWAN_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the bearer token (its first line).
    #[arg(long, env = "AIWAN_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the controller's certificate, for
    /// an https:// endpoint.
    #[arg(long, env = "AIWAN_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> anyhow::Result<BearerToken> {
        let value = token
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .context("the token contains characters not allowed in a header")?;
        Ok(BearerToken(value))
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Connection {
    /// The token, from --token / AIWAN_TOKEN or from --token-file.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        match (&self.token, &self.token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => Ok(Some(read_secret(path, "--token-file")?)),
            (None, None) => Ok(None),
        }
    }
}

/// The first line of a secret file, which must not be empty.
pub fn read_secret(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().trim().to_string();
    if secret.is_empty() {
        bail!("{what} {}: the file is empty", path.display());
    }
    Ok(secret)
}

/// Opens a channel to the controller.
pub async fn connect(connection: &Connection) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(connection.endpoint.clone())
        .with_context(|| format!("--endpoint {:?} is not a URL", connection.endpoint))?;
    if let Some(ca_file) = &connection.ca_file {
        let pem = std::fs::read(ca_file)
            .with_context(|| format!("cannot read --ca-file {}", ca_file.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .context("TLS configuration")?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the controller at {}", connection.endpoint))
}

/// Writes command output to stdout. A closed pipe (`aiwan ... | head`) is
/// not an error: the reader has what it wanted.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// `aiwan topology import FILE`.
pub async fn topology_import(
    file: &Path,
    default_capacity: Option<f64>,
    connection: &Connection,
    json: bool,
) -> anyhow::Result<()> {
    let topology = aiwan_planner::formats::topology::load_topology(file, default_capacity)?;
    let proto = topology_to_pb(&topology, 0, 0);
    let token = BearerToken::new(connection.token()?.as_deref())?;
    let channel = connect(connection).await?;
    let mut client = TopologyServiceClient::with_interceptor(channel, token);
    let stored = client
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(proto),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .topology
        .context("the controller returned no topology")?;
    if json {
        let summary = serde_json::json!({
            "name": stored.display_name,
            "revision": stored.revision,
            "sites": stored.sites.len(),
            "nodes": stored.nodes.len(),
            "links": stored.links.len(),
        });
        print_out(&format!("{summary}\n"))
    } else {
        print_out(&format!(
            "imported {} as revision {}: {} sites, {} nodes, {} directed links\n",
            stored.display_name,
            stored.revision,
            stored.sites.len(),
            stored.nodes.len(),
            stored.links.len()
        ))
    }
}

/// A link's latency in whole microseconds.
fn latency_us(link: &pb::Link) -> i64 {
    link.latency
        .as_ref()
        .map(|d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1000)
        .unwrap_or(0)
}

/// The JSON form of a topology, as `aiwan topology show --json` prints it.
pub fn topology_json(topology: &pb::Topology) -> serde_json::Value {
    let role = |value: i32| {
        pb::NodeRole::try_from(value)
            .map(|r| {
                r.as_str_name()
                    .trim_start_matches("NODE_ROLE_")
                    .to_lowercase()
            })
            .unwrap_or_default()
    };
    serde_json::json!({
        "name": topology.display_name,
        "revision": topology.revision,
        "sites": topology.sites.iter().map(|s| serde_json::json!({
            "name": s.name, "prefixes": s.prefixes,
        })).collect::<Vec<_>>(),
        "nodes": topology.nodes.iter().map(|n| serde_json::json!({
            "name": n.name, "site": n.site, "role": role(n.role), "prefixes": n.prefixes,
        })).collect::<Vec<_>>(),
        "links": topology.links.iter().map(|l| {
            let latency_us = latency_us(l);
            serde_json::json!({
                "name": l.name,
                "src_node": l.src_node, "src_interface": l.src_interface,
                "dst_node": l.dst_node, "dst_interface": l.dst_interface,
                "capacity_bps": l.capacity_bps, "latency_us": latency_us,
                "srlgs": l.srlgs,
                "admin_up": l.admin_state != pb::AdminState::Down as i32,
                "unresolved": (!l.unresolved.is_empty()).then_some(&l.unresolved),
            })
        }).collect::<Vec<_>>(),
    })
}

/// `aiwan topology show`.
pub async fn topology_show(connection: &Connection, json: bool) -> anyhow::Result<()> {
    let token = BearerToken::new(connection.token()?.as_deref())?;
    let channel = connect(connection).await?;
    let mut client = TopologyServiceClient::with_interceptor(channel, token);
    let topology = client
        .get_topology(pb::GetTopologyRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .topology
        .context("the controller returned no topology")?;
    if json {
        return print_out(&format!("{}\n", topology_json(&topology)));
    }
    if topology.revision == 0 {
        return print_out("no topology imported yet (aiwan topology import FILE)\n");
    }
    let mut out = String::new();
    writeln!(
        out,
        "topology {} revision {}",
        topology.display_name, topology.revision
    )?;
    for site in &topology.sites {
        writeln!(out, "site  {:<24} {}", site.name, site.prefixes.join(","))?;
    }
    for node in &topology.nodes {
        let role = pb::NodeRole::try_from(node.role)
            .map(|r| r.as_str_name())
            .unwrap_or("?");
        let prefixes = node.prefixes.join(",");
        writeln!(
            out,
            "node  {:<24} {:<22} {:<12} {prefixes}",
            node.name, role, node.site
        )?;
    }
    for link in &topology.links {
        let latency_us = latency_us(link);
        writeln!(
            out,
            "link  {:<24} -> {}:{:<10} {:>8} Gbit/s {:>8} us {}",
            link.name,
            link.dst_node.trim_start_matches("nodes/"),
            link.dst_interface,
            link.capacity_bps as f64 / 1e9,
            latency_us,
            link.srlgs.join(",")
        )?;
        if !link.unresolved.is_empty() {
            writeln!(out, "      unresolved: {}", link.unresolved)?;
        }
    }
    print_out(&out)
}

/// `aiwan token create --role R`.
pub async fn token_create(
    role: &str,
    description: &str,
    connection: &Connection,
    json: bool,
) -> anyhow::Result<()> {
    let Some(role) = crate::auth::Role::parse(role) else {
        bail!("--role {role:?}: use viewer, operator or admin");
    };
    let token = BearerToken::new(connection.token()?.as_deref())?;
    let channel = connect(connection).await?;
    let mut client = AdminServiceClient::with_interceptor(channel, token);
    let created = client
        .create_token(pb::CreateTokenRequest {
            role: role_to_pb(role) as i32,
            description: description.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let name = created.token.map(|t| t.name).unwrap_or_default();
    if json {
        let document =
            serde_json::json!({ "name": name, "role": role.as_str(), "secret": created.secret });
        print_out(&format!("{document}\n"))
    } else {
        print_out(&format!("{name} ({}): {}\n", role.as_str(), created.secret))
    }
}
