//! The NetFlow/IPFIX decoder on the cases that break collectors in the
//! field: late templates, redefined templates, exporters sharing template
//! ids, sampling announced in options, sequence gaps, broken datagrams.

use std::net::SocketAddr;

use aiwan_collectors::netflow::encode::{
    self, IpfixExporter, MessageBuilder, data_template, ipv4_flow_template, options_template,
};
use aiwan_collectors::netflow::template::ie;
use aiwan_collectors::netflow::{NetflowDecoder, NetflowOptions};
use aiwan_collectors::record::{ExporterKey, FlowBatch, FlowProtocol, FlowRecord, ipv4_to_u128};
use aiwan_collectors::stats::ExporterCounters;

const NOW_MS: i64 = 1_760_000_000_000;
const NOW_SECS: u32 = 1_760_000_000;

fn source(text: &str) -> SocketAddr {
    text.parse().expect("socket address literal")
}

fn flow(n: u8, bytes: u64, packets: u64) -> FlowRecord {
    FlowRecord {
        received_ms: NOW_MS,
        flow_end_ms: NOW_MS - 500,
        src_addr: ipv4_to_u128([10, 0, 0, n]),
        dst_addr: ipv4_to_u128([10, 1, 0, n]),
        src_port: 40_000 + u16::from(n),
        dst_port: 443,
        protocol: 6,
        tos: 0x68, // DSCP 26
        in_if: 1,
        out_if: 2,
        packets,
        bytes,
        sampling_rate: 1,
    }
}

/// Decodes `datagrams` in order. Every datagram of every test here is
/// also decoded by a copy of the decoder that reads records through the
/// generic walk only: the templates' compiled readers must give the same
/// records, outcomes and counters.
fn decode(decoder: &mut NetflowDecoder, from: &str, datagrams: &[Vec<u8>]) -> FlowBatch {
    let mut batch = FlowBatch::default();
    for datagram in datagrams {
        let mut generic = decoder.generic_copy();
        let mut generic_batch = batch.clone();
        let outcome = decoder.decode(source(from), NOW_MS, datagram, &mut batch);
        let generic_outcome = generic.decode(source(from), NOW_MS, datagram, &mut generic_batch);
        assert_eq!(
            format!("{outcome:?}"),
            format!("{generic_outcome:?}"),
            "outcome"
        );
        assert_eq!(batch, generic_batch, "records of the compiled readers");
        assert_eq!(decoder.reports(), generic.reports(), "counters");
    }
    batch
}

fn counters(
    decoder: &NetflowDecoder,
    address: &str,
    protocol: FlowProtocol,
    domain: u32,
) -> ExporterCounters {
    let key = ExporterKey {
        address: address.parse().expect("address literal"),
        port: 0,
        protocol,
        domain,
    };
    decoder
        .reports()
        .into_iter()
        .find(|report| report.key == key)
        .map(|report| report.counters)
        .unwrap_or_else(|| panic!("no exporter {key}"))
}

fn rows(batch: &FlowBatch) -> Vec<FlowRecord> {
    (0..batch.len())
        .map(|i| batch.record(i).expect("row").1)
        .collect()
}

#[test]
fn ipfix_records_decode_exactly() {
    let mut exporter = IpfixExporter::new(7, 10);
    let sent: Vec<FlowRecord> = (1..=40)
        .map(|n| flow(n, 1000 * u64::from(n), u64::from(n)))
        .collect();
    let datagrams = exporter.export(&sent, NOW_SECS);
    assert!(
        datagrams.len() > 1,
        "40 records need more than one datagram"
    );
    let mut decoder = NetflowDecoder::default();
    let batch = decode(&mut decoder, "192.0.2.1:4739", &datagrams);
    assert_eq!(rows(&batch), sent);
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 7);
    assert_eq!(c.records, 40);
    assert_eq!(c.bytes, (1..=40).map(|n| 1000 * n).sum::<u64>());
    assert_eq!(c.packets, (1..=40).sum::<u64>());
    assert_eq!(c.templates, 2);
    assert_eq!(
        (c.decode_errors, c.template_misses, c.sequence_gaps),
        (0, 0, 0)
    );
}

