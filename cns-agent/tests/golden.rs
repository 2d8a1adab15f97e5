//! Golden-output tests of the offline commands (`policy check`, `policy diff --from`): each
//! `tests/golden/*.golden` starts with the command line (`$ cns-agent ARGS`, run in
//! `tests/golden` on the manifests under `manifests/`), followed by what it must print:
//! stdout, then stderr after a `[stderr]` line if any, then `[exit N]`.
//!
//! A new case is a new file holding only its command line. `UPDATE_GOLDEN=1 cargo test -p
//! cns-agent --test golden` (re)writes the expected output of every case; review the
//! change with `git diff` before committing it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Runs `args` the way a user would and records what it printed.
fn run(args: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cns-agent"))
        .args(args.split_whitespace())
        .current_dir(golden_dir())
        .env("CNS_LOG", "warn")
        .env_remove("CNS_LOG_FORMAT")
        .env_remove("CNS_SOCKET")
        .env_remove("RUST_BACKTRACE")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .unwrap_or_else(|e| panic!("failed to run cns-agent {args}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.is_empty() {
        text.push_str("[stderr]\n");
        text.push_str(&stderr);
    }
    let code = out
        .status
        .code()
        .map_or_else(|| "signal".to_owned(), |c| c.to_string());
    text.push_str(&format!("[exit {code}]\n"));
    text
}

/// A readable `-`/`+` line diff for a failing case.
fn line_diff(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(g.len()) {
        match (e.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => out.push_str(&format!("  {a}\n")),
            (a, b) => {
                if let Some(a) = a {
                    out.push_str(&format!("- {a}\n"));
                }
                if let Some(b) = b {
                    out.push_str(&format!("+ {b}\n"));
                }
            }
        }
    }
    out
}

#[test]
fn offline_commands_print_their_golden_output() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "golden"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in {:?}", golden_dir());
    let mut failed = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).expect("readable golden file");
        let (command, expected) = text.split_once('\n').unwrap_or((&text, ""));
        let args = command
            .strip_prefix("$ cns-agent ")
            .unwrap_or_else(|| panic!("{}: first line must be `$ cns-agent ARGS`", case.display()));
        let got = run(args);
        if got == expected {
            continue;
        }
        if update {
            std::fs::write(case, format!("{command}\n{got}")).expect("writable golden file");
            eprintln!("updated {}", case.display());
        } else {
            failed.push(format!(
                "{} (`cns-agent {args}`), - expected + got:\n{}",
                case.display(),
                line_diff(expected, &got)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} golden cases differ (UPDATE_GOLDEN=1 rewrites them):\n{}",
        failed.len(),
        failed.join("\n")
    );
}
