//! berthd's Prometheus metrics: one process-wide registry (as every Prometheus client
//! keeps), fed where things happen (API calls, plugin calls, pulls, log delivery) and
//! rendered in the text exposition format by `system.metrics`, which `GET /metrics` on the
//! API listener calls through the same authentication and authorization as any call.
//! Label values come from berth's own names (known methods, installed plugins, states), so
//! a caller cannot grow the label sets.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCallLabels {
    plugin: String,
    function: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
    function: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabels {
    driver: String,
}

/// Latency buckets from 50 µs to about 27 minutes... of which the API uses the low end and
/// pulls the high end.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

fn pull_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

struct Metrics {
    registry: Registry,
    api_calls: Family<CallLabels, Counter>,
    api_latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    plugin_calls: Family<PluginCallLabels, Counter>,
    plugin_latency: Family<PluginLabels, Histogram, fn() -> Histogram>,
    containers: Family<StateLabels, Gauge>,
    pulls: Family<OutcomeLabels, Counter>,
    pull_bytes: Counter,
    pull_duration: Histogram,
    log_delivered: Family<DriverLabels, Counter>,
    log_dropped: Family<DriverLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("berth");
    let api_calls = Family::<CallLabels, Counter>::default();
    registry.register(
        "api_calls",
        "JSON-RPC calls by method and outcome (ok, or the error kind)",
        api_calls.clone(),
    );
    let api_latency: Family<MethodLabels, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(latency_histogram);
    registry.register(
        "api_call_duration_seconds",
        "JSON-RPC call latency by method, authorization included",
        api_latency.clone(),
    );
    let plugin_calls = Family::<PluginCallLabels, Counter>::default();
    registry.register(
        "plugin_calls",
        "Calls into plugins by plugin, function and outcome (ok, error: the plugin's own, failed: trap, deadline or limit)",
        plugin_calls.clone(),
    );
    let plugin_latency: Family<PluginLabels, Histogram, fn() -> Histogram> =
        Family::new_with_constructor(latency_histogram);
    registry.register(
        "plugin_call_duration_seconds",
        "Plugin call latency by plugin and function",
        plugin_latency.clone(),
    );
    let containers = Family::<StateLabels, Gauge>::default();
    registry.register("containers", "Containers by state", containers.clone());
    let pulls = Family::<OutcomeLabels, Counter>::default();
    registry.register("image_pulls", "Image pulls by outcome", pulls.clone());
    let pull_bytes = Counter::default();
    registry.register(
        "image_pull_bytes",
        "Compressed layer bytes downloaded by pulls",
        pull_bytes.clone(),
    );
    let pull_duration = pull_histogram();
    registry.register(
        "image_pull_duration_seconds",
        "Duration of successful pulls",
        pull_duration.clone(),
    );
    let log_delivered = Family::<DriverLabels, Counter>::default();
    registry.register(
        "log_records_delivered",
        "Container log records accepted by logging drivers",
        log_delivered.clone(),
    );
    let log_dropped = Family::<DriverLabels, Counter>::default();
    registry.register(
        "log_records_dropped",
        "Container log records dropped on the way to logging drivers (full buffer, refused or failed batch)",
        log_dropped.clone(),
    );
    Metrics {
        registry,
        api_calls,
        api_latency,
        plugin_calls,
        plugin_latency,
        containers,
        pulls,
        pull_bytes,
        pull_duration,
        log_delivered,
        log_dropped,
    }
});

/// A call counter and the latency histogram of its method or function, as recorded
/// together.
struct CallHandles {
    calls: Counter,
    latency: Histogram,
}

