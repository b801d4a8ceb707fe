//! The floor beneath the named rules: secrets and personal numbers found by their shape, not
//! by a list of brands, so that a new service's token or another country's identity number is
//! masked without a rule of its own.
//!
//! - **Random-looking runs.** Text is cut into runs of token characters, and runs into
//!   segments at `/ _ - . : ~`. A segment is a *word* when it reads as one: lowercase hex of
//!   the lengths that name code (7–12, 32, 40, 64), or pieces (`Http`, `request`, `XML`, `42`)
//!   that each look pronounceable or short (see [`word_like`]), at least three characters a
//!   piece on average. Consecutive segments that are not words form a chunk, which is masked
//!   when it has 16 or more characters, mixes two or more classes (lower, upper, digits,
//!   `+=`), and carries at least 3.0 bits of entropy per character. So `export_pdf_v2_report`
//!   and `getUserAccountSettings` are words, and `sk_live_Zx9Qe...` loses its random part.
//!   The measure was chosen on 32,742 distinct identifiers of 16 or more characters from the
//!   sources of 304 crates (1.35% taken, nearly all hashes, base64 test vectors and OpenSSL
//!   object names) against 3,000 random tokens per alphabet (base62 100%, base64 99.4%,
//!   base64url 99.7%, lowercase hex of 16–31 characters 97.2%, upper-case or lower-case
//!   letters with digits 96–98.6%); see `docs/privacy.md`.
//! - **Digit runs.** Six or more digits, joined by spaces, dots, dashes, slashes or
//!   parentheses, with a leading `+` and the letters glued to them (`AB123456C`): phone
//!   numbers, identity numbers, accounts. Dates, times, versions, durations and Unix times
//!   are kept.
//! - **Document codes.** Upper-case codes of 8–15 letters and digits that switch between the
//!   two three times or more (`C01X00T47`), or end in one letter after four or more digits
//!   (`ABCDE1234F`): passports, tax and identity numbers whose digits alone are too few.

use regex::Regex;
use std::sync::LazyLock;

use super::{re, Found, Rule};

/// Spans that identify code or time, not people, and that operators need; the shape rules
/// leave them alone (the named rules and credentials by position do not). Each kind is a named
/// group, checked further in [`keeps`].
static KEEP: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        // A canonical UUID.
        r"\b(?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\b",
        // A hexadecimal literal (an address, a flag).
        r"|\b(?P<literal>0x[0-9a-fA-F_]+)\b",
        // An RFC 3339 or ISO 8601 date, with or without a time.
        r"|\b(?P<iso>\d{4}-(?P<im>\d{2})-(?P<id>\d{2})(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?)?)\b",
        // Dates as people write them.
        r"|\b(?P<date>\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d{2}|(?:19|20)\d{2}/\d{1,2}/\d{1,2})\b",
        // A compact date or date and time (`20261207`, `20261207103000`).
        r"|\b(?P<compact>(?:19|20)\d{2}(?P<cm>\d{2})(?P<cd>\d{2})(?:(?P<ch>\d{2})(?P<cn>\d{2})(?:\d{2})?)?)\b",
        // A time of day.
        r"|\b(?P<time>\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\b",
        // A version (`1.4.2`, `v10.0.19045.2364`, `2.0.0-rc.1+build.5`).
        r"|\b(?P<version>v?\d+(?:\.\d+){1,3}(?:[-+][0-9A-Za-z.-]+)?)\b",
        // A duration with its unit.
        r"|\b(?P<duration>\d{1,12}(?:\.\d+)?(?:ns|us|µs|ms|s|min|h))\b",
        // A Unix time in seconds, milliseconds or microseconds (2017 to 2033).
        r"|\b(?P<unix>1[5-9]\d{8}(?:\d{3}){0,2})\b",
        // Lowercase hex of the lengths of abbreviated commits, MD5, SHA-1 and SHA-256: last, so
        // that digits alone (which it takes, and `keeps` then refuses) are first tried as the
        // dates and times above.
        r"|\b(?P<hex>[0-9a-f]{64}|[0-9a-f]{40}|[0-9a-f]{32}|[0-9a-f]{7,12})\b",
    ))
});

/// The spans of a text the shape rules keep, found the first time a rule has a candidate:
/// most texts have none, and the search, with its many groups, is the dearest of the scrubber.
pub(super) struct Keep<'t> {
    text: &'t str,
    spans: std::cell::OnceCell<Vec<(usize, usize)>>,
}

