//! Templates of NetFlow v9 and IPFIX, compiled once into the list of
//! fields the collector reads and where they are, so that decoding a data
//! record is a handful of slice reads rather than a walk over every field.

use serde::{Deserialize, Serialize};

use super::wire;
use crate::record::{FlowRecord, ipv4_to_u128};

/// The length that marks an IPFIX variable-length field.
pub const VARIABLE_LENGTH: u16 = 65535;

/// Most fields a template may have; real templates have a few dozen.
pub const MAX_TEMPLATE_FIELDS: usize = 512;

/// IANA IPFIX information element numbers the collector reads (NetFlow v9
/// uses the same numbers for these).
pub mod ie {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const IP_CLASS_OF_SERVICE: u16 = 5;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const INGRESS_INTERFACE: u16 = 10;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const EGRESS_INTERFACE: u16 = 14;
    pub const FLOW_END_SYS_UP_TIME: u16 = 21;
    pub const POST_OCTET_DELTA_COUNT: u16 = 23;
    pub const POST_PACKET_DELTA_COUNT: u16 = 24;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const SAMPLING_INTERVAL: u16 = 34;
    pub const SAMPLER_ID: u16 = 48;
    pub const SAMPLER_RANDOM_INTERVAL: u16 = 50;
    pub const OCTET_TOTAL_COUNT: u16 = 85;
    pub const PACKET_TOTAL_COUNT: u16 = 86;
    pub const FLOW_END_SECONDS: u16 = 151;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const FLOW_END_MICROSECONDS: u16 = 155;
    pub const FLOW_END_NANOSECONDS: u16 = 157;
    pub const SYSTEM_INIT_TIME_MILLISECONDS: u16 = 160;
    pub const IP_DIFF_SERV_CODE_POINT: u16 = 195;
    pub const SELECTOR_ID: u16 = 302;
    pub const SAMPLING_PACKET_INTERVAL: u16 = 305;
    pub const SAMPLING_PACKET_SPACE: u16 = 306;
    pub const SAMPLING_SIZE: u16 = 309;
    pub const SAMPLING_POPULATION: u16 = 310;
}

/// One field of a template as it came on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateField {
    pub id: u16,
    /// IPFIX private enterprise number; 0 for IANA elements and for v9.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub enterprise: u32,
    /// Bytes, or [`VARIABLE_LENGTH`].
    pub length: u16,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// A template as received: what is persisted and what a template
/// redefinition is compared against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDefinition {
    pub id: u16,
    /// The first `scope_fields` fields are the scope of an options
    /// template; 0 for a data template.
    #[serde(default)]
    pub scope_fields: u16,
    /// True for templates from an options template set, even when the
    /// exporter gave them no scope.
    #[serde(default)]
    pub options: bool,
    /// Whether scope fields are NetFlow v9 scope types (system, interface,
    /// ...) rather than information elements.
    #[serde(default)]
    pub v9_scope: bool,
    pub fields: Vec<TemplateField>,
}

/// What a field is to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Bytes,
    Packets,
    PostBytes,
    PostPackets,
    TotalBytes,
    TotalPackets,
    Protocol,
    Tos,
    Dscp,
    SrcPort,
    DstPort,
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    InIf,
    OutIf,
    EndSysUptime,
    EndSeconds,
    EndMilliseconds,
    EndNtp,
    SystemInitMilliseconds,
    SamplerId,
    SamplingInterval,
    PacketInterval,
    PacketSpace,
    SamplingSize,
    SamplingPopulation,
}

