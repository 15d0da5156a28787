//! The `signetd` binary: parses the command line and assembles the library's parts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;

use signetd::app::{self, App};
use signetd::cli::{
    AccountCommand, AuditCommand, Cli, Command, JobsCommand, KeysCommand, RecordsCommand,
};
use signetd::config::{Config, LogFormat};
use signetd::{dev, hsm, pki, server, store};

/// Faster than glibc's malloc for the daemon's many small, short-lived allocations, and
/// without its arena locks (`README.md`, "Load tests and the signing benchmark").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // The offline proof check needs no configuration, database or token: auditors run it
    // anywhere.
    if let Command::Audit(AuditCommand::VerifyProof {
        checkpoint,
        key,
        name,
        entry,
        proof,
        trusted,
        consistency,
    }) = &cli.command
    {
        return run_verify_proof(
            checkpoint,
            key,
            name.as_deref(),
            entry.as_deref().zip(proof.as_deref()),
            trusted.as_deref().zip(consistency.as_deref()),
        );
    }
    let config = Config::load(cli.config.as_deref())?;
    init_logging(&config);
    let runtime = runtime()?;
    let one_shot = !matches!(cli.command, Command::Serve);
    let result = match cli.command {
        Command::Init { out_dir } => runtime.block_on(run_init(config, out_dir.as_deref())),
        Command::Serve => runtime.block_on(run_serve(config)),
        Command::HsmBench {
            token,
            sessions,
            algorithms,
            seconds,
            token_keys,
            json,
        } => run_bench(
            &config,
            &token,
            &sessions,
            &algorithms,
            seconds,
            token_keys,
            json,
        ),
        Command::Audit(AuditCommand::Verify { checkpoint }) => {
            runtime.block_on(run_audit_verify(config, &checkpoint))
        }
        Command::Account(AccountCommand::Create {
            name,
            roles,
            out_dir,
            validity_days,
        }) => runtime.block_on(run_account_create(
            config,
            &name,
            &roles,
            &out_dir,
            validity_days,
        )),
        Command::Keys(cmd) => runtime.block_on(run_keys(config, cmd)),
        Command::Records(cmd) => runtime.block_on(run_records(config, cmd)),
        Command::Jobs(cmd) => runtime.block_on(run_jobs(config, cmd)),
        Command::Dev { .. } | Command::Audit(AuditCommand::VerifyProof { .. }) => Ok(()),
    };
    if one_shot {
        exit_now(result)
    }
    result
}

/// Ends a one-shot command (`init`, `keys`, `account`, `jobs`, ...) without running the C
/// libraries' exit handlers. The command started background tasks and token threads that may
/// still be inside the PKCS#11 module (a key slot opening its session copy, a timed
/// checkpoint), and SoftHSM2's static destructors would tear the module down under them: a CI
/// run saw `signetd keys generate` die after its work was done, with no error line. Whatever
/// the command did is durable by now (committed by the database, written by the token, its
/// files closed); only its output is flushed here.
fn exit_now(result: anyhow::Result<()>) -> ! {
    use std::io::Write;
    let code = match &result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e:?}");
            1
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[allow(unsafe_code)]
    // SAFETY: `_exit` takes a plain integer and does not return; it runs no handlers, so no
    // other thread's state is touched.
    unsafe {
        libc::_exit(code)
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
    let (hsm, store, metrics) = open(&config).await?;
    let out_dir = out_dir.unwrap_or(&config.state_dir).to_owned();
    let report = pki::init(&config, &hsm, &store, &metrics, &out_dir).await?;
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
    app::prepare_key_slots(&app.hsm);
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
    spawn_reload_on_sighup(app.clone(), shutdown.clone());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        // Ping at half the period, and only while the runtime still schedules tasks.
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        });
    }
    let signing = app.signing.clone();
    // Batch jobs: this process works the running job; on shutdown its workers claim nothing
    // new and finish the batches in hand.
    app.jobs.run_workers(None);
    let jobs_drained = {
        let (jobs, stop) = (app.jobs.clone(), shutdown.clone());
        let grace = Duration::from_secs(app.config.shutdown_grace_secs);
        tokio::spawn(async move {
            stop.cancelled().await;
            jobs.drain(grace).await;
        })
    };
    server::run(app, tls, listeners, shutdown).await?;
    let _ = jobs_drained.await;
    // Usage counters to the database, key leases back to other daemons and batch jobs.
    signing.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP reloads the TLS material (a certificate re-issued by `signetd init`).
