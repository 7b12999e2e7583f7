//! Replacing the master key and the HMAC secret without downtime.
//!
//! Sealed material (signing keys, the ID-token key, webhook secrets) opens under the current or the previous master key
//! ([`crate::secrets::Sealer`]); [`reseal`] moves it to the current one. Keyed hashes (API keys,
//! refresh tokens, generated client secrets) verify under the current or the previous HMAC key
//! ([`crate::secrets::Keyring`]); each stored hash records its key's id, API keys move to the
//! current key when next verified, and [`report`] counts what still depends on each key, so an
//! operator knows when the previous secret may be removed.

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{
    clients::secret,
    error::Result,
    secrets::{keyring::hex, DerivedKeys, Keyring, Sealer},
};

/// How many stored items of one kind depend on one key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyCount {
    /// `api_keys` (not revoked), `refresh_tokens` (live), `client_secrets` (generated, enabled
    /// clients), `signing_keys` / `id_token_signing_keys` / `id_token_keys` (sealed private keys;
    /// the last is the earlier version's ID-token key) or `webhook_secrets`
    /// (sealed endpoint secrets).
    pub what: &'static str,
    /// `current`, `previous`, `retired` (no longer accepted: these no longer verify or open),
    /// or `unlabelled` (stored before key ids were recorded).
    pub version: &'static str,
    /// The key's id in hex, where one is recorded.
    pub key_id: Option<String>,
    /// How many.
    pub count: i64,
}

/// What remains under each key; when no row says `previous`, the previous secret may go.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One line per kind and key, kinds in a fixed order, current first.
    pub counts: Vec<KeyCount>,
    /// Whether anything still depends on a previous key.
    pub previous_in_use: bool,
}

fn label(ring: &Keyring, id: Option<&[u8]>) -> &'static str {
    id.map_or("unlabelled", |id| ring.version_of(id).as_str())
}

async fn by_key_id(
    db: &PgPool,
    what: &'static str,
    ring: &Keyring,
    sql: &str,
    now: OffsetDateTime,
) -> Result<Vec<KeyCount>> {
    let rows: Vec<(Option<Vec<u8>>, i64)> = sqlx::query_as(sql).bind(now).fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|(id, count)| KeyCount { what, version: label(ring, id.as_deref()), key_id: id.map(|i| hex(&i)), count })
        .collect())
}

/// Counts, per kind, the stored items under each HMAC key and the signing keys sealed under each
/// master key. Reads only.
pub async fn report(db: &PgPool, keys: &DerivedKeys, now: OffsetDateTime) -> Result<Report> {
    let mut counts = by_key_id(
        db,
        "api_keys",
        &keys.api_key,
        "SELECT hmac_key_id, count(*) FROM api_keys WHERE revoked_at IS NULL AND $1::timestamptz IS NOT NULL
         GROUP BY 1 ORDER BY 2 DESC",
        now,
    )
    .await?;
    counts.extend(
        by_key_id(
            db,
            "refresh_tokens",
            &keys.refresh_token,
            "SELECT hmac_key_id, count(*) FROM refresh_tokens WHERE spent_at IS NULL AND expires_at > $1
             GROUP BY 1 ORDER BY 2 DESC",
            now,
        )
        .await?,
    );
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT secret_hash FROM clients WHERE disabled_at IS NULL AND secret_hash LIKE '$tessera-hmac-sha256$%'",
    )
    .fetch_all(db)
    .await?;
    let mut per_key: Vec<KeyCount> = Vec::new();
    for s in &stored {
        let id = secret::key_id_of(s).map(str::to_owned);
        let version = match &id {
            None => "unlabelled",
            Some(h) => keys.client_secret.accepted().find(|k| k.id_hex() == *h).map_or("retired", |k| {
                if k.id() == keys.client_secret.current().id() {
                    "current"
                } else {
                    "previous"
                }
            }),
        };
        match per_key.iter_mut().find(|c| c.key_id == id) {
            Some(c) => c.count += 1,
            None => per_key.push(KeyCount { what: "client_secrets", version, key_id: id, count: 1 }),
        }
    }
    counts.extend(per_key);
    let sealed = sealed_counts(db, keys).await?;
    counts.extend(sealed);
    let previous_in_use = counts.iter().any(|c| c.version == "previous" && c.count > 0);
    Ok(Report { counts, previous_in_use })
}

/// A table holding sealed material: how to read each row's associated data (what the seal is
/// bound to), its sealed bytes and its key, and how to replace the sealed bytes of one row.
struct SealedTable {
    what: &'static str,
    select: &'static str,
    update: &'static str,
}

