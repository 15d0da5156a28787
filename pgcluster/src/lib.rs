//! Owns private PostgreSQL clusters for tests and `signetd dev`: one data directory, one Unix socket, no TCP, started and stopped with the stock tools.
//!
//! A cluster directory holds `data/` (initdb's), `run/` (the socket) and
//! `log` (the server log). The server listens on no TCP address at all, so
//! clusters never collide on ports and never accept remote connections;
//! authentication is `trust` for the `postgres` role over that private
//! socket.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then initdb,
//! pg_ctl and the server run as the `postgres` system user (through
//! `setpriv`), the cluster directory is handed to that user, and every
//! parent directory must let it through. As any other user everything runs
//! directly.
//!
//! Only the cluster's own files are touched. Nothing that reaches a command
//! line is interpolated into SQL or a shell unless it passed a strict check
//! first (database names, paths).

mod bindir;
mod error;
mod owner;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use bindir::{BINDIR_ENV, find_bindir};
pub use error::Error;

use owner::RunAs;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The port number, which with no TCP listener only names the socket file
/// (`.s.PGSQL.5432`); the socket directory is private to the cluster.
const PORT: u16 = 5432;

/// The superuser role initdb creates, and the one clients connect as.
const SUPERUSER: &str = "postgres";

/// The settings file this crate owns inside the data directory.
const SETTINGS_FILE: &str = "signet-pgcluster.conf";

/// The line that makes postgresql.conf read [`SETTINGS_FILE`].
const INCLUDE_LINE: &str = "include 'signet-pgcluster.conf'";

/// The entries a cluster directory may hold.
const CLUSTER_ENTRIES: [&str; 3] = ["data", "run", "log"];

/// `sun_path` holds 108 bytes on Linux (104 elsewhere) including the NUL;
/// staying under 100 leaves room on every platform.
const MAX_SOCKET_PATH: usize = 99;

/// How long pg_ctl waits for the server to start or stop, in seconds.
const PG_CTL_TIMEOUT: &str = "60";

/// Choices made when a cluster is created or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Whether the server flushes to disk (`fsync`). Keep it on for
    /// anything that should survive a crash of the machine; tests turn it
    /// off for speed. Also decides whether initdb syncs its files.
    pub fsync: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { fsync: true }
    }
}

/// A PostgreSQL cluster in a directory of its own, reachable only over a
/// Unix socket in that directory.
///
/// Dropping a `Cluster` leaves the server as it is (`signetd dev` keeps it
/// across runs); [`TempCluster`] stops it.
#[derive(Debug, Clone)]
pub struct Cluster {
    dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    bindir: PathBuf,
    /// `None`: run the server programs directly. `Some`: this process is
    /// root, run them as the `postgres` user.
    run_as: Option<RunAs>,
}

impl Cluster {
    /// [`Cluster::create_or_open_with`] with the default [`Options`]
    /// (`fsync` on).
    pub fn create_or_open(dir: &Path) -> Result<Cluster> {
        Cluster::create_or_open_with(dir, Options::default())
    }

