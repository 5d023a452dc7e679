//! Builds the XDP program with the nightly toolchain and bpf-linker, for the
//! daemon to embed, and records the git commit for `spamwall --version`.
//! `EBPF_TOOLCHAIN` overrides the toolchain name.
use std::path::{Path, PathBuf};
use std::process::Command;

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
    println!(
        "cargo:rustc-env=SPAMWALL_COMMIT={}",
        describe_commit(workspace)
    );
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

/// "commit <12 hex digits>" when `workspace` is the top of a git checkout,
/// else "unknown commit": a source tarball (perhaps unpacked inside some
/// other repository, whose commit would be a lie), or no git at all.
fn describe_commit(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_owned())
    };
    let ours = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top).canonicalize().ok() == workspace.canonicalize().ok());
    if !ours {
        return "unknown commit".to_owned();
    }
    // What moves HEAD in this checkout: HEAD itself (a checkout), its
    // reflog (every commit, reset, merge), the branch's ref. Only files
    // that exist: cargo reruns a build script on every build while a
    // watched path is missing.
    let mut watched = vec!["HEAD".to_owned(), "logs/HEAD".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && Path::new(&path).is_file()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "--verify", "-q", "HEAD"])
        .filter(|hash| hash.len() >= 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(
            || "unknown commit".to_owned(),
            |hash| format!("commit {}", &hash[..12]),
        )
}
