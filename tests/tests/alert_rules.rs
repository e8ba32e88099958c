//! The Prometheus rules an operator loads (`deploy/prometheus/rules.yml`): promtool reads
//! them, its unit tests (`rules_test.yml`) see each alert fire where it should and stay
//! quiet beside it, and every metric they read is one rust-ms exports, with its gRPC
//! codes spelled as the metrics spell them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use telemetry::prometheus::names;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> Result<(), String> {
    tests::metrics::promtool(args, &rules_dir(), None)
}

#[test]
fn promtool_reads_the_rules() {
    promtool(&["check", "rules", "rules.yml"]).unwrap_or_else(|why| panic!("{why}"));
}

#[test]
fn each_alert_fires_on_its_cases_and_not_beside_them() {
    promtool(&["test", "rules", "rules_test.yml"]).unwrap_or_else(|why| panic!("{why}"));
}

#[test]
fn the_rules_read_only_metrics_rust_ms_exports() {
    let exported: BTreeSet<&str> = [
        names::SERVER_REQUESTS,
        names::SERVER_DURATION,
        names::REGISTRY_EVENTS,
        names::LEASE_REACQUISITIONS,
        names::KEEPALIVE_FAILURES,
        names::RELISTS,
        names::GATEWAY_REQUESTS,
        names::GATEWAY_DURATION,
        names::GATEWAY_IN_FLIGHT,
        names::GATEWAY_RETRIES,
        names::GATEWAY_BUDGET_EXHAUSTED,
        names::GATEWAY_RATE_LIMITED,
        names::GATEWAY_RATE_LIMIT_SHARE,
        names::GATEWAY_CANARY_PERCENT,
        names::GATEWAY_CANARY_ROLLED_BACK,
        names::GATEWAY_CIRCUIT_REFUSED,
        names::GATEWAY_SHED,
        names::GATEWAY_CONCURRENCY_LIMIT,
        names::GATEWAY_MIRRORED,
        names::GATEWAY_CIRCUIT_OPEN,
        names::GATEWAY_EJECTIONS,
        names::GATEWAY_HEALTH_CHECKS,
        names::GATEWAY_NODES,
        names::GATEWAY_ROUTE_REVISION,
        names::NODE_INFO,
    ]
    .into();
    let rules = std::fs::read_to_string(rules_dir().join("rules.yml")).expect("rules.yml");
    // Recorded series are named `level:metric:operations`; what they read is in `expr`.
    let read: BTreeSet<&str> = rules
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.contains("record:"))
        .flat_map(|line| line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')))
        .filter(|word| word.starts_with("rustms_"))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .filter(|base| exported.contains(base))
                .unwrap_or(word)
        })
        .collect();
    assert!(
        read.len() >= 6,
        "the rules read too few metrics to be checked: {read:?}"
    );
    let unknown: Vec<_> = read.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "rules.yml reads metrics rust-ms does not export: {unknown:?}"
    );
}

/// The rules and the series their unit tests replay spell gRPC codes as the metrics do:
/// a rule matching `Unavailable` where the metrics say `UNAVAILABLE` would never fire.
#[test]
fn the_rules_and_their_tests_name_grpc_codes_as_the_metrics_spell_them() {
    let spelled: BTreeSet<&str> = (0..=16)
        .map(|n| telemetry::grpc::code_name(tonic::Code::from_i32(n)))
        .collect();
    for file in ["rules.yml", "rules_test.yml"] {
        let text = std::fs::read_to_string(rules_dir().join(file)).expect(file);
        let named: Vec<&str> = text
            .match_indices("grpc_code")
            .filter_map(|(at, _)| {
                // grpc_code="X", grpc_code=~"X|Y" or grpc_code!="X": the quoted value.
                let rest = &text[at..];
                let open = rest.find('"')?;
                let close = rest[open + 1..].find('"')?;
                Some(&rest[open + 1..open + 1 + close])
            })
            .flat_map(|value| value.split('|'))
            .collect();
        assert!(!named.is_empty(), "{file} names no gRPC code");
        let unknown: Vec<_> = named.iter().filter(|c| !spelled.contains(*c)).collect();
        assert!(
            unknown.is_empty(),
            "{file} names grpc_code values the metrics never carry: {unknown:?} (they carry {spelled:?})"
        );
    }
}
