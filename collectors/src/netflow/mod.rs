//! NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) decoding.
//!
//! Our own decoder rather than the `netflow_parser` crate, which decodes
//! every capture we tried and is the oracle our tests compare against
//! (`tests/` in this crate), because the collector needs what it does not
//! give: records decoded straight into the store's columns through
//! templates compiled to field offsets (it builds a vector of field values
//! per record, several times too slow for 2 million records a second on one
//! core), data sets held until their template arrives, templates and
//! sampling rates that can be saved and restored across a restart, and
//! sequence accounting per exporter key.
//!
//! The decoder is sans-I/O: bytes, source and receive time in; records in a
//! [`FlowBatch`] and counters out. One decoder per listener shard, so no
//! lock is taken on the hot path.

pub mod encode;
mod exporter;
mod ipfix;
pub mod template;
mod v5;
mod v9;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use self::exporter::{ExporterState, MessageContext, PendingSet};
use self::template::{CompiledTemplate, TemplateDefinition};
use crate::error::DecodeError;
use crate::record::{ExporterKey, FlowBatch, FlowProtocol};
use crate::stats::ExporterReport;

/// How the decoder keys exporters and bounds what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetflowOptions {
    /// Add the UDP source port to the exporter key (several exporters
    /// behind one NAT address, each with its own templates).
    pub key_by_source_port: bool,
    /// Bytes of data sets held per exporter while their template is
    /// missing.
    pub pending_max_bytes: usize,
    /// How long a held data set waits for its template.
    pub pending_max_age_ms: i64,
    /// Exporter keys tracked at most. A new key past it takes the place of
    /// the one idle longest, if that one has been idle [`Self::exporter_idle_ms`]
    /// (counted in [`NetflowDecoder::evicted_exporters`]); otherwise its
    /// datagram is dropped and counted in
    /// [`NetflowDecoder::rejected_datagrams`], so a flood of spoofed
    /// sources cannot exhaust memory nor lock out real exporters for good.
    pub max_exporters: usize,
    /// How long an exporter must have sent nothing before a new one may
    /// take its place.
    pub exporter_idle_ms: i64,
    /// Templates one exporter key may hold, and all exporters together;
    /// fields one template may have. Templates past these are refused,
    /// counted as decode errors naming the limit.
    pub max_templates_per_exporter: usize,
    pub max_templates_total: usize,
    pub max_template_fields: usize,
    /// Bytes of held data sets of all exporters together: each exporter
    /// holds at most its share of it (and at most `pending_max_bytes`).
    pub pending_max_total_bytes: usize,
    /// Decode every record through the generic walk over its template's
    /// fields, not through the reader compiled for fixed layouts: the
    /// reference the compiled readers are tested against.
    pub generic_records_only: bool,
}

impl Default for NetflowOptions {
    fn default() -> NetflowOptions {
        NetflowOptions {
            key_by_source_port: false,
            pending_max_bytes: 1 << 20,
            pending_max_age_ms: 120_000,
            max_exporters: 10_000,
            exporter_idle_ms: 600_000,
            max_templates_per_exporter: 256,
            max_templates_total: 20_000,
            max_template_fields: 128,
            pending_max_total_bytes: 32 << 20,
            generic_records_only: false,
        }
    }
}

/// `definition` compiled for decoding under `options`.
fn compile_template(
    definition: TemplateDefinition,
    options: &NetflowOptions,
) -> Result<CompiledTemplate, template::TemplateProblem> {
    let template = CompiledTemplate::compile(definition)?;
    Ok(if options.generic_records_only {
        template.generic()
    } else {
        template
    })
}

/// The state of the NetFlow/IPFIX collector of one shard.
#[derive(Debug, Default, Clone)]
pub struct NetflowDecoder {
    options: NetflowOptions,
    exporters: HashMap<ExporterKey, ExporterState>,
    /// Templates or sampling rates changed since [`Self::take_dirty`].
    dirty: bool,
    rejected_datagrams: u64,
    evicted_exporters: u64,
    /// Templates held by all exporters.
    template_total: usize,
}

