//! End-to-end tests of the northbound gRPC API, each run against SQLite and
//! PostgreSQL, with the controller in-process on 127.0.0.1:0.

#[path = "support/mod.rs"]
mod support;

use aiwan_api::v1 as pb;
use support::{
    ADMIN_SECRET, Backend, Clients, TestDb, at, create_token, http_get, small_topology, start,
    sync_job,
};
use tonic::Code;

on_both_backends!(
    job_lifecycle,
    every_validation_case_names_its_field,
    tokens_and_roles_are_enforced,
    state_survives_restart,
    health_and_reflection,
    topology_import_and_watch,
    plans_from_jobs_and_telemetry_unavailable,
    metrics_count_requests,
    admission_answers_what_fits_and_applies_policies,
);

/// A controller with the small topology, and admin + operator + viewer clients.
struct Fixture {
    db: TestDb,
    controller: aiwan_controller::server::RunningController,
    admin: Clients,
    operator: Clients,
    viewer: Clients,
}

async fn fixture(backend: Backend, test: &str) -> Option<Fixture> {
    let db = TestDb::new(backend, test).await?;
    let controller = start(&db).await;
    let mut admin = Clients::connect(controller.grpc_addr, Some(ADMIN_SECRET)).await;
    admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(small_topology()),
        })
        .await
        .expect("import topology");
    let operator_secret = create_token(&mut admin, pb::Role::Operator, "scheduler").await;
    let viewer_secret = create_token(&mut admin, pb::Role::Viewer, "dashboard").await;
    let operator = Clients::connect(controller.grpc_addr, Some(&operator_secret)).await;
    let viewer = Clients::connect(controller.grpc_addr, Some(&viewer_secret)).await;
    Some(Fixture {
        db,
        controller,
        admin,
        operator,
        viewer,
    })
}

impl Fixture {
    async fn finish(self) {
        self.controller.shutdown().await.expect("clean shutdown");
        self.db.cleanup().await;
    }
}

async fn create(
    clients: &mut Clients,
    job_id: &str,
    job: pb::Job,
) -> Result<pb::Job, tonic::Status> {
    clients
        .intents
        .create_job(pb::CreateJobRequest {
            job_id: job_id.to_string(),
            job: Some(job),
        })
        .await
        .map(|r| r.into_inner().job.expect("job in response"))
}

