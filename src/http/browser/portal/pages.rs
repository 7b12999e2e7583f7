//! The portal's pages, rendered on the server with maud (escaping by default). No inline script
//! or style: the only script is `/assets/portal.js` (the "Copy" button), so the pages work under
//! the contract's CSP.

pub(super) use super::format::when;
use maud::{html, Markup, DOCTYPE};

use crate::{
    apikeys::{ApiKeyView, Status},
    audit::AuditEntry,
    portal::PortalUser,
    usage::anomalies::Anomaly,
};

/// What every signed-in page needs: who, their CSRF token, and the path prefix of the issuer.
pub struct Frame<'a> {
    /// The service's display name.
    pub service: &'a str,
    /// The issuer's path (`""` or `/tenant`), so links work under a path.
    pub base: &'a str,
    /// The signed-in user.
    pub user: &'a PortalUser,
    /// The session's CSRF token.
    pub csrf: &'a str,
}

/// The signed-in page around `body`: header, navigation, "Sign out".
pub(super) fn layout(f: &Frame<'_>, title: &str, body: Markup) -> String {
    let b = f.base;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · " (f.service) " developer portal" }
                link rel="stylesheet" href={(b) "/assets/portal.css"};
                script src={(b) "/assets/portal.js"} defer {}
            }
            body class="portal" {
                header class="top" {
                    a class="brand" href={(b) "/portal"} { span class="mark" aria-hidden="true" { (initial(f.service)) } (f.service) " portal" }
                    nav aria-label="Main" {
                        a href={(b) "/portal"} { "Keys" }
                        @if f.user.admin {
                            a href={(b) "/portal/admin/clients"} { "Clients" }
                            a href={(b) "/portal/admin/users"} { "Users" }
                            a href={(b) "/portal/admin/signing-keys"} { "Signing keys" }
                            a href={(b) "/portal/admin/anomalies"} { "Anomalies" }
                            a href={(b) "/portal/admin/audit"} { "Audit log" }
                            a href={(b) "/portal/admin/webhooks"} { "Webhooks" }
                        }
                    }
                    div class="who" {
                        span class="user" { (f.user.username) @if f.user.admin { " " span class="badge" { "admin" } } }
                        form method="post" action={(b) "/portal/sign-out"} {
                            input type="hidden" name="csrf_token" value=(f.csrf);
                            button type="submit" class="ghost" { "Sign out" }
                        }
                    }
                }
                main class="wrap" { (body) }
            }
        }
    }
    .into_string()
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Disabled => "disabled",
        Status::Rotating => "rotating",
        Status::Expired => "expired",
        Status::Revoked => "revoked",
    }
}

fn initial(service: &str) -> String {
    service.chars().next().map(|c| c.to_uppercase().collect()).unwrap_or_default()
}

/// The hidden CSRF field of every form.
pub(super) fn csrf(f: &Frame<'_>) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(f.csrf); }
}

fn limits(k: &ApiKeyView) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &k.rate_limit {
        parts.push(format!("{} / {} s", r.limit, r.window));
    }
    if let Some(c) = k.credits {
        parts.push(format!("{c} credits"));
    }
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(", ")
    }
}

