//! The control socket: a root-only Unix socket speaking one JSON request and one JSON reply
//! per connection, each on one line. `cns-agent sync|status|counters|mode` are its clients.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{broadcast, mpsc, oneshot},
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
        audit: Option<bool>,
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

/// A request with the channel its reply goes back on.
pub type Envelope = (Request, oneshot::Sender<Reply>);

/// Binds `path` (root-only: mode 0600 in a 0700 directory), replacing a stale socket.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |source| ControlError::Bind {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
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

/// [`serve`], and with `sinks`: `status` replies get each event sink's health added
/// (`event_sinks`) and `monitor` clients' delivered and lost events are counted.
pub async fn serve_with(
    listener: UnixListener,
    requests: mpsc::Sender<Envelope>,
    events: broadcast::Sender<Published>,
    sinks: Option<EventSinks>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        let events = events.subscribe();
        let sinks = sinks.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, requests, events, sinks.as_ref()).await {
                tracing::debug!(error = %e, "control connection failed");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    requests: mpsc::Sender<Envelope>,
    events: broadcast::Receiver<Published>,
    sinks: Option<&EventSinks>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Reply::err(format!("invalid request: {e}"), ()),
        Ok(Request::Monitor { types, namespace }) => {
            return monitor(write, events, &types, namespace.as_deref(), sinks).await;
        }
        Ok(req) => {
            let is_status = req == Request::Status;
            let (tx, rx) = oneshot::channel();
            let mut reply = if requests.send((req, tx)).await.is_err() {
                Reply::err("the agent is shutting down", ())
            } else {
                rx.await
                    .unwrap_or_else(|_| Reply::err("the agent dropped the request", ()))
            };
            if is_status
                && let Some(sinks) = sinks
                && let Some(data) = reply.data.as_object_mut()
            {
                data.insert(
                    "event_sinks".into(),
                    serde_json::to_value(sinks.health()).unwrap_or_default(),
                );
            }
            reply
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
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
        write.write_all(line.as_bytes()).await?;
        write.write_all(b"\n").await?;
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
