//! The `aiwan.v1` northbound services. Each handler converts and checks the
//! request (naming the offending field), calls the store, and converts back.

pub mod admin;
pub mod event;
pub mod intent;
pub mod plan;
pub mod telemetry;
pub mod topology;

use tokio::sync::watch;
use tonic::Status;

use crate::auth::Authenticator;
use crate::store::{Store, StoreError};

/// What every service shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub authenticator: Authenticator,
    /// The topology revision; bumped after every committed import.
    pub topology_revision: watch::Sender<i64>,
    /// The newest plan version; bumped after every committed plan change.
    pub plan_version: watch::Sender<i64>,
    /// Becomes true when the controller shuts down; streams end then, so
    /// that the graceful shutdown does not wait for watchers forever.
    pub shutdown: watch::Receiver<bool>,
    /// The collectors' telemetry store, when the controller runs them.
    pub telemetry: Option<crate::telemetry::Telemetry>,
    /// The simulated dataplane, when it is the southbound driver (it
    /// follows topology imports).
    pub simulated: Option<std::sync::Arc<crate::southbound::simulated::SimulatedDataplane>>,
    /// The controller's event stream.
    pub events: crate::events::EventBus,
    /// What the closed loop measured and predicted, when it runs.
    pub closed_loop: Option<crate::closed_loop::SharedView>,
    /// The closed loop's settings, for GetControlLoop.
    pub loop_config: crate::config::ClosedLoopConfig,
    /// Admission's settings (tenant policies).
    pub admission: crate::config::AdmissionConfig,
    /// Held while a job is admitted and stored.
    pub admission_lock: crate::admission::AdmissionLock,
    /// Tenants' quotas (admission) and weights.
    pub tenants: crate::config::TenantsConfig,
    /// The links the reconcile loop cannot program: planned around.
    pub unresolved_links: crate::southbound::discovery::UnresolvedLinks,
}

impl AppState {
    /// Resolves when the controller starts shutting down.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.clone();
        async move {
            // An error means the sender is gone: also a shutdown.
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    }
}

/// The stored topology and the jobs not cancelled: what plans and
/// admission read.
pub async fn topology_and_jobs(
    state: &AppState,
) -> Result<(aiwan_planner::Topology, Vec<crate::model::JobRecord>), Status> {
    let mut topology = state
        .store
        .load_topology()
        .await
        .map_err(store_status)?
        .topology;
    state.unresolved_links.plan_around(&mut topology);
    let jobs = state.store.uncancelled_jobs().await.map_err(store_status)?;
    Ok((topology, jobs))
}

/// The gRPC status for a store error. Database trouble is UNAVAILABLE (the
/// client may retry); the message never leaks SQL.
pub fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        StoreError::FailedPrecondition(why) => Status::failed_precondition(why),
        StoreError::Corrupt(_) => {
            tracing::error!(%error, "stored data not readable");
            Status::internal("stored data is not readable; see the controller log")
        }
        StoreError::Database(_) | StoreError::Migrate(_) => {
            tracing::error!(%error, "database error");
            Status::unavailable("database unavailable; see the controller log")
        }
    }
}

/// Default and maximum page sizes, as AIP-158 suggests: 0 means the
/// default, larger values are lowered to the maximum.
pub fn page_size(field: &str, requested: i32, default: i64) -> Result<i64, Status> {
    match requested {
        n if n < 0 => Err(Status::invalid_argument(format!(
            "{field}: must not be negative"
        ))),
        0 => Ok(default),
        n => Ok(i64::from(n).min(1000)),
    }
}

/// Cuts a list fetched with `limit + 1` rows down to one page; the extra
/// row, when present, means another page exists, whose token encodes the
/// key of this page's last item.
pub fn into_page<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(0));
    let next_page_token = match (more, items.last()) {
        (true, Some(last)) => encode_page_token(&key(last)),
        _ => String::new(),
    };
    (items, next_page_token)
}

/// An opaque page token for a key.
pub fn encode_page_token(key: &str) -> String {
    hex::encode(key.as_bytes())
}

/// The key inside a page token; empty for the first page.
pub fn decode_page_token(field: &str, token: &str) -> Result<String, Status> {
    if token.is_empty() {
        return Ok(String::new());
    }
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{field}: not a token returned by a previous call of this method"
            ))
        })
}
