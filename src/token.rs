//! Token format `<id>|berth_<secret>`: generation, checksum, parsing and hashing.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Fixed prefix that secret scanners and people recognise.
pub const PREFIX: &str = "berth_";
/// Random characters at the start of the secret.
const RANDOM_LEN: usize = 34;
/// Base62 CRC-32 of the random part, zero-padded.
const CHECKSUM_LEN: usize = 6;
/// Characters after the prefix.
pub const SECRET_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
/// Longest id accepted before any database access (i64 range).
const MAX_ID_DIGITS: usize = 18;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a person should be told about a token that does not parse.
pub const FORMAT_HINT: &str =
    "This token is incomplete or mistyped (format: 1|berth_ followed by 40 letters and digits)";

/// A token secret (`berth_...`); Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Draw a fresh secret from the OS CSPRNG with its checksum.
    pub fn generate() -> Secret {
        let mut rng = rand::rng();
        let random: String = (0..RANDOM_LEN)
            .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
            .collect();
        let checksum = checksum(&random);
        Secret(format!("{PREFIX}{random}{checksum}"))
    }

    /// The secret text, for the one time it is shown.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the secret: the only form that is stored.
    pub fn hash(&self) -> [u8; 32] {
        hash(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(MASKED)")
    }
}

/// A parsed `<id>|berth_<secret>` token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: i64,
    pub secret: Secret,
}

impl Token {
    /// Parse and verify the checksum; no database access.
    pub fn parse(text: &str) -> Result<Token, &'static str> {
        let text = text.trim();
        let (id, secret) = text.split_once('|').ok_or(FORMAT_HINT)?;
        if id.is_empty() || id.len() > MAX_ID_DIGITS || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FORMAT_HINT);
        }
        let id: i64 = id.parse().map_err(|_| FORMAT_HINT)?;
        let body = secret.strip_prefix(PREFIX).ok_or(FORMAT_HINT)?;
        if body.len() != SECRET_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(FORMAT_HINT);
        }
        let (random, sum) = body.split_at(RANDOM_LEN);
        if checksum(random) != sum {
            return Err(FORMAT_HINT);
        }
        Ok(Token {
            id,
            secret: Secret(secret.to_string()),
        })
    }

    /// The whole `id|secret` string, for the one time it is shown.
    pub fn expose(&self) -> String {
        format!("{}|{}", self.id, self.secret.expose())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}|MASKED)", self.id)
    }
}

/// SHA-256 of any secret string (tokens, session ids).
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn hashes_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> String {
        format!("17|{}", Secret::generate().expose())
    }

    #[test]
    fn generated_tokens_parse_and_match_the_scanning_regex_shape() {
        let text = fresh();
        let token = Token::parse(&text).unwrap();
        assert_eq!(token.id, 17);
        assert_eq!(token.expose(), text);
        let body = text.split_once("|berth_").unwrap().1;
        assert_eq!(body.len(), 40);
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn checksum_is_crc32_in_base62() {
        // CRC-32 of "a" is 0xE8B7BE43 = 3904355907 = "4GEHKN" in base62.
        assert_eq!(checksum("a"), "4GEHKN");
        assert_eq!(checksum("").len(), 6);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = fresh();
        let cases = [
            String::new(),
            "17".to_string(),
            "|berth_x".to_string(),
            good.replace("17|", "x|"),
            good.replace("17|", "-17|"),
            good.replace("berth_", "ghp_"),
            good[..good.len() - 1].to_string(),
            format!("{good}a"),
            format!("99999999999999999999|{}", &good[3..]),
            good.replacen("|berth_", "|berth_!", 1),
        ];
        for case in cases {
            assert!(Token::parse(&case).is_err(), "accepted {case:?}");
        }
    }

    #[test]
    fn one_changed_character_fails_the_checksum() {
        let good = fresh();
        let mut bytes = good.into_bytes();
        let at = bytes.len() - 10;
        bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
        assert!(Token::parse(&String::from_utf8(bytes).unwrap()).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = Token::parse(&fresh()).unwrap();
        let shown = format!("{token:?} {:?}", token.secret);
        assert!(!shown.contains(token.secret.expose()));
        assert!(shown.contains("MASKED"));
    }

    #[test]
    fn hashes_compare() {
        assert!(hashes_match(&hash("a"), &hash("a")));
        assert!(!hashes_match(&hash("a"), &hash("b")));
        assert!(!hashes_match(&hash("a"), &[0u8; 4]));
    }
}

/// Properties of the token parser on any text: by proptest here (CI,
/// bounded) and by the cargo-fuzz target in `fuzz/`.
#[cfg(any(test, fuzzing))]
pub mod props {
    use super::*;

    /// Parsing never panics; a token that parses shows as text that parses
    /// to the same token, with its secret as written.
    pub fn token_text(text: &str) {
        let Ok(token) = Token::parse(text) else {
            return;
        };
        assert!(token.id >= 0);
        assert!(text.contains(token.secret.expose()));
        assert_eq!(Token::parse(&token.expose()), Ok(token.clone()));
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        /// A valid token's text.
        fn valid() -> impl Strategy<Value = String> {
            (0i64..=999_999_999_999_999_999, any::<[u8; 34]>()).prop_map(|(id, bytes)| {
                let random: String = bytes
                    .iter()
                    .map(|b| BASE62[usize::from(*b) % BASE62.len()] as char)
                    .collect();
                format!("{id}|{PREFIX}{random}{}", checksum(&random))
            })
        }

        proptest! {
            #[test]
            fn any_text(text in any::<String>()) {
                token_text(&text);
            }

            #[test]
            fn valid_tokens_parse_and_any_changed_character_fails(
                text in valid(),
                at in any::<prop::sample::Index>(),
                to in any::<u8>(),
            ) {
                token_text(&text);
                let token = Token::parse(&text).unwrap();
                prop_assert_eq!(token.expose(), text.clone());
                // One byte of the secret changed to another alphanumeric.
                let secret_at = text.find(PREFIX).unwrap() + PREFIX.len();
                let at = secret_at + at.index(SECRET_LEN);
                let was = BASE62.iter().position(|&b| b == text.as_bytes()[at]).unwrap();
                let to = BASE62[(was + 1 + usize::from(to) % (BASE62.len() - 1)) % BASE62.len()];
                let mut changed = text.into_bytes();
                changed[at] = to;
                let changed = String::from_utf8(changed).unwrap();
                token_text(&changed);
                prop_assert!(Token::parse(&changed).is_err(), "{}", changed);
            }
        }
    }
}
