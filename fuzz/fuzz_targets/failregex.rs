//! fail2ban failregex translation and matching: any regexes, any lines.
//!
//! The text holds failregex lines, an empty line, ignoreregex lines, an
//! empty line, then log lines. Compiling never panics; each log line gets
//! the same verdict from the literal-gated fast path as from the general
//! one, a line the prefilter leaves out is missed, and a line it keeps
//! gets that verdict too among the failregexes it found the line may match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::logwatch::filter::{Filter, Scratch, Verdict};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut blocks = text.splitn(3, "\n\n");
    let lines = |block: Option<&str>| -> Vec<String> {
        block
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let failregex = lines(blocks.next());
    let ignoreregex = lines(blocks.next());
    let log = blocks.next().unwrap_or_default();
    let filter = match Filter::new("fuzz", &failregex, &ignoreregex) {
        Ok(filter) => filter,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    for line in log.lines() {
        let verdict = filter.check(line);
        let general = filter.check_with(&mut Scratch::general(), line);
        assert_eq!(
            verdict, general,
            "fast and general paths differ on {line:?}"
        );
        if let Verdict::Matched { regex, .. } = verdict {
            assert!(regex < failregex.len());
        }
        let candidate = filter.candidates(line.as_bytes()).next();
        if verdict != Verdict::Missed {
            assert!(
                candidate.is_some(),
                "the prefilter left out a line that matches: {line:?}"
            );
        }
        if let Some(candidate) = candidate {
            assert_eq!(
                filter.check_candidate(&mut filter.scratch(), line, candidate.rules),
                verdict,
                "the failregexes the prefilter found left out the one that matches {line:?}"
            );
        }
    }
});
