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

use rust_ms::{Connected, Serve, Service};

/// The `user` service, its accounts on the store every node of it shares: etcd beside the
/// registry, or one process's memory on the memory backend.
pub fn service() -> Service<UserSettings> {
    build(|backend| match backend {
        Connected::Memory(_) => Arc::new(MemoryUserStore::new()),
        #[cfg(feature = "etcd")]
        Connected::Etcd(etcd) => Arc::new(EtcdUserStore::new(etcd.client(), etcd.namespace())),
    })
}

/// The `user` service on a store the caller shares between its nodes (the dev stack runs
/// three in one process).
pub fn service_with_store(store: Arc<dyn UserStore>) -> Service<UserSettings> {
    build(move |_| store)
}

fn build(
    store: impl FnOnce(&Connected) -> Arc<dyn UserStore> + Send + 'static,
) -> Service<UserSettings> {
    Service::new("user", env!("CARGO_PKG_VERSION"))
        .about("The rust-ms example account service")
        .settings::<UserSettings>()
        .descriptors(crate::USER_DESCRIPTOR_SET)
        .setup(|context| async move {
            let store = store(context.backend());
            Ok(serve(&context.settings().user, store))
        })
}

/// `user.v1.UserService` over `store`, configured by `[user]`.
fn serve(section: &UserSection, store: Arc<dyn UserStore>) -> Serve {
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
    Serve::new().add_service(service.into_server())
}
