//! Full-text search over a user's chat titles and message contents: FTS5 on SQLite, a GIN index
//! over `to_tsvector('simple', ...)` on PostgreSQL (see migration 0006). Both indexes are
//! updated by the writes themselves, in their transactions.

use chrono::NaiveDateTime;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use super::{on_pool, Pool, Store};

/// What a search looks for: every term must match (AND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerms(Vec<SearchTerm>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchTerm {
    /// A word typed without quotes: any word starting with it.
    Prefix(String),
    /// `"quoted words"`: these words, in this order, next to each other.
    Phrase(Vec<String>),
}

/// The words of a text as the search sees them: runs of letters and digits, everything else
/// separates them (as FTS5's `unicode61` tokenizer does).
pub fn words(text: &str) -> impl Iterator<Item = (usize, &str)> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

/// A word as compared: lower case, accents removed (`Zürich` -> `zurich`).
pub fn fold(word: &str) -> String {
    word.nfd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

impl SearchTerms {
    /// Reads a query: words, and `"quoted phrases"` (an unclosed quote runs to the end). `None`
    /// when it holds no word at all.
    pub fn parse(query: &str) -> Option<SearchTerms> {
        let mut terms = Vec::new();
        for (index, part) in query.split('"').enumerate() {
            // A "word" of combining marks alone folds to nothing: no engine indexes it.
            let part_words: Vec<String> = words(part).filter(|(_, w)| !fold(w).is_empty()).map(|(_, w)| w.to_owned()).collect();
            if index % 2 == 1 {
                if !part_words.is_empty() {
                    terms.push(SearchTerm::Phrase(part_words));
                }
            } else {
                terms.extend(part_words.into_iter().map(SearchTerm::Prefix));
            }
        }
        (!terms.is_empty()).then_some(SearchTerms(terms))
    }

    pub fn terms(&self) -> &[SearchTerm] {
        &self.0
    }

    /// An FTS5 query: `"word"*` for a prefix, `"two words"` for a phrase, all of them required.
    /// Words hold only letters and digits, so nothing in them is FTS5 syntax.
    fn fts5(&self) -> String {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|term| match term {
                SearchTerm::Prefix(word) => format!("\"{word}\"*"),
                SearchTerm::Phrase(words) => format!("\"{}\"", words.join(" ")),
            })
            .collect();
        terms.join(" ")
    }

    /// A `to_tsquery` text: `'word':*` for a prefix, `'two' <-> 'words'` for a phrase, joined by
    /// `&`. Words hold only letters and digits, so nothing in them is tsquery syntax.
    fn tsquery(&self) -> String {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|term| match term {
                SearchTerm::Prefix(word) => format!("'{word}':*"),
                SearchTerm::Phrase(words) => {
                    format!("({})", words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" <-> "))
                }
            })
            .collect();
        terms.join(" & ")
    }
}

/// One match: a chat's title (`message_id` and `role` empty) or one of its messages, with the
/// text it was found in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SearchHit {
    pub chat_id: Uuid,
    pub chat_title: Option<String>,
    pub message_id: Option<Uuid>,
    pub role: Option<String>,
    pub text: String,
    pub created_at: Option<NaiveDateTime>,
    pub total: i64,
}

/// A page of matches and how many there are in all.
pub struct SearchPage {
    pub total: i64,
    pub hits: Vec<SearchHit>,
}

/// The matches, as `(chat_id, message_id, kind, score, created_at)`: titles (kind 0) before
/// messages (kind 1), then by relevance. `$1` user, `$2` query, `$3` include archived. Messages
/// are looked up with their owner's word (`owner<user id>`, weight D: no part of the score).
const POSTGRES_HITS: &str = "
    WITH query AS (
        SELECT to_tsquery('simple', $2) AS q, ('owner' || replace($1::text, '-', ''))::tsquery AS owner
    ),
    hits AS (
        SELECT c.id AS chat_id, NULL::uuid AS message_id, 0 AS kind,
               ts_rank(to_tsvector('simple', coalesce(c.title, '')), query.q, 1) AS score, c.created_at AS created_at
        FROM chats c, query
        WHERE to_tsvector('simple', coalesce(c.title, '')) @@ query.q
          AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
        UNION ALL
        SELECT m.chat_id, m.id, 1, ts_rank('{0, 0, 0, 1}', w.words, query.q, 1), m.created_at
        FROM message_words w JOIN messages m ON m.id = w.message_id JOIN chats c ON c.id = m.chat_id, query
        WHERE w.words @@ (query.q && query.owner)
          AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
    )";

