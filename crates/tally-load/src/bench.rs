//! `tally bench`: every workload × every strategy × client counts, plus the
//! raw-SQL baselines, in one run on one private PostgreSQL cluster.
//!
//! For each strategy (the redis strategy once per lock flavour: seed 002's
//! simple, spin and pub/sub locks, each `tally serve` with its own private
//! `redis-server`), batched (group commit at `serve`'s default) and
//! unbatched (`--batch-max 1`), the bench starts `tally serve` (this same
//! binary) on a fresh database of the cluster, then runs `tally load` once
//! per workload and client count against it. Each row is one such run:
//! throughput, p50/p99, errors (5xx answers and requests without an answer),
//! retries (the store's conflicts during the row, from the server's
//! `/metrics`), and the verdict: the load's own checks through the API and
//! the core's invariant checker on the database after the row. The raw-SQL
//! baselines of pg-limits.md (`tally load --raw`) run on the same cluster.
//!
//! Every run is a child process, so a row measures what a deployment would
//! see, and a crash or a hang (bounded by a timeout) fails one row only.
//! Writes `results.csv` and `comparison.svg` into `--out`, and prints the
//! table. The figures are integers (req/s) and the load's two-decimal
//! milliseconds, kept as text: no floats.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tally_pg::Strategy;
use tally_redis::Flavour;

/// The workloads every strategy runs, by their `tally load` names.
const WORKLOADS: [&str; 5] = ["hot", "spread", "duplicates", "last-unit", "one-seat"];
/// The raw-SQL patterns, and the workload each is the baseline of.
const RAW: [(&str, &str); 3] = [("a", "hot"), ("b2", "hot"), ("c", "spread")];
const CLIENTS_FULL: [u64; 4] = [1, 16, 64, 256];
const CLIENTS_QUICK: [u64; 2] = [1, 64];
const DURATION_FULL: Duration = Duration::from_secs(10);
const DURATION_QUICK: Duration = Duration::from_secs(2);
/// A row's setup (users, wallets, products) and checks come on top of its
/// duration; a row that takes longer than this beyond it is killed and fails.
const ROW_SLACK: Duration = Duration::from_secs(180);
/// How long a server may take to answer `/readyz` after it was started.
const SERVER_START_MAX: Duration = Duration::from_secs(60);
const ADMIN_KEY: &str = "tly_bench_admin";

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Write results.csv and comparison.svg here (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Client counts 1 and 64, 2 s per row (under 10 minutes on 2 cores);
    /// otherwise 1, 16, 64 and 256, 10 s per row.
    #[arg(long)]
    pub quick: bool,
}

/// One row of the table.
#[derive(Clone, Debug)]
struct Row {
    workload: &'static str,
    /// `pessimistic`, `pessimistic/unbatched`, …, or `raw-a`.
    series: String,
    clients: u64,
    requests: u64,
    per_second: u64,
    p50_ms: String,
    p99_ms: String,
    errors: u64,
    retries: u64,
    pass: bool,
}

/// What one `tally serve` runs: a strategy, and for the redis strategy its
/// lock flavour.
#[derive(Clone, Copy, Debug)]
struct Deployment {
    strategy: Strategy,
    redis_lock: Option<Flavour>,
}

impl Deployment {
    /// Every strategy PostgreSQL carries out alone, then redis in each flavour.
    fn all() -> Vec<Deployment> {
        let alone = Strategy::ALL.into_iter().map(|strategy| Deployment { strategy, redis_lock: None });
        let redis = Flavour::ALL.into_iter().map(|f| Deployment { strategy: Strategy::Redis, redis_lock: Some(f) });
        alone.chain(redis).collect()
    }

    /// `pessimistic`, …, `redis-simple`, `redis-spin`, `redis-pubsub`.
    fn name(self) -> String {
        match self.redis_lock {
            None => self.strategy.as_str().to_owned(),
            Some(flavour) => format!("{}-{}", self.strategy.as_str(), flavour.as_str()),
        }
    }
}

/// A `tally serve` child process, killed when dropped.
struct Server {
    child: tokio::process::Child,
    base: String,
}

