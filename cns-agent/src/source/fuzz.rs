//! Fuzz tests of the manifest loader: a file's bytes, arbitrary or valid manifests mutated
//! byte by byte and line by line, through what the agent does with a file ([`text_of`], then
//! [`load`]). Whatever a file holds, loading never panics, every error names the file (and,
//! past the YAML, an object), a file that stops parsing keeps exactly what it gave, and an
//! object reported as keeping its last good version is still there.
//!
//! A bounded run (see [`crate::fuzz_config`]) is part of `cargo test`; failures are shrunk and
//! saved in `cns-agent/proptest-regressions/source/fuzz.txt`. A longer run:
//! `PROPTEST_CASES=100000 cargo test -p cns-agent source::fuzz`. The structured generator of
//! random policies is `source::tests::fuzz`.

use std::path::PathBuf;

use proptest::prelude::*;

use super::{LastGood, SourceError, load, text_of};

const FILE: &str = "f.yaml";

/// Valid manifests, each as a file of several objects, to mutate.
const SEEDS: [&str; 4] = [
    "apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {team: a}
  annotations: {cns.io/policy-audit-mode: \"false\"}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: demo
spec:
  podSelector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [front, back]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {}
    - ipBlock:
        cidr: 10.0.0.0/8
        except: [10.1.0.0/16]
    ports:
    - {port: 80, endPort: 90, protocol: TCP}
    - port: http
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
    ports: [{port: 53, protocol: UDP}]
",
    "apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: demo
  labels: {app: web, tier: front}
spec:
  nodeName: node-1
  containers:
  - name: web
    ports:
    - {name: http, containerPort: 8080}
    - {name: dns, containerPort: 53, protocol: UDP}
status:
  podIP: 10.0.1.10
  podIPs: [{ip: 10.0.1.10}]
",
    "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny, namespace: a}
  spec: {podSelector: {}, policyTypes: [Ingress]}
---
kind: NetworkPolicyList
items:
- metadata: {name: other, namespace: a}
  spec:
    podSelector: {matchLabels: {app: db}}
    ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
",
    "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: anchored, namespace: b, labels: &labels {app: x}}
spec:
  podSelector: {matchLabels: *labels}
  egress:
  - to: [{namespaceSelector: {}}]
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
",
];

/// Bytes and snippets that mean something to YAML, JSON or the loader.
const SNIPPETS: [&str; 30] = [
    "\n",
    " ",
    "  ",
    "\t",
    ":",
    ": ",
    "- ",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "#",
    "&a ",
    "*a",
    "*labels",
    "<<: *labels\n",
    "---\n",
    "...\n",
    "!!str ",
    "!!int ",
    "'",
    "\"",
    "\\",
    "\0",
    "\u{feff}",
    "kind: List\nitems:\n",
    "null",
    "~",
];

#[derive(Clone, Debug)]
enum Edit {
    /// At a byte offset (modulo the length).
    InsertByte(usize, u8),
    InsertSnippet(usize, usize),
    RemoveByte(usize),
    ReplaceByte(usize, u8),
    Truncate(usize),
    /// On a line (modulo the line count).
    DuplicateLine(usize),
    RemoveLine(usize),
    Indent(usize),
    Dedent(usize),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::InsertByte(i, b)),
        (any::<usize>(), 0..SNIPPETS.len()).prop_map(|(i, s)| Edit::InsertSnippet(i, s)),
        any::<usize>().prop_map(Edit::RemoveByte),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::ReplaceByte(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::RemoveLine),
        any::<usize>().prop_map(Edit::Indent),
        any::<usize>().prop_map(Edit::Dedent),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(bytes: Vec<u8>, edit: &Edit) -> Vec<u8> {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    let mut bytes = bytes;
    let len = bytes.len();
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let n = lines.len();
    match *edit {
        Edit::InsertByte(i, b) => bytes.insert(at(i, len + 1), b),
        Edit::InsertSnippet(i, s) => {
            let i = at(i, len + 1);
            bytes.splice(i..i, SNIPPETS[s].bytes());
        }
        Edit::RemoveByte(i) if len > 0 => {
            bytes.remove(at(i, len));
        }
        Edit::ReplaceByte(i, b) if len > 0 => bytes[at(i, len)] = b,
        Edit::Truncate(i) => bytes.truncate(at(i, len + 1)),
        Edit::DuplicateLine(i) => {
            let line = lines[at(i, n)].clone();
            lines.insert(at(i, n), line);
            return lines.join(&b'\n');
        }
        Edit::RemoveLine(i) => {
            lines.remove(at(i, n));
            return lines.join(&b'\n');
        }
        Edit::Indent(i) => {
            lines[at(i, n)].splice(0..0, *b"  ");
            return lines.join(&b'\n');
        }
        Edit::Dedent(i) => {
            let line = &mut lines[at(i, n)];
            let spaces = line.iter().take(2).take_while(|&&b| b == b' ').count();
            line.drain(..spaces);
            return lines.join(&b'\n');
        }
        Edit::SwapLines(a, b) => {
            lines.swap(at(a, n), at(b, n));
            return lines.join(&b'\n');
        }
        Edit::RemoveByte(_) | Edit::ReplaceByte(..) => {}
    }
    bytes
}

fn files(bytes: Vec<u8>) -> Vec<(PathBuf, Result<String, String>)> {
    vec![(PathBuf::from(FILE), text_of(bytes))]
}

/// What holds for any load of [`FILE`]: every error names it, says something, and names an
/// object unless the file as a whole failed.
fn check_errors(errors: &[SourceError]) {
    for e in errors {
        assert_eq!(e.file, PathBuf::from(FILE), "{e}");
        assert!(!e.message.is_empty() && !e.object.is_empty(), "{e:?}");
        assert!(e.to_string().starts_with("f.yaml: "), "{e}");
    }
}

proptest! {
    #![proptest_config(crate::fuzz_config(1000))]

    /// Any bytes at all, or bytes of YAML's own alphabet (which get past UTF-8 and further
    /// into the parser): never a panic, every error names the file.
    #[test]
    fn arbitrary_bytes(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::collection::vec(
                prop::sample::select(b"{}[]:,-?'\"#&*!|>%@`~ \n\n\n\t\\akmnsx019.".to_vec()),
                0..600,
            ),
        ],
    ) {
        let (_, errors) = load(&files(bytes), &mut LastGood::default());
        check_errors(&errors);
    }

    /// Valid manifests, mutated: never a panic, errors name the file and object; loaded
    /// after the unmutated version, a file that stops parsing keeps exactly what it gave, and
    /// an object said to keep its last good version is still there.
    #[test]
    fn valid_manifests_mutated(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec(edit(), 1..8),
    ) {
        let good = SEEDS[seed].as_bytes().to_vec();
        let mut last = LastGood::default();
        let (before, errors) = load(&files(good.clone()), &mut last);
        prop_assert!(errors.is_empty(), "the seed itself is invalid: {:?}", errors);
        let bad = edits.iter().fold(good, apply);
        let (after, errors) = load(&files(bad), &mut last);
        check_errors(&errors);
        if errors.iter().any(|e| e.object == "file") {
            prop_assert_eq!(errors.len(), 1);
            prop_assert_eq!(format!("{after:?}"), format!("{before:?}"));
        }
        let present: Vec<String> = after
            .namespaces
            .keys()
            .map(|n| format!("Namespace {n}"))
            .chain(after.pods.keys().map(|r| format!("Pod {r}")))
            .chain(after.policies.keys().map(|r| format!("NetworkPolicy {r}")))
            .collect();
        for e in errors.iter().filter(|e| e.kept_last_good && e.object != "file") {
            prop_assert!(present.contains(&e.object), "{} not kept: {:?}", e.object, present);
        }
    }
}

/// Bytes that are not UTF-8 are refused with where the first bad one is.
#[test]
fn not_utf8_names_the_offset() {
    let e = text_of(b"kind: Namespace\nmetadata: {name: caf\xe9}\n".to_vec()).unwrap_err();
    assert_eq!(
        e,
        "not UTF-8 text: invalid byte 0xe9 at offset 36 (line 2); save the file as UTF-8"
    );
    assert_eq!(text_of("é\n".into()).as_deref(), Ok("é\n"));
}
