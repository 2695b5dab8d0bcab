//! Which provider answers: a pure ordering of the candidates, so that the rules are read (and
//! tested) in one place.
//!
//! Reachable providers come first, and among them: the chat's provider (the one that gave its
//! last answer: its cache of the conversation is warm), then those that have the model loaded,
//! then the least busy, then the highest priority (then the name, so that the order is stable).
//! Providers set aside for leaving a request without a first token follow the others (in the
//! same order among themselves). Providers in cool-down come last, by priority: they are only
//! tried when nothing else is left.

use std::cmp::Reverse;

/// What routing knows of one provider that may serve a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Answered its last probe and no request failed on it since.
    pub healthy: bool,
    /// Left a request for a loaded model without a first token lately.
    pub stalled: bool,
    /// Gave the chat's last answer.
    pub sticky: bool,
    /// Has the model in memory (`/api/ps`, or it answered with it since).
    pub loaded: bool,
    /// Answers it is generating for this server now.
    pub running: usize,
    pub priority: i32,
}

/// Orders `candidates` best first (see the module's rules).
pub fn order(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name)));
}

fn key(c: &Candidate) -> (bool, bool, bool, bool, usize, Reverse<i32>) {
    if !c.healthy {
        return (true, false, false, false, 0, Reverse(c.priority));
    }
    (false, c.stalled, !c.sticky, !c.loaded, c.running, Reverse(c.priority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> Candidate {
        Candidate { name: name.into(), healthy: true, stalled: false, sticky: false, loaded: false, running: 0, priority: 0 }
    }

    fn ordered(mut candidates: Vec<Candidate>) -> Vec<String> {
        order(&mut candidates);
        candidates.into_iter().map(|c| c.name).collect()
    }

    #[test]
    fn priority_decides_between_equals_and_the_name_between_equal_priorities() {
        let low = Candidate { priority: 1, ..provider("a") };
        let high = Candidate { priority: 5, ..provider("b") };
        assert_eq!(ordered(vec![low.clone(), high]), ["b", "a"]);
        assert_eq!(ordered(vec![provider("z"), provider("m")]), ["m", "z"]);
    }

    #[test]
    fn the_least_busy_wins_over_priority() {
        let busy = Candidate { running: 2, priority: 9, ..provider("busy") };
        let idle = Candidate { running: 0, ..provider("idle") };
        assert_eq!(ordered(vec![busy, idle]), ["idle", "busy"]);
    }

    #[test]
    fn loaded_wins_over_idle_and_priority() {
        let loaded = Candidate { loaded: true, running: 3, ..provider("warm") };
        let cold = Candidate { priority: 9, ..provider("cold") };
        assert_eq!(ordered(vec![cold, loaded]), ["warm", "cold"]);
    }

    #[test]
    fn the_chats_provider_wins_while_it_is_healthy() {
        let sticky = Candidate { sticky: true, running: 4, ..provider("mine") };
        let loaded = Candidate { loaded: true, priority: 9, ..provider("other") };
        assert_eq!(ordered(vec![loaded.clone(), sticky.clone()]), ["mine", "other"]);
        let down = Candidate { healthy: false, ..sticky };
        assert_eq!(ordered(vec![down, loaded]), ["other", "mine"]);
    }

    #[test]
    fn a_stalled_provider_follows_the_others_even_when_it_has_the_chat() {
        let stalled = Candidate { stalled: true, sticky: true, loaded: true, priority: 9, ..provider("stalled") };
        let busy = Candidate { running: 5, ..provider("busy") };
        let down = Candidate { healthy: false, priority: 10, ..provider("down") };
        assert_eq!(ordered(vec![stalled, down, busy]), ["busy", "stalled", "down"]);
    }

    #[test]
    fn providers_in_cool_down_come_last_by_priority() {
        let down_high = Candidate { healthy: false, priority: 9, loaded: true, ..provider("down-high") };
        let down_low = Candidate { healthy: false, priority: 1, ..provider("down-low") };
        let busy = Candidate { running: 10, ..provider("busy") };
        assert_eq!(ordered(vec![down_low, down_high, busy]), ["busy", "down-high", "down-low"]);
    }
}
