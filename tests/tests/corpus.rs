//! The adversarial corpus (issue 18): bad manifests and bad control requests, kept as data
//! under `tests/corpus/`, each with what the agent must make of it. No kernel, no root.
//!
//! `tests/corpus/manifests/CASE/` is a manifests directory (its `*.yaml` files) and an
//! `expect.txt`; each case is copied to a directory of its own and read there by the agent's
//! manifest source (`ManifestSource`, as `cns-agent run --manifests` reads it) and by
//! `policy check` (`check::check`). Every error must name a file of the case and be at most
//! 8 KiB, the agent's errors must be the ones `policy check` prints, and reading again gives
//! the same errors.
//! Lines of `expect.txt` (`#` starts a comment):
//!
//! - `error: TEXT`: some error, as `policy check` prints it with paths relative to the case
//!   (`error: bad.yaml: NetworkPolicy demo/p: spec.ingress[0].ports[0].port: ...`), contains TEXT;
//! - `errors: N`: exactly N errors;
//! - `loaded: KIND NAMESPACE/NAME` (or `loaded: Namespace NAME`): the agent enforces that
//!   object in spite of the errors;
//! - `policies: N`: exactly N policies are loaded;
//! - `link: NAME -> TARGET`: a symbolic link made in the copy (links are not committed);
//! - `expand: FILE N TOKEN`: in the copy, each TOKEN of FILE (`\n` for a newline, `\t` for a tab) repeated
//!   N times, so that a large input stays small in git.
//!
//! `tests/corpus/control/CASE/` holds `request` (the bytes a client sends, then it stops
//! writing) and an `expect.txt`, sent to the control server (`control::serve` on a socket of
//! its own, with a stand-in agent that answers every request with its JSON). Lines:
//!
//! - `ok: JSON`: the request is taken, and is this one;
//! - `error: TEXT`: it is refused, with an error containing TEXT;
//! - `expand: N TOKEN`: as for manifests, in `request`.
//!
//! A new case is a directory: no code to change. `CNS_CORPUS_SHOW=1` prints what every
//! manifests case gave (and fails the test, so that it prints).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use cns_agent::{
    check,
    control::{self, Reply, Request},
    policy::model::SnapshotUpdate,
    source::{ManifestSource, SnapshotSource},
};

/// The longest error `policy check` may print for one problem.
const MAX_ERROR_BYTES: usize = 8 * 1024;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(kind);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

