//! `aiwan bench push`: the route push rate through the agent, end to end.
//!
//! A scratch network namespace with two veth pairs (the next hops), an agent
//! serving in this process on a unix socket and programming that namespace,
//! and a client pushing N weighted multipath routes in one `ApplyState`,
//! reading them back with `GetState`, pushing them again (nothing to do) and
//! removing them. As a reference measured in the same run, `ip -batch`
//! installs the same routes in a second scratch namespace.
//!
//! The lab is set up with `ip` (the agent itself never runs it); the
//! namespaces are deleted on every exit path, errors and Ctrl-C included.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Instant;

use aiwan_api::agent::v1 as pb;
use aiwan_api::agent::v1::agent_service_client::AgentServiceClient;
use anyhow::{Context, bail, ensure};
use ipnet::{IpNet, Ipv4Net};
use serde_json::json;

use super::ApplyReport;
use super::client::AgentClient;
use super::convert;
use super::service::{self, AgentOptions, Listen};
use super::state::{NextHop, NodeState, UcmpRoute};

/// Arguments of `aiwan bench push`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchPushArgs {
    /// Weighted multipath routes (two next hops each) in the push.
    #[arg(long, default_value_t = 10_000)]
    pub routes: usize,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// The most routes a run may push: the /24s from 20.0.0.0 stay below
/// 100.0.0.0.
pub const MAX_ROUTES: usize = 1 << 22;

/// The routing table the bench fills (one of aiwan's per-path tables, so
/// nothing else in the namespace is in the way).
const TABLE: u32 = 20001;

/// The rate the issue asks for.
const GOAL_ROUTES_PER_SEC: f64 = 20_000.0;

