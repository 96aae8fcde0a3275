//! `malog demo`: the whole pipeline on one machine with nothing to set up. It
//! starts two simulators on 127.0.0.1 (two regions, each with its own project
//! and keys), writes a config with one source per region into the demo folder,
//! runs a pass, grows a running job's log, runs a second pass that fetches only
//! that log, and prints the index.

use crate::config::Config;
use crate::index::{Index, QueryFilter};
use crate::output::{Format, exit, print_report, print_rows};
use crate::run::{Archiver, RunScope};
use crate::sim::{SimConfig, Simulator};
use anyhow::Context;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// The demo's regions: a source name and the region it stands for.
const REGIONS: [(&str, &str); 2] = [("north", "cn-north-4"), ("south", "cn-southwest-2")];

/// One `[sources.<name>]` table of the demo config.
fn source_table(name: &str, region: &str, endpoint: &str, project_id: &str) -> String {
    format!(
        r#"[sources.{name}]
endpoint = "{endpoint}"
region = "{region}"
project_id = "{project_id}"
access_key_file = "{name}-ak"
secret_key_file = "{name}-sk"

[sources.{name}.jobs]
discover = true

"#
    )
}

/// The config the demo writes; paths are relative to the demo folder.
fn demo_config(sources: &str) -> String {
    format!(
        r#"# Written by `malog demo`: points at the built-in simulators, which stop with the demo.
{sources}[storage]
kind = "local"
path = "archive"

[index]
path = "index.sqlite"
"#
    )
}

/// The simulated project of the `i`th region: the demo scenario with its own
/// project, keys and job ids (ModelArts job ids are unique across regions).
fn region_scenario(i: usize) -> SimConfig {
    let mut config = SimConfig::demo();
    if i > 0 {
        config.project_id = format!("{i:x}{}", &config.project_id[1..]);
        config.access_key = format!("SIMULATORAK{i:09}");
        config.secret_key = format!("{}-{i}", config.secret_key);
        for job in &mut config.jobs {
            job.id = format!("{i:x}{}", &job.id[1..]);
        }
    }
    config
}

/// Writes a secret file readable by its owner only, as malog expects of key files.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

pub async fn run(dir: &Path) -> anyhow::Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut sims = Vec::new();
    let mut tables = String::new();
    for (i, (name, region)) in REGIONS.into_iter().enumerate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind 127.0.0.1")?;
        let sim_config = region_scenario(i);
        let sim = Simulator::start(listener, sim_config.clone())
            .await
            .context("cannot start the simulator")?;
        println!(
            "simulator for source {name} ({region}) serving {} jobs on {}",
            sim_config.jobs.len(),
            sim.endpoint()
        );
        // The simulator's own made-up keys, in files as systemd credentials would be.
        write_private(&dir.join(format!("{name}-ak")), &sim_config.access_key)?;
        write_private(&dir.join(format!("{name}-sk")), &sim_config.secret_key)?;
        tables.push_str(&source_table(
            name,
            region,
            &sim.endpoint(),
            &sim_config.project_id,
        ));
        sims.push((sim, sim_config));
    }
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, demo_config(&tables))?;
    let config = Config::load(&config_path)?;
    let index_path = config.index_path.clone();
    let credentials = crate::run::resolve_credentials(&config)?;
    let archiver = Archiver::open(config, credentials).await?;
    let scope = RunScope {
        progress: true,
        ..Default::default()
    };

    println!("\nfirst pass:");
    let first = archiver.run_once(&scope, CancellationToken::new()).await?;
    print_report(&first, Format::Table)?;
    // A running job keeps writing: grow its first log so the second pass has news.
    let (sim, sim_config) = &sims[0];
    let running = sim_config
        .jobs
        .iter()
        .find(|j| j.phase == "Running" && !j.tasks.is_empty());
    if let Some(job) = running {
        let task = &job.tasks[0];
        sim.set_task_size(&job.id, &task.id, task.size + 64 * 1024);
        println!(
            "\n(job {} is still running; its {} log just grew by 64 KiB)",
            job.name, task.id
        );
    }
    println!("\nsecond pass (only the grown log is downloaded again; finished jobs are sealed):");
    let second = archiver.run_once(&scope, CancellationToken::new()).await?;
    print_report(&second, Format::Table)?;
    for (sim, _) in &sims {
        sim.shutdown();
    }

    println!("\nthe index ({}):", index_path.display());
    let rows = Index::open_read_only(&index_path)?.query(&QueryFilter::default())?;
    print_rows(&rows, Format::Table)?;
    println!(
        "\nlogs are in {}/archive, a folder per source; try: malog -c {} query --source south --format json",
        dir.display(),
        config_path.display()
    );
    // Jobs that are still running or have no log yet are expected in a demo.
    Ok(if second.outcome() == "ok" {
        exit::OK
    } else {
        exit::PARTIAL
    })
}
