//! `tally load --raw <pattern>`: the raw-SQL baseline Tally is measured
//! against, in the same process, format and run as the HTTP workloads, so a
//! ratio needs one command (issue 12, item 6).
//!
//! This module owns the schema `raw_baseline` in the target database (it
//! drops and recreates it, fills it, and drops it again at the end), the
//! statements of the patterns of `shared/research/pg-limits.md` (verbatim:
//! `:aid` becomes `$1`, the tables are found through `search_path`), the
//! clients that loop over a pattern's transaction, and the check that every
//! transaction the clients saw commit is in the tables, exactly once.
//!
//! Like `pgbench -M prepared`, each client holds one connection for the
//! whole run and sends each statement of the transaction as a prepared
//! statement, one round trip each (sqlx caches the prepared statements per
//! connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};

use crate::summary;

/// The schema the baseline's tables live in: apart from Tally's, so that the
/// baseline can share the service's database without touching its rows.
pub const SCHEMA: &str = "raw_baseline";
/// Accounts in the table (pg-limits.md's schema.sql).
pub const ACCOUNTS: u64 = 10_000;
/// Every account's balance: never comes near 0 in a run, so the conditional
/// update of `b2` always succeeds, as in pg-limits.md.
const INITIAL_BALANCE: i64 = 1_000_000_000_000;
/// The hot account of patterns `a` and `b2`.
const HOT_ACCOUNT: i64 = 1;
/// A client whose transactions keep failing stops after this many errors
/// (a dead connection would otherwise spin for the whole duration).
const ERRORS_PER_CLIENT_MAX: u64 = 100;
/// Errors printed in full; the rest are only counted.
const ERRORS_PRINTED_MAX: u64 = 5;

/// The raw payment patterns of pg-limits.md that the issue compares with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// One hot account: `BEGIN; SELECT … FOR UPDATE; UPDATE; INSERT; COMMIT`.
    A,
    /// One hot account: the update and the insert in one statement (a CTE), autocommit.
    B2,
    /// Accounts spread over 1..=10000 at random: the transaction of `a`.
    C,
}

/// The transaction of `a` and `c` (pg-limits.md's `a_hot_pessimistic.sql`
/// and `c_spread_pessimistic.sql`).
const FOR_UPDATE: &[&str] = &[
    "BEGIN",
    "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE",
    "UPDATE accounts SET balance = balance - 1 WHERE id = $1",
    "INSERT INTO payments(account_id, amount, status, idempotency_key) VALUES ($1, 1, 'captured', gen_random_uuid()::text)",
    "COMMIT",
];

/// The one statement of `b2` (`b2_hot_conditional_cte.sql`).
const ONE_STATEMENT: &[&str] = &[
    "WITH u AS (UPDATE accounts SET balance = balance - 1 WHERE id = $1 AND balance >= 1 RETURNING id) INSERT INTO payments(account_id, amount, status, idempotency_key) SELECT id, 1, 'captured', gen_random_uuid()::text FROM u",
];

/// pg-limits.md's `schema.sql`, run one statement at a time: `VACUUM`
/// cannot run inside the implicit transaction of a multi-statement string.
const SETUP: &[&str] = &[
    "DROP SCHEMA IF EXISTS raw_baseline CASCADE",
    "CREATE SCHEMA raw_baseline",
    "CREATE TABLE accounts(
  id      bigint PRIMARY KEY,
  balance bigint NOT NULL CHECK (balance >= 0),
  version bigint NOT NULL DEFAULT 0
)",
    "CREATE TABLE payments(
  id              bigserial PRIMARY KEY,
  account_id      bigint,
  amount          bigint,
  status          text,
  idempotency_key text UNIQUE,
  created_at      timestamptz DEFAULT now()
)",
    "INSERT INTO accounts(id, balance) SELECT g, 1000000000000 FROM generate_series(1, 10000) g",
    "VACUUM ANALYZE accounts",
];

impl Pattern {
    /// The statements of one transaction, in order.
    pub fn statements(self) -> &'static [&'static str] {
        match self {
            Pattern::A | Pattern::C => FOR_UPDATE,
            Pattern::B2 => ONE_STATEMENT,
        }
    }

    /// The statement whose affected rows are the payments the transaction
    /// made: its `INSERT` (a movement counts only once its commit returned).
    fn payment_statement(self) -> usize {
        self.statements().iter().position(|sql| sql.contains("INSERT INTO payments")).expect("every pattern pays")
    }

    /// The account a client's `n`-th transaction pays from.
    pub fn account(self, client: u64, n: u64) -> i64 {
        match self {
            Pattern::A | Pattern::B2 => HOT_ACCOUNT,
            // pgbench's `random(1, 10000)`: uniform; the bias of a modulo of
            // 64 random bits by 10^4 is below 10^-15.
            Pattern::C => i64::try_from(1 + splitmix(client, n) % ACCOUNTS).expect("below 10^4"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Pattern::A => "a",
            Pattern::B2 => "b2",
            Pattern::C => "c",
        }
    }
}

