//! The OpenAPI document (`/openapi.json`) and its page (`/docs/`), checked against a real
//! `signetd dev` instance by tools nobody here wrote:
//!
//! * schemathesis (from PyPI, at the version pinned in scripts/install-deps) runs every
//!   operation of the document against the listener that serves it (its tag: `api`, `public`,
//!   `metrics`), the mTLS API with client certificates: no answer is a 5xx, and every answer
//!   conforms to the document (status code, content type, headers, body schema). Every
//!   operation of the document must have been answered at least once.
//! * Debian's headless Chromium renders `/docs/` (Swagger UI, which fetches `/openapi.json` and
//!   renders it in the page): every operation of the document is on the rendered page, and a
//!   screenshot of it is kept.
//!
//! What each run leaves (the document, schemathesis' reports and output, the daemon's log, the
//! rendered page and its screenshot) is kept under `target/tmp/artefacts/openapi/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use support::s;

/// Where this test binary's runs keep what they leave, for people and CI to look at.
fn artefacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("artefacts/openapi")
}

/// `dir`, emptied: a run's artefacts are that run's only.
fn fresh_dir(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    dir.to_owned()
}

// ---------------------------------------------------------------------------------------------
// A `signetd dev` instance.

/// `signetd dev` in a temporary directory, as a developer runs it; stopped (with its
/// PostgreSQL) when dropped.
#[derive(Debug)]
struct Dev {
    child: Child,
    /// The variables of `DIR/env`.
    env: BTreeMap<String, String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dev {
    /// Starts it and waits for its banner; its log goes to `log`.
    fn start(log: &Path) -> Dev {
        // One start at a time: a new instance picks its ports (8443, 8080, 9464 when free)
        // before it binds them, so two starting together can pick the same.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::Builder::new()
            .prefix("signetd-openapi-")
            .tempdir()
            .unwrap();
        // As root, PostgreSQL runs as the `postgres` user, which must get through this 0700
        // directory to its cluster.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let dir = tmp.path().join("instance");
        let mut child = Command::new(env!("CARGO_BIN_EXE_signetd"))
            .args(["dev", "--dir", s(&dir)])
            .env_remove("SOFTHSM2_CONF")
            .env_remove("SIGNETD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            // Reads to the end even when nobody listens any more, so the daemon never writes
            // into a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut dev = Dev {
            child,
            env: BTreeMap::new(),
            log: log.to_owned(),
            _dir: tmp,
        };
        // A first start makes tokens, a cluster, the CA: well within this on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        loop {
            match lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let done = line.starts_with("Ctrl-C");
                    seen.push(line);
                    if done {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("signetd dev exited: {seen:?}\n{}", dev.log_tail())
                }
            }
            assert!(
                Instant::now() < deadline,
                "signetd dev did not print its banner within 120 s: {seen:?}\n{}",
                dev.log_tail()
            );
        }
        dev.env = parse_env_file(&std::fs::read_to_string(dir.join("env")).unwrap());
        dev
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the dev env file: {:?}", self.env))
    }

    fn public_url(&self) -> &str {
        self.var("SIGNETD_PUBLIC_URL")
    }

    /// The last lines of the daemon's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "last lines of {}:\n{}",
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// The admin's client, from the env file.
    fn admin(&self) -> Client {
        Client {
            base: self.var("SIGNETD_API_URL").to_owned(),
            ca: self.var("SIGNETD_CA").into(),
            cert: self.var("SIGNETD_CLIENT_CERT").into(),
            key: self.var("SIGNETD_CLIENT_KEY").into(),
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SIGTERM: the daemon drains and stops its PostgreSQL (SIGKILL would leave it running).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `export NAME=VALUE` lines, VALUE plain or single-quoted for sh (as `signetd dev` writes
/// them); lines that refer to other variables (`PATH=...:"$PATH"`) are left out.
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .filter(|(_, value)| !value.contains('$'))
        .map(|(name, value)| {
            let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(quoted) => quoted.replace(r"'\''", "'"),
                None => value.to_owned(),
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// A client of the mTLS API: curl with the CA and one client certificate.
#[derive(Debug, Clone)]
struct Client {
    base: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Client {
    /// `method path` with an optional body (`content type`, `curl --data-binary` argument);
    /// panics unless the answer has `status`.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        status: u16,
    ) -> support::CurlResult {
        let url = format!("{}{path}", self.base);
        let mut args = vec![
            "--cacert",
            s(&self.ca),
            "--cert",
            s(&self.cert),
            "--key",
            s(&self.key),
            "-X",
            method,
        ];
        let header;
        if let Some((content_type, data)) = body {
            header = format!("content-type: {content_type}");
            args.extend(["-H", &header, "--data-binary", data]);
        }
        args.push(&url);
        let out = support::curl(&args);
        assert_eq!(
            out.status, status,
            "{method} {path}: {} {}{}",
            out.status, out.body, out.stderr
        );
        out
    }

    fn json(&self, method: &str, path: &str, body: &Value, status: u16) -> Value {
        self.call(
            method,
            path,
            Some(("application/json", &body.to_string())),
            status,
        )
        .json()
    }

    fn get(&self, path: &str) -> support::CurlResult {
        let url = format!("{}{path}", self.base);
        support::curl(&[
            "--cacert",
            s(&self.ca),
            "--cert",
            s(&self.cert),
            "--key",
            s(&self.key),
            &url,
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// The document.

/// One operation of the document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Operation {
    /// Upper case, as schemathesis names operations (`GET /v1/whoami`).
    method: String,
    path: String,
    /// Its first tag: the listener that serves it.
    tag: String,
    operation_id: Option<String>,
}

impl Operation {
    fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Every operation of an OpenAPI document, counted from its JSON.
fn operations(doc: &Value) -> Vec<Operation> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut ops = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            ops.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                tag: op["tags"][0].as_str().unwrap_or_default().to_owned(),
                operation_id: op["operationId"].as_str().map(str::to_owned),
            });
        }
    }
    ops.sort();
    ops
}

/// `/openapi.json` from the public listener, kept as an artefact; panics unless it is an
/// OpenAPI 3.1 document served as JSON.
fn fetch_document(dev: &Dev, save: &Path) -> Value {
    let out = support::curl(&[
        "-o",
        s(save),
        "-H",
        "accept: application/json",
        &format!("{}/openapi.json", dev.public_url()),
    ]);
    assert_eq!(out.status, 200, "GET /openapi.json: {out:?}");
    let doc: Value = serde_json::from_slice(&std::fs::read(save).unwrap())
        .unwrap_or_else(|e| panic!("/openapi.json is not JSON ({e}): {}", save.display()));
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "not an OpenAPI 3.1 document: {}",
        doc["openapi"]
    );
    doc
}

// ---------------------------------------------------------------------------------------------
// Bounded child processes.

/// Runs `cmd` in a process group of its own, stdout to `out` and stderr to `out` + `.err`,
/// killing the whole group (a browser's helpers too) if it outlives `timeout`: then Err.
fn run_bounded(cmd: &mut Command, out: &Path, timeout: Duration) -> Result<ExitStatus, String> {
    let mut err = out.as_os_str().to_owned();
    err.push(".err");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return Err(format!(
                "{cmd:?} did not finish within {timeout:?} (killed); its output: {}",
                out.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a program that must succeed, returning its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Schemathesis.

/// The schemathesis version scripts/install-deps installs.
fn pinned_schemathesis() -> &'static str {
    include_str!("../../scripts/install-deps")
        .lines()
        .find_map(|line| line.strip_prefix("schemathesis_version="))
        .expect("scripts/install-deps pins schemathesis_version=")
        .trim()
}

/// The virtualenv's schemathesis, at the pinned version (a missing or other one fails, naming
/// what installs it).
fn schemathesis() -> PathBuf {
    let pin = pinned_schemathesis();
    let venv = std::env::var_os("SIGNETD_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/signetd-py")
        });
    let bin = venv.join("bin/schemathesis");
    let install = format!(
        "run scripts/install-deps: it installs schemathesis {pin} from PyPI into the virtualenv {}",
        venv.display()
    );
    assert!(
        bin.is_file(),
        "schemathesis is not installed ({} is missing): {install}",
        bin.display()
    );
    let version = run_ok(Command::new(&bin).arg("--version"));
    assert!(
        version.split_whitespace().any(|word| word == pin),
        "{} is `{}`, not the pinned {pin}: {install}",
        bin.display(),
        version.trim()
    );
    bin
}

/// The checks of every answer: the issue's four, and the documented headers.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";
/// Test cases per operation and phase: enough to reach each operation's answers, few enough
/// for a 2-core machine (each API operation also writes an audit entry).
const MAX_EXAMPLES: &str = "15";

/// The ring, keys, accounts, certificates, records and job that the run's requests often refer
/// to (the others are generated), so that operations on existing things are answered with their
/// success answers, whose bodies are checked too, and not only with 404.
#[derive(Debug)]
struct Fixtures {
    key: String,
    retirable_key: String,
    openpgp_key_id: String,
    victim_serial: String,
    job: String,
    record: i64,
    csr_pem: String,
    ocsp_request_b64: String,
    /// `hello` (as `data`, base64), signed by the ring (`signature`, base64).
    signed_data: String,
    signature: String,
    audit_size: u64,
    auditor: Client,
    signer: Client,
}

/// Stands for the OCSP request in `GET /ocsp/{request}` (see the hooks).
const OCSP_PLACEHOLDER: &str = "openapi-ocsp-request";
/// The ring every fixture key is in.
const RING: &str = "openapi";
/// The account whose name and certificate the run may delete, deactivate and revoke (never the
/// admin's, auditor's or signer's, which the run itself uses).
const VICTIM: &str = "openapi-victim";

/// Makes the fixtures through the API, and the request samples for the media types the hooks
/// feed to schemathesis (written to `samples/<media type with "/" as "_">`).
fn make_fixtures(dev: &Dev, work: &Path, samples: &Path) -> Fixtures {
    support::require_tool("openssl", "openssl");
    support::require_tool("rpmbuild", "rpm");
    let admin = dev.admin();
    admin.json(
        "POST",
        "/v1/rings",
        &json!({"name": RING, "algorithm": "ec-p256"}),
        201,
    );
    let keys = admin.json(
        "POST",
        &format!("/v1/rings/{RING}/keys"),
        &json!({"count": 2}),
        201,
    );
    let key_field = |i: usize, field: &str| {
        keys["keys"][i][field]
            .as_str()
            .unwrap_or_else(|| panic!("no keys[{i}].{field}: {keys}"))
            .to_owned()
    };

    // Accounts, each with a client certificate issued through the API from a CSR.
    let mut clients = BTreeMap::new();
    let mut victim_serial = String::new();
    let mut csr_pem = String::new();
    for (name, roles) in [
        ("openapi-auditor", json!(["auditor"])),
        (
            "openapi-signer",
            json!([format!("signer:{RING}"), "timestamper"]),
        ),
        (VICTIM, json!(["timestamper"])),
    ] {
        admin.json(
            "POST",
            "/v1/accounts",
            &json!({"name": name, "roles": roles}),
            201,
        );
        let key = work.join(format!("{name}.key"));
        let csr = work.join(format!("{name}.csr"));
        run_ok(Command::new("openssl").args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            s(&key),
            "-subj",
            &format!("/CN={name}"),
            "-out",
            s(&csr),
        ]));
        csr_pem = std::fs::read_to_string(&csr).unwrap();
        let issued = admin.json(
            "POST",
            &format!("/v1/accounts/{name}/certificates"),
            &json!({"profile": "mtls-client", "csr": csr_pem}),
            201,
        );
        let cert = work.join(format!("{name}.crt"));
        std::fs::write(&cert, issued["certificate_pem"].as_str().unwrap()).unwrap();
        if name == VICTIM {
            victim_serial = issued["serial"].as_str().unwrap().to_owned();
        }
        clients.insert(
            name,
            Client {
                cert,
                key,
                ..admin.clone()
            },
        );
    }

    // A raw signature, for verification requests.
    let signer = clients["openapi-signer"].clone();
    let signed = signer
        .call(
            "POST",
            &format!("/v1/sign?ring={RING}"),
            Some(("application/octet-stream", "hello")),
            200,
        )
        .json();
    let signature = signed["signature"].as_str().unwrap().to_owned();

    // Records signed by a finished job, so that a record has a proof.
    let ingested = admin.json(
        "POST",
        "/v1/records",
        &json!({"records": [{"text": "openapi fixture 1"}, {"text": "openapi fixture 2"}]}),
        201,
    );
    let record = ingested["ids"][0].as_i64().unwrap();
    let job = admin.json(
        "POST",
        "/v1/jobs",
        &json!({"ring": RING, "batch_size": 10}),
        201,
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = support::wait_until(Duration::from_secs(60), || {
        admin.get(&format!("/v1/jobs/{job}")).json()["state"] == "done"
    });
    assert!(done, "job {job} not done within 60 s");

    // The audit log's size, once a checkpoint is signed (every 10 s on a dev instance).
    let auditor = clients["openapi-auditor"].clone();
    let mut audit_size = 0;
    let signed = support::wait_until(Duration::from_secs(60), || {
        let out = auditor.get("/v1/audit/checkpoint");
        if out.status == 200 {
            audit_size = out.json()["size"].as_u64().unwrap();
        }
        out.status == 200
    });
    assert!(signed, "no audit checkpoint within 60 s");

    // Request samples: a time-stamp query, an OCSP request for the victim's certificate, a
    // CSR, a package.
    let sample = |media_type: &str| samples.join(media_type.replace('/', "_"));
    run_ok(Command::new("openssl").args([
        "ts",
        "-query",
        "-data",
        s(&work.join(format!("{VICTIM}.csr"))),
        "-sha256",
        "-cert",
        "-out",
        s(&sample("application/timestamp-query")),
    ]));
    run_ok(Command::new("openssl").args([
        "ocsp",
        "-issuer",
        dev.var("SIGNETD_CA"),
        "-cert",
        s(&work.join(format!("{VICTIM}.crt"))),
        "-no_nonce",
        "-reqout",
        s(&sample("application/ocsp-request")),
    ]));
    let ocsp_request = std::fs::read(sample("application/ocsp-request")).unwrap();
    std::fs::write(sample("application/pkcs10"), &csr_pem).unwrap();
    let rpm = support::rpm::rpmbuild(work, "openapi-demo", None);
    std::fs::copy(rpm, sample("application/x-rpm")).unwrap();

    Fixtures {
        key: key_field(0, "id"),
        retirable_key: key_field(1, "id"),
        openpgp_key_id: key_field(0, "openpgp_key_id"),
        victim_serial,
        job,
        record,
        csr_pem,
        ocsp_request_b64: base64::engine::general_purpose::STANDARD.encode(ocsp_request),
        signed_data: base64::engine::general_purpose::STANDARD.encode("hello"),
        signature,
        audit_size,
        auditor,
        signer,
    }
}

/// schemathesis.toml: the fixtures, and the values the document names only in prose (it types
/// `hash`, `format`, ... as any string), as dictionaries bound to the parameters that take
/// them, with probability 0.8 (path parameters 0.5; the rest stay generated); per operation
/// where a name (`id`) means different things.
fn schemathesis_config(fx: &Fixtures, ops: &[Operation]) -> String {
    use toml::Value as T;
    let strings =
        |values: &[&str]| T::Array(values.iter().map(|v| T::String((*v).to_owned())).collect());
    let mut dictionaries = toml::Table::new();
    let mut add = |name: &str, values: T| {
        let mut entry = toml::Table::new();
        entry.insert("values".into(), values);
        dictionaries.insert(name.into(), T::Table(entry));
    };
    add("ring", strings(&[RING]));
    add("key", strings(&[fx.key.as_str()]));
    add("retirable-key", strings(&[fx.retirable_key.as_str()]));
    add("openpgp-key", strings(&[fx.openpgp_key_id.as_str()]));
    add("account", strings(&[VICTIM]));
    add("serial", strings(&[fx.victim_serial.as_str()]));
    add("job", strings(&[fx.job.as_str()]));
    add("record", T::Array(vec![T::Integer(fx.record)]));
    add("csr", strings(&[fx.csr_pem.as_str()]));
    // Schemathesis puts no `/` in a path parameter, and base64 may hold one: the hooks replace
    // this placeholder with the request (SIGNETD_OPENAPI_OCSP_GET) just before it is sent.
    add("ocsp-request", strings(&[OCSP_PLACEHOLDER]));
    add("signature", strings(&[fx.signature.as_str()]));
    add("data", strings(&[fx.signed_data.as_str()]));
    add("hash", strings(&["sha256", "sha384", "sha512"]));
    add("encoding", strings(&["der", "raw"]));
    add(
        "format",
        strings(&[
            "raw",
            "openpgp",
            "openpgp-cleartext",
            "cms",
            "json",
            "pem",
            "der",
        ]),
    );
    add("profile", strings(&["mtls-client"]));
    add("sign-type", strings(&["detach-sign", "clear-sign"]));
    add("sign-algo", strings(&["SHA256", "SHA384", "SHA512"]));
    add("audit-seq", T::Array(vec![T::Integer(1), T::Integer(2)]));
    let size = i64::try_from(fx.audit_size).unwrap();
    add("audit-size", T::Array(vec![T::Integer(size)]));

    let bind = |pairs: &[(&str, &str)]| {
        let mut table = toml::Table::new();
        for (parameter, dictionary) in pairs {
            let mut binding = toml::Table::new();
            binding.insert("dictionary".into(), T::String((*dictionary).into()));
            // A path parameter with a one-value dictionary more often than not makes the same
            // case again and again, which Hypothesis refuses ("too many filtered out").
            let probability = if parameter.starts_with("path.") {
                0.5
            } else {
                0.8
            };
            binding.insert("probability".into(), T::Float(probability));
            table.insert((*parameter).into(), T::Table(binding));
        }
        T::Table(table)
    };
    // Names that mean one thing across the document.
    let parameters = bind(&[
        ("path.ring", "ring"),
        ("query.ring", "ring"),
        ("body.ring", "ring"),
        ("query.key_id", "key"),
        ("body.key_id", "key"),
        ("query.keyid", "openpgp-key"),
        ("path.name", "account"),
        ("path.serial", "serial"),
        ("path.request", "ocsp-request"),
        ("body.csr", "csr"),
        ("body.signature", "signature"),
        ("body.data", "data"),
        ("body.items[*].data", "data"),
        ("query.hash", "hash"),
        ("body.hash", "hash"),
        ("query.encoding", "encoding"),
        ("body.encoding", "encoding"),
        ("query.format", "format"),
        ("body.format", "format"),
        ("query.profile", "profile"),
        ("body.profile", "profile"),
        ("query.sign_type", "sign-type"),
        ("query.sign_algo", "sign-algo"),
        ("query.seq", "audit-seq"),
        ("query.from", "audit-seq"),
        ("query.to", "audit-size"),
        ("query.size", "audit-size"),
    ]);
    // `{id}`: a key, the key to retire, a job or a record, by path.
    let mut by_dictionary: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.path.contains("{id}")) {
        let dictionary = if op.path.ends_with("/retire") {
            "retirable-key"
        } else if op.path.starts_with("/v1/keys/") {
            "key"
        } else if op.path.starts_with("/v1/jobs/") {
            "job"
        } else if op.path.starts_with("/v1/records/") {
            "record"
        } else {
            continue;
        };
        by_dictionary
            .entry(dictionary)
            .or_default()
            .insert(op.path.clone());
    }
    let operations = by_dictionary
        .into_iter()
        .map(|(dictionary, paths)| {
            let mut entry = toml::Table::new();
            entry.insert(
                "include-path".into(),
                T::Array(paths.into_iter().map(T::String).collect()),
            );
            entry.insert("parameters".into(), bind(&[("path.id", dictionary)]));
            T::Table(entry)
        })
        .collect();

    // Schemathesis would also reuse what answers showed (the accounts' certificates, say) as
    // parameters, and so revoke the very certificates the run uses; the fixtures above name
    // existing things instead.
    let mut phases = toml::Table::new();
    for phase in ["coverage", "fuzzing"] {
        let mut sources = toml::Table::new();
        sources.insert("responses".into(), T::Boolean(false));
        let mut settings = toml::Table::new();
        settings.insert("extra-data-sources".into(), T::Table(sources));
        phases.insert(phase.into(), T::Table(settings));
    }
    let mut config = toml::Table::new();
    config.insert("phases".into(), T::Table(phases));
    config.insert("dictionaries".into(), T::Table(dictionaries));
    config.insert("parameters".into(), parameters);
    config.insert("operations".into(), T::Array(operations));
    toml::to_string(&config).unwrap()
}

/// The mTLS API's operations that need a role the admin lacks, by path: the audit log's
/// (`auditor`) and signing's (`signer:<ring>`, `timestamper`).
fn api_identity(path: &str) -> &'static str {
    const SIGNING: [&str; 10] = [
        "/v1/sign",
        "/v1/sign-batch",
        "/v1/sign-rpm",
        "/v1/verify",
        "/v1/timestamp",
        "/sign",
        "/sign-batch",
        "/sign-rpm",
        "/keys",
        "/ping",
    ];
    if path.starts_with("/v1/audit/") {
        "auditor"
    } else if SIGNING.contains(&path) {
        "signer"
    } else {
        "admin"
    }
}

