//! From what the controller stores to what the planner solves, and back:
//! active AI jobs become class demands between nodes, the planner places
//! them, and the result becomes a plan record with its metrics, allocation
//! and per-router desired state (UCMP next-hop weights).

use std::collections::BTreeMap;

use aiwan_planner::allocation::{Allocation, Problem};
use aiwan_planner::classes::{
    Class, ClassDemand, ClassPlan, PathCache, Robustness, plan_classes_with,
};
use aiwan_planner::failures::worst_single_failure;
use aiwan_planner::fast::FastOptions;
use aiwan_planner::network::{Network, TrafficMatrix};
use aiwan_planner::paths::ShortestPaths;
use aiwan_planner::{NodeRole, Topology};
use ipnet::IpNet;

use crate::model::{Endpoint, JobRecord, JobState, PathPin, TrafficClass};

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
pub(crate) fn site_nodes(topology: &Topology, network: &Network, site: &str) -> Vec<usize> {
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
pub(crate) fn prefix_nodes(topology: &Topology, network: &Network, prefix: &IpNet) -> Vec<usize> {
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

/// Demands of the jobs active at `now_ms` at the rates admission
/// guaranteed them ([`JobRecord::planned_share`]; queued jobs are not
/// active), a scheduled volume job at its pace
/// ([`JobRecord::planned_pair_rate_bps`]), and the job endpoints that map
/// to no node.
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
        if let Some(pin) = &job.pin {
            match pinned_demand(topology, network, record, pin) {
                Ok(demand) => demands.push(demand),
                Err(reason) => unresolved.push(format!("jobs/{}: {reason}", job.job_id)),
            }
            continue;
        }
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
            // The pair's rate (what admission guaranteed of it) is spread
            // evenly over the ingress and egress routers (a site with two
            // WAN routers sends half through each).
            let share =
                record.planned_pair_rate_bps(demand) / (sources.len() * destinations.len()) as f64;
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
                        pinned_path: None,
                    });
                }
            }
        }
    }
    (demands, unresolved)
}

/// A pinned job's one demand: all of its rate on its path, which must
/// start where its source enters the WAN and end where its destination
/// leaves it.
fn pinned_demand(
    topology: &Topology,
    network: &Network,
    record: &JobRecord,
    pin: &PathPin,
) -> Result<ClassDemand, String> {
    let job = &record.job;
    if let Some(host) = pin.path.iter().find(|id| {
        topology
            .nodes
            .iter()
            .any(|n| &n.id == *id && n.role == NodeRole::Host)
    }) {
        return Err(format!(
            "pinned path: {host} is a host; a path runs between routers"
        ));
    }
    let nodes = pin_nodes(network, pin)?;
    let edges = pin_edges(network, pin, &nodes)?;
    let (Some(source), Some(destination)) = (job.sources.first(), job.destinations.first()) else {
        return Err("a pinned job needs one source and one destination".into());
    };
    let (first, last) = (nodes[0], nodes[nodes.len() - 1]);
    if !endpoint_nodes(topology, network, source).contains(&first) {
        return Err(format!(
            "the pinned path starts at {}, where {} does not enter the WAN",
            pin.path[0],
            describe(source)
        ));
    }
    if !endpoint_nodes(topology, network, destination).contains(&last) {
        return Err(format!(
            "the pinned path ends at {}, where {} does not leave the WAN",
            pin.path[pin.path.len() - 1],
            describe(destination)
        ));
    }
    Ok(ClassDemand {
        src: first,
        dst: last,
        rate: job
            .demands
            .iter()
            .map(|d| record.planned_pair_rate_bps(d))
            .sum::<f64>(),
        class: class_of(job.class),
        max_latency_us: None,
        pinned_path: Some(edges),
    })
}

fn pin_nodes(network: &Network, pin: &PathPin) -> Result<Vec<usize>, String> {
    let index = network.index();
    pin.path
        .iter()
        .map(|id| {
            index
                .get(id.as_str())
                .copied()
                .ok_or_else(|| format!("pinned path: node {id} is not in the topology"))
        })
        .collect()
}

fn pin_edges(network: &Network, pin: &PathPin, nodes: &[usize]) -> Result<Vec<usize>, String> {
    nodes
        .windows(2)
        .zip(pin.path.windows(2))
        .map(|(pair, ids)| {
            network
                .edges
                .iter()
                .position(|e| e.src == pair[0] && e.dst == pair[1])
                .ok_or_else(|| format!("pinned path: no link from {} to {}", ids[0], ids[1]))
        })
        .collect()
}

