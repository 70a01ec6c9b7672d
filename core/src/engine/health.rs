//! Origin health: healthy, degraded or unhealthy, with hysteresis.
//!
//! Health is learned from two sources: periodic checks (each bounded by a
//! timeout, all origins checked in parallel by the io-shell) and the results
//! of real fetches. One failure makes an origin *degraded* (still used, but
//! checked more often); several in a row make it *unhealthy* (not used for
//! fetches, checked with a growing pause); it must succeed more than once to
//! be trusted again, so a flapping origin does not flap the routing.
//!
//! An unhealthy origin is never empty: its tracks stay in the tree and its
//! cached chunks keep playing. Only new fetches avoid it.

use crate::ids::OriginId;
use crate::time::Time;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How an origin is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Answering; preferred for fetches.
    Healthy,
    /// Failed recently; used only when no healthy origin holds the file.
    Degraded,
    /// Failed repeatedly; not used for fetches until checks pass again.
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// Tunables of the health monitor.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    /// Pause between checks of a healthy origin.
    pub check_interval: Duration,
    /// A check not answered by then counts as a failure.
    pub check_timeout: Duration,
    /// Consecutive failures that make a degraded origin unhealthy.
    pub unhealthy_after_failures: u32,
    /// Consecutive successes that make a degraded origin healthy again.
    pub healthy_after_successes: u32,
    /// First pause between checks of an unhealthy origin; doubles.
    pub dead_backoff_base: Duration,
    /// Longest pause between checks of an unhealthy origin.
    pub dead_backoff_max: Duration,
    /// A read that needs an unhealthy origin asks for a check at once, but
    /// at most this often: an outage answers EIO quickly, a recovery is
    /// noticed by the next reader instead of after the backoff.
    pub on_demand_gap: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check_interval: Duration::from_secs(30),
            check_timeout: Duration::from_secs(5),
            unhealthy_after_failures: 3,
            healthy_after_successes: 2,
            dead_backoff_base: Duration::from_secs(5),
            dead_backoff_max: Duration::from_secs(300),
            on_demand_gap: Duration::from_secs(2),
        }
    }
}

/// Identifies one health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckId(pub u64);

/// What `musicfs status` shows of one origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginStatus {
    /// The origin.
    pub origin: OriginId,
    /// Its health.
    pub health: Health,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The last error seen, if the last result was a failure.
    pub last_error: Option<String>,
}

#[derive(Clone, Debug)]
struct Entry {
    health: Health,
    failures: u32,
    successes: u32,
    /// Checks made while unhealthy (sets the pause).
    dead_checks: u32,
    next_check: Time,
    in_flight: Option<(CheckId, Time)>,
    last_check_end: Option<Time>,
    last_error: Option<String>,
}

/// The health of every origin.
#[derive(Clone, Debug)]
pub struct HealthTable {
    config: HealthConfig,
    origins: BTreeMap<OriginId, Entry>,
    next_check_id: u64,
}

/// A change of health, to be logged once.
pub type Transition = (OriginId, Health, Health);

impl HealthTable {
    /// An empty table.
    pub fn new(config: HealthConfig) -> HealthTable {
        HealthTable {
            config,
            origins: BTreeMap::new(),
            next_check_id: 1,
        }
    }

    /// Starts tracking `origin` (healthy until shown otherwise), with a
    /// first check at `first_check`.
    pub fn track(&mut self, origin: OriginId, first_check: Time) {
        self.origins.entry(origin).or_insert(Entry {
            health: Health::Healthy,
            failures: 0,
            successes: 0,
            dead_checks: 0,
            next_check: first_check,
            in_flight: None,
            last_check_end: None,
            last_error: None,
        });
    }

    /// The health of `origin` (untracked origins are presumed healthy).
    pub fn health(&self, origin: OriginId) -> Health {
        self.origins
            .get(&origin)
            .map_or(Health::Healthy, |e| e.health)
    }

