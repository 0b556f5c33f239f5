//! `tally load` (the `tally-load` crate): drives a running server with concurrent clients and checks
//! the result.
//!
//! Workloads (all through the public HTTP API, as real clients would):
//!
//! - `hot`: every client pays and tops up on **one** wallet — the hot row.
//! - `spread`: each client has its own wallet.
//! - `duplicates`: all clients send the same top-up with the same
//!   Idempotency-Key at once, round after round; each round must take effect
//!   exactly once.
//! - `inventory`: seeds 002 and 004. The admin creates a few products with
//!   scarce stock and an event with few seats; each client has a funded
//!   wallet, joins the event's queue and polls its token, orders products
//!   and (with an active token) seats, then pays some orders from the
//!   wallet, cancels some (a few after paying: a refund), and leaves the
//!   rest to expire. Client 0 also restocks now and then, as the admin.
//! - `last-unit` and `one-seat`: every client races for one product unit or
//!   one seat; the winner cancels, and the race starts again (`contest`).
//!
//! It prints throughput, latency percentiles, counts per status code and per
//! problem code, then checks the outcome through the API (each wallet's
//! balance equals what the acknowledged requests imply, and equals the sum of
//! its ledger; for `inventory`, also that no product was oversold and no seat
//! is held or sold by two orders), and, given `--database-url`, runs the
//! core's invariant checker (all eight invariants) on the database itself.
//!
//! `hot` and `spread` pay in two requests (create, confirm) or, with
//! `--one-step`, in one (`payments`). Every wallet workload also prints its
//! money movements per second, the unit `--raw <pattern>` (`raw`, the raw-SQL
//! baseline of the same database) prints too, so one script can compare them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use tally_client::dto::CreateUserRequest;
use tally_client::{Client as Api, Error as ApiError, LedgerCursor, Reply as ApiReply, ReqwestTransport, Retry};
use tokio::sync::Mutex;

pub mod bench;
mod contest;
mod inventory;
mod payments;
pub mod raw;
mod summary;

use inventory::{Catalogue, Placed, Shop, Shopper, verify_inventory};
use payments::Flow;

/// What one client may send at most; bounds a run that has no duration.
const REQUESTS_PER_CLIENT_MAX: u64 = 1_000_000;
/// What each duplicates round tops up.
const DUPLICATE_AMOUNT: i64 = 7;
/// A client waits at most this long for one response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent clients at most: each is a task and a connection (the issue
/// sweeps up to 256).
pub const CLIENTS_MAX: u64 = 1_024;
/// The longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(3_600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Hot,
    Spread,
    Duplicates,
    Inventory,
    LastUnit,
    OneSeat,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin key (to create the load's users; not needed with `--raw`).
    #[arg(long, env = "TALLY_ADMIN_KEY", required_unless_present = "raw")]
    pub admin_key: Option<String>,
    #[arg(long, value_enum, default_value = "hot")]
    pub workload: Workload,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: u64,
    /// Run for this long (e.g. 10s, 1m) ...
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// ... or until this many requests were sent in all (default 2000).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Also run the invariant checker on this database at the end (with
    /// `--raw`: the database the baseline runs in).
    #[arg(long, env = "TALLY_LOAD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// `hot` and `spread`: pay in one request (`"confirm": true`) instead
    /// of create, then confirm.
    #[arg(long, conflicts_with = "raw")]
    pub one_step: bool,
    /// Run a raw-SQL payment pattern of pg-limits.md on `--database-url`
    /// (in its own schema, `raw_baseline`) instead of an HTTP workload: the
    /// baseline Tally is compared with.
    #[arg(long, value_enum, requires = "database_url")]
    pub raw: Option<raw::Pattern>,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration unit in {text:?} (use ms, s, m or h)")),
    }
}

/// Everything the clients observed.
#[derive(Default)]
struct Observed {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    /// Per wallet: the net change the acknowledged requests imply.
    expected_delta: BTreeMap<usize, i64>,
    /// Duplicates: the rounds whose top-up some client saw acknowledged
    /// (fresh or replayed). Each must have taken effect exactly once.
    acknowledged_rounds: BTreeSet<u64>,
    /// Problem answers by status and `code` (`409 out_of_stock`).
    codes: BTreeMap<(u16, String), u64>,
    /// Inventory: what became of the orders the clients placed.
    fates: BTreeMap<&'static str, u64>,
    /// Inventory: units the admin's restocks added, per product, as
    /// acknowledged, and as sent without an answer (they may have landed).
    restocked: BTreeMap<usize, u64>,
    restocked_unknown: BTreeMap<usize, u64>,
    /// Inventory: every order some client saw created, with its owner's wallet.
    placed: Vec<(usize, Placed)>,
    /// Hot and spread: acknowledged top-ups and confirmed payments (a
    /// duplicates round counts once, from `acknowledged_rounds`).
    movements: u64,
}

