//! Classic pcap files (not pcapng): reading the UDP datagrams out of a
//! capture, and writing Ethernet captures for end-to-end tests that replay
//! them through softflowd or pmacctd.
//!
//! The file format is a 24-byte global header and a 16-byte header per
//! record, so it is our own code; the packets inside are sliced and built
//! by etherparse. Reading never panics, whatever the bytes: a file that
//! ends inside a header or a record is an error naming the byte offset.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};

use etherparse::{
    EtherType, IpDscp, IpEcn, IpHeaders, Ipv4Header, Ipv6FlowLabel, Ipv6Header, NetSlice,
    PacketBuilder, SlicedPacket, TcpHeader, TransportSlice,
};

/// Link types (the global header's `network` field) this module reads.
pub mod link_type {
    pub const ETHERNET: u32 = 1;
    /// Raw IP, as most tools write it.
    pub const RAW: u32 = 101;
    /// Raw IP under the DLT numbers some platforms write into files.
    pub const RAW_DLT_12: u32 = 12;
    pub const RAW_DLT_14: u32 = 14;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

/// TCP flag bits, as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;
const MAGIC_MICROSECONDS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOSECONDS: u32 = 0xa1b2_3c4d;
/// The first bytes of a pcapng file, to say so when one is given.
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;
/// Linux cooked capture headers, and where they carry the protocol (an
/// EtherType for IP).
const SLL_HEADER_LEN: usize = 16;
const SLL_PROTOCOL_OFFSET: usize = 14;
const SLL2_HEADER_LEN: usize = 20;
const SLL2_PROTOCOL_OFFSET: usize = 0;

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write pcap: {0}")]
    Write(#[from] io::Error),
    #[error(
        "not a classic pcap file: magic {magic:#010x} (pcapng is not supported; convert with `editcap -F pcap`)"
    )]
    PcapNg { magic: u32 },
    #[error("not a pcap file: magic {magic:#010x}")]
    BadMagic { magic: u32 },
    #[error(
        "truncated pcap: {what} at byte offset {offset} needs {needed} bytes, {available} left"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error(
        "unsupported pcap link type {link_type} (supported: Ethernet 1, raw IP 101/12/14/228/229, Linux SLL 113, SLL2 276)"
    )]
    UnsupportedLinkType { link_type: u32 },
    #[error("cannot write a frame stamped {timestamp_ns} ns: pcap seconds are unsigned 32-bit")]
    Timestamp { timestamp_ns: i64 },
    #[error("frame of {length} bytes is longer than the snapshot length {snaplen}")]
    FrameTooLong { length: usize, snaplen: u32 },
    #[error("cannot build frame: {0}")]
    Frame(String),
}

/// One captured frame, borrowed from the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapFrame<'a> {
    /// Unix time in nanoseconds.
    pub timestamp_ns: i64,
    /// The frame's length on the wire; `data` may be shorter (snaplen).
    pub original_length: u32,
    pub data: &'a [u8],
}

/// The frames of a pcap file and the link type they all share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapFrames<'a> {
    pub link_type: u32,
    pub frames: Vec<PcapFrame<'a>>,
}

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram {
    /// Unix time in nanoseconds.
    pub timestamp_ns: i64,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// What reading a capture for UDP found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapSummary {
    /// Frames in the file.
    pub packets: u64,
    /// Frames that held a whole, unfragmented UDP datagram.
    pub udp_datagrams: u64,
    /// The other frames: not IP, not UDP, IP fragments, or cut short by the
    /// snapshot length.
    pub skipped: u64,
}

/// The UDP datagrams of a capture and what was skipped on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpCapture {
    pub datagrams: Vec<UdpDatagram>,
    pub summary: PcapSummary,
}

/// The UDP datagrams of a classic pcap file's bytes.
pub fn read_udp_datagrams(bytes: &[u8]) -> Result<Vec<UdpDatagram>, PcapError> {
    read_udp_capture(bytes).map(|capture| capture.datagrams)
}

/// [`read_udp_datagrams`] on a file.
pub fn load_udp_datagrams(path: &Path) -> Result<Vec<UdpDatagram>, PcapError> {
    load_udp_capture(path).map(|capture| capture.datagrams)
}

