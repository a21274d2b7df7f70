//! What every driver handle shares, whatever its world: the live instance slot, call
//! counts, the `host-log` and `types` imports, error kinds, and the macros that run one
//! export call under the deadline (`call!`) and make and configure instances
//! (`driver_methods!`).

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use berth_api::ErrorKind;
use wasmtime::Store;

use super::sandbox::PluginState;
use super::volume::bindings::berth::types::host_log;
use super::volume::bindings::berth::types::types as wit;

/// Extra time the host waits beyond a call's deadline: epochs do not count time a plugin
/// spends blocked in a host call, this outer timeout does.
pub(super) const GRACE: Duration = Duration::from_millis(500);

/// Runs `call` for at most `limit`; `None` when the limit passed first. The timer is made
/// only once the call has had to wait (a host call that blocks, an epoch yield): most calls
/// finish on their first poll, and registering a tokio timer costs each of them a wake-up
/// of a parked worker thread (tokio unparks its timer driver for any timer earlier than
/// its next wake-up), a context switch per call on the authorization path.
pub(super) async fn within<F: Future>(limit: Duration, call: F) -> Option<F::Output> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut call = std::pin::pin!(call);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

pub(super) fn kind_of(kind: wit::ErrorKind) -> ErrorKind {
    match kind {
        wit::ErrorKind::NotFound => ErrorKind::NotFound,
        wit::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        wit::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
        wit::ErrorKind::FailedPrecondition => ErrorKind::FailedPrecondition,
        wit::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        wit::ErrorKind::ResourceExhausted => ErrorKind::ResourceExhausted,
        wit::ErrorKind::Unavailable => ErrorKind::Unavailable,
        wit::ErrorKind::Internal => ErrorKind::Internal,
    }
}

impl wit::Host for PluginState {}

impl host_log::Host for PluginState {
    fn log(&mut self, level: host_log::Level, message: String, fields: Vec<(String, String)>) {
        if !self.log_allowed() {
            return;
        }
        // A plugin's lines are bounded, so a chatty one cannot flood berthd's log.
        let message: String = message.chars().take(2048).collect();
        let fields: Vec<String> = fields
            .iter()
            .take(16)
            .map(|(k, v)| format!("{k}={}", v.chars().take(256).collect::<String>()))
            .collect();
        let fields = fields.join(" ");
        let plugin = &*self.plugin;
        match level {
            host_log::Level::Trace => tracing::trace!(plugin, %fields, "{message}"),
            host_log::Level::Debug => tracing::debug!(plugin, %fields, "{message}"),
            host_log::Level::Info => tracing::info!(plugin, %fields, "{message}"),
            host_log::Level::Warn => tracing::warn!(plugin, %fields, "{message}"),
            host_log::Level::Error => tracing::error!(plugin, %fields, "{message}"),
        }
    }

    fn enabled(&mut self, level: host_log::Level) -> bool {
        match level {
            host_log::Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            host_log::Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            host_log::Level::Info => tracing::enabled!(tracing::Level::INFO),
            host_log::Level::Warn => tracing::enabled!(tracing::Level::WARN),
            host_log::Level::Error => tracing::enabled!(tracing::Level::ERROR),
        }
    }
}

/// A live instance.
pub(super) struct Instance<B> {
    pub(super) store: Store<PluginState>,
    pub(super) bindings: B,
}

/// Calls counted for `plugin inspect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (trap, deadline, limit) and restarted the plugin.
    pub failures: u64,
    /// The last such failure.
    pub last_error: Option<String>,
}

/// Runs one export call on the live instance (made first if there is none), under the
/// deadline; any failure discards the instance.
macro_rules! call {
    ($self:ident, $function:literal, |$instance:ident| $call:expr) => {{
        let mut slot = $self.instance.lock().await;
        if slot.is_none() {
            *slot = Some($self.instantiate().await?);
        }
        let Some($instance) = slot.as_mut() else {
            unreachable!("just filled");
        };
        $crate::plugin_host::sandbox::arm_deadline(&mut $instance.store);
        // One span per plugin call (exported to OpenTelemetry with the rest of berthd's).
        let span = tracing::info_span!(
            "plugin.call",
            plugin = &*$self.name,
            function = $function,
            elapsed_us = tracing::field::Empty,
            ok = tracing::field::Empty,
        );
        let started = Instant::now();
        let outcome = tracing::Instrument::instrument(
            $crate::plugin_host::driver::within(
                $self.limits.call_timeout + $crate::plugin_host::driver::GRACE,
                async { $call },
            ),
            span.clone(),
        )
        .await;
        let elapsed = started.elapsed();
        let result = match outcome {
            Some(Ok(Ok(value))) => Ok(value),
            Some(Ok(Err(e))) => Err($crate::plugin_host::Error::Plugin {
                plugin: $self.name.to_string(),
                function: $function,
                kind: $crate::plugin_host::driver::kind_of(e.kind),
                message: e.message,
            }),
            Some(Err(e)) => Err($self.failed(
                $function,
                $crate::plugin_host::sandbox::reason(&e, $self.limits.call_timeout),
            )),
            None => Err($self.failed(
                $function,
                format!("deadline of {:?} exceeded", $self.limits.call_timeout),
            )),
        };
        if matches!(result, Err($crate::plugin_host::Error::Failed { .. })) {
            // The store is poisoned after any error from inside the plugin.
            *slot = None;
        }
        $crate::metrics::plugin_call(
            &$self.name,
            $function,
            match &result {
                Ok(_) => "ok",
                Err($crate::plugin_host::Error::Failed { .. }) => "failed",
                Err(_) => "error",
            },
            elapsed,
        );
        span.record("elapsed_us", elapsed.as_micros() as u64);
        span.record("ok", result.is_ok());
        span.in_scope(|| tracing::debug!(?elapsed, ok = result.is_ok(), "plugin call"));
        result
    }};
}

