/// The endpoints of the protocol, parsed from a request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Live,
    Ready,
    ServerMetadata,
    ModelMetadata {
        model: String,
        version: Option<String>,
    },
    ModelReady {
        model: String,
        version: Option<String>,
    },
    ModelConfig {
        model: String,
        version: Option<String>,
    },
    ModelStats {
        model: Option<String>,
        version: Option<String>,
    },
    Infer {
        model: String,
        version: Option<String>,
    },
    /// The model repository extension (admin listener only).
    RepositoryIndex,
    RepositoryLoad {
        model: String,
    },
    RepositoryUnload {
        model: String,
    },
    /// `/v2/nusa/models`: every model's state (admin).
    AdminModels,
    /// `/v2/nusa/models/{m}/pin` (admin).
    AdminPin {
        model: String,
    },
    /// `/v2/nusa/models/{m}/pull` (admin).
    AdminPull {
        model: String,
    },
    /// `/v2/nusa/history` and `/v2/nusa/models/{m}/history` (admin).
    AdminHistory {
        model: Option<String>,
    },
    /// `/v2/nusa/canary` (every rollout) and `/v2/nusa/models/{m}/canary`
    /// (GET its status, POST starts one) (admin).
    AdminCanary {
        model: Option<String>,
    },
    /// `/v2/nusa/models/{m}/canary/promote` (admin).
    AdminCanaryPromote {
        model: String,
    },
    /// `/v2/nusa/models/{m}/canary/abort` (admin).
    AdminCanaryAbort {
        model: String,
    },
    /// `/v2/nusa/keys`: GET lists, POST creates (admin).
    AdminKeys,
    /// `/v2/nusa/keys/{name}`: GET shows, POST changes (admin).
    AdminKey {
        name: String,
    },
    /// `/v2/nusa/keys/{name}/revoke` and `/rotate` (admin).
    AdminKeyRevoke {
        name: String,
    },
    AdminKeyRotate {
        name: String,
    },
    /// `/v2/nusa/audit` (GET, `?since=&limit=`), `/v2/nusa/audit/verify`
    /// (GET), `/v2/nusa/audit/checkpoint` (POST) (admin).
    AdminAudit,
    AdminAuditVerify,
    AdminAuditCheckpoint,
    /// `/v2/nusa/cost` (GET, `?since=24h&by=key`) (admin).
    AdminCost,
    /// `/v2/nusa/cache/purge` (POST) (admin).
    AdminCachePurge,
    /// `/v2/nusa/config/reload` (POST) (admin).
    AdminConfigReload,
    /// `/v2/nusa/status` (GET): the box at a glance (admin).
    AdminStatus,
    /// `/v2/nusa/models/{m}/drift` (GET): the model's drift (admin).
    AdminDrift {
        model: String,
    },
}

impl Route {
    /// Routes served on the admin listener and socket only.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Route::RepositoryIndex
                | Route::RepositoryLoad { .. }
                | Route::RepositoryUnload { .. }
                | Route::AdminModels
                | Route::AdminPin { .. }
                | Route::AdminPull { .. }
                | Route::AdminHistory { .. }
                | Route::AdminCanary { .. }
                | Route::AdminCanaryPromote { .. }
                | Route::AdminCanaryAbort { .. }
                | Route::AdminKeys
                | Route::AdminKey { .. }
                | Route::AdminKeyRevoke { .. }
                | Route::AdminKeyRotate { .. }
                | Route::AdminAudit
                | Route::AdminAuditVerify
                | Route::AdminAuditCheckpoint
                | Route::AdminCost
                | Route::AdminCachePurge
                | Route::AdminConfigReload
                | Route::AdminStatus
                | Route::AdminDrift { .. }
        )
    }
}

