//! The sFlow v5 decoder: datagrams in, flow records, interface counters and
//! per-agent counters out. Sans-I/O: the listener hands it bytes, the UDP
//! source and the receive time.
//!
//! sflow-parser decodes the XDR structures and etherparse the sampled
//! packet headers. Our own code is the thin layer around them:
//!
//! - The datagram header and the framing of its samples are walked here
//!   (a few XDR words). sflow-parser parses a datagram all or nothing and
//!   gives nothing back on failure, so walking it ourselves gives the agent
//!   and sub-agent to count a broken datagram against, errors that say how
//!   many bytes were missing, and one bad sample (say a vendor record
//!   sflow-parser rejects, such as an unknown header protocol) costs that
//!   sample only, not the counter samples next to it.
//! - Each flow and counter sample is then handed to
//!   `sflow_parser::parse_datagram` wrapped in a minimal datagram header:
//!   the crate's sample parsers are private, `parse_datagram` is its entry.
//! - Before that, flow samples are checked for nested 802.11 aggregation
//!   records (format 0:1016): sflow-parser parses those recursively with no
//!   depth limit, so a crafted 64 KiB datagram (16 bytes a level) would
//!   overflow the stack. Real agents never nest them.
//! - MPLS label stacks in sampled headers are skipped here: etherparse has
//!   no MPLS, and WAN cores sample labelled packets.
//!
//! Records and counters follow the crate's conventions (see
//! [`crate::record`]): bytes are IP bytes, and `ip_length` is the one
//! place where an sFlow frame length becomes one.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use sflow_parser::ParseError;
use sflow_parser::models::{
    CounterData, CounterRecord, FlowData, FlowRecord as SflowFlowRecord, GenericInterfaceCounters,
    HeaderProtocol, Interface, InterfaceExpanded, SampleData, SampledHeader,
};

use crate::error::DecodeError;
use crate::record::{
    ExporterKey, FlowBatch, FlowProtocol, FlowRecord, InterfaceCounters, ipv4_to_u128,
};
use crate::sequence::SequenceTracker;
use crate::stats::{ExporterCounters, ExporterReport};

/// Sample formats (enterprise 0) this decoder reads; other samples
/// (discarded packets, vendor formats) are skipped without error.
const FLOW_SAMPLE: u32 = 1;
const COUNTERS_SAMPLE: u32 = 2;
const FLOW_SAMPLE_EXPANDED: u32 = 3;
const COUNTERS_SAMPLE_EXPANDED: u32 = 4;

/// Flow record format 0:1016, extended 802.11 aggregation: the one record
/// that holds flow records itself.
const EXTENDED_80211_AGGREGATION: u32 = 1016;
/// How deep 802.11 aggregation records may nest: one level (an aggregation
/// whose PDUs hold ordinary records) is what the spec describes.
const MAX_AGGREGATION_DEPTH: usize = 1;

/// The interface value for "the device itself" (traffic it originates or
/// terminates): 0x3FFFFFFF in the compact encoding, 0xFFFFFFFF expanded.
const INTERFACE_INTERNAL_COMPACT: u32 = 0x3fff_ffff;
const INTERFACE_INTERNAL_EXPANDED: u32 = u32::MAX;

const ETHERNET_HEADER_LEN: usize = 14;
/// The FCS the sampled Ethernet record (0:2) includes in its length.
const ETHERNET_FCS_LEN: u32 = 4;
const ETHER_TYPE_MPLS_UNICAST: u16 = 0x8847;
const ETHER_TYPE_MPLS_MULTICAST: u16 = 0x8848;
const IPV4_MIN_HEADER_LEN: u16 = 20;
const IPV6_HEADER_LEN: u32 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SflowOptions {
    /// Key agents by UDP source port too (several agents behind one NAT
    /// address, or test rigs on one host).
    pub key_by_source_port: bool,
    /// Agent keys tracked at most (default [`MAX_AGENTS`])...
    pub max_agents: usize,
    /// ...a new one taking the place of one idle this long (default
    /// [`AGENT_IDLE_MS`]).
    pub agent_idle_ms: i64,
}

impl Default for SflowOptions {
    fn default() -> SflowOptions {
        SflowOptions {
            key_by_source_port: false,
            max_agents: MAX_AGENTS,
            agent_idle_ms: AGENT_IDLE_MS,
        }
    }
}

/// What the decoder keeps per agent and sub-agent.
#[derive(Debug, Default)]
struct ExporterState {
    counters: ExporterCounters,
    /// The datagram sequence number, which each sub-agent increments by
    /// one per datagram.
    sequence: SequenceTracker,
    last_error: Option<String>,
    /// When a datagram of this agent last came (received time, ms).
    last_seen_ms: i64,
}

impl ExporterState {
    fn count_error(&mut self, error: &DecodeError) {
        self.counters.decode_errors += 1;
        self.last_error = Some(error.to_string());
    }

    fn report(&self, key: ExporterKey) -> ExporterReport {
        let mut counters = self.counters;
        counters.sequence_gaps = self.sequence.gaps;
        counters.sequence_lost = self.sequence.lost;
        counters.sequence_late = self.sequence.reordered;
        counters.sequence_resets = self.sequence.resets;
        ExporterReport {
            key,
            counters,
            last_error: self.last_error.clone(),
        }
    }
}

/// Agent keys tracked at most by default, as
/// [`crate::netflow::NetflowOptions`] bounds NetFlow exporters: a flood of
/// spoofed sources cannot exhaust memory.
pub const MAX_AGENTS: usize = 10_000;
/// With the agent table full, a new agent takes the place of the one idle
/// longest if that one has sent nothing for this long (a spoofed flood
/// cannot lock out agents that start later).
pub const AGENT_IDLE_MS: i64 = 600_000;

#[derive(Debug)]
pub struct SflowDecoder {
    options: SflowOptions,
    exporters: HashMap<ExporterKey, ExporterState>,
    /// Datagrams dropped because `max_agents` keys were tracked already.
    rejected_datagrams: u64,
    /// Agents forgotten to make room for new ones.
    evicted_agents: u64,
    /// Reused buffer for the one-sample datagrams handed to sflow-parser.
    scratch: Vec<u8>,
}

impl SflowDecoder {
    /// Datagrams dropped because `max_agents` keys were tracked already.
    pub fn rejected_datagrams(&self) -> u64 {
        self.rejected_datagrams
    }

    /// Agents forgotten to make room for new ones (idle at least
    /// `agent_idle_ms`).
    pub fn evicted_agents(&self) -> u64 {
        self.evicted_agents
    }

