//! End-to-end tests against the real PostgreSQL programs: create, start,
//! query, stop, restart, and the refusals that keep a cluster private.

use std::fmt::Display;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use signet_pgcluster::{Cluster, Error, Options, TempCluster};

/// Unwraps with the error's Display, which names the Debian package to
/// install when PostgreSQL is missing: a missing server fails the test.
fn ok<T, E: Display>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

/// Whether this test process runs as root (`/proc/self` belongs to the
/// effective uid).
fn running_as_root() -> bool {
    ok(std::fs::metadata("/proc/self")).uid() == 0
}

/// Stops a (non-temporary) cluster even when the test panics.
struct StopOnDrop<'a>(&'a Cluster);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// Connects with libpq through the URL, as a client of the daemon would.
fn query_via_url(cluster: &Cluster, url: &str, sql: &str) -> String {
    let output = ok(Command::new(cluster.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg(url)
        .arg("-c")
        .arg(sql)
        .output());
    assert!(
        output.status.success(),
        "psql {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn lifecycle_persists_data_across_restarts() {
    let cluster = ok(TempCluster::new());
    assert_eq!(cluster.run_as().is_some(), running_as_root());
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(!ok(cluster.is_running()));
    ok(cluster.stop()); // stopping a stopped server is fine

    ok(cluster.start());
    assert!(ok(cluster.is_running()));
    ok(cluster.start()); // so is starting a running one
    assert!(cluster.socket_dir().join(".s.PGSQL.5432").exists());

    ok(cluster.create_database("signet_test"));
    ok(cluster.create_database("signet_test")); // idempotent
    assert!(ok(cluster.database_exists("signet_test")));
    assert!(!ok(cluster.database_exists("absent")));
    assert_eq!(ok(cluster.psql("signet_test", "select 1")), "1");
    assert_eq!(ok(cluster.psql("signet_test", "show fsync")), "off");
    assert_eq!(ok(cluster.psql("signet_test", "show listen_addresses")), "");
    ok(cluster.psql(
        "signet_test",
        "create table kept (id int primary key, note text); \
         insert into kept values (1, 'one'), (2, 'two')",
    ));

    let url = cluster.url("signet_test");
    assert!(
        url.starts_with("postgresql://postgres@/signet_test?host=/"),
        "{url}"
    );
    assert_eq!(
        query_via_url(&cluster, &url, "select current_database()"),
        "signet_test"
    );

    ok(cluster.stop());
    assert!(!ok(cluster.is_running()));
    ok(cluster.stop());
    assert!(cluster.psql("signet_test", "select 1").is_err());

    ok(cluster.start());
    assert!(ok(cluster.is_running()));
    assert_eq!(
        ok(cluster.psql("signet_test", "select id, note from kept order by id")),
        "1|one\n2|two"
    );
    let Err(err) = cluster.psql("signet_test", "select * from missing_table") else {
        panic!("a failing statement must be an error");
    };
    assert!(err.to_string().contains("missing_table"), "{err}");
}

#[test]
fn temp_cluster_stops_on_drop() {
    let (dir, socket) = {
        let cluster = ok(TempCluster::new());
        ok(cluster.start());
        assert!(ok(cluster.is_running()));
        (
            cluster.path().to_path_buf(),
            cluster.socket_dir().to_path_buf(),
        )
    };
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!socket.join(".s.PGSQL.5432").exists());
}

#[test]
fn reopening_keeps_the_cluster() {
    let temp = ok(TempCluster::new());
    let version = temp.data_dir().join("PG_VERSION");
    let created = ok(ok(std::fs::metadata(&version)).modified());

    let again = ok(Cluster::create_or_open_with(
        temp.path(),
        Options { fsync: false },
    ));
    assert_eq!(again.data_dir(), temp.data_dir());
    assert_eq!(again.url("x"), temp.url("x"));
    assert_eq!(ok(ok(std::fs::metadata(&version)).modified()), created);

    // Either handle controls the one server.
    ok(again.start());
    assert!(ok(temp.is_running()));
    ok(temp.create_database("shared"));
    assert!(ok(again.database_exists("shared")));
    ok(again.stop());
    assert!(!ok(temp.is_running()));
}

#[test]
fn persistent_cluster_in_a_path_with_spaces() {
    let parent = ok(tempfile::tempdir());
    // A directory this test made: opening it to others is the test's call.
    ok(std::fs::set_permissions(
        parent.path(),
        std::fs::Permissions::from_mode(0o711),
    ));
    let dir = parent.path().join("a b").join("pg");
    let cluster = ok(Cluster::create_or_open_with(&dir, Options { fsync: false }));
    let _stop = StopOnDrop(&cluster);
    ok(cluster.start());
    assert_eq!(
        ok(cluster.psql("postgres", "show unix_socket_directories")),
        format!("\"{}\"", cluster.socket_dir().display())
    );
    let url = cluster.url("postgres");
    assert!(url.contains("/a%20b/pg/run"), "{url}");
    assert_eq!(query_via_url(&cluster, &url, "select 40 + 2"), "42");
    if running_as_root() {
        // The parents this call created were opened to the server user.
        let mode = ok(std::fs::metadata(parent.path().join("a b"))).mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}

#[test]
fn root_refuses_an_unreachable_parent() {
    let parent = ok(tempfile::tempdir());
    ok(std::fs::set_permissions(
        parent.path(),
        std::fs::Permissions::from_mode(0o700),
    ));
    let result = Cluster::create_or_open(&parent.path().join("pg"));
    if running_as_root() {
        let Err(Error::NotTraversable { path, mode }) = result else {
            panic!("root must refuse a 0700 parent: {result:?}");
        };
        assert_eq!(path, ok(parent.path().canonicalize()));
        assert_eq!(mode, 0o700);
        assert!(!parent.path().join("pg").exists(), "nothing is created");
    } else {
        // As a normal user the server runs as this user, who owns the parent.
        let cluster = ok(result);
        assert_eq!(cluster.run_as(), None);
    }
}

#[test]
fn refusals() {
    let temp = ok(tempfile::tempdir());
    ok(std::fs::write(temp.path().join("notes.txt"), "mine"));
    assert!(matches!(
        Cluster::create_or_open(&temp.path().join("a,b")),
        Err(Error::UnusablePath { .. })
    ));
    assert!(matches!(
        Cluster::create_or_open(temp.path()),
        Err(Error::NotAClusterDir { entry, .. }) if entry == "notes.txt"
    ));

    let long = Path::new("/tmp").join("x".repeat(90));
    assert!(matches!(
        Cluster::create_or_open(&long),
        Err(Error::SocketPathTooLong { .. })
    ));
    assert!(!long.exists(), "nothing is created for a refused path");

    let cluster = ok(TempCluster::new());
    for bad in ["Bad", "a;b", "host=/tmp dbname=x", "", "1x"] {
        assert!(
            matches!(
                cluster.create_database(bad),
                Err(Error::InvalidDatabaseName { .. })
            ),
            "{bad:?}"
        );
        assert!(matches!(
            cluster.psql(bad, "select 1"),
            Err(Error::InvalidDatabaseName { .. })
        ));
    }
}
