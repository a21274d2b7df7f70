//! `berth events`: the daemon's event stream, as docker prints it or as JSON lines.

use std::io::Write as _;

use anyhow::Context as _;
use berth_api::events::{Event, EventsClient, EventsItem, EventsRequest};

use crate::client::Paced;

/// Options of `berth events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Past events from this time first: RFC 3339, Unix seconds or a duration ago (10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Stop once this time has passed (the same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// KEY=VALUE: type, event, container, image, volume, network, plugin, label (repeat:
    /// the same key matches any of its values, different keys must all match).
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// `json` prints one JSON object per line.
    #[arg(long)]
    pub format: Option<String>,
}

/// One line as `docker events` prints it:
/// `TIME TYPE ACTION ID (key=value, ...)`.
fn line(event: &Event) -> String {
    let attributes: Vec<String> = event
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{} {} {} {} ({})",
        event.time,
        event.kind,
        event.action,
        event.id,
        attributes.join(", ")
    )
}

/// `berth events`.
pub async fn events(paced: &Paced, args: EventsArgs) -> anyhow::Result<u8> {
    let client = &paced.client;
    let json = match args.format.as_deref() {
        None | Some("table") => false,
        Some("json") => true,
        Some(other) => anyhow::bail!("unknown --format {other:?}: use json"),
    };
    let request = EventsRequest {
        since: args.since,
        until: args.until,
        filters: args.filters,
    };
    let mut stream = paced.read(
        client
            .watch(Some(request))
            .await
            .context("events.subscribe")?,
    );
    let mut out = std::io::stdout().lock();
    while let Some(item) = stream.next().await {
        match item.context("event stream")? {
            EventsItem::Event(event) => {
                let text = if json {
                    serde_json::to_string(&event)?
                } else {
                    line(&event)
                };
                writeln!(out, "{text}")?;
                // Whoever reads a live stream wants each event as it comes.
                out.flush()?;
            }
            EventsItem::Lagged {
                missed: Some(missed),
            } => {
                eprintln!("berth: {missed} events were dropped: this reader fell behind");
            }
            EventsItem::Lagged { missed: None } => {
                eprintln!("berth: events were dropped: this reader fell behind");
            }
            EventsItem::End => return Ok(0),
        }
    }
    // Without its `end`, the stream did not finish: say why rather than look like it did.
    Err(stream.cut_short("event stream"))
}
