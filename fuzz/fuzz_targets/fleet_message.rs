//! Fleet messages as another node (or whoever can publish on the Redis
//! channel) sends them: any bytes.
//!
//! A message that decodes encodes back to one that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::fleet::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let json = serde_json::to_vec(&message).expect("a message serializes");
    assert_eq!(Message::decode(&json).expect("and decodes again"), message);
});
