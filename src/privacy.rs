//! PII scrubbing of free text: what both the client (before anything is stored locally) and
//! the server (again, before anything is stored, as defence in depth) apply to every string of
//! telemetry. Each rule replaces what it finds with a placeholder and counts it; only the
//! counts, never the values, travel on.
//!
//! The rules are deliberately specific so that ordinary operational text survives: card
//! numbers must pass the Luhn check and carry a card-network prefix (so timestamps and order
//! numbers are not cards), IBANs must pass their mod-97 check, US social security numbers must
//! fall in issued ranges, IP addresses must parse as addresses (so `10:30:00` is a time), and a
//! bare 40-character AWS secret must mix upper case, lower case and digits (so a git commit
//! hash survives). The classes follow Sentry Relay's default PII rules: cards, national
//! identifiers, IBANs, keys and tokens, addresses, home paths.

use regex::{Captures, Regex, RegexSet};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

/// A scrubbing rule, named as the batch's `redactions` counts name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    PrivateKey,
    BearerToken,
    Jwt,
    ApiKey,
    Secret,
    Email,
    Card,
    Phone,
    Ip,
    HomePath,
    NationalId,
    Iban,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PrivateKey => "private_key",
            Rule::BearerToken => "bearer_token",
            Rule::Jwt => "jwt",
            Rule::ApiKey => "api_key",
            Rule::Secret => "secret",
            Rule::Email => "email",
            Rule::Card => "card",
            Rule::Phone => "phone",
            Rule::Ip => "ip",
            Rule::HomePath => "home_path",
            Rule::NationalId => "national_id",
            Rule::Iban => "iban",
        }
    }
}

/// How many values each rule replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactions(BTreeMap<Rule, u64>);

impl Redactions {
    fn add(&mut self, rule: Rule) {
        *self.0.entry(rule).or_default() += 1;
    }

    /// The count for one rule.
    pub fn get(&self, rule: Rule) -> u64 {
        self.0.get(&rule).copied().unwrap_or(0)
    }

    /// Total replacements.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Adds another set of counts to this one.
    pub fn merge(&mut self, other: &Redactions) {
        for (rule, n) in &other.0 {
            *self.0.entry(*rule).or_default() += n;
        }
    }

    /// The counts by rule name, as a batch carries them.
    pub fn by_name(&self) -> BTreeMap<String, u64> {
        self.0.iter().map(|(r, n)| (r.as_str().to_owned(), *n)).collect()
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("scrubber patterns are valid")
}

/// Every rule's pattern in one set: a single pass over the text tells which rules can apply,
/// and most strings (feature names, routes) need no rule at all.
static ANY: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(
        [
            &*PRIVATE_KEY,
            &*BEARER,
            &*JWT,
            &*API_KEY,
            &*SECRET_ASSIGNMENT,
            &*EMAIL,
            &*CARD,
            &*IPV4,
            &*IPV6,
            &*PHONE,
            &*HOME,
            &*SSN,
            &*IBAN,
            &*AWS_SECRET,
            &*TILDE_HOME,
        ]
        .map(Regex::as_str),
    )
    .expect("scrubber patterns are valid")
});

static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    // Written with `-{5}` so that this pattern is not itself taken for key material by tools
    // that scan the repository for PEM headers.
    re(r"-{5}BEGIN [A-Z ]*PRIVATE KEY-{5}[\s\S]*?(?:-{5}END [A-Z ]*PRIVATE KEY-{5}|\z)")
});
static BEARER: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"));
static JWT: LazyLock<Regex> =
    LazyLock::new(|| re(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"));
/// Well-known key shapes: Stripe, GitHub (classic and fine-grained `github_pat_`), Slack
/// tokens and webhook URLs, AWS access key ids, Google API keys, and long prefixed secrets
/// such as `sk-...`.
static API_KEY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{22,}|\bxox[abprs]-[A-Za-z0-9-]{10,}|https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+|\b(?:AKIA|ASIA)[0-9A-Z]{16}|\bAIza[0-9A-Za-z_-]{35}|\bsk-[A-Za-z0-9_-]{20,})",
    )
});
/// An AWS secret access key standing alone: 40 characters of base64 (checked further in
/// [`is_aws_secret`]), with nothing of the same alphabet on either side.
static AWS_SECRET: LazyLock<Regex> =
    LazyLock::new(|| re(r"(^|[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})($|[^A-Za-z0-9/+=])"));