/// Templates and sampling rates of every exporter key, as saved in the data
/// directory so that a restarted collector decodes data at once instead of
/// waiting (up to 30 minutes on some routers) for templates to be resent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSnapshot {
    pub exporters: Vec<ExporterTemplates>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterTemplates {
    pub key: ExporterKey,
    pub templates: Vec<TemplateDefinition>,
    #[serde(default)]
    pub default_sampling_rate: Option<u32>,
    #[serde(default)]
    pub sampler_rates: Vec<(u64, u32)>,
    #[serde(default)]
    pub system_init_ms: Option<i64>,
}

impl NetflowDecoder {
    pub fn new(options: NetflowOptions) -> NetflowDecoder {
        NetflowDecoder {
            options,
            ..NetflowDecoder::default()
        }
    }

    /// Decodes one UDP datagram from `source`, received at `received_ms`
    /// (Unix ms), appending its flow records to `batch`. An error means part
    /// or all of the datagram was dropped; it has been counted against the
    /// exporter already and is returned for the caller to log.
    pub fn decode(
        &mut self,
        source: SocketAddr,
        received_ms: i64,
        datagram: &[u8],
        batch: &mut FlowBatch,
    ) -> Result<(), DecodeError> {
        match wire::u16_at(datagram, 0) {
            Some(5) => v5::decode(self, source, received_ms, datagram, batch),
            Some(9) => v9::decode(self, source, received_ms, datagram, batch),
            Some(10) => ipfix::decode(self, source, received_ms, datagram, batch),
            None => {
                let key = self.key(source, FlowProtocol::Unknown, 0);
                let error = DecodeError::truncated("datagram header", 2, datagram.len());
                self.reject(key, error)
            }
            Some(version) => {
                let key = self.key(source, FlowProtocol::Unknown, 0);
                let error = DecodeError::UnsupportedVersion {
                    version: u32::from(version),
                    expected: "5, 9 or 10",
                };
                self.reject(key, error)
            }
        }
    }

    /// Counts a datagram that could not be decoded at all against `key`.
    fn reject(&mut self, key: ExporterKey, error: DecodeError) -> Result<(), DecodeError> {
        if let Some(state) = self.state(key) {
            state.counters.datagrams += 1;
            record_error(state, &error);
        }
        Err(error)
    }

    /// Datagrams dropped because [`NetflowOptions::max_exporters`] keys
    /// were already tracked, none of them idle.
    pub fn rejected_datagrams(&self) -> u64 {
        self.rejected_datagrams
    }

    /// Exporter keys forgotten to make room for new ones.
    pub fn evicted_exporters(&self) -> u64 {
        self.evicted_exporters
    }

    /// Exporter keys tracked now.
    pub fn exporter_count(&self) -> usize {
        self.exporters.len()
    }

    /// Templates held now, all exporters together.
    pub fn template_count(&self) -> usize {
        self.template_total
    }

    /// Counters of every exporter key seen.
    pub fn reports(&self) -> Vec<ExporterReport> {
        let mut reports: Vec<ExporterReport> = self
            .exporters
            .iter()
            .map(|(key, state)| ExporterReport {
                key: *key,
                counters: state.counters,
                last_error: state.last_error.clone(),
            })
            .collect();
        reports.sort_by_key(|report| report.key);
        reports
    }

    /// Counts every still-pending sequence gap (at the end of a run).
    pub fn flush_sequences(&mut self) {
        for state in self.exporters.values_mut() {
            state.sequence.flush();
            sync_sequence_counters(state);
        }
    }

