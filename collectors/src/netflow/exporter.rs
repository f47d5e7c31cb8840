//! What the collector remembers of one NetFlow v9 / IPFIX / v5 exporter
//! key: its templates, sampling rates, sequence numbers, counters, and the
//! data sets still waiting for their template.

use std::collections::{HashMap, VecDeque};

use super::template::{CompiledTemplate, Values};
use crate::record::FlowBatch;
use crate::sequence::SequenceTracker;
use crate::stats::ExporterCounters;

/// Where a message came from in time, for turning the exporter's relative
/// times into Unix time.
#[derive(Debug, Clone, Copy)]
pub struct MessageContext {
    pub received_ms: i64,
    /// The export time in the message header (Unix ms).
    pub export_unix_ms: i64,
    /// NetFlow v9's sysUptime at export (ms); IPFIX has none.
    pub sys_uptime_ms: Option<u32>,
}

/// A data set that came before its template.
#[derive(Debug, Clone)]
pub struct PendingSet {
    pub template_id: u16,
    pub context: MessageContext,
    pub body: Vec<u8>,
}

/// Samplers (selector ids) one exporter may announce; rates of further ones
/// are ignored (their data is scaled by the exporter's default rate).
pub const MAX_SAMPLERS: usize = 1024;

/// Sampling rates an exporter announced in options data.
#[derive(Debug, Clone, Default)]
pub struct Sampling {
    /// The rate of options records without a sampler id (system-wide).
    pub default_rate: Option<u32>,
    /// Rates by sampler / selector id.
    pub by_sampler: HashMap<u64, u32>,
}

#[derive(Debug, Clone, Default)]
pub struct ExporterState {
    pub counters: ExporterCounters,
    pub last_error: Option<String>,
    pub templates: HashMap<u16, CompiledTemplate>,
    pub sampling: Sampling,
    /// IPFIX systemInitTimeMilliseconds, for flowEndSysUpTime.
    pub system_init_ms: Option<i64>,
    pub sequence: SequenceTracker,
    pub pending: VecDeque<PendingSet>,
    pub pending_bytes: usize,
    /// When the exporter last sent anything (Unix ms, receive time).
    pub last_seen_ms: i64,
}

/// What decoding a data set changed besides the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOutcome {
    /// Data records in the set (flow and options), for IPFIX sequences.
    pub records: usize,
    /// Whether sampling state changed (worth persisting).
    pub sampling_changed: bool,
}

impl ExporterState {
    /// Decodes one data set with the template it names, writing flow
    /// records into `batch` under dictionary index `exporter`. `Err` is the
    /// offset of the record that ran past the set.
    pub fn decode_data_set(
        &mut self,
        template_id: u16,
        body: &[u8],
        context: &MessageContext,
        exporter: u32,
        batch: &mut FlowBatch,
    ) -> Option<Result<SetOutcome, usize>> {
        let ExporterState {
            counters,
            templates,
            sampling,
            system_init_ms,
            ..
        } = self;
        let template = templates.get(&template_id)?;
        if template.is_options() {
            let mut sampling_changed = false;
            let result = template.for_each_record(body, |values| {
                if let Some(init) = values.system_init_ms {
                    *system_init_ms = Some(init);
                }
                if let Some(rate) = values.sampling_rate() {
                    let previous = match values.sampler_id {
                        // Sampler ids come from the datagram: bounded.
                        Some(id)
                            if !sampling.by_sampler.contains_key(&id)
                                && sampling.by_sampler.len() >= MAX_SAMPLERS =>
                        {
                            Some(rate)
                        }
                        Some(id) => sampling.by_sampler.insert(id, rate),
                        None => sampling.default_rate.replace(rate),
                    };
                    sampling_changed |= previous != Some(rate);
                }
            });
            return Some(result.map(|records| SetOutcome {
                records,
                sampling_changed,
            }));
        }
        let has_sampling = template.has_sampling();
        let result = template.for_each_record(body, |values| {
            let rate = record_sampling_rate(values, has_sampling, sampling);
            let (packets, bytes) = values.counts();
            let flow_end_ms = flow_end_ms(values, context, *system_init_ms);
            counters.count_record(packets, bytes, rate);
            let record = &values.record;
            batch.exporter.push(exporter);
            batch.received_ms.push(context.received_ms);
            batch.flow_end_ms.push(flow_end_ms);
            batch.src_addr.push(record.src_addr);
            batch.dst_addr.push(record.dst_addr);
            batch.src_port.push(record.src_port);
            batch.dst_port.push(record.dst_port);
            batch.protocol.push(record.protocol);
            batch.tos.push(values.tos());
            batch.in_if.push(record.in_if);
            batch.out_if.push(record.out_if);
            batch.packets.push(packets);
            batch.bytes.push(bytes);
            batch.sampling_rate.push(rate);
        });
        Some(result.map(|records| SetOutcome {
            records,
            sampling_changed: false,
        }))
    }

