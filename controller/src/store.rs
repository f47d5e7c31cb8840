//! Persistence: one sqlx `Any` pool over SQLite (default) or PostgreSQL, the
//! embedded migrations, and every query the controller runs.
//!
//! Invariants:
//! - Every change that belongs together (a job, its endpoints, its demands
//!   and its audit row) is one transaction; a crash leaves all or nothing.
//! - Writes are serialised through one async mutex. SQLite allows a single
//!   writer anyway, and the audit sequence is `max + 1` inside the writing
//!   transaction, which needs one writer per database. Several controllers
//!   sharing one PostgreSQL would need a database sequence instead.
//! - A write is acknowledged only after its commit returned; SQLite runs in
//!   WAL mode with `synchronous = FULL`, so a committed write survives a
//!   killed process and a power cut.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aiwan_planner::{Link, Node, NodeRole, Site, Topology};
use ipnet::IpNet;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Executor, Row, SqlSafeStr, Transaction};
use tokio::sync::Mutex;

use crate::auth::{Caller, Role};
use crate::model::{
    Admission, AdmissionPolicy, AuditRecord, DemandRecord, Endpoint, JobProgress, JobRecord,
    NewJob, NewPlan, PlanRecord, PlanStatus, PlanTrigger, ProposalState, TokenRecord, TrafficClass,
};

/// The migrations in `migrations/`, embedded in the binary.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "job max latency",
        include_str!("../../migrations/0002_job_max_latency.sql"),
    ),
    (
        3,
        "job pin",
        include_str!("../../migrations/0003_job_pin.sql"),
    ),
    (
        4,
        "plan origin",
        include_str!("../../migrations/0004_plan_origin.sql"),
    ),
    (
        5,
        "job collective",
        include_str!("../../migrations/0005_job_collective.sql"),
    ),
    (
        6,
        "job admission",
        include_str!("../../migrations/0006_job_admission.sql"),
    ),
    (
        7,
        "job progress",
        include_str!("../../migrations/0007_job_progress.sql"),
    ),
];

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A stored value that the current code cannot read back.
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
}

/// Which engine the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The topology as stored, with its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTopology {
    pub topology: Topology,
    /// 0 when nothing was ever imported.
    pub revision: i64,
    pub updated_ms: i64,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    write_lock: Arc<Mutex<()>>,
}

/// What one audit row says, before it gets its sequence number.
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub detail: serde_json::Value,
}

/// A `SELECT` of every plan column followed by the given clauses, as a
/// static string (sqlx refuses SQL built at run time).
macro_rules! select_plans {
    ($clauses:literal) => {
        concat!(
            "SELECT version, status, reason, created_ms, applied_ms, mlu, metrics_json, ",
            "creator, trigger, reason_json, proposal_state FROM plans ",
            $clauses
        )
    };
}

/// One column value of a multi-row insert ([`insert_rows`]).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Int(i64),
    Null,
}

impl From<&String> for Value {
    fn from(text: &String) -> Self {
        Value::Text(text.clone())
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_string())
    }
}

impl From<Option<&String>> for Value {
    fn from(text: Option<&String>) -> Self {
        text.map_or(Value::Null, Value::from)
    }
}

/// Most bound parameters in one statement: SQLite allows 32,766 and
/// PostgreSQL 65,535.
const MAX_PARAMETERS_PER_STATEMENT: usize = 30_000;

/// The columns of `jobs` that [`job_from_row`] reads.
const JOB_COLUMNS: &str = "job_id, tenant, traffic_class, rate_bps, volume_bytes, deadline_ms, \
     start_ms, end_ms, priority, cancelled_ms, created_ms, updated_ms, creator, \
     max_latency_us, pin_json, collective_json, admission_policy, admission_json, \
     burst_json, progress_json";

/// `$1, $2, .., $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows `sql` returns with `{ids}` replaced by one placeholder per
/// job ID of `ids`, bound in order. `sql` is the store's own text.
async fn rows_for_ids(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    ids: &[String],
) -> Result<Vec<AnyRow>, StoreError> {
    let sql = sql.replace("{ids}", &placeholders(ids.len()));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.as_str());
    }
    Ok(query.fetch_all(&mut *conn).await?)
}

/// `INSERT INTO table (columns) VALUES ($1, ..), ($n, ..)` for `rows`
/// rows, numbered placeholders (both engines read `$n`).
fn multi_row_insert(table: &str, columns: &[&str], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut parameter = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns.len() {
            if column > 0 {
                sql.push_str(", ");
            }
            parameter += 1;
            sql.push_str(&format!("${parameter}"));
        }
        sql.push(')');
    }
    sql
}

