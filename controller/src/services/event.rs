//! EventService: the controller's event stream ([`crate::events`]) to
//! clients, filtered by kind, ending when the controller shuts down.

use aiwan_api::v1 as pb;
use aiwan_api::v1::event_service_server::EventService;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::AppState;
use crate::convert::timestamp;
use crate::events::{Event, EventKind};

pub struct EventApi {
    state: AppState,
}

impl EventApi {
    pub fn new(state: AppState) -> EventApi {
        EventApi { state }
    }
}

/// Kinds a watcher may ask for: at most every kind once.
const MAX_KINDS: usize = 32;

pub fn kind_to_pb(kind: EventKind) -> pb::EventKind {
    match kind {
        EventKind::Replan => pb::EventKind::Replan,
        EventKind::Proposal => pb::EventKind::Proposal,
        EventKind::PlanApplied => pb::EventKind::PlanApplied,
        EventKind::PlanFailed => pb::EventKind::PlanFailed,
        EventKind::Push => pb::EventKind::Push,
        EventKind::DriftRepaired => pb::EventKind::DriftRepaired,
        EventKind::AgentLost => pb::EventKind::AgentLost,
        EventKind::AgentBack => pb::EventKind::AgentBack,
        EventKind::CongestionPredicted => pb::EventKind::CongestionPredicted,
        EventKind::CongestionSeen => pb::EventKind::CongestionSeen,
        EventKind::CongestionCleared => pb::EventKind::CongestionCleared,
        EventKind::JobAdmitted => pb::EventKind::JobAdmitted,
        EventKind::JobAtRisk => pb::EventKind::JobAtRisk,
        EventKind::JobOnTrack => pb::EventKind::JobOnTrack,
        EventKind::LinkUnresolved => pb::EventKind::LinkUnresolved,
        EventKind::LinkResolved => pb::EventKind::LinkResolved,
    }
}

fn event_to_pb(event: &Event) -> pb::Event {
    pb::Event {
        sequence: event.sequence,
        time: Some(timestamp(event.at_ms)),
        kind: kind_to_pb(event.kind) as i32,
        subject: event.subject.clone(),
        message: event.message.clone(),
        figures: event.figures.clone().into_iter().collect(),
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchEventsStream = ReceiverStream<Result<pb::WatchEventsResponse, Status>>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let request = request.into_inner();
        if request.kinds.len() > MAX_KINDS {
            return Err(Status::invalid_argument(format!(
                "kinds: at most {MAX_KINDS}"
            )));
        }
        let mut kinds = Vec::with_capacity(request.kinds.len());
        for (i, kind) in request.kinds.iter().enumerate() {
            match pb::EventKind::try_from(*kind) {
                Ok(pb::EventKind::Unspecified) | Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "kinds[{i}]: {kind} is not an event kind"
                    )));
                }
                Ok(kind) => kinds.push(kind as i32),
            }
        }
        let wanted = move |event: &pb::Event| kinds.is_empty() || kinds.contains(&event.kind);
        let (recent, mut receiver) = self.state.events.subscribe();
        let (sender, stream) = tokio::sync::mpsc::channel(64);
        let stopping = self.state.stopping();
        let include_recent = request.include_recent;
        tokio::spawn(async move {
            tokio::pin!(stopping);
            if include_recent {
                for event in recent.iter().map(event_to_pb).filter(&wanted) {
                    let message = Ok(pb::WatchEventsResponse { event: Some(event) });
                    if sender.send(message).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let event = tokio::select! {
                    received = receiver.recv() => received,
                    () = sender.closed() => return,
                    () = &mut stopping => return,
                };
                let event = match event {
                    Ok(event) => event_to_pb(&event),
                    Err(RecvError::Lagged(missed)) => pb::Event {
                        sequence: 0,
                        time: Some(timestamp(crate::model::now_ms())),
                        kind: pb::EventKind::EventsMissed as i32,
                        subject: String::new(),
                        message: format!("this stream fell behind and missed {missed} events"),
                        figures: [("missed".to_string(), missed as f64)]
                            .into_iter()
                            .collect(),
                    },
                    Err(RecvError::Closed) => return,
                };
                if event.kind != pb::EventKind::EventsMissed as i32 && !wanted(&event) {
                    continue;
                }
                if sender
                    .send(Ok(pb::WatchEventsResponse { event: Some(event) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}
