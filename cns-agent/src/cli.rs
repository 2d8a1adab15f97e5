//! The command line: `cns-agent run` (the daemon) and the clients of its control socket.

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use crate::paths::{DEFAULT_PIN_DIR, DEFAULT_SOCKET};

#[derive(Debug, Parser)]
#[command(
    name = "cns-agent",
    version,
    about = "Kubernetes NetworkPolicy enforcement in eBPF"
)]
pub struct Cli {
    /// Log format of the daemon (stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CNS_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// On an error, also print where it came from (with `RUST_BACKTRACE=1`, its backtrace).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    Audit,
    Blocking,
    /// Drop the runtime override: back to the configured mode (or the namespace annotation).
    Configured,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: enforce the cluster's policies on this node (from the Kubernetes API, or
    /// from a manifests directory with --manifests).
    Run(Box<RunArgs>),
    /// Ask the running agent to re-read its source; returns once the result is enforced.
    /// Exits non-zero, printing the agent's errors, when the source is invalid.
    Sync(ClientArgs),
    /// Show the agent's mode, endpoints, map usage and last errors.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Exit 1 unless the agent has completed a sync (its source fully listed and the
        /// result in the maps): the DaemonSet's readiness probe.
        #[arg(long)]
        ready: bool,
    },
    /// Show packets and bytes per (source namespace, destination namespace, direction, verdict).
    Counters {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Stream drop/audit events from the running agent (like `cilium monitor`).
    Monitor {
        /// Only these event types (repeatable): drop, audit, policy-verdict.
        #[arg(long = "type", value_parser = event_type)]
        types: Vec<String>,
        /// Only events from or to this namespace.
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Inspect and explain policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Remove the programs from every veth and delete the pinned maps (run it after stopping
    /// the agent; a running agent would attach again at its next resync).
    Uninstall {
        /// The agent's pin directory.
        #[arg(long, default_value = DEFAULT_PIN_DIR, env = "CNS_BPFFS_DIR")]
        bpffs_dir: PathBuf,
    },
    /// Switch the policy mode at runtime: audit (would-be drops pass and are counted) or
    /// blocking, globally or for one namespace; `configured` drops the override.
    /// Precedence: namespace override > namespace annotation > global override > flag.
    Mode {
        #[arg(value_enum)]
        mode: Mode,
        /// Only this namespace's pods.
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate manifests offline (no agent needed): errors name the file, object and field;
    /// warnings point at common mistakes. Exits non-zero on errors.
    Check {
        /// Files, or directories of *.yaml/*.yml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The cluster's pod network (repeatable, or comma-separated), for the warning about
        /// ipBlocks that match pods; the pods' own addresses in the input are always used.
        #[arg(long, value_name = "CIDR", value_delimiter = ',')]
        pod_cidr: Vec<ipnetwork::IpNetwork>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// What would change in enforcement if the manifests in DIR replaced the policy source:
    /// per endpoint, isolation and the rules added and removed, and the policies added,
    /// changed and removed. Compares with the running agent's live state on this node, or
    /// offline with --from. Exits 0 when nothing would change, 1 when something would, 2 on
    /// errors (like diff and kubectl diff).
    Diff(DiffArgs),
    /// The rules in force for each endpoint of this node, read back from the maps and decoded
    /// (peers, ports, policies), with a warning where the maps differ from the agent's intent.
    Show {
        /// Only pods of this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only this pod (NAME or NAMESPACE/NAME).
        #[arg(long)]
        pod: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The last enforcement changes on this node: policies added, changed or removed,
    /// endpoints affected, mode changes.
    History {
        /// How many changes (newest first).
        #[arg(short = 'n', long, default_value_t = 20)]
        n: usize,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// What each dry-run policy (annotated `cns.io/policy-audit-mode: "true"`) would change
    /// on this node: would-be drops and allows since it became dry-run, the top flows, and
    /// whether it is safe to enforce (no would-be drops for the last --since).
    Rollout {
        /// Would-be drops this far back make a policy unsafe to enforce (90s, 15m, 1h, 1d).
        #[arg(long, default_value = "1h")]
        since: String,
        /// Report as of this time (RFC 3339) instead of now, e.g. to check what the verdict
        /// will be once a quiet hour has passed.
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Why is this flow allowed or dropped? The verdict of each direction, the policies that
    /// isolate the pods, the rule that allows it (or that none does), and the mode.
    Explain {
        /// Source: NAMESPACE/POD or an IPv4 address.
        #[arg(long)]
        from: String,
        /// Destination: NAMESPACE/POD or an IPv4 address.
        #[arg(long)]
        to: String,
        /// Destination port and protocol: 80/TCP, 53/UDP, 9000/SCTP, 8080 (TCP), or ICMP.
        #[arg(long)]
        port: String,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The new manifests: a directory of *.yaml/*.yml, or one file. Its NetworkPolicies
    /// replace all current ones; its Namespaces and Pods replace the current ones if it has
    /// any (else the current ones are kept, so a directory of policies alone is diffed
    /// against the real pods).
    pub dir: PathBuf,
    /// Compare with this directory instead of the running agent (offline).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// With --from: only the pods of this node (default: every pod of the input).
    #[arg(long, requires = "from")]
    pub node_name: Option<String>,
    /// Add DIR's objects to the current ones, replacing those of the same kind, namespace
    /// and name, and remove nothing (like `kubectl apply`).
    #[arg(long)]
    pub merge: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The agent's control socket.
    #[arg(long, default_value = DEFAULT_SOCKET, env = "CNS_SOCKET")]
    pub socket: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Directory of Namespace, Pod and NetworkPolicy manifests (*.yaml, *.yml), followed
    /// for changes. Without it the agent watches the Kubernetes API (in-cluster service
    /// account, or KUBECONFIG).
    #[arg(long, env = "CNS_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Kubernetes mode: namespace of the agent's ConfigMap (policyAuditMode).
    #[arg(long, default_value = "cns-system", env = "POD_NAMESPACE")]
    pub configmap_namespace: String,
    /// Kubernetes mode: name of the agent's ConfigMap.
    #[arg(long, default_value = "cns-config", env = "CNS_CONFIGMAP_NAME")]
    pub configmap_name: String,
    /// This node's name: pods with this `spec.nodeName` are enforced here.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Audit mode (true): would-be drops pass and are counted as `audit`. false: blocking.
    #[arg(long, default_value_t = true, action = ArgAction::Set, env = "CNS_POLICY_AUDIT_MODE")]
    pub policy_audit_mode: bool,
    /// The control socket (root-only).
    #[arg(long, default_value = DEFAULT_SOCKET, env = "CNS_SOCKET")]
    pub socket: PathBuf,
    /// Where the maps are pinned (mounts bpffs on /sys/fs/bpf if needed).
    #[arg(long, default_value = DEFAULT_PIN_DIR, env = "CNS_BPFFS_DIR")]
    pub bpffs_dir: PathBuf,
    /// On SIGTERM/SIGINT, detach the programs and delete the pinned maps. By default they
    /// stay: enforcement continues while the agent is down and the next agent takes over.
    #[arg(long)]
    pub cleanup_on_exit: bool,
    /// Run even when the pins cannot outlive the agent (its bpffs is in a private mount
    /// namespace, as under `ip netns exec`): enforcement then stops when it exits. Refused
    /// without this flag.
    #[arg(long)]
    pub allow_ephemeral_pins: bool,
    /// Where to serve Prometheus metrics (`/metrics`); `none` disables.
    #[arg(long, default_value = "0.0.0.0:9965", env = "CNS_METRICS_ADDR")]
    pub metrics_addr: MetricsAddr,
    /// Event types printed as JSON lines on stdout (Cilium's `monitor.eventTypes`):
    /// comma-separated from drop, audit, policy-verdict.
    #[arg(long, value_delimiter = ',', default_value = "drop,audit", env = "CNS_MONITOR_EVENT_TYPES", value_parser = event_type)]
    pub monitor_event_types: Vec<String>,
    /// Also send each printed event to a SIEM as RFC 5424 syslog: udp://HOST:PORT or
    /// tcp://HOST:PORT (RFC 6587 octet counting), optional ?facility=local0..local7.
    #[arg(long, env = "CNS_SYSLOG")]
    pub syslog: Option<crate::syslog::SyslogTarget>,
    /// Where the XDP program runs: `default` (the interfaces holding the node's IPv4 default
    /// routes), `none`, or a comma-separated list of interfaces.
    #[arg(long, default_value = "default", env = "CNS_XDP_INTERFACES", value_parser = xdp_interfaces)]
    pub xdp_interfaces: crate::uplink::XdpInterfaces,
    /// Entries of the maps that grow with the cluster, as KEY=ENTRIES,...: endpoints (local
    /// pods), ipcache (pod addresses), cidrs, policy, conntrack, fragments, counters,
    /// deny-cache (XDP's remembered drops). Keys not given keep their defaults. Changing them builds fresh maps at the next start (as a
    /// layout upgrade does): conntrack starts empty and counters from zero.
    #[arg(
        long,
        default_value = "",
        value_name = "KEY=ENTRIES,...",
        env = "CNS_MAP_SIZES",
        hide_default_value = true
    )]
    pub map_sizes: crate::map_sizes::MapSizes,
    /// Seconds between full resyncs (re-read source, find new veths, rewrite drift).
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub resync_interval: Duration,
    /// Drop/audit events each CPU may emit per second (0 disables them).
    #[arg(long, default_value_t = 100)]
    pub event_rate: u32,
    /// Drop/audit events each CPU may emit in a burst.
    #[arg(long, default_value_t = 200)]
    pub event_burst: u32,
}

/// A socket address, or `none`.
#[derive(Clone, Debug)]
pub struct MetricsAddr(pub Option<std::net::SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("{s:?} is neither HOST:PORT nor none: {e}"))
    }
}

fn event_type(s: &str) -> Result<String, String> {
    if crate::events::EVENT_TYPES.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown event type {s:?}: expected drop, audit or policy-verdict"
        ))
    }
}

/// `--xdp-interfaces`: an empty name in a list (`,,`, `eth0,`) is a mistake, not "none".
fn xdp_interfaces(s: &str) -> Result<crate::uplink::XdpInterfaces, String> {
    if s.contains(',') && s.split(',').any(|n| n.trim().is_empty()) {
        return Err(format!(
            "{s:?} has an empty interface name: give default, none, or a comma-separated list of interface names"
        ));
    }
    s.parse()
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{secs} is outside 0.1..=3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_xdp_interface_names_are_refused() {
        for bad in [",,", "eth0,", ",eth0", "eth0,,eth1", " , "] {
            let err = xdp_interfaces(bad).expect_err(bad);
            assert!(err.contains("empty interface name"), "{err}");
        }
        let ok = |s: &str| xdp_interfaces(s).unwrap().to_string();
        assert_eq!(ok("eth0,eth1"), "eth0,eth1");
        assert_eq!(ok("none"), "none");
        assert_eq!(ok("default"), "default");
        let err = Cli::try_parse_from([
            "cns-agent",
            "run",
            "--node-name",
            "n",
            "--xdp-interfaces",
            ",,",
        ])
        .expect_err("refused");
        assert!(err.to_string().contains("--xdp-interfaces"), "{err}");
    }
}
