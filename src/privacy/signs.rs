//! Which rules could find anything in a text, told by counting its bytes and by one search for
//! the words and prefixes the rules start from. Each sign is a necessary condition of its rule
//! (a card needs 13 digits, an address `@`), so a rule whose sign is absent is skipped without
//! changing what is masked; most strings (names, stack lines) show none and cost only these
//! two scans.
//!
//! This replaced a `RegexSet` of the rules' own patterns, which told the same but had to run
//! every pattern's automaton to the end of the text: it was a quarter of the scrubber's time.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::position::SECRET_WORDS;
use std::sync::LazyLock;

/// The words and prefixes searched for beside [`SECRET_WORDS`], in lower case (the text is
/// folded). A word's bit in [`Signs::words`] is its index in the two lists, secret words first.
const MORE_WORDS: [&str; 24] = [
    // 13: what `session` and `sessid` share, so that `sess_id` shows too.
    "sess",
    // 14: with `bearer` and `token`, the schemes of an authorization value.
    "basic",
    // 15: a JSON Web Token's header.
    "eyj",
    // 16..=30: the well-known key prefixes of `API_KEY`.
    "sk_",
    "pk_",
    "rk_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "hooks.slack.com/",
    "akia",
    "asia",
    "aiza",
    "sk-",
    // 31: an armoured block.
    "-----begin",
    // 32: a URL's scheme.
    "://",
    // 33..=36: home directories.
    "/home",
    "/users/",
    "\\users\\",
    "\\documents and settings\\",
];

/// Bits of [`Signs::words`] by what they sign.
pub(super) const SECRET_WORD: u64 = (1 << 14) - 1;
pub(super) const AUTH_SCHEME: u64 = 1 << 3 | 1 << 12 | 1 << 14;
pub(super) const JWT: u64 = 1 << 15;
pub(super) const KEY_PREFIX: u64 = ((1 << 31) - 1) & !((1 << 16) - 1);
pub(super) const ARMOUR: u64 = 1 << 31;
pub(super) const SCHEME: u64 = 1 << 32;
pub(super) const HOME: u64 = 0b1111 << 33;

static SEARCH: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostFirst)
        .build(SECRET_WORDS.iter().chain(&MORE_WORDS))
        .expect("the signs' words build an automaton")
});

/// What the scans saw in a text. The counts come from one pass that the compiler vectorises;
/// the runs are measured only where the counts allow what they sign (a card number's digit
/// cluster is looked for only in a text with six digits or more).
#[derive(Debug, Default)]
pub(super) struct Signs {
    /// One bit per word found (see [`MORE_WORDS`]).
    pub words: u64,
    pub digits: usize,
    pub at: bool,
    pub tilde: bool,
    pub backslash: bool,
    /// The longest run of base64 characters (`[A-Za-z0-9/+]`).
    pub base64_run: usize,
    /// The most digits in one cluster of digits joined by at most two separators, as
    /// `shape::DIGITS` joins them, in texts with six digits or more.
    pub digit_cluster: usize,
    /// The longest run of digits and dots (an IPv4 address is at least 7).
    pub dotted_digits: usize,
    /// The longest run of hex digits and `: - .` (a hardware address is at least 14).
    pub hex_run: usize,
    /// A run of hex digits, `:` and `.` with two colons or more that is not glued to a word at
    /// both ends, or that an address could start inside (an IPv6 address, not `app::db::Pool`).
    pub ipv6: bool,
    /// Two capitals then two digits (an IBAN's country and check digits).
    pub iban: bool,
    /// A run of 8 to 15 capitals and digits with two or more of each (a document code).
    pub code: bool,
}

