//! A stored key as everyone may see it, and the authorization questions
//! asked of it (role, model, residency).
//!
//! **Invariant:** `KeyRecord` holds nothing secret. The salt and hash live
//! in the store's private `Entry`, so deriving `Debug` and `Serialize` here
//! cannot leak them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{KeySpec, Limits, Role, ANY, LOCAL};

/// Unknown fields are ignored, not refused: after an update is rolled back
/// the older nusad must still read records a newer one wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public prefix of the key (8 lowercase hex digits): the key's id in
    /// listings, usage and limiter state. Changes when the key is rotated.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub models: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub model_limits: BTreeMap<String, Limits>,
    pub residency: Vec<String>,
    pub spill: bool,
    #[serde(default)]
    pub cert_subject: Option<String>,
    pub created_at: u64,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    #[serde(default)]
    pub rotated_at: Option<u64>,
}

impl KeyRecord {
    /// A record for `spec` (not validated here: the store validates before
    /// it creates one).
    pub fn new(id: impl Into<String>, spec: KeySpec, created_at: u64) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            name: spec.name,
            role: spec.role,
            models: spec.models,
            expires_at: spec.expires_at,
            limits: spec.limits,
            model_limits: spec.model_limits,
            residency: spec.residency,
            spill: spec.spill,
            cert_subject: spec.cert_subject,
            created_at,
            revoked_at: None,
            rotated_at: None,
        }
    }

    /// The spec that would produce this record (for `update` round trips).
    pub fn spec(&self) -> KeySpec {
        KeySpec {
            name: self.name.clone(),
            role: self.role,
            models: self.models.clone(),
            expires_at: self.expires_at,
            limits: self.limits,
            model_limits: self.model_limits.clone(),
            residency: self.residency.clone(),
            spill: self.spill,
            cert_subject: self.cert_subject.clone(),
        }
    }

    /// Whether the key may run inference on `model`: one of its globs
    /// matches. Both roles may infer.
    ///
    /// The common shapes (`*`, an exact name, `prefix*`, `*suffix`) are
    /// matched without allocating; any other glob is compiled per call
    /// (validated at creation, so it parses). A property test holds the
    /// fast paths to `glob::Pattern`'s answers.
    pub fn may_call(&self, model: &str) -> bool {
        self.models.iter().any(|g| glob_matches(g, model))
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Expired from the second `expires_at` on.
    pub fn is_expired(&self, now_s: u64) -> bool {
        self.expires_at.is_some_and(|at| now_s >= at)
    }

    /// The key's residency rule.
    pub fn residency(&self) -> Residency<'_> {
        match self.residency.as_slice() {
            [one] if one == ANY => Residency::Any,
            [one] if one == LOCAL => Residency::Local,
            codes => Residency::Countries(codes),
        }
    }

    /// Whether a request of this key may be processed by a region in
    /// `country` (ISO 3166-1 alpha-2): the key allows spilling and its
    /// residency names that country (or is `any`). Processing on this box
    /// is always allowed.
    pub fn may_spill_to(&self, country: &str) -> bool {
        self.spill && self.residency().allows(country)
    }

    /// The limits of the key's calls to `model`, if it has its own.
    pub fn limits_for(&self, model: &str) -> Option<&Limits> {
        self.model_limits.get(model)
    }
}

/// Where a key's requests may be processed besides this box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency<'a> {
    Any,
    /// This box only: never spilled.
    Local,
    /// Regions in these countries (upper case).
    Countries(&'a [String]),
}

impl Residency<'_> {
    pub fn allows(&self, country: &str) -> bool {
        match self {
            Residency::Any => true,
            Residency::Local => false,
            Residency::Countries(codes) => codes.iter().any(|c| c.eq_ignore_ascii_case(country)),
        }
    }
}

fn is_literal(s: &str) -> bool {
    !s.contains(['*', '?', '[', ']'])
}

/// `glob::Pattern::new(glob).matches(name)`, without allocating for the
/// usual shapes. A glob that does not parse matches nothing.
pub(crate) fn glob_matches(glob: &str, name: &str) -> bool {
    if glob == "*" {
        return true;
    }
    if is_literal(glob) {
        return glob == name;
    }
    if let Some(prefix) = glob.strip_suffix('*').filter(|p| is_literal(p)) {
        return name.starts_with(prefix);
    }
    if let Some(suffix) = glob.strip_prefix('*').filter(|s| is_literal(s)) {
        return name.ends_with(suffix);
    }
    glob::Pattern::new(glob).is_ok_and(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(models: &[&str]) -> KeyRecord {
        let mut spec = KeySpec::new("k", Role::Infer);
        spec.models = models.iter().map(|m| m.to_string()).collect();
        KeyRecord::new("0123abcd", spec, 0)
    }

    #[test]
    fn model_globs() {
        let r = record(&["resnet-*", "bert"]);
        assert!(r.may_call("resnet-50"));
        assert!(r.may_call("resnet-"));
        assert!(r.may_call("bert"));
        assert!(!r.may_call("bert-large"));
        assert!(!r.may_call("yolo"));
        assert!(!r.may_call("xresnet-50"));
        assert!(record(&["*"]).may_call("anything/at all"));
        assert!(record(&["*-int8"]).may_call("yolo-int8"));
        assert!(record(&["yolo-v?"]).may_call("yolo-v8"));
        assert!(!record(&["yolo-v?"]).may_call("yolo-v10"));
        assert!(record(&["yolo-v[5-8]"]).may_call("yolo-v7"));
        assert!(!record(&[]).may_call("bert"));
    }

    #[test]
    fn roles() {
        let mut r = record(&["*"]);
        assert!(!r.is_admin());
        r.role = Role::Admin;
        assert!(r.is_admin());
        assert!(r.may_call("bert"), "admins may infer too");
    }

    #[test]
    fn residency_rules() {
        let mut r = record(&["*"]);
        assert!(r.may_spill_to("ID"));
        r.residency = vec!["ID".into()];
        assert!(r.may_spill_to("ID") && r.may_spill_to("id") && !r.may_spill_to("SG"));
        r.residency = vec!["local".into()];
        assert_eq!(r.residency(), Residency::Local);
        assert!(!r.may_spill_to("ID"));
        r.residency = vec!["any".into()];
        r.spill = false;
        assert!(!r.may_spill_to("ID"));
    }

    #[test]
    fn expiry_and_revocation() {
        let mut r = record(&["*"]);
        assert!(!r.is_expired(u64::MAX));
        r.expires_at = Some(100);
        assert!(!r.is_expired(99));
        assert!(r.is_expired(100));
        assert!(!r.is_revoked());
        r.revoked_at = Some(5);
        assert!(r.is_revoked());
    }
}
