//! `cns-agent`: see `cns_agent::cli` for the commands.
use anyhow::{Context as _, bail};
use clap::Parser as _;
use cns_agent::{
    cli::{Cli, Command, LogFormat, Mode, Output, PolicyCommand},
    control::{self, Reply, Request},
    daemon, error_chain,
    policy::AuditMode,
};
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// `println!` that ends the client quietly when stdout's reader is gone (`status | head -1`)
/// instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => { out(format_args!("{}\n", format_args!($($arg)*))) };
}

fn out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("Error: failed to write to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let filter = EnvFilter::try_from_env("CNS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")
        .and_then(|rt| rt.block_on(async_main(cli.command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The backtrace anyhow captured (with RUST_BACKTRACE=1) only on request.
            if verbose {
                eprintln!("Error: {e:?}");
            } else {
                eprintln!("Error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn async_main(command: Command) -> anyhow::Result<()> {
    let (socket, request, output) = match command {
        Command::Run(args) => {
            cns_agent::capabilities::require().map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
            return daemon::run(*args)
                .await
                .map_err(|e| anyhow::anyhow!(error_chain(&e)));
        }
        Command::Uninstall { bpffs_dir } => {
            let _idle = cns_agent::instance::lock_idle_pins(&bpffs_dir)
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
            let removed = cns_agent::paths::remove_pins(&bpffs_dir)
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
            if removed {
                outln!(
                    "removed {}: programs detached, maps deleted",
                    bpffs_dir.display()
                );
            } else {
                outln!("nothing to remove at {}", bpffs_dir.display());
            }
            return Ok(());
        }
        Command::Policy(PolicyCommand::Check {
            paths,
            pod_cidr,
            output,
        }) => {
            let opts = cns_agent::check::Options {
                pod_cidrs: pod_cidr,
            };
            let report = cns_agent::check::check_with(&cns_agent::check::read(&paths), &opts);
            if output == Output::Json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out(format_args!("{}", cns_agent::check::render(&report)));
            }
            if !report.errors.is_empty() {
                bail!("{} invalid objects or files", report.errors.len());
            }
            return Ok(());
        }
        Command::Policy(PolicyCommand::Diff(args)) => {
            let code = cns_agent::diff::command::run(&args).await;
            std::process::exit(code.into());
        }
        Command::Monitor {
            types,
            namespace,
            client,
            output,
        } => {
            let req = Request::Monitor { types, namespace };
            control::stream(&client.socket, &req, |line| {
                if output == Output::Json {
                    outln!("{line}");
                } else {
                    outln!("{}", monitor_line(line));
                }
            })
            .await
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
            return Ok(());
        }
        Command::Sync(c) => (c.socket, Request::Sync, Output::Table),
        Command::Policy(PolicyCommand::History { n, client, output }) => {
            (client.socket, Request::History { n }, output)
        }
        Command::Policy(PolicyCommand::Show {
            namespace,
            pod,
            client,
            output,
        }) => (client.socket, Request::Show { namespace, pod }, output),
        Command::Policy(PolicyCommand::Rollout {
            since,
            at,
            client,
            output,
        }) => (
            client.socket,
            Request::Rollout {
                since: Some(since),
                at,
            },
            output,
        ),
        Command::Policy(PolicyCommand::Explain {
            from,
            to,
            port,
            client,
            output,
        }) => (client.socket, Request::Explain { from, to, port }, output),
        Command::Status {
            client,
            output,
            ready,
        } => {
            let socket = client.socket;
            if ready {
                let reply = control::call(&socket, &Request::Status)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
                let synced = reply.ok && !reply.data["seconds_since_sync"].is_null();
                if !synced {
                    bail!("not ready: the agent has not completed a sync yet");
                }
                outln!("ready");
                return Ok(());
            }
            (socket, Request::Status, output)
        }
        Command::Counters { client, output } => (client.socket, Request::Counters, output),
        Command::Mode {
            mode,
            namespace,
            client,
        } => {
            let audit = match mode {
                Mode::Audit => Some(AuditMode::Audit),
                Mode::Blocking => Some(AuditMode::Blocking),
                Mode::Configured => None,
            };
            (
                client.socket,
                Request::Mode { audit, namespace },
                Output::Table,
            )
        }
    };
    let reply = control::call(&socket, &request)
        .await
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    print_reply(&request, &reply, output);
    if !reply.ok {
        bail!(
            "{}",
            reply
                .error
                .unwrap_or_else(|| "the agent reported a failure".into())
        );
    }
    Ok(())
}

/// One event as a line of text: `DROPPED ingress beta/client 10.0.2.10:40000 -> ...`.
fn monitor_line(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    if let Some(n) = v.get("lost") {
        return format!("(lost {n} events: the monitor could not keep up)");
    }
    let end = |side: &str, port_key: &str| {
        let e = &v[side];
        let who = match e["pod_name"].as_str() {
            Some(p) => format!("{}/{p}", e["namespace"].as_str().unwrap_or("")),
            None => e["namespace"].as_str().unwrap_or("").to_owned(),
        };
        let ip = v["IP"][side].as_str().unwrap_or("");
        let port = v["l4"]
            .as_object()
            .and_then(|l4| l4.values().next())
            .and_then(|p| p[port_key].as_u64())
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        format!("{who} {ip}{port}")
    };
    let proto = v["l4"]
        .as_object()
        .and_then(|l4| l4.keys().next().cloned())
        .unwrap_or_default();
    format!(
        "{} {:<7} {:<9} {} -> {} {proto} {} policies={}",
        v["time"].as_str().unwrap_or(""),
        v["verdict"].as_str().unwrap_or(""),
        v["traffic_direction"].as_str().unwrap_or("").to_lowercase(),
        end("source", "source_port"),
        end("destination", "destination_port"),
        v["drop_reason_desc"].as_str().unwrap_or(""),
        v["policies"]
    )
}

fn print_reply(request: &Request, reply: &Reply, output: Output) {
    if output == Output::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&reply.data).unwrap_or_default()
        );
        return;
    }
    let d = &reply.data;
    match request {
        Request::Sync if reply.ok => outln!(
            "synced: revision {}, {} map changes, {} endpoints",
            d["revision"],
            d["changes"],
            d["endpoints"]
        ),
        Request::Sync => {}
        Request::Mode { .. } => match d["namespace"].as_str() {
            Some(ns) => outln!(
                "mode of namespace {ns}: {}",
                d["mode"].as_str().unwrap_or("?")
            ),
            None => outln!("mode: {}", d["mode"].as_str().unwrap_or("?")),
        },
        Request::Explain { .. } if reply.ok => {
            let end = |e: &serde_json::Value| match e["pod"].as_object() {
                Some(p) => format!(
                    "{}/{} ({})",
                    p["namespace"].as_str().unwrap_or(""),
                    p["name"].as_str().unwrap_or(""),
                    e["ip"].as_str().unwrap_or("")
                ),
                None => e["ip"].as_str().unwrap_or("").to_owned(),
            };
            outln!(
                "{} -> {} proto {} port {}: {}",
                end(&d["from"]),
                end(&d["to"]),
                d["protocol"],
                d["port"],
                d["outcome"].as_str().unwrap_or("?").to_uppercase()
            );
            for line in d["why"].as_array().into_iter().flatten() {
                outln!("  - {}", line.as_str().unwrap_or(""));
            }
        }
        Request::Rollout { .. } if reply.ok => {
            match serde_json::from_value::<cns_agent::rollout::Report>(d.clone()) {
                Ok(r) => outln!("{}", cns_agent::rollout::render(&r).trim_end()),
                Err(e) => outln!("unreadable reply: {e}"),
            }
        }
        Request::Explain { .. }
        | Request::Monitor { .. }
        | Request::Snapshot
        | Request::Rollout { .. } => {}
        Request::History { .. } => {
            for c in d.as_array().into_iter().flatten() {
                let list = |k: &str| {
                    c[k].as_array().filter(|a| !a.is_empty()).map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                };
                let mut parts = vec![format!(
                    "{} rev {:<5} by {:<6}",
                    c["time"].as_str().unwrap_or(""),
                    c["revision"],
                    c["by"].as_str().unwrap_or("")
                )];
                for (label, key) in [
                    ("added", "policies_added"),
                    ("changed", "policies_changed"),
                    ("removed", "policies_removed"),
                    ("endpoints", "endpoints_affected"),
                ] {
                    if let Some(l) = list(key) {
                        parts.push(format!("{label}={l}"));
                    }
                }
                if let Some(m) = c["mode_change"].as_str() {
                    parts.push(format!("mode {m}"));
                }
                parts.push(format!("({} map changes)", c["map_changes"]));
                outln!("{}", parts.join(" "));
            }
        }
        Request::Show { .. } => {
            for ep in d.as_array().into_iter().flatten() {
                outln!(
                    "{} ({}, mode {})",
                    ep["pod"].as_str().unwrap_or(""),
                    ep["interface"].as_str().unwrap_or("no veth"),
                    ep["mode"].as_str().unwrap_or("")
                );
                for dir in ["ingress", "egress"] {
                    let rules = ep[dir]["rules"].as_array().cloned().unwrap_or_default();
                    let tiered = ep[dir]["cluster_policies"] == true;
                    if ep[dir]["isolated"] != true && !tiered {
                        outln!("  {dir}: not isolated (all allowed)");
                        continue;
                    }
                    outln!(
                        "  {dir}: {}{}, {} entries",
                        if ep[dir]["isolated"] == true {
                            "isolated"
                        } else {
                            "not isolated by NetworkPolicy"
                        },
                        if tiered {
                            ", ClusterNetworkPolicies apply"
                        } else {
                            ""
                        },
                        rules.len()
                    );
                    for r in rules {
                        outln!(
                            "    {:<4} {:<44} ports {:<16} by {}",
                            if dir == "ingress" { "from" } else { "to" },
                            r["peer"].as_str().unwrap_or(""),
                            r["ports"].as_str().unwrap_or(""),
                            r["policy"].as_str().unwrap_or("")
                        );
                    }
                }
                for w in ep["warnings"].as_array().into_iter().flatten() {
                    outln!("  warning: {}", w.as_str().unwrap_or(""));
                }
            }
        }
        Request::Counters => {
            outln!(
                "{:<24} {:<24} {:<8} {:<10} {:<7} {:<24} {:>10} {:>12}",
                "SOURCE",
                "DESTINATION",
                "DIR",
                "VERDICT",
                "PROTO",
                "REASON",
                "PACKETS",
                "BYTES"
            );
            for r in d.as_array().into_iter().flatten() {
                outln!(
                    "{:<24} {:<24} {:<8} {:<10} {:<7} {:<24} {:>10} {:>12}",
                    r["source"].as_str().unwrap_or(""),
                    r["destination"].as_str().unwrap_or(""),
                    r["direction"].as_str().unwrap_or(""),
                    r["verdict"].as_str().unwrap_or(""),
                    r["protocol"].as_str().unwrap_or(""),
                    r["reason"].as_str().unwrap_or("-"),
                    r["packets"].as_u64().unwrap_or(0),
                    r["bytes"].as_u64().unwrap_or(0)
                );
            }
        }
        Request::Status => {
            outln!(
                "mode:     {} (configured: {})",
                d["mode"].as_str().unwrap_or("?"),
                d["configured_mode"].as_str().unwrap_or("?")
            );
            if let Some(o) = d["namespace_overrides"]
                .as_object()
                .filter(|o| !o.is_empty())
            {
                outln!(
                    "namespace overrides: {}",
                    serde_json::Value::Object(o.clone())
                );
            }
            outln!("source:   {}", d["source"].as_str().unwrap_or("?"));
            for w in d["watches"].as_array().into_iter().flatten() {
                outln!(
                    "  watch {:<22} {:<10} lists {:<4} errors {}{}",
                    w["resource"].as_str().unwrap_or("?"),
                    if w["absent"] == true {
                        "absent"
                    } else if w["synced"] == true {
                        "synced"
                    } else {
                        "LISTING"
                    },
                    w["lists"],
                    w["errors"],
                    if w["absent"] == true {
                        " (not served: CRD not installed; checking again)".to_owned()
                    } else {
                        w["last_error"]
                            .as_str()
                            .map(|e| format!(" (last: {e})"))
                            .unwrap_or_default()
                    }
                );
            }
            outln!("node:     {}", d["node_name"].as_str().unwrap_or("?"));
            outln!("revision: {}", d["revision"]);
            outln!("endpoints:");
            for e in d["endpoints"].as_array().into_iter().flatten() {
                outln!(
                    "  {:<28} {:<15} {:<12} identity {:<6} ingress-isolated {:<5} egress-isolated {:<5} mode {}",
                    e["pod"].as_str().unwrap_or(""),
                    e["ip"].as_str().unwrap_or(""),
                    e["interface"].as_str().unwrap_or("(no veth)"),
                    e["identity"].as_u64().unwrap_or(0),
                    e["ingress_isolated"].as_bool().unwrap_or(false),
                    e["egress_isolated"].as_bool().unwrap_or(false),
                    e["mode"].as_str().unwrap_or("")
                );
            }
            for p in d["dry_run_policies"].as_array().into_iter().flatten() {
                outln!(
                    "dry-run:  {} (changes no verdict; see policy rollout)",
                    p.as_str().unwrap_or("")
                );
            }
            match d["pins"].as_str() {
                Some("ephemeral") => outln!(
                    "pins:     EPHEMERAL: enforcement stops when this agent exits ({})",
                    d["why"].as_str().unwrap_or("")
                ),
                Some(p) => outln!("pins:     {p}"),
                None => {}
            }
            if let Some(w) = d["last_sync_work"].as_object() {
                outln!(
                    "last sync: {} entries encoded, {} IP cache addresses compared, {} map ops{}",
                    w["encoded_entries"],
                    w["diffed_addresses"],
                    w["map_ops"],
                    if w["read_whole"] == true {
                        " (source read whole)"
                    } else {
                        ""
                    }
                );
            }
            outln!(
                "maps:     {} ({})",
                d["maps_dir"].as_str().unwrap_or("?"),
                d["map_sizes"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            for m in d["maps"].as_array().into_iter().flatten() {
                outln!(
                    "  {:<16} {:>8} / {:<8} entries",
                    m["map"].as_str().unwrap_or(""),
                    m["entries"].as_u64().unwrap_or(0),
                    m["capacity"].as_u64().unwrap_or(0)
                );
            }
            for x in d["xdp"].as_array().into_iter().flatten() {
                outln!(
                    "xdp:      {} (ifindex {}) mode {}",
                    x["interface"].as_str().unwrap_or(""),
                    x["ifindex"],
                    x["mode"].as_str().unwrap_or("")
                );
            }
            outln!("datapath:    {}", d["datapath_stats"]);
            for e in d["errors"].as_array().into_iter().flatten() {
                outln!("error: {}", e.as_str().unwrap_or(""));
            }
        }
    }
}