fn spawn_reload_on_sighup(app: App, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; reload needs a restart");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                got = hup.recv() => {
                    if got.is_none() {
                        break;
                    }
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    if let Err(e) = app.reload_tls().await {
                        tracing::error!(error = %e, "reload failed; keeping the current certificate");
                    }
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
            }
        }
    });
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
    let report = pki::init(&config, &hsm, &store, &metrics, &prepared.dir)
        .await
        .context("initialising the development instance")?;
    for action in &report.actions {
        eprintln!("signet dev: {action}");
    }
    let (app, tls) = App::start(config, hsm, store, metrics).await?;
    let listeners = server::Listeners::bind(&app.config.listen).await?;
    let addrs = listeners.addresses()?;
    app::prepare_key_slots(&app.hsm);
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
    token_keys: bool,
    json: bool,
) -> anyhow::Result<()> {
    let metrics = app::new_metrics()?;
    let hsm = app::open_hsm(config, &metrics)?;
    let duration = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
    let results = hsm::bench::run(&hsm, token, algorithms, sessions, duration, token_keys)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!(
            "{:<10} {:>8} {:>7} {:>12} {:>10} {:>20} {:>10} {:>12}",
            "algorithm",
            "sessions",
            "keys",
            "signatures",
            "sign/s",
            "verify/s (1 thread)",
            "floor/s",
            "sign µs cpu"
        );
        for r in &results {
            println!(
                "{:<10} {:>8} {:>7} {:>12} {:>10.0} {:>20.0} {:>10.0} {:>12.1}",
                r.algorithm.as_str(),
                r.sessions,
                if r.token_keys { "token" } else { "session" },
                r.signatures,
                r.per_second,
                r.verify_per_second,
                r.floor_per_second,
                r.sign_cpu_us
            );
        }
        if let Some(r) = results.first() {
            println!(
                "floor/s = 1/(1/S + 1/({n}·V)): S = sign/s with these sessions, V = verify/s on one \
                 thread, {n} cores; the token's signature and its verification before release, \
                 nothing else",
                n = r.cores
            );
        }
    }
    Ok(())
}

