//! Errors: [`ServeError`] when the service cannot start, [`ApiError`] for one request (a
//! status and a message, answered as JSON `{"error": ...}`; never fatal to the service).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::Served;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Model(#[from] bottleneck::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

/// A request that could not be answered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: String) -> Self {
        Self { status, message }
    }

    pub fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Well-formed but not what the model reads (wrong columns, values that are not numbers).
    pub fn unprocessable(message: String) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn unsupported(message: String) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    pub fn too_large(message: String) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while answering this request; the service goes on".into(),
        )
    }

    /// The endpoint does not fit the served model.
    pub fn wrong_model(served: Served) -> Self {
        let what = match served {
            Served::ImageDetector => "an image anomaly detector",
            Served::TableDetector => "a table anomaly detector",
            Served::ImageDenoiser => "an image denoiser",
            Served::AudioDetector => "an audio anomaly detector",
            Served::AudioDenoiser => "an audio denoiser",
        };
        Self::new(
            StatusCode::NOT_FOUND,
            format!(
                "the served model is {what}: it answers {}",
                served.endpoints()
            ),
        )
    }

    /// An axum extractor's rejection, keeping its status (413 for a body over the limit).
    pub fn from_rejection(status: StatusCode, text: String) -> Self {
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is over the size limit ({text}); see --max-body-mb")
        } else {
            text
        };
        Self::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
