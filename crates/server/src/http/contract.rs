//! Completes the OpenAPI document so it states every status an operation can answer: the
//! ones its handler declares, plus those any operation gets from the layers around it
//! (authentication, body parsing, limits, timeouts, storage), each with a description (which
//! OpenAPI requires) and the JSON error body.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

/// What each status means wherever it appears.
fn describe(status: &str) -> &'static str {
    match status {
        "200" => "Success",
        "201" => "Created",
        "204" => "No content",
        "400" => {
            "Invalid request: a parameter or a field of the body is missing or malformed (the message names it); nothing changed"
        }
        "401" => {
            "Not authenticated: no bearer token, or one that is malformed, unknown, expired or revoked"
        }
        "403" => {
            "Forbidden: policy does not let the caller do this (recorded as a denied audit event)"
        }
        "404" => "Not found: the named object does not exist, or the caller may not know it does",
        "408" => "The request took longer than the server's request timeout",
        "409" => {
            "Conflict with the current state (it changed meanwhile, or the object exists already)"
        }
        "422" => {
            "Well-formed, but the server cannot act on it (a policy that does not parse, a duration beyond a limit); the message names the problem; nothing changed"
        }
        "413" => "The body is larger than the server's limit",
        "414" => "The request target (path and query) is too long",
        "415" => "The body is not JSON (Content-Type must be application/json)",
        "431" => "Too many or too large request headers",
        "500" => "Internal error (logged on the server); nothing is reported as done",
        "502" => {
            "A system pedm depends on (a target's API) failed or refused; the message says which"
        }
        "503" => {
            "Unavailable: storage is unreachable, or the feature is not configured on this server"
        }
        _ => "See the error body",
    }
}

fn error_response(status: &str) -> RefOr<Response> {
    RefOr::T(
        Response::builder()
            .description(describe(status))
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build(),
    )
}

/// Adds to every operation the statuses the layers around it can answer, and a description
/// to every response that has none.
pub fn complete(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            complete_operation(op);
        }
    }
}

fn complete_operation(op: &mut Operation) {
    let mut statuses = vec!["401", "408", "500", "503"];
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_params || op.request_body.is_some() {
        statuses.push("400");
    }
    if op.request_body.is_some() {
        statuses.extend(["413", "415", "422"]);
    }
    // An operation on a named object answers 404 when there is no such object.
    let names_an_object = op.parameters.as_ref().is_some_and(|ps| {
        ps.iter().any(|p| {
            matches!(p, RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Path)
        })
    });
    if names_an_object {
        statuses.push("404");
    }
    let responses = &mut op.responses.responses;
    for s in statuses {
        responses
            .entry(s.to_string())
            .or_insert_with(|| error_response(s));
    }
    for (status, r) in responses.iter_mut() {
        if let RefOr::T(r) = r
            && r.description.is_empty()
        {
            r.description = describe(status).to_string();
        }
    }
}
