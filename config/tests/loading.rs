#![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
//! Loading order, unknown keys and bad values, each error naming the key and its origin.

use std::time::Duration;

use config::{Backend, ConfigError, DEFAULT_ADMIN_LISTEN, Flags, Validate, load};
use figment::Jail;
use serde::{Deserialize, Serialize};

mod common;

use common::UserLike;

fn err(result: Result<config::Loaded<UserLike>, ConfigError>) -> String {
    match result {
        Ok(loaded) => panic!("accepted: {:?}", loaded.node),
        Err(e) => e.to_string(),
    }
}

#[test]
fn later_layers_win_defaults_file_env_flags() {
    Jail::expect_with(|jail| {
        jail.create_file("user.toml", "rpc_port = 9000\nhttp_port = 9001\n[registry]\nttl = \"7s\"\n[user]\nmin_password_len = 10\n")?;
        jail.set_env("MS_RPC_PORT", "9100");
        jail.set_env("MS_REGISTRY__ETCD_ADDR", "10.0.0.1:2379|10.0.0.2:2379");
        let mut flags = Flags::new();
        flags.set("registry.backend", "--registry", "memory");
        let loaded = load::<UserLike>(Some("user.toml".as_ref()), &flags).unwrap();
        let c = &loaded;
        assert_eq!(c.node.http_port, 9001, "file over defaults");
        assert_eq!(c.node.rpc_port, 9100, "env over file");
        assert_eq!(c.node.registry.backend, Backend::Memory, "flags over all");
        assert_eq!(c.node.registry.ttl, Duration::from_secs(7));
        assert_eq!(c.node.registry.namespace, "go-ms", "defaults stay");
        assert_eq!(c.service.user.min_password_len, 10);
        assert_eq!(
            c.node.registry.endpoints().unwrap(),
            vec!["10.0.0.1:2379", "10.0.0.2:2379"]
        );
        assert_eq!(
            loaded.origin("rpc_port"),
            "environment variable MS_RPC_PORT"
        );
        Ok(())
    });
}

#[test]
fn unknown_key_in_a_file_names_the_key_file_and_line() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "user.toml",
            "rpc_port = 9000\n[registry]\nnamespace = \"x\"\nttll = \"7s\"\n",
        )?;
        let message = err(load::<UserLike>(Some("user.toml".as_ref()), &Flags::new()));
        assert!(message.contains("unknown key registry.ttll"), "{message}");
        assert!(message.contains("user.toml line 4"), "{message}");
        Ok(())
    });
}

