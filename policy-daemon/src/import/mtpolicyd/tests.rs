#![expect(clippy::float_cmp, reason = "scores are small integers, exact in f64")]

use std::{fmt::Write as _, path::Path};

use super::*;
use crate::config::Config;

/// Imports `text`; the output must be a valid spamwall configuration.
fn import_ok(text: &str) -> Imported {
    let imported = import_text(Path::new("/nonexistent/mtpolicyd.conf"), text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    if let Err(e) = Config::parse(&imported.toml) {
        panic!("{e}\n{}", imported.toml);
    }
    imported
}

fn error(text: &str) -> String {
    import_text(Path::new("/nonexistent/mtpolicyd.conf"), text)
        .expect_err("malformed")
        .to_string()
}

const SCORING: &str = r#"
# RBL scoring with a ban at 15
user=mtpolicyd
port="127.0.0.1:12345"
request_timeout=20
<VirtualHost 12345>
  name="reputation"
  <Plugin allow>
    module = "Condition"
    key = "client_address"
    re_match = "^(192\.0\.2\.([0-9]|[1-5][0-9]|6[0-3])$|10\.)"
    action = "dunno"
  </Plugin>
  <Plugin spamhaus-rbl>
    module = "RBL"
    mode = "passive"
    domain="zen.example.test"
  </Plugin>
  <Plugin spamhaus-rbl-sbl>
    module = "RBLAction"
    result_from = "spamhaus-rbl"
    mode = "passive"
    re_match = "^127\.0\.0\.[23]$"
    score = 10
  </Plugin>
  <Plugin other>
    module = "RBL"
    mode = passive
    domain = bl.example.test
    score = 5
  </Plugin>
  <Plugin ScoreBan>
    module = "ScoreAction"
    threshold = 15
    <Plugin ban-ip>
      module = "Fail2Ban"
      jail = "postfix"
    </Plugin>
  </Plugin>
  <Plugin ScoreReject>
    module = "ScoreAction"
    threshold = 15
    action = "reject sender ip %IP% is blocked (score=%SCORE%%SCORE_DETAIL%)"
  </Plugin>
</VirtualHost>
"#;

#[test]
fn rbl_scoring_with_a_ban_is_carried_over_whole() {
    let imported = import_ok(SCORING);
    assert_eq!(imported.lost, 0, "{}", imported.toml);
    let config = Config::parse(&imported.toml).expect("valid");
    let policy = &config.policy;
    assert_eq!(policy.listen[0].to_string(), "127.0.0.1:12345");
    assert_eq!(policy.request_timeout.as_secs(), 20);
    assert_eq!(policy.check.len(), 3);
    let allow = &policy.check[0];
    assert_eq!(allow.allow, Some(true));
    assert_eq!(
        allow.client.as_deref(),
        Some(&["10.0.0.0/8".to_owned(), "192.0.2.0/26".to_owned()][..])
    );
    let zen = &policy.check[1];
    assert_eq!(zen.zone.as_deref(), Some("zen.example.test"));
    assert_eq!(zen.score, Some(0.0));
    let categories = zen.categories.as_ref().expect("categories");
    assert_eq!(categories[0].pattern, r"/^127\.0\.0\.[23]$/");
    assert_eq!(categories[0].score, 10.0);
    assert_eq!(policy.threshold.len(), 1);
    let threshold = &policy.threshold[0];
    assert_eq!(threshold.score, 15.0);
    assert!(threshold.ban.is_some());
    assert_eq!(
        threshold.action,
        "reject sender ip %IP% is blocked (score=%SCORE%, %DETAIL%)"
    );
}

#[test]
fn debian_s_example_imports_with_what_is_lost_named() {
    let Ok(text) = std::fs::read_to_string("/etc/mtpolicyd/mtpolicyd.conf") else {
        return;
    };
    let imported = import_ok(&text);
    // GeoIPLookup, two GeoIPAction, and the score of a passed greylisting
    // (twice).
    assert!(imported.lost >= 3, "{}", imported.toml);
    for needle in [
        "module GeoIPLookup",
        "zone = \"zen.spamhaus.org\"",
        "action = \"greylist\"",
        "PREPEND X-MtScore: NO",
        "type = \"spf\"",
    ] {
        assert!(
            imported.toml.contains(needle),
            "{needle}:\n{}",
            imported.toml
        );
    }
}

#[test]
fn immediate_answers_keep_mtpolicyds_order() {
    let imported = import_ok(
        r#"
<VirtualHost 12345>
  <Plugin dnswl>
    module = "RBL"
    mode = "accept"
    domain = "wl.example.test"
  </Plugin>
  <Plugin block>
    module = "Condition"
    key = "sender"
    re_match = "@spam\.example$"
    action = "reject no spam"
  </Plugin>
  <Plugin bl>
    module = "RBL"
    domain = "bl.example.test"
  </Plugin>
  <Plugin tag>
    module = "AddScoreHeader"
    spam_score = 5
  </Plugin>
</VirtualHost>
"#,
    );
    assert_eq!(imported.lost, 0, "{}", imported.toml);
    let config = Config::parse(&imported.toml).expect("valid");
    let scores: Vec<f64> = config
        .policy
        .check
        .iter()
        .map(|c| c.score.expect("score"))
        .collect();
    // Three slots: 16000, 4000, 1000; the accepting one negative.
    assert_eq!(scores, [-16000.0, 4000.0, 1000.0]);
    let thresholds: Vec<(f64, &str)> = config
        .policy
        .threshold
        .iter()
        .map(|t| (t.score, t.action.as_str()))
        .collect();
    assert_eq!(
        thresholds,
        [
            (-500.0, "PREPEND X-MtScore: NO score=%SCORE% [%DETAIL%]"),
            (5.0, "PREPEND X-MtScore: YES score=%SCORE% [%DETAIL%]"),
            (2000.0, "reject no spam"),
            (500.0, "reject delivery from %IP% rejected"),
        ]
    );
}

#[test]
fn what_has_no_equivalent_is_a_comment_and_counted() {
    let imported = import_ok(
        r#"
<VirtualHost 12345>
  <Plugin geo>
    module = "GeoIPLookup"
    database = "/usr/share/GeoIP/GeoIP.dat"
  </Plugin>
  <Plugin odd>
    module = "Condition"
    key = "size"
    gt_match = 1000
    score = 1
  </Plugin>
  <Plugin users>
    module = "SqlList"
    sql_query = "SELECT client_ip FROM whitelist WHERE client_ip=?"
    match_action = "dunno"
  </Plugin>
</VirtualHost>
<VirtualHost 12346>
  <Plugin x>
    module = "RBL"
    domain = "x.example"
  </Plugin>
</VirtualHost>
"#,
    );
    assert_eq!(imported.lost, 4, "{}", imported.toml);
    for needle in [
        "<Plugin geo> (module GeoIPLookup): spamwall has no GeoIP lookup",
        "<Plugin odd>: gt_match has no equivalent",
        "# [[policy.check]]",
        "SELECT client_ip FROM whitelist",
        "<VirtualHost 12346>: spamwall runs one check chain",
    ] {
        assert!(
            imported.toml.contains(needle),
            "{needle}:\n{}",
            imported.toml
        );
    }
}

#[test]
fn greylisting_inside_a_score_action() {
    let imported = import_ok(
        r#"
<VirtualHost 12345>
  <Plugin bl>
    module = "RBL"
    mode = "passive"
    domain = "bl.example.test"
    score = 5
  </Plugin>
  <Plugin ScoreGreylist>
    module = "ScoreAction"
    threshold = 5
    <Plugin greylist>
      module = "Greylist"
      min_retry_wait = 2
      max_retry_wait = 3600
      use_autowl = 0
    </Plugin>
  </Plugin>
</VirtualHost>
"#,
    );
    assert_eq!(imported.lost, 0, "{}", imported.toml);
    let config = Config::parse(&imported.toml).expect("valid");
    let greylist = config.policy.greylist.expect("greylist");
    // mtpolicyd 2.05 ignores both and waits 300 s, up to 2 h.
    assert_eq!(greylist.delay.as_secs(), 300);
    assert_eq!(greylist.expire.as_secs(), 7200);
    assert!(
        imported
            .toml
            .contains("mtpolicyd 2.05 ignores min_retry_wait = 2"),
        "{}",
        imported.toml
    );
    assert_eq!(greylist.auto_allow, 0);
    assert_eq!((greylist.v4_prefix, greylist.v6_prefix), (32, 128));
    assert_eq!(
        greylist.action,
        "defer greylisting is active (%DELAY% left)"
    );
    assert_eq!(config.policy.threshold[0].action, "greylist");
}

#[test]
fn syntax_variants_of_config_general() {
    let imported = import_ok(
        "<VirtualHost 12345>\n\
         <Plugin a>\n\
         module RBL\n\
         domain = \"bl.example.test\" # trailing comment\n\
         mode=passive\n\
         score = \\\n  3\n\
         reject_message <<EOT\n  listed\n  EOT\n\
         </plugin>\n\
         /* a C comment\n   over lines */\n\
         </VirtualHost>\n",
    );
    assert!(imported.toml.contains("score = 3"), "{}", imported.toml);
}

#[test]
fn malformed_input_names_file_and_line() {
    for (text, needle) in [
        (
            "<VirtualHost 1>\n<Plugin a>\n</VirtualHost>\n",
            "mtpolicyd.conf:3: </VirtualHost> does not close <Plugin a> opened at /nonexistent/mtpolicyd.conf:2",
        ),
        (
            "<VirtualHost 1>\n",
            "mtpolicyd.conf:1: <VirtualHost 1> is not closed",
        ),
        ("</Plugin>\n", "mtpolicyd.conf:1: </Plugin> closes no block"),
        ("a = 1\na = 2\n", "mtpolicyd.conf:2: a is set twice"),
        ("novalue\n", "mtpolicyd.conf:1: \"novalue\" has no value"),
        ("<Plugin\n", "missing '>'"),
        ("<<include missing.conf>>\n", "mtpolicyd.conf:1: include"),
        ("k <<EOT\nnever closed\n", "heredoc <<EOT has no closing"),
        ("x = 1 \\\n", "continuing nothing"),
        ("/* open\n", "not closed with */"),
    ] {
        let message = error(text);
        assert!(message.contains(needle), "{text:?}: {message}");
    }
    let deep = "<A>\n".repeat(parse::MAX_BLOCK_DEPTH + 2);
    assert!(error(&deep).contains("nest deeper"), "{}", error(&deep));
}

#[test]
fn includes_are_relative_bounded_and_loop_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("mtpolicyd.conf");
    std::fs::create_dir(dir.path().join("conf.d")).expect("mkdir");
    std::fs::write(
        &main,
        "port = 12345\n<VirtualHost 12345>\n<<include conf.d/rbl.conf>>\n</VirtualHost>\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("conf.d/rbl.conf"),
        "<Plugin bl>\nmodule = RBL\nmode = passive\ndomain = bl.example.test\nscore = 5\n</Plugin>\n",
    )
    .expect("write");
    let imported = import(&main).expect("import");
    assert!(
        imported.toml.contains("zone = \"bl.example.test\""),
        "{}",
        imported.toml
    );
    assert!(
        imported.toml.contains("conf.d/rbl.conf:1"),
        "{}",
        imported.toml
    );

    std::fs::write(
        dir.path().join("conf.d/rbl.conf"),
        "include ../mtpolicyd.conf\n",
    )
    .expect("write");
    let message = import(&main).expect_err("loop").to_string();
    assert!(message.contains("a loop"), "{message}");

    std::fs::write(dir.path().join("conf.d/rbl.conf"), "include /etc/passwd\n").expect("write");
    let message = import(&main).expect_err("outside").to_string();
    assert!(message.contains("outside"), "{message}");

    for i in 0..=parse::MAX_INCLUDE_DEPTH + 1 {
        std::fs::write(
            dir.path().join(format!("d{i}.conf")),
            format!("include d{}.conf\n", i + 1),
        )
        .expect("write");
    }
    std::fs::write(&main, "include d0.conf\n").expect("write");
    let message = import(&main).expect_err("deep").to_string();
    assert!(message.contains("includes nest deeper"), "{message}");

    std::fs::write(&main, vec![b'#'; parse::MAX_FILE_SIZE + 1]).expect("write");
    let message = import(&main).expect_err("big").to_string();
    assert!(message.contains("larger than"), "{message}");
    std::fs::write(&main, b"a = \xff\n").expect("write");
    let message = import(&main).expect_err("binary").to_string();
    assert!(message.contains(":1: not UTF-8"), "{message}");
}

