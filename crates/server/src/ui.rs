//! The web UI under `/ui/`: HTML rendered on the server (maud), the map drawn as SVG on the
//! server, and a few lines of inline JavaScript for the live deny log. No external assets.
//!
//! Every page except the map asks the API *in process*: the request goes through the same
//! router the listener serves, carrying the caller's token as a bearer token, and the page
//! presents the JSON that comes back. So the UI answers what the API answers (the same trace,
//! flow-log query, `deps check` and diff code), and a reader can do in the UI exactly what a
//! reader can do over the API — the admin listener and role checks are the API's own.
//!
//! The token travels in a cookie set by `/ui/login` (`HttpOnly`, so page scripts cannot read
//! it; `SameSite=Strict`, so another site cannot make the browser use it; `Path=/ui`, so the
//! API proper still wants the `Authorization` header; `Secure` when the server speaks TLS, so
//! the browser never sends it over plain HTTP). The UI routes also take that header.

mod map;
mod pages;

use crate::auth::{Caller, Role};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// The cookie holding the token.
pub const COOKIE: &str = "palisade_token";

/// Largest API answer a page reads (a page of flow records, a reachability report).
const ANSWER_LIMIT: usize = 64 << 20;

#[derive(Clone)]
pub(crate) struct Ui {
    app: Arc<AppState>,
    /// The API as the listener serves it (its authentication and admin-listener checks).
    api: Router,
}

/// Who is looking: the verified caller and the token to ask the API with.
#[derive(Clone)]
pub(crate) struct Session {
    caller: Caller,
    token: String,
}

/// The UI's routes. `api` is the listener's API router, which pages call in process.
pub fn router(app: Arc<AppState>, api: Router) -> Router {
    let ui = Ui { app, api };
    let pages = Router::new()
        .route("/ui/", get(|| async { Redirect::to("/ui/map") }))
        .route("/ui/map", get(pages::map))
        .route("/ui/trace", get(pages::trace))
        .route("/ui/logs", get(pages::logs))
        .route("/ui/logs/stream", get(pages::stream))
        .route("/ui/learn", get(pages::learn))
        .route("/ui/deps", get(pages::deps))
        .route("/ui/versions", get(pages::versions))
        .route("/ui/versions/{version}/rollback", post(pages::rollback))
        .route("/ui/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(ui.clone(), session));
    Router::new()
        .merge(pages)
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(login_form).post(login))
        .with_state(ui)
}

/// The token a request presents: the UI cookie, else a bearer token.
fn presented(headers: &HeaderMap) -> Option<String> {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string());
    cookie.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
    })
}

