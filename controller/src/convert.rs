//! Conversions between `aiwan.v1` messages and domain types, with the checks
//! that name the offending field.

use aiwan_api::v1 as pb;
use aiwan_planner::{Link, Node, NodeRole, Site, Topology};
use ipnet::IpNet;
use tonic::Status;

/// A request field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, as in the proto: `job.sources[0].site`.
    pub field: String,
    pub reason: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldViolation {
        FieldViolation {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<FieldViolation> for Status {
    fn from(violation: FieldViolation) -> Status {
        Status::invalid_argument(format!("{}: {}", violation.field, violation.reason))
    }
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as milliseconds since the epoch, checked.
pub fn timestamp_ms(field: &str, ts: &prost_types::Timestamp) -> Result<i64, FieldViolation> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(FieldViolation::new(
            field,
            "nanos must be within 0..999999999",
        ));
    }
    ts.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(ts.nanos / 1_000_000)))
        .ok_or_else(|| FieldViolation::new(field, "is out of range"))
}

/// The ID in a resource name `{collection}/{id}`.
pub fn resource_id<'a>(
    field: &str,
    name: &'a str,
    collection: &str,
) -> Result<&'a str, FieldViolation> {
    match name
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(id) if !id.is_empty() && !id.contains('/') => Ok(id),
        _ => Err(FieldViolation::new(
            field,
            format!("{name:?} is not a resource name like {collection}/{{id}}"),
        )),
    }
}

/// Parses a CIDR prefix; host bits are cleared (`10.1.1.7/24` is `10.1.1.0/24`).
pub fn parse_prefix(field: &str, text: &str) -> Result<IpNet, FieldViolation> {
    text.parse::<IpNet>().map(|net| net.trunc()).map_err(|_| {
        FieldViolation::new(
            field,
            format!("{text:?} is not a CIDR prefix like 10.1.0.0/16 or 2001:db8::/48"),
        )
    })
}

/// The protobuf form of an API role.
pub fn role_to_pb(role: crate::auth::Role) -> pb::Role {
    match role {
        crate::auth::Role::Viewer => pb::Role::Viewer,
        crate::auth::Role::Operator => pb::Role::Operator,
        crate::auth::Role::Admin => pb::Role::Admin,
    }
}

/// The protobuf form of a node role.
pub fn node_role_to_pb(role: NodeRole) -> pb::NodeRole {
    match role {
        NodeRole::WanRouter => pb::NodeRole::WanRouter,
        NodeRole::Spine => pb::NodeRole::Spine,
        NodeRole::Leaf => pb::NodeRole::Leaf,
        NodeRole::Host => pb::NodeRole::Host,
    }
}