#[test]
fn data_before_its_template_is_decoded_when_the_template_comes() {
    let template = ipv4_flow_template(300);
    let early = MessageBuilder::ipfix(1, 0, NOW_SECS)
        .flows(&template, &[flow(1, 100, 1), flow(2, 200, 2)])
        .finish();
    let late_template = MessageBuilder::ipfix(1, 2, NOW_SECS)
        .template(&template)
        .flows(&template, &[flow(3, 300, 3)])
        .finish();
    let mut decoder = NetflowDecoder::default();
    let before = decode(&mut decoder, "192.0.2.1:4739", std::slice::from_ref(&early));
    assert!(before.is_empty());
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 1);
    assert_eq!((c.template_misses, c.records), (1, 0));
    let after = decode(&mut decoder, "192.0.2.1:4739", &[late_template]);
    let bytes: Vec<u64> = rows(&after).iter().map(|r| r.bytes).collect();
    assert_eq!(
        bytes,
        vec![300, 100, 200],
        "this message's set, then the held one"
    );
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 1);
    assert_eq!((c.template_misses, c.records, c.pending_dropped), (1, 3, 0));
    assert_eq!(c.sequence_gaps, 0, "an uncountable message is not a gap");
}

#[test]
fn held_data_is_bounded_and_dropped_sets_are_counted() {
    let template = ipv4_flow_template(300);
    let options = NetflowOptions {
        pending_max_bytes: 2_000,
        ..NetflowOptions::default()
    };
    let mut decoder = NetflowDecoder::new(options);
    let records: Vec<FlowRecord> = (0..10).map(|n| flow(n, 10, 1)).collect();
    // Each set is 10 * 54 bytes: three fit in 2000 bytes, the rest push out
    // the oldest.
    let sets: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            MessageBuilder::ipfix(1, i * 10, NOW_SECS)
                .flows(&template, &records)
                .finish()
        })
        .collect();
    decode(&mut decoder, "192.0.2.1:4739", &sets);
    let with_template = MessageBuilder::ipfix(1, 50, NOW_SECS)
        .template(&template)
        .finish();
    let batch = decode(&mut decoder, "192.0.2.1:4739", &[with_template]);
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 1);
    assert_eq!((c.template_misses, c.pending_dropped), (5, 2));
    assert_eq!(batch.len(), 30);
}

#[test]
fn a_redefined_template_decodes_with_its_new_layout() {
    let first = data_template(
        400,
        &[(ie::SOURCE_IPV4_ADDRESS, 4), (ie::OCTET_DELTA_COUNT, 4)],
    );
    let second = data_template(
        400,
        &[
            (ie::OCTET_DELTA_COUNT, 8),
            (ie::PACKET_DELTA_COUNT, 4),
            (ie::SOURCE_IPV4_ADDRESS, 4),
        ],
    );
    let datagrams = vec![
        MessageBuilder::v9(3, 0, 10_000, NOW_SECS)
            .template(&first)
            .flows(&first, &[flow(1, 111, 0)])
            .finish(),
        MessageBuilder::v9(3, 1, 11_000, NOW_SECS)
            .template(&second)
            .flows(&second, &[flow(2, 222, 22)])
            .finish(),
    ];
    let mut decoder = NetflowDecoder::default();
    let batch = decode(&mut decoder, "192.0.2.9:2055", &datagrams);
    let got: Vec<(u128, u64, u64)> = rows(&batch)
        .iter()
        .map(|r| (r.src_addr, r.bytes, r.packets))
        .collect();
    assert_eq!(
        got,
        vec![
            (ipv4_to_u128([10, 0, 0, 1]), 111, 0),
            (ipv4_to_u128([10, 0, 0, 2]), 222, 22)
        ]
    );
    let c = counters(&decoder, "192.0.2.9", FlowProtocol::NetflowV9, 3);
    assert_eq!((c.templates, c.decode_errors, c.sequence_gaps), (2, 0, 0));
}

