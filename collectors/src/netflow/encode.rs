//! Building NetFlow v5, v9 and IPFIX datagrams: what the demo's exporter
//! sends over loopback, what `aiwan bench collector` replays, and how tests
//! make the corner cases real exporters rarely show on demand (data before
//! its template, a redefined template, options with a sampling rate).
//!
//! The datagrams are real protocol messages; nothing here is decoder
//! state, and the decoder never calls it.

use super::template::{TemplateDefinition, TemplateField, ie};
use crate::record::{FlowRecord, u128_to_addr};

/// Largest datagram the exporters build, leaving room for IP and UDP
/// headers in a 1500-byte MTU.
pub const MAX_DATAGRAM: usize = 1400;

/// The template a typical router exports for IPv4 flows: addresses, ports,
/// protocol, TOS, interfaces, 8-byte counters, start and end in Unix ms.
pub fn ipv4_flow_template(id: u16) -> TemplateDefinition {
    data_template(
        id,
        &[
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::DESTINATION_IPV4_ADDRESS, 4),
            (ie::SOURCE_TRANSPORT_PORT, 2),
            (ie::DESTINATION_TRANSPORT_PORT, 2),
            (ie::PROTOCOL_IDENTIFIER, 1),
            (ie::IP_CLASS_OF_SERVICE, 1),
            (ie::INGRESS_INTERFACE, 4),
            (ie::EGRESS_INTERFACE, 4),
            (ie::OCTET_DELTA_COUNT, 8),
            (ie::PACKET_DELTA_COUNT, 8),
            (FLOW_START_MILLISECONDS, 8),
            (ie::FLOW_END_MILLISECONDS, 8),
        ],
    )
}

/// The IPv6 counterpart of [`ipv4_flow_template`].
pub fn ipv6_flow_template(id: u16) -> TemplateDefinition {
    data_template(
        id,
        &[
            (ie::SOURCE_IPV6_ADDRESS, 16),
            (ie::DESTINATION_IPV6_ADDRESS, 16),
            (ie::SOURCE_TRANSPORT_PORT, 2),
            (ie::DESTINATION_TRANSPORT_PORT, 2),
            (ie::PROTOCOL_IDENTIFIER, 1),
            (ie::IP_CLASS_OF_SERVICE, 1),
            (ie::INGRESS_INTERFACE, 4),
            (ie::EGRESS_INTERFACE, 4),
            (ie::OCTET_DELTA_COUNT, 8),
            (ie::PACKET_DELTA_COUNT, 8),
            (FLOW_START_MILLISECONDS, 8),
            (ie::FLOW_END_MILLISECONDS, 8),
        ],
    )
}

/// flowStartMilliseconds: sent, not read by the decoder.
const FLOW_START_MILLISECONDS: u16 = 152;

/// A data template of IANA fields.
pub fn data_template(id: u16, fields: &[(u16, u16)]) -> TemplateDefinition {
    TemplateDefinition {
        id,
        scope_fields: 0,
        options: false,
        v9_scope: false,
        fields: fields
            .iter()
            .map(|&(id, length)| TemplateField {
                id,
                enterprise: 0,
                length,
            })
            .collect(),
    }
}

/// An options template: `scope` fields, then `fields`.
pub fn options_template(
    id: u16,
    scope: &[(u16, u16)],
    fields: &[(u16, u16)],
    v9_scope: bool,
) -> TemplateDefinition {
    let mut definition = data_template(id, &[scope, fields].concat());
    definition.scope_fields = scope.len() as u16;
    definition.options = true;
    definition.v9_scope = v9_scope;
    definition
}

/// Which protocol a [`MessageBuilder`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    V9 { sys_uptime_ms: u32 },
    Ipfix,
}

/// One NetFlow v9 export packet or IPFIX message, set by set.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    flavor: Flavor,
    domain: u32,
    sequence: u32,
    export_secs: u32,
    sets: Vec<u8>,
    /// Records and templates, for the v9 header's count.
    count: u16,
}

impl MessageBuilder {
    pub fn ipfix(domain: u32, sequence: u32, export_secs: u32) -> MessageBuilder {
        MessageBuilder {
            flavor: Flavor::Ipfix,
            domain,
            sequence,
            export_secs,
            sets: Vec::new(),
            count: 0,
        }
    }

