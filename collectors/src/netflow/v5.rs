//! NetFlow v5: a fixed 24-byte header and 48-byte records, no templates.

use std::net::SocketAddr;

use super::{NetflowDecoder, sync_sequence_counters, wire};
use crate::error::DecodeError;
use crate::record::{FlowBatch, FlowProtocol, ipv4_to_u128};

const HEADER_LENGTH: usize = 24;
const RECORD_LENGTH: usize = 48;

pub(super) fn decode(
    decoder: &mut NetflowDecoder,
    source: SocketAddr,
    received_ms: i64,
    datagram: &[u8],
    batch: &mut FlowBatch,
) -> Result<(), DecodeError> {
    let header = (
        wire::u16_at(datagram, 2),
        wire::u32_at(datagram, 4),
        wire::u32_at(datagram, 8),
        wire::u32_at(datagram, 12),
        wire::u32_at(datagram, 16),
        wire::u16_at(datagram, 20),
        wire::u16_at(datagram, 22),
    );
    let (
        Some(count),
        Some(sys_uptime_ms),
        Some(unix_secs),
        Some(unix_nsecs),
        Some(flow_sequence),
        Some(engine),
        Some(sampling),
    ) = header
    else {
        let key = decoder.key(source, FlowProtocol::NetflowV5, 0);
        let error = DecodeError::truncated("NetFlow v5 header", HEADER_LENGTH, datagram.len());
        return decoder.reject(key, error);
    };
    // Engine type and engine id tell apart the exporters of one address.
    let key = decoder.key(source, FlowProtocol::NetflowV5, u32::from(engine));
    let Some(state) = decoder.state_at(key, Some(received_ms)) else {
        return Err(super::too_many_exporters(decoder.options.max_exporters));
    };
    state.counters.datagrams += 1;
    // The top two bits are the sampling mode, the rest the interval.
    let rate = match u32::from(sampling & 0x3fff) {
        0 => 1,
        interval => interval,
    };
    let export_unix_ms = i64::from(unix_secs) * 1000 + i64::from(unix_nsecs / 1_000_000);
    let records = datagram.get(HEADER_LENGTH..).unwrap_or_default();
    let announced = usize::from(count);
    let present = records.len() / RECORD_LENGTH;
    let exporter = batch.exporter_index(&key);
    for record in records.chunks_exact(RECORD_LENGTH).take(announced) {
        let field = |at: usize| wire::u32_at(record, at).unwrap_or_default();
        let half = |at: usize| wire::u16_at(record, at).unwrap_or_default();
        let byte = |at: usize| wire::u8_at(record, at).unwrap_or_default();
        let packets = u64::from(field(16));
        let bytes = u64::from(field(20));
        let last_uptime = field(28);
        state.counters.count_record(packets, bytes, rate);
        batch.exporter.push(exporter);
        batch.received_ms.push(received_ms);
        batch
            .flow_end_ms
            .push(export_unix_ms - i64::from(sys_uptime_ms.wrapping_sub(last_uptime)));
        batch.src_addr.push(ipv4_to_u128(field(0).to_be_bytes()));
        batch.dst_addr.push(ipv4_to_u128(field(4).to_be_bytes()));
        batch.in_if.push(u32::from(half(12)));
        batch.out_if.push(u32::from(half(14)));
        batch.packets.push(packets);
        batch.bytes.push(bytes);
        batch.src_port.push(half(32));
        batch.dst_port.push(half(34));
        batch.protocol.push(byte(38));
        batch.tos.push(byte(39));
        batch.sampling_rate.push(rate);
    }
    let decoded = announced.min(present);
    // v5 sequence numbers count flows.
    state
        .sequence
        .observe(flow_sequence, Some(decoded.min(u32::MAX as usize) as u32));
    sync_sequence_counters(state);
    if present < announced {
        let error = DecodeError::truncated(
            "NetFlow v5 records",
            HEADER_LENGTH + announced * RECORD_LENGTH,
            datagram.len(),
        );
        super::record_error(state, &error);
        return Err(error);
    }
    Ok(())
}