#[test]
fn a_huge_chain_is_cut_at_spamwalls_limit() {
    let mut text = String::from("<VirtualHost 1>\n");
    for i in 0..5_000 {
        let _ = write!(
            text,
            "<Plugin p{i}>\nmodule = RBL\nmode = passive\ndomain = bl.example.test\nscore = 1\n</Plugin>\n<Plugin s{i}>\nmodule = ScoreAction\nthreshold = {i}\naction = reject\n</Plugin>\n"
        );
    }
    text.push_str("</VirtualHost>\n");
    let imported = import_ok(&text);
    assert_eq!(imported.lost, 1);
    assert!(
        imported
            .toml
            .contains("more than 256 checks, score actions or limits"),
        "cut"
    );
}

#[test]
fn a_flood_of_settings_and_blocks_is_read_in_one_pass() {
    let mut text = String::new();
    for i in 0..60_000 {
        let _ = write!(text, "k{i} = 1\n<B b{i}>\n</B>\n");
    }
    text.truncate(parse::MAX_FILE_SIZE - 100);
    text.truncate(text.rfind("</B>\n").map_or(0, |end| end + 5));
    let root = parse::parse_text(Path::new("/nonexistent/mtpolicyd.conf"), &text).expect("parses");
    assert!(root.items.len() > 50_000);
    let duplicate = error(&format!("{text}<B b7>\n</B>\n"));
    assert!(
        duplicate.contains(
            "<B b7> is given twice in the same block (first at /nonexistent/mtpolicyd.conf:23)"
        ),
        "{duplicate}"
    );
}
