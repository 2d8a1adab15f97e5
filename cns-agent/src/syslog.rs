//! Forwarding events to a SIEM over syslog (`--syslog udp://host:514 | tcp://host:601`).
//!
//! Each event becomes one RFC 5424 message:
//!
//! ```text
//! <132>1 2026-11-27T10:15:02.123456Z node-1 cns-agent 4242 drop [cns@32473 verdict="DROPPED" ...] {"time":...}
//! ```
//!
//! - PRI: the facility (`local0` unless the target says `?facility=NAME`) and a severity from the
//!   event kind: `drop` = warning, `audit` = notice, `policy-verdict` = info.
//! - TIMESTAMP: the event's `time` (UTC, truncated to microseconds as RFC 5424 allows), or the
//!   time of sending when the event has none.
//! - HOSTNAME: the node's hostname (or [`SyslogTarget::with_hostname`]); APP-NAME `cns-agent`;
//!   PROCID the agent's pid; MSGID the event kind.
//! - Structured data `[cns@32473 ...]` repeats the fields a SIEM filters on (verdict, reason,
//!   direction, protocol, source and destination `ns/pod`, IPs, ports, policies); fields missing
//!   from the event are left out.
//! - MSG: the event's JSON on one line, with every non-ASCII character escaped (`\uXXXX`), so
//!   the message is plain ASCII (no BOM needed) and still parses as the same JSON.
//!
//! Transport: UDP sends one datagram per message (RFC 5426); TCP frames each message with
//! octet counting (RFC 6587: `LEN SP MSG`). [`spawn`] starts a tokio task and returns a
//! [`SyslogHandle`] whose [`send`](SyslogHandle::send) never blocks: messages go through a
//! bounded queue and those that find it full are counted as dropped. When the TCP receiver goes
//! away the task reconnects with capped exponential backoff (with jitter), keeping the messages
//! of the queue, and re-sends the batch whose write failed (so a message may, rarely, arrive
//! twice, never half).

use std::collections::hash_map::RandomState;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// APP-NAME of every message.
pub const APP_NAME: &str = "cns-agent";
/// SD-ID of the structured data element (`32473` is the private enterprise number reserved
/// for documentation, RFC 5612).
pub const SD_ID: &str = "cns@32473";

/// Largest message sent (the largest UDP payload over IPv4); larger ones are counted as dropped.
pub const MAX_MESSAGE_LEN: usize = 65_507;
/// RFC 5424 field limits.
const MAX_HOSTNAME: usize = 255;
const MAX_MSGID: usize = 32;
/// Structured-data values are cut at this many bytes (the full value is in the JSON).
const MAX_PARAM_VALUE: usize = 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A UDP target's name is resolved again this often (the SIEM's address may change).
const UDP_RESOLVE_INTERVAL: Duration = Duration::from_secs(60);
/// At most this many bytes of queued messages go into one TCP write.
const TCP_BATCH_BYTES: usize = 64 * 1024;

/// The transport of a [`SyslogTarget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One datagram per message (RFC 5426).
    Udp,
    /// A stream of octet-counted messages (RFC 6587 section 3.4.1).
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Syslog facilities (RFC 5424 table 1), named as Linux names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Facility {
    Kern = 0,
    User = 1,
    Mail = 2,
    Daemon = 3,
    Auth = 4,
    Syslog = 5,
    Lpr = 6,
    News = 7,
    Uucp = 8,
    Cron = 9,
    Authpriv = 10,
    Ftp = 11,
    Ntp = 12,
    Security = 13,
    Console = 14,
    SolarisCron = 15,
    Local0 = 16,
    Local1 = 17,
    Local2 = 18,
    Local3 = 19,
    Local4 = 20,
    Local5 = 21,
    Local6 = 22,
    Local7 = 23,
}

const FACILITIES: [(Facility, &str); 24] = [
    (Facility::Kern, "kern"),
    (Facility::User, "user"),
    (Facility::Mail, "mail"),
    (Facility::Daemon, "daemon"),
    (Facility::Auth, "auth"),
    (Facility::Syslog, "syslog"),
    (Facility::Lpr, "lpr"),
    (Facility::News, "news"),
    (Facility::Uucp, "uucp"),
    (Facility::Cron, "cron"),
    (Facility::Authpriv, "authpriv"),
    (Facility::Ftp, "ftp"),
    (Facility::Ntp, "ntp"),
    (Facility::Security, "security"),
    (Facility::Console, "console"),
    (Facility::SolarisCron, "solaris-cron"),
    (Facility::Local0, "local0"),
    (Facility::Local1, "local1"),
    (Facility::Local2, "local2"),
    (Facility::Local3, "local3"),
    (Facility::Local4, "local4"),
    (Facility::Local5, "local5"),
    (Facility::Local6, "local6"),
    (Facility::Local7, "local7"),
];

impl Facility {
    pub fn name(self) -> &'static str {
        FACILITIES[self as usize].1
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Facility {
    type Err = SyslogTargetError;

    /// A name (`local0`, `daemon`, ...) or a number 0-23.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if let Some((f, _)) = FACILITIES.iter().find(|(_, name)| *name == lower) {
            return Ok(*f);
        }
        if let Ok(n) = lower.parse::<usize>()
            && n < FACILITIES.len()
        {
            return Ok(FACILITIES[n].0);
        }
        Err(SyslogTargetError::Facility(s.to_string()))
    }
}

/// Syslog severities (RFC 5424 table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Informational = 6,
    Debug = 7,
}

