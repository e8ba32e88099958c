//! Where things live in etcd: `{namespace}/services/{service}/{id}` → instance JSON.

use registry::{Instance, RegistryError, Scope};

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    namespace: String,
}

impl Layout {
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.trim_end_matches('/').to_owned(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn services_prefix(&self) -> String {
        format!("{}/services/", self.namespace)
    }

    /// The key prefix covering a scope; a service's ends in `/` so `use` never matches `user`.
    pub fn prefix(&self, scope: &Scope) -> String {
        match scope {
            Scope::All => self.services_prefix(),
            Scope::Service(service) => format!("{}{service}/", self.services_prefix()),
        }
    }

    pub fn key(&self, service: &str, id: &str) -> String {
        format!("{}{service}/{id}", self.services_prefix())
    }

    /// Service and id from a key; `None` for keys that are not an instance's.
    pub fn identity<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(&self.services_prefix())?;
        let (service, id) = rest.split_once('/')?;
        (!service.is_empty() && !id.is_empty() && !id.contains('/')).then_some((service, id))
    }

    /// Decodes a stored instance; its identity comes from the key, never from the value.
    pub fn decode(&self, key: &[u8], value: &[u8]) -> Result<Option<Instance>, RegistryError> {
        let key = String::from_utf8_lossy(key);
        let Some((service, id)) = self.identity(&key) else {
            return Ok(None);
        };
        let mut instance: Instance =
            serde_json::from_slice(value).map_err(|e| RegistryError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        instance.service = service.to_owned();
        instance.id = id.to_owned();
        Ok(Some(instance))
    }

    pub fn encode(instance: &Instance) -> Result<String, RegistryError> {
        serde_json::to_string(instance).map_err(|e| RegistryError::backend("encode", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_go_ms_layout() {
        let layout = Layout::new("go-ms");
        assert_eq!(layout.key("user", "a1"), "go-ms/services/user/a1");
        assert_eq!(layout.prefix(&Scope::All), "go-ms/services/");
        assert_eq!(
            layout.prefix(&Scope::service("user")),
            "go-ms/services/user/"
        );
    }

    #[test]
    fn identity_comes_from_the_key_not_the_value() {
        let layout = Layout::new("go-ms");
        let stored = Instance::new("someone-else", "10.0.0.5:9010").with_id("forged");
        let value = Layout::encode(&stored).unwrap();
        let decoded = layout
            .decode(b"go-ms/services/user/a1", value.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            (decoded.service.as_str(), decoded.id.as_str()),
            ("user", "a1")
        );
        assert_eq!(decoded.address, "10.0.0.5:9010");
    }

    #[test]
    fn foreign_keys_are_skipped_and_bad_json_is_reported() {
        let layout = Layout::new("go-ms");
        assert!(layout.decode(b"go-ms/config/x", b"{}").unwrap().is_none());
        assert!(
            layout
                .decode(b"go-ms/services/user/a/b", b"{}")
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            layout.decode(b"go-ms/services/user/a1", b"not json"),
            Err(RegistryError::Corrupt { .. })
        ));
    }
}
