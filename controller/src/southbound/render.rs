//! A plan's per-router next-hop weights, made into each router's kernel
//! state: weighted multipath routes for every destination prefix, with the
//! interface and the gateway address of each next hop.
//!
//! Destinations the plan routes (those its demands go to) get the plan's
//! weights. Every other prefix gets shortest-path routes (lowest latency,
//! equal-cost next hops share equally), the underlay an IGP would give,
//! so that everything stays reachable, replies included.
//!
//! A plan's destination that is a site's WAN router stands for its site:
//! routers outside the site send all of the site's prefixes by the plan's
//! weights towards it; inside the site the shortest paths take over.
//!
//! A pinned job's path (the plan's `pins` at its first router) becomes SRv6:
//! at the first router, a FIB rule per destination prefix (with the job's
//! protocol and ports) into a table of the pin's own, holding an encap
//! route whose segments are an `End` SID of each router after it and a
//! decapsulating SID at the last (`End.DX4` towards the prefix's next hop
//! there for IPv4, or to the last router's own loopback where it delivers
//! the prefix itself, which delivers locally; `End.DT6` for IPv6); every router of the path but the
//! last gets a /128 route for the next router's SID over the link between
//! them, so the encapsulated packet follows the path link by link. SIDs
//! come from each router's locator `fd00:5e6:{n}::/64` (`n` its position in
//! the sorted node IDs, from 1): `::1` End, `::2` End.DT6, `::100` onwards
//! End.DX4 per next hop.
//!
//! Gateways and loopbacks come from the routers themselves
//! ([`super::discovery`]): render is given the topology without its
//! unresolved links, so no route, pin or placement goes over one. A
//! plan's share on a next hop that has no usable link left is spread over
//! the plan's other next hops, or, when none is left, the prefix follows
//! the underlay's shortest paths; a pinned path or collective flow over
//! such a link is left out (the flows follow the routes) until a new plan
//! is made around it.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::Ipv6Addr;
use std::rc::Rc;

use aiwan_planner::{NodeRole, Topology};
use ipnet::IpNet;
use serde::Deserialize;

use aiwan_collectors::store::{ClassRule, TrafficClass as ClassOfService};

use super::discovery::Discovery;
use crate::agent::{
    ClassLimit, Family, FlowRule, LocalSid, MAIN_TABLE, NextHop, NodeState, RULE_PRIORITY_RANGE,
    RateLimit, Srv6Action, Srv6Policy, TABLE_RANGE, UcmpRoute, weights_from_ratios,
};

/// Why a plan could not be made into kernel state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("plan for node {node}: {reason}")]
    Plan { node: String, reason: String },
    #[error("node {node}: next hop {next_hop}: no link between them")]
    NoLink { node: String, next_hop: String },
    #[error("link {node}:{interface} has no {family} next hop")]
    NoAddress {
        node: String,
        interface: String,
        family: &'static str,
    },
}

/// One router's part of a plan, as `planning` stores it.
#[derive(Debug, Clone, Deserialize)]
struct PlannedRoutes {
    routes: Vec<PlannedRoute>,
    /// Pinned paths that start at this router.
    #[serde(default)]
    pins: Vec<PlannedPin>,
    /// Links from this router whose classes the plan asks to limit.
    #[serde(default)]
    rate_limits: Vec<PlannedLimit>,
    /// Collective flows from this leaf, each on its spine.
    #[serde(default)]
    placements: Vec<crate::collective::PlacedFlow>,
}

