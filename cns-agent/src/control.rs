//! The control socket: a root-only Unix socket speaking one JSON request and one JSON reply
//! per connection, each on one line. `cns-agent sync|status|counters|mode` are its clients.
//!
//! Clients cannot exhaust the agent: a request line is at most [`MAX_REQUEST_BYTES`], it must
//! arrive within [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] are served at once, and
//! accept errors (EMFILE) back off instead of spinning ([`limits`]).

#[cfg(test)]
mod fuzz;
pub mod limits;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, broadcast, mpsc, oneshot},
    time::timeout,
};

use crate::events::{Published, sinks::EventSinks};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Re-read the source now; reply once the result is in the maps.
    Sync,
    Status,
    Counters,
    /// Override the policy audit mode at runtime, globally or for one namespace; `audit:
    /// None` drops the override (back to the configured mode).
    Mode {
        audit: Option<crate::policy::AuditMode>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    /// The rules in force, read back from the maps.
    Show {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod: Option<String>,
    },
    /// Stream drop/audit events as JSON lines until the client hangs up (handled by the
    /// control server itself, not the agent thread).
    Monitor {
        /// Event types to include (`drop`, `audit`, `policy-verdict`); empty = all.
        #[serde(default)]
        types: Vec<String>,
        /// Only events whose source or destination is in this namespace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    /// The last `n` enforcement changes, newest first.
    History {
        n: usize,
    },
    /// Explain the verdict for one flow.
    Explain {
        from: String,
        to: String,
        port: String,
    },
    /// The live snapshot and node, trimmed to what the compiler reads (`policy diff`).
    Snapshot,
    /// What each dry-run policy would change, and whether it is safe to enforce.
    Rollout {
        /// Would-be drops this far back make a policy unsafe (default 1h).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
        /// Report as of this time (RFC 3339) instead of now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Reply {
    pub fn ok(data: impl Serialize) -> Self {
        Self {
            ok: true,
            error: None,
            data: serde_json::to_value(data).unwrap_or_default(),
        }
    }

    pub fn err(error: impl ToString, data: impl Serialize) -> Self {
        Self {
            ok: false,
            error: Some(error.to_string()),
            data: serde_json::to_value(data).unwrap_or_default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("failed to bind the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to replace {path} with the control socket: it exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("failed to reach the agent at {path} (is `cns-agent run` running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to talk to the agent at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent at {path} sent an invalid reply")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The longest request line accepted (requests are a few hundred bytes).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A client must send its request within this time, and take each reply (or `monitor`
/// line) within it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once (`monitor` streams included); more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// A request with the channel its reply goes back on.
pub type Envelope = (Request, oneshot::Sender<Reply>);

/// Binds `path` (root-only: mode 0600; directories it creates are 0700), replacing a stale
/// socket. A path that exists and is not a socket is never deleted: that is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    let err = |source| ControlError::Bind {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(ControlError::NotASocket { path: path.into() });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serves connections until the request channel closes.
pub async fn serve(
    listener: UnixListener,
    requests: mpsc::Sender<Envelope>,
    events: broadcast::Sender<Published>,
) {
    serve_with(listener, requests, events, None).await;
}

/// [`serve`], and with `sinks`: `monitor` clients' delivered and lost events are counted.
pub async fn serve_with(
    listener: UnixListener,
    requests: mpsc::Sender<Envelope>,
    events: broadcast::Sender<Published>,
    sinks: Option<EventSinks>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = limits::AcceptBackoff::default();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                tokio::time::sleep(backoff.failed("control socket", &e)).await;
                continue;
            }
        };
        let requests = requests.clone();
        let events = events.subscribe();
        let sinks = sinks.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, requests, events, sinks.as_ref()).await {
                tracing::debug!(error = %e, "control connection failed");
            }
            drop(slot);
        });
    }
}

/// Why a request was not taken; the client is told (`Reply::err`) and the connection closed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("refused: no request within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("refused: reading the request failed")]
    Read {
        #[source]
        source: std::io::Error,
    },
    #[error("refused: request larger than {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("invalid request")]
    Invalid {
        #[source]
        source: serde_json::Error,
    },
}

