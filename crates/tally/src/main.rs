//! `tally`: the service binary.
//!
//! - `tally serve` runs the HTTP API, on PostgreSQL (its own private cluster
//!   by default, or `--database-url`) or on the in-memory store.
//! - `tally migrate` applies the schema.
//! - `tally check` runs the invariant checker on a live database.
//! - `tally load` drives a running server and checks the outcome, or runs
//!   the raw-SQL baseline it is compared with (`--raw`).
//!
//! The service's logic lives in the library crates (`tally-core`'s use
//! cases, `tally-http`'s router, the stores, `tally-load`'s clients); this
//! binary only parses the command line and wires them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tally::{check, load, serve};

#[derive(Debug, Parser)]
#[command(name = "tally", version, about = "A payment backend that never charges twice")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(serve::ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(serve::MigrateArgs),
    /// Drive a running server with concurrent clients, then check the invariants
    /// (or, with `--raw`, run a raw-SQL payment pattern as the baseline).
    Load(load::LoadArgs),
    /// Run the fake payment gateway (a second confirm of a key answers ALREADY_PROCESSED_PAYMENT).
    GatewaySim(serve::GatewaySimArgs),
    /// Run the invariant checker on a live database; exit non-zero on a violation.
    Check(check::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await.map(|()| true),
            Command::Migrate(args) => serve::migrate(args).await.map(|()| true),
            Command::Load(args) => load::run(args).await,
            Command::GatewaySim(args) => serve::gateway_sim(args).await.map(|()| true),
            Command::Check(args) => check::check(args).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("tally: {error}");
            ExitCode::FAILURE
        }
    }
}
