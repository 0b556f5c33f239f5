//! Finding the installed PostgreSQL programs.
//!
//! The lookup is data, not ambient state: [`BinSearch`] carries the `PATH`
//! value and the install directories to try, so a caller (or a test) can
//! search exactly where it wants without touching the process environment.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::ClusterError;

/// Where to look for `initdb` and `pg_ctl` when no `bin_dir` is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinSearch {
    /// A `PATH`-style list searched first; `None` means the process's `PATH`.
    /// `Some` of an empty string searches no `PATH` at all.
    pub path: Option<OsString>,
    /// Install directories tried after `PATH`, in order.
    pub dirs: Vec<PathBuf>,
}

impl Default for BinSearch {
    /// The process's `PATH`, then [`default_install_dirs`].
    fn default() -> Self {
        Self { path: None, dirs: default_install_dirs() }
    }
}

impl BinSearch {
    /// A search that looks nowhere: only useful to exercise the error path.
    pub fn nowhere() -> Self {
        Self { path: Some(OsString::new()), dirs: Vec::new() }
    }
}

/// The PostgreSQL programs this crate runs, all from one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBins {
    /// The directory holding the server programs.
    pub dir: PathBuf,
    /// `initdb`.
    pub initdb: PathBuf,
    /// `pg_ctl`.
    pub pg_ctl: PathBuf,
    /// `psql`, from `dir` when it is there, else from the searched `PATH`.
    pub psql: PathBuf,
}

/// The usual install directories, existing ones only, newest version first
/// within each family.
pub fn default_install_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // Debian and Ubuntu: /usr/lib/postgresql/<major>/bin.
    dirs.extend(versioned(Path::new("/usr/lib/postgresql"), "", "bin"));
    // Source builds.
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    // Homebrew on Apple silicon and on Intel: opt/postgresql@<major>/bin.
    dirs.extend(versioned(Path::new("/opt/homebrew/opt"), "postgresql", "bin"));
    dirs.extend(versioned(Path::new("/usr/local/opt"), "postgresql", "bin"));
    // The PGDG packages for RHEL and Fedora: /usr/pgsql-<major>/bin.
    dirs.extend(versioned(Path::new("/usr"), "pgsql-", "bin"));
    dirs.retain(|d| d.is_dir());
    dirs
}

/// `parent/<prefix><version>/<leaf>` for every such entry, newest version first.
fn versioned(parent: &Path, prefix: &str, leaf: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(prefix)?;
            Some((version_key(rest), e.path().join(leaf)))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().map(|(_, p)| p).collect()
}

/// "16", "9.6", "@17" → comparable numbers; anything without digits sorts last.
fn version_key(s: &str) -> Vec<u32> {
    let digits = s.trim_start_matches(|c: char| !c.is_ascii_digit());
    digits
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `initdb`, `pg_ctl` and `psql`.
///
/// With `bin_dir`, only that directory is used for the server programs.
/// Otherwise the first directory of `search` (its `PATH`, then its `dirs`)
/// holding both `initdb` and `pg_ctl` wins.
pub fn find_binaries(bin_dir: Option<&Path>, search: &BinSearch) -> Result<PgBins, ClusterError> {
    let path_dirs: Vec<PathBuf> = match &search.path {
        Some(p) => std::env::split_paths(p).collect(),
        None => std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default(),
    };
    let path_dirs: Vec<PathBuf> = path_dirs.into_iter().filter(|d| !d.as_os_str().is_empty()).collect();

    let candidates: Vec<PathBuf> = match bin_dir {
        Some(d) => vec![d.to_path_buf()],
        None => path_dirs.iter().chain(search.dirs.iter()).cloned().collect(),
    };

    for dir in &candidates {
        if !(is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))) {
            continue;
        }
        // PATH often holds symlinks (Debian's /usr/local/bin here, Homebrew's
        // /opt/homebrew/bin); take the programs from the directory they point
        // into, so every program comes from the same installation.
        let dir = match fs::canonicalize(dir.join("initdb")) {
            Ok(real) => match real.parent() {
                Some(p) if is_executable(&p.join("pg_ctl")) => p.to_path_buf(),
                _ => dir.clone(),
            },
            Err(_) => dir.clone(),
        };
        let psql = std::iter::once(&dir).chain(path_dirs.iter()).map(|d| d.join("psql")).find(|p| is_executable(p));
        let Some(psql) = psql else {
            tracing::debug!(dir = %dir.display(), "initdb and pg_ctl found, but no psql beside them or on PATH");
            continue;
        };
        return Ok(PgBins { initdb: dir.join("initdb"), pg_ctl: dir.join("pg_ctl"), psql, dir });
    }
    Err(ClusterError::NotInstalled { searched: candidates })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_order_newest_first() {
        assert_eq!(version_key("16"), vec![16]);
        assert_eq!(version_key("9.6"), vec![9, 6]);
        assert_eq!(version_key("@17"), vec![17]);
        assert_eq!(version_key(""), Vec::<u32>::new());
        assert!(version_key("16") > version_key("9.6"));
    }

    #[test]
    fn empty_search_is_not_installed() {
        let err = find_binaries(None, &BinSearch::nowhere()).unwrap_err();
        assert!(matches!(err, ClusterError::NotInstalled { ref searched } if searched.is_empty()));
    }
}
