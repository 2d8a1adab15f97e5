//! `cargo xtask setup | demo | bench | test | soak | image | kind`: orchestration only (the build itself is cargo's, the
//! eBPF object is built by cns-agent/build.rs). xtask depends on nothing of the project, so
//! `cargo xtask setup` works before the eBPF toolchain exists.

mod kind;

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the tests need (idempotent; see scripts/setup.sh).
    Setup,
    /// Build, create a virtual node with a few pods, and show the agent enforcing the
    /// policies of deploy/examples/ in audit then blocking mode.
    Demo,
    /// Set up, build, then run the benchmarks (issue 7); writes DIR/bench.json, DIR/bench.md
    /// and the SVG charts it shows (DIR/bench-*.svg).
    Bench {
        /// A reduced set that runs in under two minutes (CI).
        #[arg(long)]
        quick: bool,
        /// Where to write the report (default: target/bench).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Only these sections, comma-separated: kernel, traffic (with the flood from
        /// outside the node), flood (that flood alone), control.
        #[arg(long, value_name = "SECTIONS")]
        only: Option<String>,
    },
    /// The churn soak test for minutes (CI runs a 15 s form of it).
    Soak {
        /// How long to churn, in seconds.
        #[arg(long, default_value_t = 300)]
        secs: u64,
    },
    /// Build the agent's container image from the Dockerfile (needs docker).
    Image {
        /// The image tag (what deploy/kubernetes/kustomization.yaml names).
        #[arg(long, default_value = "cns-agent:dev")]
        tag: String,
    },
    /// A kind cluster running the agent: up | load | deploy | bench | down.
    Kind(kind::KindArgs),
    /// Set up, build, then run every test (unit and kernel integration tests).
    Test {
        /// Extra arguments for `cargo test` (after --).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("failed to start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn setup() -> anyhow::Result<()> {
    run(Command::new("bash").arg("scripts/setup.sh"))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup(),
        Cmd::Demo => {
            setup()?;
            run(cargo().args(["build", "-p", "cns-agent"]))?;
            run(cargo().args(["run", "-q", "-p", "cns-tests", "--bin", "cns-demo"]))
        }
        Cmd::Bench { quick, out, only } => {
            setup()?;
            // The traffic section runs the real agent (release, beside cns-bench).
            run(cargo().args(["build", "--release", "-q", "-p", "cns-agent"]))?;
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--release",
                "-q",
                "-p",
                "cns-tests",
                "--bin",
                "cns-bench",
                "--",
            ]);
            if quick {
                cmd.arg("--quick");
            }
            if let Some(out) = out {
                // Relative to where xtask was started, not to the workspace root.
                cmd.arg("--out").arg(std::path::absolute(out)?);
            }
            if let Some(only) = only {
                cmd.args(["--only", &only]);
            }
            run(&mut cmd)
        }
        Cmd::Soak { secs } => {
            setup()?;
            run(cargo().args(["build", "-p", "cns-agent"]))?;
            run(cargo()
                .args([
                    "test",
                    "-p",
                    "cns-tests",
                    "--test",
                    "soak",
                    "--",
                    "--nocapture",
                ])
                .env("CNS_SOAK_SECS", secs.to_string())
                .env("CNS_REQUIRE_KERNEL_TESTS", "1"))
        }
        Cmd::Image { tag } => kind::build_image(&root(), &tag),
        Cmd::Kind(args) => kind::run(args, &root()),
        Cmd::Test { args } => {
            setup()?;
            run(cargo().args(["build", "-p", "cns-agent"]))?;
            run(cargo().args(["test", "--no-fail-fast", "--"]).args(args))
        }
    }
}
