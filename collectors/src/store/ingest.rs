//! The hot path: flow records into open 1 s buckets.
//!
//! Each open bucket is a plain Rust hash map from a compact flow key to its
//! sums. That is what the store's per-record budget (well under 200 ns on
//! one core) allows: building a Polars frame per batch and grouping it
//! costs far more per record than one hash-map update, and the map already
//! is the 1 s aggregate. Polars takes over when a bucket closes (one row
//! per distinct key, not per record): see `frames` and `rollup`.
//!
//! The key holds only what a record carries (exporter, interfaces,
//! addresses, ports, protocol, DSCP). Class, sites and prefixes are
//! functions of those and are looked up once per distinct key at close.
//!
//! Late records: a record whose 1 s bucket has already closed is counted
//! in `late_records` and added to the oldest bucket still open (the one
//! starting at the close boundary), so its bytes are never lost and the
//! closed buckets, and everything rolled up from them, never change.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::record::{ExporterKey, FlowBatch};

use super::error::StoreError;

/// The bucket width of the raw window.
pub(crate) const FINE_BUCKET_MS: i64 = 1000;

/// The start of the bucket of width `width_ms` holding `time_ms`.
pub(crate) fn bucket_start(time_ms: i64, width_ms: i64) -> i64 {
    time_ms.div_euclid(width_ms).saturating_mul(width_ms)
}

/// The store's exporters, numbered in arrival order, with their address as
/// text (what the tables hold).
#[derive(Debug, Default)]
pub(crate) struct Exporters {
    keys: Vec<ExporterKey>,
    address_texts: Vec<String>,
    ids: HashMap<ExporterKey, u32>,
}

impl Exporters {
    pub fn id_of(&mut self, key: &ExporterKey) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(*key);
        self.address_texts.push(key.address.to_string());
        self.ids.insert(*key, id);
        id
    }

    pub fn address_text(&self, id: u32) -> &str {
        self.address_texts
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn domain(&self, id: u32) -> u32 {
        self.keys.get(id as usize).map_or(0, |key| key.domain)
    }
}

/// What one 1 s bucket aggregates by: everything a record carries that
/// the tables keep.
///
/// Packed to 8-byte alignment: the `u128` addresses would otherwise align
/// the key to 16 and a map entry (key and sums) to 96 bytes instead of 80.
/// The open bucket map is the store's largest random-access working set,
/// so its entry size is what the per-record cost follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(8))]
pub(crate) struct FlowKey {
    pub src_addr: u128,
    pub dst_addr: u128,
    pub exporter: u32,
    pub in_if: u32,
    pub out_if: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub dscp: u8,
}

impl FlowKey {
    /// The key's 64-bit hash: four independent folded multiplies over its
    /// seven words (the construction of foldhash), so the hash costs a few
    /// nanoseconds and spreads well over every bit hashbrown uses.
    fn fingerprint(&self) -> u64 {
        const SEEDS: [u64; 5] = [
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7344,
            0xa409_3822_299f_31d0,
            0x082e_fa98_ec4e_6c89,
            0x4528_21e6_38d0_1377,
        ];
        let ports = (u64::from(self.src_port) << 16) | u64::from(self.dst_port);
        let small = (u64::from(self.protocol) << 8) | u64::from(self.dscp);
        let a = folded_multiply(
            self.src_addr as u64 ^ SEEDS[0],
            (self.src_addr >> 64) as u64 ^ SEEDS[1],
        );
        let b = folded_multiply(
            self.dst_addr as u64 ^ SEEDS[2],
            (self.dst_addr >> 64) as u64 ^ SEEDS[3],
        );
        let c = folded_multiply(
            ((u64::from(self.exporter) << 32) | u64::from(self.in_if)) ^ SEEDS[1],
            ((u64::from(self.out_if) << 32) | ports) ^ SEEDS[2],
        );
        let d = folded_multiply(small ^ SEEDS[3], SEEDS[4]);
        folded_multiply(a ^ c, b ^ d ^ SEEDS[0])
    }
}

fn folded_multiply(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    (full as u64) ^ ((full >> 64) as u64)
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint());
    }
}