#[test]
fn exporters_sharing_a_template_id_keep_their_own_layouts() {
    let wide = ipv4_flow_template(256);
    let narrow = data_template(
        256,
        &[
            (ie::DESTINATION_IPV4_ADDRESS, 4),
            (ie::OCTET_DELTA_COUNT, 4),
        ],
    );
    let mut decoder = NetflowDecoder::default();
    let mut batch = FlowBatch::default();
    let a = MessageBuilder::ipfix(5, 0, NOW_SECS)
        .template(&wide)
        .finish();
    let b = MessageBuilder::ipfix(5, 0, NOW_SECS)
        .template(&narrow)
        .finish();
    // Same address, other domain: a third exporter with the narrow layout.
    let c = MessageBuilder::ipfix(6, 0, NOW_SECS)
        .template(&narrow)
        .finish();
    for (from, datagram) in [
        ("192.0.2.1:4739", &a),
        ("192.0.2.2:4739", &b),
        ("192.0.2.1:4739", &c),
    ] {
        decoder
            .decode(source(from), NOW_MS, datagram, &mut batch)
            .expect("template");
    }
    let data_a = MessageBuilder::ipfix(5, 0, NOW_SECS)
        .flows(&wide, &[flow(1, 1_000, 10)])
        .finish();
    let data_b = MessageBuilder::ipfix(5, 0, NOW_SECS)
        .flows(&narrow, &[flow(2, 2_000, 20)])
        .finish();
    let data_c = MessageBuilder::ipfix(6, 0, NOW_SECS)
        .flows(&narrow, &[flow(3, 3_000, 30)])
        .finish();
    for (from, datagram) in [
        ("192.0.2.1:4739", &data_a),
        ("192.0.2.2:4739", &data_b),
        ("192.0.2.1:4739", &data_c),
    ] {
        decoder
            .decode(source(from), NOW_MS, datagram, &mut batch)
            .expect("data");
    }
    let got: Vec<(String, u32, u128, u64)> = (0..batch.len())
        .map(|i| batch.record(i).expect("row"))
        .map(|(key, r)| (key.address.to_string(), key.domain, r.dst_addr, r.bytes))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "192.0.2.1".to_string(),
                5,
                ipv4_to_u128([10, 1, 0, 1]),
                1_000
            ),
            (
                "192.0.2.2".to_string(),
                5,
                ipv4_to_u128([10, 1, 0, 2]),
                2_000
            ),
            (
                "192.0.2.1".to_string(),
                6,
                ipv4_to_u128([10, 1, 0, 3]),
                3_000
            ),
        ]
    );
}

#[test]
fn key_by_source_port_separates_exporters_behind_one_address() {
    let wide = ipv4_flow_template(256);
    let narrow = data_template(256, &[(ie::OCTET_DELTA_COUNT, 4)]);
    let mut decoder = NetflowDecoder::new(NetflowOptions {
        key_by_source_port: true,
        ..NetflowOptions::default()
    });
    let mut batch = FlowBatch::default();
    let datagrams = [
        (
            "192.0.2.1:1000",
            MessageBuilder::ipfix(0, 0, NOW_SECS)
                .template(&wide)
                .finish(),
        ),
        (
            "192.0.2.1:2000",
            MessageBuilder::ipfix(0, 0, NOW_SECS)
                .template(&narrow)
                .finish(),
        ),
        (
            "192.0.2.1:1000",
            MessageBuilder::ipfix(0, 0, NOW_SECS)
                .flows(&wide, &[flow(1, 7, 1)])
                .finish(),
        ),
        (
            "192.0.2.1:2000",
            MessageBuilder::ipfix(0, 0, NOW_SECS)
                .flows(&narrow, &[flow(1, 9, 1)])
                .finish(),
        ),
    ];
    for (from, datagram) in &datagrams {
        decoder
            .decode(source(from), NOW_MS, datagram, &mut batch)
            .expect("decodes");
    }
    let ports: Vec<(u16, u64, u128)> = (0..batch.len())
        .map(|i| batch.record(i).expect("row"))
        .map(|(key, r)| (key.port, r.bytes, r.src_addr))
        .collect();
    assert_eq!(
        ports,
        vec![(1000, 7, ipv4_to_u128([10, 0, 0, 1])), (2000, 9, 0)]
    );
}

