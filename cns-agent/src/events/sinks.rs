//! Where events go (stdout, `monitor` clients, syslog) and how each destination is doing.
//!
//! No destination may slow the agent down: each gets events through a bounded queue, an
//! event that finds it full is dropped and counted (`cns_events_dropped_total{sink}`), and a
//! destination that fails (a closed stdout) is a counted, visible sink failure, never a
//! panic. Stdout is written by its own thread, so a pipe nobody reads blocks only that
//! thread, never a runtime worker (whose tasks serve `status`, `sync`, metrics and `monitor`).

use std::{
    collections::BTreeSet,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError, sync_channel},
    },
};

use serde::Serialize;
use serde_json::Value;

use super::Published;
use crate::syslog::SyslogHandle;

/// Events waiting for stdout at most; more are dropped (and counted).
pub const STDOUT_QUEUE: usize = 1024;

/// How a sink is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// Delivering.
    Ok,
    /// Its queue is full: the reader is not keeping up (or not reading); new events are
    /// dropped until it catches up.
    Stalled,
    /// Not connected to its receiver (syslog); events queue, then drop.
    Disconnected,
    /// Gone for good (stdout closed): every event is dropped; see `error`.
    Failed,
}

/// One sink's health, as `status` shows it (`event_sinks`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SinkHealth {
    /// `stdout`, `monitor` or `syslog`.
    pub sink: &'static str,
    pub state: SinkState,
    /// Events handed to the destination.
    pub delivered: u64,
    /// Events dropped: queue full, destination failed, or (monitor) a client lagging.
    pub dropped: u64,
    /// Events waiting in the queue now.
    pub queued: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
    error: Mutex<Option<String>>,
}

/// Delivered and dropped counts of one sink (cheap to clone, shared).
#[derive(Clone, Debug, Default)]
pub struct SinkStats(Arc<Counters>);

impl SinkStats {
    pub fn delivered(&self, n: u64) {
        self.0.delivered.fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self, n: u64) {
        self.0.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn fail(&self, error: String) {
        if let Ok(mut e) = self.0.error.lock() {
            e.get_or_insert(error);
        }
    }

    fn error(&self) -> Option<String> {
        self.0.error.lock().ok().and_then(|e| e.clone())
    }

    fn health(&self, sink: &'static str, state: SinkState) -> SinkHealth {
        SinkHealth {
            sink,
            state,
            delivered: self.0.delivered.load(Ordering::Relaxed),
            dropped: self.0.dropped.load(Ordering::Relaxed),
            queued: self.0.queued.load(Ordering::Relaxed),
            error: self.error(),
        }
    }
}

/// The events of some types printed as JSON lines by a thread of their own.
#[derive(Clone, Debug)]
pub struct StdoutSink {
    tx: SyncSender<Arc<Value>>,
    types: Arc<BTreeSet<String>>,
    capacity: u64,
    stats: SinkStats,
}

impl StdoutSink {
    /// Prints the events of `types` on the process's stdout.
    pub fn spawn(types: BTreeSet<String>) -> Self {
        Self::spawn_with(std::io::stdout(), types, STDOUT_QUEUE)
    }