async fn list_all_jobs(clients: &mut Clients) -> Vec<pb::Job> {
    clients
        .intents
        .list_jobs(pb::ListJobsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list jobs")
        .into_inner()
        .jobs
}

async fn audit(clients: &mut Clients) -> Vec<pb::AuditEvent> {
    clients
        .admin
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("audit")
        .into_inner()
        .events
}

async fn job_lifecycle(backend: Backend) {
    let Some(mut f) = fixture(backend, "job_lifecycle").await else {
        return;
    };
    let created = create(&mut f.operator, "train-1", sync_job())
        .await
        .expect("create");
    assert_eq!(created.name, "jobs/train-1");
    assert_eq!(created.state, pb::JobState::Active as i32);
    assert_eq!(created.creator, created.creator.trim());
    assert!(created.creator.contains("scheduler"), "{}", created.creator);
    // 40 Gbit/s shared by two destination pairs.
    let rates: Vec<i64> = created.demands.iter().map(|d| d.rate_bps).collect();
    assert_eq!(rates, [20_000_000_000, 20_000_000_000]);

    let bulk = pb::Job {
        traffic_class: pb::TrafficClass::AiBulk as i32,
        rate_bps: 0,
        volume_bytes: 500_000_000_000,
        deadline: Some(at(3_600_000)),
        start_time: Some(at(600_000)),
        ..sync_job()
    };
    let scheduled = create(&mut f.operator, "ckpt-2", bulk)
        .await
        .expect("create bulk");
    assert_eq!(scheduled.state, pb::JobState::Scheduled as i32);
    // 4e12 bits over the 50 minutes between start and deadline, per pair.
    // (The two timestamps were taken a few µs apart: allow 1e-6.)
    let per_pair = 4_000_000_000_000f64 / 3_000.0 / 2.0;
    let first = scheduled.demands[0].rate_bps as f64;
    assert!(
        (first / per_pair - 1.0).abs() < 1e-6,
        "{first} vs {per_pair}"
    );

    // Viewer reads; pages of one.
    let page = f
        .viewer
        .intents
        .list_jobs(pb::ListJobsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].name, "jobs/ckpt-2");
    let page2 = f
        .viewer
        .intents
        .list_jobs(pb::ListJobsRequest {
            page_size: 1,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("list page 2")
        .into_inner();
    assert_eq!(page2.jobs[0].name, "jobs/train-1");
    assert_eq!(page2.next_page_token, "");
    let by_tenant = f
        .viewer
        .intents
        .list_jobs(pb::ListJobsRequest {
            tenant: "nobody".into(),
            ..Default::default()
        })
        .await
        .expect("list by tenant")
        .into_inner();
    assert!(by_tenant.jobs.is_empty());

    let cancelled = f
        .operator
        .intents
        .cancel_job(pb::CancelJobRequest {
            name: "jobs/train-1".into(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    let again = f
        .operator
        .intents
        .cancel_job(pb::CancelJobRequest {
            name: "jobs/train-1".into(),
        })
        .await
        .expect_err("second cancel");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let missing = f
        .viewer
        .intents
        .get_job(pb::GetJobRequest {
            name: "jobs/nope".into(),
        })
        .await
        .expect_err("missing job");
    assert_eq!(missing.code(), Code::NotFound);
    let got = f
        .viewer
        .intents
        .get_job(pb::GetJobRequest {
            name: "jobs/train-1".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(got.state, pb::JobState::Cancelled as i32);

    let actions: Vec<(String, String)> = audit(&mut f.admin)
        .await
        .into_iter()
        .map(|e| (e.action, e.resource))
        .filter(|(action, _)| action.starts_with("aiwan.v1.IntentService"))
        .collect();
    assert_eq!(
        actions,
        [
            (
                "aiwan.v1.IntentService/CreateJob".into(),
                "jobs/train-1".into()
            ),
            (
                "aiwan.v1.IntentService/CreateJob".into(),
                "jobs/ckpt-2".into()
            ),
            (
                "aiwan.v1.IntentService/CancelJob".into(),
                "jobs/train-1".into()
            ),
        ]
    );
    f.finish().await;
}

type Breaker = fn(&mut pb::CreateJobRequest);

fn job_of(request: &mut pb::CreateJobRequest) -> &mut pb::Job {
    request.job.get_or_insert_with(sync_job)
}

fn endpoint_site(name: &str) -> pb::Endpoint {
    pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Site(name.into())),
    }
}

fn endpoint_prefix(prefix: &str) -> pb::Endpoint {
    pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Prefix(prefix.into())),
    }
}

/// Each broken request, and the start of the message it must get.
const VALIDATION_CASES: &[(&str, Breaker, &str)] = &[
    (
        "unknown site",
        |r| job_of(r).sources = vec![endpoint_site("sites/dc9")],
        "job.sources[0].site: site sites/dc9 does not exist",
    ),
    (
        "site not a resource name",
        |r| job_of(r).destinations[0] = endpoint_site("dc2"),
        "job.destinations[0].site: \"dc2\" is not a resource name",
    ),
    (
        "prefix that does not parse",
        |r| job_of(r).destinations[1] = endpoint_prefix("10.99.0.300/16"),
        "job.destinations[1].prefix: \"10.99.0.300/16\" is not a CIDR prefix",
    ),
    (
        "prefix without length",
        |r| job_of(r).destinations[1] = endpoint_prefix("10.99.0.0"),
        "job.destinations[1].prefix:",
    ),
    (
        "negative rate",
        |r| job_of(r).rate_bps = -5,
        "job.rate_bps: must be positive",
    ),
    (
        "zero rate",
        |r| job_of(r).rate_bps = 0,
        "job.rate_bps: must be positive for ai-sync jobs",
    ),
    (
        "negative volume",
        |r| {
            let j = job_of(r);
            j.traffic_class = pb::TrafficClass::AiBulk as i32;
            j.volume_bytes = -1;
        },
        "job.volume_bytes: must be positive",
    ),
    (
        "bulk without rate or volume",
        |r| {
            let j = job_of(r);
            j.traffic_class = pb::TrafficClass::AiBulk as i32;
            j.rate_bps = 0;
        },
        "job.rate_bps: ai-bulk jobs need",
    ),
    (
        "volume without deadline",
        |r| {
            let j = job_of(r);
            j.traffic_class = pb::TrafficClass::AiBulk as i32;
            j.volume_bytes = 1000;
        },
        "job.deadline: required when job.volume_bytes is set",
    ),
    (
        "deadline in the past",
        |r| {
            let j = job_of(r);
            j.traffic_class = pb::TrafficClass::AiBulk as i32;
            j.volume_bytes = 1000;
            j.deadline = Some(at(-60_000));
        },
        "job.deadline: is in the past",
    ),
    (
        "start after end",
        |r| {
            let j = job_of(r);
            j.start_time = Some(at(7_200_000));
            j.end_time = Some(at(3_600_000));
        },
        "job.end_time: must be after job.start_time",
    ),
    (
        "end in the past",
        |r| {
            let j = job_of(r);
            j.start_time = Some(at(-7_200_000));
            j.end_time = Some(at(-3_600_000));
        },
        "job.end_time: is in the past",
    ),
    (
        "name too long",
        |r| r.job_id = "a".repeat(64),
        "job_id: longer than 63 characters",
    ),
    (
        "name empty",
        |r| r.job_id = String::new(),
        "job_id: required",
    ),
    (
        "name with upper case",
        |r| r.job_id = "Train".into(),
        "job_id: must start with a lower-case letter",
    ),
    (
        "tenant too long",
        |r| job_of(r).tenant = "t".repeat(64),
        "job.tenant: longer than 63 characters",
    ),
    (
        "tenant missing",
        |r| job_of(r).tenant = String::new(),
        "job.tenant: required",
    ),
    (
        "class unspecified",
        |r| job_of(r).traffic_class = 0,
        "job.traffic_class:",
    ),
    (
        "class out of range",
        |r| job_of(r).traffic_class = 42,
        "job.traffic_class:",
    ),
    (
        "no sources",
        |r| job_of(r).sources.clear(),
        "job.sources: at least one endpoint is required",
    ),
    (
        "endpoint with nothing set",
        |r| job_of(r).sources = vec![pb::Endpoint { kind: None }],
        "job.sources[0]: set either site or prefix",
    ),
    (
        "same endpoint on both sides",
        |r| job_of(r).destinations[0] = endpoint_site("sites/dc1"),
        "job.destinations[0]: is also a source",
    ),
    (
        "priority too high",
        |r| job_of(r).priority = 1001,
        "job.priority: must be between 0 and 1000",
    ),
    ("job missing", |r| r.job = None, "job: required"),
    (
        "negative latency bound",
        |r| {
            job_of(r).max_latency = Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            })
        },
        "job.max_latency: must be a positive duration",
    ),
    (
        "zero latency bound",
        |r| {
            job_of(r).max_latency = Some(prost_types::Duration {
                seconds: 0,
                nanos: 0,
            })
        },
        "job.max_latency: must be a positive duration",
    ),
    (
        "bad timestamp",
        |r| {
            job_of(r).start_time = Some(prost_types::Timestamp {
                seconds: 1,
                nanos: -1,
            })
        },
        "job.start_time:",
    ),
    (
        "pinned path with two destinations",
        |r| job_of(r).pinned_path = vec!["nodes/a".into(), "nodes/b".into()],
        "job.pinned_path: needs exactly one source and one destination",
    ),
    (
        "pinned path of one router",
        |r| {
            let j = job_of(r);
            j.destinations.truncate(1);
            j.pinned_path = vec!["nodes/a".into()];
        },
        "job.pinned_path: must name 2 to 64 routers",
    ),
    (
        "pinned path of bare names",
        |r| {
            let j = job_of(r);
            j.destinations.truncate(1);
            j.pinned_path = vec!["nodes/a".into(), "b".into()];
        },
        "job.pinned_path[1]: \"b\" is not a resource name like nodes/{id}",
    ),
    (
        "pinned path visiting a router twice",
        |r| {
            let j = job_of(r);
            j.destinations.truncate(1);
            j.pinned_path = ["a", "b", "a"]
                .iter()
                .map(|n| format!("nodes/{n}"))
                .collect();
        },
        "job.pinned_path[2]: nodes/a appears twice",
    ),
    (
        "flow without a pinned path",
        |r| job_of(r).flow = Some(pb::FlowMatch::default()),
        "job.flow: only with job.pinned_path",
    ),
    (
        "ports without a protocol that has them",
        |r| {
            let j = job_of(r);
            j.destinations.truncate(1);
            j.pinned_path = vec!["nodes/a".into(), "nodes/b".into()];
            j.flow = Some(pb::FlowMatch {
                ip_protocol: Some(1),
                destination_port_first: 80,
                destination_port_last: 80,
            });
        },
        "job.flow.ip_protocol: ports need a protocol with ports",
    ),
    (
        "ports reversed",
        |r| {
            let j = job_of(r);
            j.destinations.truncate(1);
            j.pinned_path = vec!["nodes/a".into(), "nodes/b".into()];
            j.flow = Some(pb::FlowMatch {
                ip_protocol: Some(6),
                destination_port_first: 90,
                destination_port_last: 80,
            });
        },
        "job.flow.destination_port_last: must not be below destination_port_first",
    ),
];

async fn every_validation_case_names_its_field(backend: Backend) {
    let Some(mut f) = fixture(backend, "every_validation_case_names_its_field").await else {
        return;
    };
    let audit_before = audit(&mut f.admin).await.len();
    for (case, breaker, expected) in VALIDATION_CASES {
        let mut request = pb::CreateJobRequest {
            job_id: "valid-id".into(),
            job: Some(sync_job()),
        };
        breaker(&mut request);
        let status = f
            .operator
            .intents
            .create_job(request)
            .await
            .expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(
            status.message().starts_with(expected),
            "{case}: got {:?}, expected it to start with {expected:?}",
            status.message()
        );
    }
    // Duplicate name: INVALID_ARGUMENT naming the field, as the others.
    create(&mut f.operator, "dup", sync_job())
        .await
        .expect("first");
    let status = create(&mut f.operator, "dup", sync_job())
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "job_id: jobs/dup already exists");
    // Bad names and pages on the read side.
    let status = f
        .viewer
        .intents
        .get_job(pb::GetJobRequest {
            name: "job/dup".into(),
        })
        .await
        .expect_err("bad name");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("name: "),
        "{}",
        status.message()
    );
    for (request, expected) in [
        (
            pb::ListJobsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size: ",
        ),
        (
            pb::ListJobsRequest {
                page_token: "zz".into(),
                ..Default::default()
            },
            "page_token: ",
        ),
    ] {
        let status = f
            .viewer
            .intents
            .list_jobs(request)
            .await
            .expect_err(expected);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(expected),
            "{}",
            status.message()
        );
    }
    // Nothing of the refused requests was written: one job, one audit row.
    let jobs = list_all_jobs(&mut f.viewer).await;
    assert_eq!(
        jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["jobs/dup"]
    );
    assert_eq!(audit(&mut f.admin).await.len(), audit_before + 1);

    // A broken topology is refused whole, naming the item.
    let mut topology = small_topology();
    topology.links[3].dst_node = "nodes/ghost".into();
    let status = f
        .admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(topology),
        })
        .await
        .expect_err("broken topology");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("ghost"), "{}", status.message());
    let mut topology = small_topology();
    topology.links[0].capacity_bps = 0;
    let status = f
        .admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(topology),
        })
        .await
        .expect_err("zero capacity");
    assert_eq!(
        status.message(),
        "topology.links[0].capacity_bps: must be positive"
    );
    let stored = f
        .viewer
        .topology
        .get_topology(pb::GetTopologyRequest {})
        .await
        .expect("get")
        .into_inner()
        .topology
        .expect("topology");
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.links.len(), 8);
    f.finish().await;
}

