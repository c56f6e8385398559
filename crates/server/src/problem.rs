//! Errors as RFC 9457 problem details (`application/problem+json`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use palisade_model::{Diagnostic, Severity};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

/// An RFC 9457 problem. `errors` carries located messages, the same as `palisade validate`'s.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem (relative: resolved against the server).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Located>,
    #[serde(skip)]
    authenticate: Option<&'static str>,
}

/// One located message: what `palisade validate` says, with the JSON pointer made relative to
/// the request body when the problem lies inside the resource sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Located {
    pub severity: String,
    pub message: String,
    /// `body` when `pointer` points into the request body, `network` when into the stored
    /// network (another resource the change broke).
    pub location: &'static str,
    pub pointer: String,
    pub resource_type: Option<String>,
    pub resource: Option<String>,
    pub field: Option<String>,
    pub found: Option<String>,
    pub expected: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: vec![],
            authenticate: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "not-answerable", detail)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            detail.to_string(),
        )
    }

    /// 401 with the `WWW-Authenticate` challenge (RFC 6750).
    pub fn unauthorized(detail: &str, challenge: &'static str) -> Problem {
        let mut p = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        p.authenticate = Some(challenge);
        p
    }

    /// 422: the change does not compile; the running policy is unchanged. `body_pointer`
    /// maps a pointer of the stored network to one in the request body, when it lies there.
    pub fn invalid_network<'a>(
        diagnostics: impl Iterator<Item = &'a Diagnostic>,
        body_pointer: impl Fn(&str) -> Option<String>,
    ) -> Problem {
        let errors: Vec<Located> = diagnostics
            .filter(|d| d.severity == Severity::Error)
            .map(|d| {
                let (location, pointer) = match body_pointer(&d.pointer) {
                    Some(p) => ("body", p),
                    None => ("network", d.pointer.clone()),
                };
                Located {
                    severity: "Error".into(),
                    message: d.message.clone(),
                    location,
                    pointer,
                    resource_type: d.resource_type.clone(),
                    resource: d.resource.clone(),
                    field: d.field.clone(),
                    found: d.found.clone(),
                    expected: d.expected.clone(),
                }
            })
            .collect();
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-network",
            format!(
                "the change leaves the network with {} error(s); nothing was applied (PAL-5.5)",
                errors.len()
            ),
        );
        p.errors = errors;
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| json!({}).to_string().into_bytes());
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(c) = self.authenticate {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        r
    }
}

/// JSON request bodies that do not parse become problems too, naming what was wrong.
pub fn json_rejection(e: axum::extract::rejection::JsonRejection) -> Problem {
    Problem::new(e.status(), "bad-request", e.body_text())
}
