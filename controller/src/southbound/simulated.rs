//! The simulated dataplane: a flow-level model of the routers that applies
//! the same kernel state the agents would and produces link loads from a
//! traffic matrix. It is a simulator, named as one everywhere: the demo and
//! large tests use it where no namespaces exist; it is not a substitute for
//! the netns lab, which runs the real kernel.
//!
//! Forwarding follows each node's weighted multipath routes by longest
//! prefix match, splitting a flow's rate by the weights, hop by hop. Flow
//! rules, SRv6 policies and rate limits are stored and reported back but
//! do not steer the simulated traffic. A state is taken as the agent takes
//! it: the same generation acceptance ([`crate::agent::accept`]) and the
//! same diff and phases ([`crate::agent::diff`]), carried out in memory.
//!
//! The simulated routers are numbered as `aiwan lab` numbers real ones
//! (`aiwan_lab::addressing`), and report their interfaces as an agent
//! does, so the controller finds their next hops by the same discovery.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use aiwan_planner::Topology;
use ipnet::IpNet;

use super::{Driver, DriverError, Observed};
use crate::agent::diff::{Diff, apply_in_memory, diff};
use crate::agent::{ApplyReport, InterfaceReport, NodeState, Version};

/// Most hops a simulated packet takes before it counts as looping.
const MAX_HOPS: usize = 64;

/// A flow of the simulated traffic: from an address to an address, at a
/// rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulatedFlow {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub rate_bps: f64,
}

/// Where the simulated traffic went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimulatedLoads {
    /// bit/s per directed link, `node:interface` as in `links/{id}`.
    pub links: BTreeMap<String, f64>,
    /// Reached a node that owns the destination.
    pub delivered_bps: f64,
    /// Met a node with no route, or a next hop with no link.
    pub dropped_bps: f64,
    /// Went round for more than the hop limit.
    pub looped_bps: f64,
}

#[derive(Debug, Default)]
struct NodeEntry {
    version: Version,
    state: NodeState,
    /// What the last apply changed.
    last: Diff,
}

/// See the module documentation.
pub struct SimulatedDataplane {
    topology: Mutex<Topology>,
    /// What each simulated router reports of its interfaces.
    interfaces: Mutex<BTreeMap<String, Vec<InterfaceReport>>>,
    nodes: Mutex<BTreeMap<String, NodeEntry>>,
    /// Nodes whose (simulated) agent does not answer.
    unreachable: Mutex<std::collections::BTreeSet<String>>,
    /// Nodes whose (simulated) kernel has no SRv6: they refuse SRv6
    /// policies and local SIDs, as an agent does on such a kernel.
    without_srv6: Mutex<std::collections::BTreeSet<String>>,
}

impl SimulatedDataplane {
    pub fn new(topology: Topology) -> SimulatedDataplane {
        SimulatedDataplane {
            interfaces: Mutex::new(lab_interfaces(&topology)),
            topology: Mutex::new(topology),
            nodes: Mutex::new(BTreeMap::new()),
            unreachable: Mutex::new(Default::default()),
            without_srv6: Mutex::new(Default::default()),
        }
    }

    /// The topology changed (imported again): forwarding follows the new
    /// links from now on; the nodes keep the state they were given.
    pub fn set_topology(&self, topology: Topology) {
        *self
            .interfaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = lab_interfaces(&topology);
        *self.topology.lock().unwrap_or_else(PoisonError::into_inner) = topology;
    }

    /// Makes a node's agent stop (or start again) answering, to exercise
    /// partial pushes.
    pub fn set_reachable(&self, node: &str, reachable: bool) {
        set_listed(&self.unreachable, node, !reachable);
    }

    /// Gives a node's kernel SRv6 or takes it away, to exercise refusals.
    pub fn set_srv6(&self, node: &str, available: bool) {
        set_listed(&self.without_srv6, node, !available);
    }

    /// What the last apply to `node` changed, phase by phase (the agent's
    /// diff, [`crate::agent::diff`]).
    pub fn last_diff(&self, node: &str) -> Option<Diff> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.get(node).map(|entry| entry.last.clone())
    }

    /// Link loads of `flows` under the state applied so far.
    pub fn loads(&self, flows: &[SimulatedFlow]) -> SimulatedLoads {
        let topology = self.topology.lock().unwrap_or_else(PoisonError::into_inner);
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut loads = SimulatedLoads::default();
        for flow in flows {
            let Some(ingress) = owner(&topology, flow.source) else {
                loads.dropped_bps += flow.rate_bps;
                continue;
            };
            forward(
                &topology,
                &nodes,
                &ingress,
                flow.destination,
                flow.rate_bps,
                &mut loads,
            );
        }
        loads
    }
}