    /// True once after templates or sampling rates changed.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Templates and sampling rates of every exporter, to persist.
    pub fn snapshot(&self) -> TemplateSnapshot {
        let mut exporters: Vec<ExporterTemplates> = self
            .exporters
            .iter()
            .filter(|(_, state)| {
                !state.templates.is_empty()
                    || state.sampling.default_rate.is_some()
                    || !state.sampling.by_sampler.is_empty()
            })
            .map(|(key, state)| {
                let mut templates: Vec<TemplateDefinition> = state
                    .templates
                    .values()
                    .map(|template| template.definition.clone())
                    .collect();
                templates.sort_by_key(|template| template.id);
                let mut sampler_rates: Vec<(u64, u32)> = state
                    .sampling
                    .by_sampler
                    .iter()
                    .map(|(id, rate)| (*id, *rate))
                    .collect();
                sampler_rates.sort_unstable();
                ExporterTemplates {
                    key: *key,
                    templates,
                    default_sampling_rate: state.sampling.default_rate,
                    sampler_rates,
                    system_init_ms: state.system_init_ms,
                }
            })
            .collect();
        exporters.sort_by_key(|exporter| exporter.key);
        TemplateSnapshot { exporters }
    }

    /// A copy of this decoder, in the same state, that decodes every
    /// record through the generic walk (as with
    /// [`NetflowOptions::generic_records_only`]): what tests compare the
    /// compiled readers against, datagram by datagram.
    pub fn generic_copy(&self) -> NetflowDecoder {
        let mut copy = self.clone();
        copy.options.generic_records_only = true;
        for state in copy.exporters.values_mut() {
            for template in state.templates.values_mut() {
                *template = template.clone().generic();
            }
        }
        copy
    }

    /// Loads saved templates and sampling rates. Templates that no longer
    /// compile are skipped; returns how many were restored.
    pub fn restore(&mut self, snapshot: &TemplateSnapshot) -> usize {
        let mut restored = 0;
        let limits = self.options;
        for saved in &snapshot.exporters {
            let mut total = self.template_total;
            let Some(state) = self.state(saved.key) else {
                break;
            };
            for definition in &saved.templates {
                if definition.fields.len() > limits.max_template_fields
                    || state.templates.len() >= limits.max_templates_per_exporter
                    || total >= limits.max_templates_total
                {
                    continue;
                }
                if let Ok(template) = compile_template(definition.clone(), &limits)
                    && state.templates.insert(definition.id, template).is_none()
                {
                    total += 1;
                    restored += 1;
                }
            }
            if saved.default_sampling_rate.is_some() {
                state.sampling.default_rate = saved.default_sampling_rate;
            }
            state
                .sampling
                .by_sampler
                .extend(saved.sampler_rates.iter().copied());
            if saved.system_init_ms.is_some() {
                state.system_init_ms = saved.system_init_ms;
            }
            self.template_total = total;
        }
        restored
    }

    fn key(&self, source: SocketAddr, protocol: FlowProtocol, domain: u32) -> ExporterKey {
        ExporterKey {
            address: source.ip().to_canonical(),
            port: if self.options.key_by_source_port {
                source.port()
            } else {
                0
            },
            protocol,
            domain,
        }
    }

    /// The state of `key`, created if there is room (making room by
    /// forgetting the exporter idle longest, if it has been idle long
    /// enough).
    fn state(&mut self, key: ExporterKey) -> Option<&mut ExporterState> {
        self.state_at(key, None)
    }

    fn state_at(&mut self, key: ExporterKey, now_ms: Option<i64>) -> Option<&mut ExporterState> {
        if !self.exporters.contains_key(&key) && self.exporters.len() >= self.options.max_exporters
        {
            let idle = now_ms.and_then(|now| {
                self.exporters
                    .iter()
                    .filter(|(_, s)| now - s.last_seen_ms >= self.options.exporter_idle_ms)
                    .min_by_key(|(_, s)| s.last_seen_ms)
                    .map(|(k, _)| *k)
            });
            match idle {
                Some(old) => {
                    if let Some(state) = self.exporters.remove(&old) {
                        self.template_total =
                            self.template_total.saturating_sub(state.templates.len());
                    }
                    self.evicted_exporters += 1;
                    self.dirty = true;
                }
                None => {
                    self.rejected_datagrams += 1;
                    return None;
                }
            }
        }
        let state = self.exporters.entry(key).or_default();
        if let Some(now) = now_ms {
            state.last_seen_ms = state.last_seen_ms.max(now);
        }
        Some(state)
    }
}

