//! Attaching the programs: tcx on each pod veth, XDP on the uplinks, every link pinned so
//! that it outlives the agent, and taking over the links an earlier agent pinned.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::programs::{
    SchedClassifier, TcAttachType, Xdp,
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLink,
    xdp::{XdpLink, XdpMode},
};

use super::{Datapath, PROG_FROM_POD, PROG_TO_POD, PROG_XDP};
use crate::{
    paths,
    uplink::{self, Uplink, XdpAttachMode},
};

/// The XDP program on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    pub interface: String,
    /// As attached, or as the kernel reports it for an adopted link (`None`: unknown).
    pub mode: Option<XdpAttachMode>,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to {step} {program} on {interface} (ifindex {ifindex})")]
pub struct AttachError {
    pub step: &'static str,
    pub program: &'static str,
    pub interface: String,
    pub ifindex: u32,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The two programs on a pod veth and where each attaches.
const ATTACHMENTS: [(&str, TcAttachType); 2] = [
    (PROG_TO_POD, TcAttachType::Egress),
    (PROG_FROM_POD, TcAttachType::Ingress),
];

impl Datapath {
    fn program(&mut self, name: &'static str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("programs were checked at load")
    }

    /// Attaches both programs to `interface` (tcx, appended to its chain) and pins the links,
    /// so the programs stay attached when the agent exits or dies. A no-op when attached.
    pub fn attach(&mut self, interface: &str, ifindex: u32) -> Result<(), AttachError> {
        if self.links.contains_key(&ifindex) {
            return Ok(());
        }
        for (program, attach_type) in ATTACHMENTS {
            let err = |step, source: Box<dyn std::error::Error + Send + Sync>| AttachError {
                step,
                program,
                interface: interface.to_owned(),
                ifindex,
                source,
            };
            let prog = self.program(program);
            let pinned = prog
                .attach(interface, attach_type)
                .and_then(|id| prog.take_link(id))
                .map_err(|e| err("attach", e.into()))
                .and_then(|link| FdLink::try_from(link).map_err(|e| err("attach", e.into())))
                .and_then(|fd| {
                    fd.pin(paths::link_pin(&self.pin_dir, ifindex, program))
                        .map_err(|e| err("pin the link of", e.into()))
                });
            if let Err(e) = pinned {
                self.unpin(ifindex);
                return Err(e);
            }
        }
        self.links.insert(ifindex, interface.to_owned());
        Ok(())
    }

    /// Removes an interface's link pins, which detaches the programs (a no-op when the
    /// interface is gone: the kernel detached already).
    pub fn detach(&mut self, ifindex: u32) {
        self.unpin(ifindex);
        self.links.remove(&ifindex);
    }

    fn unpin(&self, ifindex: u32) {
        for (program, _) in ATTACHMENTS {
            _ = std::fs::remove_file(paths::link_pin(&self.pin_dir, ifindex, program));
        }
    }

