//! Lingering reads: when the service answers before it has read a request's body (503 busy,
//! 504, 401, 404, an upload cut off), the rest of the body is read and thrown away for a
//! while before the connection closes. Closed at once, the kernel would reset a connection
//! with unread data, and a client still writing its upload would see a broken pipe or a
//! reset instead of the answer waiting for it. nginx's `lingering_close` does the same.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// Longest time the rest of an unread body is read after the answer.
pub const LINGER: Duration = Duration::from_secs(5);

/// Wraps every request body so that, dropped unread, it is drained for at most [`LINGER`]
/// and `max_body` bytes in a task of its own. Bodies announced over `max_body` (the answer
/// is 413 and draining them could not finish) and requests waiting for `100 Continue` (the
/// client sends no body unless asked) are left as they are.
pub async fn linger(max_body: usize, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let continues = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let oversize = crate::announced_length(headers).is_some_and(|n| n > max_body as u64);
    if continues || oversize {
        return next.run(req).await;
    }
    next.run(req.map(|body| Body::new(Lingering::new(body, max_body))))
        .await
}

/// A request body that drains itself when dropped before its end.
struct Lingering {
    inner: Option<Body>,
    limit: usize,
}

impl Lingering {
    fn new(body: Body, limit: usize) -> Self {
        Self {
            inner: Some(body),
            limit,
        }
    }
}

impl HttpBody for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        // Outside a runtime (never in the service) the body is dropped as before.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let limit = self.limit;
            runtime.spawn(async move {
                let _ = tokio::time::timeout(LINGER, discard(body, limit)).await;
            });
        }
    }
}

/// Reads `body` to its end or to `limit` bytes, whichever is first, keeping nothing.
async fn discard(mut body: Body, limit: usize) {
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(data.len());
            if read > limit {
                return;
            }
        }
    }
}
