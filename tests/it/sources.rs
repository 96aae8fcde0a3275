//! Several sources in one archive: two simulators stand for two regions, each
//! with its own project and keys; three configured sources (`north` and
//! `research` share the first region's project, each selecting its own jobs as
//! two teams' workspaces would; `south` is the second region).

use crate::harness::*;
use malog::config::Config;
use malog::index::Index;
use malog::read::Selection;
use malog::run::{Archiver, RunReport};
use malog::sim::{Fault, FaultTarget, SimConfig, SimJob, Simulator};
use std::path::PathBuf;

/// Two regions and a folder for config, keys, index and archive.
struct Regions {
    north: Simulator,
    north_config: SimConfig,
    south: Simulator,
    south_config: SimConfig,
    dir: tempfile::TempDir,
}

fn job(id: &str, name: &str, sizes: &[u64]) -> SimJob {
    SimJob {
        name: name.to_owned(),
        ..finished_job(id, 2, sizes)
    }
}

impl Regions {
    async fn start(north_jobs: Vec<SimJob>, south_jobs: Vec<SimJob>) -> Regions {
        let north_config = SimConfig {
            jobs: north_jobs,
            ..SimConfig::default()
        };
        let south_config = SimConfig {
            project_id: "5e0b2f0c8a0f4b6e9c1d2e3f4a5b6c7d".to_owned(),
            access_key: "SIMULATORAKSOUTH0001".to_owned(),
            secret_key: "south-secret-key-not-a-real-one".to_owned(),
            jobs: south_jobs,
            ..SimConfig::default()
        };
        let start = |config: SimConfig| async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            Simulator::start(listener, config).await.unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let keys = [
            ("north", &north_config),
            ("research", &north_config),
            ("south", &south_config),
        ];
        for (name, config) in keys {
            std::fs::write(dir.path().join(format!("{name}-ak")), &config.access_key).unwrap();
            std::fs::write(dir.path().join(format!("{name}-sk")), &config.secret_key).unwrap();
        }
        Regions {
            north: start(north_config.clone()).await,
            north_config,
            south: start(south_config.clone()).await,
            south_config,
            dir,
        }
    }

    /// One `[sources.<name>]` table; `extra` goes into it, `jobs` into its jobs table.
    fn table(&self, name: &str, south: bool, extra: &str, jobs: &str) -> String {
        let (sim, config, region) = if south {
            (&self.south, &self.south_config, "cn-southwest-2")
        } else {
            (&self.north, &self.north_config, "cn-north-4")
        };
        format!(
            r#"
[sources.{name}]
endpoint = "{}"
region = "{region}"
project_id = "{}"
access_key_file = "{name}-ak"
secret_key_file = "{name}-sk"
{extra}

[sources.{name}.jobs]
discover = true
{jobs}
"#,
            sim.endpoint(),
            config.project_id
        )
    }

    /// The three sources, each allowed `rps` requests per second.
    fn three_sources(&self, rps: u32) -> String {
        let cap = format!("requests_per_second = {rps}");
        format!(
            "{}{}{}{FAST_FETCH}",
            self.table("north", false, &cap, "name_pattern = \"^north-\""),
            self.table("research", false, &cap, "name_pattern = \"^research-\""),
            self.table("south", true, &cap, "")
        )
    }

    fn config_path(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn archiver(&self, text: &str) -> Archiver {
        let config = Config::load(&self.config_path(text)).unwrap();
        let credentials = malog::run::resolve_credentials_in(&config, None).unwrap();
        Archiver::open(config, credentials).await.unwrap()
    }

    fn index(&self) -> Index {
        Index::open_read_only(&self.dir.path().join("index.sqlite")).unwrap()
    }

    /// The (source, job) pairs of the index's tasks under `selection`.
    fn rows(&self, selection: &Selection) -> Vec<(String, String)> {
        let (sql, args) = selection.tasks_sql(malog::index::TASK_COLUMNS, "");
        let rows: Vec<malog::index::TaskRecord> = self
            .index()
            .read(|conn| {
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                    malog::index::task_from_row(r)
                })?;
                rows.collect()
            })
            .unwrap();
        let mut pairs: Vec<(String, String)> =
            rows.into_iter().map(|r| (r.source, r.job_id)).collect();
        pairs.sort();
        pairs
    }

    fn malog(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("malog"))
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(args)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap()
    }
}

fn north_jobs() -> Vec<SimJob> {
    vec![
        job("n1", "north-resnet", &[1000, 2000]),
        job("n2", "north-bert", &[1500]),
        job("r1", "research-llama", &[3000]),
    ]
}

fn south_jobs() -> Vec<SimJob> {
    vec![job("s1", "south-yolo", &[500, 700])]
}

fn fetched(report: &RunReport, source: &str) -> u64 {
    report.sources[source].fetched
}

