//! Text as the rules read it: percent-escapes, backslash escapes (`\\`, `\/`, `\uXXXX`) and
//! numeric character references decoded, so that an encoding does not hide what it encodes
//! (`jane%40example.com` is an address). Decoding is only for finding: every byte of the
//! decoded text maps back to the span of the original it came from, and what is stored is the
//! original with the found spans masked.
//!
//! Written by hand: the decoders on crates.io (percent-encoding, serde_json's unescaping) give
//! the decoded text but not where each of its bytes came from, which is what masking the
//! original needs.

use std::borrow::Cow;

/// How many times decoding is repeated, for text encoded twice or more (`%2540` is `%40` is
/// `@`): each round can only shorten the text, and three cover what is seen in practice.
const ROUNDS: usize = 3;

/// The decoded text and, when it differs from the original, where each of its bytes came from.
pub(super) struct Decoded<'a> {
    pub text: Cow<'a, str>,
    /// For each byte of `text`, the original span `[start, end)` it was decoded from; `None`
    /// when nothing was decoded (the text is the original).
    origin: Option<Vec<(u32, u32)>>,
}

impl<'a> Decoded<'a> {
    /// Decodes `text`; costs one scan when it holds nothing that could be an escape.
    pub fn of(text: &'a str) -> Decoded<'a> {
        if memchr::memchr3(b'%', b'\\', b'&', text.as_bytes()).is_none() {
            return Decoded { text: Cow::Borrowed(text), origin: None };
        }
        let mut current = text.to_owned();
        let mut origin: Option<Vec<(u32, u32)>> = None;
        for _ in 0..ROUNDS {
            let Some((next, map)) = decode_once(&current) else { break };
            // Compose: each byte of the new text maps to a span of the previous one, which maps
            // to a span of the original.
            origin = Some(match origin {
                None => map,
                Some(previous) => {
                    map.iter().map(|&(s, e)| (previous[s as usize].0, previous[e as usize - 1].1)).collect()
                }
            });
            current = next;
        }
        match origin {
            None => Decoded { text: Cow::Borrowed(text), origin: None },
            Some(map) => Decoded { text: Cow::Owned(current), origin: Some(map) },
        }
    }

    /// The span of the original text that the decoded span `[start, end)` came from; the span
    /// is not empty.
    pub fn original(&self, start: usize, end: usize) -> (usize, usize) {
        match &self.origin {
            None => (start, end),
            Some(map) => (map[start].0 as usize, map[end - 1].1 as usize),
        }
    }
}

/// One round of decoding; `None` when there was nothing to decode.
fn decode_once(text: &str) -> Option<(String, Vec<(u32, u32)>)> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut map: Vec<(u32, u32)> = Vec::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    let push = |out: &mut String, map: &mut Vec<(u32, u32)>, c: char, from: usize, to: usize| {
        let before = out.len();
        out.push(c);
        map.extend(std::iter::repeat_n((from as u32, to as u32), out.len() - before));
    };
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' => percent(text, i),
            b'\\' => backslash(text, i),
            b'&' => reference(text, i),
            _ => None,
        };
        match decoded {
            Some((c, end)) => {
                changed = true;
                // Every byte of the decoded character maps to the whole escape.
                push(&mut out, &mut map, c, i, end);
                i = end;
            }
            None => {
                // Copied as it is, byte by byte, each byte mapping to itself.
                let len = utf8_len(bytes[i]);
                out.push_str(&text[i..i + len]);
                map.extend((i..i + len).map(|b| (b as u32, b as u32 + 1)));
                i += len;
            }
        }
    }
    changed.then_some((out, map))
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` escapes from `at`: as many as form whole UTF-8 characters (`%C3%A9` is one `é`).
fn percent(text: &str, at: usize) -> Option<(char, usize)> {
    let bytes = text.as_bytes();
    let mut raw = Vec::new();
    let mut ends = Vec::new();
    let mut i = at;
    while i + 2 < bytes.len() && bytes[i] == b'%' {
        let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) else { break };
        raw.push(h << 4 | l);
        i += 3;
        ends.push(i);
        if raw.len() >= 4 {
            break;
        }
    }
    let valid = match std::str::from_utf8(&raw) {
        Ok(s) => s.len(),
        Err(e) => e.valid_up_to(),
    };
    let first = std::str::from_utf8(&raw[..valid]).ok()?.chars().next()?;
    let len = first.len_utf8();
    Some((first, ends[len - 1]))
}

/// `\\`, `\/`, `\"` and `\uXXXX` (a surrogate pair as one character) from `at`.
fn backslash(text: &str, at: usize) -> Option<(char, usize)> {
    let bytes = text.as_bytes();
    match bytes.get(at + 1)? {
        b'\\' => Some(('\\', at + 2)),
        b'/' => Some(('/', at + 2)),
        b'"' => Some(('"', at + 2)),
        b'u' => {
            let unit = |from: usize| -> Option<u32> {
                let digits = text.get(from..from + 4)?;
                u32::from_str_radix(digits, 16).ok().filter(|_| digits.bytes().all(|b| b.is_ascii_hexdigit()))
            };
            let high = unit(at + 2)?;
            if (0xD800..0xDC00).contains(&high) {
                if text.get(at + 6..at + 8) != Some("\\u") {
                    return None;
                }
                let low = unit(at + 8).filter(|l| (0xDC00..0xE000).contains(l))?;
                let c = char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?;
                return Some((c, at + 12));
            }
            Some((char::from_u32(high)?, at + 6))
        }
        _ => None,
    }
}