#[test]
fn options_sampling_rate_scales_the_data_after_it() {
    // IPFIX: selector 7 samples 1 packet in 100 (interval 1, space 99).
    let sampling = options_template(
        500,
        &[(ie::SELECTOR_ID, 8)],
        &[
            (ie::SAMPLING_PACKET_INTERVAL, 4),
            (ie::SAMPLING_PACKET_SPACE, 4),
        ],
        false,
    );
    let data = data_template(
        501,
        &[
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::SELECTOR_ID, 8),
            (ie::OCTET_DELTA_COUNT, 8),
            (ie::PACKET_DELTA_COUNT, 8),
        ],
    );
    let mut message = MessageBuilder::ipfix(1, 0, NOW_SECS);
    message
        .template(&sampling)
        .template(&data)
        .options_records(&sampling, &[vec![7, 1, 99]]);
    // The data record names selector 7 (the builder writes the selector
    // field from sampling_rate's slot only for samplingInterval, so build
    // the record's bytes by hand).
    let mut body = Vec::new();
    body.extend([10, 0, 0, 1]);
    body.extend(7u64.to_be_bytes());
    body.extend(1_500u64.to_be_bytes());
    body.extend(2u64.to_be_bytes());
    message.raw_set(501, &body);
    let mut decoder = NetflowDecoder::default();
    let batch = decode(&mut decoder, "192.0.2.1:4739", &[message.finish()]);
    let got = rows(&batch);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].bytes, got[0].packets, got[0].sampling_rate),
        (1_500, 2, 100)
    );
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 1);
    assert_eq!((c.bytes_scaled, c.packets_scaled), (150_000, 200));
    assert_eq!(c.records, 1, "the options record is not a flow record");

    // NetFlow v9: a system-wide FLOW_SAMPLER_RANDOM_INTERVAL of 512 with
    // scope "system", then plain data.
    let v9_options = options_template(256, &[(1, 4)], &[(ie::SAMPLER_RANDOM_INTERVAL, 4)], true);
    let v9_data = data_template(
        257,
        &[(ie::OCTET_DELTA_COUNT, 4), (ie::PACKET_DELTA_COUNT, 4)],
    );
    let datagram = MessageBuilder::v9(0, 0, 1_000, NOW_SECS)
        .template(&v9_options)
        .template(&v9_data)
        .options_records(&v9_options, &[vec![0, 512]])
        .flows(&v9_data, &[flow(1, 64, 1)])
        .finish();
    let batch = decode(&mut decoder, "192.0.2.5:2055", &[datagram]);
    assert_eq!(rows(&batch)[0].sampling_rate, 512);
    let c = counters(&decoder, "192.0.2.5", FlowProtocol::NetflowV9, 0);
    assert_eq!(c.bytes_scaled, 64 * 512);
}

#[test]
fn sequence_gaps_are_counted_once_per_protocol() {
    // IPFIX counts records: messages of 10 records, one message lost.
    let mut exporter = IpfixExporter::new(1, 1);
    let mut decoder = NetflowDecoder::default();
    let records: Vec<FlowRecord> = (0..10).map(|n| flow(n, 1, 1)).collect();
    let messages: Vec<Vec<u8>> = (0..6)
        .map(|_| exporter.export(&records, NOW_SECS).remove(0))
        .collect();
    let kept: Vec<Vec<u8>> = messages
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, m)| m.clone())
        .collect();
    decode(&mut decoder, "192.0.2.1:4739", &kept);
    decoder.flush_sequences();
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 1);
    assert_eq!((c.sequence_gaps, c.sequence_lost), (1, 10));

    // v9 counts packets: 0, 1, 3, 4 then 2 late (reordered, not lost).
    let template = data_template(256, &[(ie::OCTET_DELTA_COUNT, 4)]);
    let packet = |sequence: u32| {
        MessageBuilder::v9(9, sequence, 1_000, NOW_SECS)
            .template(&template)
            .flows(&template, &[flow(1, 1, 1)])
            .finish()
    };
    decode(
        &mut decoder,
        "192.0.2.2:2055",
        &[packet(0), packet(1), packet(3), packet(4), packet(2)],
    );
    decode(&mut decoder, "192.0.2.2:2055", &[packet(6), packet(7)]);
    decoder.flush_sequences();
    let c = counters(&decoder, "192.0.2.2", FlowProtocol::NetflowV9, 9);
    assert_eq!(
        (c.sequence_gaps, c.sequence_lost, c.sequence_late),
        (1, 1, 1)
    );

    // v5 counts flows: 30 flows a packet, the second packet lost.
    let flows: Vec<FlowRecord> = (0..90).map(|n| flow(n as u8, 1, 1)).collect();
    let mut packets = encode::v5_datagrams(&flows, 1_000, 50_000, NOW_SECS, 0, 0);
    packets.remove(1);
    decode(&mut decoder, "192.0.2.3:2055", &packets);
    decoder.flush_sequences();
    let c = counters(&decoder, "192.0.2.3", FlowProtocol::NetflowV5, 0);
    assert_eq!((c.sequence_gaps, c.sequence_lost, c.records), (1, 30, 60));
}

