use std::{
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

use super::{gate::*, import::*, timestamp::*, *};

#[test]
fn required_literals_are_only_what_every_match_contains() {
    let lit = |pattern: &str| {
        required_literals(pattern).and_then(|found| found.into_iter().max_by_key(String::len))
    };
    assert_eq!(
        lit(r"^(?:\S+\s+)?postfix/\w+: DNSBL rank \d+ for \[(?P<host>[^]]+)\]").as_deref(),
        Some(": DNSBL rank ")
    );
    assert_eq!(
        lit(r"^x: (?i:LOGIN|PLAIN) authentication failed:").as_deref(),
        Some(" authentication failed:")
    );
    assert_eq!(
        lit(r"lost connection after \S+ from").as_deref(),
        Some("lost connection after ")
    );
    assert_eq!(lit(r"abcd?ef").as_deref(), Some("abc"), "d is optional");
    // A repetition's counts and an escape's argument are not text.
    let all = |pattern: &str| required_literals(pattern).unwrap_or_default();
    assert_eq!(all(r"abc \d{10,300} def"), ["abc ", " def"]);
    assert_eq!(all(r"abc x{0,3} def"), ["abc ", " def"]);
    assert_eq!(all(r"abc\p{Greek}def"), ["abc", "def"]);
    assert_eq!(
        all(r"abc\pLdef\x{263a}ghi\x41jkl\u00e9mno"),
        ["abc", "def", "ghi", "jkl", "mno"]
    );
    assert_eq!(lit(r"abcde+fgh").as_deref(), Some("abcde"), "e repeats");
    assert_eq!(lit(r"reject\.here:\[x"), Some("reject.here:[x".to_owned()));
    assert_eq!(lit(r"(?i)reject"), None, "flags for the rest");
    assert_eq!(lit(r"alpha one|beta two"), None, "top-level alternation");
    assert_eq!(
        lit(r"(?:alpha|beta) x"),
        None,
        "nothing required is long enough"
    );
    assert_eq!(lit(r"[abc]{2}longword"), Some("longword".to_owned()));
    let needles = choose_needles(&[
        r"^postfix/\w+: a longer literal here".to_owned(),
        r"^postfix/\w+: DNSBL".to_owned(),
    ]);
    assert_eq!(
        needles,
        Some(vec![
            ": a longer literal here".to_owned(),
            ": DNSBL".to_owned()
        ])
    );
    let shared_only = choose_needles(&[r"^postfix/\w+ x".to_owned(), r"^postfix/\d+ y".to_owned()]);
    assert_eq!(shared_only, None, "only the shared prefix: no prefilter");
}

#[test]
fn overlap_is_any_shared_byte() {
    assert!(can_overlap(b"from", b"disconnect from"), "contained");
    assert!(can_overlap(b"disconnect from", b"from"), "contains");
    assert!(can_overlap(b"warning:", b": SASL"), "tail meets head");
    assert!(can_overlap(b": SASL", b"warning:"), "head meets tail");
    assert!(can_overlap(b"aba", b"aba"), "itself");
    assert!(can_overlap(b"abab", b"abab"), "itself, shifted");
    assert!(!can_overlap(b"reject", b"from"));
    assert!(!can_overlap(b"DNSBL rank", b"auth=0"));
}

#[test]
fn gating_literals_are_trimmed_to_words() {
    let literals = gating_literals(r"^\S+ disconnect from \S+ auth=0/(?:[1-9])").expect("literals");
    assert_eq!(literals, ["disconnect from", "auth=0"]);
    assert_eq!(
        gating_literals(r"^\S+ ab: \S+ x"),
        Some(Vec::new()),
        "too short"
    );
}

#[test]
fn gated_path_agrees_with_the_general_path() {
    let f = filter(
        &[
            r"^\S+ lost connection after(?! DATA) [A-Z]+ from \S*\[<HOST>\]",
            r"^\S+ reject: \S+ from \S*\[<HOST>\]: \d+",
            r"^\S+ reject: \S+ from \S*\[\S+\]: <HOST>",
            r"^\S+ client=\S*\[<HOST>\]",
        ],
        &[],
    );
    assert!(f.gated.is_some(), "anchored with literals: the fast path");
    let long = "a".repeat(100_000);
    let lines = [
        "mx lost connection after AUTH from x[192.0.2.1]".to_owned(),
        // The main regex matches, its guard refuses: general path.
        "mx lost connection after DATA from x[192.0.2.1]".to_owned(),
        "mx reject: RCPT from x[2001:db8::7]: 554".to_owned(),
        // The first regex's host is not an address: the next one.
        "mx reject: RCPT from x[999.0.2.1]: 554".to_owned(),
        "mx reject: RCPT from x[192.0.2.1]: notanaddress".to_owned(),
        format!("mx client={long}[192.0.2.9]"),
        "mx client=x[::ffff:192.0.2.8]".to_owned(),
        "mx nothing to see from x[192.0.2.1]".to_owned(),
        "reject: from lost connection client=".to_owned(),
    ];
    for line in &lines {
        let fast = f.check_with(&mut f.scratch(), line);
        let general = f.check_with(&mut Scratch::general(), line);
        assert_eq!(fast, general, "{}", &line[..line.len().min(80)]);
    }
    assert_eq!(
        f.check(&lines[5]),
        Verdict::Matched {
            host: "192.0.2.9".parse().expect("ip"),
            regex: 3
        },
        "a line too long for the backtracker still matches"
    );
    assert_eq!(f.check(&lines[1]), Verdict::Missed);
    assert_eq!(f.check(&lines[3]), Verdict::Missed);
}

#[test]
fn only_unanchored_filters_take_the_general_path() {
    assert!(filter(&[r"from \S+\[<HOST>\]"], &[]).gated.is_none());
    // Anchored without a literal: gated, tried on every line.
    let bare = filter(&[r"^(?:a|b)+ x \[<HOST>\]"], &[]);
    assert!(bare.gated.is_some());
    assert_eq!(
        bare.check("ab x [192.0.2.1]"),
        Verdict::Matched {
            host: "192.0.2.1".parse().expect("ip"),
            regex: 0
        }
    );
    assert_eq!(bare.check("c x [192.0.2.1]"), Verdict::Missed);
}

fn filter(failregex: &[&str], ignore: &[&str]) -> Filter {
    let f: Vec<String> = failregex.iter().map(|s| (*s).to_owned()).collect();
    let i: Vec<String> = ignore.iter().map(|s| (*s).to_owned()).collect();
    Filter::new("t", &f, &i).expect("compiles")
}

#[test]
fn placeholders_capture_v4_v6_and_mapped() {
    let f = filter(&[r"from \S+\[<HOST>\]"], &[]);
    for (text, host) in [
        ("x from unknown[192.0.2.7]: y", "192.0.2.7"),
        ("x from a.example[2001:db8::5]:25", "2001:db8::5"),
        ("x from unknown[::ffff:198.51.100.9]", "198.51.100.9"),
    ] {
        assert_eq!(
            f.check(text),
            Verdict::Matched {
                host: host.parse().expect("ip"),
                regex: 0
            },
            "{text}"
        );
    }
    assert_eq!(f.check("x from unknown[not-an-ip]"), Verdict::Missed);
}

#[test]
fn lookarounds_become_guards() {
    let f = filter(
        &[r"lost connection after(?! DATA) [A-Z]+ from \S*\[<HOST>\]"],
        &[],
    );
    assert!(matches!(
        f.check("lost connection after AUTH from x[192.0.2.1]"),
        Verdict::Matched { .. }
    ));
    assert_eq!(
        f.check("lost connection after DATA from x[192.0.2.1]"),
        Verdict::Missed
    );
}

#[test]
fn a_lookaround_after_a_broken_group_header_is_an_error() {
    // Found by the failregex fuzz target: the header of `(?x` was
    // taken to run to the `:` inside the next group, and splitting out
    // the lookaround sliced backwards and panicked.
    for pattern in [r"(?x(y:(?=a)<HOST>", r"(?P<n(x>(?!y)<HOST>)"] {
        let error = Filter::new("t", &[pattern.to_owned()], &[]).expect_err(pattern);
        assert!(error.to_string().contains("failregex[0]"), "{error}");
    }
    // Headers before nested groups still split as before.
    let f = filter(&[r"^(?i:x(?:y)(?!z))\S* \[<HOST>\]"], &[]);
    assert!(matches!(
        f.check("Xyw [192.0.2.1]"),
        Verdict::Matched { .. }
    ));
    assert_eq!(f.check("xyz [192.0.2.1]"), Verdict::Missed);
}

#[test]
fn ignoreregex_wins() {
    let f = filter(&[r"\[<HOST>\]"], &[r"^ok"]);
    assert_eq!(f.check("ok [192.0.2.1]"), Verdict::Ignored);
}

#[test]
fn cached_stamps_read_as_parse_line_reads_them() {
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let later = now + Duration::from_secs(1);
    let lines = [
        "Nov 17 10:00:00 mx a",
        "Nov 17 10:00:00 mx b\n",
        "Nov 17 10:00:00\tmx c\r\n",
        "Nov 17 10:00:00",
        "Nov 17 10:00:00x",
        "Nov 17 10:00:000 mx d",
        "Nov 17 10:00:00.5 mx e",
        "Nov 17 10:00:00.5 mx f",
        "Nov 17 10:00:00.55 mx g",
        "Nov 17 10:00:00.5x",
        "Nov 17 10:00:00. mx h",
        "Nov 17 10:00:00.",
        "Nov 17 10:00:00.9 mx i",
        "Nov 17 10:00:00\u{2003}mx j",
        "Nov 17 10:00:00\u{2003}mx k",
        "Nov  7 10:00:00 mx l",
        "Nov  7 10:00:01 mx m",
        "Nov 17 10:00:00 mx n",
        "2026-11-17T10:00:00Z mx o",
        "Nov 17 10:00:00 mx p",
        "Nov 17 10:00:00.123456789012345678901234567890 mx q",
        "Nov 17 10:00:00.123456789012345678901234567890 mx r",
        "no stamp",
        "Nov 17 10:00:00 mx s",
        r#"{"__REALTIME_TIMESTAMP":"1795000000000000","MESSAGE":"t"}"#,
        "Nov 17 10:00:00 mx u",
        "Nov 17 10:00:00 mx v",
    ];
    let mut cache = StampCache::default();
    for (index, line) in lines.iter().enumerate() {
        // The time the scan reads at changes once on the way.
        let at = if index < 20 { now } else { later };
        assert_eq!(cache.parse_line(line, at), parse_line(line, at), "{line:?}");
    }
}

#[test]
fn timestamps() {
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000); // 2026-11-18
    let line = parse_line("2026-11-17T10:00:00.123456+00:00 mx postfix/x[1]: hi", now);
    assert_eq!(line.text, "mx postfix/x[1]: hi");
    let since = line
        .time
        .expect("time")
        .duration_since(UNIX_EPOCH)
        .expect("after epoch");
    assert_eq!(since.subsec_micros(), 123_456);
    assert_eq!(
        i64::try_from(since.as_secs()).expect("secs"),
        days_from_civil(2026, 11, 17) * 86_400 + 36_000
    );
    let rfc = parse_line("2026-11-17T10:00:00Z a", now)
        .time
        .expect("time");
    let minus = parse_line("2026-11-17T11:00:00+01:00 a", now)
        .time
        .expect("time");
    assert_eq!(rfc, minus);
    let json = parse_line(
        r#"{"__REALTIME_TIMESTAMP":"1795000000000000","SYSLOG_IDENTIFIER":"postfix/postscreen","_PID":"7","MESSAGE":"PASS OLD [192.0.2.1]:1"}"#,
        now,
    );
    assert_eq!(json.text, "postfix/postscreen[7]: PASS OLD [192.0.2.1]:1");
    assert_eq!(json.time, Some(now));
    let syslog = parse_line("Nov 17 10:00:00 mx postfix/x[1]: hi", now);
    assert_eq!(syslog.text, "mx postfix/x[1]: hi");
    assert!(syslog.time.is_some());
    // December seen in November is last year's.
    let december = parse_line("Dec 31 10:00:00 mx a", now).time.expect("time");
    assert!(december < now);
}

