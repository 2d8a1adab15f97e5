//! One agent per pin directory and per control socket, on pins that outlive it.
//!
//! [`claim`] runs first in `cns-agent run`, before anything is loaded, attached or bound:
//! - it takes an exclusive `flock` on the pin directory and on the lock file beside the
//!   control socket ([`paths::pin_lock`], [`paths::socket_lock`]), so a second agent is refused
//!   instead of taking over the interfaces, deleting the maps or the socket under the first;
//! - it refuses a `--socket` path that exists and is not a socket (it would be deleted);
//! - it refuses pins that cannot outlive the process ([`PinDurability`]) unless
//!   `--allow-ephemeral-pins` is given.
//!
//! The locks live as long as the returned [`Claim`]; the kernel drops them when the process
//! dies, so a crash never leaves a stale lock.

use std::{
    fmt,
    fs::File,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use crate::paths;

/// Whether the pinned programs and maps outlive this agent (enforcement goes on while it
/// is down and the next agent takes over) or disappear with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "pins", rename_all = "lowercase")]
pub enum PinDurability {
    /// The pin directory's bpffs is mounted where PID 1 (the host, or the pod's init with the
    /// host's `/sys/fs/bpf` mounted in) sees it.
    Durable,
    /// The bpffs is this process's own (a private mount namespace, as under `ip netns exec`):
    /// when the agent exits the programs detach and enforcement stops.
    Ephemeral { why: String },
}

impl PinDurability {
    pub fn is_durable(&self) -> bool {
        matches!(self, Self::Durable)
    }

    /// `durable` or `ephemeral`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Ephemeral { .. } => "ephemeral",
        }
    }
}

/// The pid holding a lock, when `/proc/locks` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder(pub Option<u32>);

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, " (pid {pid})"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("failed to open {path} to lock it")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path} is in use by another cns-agent{holder}: {hint}")]
    Busy {
        path: PathBuf,
        holder: Holder,
        hint: &'static str,
    },
    #[error(
        "the control socket path {path} exists and is not a socket (it is a {kind}): refusing to replace it; pass a free path to --socket"
    )]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("failed to inspect the control socket path {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the pins in {pin_dir} would not outlive this agent: {why}. When it exits, the programs detach and enforcement stops. Run it in the host's mount namespace (`nsenter --net=/run/netns/NAME cns-agent run ...`, not `ip netns exec`, which gives it a private /sys) or, in Kubernetes, with the host's /sys/fs/bpf mounted (the DaemonSet's hostPath volume); --allow-ephemeral-pins runs it anyway"
    )]
    EphemeralPins { pin_dir: PathBuf, why: String },
}

const PIN_DIR_HINT: &str = "stop it first, or give this agent its own --bpffs-dir";
const SOCKET_HINT: &str = "stop it first, or give this agent its own --socket";

/// For `cns-agent uninstall`: the lock on `pin_dir` when no agent holds it (None when there
/// is no such directory), to hold while removing it.
pub fn lock_idle_pins(pin_dir: &Path) -> Result<Option<Flock<File>>, ClaimError> {
    if !pin_dir.is_dir() {
        return Ok(None);
    }
    lock(
        paths::pin_lock(pin_dir),
        "stop it first (a running agent attaches again at its next resync)",
    )
    .map(Some)
}

/// What `cns-agent run` holds for its whole life: the two locks, and how durable its pins are
/// (for `status` and the metrics).
#[derive(Debug)]
pub struct Claim {
    _pins: Flock<File>,
    _socket: Flock<File>,
    pub durability: PinDurability,
}

/// Locks `pin_dir` (already prepared by `paths::prepare_pin_dir`) and `socket`, checks that
/// the socket path is free or a socket, and that the pins outlive the process (or warns,
/// with `allow_ephemeral`).
pub fn claim(pin_dir: &Path, socket: &Path, allow_ephemeral: bool) -> Result<Claim, ClaimError> {
    let pins = lock(paths::pin_lock(pin_dir), PIN_DIR_HINT)?;
    let durability = pin_durability(pin_dir);
    if let PinDurability::Ephemeral { why } = &durability {
        if !allow_ephemeral {
            return Err(ClaimError::EphemeralPins {
                pin_dir: pin_dir.into(),
                why: why.clone(),
            });
        }
        tracing::warn!(
            pins = %pin_dir.display(),
            %why,
            "EPHEMERAL PINS (--allow-ephemeral-pins): enforcement stops when this agent exits; \
             nothing stays attached and the next agent starts from nothing"
        );
    }
    let socket_lock = claim_socket(socket)?;
    Ok(Claim {
        _pins: pins,
        _socket: socket_lock,
        durability,
    })
}

/// Refuses a socket path that is not a socket, then locks the file beside it (creating the
/// socket's directory 0700 when missing).
fn claim_socket(socket: &Path) -> Result<Flock<File>, ClaimError> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ClaimError::CreateDir {
                path: dir.into(),
                source,
            })?;
    }
    let lock_path = paths::socket_lock(socket);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| ClaimError::Open {
            path: lock_path.clone(),
            source,
        })?;
    let locked = lock_file(file, &lock_path, SOCKET_HINT)?;
    // Checked under the lock: no other agent can bind it between this check and ours.
    match std::fs::symlink_metadata(socket) {
        Ok(m) if !m.file_type().is_socket() => Err(ClaimError::NotASocket {
            path: socket.into(),
            kind: file_kind(&m.file_type()),
        }),
        Ok(_) => Ok(locked),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(locked),
        Err(source) => Err(ClaimError::Inspect {
            path: socket.into(),
            source,
        }),
    }
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Takes an exclusive lock on `path` (a file or a directory), without waiting.
pub fn lock(path: &Path, hint: &'static str) -> Result<Flock<File>, ClaimError> {
    let file = File::open(path).map_err(|source| ClaimError::Open {
        path: path.into(),
        source,
    })?;
    lock_file(file, path, hint)
}

