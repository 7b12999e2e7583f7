//! Revocation latency across instances, for `scripts/bench`.
//!
//! `bench_revocation A_URL B_URL ADMIN_SECRET [N]` — two Tessera instances on the same Postgres
//! and Redis. For each of N rounds: obtain a credential on A, check that B accepts it (which also
//! warms B's caches, the worst case), revoke it on A, then poll B until B refuses it.
//! Kinds: `access_token` (`/oauth/revoke` on A, `/oauth/introspect` on B) and, when A serves
//! `/v1/keys`, `api_key` (`POST /v1/keys/{id}/revoke` on A, `POST /v1/keys/verify` on B).
//! Latency is measured from just before the revoke request is sent to the first refusal seen on B
//! (`_ms`), and from the revoke's 200 to that refusal (`_after_ack_ms`). A round that B still
//! accepts after 5 s counts as a timeout.
// A test or benchmark that cannot go on should stop loudly, where it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

type Res<T> = Result<T, String>;

const GIVE_UP: Duration = Duration::from_secs(5);

struct Ctx {
    http: Client,
    a: String,
    b: String,
    id: String,
    secret: String,
    token: String,
}

async fn form(ctx: &Ctx, url: String, form: &[(&str, &str)]) -> Res<(StatusCode, Value)> {
    let res =
        ctx.http.post(url).basic_auth(&ctx.id, Some(&ctx.secret)).form(form).send().await.map_err(|e| e.to_string())?;
    let s = res.status();
    Ok((s, res.json().await.map_err(|e| e.to_string())?))
}

