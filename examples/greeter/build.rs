fn main() -> Result<(), Box<dyn std::error::Error>> {
    rust_ms_build::compile_protos(&["proto/greeter/v1/greeter.proto"], &["proto"])
}
