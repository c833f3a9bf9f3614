//! `bottleneck serve`: one model file behind an HTTP service (axum on tokio).
//!
//! - `POST /v1/score`: images (raw body or multipart files) for image detectors, rows (JSON
//!   or CSV) for table detectors; `{threshold, items: [{score, p_value, is_anomaly, ...}]}`,
//!   with each image's heatmap as a base64 PNG under `map_png` when asked (`?map=true`).
//!   WAV recordings for audio detectors.
//! - `POST /v1/encode`: bottleneck codes; `POST /v1/denoise`: the cleaned image or WAV
//!   recording, same format.
//! - `GET /healthz` (liveness), `GET /readyz` (readiness: the model ran on a test input at
//!   start-up), `GET /v1/model`, `GET /metrics` (Prometheus text), `GET /` (the page).
//!
//! Inference runs on worker threads behind a bounded queue ([`engine::Pool`]): a full queue
//! is a 503 at once. Bodies over the limit get 413, requests over the time limit 504, bad
//! input a 4xx with `{"error": "..."}`; a body left unread by an early answer is drained for a
//! while (module `linger`), so that a client still uploading reads the answer. SIGTERM or
//! Ctrl-C stops accepting connections, lets the requests in flight finish, then ends the
//! workers.

pub mod engine;
pub mod error;
pub mod inputs;
mod linger;
pub mod metrics;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use burn::prelude::Device;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{Answer, Pool, Refused, Served, Task};
pub use crate::error::{ApiError, ServeError};
use crate::metrics::{Metrics, RequestLabels, RouteLabels};

/// How the service runs; [`Default`] suits one machine.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free one).
    pub addr: String,
    /// Inference threads, each with its own copy of the model.
    pub workers: usize,
    /// Requests that may wait for a worker before the service answers 503.
    pub queue: usize,
    /// Largest request body in bytes (413 above).
    pub max_body: usize,
    /// Longest time a request may take, body upload included (504 above).
    pub timeout: Duration,
    /// Most table rows in one request (413 above): bounds the memory a request takes,
    /// since a small body of short rows parses into far more than its size.
    pub max_rows: usize,
    /// A bearer token every request must carry (`Authorization: Bearer TOKEN`), except the
    /// health routes; `None` serves anyone who can connect.
    pub token: Option<String>,
    /// Origins whose pages may call the service from a browser (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Most connections open at once; beyond it new ones are closed at once (shed). `None`:
    /// as many as the open-file limit allows less a reserve, at most 10,000.
    pub max_connections: Option<usize>,
    /// Slowest upload accepted, in bytes per second after the first two seconds: a body
    /// that arrives slower is cut with 408 instead of holding memory and a place.
    pub min_upload_rate: u64,
    /// Bytes of request bodies held at once, being read or waiting for a worker; beyond it
    /// a new upload is 503. At least `max_body`.
    pub upload_budget: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            workers: default_workers(),
            queue: 64,
            max_body: 32 << 20,
            timeout: Duration::from_secs(30),
            max_rows: DEFAULT_MAX_ROWS,
            token: None,
            cors_origins: Vec::new(),
            max_connections: None,
            min_upload_rate: 16 << 10,
            upload_budget: 256 << 20,
        }
    }
}

/// Rows one request may hold by default (and 40 cells a row: wider tables get fewer rows).
/// Measured with bench/hostile.sh: a request of this many 4-column rows peaks at about
/// 200 MB, the idle service at 27 MB.
pub const DEFAULT_MAX_ROWS: usize = 100_000;

/// One worker per core, at most 8: the workers' tensor operations share one thread pool, so
/// more workers mostly overlap decoding and heatmaps with the network. Measured with
/// bench/serve_load.sh on 2 cores: 2 workers answer 12% more requests/s at concurrency 8
/// than 1, with a lower p99.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(8))
        .unwrap_or(1)
}

#[derive(Clone)]
struct AppState {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// One permit per request that may be worked on or wait (workers + queue), taken before
    /// the body is read: when none is left the answer is 503 without reading the body, so
    /// a burst of large uploads cannot pile up in memory either.
    slots: Arc<tokio::sync::Semaphore>,
    max_body: usize,
    max_rows: usize,
    /// Kibibytes of request bodies that may be held at once (see
    /// [`ServeConfig::upload_budget`]).
    uploads: Arc<tokio::sync::Semaphore>,
    min_upload_rate: u64,
}

