//! The event log behind `events.subscribe`: every event gets the next sequence number, goes
//! to live subscribers and to a bounded in-memory history, and is written to the state
//! database by a writer thread so that `--since` still works after a restart. Also owns
//! the parsing of `since`/`until` times and of docker-style event filters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_api::ErrorKind;
use berth_api::events::Event;
use tokio::sync::broadcast;

use crate::store::Store;

/// Events kept in memory and in the database; older ones are dropped.
pub const HISTORY: usize = 10_000;
/// Events a slow live subscriber may fall behind by before it has to catch up from the
/// history ([`Events::after`]).
const LIVE_BUFFER: usize = 4_096;
/// Events waiting for the writer thread; beyond that they are kept in memory only.
const WRITE_QUEUE: usize = 65_536;

/// Event log failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `since`/`until` value that is no time.
    #[error("invalid time {value:?}: use RFC 3339, Unix seconds or a duration ago like 10m")]
    InvalidTime {
        /// What was given.
        value: String,
    },
    /// A filter that is not `KEY=VALUE` with a known key.
    #[error("invalid event filter {filter:?}: {reason}")]
    InvalidFilter {
        /// What was given.
        filter: String,
        /// Why it was refused.
        reason: String,
    },
    /// The history could not be read back from the state database.
    #[error("reading the event history: {0}")]
    Store(#[from] crate::store::Error),
    /// The writer thread could not be started.
    #[error("starting the event writer thread: {0}")]
    Thread(std::io::Error),
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidTime { .. } | Error::InvalidFilter { .. } => ErrorKind::InvalidArgument,
            Error::Store(e) => e.kind(),
            Error::Thread(_) => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// What the writer thread is asked to do.
enum Write {
    Event(Arc<Event>),
    /// Answer once everything queued before is on disk.
    Flush(std::sync::mpsc::Sender<()>),
}

struct History {
    next_seq: u64,
    events: VecDeque<Arc<Event>>,
}

/// The event log of one daemon.
pub struct Events {
    history: Mutex<History>,
    live: broadcast::Sender<Arc<Event>>,
    writer: std::sync::mpsc::SyncSender<Write>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Loads the last [`HISTORY`] events from `store` and starts the writer thread. Blocking.
    pub fn open(store: Arc<Store>) -> Result<Arc<Events>> {
        let loaded = store.with_conn(|conn| {
            let mut statement = conn
                .prepare("SELECT doc FROM events ORDER BY seq DESC LIMIT ?1")
                .map_err(|source| crate::store::Error::Query {
                    what: "read events",
                    source,
                })?;
            let rows = statement
                .query_map([HISTORY as i64], |row| row.get::<_, String>(0))
                .map_err(|source| crate::store::Error::Query {
                    what: "read events",
                    source,
                })?;
            let mut docs = Vec::new();
            for row in rows {
                docs.push(row.map_err(|source| crate::store::Error::Query {
                    what: "read events",
                    source,
                })?);
            }
            Ok(docs)
        })?;
        // A row that no longer parses is skipped, not fatal: the history is a convenience.
        let mut events: VecDeque<Arc<Event>> = loaded
            .iter()
            .rev()
            .filter_map(|doc| serde_json::from_str::<Event>(doc).ok())
            .map(Arc::new)
            .collect();
        events.make_contiguous().sort_by_key(|e| e.seq);
        let next_seq = events.back().map_or(1, |e| e.seq + 1);
        let (writer, queue) = std::sync::mpsc::sync_channel::<Write>(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || write_events(&store, &queue))
            .map_err(Error::Thread)?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Ok(Arc::new(Events {
            history: Mutex::new(History { next_seq, events }),
            live,
            writer,
        }))
    }

    /// Records that `action` happened to the `kind` object `id`, with `attributes` (pairs
    /// or a map). Never blocks on disk.
    pub fn emit<K: Into<String>, V: Into<String>>(
        &self,
        kind: &str,
        action: &str,
        id: &str,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) {
        let attributes = attributes
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let now = SystemTime::now();
        let time_nano = unix_nanos(now);
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let event = Arc::new(Event {
            seq: history.next_seq,
            time: humantime::format_rfc3339_nanos(now).to_string(),
            time_nano,
            kind: kind.to_owned(),
            action: action.to_owned(),
            id: id.to_owned(),
            attributes,
        });
        history.next_seq += 1;
        if history.events.len() == HISTORY {
            history.events.pop_front();
        }
        history.events.push_back(Arc::clone(&event));
        // Sent under the lock, so that live subscribers see events in sequence order and a
        // new subscriber's snapshot of the history meets its live stream without a gap.
        let _ = self.live.send(Arc::clone(&event));
        drop(history);
        if self.writer.try_send(Write::Event(event)).is_err() {
            tracing::warn!(
                kind,
                action,
                id,
                "event not persisted: the writer is behind"
            );
        }
    }

    /// Waits (up to `limit`) until every event so far is in the database: for a clean
    /// shutdown. Blocking.
    pub fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = std::sync::mpsc::channel();
        let queued = send_within(&self.writer, Write::Flush(done), limit);
        queued && wait.recv_timeout(limit).is_ok()
    }

    /// The events from `since` (nanoseconds since the epoch) in the history, and a receiver
    /// of every later one.
    pub fn subscribe(&self, since: Option<i64>) -> Subscription {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let past = match since {
            Some(since) => history
                .events
                .iter()
                .filter(|e| e.time_nano >= since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        Subscription {
            past,
            live: self.live.subscribe(),
            seen_up_to: history.next_seq - 1,
        }
    }

    /// For a live subscriber that fell behind after event `seq`: the later events the
    /// history still holds, and how many right after `seq` it no longer holds.
    pub fn after(&self, seq: u64) -> (Vec<Arc<Event>>, u64) {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = history.events.front().map_or(history.next_seq, |e| e.seq);
        let first_kept = history.events.partition_point(|e| e.seq <= seq);
        let kept = history.events.range(first_kept..).cloned().collect();
        (kept, oldest.saturating_sub(seq + 1))
    }
}

/// The start of a subscription to the event log.
#[derive(Debug)]
pub struct Subscription {
    /// The history from `since`, oldest first.
    pub past: Vec<Arc<Event>>,
    /// Every event after the history's last when subscribing.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The sequence number of that last event (0 for none): the live stream follows it.
    pub seen_up_to: u64,
}

/// The writer thread: batches of events in one transaction each, trimming the table to
/// [`HISTORY`] rows now and then.
fn write_events(store: &Store, queue: &std::sync::mpsc::Receiver<Write>) {
    let mut since_trim = 0usize;
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Write::Event(e) => batch.push(e),
                Write::Flush(done) => flushes.push(done),
            }
            next = if batch.len() < 1024 {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() {
            for done in flushes {
                let _ = done.send(());
            }
            continue;
        }
        since_trim += batch.len();
        let trim = since_trim >= 1024;
        if trim {
            since_trim = 0;
        }
        let written = store.with_conn(|conn| {
            let query = |source| crate::store::Error::Query {
                what: "write events",
                source,
            };
            let tx = conn.unchecked_transaction().map_err(query)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO events (seq, time_nano, doc) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(query)?;
                for event in &batch {
                    let doc = serde_json::to_string(&**event).unwrap_or_default();
                    insert
                        .execute(rusqlite::params![event.seq as i64, event.time_nano, doc])
                        .map_err(query)?;
                }
            }
            if trim && let Some(last) = batch.last() {
                tx.execute(
                    "DELETE FROM events WHERE seq <= ?1",
                    [last.seq as i64 - HISTORY as i64],
                )
                .map_err(query)?;
            }
            tx.commit().map_err(query)
        });
        if let Err(e) = written {
            tracing::warn!("event history not written: {e}");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// `SyncSender::send` with a deadline (std has none): `try_send` retried briefly.
fn send_within<T>(sender: &std::sync::mpsc::SyncSender<T>, mut value: T, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match sender.try_send(value) {
            Ok(()) => return true,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                value = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far after it).
pub fn unix_nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Parses a `since`/`until` value into nanoseconds since the epoch: RFC 3339, Unix seconds
/// (with a fraction), or a duration before `now`.
pub fn parse_time(value: &str, now: SystemTime) -> Result<i64> {
    let invalid = || Error::InvalidTime {
        value: value.to_owned(),
    };
    let value = value.trim();
    let at = if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        t
    } else if let Ok(seconds) = value.parse::<f64>() {
        if !(0.0..=1e11).contains(&seconds) {
            return Err(invalid());
        }
        UNIX_EPOCH + Duration::from_secs_f64(seconds)
    } else {
        let ago = humantime::parse_duration(value).map_err(|_| invalid())?;
        now.checked_sub(ago).ok_or_else(invalid)?
    };
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid())?
        .as_nanos();
    i64::try_from(nanos).map_err(|_| invalid())
}

/// Docker-style event filters: the same key ORs its values, different keys AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    by_key: BTreeMap<String, Vec<String>>,
}

const FILTER_KEYS: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "volume",
    "network",
    "plugin",
    "label",
];