#[derive(Debug, Clone, Deserialize)]
struct PlannedLimit {
    next_hop: String,
    capacity_bps: f64,
    ai_sync_bps: f64,
    ai_bulk_bps: f64,
    best_effort_bps: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct PlannedPin {
    job: String,
    path: Vec<String>,
    prefixes: Vec<IpNet>,
    ip_protocol: Option<u8>,
    destination_ports: Option<(u16, u16)>,
}

#[derive(Debug, Clone, Deserialize)]
struct PlannedRoute {
    destination: String,
    next_hops: Vec<PlannedHop>,
}

#[derive(Debug, Clone, Deserialize)]
struct PlannedHop {
    next_hop: String,
    weight: f64,
}

/// Next-hop node -> share, per destination node, per router.
type Shares = BTreeMap<String, f64>;

/// The kernel state of every router (every node but hosts) for a plan
/// whose per-router next-hop weights are `planned` (node -> the JSON
/// `planning` stores).
///
/// Rate limits steer DSCP values into their classes as `classes` says: the
/// collectors' table (`collector.store.classes`), so that what is shaped
/// as ai-sync is what the telemetry counts as ai-sync.
pub fn render(
    topology: &Topology,
    hops: &Discovery,
    planned: &BTreeMap<String, serde_json::Value>,
    classes: &[ClassRule],
) -> Result<BTreeMap<String, NodeState>, RenderError> {
    let parsed = parse(planned)?;
    let pins = pins_of(&parsed)?;
    let limits = limits_of(&parsed)?;
    let planned = shares_of(&parsed)?;
    let routers: Vec<&aiwan_planner::Node> = topology
        .nodes
        .iter()
        .filter(|node| node.role != NodeRole::Host)
        .collect();
    let graph = Graph::new(topology);
    let mut states = BTreeMap::new();
    for router in &routers {
        let mut shares_by_prefix: BTreeMap<IpNet, Shares> = BTreeMap::new();
        // The underlay first: every prefix and the loopback of every other
        // node (as an IGP would carry them: a router is reached at its
        // loopback, and a ping from a loopback gets its reply).
        for destination in &topology.nodes {
            if destination.id == router.id {
                continue;
            }
            let prefixes: Vec<IpNet> = destination
                .prefixes
                .iter()
                .copied()
                .chain(
                    hops.loopbacks(&destination.id)
                        .iter()
                        .map(|&lo| IpNet::from(lo)),
                )
                .collect();
            if prefixes.is_empty() {
                continue;
            }
            let hops = graph.shortest_next_hops(&router.id, &destination.id);
            if hops.is_empty() {
                continue; // unreachable: no route rather than a wrong one
            }
            let share = 1.0 / hops.len() as f64;
            let shares: Shares = hops.into_iter().map(|hop| (hop, share)).collect();
            for prefix in prefixes {
                shares_by_prefix.insert(prefix, shares.clone());
            }
        }
        // Site prefixes that no node originates are delivered at the
        // site's WAN routers: routed to the nearest of them.
        for site in topology
            .sites
            .iter()
            .filter(|site| !site.prefixes.is_empty())
        {
            let edges: Vec<&str> = topology
                .nodes
                .iter()
                .filter(|n| n.role == NodeRole::WanRouter && n.site.as_ref() == Some(&site.id))
                .map(|n| n.id.as_str())
                .collect();
            if edges.contains(&router.id.as_str()) {
                continue; // delivered here
            }
            let Some(hops) = edges
                .iter()
                .map(|edge| {
                    (
                        graph.distance(&router.id, edge),
                        graph.shortest_next_hops(&router.id, edge),
                    )
                })
                .filter(|(distance, hops)| distance.is_some() && !hops.is_empty())
                .min_by_key(|(distance, _)| *distance)
                .map(|(_, hops)| hops)
            else {
                continue;
            };
            let share = 1.0 / hops.len() as f64;
            let shares: Shares = hops.into_iter().map(|hop| (hop, share)).collect();
            for prefix in &site.prefixes {
                shares_by_prefix.insert(*prefix, shares.clone());
            }
        }
        // Then the plan's weights, which win where they apply, on the
        // next hops that still have a link. A next hop the topology never
        // linked to is a plan made for another network.
        if let Some(by_destination) = planned.get(&router.id) {
            for (destination, shares) in by_destination {
                if let Some(next_hop) = shares.keys().find(|next_hop| {
                    !topology
                        .links
                        .iter()
                        .any(|l| l.src == router.id && &l.dst == *next_hop)
                }) {
                    return Err(RenderError::NoLink {
                        node: router.id.clone(),
                        next_hop: next_hop.clone(),
                    });
                }
                let shares: Shares = shares
                    .iter()
                    .filter(|(next_hop, _)| !graph.links(&router.id, next_hop).is_empty())
                    .map(|(next_hop, share)| (next_hop.clone(), *share))
                    .collect();
                if shares.is_empty() {
                    continue; // the underlay's, then
                }
                for prefix in planned_prefixes(topology, &router.id, destination) {
                    shares_by_prefix.insert(prefix, shares.clone());
                }
            }
        }
        // A router's own prefixes are local, and so are its site's own
        // prefixes at a WAN router of the site.
        for prefix in &router.prefixes {
            shares_by_prefix.remove(prefix);
        }
        if router.role == NodeRole::WanRouter
            && let Some(site) = topology
                .sites
                .iter()
                .find(|s| Some(&s.id) == router.site.as_ref())
        {
            for prefix in &site.prefixes {
                shares_by_prefix.remove(prefix);
            }
        }
        let mut routes = Vec::with_capacity(shares_by_prefix.len());
        for (prefix, shares) in shares_by_prefix {
            routes.extend(route(&graph, hops, &router.id, prefix, &shares));
        }
        states.insert(
            router.id.clone(),
            NodeState {
                routes,
                ..NodeState::default()
            },
        );
    }
    add_pins(topology, &graph, hops, &pins, &mut states)?;
    add_placements(&graph, hops, &parsed, &mut states)?;
    for (router, limit) in limits {
        let links = graph.links(&router, &limit.next_hop);
        if links.is_empty() {
            // Unresolved since the plan was made: nothing goes there.
            tracing::warn!(%router, next_hop = %limit.next_hop, "rate limit left out: no usable link");
            continue;
        }
        // Parallel links share the plan's loads by capacity.
        let total: f64 = links.iter().map(|l| l.capacity_bps as f64).sum();
        let count = links.len() as f64;
        for link in links {
            let part = if total > 0.0 {
                link.capacity_bps as f64 / total
            } else {
                1.0 / count
            };
            states
                .entry(router.clone())
                .or_default()
                .rate_limits
                .push(rate_limit(&link.src_interface, &limit, part, classes));
        }
    }
    Ok(states)
}

fn limits_of(
    parsed: &BTreeMap<String, PlannedRoutes>,
) -> Result<Vec<(String, PlannedLimit)>, RenderError> {
    let mut limits = Vec::new();
    for (node, routes) in parsed {
        for limit in &routes.rate_limits {
            let figures = [
                limit.capacity_bps,
                limit.ai_sync_bps,
                limit.ai_bulk_bps,
                limit.best_effort_bps,
            ];
            if figures.iter().any(|f| !(f.is_finite() && *f >= 0.0)) {
                return Err(RenderError::Plan {
                    node: node.clone(),
                    reason: format!("rate limit towards {} has a bad figure", limit.next_hop),
                });
            }
            limits.push((node.clone(), limit.clone()));
        }
    }
    Ok(limits)
}

/// htb class ids of the traffic classes on a limited interface.
pub const CLASS_AI_SYNC: u16 = 1;
pub const CLASS_AI_BULK: u16 = 2;
pub const CLASS_BEST_EFFORT: u16 = 3;
/// No class is limited below this (ARP, routing, management must pass).
const MIN_CLASS_BPS: f64 = 1_000_000.0;

/// The htb classes of one link, under a parent at the link's capacity:
/// ai-sync (by default DSCP 24-31 and 46) guaranteed its planned load,
/// ai-bulk (by default DSCP 8-23) and best-effort (the rest, the default
/// class) guaranteed what ai-sync leaves, each its planned load plus half
/// of the headroom, or scaled down alike when the plan oversubscribes the
/// link. Every class may borrow up to the link's capacity what the others
/// leave idle (work conserving): best-effort fills an idle link, and
/// ai-sync gets its rate back as soon as it sends.
fn rate_limit(
    interface: &str,
    limit: &PlannedLimit,
    part: f64,
    classes: &[ClassRule],
) -> RateLimit {
    let capacity = limit.capacity_bps * part;
    let sync = (limit.ai_sync_bps * part).min(capacity);
    let (bulk, best_effort) = (limit.ai_bulk_bps * part, limit.best_effort_bps * part);
    let room = capacity - sync;
    let planned = bulk + best_effort;
    let (bulk, best_effort) = if planned <= room {
        let headroom = (room - planned) / 2.0;
        (bulk + headroom, best_effort + headroom)
    } else {
        let scale = room / planned;
        (bulk * scale, best_effort * scale)
    };
    let bits = |rate: f64| {
        // A multiple of 8 (the kernel counts bytes), at least the minimum.
        let rate = rate.max(MIN_CLASS_BPS).min(u64::MAX as f64) as u64;
        rate - rate % 8
    };
    let link = bits(capacity);
    let dscp_of = |class: ClassOfService| -> Vec<u8> {
        classes
            .iter()
            .filter(|rule| rule.class == class)
            .flat_map(|rule| rule.dscp.iter().flat_map(|range| range.first..=range.last))
            .collect()
    };
    let class = |class_id: u16, rate: f64, dscp: Vec<u8>| ClassLimit {
        class_id,
        rate_bps: bits(rate).min(link),
        ceil_bps: link,
        dscp,
    };
    RateLimit {
        interface: interface.to_string(),
        default_class: Some(CLASS_BEST_EFFORT),
        link_bps: Some(link),
        classes: vec![
            class(CLASS_AI_SYNC, sync, dscp_of(ClassOfService::AiSync)),
            class(CLASS_AI_BULK, bulk, dscp_of(ClassOfService::AiBulk)),
            class(CLASS_BEST_EFFORT, best_effort, Vec::new()),
        ],
    }
}

fn pins_of(
    parsed: &BTreeMap<String, PlannedRoutes>,
) -> Result<Vec<(String, PlannedPin)>, RenderError> {
    let mut pins = Vec::new();
    for (node, routes) in parsed {
        for pin in &routes.pins {
            if pin.path.len() < 2 || pin.path.first() != Some(node) {
                return Err(RenderError::Plan {
                    node: node.clone(),
                    reason: format!("pin of jobs/{} does not start here", pin.job),
                });
            }
            pins.push((node.clone(), pin.clone()));
        }
    }
    Ok(pins)
}

/// The SID of `function` in `node`'s locator.
fn sid(locators: &BTreeMap<&str, u16>, node: &str, function: u16) -> Option<Ipv6Addr> {
    let n = *locators.get(node)?;
    Some(Ipv6Addr::new(0xfd00, 0x05e6, n, 0, 0, 0, 0, function))
}

const SID_END: u16 = 1;
const SID_END_DT6: u16 = 2;
const SID_END_DX4_FIRST: u16 = 0x100;

/// The link from `node` to `next`: its interface and the neighbour's
/// address on it of `family_of`'s family.
fn link_to(
    graph: &Graph,
    hops: &Discovery,
    node: &str,
    next: &str,
    family_of: &IpNet,
) -> Result<(String, std::net::IpAddr), RenderError> {
    let link = graph
        .links(node, next)
        .first()
        .ok_or_else(|| RenderError::NoLink {
            node: node.to_string(),
            next_hop: next.to_string(),
        })?;
    let gateway = hops
        .gateway(node, &link.src_interface, family_of)
        .ok_or_else(|| RenderError::NoAddress {
            node: node.to_string(),
            interface: link.src_interface.clone(),
            family: match family_of {
                IpNet::V4(_) => "IPv4",
                IpNet::V6(_) => "IPv6",
            },
        })?;
    Ok((link.src_interface.clone(), gateway))
}

/// Any IPv6 prefix, to ask [`link_to`] for an IPv6 next hop (SRv6 goes
/// over IPv6 whatever it carries).
const ANY_V6: IpNet = IpNet::V6(ipnet::Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 0));

