//! `user --config config/user.toml`: the example account service.

fn main() -> std::process::ExitCode {
    services::user::service().run()
}
