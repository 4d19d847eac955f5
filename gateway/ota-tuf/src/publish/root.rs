//! Building and signing root.json, the one role tough's `RepositoryEditor`
//! does not build (it starts from an existing root).
//!
//! A new root version must carry signatures meeting the threshold of the
//! root it replaces (so a device trusting the old one accepts it) and of
//! its own (so it is self-consistent). tough's `SignedRole::new` does not
//! check the threshold for root because of that cross-signing, so we check
//! both here with tough's own `Root::verify_role` before anything is
//! written.

use std::collections::HashMap;
use std::num::NonZeroU64;

use aws_lc_rs::rand::SystemRandom;
use tough::editor::signed::SignedRole;
use tough::schema::{KeyHolder, RoleKeys, Root};

use super::{PublishError, Thresholds};
use crate::{Role, SigningKeys};

const SPEC_VERSION: &str = "1.0.0";

/// A root listing the public keys of `keys` for each role, with consistent
/// snapshots on (metadata as `N.<role>.json`, targets as `<sha256>.<name>`:
/// files never change once published, so a client never mixes a new file
/// with an old one mid-update).
pub(crate) fn build(
    keys: &SigningKeys,
    thresholds: &Thresholds,
    version: NonZeroU64,
    expires: jiff::Timestamp,
) -> Result<Root, PublishError> {
    let mut all_keys = HashMap::new();
    let mut roles = HashMap::new();
    for role in Role::ALL {
        let threshold = thresholds.of(role);
        let mut keyids = Vec::new();
        for key in keys.public_keys(role)? {
            let keyid = key.key_id().map_err(|e| PublishError::Keys {
                detail: format!("{role} key ID: {e}"),
            })?;
            if !keyids.contains(&keyid) {
                keyids.push(keyid.clone());
            }
            all_keys.insert(keyid, key);
        }
        if (keyids.len() as u64) < threshold.get() {
            return Err(PublishError::Threshold {
                role,
                threshold: threshold.get(),
                keys: keyids.len(),
            });
        }
        roles.insert(
            role.role_type(),
            RoleKeys {
                keyids,
                threshold,
                _extra: HashMap::new(),
            },
        );
    }
    Ok(Root {
        spec_version: SPEC_VERSION.to_owned(),
        consistent_snapshot: true,
        version,
        expires,
        keys: all_keys,
        roles,
        _extra: HashMap::new(),
    })
}

/// Signs `root` with the root keys of every `(authority, keys)` pair and
/// checks that each authority's threshold is met: for a first root the
/// authority is the root itself; for a rotation, the old root and the new.
pub(crate) async fn sign(
    root: Root,
    authorities: &[(&Root, &SigningKeys)],
) -> Result<SignedRole<Root>, PublishError> {
    let sign_error = |e: tough::error::Error| PublishError::Sign {
        detail: format!("root: {e}"),
    };
    let rng = SystemRandom::new();
    let mut combined: Option<SignedRole<Root>> = None;
    for (authority, keys) in authorities {
        let holder = KeyHolder::Root((*authority).clone());
        let signed = SignedRole::new(root.clone(), &holder, &keys.sources()?, &rng)
            .await
            .map_err(sign_error)?;
        combined = Some(match combined {
            None => signed,
            Some(base) => base
                .add_old_signatures(signed.signed().signatures.clone())
                .map_err(sign_error)?,
        });
    }
    let signed = combined.ok_or(PublishError::Keys {
        detail: "no root keys given".to_owned(),
    })?;
    for (authority, _) in authorities {
        authority
            .verify_role(signed.signed())
            .map_err(|e| PublishError::RootNotSigned {
                by_version: authority.version.get(),
                detail: e.to_string(),
            })?;
    }
    Ok(signed)
}
