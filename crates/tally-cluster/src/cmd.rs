//! Running the external PostgreSQL programs: as which user, with which
//! environment, and never for longer than a deadline.

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::ClusterError;

/// The unprivileged account the server programs run as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// A command for one of the PostgreSQL programs.
///
/// The `PG*` variables are removed so a developer's `PGHOST` or `PGDATA`
/// cannot point our commands at some other server, and messages are in the
/// C locale so they read the same everywhere.
pub(crate) fn command(program: &Path, run_as: Option<&RunAs>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C").stdin(Stdio::null()).current_dir("/");
    if let Some(user) = run_as {
        // `uid` also drops root's supplementary groups (std does setgroups(0)).
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd
}

/// The command line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Runs `cmd` to completion, killing it at `timeout`; any exit status is `Ok`.
pub(crate) fn run_unchecked(cmd: &mut Command, timeout: Duration) -> Result<Output, ClusterError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ClusterError::io(format!("could not run `{command}`")))?;

    // Drain both pipes on their own threads: a child that fills a pipe
    // nobody reads would block and look like a hang.
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    if let Some(out) = child.stdout.take() {
        drain(out, true, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        drain(err, false, tx);
    } else {
        drop(tx);
    }

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ClusterError::Timeout { command, timeout });
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(ClusterError::io(format!("waiting for `{command}`"))(e)),
        }
    };

    // A grandchild that kept our pipes open would block the readers forever;
    // give them a moment and take what they have.
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let collect_until = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        let left = collect_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, bytes)) => stdout = bytes,
            Ok((false, bytes)) => stderr = bytes,
            Err(_) => break,
        }
    }
    Ok(Output { status, stdout, stderr })
}

/// Runs `cmd` and turns an unsuccessful exit into [`ClusterError::CommandFailed`].
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, ClusterError> {
    let out = run_unchecked(cmd, timeout)?;
    if out.status.success() { Ok(out) } else { Err(failed(cmd, &out)) }
}

pub(crate) fn failed(cmd: &Command, out: &Output) -> ClusterError {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let output = if stderr.is_empty() { String::from_utf8_lossy(&out.stdout).trim().to_owned() } else { stderr };
    ClusterError::CommandFailed { command: describe(cmd), status: out.status.to_string(), output }
}

fn drain(mut pipe: impl Read + Send + 'static, is_stdout: bool, tx: mpsc::Sender<(bool, Vec<u8>)>) {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send((is_stdout, buf));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_a_command_past_its_deadline() {
        let mut cmd = command(Path::new("/bin/sleep"), None);
        cmd.arg("10");
        let started = Instant::now();
        let err = run(&mut cmd, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ClusterError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reports_failure_with_output() {
        let mut cmd = command(Path::new("/bin/sh"), None);
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let err = run(&mut cmd, Duration::from_secs(10)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("boom") && msg.contains('3'), "{msg}");
    }
}