/// The severity of an event of this kind: a `drop` is a warning, an `audit` (a drop that audit
/// mode let through) a notice, a `policy-verdict` (an allowed connection) informational. Other
/// kinds are graded by the event's `verdict`.
pub fn severity(kind: &str, event: &Value) -> Severity {
    match kind {
        "drop" => Severity::Warning,
        "audit" => Severity::Notice,
        "policy-verdict" => Severity::Informational,
        _ => match flow(event).get("verdict").and_then(Value::as_str) {
            Some("DROPPED") => Severity::Warning,
            Some("AUDIT") => Severity::Notice,
            _ => Severity::Informational,
        },
    }
}

/// Why a `--syslog` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyslogTargetError {
    #[error("invalid syslog target {input:?}: {reason}")]
    Invalid { input: String, reason: String },
    #[error(
        "unknown syslog facility {0:?} (expected kern, user, daemon, auth, local0..local7, ...)"
    )]
    Facility(String),
}

/// Where to send: `udp://HOST:PORT` or `tcp://HOST:PORT`, HOST an IPv4 address, an IPv6
/// address in brackets (`udp://[fd00::1]:514`) or a DNS name (resolved at each connection).
/// An optional `?facility=NAME` picks the facility (default `local0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    transport: Transport,
    host: String,
    port: u16,
    facility: Facility,
    hostname: Option<String>,
}

impl SyslogTarget {
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The receiver's host, without brackets for IPv6.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn facility(&self) -> Facility {
        self.facility
    }

    /// Use this facility instead of the default `local0` (or the one of `?facility=`).
    pub fn with_facility(mut self, facility: Facility) -> Self {
        self.facility = facility;
        self
    }

    /// HOSTNAME of the messages (for example the node name) instead of the system's hostname.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// The HOSTNAME field: the one set with [`with_hostname`](Self::with_hostname), else the
    /// system's hostname, sanitized to RFC 5424's limits (`-` if unknown).
    pub fn hostname(&self) -> String {
        let raw = match &self.hostname {
            Some(h) => h.clone(),
            None => system_hostname(),
        };
        header_field(&raw, MAX_HOSTNAME)
    }
}

impl fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.transport.as_str())?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        write!(f, ":{}", self.port)?;
        if self.facility != Facility::Local0 {
            write!(f, "?facility={}", self.facility)?;
        }
        Ok(())
    }
}

impl FromStr for SyslogTarget {
    type Err = SyslogTargetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| SyslogTargetError::Invalid {
            input: input.to_string(),
            reason,
        };
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(invalid(
                "missing scheme: expected udp://HOST:PORT or tcp://HOST:PORT".into(),
            ));
        };
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" | "tcp+tls" | "ssl" => {
                return Err(invalid(format!(
                    "scheme {scheme:?} is not supported (TLS is not implemented): use udp:// or tcp://"
                )));
            }
            _ => {
                return Err(invalid(format!(
                    "unknown scheme {scheme:?}: expected udp:// or tcp://"
                )));
            }
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let authority = match rest.split_once('/') {
            Some((a, "")) => a,
            Some(_) => return Err(invalid("unexpected path after HOST:PORT".into())),
            None => rest,
        };
        if authority.contains('@') {
            return Err(invalid("user information (USER@) is not supported".into()));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((addr, after)) = bracketed.split_once(']') else {
                return Err(invalid("missing ']' after the IPv6 address".into()));
            };
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(invalid(format!("{addr:?} is not an IPv6 address")));
            }
            let Some(port) = after.strip_prefix(':') else {
                return Err(invalid(if after.is_empty() {
                    "missing port (for example udp://[::1]:514)".into()
                } else {
                    format!("unexpected {after:?} after the IPv6 address")
                }));
            };
            (addr.to_string(), port)
        } else {
            if authority.matches(':').count() > 1 {
                return Err(invalid(
                    "IPv6 addresses must be in brackets, for example udp://[fd00::1]:514".into(),
                ));
            }
            let Some((host, port)) = authority.split_once(':') else {
                return Err(invalid(format!(
                    "missing port (for example {}://{authority}:{})",
                    transport.as_str(),
                    if transport == Transport::Udp {
                        514
                    } else {
                        601
                    }
                )));
            };
            if host.is_empty() {
                return Err(invalid("missing host".into()));
            }
            check_host(host).map_err(invalid)?;
            (host.to_ascii_lowercase(), port)
        };
        let port = match port.parse::<u16>() {
            Ok(0) => return Err(invalid("port 0 is not a valid destination".into())),
            Ok(p) => p,
            Err(_) => {
                return Err(invalid(format!(
                    "port {port:?} is not a number from 1 to 65535"
                )));
            }
        };
        let mut facility = Facility::Local0;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("facility", name)) => facility = name.parse()?,
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {pair:?} (only facility=NAME is supported)"
                    )));
                }
            }
        }
        Ok(SyslogTarget {
            transport,
            host,
            port,
            facility,
            hostname: None,
        })
    }
}

/// A host that is not in brackets: an IPv4 address or a DNS name.
fn check_host(host: &str) -> Result<(), String> {
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{host:?} is not an IPv4 address")),
        };
    }
    if host.len() > 253 {
        return Err(format!("host name {host:?} is longer than 253 characters"));
    }
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "host name {host:?} has an empty label or one longer than 63 characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("host name {host:?} contains {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "host name {host:?} has a label that starts or ends with '-'"
            ));
        }
    }
    Ok(())
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A header field: printable US-ASCII without spaces (others become `_`), at most `max`
/// characters, `-` (NILVALUE) when empty.
fn header_field(raw: &str, max: usize) -> String {
    let s: String = raw
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if s.is_empty() { "-".to_string() } else { s }
}

/// The flow object of an event: Hubble's `observe -o json` wraps it in `{"flow": ...}`.
fn flow(event: &Value) -> &Value {
    match event.get("flow") {
        Some(f) if f.is_object() => f,
        _ => event,
    }
}

