use registry::strip_scheme;

/// The URL etcd-client dials: the scheme follows whether TLS is configured.
pub(crate) fn to_url(endpoint: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", strip_scheme(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_tls() {
        assert_eq!(to_url("a:1", false), "http://a:1");
        assert_eq!(to_url("http://a:1", true), "https://a:1");
    }
}