async fn tokens_and_roles_are_enforced(backend: Backend) {
    let Some(mut f) = fixture(backend, "tokens_and_roles_are_enforced").await else {
        return;
    };
    let addr = f.controller.grpc_addr;
    let mut anonymous = Clients::connect(addr, None).await;
    let status = anonymous
        .intents
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("missing authorization"),
        "{}",
        status.message()
    );

    let mut wrong = Clients::connect(addr, Some("not-a-real-token-at-all")).await;
    let status = wrong
        .intents
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = create(&mut f.viewer, "by-viewer", sync_job())
        .await
        .expect_err("viewer writes");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("needs role operator"),
        "{}",
        status.message()
    );

    let status = f
        .operator
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(small_topology()),
        })
        .await
        .expect_err("operator imports topology");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = f
        .operator
        .admin
        .create_token(pb::CreateTokenRequest {
            role: pb::Role::Admin as i32,
            description: "escalate".into(),
        })
        .await
        .expect_err("operator makes tokens");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = f
        .viewer
        .admin
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .expect_err("viewer reads audit");
    assert_eq!(status.code(), Code::PermissionDenied);
    // Nothing the refused calls asked for happened.
    assert!(list_all_jobs(&mut f.viewer).await.is_empty());

    // Revoking a token takes effect at once.
    let tokens = f
        .admin
        .admin
        .list_tokens(pb::ListTokensRequest {})
        .await
        .expect("list tokens")
        .into_inner()
        .tokens;
    let viewer_token = tokens
        .iter()
        .find(|t| t.description == "dashboard")
        .expect("viewer token listed");
    assert_eq!(tokens.len(), 3, "bootstrap, operator, viewer: {tokens:?}");
    f.admin
        .admin
        .delete_token(pb::DeleteTokenRequest {
            name: viewer_token.name.clone(),
        })
        .await
        .expect("revoke");
    let status = f
        .viewer
        .intents
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect_err("revoked token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = f
        .admin
        .admin
        .create_token(pb::CreateTokenRequest {
            role: 0,
            description: "x".into(),
        })
        .await
        .expect_err("role missing");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("role: "));
    let audit_actions: Vec<String> = audit(&mut f.admin)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(audit_actions.contains(&"aiwan.v1.AdminService/DeleteToken".to_string()));
    assert_eq!(
        audit_actions
            .iter()
            .filter(|a| *a == "aiwan.v1.AdminService/CreateToken")
            .count(),
        2
    );
    f.finish().await;
}