    /// The state of `key`, created if there is room (made by forgetting
    /// the agent idle longest, if idle long enough).
    fn state(&mut self, key: ExporterKey, now_ms: i64) -> Option<&mut ExporterState> {
        if !self.exporters.contains_key(&key) && self.exporters.len() >= self.options.max_agents {
            let idle_ms = self.options.agent_idle_ms;
            let idle = self
                .exporters
                .iter()
                .filter(|(_, s)| now_ms - s.last_seen_ms >= idle_ms)
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(k, _)| *k);
            let Some(old) = idle else {
                self.rejected_datagrams += 1;
                return None;
            };
            self.exporters.remove(&old);
            self.evicted_agents += 1;
        }
        let state = self.exporters.entry(key).or_default();
        state.last_seen_ms = state.last_seen_ms.max(now_ms);
        Some(state)
    }

    pub fn new(options: SflowOptions) -> SflowDecoder {
        SflowDecoder {
            options,
            exporters: HashMap::new(),
            rejected_datagrams: 0,
            evicted_agents: 0,
            scratch: Vec::new(),
        }
    }

    /// Decodes one datagram received from `source` at `received_ms`
    /// (Unix ms): one [`FlowRecord`] per flow sample into `flows`, one
    /// [`InterfaceCounters`] per generic interface counter record into
    /// `counters`.
    ///
    /// A datagram whose header or sample framing is broken yields nothing;
    /// a sample that does not decode costs only itself. Either way the
    /// error is counted against the agent (the UDP source when the header
    /// cannot tell), and the first one returned for the caller to log.
    /// Every datagram counts in `datagrams`, decoded or not, and its
    /// sequence number is tracked once the header is read.
    pub fn decode(
        &mut self,
        source: SocketAddr,
        received_ms: i64,
        datagram: &[u8],
        flows: &mut FlowBatch,
        counters: &mut Vec<InterfaceCounters>,
    ) -> Result<(), DecodeError> {
        let mut reader = Xdr::new(datagram);
        let header = match DatagramHeader::read(&mut reader) {
            Ok(header) => header,
            Err(error) => {
                let (agent, sub_agent_id) = partial_identity(datagram);
                let key = self.exporter_key(source, agent, sub_agent_id);
                let Some(state) = self.state(key, received_ms) else {
                    return Err(too_many_agents(self.options.max_agents));
                };
                state.counters.datagrams += 1;
                state.count_error(&error);
                return Err(error);
            }
        };
        let key = self.exporter_key(source, header.agent, header.sub_agent_id);

        let mut parsed = Vec::new();
        let mut errors = Vec::new();
        match read_samples(&mut reader) {
            Ok(samples) => {
                for (index, sample) in samples.iter().enumerate() {
                    match parse_sample(&mut self.scratch, index, sample) {
                        Ok(Some(data)) => parsed.push(data),
                        Ok(None) => {}
                        Err(error) => errors.push(error),
                    }
                }
            }
            Err(error) => errors.push(error),
        }

        let Some(state) = self.state(key, received_ms) else {
            return Err(too_many_agents(self.options.max_agents));
        };
        state.counters.datagrams += 1;
        // The datagram arrived, even if it did not decode: not a gap.
        state.sequence.observe(header.sequence_number, Some(1));
        let mut batch_exporter = None;
        for data in parsed {
            match data {
                SampleData::FlowSample(sample) => {
                    let record = flow_record(
                        received_ms,
                        sample.sampling_rate,
                        compact_interface(sample.input),
                        compact_interface(sample.output),
                        &sample.flow_records,
                    );
                    push_flow(state, flows, &mut batch_exporter, &key, &record);
                }
                SampleData::FlowSampleExpanded(sample) => {
                    let record = flow_record(
                        received_ms,
                        sample.sampling_rate,
                        expanded_interface(sample.input),
                        expanded_interface(sample.output),
                        &sample.flow_records,
                    );
                    push_flow(state, flows, &mut batch_exporter, &key, &record);
                }
                SampleData::CountersSample(sample) => {
                    push_counters(state, counters, key.address, received_ms, &sample.counters);
                }
                SampleData::CountersSampleExpanded(sample) => {
                    push_counters(state, counters, key.address, received_ms, &sample.counters);
                }
                _ => {}
            }
        }
        for error in &errors {
            state.count_error(error);
        }
        match errors.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// Every agent's counters, sorted by key.
    pub fn reports(&self) -> Vec<ExporterReport> {
        let mut reports: Vec<ExporterReport> = self
            .exporters
            .iter()
            .map(|(key, state)| state.report(*key))
            .collect();
        reports.sort_by_key(|report| report.key);
        reports
    }

    /// Counts the sequence gaps still waiting for late datagrams (at the
    /// end of a run).
    pub fn flush_sequences(&mut self) {
        for state in self.exporters.values_mut() {
            state.sequence.flush();
        }
    }

    /// The agent address (the UDP source when the datagram says "unknown"
    /// or 0.0.0.0), the sub-agent as domain, the port when keyed by port.
    fn exporter_key(
        &self,
        source: SocketAddr,
        agent: Option<IpAddr>,
        sub_agent_id: u32,
    ) -> ExporterKey {
        let address = agent
            .filter(|address| !address.is_unspecified())
            .unwrap_or(source.ip())
            // A dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d.
            .to_canonical();
        ExporterKey {
            address,
            port: if self.options.key_by_source_port {
                source.port()
            } else {
                0
            },
            protocol: FlowProtocol::Sflow,
            domain: sub_agent_id,
        }
    }
}

fn too_many_agents(max_agents: usize) -> DecodeError {
    DecodeError::invalid(
        "agent",
        format!(
            "{max_agents} sFlow agent keys are tracked already; datagram from a new one dropped"
        ),
    )
}

fn push_flow(
    state: &mut ExporterState,
    flows: &mut FlowBatch,
    batch_exporter: &mut Option<u32>,
    key: &ExporterKey,
    record: &FlowRecord,
) {
    state
        .counters
        .count_record(record.packets, record.bytes, record.sampling_rate);
    let exporter = *batch_exporter.get_or_insert_with(|| flows.exporter_index(key));
    flows.push(exporter, record);
}

/// Generic interface counter records (0:1) become [`InterfaceCounters`] of
/// the agent; other counter records are not used.
fn push_counters(
    state: &mut ExporterState,
    counters: &mut Vec<InterfaceCounters>,
    agent: IpAddr,
    received_ms: i64,
    records: &[CounterRecord],
) {
    let device = agent.to_string();
    for record in records {
        if let CounterData::GenericInterface(generic) = &record.counter_data {
            state.counters.counter_samples += 1;
            counters.push(interface_counters(&device, received_ms, generic));
        }
    }
}

/// A generic interface counter record (0:1) as the store wants it.
fn interface_counters(
    device: &str,
    received_ms: i64,
    generic: &GenericInterfaceCounters,
) -> InterfaceCounters {
    InterfaceCounters {
        received_ms,
        device: device.to_string(),
        if_index: generic.if_index,
        if_name: None,
        speed_bps: generic.if_speed,
        in_octets: generic.if_in_octets,
        in_packets: u64::from(generic.if_in_ucast_pkts)
            + u64::from(generic.if_in_multicast_pkts)
            + u64::from(generic.if_in_broadcast_pkts),
        in_errors: u64::from(generic.if_in_errors),
        in_discards: u64::from(generic.if_in_discards),
        out_octets: generic.if_out_octets,
        out_packets: u64::from(generic.if_out_ucast_pkts)
            + u64::from(generic.if_out_multicast_pkts)
            + u64::from(generic.if_out_broadcast_pkts),
        out_errors: u64::from(generic.if_out_errors),
        out_discards: u64::from(generic.if_out_discards),
    }
}

/// The ifIndex of a compact interface value; 0 when unknown, when the
/// packet was discarded (format 1), sent out of several interfaces
/// (format 2), or originated or terminated in the device itself.
fn compact_interface(interface: Interface) -> u32 {
    if interface.is_single() && interface.value() != INTERFACE_INTERNAL_COMPACT {
        interface.value()
    } else {
        0
    }
}

/// [`compact_interface`] for the expanded encoding.
fn expanded_interface(interface: InterfaceExpanded) -> u32 {
    if interface.format == 0 && interface.value != INTERFACE_INTERNAL_EXPANDED {
        interface.value
    } else {
        0
    }
}

/// One flow sample as one record: packets 1, bytes the sampled packet's IP
/// length, the sample's rate (0 read as 1).
///
/// Every flow sample yields a record, so packet totals after sampling stay
/// right whatever records the agent sent: addresses, ports and protocol
/// are 0 when no record carries them (a non-IP frame, a header protocol
/// we do not slice, only extended records), and bytes are 0 when no
/// record tells the packet's length.
fn flow_record(
    received_ms: i64,
    sampling_rate: u32,
    in_if: u32,
    out_if: u32,
    records: &[SflowFlowRecord],
) -> FlowRecord {
    let packet = SampledPacket::from_records(records);
    FlowRecord {
        received_ms,
        flow_end_ms: 0,
        src_addr: packet.src_addr,
        dst_addr: packet.dst_addr,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        protocol: packet.protocol,
        tos: packet.tos,
        in_if,
        out_if,
        packets: 1,
        bytes: ip_length(packet.ip_header_length, packet.frame),
        sampling_rate: sampling_rate.max(1),
    }
}

/// A frame as a flow sample describes it, for [`ip_length`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameLength {
    /// Octets of the frame on the wire, FCS included (spec: `frame_length`
    /// of the sampled header, `length` of the sampled Ethernet record).
    frame_length: u32,
    /// Octets the agent removed before copying the header bytes: the FCS,
    /// and VLAN tags the hardware took off (spec: `stripped`).
    stripped: u32,
    /// Layer-2 octets before the IP header in what remains (Ethernet and
    /// VLAN tags and MPLS labels as seen in the header bytes; 0 when the
    /// header starts with IP).
    link_header_length: u32,
}

/// The IP length of a sampled packet (from the IP header on, as NetFlow
/// and IPFIX count bytes). This is the one place where sFlow frame lengths
/// become IP lengths:
///
/// 1. The IP header's own length when one was read: IPv4 total length,
///    IPv6 40 + payload length, or the `length` of a sampled IPv4/IPv6
///    record (the spec's "length of IP packet excluding lower layer
///    encapsulations"). Agents cut headers at 128 bytes, but the IP header
///    is almost always inside them.
/// 2. Otherwise the frame: `frame_length` counts every octet received,
///    FCS included, and `stripped` the octets removed before the header
///    bytes were copied (the FCS, typically 4, plus VLAN tags the hardware
///    stripped; sflow_version_5.txt, `sampled_header`). So `frame_length -
///    stripped` is the length of the frame the header bytes begin, and
///    without its layer-2 header what remains is the IP packet.
/// 3. Otherwise 0: nothing told the size.
fn ip_length(ip_header_length: Option<u32>, frame: Option<FrameLength>) -> u64 {
    if let Some(length) = ip_header_length {
        return u64::from(length);
    }
    match frame {
        Some(frame) => u64::from(
            frame
                .frame_length
                .saturating_sub(frame.stripped)
                .saturating_sub(frame.link_header_length),
        ),
        None => 0,
    }
}

/// What a flow sample's records say about its packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SampledPacket {
    src_addr: u128,
    dst_addr: u128,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    tos: u8,
    /// The length the IP header (or sampled IPv4/IPv6 record) gives, when
    /// one was read and it is not 0 (TSO super-packets, IPv6 jumbograms).
    ip_header_length: Option<u32>,
    frame: Option<FrameLength>,
}