/// Inserts `rows` (each one value per column) into `table`, as few
/// statements as the engines' parameter limits allow. `table` and
/// `columns` are the store's own names, never input.
async fn insert_rows(
    tx: &mut Transaction<'static, Any>,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Value>],
) -> Result<(), StoreError> {
    let rows_per_statement = (MAX_PARAMETERS_PER_STATEMENT / columns.len().max(1)).max(1);
    for chunk in rows.chunks(rows_per_statement) {
        let sql = multi_row_insert(table, columns, chunk.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            debug_assert_eq!(row.len(), columns.len(), "a row of {table}");
            for value in row {
                query = match value {
                    Value::Text(text) => query.bind(text.clone()),
                    Value::Int(number) => query.bind(*number),
                    Value::Null => query.bind(None::<String>),
                };
            }
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

impl Store {
    /// Connects, applies the SQLite pragmas, and runs the migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations).run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            write_lock: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // Audit --------------------------------------------------------------

    async fn append_audit(
        tx: &mut Transaction<'static, Any>,
        now_ms: i64,
        entry: AuditEntry<'_>,
    ) -> Result<i64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log")
            .fetch_one(&mut **tx)
            .await?;
        let seq = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor, action, resource, detail_json) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(seq)
        .bind(now_ms)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.resource)
        .bind(entry.detail.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(seq)
    }

    /// Audit rows with a sequence above `after`, oldest first.
    pub async fn list_audit(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, actor, action, resource, detail_json FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    seq: row.try_get("seq")?,
                    at_ms: row.try_get("at_ms")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    resource: row.try_get("resource")?,
                    detail_json: row.try_get("detail_json")?,
                })
            })
            .collect()
    }

    // Topology -------------------------------------------------------------

    /// Replaces the whole topology and bumps the revision, in one transaction.
    pub async fn replace_topology(
        &self,
        topology: &Topology,
        actor: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        for table in ["link_srlgs", "links", "prefixes", "nodes", "sites"] {
            let sql = match table {
                "link_srlgs" => "DELETE FROM link_srlgs",
                "links" => "DELETE FROM links",
                "prefixes" => "DELETE FROM prefixes",
                "nodes" => "DELETE FROM nodes",
                _ => "DELETE FROM sites",
            };
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        // Multi-row inserts: a large topology is thousands of rows, and one
        // round trip each made an import take seconds on PostgreSQL while
        // every other write waited behind it.
        let mut sites = Vec::new();
        let mut prefixes = Vec::new();
        for site in &topology.sites {
            sites.push(vec![Value::from(&site.id)]);
            for prefix in &site.prefixes {
                prefixes.push(vec![
                    Value::Text(prefix.to_string()),
                    Value::from(&site.id),
                    Value::Null,
                ]);
            }
        }
        let mut nodes = Vec::new();
        for node in &topology.nodes {
            nodes.push(vec![
                Value::from(&node.id),
                Value::from(node.site.as_ref()),
                Value::from(node.role.as_str()),
            ]);
            for prefix in &node.prefixes {
                prefixes.push(vec![
                    Value::Text(prefix.to_string()),
                    Value::from(node.site.as_ref()),
                    Value::from(&node.id),
                ]);
            }
        }
        let mut links = Vec::new();
        let mut srlgs = Vec::new();
        for link in &topology.links {
            let capacity = i64::try_from(link.capacity_bps)
                .map_err(|_| corrupt(format!("capacity of {}:{}", link.src, link.src_interface)))?;
            let latency = i64::try_from(link.latency_us)
                .map_err(|_| corrupt(format!("latency of {}:{}", link.src, link.src_interface)))?;
            links.push(vec![
                Value::from(&link.src),
                Value::from(&link.src_interface),
                Value::from(&link.dst),
                Value::from(&link.dst_interface),
                Value::Int(capacity),
                Value::Int(latency),
                Value::Int(i64::from(link.admin_up)),
            ]);
            for srlg in &link.srlgs {
                srlgs.push(vec![
                    Value::from(&link.src),
                    Value::from(&link.src_interface),
                    Value::from(srlg),
                ]);
            }
        }
        insert_rows(&mut tx, "sites", &["site_id"], &sites).await?;
        insert_rows(&mut tx, "nodes", &["node_id", "site_id", "role"], &nodes).await?;
        insert_rows(
            &mut tx,
            "prefixes",
            &["prefix", "site_id", "node_id"],
            &prefixes,
        )
        .await?;
        insert_rows(
            &mut tx,
            "links",
            &[
                "src_node",
                "src_interface",
                "dst_node",
                "dst_interface",
                "capacity_bps",
                "latency_us",
                "admin_up",
            ],
            &links,
        )
        .await?;
        insert_rows(
            &mut tx,
            "link_srlgs",
            &["src_node", "src_interface", "srlg"],
            &srlgs,
        )
        .await?;
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT revision FROM topology_meta WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        let revision = previous.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO topology_meta (id, display_name, revision, updated_ms) \
             VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET \
             display_name = excluded.display_name, revision = excluded.revision, \
             updated_ms = excluded.updated_ms",
        )
        .bind(&topology.name)
        .bind(revision)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let detail = serde_json::json!({
            "name": topology.name,
            "revision": revision,
            "sites": topology.sites.len(),
            "nodes": topology.nodes.len(),
            "links": topology.links.len(),
        });
        Self::append_audit(
            &mut tx,
            now_ms,
            AuditEntry {
                actor,
                action,
                resource: "topology",
                detail,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(revision)
    }

    /// The stored topology, in a deterministic order.
    pub async fn load_topology(&self) -> Result<StoredTopology, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let meta = sqlx::query(
            "SELECT display_name, revision, updated_ms FROM topology_meta WHERE id = 1",
        )
        .fetch_optional(&mut *conn)
        .await?;
        let (name, revision, updated_ms) = match meta {
            Some(row) => (
                row.try_get::<String, _>("display_name")?,
                row.try_get::<i64, _>("revision")?,
                row.try_get::<i64, _>("updated_ms")?,
            ),
            None => (String::new(), 0, 0),
        };
        let prefix_rows =
            sqlx::query("SELECT prefix, site_id, node_id FROM prefixes ORDER BY prefix")
                .fetch_all(&mut *conn)
                .await?;
        let mut prefixes: Vec<(IpNet, Option<String>, Option<String>)> = Vec::new();
        for row in &prefix_rows {
            let text: String = row.try_get("prefix")?;
            let prefix = text
                .parse()
                .map_err(|_| corrupt(format!("prefix {text:?}")))?;
            prefixes.push((prefix, row.try_get("site_id")?, row.try_get("node_id")?));
        }
        let sites = sqlx::query("SELECT site_id FROM sites ORDER BY site_id")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| {
                let id: String = row.try_get("site_id")?;
                let own = prefixes
                    .iter()
                    .filter(|(_, site, node)| node.is_none() && site.as_deref() == Some(&id))
                    .map(|(prefix, _, _)| *prefix)
                    .collect();
                Ok(Site { id, prefixes: own })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let nodes = sqlx::query("SELECT node_id, site_id, role FROM nodes ORDER BY node_id")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| {
                let id: String = row.try_get("node_id")?;
                let role: String = row.try_get("role")?;
                let role = NodeRole::parse(&role)
                    .ok_or_else(|| corrupt(format!("role {role:?} of node {id}")))?;
                let own = prefixes
                    .iter()
                    .filter(|(_, _, node)| node.as_deref() == Some(&id))
                    .map(|(prefix, _, _)| *prefix)
                    .collect();
                Ok(Node {
                    site: row.try_get("site_id")?,
                    id,
                    role,
                    prefixes: own,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let srlg_rows = sqlx::query(
            "SELECT src_node, src_interface, srlg FROM link_srlgs \
             ORDER BY src_node, src_interface, srlg",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut srlgs: Vec<(String, String, String)> = Vec::new();
        for row in &srlg_rows {
            srlgs.push((
                row.try_get("src_node")?,
                row.try_get("src_interface")?,
                row.try_get("srlg")?,
            ));
        }
        let links = sqlx::query(
            "SELECT src_node, src_interface, dst_node, dst_interface, capacity_bps, \
             latency_us, admin_up FROM links ORDER BY src_node, src_interface",
        )
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            let src: String = row.try_get("src_node")?;
            let src_interface: String = row.try_get("src_interface")?;
            let capacity: i64 = row.try_get("capacity_bps")?;
            let latency: i64 = row.try_get("latency_us")?;
            let link_srlgs = srlgs
                .iter()
                .filter(|(node, interface, _)| *node == src && *interface == src_interface)
                .map(|(_, _, srlg)| srlg.clone())
                .collect();
            Ok(Link {
                dst: row.try_get("dst_node")?,
                dst_interface: row.try_get("dst_interface")?,
                capacity_bps: u64::try_from(capacity)
                    .map_err(|_| corrupt(format!("capacity of {src}:{src_interface}")))?,
                latency_us: u64::try_from(latency)
                    .map_err(|_| corrupt(format!("latency of {src}:{src_interface}")))?,
                admin_up: row.try_get::<i64, _>("admin_up")? != 0,
                srlgs: link_srlgs,
                src,
                src_interface,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(StoredTopology {
            topology: Topology {
                name,
                sites,
                nodes,
                links,
            },
            revision,
            updated_ms,
        })
    }

    /// The IDs of the sites in the topology.
    pub async fn site_ids(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT site_id FROM sites ORDER BY site_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("site_id")?)).collect()
    }

    // Jobs -----------------------------------------------------------------

    /// Stores a validated job with its endpoints, demands and audit row.
    pub async fn create_job(
        &self,
        job: &NewJob,
        admission: Option<&Admission>,
        creator: &str,
        now_ms: i64,
    ) -> Result<JobRecord, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT job_id FROM jobs WHERE job_id = $1")
                .bind(&job.job_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            return Err(StoreError::AlreadyExists(format!("jobs/{}", job.job_id)));
        }
        sqlx::query(
            "INSERT INTO jobs (job_id, tenant, traffic_class, rate_bps, volume_bytes, \
             deadline_ms, start_ms, end_ms, priority, cancelled_ms, created_ms, updated_ms, \
             creator, max_latency_us, pin_json, collective_json, admission_policy, \
             admission_json, burst_json) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $10, $11, $12, $13, $14, \
             $15, $16, $17)",
        )
        .bind(&job.job_id)
        .bind(&job.tenant)
        .bind(job.class.as_str())
        .bind(job.rate_bps)
        .bind(job.volume_bytes)
        .bind(job.deadline_ms)
        .bind(job.start_ms)
        .bind(job.end_ms)
        .bind(job.priority)
        .bind(now_ms)
        .bind(creator)
        .bind(job.max_latency_us)
        .bind(json_text("pin", &job.job_id, job.pin.as_ref())?)
        .bind(json_text(
            "collective",
            &job.job_id,
            job.collective.as_ref(),
        )?)
        .bind(job.admission_policy.as_str())
        .bind(json_text("admission", &job.job_id, admission)?)
        .bind(json_text("burst", &job.job_id, job.burst.as_ref())?)
        .execute(&mut *tx)
        .await?;
        let sides = [("src", &job.sources), ("dst", &job.destinations)];
        for (side, endpoints) in sides {
            for (position, endpoint) in endpoints.iter().enumerate() {
                let (site, prefix) = match endpoint {
                    Endpoint::Site(site) => (Some(site.clone()), None),
                    Endpoint::Prefix(prefix) => (None, Some(prefix.to_string())),
                };
                sqlx::query(
                    "INSERT INTO job_endpoints (job_id, side, position, site_id, prefix) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&job.job_id)
                .bind(side)
                .bind(position as i64)
                .bind(site)
                .bind(prefix)
                .execute(&mut *tx)
                .await?;
            }
        }
        for demand in &job.demands {
            sqlx::query(
                "INSERT INTO demands (job_id, src_position, dst_position, rate_bps) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&job.job_id)
            .bind(demand.src_position)
            .bind(demand.dst_position)
            .bind(demand.rate_bps)
            .execute(&mut *tx)
            .await?;
        }
        let resource = format!("jobs/{}", job.job_id);
        let detail = serde_json::json!({
            "tenant": job.tenant,
            "traffic_class": job.class.as_str(),
            "rate_bps": job.rate_bps,
            "volume_bytes": job.volume_bytes,
            "demands": job.demands.len(),
            "admission_policy": job.admission_policy.as_str(),
            "admission": admission,
        });
        Self::append_audit(
            &mut tx,
            now_ms,
            AuditEntry {
                actor: creator,
                action: "aiwan.v1.IntentService/CreateJob",
                resource: &resource,
                detail,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(JobRecord {
            job: job.clone(),
            cancelled_ms: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            creator: creator.to_string(),
            admission: admission.cloned(),
            progress: None,
        })
    }

    /// Stores a job's new admission answer (a queued job admitted, say),
    /// with an audit row in the same transaction. Returns the job as it
    /// now is; a cancelled job is left as it was.
    pub async fn update_admission(
        &self,
        job_id: &str,
        admission: &Admission,
        actor: &str,
        now_ms: i64,
    ) -> Result<JobRecord, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE jobs SET admission_json = $1, updated_ms = $2 \
             WHERE job_id = $3 AND cancelled_ms IS NULL",
        )
        .bind(json_text("admission", job_id, Some(admission))?)
        .bind(now_ms)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::FailedPrecondition(format!(
                "jobs/{job_id} is cancelled or gone"
            )));
        }
        let resource = format!("jobs/{job_id}");
        Self::append_audit(
            &mut tx,
            now_ms,
            AuditEntry {
                actor,
                action: "aiwan.admission/Admit",
                resource: &resource,
                detail: serde_json::json!({ "admission": admission }),
            },
        )
        .await?;
        let record = Self::read_job(&mut tx, job_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(resource.clone()))?;
        tx.commit().await?;
        Ok(record)
    }

    /// Stores what the closed loop measured and scheduled of volume jobs.
    /// Telemetry, not an operator's change: no audit row, and the jobs'
    /// update times stay. Jobs cancelled or gone meanwhile are skipped.
    pub async fn update_progress(
        &self,
        progress: &[(String, JobProgress)],
    ) -> Result<(), StoreError> {
        if progress.is_empty() {
            return Ok(());
        }
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        for (job_id, progress) in progress {
            let text = json_text("progress", job_id, Some(progress))?;
            sqlx::query(
                "UPDATE jobs SET progress_json = $1 WHERE job_id = $2 AND cancelled_ms IS NULL",
            )
            .bind(text)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks a job cancelled; a job cancelled before cannot be cancelled again.
    pub async fn cancel_job(
        &self,
        job_id: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<JobRecord, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let cancelled: Option<Option<i64>> =
            sqlx::query_scalar("SELECT cancelled_ms FROM jobs WHERE job_id = $1")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
        match cancelled {
            None => return Err(StoreError::NotFound(format!("jobs/{job_id}"))),
            Some(Some(_)) => {
                return Err(StoreError::FailedPrecondition(format!(
                    "jobs/{job_id} is already cancelled"
                )));
            }
            Some(None) => {}
        }
        sqlx::query("UPDATE jobs SET cancelled_ms = $1, updated_ms = $1 WHERE job_id = $2")
            .bind(now_ms)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        let resource = format!("jobs/{job_id}");
        Self::append_audit(
            &mut tx,
            now_ms,
            AuditEntry {
                actor,
                action: "aiwan.v1.IntentService/CancelJob",
                resource: &resource,
                detail: serde_json::json!({}),
            },
        )
        .await?;
        let record = Self::read_job(&mut tx, job_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(resource))?;
        tx.commit().await?;
        Ok(record)
    }

    /// One job with its endpoints and demands.
    pub async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::read_job(&mut conn, job_id).await
    }

    /// Jobs with an ID above `after`, in ID order, optionally of one tenant.
    pub async fn list_jobs(
        &self,
        tenant: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE job_id > $1 AND ($2 = '' OR tenant = $2) \
             ORDER BY job_id LIMIT $3"
        )))
        .bind(after)
        .bind(tenant.unwrap_or(""))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        Self::read_jobs(&mut conn, &rows).await
    }

    async fn read_job(
        conn: &mut sqlx::AnyConnection,
        job_id: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1"
        )))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        Ok(Self::read_jobs(conn, std::slice::from_ref(&row))
            .await?
            .pop())
    }

    /// The jobs of `rows` (of [`JOB_COLUMNS`]) with their endpoints and
    /// demands, in the rows' order: two queries for all of them, not two
    /// per job (a plan reads every job, and there may be thousands).
    async fn read_jobs(
        conn: &mut sqlx::AnyConnection,
        rows: &[AnyRow],
    ) -> Result<Vec<JobRecord>, StoreError> {
        let ids = rows
            .iter()
            .map(|row| row.try_get::<String, _>("job_id"))
            .collect::<Result<Vec<_>, _>>()?;
        // Per job: sources, destinations, demands.
        type Parts = (Vec<Endpoint>, Vec<Endpoint>, Vec<DemandRecord>);
        let mut parts: HashMap<String, Parts> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PARAMETERS_PER_STATEMENT) {
            let endpoints = rows_for_ids(
                conn,
                "SELECT job_id, side, site_id, prefix FROM job_endpoints \
                 WHERE job_id IN ({ids}) ORDER BY job_id, side, position",
                chunk,
            )
            .await?;
            for row in endpoints {
                let job_id: String = row.try_get("job_id")?;
                let side: String = row.try_get("side")?;
                let site: Option<String> = row.try_get("site_id")?;
                let prefix: Option<String> = row.try_get("prefix")?;
                let endpoint = match (site, prefix) {
                    (Some(site), None) => Endpoint::Site(site),
                    (None, Some(prefix)) => Endpoint::Prefix(
                        prefix
                            .parse()
                            .map_err(|_| corrupt(format!("prefix {prefix:?} of job {job_id}")))?,
                    ),
                    _ => return Err(corrupt(format!("endpoint of job {job_id}"))),
                };
                let (sources, destinations, _) = parts.entry(job_id).or_default();
                match side.as_str() {
                    "src" => sources.push(endpoint),
                    _ => destinations.push(endpoint),
                }
            }
            let demands = rows_for_ids(
                conn,
                "SELECT job_id, src_position, dst_position, rate_bps FROM demands \
                 WHERE job_id IN ({ids}) ORDER BY job_id, src_position, dst_position",
                chunk,
            )
            .await?;
            for row in demands {
                let job_id: String = row.try_get("job_id")?;
                parts.entry(job_id).or_default().2.push(DemandRecord {
                    src_position: row.try_get("src_position")?,
                    dst_position: row.try_get("dst_position")?,
                    rate_bps: row.try_get("rate_bps")?,
                });
            }
        }
        rows.iter()
            .zip(&ids)
            .map(|(row, id)| {
                let (sources, destinations, demands) = parts.remove(id).unwrap_or_default();
                job_from_row(row, sources, destinations, demands)
            })
            .collect()
    }

    // Plans ----------------------------------------------------------------

    /// Jobs that are not cancelled, with endpoints and demands: what a plan
    /// is computed from (the caller filters by time).
    pub async fn uncancelled_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE cancelled_ms IS NULL ORDER BY job_id"
        )))
        .fetch_all(&mut *conn)
        .await?;
        Self::read_jobs(&mut conn, &rows).await
    }

    /// Stores a new plan version as the desired state: the plan row, one
    /// desired-state row per router (push pending), the previous desired
    /// plan superseded, and the audit row, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_plan(
        &self,
        plan: &NewPlan<'_>,
        actor: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<PlanRecord, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let record = Self::insert_plan_in(&mut tx, plan, actor, action, now_ms).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Stores a plan inside `tx`: the desired state (superseding the current
    /// one) or a proposal (expiring older proposals), its routers' rows and
    /// its audit row.
    async fn insert_plan_in(
        tx: &mut Transaction<'static, Any>,
        plan: &NewPlan<'_>,
        actor: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<PlanRecord, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM plans")
            .fetch_one(&mut **tx)
            .await?;
        let version = last.unwrap_or(0) + 1;
        // Whatever is stored, an older proposal is out of date.
        sqlx::query(
            "UPDATE plans SET proposal_state = 'expired' WHERE proposal_state = 'proposed'",
        )
        .execute(&mut **tx)
        .await?;
        let (status, proposal_state, applied_ms) = if plan.proposal {
            (PlanStatus::Computed, Some(ProposalState::Proposed), None)
        } else {
            sqlx::query(
                "UPDATE plans SET status = 'superseded' \
                 WHERE status IN ('applying', 'applied', 'partial')",
            )
            .execute(&mut **tx)
            .await?;
            (PlanStatus::Applying, None, Some(now_ms))
        };
        sqlx::query(
            "INSERT INTO plans (version, status, reason, created_ms, applied_ms, mlu, \
             metrics_json, allocation_json, creator, trigger, reason_json, proposal_state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(version)
        .bind(status.as_str())
        .bind(plan.reason)
        .bind(now_ms)
        .bind(applied_ms)
        .bind(plan.mlu)
        .bind(plan.metrics_json)
        .bind(plan.allocation_json)
        .bind(actor)
        .bind(plan.trigger.as_str())
        .bind(plan.reason_json)
        .bind(proposal_state.map(ProposalState::as_str))
        .execute(&mut **tx)
        .await?;
        for (node, state) in plan.desired_state {
            sqlx::query(
                "INSERT INTO desired_state (node_id, plan_version, state_json, push_status, \
                 pushed_ms) VALUES ($1, $2, $3, 'pending', NULL)",
            )
            .bind(node)
            .bind(version)
            .bind(state)
            .execute(&mut **tx)
            .await?;
        }
        let figures: serde_json::Value =
            serde_json::from_str(plan.reason_json).unwrap_or(serde_json::Value::Null);
        Self::append_audit(
            tx,
            now_ms,
            AuditEntry {
                actor,
                action,
                resource: &format!("plans/{version}"),
                detail: serde_json::json!({
                    "reason": plan.reason,
                    "trigger": plan.trigger.as_str(),
                    "proposal": plan.proposal,
                    "mlu": plan.mlu,
                    "routers": plan.desired_state.len(),
                    "figures": figures,
                }),
            },
        )
        .await?;
        Ok(PlanRecord {
            version,
            status,
            reason: plan.reason.to_string(),
            created_ms: now_ms,
            applied_ms,
            mlu: Some(plan.mlu),
            metrics_json: plan.metrics_json.to_string(),
            creator: actor.to_string(),
            trigger: plan.trigger,
            reason_json: plan.reason_json.to_string(),
            proposal_state,
        })
    }

    /// Applies a proposal: its content as a new plan (trigger approval),
    /// and the proposal marked approved, in one transaction. `None` when
    /// `version` is not a proposal waiting for approval.
    pub async fn approve_proposal(
        &self,
        version: i64,
        reason: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<Option<PlanRecord>, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(select_plans!(
            "WHERE version = $1 AND proposal_state = 'proposed'"
        ))
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(proposal) = row.as_ref().map(plan_from_row).transpose()? else {
            return Ok(None);
        };
        let allocation: String =
            sqlx::query_scalar("SELECT allocation_json FROM plans WHERE version = $1")
                .bind(version)
                .fetch_one(&mut *tx)
                .await?;
        let rows = sqlx::query(
            "SELECT node_id, state_json FROM desired_state WHERE plan_version = $1 ORDER BY node_id",
        )
        .bind(version)
        .fetch_all(&mut *tx)
        .await?;
        let mut desired = Vec::with_capacity(rows.len());
        for row in &rows {
            desired.push((row.try_get("node_id")?, row.try_get("state_json")?));
        }
        let mut figures: serde_json::Value =
            serde_json::from_str(&proposal.reason_json).unwrap_or(serde_json::json!({}));
        if let Some(object) = figures.as_object_mut() {
            object.insert(
                "proposal".into(),
                serde_json::json!(format!("plans/{version}")),
            );
            object.insert("proposal_reason".into(), serde_json::json!(proposal.reason));
        }
        let record = Self::insert_plan_in(
            &mut tx,
            &NewPlan {
                mlu: proposal.mlu.unwrap_or(0.0),
                metrics_json: &proposal.metrics_json,
                allocation_json: &allocation,
                desired_state: &desired,
                reason,
                trigger: PlanTrigger::Approval,
                reason_json: &figures.to_string(),
                proposal: false,
            },
            actor,
            "aiwan.v1.PlanService/ApprovePlan",
            now_ms,
        )
        .await?;
        sqlx::query("UPDATE plans SET proposal_state = 'approved' WHERE version = $1")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    /// A stored plan's allocation and per-router desired state, for a
    /// rollback.
    pub async fn plan_content(
        &self,
        version: i64,
    ) -> Result<Option<(String, Vec<(String, String)>)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let allocation: Option<String> =
            sqlx::query_scalar("SELECT allocation_json FROM plans WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(allocation) = allocation else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT node_id, state_json FROM desired_state WHERE plan_version = $1 ORDER BY node_id",
        )
        .bind(version)
        .fetch_all(&mut *conn)
        .await?;
        let mut state = Vec::with_capacity(rows.len());
        for row in &rows {
            state.push((row.try_get("node_id")?, row.try_get("state_json")?));
        }
        Ok(Some((allocation, state)))
    }

    /// Every router's desired state under a plan (JSON) and how pushing it
    /// went, by router name.
    pub async fn plan_routers(
        &self,
        version: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id, state_json, push_status FROM desired_state WHERE plan_version = $1 \
             ORDER BY node_id",
        )
        .bind(version)
        .fetch_all(&self.pool)
        .await?;
        let mut routers = Vec::with_capacity(rows.len());
        for row in &rows {
            routers.push((
                row.try_get("node_id")?,
                row.try_get("state_json")?,
                row.try_get("push_status")?,
            ));
        }
        Ok(routers)
    }

    /// Routers that have not confirmed a plan yet.
    pub async fn pending_nodes(&self, version: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT node_id FROM desired_state WHERE plan_version = $1 AND push_status <> 'applied' \
             ORDER BY node_id",
        )
        .bind(version)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Gives every router a desired-state row for `version` (routers the
    /// plan sends nothing through get an empty route list: the underlay
    /// only), so that push status is tracked for all of them.
    pub async fn ensure_desired_rows(
        &self,
        version: i64,
        routers: &[String],
    ) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let present: Vec<String> =
            sqlx::query_scalar("SELECT node_id FROM desired_state WHERE plan_version = $1")
                .bind(version)
                .fetch_all(&mut *tx)
                .await?;
        for router in routers.iter().filter(|r| !present.contains(r)) {
            sqlx::query(
                "INSERT INTO desired_state (node_id, plan_version, state_json, push_status, \
                 pushed_ms) VALUES ($1, $2, '{\"routes\":[]}', 'pending', NULL)",
            )
            .bind(router)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records how pushing `version` to `node` went: `applied`, `pending`
    /// (not yet, or the agent did not answer) or `failed` (refused).
    pub async fn set_push_status(
        &self,
        version: i64,
        node: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE desired_state SET push_status = $1, pushed_ms = $2 \
             WHERE plan_version = $3 AND node_id = $4 AND push_status <> $1",
        )
        .bind(status)
        .bind(now_ms)
        .bind(version)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a plan that is still the desired state failed and, in the same
    /// transaction when it was, stores `rollback` as the new desired state:
    /// a reader never sees a moment with no current plan while the routers
    /// still run the one before. True, and the rollback's record, when the
    /// status changed; a superseded or failed plan stays as it is.
    pub async fn fail_plan(
        &self,
        version: i64,
        rollback: Option<&NewPlan<'_>>,
        actor: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<(bool, Option<PlanRecord>), StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE plans SET status = 'failed' WHERE version = $1 \
             AND status IN ('applying', 'applied', 'partial')",
        )
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok((false, None));
        }
        let record = match rollback {
            Some(plan) => Some(Self::insert_plan_in(&mut tx, plan, actor, action, now_ms).await?),
            None => None,
        };
        tx.commit().await?;
        Ok((true, record))
    }

    /// Moves a plan that is still the desired state (applying, applied or
    /// partial) to `status`; a superseded or failed plan stays as it is.
    /// True when the status changed.
    pub async fn set_plan_status(
        &self,
        version: i64,
        status: PlanStatus,
    ) -> Result<bool, StoreError> {
        let _writer = self.write_lock.lock().await;
        let result = sqlx::query(
            "UPDATE plans SET status = $1 WHERE version = $2 \
             AND status IN ('applying', 'applied', 'partial') AND status <> $1",
        )
        .bind(status.as_str())
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// The plan that is the desired state: the newest one being applied,
    /// applied or partially applied.
    pub async fn current_plan(&self) -> Result<Option<PlanRecord>, StoreError> {
        let row = sqlx::query(select_plans!(
            "WHERE status IN ('applying', 'applied', 'partial') ORDER BY version DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(plan_from_row).transpose()
    }

    pub async fn get_plan(&self, version: i64) -> Result<Option<PlanRecord>, StoreError> {
        let row = sqlx::query(select_plans!("WHERE version = $1"))
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(plan_from_row).transpose()
    }

    /// Plans with a version below `before`, newest first.
    pub async fn list_plans(&self, before: i64, limit: i64) -> Result<Vec<PlanRecord>, StoreError> {
        let rows = sqlx::query(select_plans!(
            "WHERE version < $1 ORDER BY version DESC LIMIT $2"
        ))
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(plan_from_row).collect()
    }

    // Tokens ---------------------------------------------------------------

    /// Creates or updates the bootstrap token from the configuration.
    pub async fn ensure_bootstrap_token(
        &self,
        role: Role,
        secret: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let hash = crate::auth::hash_secret(secret);
        let current: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT secret_sha256 || ':' || role, revoked_ms FROM api_tokens \
             WHERE token_id = 'bootstrap'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((identity, revoked)) = &current
            && *identity == format!("{hash}:{}", role.as_str())
        {
            if revoked.is_some() {
                // Revoked through the API: the same secret in the config
                // does not bring it back; a new secret makes a new token.
                tracing::warn!(
                    "the configured bootstrap token was revoked; it stays revoked (configure a new secret for a new one)"
                );
            }
            return Ok(());
        }
        // A changed bootstrap secret replaces the old one.
        sqlx::query("DELETE FROM api_tokens WHERE token_id = 'bootstrap'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_tokens (token_id, secret_sha256, role, description, created_ms, \
             creator, revoked_ms) VALUES ('bootstrap', $1, $2, 'bootstrap token', $3, 'config', NULL)",
        )
        .bind(&hash)
        .bind(role.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        Self::append_audit(
            &mut tx,
            now_ms,
            AuditEntry {
                actor: "config",
                action: "bootstrap_token",
                resource: "tokens/bootstrap",
                detail: serde_json::json!({ "role": role.as_str() }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes the bootstrap token when the configuration no longer names
    /// one (a secret removed from the config must stop working). True when
    /// a token was revoked.
    pub async fn revoke_bootstrap_token(&self, now_ms: i64) -> Result<bool, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_ms = $1 WHERE token_id = 'bootstrap' AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if revoked {
            Self::append_audit(
                &mut tx,
                now_ms,
                AuditEntry {
                    actor: "config",
                    action: "bootstrap_token_removed",
                    resource: "tokens/bootstrap",
                    detail: serde_json::json!({}),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    /// Stores a new token under a random ID and returns its record.
    pub async fn create_token(
        &self,
        role: Role,
        description: &str,
        secret: &str,
        creator: &Caller,
        now_ms: i64,
    ) -> Result<TokenRecord, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let token_id = uuid::Uuid::new_v4().simple().to_string();
        let actor = creator.actor();
        sqlx::query(
            "INSERT INTO api_tokens (token_id, secret_sha256, role, description, created_ms, \
             creator, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&token_id)
        .bind(crate::auth::hash_secret(secret))
        .bind(role.as_str())
        .bind(description)
        .bind(now_ms)
        .bind(&actor)
        .execute(&mut *tx)
        .await?;
        Self::append_audit(
            &mut tx,
            now_ms,
            AuditEntry {
                actor: &actor,
                action: "aiwan.v1.AdminService/CreateToken",
                resource: &format!("tokens/{token_id}"),
                detail: serde_json::json!({ "role": role.as_str(), "description": description }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(TokenRecord {
            token_id,
            role,
            description: description.to_string(),
            created_ms: now_ms,
            creator: actor,
        })
    }

    /// Tokens that are not revoked.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT token_id, role, description, created_ms, creator FROM api_tokens \
             WHERE revoked_ms IS NULL ORDER BY created_ms, token_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let role: String = row.try_get("role")?;
                Ok(TokenRecord {
                    token_id: row.try_get("token_id")?,
                    role: Role::parse(&role).ok_or_else(|| corrupt(format!("role {role:?}")))?,
                    description: row.try_get("description")?,
                    created_ms: row.try_get("created_ms")?,
                    creator: row.try_get("creator")?,
                })
            })
            .collect()
    }

    /// Revokes a token; it stays in the table for the audit trail.
    pub async fn revoke_token(
        &self,
        token_id: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE api_tokens SET revoked_ms = $1 WHERE token_id = $2 AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .bind(token_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tokens/{token_id}")));
        }
        Self::append_audit(
            &mut tx,
            now_ms,
            AuditEntry {
                actor,
                action: "aiwan.v1.AdminService/DeleteToken",
                resource: &format!("tokens/{token_id}"),
                detail: serde_json::json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The caller a secret's hash belongs to, if the token is live.
    pub async fn find_token(&self, secret_sha256: &str) -> Result<Option<Caller>, StoreError> {
        let row = sqlx::query(
            "SELECT token_id, role, description FROM api_tokens \
             WHERE secret_sha256 = $1 AND revoked_ms IS NULL",
        )
        .bind(secret_sha256)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        let token_id: String = row.try_get("token_id")?;
        Ok(Some(Caller {
            token_name: format!("tokens/{token_id}"),
            description: row.try_get("description")?,
            role: Role::parse(&role).ok_or_else(|| corrupt(format!("role {role:?}")))?,
        }))
    }
}

fn plan_from_row(row: &AnyRow) -> Result<PlanRecord, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(PlanRecord {
        version: row.try_get("version")?,
        status: PlanStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("plan status {status:?}")))?,
        reason: row.try_get("reason")?,
        created_ms: row.try_get("created_ms")?,
        applied_ms: row.try_get("applied_ms")?,
        mlu: row.try_get("mlu")?,
        metrics_json: row.try_get("metrics_json")?,
        creator: row.try_get("creator")?,
        trigger: {
            let trigger: String = row.try_get("trigger")?;
            PlanTrigger::parse(&trigger)
                .ok_or_else(|| corrupt(format!("plan trigger {trigger:?}")))?
        },
        reason_json: row.try_get("reason_json")?,
        proposal_state: {
            let state: Option<String> = row.try_get("proposal_state")?;
            state
                .map(|state| {
                    ProposalState::parse(&state)
                        .ok_or_else(|| corrupt(format!("proposal state {state:?}")))
                })
                .transpose()?
        },
    })
}

/// A job's value stored as JSON text (`what` names it in the error).
fn json_text<T: serde::Serialize>(
    what: &str,
    job_id: &str,
    value: Option<&T>,
) -> Result<Option<String>, StoreError> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| corrupt(format!("{what} of job {job_id}: {e}")))
}

/// A job's JSON column read back; NULL is `None`.
fn json_column<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
    job_id: &str,
) -> Result<Option<T>, StoreError> {
    match row.try_get::<Option<String>, _>(column)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| corrupt(format!("{column} of job {job_id}: {e}"))),
    }
}

fn job_from_row(
    row: &AnyRow,
    sources: Vec<Endpoint>,
    destinations: Vec<Endpoint>,
    demands: Vec<DemandRecord>,
) -> Result<JobRecord, StoreError> {
    let job_id: String = row.try_get("job_id")?;
    let class: String = row.try_get("traffic_class")?;
    let class = TrafficClass::parse(&class)
        .ok_or_else(|| corrupt(format!("traffic class {class:?} of job {job_id}")))?;
    Ok(JobRecord {
        job: NewJob {
            tenant: row.try_get("tenant")?,
            class,
            sources,
            destinations,
            rate_bps: row.try_get("rate_bps")?,
            volume_bytes: row.try_get("volume_bytes")?,
            deadline_ms: row.try_get("deadline_ms")?,
            start_ms: row.try_get("start_ms")?,
            end_ms: row.try_get("end_ms")?,
            priority: row.try_get("priority")?,
            max_latency_us: row.try_get("max_latency_us")?,
            demands,
            pin: json_column(row, "pin_json", &job_id)?,
            collective: json_column(row, "collective_json", &job_id)?,
            admission_policy: match row.try_get::<Option<String>, _>("admission_policy")? {
                None => AdmissionPolicy::default(),
                Some(text) => AdmissionPolicy::parse(&text)
                    .ok_or_else(|| corrupt(format!("admission_policy {text:?} of job {job_id}")))?,
            },
            burst: json_column(row, "burst_json", &job_id)?,
            job_id: job_id.clone(),
        },
        cancelled_ms: row.try_get("cancelled_ms")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        creator: row.try_get("creator")?,
        admission: json_column(row, "admission_json", &job_id)?,
        progress: json_column(row, "progress_json", &job_id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan<'a>(
        reason: &'a str,
        rows: &'a [(String, String)],
        trigger: PlanTrigger,
    ) -> NewPlan<'a> {
        NewPlan {
            mlu: 0.5,
            metrics_json: "{}",
            allocation_json: "{}",
            desired_state: rows,
            reason,
            trigger,
            reason_json: "{}",
            proposal: false,
        }
    }

    #[tokio::test]
    async fn a_failed_plan_and_its_rollback_are_stored_together_and_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("aiwan.db").display()
        );
        let store = Store::open(&url).await.expect("store");
        let rows = vec![("r1".to_string(), "{}".to_string())];
        let v1 = store
            .insert_plan(
                &plan("first", &rows, PlanTrigger::Operator),
                "test",
                "test",
                1,
            )
            .await
            .expect("v1");
        let v2 = store
            .insert_plan(
                &plan("second", &rows, PlanTrigger::Operator),
                "test",
                "test",
                2,
            )
            .await
            .expect("v2");
        let rollback = plan("back to the first", &rows, PlanTrigger::AutomaticRollback);
        let (changed, record) = store
            .fail_plan(v2.version, Some(&rollback), "test", "test", 3)
            .await
            .expect("fail");
        assert!(changed);
        let record = record.expect("rollback stored");
        assert_eq!(record.version, v2.version + 1);
        let current = store.current_plan().await.expect("read").expect("current");
        assert_eq!(
            (current.version, current.reason.as_str()),
            (record.version, "back to the first")
        );
        let v2 = store.get_plan(v2.version).await.expect("read").expect("v2");
        assert_eq!(v2.status, PlanStatus::Failed);
        let v1 = store.get_plan(v1.version).await.expect("read").expect("v1");
        assert_eq!(v1.status, PlanStatus::Superseded);
        // Failing it again changes nothing and stores no second rollback.
        let again = store
            .fail_plan(v2.version, Some(&rollback), "test", "test", 4)
            .await
            .expect("fail again");
        assert_eq!(again, (false, None));
        let newest = store.list_plans(i64::MAX, 1).await.expect("list");
        assert_eq!(newest[0].version, record.version);
    }

    #[test]
    fn a_multi_row_insert_numbers_its_placeholders_across_rows() {
        assert_eq!(
            multi_row_insert("nodes", &["node_id", "role"], 3),
            "INSERT INTO nodes (node_id, role) VALUES ($1, $2), ($3, $4), ($5, $6)"
        );
        assert_eq!(
            multi_row_insert("sites", &["site_id"], 1),
            "INSERT INTO sites (site_id) VALUES ($1)"
        );
    }
}
