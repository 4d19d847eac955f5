//! `<model>/config.toml`: batching, queue and instances for one model.

use std::path::Path;

use nusa_sched::Policy;
use serde::Deserialize;

/// Model config files are small; anything larger is a mistake.
const MAX_CONFIG_BYTES: u64 = 64 << 10;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub versions: VersionPolicy,
    pub batching: Batching,
    pub instances: Instances,
    /// Latency objective: a request predicted to miss it locally goes to a
    /// region (or, when pinned here, gets 503). Unset: spill only when the
    /// queue is full.
    pub slo_ms: Option<u64>,
    pub residency: Residency,
    pub placement: Placement,
    pub cache: CachePolicy,
    pub engine: EngineChoice,
    /// The inference a version runs before it takes traffic.
    pub warmup: Warmup,
    /// `[rollout]`: this model's canary plan keys, over nusad's.
    pub rollout: Option<nusa_rollout::PlanSpec>,
}

/// What a newly loaded version runs before it takes traffic (a load whose
/// warm-up fails is refused and the serving version stays).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Warmup {
    /// One inference of zeros (empty strings for BYTES), every variable
    /// dimension 1.
    #[default]
    Zeros,
    /// None: for a model whose zeros are not a valid input.
    None,
}

/// Which engine runs the model here.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// TensorRT when its libraries and a GPU are present and a version has a
    /// `model.plan`; otherwise ONNX Runtime.
    #[default]
    Auto,
    /// TensorRT only: the model does not load without it.
    Tensorrt,
    Onnxruntime,
}

/// Where the model's requests run by default.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Here, spilling to a region when the objective would be missed.
    #[default]
    Local,
    /// In the regions, this box answering only when no region can (a model
    /// too heavy for the box that still wants the edge's TLS, cache and
    /// protocol). Pinned requests still stay here.
    Region,
}

/// Where this model's requests may be processed besides this box:
/// `residency = "any"`, `"local"`, or a list of country codes
/// (`["ID", "SG"]`). `["any"]` and `["local"]` alone mean the same as the
/// strings, as in API keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Residency {
    /// Any region, whether it declares a country or not.
    #[default]
    Any,
    /// Never sent to a region, under any load.
    Local,
    /// Only regions that declare one of these countries (ISO 3166-1
    /// alpha-2, upper case, each once, at least one), under any load.
    Countries(Vec<String>),
}

impl Residency {
    fn from_list(values: Vec<String>) -> Result<Residency, String> {
        match values.as_slice() {
            [] => return Err("an empty list allows no region: write \"local\"".into()),
            [one] if one == "any" => return Ok(Residency::Any),
            [one] if one == "local" => return Ok(Residency::Local),
            _ => {}
        }
        let mut codes: Vec<String> = Vec::with_capacity(values.len());
        for v in values {
            if !is_country_code(&v) {
                return Err(format!(
                    "{v:?} is not a country code: \"any\" or \"local\" alone, or ISO 3166-1 alpha-2 codes in upper case (\"ID\")"
                ));
            }
            if !codes.contains(&v) {
                codes.push(v);
            }
        }
        Ok(Residency::Countries(codes))
    }
}

/// ISO 3166-1 alpha-2 in its upper-case spelling (the shape; the list of
/// assigned codes is not checked).
fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

impl<'de> Deserialize<'de> for Residency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Residency, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Residency;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"any\", \"local\" or a list of ISO 3166-1 alpha-2 country codes")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Residency, E> {
                match v {
                    "any" => Ok(Residency::Any),
                    "local" => Ok(Residency::Local),
                    other => Err(E::custom(format!(
                        "expected \"any\", \"local\" or a list of country codes ([\"ID\"]), got {other:?}"
                    ))),
                }
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Residency, A::Error> {
                let mut values = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    values.push(v);
                }
                Residency::from_list(values).map_err(serde::de::Error::custom)
            }
        }

        d.deserialize_any(Visitor)
    }
}

/// The edge cache for this model (off unless enabled, as in Triton).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CachePolicy {
    pub enabled: bool,
    pub ttl_s: u64,
    /// Answers larger than this are not stored.
    pub max_entry_bytes: u64,
}

impl Default for CachePolicy {
    fn default() -> CachePolicy {
        CachePolicy {
            enabled: false,
            ttl_s: 3_600,
            max_entry_bytes: 1 << 20,
        }
    }
}

/// Which versions found on disk are loaded. Requests that name no version
/// get the latest either way.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    #[default]
    All,
    Latest,
}

/// Triton's dynamic batcher settings, under the same names.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    pub max_batch_size: usize,
    pub max_queue_delay_us: u64,
    pub max_queue_size: usize,
    pub default_timeout_us: u64,
    pub allow_timeout_override: bool,
    pub priority_levels: u32,
    pub default_priority_level: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Instances {
    pub count: usize,
}

impl Default for Batching {
    fn default() -> Batching {
        // Triton's defaults: batch what is queued, no waiting, no limit
        // other than ours on the queue.
        Batching {
            max_batch_size: 8,
            max_queue_delay_us: 0,
            max_queue_size: 1024,
            default_timeout_us: 0,
            allow_timeout_override: true,
            priority_levels: 0,
            default_priority_level: 0,
        }
    }
}

impl Default for Instances {
    fn default() -> Instances {
        Instances { count: 1 }
    }
}

