//! RPC middleware in front of every handler: checks params against the method's declared
//! types (naming the bad field), rewrites them to named form, and executes notifications
//! (jsonrpsee would drop them) without replying.

use std::borrow::Cow;

use berth_api::error::invalid_params;
use berth_api::{MethodKind, normalize_params};
use jsonrpsee::core::middleware::{Batch, BatchEntry, Notification, RpcServiceT};
use jsonrpsee::server::{BatchResponseBuilder, MethodResponse};
use jsonrpsee::types::{Id, Request};
use tracing::Instrument;

use super::http::NotificationOnly;

/// Layer adding [`ParamsCheck`].
#[derive(Debug, Clone)]
pub struct ParamsCheckLayer {
    /// Same limit the server applies to single responses, applied to whole batches.
    pub max_response_body_size: usize,
}

impl<S> tower::Layer<S> for ParamsCheckLayer {
    type Service = ParamsCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ParamsCheck {
            inner,
            max_response_body_size: self.max_response_body_size,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ParamsCheck<S> {
    inner: S,
    max_response_body_size: usize,
}

/// Checks and normalizes a request, or answers it with -32602.
#[allow(clippy::result_large_err)]
fn check(mut req: Request<'_>) -> Result<Request<'_>, MethodResponse> {
    let Some(spec) = berth_api::method(req.method_name()) else {
        // Unknown methods fall through to jsonrpsee's -32601; unsubscribe and rpc.discover
        // calls have no declared params to check.
        return Ok(req);
    };
    match normalize_params(spec, req.params.as_deref()) {
        Ok(named) => {
            let raw = serde_json::value::to_raw_value(&named).map_err(|e| {
                MethodResponse::error(req.id(), invalid_params(None, e.to_string()))
            })?;
            req.params = Some(Cow::Owned(raw));
            Ok(req)
        }
        Err(e) => Err(MethodResponse::error(
            req.id(),
            invalid_params(e.field(), e.to_string()),
        )),
    }
}

/// The (empty) answer to a notification, marked so the HTTP gate sends no body.
fn notification_ack() -> MethodResponse {
    let mut marker = jsonrpsee::core::server::Extensions::new();
    marker.insert(NotificationOnly);
    MethodResponse::notification().with_extensions(marker)
}

impl<S> RpcServiceT for ParamsCheck<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        // Only known names become metric labels and span names: a caller cannot grow them.
        let method = berth_api::method(req.method_name()).map_or("unknown", |spec| spec.name);
        let span = tracing::info_span!(
            "rpc.call",
            otel.name = method,
            otel.kind = "server",
            rpc.system = "jsonrpc",
            rpc.method = method,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(parent) = req.extensions().get::<crate::telemetry::TraceParent>() {
            crate::telemetry::adopt(&span, &parent.0);
        }
        let status_span = span.clone();
        let started = std::time::Instant::now();
        let checked = check(req);
        async move {
            let response = match checked {
                Ok(req) => inner.call(req).await,
                Err(refused) => refused,
            };
            let outcome = match response.as_error_code() {
                None => "ok",
                Some(code) => berth_api::ErrorKind::from_code(code).map_or("error", |k| k.as_str()),
            };
            crate::metrics::api_call(method, outcome, started.elapsed());
            if outcome != "ok" {
                status_span.record("otel.status_code", "ERROR");
            }
            response
        }
        .instrument(span)
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let this = self.clone();
        async move {
            let mut responses = BatchResponseBuilder::new_with_limit(this.max_response_body_size);
            let mut got_notification = false;
            for entry in batch {
                let response = match entry {
                    Ok(BatchEntry::Call(req)) => this.call(req).await,
                    Ok(BatchEntry::Notification(n)) => {
                        got_notification = true;
                        this.notification(n).await;
                        continue;
                    }
                    Err(err) => {
                        let (err, id) = err.into_parts();
                        MethodResponse::error(id, err)
                    }
                };
                if let Err(too_big) = responses.append(response) {
                    return too_big;
                }
            }
            if responses.is_empty() && got_notification {
                notification_ack()
            } else {
                MethodResponse::from_batch(responses.finish())
            }
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        let this = self.clone();
        async move {
            let Notification {
                method,
                params,
                extensions,
                ..
            } = n;
            let is_subscription = berth_api::method(&method)
                .is_some_and(|m| matches!(m.kind, MethodKind::Subscription { .. }));
            // A subscription opened by a notification could never be identified or closed
            // by its caller, so it is not opened.
            if !is_subscription {
                let mut req =
                    Request::owned(method.into_owned(), params.map(Cow::into_owned), Id::Null);
                *req.extensions_mut() = extensions;
                let _ = this.call(req).await;
            }
            notification_ack()
        }
    }
}