/// One schemathesis run: some operations, one listener, one identity.
#[derive(Debug)]
struct Suite {
    name: String,
    base_url: String,
    client: Option<Client>,
    ops: Vec<Operation>,
}

/// `^(GET /a|POST /b)$` for `--include-name-regex` (schemathesis names an operation
/// `METHOD /path`; its include filters of different kinds are alternatives, not all required).
fn names_regex(ops: &[Operation]) -> String {
    let escape = |text: &str| {
        text.chars().fold(String::new(), |mut out, c| {
            if r"\.^$|?*+()[]{}".contains(c) {
                out.push('\\');
            }
            out.push(c);
            out
        })
    };
    let names: Vec<String> = ops.iter().map(|op| escape(&op.label())).collect();
    format!("^({})$", names.join("|"))
}

/// What a suite's NDJSON report says.
#[derive(Debug, Default)]
struct Outcome {
    /// Operation → the statuses of its answers.
    answered: BTreeMap<String, BTreeSet<u16>>,
    /// Failed checks, one entry per distinct (operation, check, failure), with a count and an
    /// example.
    failures: BTreeMap<(String, String, String), (usize, String)>,
    /// Errors schemathesis met (an operation it could not test, ...).
    errors: Vec<String>,
}

fn read_ndjson(path: &Path, outcome: &mut Outcome) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no NDJSON report {}: {e}", path.display()));
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if let Some(error) = event.get("NonFatalError") {
            outcome.errors.push(format!(
                "{}: {}",
                error["label"].as_str().unwrap_or("?"),
                error["value"]["message"].as_str().unwrap_or("?")
            ));
        }
        if let Some(error) = event.get("FatalError") {
            outcome.errors.push(format!("fatal: {error}"));
        }
        let Some(recorder) = event.get("ScenarioFinished").map(|e| &e["recorder"]) else {
            continue;
        };
        let label = recorder["label"].as_str().unwrap_or("?").to_owned();
        let interactions = recorder["interactions"].as_object();
        for interaction in interactions.into_iter().flat_map(|i| i.values()) {
            if let Some(status) = interaction["response"]["status_code"].as_u64() {
                outcome
                    .answered
                    .entry(label.clone())
                    .or_default()
                    .insert(u16::try_from(status).unwrap());
            }
        }
        let checks = recorder["checks"].as_object();
        for (case, results) in checks.into_iter().flat_map(|c| c.iter()) {
            for result in results.as_array().into_iter().flatten() {
                if result["status"] != "failure" {
                    continue;
                }
                let failure = &result["failure_info"]["failure"];
                let check = result["name"].as_str().unwrap_or("?").to_owned();
                let title = failure["title"].as_str().unwrap_or("?");
                let message = failure["message"].as_str().unwrap_or("");
                let key = (label.clone(), check, format!("{title}: {message}"));
                let example = || {
                    let it = &recorder["interactions"][case];
                    let request = &it["request"];
                    let response = &it["response"];
                    let body = response["content"]["$base64"]
                        .as_str()
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .map(|b| {
                            String::from_utf8_lossy(&b)
                                .chars()
                                .take(300)
                                .collect::<String>()
                        })
                        .unwrap_or_default();
                    format!(
                        "{} {} (content-type: {}) -> {} (content-type: {}) {body}",
                        request["method"].as_str().unwrap_or("?"),
                        request["uri"].as_str().unwrap_or("?"),
                        request["headers"]["Content-Type"][0]
                            .as_str()
                            .or(request["headers"]["content-type"][0].as_str())
                            .unwrap_or("none"),
                        response["status_code"],
                        response["headers"]["content-type"][0]
                            .as_str()
                            .unwrap_or("none"),
                    )
                };
                outcome
                    .failures
                    .entry(key)
                    .or_insert_with(|| (0, example()))
                    .0 += 1;
            }
        }
    }
}