    /// Creates a cluster in `dir`, or opens the one already there; does not
    /// start it.
    ///
    /// `dir` must be new, empty, or a cluster directory made by this crate.
    /// initdb runs (`-U postgres --auth=trust -E UTF8 --locale=C`) only if
    /// `dir/data/PG_VERSION` is missing. The connection settings (no TCP,
    /// the socket in `dir/run`) and `fsync` are rewritten on every open,
    /// so a moved directory keeps working; they take effect at the next
    /// start.
    pub fn create_or_open_with(dir: &Path, options: Options) -> Result<Cluster> {
        let bindir = find_bindir()?;
        let run_as = if owner::is_root() {
            Some(owner::server_user()?)
        } else {
            None
        };
        let absolute = std::path::absolute(dir)
            .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
        // Check before creating anything, and again once symlinks are
        // resolved.
        check_dir_path(&absolute)?;
        if let Some(user) = &run_as {
            user.check_existing_parents(&absolute)?;
        }
        let created = create_dirs(&absolute)?;
        let dir = fs::canonicalize(&absolute)
            .map_err(|e| Error::io(format!("resolving {}", absolute.display()), e))?;
        check_dir_path(&dir)?;
        check_dir_contents(&dir)?;

        let cluster = Cluster {
            data_dir: dir.join("data"),
            socket_dir: dir.join("run"),
            log_path: dir.join("log"),
            port: PORT,
            bindir,
            run_as,
            dir,
        };
        cluster.prepare_dirs(&created)?;
        if !cluster.data_dir.join("PG_VERSION").is_file() {
            cluster.initdb(options)?;
        }
        cluster.write_settings(options)?;
        Ok(cluster)
    }

    /// The cluster directory (absolute, symlinks resolved).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory (`dir/data`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's Unix socket (`dir/run`): the
    /// `host` to give clients.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log (`dir/log`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The port, which only names the socket file.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the PostgreSQL programs in use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The (uid, gid) the server programs run as, when this process is
    /// root; `None` when they run as this process's user.
    pub fn run_as(&self) -> Option<(u32, u32)> {
        self.run_as.as_ref().map(|user| (user.uid, user.gid))
    }

    /// Starts the server and waits until it accepts connections.
    /// Already running is success.
    pub fn start(&self) -> Result<()> {
        if self.is_running()? {
            return Ok(());
        }
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .command
            .args(["start", "-w", "-s", "-t", PG_CTL_TIMEOUT, "-l"])
            .arg(&self.log_path)
            .arg("-D")
            .arg(&self.data_dir);
        let output = pg_ctl.output("start the server")?;
        // A concurrent start that won the race is success too.
        if output.status.success() || self.is_running()? {
            return Ok(());
        }
        Err(Error::StartFailed {
            detail: diagnostics(&output),
            log: self.log_path.clone(),
            log_tail: log_tail(&self.log_path, 20),
        })
    }

    /// Stops the server (fast shutdown: sessions are ended, transactions
    /// rolled back) and waits until it is down. Not running is success.
    pub fn stop(&self) -> Result<()> {
        self.stop_with_mode("fast")
    }

    fn stop_with_mode(&self, mode: &'static str) -> Result<()> {
        if !self.is_running()? {
            return Ok(());
        }
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .command
            .args(["stop", "-w", "-s", "-t", PG_CTL_TIMEOUT, "-m", mode, "-D"])
            .arg(&self.data_dir);
        let output = pg_ctl.output("stop the server")?;
        if output.status.success() || !self.is_running()? {
            return Ok(());
        }
        Err(failed("stop the server", &output))
    }

