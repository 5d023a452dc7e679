use super::*;

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

fn object(module: &str, class: &str, args: Vec<Value>) -> Value {
    Value::Object(Box::new(Object {
        module: module.into(),
        class: class.into(),
        args,
        state: None,
    }))
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex"))
        .collect()
}

/// Every reply captured from fail2ban-server 1.0.2 (testdata/README.md).
const CAPTURED: &[(&str, &[u8])] = &[
    ("ping", include_bytes!("../testdata/ping.pickle")),
    ("banip_new", include_bytes!("../testdata/banip_new.pickle")),
    (
        "banip_again",
        include_bytes!("../testdata/banip_again.pickle"),
    ),
    (
        "banip_many",
        include_bytes!("../testdata/banip_many.pickle"),
    ),
    (
        "unknown_jail",
        include_bytes!("../testdata/unknown_jail.pickle"),
    ),
    (
        "invalid_command",
        include_bytes!("../testdata/invalid_command.pickle"),
    ),
    (
        "unbanip_absent_report",
        include_bytes!("../testdata/unbanip_absent_report.pickle"),
    ),
    ("status", include_bytes!("../testdata/status.pickle")),
    (
        "get_banned",
        include_bytes!("../testdata/get_banned.pickle"),
    ),
    (
        "get_banned_large",
        include_bytes!("../testdata/get_banned_large.pickle"),
    ),
    (
        "banned_all",
        include_bytes!("../testdata/banned_all.pickle"),
    ),
    (
        "get_banip_time",
        include_bytes!("../testdata/get_banip_time.pickle"),
    ),
    (
        "unpicklable",
        include_bytes!("../testdata/unpicklable.pickle"),
    ),
    (
        "kitchen_p2",
        include_bytes!("../testdata/kitchen_p2.pickle"),
    ),
    (
        "kitchen_p5",
        include_bytes!("../testdata/kitchen_p5.pickle"),
    ),
];