/// Loads `model` and serves it until SIGTERM or Ctrl-C. `on_ready` is called with the
/// address bound once connections are accepted, `log` with notices (shutdown). Fails when
/// the model cannot be served or the address cannot be bound.
pub fn serve(
    model: &Path,
    config: &ServeConfig,
    device: &Device,
    on_ready: impl FnOnce(SocketAddr, Served),
    log: impl Fn(&str) + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::default());
    let pool = Arc::new(Pool::start(
        model,
        config.workers,
        config.queue,
        device,
        Arc::clone(&metrics),
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Runtime(format!("cannot start the async runtime: {e}")))?;
    let app = router(
        AppState {
            pool: Arc::clone(&pool),
            metrics,
            slots: Arc::new(tokio::sync::Semaphore::new(
                config.workers.max(1) + config.queue.max(1),
            )),
            max_body: config.max_body,
            max_rows: config.max_rows.max(1),
            uploads: Arc::new(tokio::sync::Semaphore::new(
                config.upload_budget.max(config.max_body).div_ceil(1024),
            )),
            min_upload_rate: config.min_upload_rate,
        },
        config,
    )?;
    let max_connections = config
        .max_connections
        .unwrap_or_else(connection_limit)
        .max(1);
    // After the signal, requests in flight get their own time limit and a little more to
    // finish; a connection that never completes a request cannot hold the exit back.
    let grace = config.timeout + Duration::from_secs(5);
    // Headers must arrive within this, so a client that never finishes a request cannot
    // hold a connection (and a file descriptor) forever.
    let header_timeout = config.timeout.min(Duration::from_secs(30));
    let drained = hyper_util::server::graceful::GracefulShutdown::new();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.addr.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.addr.clone(),
            source,
        })?;
        on_ready(addr, pool.served());
        accept_until_signal(listener, app, header_timeout, max_connections, &drained).await;
        log(&format!(
            "shutting down: no new connections; finishing the requests in flight (at most \
             {} s; a second signal stops at once)",
            grace.as_secs()
        ));
        Ok::<(), ServeError>(())
    })?;
    // Requests in flight finish on the runtime's threads; the runtime is dropped (and any
    // connection still open closed) at most `grace` later, or at a second signal.
    runtime.block_on(async {
        tokio::select! {
            _ = drained.shutdown() => {},
            _ = tokio::time::sleep(grace) => {},
            _ = shutdown_signal() => {},
        }
    });
    drop(runtime);
    // Every connection is closed, so the router and its handles to the pool are gone.
    if let Ok(pool) = Arc::try_unwrap(pool) {
        pool.shutdown();
    }
    Ok(())
}

/// Connections the service keeps open by default: the open-file limit (raised to its
/// hard limit first) less a reserve for the model, logs and the listener, at most 10,000.
fn connection_limit() -> usize {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            };
            return (soft.saturating_sub(128) as usize).clamp(16, 10_000);
        }
    }
    1000
}

/// Accepts connections and serves each on its own task (HTTP/1.1; headers within
/// `header_timeout`) until SIGTERM or Ctrl-C; beyond `max_connections` open at once a new
/// connection is closed at once, so idle or slow clients cannot use up the open-file limit
/// and stop the service from answering. Every connection is watched by `drained`, which
/// lets the requests in flight finish when shutdown begins.
async fn accept_until_signal(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    max_connections: usize,
    drained: &hyper_util::server::graceful::GracefulShutdown,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: wait a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(place) = Arc::clone(&open).try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                // Answers are small and written at once: no reason to hold them back.
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let conn = drained.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(place);
                });
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn router(state: AppState, config: &ServeConfig) -> Result<Router, ServeError> {
    let timeout = config.timeout;
    let max_body = config.max_body;
    let token = config.token.clone().map(Arc::<str>::from);
    let mut origins = Vec::new();
    for o in &config.cors_origins {
        origins.push(HeaderValue::from_str(o).map_err(|_| {
            ServeError::Runtime(format!("--cors-origin '{o}' is not a valid origin"))
        })?);
    }
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]);
    let router = Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/model", get(model_info))
        .route("/v1/score", post(score))
        .route("/v1/encode", post(encode))
        .route("/v1/denoise", post(denoise))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            refuse_announced_oversize(max_body, req, next)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            time_limit(timeout, req, next)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            require_token(token.clone(), req, next)
        }))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(cors)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            linger::linger(max_body, req, next)
        }))
        .with_state(state);
    Ok(router)
}

