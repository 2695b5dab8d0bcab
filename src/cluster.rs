//! What replicas sharing one PostgreSQL database tell each other, through its `LISTEN/NOTIFY`:
//! "stop this generation", "send me this generation's pieces", the pieces themselves, "it has
//! ended", and "this cached row changed". Notices carry ids and small answer pieces (well under
//! PostgreSQL's 8,000-byte payload limit), never secrets.
//!
//! On SQLite there is one process, so there is no bus: publishing does nothing.
//!
//! Notices are sent in order by one task (a generation's pieces must arrive in order) and
//! received by one listener connection per process. When that connection is lost, notices sent
//! meanwhile are lost too: the listener reconnects and tells everyone to stop trusting what
//! they cached (see [`Received::Reconnected`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::background::BackgroundTasks;
use crate::store::Change;

/// The one channel every replica listens on.
const CHANNEL: &str = "rovertchat";

/// The listener connection's `application_name` (what `pg_stat_activity` shows).
pub const LISTENER_APPLICATION_NAME: &str = "rovertchat listener";

/// Answer text per notice, in bytes: JSON escaping at most sextuples it, which keeps the
/// payload under PostgreSQL's 8,000 bytes.
const PIECE_TEXT_BYTES: usize = 1_200;

/// What one replica tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Notice {
    /// To a generation's owner: a replica wants its pieces (answered by a checkpoint, then
    /// [`Notice::Snapshot`], then [`Notice::Piece`]s).
    Watch { g: Uuid },
    /// To a generation's owner: stop it.
    Stop { g: Uuid },
    /// From the owner: the checkpoint in the database now holds everything before the pieces
    /// that follow.
    Snapshot { g: Uuid },
    /// From the owner: a piece of the answer and where it goes.
    Piece { g: Uuid, at: PieceAt },
    /// From whoever ended the generation: its row holds the end.
    End { g: Uuid },
    /// A cached row or table changed.
    Changed { change: Change },
}

impl Notice {
    /// The generation the notice is about.
    pub fn generation(&self) -> Option<Uuid> {
        match self {
            Notice::Watch { g } | Notice::Stop { g } | Notice::Snapshot { g } | Notice::Piece { g, .. } | Notice::End { g } => {
                Some(*g)
            }
            Notice::Changed { .. } => None,
        }
    }
}

/// A piece of an answer with the lengths of what came before it (bytes of content and of
/// thinking, number of tool calls), so a follower can drop what it has and see what it lacks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PieceAt {
    pub co: usize,
    pub to: usize,
    pub xo: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub c: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub t: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub x: Vec<Value>,
}

impl PieceAt {
    /// The piece as notices small enough for PostgreSQL: long texts are cut at character
    /// boundaries, each part placed after the one before.
    pub fn split(self) -> Vec<PieceAt> {
        if self.c.len() <= PIECE_TEXT_BYTES && self.t.len() <= PIECE_TEXT_BYTES {
            return vec![self];
        }
        let mut parts = Vec::new();
        let (mut co, mut to) = (self.co, self.to);
        for (text, is_content) in [(&self.t, false), (&self.c, true)] {
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let mut cut = rest.len().min(PIECE_TEXT_BYTES);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                let (part, after) = rest.split_at(cut);
                let piece = if is_content {
                    PieceAt { co, to, xo: self.xo, c: part.to_owned(), ..PieceAt::default() }
                } else {
                    PieceAt { co, to, xo: self.xo, t: part.to_owned(), ..PieceAt::default() }
                };
                if is_content {
                    co += part.len()
                } else {
                    to += part.len()
                }
                parts.push(piece);
                rest = after;
            }
        }
        if !self.x.is_empty() {
            parts.push(PieceAt { co, to, xo: self.xo, x: self.x, ..PieceAt::default() });
        }
        parts
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The sending process, which ignores its own notices.
    from: Uuid,
    #[serde(flatten)]
    notice: Notice,
}

/// What the listener hands on.
#[derive(Debug, Clone)]
pub enum Received {
    Notice(Notice),
    /// The listener's connection was lost and is back: notices may have been missed.
    Reconnected,
}

/// The process's side of the bus; cheap to clone.
#[derive(Clone)]
pub struct Bus(Option<Arc<Shared>>);

struct Shared {
    instance: Uuid,
    outbox: mpsc::UnboundedSender<Envelope>,
    /// Generations followed here, by id: their notices go to the follower.
    followers: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Received>>>,
}

impl Bus {
    /// No other replica can exist (SQLite).
    pub fn single() -> Self {
        Bus(None)
    }

