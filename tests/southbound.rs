//! The reconcile loop end to end on the simulated dataplane: a plan
//! applied through the API reaches every router and the traffic follows
//! it; a router whose agent is down makes the plan partial, and is brought
//! up to date when it answers again. (The same loop against real routers in
//! namespaces is in tests/agent.rs.)

mod support;

use std::time::Duration;

use aiwan_api::v1 as pb;
use aiwan_controller::southbound::simulated::SimulatedFlow;
use support::{
    ADMIN_SECRET, Backend, Clients, TestDb, apply_plan as apply, current_plan, http_get,
    small_topology, sync_job,
};

/// A controller on the simulated dataplane (reconcile every 100 ms) with
/// the small topology and its ai-sync job `train-1`, and an admin client.
async fn simulated_controller(
    test: &str,
) -> Option<(
    TestDb,
    aiwan_controller::server::RunningController,
    std::sync::Arc<aiwan_controller::southbound::simulated::SimulatedDataplane>,
    Clients,
)> {
    let db = TestDb::new(Backend::Sqlite, test).await?;
    let mut config = support::test_config(&db);
    config.southbound.driver = Some(aiwan_controller::config::SouthboundDriver::Simulated);
    config.southbound.reconcile_interval_ms = 100;
    let controller = aiwan_controller::server::start(&config)
        .await
        .expect("controller starts");
    let simulated = controller.simulated.clone().expect("simulated dataplane");
    let mut admin = Clients::connect(controller.grpc_addr, Some(ADMIN_SECRET)).await;
    admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(small_topology()),
        })
        .await
        .expect("import");
    admin
        .intents
        .create_job(pb::CreateJobRequest {
            job_id: "train-1".into(),
            job: Some(sync_job()),
        })
        .await
        .expect("job");
    Some((db, controller, simulated, admin))
}

/// 1G of best-effort from dc1 to dc2 pinned through `via`.
async fn create_pinned_job(admin: &mut Clients, via: &str) {
    let site = |name: &str| pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Site(format!("sites/{name}"))),
    };
    let pinned = pb::Job {
        tenant: "team-a".into(),
        traffic_class: pb::TrafficClass::BestEffort as i32,
        sources: vec![site("dc1")],
        destinations: vec![site("dc2")],
        rate_bps: 1_000_000_000,
        pinned_path: ["dc1-r", via, "dc2-r"]
            .iter()
            .map(|n| format!("nodes/{n}"))
            .collect(),
        ..pb::Job::default()
    };
    admin
        .intents
        .create_job(pb::CreateJobRequest {
            job_id: "pinned".into(),
            job: Some(pinned),
        })
        .await
        .expect("pinned job");
}

