//! Bearer-token authentication and role-based authorisation, as a tower
//! layer in front of every gRPC service.
//!
//! The layer sees the HTTP/2 request path (`/aiwan.v1.IntentService/CreateJob`),
//! so one table maps each method to the least role allowed to call it. Health
//! and reflection stay open so that probes and grpcurl-style clients work
//! without a token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::store::Store;

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    /// The spelling used in config, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses the spelling of [`Role::as_str`].
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is calling: put into each authorised request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `tokens/{id}`.
    pub token_name: String,
    pub description: String,
    pub role: Role,
}

impl Caller {
    /// How the caller appears in the audit log and as a job's creator.
    pub fn actor(&self) -> String {
        format!("{} ({})", self.token_name, self.description)
    }
}

/// SHA-256 of a secret, hex-encoded: the only form in which secrets are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: `aiwan_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("aiwan_{}", hex::encode(bytes))
}

/// Least role allowed to call a method; `None` for open methods.
pub fn required_role(path: &str) -> Option<Role> {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return None;
    }
    let method = path.trim_start_matches('/');
    let role = match method {
        "aiwan.v1.TopologyService/GetTopology"
        | "aiwan.v1.TopologyService/WatchTopology"
        | "aiwan.v1.IntentService/GetJob"
        | "aiwan.v1.IntentService/ListJobs"
        | "aiwan.v1.PlanService/GetCurrentPlan"
        | "aiwan.v1.PlanService/GetPlan"
        | "aiwan.v1.PlanService/ListPlans"
        | "aiwan.v1.PlanService/WatchPlans"
        | "aiwan.v1.TelemetryService/GetLinkUtilization"
        | "aiwan.v1.TelemetryService/ListTopFlows"
        | "aiwan.v1.TelemetryService/GetTrafficMatrix"
        | "aiwan.v1.TelemetryService/ListDemandMatrices"
        | "aiwan.v1.TelemetryService/ListLinkForecasts"
        | "aiwan.v1.PlanService/GetControlLoop"
        | "aiwan.v1.EventService/WatchEvents" => Role::Viewer,
        "aiwan.v1.IntentService/CreateJob"
        | "aiwan.v1.IntentService/CancelJob"
        | "aiwan.v1.PlanService/PreviewPlan"
        | "aiwan.v1.PlanService/ApplyPlan"
        | "aiwan.v1.PlanService/RollbackPlan"
        | "aiwan.v1.PlanService/ApprovePlan" => Role::Operator,
        // Topology changes, tokens, the audit log, and anything not listed.
        _ => Role::Admin,
    };
    Some(role)
}

/// Resolves bearer secrets to callers: an in-memory cache in front of the
/// token table, so a token created by another controller sharing the
/// database is found too.
///
/// Entries live [`TOKEN_CACHE_TTL`], so a token revoked on another
/// controller sharing the database stops working here within it; unknown
/// secrets are remembered for [`NEGATIVE_TTL`], so a burst of bogus tokens
/// costs one database query each, not one per call. Both maps are bounded.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    cache: Arc<RwLock<HashMap<String, (Caller, std::time::Instant)>>>,
    unknown: Arc<RwLock<HashMap<String, std::time::Instant>>>,
}

/// How long a token found in the database is trusted without asking again.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// How long an unknown secret is refused without asking again.
pub const NEGATIVE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// Entries per map before it starts again.
const CACHE_LIMIT: usize = 10_000;

impl Authenticator {
    pub fn new(store: Store) -> Authenticator {
        Authenticator {
            store,
            cache: Arc::default(),
            unknown: Arc::default(),
        }
    }

    /// Forgets a revoked token at once.
    pub fn forget(&self, token_name: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, (caller, _)| caller.token_name != token_name);
        }
    }

    /// The caller a request's `authorization` header identifies.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let value = value
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization header is not ASCII"))?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .ok_or_else(|| Status::unauthenticated("authorization must be Bearer <token>"))?;
        let hash = hash_secret(secret);
        let fresh = |at: &std::time::Instant, ttl| at.elapsed() < ttl;
        if let Some((caller, at)) = self.cache.read().ok().and_then(|c| c.get(&hash).cloned())
            && fresh(&at, TOKEN_CACHE_TTL)
        {
            return Ok(caller);
        }
        if self
            .unknown
            .read()
            .ok()
            .and_then(|u| u.get(&hash).copied())
            .is_some_and(|at| fresh(&at, NEGATIVE_TTL))
        {
            return Err(Status::unauthenticated("unknown or revoked token"));
        }
        match self.store.find_token(&hash).await {
            Ok(Some(caller)) => {
                if let Ok(mut cache) = self.cache.write() {
                    if cache.len() >= CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.insert(hash, (caller.clone(), std::time::Instant::now()));
                }
                Ok(caller)
            }
            Ok(None) => {
                if let Ok(mut cache) = self.cache.write() {
                    cache.remove(&hash);
                }
                if let Ok(mut unknown) = self.unknown.write() {
                    if unknown.len() >= CACHE_LIMIT {
                        unknown.retain(|_, at| fresh(at, NEGATIVE_TTL));
                        if unknown.len() >= CACHE_LIMIT {
                            unknown.clear();
                        }
                    }
                    unknown.insert(hash, std::time::Instant::now());
                }
                Err(Status::unauthenticated("unknown or revoked token"))
            }
            Err(error) => {
                tracing::error!(%error, "token lookup failed");
                Err(Status::unavailable(
                    "token lookup failed: database unavailable",
                ))
            }
        }
    }
}

/// Tower layer that authenticates and authorises every request.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl AuthLayer {
    pub fn new(authenticator: Authenticator) -> AuthLayer {
        AuthLayer { authenticator }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the gRPC routes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Authenticator,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone is the one that was not polled ready; swap so the ready
        // one serves this request (tower's documented pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            let Some(needed) = required_role(request.uri().path()) else {
                return inner.call(request).await;
            };
            let caller = match authenticator.authenticate(request.headers()).await {
                Ok(caller) => caller,
                Err(status) => return Ok(status.into_http()),
            };
            if caller.role < needed {
                let status = Status::permission_denied(format!(
                    "{} needs role {}, token {} has role {}",
                    request.uri().path().trim_start_matches('/'),
                    needed.as_str(),
                    caller.token_name,
                    caller.role.as_str()
                ));
                return Ok(status.into_http());
            }
            request.extensions_mut().insert(caller);
            inner.call(request).await
        })
    }
}

/// The caller the auth layer attached to a request.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("request reached a service without authentication"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn method_table() {
        let cases = [
            ("/grpc.health.v1.Health/Check", None),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None,
            ),
            ("/aiwan.v1.IntentService/ListJobs", Some(Role::Viewer)),
            ("/aiwan.v1.IntentService/CreateJob", Some(Role::Operator)),
            (
                "/aiwan.v1.TopologyService/ImportTopology",
                Some(Role::Admin),
            ),
            ("/aiwan.v1.AdminService/CreateToken", Some(Role::Admin)),
            ("/aiwan.v1.Nonexistent/Method", Some(Role::Admin)),
        ];
        for (path, role) in cases {
            assert_eq!(required_role(path), role, "{path}");
        }
    }

    #[test]
    fn secrets_are_hashed() {
        let secret = new_secret();
        assert!(secret.starts_with("aiwan_") && secret.len() == 6 + 64);
        assert_ne!(new_secret(), secret);
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