/// Whether `sql` takes the account as its parameter `$1`.
fn takes_account(sql: &str) -> bool {
    sql.contains("$1")
}

/// SplitMix64 of the client and its step: deterministic, so two runs pay
/// from the same accounts, and no dependency on a random-number crate.
fn splitmix(client: u64, n: u64) -> u64 {
    let mut z = (client << 40 ^ n).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the baseline's clients saw.
struct Outcome {
    histogram: Histogram<u64>,
    /// Transactions whose commit returned.
    committed: u64,
    /// Payments those transactions inserted.
    movements: u64,
    errors: u64,
}

/// Runs `pattern` with `clients` connections for `duration` or until the
/// shared `budget` of transactions is spent, prints the report and checks
/// the tables; `Ok(false)` when a check failed.
pub async fn run(
    pattern: Pattern,
    database_url: &str,
    clients: u64,
    duration: Option<Duration>,
    budget: u64,
) -> Result<bool, String> {
    let options: PgConnectOptions = database_url.parse().map_err(|e| format!("--database-url: {e}"))?;
    // The statements name `accounts` and `payments` unqualified, as in
    // pg-limits.md; the schema is chosen per connection instead.
    let options = options.options([("search_path", SCHEMA)]);
    setup(&options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(clients).map_err(|_| "too many clients")?)
        .min_connections(0)
        .connect_with(options.clone())
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    // Every connection is opened before the clock starts, like pgbench's.
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(pool.acquire().await.map_err(|e| format!("opening a connection: {e}"))?);
    }
    let budget = Arc::new(AtomicU64::new(budget));
    // The clock starts after the setup, so the run lasts its full duration.
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut tasks = Vec::new();
    for (c, connection) in (0u64..).zip(connections) {
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = connection;
            client(pattern, c, &mut connection, deadline, &budget).await
        }));
    }
    let mut outcome = Outcome { histogram: summary::histogram(), committed: 0, movements: 0, errors: 0 };
    for task in tasks {
        let one = task.await.map_err(|e| format!("client task: {e}"))?;
        outcome.histogram.add(&one.histogram).map_err(|e| e.to_string())?;
        outcome.committed += one.committed;
        outcome.movements += one.movements;
        outcome.errors += one.errors;
    }
    let elapsed_ms = summary::elapsed_ms(started.elapsed());
    report(pattern, clients, elapsed_ms, &outcome);
    let ok = verify(&pool, &outcome).await?;
    // Leave the service's database as it was found: the baseline's rows are
    // of no use after its report.
    sqlx::raw_sql("DROP SCHEMA IF EXISTS raw_baseline CASCADE")
        .execute(&pool)
        .await
        .map_err(|e| format!("dropping {SCHEMA}: {e}"))?;
    pool.close().await;
    let ok = ok && outcome.errors == 0;
    println!("verdict    {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}

/// Creates and fills the tables, then checkpoints, as pg-limits.md did
/// before every run, so the run does not pay for the setup's dirty pages.
async fn setup(options: &PgConnectOptions) -> Result<(), String> {
    let mut connection = PgConnection::connect_with(options).await.map_err(|e| format!("connecting: {e}"))?;
    for sql in SETUP {
        sqlx::raw_sql(*sql).execute(&mut connection).await.map_err(|e| format!("setting up {SCHEMA}: {e}"))?;
    }
    // Only a superuser (or pg_checkpoint) may; without it the run is still valid.
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&mut connection).await {
        eprintln!("raw: CHECKPOINT refused ({e}); running without it");
    }
    connection.close().await.map_err(|e| e.to_string())
}

/// One client: the pattern's transaction over and over on its connection.
async fn client(
    pattern: Pattern,
    c: u64,
    connection: &mut PgConnection,
    deadline: Option<Instant>,
    budget: &AtomicU64,
) -> Outcome {
    let mut outcome = Outcome { histogram: summary::histogram(), committed: 0, movements: 0, errors: 0 };
    let mut n = 0u64;
    while outcome.errors < ERRORS_PER_CLIENT_MAX {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_err() {
            break;
        }
        n += 1;
        let account = pattern.account(c, n);
        let started = Instant::now();
        match transaction(pattern, connection, account).await {
            Ok(paid) => {
                summary::record_latency(&mut outcome.histogram, started.elapsed());
                outcome.committed += 1;
                outcome.movements += paid;
            }
            Err(error) => {
                outcome.errors += 1;
                if outcome.errors <= ERRORS_PRINTED_MAX {
                    eprintln!("raw client {c}: {error}");
                }
                // A failed statement leaves the transaction aborted; end it
                // so the next one starts clean (an error here means the
                // connection is gone, and the next attempt will say so).
                if pattern.statements().len() > 1 {
                    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await;
                }
            }
        }
    }
    outcome
}

