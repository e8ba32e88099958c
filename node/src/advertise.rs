//! The address other nodes dial to reach this one.

use std::net::IpAddr;

/// `auto` becomes the host's first non-loopback IPv4 address (127.0.0.1 when it has
/// none); anything else is taken as given.
pub fn resolve_host(configured: &str) -> String {
    if configured != "auto" {
        return configured.to_owned();
    }
    let found = if_addrs::get_if_addrs().ok().and_then(|addrs| {
        addrs
            .into_iter()
            .map(|a| a.ip())
            .find(|ip| matches!(ip, IpAddr::V4(v4) if !v4.is_loopback()))
    });
    match found {
        Some(ip) => ip.to_string(),
        None => {
            tracing::warn!("no non-loopback IPv4 address found; advertising 127.0.0.1");
            "127.0.0.1".to_owned()
        }
    }
}

/// `host:port`, with IPv6 hosts in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_host_is_kept_and_auto_is_never_loopback_unless_nothing_else() {
        assert_eq!(resolve_host("10.1.2.3"), "10.1.2.3");
        let auto = resolve_host("auto");
        assert!(auto.parse::<std::net::Ipv4Addr>().is_ok(), "{auto}");
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("127.0.0.1", 80), "127.0.0.1:80");
    }
}
