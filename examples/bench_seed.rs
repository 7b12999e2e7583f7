//! Seeding for `scripts/bench`, through the public API only.
//!
//! `bench_seed setup URL ADMIN_SECRET OUTDIR [LOGINS] [OWNERS]` (defaults 128, 100)
//!   creates the benchmark clients and a user, logs in LOGINS times (password grant) and writes
//!   `OUTDIR/env` (shell-sourceable credentials and tokens), `OUTDIR/refresh_tokens.txt` (one
//!   refresh token per line, each the head of its own family) and `OUTDIR/owners.txt` (OWNERS
//!   clients holding `keys:write`, one `client_id secret` per line).
//! `bench_seed keys URL OUTDIR N [CONCURRENCY]`
//!   creates N API keys spread evenly over the owners (so no single owner's key count — and no
//!   per-owner limit check — grows with N) with CONCURRENCY requests in flight, and writes the
//!   plaintext keys to `OUTDIR/keys.txt`. Exits 3 when `/v1/keys` is not there (404/405).
//! `bench_seed import URL ADMIN_SECRET WORKDIR N OWNERS`
//!   generates N keys locally, writes their plaintexts to `WORKDIR/keys.txt` and imports them by
//!   SHA-256 (`POST /v1/admin/keys/import`) in batches of 1000, 4 requests in flight, each batch
//!   owned by one of the first OWNERS owners of `WORKDIR/owners.txt` (made by `setup`) in turn.
//!   Prints how long the import took.
// A test or benchmark that cannot go on should stop loudly, where it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::Write,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::{stream, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

type Res<T> = Result<T, String>;

fn usage() -> ! {
    eprintln!("usage: bench_seed setup URL ADMIN_SECRET OUTDIR [LOGINS] [OWNERS]\n       bench_seed keys URL OUTDIR N [CONCURRENCY]\n       bench_seed import URL ADMIN_SECRET WORKDIR N OWNERS\n       bench_seed limited URL OUTDIR LIMIT WINDOW");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let http = Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(60)).build().expect("client");
    let result = match args.first().map(String::as_str) {
        Some("setup") if args.len() >= 4 => {
            let logins = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(128);
            let owners = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(100);
            setup(&http, &args[1], &args[2], &args[3], logins, owners).await
        }
        Some("keys") if args.len() >= 4 => {
            let n: usize = args[3].parse().unwrap_or_else(|_| usage());
            let conc = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(32);
            keys(&http, &args[1], &args[2], n, conc).await
        }
        Some("import") if args.len() >= 6 => {
            let n: usize = args[4].parse().unwrap_or_else(|_| usage());
            let owners: usize = args[5].parse().unwrap_or_else(|_| usage());
            import(&http, &args[1], &args[2], &args[3], n, owners).await
        }
        Some("limited") if args.len() >= 5 => {
            let limit: i64 = args[3].parse().unwrap_or_else(|_| usage());
            let window: i64 = args[4].parse().unwrap_or_else(|_| usage());
            limited(&http, &args[1], &args[2], limit, window).await
        }
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("bench_seed: {e}");
        std::process::exit(if e.starts_with("NO_KEYS_ENDPOINT") { 3 } else { 1 });
    }
}