impl<'t> Keep<'t> {
    pub fn new(text: &'t str) -> Keep<'t> {
        Keep { text, spans: std::cell::OnceCell::new() }
    }

    /// The kept spans, in order.
    fn spans(&self) -> &[(usize, usize)] {
        self.spans.get_or_init(|| {
            KEEP.captures_iter(self.text)
                .filter(keeps)
                .map(|c| {
                    let m = c.get(0).expect("a match has its whole span");
                    (m.start(), m.end())
                })
                .collect()
        })
    }

    /// Whether the byte at `at` is inside a kept span.
    fn covers(&self, at: usize) -> bool {
        self.spans().iter().any(|&(s, e)| s <= at && at < e)
    }
}

/// Checks what a pattern cannot: hex has a letter (`1234567` is a number), dates have real
/// months and days, and versions look like versions (`020.7946.0958` and `123.456.789-09` are
/// a phone number and a tax number).
fn keeps(c: &regex::Captures) -> bool {
    let number = |name: &str| c.name(name).and_then(|m| m.as_str().parse::<u32>().ok());
    let day = |m: Option<u32>, d: Option<u32>| {
        m.is_some_and(|m| (1..=12).contains(&m)) && d.is_some_and(|d| (1..=31).contains(&d))
    };
    if let Some(hex) = c.name("hex") {
        return hex.as_str().bytes().any(|b| b.is_ascii_alphabetic());
    }
    if c.name("iso").is_some() {
        return day(number("im"), number("id"));
    }
    if c.name("compact").is_some() {
        let time = match (number("ch"), number("cn")) {
            (Some(h), Some(n)) => h < 24 && n < 60,
            _ => true,
        };
        return day(number("cm"), number("cd")) && time;
    }
    if let Some(version) = c.name("version") {
        let version = version.as_str().trim_start_matches('v');
        let (numeric, suffix) = version.split_at(version.find(['-', '+']).unwrap_or(version.len()));
        let groups: Vec<&str> = numeric.split('.').collect();
        // Numeric identifiers have no leading zeros (as semantic versioning says), and groups
        // of three digits throughout are a number written in thousands or an id.
        let leading_zero = |g: &&str| g.len() > 1 && g.starts_with('0');
        let suffix = suffix.get(1..).unwrap_or("");
        let thousands = groups.len() >= 3 && groups.iter().all(|g| g.len() == 3);
        let numeric_suffix = suffix.bytes().all(|b| b.is_ascii_digit()) && leading_zero(&suffix);
        return !(groups.iter().any(leading_zero) || thousands || numeric_suffix);
    }
    true
}

/// The classes of the characters runs are made of (0 for the others), as a table: the test
/// per byte is the scrubber's hottest loop. A run whose characters, separators aside, are of
/// one class only cannot hold a random chunk (see [`random`]) and is not cut into segments.
static RUN: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = match c {
            b'a'..=b'z' => 1,
            b'A'..=b'Z' => 2,
            b'0'..=b'9' => 4,
            b'+' | b'=' => 8,
            b'/' | b'_' | b'-' | b'.' | b':' | b'~' => 16,
            _ => 0,
        };
        b += 1;
    }
    table
};

/// Random-looking chunks of runs, as the module docs define them.
pub(super) fn random_runs(text: &str, keep: &Keep, out: &mut Vec<Found>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if RUN[usize::from(bytes[i])] == 0 {
            i += 1;
            continue;
        }
        let start = i;
        let mut classes = 0;
        while i < bytes.len() && RUN[usize::from(bytes[i])] != 0 {
            classes |= RUN[usize::from(bytes[i])];
            i += 1;
        }
        if i - start >= 16 && (classes & 15).count_ones() >= 2 {
            chunks(text, start, i, keep, out);
        }
    }
}

fn is_separator(b: u8) -> bool {
    matches!(b, b'/' | b'_' | b'-' | b'.' | b':' | b'~')
}

/// Finds, within the run `[start, end)`, the chunks of consecutive segments that are not
/// words, and masks the random-looking ones.
fn chunks(text: &str, start: usize, end: usize, keep: &Keep, out: &mut Vec<Found>) {
    let bytes = text.as_bytes();
    let mut chunk: Option<(usize, usize)> = None;
    let mut flush = |chunk: &mut Option<(usize, usize)>| {
        if let Some((s, e)) = chunk.take() {
            if random(&text[s..e]) && !(keep.covers(s) && keep.covers(e - 1)) {
                out.push(Found { start: s, end: e, rule: Rule::RandomToken });
            }
        }
    };
    let mut i = start;
    while i < end {
        if is_separator(bytes[i]) {
            i += 1;
            continue;
        }
        let s = i;
        while i < end && !is_separator(bytes[i]) {
            i += 1;
        }
        if word(&text[s..i]) {
            flush(&mut chunk);
        } else {
            chunk = Some((chunk.map_or(s, |c| c.0), i));
        }
    }
    flush(&mut chunk);
}

