use std::fmt;

/// Whose fault an error is, and so which status it maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or does not match the model (400).
    BadRequest,
    /// Unknown model, version or path (404).
    NotFound,
    /// Method not allowed on this path (405).
    MethodNotAllowed,
    /// Body larger than the configured limit (413).
    TooLarge,
    /// The model's queue is full (503 with Retry-After).
    QueueFull,
    /// The request waited in the queue past its `timeout` parameter (504).
    Timeout,
    /// Model not ready (503).
    Unavailable,
    /// The engine failed (500).
    Internal,
    /// An admin call without valid credentials (401).
    Unauthorized,
    /// A caller known not to have the right (403).
    Forbidden,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::TooLarge => 413,
            ErrorKind::QueueFull | ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
        }
    }

    /// The label used for this outcome in metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "engine_error",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
        }
    }
}

/// An error with the message the client sees in `{"error": ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProtoError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ProtoError {
        ProtoError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ProtoError {
        ProtoError::new(ErrorKind::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> ProtoError {
        ProtoError::new(ErrorKind::NotFound, message)
    }

    /// The JSON body `{"error": "..."}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string()
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProtoError {}