/// Why the pinned path cannot be made now: a link along it that is gone
/// or has no IPv6 next hop (SRv6 needs one on every hop).
fn pin_blocked(graph: &Graph, hops: &Discovery, path: &[String]) -> Option<RenderError> {
    path.windows(2).find_map(|pair| {
        link_to(graph, hops, &pair[0], &pair[1], &ANY_V6)
            .and_then(|_| link_to(graph, hops, &pair[1], &pair[0], &ANY_V6))
            .err()
    })
}

/// Adds the SRv6 state of every pin (see the module documentation).
fn add_pins(
    topology: &Topology,
    graph: &Graph,
    hops: &Discovery,
    pins: &[(String, PlannedPin)],
    states: &mut BTreeMap<String, NodeState>,
) -> Result<(), RenderError> {
    if pins.is_empty() {
        return Ok(());
    }
    // The SIDs' block must be nobody's prefix, or their routes would
    // take that prefix's traffic.
    if let Ok(block) = ipnet::Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x05e6, 0, 0, 0, 0, 0, 0), 32) {
        let block = IpNet::V6(block);
        let owned = topology
            .nodes
            .iter()
            .flat_map(|n| n.prefixes.iter().map(move |p| (n.id.as_str(), p)))
            .chain(
                topology
                    .sites
                    .iter()
                    .flat_map(|s| s.prefixes.iter().map(move |p| (s.id.as_str(), p))),
            );
        for (owner, prefix) in owned {
            if prefix.contains(&block) || block.contains(prefix) {
                return Err(RenderError::Plan {
                    node: owner.to_string(),
                    reason: format!(
                        "prefix {prefix} overlaps {block}, where aiwan's SRv6 SIDs live"
                    ),
                });
            }
        }
    }
    let mut ids: Vec<&str> = topology.nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    let locators: BTreeMap<&str, u16> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, u16::try_from(i + 1).unwrap_or(u16::MAX)))
        .collect();
    let missing_sid = |node: &str| RenderError::Plan {
        node: node.to_string(),
        reason: "no SRv6 locator: more than 65,535 nodes".into(),
    };
    // Per router: host routes to SIDs, local SIDs, and its rules' and
    // tables' next numbers; the DX4 SIDs given out per (router, next hop).
    let mut sid_routes: BTreeMap<String, BTreeMap<Ipv6Addr, UcmpRoute>> = BTreeMap::new();
    let mut local_sids: BTreeMap<String, BTreeMap<Ipv6Addr, LocalSid>> = BTreeMap::new();
    let mut dx4: BTreeMap<(String, std::net::Ipv4Addr), Ipv6Addr> = BTreeMap::new();
    let mut next_rule: BTreeMap<String, u32> = BTreeMap::new();
    let mut next_table: BTreeMap<String, u32> = BTreeMap::new();
    for (head, pin) in pins {
        let path = &pin.path;
        if let Some(error) = pin_blocked(graph, hops, path) {
            // Unresolved since the plan was made: the job's flows follow
            // the routes until a plan is made around it.
            tracing::warn!(job = %pin.job, %error, "pinned path left out");
            continue;
        }
        let tail = path[path.len() - 1].as_str();
        let table = {
            let next = next_table
                .entry(head.clone())
                .or_insert(*TABLE_RANGE.start());
            let table = *next;
            *next += 1;
            table
        };
        if !TABLE_RANGE.contains(&table) {
            return Err(RenderError::Plan {
                node: head.clone(),
                reason: "more pinned paths than aiwan's tables".into(),
            });
        }
        // The End SID of each router between the first and the last.
        let mut transit = Vec::new();
        for i in 1..path.len() - 1 {
            let node = path[i].as_str();
            let end = sid(&locators, node, SID_END).ok_or_else(|| missing_sid(node))?;
            let (out, _) = link_to(graph, hops, node, &path[i + 1], &ANY_V6)?;
            local_sids.entry(node.to_string()).or_default().insert(
                end,
                LocalSid {
                    sid: end,
                    action: Srv6Action::End,
                    interface: out,
                },
            );
            transit.push(end);
        }
        for prefix in &pin.prefixes {
            // The last router's decapsulating SID for this prefix.
            let tail_sid = match prefix {
                IpNet::V4(_) => {
                    // Handed on towards the prefix's next hop there; or,
                    // where the last router delivers the prefix itself,
                    // to its own loopback, which delivers locally.
                    let onward = states
                        .get(tail)
                        .and_then(|state| state.routes.iter().find(|r| r.prefix == *prefix))
                        .and_then(|route| route.next_hops.first())
                        .and_then(|hop| match hop.gateway {
                            Some(std::net::IpAddr::V4(gateway)) => {
                                Some((gateway, hop.interface.clone()))
                            }
                            _ => None,
                        });
                    let (next_hop, interface) = match onward {
                        Some(onward) => onward,
                        None => {
                            let loopback = hops
                                .loopbacks(tail)
                                .iter()
                                .find_map(|lo| match lo {
                                    std::net::IpAddr::V4(v4) => Some(*v4),
                                    std::net::IpAddr::V6(_) => None,
                                })
                                .ok_or_else(|| RenderError::Plan {
                                    node: tail.to_string(),
                                    reason: "no IPv4 loopback address on lo to deliver \
                                             a pinned IPv4 prefix to"
                                        .into(),
                                })?;
                            let (towards_head, _) =
                                link_to(graph, hops, tail, &path[path.len() - 2], &ANY_V6)?;
                            (loopback, towards_head)
                        }
                    };
                    let count = dx4.keys().filter(|(node, _)| node == tail).count();
                    let function =
                        SID_END_DX4_FIRST.saturating_add(u16::try_from(count).unwrap_or(u16::MAX));
                    let fresh = sid(&locators, tail, function).ok_or_else(|| missing_sid(tail))?;
                    let tail_sid = *dx4.entry((tail.to_string(), next_hop)).or_insert(fresh);
                    local_sids.entry(tail.to_string()).or_default().insert(
                        tail_sid,
                        LocalSid {
                            sid: tail_sid,
                            action: Srv6Action::EndDx4 { next_hop },
                            interface,
                        },
                    );
                    tail_sid
                }
                IpNet::V6(_) => {
                    let tail_sid =
                        sid(&locators, tail, SID_END_DT6).ok_or_else(|| missing_sid(tail))?;
                    let (interface, _) =
                        link_to(graph, hops, tail, &path[path.len() - 2], &ANY_V6)?;
                    local_sids.entry(tail.to_string()).or_default().insert(
                        tail_sid,
                        LocalSid {
                            sid: tail_sid,
                            action: Srv6Action::EndDt6 { table: MAIN_TABLE },
                            interface,
                        },
                    );
                    tail_sid
                }
            };
            // Each router of the path reaches the next one's SID directly.
            let mut segments = transit.clone();
            segments.push(tail_sid);
            for (pair, target) in path.windows(2).zip(&segments) {
                let (node, next) = (pair[0].as_str(), pair[1].as_str());
                let (interface, gateway) = link_to(graph, hops, node, next, &ANY_V6)?;
                sid_routes
                    .entry(node.to_string())
                    .or_default()
                    .entry(*target)
                    .or_insert(UcmpRoute {
                        prefix: IpNet::V6(ipnet::Ipv6Net::from(*target)),
                        table: MAIN_TABLE,
                        next_hops: vec![NextHop {
                            gateway: Some(gateway),
                            interface,
                            weight: 1,
                        }],
                    });
            }
            let (interface, _) = link_to(graph, hops, head, &path[1], &ANY_V6)?;
            let priority = {
                let next = next_rule
                    .entry(head.clone())
                    .or_insert(*RULE_PRIORITY_RANGE.start());
                let priority = *next;
                *next += 1;
                priority
            };
            if !RULE_PRIORITY_RANGE.contains(&priority) {
                return Err(RenderError::Plan {
                    node: head.clone(),
                    reason: "more pinned prefixes than aiwan's rule priorities".into(),
                });
            }
            let state = states.entry(head.clone()).or_default();
            state.flow_rules.push(FlowRule {
                priority,
                family: match prefix {
                    IpNet::V4(_) => Family::V4,
                    IpNet::V6(_) => Family::V6,
                },
                source: None,
                destination: Some(*prefix),
                ip_protocol: pin.ip_protocol,
                destination_ports: pin.destination_ports,
                source_ports: None,
                dscp: None,
                table,
            });
            state.srv6_policies.push(Srv6Policy {
                prefix: *prefix,
                table,
                segments,
                interface,
                gateway: None,
            });
        }
    }
    for (node, routes) in sid_routes {
        states
            .entry(node)
            .or_default()
            .routes
            .extend(routes.into_values());
    }
    for (node, sids) in local_sids {
        states
            .entry(node)
            .or_default()
            .local_sids
            .extend(sids.into_values());
    }
    Ok(())
}