#[test]
fn impossible_dates_and_clocks_are_not_timestamps() {
    // Found by the log_timestamp fuzz target: day 62 of December,
    // read on New Year's Day, landed a month in the future.
    let new_year = UNIX_EPOCH + Duration::from_secs(1_798_765_207); // 2027-01-01T01:00:07Z
    for line in [
        "Dec 62 23:59:59 mx a",
        "Dec 0 10:00:00 mx a",
        "Nov 20 24:00:00 mx a",
        "Nov 20 10:60:00 mx a",
        "Nov 20 10:00:61 mx a",
        "2026-11-17T24:00:00Z mx a",
        "2026-11-17T10:99:00Z mx a",
        "2026-11-17T10:00:61+00:00 mx a",
        "2026-11-17T10:00:00+99:00 mx a",
    ] {
        let parsed = parse_line(line, new_year);
        assert_eq!(parsed.time, None, "{line}");
        assert_eq!(parsed.text, line, "the line is left whole");
    }
    let leap = parse_line("Dec 31 23:59:60 mx a", new_year);
    assert_eq!(leap.text, "mx a", "a leap second is a time");
}

#[test]
fn a_syslog_stamp_a_day_ahead_is_last_years() {
    // Found by the log_timestamp fuzz target: "Jan  2 00:59:60.123"
    // read at one o'clock on New Year's Day is exactly a day ahead (the
    // leap second makes 00:59:60 one o'clock) and stayed in this year,
    // its fraction past the day.
    let utc = 1_795_136_400; // 2026-11-20T01:00:00Z
    let local = u64::try_from(utc - local_offset(utc)).expect("after 1970");
    let now = UNIX_EPOCH + Duration::from_secs(local); // 01:00 here
    let time = parse_line("Nov 21 00:59:60.123 a", now).time.expect("time");
    assert!(time < now, "{time:?} is not last year's");
    let time = parse_line("Nov 21 00:59:59.999 a", now).time.expect("time");
    assert!(time > now, "less than a day ahead stays in this year");
}