/// The interfaces every router of `topology` has when `aiwan lab`
/// numbers it: each link end with its /31 and /127, `lo` with the
/// loopback and the first host of each of the node's prefixes. None for a
/// topology the lab cannot number (its links are then unresolved, and
/// say why).
pub fn lab_interfaces(topology: &Topology) -> BTreeMap<String, Vec<InterfaceReport>> {
    let addressing = match aiwan_lab::addressing::link_addresses(topology) {
        Ok(addressing) => addressing,
        Err(error) => {
            tracing::warn!(%error, "the simulated routers cannot be numbered as the lab would");
            return BTreeMap::new();
        }
    };
    let mut reports = BTreeMap::new();
    for node in &topology.nodes {
        let mut interfaces = Vec::new();
        if let Some(own) = addressing.node(&node.id) {
            let mut addresses = vec![
                IpNet::V4(ipnet::Ipv4Net::from(own.loopback.v4.addr())),
                IpNet::V6(ipnet::Ipv6Net::from(own.loopback.v6.addr())),
            ];
            addresses.extend(own.prefix_hosts.iter().copied());
            interfaces.push(InterfaceReport {
                name: "lo".into(),
                ifindex: 1,
                up: true,
                addresses,
                neighbours: Vec::new(),
            });
        }
        for (index, (name, address)) in addressing.interfaces_of(&node.id).into_iter().enumerate() {
            interfaces.push(InterfaceReport {
                name: name.to_string(),
                ifindex: u32::try_from(index + 2).unwrap_or(u32::MAX),
                up: true,
                addresses: vec![IpNet::V4(address.v4), IpNet::V6(address.v6)],
                neighbours: Vec::new(),
            });
        }
        reports.insert(node.id.clone(), interfaces);
    }
    reports
}

/// Puts `node` on `list` or takes it off.
fn set_listed(list: &Mutex<std::collections::BTreeSet<String>>, node: &str, listed: bool) {
    let mut list = list.lock().unwrap_or_else(PoisonError::into_inner);
    if listed {
        list.insert(node.to_string());
    } else {
        list.remove(node);
    }
}

/// Moves `rate` from `node` towards `destination` hop by hop: at each hop
/// the traffic at every node is split over its route's next hops, so a
/// forwarding loop costs [`MAX_HOPS`] rounds, not an exponential walk.
fn forward(
    topology: &Topology,
    nodes: &BTreeMap<String, NodeEntry>,
    node: &str,
    destination: IpAddr,
    rate: f64,
    loads: &mut SimulatedLoads,
) {
    if rate <= 0.0 {
        return;
    }
    let delivering = owner(topology, destination);
    let mut frontier: BTreeMap<String, f64> = BTreeMap::from([(node.to_string(), rate)]);
    for _ in 0..=MAX_HOPS {
        if frontier.is_empty() {
            return;
        }
        let mut next: BTreeMap<String, f64> = BTreeMap::new();
        for (node, rate) in frontier {
            if delivering.as_deref() == Some(node.as_str()) {
                loads.delivered_bps += rate;
                continue;
            }
            let route = nodes.get(&node).and_then(|entry| {
                entry
                    .state
                    .routes
                    .iter()
                    .filter(|route| route.prefix.contains(&destination))
                    .max_by_key(|route| route.prefix.prefix_len())
            });
            let Some(route) = route else {
                loads.dropped_bps += rate;
                continue;
            };
            let total: f64 = route
                .next_hops
                .iter()
                .map(|hop| f64::from(hop.weight))
                .sum();
            for hop in &route.next_hops {
                let share = rate * f64::from(hop.weight) / total.max(1.0);
                let link = topology
                    .links
                    .iter()
                    .find(|link| link.src == node && link.src_interface == hop.interface);
                let Some(link) = link else {
                    loads.dropped_bps += share;
                    continue;
                };
                *loads
                    .links
                    .entry(format!("{}:{}", link.src, link.src_interface))
                    .or_default() += share;
                *next.entry(link.dst.clone()).or_default() += share;
            }
        }
        frontier = next;
    }
    loads.looped_bps += frontier.values().sum::<f64>();
}

/// The node that delivers `address`: the one whose prefixes hold it most
/// specifically, or for a site's own prefix, the site's first WAN router.
fn owner(topology: &Topology, address: IpAddr) -> Option<String> {
    let by_node = topology.nodes.iter().flat_map(|node| {
        node.prefixes
            .iter()
            .map(move |prefix| (node.id.clone(), *prefix))
    });
    let by_site = topology.sites.iter().flat_map(|site| {
        let edge = topology
            .nodes
            .iter()
            .find(|n| {
                n.role == aiwan_planner::NodeRole::WanRouter && n.site.as_ref() == Some(&site.id)
            })
            .map(|n| n.id.clone());
        site.prefixes
            .iter()
            .filter_map(move |prefix| edge.clone().map(|edge| (edge, *prefix)))
    });
    by_node
        .chain(by_site)
        .filter(|(_, prefix)| prefix.contains(&address))
        .max_by_key(|(_, prefix)| prefix.prefix_len())
        .map(|(node, _)| node)
}

