//! From what the controller stores to what the planner solves, and back:
//! active AI jobs become class demands between nodes, the planner places
//! them, and the result becomes a plan record with its metrics, allocation
//! and per-router desired state (UCMP next-hop weights).

use std::collections::BTreeMap;

use aiwan_planner::allocation::{Allocation, Problem};
use aiwan_planner::classes::{Class, ClassDemand, ClassPlan, plan_classes};
use aiwan_planner::failures::worst_single_failure;
use aiwan_planner::fast::FastOptions;
use aiwan_planner::network::Network;
use aiwan_planner::paths::ShortestPaths;
use aiwan_planner::{NodeRole, Topology};
use ipnet::IpNet;

use crate::model::{Endpoint, JobRecord, JobState, TrafficClass};

/// Candidate paths per node pair for controller plans.
pub const PATHS_PER_PAIR: usize = 4;
/// Without a bound of its own, an ai-sync demand may use paths up to this
/// factor of its pair's lowest latency: collectives stall on the slowest
/// path, so they stay near the fastest one.
pub const SYNC_LATENCY_STRETCH: f64 = 1.5;

/// A computed plan, ready to store.
#[derive(Debug, Clone)]
pub struct ComputedPlan {
    pub mlu: f64,
    pub metrics: serde_json::Value,
    pub allocation: serde_json::Value,
    /// Per node ID, its desired forwarding state as JSON.
    pub desired_state: BTreeMap<String, serde_json::Value>,
}

/// Why a plan cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum PlanningError {
    #[error("the topology is empty: import one first (aiwan topology import)")]
    NoTopology,
}

/// The nodes where a site's traffic enters and leaves the WAN: its WAN
/// routers, else (a site without one) all its nodes.
fn site_nodes(topology: &Topology, network: &Network, site: &str) -> Vec<usize> {
    let index = network.index();
    let of_site: Vec<&aiwan_planner::Node> = topology
        .nodes
        .iter()
        .filter(|n| n.site.as_deref() == Some(site))
        .collect();
    let routers: Vec<usize> = of_site
        .iter()
        .filter(|n| n.role == NodeRole::WanRouter)
        .filter_map(|n| index.get(n.id.as_str()).copied())
        .collect();
    if !routers.is_empty() {
        return routers;
    }
    of_site
        .iter()
        .filter_map(|n| index.get(n.id.as_str()).copied())
        .collect()
}

/// The node a prefix belongs to: the node originating the longest prefix
/// that contains it; failing that, the WAN routers of the site owning a
/// containing prefix.
fn prefix_nodes(topology: &Topology, network: &Network, prefix: &IpNet) -> Vec<usize> {
    let index = network.index();
    let best_node = topology
        .nodes
        .iter()
        .flat_map(|n| n.prefixes.iter().map(move |p| (p, n)))
        .filter(|(p, _)| p.contains(prefix))
        .max_by_key(|(p, _)| p.prefix_len());
    if let Some((_, node)) = best_node {
        // Traffic for a fabric node enters the WAN at its site's routers.
        if let Some(site) = &node.site
            && node.role != NodeRole::WanRouter
        {
            return site_nodes(topology, network, site);
        }
        return index.get(node.id.as_str()).copied().into_iter().collect();
    }
    let owning_site = topology
        .sites
        .iter()
        .find(|s| s.prefixes.iter().any(|p| p.contains(prefix)));
    match owning_site {
        Some(site) => site_nodes(topology, network, &site.id),
        None => Vec::new(),
    }
}

fn endpoint_nodes(topology: &Topology, network: &Network, endpoint: &Endpoint) -> Vec<usize> {
    match endpoint {
        Endpoint::Site(site) => site_nodes(topology, network, site),
        Endpoint::Prefix(prefix) => prefix_nodes(topology, network, prefix),
    }
}

