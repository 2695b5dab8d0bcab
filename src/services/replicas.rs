//! Generations across replicas sharing one database (PostgreSQL; on SQLite there is one
//! process, and only the heartbeat and the recovery below apply).
//!
//! - Every generation's row says who owns it; the owner writes a heartbeat every second and,
//!   while the answer grows, a checkpoint of it.
//! - A replica asked to stop a chat's generation it does not own tells the owner (a notice).
//! - A replica asked to stream a generation it does not own makes a *mirror*: a local
//!   [`Generation`] fed by the owner's notices (asked for with `Watch`: the owner saves a
//!   checkpoint, says so, then sends every new piece with its offsets), so the routes stream it
//!   like a local one. Offsets make pieces idempotent: the mirror keeps only what it lacks and
//!   asks again when something is missing. It polls the row too, so a lost notice or a dead
//!   owner cannot leave it hanging.
//! - A generation whose heartbeat has not changed for `GENERATION_HEARTBEAT_TIMEOUT_SECS` (by the
//!   observing replica's clock: replicas' clocks need not agree) is ended as `interrupted` by
//!   whichever replica notices first (the database lets one of them do it), and its checkpoint
//!   becomes the answer.

use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use super::generation::{Answer, EndStatus, Ending, Generation, GenerationError, Generations};
use super::ServiceResult;
use crate::background::BackgroundTasks;
use crate::cluster::{Notice, PieceAt, Received};
use crate::store::generations::{EndWritten, EndedBy, GenerationEnd, GenerationRow};
use crate::store::{self};

/// How often the owner writes its heartbeat and checkpoints, and a mirror reads the row.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a mirror waits for the owner's answer to `Watch` before it reads the checkpoint
/// the owner saved last.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(1);

impl Generations {
    /// The heartbeat and checkpoints of this process's generations, and the recovery of dead
    /// replicas' generations (at start, then every third of the timeout).
    pub fn spawn_upkeep(&self, background: &BackgroundTasks) {
        let this = self.clone();
        background.every_awaiting(HEARTBEAT, move || {
            let this = this.clone();
            async move { this.beat().await }
        });
        let this = self.clone();
        let period = (self.limits().heartbeat_timeout / 3).max(HEARTBEAT);
        background.spawn(async move {
            loop {
                this.recover_dead().await;
                tokio::time::sleep(period).await;
            }
        });
    }

    async fn beat(&self) {
        let running: Vec<Arc<Generation>> =
            self.running.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        if running.is_empty() {
            return;
        }
        if let Err(err) = self.store.beat_heart(self.instance, store::now()).await {
            tracing::warn!(error = %err, "writing the generations' heartbeat failed");
        }
        for generation in running.iter().filter(|g| g.chat_id.is_some()) {
            if let Some((answer, pieces)) = generation.checkpoint_due() {
                self.save_checkpoint(generation, &answer, pieces).await;
            }
        }
    }