/// A fast hasher for fixed-size keys: flow keys, which hash themselves to
/// one finished `u64` (see [`FlowKey::fingerprint`]), and addresses. Not
/// DoS-resistant, and need not be: the keys are aggregated within a
/// second and the tables are rebuilt every second.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FingerprintHasher {
    hash: u64,
}

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write_u64(&mut self, value: u64) {
        self.hash = folded_multiply(self.hash ^ value, 0x9e37_79b9_7f4a_7c15) ^ value;
    }

    fn write_u128(&mut self, value: u128) {
        self.write_u64(folded_multiply(
            value as u64,
            (value >> 64) as u64 ^ 0x243f_6a88_85a3_08d3,
        ));
    }

    /// Only reached for keys without a `write_*` of their own above.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (slot, byte) in word.iter_mut().zip(chunk) {
                *slot = *byte;
            }
            self.write_u64(u64::from_le_bytes(word));
        }
    }
}

/// The sums of one flow key in one bucket, already scaled by sampling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FlowSums {
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

pub(crate) type FlowMap = HashMap<FlowKey, FlowSums, BuildHasherDefault<FingerprintHasher>>;

/// The 1 s buckets still open, and where closed ones end.
#[derive(Debug)]
pub(crate) struct OpenBuckets {
    buckets: BTreeMap<i64, FlowMap>,
    /// Every bucket starting before this has closed.
    closed_before_ms: i64,
    /// Distinct keys of the last closed bucket: a new bucket starts with
    /// that capacity so it does not rehash its way up every second.
    capacity_hint: usize,
    /// Emptied maps of closed buckets, reused for new buckets: their memory
    /// is already mapped and likely still in cache, where a fresh map of
    /// the same size would page-fault its way through megabytes.
    spare: Vec<FlowMap>,
    pub records: u64,
    pub late_records: u64,
}

impl Default for OpenBuckets {
    fn default() -> OpenBuckets {
        OpenBuckets {
            buckets: BTreeMap::new(),
            closed_before_ms: i64::MIN,
            capacity_hint: 0,
            spare: Vec::new(),
            records: 0,
            late_records: 0,
        }
    }
}

/// A batch whose columns have been checked to be of one length, with
/// exporter indexes already translated to the store's exporter ids.
struct CheckedBatch<'a> {
    batch: &'a FlowBatch,
    exporter_ids: Vec<u32>,
}

impl<'a> CheckedBatch<'a> {
    fn new(batch: &'a FlowBatch, exporters: &mut Exporters) -> Result<Self, StoreError> {
        let rows = batch.exporter.len();
        let lengths = [
            ("received_ms", batch.received_ms.len()),
            ("flow_end_ms", batch.flow_end_ms.len()),
            ("src_addr", batch.src_addr.len()),
            ("dst_addr", batch.dst_addr.len()),
            ("src_port", batch.src_port.len()),
            ("dst_port", batch.dst_port.len()),
            ("protocol", batch.protocol.len()),
            ("tos", batch.tos.len()),
            ("in_if", batch.in_if.len()),
            ("out_if", batch.out_if.len()),
            ("packets", batch.packets.len()),
            ("bytes", batch.bytes.len()),
            ("sampling_rate", batch.sampling_rate.len()),
        ];
        for (column, length) in lengths {
            if length != rows {
                return Err(StoreError::InvalidBatch {
                    column,
                    detail: format!("{length} rows, but column exporter has {rows}"),
                });
            }
        }
        let dictionary = batch.exporters.len();
        if let Some(bad) = batch.exporter.iter().find(|&&i| i as usize >= dictionary) {
            return Err(StoreError::InvalidBatch {
                column: "exporter",
                detail: format!("index {bad} is outside the {dictionary} exporters"),
            });
        }
        let exporter_ids = batch.exporters.iter().map(|k| exporters.id_of(k)).collect();
        Ok(CheckedBatch {
            batch,
            exporter_ids,
        })
    }

