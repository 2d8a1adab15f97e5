//! `cargo xtask bench [--quick] [--out DIR] [--only kernel,traffic,control]`: runs the benchmarks of
//! `cns_tests::bench` and writes `DIR/bench.json`, `DIR/bench.md` and the SVG charts that
//! bench.md shows, `DIR/bench-*.svg` (default DIR: `target/bench`).

use std::{path::PathBuf, time::Instant};

use cns_tests::bench::{Options, charts, control, kernel, kube, report, traffic};

const USAGE: &str = "usage: cns-bench [--quick] [--out DIR] [--only kernel,traffic,flood,control,kube]
       cns-bench charts BENCH_JSON DIR   (draws the charts of an earlier run's bench.json into DIR)";

#[global_allocator]
static HEAP: cns_tests::bench::heap::Counting = cns_tests::bench::heap::Counting;

fn main() {
    if let Err(e) = run() {
        eprintln!("cns-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The agent the traffic section runs: the one built beside this binary, unless given.
    if std::env::var_os("CNS_AGENT_BIN").is_none() {
        let sibling = std::env::current_exe()?.with_file_name("cns-agent");
        if sibling.exists() {
            // SAFETY: single-threaded at this point.
            unsafe { std::env::set_var("CNS_AGENT_BIN", sibling) };
        }
    }
    if args.first().map(String::as_str) == Some("control-child") {
        return control::child(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("charts") {
        let [_, json, dir] = args.as_slice() else {
            anyhow::bail!(USAGE);
        };
        let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json)?)?;
        let charts = charts::render(&data);
        std::fs::create_dir_all(dir)?;
        charts::write(dir.as_ref(), &charts)?;
        for c in &charts {
            println!("{dir}/{}", c.file);
        }
        return Ok(());
    }
    let mut opts = Options {
        quick: false,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench")),
    };
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--out" => opts.out = it.next().ok_or_else(|| anyhow::anyhow!(USAGE))?.into(),
            "--only" => {
                only = Some(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!(USAGE))?
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let wants = |s: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    let started = Instant::now();
    let mut progress =
        |msg: &str| eprintln!("[bench {:>5.1}s] {msg}", started.elapsed().as_secs_f64());
    std::fs::create_dir_all(&opts.out)?;
    let mut command = "cargo xtask bench".to_owned();
    if opts.quick {
        command.push_str(" --quick");
    }
    let mut rep = report::Report {
        machine: report::machine(),
        quick: opts.quick,
        command,
        kernel: None,
        kernel_skipped: None,
        control: None,
        traffic: None,
        traffic_skipped: None,
        kube: None,
        notes: vec![
            "Traffic: sockperf (latency here comes from the bench's own sockets).".into(),
            "The denied flood on a real NIC (native XDP in a driver) and over several CPUs: the virtual node's veths have one queue and the generator shares the 2 vCPUs with the node.".into(),
            "Time from `cns-agent sync` to enforced with the real agent process, and the file watcher's debounce (section 4 measures the sync pipeline in-process).".into(),
            "`cargo xtask kind bench`.".into(),
        ],
        seconds: 0.0,
    };

    if wants("kernel") {
        if cns_tests::kernel_or_skip("bench kernel") {
            let params = kernel::Params::new(&opts);
            let ms = kernel::run(&params, &mut progress)?;
            rep.kernel = Some((params, ms));
        } else {
            rep.kernel_skipped = Some("needs root, BTF and bpffs".into());
        }
    }
    // "traffic" is both parts; "flood" only the denied flood from outside the node.
    if wants("traffic") || wants("flood") {
        if cns_tests::kernel_or_skip("bench traffic") {
            rep.traffic = Some(traffic::run(&opts, wants("traffic"), true, &mut progress)?);
        } else {
            rep.traffic_skipped = Some("needs root, iproute2 and BTF".into());
        }
    }
    if wants("control") {
        rep.control = Some(control::run(&opts, &mut progress)?);
    }
    if wants("kube") && cns_tests::kernel_or_skip("bench kube") {
        rep.kube = Some(kube::run(&opts, &mut progress)?);
    }
    rep.seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&rep.json())?;
    std::fs::write(opts.out.join("bench.json"), json)?;
    let md = rep.markdown();
    std::fs::write(opts.out.join("bench.md"), &md)?;
    let charts = rep.charts();
    charts::write(&opts.out, &charts)?;
    progress(&format!(
        "wrote {}/bench.json, bench.md and {} charts ({})",
        opts.out.display(),
        charts.len(),
        charts.iter().map(|c| c.file).collect::<Vec<_>>().join(", ")
    ));
    for h in rep.headlines() {
        println!("{h}");
    }
    Ok(())
}
