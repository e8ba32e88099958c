//! `order --config config/order.toml`: the example service that calls `user`.

fn main() -> std::process::ExitCode {
    services::order::service().run()
}
