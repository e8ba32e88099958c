use crate::RegistryError;

/// A service name or instance id: a non-empty path segment of letters, digits, `.`, `_`, `-`.
///
/// Names become etcd key segments, so `/` would let one service read as another's child.
pub fn validate_name(field: &'static str, value: &str) -> Result<(), RegistryError> {
    if value.is_empty() {
        return Err(RegistryError::invalid(field, "must not be empty"));
    }
    if value.contains('/') {
        return Err(RegistryError::invalid(
            field,
            format!("{value:?} must not contain '/'"),
        ));
    }
    if value.len() > 128 {
        return Err(RegistryError::invalid(
            field,
            format!("{value:?} is longer than 128 bytes"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(RegistryError::invalid(
            field,
            format!("{value:?} contains {bad:?}; use letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok(())
}

/// An advertised address: `host:port`, with IPv6 hosts in brackets (`[::1]:80`).
pub fn validate_address(value: &str) -> Result<(), RegistryError> {
    const FIELD: &str = "address";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(RegistryError::invalid(
            FIELD,
            format!("{value:?} is not host:port"),
        ));
    };
    if host.is_empty() {
        return Err(RegistryError::invalid(
            FIELD,
            format!("{value:?} has no host before the port"),
        ));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(RegistryError::invalid(
            FIELD,
            format!("{value:?}: an IPv6 host must be written in brackets"),
        ));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(RegistryError::invalid(
            FIELD,
            format!("{value:?} has a host with spaces or '/'"),
        ));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(RegistryError::invalid(
            FIELD,
            format!("{value:?}: port 0 cannot be reached; register the port the OS chose"),
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(RegistryError::invalid(
            FIELD,
            format!("{value:?}: port {port:?} is not a number from 1 to 65535"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: RegistryError) -> &'static str {
        match err {
            RegistryError::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn names_refuse_empty_slash_and_odd_characters() {
        assert!(validate_name("service", "user").is_ok());
        assert!(validate_name("service", "user-v2.eu_1").is_ok());
        assert_eq!(
            field_of(validate_name("service", "").unwrap_err()),
            "service"
        );
        assert_eq!(field_of(validate_name("id", "a/b").unwrap_err()), "id");
        assert!(validate_name("service", "a b").is_err());
        assert!(validate_name("service", &"x".repeat(129)).is_err());
    }

    #[test]
    fn addresses_must_be_host_and_port() {
        for good in ["127.0.0.1:80", "node-1.local:9010", "[::1]:8080"] {
            assert!(validate_address(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            ":80",
            "host:",
            "host:http",
            "host:70000",
            "host:0",
            "::1:80",
            "a b:80",
        ] {
            assert_eq!(
                field_of(validate_address(bad).unwrap_err()),
                "address",
                "{bad}"
            );
        }
    }
}
