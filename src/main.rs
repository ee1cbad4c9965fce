//! The pgsplit command line: `pgsplit --config config.toml [--check]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use pgsplit::config::{Config, ConfigError};
use pgsplit::server::Listener;

/// A PostgreSQL proxy that pools connections and sends reads to replicas.
#[derive(Parser, Debug)]
#[command(name = "pgsplit", version, about)]
struct Args {
    /// Path to the configuration file.
    #[arg(short, long, default_value = "config.toml")]
    config: PathBuf,
    /// Check the configuration, print every problem with its key, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGSPLIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            report_config_error(&args.config, &e);
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: configuration is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgsplit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report_config_error(path: &std::path::Path, e: &ConfigError) {
    match e {
        ConfigError::Invalid(problems) => {
            eprintln!("{}: {} problem(s):", path.display(), problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
        }
        other => eprintln!("{}: {other}", path.display()),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listen = config.proxy.listen;
        let listener = Listener::bind(config)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        tracing::info!(addr = %listener.local_addr()?, "pgsplit listening");
        tokio::select! {
            _ = listener.serve() => {}
            _ = shutdown_signal() => tracing::info!("shutting down"),
        }
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