async fn run_audit_verify(config: Config, checkpoints: &[PathBuf]) -> anyhow::Result<()> {
    use signetd::audit::saved;

    let store = store::Store::connect(&config.database)?;
    let key = store
        .audit_key()
        .await?
        .context("no audit key in the database: run `signetd init` first")?;
    let public_key = signetd::audit::ed25519_public_key(&key)?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public_key)?;
    // The checkpoints given must exist; the one saved by the daemon is checked when it does.
    let mut held = Vec::new();
    for file in checkpoints {
        match saved::read(file, &config.audit.origin, &vk) {
            Ok(Some(cp)) => held.push(cp),
            Ok(None) => anyhow::bail!("{}: no such file", file.display()),
            Err(e) => {
                println!("audit log BAD: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(dir) = &config.audit.checkpoint_dir {
        match saved::read(&saved::path(dir), &config.audit.origin, &vk) {
            Ok(Some(cp)) => held.push(cp),
            Ok(None) => {}
            Err(e) => {
                println!("audit log BAD: {e}");
                std::process::exit(1);
            }
        }
    }
    match signetd::audit::verify_log(&store, &config.audit.origin, &public_key, &held).await {
        Ok(report) => {
            println!(
                "audit log OK: {} entries, {} checkpoints verified ({} of them held outside the \
                 database), root {}",
                report.entries,
                report.checkpoints,
                held.len(),
                report.root
            );
            Ok(())
        }
        Err(e) => {
            println!("audit log BAD: {e}");
            if let Some(seq) = e.seq {
                println!("first bad entry: {seq}");
            }
            std::process::exit(1);
        }
    }
}

fn run_verify_proof(
    checkpoint: &Path,
    key: &Path,
    name: Option<&str>,
    inclusion: Option<(&Path, &Path)>,
    consistency: Option<(&Path, &Path)>,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    use ed25519_dalek::pkcs8::DecodePublicKey as _;

    if inclusion.is_none() && consistency.is_none() {
        anyhow::bail!(
            "give --entry and --proof (the entry is in the tree), --trusted and --consistency \
             (the tree extends the one you hold), or both"
        );
    }
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    // A checkpoint file: the signed note, or the JSON of GET /v1/audit/checkpoint.
    let note_of = |p: &Path| -> anyhow::Result<String> {
        let text = read(p)?;
        Ok(match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => v["note"]
                .as_str()
                .with_context(|| format!("{}: checkpoint JSON without `note`", p.display()))?
                .to_owned(),
            Err(_) => text,
        })
    };
    let json_of = |p: &Path| -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&read(p)?).with_context(|| format!("{}: not JSON", p.display()))
    };
    let note = note_of(checkpoint)?;
    let key_text = read(key)?;
    let (key_name, pem) = match serde_json::from_str::<serde_json::Value>(&key_text) {
        Ok(v) => (
            v["name"].as_str().map(str::to_owned),
            v["public_key_pem"]
                .as_str()
                .context("key JSON without `public_key_pem`")?
                .to_owned(),
        ),
        Err(_) => (None, key_text),
    };
    let name = name
        .map(str::to_owned)
        .or(key_name)
        .context("give --name (the log origin) with a PEM key")?;
    let public_key = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
        .map_err(|e| anyhow::anyhow!("audit public key: {e}"))?
        .to_bytes();
    let bad = |e: signetd::audit::VerifyError| -> ! {
        println!("BAD: {e}");
        std::process::exit(1);
    };
    if let Some((trusted, proof)) = consistency {
        let trusted = note_of(trusted)?;
        let proof = json_of(proof)?;
        let from = proof["from"]
            .as_u64()
            .context("consistency proof without `from`")?;
        let to = proof["to"]
            .as_u64()
            .context("consistency proof without `to`")?;
        let path = proof_hashes(&proof)?;
        match signetd::audit::verify_consistency_offline(
            &note,
            &trusted,
            &name,
            &public_key,
            from,
            to,
            &path,
        ) {
            Ok((old, new)) => println!(
                "OK: the checkpointed tree of {} entries extends the trusted one of {}",
                new.size(),
                old.size()
            ),
            Err(e) => bad(e),
        }
    }
    if let Some((entry, proof)) = inclusion {
        let entry = json_of(entry)?;
        let leaf = base64::engine::general_purpose::STANDARD
            .decode(
                entry["leaf"]
                    .as_str()
                    .context("entry JSON without `leaf`")?,
            )
            .context("entry `leaf` is not base64")?;
        let proof = json_of(proof)?;
        let seq = proof["seq"].as_u64().context("proof without `seq`")?;
        let size = proof["size"].as_u64().context("proof without `size`")?;
        let path = proof_hashes(&proof)?;
        match signetd::audit::verify_proof_offline(
            &note,
            &name,
            &public_key,
            &leaf,
            seq,
            size,
            &path,
        ) {
            Ok(entry) => println!(
                "OK: entry {} ({} by `{}` on {}: {}) is in the checkpointed tree of {size} entries",
                entry.seq, entry.action, entry.actor_account, entry.subject, entry.result
            ),
            Err(e) => bad(e),
        }
    }
    Ok(())
}

/// The `proof` array of a served proof: hex hashes.
fn proof_hashes(proof: &serde_json::Value) -> anyhow::Result<Vec<[u8; 32]>> {
    proof["proof"]
        .as_array()
        .context("proof without `proof`")?
        .iter()
        .map(|h| {
            let bytes = hex::decode(h.as_str().unwrap_or_default())?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| anyhow::anyhow!("proof hash is not 32 bytes"))
        })
        .collect()
}