impl Server {
    async fn start(
        exe: &Path,
        url: &str,
        deployment: Deployment,
        batch_max: Option<u32>,
        log: &Path,
    ) -> Result<Server, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(["serve", "--database-url", url, "--strategy", deployment.strategy.as_str()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("TALLY_ADMIN_KEY", ADMIN_KEY)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(n) = batch_max {
            command.args(["--batch-max", &n.to_string()]);
        }
        if let Some(flavour) = deployment.redis_lock {
            command.args(["--redis-lock", flavour.as_str()]);
        }
        let child = command.spawn().map_err(|e| format!("starting tally serve: {e}"))?;
        let server = Server { child, base: format!("http://127.0.0.1:{port}") };
        let started = std::time::Instant::now();
        while started.elapsed() < SERVER_START_MAX {
            if server.api().ready().await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("tally serve ({}) was not ready within {} s", deployment.name(), SERVER_START_MAX.as_secs()))
    }

    /// The store's conflicts so far (0 before the first).
    async fn conflicts(&self) -> u64 {
        // Prometheus text, not JSON: read raw through the same client.
        let request = http::Request::get("/metrics").body(Vec::new()).expect("a plain GET");
        let Ok(reply) = self.api().raw(request).await else { return 0 };
        counter(&String::from_utf8_lossy(reply.body()), tally_pg::CONFLICTS_TOTAL)
    }

    /// The server's API, sent once per call (a probe that fails is probed again).
    fn api(&self) -> tally_client::Client<tally_client::ReqwestTransport> {
        let transport = tally_client::ReqwestTransport::new(reqwest::Client::new(), &self.base);
        tally_client::Client::new(transport).with_retry(tally_client::Retry::NEVER)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A Prometheus counter's value in `text` (0 if absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| line.split_whitespace().next() == Some(name))
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|value| value.split('.').next()?.parse::<u64>().ok())
        .sum()
}

/// The rest of the report line that starts with `label`.
fn line<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(label).filter(|rest| rest.starts_with(' ')).map(str::trim))
}

/// `N  (R unit/s)` → (N, R).
fn count_and_rate(text: &str) -> Option<(u64, u64)> {
    let count = text.split_whitespace().next()?.parse().ok()?;
    let rate = text.split('(').nth(1)?.split_whitespace().next()?.parse().ok()?;
    Some((count, rate))
}

