fn main() -> Result<(), Box<dyn std::error::Error>> {
    rust_ms_build::compile_protos(&["proto/bench/v1/bench.proto"], &["proto"])
}
