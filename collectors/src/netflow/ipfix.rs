//! IPFIX (RFC 7011): the message header, and template and options
//! template sets with enterprise fields and withdrawals. Data sets are
//! shared with NetFlow v9 (`walk_sets`).

use std::net::SocketAddr;

use super::exporter::MessageContext;
use super::template::{TemplateDefinition, TemplateField};
use super::{
    Flavor, NetflowDecoder, ParsedTemplates, SetWalk, TemplateItem, sync_sequence_counters,
    walk_sets, wire,
};
use crate::error::DecodeError;
use crate::record::{FlowBatch, FlowProtocol};

const HEADER_LENGTH: usize = 16;

/// Template set ids, which double as "all templates of this kind" in a
/// withdrawal.
const TEMPLATE_SET: u16 = 2;
const OPTIONS_TEMPLATE_SET: u16 = 3;

pub(super) fn decode(
    decoder: &mut NetflowDecoder,
    source: SocketAddr,
    received_ms: i64,
    datagram: &[u8],
    batch: &mut FlowBatch,
) -> Result<(), DecodeError> {
    let mut first_error = None;
    let mut at = 0usize;
    // One message per datagram is the rule over UDP; a datagram carrying
    // several back to back is decoded message by message.
    while datagram.len() - at >= 2 {
        let message = datagram.get(at..).unwrap_or_default();
        let length = match decode_message(decoder, source, received_ms, message, batch) {
            Ok(length) => length,
            Err(error) => {
                first_error.get_or_insert(error);
                break;
            }
        };
        at += length;
        if wire::u16_at(datagram, at) != Some(10) {
            break;
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Decodes the message at the start of `message`; returns its length.
fn decode_message(
    decoder: &mut NetflowDecoder,
    source: SocketAddr,
    received_ms: i64,
    message: &[u8],
    batch: &mut FlowBatch,
) -> Result<usize, DecodeError> {
    let (Some(length), Some(export_secs), Some(sequence), Some(domain)) = (
        wire::u16_at(message, 2),
        wire::u32_at(message, 4),
        wire::u32_at(message, 8),
        wire::u32_at(message, 12),
    ) else {
        let key = decoder.key(source, FlowProtocol::Ipfix, 0);
        let error = DecodeError::truncated("IPFIX header", HEADER_LENGTH, message.len());
        return decoder.reject(key, error).map(|()| 0);
    };
    let key = decoder.key(source, FlowProtocol::Ipfix, domain);
    let length = usize::from(length);
    if length < HEADER_LENGTH {
        let error = DecodeError::invalid(
            "IPFIX header",
            format!("message length {length} is shorter than the header"),
        );
        return decoder.reject(key, error).map(|()| 0);
    }
    let Some(sets) = message.get(HEADER_LENGTH..length) else {
        let error = DecodeError::truncated("IPFIX message", length, message.len());
        return decoder.reject(key, error).map(|()| 0);
    };
    let Some(state) = decoder.state_at(key, Some(received_ms)) else {
        return Err(super::too_many_exporters(decoder.options.max_exporters));
    };
    state.counters.datagrams += 1;
    let exporter = batch.exporter_index(&key);
    let walk = SetWalk {
        key,
        exporter,
        context: MessageContext {
            received_ms,
            export_unix_ms: i64::from(export_secs) * 1000,
            sys_uptime_ms: None,
        },
        sets,
    };
    let outcome = walk_sets(decoder, Flavor::Ipfix, walk, batch);
    // IPFIX sequence numbers count data records (options records too)
    // sent before this message.
    if let Some(state) = decoder.exporters.get_mut(&key) {
        let records = outcome.records.map(|r| r.min(u64::from(u32::MAX)) as u32);
        state.sequence.observe(sequence, records);
        sync_sequence_counters(state);
    }
    match outcome.error {
        Some(error) => Err(error),
        None => Ok(length),
    }
}

/// The templates of a template set (id 2) or an options template set
/// (id 3), withdrawals included.
pub(super) fn parse_templates(body: &[u8], options: bool) -> ParsedTemplates {
    let mut parsed = ParsedTemplates {
        items: Vec::new(),
        error: None,
    };
    let mut at = 0usize;
    while body.len() - at >= 4 {
        let (Some(id), Some(field_count)) = (wire::u16_at(body, at), wire::u16_at(body, at + 2))
        else {
            break;
        };
        if field_count == 0 {
            // A withdrawal; the set id itself withdraws all of its kind.
            let item = match id {
                0 => break, // padding
                TEMPLATE_SET | OPTIONS_TEMPLATE_SET => TemplateItem::WithdrawAll { options },
                _ => TemplateItem::Withdraw(id),
            };
            parsed.items.push(item);
            at += 4;
            continue;
        }
        if id < 256 {
            parsed.error = Some(DecodeError::invalid(
                "template",
                format!("template id {id} is below 256"),
            ));
            break;
        }
        at += 4;
        let mut scope_fields = 0;
        if options {
            let Some(scope) = wire::u16_at(body, at) else {
                parsed.error = Some(DecodeError::truncated(
                    "options template",
                    2,
                    body.len() - at,
                ));
                break;
            };
            if scope > field_count {
                parsed.error = Some(DecodeError::invalid(
                    "options template",
                    format!("template {id}: {scope} scope fields of {field_count}"),
                ));
                break;
            }
            scope_fields = scope;
            at += 2;
        }
        let mut fields = Vec::with_capacity(usize::from(field_count).min(64));
        for _ in 0..field_count {
            let (Some(raw_id), Some(length)) = (wire::u16_at(body, at), wire::u16_at(body, at + 2))
            else {
                parsed.error = Some(DecodeError::truncated("template field", 4, body.len() - at));
                return parsed;
            };
            at += 4;
            let mut enterprise = 0;
            if raw_id & 0x8000 != 0 {
                let Some(number) = wire::u32_at(body, at) else {
                    parsed.error = Some(DecodeError::truncated(
                        "enterprise number",
                        4,
                        body.len() - at,
                    ));
                    return parsed;
                };
                enterprise = number;
                at += 4;
            }
            fields.push(TemplateField {
                id: raw_id & 0x7fff,
                enterprise,
                length,
            });
        }
        parsed.items.push(TemplateItem::Define(TemplateDefinition {
            id,
            scope_fields,
            options,
            v9_scope: false,
            fields,
        }));
    }
    parsed
}
