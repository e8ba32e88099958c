//! Reading `/metrics`: checked by Prometheus's own parser and linter (`promtool check
//! metrics`, from Debian's `prometheus` package), then read for values.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What `promtool check metrics` says of `text`: `Ok` when it parses and follows the
/// naming conventions, else promtool's own words.
pub fn promtool_check(text: &str) -> Result<(), String> {
    promtool(&["check", "metrics"], Path::new("."), Some(text))
}

/// Runs `promtool ARGS` in `dir`, with `stdin` on its standard input: `Ok` when it
/// succeeds, else what it printed.
pub fn promtool(args: &[&str], dir: &Path, stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool (apt-get install prometheus): {e}"))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// One sample: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of `name` in exposition text (label values unescaped).
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(inner) => {
                    let end = inner.rfind('}')?;
                    (parse_labels(&inner[..end])?, inner[end + 1..].trim())
                }
                None if rest.starts_with(' ') => (BTreeMap::new(), rest.trim()),
                None => return None,
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

/// The sum of `name` over the samples whose labels include every pair of `matching`.
pub fn sum(text: &str, name: &str, matching: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .into_iter()
        .filter(|s| {
            matching
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim_start_matches(',');
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_escaped_label_values() {
        let text = "# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"uote\"} 3\nx_total{a=\"2\"} 4\nx_total_other 9\n";
        let all = samples(text, "x_total");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].labels["b"], "q\"uote");
        assert_eq!(sum(text, "x_total", &[]), 7.0);
        assert_eq!(sum(text, "x_total", &[("a", "2")]), 4.0);
    }
}