fn captured(name: &str) -> Value {
    let (_, bytes) = CAPTURED.iter().find(|(n, _)| *n == name).expect("vector");
    decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn reference_bytes_decode() {
    // REFERENCE.md: the request fail2ban-client sends and the reply.
    let request = hex(
        "80 05 95 29 00 00 00 00 00 00 00 5d 94 28 8c 03 736574 94 8c 07 706f7374666978 94
         8c 05 62616e6970 94 8c 09 3139322e302e322e37 94 65 2e",
    );
    assert_eq!(
        decode(&request),
        Ok(Value::List(vec![
            s("set"),
            s("postfix"),
            s("banip"),
            s("192.0.2.7")
        ]))
    );
    let reply = hex("80 05 95 07 00 00 00 00 00 00 00 4b 00 4b 01 86 94 2e");
    assert_eq!(
        decode(&reply),
        Ok(Value::Tuple(vec![Value::Int(0), Value::Int(1)]))
    );
}

#[test]
fn captured_replies_decode() {
    let ok = |value| Value::Tuple(vec![Value::Int(0), value]);
    assert_eq!(captured("ping"), ok(s("pong")));
    assert_eq!(captured("banip_new"), ok(Value::Int(1)));
    assert_eq!(captured("banip_again"), ok(Value::Int(0)));
    assert_eq!(captured("banip_many"), ok(Value::Int(1500)));
    assert_eq!(
        captured("unknown_jail"),
        Value::Tuple(vec![
            Value::Int(1),
            object(
                "fail2ban.exceptions",
                "UnknownJailException",
                vec![s("nojail")]
            )
        ])
    );
    assert_eq!(
        captured("invalid_command"),
        Value::Tuple(vec![
            Value::Int(1),
            object("builtins", "Exception", vec![s("Invalid command")])
        ])
    );
    assert_eq!(
        captured("unbanip_absent_report"),
        Value::Tuple(vec![
            Value::Int(1),
            object(
                "builtins",
                "ValueError",
                vec![s("not banned: ['192.0.2.8']")]
            )
        ])
    );
    let banned = Value::List(vec![s("192.0.2.7"), s("2001:db8::7"), s("198.51.100.9")]);
    assert_eq!(captured("get_banned"), ok(banned.clone()));
    assert_eq!(
        captured("banned_all"),
        ok(Value::List(vec![Value::Dict(vec![(
            s("spamwall"),
            banned.clone()
        )])]))
    );
    let pair = |name: &str, value| Value::Tuple(vec![s(name), value]);
    assert_eq!(
        captured("status"),
        ok(Value::List(vec![
            pair(
                "Filter",
                Value::List(vec![
                    pair("Currently failed", Value::Int(0)),
                    pair("Total failed", Value::Int(0)),
                    pair("File list", Value::List(vec![s("/tmp/f2b/empty.log")])),
                ])
            ),
            pair(
                "Actions",
                Value::List(vec![
                    pair("Currently banned", Value::Int(3)),
                    pair("Total banned", Value::Int(3)),
                    pair("Banned IP list", banned),
                ])
            ),
        ]))
    );
    assert_eq!(
        captured("unpicklable"),
        s("ERROR: pickle data was truncated")
    );
    let Value::Tuple(with_time) = captured("get_banip_time") else {
        panic!("tuple");
    };
    assert!(
        with_time[1].as_seq().expect("list")[0]
            .as_str()
            .expect("str")
            .starts_with("192.0.2.7 \t")
    );
}

#[test]
fn large_banned_list_decodes_within_budget() {
    let (_, bytes) = CAPTURED
        .iter()
        .find(|(n, _)| *n == "get_banned_large")
        .expect("vector");
    let (decoded, spent, budget) = Decoder::new(bytes).run_measured();
    assert_eq!(
        budget,
        bytes.len() * BUDGET_PER_INPUT_BYTE + BUDGET_BASE,
        "the budget grows with the input"
    );
    assert!(spent <= budget, "spent {spent} of {budget}");
    let Value::Tuple(reply) = decoded.expect("decodes") else {
        panic!("tuple");
    };
    let list = reply[1].as_seq().expect("list");
    assert_eq!(list.len(), 1502);
    assert!(spent >= list.len(), "every item is charged: spent {spent}");
    assert_eq!(list[2], s("10.0.0.1"));
    assert!(list.iter().all(|item| item.as_str().is_some()));
}

/// A list of `builtins.str` objects as fail2ban's Python writes it
/// (batches of 1000, `STACK_GLOBAL` once then `BINGET`), for a list
/// memoized as entry `memo`.
fn str_list(out: &mut Vec<u8>, memo: u8, addresses: &[&str]) {
    out.extend_from_slice(b"]\x94");
    for (n, batch) in addresses.chunks(1000).enumerate() {
        out.push(b'(');
        for (i, address) in batch.iter().enumerate() {
            if n == 0 && i == 0 {
                out.extend_from_slice(b"\x8c\x08builtins\x94\x8c\x03str\x94\x93\x94");
            } else {
                out.extend_from_slice(&[b'h', memo + 3]);
            }
            out.extend_from_slice(&[0x8c, u8::try_from(address.len()).expect("short")]);
            out.extend_from_slice(address.as_bytes());
            out.extend_from_slice(b"\x94\x85\x94R\x94");
        }
        out.push(b'e');
    }
}

/// Protocol 5 framing around `body`, in one frame: Python splits
/// frames at 64 KiB, which the decoder does not look at.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, 5, 0x95];
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// `get <jail> banned` → `(0, [addresses])`.
fn banned_reply(addresses: &[&str]) -> Vec<u8> {
    let mut body = b"K\x00".to_vec();
    str_list(&mut body, 0, addresses);
    body.extend_from_slice(b"\x86\x94.");
    framed(&body)
}

/// `status <jail>` with `addresses` banned (the counters stay those of
/// the captured reply).
fn status_reply(addresses: &[&str]) -> Vec<u8> {
    let captured: &[u8] = include_bytes!("../testdata/status.pickle");
    let mut body = captured[11..183].to_vec();
    str_list(&mut body, 19, addresses);
    body.extend_from_slice(b"\x86\x94e\x86\x94e\x86\x94.");
    framed(&body)
}

#[test]
fn real_banned_lists_fit_the_budget_at_any_size() {
    // The generators reproduce the captured replies byte for byte.
    let large: Vec<String> = ["192.0.2.7".to_owned(), "2001:db8::7".to_owned()]
        .into_iter()
        .chain((0..1500).map(|i| format!("10.{}.{}.1", i / 256, i % 256)))
        .collect();
    let large: Vec<&str> = large.iter().map(String::as_str).collect();
    assert_eq!(
        banned_reply(&large),
        include_bytes!("../testdata/get_banned_large.pickle")
    );
    assert_eq!(
        status_reply(&["192.0.2.7", "2001:db8::7", "198.51.100.9"]),
        include_bytes!("../testdata/status.pickle")
    );
    // 60,000 short addresses: far past the base budget, and the
    // reply shape that decodes to the most bytes per input byte.
    let many: Vec<String> = (0..60_000u32)
        .map(|i| format!("1.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let Value::Tuple(banned) = decode(&banned_reply(&many)).expect("banned") else {
        panic!("tuple");
    };
    let banned = banned[1].as_seq().expect("list");
    assert_eq!(banned.len(), many.len());
    assert_eq!(banned.last(), Some(&s("1.0.234.95")));
    let Value::Tuple(status) = decode(&status_reply(&many)).expect("status") else {
        panic!("tuple");
    };
    let actions = &status[1].as_seq().expect("sections")[1]
        .as_seq()
        .expect("pair")[1];
    let listed = &actions.as_seq().expect("entries")[2]
        .as_seq()
        .expect("pair")[1];
    assert_eq!(listed.as_seq().expect("list").len(), many.len());
}

#[test]
fn kitchen_sink_decodes_in_both_protocols() {
    let mut error = object("builtins", "ValueError", vec![s("bad value")]);
    if let Value::Object(object) = &mut error {
        object.state = Some(Value::Dict(vec![(s("note"), Value::Int(7))]));
    }
    let unique: Vec<Value> = (0..300).map(|i| s(&format!("u{i}"))).collect();
    for (name, bytes) in [
        (
            "kitchen_p2",
            Value::Object(Box::new(Object {
                module: "_codecs".into(),
                class: "encode".into(),
                args: vec![s("by"), s("latin1")],
                state: None,
            })),
        ),
        ("kitchen_p5", Value::Bytes(b"by".to_vec())),
    ] {
        let expected = Value::Tuple(vec![
            Value::None,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(-1),
            Value::Int(255),
            Value::Int(65535),
            Value::Int(70000),
            Value::Int(-(1 << 40)),
            Value::Int(1 << 62),
            Value::Float(1.5),
            s("é"),
            bytes,
            Value::List(vec![]),
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            Value::Dict(vec![]),
            Value::Dict(vec![
                (s("a"), Value::Int(1)),
                (s("b"), Value::List(vec![Value::Int(2)])),
            ]),
            Value::Tuple(vec![]),
            Value::Tuple((1..=4).map(Value::Int).collect()),
            error.clone(),
            Value::List(unique.clone()),
            s("shared-x"),
            // Fetched from the memo with LONG_BINGET (index > 255).
            Value::List(vec![s("shared-x")]),
        ]);
        assert_eq!(captured(name), expected, "{name}");
    }
}

#[test]
fn commands_encode_as_protocol_2_lists() {
    let bytes = encode_command(&["set", "spamwall", "banip", "2001:db8::7"]).expect("encode");
    assert_eq!(&bytes[..4], &[0x80, 2, b']', b'(']);
    assert_eq!(
        decode(&bytes),
        Ok(Value::List(vec![
            s("set"),
            s("spamwall"),
            s("banip"),
            s("2001:db8::7")
        ]))
    );
    assert_eq!(
        decode(&encode_command(&[]).expect("encode")),
        Ok(Value::List(vec![]))
    );
}

#[test]
fn display_is_pythonic_and_summary_is_bounded() {
    assert_eq!(
        captured("unknown_jail").to_string(),
        "(1, UnknownJailException(\"nojail\"))"
    );
    let long = captured("get_banned_large").summary(50);
    assert!(long.chars().count() <= 51 && long.ends_with('…'), "{long}");
}

#[test]
fn malformed_inputs_are_errors() {
    let cases: &[(&[u8], PickleError)] = &[
        (b"", PickleError::Truncated { offset: 0 }),
        (b"\x80\x05", PickleError::Truncated { offset: 2 }),
        (
            b"K\x01K\x02.",
            PickleError::Malformed {
                offset: 4,
                reason: "STOP with more than one value on the stack",
            },
        ),
        (
            b".",
            PickleError::Malformed {
                offset: 0,
                reason: "STOP with an empty stack",
            },
        ),
        (
            b"N.x",
            PickleError::Malformed {
                offset: 1,
                reason: "bytes after STOP",
            },
        ),
        (
            b"\xff",
            PickleError::UnknownOpcode {
                opcode: 0xff,
                offset: 0,
            },
        ),
        (
            b"h\x07",
            PickleError::MissingMemo {
                index: 7,
                offset: 0,
            },
        ),
        (b"\x8c\x02\xff\xfe.", PickleError::InvalidUtf8 { offset: 2 }),
        (
            b"(a",
            PickleError::Malformed {
                offset: 1,
                reason: "stack underflow",
            },
        ),
        (
            b"N(N\x86",
            PickleError::Malformed {
                offset: 3,
                reason: "tuple of more values than the stack holds",
            },
        ),
        (
            b"Ne",
            PickleError::Malformed {
                offset: 1,
                reason: "no MARK to pop to",
            },
        ),
        (
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            PickleError::Truncated { offset: 9 },
        ),
        (b"X\xff\xff\xff\xff", PickleError::Truncated { offset: 5 }),
        (
            b"\x8a\x09123456789",
            PickleError::Malformed {
                offset: 0,
                reason: "integer wider than 64 bits",
            },
        ),
        (
            b"N)R",
            PickleError::Malformed {
                offset: 2,
                reason: "REDUCE of something other than a class",
            },
        ),
        (
            b"\x80\x06",
            PickleError::Malformed {
                offset: 0,
                reason: "protocol newer than 5",
            },
        ),
        (
            b"(N.",
            PickleError::Malformed {
                offset: 2,
                reason: "MARK without its closing opcode",
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(decode(input).as_ref(), Err(expected), "{input:?}");
    }
}

#[test]
fn memo_misuse_and_extension_opcodes_are_errors() {
    assert_eq!(
        decode(b"j\xff\xff\xff\xff."),
        Err(PickleError::MissingMemo {
            index: u64::from(u32::MAX),
            offset: 0,
        })
    );
    assert_eq!(
        decode(b"\x94N."),
        Err(PickleError::Malformed {
            offset: 0,
            reason: "stack underflow",
        })
    );
    // EXT1: a class from the copyreg extension registry.
    assert_eq!(
        decode(b"\x82\x01N."),
        Err(PickleError::UnknownOpcode {
            opcode: 0x82,
            offset: 0,
        })
    );
}

#[test]
fn deep_nesting_is_refused() {
    let mut input = vec![b']'; 10_000];
    input.extend(std::iter::repeat_n(b'a', 9_999));
    input.push(b'.');
    assert!(matches!(decode(&input), Err(PickleError::TooDeep { .. })));
    let mut tuples = vec![b'N'];
    tuples.extend(std::iter::repeat_n(0x85, 1_000_000));
    tuples.push(b'.');
    assert!(matches!(decode(&tuples), Err(PickleError::TooDeep { .. })));
    // {1: {1: {1: …}}} filled from the inside out by SETITEM.
    let mut dicts = vec![b'}'];
    for _ in 0..10_000 {
        dicts.extend_from_slice(b"K\x01}");
    }
    dicts.extend(std::iter::repeat_n(b's', 10_000));
    dicts.push(b'.');
    assert!(matches!(decode(&dicts), Err(PickleError::TooDeep { .. })));
    // m.f(m.f(m.f(…))) by REDUCE, and as BUILD state.
    let mut objects = b"cm\nf\n".repeat(10_000);
    objects.push(b'N');
    objects.extend(b"\x85R".repeat(10_000));
    objects.push(b'.');
    assert!(matches!(decode(&objects), Err(PickleError::TooDeep { .. })));
    let mut states = b"cm\nf\n)R".repeat(10_000);
    states.push(b'N');
    states.extend(std::iter::repeat_n(b'b', 10_000));
    states.push(b'.');
    assert!(matches!(decode(&states), Err(PickleError::TooDeep { .. })));
    let mut ok = vec![b'N'];
    ok.extend(std::iter::repeat_n(0x85, MAX_DEPTH));
    ok.push(b'.');
    assert!(decode(&ok).is_ok());
}

#[test]
fn memo_amplification_is_refused() {
    // A 1 KiB string, then 30 rounds of "list of two copies of the
    // previous value", each memoized: 2^30 KiB if copied naively.
    let mut input = vec![b'X'];
    input.extend_from_slice(&1024u32.to_le_bytes());
    input.extend(std::iter::repeat_n(b'a', 1024));
    input.extend_from_slice(b"q\x00");
    for round in 0..30u8 {
        input.extend_from_slice(&[
            b'0',
            b']',
            b'(',
            b'h',
            round,
            b'h',
            round,
            b'e',
            b'q',
            round + 1,
        ]);
    }
    input.push(b'.');
    assert!(
        matches!(decode(&input), Err(PickleError::TooLarge { .. })),
        "{:?}",
        decode(&input).map(|v| v.weight())
    );
    // DUP is charged too.
    let mut dup = vec![b'(', b'X'];
    dup.extend_from_slice(&1024u32.to_le_bytes());
    dup.extend(std::iter::repeat_n(b'a', 1024));
    dup.extend(std::iter::repeat_n(b'2', 100_000));
    dup.extend_from_slice(b"t.");
    assert!(matches!(decode(&dup), Err(PickleError::TooLarge { .. })));
}

#[test]
fn every_truncated_reply_asks_for_more() {
    // The client reads until a reply decodes; a cut reply must say
    // `Truncated` (read on), never decode or fail otherwise.
    for (name, bytes) in CAPTURED {
        let step = if bytes.len() > 4096 { 97 } else { 1 };
        for len in (0..bytes.len()).step_by(step) {
            assert!(
                matches!(decode(&bytes[..len]), Err(PickleError::Truncated { .. })),
                "{name} cut at {len}: {:?}",
                decode(&bytes[..len])
            );
        }
    }
}

#[test]
fn huge_declared_lengths_are_checked_against_the_input() {
    // Lengths are compared with the bytes present before anything is
    // allocated.
    for (opcode, len) in [
        (0x8d, 1u64 << 60), // BINUNICODE8
        (0x8e, 1 << 60),    // BINBYTES8
        (0x8d, u64::MAX),
    ] {
        let mut input = vec![0x80, 5, opcode];
        input.extend_from_slice(&len.to_le_bytes());
        input.extend_from_slice(b"abc.");
        assert_eq!(decode(&input), Err(PickleError::Truncated { offset: 15 }));
    }
    for opcode in [b'X', b'B'] {
        let mut input = vec![opcode];
        input.extend_from_slice(&u32::MAX.to_le_bytes());
        input.extend_from_slice(b"abc.");
        assert_eq!(decode(&input), Err(PickleError::Truncated { offset: 9 }));
    }
    // A FRAME's length is never used: what follows is read as usual.
    let mut frame = vec![0x80, 5, 0x95];
    frame.extend_from_slice(&(1u64 << 63).to_le_bytes());
    frame.extend_from_slice(b"N.");
    assert_eq!(decode(&frame), Ok(Value::None));
}

#[test]
fn globals_are_recorded_never_called() {
    let system = |arg: &str| object("os", "system", vec![s(arg)]);
    // GLOBAL + REDUCE, STACK_GLOBAL + REDUCE (protocol 4), NEWOBJ.
    assert_eq!(
        decode(b"cos\nsystem\n(X\x0a\x00\x00\x00echo pwnedtR."),
        Ok(system("echo pwned"))
    );
    assert_eq!(
        decode(
            b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x0aecho pwned\x94\x85\x94R\x94."
        ),
        Ok(system("echo pwned"))
    );
    assert_eq!(
        decode(b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85\x81."),
        Ok(system("x"))
    );
    // BUILD only records the state.
    let Ok(Value::Object(built)) =
        decode(b"cos\nsystem\n(X\x01\x00\x00\x00xtR}X\x01\x00\x00\x00aK\x01sb.")
    else {
        panic!("object");
    };
    assert_eq!(
        built.state,
        Some(Value::Dict(vec![(s("a"), Value::Int(1))]))
    );
    // INST and OBJ, protocol 0/1's way to instantiate, are refused.
    assert_eq!(
        decode(b"(X\x0a\x00\x00\x00echo pwnedios\nsystem\n."),
        Err(PickleError::UnknownOpcode {
            opcode: b'i',
            offset: 16
        })
    );
    assert_eq!(
        decode(b"(cos\nsystem\nX\x0a\x00\x00\x00echo pwnedo."),
        Err(PickleError::UnknownOpcode {
            opcode: b'o',
            offset: 27
        })
    );
    // Only builtins.str becomes a string; a lookalike keeps its class.
    assert_eq!(
        decode(
            b"\x80\x02K\x00](cbuiltins\nstr\nX\x09\x00\x00\x00192.0.2.7\x85R\
              cos\nsystem\nX\x09\x00\x00\x00192.0.2.8\x85Re\x86."
        ),
        Ok(Value::Tuple(vec![
            Value::Int(0),
            Value::List(vec![s("192.0.2.7"), system("192.0.2.8")])
        ]))
    );
}

#[test]
fn floods_of_small_opcodes_stay_within_the_budget() {
    // One-byte opcodes decode to at most one 32-byte value each (or
    // an 8-byte mark), which the budget allows: each flood runs to its
    // structural error, in time linear in its length. Copies of larger
    // values are what the budget refuses (`memo_amplification_is_refused`).
    let more = "STOP with more than one value on the stack";
    let open = "MARK without its closing opcode";
    for (unit, reason) in [
        (&b"N"[..], more),
        (b"]", more),
        (b"N\x94", more),
        (b"(N", open),
        (b"(", open),
        (b"N0", "STOP with an empty stack"),
    ] {
        let mut input = unit.repeat((1 << 21) / unit.len());
        input.push(b'.');
        let started = std::time::Instant::now();
        assert_eq!(
            decode(&input).map(drop),
            Err(PickleError::Malformed {
                offset: 1 << 21,
                reason
            }),
            "{unit:?}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{unit:?}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn memo_indices_follow_python() {
    // MEMOIZE stores at len(memo), which entries put out of order by
    // BINPUT count towards; pickle.loads gives (8, 10, None, 11).
    assert_eq!(
        decode(b"Nq\x020K\x07\x940K\x08q\x000K\x0aq\x010K\x0b\x940(h\x00h\x01h\x02h\x03t."),
        Ok(Value::Tuple(vec![
            Value::Int(8),
            Value::Int(10),
            Value::None,
            Value::Int(11)
        ]))
    );
}

/// xorshift64*: deterministic, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("fits")
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// Opcodes the decoder knows, so mutations reach deep code paths.
const OPCODES: &[u8] =
    b"(.012GJKMNRXBCabcdehjlqrstu})]\x80\x81\x85\x86\x87\x88\x89\x8a\x8c\x8d\x8e\x93\x94\x95";

#[test]
fn random_and_mutated_inputs_never_panic() {
    let mut rng = Rng(0x5eed_f2b0_0000_0001);
    let mut decoded = 0;
    for round in 0..20_000 {
        let input: Vec<u8> = if round % 4 == 0 {
            let len = rng.below(64);
            (0..len)
                .map(|_| {
                    if rng.below(3) == 0 {
                        rng.byte()
                    } else {
                        OPCODES[rng.below(OPCODES.len())]
                    }
                })
                .collect()
        } else {
            let (_, seed) = CAPTURED[rng.below(CAPTURED.len())];
            let mut input = seed.to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(input.len().max(1));
                match rng.below(5) {
                    0 if !input.is_empty() => input[at] = rng.byte(),
                    1 if !input.is_empty() => input[at] = OPCODES[rng.below(OPCODES.len())],
                    2 => input.insert(at.min(input.len()), OPCODES[rng.below(OPCODES.len())]),
                    3 if !input.is_empty() => {
                        input.remove(at);
                    }
                    _ => input.truncate(at),
                }
            }
            input
        };
        if decode(&input).is_ok() {
            decoded += 1;
        }
    }
    // Some mutations leave a valid pickle; most do not.
    assert!(decoded > 50, "only {decoded} inputs decoded");
}