#[test]
fn the_year_of_a_syslog_stamp_is_the_local_one() {
    // 00:30 on New Year's Day in Tokyo (UTC+9) is still December in
    // UTC: the year was taken from UTC, so the stamp went back a year.
    let tokyo = 9 * 3600;
    let now = 1_798_731_900; // 2027-01-01T00:45+09:00
    let secs = syslog_secs(1, 1, (0, 30, 0), now, tokyo);
    assert_eq!(now - secs, 15 * 60, "a quarter of an hour ago");
    // West of UTC the new year starts in UTC first.
    let los_angeles = -8 * 3600;
    let now = 1_798_761_600; // 2026-12-31T16:00-08:00
    let secs = syslog_secs(12, 31, (15, 0, 0), now, los_angeles);
    assert_eq!(now - secs, 3600, "an hour ago");
}

#[test]
fn a_value_that_doubles_itself_is_refused() {
    // Found with the filter_import fuzz target: `x = <x><x>` doubled
    // in each of the 64 rounds of interpolation and never finished.
    let path = Path::new("/nonexistent/doubling.conf");
    for text in [
        "[Definition]\nx = <x><x>\nfailregex = ^<x> <HOST>$\n",
        "[Definition]\nx = %(x)s%(x)s\nfailregex = ^%(x)s <HOST>$\n",
    ] {
        let error = import_fail2ban_text(path, text, &[]).expect_err(text);
        let message = error.to_string();
        assert!(
            message.contains("grows past") && message.contains("doubling.conf"),
            "{message}"
        );
    }
    let looping = "[Definition]\na = <b>\nb = <a>\nfailregex = <a> <HOST>\n";
    let error = import_fail2ban_text(path, looping, &[]).expect_err("a loop");
    assert!(error.to_string().contains("does not end"), "{error}");
}

