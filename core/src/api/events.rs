//! `events.*` handlers: a subscription that replays the history from `since`, then follows
//! the live stream (catching up from the history when it falls behind) until `until` or the
//! caller leaves, sending only the events about objects the authorization policies let the
//! caller see.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::events::{Event, EventsItem, EventsRequest, EventsServer};
use jsonrpsee::core::server::Extensions;
use jsonrpsee::core::{SubscriptionResult, async_trait};
use jsonrpsee::{PendingSubscriptionSink, SubscriptionSink};
use tokio::sync::broadcast::error::RecvError;

use super::ApiError;
use super::authz::EventScope;
use crate::daemon::Context;
use crate::events::{Filter, parse_time, unix_nanos};

/// Implements [`EventsServer`].
#[derive(Debug)]
pub struct EventsApi {
    ctx: Arc<Context>,
}

impl EventsApi {
    /// Handlers over the shared daemon context.
    pub fn new(ctx: Arc<Context>) -> EventsApi {
        EventsApi { ctx }
    }
}

/// Sends one item; false once the caller has gone.
async fn send(sink: &SubscriptionSink, item: &EventsItem) -> bool {
    match serde_json::value::to_raw_value(item) {
        Ok(raw) => sink.send(raw).await.is_ok(),
        Err(_) => false,
    }
}

#[async_trait]
impl EventsServer for EventsApi {
    async fn watch(
        &self,
        pending: PendingSubscriptionSink,
        extensions: &Extensions,
        request: Option<EventsRequest>,
    ) -> SubscriptionResult {
        let scope = extensions.get::<EventScope>().cloned();
        let shown = async |event: &Event| match &scope {
            Some(scope) => scope.shows(event).await,
            None => true,
        };
        let request = request.unwrap_or_default();
        let now = SystemTime::now();
        let parsed = (|| -> crate::events::Result<_> {
            let since = request
                .since
                .as_deref()
                .map(|s| parse_time(s, now))
                .transpose()?;
            let until = request
                .until
                .as_deref()
                .map(|s| parse_time(s, now))
                .transpose()?;
            Ok((since, until, Filter::parse(&request.filters)?))
        })();
        let (since, until, filter) = match parsed {
            Ok(v) => v,
            Err(e) => {
                pending.reject(e.to_rpc()).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let subscription = self.ctx.events.subscribe(since);
        let mut live = subscription.live;
        // Filtered out or not, an event is only passed on once: `last_seq` is the newest
        // event dealt with, the live stream's own start for a subscriber without `since`.
        let mut last_seq = subscription.seen_up_to;
        // Sends `event` if the caller asked for it and may see it; false once the caller
        // has gone.
        let forward = async |event: &Event| {
            if !filter.matches(event) || !shown(event).await {
                return true;
            }
            send(&sink, &EventsItem::Event(event.clone())).await
        };
        for event in subscription.past {
            if until.is_some_and(|u| event.time_nano > u) {
                let _ = send(&sink, &EventsItem::End).await;
                return Ok(());
            }
            if !forward(&event).await {
                return Ok(());
            }
        }
        let deadline = until.map(|u| {
            let wait = u.saturating_sub(unix_nanos(SystemTime::now())).max(0);
            tokio::time::Instant::now() + Duration::from_nanos(wait as u64)
        });
        let until_passed = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_passed);
        'live: loop {
            let next = tokio::select! {
                received = live.recv() => match received {
                    Ok(event) => vec![event],
                    // The live stream dropped what this caller read too slowly: the history
                    // still has most of it, and only what it lost is reported.
                    Err(RecvError::Lagged(_)) => {
                        let (kept, lost) = self.ctx.events.after(last_seq);
                        tracing::info!(
                            late = kept.len(),
                            lost,
                            "an events subscriber fell behind the live stream: catching up from the history"
                        );
                        if lost > 0 {
                            let missed = scope.is_none().then_some(lost);
                            if !send(&sink, &EventsItem::Lagged { missed }).await {
                                return Ok(());
                            }
                            last_seq += lost;
                        }
                        kept
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                () = &mut until_passed => break,
                () = sink.closed() => return Ok(()),
            };
            for event in next {
                // Already sent (from the history, or caught up), or before a `since` still
                // ahead.
                if event.seq <= last_seq || since.is_some_and(|s| event.time_nano < s) {
                    continue;
                }
                if until.is_some_and(|u| event.time_nano > u) {
                    break 'live;
                }
                last_seq = event.seq;
                if !forward(&event).await {
                    return Ok(());
                }
            }
        }
        let _ = send(&sink, &EventsItem::End).await;
        Ok(())
    }
}
