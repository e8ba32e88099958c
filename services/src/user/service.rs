use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tonic::{Request, Response, Status};

use super::readiness::StoreReadiness;
use super::rules::{validate_password, validate_username};
use super::store::{StoreError, UserRecord, UserStore};
use super::token::TokenIssuer;
use crate::proto::user::v1::user_service_server::UserServiceServer;
use crate::proto::user::v1::{
    ExistsRequest, ExistsResponse, GetRequest, GetResponse, ListRequest, LoginRequest,
    LoginResponse, RegisterRequest, RegisterResponse, User,
};
use crate::text::quote;

/// The most accounts one `List` call streams; a caller asks for fewer with `limit`.
pub const LIST_CAP: u32 = 1000;

/// `user.v1.UserService` over a shared [`UserStore`].
#[derive(Clone)]
pub struct UserService {
    store: Arc<dyn UserStore>,
    tokens: TokenIssuer,
    min_password_len: usize,
    readiness: StoreReadiness,
}

impl UserService {
    pub fn new(store: Arc<dyn UserStore>, tokens: TokenIssuer, min_password_len: usize) -> Self {
        Self {
            store,
            tokens,
            min_password_len,
            // Nobody reads this one; the node wires its own with `with_readiness`.
            readiness: StoreReadiness::new().0,
        }
    }

    /// Handlers that meet an unreachable store report it at once, before the next probe.
    pub(crate) fn with_readiness(mut self, readiness: StoreReadiness) -> Self {
        self.readiness = readiness;
        self
    }

    pub fn into_server(self) -> UserServiceServer<Self> {
        UserServiceServer::new(self)
    }

    /// What a caller hears of a store error: the store by name and what to do, never the
    /// client's raw text (once taken for a transport failure by the gateway); that goes to
    /// the log.
    fn store_status(&self, error: StoreError) -> Status {
        match error {
            StoreError::AlreadyExists(name) => {
                Status::already_exists(format!("username {} is already registered", quote(&name)))
            }
            StoreError::Unavailable { store, ref cause } => {
                tracing::warn!(store, %cause, "a call failed: the user store cannot be reached");
                self.readiness.unreachable(&error);
                Status::unavailable(format!(
                    "the user store ({store}) cannot be reached; try again shortly"
                ))
            }
            StoreError::BadRecord { store, cause } => {
                tracing::error!(store, %cause, "a call failed on an account record");
                Status::internal(format!(
                    "the user store ({store}) holds an account record this node cannot use; \
                     see the node's log"
                ))
            }
        }
    }
}

fn user_message(record: UserRecord) -> User {
    User {
        id: record.id,
        username: record.username,
        created_at_ms: i64::try_from(record.created_at_ms).unwrap_or(i64::MAX),
    }
}

/// Argon2 is deliberately slow: run it off the async workers.
async fn hash_password(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await
    .map_err(|e| Status::internal(format!("hashing stopped: {e}")))?
    .map_err(|e| Status::internal(format!("hashing failed: {e}")))
}

