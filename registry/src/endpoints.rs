use crate::{RegistryError, validate_address};

/// Splits an endpoint list in GO-MS's `a|b` form (commas work too) and checks that each
/// is `host:port` or `http(s)://host:port`. Errors name the field `etcd_addr`.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, RegistryError> {
    let endpoints: Vec<String> = list
        .split(['|', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        return Err(RegistryError::invalid(
            "etcd_addr",
            format!("{list:?} names no endpoint; expected host:port, several joined by '|' or ','"),
        ));
    }
    for endpoint in &endpoints {
        validate_address(strip_scheme(endpoint)).map_err(|_| {
            RegistryError::invalid(
                "etcd_addr",
                format!("{endpoint:?} is not host:port (in {list:?})"),
            )
        })?;
    }
    Ok(endpoints)
}

/// The endpoint without an `http://` or `https://` in front.
pub fn strip_scheme(endpoint: &str) -> &str {
    endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_ms_pipes_and_commas_both_split() {
        assert_eq!(
            parse_endpoints("127.0.0.1:2379|127.0.0.1:2380").unwrap(),
            vec!["127.0.0.1:2379", "127.0.0.1:2380"]
        );
        assert_eq!(
            parse_endpoints(" a:1, http://b:2 |c:3").unwrap(),
            vec!["a:1", "http://b:2", "c:3"]
        );
    }

    #[test]
    fn empty_or_portless_endpoints_are_refused_by_name() {
        for bad in ["", " | ", "127.0.0.1", "a:1|b"] {
            match parse_endpoints(bad) {
                Err(RegistryError::InvalidInput { field, reason }) => {
                    assert_eq!(field, "etcd_addr");
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
    }
}