/// [`read_udp_capture`] on a file.
pub fn load_udp_capture(path: &Path) -> Result<UdpCapture, PcapError> {
    let bytes = std::fs::read(path).map_err(|source| PcapError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    read_udp_capture(&bytes)
}

/// The UDP datagrams of a classic pcap file's bytes, with counts of what
/// was skipped.
pub fn read_udp_capture(bytes: &[u8]) -> Result<UdpCapture, PcapError> {
    let pcap = read_frames(bytes)?;
    let mut summary = PcapSummary::default();
    let mut datagrams = Vec::new();
    for frame in &pcap.frames {
        summary.packets += 1;
        match udp_datagram(pcap.link_type, frame) {
            Some(datagram) => {
                summary.udp_datagrams += 1;
                datagrams.push(datagram);
            }
            None => summary.skipped += 1,
        }
    }
    Ok(UdpCapture { datagrams, summary })
}

/// Every frame of a classic pcap file's bytes, in either byte order, with
/// microsecond or nanosecond timestamps. The link type is checked: only
/// the ones [`udp_datagram`] can slice are accepted.
pub fn read_frames(bytes: &[u8]) -> Result<PcapFrames<'_>, PcapError> {
    let header = take(bytes, 0, GLOBAL_HEADER_LEN, "global header")?;
    let magic_bytes = first_four(header);
    let little_endian_magic = u32::from_le_bytes(magic_bytes);
    let big_endian_magic = u32::from_be_bytes(magic_bytes);
    let (order, fraction_ns) = if little_endian_magic == MAGIC_MICROSECONDS {
        (ByteOrder::Little, 1_000)
    } else if little_endian_magic == MAGIC_NANOSECONDS {
        (ByteOrder::Little, 1)
    } else if big_endian_magic == MAGIC_MICROSECONDS {
        (ByteOrder::Big, 1_000)
    } else if big_endian_magic == MAGIC_NANOSECONDS {
        (ByteOrder::Big, 1)
    } else if big_endian_magic == PCAPNG_MAGIC {
        return Err(PcapError::PcapNg {
            magic: big_endian_magic,
        });
    } else {
        return Err(PcapError::BadMagic {
            magic: big_endian_magic,
        });
    };
    // The upper bits of `network` may carry FCS information (RFC draft
    // "pcap file format", LinkType); the link type is the low 16 bits.
    let link_type = order.u32(header, 20) & 0xffff;
    if !matches!(
        link_type,
        link_type::ETHERNET
            | link_type::RAW
            | link_type::RAW_DLT_12
            | link_type::RAW_DLT_14
            | link_type::LINUX_SLL
            | link_type::IPV4
            | link_type::IPV6
            | link_type::LINUX_SLL2
    ) {
        return Err(PcapError::UnsupportedLinkType { link_type });
    }

    let mut frames = Vec::new();
    let mut offset = GLOBAL_HEADER_LEN;
    while offset < bytes.len() {
        let record = take(bytes, offset, RECORD_HEADER_LEN, "record header")?;
        let seconds = i64::from(order.u32(record, 0));
        let fraction = i64::from(order.u32(record, 4));
        let captured_length = order.u32(record, 8) as usize;
        let original_length = order.u32(record, 12);
        let data_offset = offset + RECORD_HEADER_LEN;
        let data = take(bytes, data_offset, captured_length, "record data")?;
        frames.push(PcapFrame {
            // u32 seconds times 1e9 plus a u32 fraction times 1e3 stays
            // far below i64::MAX.
            timestamp_ns: seconds * 1_000_000_000 + fraction * fraction_ns,
            original_length,
            data,
        });
        offset = data_offset + captured_length;
    }
    Ok(PcapFrames { link_type, frames })
}