/// Copies the sequence tracker's totals into the exporter's counters.
fn sync_sequence_counters(state: &mut ExporterState) {
    state.counters.sequence_gaps = state.sequence.gaps;
    state.counters.sequence_lost = state.sequence.lost;
    state.counters.sequence_late = state.sequence.reordered;
    state.counters.sequence_resets = state.sequence.resets;
}

/// Records `error` against an exporter: counted, and kept as its last.
fn record_error(state: &mut ExporterState, error: &DecodeError) {
    state.counters.decode_errors += 1;
    state.last_error = Some(error.to_string());
}

/// The sets of a v9 or IPFIX message after its header: shared walk over
/// `(set id, body)` pairs, templates first-class, data sets decoded or held.
struct SetWalk<'a> {
    key: ExporterKey,
    exporter: u32,
    context: MessageContext,
    sets: &'a [u8],
}

/// The two template-based protocols differ only in their template sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V9,
    Ipfix,
}

impl Flavor {
    fn template_set(self, id: u16) -> bool {
        match self {
            Flavor::V9 => id == 0,
            Flavor::Ipfix => id == 2,
        }
    }

    fn options_template_set(self, id: u16) -> bool {
        match self {
            Flavor::V9 => id == 1,
            Flavor::Ipfix => id == 3,
        }
    }
}

/// What walking a message's sets gave besides records.
struct WalkOutcome {
    /// Data records (flow and options) in the message when every data set
    /// could be counted, for IPFIX sequence numbers; `None` when a set
    /// waited for its template or was broken.
    records: Option<u64>,
    /// The first problem met; each was counted against the exporter.
    error: Option<DecodeError>,
}

/// Counts `error` against the exporter and keeps the first of a message.
fn note(state: &mut ExporterState, first: &mut Option<DecodeError>, error: DecodeError) {
    record_error(state, &error);
    first.get_or_insert(error);
}