async fn state_survives_restart(backend: Backend) {
    let Some(mut f) = fixture(backend, "state_survives_restart").await else {
        return;
    };
    create(&mut f.operator, "train-1", sync_job())
        .await
        .expect("create");
    create(&mut f.operator, "train-2", sync_job())
        .await
        .expect("create");
    f.operator
        .intents
        .cancel_job(pb::CancelJobRequest {
            name: "jobs/train-2".into(),
        })
        .await
        .expect("cancel");
    let operator_secret = create_token(&mut f.admin, pb::Role::Operator, "kept").await;
    let jobs_before = list_all_jobs(&mut f.viewer).await;
    let audit_before = audit(&mut f.admin).await;
    let Fixture { db, controller, .. } = f;
    controller.shutdown().await.expect("shutdown");

    let controller = start(&db).await;
    let mut admin = Clients::connect(controller.grpc_addr, Some(ADMIN_SECRET)).await;
    let mut operator = Clients::connect(controller.grpc_addr, Some(&operator_secret)).await;
    assert_eq!(list_all_jobs(&mut operator).await, jobs_before);
    assert_eq!(audit(&mut admin).await, audit_before);
    let topology = admin
        .topology
        .get_topology(pb::GetTopologyRequest {})
        .await
        .expect("get")
        .into_inner()
        .topology
        .expect("topology");
    let mut expected = small_topology();
    expected
        .links
        .sort_by(|a, b| (&a.src_node, &a.src_interface).cmp(&(&b.src_node, &b.src_interface)));
    assert_eq!(topology.revision, 1);
    assert_eq!(topology.links.len(), expected.links.len());
    for (got, want) in topology.links.iter().zip(&expected.links) {
        assert_eq!(
            (&got.src_node, got.capacity_bps),
            (&want.src_node, want.capacity_bps)
        );
    }
    // And it keeps working after the restart.
    create(&mut operator, "train-3", sync_job())
        .await
        .expect("create after restart");
    controller.shutdown().await.expect("shutdown");
    db.cleanup().await;
}

async fn health_and_reflection(backend: Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let Some(f) = fixture(backend, "health_and_reflection").await else {
        return;
    };
    // Both work without a token, as probes and grpcurl expect.
    let channel = support::channel(f.controller.grpc_addr).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "aiwan.v1.IntentService", "aiwan.v1.TopologyService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in aiwan_api::SERVICE_NAMES
        .iter()
        .chain(&["grpc.health.v1.Health"])
    {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    f.finish().await;
}

async fn topology_import_and_watch(backend: Backend) {
    let Some(mut f) = fixture(backend, "topology_import_and_watch").await else {
        return;
    };
    let mut events = f
        .viewer
        .topology
        .watch_topology(pb::WatchTopologyRequest {})
        .await
        .expect("watch")
        .into_inner();
    let first = events.message().await.expect("event").expect("first event");
    assert_eq!(first.topology.expect("topology").revision, 1);

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/ai-wan.clab.yml");
    let lab = aiwan_planner::formats::clab::load_clab(&path).expect("lab topology parses");
    let proto = aiwan_controller::convert::topology_to_pb(&lab, 0, 0);
    let stored = f
        .admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(proto),
        })
        .await
        .expect("import lab topology")
        .into_inner()
        .topology
        .expect("topology");
    assert_eq!(stored.revision, 2);
    let got = f
        .viewer
        .topology
        .get_topology(pb::GetTopologyRequest {})
        .await
        .expect("get")
        .into_inner()
        .topology
        .expect("topology");
    assert_eq!(got, stored);
    assert_eq!(got.nodes.len(), lab.nodes.len());
    assert_eq!(got.links.len(), lab.links.len());
    for link in &lab.links {
        let name = format!("links/{}:{}", link.src, link.src_interface);
        let found = got
            .links
            .iter()
            .find(|l| l.name == name)
            .expect("link stored");
        assert_eq!(found.capacity_bps as u64, link.capacity_bps, "{name}");
        assert_eq!(found.dst_node, format!("nodes/{}", link.dst));
    }
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.message())
        .await
        .expect("watch event in time")
        .expect("event")
        .expect("second event");
    assert_eq!(event.topology.expect("topology").revision, 2);
    f.finish().await;
}