#[test]
fn truncated_datagrams_are_counted_as_decode_errors() {
    let mut exporter = IpfixExporter::new(2, 1);
    let ipfix = exporter
        .export(&[flow(1, 100, 1), flow(2, 200, 2)], NOW_SECS)
        .remove(0);
    let v5 = encode::v5_datagrams(&[flow(1, 100, 1)], 0, 1_000, NOW_SECS, 0, 0).remove(0);
    let template = ipv4_flow_template(256);
    let v9 = MessageBuilder::v9(4, 0, 1_000, NOW_SECS)
        .template(&template)
        .flows(&template, &[flow(1, 100, 1)])
        .finish();
    for (name, datagram) in [("ipfix", &ipfix), ("v5", &v5), ("v9", &v9)] {
        for cut in 0..datagram.len() {
            let mut decoder = NetflowDecoder::default();
            let mut batch = FlowBatch::default();
            let result = decoder.decode(
                source("192.0.2.1:9995"),
                NOW_MS,
                &datagram[..cut],
                &mut batch,
            );
            let errors: u64 = decoder
                .reports()
                .iter()
                .map(|r| r.counters.decode_errors)
                .sum();
            // Cutting a v9 packet at a set boundary leaves a valid, shorter
            // packet (v9 has no length field); every other cut is an error.
            let clean_v9_cut = name == "v9" && result.is_ok();
            if !clean_v9_cut {
                assert!(result.is_err(), "{name} cut at {cut} decoded without error");
                assert_eq!(errors, 1, "{name} cut at {cut}: one decode error");
            }
        }
    }
}

#[test]
fn ipfix_enterprise_and_variable_length_fields() {
    let template = aiwan_collectors::netflow::template::TemplateDefinition {
        id: 600,
        scope_fields: 0,
        options: false,
        v9_scope: false,
        fields: vec![
            aiwan_collectors::netflow::template::TemplateField {
                id: 1,
                enterprise: 29305,
                length: 4,
            },
            aiwan_collectors::netflow::template::TemplateField {
                id: 82,
                enterprise: 0,
                length: 65535,
            },
            aiwan_collectors::netflow::template::TemplateField {
                id: 1,
                enterprise: 0,
                length: 4,
            },
            aiwan_collectors::netflow::template::TemplateField {
                id: 8,
                enterprise: 0,
                length: 4,
            },
        ],
    };
    let mut body = Vec::new();
    body.extend([0xff; 4]); // enterprise field: not our octet count
    body.extend([4, b'e', b't', b'h', b'0']); // interfaceName, short form
    body.extend(1234u32.to_be_bytes());
    body.extend([10, 9, 8, 7]);
    body.extend([0; 4]); // second record: enterprise field
    body.push(0); // empty name
    body.extend(5u32.to_be_bytes());
    body.extend([10, 9, 8, 6]);
    let datagram = MessageBuilder::ipfix(1, 0, NOW_SECS)
        .template(&template)
        .raw_set(600, &body)
        .finish();
    let mut decoder = NetflowDecoder::default();
    let batch = decode(&mut decoder, "192.0.2.1:4739", &[datagram]);
    let got: Vec<(u64, u128)> = rows(&batch).iter().map(|r| (r.bytes, r.src_addr)).collect();
    assert_eq!(
        got,
        vec![
            (1234, ipv4_to_u128([10, 9, 8, 7])),
            (5, ipv4_to_u128([10, 9, 8, 6]))
        ]
    );
}

#[test]
fn template_withdrawal_stops_decoding() {
    let template = ipv4_flow_template(256);
    let mut decoder = NetflowDecoder::default();
    let setup = MessageBuilder::ipfix(1, 0, NOW_SECS)
        .template(&template)
        .finish();
    let withdraw = MessageBuilder::ipfix(1, 0, NOW_SECS)
        .withdraw(256, false)
        .finish();
    let data = MessageBuilder::ipfix(1, 0, NOW_SECS)
        .flows(&template, &[flow(1, 1, 1)])
        .finish();
    let batch = decode(&mut decoder, "192.0.2.1:4739", &[setup, withdraw, data]);
    assert!(batch.is_empty());
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 1);
    assert_eq!(c.template_misses, 1);
}

