//! `cns-agent run`: wires the datapath, the agent thread, the control socket, the
//! directory watcher and the periodic resync together, until SIGTERM or SIGINT.

use std::time::Duration;

use notify::{
    EventKind, RecursiveMode,
    event::{AccessKind, AccessMode, MetadataKind, ModifyKind},
};
use notify_debouncer_full::new_debouncer;
use tokio::sync::mpsc;

use tokio::sync::broadcast;

use crate::{
    agent::{Agent, AgentConfig, Trigger},
    cli::RunArgs,
    control, datapath, error_chain,
    events::{
        self,
        sinks::{EventSinks, StdoutSink},
    },
    metrics::{self, AgentMetrics},
    paths,
    source::SnapshotSource,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("failed to prepare the pin directory")]
    Paths(#[from] paths::PathError),
    #[error("refusing to start")]
    Claim(#[from] crate::instance::ClaimError),
    #[error("failed to load the kernel programs")]
    Load(#[from] datapath::LoadError),
    #[error("failed to start the agent")]
    Agent(#[from] crate::agent::AgentError),
    #[error("failed to open the control socket")]
    Control(#[from] control::ControlError),
    #[error("failed to watch {path}")]
    Watch {
        path: std::path::PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("failed to start the Kubernetes source")]
    Kube(#[from] crate::k8s::KubeError),
    #[error("failed to set up metrics")]
    Metrics(#[from] metrics::MetricsError),
    #[error("failed to install signal handlers")]
    Signal(#[source] std::io::Error),
    #[error(
        "--event-burst 0 with --event-rate {rate} would suppress every event: give a burst of at least 1, or --event-rate 0 to turn events off"
    )]
    EventBurst { rate: u32 },
}

/// Rejects flag combinations that would silently do something else than asked.
fn check_args(args: &RunArgs) -> Result<(), DaemonError> {
    if args.event_burst == 0 && args.event_rate > 0 {
        return Err(DaemonError::EventBurst {
            rate: args.event_rate,
        });
    }
    Ok(())
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Directory changes -> resync (a full rescan copes with editors' rename-on-save and
/// ConfigMap symlink swaps). Only changes count: the agent's own reads of the directory
/// (open, read, close-without-write) must not trigger the next sync, or it would wake
/// itself forever.
fn watch_dir(
    dir: &std::path::Path,
    triggers: mpsc::Sender<Trigger>,
) -> Result<Debouncer, DaemonError> {
    let err = |source| DaemonError::Watch {
        path: dir.to_owned(),
        source,
    };
    let mut debouncer = new_debouncer(
        WATCH_DEBOUNCE,
        None,
        move |res: notify_debouncer_full::DebounceEventResult| {
            // A watcher error (e.g. an overflowed queue) may hide a change: rescan.
            let changed = res.map_or(true, |events| {
                events.iter().any(|e| is_change(&e.event.kind))
            });
            if changed {
                _ = triggers.try_send(Trigger::Resync);
            }
        },
    )
    .map_err(err)?;
    debouncer
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok(debouncer)
}

/// Events closer together than this make one resync.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// Whether a watcher event can mean the manifests changed: writes, creations, removals,
/// renames and metadata changes (permissions) do; opening, reading and closing without
/// writing (what a sync does) and access-time updates do not. Unknown kinds count as
/// changes (a rescan is cheap next to a missed change).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_)
        | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    }
}

pub async fn run(args: RunArgs) -> Result<(), DaemonError> {
    // SIGHUP (a closed terminal, or an operator asking for a reload) resyncs instead of
    // killing the agent, from the start: loading the programs takes a while. SIGTERM and
    // SIGINT stop it (before the agent runs, by their default action).
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    check_args(&args)?;
    paths::prepare_pin_dir(&args.bpffs_dir)?;
    // Held (locks and all) until the agent exits.
    let claim = crate::instance::claim(&args.bpffs_dir, &args.socket, args.allow_ephemeral_pins)?;
    let datapath = datapath::Datapath::load_sized(&args.bpffs_dir, &args.map_sizes)?;
    let maps_dir = datapath.maps_dir().to_owned();
    let hz = datapath.clock().hz();
    let cfg = AgentConfig {
        node_name: args.node_name.clone(),
        audit_mode: crate::policy::AuditMode::from_audit(args.policy_audit_mode),
        pin_dir: args.bpffs_dir.clone(),
        resync_interval: args.resync_interval,
        event_rate: args.event_rate,
        event_burst: args.event_burst,
        policy_verdict_events: args
            .monitor_event_types
            .iter()
            .any(|t| t == "policy-verdict"),
        xdp_interfaces: args.xdp_interfaces.clone(),
        pins: claim.durability.clone(),
    };
    // Clients (metrics scrapers, the control socket) must not run the agent out of file
    // descriptors before its own work does; both servers also cap their connections.
    control::limits::raise_nofile_limit();
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let (triggers, rx) = mpsc::channel::<Trigger>(256);
    // The source, and what tells the agent it changed (kept alive until shutdown).
    let (source, _watcher): (Box<dyn SnapshotSource>, Option<Debouncer>) = match &args.manifests {
        Some(dir) => (
            Box::new(
                crate::source::ManifestSource::new(dir.clone())
                    .with_held_store(crate::paths::held_objects(&args.socket)),
            ),
            Some(watch_dir(dir, triggers.clone())?),
        ),
        None => {
            let client = crate::k8s::connect().await?;
            let t = triggers.clone();
            let source = crate::k8s::KubeSource::start(
                client,
                crate::k8s::KubeSourceConfig::new(
                    args.configmap_namespace.clone(),
                    args.configmap_name.clone(),
                ),
                // A full queue already holds a resync; the periodic one catches the rest.
                move || _ = t.try_send(Trigger::Resync),
            )?;
            (Box::new(source), None)
        }
    };
    let source_name = source.describe();
    let agent_metrics = AgentMetrics::default();
    // Events: ring buffer -> JSON lines on stdout, syslog, `monitor` clients, metrics; each
    // sink behind a bounded queue (events::sinks), so none can stall the agent.
    let (events_tx, _) = broadcast::channel::<events::Published>(4096);
    let stdout_types: std::collections::BTreeSet<String> =
        args.monitor_event_types.iter().cloned().collect();
    let syslog = args.syslog.clone().map(|target| {
        let target = target.with_hostname(args.node_name.clone());
        tracing::info!(target = %target, "forwarding events to syslog");
        crate::syslog::spawn(target, 10_000)
    });
    let sinks = EventSinks::new(StdoutSink::spawn(stdout_types), syslog);
    let agent =
        Agent::new(cfg, source, datapath, agent_metrics.clone())?.with_event_sinks(sinks.clone());
    let names = agent.names();
    let rollout = agent.rollout();
    let listener = control::bind(&args.socket)?;
    let (events_maps_dir, node, names_rx, tx, counts, event_sinks) = (
        maps_dir.clone(),
        args.node_name.clone(),
        names.clone(),
        events_tx.clone(),
        agent_metrics.events.clone(),
        sinks.clone(),
    );
    tokio::spawn(async move {
        let count = move |ev: &events::Published| {
            counts
                .get_or_create(&vec![("type".to_owned(), ev.kind.to_owned())])
                .inc();
        };
        let run = events::run(
            &events_maps_dir,
            node,
            names_rx,
            event_sinks,
            tx,
            rollout,
            count,
        );
        if let Err(e) = run.await {
            tracing::error!(error = %error_chain(&e), "event reader stopped");
        }
    });

    // Metrics.
    if let Some(addr) = args.metrics_addr.0 {
        let registry = metrics::registry(&maps_dir, names.clone(), &agent_metrics, sinks.clone())?;
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, registry).await {
                tracing::error!(error = %error_chain(&e), "metrics endpoint stopped");
            }
        });
    }

    let agent_thread = std::thread::Builder::new()
        .name("cns-agent".into())
        .spawn(move || agent.run(rx))
        .expect("spawning the agent thread");

    // Control socket -> agent.
    let (req_tx, mut req_rx) = mpsc::channel::<control::Envelope>(64);
    tokio::spawn(control::serve_with(
        listener,
        req_tx,
        events_tx,
        Some(sinks),
    ));
    let t = triggers.clone();
    tokio::spawn(async move {
        while let Some((req, reply)) = req_rx.recv().await {
            if t.send(Trigger::Request(req, reply)).await.is_err() {
                break;
            }
        }
    });

    // Periodic resync.
    let t = triggers.clone();
    let interval = args.resync_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            if t.send(Trigger::Periodic).await.is_err() {
                break;
            }
        }
    });

    tracing::info!(
        source = %source_name,
        node = %args.node_name,
        mode = crate::policy::AuditMode::from_audit(args.policy_audit_mode).as_str(),
        socket = %args.socket.display(),
        pins = %args.bpffs_dir.display(),
        maps = %maps_dir.display(),
        map_sizes = %args.map_sizes,
        hz,
        "agent running"
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading the source");
                _ = triggers.try_send(Trigger::Resync);
            }
        }
    }
    drop(triggers);
    _ = std::fs::remove_file(&args.socket);
    if args.cleanup_on_exit {
        tracing::info!("shutting down: detaching programs and deleting maps (--cleanup-on-exit)");
        paths::remove_pins(&args.bpffs_dir)?;
    } else {
        tracing::info!("shutting down; programs stay attached and maps pinned");
    }
    // The agent thread ends when every trigger sender is gone; don't wait on stuck tasks.
    drop(agent_thread);
    Ok(())
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    use super::*;

    fn run_args(flags: &[&str]) -> RunArgs {
        use clap::Parser as _;
        let argv = ["cns-agent", "run", "--node-name", "n"].iter().chain(flags);
        match crate::cli::Cli::try_parse_from(argv)
            .expect("parse")
            .command
        {
            crate::cli::Command::Run(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_zero_event_burst_is_refused_unless_events_are_off() {
        let err = check_args(&run_args(&["--event-burst", "0"])).unwrap_err();
        assert!(err.to_string().contains("--event-burst 0"), "{err}");
        check_args(&run_args(&["--event-burst", "0", "--event-rate", "0"])).unwrap();
        check_args(&run_args(&[])).unwrap();
    }

    #[test]
    fn the_agents_own_reads_are_not_changes() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!is_change(&kind), "{kind:?} must not trigger a resync");
        }
    }

    #[test]
    fn writes_creations_removals_and_renames_are_changes() {
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Other,
        ] {
            assert!(is_change(&kind), "{kind:?} must trigger a resync");
        }
    }
}
