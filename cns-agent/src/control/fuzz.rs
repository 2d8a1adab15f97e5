//! Fuzz tests of the control socket's request parser ([`read_request`]): arbitrary bytes,
//! valid requests mutated byte by byte, and endless lines, delivered in chunks of any size.
//! Whatever a client sends, the parser never panics, takes at most `MAX_REQUEST_BYTES + 1`
//! bytes from the connection, refuses a line over the limit as such, and whatever it accepts
//! is a request that encodes back to itself.
//!
//! A bounded run (2000 cases a property, see [`crate::fuzz_config`]) is part of `cargo test`;
//! failures are shrunk and saved in `cns-agent/proptest-regressions/control/fuzz.txt`. A longer
//! run: `PROPTEST_CASES=100000 cargo test -p cns-agent control::fuzz`.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

use super::{MAX_REQUEST_BYTES, Request, RequestError, read_request};
use crate::policy::AuditMode;

/// A client's bytes as the server's socket yields them: `chunk` bytes at most per read, then
/// `fill` for ever (an endless line) or the end of the stream; counts what was taken.
struct Client {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    fill: Option<u8>,
    taken: usize,
}

impl Client {
    fn new(data: Vec<u8>, chunk: usize, fill: Option<u8>) -> Self {
        Self {
            data,
            pos: 0,
            chunk: chunk.max(1),
            fill,
            taken: 0,
        }
    }
}

impl AsyncRead for Client {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(buf.remaining());
        let rest = &self.data[self.pos..];
        let given = if rest.is_empty() {
            match self.fill {
                Some(b) => {
                    buf.put_slice(&vec![b; n]);
                    n
                }
                None => 0,
            }
        } else {
            let n = n.min(rest.len());
            buf.put_slice(&rest[..n]);
            self.pos += n;
            n
        };
        self.taken += given;
        Poll::Ready(Ok(()))
    }
}

/// What the server makes of `client`, and how many bytes it took.
fn parse(mut client: Client) -> (Result<Request, RequestError>, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let parsed = rt.block_on(read_request(&mut client));
    (parsed, client.taken)
}

/// The first line of `bytes` (with its newline, as the server reads it).
fn first_line(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => bytes,
    }
}

/// The properties every outcome has, given what the client sent (`fill`: then endlessly).
fn check(sent: &[u8], fill: Option<u8>, parsed: &Result<Request, RequestError>, taken: usize) {
    assert!(
        taken <= MAX_REQUEST_BYTES + 1,
        "took {taken} bytes from the client"
    );
    let line = first_line(sent);
    let endless = fill.is_some_and(|b| b != b'\n') && !line.ends_with(b"\n");
    let too_long = line.len() > MAX_REQUEST_BYTES || endless;
    match parsed {
        Ok(req) => {
            assert!(!too_long, "accepted a line over the limit");
            let encoded = serde_json::to_vec(req).expect("a request encodes");
            let again: Request = serde_json::from_slice(&encoded).expect("and decodes");
            assert_eq!(&again, req, "a request that does not encode back to itself");
        }
        Err(RequestError::TooLarge) => assert!(too_long, "a short line refused as too large"),
        Err(RequestError::Invalid { .. }) => assert!(!too_long),
        Err(e) => panic!("an in-memory client cannot give {e}"),
    }
    if let Err(e) = parsed {
        let text = crate::error_chain(e);
        assert!(
            text.starts_with("refused: ") || text.starts_with("invalid request: "),
            "{text}"
        );
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9/.:-]{0,20}",
        "\\PC{0,40}",
        Just("x".repeat(3000)),
    ]
}

/// Every kind of request, with arbitrary contents.
fn request() -> impl Strategy<Value = Request> {
    let mode = prop_oneof![
        Just(None),
        Just(Some(AuditMode::Audit)),
        Just(Some(AuditMode::Blocking))
    ];
    prop_oneof![
        Just(Request::Sync),
        Just(Request::Status),
        Just(Request::Counters),
        Just(Request::Snapshot),
        (mode, proptest::option::of(text()))
            .prop_map(|(audit, namespace)| Request::Mode { audit, namespace }),
        (proptest::option::of(text()), proptest::option::of(text()))
            .prop_map(|(namespace, pod)| Request::Show { namespace, pod }),
        (
            proptest::collection::vec(text(), 0..4),
            proptest::option::of(text())
        )
            .prop_map(|(types, namespace)| Request::Monitor { types, namespace }),
        any::<usize>().prop_map(|n| Request::History { n }),
        (text(), text(), text()).prop_map(|(from, to, port)| Request::Explain { from, to, port }),
    ]
}

