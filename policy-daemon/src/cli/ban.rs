//! `ban`: targets on the command line or in a file, and the result per
//! target as text or JSON. Shared with `unban`: the JSON result of a
//! target, reading target files, exit codes.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    time::SystemTime,
};

use clap::Args;
use serde::Serialize;

use super::{
    Failure, ask, print_json, printable,
    target_file::{TargetLine, TargetLines},
    unexpected,
};
use crate::{
    bans::{BanEntry, BanLength, parse_target, target_to_string},
    control::{Refusal, Request, Response},
    duration::BanTime,
};

#[derive(Debug, Args)]
pub struct BanArgs {
    /// Addresses or CIDR prefixes (IPv4 and IPv6)
    #[arg(required_unless_present = "file", value_name = "ADDR|CIDR")]
    pub targets: Vec<String>,
    /// Also ban every address or prefix in this file (`-`: standard input),
    /// one per line, `#` comments; bad lines are reported and skipped
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Ban length: 90s, 10m, 1h, 1w, or 0/permanent [default: ban.bantime]
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Why, shown by `list`
    #[arg(long, default_value = "manual ban", value_name = "TEXT")]
    pub reason: String,
    /// Ban prefixes wider than the configured widest (16 and 32 bits by default) too
    #[arg(long)]
    pub force: bool,
    /// Print the result per target as JSON
    #[arg(long)]
    pub json: bool,
}

/// The result for one target, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    pub(super) target: String,
    /// `banned`, `refused`, `unbanned`, `not_banned` or `covered`.
    pub(super) result: &'static str,
    /// The file line it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) line: Option<usize>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    /// The ban made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ban: Option<BanEntry>,
    /// The narrowest ban on a wider prefix that still blocks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) covered_by: Option<BanEntry>,
}

impl Outcome {
    pub(super) fn new(target: String, result: &'static str) -> Self {
        Self {
            target,
            result,
            line: None,
            reason: None,
            ban: None,
            covered_by: None,
        }
    }

    pub(super) fn refused(refusal: &Refusal) -> Self {
        Self {
            reason: Some(refusal.reason.clone()),
            ..Self::new(refusal.target.clone(), "refused")
        }
    }

    pub(super) fn bad_line(line: &TargetLine, error: &str) -> Self {
        Self {
            line: Some(line.line),
            reason: Some(error.to_owned()),
            ..Self::new(line.text.clone(), "refused")
        }
    }
}

/// Checks every target before anything is sent: one bad address and
/// nothing is banned.
pub(super) fn check_targets(targets: &[String]) -> Result<(), Failure> {
    let errors: Vec<String> = targets
        .iter()
        .filter_map(|t| parse_target(t).err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "{}; nothing was sent",
            errors.join("; ")
        )))
    }
}

pub(super) fn ban(socket: &Path, args: &BanArgs) -> Result<(), Failure> {
    check_targets(&args.targets)?;
    if let Some(path) = &args.file {
        return ban_file(socket, args, path);
    }
    let request = Request::Ban {
        targets: args.targets.clone(),
        length: ban_length(args)?,
        reason: args.reason.clone(),
        force: args.force,
    };
    let Response::Banned { banned, refused } = ask(socket, &request)? else {
        return Err(Failure::runtime("unexpected answer to ban"));
    };
    if args.json {
        let mut outcomes: Vec<Outcome> = banned
            .into_iter()
            .map(|entry| Outcome {
                ban: Some(entry.clone()),
                ..Outcome::new(target_to_string(&entry.addr), "banned")
            })
            .collect();
        outcomes.extend(refused.iter().map(Outcome::refused));
        print_json(&outcomes)?;
        return exit_for(refused.is_empty(), false);
    }
    for entry in &banned {
        println!(
            "banned {} {} (count {})",
            target_to_string(&entry.addr),
            until(entry.expires_at),
            entry.count
        );
    }
    refusals(&refused)
}

