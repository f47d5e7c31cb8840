//! Ring collectives in the fabric: the flows of the active collective jobs
//! placed on spines by `aiwan_planner::placement`, as each source leaf's
//! part of a plan (`"placements"` in its desired state), which
//! `southbound::render` makes into per-flow FIB rules into per-spine
//! tables.
//!
//! A flow is keyed `{job}/{member}` (member `i` sends to member `i + 1`),
//! and the previous plan's placements are handed back so that a flow keeps
//! its spine while others come and go.

use std::collections::BTreeMap;

use aiwan_planner::placement::{Fabric, FabricFlow, place_flows};
use aiwan_planner::{NodeRole, Topology};
use ipnet::IpNet;

use crate::model::{Endpoint, JobRecord, JobState};

/// Flow key -> spine, as a plan placed them.
pub type Placements = BTreeMap<String, String>;

/// One placed flow at its source leaf, as the plan stores it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlacedFlow {
    /// `{job}/{member}`.
    pub key: String,
    pub spine: String,
    pub source: IpNet,
    pub destination: IpNet,
    pub ip_protocol: u8,
    pub destination_port: u16,
}

/// What placing the collectives gave: per source leaf its flows, the
/// figures for the plan's metrics, and the members that could not be
/// placed (for the plan's unplaced list).
#[derive(Debug, Clone, Default)]
pub struct CollectivePlan {
    pub by_leaf: BTreeMap<String, Vec<PlacedFlow>>,
    pub metrics: Option<serde_json::Value>,
    pub unresolved: Vec<String>,
}

/// The host originating the longest prefix that contains `prefix`.
fn host_of<'a>(topology: &'a Topology, prefix: &IpNet) -> Option<&'a aiwan_planner::Node> {
    topology
        .nodes
        .iter()
        .flat_map(|n| n.prefixes.iter().map(move |p| (p, n)))
        .filter(|(p, _)| p.contains(prefix))
        .max_by_key(|(p, _)| p.prefix_len())
        .map(|(_, node)| node)
        .filter(|node| node.role == NodeRole::Host)
}

/// The leaf a host hangs off: the first (by ID) leaf it has a link to.
fn leaf_of(topology: &Topology, host: &str) -> Option<String> {
    let role: BTreeMap<&str, NodeRole> = topology
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.role))
        .collect();
    topology
        .links
        .iter()
        .filter(|l| l.src == host && l.admin_up)
        .filter(|l| role.get(l.dst.as_str()) == Some(&NodeRole::Leaf))
        .map(|l| l.dst.clone())
        .min()
}

/// Places the flows of the collective jobs active at `now_ms`.
pub fn place_collectives(
    topology: &Topology,
    jobs: &[JobRecord],
    now_ms: i64,
    previous: &Placements,
) -> CollectivePlan {
    let mut plan = CollectivePlan::default();
    let mut flows = Vec::new();
    // Per flow key: its source leaf and how it is matched.
    let mut matches: BTreeMap<String, (String, PlacedFlow)> = BTreeMap::new();
    for record in jobs {
        let job = &record.job;
        let (Some(collective), JobState::Active) = (job.collective, record.state_at(now_ms)) else {
            continue;
        };
        for demand in &job.demands {
            let position = usize::try_from(demand.src_position).unwrap_or(usize::MAX);
            let (Some(Endpoint::Prefix(source)), Some(Endpoint::Prefix(destination))) =
                (job.sources.get(position), job.destinations.get(position))
            else {
                continue;
            };
            let key = format!("{}/{position}", job.job_id);
            let leaves = [source, destination].map(|prefix| {
                host_of(topology, prefix).and_then(|host| leaf_of(topology, &host.id))
            });
            let [Some(source_leaf), Some(destination_leaf)] = leaves else {
                plan.unresolved.push(format!(
                    "jobs/{}: collective member {position} ({source} -> {destination}) is not a \
                     host behind a leaf",
                    job.job_id
                ));
                continue;
            };
            let Some(port) = u16::try_from(position)
                .ok()
                .and_then(|i| collective.first_port.checked_add(i))
            else {
                continue;
            };
            if source_leaf == destination_leaf {
                continue; // under one leaf: no spine to choose
            }
            flows.push(FabricFlow {
                key: key.clone(),
                source_leaf: source_leaf.clone(),
                destination_leaf,
                rate: demand.rate_bps as f64,
            });
            matches.insert(
                key.clone(),
                (
                    source_leaf,
                    PlacedFlow {
                        key,
                        spine: String::new(),
                        source: *source,
                        destination: *destination,
                        ip_protocol: collective.ip_protocol,
                        destination_port: port,
                    },
                ),
            );
        }
    }
    if flows.is_empty() {
        return plan;
    }
    let fabric = Fabric::from_topology(topology);
    match place_flows(&fabric, &flows, previous) {
        Ok(placement) => {
            for (key, spine) in &placement.spine_of {
                if let Some((leaf, flow)) = matches.remove(key) {
                    plan.by_leaf.entry(leaf).or_default().push(PlacedFlow {
                        spine: spine.clone(),
                        ..flow
                    });
                }
            }
            plan.metrics = Some(serde_json::json!({
                "flows": placement.spine_of.len(),
                "max_utilization": placement.max_utilization,
                "lower_bound": placement.lower_bound,
                "moved": placement.moved,
            }));
        }
        Err(error) => plan
            .unresolved
            .push(format!("collective placement: {error}")),
    }
    plan
}

