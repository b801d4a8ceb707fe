//! CSV that a spreadsheet opens as data, never as formulas. Every CSV the product writes (the
//! insights views' `?format=csv`, the dashboard's exports, the bulk issuer's output, a client's
//! store export) goes through [`writer`] and [`write_record`]. Their texts come from tenants
//! (usage names, routes, error texts, licensee names), and a cell that starts with `=`, `+`,
//! `-`, `@`, a tab or a carriage return runs as a formula in the spreadsheet the vendor opens
//! it with. As OWASP advises, such a cell gets a leading `'` and every text cell is quoted;
//! numbers, negative ones included, stay numbers.

use std::borrow::Cow;
use std::io::Write;

/// A CSV writer that quotes every cell that is not a number.
pub fn writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new().quote_style(csv::QuoteStyle::NonNumeric).from_writer(out)
}

/// Writes one record, each cell through [`cell`].
pub fn write_record<W, I, S>(writer: &mut csv::Writer<W>, record: I) -> csv::Result<()>
where
    W: Write,
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    for value in record {
        writer.write_field(cell(value.as_ref()).as_bytes())?;
    }
    writer.write_record(None::<&[u8]>)
}

/// A cell as it may be written: a text a spreadsheet would read as a formula gets a leading
/// `'`, which spreadsheets show as the start of a text.
pub fn cell(text: &str) -> Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_number(text) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether a text is a decimal number as this product writes them (`-12`, `-0.5`): it stays a
/// number in the sheet.
fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(rows: &[&[&str]]) -> String {
        let mut w = writer(Vec::new());
        for row in rows {
            write_record(&mut w, row.iter()).unwrap();
        }
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn formulas_become_text_and_numbers_stay_numbers() {
        for (text, want) in [
            ("=1+1", "'=1+1"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-", "'-"),
            ("-.5", "'-.5"),
            ("export_pdf", "export_pdf"),
            ("-12", "-12"),
            ("-0.25", "-0.25"),
            ("42", "42"),
            ("a=b", "a=b"),
        ] {
            assert_eq!(cell(text), want, "{text:?}");
        }
    }

    /// Every CSV the crate writes goes through this module: no other file builds a writer.
    #[test]
    fn every_csv_writer_is_this_one() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("csv_safe.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if text.contains("csv::Writer") {
                        found.push(path.display().to_string());
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        assert_eq!(found, Vec::<String>::new(), "these write CSV without csv_safe");
    }

    #[test]
    fn text_cells_are_quoted_and_numbers_are_not() {
        assert_eq!(
            csv(&[&["name", "count"], &["=HYPERLINK(\"x\")", "-3"], &["a,b", "1.5"]]),
            "\"name\",\"count\"\n\"'=HYPERLINK(\"\"x\"\")\",-3\n\"a,b\",1.5\n"
        );
    }
}