    /// Every tracked origin's status.
    pub fn statuses(&self) -> Vec<OriginStatus> {
        self.origins
            .iter()
            .map(|(&origin, e)| OriginStatus {
                origin,
                health: e.health,
                consecutive_failures: e.failures,
                last_error: e.last_error.clone(),
            })
            .collect()
    }

    /// Records one success or failure (of a check or a real fetch).
    pub fn record(
        &mut self,
        now: Time,
        origin: OriginId,
        result: Result<(), &str>,
    ) -> Option<Transition> {
        let config = self.config.clone();
        let e = self.origins.get_mut(&origin)?;
        let before = e.health;
        match result {
            Ok(()) => {
                e.failures = 0;
                e.successes = e.successes.saturating_add(1);
                e.last_error = None;
                e.health = match e.health {
                    Health::Unhealthy => Health::Degraded,
                    Health::Degraded if e.successes >= config.healthy_after_successes => {
                        Health::Healthy
                    }
                    other => other,
                };
            }
            Err(why) => {
                e.successes = 0;
                e.failures = e.failures.saturating_add(1);
                e.last_error = Some(why.to_owned());
                e.health = match e.health {
                    Health::Healthy => Health::Degraded,
                    Health::Degraded if e.failures >= config.unhealthy_after_failures => {
                        Health::Unhealthy
                    }
                    other => other,
                };
            }
        }
        if e.health != Health::Unhealthy {
            e.dead_checks = 0;
        }
        if e.health != before {
            // Look again soon after any change; a dead origin on its backoff.
            e.next_check = now + next_pause(&config, e);
            return Some((origin, before, e.health));
        }
        None
    }

    /// A reader needs `origin`: check it now unless it was checked very
    /// recently. Returns whether a check is (now) on its way.
    pub fn check_on_demand(&mut self, now: Time, origin: OriginId) -> bool {
        let gap = self.config.on_demand_gap;
        let Some(e) = self.origins.get_mut(&origin) else {
            return false;
        };
        if e.in_flight.is_some() {
            return true;
        }
        if e.last_check_end.is_some_and(|t| t + gap > now) {
            return false;
        }
        e.next_check = e.next_check.min(now);
        true
    }

    /// Origins whose check is due: each is marked in flight and returned
    /// with the id its result must carry.
    pub fn due_checks(&mut self, now: Time) -> Vec<(OriginId, CheckId)> {
        let mut out = Vec::new();
        for (&origin, e) in &mut self.origins {
            if e.in_flight.is_none() && e.next_check <= now {
                let id = CheckId(self.next_check_id);
                self.next_check_id += 1;
                e.in_flight = Some((id, now + self.config.check_timeout));
                out.push((origin, id));
            }
        }
        out
    }

    /// The result of a check. A result for a check that already timed out,
    /// or that is not the one in flight, is ignored.
    pub fn check_done(
        &mut self,
        now: Time,
        origin: OriginId,
        check: CheckId,
        result: Result<(), &str>,
    ) -> Option<Transition> {
        let e = self.origins.get_mut(&origin)?;
        if e.in_flight.map(|(id, _)| id) != Some(check) {
            return None;
        }
        e.in_flight = None;
        self.finish_check(now, origin, result)
    }

    fn finish_check(
        &mut self,
        now: Time,
        origin: OriginId,
        result: Result<(), &str>,
    ) -> Option<Transition> {
        let transition = self.record(now, origin, result);
        let config = self.config.clone();
        if let Some(e) = self.origins.get_mut(&origin) {
            e.last_check_end = Some(now);
            if e.health == Health::Unhealthy {
                e.dead_checks = e.dead_checks.saturating_add(1);
            }
            e.next_check = now + next_pause(&config, e);
        }
        transition
    }

    /// Checks past their timeout count as failures.
    pub fn expire(&mut self, now: Time) -> Vec<Transition> {
        let late: Vec<OriginId> = self
            .origins
            .iter()
            .filter(|(_, e)| e.in_flight.is_some_and(|(_, deadline)| deadline <= now))
            .map(|(&o, _)| o)
            .collect();
        let mut out = Vec::new();
        for origin in late {
            if let Some(e) = self.origins.get_mut(&origin) {
                e.in_flight = None;
            }
            out.extend(self.finish_check(now, origin, Err("health check timed out")));
        }
        out
    }