/// The test's own seed, so a failing run can be repeated (`SIGNETD_OPENAPI_SEED` to vary it).
fn seed() -> String {
    std::env::var("SIGNETD_OPENAPI_SEED").unwrap_or_else(|_| "20261207".into())
}

#[test]
fn schemathesis_finds_every_operation_conforming_to_the_document() {
    let st = schemathesis();
    support::require_tool("curl", "curl");
    let root = fresh_dir(&artefacts().join("schemathesis"));
    eprintln!("openapi: schemathesis artefacts in {}", root.display());
    let dev = Dev::start(&root.join("signetd-dev.log"));
    let document = root.join("openapi.json");
    let doc = fetch_document(&dev, &document);
    let ops = operations(&doc);
    assert!(!ops.is_empty(), "the document has no operations");

    let work = fresh_dir(&root.join("fixtures"));
    let samples = fresh_dir(&root.join("samples"));
    let fx = make_fixtures(&dev, &work, &samples);
    let config = root.join("schemathesis.toml");
    std::fs::write(&config, schemathesis_config(&fx, &ops)).unwrap();

    // Each operation to the listener its tag names, as the identity that may call it.
    let metrics_origin = dev
        .var("SIGNETD_METRICS_URL")
        .trim_end_matches("/metrics")
        .to_owned();
    // In this order: the admin's operations delete, deactivate and revoke, so they come last.
    const ORDER: [&str; 5] = [
        "public",
        "metrics",
        "api-auditor",
        "api-signer",
        "api-admin",
    ];
    let mut suites: BTreeMap<usize, Suite> = BTreeMap::new();
    let mut unserved = Vec::new();
    for op in &ops {
        let (name, base_url, client) = match op.tag.as_str() {
            "public" => ("public", dev.public_url().to_owned(), None),
            "metrics" => ("metrics", metrics_origin.clone(), None),
            "api" => {
                let identity = api_identity(&op.path);
                let client = match identity {
                    "auditor" => fx.auditor.clone(),
                    "signer" => fx.signer.clone(),
                    _ => dev.admin(),
                };
                let name = match identity {
                    "auditor" => "api-auditor",
                    "signer" => "api-signer",
                    _ => "api-admin",
                };
                (name, client.base.clone(), Some(client))
            }
            _ => {
                unserved.push(format!("{} (tags: {:?})", op.label(), op.tag));
                continue;
            }
        };
        let rank = ORDER.iter().position(|n| *n == name).unwrap();
        suites
            .entry(rank)
            .or_insert_with(|| Suite {
                name: name.to_owned(),
                base_url,
                client,
                ops: Vec::new(),
            })
            .ops
            .push(op.clone());
    }
    assert!(
        unserved.is_empty(),
        "operations whose first tag names no listener (api, public, metrics): {unserved:?}"
    );

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/signetd_hooks.py");
    let mut problems = Vec::new();
    let mut outcome = Outcome::default();
    for suite in suites.values() {
        let dir = fresh_dir(&root.join(&suite.name));
        let mut cmd = Command::new(&st);
        cmd.current_dir(&dir)
            .env("SCHEMATHESIS_HOOKS", &hooks)
            .env("SIGNETD_OPENAPI_SAMPLES", &samples)
            .env("SIGNETD_OPENAPI_RING", RING)
            .env("SIGNETD_OPENAPI_OCSP_PLACEHOLDER", OCSP_PLACEHOLDER)
            .env("SIGNETD_OPENAPI_OCSP_GET", &fx.ocsp_request_b64)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(&document)
            .args(["--url", &suite.base_url])
            .args(["--include-name-regex", &names_regex(&suite.ops)])
            .args(["--checks", CHECKS])
            .args(["--max-examples", MAX_EXAMPLES])
            // Examples from the document, its boundaries and negative cases, then random
            // cases; no stateful phase (the document has no links; what it would infer could
            // delete the very accounts the run uses).
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--workers", "1", "--rate-limit", "100/s"])
            .args(["--request-timeout", "30", "--seed", &seed()])
            .args(["--generation-database", "none", "--continue-on-failure"])
            .args(["--report", "junit,ndjson", "--report-dir", s(&dir)])
            .args(["--report-ndjson-path", s(&dir.join("events.ndjson"))])
            .args(["--report-junit-path", s(&dir.join("junit.xml"))])
            // Reports show what was sent as sent (no secret is: the keys stay in the files).
            .args(["--output-sanitize", "false", "--output-truncate", "false"])
            .arg("--no-color");
        if let Some(client) = &suite.client {
            cmd.args(["--tls-verify", s(&client.ca)])
                .args(["--request-cert", s(&client.cert)])
                .args(["--request-cert-key", s(&client.key)]);
        }
        let output = dir.join("schemathesis.out");
        std::fs::write(dir.join("command.txt"), format!("{cmd:?}\n")).unwrap();
        let started = Instant::now();
        let status = run_bounded(&mut cmd, &output, Duration::from_secs(900));
        eprintln!(
            "openapi: schemathesis {} ({} operations, {}): {status:?} in {:.0?}",
            suite.name,
            suite.ops.len(),
            suite.base_url,
            started.elapsed()
        );
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => problems.push(format!(
                "schemathesis {} exited with {status}: see {}",
                suite.name,
                output.display()
            )),
            Err(e) => problems.push(e),
        }
        if dir.join("events.ndjson").is_file() {
            read_ndjson(&dir.join("events.ndjson"), &mut outcome);
        } else {
            problems.push(format!("schemathesis {} wrote no report", suite.name));
        }
        // Its identity still works: had the run deleted its account or revoked its
        // certificate, what followed was a test of 403s.
        if let Some(client) = &suite.client {
            let out = client.get("/v1/whoami");
            if out.status != 200 {
                problems.push(format!(
                    "after schemathesis {}, its client certificate is refused: {} {}",
                    suite.name, out.status, out.body
                ));
            }
        }
    }

    // Every operation of the document was answered, and not only with 403 (which would mean
    // the test called it as the wrong identity).
    let mut missing = Vec::new();
    let mut forbidden_only = Vec::new();
    let mut no_success = Vec::new();
    for op in &ops {
        match outcome.answered.get(&op.label()) {
            None => missing.push(op.label()),
            Some(statuses) if statuses.iter().all(|s| *s == 403) => {
                forbidden_only.push(op.label());
            }
            Some(statuses) if !statuses.iter().any(|s| (200..300).contains(s)) => {
                no_success.push(format!("{} {statuses:?}", op.label()));
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{} of {} operations of the document were never answered: {missing:#?}",
            missing.len(),
            ops.len()
        ));
    }
    if !forbidden_only.is_empty() {
        problems.push(format!(
            "operations only ever answered 403: {forbidden_only:#?}"
        ));
    }
    for error in &outcome.errors {
        problems.push(format!("schemathesis error: {error}"));
    }

    let mut findings = String::from("# schemathesis findings\n\n");
    for ((label, check, failure), (count, example)) in &outcome.failures {
        findings.push_str(&format!(
            "- {label}: {check}: {} ({count}x)\n  e.g. {example}\n",
            failure.replace('\n', "; ")
        ));
    }
    let findings_path = root.join("findings.md");
    std::fs::write(&findings_path, &findings).unwrap();
    eprintln!(
        "openapi: {} operations, {} answered; {} distinct failures ({}); never answered 2xx \
         (only checked on their error answers): {no_success:#?}",
        ops.len(),
        outcome.answered.len(),
        outcome.failures.len(),
        findings_path.display()
    );
    if !outcome.failures.is_empty() {
        problems.push(format!(
            "{} distinct check failures:\n{findings}",
            outcome.failures.len()
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n(artefacts: {})",
        problems.join("\n"),
        root.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Chromium.

/// Debian's Chromium, at the path its package installs.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium, headless, on a fresh profile, talking to nothing but the page's server.
fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    // Virtual time runs the page's scripts (Swagger UI fetches the document and renders it)
    // to completion without waiting for real time; the budget bounds it.
    .arg("--virtual-time-budget=20000");
    cmd
}

/// `&amp;` and the like in an attribute value, back to text.
fn html_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The operations Swagger UI rendered: each is a `div.opblock.opblock-<method>` with
/// `id="operations-<tag>-<operationId>"`, holding the path in a `data-path` attribute.
fn rendered_operations(dom: &str) -> BTreeSet<(String, String, String)> {
    let attr = |chunk: &str, name: &str| {
        let start = chunk.find(&format!("{name}=\""))? + name.len() + 2;
        let len = chunk[start..].find('"')?;
        Some(html_unescape(&chunk[start..start + len]))
    };
    dom.split("class=\"opblock opblock-")
        .skip(1)
        .filter_map(|chunk| {
            // The chunk runs up to the next operation's block: its first path is its own.
            let method: String = chunk.chars().take_while(char::is_ascii_lowercase).collect();
            let path = attr(chunk, "data-path")?;
            let id = attr(chunk, " id").unwrap_or_default();
            Some((method.to_uppercase(), path, id))
        })
        .collect()
}

#[test]
fn docs_page_renders_every_operation_in_chromium() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is not installed: install the Debian package `chromium` (scripts/install-deps does)"
    );
    support::require_tool("curl", "curl");
    let root = artefacts();
    std::fs::create_dir_all(&root).unwrap();
    let dir = fresh_dir(&root.join("docs"));
    let screenshot = root.join("docs.png");
    let _ = std::fs::remove_file(&screenshot);
    eprintln!("openapi: docs artefacts in {}", dir.display());
    let dev = Dev::start(&dir.join("signetd-dev.log"));
    let doc = fetch_document(&dev, &dir.join("openapi.json"));
    let ops = operations(&doc);
    assert!(!ops.is_empty(), "the document has no operations");
    let url = format!("{}/docs/", dev.public_url());

    let profile = tempfile::tempdir().unwrap();
    let dom_path = dir.join("docs-dom.html");
    let status = run_bounded(
        chromium(&profile.path().join("dom"))
            .arg("--dump-dom")
            .arg(&url),
        &dom_path,
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(status.success(), "chromium --dump-dom {url}: {status}");
    let dom = std::fs::read_to_string(&dom_path).unwrap();

    let rendered = rendered_operations(&dom);
    let rendered_pairs: BTreeSet<(String, String)> = rendered
        .iter()
        .map(|(method, path, _)| (method.clone(), path.clone()))
        .collect();
    let missing: Vec<String> = ops
        .iter()
        .filter(|op| !rendered_pairs.contains(&(op.method.clone(), op.path.clone())))
        .map(Operation::label)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} operations of the document are not on the rendered /docs/ page (Swagger UI \
         rendered {}): {missing:#?}\n(page: {})",
        missing.len(),
        ops.len(),
        rendered.len(),
        dom_path.display()
    );
    // Under the listener's tag, as the document groups them.
    for op in &ops {
        if let Some(id) = &op.operation_id {
            let dom_id = format!("operations-{}-{id}", op.tag);
            assert!(
                rendered
                    .iter()
                    .any(|(_, path, i)| *path == op.path && *i == dom_id),
                "{} is not under its tag {:?} on the page (no #{dom_id})",
                op.label(),
                op.tag
            );
        }
    }
    for tag in ["api", "public", "metrics"] {
        assert!(
            dom.contains(&format!("data-tag=\"{tag}\"")),
            "no {tag} section on the page"
        );
    }

    // The screenshot, kept for people to look at.
    let status = run_bounded(
        chromium(&profile.path().join("screenshot"))
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg("--window-size=1280,4800")
            .arg(&url),
        &dir.join("chromium-screenshot.out"),
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(status.success(), "chromium --screenshot {url}: {status}");
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot {}: {e}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        screenshot.display()
    );
    // 1280×4800 of a rendered page; a blank one compresses to a few kilobytes.
    assert!(
        png.len() > 50_000,
        "{} is only {} bytes: a blank page?",
        screenshot.display(),
        png.len()
    );
    eprintln!(
        "openapi: {} operations on the page; screenshot {}",
        rendered.len(),
        screenshot.display()
    );
}