impl Target {
    /// The target of an IANA element of this length, if the collector
    /// reads it. A length the element cannot have (a 3-byte IPv4 address)
    /// leaves the field unread rather than read wrong.
    fn of(id: u16, length: u16) -> Option<Target> {
        let counter = (1..=8).contains(&length);
        let target = match id {
            ie::OCTET_DELTA_COUNT if counter => Target::Bytes,
            ie::PACKET_DELTA_COUNT if counter => Target::Packets,
            ie::POST_OCTET_DELTA_COUNT if counter => Target::PostBytes,
            ie::POST_PACKET_DELTA_COUNT if counter => Target::PostPackets,
            ie::OCTET_TOTAL_COUNT if counter => Target::TotalBytes,
            ie::PACKET_TOTAL_COUNT if counter => Target::TotalPackets,
            ie::PROTOCOL_IDENTIFIER if length == 1 => Target::Protocol,
            ie::IP_CLASS_OF_SERVICE if length == 1 => Target::Tos,
            ie::IP_DIFF_SERV_CODE_POINT if length == 1 => Target::Dscp,
            ie::SOURCE_TRANSPORT_PORT if length == 2 => Target::SrcPort,
            ie::DESTINATION_TRANSPORT_PORT if length == 2 => Target::DstPort,
            ie::SOURCE_IPV4_ADDRESS if length == 4 => Target::SrcV4,
            ie::DESTINATION_IPV4_ADDRESS if length == 4 => Target::DstV4,
            ie::SOURCE_IPV6_ADDRESS if length == 16 => Target::SrcV6,
            ie::DESTINATION_IPV6_ADDRESS if length == 16 => Target::DstV6,
            ie::INGRESS_INTERFACE if (1..=4).contains(&length) => Target::InIf,
            ie::EGRESS_INTERFACE if (1..=4).contains(&length) => Target::OutIf,
            ie::FLOW_END_SYS_UP_TIME if length == 4 => Target::EndSysUptime,
            ie::FLOW_END_SECONDS if length == 4 => Target::EndSeconds,
            ie::FLOW_END_MILLISECONDS if length == 8 => Target::EndMilliseconds,
            ie::FLOW_END_MICROSECONDS | ie::FLOW_END_NANOSECONDS if length == 8 => Target::EndNtp,
            ie::SYSTEM_INIT_TIME_MILLISECONDS if length == 8 => Target::SystemInitMilliseconds,
            ie::SAMPLER_ID | ie::SELECTOR_ID if counter => Target::SamplerId,
            ie::SAMPLING_INTERVAL | ie::SAMPLER_RANDOM_INTERVAL if counter => {
                Target::SamplingInterval
            }
            ie::SAMPLING_PACKET_INTERVAL if counter => Target::PacketInterval,
            ie::SAMPLING_PACKET_SPACE if counter => Target::PacketSpace,
            ie::SAMPLING_SIZE if counter => Target::SamplingSize,
            ie::SAMPLING_POPULATION if counter => Target::SamplingPopulation,
            _ => return None,
        };
        Some(target)
    }

    fn is_sampling(self) -> bool {
        matches!(
            self,
            Target::SamplerId
                | Target::SamplingInterval
                | Target::PacketInterval
                | Target::PacketSpace
                | Target::SamplingSize
                | Target::SamplingPopulation
        )
    }
}

/// A field the collector reads, at a fixed offset in every record.
#[derive(Debug, Clone, Copy)]
struct Extract {
    offset: usize,
    length: usize,
    target: Target,
}

/// A template ready for decoding.
#[derive(Debug, Clone)]
pub struct CompiledTemplate {
    pub definition: TemplateDefinition,
    /// Record length when every field has a fixed length.
    fixed_length: Option<usize>,
    /// The fields read, by offset (only when `fixed_length` is set).
    extracts: Vec<Extract>,
    /// Every field's length and target, for records with variable-length
    /// fields, which must be walked.
    walk: Vec<(u16, Option<Target>)>,
    /// The shortest a record can be (a variable field takes at least its
    /// one length byte).
    min_length: usize,
    /// Whether records carry their own sampling fields.
    has_sampling: bool,
    /// The same fields as direct reads, for the common fixed-layout data
    /// template (see [`FixedReader`]); `None` decodes through `extracts`.
    reader: Option<FixedReader>,
}

/// A field of a fixed-layout record: where it is and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    offset: usize,
    length: usize,
}

/// How a record states its end in Unix time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndUnit {
    Seconds,
    Milliseconds,
    Ntp,
}

