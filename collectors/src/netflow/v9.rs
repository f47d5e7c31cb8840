//! NetFlow v9 (RFC 3954): the header, and the template and options
//! template flowsets. Data flowsets are shared with IPFIX (`walk_sets`).

use std::net::SocketAddr;

use super::exporter::MessageContext;
use super::template::{TemplateDefinition, TemplateField};
use super::{
    Flavor, NetflowDecoder, ParsedTemplates, SetWalk, TemplateItem, sync_sequence_counters,
    walk_sets, wire,
};
use crate::error::DecodeError;
use crate::record::{FlowBatch, FlowProtocol};

const HEADER_LENGTH: usize = 20;

pub(super) fn decode(
    decoder: &mut NetflowDecoder,
    source: SocketAddr,
    received_ms: i64,
    datagram: &[u8],
    batch: &mut FlowBatch,
) -> Result<(), DecodeError> {
    let (Some(sys_uptime_ms), Some(unix_secs), Some(sequence), Some(source_id)) = (
        wire::u32_at(datagram, 4),
        wire::u32_at(datagram, 8),
        wire::u32_at(datagram, 12),
        wire::u32_at(datagram, 16),
    ) else {
        let key = decoder.key(source, FlowProtocol::NetflowV9, 0);
        let error = DecodeError::truncated("NetFlow v9 header", HEADER_LENGTH, datagram.len());
        return decoder.reject(key, error);
    };
    let key = decoder.key(source, FlowProtocol::NetflowV9, source_id);
    let Some(state) = decoder.state_at(key, Some(received_ms)) else {
        return Err(super::too_many_exporters(decoder.options.max_exporters));
    };
    state.counters.datagrams += 1;
    // v9 sequence numbers count export packets.
    state.sequence.observe(sequence, Some(1));
    sync_sequence_counters(state);
    let exporter = batch.exporter_index(&key);
    let walk = SetWalk {
        key,
        exporter,
        context: MessageContext {
            received_ms,
            export_unix_ms: i64::from(unix_secs) * 1000,
            sys_uptime_ms: Some(sys_uptime_ms),
        },
        sets: datagram.get(HEADER_LENGTH..).unwrap_or_default(),
    };
    match walk_sets(decoder, Flavor::V9, walk, batch).error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The templates of a template flowset (id 0) or an options template
/// flowset (id 1).
pub(super) fn parse_templates(body: &[u8], options: bool) -> ParsedTemplates {
    let mut parsed = ParsedTemplates {
        items: Vec::new(),
        error: None,
    };
    let mut at = 0usize;
    let header = if options { 6 } else { 4 };
    while body.len() - at >= header {
        let (Some(id), Some(first), Some(second)) = (
            wire::u16_at(body, at),
            wire::u16_at(body, at + 2),
            wire::u16_at(body, at + 4),
        ) else {
            break;
        };
        if id == 0 && first == 0 {
            break; // padding to the flowset's 4-byte boundary
        }
        if id < 256 {
            parsed.error = Some(DecodeError::invalid(
                "template",
                format!("template id {id} is below 256"),
            ));
            break;
        }
        // A template record: id, field count. An options template: id,
        // scope length in bytes, options length in bytes.
        let (scope_fields, field_count) = if options {
            if first % 4 != 0 || second % 4 != 0 {
                parsed.error = Some(DecodeError::invalid(
                    "options template",
                    format!(
                        "template {id}: scope length {first} or option length {second} is not a multiple of 4"
                    ),
                ));
                break;
            }
            (first / 4, usize::from(first / 4) + usize::from(second / 4))
        } else {
            (0, usize::from(first))
        };
        if field_count == 0 {
            parsed.error = Some(DecodeError::invalid(
                "template",
                format!("template {id} has no fields"),
            ));
            break;
        }
        let fields_start = at + header;
        let fields_end = fields_start + field_count * 4;
        let Some(field_bytes) = body.get(fields_start..fields_end) else {
            parsed.error = Some(DecodeError::truncated(
                "template",
                fields_end - at,
                body.len() - at,
            ));
            break;
        };
        let fields = field_bytes
            .chunks_exact(4)
            .map(|field| TemplateField {
                id: wire::u16_at(field, 0).unwrap_or_default(),
                enterprise: 0,
                length: wire::u16_at(field, 2).unwrap_or_default(),
            })
            .collect();
        parsed.items.push(TemplateItem::Define(TemplateDefinition {
            id,
            scope_fields,
            options,
            v9_scope: options,
            fields,
        }));
        at = fields_end;
    }
    parsed
}
