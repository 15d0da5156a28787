//! The `signetd` binary: parses the command line and assembles the library's parts.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;

use signetd::app::{self, App};
use signetd::cli::{Cli, Command};
use signetd::config::{Config, LogFormat};
use signetd::{dev, hsm, pki, server, store};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Dev { dir } = &cli.command {
        let prepared = dev::prepare(dir)?;
        // SoftHSM2 reads SOFTHSM2_CONF when the module initialises. No other thread exists yet:
        // the runtime is built below.
        #[allow(unsafe_code)]
        // SAFETY: single-threaded at this point; nothing reads the environment concurrently.
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &prepared.softhsm_conf);
        }
        init_logging(&prepared.config);
        let runtime = runtime()?;
        let result = runtime.block_on(run_dev(&prepared));
        if let Err(e) = prepared.cluster.stop() {
            tracing::warn!(error = %e, "stopping PostgreSQL");
        }
        return result;
    }
    let config = Config::load(cli.config.as_deref())?;
    init_logging(&config);
    let runtime = runtime()?;
    match cli.command {
        Command::Init { out_dir } => runtime.block_on(run_init(config, out_dir.as_deref())),
        Command::Serve => runtime.block_on(run_serve(config)),
        Command::HsmBench {
            token,
            sessions,
            algorithms,
            seconds,
            json,
        } => run_bench(&config, &token, &sessions, &algorithms, seconds, json),
        Command::Dev { .. } => Ok(()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("signetd")
        .build()?)
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn open(
    config: &Config,
) -> anyhow::Result<(hsm::Hsm, store::Store, signetd::metrics::Metrics)> {
    let metrics = app::new_metrics()?;
    let cfg = config.clone();
    let m = metrics.clone();
    let hsm = tokio::task::spawn_blocking(move || app::open_hsm(&cfg, &m)).await??;
    let store = store::Store::connect(&config.database)?;
    Ok((hsm, store, metrics))
}

async fn run_init(config: Config, out_dir: Option<&Path>) -> anyhow::Result<()> {
    let (hsm, store, _) = open(&config).await?;
    let out_dir = out_dir.unwrap_or(&config.state_dir).to_owned();
    let report = pki::init(&config, &hsm, &store, &out_dir).await?;
    if report.actions.is_empty() {
        println!("signetd init: already initialised; nothing changed.");
    } else {
        for action in &report.actions {
            println!("signetd init: {action}");
        }
    }
    Ok(())
}

async fn run_serve(config: Config) -> anyhow::Result<()> {
    let (hsm, store, metrics) = open(&config).await?;
    let (app, tls) = App::start(config, hsm, store, metrics).await?;
    let listeners = server::Listeners::bind(&app.config.listen).await?;
    let addrs = listeners.addresses()?;
    tracing::info!(api = %addrs.api, public = %addrs.public, metrics = %addrs.metrics, "serving");
    serve_until_signal(app, tls, listeners).await
}

async fn serve_until_signal(
    app: App,
    tls: std::sync::Arc<rustls::ServerConfig>,
    listeners: server::Listeners,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        trigger.cancel();
    });
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    server::run(app, tls, listeners, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

async fn run_dev(prepared: &dev::Prepared) -> anyhow::Result<()> {
    let config = prepared.config.clone();
    let (hsm, store, metrics) = open(&config).await?;
    let report = pki::init(&config, &hsm, &store, &prepared.dir)
        .await
        .context("initialising the development instance")?;
    for action in &report.actions {
        eprintln!("signet dev: {action}");
    }
    let (app, tls) = App::start(config, hsm, store, metrics).await?;
    let listeners = server::Listeners::bind(&app.config.listen).await?;
    let addrs = listeners.addresses()?;
    let files = dev::ClientFiles {
        ca: report.ca_file,
        cert: report.admin_cert,
        key: report.admin_key,
    };
    let env_path = dev::write_env(prepared, &addrs, &files)?;
    println!("{}", dev::banner(&addrs, &files, &env_path));
    serve_until_signal(app, tls, listeners).await
}

fn run_bench(
    config: &Config,
    token: &str,
    sessions: &[usize],
    algorithms: &[hsm::KeyAlgorithm],
    seconds: f64,
    json: bool,
) -> anyhow::Result<()> {
    let metrics = app::new_metrics()?;
    let hsm = app::open_hsm(config, &metrics)?;
    let duration = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
    let results = hsm::bench::run(&hsm, token, algorithms, sessions, duration)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!(
            "{:<10} {:>8} {:>12} {:>10}",
            "algorithm", "sessions", "signatures", "sign/s"
        );
        for r in &results {
            println!(
                "{:<10} {:>8} {:>12} {:>10.0}",
                r.algorithm.as_str(),
                r.sessions,
                r.signatures,
                r.per_second
            );
        }
    }
    Ok(())
}
