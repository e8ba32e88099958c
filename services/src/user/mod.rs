//! The `user` service: `user.v1.UserService`.

mod rules;
mod service;
mod settings;
mod store;
mod token;

pub use rules::{validate_password, validate_username};
pub use service::UserService;
pub use settings::{UserSection, UserSettings};
#[cfg(feature = "etcd")]
pub use store::EtcdUserStore;
pub use store::{MemoryUserStore, StoreError, UserRecord, UserStore};
pub use token::TokenIssuer;

/// The gRPC service name, as reflection and the registry show it.
pub const GRPC_SERVICE: &str = "user.v1.UserService";

use std::sync::Arc;

use tonic::service::Routes;

/// The `user` node: its gRPC service over `store`, configured by `[user]`.
pub fn node_spec(section: &UserSection, store: Arc<dyn UserStore>) -> node::NodeSpec {
    let secret = if section.token_secret.is_empty() {
        tracing::warn!(
            "user.token_secret is not set: this node signs tokens with a secret of its own, which no other node accepts"
        );
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    } else {
        section.token_secret.clone()
    };
    let service = UserService::new(
        store,
        TokenIssuer::new(secret.as_bytes(), section.token_ttl),
        section.min_password_len,
    );
    let mut spec = node::NodeSpec::new(
        "user",
        env!("CARGO_PKG_VERSION"),
        Routes::new(service.into_server()),
    );
    spec.grpc_services = vec![GRPC_SERVICE.to_owned()];
    spec.descriptor_sets = vec![crate::USER_DESCRIPTOR_SET];
    spec
}