#[tonic::async_trait]
impl Driver for SimulatedDataplane {
    fn name(&self) -> &'static str {
        "simulated-dataplane"
    }

    async fn apply(
        &self,
        node: &str,
        version: Version,
        state: &NodeState,
    ) -> Result<ApplyReport, DriverError> {
        if self
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(node)
        {
            return Err(DriverError::Unreachable {
                node: node.to_string(),
                reason: "the simulated agent is switched off".into(),
            });
        }
        state.check().map_err(|error| DriverError::Refused {
            node: node.to_string(),
            reason: error.to_string(),
        })?;
        let srv6 = !state.srv6_policies.is_empty() || !state.local_sids.is_empty();
        if srv6
            && self
                .without_srv6
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(node)
        {
            return Err(DriverError::Refused {
                node: node.to_string(),
                reason: "the simulated kernel has no SRv6 (seg6)".into(),
            });
        }
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = nodes.entry(node.to_string()).or_default();
        // The agent's own rule.
        let held = (entry.version != Version::default())
            .then(|| (entry.version, entry.state == state.normalized()));
        if let Err(refusal) = crate::agent::accept(held, version) {
            let node = node.to_string();
            let reason = refusal.to_string();
            return Err(match refusal {
                crate::agent::Refusal::Superseded { .. } => {
                    DriverError::Superseded { node, reason }
                }
                _ => DriverError::Refused { node, reason },
            });
        }
        // The agent's own diff and phases, carried out in memory.
        let changes = diff(&entry.state, state);
        apply_in_memory(&mut entry.state, &changes);
        entry.version = version;
        let report = changes.report();
        entry.last = changes;
        Ok(report)
    }

    async fn observe(&self, node: &str) -> Result<Observed, DriverError> {
        if self
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(node)
        {
            return Err(DriverError::Unreachable {
                node: node.to_string(),
                reason: "the simulated agent is switched off".into(),
            });
        }
        let interfaces = self
            .interfaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .cloned()
            .unwrap_or_default();
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let (version, state) = nodes
            .get(node)
            .map(|entry| (entry.version, entry.state.clone()))
            .unwrap_or_default();
        Ok(Observed {
            version,
            state,
            interfaces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::southbound::fixtures::diamond;
    use crate::southbound::render::render;

    fn flow(rate_bps: f64) -> SimulatedFlow {
        SimulatedFlow {
            source: "10.1.0.9".parse().expect("address"),
            destination: "10.4.0.9".parse().expect("address"),
            rate_bps,
        }
    }

    #[tokio::test]
    async fn traffic_splits_as_the_applied_weights_say() {
        let topology = diamond();
        let addressing = crate::southbound::fixtures::lab_discovery(&topology);
        let planned = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [{"destination": "r4", "next_hops": [
                {"next_hop": "r2", "weight": 0.7}, {"next_hop": "r3", "weight": 0.3}]}]}),
        )]);
        let states = render(
            &topology,
            &addressing,
            &planned,
            &aiwan_collectors::store::default_class_rules(),
        )
        .expect("renders");
        let dataplane = SimulatedDataplane::new(topology);
        // Nothing applied yet: the traffic has nowhere to go.
        assert_eq!(dataplane.loads(&[flow(1e9)]).dropped_bps, 1e9);
        for (node, state) in &states {
            dataplane
                .apply(node, generation(1), state)
                .await
                .expect("applies");
        }
        let loads = dataplane.loads(&[flow(1e9)]);
        assert!((loads.delivered_bps - 1e9).abs() < 1.0, "{loads:?}");
        let via_r2 = loads.links["r1:eth1"];
        let via_r3 = loads.links["r1:eth2"];
        assert!((via_r2 / 1e9 - 0.7).abs() < 0.01, "{loads:?}");
        assert!((via_r2 + via_r3 - 1e9).abs() < 1.0);
        assert!((loads.links["r2:eth2"] - via_r2).abs() < 1.0);
    }

    fn generation(generation: u64) -> Version {
        Version {
            epoch: 1,
            generation,
        }
    }

    #[tokio::test]
    async fn an_unreachable_node_and_an_old_generation_are_refused() {
        let dataplane = SimulatedDataplane::new(diamond());
        dataplane.set_reachable("r2", false);
        let error = dataplane
            .apply("r2", generation(1), &NodeState::default())
            .await
            .expect_err("switched off");
        assert!(matches!(error, DriverError::Unreachable { .. }));
        dataplane
            .apply("r1", generation(5), &NodeState::default())
            .await
            .expect("applies");
        let error = dataplane
            .apply("r1", generation(4), &NodeState::default())
            .await
            .expect_err("older");
        assert!(
            error
                .to_string()
                .contains("generation: 4 is older than generation 5"),
            "{error}"
        );
        // A newer controller's epoch takes it over; the older one is then
        // told so, not refused.
        let newer = Version {
            epoch: 2,
            generation: 1,
        };
        dataplane
            .apply("r1", newer, &NodeState::default())
            .await
            .expect("taken over");
        let error = dataplane
            .apply("r1", generation(9), &NodeState::default())
            .await
            .expect_err("superseded");
        assert!(matches!(error, DriverError::Superseded { .. }), "{error}");
    }
}