/// Walks the sets of one message: templates are learnt, data sets decoded
/// or held for their template, and held sets decoded once it arrives.
fn walk_sets(
    decoder: &mut NetflowDecoder,
    flavor: Flavor,
    walk: SetWalk<'_>,
    batch: &mut FlowBatch,
) -> WalkOutcome {
    let limits = decoder.options;
    // Each exporter's share of the held bytes all may hold.
    let max_pending = limits
        .pending_max_bytes
        .min(limits.pending_max_total_bytes / decoder.exporters.len().max(1));
    let oldest = walk.context.received_ms - limits.pending_max_age_ms;
    let mut outcome = WalkOutcome {
        records: Some(0),
        error: None,
    };
    let NetflowDecoder {
        exporters,
        template_total,
        ..
    } = decoder;
    let Some(state) = exporters.get_mut(&walk.key) else {
        outcome.records = None;
        return outcome;
    };
    state.last_seen_ms = state.last_seen_ms.max(walk.context.received_ms);
    state.expire_pending(oldest);
    let mut dirty = false;
    let mut templates_changed = false;
    let sets = walk.sets;
    let mut at = 0usize;
    while sets.len() - at >= 4 {
        let (Some(set_id), Some(length)) = (wire::u16_at(sets, at), wire::u16_at(sets, at + 2))
        else {
            break;
        };
        let length = usize::from(length);
        if length < 4 {
            let detail = format!("set {set_id} claims {length} bytes, less than its header");
            note(
                state,
                &mut outcome.error,
                DecodeError::invalid("set length", detail),
            );
            outcome.records = None;
            break;
        }
        let Some(body) = sets.get(at + 4..at + length) else {
            let error = DecodeError::truncated("set", length, sets.len() - at);
            note(state, &mut outcome.error, error);
            outcome.records = None;
            break;
        };
        at += length;
        if flavor.template_set(set_id) || flavor.options_template_set(set_id) {
            let options = flavor.options_template_set(set_id);
            let parsed = match flavor {
                Flavor::V9 => v9::parse_templates(body, options),
                Flavor::Ipfix => ipfix::parse_templates(body, options),
            };
            for item in parsed.items {
                state.counters.templates += 1;
                match item {
                    TemplateItem::Define(definition) => {
                        let id = definition.id;
                        let unchanged = state
                            .templates
                            .get(&id)
                            .is_some_and(|old| old.definition == definition);
                        if unchanged {
                            continue;
                        }
                        let new = !state.templates.contains_key(&id);
                        let refused = if definition.fields.len() > limits.max_template_fields {
                            Some(format!(
                                "{} fields, more than the {} a template may have",
                                definition.fields.len(),
                                limits.max_template_fields
                            ))
                        } else if new && state.templates.len() >= limits.max_templates_per_exporter
                        {
                            Some(format!(
                                "the exporter holds {} templates already, the most one may",
                                limits.max_templates_per_exporter
                            ))
                        } else if new && *template_total >= limits.max_templates_total {
                            Some(format!(
                                "the collector holds {} templates already, the most it keeps",
                                limits.max_templates_total
                            ))
                        } else {
                            None
                        };
                        if let Some(reason) = refused {
                            let error = DecodeError::invalid(
                                "template",
                                format!("template {id} refused: {reason}"),
                            );
                            note(state, &mut outcome.error, error);
                            continue;
                        }
                        match compile_template(definition, &limits) {
                            Ok(template) => {
                                if state.templates.insert(id, template).is_none() {
                                    *template_total += 1;
                                }
                                templates_changed = true;
                                dirty = true;
                            }
                            Err(problem) => {
                                let error = DecodeError::invalid(
                                    "template",
                                    format!("template {id}: {problem}"),
                                );
                                note(state, &mut outcome.error, error);
                            }
                        }
                    }
                    TemplateItem::Withdraw(id) => {
                        if state.templates.remove(&id).is_some() {
                            *template_total = template_total.saturating_sub(1);
                            dirty = true;
                        }
                    }
                    TemplateItem::WithdrawAll { options } => {
                        let before = state.templates.len();
                        state
                            .templates
                            .retain(|_, template| template.is_options() != options);
                        *template_total =
                            template_total.saturating_sub(before - state.templates.len());
                        dirty |= state.templates.len() != before;
                    }
                }
            }
            if let Some(error) = parsed.error {
                note(state, &mut outcome.error, error);
            }
        } else if set_id >= 256 {
            match state.decode_data_set(set_id, body, &walk.context, walk.exporter, batch) {
                Some(Ok(set)) => {
                    dirty |= set.sampling_changed;
                    outcome.records = outcome.records.map(|r| r + set.records as u64);
                }
                Some(Err(_)) => {
                    let detail = format!("a record of template {set_id} runs past the set's end");
                    note(
                        state,
                        &mut outcome.error,
                        DecodeError::invalid("data set", detail),
                    );
                    outcome.records = None;
                }
                None => {
                    state.counters.template_misses += 1;
                    outcome.records = None;
                    let pending = PendingSet {
                        template_id: set_id,
                        context: walk.context,
                        body: body.to_vec(),
                    };
                    state.hold(pending, max_pending);
                }
            }
        }
        // Other set ids are reserved (v9 2..=255, IPFIX 0, 1, 4..=255):
        // skipped, as both RFCs ask.
    }
    if templates_changed {
        for pending in state.take_ready() {
            let id = pending.template_id;
            let decoded =
                state.decode_data_set(id, &pending.body, &pending.context, walk.exporter, batch);
            if let Some(Err(_)) = decoded {
                let detail = format!("a held record of template {id} runs past the set's end");
                note(
                    state,
                    &mut outcome.error,
                    DecodeError::invalid("data set", detail),
                );
            }
        }
    }
    decoder.dirty |= dirty;
    outcome
}

/// What a template set holds.
enum TemplateItem {
    Define(TemplateDefinition),
    Withdraw(u16),
    WithdrawAll { options: bool },
}

struct ParsedTemplates {
    items: Vec<TemplateItem>,
    /// What stopped the parse early, if anything; the items before it stand.
    error: Option<DecodeError>,
}

fn too_many_exporters(limit: usize) -> DecodeError {
    DecodeError::invalid(
        "exporter",
        format!("{limit} exporter keys are tracked already; datagram from a new one dropped"),
    )
}
