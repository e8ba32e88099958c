use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{RegistryError, validate_address, validate_name};

/// One running node of one service, as every other node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// In a registry, taken from the key: a value written by another program need not
    /// repeat it.
    #[serde(default)]
    pub service: String,
    /// Stable for the life of the process; unique within the service. Like `service`,
    /// taken from the key.
    #[serde(default)]
    pub id: String,
    /// `host:port` other nodes dial.
    pub address: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the process started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at_ms: u64,
}

impl Instance {
    /// A new instance with a random id, started now.
    pub fn new(service: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            id: uuid::Uuid::new_v4().simple().to_string(),
            address: address.into(),
            version: String::new(),
            metadata: BTreeMap::new(),
            started_at_ms: unix_millis_now(),
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Refuses what a registry must not store, naming the field and the rule.
    pub fn validate(&self) -> Result<(), RegistryError> {
        validate_name("service", &self.service)?;
        validate_name("id", &self.id)?;
        validate_address(&self.address)
    }
}

pub fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a node asks the registry to keep alive: an instance and how long it outlives silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub instance: Instance,
    pub ttl: Duration,
}

impl Registration {
    pub const MIN_TTL: Duration = Duration::from_secs(1);
    pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

    pub fn new(instance: Instance) -> Self {
        Self {
            instance,
            ttl: Self::DEFAULT_TTL,
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn validate(&self) -> Result<(), RegistryError> {
        self.instance.validate()?;
        if self.ttl < Self::MIN_TTL {
            return Err(RegistryError::invalid(
                "ttl",
                format!("{:?} is under the minimum of 1s", self.ttl),
            ));
        }
        Ok(())
    }
}

/// Which instances a snapshot or a watch covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Service(String),
}

impl Scope {
    pub fn service(name: impl Into<String>) -> Self {
        Self::Service(name.into())
    }

    pub fn covers(&self, service: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Service(name) => name == service,
        }
    }

    pub fn validate(&self) -> Result<(), RegistryError> {
        match self {
            Scope::All => Ok(()),
            Scope::Service(name) => validate_name("service", name),
        }
    }
}

/// The instances of a scope at one revision; a watch can start exactly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub scope: Scope,
    pub revision: u64,
    /// Sorted by service, then id.
    pub instances: Vec<Instance>,
}

impl Snapshot {
    pub fn new(scope: Scope, revision: u64, mut instances: Vec<Instance>) -> Self {
        instances.sort_by(|a, b| (&a.service, &a.id).cmp(&(&b.service, &b.id)));
        Self {
            scope,
            revision,
            instances,
        }
    }

    /// Service names present, sorted, each once.
    pub fn services(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.instances.iter().map(|i| i.service.as_str()).collect();
        names.dedup();
        names
    }
}
