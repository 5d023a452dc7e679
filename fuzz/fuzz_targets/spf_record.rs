//! SPF records as a domain's DNS publishes them: anyone can publish any
//! TXT record and have spamwall evaluate it by sending mail from that
//! domain. A record is parsed (ASCII, the RFC 7208 grammar, then
//! `mail-auth`'s structure) and every macro in it expanded, as an
//! evaluation would, for an IPv4 and an IPv6 client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_auth::spf::{Macro, Mechanism, Variables};
use spamwall::policy::parse_spf_record;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = parse_spf_record(data) else {
        return;
    };
    for client in ["192.0.2.1", "2001:db8::1"] {
        let mut vars = Variables::new();
        vars.set_ip(&client.parse().expect("a test address"));
        vars.set_sender(b"first-last@example.org".to_vec());
        vars.set_helo_domain(b"mx.example.org".to_vec());
        vars.set_domain(b"example.org".to_vec());
        vars.set_validated_domain(b"unknown".to_vec());
        let macros = record
            .directives
            .iter()
            .filter_map(|directive| match &directive.mechanism {
                Mechanism::Include { macro_string }
                | Mechanism::A { macro_string, .. }
                | Mechanism::Mx { macro_string, .. }
                | Mechanism::Ptr { macro_string }
                | Mechanism::Exists { macro_string } => Some(macro_string),
                _ => None,
            })
            .chain(record.redirect.iter())
            .chain(record.exp.iter());
        for macro_string in macros {
            let expanded = macro_string.eval(&vars, "example.org", true);
            assert!(expanded.len() < 64 * 1024);
        }
        let _ = Macro::None.eval(&vars, "example.org", true);
    }
});
