//! Deadline transfers scheduled over time: a calendar of equal slices from
//! now, and for each transfer a rate per slice up to (and past) its
//! deadline, computed with every other transfer by one time-expanded LP.
//!
//! Tempus (SIGCOMM'14) and Amoeba (EuroSys'15) schedule bulk transfers this
//! way. Here, as in Tempus, the LP is solved lexicographically in two
//! stages over the same constraints:
//!
//! 1. **Fairness between tenants.** The largest level `λ` such that every
//!    tenant moves at least `λ × weight` of its transfers' bytes by their
//!    deadlines (weights scaled so the largest is 1). No tenant's transfers
//!    are starved by another's, whatever their deadlines.
//! 2. **Deadlines, then throughput.** With every tenant held at its level,
//!    maximise the sum over transfers of the share moved by the deadline
//!    (a transfer that fits whole counts 1: the LP relaxation of the number
//!    of deadlines met), then the bytes moved at all (a late transfer still
//!    finishes), with a small cost for sending later that weighs a slice by
//!    the transfer's deadline: an earlier deadline goes first (EDF), and
//!    what can be sent now is sent now (work conserving, and capacity freed
//!    early is there for transfers not yet known).
//! 3. **Rounding.** A transfer whose share by its deadline is short of 1
//!    has missed it: those are given up (their deadline no longer counts,
//!    and they are sent as if due at the calendar's end) and stage 2 is
//!    solved again, so that capacity goes now to the transfers that can
//!    still make their deadlines rather than to partial shares. Not those
//!    whose bytes hold their tenant at its fairness level: they are owed,
//!    and given up they would be sent last.
//!
//! Guaranteed reservations (ai-sync) hold their rates in every slice they
//! overlap, split freely over their own paths: transfers only get what is
//! left, so no slice has a guaranteed class above any link's capacity.
//!
//! Re-planned each interval from the bytes measured so far: a transfer
//! that fell behind has more left for the same time, and the schedule
//! speeds it up; one that cannot make its deadline any more shows it as a
//! completion after the deadline.

use std::collections::BTreeMap;

use clarabel::algebra::CscMatrix;

use crate::allocation::Demand;
use crate::lp::{LpError, solve as solve_lp};
use crate::network::Network;

/// Why no schedule could be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("calendar: {0}")]
    Calendar(String),
    #[error("transfer {index}: {reason}")]
    Transfer { index: usize, reason: String },
    #[error("reservation {index}: {reason}")]
    Reservation { index: usize, reason: String },
    #[error("tenant {index}: {reason}")]
    Tenant { index: usize, reason: String },
    #[error(transparent)]
    Lp(#[from] LpError),
}

/// Equal slices from now: slice `t` is `[t × slice_s, (t + 1) × slice_s)`
/// seconds from now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calendar {
    pub slice_s: f64,
    pub slices: usize,
}

impl Calendar {
    pub fn horizon_s(&self) -> f64 {
        self.slice_s * self.slices as f64
    }

    /// Seconds of slice `t` within `[from_s, until_s)`.
    fn overlap(&self, t: usize, from_s: f64, until_s: f64) -> f64 {
        let start = t as f64 * self.slice_s;
        let end = start + self.slice_s;
        (end.min(until_s) - start.max(from_s)).max(0.0)
    }
}

/// A volume to move between two times, over one or more pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// Index into the tenants.
    pub tenant: usize,
    /// Its pairs and their candidate paths (edge indices); each `rate` is
    /// ignored: a transfer's rate is shared evenly by its pairs, as a job's
    /// is.
    pub pairs: Vec<Demand>,
    /// Bits still to move.
    pub remaining_bits: f64,
    /// Seconds from now before which it cannot send (0: already may).
    pub release_s: f64,
    /// Seconds from now (0 or less: already late; it still finishes).
    pub deadline_s: f64,
    /// The most it can send, bit/s, per slice when known (the benchmark's
    /// oracle knows its senders' limits; a live plan knows only a declared
    /// rate); empty = no limit, one value = the same in every slice.
    pub max_rate_bps: Vec<f64>,
    /// Counted for deadlines and fairness; `false` for best-effort volume,
    /// which only takes what is left.
    pub guaranteed: bool,
}

impl Transfer {
    fn max_rate(&self, t: usize) -> f64 {
        match self.max_rate_bps.as_slice() {
            [] => f64::INFINITY,
            [one] => *one,
            many => many.get(t).copied().unwrap_or(f64::INFINITY),
        }
    }
}

/// A guaranteed rate (an ai-sync job's demand) held in every slice that
/// overlaps `[from_s, until_s)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub demand: Demand,
    pub from_s: f64,
    pub until_s: f64,
}

/// A tenant's weight in the fairness stage, and an optional cap on its
/// transfers' total rate in any slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tenant {
    pub weight: f64,
    pub quota_bps: Option<f64>,
}

/// The schedule of one transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Bit/s in each slice of the calendar.
    pub rates_bps: Vec<f64>,
    /// Bits moved by the deadline, and in the whole calendar.
    pub by_deadline_bits: f64,
    pub delivered_bits: f64,
    /// Seconds from now when the last bit moves; `None` when not within
    /// the calendar.
    pub completion_s: Option<f64>,
    pub meets_deadline: bool,
    /// The first slice's rate on each path of each pair, bit/s (all zero
    /// when it does not send then).
    pub first_slice_paths: Vec<Vec<f64>>,
}

/// Every transfer's schedule, and what the slices carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub calendar: Calendar,
    pub transfers: Vec<Planned>,
    /// The fairness stage's level (1 when no tenant competes).
    pub fair_level: f64,
    /// Load on each edge in each slice, bit/s: reservations and
    /// guaranteed transfers (the guaranteed classes).
    pub guaranteed_loads: Vec<Vec<f64>>,
    /// The same for every transfer, best-effort volume included.
    pub loads: Vec<Vec<f64>>,
}

