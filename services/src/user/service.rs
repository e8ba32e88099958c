use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tonic::{Request, Response, Status};

use super::rules::{validate_password, validate_username};
use super::store::{StoreError, UserRecord, UserStore};
use super::token::TokenIssuer;
use crate::proto::user::v1::user_service_server::UserServiceServer;
use crate::proto::user::v1::{
    ExistsRequest, ExistsResponse, GetRequest, GetResponse, ListRequest, LoginRequest,
    LoginResponse, RegisterRequest, RegisterResponse, User,
};

/// The most accounts one `List` call streams; a caller asks for fewer with `limit`.
pub const LIST_CAP: u32 = 1000;

/// `user.v1.UserService` over a shared [`UserStore`].
#[derive(Clone)]
pub struct UserService {
    store: Arc<dyn UserStore>,
    tokens: TokenIssuer,
    min_password_len: usize,
}

impl UserService {
    pub fn new(store: Arc<dyn UserStore>, tokens: TokenIssuer, min_password_len: usize) -> Self {
        Self {
            store,
            tokens,
            min_password_len,
        }
    }

    pub fn into_server(self) -> UserServiceServer<Self> {
        UserServiceServer::new(self)
    }
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::AlreadyExists(name) => {
            Status::already_exists(format!("username {name:?} is already registered"))
        }
        StoreError::Unavailable(cause) => Status::unavailable(cause),
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
        self.store.insert(record).await.map_err(store_status)?;
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
            .map_err(store_status)?
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
            .map_err(store_status)?
            .is_some();
        Ok(Response::new(ExistsResponse { exists }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let username = request.into_inner().username;
        let record = self
            .store
            .get(&username)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no user {username:?}")))?;
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
            .map_err(store_status)?;
        let users: Vec<_> = records.into_iter().map(|r| Ok(user_message(r))).collect();
        Ok(Response::new(futures::stream::iter(users)))
    }
}
