//! Per-exporter counters, as `aiwan collect` prints them and the
//! controller exports them to Prometheus.

use serde::Serialize;

use crate::record::ExporterKey;

/// What one exporter key has sent so far. Every field only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExporterCounters {
    /// UDP datagrams (or sFlow datagrams) received from this exporter.
    pub datagrams: u64,
    /// Flow records decoded (not template or options records).
    pub records: u64,
    /// Packets and bytes as carried in the records.
    pub packets: u64,
    pub bytes: u64,
    /// The same after sampling: multiplied by each record's sampling rate.
    pub packets_scaled: u64,
    pub bytes_scaled: u64,
    /// sFlow interface counter records.
    pub counter_samples: u64,
    /// Datagrams, sets or records that could not be decoded.
    pub decode_errors: u64,
    /// Data sets that arrived before their template (decoded later if the
    /// template comes while they are still buffered).
    pub template_misses: u64,
    /// Buffered data sets dropped without their template arriving (buffer
    /// full or too old).
    pub pending_dropped: u64,
    /// Template and options template records received.
    pub templates: u64,
    /// Gaps in the exporter's sequence numbers, each counted once, and the
    /// units they held (v5 flows, v9 packets, IPFIX records, sFlow
    /// datagrams).
    pub sequence_gaps: u64,
    pub sequence_lost: u64,
    /// Datagrams behind the expected sequence value (reordered, duplicated).
    pub sequence_late: u64,
    /// Times the exporter's sequence restarted.
    pub sequence_resets: u64,
}

impl ExporterCounters {
    /// Counts one flow record. Saturating: a hostile exporter can claim
    /// 2^64 bytes, and a counter stuck at the top is better than a wrap.
    pub fn count_record(&mut self, packets: u64, bytes: u64, sampling_rate: u32) {
        let rate = u64::from(sampling_rate);
        self.records = self.records.saturating_add(1);
        self.packets = self.packets.saturating_add(packets);
        self.bytes = self.bytes.saturating_add(bytes);
        self.packets_scaled = self
            .packets_scaled
            .saturating_add(packets.saturating_mul(rate));
        self.bytes_scaled = self.bytes_scaled.saturating_add(bytes.saturating_mul(rate));
    }

    pub fn add(&mut self, other: &ExporterCounters) {
        self.datagrams = self.datagrams.saturating_add(other.datagrams);
        self.records = self.records.saturating_add(other.records);
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.packets_scaled = self.packets_scaled.saturating_add(other.packets_scaled);
        self.bytes_scaled = self.bytes_scaled.saturating_add(other.bytes_scaled);
        self.counter_samples = self.counter_samples.saturating_add(other.counter_samples);
        self.decode_errors = self.decode_errors.saturating_add(other.decode_errors);
        self.template_misses = self.template_misses.saturating_add(other.template_misses);
        self.pending_dropped = self.pending_dropped.saturating_add(other.pending_dropped);
        self.templates = self.templates.saturating_add(other.templates);
        self.sequence_gaps = self.sequence_gaps.saturating_add(other.sequence_gaps);
        self.sequence_lost = self.sequence_lost.saturating_add(other.sequence_lost);
        self.sequence_late = self.sequence_late.saturating_add(other.sequence_late);
        self.sequence_resets = self.sequence_resets.saturating_add(other.sequence_resets);
    }
}

/// One exporter's counters and the last decode error it caused, for the
/// summary and for operators chasing a broken exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterReport {
    pub key: ExporterKey,
    pub counters: ExporterCounters,
    pub last_error: Option<String>,
}
