//! The capabilities `cns-agent run` needs, checked before it touches anything, so that a
//! missing one is named instead of surfacing as a verifier or relocation error.
//!
//! What the DaemonSet grants (`deploy/kubernetes/daemonset.yaml`): BPF (load programs,
//! create and pin maps), NET_ADMIN (attach to interfaces), PERFMON (the verifier features the
//! programs use), SYS_RESOURCE (raise RLIMIT_MEMLOCK on kernels before 5.11, which charge BPF
//! memory to it; not checked, since newer kernels do not need it). CAP_SYS_ADMIN covers BPF
//! and PERFMON, as the kernel's `bpf_capable()` and `perfmon_capable()` say.
//!
//! The effective set is read from `/proc/self/status` (`CapEff`): one hexadecimal mask, no
//! need for a crate that wraps `capget`.

/// A capability the agent checks for: its name and number (`linux/capability.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub name: &'static str,
    bit: u32,
    why: &'static str,
}

pub const NET_ADMIN: Cap = Cap {
    name: "CAP_NET_ADMIN",
    bit: 12,
    why: "attach the programs to interfaces",
};
pub const SYS_ADMIN: Cap = Cap {
    name: "CAP_SYS_ADMIN",
    bit: 21,
    why: "",
};
pub const PERFMON: Cap = Cap {
    name: "CAP_PERFMON",
    bit: 38,
    why: "the verifier features the programs use",
};
pub const BPF: Cap = Cap {
    name: "CAP_BPF",
    bit: 39,
    why: "load programs, create and pin maps",
};

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("failed to read the capabilities of this process from /proc/self/status")]
    Read(#[source] std::io::Error),
    #[error("/proc/self/status has no readable CapEff line")]
    Parse,
    #[error(
        "missing capability {}: `cns-agent run` needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON in its effective set (CAP_SYS_ADMIN stands for BPF and PERFMON); the DaemonSet grants them with securityContext.capabilities.add: [BPF, NET_ADMIN, PERFMON, SYS_RESOURCE]",
        .missing.iter().map(|c| format!("{} ({})", c.name, c.why)).collect::<Vec<_>>().join(", ")
    )]
    Missing { missing: Vec<Cap> },
}

/// The capabilities `run` needs that the effective set `eff` (a `CapEff` mask) lacks.
pub fn missing(eff: u64) -> Vec<Cap> {
    let has = |c: Cap| eff & (1 << c.bit) != 0;
    let mut missing = Vec::new();
    for cap in [BPF, NET_ADMIN, PERFMON] {
        let covered = cap != NET_ADMIN && has(SYS_ADMIN);
        if !has(cap) && !covered {
            missing.push(cap);
        }
    }
    missing
}

/// The `CapEff` mask in a `/proc/PID/status` text.
fn effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Fails, naming each missing capability, unless this process can run the agent.
pub fn require() -> Result<(), CapabilityError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(CapabilityError::Read)?;
    let missing = missing(effective(&status).ok_or(CapabilityError::Parse)?);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CapabilityError::Missing { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn mask(caps: &[Cap]) -> u64 {
        let mut m = 0;
        let mut i = 0;
        while i < caps.len() {
            m |= 1 << caps[i].bit;
            i += 1;
        }
        m
    }

    #[test]
    fn the_daemonsets_set_is_enough_and_each_removal_is_named() {
        let all = [BPF, NET_ADMIN, PERFMON];
        assert_eq!(missing(mask(&all)), []);
        for (i, gone) in all.iter().enumerate() {
            let mut some = all.to_vec();
            some.remove(i);
            assert_eq!(missing(mask(&some)), [*gone]);
            let err = CapabilityError::Missing {
                missing: vec![*gone],
            };
            assert!(
                err.to_string()
                    .starts_with(&format!("missing capability {} (", gone.name))
            );
        }
        // CAP_SYS_ADMIN stands for BPF and PERFMON, not for NET_ADMIN.
        assert_eq!(missing(mask(&[SYS_ADMIN])), [NET_ADMIN]);
        assert_eq!(missing(0), [BPF, NET_ADMIN, PERFMON]);
    }

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tcns-agent\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n";
        assert_eq!(effective(status), Some(mask(&[BPF, NET_ADMIN, PERFMON])));
        assert_eq!(effective("Name: x\n"), None);
    }
}