async fn run_account_create(
    config: Config,
    name: &str,
    roles: &[String],
    out_dir: &Path,
    validity_days: u32,
) -> anyhow::Result<()> {
    let (hsm, store, metrics) = open(&config).await?;
    let (app, _) = App::start(config, hsm, store, metrics).await?;
    let ca_cert = <x509_cert::Certificate as der::Decode>::from_der(&app.ca_der)?;
    std::fs::create_dir_all(out_dir)?;
    let issuer = pki::Issuer {
        ca_cert: &ca_cert,
        ca_signer: &app.ca_signer,
        audit: &app.audit,
        urls: pki::service::issuer_urls(&app.config),
    };
    let action = pki::create_client_account(
        &issuer,
        name,
        roles,
        validity_days,
        &out_dir.join(format!("{name}.crt")),
        &out_dir.join(format!("{name}.key")),
    )
    .await?;
    println!("signetd account: {action}");
    Ok(())
}

/// `signetd keys ...`: through the same signing service and audit log as the API, as the
/// operator `signetd-cli`.
async fn run_keys(config: Config, cmd: KeysCommand) -> anyhow::Result<()> {
    let (hsm, store, metrics) = open(&config).await?;
    let (app, _) = App::start(config, hsm, store, metrics).await?;
    let actor = signetd::audit::Actor {
        fingerprint: String::new(),
        account: "signetd-cli".into(),
    };
    match cmd {
        KeysCommand::Generate {
            ring,
            algorithm,
            count,
            token,
        } => {
            let generated = app
                .signing
                .generate_keys(&actor, &ring, algorithm, count, token.as_deref())
                .await?;
            if generated.ring_created {
                println!(
                    "signetd keys: created ring `{}` ({} keys on token `{}`)",
                    generated.ring.name, generated.ring.algorithm, generated.ring.token
                );
            }
            for (key, receipt) in &generated.keys {
                println!(
                    "signetd keys: generated {} key {} in ring `{}` (fingerprint {}, audit entry {})",
                    key.key.algorithm, key.key.id, key.ring, key.key.fingerprint, receipt.seq
                );
            }
        }
        KeysCommand::List { ring, json } => {
            let keys = app.signing.keys(ring.as_deref()).await?;
            if json {
                let list: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        let pem = der::pem::encode_string(
                            "PUBLIC KEY",
                            der::pem::LineEnding::LF,
                            &k.key.key.public_key,
                        )
                        .unwrap_or_default();
                        serde_json::json!({
                            "id": k.key.key.id,
                            "ring": k.key.ring,
                            "algorithm": k.key.key.algorithm.as_str(),
                            "state": k.state,
                            "usage_count": k.key.usage_count,
                            "fingerprint": k.key.key.fingerprint,
                            "public_key_pem": pem,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<36} {:<16} {:<9} {:<8} {:>8}  fingerprint",
                    "id", "ring", "algorithm", "state", "usage"
                );
                for k in &keys {
                    println!(
                        "{:<36} {:<16} {:<9} {:<8} {:>8}  {}",
                        k.key.key.id,
                        k.key.ring,
                        k.key.key.algorithm.as_str(),
                        k.state,
                        k.key.usage_count,
                        k.key.key.fingerprint
                    );
                }
            }
        }
        KeysCommand::Retire { id } => {
            let (key, receipt) = app.signing.retire_key(&actor, id).await?;
            println!(
                "signetd keys: retired key {} of ring `{}` (audit entry {})",
                key.key.key.id, key.key.ring, receipt.seq
            );
        }
    }
    Ok(())
}

/// The operator as an audit actor, for the `records` and `jobs` commands.
fn cli_actor() -> signetd::audit::Actor {
    signetd::audit::Actor {
        fingerprint: String::new(),
        account: "signetd-cli".into(),
    }
}