    /// Whether a server is running on this data directory (`pg_ctl status`).
    pub fn is_running(&self) -> Result<bool> {
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl.command.arg("status").arg("-D").arg(&self.data_dir);
        let output = pg_ctl.output("ask whether the server runs")?;
        // pg_ctl status: 0 running, 3 not running, 4 no usable data dir.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(failed("ask whether the server runs", &output)),
        }
    }

    /// Creates a database owned by `postgres`, unless it exists.
    ///
    /// The name must match `^[a-z_][a-z0-9_]*$` (at most 63 bytes); it is
    /// checked before it goes anywhere near SQL.
    /// Creates a login role without special privileges (idempotent). The name obeys the same
    /// rule as database names.
    pub fn create_role(&self, name: &str) -> Result<()> {
        check_database_name(name)?;
        let sql = format!(
            "DO $$ BEGIN CREATE ROLE \"{name}\" LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        );
        self.psql("postgres", &sql).map(|_| ())
    }

    pub fn create_database(&self, name: &str) -> Result<()> {
        check_database_name(name)?;
        if self.database_exists(name)? {
            return Ok(());
        }
        match self.psql("postgres", &format!("CREATE DATABASE \"{name}\"")) {
            Ok(_) => Ok(()),
            // Created concurrently by someone else: the goal is met.
            Err(_) if self.database_exists(name)? => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether a database with this (valid) name exists.
    pub fn database_exists(&self, name: &str) -> Result<bool> {
        check_database_name(name)?;
        let rows = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        )?;
        Ok(rows.trim() == "1")
    }

    /// A connection URL for `dbname` over the cluster's socket, accepted by
    /// libpq and tokio-postgres alike:
    /// `postgresql://postgres@/DB?host=/abs/socket/dir&port=5432`.
    /// Characters outside the URL-safe set are percent-encoded.
    pub fn url(&self, dbname: &str) -> String {
        self.url_as(SUPERUSER, dbname)
    }

    /// Like [`Cluster::url`], connecting as `user` (created with [`Cluster::create_role`]).
    pub fn url_as(&self, user: &str, dbname: &str) -> String {
        // check_dir_path guarantees UTF-8, so nothing is lost here.
        let host = self.socket_dir.to_string_lossy();
        format!(
            "postgresql://{}@/{}?host={}&port={}",
            percent_encode(user, false),
            percent_encode(dbname, false),
            percent_encode(&host, true),
            self.port
        )
    }

    /// Runs SQL with `psql -X -A -t -q -v ON_ERROR_STOP=1` as `postgres`
    /// and returns its output (unaligned rows, `|`-separated, without the
    /// final newline). For tests and setup; the SQL is passed as one
    /// argument, never through a shell.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String> {
        check_database_name(dbname)?;
        let psql_path = self.bindir.join("psql");
        let mut psql = Prepared {
            command: Command::new(if psql_path.is_file() {
                psql_path
            } else {
                PathBuf::from("psql")
            }),
            tool: "psql",
            package: "postgresql-client",
        };
        psql.command
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", dbname])
            .arg("-c")
            .arg(sql);
        clean_env(&mut psql.command);
        let action = format!("run SQL on database {dbname:?}");
        let output = psql.output(&action)?;
        if !output.status.success() {
            return Err(failed(&action, &output));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned())
    }

    /// Creates `run/` and, as root, hands the cluster directory to the
    /// server user and makes sure that user can reach it.
    fn prepare_dirs(&self, created: &[PathBuf]) -> Result<()> {
        create_dir(&self.socket_dir)?;
        if let Some(user) = &self.run_as {
            user.open_path_to(&self.dir, created)?;
            user.take(&self.dir)?;
            // Others may reach run/ (the socket), nothing else.
            owner::set_mode(&self.dir, 0o711)?;
            user.take(&self.socket_dir)?;
            owner::set_mode(&self.socket_dir, 0o755)?;
        }
        Ok(())
    }

    fn initdb(&self, options: Options) -> Result<()> {
        let mut initdb = self.server_command("initdb");
        initdb.command.arg("-D").arg(&self.data_dir).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]);
        if !options.fsync {
            initdb.command.arg("--no-sync");
        }
        let action = format!("initialise a cluster in {}", self.data_dir.display());
        let output = initdb.output(&action)?;
        if !output.status.success() {
            return Err(failed(&action, &output));
        }
        Ok(())
    }

    /// Writes the settings this crate owns and makes postgresql.conf
    /// include them (once).
    fn write_settings(&self, options: Options) -> Result<()> {
        let socket_dir = self.socket_dir.to_string_lossy();
        let settings = format!(
            "# Written by signet-pgcluster each time the cluster is opened; edits are lost.\n\
             listen_addresses = ''\n\
             unix_socket_directories = '\"{socket_dir}\"'\n\
             port = {port}\n\
             fsync = {fsync}\n",
            port = self.port,
            fsync = if options.fsync { "on" } else { "off" },
        );
        let settings_path = self.data_dir.join(SETTINGS_FILE);
        let current = read_optional(&settings_path)?;
        if current.as_deref() != Some(settings.as_str()) {
            fs::write(&settings_path, settings)
                .map_err(|e| Error::io(format!("writing {}", settings_path.display()), e))?;
            owner::set_mode(&settings_path, 0o600)?;
            if let Some(user) = &self.run_as {
                user.take(&settings_path)?;
            }
        }

        let conf_path = self.data_dir.join("postgresql.conf");
        let conf = read_optional(&conf_path)?.unwrap_or_default();
        if !conf.lines().any(|line| line.trim() == INCLUDE_LINE) {
            let mut file = fs::OpenOptions::new()
                .append(true)
                .open(&conf_path)
                .map_err(|e| Error::io(format!("opening {}", conf_path.display()), e))?;
            io::Write::write_all(
                &mut file,
                format!("\n# Added by signet-pgcluster.\n{INCLUDE_LINE}\n").as_bytes(),
            )
            .map_err(|e| Error::io(format!("appending to {}", conf_path.display()), e))?;
        }
        Ok(())
    }

    /// A server program (initdb, pg_ctl), run as the server user: directly,
    /// or through `setpriv` when this process is root.
    fn server_command(&self, program: &'static str) -> Prepared {
        let path = self.bindir.join(program);
        let mut prepared = match &self.run_as {
            None => Prepared {
                command: Command::new(path),
                tool: program,
                package: "postgresql",
            },
            Some(user) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .args(["--init-groups", "--"])
                    .arg(path)
                    .env("HOME", &user.home)
                    .env("USER", SUPERUSER)
                    .env("LOGNAME", SUPERUSER);
                Prepared {
                    command,
                    tool: "setpriv",
                    package: "util-linux",
                }
            }
        };
        // The server user may not be able to enter this process's working
        // directory; the cluster directory is always its own.
        prepared.command.current_dir(&self.dir);
        clean_env(&mut prepared.command);
        prepared
    }
}

