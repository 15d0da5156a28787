//! Test support: a real instance per test — SoftHSM2 tokens and a private PostgreSQL cluster in a
//! temporary directory — and the daemon run as a child process, as operators run it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signet_pgcluster::{Options, TempCluster};

pub mod audit;
pub mod cms;
pub mod jobs;
pub mod pki;
pub mod rpm;
pub mod sign;
use signet_softhsm::SoftHsm;

pub const TOKENS: [&str; 3] = ["ca", "audit", "signing"];
pub const PIN: &str = "test-user-pin-1234";
pub const SO_PIN: &str = "test-so-pin-1234";

/// Fails (never skips) when a tool nobody here wrote is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: install the Debian package `{package}` (scripts/install-deps does)"
    );
}

/// Tokens, a database and a configuration file in a temporary directory.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub softhsm: SoftHsm,
    pub pg: TempCluster,
    pub config_path: PathBuf,
    /// Where `init` writes ca.pem, admin.crt and admin.key.
    pub out: PathBuf,
}

impl Instance {
    pub fn new() -> Instance {
        require_tool("softhsm2-util", "softhsm2");
        require_tool("pkcs11-tool", "opensc");
        require_tool("openssl", "openssl");
        require_tool("curl", "curl");
        let dir = tempfile::Builder::new()
            .prefix("signetd-test-")
            .tempdir()
            .expect("temporary directory");
        let softhsm = SoftHsm::create(&dir.path().join("softhsm")).expect("softhsm directory");
        let pins = dir.path().join("pins");
        std::fs::create_dir_all(&pins).unwrap();
        let mut tokens = String::new();
        for name in TOKENS {
            let label = format!("test-{name}");
            softhsm.init_token(&label, SO_PIN, PIN).expect("init token");
            let pin_file = pins.join(name);
            std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
            tokens.push_str(&format!(
                "[hsm.tokens.{name}]\nlabel = \"{label}\"\npin_file = \"{}\"\n",
                pin_file.display()
            ));
        }
        let pg = TempCluster::with_options(Options { fsync: false }).expect("PostgreSQL cluster");
        pg.start().expect("start PostgreSQL");
        pg.create_database("signetd").expect("create database");
        pg.create_role("signetd").expect("create role");
        let out = dir.path().join("out");
        let config_path = dir.path().join("signetd.toml");
        let config = format!(
            "state_dir = \"{out}\"\nshutdown_grace_secs = 5\n\n\
             [listen]\napi = \"127.0.0.1:0\"\npublic = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\n\n\
             [database]\nurl = \"{url}\"\nadmin_url = \"{admin_url}\"\ntimeout_secs = 2\n\n\
             [audit]\norigin = \"test.signetd/audit\"\ncheckpoint_every = 20\ncheckpoint_interval_secs = 1\n\n\
             [hsm]\nmodule = \"{module}\"\n\n{tokens}",
            out = out.display(),
            url = pg.url_as("signetd", "signetd"),
            admin_url = pg.url("signetd"),
            module = softhsm.module_path().display(),
        );
        std::fs::write(&config_path, config).unwrap();
        Instance {
            dir,
            softhsm,
            pg,
            config_path,
            out,
        }
    }

    /// The `signetd` binary with this instance's environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_signetd"));
        cmd.env("SOFTHSM2_CONF", self.softhsm.conf_path())
            .env("SIGNETD_CONFIG", &self.config_path)
            .env("SIGNETD_LOG__FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("SIGNETD_DATABASE__URL");
        cmd
    }

    /// Runs `signetd init` and returns its output; panics if it fails.
    pub fn init(&self) -> Output {
        let out = self
            .command()
            .arg("init")
            .output()
            .expect("run signetd init");
        assert!(
            out.status.success(),
            "signetd init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Points this process's SoftHSM2 at the instance's tokens and opens the daemon's HSM layer
    /// on the `signing` token, in process. SoftHSM2 reads SOFTHSM2_CONF once per process: call
    /// this first, from the only test of a test binary.
    pub fn in_process_hsm(&self) -> (signetd::hsm::Hsm, signetd::metrics::Metrics) {
        // SAFETY: the only test of its binary calls this before any thread reads the environment.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", self.softhsm.conf_path());
        }
        let metrics = signetd::metrics::Metrics::new().unwrap();
        let hsm = signetd::hsm::Hsm::open(
            self.softhsm.module_path(),
            vec![signetd::hsm::TokenSpec {
                name: "signing".into(),
                label: "test-signing".into(),
                pin: PIN.to_owned().into(),
            }],
            2,
            metrics.clone(),
        )
        .unwrap();
        (hsm, metrics)
    }

    pub fn ca(&self) -> PathBuf {
        self.out.join("ca.pem")
    }

    pub fn admin_cert(&self) -> PathBuf {
        self.out.join("admin.crt")
    }

    pub fn admin_key(&self) -> PathBuf {
        self.out.join("admin.key")
    }

    /// Starts `signetd serve` and waits until it has bound its listeners.
    pub fn serve(&self) -> Daemon {
        self.serve_with(&[])
    }

    /// [`Instance::serve`] with settings overridden by `SIGNETD_*` variables.
    pub fn serve_with(&self, env: &[(&str, &str)]) -> Daemon {
        let mut child = self
            .command()
            .envs(env.iter().copied())
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn signetd serve");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = logs.lock().unwrap().iter().find_map(|l| parse_serving(l));
            if let Some(addrs) = found {
                return Daemon { child, addrs, logs };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "signetd serve exited with {status}: {}",
                    logs.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "signetd serve did not start: {}",
                logs.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub api: SocketAddr,
    pub public: SocketAddr,
    pub metrics: SocketAddr,
}

fn parse_serving(line: &str) -> Option<Addrs> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = v.get("fields")?;
    if f.get("message")?.as_str()? != "serving" {
        return None;
    }
    let get = |k: &str| f.get(k)?.as_str()?.parse().ok();
    Some(Addrs {
        api: get("api")?,
        public: get("public")?,
        metrics: get("metrics")?,
    })
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub addrs: Addrs,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn api_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addrs.api.port())
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.public)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.metrics)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "signetd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl with `args` (silent, showing errors) and returns status code, body and exit code.
pub fn curl(args: &[&str]) -> CurlResult {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    CurlResult {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[derive(Debug)]
pub struct CurlResult {
    pub exit: i32,
    pub status: u16,
    pub body: String,
    pub stderr: String,
}

impl CurlResult {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// curl with the instance's CA and the admin's client certificate.
pub fn curl_admin(instance: &Instance, url: &str) -> CurlResult {
    let ca = instance.ca();
    let cert = instance.admin_cert();
    let key = instance.admin_key();
    curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        url,
    ])
}

/// Runs a program and returns its output, panicking with its stderr when it fails.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A file path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