/// `password=...`, `api_key: ...` and the like: the value after a secret-sounding key.
static SECRET_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i)\b((?:api[_-]?key|access[_-]?token|auth[_-]?token|secret|client[_-]?secret|password|passwd|pwd|token|private[_-]?key|credentials?)["']?\s*[=:]\s*["']?)[^\s"',;&]+"#,
    )
});
/// Addresses in any script (`jörg@exämple.de`, `用户@例子.公司`): word characters are
/// Unicode's.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}"));
/// 13 to 19 digits grouped by spaces, dashes or dots, glued to letters or not (`card4111...`);
/// the digits around the match are taken too, so a longer number is never cut into a card.
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"(^|\D)(\d(?:[ .-]?\d){12,18})($|\D)"));
/// A US social security number, written with dashes or spaces (`078-05-1120`); the issued
/// ranges are checked in [`is_ssn`].
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"\b(\d{3})[- ](\d{2})[- ](\d{4})\b"));
/// An IBAN, compact or in groups of four (`DE89 3704 0044 0532 0130 00`); the mod-97 check is
/// in [`is_iban`].
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}\b|\(\d{3}\)\s?\d{3}[\s.-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b)",
    )
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"));
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:[0-9a-f]{0,4}:){2,7}(?:[0-9a-f]{0,4}|\d{1,3}(?:\.\d{1,3}){3})"));
// `/home/` and `/Users/` as the systems spell them: a case-insensitive `/users/` would take a
// URL path's `/users/C` (from `/users/C:\Users\name`) for a home directory and hide the
// Windows path behind it. Drive letters and Windows' `Users` are case-insensitive.
static HOME: LazyLock<Regex> =
    LazyLock::new(|| re(r"(/home/|/Users/|(?i:[A-Z]:\\Users\\|[A-Z]:/Users/))([^/\\\s:]+)"));
/// `~jsmith/...`: another user's home directory, as shells and web servers (`/~jsmith/`)
/// write it (`~/...` names no one).
static TILDE_HOME: LazyLock<Regex> = LazyLock::new(|| re(r"(^|[\s(\[\x22'=:/])~([A-Za-z_][A-Za-z0-9._-]*)/"));

