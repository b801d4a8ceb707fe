//! PII scrubbing of free text: what both the client (before anything is stored locally) and
//! the server (again, before anything is stored, as defence in depth) apply to every string of
//! telemetry. Each rule finds spans; what is stored is the original text with every span
//! replaced by a placeholder that names its rule, and only the counts travel on.
//!
//! Three layers, each the floor beneath the one before:
//! - **named rules** add precision where a format has a check: card numbers pass Luhn and a
//!   network's prefix, IBANs mod 97, US social security numbers the issued ranges, IP
//!   addresses parse, e-mail addresses, JWTs and a few well-known key prefixes;
//! - **credentials by position** ([`position`]): armoured blocks, the user-info of URLs, and
//!   the values of names that say they are secret, whatever the value looks like;
//! - **shape** ([`shape`]): random-looking runs, runs of six or more digits, upper-case
//!   document codes, hardware addresses and every form of a home directory, whatever brand
//!   or country they come from.
//!
//! Text is read after decoding percent-escapes and backslash escapes ([`decode`]), so an
//! encoding hides nothing; the spans found are masked in the original. Each rule runs only
//! where its sign shows ([`signs`]: a count of bytes, a word), which is exact, not a shortcut:
//! a test checks that running every rule everywhere masks the same.

use regex::Regex;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

mod decode;
mod position;
mod shape;
mod signs;

/// A scrubbing rule, named as the batch's `redactions` counts name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    PrivateKey,
    ArmouredBlock,
    BearerToken,
    Jwt,
    ApiKey,
    Secret,
    Credential,
    RandomToken,
    Email,
    Card,
    Phone,
    Ip,
    HardwareAddress,
    HomePath,
    NationalId,
    Iban,
    Number,
    /// Not a masking rule: a name that failed the identifier grammar or the rules, dropped.
    Name,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PrivateKey => "private_key",
            Rule::ArmouredBlock => "armoured_block",
            Rule::BearerToken => "bearer_token",
            Rule::Jwt => "jwt",
            Rule::ApiKey => "api_key",
            Rule::Secret => "secret",
            Rule::Credential => "credential",
            Rule::RandomToken => "random_token",
            Rule::Email => "email",
            Rule::Card => "card",
            Rule::Phone => "phone",
            Rule::Ip => "ip",
            Rule::HardwareAddress => "hardware_address",
            Rule::HomePath => "home_path",
            Rule::NationalId => "national_id",
            Rule::Iban => "iban",
            Rule::Number => "number",
            Rule::Name => "dropped_name",
        }
    }

    /// What replaces a span this rule found: it names the rule, and no rule finds it again.
    pub fn placeholder(self) -> &'static str {
        match self {
            Rule::PrivateKey => "[PRIVATE_KEY]",
            Rule::ArmouredBlock => "[ARMOURED_BLOCK]",
            Rule::BearerToken | Rule::Jwt => "[TOKEN]",
            Rule::ApiKey => "[API_KEY]",
            Rule::Secret => "[REDACTED]",
            Rule::Credential => "[CREDENTIAL]",
            Rule::RandomToken => "[RANDOM_TOKEN]",
            Rule::Email => "[EMAIL]",
            Rule::Card => "[CARD]",
            Rule::Phone => "[PHONE]",
            Rule::Ip => "[IP]",
            Rule::HardwareAddress => "[MAC]",
            Rule::HomePath => "[USER]",
            Rule::NationalId => "[NATIONAL_ID]",
            Rule::Iban => "[IBAN]",
            Rule::Number => "[NUMBER]",
            Rule::Name => "[NAME]",
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

/// A span one rule found, in the text the rules read (decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    rule: Rule,
}

/// Compiles one of the scrubber's own patterns (this module's and its children's).
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("scrubber patterns are valid")
}