/// The prefixes a job's destination stands for: a prefix itself; a site's
/// own prefixes and those of its nodes.
fn destination_prefixes(topology: &Topology, endpoint: &Endpoint) -> Vec<IpNet> {
    match endpoint {
        Endpoint::Prefix(prefix) => vec![*prefix],
        Endpoint::Site(site) => {
            let own = topology
                .sites
                .iter()
                .filter(|s| &s.id == site)
                .flat_map(|s| s.prefixes.iter().copied());
            let of_nodes = topology
                .nodes
                .iter()
                .filter(|n| n.site.as_ref() == Some(site))
                .flat_map(|n| n.prefixes.iter().copied());
            let mut prefixes: Vec<IpNet> = own.chain(of_nodes).collect();
            prefixes.sort();
            prefixes.dedup();
            prefixes
        }
    }
}

/// The SRv6 pins of the active pinned jobs whose paths hold, by head-end
/// router: what `southbound::render` turns into policies and SIDs.
fn pins_by_router(
    topology: &Topology,
    network: &Network,
    jobs: &[JobRecord],
    now_ms: i64,
) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut pins: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for record in jobs {
        let (Some(pin), JobState::Active) = (&record.job.pin, record.state_at(now_ms)) else {
            continue;
        };
        if pinned_demand(topology, network, record, pin).is_err() {
            continue; // reported with the demands
        }
        let Some(destination) = record.job.destinations.first() else {
            continue;
        };
        pins.entry(pin.path[0].clone())
            .or_default()
            .push(serde_json::json!({
                "job": record.job.job_id,
                "path": pin.path,
                "prefixes": destination_prefixes(topology, destination),
                "ip_protocol": pin.ip_protocol,
                "destination_ports": pin.destination_ports,
            }));
    }
    pins
}

fn describe(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Site(site) => format!("sites/{site}"),
        Endpoint::Prefix(prefix) => prefix.to_string(),
    }
}

/// Traffic the closed loop measured, for a plan to serve besides the
/// declared jobs: per scenario (the primary, whose figures the plan
/// reports, last) one matrix per class (bit/s, indexed as
/// [`Class::ALL`]), its nodes indexed as `Network::from_topology` indexes
/// the topology's; and how one split serves them.
#[derive(Debug, Clone, Default)]
pub struct MeasuredDemand {
    pub scenarios: Vec<[TrafficMatrix; 3]>,
    pub robustness: Robustness,
}

/// Plans the jobs on the topology.
pub fn compute_plan(
    topology: &Topology,
    jobs: &[JobRecord],
    now_ms: i64,
) -> Result<ComputedPlan, PlanningError> {
    compute_plan_with(
        topology,
        jobs,
        now_ms,
        None,
        &crate::collective::Placements::new(),
        &mut PathCache::default(),
    )
}

/// Plans the jobs and, when given, the measured traffic: declared jobs are
/// known traffic, and the measurement adds what they do not account for
/// (per node pair and class, the measured rate beyond the declared one),
/// so a job that is declared and sending is not counted twice. Every
/// scenario of the measurement is served by one split per class
/// ([`aiwan_planner::classes::plan_classes_with`], best in the worst case
/// or on average as the measurement says); the plan's figures are the
/// primary scenario's.
///
/// The flows of collective jobs are also placed on the fabric's spines
/// ([`crate::collective`]), keeping `previous` (the current plan's
/// placements) where it holds.
pub fn compute_plan_with(
    topology: &Topology,
    jobs: &[JobRecord],
    now_ms: i64,
    measured: Option<&MeasuredDemand>,
    previous: &crate::collective::Placements,
    paths: &mut PathCache,
) -> Result<ComputedPlan, PlanningError> {
    if topology.nodes.is_empty() {
        return Err(PlanningError::NoTopology);
    }
    let network = Network::from_topology(topology);
    let (demands, mut unresolved) = job_demands(topology, &network, jobs, now_ms);
    let collectives = crate::collective::place_collectives(topology, jobs, now_ms, previous);
    unresolved.extend(collectives.unresolved);
    let scenarios: Vec<Vec<ClassDemand>> = match measured {
        Some(measured) if !measured.scenarios.is_empty() => measured
            .scenarios
            .iter()
            .map(|matrices| with_measured(&network, &demands, matrices))
            .collect(),
        _ => vec![demands],
    };
    let primary = scenarios.len() - 1;
    let robustness = measured.map(|m| m.robustness).unwrap_or_default();
    let plan = plan_classes_with(
        &network,
        &scenarios,
        primary,
        robustness,
        PATHS_PER_PAIR,
        &FastOptions::default(),
        paths,
    );
    let mut computed = describe_plan(&network, &plan, unresolved);
    if let Some(object) = computed.metrics.as_object_mut() {
        object.insert("scenarios".into(), serde_json::json!(scenarios.len()));
        let robustness = match robustness {
            Robustness::Worst => "worst",
            Robustness::Mean => "mean",
        };
        object.insert("scenario_objective".into(), serde_json::json!(robustness));
        let spilled: Vec<&str> = plan
            .outcomes
            .iter()
            .filter(|o| o.spilled)
            .map(|o| o.class.as_str())
            .collect();
        object.insert("spilled_classes".into(), serde_json::json!(spilled));
        if let Some(figures) = collectives.metrics {
            object.insert("collective_placement".into(), figures);
        }
    }
    for (router, pins) in pins_by_router(topology, &network, jobs, now_ms) {
        let state = computed
            .desired_state
            .entry(router)
            .or_insert_with(|| serde_json::json!({ "routes": [] }));
        state["pins"] = serde_json::Value::Array(pins);
    }
    for (leaf, flows) in collectives.by_leaf {
        let state = computed
            .desired_state
            .entry(leaf)
            .or_insert_with(|| serde_json::json!({ "routes": [] }));
        state["placements"] = serde_json::json!(flows);
    }
    Ok(computed)
}