/// The protobuf form of a stored topology.
pub fn topology_to_pb(topology: &Topology, revision: i64, updated_ms: i64) -> pb::Topology {
    pb::Topology {
        display_name: topology.name.clone(),
        sites: topology
            .sites
            .iter()
            .map(|site| pb::Site {
                name: format!("sites/{}", site.id),
                prefixes: site.prefixes.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        nodes: topology
            .nodes
            .iter()
            .map(|node| pb::Node {
                name: format!("nodes/{}", node.id),
                site: node
                    .site
                    .as_ref()
                    .map(|site| format!("sites/{site}"))
                    .unwrap_or_default(),
                role: node_role_to_pb(node.role) as i32,
                prefixes: node.prefixes.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        links: topology
            .links
            .iter()
            .map(|link| pb::Link {
                name: format!("links/{}:{}", link.src, link.src_interface),
                src_node: format!("nodes/{}", link.src),
                src_interface: link.src_interface.clone(),
                dst_node: format!("nodes/{}", link.dst),
                dst_interface: link.dst_interface.clone(),
                capacity_bps: i64::try_from(link.capacity_bps).unwrap_or(i64::MAX),
                latency: Some(prost_types::Duration {
                    seconds: (link.latency_us / 1_000_000) as i64,
                    nanos: ((link.latency_us % 1_000_000) * 1000) as i32,
                }),
                srlgs: link.srlgs.clone(),
                admin_state: if link.admin_up {
                    pb::AdminState::Up
                } else {
                    pb::AdminState::Down
                } as i32,
                unresolved: String::new(),
            })
            .collect(),
        revision,
        update_time: (revision > 0).then(|| timestamp(updated_ms)),
    }
}

/// The domain form of a topology to import; checks every field and then the
/// topology's own invariants.
pub fn topology_from_pb(topology: &pb::Topology) -> Result<Topology, FieldViolation> {
    let mut sites = Vec::with_capacity(topology.sites.len());
    for (i, site) in topology.sites.iter().enumerate() {
        let field = format!("topology.sites[{i}]");
        let id = resource_id(&format!("{field}.name"), &site.name, "sites")?;
        let prefixes = site
            .prefixes
            .iter()
            .enumerate()
            .map(|(j, p)| parse_prefix(&format!("{field}.prefixes[{j}]"), p))
            .collect::<Result<_, _>>()?;
        sites.push(Site {
            id: id.to_string(),
            prefixes,
        });
    }
    let mut nodes = Vec::with_capacity(topology.nodes.len());
    for (i, node) in topology.nodes.iter().enumerate() {
        let field = format!("topology.nodes[{i}]");
        let id = resource_id(&format!("{field}.name"), &node.name, "nodes")?;
        let site = match node.site.as_str() {
            "" => None,
            name => Some(resource_id(&format!("{field}.site"), name, "sites")?.to_string()),
        };
        let role = match pb::NodeRole::try_from(node.role) {
            Ok(pb::NodeRole::WanRouter) => NodeRole::WanRouter,
            Ok(pb::NodeRole::Spine) => NodeRole::Spine,
            Ok(pb::NodeRole::Leaf) => NodeRole::Leaf,
            Ok(pb::NodeRole::Host) => NodeRole::Host,
            Ok(pb::NodeRole::Unspecified) | Err(_) => {
                return Err(FieldViolation::new(
                    format!("{field}.role"),
                    "must be one of WAN_ROUTER, SPINE, LEAF, HOST",
                ));
            }
        };
        let prefixes = node
            .prefixes
            .iter()
            .enumerate()
            .map(|(j, p)| parse_prefix(&format!("{field}.prefixes[{j}]"), p))
            .collect::<Result<_, _>>()?;
        nodes.push(Node {
            id: id.to_string(),
            site,
            role,
            prefixes,
        });
    }
    let mut links = Vec::with_capacity(topology.links.len());
    for (i, link) in topology.links.iter().enumerate() {
        let field = format!("topology.links[{i}]");
        let src = resource_id(&format!("{field}.src_node"), &link.src_node, "nodes")?;
        let dst = resource_id(&format!("{field}.dst_node"), &link.dst_node, "nodes")?;
        let capacity_bps = u64::try_from(link.capacity_bps)
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| {
                FieldViolation::new(format!("{field}.capacity_bps"), "must be positive")
            })?;
        let latency_us = match &link.latency {
            None => 0,
            Some(d) if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 => {
                return Err(FieldViolation::new(
                    format!("{field}.latency"),
                    "must be a non-negative duration",
                ));
            }
            Some(d) => (d.seconds as u64)
                .saturating_mul(1_000_000)
                .saturating_add((d.nanos / 1000) as u64),
        };
        let admin_up = match pb::AdminState::try_from(link.admin_state) {
            Ok(pb::AdminState::Unspecified | pb::AdminState::Up) => true,
            Ok(pb::AdminState::Down) => false,
            Err(_) => {
                return Err(FieldViolation::new(
                    format!("{field}.admin_state"),
                    format!("unknown value {}", link.admin_state),
                ));
            }
        };
        links.push(Link {
            src: src.to_string(),
            src_interface: link.src_interface.clone(),
            dst: dst.to_string(),
            dst_interface: link.dst_interface.clone(),
            capacity_bps,
            latency_us,
            srlgs: link.srlgs.clone(),
            admin_up,
        });
    }
    let domain = Topology {
        name: topology.display_name.clone(),
        sites,
        nodes,
        links,
    };
    domain
        .validate()
        .map_err(|error| FieldViolation::new("topology", error.to_string()))?;
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(timestamp_ms("t", &timestamp(ms)), Ok(ms));
        }
        let bad = prost_types::Timestamp {
            seconds: 1,
            nanos: -5,
        };
        assert_eq!(
            timestamp_ms("job.deadline", &bad).map_err(|v| v.field),
            Err("job.deadline".to_string())
        );
    }

    #[test]
    fn resource_names() {
        assert_eq!(resource_id("name", "jobs/a", "jobs"), Ok("a"));
        for bad in ["jobs/", "job/a", "a", "jobs/a/b", ""] {
            assert!(resource_id("name", bad, "jobs").is_err(), "{bad}");
        }
    }

    #[test]
    fn topology_round_trips() {
        let topology = Topology {
            name: "t".into(),
            sites: vec![Site {
                id: "dc1".into(),
                prefixes: vec!["10.0.0.0/8".parse().unwrap()],
            }],
            nodes: vec![
                Node {
                    id: "a".into(),
                    site: Some("dc1".into()),
                    role: NodeRole::Leaf,
                    prefixes: vec![],
                },
                Node {
                    id: "b".into(),
                    site: None,
                    role: NodeRole::WanRouter,
                    prefixes: vec!["2001:db8::/48".parse().unwrap()],
                },
            ],
            links: vec![Link {
                src: "a".into(),
                src_interface: "eth1".into(),
                dst: "b".into(),
                dst_interface: "eth9".into(),
                capacity_bps: 400_000_000_000,
                latency_us: 1_500_250,
                srlgs: vec!["duct".into()],
                admin_up: false,
            }],
        };
        let pb = topology_to_pb(&topology, 3, 1000);
        assert_eq!(pb.links[0].name, "links/a:eth1");
        assert_eq!(topology_from_pb(&pb), Ok(topology));
    }
}