/// The RFC 3339 TIMESTAMP: the event's `time` in UTC with microseconds, or now.
fn timestamp(event: &Value) -> String {
    const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";
    // 0000-01-01T00:00:00Z: RFC 5424 wants four-digit years.
    const YEAR_ZERO: i64 = -62_167_219_200;
    let from_event = flow(event)
        .get("time")
        .or_else(|| event.get("time"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .filter(|ts| ts.as_second() >= YEAR_ZERO);
    from_event
        .unwrap_or_else(jiff::Timestamp::now)
        .strftime(FORMAT)
        .to_string()
}

/// A scalar as text (strings as they are, numbers and booleans printed); others `None`.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `ns/pod`, or `ns` for an endpoint without a pod name.
fn endpoint(v: Option<&Value>) -> Option<String> {
    let v = v?;
    let ns = v.get("namespace").and_then(scalar);
    let pod = v.get("pod_name").and_then(scalar);
    match (ns, pod) {
        (Some(ns), Some(pod)) => Some(format!("{ns}/{pod}")),
        (Some(ns), None) => Some(ns),
        (None, Some(pod)) => Some(pod),
        (None, None) => None,
    }
}

/// Policies named in the event's `policies` list (`["ns/name", ...]`) and in Hubble's
/// `{ingress,egress}_{denied,allowed}_by` lists (`[{"namespace", "name"}, ...]`), as `ns/name`.
fn policies(f: &Value) -> Option<String> {
    let mut names = Vec::new();
    for key in [
        "policies",
        "ingress_denied_by",
        "egress_denied_by",
        "ingress_allowed_by",
        "egress_allowed_by",
    ] {
        for p in f.get(key).and_then(Value::as_array).into_iter().flatten() {
            let name = match p {
                Value::String(s) => Some(s.clone()),
                _ => match (
                    p.get("namespace").and_then(scalar),
                    p.get("name").and_then(scalar),
                ) {
                    (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
                    (None, Some(name)) => Some(name),
                    _ => None,
                },
            };
            if let Some(name) = name
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    (!names.is_empty()).then(|| names.join(","))
}

/// The structured-data parameters of an event, in a fixed order, missing ones left out.
fn sd_params(kind: &str, event: &Value) -> Vec<(&'static str, String)> {
    let f = flow(event);
    let mut params = Vec::new();
    let mut push = |name: &'static str, value: Option<String>| {
        if let Some(v) = value {
            params.push((name, v));
        }
    };
    push("verdict", f.get("verdict").and_then(scalar));
    push(
        "reason",
        f.get("drop_reason_desc")
            .and_then(scalar)
            .filter(|_| kind != "policy-verdict"),
    );
    push("direction", f.get("traffic_direction").and_then(scalar));
    // l4 is {"TCP": {"source_port": .., "destination_port": ..}} (or UDP, SCTP, ICMPv4, ...).
    let l4 = f
        .get("l4")
        .and_then(Value::as_object)
        .and_then(|o| o.iter().next());
    push("proto", l4.map(|(name, _)| name.clone()));
    let l4 = l4.map(|(_, v)| v);
    let ip = f.get("IP").or_else(|| f.get("ip"));
    push("src", endpoint(f.get("source")));
    push(
        "src_ip",
        ip.and_then(|ip| ip.get("source")).and_then(scalar),
    );
    push(
        "src_port",
        l4.and_then(|l4| l4.get("source_port")).and_then(scalar),
    );
    push("dst", endpoint(f.get("destination")));
    push(
        "dst_ip",
        ip.and_then(|ip| ip.get("destination")).and_then(scalar),
    );
    push(
        "dst_port",
        l4.and_then(|l4| l4.get("destination_port"))
            .and_then(scalar),
    );
    push("endpoint", f.get("endpoint").and_then(scalar));
    push("policies", policies(f));
    let dry_run = f.get("dry_run");
    push(
        "dry_run_policy",
        dry_run.and_then(|d| d.get("policy")).and_then(scalar),
    );
    push(
        "dry_run_outcome",
        dry_run.and_then(|d| d.get("outcome")).and_then(scalar),
    );
    params
}

/// A PARAM-VALUE: `"`, `\` and `]` escaped with `\` (RFC 5424 section 6.3.3), control
/// characters replaced by spaces, cut at [`MAX_PARAM_VALUE`] bytes.
fn escape_param_value(out: &mut String, value: &str) {
    let mut len = 0;
    for c in value.chars() {
        len += c.len_utf8();
        if len > MAX_PARAM_VALUE {
            break;
        }
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

/// The event's JSON on one line with every non-ASCII character escaped as `\uXXXX`. Outside
/// strings JSON is ASCII, so this only touches string contents and the result is the same JSON.
fn ascii_json(event: &Value) -> String {
    let json = event.to_string();
    if json.is_ascii() {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    let mut units = [0u16; 2];
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out
}

/// One RFC 5424 message (without transport framing) for an event of `kind` (`drop`, `audit`,
/// `policy-verdict`): see the [module documentation](self) for the fields. Missing event
/// fields are left out; any JSON value is accepted.
pub fn format_message(kind: &str, event: &Value, facility: Facility, hostname: &str) -> String {
    let pri = facility as u8 * 8 + severity(kind, event) as u8;
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "<{pri}>1 {} {} {APP_NAME} {} {} ",
        timestamp(event),
        header_field(hostname, MAX_HOSTNAME),
        std::process::id(),
        header_field(kind, MAX_MSGID),
    );
    let params = sd_params(kind, event);
    if params.is_empty() {
        out.push('-');
    } else {
        out.push('[');
        out.push_str(SD_ID);
        for (name, value) in params {
            let _ = write!(out, " {name}=\"");
            escape_param_value(&mut out, &value);
            out.push('"');
        }
        out.push(']');
    }
    out.push(' ');
    out.push_str(&ascii_json(event));
    out
}

/// Counters of a sender, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyslogStats {
    /// Messages handed to the kernel (a datagram sent, or written to the TCP stream).
    pub sent: u64,
    /// Events lost: the queue was full, the message was larger than [`MAX_MESSAGE_LEN`], a UDP
    /// send failed, or the sender stopped with messages still queued.
    pub dropped: u64,
    /// Connections established again after a connection was lost or could not be made (for
    /// UDP: after a send error).
    pub reconnects: u64,
    /// Failed attempts to resolve or connect to the receiver.
    pub connect_errors: u64,
    /// Messages waiting in the queue now.
    pub queued: u64,
}

#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    connect_errors: AtomicU64,
    connected: AtomicBool,
}

impl Shared {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The sending side of a syslog forwarder started by [`spawn`]. Cheap to clone; the task
/// stops once every handle is dropped and the queue is sent.
#[derive(Clone)]
pub struct SyslogHandle {
    tx: mpsc::Sender<String>,
    shared: Arc<Shared>,
    target: Arc<SyslogTarget>,
    hostname: Arc<str>,
}

impl fmt::Debug for SyslogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyslogHandle")
            .field("target", &self.target.to_string())
            .field("stats", &self.stats())
            .finish()
    }
}

impl SyslogHandle {
    /// Formats the event and queues it. Never blocks: returns `false` (and counts the event
    /// as dropped) when the queue is full or the sender has stopped.
    pub fn send(&self, kind: &str, event: &Value) -> bool {
        if self.tx.capacity() == 0 {
            // Full (or stopped): do not spend time formatting a message that cannot be queued.
            Shared::add(&self.shared.dropped, 1);
            return false;
        }
        let msg = format_message(kind, event, self.target.facility, &self.hostname);
        if msg.len() > MAX_MESSAGE_LEN {
            Shared::add(&self.shared.dropped, 1);
            return false;
        }
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(_) => {
                Shared::add(&self.shared.dropped, 1);
                false
            }
        }
    }

    pub fn stats(&self) -> SyslogStats {
        SyslogStats {
            sent: self.shared.sent.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            connect_errors: self.shared.connect_errors.load(Ordering::Relaxed),
            queued: (self.tx.max_capacity() - self.tx.capacity()) as u64,
        }
    }

    /// Whether the sender currently has a connection (TCP) or a socket and an address (UDP).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    pub fn target(&self) -> &SyslogTarget {
        &self.target
    }
}

/// Starts forwarding to `target` on the current tokio runtime (panics outside one) with a
/// queue of `capacity` messages (at least 1).
pub fn spawn(target: SyslogTarget, capacity: usize) -> SyslogHandle {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared::default());
    let hostname: Arc<str> = target.hostname().into();
    let target = Arc::new(target);
    tokio::spawn(run(target.clone(), rx, shared.clone()));
    SyslogHandle {
        tx,
        shared,
        target,
        hostname,
    }
}

