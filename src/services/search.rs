//! Searching a user's chats, and the snippets that show where each match is. The snippets are
//! built here, from the matched text, the same way for both databases.

use crate::schemas::search::{SearchQuery, SearchResult, SearchResults};
use crate::store::search::{fold, words, SearchTerm, SearchTerms};
use crate::store::users::User;
use crate::store::Store;

use super::{ServiceError, ServiceResult};

/// Characters of a snippet, about.
const SNIPPET_CHARS: usize = 200;
/// Characters shown before the first match.
const CONTEXT_BEFORE_CHARS: usize = 60;
/// How far into a text the snippet looks for the match; beyond, it shows the text's start.
const SNIPPET_SCAN_BYTES: usize = 1 << 20;

pub async fn search(store: &Store, user: &User, query: &SearchQuery) -> ServiceResult<SearchResults> {
    let page = store.search(user.id, &query.q, query.include_archived, query.skip, query.limit).await?;
    let terms = query.q.clone();
    // Long messages take a while to scan: off the threads that serve requests.
    let results = tokio::task::spawn_blocking(move || {
        page.hits
            .into_iter()
            .map(|hit| SearchResult {
                snippet: snippet(&hit.text, &terms),
                chat_id: hit.chat_id,
                chat_title: hit.chat_title,
                message_id: hit.message_id,
                role: hit.role,
                created_at: hit.created_at,
            })
            .collect()
    })
    .await
    .map_err(|err| ServiceError::Internal(err.into()))?;
    Ok(SearchResults { results, total: page.total })
}

/// Plain text around the first match, HTML-escaped, with every matched word in `<mark>`; runs
/// of white space become one space; `…` where the text was cut.
pub fn snippet(text: &str, terms: &SearchTerms) -> String {
    let scanned = &text[..floor_char_boundary(text, SNIPPET_SCAN_BYTES)];
    let tokens: Vec<(usize, &str)> = words(scanned).collect();
    let folded: Vec<String> = tokens.iter().map(|(_, w)| fold(w)).collect();
    let marked = marked_words(&folded, terms);
    let first = marked.iter().position(|m| *m).map_or(0, |i| tokens[i].0);
    // Start a little before the first match, at a word's start.
    let mut start = scanned[..first].char_indices().rev().nth(CONTEXT_BEFORE_CHARS - 1).map_or(0, |(i, _)| i);
    if start > 0 {
        start = tokens.iter().map(|(offset, _)| *offset).find(|offset| *offset >= start).unwrap_or(first).min(first);
    }
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut budget = SNIPPET_CHARS;
    let mut at = start;
    for (index, (offset, word)) in tokens.iter().enumerate().filter(|(_, (offset, _))| *offset >= start) {
        if budget == 0 || !push_plain(&mut out, &text[at..*offset], &mut budget) {
            return finish(out, true);
        }
        // A word longer than what is left of the snippet ends it; only a first word is cut.
        let fits = word.chars().count() <= budget;
        if !fits && budget < SNIPPET_CHARS {
            return finish(out, true);
        }
        let shown = word.char_indices().nth(budget).map_or(*word, |(end, _)| &word[..end]);
        if marked[index] {
            out.push_str("<mark>");
            push_escaped(&mut out, shown);
            out.push_str("</mark>");
        } else {
            push_escaped(&mut out, shown);
        }
        if shown.len() < word.len() {
            return finish(out, true);
        }
        budget = budget.saturating_sub(word.chars().count());
        at = offset + word.len();
    }
    let complete = push_plain(&mut out, &text[at..], &mut budget);
    finish(out, !complete)
}

fn finish(mut out: String, cut: bool) -> String {
    let kept = out.trim_end().len();
    out.truncate(kept);
    if cut {
        out.push('…');
    }
    out
}

/// Which words a term matches: a word that starts with a typed word, or the words of a phrase
/// found one after the other.
fn marked_words(folded: &[String], terms: &SearchTerms) -> Vec<bool> {
    let mut marked = vec![false; folded.len()];
    for term in terms.terms() {
        match term {
            SearchTerm::Prefix(word) => {
                let word = fold(word);
                for (index, token) in folded.iter().enumerate() {
                    marked[index] |= token.starts_with(&word);
                }
            }
            SearchTerm::Phrase(phrase) => {
                let phrase: Vec<String> = phrase.iter().map(|w| fold(w)).collect();
                for index in 0..folded.len().saturating_sub(phrase.len() - 1) {
                    if folded[index..index + phrase.len()] == phrase[..] {
                        marked[index..index + phrase.len()].iter_mut().for_each(|m| *m = true);
                    }
                }
            }
        }
    }
    marked
}

/// Appends text between words, HTML-escaped and with white space collapsed, while `budget`
/// (characters) lasts. False when the budget ran out before the text did.
fn push_plain(out: &mut String, text: &str, budget: &mut usize) -> bool {
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if *budget == 0 {
            return false;
        }
        if space && !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
            *budget = budget.saturating_sub(1);
        }
        space = false;
        push_escaped(out, c.encode_utf8(&mut [0; 4]));
        *budget -= 1;
    }
    if space && !out.is_empty() && !out.ends_with(' ') && !out.ends_with('…') {
        out.push(' ');
        *budget = budget.saturating_sub(1);
    }
    true
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    (0..=index).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snip(text: &str, query: &str) -> String {
        snippet(text, &SearchTerms::parse(query).unwrap())
    }

    #[test]
    fn matches_are_marked_and_the_rest_escaped() {
        assert_eq!(snip("Use <b>rye</b> & water", "RYE"), "Use &lt;b&gt;<mark>rye</mark>&lt;/b&gt; &amp; water");
        assert_eq!(snip("Zürich by\n\ntrain", "zur"), "<mark>Zürich</mark> by train");
        assert_eq!(snip("new york, new jersey", "\"new york\""), "<mark>new</mark> <mark>york</mark>, new jersey");
        assert_eq!(snip("nothing here", "absent"), "nothing here");
    }

    #[test]
    fn long_texts_are_cut_around_the_first_match() {
        let text = format!("{} needle {}", "hay ".repeat(100), "straw ".repeat(100));
        let got = snip(&text, "needle");
        assert!(got.starts_with("…hay"), "{got}");
        assert!(got.ends_with('…'), "{got}");
        assert!(got.contains("<mark>needle</mark> straw"), "{got}");
        assert!(got.chars().count() < SNIPPET_CHARS + 40, "{got}");
    }
}
