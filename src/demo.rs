//! `malog demo`: the whole pipeline on one machine with nothing to set up. It
//! starts the simulator on 127.0.0.1, writes a config into the demo folder, runs a
//! pass, grows a running job's log, runs a second pass that fetches only that log,
//! and prints the index.

use crate::config::Config;
use crate::index::{Index, QueryFilter};
use crate::output::{Format, exit, print_report, print_rows};
use crate::run::{Archiver, RunScope};
use crate::sim::{SimConfig, Simulator};
use anyhow::Context;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// The config the demo writes; paths are relative to the demo folder.
fn demo_config(endpoint: &str, project_id: &str) -> String {
    format!(
        r#"# Written by `malog demo`: points at the built-in simulator, which stops with the demo.
[modelarts]
endpoint = "{endpoint}"
project_id = "{project_id}"
access_key_file = "simulator-ak"
secret_key_file = "simulator-sk"

[jobs]
discover = true

[storage]
kind = "local"
path = "archive"

[index]
path = "index.sqlite"
"#
    )
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind 127.0.0.1")?;
    let sim_config = SimConfig::demo();
    let sim = Simulator::start(listener, sim_config.clone())
        .await
        .context("cannot start the simulator")?;
    println!(
        "simulator serving {} jobs on {}",
        sim_config.jobs.len(),
        sim.endpoint()
    );

    // The simulator's own made-up keys, in files as systemd credentials would be.
    write_private(&dir.join("simulator-ak"), &sim_config.access_key)?;
    write_private(&dir.join("simulator-sk"), &sim_config.secret_key)?;
    let config_path = dir.join("config.toml");
    std::fs::write(
        &config_path,
        demo_config(&sim.endpoint(), &sim_config.project_id),
    )?;
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
    sim.shutdown();

    println!("\nthe index ({}):", index_path.display());
    let rows = Index::open_read_only(&index_path)?.query(&QueryFilter::default())?;
    print_rows(&rows, Format::Table)?;
    println!(
        "\nlogs are in {}/archive; try: malog -c {} query --format json",
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