    /// A bus over PostgreSQL; notices are sent by a task among `background`'s.
    pub fn shared(pool: PgPool, instance: Uuid, background: &BackgroundTasks) -> Self {
        let (outbox, mut queue) = mpsc::unbounded_channel::<Envelope>();
        background.spawn(async move {
            while let Some(envelope) = queue.recv().await {
                let payload = serde_json::to_string(&envelope).unwrap_or_default();
                let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&payload).execute(&pool).await;
                if let Err(err) = sent {
                    tracing::warn!(error = %err, "a notice to the other replicas was not sent");
                }
            }
        });
        Bus(Some(Arc::new(Shared { instance, outbox, followers: Mutex::default() })))
    }

    /// Whether other replicas may exist.
    pub fn is_shared(&self) -> bool {
        self.0.is_some()
    }

    pub fn publish(&self, notice: Notice) {
        if let Some(shared) = &self.0 {
            let _ = shared.outbox.send(Envelope { from: shared.instance, notice });
        }
    }

    /// Receives the notices about generation `g` until [`Bus::unfollow`]; `None` on SQLite.
    pub fn follow(&self, g: Uuid) -> Option<mpsc::UnboundedReceiver<Received>> {
        let shared = self.0.as_ref()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        shared.followers.lock().unwrap_or_else(PoisonError::into_inner).insert(g, sender);
        Some(receiver)
    }

    pub fn unfollow(&self, g: Uuid) {
        if let Some(shared) = &self.0 {
            shared.followers.lock().unwrap_or_else(PoisonError::into_inner).remove(&g);
        }
    }

    /// Listens for the other replicas' notices on a connection of its own (reconnected when
    /// lost) and hands each one to its generation's follower and to `handle`.
    pub fn spawn_listener(&self, pool: &PgPool, background: &BackgroundTasks, handle: impl Fn(Received) + Send + Sync + 'static) {
        let Some(shared) = self.0.clone() else { return };
        let options = pool.connect_options().as_ref().clone().application_name(LISTENER_APPLICATION_NAME);
        background.spawn(async move {
            let mut connected_before = false;
            let mut pause = Duration::from_millis(100);
            loop {
                let listener = async {
                    let pool = PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(CHANNEL).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                let mut listener = match listener.await {
                    Ok(listener) => listener,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot listen to the other replicas; trying again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                pause = Duration::from_millis(100);
                if connected_before {
                    tracing::info!("listening to the other replicas again; cached rows are dropped");
                    shared.dispatch(Received::Reconnected, &handle);
                }
                connected_before = true;
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => match serde_json::from_str::<Envelope>(notification.payload()) {
                            Ok(envelope) if envelope.from == shared.instance => {}
                            Ok(envelope) => shared.dispatch(Received::Notice(envelope.notice), &handle),
                            Err(err) => tracing::warn!(error = %err, "an unreadable notice from another replica"),
                        },
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(error = %err, "the connection listening to the other replicas failed");
                            break;
                        }
                    }
                }
                tracing::warn!("lost the connection listening to the other replicas; reconnecting");
                // Until it is back, nothing cached can be trusted either.
                handle(Received::Reconnected);
            }
        });
    }
}

impl Shared {
    fn dispatch(&self, received: Received, handle: &impl Fn(Received)) {
        {
            let followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
            match &received {
                Received::Notice(notice) => {
                    if let Some(follower) = notice.generation().and_then(|g| followers.get(&g)) {
                        let _ = follower.send(received.clone());
                    }
                }
                Received::Reconnected => {
                    for follower in followers.values() {
                        let _ = follower.send(Received::Reconnected);
                    }
                }
            }
        }
        handle(received);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_piece_is_cut_into_notices_that_fit_and_follow_each_other() {
        let piece = PieceAt { co: 10, to: 3, xo: 1, c: "é".repeat(2_000), t: "t".repeat(1_500), x: vec![Value::Null] };
        let parts = piece.clone().split();
        let (mut co, mut to) = (10, 3);
        for part in &parts {
            assert_eq!((part.co, part.to, part.xo), (co, to, 1));
            co += part.c.len();
            to += part.t.len();
            let payload = serde_json::to_string(&Envelope {
                from: Uuid::nil(),
                notice: Notice::Piece { g: Uuid::nil(), at: part.clone() },
            });
            assert!(payload.unwrap().len() < 8_000);
        }
        assert_eq!(parts.iter().map(|p| p.c.as_str()).collect::<String>(), piece.c);
        assert_eq!(parts.iter().map(|p| p.t.as_str()).collect::<String>(), piece.t);
        assert_eq!(parts.last().unwrap().x, piece.x);
    }

    #[test]
    fn notices_read_back_as_written() {
        let notice = Notice::Piece { g: Uuid::new_v4(), at: PieceAt { co: 1, c: "hi".into(), ..PieceAt::default() } };
        let text = serde_json::to_string(&Envelope { from: Uuid::nil(), notice: notice.clone() }).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap().notice, notice);
    }
}