/// Lines of about [`MAX_REQUEST_BYTES`]: random bytes padded with one byte, a newline (or
/// not) at the end.
fn near_the_limit() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..100),
        any::<u8>(),
        MAX_REQUEST_BYTES - 2..MAX_REQUEST_BYTES + 3,
        any::<bool>(),
    )
        .prop_map(|(mut bytes, pad, len, newline)| {
            bytes.resize(len, pad);
            if newline {
                bytes[len - 1] = b'\n';
            }
            bytes
        })
}

/// One change to a request line's bytes.
#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, u8),
    Remove(usize),
    Replace(usize, u8),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Bytes JSON gives meaning to, more often than others.
    let byte = prop_oneof![
        prop::sample::select(b"{}[]\":,\\ \n0-e.tfn\x00\xff".to_vec()),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *edit {
        Edit::Insert(i, b) => {
            let i = at(i, bytes.len() + 1);
            bytes.insert(i, b);
        }
        Edit::Remove(i) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes.remove(i);
        }
        Edit::Replace(i, b) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] = b;
        }
        Edit::Truncate(i) => bytes.truncate(at(i, bytes.len() + 1)),
        Edit::Remove(_) | Edit::Replace(..) => {}
    }
}

proptest! {
    #![proptest_config(crate::fuzz_config(2000))]

    #[test]
    fn arbitrary_bytes(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            near_the_limit(),
        ],
        chunk in 1usize..5000,
    ) {
        let (parsed, taken) = parse(Client::new(bytes.clone(), chunk, None));
        check(&bytes, None, &parsed, taken);
    }

    #[test]
    fn valid_requests_mutated(
        req in request(),
        edits in proptest::collection::vec(edit(), 0..6),
        newline in any::<bool>(),
        chunk in 1usize..200,
    ) {
        let mut bytes = serde_json::to_vec(&req).unwrap();
        if newline {
            bytes.push(b'\n');
        }
        let (parsed, taken) = parse(Client::new(bytes.clone(), chunk, None));
        check(&bytes, None, &parsed, taken);
        // Unchanged, it is read as itself.
        prop_assert_eq!(parsed.ok(), Some(req));
        for e in &edits {
            apply(&mut bytes, e);
        }
        let (parsed, taken) = parse(Client::new(bytes.clone(), chunk, None));
        check(&bytes, None, &parsed, taken);
    }

    /// A request that never ends (after a valid start, or any start) is cut off at the limit.
    #[test]
    fn endless_lines_are_cut_off_at_the_limit(
        req in request(),
        start in proptest::collection::vec(any::<u8>(), 0..100),
        valid_start in any::<bool>(),
        fill in any::<u8>(),
        chunk in 1usize..(1 << 17),
    ) {
        let sent = if valid_start { serde_json::to_vec(&req).unwrap() } else { start };
        let (parsed, taken) = parse(Client::new(sent.clone(), chunk, Some(fill)));
        check(&sent, Some(fill), &parsed, taken);
    }
}

/// The limit is exact: a line of `MAX_REQUEST_BYTES` (newline included) is read, one byte
/// more is refused, and a request padded with whitespace to the limit is still a request.
#[test]
fn the_limit_is_exact() {
    let padded = |len: usize| {
        let mut line = br#"{"cmd":"status"}"#.to_vec();
        line.resize(len - 1, b' ');
        line.push(b'\n');
        line
    };
    let (parsed, taken) = parse(Client::new(padded(MAX_REQUEST_BYTES), 4096, None));
    assert_eq!(parsed.ok(), Some(Request::Status));
    assert_eq!(taken, MAX_REQUEST_BYTES);
    let (parsed, taken) = parse(Client::new(padded(MAX_REQUEST_BYTES + 1), 4096, None));
    assert!(matches!(parsed, Err(RequestError::TooLarge)), "{parsed:?}");
    assert_eq!(taken, MAX_REQUEST_BYTES + 1);
    // Bytes after the newline are never read as part of the request.
    let mut two = b"{\"cmd\":\"sync\"}\n".to_vec();
    two.extend(vec![b'x'; 2 * MAX_REQUEST_BYTES]);
    let (parsed, taken) = parse(Client::new(two, 1 << 20, None));
    assert_eq!(parsed.ok(), Some(Request::Sync));
    assert!(taken <= MAX_REQUEST_BYTES + 1, "{taken}");
}
