//! Every bpffs and runtime path the agent uses, in one place.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/cns`): one pinned map per name in
//! `cns_common::maps` (`CNS_CONFIG`, `CNS_POLICY`, ...). Tests and parallel agents use their
//! own pin directory (`--bpffs-dir`).

use std::path::{Path, PathBuf};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/cns";
pub const DEFAULT_SOCKET: &str = "/run/cns/agent.sock";

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("failed to mount bpffs on {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not on a bpf filesystem")]
    NotBpffs { path: PathBuf },
}

/// Where map `name` (one of the `cns_common::maps` names) is pinned.
pub fn pinned_map(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(name)
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` exists on a bpffs, mounting bpffs on `/sys/fs/bpf` when it is
/// missing there (as Cilium does).
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<(), PathError> {
    let mount_point = Path::new(BPFFS_MOUNT);
    if pin_dir.starts_with(mount_point) && !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point).map_err(|source| PathError::Create {
            path: mount_point.into(),
            source,
        })?;
        mount(
            Some("bpf"),
            mount_point,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| PathError::Mount {
            path: mount_point.into(),
            source,
        })?;
    }
    std::fs::create_dir_all(pin_dir).map_err(|source| PathError::Create {
        path: pin_dir.into(),
        source,
    })?;
    if !is_bpffs(pin_dir) {
        return Err(PathError::NotBpffs {
            path: pin_dir.into(),
        });
    }
    Ok(())
}
