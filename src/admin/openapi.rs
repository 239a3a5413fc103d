//! The admin API's OpenAPI 3.1 document, served at `/api/v1/openapi.json`.
//! It is derived from the handlers' `#[utoipa::path]` attributes and their
//! types as the router registers them, so it cannot list a route the router
//! lacks or miss one it has; this module adds what the handlers do not say:
//! the error body, the failures every endpoint shares, and the token.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, ToSchema};

/// Where the document is served (without a token: it holds no data).
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The body of every admin API error (4xx and 5xx).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// recordhook's code for the failure: the HTTP status and a digit
    /// (4006 invalid parameter or body, 4018 no valid token, 4040 no such
    /// endpoint, 4041 no such record, 5031 spool unavailable).
    #[schema(example = 4006)]
    pub code: u16,
    /// What went wrong, for a person.
    #[schema(example = "invalid `limit`: must be between 1 and 500")]
    pub message: String,
}

/// How any admin API request can fail.
#[derive(IntoResponses)]
#[expect(
    dead_code,
    reason = "describes responses for the document; AdminError builds them"
)]
pub enum GetFailures {
    /// No valid bearer token.
    #[response(status = 401, description = "No valid `Authorization: Bearer` token")]
    Unauthorized(ErrorBody),
    /// The spool could not answer.
    #[response(status = 503, description = "The spool could not answer")]
    Unavailable(ErrorBody),
}

/// How a request with query parameters can fail.
#[derive(IntoResponses)]
#[expect(
    dead_code,
    reason = "describes responses for the document; AdminError builds them"
)]
pub enum QueryFailures {
    /// A parameter is unknown or out of its bounds.
    #[response(
        status = 400,
        description = "A query parameter is unknown or not valid"
    )]
    BadRequest(ErrorBody),
    /// No valid bearer token.
    #[response(status = 401, description = "No valid `Authorization: Bearer` token")]
    Unauthorized(ErrorBody),
    /// The spool could not answer.
    #[response(status = 503, description = "The spool could not answer")]
    Unavailable(ErrorBody),
}

/// How a request with a JSON body can fail.
#[derive(IntoResponses)]
#[expect(
    dead_code,
    reason = "describes responses for the document; AdminError builds them"
)]
pub enum BodyFailures {
    /// The body is not a valid selection (or not JSON).
    #[response(
        status = 400,
        description = "The body is missing, not JSON, or not a valid selection"
    )]
    BadRequest(ErrorBody),
    /// No valid bearer token.
    #[response(status = 401, description = "No valid `Authorization: Bearer` token")]
    Unauthorized(ErrorBody),
    /// The spool could not answer.
    #[response(status = 503, description = "The spool could not answer")]
    Unavailable(ErrorBody),
}

/// The document's frame: title, the token scheme, the shared schemas.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "recordhook admin API",
        description = "Browse stored callbacks, see each sink's backlog, reconciliation, and retry or purge dead letters."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
)]
pub struct ApiDoc;

/// Declares the bearer token and requires it on every operation.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("One of `[admin] tokens`"))
                    .build(),
            ),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "token",
            Vec::<String>::new(),
        )]);
    }
}

/// Serves the finished document.
pub fn serve(document: OpenApi) -> impl Fn() -> std::future::Ready<Json<OpenApi>> + Clone {
    move || std::future::ready(Json(document.clone()))
}
