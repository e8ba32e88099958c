//! REST transcoding from `google.api.http` annotations: a method's HTTP rule routes
//! `GET /v1/shelves/1` to it, its path variables becoming fields of the request.

pub mod binding;
pub mod rule;
pub mod serve;
pub mod table;
// OpenAPI paths, the listing's accessors and a template's raw text serve the OpenAPI
// document, the next step.
#[allow(dead_code)]
pub mod template;

#[cfg(test)]
mod tests;

pub use template::Template;
