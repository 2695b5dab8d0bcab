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

/// A page of the ranked matches, and how many were ranked (at most [`SEARCH_RANKED_MATCHES`]).
pub struct SearchPage {
    pub total: i64,
    pub hits: Vec<SearchHit>,
}

/// The most matches one search ranks: the chat titles, then the newest messages. Scoring every
/// match of a word found in most of a long history would take a scan of them all; `total`
/// counts the ranked matches only, so it is at most this.
pub const SEARCH_RANKED_MATCHES: i64 = 2_000;

/// The ranked matches, as `(chat_id, message_id, kind, score, created_at)`: titles (kind 0),
/// then messages (kind 1). `$1` user, `$2` query, `$3` include archived, `$4`
/// [`SEARCH_RANKED_MATCHES`].
///
/// The newest messages come from one of two plans, picked by how many of the user's 200 newest
/// messages match: 25 or more (a common word), their messages are walked newest first until
/// enough match (`message_words_newest_idx`, a few thousand rows at most for such a word);
/// fewer, the GIN index gives every match (few) with the owner's word (`owner<user id>`, weight
/// D: no part of the score), and the newest are kept. The word index alone would read every
/// match of a common word (and, for a prefix, every user's), the walk alone every message of the
/// user for a rare one.
const POSTGRES_HITS: &str = "
    WITH titles AS (
        SELECT c.id AS chat_id, NULL::uuid AS message_id, 0 AS kind,
               ts_rank(to_tsvector('simple', coalesce(c.title, '')), to_tsquery('simple', $2), 1) AS score,
               c.created_at AS created_at
        FROM chats c
        WHERE to_tsvector('simple', coalesce(c.title, '')) @@ to_tsquery('simple', $2)
          AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
        ORDER BY c.created_at DESC, c.id DESC LIMIT $4
    ),
    common AS (
        SELECT count(*) >= 25 AS common
        FROM (SELECT words FROM message_words WHERE user_id = $1 ORDER BY created_at DESC, message_id DESC LIMIT 200) newest
        WHERE words @@ to_tsquery('simple', $2)
    ),
    newest AS (
        (SELECT w.chat_id, w.message_id, w.created_at, w.words
         FROM message_words w JOIN chats c ON c.id = w.chat_id
         WHERE (SELECT common FROM common) AND w.user_id = $1 AND w.words @@ to_tsquery('simple', $2)
           AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
         ORDER BY w.created_at DESC, w.message_id DESC LIMIT $4)
        UNION ALL
        (SELECT w.chat_id, w.message_id, w.created_at, w.words
         FROM message_words w JOIN chats c ON c.id = w.chat_id
         WHERE NOT (SELECT common FROM common)
           AND w.words @@ (to_tsquery('simple', $2) && ('owner' || replace($1::text, '-', ''))::tsquery)
           AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
         ORDER BY w.created_at DESC, w.message_id DESC LIMIT $4)
    ),
    hits AS (
        SELECT * FROM titles
        UNION ALL
        (SELECT chat_id, message_id, 1, ts_rank('{0, 0, 0, 1}', words, to_tsquery('simple', $2), 1), created_at
         FROM newest ORDER BY created_at DESC, message_id DESC LIMIT $4 - (SELECT count(*) FROM titles))
    )";

