//! Writes spamwall's man pages (section 8) from its command-line
//! definitions: `spamwall.8` and one page per verb (`spamwall-ban.8`,
//! `spamwall-xdp-detach.8`, …), so the pages always match the binary they
//! ship with. `cargo xtask deb` runs it; nothing it writes is kept in git.
//!
//! Usage: `docgen OUT_DIR`.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};
use clap::CommandFactory as _;
use clap_mangen::{
    Man,
    roff::{Roff, bold, roman},
};

/// Daemons and administration commands.
const SECTION: &str = "8";
const MANUAL: &str = "System Manager's Manual";
/// The main page's DESCRIPTION; `--help` stays short.
const DESCRIPTION: &str = "spamwall answers Postfix's policy delegation requests \
(check_policy_service), scoring each client with DNSBL, RHSBL, HELO, reverse DNS \
and list checks, and follows Postfix's logs like fail2ban. It bans abusive SMTP \
clients in the kernel with an XDP program: bans live in pinned BPF maps, outlive \
the daemon, expire on their own and hold a million addresses per family. Every \
ban, from the policy server, the logs, the command line or other MX hosts \
(through Redis), goes through one ban manager that applies the allowlist.\n\n\
spamwall run is the daemon, normally started by systemd (spamwall.service); the \
other verbs talk to it over its control socket, or work alone (check-config, \
test-filter, query, xdp detach, completions).";

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: docgen OUT_DIR");
    };
    let out = Path::new(&out);
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, page) in pages()? {
        let path = out.join(name);
        fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Every page as (file name, roff text): the command's own first, then one
/// per verb that is not hidden, depth first.
fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = spamwall::cli::Cli::command()
        .disable_help_subcommand(true)
        .long_about(DESCRIPTION);
    // Sets each verb's display name (`spamwall-ban`) and usage line
    // (`spamwall ban`).
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, true, &mut pages)?;
    Ok(pages)
}

fn collect(cmd: &clap::Command, top: bool, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .manual(MANUAL)
        .source(format!("spamwall {}", spamwall::cli::VERSION));
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("rendering {}", man.get_filename()))?;
    let extra = if top { top_sections() } else { verb_sections() };
    extra
        .to_writer(&mut page)
        .with_context(|| format!("rendering {}", man.get_filename()))?;
    pages.push((man.get_filename(), page));
    for verb in cmd.get_subcommands().filter(|verb| !verb.is_hide_set()) {
        collect(verb, false, pages)?;
    }
    Ok(())
}

/// What the command line alone cannot say: exit codes, environment, files,
/// where the full documentation is.
fn top_sections() -> Roff {
    let mut roff = Roff::default();
    let entries = |roff: &mut Roff, heading: &str, items: &[(&str, &str)]| {
        roff.control("SH", [heading]);
        for (term, text) in items {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*text)]);
        }
    };
    entries(
        &mut roff,
        "EXIT STATUS",
        &[
            ("0", "Success."),
            (
                "1",
                "A runtime failure, for example the daemon is not running.",
            ),
            (
                "2",
                "A usage or configuration error, including an address that was refused.",
            ),
        ],
    );
    entries(
        &mut roff,
        "ENVIRONMENT",
        &[
            (
                "SPAMWALL_CONFIG",
                "The configuration file when --config is not given.",
            ),
            (
                "SPAMWALL_LOG",
                "What is logged, as a tracing filter (info for run, warn otherwise).",
            ),
            (
                "SSL_CERT_FILE",
                "A CA file for rediss:// fleet connections instead of the system's store.",
            ),
        ],
    );
    entries(
        &mut roff,
        "FILES",
        &[
            (
                "/etc/spamwall/spamwall.toml",
                "The configuration (daemon.*, xdp.*, ban.*, policy.*, logwatch.*, fleet.*, metrics.*).",
            ),
            (
                "/var/lib/spamwall",
                "The ban store and the daemon's other state.",
            ),
            (
                "/run/spamwall/control.sock",
                "The control socket the client verbs use.",
            ),
            (
                "/sys/fs/bpf/spamwall",
                "The pinned XDP program, its links and the ban maps; they outlive the daemon.",
            ),
        ],
    );
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "spamwall-ban(8), spamwall-check-config(8), systemctl(1), postconf(5), \
         /usr/share/doc/spamwall/README.md, \
         /usr/share/doc/spamwall/postfix-main.cf.snippet",
    )]);
    roff
}

fn verb_sections() -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("spamwall(8), /usr/share/doc/spamwall/README.md")]);
    roff
}

#[cfg(test)]
mod tests {
    use super::pages;

    #[test]
    fn one_page_per_verb_in_section_8() {
        let pages = pages().expect("rendering");
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        for name in [
            "spamwall.8",
            "spamwall-run.8",
            "spamwall-ban.8",
            "spamwall-check-config.8",
            "spamwall-xdp-detach.8",
            "spamwall-completions.8",
        ] {
            assert!(names.contains(&name), "no {name} in {names:?}");
        }
        assert!(!names.iter().any(|name| name.contains("help")), "{names:?}");
    }

    #[test]
    fn the_main_page_says_what_the_options_cannot() {
        let pages = pages().expect("rendering");
        let text = String::from_utf8_lossy(&pages[0].1);
        assert!(text.contains("\n.TH spamwall 8 "), "{text}");
        for needle in [
            ".SH SYNOPSIS",
            "EXIT STATUS",
            "SPAMWALL_CONFIG",
            "/etc/spamwall/spamwall.toml",
            "spamwall\\-ban(8)",
        ] {
            assert!(text.contains(needle), "no {needle:?} in\n{text}");
        }
    }
}
