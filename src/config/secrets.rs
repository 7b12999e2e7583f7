//! Where the keys come from: the master key (and the development key file), the previous master
//! key, and the HMAC secrets, parsed and checked once.

use std::path::PathBuf;

use super::{ConfigError, MasterKeySource};
use crate::secrets::{HmacSecret, MasterKey, PreviousHmac};

/// The secret sources of a configuration.
pub(super) struct Sources {
    pub(super) master_key: MasterKeySource,
    pub(super) master_key_previous: Option<MasterKey>,
    pub(super) hmac_secret: Option<HmacSecret>,
    pub(super) hmac_secret_previous: Option<PreviousHmac>,
}

/// Reads `TESSERA_MASTER_KEY` (or `_FILE`), `TESSERA_MASTER_KEY_PREVIOUS`, `TESSERA_HMAC_SECRET` and
/// `TESSERA_HMAC_SECRET_PREVIOUS` through `var`. Errors name the variable.
pub(super) fn sources(var: &impl Fn(&str) -> Option<String>) -> Result<Sources, ConfigError> {
    let master_key = match var("TESSERA_MASTER_KEY") {
        Some(v) => MasterKeySource::Env(
            MasterKey::from_base64(v.trim()).map_err(|reason| ConfigError::new("TESSERA_MASTER_KEY", reason))?,
        ),
        None => MasterKeySource::DevFile(
            var("TESSERA_MASTER_KEY_FILE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".tessera/master.key")),
        ),
    };

    let master_key_previous = var("TESSERA_MASTER_KEY_PREVIOUS")
        .map(|v| MasterKey::from_base64(v.trim()))
        .transpose()
        .map_err(|reason| ConfigError::new("TESSERA_MASTER_KEY_PREVIOUS", reason))?;
    let hmac_secret = var("TESSERA_HMAC_SECRET")
        .map(|v| HmacSecret::new(&v))
        .transpose()
        .map_err(|reason| ConfigError::new("TESSERA_HMAC_SECRET", reason))?;
    let hmac_secret_previous = match var("TESSERA_HMAC_SECRET_PREVIOUS") {
        None => None,
        Some(v) if v == "derived" => {
            if hmac_secret.is_none() {
                return Err(ConfigError::new(
                    "TESSERA_HMAC_SECRET_PREVIOUS",
                    "`derived` names the master-derived keys, which are already current while TESSERA_HMAC_SECRET is unset",
                ));
            }
            Some(PreviousHmac::DerivedFromMaster)
        }
        Some(v) => Some(PreviousHmac::Secret(
            HmacSecret::new(&v).map_err(|reason| ConfigError::new("TESSERA_HMAC_SECRET_PREVIOUS", reason))?,
        )),
    };

    Ok(Sources { master_key, master_key_previous, hmac_secret, hmac_secret_previous })
}