#[test]
fn known_refers_to_the_value_before_this_file_set_it() {
    // As Debian's sendmail-auth.conf extends common.conf's __prefix_line.
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::write(
        dir.path().join("common.conf"),
        "[DEFAULT]\n__prefix_line = \\S+ sm-mta\\[\\d+\\]:\\s*\n",
    )
    .expect("writing common.conf");
    let path = dir.path().join("sendmail-like.conf");
    let text = "[INCLUDES]\nbefore = common.conf\n\n[Definition]\n\
                __prefix_line = %(known/__prefix_line)s(?:\\w{14,20}: )?\n\
                failregex = ^%(__prefix_line)s\\[<HOST>\\]: possible SMTP attack\n";
    let imported = import_fail2ban_text(&path, text, &[]).expect("imports");
    let filter =
        Filter::new("sendmail-like", &imported.failregex, &imported.ignoreregex).expect("compiles");
    let line = "smtp1 sm-mta[5133]: s1GNXHYB005133: [192.0.2.17]: possible SMTP attack";
    assert!(
        matches!(filter.check(line), Verdict::Matched { ref host, .. } if host.to_string() == "192.0.2.17"),
        "{:?}",
        filter.failregex()
    );
}

#[test]
fn a_reference_nothing_defines_is_refused_not_left_as_text() {
    // Left in, `%(nowhere)s` would be a regex that never matches.
    let path = Path::new("/nonexistent/missing.conf");
    for text in [
        "[Definition]\nfailregex = ^%(nowhere)s <HOST>$\n",
        "[Definition]\nx = %(known/x)s\nfailregex = ^%(x)s <HOST>$\n",
    ] {
        let error = import_fail2ban_text(path, text, &[]).expect_err(text);
        assert!(error.to_string().contains("which no section"), "{error}");
    }
    // `<name>` stays: it may be a placeholder or a named group's tag.
    let imported =
        import_fail2ban_text(path, "[Definition]\nfailregex = ^<unknown> <HOST>$\n", &[])
            .expect("imports");
    assert_eq!(imported.failregex, ["^<unknown> <HOST>$"]);
}

