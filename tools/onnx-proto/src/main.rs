//! Compiles proto/onnx.proto with protox (a protobuf compiler in Rust, so no protoc) and has
//! prost-build write the Rust messages to out/onnx.rs.
fn main() {
    let files = protox::compile(["proto/onnx.proto"], ["proto"]).expect("onnx.proto compiles");
    std::fs::create_dir_all("out").expect("out/ can be made");
    prost_build::Config::new()
        .out_dir("out")
        .compile_fds(files)
        .expect("prost-build writes the messages");
}
