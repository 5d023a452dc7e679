//! Fleet messages as another node (or whoever can publish on the Redis
//! channel) sends them: any bytes, read by a node without a secret and by
//! one with a secret.
//!
//! A message that decodes encodes back (signed or not) to one that
//! decodes to itself; a node with a secret never reads an unsigned one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::fleet::wire::{MAX_MESSAGE_BYTES, Rejected, Secret, decode, encode};

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new(b"a fleet secret for the fuzz target");
    if let Ok(message) = decode(data, Some(&secret)) {
        // Only a payload signed with this secret gets here.
        let again = encode(&message, Some(&secret));
        if again.len() <= MAX_MESSAGE_BYTES {
            assert_eq!(decode(again.as_bytes(), Some(&secret)), Ok(message.clone()));
        }
    }
    let Ok(message) = decode(data, None) else {
        return;
    };
    let plain = encode(&message, None);
    if plain.len() > MAX_MESSAGE_BYTES {
        return;
    }
    assert_eq!(decode(plain.as_bytes(), None), Ok(message.clone()));
    assert!(matches!(
        decode(plain.as_bytes(), Some(&secret)),
        Err(Rejected::Unsigned | Rejected::Malformed | Rejected::Oversized)
    ));
    let signed = encode(&message, Some(&secret));
    if signed.len() <= MAX_MESSAGE_BYTES {
        assert_eq!(decode(signed.as_bytes(), Some(&secret)), Ok(message));
    }
});