/// Adds each leaf's collective flows: one table per spine its flows take,
/// holding a route for each of their destinations through that spine, and
/// one FIB rule per flow (source, destination, protocol, destination port)
/// into its spine's table. Tables and rule priorities follow those of the
/// pins.
fn add_placements(
    graph: &Graph,
    hops: &Discovery,
    parsed: &BTreeMap<String, PlannedRoutes>,
    states: &mut BTreeMap<String, NodeState>,
) -> Result<(), RenderError> {
    for (leaf, planned) in parsed {
        if planned.placements.is_empty() {
            continue;
        }
        let state = states.entry(leaf.clone()).or_default();
        let mut next_table = state
            .flow_rules
            .iter()
            .map(|r| r.table + 1)
            .max()
            .unwrap_or(*TABLE_RANGE.start());
        let first_priority = state
            .flow_rules
            .iter()
            .map(|r| r.priority + 1)
            .max()
            .unwrap_or(*RULE_PRIORITY_RANGE.start());
        let mut tables: BTreeMap<&str, u32> = BTreeMap::new();
        let mut routes: BTreeMap<(u32, IpNet), UcmpRoute> = BTreeMap::new();
        let mut flows: Vec<&crate::collective::PlacedFlow> = planned.placements.iter().collect();
        flows.sort_by(|a, b| a.key.cmp(&b.key));
        for (offset, flow) in flows.into_iter().enumerate() {
            let too_many = |what: &str| RenderError::Plan {
                node: leaf.clone(),
                reason: format!("more collective flows than aiwan's {what}"),
            };
            let (interface, gateway) =
                match link_to(graph, hops, leaf, &flow.spine, &flow.destination) {
                    Ok(found) => found,
                    Err(error) => {
                        // Unresolved since the plan was made: the flow
                        // follows the routes until a plan is made around it.
                        tracing::warn!(flow = %flow.key, %error, "collective flow left out");
                        continue;
                    }
                };
            let table = match tables.get(flow.spine.as_str()) {
                Some(table) => *table,
                None => {
                    let table = next_table;
                    if !TABLE_RANGE.contains(&table) {
                        return Err(too_many("tables"));
                    }
                    next_table += 1;
                    tables.insert(&flow.spine, table);
                    table
                }
            };
            let family = match (flow.source, flow.destination) {
                (IpNet::V4(_), IpNet::V4(_)) => Family::V4,
                (IpNet::V6(_), IpNet::V6(_)) => Family::V6,
                _ => {
                    return Err(RenderError::Plan {
                        node: leaf.clone(),
                        reason: format!(
                            "flow {}: source and destination families differ",
                            flow.key
                        ),
                    });
                }
            };
            routes
                .entry((table, flow.destination))
                .or_insert_with(|| UcmpRoute {
                    prefix: flow.destination,
                    table,
                    next_hops: vec![NextHop {
                        gateway: Some(gateway),
                        interface,
                        weight: 1,
                    }],
                });
            let priority = u32::try_from(offset)
                .ok()
                .and_then(|offset| first_priority.checked_add(offset))
                .filter(|priority| RULE_PRIORITY_RANGE.contains(priority))
                .ok_or_else(|| too_many("rule priorities"))?;
            state.flow_rules.push(FlowRule {
                priority,
                family,
                source: Some(flow.source),
                destination: Some(flow.destination),
                ip_protocol: Some(flow.ip_protocol),
                destination_ports: Some((flow.destination_port, flow.destination_port)),
                source_ports: None,
                dscp: None,
                table,
            });
        }
        state.routes.extend(routes.into_values());
    }
    Ok(())
}

