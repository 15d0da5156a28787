//! dev: `signetd dev` — a complete instance in one directory: SoftHSM2 tokens, a private
//! PostgreSQL cluster, a configuration file, init, and the environment file for scripts.

use std::fmt::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{self, Config};
use crate::server::Addresses;

/// The tokens a development instance has, by configured name.
pub const TOKENS: [&str; 3] = ["ca", "audit", "signing"];

/// The database name.
const DATABASE: &str = "signetd";
/// The daemon's database role: it may append to the audit log, never change it.
const RUNTIME_ROLE: &str = "signetd";

/// A prepared instance directory: tokens exist, PostgreSQL runs, the configuration is written.
#[derive(Debug)]
pub struct Prepared {
    /// The directory, absolute.
    pub dir: PathBuf,
    /// The SoftHSM2 configuration file (for `SOFTHSM2_CONF`).
    pub softhsm_conf: PathBuf,
    /// The configuration file.
    pub config_path: PathBuf,
    /// The configuration.
    pub config: Config,
    /// The PostgreSQL cluster, stopped when the instance stops.
    pub cluster: signet_pgcluster::Cluster,
}

/// Creates or reuses everything in `dir` except the daemon itself. Runs before the async
/// runtime starts, because the caller must then set `SOFTHSM2_CONF` for this process.
pub fn prepare(dir: &Path) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;

    let softhsm = signet_softhsm::SoftHsm::create(&dir.join("softhsm"))?;
    let pins = dir.join("pins");
    std::fs::create_dir_all(&pins)?;
    for name in TOKENS {
        let label = format!("signetd-{name}");
        let user_pin = read_or_create_pin(&pins.join(format!("{name}.pin")))?;
        let so_pin = read_or_create_pin(&pins.join(format!("{name}.so-pin")))?;
        if !softhsm.has_token(&label)? {
            softhsm.init_token(&label, &so_pin, &user_pin)?;
            eprintln!("signetd dev: created token {label}");
        }
    }

    let cluster = signet_pgcluster::Cluster::create_or_open(&dir.join("pg"))?;
    cluster.start()?;
    if !cluster.database_exists(DATABASE)? {
        cluster.create_database(DATABASE)?;
    }
    // The daemon runs as `signetd`; migrations run as the owner, `postgres`.
    cluster.create_role(RUNTIME_ROLE)?;

    let config_path = dir.join("signetd.toml");
    if !config_path.exists() {
        let mut cfg = Config {
            state_dir: dir.clone(),
            ..Config::default()
        };
        cfg.listen.api = free_port_or(8443)?;
        cfg.listen.public = free_port_or(8080)?;
        cfg.listen.metrics = free_port_or(9464)?;
        cfg.database.url = cluster.url_as(RUNTIME_ROLE, DATABASE);
        cfg.database.admin_url = Some(cluster.url(DATABASE));
        cfg.hsm.module = softhsm.module_path().to_owned();
        for name in TOKENS {
            cfg.hsm.tokens.insert(
                name.to_owned(),
                config::Token {
                    label: format!("signetd-{name}"),
                    pin_file: Some(pins.join(format!("{name}.pin"))),
                    ..config::Token::default()
                },
            );
        }
        let text = format!(
            "# signetd development instance, written by `signetd dev`; edit freely.\n{}",
            cfg.to_toml()?
        );
        std::fs::write(&config_path, text)?;
    }
    let config = Config::load(Some(&config_path))?;
    Ok(Prepared {
        dir,
        softhsm_conf: softhsm.conf_path().to_owned(),
        config_path,
        config,
        cluster,
    })
}

/// 127.0.0.1:`preferred` when it is free, else a free port the kernel picks.
fn free_port_or(preferred: u16) -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))?;
    Ok(listener.local_addr()?)
}

fn read_or_create_pin(path: &Path) -> anyhow::Result<String> {
    if let Ok(pin) = std::fs::read_to_string(path) {
        return Ok(pin.trim().to_owned());
    }
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let pin = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, pin.as_bytes())?;
    Ok(pin)
}