    /// The key of row `row`. Rows are below the checked length, and
    /// exporter indexes inside the dictionary, so the lookups cannot miss.
    #[inline]
    fn key(&self, row: usize) -> FlowKey {
        let b = self.batch;
        let exporter_index = b.exporter[row] as usize;
        FlowKey {
            src_addr: b.src_addr[row],
            dst_addr: b.dst_addr[row],
            exporter: self.exporter_ids.get(exporter_index).copied().unwrap_or(0),
            in_if: b.in_if[row],
            out_if: b.out_if[row],
            src_port: b.src_port[row],
            dst_port: b.dst_port[row],
            protocol: b.protocol[row],
            dscp: b.tos[row] >> 2,
        }
    }

    /// Bytes and packets scaled by the sampling rate (0 is taken as 1).
    #[inline]
    fn scaled(&self, row: usize) -> (u64, u64) {
        let b = self.batch;
        let rate = u64::from(b.sampling_rate[row].max(1));
        (
            b.bytes[row].saturating_mul(rate),
            b.packets[row].saturating_mul(rate),
        )
    }
}

impl OpenBuckets {
    pub fn closed_before_ms(&self) -> i64 {
        self.closed_before_ms
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn row_count(&self) -> usize {
        self.buckets.values().map(HashMap::len).sum()
    }

    /// What the open maps (and the spare ones) hold, by their capacity.
    pub fn estimated_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(FlowKey, FlowSums)>() + 1;
        self.buckets
            .values()
            .chain(&self.spare)
            .map(|map| map.capacity() * entry)
            .sum()
    }

    /// Adds every record of `batch` to its bucket (or, when late, to the
    /// oldest open one). Checks the batch first, so an invalid batch adds
    /// nothing.
    pub fn add_batch(
        &mut self,
        batch: &FlowBatch,
        exporters: &mut Exporters,
    ) -> Result<(), StoreError> {
        let checked = CheckedBatch::new(batch, exporters)?;
        let rows = batch.len();
        let mut row = 0;
        while row < rows {
            let (start, run_end, late) = self.run_at(batch, row);
            let map = match self.buckets.entry(start) {
                Entry::Occupied(occupied) => occupied.into_mut(),
                Entry::Vacant(vacant) => {
                    let fresh = self.spare.pop().unwrap_or_else(|| {
                        FlowMap::with_capacity_and_hasher(self.capacity_hint, Default::default())
                    });
                    vacant.insert(fresh)
                }
            };
            for r in row..run_end {
                let (bytes, packets) = checked.scaled(r);
                let sums = map.entry(checked.key(r)).or_default();
                sums.bytes = sums.bytes.saturating_add(bytes);
                sums.packets = sums.packets.saturating_add(packets);
                sums.flows += 1;
            }
            if late {
                self.late_records += (run_end - row) as u64;
            }
            row = run_end;
        }
        self.records += rows as u64;
        Ok(())
    }

    /// The bucket the record at `row` goes to, and the end of the run of
    /// records going to the same bucket for the same reason (on time or
    /// late). Records of one datagram share a receive time, so runs are
    /// long and the bucket map is looked up once per run.
    fn run_at(&self, batch: &FlowBatch, row: usize) -> (i64, usize, bool) {
        let received = &batch.received_ms;
        let own_start = bucket_start(received[row], FINE_BUCKET_MS);
        let late = own_start < self.closed_before_ms;
        let target = if late {
            self.closed_before_ms
        } else {
            own_start
        };
        let bucket_end = own_start.saturating_add(FINE_BUCKET_MS);
        let mut end = row + 1;
        while let Some(&time) = received.get(end) {
            let same = if late {
                time < self.closed_before_ms
            } else {
                time >= own_start && time < bucket_end
            };
            if !same {
                break;
            }
            end += 1;
        }
        (target, end, late)
    }

    /// Closes every bucket starting before `boundary_ms` and returns them,
    /// oldest first. Later records for them count as late.
    pub fn close_before(&mut self, boundary_ms: i64) -> Vec<(i64, FlowMap)> {
        if boundary_ms <= self.closed_before_ms {
            return Vec::new();
        }
        self.closed_before_ms = boundary_ms;
        let still_open = self.buckets.split_off(&boundary_ms);
        let closed = std::mem::replace(&mut self.buckets, still_open);
        if let Some(largest) = closed.values().map(HashMap::len).max() {
            self.capacity_hint = largest;
        }
        closed.into_iter().collect()
    }