/// A fixed-layout data template compiled to one read per field the
/// collector keeps, straight into a record's [`Values`]: no per-field
/// dispatch and no clearing of fields the template does not have. It is
/// built only where the result cannot differ from the generic walk over
/// `extracts`: fixed length, no options, no sampling fields, and no field
/// that a later one would overwrite (each target once; one source and one
/// destination address; one absolute end time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FixedReader {
    record_length: usize,
    bytes: Option<Slot>,
    packets: Option<Slot>,
    post_bytes: Option<Slot>,
    post_packets: Option<Slot>,
    total_bytes: Option<Slot>,
    total_packets: Option<Slot>,
    protocol: Option<Slot>,
    tos: Option<Slot>,
    dscp: Option<Slot>,
    src_port: Option<Slot>,
    dst_port: Option<Slot>,
    /// The address and whether it is IPv6.
    src: Option<(Slot, bool)>,
    dst: Option<(Slot, bool)>,
    in_if: Option<Slot>,
    out_if: Option<Slot>,
    end_uptime: Option<Slot>,
    end_unix: Option<(Slot, EndUnit)>,
}

impl FixedReader {
    fn new(record_length: usize, extracts: &[Extract]) -> Option<FixedReader> {
        let mut reader = FixedReader {
            record_length,
            ..FixedReader::default()
        };
        for extract in extracts {
            let slot = Slot {
                offset: extract.offset,
                length: extract.length,
            };
            let place = match extract.target {
                Target::Bytes => &mut reader.bytes,
                Target::Packets => &mut reader.packets,
                Target::PostBytes => &mut reader.post_bytes,
                Target::PostPackets => &mut reader.post_packets,
                Target::TotalBytes => &mut reader.total_bytes,
                Target::TotalPackets => &mut reader.total_packets,
                Target::Protocol => &mut reader.protocol,
                Target::Tos => &mut reader.tos,
                Target::Dscp => &mut reader.dscp,
                Target::SrcPort => &mut reader.src_port,
                Target::DstPort => &mut reader.dst_port,
                Target::InIf => &mut reader.in_if,
                Target::OutIf => &mut reader.out_if,
                Target::EndSysUptime => &mut reader.end_uptime,
                Target::SrcV4 | Target::SrcV6 => {
                    let v6 = extract.target == Target::SrcV6;
                    if reader.src.replace((slot, v6)).is_some() {
                        return None;
                    }
                    continue;
                }
                Target::DstV4 | Target::DstV6 => {
                    let v6 = extract.target == Target::DstV6;
                    if reader.dst.replace((slot, v6)).is_some() {
                        return None;
                    }
                    continue;
                }
                Target::EndSeconds | Target::EndMilliseconds | Target::EndNtp => {
                    let unit = match extract.target {
                        Target::EndSeconds => EndUnit::Seconds,
                        Target::EndMilliseconds => EndUnit::Milliseconds,
                        _ => EndUnit::Ntp,
                    };
                    if reader.end_unix.replace((slot, unit)).is_some() {
                        return None;
                    }
                    continue;
                }
                // Options and sampling fields: the generic walk.
                Target::SystemInitMilliseconds
                | Target::SamplerId
                | Target::SamplingInterval
                | Target::PacketInterval
                | Target::PacketSpace
                | Target::SamplingSize
                | Target::SamplingPopulation => return None,
            };
            if place.replace(slot).is_some() {
                return None;
            }
        }
        Some(reader)
    }