impl Signs {
    pub fn of(text: &str) -> Signs {
        let bytes = text.as_bytes();
        let mut s = Signs { words: words(bytes), ..Signs::default() };
        // Counts, without branches and in bytes, so that the loop vectorises: each chunk's
        // counts fit in a byte.
        let (mut upper, mut colons, mut dots, mut dashes) = (0usize, 0usize, 0usize, 0usize);
        let (mut at, mut tilde, mut backslash) = (0usize, 0usize, 0usize);
        for chunk in bytes.chunks(255) {
            let mut n = [0u8; 8];
            for &b in chunk {
                n[0] += u8::from(b.is_ascii_digit());
                n[1] += u8::from(b.is_ascii_uppercase());
                n[2] += u8::from(b == b':');
                n[3] += u8::from(b == b'.');
                n[4] += u8::from(b == b'-');
                n[5] += u8::from(b == b'@');
                n[6] += u8::from(b == b'~');
                n[7] += u8::from(b == b'\\');
            }
            s.digits += usize::from(n[0]);
            upper += usize::from(n[1]);
            colons += usize::from(n[2]);
            dots += usize::from(n[3]);
            dashes += usize::from(n[4]);
            at += usize::from(n[5]);
            tilde += usize::from(n[6]);
            backslash += usize::from(n[7]);
        }
        (s.at, s.tilde, s.backslash) = (at > 0, tilde > 0, backslash > 0);
        // The runs, in one pass, where some text could need them.
        if bytes.len() >= 7 && (dots >= 2 || colons >= 5 || dashes >= 5 || bytes.len() >= 40) {
            let (mut base64, mut dotted, mut hex) = (0usize, 0usize, 0usize);
            for &b in bytes {
                let class = RUNS[usize::from(b)];
                base64 = (base64 + 1) * usize::from(class & BASE64);
                dotted = (dotted + 1) * usize::from((class & DOTTED) >> 1);
                hex = (hex + 1) * usize::from((class & HEX_SEP) >> 2);
                s.base64_run = s.base64_run.max(base64);
                s.dotted_digits = s.dotted_digits.max(dotted);
                s.hex_run = s.hex_run.max(hex);
            }
        }
        if s.digits >= 6 {
            s.digit_cluster = digit_cluster(bytes);
        }
        if colons >= 2 {
            s.ipv6 = ipv6(bytes);
        }
        if upper >= 2 && s.digits >= 2 {
            (s.code, s.iban) = codes(bytes);
        }
        s
    }

    /// Signs that let every rule run, whatever the text: what [`Signs::of`] is checked against.
    #[cfg(test)]
    pub fn every(_: &str) -> Signs {
        Signs {
            words: u64::MAX,
            digits: usize::MAX,
            at: true,
            tilde: true,
            backslash: true,
            base64_run: usize::MAX,
            digit_cluster: usize::MAX,
            dotted_digits: usize::MAX,
            hex_run: usize::MAX,
            ipv6: true,
            iban: true,
            code: true,
        }
    }

    /// Whether any of `bits` of [`Signs::words`] was seen.
    pub fn word(&self, bits: u64) -> bool {
        self.words & bits != 0
    }
}

// The classes of the runs [`Signs`] measures, one bit each.
const BASE64: u8 = 1;
const DOTTED: u8 = 1 << 1;
const HEX_SEP: u8 = 1 << 2;

static RUNS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b.is_ascii_alphanumeric() || b == b'/' || b == b'+' {
            class |= BASE64;
        }
        if b.is_ascii_digit() || b == b'.' {
            class |= DOTTED;
        }
        if b.is_ascii_hexdigit() || matches!(b, b':' | b'-' | b'.') {
            class |= HEX_SEP;
        }
        table[i] = class;
        i += 1;
    }
    table
};

/// The words of [`SECRET_WORDS`] and [`MORE_WORDS`] in `bytes`, one bit each. The text is folded to lower case first, so
/// that the search can use its packed (SIMD) prefilter, which a case-insensitive search
/// cannot. Each search starts one byte after the last match's start, so a word is missed only
/// where it contains the word just found, and no word contains a word of another group (a test
/// checks).
fn words(bytes: &[u8]) -> u64 {
    let mut folded = [0u8; 512];
    let owned: Vec<u8>;
    let lower: &[u8] = if bytes.len() <= folded.len() {
        for (f, b) in folded.iter_mut().zip(bytes) {
            *f = b.to_ascii_lowercase();
        }
        &folded[..bytes.len()]
    } else {
        owned = bytes.to_ascii_lowercase();
        &owned
    };
    let mut words = 0u64;
    let mut at = 0;
    while let Some(m) = SEARCH.find(aho_corasick::Input::new(lower).range(at..)) {
        words |= 1 << m.pattern().as_u64();
        at = m.start() + 1;
    }
    words
}