/// Scrubs one string, adding what it replaced to `counts`.
pub fn scrub_into(text: &str, counts: &mut Redactions) -> String {
    let candidates = ANY.matches(text);
    if !candidates.matched_any() {
        return text.to_owned();
    }
    let mut out = text.to_owned();
    // Index `i` in ANY is the i-th rule below; rules run in this order, each only if the set
    // saw its pattern (replacements only remove text, so they cannot create new matches).
    let mut apply = |i: usize, regex: &Regex, rule: Rule, f: &dyn Fn(&Captures) -> Option<String>| {
        if !candidates.matched(i) || !regex.is_match(&out) {
            return;
        }
        let replaced = regex.replace_all(&out, |c: &Captures| match f(c) {
            Some(replacement) => {
                counts.add(rule);
                replacement
            }
            None => c[0].to_owned(),
        });
        out = replaced.into_owned();
    };
    apply(0, &PRIVATE_KEY, Rule::PrivateKey, &|_| Some("[PRIVATE_KEY]".into()));
    apply(1, &BEARER, Rule::BearerToken, &|c| Some(format!("{} [TOKEN]", &c[1])));
    apply(2, &JWT, Rule::Jwt, &|_| Some("[TOKEN]".into()));
    apply(3, &API_KEY, Rule::ApiKey, &|_| Some("[API_KEY]".into()));
    apply(13, &AWS_SECRET, Rule::ApiKey, &|c| {
        is_aws_secret(&c[2]).then(|| format!("{}[API_KEY]{}", &c[1], &c[3]))
    });
    apply(4, &SECRET_ASSIGNMENT, Rule::Secret, &|c| {
        let value = &c[0][c[1].len()..];
        (!value.starts_with('[')).then(|| format!("{}[REDACTED]", &c[1]))
    });
    apply(5, &EMAIL, Rule::Email, &|_| Some("[EMAIL]".into()));
    // IBANs before cards: an IBAN's digits can look like a card number.
    apply(12, &IBAN, Rule::Iban, &|c| is_iban(&c[0]).then(|| "[IBAN]".into()));
    // Twice: the characters around one card are part of its match, so a card right after
    // another (one separator between them) is found on the second pass.
    for _ in 0..2 {
        apply(6, &CARD, Rule::Card, &|c| {
            let (start, end) = card_within(&c[2])?;
            let digits = &c[2];
            Some(format!("{}{}[CARD]{}{}", &c[1], &digits[..start], &digits[end..], &c[3]))
        });
    }
    apply(11, &SSN, Rule::NationalId, &|c| is_ssn(&c[1], &c[2], &c[3]).then(|| "[NATIONAL_ID]".into()));
    apply(7, &IPV4, Rule::Ip, &|c| c[0].parse::<Ipv4Addr>().is_ok().then(|| "[IP]".into()));
    apply(8, &IPV6, Rule::Ip, &|c| is_ipv6(&c[0]).then(|| "[IP]".into()));
    apply(9, &PHONE, Rule::Phone, &|c| {
        let digits = c[0].bytes().filter(u8::is_ascii_digit).count();
        (8..=15).contains(&digits).then(|| "[PHONE]".into())
    });
    apply(10, &HOME, Rule::HomePath, &|c| (!c[2].starts_with('[')).then(|| format!("{}[USER]", &c[1])));
    apply(14, &TILDE_HOME, Rule::HomePath, &|c| Some(format!("{}~[USER]/", &c[1])));
    out
}

/// Where, in a run of digit groups joined by single separators, a card number stands: the
/// run may begin or end with digits that are not the card's (`x86_64 4111 1111 1111 1111`
/// is one run, from `64`), so every span of whole groups is tried, from the left.
fn card_within(run: &str) -> Option<(usize, usize)> {
    let mut groups = Vec::new();
    let mut start = None;
    for (i, b) in run.bytes().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                groups.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        groups.push((s, run.len()));
    }
    for (i, &(from, _)) in groups.iter().enumerate() {
        let mut digits = 0;
        for &(s, to) in &groups[i..] {
            digits += to - s;
            if digits > 19 {
                break;
            }
            if digits >= 13 && is_card_number(&run[from..to]) {
                return Some((from, to));
            }
        }
    }
    None
}