    /// The fields of one record of exactly `record_length` bytes, as the
    /// generic walk would set them.
    #[inline]
    fn read(&self, record: &[u8]) -> Values {
        // Every slot lies within the record length by construction; a
        // slice that did not would read as absent, never panic.
        let field = |slot: Slot| record.get(slot.offset..slot.offset + slot.length);
        let number = |slot: Option<Slot>| slot.and_then(field).map(wire::uint);
        let bytes = number(self.bytes);
        let packets = number(self.packets);
        let address = |place: Option<(Slot, bool)>| {
            place.and_then(|(slot, v6)| field(slot).map(|b| if v6 { v6_of(b) } else { v4(b) }))
        };
        let end_unix_ms = self.end_unix.and_then(|(slot, unit)| {
            let raw = field(slot).map(wire::uint)?;
            Some(match unit {
                EndUnit::Seconds => raw as i64 * 1000,
                EndUnit::Milliseconds => raw as i64,
                EndUnit::Ntp => ntp_to_unix_ms(raw),
            })
        });
        Values {
            record: FlowRecord {
                src_addr: address(self.src).unwrap_or(0),
                dst_addr: address(self.dst).unwrap_or(0),
                src_port: number(self.src_port).unwrap_or(0) as u16,
                dst_port: number(self.dst_port).unwrap_or(0) as u16,
                protocol: number(self.protocol).unwrap_or(0) as u8,
                tos: number(self.tos).unwrap_or(0) as u8,
                in_if: number(self.in_if).unwrap_or(0) as u32,
                out_if: number(self.out_if).unwrap_or(0) as u32,
                packets: packets.unwrap_or(0),
                bytes: bytes.unwrap_or(0),
                ..FlowRecord::default()
            },
            has_bytes: bytes.is_some(),
            has_packets: packets.is_some(),
            post_bytes: number(self.post_bytes),
            post_packets: number(self.post_packets),
            total_bytes: number(self.total_bytes),
            total_packets: number(self.total_packets),
            dscp: number(self.dscp).map(|v| v as u8),
            end_sys_uptime_ms: number(self.end_uptime).map(|v| v as u32),
            end_unix_ms,
            ..Values::default()
        }
    }
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateProblem {
    TooManyFields(usize),
    EmptyRecord,
    ScopeLongerThanFields,
}

impl std::fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateProblem::TooManyFields(n) => {
                write!(f, "{n} fields (at most {MAX_TEMPLATE_FIELDS})")
            }
            TemplateProblem::EmptyRecord => f.write_str("its records would be 0 bytes long"),
            TemplateProblem::ScopeLongerThanFields => f.write_str("more scope fields than fields"),
        }
    }
}

impl CompiledTemplate {
    pub fn compile(definition: TemplateDefinition) -> Result<CompiledTemplate, TemplateProblem> {
        let fields = &definition.fields;
        if fields.len() > MAX_TEMPLATE_FIELDS {
            return Err(TemplateProblem::TooManyFields(fields.len()));
        }
        if usize::from(definition.scope_fields) > fields.len() {
            return Err(TemplateProblem::ScopeLongerThanFields);
        }
        let mut walk = Vec::with_capacity(fields.len());
        let mut extracts = Vec::new();
        let mut offset = 0usize;
        let mut fixed = true;
        let mut min_length = 0usize;
        for (index, field) in fields.iter().enumerate() {
            let v9_scope = definition.v9_scope && index < usize::from(definition.scope_fields);
            let target = if field.enterprise != 0 || v9_scope {
                None
            } else {
                Target::of(field.id, field.length)
            };
            walk.push((field.length, target));
            if field.length == VARIABLE_LENGTH {
                fixed = false;
                min_length += 1;
                continue;
            }
            let length = usize::from(field.length);
            if let Some(target) = target {
                extracts.push(Extract {
                    offset,
                    length,
                    target,
                });
            }
            offset += length;
            min_length += length;
        }
        if min_length == 0 {
            return Err(TemplateProblem::EmptyRecord);
        }
        let has_sampling = walk
            .iter()
            .any(|(_, target)| target.is_some_and(Target::is_sampling));
        let options = definition.options || definition.scope_fields > 0;
        let reader = if fixed && !options && !has_sampling {
            FixedReader::new(offset, &extracts)
        } else {
            None
        };
        Ok(CompiledTemplate {
            definition,
            fixed_length: fixed.then_some(offset),
            extracts,
            walk,
            min_length,
            has_sampling,
            reader,
        })
    }

    /// The same template decoding every record through the generic walk
    /// (`NetflowOptions::generic_records_only`): the reference the
    /// compiled reader is tested against.
    pub fn generic(mut self) -> CompiledTemplate {
        self.reader = None;
        self
    }

    /// Whether records decode through a compiled [`FixedReader`].
    pub fn has_compiled_reader(&self) -> bool {
        self.reader.is_some()
    }

    pub fn is_options(&self) -> bool {
        self.definition.options || self.definition.scope_fields > 0
    }

    pub fn has_sampling(&self) -> bool {
        self.has_sampling
    }