    async fn save_checkpoint(&self, generation: &Generation, answer: &Answer, pieces: u64) -> bool {
        let checkpoint = serde_json::to_string(answer).unwrap_or_default();
        match self.store.save_checkpoint(generation.id, &checkpoint, i64::try_from(pieces).unwrap_or(i64::MAX)).await {
            Ok(()) => {
                generation.checkpoint_saved(pieces);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, generation_id = %generation.id, "saving the answer's checkpoint failed");
                false
            }
        }
    }

    async fn recover_dead(&self) {
        let rows = match self.store.others_running_generations(self.instance).await {
            Ok(rows) => rows,
            Err(err) => return tracing::warn!(error = %err, "looking for generations of stopped servers failed"),
        };
        self.heartbeats_seen.lock().unwrap_or_else(PoisonError::into_inner).retain(|id, _| rows.iter().any(|row| row.id == *id));
        for row in rows {
            if self.is_stale(&row) {
                self.recover(row).await;
            }
        }
    }

    /// Ends a dead replica's generation as `interrupted`, keeping its checkpoint as the answer
    /// (unless another replica did it first).
    pub(super) async fn recover(&self, row: GenerationRow) {
        let answer: Answer = row.checkpoint.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
        let ending = Ending {
            status: EndStatus::Interrupted,
            message: None,
            chat_title: None,
            final_chunk: None,
            error: Some(GenerationError::ServerLost),
            produced_anything: answer.produced_anything(),
        };
        let now = store::now();
        let end = GenerationEnd {
            id: row.id,
            status: EndStatus::Interrupted.as_str().into(),
            provider: None,
            ended_at: now,
            first_token_ms: row.first_token_ms,
            duration_ms: Some((now - row.started_at).num_milliseconds()),
            prompt_tokens: 0,
            completion_tokens: row.checkpoint_pieces,
            detail: Some(GenerationError::ServerLost.to_string()),
            by: EndedBy::Recovery { unchanged_heartbeat: row.heartbeat_at },
        };
        let new = match (row.chat_id, answer.produced_anything()) {
            (Some(chat_id), true) => Some((chat_id, self.answer_message(&row.model, answer, &ending).await)),
            _ => None,
        };
        if let Some(EndWritten::Ended(message)) =
            self.write_end(&end, new.as_ref().map(|(chat, new)| (row.user_id, *chat, new))).await
        {
            tracing::warn!(
                generation_id = %row.id, chat_id = ?row.chat_id, owner = ?row.owner_instance, stored = message.is_some(),
                "the server of a generation stopped; its last checkpoint is stored as interrupted"
            );
            self.bus.publish(Notice::End { g: row.id });
        }
    }

    /// What another replica asks of this one's generations.
    pub fn on_notice(&self, received: &Received) {
        let Received::Notice(notice) = received else { return };
        let Some(generation) = notice.generation().and_then(|g| self.owned(g)) else { return };
        match notice {
            Notice::Stop { .. } => generation.stop(),
            Notice::Watch { .. } => {
                let this = self.clone();
                self.tasks.spawn(async move {
                    let (answer, pieces) = generation.forward_to(&this.bus);
                    if this.save_checkpoint(&generation, &answer, pieces).await {
                        this.bus.publish(Notice::Snapshot { g: generation.id });
                    }
                });
            }
            _ => {}
        }
    }

    fn owned(&self, id: Uuid) -> Option<Arc<Generation>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).values().find(|g| g.id == id).cloned()
    }

    /// The chat's running generation of this user, wherever it runs: this process's own, or
    /// a mirror of another replica's.
    pub async fn find_running(&self, user_id: Uuid, chat_id: Uuid) -> ServiceResult<Option<Arc<Generation>>> {
        if let Some(generation) = self.running(user_id, chat_id) {
            return Ok(Some(generation));
        }
        if !self.bus.is_shared() {
            return Ok(None);
        }
        let row = self.store.running_generation(chat_id).await?;
        Ok(row.filter(|row| row.user_id == user_id && row.owner_instance != Some(self.instance)).map(|row| self.mirror(row)))
    }

    /// Stops the chat's generation wherever it runs; returns it (or its mirror) so the caller
    /// can wait for its end.
    pub async fn stop(&self, user_id: Uuid, chat_id: Uuid) -> ServiceResult<Option<Arc<Generation>>> {
        let found = self.find_running(user_id, chat_id).await?;
        if let Some(generation) = &found {
            self.stop_generation(generation);
        }
        Ok(found)
    }

    /// Stops the user's generations in these chats wherever they run, without waiting.
    pub async fn stop_in_chats(&self, user_id: Uuid, chat_ids: &[Uuid]) -> ServiceResult<()> {
        let mut elsewhere = Vec::new();
        for chat_id in chat_ids {
            match self.running(user_id, *chat_id) {
                Some(generation) => generation.stop(),
                None => elsewhere.push(*chat_id),
            }
        }
        if self.bus.is_shared() && !elsewhere.is_empty() {
            for row in self.store.running_generations_of(user_id).await? {
                if row.chat_id.is_some_and(|chat_id| elsewhere.contains(&chat_id)) {
                    self.bus.publish(Notice::Stop { g: row.id });
                }
            }
        }
        Ok(())
    }

    fn stop_generation(&self, generation: &Generation) {
        if generation.is_mirror() {
            self.bus.publish(Notice::Stop { g: generation.id });
        } else {
            generation.stop();
        }
    }

    /// The mirror of another replica's generation (one per generation in this process, alive
    /// while someone here watches it).
    fn mirror(&self, row: GenerationRow) -> Arc<Generation> {
        let mut mirrors = self.mirrors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mirror) = mirrors.get(&row.id).and_then(Weak::upgrade) {
            return mirror;
        }
        mirrors.retain(|_, mirror| mirror.strong_count() > 0);
        let mirror = Arc::new(Generation::mirror_of(&row));
        mirrors.insert(row.id, Arc::downgrade(&mirror));
        if let Some(notices) = self.bus.follow(row.id) {
            let this = self.clone();
            let followed = Arc::downgrade(&mirror);
            self.tasks.spawn(async move { this.follow(followed, row, notices).await });
        }
        mirror
    }

    /// Feeds a mirror until its generation ends or nobody here watches it any more.
    async fn follow(&self, mirror: Weak<Generation>, row: GenerationRow, mut notices: UnboundedReceiver<Received>) {
        let id = row.id;
        self.bus.publish(Notice::Watch { g: id });
        let mut asked_at = Instant::now();
        let mut caught_up = false;
        let mut waiting: Vec<PieceAt> = Vec::new();
        let mut polls = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            let received = tokio::select! {
                received = notices.recv() => received,
                _ = polls.tick() => None,
            };
            let Some(generation) = mirror.upgrade() else { break };
            let ended_row = match received {
                Some(Received::Reconnected) => {
                    self.bus.publish(Notice::Watch { g: id });
                    (caught_up, asked_at) = (false, Instant::now());
                    continue;
                }
                Some(Received::Notice(Notice::Snapshot { .. })) => {
                    caught_up = self.catch_up(&generation, &mut waiting).await;
                    continue;
                }
                Some(Received::Notice(Notice::Piece { at, .. })) => {
                    if caught_up && generation.apply_remote(&at) {
                        continue;
                    }
                    waiting.push(at);
                    if caught_up {
                        // A piece went missing: ask for everything again.
                        self.bus.publish(Notice::Watch { g: id });
                        (caught_up, asked_at) = (false, Instant::now());
                    }
                    continue;
                }
                Some(Received::Notice(Notice::End { .. })) | None => match self.store.generation(id).await {
                    Ok(Some(row)) if row.status != "running" => row,
                    Ok(Some(row)) if self.is_stale(&row) => {
                        self.recover(row).await;
                        continue;
                    }
                    Ok(Some(_)) => {
                        if !caught_up && asked_at.elapsed() >= SNAPSHOT_WAIT {
                            // No answer from the owner: go on from its last checkpoint.
                            caught_up = self.catch_up(&generation, &mut waiting).await;
                        }
                        continue;
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, generation_id = %id, "reading another replica's generation failed");
                        continue;
                    }
                },
                Some(Received::Notice(_)) => continue,
            };
            self.end_mirror(&generation, ended_row).await;
            break;
        }
        self.bus.unfollow(id);
    }

    /// Adds the saved checkpoint, then the pieces that came meanwhile; false while something
    /// is still missing.
    async fn catch_up(&self, mirror: &Generation, waiting: &mut Vec<PieceAt>) -> bool {
        let checkpoint = match self.store.generation(mirror.id).await {
            Ok(row) => row.and_then(|row| row.checkpoint),
            Err(err) => {
                tracing::warn!(error = %err, generation_id = %mirror.id, "reading another replica's checkpoint failed");
                return false;
            }
        };
        if let Some(answer) = checkpoint.as_deref().and_then(|c| serde_json::from_str::<Answer>(c).ok()) {
            mirror.apply_remote(&whole(answer));
        }
        let mut complete = true;
        waiting.retain(|at| {
            let applied = complete && mirror.apply_remote(at);
            complete &= applied;
            !applied
        });
        complete
    }

    /// Ends the mirror as its row ended: the stored answer (whatever the mirror missed of it
    /// is added first), the chat's title, and why.
    async fn end_mirror(&self, mirror: &Generation, row: GenerationRow) {
        let message = match (row.chat_id, row.message_id) {
            (Some(chat_id), Some(message_id)) => self.store.chat_message(chat_id, message_id).await.ok().flatten(),
            _ => None,
        };
        if let Some(message) = &message {
            let tool_calls = message.tool_calls.as_ref().and_then(|v| v.as_array().cloned()).unwrap_or_default();
            let stored =
                Answer { content: message.content.clone(), thinking: message.thinking.clone().unwrap_or_default(), tool_calls };
            mirror.apply_remote(&whole(stored));
        }
        let status = EndStatus::from_row(&row.status).unwrap_or(EndStatus::Failed);
        let error = match status {
            EndStatus::Interrupted => Some(GenerationError::ServerLost),
            EndStatus::Failed => Some(GenerationError::Elsewhere(row.detail.clone().unwrap_or_default())),
            _ => None,
        };
        let chat_title = match row.chat_id {
            Some(chat_id) => self.store.user_chat(row.user_id, chat_id).await.ok().flatten().and_then(|chat| chat.title),
            None => None,
        };
        let produced_anything = mirror.answer().produced_anything();
        mirror.publish_end(Ending { status, message, chat_title, final_chunk: None, error, produced_anything });
    }
}

/// A whole answer as a piece placed at the start.
fn whole(answer: Answer) -> PieceAt {
    PieceAt { co: 0, to: 0, xo: 0, c: answer.content, t: answer.thinking, x: answer.tool_calls }
}