#[test]
fn a_named_backreference_is_refused_with_the_reason() {
    let error = Filter::new("f", &[r"^(?P<m>\S+) (?P=m) <HOST>$".to_owned()], &[])
        .expect_err("a backreference");
    assert!(error.to_string().contains("backreference"), "{error}");
    // An escaped parenthesis is text, not a backreference.
    Filter::new("f", &[r"^\(?P=m\) <HOST>$".to_owned()], &[]).expect("compiles");
}

#[test]
fn python_braces_read_as_python_reads_them() {
    // (pattern, a line it matches, a line it does not)
    let cases = [
        // `{,n}` is `{0,n}` (Debian's assp.conf).
        (
            r"^errors \(\d{,3}\) from <HOST>$",
            "errors (12) from 192.0.2.1",
            "errors (1234) from 192.0.2.1",
        ),
        // A `{` that starts no repetition is a brace (ejabberd-auth, horde).
        (
            r"^\({{(?:\d+,){3}\d+},\d+}\) <HOST>$",
            "({{1,2,3,4},5}) 192.0.2.2",
            "({1,2,3,4},5}) 192.0.2.2",
        ),
        (
            r"^to (Horde|{[^}]+}) <HOST>$",
            "to {imap} 192.0.2.3",
            "to imap 192.0.2.3",
        ),
        (r"^{} <HOST>$", "{} 192.0.2.4", "x 192.0.2.4"),
        (
            r"^a{2} b{1,} c{,} <HOST>$",
            "aa b c 192.0.2.5",
            "a b c 192.0.2.5",
        ),
    ];
    for (pattern, hit, miss) in cases {
        let filter = Filter::new("f", &[pattern.to_owned()], &[])
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert!(
            matches!(filter.check(hit), Verdict::Matched { .. }),
            "{pattern} should match {hit:?}"
        );
        assert_eq!(filter.check(miss), Verdict::Missed, "{pattern} on {miss:?}");
    }
    let error = Filter::new("f", &[r"^(?P<u>\S+)? (?(u)x|y) <HOST>$".to_owned()], &[])
        .expect_err("a conditional group");
    assert!(error.to_string().contains("conditional group"), "{error}");
}

