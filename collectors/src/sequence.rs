//! Sequence accounting per exporter key, in whatever unit the protocol
//! counts: NetFlow v5 flows, v9 export packets, IPFIX data records, sFlow
//! datagrams.
//!
//! The first value is taken as it comes (an exporter that started before
//! us is not a gap). A jump forward opens a *pending* gap; a late datagram
//! that falls into it (reordering on the path) shrinks or closes it. Only
//! what is still missing after [`REORDER_WINDOW`] more datagrams is counted,
//! once, so counters never go backwards and reordering is never counted as
//! loss. A large jump backwards is an exporter restart: the tracker starts
//! over.

/// How many later datagrams a missing range waits for before it counts.
pub const REORDER_WINDOW: u64 = 8;

/// How far behind the expected value a datagram may be and still be a late
/// one (or a duplicate) rather than a restart.
const LATE_LIMIT: u32 = 1 << 20;

/// Forward jumps beyond this are not loss but a restart (half the space,
/// as serial-number arithmetic has it).
const FORWARD_LIMIT: u32 = 1 << 31;

/// Most pending ranges kept; more means heavy loss, so the oldest is
/// committed early rather than kept.
const MAX_PENDING: usize = 16;

/// What an exporter's sequence number counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Convention {
    /// Not known yet: every datagram so far carried as many units as the
    /// one before, where both conventions agree.
    #[default]
    Unknown,
    /// The units sent before this datagram (RFC 7011 3.1, RFC 3954 5.1).
    BeforeThisDatagram,
    /// The units sent including this datagram's own: softflowd 1.1.0 adds
    /// a message's records to its counter before stamping the header.
    IncludingThisDatagram,
}

#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    expected: Option<u32>,
    /// Learnt from the first two consecutive datagrams whose unit counts
    /// differ: `s2 = s1 + c1` is the RFC's way, `s2 = s1 + c2` the other.
    pub convention: Convention,
    /// The last in-order datagram's raw sequence value and units.
    previous: Option<(u32, u32)>,
    /// Missing ranges `[start, end)` (modulo 2^32) and the datagram count
    /// at which they were opened.
    pending: Vec<(u32, u32, u64)>,
    datagrams: u64,
    /// Gaps counted (each missing range once).
    pub gaps: u64,
    /// Units (flows, packets, records, datagrams) those gaps held.
    pub lost: u64,
    /// Datagrams that arrived behind the expected value: late (reordered on
    /// the path) or duplicated.
    pub reordered: u64,
    /// Times the exporter's sequence went backwards too far: restarts.
    pub resets: u64,
}

impl SequenceTracker {
    /// Records a datagram whose sequence value is `sequence` and which
    /// carries `count` units. `count` of `None` means the datagram's size in
    /// units is unknown (an IPFIX message with a set whose template is
    /// missing); the tracker then resynchronises on the next datagram.
    pub fn observe(&mut self, sequence: u32, count: Option<u32>) {
        self.datagrams += 1;
        self.commit_expired();
        let sequence = self.normalise(sequence, count);
        let Some(expected) = self.expected else {
            self.expected = count.map(|c| sequence.wrapping_add(c));
            return;
        };
        let ahead = sequence.wrapping_sub(expected);
        if ahead == 0 {
            self.expected = count.map(|c| sequence.wrapping_add(c));
        } else if ahead < FORWARD_LIMIT {
            // Forward jump: [expected, sequence) is missing, for now.
            if self.pending.len() == MAX_PENDING {
                let (start, end, _) = self.pending.remove(0);
                self.count_gap(start, end);
            }
            self.pending.push((expected, sequence, self.datagrams));
            self.expected = count.map(|c| sequence.wrapping_add(c));
        } else {
            // Behind what we expected: late, or the exporter restarted.
            let units = count.unwrap_or(1).max(1);
            let behind = expected.wrapping_sub(sequence);
            if self.fill(sequence, sequence.wrapping_add(units)) || behind <= LATE_LIMIT {
                // Late into a pending gap, or later still (its gap already
                // counted) or a duplicate: nothing to do but note it.
                self.reordered += 1;
            } else {
                self.resets += 1;
                self.pending.clear();
                self.expected = count.map(|c| sequence.wrapping_add(c));
            }
        }
    }

    /// The sequence value as the RFCs define it (units before this
    /// datagram), learning the exporter's convention on the way.
    fn normalise(&mut self, raw: u32, count: Option<u32>) -> u32 {
        let Some(count) = count else {
            self.previous = None;
            return raw;
        };
        if self.convention == Convention::Unknown
            && let Some((previous_raw, previous_count)) = self.previous
            && previous_count != count
        {
            if raw == previous_raw.wrapping_add(previous_count) {
                self.convention = Convention::BeforeThisDatagram;
            } else if raw == previous_raw.wrapping_add(count) {
                self.convention = Convention::IncludingThisDatagram;
                // Until now the values were read the RFC's way; what the
                // previous datagram's value really meant is "everything
                // up to and including it".
                self.expected = Some(previous_raw);
            }
        }
        self.previous = Some((raw, count));
        match self.convention {
            Convention::IncludingThisDatagram => raw.wrapping_sub(count),
            _ => raw,
        }
    }

    /// Counts every pending gap now (at the end of a run).
    pub fn flush(&mut self) {
        for (start, end, _) in std::mem::take(&mut self.pending) {
            self.count_gap(start, end);
        }
    }