/// The `(key, value)` lines of a case's `expect.txt`.
fn expectations(case: &Path) -> Vec<(String, String)> {
    let path = case.join("expect.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("{}: a line without `key:`: {l}", path.display()));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// `text` with each `token` (`\n`: a newline) repeated `n` times.
fn expand(text: &[u8], spec: &str) -> Vec<u8> {
    let (n, token) = spec
        .split_once(' ')
        .unwrap_or_else(|| panic!("`expand: N TOKEN` wanted, not {spec:?}"));
    let n: usize = n.parse().expect("N of `expand: N TOKEN`");
    let token = token.replace("\\n", "\n").replace("\\t", "\t").into_bytes();
    let mut out = Vec::with_capacity(text.len() + n * token.len());
    let mut rest = text;
    while let Some(i) = rest.windows(token.len()).position(|w| w == token) {
        out.extend_from_slice(&rest[..i]);
        for _ in 0..n {
            out.extend_from_slice(&token);
        }
        rest = &rest[i + token.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// A directory of its own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cns-corpus-{}-{name}", cns_tests::unique("")));
        _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The case's files in a directory of its own, with its links made and tokens expanded.
fn materialize(case: &Path, expect: &[(String, String)]) -> TempDir {
    let name = case.file_name().unwrap().to_string_lossy();
    let dir = TempDir::new(&name);
    for entry in std::fs::read_dir(case).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap();
        if file != "expect.txt" {
            std::fs::copy(&path, dir.0.join(file)).unwrap();
        }
    }
    for (key, value) in expect {
        match key.as_str() {
            "link" => {
                let (link, target) = value
                    .split_once(" -> ")
                    .unwrap_or_else(|| panic!("{name}: `link: NAME -> TARGET`, not {value:?}"));
                std::os::unix::fs::symlink(target, dir.0.join(link)).unwrap();
            }
            "expand" => {
                let (file, spec) = value
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{name}: `expand: FILE N TOKEN`, not {value:?}"));
                let path = dir.0.join(file);
                let text = std::fs::read(&path).unwrap();
                std::fs::write(&path, expand(&text, spec)).unwrap();
            }
            _ => {}
        }
    }
    dir
}

/// What goes wrong with one manifests case, if anything.
fn run_manifest_case(case: &Path) -> Vec<String> {
    let expect = expectations(case);
    let dir = materialize(case, &expect);
    let mut problems = Vec::new();
    let relative = |line: String| line.replace(&format!("{}/", dir.0.display()), "");

    // `policy check DIR`.
    let report = check::check(&check::read(std::slice::from_ref(&dir.0)));
    let checked: Vec<String> = report
        .errors
        .iter()
        .map(|e| relative(format!("error: {e}")))
        .collect();
    for e in &report.errors {
        if !e.file.starts_with(&dir.0) || e.file == dir.0 {
            problems.push(format!("an error that names no file of the case: {e}"));
        }
    }
    // However large the input, an error is a few lines (it is logged, and in `status`).
    for e in &checked {
        if e.len() > MAX_ERROR_BYTES {
            let start: String = e.chars().take(200).collect();
            problems.push(format!("an error of {} bytes: {start}...", e.len()));
        }
    }

    // The agent's source, read twice (the second read takes what did not change as it was).
    let mut source = ManifestSource::new(dir.0.clone());
    let state = match source.read(true) {
        Ok(state) => state,
        Err(e) => return vec![format!("the manifest source failed: {e}")],
    };
    let SnapshotUpdate::Full(snapshot) = state.update else {
        return vec!["a first read that is not a full snapshot".into()];
    };
    let agent: Vec<String> = state
        .errors
        .iter()
        .map(|e| relative(format!("error: {e}")))
        .collect();
    for e in &agent {
        if !checked.contains(e) {
            problems.push(format!(
                "the agent reports what `policy check` does not: {e}"
            ));
        }
    }
    match source.read(false) {
        Ok(again) => {
            let again: Vec<String> = again
                .errors
                .iter()
                .map(|e| relative(format!("error: {e}")))
                .collect();
            if again != agent {
                problems.push(format!("a second read reports {again:?}"));
            }
        }
        Err(e) => problems.push(format!("a second read failed: {e}")),
    }

    for (key, value) in &expect {
        match key.as_str() {
            "error" => {
                if !checked.iter().any(|e| e.contains(value.as_str())) {
                    problems.push(format!("no error contains {value:?}"));
                }
            }
            "errors" => {
                let n: usize = value.parse().expect("errors: N");
                if checked.len() != n {
                    problems.push(format!("{} errors, not {n}", checked.len()));
                }
            }
            "policies" => {
                let n: usize = value.parse().expect("policies: N");
                if snapshot.policies.len() != n || report.policies != n {
                    problems.push(format!(
                        "{} policies loaded by the agent and {} by `policy check`, not {n}",
                        snapshot.policies.len(),
                        report.policies
                    ));
                }
            }
            "loaded" => {
                let found = match value.split_once(' ') {
                    Some(("Namespace", name)) => snapshot.namespaces.contains_key(name),
                    Some((kind, full)) => {
                        let (ns, name) = full.split_once('/').unwrap_or(("default", full));
                        let r = cns_agent::policy::model::ObjectRef::new(ns, name);
                        match kind {
                            "Pod" => snapshot.pods.contains_key(&r),
                            "NetworkPolicy" => snapshot.policies.contains_key(&r),
                            _ => panic!("loaded: unknown kind {kind}"),
                        }
                    }
                    None => panic!("loaded: KIND NAME, not {value:?}"),
                };
                if !found {
                    problems.push(format!("{value} is not loaded"));
                }
            }
            "link" | "expand" => {}
            _ => panic!("{}: unknown expectation {key:?}", case.display()),
        }
    }
    if !problems.is_empty() || std::env::var_os("CNS_CORPUS_SHOW").is_some() {
        problems.push(format!(
            "`policy check` said:\n  {}\n  loaded: {:?} {:?} {:?}",
            checked.join("\n  "),
            snapshot.namespaces.keys().collect::<Vec<_>>(),
            snapshot
                .pods
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            snapshot
                .policies
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        ));
    }
    problems
}

#[test]
fn manifests() {
    let cases = corpus("manifests");
    assert!(cases.len() >= 30, "the corpus lost cases: {cases:?}");
    assert_every_case_holds(&cases, run_manifest_case);
}

/// The control server on a socket of its own, with a stand-in agent that answers every
/// request with the request itself.
struct Server {
    _dir: TempDir,
    socket: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Self {
        let dir = TempDir::new("control");
        let socket = dir.0.join("agent.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async {
            let listener = control::bind(&socket).expect("binding the control socket");
            let (requests, mut incoming) = tokio::sync::mpsc::channel::<control::Envelope>(16);
            let (events, _) = tokio::sync::broadcast::channel(16);
            tokio::spawn(control::serve(listener, requests, events));
            tokio::spawn(async move {
                while let Some((req, reply)) = incoming.recv().await {
                    _ = reply.send(Reply::ok(&req));
                }
            });
        });
        Self {
            _dir: dir,
            socket,
            _runtime: runtime,
        }
    }

    /// Sends `bytes` (while reading, so that a refusal mid-request is seen), stops writing,
    /// and returns the reply line.
    fn send(&self, bytes: Vec<u8>) -> String {
        let stream = UnixStream::connect(&self.socket).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            // The server may refuse and close before it has read everything.
            _ = writer.write_all(&bytes);
            _ = writer.shutdown(std::net::Shutdown::Write);
        });
        let mut line = String::new();
        let read = BufReader::new(&stream).read_line(&mut line);
        sender.join().unwrap();
        read.map(|_| line)
            .unwrap_or_else(|e| format!("(reading the reply failed: {e})"))
    }
}

/// What goes wrong with one control case, if anything.
fn run_control_case(server: &Server, case: &Path) -> Vec<String> {
    let expect = expectations(case);
    let mut request = std::fs::read(case.join("request")).expect("a case's `request`");
    for (key, value) in &expect {
        if key == "expand" {
            request = expand(&request, value);
        }
    }
    let line = server.send(request);
    let reply: Reply = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return vec![format!("an invalid reply ({e}): {line:?}")],
    };
    let mut problems = Vec::new();
    for (key, value) in &expect {
        match key.as_str() {
            "ok" => {
                let want: Request = serde_json::from_str(value).expect("ok: a request's JSON");
                let got = serde_json::from_value::<Request>(reply.data.clone()).ok();
                if !reply.ok || got.as_ref() != Some(&want) {
                    problems.push(format!("not taken as {want:?}: {line}"));
                }
            }
            "error" => {
                let error = reply.error.as_deref().unwrap_or_default();
                if reply.ok || !error.contains(value.as_str()) {
                    problems.push(format!("not refused with {value:?}: {line}"));
                }
            }
            "expand" => {}
            _ => panic!("{}: unknown expectation {key:?}", case.display()),
        }
    }
    problems
}

#[test]
fn control_requests() {
    let cases = corpus("control");
    assert!(cases.len() >= 15, "the corpus lost cases: {cases:?}");
    let server = Server::start();
    assert_every_case_holds(&cases, |case| run_control_case(&server, case));
}

/// Runs `run` on every case; fails listing each case's problems.
fn assert_every_case_holds(cases: &[PathBuf], run: impl Fn(&Path) -> Vec<String>) {
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let problems = run(case);
            (!problems.is_empty()).then(|| {
                format!(
                    "{}:\n  {}",
                    case.file_name().unwrap().to_string_lossy(),
                    problems.join("\n  ")
                )
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}