/// Answers 401 to a request without the service's bearer token (when it has one); the
/// health routes stay open to the orchestrator's probes.
async fn require_token(token: Option<Arc<str>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared in time independent of where the first difference is.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        next.run(req).await
    } else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)".into(),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// The body length a request's Content-Length announces, if it has a valid one.
fn announced_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Answers 413 at once to a request whose Content-Length is over `max` bytes, before any of
/// its body is read (a body without a length is cut at the limit while it is read).
async fn refuse_announced_oversize(max: usize, req: Request, next: Next) -> Response {
    match announced_length(req.headers()) {
        Some(n) if n > max as u64 => ApiError::from_rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{n} bytes announced, at most {max} accepted"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Answers 504 when a request (body upload included) takes longer than `limit`.
async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request took longer than {} s (see --timeout)",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// Counts every answer by route and status and times it.
async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let started = Instant::now();
    state.metrics.in_flight.inc();
    let response = next.run(req).await;
    state.metrics.in_flight.dec();
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn page() -> Response {
    let mut response = Html(include_str!("page.html")).into_response();
    // The page needs nothing from anywhere else; say so to the browser too.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; \
             script-src 'unsafe-inline'",
        ),
    );
    response
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: the model ran on a test input at start-up (the service refuses to start
/// otherwise) and answers as long as the service takes requests. `/healthz` is liveness.
async fn readyz(State(state): State<AppState>) -> Response {
    axum::Json(json!({
        "status": "ready",
        "served": state.pool.served().name(),
    }))
    .into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn model_info(State(state): State<AppState>) -> Response {
    let mut info = state.pool.info().clone();
    info["served"] = json!(state.pool.served().name());
    info["endpoints"] = json!(state.pool.served().endpoints());
    axum::Json(info).into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} {} (GET /, /healthz, /readyz, /metrics, /v1/model; POST \
             /v1/score, /v1/encode, /v1/denoise)",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
struct ImageQuery {
    /// Return each image's heatmap as a base64 PNG.
    #[serde(default)]
    map: bool,
    /// Name of a raw-body image in the answer.
    name: Option<String>,
}

/// What a request asks of an anomaly detector.
#[derive(Debug, Clone, Copy)]
enum Want {
    Scores,
    Codes,
}

type ImageQueryResult = Result<Query<ImageQuery>, axum::extract::rejection::QueryRejection>;

/// Reads a score or encode request for the served detector and answers it.
async fn ask_detector(
    state: &AppState,
    query: ImageQueryResult,
    req: Request,
    want: Want,
) -> Result<Answer, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let served = state.pool.served();
    if matches!(served, Served::ImageDenoiser | Served::AudioDenoiser) {
        return Err(ApiError::wrong_model(served));
    }
    let (req, _held) = receive(state, req).await?;
    let Some(_slot) = take_slot(state) else {
        return Err(busy());
    };
    let task = match (served, want) {
        (Served::TableDetector, Want::Scores) => {
            Task::ScoreRows(inputs::rows(req, state.max_rows).await?)
        }
        (Served::TableDetector, Want::Codes) => {
            Task::EncodeRows(inputs::rows(req, state.max_rows).await?)
        }
        (Served::AudioDetector, Want::Scores) => {
            Task::ScoreAudio(inputs::uploads(req, q.name).await?)
        }
        (Served::AudioDetector, Want::Codes) => return Err(ApiError::wrong_model(served)),
        (_, Want::Scores) => Task::ScoreImages {
            uploads: inputs::uploads(req, q.name).await?,
            map: q.map,
        },
        (_, Want::Codes) => Task::EncodeImages(inputs::uploads(req, q.name).await?),
    };
    run(state, task).await
}

async fn score(
    State(state): State<AppState>,
    query: ImageQueryResult,
    req: Request,
) -> Result<Response, ApiError> {
    let answer = ask_detector(&state, query, req, Want::Scores).await?;
    if let Answer::Written {
        scored, flagged, ..
    } = &answer
    {
        state.metrics.scored.inc_by(*scored as u64);
        state.metrics.anomalies.inc_by(*flagged as u64);
    }
    if let Answer::Json(v) = &answer
        && let Some(items) = v.get("items").and_then(Value::as_array)
    {
        state.metrics.scored.inc_by(items.len() as u64);
        let flagged = items
            .iter()
            .filter(|i| i.get("is_anomaly") == Some(&Value::Bool(true)))
            .count();
        state.metrics.anomalies.inc_by(flagged as u64);
    }
    Ok(respond(answer))
}

async fn encode(
    State(state): State<AppState>,
    query: ImageQueryResult,
    req: Request,
) -> Result<Response, ApiError> {
    Ok(respond(
        ask_detector(&state, query, req, Want::Codes).await?,
    ))
}

async fn denoise(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let served = state.pool.served();
    if !matches!(served, Served::ImageDenoiser | Served::AudioDenoiser) {
        return Err(ApiError::wrong_model(served));
    }
    let (req, _held) = receive(&state, req).await?;
    let Some(_slot) = take_slot(&state) else {
        return Err(busy());
    };
    let mut uploads = inputs::uploads(req, None).await?;
    if uploads.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "send one image per request ({} given)",
            uploads.len()
        )));
    }
    let upload = uploads.remove(0);
    let task = if served == Served::AudioDenoiser {
        Task::DenoiseAudio(upload)
    } else {
        Task::Denoise(upload)
    };
    Ok(respond(run(&state, task).await?))
}

