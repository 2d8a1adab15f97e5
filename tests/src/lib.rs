//! Test harness for kernel integration tests: a virtual node built from network namespaces
//! ([`VirtualNode`]), the real `cns-agent` binary running inside it ([`AgentProcess`]), and
//! real TCP/UDP traffic between pods ([`traffic`]). Everything is created with unique names
//! and removed on drop, also when a test panics.
//!
//! Tests that need root and BPF call [`kernel_or_skip`]: it prints why and skips when the
//! machine cannot run them, unless `CNS_REQUIRE_KERNEL_TESTS=1` (CI), where it fails.

pub mod agent;
pub mod bench;
pub mod cluster;
pub mod custom_agent;
pub mod fakeapi;
pub mod kernel;
pub mod kube;
pub mod manifests;
pub mod netns;
pub mod packets;
pub mod process;
pub mod sctp;
pub mod traffic;

pub use agent::AgentProcess;
pub use netns::{Family, PodNet, VirtualNode};

/// True when kernel tests can run here; otherwise prints why and returns false, or panics
/// when `CNS_REQUIRE_KERNEL_TESTS=1`.
pub fn kernel_or_skip(test: &str) -> bool {
    let problem = if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else if std::process::Command::new("ip").arg("-V").output().is_err() {
        Some("the `ip` command (iproute2) is missing")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)")
    } else {
        None
    };
    match problem {
        None => true,
        Some(why) => {
            if std::env::var("CNS_REQUIRE_KERNEL_TESTS").is_ok_and(|v| v == "1") {
                panic!("{test}: kernel tests are required (CNS_REQUIRE_KERNEL_TESTS=1) but {why}");
            }
            eprintln!("SKIPPED {test}: {why} (set CNS_REQUIRE_KERNEL_TESTS=1 to make this fail)");
            false
        }
    }
}

/// A name unique to this process and call, short enough for an interface name when
/// prefixed (IFNAMSIZ is 16).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id() % 0xfff)
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("failed to run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 200 ms until it holds or `timeout` passes; whether it held.
pub fn eventually(timeout: std::time::Duration, check: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}
