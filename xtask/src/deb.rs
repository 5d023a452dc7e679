//! `cargo xtask deb`: the Debian package. Builds the daemon, writes what
//! is generated from its command-line definitions (man pages with
//! `docgen`, completion scripts with `spamwall completions`) under
//! `target/release/deb/`, then packs everything `[package.metadata.deb]`
//! in `policy-daemon/Cargo.toml` lists with cargo-deb.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::{describe, display, run};
use crate::{cargo, setup, spamwall_bin, target_dir};

/// Completion scripts: the shell, and the file name its completion
/// directory expects (the package's assets use the same names).
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "spamwall"),
    ("zsh", "_spamwall"),
    ("fish", "spamwall.fish"),
];

/// Builds the package; prints its path as the last line on stdout and
/// returns it.
pub fn deb() -> Result<PathBuf> {
    setup::ensure()?;
    run(&mut cargo(&[
        "build",
        "--release",
        "-p",
        "policy-daemon",
        "-p",
        "docgen",
    ])?)?;
    let generated = target_dir()?.join("release/deb");
    // Start afresh: a verb that was removed must not keep its man page.
    if generated.exists() {
        fs::remove_dir_all(&generated)
            .with_context(|| format!("cannot remove {}", generated.display()))?;
    }
    let man = generated.join("man");
    run(Command::new(target_dir()?.join("release/docgen")).arg(&man))?;
    // Debian ships man pages as `gzip -9n` (no name, no time stamp, so the
    // package is reproducible); cargo-deb compresses only files it does not
    // take from the target directory.
    let mut pages: Vec<PathBuf> = fs::read_dir(&man)
        .with_context(|| format!("cannot list {}", man.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", man.display()))?;
    pages.sort();
    run(Command::new("gzip").arg("-9n").args(&pages))?;
    let completions = generated.join("completions");
    fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    for (shell, file) in COMPLETIONS {
        let mut cmd = Command::new(spamwall_bin()?);
        cmd.args(["completions", shell]);
        let script = stdout_of(&mut cmd)?;
        let path = completions.join(file);
        fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut pack = cargo(&["deb", "-p", "policy-daemon", "--no-build"])?;
    let printed = stdout_of(&mut pack)?;
    let Some(path) = printed
        .lines()
        .map(|line| Path::new(line.trim()))
        .rfind(|path| path.extension() == Some(OsStr::new("deb")))
    else {
        bail!("cargo deb printed no package path: {printed:?}");
    };
    let path = path.to_owned();
    println!("{}", path.display());
    Ok(path)
}

/// Echoes and runs `cmd` with standard error passed through (progress,
/// warnings); returns its standard output, and fails unless it exits 0.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    eprintln!("==> {line}");
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!("`{line}` failed with {}", describe(out.status));
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}