/// Runs one transaction; the payments it made once its commit returned.
async fn transaction(pattern: Pattern, connection: &mut PgConnection, account: i64) -> Result<u64, sqlx::Error> {
    let mut paid = 0;
    for (i, sql) in pattern.statements().iter().enumerate() {
        let query = sqlx::query(*sql);
        let query = if takes_account(sql) { query.bind(account) } else { query };
        let done = connection.execute(query).await?;
        if i == pattern.payment_statement() {
            paid = done.rows_affected();
        }
    }
    Ok(paid)
}

fn report(pattern: Pattern, clients: u64, elapsed_ms: u64, outcome: &Outcome) {
    println!("workload   raw {}, {clients} clients, {elapsed_ms} ms", pattern.name());
    println!("transactions {}  ({} tx/s)", outcome.committed, summary::per_second(outcome.committed, elapsed_ms));
    println!("{}", summary::latency_line(&outcome.histogram));
    println!("errors     {}", outcome.errors);
    println!("{}", summary::movements_line(outcome.movements, elapsed_ms));
}

/// Every payment a client saw commit is a row, and every row took exactly
/// one unit from its account: the baseline measured real, durable work.
async fn verify(pool: &PgPool, outcome: &Outcome) -> Result<bool, String> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM payments)::bigint, \
         (SELECT coalesce(sum($1 - balance), 0) FROM accounts)::bigint",
    )
    .bind(INITIAL_BALANCE)
    .fetch_one(pool)
    .await
    .map_err(|e| format!("checking {SCHEMA}: {e}"))?;
    let rows: i64 = row.get(0);
    let debited: i64 = row.get(1);
    let expected = i64::try_from(outcome.movements).expect("fits");
    if rows == expected && debited == expected {
        println!("check      {rows} payments = committed payments = debited units  ok");
        return Ok(true);
    }
    println!(
        "check      {rows} payment rows, {debited} units debited, {expected} payments seen committed  FAIL \
         (an error after a commit was sent can leave one more row than seen)"
    );
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn each_pattern_runs_its_own_statements() {
        assert_eq!(Pattern::A.statements().len(), 5);
        assert_eq!(Pattern::A.statements(), Pattern::C.statements(), "c is a's transaction on spread accounts");
        assert_eq!(Pattern::B2.statements().len(), 1, "b2 is one autocommit statement");
        assert!(Pattern::B2.statements()[0].starts_with("WITH u AS (UPDATE accounts"));
        assert!(Pattern::A.statements()[1].ends_with("FOR UPDATE"));
        assert_eq!(Pattern::A.statements().first(), Some(&"BEGIN"));
        assert_eq!(Pattern::A.statements().last(), Some(&"COMMIT"));
    }

    #[test]
    fn only_statements_with_a_parameter_are_bound() {
        let bound: Vec<bool> = Pattern::A.statements().iter().map(|s| takes_account(s)).collect();
        assert_eq!(bound, [false, true, true, true, false]);
        assert!(takes_account(Pattern::B2.statements()[0]));
    }

    #[test]
    fn the_payment_is_counted_at_the_insert() {
        assert_eq!(Pattern::A.payment_statement(), 3);
        assert_eq!(Pattern::B2.payment_statement(), 0);
    }

    #[test]
    fn hot_patterns_pay_from_one_account_spread_over_all() {
        for n in 1..100 {
            assert_eq!(Pattern::A.account(n % 7, n), HOT_ACCOUNT);
            assert_eq!(Pattern::B2.account(n % 7, n), HOT_ACCOUNT);
        }
        let ids: Vec<i64> = (0..16).flat_map(|c| (1..=2_000).map(move |n| Pattern::C.account(c, n))).collect();
        assert!(ids.iter().all(|id| (1..=10_000).contains(id)));
        let distinct: BTreeSet<i64> = ids.iter().copied().collect();
        // 32,000 uniform draws over 10,000 ids hit about 96 % of them.
        assert!(distinct.len() > 9_000, "only {} distinct accounts", distinct.len());
        assert!(distinct.contains(&1) && distinct.contains(&10_000), "both ends reachable");
    }

    #[test]
    fn the_schema_is_pg_limits_schema_in_its_own_namespace() {
        assert_eq!(SETUP[1], format!("CREATE SCHEMA {SCHEMA}"));
        assert!(SETUP[4].contains("generate_series(1, 10000)") && SETUP[4].contains(&INITIAL_BALANCE.to_string()));
        assert_eq!(ACCOUNTS, 10_000);
    }
}