async fn password_matches(password: String, stored: String) -> Result<bool, Status> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| Status::internal(format!("stored hash unreadable: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Status::internal(format!("verification stopped: {e}")))?
}

#[tonic::async_trait]
impl crate::proto::user::v1::user_service_server::UserService for UserService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let RegisterRequest { username, password } = request.into_inner();
        validate_username(&username).map_err(Status::invalid_argument)?;
        validate_password(&password, self.min_password_len).map_err(Status::invalid_argument)?;
        let record = UserRecord {
            id: uuid::Uuid::new_v4().to_string(),
            username,
            password_hash: hash_password(password).await?,
            created_at_ms: rust_ms::registry::unix_millis_now(),
        };
        let id = record.id.clone();
        self.store
            .insert(record)
            .await
            .map_err(|e| self.store_status(e))?;
        Ok(Response::new(RegisterResponse { id }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let LoginRequest { username, password } = request.into_inner();
        // One answer for "no such user" and "wrong password": nothing to probe names with.
        let refused = || Status::unauthenticated("wrong username or password");
        let record = self
            .store
            .get(&username)
            .await
            .map_err(|e| self.store_status(e))?
            .ok_or_else(refused)?;
        if !password_matches(password, record.password_hash).await? {
            return Err(refused());
        }
        let token = self
            .tokens
            .issue(&record.username)
            .map_err(|e| Status::internal(format!("signing the token failed: {e}")))?;
        Ok(Response::new(LoginResponse { token }))
    }

    async fn exists(
        &self,
        request: Request<ExistsRequest>,
    ) -> Result<Response<ExistsResponse>, Status> {
        let username = request.into_inner().username;
        let exists = self
            .store
            .get(&username)
            .await
            .map_err(|e| self.store_status(e))?
            .is_some();
        Ok(Response::new(ExistsResponse { exists }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let username = request.into_inner().username;
        let record = self
            .store
            .get(&username)
            .await
            .map_err(|e| self.store_status(e))?
            .ok_or_else(|| Status::not_found(format!("no user {}", quote(&username))))?;
        Ok(Response::new(GetResponse {
            user: Some(user_message(record)),
        }))
    }

    type ListStream = futures::stream::Iter<std::vec::IntoIter<Result<User, Status>>>;

    async fn list(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ListRequest { prefix, limit } = request.into_inner();
        if limit > LIST_CAP {
            return Err(Status::invalid_argument(format!(
                "limit {limit} is over the cap of {LIST_CAP}; ask for fewer"
            )));
        }
        let limit = if limit == 0 { LIST_CAP } else { limit };
        let records = self
            .store
            .list(&prefix, limit as usize)
            .await
            .map_err(|e| self.store_status(e))?;
        let users: Vec<_> = records.into_iter().map(|r| Ok(user_message(r))).collect();
        Ok(Response::new(futures::stream::iter(users)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::user::v1::user_service_server::UserService as _;
    use crate::user::store::MemoryUserStore;
    use crate::user::store::fake::{FlakyStore, RAW_CAUSE};

    /// Short enough for any header limit, with room to name the problem.
    const SHORT: usize = 300;

    fn service(store: Arc<dyn UserStore>) -> UserService {
        UserService::new(
            store,
            TokenIssuer::new(b"secret", Duration::from_secs(60)),
            8,
        )
    }

    fn assert_short(status: &Status, code: tonic::Code, names: &str) {
        assert_eq!(status.code(), code, "{status:?}");
        let message = status.message();
        assert!(message.len() < SHORT, "{} bytes", message.len());
        assert!(message.contains(names), "{message}");
    }

    #[tokio::test]
    async fn a_20kb_username_gets_short_messages_from_the_handlers() {
        let users = service(Arc::new(MemoryUserStore::new()));
        let long = "a".repeat(20_000);

        let status = users
            .get(Request::new(GetRequest {
                username: long.clone(),
            }))
            .await
            .unwrap_err();
        assert_short(&status, tonic::Code::NotFound, "no user \"aaaa");
        assert!(status.message().contains("(20000 bytes)"), "{status:?}");

        let status = users
            .register(Request::new(RegisterRequest {
                username: long.clone(),
                password: "long enough".into(),
            }))
            .await
            .unwrap_err();
        assert_short(&status, tonic::Code::InvalidArgument, "3 to 32 characters");

        let status = users
            .login(Request::new(LoginRequest {
                username: long.clone(),
                password: "long enough".into(),
            }))
            .await
            .unwrap_err();
        assert_short(&status, tonic::Code::Unauthenticated, "wrong username");

        let exists = users
            .exists(Request::new(ExistsRequest { username: long }))
            .await
            .unwrap();
        assert!(!exists.into_inner().exists);
    }

    #[test]
    fn a_taken_username_is_quoted_in_bounded_length() {
        let users = service(Arc::new(MemoryUserStore::new()));
        let status = users.store_status(StoreError::AlreadyExists("b".repeat(20_000)));
        assert_short(&status, tonic::Code::AlreadyExists, "already registered");
    }

    #[tokio::test]
    async fn an_unreachable_store_answers_unavailable_naming_the_store_not_the_client_error() {
        let store = Arc::new(FlakyStore::default());
        store.set_down(true);
        let users = service(store);
        let status = users
            .get(Request::new(GetRequest {
                username: "bob".into(),
            }))
            .await
            .unwrap_err();
        assert_short(&status, tonic::Code::Unavailable, "the user store (etcd)");
        assert!(status.message().contains("try again"), "{status:?}");
        for raw in [RAW_CAUSE, "tcp connect", "transport error"] {
            assert!(!status.message().contains(raw), "{status:?}");
        }

        let status = users
            .list(Request::new(ListRequest {
                prefix: String::new(),
                limit: 0,
            }))
            .await
            .unwrap_err();
        assert_short(&status, tonic::Code::Unavailable, "the user store (etcd)");
    }

    #[tokio::test]
    async fn a_handler_that_meets_an_unreachable_store_flips_readiness_at_once() {
        let store = Arc::new(FlakyStore::default());
        let (readiness, ready) = StoreReadiness::new();
        let users = service(store.clone()).with_readiness(readiness);
        assert!(*ready.borrow());
        store.set_down(true);
        let status = users
            .exists(Request::new(ExistsRequest {
                username: "bob".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!*ready.borrow());
    }

    #[test]
    fn an_unreadable_record_is_internal_and_keeps_the_decoder_text_to_the_log() {
        let users = service(Arc::new(MemoryUserStore::new()));
        let status = users.store_status(StoreError::BadRecord {
            store: "etcd",
            cause: "decoding: expected value at line 1 column 1".into(),
        });
        assert_short(&status, tonic::Code::Internal, "the user store (etcd)");
        assert!(!status.message().contains("expected value"), "{status:?}");
    }
}