/// How much target text one `ban --file` request carries at most: well
/// under the daemon's request limit (16 MiB) whatever the address family,
/// and small enough that the daemon's memory for one batch stays near a
/// hundred megabytes.
const BULK_REQUEST_BYTES: usize = 1 << 20;

/// `ban --file` requests in flight at once: while the daemon writes one
/// batch to the store and the kernel, it already receives and checks the
/// next, and this process reads the one after.
const BULK_IN_FLIGHT: usize = 2;

/// `ban --file`: reads the list, reports bad lines by number, bans the rest
/// in requests of [`BULK_REQUEST_BYTES`] and prints a count.
fn ban_file(socket: &Path, args: &BanArgs, path: &Path) -> Result<(), Failure> {
    let length = ban_length(args)?;
    let mut batch = args.targets.clone();
    let mut batch_bytes: usize = batch.iter().map(String::len).sum();
    let mut bad_lines = Vec::new();
    let mut tally = Tally::default();
    std::thread::scope(|scope| -> Result<(), Failure> {
        let mut in_flight = std::collections::VecDeque::with_capacity(BULK_IN_FLIGHT);
        let mut send = |batch: Vec<String>, tally: &mut Tally| -> Result<(), Failure> {
            if batch.is_empty() {
                return Ok(());
            }
            if in_flight.len() == BULK_IN_FLIGHT
                && let Some(oldest) = in_flight.pop_front()
            {
                tally.take(oldest)?;
            }
            let sent = args.json.then(|| batch.clone());
            let request = Request::BanBulk {
                targets: batch,
                length,
                reason: args.reason.clone(),
                force: args.force,
            };
            in_flight.push_back(scope.spawn(move || (sent, ask(socket, &request))));
            Ok(())
        };
        for line in target_lines(path)? {
            let line =
                line.map_err(|e| Failure::runtime(format!("reading {}: {e}", path.display())))?;
            match &line.target {
                Ok(target) => {
                    let text = target_to_string(target);
                    if let Some(full) =
                        add_to_batch(&mut batch, &mut batch_bytes, text, BULK_REQUEST_BYTES)
                    {
                        send(full, &mut tally)?;
                    }
                }
                Err(error) => {
                    let error = error.clone();
                    bad_lines.push((line, error));
                }
            }
        }
        send(std::mem::take(&mut batch), &mut tally)?;
        for request in in_flight {
            tally.take(request)?;
        }
        Ok(())
    })?;
    let Tally {
        banned: banned_total,
        refused: refused_all,
        mut outcomes,
    } = tally;
    if args.json {
        outcomes.extend(
            bad_lines
                .iter()
                .map(|(line, error)| Outcome::bad_line(line, error)),
        );
        print_json(&outcomes)?;
        return exit_for(refused_all.is_empty() && bad_lines.is_empty(), false);
    }
    report_bad_lines(path, &bad_lines);
    println!("banned {banned_total} from {}", path.display());
    if bad_lines.is_empty() {
        refusals(&refused_all)
    } else {
        refusals(&refused_all).and(Err(Failure::usage(String::new())))
    }
}

/// One `ban --file` request on its way: the targets it carries (kept for
/// `--json` only) and the daemon's answer.
type BulkRequest<'scope> =
    std::thread::ScopedJoinHandle<'scope, (Option<Vec<String>>, Result<Response, Failure>)>;

/// The answers to `ban --file` requests, added up in the order sent.
#[derive(Default)]
struct Tally {
    banned: u64,
    refused: Vec<Refusal>,
    outcomes: Vec<Outcome>,
}

impl Tally {
    fn take(&mut self, request: BulkRequest<'_>) -> Result<(), Failure> {
        let (sent, response) = request
            .join()
            .map_err(|_| Failure::runtime("a ban request failed unexpectedly".to_owned()))?;
        let response = response?;
        let Response::BulkBanned { banned, refused } = response else {
            return Err(unexpected(&response));
        };
        self.banned += banned;
        if let Some(targets) = sent {
            let refused_targets: std::collections::HashSet<&str> =
                refused.iter().map(|r| r.target.as_str()).collect();
            self.outcomes.extend(
                targets
                    .into_iter()
                    .filter(|target| !refused_targets.contains(target.as_str()))
                    .map(|target| Outcome::new(target, "banned")),
            );
            self.outcomes.extend(refused.iter().map(Outcome::refused));
        }
        self.refused.extend(refused);
        Ok(())
    }
}