/// The key table and the "Create key" form.
pub fn keys(f: &Frame<'_>, keys: &[ApiKeyView], notice: Option<&str>) -> String {
    let b = f.base;
    layout(
        f,
        "API keys",
        html! {
            h1 { "API keys" }
            @if let Some(n) = notice { p class="notice" role="status" { (n) } }
            section class="panel" aria-labelledby="create-heading" {
                h2 id="create-heading" { "Create a key" }
                form method="post" action={(b) "/portal/keys"} class="inline-form" {
                    (csrf(f))
                    div class="field" {
                        label for="name" { "Name" }
                        input id="name" name="name" type="text" required maxlength="200" placeholder="checkout-service production";
                    }
                    div class="field" {
                        label for="scopes" { "Scopes" }
                        input id="scopes" name="scopes" type="text" placeholder="payments:read payments:write"
                            aria-describedby="scopes-hint";
                        small id="scopes-hint" { "Separated by spaces or commas." }
                    }
                    div class="field" {
                        label for="environment" { "Environment" }
                        select id="environment" name="environment" {
                            option value="live" { "live" }
                            option value="test" { "test" }
                        }
                    }
                    button type="submit" { "Create key" }
                }
            }
            section aria-labelledby="keys-heading" {
                h2 id="keys-heading" { "Your keys " span class="count" { "(" (keys.len()) ")" } }
                @if keys.is_empty() {
                    p class="muted" { "You have no keys yet." }
                } @else {
                    div class="table-wrap" {
                        table class="keys" {
                            thead { tr {
                                th scope="col" { "Name" } th scope="col" { "Start" } th scope="col" { "Environment" }
                                th scope="col" { "Scopes" } th scope="col" { "Created" } th scope="col" { "Last used" }
                                th scope="col" { "Expires" } th scope="col" { "Status" } th scope="col" { "Limits" }
                            } }
                            tbody {
                                @for k in keys {
                                    tr {
                                        th scope="row" { a href={(b) "/portal/keys/" (k.id)} { (k.name) } }
                                        td { code { (k.start) "…" } }
                                        td { (k.environment) }
                                        td { (k.scopes.join(" ")) }
                                        td { (when(Some(k.created_at))) }
                                        td { (when(k.last_used_at)) }
                                        td { (when(k.expires_at)) }
                                        td { span class={"status s-" (status(k.status))} { (status(k.status)) } }
                                        td { (limits(k)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The secret of a key just created or rotated, shown this once.
pub fn secret(f: &Frame<'_>, key: &str, view: &ApiKeyView, rotated: bool) -> String {
    let b = f.base;
    layout(
        f,
        "Your new key",
        html! {
            h1 { @if rotated { "Key rotated" } @else { "Key created" } }
            section class="panel" {
                p class="warning" role="alert" {
                    strong { "Copy this key now. " }
                    "It is shown only this once: Tessera stores only a hash of it and cannot show it again."
                }
                label for="secret" { "API key for " (view.name) }
                div class="copy-row" {
                    input id="secret" type="text" readonly value=(key) spellcheck="false" autocomplete="off";
                    button type="button" class="copy" data-copy="secret" { "Copy" }
                }
                p class="muted" id="copy-status" role="status" aria-live="polite" {}
                p { a class="button" href={(b) "/portal"} { "Done, back to my keys" } }
            }
        },
    )
}

/// A plain message page (a refusal, a missing key).
pub fn message(f: &Frame<'_>, heading: &str, detail: &str) -> String {
    let b = f.base;
    layout(
        f,
        heading,
        html! {
            h1 { (heading) }
            p class="notice error" role="alert" { (detail) }
            p { a href={(b) "/portal"} { "Back to my keys" } }
        },
    )
}

/// The revocation confirmation step.
pub fn confirm_revoke(f: &Frame<'_>, key: &ApiKeyView) -> String {
    let b = f.base;
    layout(
        f,
        "Revoke key",
        html! {
            h1 { "Revoke " (key.name) "?" }
            section class="panel danger" {
                p { "Every verification of " code { (key.start) "…" } " will be refused from now on, on every instance. This cannot be undone." }
                form method="post" action={(b) "/portal/keys/" (key.id) "/revoke"} {
                    (csrf(f))
                    div class="field" {
                        label for="reason" { "Reason (optional)" }
                        input id="reason" name="reason" type="text" maxlength="500";
                    }
                    div class="actions" {
                        button type="submit" class="danger" { "Revoke" }
                        a class="button secondary" href={(b) "/portal/keys/" (key.id)} { "Cancel" }
                    }
                }
            }
        },
    )
}

/// One key: details, edit, rotate, disable, revoke, usage, anomalies and audit trail.
pub fn key(
    f: &Frame<'_>,
    k: &ApiKeyView,
    usage: &super::chart::KeyUsage,
    anomalies: &[Anomaly],
    audit: &[AuditEntry],
) -> String {
    let b = f.base;
    let live = k.revoked_at.is_none();
    layout(
        f,
        &k.name,
        html! {
            p class="crumbs" { a href={(b) "/portal"} { "Keys" } " / " (k.name) }
            h1 { (k.name) " " span class={"status s-" (status(k.status))} { (status(k.status)) } }
            dl class="facts" {
                dt { "Start" } dd { code { (k.start) "…" } }
                dt { "Environment" } dd { (k.environment) }
                dt { "Scopes" } dd { (k.scopes.join(" ")) }
                dt { "Created" } dd { (when(Some(k.created_at))) }
                // From the usage report, read after this instance's counts were flushed, so it
                // agrees with the chart below.
                dt { "Last used" } dd { (when(usage.hourly.last_used_at.or(k.last_used_at))) }
                dt { "Expires" } dd { (when(k.expires_at)) }
                dt { "Limits" } dd { (limits(k)) }
            }
            @if live {
                div class="grid" {
                    section class="panel" aria-labelledby="edit-heading" {
                        h2 id="edit-heading" { "Edit" }
                        form method="post" action={(b) "/portal/keys/" (k.id) "/edit"} {
                            (csrf(f))
                            div class="field" { label for="name" { "Name" } input id="name" name="name" type="text" required maxlength="200" value=(k.name); }
                            div class="field" { label for="scopes" { "Scopes" } input id="scopes" name="scopes" type="text" value=(k.scopes.join(" ")); }
                            button type="submit" { "Save" }
                        }
                    }
                    section class="panel" aria-labelledby="rotate-heading" {
                        h2 id="rotate-heading" { "Rotate" }
                        form method="post" action={(b) "/portal/keys/" (k.id) "/rotate"} {
                            (csrf(f))
                            div class="field" {
                                label for="grace" { "Old key stays valid for" }
                                select id="grace" name="grace_period" {
                                    option value="0" { "No grace: stop it now" }
                                    option value="3600" { "1 hour" }
                                    option value="86400" selected { "24 hours" }
                                    option value="604800" { "7 days" }
                                }
                            }
                            button type="submit" { "Rotate" }
                        }
                    }
                    section class="panel" aria-labelledby="state-heading" {
                        h2 id="state-heading" { "Status" }
                        form method="post" action={(b) "/portal/keys/" (k.id) (if k.enabled { "/disable" } else { "/enable" })} {
                            (csrf(f))
                            button type="submit" class="secondary" { @if k.enabled { "Disable" } @else { "Enable" } }
                        }
                        a class="button danger" href={(b) "/portal/keys/" (k.id) "/revoke"} { "Revoke…" }
                    }
                }
            }
            section aria-labelledby="usage-heading" {
                h2 id="usage-heading" { "Usage" }
                div class="charts" {
                    (super::chart::chart("Last 24 hours, per hour", &usage.hours, &usage.hourly))
                    (super::chart::chart("Last 30 days, per day", &usage.days, &usage.daily))
                }
            }
            section aria-labelledby="anomalies-heading" {
                h2 id="anomalies-heading" { "Anomalies" }
                @if anomalies.is_empty() { p class="muted" { "None detected." } } @else {
                    ul class="events" { @for a in anomalies { li { strong { (a.kind) } " · " (when(Some(a.detected_at))) " · " code { (a.details.to_string()) } } } }
                }
            }
            section aria-labelledby="audit-heading" {
                h2 id="audit-heading" { "Audit trail" }
                @if audit.is_empty() { p class="muted" { "No changes recorded." } } @else {
                    div class="table-wrap" { table {
                        thead { tr { th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "By" } th scope="col" { "From" } } }
                        tbody { @for e in audit { tr { td { (when(Some(e.at))) } td { (e.action) } td { code { (e.actor) } } td { (e.ip.as_deref().unwrap_or("—")) } } } }
                    } }
                }
            }
        },
    )
}

/// The page after signing out.
pub fn signed_out(service: &str, base: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Signed out · " (service) " developer portal" }
                link rel="stylesheet" href={(base) "/assets/portal.css"};
            }
            body class="portal center" {
                main class="panel narrow" {
                    h1 { "You are signed out" }
                    p { "Your portal session and your " (service) " sign-in have ended." }
                    p { a class="button" href={(base) "/portal"} { "Sign in again" } }
                }
            }
        }
    }
    .into_string()
}