fn lock_file(file: File, path: &Path, hint: &'static str) -> Result<Flock<File>, ClaimError> {
    let ino = file.metadata().map(|m| (m.dev(), m.ino())).ok();
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => ClaimError::Busy {
            path: path.into(),
            holder: Holder(ino.and_then(|(dev, ino)| {
                let locks = std::fs::read_to_string("/proc/locks").ok()?;
                flock_holder(
                    &locks,
                    nix::sys::stat::major(dev),
                    nix::sys::stat::minor(dev),
                    ino,
                )
            })),
            hint,
        },
        source => ClaimError::Lock {
            path: path.into(),
            source,
        },
    })
}

/// The pid of the process holding a `flock` on inode `ino` of device `major:minor`, from the
/// text of `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 4242 00:27:1234 0 EOF`; devices in hex).
fn flock_holder(proc_locks: &str, major: u64, minor: u64, ino: u64) -> Option<u32> {
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    proc_locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Waiters are listed as `1: -> FLOCK ...`; the holder has no arrow.
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == want => pid.parse().ok(),
            _ => None,
        }
    })
}

/// Whether the bpffs holding `pin_dir` is one PID 1 sees (see [`PinDurability`]). PID 1's
/// mount namespace keeps a bpffs it sees mounted after this agent exits; one mounted in a
/// private namespace goes with its last process. Comparing devices works with the
/// DaemonSet's capabilities, where `/proc/1/ns/mnt` is not readable (it needs
/// CAP_SYS_PTRACE); `/proc/1/mountinfo` is readable by anyone.
pub fn pin_durability(pin_dir: &Path) -> PinDurability {
    let dev = match std::fs::metadata(pin_dir) {
        Ok(m) => m.dev(),
        Err(e) => {
            return PinDurability::Ephemeral {
                why: format!("cannot read {}: {e}", pin_dir.display()),
            };
        }
    };
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    match std::fs::read_to_string("/proc/1/mountinfo") {
        Err(e) => PinDurability::Ephemeral {
            why: format!(
                "cannot read /proc/1/mountinfo to check that the host sees its bpffs: {e}"
            ),
        },
        Ok(text) if bpffs_devices(&text).contains(&(major, minor)) => PinDurability::Durable,
        Ok(_) => PinDurability::Ephemeral {
            why: format!(
                "its bpffs (device {major}:{minor}) is mounted in a private mount namespace that PID 1 does not see"
            ),
        },
    }
}

/// The devices (major, minor) of the bpf filesystems in a `/proc/PID/mountinfo` text
/// (`42 23 0:39 / /sys/fs/bpf rw,relatime - bpf bpf rw`).
fn bpffs_devices(mountinfo: &str) -> Vec<(u64, u64)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            if fs.split_whitespace().next()? != "bpf" {
                return None;
            }
            let (major, minor) = mount.split_whitespace().nth(2)?.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bpffs_devices_in_mountinfo() {
        let text = "\
23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
42 23 0:39 / /sys/fs/bpf rw,relatime - bpf bpf rw
77 42 0:39 /cns /mnt/pins rw shared:9 - bpf bpf rw
80 1 8:1 / /data rw - ext4 /dev/sda1 rw
";
        assert_eq!(bpffs_devices(text), vec![(0, 39), (0, 39)]);
    }

    #[test]
    fn finds_the_holder_of_a_flock() {
        let text = "\
1: POSIX  ADVISORY  WRITE 99 00:27:1234 0 EOF
2: FLOCK  ADVISORY  WRITE 4242 00:27:1234 0 EOF
2: -> FLOCK  ADVISORY  WRITE 5555 00:27:1234 0 EOF
3: FLOCK  ADVISORY  WRITE 7 08:01:1234 0 EOF
";
        assert_eq!(flock_holder(text, 0, 0x27, 1234), Some(4242));
        assert_eq!(flock_holder(text, 8, 1, 1234), Some(7));
        assert_eq!(flock_holder(text, 0, 0x27, 1), None);
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder() {
        let dir = std::env::temp_dir().join(format!("cns-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent.sock");
        let first = claim_socket(&socket).expect("first lock");
        let err = claim_socket(&socket).expect_err("second lock");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("(pid {})", std::process::id())) && msg.contains("--socket"),
            "{msg}"
        );
        drop(first);
        claim_socket(&socket).expect("free again once the holder is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_socket_path_that_is_not_a_socket_is_refused_and_kept() {
        let dir = std::env::temp_dir().join(format!("cns-notsock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("precious");
        std::fs::write(&file, "keep me").unwrap();
        let err = claim_socket(&file).expect_err("a regular file");
        assert!(
            matches!(
                err,
                ClaimError::NotASocket {
                    kind: "regular file",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
