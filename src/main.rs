//! hearth: an Ollama-compatible model server in one binary.
//!
//! `main` parses the command line and starts the server; everything else
//! lives in the library (`src/lib.rs`; see ARCHITECTURE.md for the map).

use hearth::{api, config};

use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Large language models on edge boxes, through Ollama's API.
#[derive(Debug, Parser)]
#[command(name = "hearth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server (alias: start).
    #[command(alias = "start")]
    Serve,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config::Config::from_env();
    env_logger::Builder::new()
        .filter_level(match config.debug_level {
            0 => log::LevelFilter::Info,
            1 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        })
        .format_target(false)
        .init();
    match cli.command {
        Some(Command::Serve) => serve(config),
        None => {
            use clap::CommandFactory as _;
            Cli::command().print_help()?;
            Ok(())
        }
    }
}

fn serve(config: config::Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // HTTP is light work; inference runs on its own threads, so two
        // async workers are plenty and keep idle memory small.
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let bind = config.bind;
        let models = config.models_dir.clone();
        let state = api::app(config)
            .with_context(|| format!("open the model store at {}", models.display()))?;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("listen on {bind}"))?;
        let local = listener.local_addr().context("read the bound address")?;
        log::info!(
            "Listening on {local} (version {}), models in {}, ready in {:?}",
            env!("CARGO_PKG_VERSION"),
            models.display(),
            started.elapsed()
        );
        api::serve(state, listener).await.context("serve")
    })
}