/// A place among the requests being worked on or waiting, if one is free.
fn take_slot(state: &AppState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    Arc::clone(&state.slots).try_acquire_owned().ok()
}

/// Reads the whole body of `req` before the request takes a place among those worked on
/// or waiting, so a slow client holds no place: the body must keep up
/// [`ServeConfig::min_upload_rate`] after two seconds (408 otherwise), stay within the size
/// limit (413) and fit in the upload budget, which holds every body until its answer
/// (503 when it is used up). Returns the request with its body in memory and the budget
/// it holds.
async fn receive(
    state: &AppState,
    req: Request,
) -> Result<(Request, tokio::sync::OwnedSemaphorePermit), ApiError> {
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    let started = Instant::now();
    let grace = Duration::from_secs(2);
    let rate = state.min_upload_rate.max(1) as f64;
    let mut held = Arc::clone(&state.uploads)
        .try_acquire_owned()
        .map_err(|_| busy())?;
    let mut bytes = Vec::new();
    loop {
        // The time by which one more byte must have arrived at the slowest rate accepted.
        let due = grace + Duration::from_secs_f64((bytes.len() + 1) as f64 / rate);
        let wait = due.saturating_sub(started.elapsed());
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the upload is too slow: {} bytes in {:.1} s, at least {} bytes/s \
                         accepted",
                        bytes.len(),
                        started.elapsed().as_secs_f64(),
                        state.min_upload_rate
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!("cannot read the body: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > state.max_body {
            return Err(ApiError::too_large(format!(
                "the body is over {} bytes, the most accepted",
                state.max_body
            )));
        }
        bytes.extend_from_slice(&data);
        let kib = bytes.len().div_ceil(1024) as u32;
        if kib > held.num_permits() as u32 {
            let more = Arc::clone(&state.uploads)
                .try_acquire_many_owned(kib - held.num_permits() as u32)
                .map_err(|_| busy())?;
            held.merge(more);
        }
    }
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    Ok((req, held))
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy: every worker is taken and the queue is full; retry shortly (see --queue)".into(),
    )
}

/// Queues `task` for a worker and waits for its answer.
async fn run(state: &AppState, task: Task) -> Result<Answer, ApiError> {
    let answer = state.pool.submit(task).map_err(|refused| match refused {
        Refused::Busy => busy(),
        Refused::Closed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down".into(),
        ),
    })?;
    answer.await.map_err(|_| ApiError::internal())?
}

fn respond(answer: Answer) -> Response {
    match answer {
        Answer::Json(v) => axum::Json(v).into_response(),
        Answer::Wav(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        Answer::Written { json, .. } => {
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Answer::Image { bytes, format } => {
            ([(header::CONTENT_TYPE, format.to_mime_type())], bytes).into_response()
        }
    }
}