/// The declared demands plus, per node pair and class, the measured rate
/// beyond what the jobs declare there. Measured ai-sync traffic keeps the
/// default latency bound of ai-sync jobs (a preference: the planner spills
/// past it when it does not fit).
fn with_measured(
    network: &Network,
    declared: &[ClassDemand],
    matrices: &[TrafficMatrix; 3],
) -> Vec<ClassDemand> {
    let mut known: BTreeMap<(usize, usize, Class), f64> = BTreeMap::new();
    for demand in declared {
        *known
            .entry((demand.src, demand.dst, demand.class))
            .or_default() += demand.rate;
    }
    let mut demands = declared.to_vec();
    let mut finder = ShortestPaths::new(network);
    for (class, matrix) in Class::ALL.into_iter().zip(matrices) {
        for (src, dst, rate) in matrix.demands() {
            let extra = rate - known.get(&(src, dst, class)).copied().unwrap_or(0.0);
            if extra.is_nan() || extra <= 0.0 {
                continue;
            }
            let max_latency_us = if class == Class::AiSync {
                finder
                    .shortest(src, dst, &[], &[])
                    .map(|p| p.latency_us * SYNC_LATENCY_STRETCH)
                    .filter(|bound| *bound > 0.0)
            } else {
                None
            };
            demands.push(ClassDemand {
                src,
                dst,
                rate: extra,
                class,
                max_latency_us,
                pinned_path: None,
            });
        }
    }
    demands
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
    let mut combined_pinned = Vec::new();
    // Per edge: planned ai-sync, ai-bulk and best-effort bit/s.
    let mut class_loads = vec![[0.0_f64; 3]; network.edges.len()];
    let mut entries = Vec::new();
    for outcome in &plan.outcomes {
        for (i, (demand, split)) in outcome
            .problem
            .demands
            .iter()
            .zip(&outcome.allocation.splits)
            .enumerate()
        {
            let pinned = outcome.pinned.get(i).copied().unwrap_or(false);
            combined_pinned.push(pinned);
            let slot = match outcome.class {
                Class::AiSync => 0,
                Class::AiBulk => 1,
                Class::BestEffort => 2,
            };
            // What the plan carries of it: a guaranteed class that does
            // not fit is admitted in part (see ClassOutcome::admitted).
            let admitted = demand.rate * outcome.admitted;
            for (path, share) in demand.paths.iter().zip(split) {
                for &e in path {
                    if let Some(loads) = class_loads.get_mut(e) {
                        loads[slot] += admitted * share.max(0.0);
                    }
                }
            }
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
                "admitted_bps": admitted,
                "paths": paths,
                "pinned": pinned,
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
    let mut desired = desired_state(network, &combined, &combined_allocation, &combined_pinned);
    for (router, limits) in class_limits(network, &class_loads) {
        let state = desired
            .entry(router)
            .or_insert_with(|| serde_json::json!({ "routes": [] }));
        state["rate_limits"] = serde_json::Value::Array(limits);
    }
    ComputedPlan {
        mlu: plan.mlu,
        metrics,
        allocation: serde_json::Value::Array(entries),
        desired_state: desired,
    }
}

/// Where the plan asks for rate limits: every link that carries planned
/// ai-sync traffic together with ai-bulk or best-effort traffic, so that
/// the latter cannot take the bandwidth reserved for the former. Per
/// router, the links' planned loads by class; `southbound::render` makes
/// them into htb classes on the link's interface.
fn class_limits(
    network: &Network,
    class_loads: &[[f64; 3]],
) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut limits: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (edge, [sync, bulk, best_effort]) in network.edges.iter().zip(class_loads) {
        if *sync <= 0.0 || bulk + best_effort <= 0.0 {
            continue;
        }
        limits
            .entry(network.nodes[edge.src].clone())
            .or_default()
            .push(serde_json::json!({
                "next_hop": network.nodes[edge.dst],
                "capacity_bps": edge.capacity,
                "ai_sync_bps": sync,
                "ai_bulk_bps": bulk,
                "best_effort_bps": best_effort,
            }));
    }
    limits
}

/// Per node, per destination node, the share of traffic to send to each
/// next hop (weighted multipath), summed over all demands through the node
/// but the pinned ones, which SRv6 carries past the weights.
fn desired_state(
    network: &Network,
    problem: &Problem,
    allocation: &Allocation,
    pinned: &[bool],
) -> BTreeMap<String, serde_json::Value> {
    // node -> destination -> next hop -> bit/s
    let mut flows: BTreeMap<usize, BTreeMap<usize, BTreeMap<usize, f64>>> = BTreeMap::new();
    for (i, (demand, split)) in problem.demands.iter().zip(&allocation.splits).enumerate() {
        if pinned.get(i).copied().unwrap_or(false) {
            continue;
        }
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
    // Per destination the hops form a graph whose cycles would be routing
    // loops: each demand's paths are loop-free, but two demands towards the
    // same destination may cross a link in opposite directions, and
    // routers forward by destination alone. Cancelling each cycle's
    // circulation keeps every node's traffic delivered and only lightens
    // links.
    let destinations: std::collections::BTreeSet<usize> = flows
        .values()
        .flat_map(|by_destination| by_destination.keys().copied())
        .collect();
    for destination in destinations {
        let mut graph: BTreeMap<usize, BTreeMap<usize, f64>> = flows
            .iter()
            .filter_map(|(node, by_destination)| {
                Some((*node, by_destination.get(&destination)?.clone()))
            })
            .collect();
        cancel_cycles(&mut graph);
        for (node, by_destination) in flows.iter_mut() {
            match graph.remove(node).filter(|hops| !hops.is_empty()) {
                Some(hops) => {
                    by_destination.insert(destination, hops);
                }
                None => {
                    by_destination.remove(&destination);
                }
            }
        }
    }
    flows.retain(|_, by_destination| !by_destination.is_empty());
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

/// Rates below this (bit/s) are rounding left over by cycle cancelling.
const NEGLIGIBLE_BPS: f64 = 1e-3;

/// Removes every directed cycle of a flow graph (node -> next hop -> bit/s)
/// by subtracting the smallest flow around it, until none is left.
fn cancel_cycles(graph: &mut BTreeMap<usize, BTreeMap<usize, f64>>) {
    while let Some(cycle) = find_cycle(graph) {
        let smallest = cycle
            .windows(2)
            .map(|pair| graph[&pair[0]][&pair[1]])
            .fold(f64::INFINITY, f64::min);
        for pair in cycle.windows(2) {
            if let Some(hops) = graph.get_mut(&pair[0]) {
                if let Some(rate) = hops.get_mut(&pair[1]) {
                    *rate -= smallest;
                }
                hops.retain(|_, rate| *rate > NEGLIGIBLE_BPS);
            }
        }
    }
}

/// A cycle of `graph` as its nodes, the first repeated at the end.
fn find_cycle(graph: &BTreeMap<usize, BTreeMap<usize, f64>>) -> Option<Vec<usize>> {
    // Iterative depth-first search; 0 unseen, 1 on the stack, 2 done.
    let mut state: BTreeMap<usize, u8> = BTreeMap::new();
    for &start in graph.keys() {
        if state.get(&start).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> = vec![(
            start,
            graph
                .get(&start)
                .map(|h| h.keys().copied().collect())
                .unwrap_or_default(),
        )];
        state.insert(start, 1);
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) => match state.get(&next).copied().unwrap_or(0) {
                    0 => {
                        state.insert(next, 1);
                        let hops = graph
                            .get(&next)
                            .map(|h| h.keys().copied().collect())
                            .unwrap_or_default();
                        stack.push((next, hops));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == next)?;
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    _ => {}
                },
                None => {
                    state.insert(node, 2);
                    stack.pop();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_destination_cycles_are_cancelled() {
        // Towards d (3): 0 sends via 1 then 2; 2 sends via 1: 1 -> 2 -> 1
        // is a loop of 2 bit/s, which goes; everything still reaches 3.
        let mut graph: BTreeMap<usize, BTreeMap<usize, f64>> = BTreeMap::from([
            (0, BTreeMap::from([(1, 5.0)])),
            (1, BTreeMap::from([(2, 3.0), (3, 4.0)])),
            (2, BTreeMap::from([(1, 2.0), (3, 1.0)])),
        ]);
        cancel_cycles(&mut graph);
        assert_eq!(graph[&1], BTreeMap::from([(2, 1.0), (3, 4.0)]));
        assert_eq!(graph[&2], BTreeMap::from([(3, 1.0)]));
        assert!(find_cycle(&graph).is_none());
    }
    use crate::southbound::fixtures::diamond_with_hosts as diamond;

    fn job(id: &str, class: TrafficClass, rate_bps: i64, path: &[&str]) -> JobRecord {
        let mut job =
            crate::bench_admission::site_to_site_job(id.into(), class, "a", "b", rate_bps, 0);
        job.pin = (!path.is_empty()).then(|| PathPin {
            path: path.iter().map(|n| n.to_string()).collect(),
            ip_protocol: Some(17),
            destination_ports: Some((4791, 4791)),
        });
        JobRecord::new(job, "test", 0, None)
    }

    #[test]
    fn pinned_paths_that_do_not_hold_are_reported() {
        let topology = diamond();
        let network = Network::from_topology(&topology);
        let cases: [(&[&str], &str); 5] = [
            (&["r1", "r3", "r4"], ""),
            (
                &["r1", "r9", "r4"],
                "pinned path: node r9 is not in the topology",
            ),
            (&["r1", "r4"], "pinned path: no link from r1 to r4"),
            (
                &["r2", "r4"],
                "the pinned path starts at r2, where sites/a does not enter the WAN",
            ),
            (
                &["h1", "r1", "r2", "r4"],
                "pinned path: h1 is a host; a path runs between routers",
            ),
        ];
        for (path, problem) in cases {
            let record = job("p", TrafficClass::BestEffort, 1_000_000, path);
            let pin = record.job.pin.clone().expect("pin");
            match pinned_demand(&topology, &network, &record, &pin) {
                Ok(demand) => {
                    assert_eq!(problem, "", "{path:?}");
                    assert!(demand.pinned_path.is_some());
                    assert_eq!(demand.rate, 1_000_000.0);
                }
                Err(reason) => assert_eq!(reason, problem, "{path:?}"),
            }
        }
    }

    #[test]
    fn a_pinned_job_rides_its_path_and_stays_out_of_the_weights() {
        // Both paths as fast, so ai-sync may use either.
        let mut topology = diamond();
        for link in &mut topology.links {
            link.latency_us = 1000;
        }
        // 12G of ai-sync split 6/6; then 1G of best-effort pinned via r3.
        let jobs = [
            job("sync", TrafficClass::AiSync, 12_000_000_000, &[]),
            job(
                "pinned",
                TrafficClass::BestEffort,
                1_000_000_000,
                &["r1", "r3", "r4"],
            ),
        ];
        let plan = compute_plan(&topology, &jobs, 1).expect("plan");
        let r1 = &plan.desired_state["r1"];
        let pins = r1["pins"].as_array().expect("pins at r1");
        assert_eq!(pins.len(), 1);
        assert_eq!(pins[0]["path"], serde_json::json!(["r1", "r3", "r4"]));
        assert_eq!(
            pins[0]["prefixes"],
            serde_json::json!(["10.4.0.0/24", "10.4.1.0/24", "fd00:4::/64"])
        );
        assert_eq!(
            pins[0]["destination_ports"],
            serde_json::json!([4791, 4791])
        );
        // r3's links carry 7G: the pin counts in the MLU...
        assert!((plan.mlu - 0.7).abs() < 1e-6, "mlu {}", plan.mlu);
        // ...but not in the weights, which stay ai-sync's 50/50 (7/13 via
        // r3 had the pinned gigabit been counted).
        let routes = r1["routes"].as_array().expect("routes");
        let to_r4 = routes
            .iter()
            .find(|r| r["destination"] == "r4")
            .expect("route to r4");
        for hop in to_r4["next_hops"].as_array().expect("hops") {
            let weight = hop["weight"].as_f64().expect("weight");
            assert!((weight - 0.5).abs() < 1e-6, "{to_r4}");
        }
    }
}