#[derive(Debug, Error)]
enum ConnectError {
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("resolving {0}: no address")]
    NoAddress(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {0}: timed out")]
    Timeout(SocketAddr),
    #[error("opening a UDP socket for {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

enum Conn {
    Udp { sock: UdpSocket, addr: SocketAddr },
    Tcp(TcpStream),
}

async fn resolve(target: &SyslogTarget) -> Result<Vec<SocketAddr>, ConnectError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: target.host.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::NoAddress(target.host.clone()));
    }
    Ok(addrs)
}

async fn connect(target: &SyslogTarget) -> Result<Conn, ConnectError> {
    let addrs = resolve(target).await?;
    match target.transport {
        Transport::Udp => {
            let addr = addrs[0];
            let local: SocketAddr = if addr.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            // Not connect()ed: a connected socket would fail the next send after an ICMP
            // "port unreachable", losing a message to a receiver that is merely restarting.
            let sock = UdpSocket::bind(local)
                .await
                .map_err(|source| ConnectError::Bind { addr, source })?;
            Ok(Conn::Udp { sock, addr })
        }
        Transport::Tcp => {
            let mut last = None;
            for addr in addrs {
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(Conn::Tcp(stream));
                    }
                    Ok(Err(source)) => last = Some(ConnectError::Connect { addr, source }),
                    Err(_) => last = Some(ConnectError::Timeout(addr)),
                }
            }
            Err(last.unwrap_or_else(|| ConnectError::NoAddress(target.host.clone())))
        }
    }
}

/// The delay before the next attempt after `failures` consecutive failures: exponential from
/// [`BACKOFF_INITIAL`], capped at [`BACKOFF_MAX`], with jitter (half to all of it) so that
/// the agents of every node do not reconnect in step.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_INITIAL.saturating_mul(1 << exp).min(BACKOFF_MAX);
    let half = base / 2;
    let mut h = RandomState::new().build_hasher();
    h.write_u32(failures);
    let jitter_nanos = h.finish() % (half.as_nanos() as u64).max(1);
    half + Duration::from_nanos(jitter_nanos)
}

/// Why a connection ended.
enum Ended {
    /// Every handle is gone and the queue is sent.
    Done,
    /// The connection broke (or a UDP send failed); reconnect.
    Broken(String),
    /// Time to resolve the UDP target's name again (not a failure).
    Refresh,
}

