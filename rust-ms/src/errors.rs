//! Failing a call with details a caller can act on: gRPC's richer error model, where a
//! status carries `google.rpc` messages (`ErrorInfo`, `BadRequest`, `RetryInfo`, …) in
//! its `grpc-status-details-bin`. The gateway shows them in the `details` of its `/api`
//! error body, each with its `@type`; its rpc port passes them on unchanged.
//!
//! A handler fails with a stable, machine-readable reason and the facts behind it, as
//! Kratos's errors do (a reason and metadata, sent as an `ErrorInfo`):
//!
//! ```
//! use rust_ms::errors;
//! use rust_ms::tonic::{Code, Status};
//!
//! fn find(username: &str) -> Result<(), Status> {
//!     Err(errors::reason(Code::NotFound, "USER_NOT_FOUND", format!("no user {username:?}"))
//!         .domain("user")
//!         .with("username", username)
//!         .into_status())
//! }
//!
//! // A caller (another service, a test) reads the details back with `StatusExt`.
//! use rust_ms::errors::StatusExt;
//! let status = find("bob").unwrap_err();
//! let info = status.get_details_error_info().expect("an ErrorInfo");
//! assert_eq!((info.reason.as_str(), info.domain.as_str()), ("USER_NOT_FOUND", "user"));
//! assert_eq!(info.metadata["username"], "bob");
//! ```
//!
//! A request that names fields it should not fails with a `BadRequest`:
//!
//! ```
//! use rust_ms::errors::{self, StatusExt};
//!
//! let status = errors::invalid_argument("the account is not valid", [
//!     ("email", "not an address"),
//!     ("age", "must be at least 18"),
//! ])
//! .into_status();
//! assert_eq!(status.code(), rust_ms::tonic::Code::InvalidArgument);
//! let bad = status.get_details_bad_request().expect("a BadRequest");
//! assert_eq!(bad.field_violations[1].field, "age");
//! ```
//!
//! A service whose errors all share a domain names it once with a [`Domain`]. Any other
//! detail is added with [`Failure::detail`]; the detail types and [`StatusExt`] (for
//! reading them, or for building a status from an [`ErrorDetails`] yourself) are
//! tonic-types', re-exported here.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::{Code, Status};

pub use tonic_types::{
    BadRequest, DebugInfo, ErrorDetail, ErrorDetails, ErrorInfo, FieldViolation, Help, HelpLink,
    LocalizedMessage, PreconditionFailure, PreconditionViolation, QuotaFailure, QuotaViolation,
    RequestInfo, ResourceInfo, RetryInfo, StatusExt,
};

/// A failure with `reason` (a constant in `UPPER_SNAKE_CASE` a caller can match on, as
/// `ErrorInfo` asks) and `message` (for people). Its domain is empty until
/// [`Failure::domain`] sets it, or use [`Domain::reason`].
pub fn reason(code: Code, reason: impl Into<String>, message: impl Into<String>) -> Failure {
    Failure::new(code, message).reason(reason)
}

/// `INVALID_ARGUMENT` with a `BadRequest` naming each field (`"address.city"`, by its
/// path) and what is wrong with it.
pub fn invalid_argument<F, D>(
    message: impl Into<String>,
    violations: impl IntoIterator<Item = (F, D)>,
) -> Failure
where
    F: Into<String>,
    D: Into<String>,
{
    violations.into_iter().fold(
        Failure::new(Code::InvalidArgument, message),
        |failure, (f, d)| failure.field(f, d),
    )
}

/// The domain a service's errors belong to, `ErrorInfo`'s `domain`: by convention the
/// service's name (`"user"`) or its DNS name (`"user.example.com"`).
///
/// ```
/// use rust_ms::errors::Domain;
/// use rust_ms::tonic::Code;
///
/// const ERRORS: Domain = Domain::new("user");
///
/// let status = ERRORS.reason(Code::AlreadyExists, "USERNAME_TAKEN", "bob is taken").into_status();
/// # use rust_ms::errors::StatusExt;
/// # assert_eq!(status.get_details_error_info().unwrap().domain, "user");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain(&'static str);