/// The placements a stored plan holds (its per-node desired state).
pub fn placements_in(desired: &BTreeMap<String, serde_json::Value>) -> Placements {
    desired
        .values()
        .filter_map(|state| state.get("placements"))
        .filter_map(|list| serde_json::from_value::<Vec<PlacedFlow>>(list.clone()).ok())
        .flatten()
        .map(|flow| (flow.key, flow.spine))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CollectiveFlows, DemandRecord, NewJob, TrafficClass};

    use crate::southbound::fixtures::fabric;

    /// The ring the lab's scenario runs: it visits the leaves in turn.
    const RING: [&str; 8] = [
        "10.0.1.1/32",
        "10.0.3.1/32",
        "10.0.5.1/32",
        "10.0.7.1/32",
        "10.0.2.1/32",
        "10.0.4.1/32",
        "10.0.6.1/32",
        "10.0.8.1/32",
    ];

    fn ring(members: &[&str]) -> JobRecord {
        let sources: Vec<Endpoint> = members
            .iter()
            .map(|m| Endpoint::Prefix(m.parse().expect("prefix")))
            .collect();
        let mut destinations = sources.clone();
        destinations.rotate_left(1);
        JobRecord::new(
            NewJob {
                job_id: "allreduce".into(),
                tenant: "t".into(),
                class: TrafficClass::AiSync,
                demands: (0..sources.len() as i64)
                    .map(|i| DemandRecord {
                        src_position: i,
                        dst_position: i,
                        rate_bps: 100_000_000,
                    })
                    .collect(),
                sources,
                destinations,
                rate_bps: 400_000_000,
                volume_bytes: 0,
                deadline_ms: None,
                start_ms: 0,
                end_ms: None,
                priority: 0,
                max_latency_us: None,
                pin: None,
                collective: Some(CollectiveFlows {
                    ip_protocol: 6,
                    first_port: 5201,
                }),
                admission_policy: Default::default(),
                burst: None,
            },
            "test",
            0,
            None,
        )
    }

    #[test]
    fn a_ring_is_spread_over_the_spines_at_each_leaf() {
        let topology = fabric();
        let plan = place_collectives(&topology, &[ring(&RING)], 1, &Placements::new());
        assert!(plan.unresolved.is_empty(), "{:?}", plan.unresolved);
        // Each leaf sends two flows, on two different spines; each leaf
        // receives two, from two different spines.
        let mut into: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (leaf, flows) in &plan.by_leaf {
            assert_eq!(flows.len(), 2, "{leaf}: {flows:?}");
            assert_ne!(flows[0].spine, flows[1].spine, "{leaf}: {flows:?}");
            for flow in flows {
                let host = host_of(&topology, &flow.destination).expect("host");
                let leaf = leaf_of(&topology, &host.id).expect("leaf");
                into.entry(leaf).or_default().push(flow.spine.clone());
            }
        }
        assert_eq!(into.len(), 4);
        for (leaf, spines) in &into {
            assert_eq!(spines.len(), 2);
            assert_ne!(spines[0], spines[1], "into {leaf}: {spines:?}");
        }
        let first = plan.by_leaf["leaf1"]
            .iter()
            .find(|f| f.key == "allreduce/0")
            .expect("member 0 sends from leaf1");
        assert_eq!(first.source.to_string(), "10.0.1.1/32");
        assert_eq!(first.destination.to_string(), "10.0.3.1/32");
        assert_eq!((first.ip_protocol, first.destination_port), (6, 5201));
        let metrics = plan.metrics.expect("figures");
        assert_eq!(metrics["flows"], 8);
        assert_eq!(metrics["max_utilization"], metrics["lower_bound"]);
        // Handing the placements back keeps every one of them.
        let mut desired = BTreeMap::new();
        for (leaf, flows) in &plan.by_leaf {
            desired.insert(leaf.clone(), serde_json::json!({ "placements": flows }));
        }
        let previous = placements_in(&desired);
        assert_eq!(previous.len(), 8);
        let again = place_collectives(&topology, &[ring(&RING)], 1, &previous);
        assert_eq!(again.metrics.expect("figures")["moved"], 0);
    }

    #[test]
    fn members_that_are_not_hosts_are_reported() {
        let topology = fabric();
        let job = ring(&["10.0.1.1/32", "192.0.2.1/32"]);
        let plan = place_collectives(&topology, &[job], 1, &Placements::new());
        assert_eq!(plan.unresolved.len(), 2, "{:?}", plan.unresolved);
        assert!(plan.unresolved[0].contains("not a host behind a leaf"));
        assert!(plan.by_leaf.is_empty());
    }
}