/// As [`POSTGRES_HITS`]; FTS5's `bm25` is lower for better matches. Messages are looked up with
/// their owner's id, a word of the `owner` column (weight 0 in the score).
const SQLITE_HITS: &str = "
    WITH hits AS (
        SELECT c.id AS chat_id, NULL AS message_id, 0 AS kind, -bm25(chats_search) AS score, c.created_at AS created_at
        FROM chats_search JOIN chats c ON c.rowid = chats_search.rowid
        WHERE chats_search MATCH $2 AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
        UNION ALL
        SELECT m.chat_id, m.id, 1, -bm25(messages_search, 1.0, 0.0), m.created_at
        FROM messages_search JOIN messages m ON m.rowid = messages_search.rowid JOIN chats c ON c.id = m.chat_id
        WHERE messages_search MATCH '{content} : (' || $2 || ') AND {owner} : \"' || lower(hex($1)) || '\"'
          AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
    )";

/// One page of the hits, best first, with the text each was found in. `$4` limit, `$5` skip.
const PAGE: &str = ",
    page AS (
        SELECT hits.*, COUNT(*) OVER () AS total FROM hits
        ORDER BY kind, score DESC, created_at DESC, message_id LIMIT $4 OFFSET $5
    )
    SELECT page.chat_id, c.title AS chat_title, page.message_id, m.role, COALESCE(m.content, c.title, '') AS text,
           page.created_at, page.total
    FROM page JOIN chats c ON c.id = page.chat_id LEFT JOIN messages m ON m.id = page.message_id
    ORDER BY page.kind, page.score DESC, page.created_at DESC, page.message_id";

impl Store {
    /// The user's chats and messages that match every term, best first: title matches, then
    /// messages by relevance (then newest first).
    pub async fn search(
        &self,
        user_id: Uuid,
        terms: &SearchTerms,
        include_archived: bool,
        skip: i64,
        limit: i64,
    ) -> Result<SearchPage, sqlx::Error> {
        let (hits_sql, query) = match self.pool() {
            Pool::Postgres(_) => (POSTGRES_HITS, terms.tsquery()),
            Pool::Sqlite(_) => (SQLITE_HITS, terms.fts5()),
        };
        let page_sql = format!("{hits_sql}{PAGE}");
        let hits: Vec<SearchHit> = on_pool!(self, pool => {
            sqlx::query_as(&page_sql).bind(user_id).bind(&query).bind(include_archived).bind(limit).bind(skip).fetch_all(pool).await
        })?;
        let total = match hits.first() {
            Some(hit) => hit.total,
            // Past the last page (or nothing found): the count alone.
            None if skip > 0 => {
                let count_sql = format!("{hits_sql} SELECT COUNT(*) FROM hits");
                on_pool!(self, pool => {
                    sqlx::query_scalar(&count_sql).bind(user_id).bind(&query).bind(include_archived).fetch_one(pool).await
                })?
            }
            None => 0,
        };
        Ok(SearchPage { total, hits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_words_and_quoted_phrases() {
        let terms = SearchTerms::parse(r#"  Zür*ich "new  york" it's "#).unwrap();
        assert_eq!(
            terms.terms(),
            [
                SearchTerm::Prefix("Zür".into()),
                SearchTerm::Prefix("ich".into()),
                SearchTerm::Phrase(vec!["new".into(), "york".into()]),
                SearchTerm::Prefix("it".into()),
                SearchTerm::Prefix("s".into()),
            ]
        );
        assert_eq!(SearchTerms::parse(r#"a "b c"#).unwrap().fts5(), r#""a"* "b c""#);
        assert_eq!(SearchTerms::parse(r#"a "b c"#).unwrap().tsquery(), "'a':* & ('b' <-> 'c')");
        assert_eq!(SearchTerms::parse(r#" "" -- ' : * & | ! "#), None);
        assert_eq!(SearchTerms::parse("\u{345}"), None);
    }

    #[test]
    fn words_fold_case_and_accents() {
        assert_eq!(fold("ZÜRICH"), "zurich");
        assert_eq!(fold("Crème"), "creme");
        assert_eq!(words("a-b  c").collect::<Vec<_>>(), [(0, "a"), (2, "b"), (5, "c")]);
    }
}