/// When a transfer's bits go, beside what its deadline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// As soon as capacity allows: what the network delivers when its
    /// limits are work conserving, and what capacity freed early leaves for
    /// transfers not yet known.
    Soonest,
    /// As late as the deadline allows (after it, as soon as possible): the
    /// first slice's rate is then the least a transfer must be given now,
    /// the rate a plan reserves while idle capacity is lent on top.
    Latest,
}

/// A share this close to 1 is all of it (the interior-point solver's
/// tolerance, relative).
const MET_TOLERANCE: f64 = 1e-5;

/// Schedules `transfers` on `network` beside `reservations` over
/// `calendar`; tenants are indexed as the transfers' `tenant`.
pub fn schedule(
    network: &Network,
    calendar: Calendar,
    tenants: &[Tenant],
    reservations: &[Reservation],
    transfers: &[Transfer],
    preference: Preference,
) -> Result<Schedule, ScheduleError> {
    check(network, calendar, tenants, reservations, transfers)?;
    let model = Model::new(
        network,
        calendar,
        tenants,
        reservations,
        transfers,
        preference,
    );
    let competing = model.competing_tenants();
    let fair_level = if competing.len() > 1 {
        let x = model.solve(Stage::Fairness, &BTreeMap::new(), &[])?;
        x[model.level].clamp(0.0, 1.0)
    } else {
        1.0
    };
    let floors: BTreeMap<usize, f64> = if competing.len() > 1 {
        competing
            .iter()
            .map(|&k| {
                let floor = fair_level * model.weights[k] * (1.0 - 1e-4) - 1e-6;
                (k, floor.max(0.0))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    // The relaxation counts a share of a deadline, but a transfer that
    // misses its deadline by a little has missed it: the transfers short of
    // theirs are given up (sent after the others, by what capacity is
    // left), so that they stop taking capacity now from transfers that can
    // still make theirs, which would then compete later with transfers not
    // yet known. Giving them up one at a time in order of their shares
    // gave the same deadlines in `bench jobs` for more solves. Those that
    // hold their tenant's fairness floor are kept.
    let mut x = model.solve(Stage::Deadlines, &floors, &[])?;
    let given_up = model.short_of_deadline(&x, &floors);
    if given_up.contains(&true) {
        x = model.solve(Stage::Deadlines, &floors, &given_up)?;
    }
    Ok(model.read(&x, fair_level))
}

/// A share of a deadline this close to 1 is met (the interior-point
/// solver's tolerance, with room).
const SHARE_TOLERANCE: f64 = 1e-4;

/// The schedule a live plan follows, and the rate to reserve for each
/// transfer now.
#[derive(Debug, Clone, PartialEq)]
pub struct Paced {
    /// As soon as capacity allows: the completions a work-conserving
    /// network delivers if nothing changes, and which deadlines are met.
    pub schedule: Schedule,
    /// Bit/s per transfer.
    pub pace_bps: Vec<f64>,
}

/// The rate each transfer should be given now: at least the even pace to
/// its deadline (what is left over the time left, so that a transfer that
/// fell behind is sped up even while later slices are free) and at least
/// what it must move now for the deadlines to hold later (the first slice
/// of the as-late-as-possible schedule), but never more than the
/// as-soon-as-possible schedule gives it now: those rates fit together, so
/// the paces do too, and best-effort keeps what a transfer with slack does
/// not need.
pub fn paces(
    network: &Network,
    calendar: Calendar,
    tenants: &[Tenant],
    reservations: &[Reservation],
    transfers: &[Transfer],
) -> Result<Paced, ScheduleError> {
    let soonest = schedule(
        network,
        calendar,
        tenants,
        reservations,
        transfers,
        Preference::Soonest,
    )?;
    let latest = schedule(
        network,
        calendar,
        tenants,
        reservations,
        transfers,
        Preference::Latest,
    )?;
    let mut pace_bps: Vec<f64> = transfers
        .iter()
        .zip(soonest.transfers.iter().zip(&latest.transfers))
        .map(|(transfer, (soon, late))| {
            if transfer.release_s > 0.0 || transfer.remaining_bits <= 0.0 {
                return 0.0;
            }
            let even = if transfer.deadline_s > 0.0 {
                transfer.remaining_bits / transfer.deadline_s.max(1e-3)
            } else {
                f64::INFINITY
            };
            let most = soon.rates_bps.first().copied().unwrap_or(0.0);
            let least = late.rates_bps.first().copied().unwrap_or(0.0);
            least.max(even).min(most).max(0.0)
        })
        .collect();
    // The solver's tolerance may leave a tenant a few bit/s above its
    // quota; a quota is a promise to the other tenants, so it holds.
    for (k, tenant) in tenants.iter().enumerate() {
        let Some(quota) = tenant.quota_bps else {
            continue;
        };
        let paced: f64 = (0..transfers.len())
            .filter(|&j| transfers[j].tenant == k)
            .map(|j| pace_bps[j])
            .sum();
        if paced > quota {
            // A part per billion below it: a caller rounding up to whole
            // bit/s stays within it.
            let scale = quota / paced * (1.0 - 1e-9);
            for j in (0..transfers.len()).filter(|&j| transfers[j].tenant == k) {
                pace_bps[j] *= scale;
            }
        }
    }
    Ok(Paced {
        schedule: soonest,
        pace_bps,
    })
}

fn check(
    network: &Network,
    calendar: Calendar,
    tenants: &[Tenant],
    reservations: &[Reservation],
    transfers: &[Transfer],
) -> Result<(), ScheduleError> {
    if !(calendar.slice_s.is_finite() && calendar.slice_s > 0.0) || calendar.slices == 0 {
        return Err(ScheduleError::Calendar(format!(
            "{} slices of {} s: need at least one slice of a positive length",
            calendar.slices, calendar.slice_s
        )));
    }
    let paths_ok = |demand: &Demand| -> Result<(), String> {
        for path in &demand.paths {
            for &e in path {
                match network.edges.get(e) {
                    None => return Err(format!("a path crosses unknown edge {e}")),
                    Some(edge) if edge.capacity.is_nan() || edge.capacity <= 0.0 => {
                        return Err(format!("a path crosses edge {e}, which has no capacity"));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    };
    for (index, tenant) in tenants.iter().enumerate() {
        let quota_ok = tenant.quota_bps.is_none_or(|q| q.is_finite() && q >= 0.0);
        if !(tenant.weight.is_finite() && tenant.weight > 0.0 && quota_ok) {
            return Err(ScheduleError::Tenant {
                index,
                reason: "weight must be positive and a quota finite and not negative".into(),
            });
        }
    }
    for (index, reservation) in reservations.iter().enumerate() {
        let fail = |reason: String| ScheduleError::Reservation { index, reason };
        paths_ok(&reservation.demand).map_err(fail)?;
        if !(reservation.demand.rate.is_finite() && reservation.demand.rate >= 0.0) {
            return Err(fail("rate must be finite and not negative".into()));
        }
        if reservation.demand.rate > 0.0 && reservation.demand.paths.is_empty() {
            return Err(fail("has no path".into()));
        }
    }
    for (index, transfer) in transfers.iter().enumerate() {
        let fail = |reason: String| ScheduleError::Transfer { index, reason };
        if transfer.tenant >= tenants.len() {
            return Err(fail(format!("tenant {} is not listed", transfer.tenant)));
        }
        if transfer.pairs.is_empty() {
            return Err(fail("has no pair".into()));
        }
        for pair in &transfer.pairs {
            paths_ok(pair).map_err(fail)?;
        }
        let finite = [
            transfer.remaining_bits,
            transfer.release_s,
            transfer.deadline_s,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite || transfer.remaining_bits < 0.0 {
            return Err(fail(
                "remaining bits, release and deadline must be finite, and bits not negative".into(),
            ));
        }
        if transfer.max_rate_bps.iter().any(|r| r.is_nan() || *r < 0.0) {
            return Err(fail("a rate limit is negative or not a number".into()));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Fairness,
    Deadlines,
}

/// Variables: per transfer and slice it may send in, its rate and its
/// pairs' rates on each path; per reservation and slice it is held in,
/// its rate on each path; per transfer the share moved by its deadline;
/// the fairness level. Rates are in units of the largest capacity, bits
/// in units of that capacity for one slice, so the LP's numbers are near 1.
struct Model<'a> {
    network: &'a Network,
    calendar: Calendar,
    tenants: &'a [Tenant],
    reservations: &'a [Reservation],
    transfers: &'a [Transfer],
    preference: Preference,
    unit_bps: f64,
    /// Per transfer: the slices it may send in, with for each the column of
    /// its rate and the first column of its path rates.
    transfer_slices: Vec<Vec<TransferSlice>>,
    /// Per reservation: (slice, first column of its path rates).
    reservation_slices: Vec<Vec<(usize, usize)>>,
    /// Per transfer, the column of its share by the deadline.
    share: Vec<usize>,
    level: usize,
    n_vars: usize,
    /// Weights scaled so the largest is 1.
    weights: Vec<f64>,
}

struct TransferSlice {
    t: usize,
    rate: usize,
    first_path: usize,
    /// Seconds of the slice it may send in, and of those before its
    /// deadline, as shares of a slice.
    sending: f64,
    before_deadline: f64,
}

impl<'a> Model<'a> {
    fn new(
        network: &'a Network,
        calendar: Calendar,
        tenants: &'a [Tenant],
        reservations: &'a [Reservation],
        transfers: &'a [Transfer],
        preference: Preference,
    ) -> Model<'a> {
        let unit_bps = unit_bps(network);
        let mut next = 0;
        let mut transfer_slices = Vec::with_capacity(transfers.len());
        for transfer in transfers {
            let paths: usize = transfer.pairs.iter().map(|p| p.paths.len()).sum();
            let mut slices = Vec::new();
            let routable = transfer.pairs.iter().all(|p| !p.paths.is_empty());
            for t in 0..calendar.slices {
                let sending = calendar.overlap(t, transfer.release_s, f64::INFINITY);
                // Bits or rates a millionth of a slice of the largest link
                // are solver noise, not a transfer (and would make the LP's
                // numbers far from 1).
                let volume = transfer.remaining_bits / (unit_bps * calendar.slice_s);
                if !routable || volume <= NEGLIGIBLE || sending <= 0.0 {
                    continue;
                }
                if transfer.max_rate(t) / unit_bps <= NEGLIGIBLE {
                    continue;
                }
                let before = calendar.overlap(t, transfer.release_s, transfer.deadline_s);
                slices.push(TransferSlice {
                    t,
                    rate: next,
                    first_path: next + 1,
                    sending: sending / calendar.slice_s,
                    before_deadline: before / calendar.slice_s,
                });
                next += 1 + paths;
            }
            transfer_slices.push(slices);
        }
        let mut reservation_slices = Vec::with_capacity(reservations.len());
        for reservation in reservations {
            let mut slices = Vec::new();
            if reservation.demand.rate > 0.0 {
                for t in 0..calendar.slices {
                    if calendar.overlap(t, reservation.from_s, reservation.until_s) > 0.0 {
                        slices.push((t, next));
                        next += reservation.demand.paths.len();
                    }
                }
            }
            reservation_slices.push(slices);
        }
        let share = (next..next + transfers.len()).collect();
        next += transfers.len();
        let level = next;
        next += 1;
        let top = tenants.iter().map(|t| t.weight).fold(0.0_f64, f64::max);
        let weights = tenants
            .iter()
            .map(|t| if top > 0.0 { t.weight / top } else { 1.0 })
            .collect();
        Model {
            network,
            calendar,
            tenants,
            reservations,
            transfers,
            preference,
            unit_bps,
            transfer_slices,
            reservation_slices,
            share,
            level,
            n_vars: next,
            weights,
        }
    }

    /// A transfer's bits in LP units.
    fn volume(&self, j: usize) -> f64 {
        self.transfers[j].remaining_bits / (self.unit_bps * self.calendar.slice_s)
    }

    /// Whether transfer `j` can move anything by its deadline.
    fn can_meet_some(&self, j: usize) -> bool {
        self.transfers[j].guaranteed
            && self.volume(j) > 0.0
            && self.transfer_slices[j]
                .iter()
                .any(|s| s.before_deadline > 0.0)
    }

    /// Tenants with a guaranteed transfer that can move something by its
    /// deadline: the ones the fairness stage holds to a level.
    fn competing_tenants(&self) -> Vec<usize> {
        let mut tenants: Vec<usize> = (0..self.transfers.len())
            .filter(|&j| self.can_meet_some(j))
            .map(|j| self.transfers[j].tenant)
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        tenants
    }

    /// The transfers short of their deadlines in solution `x` that may be
    /// given up: all of them but those whose bits by the deadline hold
    /// their tenant at its fairness floor (a transfer given up is sent
    /// after the others, and that part is owed by its deadline: it would
    /// wait until the last slices, starved until then), smallest share
    /// first.
    fn short_of_deadline(&self, x: &[f64], floors: &BTreeMap<usize, f64>) -> Vec<bool> {
        let mut slack: BTreeMap<usize, f64> = BTreeMap::new();
        for j in (0..self.transfers.len()).filter(|&j| self.can_meet_some(j)) {
            let tenant = self.transfers[j].tenant;
            if let Some(floor) = floors.get(&tenant) {
                let moved = x[self.share[j]].clamp(0.0, 1.0) * self.volume(j);
                *slack.entry(tenant).or_default() += moved - floor * self.volume(j);
            }
        }
        let mut short: Vec<usize> = (0..self.transfers.len())
            .filter(|&j| self.can_meet_some(j) && x[self.share[j]] < 1.0 - SHARE_TOLERANCE)
            .collect();
        short.sort_by(|&a, &b| x[self.share[a]].total_cmp(&x[self.share[b]]));
        let mut given_up = vec![false; self.transfers.len()];
        for j in short {
            let moved = x[self.share[j]].clamp(0.0, 1.0) * self.volume(j);
            match slack.get_mut(&self.transfers[j].tenant) {
                None => given_up[j] = true,
                Some(slack) if *slack >= moved => {
                    *slack -= moved;
                    given_up[j] = true;
                }
                Some(_) => {}
            }
        }
        given_up
    }

    /// `given_up`: transfers whose deadline no longer counts in the
    /// objective (their share still counts for their tenant's level), sent
    /// as if their deadline were the calendar's end.
    fn solve(
        &self,
        stage: Stage,
        floors: &BTreeMap<usize, f64>,
        given_up: &[bool],
    ) -> Result<Vec<f64>, LpError> {
        let mut eq = Rows::default();
        let mut le = Rows::default();
        // A transfer's pairs share its rate evenly.
        for (j, transfer) in self.transfers.iter().enumerate() {
            let pairs = transfer.pairs.len() as f64;
            for slice in &self.transfer_slices[j] {
                let mut column = slice.first_path;
                for pair in &transfer.pairs {
                    let mut row: Vec<(usize, f64)> = (column..column + pair.paths.len())
                        .map(|c| (c, 1.0))
                        .collect();
                    row.push((slice.rate, -1.0 / pairs));
                    eq.push(row, 0.0);
                    column += pair.paths.len();
                }
            }
        }
        // A reservation holds its rate in every slice it overlaps.
        for (i, reservation) in self.reservations.iter().enumerate() {
            let rate = reservation.demand.rate / self.unit_bps;
            for &(_, first) in &self.reservation_slices[i] {
                let row = (first..first + reservation.demand.paths.len())
                    .map(|c| (c, 1.0))
                    .collect();
                eq.push(row, rate);
            }
        }
        // Capacity per slice and edge.
        let mut per_edge: BTreeMap<(usize, usize), Vec<(usize, f64)>> = BTreeMap::new();
        for (j, transfer) in self.transfers.iter().enumerate() {
            for slice in &self.transfer_slices[j] {
                let mut column = slice.first_path;
                for pair in &transfer.pairs {
                    for path in &pair.paths {
                        for &e in path {
                            per_edge
                                .entry((slice.t, e))
                                .or_default()
                                .push((column, 1.0));
                        }
                        column += 1;
                    }
                }
            }
        }
        for (i, reservation) in self.reservations.iter().enumerate() {
            for &(t, first) in &self.reservation_slices[i] {
                for (p, path) in reservation.demand.paths.iter().enumerate() {
                    for &e in path {
                        per_edge.entry((t, e)).or_default().push((first + p, 1.0));
                    }
                }
            }
        }
        for ((_, e), row) in per_edge {
            le.push(row, self.network.edges[e].capacity / self.unit_bps);
        }
        // Senders' limits and tenants' quotas, per slice.
        let mut per_quota: BTreeMap<(usize, usize), Vec<(usize, f64)>> = BTreeMap::new();
        for (j, transfer) in self.transfers.iter().enumerate() {
            let quota = self.tenants[transfer.tenant].quota_bps;
            for slice in &self.transfer_slices[j] {
                let limit = transfer.max_rate(slice.t);
                if limit.is_finite() {
                    le.push(vec![(slice.rate, 1.0)], limit / self.unit_bps);
                }
                if quota.is_some() {
                    per_quota
                        .entry((transfer.tenant, slice.t))
                        .or_default()
                        .push((slice.rate, 1.0));
                }
            }
        }
        for ((k, _), row) in per_quota {
            let quota = self.tenants[k].quota_bps.unwrap_or(f64::INFINITY);
            le.push(row, quota / self.unit_bps);
        }
        // No more than what is left; the share by the deadline, at most 1.
        for (j, slices) in self.transfer_slices.iter().enumerate() {
            let volume = self.volume(j);
            let sent: Vec<(usize, f64)> = slices.iter().map(|s| (s.rate, s.sending)).collect();
            le.push(sent, volume);
            let mut by_deadline: Vec<(usize, f64)> = slices
                .iter()
                .filter(|s| s.before_deadline > 0.0)
                .map(|s| (s.rate, -s.before_deadline))
                .collect();
            if self.can_meet_some(j) {
                by_deadline.push((self.share[j], volume));
                le.push(by_deadline, 0.0);
                le.push(vec![(self.share[j], 1.0)], 1.0);
            } else {
                le.push(vec![(self.share[j], 1.0)], 0.0);
            }
        }
        // Tenants: at the common level (stage 1) or held at it (stage 2).
        let mut per_tenant: BTreeMap<usize, Vec<(usize, f64)>> = BTreeMap::new();
        for j in (0..self.transfers.len()).filter(|&j| self.can_meet_some(j)) {
            per_tenant
                .entry(self.transfers[j].tenant)
                .or_default()
                .push((self.share[j], -self.volume(j)));
        }
        for (k, mut row) in per_tenant {
            let total: f64 = -row.iter().map(|(_, v)| v).sum::<f64>();
            match stage {
                Stage::Fairness => {
                    row.push((self.level, self.weights[k] * total));
                    le.push(row, 0.0);
                }
                Stage::Deadlines => {
                    if let Some(floor) = floors.get(&k) {
                        le.push(row, -floor * total);
                    }
                }
            }
        }
        le.push(vec![(self.level, 1.0)], 1.0);
        if stage == Stage::Deadlines {
            le.push(vec![(self.level, 1.0)], 0.0);
        }
        // Every variable is non-negative.
        for column in 0..self.n_vars {
            le.push(vec![(column, -1.0)], 0.0);
        }
        let mut q = vec![0.0; self.n_vars];
        match stage {
            Stage::Fairness => q[self.level] = -1.0,
            Stage::Deadlines => {
                // Deadlines first (a whole transfer counts 1), then every
                // bit moved (THROUGHPUT per slice of capacity), then a cost
                // for when, smaller than a bit's worth in any slice: sooner
                // is better (sooner still for an earlier deadline), or
                // later before the deadline when preferred.
                let slices = self.calendar.slices as f64;
                let lateness = THROUGHPUT / (2.0 * slices * slices.max(1.0));
                let n = self.transfers.len() as f64;
                for (j, transfer) in self.transfers.iter().enumerate() {
                    let given_up = given_up.get(j).copied().unwrap_or(false);
                    // Ties go to the transfer listed first (the oldest), so
                    // that a share the relaxation could spread evenly makes
                    // whole transfers instead.
                    if self.can_meet_some(j) && !given_up {
                        q[self.share[j]] = -1.0 - FIRST_COME * (n - j as f64) / n;
                    }
                    let deadline_s = if given_up {
                        self.calendar.horizon_s()
                    } else {
                        transfer.deadline_s
                    };
                    let deadline_slices = (deadline_s / self.calendar.slice_s).max(1.0);
                    let urgency = slices / deadline_slices.min(slices);
                    for slice in &self.transfer_slices[j] {
                        let soon = match self.preference {
                            Preference::Latest if slice.before_deadline > 0.0 && !given_up => {
                                slices - slice.t as f64
                            }
                            _ => (slice.t + 1) as f64,
                        };
                        let later = soon * urgency.min(slices);
                        q[slice.rate] = slice.sending * (-THROUGHPUT + lateness * later);
                    }
                }
            }
        }
        let (a, b, zero_rows, nonneg_rows) = assemble(eq, le, self.n_vars);
        solve_lp(self.n_vars, q, a, b, zero_rows, nonneg_rows, Some(60.0))
    }

    fn read(&self, x: &[f64], fair_level: f64) -> Schedule {
        let calendar = self.calendar;
        let edges = self.network.edges.len();
        let mut loads = vec![vec![0.0; edges]; calendar.slices];
        let mut guaranteed_loads = vec![vec![0.0; edges]; calendar.slices];
        for (i, reservation) in self.reservations.iter().enumerate() {
            for &(t, first) in &self.reservation_slices[i] {
                for (p, path) in reservation.demand.paths.iter().enumerate() {
                    let rate = x[first + p].max(0.0) * self.unit_bps;
                    for &e in path {
                        loads[t][e] += rate;
                        guaranteed_loads[t][e] += rate;
                    }
                }
            }
        }
        let mut transfers = Vec::with_capacity(self.transfers.len());
        for (j, transfer) in self.transfers.iter().enumerate() {
            let mut rates_bps = vec![0.0; calendar.slices];
            let (mut by_deadline, mut delivered) = (0.0, 0.0);
            let mut completion_s = None;
            let remaining = transfer.remaining_bits;
            let mut first_slice_paths: Vec<Vec<f64>> = transfer
                .pairs
                .iter()
                .map(|pair| vec![0.0; pair.paths.len()])
                .collect();
            for slice in &self.transfer_slices[j] {
                let rate = x[slice.rate].max(0.0) * self.unit_bps;
                rates_bps[slice.t] = rate;
                let seconds = slice.sending * calendar.slice_s;
                let before = delivered;
                delivered += rate * seconds;
                by_deadline += rate * slice.before_deadline * calendar.slice_s;
                if completion_s.is_none() && delivered >= remaining * (1.0 - MET_TOLERANCE) {
                    let end = (slice.t + 1) as f64 * calendar.slice_s;
                    let needed = (remaining - before).max(0.0) / rate.max(f64::MIN_POSITIVE);
                    completion_s = Some((end - seconds + needed).min(end));
                }
                let mut column = slice.first_path;
                for (d, pair) in transfer.pairs.iter().enumerate() {
                    for (p, path) in pair.paths.iter().enumerate() {
                        let rate = x[column].max(0.0) * self.unit_bps;
                        if slice.t == 0 {
                            first_slice_paths[d][p] = rate;
                        }
                        for &e in path {
                            loads[slice.t][e] += rate;
                            if transfer.guaranteed {
                                guaranteed_loads[slice.t][e] += rate;
                            }
                        }
                        column += 1;
                    }
                }
            }
            let through = self.volume(j) <= NEGLIGIBLE;
            if through {
                completion_s = Some(0.0);
            }
            let delivered = delivered.min(remaining);
            let by_deadline = by_deadline.min(remaining);
            transfers.push(Planned {
                rates_bps,
                by_deadline_bits: by_deadline,
                delivered_bits: delivered,
                completion_s,
                meets_deadline: through
                    || (transfer.deadline_s > 0.0
                        && by_deadline >= remaining * (1.0 - MET_TOLERANCE)),
                first_slice_paths,
            });
        }
        Schedule {
            calendar,
            transfers,
            fair_level,
            guaranteed_loads,
            loads,
        }
    }
}

/// The objective's reward per slice of capacity moved, beside 1 for a
/// whole transfer by its deadline.
const THROUGHPUT: f64 = 1e-2;

/// A share of the LP's units below which bits and rates count as none.
const NEGLIGIBLE: f64 = 1e-6;

/// The LP's unit of rate: the largest capacity.
fn unit_bps(network: &Network) -> f64 {
    network
        .edges
        .iter()
        .map(|e| e.capacity)
        .fold(0.0_f64, f64::max)
        .max(1.0)
}

/// Bits this few left of a transfer are solver noise, not a transfer: a
/// schedule plans nothing more for them and counts the transfer complete
/// (a millionth of a slice of the largest link: half a megabyte for 10 s
/// of 400 Gbit/s, which a work-conserving limit lets through in a moment).
pub fn negligible_bits(network: &Network, calendar: Calendar) -> f64 {
    unit_bps(network) * calendar.slice_s * NEGLIGIBLE
}

/// The reward's tie-break between transfers, by their order.
const FIRST_COME: f64 = 1e-3;

/// Constraint rows as (column, value) lists with their right-hand sides.
#[derive(Default)]
struct Rows {
    rows: Vec<(Vec<(usize, f64)>, f64)>,
}

impl Rows {
    fn push(&mut self, row: Vec<(usize, f64)>, rhs: f64) {
        self.rows.push((row, rhs));
    }
}

/// Clarabel's form: equality rows first (zero cone), then `<=` rows
/// (non-negative cone of `b - A x`).
fn assemble(eq: Rows, le: Rows, n_vars: usize) -> (CscMatrix<f64>, Vec<f64>, usize, usize) {
    let (zero_rows, nonneg_rows) = (eq.rows.len(), le.rows.len());
    let (mut rows, mut cols, mut vals, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (r, (row, rhs)) in eq.rows.into_iter().chain(le.rows).enumerate() {
        for (c, v) in row {
            rows.push(r);
            cols.push(c);
            vals.push(v);
        }
        b.push(rhs);
    }
    let a = CscMatrix::new_from_triplets(zero_rows + nonneg_rows, n_vars, rows, cols, vals);
    (a, b, zero_rows, nonneg_rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Edge;

    /// One 10 Gbit/s link from node 0 to node 1.
    fn link() -> Network {
        Network {
            name: "link".into(),
            nodes: vec!["a".into(), "b".into()],
            edges: vec![Edge {
                src: 0,
                dst: 1,
                capacity: 10e9,
                weight: 1.0,
                latency_us: 1_000.0,
            }],
        }
    }

    fn over_the_link() -> Demand {
        Demand {
            src: 0,
            dst: 1,
            rate: 0.0,
            paths: vec![vec![0]],
        }
    }

    fn transfer(tenant: usize, gbit: f64, deadline_s: f64) -> Transfer {
        Transfer {
            tenant,
            pairs: vec![over_the_link()],
            remaining_bits: gbit * 1e9,
            release_s: 0.0,
            deadline_s,
            max_rate_bps: Vec::new(),
            guaranteed: true,
        }
    }

    /// Ten slices of 10 s.
    const CALENDAR: Calendar = Calendar {
        slice_s: 10.0,
        slices: 10,
    };

    fn tenants(weights: &[f64]) -> Vec<Tenant> {
        weights
            .iter()
            .map(|&weight| Tenant {
                weight,
                quota_bps: None,
            })
            .collect()
    }

    fn run(
        tenants: &[Tenant],
        reservations: &[Reservation],
        transfers: &[Transfer],
        preference: Preference,
    ) -> Schedule {
        schedule(
            &link(),
            CALENDAR,
            tenants,
            reservations,
            transfers,
            preference,
        )
        .expect("schedule")
    }

    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-3 * b.abs().max(1e9)
    }

    #[test]
    fn the_earliest_deadline_goes_first() {
        // Listed second, due first: B moves in slices 0-1, A in 2-3.
        let a = transfer(0, 200.0, 60.0);
        let b = transfer(0, 200.0, 30.0);
        let plan = run(&tenants(&[1.0]), &[], &[a, b], Preference::Soonest);
        let (a, b) = (&plan.transfers[0], &plan.transfers[1]);
        assert!(
            near(b.rates_bps[0], 10e9) && near(b.rates_bps[1], 10e9),
            "{b:?}"
        );
        assert!(
            near(a.rates_bps[0], 0.0) && near(a.rates_bps[2], 10e9),
            "{a:?}"
        );
        assert!(a.meets_deadline && b.meets_deadline);
        assert!((b.completion_s.expect("done") - 20.0).abs() < 0.01, "{b:?}");
        assert!((a.completion_s.expect("done") - 40.0).abs() < 0.01, "{a:?}");
    }

    #[test]
    fn a_transfer_that_falls_behind_is_sped_up() {
        let pace = |transfers: &[Transfer]| -> Vec<f64> {
            paces(&link(), CALENDAR, &tenants(&[1.0]), &[], transfers)
                .expect("paces")
                .pace_bps
        };
        // 300 Gbit in 100 s: 3 Gbit/s. Halfway through with only 100 Gbit
        // moved (its sender was slow), 200 Gbit are left for 50 s: 4 Gbit/s.
        assert!(near(pace(&[transfer(0, 300.0, 100.0)])[0], 3e9));
        assert!(near(pace(&[transfer(0, 200.0, 50.0)])[0], 4e9));
        // Beside a transfer due first, the even pace is not enough: the
        // link is B's for 40 s from 10 s on, so A (600 Gbit by 100 s) must
        // have all of it in every other slice, now included.
        let a = transfer(0, 600.0, 100.0);
        let mut b = transfer(0, 400.0, 60.0);
        b.release_s = 10.0;
        let crowded = pace(&[a.clone(), b.clone()]);
        assert!(near(crowded[0], 10e9) && crowded[1] == 0.0, "{crowded:?}");
        // More than the link: the most it can have, not the even pace.
        assert!(near(pace(&[transfer(0, 2_000.0, 100.0)])[0], 10e9));
    }

    #[test]
    fn a_transfer_that_cannot_make_it_is_flagged_with_its_completion() {
        // 1200 Gbit by 100 s over 10 Gbit/s: 20 s late, moved as soon as
        // possible; 1000 Gbit by the deadline.
        let calendar = Calendar {
            slice_s: 10.0,
            slices: 15,
        };
        let plan = schedule(
            &link(),
            calendar,
            &tenants(&[1.0]),
            &[],
            &[transfer(0, 1200.0, 100.0)],
            Preference::Latest,
        )
        .expect("schedule");
        let late = &plan.transfers[0];
        assert!(!late.meets_deadline, "{late:?}");
        assert!((late.completion_s.expect("completes") - 120.0).abs() < 0.01);
        assert!(near(late.by_deadline_bits, 1000e9), "{late:?}");
        // Already past its deadline: it still moves, at once.
        let overdue = run(
            &tenants(&[1.0]),
            &[],
            &[transfer(0, 50.0, -5.0)],
            Preference::Latest,
        );
        let overdue = &overdue.transfers[0];
        assert!(
            !overdue.meets_deadline && near(overdue.rates_bps[0], 5e9),
            "{overdue:?}"
        );
    }

    #[test]
    fn a_transfer_that_cannot_make_it_gives_way_to_one_that_can() {
        // A cannot move 150 Gbit by 10 s over 10 Gbit/s; B can move its 100
        // Gbit by 20 s either now or next. A is given up: B goes now and is
        // through at 10 s, which leaves the next slice to A and to any
        // transfer due at 20 s that arrives meanwhile; A follows. (Counted
        // as a share, A's two thirds by its deadline would have taken the
        // first slice and pushed B into the second.)
        let a = transfer(0, 150.0, 10.0);
        let b = transfer(0, 100.0, 20.0);
        let plan = run(
            &tenants(&[1.0]),
            &[],
            &[a.clone(), b.clone()],
            Preference::Soonest,
        );
        let (late, due) = (&plan.transfers[0], &plan.transfers[1]);
        assert!(!late.meets_deadline && due.meets_deadline, "{plan:?}");
        assert!(near(due.rates_bps[0], 10e9), "{due:?}");
        assert!((due.completion_s.expect("done") - 10.0).abs() < 0.01);
        // The last 50 Gbit are spread over the third slice.
        assert!((late.completion_s.expect("done") - 30.0).abs() < 0.01);
        // As late as B's deadline allows, B takes the second slice: the
        // given-up A goes now, as soon as it can.
        let plan = run(
            &tenants(&[1.0]),
            &[],
            &[a.clone(), b.clone()],
            Preference::Latest,
        );
        let (late, due) = (&plan.transfers[0], &plan.transfers[1]);
        assert!(!late.meets_deadline && due.meets_deadline, "{plan:?}");
        assert!(near(late.rates_bps[0], 10e9) && near(due.rates_bps[1], 10e9));
        // One that can still make it is not given up, however tight.
        let plan = run(
            &tenants(&[1.0]),
            &[],
            &[transfer(0, 100.0, 10.0), b],
            Preference::Soonest,
        );
        assert!(plan.transfers.iter().all(|p| p.meets_deadline), "{plan:?}");
        assert!(near(plan.transfers[0].rates_bps[0], 10e9));
    }

    #[test]
    fn a_transfer_holding_its_tenant_at_its_fair_share_is_not_given_up() {
        // 500 Gbit fit by 50 s of the 900 asked: each tenant moves 5/9 of
        // its bytes, tenant 0 all of its first transfer and 33 Gbit of its
        // second, tenant 1 167 Gbit of its one. Both short transfers hold
        // their tenants' shares: given up, tenant 1's would wait behind
        // tenant 0's whole one, starved until then.
        let jobs = [
            transfer(0, 300.0, 50.0),
            transfer(0, 300.0, 50.0),
            transfer(1, 300.0, 50.0),
        ];
        let paced = paces(&link(), CALENDAR, &tenants(&[1.0, 1.0]), &[], &jobs).expect("paces");
        let short = &paced.schedule.transfers[2];
        assert!(
            !short.meets_deadline && near(short.by_deadline_bits, 500e9 / 3.0),
            "{paced:?}"
        );
        // At least the even pace of its share.
        assert!(paced.pace_bps[2] >= 3.33e9, "{paced:?}");
    }

    #[test]
    fn tenants_share_by_weight_and_no_job_is_starved() {
        // 500 Gbit of capacity by the deadline; tenant 0 asks 600, tenant 1
        // 300. Equal weights: each tenant moves 5/9 of what it asks.
        let jobs = [
            transfer(0, 300.0, 50.0),
            transfer(0, 300.0, 50.0),
            transfer(1, 300.0, 50.0),
        ];
        let equal = run(&tenants(&[1.0, 1.0]), &[], &jobs, Preference::Soonest);
        assert!((equal.fair_level - 5.0 / 9.0).abs() < 1e-3, "{equal:?}");
        let of = |plan: &Schedule, j: usize| plan.transfers[j].by_deadline_bits;
        assert!(of(&equal, 2) >= 166.6e9, "{equal:?}");
        assert!(of(&equal, 0) + of(&equal, 1) >= 333.3e9, "{equal:?}");
        // Within tenant 0, one job whole rather than two halves: the first.
        assert!(equal.transfers[0].meets_deadline, "{equal:?}");
        // Tenant 1 at twice the weight: 5/6 of each's ask at the level,
        // 250 Gbit each.
        let weighted = run(&tenants(&[1.0, 2.0]), &[], &jobs, Preference::Soonest);
        assert!(near(of(&weighted, 2), 250e9), "{weighted:?}");
        // One tenant alone keeps the whole link to itself.
        let alone = run(&tenants(&[1.0, 1.0]), &[], &jobs[..2], Preference::Soonest);
        assert!(near(of(&alone, 0) + of(&alone, 1), 500e9), "{alone:?}");
    }

    #[test]
    fn quotas_cap_a_tenant_and_reservations_keep_their_rate() {
        // Tenant 0 may use 4 Gbit/s; an ai-sync reservation holds 6 Gbit/s
        // for the first 50 s. Tenant 1's transfer takes the rest.
        let mut with_quota = tenants(&[1.0, 1.0]);
        with_quota[0].quota_bps = Some(4e9);
        let sync = Reservation {
            demand: Demand {
                rate: 6e9,
                ..over_the_link()
            },
            from_s: 0.0,
            until_s: 50.0,
        };
        let jobs = [transfer(0, 200.0, 100.0), transfer(1, 300.0, 100.0)];
        let plan = run(&with_quota, &[sync], &jobs, Preference::Soonest);
        for t in 0..CALENDAR.slices {
            assert!(
                plan.transfers[0].rates_bps[t] <= 4e9 * (1.0 + 1e-6),
                "{plan:?}"
            );
            assert!(
                plan.guaranteed_loads[t][0] <= 10e9 * (1.0 + 1e-6),
                "{plan:?}"
            );
        }
        assert!(near(plan.guaranteed_loads[0][0], 10e9), "{plan:?}");
        assert!(plan.transfers.iter().all(|t| t.meets_deadline), "{plan:?}");
    }

    #[test]
    fn no_slice_puts_a_guaranteed_class_above_capacity() {
        // Random rings with chords, reservations and transfers of two
        // tenants (some far beyond the network), either preference.
        use crate::classes::tests::both_ways;
        use crate::paths::{PathOptions, ShortestPaths};
        let mut next = crate::lp::tests::uniform(0x5eed_u64);
        for case in 0..24 {
            let n = 4 + (next() * 4.0) as usize;
            let mut edges = Vec::new();
            for a in 0..n {
                both_ways(&mut edges, a, (a + 1) % n, 10e9 + next() * 90e9, 1_000.0);
            }
            both_ways(&mut edges, 0, n / 2, 10e9 + next() * 90e9, 1_000.0);
            let network = Network {
                name: format!("random-{case}"),
                nodes: (0..n).map(|i| i.to_string()).collect(),
                edges,
            };
            let mut finder = ShortestPaths::new(&network);
            let mut pair = |next: &mut dyn FnMut() -> f64| {
                let src = (next() * n as f64) as usize % n;
                let dst = (src + 1 + (next() * (n - 1) as f64) as usize) % n;
                let options = PathOptions::k_shortest(3);
                Demand::over_candidates(&network, &mut finder, (src, dst), 0.0, &options)
            };
            let reservations: Vec<Reservation> = (0..2)
                .map(|_| Reservation {
                    demand: Demand {
                        rate: next() * 5e9,
                        ..pair(&mut next)
                    },
                    from_s: next() * 50.0,
                    until_s: 50.0 + next() * 50.0,
                })
                .collect();
            let transfers: Vec<Transfer> = (0..5)
                .map(|i| Transfer {
                    tenant: i % 2,
                    pairs: vec![pair(&mut next)],
                    remaining_bits: next() * 5e12,
                    release_s: next() * 30.0,
                    deadline_s: 20.0 + next() * 80.0,
                    max_rate_bps: Vec::new(),
                    guaranteed: i != 4,
                })
                .collect();
            let preference = if case % 2 == 0 {
                Preference::Soonest
            } else {
                Preference::Latest
            };
            let plan = schedule(
                &network,
                CALENDAR,
                &tenants(&[1.0, 2.0]),
                &reservations,
                &transfers,
                preference,
            )
            .expect("schedule");
            for (t, loads) in plan.loads.iter().enumerate() {
                for (e, load) in loads.iter().enumerate() {
                    let capacity = network.edges[e].capacity;
                    assert!(
                        *load <= capacity * (1.0 + 1e-6),
                        "case {case} slice {t} edge {e}"
                    );
                    assert!(plan.guaranteed_loads[t][e] <= *load + 1.0);
                }
            }
        }
    }

    #[test]
    fn bad_input_is_named() {
        let mut bad = transfer(0, 10.0, 10.0);
        bad.pairs[0].paths = vec![vec![7]];
        let error = schedule(
            &link(),
            CALENDAR,
            &tenants(&[1.0]),
            &[],
            &[bad],
            Preference::Soonest,
        )
        .expect_err("unknown edge");
        assert!(error.to_string().contains("transfer 0"), "{error}");
        let calendar = Calendar {
            slice_s: 0.0,
            slices: 3,
        };
        assert!(
            schedule(
                &link(),
                calendar,
                &tenants(&[1.0]),
                &[],
                &[],
                Preference::Soonest
            )
            .is_err()
        );
    }
}
