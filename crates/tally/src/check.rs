//! `tally check`: what an operator runs after an incident. It reads one
//! consistent snapshot of a live database (REPEATABLE READ, read only: it
//! changes nothing and takes no lock a request waits for) and runs the
//! core's invariant checker over it — the same checker every proof uses.

use tally_core::check;
use tally_core::store::Store;
use tally_pg::{PgConfig, PgStore};

use crate::serve::{DatabaseArgs, open_database};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Prints what was read and every violation; `Ok(false)` when any invariant
/// is broken (the exit status is then non-zero).
pub async fn check(args: CheckArgs) -> Result<bool, String> {
    let (url, cluster) =
        tokio::task::spawn_blocking(move || open_database(&args.database)).await.map_err(|e| e.to_string())??;
    let store = PgStore::connect_lazy(&url, PgConfig { max_connections: 1, ..PgConfig::default() })
        .map_err(|e| e.to_string())?;
    let snapshot = store.snapshot().await.map_err(|e| format!("reading a snapshot: {e}"))?;
    drop(cluster);
    println!("read {}", snapshot.summary());
    let violations = check::check(&snapshot);
    for violation in &violations {
        println!("VIOLATION {violation}");
    }
    println!("violations: {}", violations.len());
    Ok(violations.is_empty())
}
