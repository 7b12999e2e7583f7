//! `tessera admin webhooks list|create|delete`.

use super::*;

async fn admin_cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("admin")
        .args(args)
        .env("TESSERA_URL", &app.addr)
        .env("TESSERA_CLIENT_ID", "admin")
        .env("TESSERA_CLIENT_SECRET", ADMIN_SECRET)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn tessera_admin_creates_lists_and_deletes_webhooks() {
    let app = spawn_private_ok().await;
    let (code, out, err) = admin_cli(
        &app,
        &["--json", "webhooks", "create", "http://127.0.0.1:9/hook", "--events", "api_key.revoked api_key.leaked"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["events"], json!(["api_key.revoked", "api_key.leaked"]));
    let id = created["id"].as_str().unwrap();

    let (code, out, _) = admin_cli(&app, &["webhooks", "list"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(id) && !out.contains("whsec_"), "{out}");

    let (code, _, err) =
        admin_cli(&app, &["webhooks", "create", "ftp://example.com/", "--events", "api_key.revoked"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("url"), "{err}");

    let (code, _, err) = admin_cli(&app, &["webhooks", "delete", id]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = admin_cli(&app, &["--json", "webhooks", "list"]).await;
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
}