/// Pages need a valid token; without one the browser is sent to the login form.
async fn session(State(ui): State<Ui>, mut req: Request, next: Next) -> Response {
    let found = presented(req.headers()).and_then(|token| {
        ui.app
            .tokens
            .verify(&token)
            .map(|caller| Session { caller, token })
    });
    match found {
        Some(s) => {
            req.extensions_mut().insert(s);
            next.run(req).await
        }
        None if req.method() == Method::GET => Redirect::to("/ui/login").into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            page_without_nav(
                "Sign in",
                html! { p { "Sign in first: " a href="/ui/login" { "login" } } },
            ),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login_form() -> Markup {
    login_page(None)
}

fn login_page(error: Option<&str>) -> Markup {
    page_without_nav(
        "Sign in",
        html! {
            h1 { "Palisade" }
            @if let Some(e) = error { p.error #login-error { (e) } }
            form method="post" action="/ui/login" {
                label for="token" { "API token (reader or admin)" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button #login type="submit" { "Sign in" }
            }
            p.hint { "The server printed an admin token on its first start; tokens are listed in its token file (--token-file)." }
        },
    )
}

async fn login(State(ui): State<Ui>, Form(f): Form<Login>) -> Response {
    let token = f.token.trim();
    // Generated tokens are hex; anything a cookie cannot carry verbatim is refused, not mangled.
    let cookie_safe = token
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b));
    if !cookie_safe || ui.app.tokens.verify(token).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            login_page(Some("That token is not valid.")),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/ui{}",
        secure(&ui)
    );
    let mut resp = Redirect::to("/ui/map").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(State(ui): State<Ui>) -> Response {
    let mut resp = Redirect::to("/ui/login").into_response();
    let cookie = format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0{}",
        secure(&ui)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The cookie's `Secure` attribute when the listeners speak TLS. Without TLS it cannot be set:
/// a browser would then never send the cookie back over the plain HTTP the server speaks.
fn secure(ui: &Ui) -> &'static str {
    if ui.app.tls {
        "; Secure"
    } else {
        ""
    }
}

/// An API answer that is not a success: its status and the problem's detail.
pub(crate) struct Refused {
    status: StatusCode,
    detail: String,
}

impl Ui {
    /// Ask the API as the session's caller; the answer as the listener would send it.
    async fn call(&self, s: &Session, method: Method, uri: &str, body: Option<&Value>) -> Response {
        use tower::Service;
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", s.token));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_default();
        match req.body(body) {
            Ok(req) => match self.api.clone().call(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            },
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }

    /// Ask the API and read its JSON answer.
    async fn json(
        &self,
        s: &Session,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refused> {
        let resp = self.call(s, method, uri, body).await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_LIMIT)
            .await
            .map_err(|e| Refused {
                status: StatusCode::BAD_GATEWAY,
                detail: e.to_string(),
            })?;
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        if status.is_success() {
            return Ok(value);
        }
        let detail = match &value {
            Value::String(s) if s.is_empty() => {
                status.canonical_reason().unwrap_or("refused").to_string()
            }
            Value::String(s) => s.clone(),
            v => v["detail"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
        };
        Err(Refused { status, detail })
    }
}

/// A query string from the non-empty pairs.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.filter(|v| !v.trim().is_empty()).map(|v| (*k, v.trim())))
        .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// An empty form field is an absent one.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
nav { background: #1f3a5f; padding: 8px 16px; display: flex; gap: 16px; align-items: center; }
nav a { color: #fff; text-decoration: none; } nav a.here { font-weight: bold; text-decoration: underline; }
nav .who { margin-left: auto; color: #cde; } nav form { margin: 0; }
main { padding: 16px; } h1 { font-size: 20px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } .error { color: #a00; } .hint { color: #666; }
.Allow, .Covered, .Bypassed { background: #d8f3d8; } .Deny, .Drop, .Denied, .Partial, .NotCoverable, .MissingServiceEndpoint { background: #f8d4d4; }
.Unknown { background: #f4ecc8; } .verdict { font-size: 18px; padding: 6px 10px; display: inline-block; }
form.inline { display: flex; gap: 8px; flex-wrap: wrap; align-items: end; } label { display: block; font-size: 12px; color: #555; }
pre { background: #f6f6f6; padding: 8px; overflow: auto; max-height: 480px; }
.vnet-box { fill: #eef4fb; stroke: #1f3a5f; } .subnet-box { fill: #fff; stroke: #7a9cc6; }
.vnet-name { font-weight: bold; } .subnet-name { font-weight: bold; } .nsg.none { fill: #a00; }
.firewall { fill: #fbe3c8; stroke: #c66f00; } .outside-box { fill: #f3f3f3; stroke: #888; }
.next-hop path, path.peering { fill: none; stroke: #444; stroke-width: 1.5; } .next-hop.peering path, path.peering { stroke-dasharray: 5 3; }
.route-label { font-size: 11px; fill: #333; } .nic { font-size: 12px; fill: #444; }
"#;

fn page_without_nav(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " — Palisade" }
                style { (PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
}

/// A page with the navigation bar; `here` is the current page's path.
fn page(s: &Session, here: &str, title: &str, body: Markup) -> Markup {
    let links = [
        ("/ui/map", "Network map"),
        ("/ui/trace", "Trace"),
        ("/ui/logs", "Deny log"),
        ("/ui/deps", "Dependencies"),
        ("/ui/versions", "Versions & diff"),
    ];
    let role = match s.caller.role {
        Role::Reader => "reader",
        Role::Admin => "admin",
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " — Palisade" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    strong style="color:#fff" { "Palisade" }
                    @for (href, text) in links {
                        a href=(href) class=[(href == here).then_some("here")] { (text) }
                    }
                    span.who #who data-role=(role) { (s.caller.name) " (" (role) ")" }
                    form method="post" action="/ui/logout" { button #logout type="submit" { "Log out" } }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A refused API answer shown in a page, with the API's status.
fn refused(s: &Session, here: &str, title: &str, asked: &str, r: Refused) -> Response {
    let body = html! {
        p.error #refused data-status=(r.status.as_u16()) { (r.status) ": " (r.detail) }
        p.hint { "asked: " code { (asked) } }
    };
    (r.status, page(s, here, title, body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_is_found_among_others_and_wins_over_the_header() {
        let h = headers(&[
            (header::COOKIE, "theme=dark; palisade_token=abc123; x=y"),
            (header::AUTHORIZATION, "Bearer other"),
        ]);
        assert_eq!(presented(&h).as_deref(), Some("abc123"));
        let h = headers(&[(header::AUTHORIZATION, "bearer  tok ")]);
        assert_eq!(presented(&h).as_deref(), Some("tok"));
        let h = headers(&[
            (header::COOKIE, "palisade_token_old=zzz"),
            (header::AUTHORIZATION, "Basic x"),
        ]);
        assert_eq!(presented(&h), None);
    }

    #[test]
    fn empty_form_fields_are_left_out_of_the_query() {
        let q = query(&[
            ("action", Some("Deny")),
            ("rule", Some(" ")),
            ("name", Some("*.example.com")),
            ("since", None),
        ]);
        assert_eq!(q, "action=Deny&name=*.example.com");
        assert_eq!(
            query(&[("scope", Some("127.0.0.1/32"))]),
            "scope=127.0.0.1%2F32"
        );
    }

    proptest::proptest! {
        /// Whatever else a Cookie header holds, the token cookie is found, and nothing panics.
        #[test]
        fn any_cookie_header(others in "[a-z]{1,8}=[ -:<-~]{0,20}(; [a-z]{1,8}=[ -:<-~]{0,20}){0,4}", token in "[0-9a-f]{1,64}") {
            let h = headers(&[(header::COOKIE, &format!("{others}; {COOKIE}={token}"))]);
            proptest::prop_assert_eq!(presented(&h), Some(token));
            let _ = presented(&headers(&[(header::COOKIE, &others)]));
        }
    }
}