impl Domain {
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// [`reason`] in this domain.
    pub fn reason(
        &self,
        code: Code,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Failure {
        self::reason(code, reason, message).domain(self.0)
    }
}

/// A failed call's status being built: its code and message, an `ErrorInfo` when it has a
/// reason or metadata, and the other details in the order they were added. It becomes a
/// [`tonic::Status`] with [`Failure::into_status`] (or `.into()`, or `?`).
#[derive(Debug, Clone)]
#[must_use = "a failure does nothing until it is returned as a Status"]
pub struct Failure {
    code: Code,
    message: String,
    reason: Option<String>,
    domain: String,
    metadata: BTreeMap<String, String>,
    details: Vec<ErrorDetail>,
}

impl Failure {
    /// A status of `code` and `message` with no details yet.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason: None,
            domain: String::new(),
            metadata: BTreeMap::new(),
            details: Vec::new(),
        }
    }

    /// `ErrorInfo`'s `reason`.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// `ErrorInfo`'s `domain`.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    /// A fact of `ErrorInfo`'s `metadata` (`"username" → "bob"`). A failure with metadata
    /// and no reason sends an `ErrorInfo` whose reason is empty.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// A field violation, added to the failure's one `BadRequest`.
    pub fn field(mut self, field: impl Into<String>, description: impl Into<String>) -> Self {
        let violation = FieldViolation::new(field, description);
        match self.details.iter_mut().find_map(|detail| match detail {
            ErrorDetail::BadRequest(bad) => Some(bad),
            _ => None,
        }) {
            Some(bad) => bad.field_violations.push(violation),
            None => self.details.push(BadRequest::new([violation]).into()),
        }
        self
    }

    /// A `RetryInfo`: how long the caller should wait before it tries again.
    pub fn retry_after(self, wait: Duration) -> Self {
        self.detail(RetryInfo::new(Some(wait)))
    }

    /// A link of the failure's one `Help`: where the caller can read what to do.
    pub fn help(mut self, description: impl Into<String>, url: impl Into<String>) -> Self {
        let link = HelpLink::new(description, url);
        match self.details.iter_mut().find_map(|detail| match detail {
            ErrorDetail::Help(help) => Some(help),
            _ => None,
        }) {
            Some(help) => help.links.push(link),
            None => self.details.push(Help::new([link]).into()),
        }
        self
    }

    /// A `LocalizedMessage`: the message in `locale` (`"fr-FR"`), for an end user.
    pub fn localized(self, locale: impl Into<String>, message: impl Into<String>) -> Self {
        self.detail(LocalizedMessage::new(locale, message))
    }

    /// Any other detail: a [`ResourceInfo`], a [`PreconditionFailure`], a
    /// [`QuotaFailure`], a [`RequestInfo`], a [`DebugInfo`] (never in production: it shows
    /// the caller your internals), …
    pub fn detail(mut self, detail: impl Into<ErrorDetail>) -> Self {
        self.details.push(detail.into());
        self
    }

    /// The status, its details encoded in `grpc-status-details-bin`: the `ErrorInfo`
    /// first, then the others as added.
    pub fn into_status(self) -> Status {
        let info = (self.reason.is_some() || !self.metadata.is_empty()).then(|| {
            let metadata: std::collections::HashMap<_, _> = self.metadata.into_iter().collect();
            ErrorDetail::from(ErrorInfo::new(
                self.reason.unwrap_or_default(),
                self.domain,
                metadata,
            ))
        });
        let details: Vec<ErrorDetail> = info.into_iter().chain(self.details).collect();
        if details.is_empty() {
            return Status::new(self.code, self.message);
        }
        Status::with_error_details_vec(self.code, self.message, details)
    }
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Self {
        failure.into_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_an_error_info_first_and_the_other_details_follow_in_order() {
        let status = reason(Code::NotFound, "USER_NOT_FOUND", "no user \"bob\"")
            .domain("user")
            .with("username", "bob")
            .field("username", "no such user")
            .retry_after(Duration::from_secs(1))
            .field("tenant", "unknown")
            .into_status();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no user \"bob\"");
        let details = status.get_error_details_vec();
        let [
            ErrorDetail::ErrorInfo(info),
            ErrorDetail::BadRequest(bad),
            ErrorDetail::RetryInfo(retry),
        ] = details.as_slice()
        else {
            panic!("ErrorInfo, BadRequest, RetryInfo: {details:?}");
        };
        assert_eq!(info.reason, "USER_NOT_FOUND");
        assert_eq!(info.domain, "user");
        assert_eq!(info.metadata["username"], "bob");
        let fields: Vec<&str> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(
            fields,
            ["username", "tenant"],
            "one BadRequest for every field"
        );
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_failure_without_details_is_a_plain_status() {
        let status = Failure::new(Code::Internal, "broke").into_status();
        assert!(status.details().is_empty());
        let status: Status = invalid_argument("bad", std::iter::empty::<(&str, &str)>()).into();
        assert!(status.details().is_empty());
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn metadata_without_a_reason_still_sends_an_error_info() {
        let status = Failure::new(Code::Aborted, "retry")
            .with("attempt", "2")
            .help("why", "https://example.com/why")
            .help("how", "https://example.com/how")
            .localized("en-GB", "Try again")
            .into_status();
        let details = status.get_error_details();
        let info = details.error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "");
        assert_eq!(info.metadata["attempt"], "2");
        assert_eq!(details.help().map(|help| help.links.len()), Some(2));
        assert_eq!(
            details.localized_message().map(|m| m.message.as_str()),
            Some("Try again")
        );
    }

    #[test]
    fn a_domain_names_every_reason_it_makes() {
        const ERRORS: Domain = Domain::new("order");
        let status = ERRORS
            .reason(Code::FailedPrecondition, "CART_EMPTY", "nothing to order")
            .into_status();
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("CART_EMPTY", "order")
        );
    }
}