    /// Records in a set body of `length` bytes when the record length is
    /// fixed (what IPFIX sequence numbers count); `None` otherwise.
    pub fn fixed_record_count(&self, length: usize) -> Option<usize> {
        self.fixed_length.map(|record| length / record)
    }

    /// Decodes every record of a data set body into `each`, stopping at
    /// padding (fewer bytes than a record can take). Returns the number of
    /// records, or the offset at which a variable-length record ran past
    /// the end of the set.
    pub fn for_each_record(
        &self,
        body: &[u8],
        mut each: impl FnMut(&Values),
    ) -> Result<usize, usize> {
        if let Some(reader) = &self.reader {
            let mut count = 0;
            for record in body.chunks_exact(reader.record_length) {
                each(&reader.read(record));
                count += 1;
            }
            return Ok(count);
        }
        let mut values = Values::default();
        let mut count = 0;
        if let Some(record_length) = self.fixed_length {
            for record in body.chunks_exact(record_length) {
                values.clear();
                for extract in &self.extracts {
                    if let Some(bytes) = record.get(extract.offset..extract.offset + extract.length)
                    {
                        values.set(extract.target, bytes);
                    }
                }
                each(&values);
                count += 1;
            }
            return Ok(count);
        }
        let mut at = 0usize;
        while body.len() - at >= self.min_length {
            values.clear();
            let start = at;
            for &(length, target) in &self.walk {
                let length = if length == VARIABLE_LENGTH {
                    // RFC 7011 7: one length byte, or 255 then two.
                    match wire::u8_at(body, at) {
                        Some(255) => {
                            let Some(long) = wire::u16_at(body, at + 1) else {
                                return Err(start);
                            };
                            at += 3;
                            usize::from(long)
                        }
                        Some(short) => {
                            at += 1;
                            usize::from(short)
                        }
                        None => return Err(start),
                    }
                } else {
                    usize::from(length)
                };
                let Some(bytes) = body.get(at..at + length) else {
                    return Err(start);
                };
                if let Some(target) = target {
                    values.set(target, bytes);
                }
                at += length;
            }
            each(&values);
            count += 1;
        }
        Ok(count)
    }
}

/// The fields of one record, as read. Reused across records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Values {
    pub record: FlowRecord,
    pub has_bytes: bool,
    pub has_packets: bool,
    post_bytes: Option<u64>,
    post_packets: Option<u64>,
    total_bytes: Option<u64>,
    total_packets: Option<u64>,
    dscp: Option<u8>,
    pub end_sys_uptime_ms: Option<u32>,
    pub end_unix_ms: Option<i64>,
    pub system_init_ms: Option<i64>,
    pub sampler_id: Option<u64>,
    sampling_interval: Option<u64>,
    packet_interval: Option<u64>,
    packet_space: Option<u64>,
    sampling_size: Option<u64>,
    sampling_population: Option<u64>,
}

/// Seconds between the NTP epoch (1900) and the Unix epoch.
const NTP_UNIX_OFFSET_SECONDS: i64 = 2_208_988_800;

impl Values {
    fn clear(&mut self) {
        *self = Values::default();
    }