/// The most digits in one cluster (see [`Signs::digit_cluster`]).
fn digit_cluster(bytes: &[u8]) -> usize {
    let (mut cluster, mut gap, mut most) = (0usize, 0usize, 0usize);
    for &b in bytes {
        if b.is_ascii_digit() {
            cluster = if gap <= 2 { cluster + 1 } else { 1 };
            gap = 0;
            most = most.max(cluster);
        } else if matches!(b, b' ' | b'.' | b'-' | b'/' | b'(' | b')' | b'\t' | b'\r' | b'\n') {
            gap += 1;
        } else {
            gap = 3;
        }
    }
    most
}

/// Whether a run of hex digits, `:` and `.` with two colons or more could hold an IPv6 address
/// the rule takes: one not glued to a word at both ends, or one where the rule's matches may
/// start or end inside it. Only the runs around colons are read.
fn ipv6(bytes: &[u8]) -> bool {
    let v6 = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(colon) = bytes[from..].iter().position(|&b| b == b':').map(|i| from + i) {
        let mut start = colon;
        while start > 0 && v6(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = colon;
        while end < bytes.len() && v6(bytes[end]) {
            end += 1;
        }
        let run = &bytes[start..end];
        let colons = run.iter().filter(|&&b| b == b':').count();
        if colons >= 2 {
            let glued_start = start > 0 && word(bytes[start - 1]);
            let glued_end = end < bytes.len() && word(bytes[end]);
            // The rule takes the whole run in one match, glued, unless it stops inside it: at a
            // dot, a group of five hex digits or more, or after eight groups.
            let longest_group = run.split(|&b| b == b':').map(<[u8]>::len).max().unwrap_or(0);
            let splits = run.contains(&b'.') || longest_group > 4 || colons > 7;
            if !(glued_start && glued_end) || splits {
                return true;
            }
        }
        from = end;
    }
    false
}

/// Whether there is a document code (see [`Signs::code`]), and an IBAN's start.
fn codes(bytes: &[u8]) -> (bool, bool) {
    let candidate =
        |len: usize, digits: usize, upper: usize| (8..=15).contains(&len) && digits >= 2 && upper >= 2;
    let (mut code, mut iban) = (false, false);
    let (mut len, mut digits, mut upper) = (0usize, 0usize, 0usize);
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            (len, digits) = (len + 1, digits + 1);
            iban |= i >= 3
                && bytes[i - 1].is_ascii_digit()
                && bytes[i - 2].is_ascii_uppercase()
                && bytes[i - 3].is_ascii_uppercase();
        } else if b.is_ascii_uppercase() {
            (len, upper) = (len + 1, upper + 1);
        } else {
            code |= candidate(len, digits, upper);
            (len, digits, upper) = (0, 0, 0);
        }
    }
    (code || candidate(len, digits, upper), iban)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::{scrub_signed, Redactions};
    use proptest::prelude::*;

    /// Pieces of text the rules look for, and pieces that look like them.
    fn piece() -> impl Strategy<Value = String> {
        let literal = prop::sample::select(vec![
            "at",
            "Token",
            "pAsSwOrD",
            "Authorization:",
            "Bearer",
            "basic",
            "PHPSESSID=",
            "--auth-token",
            "x-api-key:",
            "app::db::Pool",
            "crypto::key::derive",
            "file:///home/jane/x",
            "https://",
            "ftp://u:p@h/",
            "~jdoe/",
            r"\\srv\share\jdoe\f.txt",
            r"C:\Users\bob\a",
            "/Users/alice/b",
            "eyJhbGciOi.eyJzdWIi.sig",
            "sk_live_",
            "ghp_",
            "xoxb-",
            "AKIA",
            "AIza",
            "sk-",
            "-----BEGIN RSA",
            "%40",
            "%2540",
            r"\u0040",
            "&#64;",
            "@",
            "2026-12-07T10:30:00Z",
            "v10.0.19045.2364",
            "1500ms",
            "getUserAccountSettings",
            "export_pdf_v2_report",
            "'",
            "\"",
            "=",
            ": ",
            "=>",
        ]);
        prop_oneof![
            literal.prop_map(str::to_owned),
            "[A-Za-z0-9]{1,50}",
            "[A-Za-z0-9+/=]{30,45}",
            "[0-9a-f]{5,64}",
            "[0-9 .()/-]{1,30}",
            "[0-9]{1,3}(\\.[0-9]{1,3}){3}",
            "[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){1,9}",
            "[0-9a-f]{2}([:-][0-9a-f]{2}){5}",
            "[a-z.]{1,10}@[a-z]{1,8}\\.(com|de|x1)",
            "[A-Z]{2}[0-9]{2}( [A-Z0-9]{4}){2,7}",
            "[A-Z0-9]{6,16}",
            "\\+[0-9]{2} [0-9]{2} [0-9]{4} [0-9]{4}",
            "[0-9]{3}-[0-9]{2}-[0-9]{4}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A rule skipped for want of its sign would have found nothing.
        #[test]
        fn signs_skip_only_rules_that_find_nothing(
            pieces in prop::collection::vec(piece(), 1..8),
            joiner in prop::sample::select(vec![" ", "", "/", "_", "-", ", ", "=", ":", "\n", "."]),
        ) {
            let text = pieces.join(joiner);
            let (mut signed, mut every) = (Redactions::default(), Redactions::default());
            prop_assert_eq!(
                scrub_signed(&text, &mut signed, Signs::of),
                scrub_signed(&text, &mut every, Signs::every)
            );
            prop_assert_eq!(signed, every);
        }
    }

    #[test]
    fn every_word_is_in_one_group() {
        let groups = [SECRET_WORD, AUTH_SCHEME & !SECRET_WORD, JWT, KEY_PREFIX, ARMOUR, SCHEME, HOME];
        let all = groups.iter().fold(0u64, |all, group| {
            assert_eq!(all & group, 0, "{group:b}");
            all | group
        });
        let words: Vec<&str> = SECRET_WORDS.iter().chain(&MORE_WORDS).copied().collect();
        assert_eq!(all, (1 << words.len()) - 1);
        let named = |bits: u64| {
            (0..words.len()).filter(|i| bits & (1 << i) != 0).map(|i| words[i]).collect::<Vec<_>>()
        };
        assert_eq!(named(AUTH_SCHEME), ["token", "bearer", "basic"]);
        assert_eq!(named(JWT | ARMOUR | SCHEME), ["eyj", "-----begin", "://"]);
        assert_eq!(named(KEY_PREFIX).len(), 15);
        // The search skips a word that contains the word just found: none may be of another
        // group.
        let group = |i: usize| groups.iter().position(|g| g & (1 << i) != 0);
        for (i, outer) in words.iter().enumerate() {
            for (j, inner) in words.iter().enumerate() {
                if i != j && outer.contains(inner) {
                    assert_eq!(group(i), group(j), "{outer} holds {inner}");
                }
            }
        }
        for (text, group) in [
            ("x ghp_abc", KEY_PREFIX),
            ("x xoxb-1", KEY_PREFIX),
            ("sk-proj", KEY_PREFIX),
            ("eyJhbG", JWT),
            (r"C:\Documents and Settings\jane", HOME),
            ("/homes/jane", HOME),
            ("Basic dXNlcg==", AUTH_SCHEME),
            ("PHPSESSID", SECRET_WORD),
            ("file:///home/jane", HOME),
        ] {
            assert!(Signs::of(text).word(group), "{text}");
        }
    }

    #[test]
    fn stack_lines_show_no_address() {
        for line in ["at app::db::Pool::get (pool.rs:214)", "at crypto::key::derive (key.rs:42)"] {
            let s = Signs::of(line);
            assert!(!s.ipv6 && s.hex_run < 14 && s.dotted_digits < 7 && s.digit_cluster < 6, "{line}");
        }
    }

    #[test]
    fn addresses_and_numbers_show() {
        assert!(Signs::of("from fe80::1 on").ipv6);
        assert!(Signs::of("[2001:db8::ff00:42:8329]:443").ipv6);
        assert!(Signs::of("addr=::1").ipv6);
        assert!(Signs::of("mac 00:1A:2b:3C:4d:5E").hex_run >= 14);
        assert!(Signs::of("ip 10.0.0.1").dotted_digits >= 7);
        assert_eq!(Signs::of("+44 (20) 7946-0958").digit_cluster, 12);
        assert_eq!(Signs::of("a 123 b 456").digit_cluster, 3);
        assert!(Signs::of("DE89 3704").iban);
        assert!(Signs::of("passport C01X00T47.").code);
        assert!(!Signs::of("HTTP404 and SHA256").code);
        let s = Signs::of("Authorization: Bearer x, see https://x -----BEGIN /Users/me");
        for bits in [SECRET_WORD, AUTH_SCHEME, ARMOUR, SCHEME, HOME] {
            assert!(s.word(bits), "{bits:b}");
        }
        assert!(!s.word(JWT | KEY_PREFIX));
    }
}