    /// Keeps a data set until its template comes, within `max_bytes` for
    /// this exporter: the oldest sets make room and count as dropped.
    pub fn hold(&mut self, set: PendingSet, max_bytes: usize) {
        if set.body.len() > max_bytes {
            self.counters.pending_dropped += 1;
            return;
        }
        while self.pending_bytes + set.body.len() > max_bytes {
            match self.pending.pop_front() {
                Some(old) => {
                    self.pending_bytes -= old.body.len();
                    self.counters.pending_dropped += 1;
                }
                None => break,
            }
        }
        self.pending_bytes += set.body.len();
        self.pending.push_back(set);
    }

    /// Drops held sets received before `oldest_ms`.
    pub fn expire_pending(&mut self, oldest_ms: i64) {
        while let Some(front) = self.pending.front() {
            if front.context.received_ms >= oldest_ms {
                break;
            }
            if let Some(old) = self.pending.pop_front() {
                self.pending_bytes -= old.body.len();
                self.counters.pending_dropped += 1;
            }
        }
    }

    /// Takes out the held sets whose template is now known.
    pub fn take_ready(&mut self) -> Vec<PendingSet> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let mut ready = Vec::new();
        let mut waiting = VecDeque::with_capacity(self.pending.len());
        for set in self.pending.drain(..) {
            if self.templates.contains_key(&set.template_id) {
                ready.push(set);
            } else {
                waiting.push_back(set);
            }
        }
        self.pending = waiting;
        self.pending_bytes = self.pending.iter().map(|set| set.body.len()).sum();
        ready
    }
}

/// A record's rate: its own sampling fields, else its sampler's announced
/// rate, else the exporter's system-wide rate, else 1 (unsampled).
fn record_sampling_rate(values: &Values, has_sampling: bool, sampling: &Sampling) -> u32 {
    if has_sampling {
        if let Some(rate) = values.sampling_rate() {
            return rate;
        }
        if let Some(rate) = values
            .sampler_id
            .and_then(|id| sampling.by_sampler.get(&id))
        {
            return *rate;
        }
    }
    sampling.default_rate.unwrap_or(1)
}

/// The flow's end in Unix ms: absolute when the record says so, else from
/// uptime (v9: relative to the header's sysUptime at export; IPFIX:
/// relative to systemInitTimeMilliseconds); 0 when it cannot be known.
fn flow_end_ms(values: &Values, context: &MessageContext, system_init_ms: Option<i64>) -> i64 {
    if let Some(end) = values.end_unix_ms {
        return end;
    }
    let Some(end_uptime) = values.end_sys_uptime_ms else {
        return 0;
    };
    if let Some(export_uptime) = context.sys_uptime_ms {
        // Wrapping: uptime counters roll over after 49.7 days.
        let before_export = export_uptime.wrapping_sub(end_uptime);
        return context.export_unix_ms - i64::from(before_export);
    }
    match values.system_init_ms.or(system_init_ms) {
        Some(init) => init.saturating_add(i64::from(end_uptime)),
        None => 0,
    }
}