impl Observed {
    fn absorb(&mut self, local: Observed) {
        self.latencies_us.extend(local.latencies_us);
        for (status, count) in local.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        for (wallet, delta) in local.expected_delta {
            *self.expected_delta.entry(wallet).or_default() += delta;
        }
        self.acknowledged_rounds.extend(local.acknowledged_rounds);
        for (code, count) in local.codes {
            *self.codes.entry(code).or_default() += count;
        }
        for (fate, count) in local.fates {
            *self.fates.entry(fate).or_default() += count;
        }
        for (product, units) in local.restocked {
            *self.restocked.entry(product).or_default() += units;
        }
        for (product, units) in local.restocked_unknown {
            *self.restocked_unknown.entry(product).or_default() += units;
        }
        self.placed.extend(local.placed);
        self.movements += local.movements;
    }

    /// Money movements: acknowledged top-ups and confirmed payments, each
    /// once, however many clients saw it acknowledged.
    fn movements(&self) -> u64 {
        self.movements + u64::try_from(self.acknowledged_rounds.len()).expect("fits")
    }
}

/// The server, reached through the typed client; each call names its caller.
struct Client {
    api: Api<ReqwestTransport>,
}

impl Client {
    /// The API as the holder of `key`. The load never retries by itself:
    /// every 503 and every lost reply is what it measures.
    fn as_key(&self, key: &str) -> Api<ReqwestTransport> {
        self.api.as_key(key)
    }
}

/// One answer as the load counts it: its status, its problem code, its
/// body on a 2xx, and how long it took.
struct Reply<T> {
    status: StatusCode,
    code: Option<String>,
    body: Option<T>,
    elapsed: Duration,
}

impl<T> Reply<T> {
    /// The body of a 2xx, or what was answered instead.
    fn ok(self, what: &str) -> Result<T, String> {
        let (status, code) = (self.status, self.code.unwrap_or_default());
        self.body.ok_or_else(|| format!("{what}: {status} {code}"))
    }
}

/// Times `call`; an answer of any status is a [`Reply`], no answer an error.
async fn timed<T>(call: impl Future<Output = Result<ApiReply<T>, ApiError>>) -> Result<Reply<T>, String> {
    let started = Instant::now();
    let result = call.await;
    let elapsed = started.elapsed();
    match result {
        Ok(reply) => Ok(Reply { status: reply.status, code: None, body: Some(reply.body), elapsed }),
        Err(ApiError::Problem { status, problem, .. }) => {
            Ok(Reply { status, code: Some(problem.code), body: None, elapsed })
        }
        Err(ApiError::Unexpected { status, .. }) => Ok(Reply { status, code: None, body: None, elapsed }),
        Err(ApiError::Transport(error)) => Err(error.to_string()),
    }
}

