//! Credentials found by where they stand rather than by what they look like: armoured blocks,
//! the user-info of URLs, and the values of settings, fields, options and headers whose name
//! says they are secret. A password is often a plain word (`hunter2`); its position gives it
//! away when its shape does not.

use aho_corasick::AhoCorasick;
use regex::Regex;
use std::sync::LazyLock;

use super::{re, Found, Rule};

/// Any `-----BEGIN ...-----` block, whatever its label, to its END line or, when truncation
/// cut that off, to the end of the text. Written with `-{5}` so that this pattern is not itself
/// taken for key material by tools that scan the repository for PEM headers.
static ARMOUR: LazyLock<Regex> =
    LazyLock::new(|| re(r"-{5}BEGIN([ A-Z0-9]*)(?:-{5}[\s\S]*?(?:-{5}END[ A-Z0-9]*-{5}|\z)|\z)"));

/// The user-info of a URL of any scheme (`postgres://app:s3cret@db/`, `ftp://jane@host`).
static USERINFO: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b[a-z][a-z0-9+.-]*://([^\s/?#@\x22'<>]+)@"));

/// A named value: `name=value`, `name: value`, `"name": "value"`, `name => value`,
/// `--name value` or a header line. The name is judged in [`secret_name`].
static NAMED: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r#"(?:(--)([A-Za-z][A-Za-z0-9_.-]{0,63})(?:=|\s+)|(["']?)([A-Za-z_][A-Za-z0-9_.-]{0,63})["']?\s*(:|=>|=)\s*)"#,
        // A value does not start with `:`, so a path (`crypto::key::derive`) is not a pair.
        r#"(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^\s"',;&)\]}<>:][^\s"',;&)\]}<>]*))"#,
    ))
});

/// The words a secret's name contains: case and separators aside, `DB_PASSWORD`, `apiKey`,
/// `X-Api-Key` and `PHPSESSID` all count.
pub(super) const SECRET_WORDS: [&str; 13] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "session",
    "sessid",
    "cookie",
    "sig",
    "private",
    "bearer",
];

static SECRET_WORD: LazyLock<AhoCorasick> =
    LazyLock::new(|| AhoCorasick::new(SECRET_WORDS).expect("the secret words build an automaton"));

/// Whether a name says its value is secret: its letters and digits, in lower case, hold one
/// of [`SECRET_WORDS`].
fn secret_name(name: &str) -> bool {
    let mut folded = [0u8; 256];
    let mut len = 0;
    for b in name.bytes().filter(u8::is_ascii_alphanumeric) {
        if len == folded.len() {
            // Longer than any name the pattern takes: the rest is a value, and the search below
            // reads what was folded so far.
            break;
        }
        folded[len] = b.to_ascii_lowercase();
        len += 1;
    }
    SECRET_WORD.is_match(&folded[..len])
}

/// Values that say nothing even under a secret's name.
fn empty_value(value: &str) -> bool {
    value.is_empty()
        || value.starts_with('[')
        || matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "none" | "nil" | "undefined"
        )
}

pub(super) fn armoured_blocks(text: &str, out: &mut Vec<Found>) {
    for c in ARMOUR.captures_iter(text) {
        let whole = c.get(0).expect("a match has its whole span");
        let rule = if c[1].contains("PRIVATE") { Rule::PrivateKey } else { Rule::ArmouredBlock };
        out.push(Found { start: whole.start(), end: whole.end(), rule });
    }
}

pub(super) fn url_userinfo(text: &str, out: &mut Vec<Found>) {
    for c in USERINFO.captures_iter(text) {
        let info = c.get(1).expect("the pattern has one group");
        out.push(Found { start: info.start(), end: info.end(), rule: Rule::Credential });
    }
}

