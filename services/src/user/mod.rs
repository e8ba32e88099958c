//! The `user` service: `user.v1.UserService`.

mod cache;
mod readiness;
mod rules;
mod service;
mod settings;
mod store;
mod token;

pub use rules::{USERNAME_MAX_LEN, validate_password, validate_username};
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
use tracing::Instrument;

use cache::CachedReads;
use readiness::{PROBE_EVERY, StoreReadiness, probe_store};

/// The `user` service, its accounts on the store every node of it shares: etcd beside the
/// registry, or one process's memory on the memory backend.
pub fn service() -> Service<UserSettings> {
    build(|backend| match backend {
        Connected::Memory(_) => Ok(Arc::new(MemoryUserStore::new())),
        #[cfg(feature = "etcd")]
        Connected::Etcd(etcd) => Ok(Arc::new(EtcdUserStore::new(etcd.kv()))),
        // etcd, in a build where only another crate turned the runtime's etcd on.
        #[allow(unreachable_patterns)]
        _ => Err(
            "this build of the user service has no etcd store (its `etcd` feature is off)".into(),
        ),
    })
}

/// The `user` service on a store the caller shares between its nodes (the dev stack runs
/// three in one process).
pub fn service_with_store(store: Arc<dyn UserStore>) -> Service<UserSettings> {
    build(move |_| Ok(store))
}

fn build(
    store: impl FnOnce(&Connected) -> Result<Arc<dyn UserStore>, rust_ms::BoxError> + Send + 'static,
) -> Service<UserSettings> {
    Service::new("user", env!("CARGO_PKG_VERSION"))
        .about("The rust-ms example account service")
        .settings::<UserSettings>()
        .descriptors(crate::USER_DESCRIPTOR_SET)
        .setup(|context| async move {
            // Without its store a node can only fail calls: it says so through
            // grpc.health.v1, and the gateway routes around it until the store is back;
            // reads of accounts it has seen are still answered meanwhile.
            let (readiness, ready) = StoreReadiness::new();
            let store: Arc<dyn UserStore> =
                Arc::new(CachedReads::new(store(context.backend())?, ready.clone()));
            tokio::spawn(
                probe_store(
                    store.clone(),
                    readiness.clone(),
                    PROBE_EVERY,
                    context.shutdown(),
                )
                .in_current_span(),
            );
            Ok(serve(&context.settings().user, store, readiness).readiness(ready))
        })
}

/// `user.v1.UserService` over `store`, configured by `[user]`.
fn serve(section: &UserSection, store: Arc<dyn UserStore>, readiness: StoreReadiness) -> Serve {
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
    )
    .with_readiness(readiness);
    Serve::new().add_service(service.into_server())
}