/// The UDP datagram a frame of the given link type carries, if it carries
/// one whole: IPv4 or IPv6 (under VLAN tags on Ethernet), not a fragment,
/// and not cut short by the capture's snapshot length.
pub fn udp_datagram(link_type: u32, frame: &PcapFrame<'_>) -> Option<UdpDatagram> {
    let data = frame.data;
    let packet = match link_type {
        link_type::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        link_type::RAW
        | link_type::RAW_DLT_12
        | link_type::RAW_DLT_14
        | link_type::IPV4
        | link_type::IPV6 => SlicedPacket::from_ip(data).ok()?,
        // Both cooked headers are sliced here rather than by etherparse
        // (which knows SLL but not SLL2) so the two read the same way: the
        // protocol field is an EtherType for IP.
        link_type::LINUX_SLL => {
            let ether_type = be_u16_at(data, SLL_PROTOCOL_OFFSET)?;
            SlicedPacket::from_ether_type(EtherType(ether_type), data.get(SLL_HEADER_LEN..)?)
                .ok()?
        }
        link_type::LINUX_SLL2 => {
            let ether_type = be_u16_at(data, SLL2_PROTOCOL_OFFSET)?;
            SlicedPacket::from_ether_type(EtherType(ether_type), data.get(SLL2_HEADER_LEN..)?)
                .ok()?
        }
        _ => return None,
    };
    let (source_ip, destination_ip, fragmented) = match packet.net.as_ref()? {
        NetSlice::Ipv4(ipv4) => (
            IpAddr::V4(ipv4.header().source_addr()),
            IpAddr::V4(ipv4.header().destination_addr()),
            ipv4.payload().fragmented,
        ),
        NetSlice::Ipv6(ipv6) => (
            IpAddr::V6(ipv6.header().source_addr()),
            IpAddr::V6(ipv6.header().destination_addr()),
            ipv6.payload().fragmented,
        ),
        NetSlice::Arp(_) => return None,
    };
    if fragmented {
        return None;
    }
    let TransportSlice::Udp(udp) = packet.transport.as_ref()? else {
        return None;
    };
    Some(UdpDatagram {
        timestamp_ns: frame.timestamp_ns,
        source: SocketAddr::new(source_ip, udp.source_port()),
        destination: SocketAddr::new(destination_ip, udp.destination_port()),
        payload: udp.payload().to_vec(),
    })
}

/// Writes an Ethernet (link type 1) classic pcap with microsecond
/// timestamps, little-endian, which every tool reads.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    writer: W,
}

impl<W: Write> PcapWriter<W> {
    /// The snapshot length written into the header (libpcap's maximum).
    pub const SNAPLEN: u32 = 262_144;

