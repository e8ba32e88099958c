//! The clients of the rust-ms example services, for a service that calls them:
//!
//! ```no_run
//! # async fn setup(context: rust_ms::Context) -> Result<(), rust_ms::BoxError> {
//! use clients::user::v1::{ExistsRequest, user_service_client::UserServiceClient};
//!
//! let mut users = UserServiceClient::new(context.client("user").await?);
//! let exists = users.exists(ExistsRequest { username: "ada".into() }).await?;
//! # let _ = exists;
//! # Ok(())
//! # }
//! ```
//!
//! Give [`DESCRIPTORS`] to `Service::calls`, so that the service client knows which of
//! their methods are safe to repeat without asking the service by reflection. The
//! `.proto` files are under `proto/` in this crate; the services' own crate
//! (`rust-ms-services`) implements them.

/// `user.v1`: accounts (register, log in, look up).
pub mod user {
    pub mod v1 {
        tonic::include_proto!("user.v1");
    }
}

/// `order.v1`: orders, which check their user.
pub mod order {
    pub mod v1 {
        tonic::include_proto!("order.v1");
    }
}

/// The encoded `FileDescriptorSet` of `user.v1` and `order.v1`, for `Service::calls`.
pub const DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rust_ms_called_descriptors.bin"));