    /// Takes over the links pinned by an earlier agent: each is switched to this agent's
    /// programs in one atomic `bpf_link_update`, so enforcement never pauses. Links whose
    /// interface is gone are unpinned. Then removes maps of other layout versions or sizes,
    /// which no program uses any more. Returns how many interfaces were adopted.
    pub fn adopt(&mut self) -> usize {
        let dir = paths::links_dir(&self.pin_dir);
        let mut pins: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|e| e.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        pins.sort();
        for pin in pins {
            let parsed = pin
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(paths::parse_link_pin)
                .and_then(|(ifindex, name)| {
                    if name == PROG_XDP {
                        return Some((ifindex, PROG_XDP));
                    }
                    let (program, _) = ATTACHMENTS.iter().find(|(p, _)| *p == name)?;
                    Some((ifindex, *program))
                });
            let Some((ifindex, program)) = parsed else {
                tracing::warn!(pin = %pin.display(), "removing an unknown link pin");
                _ = std::fs::remove_file(&pin);
                continue;
            };
            if program == PROG_XDP {
                self.adopt_xdp(&pin, ifindex);
                continue;
            }
            let adopted = PinnedLink::from_pin(&pin)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    SchedClassifierLink::try_from(FdLink::from(p)).map_err(|e| e.to_string())
                })
                .and_then(|link| {
                    let prog = self.program(program);
                    let id = prog.attach_to_link(link).map_err(|e| e.to_string())?;
                    // The pin owns the link; drop our handle (this does not detach).
                    prog.take_link(id).map(drop).map_err(|e| e.to_string())
                });
            match adopted {
                Ok(()) => {
                    let name = nix::net::if_::if_indextoname(ifindex)
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    self.links.insert(ifindex, name);
                }
                Err(e) => {
                    tracing::info!(pin = %pin.display(), error = %e, "removing a stale link pin");
                    _ = std::fs::remove_file(&pin);
                }
            }
        }
        for old in paths::stale_maps_dirs(&self.pin_dir, &self.maps_dir) {
            tracing::info!(dir = %old.display(), "removing maps of another layout or size");
            _ = std::fs::remove_dir_all(&old);
        }
        self.links.len()
    }

    fn xdp_program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROG_XDP)
            .and_then(|p| p.try_into().ok())
            .expect("programs were checked at load")
    }

    /// Attaches the XDP program to `interface` (the node's uplink, see `uplink`): native
    /// mode when the driver supports it, generic otherwise; pins the link at
    /// `links/{ifindex}-cns_xdp` so it stays attached when the agent exits or dies. Returns
    /// the mode. A no-op (returning the known mode) when attached already.
    pub fn attach_xdp(
        &mut self,
        interface: &str,
        ifindex: u32,
    ) -> Result<XdpAttachMode, AttachError> {
        if let Some(a) = self.xdp_links.get(&ifindex) {
            return Ok(a.mode.unwrap_or(XdpAttachMode::Generic));
        }
        let err = |step, source: Box<dyn std::error::Error + Send + Sync>| AttachError {
            step,
            program: PROG_XDP,
            interface: interface.to_owned(),
            ifindex,
            source,
        };
        let pin = paths::link_pin(&self.pin_dir, ifindex, PROG_XDP);
        let prog = self.xdp_program();
        let (id, mode) = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(id) => (id, XdpAttachMode::Native),
            Err(native) => {
                let id = prog
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(|e| err("attach", format!("native: {native}; generic: {e}").into()))?;
                tracing::info!(interface, error = %native, "native XDP unavailable; using generic XDP");
                (id, XdpAttachMode::Generic)
            }
        };
        let link = prog.take_link(id).map_err(|e| err("attach", e.into()))?;
        // A netlink attachment (no bpf_link) cannot be pinned; dropping it detaches.
        let fd = FdLink::try_from(link).map_err(|e| err("attach", e.into()))?;
        fd.pin(&pin).map_err(|e| err("pin the link of", e.into()))?;
        self.xdp_links.insert(
            ifindex,
            XdpAttachment {
                interface: interface.to_owned(),
                mode: Some(mode),
            },
        );
        Ok(mode)
    }

    /// Removes the XDP link pin of `ifindex`, which detaches the program.
    pub fn detach_xdp(&mut self, ifindex: u32) {
        _ = std::fs::remove_file(paths::link_pin(&self.pin_dir, ifindex, PROG_XDP));
        self.xdp_links.remove(&ifindex);
    }

    /// Makes the XDP program run on exactly `uplinks`: attaches where missing, detaches from
    /// every other interface. Returns the failures (retry at the next sync).
    pub fn sync_xdp(&mut self, uplinks: &[Uplink]) -> Vec<AttachError> {
        let mut errors = Vec::new();
        for u in uplinks {
            match self.attach_xdp(&u.name, u.ifindex) {
                Ok(mode) => tracing::debug!(interface = %u.name, %mode, "XDP attached"),
                Err(e) => errors.push(e),
            }
        }
        let stale: Vec<u32> = self
            .xdp_links
            .keys()
            .filter(|i| !uplinks.iter().any(|u| u.ifindex == **i))
            .copied()
            .collect();
        for ifindex in stale {
            self.detach_xdp(ifindex);
        }
        errors
    }

    /// Takes over a pinned XDP link (see [`Datapath::adopt`]).
    fn adopt_xdp(&mut self, pin: &Path, ifindex: u32) {
        let adopted = PinnedLink::from_pin(pin)
            .map_err(|e| e.to_string())
            .and_then(|p| XdpLink::try_from(FdLink::from(p)).map_err(|e| e.to_string()))
            .and_then(|link| {
                let prog = self.xdp_program();
                let id = prog.attach_to_link(link).map_err(|e| e.to_string())?;
                // The pin owns the link; drop our handle (this does not detach).
                prog.take_link(id).map(drop).map_err(|e| e.to_string())
            });
        match adopted {
            Ok(()) => {
                let interface = nix::net::if_::if_indextoname(ifindex)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mode = uplink::xdp_mode(ifindex);
                self.xdp_links
                    .insert(ifindex, XdpAttachment { interface, mode });
            }
            Err(e) => {
                tracing::info!(pin = %pin.display(), error = %e, "removing a stale XDP link pin");
                _ = std::fs::remove_file(pin);
            }
        }
    }

    /// ifindex -> interface and mode of every XDP attachment (for `status`).
    pub fn xdp_attached(&self) -> &BTreeMap<u32, XdpAttachment> {
        &self.xdp_links
    }

    /// ifindex -> interface name of every attachment.
    pub fn attached(&self) -> &BTreeMap<u32, String> {
        &self.links
    }
}
