//! The HTTP gate in front of jsonrpsee: reads each POST body whole (refusing, never cutting,
//! bodies over the limit), answers a JSON scalar with -32600 as the spec requires, and turns
//! answers to notifications into an empty `204 No Content`. WebSocket upgrades pass through.
//! `GET /metrics` becomes a `system.metrics` call, so it passes the same authentication and
//! authorization as every call, and its answer is served as OpenMetrics text.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode, header};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::HttpBody;

/// Response extension set by the params middleware when nothing must be sent back.
#[derive(Debug, Clone, Copy)]
pub struct NotificationOnly;

/// Layer adding [`HttpGate`].
#[derive(Debug, Clone, Copy)]
pub struct HttpGateLayer {
    /// Largest accepted body.
    pub max_request_body_size: u32,
}

impl<S> tower::Layer<S> for HttpGateLayer {
    type Service = HttpGate<S>;

    fn layer(&self, inner: S) -> HttpGate<S> {
        HttpGate {
            inner,
            max_request_body_size: self.max_request_body_size,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct HttpGate<S> {
    inner: S,
    max_request_body_size: u32,
}

fn json_response(status: StatusCode, body: String) -> Response<HttpBody> {
    let mut r = Response::new(HttpBody::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn too_large(limit: u32) -> Response<HttpBody> {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":-32007,"message":"Request is too big","data":"request body exceeds the limit of {limit} bytes"}}}}"#
        ),
    )
}

/// A body that is valid JSON but neither an object nor an array cannot be a request.
fn is_json_scalar(body: &[u8]) -> bool {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    !matches!(first, Some(b'{' | b'[') | None)
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

impl<S, B> tower::Service<Request<B>> for HttpGate<S>
where
    S: tower::Service<Request<HttpBody>, Response = Response<HttpBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<HttpBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut inner = self.inner.clone();
        let limit = self.max_request_body_size;
        // A caller's trace context rides to the call (and, on a WebSocket, to every call).
        if let Some(traceparent) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
        {
            let carried = crate::telemetry::TraceParent(traceparent.to_owned());
            req.extensions_mut().insert(carried);
        }
        Box::pin(async move {
            if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                return metrics(&mut inner, req).await;
            }
            if req.method() != hyper::Method::POST {
                // WebSocket upgrades and anything jsonrpsee refuses by itself.
                return inner.call(req.map(HttpBody::new)).await;
            }
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > u64::from(limit)) {
                return Ok(too_large(limit));
            }
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, limit as usize).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(too_large(limit));
                }
                Err(e) => return Err(e),
            };
            if is_json_scalar(&bytes) {
                return Ok(json_response(
                    StatusCode::OK,
                    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid request"}}"#.to_owned(),
                ));
            }
            let response = inner
                .call(Request::from_parts(parts, HttpBody::from(bytes.to_vec())))
                .await?;
            if response.extensions().get::<NotificationOnly>().is_some() {
                let mut empty = Response::new(HttpBody::empty());
                *empty.status_mut() = StatusCode::NO_CONTENT;
                return Ok(empty);
            }
            Ok(response)
        })
    }
}

/// The body of a `system.metrics` call, as `GET /metrics` makes it.
const METRICS_CALL: &str = r#"{"jsonrpc":"2.0","id":0,"method":"system.metrics"}"#;

/// Serves `GET /metrics`: the request (its caller and headers kept) becomes a
/// `system.metrics` call; the text comes back as OpenMetrics, a refusal as 403.
async fn metrics<S, B>(inner: &mut S, req: Request<B>) -> Result<Response<HttpBody>, BoxError>
where
    S: tower::Service<Request<HttpBody>, Response = Response<HttpBody>, Error = BoxError>,
{
    let (mut parts, _) = req.into_parts();
    parts.method = hyper::Method::POST;
    parts.uri = hyper::Uri::from_static("/");
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(METRICS_CALL.len()),
    );
    let response = inner
        .call(Request::from_parts(parts, HttpBody::from(METRICS_CALL)))
        .await?;
    let body = response.into_body().collect().await?.to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(text) = answer["result"].as_str() {
        let mut r = Response::new(HttpBody::from(text.to_owned()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        return Ok(r);
    }
    let code = answer["error"]["code"].as_i64().unwrap_or(0);
    // Callers without credentials were already answered 401 in front of this gate.
    let status = match berth_api::ErrorKind::from_code(code as i32) {
        Some(berth_api::ErrorKind::PermissionDenied) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = answer["error"]["message"]
        .as_str()
        .unwrap_or("the metrics are unavailable");
    let mut r = Response::new(HttpBody::from(format!("{message}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::is_json_scalar;

    #[test]
    fn scalars_are_told_apart_from_requests_and_garbage() {
        assert!(is_json_scalar(b" 42 "));
        assert!(is_json_scalar(b"\"x\""));
        assert!(is_json_scalar(b"null"));
        assert!(!is_json_scalar(b"{\"a\":1}"));
        assert!(!is_json_scalar(b"[1]"));
        assert!(!is_json_scalar(b"42 garbage"));
        assert!(!is_json_scalar(b"\xff"));
        assert!(!is_json_scalar(b""));
    }
}
