//! REST transcoding from `google.api.http` annotations: a method's HTTP rule routes
//! `GET /v1/shelves/1` to it, its path variables becoming fields of the request.

pub mod binding;
pub mod rule;
pub mod serve;
pub mod table;
// A few accessors (a template's verb, an error's column, the table's `replace`) serve
// only the tests of the matching rules so far.
#[cfg_attr(not(test), allow(dead_code))]
pub mod template;

#[cfg(test)]
mod tests;

pub use template::Template;