pub(super) use call;

/// The methods every driver handle shares (instantiate, configure, count, stats), for a
/// handle with fields `name`, `engine`, `pre`, `config`, `limits`, `failures`, `ticker`,
/// `instance` and `stats`,
/// methods `preopen`, `net_host` and `connect_grant`, and a store made by `new_store`.
macro_rules! driver_methods {
    () => {
        fn failed(&self, function: &'static str, reason: String) -> $crate::plugin_host::Error {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.failures += 1;
            stats.last_error = Some(format!("{function}: {reason}"));
            tracing::warn!(plugin = &*self.name, function, "plugin failed: {reason}");
            drop(stats);
            self.failures.report(&self.name, function, &reason);
            $crate::plugin_host::Error::Failed {
                plugin: self.name.to_string(),
                function,
                reason,
            }
        }

        /// A fresh instance, configured.
        async fn instantiate(
            &self,
        ) -> $crate::plugin_host::Result<$crate::plugin_host::driver::Instance<Bindings>> {
            let mut store = $crate::plugin_host::sandbox::new_store(
                &self.engine,
                std::sync::Arc::clone(&self.name),
                self.preopen(),
                &self.limits,
                &self.ticker,
                self.net_host(),
                self.connect_grant(),
            )
            .map_err(|e| self.failed("instantiate", format!("{e:#}")))?;
            $crate::plugin_host::sandbox::arm_deadline(&mut store);
            let bindings = tokio::time::timeout(
                self.limits.call_timeout + $crate::plugin_host::driver::GRACE,
                self.pre.instantiate_async(&mut store),
            )
            .await
            .map_err(|_| self.failed("instantiate", "deadline exceeded".into()))?
            .map_err(|e| {
                self.failed(
                    "instantiate",
                    $crate::plugin_host::sandbox::reason(&e, self.limits.call_timeout),
                )
            })?;
            let mut instance = $crate::plugin_host::driver::Instance { store, bindings };
            $crate::plugin_host::sandbox::arm_deadline(&mut instance.store);
            let configured = tokio::time::timeout(
                self.limits.call_timeout + $crate::plugin_host::driver::GRACE,
                instance
                    .bindings
                    .berth_types_plugin()
                    .call_configure(&mut instance.store, &self.config),
            )
            .await
            .map_err(|_| self.failed("configure", "deadline exceeded".into()))?
            .map_err(|e| {
                self.failed(
                    "configure",
                    $crate::plugin_host::sandbox::reason(&e, self.limits.call_timeout),
                )
            })?;
            configured.map_err(|e| $crate::plugin_host::Error::Plugin {
                plugin: self.name.to_string(),
                function: "configure",
                kind: $crate::plugin_host::driver::kind_of(e.kind),
                message: e.message,
            })?;
            Ok(instance)
        }

        /// Makes the first instance now, so that a broken component or config shows at once.
        pub(super) async fn warm_up(&self) -> $crate::plugin_host::Result<()> {
            let mut slot = self.instance.lock().await;
            if slot.is_none() {
                *slot = Some(self.instantiate().await?);
            }
            Ok(())
        }

        fn count(&self) {
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).calls += 1;
        }

        /// Call counts and the last failure.
        pub fn stats(&self) -> $crate::plugin_host::driver::CallStats {
            self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        /// The plugin's name.
        pub fn name(&self) -> &str {
            &self.name
        }
    };
}

pub(super) use driver_methods;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::within;

    #[tokio::test]
    async fn within_returns_what_finishes_in_time() {
        assert_eq!(within(Duration::from_secs(5), async { 7 }).await, Some(7));
        let waits_once = async {
            tokio::task::yield_now().await;
            8
        };
        assert_eq!(within(Duration::from_secs(5), waits_once).await, Some(8));
    }

    #[tokio::test]
    async fn within_gives_up_on_a_call_that_blocks_past_its_limit() {
        let started = std::time::Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(within(Duration::from_millis(50), never).await, None);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50),
            "gave up after {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");
    }

    #[tokio::test]
    async fn within_counts_the_limit_from_the_start_of_the_call() {
        // The timer is made late (at the first wait); the deadline must not move with it.
        let started = std::time::Instant::now();
        let slow_then_blocked = async {
            std::thread::sleep(Duration::from_millis(80));
            std::future::pending::<()>().await
        };
        assert_eq!(
            within(Duration::from_millis(50), slow_then_blocked).await,
            None
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