    /// When the next check is due or the next in-flight check times out.
    pub fn next_timer(&self) -> Option<Time> {
        self.origins
            .values()
            .map(|e| match e.in_flight {
                Some((_, deadline)) => deadline,
                None => e.next_check,
            })
            .min()
    }
}

fn next_pause(config: &HealthConfig, e: &Entry) -> Duration {
    match e.health {
        Health::Healthy => config.check_interval,
        Health::Degraded => config.check_interval / 4,
        Health::Unhealthy => {
            let exp = config
                .dead_backoff_base
                .saturating_mul(1u32 << e.dead_checks.min(16).saturating_sub(1));
            exp.min(config.dead_backoff_max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: OriginId = OriginId(0);

    fn table() -> HealthTable {
        let mut t = HealthTable::new(HealthConfig::default());
        t.track(O, Time::ZERO);
        t
    }

    #[test]
    fn failures_degrade_then_kill_and_successes_heal_with_hysteresis() {
        let mut t = table();
        let now = Time::from_millis(1);
        assert_eq!(
            t.record(now, O, Err("x")),
            Some((O, Health::Healthy, Health::Degraded))
        );
        assert_eq!(t.record(now, O, Err("x")), None);
        assert_eq!(
            t.record(now, O, Err("x")),
            Some((O, Health::Degraded, Health::Unhealthy))
        );
        assert_eq!(
            t.record(now, O, Ok(())),
            Some((O, Health::Unhealthy, Health::Degraded))
        );
        assert_eq!(
            t.record(now, O, Err("x")),
            None,
            "one failure keeps it degraded"
        );
        assert_eq!(t.record(now, O, Ok(())), None, "one success is not enough");
        assert_eq!(
            t.record(now, O, Ok(())),
            Some((O, Health::Degraded, Health::Healthy))
        );
    }

    #[test]
    fn a_check_that_never_answers_fails_at_its_timeout() {
        let mut t = table();
        let checks = t.due_checks(Time::ZERO);
        assert_eq!(checks.len(), 1);
        assert!(
            t.due_checks(Time::ZERO).is_empty(),
            "one check in flight at a time"
        );
        assert_eq!(t.next_timer(), Some(Time::ZERO + Duration::from_secs(5)));
        let changed = t.expire(Time::ZERO + Duration::from_secs(5));
        assert_eq!(changed, vec![(O, Health::Healthy, Health::Degraded)]);
        // A late answer to the expired check is ignored.
        assert_eq!(
            t.check_done(Time::from_millis(6000), O, checks[0].1, Ok(())),
            None
        );
        assert_eq!(t.health(O), Health::Degraded);
    }

    #[test]
    fn dead_origins_are_checked_with_a_growing_pause() {
        let mut t = table();
        let mut now = Time::ZERO;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            let (_, id) = t.due_checks(now)[0];
            t.check_done(now, O, id, Err("down"));
            let next = t.next_timer().unwrap();
            pauses.push(next.saturating_since(now));
            now = next;
        }
        assert_eq!(t.health(O), Health::Unhealthy);
        let dead: Vec<u64> = pauses[2..].iter().map(|d| d.as_secs()).collect();
        assert_eq!(dead, vec![5, 10, 20, 40, 80, 160]);
        // A reader may ask for a check now, but not twice in a row.
        assert!(t.check_on_demand(now + Duration::from_secs(3), O));
        assert_eq!(t.due_checks(now + Duration::from_secs(3)).len(), 1);
        let later = now + Duration::from_secs(4);
        let (_, id) = (O, CheckId(t.next_check_id - 1));
        t.check_done(later, O, id, Err("still down"));
        assert!(
            !t.check_on_demand(later + Duration::from_secs(1), O),
            "rate limited"
        );
        assert!(t.check_on_demand(later + Duration::from_secs(2), O));
    }
}