/// Runs the load and prints the report; `Ok(false)` when a check failed.
pub async fn run(args: LoadArgs) -> Result<bool, String> {
    if !(1..=CLIENTS_MAX).contains(&args.clients) {
        return Err(format!("--clients must be 1 to {CLIENTS_MAX}"));
    }
    if args.duration.is_some_and(|d| d > DURATION_MAX) {
        return Err(format!("--duration must be at most {} s", DURATION_MAX.as_secs()));
    }
    let budget = match (args.duration, args.requests) {
        (Some(_), None) => u64::MAX,
        (_, Some(n)) => n,
        (None, None) => 2_000,
    };
    if let Some(pattern) = args.raw {
        let url = args.database_url.as_deref().ok_or("--raw needs --database-url")?;
        return raw::run(pattern, url, args.clients, args.duration, budget).await;
    }
    if args.one_step && !matches!(args.workload, Workload::Hot | Workload::Spread) {
        return Err("--one-step is for the hot and spread workloads".into());
    }
    let flow = if args.one_step { Flow::OneStep } else { Flow::TwoStep };
    let admin_key = args.admin_key.as_deref().ok_or("--admin-key (or TALLY_ADMIN_KEY) is required")?;
    let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| e.to_string())?;
    let api = Api::new(ReqwestTransport::new(http, &args.url)).with_retry(Retry::NEVER);
    let client = Arc::new(Client { api });
    let wallets = match args.workload {
        Workload::Hot | Workload::Duplicates => 1,
        Workload::Spread | Workload::Inventory | Workload::LastUnit | Workload::OneSeat => {
            usize::try_from(args.clients).expect("client count fits")
        }
    };
    let initial = 1_000_000_000;
    let mut keys = Vec::new();
    for i in 0..wallets {
        let request = CreateUserRequest::named(&format!("load-{i}"));
        let key = timed(client.as_key(admin_key).create_user(&request)).await?.ok("creating a user")?.api_key;
        timed(client.as_key(&key).top_up(&format!("fund-{i}"), initial)).await?.ok("funding a wallet")?;
        keys.push(key);
    }
    let catalogue = match args.workload {
        Workload::Inventory => Some(Arc::new(Catalogue::create(&client, admin_key, args.clients).await?)),
        _ => None,
    };
    let prize = match args.workload {
        Workload::LastUnit => Some(Arc::new(contest::Prize::last_unit(&client, admin_key).await?)),
        Workload::OneSeat => Some(Arc::new(contest::Prize::one_seat(&client, admin_key, args.clients).await?)),
        _ => None,
    };
    let keys = Arc::new(keys);
    let observed = Arc::new(Mutex::new(Observed::default()));
    let budget = Arc::new(AtomicU64::new(budget));
    let deadline = args.duration.map(|d| Instant::now() + d);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (client, keys, observed, budget) = (client.clone(), keys.clone(), observed.clone(), budget.clone());
        let catalogue = catalogue.clone();
        let prize = prize.clone();
        let workload = args.workload;
        tasks.push(tokio::spawn(async move {
            let wallet = wallet_of(workload, c);
            let key = keys[wallet].clone();
            let mut sent = 0u64;
            let mut local = Observed::default();
            let mut shopper = Shopper::default();
            let mut token = None;
            while sent < REQUESTS_PER_CLIENT_MAX {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
                    break;
                }
                sent += 1;
                let step = match (&catalogue, &prize) {
                    (Some(catalogue), _) => {
                        let shop = Shop { client: &client, catalogue, key: &key, c, wallet };
                        shop.step(sent, &mut shopper, &mut local).await
                    }
                    (None, Some(prize)) => prize.race(&client, &key, &mut token, c, sent, &mut local).await,
                    (None, None) => wallet_step(&client, workload, flow, &key, c, sent, &mut local).await,
                };
                if let Err(error) = step {
                    eprintln!("client {c}: {error}");
                }
            }
            observed.lock().await.absorb(local);
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("client task: {e}"))?;
    }
    let elapsed = started.elapsed();
    let observed = observed.lock().await;
    report(&args, &observed, elapsed);
    // A 5xx other than 503 (shed load, retry) is a server bug, whatever the
    // invariants say.
    let failures: u64 = observed.statuses.iter().filter(|(s, _)| **s >= 500 && **s != 503).map(|(_, n)| n).sum();
    if failures > 0 {
        println!("check      {failures} server error(s) other than 503  FAIL");
    }
    let mut ok = failures == 0;
    ok &= verify_wallets(&client, &keys, &observed, initial).await?;
    if let Some(catalogue) = &catalogue {
        ok &= verify_inventory(&client, catalogue, &keys, &observed).await?;
    }
    if let Some(prize) = &prize {
        ok &= prize.verify(&client, &keys[0], &observed).await?;
    }
    ok &= verify_database(&args).await?;
    println!("verdict    {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}

/// The wallet client `c` pays from.
fn wallet_of(workload: Workload, c: u64) -> usize {
    match workload {
        Workload::Spread | Workload::Inventory | Workload::LastUnit | Workload::OneSeat => {
            usize::try_from(c).expect("fits")
        }
        Workload::Hot | Workload::Duplicates => 0,
    }
}

fn record<T>(local: &mut Observed, reply: &Reply<T>) {
    local.latencies_us.push(u64::try_from(reply.elapsed.as_micros()).unwrap_or(u64::MAX));
    *local.statuses.entry(reply.status.as_u16()).or_default() += 1;
    if let Some(code) = &reply.code {
        *local.codes.entry((reply.status.as_u16(), code.clone())).or_default() += 1;
    }
}

async fn wallet_step(
    client: &Client,
    workload: Workload,
    flow: Flow,
    key: &str,
    c: u64,
    n: u64,
    local: &mut Observed,
) -> Result<(), String> {
    let wallet = wallet_of(workload, c);
    match workload {
        Workload::Duplicates => {
            // Every client sends round n's request; only one may take effect.
            let amount = DUPLICATE_AMOUNT;
            let reply = timed(client.as_key(key).top_up(&format!("dup-round-{n}"), amount)).await?;
            record(local, &reply);
            if reply.status == StatusCode::CREATED {
                local.acknowledged_rounds.insert(n);
            }
            if !(reply.status == StatusCode::CREATED || reply.status == StatusCode::CONFLICT) {
                return Err(format!("duplicates: unexpected {} {:?}", reply.status, reply.code));
            }
        }
        Workload::Inventory | Workload::LastUnit | Workload::OneSeat => unreachable!("these clients shop or race"),
        Workload::Hot | Workload::Spread => payments::step(client, flow, key, wallet, c, n, local).await?,
    }
    Ok(())
}

fn report(args: &LoadArgs, observed: &Observed, elapsed: Duration) {
    let mut histogram = summary::histogram();
    for us in &observed.latencies_us {
        summary::record_latency(&mut histogram, Duration::from_micros(*us));
    }
    let count = observed.latencies_us.len() as u64;
    let elapsed_ms = summary::elapsed_ms(elapsed);
    let flow = if args.one_step { ", one-step" } else { "" };
    println!("workload   {:?}{flow}, {} clients, {} ms", args.workload, args.clients, elapsed_ms);
    println!("requests   {count}  ({} req/s)", summary::per_second(count, elapsed_ms));
    println!("{}", summary::latency_line(&histogram));
    let statuses: Vec<String> = observed.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!("statuses   {}", statuses.join(", "));
    if !observed.codes.is_empty() {
        let codes: Vec<String> = observed.codes.iter().map(|((s, code), n)| format!("{s} {code}: {n}")).collect();
        println!("codes      {}", codes.join(", "));
    }
    if matches!(args.workload, Workload::Inventory | Workload::LastUnit | Workload::OneSeat) {
        let fates: Vec<String> = observed.fates.iter().map(|(fate, n)| format!("{fate}: {n}")).collect();
        println!("orders     {}", fates.join(", "));
    } else {
        println!("{}", summary::movements_line(observed.movements(), elapsed_ms));
    }
}

/// Each wallet's balance equals what the acknowledged requests imply, and
/// the sum of its ledger.
async fn verify_wallets(client: &Client, keys: &[String], observed: &Observed, initial: i64) -> Result<bool, String> {
    let mut ok = true;
    for (wallet, key) in keys.iter().enumerate() {
        let api = client.as_key(key);
        let balance = timed(api.wallet()).await?.ok("reading a wallet")?.balance;
        let rounds = i64::try_from(observed.acknowledged_rounds.len()).expect("fits");
        let expected = initial + observed.expected_delta.get(&wallet).copied().unwrap_or(0) + DUPLICATE_AMOUNT * rounds;
        // The wallet's ledger, summed page by page.
        let mut after: Option<String> = None;
        let mut sum = 0i64;
        loop {
            let cursor = after.as_deref().map_or(LedgerCursor::First, LedgerCursor::After);
            let page = timed(api.ledger(100, cursor)).await?.ok("reading a ledger")?;
            sum += page.entries.iter().map(|entry| entry.amount).sum::<i64>();
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if balance != expected || balance != sum {
            ok = false;
            println!(
                "check      wallet {wallet}: balance {balance}, acknowledged requests imply {expected}, ledger sums to {sum}  FAIL"
            );
        }
    }
    if ok {
        println!("check      {} wallet(s): balance = acknowledged requests = ledger sum  ok", keys.len());
    }
    Ok(ok)
}

/// With `--database-url`: the core's invariant checker on the database.
async fn verify_database(args: &LoadArgs) -> Result<bool, String> {
    let Some(url) = &args.database_url else { return Ok(true) };
    let store = tally_pg::PgStore::connect_lazy(url, tally_pg::PgConfig::default()).map_err(|e| e.to_string())?;
    let snapshot = tally_core::store::Store::snapshot(&store).await.map_err(|e| e.to_string())?;
    let violations = tally_core::check::check(&snapshot);
    if violations.is_empty() {
        println!("invariants over {}: all hold", snapshot.summary());
        return Ok(true);
    }
    for violation in violations.iter().take(20) {
        println!("invariants VIOLATED: {violation}");
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicates_round_is_one_movement_however_many_saw_it() {
        let mut total = Observed::default();
        for client in 0..3 {
            let mut local = Observed { movements: client, ..Observed::default() };
            // Every client saw rounds 1 and 2 acknowledged (one fresh, the rest replays).
            local.acknowledged_rounds.extend([1, 2]);
            total.absorb(local);
        }
        assert_eq!(total.movements(), 3 + 2);
    }

    #[test]
    fn runs_are_bounded() {
        assert!(parse_duration("2h").unwrap() > DURATION_MAX);
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
    }
}