impl Filter {
    /// Parses `KEY=VALUE` filters.
    pub fn parse(filters: &[String]) -> Result<Filter> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for filter in filters {
            let refuse = |reason: String| Error::InvalidFilter {
                filter: filter.clone(),
                reason,
            };
            let (key, value) = filter
                .split_once('=')
                .ok_or_else(|| refuse("expected KEY=VALUE".into()))?;
            let key = key.trim().to_ascii_lowercase();
            if !FILTER_KEYS.contains(&key.as_str()) {
                return Err(refuse(format!(
                    "unknown key {key:?} (known: {})",
                    FILTER_KEYS.join(", ")
                )));
            }
            if value.is_empty() {
                return Err(refuse("empty value".into()));
            }
            by_key.entry(key).or_default().push(value.to_owned());
        }
        Ok(Filter { by_key })
    }

    /// Whether `event` passes every key.
    pub fn matches(&self, event: &Event) -> bool {
        self.by_key
            .iter()
            .all(|(key, values)| values.iter().any(|v| matches_one(key, v, event)))
    }
}

fn matches_one(key: &str, value: &str, event: &Event) -> bool {
    let names_object = |kind: &str| {
        event.kind == kind
            && (event.id == value
                || (value.len() >= 3 && event.id.starts_with(value))
                || event.attributes.get("name").is_some_and(|n| n == value))
    };
    match key {
        "type" => event.kind == value,
        "event" => event.action == value,
        "label" => match value.split_once('=') {
            Some((k, v)) => event.attributes.get(k).is_some_and(|have| have == v),
            None => event.attributes.contains_key(value),
        },
        "image" => {
            names_object("image")
                || event.attributes.get("image").is_some_and(|i| {
                    i == value || i.strip_suffix(":latest").is_some_and(|i| i == value)
                })
        }
        other => names_object(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn times_in_every_form() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_time("1700000000", now).unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("1700000000.5", now).unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("10m", now).unwrap(),
            1_700_000_000_000_000_000 - 600_000_000_000
        );
        for bad in ["yesterday", "", "-5", "NaN", "1e300"] {
            assert!(
                matches!(parse_time(bad, now), Err(Error::InvalidTime { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn filters_or_within_a_key_and_across_keys() {
        let event = Event {
            seq: 1,
            time: String::new(),
            time_nano: 0,
            kind: "container".into(),
            action: "start".into(),
            id: "0123456789abcdef".into(),
            attributes: attrs(&[("name", "web"), ("image", "busybox:latest"), ("team", "a")]),
        };
        let f = |list: &[&str]| {
            Filter::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
        };
        assert!(f(&[]).matches(&event));
        assert!(f(&["type=container", "event=die", "event=start"]).matches(&event));
        assert!(!f(&["type=container", "event=die"]).matches(&event));
        assert!(f(&["container=web"]).matches(&event));
        assert!(f(&["container=0123"]).matches(&event));
        assert!(!f(&["container=01"]).matches(&event), "too short a prefix");
        assert!(!f(&["volume=web"]).matches(&event), "wrong kind");
        assert!(f(&["image=busybox"]).matches(&event));
        assert!(f(&["label=team", "label=team=a"]).matches(&event));
        assert!(!f(&["label=team=b"]).matches(&event));
        for bad in ["type", "colour=red", "event="] {
            assert!(
                matches!(
                    Filter::parse(&[bad.to_owned()]),
                    Err(Error::InvalidFilter { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn history_survives_reopening_and_meets_the_live_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let events = Events::open(Arc::clone(&store)).unwrap();
        events.emit("container", "create", "c1", attrs(&[("name", "one")]));
        let Subscription {
            past,
            mut live,
            seen_up_to,
        } = events.subscribe(Some(0));
        assert_eq!((past.len(), seen_up_to), (1, 1));
        events.emit("container", "start", "c1", attrs(&[]));
        let next = live.try_recv().unwrap();
        assert_eq!((next.seq, next.action.as_str()), (2, "start"));
        assert!(events.flush(Duration::from_secs(10)), "events not written");
        let rows: i64 = store
            .with_conn(|c| {
                c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
                    .map_err(|source| crate::store::Error::Query {
                        what: "count",
                        source,
                    })
            })
            .unwrap();
        assert_eq!(rows, 2);
        drop(events);
        let reopened = Events::open(Arc::clone(&store)).unwrap();
        let past = reopened.subscribe(Some(0)).past;
        let seen: Vec<(u64, &str)> = past.iter().map(|e| (e.seq, e.action.as_str())).collect();
        assert_eq!(seen, vec![(1, "create"), (2, "start")]);
        reopened.emit("container", "die", "c1", attrs(&[]));
        let past = reopened.subscribe(Some(0)).past;
        assert_eq!(past.last().map(|e| e.seq), Some(3), "numbering goes on");
        let recent = reopened.subscribe(Some(past[2].time_nano)).past;
        assert_eq!(recent.len(), 1);
        let none = reopened.subscribe(None);
        assert!(none.past.is_empty());
        assert_eq!(none.seen_up_to, 3, "the live stream follows the last event");
    }

    #[test]
    fn a_subscriber_that_fell_behind_catches_up_from_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let events = Events::open(Arc::new(Store::open(dir.path()).unwrap())).unwrap();
        let mut slow = events.subscribe(None);
        assert_eq!(slow.seen_up_to, 0);
        let total = LIVE_BUFFER as u64 + 100;
        for n in 0..total {
            events.emit("volume", "create", &format!("v{n}"), attrs(&[]));
        }
        let Err(broadcast::error::TryRecvError::Lagged(dropped)) = slow.live.try_recv() else {
            panic!("the live stream kept everything");
        };
        assert_eq!(dropped, 100);
        // Everything after what the subscriber saw is still in the history.
        let (kept, lost) = events.after(slow.seen_up_to);
        assert_eq!((kept.len() as u64, lost), (total, 0));
        assert_eq!(kept.first().map(|e| e.seq), Some(1));
        let (kept, lost) = events.after(total - 2);
        assert_eq!(
            kept.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [total - 1, total]
        );
        assert_eq!(lost, 0);
        assert!(events.after(total).0.is_empty());
        // Past the history's reach, the events between are counted as lost.
        for n in 0..HISTORY as u64 {
            events.emit("volume", "remove", &format!("v{n}"), attrs(&[]));
        }
        let (kept, lost) = events.after(5);
        assert_eq!(kept.len(), HISTORY);
        assert_eq!(kept.first().map(|e| e.seq), Some(total + 1));
        assert_eq!(lost, total - 5);
    }
}