    /// Writes the global header.
    pub fn new(mut writer: W) -> Result<PcapWriter<W>, PcapError> {
        let mut header = Vec::with_capacity(GLOBAL_HEADER_LEN);
        header.extend_from_slice(&MAGIC_MICROSECONDS.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        header.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        header.extend_from_slice(&Self::SNAPLEN.to_le_bytes());
        header.extend_from_slice(&link_type::ETHERNET.to_le_bytes());
        writer.write_all(&header)?;
        Ok(PcapWriter { writer })
    }

    /// Appends one whole Ethernet frame (without FCS) stamped
    /// `timestamp_ns` (Unix time; rounded down to the microsecond).
    pub fn write_frame(&mut self, timestamp_ns: i64, frame: &[u8]) -> Result<(), PcapError> {
        let seconds = u32::try_from(timestamp_ns.div_euclid(1_000_000_000))
            .map_err(|_| PcapError::Timestamp { timestamp_ns })?;
        // rem_euclid is in [0, 1e9), so microseconds fit in u32.
        let microseconds = (timestamp_ns.rem_euclid(1_000_000_000) / 1_000) as u32;
        let length = u32::try_from(frame.len())
            .ok()
            .filter(|&length| length <= Self::SNAPLEN)
            .ok_or(PcapError::FrameTooLong {
                length: frame.len(),
                snaplen: Self::SNAPLEN,
            })?;
        let mut record = [0u8; RECORD_HEADER_LEN];
        for (chunk, value) in
            record
                .chunks_exact_mut(4)
                .zip([seconds, microseconds, length, length])
        {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        self.writer.write_all(&record)?;
        self.writer.write_all(frame)?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.writer.flush()?;
        Ok(())
    }

    /// The underlying writer (not flushed: call [`PcapWriter::flush`]).
    pub fn into_inner(self) -> W {
        self.writer
    }
}

/// The transport header of a built frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameTransport {
    Udp,
    /// `flags` from [`tcp_flags`]; the acknowledgment number is written
    /// only with the ACK flag.
    Tcp {
        sequence: u32,
        acknowledgment: u32,
        flags: u8,
    },
}

/// The MAC addresses of built frames: locally administered, so they can
/// never be mistaken for a real host's.
pub const FRAME_SOURCE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const FRAME_DESTINATION_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The TTL / hop limit of built frames.
const FRAME_TTL: u8 = 64;

/// An Ethernet + IPv4 + TCP/UDP frame with `payload_len` payload bytes
/// (a repeating byte pattern) and the given TOS byte (DSCP << 2 | ECN).
/// Checksums (IPv4 header, TCP/UDP) are computed by etherparse, so
/// softflowd, pmacctd and tcpdump take the frame as valid.
pub fn ethernet_ipv4_frame(
    source: SocketAddrV4,
    destination: SocketAddrV4,
    transport: FrameTransport,
    tos: u8,
    payload_len: usize,
) -> Result<Vec<u8>, PcapError> {
    let header = Ipv4Header {
        dscp: IpDscp::try_new(tos >> 2).map_err(|e| PcapError::Frame(e.to_string()))?,
        ecn: IpEcn::try_new(tos & 0b11).map_err(|e| PcapError::Frame(e.to_string()))?,
        time_to_live: FRAME_TTL,
        source: source.ip().octets(),
        destination: destination.ip().octets(),
        // total_len, protocol and the checksum are set when written.
        ..Default::default()
    };
    build_frame(
        IpHeaders::Ipv4(header, Default::default()),
        source.port(),
        destination.port(),
        transport,
        payload_len,
    )
}

/// An Ethernet + IPv6 + TCP/UDP frame, as [`ethernet_ipv4_frame`], with the
/// given traffic class byte.
pub fn ethernet_ipv6_frame(
    source: SocketAddrV6,
    destination: SocketAddrV6,
    transport: FrameTransport,
    traffic_class: u8,
    payload_len: usize,
) -> Result<Vec<u8>, PcapError> {
    let header = Ipv6Header {
        traffic_class,
        flow_label: Ipv6FlowLabel::ZERO,
        hop_limit: FRAME_TTL,
        source: source.ip().octets(),
        destination: destination.ip().octets(),
        // payload_length and next_header are set when written.
        ..Default::default()
    };
    build_frame(
        IpHeaders::Ipv6(header, Default::default()),
        source.port(),
        destination.port(),
        transport,
        payload_len,
    )
}

fn build_frame(
    ip: IpHeaders,
    source_port: u16,
    destination_port: u16,
    transport: FrameTransport,
    payload_len: usize,
) -> Result<Vec<u8>, PcapError> {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
    let builder = PacketBuilder::ethernet2(FRAME_SOURCE_MAC, FRAME_DESTINATION_MAC).ip(ip);
    let mut frame = Vec::new();
    let written = match transport {
        FrameTransport::Udp => {
            let builder = builder.udp(source_port, destination_port);
            frame.reserve(builder.size(payload_len));
            builder.write(&mut frame, &payload)
        }
        FrameTransport::Tcp {
            sequence,
            acknowledgment,
            flags,
        } => {
            let mut tcp = TcpHeader::new(source_port, destination_port, sequence, u16::MAX);
            tcp.fin = flags & tcp_flags::FIN != 0;
            tcp.syn = flags & tcp_flags::SYN != 0;
            tcp.rst = flags & tcp_flags::RST != 0;
            tcp.psh = flags & tcp_flags::PSH != 0;
            tcp.ack = flags & tcp_flags::ACK != 0;
            if tcp.ack {
                tcp.acknowledgment_number = acknowledgment;
            }
            let builder = builder.tcp_header(tcp);
            frame.reserve(builder.size(payload_len));
            builder.write(&mut frame, &payload)
        }
    };
    written.map_err(|e| PcapError::Frame(e.to_string()))?;
    Ok(frame)
}

/// Convenience for tests and tools: addresses of either family in one call.
/// Fails when the two addresses are of different families.
pub fn ethernet_frame(
    source: SocketAddr,
    destination: SocketAddr,
    transport: FrameTransport,
    tos: u8,
    payload_len: usize,
) -> Result<Vec<u8>, PcapError> {
    match (source, destination) {
        (SocketAddr::V4(source), SocketAddr::V4(destination)) => {
            ethernet_ipv4_frame(source, destination, transport, tos, payload_len)
        }
        (SocketAddr::V6(source), SocketAddr::V6(destination)) => {
            ethernet_ipv6_frame(source, destination, transport, tos, payload_len)
        }
        _ => Err(PcapError::Frame(format!(
            "{source} and {destination} are of different address families"
        ))),
    }
}

#[derive(Debug, Clone, Copy)]
enum ByteOrder {
    Little,
    Big,
}

impl ByteOrder {
    /// The u32 at `offset` of a header slice already checked to be long
    /// enough; reads 0 rather than panic if it is not.
    fn u32(self, bytes: &[u8], offset: usize) -> u32 {
        let word = bytes
            .get(offset..offset + 4)
            .map(first_four)
            .unwrap_or_default();
        match self {
            ByteOrder::Little => u32::from_le_bytes(word),
            ByteOrder::Big => u32::from_be_bytes(word),
        }
    }
}

fn be_u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    let (word, _) = bytes.get(offset..)?.split_first_chunk::<2>()?;
    Some(u16::from_be_bytes(*word))
}