/// A scratch namespace with `veth1` (10.0.1.1/24) and `veth2`
/// (10.0.2.1/24), each paired with a peer in the same namespace; deleted
/// on drop.
struct Scratch {
    name: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `ip` with `args`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("ip {}: cannot run", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Feeds `commands` (one `ip` command a line) to `ip -n NS -batch -`.
fn ip_batch(namespace: &str, commands: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", namespace, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("ip -batch: cannot run")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(commands.as_bytes())
            .context("ip -batch: writing commands")?;
    }
    let out = child.wait_with_output().context("ip -batch")?;
    if !out.status.success() {
        bail!(
            "ip -n {namespace} -batch: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Scratch {
    fn new(role: &str) -> anyhow::Result<Scratch> {
        let name = format!(
            "aiwan-bench-{role}-{}-{}",
            std::process::id(),
            rand::random::<u16>()
        );
        ip(&["netns", "add", &name])?;
        // From here on, the guard deletes it whatever happens.
        let scratch = Scratch { name };
        ip_batch(
            &scratch.name,
            "link set lo up\n\
             link add veth1 type veth peer name veth1p\n\
             link add veth2 type veth peer name veth2p\n\
             link set veth1 up\nlink set veth1p up\n\
             link set veth2 up\nlink set veth2p up\n\
             addr add 10.0.1.1/24 dev veth1\n\
             addr add 10.0.2.1/24 dev veth2\n",
        )
        .with_context(|| format!("setting up namespace {}", scratch.name))?;
        Ok(scratch)
    }
}

/// Route `i`: 20.0.0.0/24 onwards, via both veths with weights that vary
/// from route to route.
fn route(i: usize) -> UcmpRoute {
    // Below MAX_ROUTES, so the address stays within 20.0.0.0..100.0.0.0.
    let base = u32::from(Ipv4Addr::new(20, 0, 0, 0)) + ((i as u32) << 8);
    let prefix = Ipv4Net::new(Ipv4Addr::from(base), 24).unwrap_or_default();
    let w1 = 1 + (i % 256) as u32;
    let w2 = 1 + ((i * 7 + 3) % 256) as u32;
    UcmpRoute {
        prefix: IpNet::V4(prefix),
        table: TABLE,
        next_hops: vec![
            NextHop {
                gateway: Some(Ipv4Addr::new(10, 0, 1, 2).into()),
                interface: "veth1".into(),
                weight: w1,
            },
            NextHop {
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2).into()),
                interface: "veth2".into(),
                weight: w2,
            },
        ],
    }
}

/// The same route as one `ip -batch` line.
fn ip_line(route: &UcmpRoute) -> String {
    let mut line = format!(
        "route add {} table {} proto {}",
        route.prefix,
        route.table,
        super::state::ROUTE_PROTOCOL
    );
    for nh in &route.next_hops {
        if let Some(gw) = nh.gateway {
            line.push_str(&format!(
                " nexthop via {gw} dev {} weight {}",
                nh.interface, nh.weight
            ));
        }
    }
    line.push('\n');
    line
}

/// Fails naming the first route that did not come back as pushed.
fn check_readback(desired: &NodeState, observed: &NodeState) -> anyhow::Result<()> {
    let desired = desired.normalized();
    if desired == *observed {
        return Ok(());
    }
    let observed_routes: std::collections::BTreeMap<_, _> = observed
        .routes
        .iter()
        .map(|r| ((r.table, r.prefix), r))
        .collect();
    for route in &desired.routes {
        match observed_routes.get(&(route.table, route.prefix)) {
            None => bail!("read back: {route} is missing"),
            Some(seen) if *seen != route => {
                bail!("read back: {route}: pushed {route:?}, read back {seen:?}")
            }
            Some(_) => {}
        }
    }
    bail!(
        "read back: {} routes pushed, {} read back (extra routes or other objects)",
        desired.routes.len(),
        observed.routes.len()
    )
}

fn effective_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn seconds(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

/// Runs the bench and prints its report.
pub async fn bench_push(args: &BenchPushArgs) -> anyhow::Result<()> {
    if !effective_root() {
        bail!(
            "aiwan bench push needs root: it creates network namespaces and veth pairs \
             (run it with sudo)"
        );
    }
    if args.routes == 0 || args.routes > MAX_ROUTES {
        bail!("--routes: must be within 1..={MAX_ROUTES}");
    }
    // Ctrl-C drops the run, and with it the namespaces' guards.
    let report = tokio::select! {
        report = run(args.routes) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn run(n: usize) -> anyhow::Result<serde_json::Value> {
    let desired = NodeState {
        routes: (0..n).map(route).collect(),
        ..NodeState::default()
    };

    let scratch = Scratch::new("agent")?;
    let dir = tempfile::tempdir().context("temporary directory for the agent's socket")?;
    let listen = Listen::Unix(dir.path().join("agent.sock"));
    let agent = service::start(
        &listen,
        &AgentOptions {
            namespace: Some(scratch.name.clone()),
            purge: false,
            tls: None,
        },
    )
    .await
    .context("starting the agent")?;
    let measured = push_through(&agent.endpoint(), &desired, n).await;
    let stopped = agent.shutdown().await;
    let measured = measured?;
    stopped.context("stopping the agent")?;
    drop(scratch);

    // The reference: the same routes through `ip -batch`.
    let reference = Scratch::new("ip")?;
    let commands: String = desired.routes.iter().map(ip_line).collect();
    let started = Instant::now();
    ip_batch(&reference.name, &commands)?;
    let ip_batch_seconds = seconds(started);
    let listed = ip(&[
        "-n",
        &reference.name,
        "route",
        "show",
        "table",
        &TABLE.to_string(),
        "proto",
        &super::state::ROUTE_PROTOCOL.to_string(),
    ])?;
    let installed = listed
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .count();
    ensure!(
        installed == n,
        "ip -batch installed {installed} routes of {n}"
    );
    drop(reference);

    let rate = |secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Ok(json!({
        "routes": n,
        "next_hops_per_route": 2,
        "push_seconds": measured.push,
        "routes_per_sec": rate(measured.push),
        "readback_seconds": measured.readback,
        "readback_routes_per_sec": rate(measured.readback),
        "unchanged_push_seconds": measured.unchanged,
        "delete_seconds": measured.delete,
        "ip_batch_seconds": ip_batch_seconds,
        "ratio_vs_ip_batch": if measured.push > 0.0 { ip_batch_seconds / measured.push } else { 0.0 },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "goal": {"routes_per_sec": GOAL_ROUTES_PER_SEC},
    }))
}

/// Seconds taken by each step through the agent.
struct Measured {
    push: f64,
    readback: f64,
    unchanged: f64,
    delete: f64,
}

/// `desired` as generation 1 through the agent: how long it took and what
/// the agent did. The clock runs from the domain state, as the controller
/// holds it, to the agent's answer: conversion, transfer, the agent's
/// checks and the kernel.
async fn apply_once(
    client: &mut AgentServiceClient<tonic::transport::Channel>,
    desired: &NodeState,
    what: &str,
) -> anyhow::Result<(f64, ApplyReport)> {
    let started = Instant::now();
    let request = pb::ApplyStateRequest {
        generation: 1,
        state: Some(convert::node_state_to_pb(desired)),
        epoch: 0,
    };
    let response = client
        .apply_state(request)
        .await
        .with_context(|| format!("{what}: ApplyState"))?
        .into_inner();
    let took = seconds(started);
    Ok((
        took,
        convert::report_from_pb(&response.report.unwrap_or_default()),
    ))
}

async fn push_through(endpoint: &str, desired: &NodeState, n: usize) -> anyhow::Result<Measured> {
    let mut client = AgentClient::connect(endpoint).await?;

    let (push, report) = apply_once(&mut client, desired, "push").await?;
    ensure!(
        report.created == n && report.replaced == 0 && report.deleted == 0,
        "push: expected {n} routes created, the agent reports {report:?}"
    );

    let started = Instant::now();
    let state = client
        .get_state(pb::GetStateRequest {})
        .await
        .context("read back: GetState")?
        .into_inner();
    let observed = convert::node_state_from_pb("observed_state", state.observed_state.as_ref())
        .context("read back")?;
    let readback = seconds(started);
    check_readback(desired, &observed)?;
    ensure!(
        state.desired_generation == 1 && state.in_sync,
        "read back: the agent holds generation {} (in sync: {}), expected 1 in sync",
        state.desired_generation,
        state.in_sync
    );

    // The same generation again: nothing to do.
    let (unchanged, report) = apply_once(&mut client, desired, "second push").await?;
    ensure!(
        report.unchanged == n && report.is_noop(),
        "second push: expected {n} routes unchanged, the agent reports {report:?}"
    );

    let started = Instant::now();
    let response = client
        .apply_state(pb::ApplyStateRequest {
            generation: 2,
            state: Some(pb::NodeState::default()),
            epoch: 0,
        })
        .await
        .context("delete: ApplyState")?
        .into_inner();
    let delete = seconds(started);
    let report = convert::report_from_pb(&response.report.unwrap_or_default());
    ensure!(
        report.deleted == n,
        "delete: expected {n} routes deleted, the agent reports {report:?}"
    );
    Ok(Measured {
        push,
        readback,
        unchanged,
        delete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_valid_and_distinct() {
        let state = NodeState {
            routes: (0..5000).map(route).collect(),
            ..NodeState::default()
        };
        state.check().unwrap();
        assert_eq!(route(0).prefix.to_string(), "20.0.0.0/24");
        assert_eq!(route(MAX_ROUTES - 1).prefix.to_string(), "83.255.255.0/24");
        assert_eq!(
            ip_line(&route(1)),
            "route add 20.0.1.0/24 table 20001 proto 170 nexthop via 10.0.1.2 dev veth1 \
             weight 2 nexthop via 10.0.2.2 dev veth2 weight 11\n"
        );
    }

    #[test]
    fn readback_names_the_route() {
        let desired = NodeState {
            routes: (0..3).map(route).collect(),
            ..NodeState::default()
        };
        check_readback(&desired, &desired.normalized()).unwrap();
        let mut observed = desired.normalized();
        observed.routes[1].next_hops[0].weight += 1;
        let err = check_readback(&desired, &observed).unwrap_err().to_string();
        assert!(err.contains("route 20.0.1.0/24 table 20001"), "{err}");
        observed.routes.remove(1);
        let err = check_readback(&desired, &observed).unwrap_err().to_string();
        assert!(err.contains("20.0.1.0/24 table 20001 is missing"), "{err}");
    }
}