/// Parses a path (without query). `None` means no such endpoint.
pub fn parse_route(path: &str) -> Option<Route> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    // parts[0] is the empty string before the leading '/'.
    if parts.first() != Some(&"") || parts.get(1) != Some(&"v2") {
        return None;
    }
    let rest = &parts[2..];
    let owned = |s: &str| percent_decode(s);
    Some(match rest {
        [] => Route::ServerMetadata,
        ["health", "live"] => Route::Live,
        ["health", "ready"] => Route::Ready,
        ["repository", "index"] => Route::RepositoryIndex,
        ["repository", "models", m, "load"] => Route::RepositoryLoad { model: owned(m)? },
        ["repository", "models", m, "unload"] => Route::RepositoryUnload { model: owned(m)? },
        ["nusa", "models"] => Route::AdminModels,
        ["nusa", "history"] => Route::AdminHistory { model: None },
        ["nusa", "models", m, "pin"] => Route::AdminPin { model: owned(m)? },
        ["nusa", "models", m, "pull"] => Route::AdminPull { model: owned(m)? },
        ["nusa", "models", m, "history"] => Route::AdminHistory {
            model: Some(owned(m)?),
        },
        ["nusa", "canary"] => Route::AdminCanary { model: None },
        ["nusa", "keys"] => Route::AdminKeys,
        ["nusa", "keys", k] => Route::AdminKey { name: owned(k)? },
        ["nusa", "keys", k, "revoke"] => Route::AdminKeyRevoke { name: owned(k)? },
        ["nusa", "keys", k, "rotate"] => Route::AdminKeyRotate { name: owned(k)? },
        ["nusa", "audit"] => Route::AdminAudit,
        ["nusa", "audit", "verify"] => Route::AdminAuditVerify,
        ["nusa", "audit", "checkpoint"] => Route::AdminAuditCheckpoint,
        ["nusa", "cost"] => Route::AdminCost,
        ["nusa", "cache", "purge"] => Route::AdminCachePurge,
        ["nusa", "config", "reload"] => Route::AdminConfigReload,
        ["nusa", "status"] => Route::AdminStatus,
        ["nusa", "models", m, "drift"] => Route::AdminDrift { model: owned(m)? },
        ["nusa", "models", m, "canary"] => Route::AdminCanary {
            model: Some(owned(m)?),
        },
        ["nusa", "models", m, "canary", "promote"] => {
            Route::AdminCanaryPromote { model: owned(m)? }
        }
        ["nusa", "models", m, "canary", "abort"] => Route::AdminCanaryAbort { model: owned(m)? },
        ["models", "stats"] => Route::ModelStats {
            model: None,
            version: None,
        },
        ["models", m, tail @ ..] => {
            let model = owned(m)?;
            let (version, tail) = match tail {
                ["versions", v, t @ ..] => (Some(owned(v)?), t),
                t => (None, t),
            };
            match tail {
                [] => Route::ModelMetadata { model, version },
                ["ready"] => Route::ModelReady { model, version },
                ["config"] => Route::ModelConfig { model, version },
                ["stats"] => Route::ModelStats {
                    model: Some(model),
                    version,
                },
                ["infer"] => Route::Infer { model, version },
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// Decodes %XX escapes (`percent-encoding`); `None` for a malformed
/// escape (`%`, `%4`, `%zz`), non-UTF-8 or an empty name.
fn percent_decode(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    // percent-encoding passes a malformed escape through as it is; a name
    // with one is refused instead of guessed at.
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route("/v2/health/live"), Some(Route::Live));
        assert_eq!(parse_route("/v2/"), Some(Route::ServerMetadata));
        assert_eq!(
            parse_route("/v2/models/tiny-cnn/versions/3/infer"),
            Some(Route::Infer {
                model: "tiny-cnn".into(),
                version: Some("3".into())
            })
        );
        assert_eq!(
            parse_route("/v2/models/a%20b/ready"),
            Some(Route::ModelReady {
                model: "a b".into(),
                version: None
            })
        );
        assert_eq!(parse_route("/v2/models//infer"), None);
        assert_eq!(parse_route("/v2/models/m/versions/1/bogus"), None);
        assert_eq!(parse_route("/v1/models"), None);
        assert_eq!(parse_route("/v2/models/%zz"), None);
        assert_eq!(
            parse_route("/v2/repository/models/tiny-cnn/load"),
            Some(Route::RepositoryLoad {
                model: "tiny-cnn".into()
            })
        );
        assert_eq!(
            parse_route("/v2/nusa/models/a%2Fb/pin"),
            Some(Route::AdminPin {
                model: "a/b".into()
            })
        );
        assert!(parse_route("/v2/repository/index").unwrap().is_admin());
        assert!(!parse_route("/v2/models/m/infer").unwrap().is_admin());
    }
}