/// Reads one `tally load` report into a row (`pass` only with a PASS verdict).
fn parse(out: &str, workload: &'static str, series: String, clients: u64, retries: u64) -> Row {
    let (requests, per_second) =
        line(out, "requests").or_else(|| line(out, "transactions")).and_then(count_and_rate).unwrap_or((0, 0));
    let latency: Vec<&str> = line(out, "latency").map(|l| l.split_whitespace().collect()).unwrap_or_default();
    let at = |label: &str| {
        latency
            .iter()
            .position(|t| *t == label)
            .and_then(|i| latency.get(i + 1))
            .map_or("-".to_owned(), |v| (*v).to_owned())
    };
    let server_errors: u64 = line(out, "statuses")
        .map(|s| {
            s.split(", ")
                .filter_map(|pair| pair.split_once(": "))
                .filter(|(status, _)| status.starts_with('5'))
                .filter_map(|(_, n)| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // Requests without an answer (the client's stderr) and the raw baseline's errors.
    let unanswered =
        u64::try_from(out.lines().filter(|l| l.starts_with("client ") || l.starts_with("raw client ")).count())
            .unwrap_or(u64::MAX);
    let raw_errors = line(out, "errors").and_then(|e| e.parse::<u64>().ok()).unwrap_or(0);
    Row {
        workload,
        series,
        clients,
        requests,
        per_second,
        p50_ms: at("p50"),
        p99_ms: at("p99"),
        errors: server_errors + unanswered + raw_errors,
        retries,
        pass: line(out, "verdict") == Some("PASS"),
    }
}

/// Runs `tally load` with `args`, bounded by `duration` + [`ROW_SLACK`];
/// its stdout and stderr together.
async fn load(exe: &Path, args: &[String], duration: Duration) -> String {
    let mut command = tokio::process::Command::new(exe);
    command.arg("load").args(args).env("TALLY_ADMIN_KEY", ADMIN_KEY).stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(duration + ROW_SLACK, command.output()).await {
        Ok(Ok(output)) => {
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
        }
        Ok(Err(error)) => format!("could not run tally load: {error}"),
        Err(_) => "tally load timed out".to_owned(),
    }
}

/// Runs the whole bench; `Ok(false)` when a row failed.
pub async fn run(args: BenchArgs) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let (clients, duration): (&[u64], Duration) =
        if args.quick { (&CLIENTS_QUICK, DURATION_QUICK) } else { (&CLIENTS_FULL, DURATION_FULL) };
    let seconds = format!("{}s", duration.as_secs());
    let config = tally_cluster::ClusterConfig::throwaway().with_max_connections(600);
    let cluster = tally_cluster::Cluster::start(config).map_err(|e| format!("starting PostgreSQL: {e}"))?;
    let batches: [Option<u32>; 2] = [None, Some(1)];
    let deployments = Deployment::all();
    let total = (deployments.len() * batches.len() * WORKLOADS.len() + RAW.len()) * clients.len();
    let progress = ProgressBar::new(u64::try_from(total).unwrap_or(u64::MAX));
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} rows  {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    for deployment in deployments {
        for batch_max in batches {
            let series = match batch_max {
                None => deployment.name(),
                Some(_) => format!("{}/unbatched", deployment.name()),
            };
            let database = database_name(&series);
            cluster.create_database(&database).map_err(|e| e.to_string())?;
            let url = cluster.url_for(&database);
            let log = args.out.join(format!("serve-{}.log", series.replace('/', "-")));
            let server = Server::start(&exe, &url, deployment, batch_max, &log).await?;
            for workload in WORKLOADS {
                for &n in clients {
                    progress.set_message(format!("{series} {workload} x{n}"));
                    let before = server.conflicts().await;
                    let load_args: Vec<String> = [
                        "--url",
                        &server.base,
                        "--workload",
                        workload,
                        "--clients",
                        &n.to_string(),
                        "--duration",
                        &seconds,
                        "--database-url",
                        &url,
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    let out = load(&exe, &load_args, duration).await;
                    let retries = server.conflicts().await.saturating_sub(before);
                    let row = parse(&out, workload, series.clone(), n, retries);
                    keep(&progress, &args.out, &row, &out)?;
                    rows.push(row);
                }
            }
            server.stop().await;
        }
    }
    cluster.create_database("bench_raw").map_err(|e| e.to_string())?;
    let url = cluster.url_for("bench_raw");
    for (pattern, workload) in RAW {
        for &n in clients {
            progress.set_message(format!("raw {pattern} x{n}"));
            let load_args: Vec<String> =
                ["--raw", pattern, "--clients", &n.to_string(), "--duration", &seconds, "--database-url", &url]
                    .map(str::to_owned)
                    .to_vec();
            let out = load(&exe, &load_args, duration).await;
            let row = parse(&out, workload, format!("raw-{pattern}"), n, 0);
            keep(&progress, &args.out, &row, &out)?;
            rows.push(row);
        }
    }
    progress.finish_and_clear();
    drop(cluster);
    std::fs::write(args.out.join("results.csv"), csv(&rows)).map_err(|e| format!("writing results.csv: {e}"))?;
    plot(&args.out.join("comparison.svg"), &rows, clients)?;
    print!("{}", table(&rows));
    println!("wrote {} and {}", args.out.join("results.csv").display(), args.out.join("comparison.svg").display());
    Ok(rows.iter().all(|r| r.pass))
}

/// Shows a finished row above the progress bar; a failed row's whole report
/// goes to `failures.log` beside the results.
fn keep(progress: &ProgressBar, out: &Path, row: &Row, report: &str) -> Result<(), String> {
    progress.inc(1);
    let line = format!(
        "{:<24} {:<10} {:>4} clients  {:>7} req/s  p99 {:>8} ms  {}",
        row.series,
        row.workload,
        row.clients,
        row.per_second,
        row.p99_ms,
        verdict(row)
    );
    // Without a terminal the bar is hidden, and so is what it would print.
    if progress.is_hidden() {
        println!("{line}")
    } else {
        progress.println(line)
    }
    if !row.pass {
        let path = out.join("failures.log");
        let mut log = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = writeln!(log, "== {} {} x{}\n{report}", row.series, row.workload, row.clients);
        std::fs::write(&path, log).map_err(|e| format!("writing failures.log: {e}"))?;
    }
    Ok(())
}

fn verdict(row: &Row) -> &'static str {
    if row.pass { "PASS" } else { "FAIL" }
}

/// A row's cells, in the order of [`COLUMNS`].
fn cells(r: &Row) -> Vec<String> {
    let mut cells = vec![r.workload.to_owned(), r.series.clone()];
    cells.extend([r.clients, r.requests, r.per_second].map(|n| n.to_string()));
    cells.extend([r.p50_ms.clone(), r.p99_ms.clone()]);
    cells.extend([r.errors, r.retries].map(|n| n.to_string()));
    cells.push(verdict(r).to_owned());
    cells
}

const COLUMNS: [&str; 10] =
    ["workload", "strategy", "clients", "requests", "per_second", "p50_ms", "p99_ms", "errors", "retries", "verdict"];

fn csv(rows: &[Row]) -> String {
    let mut text = COLUMNS.join(",") + "\n";
    for r in rows {
        let _ = writeln!(text, "{}", cells(r).join(","));
    }
    text
}

/// The table, as Markdown (so docs/ can take it as printed). `per_second`
/// is requests/s, or the raw baseline's transactions/s.
fn table(rows: &[Row]) -> String {
    let mut text = format!("| {} |\n|---|---|{}---|\n", COLUMNS.join(" | "), "---:|".repeat(7));
    for r in rows {
        let _ = writeln!(text, "| {} |", cells(r).join(" | "));
    }
    text
}

/// One panel per workload (and one for the raw baselines): throughput
/// against client count, one line per strategy.
fn plot(path: &Path, rows: &[Row], clients: &[u64]) -> Result<(), String> {
    use plotters::prelude::*;
    let failed = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (1500, 950)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let panels = root.split_evenly((2, 3));
    let raw = "raw SQL";
    let titles = WORKLOADS.iter().copied().chain([raw]);
    let last = u32::try_from(clients.len().saturating_sub(1)).unwrap_or(0).max(1);
    for (panel, title) in panels.iter().zip(titles) {
        let mine: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                if title == raw {
                    r.series.starts_with("raw-")
                } else {
                    r.workload == title && !r.series.starts_with("raw-")
                }
            })
            .collect();
        let top = mine.iter().map(|r| r.per_second).max().unwrap_or(0).max(10) / 10 * 11;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{title}: req/s (raw: tx/s)"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0u32..last, 0u64..top)
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_labels(clients.len())
            .x_label_formatter(&|i| clients.get(usize::try_from(*i).unwrap_or(0)).map_or(String::new(), u64::to_string))
            .x_desc("clients")
            .draw()
            .map_err(|e| failed(&e))?;
        let mut series: Vec<&str> = mine.iter().map(|r| r.series.as_str()).collect();
        series.dedup();
        for (k, name) in series.into_iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            let points: Vec<(u32, u64)> = mine
                .iter()
                .filter(|r| r.series == name)
                .filter_map(|r| {
                    Some((u32::try_from(clients.iter().position(|c| *c == r.clients)?).ok()?, r.per_second))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| failed(&e))?
                .label(name.to_owned())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(|e| failed(&e))?;
    }
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

/// The database of one series: the cluster takes letters, digits and
/// underscores only (a redis series is `redis-spin/unbatched`).
fn database_name(series: &str) -> String {
    format!("bench_{}", series.replace(['/', '-'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_gets_a_database_name_the_cluster_accepts() {
        for deployment in Deployment::all() {
            for series in [deployment.name(), format!("{}/unbatched", deployment.name())] {
                let name = database_name(&series);
                let valid = name.len() <= 63 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                assert!(valid, "{series} → {name}");
            }
        }
    }

    #[test]
    fn a_load_report_becomes_its_row() {
        let out = "workload   Hot, 16 clients, 2001 ms\nrequests   5000  (2498 req/s)\n\
                   latency    p50 5.12 ms   p99 20.40 ms   max 31.00 ms\nstatuses   201: 4990, 409: 7, 503: 3\n\
                   client 3: /v1/payments: timed out\nverdict    PASS\n";
        let row = parse(out, "hot", "atomic".into(), 16, 4);
        assert_eq!((row.requests, row.per_second, row.errors, row.retries), (5000, 2498, 4, 4));
        assert_eq!((row.p50_ms.as_str(), row.p99_ms.as_str(), row.pass), ("5.12", "20.40", true));
    }

    #[test]
    fn a_report_without_a_pass_verdict_fails_its_row() {
        let row = parse("tally load timed out", "hot", "atomic".into(), 1, 0);
        assert!(!row.pass);
        assert_eq!(row.p99_ms, "-");
    }

    #[test]
    fn the_table_and_the_csv_have_a_cell_per_column() {
        let row = parse("verdict    PASS\n", "hot", "raw-a".into(), 1, 0);
        let table = table(std::slice::from_ref(&row));
        assert!(table.lines().all(|line| line.matches('|').count() == COLUMNS.len() + 1), "{table}");
        assert_eq!(csv(&[row]).lines().nth(1), Some("hot,raw-a,1,0,0,-,-,0,0,PASS"));
    }

    #[test]
    fn the_conflict_counter_is_read_from_the_metrics() {
        let text = "# TYPE tally_store_conflicts_total counter\ntally_store_conflicts_total 12\nhttp_requests_total{a=\"b\"} 3\n";
        assert_eq!(counter(text, tally_pg::CONFLICTS_TOTAL), 12);
        assert_eq!(counter("", tally_pg::CONFLICTS_TOTAL), 0);
    }
}