/// Waits until the current plan has `status` (or fails after 15 s).
async fn wait_for(clients: &mut Clients, status: pb::PlanStatus) -> pb::Plan {
    for _ in 0..150 {
        let plan = current_plan(clients).await;
        if plan.status == status as i32 {
            return plan;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plan = current_plan(clients).await;
    panic!("plan never became {status:?}: {plan:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_reach_the_simulated_routers_and_a_silent_one_is_partial() {
    let Some((db, controller, simulated, mut admin)) =
        simulated_controller("plans_reach_the_simulated_routers_and_a_silent_one_is_partial").await
    else {
        return;
    };
    admin
        .plans
        .apply_plan(pb::ApplyPlanRequest::default())
        .await
        .expect("apply");
    let plan = wait_for(&mut admin, pb::PlanStatus::Applied).await;
    assert!(plan.pending_nodes.is_empty(), "{plan:?}");

    // Traffic from dc1 to dc2 is delivered, over the WAN routers.
    let flow = SimulatedFlow {
        source: "10.1.255.7".parse().expect("address"),
        destination: "10.2.0.9".parse().expect("address"),
        rate_bps: 10e9,
    };
    let loads = simulated.loads(&[flow]);
    assert!((loads.delivered_bps - 10e9).abs() < 1.0, "{loads:?}");
    let out_of_dc1: f64 = ["dc1-r:eth1", "dc1-r:eth2"]
        .iter()
        .map(|link| loads.links.get(*link).copied().unwrap_or(0.0))
        .sum();
    assert!((out_of_dc1 - 10e9).abs() < 1.0, "{loads:?}");

    // wan-b's agent stops answering; a new plan is partial, naming it.
    simulated.set_reachable("wan-b", false);
    admin
        .plans
        .apply_plan(pb::ApplyPlanRequest {
            reason: "again".into(),
        })
        .await
        .expect("apply");
    let plan = wait_for(&mut admin, pb::PlanStatus::Partial).await;
    assert_eq!(
        plan.pending_nodes,
        vec!["nodes/wan-b".to_string()],
        "{plan:?}"
    );
    // The full view: every router's routes and push status, and the
    // allocation of each demand with its sites.
    let full = admin
        .plans
        .get_plan(pb::GetPlanRequest {
            name: plan.name.clone(),
            view: pb::PlanView::Full as i32,
        })
        .await
        .expect("full plan")
        .into_inner();
    let status_of = |node: &str| {
        full.routers
            .iter()
            .find(|r| r.node == format!("nodes/{node}"))
            .map(|r| r.push_status.clone())
    };
    assert_eq!(status_of("wan-b").as_deref(), Some("pending"), "{full:?}");
    assert_eq!(status_of("dc1-r").as_deref(), Some("applied"), "{full:?}");
    let sync = full
        .allocations
        .iter()
        .find(|a| a.traffic_class == pb::TrafficClass::AiSync as i32)
        .expect("the ai-sync job's demand");
    assert_eq!(sync.src_site, "sites/dc1", "{sync:?}");
    assert!(!sync.paths.is_empty(), "{sync:?}");
    let placed: f64 = sync.paths.iter().map(|p| p.fraction).sum();
    assert!((placed - 1.0).abs() < 1e-6, "{sync:?}");
    assert!(
        sync.paths
            .iter()
            .all(|p| p.nodes.first() == Some(&sync.src_node))
    );
    let dc1 = full
        .routers
        .iter()
        .find(|r| r.node == "nodes/dc1-r")
        .expect("dc1-r");
    let to_dc2 = dc1
        .routes
        .iter()
        .find(|r| r.destination == "nodes/dc2-r")
        .expect("a route at dc1-r towards dc2-r");
    let shares: f64 = to_dc2.next_hops.iter().map(|h| h.share).sum();
    assert!((shares - 1.0).abs() < 1e-6, "{to_dc2:?}");
    // The header alone unless asked; a view out of range is refused.
    let basic = admin
        .plans
        .get_plan(pb::GetPlanRequest {
            name: plan.name.clone(),
            view: 0,
        })
        .await
        .expect("basic plan")
        .into_inner();
    assert!(basic.routers.is_empty() && basic.allocations.is_empty());
    let refused = admin
        .plans
        .get_plan(pb::GetPlanRequest {
            name: plan.name.clone(),
            view: 99,
        })
        .await
        .expect_err("view 99");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("view"), "{refused:?}");
    // Back: brought up to date (after its backoff) without another plan.
    simulated.set_reachable("wan-b", true);
    let plan = wait_for(&mut admin, pb::PlanStatus::Applied).await;
    assert!(plan.pending_nodes.is_empty(), "{plan:?}");
    let metrics = http_get(controller.metrics_addr.expect("metrics"), "/metrics").await;
    for line in [
        "aiwan_southbound_pushes_total{node=\"wan-b\",result=\"unreachable\"}",
        "aiwan_southbound_pushes_total{node=\"wan-b\",result=\"applied\"}",
        "aiwan_southbound_plan_version 2",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    controller.shutdown().await.expect("shutdown");
    db.cleanup().await;
}

/// Waits until plan `version` is current with `status` (or fails after 15 s).
async fn wait_for_version(clients: &mut Clients, version: i64, status: pb::PlanStatus) -> pb::Plan {
    for _ in 0..150 {
        let plan = current_plan(clients).await;
        if plan.version == version && plan.status == status as i32 {
            return plan;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plan = current_plan(clients).await;
    panic!("plan {version} never became current and {status:?}: {plan:?}");
}

async fn plan_status(clients: &mut Clients, version: i64) -> Option<pb::PlanStatus> {
    let response = clients
        .plans
        .get_plan(pb::GetPlanRequest {
            name: format!("plans/{version}"),
            ..Default::default()
        })
        .await;
    match response {
        Ok(response) => response.into_inner().plan.map(|plan| plan.status()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("get plans/{version}: {status}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plan_is_rolled_back_once() {
    let Some((db, controller, simulated, mut admin)) =
        simulated_controller("a_refused_plan_is_rolled_back_once").await
    else {
        return;
    };
    let v1 = apply(&mut admin, "first").await;
    wait_for_version(&mut admin, v1, pb::PlanStatus::Applied).await;

    // wan-a's kernel has no SRv6; a job pinned through it makes a plan
    // wan-a refuses: that plan fails and the one before comes back.
    simulated.set_srv6("wan-a", false);
    create_pinned_job(&mut admin, "wan-a").await;
    let v2 = apply(&mut admin, "with the pin").await;
    let v3 = v2 + 1;
    let rollback = wait_for_version(&mut admin, v3, pb::PlanStatus::Applied).await;
    assert_eq!(
        rollback.reason,
        format!("automatic rollback: plans/{v2} was refused")
    );
    assert_eq!(
        plan_status(&mut admin, v2).await,
        Some(pb::PlanStatus::Failed)
    );

    // With SRv6 the pinned plan goes on; without it again, a new plan is
    // refused and so is its rollback (it has the pin too): that one stays
    // failed, and no further plan is made.
    simulated.set_srv6("wan-a", true);
    let v4 = apply(&mut admin, "SRv6 is back").await;
    wait_for_version(&mut admin, v4, pb::PlanStatus::Applied).await;
    simulated.set_srv6("wan-a", false);
    let v5 = apply(&mut admin, "SRv6 gone again").await;
    let v6 = v5 + 1;
    for _ in 0..150 {
        if plan_status(&mut admin, v6).await == Some(pb::PlanStatus::Failed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        plan_status(&mut admin, v5).await,
        Some(pb::PlanStatus::Failed)
    );
    assert_eq!(
        plan_status(&mut admin, v6).await,
        Some(pb::PlanStatus::Failed)
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        plan_status(&mut admin, v6 + 1).await,
        None,
        "rolled back twice"
    );
    let metrics = http_get(controller.metrics_addr.expect("metrics"), "/metrics").await;
    for line in [
        "aiwan_southbound_rollbacks_total 2",
        "aiwan_southbound_rollbacks_refused_total 1",
        "aiwan_southbound_pushes_total{node=\"wan-a\",result=\"refused\"}",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    // The operator fixes wan-a and applies again: all in.
    simulated.set_srv6("wan-a", true);
    let v7 = apply(&mut admin, "fixed").await;
    wait_for_version(&mut admin, v7, pb::PlanStatus::Applied).await;
    controller.shutdown().await.expect("shutdown");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_cannot_be_rendered_fails_and_is_rolled_back() {
    let Some((db, controller, _simulated, mut admin)) =
        simulated_controller("a_plan_that_cannot_be_rendered_fails_and_is_rolled_back").await
    else {
        return;
    };
    // dc2-r also originates a prefix inside aiwan's SID block.
    let mut topology = small_topology();
    if let Some(node) = topology.nodes.iter_mut().find(|n| n.name == "nodes/dc2-r") {
        node.prefixes.push("fd00:5e6:9::/64".into());
    }
    admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(topology),
        })
        .await
        .expect("import");
    let v1 = apply(&mut admin, "first").await;
    wait_for_version(&mut admin, v1, pb::PlanStatus::Applied).await;
    // A pin needs SIDs, which that prefix would shadow: the plan cannot
    // be made into router state, fails, and the one before comes back.
    create_pinned_job(&mut admin, "wan-b").await;
    let v2 = apply(&mut admin, "with the pin").await;
    let rollback = wait_for_version(&mut admin, v2 + 1, pb::PlanStatus::Applied).await;
    assert_eq!(
        rollback.reason,
        format!("automatic rollback: plans/{v2} cannot be made into router state")
    );
    assert_eq!(
        plan_status(&mut admin, v2).await,
        Some(pb::PlanStatus::Failed)
    );
    controller.shutdown().await.expect("shutdown");
    db.cleanup().await;
}