/// GUARD: three sources in two regions archive into one index and one archive,
/// each job under its own source, in a folder per source; `query --source`
/// and `status` show the split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sources_archive_into_one_index() {
    let r = Regions::start(north_jobs(), south_jobs()).await;
    let text = r.three_sources(1000);
    let report = pass(&r.archiver(&text).await).await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_eq!(
        (
            fetched(&report, "north"),
            fetched(&report, "research"),
            fetched(&report, "south")
        ),
        (3, 1, 2)
    );
    assert_eq!(report.totals.fetched, 6);
    let all = r.rows(&Selection::default());
    assert_eq!(all.len(), 6, "{all:?}");
    let south = Selection {
        sources: vec!["south".into()],
        ..Selection::default()
    };
    assert_eq!(
        r.rows(&south),
        vec![("south".into(), "s1".into()), ("south".into(), "s1".into())]
    );
    // The default layout gets a folder per source when there are several.
    let archive = r.dir.path().join("archive");
    for (source, project) in [
        ("north", &r.north_config.project_id),
        ("research", &r.north_config.project_id),
        ("south", &r.south_config.project_id),
    ] {
        assert!(archive.join(source).join(project).is_dir(), "{source}");
    }

    let out = r.malog(&[
        "query", "--source", "research", "--source", "south", "--format", "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut sources: Vec<&str> = rows.iter().map(|r| r["source"].as_str().unwrap()).collect();
    sources.sort();
    assert_eq!(sources, ["research", "south", "south"]);

    let out = r.malog(&["status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let archived: Vec<(String, u64)> = status["tasks_by_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["source"].as_str().unwrap().to_owned(),
                c["tasks"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        archived,
        [
            ("north".to_owned(), 3),
            ("research".to_owned(), 1),
            ("south".to_owned(), 2)
        ]
    );
    assert_eq!(status["sources"].as_array().unwrap().len(), 3);

    // A rerun fetches nothing.
    let again = pass(&r.archiver(&text).await).await;
    assert_eq!(again.totals.fetched, 0, "{again:?}");
}

/// GUARD: wrong keys in one source fail that source's tasks with the
/// authentication message and cost exactly one authentication failure (the
/// gateway locks a key after five); the other sources archive everything; the
/// pass is partial (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_fail_only_their_source() {
    let r = Regions::start(north_jobs(), south_jobs()).await;
    std::fs::write(r.dir.path().join("research-sk"), "not-the-secret-key").unwrap();
    r.config_path(&r.three_sources(1000));
    let out = r.malog(&["backfill", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "partial");
    assert_eq!(report["sources"]["north"]["fetched"], 3);
    assert_eq!(report["sources"]["south"]["fetched"], 2);
    assert_eq!(report["sources"]["research"]["fetched"], 0);
    let failures = report["failures"].as_array().unwrap();
    assert!(!failures.is_empty());
    for f in failures {
        assert_eq!(f["source"], "research", "{f}");
        let error = f["error"].as_str().unwrap();
        assert!(
            error.contains("401") || error.contains("uthenticat"),
            "{error}"
        );
        assert!(!error.contains("not-the-secret-key"), "{error}");
    }
    assert_eq!(r.north.stats().auth_failures, 1, "{:?}", r.north.stats());
    assert_eq!(r.south.stats().auth_failures, 0);
}

/// GUARD: a throttled source slows down alone: each source keeps to its own
/// request-rate cap (the simulator counts requests per sliding second) and
/// the other source archives everything in the same pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_source_keeps_to_its_own_cap() {
    let many = |prefix: &str, n: usize| -> Vec<SimJob> {
        (0..n)
            .map(|i| job(&format!("{prefix}{i}"), &format!("{prefix}-{i}"), &[300]))
            .collect()
    };
    let r = Regions::start(many("north", 6), many("south", 12)).await;
    r.north
        .inject(Fault::throttled(FaultTarget::Link, 1).times(3));
    let text = format!(
        "{}{}{FAST_FETCH}",
        r.table("north", false, "requests_per_second = 3", ""),
        r.table("south", true, "requests_per_second = 8", "")
    );
    let report = pass(&r.archiver(&text).await).await;
    assert_eq!(report.outcome(), "ok", "{:?}", report.failures);
    assert_eq!(
        (fetched(&report, "north"), fetched(&report, "south")),
        (6, 12)
    );
    let (north, south) = (r.north.stats(), r.south.stats());
    assert!(north.faults_fired >= 1, "{north:?}");
    assert!(north.max_api_requests_per_second <= 3, "{north:?}");
    assert!(south.max_api_requests_per_second <= 8, "{south:?}");
    assert_eq!(south.faults_fired, 0);
}

/// GUARD: an index written before sources existed upgrades in place (its jobs
/// belong to `default`, the `[modelarts]` form's source) and a rerun with the
/// unchanged config fetches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_single_source_index_upgrades_and_a_rerun_fetches_nothing() {
    let h = Harness::start(vec![finished_job("a", 2, &[1000, 2000])]).await;
    let report = h.run().await;
    assert_eq!(report.totals.fetched, 2);
    // Rebuild the index as the schema before sources (migrations 0001-0004)
    // holding the same rows.
    let index_path = h.config().index_path;
    let old_path = h.dir.path().join("old.sqlite");
    {
        let conn = rusqlite::Connection::open(&old_path).unwrap();
        for sql in [
            include_str!("../../migrations/0001_create_index.sql"),
            include_str!("../../migrations/0002_add_stored_object.sql"),
            include_str!("../../migrations/0003_add_job_records.sql"),
            include_str!("../../migrations/0004_add_log_growth.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute("ATTACH ?1 AS new", [index_path.to_str().unwrap()])
            .unwrap();
        for table in ["jobs", "tasks", "job_records", "runs"] {
            let columns: Vec<String> = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let columns = columns.join(", ");
            conn.execute(
                &format!("INSERT INTO main.{table} ({columns}) SELECT {columns} FROM new.{table}"),
                [],
            )
            .unwrap();
        }
    }
    std::fs::rename(&old_path, &index_path).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", index_path.display()));
    }

    let again = h.run().await;
    assert_eq!(
        (again.outcome(), again.totals.fetched),
        ("ok", 0),
        "{again:?}"
    );
    let index = Index::open_read_only(&index_path).unwrap();
    let rows = index.query(&Default::default()).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.source == "default"), "{rows:?}");
}

