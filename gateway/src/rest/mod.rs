//! REST transcoding from `google.api.http` annotations: a method's HTTP rule routes
//! `GET /v1/shelves/1` to it, its path variables becoming fields of the request.

// Nothing routes through it yet: the gateway's router takes it up next.
#[allow(dead_code)]
pub mod binding;
#[allow(dead_code)]
pub mod rule;
#[allow(dead_code)]
pub mod table;
#[allow(dead_code)]
pub mod template;

#[cfg(test)]
mod tests;

#[allow(unused_imports)]
pub use template::{
    Bindings, Conflict, PathParameter, RouteTable, Template, TemplateError, TemplateErrorKind,
    Variable,
};