/// Whether three groups are a US social security number as issued: area not 000, 666 or
/// 900-999, group not 00, serial not 0000.
fn is_ssn(area: &str, group: &str, serial: &str) -> bool {
    let (Ok(area), Ok(group), Ok(serial)) = (area.parse::<u16>(), group.parse::<u8>(), serial.parse::<u16>())
    else {
        return false;
    };
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// Whether text (spaces allowed) is an IBAN: 15 to 34 characters whose mod-97 check holds.
pub fn is_iban(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    // The country and check digits move to the end; letters count as 10 to 35.
    let mut remainder: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

/// Whether 40 base64 characters look like an AWS secret access key rather than a hash or a
/// word: upper case, lower case and digits all present.
fn is_aws_secret(text: &str) -> bool {
    text.len() == 40
        && text.bytes().any(|b| b.is_ascii_uppercase())
        && text.bytes().any(|b| b.is_ascii_lowercase())
        && text.bytes().any(|b| b.is_ascii_digit())
}

/// Scrubs one string, returning it with its counts.
pub fn scrub(text: &str) -> (String, Redactions) {
    let mut counts = Redactions::default();
    let out = scrub_into(text, &mut counts);
    (out, counts)
}

/// Whether digits (with optional spaces or dashes) form a plausible payment card number: a
/// card network's prefix and length, and a valid Luhn check digit.
pub fn is_card_number(text: &str) -> bool {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    let len = digits.len();
    let prefix = |n: usize| digits.iter().take(n).fold(0u32, |acc, d| acc * 10 + u32::from(*d));
    let network = match digits.first() {
        Some(4) => matches!(len, 13 | 16 | 19),
        Some(3) => {
            (len == 15 && matches!(prefix(2), 34 | 37)) || (len == 14 && matches!(prefix(2), 36 | 38 | 30))
        }
        Some(5) => len == 16 && (51..=55).contains(&prefix(2)),
        Some(2) => len == 16 && (2221..=2720).contains(&prefix(4)),
        Some(6) => len == 16 && (prefix(4) == 6011 || prefix(2) == 65),
        _ => false,
    };
    network && luhn(&digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An IPv6 address, but not a time of day or a bare run of colons.
fn is_ipv6(text: &str) -> bool {
    let text = text.trim_end_matches(':');
    text.matches(':').count() >= 2 && text.parse::<Ipv6Addr>().is_ok() && text != "::"
}

/// Pseudonymises a user id: HMAC-SHA-256 keyed with the install's secret salt, lowercase hex.
/// A plain hash of a short id would be a dictionary lookup away from the id; without the salt,
/// which never leaves the install, the digest says nothing, yet the same user maps to the same
/// value within one install.
pub fn hash_user_id(salt: &[u8], user_id: &str) -> String {
    use hmac::{Hmac, Mac as _};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(salt).expect("HMAC takes keys of any length");
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Normalises a URL path for counting: the query string goes, and every segment that names
/// one thing rather than a kind of thing (a number, a UUID, long hex, an email, a token)
/// becomes `:id`, so `/users/42/orders/9f8e...` counts as `/users/:id/orders/:id`. (The actix
/// middleware uses the matched route pattern instead, which is better where there is one.)
pub fn normalize_path(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> =
        path.split('/').map(|segment| if is_identifier_segment(segment) { ":id" } else { segment }).collect();
    let joined = segments.join("/");
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

fn is_identifier_segment(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let all = |f: fn(&u8) -> bool| segment.as_bytes().iter().all(f);
    let uuid = segment.len() == 36
        && segment.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    let numeric = all(u8::is_ascii_digit);
    let long_hex = segment.len() >= 16 && all(u8::is_ascii_hexdigit);
    let email = segment.contains('@') || segment.contains("%40");
    // A token: long, and a mix of letters and digits (words like `notifications` are not).
    let token = segment.len() >= 20
        && all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'='))
        && segment.bytes().any(|b| b.is_ascii_digit())
        && segment.bytes().any(|b| b.is_ascii_alphabetic());
    numeric || uuid || long_hex || email || token
}

/// The most stack frames kept.
pub const MAX_STACK_FRAMES: usize = 5;

/// Cuts a stack trace to its first frames, strips file paths down to the file name (paths name
/// machines, users and layouts), and scrubs what is left.
pub fn cut_stack<S: AsRef<str>>(frames: &[S], counts: &mut Redactions) -> Vec<String> {
    frames
        .iter()
        .map(|f| f.as_ref().trim())
        .filter(|f| !f.is_empty())
        .take(MAX_STACK_FRAMES)
        .map(|frame| scrub_into(&strip_paths(frame), counts))
        .collect()
}

/// Replaces every path in a frame (anything with a `/` or `\` in it) by its last component.
fn strip_paths(frame: &str) -> String {
    let mut out = String::with_capacity(frame.len());
    for (i, word) in frame.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_start_matches(['(', '[', '"', '\'']);
        if bare.contains('/') || bare.contains('\\') {
            let prefix = &word[..word.len() - bare.len()];
            let file = bare.rsplit(['/', '\\']).next().unwrap_or(bare);
            out.push_str(prefix);
            out.push_str(file);
        } else {
            out.push_str(word);
        }
    }
    out
}
