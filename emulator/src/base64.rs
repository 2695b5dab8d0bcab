//! Validation of standard, padded base64 exactly as Go's `base64.StdEncoding` decodes it, so that
//! bad images get the same `illegal base64 data at input byte N` message as from Ollama.

/// Checks `input`; on failure returns the byte offset Go would report.
pub(crate) fn validate(input: &str) -> Result<(), usize> {
    let src = input.as_bytes();
    let mut si = 0;
    while si < src.len() {
        si = decode_quantum(src, si)?;
    }
    Ok(())
}

/// The message Ollama sends for an invalid image.
pub(crate) fn error_message(offset: usize) -> String {
    format!("illegal base64 data at input byte {offset}")
}

fn is_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

fn is_newline(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

fn skip_newlines(src: &[u8], mut si: usize) -> usize {
    while si < src.len() && is_newline(src[si]) {
        si += 1;
    }
    si
}

/// One 4-character quantum of Go's `decodeQuantum`; returns the index after it.
fn decode_quantum(src: &[u8], mut si: usize) -> Result<usize, usize> {
    let mut j = 0;
    while j < 4 {
        if si == src.len() {
            return match j {
                0 => Ok(si),
                // Padding is required: a short final quantum is an error.
                _ => Err(si - j),
            };
        }
        let b = src[si];
        si += 1;
        if is_alphabet(b) {
            j += 1;
            continue;
        }
        if is_newline(b) {
            continue;
        }
        if b != b'=' || j < 2 {
            // Not in the alphabet, or padding too early.
            return Err(si - 1);
        }
        if j == 2 {
            // "==" is expected; the first "=" is consumed.
            si = skip_newlines(src, si);
            if si == src.len() {
                return Err(src.len());
            }
            if src[si] != b'=' {
                return Err(si - 1);
            }
            si += 1;
        }
        si = skip_newlines(src, si);
        if si < src.len() {
            // Trailing garbage after the padding.
            return Err(si);
        }
        return Ok(si);
    }
    Ok(si)
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_standard_base64() {
        for ok in ["", "aGk=", "aGVsbG8=", "aGVsbG8h", "YQ==", "aGVs\nbG8h", "iVBORw0KGgo="] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn reports_go_offsets() {
        assert_eq!(validate("data:image/png;base64,aGk="), Err(4));
        assert_eq!(validate("aGk"), Err(0));
        assert_eq!(validate("aGVsbG8"), Err(4));
        assert_eq!(validate("a"), Err(0));
        assert_eq!(validate("YQ="), Err(3));
        assert_eq!(validate("Y==="), Err(1));
        assert_eq!(validate("YQ==YQ=="), Err(4));
        assert_eq!(validate("aGk-"), Err(3));
        assert_eq!(validate("aGk=x"), Err(4));
    }
}