static BEARER: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\b(?:bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"));
static JWT: LazyLock<Regex> =
    LazyLock::new(|| re(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"));
/// Well-known key shapes, which the shape rules would mostly find too but name less well:
/// Stripe, GitHub, Slack tokens and webhook URLs, AWS access key ids, Google API keys, and
/// long prefixed secrets such as `sk-...`.
static API_KEY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{22,}|\bxox[abprs]-[A-Za-z0-9-]{10,}|https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+|\b(?:AKIA|ASIA)[0-9A-Z]{16}|\bAIza[0-9A-Za-z_-]{35}|\bsk-[A-Za-z0-9_-]{20,})",
    )
});
/// An AWS secret access key standing alone: 40 characters of base64 (checked further in
/// [`is_aws_secret`]), with nothing of the same alphabet on either side.
static AWS_SECRET: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:^|[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])"));
/// Addresses in any script (`jörg@exämple.de`, `用户@例子.公司`): word characters are
/// Unicode's.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}"));
/// 13 to 19 digits grouped by spaces, dashes or dots, glued to letters or not (`card4111...`);
/// the digits around the match are taken too, so a longer number is never cut into a card.
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"(?:^|\D)(\d(?:[ .-]?\d){12,18})(?:$|\D)"));
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
/// A hardware address: EUI-48 or EUI-64 in colon or dash notation, or dotted as Cisco writes it.
static MAC: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:[0-9a-f]{2}(?::[0-9a-f]{2}){5}(?::[0-9a-f]{2}){0,2}|[0-9a-f]{2}(?:-[0-9a-f]{2}){5}(?:-[0-9a-f]{2}){0,2}|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})\b",
    )
});
// `/home/` and `/Users/` as the systems spell them (anywhere in a path, so `/export/home/x` and
// `/var/home/x` too): a case-insensitive `/users/` would take a URL path's `/users/C` (from
// `/users/C:\Users\name`) for a home directory and hide the Windows path behind it. Drive
// letters and Windows' folders are case-insensitive.
static HOME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:/home/|/homes/|/Users/|(?i:[A-Z]:\\Users\\|[A-Z]:/Users/|[A-Z]:\\Documents and Settings\\))([^/\\\s:\x22'\[]+)",
    )
});
/// A path on a network share (`\\server\share\jdoe\...`): the server, the share and the folders
/// name the person whose home it often is; only the last component (a file) is kept. The rules
/// read decoded text, where `\\` may have become `\`, so one backslash or two start it.
static UNC: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?:^|[\s\x22'(=,/])\\{1,2}([^\\\s\[\x22'][^\\\s\x22']*(?:\\[^\\\s\x22']+)+)\\[^\\\s\x22']*")
});
/// `~jsmith/...`: another user's home directory, as shells and web servers (`/~jsmith/`)
/// write it (`~/...` names no one).
static TILDE_HOME: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:^|[\s(\[\x22'=:/])~([A-Za-z_][A-Za-z0-9._-]*)(?:/|$|[\s)\]\x22',;])"));

/// Scrubs one string, adding what it replaced to `counts`.
pub fn scrub_into(text: &str, counts: &mut Redactions) -> String {
    scrub_signed(text, counts, signs::Signs::of)
}

/// Scrubs one string, running each rule where `signs` (of the decoded text) allow it; a test
/// checks that [`signs::Signs::of`] masks exactly what running every rule would.
fn scrub_signed(text: &str, counts: &mut Redactions, signs: fn(&str) -> signs::Signs) -> String {
    let decoded = decode::Decoded::of(text);
    let t: &str = &decoded.text;
    let signs = signs(t);
    let mut found: Vec<Found> = Vec::new();
    let push = |found: &mut Vec<Found>, start: usize, end: usize, rule: Rule| {
        found.push(Found { start, end, rule });
    };
    // Credentials by position first: they take whole values, whatever the rules below see in
    // them.
    if signs.word(signs::ARMOUR) {
        position::armoured_blocks(t, &mut found);
    }
    if signs.word(signs::SCHEME) && signs.at {
        position::url_userinfo(t, &mut found);
    }
    if signs.word(signs::SECRET_WORD) {
        position::named_values(t, &mut found);
    }
    // The named rules.
    let group = |c: &regex::Captures, i: usize| c.get(i).map(|m| (m.start(), m.end()));
    if signs.word(signs::AUTH_SCHEME) {
        // The token is what follows the last white space of the match (the token has none),
        // found without resolving the pattern's group.
        for m in BEARER.find_iter(t) {
            let (at, space) = m
                .as_str()
                .char_indices()
                .rfind(|(_, c)| c.is_whitespace())
                .expect("the pattern has white space");
            push(&mut found, m.start() + at + space.len_utf8(), m.end(), Rule::BearerToken);
        }
    }
    for (sign, regex, rule) in [
        (signs.word(signs::JWT), &*JWT, Rule::Jwt),
        (signs.word(signs::KEY_PREFIX), &*API_KEY, Rule::ApiKey),
        (signs.at, &*EMAIL, Rule::Email),
    ] {
        if sign {
            for m in regex.find_iter(t) {
                push(&mut found, m.start(), m.end(), rule);
            }
        }
    }
    if signs.base64_run >= 40 {
        for c in AWS_SECRET.captures_iter(t) {
            let m = c.get(1).expect("the pattern has a group");
            if is_aws_secret(m.as_str()) {
                push(&mut found, m.start(), m.end(), Rule::ApiKey);
            }
        }
    }
    // IBANs before cards: an IBAN's digits can look like a card number.
    if signs.iban {
        for m in IBAN.find_iter(t).filter(|m| is_iban(m.as_str())) {
            push(&mut found, m.start(), m.end(), Rule::Iban);
        }
    }
    if signs.digit_cluster >= 13 {
        // The characters around one run are part of its match: the next search starts at the
        // run's end, so a card right after another (one separator between them) is found.
        let mut at = 0;
        while let Some(c) = CARD.captures_at(t, at) {
            let run = c.get(1).expect("the pattern has a group");
            if let Some((s, e)) = card_within(run.as_str()) {
                push(&mut found, run.start() + s, run.start() + e, Rule::Card);
            }
            at = run.end();
        }
    }
    if signs.digit_cluster >= 9 {
        for c in SSN.captures_iter(t).filter(|c| is_ssn(&c[1], &c[2], &c[3])) {
            let m = c.get(0).expect("a match has its whole span");
            push(&mut found, m.start(), m.end(), Rule::NationalId);
        }
    }
    if signs.hex_run >= 14 {
        for m in MAC.find_iter(t) {
            push(&mut found, m.start(), m.end(), Rule::HardwareAddress);
        }
    }
    if signs.dotted_digits >= 7 {
        for m in IPV4.find_iter(t).filter(|m| m.as_str().parse::<Ipv4Addr>().is_ok()) {
            push(&mut found, m.start(), m.end(), Rule::Ip);
        }
    }
    if signs.ipv6 {
        // Not glued to a word: `crypto::key::derive` holds `::de`, which parses.
        let glued = |m: &regex::Match| {
            let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
            t.as_bytes()[..m.start()].last().is_some_and(|b| word(*b))
                || t.as_bytes().get(m.end()).is_some_and(|b| word(*b))
        };
        for m in IPV6.find_iter(t).filter(|m| is_ipv6(m.as_str()) && !glued(m)) {
            push(&mut found, m.start(), m.end(), Rule::Ip);
        }
    }
    if signs.digit_cluster >= 8 {
        for m in PHONE.find_iter(t) {
            if (8..=15).contains(&m.as_str().bytes().filter(u8::is_ascii_digit).count()) {
                push(&mut found, m.start(), m.end(), Rule::Phone);
            }
        }
    }
    for (sign, regex) in
        [(signs.word(signs::HOME), &*HOME), (signs.backslash, &*UNC), (signs.tilde, &*TILDE_HOME)]
    {
        if sign {
            for c in regex.captures_iter(t) {
                let (s, e) = group(&c, 1).expect("the pattern has a group");
                push(&mut found, s, e, Rule::HomePath);
            }
        }
    }
    // The shape rules, beneath them all, each only where its sign shows; the spans they keep
    // are found only when one of them has a candidate.
    let keep = shape::Keep::new(t);
    if t.len() >= 16 {
        shape::random_runs(t, &keep, &mut found);
    }
    if signs.digit_cluster >= 6 {
        shape::digit_runs(t, &keep, &mut found);
    }
    if signs.code {
        shape::document_codes(t, &keep, &mut found);
    }
    if found.is_empty() {
        return text.to_owned();
    }
    mask(text, &decoded, found, counts)
}

/// The original text with the spans found masked: overlapping spans become one, named by the
/// rule that found it first (the rules run from the most precise to the floor).
fn mask(text: &str, decoded: &decode::Decoded<'_>, found: Vec<Found>, counts: &mut Redactions) -> String {
    let mut spans: Vec<(usize, usize, usize, Rule)> = found
        .into_iter()
        .enumerate()
        .filter(|(_, f)| f.start < f.end)
        .map(|(order, f)| {
            let (s, e) = decoded.original(f.start, f.end);
            (s, e, order, f.rule)
        })
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize, usize, Rule)> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.0 < last.1 => {
                last.1 = last.1.max(span.1);
                if span.2 < last.2 {
                    (last.2, last.3) = (span.2, span.3);
                }
            }
            _ => merged.push(span),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e, _, rule) in merged {
        out.push_str(&text[at..s]);
        out.push_str(rule.placeholder());
        counts.add(rule);
        at = e;
    }
    out.push_str(&text[at..]);
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