    pub fn v9(source_id: u32, sequence: u32, sys_uptime_ms: u32, unix_secs: u32) -> MessageBuilder {
        MessageBuilder {
            flavor: Flavor::V9 { sys_uptime_ms },
            domain: source_id,
            sequence,
            export_secs: unix_secs,
            sets: Vec::new(),
            count: 0,
        }
    }

    /// Bytes of sets so far.
    pub fn sets_len(&self) -> usize {
        self.sets.len()
    }

    /// A template set (or options template set) with one template.
    pub fn template(&mut self, template: &TemplateDefinition) -> &mut MessageBuilder {
        let mut body = Vec::new();
        body.extend(template.id.to_be_bytes());
        match self.flavor {
            Flavor::Ipfix => {
                body.extend((template.fields.len() as u16).to_be_bytes());
                if template.options {
                    body.extend(template.scope_fields.to_be_bytes());
                }
                for field in &template.fields {
                    if field.enterprise == 0 {
                        body.extend(field.id.to_be_bytes());
                        body.extend(field.length.to_be_bytes());
                    } else {
                        body.extend((field.id | 0x8000).to_be_bytes());
                        body.extend(field.length.to_be_bytes());
                        body.extend(field.enterprise.to_be_bytes());
                    }
                }
            }
            Flavor::V9 { .. } => {
                if template.options {
                    let scope = template.scope_fields * 4;
                    let rest = (template.fields.len() as u16 - template.scope_fields) * 4;
                    body.extend(scope.to_be_bytes());
                    body.extend(rest.to_be_bytes());
                } else {
                    body.extend((template.fields.len() as u16).to_be_bytes());
                }
                for field in &template.fields {
                    body.extend(field.id.to_be_bytes());
                    body.extend(field.length.to_be_bytes());
                }
            }
        }
        let set_id = match (self.flavor, template.options) {
            (Flavor::Ipfix, false) => 2,
            (Flavor::Ipfix, true) => 3,
            (Flavor::V9 { .. }, false) => 0,
            (Flavor::V9 { .. }, true) => 1,
        };
        self.count += 1;
        self.raw_set(set_id, &body)
    }

    /// A template withdrawal (IPFIX only): `id` 2 or 3 withdraws all.
    pub fn withdraw(&mut self, id: u16, options: bool) -> &mut MessageBuilder {
        let mut body = Vec::new();
        body.extend(id.to_be_bytes());
        body.extend(0u16.to_be_bytes());
        self.raw_set(if options { 3 } else { 2 }, &body)
    }

    /// A data set of flow records encoded with `template`. Fields the
    /// builder does not know are zero.
    pub fn flows(
        &mut self,
        template: &TemplateDefinition,
        records: &[FlowRecord],
    ) -> &mut MessageBuilder {
        let mut body = Vec::with_capacity(records.len() * 64);
        for record in records {
            for field in &template.fields {
                encode_flow_field(&mut body, field, record);
            }
        }
        self.count += records.len() as u16;
        self.raw_set(template.id, &body)
    }

    /// A data set of options records: one value per field, in order.
    pub fn options_records(
        &mut self,
        template: &TemplateDefinition,
        records: &[Vec<u64>],
    ) -> &mut MessageBuilder {
        let mut body = Vec::new();
        for values in records {
            for (field, value) in template.fields.iter().zip(values) {
                encode_uint(&mut body, *value, usize::from(field.length));
            }
        }
        self.count += records.len() as u16;
        self.raw_set(template.id, &body)
    }

    /// Any set, as is (padded to 4 bytes for v9).
    pub fn raw_set(&mut self, id: u16, body: &[u8]) -> &mut MessageBuilder {
        let padding = match self.flavor {
            Flavor::V9 { .. } => (4 - body.len() % 4) % 4,
            Flavor::Ipfix => 0,
        };
        self.sets.extend(id.to_be_bytes());
        self.sets
            .extend(((4 + body.len() + padding) as u16).to_be_bytes());
        self.sets.extend_from_slice(body);
        self.sets.extend(std::iter::repeat_n(0, padding));
        self
    }