fn first_four(bytes: &[u8]) -> [u8; 4] {
    let mut word = [0u8; 4];
    for (target, source) in word.iter_mut().zip(bytes) {
        *target = *source;
    }
    word
}

/// `length` bytes at `offset`, or an error naming where the file ends.
fn take<'a>(
    bytes: &'a [u8],
    offset: usize,
    length: usize,
    what: &'static str,
) -> Result<&'a [u8], PcapError> {
    offset
        .checked_add(length)
        .and_then(|end| bytes.get(offset..end))
        .ok_or(PcapError::Truncated {
            what,
            offset,
            needed: length,
            available: bytes.len().saturating_sub(offset),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, VlanId};
    use std::net::Ipv4Addr;

    const V4_SOURCE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 40000);
    const V4_DESTINATION: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 2055);

    fn v6_source() -> SocketAddrV6 {
        SocketAddrV6::new("2001:db8::1".parse().expect("literal"), 40001, 0, 0)
    }

    fn v6_destination() -> SocketAddrV6 {
        SocketAddrV6::new("2001:db8::2".parse().expect("literal"), 6343, 0, 0)
    }

    /// A pcap file written by hand, for the byte orders, timestamp
    /// resolutions and link types `PcapWriter` does not write.
    fn pcap_file(
        link_type: u32,
        big_endian: bool,
        nanoseconds: bool,
        frames: &[(u32, u32, &[u8])],
    ) -> Vec<u8> {
        let word = |value: u32| {
            if big_endian {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            }
        };
        let magic = if nanoseconds {
            MAGIC_NANOSECONDS
        } else {
            MAGIC_MICROSECONDS
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&word(magic));
        let (major, minor) = if big_endian {
            (2u16.to_be_bytes(), 4u16.to_be_bytes())
        } else {
            (2u16.to_le_bytes(), 4u16.to_le_bytes())
        };
        bytes.extend_from_slice(&major);
        bytes.extend_from_slice(&minor);
        bytes.extend_from_slice(&word(0));
        bytes.extend_from_slice(&word(0));
        bytes.extend_from_slice(&word(65535));
        bytes.extend_from_slice(&word(link_type));
        for &(seconds, fraction, data) in frames {
            bytes.extend_from_slice(&word(seconds));
            bytes.extend_from_slice(&word(fraction));
            bytes.extend_from_slice(&word(data.len() as u32));
            bytes.extend_from_slice(&word(data.len() as u32));
            bytes.extend_from_slice(data);
        }
        bytes
    }

    /// An IPv4 + UDP packet without a link header.
    fn ipv4_udp_packet(payload: &[u8]) -> Vec<u8> {
        let builder =
            PacketBuilder::ipv4(V4_SOURCE.ip().octets(), V4_DESTINATION.ip().octets(), 64)
                .udp(V4_SOURCE.port(), V4_DESTINATION.port());
        let mut packet = Vec::new();
        builder.write(&mut packet, payload).expect("build");
        packet
    }

    fn ipv6_udp_packet(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ipv6(
            v6_source().ip().octets(),
            v6_destination().ip().octets(),
            64,
        )
        .udp(v6_source().port(), v6_destination().port());
        let mut packet = Vec::new();
        builder.write(&mut packet, payload).expect("build");
        packet
    }

    fn expected_v4(timestamp_ns: i64, payload: &[u8]) -> UdpDatagram {
        UdpDatagram {
            timestamp_ns,
            source: SocketAddr::V4(V4_SOURCE),
            destination: SocketAddr::V4(V4_DESTINATION),
            payload: payload.to_vec(),
        }
    }

    /// The one's-complement Internet checksum, written here rather than
    /// taken from etherparse so the frames are checked independently.
    fn internet_checksum(chunks: &[&[u8]]) -> u16 {
        let mut sum = 0u32;
        let bytes: Vec<u8> = chunks.concat();
        for pair in bytes.chunks(2) {
            let high = u32::from(pair[0]) << 8;
            let low = pair.get(1).map_or(0, |&b| u32::from(b));
            sum += high | low;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn written_frames_read_back() {
        let payload_pattern =
            |len: usize| -> Vec<u8> { (0..len).map(|i| (i % 251) as u8).collect() };
        let mut writer = PcapWriter::new(Vec::new()).expect("header");
        let udp4 = ethernet_ipv4_frame(V4_SOURCE, V4_DESTINATION, FrameTransport::Udp, 0xb8, 300)
            .expect("frame");
        let tcp4 = ethernet_ipv4_frame(
            V4_SOURCE,
            V4_DESTINATION,
            FrameTransport::Tcp {
                sequence: 1000,
                acknowledgment: 5,
                flags: tcp_flags::ACK | tcp_flags::PSH,
            },
            0,
            1400,
        )
        .expect("frame");
        let udp6 = ethernet_ipv6_frame(v6_source(), v6_destination(), FrameTransport::Udp, 0x28, 0)
            .expect("frame");
        writer
            .write_frame(1_700_000_000_123_456_789, &udp4)
            .expect("write");
        writer
            .write_frame(1_700_000_001_000_000_000, &tcp4)
            .expect("write");
        writer
            .write_frame(1_700_000_002_000_001_999, &udp6)
            .expect("write");
        let bytes = writer.into_inner();

        let capture = read_udp_capture(&bytes).expect("read");
        assert_eq!(
            capture.summary,
            PcapSummary {
                packets: 3,
                udp_datagrams: 2,
                skipped: 1
            }
        );
        // Written with microsecond resolution: the nanoseconds are cut.
        assert_eq!(
            capture.datagrams[0],
            expected_v4(1_700_000_000_123_456_000, &payload_pattern(300))
        );
        assert_eq!(
            capture.datagrams[1],
            UdpDatagram {
                timestamp_ns: 1_700_000_002_000_001_000,
                source: SocketAddr::V6(v6_source()),
                destination: SocketAddr::V6(v6_destination()),
                payload: Vec::new(),
            }
        );

        let frames = read_frames(&bytes).expect("frames");
        assert_eq!(frames.link_type, link_type::ETHERNET);
        let lengths: Vec<usize> = frames.frames.iter().map(|f| f.data.len()).collect();
        assert_eq!(
            lengths,
            vec![14 + 20 + 8 + 300, 14 + 20 + 20 + 1400, 14 + 40 + 8]
        );
        assert_eq!(frames.frames[1].data, tcp4.as_slice());
    }

    #[test]
    fn built_frames_carry_tos_and_valid_checksums() {
        let frame = ethernet_ipv4_frame(V4_SOURCE, V4_DESTINATION, FrameTransport::Udp, 0xb9, 33)
            .expect("frame");
        let ip = &frame[14..34];
        assert_eq!(ip[1], 0xb9, "TOS byte");
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]),
            20 + 8 + 33,
            "total length"
        );
        assert_eq!(internet_checksum(&[ip]), 0, "IPv4 header checksum");
        let udp = &frame[34..];
        let pseudo = [&ip[12..20], &[0, 17], &(udp.len() as u16).to_be_bytes()[..]].concat();
        assert_eq!(internet_checksum(&[&pseudo, udp]), 0, "UDP checksum");

        let frame = ethernet_ipv4_frame(
            V4_SOURCE,
            V4_DESTINATION,
            FrameTransport::Tcp {
                sequence: 7,
                acknowledgment: 9,
                flags: tcp_flags::SYN | tcp_flags::ACK,
            },
            0,
            101,
        )
        .expect("frame");
        let ip = &frame[14..34];
        let tcp = &frame[34..];
        assert_eq!(tcp[13], tcp_flags::SYN | tcp_flags::ACK, "flags");
        assert_eq!(
            u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
            9,
            "ack"
        );
        let pseudo = [&ip[12..20], &[0, 6], &(tcp.len() as u16).to_be_bytes()[..]].concat();
        assert_eq!(internet_checksum(&[&pseudo, tcp]), 0, "TCP checksum");

        let frame =
            ethernet_ipv6_frame(v6_source(), v6_destination(), FrameTransport::Udp, 0x2a, 10)
                .expect("frame");
        let ip = &frame[14..54];
        assert_eq!(((ip[0] & 0x0f) << 4) | (ip[1] >> 4), 0x2a, "traffic class");
        let udp = &frame[54..];
        let pseudo = [
            &ip[8..40],
            &(udp.len() as u32).to_be_bytes()[..],
            &[0, 0, 0, 17],
        ]
        .concat();
        assert_eq!(
            internet_checksum(&[&pseudo, udp]),
            0,
            "UDP over IPv6 checksum"
        );

        let mixed = ethernet_frame(
            SocketAddr::V4(V4_SOURCE),
            SocketAddr::V6(v6_destination()),
            FrameTransport::Udp,
            0,
            1,
        );
        assert!(matches!(mixed, Err(PcapError::Frame(_))));
        assert!(matches!(
            ethernet_ipv4_frame(V4_SOURCE, V4_DESTINATION, FrameTransport::Udp, 0, 70_000),
            Err(PcapError::Frame(_))
        ));
    }

    #[test]
    fn every_link_type_reads() {
        let payload = b"sflow or netflow bytes";
        let ip4 = ipv4_udp_packet(payload);
        let ip6 = ipv6_udp_packet(payload);

        let mut vlan_frame = Vec::new();
        PacketBuilder::ethernet2(FRAME_SOURCE_MAC, FRAME_DESTINATION_MAC)
            .single_vlan(VlanId::try_new(100).expect("vlan"))
            .ipv4(V4_SOURCE.ip().octets(), V4_DESTINATION.ip().octets(), 64)
            .udp(V4_SOURCE.port(), V4_DESTINATION.port())
            .write(&mut vlan_frame, payload)
            .expect("build");
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        sll.extend_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(&ip4);
        let mut sll2 = 0x86ddu16.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        sll2.extend_from_slice(&ip6);

        let cases: Vec<(u32, Vec<u8>, bool)> = vec![
            (link_type::ETHERNET, vlan_frame, false),
            (link_type::RAW, ip4.clone(), false),
            (link_type::RAW, ip6.clone(), true),
            (link_type::RAW_DLT_12, ip4.clone(), false),
            (link_type::RAW_DLT_14, ip6.clone(), true),
            (link_type::IPV4, ip4.clone(), false),
            (link_type::IPV6, ip6.clone(), true),
            (link_type::LINUX_SLL, sll, false),
            (link_type::LINUX_SLL2, sll2, true),
        ];
        for (link, frame, ipv6) in cases {
            let file = pcap_file(link, false, false, &[(10, 20, &frame)]);
            let datagrams =
                read_udp_datagrams(&file).unwrap_or_else(|e| panic!("link type {link}: {e}"));
            let expected = if ipv6 {
                UdpDatagram {
                    timestamp_ns: 10_000_020_000,
                    source: SocketAddr::V6(v6_source()),
                    destination: SocketAddr::V6(v6_destination()),
                    payload: payload.to_vec(),
                }
            } else {
                expected_v4(10_000_020_000, payload)
            };
            assert_eq!(datagrams, vec![expected], "link type {link}");
        }

        let unsupported = pcap_file(105, false, false, &[]);
        assert!(matches!(
            read_frames(&unsupported),
            Err(PcapError::UnsupportedLinkType { link_type: 105 })
        ));
    }

    #[test]
    fn big_endian_nanosecond_files_read() {
        let payload = [1, 2, 3];
        let ip4 = ipv4_udp_packet(&payload);
        let file = pcap_file(
            link_type::RAW,
            true,
            true,
            &[(1_600_000_000, 999_999_999, &ip4)],
        );
        let datagrams = read_udp_datagrams(&file).expect("read");
        assert_eq!(
            datagrams,
            vec![expected_v4(1_600_000_000_999_999_999, &payload)]
        );
        let file = pcap_file(link_type::RAW, true, false, &[(1, 5, &ip4)]);
        assert_eq!(
            read_udp_datagrams(&file).expect("read")[0].timestamp_ns,
            1_000_005_000
        );
    }

    #[test]
    fn fragments_and_other_packets_are_skipped_and_counted() {
        // A first fragment: the UDP header is there but the datagram is not whole.
        let mut fragment = Vec::new();
        let mut header = Ipv4Header::new(
            0,
            64,
            etherparse::IpNumber::UDP,
            V4_SOURCE.ip().octets(),
            V4_DESTINATION.ip().octets(),
        )
        .expect("header");
        header.more_fragments = true;
        header.dont_fragment = false;
        PacketBuilder::ethernet2(FRAME_SOURCE_MAC, FRAME_DESTINATION_MAC)
            .ip(IpHeaders::Ipv4(header, Default::default()))
            .udp(1, 2)
            .write(&mut fragment, &[0; 64])
            .expect("build");
        let tcp = ethernet_ipv4_frame(
            V4_SOURCE,
            V4_DESTINATION,
            FrameTransport::Tcp {
                sequence: 1,
                acknowledgment: 0,
                flags: tcp_flags::SYN,
            },
            0,
            0,
        )
        .expect("frame");
        let arp_like = [0xffu8; 42];
        let udp = ethernet_ipv4_frame(V4_SOURCE, V4_DESTINATION, FrameTransport::Udp, 0, 5)
            .expect("frame");
        // Cut by a snapshot length: the UDP length says more than is there.
        let cut = &udp[..udp.len() - 2];
        let file = pcap_file(
            link_type::ETHERNET,
            false,
            false,
            &[
                (1, 0, &fragment),
                (2, 0, &tcp),
                (3, 0, &arp_like),
                (4, 0, cut),
                (5, 0, &udp),
            ],
        );
        let capture = read_udp_capture(&file).expect("read");
        assert_eq!(
            capture.summary,
            PcapSummary {
                packets: 5,
                udp_datagrams: 1,
                skipped: 4
            }
        );
        assert_eq!(capture.datagrams[0].timestamp_ns, 5_000_000_000);
    }

    #[test]
    fn truncated_files_name_the_offset() {
        let ip4 = ipv4_udp_packet(b"abcd");
        let file = pcap_file(link_type::RAW, false, false, &[(1, 0, &ip4), (2, 0, &ip4)]);
        let first_end = GLOBAL_HEADER_LEN + RECORD_HEADER_LEN + ip4.len();
        for length in 0..=file.len() {
            let result = read_udp_datagrams(&file[..length]);
            match length {
                GLOBAL_HEADER_LEN => assert_eq!(result.expect("header only").len(), 0),
                l if l == first_end => assert_eq!(result.expect("one record").len(), 1),
                l if l == file.len() => assert_eq!(result.expect("whole").len(), 2),
                l => {
                    let Err(PcapError::Truncated { offset, what, .. }) = result else {
                        panic!("length {l}: {result:?}");
                    };
                    let expected = if l < GLOBAL_HEADER_LEN {
                        (0, "global header")
                    } else if l < GLOBAL_HEADER_LEN + RECORD_HEADER_LEN {
                        (GLOBAL_HEADER_LEN, "record header")
                    } else if l < first_end {
                        (GLOBAL_HEADER_LEN + RECORD_HEADER_LEN, "record data")
                    } else if l < first_end + RECORD_HEADER_LEN {
                        (first_end, "record header")
                    } else {
                        (first_end + RECORD_HEADER_LEN, "record data")
                    };
                    assert_eq!((offset, what), expected, "length {l}");
                }
            }
        }
        let error = read_udp_datagrams(&file[..file.len() - 1]).expect_err("truncated");
        assert!(
            error
                .to_string()
                .contains(&format!("byte offset {}", first_end + RECORD_HEADER_LEN)),
            "{error}"
        );
    }

    #[test]
    fn other_formats_are_refused_by_name() {
        let pcapng = [
            0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0,
        ];
        assert!(matches!(
            read_frames(&pcapng),
            Err(PcapError::PcapNg { .. })
        ));
        assert!(matches!(
            read_frames(&[0u8; 24]),
            Err(PcapError::BadMagic { magic: 0 })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // Random frames under every link type, and random files.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for link in [1, 12, 14, 101, 113, 228, 229, 276] {
            for _ in 0..300 {
                let length = (next() % 120) as usize;
                let mut frame: Vec<u8> = (0..length).map(|_| next() as u8).collect();
                // Make IP likelier, so the deeper layers are reached too.
                if let Some(first) = frame.first_mut() {
                    *first = if next() % 2 == 0 { 0x45 } else { 0x60 };
                }
                let file = pcap_file(link, false, false, &[(0, 0, &frame)]);
                let _ = read_udp_capture(&file);
            }
        }
        for _ in 0..500 {
            let length = (next() % 200) as usize;
            let mut file: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            if file.len() >= 4 {
                file[..4].copy_from_slice(&MAGIC_MICROSECONDS.to_le_bytes());
            }
            let _ = read_udp_capture(&file);
        }
    }

    #[test]
    fn writer_refuses_what_pcap_cannot_hold() {
        let mut writer = PcapWriter::new(Vec::new()).expect("header");
        assert!(matches!(
            writer.write_frame(-1, &[0; 60]),
            Err(PcapError::Timestamp { .. })
        ));
        assert!(matches!(
            writer.write_frame(0, &vec![0; PcapWriter::<Vec<u8>>::SNAPLEN as usize + 1]),
            Err(PcapError::FrameTooLong { .. })
        ));
        assert_eq!(writer.into_inner().len(), GLOBAL_HEADER_LEN);
    }
}