/// The longest name recorded, in bytes (usage names, route templates, modules, health keys,
/// environment strings).
pub const MAX_NAME_LEN: usize = 128;

/// Whether `name` fits the identifier grammar names must fit: 1 to [`MAX_NAME_LEN`] ASCII
/// letters, digits and `_ . : / - { } * @ +`, with single spaces between words (`GET /a`).
/// Everything a person writes in prose (quotes, commas, `=`, `?`, `%`, `~`, backslashes,
/// non-ASCII letters) falls outside it.
pub fn fits_name_grammar(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && !name.contains("  ")
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'_' | b'.' | b':' | b'/' | b'-' | b'{' | b'}' | b'*' | b'@' | b'+' | b' ')
        })
}

/// A name as it may be recorded: itself when it fits the identifier grammar and no rule would
/// change it; otherwise `None`, counted once under [`Rule::Name`]. A name is never renamed: a
/// masked name (`user [EMAIL]`) could merge with another tenant's and mean something else.
pub fn keep_name<'a>(name: &'a str, counts: &mut Redactions) -> Option<&'a str> {
    if fits_name_grammar(name) && is_unchanged(name) {
        Some(name)
    } else {
        counts.add(Rule::Name);
        None
    }
}

/// Whether no rule finds anything in `text`.
pub fn is_unchanged(text: &str) -> bool {
    let mut counts = Redactions::default();
    scrub_into(text, &mut counts);
    counts.total() == 0
}

/// A route pattern with each parameter's regular expression cut off: `/files/{name:.*}`
/// counts as `/files/{name}`, which fits the name grammar.
pub fn route_template(route: &str) -> std::borrow::Cow<'_, str> {
    if !route.contains(':') || !route.contains('{') {
        return route.into();
    }
    let mut out = String::with_capacity(route.len());
    let mut depth = 0usize;
    let mut cutting = false;
    for c in route.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    out.push(c);
                    continue;
                }
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    cutting = false;
                    out.push(c);
                    continue;
                }
            }
            ':' if depth == 1 => cutting = true,
            _ => {}
        }
        if depth == 0 || !cutting {
            out.push(c);
        }
    }
    out.into()
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
