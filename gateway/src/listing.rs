//! `gateway nodes`: the services and nodes in the registry, as a table for people or as
//! JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registry::Instance;

/// One row per node, sorted by service then address: service, address, version, how long
/// it has been up, id.
pub fn table(nodes: &[Instance], now: SystemTime) -> String {
    let mut nodes: Vec<&Instance> = nodes.iter().collect();
    nodes.sort_by(|a, b| (&a.service, &a.address).cmp(&(&b.service, &b.address)));
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut rows = vec![[
        "SERVICE".to_owned(),
        "ADDRESS".to_owned(),
        "VERSION".to_owned(),
        "UP".to_owned(),
        "ID".to_owned(),
    ]];
    for node in &nodes {
        let up = match node.started_at_ms {
            0 => "-".to_owned(),
            started => humanize(Duration::from_millis(now_ms.saturating_sub(started))),
        };
        rows.push([
            node.service.clone(),
            node.address.clone(),
            if node.version.is_empty() {
                "-".to_owned()
            } else {
                node.version.clone()
            },
            up,
            node.id.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let services = nodes
        .iter()
        .map(|n| n.service.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    out.push_str(&format!(
        "{} node(s) of {services} service(s)\n",
        nodes.len()
    ));
    out
}

/// `[{"service", "id", "address", "version", "metadata", "started_at_ms"}]`, sorted as
/// the table is.
pub fn json(nodes: &[Instance]) -> String {
    let mut nodes = nodes.to_vec();
    nodes.sort_by(|a, b| (&a.service, &a.address).cmp(&(&b.service, &b.address)));
    serde_json::to_string_pretty(&nodes).unwrap_or_else(|_| "[]".to_owned())
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`: the two largest units.
fn humanize(up: Duration) -> String {
    let s = up.as_secs();
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_node_by_service_with_its_uptime() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut a = Instance::new("user", "10.0.0.2:8190").with_version("1.2.0");
        a.started_at_ms = (1_000_000 - 75) * 1000;
        let b = Instance::new("gateway", "10.0.0.1:8180");
        let text = table(&[a.clone(), b.clone()], now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SERVICE"), "{text}");
        assert!(lines[1].starts_with("gateway "), "{text}");
        assert!(
            lines[2].starts_with("user ") && lines[2].contains("1m15s"),
            "{text}"
        );
        assert!(lines[2].contains(&a.id), "{text}");
        assert_eq!(lines[3], "2 node(s) of 2 service(s)");
    }

    #[test]
    fn json_lists_the_same_nodes_for_scripts() {
        let nodes = [Instance::new("user", "10.0.0.2:8190")];
        let parsed: Vec<Instance> = serde_json::from_str(&json(&nodes)).unwrap();
        assert_eq!(parsed, nodes);
    }
}