#[test]
fn the_host_is_whichever_placeholder_took_part() {
    // As Debian's sendmail filters write it: `<IP4>` alone matches an
    // IPv4 client, and its address is the host.
    let filter = Filter::new(
        "f",
        &[r"^relay=\[(?:IPv6:<IP6>|<IP4>)\] rejected$".to_owned()],
        &[],
    )
    .expect("compiles");
    for (line, host) in [
        ("relay=[192.0.2.8] rejected", "192.0.2.8"),
        ("relay=[IPv6:2001:db8::8] rejected", "2001:db8::8"),
    ] {
        for verdict in [
            filter.check(line),
            filter.check_with(&mut Scratch::general(), line),
        ] {
            assert!(
                matches!(verdict, Verdict::Matched { host: h, .. } if h.to_string() == host),
                "{line}: {verdict:?}"
            );
        }
    }
}

#[test]
fn exim_timestamps_are_local_time_or_carry_their_zone() {
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000); // 2026-11-18
    let line = parse_line(
        "2026-11-17 10:00:00 login authenticator failed for (x) [192.0.2.1]",
        now,
    );
    assert_eq!(line.text, "login authenticator failed for (x) [192.0.2.1]");
    let naive = 1_795_000_000 - 86_400 - 1_795_000_000 % 86_400 + 10 * 3600;
    let offset = local_offset_uncached(naive);
    assert_eq!(
        line.time,
        Some(UNIX_EPOCH + Duration::from_secs((naive - offset).try_into().expect("positive")))
    );
    let zoned = parse_line(
        "2026-11-17 10:00:00 +0100 [1234] H=(x) [192.0.2.1] ...",
        now,
    );
    assert_eq!(zoned.text, "[1234] H=(x) [192.0.2.1] ...");
    assert_eq!(
        zoned.time,
        Some(UNIX_EPOCH + Duration::from_secs((naive - 3600).try_into().expect("positive")))
    );
    // A number after the time that is no zone stays text.
    let pid = parse_line("2026-11-17 10:00:00 +12345 x", now);
    assert_eq!(pid.text, "+12345 x");
    // Not a timestamp: the line is left whole.
    for whole in [
        "2026-11-17 25:00:00 x",
        "2026-13-17 10:00:00 x",
        "2026-11-17 10:00:00+0x00 x",
    ] {
        let line = parse_line(whole, now);
        assert_eq!((line.time, line.text.as_ref()), (None, whole));
    }
}

#[test]
fn fail2ban_filters_see_the_space_after_the_date() {
    // Exim's filter starts `^%(pid)s `: fail2ban leaves the space that
    // followed the date; spamwall's own filters see the text without it.
    let regex = [r"^(?: \[\d+\])? \w+ authenticator failed for \[<HOST>\]$".to_owned()];
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let line = parse_line(
        "2026-11-17 10:00:00 login authenticator failed for [192.0.2.6]",
        now,
    );
    let own = Filter::new("own", &regex, &[]).expect("compiles");
    assert_eq!(own.check(&line.text), Verdict::Missed);
    let fail2ban = Filter::new("fail2ban", &regex, &[])
        .expect("compiles")
        .with_date_separator();
    for verdict in [
        fail2ban.check(&line.text),
        fail2ban.check_with(&mut Scratch::general(), &line.text),
    ] {
        assert!(
            matches!(verdict, Verdict::Matched { host, .. } if host.to_string() == "192.0.2.6"),
            "{verdict:?}"
        );
    }
}

