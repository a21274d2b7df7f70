//! `events.*`: what happened to containers, images, volumes, networks and plugins, as a
//! stream (like `docker events`), with a bounded history that survives restarts.

use std::collections::BTreeMap;

use berth_api_macros::method_specs;
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::proc_macros::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Position in this data root's event history: strictly increasing, never reused.
    pub seq: u64,
    /// When it happened, RFC 3339 with nanoseconds (UTC).
    pub time: String,
    /// Nanoseconds since the Unix epoch (the same instant as `time`).
    pub time_nano: i64,
    /// What kind of object: `container`, `image`, `volume`, `network` or `plugin`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened: `create`, `start`, `die`, `oom`, `kill`, `stop`, `destroy`,
    /// `exec_start`, `exec_die`, `pause`, `unpause`, `rename`, `restart`; `pull`, `push`,
    /// `tag`, `untag`, `delete`, `import`, `load`; `mount`, `unmount`; `connect`,
    /// `disconnect`; `install`, `enable`, `disable`, `remove`, `trap`.
    pub action: String,
    /// The object's id (container/network id, image id, volume or plugin name).
    pub id: String,
    /// Facts about the object: `name`, `image`, its labels, `exitCode`, `signal`, ...
    pub attributes: BTreeMap<String, String>,
}

/// Which events `events.subscribe` sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// Send past events from this time on first: RFC 3339, Unix seconds (`1700000000.5`),
    /// or a duration ago (`10m`, `1h30m`). Without it, only new events.
    #[serde(default)]
    pub since: Option<String>,
    /// Stop (with an `end` item) once this time has passed; the same forms as `since`.
    #[serde(default)]
    pub until: Option<String>,
    /// `KEY=VALUE` filters as docker's: `type`, `event` (action), `container`, `image`,
    /// `volume`, `network`, `plugin` (name or id), `label` (`KEY` or `KEY=VALUE`). Filters
    /// with the same key match any of their values; different keys must all match.
    #[serde(default)]
    pub filters: Vec<String>,
}

/// One item of `events.subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum EventsItem {
    /// An event.
    Event(Event),
    /// Events were dropped: this subscriber read so slowly that the event history (the last
    /// 10000) no longer holds them. Events the history still holds are sent late instead, in
    /// order, with no `lagged` item.
    Lagged {
        /// How many events were dropped; absent on a stream an authorization policy narrows,
        /// where the count would tell of events the caller may not see.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missed: Option<u64>,
    },
    /// `until` has passed: nothing follows.
    End,
}

/// `events.*`: the event stream.
#[method_specs]
#[rpc(server, client, namespace = "events", namespace_separator = ".")]
pub trait Events {
    /// Streams events (like `docker events`): past ones from `since` first (from a bounded
    /// history kept across restarts), then new ones as they happen, until `until` passes or
    /// the caller unsubscribes. Under an authorization policy, only events about objects the
    /// policy lets the caller see.
    #[subscription(name = "subscribe", unsubscribe = "unsubscribe", item = EventsItem, param_kind = map, with_extensions)]
    async fn watch(&self, request: Option<EventsRequest>) -> SubscriptionResult;
}