async fn cc_token(http: &Client, url: &str, id: &str, secret: &str) -> Res<String> {
    let res = http
        .post(format!("{url}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let body: Value = res.json().await.map_err(|e| e.to_string())?;
    if status != StatusCode::OK {
        return Err(format!("token for {id}: {status} {body}"));
    }
    body["access_token"].as_str().map(str::to_owned).ok_or_else(|| format!("no access_token: {body}"))
}

async fn post_json(http: &Client, url: &str, token: &str, body: &Value) -> Res<(StatusCode, Value)> {
    let res = http.post(url).bearer_auth(token).json(body).send().await.map_err(|e| e.to_string())?;
    let status = res.status();
    let text = res.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

async fn create_client(http: &Client, url: &str, admin: &str, body: Value) -> Res<(String, String)> {
    let (status, v) = post_json(http, &format!("{url}/v1/admin/clients"), admin, &body).await?;
    if status != StatusCode::CREATED {
        return Err(format!("create client: {status} {v}"));
    }
    let id = v["client_id"].as_str().ok_or("no client_id")?.to_owned();
    let secret = v["client_secret"].as_str().ok_or("no client_secret")?.to_owned();
    Ok((id, secret))
}

async fn setup(http: &Client, url: &str, admin_secret: &str, out: &str, logins: usize, owners: usize) -> Res<()> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let admin = cc_token(http, url, "admin", admin_secret).await?;

    // Token issuance: a plain client-credentials client.
    let (cc_id, cc_secret) = create_client(
        http,
        url,
        &admin,
        json!({"client_id": "bench-cc", "name": "bench cc", "grant_types": ["client_credentials"], "scopes": ["bench:read"]}),
    )
    .await?;
    // Verify and introspect: one client whose token carries keys:verify and which may introspect.
    let (svc_id, svc_secret) = create_client(
        http,
        url,
        &admin,
        json!({"client_id": "bench-svc", "name": "bench svc", "grant_types": ["client_credentials"],
               "scopes": ["keys:verify", "keys:read", "introspect"], "access_token_ttl": 7200}),
    )
    .await?;
    let svc_token = cc_token(http, url, &svc_id, &svc_secret).await?;
    // Refresh rotation: password + refresh_token.
    let (rf_id, rf_secret) = create_client(
        http,
        url,
        &admin,
        json!({"client_id": "bench-refresh", "name": "bench refresh", "grant_types": ["password", "refresh_token"],
               "scopes": ["bench:read"]}),
    )
    .await?;
    let user_pw = "bench-user-password-0123456789";
    let (status, v) = post_json(
        http,
        &format!("{url}/v1/admin/users"),
        &admin,
        &json!({"username": "bench-user", "password": user_pw, "scopes": ["bench:read"]}),
    )
    .await?;
    if status != StatusCode::CREATED {
        return Err(format!("create user: {status} {v}"));
    }

    // One family per login; Argon2 runs on the server, so few at a time.
    let started = Instant::now();
    let tokens: Vec<Res<String>> = stream::iter(0..logins)
        .map(|_| {
            let (http, rf_id, rf_secret) = (http.clone(), rf_id.clone(), rf_secret.clone());
            async move {
                let res = http
                    .post(format!("{url}/oauth/token"))
                    .basic_auth(&rf_id, Some(&rf_secret))
                    .form(&[("grant_type", "password"), ("username", "bench-user"), ("password", user_pw)])
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = res.status();
                let body: Value = res.json().await.map_err(|e| e.to_string())?;
                if status != StatusCode::OK {
                    return Err(format!("password grant: {status} {body}"));
                }
                body["refresh_token"].as_str().map(str::to_owned).ok_or_else(|| format!("no refresh_token: {body}"))
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut f = std::fs::File::create(format!("{out}/refresh_tokens.txt")).map_err(|e| e.to_string())?;
    for t in tokens {
        writeln!(f, "{}", t?).map_err(|e| e.to_string())?;
    }
    eprintln!("bench_seed: {logins} logins in {:.1} s", started.elapsed().as_secs_f64());

    // Key owners, a few at a time (each is one Argon2id hash on the server).
    let owners: Vec<Res<(String, String)>> = stream::iter(0..owners)
        .map(|i| {
            let (http, admin) = (http.clone(), admin.clone());
            async move {
                create_client(
                    &http,
                    url,
                    &admin,
                    json!({"client_id": format!("bench-owner-{i}"), "name": format!("bench owner {i}"),
                           "grant_types": ["client_credentials"], "scopes": ["keys:write", "keys:read"],
                           "access_token_ttl": 7200}),
                )
                .await
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut f = std::fs::File::create(format!("{out}/owners.txt")).map_err(|e| e.to_string())?;
    for o in owners {
        let (id, secret) = o?;
        writeln!(f, "{id} {secret}").map_err(|e| e.to_string())?;
    }

    let mut f = std::fs::File::create(format!("{out}/env")).map_err(|e| e.to_string())?;
    let basic =
        |id: &str, s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{id}:{s}"));
    let env = [
        ("CC_ID", cc_id.clone()),
        ("CC_BASIC", basic(&cc_id, &cc_secret)),
        ("SVC_ID", svc_id.clone()),
        ("SVC_BASIC", basic(&svc_id, &svc_secret)),
        ("SVC_TOKEN", svc_token),
        ("RF_ID", rf_id.clone()),
        ("RF_BASIC", basic(&rf_id, &rf_secret)),
        ("ADMIN_TOKEN", admin),
    ];
    for (k, v) in env {
        writeln!(f, "{k}={v}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn keys(http: &Client, url: &str, out: &str, n: usize, conc: usize) -> Res<()> {
    let owners_txt = std::fs::read_to_string(format!("{out}/owners.txt")).map_err(|e| e.to_string())?;
    let mut tokens = Vec::new();
    for line in owners_txt.lines() {
        let (id, secret) = line.split_once(' ').ok_or("bad owners.txt")?;
        tokens.push(cc_token(http, url, id, secret).await?);
    }
    if tokens.is_empty() {
        return Err("no owners".into());
    }
    let tokens = Arc::new(tokens);
    let body = |i: usize| json!({"name": format!("bench key {i}"), "scopes": ["bench:read"], "environment": "live"});

    // Probe once: is the endpoint there yet?
    let (status, v) = post_json(http, &format!("{url}/v1/keys"), &tokens[0], &body(0)).await?;
    if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
        return Err(format!("NO_KEYS_ENDPOINT: POST /v1/keys answered {status}"));
    }
    if status != StatusCode::CREATED {
        return Err(format!("create key: {status} {v}"));
    }
    let first = v["key"].as_str().ok_or("no key in response")?.to_owned();

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(1));
    let results: Vec<Res<String>> = stream::iter(1..n)
        .map(|i| {
            let (http, tokens, done) = (http.clone(), Arc::clone(&tokens), Arc::clone(&done));
            let b = body(i);
            async move {
                let token = &tokens[i % tokens.len()];
                let mut last = String::new();
                for attempt in 0..3 {
                    match post_json(&http, &format!("{url}/v1/keys"), token, &b).await {
                        Ok((StatusCode::CREATED, v)) => {
                            let k = done.fetch_add(1, Ordering::Relaxed) + 1;
                            if k % 20_000 == 0 {
                                eprintln!("bench_seed: {k} keys");
                            }
                            return v["key"].as_str().map(str::to_owned).ok_or_else(|| format!("no key: {v}"));
                        }
                        Ok((s, v)) => last = format!("{s} {v}"),
                        Err(e) => last = e,
                    }
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
                Err(format!("create key {i}: {last}"))
            }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{out}/keys.txt")).map_err(|e| e.to_string())?);
    writeln!(f, "{first}").map_err(|e| e.to_string())?;
    let mut failed = 0;
    for r in results {
        match r {
            Ok(k) => writeln!(f, "{k}").map_err(|e| e.to_string())?,
            Err(e) => {
                if failed < 5 {
                    eprintln!("bench_seed: {e}");
                }
                failed += 1;
            }
        }
    }
    f.flush().map_err(|e| e.to_string())?;
    eprintln!("bench_seed: {n} keys in {secs:.1} s ({:.0}/s), {failed} failed", n as f64 / secs);
    if failed > 0 {
        return Err(format!("{failed} key creations failed"));
    }
    Ok(())
}

/// One key with a rate limit (`limit` per `window` seconds), written to `OUTDIR/limited_key.txt`:
/// the rate-limited verify run measures what counting every verification in Redis costs.
async fn limited(http: &Client, url: &str, out: &str, limit: i64, window: i64) -> Res<()> {
    let owners_txt = std::fs::read_to_string(format!("{out}/owners.txt")).map_err(|e| e.to_string())?;
    let (id, secret) = owners_txt.lines().next().and_then(|l| l.split_once(' ')).ok_or("bad owners.txt")?;
    let token = cc_token(http, url, id, secret).await?;
    let body = json!({"name": "bench limited key", "scopes": ["bench:read"], "environment": "live",
                      "rate_limit": {"limit": limit, "window": window}});
    let (status, v) = post_json(http, &format!("{url}/v1/keys"), &token, &body).await?;
    if status != StatusCode::CREATED {
        return Err(format!("create limited key: {status} {v}"));
    }
    let key = v["key"].as_str().ok_or("no key in response")?;
    std::fs::write(format!("{out}/limited_key.txt"), format!("{key}\n")).map_err(|e| e.to_string())
}

/// Keys per import call (the endpoint's maximum) and calls in flight.
const IMPORT_BATCH: usize = 1000;
const IMPORT_IN_FLIGHT: usize = 4;

async fn import(http: &Client, url: &str, admin_secret: &str, out: &str, n: usize, owners: usize) -> Res<()> {
    use tessera::apikeys::{ApiKeySecret, Environment};
    let owners_txt = std::fs::read_to_string(format!("{out}/owners.txt")).map_err(|e| e.to_string())?;
    let owners: Vec<String> =
        owners_txt.lines().filter_map(|l| l.split(' ').next()).take(owners.max(1)).map(str::to_owned).collect();
    if owners.is_empty() {
        return Err("no owners in owners.txt (run setup first)".into());
    }
    let admin = cc_token(http, url, "admin", admin_secret).await?;
    let started = Instant::now();
    let keys: Vec<String> = (0..n).map(|_| ApiKeySecret::generate(Environment::Live).expose().to_owned()).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{out}/keys.txt")).map_err(|e| e.to_string())?);
    for k in &keys {
        writeln!(f, "{k}").map_err(|e| e.to_string())?;
    }
    f.flush().map_err(|e| e.to_string())?;
    let generated = started.elapsed().as_secs_f64();
    let keys = Arc::new(keys);
    let owners = Arc::new(owners);
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let batches = n.div_ceil(IMPORT_BATCH);
    let results: Vec<Res<()>> = stream::iter(0..batches)
        .map(|b| {
            let (http, admin, keys, owners, done) =
                (http.clone(), admin.clone(), Arc::clone(&keys), Arc::clone(&owners), Arc::clone(&done));
            async move {
                let owner = &owners[b % owners.len()];
                let slice = &keys[b * IMPORT_BATCH..((b + 1) * IMPORT_BATCH).min(keys.len())];
                let entries: Vec<Value> = slice
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, k.as_bytes()));
                        json!({"hash": hash, "owner": owner, "name": format!("imported {}", b * IMPORT_BATCH + i),
                               "scopes": ["bench:read"], "environment": "live", "start": &k[..12]})
                    })
                    .collect();
                let body = json!({"keys": entries});
                let (status, v) = post_json(&http, &format!("{url}/v1/admin/keys/import"), &admin, &body).await?;
                if status != StatusCode::CREATED {
                    return Err(format!("import batch {b}: {status} {v}"));
                }
                let k = done.fetch_add(slice.len(), Ordering::Relaxed) + slice.len();
                if k % 100_000 < IMPORT_BATCH {
                    eprintln!("bench_seed: {k} keys imported");
                }
                Ok(())
            }
        })
        .buffer_unordered(IMPORT_IN_FLIGHT)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for e in failed.iter().take(5) {
        eprintln!("bench_seed: {e}");
    }
    eprintln!(
        "bench_seed: {n} keys generated in {generated:.1} s, imported in {secs:.1} s ({:.0}/s) over {} owners, {} batches failed",
        n as f64 / secs,
        owners.len(),
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} import batches failed", failed.len()))
    }
}
