//! Small text helpers: the "tokenizer", deterministic digests and random ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Splits text into word tokens that keep their leading whitespace, so that joining them gives
/// the text back: `"Echo: hello world"` → `["Echo:", " hello", " world"]`.
pub(crate) fn split_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() && in_word {
            tokens.push(std::mem::take(&mut current));
            in_word = false;
        } else if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Repeats or cuts `tokens` to exactly `count` tokens. A repetition starts with a space so that
/// words stay apart; an empty reply is padded with `" token"`.
pub(crate) fn fit_tokens(tokens: Vec<String>, count: usize) -> Vec<String> {
    if tokens.is_empty() {
        return vec![" token".to_string(); count];
    }
    let base = tokens;
    (0..count)
        .map(|i| {
            let token = &base[i % base.len()];
            let repeats = i >= base.len() && i % base.len() == 0;
            if repeats && !token.starts_with(char::is_whitespace) {
                format!(" {token}")
            } else {
                token.clone()
            }
        })
        .collect()
}

/// Groups tokens into at most `chunks` pieces of consecutive tokens (used for thinking text,
/// which comes in a few larger pieces).
pub(crate) fn group_tokens(tokens: Vec<String>, chunks: usize) -> Vec<String> {
    let per_chunk = tokens.len().div_ceil(chunks.max(1)).max(1);
    tokens.chunks(per_chunk).map(|group| group.concat()).collect()
}

/// Number of whitespace-separated words.
pub(crate) fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// 64 hex characters derived from `seed` (FNV-1a, four lanes): stable fake sha256 digests.
pub(crate) fn hex_digest(seed: &str) -> String {
    (0u64..4)
        .map(|lane| {
            let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for byte in seed.bytes().chain(lane.to_le_bytes()) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{hash:016x}")
        })
        .collect()
}

/// A tool-call id as the server makes them: `call_` plus 8 random `[a-z0-9]` characters.
pub(crate) fn tool_call_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bits = random_u64();
    let suffix: String = (0..8)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char;
            bits /= ALPHABET.len() as u64;
            c
        })
        .collect();
    format!("call_{suffix}")
}

/// `len` random hex digits, for ids.
pub(crate) fn random_hex(len: usize) -> String {
    let mut hex = String::with_capacity(len + 16);
    while hex.len() < len {
        hex.push_str(&format!("{:016x}", random_u64()));
    }
    hex.truncate(len);
    hex
}

/// A non-cryptographic random number (splitmix64 over the clock and a counter); enough for ids.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_keeping_spaces() {
        assert_eq!(split_tokens("Echo: hello world"), ["Echo:", " hello", " world"]);
        assert_eq!(split_tokens("a  b\nc "), ["a", "  b", "\nc", " "]);
        assert_eq!(split_tokens(" lead"), [" lead"]);
        assert!(split_tokens("").is_empty());
    }

    #[test]
    fn fits_token_counts() {
        let toks = split_tokens("Echo: hi");
        assert_eq!(fit_tokens(toks.clone(), 1), ["Echo:"]);
        assert_eq!(fit_tokens(toks, 5), ["Echo:", " hi", " Echo:", " hi", " Echo:"]);
        assert_eq!(fit_tokens(Vec::new(), 2), [" token", " token"]);
    }

    #[test]
    fn groups_thinking() {
        let toks = split_tokens("The user said 11 characters.");
        assert_eq!(group_tokens(toks, 3), ["The user", " said 11", " characters."]);
    }

    #[test]
    fn digests_and_ids_have_the_right_shape() {
        let d = hex_digest("x");
        assert_eq!(d.len(), 64);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(d, hex_digest("y"));
        let id = tool_call_id();
        assert_eq!(id.len(), 13);
        assert!(id[5..].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
