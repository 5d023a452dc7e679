//! Postfix policy requests as a peer sends them: any bytes, in any pieces.
//!
//! The first byte picks the size of the pieces the rest arrives in. What
//! the decoder takes off the stream must not depend on how it was cut,
//! and every request it returns must decode again from its own good
//! attributes (bad ones are left out and reported).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::policy::codec::{CodecError, Decoder, Limits, Request};

/// Small limits, so that short inputs reach every one of them.
const LIMITS: Limits = Limits {
    max_line_length: 64,
    max_attributes: 8,
    max_request_size: 256,
};

/// The requests taken off `input` fed in pieces of `piece` bytes, and the
/// error that ended the stream, if any.
fn decode_stream(input: &[u8], piece: usize) -> (Vec<Request>, Option<CodecError>) {
    let mut decoder = Decoder::new(LIMITS);
    let mut buffer = Vec::new();
    let mut requests = Vec::new();
    for chunk in input.chunks(piece) {
        buffer.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
        // Waiting for more: the buffer never grows past the limit.
        assert!(buffer.len() <= LIMITS.max_request_size);
    }
    (requests, None)
}

fn encode(request: &Request) -> Vec<u8> {
    let mut text = Vec::new();
    for (name, value) in request.attributes() {
        text.extend_from_slice(name.as_bytes());
        text.push(b'=');
        text.extend_from_slice(value.as_bytes());
        text.push(b'\n');
    }
    text.push(b'\n');
    text
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 16) + 1;
    let (whole, whole_error) = decode_stream(input, input.len().max(1));
    let (pieces, pieces_error) = decode_stream(input, piece);
    assert_eq!(whole, pieces, "requests depend on how the input was cut");
    assert_eq!(whole_error.is_some(), pieces_error.is_some());
    for request in &whole {
        assert!(request.len() + request.bad_attributes().len() <= LIMITS.max_attributes);
        // A request whose every attribute was bad is still a request (it
        // gets the default answer); nothing of it re-encodes.
        if request.is_empty() {
            assert!(!request.bad_attributes().is_empty());
            continue;
        }
        let mut text = encode(request);
        let again = Decoder::new(LIMITS)
            .decode(&mut text)
            .expect("a decoded request encodes to valid text")
            .expect("and complete");
        assert!(
            again.bad_attributes().is_empty(),
            "good attributes re-encode good"
        );
        assert!(again.attributes().eq(request.attributes()));
        assert!(text.is_empty());
    }
});
