//! Starts a throwaway cluster, uses it, and stops it; prints what it did.
//!
//! Useful to check the non-root path by hand: build it as root, copy the
//! binary somewhere a normal user can read, and run it as that user.

use tally_cluster::{Cluster, ClusterConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = std::time::Instant::now();
    let cluster = Cluster::start(ClusterConfig::throwaway().fast_unsafe())?;
    println!("url: {}", cluster.url());
    println!("server user: {}", cluster.psql("tally", "SELECT current_user")?);
    cluster.create_database("smoke")?;
    println!("smoke: {}", cluster.psql("smoke", "SELECT current_database()")?);
    let data_dir = cluster.data_dir().to_path_buf();
    cluster.stop()?;
    println!("data dir removed: {}", !data_dir.exists());
    println!("took {:?}", started.elapsed());
    Ok(())
}