/// Each router's part of the plan, as `planning` stored it.
fn parse(
    planned: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, PlannedRoutes>, RenderError> {
    planned
        .iter()
        .map(|(node, value)| {
            let routes = PlannedRoutes::deserialize(value).map_err(|error| RenderError::Plan {
                node: node.clone(),
                reason: error.to_string(),
            })?;
            Ok((node.clone(), routes))
        })
        .collect()
}

fn shares_of(
    parsed: &BTreeMap<String, PlannedRoutes>,
) -> Result<BTreeMap<String, BTreeMap<String, Shares>>, RenderError> {
    let mut out = BTreeMap::new();
    for (node, routes) in parsed {
        let mut by_destination = BTreeMap::new();
        for route in &routes.routes {
            let mut shares = Shares::new();
            for hop in &route.next_hops {
                if !(hop.weight.is_finite() && hop.weight >= 0.0) {
                    return Err(RenderError::Plan {
                        node: node.clone(),
                        reason: format!("next hop {} has weight {}", hop.next_hop, hop.weight),
                    });
                }
                if hop.weight > 0.0 {
                    *shares.entry(hop.next_hop.clone()).or_default() += hop.weight;
                }
            }
            if !shares.is_empty() {
                by_destination.insert(route.destination.clone(), shares);
            }
        }
        out.insert(node.clone(), by_destination);
    }
    Ok(out)
}

/// The prefixes a plan's route from `router` to `destination` carries: the
/// destination's own, and when it is a WAN router seen from outside its
/// site, every prefix of its site.
fn planned_prefixes(topology: &Topology, router: &str, destination: &str) -> Vec<IpNet> {
    let Some(node) = topology.nodes.iter().find(|node| node.id == destination) else {
        return Vec::new();
    };
    let mut prefixes: BTreeSet<IpNet> = node.prefixes.iter().copied().collect();
    let router_site = topology
        .nodes
        .iter()
        .find(|n| n.id == router)
        .and_then(|n| n.site.clone());
    if node.role == NodeRole::WanRouter
        && let Some(site) = &node.site
        && router_site.as_ref() != Some(site)
    {
        for member in topology
            .nodes
            .iter()
            .filter(|n| n.site.as_ref() == Some(site))
        {
            prefixes.extend(member.prefixes.iter().copied());
        }
        if let Some(site) = topology.sites.iter().find(|s| &s.id == site) {
            prefixes.extend(site.prefixes.iter().copied());
        }
    }
    prefixes.into_iter().collect()
}

/// One weighted multipath route: each next-hop node's share spread over
/// its links that have a next hop of the prefix's family, each link's
/// gateway the neighbour's address on it. None when no next hop has one
/// (a family some links do not carry, for a loopback): no route rather
/// than a wrong one.
fn route(
    graph: &Graph,
    discovery: &Discovery,
    router: &str,
    prefix: IpNet,
    shares: &Shares,
) -> Option<UcmpRoute> {
    let mut hops: Vec<(String, Option<std::net::IpAddr>, f64)> = Vec::new();
    for (next_hop, share) in shares {
        let usable: Vec<(&str, std::net::IpAddr)> = graph
            .links(router, next_hop)
            .iter()
            .filter_map(|link| {
                let gateway = discovery.gateway(router, &link.src_interface, &prefix)?;
                Some((link.src_interface.as_str(), gateway))
            })
            .collect();
        let count = usable.len() as f64;
        for (interface, gateway) in usable {
            hops.push((interface.to_string(), Some(gateway), share / count));
        }
    }
    if hops.is_empty() {
        return None;
    }
    let ratios: Vec<f64> = hops.iter().map(|(_, _, share)| *share).collect();
    let weights = weights_from_ratios(&ratios);
    Some(UcmpRoute {
        prefix,
        table: MAIN_TABLE,
        next_hops: hops
            .into_iter()
            .zip(weights)
            .map(|((interface, gateway, _), weight)| NextHop {
                gateway,
                interface,
                weight,
            })
            .collect(),
    })
}

/// The admin-up links as a graph weighted by latency (1 µs at least, so
/// hop count breaks ties between zero-latency links), with the links
/// between each pair of nodes. Distances to a destination are computed
/// once and kept: rendering asks for them from every router.
struct Graph<'a> {
    index: HashMap<&'a str, usize>,
    adjacency: Vec<Vec<(usize, u64)>>,
    ids: Vec<&'a str>,
    between: HashMap<(usize, usize), Vec<&'a aiwan_planner::Link>>,
    distances: RefCell<HashMap<usize, Rc<Vec<u64>>>>,
}

