use std::time::Duration;

/// Why a call to a region failed, in the terms a caller's retry and
/// circuit-breaker logic needs. Messages name the region; they never carry
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The configuration cannot be used (bad URL, unreadable CA bundle or
    /// client key). Only [`RegionClient::new`](crate::RegionClient::new)
    /// returns it.
    #[error("region {region}: {message}")]
    Config { region: String, message: String },
    /// No connection: refused, unreachable, or the TLS handshake failed
    /// (`tls`: including a certificate chain refused either way).
    #[error("region {region}: cannot connect: {message}")]
    Connect {
        region: String,
        message: String,
        tls: bool,
    },
    /// The whole exchange did not finish within the per-try timeout.
    #[error("region {region}: no complete answer within {timeout:?}")]
    Timeout { region: String, timeout: Duration },
    /// The connection or the stream was reset or closed before the answer
    /// was complete.
    #[error("region {region}: connection or stream reset: {message}")]
    Reset { region: String, message: String },
    /// The region broke the HTTP/2 protocol.
    #[error("region {region}: protocol error: {message}")]
    Protocol { region: String, message: String },
    /// The region answered with a status other than 200; `message` is its
    /// `{"error": ...}` text where it sent one.
    #[error("region {region} answered {status}: {message}")]
    Status {
        region: String,
        status: u16,
        message: String,
    },
    /// A 200 whose body is not a valid inference answer.
    #[error("region {region}: undecodable answer: {message}")]
    BadAnswer { region: String, message: String },
    /// The answer is larger than `max_response_bytes`.
    #[error("region {region}: answer larger than the {limit}-byte limit")]
    TooLarge { region: String, limit: u64 },
}

impl RegionError {
    /// Whether trying again (here or at another region) may succeed.
    /// Inference is idempotent, so failures after the request was sent are
    /// retryable too; answers that would come back the same are not.
    pub fn retryable(&self) -> bool {
        match self {
            RegionError::Connect { .. }
            | RegionError::Timeout { .. }
            | RegionError::Reset { .. }
            | RegionError::Protocol { .. } => true,
            RegionError::Status { status, .. } => transient_status(*status),
            RegionError::Config { .. }
            | RegionError::BadAnswer { .. }
            | RegionError::TooLarge { .. } => false,
        }
    }

    /// Whether the failure says something about the region's health (and
    /// so feeds its circuit breaker): everything except a configuration
    /// error and a 4xx that is the request's own fault.
    pub fn counts_against_region(&self) -> bool {
        match self {
            RegionError::Config { .. } => false,
            RegionError::Status { status, .. } => {
                !(400..500).contains(status) || transient_status(*status)
            }
            _ => true,
        }
    }

    /// What kind of failure, for logs and the `class` label of
    /// `nusa_region_probe_failures_total`: `config`, `connect`, `tls`,
    /// `timeout`, `reset`, `protocol`, `status_5xx`, `status_4xx`,
    /// `bad_answer`, `too_large`.
    pub fn class(&self) -> &'static str {
        match self {
            RegionError::Config { .. } => "config",
            RegionError::Connect { tls: true, .. } => "tls",
            RegionError::Connect { .. } => "connect",
            RegionError::Timeout { .. } => "timeout",
            RegionError::Reset { .. } => "reset",
            RegionError::Protocol { .. } => "protocol",
            RegionError::Status { status, .. } if *status >= 500 => "status_5xx",
            RegionError::Status { .. } => "status_4xx",
            RegionError::BadAnswer { .. } => "bad_answer",
            RegionError::TooLarge { .. } => "too_large",
        }
    }

    /// The HTTP status the region answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegionError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// 502/503/504 say the region is overloaded or restarting, 429 that it
/// sheds load, 408 that the request's body reached it too slowly (the
/// network between us, not the request).
fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> RegionError {
        RegionError::Status {
            region: "r".into(),
            status,
            message: String::new(),
        }
    }

    #[test]
    fn statuses_split_by_whose_fault() {
        for s in [429, 502, 503, 504, 408] {
            assert!(status(s).retryable(), "{s}");
            assert!(status(s).counts_against_region(), "{s}");
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(!status(s).retryable(), "{s}");
            assert!(!status(s).counts_against_region(), "{s}");
        }
        assert!(!status(500).retryable());
        assert!(status(500).counts_against_region());
    }

    #[test]
    fn transport_failures_are_the_regions() {
        let region = || "r".to_string();
        let message = String::new;
        for e in [
            RegionError::Connect {
                region: region(),
                message: message(),
                tls: false,
            },
            RegionError::Timeout {
                region: region(),
                timeout: Duration::from_secs(1),
            },
            RegionError::Reset {
                region: region(),
                message: message(),
            },
            RegionError::Protocol {
                region: region(),
                message: message(),
            },
        ] {
            assert!(e.retryable() && e.counts_against_region(), "{e}");
        }
        let bad = RegionError::BadAnswer {
            region: region(),
            message: message(),
        };
        assert!(!bad.retryable() && bad.counts_against_region());
        let big = RegionError::TooLarge {
            region: region(),
            limit: 1,
        };
        assert!(!big.retryable() && big.counts_against_region());
        let config = RegionError::Config {
            region: region(),
            message: message(),
        };
        assert!(!config.retryable() && !config.counts_against_region());
    }
}