async fn plans_from_jobs_and_telemetry_unavailable(backend: Backend) {
    let Some(mut f) = fixture(backend, "plans_from_jobs_and_telemetry_unavailable").await else {
        return;
    };
    let status = f
        .viewer
        .plans
        .get_current_plan(pb::GetCurrentPlanRequest {})
        .await
        .expect_err("no plan yet");
    assert_eq!(status.code(), Code::NotFound);
    // 40 Gbit/s ai-sync from dc1 to dc2 and to a prefix no node owns.
    create(&mut f.operator, "train-1", sync_job())
        .await
        .expect("create");
    // The same again, but every path is 4 ms and it allows 3 ms: admission
    // tells it at once that nothing can be guaranteed, and it is not
    // planned (admit-partial, at nothing).
    let tight = pb::Job {
        max_latency: Some(prost_types::Duration {
            seconds: 0,
            nanos: 3_000_000,
        }),
        ..sync_job()
    };
    let stored = create(&mut f.operator, "tight", tight)
        .await
        .expect("create");
    assert_eq!(stored.max_latency.map(|d| d.nanos), Some(3_000_000));
    let answer = stored.admission.expect("admission");
    assert_eq!(answer.outcome, pb::AdmissionOutcome::Partial as i32);
    assert_eq!(answer.guaranteed_bps, 0);
    assert!(
        answer.detail.contains("no path meets the latency bound"),
        "{answer:?}"
    );
    // A job pinned to a path through a router that does not exist: stored
    // as given, and left out of the plan with the reason.
    let mut pinned = sync_job();
    pinned.destinations.truncate(1);
    pinned.pinned_path = vec!["nodes/dc1-r".into(), "nodes/nowhere".into()];
    pinned.flow = Some(pb::FlowMatch {
        ip_protocol: Some(17),
        destination_port_first: 4791,
        destination_port_last: 4791,
    });
    let stored = create(&mut f.operator, "pinned", pinned.clone())
        .await
        .expect("create");
    assert_eq!(stored.pinned_path, pinned.pinned_path);
    assert_eq!(stored.flow, pinned.flow);
    let operation = f
        .operator
        .plans
        .apply_plan(pb::ApplyPlanRequest {
            reason: "test".into(),
        })
        .await
        .expect("apply")
        .into_inner()
        .operation
        .expect("operation");
    assert!(operation.done);
    let Some(pb::operation::Result::Response(plan)) = operation.result else {
        panic!("apply failed: {operation:?}");
    };
    assert_eq!(plan.name, "plans/1");
    assert_eq!(plan.status, pb::PlanStatus::Applying as i32);
    // 20 Gbit/s dc1-r -> dc2-r over 100G (via wan-a) and 40G (via wan-b):
    // the optimum is 20/140.
    let metrics = plan.metrics.expect("metrics");
    assert!((metrics.mlu - 20.0 / 140.0).abs() < 1e-3, "{metrics:?}");
    // The tight job, guaranteed nothing, is not in the plan: what is
    // planned is satisfied.
    assert!(
        (metrics.ai_sync_satisfaction - 1.0).abs() < 1e-9,
        "{metrics:?}"
    );
    // Losing the 100G path puts all 20G on the 40G one.
    assert!(
        (metrics.worst_failure_mlu - 0.5).abs() < 1e-6,
        "{metrics:?}"
    );
    for node in ["nodes/dc1-r", "nodes/wan-a", "nodes/wan-b"] {
        assert!(
            plan.pending_nodes.iter().any(|n| n == node),
            "{node} not pending: {:?}",
            plan.pending_nodes
        );
    }
    let current = f
        .viewer
        .plans
        .get_current_plan(pb::GetCurrentPlanRequest {})
        .await
        .expect("current")
        .into_inner()
        .plan
        .expect("plan");
    assert_eq!(current.version, 1);

    // Preview a hypothetical 60G bulk transfer: computed, not stored.
    let bulk = pb::Job {
        traffic_class: pb::TrafficClass::AiBulk as i32,
        rate_bps: 60_000_000_000,
        destinations: vec![endpoint_site("sites/dc2")],
        ..sync_job()
    };
    let preview = f
        .operator
        .plans
        .preview_plan(pb::PreviewPlanRequest { job: Some(bulk) })
        .await
        .expect("preview")
        .into_inner()
        .plan
        .expect("plan");
    assert_eq!(preview.name, "plans/preview");
    let preview_mlu = preview.metrics.expect("metrics").mlu;
    assert!((preview_mlu - 80.0 / 140.0).abs() < 1e-2, "{preview_mlu}");
    let mut bad = sync_job();
    bad.rate_bps = -1;
    let status = f
        .operator
        .plans
        .preview_plan(pb::PreviewPlanRequest { job: Some(bad) })
        .await
        .expect_err("bad job");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Roll back to plan 1: a new version, the old one superseded.
    let operation = f
        .operator
        .plans
        .rollback_plan(pb::RollbackPlanRequest {
            name: "plans/1".into(),
        })
        .await
        .expect("rollback")
        .into_inner()
        .operation
        .expect("operation");
    let Some(pb::operation::Result::Response(rolled)) = operation.result else {
        panic!("rollback failed");
    };
    assert_eq!(rolled.version, 2);
    assert_eq!(rolled.reason, "rollback to plans/1");
    let plans = f
        .viewer
        .plans
        .list_plans(pb::ListPlansRequest::default())
        .await
        .expect("list plans")
        .into_inner()
        .plans;
    let statuses: Vec<(i64, i32)> = plans.iter().map(|p| (p.version, p.status)).collect();
    assert_eq!(
        statuses,
        [
            (2, pb::PlanStatus::Applying as i32),
            (1, pb::PlanStatus::Superseded as i32)
        ]
    );
    let status = f
        .operator
        .plans
        .rollback_plan(pb::RollbackPlanRequest {
            name: "plans/9".into(),
        })
        .await
        .expect_err("unknown plan");
    assert_eq!(status.code(), Code::NotFound);
    let status = f
        .viewer
        .plans
        .apply_plan(pb::ApplyPlanRequest::default())
        .await
        .expect_err("viewer applies");
    assert_eq!(status.code(), Code::PermissionDenied);
    let actions: Vec<String> = audit(&mut f.admin)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(actions.contains(&"aiwan.v1.PlanService/ApplyPlan".to_string()));
    assert!(actions.contains(&"aiwan.v1.PlanService/RollbackPlan".to_string()));

    let status = f
        .viewer
        .telemetry
        .list_top_flows(pb::ListTopFlowsRequest::default())
        .await
        .expect_err("this controller runs no collector");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("--netflow-listen"),
        "{}",
        status.message()
    );
    f.finish().await;
}

