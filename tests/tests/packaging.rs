//! The files in `packaging/` are valid for the programs that read them.

use std::{fs, path::Path, process::Command};

use spamwall_tests::{daemon::spamwall_bin, seccomp::SyscallFilter};

fn packaging(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

/// `spamwall check-config PATH` accepts the file; `shown` follows the
/// errors in the failure message.
fn assert_check_config_accepts(path: &Path, shown: &str) {
    let out = Command::new(spamwall_bin())
        .arg("check-config")
        .arg(path)
        .output()
        .expect("running spamwall");
    assert!(
        out.status.success(),
        "{}\n{shown}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn example_configuration_passes_check_config() {
    assert_check_config_accepts(&packaging("spamwall.toml"), "");
}

/// Every setting the example shows commented out is valid as written: the
/// example with each `#key = value`, `#[section]` and continuation line
/// uncommented passes `check-config` (the fleet's secret file pointed at a
/// file that exists).
#[test]
fn example_configuration_with_every_commented_setting_passes_check_config() {
    let example = fs::read_to_string(packaging("spamwall.toml")).expect("reading the example");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("fleet.key");
    fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("writing the secret");
    let uncommented: String = example
        .lines()
        .map(|line| {
            let setting = line.strip_prefix('#').filter(|rest| {
                !rest.starts_with('#')
                    && (rest.starts_with(|c: char| !c.is_whitespace())
                        || rest.starts_with("  {")
                        || rest.starts_with(']'))
            });
            let line = setting.unwrap_or(line);
            let line = if line.starts_with("secret_file = ") {
                format!("secret_file = {:?}", secret.display().to_string())
            } else {
                line.to_owned()
            };
            line + "\n"
        })
        .collect();
    assert!(uncommented.contains("\n[policy]\n") && uncommented.contains("\n[fleet]\n"));
    let path = dir.path().join("spamwall.toml");
    fs::write(&path, &uncommented).expect("writing the uncommented example");
    assert_check_config_accepts(&path, &uncommented);
}

/// The first TOML block of README.md after `marker`, as printed.
fn readme_block(marker: &str) -> String {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("reading README.md");
    let start = readme
        .find(marker)
        .and_then(|at| readme[at..].find("```toml\n").map(|block| at + block + 8))
        .unwrap_or_else(|| panic!("README has no TOML block after {marker:?}"));
    let end = start + readme[start..].find("```").expect("the block ends");
    readme[start..end].to_owned()
}

/// `spamwall check-config` accepts `toml` as a whole file.
fn assert_block_accepted(toml: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("block.toml");
    fs::write(&path, toml).expect("writing the block");
    assert_check_config_accepts(&path, toml);
}

/// The configuration README's quick start gives is valid as printed.
#[test]
fn readme_quick_start_configuration_passes_check_config() {
    assert_block_accepted(&readme_block("**1. Configure.**"));
}

/// README's worked example of `spamwall import mtpolicyd` is what the
/// command prints for its input, exit 2 included, and loads.
#[test]
fn readme_mtpolicyd_import_example_is_what_the_import_prints() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("reading README.md");
    let marker = "A worked example, `mtpolicyd.conf`:\n\n```\n";
    let start = readme.find(marker).expect("README's mtpolicyd example") + marker.len();
    let input = &readme[start..start + readme[start..].find("```").expect("the block ends")];
    let printed = readme_block("`spamwall import mtpolicyd mtpolicyd.conf` prints");
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("mtpolicyd.conf"), input).expect("writing the input");
    let out = Command::new(spamwall_bin())
        .args(["import", "mtpolicyd", "mtpolicyd.conf"])
        .current_dir(dir.path())
        .output()
        .expect("running spamwall import");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), printed);
    assert_block_accepted(&printed);
}

/// The greylisting sections README shows are valid as printed.
#[test]
fn readme_greylisting_configuration_passes_check_config() {
    assert_block_accepted(&readme_block("## Greylisting"));
}

