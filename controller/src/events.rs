//! The controller's event stream: re-plans and their reasons, pushes per
//! router, drift repaired, agents lost and back, congestion predicted and
//! seen. The closed loop, the reconcile loop and the agent streams publish;
//! `EventService/WatchEvents` (the TUI, schedulers) subscribes.
//!
//! Bounded everywhere: a broadcast channel of [`CHANNEL_CAPACITY`] (a
//! subscriber that falls further behind is told how many it missed) and
//! the last [`RECENT`] events kept for new subscribers. Every event is also
//! logged, so the log and the stream tell the same story.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::model::now_ms;

/// Events a subscriber may lag behind before it misses some.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Events kept for subscribers that ask for the recent ones.
pub const RECENT: usize = 256;

/// What an event is about (`EventKind` in the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Replan,
    Proposal,
    PlanApplied,
    PlanFailed,
    Push,
    DriftRepaired,
    AgentLost,
    AgentBack,
    CongestionPredicted,
    CongestionSeen,
    CongestionCleared,
    JobAdmitted,
    JobAtRisk,
    JobOnTrack,
    LinkUnresolved,
    LinkResolved,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::Replan,
        EventKind::Proposal,
        EventKind::PlanApplied,
        EventKind::PlanFailed,
        EventKind::Push,
        EventKind::DriftRepaired,
        EventKind::AgentLost,
        EventKind::AgentBack,
        EventKind::CongestionPredicted,
        EventKind::CongestionSeen,
        EventKind::CongestionCleared,
        EventKind::JobAdmitted,
        EventKind::JobAtRisk,
        EventKind::JobOnTrack,
        EventKind::LinkUnresolved,
        EventKind::LinkResolved,
    ];

    fn index(self) -> usize {
        EventKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Replan => "replan",
            EventKind::Proposal => "proposal",
            EventKind::PlanApplied => "plan-applied",
            EventKind::PlanFailed => "plan-failed",
            EventKind::Push => "push",
            EventKind::DriftRepaired => "drift-repaired",
            EventKind::AgentLost => "agent-lost",
            EventKind::AgentBack => "agent-back",
            EventKind::CongestionPredicted => "congestion-predicted",
            EventKind::CongestionSeen => "congestion-seen",
            EventKind::CongestionCleared => "congestion-cleared",
            EventKind::JobAdmitted => "job-admitted",
            EventKind::JobAtRisk => "job-at-risk",
            EventKind::JobOnTrack => "job-on-track",
            EventKind::LinkUnresolved => "link-unresolved",
            EventKind::LinkResolved => "link-resolved",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub sequence: u64,
    pub at_ms: i64,
    pub kind: EventKind,
    /// `plans/3`, `nodes/r1`, `links/r1:eth1`.
    pub subject: String,
    pub message: String,
    pub figures: BTreeMap<String, f64>,
}

/// The bus. Cheap to clone; all clones share one stream.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    recent: Arc<Mutex<VecDeque<Event>>>,
    sequence: Arc<AtomicU64>,
    /// Events published, per kind, since the start.
    counts: Arc<[AtomicU64; 16]>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    pub fn new() -> EventBus {
        EventBus {
            sender: broadcast::Sender::new(CHANNEL_CAPACITY),
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(RECENT))),
            sequence: Arc::new(AtomicU64::new(0)),
            counts: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// How many events of `kind` were published since the start.
    pub fn count(&self, kind: EventKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    /// Publishes (and logs) an event.
    pub fn publish(
        &self,
        kind: EventKind,
        subject: impl Into<String>,
        message: impl Into<String>,
        figures: &[(&str, f64)],
    ) -> Event {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
        let event = Event {
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            at_ms: now_ms(),
            kind,
            subject: subject.into(),
            message: message.into(),
            figures: figures
                .iter()
                .filter(|(_, value)| value.is_finite())
                .map(|(name, value)| (name.to_string(), *value))
                .collect(),
        };
        tracing::info!(
            kind = kind.as_str(),
            subject = %event.subject,
            figures = ?event.figures,
            "{}",
            event.message
        );
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No subscriber is not an error.
        let _ = self.sender.send(event.clone());
        event
    }

    /// The recent events and a receiver for the ones after them (taken
    /// together, so nothing falls between).
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = self.sender.subscribe();
        (recent.iter().cloned().collect(), receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_recent_then_new_events_in_order() {
        let bus = EventBus::new();
        for i in 0..(RECENT + 5) {
            bus.publish(EventKind::Push, format!("nodes/r{i}"), "pushed", &[]);
        }
        let (recent, mut receiver) = bus.subscribe();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].sequence, 6);
        let event = bus.publish(
            EventKind::Replan,
            "plans/2",
            "congestion",
            &[("mlu_before", 1.2), ("bad", f64::NAN)],
        );
        assert_eq!(receiver.recv().await.expect("event"), event);
        assert_eq!(event.sequence, RECENT as u64 + 6);
        assert_eq!(event.figures.len(), 1, "non-finite figures are dropped");
    }
}
