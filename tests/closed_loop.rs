//! The closed loop through the API, on a running `aiwan demo` in
//! `recommend` mode: the measured matrices and link forecasts, the control
//! loop's state, the event stream with a proposal on it, ApprovePlan
//! making the proposal the applied plan, and the loop's metrics.

mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aiwan_api::v1 as pb;
use aiwan_api::v1::event_service_client::EventServiceClient;
use aiwan_controller::client::BearerToken;
use support::{Clients, http_get};

/// The demo, killed when dropped.
struct Demo {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// One demo at a time: two at once on a 2-core machine starve each
/// other's 1 s intervals (an interval with no flow records made the first
/// test's newest matrix empty in CI; one alone still may, now and then).
static ONE_DEMO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The first event on `stream` that `wanted` picks, if one comes within
/// `within`.
async fn next_event(
    stream: &mut tonic::Streaming<pb::WatchEventsResponse>,
    within: Duration,
    wanted: impl Fn(&pb::Event) -> bool,
) -> Option<pb::Event> {
    tokio::time::timeout(within, async {
        loop {
            let event = stream
                .message()
                .await
                .expect("stream")
                .expect("open")
                .event
                .expect("event");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .ok()
}

/// Starts the demo and reads its attach and metrics lines.
fn start_demo() -> (Demo, String, String, std::net::SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_aiwan"))
        .args([
            "demo",
            "--headless",
            "--mode",
            "recommend",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--duration", "120", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start aiwan demo");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let demo = Demo { child, _dir: dir };
    let (mut attach, mut metrics) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while attach.is_none() || metrics.is_none() {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo prints its attach and metrics lines");
        if let Some(rest) = line.split("aiwan tui ").nth(1) {
            attach = Some(rest.to_string());
        }
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            metrics = rest.split('/').next().map(str::to_string);
        }
    }
    // Keep draining stderr so the demo never blocks on a full pipe.
    std::thread::spawn(move || while received.recv().is_ok() {});
    let attach = attach.expect("attach line");
    let words: Vec<&str> = attach.split_whitespace().collect();
    let endpoint = words[words
        .iter()
        .position(|w| *w == "--endpoint")
        .expect("endpoint")
        + 1];
    let token = words[words.iter().position(|w| *w == "--token").expect("token") + 1];
    let metrics = metrics.expect("metrics").parse().expect("metrics address");
    (demo, endpoint.to_string(), token.to_string(), metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_through_the_api_in_recommend_mode() {
    let _alone = ONE_DEMO.lock().await;
    let (_demo, endpoint, token, metrics) = start_demo();
    let addr: std::net::SocketAddr = endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("endpoint address");
    let mut clients = Clients::connect(addr, Some(&token)).await;
    let channel = support::channel(addr).await;
    let mut events = EventServiceClient::with_interceptor(
        channel,
        BearerToken::new(Some(&token)).expect("token"),
    );
    let mut stream = events
        .watch_events(pb::WatchEventsRequest {
            kinds: vec![
                pb::EventKind::Proposal as i32,
                pb::EventKind::PlanApplied as i32,
            ],
            include_recent: true,
        })
        .await
        .expect("WatchEvents")
        .into_inner();

    // A proposal comes from telemetry (the background re-plan, or the training job scaling out at 10 s).
    let proposal = next_event(&mut stream, Duration::from_secs(60), |e| {
        e.kind == pb::EventKind::Proposal as i32
    })
    .await
    .expect("a proposal within a minute");
    assert!(proposal.subject.starts_with("plans/"), "{proposal:?}");
    assert!(proposal.figures.contains_key("mlu_before"), "{proposal:?}");

    let control = clients
        .plans
        .get_control_loop(pb::GetControlLoopRequest {})
        .await
        .expect("GetControlLoop")
        .into_inner()
        .control_loop
        .expect("control loop");
    assert_eq!(control.mode, pb::ControlLoopMode::Recommend as i32);
    assert!(control.last_interval_start_time.is_some());
    assert!(control.replans >= 1);
    assert!(control.idle_reason.is_empty(), "{control:?}");

    let matrices = clients
        .telemetry
        .list_demand_matrices(pb::ListDemandMatricesRequest { max_intervals: 5 })
        .await
        .expect("ListDemandMatrices")
        .into_inner()
        .matrices;
    assert_eq!(matrices.len(), 5);
    // The simulated exporters send every second, as the interval closes:
    // on a busy 2-core machine a 1 s interval now and then closes before
    // its datagrams land (the loop reads two intervals for this reason),
    // so the newest interval with flow records is the one checked.
    let newest = matrices
        .iter()
        .rev()
        .find(|m| !m.entries.is_empty())
        .expect("flow records in one of the last five intervals");
    assert!(
        newest.entries.iter().any(|e| e.src_node == "nodes/dc1-edge"
            && e.dst_node == "nodes/dc2-edge"
            && e.traffic_class == pb::TrafficClass::AiSync as i32
            && e.rate_bps > 1e9),
        "{newest:?}"
    );
    assert!(
        matrices.iter().all(|m| m.unknown_exporter_bytes == 0),
        "{matrices:?}"
    );

    let forecasts = clients
        .telemetry
        .list_link_forecasts(pb::ListLinkForecastsRequest {})
        .await
        .expect("ListLinkForecasts")
        .into_inner();
    assert_eq!(forecasts.links.len(), 54);
    let wan: Vec<&pb::LinkForecast> = forecasts
        .links
        .iter()
        .filter(|l| l.covered_by_flows)
        .collect();
    assert_eq!(wan.len(), 14, "seven WAN links, both ways");
    for link in &wan {
        assert!(link.has_counters, "{link:?}");
        assert!(
            link.predicted_low_bps <= link.predicted_bps
                && link.predicted_bps <= link.predicted_high_bps
        );
        assert!((0.0..=1.0).contains(&link.congestion_probability));
    }
    let agreeing = wan.iter().filter(|l| l.agrees).count();
    assert!(
        agreeing * 10 >= wan.len() * 8,
        "flows and counters disagree on most WAN links: {wan:?}"
    );

    // Approve the proposal: it becomes the applied plan.
    let approved = clients
        .plans
        .approve_plan(pb::ApprovePlanRequest {
            name: proposal.subject.clone(),
            reason: String::new(),
        })
        .await
        .expect("ApprovePlan")
        .into_inner()
        .operation
        .expect("operation");
    let Some(pb::operation::Result::Response(plan)) = approved.result else {
        panic!("no plan in {approved:?}")
    };
    assert_eq!(plan.trigger, pb::PlanTrigger::Approval as i32);
    assert!(
        plan.figures.is_some(),
        "the proposal's figures travel with it: {plan:?}"
    );
    let applied = next_event(&mut stream, Duration::from_secs(20), |e| {
        e.kind == pb::EventKind::PlanApplied as i32 && e.subject == plan.name
    })
    .await;
    assert!(applied.is_some(), "{} was not applied", plan.name);
    let again = clients
        .plans
        .approve_plan(pb::ApprovePlanRequest {
            name: proposal.subject.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("a proposal is approved once");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let listed = clients
        .plans
        .get_plan(pb::GetPlanRequest {
            name: proposal.subject.clone(),
            ..Default::default()
        })
        .await
        .expect("GetPlan")
        .into_inner()
        .plan
        .expect("plan");
    assert_eq!(listed.proposal_state, pb::ProposalState::Approved as i32);

    let text = http_get(metrics, "/metrics").await;
    for name in [
        "aiwan_closed_loop_replans_total{",
        "aiwan_closed_loop_intervals_total",
        "aiwan_closed_loop_latency_seconds_bucket",
        "aiwan_closed_loop_predicted_mlu",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        text.contains("mode=\"recommend\""),
        "re-plans by trigger and mode:\n{text}"
    );
}

/// A volume job on the running demo: its progress is the bytes of its
/// flows (dc2 -> dc1, ai-bulk: the demo's checkpoint traffic) that the
/// sites' exporters report where they enter the WAN, its schedule is on
/// track; a job no network could move in time is flagged with an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_jobs_progress_is_measured_and_a_hopeless_one_flagged() {
    let _alone = ONE_DEMO.lock().await;
    let (_demo, endpoint, token, _) = start_demo();
    let addr: std::net::SocketAddr = endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("endpoint address");
    let mut clients = Clients::connect(addr, Some(&token)).await;
    let mut events = EventServiceClient::with_interceptor(
        support::channel(addr).await,
        BearerToken::new(Some(&token)).expect("token"),
    );
    let mut stream = events
        .watch_events(pb::WatchEventsRequest {
            kinds: vec![pb::EventKind::JobAtRisk as i32],
            include_recent: true,
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let volume_job = |volume_bytes: i64, due_in_s: i64| pb::Job {
        tenant: "llm-research".into(),
        traffic_class: pb::TrafficClass::AiBulk as i32,
        sources: vec![pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Site("sites/dc2".into())),
        }],
        destinations: vec![pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Site("sites/dc1".into())),
        }],
        volume_bytes,
        deadline: Some(prost_types::Timestamp {
            seconds: now_s + due_in_s,
            nanos: 0,
        }),
        ..Default::default()
    };
    // The demo imports its topology and declares its jobs after it starts.
    let ready = Instant::now() + Duration::from_secs(60);
    while clients
        .intents
        .get_job(pb::GetJobRequest {
            name: "jobs/ckpt-llm".into(),
        })
        .await
        .is_err()
    {
        assert!(
            Instant::now() < ready,
            "the demo declared no jobs in a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 1 TB in 15 minutes: 8.9 Gbit/s of the 90 the paths carry.
    clients
        .intents
        .create_job(pb::CreateJobRequest {
            job_id: "ckpt-volume".into(),
            job: Some(volume_job(1_000_000_000_000, 900)),
        })
        .await
        .expect("CreateJob");
    let get = |clients: &mut Clients, name: &'static str| {
        let mut intents = clients.intents.clone();
        async move {
            intents
                .get_job(pb::GetJobRequest {
                    name: format!("jobs/{name}"),
                })
                .await
                .expect("GetJob")
                .into_inner()
                .job
                .expect("job")
        }
    };
    let mut first_moved = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let job = get(&mut clients, "ckpt-volume").await;
        if let Some(progress) = job.progress.filter(|p| p.measured && p.moved_bytes > 0) {
            match first_moved {
                None => first_moved = Some(progress.moved_bytes),
                Some(first) if progress.moved_bytes > first => break progress,
                Some(_) => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "no measured progress within a minute: {:?}",
            get(&mut clients, "ckpt-volume").await.progress
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(progress.on_track, "{progress:?}");
    assert!(progress.pace_bps >= 8_800_000_000, "{progress:?}");
    assert!(progress.expected_completion_time.is_some(), "{progress:?}");
    assert!(progress.moved_bytes < 1_000_000_000_000, "{progress:?}");
    assert!(progress.detail.contains("(measured)"), "{progress:?}");

    // 100 TB in two minutes: 6.7 Tbit/s, on 90 Gbit/s.
    clients
        .intents
        .create_job(pb::CreateJobRequest {
            job_id: "too-big".into(),
            job: Some(volume_job(100_000_000_000_000, 120)),
        })
        .await
        .expect("CreateJob");
    let flagged = next_event(&mut stream, Duration::from_secs(30), |e| {
        e.subject == "jobs/too-big"
    })
    .await
    .expect("the hopeless job is flagged within 30 s");
    assert!(
        flagged.message.contains("will miss its deadline"),
        "{flagged:?}"
    );
    let late = get(&mut clients, "too-big")
        .await
        .progress
        .expect("progress");
    assert!(!late.on_track, "{late:?}");
    // Both share the paths: the guarantees still fit.
    assert!(late.pace_bps <= 90_000_000_000, "{late:?}");
}
