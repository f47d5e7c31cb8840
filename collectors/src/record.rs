//! The collectors' own record types: what every decoder produces and what
//! the telemetry store ingests. Decoders of every protocol convert into
//! these at their edge, so nothing downstream knows a wire format.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The wire protocol an exporter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowProtocol {
    NetflowV5,
    NetflowV9,
    Ipfix,
    Sflow,
    /// A datagram whose version field names no protocol we know; counted
    /// against its source so the operator can find it.
    Unknown,
}

impl FlowProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowProtocol::NetflowV5 => "netflow-v5",
            FlowProtocol::NetflowV9 => "netflow-v9",
            FlowProtocol::Ipfix => "ipfix",
            FlowProtocol::Sflow => "sflow",
            FlowProtocol::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FlowProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a record, as the collector keys its per-exporter state
/// (templates, sampling rates, sequence numbers, counters).
///
/// Several exporters may share one address (line cards, virtual routers,
/// one softflowd per interface): the observation domain (IPFIX), source id
/// (v9), engine type and id (v5) or sub-agent id (sFlow) tells them apart,
/// and `port` does too when the collector is told to key by source port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExporterKey {
    /// UDP source address for NetFlow and IPFIX; the agent address carried
    /// in the datagram for sFlow.
    pub address: IpAddr,
    /// UDP source port when keying by port is on, otherwise 0.
    pub port: u16,
    pub protocol: FlowProtocol,
    /// v9 source id, IPFIX observation domain id, v5 `engine_type << 8 |
    /// engine_id`, sFlow sub-agent id.
    pub domain: u32,
}

impl fmt::Display for ExporterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == 0 {
            write!(f, "{} {}/{}", self.protocol, self.address, self.domain)
        } else {
            write!(
                f,
                "{} {}:{}/{}",
                self.protocol, self.address, self.port, self.domain
            )
        }
    }
}

/// An address as one number: IPv6 as is, IPv4 mapped into
/// `::ffff:0:0/96`, so one column holds both families.
pub fn addr_to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`addr_to_u128`]: IPv4-mapped numbers come back as IPv4.
pub fn u128_to_addr(value: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(value);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The number of an IPv4 address, as [`addr_to_u128`] gives it.
pub fn ipv4_to_u128(octets: [u8; 4]) -> u128 {
    u128::from(Ipv4Addr::from(octets).to_ipv6_mapped())
}

/// One flow record, as a row. Decoders that are not on the hot path (sFlow)
/// and tests build these; the NetFlow and IPFIX decoders write straight
/// into a [`FlowBatch`]'s columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowRecord {
    /// When the collector received the datagram (Unix ms). Buckets are by
    /// receive time: exporters' clocks are not to be trusted.
    pub received_ms: i64,
    /// The flow's end as the exporter reported it (Unix ms), 0 when unknown.
    pub flow_end_ms: i64,
    pub src_addr: u128,
    pub dst_addr: u128,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// The IP TOS / traffic class byte; DSCP is its upper six bits.
    pub tos: u8,
    pub in_if: u32,
    pub out_if: u32,
    /// Packets and bytes as carried in the record (sampled). Bytes are IP
    /// bytes (from the IP header on), as NetFlow and IPFIX count them.
    pub packets: u64,
    pub bytes: u64,
    /// 1 in `sampling_rate` packets was seen; 1 when unsampled or unknown.
    pub sampling_rate: u32,
}

/// Flow records in columns, with a small dictionary of the exporters they
/// came from. Decoders append; the store ingests whole batches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowBatch {
    /// The exporters the `exporter` column indexes.
    pub exporters: Vec<ExporterKey>,
    pub exporter: Vec<u32>,
    pub received_ms: Vec<i64>,
    pub flow_end_ms: Vec<i64>,
    pub src_addr: Vec<u128>,
    pub dst_addr: Vec<u128>,
    pub src_port: Vec<u16>,
    pub dst_port: Vec<u16>,
    pub protocol: Vec<u8>,
    pub tos: Vec<u8>,
    pub in_if: Vec<u32>,
    pub out_if: Vec<u32>,
    pub packets: Vec<u64>,
    pub bytes: Vec<u64>,
    pub sampling_rate: Vec<u32>,
}

impl FlowBatch {
    pub fn with_capacity(records: usize) -> FlowBatch {
        FlowBatch {
            exporters: Vec::new(),
            exporter: Vec::with_capacity(records),
            received_ms: Vec::with_capacity(records),
            flow_end_ms: Vec::with_capacity(records),
            src_addr: Vec::with_capacity(records),
            dst_addr: Vec::with_capacity(records),
            src_port: Vec::with_capacity(records),
            dst_port: Vec::with_capacity(records),
            protocol: Vec::with_capacity(records),
            tos: Vec::with_capacity(records),
            in_if: Vec::with_capacity(records),
            out_if: Vec::with_capacity(records),
            packets: Vec::with_capacity(records),
            bytes: Vec::with_capacity(records),
            sampling_rate: Vec::with_capacity(records),
        }
    }

    pub fn len(&self) -> usize {
        self.exporter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exporter.is_empty()
    }

    /// Empties the columns and the dictionary, keeping their capacity.
    pub fn clear(&mut self) {
        self.exporters.clear();
        self.exporter.clear();
        self.received_ms.clear();
        self.flow_end_ms.clear();
        self.src_addr.clear();
        self.dst_addr.clear();
        self.src_port.clear();
        self.dst_port.clear();
        self.protocol.clear();
        self.tos.clear();
        self.in_if.clear();
        self.out_if.clear();
        self.packets.clear();
        self.bytes.clear();
        self.sampling_rate.clear();
    }

