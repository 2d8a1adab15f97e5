//! A command run in the background with its output in files, for tests that expect it to
//! fail at start (a second agent) or to run a while: waits for its exit with a deadline and
//! kills it on drop, also when a test panics.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::unique;

pub struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    /// Spawns `cmd` with stdin closed and stdout/stderr in temporary files.
    pub fn spawn(cmd: &mut Command) -> Self {
        let base = std::env::temp_dir().join(unique("cns-bg-"));
        let (stdout, stderr) = (base.with_extension("out"), base.with_extension("err"));
        let file = |p: &PathBuf| std::fs::File::create(p).expect("create output file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, waiting at most `timeout`; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL after 5 s; its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if matches!(self.child.try_wait(), Ok(None)) {
            _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let status = self.wait_exit(Duration::from_secs(5));
        _ = self.child.kill();
        status.or_else(|| self.child.wait().ok())
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- {} stderr ---\n{}", self.child.id(), self.stderr());
        }
        _ = std::fs::remove_file(&self.stdout);
        _ = std::fs::remove_file(&self.stderr);
    }
}
