//! The problem+json responses that many routes share, for the OpenAPI
//! document: each type below is a set of them that a route's
//! `#[utoipa::path(responses(...))]` names instead of spelling every entry
//! out, so a route lists only the answers that are its own.
//!
//! A leaf module (it knows `problem` only), so `routes` and `openapi` can
//! both use it.

use std::collections::BTreeMap;

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, ToSchema};

use crate::problem::{PROBLEM_CONTENT_TYPE, Problem};

/// `(status, description)` pairs as problem+json responses of the
/// [`Problem`] schema, like `(status = …, description = …, body = Problem,
/// content_type = "application/problem+json")` in a route's list.
fn problems(entries: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    entries
        .iter()
        .map(|&(status, description)| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(Problem::name()))).build();
            let response = ResponseBuilder::new().description(description).content(PROBLEM_CONTENT_TYPE, content);
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

/// Declares each set as a type with no values that implements
/// [`IntoResponses`].
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal),+ $(,)? })+) => {$(
        $(#[$doc])*
        pub enum $name {}

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                problems(&[$(($status, $description)),+])
            }
        }
    )+};
}

problem_responses! {
    /// The service cannot answer now (the store is unreachable, the request
    /// timed out, or load is shed).
    Unavailable { 503 => "`unavailable`" }

    /// Every route that takes a user's key.
    UserErrors {
        401 => "`unauthorized`",
        403 => "`forbidden`: the admin key cannot act as a user",
        429 => "`rate_limited`: past this key's rate (`--rate-limit`); `Retry-After` says when to retry",
        503 => "`unavailable`",
    }

    /// Every route that takes the admin key.
    AdminErrors {
        401 => "`unauthorized`",
        403 => "`forbidden`: not the admin key",
        429 => "`rate_limited`: past this key's rate (`--rate-limit`); `Retry-After` says when to retry",
        503 => "`unavailable`",
    }

    /// The public reads of one object by its id (no key).
    ReadErrors {
        404 => "`not_found`: no such record",
        503 => "`unavailable`",
    }

    /// The id in the path names nothing.
    NotFound { 404 => "`not_found`: no such record" }

    /// The id in the path names nothing of the caller's: another user's
    /// record answers as if it did not exist.
    NotYours { 404 => "`not_found`: no such record, or not the caller's" }

    /// A route whose only 400 is a request of the wrong shape.
    Malformed { 400 => "`malformed_request`" }

    /// A route that reads a JSON body.
    JsonBodyErrors {
        413 => "`payload_too_large`",
        415 => "`unsupported_media_type`",
    }

    /// A route whose body may be empty, or `{}` as JSON.
    MediaTypeError { 415 => "`unsupported_media_type`" }

    /// A keyed route whose request has no other reason for a 400.
    KeyErrors { 400 => "`malformed_request`, `idempotency_key_missing`, `idempotency_key_invalid`" }

    /// A keyed route whose request has no other reason for a 422.
    KeyReused { 422 => "`idempotency_key_reused`" }
}
