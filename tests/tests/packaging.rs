//! The files in `packaging/` are valid for the programs that read them.

use std::{fs, path::Path, process::Command};

use spamwall_tests::daemon::spamwall_bin;

fn packaging(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

#[test]
fn example_configuration_passes_check_config() {
    let out = Command::new(spamwall_bin())
        .arg("check-config")
        .arg(packaging("spamwall.toml"))
        .output()
        .expect("running spamwall");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_verifies() {
    // systemd-analyze checks the binary exists and the user is known: point
    // both at what this machine has, keep everything else as shipped.
    let unit = fs::read_to_string(packaging("spamwall.service")).expect("reading the unit");
    assert!(
        unit.contains("Type=notify"),
        "the daemon notifies readiness"
    );
    let bin = spamwall_bin();
    let local = unit
        .replace("/usr/local/bin/spamwall", bin.to_str().expect("UTF-8 path"))
        .replace("User=spamwall", "User=daemon")
        .replace("Group=spamwall", "Group=daemon");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spamwall.service");
    fs::write(&path, local).expect("writing the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
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
    let budget = spamwall::listen::fd_budget(max_connections);
    assert!(
        limit >= budget,
        "LimitNOFILE={limit} is below the {budget} descriptors the listeners may need with max_connections = {max_connections}"
    );
}