#[test]
fn a_candidate_keeps_the_failregexes_whose_needle_another_hides() {
    // "abcd" is found first and hides the "cdef " of the second failregex,
    // the one that matches.
    let f = filter(&[r"^abcd\S* <HOST> zz", r"^\S*cdef <HOST>$"], &[]);
    let text = b"abcdef 192.0.2.1\nnothing here\n";
    let candidates: Vec<Candidate<'_>> = f.candidates(text).collect();
    assert_eq!(candidates.len(), 1);
    assert_ne!(candidates[0].rules, RuleHint::ANY);
    let line = "abcdef 192.0.2.1";
    let verdict = f.check_candidate(&mut f.scratch(), line, candidates[0].rules);
    assert_eq!(verdict, f.check_with(&mut Scratch::general(), line));
    assert!(
        matches!(verdict, Verdict::Matched { regex: 1, .. }),
        "{verdict}"
    );
}

#[test]
fn the_prefilter_keeps_every_line_a_fail2ban_filter_matches() {
    // The needle " SMTP protocol error" starts with the space fail2ban
    // leaves after the date; the raw line may have a tab there, or no date.
    let filter = Filter::new(
        "exim-like",
        &[r"^(?: \[\d+\])? SMTP protocol error from \[<HOST>\]$".to_owned()],
        &[],
    )
    .expect("compiles")
    .with_date_separator();
    let raw = "SMTP protocol error from [192.0.2.9]\n\
               2026-11-17 10:00:00\tSMTP protocol error from [192.0.2.10]\n";
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let candidates: Vec<String> = filter
        .candidate_lines(raw.as_bytes())
        .map(|(_, line)| String::from_utf8_lossy(line).trim_end().to_owned())
        .collect();
    assert_eq!(candidates.len(), 2, "{candidates:?}");
    for line in candidates {
        let text = parse_line(&line, now).text;
        assert!(
            matches!(filter.check(&text), Verdict::Matched { .. }),
            "{line:?}"
        );
    }
}