/// A numeric character reference (`&#64;`, `&#x40;`) from `at`.
fn reference(text: &str, at: usize) -> Option<(char, usize)> {
    let rest = text.get(at + 2..)?;
    if !text[at..].starts_with("&#") {
        return None;
    }
    let (digits, radix, skip) = match rest.strip_prefix(['x', 'X']) {
        Some(hexdigits) => (hexdigits, 16, 3),
        None => (rest, 10, 2),
    };
    let len = digits.bytes().take(7).take_while(|b| (*b as char).is_digit(radix)).count();
    if len == 0 || digits.as_bytes().get(len) != Some(&b';') {
        return None;
    }
    let c = char::from_u32(u32::from_str_radix(&digits[..len], radix).ok()?)?;
    Some((c, at + skip + len + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> String {
        Decoded::of(text).text.into_owned()
    }

    #[test]
    fn decodes_what_hides_text() {
        assert_eq!(decoded("jane.doe%40example.com"), "jane.doe@example.com");
        assert_eq!(decoded("jane%2540example.com"), "jane@example.com");
        assert_eq!(decoded(r"C:\\Users\\jane"), r"C:\Users\jane");
        assert_eq!(decoded(r"https:\/\/x"), "https://x");
        assert_eq!(decoded(r"jane\u0040example.com"), "jane@example.com");
        assert_eq!(decoded(r"\ud83d\ude00"), "😀");
        assert_eq!(decoded("jane&#64;example.com &#x40;"), "jane@example.com @");
        assert_eq!(decoded("caf%C3%A9"), "café");
    }

    #[test]
    fn leaves_what_is_not_an_escape() {
        for text in ["100%", "50% off", "%zz", "%C3", r"a\nb", "a & b", "&#;", "&#xZZ;", "plain", "ü%"] {
            assert_eq!(decoded(text), text, "{text}");
        }
    }

    #[test]
    fn maps_every_decoded_span_back_to_the_original() {
        let original = "mail: jane%40example.com, done";
        let d = Decoded::of(original);
        let start = d.text.find("jane").unwrap();
        let end = d.text.find(',').unwrap();
        let (s, e) = d.original(start, end);
        assert_eq!(&original[s..e], "jane%40example.com");
        let twice = "x jane%2540example.com y";
        let d = Decoded::of(twice);
        let at = d.text.find('@').unwrap();
        assert_eq!(d.original(at, at + 1), (6, 11));
        assert_eq!(&twice[6..11], "%2540");
    }
}
