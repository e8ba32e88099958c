//! Client code only: a crate that calls `user` or `order` depends on this one and gets
//! none of their server code (nor argon2, nor jsonwebtoken).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    rust_ms_build::Protos::new(&["proto"])
        .calls(&["proto/user/v1/user.proto", "proto/order/v1/order.proto"])
        .compile()?;
    Ok(())
}