const SEALED: [SealedTable; 4] = [
    SealedTable {
        what: "signing_keys",
        select: "SELECT convert_to(kid, 'UTF8'), private_key_enc, kid FROM signing_keys ORDER BY created_at",
        update: "UPDATE signing_keys SET private_key_enc = $3 WHERE kid = $1 AND private_key_enc = $2",
    },
    SealedTable {
        what: "id_token_signing_keys",
        select: "SELECT convert_to(kid, 'UTF8'), private_key_enc, kid FROM id_token_signing_keys ORDER BY created_at",
        update: "UPDATE id_token_signing_keys SET private_key_enc = $3 WHERE kid = $1 AND private_key_enc = $2",
    },
    // The ID-token key of the version before rotation (migration 0017): read by instances of that
    // version during a rolling upgrade, so it stays openable under the current master key.
    SealedTable {
        what: "id_token_keys",
        select: "SELECT convert_to(kid, 'UTF8'), private_key_enc, kid FROM id_token_keys ORDER BY created_at",
        update: "UPDATE id_token_keys SET private_key_enc = $3 WHERE kid = $1 AND private_key_enc = $2",
    },
    SealedTable {
        what: "webhook_secrets",
        select: "SELECT uuid_send(id), secret_sealed, id::text FROM webhook_endpoints ORDER BY created_at",
        update: "UPDATE webhook_endpoints SET secret_sealed = $3 WHERE id = $1::uuid AND secret_sealed = $2",
    },
];

fn sealer_for<'a>(keys: &'a DerivedKeys, what: &str) -> &'a Sealer {
    if what == "webhook_secrets" {
        &keys.webhook_sealer
    } else {
        &keys.sealer
    }
}

async fn sealed_counts(db: &PgPool, keys: &DerivedKeys) -> Result<Vec<KeyCount>> {
    let mut out = Vec::new();
    for table in &SEALED {
        let sealer = sealer_for(keys, table.what);
        let rows: Vec<(Vec<u8>, Vec<u8>, String)> = sqlx::query_as(table.select).fetch_all(db).await?;
        let (mut current, mut previous, mut unreadable) = (0, 0, 0);
        for (aad, sealed, _) in rows {
            match sealer.open(&aad, &sealed) {
                Some(o) if o.under_previous => previous += 1,
                Some(_) => current += 1,
                None => unreadable += 1,
            }
        }
        let line = |version, count| KeyCount { what: table.what, version, key_id: None, count };
        out.extend(
            [line("current", current), line("previous", previous), line("retired", unreadable)]
                .into_iter()
                .filter(|c| c.count > 0),
        );
    }
    Ok(out)
}

/// What [`reseal`] did.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Resealed {
    /// `signing_keys`, `id_token_signing_keys`, `id_token_keys` or `webhook_secrets`.
    pub what: &'static str,
    /// Rows seen.
    pub total: u64,
    /// Moved from the previous master key to the current one.
    pub resealed: u64,
    /// Already under the current master key.
    pub already_current: u64,
    /// Opened by neither key (sealed under a master key no longer configured).
    pub unreadable: u64,
}

/// Re-seals everything sealed under the previous master key (signing keys, webhook secrets) under
/// the current one, row by row (a row another process changed meanwhile is left to it).
/// `progress` is called after each row with the counts so far of its table. Run it once every
/// instance has the new master key (with the old one as `TESSERA_MASTER_KEY_PREVIOUS`); then the
/// previous key may be removed. One [`Resealed`] per table.
pub async fn reseal(db: &PgPool, keys: &DerivedKeys, mut progress: impl FnMut(&Resealed)) -> Result<Vec<Resealed>> {
    let mut all = Vec::new();
    for table in &SEALED {
        let sealer = sealer_for(keys, table.what);
        let rows: Vec<(Vec<u8>, Vec<u8>, String)> = sqlx::query_as(table.select).fetch_all(db).await?;
        let mut done = Resealed { what: table.what, total: rows.len() as u64, ..Resealed::default() };
        for (aad, sealed, key) in rows {
            match sealer.open(&aad, &sealed) {
                Some(o) if o.under_previous => {
                    let fresh = sealer.seal(&aad, &o.plaintext);
                    sqlx::query(table.update).bind(&key).bind(&sealed).bind(&fresh).execute(db).await?;
                    done.resealed += 1;
                }
                Some(_) => done.already_current += 1,
                None => done.unreadable += 1,
            }
            progress(&done);
        }
        all.push(done);
    }
    Ok(all)
}

/// Labels hashes stored before key ids existed with the current key's id. Only when no previous
/// key is configured: then every hash that still verifies was made with the current key. In
/// batches, so a large table is never locked at once; safe to run on every instance at start.
pub async fn label_unversioned(db: &PgPool, keys: &DerivedKeys) -> Result<u64> {
    let mut labelled = 0;
    for (table, ring) in [("api_keys", &keys.api_key), ("refresh_tokens", &keys.refresh_token)] {
        if ring.previous().is_some() {
            continue;
        }
        let key_column = if table == "api_keys" { "id" } else { "token_hash" };
        loop {
            let n = sqlx::query(&format!(
                "UPDATE {table} SET hmac_key_id = $1 WHERE {key_column} IN
                   (SELECT {key_column} FROM {table} WHERE hmac_key_id IS NULL LIMIT 5000 FOR UPDATE SKIP LOCKED)"
            ))
            .bind(&ring.current().id()[..])
            .execute(db)
            .await?
            .rows_affected();
            labelled += n;
            if n == 0 {
                break;
            }
        }
    }
    Ok(labelled)
}