fn class_of(class: TrafficClass) -> Class {
    match class {
        TrafficClass::AiSync => Class::AiSync,
        TrafficClass::AiBulk => Class::AiBulk,
        TrafficClass::BestEffort => Class::BestEffort,
    }
}

/// Demands of the jobs active at `now_ms` (plus `extra`, a hypothetical job
/// taken as active), and the job endpoints that map to no node.
pub fn job_demands(
    topology: &Topology,
    network: &Network,
    jobs: &[JobRecord],
    now_ms: i64,
) -> (Vec<ClassDemand>, Vec<String>) {
    let mut demands = Vec::new();
    let mut unresolved = Vec::new();
    let mut finder = ShortestPaths::new(network);
    for record in jobs {
        if record.state_at(now_ms) != JobState::Active {
            continue;
        }
        let job = &record.job;
        for demand in &job.demands {
            let (Some(src), Some(dst)) = (
                usize::try_from(demand.src_position)
                    .ok()
                    .and_then(|i| job.sources.get(i)),
                usize::try_from(demand.dst_position)
                    .ok()
                    .and_then(|i| job.destinations.get(i)),
            ) else {
                continue;
            };
            let sources = endpoint_nodes(topology, network, src);
            let destinations = endpoint_nodes(topology, network, dst);
            if sources.is_empty() || destinations.is_empty() {
                unresolved.push(format!(
                    "jobs/{}: {} -> {} maps to no node of the topology",
                    job.job_id,
                    describe(src),
                    describe(dst)
                ));
                continue;
            }
            // The pair's rate is spread evenly over the ingress and egress
            // routers (a site with two WAN routers sends half through each).
            let share = demand.rate_bps as f64 / (sources.len() * destinations.len()) as f64;
            for &s in &sources {
                for &d in &destinations {
                    if s == d {
                        continue; // both ends behind the same router: no WAN traffic
                    }
                    let class = class_of(job.class);
                    let max_latency_us = if let Some(bound) = job.max_latency_us {
                        Some(bound as f64)
                    } else if class == Class::AiSync {
                        finder
                            .shortest(s, d, &[], &[])
                            .map(|p| p.latency_us * SYNC_LATENCY_STRETCH)
                            .filter(|bound| *bound > 0.0)
                    } else {
                        None
                    };
                    demands.push(ClassDemand {
                        src: s,
                        dst: d,
                        rate: share,
                        class,
                        max_latency_us,
                    });
                }
            }
        }
    }
    (demands, unresolved)
}

fn describe(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Site(site) => format!("sites/{site}"),
        Endpoint::Prefix(prefix) => prefix.to_string(),
    }
}

/// Plans the jobs on the topology.
pub fn compute_plan(
    topology: &Topology,
    jobs: &[JobRecord],
    now_ms: i64,
) -> Result<ComputedPlan, PlanningError> {
    if topology.nodes.is_empty() {
        return Err(PlanningError::NoTopology);
    }
    let network = Network::from_topology(topology);
    let (demands, unresolved) = job_demands(topology, &network, jobs, now_ms);
    let plan = plan_classes(&network, &demands, PATHS_PER_PAIR, &FastOptions::default());
    Ok(describe_plan(&network, &plan, unresolved))
}

