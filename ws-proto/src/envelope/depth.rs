//! The linear nesting-depth pre-scan that runs before any JSON parsing.
//!
//! A text like `[[[[…` of a megabyte would otherwise reach a parser that recurses or
//! allocates per level. This scan looks at each byte once, keeps two flags and a
//! counter, and stops at the first level over the limit.

use super::EnvelopeError;

/// Checks that objects and arrays in `text` nest at most `max` levels deep.
///
/// Brackets inside JSON strings do not count; escapes inside strings are honoured, so
/// `"\"["` stays one string. The scan does not validate the JSON: unbalanced closers
/// are ignored here and reported by the parser afterwards. Since `"`, `\`, brackets and
/// braces are ASCII, scanning UTF-8 text byte by byte is exact.
pub(crate) fn check_depth(text: &str, max: usize) -> Result<(), EnvelopeError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string: to the next unescaped quote, or to the end of the
                // text if it is unterminated (the parser reports that).
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(EnvelopeError::TooDeep { max });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_objects_and_arrays() {
        assert_eq!(check_depth(r#"{"p":[{"a":[]}]}"#, 4), Ok(()));
        assert_eq!(
            check_depth(r#"{"p":[{"a":[]}]}"#, 3),
            Err(EnvelopeError::TooDeep { max: 3 })
        );
    }

    #[test]
    fn siblings_do_not_add_up() {
        assert_eq!(check_depth("[[],[],[],{},{}]", 2), Ok(()));
    }

    #[test]
    fn brackets_in_strings_are_not_depth() {
        assert_eq!(check_depth(r#"{"e":"[[[[{{{{","p":"]]]]"}"#, 1), Ok(()));
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        // The string holds `\"[[[` : if the escaped quote ended it, depth would be 4.
        assert_eq!(check_depth(r#"{"e":"\"[[[","c":"\\"}"#, 1), Ok(()));
        // An escaped backslash before the quote does end the string.
        assert_eq!(
            check_depth(r#"{"e":"\\",[[["#, 3),
            Err(EnvelopeError::TooDeep { max: 3 })
        );
    }

    #[test]
    fn unterminated_string_and_trailing_escape_do_not_panic() {
        assert_eq!(check_depth(r#"{"e":"abc"#, 1), Ok(()));
        assert_eq!(check_depth(r#"{"e":"abc\"#, 1), Ok(()));
        assert_eq!(check_depth("]]]}}}", 0), Ok(()));
    }

    #[test]
    fn multibyte_text_is_scanned_exactly() {
        assert_eq!(check_depth(r#"{"e":"é[ü","p":["日本"]}"#, 2), Ok(()));
    }
}