    /// Writes the events of `types` to `out`, at most `capacity` of them waiting.
    pub fn spawn_with(
        mut out: impl Write + Send + 'static,
        types: BTreeSet<String>,
        capacity: usize,
    ) -> Self {
        let (tx, rx) = sync_channel::<Arc<Value>>(capacity);
        let stats = SinkStats::default();
        let s = stats.clone();
        let spawned = std::thread::Builder::new()
            .name("cns-stdout".into())
            .spawn(move || {
                for json in rx {
                    s.0.queued.fetch_sub(1, Ordering::Relaxed);
                    if s.error().is_some() {
                        s.dropped(1);
                        continue;
                    }
                    let mut line = json.to_string();
                    line.push('\n');
                    match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                        Ok(()) => s.delivered(1),
                        Err(e) => {
                            // A closed stdout does not come back: from now on, count.
                            tracing::error!(error = %e, "event output on stdout failed; events are no longer printed (see status: event_sinks)");
                            s.fail(format!("writing to stdout failed: {e}"));
                            s.dropped(1);
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            stats.fail(format!("failed to start the stdout writer: {e}"));
        }
        Self {
            tx,
            types: Arc::new(types),
            capacity: capacity as u64,
            stats,
        }
    }

    /// Queues `ev` if its type is printed; never blocks (a full queue drops and counts it).
    pub fn offer(&self, ev: &Published) {
        if !self.types.contains(ev.kind) {
            return;
        }
        // Counted before sending, so the writer never sees it go below zero.
        self.stats.0.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(ev.json.clone()) {
            self.stats.0.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped(1);
            if let TrySendError::Disconnected(_) = e {
                self.stats.fail("the stdout writer stopped".into());
            }
        }
    }

    pub fn health(&self) -> SinkHealth {
        let mut h = self.stats.health("stdout", SinkState::Ok);
        h.state = if h.error.is_some() {
            SinkState::Failed
        } else if h.queued >= self.capacity {
            SinkState::Stalled
        } else {
            SinkState::Ok
        };
        h
    }
}

/// Every destination of the events.
#[derive(Clone, Debug)]
pub struct EventSinks {
    pub stdout: StdoutSink,
    /// `monitor` clients (through the control socket's broadcast; a lagging client's lost
    /// events are counted here).
    pub monitor: SinkStats,
    /// Forwards the events stdout prints.
    pub syslog: Option<SyslogHandle>,
}

impl EventSinks {
    pub fn new(stdout: StdoutSink, syslog: Option<SyslogHandle>) -> Self {
        Self {
            stdout,
            monitor: SinkStats::default(),
            syslog,
        }
    }

    /// Hands `ev` to stdout and syslog (the types stdout prints); never blocks.
    pub fn deliver(&self, ev: &Published) {
        self.stdout.offer(ev);
        if let Some(s) = &self.syslog
            && self.stdout.types.contains(ev.kind)
        {
            s.send(ev.kind, &ev.json);
        }
    }

    /// Each sink's health, for `status` and metrics.
    pub fn health(&self) -> Vec<SinkHealth> {
        let mut out = vec![
            self.stdout.health(),
            self.monitor.health("monitor", SinkState::Ok),
        ];
        if let Some(s) = &self.syslog {
            let stats = s.stats();
            let connected = s.is_connected();
            out.push(SinkHealth {
                sink: "syslog",
                state: if connected {
                    SinkState::Ok
                } else {
                    SinkState::Disconnected
                },
                delivered: stats.sent,
                dropped: stats.dropped,
                queued: stats.queued,
                error: (!connected).then(|| format!("not connected to {}", s.target())),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::mpsc,
        time::{Duration, Instant},
    };

    use super::*;

    fn event(kind: &'static str) -> Published {
        Published {
            kind,
            json: Arc::new(serde_json::json!({ "event_type": kind })),
        }
    }

    fn types() -> BTreeSet<String> {
        ["drop".to_owned()].into()
    }

    fn wait_for(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A writer that blocks until told to go on (a pipe nobody reads), then fails.
    struct Stuck(Mutex<mpsc::Receiver<()>>);

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            _ = self.0.lock().unwrap().recv();
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_never_reads_drops_and_counts_without_blocking() {
        let (release, stuck) = mpsc::channel();
        let sink = StdoutSink::spawn_with(Stuck(Mutex::new(stuck)), types(), 4);
        // The first event goes into the writer's hands, and stays there.
        sink.offer(&event("drop"));
        wait_for("the writer to take it", || sink.health().queued == 0);
        let started = Instant::now();
        for _ in 0..99 {
            sink.offer(&event("drop"));
            sink.offer(&event("audit")); // not printed: neither queued nor dropped
        }
        assert!(started.elapsed() < Duration::from_secs(1), "offer blocked");
        // Four wait, the rest were dropped.
        let h = sink.health();
        assert_eq!(
            (h.state, h.delivered, h.dropped, h.queued),
            (SinkState::Stalled, 0, 95, 4)
        );
        // The reader goes away: a counted failure, never a panic.
        drop(release);
        wait_for("the failure", || sink.health().state == SinkState::Failed);
        wait_for("the queue to drain", || sink.health().queued == 0);
        sink.offer(&event("drop"));
        wait_for("the last drop", || sink.health().dropped == 101);
        let h = sink.health();
        assert_eq!(h.delivered, 0);
        assert!(
            h.error.as_deref().is_some_and(|e| e.contains("stdout")),
            "{h:?}"
        );
    }

    #[test]
    fn a_working_reader_gets_every_line() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = StdoutSink::spawn_with(buf.clone(), types(), 16);
        for _ in 0..3 {
            sink.offer(&event("drop"));
        }
        wait_for("delivery", || sink.health().delivered == 3);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "{\"event_type\":\"drop\"}\n".repeat(3));
        let h = sink.health();
        assert_eq!((h.state, h.dropped, h.queued), (SinkState::Ok, 0, 0));
    }
}