    fn set(&mut self, target: Target, bytes: &[u8]) {
        match target {
            Target::Bytes => {
                self.record.bytes = wire::uint(bytes);
                self.has_bytes = true;
            }
            Target::Packets => {
                self.record.packets = wire::uint(bytes);
                self.has_packets = true;
            }
            Target::PostBytes => self.post_bytes = Some(wire::uint(bytes)),
            Target::PostPackets => self.post_packets = Some(wire::uint(bytes)),
            Target::TotalBytes => self.total_bytes = Some(wire::uint(bytes)),
            Target::TotalPackets => self.total_packets = Some(wire::uint(bytes)),
            Target::Protocol => self.record.protocol = wire::uint(bytes) as u8,
            Target::Tos => self.record.tos = wire::uint(bytes) as u8,
            Target::Dscp => self.dscp = Some(wire::uint(bytes) as u8),
            Target::SrcPort => self.record.src_port = wire::uint(bytes) as u16,
            Target::DstPort => self.record.dst_port = wire::uint(bytes) as u16,
            Target::SrcV4 => self.record.src_addr = v4(bytes),
            Target::DstV4 => self.record.dst_addr = v4(bytes),
            Target::SrcV6 => self.record.src_addr = v6_of(bytes),
            Target::DstV6 => self.record.dst_addr = v6_of(bytes),
            Target::InIf => self.record.in_if = wire::uint(bytes) as u32,
            Target::OutIf => self.record.out_if = wire::uint(bytes) as u32,
            Target::EndSysUptime => self.end_sys_uptime_ms = Some(wire::uint(bytes) as u32),
            Target::EndSeconds => self.end_unix_ms = Some(wire::uint(bytes) as i64 * 1000),
            Target::EndMilliseconds => self.end_unix_ms = Some(wire::uint(bytes) as i64),
            Target::EndNtp => self.end_unix_ms = Some(ntp_to_unix_ms(wire::uint(bytes))),
            Target::SystemInitMilliseconds => self.system_init_ms = Some(wire::uint(bytes) as i64),
            Target::SamplerId => self.sampler_id = Some(wire::uint(bytes)),
            Target::SamplingInterval => self.sampling_interval = Some(wire::uint(bytes)),
            Target::PacketInterval => self.packet_interval = Some(wire::uint(bytes)),
            Target::PacketSpace => self.packet_space = Some(wire::uint(bytes)),
            Target::SamplingSize => self.sampling_size = Some(wire::uint(bytes)),
            Target::SamplingPopulation => self.sampling_population = Some(wire::uint(bytes)),
        }
    }

    /// Packets and bytes with the fallbacks exporters need: egress counts
    /// (`post*`) for egress-only exporters, then total counts.
    pub fn counts(&self) -> (u64, u64) {
        let packets = if self.has_packets {
            self.record.packets
        } else {
            self.post_packets.or(self.total_packets).unwrap_or(0)
        };
        let bytes = if self.has_bytes {
            self.record.bytes
        } else {
            self.post_bytes.or(self.total_bytes).unwrap_or(0)
        };
        (packets, bytes)
    }

    /// The TOS byte: `ipClassOfService` as sent, or the DSCP shifted into
    /// place when only `ipDiffServCodePoint` is.
    pub fn tos(&self) -> u8 {
        match self.dscp {
            Some(dscp) if self.record.tos == 0 => dscp << 2,
            _ => self.record.tos,
        }
    }

    /// The sampling rate this record states itself: `samplingInterval` /
    /// `samplerRandomInterval` as "1 in N", `samplingPacketInterval` and
    /// `samplingPacketSpace` as N taken then M skipped (RFC 5476), or
    /// `samplingSize` out of `samplingPopulation`.
    pub fn sampling_rate(&self) -> Option<u32> {
        let rate = if let Some(interval) = self.sampling_interval {
            interval
        } else if let Some(taken) = self.packet_interval {
            if taken == 0 {
                return None;
            }
            // Saturating: both are exporter-supplied 8-byte values.
            taken.saturating_add(self.packet_space.unwrap_or(0)) / taken
        } else if let (Some(size), Some(population)) =
            (self.sampling_size, self.sampling_population)
        {
            if size == 0 {
                return None;
            }
            population / size
        } else {
            return None;
        };
        (rate >= 1).then(|| rate.min(u64::from(u32::MAX)) as u32)
    }
}

fn v4(bytes: &[u8]) -> u128 {
    let octets: [u8; 4] = bytes.try_into().unwrap_or_default();
    ipv4_to_u128(octets)
}

/// An NTP timestamp (seconds since 1900 and a 32-bit fraction) in Unix
/// milliseconds.
fn ntp_to_unix_ms(raw: u64) -> i64 {
    let seconds = (raw >> 32) as i64 - NTP_UNIX_OFFSET_SECONDS;
    let millis = ((raw & 0xffff_ffff) * 1000) >> 32;
    seconds * 1000 + millis as i64
}