/// The blocklist feeds README shows are valid as printed, and a broken
/// `[[feed]]` is refused by `check-config` naming each key.
#[test]
fn readme_feed_configuration_passes_check_config_and_bad_feeds_do_not() {
    assert_block_accepted(&readme_block("## Blocklist feeds"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    fs::write(
        &path,
        "[[feed]]\nname = \"drop\"\nurl = \"ftp://example.org/x\"\nformat = \"plain\"\nwidest_v4 = 0\n",
    )
    .expect("writing the config");
    let output = spamwall_tests::daemon::spamwall(["check-config".as_ref(), path.as_os_str()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("feed[0] (drop).url:") && stderr.contains("feed[0] (drop).widest_v4:"),
        "{stderr}"
    );
}

#[test]
fn systemd_unit_verifies() {
    // systemd-analyze checks the binary exists and the user is known: point
    // both at what this machine has, keep everything else as shipped. The
    // man page is the package's (tests/tests/debian.rs checks it there).
    let unit = fs::read_to_string(packaging("spamwall.service")).expect("reading the unit");
    assert!(
        unit.contains("Type=notify"),
        "the daemon notifies readiness"
    );
    let bin = spamwall_bin();
    let local = unit
        .replace("/usr/sbin/spamwall", bin.to_str().expect("UTF-8 path"))
        .replace("User=spamwall", "User=daemon")
        .replace("Group=spamwall", "Group=daemon");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spamwall.service");
    fs::write(&path, local).expect("writing the unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("running systemd-analyze (package systemd)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("spamwall.service"))
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify:\n{report}"
    );
}

/// The unit starts the binary where the package puts it, and the
/// package's changelog names the workspace's version: cargo-deb takes the
/// version from Cargo, dpkg and lintian read the changelog.
#[test]
fn unit_package_metadata_and_changelog_agree() {
    let unit = fs::read_to_string(packaging("spamwall.service")).expect("reading the unit");
    assert!(
        unit.lines()
            .any(|line| line.starts_with("ExecStart=/usr/sbin/spamwall run ")),
        "the unit runs /usr/sbin/spamwall"
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy-daemon/Cargo.toml");
    let manifest = fs::read_to_string(manifest).expect("reading policy-daemon/Cargo.toml");
    for asset in [
        r#"["target/release/spamwall", "usr/sbin/", "755"]"#,
        r#"["../packaging/spamwall.service", "lib/systemd/system/", "644"]"#,
    ] {
        assert!(
            manifest.contains(asset),
            "[package.metadata.deb] lacks {asset}"
        );
    }
    let changelog =
        fs::read_to_string(packaging("debian/changelog")).expect("reading the changelog");
    assert_eq!(
        changelog.lines().next(),
        Some(
            format!(
                "spamwall ({}-1) unstable; urgency=medium",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        ),
        "packaging/debian/changelog's first entry is the workspace's version"
    );
}

/// Whether `systemd-analyze` runs here. Without it the test is skipped
/// with a message, except under `CI`, where that is a failure.
fn systemd_analyze_available(test: &str) -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    spamwall_tests::skip::require(test, found, "systemd-analyze (package systemd)")
}

/// The most `systemd-analyze security` may rate the unit (lower is
/// better; README, "Running under systemd", states the figure).
const MAX_EXPOSURE: f64 = 2.0;

#[test]
fn systemd_unit_exposure_stays_at_most_2_0() {
    if !systemd_analyze_available("systemd_unit_exposure_stays_at_most_2_0") {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(packaging("spamwall.service"))
        .output()
        .expect("running systemd-analyze security");
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once("Overall exposure level for ")?;
            rest.split_once(':')?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no \"Overall exposure level\" line in:\n{report}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        exposure <= MAX_EXPOSURE,
        "systemd-analyze security rates the unit {exposure}, above {MAX_EXPOSURE}:\n{report}"
    );
}

#[test]
fn systemd_unit_open_file_limit_fits_the_default_caps() {
    let unit = fs::read_to_string(packaging("spamwall.service")).expect("reading the unit");
    let limit: u64 = unit
        .lines()
        .find_map(|line| line.strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    let max_connections = spamwall::policy::PolicyConfig::default().max_connections;
    let budget = spamwall::daemon::fd_budget(max_connections);
    assert!(
        limit >= budget,
        "LimitNOFILE={limit} is below the {budget} descriptors the listeners may need with max_connections = {max_connections}"
    );
}

#[test]
fn systemd_unit_syscall_filter_allows_bpf_and_nothing_privileged() {
    if !systemd_analyze_available("systemd_unit_syscall_filter_allows_bpf_and_nothing_privileged") {
        return;
    }
    let filter = SyscallFilter::of_unit(
        &packaging("spamwall.service"),
        Path::new(env!("CARGO_BIN_EXE_seccomp-exec")),
    );
    for needed in [
        "bpf",
        "socket",
        "accept4",
        "epoll_wait",
        "prlimit64",
        "execve",
    ] {
        assert!(filter.allows(needed), "the unit's filter refuses {needed}");
    }
    for refused in [
        "setuid",
        "setresuid",
        "capset",
        "chown",
        "mount",
        "ptrace",
        "perf_event_open",
        "init_module",
        "setrlimit",
        "sched_setaffinity",
    ] {
        assert!(
            !filter.allows(refused),
            "the unit's filter allows {refused}"
        );
    }
}
