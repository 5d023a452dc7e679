//! Builds the XDP program with the nightly toolchain and bpf-linker, for the
//! daemon to embed. `EBPF_TOOLCHAIN` overrides the toolchain name.
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let workspace = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("policy-daemon is not inside the workspace"))?;
    let ebpf_dir = workspace.join("xdp-ebpf");
    let common_dir = workspace.join("xdp-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    println!("cargo:rerun-if-env-changed=EBPF_TOOLCHAIN");
    let toolchain = std::env::var("EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".to_owned());
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("workspace path {} is not UTF-8", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "xdp-ebpf",
            root_dir,
            ..Package::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .context(
        "building the XDP program (needs the nightly toolchain with rust-src and bpf-linker: \
         run `cargo xtask setup`)",
    )
}
