//! Self-observability: Prometheus metrics per RPC, and the `/metrics`
//! endpoint that serves them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the per-RPC metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `aiwan.v1.IntentService`.
    pub service: String,
    /// `CreateJob`.
    pub method: String,
}

/// Labels of the request counter: the RPC and the gRPC status it ended with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCodeLabels {
    pub service: String,
    pub method: String,
    /// gRPC status code name, `OK`, `INVALID_ARGUMENT`, ...
    pub code: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// The controller's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RpcCodeLabels, Counter>,
    latency: Family<RpcLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RpcCodeLabels, Counter>::default();
        let latency: Family<RpcLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "aiwan_grpc_requests",
            "gRPC requests handled, by method and status code",
            requests.clone(),
        );
        registry.register(
            "aiwan_grpc_request_duration_seconds",
            "Time to the response headers of each gRPC request",
            latency.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
        }
    }

    /// Adds metrics read from elsewhere at each scrape.
    /// The reconcile loop's and the agents' metrics.
    pub fn register_southbound(
        &mut self,
        southbound: &crate::southbound::metrics::SouthboundMetrics,
    ) {
        southbound.register(&mut self.registry);
    }

    pub fn register_closed_loop(&mut self, closed_loop: &crate::closed_loop::LoopMetrics) {
        closed_loop.register(&mut self.registry);
    }

    pub fn register_collector(&mut self, collector: impl prometheus_client::collector::Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    fn observe(&self, path: &str, code: &str, seconds: f64) {
        // A path no service serves is one label whatever it is: anyone may
        // send any path, and each new label would stay until restart.
        let (service, method) = if known_method(path) {
            path.trim_start_matches('/')
                .split_once('/')
                .unwrap_or(("unknown", "unknown"))
        } else {
            ("unknown", "unknown")
        };
        self.requests
            .get_or_create(&RpcCodeLabels {
                service: service.to_string(),
                method: method.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RpcLabels {
                service: service.to_string(),
                method: method.to_string(),
            })
            .observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The `/package.Service/Method` paths the controller serves: the
/// northbound API (from its descriptor set), health and reflection.
fn served_methods() -> &'static std::collections::HashSet<String> {
    static METHODS: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message as _;
        let mut methods: std::collections::HashSet<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        if let Ok(set) = prost_types::FileDescriptorSet::decode(aiwan_api::FILE_DESCRIPTOR_SET) {
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        methods.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                    }
                }
            }
        }
        methods
    })
}

fn known_method(path: &str) -> bool {
    served_methods().contains(path)
}

/// Name of a gRPC status code, as the gRPC spec spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Tower layer that counts and times every gRPC request. It sits outside
/// the auth layer so refused requests are counted too.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> MetricsLayer {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] wraps.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            // Errors travel in the headers of a trailers-only response; a
            // response without grpc-status in its headers is a success whose
            // status follows in the trailers.
            let code = match &result {
                Ok(response) => tonic::Status::from_header_map(response.headers())
                    .map(|status| code_name(status.code()))
                    .unwrap_or("OK"),
                Err(_) => "UNKNOWN",
            };
            let elapsed = started.elapsed();
            tracing::debug!(rpc = %path, code, ?elapsed, "request");
            metrics.observe(&path, code, elapsed.as_secs_f64());
            result
        })
    }
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener (separately, so that the bound address is
/// known before serving starts).
pub async fn bind_metrics(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
