//! `tessera admin keys import --file keys.jsonl`: one import entry (`{"hash", "owner", "name",
//! "scopes", "environment", …}`, see `POST /v1/admin/keys/import`) per line, sent in batches of
//! 1 000. Each batch is all or nothing; a failed batch stops the command, naming the lines it held
//! and how many keys earlier batches imported.

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};

use super::{client::Session, AdminError};

/// Entries per call (the endpoint's maximum).
const BATCH: usize = 1000;

/// Reads `file` and imports its entries; the answer is `{"imported": n, "batches": b}`.
pub(super) async fn run(s: &Session, file: &Path) -> Result<Value, AdminError> {
    let shown = file.display();
    let text = std::fs::read_to_string(file).map_err(|e| AdminError::Usage(format!("{shown}: {e}")))?;
    let mut entries: Vec<(usize, Value)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| AdminError::Usage(format!("{shown}:{}: not a JSON object: {e}", n + 1)))?;
        entries.push((n + 1, v));
    }
    if entries.is_empty() {
        return Err(AdminError::Usage(format!("{shown}: no entries")));
    }
    let (mut imported, mut batches) = (0u64, 0u64);
    for chunk in entries.chunks(BATCH) {
        let (first, last) = (chunk[0].0, chunk[chunk.len() - 1].0);
        let body = json!({"keys": chunk.iter().map(|(_, v)| v).collect::<Vec<_>>()});
        let answer = s.call(Method::POST, "/v1/admin/keys/import", Some(&body)).await.map_err(|e| {
            let why = format!("lines {first}-{last} not imported (keys[i] is the i-th entry of these lines; {imported} keys imported before): {e}");
            match e {
                AdminError::Usage(_) => AdminError::Usage(why),
                AdminError::Auth(_) => AdminError::Auth(why),
                AdminError::NotFound(_) => AdminError::NotFound(why),
                AdminError::Refused(_) => AdminError::Refused(why),
                AdminError::Unavailable(_) => AdminError::Unavailable(why),
            }
        })?;
        imported += answer["imported"].as_u64().unwrap_or_default();
        batches += 1;
    }
    Ok(json!({"imported": imported, "batches": batches}))
}
