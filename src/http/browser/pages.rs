//! Tessera's own HTML pages: the sign-in form, the error page and the signed-out page. Rendered
//! with maud (escaping by default), one stylesheet served by Tessera itself, no script and no
//! external asset, so the pages work under `default-src 'self'` and offline.

use maud::{html, Markup, DOCTYPE};

use crate::signin::{AuthorizeParams, Form, FormError};

/// The stylesheet, relative to a page under `/oauth/` (so an issuer with a path serves it under
/// that path too).
const STYLESHEET: &str = "../assets/tessera.css";

fn layout(service: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · " (service) }
                link rel="stylesheet" href=(STYLESHEET);
            }
            body {
                main class="card" {
                    p class="brand" aria-hidden="true" { span class="mark" { (initial(service)) } (service) }
                    (body)
                }
                p class="foot" { "Protected by " (service) }
            }
        }
    }
}

fn initial(service: &str) -> String {
    service.chars().next().map(|c| c.to_uppercase().collect()).unwrap_or_default()
}

fn hidden(name: &str, value: Option<&String>) -> Markup {
    html! {
        @if let Some(v) = value {
            input type="hidden" name=(name) value=(v);
        }
    }
}

fn message(error: FormError) -> &'static str {
    match error {
        FormError::Missing => "Enter your username and password.",
        FormError::WrongCredentials => "Incorrect username or password.",
        FormError::Expired => "This sign-in form has expired. Please sign in again.",
        FormError::TooManyAttempts(_) => "Too many sign-in attempts. Please wait a few minutes and try again.",
        FormError::Busy(_) => "The service is busy. Please try again in a moment.",
    }
}

/// The sign-in page: a form posting back to `/oauth/authorize` with the request in hidden fields
/// and the CSRF token.
pub fn sign_in(service: &str, form: &Form, csrf_token: &str) -> String {
    let p: &AuthorizeParams = &form.params;
    layout(
        service,
        "Sign in",
        html! {
            h1 { "Sign in" }
            p class="lead" { "to continue to " strong { (form.client_name) } }
            @if let Some(e) = form.error {
                p class="error" role="alert" id="form-error" { (message(e)) }
            }
            form method="post" action="authorize" novalidate {
                input type="hidden" name="csrf_token" value=(csrf_token);
                (hidden("response_type", p.response_type.as_ref()))
                (hidden("client_id", p.client_id.as_ref()))
                (hidden("redirect_uri", p.redirect_uri.as_ref()))
                (hidden("scope", p.scope.as_ref()))
                (hidden("state", p.state.as_ref()))
                (hidden("code_challenge", p.code_challenge.as_ref()))
                (hidden("code_challenge_method", p.code_challenge_method.as_ref()))
                (hidden("nonce", p.nonce.as_ref()))
                (hidden("prompt", p.prompt.as_ref()))
                (hidden("max_age", p.max_age.as_ref()))
                div class="field" {
                    label for="username" { "Username" }
                    input id="username" name="username" type="text" autocomplete="username" autocapitalize="none"
                        spellcheck="false" required autofocus[form.username.is_empty()] value=(form.username)
                        aria-describedby=[form.error.map(|_| "form-error")];
                }
                div class="field" {
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="current-password" required
                        autofocus[!form.username.is_empty()];
                }
                button type="submit" { "Sign in" }
            }
        },
    )
    .into_string()
}

/// An error page for a request that cannot be sent back to the application.
pub fn error(service: &str, heading: &str, detail: &str) -> String {
    layout(
        service,
        heading,
        html! {
            h1 { (heading) }
            p class="lead" { (detail) }
            p { "Go back to the application you came from and try again. If this keeps happening, contact its developers." }
        },
    )
    .into_string()
}

/// The page shown after signing out when there is no application to return to.
pub fn signed_out(service: &str, redirect_refused: bool) -> String {
    layout(
        service,
        "Signed out",
        html! {
            h1 { "You are signed out" }
            p class="lead" { "Your " (service) " session has ended." }
            @if redirect_refused {
                p { "The application asked to send you to an address that is not registered for it, so you stay here." }
            }
            p { "You can close this window." }
        },
    )
    .into_string()
}

/// The stylesheet of every page: system fonts, one accent colour, a dark scheme, large targets.
pub const CSS: &str = r#":root {
  color-scheme: light dark;
  --bg: #f4f5f7; --card: #ffffff; --text: #1b1f24; --muted: #5b6470; --line: #d5d9df;
  --accent: #2f5bd3; --accent-hover: #2449b0; --focus: #9bb5ff; --error-bg: #fdecec; --error: #a61b1b;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1216; --card: #181c22; --text: #e7eaee; --muted: #9aa3ad; --line: #323943;
    --accent: #6d8ef5; --accent-hover: #8aa4f7; --focus: #3c5bb8; --error-bg: #3a1d1f; --error: #ffb4b4;
  }
}
* { box-sizing: border-box; }
html { font-size: 16px; }
body {
  margin: 0; min-height: 100vh; display: flex; flex-direction: column; align-items: center; justify-content: center;
  padding: 24px 16px; background: var(--bg); color: var(--text);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; line-height: 1.5;
}
.card {
  width: 100%; max-width: 400px; background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 32px 28px; box-shadow: 0 1px 2px rgba(0,0,0,.04), 0 8px 24px rgba(0,0,0,.06);
}
.brand { display: flex; align-items: center; gap: 10px; margin: 0 0 24px; font-weight: 600; font-size: 1.05rem; }
.mark {
  display: inline-flex; align-items: center; justify-content: center; width: 32px; height: 32px; border-radius: 8px;
  background: var(--accent); color: #fff; font-weight: 700;
}
h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 4px; font-weight: 650; }
.lead { margin: 0 0 24px; color: var(--muted); overflow-wrap: anywhere; }
.lead strong { color: var(--text); font-weight: 600; }
.field { margin-bottom: 16px; }
label { display: block; font-weight: 550; font-size: .9rem; margin-bottom: 6px; }
input[type=text], input[type=password] {
  width: 100%; padding: 10px 12px; font: inherit; color: var(--text); background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; min-height: 44px;
}
input:focus-visible, button:focus-visible { outline: 3px solid var(--focus); outline-offset: 1px; border-color: var(--accent); }
button {
  width: 100%; min-height: 44px; margin-top: 8px; padding: 10px 16px; font: inherit; font-weight: 600; color: #fff;
  background: var(--accent); border: 0; border-radius: 8px; cursor: pointer;
}
button:hover { background: var(--accent-hover); }
.error {
  margin: 0 0 20px; padding: 10px 12px; border-radius: 8px; background: var(--error-bg); color: var(--error);
  font-size: .95rem;
}
.foot { margin: 20px 0 0; color: var(--muted); font-size: .8rem; }
@media (max-width: 440px) {
  body { justify-content: flex-start; padding-top: 32px; }
  .card { padding: 24px 18px; border-radius: 10px; }
}
"#;