fn v6_of(bytes: &[u8]) -> u128 {
    let octets: [u8; 16] = bytes.try_into().unwrap_or_default();
    u128::from_be_bytes(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(id: u16, length: u16) -> TemplateField {
        TemplateField {
            id,
            enterprise: 0,
            length,
        }
    }

    fn data_template(fields: Vec<TemplateField>) -> CompiledTemplate {
        CompiledTemplate::compile(TemplateDefinition {
            id: 256,
            scope_fields: 0,
            options: false,
            v9_scope: false,
            fields,
        })
        .expect("valid template")
    }

    fn records(template: &CompiledTemplate, body: &[u8]) -> Result<Vec<Values>, usize> {
        let mut out = Vec::new();
        template.for_each_record(body, |values| out.push(*values))?;
        Ok(out)
    }

    /// The compiled reader of a fixed-layout template gives every record
    /// exactly the fields the generic walk gives, over random templates
    /// (fields the collector reads, at every length they may have, in any
    /// order, beside fields it skips) and random record bytes.
    #[test]
    fn compiled_readers_read_what_the_generic_walk_reads() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let counters = [1, 2, 4, 8];
        let pool: Vec<(u16, Vec<u16>)> = vec![
            (ie::OCTET_DELTA_COUNT, vec![1, 2, 3, 4, 5, 8]),
            (ie::PACKET_DELTA_COUNT, counters.to_vec()),
            (ie::POST_OCTET_DELTA_COUNT, counters.to_vec()),
            (ie::POST_PACKET_DELTA_COUNT, counters.to_vec()),
            (ie::OCTET_TOTAL_COUNT, counters.to_vec()),
            (ie::PACKET_TOTAL_COUNT, counters.to_vec()),
            (ie::PROTOCOL_IDENTIFIER, vec![1, 2]),
            (ie::IP_CLASS_OF_SERVICE, vec![1]),
            (ie::IP_DIFF_SERV_CODE_POINT, vec![1]),
            (ie::SOURCE_TRANSPORT_PORT, vec![2]),
            (ie::DESTINATION_TRANSPORT_PORT, vec![2]),
            (ie::SOURCE_IPV4_ADDRESS, vec![4]),
            (ie::DESTINATION_IPV4_ADDRESS, vec![4, 3]),
            (ie::SOURCE_IPV6_ADDRESS, vec![16]),
            (ie::DESTINATION_IPV6_ADDRESS, vec![16]),
            (ie::INGRESS_INTERFACE, vec![1, 2, 4]),
            (ie::EGRESS_INTERFACE, vec![2, 4, 6]),
            (ie::FLOW_END_SYS_UP_TIME, vec![4]),
            (ie::FLOW_END_SECONDS, vec![4]),
            (ie::FLOW_END_MILLISECONDS, vec![8]),
            (ie::FLOW_END_NANOSECONDS, vec![8]),
            (999, vec![3, 7]),
        ];
        let mut compiled = 0;
        for case in 0..2000 {
            let mut fields = Vec::new();
            for _ in 0..1 + next() % 12 {
                let (id, lengths) = &pool[(next() % pool.len() as u64) as usize];
                let length = lengths[(next() % lengths.len() as u64) as usize];
                let mut field = field(*id, length);
                if next() % 16 == 0 {
                    field.enterprise = 9;
                }
                fields.push(field);
            }
            let template = data_template(fields.clone());
            compiled += usize::from(template.has_compiled_reader());
            let record_length = template.fixed_length.expect("fixed");
            let count = 1 + next() % 4;
            let padding = next() as usize % record_length;
            let body: Vec<u8> = (0..record_length * count as usize + padding)
                .map(|_| next() as u8)
                .collect();
            let generic = template.clone().generic();
            assert_eq!(
                records(&template, &body),
                records(&generic, &body),
                "case {case}: {fields:?}"
            );
        }
        // Most random templates name a field twice; enough do not that
        // the compiled readers are what was compared.
        assert!(compiled > 400, "{compiled} of 2000 compiled");
    }

    #[test]
    fn the_exporters_templates_compile_to_readers() {
        use crate::netflow::encode::{ipv4_flow_template, ipv6_flow_template};
        for definition in [ipv4_flow_template(256), ipv6_flow_template(257)] {
            let template = CompiledTemplate::compile(definition).expect("compiles");
            assert!(template.has_compiled_reader());
            assert!(!template.generic().has_compiled_reader());
        }
    }

    #[test]
    fn fixed_records_stop_at_padding() {
        let template = data_template(vec![field(8, 4), field(1, 4), field(4, 1)]);
        let mut body = vec![10, 0, 0, 1, 0, 0, 1, 0, 6, 10, 0, 0, 2, 0, 0, 0, 7, 17];
        body.extend([0, 0, 0]); // padding shorter than a record
        let values = records(&template, &body).expect("decodes");
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].record.src_addr, ipv4_to_u128([10, 0, 0, 1]));
        assert_eq!(values[0].counts(), (0, 256));
        assert_eq!(values[1].record.protocol, 17);
    }

    #[test]
    fn variable_length_fields_are_walked() {
        // A 1-byte-length string, then the 3-byte form, then a counter.
        let template = data_template(vec![
            field(82, VARIABLE_LENGTH),
            field(83, VARIABLE_LENGTH),
            field(2, 2),
        ]);
        let mut body = vec![3, b'a', b'b', b'c', 255, 0, 2, b'x', b'y', 0, 9];
        body.extend([0, 0, 0, 1]); // second record: two empty strings
        let values = records(&template, &body).expect("decodes");
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].counts().0, 9);
        assert_eq!(values[1].counts().0, 1);
        // A length that runs past the end is an error at that record.
        assert_eq!(records(&template, &[0, 200, 1, 2]).err(), Some(0));
    }

    #[test]
    fn enterprise_and_odd_length_fields_are_skipped_not_misread() {
        let template = data_template(vec![
            TemplateField {
                id: 8,
                enterprise: 9,
                length: 4,
            },
            field(8, 3),
            field(12, 4),
        ]);
        let values = records(&template, &[1, 2, 3, 4, 5, 6, 7, 10, 0, 0, 9]).expect("decodes");
        assert_eq!(values[0].record.src_addr, 0);
        assert_eq!(values[0].record.dst_addr, ipv4_to_u128([10, 0, 0, 9]));
    }

    #[test]
    fn empty_and_oversized_templates_are_refused() {
        let empty = TemplateDefinition {
            id: 300,
            scope_fields: 0,
            options: false,
            v9_scope: false,
            fields: vec![field(1, 0)],
        };
        assert_eq!(
            CompiledTemplate::compile(empty).err(),
            Some(TemplateProblem::EmptyRecord)
        );
        let big = TemplateDefinition {
            id: 300,
            scope_fields: 0,
            options: false,
            v9_scope: false,
            fields: vec![field(1, 4); MAX_TEMPLATE_FIELDS + 1],
        };
        assert!(matches!(
            CompiledTemplate::compile(big),
            Err(TemplateProblem::TooManyFields(_))
        ));
    }

    #[test]
    fn sampling_rates_from_each_form() {
        let mut values = Values::default();
        assert_eq!(values.sampling_rate(), None);
        values.set(Target::PacketInterval, &[1]);
        values.set(Target::PacketSpace, &[0, 99]);
        assert_eq!(values.sampling_rate(), Some(100));
        values.set(Target::SamplingInterval, &[0, 0, 0x03, 0xe8]);
        assert_eq!(values.sampling_rate(), Some(1000));
        let mut values = Values::default();
        values.set(Target::SamplingSize, &[2]);
        values.set(Target::SamplingPopulation, &[0, 200]);
        assert_eq!(values.sampling_rate(), Some(100));
        values.set(Target::SamplingInterval, &[0]);
        assert_eq!(values.sampling_rate(), None);
        // Found by the fuzzer: an interval and space adding past 2^64.
        let mut values = Values::default();
        values.set(Target::PacketInterval, &[0xff; 8]);
        values.set(Target::PacketSpace, &[0xff; 8]);
        assert_eq!(values.sampling_rate(), Some(1));
    }

    #[test]
    fn ntp_end_times_convert() {
        let mut values = Values::default();
        // 2024-01-01T00:00:00.5Z in NTP format.
        let seconds = (1_704_067_200i64 + NTP_UNIX_OFFSET_SECONDS) as u64;
        let raw = (seconds << 32) | (1u64 << 31);
        values.set(Target::EndNtp, &raw.to_be_bytes());
        assert_eq!(values.end_unix_ms, Some(1_704_067_200_500));
    }
}