async fn run(target: Arc<SyslogTarget>, mut rx: mpsc::Receiver<String>, shared: Arc<Shared>) {
    let mut failures: u32 = 0;
    let mut ever_connected = false;
    let mut warned = false;
    // Messages taken from the queue whose write failed: sent first on the next connection.
    let mut pending: Vec<String> = Vec::new();
    loop {
        if failures > 0 {
            if rx.is_closed() {
                // Nobody can send any more and the receiver is unreachable: give up.
                let lost = pending.len() + rx.len();
                Shared::add(&shared.dropped, lost as u64);
                return;
            }
            tokio::time::sleep(backoff(failures)).await;
        }
        let conn = match connect(&target).await {
            Ok(conn) => conn,
            Err(e) => {
                failures = failures.saturating_add(1);
                Shared::add(&shared.connect_errors, 1);
                if warned {
                    tracing::debug!(target = %target, error = %e, failures, "syslog: still cannot connect");
                } else {
                    tracing::warn!(target = %target, error = %e, "syslog: cannot connect, retrying with backoff");
                    warned = true;
                }
                continue;
            }
        };
        if ever_connected && (failures > 0 || warned) {
            Shared::add(&shared.reconnects, 1);
            tracing::info!(target = %target, "syslog: reconnected");
        } else if !ever_connected {
            tracing::info!(target = %target, "syslog: forwarding events");
        }
        ever_connected = true;
        warned = false;
        shared.connected.store(true, Ordering::Relaxed);
        let ended = match conn {
            Conn::Udp { sock, addr } => {
                pump_udp(&sock, addr, &mut rx, &shared, &mut failures).await
            }
            Conn::Tcp(stream) => {
                pump_tcp(stream, &mut rx, &shared, &mut pending, &mut failures).await
            }
        };
        shared.connected.store(false, Ordering::Relaxed);
        match ended {
            Ended::Done => return,
            Ended::Refresh => {}
            Ended::Broken(why) => {
                failures = failures.saturating_add(1);
                tracing::warn!(target = %target, error = %why, "syslog: connection lost, reconnecting");
                warned = true;
            }
        }
    }
}

async fn pump_udp(
    sock: &UdpSocket,
    addr: SocketAddr,
    rx: &mut mpsc::Receiver<String>,
    shared: &Shared,
    failures: &mut u32,
) -> Ended {
    let opened = Instant::now();
    while let Some(msg) = rx.recv().await {
        match sock.send_to(msg.as_bytes(), addr).await {
            Ok(_) => {
                Shared::add(&shared.sent, 1);
                *failures = 0;
            }
            Err(e) => {
                Shared::add(&shared.dropped, 1);
                return Ended::Broken(format!("sending to {addr}: {e}"));
            }
        }
        if opened.elapsed() >= UDP_RESOLVE_INTERVAL {
            return Ended::Refresh;
        }
    }
    Ended::Done
}

