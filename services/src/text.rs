//! Caller input inside messages, bounded. A status message travels as the `grpc-message`
//! header, and HTTP/2 peers refuse headers of a few KB: echoing a 17 KB username whole
//! turns a plain NOT_FOUND into a broken call at the gateway.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The most characters of input [`quote`] shows, escapes included.
pub const QUOTE_CHARS: usize = 64;

/// `input` in double quotes, escaped like `{:?}`, showing at most [`QUOTE_CHARS`]
/// characters; a longer input ends in `…` and says its whole length:
/// `"aaaa…" (17000 bytes)`.
pub fn quote(input: &str) -> String {
    let mut quoted = String::with_capacity(QUOTE_CHARS + 24);
    quoted.push('"');
    let mut shown = 0;
    let mut cut = None;
    for (at, c) in input.char_indices() {
        // `char::escape_debug` also escapes `'`, which `{:?}` of a string leaves alone.
        let escaped = (c != '\'').then(|| c.escape_debug());
        let width = escaped.as_ref().map_or(1, ExactSizeIterator::len);
        if shown + width > QUOTE_CHARS {
            cut = Some(at);
            break;
        }
        match escaped {
            Some(escaped) => quoted.extend(escaped),
            None => quoted.push(c),
        }
        shown += width;
    }
    match cut {
        None => quoted.push('"'),
        Some(_) => {
            let _ = write!(quoted, "…\" ({} bytes)", input.len());
        }
    }
    quoted
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut: for
/// text that is not ours to trust, such as another service's status message.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_shows_short_input_whole_like_debug() {
        for input in ["bob", "", "it's \"x\"", "tab\there", "é ü 日本"] {
            assert_eq!(quote(input), format!("{input:?}"), "{input}");
        }
    }

    #[test]
    fn quote_keeps_64_characters_of_a_20kb_input_and_says_how_long_it_was() {
        let input = "a".repeat(20_000);
        let quoted = quote(&input);
        assert_eq!(quoted, format!("\"{}…\" (20000 bytes)", "a".repeat(64)));
    }

    #[test]
    fn quote_cuts_multibyte_input_on_a_char_boundary() {
        let input = "日".repeat(10_000);
        let quoted = quote(&input);
        assert!(quoted.starts_with(&format!("\"{}…\"", "日".repeat(64))));
        assert!(quoted.ends_with("(30000 bytes)"), "{quoted}");
    }

    #[test]
    fn quote_counts_escapes_against_the_bound() {
        let input = "\u{1}".repeat(1_000);
        let quoted = quote(&input);
        assert!(quoted.len() < 100, "{} bytes: {quoted}", quoted.len());
        assert!(quoted.ends_with("(1000 bytes)"), "{quoted}");
    }

    #[test]
    fn clip_cuts_on_a_char_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdef", 3), "abc…");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(clip("aé", 2), "a…");
    }
}