    /// The datagram.
    pub fn finish(&self) -> Vec<u8> {
        let mut datagram = Vec::with_capacity(20 + self.sets.len());
        match self.flavor {
            Flavor::Ipfix => {
                datagram.extend(10u16.to_be_bytes());
                datagram.extend(((16 + self.sets.len()) as u16).to_be_bytes());
                datagram.extend(self.export_secs.to_be_bytes());
                datagram.extend(self.sequence.to_be_bytes());
                datagram.extend(self.domain.to_be_bytes());
            }
            Flavor::V9 { sys_uptime_ms } => {
                datagram.extend(9u16.to_be_bytes());
                datagram.extend(self.count.to_be_bytes());
                datagram.extend(sys_uptime_ms.to_be_bytes());
                datagram.extend(self.export_secs.to_be_bytes());
                datagram.extend(self.sequence.to_be_bytes());
                datagram.extend(self.domain.to_be_bytes());
            }
        }
        datagram.extend_from_slice(&self.sets);
        datagram
    }
}

fn encode_uint(out: &mut Vec<u8>, value: u64, length: usize) {
    let bytes = value.to_be_bytes();
    if length >= 8 {
        out.extend(std::iter::repeat_n(0, length - 8));
        out.extend_from_slice(&bytes);
    } else {
        out.extend_from_slice(&bytes[8 - length..]);
    }
}

fn encode_flow_field(out: &mut Vec<u8>, field: &TemplateField, record: &FlowRecord) {
    let length = usize::from(field.length);
    if field.enterprise != 0 {
        out.extend(std::iter::repeat_n(0, length));
        return;
    }
    match (field.id, length) {
        (ie::SOURCE_IPV4_ADDRESS, 4) => out.extend(v4_octets(record.src_addr)),
        (ie::DESTINATION_IPV4_ADDRESS, 4) => out.extend(v4_octets(record.dst_addr)),
        (ie::SOURCE_IPV6_ADDRESS, 16) => out.extend(record.src_addr.to_be_bytes()),
        (ie::DESTINATION_IPV6_ADDRESS, 16) => out.extend(record.dst_addr.to_be_bytes()),
        (ie::SOURCE_TRANSPORT_PORT, _) => encode_uint(out, record.src_port.into(), length),
        (ie::DESTINATION_TRANSPORT_PORT, _) => encode_uint(out, record.dst_port.into(), length),
        (ie::PROTOCOL_IDENTIFIER, _) => encode_uint(out, record.protocol.into(), length),
        (ie::IP_CLASS_OF_SERVICE, _) => encode_uint(out, record.tos.into(), length),
        (ie::IP_DIFF_SERV_CODE_POINT, _) => encode_uint(out, (record.tos >> 2).into(), length),
        (ie::INGRESS_INTERFACE, _) => encode_uint(out, record.in_if.into(), length),
        (ie::EGRESS_INTERFACE, _) => encode_uint(out, record.out_if.into(), length),
        (ie::OCTET_DELTA_COUNT, _) => encode_uint(out, record.bytes, length),
        (ie::PACKET_DELTA_COUNT, _) => encode_uint(out, record.packets, length),
        (FLOW_START_MILLISECONDS | ie::FLOW_END_MILLISECONDS, _) => {
            encode_uint(out, record.flow_end_ms.max(0) as u64, length)
        }
        (ie::FLOW_END_SECONDS, _) => {
            encode_uint(out, (record.flow_end_ms.max(0) / 1000) as u64, length)
        }
        (ie::SAMPLING_INTERVAL, _) => encode_uint(out, record.sampling_rate.into(), length),
        _ => out.extend(std::iter::repeat_n(0, length)),
    }
}

fn v4_octets(address: u128) -> [u8; 4] {
    match u128_to_addr(address) {
        std::net::IpAddr::V4(v4) => v4.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    }
}

/// An IPFIX exporting process for one observation domain: sends its
/// templates in the first message and every `template_every` messages, as
/// UDP exporters must (RFC 7011 10.3.6), keeps the sequence number, and
/// splits records into datagrams of at most [`MAX_DATAGRAM`] bytes.
#[derive(Debug, Clone)]
pub struct IpfixExporter {
    domain: u32,
    sequence: u32,
    messages: u64,
    template_every: u64,
    ipv4: TemplateDefinition,
    ipv6: TemplateDefinition,
}