fn describe_plan(network: &Network, plan: &ClassPlan, unresolved: Vec<String>) -> ComputedPlan {
    let satisfaction = |class: Class| {
        plan.outcomes
            .iter()
            .find(|o| o.class == class)
            .map(|o| o.satisfaction)
            .unwrap_or(1.0)
    };
    // All classes together, for the failure what-if.
    let mut combined = Problem {
        network: network.clone(),
        demands: Vec::new(),
    };
    let mut combined_allocation = Allocation { splits: Vec::new() };
    let mut entries = Vec::new();
    for outcome in &plan.outcomes {
        for (demand, split) in outcome
            .problem
            .demands
            .iter()
            .zip(&outcome.allocation.splits)
        {
            combined.demands.push(demand.clone());
            combined_allocation.splits.push(split.clone());
            let paths: Vec<serde_json::Value> = demand
                .paths
                .iter()
                .zip(split)
                .filter(|(_, share)| **share > 0.0)
                .map(|(path, share)| {
                    let mut nodes = vec![network.nodes[demand.src].clone()];
                    nodes.extend(
                        path.iter()
                            .map(|&e| network.nodes[network.edges[e].dst].clone()),
                    );
                    serde_json::json!({ "nodes": nodes, "fraction": share })
                })
                .collect();
            entries.push(serde_json::json!({
                "src": network.nodes[demand.src],
                "dst": network.nodes[demand.dst],
                "class": outcome.class.as_str(),
                "rate_bps": demand.rate,
                "paths": paths,
            }));
        }
    }
    let worst = worst_single_failure(&combined, &combined_allocation);
    let unplaced: Vec<serde_json::Value> = plan
        .unplaced
        .iter()
        .map(|u| {
            serde_json::json!({
                "src": network.nodes[u.src], "dst": network.nodes[u.dst],
                "class": u.class.as_str(), "rate_bps": u.rate, "reason": u.reason,
            })
        })
        .chain(
            unresolved
                .iter()
                .map(|text| serde_json::json!({ "reason": text })),
        )
        .collect();
    let metrics = serde_json::json!({
        "mlu": plan.mlu,
        "ai_sync_satisfaction": satisfaction(Class::AiSync),
        "ai_bulk_satisfaction": satisfaction(Class::AiBulk),
        "best_effort_satisfaction": satisfaction(Class::BestEffort),
        "worst_failure_mlu": worst.as_ref().map(|w| w.mlu).unwrap_or(0.0),
        "worst_failure_link": worst.as_ref().and_then(|w| w.failed_edges.first()).map(|&e| {
            format!("{}->{}", network.nodes[network.edges[e].src], network.nodes[network.edges[e].dst])
        }),
        "demands": combined.demands.len(),
        "unplaced": unplaced,
    });
    ComputedPlan {
        mlu: plan.mlu,
        metrics,
        allocation: serde_json::Value::Array(entries),
        desired_state: desired_state(network, &combined, &combined_allocation),
    }
}

/// Per node, per destination node, the share of traffic to send to each
/// next hop (weighted multipath), summed over all demands through the node.
fn desired_state(
    network: &Network,
    problem: &Problem,
    allocation: &Allocation,
) -> BTreeMap<String, serde_json::Value> {
    // node -> destination -> next hop -> bit/s
    let mut flows: BTreeMap<usize, BTreeMap<usize, BTreeMap<usize, f64>>> = BTreeMap::new();
    for (demand, split) in problem.demands.iter().zip(&allocation.splits) {
        for (path, share) in demand.paths.iter().zip(split) {
            let rate = demand.rate * share;
            if rate <= 0.0 {
                continue;
            }
            for &e in path {
                let edge = &network.edges[e];
                *flows
                    .entry(edge.src)
                    .or_default()
                    .entry(demand.dst)
                    .or_default()
                    .entry(edge.dst)
                    .or_default() += rate;
            }
        }
    }
    flows
        .into_iter()
        .map(|(node, by_destination)| {
            let routes: Vec<serde_json::Value> = by_destination
                .into_iter()
                .map(|(dst, hops)| {
                    let total: f64 = hops.values().sum();
                    let next_hops: Vec<serde_json::Value> = hops
                        .into_iter()
                        .map(|(hop, rate)| {
                            serde_json::json!({ "next_hop": network.nodes[hop], "weight": rate / total })
                        })
                        .collect();
                    serde_json::json!({ "destination": network.nodes[dst], "next_hops": next_hops })
                })
                .collect();
            (network.nodes[node].clone(), serde_json::json!({ "routes": routes }))
        })
        .collect()
}