/// Reads and decodes one request line of at most [`MAX_REQUEST_BYTES`] within
/// [`REQUEST_TIMEOUT`]: at most `MAX_REQUEST_BYTES + 1` bytes are taken from `read`, whatever
/// it holds. The control server's parser, public for the fuzz tests and the corpus.
pub async fn read_request(read: impl AsyncRead + Unpin) -> Result<Request, RequestError> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
    match timeout(REQUEST_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
        Err(_) => Err(RequestError::Timeout),
        Ok(Err(source)) => Err(RequestError::Read { source }),
        Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => Err(RequestError::TooLarge),
        Ok(Ok(_)) => {
            serde_json::from_slice(&line).map_err(|source| RequestError::Invalid { source })
        }
    }
}

/// Writes `bytes` within [`REQUEST_TIMEOUT`].
async fn write_timed(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    bytes: &[u8],
) -> std::io::Result<()> {
    timeout(REQUEST_TIMEOUT, write.write_all(bytes))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

async fn handle(
    stream: UnixStream,
    requests: mpsc::Sender<Envelope>,
    events: broadcast::Receiver<Published>,
    sinks: Option<&EventSinks>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let reply = match read_request(read).await {
        Err(e) => Reply::err(crate::error_chain(&e), ()),
        Ok(Request::Monitor { types, namespace }) => {
            return monitor(write, events, &types, namespace.as_deref(), sinks).await;
        }
        Ok(req) => {
            let (tx, rx) = oneshot::channel();
            if requests.send((req, tx)).await.is_err() {
                Reply::err("the agent is shutting down", ())
            } else {
                rx.await
                    .unwrap_or_else(|_| Reply::err("the agent dropped the request", ()))
            }
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    write_timed(&mut write, &out).await?;
    write.shutdown().await
}

/// Streams events to a `monitor` client; a lagging client is told how many it missed.
async fn monitor(
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut events: broadcast::Receiver<Published>,
    types: &[String],
    namespace: Option<&str>,
    sinks: Option<&EventSinks>,
) -> std::io::Result<()> {
    let monitor = sinks.map(|s| &s.monitor);
    loop {
        let (line, delivered) = match events.recv().await {
            Ok(ev) => {
                if !types.is_empty() && !types.iter().any(|t| t == ev.kind) {
                    continue;
                }
                if let Some(ns) = namespace {
                    let in_ns = |side: &str| ev.json[side]["namespace"] == ns;
                    if !in_ns("source") && !in_ns("destination") {
                        continue;
                    }
                }
                (ev.json.to_string(), 1)
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                if let Some(m) = monitor {
                    m.dropped(n);
                }
                (serde_json::json!({ "lost": n }).to_string(), 0)
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        write_timed(&mut write, format!("{line}\n").as_bytes()).await?;
        if let Some(m) = monitor {
            m.delivered(delivered);
        }
    }
}

/// Connects and sends `req`; returns the reading half for the reply.
async fn send(path: &Path, req: &Request) -> Result<tokio::net::unix::OwnedReadHalf, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.into(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut msg = serde_json::to_vec(req).unwrap_or_default();
    msg.push(b'\n');
    write
        .write_all(&msg)
        .await
        .map_err(|source| ControlError::Io {
            path: path.into(),
            source,
        })?;
    Ok(read)
}

/// Sends a `monitor` request and calls `on_line` with each event line until the agent goes.
pub async fn stream(
    path: &Path,
    req: &Request,
    mut on_line: impl FnMut(&str),
) -> Result<(), ControlError> {
    let io = |source| ControlError::Io {
        path: path.into(),
        source,
    };
    let mut lines = BufReader::new(send(path, req).await?).lines();
    while let Some(line) = lines.next_line().await.map_err(io)? {
        on_line(&line);
    }
    Ok(())
}

/// Sends one request and waits for the reply.
pub async fn call(path: &Path, req: &Request) -> Result<Reply, ControlError> {
    let mut line = String::new();
    BufReader::new(send(path, req).await?)
        .read_line(&mut line)
        .await
        .map_err(|source| ControlError::Io {
            path: path.into(),
            source,
        })?;
    serde_json::from_str(&line).map_err(|source| ControlError::Decode {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cns-control-{name}-{}", std::process::id()));
        _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn the_socket_directories_it_creates_are_root_only() {
        let base = temp_dir("mode");
        let path = base.join("run/cns/agent.sock");
        let _listener = bind(&path).unwrap();
        for dir in [base.join("run"), base.join("run/cns")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A stale socket is replaced.
        drop(_listener);
        bind(&path).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[tokio::test]
    async fn a_path_that_is_not_a_socket_is_never_deleted() {
        let base = temp_dir("file");
        std::fs::create_dir_all(&base).unwrap();
        let path = base.join("precious.txt");
        std::fs::write(&path, "keep me").unwrap();
        let err = bind(&path).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
