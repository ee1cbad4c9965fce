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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(pgsplit::logfmt::EscapedFields)
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
        // The certificate files too: a pair that cannot be used would stop the start.
        if let Err(e) = pgsplit::tls::ClientTls::load(&config.tls) {
            eprintln!("{}: {e}", args.config.display());
            return ExitCode::from(2);
        }
        // The nodes' CA files too: one that cannot be used would stop the start.
        for node in &config.nodes {
            if let Err(e) = pgsplit::backend::NodeTls::from_config(node) {
                eprintln!("{}: {e}", args.config.display());
                return ExitCode::from(2);
            }
        }
        println!("{}: configuration is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    match run(config, args.config.clone()) {
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

fn run(config: Config, config_path: std::path::PathBuf) -> anyhow::Result<()> {
    // One thread (like PgBouncer) is fastest when the proxy shares a small machine with
    // PostgreSQL and the clients; more threads help where it has cores of its own.
    let threads = config.proxy.worker_threads;
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    runtime.block_on(async move {
        let listen = config.proxy.listen;
        let listener = Listener::bind(config, Some(config_path.clone()))
            .await
            .with_context(|| format!("starting on {listen}"))?;
        tracing::info!(addr = %listener.local_addr()?, "pgsplit listening");
        let proxy = listener.proxy();
        let mut signals = Signals::new().context("installing signal handlers")?;
        let serving = tokio::spawn(listener.serve());
        loop {
            match signals.next().await {
                Signal::Hangup => reload(&proxy, &config_path),
                Signal::Interrupt => {
                    tracing::info!("SIGINT received: exiting now");
                    log_totals(&proxy);
                    return Ok(());
                }
                Signal::Terminate => break,
            }
        }
        // SIGTERM: stop accepting, let connected clients finish, then exit. A second
        // SIGTERM or a SIGINT exits at once.
        serving.abort();
        tracing::info!(
            clients = proxy.client_count(),
            "SIGTERM received: draining clients"
        );
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if proxy.client_count() == 0 {
                        tracing::info!("all clients gone; exiting");
                        log_totals(&proxy);
                        return Ok(());
                    }
                }
                signal = signals.next() => {
                    if signal != Signal::Hangup {
                        tracing::info!("second signal: exiting now");
                        log_totals(&proxy);
                        return Ok(());
                    }
                }
            }
        }
    })
}

/// SIGHUP: reads the configuration file again; an invalid file changes nothing.
fn reload(proxy: &pgsplit::proxy::Proxy, path: &std::path::Path) {
    match proxy.reload_file() {
        Ok(needs_restart) if needs_restart.is_empty() => {
            tracing::info!(path = %path.display(), "configuration reloaded")
        }
        Ok(needs_restart) => tracing::warn!(
            path = %path.display(),
            sections = %needs_restart.join(", "),
            "configuration reloaded; these changes need a restart and were not applied"
        ),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "reload refused; the old configuration stays")
        }
    }
}

/// One log line with where transactions went, by node and by reason.
fn log_totals(proxy: &pgsplit::proxy::Proxy) {
    let stats = &proxy.routing().stats;
    let nodes: Vec<String> = proxy
        .config()
        .nodes
        .iter()
        .zip(stats.by_node())
        .map(|(n, count)| format!("{}={count}", n.name))
        .collect();
    let reasons: Vec<String> = pgsplit::router::Reason::ALL
        .iter()
        .map(|r| (r.as_str(), stats.by_reason(*r)))
        .filter(|(_, count)| *count > 0)
        .map(|(r, count)| format!("{r}={count}"))
        .collect();
    tracing::info!(
        nodes = %nodes.join(" "),
        reasons = %reasons.join(" "),
        "routing totals"
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Hangup,
    Interrupt,
    Terminate,
}

/// The signals pgsplit reacts to.
struct Signals {
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Hangup,
            _ = self.int.recv() => Signal::Interrupt,
            _ = self.term.recv() => Signal::Terminate,
        }
    }
}