async fn metrics_count_requests(backend: Backend) {
    let Some(mut f) = fixture(backend, "metrics_count_requests").await else {
        return;
    };
    create(&mut f.operator, "m-1", sync_job())
        .await
        .expect("create");
    let _ = create(&mut f.viewer, "m-2", sync_job())
        .await
        .expect_err("denied");
    let addr = f.controller.metrics_addr.expect("metrics enabled");
    let text = http_get(addr, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for expected in [
        r#"aiwan_grpc_requests_total{service="aiwan.v1.IntentService",method="CreateJob",code="OK"} 1"#,
        r#"aiwan_grpc_requests_total{service="aiwan.v1.IntentService",method="CreateJob",code="PERMISSION_DENIED"} 1"#,
        r#"aiwan_grpc_request_duration_seconds_count{service="aiwan.v1.IntentService",method="CreateJob"} 2"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    f.finish().await;
}

/// A plain HTTP/1.1 GET, enough for the metrics endpoint.
/// With a certificate configured the API is served over TLS only, and the
/// CLI's client reaches it with the CA file.
/// An ai-sync job between the datacentres of `lab/ai-wan.clab.yml`.
fn dc_sync(rate_bps: i64, policy: pb::AdmissionPolicy) -> pb::Job {
    let site = |s: &str| pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Site(format!("sites/{s}"))),
    };
    pb::Job {
        tenant: "team-a".into(),
        traffic_class: pb::TrafficClass::AiSync as i32,
        sources: vec![site("dc1")],
        destinations: vec![site("dc2")],
        rate_bps,
        admission_policy: policy as i32,
        ..pb::Job::default()
    }
}

