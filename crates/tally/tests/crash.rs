//! Crash recovery of a gateway payment, with real processes: `tally serve` is
//! killed (SIGKILL) after the gateway charged the payment and before tally
//! recorded it. After a restart the completer must find the payment stuck in
//! `confirming`, look it up, and record it done — with exactly one confirm
//! ever sent to the gateway (SPEC.md invariant 1).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_client::dto::{CreatePaymentRequest, CreateUserRequest};
use tally_client::{Client, ReqwestTransport, Retry};
use tally_core::store::Store;

const ADMIN: &str = "tly_crash_test_admin";

/// Starts `tally serve` and waits until it listens.
fn start_tally(database_url: &str, gateway_url: &str, port: u16, pause_ms: u64) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", database_url])
        .args(["--gateway-url", gateway_url, "--completer-after-seconds", "1"])
        // A payback policy of 10 %: its hold must survive the crash too.
        .args(["--payback-bps", "1000"])
        .env("TALLY_ADMIN_KEY", ADMIN)
        .env("TALLY_TEST_PAUSE_AFTER_GATEWAY_MS", pause_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tally serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "tally serve did not start");
        match lines.next() {
            Some(Ok(line)) if line.contains("tally listening") => break,
            Some(_) => {}
            None => panic!("tally serve exited before listening"),
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn killed_between_gateway_success_and_commit_the_payment_ends_done_with_one_confirm() {
    let cluster = tally_cluster::Cluster::start(tally_cluster::ClusterConfig::throwaway().fast_unsafe())
        .expect("a throwaway PostgreSQL");
    let database_url = cluster.url();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let gateway = tally_gateway::FakeGateway::new("test_sk");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gateway_url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(tally_gateway::fake::serve(listener, gateway.clone(), std::future::pending()));
        let port = free_port();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        // Sent once: the test kills the server under the confirm on purpose.
        let api =
            Client::new(ReqwestTransport::new(http, &format!("http://127.0.0.1:{port}"))).with_retry(Retry::NEVER);

        // First life: it will pause for 30 s between the gateway's answer and its commit.
        let mut first = start_tally(&database_url, &gateway_url, port, 30_000);
        let created = api.as_key(ADMIN).create_user(&CreateUserRequest::named("crash")).await.expect("a user");
        let user = api.as_key(created.body.api_key);
        let request = CreatePaymentRequest::of_amount(4_200, "gateway");
        let payment = user.create_payment("create", &request).await.expect("a payment").body;
        assert_eq!(payment.payback_amount, 420, "the merchant's 10 %");
        let id = payment.id;
        let confirm = {
            let (user, id) = (user.clone(), id.clone());
            tokio::spawn(async move { user.confirm_payment("confirm-1", &id, Some("pk-crash")).await })
        };
        // Wait until the gateway has charged it, then kill tally inside its pause.
        let deadline = Instant::now() + Duration::from_secs(20);
        while gateway.payment_stats("pk-crash").confirm_effects == 0 {
            assert!(Instant::now() < deadline, "the confirm never reached the gateway");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.kill().expect("SIGKILL tally");
        first.wait().expect("reap");
        let died = confirm.await.expect("task");
        assert!(matches!(died, Err(tally_client::Error::Transport(_))), "the client saw the connection die: {died:?}");

        // What the crash left behind: charged at the gateway, `confirming` here.
        let store = tally_pg::PgStore::connect_lazy(&database_url, tally_pg::PgConfig::default()).expect("store");
        let snapshot = store.snapshot().await.expect("snapshot");
        let stuck = snapshot.payments.iter().find(|p| p.id.to_string() == id).expect("payment");
        assert_eq!(stuck.status.as_str(), "confirming");
        assert!(snapshot.transfers.is_empty(), "nothing was booked before the crash");
        let wallet = snapshot.wallets.iter().find(|w| w.user == stuck.user).expect("wallet");
        assert_eq!(wallet.payback_held.minor_units(), 420, "the payback's room is held, not credited");

        // Second life: the completer resolves it by lookup.
        let mut second = start_tally(&database_url, &gateway_url, port, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = loop {
            let got = user.payment(&id).await.expect("the payment").body;
            if got.status == "done" || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let wallet = user.wallet().await.expect("the wallet").body;
        second.kill().expect("stop tally");
        second.wait().expect("reap");
        assert_eq!(got.status, "done", "the completer recorded the charge");
        assert_eq!(got.payback_amount, 420);
        assert_eq!(wallet.balance, 420, "the payback was credited once");
        let stats = gateway.payment_stats("pk-crash");
        assert_eq!((stats.confirm_requests, stats.confirm_effects), (1, 1), "one confirm, ever");
        let snapshot = store.snapshot().await.expect("snapshot");
        tally_core::check::assert_holds(&snapshot);
        let charges = snapshot.transfers.iter().filter(|t| t.kind.as_str() == "payment").count();
        assert_eq!(charges, 1);
    });
    cluster.stop().expect("stop the cluster");
}