async fn pump_tcp(
    mut stream: TcpStream,
    rx: &mut mpsc::Receiver<String>,
    shared: &Shared,
    pending: &mut Vec<String>,
    failures: &mut u32,
) -> Ended {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "the receiver".into());
    let mut frame = Vec::with_capacity(TCP_BATCH_BYTES);
    let mut scratch = [0u8; 512];
    loop {
        if pending.is_empty() {
            // Wait for a message while watching the connection: receivers never send, so a
            // readable socket means it was closed (EOF) or reset, and we learn it before
            // writing into a dead connection.
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => pending.push(msg),
                    None => {
                        let _ = stream.shutdown().await;
                        return Ended::Done;
                    }
                },
                read = stream.read(&mut scratch) => match read {
                    Ok(0) => return Ended::Broken(format!("{peer} closed the connection")),
                    Ok(_) => continue, // unexpected data: ignore it
                    Err(e) => return Ended::Broken(format!("reading from {peer}: {e}")),
                },
            }
            let mut bytes: usize = pending.iter().map(String::len).sum();
            while bytes < TCP_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(msg) => {
                        bytes += msg.len();
                        pending.push(msg);
                    }
                    Err(_) => break,
                }
            }
        }
        frame.clear();
        for msg in pending.iter() {
            frame.extend_from_slice(msg.len().to_string().as_bytes());
            frame.push(b' ');
            frame.extend_from_slice(msg.as_bytes());
        }
        match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&frame)).await {
            Ok(Ok(())) => {
                Shared::add(&shared.sent, pending.len() as u64);
                pending.clear();
                *failures = 0;
            }
            Ok(Err(e)) => return Ended::Broken(format!("writing to {peer}: {e}")),
            Err(_) => {
                return Ended::Broken(format!(
                    "writing to {peer}: timed out after {}s",
                    WRITE_TIMEOUT.as_secs()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use syslog_rfc5424::{SyslogFacility, SyslogMessage, SyslogSeverity, parse_message};
    use tokio::net::{TcpListener, TcpSocket};

    const WAIT: Duration = Duration::from_secs(3);

    /// An event as the agent prints it (README, "Drop and audit events").
    fn drop_event() -> Value {
        json!({
            "time": "2026-11-27T10:15:02.123456789Z",
            "verdict": "DROPPED",
            "drop_reason_desc": "POLICY_DENIED",
            "event_type": "drop",
            "node_name": "node-1",
            "traffic_direction": "INGRESS",
            "IP": {"source": "10.0.1.5", "destination": "10.0.2.7", "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": 43210, "destination_port": 8443}},
            "source": {"namespace": "shop", "pod_name": "frontend-7d9c", "identity": 259, "labels": ["k8s:app=frontend"]},
            "destination": {"namespace": "payments", "pod_name": "payments-0", "identity": 256, "labels": ["k8s:app=payments"]},
            "endpoint": "payments/payments-0",
            "interface": {"index": 7, "name": "cns1a5v0"},
            "policies": ["payments/default-deny-ingress"],
            "is_reply": false,
        })
    }

    fn param<'a>(m: &'a SyslogMessage, name: &str) -> Option<&'a str> {
        m.sd.find_tuple(SD_ID, name).map(String::as_str)
    }

    #[test]
    fn target_parses_udp_tcp_ipv4_ipv6_and_names() {
        let t: SyslogTarget = "udp://10.1.2.3:514".parse().unwrap();
        assert_eq!(
            (t.transport(), t.host(), t.port(), t.facility()),
            (Transport::Udp, "10.1.2.3", 514, Facility::Local0)
        );
        let t: SyslogTarget = "tcp://SIEM.example.com:601".parse().unwrap();
        assert_eq!(
            (t.transport(), t.host(), t.port()),
            (Transport::Tcp, "siem.example.com", 601)
        );
        let t: SyslogTarget = "TCP://[fd00::1]:6514/".parse().unwrap();
        assert_eq!((t.host(), t.port()), ("fd00::1", 6514));
        assert_eq!(t.to_string(), "tcp://[fd00::1]:6514");
        let t: SyslogTarget = "udp://siem:514?facility=local3".parse().unwrap();
        assert_eq!(t.facility(), Facility::Local3);
        assert_eq!(t.to_string(), "udp://siem:514?facility=local3");
        assert_eq!(
            "udp://siem:514?facility=4"
                .parse::<SyslogTarget>()
                .unwrap()
                .facility(),
            Facility::Auth
        );
    }

    #[test]
    fn target_errors_say_what_is_wrong() {
        for (input, expected) in [
            ("siem:514", "missing scheme"),
            ("http://siem:514", "unknown scheme \"http\""),
            ("tls://siem:6514", "TLS is not implemented"),
            ("udp://siem", "missing port (for example udp://siem:514)"),
            ("tcp://siem", "missing port (for example tcp://siem:601)"),
            ("udp://:514", "missing host"),
            ("udp://siem:0", "port 0"),
            ("udp://siem:65536", "port \"65536\" is not a number"),
            ("udp://siem:http", "port \"http\" is not a number"),
            ("udp://fd00::1:514", "IPv6 addresses must be in brackets"),
            ("udp://[fd00::1:514", "missing ']'"),
            ("udp://[fd00::zz]:514", "is not an IPv6 address"),
            ("udp://[::1]", "missing port"),
            ("udp://10.0.0.300:514", "is not an IPv4 address"),
            ("udp://si em:514", "contains ' '"),
            ("udp://-siem:514", "starts or ends with '-'"),
            ("udp://a..b:514", "empty label"),
            ("udp://user@siem:514", "user information"),
            ("udp://siem:514/path", "unexpected path"),
            (
                "udp://siem:514?severity=1",
                "unknown parameter \"severity=1\"",
            ),
            (
                "udp://siem:514?facility=local9",
                "unknown syslog facility \"local9\"",
            ),
        ] {
            let err = input.parse::<SyslogTarget>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
            if !expected.starts_with("unknown syslog facility") {
                assert!(err.contains(&format!("{input:?}")), "{input}: {err}");
            }
        }
    }

    #[test]
    fn drop_event_is_well_formed_rfc5424() {
        let event = drop_event();
        let line = format_message("drop", &event, Facility::Local0, "node-1");
        assert!(
            line.starts_with("<132>1 2026-11-27T10:15:02.123456Z node-1 cns-agent "),
            "{line}"
        );
        let m = parse_message(&line).unwrap();
        assert_eq!(m.facility, SyslogFacility::LOG_LOCAL0);
        assert_eq!(m.severity, SyslogSeverity::SEV_WARNING);
        assert_eq!(m.version, 1);
        assert_eq!(m.timestamp, Some(1_795_774_502));
        assert_eq!(m.timestamp_nanos, Some(123_456_000));
        assert_eq!(m.hostname.as_deref(), Some("node-1"));
        assert_eq!(m.appname.as_deref(), Some("cns-agent"));
        assert_eq!(
            m.procid,
            Some(syslog_rfc5424::message::ProcId::PID(
                std::process::id() as i32
            ))
        );
        assert_eq!(m.msgid.as_deref(), Some("drop"));
        for (name, value) in [
            ("verdict", "DROPPED"),
            ("reason", "POLICY_DENIED"),
            ("direction", "INGRESS"),
            ("proto", "TCP"),
            ("src", "shop/frontend-7d9c"),
            ("src_ip", "10.0.1.5"),
            ("src_port", "43210"),
            ("dst", "payments/payments-0"),
            ("dst_ip", "10.0.2.7"),
            ("dst_port", "8443"),
            ("endpoint", "payments/payments-0"),
            ("policies", "payments/default-deny-ingress"),
        ] {
            assert_eq!(param(&m, name), Some(value), "{name} in {line}");
        }
        let msg: Value = serde_json::from_str(&m.msg).unwrap();
        assert_eq!(msg, event);
    }

    #[test]
    fn severity_and_msgid_follow_the_kind() {
        for (kind, sev, pri) in [
            ("drop", SyslogSeverity::SEV_WARNING, 132),
            ("audit", SyslogSeverity::SEV_NOTICE, 133),
            ("policy-verdict", SyslogSeverity::SEV_INFO, 134),
        ] {
            let line = format_message(kind, &drop_event(), Facility::Local0, "n");
            assert!(line.starts_with(&format!("<{pri}>1 ")), "{line}");
            let m = parse_message(&line).unwrap();
            assert_eq!((m.severity, m.msgid.as_deref()), (sev, Some(kind)));
        }
        // The facility is configurable: local7 * 8 + warning.
        let line = format_message("drop", &drop_event(), Facility::Local7, "n");
        assert!(line.starts_with("<188>1 "), "{line}");
        assert_eq!(
            parse_message(&line).unwrap().facility,
            SyslogFacility::LOG_LOCAL7
        );
        // Unknown kinds are graded by the verdict.
        assert_eq!(
            severity("other", &json!({"verdict": "AUDIT"})),
            Severity::Notice
        );
        assert_eq!(severity("other", &json!({})), Severity::Informational);
    }

    #[test]
    fn missing_fields_and_odd_values_still_parse() {
        for event in [
            json!({}),
            json!(null),
            json!([1, 2]),
            json!({"time": "yesterday", "source": 3, "l4": "x"}),
        ] {
            let line = format_message("audit", &event, Facility::Local0, "");
            let m = parse_message(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(m.severity, SyslogSeverity::SEV_NOTICE);
            assert!(m.hostname.is_none(), "empty hostname is NILVALUE");
            assert!(m.sd.is_empty(), "{line}");
            // No event time: the time of formatting.
            let now = jiff::Timestamp::now().as_second();
            assert!((m.timestamp.unwrap() - now).abs() < 5, "{line}");
            assert_eq!(serde_json::from_str::<Value>(&m.msg).unwrap(), event);
        }
        // Times are converted to UTC, with microseconds (RFC 5424 allows no more).
        assert_eq!(
            timestamp(&json!({"time": "2026-11-27T11:15:02+01:00"})),
            "2026-11-27T10:15:02.000000Z"
        );
        assert_eq!(
            timestamp(&json!({"time": "2026-11-27T10:15:02.999999999Z"})),
            "2026-11-27T10:15:02.999999Z"
        );
        // Only a source namespace (traffic from the host network or outside).
        let line = format_message(
            "drop",
            &json!({"source": {"namespace": "kube-system"}, "destination": {"pod_name": "x"}}),
            Facility::Local0,
            "n",
        );
        let m = parse_message(&line).unwrap();
        assert_eq!(
            (param(&m, "src"), param(&m, "dst")),
            (Some("kube-system"), Some("x"))
        );
        // Hubble's `observe -o json` wrapper.
        let line = format_message(
            "drop",
            &json!({"flow": drop_event()}),
            Facility::Local0,
            "n",
        );
        let m = parse_message(&line).unwrap();
        assert_eq!(param(&m, "dst"), Some("payments/payments-0"));
        assert_eq!(m.timestamp, Some(1_795_774_502));
        // Hubble's policy lists; `l4` null (a non-IPv4 frame).
        let event = json!({
            "verdict": "DROPPED",
            "l4": null,
            "IP": null,
            "ingress_denied_by": [{"namespace": "a", "name": "p1"}, {"name": "cluster-wide"}],
            "egress_denied_by": [{"namespace": "a", "name": "p1"}, 7],
        });
        let m = parse_message(format_message("drop", &event, Facility::Local0, "n")).unwrap();
        assert_eq!(param(&m, "policies"), Some("a/p1,cluster-wide"));
        assert_eq!(param(&m, "dry_run_policy"), None);
        assert_eq!((param(&m, "proto"), param(&m, "src_ip")), (None, None));
        // A dry-run policy's would-be drop names the policy and the outcome.
        let event = json!({
            "verdict": "AUDIT",
            "dry_run": {"policy": "NetworkPolicy/shop/lockdown", "outcome": "would-drop"},
        });
        let m = parse_message(format_message("audit", &event, Facility::Local0, "n")).unwrap();
        assert_eq!(
            param(&m, "dry_run_policy"),
            Some("NetworkPolicy/shop/lockdown")
        );
        assert_eq!(param(&m, "dry_run_outcome"), Some("would-drop"));
    }

    #[test]
    fn escaping_and_field_lengths() {
        let nasty = "a\"b\\c]d[e=f g\nh";
        let event = json!({
            "verdict": nasty,
            "source": {"namespace": "ns", "pod_name": "pod-é-😀"},
            "drop_reason_desc": "x".repeat(5000),
        });
        let long_kind = "k".repeat(40);
        let line = format_message(
            &long_kind,
            &event,
            Facility::Local0,
            &"h o\u{e9}st".repeat(100),
        );
        let m = parse_message(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(param(&m, "verdict"), Some("a\"b\\c]d[e=f g h"));
        assert_eq!(param(&m, "src"), Some("ns/pod-é-😀"));
        assert_eq!(param(&m, "reason").map(str::len), Some(MAX_PARAM_VALUE));
        assert_eq!(m.msgid.as_deref(), Some("k".repeat(32).as_str()));
        let host = m.hostname.unwrap();
        assert_eq!(host.len(), 255);
        assert!(host.starts_with("h_o_st"), "{host}");
        // MSG is ASCII and the same JSON.
        assert!(m.msg.is_ascii(), "{}", m.msg);
        assert!(m.msg.contains("pod-\\u00e9-\\ud83d\\ude00"), "{}", m.msg);
        assert_eq!(serde_json::from_str::<Value>(&m.msg).unwrap(), event);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 1..40 {
            let d = backoff(failures);
            let base = BACKOFF_INITIAL
                .saturating_mul(1 << (failures - 1).min(16))
                .min(BACKOFF_MAX);
            assert!(d >= base / 2 && d <= base, "{failures}: {d:?}");
        }
        assert!(backoff(100) <= BACKOFF_MAX);
    }

    async fn recv_udp(sock: &UdpSocket) -> SyslogMessage {
        let mut buf = vec![0u8; 70_000];
        let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
            .await
            .expect("no datagram")
            .unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        parse_message(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// Reads one RFC 6587 octet-counted frame.
    async fn recv_frame(stream: &mut TcpStream) -> Option<SyslogMessage> {
        let mut len = Vec::new();
        loop {
            let mut b = [0u8];
            match tokio::time::timeout(WAIT, stream.read(&mut b))
                .await
                .expect("no frame")
            {
                Ok(0) if len.is_empty() => return None,
                Ok(0) => panic!("EOF in a frame length"),
                Ok(_) if b[0] == b' ' => break,
                Ok(_) => {
                    assert!(b[0].is_ascii_digit() && len.len() < 6, "bad frame length");
                    len.push(b[0]);
                }
                Err(e) => panic!("{e}"),
            }
        }
        let len: usize = std::str::from_utf8(&len).unwrap().parse().unwrap();
        let mut buf = vec![0u8; len];
        tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        Some(parse_message(&text).unwrap_or_else(|e| panic!("{text}: {e}")))
    }

    fn numbered(i: u64) -> Value {
        json!({"verdict": "DROPPED", "seq": i, "source": {"namespace": "a", "pod_name": format!("p{i}")}})
    }

    fn seq(m: &SyslogMessage) -> u64 {
        serde_json::from_str::<Value>(&m.msg).unwrap()["seq"]
            .as_u64()
            .unwrap()
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_one_datagram_per_message() {
        let recv = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target: SyslogTarget = format!("udp://127.0.0.1:{}", recv.local_addr().unwrap().port())
            .parse()
            .unwrap();
        let h = spawn(target.with_hostname("node-a"), 16);
        for i in 0..3 {
            assert!(h.send("drop", &numbered(i)));
        }
        for i in 0..3 {
            let m = recv_udp(&recv).await;
            assert_eq!(seq(&m), i);
            assert_eq!(m.hostname.as_deref(), Some("node-a"));
            assert_eq!(m.msgid.as_deref(), Some("drop"));
            assert_eq!(param(&m, "src"), Some(format!("a/p{i}").as_str()));
        }
        eventually("sent = 3", || h.stats().sent == 3).await;
        assert_eq!(h.stats().dropped, 0);

        // IPv6 loopback, when the host has it.
        if let Ok(recv6) = UdpSocket::bind("[::1]:0").await {
            let port = recv6.local_addr().unwrap().port();
            let h6 = spawn(format!("udp://[::1]:{port}").parse().unwrap(), 4);
            assert!(h6.send("audit", &drop_event()));
            let m = recv_udp(&recv6).await;
            assert_eq!(m.severity, SyslogSeverity::SEV_NOTICE);
            assert_eq!(param(&m, "dst_port"), Some("8443"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_octet_counting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let h = spawn(format!("tcp://127.0.0.1:{port}").parse().unwrap(), 64);
        for i in 0..20 {
            assert!(h.send(
                if i % 2 == 0 { "drop" } else { "policy-verdict" },
                &numbered(i)
            ));
        }
        let (mut conn, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        for i in 0..20 {
            let m = recv_frame(&mut conn).await.expect("frame");
            assert_eq!(seq(&m), i);
            let sev = if i % 2 == 0 {
                SyslogSeverity::SEV_WARNING
            } else {
                SyslogSeverity::SEV_INFO
            };
            assert_eq!(m.severity, sev);
        }
        eventually("sent = 20", || h.stats().sent == 20).await;
        assert!(h.is_connected());
        // Dropping every handle ends the stream cleanly after the queue is sent.
        assert!(h.send("drop", &numbered(20)));
        drop(h);
        assert_eq!(seq(&recv_frame(&mut conn).await.unwrap()), 20);
        assert!(
            recv_frame(&mut conn).await.is_none(),
            "EOF after the last frame"
        );
    }

    fn listen_on(port: u16) -> TcpListener {
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind((Ipv4Addr::LOCALHOST, port).into()).unwrap();
        sock.listen(16).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_receiver_goes_away_and_comes_back() {
        let listener = listen_on(0);
        let port = listener.local_addr().unwrap().port();
        let h = spawn(format!("tcp://127.0.0.1:{port}").parse().unwrap(), 8);
        assert!(h.send("drop", &numbered(0)));
        let (mut conn, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seq(&recv_frame(&mut conn).await.unwrap()), 0);

        // The receiver goes away: the sender notices without sending anything.
        drop(conn);
        drop(listener);
        eventually("disconnected", || !h.is_connected()).await;

        // Meanwhile events queue up (8) and the rest are counted as dropped; send never blocks.
        let started = Instant::now();
        let mut queued = 0;
        for i in 1..=50 {
            if h.send("drop", &numbered(i)) {
                queued += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(queued, 8);
        eventually("connect errors", || h.stats().connect_errors > 0).await;
        let stats = h.stats();
        assert_eq!((stats.dropped, stats.queued), (42, 8));

        // It comes back on the same port: the queued events arrive, then new ones.
        let listener = listen_on(port);
        let (mut conn, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        for i in 1..=8 {
            assert_eq!(seq(&recv_frame(&mut conn).await.unwrap()), i);
        }
        assert!(h.send("drop", &numbered(100)));
        assert_eq!(seq(&recv_frame(&mut conn).await.unwrap()), 100);
        eventually("sent = 10", || h.stats().sent == 10).await;
        let stats = h.stats();
        assert_eq!((stats.reconnects, stats.dropped), (1, 42));
        assert!(h.is_connected());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_counts_drops_without_blocking() {
        // Nothing listens on this port: connections are refused, nothing leaves the queue.
        let port = listen_on(0).local_addr().unwrap().port();
        let h = spawn(format!("tcp://127.0.0.1:{port}").parse().unwrap(), 4);
        let started = Instant::now();
        let accepted = (0..10_000)
            .filter(|&i| h.send("drop", &numbered(i)))
            .count();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(accepted, 4);
        let stats = h.stats();
        assert_eq!((stats.sent, stats.dropped, stats.queued), (0, 9_996, 4));
        assert!(!h.is_connected());

        // Oversized messages are dropped too (UDP cannot carry them).
        let recv = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let hu = spawn(
            format!("udp://127.0.0.1:{}", recv.local_addr().unwrap().port())
                .parse()
                .unwrap(),
            4,
        );
        assert!(!hu.send("drop", &json!({"blob": "x".repeat(MAX_MESSAGE_LEN)})));
        assert_eq!(hu.stats().dropped, 1);
        assert!(hu.send("drop", &numbered(1)));
        assert_eq!(seq(&recv_udp(&recv).await), 1);
    }
}