impl SampledPacket {
    /// The raw packet header (0:1) first: it is the packet itself. Then, for
    /// addresses it did not give, the sampled IPv4 (0:3) or IPv6 (0:4)
    /// record; for a frame length it did not give, the sampled Ethernet
    /// record (0:2).
    fn from_records(records: &[SflowFlowRecord]) -> SampledPacket {
        let mut packet = SampledPacket::default();
        let mut has_ip = false;
        if let Some(header) = records.iter().find_map(|record| match &record.flow_data {
            FlowData::SampledHeader(header) => Some(header),
            _ => None,
        }) {
            has_ip = packet.read_sampled_header(header);
        }
        if !has_ip {
            for record in records {
                match &record.flow_data {
                    FlowData::SampledIpv4(ipv4) => {
                        packet.src_addr = ipv4_to_u128(ipv4.src_ip.octets());
                        packet.dst_addr = ipv4_to_u128(ipv4.dst_ip.octets());
                        packet.read_sampled_ip_fields(
                            ipv4.protocol,
                            ipv4.src_port,
                            ipv4.dst_port,
                            ipv4.tos,
                            ipv4.length,
                        );
                        break;
                    }
                    FlowData::SampledIpv6(ipv6) => {
                        packet.src_addr = u128::from(ipv6.src_ip);
                        packet.dst_addr = u128::from(ipv6.dst_ip);
                        packet.read_sampled_ip_fields(
                            ipv6.protocol,
                            ipv6.src_port,
                            ipv6.dst_port,
                            ipv6.priority,
                            ipv6.length,
                        );
                        break;
                    }
                    _ => {}
                }
            }
        }
        if packet.frame.is_none()
            && let Some(ethernet) = records.iter().find_map(|record| match &record.flow_data {
                FlowData::SampledEthernet(ethernet) => Some(ethernet),
                _ => None,
            })
        {
            // The record has no VLAN information: an untagged header is
            // the best guess.
            packet.frame = Some(FrameLength {
                frame_length: ethernet.length,
                stripped: ETHERNET_FCS_LEN,
                link_header_length: ETHERNET_HEADER_LEN as u32,
            });
        }
        packet
    }

    /// The fields of a sampled IPv4/IPv6 record, XDR words each; values
    /// out of their field's range are read as 0.
    fn read_sampled_ip_fields(
        &mut self,
        protocol: u32,
        src_port: u32,
        dst_port: u32,
        tos: u32,
        length: u32,
    ) {
        self.protocol = u8::try_from(protocol).unwrap_or(0);
        self.src_port = u16::try_from(src_port).unwrap_or(0);
        self.dst_port = u16::try_from(dst_port).unwrap_or(0);
        self.tos = u8::try_from(tos).unwrap_or(0);
        self.ip_header_length = Some(length).filter(|&length| length > 0);
    }

    /// Reads a raw packet header with etherparse, lax: headers cut short
    /// are the rule. Returns whether an IP header was found; the frame
    /// length is taken either way.
    fn read_sampled_header(&mut self, header: &SampledHeader) -> bool {
        let (sliced, link_header_length) = slice_sampled_header(header.protocol, &header.header);
        self.frame = Some(FrameLength {
            frame_length: header.frame_length,
            stripped: header.stripped,
            // At most the header's length, itself a u32 on the wire.
            link_header_length: u32::try_from(link_header_length).unwrap_or(u32::MAX),
        });
        let Some(sliced) = sliced else {
            return false;
        };
        match &sliced.net {
            Some(LaxNetSlice::Ipv4(ipv4)) => {
                let ip = ipv4.header();
                self.src_addr = ipv4_to_u128(ip.source());
                self.dst_addr = ipv4_to_u128(ip.destination());
                self.tos = (ip.dcp().value() << 2) | ip.ecn().value();
                self.protocol = ipv4.payload().ip_number.0;
                self.ip_header_length = Some(ip.total_len())
                    .filter(|&length| length >= IPV4_MIN_HEADER_LEN)
                    .map(u32::from);
            }
            Some(LaxNetSlice::Ipv6(ipv6)) => {
                let ip = ipv6.header();
                self.src_addr = u128::from(ip.source_addr());
                self.dst_addr = u128::from(ip.destination_addr());
                self.tos = ip.traffic_class();
                // After the extension headers, when they fit in the header.
                self.protocol = ipv6.payload().ip_number.0;
                self.ip_header_length = Some(ip.payload_length())
                    .filter(|&length| length > 0)
                    .map(|length| u32::from(length) + IPV6_HEADER_LEN);
            }
            Some(LaxNetSlice::Arp(_)) | None => return false,
        }
        match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                self.src_port = tcp.source_port();
                self.dst_port = tcp.destination_port();
            }
            Some(TransportSlice::Udp(udp)) => {
                self.src_port = udp.source_port();
                self.dst_port = udp.destination_port();
            }
            _ => {}
        }
        true
    }
}

/// Slices a sampled header down to its IP packet. Returns the slices (None
/// when no IP packet could be found) and the layer-2 octets before where
/// the IP header is or would be. Ethernet (with VLAN tags, and MPLS under
/// it), IPv4, IPv6 and MPLS headers are read; for other header protocols
/// (PPP, POS, 802.11, ...) the layer-2 length is taken as 0, so their
/// bytes come out a few octets high.
fn slice_sampled_header(
    protocol: HeaderProtocol,
    bytes: &[u8],
) -> (Option<LaxSlicedPacket<'_>>, usize) {
    match protocol {
        HeaderProtocol::EthernetIso88023 => {
            let Ok(ethernet) = LaxSlicedPacket::from_ethernet(bytes) else {
                return (None, ETHERNET_HEADER_LEN);
            };
            let Some(payload) = ethernet.ether_payload() else {
                return (None, ETHERNET_HEADER_LEN);
            };
            // The payload runs to the end of the header bytes, so what is
            // in front of it is Ethernet and its tags.
            let link_header_length = bytes.len().saturating_sub(payload.payload.len());
            if matches!(
                payload.ether_type.0,
                ETHER_TYPE_MPLS_UNICAST | ETHER_TYPE_MPLS_MULTICAST
            ) {
                return slice_below_mpls(payload.payload, link_header_length);
            }
            match ethernet.net {
                Some(LaxNetSlice::Ipv4(_) | LaxNetSlice::Ipv6(_)) => {
                    (Some(ethernet), link_header_length)
                }
                _ => (None, link_header_length),
            }
        }
        HeaderProtocol::Ipv4 | HeaderProtocol::Ipv6 => (LaxSlicedPacket::from_ip(bytes).ok(), 0),
        HeaderProtocol::Mpls => slice_below_mpls(bytes, 0),
        _ => (None, 0),
    }
}

/// Skips an MPLS label stack (4 octets a label, down to the one with the
/// bottom-of-stack bit) and slices the IP packet under it; IPv4 or IPv6 is
/// told by its first nibble, and anything else (a pseudowire) is not IP.
fn slice_below_mpls(
    bytes: &[u8],
    link_header_length: usize,
) -> (Option<LaxSlicedPacket<'_>>, usize) {
    let mut rest = bytes;
    let mut length = link_header_length;
    while let Some((label, below)) = rest.split_first_chunk::<4>() {
        rest = below;
        length += 4;
        let bottom_of_stack = label[2] & 0x01 != 0;
        if bottom_of_stack {
            return (LaxSlicedPacket::from_ip(rest).ok(), length);
        }
    }
    (None, length)
}

/// A cursor over XDR (big-endian, 4-byte aligned) data that never reads
/// past its end.
#[derive(Debug, Clone)]
struct Xdr<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Xdr<'a> {
    fn new(bytes: &'a [u8]) -> Xdr<'a> {
        Xdr { bytes, offset: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.offset..).unwrap_or_default()
    }

    fn take(&mut self, length: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.rest();
        let taken = rest
            .get(..length)
            .ok_or(DecodeError::truncated(what, length, rest.len()))?;
        self.offset += length;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let rest = self.rest();
        let (array, _) =
            rest.split_first_chunk::<N>()
                .ok_or(DecodeError::truncated(what, N, rest.len()))?;
        self.offset += N;
        Ok(*array)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array::<4>(what).map(u32::from_be_bytes)
    }

    /// A variable-length opaque: its length, its bytes, padding to 4.
    fn opaque(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let length = self.u32(what)? as usize;
        let padded_length = length
            .checked_next_multiple_of(4)
            .ok_or(DecodeError::invalid(what, format!("length {length}")))?;
        let padded = self.take(padded_length, what)?;
        Ok(padded.get(..length).unwrap_or(padded))
    }

    /// An sFlow `address`: None for type 0 (unknown).
    fn address(&mut self) -> Result<Option<IpAddr>, DecodeError> {
        match self.u32("agent address type")? {
            0 => Ok(None),
            1 => {
                let octets = self.array::<4>("agent IPv4 address")?;
                Ok(Some(IpAddr::V4(Ipv4Addr::from(octets))))
            }
            2 => {
                let octets = self.array::<16>("agent IPv6 address")?;
                Ok(Some(IpAddr::V6(Ipv6Addr::from(octets))))
            }
            other => Err(DecodeError::invalid(
                "agent address type",
                format!("{other} (expected 0, 1 or 2)"),
            )),
        }
    }
}

