//! CSV output shared by every tool that writes rows (`maxl-infer predict`, `maxl-label`): one
//! quoting rule, so a path or a reason reads back the same whoever wrote it.

use std::borrow::Cow;

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote, a line break or surrounding
/// spaces, with quotes doubled.
pub fn field(s: &str) -> Cow<'_, str> {
    let needs = s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if needs {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn csv_fields_are_quoted_where_needed() {
        assert_eq!(field("a/b.png"), "a/b.png");
        assert_eq!(field("a,b.png"), "\"a,b.png\"");
        assert_eq!(field("say \"hi\".png"), "\"say \"\"hi\"\".png\"");
        assert_eq!(field("two\nlines.png"), "\"two\nlines.png\"");
        assert_eq!(field(" x"), "\" x\"");
    }
}