    fn commit_expired(&mut self) {
        let now = self.datagrams;
        let mut index = 0;
        while index < self.pending.len() {
            let (start, end, opened) = self.pending[index];
            if now.saturating_sub(opened) > REORDER_WINDOW {
                self.pending.remove(index);
                self.count_gap(start, end);
            } else {
                index += 1;
            }
        }
    }

    fn count_gap(&mut self, start: u32, end: u32) {
        self.gaps += 1;
        self.lost += u64::from(end.wrapping_sub(start));
    }

    /// Removes `[start, end)` from the pending ranges; true when it fell
    /// inside one (a late datagram), false when it matches nothing.
    fn fill(&mut self, start: u32, end: u32) -> bool {
        let position = self.pending.iter().position(|&(gap_start, gap_end, _)| {
            let offset = start.wrapping_sub(gap_start);
            offset < gap_end.wrapping_sub(gap_start)
        });
        let Some(position) = position else {
            return false;
        };
        let (gap_start, gap_end, opened) = self.pending.remove(position);
        // The late datagram may cover the start, the end, the middle, or
        // (claiming more units than the gap) all of it.
        let covered_end = if end.wrapping_sub(gap_start) > gap_end.wrapping_sub(gap_start) {
            gap_end
        } else {
            end
        };
        if start != gap_start {
            self.pending.push((gap_start, start, opened));
        }
        if covered_end != gap_end {
            self.pending.push((covered_end, gap_end, opened));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(datagrams: &[(u32, u32)]) -> SequenceTracker {
        let mut tracker = SequenceTracker::default();
        for &(sequence, count) in datagrams {
            tracker.observe(sequence, Some(count));
        }
        tracker.flush();
        tracker
    }

    #[test]
    fn the_first_value_is_not_a_gap() {
        let t = run(&[(1000, 3), (1003, 2), (1005, 1)]);
        assert_eq!((t.gaps, t.lost, t.reordered, t.resets), (0, 0, 0, 0));
    }

    #[test]
    fn a_gap_is_counted_once_with_what_it_lost() {
        let t = run(&[(0, 10), (10, 10), (30, 10), (40, 10), (50, 10)]);
        assert_eq!((t.gaps, t.lost), (1, 10));
    }

    #[test]
    fn reordering_is_not_loss() {
        // 20..30 arrives after 30..40.
        let t = run(&[(0, 10), (10, 10), (30, 10), (20, 10), (40, 10)]);
        assert_eq!((t.gaps, t.lost, t.reordered), (0, 0, 1));
    }

    #[test]
    fn a_late_datagram_filling_part_of_a_gap_leaves_the_rest() {
        // 10..40 missing; 20..30 comes late; 10..20 and 30..40 stay lost.
        let t = run(&[(0, 10), (40, 10), (20, 10), (50, 10)]);
        assert_eq!((t.gaps, t.lost, t.reordered), (2, 20, 1));
    }

    #[test]
    fn a_gap_older_than_the_window_counts_before_the_end() {
        let mut t = SequenceTracker::default();
        t.observe(0, Some(1));
        t.observe(5, Some(1));
        for s in 6..6 + REORDER_WINDOW as u32 + 1 {
            t.observe(s, Some(1));
        }
        assert_eq!((t.gaps, t.lost), (1, 4));
    }

    #[test]
    fn wraparound_is_continuous() {
        let t = run(&[(u32::MAX - 1, 1), (u32::MAX, 1), (0, 1), (1, 1)]);
        assert_eq!((t.gaps, t.resets), (0, 0));
        let t = run(&[(u32::MAX - 1, 1), (1, 1)]);
        assert_eq!((t.gaps, t.lost), (1, 2));
    }

    #[test]
    fn a_restart_resets_instead_of_counting() {
        let t = run(&[(5_000_000, 1), (5_000_001, 1), (0, 1), (1, 1)]);
        assert_eq!((t.gaps, t.resets), (0, 1));
    }

    #[test]
    fn an_exporter_counting_its_own_datagram_is_recognised() {
        // softflowd: each value includes the message's own records.
        let t = run(&[(3, 3), (8, 5), (10, 2), (14, 4)]);
        assert_eq!(t.convention, Convention::IncludingThisDatagram);
        assert_eq!((t.gaps, t.lost, t.reordered), (0, 0, 0));
        // The same exporter losing the message of 2 records.
        let t = run(&[(3, 3), (8, 5), (14, 4), (20, 6)]);
        assert_eq!((t.gaps, t.lost), (1, 2));
        // The RFC's way is recognised too, and equal counts decide nothing.
        let t = run(&[(0, 3), (3, 3), (6, 5), (11, 1)]);
        assert_eq!(t.convention, Convention::BeforeThisDatagram);
        assert_eq!(t.gaps, 0);
        let t = run(&[(0, 4), (4, 4), (8, 4)]);
        assert_eq!(t.convention, Convention::Unknown);
    }

    #[test]
    fn an_unknown_size_resynchronises() {
        let mut t = SequenceTracker::default();
        t.observe(0, Some(5));
        t.observe(5, None);
        t.observe(123, Some(1));
        t.observe(124, Some(1));
        t.flush();
        assert_eq!((t.gaps, t.resets), (0, 0));
    }
}