#[test]
fn templates_survive_a_restart_through_a_snapshot() {
    let mut exporter = IpfixExporter::new(3, 1_000);
    let first = exporter.export(&[flow(1, 10, 1)], NOW_SECS);
    let second = exporter.export(&[flow(2, 20, 2)], NOW_SECS);
    let mut decoder = NetflowDecoder::default();
    decode(&mut decoder, "192.0.2.1:4739", &first);
    assert!(decoder.take_dirty());
    assert!(!decoder.take_dirty());
    let snapshot = decoder.snapshot();
    let text = serde_json::to_string(&snapshot).expect("serialises");
    let restored: aiwan_collectors::netflow::TemplateSnapshot =
        serde_json::from_str(&text).expect("parses");
    let mut restarted = NetflowDecoder::default();
    assert_eq!(restarted.restore(&restored), 2);
    // The second message carries no template: only the restored ones.
    let batch = decode(&mut restarted, "192.0.2.1:4739", &second);
    assert_eq!(
        rows(&batch).iter().map(|r| r.bytes).collect::<Vec<_>>(),
        vec![20]
    );
}

#[test]
fn v5_records_decode_exactly() {
    let sent: Vec<FlowRecord> = (1..=45)
        .map(|n| flow(n, 100 + u64::from(n), u64::from(n)))
        .collect();
    let datagrams = encode::v5_datagrams(&sent, 77, 90_000, NOW_SECS, 0x0102, 0x4000 | 10);
    let mut decoder = NetflowDecoder::default();
    let batch = decode(&mut decoder, "192.0.2.4:2055", &datagrams);
    let got = rows(&batch);
    assert_eq!(got.len(), 45);
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(
            (
                g.src_addr, g.dst_addr, g.src_port, g.dst_port, g.protocol, g.tos, g.bytes,
                g.packets
            ),
            (
                s.src_addr, s.dst_addr, s.src_port, s.dst_port, s.protocol, s.tos, s.bytes,
                s.packets
            )
        );
        assert_eq!(g.sampling_rate, 10);
        assert_eq!(g.flow_end_ms, i64::from(NOW_SECS) * 1000);
    }
    let c = counters(&decoder, "192.0.2.4", FlowProtocol::NetflowV5, 0x0102);
    assert_eq!(c.bytes_scaled, c.bytes * 10);
}

#[test]
fn unknown_versions_and_garbage_are_counted_not_fatal() {
    let mut decoder = NetflowDecoder::default();
    let mut batch = FlowBatch::default();
    for datagram in [&[][..], &[0][..], &[0, 7, 1, 2, 3][..], &[0xff; 64][..]] {
        assert!(
            decoder
                .decode(source("192.0.2.1:2055"), NOW_MS, datagram, &mut batch)
                .is_err()
        );
    }
    let errors: u64 = decoder
        .reports()
        .iter()
        .map(|r| r.counters.decode_errors)
        .sum();
    assert_eq!(errors, 4);
}

/// Seeded random and mutated datagrams: the decoder returns, whatever the
/// bytes (the cargo-fuzz targets in collectors/fuzz go further).
#[test]
fn random_and_mutated_datagrams_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut exporter = IpfixExporter::new(1, 1);
    let records: Vec<FlowRecord> = (0..20).map(|n| flow(n, 1, 1)).collect();
    let template = ipv4_flow_template(256);
    let seeds = [
        exporter.export(&records, NOW_SECS).remove(0),
        MessageBuilder::v9(1, 0, 1, NOW_SECS)
            .template(&template)
            .flows(&template, &records)
            .finish(),
        encode::v5_datagrams(&records, 0, 1, NOW_SECS, 0, 0).remove(0),
    ];
    let mut decoder = NetflowDecoder::default();
    let mut batch = FlowBatch::default();
    for round in 0..20_000 {
        let mut datagram = seeds[round % seeds.len()].clone();
        for _ in 0..(next() % 8) {
            let at = (next() as usize) % datagram.len();
            datagram[at] = next() as u8;
        }
        if next() % 4 == 0 {
            datagram.truncate((next() as usize) % (datagram.len() + 1));
        }
        let _ = decoder.decode(source("192.0.2.1:2055"), NOW_MS, &datagram, &mut batch);
        batch.clear();
    }
    for _ in 0..5_000 {
        let length = (next() % 200) as usize;
        let datagram: Vec<u8> = (0..length).map(|_| next() as u8).collect();
        let _ = decoder.decode(source("192.0.2.1:2055"), NOW_MS, &datagram, &mut batch);
    }
}

