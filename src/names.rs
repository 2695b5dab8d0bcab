//! When two account names (usernames, e-mail addresses) are the same name.
//!
//! Names are compared by their key: the NFKC form (fullwidth letters, ligatures and other
//! compatibility forms become their plain letters), without invisible characters, case-folded.
//! The keys are computed here rather than with SQL's `lower()`, which folds only ASCII on SQLite
//! and depends on the database's locale on PostgreSQL.

use unicode_normalization::UnicodeNormalization;

/// The NFKC form of `text`.
pub fn nfkc(text: &str) -> String {
    text.nfkc().collect()
}

/// The key under which `name` is unique and looked up.
pub fn name_key(name: &str) -> String {
    let visible: String = nfkc(name).chars().filter(|c| !is_invisible(*c)).collect();
    // Upper then lower case folds what lower case alone keeps apart (`ß` and `SS`, `ς` and `σ`).
    nfkc(&visible.to_uppercase().to_lowercase())
}

/// Whether `name` is looked up as an e-mail address (it has an `@`, in any compatibility form).
pub fn is_email_like(name: &str) -> bool {
    name.contains('@') || nfkc(name).contains('@')
}

/// Characters that show nothing but make two names that look the same differ: zero-width
/// characters, joiners, bidirectional controls, variation selectors, fillers and tags (Unicode's
/// default-ignorable code points).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_case_width_and_invisible_characters() {
        for (a, b) in [
            ("Éve", "éVE"),
            ("\u{ff46}ull", "FULL"),
            ("stra\u{df}e", "STRASSE"),
            ("\u{39f}\u{394}\u{39f}\u{3a3}", "\u{3bf}\u{3b4}\u{3bf}\u{3c2}"),
            ("bob\u{200b}", "bob"),
            ("E\u{301}ve", "\u{c9}ve"),
            ("carol\u{ff20}corp.example", "Carol@Corp.example"),
        ] {
            assert_eq!(name_key(a), name_key(b), "{a:?} and {b:?}");
        }
        assert_ne!(name_key("Éve"), name_key("Eve"));
        assert_ne!(name_key("bob_user"), name_key("bob user"));
    }

    #[test]
    fn at_signs_in_any_form_make_an_email_like_name() {
        assert!(is_email_like("carol@corp.example"));
        assert!(is_email_like("carol\u{ff20}corp.example"));
        assert!(is_email_like("carol\u{fe6b}corp"));
        assert!(!is_email_like("carol_corp"));
    }
}