/// Adds `target` to `batch`; once the batch holds `limit` bytes of text,
/// hands it back whole and starts a new one.
fn add_to_batch(
    batch: &mut Vec<String>,
    bytes: &mut usize,
    target: String,
    limit: usize,
) -> Option<Vec<String>> {
    *bytes += target.len();
    batch.push(target);
    (*bytes >= limit).then(|| {
        *bytes = 0;
        std::mem::take(batch)
    })
}

/// The target lines of `path` (`-`: standard input), read as a stream.
pub(super) fn target_lines(path: &Path) -> Result<TargetLines<Box<dyn BufRead>>, Failure> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
        Box::new(BufReader::new(file))
    };
    Ok(TargetLines::new(reader))
}

pub(super) fn report_bad_lines(path: &Path, bad_lines: &[(TargetLine, String)]) {
    for (line, error) in bad_lines {
        eprintln!(
            "spamwall: {}:{}: {error}; skipped",
            path.display(),
            line.line
        );
    }
}

fn ban_length(args: &BanArgs) -> Result<BanLength, Failure> {
    Ok(match &args.duration {
        None => BanLength::Default,
        Some(text) => match text
            .parse::<BanTime>()
            .map_err(|e| Failure::usage(format!("--for: {e}")))?
        {
            BanTime(None) => BanLength::Permanent,
            BanTime(Some(duration)) => BanLength::For(duration),
        },
    })
}

/// Exit 2 unless `accepted`, else 1 when `blocked`, else 0; the details
/// are already printed.
pub(super) fn exit_for(accepted: bool, blocked: bool) -> Result<(), Failure> {
    if !accepted {
        Err(Failure::usage(String::new()))
    } else if blocked {
        Err(Failure::runtime(String::new()))
    } else {
        Ok(())
    }
}

fn refusals(refused: &[Refusal]) -> Result<(), Failure> {
    if refused.is_empty() {
        return Ok(());
    }
    for refusal in refused {
        eprintln!(
            "spamwall: refused {}: {}",
            printable(&refusal.target),
            printable(&refusal.reason)
        );
    }
    Err(Failure::usage(String::new()))
}

pub(super) fn until(expires_at: Option<SystemTime>) -> String {
    expires_at.map_or_else(
        || "permanently".to_owned(),
        |time| format!("until {}", crate::clock::rfc3339(time)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_goes_in_batches_of_bounded_size_and_loses_nothing() {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut sent: Vec<Vec<String>> = Vec::new();
        for i in 0..25_u32 {
            let target = format!("192.0.2.{i}");
            if let Some(full) = add_to_batch(&mut batch, &mut bytes, target, 50) {
                sent.push(full);
            }
        }
        sent.push(batch);
        assert!(sent.len() > 1, "{sent:?}");
        for full in &sent[..sent.len() - 1] {
            let size: usize = full.iter().map(String::len).sum();
            assert!((50..50 + "192.0.2.24".len()).contains(&size), "{full:?}");
        }
        let all: Vec<String> = sent.concat();
        let expected: Vec<String> = (0..25).map(|i| format!("192.0.2.{i}")).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn bad_targets_are_all_named_and_nothing_is_sent() {
        let failure = check_targets(&["192.0.2.7".into(), "nope".into(), "10.0.0.1/8".into()])
            .expect_err("bad targets");
        assert_eq!(failure.code, 2);
        assert!(failure.message.contains("\"nope\""), "{}", failure.message);
        assert!(
            failure.message.contains("10.0.0.0/8"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("nothing was sent"),
            "{}",
            failure.message
        );
    }
}