/// `signetd records ...`: through the audit log, as the operator `signetd-cli`.
async fn run_records(config: Config, cmd: RecordsCommand) -> anyhow::Result<()> {
    let (hsm, store, metrics) = open(&config).await?;
    let (app, _) = App::start(config, hsm, store, metrics).await?;
    match cmd {
        RecordsCommand::Seed { count, size } => {
            let started = std::time::Instant::now();
            let n = app
                .jobs
                .seed(&cli_actor(), count, size, |done| {
                    eprintln!("signetd records: {done}/{count} stored");
                })
                .await?;
            println!(
                "signetd records: seeded {n} records of {size} random bytes in {:.2}s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// `signetd jobs ...`: through the same service and audit log as the API, as the operator
/// `signetd-cli`.
async fn run_jobs(config: Config, cmd: JobsCommand) -> anyhow::Result<()> {
    let (hsm, store, metrics) = open(&config).await?;
    let (app, _) = App::start(config, hsm, store, metrics).await?;
    match cmd {
        JobsCommand::Run {
            ring,
            batch_size,
            wait,
            work,
            json,
        } => {
            let started = std::time::Instant::now();
            let (job, receipt) = app.jobs.create(&cli_actor(), &ring, batch_size).await?;
            eprintln!(
                "signetd jobs: job {} signs {} records with ring `{}` in {} batches of {} (audit entry {})",
                job.id, job.total, job.ring, job.batches, job.batch_size, receipt.seq
            );
            if !wait && work.is_none() {
                if json {
                    println!("{}", serde_json::to_string_pretty(&job)?);
                } else {
                    println!("{}", job.id);
                }
                return Ok(());
            }
            if let Some(n) = work {
                app.jobs.run_workers(Some(n));
            }
            let end = wait_for_job(&app, job.id).await;
            if work.is_some() {
                app.jobs
                    .drain(Duration::from_secs(app.config.shutdown_grace_secs))
                    .await;
            }
            let job = end?;
            let secs = started.elapsed().as_secs_f64();
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                println!(
                    "job {} {}: {} of {} records signed in {secs:.2}s ({:.0}/s), {} batches by {} keys",
                    job.id,
                    job.state,
                    job.signed,
                    job.total,
                    job.signed as f64 / secs.max(1e-9),
                    job.batches_done,
                    job.per_key.len()
                );
            }
            anyhow::ensure!(job.state == "done", "job {} was {}", job.id, job.state);
        }
        JobsCommand::Get { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&app.jobs.get(id).await?)?
            );
        }
        JobsCommand::List { limit } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&app.jobs.list(limit).await?)?
            );
        }
        JobsCommand::Cancel { id } => {
            let (job, receipt) = app.jobs.cancel(&cli_actor(), id).await?;
            eprintln!(
                "signetd jobs: cancelled job {id} (audit entry {})",
                receipt.seq
            );
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Verify { id } => {
            let report = app.jobs.verify(id).await?;
            if report.ok() {
                println!(
                    "job {id} OK: {} signatures in {} batches verify, every batch root is in the audit log, {} records unsigned",
                    report.signatures, report.batches, report.unsigned
                );
            } else {
                println!("job {id} BAD: {} problems", report.problem_count);
                for p in &report.problems {
                    println!("  {p}");
                }
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// Shows a progress bar on stderr until the job is over (or Ctrl-C), and returns it.
async fn wait_for_job(app: &App, id: uuid::Uuid) -> anyhow::Result<signetd::jobs::JobView> {
    use std::io::{IsTerminal as _, Write as _};
    let tty = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    loop {
        let job = app.jobs.get(id).await?;
        let over = job.state != "running";
        if tty || over || last_line.elapsed() >= Duration::from_secs(2) {
            let line = progress_line(&job);
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r{line}\x1b[K");
                if over {
                    let _ = writeln!(err);
                }
            } else {
                let _ = writeln!(err, "{line}");
            }
            last_line = std::time::Instant::now();
        }
        if over {
            return Ok(job);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::signal::ctrl_c() => {
                anyhow::bail!("stopped waiting; job {id} goes on in the daemons (signetd jobs get {id})");
            }
        }
    }
}

fn progress_line(job: &signetd::jobs::JobView) -> String {
    const WIDTH: usize = 30;
    let fraction = if job.total > 0 {
        (job.signed as f64 / job.total as f64).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let filled = (fraction * WIDTH as f64).round() as usize;
    let eta = job
        .eta_secs
        .map_or_else(String::new, |s| format!("  ETA {s:.0}s"));
    format!(
        "[{}{}] {:>5.1}%  {}/{} records  {:.0}/s{}  {}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        fraction * 100.0,
        job.signed,
        job.total,
        job.rate_per_sec,
        eta,
        job.state
    )
}