async fn admission_answers_what_fits_and_applies_policies(backend: Backend) {
    let test = "admission_answers_what_fits_and_applies_policies";
    let Some(db) = TestDb::new(backend, test).await else {
        return;
    };
    let mut config = support::test_config(&db);
    config.admission.requeue_interval_ms = 200;
    let controller = aiwan_controller::server::start(&config)
        .await
        .expect("controller starts");
    let mut admin = Clients::connect(controller.grpc_addr, Some(ADMIN_SECRET)).await;
    // dc1-edge to dc2-edge: east 10G (6 ms, the only path within ai-sync's
    // default bound of 1.5 x the lowest latency), and the south path and
    // the two through the wan-north/wan-south cross link: the planner's
    // four shortest paths carry 90G.
    let lab = aiwan_planner::formats::clab::parse_clab(include_str!("../lab/ai-wan.clab.yml"))
        .expect("lab");
    admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(aiwan_controller::convert::topology_to_pb(&lab, 0, 0)),
        })
        .await
        .expect("import");
    let admission = |job: &pb::Job| job.admission.clone().expect("an admission answer");
    let near = |bps: i64, gbps: f64| (bps as f64 - gbps * 1e9).abs() < 0.01e9;

    // The issue's case: 30 Gbit/s of ai-sync. Previewed, then created: 10G
    // within the bound, 20G on longer paths, no link above capacity.
    let preview = admin
        .plans
        .preview_plan(pb::PreviewPlanRequest {
            job: Some(dc_sync(30_000_000_000, pb::AdmissionPolicy::Unspecified)),
        })
        .await
        .expect("preview")
        .into_inner();
    let answer = preview.admission.expect("the preview's admission");
    assert_eq!(
        answer.outcome,
        pb::AdmissionOutcome::Admitted as i32,
        "{answer:?}"
    );
    assert!(near(answer.within_latency_bound_bps, 10.0), "{answer:?}");
    assert!(near(answer.beyond_latency_bound_bps, 20.0), "{answer:?}");
    let metrics = preview.plan.and_then(|p| p.metrics).expect("metrics");
    assert!(metrics.mlu <= 1.0 + 1e-6, "{metrics:?}");
    let first = create(
        &mut admin,
        "sync-30",
        dc_sync(30_000_000_000, pb::AdmissionPolicy::Unspecified),
    )
    .await
    .expect("create");
    assert_eq!(admission(&first).guaranteed_bps, answer.guaranteed_bps);
    assert_eq!(
        first.admission_policy,
        pb::AdmissionPolicy::AdmitPartial as i32
    );
    assert!(admission(&first).detail.contains("30 Gbit/s asked"));

    // 30G of the 90G are promised (the east path's 10G among them): 85G
    // more is refused under REJECT, naming what fits, and nothing is
    // stored.
    let status = create(
        &mut admin,
        "big",
        dc_sync(85_000_000_000, pb::AdmissionPolicy::Reject),
    )
    .await
    .expect_err("rejected");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with(
            "job.rate_bps: 85 Gbit/s asked: 0 bit/s within the latency bound, 60 Gbit/s"
        ),
        "{status:?}"
    );
    assert!(
        status.message().contains("25 Gbit/s does not fit"),
        "{status:?}"
    );
    let missing = admin
        .intents
        .get_job(pb::GetJobRequest {
            name: "jobs/big".into(),
        })
        .await
        .expect_err("not stored");
    assert_eq!(missing.code(), Code::NotFound);

    // Under QUEUE it waits, unplanned.
    let queued = create(
        &mut admin,
        "waiting",
        dc_sync(85_000_000_000, pb::AdmissionPolicy::Queue),
    )
    .await
    .expect("queued");
    assert_eq!(queued.state, pb::JobState::Queued as i32, "{queued:?}");
    assert_eq!(
        admission(&queued).outcome,
        pb::AdmissionOutcome::Queued as i32
    );
    support::apply_plan(&mut admin, "with a queued job").await;
    let metrics = support::current_plan(&mut admin)
        .await
        .metrics
        .expect("metrics");
    // 30G over the 90G: the queued 85G would take it above 1.
    assert!(metrics.mlu < 0.5, "the queued job is planned: {metrics:?}");

    // The first job goes: the queued one is admitted whole, and told so.
    admin
        .intents
        .cancel_job(pb::CancelJobRequest {
            name: "jobs/sync-30".into(),
        })
        .await
        .expect("cancel");
    let mut admitted = None;
    for _ in 0..100 {
        let job = admin
            .intents
            .get_job(pb::GetJobRequest {
                name: "jobs/waiting".into(),
            })
            .await
            .expect("get")
            .into_inner()
            .job
            .expect("job");
        if job.state == pb::JobState::Active as i32 {
            admitted = Some(job);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let admitted = admitted.expect("the queued job admitted within 10 s");
    assert_eq!(
        admission(&admitted).outcome,
        pb::AdmissionOutcome::Admitted as i32
    );
    assert_eq!(admission(&admitted).guaranteed_bps, 85_000_000_000);

    // 5G are left: 40G more under ADMIT_PARTIAL gets 5G.
    let partial = create(
        &mut admin,
        "partial",
        dc_sync(40_000_000_000, pb::AdmissionPolicy::AdmitPartial),
    )
    .await
    .expect("partial");
    assert_eq!(
        admission(&partial).outcome,
        pb::AdmissionOutcome::Partial as i32
    );
    assert!(near(admission(&partial).guaranteed_bps, 5.0), "{partial:?}");
    support::apply_plan(&mut admin, "all guarantees").await;
    let metrics = support::current_plan(&mut admin)
        .await
        .metrics
        .expect("metrics");
    // 90G of guarantees on the 90G between the datacentres.
    assert!(metrics.mlu <= 1.0 + 1e-6, "{metrics:?}");
    assert!(metrics.mlu > 0.95, "{metrics:?}");
    let audit = audit(&mut admin).await;
    assert!(
        audit
            .iter()
            .any(|e| e.action == "aiwan.admission/Admit" && e.resource == "jobs/waiting"),
        "{audit:?}"
    );
    controller.shutdown().await.expect("clean shutdown");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_a_certificate_is_configured() {
    use aiwan_controller::client::{Connection, connect};

    let db = TestDb::new(Backend::Sqlite, "tls").await.expect("sqlite");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("self-signed certificate");
    let cert_file = db.dir.path().join("server.crt");
    let key_file = db.dir.path().join("server.key");
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write key");
    let mut config = support::test_config(&db);
    config.tls.cert_file = Some(cert_file.clone());
    config.tls.key_file = Some(key_file);
    let controller = aiwan_controller::server::start(&config)
        .await
        .expect("start with TLS");
    let port = controller.grpc_addr.port();

    let secure = Connection {
        endpoint: format!("https://localhost:{port}"),
        token: Some(ADMIN_SECRET.to_string()),
        token_file: None,
        ca_file: Some(cert_file),
    };
    let channel = connect(&secure).await.expect("TLS connect");
    let mut topology =
        aiwan_api::v1::topology_service_client::TopologyServiceClient::with_interceptor(
            channel,
            aiwan_controller::client::BearerToken::new(Some(ADMIN_SECRET)).expect("token"),
        );
    topology
        .get_topology(pb::GetTopologyRequest {})
        .await
        .expect("call over TLS");

    // Plain HTTP/2 is refused.
    let plain = Connection {
        endpoint: format!("http://127.0.0.1:{port}"),
        token: Some(ADMIN_SECRET.to_string()),
        token_file: None,
        ca_file: None,
    };
    let refused = match connect(&plain).await {
        Err(_) => true,
        Ok(channel) => aiwan_api::v1::topology_service_client::TopologyServiceClient::new(channel)
            .get_topology(pb::GetTopologyRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "plaintext call succeeded against a TLS server");
    controller.shutdown().await.expect("shutdown");
}

/// TelemetryService with the collectors running: IPFIX from dc1 to dc2
/// comes back as top flows and as a site-to-site matrix, and the
/// per-exporter counters reach /metrics.
#[tokio::test]
async fn telemetry_answers_from_the_collectors() {
    use aiwan_collectors::netflow::encode::IpfixExporter;
    use aiwan_collectors::record::{FlowRecord, ipv4_to_u128};

    let test = "telemetry_answers_from_the_collectors";
    let Some(db) = TestDb::new(Backend::Sqlite, test).await else {
        return;
    };
    let mut config = support::test_config(&db);
    config.collector.netflow_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.collector.shards = 1;
    config.collector.store.close_grace_ms = 100;
    let controller = aiwan_controller::server::start(&config)
        .await
        .expect("controller starts");
    let target = controller
        .telemetry
        .as_ref()
        .and_then(|t| t.collector.netflow_address)
        .expect("collector listening");
    let mut admin = Clients::connect(controller.grpc_addr, Some(ADMIN_SECRET)).await;
    // The sites' prefixes reach the store when the topology is imported.
    admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(small_topology()),
        })
        .await
        .expect("import");

    let start_ms = support::now_ms();
    let records: Vec<FlowRecord> = (0..20u32)
        .map(|n| FlowRecord {
            src_addr: ipv4_to_u128([10, 1, 0, 1 + n as u8]),
            dst_addr: ipv4_to_u128([10, 2, 0, 1]),
            src_port: 40_000 + n as u16,
            dst_port: 4791,
            protocol: 17,
            tos: 0x68,
            packets: 100,
            bytes: 1_000_000 * u64::from(n + 1),
            sampling_rate: 1,
            ..FlowRecord::default()
        })
        .collect();
    let total_bytes: u64 = records.iter().map(|r| r.bytes).sum();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
    for datagram in IpfixExporter::new(1, 10).export(&records, (start_ms / 1000) as u32) {
        socket.send_to(&datagram, target).expect("send");
    }
    let window = |from_ms: i64, to_ms: i64| {
        (
            Some(aiwan_controller::convert::timestamp(from_ms)),
            Some(aiwan_controller::convert::timestamp(to_ms)),
        )
    };
    let (from, to) = window(start_ms - 10_000, start_ms + 50_000);
    // Buckets close a grace period after they end; wait for ours.
    let mut flows = Vec::new();
    for _ in 0..100 {
        flows = admin
            .telemetry
            .list_top_flows(pb::ListTopFlowsRequest {
                start_time: from,
                end_time: to,
                limit: 3,
            })
            .await
            .expect("top flows")
            .into_inner()
            .flows;
        if !flows.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let top: Vec<(String, u64)> = flows
        .iter()
        .map(|f| (f.src_prefix.clone(), f.bytes))
        .collect();
    assert_eq!(
        top,
        vec![
            ("10.1.0.20/32".to_string(), 20_000_000),
            ("10.1.0.19/32".to_string(), 19_000_000),
            ("10.1.0.18/32".to_string(), 18_000_000),
        ]
    );
    assert_eq!(
        (flows[0].dst_port, flows[0].protocol, flows[0].dscp),
        (4791, 17, 26)
    );

    let matrix = admin
        .telemetry
        .get_traffic_matrix(pb::GetTrafficMatrixRequest {
            start_time: from,
            end_time: to,
        })
        .await
        .expect("matrix")
        .into_inner()
        .matrix
        .expect("matrix");
    let entries: Vec<(String, String, f64)> = matrix
        .entries
        .iter()
        .map(|e| (e.src_site.clone(), e.dst_site.clone(), e.rate_bps))
        .collect();
    let expected_rate = total_bytes as f64 * 8.0 / 60.0;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.as_str()),
        ("sites/dc1", "sites/dc2")
    );
    assert!(
        (entries[0].2 - expected_rate).abs() < 1e-6 * expected_rate,
        "{entries:?}"
    );

    // Requests that are wrong name their field; unknown links are NOT_FOUND.
    let (late, early) = window(start_ms, start_ms - 1);
    let status = admin
        .telemetry
        .get_traffic_matrix(pb::GetTrafficMatrixRequest {
            start_time: late,
            end_time: early,
        })
        .await
        .expect_err("reversed window");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("start_time:"),
        "{}",
        status.message()
    );
    let status = admin
        .telemetry
        .get_link_utilization(pb::GetLinkUtilizationRequest {
            link: "links/dc1-r:eth9".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such link");
    assert_eq!(status.code(), Code::NotFound);
    let status = admin
        .telemetry
        .list_top_flows(pb::ListTopFlowsRequest {
            limit: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative limit");
    assert!(
        status.message().starts_with("limit:"),
        "{}",
        status.message()
    );
    // A known link without counters yet answers an empty series.
    let utilization = admin
        .telemetry
        .get_link_utilization(pb::GetLinkUtilizationRequest {
            link: "links/dc1-r:eth1".into(),
            ..Default::default()
        })
        .await
        .expect("known link")
        .into_inner()
        .utilization
        .expect("series");
    assert!(utilization.points.is_empty());

    let metrics = http_get(controller.metrics_addr.expect("metrics"), "/metrics").await;
    let line = r#"aiwan_collector_records_total{exporter="127.0.0.1",observation_domain="1",protocol="ipfix"} 20"#;
    assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    assert!(
        metrics.contains("aiwan_collector_kernel_drops_total{listen="),
        "{metrics}"
    );
    controller.shutdown().await.expect("shutdown");
    db.cleanup().await;
}
