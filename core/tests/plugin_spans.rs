//! Every plugin call is a `plugin.call` span with the plugin, the function, its duration and
//! whether it succeeded. A test binary of its own with a global subscriber: callsite interest
//! is process-wide, so plugin calls on other test threads without a subscriber would race a
//! scoped one.

use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_core::plugin_host::{Limits, PluginHost};
use tracing_subscriber::layer::SubscriberExt;

fn local_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/local.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the plugins first (plugins/build.sh)",
            path.display()
        )
    })
}

/// Span names and the fields recorded on them.
#[derive(Clone, Default)]
struct SeenSpans(Arc<Mutex<Vec<(String, String)>>>);

struct FieldText(String);

impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SeenSpans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut text = FieldText(String::new());
        attrs.record(&mut text);
        let name = attrs.metadata().name().to_owned();
        self.0.lock().unwrap().push((name, text.0));
    }

    fn on_record(
        &self,
        _id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut text = FieldText(String::new());
        values.record(&mut text);
        self.0.lock().unwrap().push(("(record)".into(), text.0));
    }
}

#[test]
fn every_plugin_call_is_a_span_with_plugin_function_and_duration() {
    let seen = SeenSpans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(seen.clone()))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let host = PluginHost::new(&dir.path().join("cache"), Limits::default()).unwrap();
        let loaded = host.load("traced", &local_wasm()).unwrap();
        let driver = host
            .volume_driver("traced", &loaded, &dir.path().join("state"), Vec::new())
            .await
            .unwrap();
        driver.capabilities().await.unwrap();
        assert!(driver.get("missing").await.is_err());
    });
    let seen = seen.0.lock().unwrap().clone();
    let call = |function: &str| {
        seen.iter().any(|(name, fields)| {
            name == "plugin.call"
                && fields.contains("plugin=\"traced\"")
                && fields.contains(&format!("function=\"{function}\""))
        })
    };
    assert!(call("capabilities") && call("get"), "{seen:?}");
    let recorded: Vec<&String> = seen
        .iter()
        .filter(|(name, _)| name == "(record)")
        .map(|(_, f)| f)
        .collect();
    assert!(
        recorded.iter().any(|f| f.contains("elapsed_us=")),
        "{seen:?}"
    );
    assert!(recorded.iter().any(|f| f.contains("ok=true")), "{seen:?}");
    assert!(recorded.iter().any(|f| f.contains("ok=false")), "{seen:?}");
}
