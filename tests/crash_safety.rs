//! The controller binary killed with SIGKILL in the middle of writes: after
//! a restart every acknowledged write is there and nothing is half-written.
//! Runs against SQLite and PostgreSQL.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiwan_api::v1 as pb;
use support::{ADMIN_SECRET, Backend, Clients, TestDb, free_port, small_topology, sync_job};

on_both_backends!(sigkill_mid_write_loses_nothing_acknowledged);

/// The controller process, killed when dropped: a failing assertion must
/// not leave it running.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `aiwan controller` as a child process and waits until it serves.
async fn spawn_controller(db: &TestDb, addr: SocketAddr, log_name: &str) -> Controller {
    let log = std::fs::File::create(db.dir.path().join(log_name)).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_aiwan"));
    command
        .arg("controller")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--metrics-listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(db.dir.path())
        .arg("--bootstrap-token")
        .arg(format!("admin:{ADMIN_SECRET}"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(url) = &db.database_url {
        command.arg("--database-url").arg(url);
    }
    let child = command.spawn().expect("spawn aiwan controller");
    let mut controller = Controller(child);
    support::wait_until_serving(&mut controller.0, addr, &db.dir.path().join(log_name)).await;
    controller
}

fn sigkill(controller: &mut Controller) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let child = &mut controller.0;
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    child.wait().expect("reap");
}

/// The small topology with `extra` more transit routers, so each import is
/// a transaction of many rows.
fn big_topology(extra: usize, revision_tag: usize) -> pb::Topology {
    let mut topology = small_topology();
    topology.display_name = format!("crash-{revision_tag}");
    for i in 0..extra {
        topology.nodes.push(pb::Node {
            name: format!("nodes/t{i}"),
            site: String::new(),
            role: pb::NodeRole::WanRouter as i32,
            prefixes: vec![format!("10.{}.{}.0/24", 200 + i / 250, i % 250)],
        });
        for (src, dst) in [(format!("t{i}"), "wan-a"), ("wan-a".to_string(), "")] {
            if dst.is_empty() {
                continue;
            }
            topology.links.push(pb::Link {
                name: String::new(),
                src_node: format!("nodes/{src}"),
                src_interface: "eth1".into(),
                dst_node: format!("nodes/{dst}"),
                dst_interface: format!("t{i}"),
                capacity_bps: 10_000_000_000,
                latency: None,
                srlgs: vec!["duct".into()],
                admin_state: pb::AdminState::Up as i32,
                unresolved: String::new(),
            });
        }
    }
    topology
}

async fn sigkill_mid_write_loses_nothing_acknowledged(backend: Backend) {
    let test = "sigkill_mid_write_loses_nothing_acknowledged";
    let Some(db) = TestDb::new(backend, test).await else {
        return;
    };
    let addr = free_port();
    let mut child = spawn_controller(&db, addr, "first.log").await;
    let mut admin = Clients::connect(addr, Some(ADMIN_SECRET)).await;
    admin
        .topology
        .import_topology(pb::ImportTopologyRequest {
            topology: Some(small_topology()),
        })
        .await
        .expect("first import");

    // Writers: four job creators and one topology importer, recording what
    // the controller acknowledged.
    let acked_jobs = Arc::new(Mutex::new(BTreeSet::new()));
    let acked_revisions = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let acked = acked_jobs.clone();
        let mut clients = Clients::connect(addr, Some(ADMIN_SECRET)).await;
        writers.push(tokio::spawn(async move {
            let mut failures = 0;
            for n in 0..100_000 {
                let job_id = format!("w{writer}-job-{n}");
                let result = clients
                    .intents
                    .create_job(pb::CreateJobRequest {
                        job_id: job_id.clone(),
                        job: Some(sync_job()),
                    })
                    .await;
                match result {
                    Ok(_) => {
                        acked.lock().expect("lock").insert(job_id);
                    }
                    Err(_) => {
                        failures += 1;
                        if failures > 3 {
                            return; // the controller is gone
                        }
                    }
                }
            }
        }));
    }
    {
        let acked = acked_revisions.clone();
        let mut clients = Clients::connect(addr, Some(ADMIN_SECRET)).await;
        writers.push(tokio::spawn(async move {
            for n in 0..100_000 {
                let topology = big_topology(300, n);
                match clients
                    .topology
                    .import_topology(pb::ImportTopologyRequest {
                        topology: Some(topology),
                    })
                    .await
                {
                    Ok(response) => {
                        let stored = response.into_inner().topology.expect("topology");
                        acked
                            .lock()
                            .expect("lock")
                            .push((stored.revision, stored.display_name));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the writes run, then kill the controller in the middle of them.
    // The deadline only catches writers that stall: it is no speed target
    // (a debug build, PostgreSQL and the test share the machine).
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked_jobs.lock().expect("lock").len() < 150
        || acked_revisions.lock().expect("lock").len() < 3
    {
        assert!(
            Instant::now() < deadline,
            "writers made too little progress in 120 s: {} jobs (150 wanted) and {} topology \
             imports (3 wanted) acknowledged",
            acked_jobs.lock().expect("lock").len(),
            acked_revisions.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigkill(&mut child);
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acked_jobs = acked_jobs.lock().expect("lock").clone();
    let acked_revisions = acked_revisions.lock().expect("lock").clone();

    // Restart on the same database and check.
    let mut child = spawn_controller(&db, addr, "second.log").await;
    let mut admin = Clients::connect(addr, Some(ADMIN_SECRET)).await;
    let mut stored_jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .intents
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list after restart")
            .into_inner();
        stored_jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let stored_names: BTreeSet<String> = stored_jobs
        .iter()
        .map(|j| j.name.trim_start_matches("jobs/").to_string())
        .collect();
    let lost: Vec<&String> = acked_jobs.difference(&stored_names).collect();
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
    // Stored but not acknowledged is allowed (committed, then killed before
    // the answer went out), but each stored job must be whole.
    for job in &stored_jobs {
        assert_eq!(job.sources.len(), 1, "{}", job.name);
        assert_eq!(job.destinations.len(), 2, "{}", job.name);
        assert_eq!(job.demands.len(), 2, "{} has half its demands", job.name);
    }
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .admin
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 1000,
                page_token,
            })
            .await
            .expect("audit")
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "audit log has holes"
    );
    let audited: BTreeSet<String> = events
        .iter()
        .filter(|e| e.action == "aiwan.v1.IntentService/CreateJob")
        .map(|e| e.resource.trim_start_matches("jobs/").to_string())
        .collect();
    assert_eq!(
        audited, stored_names,
        "every stored job, and only those, is audited"
    );

    let topology = admin
        .topology
        .get_topology(pb::GetTopologyRequest {})
        .await
        .expect("topology")
        .into_inner()
        .topology
        .expect("topology");
    let (last_revision, _) = acked_revisions.last().expect("some imports acknowledged");
    assert!(
        topology.revision >= *last_revision,
        "acknowledged import lost"
    );
    // Whole, not half an import: the revision's name matches its contents.
    let expected = if topology.revision == 1 {
        small_topology()
    } else {
        let tag: usize = topology
            .display_name
            .trim_start_matches("crash-")
            .parse()
            .expect("tag");
        big_topology(300, tag)
    };
    assert_eq!(topology.nodes.len(), expected.nodes.len());
    assert_eq!(topology.links.len(), expected.links.len());
    let topology_audits = events.iter().filter(|e| e.resource == "topology").count() as i64;
    assert_eq!(topology_audits, topology.revision);

    eprintln!(
        "{test} ({backend:?}): {} jobs acknowledged, {} stored; {} imports acknowledged, revision {} stored",
        acked_jobs.len(),
        stored_names.len(),
        acked_revisions.len(),
        topology.revision
    );
    sigkill(&mut child);
    if backend == Backend::Sqlite {
        let url = db.url();
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("open");
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .expect("integrity_check");
        assert_eq!(check, "ok");
    }
    db.cleanup().await;
}