/// GUARD: the daemon's `/metrics` labels tasks and API calls by source and
/// `/healthz` lists each source with what its answers said (bad keys in one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_show_each_source() {
    use crate::daemon::{Daemon, YEARLY, daemon_config};
    let r = Regions::start(north_jobs(), south_jobs()).await;
    std::fs::write(r.dir.path().join("research-sk"), "not-the-secret-key").unwrap();
    let text = format!(
        "{}{}{}{}",
        r.table("north", false, "", "name_pattern = \"^north-\""),
        r.table("research", false, "", "name_pattern = \"^research-\""),
        r.table("south", true, "", ""),
        daemon_config(YEARLY, FAST_FETCH)
    );
    let mut d = Daemon::spawn_config(&r.config_path(&text), &[]).await;
    let fetched = |m: &crate::daemon::Metrics, source: &str| {
        m.get(
            "malog_tasks_total",
            &[("source", source), ("outcome", "fetched")],
        )
    };
    d.wait_metrics("the first pass counted by source", |m| {
        (m.get("malog_passes_total", &[("outcome", "partial")]) == Some(1.0)
            && fetched(m, "north") == Some(3.0)
            && fetched(m, "south") == Some(2.0)
            && fetched(m, "research") == Some(0.0)
            && m.get(
                "malog_index_tasks",
                &[("source", "south"), ("state", "archived")],
            ) == Some(2.0)
            && m.get(
                "malog_api_requests_total",
                &[("source", "research"), ("status", "401")],
            ) == Some(1.0))
        .then_some(())
    })
    .await;
    let (status, body) = d.get("/healthz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let conditions: Vec<(String, String)> = health["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["condition"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(conditions.len(), 3, "{conditions:?}");
    for (name, condition) in &conditions {
        match name.as_str() {
            "research" => assert!(
                condition.starts_with("authentication failed"),
                "{condition}"
            ),
            _ => assert_eq!(condition, "ok", "{name}"),
        }
    }
    d.stop().await;
}

/// GUARD: one project configured as two sources: of the two passes that list
/// the same jobs at once, exactly one records them; the other archives
/// nothing and reports each job as another source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_configured_twice_is_archived_once() {
    let r = Regions::start(north_jobs(), south_jobs()).await;
    let text = format!(
        "{}{}{FAST_FETCH}",
        r.table("north", false, "", ""),
        r.table("research", false, "", "")
    );
    let report = pass(&r.archiver(&text).await).await;
    let (north, research) = (fetched(&report, "north"), fetched(&report, "research"));
    assert_eq!((north + research, north * research), (4, 0), "{report:?}");
    let loser = if north == 0 { "north" } else { "research" };
    assert_eq!(report.failures.len(), 3, "{:?}", report.failures);
    for f in &report.failures {
        assert_eq!(f.source, loser);
        assert!(
            f.error.contains("already archived from source"),
            "{}",
            f.error
        );
    }
    assert_eq!(r.rows(&Selection::default()).len(), 4);
    let again = pass(&r.archiver(&text).await).await;
    assert_eq!(again.totals.fetched, 0, "{again:?}");
}