#[test]
fn journal_entries_are_parsed_once_with_cursor_time_and_text() {
    let entry = parse_journal_entry(
        r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1700000000000001","SYSLOG_IDENTIFIER":"postfix/smtpd","_PID":"9","MESSAGE":"hi"}"#,
    )
    .expect("entry");
    assert_eq!(entry.cursor.as_deref(), Some("s=1;i=2"));
    let line = entry.line.expect("a message");
    assert_eq!(
        line.time,
        Some(UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001))
    );
    assert_eq!(line.text, "postfix/smtpd[9]: hi");
    // Non-UTF-8 messages come as byte arrays.
    let bytes = parse_journal_entry(r#"{"MESSAGE":[104,255,105]}"#).expect("entry");
    assert_eq!(bytes.line.expect("message").text, "h\u{fffd}i");
    // Without a message the entry still moves the cursor, and is no line.
    let bare = parse_journal_entry(r#"{"__CURSOR":"c","_PID":"1"}"#).expect("entry");
    assert_eq!((bare.cursor.as_deref(), bare.line), (Some("c"), None));
    // A timestamp past what a clock holds is no time, not a panic.
    let far =
        parse_journal_entry(r#"{"__REALTIME_TIMESTAMP":"18446744073709551615","MESSAGE":"x"}"#)
            .expect("entry");
    assert!(far.line.is_some());
    for not_an_entry in ["not json", "[1,2]", "\"text\"", "{"] {
        assert!(
            parse_journal_entry(not_an_entry).is_none(),
            "{not_an_entry}"
        );
    }
}

#[test]
fn has_timestamp_agrees_with_parse_line() {
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let tail = " mx postfix/smtpd[1234]: connect from unknown[192.0.2.1] and a good deal more text";
    let digits = "1".repeat(60);
    let mut lines: Vec<String> = [
        "Nov 17 10:00:00",
        "Nov 17 10:00:00.123456",
        "Nov  7 10:00:00",
        "Nov 17 25:00:00",
        "Feb 31 10:00:00",
        "Nox 17 10:00:00",
        "2026-11-17T10:00:00Z",
        "2026-11-17T10:00:00.123+01:00",
        "2026-11-17 10:00:00 +0100",
        "2026-11-17 10:00:00",
        "2026-13-17T10:00:00Z",
        "2026-11-17T10:00:00+99:00",
        "mx postfix/smtpd[1234]:",
        "{\"MESSAGE\":\"x\"}",
        "",
    ]
    .iter()
    .flat_map(|head| [(*head).to_owned(), format!("{head}{tail}")])
    .collect();
    // Decided near or past the end of the head has_timestamp reads.
    lines.push(format!("2026-11-17T10:00:00.{digits}Z{tail}"));
    lines.push(format!("2026-11-17T10:00:00.{digits}x{tail}"));
    lines.push(format!(
        "2026-11-17T10:00:00.{}+01:00{tail}",
        "1".repeat(38)
    ));
    lines.push(format!(
        "2026-11-17T10:00:00.{}+0x:00{tail}",
        "1".repeat(38)
    ));
    for frac in 18..30 {
        let frac = "1".repeat(frac);
        lines.push(format!("2026-11-17T10:00:00.{frac}+01:00{tail}"));
        lines.push(format!("2026-11-17T10:00:00.{frac}+0x:00{tail}"));
        lines.push(format!("2026-11-17 10:00:00.{frac} +0100{tail}"));
        lines.push(format!("Nov 17 10:00:00.{frac}x"));
    }
    lines.push(format!("Nov 17 10:00:00.{digits} x"));
    lines.push(format!("Nov 17 10:00:00.{}é{tail}", "1".repeat(46)));
    let with_ends: Vec<String> = lines
        .iter()
        .flat_map(|line| {
            [
                format!("{line}\n"),
                format!("{line}\r\n"),
                format!("{line}\r"),
            ]
        })
        .collect();
    lines.extend(with_ends);
    lines.push("Nov 17 10:00:00 \u{fffd}".to_owned());
    for line in &lines {
        assert_eq!(
            has_timestamp(line.as_bytes(), now),
            parse_line(line, now).time.is_some(),
            "{line:?}"
        );
    }
    assert!(has_timestamp(
        format!("Nov 17 10:00:00{tail}").as_bytes(),
        now
    ));
    assert!(!has_timestamp(tail.as_bytes(), now));
    let mut invalid = b"2026-11-17T10:00:00Z ".to_vec();
    invalid.extend([0xff; 80]);
    assert!(has_timestamp(&invalid, now));
    let mut invalid = b"2026-11-17T10:00:00.".to_vec();
    invalid.extend([0xff; 80]);
    assert_eq!(
        has_timestamp(&invalid, now),
        parse_line(&String::from_utf8_lossy(&invalid), now)
            .time
            .is_some()
    );
}

#[test]
fn a_lookaround_under_flags_is_read_with_them() {
    // The literal prefilter of a guard must not miss `YZ` for `yz`.
    let f = filter(&[r"^(?i)x(?!yz)\S* \[<HOST>\]"], &[]);
    assert_eq!(f.check("XYZ [192.0.2.1]"), Verdict::Missed);
    assert!(matches!(
        f.check("Xab [192.0.2.1]"),
        Verdict::Matched { .. }
    ));
    let f = filter(&[r"^(?i:x(?!yz))\S* \[<HOST>\]"], &[]);
    assert_eq!(f.check("XYZ [192.0.2.1]"), Verdict::Missed);
}