#[test]
fn unknown_environment_key_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("MS_RPC_PROT", "9000");
        let message = err(load::<UserLike>(None, &Flags::new()));
        assert!(message.contains("unknown key rpc_prot"), "{message}");
        assert!(
            message.contains("environment variable MS_RPC_PROT"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn unknown_environment_table_names_the_full_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("MS_ORDERS__LIMIT", "3");
        let message = err(load::<UserLike>(None, &Flags::new()));
        assert!(message.contains("unknown key orders.limit"), "{message}");
        assert!(
            message.contains("environment variable MS_ORDERS__LIMIT"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn bad_value_names_the_key_and_its_source() {
    Jail::expect_with(|jail| {
        jail.create_file("user.toml", "[registry]\nbackend = \"zookeeper\"\n")?;
        let message = err(load::<UserLike>(Some("user.toml".as_ref()), &Flags::new()));
        assert!(message.contains("registry.backend"), "{message}");
        assert!(message.contains("user.toml line 2"), "{message}");
        assert!(message.contains("zookeeper"), "{message}");

        jail.set_env("MS_RPC_PORT", "seventy");
        let message = err(load::<UserLike>(None, &Flags::new()));
        assert!(
            message.contains("rpc_port") && message.contains("MS_RPC_PORT"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn values_that_parse_but_cannot_work_are_refused() {
    Jail::expect_with(|jail| {
        jail.create_file("a.toml", "[registry]\nttl = \"500ms\"\n")?;
        let message = err(load::<UserLike>(Some("a.toml".as_ref()), &Flags::new()));
        assert!(
            message.contains("registry.ttl") && message.contains("a.toml line 2"),
            "{message}"
        );

        let mut flags = Flags::new();
        flags.set("registry.etcd_addr", "--etcd-addr", "127.0.0.1");
        let message = err(load::<UserLike>(None, &flags));
        assert!(message.contains("registry.etcd_addr"), "{message}");
        assert!(
            message.contains("command-line flag --etcd-addr"),
            "{message}"
        );

        jail.create_file("b.toml", "[user]\nmin_password_len = 2\n")?;
        let message = err(load::<UserLike>(Some("b.toml".as_ref()), &Flags::new()));
        assert!(
            message.contains("user.min_password_len") && message.contains("b.toml line 2"),
            "{message}"
        );

        jail.set_env("MS_ADVERTISE_HOST", "10.0.0.1:80");
        let message = err(load::<UserLike>(None, &Flags::new()));
        assert!(message.contains("advertise_host"), "{message}");
        jail.set_env("MS_ADVERTISE_HOST", "127.0.0.1");

        jail.create_file(
            "c.toml",
            "[security.mtls]\nca = \"ca.pem\"\nkey = \"node.key\"\n",
        )?;
        let message = err(load::<UserLike>(Some("c.toml".as_ref()), &Flags::new()));
        assert!(
            message.contains("security.mtls") && message.contains("has no cert"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn missing_or_broken_file_is_refused_with_its_path() {
    Jail::expect_with(|jail| {
        let message = err(load::<UserLike>(Some("nope.toml".as_ref()), &Flags::new()));
        assert!(
            message.contains("nope.toml") && message.contains("no such file"),
            "{message}"
        );
        jail.create_file("broken.toml", "rpc_port = \n")?;
        let message = err(load::<UserLike>(
            Some("broken.toml".as_ref()),
            &Flags::new(),
        ));
        assert!(message.contains("broken.toml"), "{message}");
        Ok(())
    });
}

#[test]
fn test_harness_variables_are_not_node_keys() {
    Jail::expect_with(|jail| {
        jail.set_env("MS_ETCD_IMAGE", "rust-ms/etcd:local");
        jail.set_env("MS_TEST_ETCD_ENDPOINTS", "127.0.0.1:2379");
        assert!(load::<UserLike>(None, &Flags::new()).is_ok());
        Ok(())
    });
}

#[test]
fn printed_config_loads_back_to_the_same_values() {
    Jail::expect_with(|jail| {
        jail.set_env("MS_RPC_PORT", "9100");
        let loaded = load::<UserLike>(None, &Flags::new()).unwrap();
        jail.create_file("printed.toml", &loaded.to_toml().unwrap())?;
        jail.clear_env();
        let again = load::<UserLike>(Some("printed.toml".as_ref()), &Flags::new()).unwrap();
        assert_eq!(again.node, loaded.node);
        Ok(())
    });
}

#[test]
fn admin_listen_is_given_when_a_file_a_variable_or_a_flag_sets_it_even_to_the_default() {
    Jail::expect_with(|jail| {
        let defaults = load::<UserLike>(None, &Flags::new()).unwrap();
        assert_eq!(defaults.node.admin.listen, DEFAULT_ADMIN_LISTEN);
        assert!(!defaults.given("admin.listen"));

        // Another key of [admin] set: listen stays the default.
        jail.create_file("token.toml", "[admin]\ntoken = \"t\"\n")?;
        let token = load::<UserLike>(Some("token.toml".as_ref()), &Flags::new()).unwrap();
        assert!(!token.given("admin.listen"));
        assert!(token.given("admin.token"));

        let default = format!("[admin]\nlisten = \"{DEFAULT_ADMIN_LISTEN}\"\n");
        jail.create_file("listen.toml", &default)?;
        let file = load::<UserLike>(Some("listen.toml".as_ref()), &Flags::new()).unwrap();
        assert!(file.given("admin.listen"), "set in the file");

        let mut flags = Flags::new();
        flags.set("admin.listen", "--admin-listen", DEFAULT_ADMIN_LISTEN);
        assert!(
            load::<UserLike>(None, &flags)
                .unwrap()
                .given("admin.listen"),
            "set by a flag"
        );

        jail.set_env("MS_ADMIN__LISTEN", DEFAULT_ADMIN_LISTEN);
        let env = load::<UserLike>(None, &Flags::new()).unwrap();
        assert!(env.given("admin.listen"), "set in the environment");
        Ok(())
    });
}

/// A service section with an optional path, which a null leaves unset without complaint.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct WithOptionalPath {
    svc: OptionalPath,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct OptionalPath {
    cert: Option<std::path::PathBuf>,
}

impl Validate for WithOptionalPath {}

#[cfg(unix)]
#[test]
fn a_flag_whose_value_cannot_be_serialized_is_refused_naming_the_key_and_flag() {
    use std::os::unix::ffi::OsStrExt;
    Jail::expect_with(|_| {
        // A path that is not UTF-8 has no JSON form; it used to become null: silently unset.
        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/etc/\xffcert.pem"));
        let mut flags = Flags::new();
        flags.set("svc.cert", "--svc-cert", path);
        let message = match load::<WithOptionalPath>(None, &flags) {
            Ok(loaded) => panic!("accepted: {:?}", loaded.service),
            Err(e) => e.to_string(),
        };
        assert!(message.contains("svc.cert"), "{message}");
        assert!(
            message.contains("command-line flag --svc-cert"),
            "{message}"
        );
        Ok(())
    });
}

/// A service section whose `Serialize` refuses some values it deserializes.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct CannotReadBack {
    svc: Picky,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Picky {
    #[serde(serialize_with = "only_small")]
    limit: u32,
}

fn only_small<S: serde::Serializer>(value: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    if *value > 100 {
        return Err(serde::ser::Error::custom(
            "limit over 100 cannot be written",
        ));
    }
    serializer.serialize_u32(*value)
}

impl Validate for CannotReadBack {}

#[test]
fn sections_that_cannot_be_read_back_fail_loading_instead_of_skipping_the_unknown_key_check() {
    Jail::expect_with(|jail| {
        jail.create_file("svc.toml", "[svc]\nlimit = 200\nlimt = 3\n")?;
        let error = load::<CannotReadBack>(Some("svc.toml".as_ref()), &Flags::new())
            .map(|loaded| loaded.service)
            .unwrap_err();
        assert!(
            matches!(error, ConfigError::NotReadBack { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("limit over 100 cannot be written"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn an_unknown_key_holding_a_datetime_is_named_as_written() {
    Jail::expect_with(|jail| {
        jail.create_file("user.toml", "[registry]\nstarted = 1979-05-27T07:32:00Z\n")?;
        let message = err(load::<UserLike>(Some("user.toml".as_ref()), &Flags::new()));
        assert!(
            message.contains("unknown key registry.started (set in user.toml line 2)"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn client_deadlines_per_called_service_are_read_and_bad_ones_name_their_key() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "order.toml",
            "[client]\ntimeout = \"3s\"\n[client.services.user]\ntimeout = \"1s\"\n",
        )?;
        jail.set_env("MS_CLIENT__SERVICES__STOCK__TIMEOUT", "250ms");
        let loaded = load::<UserLike>(Some("order.toml".as_ref()), &Flags::new()).unwrap();
        let client = &loaded.node.client;
        assert_eq!(client.timeout_of("user"), Duration::from_secs(1));
        assert_eq!(client.timeout_of("stock"), Duration::from_millis(250));
        assert_eq!(client.timeout_of("other"), Duration::from_secs(3));

        jail.create_file("zero.toml", "[client.services.user]\ntimeout = \"0s\"\n")?;
        let message = err(load::<UserLike>(Some("zero.toml".as_ref()), &Flags::new()));
        assert!(
            message.contains("client.services.user.timeout"),
            "{message}"
        );

        jail.create_file("typo.toml", "[client.services.user]\ntimout = \"1s\"\n")?;
        let message = err(load::<UserLike>(Some("typo.toml".as_ref()), &Flags::new()));
        assert!(
            message.contains("unknown key client.services.user.timout"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn labels_are_read_from_files_and_variables_and_the_runtimes_keys_are_refused() {
    Jail::expect_with(|jail| {
        jail.create_file("a.toml", "[labels]\ncolor = \"blue\"\n")?;
        jail.set_env("MS_LABELS__ZONE", "eu-1");
        let loaded = load::<UserLike>(Some("a.toml".as_ref()), &Flags::new()).expect("loads");
        let labels: Vec<(&str, &str)> = loaded
            .node
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, [("color", "blue"), ("zone", "eu-1")]);

        jail.create_file("b.toml", "[labels]\n\"grpc.services\" = \"x.v1.X\"\n")?;
        let message = err(load::<UserLike>(Some("b.toml".as_ref()), &Flags::new()));
        assert!(
            message.contains("labels.grpc.services") && message.contains("written by the runtime"),
            "{message}"
        );
        Ok(())
    });
}