impl ModelConfig {
    /// Reads a model config; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<ModelConfig, String> {
        let text = match nusa_fsutil::read_to_string_bounded(path, MAX_CONFIG_BYTES) {
            Ok(text) => text,
            Err(e) if e.is_not_found() => return Ok(ModelConfig::default()),
            Err(nusa_fsutil::ReadError::TooLarge { .. }) => {
                return Err(format!(
                    "{} is larger than {MAX_CONFIG_BYTES} bytes",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("reading {}: {}", path.display(), e.detail())),
        };
        ModelConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ModelConfig, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| first_line(&e.to_string()))?;
        let c: ModelConfig = serde_path_to_error::deserialize(de)
            // The message alone: the error's Display starts with its
            // position, and the key already says where.
            .map_err(|e| format!("{}: {}", e.path(), first_line(e.inner().message())))?;
        let b = &c.batching;
        if b.priority_levels > 0 && b.default_priority_level > b.priority_levels {
            return Err(format!(
                "batching.default_priority_level: {} is above priority_levels ({})",
                b.default_priority_level, b.priority_levels
            ));
        }
        if c.slo_ms == Some(0) {
            return Err("slo_ms: must be greater than 0".into());
        }
        if c.cache.enabled && c.cache.ttl_s == 0 {
            return Err("cache.ttl_s: must be greater than 0 when the cache is enabled".into());
        }
        if c.instances.count == 0 {
            return Err("instances.count: must be at least 1".into());
        }
        Ok(c)
    }

    pub fn policy(&self) -> Policy {
        let b = &self.batching;
        Policy {
            max_batch_size: b.max_batch_size,
            max_queue_delay_us: b.max_queue_delay_us,
            max_queue_size: b.max_queue_size,
            default_timeout_us: b.default_timeout_us,
            allow_timeout_override: b.allow_timeout_override,
            priority_levels: b.priority_levels,
            default_priority_level: b.default_priority_level,
            instances: self.instances.count,
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_with_the_key() {
        let c = ModelConfig::parse("versions = \"latest\"\n[batching]\nmax_batch_size = 4\nmax_queue_delay_us = 100\n[instances]\ncount = 2\n").unwrap();
        assert_eq!(c.versions, VersionPolicy::Latest);
        assert_eq!(c.policy().max_batch_size, 4);
        assert_eq!(c.policy().instances, 2);
        let e = ModelConfig::parse("[batching]\nmax_batch_size = -1\n").unwrap_err();
        assert!(e.starts_with("batching.max_batch_size"), "{e}");
        let c = ModelConfig::parse(
            "slo_ms = 20\nresidency = \"local\"\n[cache]\nenabled = true\nttl_s = 5\n",
        )
        .unwrap();
        assert_eq!(
            (c.slo_ms, c.residency, c.cache.enabled, c.cache.ttl_s),
            (Some(20), Residency::Local, true, 5)
        );
        let c = ModelConfig::parse("placement = \"region\"\n").unwrap();
        assert_eq!(c.placement, Placement::Region);
        let e = ModelConfig::parse("residency = \"cloud\"\n").unwrap_err();
        assert!(e.starts_with("residency"), "{e}");
        let c = ModelConfig::parse("engine = \"tensorrt\"\n").unwrap();
        assert_eq!(c.engine, EngineChoice::Tensorrt);
        let e = ModelConfig::parse("engine = \"tflite\"\n").unwrap_err();
        assert!(e.starts_with("engine"), "{e}");
        let e = ModelConfig::parse("[instances]\ncount = 0\n").unwrap_err();
        assert!(e.starts_with("instances.count"), "{e}");
    }

    fn residency(value: &str) -> Result<Residency, String> {
        ModelConfig::parse(&format!("residency = {value}\n")).map(|c| c.residency)
    }

    #[test]
    fn old_spellings_and_country_lists() {
        assert_eq!(ModelConfig::parse("").unwrap().residency, Residency::Any);
        assert_eq!(residency("\"any\""), Ok(Residency::Any));
        assert_eq!(residency("\"local\""), Ok(Residency::Local));
        assert_eq!(residency("[\"any\"]"), Ok(Residency::Any));
        assert_eq!(residency("[\"local\"]"), Ok(Residency::Local));
        assert_eq!(
            residency("[\"ID\"]"),
            Ok(Residency::Countries(vec!["ID".into()]))
        );
        assert_eq!(
            residency("[\"ID\", \"SG\", \"ID\"]"),
            Ok(Residency::Countries(vec!["ID".into(), "SG".into()])),
            "each once"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (value, mentions) in [
            ("\"cloud\"", "cloud"),
            ("\"ID\"", "\"ID\""),
            ("[]", "empty"),
            ("[\"id\"]", "\"id\""),
            ("[\"IDN\"]", "IDN"),
            ("[\"ID\", \"any\"]", "any"),
            ("[\"ID\", \"local\"]", "local"),
            ("[1]", "integer"),
            ("3", "integer"),
        ] {
            let e = residency(value).unwrap_err();
            // `residency[0]: ...` for a list element of the wrong type.
            assert!(e.starts_with("residency"), "{value}: {e}");
            assert!(e.contains(mentions), "{value}: {e}");
            assert!(!e.contains('\n'), "{value}: {e}");
        }
    }
}
