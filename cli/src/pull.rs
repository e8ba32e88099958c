//! `rust-ms proto pull <service>`: the `.proto` files of a running service, read from
//! gRPC server reflection (of one of its nodes, or of a gateway's rpc port, which answers
//! for the whole cluster), so that a team can call a service whose source it lacks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost_types::FileDescriptorProto;
use reflect::{ReflectError, Reflection};
use tonic::transport::{Channel, Endpoint};

use crate::proto_text;

/// How long the whole conversation with the server may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// Why the protos could not be pulled.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{from:?} is not an address to dial: {reason}")]
    BadAddress { from: String, reason: String },
    #[error("cannot reach {from}: {reason}")]
    Unreachable { from: String, reason: String },
    #[error("{from} answered no reflection within {PATIENCE:?}")]
    TimedOut { from: String },
    #[error("{from} refused reflection: {reason}")]
    Refused { from: String, reason: String },
    #[error("{from} serves no gRPC service of {service:?}; it serves: {}", .offered.join(", "))]
    NoSuchService {
        from: String,
        service: String,
        offered: Vec<String>,
    },
    #[error("cannot write {file} as .proto: {source}")]
    Render {
        file: String,
        #[source]
        source: proto_text::RenderError,
    },
    #[error("{} exists with other contents; --force writes over it", .0.display())]
    WouldOverwrite(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What was pulled: the gRPC services chosen and each file written (or already there).
#[derive(Debug)]
pub struct Pulled {
    pub services: Vec<String>,
    pub files: Vec<(PathBuf, Outcome)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// Reads the files that describe `service` from the reflection at `from` and writes them
/// under `out`, each at its import path (`user/v1/user.proto`). Well-known types
/// (`google/protobuf/*`) are left out: every protobuf compiler has them.
pub async fn pull(service: &str, from: &str, out: &Path, force: bool) -> Result<Pulled, PullError> {
    let (services, files) = tokio::time::timeout(PATIENCE, read(service, from))
        .await
        .map_err(|_| PullError::TimedOut {
            from: from.to_owned(),
        })??;
    // Render everything before writing anything: a file that cannot be written as text
    // leaves the folder as it was.
    let mut rendered = Vec::new();
    for file in files.values() {
        if file.name().starts_with("google/protobuf/") {
            continue;
        }
        let text = proto_text::render(file).map_err(|source| PullError::Render {
            file: file.name().to_owned(),
            source,
        })?;
        rendered.push((out.join(file.name()), text));
    }
    for (path, text) in &rendered {
        if !force && std::fs::read_to_string(path).is_ok_and(|old| old != *text) {
            return Err(PullError::WouldOverwrite(path.clone()));
        }
    }
    let mut written = Vec::new();
    for (path, text) in rendered {
        let failed = |source| PullError::Write {
            path: path.clone(),
            source,
        };
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            written.push((path, Outcome::Unchanged));
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        std::fs::write(&path, text).map_err(failed)?;
        written.push((path, Outcome::Written));
    }
    Ok(Pulled {
        services,
        files: written,
    })
}

/// The gRPC services of `service` at `from`, and every file they need, by name.
async fn read(
    service: &str,
    from: &str,
) -> Result<(Vec<String>, BTreeMap<String, FileDescriptorProto>), PullError> {
    let refused = |error: ReflectError| PullError::Refused {
        from: from.to_owned(),
        reason: match error.status() {
            Some(status) => describe(status),
            None => error.to_string(),
        },
    };
    let mut reflection = Reflection::new(connect(from).await?);
    let offered = reflection.list_services().await.map_err(refused)?;
    let chosen: Vec<String> = offered
        .iter()
        .filter(|name| belongs_to(name, service))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(PullError::NoSuchService {
            from: from.to_owned(),
            service: service.to_owned(),
            offered: offered
                .into_iter()
                .filter(|name| !reflect::is_infrastructure(name))
                .collect(),
        });
    }
    let files = reflection.files_of(&chosen).await.map_err(refused)?;
    let files = files
        .into_iter()
        .map(|(name, file)| (name, file.proto))
        .collect();
    Ok((chosen, files))
}

async fn connect(from: &str) -> Result<Channel, PullError> {
    let uri = if from.contains("://") {
        from.to_owned()
    } else {
        format!("http://{from}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|error| PullError::BadAddress {
        from: from.to_owned(),
        reason: error.to_string(),
    })?;
    endpoint
        .connect()
        .await
        .map_err(|error| PullError::Unreachable {
            from: from.to_owned(),
            reason: transport_reason(&error),
        })
}

/// Whether the gRPC service `name` (`user.v1.UserService`) is one of `service`: its full
/// name, its package (`user.v1`), or a package under the name (`user` → `user.v1`).
fn belongs_to(name: &str, service: &str) -> bool {
    let package = name.rsplit_once('.').map_or("", |(package, _)| package);
    !reflect::is_infrastructure(name)
        && (name == service
            || package == service
            || package
                .strip_prefix(service)
                .is_some_and(|rest| rest.starts_with('.')))
}

/// A status as a reader wants it: the code, and the message when there is one.
fn describe(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unimplemented => {
            "it serves no gRPC reflection (grpc.reflection.v1 or v1alpha)".to_owned()
        }
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => format!(
            "{} (a node that wants the cluster's call credential answers only other nodes: pull through a gateway's rpc port)",
            status.message()
        ),
        code if status.message().is_empty() => format!("{code:?}"),
        code => format!("{code:?}: {}", status.message()),
    }
}

/// The innermost cause of a transport error ("Connection refused"), not tonic's wrapper.
fn transport_reason(error: &tonic::transport::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_name_picks_its_packages_and_nothing_that_merely_starts_alike() {
        assert!(belongs_to("user.v1.UserService", "user"));
        assert!(belongs_to("user.v1.UserService", "user.v1"));
        assert!(belongs_to("user.v1.UserService", "user.v1.UserService"));
        assert!(belongs_to("user.admin.v2.Accounts", "user"));
        assert!(!belongs_to("users.v1.Users", "user"));
        assert!(!belongs_to("order.v1.OrderService", "user"));
        assert!(!belongs_to("grpc.health.v1.Health", "grpc"));
        assert!(!belongs_to(
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1"
        ));
    }

    #[tokio::test]
    async fn an_address_nothing_listens_on_is_unreachable_with_the_reason() {
        // Bind a port and free it again: nothing listens on it now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap();
        let from = format!("127.0.0.1:{port}");
        let out = std::env::temp_dir().join(format!("rust-ms-pull-{}", std::process::id()));
        match pull("user", &from, &out, false).await {
            Err(PullError::Unreachable { reason, .. }) => {
                assert!(reason.to_lowercase().contains("refused"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!out.exists(), "nothing is written when nothing was read");
    }
}