    /// Takes back an emptied map for reuse (two are kept: one for the next
    /// bucket, one for a late-arriving straggler's).
    pub fn recycle(&mut self, mut map: FlowMap) {
        map.clear();
        if self.spare.len() < 2 {
            self.spare.push(map);
        }
    }

    /// Moves the close boundary forward without closing anything (after an
    /// import, so replayed history is not reopened by live records).
    pub fn mark_closed_before(&mut self, boundary_ms: i64) {
        if boundary_ms > self.closed_before_ms && self.buckets.range(..boundary_ms).next().is_none()
        {
            self.closed_before_ms = boundary_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FlowProtocol, FlowRecord};

    fn exporter() -> ExporterKey {
        ExporterKey {
            address: "192.0.2.1".parse().expect("literal"),
            port: 0,
            protocol: FlowProtocol::Ipfix,
            domain: 7,
        }
    }

    #[test]
    fn invalid_batches_name_the_column_and_add_nothing() {
        let mut exporters = Exporters::default();
        let mut open = OpenBuckets::default();
        let mut batch = FlowBatch::default();
        let index = batch.exporter_index(&exporter());
        batch.push(index, &FlowRecord::default());
        batch.bytes.push(5);
        let error = open.add_batch(&batch, &mut exporters).expect_err("ragged");
        assert!(
            matches!(
                error,
                StoreError::InvalidBatch {
                    column: "bytes",
                    ..
                }
            ),
            "{error}"
        );

        let mut batch = FlowBatch::default();
        batch.exporters.push(exporter());
        batch.push(3, &FlowRecord::default());
        let error = open
            .add_batch(&batch, &mut exporters)
            .expect_err("bad index");
        assert!(
            matches!(
                error,
                StoreError::InvalidBatch {
                    column: "exporter",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!((open.records, open.row_count()), (0, 0));
    }

    #[test]
    fn runs_split_on_bucket_and_on_lateness() {
        let mut exporters = Exporters::default();
        let mut open = OpenBuckets::default();
        assert!(open.close_before(2000).is_empty());
        let mut batch = FlowBatch::default();
        let index = batch.exporter_index(&exporter());
        for (received_ms, bytes) in [(500, 1), (2100, 2), (2999, 4), (1999, 8), (3000, 16)] {
            let record = FlowRecord {
                received_ms,
                bytes,
                packets: 1,
                sampling_rate: 1,
                ..FlowRecord::default()
            };
            batch.push(index, &record);
        }
        open.add_batch(&batch, &mut exporters).expect("valid batch");
        assert_eq!(open.late_records, 2);
        let closed = open.close_before(4000);
        let bytes: Vec<(i64, u64)> = closed
            .iter()
            .map(|(start, map)| (*start, map.values().map(|s| s.bytes).sum()))
            .collect();
        assert_eq!(bytes, vec![(2000, 1 + 2 + 4 + 8), (3000, 16)]);
    }

    #[test]
    fn fingerprints_differ_in_every_field() {
        let base = FlowKey {
            src_addr: 1,
            dst_addr: 2,
            exporter: 3,
            in_if: 4,
            out_if: 5,
            src_port: 6,
            dst_port: 7,
            protocol: 8,
            dscp: 9,
        };
        let variants = [
            FlowKey {
                src_addr: 10,
                ..base
            },
            FlowKey {
                src_addr: 1 << 100,
                ..base
            },
            FlowKey {
                dst_addr: 10,
                ..base
            },
            FlowKey {
                exporter: 10,
                ..base
            },
            FlowKey { in_if: 10, ..base },
            FlowKey { out_if: 10, ..base },
            FlowKey {
                src_port: 10,
                ..base
            },
            FlowKey {
                dst_port: 10,
                ..base
            },
            FlowKey {
                protocol: 10,
                ..base
            },
            FlowKey { dscp: 10, ..base },
        ];
        for variant in variants {
            assert_ne!(variant.fingerprint(), base.fingerprint(), "{variant:?}");
        }
    }
}