impl CallHandles {
    fn record(&self, elapsed: Duration) {
        self.calls.inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// The address of a `'static` label value: a key that is hashed and compared without
/// reading the text. Two literals with the same text may have two addresses; they then get
/// two cached handles on the same series, which is harmless.
fn address(label: &'static str) -> usize {
    label.as_ptr() as usize
}

/// Handles on the series a thread has recorded to, so that a call on a hot path (every API
/// call, every plugin call) costs an atomic add and a histogram update, not five label
/// strings allocated and hashed into two families. Label values are bounded (see above), so
/// these are too.
#[derive(Default)]
struct HandleCache {
    /// By method and outcome.
    api: std::collections::HashMap<(usize, usize), CallHandles>,
    /// By plugin; then function and outcome, few enough to scan.
    plugins: std::collections::HashMap<Box<str>, Vec<(usize, usize, CallHandles)>>,
}

thread_local! {
    static HANDLES: std::cell::RefCell<HandleCache> = std::cell::RefCell::default();
}

/// Records a JSON-RPC call. `method` must be a known method name (or `unknown`).
pub fn api_call(method: &'static str, outcome: &'static str, elapsed: Duration) {
    HANDLES.with_borrow_mut(|cache| {
        cache
            .api
            .entry((address(method), address(outcome)))
            .or_insert_with(|| {
                let m = &*METRICS;
                CallHandles {
                    calls: m
                        .api_calls
                        .get_or_create(&CallLabels {
                            method: method.to_owned(),
                            outcome: outcome.to_owned(),
                        })
                        .clone(),
                    latency: m
                        .api_latency
                        .get_or_create(&MethodLabels {
                            method: method.to_owned(),
                        })
                        .clone(),
                }
            })
            .record(elapsed);
    });
}

/// Records a call into a plugin: `outcome` is `ok`, `error` (the plugin's own error) or
/// `failed` (trap, deadline, limit).
pub fn plugin_call(plugin: &str, function: &'static str, outcome: &'static str, elapsed: Duration) {
    HANDLES.with_borrow_mut(|cache| {
        let series = match cache.plugins.get_mut(plugin) {
            Some(series) => series,
            None => cache.plugins.entry(plugin.into()).or_default(),
        };
        let key = (address(function), address(outcome));
        if let Some((_, _, handles)) = series.iter().find(|(f, o, _)| (*f, *o) == key) {
            handles.record(elapsed);
            return;
        }
        let m = &*METRICS;
        let handles = CallHandles {
            calls: m
                .plugin_calls
                .get_or_create(&PluginCallLabels {
                    plugin: plugin.to_owned(),
                    function: function.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .clone(),
            latency: m
                .plugin_latency
                .get_or_create(&PluginLabels {
                    plugin: plugin.to_owned(),
                    function: function.to_owned(),
                })
                .clone(),
        };
        handles.record(elapsed);
        series.push((key.0, key.1, handles));
    });
}

/// Records a pull: its outcome, and for a successful one the bytes and the duration.
pub fn pull(result: Result<u64, ()>, elapsed: Duration) {
    let m = &*METRICS;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    m.pulls
        .get_or_create(&OutcomeLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
    if let Ok(bytes) = result {
        m.pull_bytes.inc_by(bytes);
        m.pull_duration.observe(elapsed.as_secs_f64());
    }
}

/// Records log records delivered to, or dropped on the way to, `driver`.
pub fn log_records(driver: &str, delivered: u64, dropped: u64) {
    let m = &*METRICS;
    let labels = DriverLabels {
        driver: driver.to_owned(),
    };
    if delivered > 0 {
        m.log_delivered.get_or_create(&labels).inc_by(delivered);
    }
    if dropped > 0 {
        m.log_dropped.get_or_create(&labels).inc_by(dropped);
    }
}

/// The text exposition, with the container counts by state given now (states without
/// containers read 0).
pub fn render(containers_by_state: &[(&str, i64)]) -> String {
    // The container gauges are set and then read back in one go: two renders at once (two
    // scrapes, or tests) would otherwise show each other's counts.
    static RENDERING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _rendering = RENDERING.lock().unwrap_or_else(|p| p.into_inner());
    let m = &*METRICS;
    for state in ["created", "running", "paused", "exited", "removing"] {
        let count = containers_by_state
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum();
        m.containers
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .set(count);
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        tracing::warn!("cannot render the metrics: {e}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_rendered_with_their_labels() {
        api_call("system.ping", "ok", Duration::from_micros(120));
        api_call("system.ping", "not_found", Duration::from_micros(80));
        plugin_call("local", "mount", "ok", Duration::from_micros(300));
        pull(Ok(4096), Duration::from_millis(250));
        pull(Err(()), Duration::from_millis(10));
        log_records("json-file", 10, 2);
        let text = render(&[("running", 3), ("exited", 1)]);
        for expected in [
            "berth_api_calls_total{method=\"system.ping\",outcome=\"ok\"} ",
            "berth_api_calls_total{method=\"system.ping\",outcome=\"not_found\"} ",
            "berth_api_call_duration_seconds_bucket{le=\"0.0002\",method=\"system.ping\"} ",
            "berth_plugin_calls_total{plugin=\"local\",function=\"mount\",outcome=\"ok\"} ",
            "berth_containers{state=\"running\"} 3",
            "berth_containers{state=\"paused\"} 0",
            "berth_image_pulls_total{outcome=\"error\"} ",
            "berth_image_pull_bytes_total ",
            "berth_log_records_delivered_total{driver=\"json-file\"} ",
            "berth_log_records_dropped_total{driver=\"json-file\"} ",
            "# TYPE berth_api_call_duration_seconds histogram",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn calls_recorded_on_several_threads_add_up_in_one_series() {
        let record = || {
            for _ in 0..3 {
                plugin_call("tally", "get", "ok", Duration::from_micros(40));
                api_call("tally.count", "ok", Duration::from_micros(90));
            }
        };
        record();
        std::thread::spawn(record).join().unwrap();
        record();
        let text = render(&[]);
        for expected in [
            "berth_plugin_calls_total{plugin=\"tally\",function=\"get\",outcome=\"ok\"} 9\n",
            "berth_plugin_call_duration_seconds_count{plugin=\"tally\",function=\"get\"} 9\n",
            "berth_api_calls_total{method=\"tally.count\",outcome=\"ok\"} 9\n",
            "berth_api_call_duration_seconds_count{method=\"tally.count\"} 9\n",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }
}