/// A command and the package to blame if its program is missing.
#[derive(Debug)]
struct Prepared {
    command: Command,
    tool: &'static str,
    package: &'static str,
}

impl Prepared {
    /// Runs to completion with no stdin; only a failure to spawn is an
    /// error here, the exit status is the caller's to judge.
    fn output(&mut self, action: &str) -> Result<Output> {
        self.command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::ToolMissing {
                    tool: self.tool,
                    package: self.package,
                },
                _ => Error::io(format!("running `{}` to {action}", self.tool), e),
            })
    }
}

/// A cluster in a temporary directory that is stopped and deleted on drop,
/// so that tests leave nothing running.
///
/// Created with `fsync` off (the data is thrown away anyway) and not
/// started: call [`Cluster::start`] through `Deref`.
#[derive(Debug)]
pub struct TempCluster {
    cluster: Cluster,
    // Dropped after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl TempCluster {
    /// Creates a cluster in a new directory under the system temporary
    /// directory, with `fsync` off.
    pub fn new() -> Result<TempCluster> {
        TempCluster::with_options(Options { fsync: false })
    }

    /// Like [`TempCluster::new`] with explicit options.
    pub fn with_options(options: Options) -> Result<TempCluster> {
        let dir = tempfile::Builder::new()
            .prefix("signet-pg-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary cluster directory", e))?;
        let cluster = Cluster::create_or_open_with(dir.path(), options)?;
        Ok(TempCluster { cluster, dir })
    }

    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The temporary directory, deleted on drop.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Deref for TempCluster {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; a server that refuses a
        // fast shutdown gets an immediate one so nothing is left behind.
        if self.cluster.stop().is_err() {
            let _ = self.cluster.stop_with_mode("immediate");
        }
    }
}

