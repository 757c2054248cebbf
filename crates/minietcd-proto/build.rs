//! Compiles etcd's v3 API from the workspace's top-level `proto/` with a pure-Rust protobuf
//! compiler (protox), so a fresh machine builds without a system `protoc`. The server's own
//! `proto/internal.proto` is compiled by the root build.rs, on top of these types. The
//! compiled descriptors are kept too (`etcd_descriptor.bin`): the server's JSON gateway maps
//! messages to JSON by their field names.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../../proto";
    let files = [
        format!("{dir}/kv.proto"),
        format!("{dir}/auth.proto"),
        format!("{dir}/rpc.proto"),
        format!("{dir}/v3lock.proto"),
        format!("{dir}/v3election.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let mut compiler = protox::Compiler::new([dir])?;
    compiler.include_imports(true).open_files(&files)?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("etcd_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