    /// The dictionary index of `key`, added when new. Batches hold a handful
    /// of exporters, so a scan from the back (the likeliest) is enough.
    pub fn exporter_index(&mut self, key: &ExporterKey) -> u32 {
        if let Some(position) = self.exporters.iter().rposition(|k| k == key) {
            return position as u32;
        }
        self.exporters.push(*key);
        (self.exporters.len() - 1) as u32
    }

    /// Appends one record from the exporter at dictionary index `exporter`.
    pub fn push(&mut self, exporter: u32, record: &FlowRecord) {
        self.exporter.push(exporter);
        self.received_ms.push(record.received_ms);
        self.flow_end_ms.push(record.flow_end_ms);
        self.src_addr.push(record.src_addr);
        self.dst_addr.push(record.dst_addr);
        self.src_port.push(record.src_port);
        self.dst_port.push(record.dst_port);
        self.protocol.push(record.protocol);
        self.tos.push(record.tos);
        self.in_if.push(record.in_if);
        self.out_if.push(record.out_if);
        self.packets.push(record.packets);
        self.bytes.push(record.bytes);
        self.sampling_rate.push(record.sampling_rate);
    }

    /// Row `index` (tests and slow paths).
    pub fn record(&self, index: usize) -> Option<(ExporterKey, FlowRecord)> {
        let exporter = *self.exporter.get(index)?;
        let key = *self.exporters.get(exporter as usize)?;
        Some((
            key,
            FlowRecord {
                received_ms: self.received_ms[index],
                flow_end_ms: self.flow_end_ms[index],
                src_addr: self.src_addr[index],
                dst_addr: self.dst_addr[index],
                src_port: self.src_port[index],
                dst_port: self.dst_port[index],
                protocol: self.protocol[index],
                tos: self.tos[index],
                in_if: self.in_if[index],
                out_if: self.out_if[index],
                packets: self.packets[index],
                bytes: self.bytes[index],
                sampling_rate: self.sampling_rate[index],
            },
        ))
    }

    /// Appends every record of `other`, remapping its exporter indexes.
    pub fn append(&mut self, other: &FlowBatch) {
        let remap: Vec<u32> = other
            .exporters
            .iter()
            .map(|key| self.exporter_index(key))
            .collect();
        self.exporter
            .extend(other.exporter.iter().map(|&i| remap[i as usize]));
        self.received_ms.extend_from_slice(&other.received_ms);
        self.flow_end_ms.extend_from_slice(&other.flow_end_ms);
        self.src_addr.extend_from_slice(&other.src_addr);
        self.dst_addr.extend_from_slice(&other.dst_addr);
        self.src_port.extend_from_slice(&other.src_port);
        self.dst_port.extend_from_slice(&other.dst_port);
        self.protocol.extend_from_slice(&other.protocol);
        self.tos.extend_from_slice(&other.tos);
        self.in_if.extend_from_slice(&other.in_if);
        self.out_if.extend_from_slice(&other.out_if);
        self.packets.extend_from_slice(&other.packets);
        self.bytes.extend_from_slice(&other.bytes);
        self.sampling_rate.extend_from_slice(&other.sampling_rate);
    }
}

/// One interface's cumulative counters at one moment: an sFlow generic
/// interface counter record, or the router agent's stats64 of a link.
/// The store turns successive samples into rates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InterfaceCounters {
    /// When the collector received them (Unix ms).
    pub received_ms: i64,
    /// The device: an sFlow agent address, or a node name (`nodes/r1`).
    pub device: String,
    pub if_index: u32,
    /// The interface name where the source knows it (the agent does).
    pub if_name: Option<String>,
    /// ifSpeed in bit/s, 0 when unknown.
    pub speed_bps: u64,
    pub in_octets: u64,
    pub in_packets: u64,
    pub in_errors: u64,
    pub in_discards: u64,
    pub out_octets: u64,
    pub out_packets: u64,
    pub out_errors: u64,
    pub out_discards: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_one_number() {
        for text in ["192.0.2.7", "0.0.0.0", "2001:db8::1", "::1", "::"] {
            let address: IpAddr = text.parse().expect("literal");
            assert_eq!(u128_to_addr(addr_to_u128(address)), address, "{text}");
        }
        assert_eq!(
            ipv4_to_u128([10, 0, 0, 1]),
            addr_to_u128("10.0.0.1".parse().expect("literal"))
        );
    }

    #[test]
    fn append_remaps_exporters() {
        let a = ExporterKey {
            address: "10.0.0.1".parse().expect("literal"),
            port: 0,
            protocol: FlowProtocol::Ipfix,
            domain: 1,
        };
        let b = ExporterKey { domain: 2, ..a };
        let mut first = FlowBatch::default();
        let ia = first.exporter_index(&a);
        first.push(
            ia,
            &FlowRecord {
                bytes: 1,
                ..Default::default()
            },
        );
        let mut second = FlowBatch::default();
        let ib = second.exporter_index(&b);
        let ia2 = second.exporter_index(&a);
        second.push(
            ib,
            &FlowRecord {
                bytes: 2,
                ..Default::default()
            },
        );
        second.push(
            ia2,
            &FlowRecord {
                bytes: 3,
                ..Default::default()
            },
        );
        first.append(&second);
        let keys: Vec<_> = (0..first.len())
            .map(|i| first.record(i).expect("row"))
            .map(|(key, record)| (key.domain, record.bytes))
            .collect();
        assert_eq!(keys, vec![(1, 1), (2, 2), (1, 3)]);
    }
}