async fn json_post(ctx: &Ctx, url: String, body: &Value) -> Res<(StatusCode, Value)> {
    let res = ctx.http.post(url).bearer_auth(&ctx.token).json(body).send().await.map_err(|e| e.to_string())?;
    let s = res.status();
    let text = res.text().await.map_err(|e| e.to_string())?;
    Ok((s, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// One access-token round: (from request start, from ack), or None on timeout.
async fn access_token_round(ctx: &Ctx) -> Res<Option<(f64, f64)>> {
    let (s, v) = form(ctx, format!("{}/oauth/token", ctx.a), &[("grant_type", "client_credentials")]).await?;
    if s != StatusCode::OK {
        return Err(format!("token on A: {s} {v}"));
    }
    let token = v["access_token"].as_str().ok_or("no access_token")?.to_owned();
    let introspect_url = format!("{}/oauth/introspect", ctx.b);
    let introspect_form = [("token", token.as_str())];
    let introspect_b = || form(ctx, introspect_url.clone(), &introspect_form);
    let (s, v) = introspect_b().await?;
    if s != StatusCode::OK || v["active"] != json!(true) {
        return Err(format!("B does not accept a fresh token: {s} {v}"));
    }
    let t0 = Instant::now();
    let (s, v) = form(ctx, format!("{}/oauth/revoke", ctx.a), &[("token", token.as_str())]).await?;
    let acked = Instant::now();
    if s != StatusCode::OK {
        return Err(format!("revoke on A: {s} {v}"));
    }
    loop {
        let (s, v) = introspect_b().await?;
        if s != StatusCode::OK {
            return Err(format!("introspect on B: {s} {v}"));
        }
        if v["active"] == json!(false) {
            let now = Instant::now();
            return Ok(Some(((now - t0).as_secs_f64() * 1e3, (now - acked).as_secs_f64() * 1e3)));
        }
        if t0.elapsed() > GIVE_UP {
            return Ok(None);
        }
    }
}

/// One API-key round.
async fn api_key_round(ctx: &Ctx, i: usize) -> Res<Option<(f64, f64)>> {
    let (s, v) = json_post(
        ctx,
        format!("{}/v1/keys", ctx.a),
        &json!({"name": format!("revocation bench {i}"), "scopes": ["bench:read"], "environment": "live"}),
    )
    .await?;
    if s != StatusCode::CREATED {
        return Err(format!("create key on A: {s} {v}"));
    }
    let key = v["key"].as_str().ok_or("no key")?.to_owned();
    let id = v["id"].as_str().ok_or("no id")?.to_owned();
    let verify_url = format!("{}/v1/keys/verify", ctx.b);
    let verify_body = json!({"key": key});
    let verify_b = || json_post(ctx, verify_url.clone(), &verify_body);
    let (s, v) = verify_b().await?;
    if s != StatusCode::OK || v["valid"] != json!(true) {
        return Err(format!("B does not accept a fresh key: {s} {v}"));
    }
    let t0 = Instant::now();
    let (s, v) = json_post(ctx, format!("{}/v1/keys/{id}/revoke", ctx.a), &json!({"reason": "bench"})).await?;
    let acked = Instant::now();
    if !s.is_success() {
        return Err(format!("revoke key on A: {s} {v}"));
    }
    loop {
        let (s, v) = verify_b().await?;
        if s != StatusCode::OK {
            return Err(format!("verify on B: {s} {v}"));
        }
        if v["valid"] == json!(false) {
            let now = Instant::now();
            return Ok(Some(((now - t0).as_secs_f64() * 1e3, (now - acked).as_secs_f64() * 1e3)));
        }
        if t0.elapsed() > GIVE_UP {
            return Ok(None);
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(kind: &str, results: &[Option<(f64, f64)>]) {
    let mut from_start: Vec<f64> = results.iter().flatten().map(|r| r.0).collect();
    let mut from_ack: Vec<f64> = results.iter().flatten().map(|r| r.1).collect();
    from_start.sort_by(f64::total_cmp);
    from_ack.sort_by(f64::total_cmp);
    let timeouts = results.iter().filter(|r| r.is_none()).count();
    // Timeouts count as the worst latency in the percentiles.
    from_start.extend(std::iter::repeat_n(GIVE_UP.as_secs_f64() * 1e3, timeouts));
    from_ack.extend(std::iter::repeat_n(GIVE_UP.as_secs_f64() * 1e3, timeouts));
    println!("rev_{kind}_n={}", results.len());
    println!("rev_{kind}_timeouts={timeouts}");
    for (name, v) in [("ms", &from_start), ("after_ack_ms", &from_ack)] {
        println!("rev_{kind}_p50_{name}={:.2}", pct(v, 50.0));
        println!("rev_{kind}_p99_{name}={:.2}", pct(v, 99.0));
        println!("rev_{kind}_max_{name}={:.2}", v.last().copied().unwrap_or(f64::NAN));
    }
}

async fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: bench_revocation A_URL B_URL ADMIN_SECRET [N]".into());
    }
    let (a, b, admin_secret) = (args[0].clone(), args[1].clone(), args[2].clone());
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let http = Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;

    // A client of our own, created on A.
    let admin = {
        let ctx = Ctx {
            http: http.clone(),
            a: a.clone(),
            b: b.clone(),
            id: "admin".into(),
            secret: admin_secret,
            token: String::new(),
        };
        let (s, v) = form(&ctx, format!("{a}/oauth/token"), &[("grant_type", "client_credentials")]).await?;
        if s != StatusCode::OK {
            return Err(format!("admin token: {s} {v}"));
        }
        v["access_token"].as_str().ok_or("no admin token")?.to_owned()
    };
    let res = http
        .post(format!("{a}/v1/admin/clients"))
        .bearer_auth(&admin)
        .json(&json!({"name": "revocation bench", "grant_types": ["client_credentials"],
                      "scopes": ["introspect", "keys:write", "keys:verify"], "access_token_ttl": 3600}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if res.status() != StatusCode::CREATED {
        return Err(format!("create client: {}", res.status()));
    }
    let c: Value = res.json().await.map_err(|e| e.to_string())?;
    let mut ctx = Ctx {
        http,
        a: a.clone(),
        b,
        id: c["client_id"].as_str().ok_or("no client_id")?.to_owned(),
        secret: c["client_secret"].as_str().ok_or("no client_secret")?.to_owned(),
        token: String::new(),
    };
    let (s, v) = form(&ctx, format!("{a}/oauth/token"), &[("grant_type", "client_credentials")]).await?;
    if s != StatusCode::OK {
        return Err(format!("token: {s} {v}"));
    }
    ctx.token = v["access_token"].as_str().ok_or("no token")?.to_owned();

    let mut results = Vec::with_capacity(n);
    for _ in 0..n {
        results.push(access_token_round(&ctx).await?);
    }
    report("access_token", &results);

    // API keys, when the endpoint exists.
    let probe = ctx.http.get(format!("{a}/v1/keys")).bearer_auth(&ctx.token).send().await.map_err(|e| e.to_string())?;
    if probe.status() == StatusCode::NOT_FOUND || probe.status() == StatusCode::METHOD_NOT_ALLOWED {
        println!("rev_api_key_n=0");
        eprintln!("bench_revocation: /v1/keys not served; api_key revocation not measured");
        return Ok(());
    }
    let mut results = Vec::with_capacity(n);
    for i in 0..n {
        results.push(api_key_round(&ctx, i).await?);
    }
    report("api_key", &results);
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("bench_revocation: {e}");
        std::process::exit(1);
    }
}