/// The sFlow v5 datagram header, up to the sample count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DatagramHeader {
    agent: Option<IpAddr>,
    sub_agent_id: u32,
    sequence_number: u32,
}

impl DatagramHeader {
    fn read(reader: &mut Xdr<'_>) -> Result<DatagramHeader, DecodeError> {
        let version = reader.u32("sFlow version")?;
        if version != 5 {
            return Err(DecodeError::UnsupportedVersion {
                version,
                expected: "5",
            });
        }
        let agent = reader.address()?;
        let sub_agent_id = reader.u32("sub-agent id")?;
        let sequence_number = reader.u32("datagram sequence number")?;
        let _uptime_ms = reader.u32("uptime")?;
        Ok(DatagramHeader {
            agent,
            sub_agent_id,
            sequence_number,
        })
    }
}

/// The agent and sub-agent of a datagram whose header did not decode, as
/// far as its first bytes tell them, to count its error against.
fn partial_identity(datagram: &[u8]) -> (Option<IpAddr>, u32) {
    let mut reader = Xdr::new(datagram);
    if reader.u32("sFlow version") != Ok(5) {
        return (None, 0);
    }
    let Ok(agent) = reader.address() else {
        return (None, 0);
    };
    (agent, reader.u32("sub-agent id").unwrap_or(0))
}

/// One sample's format word and body, framed but not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawSample<'a> {
    format: u32,
    body: &'a [u8],
}

/// The samples after the header. Every sample is length-framed, so the
/// whole array is checked here: a datagram cut anywhere is an error.
fn read_samples<'a>(reader: &mut Xdr<'a>) -> Result<Vec<RawSample<'a>>, DecodeError> {
    let count = reader.u32("sample count")?;
    // Each sample takes 8 bytes at least: a count beyond that is a lie,
    // and not worth allocating for.
    let mut samples = Vec::with_capacity((count as usize).min(reader.rest().len() / 8));
    for _ in 0..count {
        let format = reader.u32("sample format")?;
        let body = reader.opaque("sample")?;
        samples.push(RawSample { format, body });
    }
    Ok(samples)
}

/// Decodes one sample with sflow-parser, or None for the formats this
/// decoder does not use.
fn parse_sample(
    scratch: &mut Vec<u8>,
    index: usize,
    sample: &RawSample<'_>,
) -> Result<Option<SampleData>, DecodeError> {
    let what = match sample.format {
        FLOW_SAMPLE | FLOW_SAMPLE_EXPANDED => "flow sample",
        COUNTERS_SAMPLE | COUNTERS_SAMPLE_EXPANDED => "counter sample",
        _ => return Ok(None),
    };
    if matches!(sample.format, FLOW_SAMPLE | FLOW_SAMPLE_EXPANDED) {
        check_flow_sample_nesting(sample)
            .map_err(|error| DecodeError::invalid(what, format!("sample {index}: {error}")))?;
    }
    // A datagram of this one sample: version 5, agent unknown, sub-agent,
    // sequence and uptime 0, one sample. The body came from a u32 length.
    scratch.clear();
    let body_length = sample.body.len() as u32;
    for word in [5, 0, 0, 0, 0, 1, sample.format, body_length] {
        scratch.extend_from_slice(&u32::to_be_bytes(word));
    }
    scratch.extend_from_slice(sample.body);
    scratch.resize(scratch.len().next_multiple_of(4), 0);
    let parsed = sflow_parser::parse_datagram(scratch).map_err(|error| {
        let detail = match error {
            ParseError::Io(io) if io.kind() == ErrorKind::UnexpectedEof => {
                "a record is shorter than its format".to_string()
            }
            other => other.to_string(),
        };
        DecodeError::invalid(what, format!("sample {index}: {detail}"))
    })?;
    Ok(parsed
        .samples
        .into_iter()
        .next()
        .map(|record| record.sample_data))
}

/// Refuses flow samples whose 802.11 aggregation records nest deeper than
/// [`MAX_AGGREGATION_DEPTH`] (see the module documentation).
fn check_flow_sample_nesting(sample: &RawSample<'_>) -> Result<(), DecodeError> {
    let mut reader = Xdr::new(sample.body);
    // sequence, source id, rate, pool, drops, input, output; the expanded
    // form has two words each for source id, input and output.
    let fixed_words = if sample.format == FLOW_SAMPLE_EXPANDED {
        10
    } else {
        7
    };
    reader.take(fixed_words * 4, "flow sample fields")?;
    check_flow_records(&mut reader, 0)
}

