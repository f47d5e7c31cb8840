//! The demo's flow exporters: what a router's sampled NetFlow v9 or IPFIX
//! export puts on the wire. Each simulated router samples 1 packet in N of
//! the traffic entering the WAN through it, and every second exports one
//! record per flow with the sampled packets and bytes, with its sampling
//! rate announced in options data (system scope in v9, the observation
//! domain in IPFIX) as routers do, templates first and again every
//! [`TEMPLATE_EVERY`] messages (RFC 7011 10.3.6).
//!
//! The datagrams are real protocol messages, built with the collectors'
//! encoder; the collector decodes them as it decodes any router's.

use aiwan_collectors::netflow::encode::{
    MAX_DATAGRAM, MessageBuilder, ipv4_flow_template, options_template,
};
use aiwan_collectors::netflow::template::{TemplateDefinition, ie};
use aiwan_collectors::record::FlowRecord;

/// Messages between two copies of the templates.
pub const TEMPLATE_EVERY: u64 = 16;

const DATA_TEMPLATE: u16 = 256;
const OPTIONS_TEMPLATE: u16 = 257;
/// observationDomainId: the IPFIX options' scope.
const OBSERVATION_DOMAIN_ID: u16 = 149;
/// samplingAlgorithm: 2 is random 1-in-N.
const SAMPLING_ALGORITHM: u16 = 35;

/// Which protocol a router exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportProtocol {
    NetflowV9,
    Ipfix,
}

impl ExportProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportProtocol::NetflowV9 => "netflow-v9",
            ExportProtocol::Ipfix => "ipfix",
        }
    }
}

/// One router's exporting process.
#[derive(Debug, Clone)]
pub struct SampledExporter {
    pub protocol: ExportProtocol,
    /// v9 source id or IPFIX observation domain.
    pub domain: u32,
    pub sampling: u32,
    sequence: u32,
    messages: u64,
    /// When the router "booted" (v9 sysUptime is counted from it).
    boot_ms: i64,
    data: TemplateDefinition,
    options: TemplateDefinition,
}

impl SampledExporter {
    pub fn new(
        protocol: ExportProtocol,
        domain: u32,
        sampling: u32,
        boot_ms: i64,
    ) -> SampledExporter {
        let options = match protocol {
            // v9 scope type 1 is "system".
            ExportProtocol::NetflowV9 => options_template(
                OPTIONS_TEMPLATE,
                &[(1, 4)],
                &[(ie::SAMPLING_INTERVAL, 4), (SAMPLING_ALGORITHM, 1)],
                true,
            ),
            ExportProtocol::Ipfix => options_template(
                OPTIONS_TEMPLATE,
                &[(OBSERVATION_DOMAIN_ID, 4)],
                &[(ie::SAMPLING_INTERVAL, 4), (SAMPLING_ALGORITHM, 1)],
                false,
            ),
        };
        SampledExporter {
            protocol,
            domain,
            sampling: sampling.max(1),
            sequence: 0,
            messages: 0,
            boot_ms,
            data: ipv4_flow_template(DATA_TEMPLATE),
            options,
        }
    }

    fn message(&self, now_ms: i64) -> MessageBuilder {
        let export_secs = u32::try_from(now_ms.max(0) / 1000).unwrap_or(u32::MAX);
        match self.protocol {
            ExportProtocol::Ipfix => MessageBuilder::ipfix(self.domain, self.sequence, export_secs),
            ExportProtocol::NetflowV9 => {
                let uptime = u32::try_from((now_ms - self.boot_ms).max(0)).unwrap_or(u32::MAX);
                MessageBuilder::v9(self.domain, self.sequence, uptime, export_secs)
            }
        }
    }

    /// The datagrams carrying `records` (sampled counts already), exported
    /// at `now_ms`.
    pub fn export(&mut self, records: &[FlowRecord], now_ms: i64) -> Vec<Vec<u8>> {
        let per_record: usize = self
            .data
            .fields
            .iter()
            .map(|f| usize::from(f.length))
            .sum::<usize>()
            .max(1);
        let mut datagrams = Vec::new();
        let mut index = 0;
        loop {
            let mut message = self.message(now_ms);
            if self.messages.is_multiple_of(TEMPLATE_EVERY) {
                let scope = match self.protocol {
                    ExportProtocol::NetflowV9 => 0,
                    ExportProtocol::Ipfix => u64::from(self.domain),
                };
                message
                    .template(&self.data)
                    .template(&self.options)
                    .options_records(&self.options, &[vec![scope, u64::from(self.sampling), 2]]);
            }
            self.messages += 1;
            let header = match self.protocol {
                ExportProtocol::Ipfix => 16,
                ExportProtocol::NetflowV9 => 20,
            };
            let room = MAX_DATAGRAM.saturating_sub(header + message.sets_len() + 8) / per_record;
            let run = room.min(records.len() - index);
            if run > 0 {
                message.flows(&self.data, &records[index..index + run]);
            }
            index += run;
            // IPFIX counts data records, v9 export packets.
            self.sequence = match self.protocol {
                ExportProtocol::Ipfix => self.sequence.wrapping_add(run as u32),
                ExportProtocol::NetflowV9 => self.sequence.wrapping_add(1),
            };
            datagrams.push(message.finish());
            if index >= records.len() {
                break;
            }
        }
        datagrams
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiwan_collectors::netflow::NetflowDecoder;
    use aiwan_collectors::record::{FlowBatch, addr_to_u128};

    fn record(i: u64) -> FlowRecord {
        FlowRecord {
            received_ms: 0,
            flow_end_ms: 1_000_000,
            src_addr: addr_to_u128("10.1.1.7".parse().expect("address")),
            dst_addr: addr_to_u128("10.2.1.9".parse().expect("address")),
            src_port: 40_000 + i as u16,
            dst_port: 4791,
            protocol: 17,
            tos: 26 << 2,
            in_if: 1,
            out_if: 3,
            packets: 10 + i,
            bytes: 15_000 + 1_500 * i,
            sampling_rate: 1,
        }
    }

    #[test]
    fn the_collector_decodes_records_scaled_by_the_announced_rate() {
        for protocol in [ExportProtocol::NetflowV9, ExportProtocol::Ipfix] {
            let mut exporter = SampledExporter::new(protocol, 7, 1000, 0);
            let records: Vec<FlowRecord> = (0..100).map(record).collect();
            let datagrams = exporter.export(&records, 1_000_000);
            assert!(datagrams.len() > 1, "100 records do not fit one datagram");
            assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
            let mut decoder = NetflowDecoder::default();
            let mut batch = FlowBatch::default();
            for datagram in &datagrams {
                decoder
                    .decode(
                        "127.0.0.1:40000".parse().expect("address"),
                        1_000_100,
                        datagram,
                        &mut batch,
                    )
                    .expect("decodes");
            }
            assert_eq!(batch.len(), 100, "{protocol:?}");
            let (key, first) = batch.record(0).expect("row");
            assert_eq!(key.domain, 7);
            assert_eq!(
                (first.bytes, first.packets, first.sampling_rate),
                (15_000, 10, 1000)
            );
            assert_eq!(first.tos, 26 << 2);
            // The next second's export: no templates, same rate.
            let again = exporter.export(&records[..1], 1_001_000);
            let mut batch = FlowBatch::default();
            decoder
                .decode(
                    "127.0.0.1:40000".parse().expect("address"),
                    1_001_100,
                    &again[0],
                    &mut batch,
                )
                .expect("decodes");
            assert_eq!(batch.record(0).expect("row").1.sampling_rate, 1000);
        }
    }
}