impl<'a> Graph<'a> {
    fn new(topology: &'a Topology) -> Graph<'a> {
        let ids: Vec<&str> = topology.nodes.iter().map(|n| n.id.as_str()).collect();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut adjacency = vec![Vec::new(); ids.len()];
        let mut between: HashMap<(usize, usize), Vec<&aiwan_planner::Link>> = HashMap::new();
        for link in topology.links.iter().filter(|link| link.admin_up) {
            let (Some(&src), Some(&dst)) =
                (index.get(link.src.as_str()), index.get(link.dst.as_str()))
            else {
                continue;
            };
            adjacency[src].push((dst, link.latency_us.max(1)));
            between.entry((src, dst)).or_default().push(link);
        }
        Graph {
            index,
            adjacency,
            ids,
            between,
            distances: RefCell::new(HashMap::new()),
        }
    }

    /// The admin-up links from `from` to `to`.
    fn links(&self, from: &str, to: &str) -> &[&'a aiwan_planner::Link] {
        match (self.index.get(from), self.index.get(to)) {
            (Some(&f), Some(&t)) => self.between.get(&(f, t)).map_or(&[], Vec::as_slice),
            _ => &[],
        }
    }

    /// The length of the shortest path from `from` to `to`.
    fn distance(&self, from: &str, to: &str) -> Option<u64> {
        let (&f, &t) = (self.index.get(from)?, self.index.get(to)?);
        let distance = self.distances_to(t)[f];
        (distance != u64::MAX).then_some(distance)
    }

    /// Distances to node `to` from every node (`u64::MAX`: unreachable),
    /// by Dijkstra from the destination (links come in symmetric pairs,
    /// so the forward lists serve).
    fn distances_to(&self, to: usize) -> Rc<Vec<u64>> {
        if let Some(known) = self.distances.borrow().get(&to) {
            return Rc::clone(known);
        }
        let mut distance = vec![u64::MAX; self.ids.len()];
        let mut queue = BinaryHeap::new();
        distance[to] = 0;
        queue.push(Reverse((0u64, to)));
        while let Some(Reverse((d, node))) = queue.pop() {
            if d > distance[node] {
                continue;
            }
            for &(neighbour, cost) in &self.adjacency[node] {
                let candidate = d.saturating_add(cost);
                if candidate < distance[neighbour] {
                    distance[neighbour] = candidate;
                    queue.push(Reverse((candidate, neighbour)));
                }
            }
        }
        let distance = Rc::new(distance);
        self.distances.borrow_mut().insert(to, Rc::clone(&distance));
        distance
    }

    /// The neighbours of `from` on some shortest path to `to`.
    fn shortest_next_hops(&self, from: &str, to: &str) -> Vec<String> {
        let (Some(&f), Some(&t)) = (self.index.get(from), self.index.get(to)) else {
            return Vec::new();
        };
        let distance = self.distances_to(t);
        let own = distance[f];
        if own == u64::MAX {
            return Vec::new();
        }
        let mut hops: Vec<String> = self.adjacency[f]
            .iter()
            .filter(|(neighbour, cost)| {
                distance[*neighbour] != u64::MAX
                    && distance[*neighbour].saturating_add(*cost) == own
            })
            .map(|(neighbour, _)| self.ids[*neighbour].to_string())
            .collect();
        hops.sort();
        hops.dedup();
        hops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiwan_collectors::store::{DscpRange, default_class_rules};
    use aiwan_lab::addressing::LinkAddressing;

    /// The topology, what discovery finds on it as the lab numbers it,
    /// and the lab's plan (to check gateways against).
    fn with_addressing(topology: Topology) -> (Topology, Discovery, LinkAddressing) {
        let addressing = aiwan_lab::addressing::link_addresses(&topology).expect("addresses");
        let discovery = crate::southbound::fixtures::lab_discovery(&topology);
        (topology, discovery, addressing)
    }

    fn diamond() -> (Topology, Discovery, LinkAddressing) {
        with_addressing(crate::southbound::fixtures::diamond())
    }

    fn diamond_with_host() -> (Topology, Discovery, LinkAddressing) {
        with_addressing(crate::southbound::fixtures::diamond_with_hosts())
    }

    fn hops(state: &NodeState, prefix: &str) -> Vec<(String, String, u32)> {
        let prefix: IpNet = prefix.parse().expect("prefix");
        state
            .routes
            .iter()
            .find(|route| route.prefix == prefix)
            .map(|route| {
                route
                    .next_hops
                    .iter()
                    .map(|hop| {
                        (
                            hop.interface.clone(),
                            hop.gateway.map(|g| g.to_string()).unwrap_or_default(),
                            hop.weight,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn without_a_plan_routes_follow_the_shortest_paths() {
        let (topology, discovery, addressing) = diamond();
        let states = render(
            &topology,
            &discovery,
            &BTreeMap::new(),
            &default_class_rules(),
        )
        .expect("renders");
        assert_eq!(states.len(), 4);
        let r1 = &states["r1"];
        // 10.4.0.0/24 via r2 (2 ms against 4 ms); r1's own prefix is local.
        let via = hops(r1, "10.4.0.0/24");
        assert_eq!(via.len(), 1);
        assert_eq!(via[0].0, "eth1");
        let peer = addressing.peer_of("r1", "eth1").expect("peer").2.v4.addr();
        assert_eq!(via[0].1, peer.to_string());
        assert!(hops(r1, "10.1.0.0/24").is_empty());
        // r4 reaches r1's prefix back the short way too.
        assert_eq!(hops(&states["r4"], "10.1.0.0/24")[0].0, "eth1");
    }

    #[test]
    fn the_plan_splits_a_site_s_prefixes_by_its_weights() {
        let (topology, discovery, _) = diamond();
        let planned = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [{"destination": "r4", "next_hops": [
                {"next_hop": "r2", "weight": 0.7}, {"next_hop": "r3", "weight": 0.3}]}]}),
        )]);
        let states =
            render(&topology, &discovery, &planned, &default_class_rules()).expect("renders");
        let via: Vec<(String, u32)> = hops(&states["r1"], "10.4.0.0/24")
            .into_iter()
            .map(|(interface, _, weight)| (interface, weight))
            .collect();
        assert_eq!(via.len(), 2);
        let total: u32 = via.iter().map(|(_, w)| w).sum();
        let eth1 = via
            .iter()
            .find(|(i, _)| i == "eth1")
            .map(|(_, w)| *w)
            .unwrap_or(0);
        assert!(
            (f64::from(eth1) / f64::from(total) - 0.7).abs() < 0.01,
            "{via:?}"
        );
        // Every state passes the agent's own checks.
        for state in states.values() {
            state.check().expect("valid node state");
        }
    }

    #[test]
    fn collective_flows_become_rules_into_per_spine_tables() {
        let (topology, discovery, addressing) =
            with_addressing(crate::southbound::fixtures::fabric());
        let flow = |key: &str, spine: &str, to: u8, port: u16| {
            serde_json::json!({"key": key, "spine": spine, "source": "10.0.1.1/32",
                "destination": format!("10.0.{to}.1/32"), "ip_protocol": 6,
                "destination_port": port})
        };
        let planned = BTreeMap::from([(
            "leaf1".to_string(),
            serde_json::json!({"routes": [], "placements": [
                flow("ring/0", "spine3", 3, 5201),
                flow("ring/1", "spine1", 5, 5202),
                flow("ring/2", "spine3", 7, 5203),
            ]}),
        )]);
        let states =
            render(&topology, &discovery, &planned, &default_class_rules()).expect("renders");
        let leaf1 = &states["leaf1"];
        assert_eq!(leaf1.flow_rules.len(), 3);
        // One table per spine, in the order flows first name them.
        let table_of = |port: u16| {
            leaf1
                .flow_rules
                .iter()
                .find(|r| r.destination_ports == Some((port, port)))
                .map(|r| r.table)
                .expect("rule")
        };
        assert_eq!(table_of(5201), table_of(5203));
        assert_ne!(table_of(5201), table_of(5202));
        let rule = leaf1
            .flow_rules
            .iter()
            .find(|r| r.destination_ports == Some((5202, 5202)))
            .expect("rule");
        assert_eq!(
            rule.source.map(|s| s.to_string()).as_deref(),
            Some("10.0.1.1/32")
        );
        assert_eq!(rule.ip_protocol, Some(6));
        // The spine's table sends the flow's destination up that spine.
        let route = leaf1
            .routes
            .iter()
            .find(|r| r.table == rule.table && r.prefix.to_string() == "10.0.5.1/32")
            .expect("route in the spine's table");
        assert_eq!(route.next_hops.len(), 1);
        assert_eq!(
            route.next_hops[0].interface, "eth1",
            "leaf1:eth1 goes to spine1"
        );
        let spine1 = addressing
            .peer_of("leaf1", "eth1")
            .expect("peer")
            .2
            .v4
            .addr();
        assert_eq!(
            route.next_hops[0].gateway,
            Some(std::net::IpAddr::V4(spine1))
        );
        for state in states.values() {
            state.check().expect("valid node state");
        }
    }

    #[test]
    fn a_plan_naming_a_missing_link_is_refused() {
        let (topology, discovery, _) = diamond();
        let planned = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [{"destination": "r4", "next_hops": [
                {"next_hop": "r4", "weight": 1.0}]}]}),
        )]);
        let error = render(&topology, &discovery, &planned, &default_class_rules())
            .expect_err("no r1-r4 link");
        assert_eq!(
            error.to_string(),
            "node r1: next hop r4: no link between them"
        );
    }

    #[test]
    fn a_pinned_path_becomes_srv6_link_by_link() {
        let (topology, discovery, addressing) = diamond_with_host();
        let planned = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [], "pins": [{
                "job": "pinned",
                "path": ["r1", "r3", "r4"],
                "prefixes": ["10.4.0.0/24", "10.4.1.0/24", "fd00:4::/64"],
                "ip_protocol": 17,
                "destination_ports": [5301, 5301],
            }]}),
        )]);
        let states =
            render(&topology, &discovery, &planned, &default_class_rules()).expect("renders");
        // Locators by sorted node id: h1 1, h4 2, r1 3, r2 4, r3 5, r4 6.
        let end_r3: Ipv6Addr = "fd00:5e6:5::1".parse().unwrap();
        // r4 delivers 10.4.0.0/24 itself (to its loopback), 10.4.1.0/24
        // to h4.
        let dx4_self: Ipv6Addr = "fd00:5e6:6::100".parse().unwrap();
        let dx4_r4: Ipv6Addr = "fd00:5e6:6::101".parse().unwrap();
        let dt6_r4: Ipv6Addr = "fd00:5e6:6::2".parse().unwrap();
        let r1 = &states["r1"];
        let rules: Vec<(u32, Family, String, u32)> = r1
            .flow_rules
            .iter()
            .map(|rule| {
                assert_eq!(rule.ip_protocol, Some(17));
                assert_eq!(rule.destination_ports, Some((5301, 5301)));
                let destination = rule.destination.map(|d| d.to_string()).unwrap_or_default();
                (rule.priority, rule.family, destination, rule.table)
            })
            .collect();
        assert_eq!(
            rules,
            vec![
                (20000, Family::V4, "10.4.0.0/24".to_string(), 20000),
                (20001, Family::V4, "10.4.1.0/24".to_string(), 20000),
                (20002, Family::V6, "fd00:4::/64".to_string(), 20000),
            ]
        );
        let policies: Vec<(String, Vec<Ipv6Addr>, String)> = r1
            .srv6_policies
            .iter()
            .map(|p| {
                (
                    p.prefix.to_string(),
                    p.segments.clone(),
                    p.interface.clone(),
                )
            })
            .collect();
        assert_eq!(
            policies,
            vec![
                (
                    "10.4.0.0/24".to_string(),
                    vec![end_r3, dx4_self],
                    "eth2".to_string()
                ),
                (
                    "10.4.1.0/24".to_string(),
                    vec![end_r3, dx4_r4],
                    "eth2".to_string()
                ),
                (
                    "fd00:4::/64".to_string(),
                    vec![end_r3, dt6_r4],
                    "eth2".to_string()
                ),
            ]
        );
        // Each router of the path reaches the next one's SID over their link.
        let r3_peer = addressing.peer_of("r1", "eth2").expect("peer").2.v6.addr();
        assert_eq!(
            hops(r1, "fd00:5e6:5::1/128"),
            vec![("eth2".to_string(), r3_peer.to_string(), 1)]
        );
        let r3 = &states["r3"];
        assert_eq!(
            r3.local_sids,
            vec![LocalSid {
                sid: end_r3,
                action: Srv6Action::End,
                interface: "eth2".into(),
            }]
        );
        assert_eq!(hops(r3, "fd00:5e6:6::100/128")[0].0, "eth2");
        assert_eq!(hops(r3, "fd00:5e6:6::101/128")[0].0, "eth2");
        assert_eq!(hops(r3, "fd00:5e6:6::2/128")[0].0, "eth2");
        let h4 = addressing.peer_of("r4", "eth3").expect("peer").2.v4.addr();
        let r4_loopback = addressing.loopback_of("r4").expect("loopback").v4.addr();
        let mut r4_sids = states["r4"].local_sids.clone();
        r4_sids.sort_by_key(|sid| sid.sid);
        assert_eq!(
            r4_sids,
            vec![
                LocalSid {
                    sid: dt6_r4,
                    action: Srv6Action::EndDt6 { table: MAIN_TABLE },
                    interface: "eth2".into(),
                },
                LocalSid {
                    sid: dx4_self,
                    action: Srv6Action::EndDx4 {
                        next_hop: r4_loopback,
                    },
                    interface: "eth2".into(),
                },
                LocalSid {
                    sid: dx4_r4,
                    action: Srv6Action::EndDx4 { next_hop: h4 },
                    interface: "eth3".into(),
                },
            ]
        );
        for state in states.values() {
            state.check().expect("valid node state");
        }
    }

    #[test]
    fn a_pin_must_start_at_its_router() {
        let (topology, discovery, _) = diamond_with_host();
        let planned = BTreeMap::from([(
            "r2".to_string(),
            serde_json::json!({"routes": [], "pins": [{
                "job": "pinned", "path": ["r1", "r3", "r4"], "prefixes": ["10.4.1.0/24"],
                "ip_protocol": null, "destination_ports": null,
            }]}),
        )]);
        let error = render(&topology, &discovery, &planned, &default_class_rules())
            .expect_err("r2 is not the head");
        assert_eq!(
            error.to_string(),
            "plan for node r2: pin of jobs/pinned does not start here"
        );
    }

    #[test]
    fn rate_limits_give_best_effort_and_bulk_what_ai_sync_leaves() {
        let (topology, discovery, _) = diamond();
        let limit = |sync: f64| {
            serde_json::json!({"routes": [], "rate_limits": [{
                "next_hop": "r2", "capacity_bps": 10e9, "ai_sync_bps": sync,
                "ai_bulk_bps": 1e9, "best_effort_bps": 1e9,
            }]})
        };
        let rates = |sync: f64| -> Vec<(u16, u64, usize)> {
            let planned = BTreeMap::from([("r1".to_string(), limit(sync))]);
            let states =
                render(&topology, &discovery, &planned, &default_class_rules()).expect("renders");
            let limits = &states["r1"].rate_limits;
            assert_eq!(limits.len(), 1);
            assert_eq!(limits[0].interface, "eth1");
            assert_eq!(limits[0].default_class, Some(CLASS_BEST_EFFORT));
            // Under a parent at the link's capacity, each class may borrow
            // up to all of it.
            assert_eq!(limits[0].link_bps, Some(10_000_000_000));
            assert!(
                limits[0]
                    .classes
                    .iter()
                    .all(|c| c.ceil_bps == 10_000_000_000)
            );
            states["r1"].check().expect("valid node state");
            limits[0]
                .classes
                .iter()
                .map(|c| (c.class_id, c.rate_bps, c.dscp.len()))
                .collect()
        };
        // ai-sync guaranteed its 6G; 4G left: each of the others gets its
        // 1G and half of the 2G headroom.
        assert_eq!(
            rates(6e9),
            vec![
                (1, 6_000_000_000, 9),
                (2, 2_000_000_000, 16),
                (3, 2_000_000_000, 0)
            ]
        );
        // 1G left for 2G planned: both scaled to half.
        assert_eq!(
            rates(9e9),
            vec![
                (1, 9_000_000_000, 9),
                (2, 500_000_000, 16),
                (3, 500_000_000, 0)
            ]
        );
        // Nothing left: the floor keeps them alive.
        assert_eq!(
            rates(10e9),
            vec![
                (1, 10_000_000_000, 9),
                (2, 1_000_000, 16),
                (3, 1_000_000, 0)
            ]
        );
        // A plan above capacity: ai-sync guaranteed the link, no more.
        assert_eq!(rates(12e9)[0], (1, 10_000_000_000, 9));
    }

    #[test]
    fn rate_limits_steer_by_the_configured_dscp_classes() {
        let (topology, discovery, _) = diamond();
        let planned = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [], "rate_limits": [{
                "next_hop": "r2", "capacity_bps": 10e9, "ai_sync_bps": 5e9,
                "ai_bulk_bps": 0.0, "best_effort_bps": 1e9,
            }]}),
        )]);
        // AF41 alone is ai-sync here; nothing is ai-bulk.
        let classes = vec![ClassRule {
            dscp: vec![DscpRange {
                first: 34,
                last: 34,
            }],
            class: ClassOfService::AiSync,
        }];
        let states = render(&topology, &discovery, &planned, &classes).expect("renders");
        states["r1"].check().expect("valid node state");
        let dscp: Vec<(u16, Vec<u8>)> = states["r1"].rate_limits[0]
            .classes
            .iter()
            .map(|c| (c.class_id, c.dscp.clone()))
            .collect();
        assert_eq!(
            dscp,
            vec![
                (CLASS_AI_SYNC, vec![34]),
                (CLASS_AI_BULK, vec![]),
                (CLASS_BEST_EFFORT, vec![])
            ]
        );
    }

    #[test]
    fn a_prefix_in_the_sid_block_is_refused_when_pins_need_it() {
        let (mut topology, discovery, _) = diamond_with_host();
        if let Some(r4) = topology.nodes.iter_mut().find(|n| n.id == "r4") {
            r4.prefixes.push("fd00:5e6:5::/64".parse().expect("prefix"));
        }
        let planned = BTreeMap::from([(
            "r1".to_string(),
            serde_json::json!({"routes": [], "pins": [{
                "job": "pinned", "path": ["r1", "r3", "r4"], "prefixes": ["10.4.1.0/24"],
                "ip_protocol": null, "destination_ports": null,
            }]}),
        )]);
        let error =
            render(&topology, &discovery, &planned, &default_class_rules()).expect_err("overlap");
        assert_eq!(
            error.to_string(),
            "plan for node r4: prefix fd00:5e6:5::/64 overlaps fd00:5e6::/32, where aiwan's SRv6 SIDs live"
        );
    }
}