/// Whether a chunk is random-looking: 16 or more characters besides separators, two or more
/// classes, and at least [`MIN_ENTROPY`] bits per character.
fn random(chunk: &str) -> bool {
    let mut counts = [0u16; 128];
    let mut n = 0usize;
    let mut classes = 0u8;
    for b in chunk.bytes().filter(|b| !is_separator(*b)) {
        counts[usize::from(b & 0x7f)] += 1;
        n += 1;
        classes |= match b {
            b'a'..=b'z' => 1,
            b'A'..=b'Z' => 2,
            b'0'..=b'9' => 4,
            _ => 8,
        };
    }
    if n < 16 || classes.count_ones() < 2 {
        return false;
    }
    let entropy: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = f64::from(c) / n as f64;
            -p * p.log2()
        })
        .sum();
    entropy >= MIN_ENTROPY
}

/// Bits of entropy per character below which a chunk is too repetitive to be a secret.
const MIN_ENTROPY: f64 = 3.0;

/// Whether a segment reads as a word (see the module docs).
fn word(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if matches!(bytes.len(), 7..=12 | 32 | 40 | 64) && bytes.iter().all(hex) {
        return true;
    }
    if segment.len() > 2
        && segment[..2].eq_ignore_ascii_case("0x")
        && bytes[2..].iter().all(u8::is_ascii_hexdigit)
    {
        return true;
    }
    let mut pieces = 0usize;
    let mut short = 0usize;
    let mut digit_groups = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let s = i;
        let b = bytes[i];
        if b.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            digit_groups += 1;
        } else if b.is_ascii_uppercase() {
            // `Http` (a capital and its lowercase letters) or `XML` (capitals not followed by
            // lowercase: the last capital of `XMLHttp` starts the next piece).
            i += 1;
            if i < bytes.len() && bytes[i].is_ascii_lowercase() {
                while i < bytes.len() && bytes[i].is_ascii_lowercase() {
                    i += 1;
                }
            } else {
                while i < bytes.len()
                    && bytes[i].is_ascii_uppercase()
                    && !(i + 1 < bytes.len() && bytes[i + 1].is_ascii_lowercase())
                {
                    i += 1;
                }
            }
        } else if b.is_ascii_lowercase() {
            while i < bytes.len() && bytes[i].is_ascii_lowercase() {
                i += 1;
            }
        } else {
            // `+`, `=` or a non-ASCII character: base64, or not a word this measure knows.
            return false;
        }
        let piece = &segment[s..i];
        if !word_like(piece) {
            return false;
        }
        pieces += 1;
        if piece.len() <= 2 && !piece.as_bytes()[0].is_ascii_digit() {
            short += 1;
        }
    }
    pieces > 0 && digit_groups < 3 && segment.len() >= 3 * pieces && short <= pieces / 3
}

/// Whether one piece of a segment looks like part of a word: up to four digits; capitals
/// (an acronym) of up to five letters or with a vowel; up to four letters (an abbreviation);
/// longer letters with a vowel and no five consonants in a row.
fn word_like(piece: &str) -> bool {
    let bytes = piece.as_bytes();
    let vowel = |b: &u8| matches!(b.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u' | b'y');
    if bytes[0].is_ascii_digit() {
        return bytes.len() <= 4;
    }
    if bytes.iter().all(u8::is_ascii_uppercase) {
        return bytes.len() <= 5 || bytes.iter().any(vowel);
    }
    // Abbreviations (`pdf`, `cfg`, `Http`) need no vowel.
    if bytes.len() <= 4 {
        return true;
    }
    let mut consonants = 0;
    for b in bytes {
        consonants = if vowel(b) { 0 } else { consonants + 1 };
        if consonants >= 5 {
            return false;
        }
    }
    bytes.iter().any(vowel)
}

/// Digits, joined by the separators people write numbers with, and the letters glued to them.
static DIGITS: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z]*\+?\(?\d(?:[ .\-/()]{0,2}\d)*\)?[A-Za-z]*"));

/// Runs of six or more digits outside the kept spans.
pub(super) fn digit_runs(text: &str, keep: &Keep, out: &mut Vec<Found>) {
    for m in DIGITS.find_iter(text) {
        if m.as_str().bytes().filter(u8::is_ascii_digit).count() < 6 {
            continue;
        }
        // The run, cut at the kept spans within it: a date beside a phone number keeps the date.
        let mut s = m.start();
        let mut pieces = Vec::new();
        for &(ks, ke) in keep.spans().iter().filter(|(ks, ke)| *ke > m.start() && *ks < m.end()) {
            if ks > s {
                pieces.push((s, ks));
            }
            s = s.max(ke);
        }
        if s < m.end() {
            pieces.push((s, m.end()));
        }
        for (s, e) in pieces {
            let piece = &text[s..e];
            if piece.bytes().filter(u8::is_ascii_digit).count() < 6 {
                continue;
            }
            // Trim what the cut left at the edges (separators, a lone parenthesis).
            let lead = piece.len() - piece.trim_start_matches([' ', '.', '-', '/', ')']).len();
            let trail = piece.len() - piece.trim_end_matches([' ', '.', '-', '/', '(']).len();
            out.push(Found { start: s + lead, end: e - trail, rule: Rule::Number });
        }
    }
}