/// Creates `dir` and any missing parents, returning the directories this
/// call created (canonical paths), outermost first.
fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|path| !path.exists()).collect();
    let mut created = Vec::with_capacity(missing.len());
    for path in missing.into_iter().rev() {
        if create_dir(path)? {
            created.push(
                fs::canonicalize(path)
                    .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?,
            );
        }
    }
    Ok(created)
}

/// Creates one directory; `Ok(false)` if it already existed.
fn create_dir(path: &Path) -> Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(Error::io(format!("creating {}", path.display()), e)),
    }
}

/// The cluster path ends up in a configuration value, in pg_ctl's shell
/// command line (inside double quotes) and in libpq's `host` (a
/// comma-separated list), so it must be UTF-8 and free of characters any of
/// them would read specially, and short enough for the socket.
fn check_dir_path(dir: &Path) -> Result<()> {
    let unusable = |reason: &str| Error::UnusablePath {
        path: dir.to_path_buf(),
        reason: reason.to_owned(),
    };
    let text = dir
        .to_str()
        .ok_or_else(|| unusable("the path is not valid UTF-8"))?;
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() || matches!(c, '\'' | '"' | '\\' | '$' | '`' | ','))
    {
        return Err(unusable(&format!(
            "the path contains {c:?}, which PostgreSQL's configuration, pg_ctl or libpq \
             (host lists are comma-separated) would misread"
        )));
    }
    let socket = dir.join("run").join(format!(".s.PGSQL.{PORT}"));
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::SocketPathTooLong {
            path: socket,
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(())
}

/// Refuses a non-empty directory that is not a cluster directory: it would
/// otherwise be handed over to the `postgres` user.
fn check_dir_contents(dir: &Path) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        if !CLUSTER_ENTRIES.iter().any(|allowed| name == *allowed) {
            return Err(Error::NotAClusterDir {
                path: dir.to_path_buf(),
                entry: name.to_string_lossy().into_owned(),
            });
        }
    }
    Ok(())
}

fn check_database_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidDatabaseName {
            name: name.to_owned(),
        })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/`
/// when `keep_slash`).
fn percent_encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/')
        {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Removes every `PG*` variable (PGHOST, PGOPTIONS, PGDATA, …) from a
/// child's environment, so the parent's settings cannot redirect it.
fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn diagnostics(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    [stderr.trim(), stdout.trim()]
        .into_iter()
        .find(|text| !text.is_empty())
        .unwrap_or("no output")
        .to_owned()
}

fn failed(action: &str, output: &Output) -> Error {
    Error::CommandFailed {
        action: action.to_owned(),
        status: output.status,
        detail: diagnostics(output),
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        for good in ["signetd", "_x", "a1_b2", &"a".repeat(63)] {
            assert!(check_database_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1a",
            "Signetd",
            "a-b",
            "a b",
            "a;drop",
            "host=/x dbname=y",
            "é",
            &"a".repeat(64),
        ] {
            assert!(check_database_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_encoding() {
        assert_eq!(percent_encode("/tmp/a b,c", true), "/tmp/a%20b%2Cc");
        assert_eq!(percent_encode("a/b", false), "a%2Fb");
        assert_eq!(percent_encode("signetd_test", false), "signetd_test");
    }

    #[test]
    fn dir_paths() {
        assert!(check_dir_path(Path::new("/tmp/a b.c-d_e")).is_ok());
        for bad in [
            "/tmp/a'b",
            "/tmp/a\"b",
            "/tmp/a$b",
            "/tmp/a`b",
            "/tmp/a\\b",
            "/tmp/a\nb",
            "/tmp/a,b",
        ] {
            assert!(
                matches!(
                    check_dir_path(Path::new(bad)),
                    Err(Error::UnusablePath { .. })
                ),
                "{bad:?}"
            );
        }
        let long = format!("/tmp/{}", "x".repeat(80));
        assert!(matches!(
            check_dir_path(Path::new(&long)),
            Err(Error::SocketPathTooLong { .. })
        ));
    }
}
