//! The example services of rust-ms.
//!
//! - [`user`]: accounts, on a store every node of the service shares.
//! - [`order`]: orders, checking the user through a channel the framework builds from
//!   discovery.
//! - [`text`]: caller input inside messages, bounded.

pub mod order;
pub mod text;
pub mod user;

/// Generated gRPC code: the servers, here; the messages and clients, from
/// `rust-ms-clients` (a caller depends on that crate alone).
pub mod proto {
    pub mod user {
        pub mod v1 {
            pub use clients::user::v1::*;
            tonic::include_proto!("user.v1");
        }
    }
    pub mod order {
        pub mod v1 {
            pub use clients::order::v1::*;
            tonic::include_proto!("order.v1");
        }
    }
}

/// The encoded `FileDescriptorSet` of `user.v1`, for gRPC reflection.
pub const USER_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/user_descriptor.bin"));
/// The encoded `FileDescriptorSet` of `order.v1`, for gRPC reflection.
pub const ORDER_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/order_descriptor.bin"));