/// The files `init` wrote that clients need.
#[derive(Debug)]
pub struct ClientFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Admin certificate.
    pub cert: PathBuf,
    /// Admin key.
    pub key: PathBuf,
}

/// Writes `DIR/env`, a shell-sourceable file that tells scripts where the instance is.
pub fn write_env(
    prepared: &Prepared,
    addresses: &Addresses,
    files: &ClientFiles,
) -> anyhow::Result<PathBuf> {
    let vars = env_vars(prepared, addresses, files);
    let mut text = String::from("# signetd development instance; source with: . DIR/env\n");
    for (name, value) in &vars {
        writeln!(text, "export {name}={}", shell_quote(value))?;
    }
    // The commands the README shows after sourcing this file (`signetd keys generate ...`) run
    // the binary that made the instance.
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        writeln!(
            text,
            "export PATH={}:\"$PATH\"",
            shell_quote(&bin_dir.display().to_string())
        )?;
    }
    let path = prepared.dir.join("env");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The variables of the env file.
pub fn env_vars(
    prepared: &Prepared,
    addresses: &Addresses,
    files: &ClientFiles,
) -> Vec<(&'static str, String)> {
    vec![
        (
            "SIGNETD_API_URL",
            format!("https://localhost:{}", addresses.api.port()),
        ),
        ("SIGNETD_PUBLIC_URL", format!("http://{}", addresses.public)),
        // The scrape URL, which is what Prometheus and curl need (the listener answers 404
        // elsewhere).
        (
            "SIGNETD_METRICS_URL",
            format!("http://{}/metrics", addresses.metrics),
        ),
        ("SIGNETD_CA", files.ca.display().to_string()),
        ("SIGNETD_CLIENT_CERT", files.cert.display().to_string()),
        ("SIGNETD_CLIENT_KEY", files.key.display().to_string()),
        ("SOFTHSM2_CONF", prepared.softhsm_conf.display().to_string()),
        ("SIGNETD_DATABASE_URL", prepared.config.database.url.clone()),
        ("SIGNETD_CONFIG", prepared.config_path.display().to_string()),
    ]
}

/// The lines `signetd dev` prints once it serves.
pub fn banner(addresses: &Addresses, files: &ClientFiles, env_path: &Path) -> String {
    let api = format!("https://localhost:{}", addresses.api.port());
    format!(
        "signetd dev is serving.\n\
         \n\
         Ask who you are (admin client certificate):\n  \
         curl --cacert {ca} --cert {cert} --key {key} {api}/v1/whoami\n\
         \n\
         Or, with the environment file:\n  \
         . {env} && curl --cacert \"$SIGNETD_CA\" --cert \"$SIGNETD_CLIENT_CERT\" --key \"$SIGNETD_CLIENT_KEY\" \"$SIGNETD_API_URL/v1/whoami\"\n\
         \n\
         Public listener:  curl http://{public}/readyz   (CA certificate: http://{public}/ca.pem)\n\
         Metrics:          curl http://{metrics}/metrics\n\
         Token ceiling:    . {env} && {exe} hsm-bench\n\
         \n\
         Ctrl-C stops the daemon and its PostgreSQL; `signetd dev` again picks up where it left off.\n",
        ca = shell_quote(&files.ca.display().to_string()),
        cert = shell_quote(&files.cert.display().to_string()),
        key = shell_quote(&files.key.display().to_string()),
        env = shell_quote(&env_path.display().to_string()),
        exe = shell_quote(
            &std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "signetd".into())
        ),
        public = addresses.public,
        metrics = addresses.metrics,
    )
}

/// Quotes for POSIX sh when needed.
fn shell_quote(s: &str) -> String {
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:=@,+%".contains(c));
    if plain && !s.is_empty() {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b.pem"), "/a/b.pem");
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            shell_quote("postgresql://p@/d?host=/x"),
            "'postgresql://p@/d?host=/x'"
        );
    }
}