/// Upper-case document codes (see the module docs).
static CODE: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z0-9]{8,15}\b"));

pub(super) fn document_codes(text: &str, keep: &Keep, out: &mut Vec<Found>) {
    for m in CODE.find_iter(text) {
        let code = m.as_str().as_bytes();
        let digits = code.iter().filter(|b| b.is_ascii_digit()).count();
        let letters = code.len() - digits;
        if digits < 2 || letters < 2 {
            continue;
        }
        let switches = code.windows(2).filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit()).count();
        let last_letter_alone = code[code.len() - 1].is_ascii_uppercase()
            && code[code.len() - 2].is_ascii_digit()
            && code.iter().rev().skip(1).take_while(|b| b.is_ascii_digit()).count() >= 4;
        if (switches >= 3 || last_letter_alone) && !keep.covers(m.start()) {
            out.push(Found { start: m.start(), end: m.end(), rule: Rule::NationalId });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shape rule: the text, the spans it keeps, and where it adds what it finds.
    type ShapeRule = fn(&str, &Keep, &mut Vec<Found>);

    /// What one shape rule finds in `t`, joined by `|`.
    fn found_by(t: &str, rule: ShapeRule) -> String {
        let mut out = Vec::new();
        rule(t, &Keep::new(t), &mut out);
        out.iter().map(|f| &t[f.start..f.end]).collect::<Vec<_>>().join("|")
    }

    #[test]
    fn words_are_words() {
        for w in [
            "export",
            "pdf",
            "report",
            "getUserAccountSettings",
            "XMLHttpRequest",
            "NullPointerException",
            "customers",
            "ECONNREFUSED",
            "deadbeef",
            "handleRequest",
            "ISO8601",
        ] {
            assert!(word(w), "{w}");
        }
        for w in ["Zx9QeR7tY4wQ8nKp", "hvVgCSFXbonwcuWy", "aB3dE5fG7hJ9kL1m", "q7Rk2Lw9Zp4Xv8Nt"] {
            assert!(!word(w), "{w}");
        }
    }

    #[test]
    fn random_chunks_are_found_and_words_kept() {
        let found = |t: &str| found_by(t, random_runs);
        assert_eq!(found("key sk_live_4eC39HqLyjWDarjtT1zdp7dc end"), "4eC39HqLyjWDarjtT1zdp7dc");
        assert_eq!(found("/api/v2/customers/Zx9QeR7tY4wQ8nKpL2mV"), "Zx9QeR7tY4wQ8nKpL2mV");
        assert_eq!(
            found("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        );
        for kept in [
            "export_pdf_v2_report",
            "/api/v2/customers/{id}",
            "550e8400-e29b-41d4-a716-446655440000",
            "3f2a9c1e8b7d6f5a4c3b2a1908f7e6d5c4b3a291",
            "com.example.billing.InvoiceService.handleRequest",
            "internationalization",
            "2026-12-07T10:30:00.123Z",
        ] {
            assert_eq!(found(kept), "", "{kept}");
        }
    }

    #[test]
    fn digit_runs_spare_dates_times_and_versions() {
        let found = |t: &str| found_by(t, digit_runs);
        assert_eq!(found("call +44 20 7946 0958 now"), "+44 20 7946 0958");
        assert_eq!(found("(030) 123 45 67"), "(030) 123 45 67");
        assert_eq!(found("id AB123456C ok"), "AB123456C");
        assert_eq!(found("bsn 123.456.782"), "123.456.782");
        assert_eq!(found("on 2026-12-07 at 10:30:00.123456 build 10.0.19045.2364"), "");
        assert_eq!(found("took 1733580000123 ms, 1500ms, port 8080, 12345 rows"), "");
        assert_eq!(found("2026-12-07 0612345678"), "0612345678");
    }

    #[test]
    fn document_codes_are_found() {
        let found = |t: &str| found_by(t, document_codes);
        assert_eq!(found("passport C01X00T47, PAN ABCDE1234F"), "C01X00T47|ABCDE1234F");
        assert_eq!(found("AES256GCM SHA256 ISO8601 WIN10PRO HTTP404"), "");
    }
}