/// As [`POSTGRES_HITS`]. FTS5 gives matches newest first (by rowid) and stops at the limit;
/// messages are looked up with their owner's id, a word of the `owner` column. The score (see
/// [`sqlite_score`]) replaces FTS5's `bm25`, whose document frequencies take a read of every
/// user's matches of each word: tens of ms for a common one.
fn sqlite_hits() -> String {
    let title_score = sqlite_score("chats_search", "title");
    let message_score = sqlite_score("messages_search", "content");
    format!(
        "
    WITH titles AS (
        SELECT c.id AS chat_id, NULL AS message_id, 0 AS kind, {title_score} AS score, c.created_at AS created_at
        FROM chats_search JOIN chats c ON c.rowid = chats_search.rowid
        WHERE chats_search MATCH $2 AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
        ORDER BY chats_search.rowid DESC LIMIT $4
    ),
    newest AS (
        SELECT m.chat_id, m.id AS message_id, 1 AS kind, {message_score} AS score, m.created_at AS created_at,
               messages_search.rowid AS written
        FROM messages_search JOIN messages m ON m.rowid = messages_search.rowid JOIN chats c ON c.id = m.chat_id
        WHERE messages_search MATCH '{{content}} : (' || $2 || ') AND {{owner}} : \"' || lower(hex($1)) || '\"'
          AND c.user_id = $1 AND ($3 OR NOT COALESCE(c.is_archived, FALSE))
        ORDER BY messages_search.rowid DESC LIMIT $4
    ),
    hits AS (
        SELECT * FROM titles
        UNION ALL
        SELECT * FROM (
            SELECT chat_id, message_id, kind, score, created_at FROM newest
            ORDER BY written DESC LIMIT $4 - (SELECT count(*) FROM titles)
        )
    )"
    )
}

/// How well an FTS5 row matches, higher is better: the matched words (or phrases) per
/// character of the text, a text counting 100 characters more so that a shorter one is not
/// always first. `highlight` marks each match (with a `char(1)`).
fn sqlite_score(table: &str, column: &str) -> String {
    format!("(length(highlight({table}, 0, char(1), '')) - length({table}.{column})) * 1.0 / (length({table}.{column}) + 100)")
}

/// One page of the hits, best first, with the text each was found in. `$5` limit, `$6` skip.
const PAGE: &str = ",
    page AS (
        SELECT hits.*, COUNT(*) OVER () AS total FROM hits
        ORDER BY kind, score DESC, created_at DESC, message_id, chat_id LIMIT $5 OFFSET $6
    )
    SELECT page.chat_id, c.title AS chat_title, page.message_id, m.role, COALESCE(m.content, c.title, '') AS text,
           page.created_at, page.total
    FROM page JOIN chats c ON c.id = page.chat_id LEFT JOIN messages m ON m.id = page.message_id
    ORDER BY page.kind, page.score DESC, page.created_at DESC, page.message_id, page.chat_id";

impl Store {
    /// The user's chats and messages that match every term, best first: title matches, then
    /// messages by relevance (then newest first), among the [`SEARCH_RANKED_MATCHES`] ranked.
    pub async fn search(
        &self,
        user_id: Uuid,
        terms: &SearchTerms,
        include_archived: bool,
        skip: i64,
        limit: i64,
    ) -> Result<SearchPage, sqlx::Error> {
        let (hits_sql, query) = match self.pool() {
            Pool::Postgres(_) => (POSTGRES_HITS.to_owned(), terms.tsquery()),
            Pool::Sqlite(_) => (sqlite_hits(), terms.fts5()),
        };
        let page_sql = format!("{hits_sql}{PAGE}");
        // Not a prepared statement kept for the next search: PostgreSQL then plans each search
        // with its words (whose frequencies pick the plans), never with a generic plan.
        let hits: Vec<SearchHit> = on_pool!(self, pool => {
            sqlx::query_as(&page_sql)
                .bind(user_id)
                .bind(&query)
                .bind(include_archived)
                .bind(SEARCH_RANKED_MATCHES)
                .bind(limit)
                .bind(skip)
                .persistent(false)
                .fetch_all(pool)
                .await
        })?;
        let total = match hits.first() {
            Some(hit) => hit.total,
            // Past the last page (or nothing found): the count alone.
            None if skip > 0 => {
                let count_sql = format!("{hits_sql} SELECT COUNT(*) FROM hits");
                on_pool!(self, pool => {
                    sqlx::query_scalar(&count_sql)
                        .bind(user_id)
                        .bind(&query)
                        .bind(include_archived)
                        .bind(SEARCH_RANKED_MATCHES)
                        .persistent(false)
                        .fetch_one(pool)
                        .await
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
