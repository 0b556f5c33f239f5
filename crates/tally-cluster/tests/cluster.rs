//! These start real PostgreSQL servers from the installed PostgreSQL: each
//! in its own directories, so they run in parallel with each other and with
//! other test binaries.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_cluster::{BinSearch, Cluster, ClusterConfig, ClusterError};

/// Runs `sql` through `psql` with nothing but the URL, as an outside client
/// (sqlx in the end-to-end tests) would connect.
fn psql_url(cluster: &Cluster, url: &str, sql: &str) -> String {
    let out = Command::new(&cluster.bins().psql)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A fresh directory for a persistent cluster; the tests remove it.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-cluster-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn throwaway_cluster_starts_serves_and_vanishes() {
    let t = Instant::now();
    let cluster = Cluster::start(ClusterConfig::throwaway().fast_unsafe()).expect("start");
    let data_dir = cluster.data_dir().to_path_buf();
    let socket_dir = cluster.socket_dir().to_path_buf();
    assert!(data_dir.join("PG_VERSION").is_file());

    // The configured database exists and the URL reaches it.
    assert_eq!(psql_url(&cluster, &cluster.url(), "SELECT current_database()"), "tally");
    assert_eq!(
        psql_url(&cluster, &cluster.superuser_url(), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"),
        "t"
    );
    assert_eq!(psql_url(&cluster, &cluster.url(), "SHOW max_connections"), "200");
    assert_eq!(psql_url(&cluster, &cluster.url(), "SHOW fsync"), "off");
    assert_eq!(psql_url(&cluster, &cluster.url(), "SHOW listen_addresses"), "");
    assert_eq!(psql_url(&cluster, &cluster.url(), "SHOW server_encoding"), "UTF8");

    // A database per test, as the end-to-end harness does.
    cluster.create_database("per_test_1").expect("create database");
    assert_eq!(psql_url(&cluster, &cluster.url_for("per_test_1"), "SELECT current_database()"), "per_test_1");
    let again = cluster.create_database("per_test_1").unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    cluster.ensure_database("per_test_1").expect("ensure is idempotent");
    assert!(matches!(cluster.create_database("no-dashes"), Err(ClusterError::InvalidDatabaseName { .. })));
    cluster.drop_database("per_test_1").expect("drop database");

    cluster.stop().expect("stop");
    assert!(!data_dir.exists(), "throwaway data dir {} left behind", data_dir.display());
    assert!(!socket_dir.exists(), "socket dir {} left behind", socket_dir.display());
    eprintln!("throwaway lifecycle took {:?}", t.elapsed());
}

#[test]
fn persistent_cluster_keeps_its_data_across_restarts() {
    let t = Instant::now();
    let dir = scratch_dir("persist");
    let config = ClusterConfig::persistent(&dir).with_database("keep");

    let first = Cluster::start(config.clone()).expect("first start");
    assert_eq!(first.psql("keep", "SHOW fsync").unwrap(), "on", "durable by default");
    first.psql("keep", "CREATE TABLE t (v text); INSERT INTO t VALUES ('survives')").expect("write");
    let initialised = std::fs::metadata(dir.join("PG_VERSION")).unwrap().modified().unwrap();

    // The data directory is in use: a second start must refuse, not share it.
    let err = Cluster::start(config.clone()).unwrap_err();
    assert!(matches!(err, ClusterError::AlreadyRunning { .. }), "{err}");
    // ...and that refusal must not have disturbed the running server.
    assert_eq!(first.psql("keep", "SELECT v FROM t").unwrap(), "survives");
    first.stop().expect("first stop");
    assert!(dir.join("PG_VERSION").is_file(), "persistent data is kept");

    let second = Cluster::start(config).expect("second start");
    assert_eq!(psql_url(&second, &second.url(), "SELECT v FROM t"), "survives");
    let reused = std::fs::metadata(dir.join("PG_VERSION")).unwrap().modified().unwrap();
    assert_eq!(initialised, reused, "the data directory was initialised again");
    second.stop().expect("second stop");

    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("persistent restart took {:?}", t.elapsed());
}

#[test]
fn leftovers_of_a_dead_process_are_cleared() {
    let dir = scratch_dir("leftover");
    let config = ClusterConfig::persistent(&dir).fast_unsafe();

    // A server whose starter was killed, with no watchdog to stop it.
    let mut helper = Helper::spawn(Some(&dir));
    helper.kill();
    assert!(pid_alive(helper.postmaster), "the leftover server should still run");

    let taken_over = Cluster::start(config.clone()).expect("start over the leftover server");
    assert!(pid_gone_within(helper.postmaster, Duration::from_secs(10)), "the leftover server was not stopped");
    assert_eq!(taken_over.psql("tally", "SELECT 1").unwrap(), "1");
    taken_over.stop().expect("stop");

    // A stale postmaster.pid, from a server that died with its machine.
    let dead_pid = {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    std::fs::write(dir.join("postmaster.pid"), format!("{dead_pid}\n{}\n", dir.display())).unwrap();
    let after_crash = Cluster::start(config).expect("start over a stale postmaster.pid");
    assert_eq!(after_crash.psql("tally", "SELECT 1").unwrap(), "1");
    after_crash.stop().expect("stop");

    std::fs::remove_dir_all(&dir).unwrap();
    // The killed helper's private socket directory.
    let _ = std::fs::remove_dir_all(&helper.socket_dir);
}

#[test]
fn a_failed_start_says_why_and_cleans_up() {
    let config = ClusterConfig::throwaway().fast_unsafe().with_setting("shared_buffers", "plenty");
    let err = Cluster::start(config).unwrap_err();
    let ClusterError::StartFailed { data_dir, log_tail, .. } = &err else {
        panic!("expected StartFailed, got {err:?}");
    };
    assert!(log_tail.contains("shared_buffers"), "the log tail should name the bad setting: {err}");
    assert!(!data_dir.exists(), "throwaway data dir {} left behind", data_dir.display());
}

#[test]
fn as_root_the_server_user_must_exist_and_reach_the_data() {
    if !running_as_root() {
        return;
    }
    let mut config = ClusterConfig::throwaway();
    config.server_user = "tally_no_such_user".to_owned();
    let err = Cluster::start(config).unwrap_err();
    assert!(matches!(err, ClusterError::NoServerUser { .. }), "{err}");
    assert!(err.to_string().contains("useradd"), "{err}");

    // A data directory inside a directory only root may enter.
    let locked = scratch_dir("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let err = Cluster::start(ClusterConfig::persistent(locked.join("data"))).unwrap_err();
    assert!(matches!(err, ClusterError::NotAccessible { .. }), "{err}");
    std::fs::remove_dir_all(&locked).unwrap();
}

#[test]
fn missing_postgresql_is_reported_with_a_way_out() {
    let empty = scratch_dir("no-pg");
    std::fs::create_dir_all(&empty).unwrap();
    let mut config = ClusterConfig::throwaway();
    config.search = BinSearch { path: Some(empty.clone().into_os_string()), dirs: vec![empty.clone()] };
    let err = Cluster::start(config).unwrap_err();
    match &err {
        ClusterError::NotInstalled { searched } => assert_eq!(searched, &vec![empty.clone(), empty.clone()]),
        other => panic!("expected NotInstalled, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("apt-get install postgresql") && message.contains("DATABASE_URL"), "{message}");

    let err = Cluster::start(ClusterConfig::throwaway().with_search(BinSearch::nowhere())).unwrap_err();
    assert!(matches!(err, ClusterError::NotInstalled { .. }), "{err}");
    let err = Cluster::start(ClusterConfig::throwaway().with_bin_dir(&empty)).unwrap_err();
    assert!(matches!(err, ClusterError::NotInstalled { .. }), "{err}");
    std::fs::remove_dir_all(&empty).unwrap();
}

/// The server must not outlive a process killed without a chance to stop it.
#[test]
fn the_server_stops_when_its_process_is_killed() {
    let mut helper = Helper::spawn(None);
    helper.kill();
    assert!(
        pid_gone_within(helper.postmaster, Duration::from_secs(30)),
        "postmaster {} survived its process",
        helper.postmaster
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while helper.data_dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!helper.data_dir.exists(), "throwaway data dir survived its process");
    assert!(!helper.socket_dir.exists(), "socket dir survived its process");
}

/// A cluster started in a child process (this test binary, running
/// `helper_start_and_hang`), to be killed.
struct Helper {
    child: Child,
    postmaster: u32,
    data_dir: PathBuf,
    socket_dir: PathBuf,
}

impl Helper {
    fn spawn(persistent: Option<&Path>) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "helper_start_and_hang", "--ignored", "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match persistent {
            Some(dir) => cmd.env(HELPER_DIR, dir),
            None => cmd.env_remove(HELPER_DIR),
        };
        let mut child = cmd.spawn().unwrap();
        let ready = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            // libtest prints "test helper_start_and_hang ... " before the test's own output.
            .find_map(|l| l.split_once("READY ").map(|(_, rest)| rest.to_owned()))
            .expect("the helper reported its cluster");
        let mut parts = ready.split('\t');
        let postmaster = parts.next().unwrap().parse().unwrap();
        let data_dir = PathBuf::from(parts.next().unwrap());
        let socket_dir = PathBuf::from(parts.next().unwrap());
        Helper { child, postmaster, data_dir, socket_dir }
    }

    /// SIGKILL: no destructor runs in the helper.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

const HELPER_DIR: &str = "TALLY_CLUSTER_TEST_HELPER_DIR";

/// Run by [`Helper::spawn`] in a child process: a throwaway cluster, or with
/// `TALLY_CLUSTER_TEST_HELPER_DIR` a persistent one that outlives the process.
#[test]
#[ignore = "a helper: run by other tests, in its own process"]
fn helper_start_and_hang() {
    let config = match std::env::var_os(HELPER_DIR) {
        Some(dir) => {
            let mut c = ClusterConfig::persistent(dir).fast_unsafe();
            c.stop_with_process = false;
            c
        }
        None => ClusterConfig::throwaway().fast_unsafe(),
    };
    let cluster = Cluster::start(config).expect("start");
    let pid_line = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    println!(
        "\nREADY {}\t{}\t{}",
        pid_line.lines().next().unwrap().trim(),
        cluster.data_dir().display(),
        cluster.socket_dir().display()
    );
    std::thread::sleep(Duration::from_secs(120));
}

/// Polls, because the orphaned postmaster is reaped by init in its own time
/// and a zombie still answers `kill -0`.
fn pid_gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn pid_alive(pid: u32) -> bool {
    // `kill -0` works on any Unix, unlike /proc.
    Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
