use registry::RegistryError;

/// Why a node could not start or run. Binaries print it as one line and exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),

    #[error("cannot reach the registry ({backend}): {source}")]
    Registry {
        backend: String,
        #[source]
        source: RegistryError,
    },

    #[error("{0}")]
    Unsupported(String),

    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} failed: {cause}")]
    Serve { what: &'static str, cause: String },

    /// The service's own setup (stores, clients) failed.
    #[error("{service}: {source}")]
    Setup {
        service: String,
        #[source]
        source: crate::service::BoxError,
    },

    /// A TLS setting that cannot be used; `key` is the configuration key.
    #[error("{key}: {cause}")]
    Tls { key: String, cause: String },

    #[error(transparent)]
    Credentials(#[from] cluster::credentials::CredentialsError),

    /// A descriptor set given to `Service::calls` is not one.
    #[error("the descriptors of the services {service} calls cannot be read: {source}")]
    CalledDescriptors {
        service: String,
        #[source]
        source: prost_reflect::DescriptorError,
    },
}
