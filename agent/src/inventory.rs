//! What a router tells the controller about its interfaces: names,
//! addresses and neighbours, so that the controller can find the next hop
//! of every link on routers it did not number (see the controller's
//! `southbound::discovery`). Pure: the kernel layer reads the netlink
//! dumps, this module turns them into reports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use serde::{Deserialize, Serialize};

/// Most interfaces one report holds (a router with more is cut, in
/// interface index order, and says so in its log).
pub const MAX_INTERFACES: usize = 4096;
/// Most addresses one interface's report holds.
pub const MAX_ADDRESSES_PER_INTERFACE: usize = 64;
/// Most neighbours one interface's report holds: a point-to-point link has
/// one or two; a LAN port with thousands tells the controller nothing a
/// shared subnet does not.
pub const MAX_NEIGHBOURS_PER_INTERFACE: usize = 64;

/// One interface of a router.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceReport {
    pub name: String,
    pub ifindex: u32,
    /// Administratively up, with its lower layer up (carrier).
    pub up: bool,
    /// Its own addresses with their prefix lengths, host bits kept
    /// (`10.9.0.1/31`); IPv6 link-local ones included.
    pub addresses: Vec<IpNet>,
    /// Addresses of its neighbour entries that resolved (reachable, stale,
    /// delay, probe or permanent), sorted.
    pub neighbours: Vec<IpAddr>,
}

/// The reports of a router's interfaces from its link, address and
/// neighbour dumps, ordered by interface index and bounded as the `MAX_`
/// constants say. Entries for interfaces the link dump did not list are
/// dropped (the interface went between the dumps).
pub fn reports(
    links: &[LinkMessage],
    addresses: &[AddressMessage],
    neighbours: &[NeighbourMessage],
) -> Vec<InterfaceReport> {
    let mut by_index: BTreeMap<u32, InterfaceReport> = BTreeMap::new();
    for link in links {
        let Some(name) = link.attributes.iter().find_map(|a| match a {
            netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }) else {
            continue;
        };
        if by_index.len() >= MAX_INTERFACES {
            break;
        }
        let flags = link.header.flags;
        by_index.insert(
            link.header.index,
            InterfaceReport {
                name,
                ifindex: link.header.index,
                up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
                addresses: Vec::new(),
                neighbours: Vec::new(),
            },
        );
    }
    for message in addresses {
        let Some(report) = by_index.get_mut(&message.header.index) else {
            continue;
        };
        // On a point-to-point IPv4 interface IFA_ADDRESS is the peer's and
        // IFA_LOCAL the interface's own; elsewhere they are the same.
        let local = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        let Some(own) = local.or(address) else {
            continue;
        };
        let Ok(net) = IpNet::new(own, message.header.prefix_len) else {
            continue;
        };
        if report.addresses.len() < MAX_ADDRESSES_PER_INTERFACE && !report.addresses.contains(&net)
        {
            report.addresses.push(net);
        }
    }
    for message in neighbours {
        let Some(report) = by_index.get_mut(&message.header.ifindex) else {
            continue;
        };
        if !matches!(
            message.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
        ) {
            continue;
        }
        let Some(address) = message.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        }) else {
            continue;
        };
        if address.is_multicast() {
            continue;
        }
        if report.neighbours.len() < MAX_NEIGHBOURS_PER_INTERFACE
            && !report.neighbours.contains(&address)
        {
            report.neighbours.push(address);
        }
    }
    by_index
        .into_values()
        .map(|mut report| {
            report.addresses.sort();
            report.neighbours.sort();
            report
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::link::LinkAttribute;

    fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = flags;
        message.attributes.push(LinkAttribute::IfName(name.into()));
        message
    }

    fn address(index: u32, own: &str, len: u8, peer: Option<&str>) -> AddressMessage {
        let own: IpAddr = own.parse().expect("address");
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.header.prefix_len = len;
        message.header.family = match own {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        match peer {
            Some(peer) => {
                message.attributes.push(AddressAttribute::Local(own));
                message
                    .attributes
                    .push(AddressAttribute::Address(peer.parse().expect("peer")));
            }
            None => message.attributes.push(AddressAttribute::Address(own)),
        }
        message
    }

    fn neighbour(index: u32, address: &str, state: NeighbourState) -> NeighbourMessage {
        let mut message = NeighbourMessage::default();
        message.header.ifindex = index;
        message.header.state = state;
        let destination = match address.parse::<IpAddr>().expect("address") {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        };
        message
            .attributes
            .push(NeighbourAttribute::Destination(destination));
        message
    }

    #[test]
    fn addresses_neighbours_and_state_per_interface() {
        let up = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
        let links = [
            link(1, "lo", up),
            link(2, "ge-0/0/1", up),
            link(3, "to-east", LinkFlags::Up),
        ];
        let addresses = [
            address(2, "192.0.2.1", 31, None),
            address(2, "fe80::1", 64, None),
            address(3, "198.51.100.9", 32, Some("198.51.100.10")),
            address(9, "203.0.113.1", 24, None),
        ];
        let neighbours = [
            neighbour(2, "192.0.2.0", NeighbourState::Reachable),
            neighbour(2, "192.0.2.7", NeighbourState::Failed),
            neighbour(2, "ff02::1", NeighbourState::Noarp),
            neighbour(3, "fe80::2", NeighbourState::Stale),
        ];
        let reports = reports(&links, &addresses, &neighbours);
        assert_eq!(reports.len(), 3);
        assert_eq!(reports[1].name, "ge-0/0/1");
        assert!(reports[1].up);
        assert_eq!(
            reports[1].addresses,
            vec![
                "192.0.2.1/31".parse::<IpNet>().expect("net"),
                "fe80::1/64".parse().expect("net")
            ]
        );
        assert_eq!(
            reports[1].neighbours,
            vec!["192.0.2.0".parse::<IpAddr>().expect("ip")]
        );
        // No carrier: not up. A point-to-point address is the local one.
        assert!(!reports[2].up);
        assert_eq!(
            reports[2].addresses,
            vec!["198.51.100.9/32".parse::<IpNet>().expect("net")]
        );
        assert_eq!(
            reports[2].neighbours,
            vec!["fe80::2".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn reports_are_bounded() {
        let links = [link(2, "eth1", LinkFlags::Up)];
        let neighbours: Vec<NeighbourMessage> = (0..1000u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
                neighbour(2, &ip, NeighbourState::Reachable)
            })
            .collect();
        let addresses: Vec<AddressMessage> = (0..1000u32)
            .map(|i| {
                address(
                    2,
                    &std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string(),
                    32,
                    None,
                )
            })
            .collect();
        let reports = reports(&links, &addresses, &neighbours);
        assert_eq!(reports[0].neighbours.len(), MAX_NEIGHBOURS_PER_INTERFACE);
        assert_eq!(reports[0].addresses.len(), MAX_ADDRESSES_PER_INTERFACE);
    }
}