impl IpfixExporter {
    pub fn new(domain: u32, template_every: u64) -> IpfixExporter {
        IpfixExporter {
            domain,
            sequence: 0,
            messages: 0,
            template_every: template_every.max(1),
            ipv4: ipv4_flow_template(256),
            ipv6: ipv6_flow_template(257),
        }
    }

    /// The datagrams carrying `records`, exported at `export_secs`.
    pub fn export(&mut self, records: &[FlowRecord], export_secs: u32) -> Vec<Vec<u8>> {
        let mut datagrams = Vec::new();
        let per_v4 = record_length(&self.ipv4);
        let per_v6 = record_length(&self.ipv6);
        let mut index = 0;
        while index < records.len() || (records.is_empty() && datagrams.is_empty()) {
            let mut message = MessageBuilder::ipfix(self.domain, self.sequence, export_secs);
            if self.messages.is_multiple_of(self.template_every) {
                message.template(&self.ipv4).template(&self.ipv6);
            }
            self.messages += 1;
            // Records of one family in a run go into one set.
            let mut sent = 0u32;
            while index < records.len() {
                let is_v4 = is_ipv4(&records[index]);
                let (template, per) = if is_v4 {
                    (&self.ipv4, per_v4)
                } else {
                    (&self.ipv6, per_v6)
                };
                let room = MAX_DATAGRAM.saturating_sub(16 + message.sets_len() + 4) / per;
                if room == 0 {
                    break;
                }
                let run = records[index..]
                    .iter()
                    .take(room)
                    .take_while(|record| is_ipv4(record) == is_v4)
                    .count();
                message.flows(template, &records[index..index + run]);
                index += run;
                sent += run as u32;
            }
            self.sequence = self.sequence.wrapping_add(sent);
            datagrams.push(message.finish());
            if records.is_empty() {
                break;
            }
        }
        datagrams
    }
}

fn is_ipv4(record: &FlowRecord) -> bool {
    matches!(u128_to_addr(record.src_addr), std::net::IpAddr::V4(_))
}

fn record_length(template: &TemplateDefinition) -> usize {
    template
        .fields
        .iter()
        .map(|field| usize::from(field.length))
        .sum::<usize>()
        .max(1)
}

/// NetFlow v5 export packets for `records` (IPv4 only; at most 30 a
/// packet), starting at flow sequence `sequence`.
pub fn v5_datagrams(
    records: &[FlowRecord],
    sequence: u32,
    sys_uptime_ms: u32,
    unix_secs: u32,
    engine: u16,
    sampling_interval: u16,
) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut sequence = sequence;
    for chunk in records.chunks(30) {
        let mut datagram = Vec::with_capacity(24 + 48 * chunk.len());
        datagram.extend(5u16.to_be_bytes());
        datagram.extend((chunk.len() as u16).to_be_bytes());
        datagram.extend(sys_uptime_ms.to_be_bytes());
        datagram.extend(unix_secs.to_be_bytes());
        datagram.extend(0u32.to_be_bytes());
        datagram.extend(sequence.to_be_bytes());
        datagram.extend(engine.to_be_bytes());
        datagram.extend(sampling_interval.to_be_bytes());
        for record in chunk {
            datagram.extend(v4_octets(record.src_addr));
            datagram.extend(v4_octets(record.dst_addr));
            datagram.extend([0; 4]); // next hop
            datagram.extend((record.in_if as u16).to_be_bytes());
            datagram.extend((record.out_if as u16).to_be_bytes());
            datagram.extend((record.packets as u32).to_be_bytes());
            datagram.extend((record.bytes as u32).to_be_bytes());
            datagram.extend(sys_uptime_ms.saturating_sub(1000).to_be_bytes());
            datagram.extend(sys_uptime_ms.to_be_bytes());
            datagram.extend(record.src_port.to_be_bytes());
            datagram.extend(record.dst_port.to_be_bytes());
            datagram.extend([0, 0, record.protocol, record.tos]);
            datagram.extend([0; 8]); // AS numbers, masks, padding
        }
        sequence = sequence.wrapping_add(chunk.len() as u32);
        datagrams.push(datagram);
    }
    datagrams
}