/// A template flood from one sender: templates past the per-exporter and
/// collector-wide caps, and templates with too many fields, are refused
/// and counted; the exporter's first templates keep working.
#[test]
fn template_floods_are_capped_and_counted() {
    let options = NetflowOptions {
        max_templates_per_exporter: 8,
        max_templates_total: 12,
        max_template_fields: 16,
        ..NetflowOptions::default()
    };
    let mut decoder = NetflowDecoder::new(options);
    let flood = |domain: u32, first: u16, count: u16| -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                MessageBuilder::ipfix(domain, 0, NOW_SECS)
                    .template(&ipv4_flow_template(first + i))
                    .finish()
            })
            .collect()
    };
    decode(&mut decoder, "192.0.2.1:4739", &flood(1, 256, 20));
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 1);
    assert_eq!(c.decode_errors, 12, "20 templates, 8 kept");
    assert_eq!(decoder.template_count(), 8);
    // A second domain finds room for only 4 before the collector-wide cap.
    decode(&mut decoder, "192.0.2.1:4739", &flood(2, 256, 10));
    assert_eq!(decoder.template_count(), 12);
    assert_eq!(
        counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 2).decode_errors,
        6
    );
    // A template of 17 fields is refused whatever the room.
    let wide = data_template(300, &[(ie::OCTET_DELTA_COUNT, 8); 17]);
    let mut message = MessageBuilder::ipfix(3, 0, NOW_SECS);
    message.template(&wide);
    decode(&mut decoder, "192.0.2.1:4739", &[message.finish()]);
    let c = counters(&decoder, "192.0.2.1", FlowProtocol::Ipfix, 3);
    assert_eq!(c.decode_errors, 1);
    // The first templates still decode data.
    let data = MessageBuilder::ipfix(1, 0, NOW_SECS)
        .flows(&ipv4_flow_template(256), &[flow(1, 100, 1)])
        .finish();
    assert_eq!(decode(&mut decoder, "192.0.2.1:4739", &[data]).len(), 1);
    // Withdrawing a template makes room again.
    let mut withdraw = MessageBuilder::ipfix(1, 0, NOW_SECS);
    withdraw.withdraw(257, false);
    decode(&mut decoder, "192.0.2.1:4739", &[withdraw.finish()]);
    assert_eq!(decoder.template_count(), 11);
}

/// An exporter flood: past the cap new keys are dropped and counted; once
/// tracked exporters have been idle long enough, a new one takes the place
/// of the one idle longest.
#[test]
fn exporter_floods_are_capped_and_idle_exporters_make_room() {
    let options = NetflowOptions {
        max_exporters: 4,
        exporter_idle_ms: 60_000,
        ..NetflowOptions::default()
    };
    let mut decoder = NetflowDecoder::new(options);
    let message = |domain: u32| {
        MessageBuilder::ipfix(domain, 0, NOW_SECS)
            .template(&ipv4_flow_template(256))
            .flows(&ipv4_flow_template(256), &[flow(1, 100, 1)])
            .finish()
    };
    let mut batch = FlowBatch::default();
    for domain in 0..10 {
        let _ = decoder.decode(
            source("192.0.2.7:4739"),
            NOW_MS,
            &message(domain),
            &mut batch,
        );
    }
    assert_eq!(decoder.exporter_count(), 4);
    assert_eq!(decoder.rejected_datagrams(), 6);
    assert_eq!(batch.len(), 4);
    // Domain 0 keeps sending; the others go quiet. Two minutes later a new
    // exporter takes the place of one of the quiet ones, not domain 0's.
    let later = NOW_MS + 120_000;
    let _ = decoder.decode(
        source("192.0.2.7:4739"),
        later - 1_000,
        &message(0),
        &mut batch,
    );
    let _ = decoder.decode(source("198.51.100.1:4739"), later, &message(42), &mut batch);
    assert_eq!(decoder.evicted_exporters(), 1);
    assert_eq!(decoder.exporter_count(), 4);
    let keys: Vec<u32> = decoder.reports().iter().map(|r| r.key.domain).collect();
    assert!(keys.contains(&0) && keys.contains(&42), "{keys:?}");
}