fn check_flow_records(reader: &mut Xdr<'_>, depth: usize) -> Result<(), DecodeError> {
    let count = reader.u32("flow record count")?;
    for _ in 0..count {
        let format = reader.u32("flow record format")?;
        let body = reader.opaque("flow record")?;
        if format == EXTENDED_80211_AGGREGATION {
            if depth >= MAX_AGGREGATION_DEPTH {
                return Err(DecodeError::invalid(
                    "802.11 aggregation record",
                    "nested in another one",
                ));
            }
            let mut pdus = Xdr::new(body);
            let pdu_count = pdus.u32("802.11 aggregation PDU count")?;
            for _ in 0..pdu_count {
                check_flow_records(&mut pdus, depth + 1)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use etherparse::{IpDscp, IpEcn, IpHeaders, Ipv4Header, Ipv6Header, PacketBuilder, VlanId};

    use super::*;
    use crate::pcap;

    const SOURCE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 50000);
    const AGENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1));
    const RECEIVED_MS: i64 = 1_700_000_000_000;
    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    /// A sample or a record: its format word and its XDR body.
    #[derive(Debug, Clone)]
    struct Element {
        format: u32,
        body: Vec<u8>,
    }

    /// Writes XDR for hand-built datagrams.
    #[derive(Debug, Default)]
    struct XdrWriter(Vec<u8>);

    impl XdrWriter {
        fn u32(mut self, value: u32) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn u64(mut self, value: u64) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }

        fn opaque(self, bytes: &[u8]) -> Self {
            let mut writer = self.u32(bytes.len() as u32).raw(bytes);
            let padded = writer.0.len().next_multiple_of(4);
            writer.0.resize(padded, 0);
            writer
        }

        fn address(self, address: Option<IpAddr>) -> Self {
            match address {
                None => self.u32(0),
                Some(IpAddr::V4(v4)) => self.u32(1).raw(&v4.octets()),
                Some(IpAddr::V6(v6)) => self.u32(2).raw(&v6.octets()),
            }
        }

        fn elements(mut self, elements: &[Element]) -> Self {
            self = self.u32(elements.len() as u32);
            for element in elements {
                self = self.u32(element.format).opaque(&element.body);
            }
            self
        }
    }

    fn datagram(
        agent: Option<IpAddr>,
        sub_agent: u32,
        sequence: u32,
        samples: &[Element],
    ) -> Vec<u8> {
        XdrWriter::default()
            .u32(5)
            .address(agent)
            .u32(sub_agent)
            .u32(sequence)
            .u32(123_456) // uptime
            .elements(samples)
            .0
    }

    fn flow_sample(sampling_rate: u32, input: u32, output: u32, records: &[Element]) -> Element {
        let body = XdrWriter::default()
            .u32(77) // sample sequence
            .u32(3) // source id: ifIndex 3
            .u32(sampling_rate)
            .u32(1_000_000) // sample pool
            .u32(0) // drops
            .u32(input)
            .u32(output)
            .elements(records)
            .0;
        Element { format: 1, body }
    }

    fn flow_sample_expanded(
        sampling_rate: u32,
        input: (u32, u32),
        output: (u32, u32),
        records: &[Element],
    ) -> Element {
        let body = XdrWriter::default()
            .u32(78)
            .u32(0)
            .u32(70_000_000)
            .u32(sampling_rate)
            .u32(1_000_000)
            .u32(0)
            .u32(input.0)
            .u32(input.1)
            .u32(output.0)
            .u32(output.1)
            .elements(records)
            .0;
        Element { format: 3, body }
    }

    fn counters_sample(records: &[Element]) -> Element {
        let body = XdrWriter::default().u32(5).u32(3).elements(records).0;
        Element { format: 2, body }
    }

    fn counters_sample_expanded(records: &[Element]) -> Element {
        let body = XdrWriter::default()
            .u32(6)
            .u32(0)
            .u32(3)
            .elements(records)
            .0;
        Element { format: 4, body }
    }

    fn sampled_header(protocol: u32, frame_length: u32, stripped: u32, header: &[u8]) -> Element {
        let body = XdrWriter::default()
            .u32(protocol)
            .u32(frame_length)
            .u32(stripped)
            .opaque(header)
            .0;
        Element { format: 1, body }
    }

    fn sampled_ethernet(length: u32) -> Element {
        let body = XdrWriter::default()
            .u32(length)
            .raw(&MAC_A)
            .raw(&MAC_B)
            .u32(0x0800)
            .0;
        Element { format: 2, body }
    }

    fn sampled_ipv4(
        length: u32,
        protocol: u32,
        src: [u8; 4],
        dst: [u8; 4],
        ports: (u32, u32),
        tos: u32,
    ) -> Element {
        let body = XdrWriter::default()
            .u32(length)
            .u32(protocol)
            .raw(&src)
            .raw(&dst)
            .u32(ports.0)
            .u32(ports.1)
            .u32(0x18) // TCP flags
            .u32(tos)
            .0;
        Element { format: 3, body }
    }

    fn sampled_ipv6(
        length: u32,
        protocol: u32,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        ports: (u32, u32),
        priority: u32,
    ) -> Element {
        let body = XdrWriter::default()
            .u32(length)
            .u32(protocol)
            .raw(&src.octets())
            .raw(&dst.octets())
            .u32(ports.0)
            .u32(ports.1)
            .u32(0)
            .u32(priority)
            .0;
        Element { format: 4, body }
    }

    fn extended_switch() -> Element {
        let body = XdrWriter::default().u32(100).u32(0).u32(200).u32(0).0;
        Element { format: 1001, body }
    }

    fn generic_interface(counters: &GenericInterfaceCounters) -> Element {
        let body = XdrWriter::default()
            .u32(counters.if_index)
            .u32(counters.if_type)
            .u64(counters.if_speed)
            .u32(counters.if_direction)
            .u32(counters.if_status)
            .u64(counters.if_in_octets)
            .u32(counters.if_in_ucast_pkts)
            .u32(counters.if_in_multicast_pkts)
            .u32(counters.if_in_broadcast_pkts)
            .u32(counters.if_in_discards)
            .u32(counters.if_in_errors)
            .u32(counters.if_in_unknown_protos)
            .u64(counters.if_out_octets)
            .u32(counters.if_out_ucast_pkts)
            .u32(counters.if_out_multicast_pkts)
            .u32(counters.if_out_broadcast_pkts)
            .u32(counters.if_out_discards)
            .u32(counters.if_out_errors)
            .u32(counters.if_promiscuous_mode)
            .0;
        Element { format: 1, body }
    }

    /// Ethernet counters (0:2): 13 u32 counters, which the decoder ignores.
    fn ethernet_counters() -> Element {
        let mut writer = XdrWriter::default();
        for value in 1..=13 {
            writer = writer.u32(value);
        }
        Element {
            format: 2,
            body: writer.0,
        }
    }

    struct Decoded {
        flows: FlowBatch,
        counters: Vec<InterfaceCounters>,
        result: Result<(), DecodeError>,
    }

    fn decode(decoder: &mut SflowDecoder, source: SocketAddr, datagram: &[u8]) -> Decoded {
        let mut flows = FlowBatch::default();
        let mut counters = Vec::new();
        let result = decoder.decode(source, RECEIVED_MS, datagram, &mut flows, &mut counters);
        Decoded {
            flows,
            counters,
            result,
        }
    }

    /// The one record a one-flow-sample datagram decodes to.
    fn single_record(sample: Element) -> FlowRecord {
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        let decoded = decode(
            &mut decoder,
            SOURCE,
            &datagram(Some(AGENT), 0, 1, &[sample]),
        );
        assert_eq!(decoded.result, Ok(()));
        assert_eq!(decoded.flows.len(), 1);
        let (key, record) = decoded.flows.record(0).expect("one record");
        assert_eq!(key.address, AGENT);
        record
    }

    fn report(decoder: &SflowDecoder, address: IpAddr, domain: u32) -> ExporterReport {
        decoder
            .reports()
            .into_iter()
            .find(|report| report.key.address == address && report.key.domain == domain)
            .unwrap_or_else(|| panic!("no report for {address}/{domain}: {:?}", decoder.reports()))
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> u128 {
        ipv4_to_u128([a, b, c, d])
    }

    /// Ethernet + VLAN 100 + IPv4 (DSCP 46, ECN 1) + TCP 40000 → 443,
    /// `payload` bytes of payload.
    fn vlan_ipv4_tcp_frame(payload: usize) -> Vec<u8> {
        let ip = Ipv4Header {
            dscp: IpDscp::try_new(46).expect("dscp"),
            ecn: IpEcn::try_new(1).expect("ecn"),
            time_to_live: 64,
            source: [10, 0, 0, 1],
            destination: [10, 0, 0, 2],
            ..Default::default()
        };
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(VlanId::try_new(100).expect("vlan"))
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .tcp(40000, 443, 1, 1000)
            .write(&mut frame, &vec![0; payload])
            .expect("build");
        frame
    }

    fn ipv6_udp_packet(payload: usize) -> Vec<u8> {
        let ip = Ipv6Header {
            traffic_class: 0x28,
            hop_limit: 64,
            source: "2001:db8::1".parse::<Ipv6Addr>().expect("literal").octets(),
            destination: "2001:db8::2".parse::<Ipv6Addr>().expect("literal").octets(),
            ..Default::default()
        };
        let mut packet = Vec::new();
        PacketBuilder::ip(IpHeaders::Ipv6(ip, Default::default()))
            .udp(5353, 53)
            .write(&mut packet, &vec![7; payload])
            .expect("build");
        packet
    }

    fn truncate(bytes: &[u8], length: usize) -> &[u8] {
        &bytes[..length.min(bytes.len())]
    }

    #[test]
    fn decodes_the_nxthdr_capture_as_tshark_does() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/flows/nxthdr-sflow.pcap");
        if !path.is_file() {
            if std::env::var("AIWAN_REQUIRE_LAB").is_ok_and(|v| v == "1") {
                panic!("AIWAN_REQUIRE_LAB=1 but {} is missing", path.display());
            }
            eprintln!(
                "SKIPPED decodes_the_nxthdr_capture_as_tshark_does: {} not found",
                path.display()
            );
            return;
        }
        let datagrams = pcap::load_udp_datagrams(&path).expect("pcap");
        assert_eq!(datagrams.len(), 1);
        let udp = &datagrams[0];
        // tshark 4.0 -V: "Src Port: 56564, Dst Port: 6343", epoch 1682123023.683320000.
        assert_eq!(udp.source, "1.1.1.1:56564".parse().expect("literal"));
        assert_eq!(udp.destination, "2.2.2.2:6343".parse().expect("literal"));
        assert_eq!(udp.timestamp_ns, 1_682_123_023_683_320_000);

        let mut decoder = SflowDecoder::new(SflowOptions {
            key_by_source_port: true,
            ..SflowOptions::default()
        });
        let received_ms = udp.timestamp_ns / 1_000_000;
        let mut flows = FlowBatch::default();
        let mut counters = Vec::new();
        decoder
            .decode(
                udp.source,
                received_ms,
                &udp.payload,
                &mut flows,
                &mut counters,
            )
            .expect("decodes");
        // tshark: "Agent address: 1.1.1.1", "Sub-agent ID: 0", one flow
        // sample "Sampling rate: 1 out of 1000 packets", "Input interface
        // (ifIndex): 0", output ifindex 0, one "IPv4 data" record: "Length
        // of IP Packet: 40", "IP Protocol: TCP (6)", 3.3.3.3 → 4.4.4.4,
        // ports 53032 → 25562. tshark shows the TCP flags and TOS bits as
        // all clear, but it reads them from the first byte of their XDR
        // words; the hex (`tshark -x`) has tcp_flags 0x00000010 (ACK) and
        // tos 0x00000070 (DSCP 28, AF32), which is what the XDR says.
        let (key, record) = flows.record(0).expect("one record");
        assert_eq!(flows.len(), 1);
        assert_eq!(
            key,
            ExporterKey {
                address: "1.1.1.1".parse().expect("literal"),
                port: 56564,
                protocol: FlowProtocol::Sflow,
                domain: 0,
            }
        );
        assert_eq!(
            record,
            FlowRecord {
                received_ms: 1_682_123_023_683,
                flow_end_ms: 0,
                src_addr: v4(3, 3, 3, 3),
                dst_addr: v4(4, 4, 4, 4),
                src_port: 53032,
                dst_port: 25562,
                protocol: 6,
                tos: 0x70,
                in_if: 0,
                out_if: 0,
                packets: 1,
                bytes: 40,
                sampling_rate: 1000,
            }
        );
        assert!(counters.is_empty());
        let reports = decoder.reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].last_error, None);
        let counters = reports[0].counters;
        assert_eq!(
            (
                counters.datagrams,
                counters.records,
                counters.packets,
                counters.bytes
            ),
            (1, 1, 1, 40)
        );
        assert_eq!(
            (counters.packets_scaled, counters.bytes_scaled),
            (1000, 40_000)
        );
    }

    #[test]
    fn generic_interface_counters_become_interface_counters() {
        let generic = GenericInterfaceCounters {
            if_index: 7,
            if_type: 6,
            if_speed: 10_000_000_000,
            if_direction: 1,
            if_status: 3,
            if_in_octets: 123_456_789_012,
            if_in_ucast_pkts: 1000,
            if_in_multicast_pkts: 20,
            if_in_broadcast_pkts: 3,
            if_in_discards: 4,
            if_in_errors: 5,
            if_in_unknown_protos: 6,
            if_out_octets: 987_654_321,
            if_out_ucast_pkts: 4_000_000_000,
            if_out_multicast_pkts: 300_000_000,
            if_out_broadcast_pkts: 1,
            if_out_discards: 8,
            if_out_errors: 9,
            if_promiscuous_mode: 2,
        };
        let expected = InterfaceCounters {
            received_ms: RECEIVED_MS,
            device: "10.1.1.1".to_string(),
            if_index: 7,
            if_name: None,
            speed_bps: 10_000_000_000,
            in_octets: 123_456_789_012,
            in_packets: 1023,
            in_errors: 5,
            in_discards: 4,
            out_octets: 987_654_321,
            // Summed in 64 bits: the u32 counters do not wrap here.
            out_packets: 4_300_000_001,
            out_errors: 9,
            out_discards: 8,
        };
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        let samples = [
            counters_sample(&[ethernet_counters(), generic_interface(&generic)]),
            counters_sample_expanded(&[generic_interface(&GenericInterfaceCounters {
                if_index: 70_000_000,
                ..generic.clone()
            })]),
        ];
        let decoded = decode(&mut decoder, SOURCE, &datagram(Some(AGENT), 0, 1, &samples));
        assert_eq!(decoded.result, Ok(()));
        assert!(decoded.flows.is_empty());
        assert!(
            decoded.flows.exporters.is_empty(),
            "no flow, no exporter in the batch"
        );
        assert_eq!(
            decoded.counters,
            vec![
                expected.clone(),
                InterfaceCounters {
                    if_index: 70_000_000,
                    ..expected
                }
            ]
        );
        let report = report(&decoder, AGENT, 0);
        assert_eq!(report.counters.counter_samples, 2);
        assert_eq!(report.counters.records, 0);
    }

    #[test]
    fn ethernet_vlan_ipv4_tcp_header_gives_the_whole_record() {
        let frame = vlan_ipv4_tcp_frame(1000);
        assert_eq!(frame.len(), 14 + 4 + 20 + 20 + 1000);
        // As agents send it: the first 128 bytes, the frame length with
        // its 4-byte FCS, which is stripped.
        let frame_length = frame.len() as u32 + 4;
        let record = single_record(flow_sample(
            512,
            3,
            7,
            &[
                sampled_header(1, frame_length, 4, &frame[..128]),
                extended_switch(),
            ],
        ));
        assert_eq!(
            record,
            FlowRecord {
                received_ms: RECEIVED_MS,
                flow_end_ms: 0,
                src_addr: v4(10, 0, 0, 1),
                dst_addr: v4(10, 0, 0, 2),
                src_port: 40000,
                dst_port: 443,
                protocol: 6,
                tos: 46 << 2 | 1,
                in_if: 3,
                out_if: 7,
                packets: 1,
                bytes: 1040,
                sampling_rate: 512,
            }
        );
        // Cut inside the IP header: the frame length minus FCS and the
        // Ethernet + VLAN header gives the same IP length.
        let record = single_record(flow_sample(
            512,
            3,
            7,
            &[sampled_header(1, frame_length, 4, &frame[..30])],
        ));
        assert_eq!(
            (record.src_addr, record.protocol, record.bytes),
            (0, 0, 1040)
        );
    }

    #[test]
    fn ipv6_udp_headers_decode_under_ethernet_and_bare() {
        let packet = ipv6_udp_packet(200);
        assert_eq!(packet.len(), 248);
        let mut frame = MAC_B.to_vec();
        frame.extend_from_slice(&MAC_A);
        frame.extend_from_slice(&0x86ddu16.to_be_bytes());
        frame.extend_from_slice(&packet);
        let expected = FlowRecord {
            received_ms: RECEIVED_MS,
            flow_end_ms: 0,
            src_addr: u128::from("2001:db8::1".parse::<Ipv6Addr>().expect("literal")),
            dst_addr: u128::from("2001:db8::2".parse::<Ipv6Addr>().expect("literal")),
            src_port: 5353,
            dst_port: 53,
            protocol: 17,
            tos: 0x28,
            in_if: 1,
            out_if: 2,
            packets: 1,
            bytes: 248,
            sampling_rate: 100,
        };
        let ethernet = sampled_header(1, frame.len() as u32 + 4, 4, &frame[..128]);
        assert_eq!(single_record(flow_sample(100, 1, 2, &[ethernet])), expected);
        // Header protocol 12: the header starts with IPv6, frame_length is
        // the IP length.
        let bare = sampled_header(12, 248, 0, &packet[..100]);
        assert_eq!(single_record(flow_sample(100, 1, 2, &[bare])), expected);
        let bare_cut = sampled_header(12, 248, 0, &packet[..20]);
        assert_eq!(
            single_record(flow_sample(100, 1, 2, &[bare_cut])).bytes,
            248
        );
    }

    #[test]
    fn mpls_labels_are_skipped() {
        let mut frame = MAC_B.to_vec();
        frame.extend_from_slice(&MAC_A);
        frame.extend_from_slice(&0x8847u16.to_be_bytes());
        frame.extend_from_slice(&[0x00, 0x01, 0x00, 0x40]); // label 16, not bottom
        frame.extend_from_slice(&[0x00, 0x02, 0x01, 0x40]); // label 32, bottom of stack
        let mut packet = Vec::new();
        PacketBuilder::ipv4([172, 16, 0, 1], [172, 16, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut packet, &[0; 500])
            .expect("build");
        frame.extend_from_slice(&packet);
        let frame_length = frame.len() as u32 + 4;
        let record = single_record(flow_sample(
            1,
            0,
            0,
            &[sampled_header(1, frame_length, 4, &frame[..128])],
        ));
        assert_eq!(
            (
                record.src_addr,
                record.dst_addr,
                record.protocol,
                record.dst_port,
                record.bytes
            ),
            (v4(172, 16, 0, 1), v4(172, 16, 0, 2), 17, 2000, 528)
        );
        // IP header cut: the labels count as layer 2.
        let record = single_record(flow_sample(
            1,
            0,
            0,
            &[sampled_header(1, frame_length, 4, &frame[..26])],
        ));
        assert_eq!((record.src_addr, record.bytes), (0, 528));
        // Header protocol 13: the header starts with the label stack.
        let record = single_record(flow_sample(
            1,
            0,
            0,
            &[sampled_header(13, 536, 0, &frame[14..128])],
        ));
        assert_eq!((record.src_addr, record.bytes), (v4(172, 16, 0, 1), 528));
    }

    #[test]
    fn an_ip_length_of_zero_falls_back_to_the_frame() {
        // TSO: a host agent samples the super-packet with total length 0.
        let mut frame = vlan_ipv4_tcp_frame(100);
        frame[18 + 2] = 0;
        frame[18 + 3] = 0;
        let record = single_record(flow_sample(1, 0, 0, &[sampled_header(1, 9000, 4, &frame)]));
        assert_eq!(record.src_addr, v4(10, 0, 0, 1));
        assert_eq!(record.bytes, 9000 - 4 - 18);
    }

    #[test]
    fn ip_length_is_normalised_in_one_place() {
        let frame = |frame_length, stripped, link_header_length| {
            Some(FrameLength {
                frame_length,
                stripped,
                link_header_length,
            })
        };
        assert_eq!(ip_length(Some(1500), frame(1522, 4, 18)), 1500);
        assert_eq!(ip_length(None, frame(1522, 4, 18)), 1500);
        // VLAN tag stripped by the hardware: counted in `stripped`, absent
        // from the header bytes.
        assert_eq!(ip_length(None, frame(1522, 8, 14)), 1500);
        assert_eq!(ip_length(None, frame(10, 4, 18)), 0);
        assert_eq!(ip_length(None, None), 0);
    }

    #[test]
    fn sampled_ip_records_are_used_without_a_header() {
        let record = single_record(flow_sample(
            10,
            1,
            2,
            &[sampled_ipv4(
                576,
                17,
                [192, 0, 2, 1],
                [192, 0, 2, 2],
                (53, 40000),
                0xb8,
            )],
        ));
        assert_eq!(
            (
                record.src_addr,
                record.dst_addr,
                record.src_port,
                record.dst_port,
                record.protocol,
                record.tos,
                record.bytes
            ),
            (v4(192, 0, 2, 1), v4(192, 0, 2, 2), 53, 40000, 17, 0xb8, 576)
        );
        let src: Ipv6Addr = "2001:db8::a".parse().expect("literal");
        let dst: Ipv6Addr = "2001:db8::b".parse().expect("literal");
        let record = single_record(flow_sample(
            10,
            1,
            2,
            &[sampled_ipv6(1280, 6, src, dst, (443, 50000), 0x20)],
        ));
        assert_eq!(
            (
                record.src_addr,
                record.dst_addr,
                record.dst_port,
                record.tos,
                record.bytes
            ),
            (u128::from(src), u128::from(dst), 50000, 0x20, 1280)
        );
    }

    #[test]
    fn samples_without_addresses_still_count() {
        let record = single_record(flow_sample(64, 1, 2, &[extended_switch()]));
        assert_eq!(
            (
                record.packets,
                record.bytes,
                record.src_addr,
                record.sampling_rate
            ),
            (1, 0, 0, 64)
        );
        let record = single_record(flow_sample(
            64,
            1,
            2,
            &[sampled_ethernet(1518), extended_switch()],
        ));
        assert_eq!(
            (record.packets, record.bytes, record.src_addr),
            (1, 1500, 0)
        );
        // An ARP frame: no IP, but its length.
        let mut arp = MAC_B.to_vec();
        arp.extend_from_slice(&MAC_A);
        arp.extend_from_slice(&0x0806u16.to_be_bytes());
        arp.extend_from_slice(&[0; 28]);
        let record = single_record(flow_sample(64, 1, 2, &[sampled_header(1, 64, 4, &arp)]));
        assert_eq!((record.bytes, record.src_addr), (64 - 4 - 14, 0));
    }

    #[test]
    fn sampling_rates_are_kept_and_scale_the_totals() {
        let header = vlan_ipv4_tcp_frame(0);
        let sample = |rate| {
            flow_sample(
                rate,
                1,
                2,
                &[sampled_header(1, header.len() as u32 + 4, 4, &header)],
            )
        };
        assert_eq!(single_record(sample(1000)).sampling_rate, 1000);
        assert_eq!(single_record(sample(0)).sampling_rate, 1);

        let mut decoder = SflowDecoder::new(SflowOptions::default());
        let decoded = decode(
            &mut decoder,
            SOURCE,
            &datagram(Some(AGENT), 0, 1, &[sample(1000), sample(0)]),
        );
        assert_eq!(decoded.result, Ok(()));
        let counters = report(&decoder, AGENT, 0).counters;
        assert_eq!(
            (counters.records, counters.packets, counters.bytes),
            (2, 2, 80)
        );
        assert_eq!(
            (counters.packets_scaled, counters.bytes_scaled),
            (1001, 40_040)
        );
    }

    #[test]
    fn interfaces_follow_the_encoding() {
        let header = vlan_ipv4_tcp_frame(0);
        let records = [sampled_header(1, 62, 4, &header)];
        let interfaces = |input, output| {
            let record = single_record(flow_sample(1, input, output, &records));
            (record.in_if, record.out_if)
        };
        assert_eq!(interfaces(5, 6), (5, 6));
        assert_eq!(interfaces(0, 0x4000_0102), (0, 0), "discarded");
        assert_eq!(
            interfaces(5, 0x8000_0003),
            (5, 0),
            "three output interfaces"
        );
        assert_eq!(interfaces(0x3fff_ffff, 9), (0, 9), "from the device itself");
        let record = single_record(flow_sample_expanded(
            1,
            (0, 70_000_000),
            (0, u32::MAX),
            &records,
        ));
        assert_eq!((record.in_if, record.out_if), (70_000_000, 0));
        let record = single_record(flow_sample_expanded(1, (2, 4), (1, 258), &records));
        assert_eq!((record.in_if, record.out_if), (0, 0));
    }

    #[test]
    fn a_new_agent_takes_the_place_of_one_idle_long_enough() {
        // MAX_AGENTS spoofed agents (sub-agent ids of one address), all at
        // once: a new agent is refused while they are fresh, and admitted
        // in place of the one idle longest once AGENT_IDLE_MS has passed.
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        let mut flows = FlowBatch::default();
        let mut counters = Vec::new();
        for sub_agent in 0..MAX_AGENTS as u32 {
            let bytes = datagram(Some(AGENT), sub_agent, 1, &[]);
            let result =
                decoder.decode(SOURCE, sub_agent as i64, &bytes, &mut flows, &mut counters);
            assert!(result.is_ok(), "{result:?}");
        }
        let newcomer = datagram(Some(AGENT), MAX_AGENTS as u32, 1, &[]);
        let refused = decoder.decode(SOURCE, 1_000, &newcomer, &mut flows, &mut counters);
        assert!(refused.is_err());
        assert_eq!(decoder.rejected_datagrams(), 1);
        assert_eq!(decoder.evicted_agents(), 0);
        let later = AGENT_IDLE_MS + 5;
        let admitted = decoder.decode(SOURCE, later, &newcomer, &mut flows, &mut counters);
        assert!(admitted.is_ok(), "{admitted:?}");
        assert_eq!(decoder.evicted_agents(), 1);
        assert_eq!(decoder.exporters.len(), MAX_AGENTS);
        // The one forgotten is the oldest: sub-agent 0.
        assert!(
            !decoder
                .exporters
                .keys()
                .any(|k| *k == decoder.exporter_key(SOURCE, Some(AGENT), 0))
        );
    }

    #[test]
    fn a_truncated_datagram_is_an_error_at_every_length() {
        let header = vlan_ipv4_tcp_frame(200);
        let generic = GenericInterfaceCounters {
            if_index: 1,
            if_type: 6,
            if_speed: 1_000_000_000,
            if_direction: 1,
            if_status: 3,
            if_in_octets: 1,
            if_in_ucast_pkts: 2,
            if_in_multicast_pkts: 3,
            if_in_broadcast_pkts: 4,
            if_in_discards: 5,
            if_in_errors: 6,
            if_in_unknown_protos: 7,
            if_out_octets: 8,
            if_out_ucast_pkts: 9,
            if_out_multicast_pkts: 10,
            if_out_broadcast_pkts: 11,
            if_out_discards: 12,
            if_out_errors: 13,
            if_promiscuous_mode: 2,
        };
        let full = datagram(
            Some("2001:db8::7".parse().expect("literal")),
            3,
            1,
            &[
                flow_sample(
                    100,
                    1,
                    2,
                    &[
                        sampled_header(1, 1000, 4, &header[..128]),
                        extended_switch(),
                    ],
                ),
                counters_sample(&[generic_interface(&generic)]),
            ],
        );
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        for length in 0..full.len() {
            let decoded = decode(&mut decoder, SOURCE, truncate(&full, length));
            assert!(decoded.result.is_err(), "length {length} decoded");
            assert!(
                decoded.flows.is_empty() && decoded.counters.is_empty(),
                "length {length}"
            );
        }
        let decoded = decode(&mut decoder, SOURCE, &full);
        assert_eq!(decoded.result, Ok(()));
        assert_eq!((decoded.flows.len(), decoded.counters.len()), (1, 1));

        let reports = decoder.reports();
        let errors: u64 = reports.iter().map(|r| r.counters.decode_errors).sum();
        let datagrams: u64 = reports.iter().map(|r| r.counters.datagrams).sum();
        assert_eq!(errors, full.len() as u64);
        assert_eq!(datagrams, full.len() as u64 + 1);
        // Cut before the sub-agent: counted against the UDP source, or the
        // agent with domain 0 once the agent address is there.
        assert!(report(&decoder, SOURCE.ip(), 0).counters.decode_errors > 0);
        assert!(
            report(&decoder, "2001:db8::7".parse().expect("literal"), 0)
                .counters
                .decode_errors
                > 0
        );
        let agent = report(&decoder, "2001:db8::7".parse().expect("literal"), 3);
        assert!(agent.last_error.is_some());
    }

    #[test]
    fn one_bad_sample_costs_only_itself() {
        let generic = GenericInterfaceCounters {
            if_index: 2,
            if_type: 6,
            if_speed: 0,
            if_direction: 0,
            if_status: 0,
            if_in_octets: 0,
            if_in_ucast_pkts: 0,
            if_in_multicast_pkts: 0,
            if_in_broadcast_pkts: 0,
            if_in_discards: 0,
            if_in_errors: 0,
            if_in_unknown_protos: 0,
            if_out_octets: 0,
            if_out_ucast_pkts: 0,
            if_out_multicast_pkts: 0,
            if_out_broadcast_pkts: 0,
            if_out_discards: 0,
            if_out_errors: 0,
            if_promiscuous_mode: 0,
        };
        // Header protocol 99 does not exist: sflow-parser refuses the sample.
        let bad = flow_sample(1, 0, 0, &[sampled_header(99, 100, 4, &[0; 64])]);
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        let decoded = decode(
            &mut decoder,
            SOURCE,
            &datagram(
                Some(AGENT),
                0,
                1,
                &[counters_sample(&[generic_interface(&generic)]), bad],
            ),
        );
        let error = decoded.result.expect_err("bad sample");
        assert!(error.to_string().contains("sample 1"), "{error}");
        assert_eq!(decoded.counters.len(), 1);
        let report = report(&decoder, AGENT, 0);
        assert_eq!(
            (
                report.counters.decode_errors,
                report.counters.counter_samples
            ),
            (1, 1)
        );
        assert!(
            report
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("header protocol")),
            "{report:?}"
        );

        // Unknown sample formats are skipped, not errors.
        let vendor = Element {
            format: 4300 << 12 | 1002,
            body: vec![1, 2, 3, 4],
        };
        let discarded = Element {
            format: 5,
            body: vec![0; 8],
        };
        let decoded = decode(
            &mut decoder,
            SOURCE,
            &datagram(Some(AGENT), 0, 2, &[vendor, discarded]),
        );
        assert_eq!(decoded.result, Ok(()));
    }

    #[test]
    fn other_versions_are_refused_against_the_udp_source() {
        let mut bytes = datagram(Some(AGENT), 0, 1, &[]);
        bytes[3] = 4;
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        let decoded = decode(&mut decoder, SOURCE, &bytes);
        assert_eq!(
            decoded.result,
            Err(DecodeError::UnsupportedVersion {
                version: 4,
                expected: "5"
            })
        );
        assert_eq!(report(&decoder, SOURCE.ip(), 0).counters.decode_errors, 1);
    }

    #[test]
    fn a_sequence_gap_is_counted_once() {
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        for sequence in [10, 11, 14, 15] {
            let decoded = decode(
                &mut decoder,
                SOURCE,
                &datagram(Some(AGENT), 0, sequence, &[]),
            );
            assert_eq!(decoded.result, Ok(()));
        }
        // Still waiting for 12 and 13 to arrive late.
        assert_eq!(report(&decoder, AGENT, 0).counters.sequence_gaps, 0);
        decoder.flush_sequences();
        decoder.flush_sequences();
        let counters = report(&decoder, AGENT, 0).counters;
        assert_eq!(
            (
                counters.sequence_gaps,
                counters.sequence_lost,
                counters.datagrams
            ),
            (1, 2, 4)
        );
    }

    #[test]
    fn sub_agents_and_ports_make_keys() {
        let header = vlan_ipv4_tcp_frame(0);
        let sample = flow_sample(1, 0, 0, &[sampled_header(1, 62, 4, &header)]);
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        let mut flows = FlowBatch::default();
        let mut counters = Vec::new();
        for (sub_agent, sequence) in [(0, 1), (1, 500), (0, 2), (1, 501)] {
            decoder
                .decode(
                    SOURCE,
                    RECEIVED_MS,
                    &datagram(
                        Some(AGENT),
                        sub_agent,
                        sequence,
                        std::slice::from_ref(&sample),
                    ),
                    &mut flows,
                    &mut counters,
                )
                .expect("decodes");
        }
        let keys: Vec<(IpAddr, u16, u32, u64)> = decoder
            .reports()
            .iter()
            .map(|r| {
                (
                    r.key.address,
                    r.key.port,
                    r.key.domain,
                    r.counters.datagrams,
                )
            })
            .collect();
        assert_eq!(keys, vec![(AGENT, 0, 0, 2), (AGENT, 0, 1, 2)]);
        assert_eq!(flows.exporters.len(), 2);
        decoder.flush_sequences();
        assert!(
            decoder
                .reports()
                .iter()
                .all(|r| r.counters.sequence_gaps == 0)
        );

        // Agent address "unknown" (or 0.0.0.0): the UDP source, here an
        // IPv4 sender seen on a dual-stack socket; with its port when asked.
        let mut decoder = SflowDecoder::new(SflowOptions {
            key_by_source_port: true,
            ..SflowOptions::default()
        });
        let mapped: SocketAddr = "[::ffff:192.0.2.99]:6000".parse().expect("literal");
        for agent in [None, Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))] {
            let decoded = decode(
                &mut decoder,
                mapped,
                &datagram(agent, 0, 1, std::slice::from_ref(&sample)),
            );
            let (key, _) = decoded.flows.record(0).expect("record");
            assert_eq!(
                (key.address, key.port),
                ("192.0.2.99".parse().expect("literal"), 6000)
            );
        }
    }

    /// A flow sample whose record is an 802.11 aggregation nested `levels`
    /// deep (16 bytes a level).
    fn nested_aggregation(levels: usize) -> Element {
        let mut record = Element {
            format: EXTENDED_80211_AGGREGATION,
            body: XdrWriter::default().u32(0).0,
        };
        for _ in 0..levels {
            let body = XdrWriter::default().u32(1).elements(&[record]).0;
            record = Element {
                format: EXTENDED_80211_AGGREGATION,
                body,
            };
        }
        flow_sample(1, 0, 0, &[record])
    }

    #[test]
    fn nested_aggregation_records_are_refused_before_they_overflow_the_stack() {
        // sflow-parser alone overflows even an 8 MiB stack on this one
        // (tried); run on a 2 MiB thread like a tokio worker.
        let worker = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let mut decoder = SflowDecoder::new(SflowOptions::default());
                let deep = datagram(Some(AGENT), 0, 1, &[nested_aggregation(4000)]);
                assert!(deep.len() < 65_507, "fits a UDP datagram");
                let decoded = decode(&mut decoder, SOURCE, &deep);
                assert!(decoded.result.is_err());
                // One level is what the spec describes, and decodes.
                let decoded = decode(
                    &mut decoder,
                    SOURCE,
                    &datagram(Some(AGENT), 0, 2, &[nested_aggregation(0)]),
                );
                assert_eq!(decoded.result, Ok(()));
                assert_eq!(decoded.flows.len(), 1);
                let decoded = decode(
                    &mut decoder,
                    SOURCE,
                    &datagram(Some(AGENT), 0, 3, &[nested_aggregation(1)]),
                );
                assert!(decoded.result.is_err());
            })
            .expect("thread");
        worker.join().expect("no panic, no overflow");
    }

    /// xorshift64: deterministic random bytes without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound.max(1) as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_datagrams_never_panic() {
        let header = vlan_ipv4_tcp_frame(300);
        let generic = GenericInterfaceCounters {
            if_index: 1,
            if_type: 6,
            if_speed: 1,
            if_direction: 1,
            if_status: 3,
            if_in_octets: 1,
            if_in_ucast_pkts: 1,
            if_in_multicast_pkts: 1,
            if_in_broadcast_pkts: 1,
            if_in_discards: 1,
            if_in_errors: 1,
            if_in_unknown_protos: 1,
            if_out_octets: 1,
            if_out_ucast_pkts: 1,
            if_out_multicast_pkts: 1,
            if_out_broadcast_pkts: 1,
            if_out_discards: 1,
            if_out_errors: 1,
            if_promiscuous_mode: 1,
        };
        let seeds = [
            datagram(
                Some(AGENT),
                0,
                1,
                &[
                    flow_sample(
                        100,
                        1,
                        2,
                        &[sampled_header(1, 400, 4, &header[..128]), extended_switch()],
                    ),
                    counters_sample(&[generic_interface(&generic), ethernet_counters()]),
                ],
            ),
            datagram(
                Some("2001:db8::1".parse().expect("literal")),
                1,
                2,
                &[
                    flow_sample_expanded(
                        10,
                        (0, 1),
                        (0, 2),
                        &[sampled_header(12, 248, 0, &ipv6_udp_packet(100)[..100])],
                    ),
                    flow_sample(
                        1,
                        0,
                        0,
                        &[
                            sampled_ipv4(40, 6, [1, 1, 1, 1], [2, 2, 2, 2], (1, 2), 0),
                            sampled_ethernet(64),
                        ],
                    ),
                    counters_sample_expanded(&[generic_interface(&generic)]),
                ],
            ),
            datagram(None, 0, 3, &[nested_aggregation(2)]),
        ];
        let mut random = XorShift(0x2545_f491_4f6c_dd1d);
        let mut decoder = SflowDecoder::new(SflowOptions::default());
        let mut flows = FlowBatch::default();
        let mut counters = Vec::new();
        let mut failures = 0u64;
        let rounds = 4000;
        for round in 0..rounds {
            let bytes: Vec<u8> = if round % 4 == 0 {
                // Random bytes behind a plausible start.
                let length = random.below(400);
                let mut bytes: Vec<u8> = (0..length).map(|_| random.next() as u8).collect();
                if let Some(version) = bytes.get_mut(..8) {
                    version.copy_from_slice(&[0, 0, 0, 5, 0, 0, 0, 1]);
                }
                bytes
            } else {
                // A valid datagram with a few bytes changed, words set to
                // extremes, or its end cut.
                let mut bytes = seeds[random.below(seeds.len())].clone();
                for _ in 0..1 + random.below(4) {
                    let position = random.below(bytes.len());
                    match random.below(3) {
                        0 => bytes[position] = random.next() as u8,
                        1 => {
                            let word = [0xff, 0xff, 0xff, 0xff];
                            let start = position & !3;
                            let end = (start + 4).min(bytes.len());
                            bytes[start..end].copy_from_slice(&word[..end - start]);
                        }
                        _ => bytes.truncate(position),
                    }
                    if bytes.is_empty() {
                        break;
                    }
                }
                bytes
            };
            flows.clear();
            counters.clear();
            if decoder
                .decode(SOURCE, RECEIVED_MS, &bytes, &mut flows, &mut counters)
                .is_err()
            {
                failures += 1;
            }
        }
        let errors: u64 = decoder
            .reports()
            .iter()
            .map(|r| r.counters.decode_errors)
            .sum();
        assert!(
            failures > rounds / 4,
            "the mutations should break most datagrams: {failures}"
        );
        assert!(errors >= failures);
    }
}
