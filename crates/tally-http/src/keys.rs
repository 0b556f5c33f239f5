//! API keys: how they look, how they are made, and the hash the store keeps.
//! A leaf: the authentication extractors and the configuration's default key
//! generator both use it, and it uses neither.

use sha2::{Digest, Sha256};

/// Prefix of every key this service issues, so a leaked key is recognisable
/// (secret scanners) and never mistaken for another system's token.
pub const API_KEY_PREFIX: &str = "tly_";

/// The SHA-256 of a key: what the store keeps and looks keys up by.
pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh random key: `tly_` and 32 random bytes in hex.
pub fn new_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{API_KEY_PREFIX}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hash_to_sha256() {
        let (a, b) = (new_api_key(), new_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX));
        assert_eq!(a.len(), API_KEY_PREFIX.len() + 64);
        assert_eq!(
            hex::encode(hash_api_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
