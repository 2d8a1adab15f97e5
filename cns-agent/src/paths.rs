//! Every bpffs and runtime path the agent uses, in one place.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/cns`; tests and parallel agents use
//! their own with `--bpffs-dir`):
//!
//! - `maps-v{LAYOUT_VERSION}/{MAP}`: one pinned map per name in `cns_common::maps`
//!   (`CNS_CONFIG`, `CNS_POLICY`, ...), with the default sizes; `maps-v{LAYOUT_VERSION}-{hash}`
//!   with other sizes (`--map-sizes`, see `map_sizes`). A new layout version or a new set of
//!   sizes gets a new directory: the agent fills it, takes over the links, then removes the
//!   other `maps-v*` directories.
//! - `links/{ifindex}-{program}`: the tcx links attaching the programs to each pod veth.
//!   Pinned links keep the programs attached while the agent is down or restarting; removing
//!   the pin detaches (`cns-agent uninstall` removes the whole directory).
//!
//! The running agent holds an exclusive `flock` on the pin directory itself ([`pin_lock`]; a
//! bpffs holds no regular files, so there is no lock file to go stale) and on
//! [`socket_lock`] beside its control socket: a second agent on either is refused
//! (`instance`). The kernel drops both locks when the process dies.

use std::path::{Path, PathBuf};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::map_sizes::MapSizes;

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
    #[error("{path} is not a directory on a bpf filesystem")]
    NotBpffs { path: PathBuf },
    #[error("failed to remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Removes everything the agent pinned under `pin_dir`: the links (which detaches the
/// programs from every veth) and the maps. Refuses anything that is not a directory on a
/// bpffs below its mount point, so a wrong flag cannot delete other files.
pub fn remove_pins(pin_dir: &Path) -> Result<bool, PathError> {
    if !pin_dir.exists() {
        return Ok(false);
    }
    let is_mount_root = pin_dir
        .parent()
        .is_none_or(|parent| is_bpffs(pin_dir) && !is_bpffs(parent));
    if !is_bpffs(pin_dir) || is_mount_root {
        return Err(PathError::NotBpffs {
            path: pin_dir.into(),
        });
    }
    // Links first, so programs detach before their maps go.
    for dir in [links_dir(pin_dir), pin_dir.to_owned()] {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PathError::Remove {
                    path: dir,
                    source: e,
                });
            }
            _ => {}
        }
    }
    Ok(true)
}

/// The directory of this layout version's maps with `sizes`: `maps-v{N}` with the default
/// sizes, `maps-v{N}-{hash}` otherwise.
pub fn sized_maps_dir(pin_dir: &Path, sizes: &MapSizes) -> PathBuf {
    let version = cns_common::LAYOUT_VERSION;
    pin_dir.join(match sizes.dir_suffix() {
        None => format!("maps-v{version}"),
        Some(hash) => format!("maps-v{version}-{hash}"),
    })
}

/// The directory of this layout version's maps with the default sizes (what a datapath
/// loaded with `Datapath::load` uses).
pub fn maps_dir(pin_dir: &Path) -> PathBuf {
    sized_maps_dir(pin_dir, &MapSizes::default())
}

/// Where map `name` (one of the `cns_common::maps` names) is pinned, with the default sizes.
/// A datapath with other sizes pins its maps under `Datapath::maps_dir`.
pub fn pinned_map(pin_dir: &Path, name: &str) -> PathBuf {
    maps_dir(pin_dir).join(name)
}

/// What a running agent locks so that no second agent shares its pins: the pin directory.
pub fn pin_lock(pin_dir: &Path) -> &Path {
    pin_dir
}

/// The lock file beside the control socket (`agent.sock` -> `agent.sock.lock`).
pub fn socket_lock(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    name.into()
}

/// The last good versions of invalid objects, kept for the next agent (`source::held`),
/// beside the control socket (`agent.sock` -> `agent.sock.held.json`).
pub fn held_objects(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".held.json");
    name.into()
}

/// The directory of the pinned tcx links.
pub fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

/// The pin of the link attaching `program` to interface `ifindex`.
pub fn link_pin(pin_dir: &Path, ifindex: u32, program: &str) -> PathBuf {
    links_dir(pin_dir).join(format!("{ifindex}-{program}"))
}

/// Parses a link pin's file name back into (ifindex, program).
pub fn parse_link_pin(file_name: &str) -> Option<(u32, &str)> {
    let (ifindex, program) = file_name.split_once('-')?;
    Some((ifindex.parse().ok()?, program))
}

/// Map directories other than `current` (left by an agent of another layout version or
/// with other sizes).
pub fn stale_maps_dirs(pin_dir: &Path, current: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(pin_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("maps-v"))
                        && p != current
                })
                .collect()
        })
        .unwrap_or_default()
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
    // The maps directory is made by the loader, which knows the sizes.
    let links = links_dir(pin_dir);
    std::fs::create_dir_all(&links).map_err(|source| PathError::Create {
        path: links,
        source,
    })?;
    if !is_bpffs(pin_dir) {
        return Err(PathError::NotBpffs {
            path: pin_dir.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_round_trip() {
        let pin = link_pin(Path::new("/sys/fs/bpf/cns"), 42, "cns_to_pod");
        assert_eq!(pin, Path::new("/sys/fs/bpf/cns/links/42-cns_to_pod"));
        let name = pin.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_link_pin(name), Some((42, "cns_to_pod")));
        assert_eq!(parse_link_pin("junk"), None);
    }

    #[test]
    fn other_sizes_get_their_own_maps_directory() {
        let pin = Path::new("/sys/fs/bpf/cns");
        let v = cns_common::LAYOUT_VERSION;
        assert_eq!(maps_dir(pin), pin.join(format!("maps-v{v}")));
        let sizes: MapSizes = "policy=300".parse().unwrap();
        let dir = sized_maps_dir(pin, &sizes);
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("maps-v{v}-")), "{name}");
        assert_ne!(dir, maps_dir(pin));
    }
}
