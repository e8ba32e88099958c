//! `/api-docs` on the admin port: a page, compiled in, that lists every operation of the
//! cluster's OpenAPI document and sends a request to one.
//!
//! The page is the operator's, so it lives on the admin port, and its requests go to the
//! gateway's public router in this process (`/admin/api-docs/try/{path}` is `/{path}` on
//! the HTTP port, the same call stack, routes and checks) so that the page needs no
//! CORS from the public port. The admin token guards the document and the calls, as it
//! guards every `/admin` path; a service's own token travels as `X-Api-Authorization`
//! and reaches the public router as `Authorization`.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::Gateway;

/// The page's name: `/api-docs`, with its routes under `/admin/api-docs/`.
pub const NAME: &str = "api-docs";

/// The page itself: HTML, CSS and script in one file, nothing fetched from elsewhere.
pub const PAGE: &str = include_str!("api_docs.html");

/// Where the page's calls go in: what follows is the path on the public port.
const TRY_PREFIX: &str = "/admin/api-docs/try";

/// The header that carries the service's token past the admin port's own.
const API_AUTHORIZATION: &str = "x-api-authorization";

/// The page's routes: the document and the calls it sends, answered by `public` (the
/// router of the gateway's HTTP port).
pub fn routes(gateway: Arc<Gateway>, public: Router) -> Router {
    Router::new()
        .route("/admin/api-docs/openapi.json", get(crate::openapi::whole))
        .with_state(gateway)
        // A fallback, not a route with a `{*path}`: the public router must see the
        // request without parameters of this router's.
        .fallback(move |request: Request| try_call(public.clone(), request))
}

/// A call from the page, handed to the public router as if it came to the HTTP port.
async fn try_call(public: Router, request: Request) -> Response {
    let request = match as_public(request) {
        Ok(request) => request,
        Err(message) => return (StatusCode::NOT_FOUND, message).into_response(),
    };
    match tower::ServiceExt::oneshot(public, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `request` as the public port would have it: the path after the prefix, the admin
/// token dropped, the service's token (if any) as `Authorization`, and no `Origin` (the
/// page is of the admin port's own origin; the public port's CORS is not asked).
fn as_public(mut request: Request) -> Result<Request, String> {
    let path = request
        .uri()
        .path()
        .strip_prefix(TRY_PREFIX)
        .filter(|rest| rest.starts_with('/'))
        .ok_or_else(|| format!("a call from the page goes to {TRY_PREFIX}/{{path}}"))?;
    let target = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    *request.uri_mut() = target
        .parse::<Uri>()
        .map_err(|error| format!("not a path: {error}"))?;
    let headers = request.headers_mut();
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::ORIGIN);
    headers.remove(header::COOKIE);
    if let Some(mut token) = headers.remove(API_AUTHORIZATION) {
        token.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, token);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value")
    }

    fn request(uri: &str, headers: &[(&'static str, HeaderValue)]) -> Request {
        let mut request = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .expect("a request");
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.clone());
        }
        request
    }

    #[test]
    fn a_call_from_the_page_keeps_its_path_and_query_and_swaps_the_admin_token_for_the_services() {
        let from_page = request(
            "/admin/api-docs/try/v1/shelves/7/books?filter.author=ann",
            &[
                ("authorization", bearer("admin-token")),
                (API_AUTHORIZATION, bearer("service-token")),
                ("origin", HeaderValue::from_static("http://127.0.0.1:9180")),
            ],
        );
        let public = as_public(from_page).expect("a public request");
        assert_eq!(public.uri(), "/v1/shelves/7/books?filter.author=ann");
        assert_eq!(
            public.headers().get(header::AUTHORIZATION),
            Some(&bearer("service-token"))
        );
        assert!(public.headers().get(header::ORIGIN).is_none());
        assert!(public.headers().get(API_AUTHORIZATION).is_none());
    }

    #[test]
    fn the_admin_token_never_reaches_the_services() {
        let from_page = request(
            "/admin/api-docs/try/api/user/Exists",
            &[("authorization", bearer("admin-token"))],
        );
        let public = as_public(from_page).expect("a public request");
        assert_eq!(public.uri(), "/api/user/Exists");
        assert!(public.headers().get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn a_path_outside_the_prefix_is_refused() {
        assert!(as_public(request("/admin/api-docs/tryx", &[])).is_err());
    }
}
