//! TopologyService: get, import (admin) and watch.

use aiwan_api::v1 as pb;
use aiwan_api::v1::topology_service_server::TopologyService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{AppState, store_status};
use crate::auth::caller;
use crate::convert::{topology_from_pb, topology_to_pb};
use crate::model::now_ms;

pub struct TopologyApi {
    state: AppState,
}

impl TopologyApi {
    pub fn new(state: AppState) -> TopologyApi {
        TopologyApi { state }
    }
}

async fn current(state: &AppState) -> Result<pb::Topology, Status> {
    let stored = state.store.load_topology().await.map_err(store_status)?;
    let mut topology = topology_to_pb(&stored.topology, stored.revision, stored.updated_ms);
    let unresolved = state.unresolved_links.get();
    for link in &mut topology.links {
        let end = link.name.trim_start_matches("links/");
        if let Some(why) = unresolved.get(end) {
            link.unresolved = why.clone();
        }
    }
    Ok(topology)
}

#[tonic::async_trait]
impl TopologyService for TopologyApi {
    async fn get_topology(
        &self,
        _request: Request<pb::GetTopologyRequest>,
    ) -> Result<Response<pb::GetTopologyResponse>, Status> {
        Ok(Response::new(pb::GetTopologyResponse {
            topology: Some(current(&self.state).await?),
        }))
    }

    async fn import_topology(
        &self,
        request: Request<pb::ImportTopologyRequest>,
    ) -> Result<Response<pb::ImportTopologyResponse>, Status> {
        let caller = caller(&request)?;
        let proto = request
            .into_inner()
            .topology
            .ok_or_else(|| Status::invalid_argument("topology: required"))?;
        let topology = topology_from_pb(&proto)?;
        let revision = self
            .state
            .store
            .replace_topology(
                &topology,
                &caller.actor(),
                "aiwan.v1.TopologyService/ImportTopology",
                now_ms(),
            )
            .await
            .map_err(store_status)?;
        tracing::info!(
            revision,
            nodes = topology.nodes.len(),
            links = topology.links.len(),
            actor = %caller.actor(),
            "topology imported"
        );
        self.state.topology_revision.send_replace(revision);
        if let Some(telemetry) = &self.state.telemetry {
            telemetry.refresh_sites(&topology);
        }
        if let Some(simulated) = &self.state.simulated {
            simulated.set_topology(topology.clone());
        }
        Ok(Response::new(pb::ImportTopologyResponse {
            topology: Some(current(&self.state).await?),
        }))
    }

    type WatchTopologyStream = ReceiverStream<Result<pb::WatchTopologyResponse, Status>>;

    async fn watch_topology(
        &self,
        _request: Request<pb::WatchTopologyRequest>,
    ) -> Result<Response<Self::WatchTopologyStream>, Status> {
        let first = current(&self.state).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut revisions = self.state.topology_revision.subscribe();
        revisions.mark_unchanged();
        let state = self.state.clone();
        let stopping = self.state.stopping();
        tokio::spawn(async move {
            tokio::pin!(stopping);
            let mut last = first.revision;
            let mut next = Ok(first);
            loop {
                let message = next.map(|topology| pb::WatchTopologyResponse {
                    topology: Some(topology),
                });
                let failed = message.is_err();
                if sender.send(message).await.is_err() || failed {
                    return; // client gone, or the error ended the stream
                }
                // Wait for a revision newer than the one sent; several quick
                // imports collapse into one message with the newest.
                loop {
                    tokio::select! {
                        changed = revisions.changed() => {
                            if changed.is_err() {
                                return; // server shutting down
                            }
                        }
                        () = sender.closed() => return,
                        () = &mut stopping => return,
                    }
                    if *revisions.borrow_and_update() > last {
                        break;
                    }
                }
                next = current(&state).await;
                if let Ok(topology) = &next {
                    last = topology.revision;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