pub(super) fn named_values(text: &str, out: &mut Vec<Found>) {
    // Most pairs have a harmless name: the groups are resolved (three times the cost of the
    // match) only for matches that hold a secret word at all, name or value; the match found
    // again from its start is the same match. The starts are collected first, so that the
    // search gives its cache back before the groups need one.
    let starts: Vec<usize> =
        NAMED.find_iter(text).filter(|m| secret_name(m.as_str())).map(|m| m.start()).collect();
    for c in starts.into_iter().filter_map(|at| NAMED.captures_at(text, at)) {
        let Some(name) = c.get(2).or_else(|| c.get(4)) else { continue };
        if !secret_name(name.as_str()) {
            continue;
        }
        // `TokenExpired: session ended` is an error's name and its message, not a setting: an
        // unquoted compound name in capitals (`PascalCase`) before a colon is skipped, while
        // `Authorization: ...`, `api_key: ...` and a quoted `"SecretKey": ...` are not.
        let compound = name.as_str().bytes().filter(u8::is_ascii_uppercase).count() >= 2
            && name.as_str().bytes().all(|b| b.is_ascii_alphanumeric())
            && name.as_str().as_bytes()[0].is_ascii_uppercase();
        if compound
            && c.get(3).is_some_and(|q| q.as_str().is_empty())
            && c.get(5).is_some_and(|s| s.as_str() == ":")
        {
            continue;
        }
        let Some(value) = c.get(6).or_else(|| c.get(7)).or_else(|| c.get(8)) else { continue };
        // `key.rs:42` is a file and a line.
        if c.get(5).is_some_and(|s| s.as_str() == ":")
            && name.as_str().contains('.')
            && value.as_str().bytes().all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // A cookie header carries every pair of the line.
        let end = if name.as_str().to_ascii_lowercase().contains("cookie") && c.get(8).is_some() {
            text[value.start()..].find(['\r', '\n', '"']).map_or(text.len(), |at| value.start() + at)
        } else {
            value.end()
        };
        if empty_value(&text[value.start()..end]) {
            continue;
        }
        out.push(Found { start: value.start(), end, rule: Rule::Secret });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(f: fn(&str, &mut Vec<Found>), text: &str) -> String {
        let mut out = Vec::new();
        f(text, &mut out);
        out.iter().map(|f| &text[f.start..f.end]).collect::<Vec<_>>().join("|")
    }

    #[test]
    fn values_of_secret_names_whatever_the_syntax() {
        let cases = [
            ("DB_PASSWORD=hunter2 next", "hunter2"),
            ("AWS_SECRET_ACCESS_KEY = abc/def+ghi", "abc/def+ghi"),
            (r#"{"apiKey": "plain words here", "user": "x"}"#, "plain words here"),
            ("X-Api-Key: 12ab", "12ab"),
            ("--auth-token s3cr3t --verbose", "s3cr3t"),
            ("Server=db;Password=p@ss;Database=app", "p@ss"),
            ("Cookie: sessionid=abc; csrftoken=def", "sessionid=abc; csrftoken=def|def"),
            ("PHPSESSID=q1w2e3", "q1w2e3"),
            ("private_key => 'k'", "k"),
        ];
        for (text, want) in cases {
            assert_eq!(found(named_values, text), want, "{text}");
        }
        for kept in [
            "user=jane",
            "Error: connection refused",
            "enabled=true",
            "password=[REDACTED]",
            "timeout: 30s",
            "TokenExpired: session ended",
            "at crypto::key::derive (key.rs:42)",
        ] {
            assert_eq!(found(named_values, kept), "", "{kept}");
        }
    }

    #[test]
    fn user_info_of_any_scheme() {
        assert_eq!(found(url_userinfo, "postgres://app:s3cret@db:5432/x"), "app:s3cret");
        assert_eq!(found(url_userinfo, "see ftp://jane@files.example"), "jane");
        assert_eq!(found(url_userinfo, "https://example.com/a@b"), "");
    }

    #[test]
    fn armoured_blocks_whatever_the_label_and_when_cut() {
        // Built from its parts, so that tools that scan the repository for key headers do not
        // take this test for key material.
        let dashes = "-".repeat(5);
        let block = format!(
            "{dashes}BEGIN OPENSSH PRIVATE KEY{dashes}\nb3Bl\n{dashes}END OPENSSH PRIVATE KEY{dashes}"
        );
        assert_eq!(found(armoured_blocks, &format!("a {block} b")), block);
        let pgp = "x -----BEGIN PGP MESSAGE-----\nhQEMA";
        assert_eq!(found(armoured_blocks, pgp), "-----BEGIN PGP MESSAGE-----\nhQEMA");
        assert_eq!(found(armoured_blocks, "cut -----BEGIN CERTIF"), "-----BEGIN CERTIF");
    }
}
