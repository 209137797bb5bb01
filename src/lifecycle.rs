//! Storage lifecycle: retention by last request, the per-user limit, the
//! disk cap and the free-space floor. Pure decisions over rows; the engine
//! feeds rows in and applies what comes out, so this module never names it.
//!
//! The plan streams: rows arrive newest request first (the database walks
//! its index in that order), and each is decided on the spot with memory
//! that grows with the number of users, not of images.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::config::LifecycleConfig;
use crate::ids::{ImageKey, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not requested for IMAGE_MAX_AGE_DAYS.
    Expired,
    /// Beyond IMAGE_PER_USER_LIMIT for its user.
    UserLimit,
    /// Stored bytes over IMAGE_STORAGE_MAX_BYTES.
    StorageCap,
    /// Free disk below IMAGE_MIN_FREE_BYTES.
    MinFree,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::UserLimit => "user_limit",
            Reason::StorageCap => "storage_cap",
            Reason::MinFree => "min_free",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub max_age: Duration,
    pub per_user_limit: usize,
    pub max_bytes: Option<u64>,
    pub min_free_bytes: u64,
}

impl Rules {
    /// `volume_bytes`: the size of the volume images live on, when the
    /// store can tell (the default free-space floor is a share of it).
    pub fn from_config(c: &LifecycleConfig, volume_bytes: Option<u64>) -> Rules {
        Rules {
            max_age: c.max_age,
            per_user_limit: c.per_user_limit,
            max_bytes: c.storage_max_bytes,
            min_free_bytes: free_floor(c.min_free_bytes, volume_bytes),
        }
    }
}

/// The default floor's share of the volume, and its ceiling.
const FLOOR_PERCENT: u64 = 5;
const FLOOR_CEILING: u64 = 1 << 30;

/// The free space to keep: the setting when there is one, else 5% of the
/// volume, at most 1 GiB. A share keeps a small volume (Railway's start at
/// 0.5 GB) usable, where a fixed 1 GiB would refuse every image; the
/// ceiling keeps a large shared disk from evicting images to make room for
/// other programs' files. A store that cannot tell its size (S3) has none.
pub fn free_floor(setting: Option<u64>, volume_bytes: Option<u64>) -> u64 {
    match (setting, volume_bytes) {
        (Some(bytes), _) => bytes,
        (None, Some(volume)) => (volume / 100 * FLOOR_PERCENT).min(FLOOR_CEILING),
        (None, None) => 0,
    }
}

/// What a byte bound asks to free now: the larger of the bytes over the cap
/// and the bytes missing to the free-space floor. Zero when within both.
pub fn bytes_to_free(rules: &Rules, stored_bytes: u64, free_bytes: Option<u64>) -> u64 {
    let over_cap = rules
        .max_bytes
        .map_or(0, |cap| stored_bytes.saturating_sub(cap));
    let under_floor = free_bytes.map_or(0, |free| rules.min_free_bytes.saturating_sub(free));
    over_cap.max(under_floor)
}

/// What the plan needs to know of one stored image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key: ImageKey,
    /// Its bytes, variants included: deleting it frees all of them.
    pub size: u64,
    pub requested_at: u64,
    /// Filed under an id from a trusted source: only such images count
    /// against the per-user limit, and only they can be evicted by it.
    pub trusted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deletion {
    pub user_id: String,
    pub id: String,
    pub size_bytes: u64,
    pub reason: Reason,
}

/// Decides, row by row, newest request first. Rules apply in order
/// (retention, per-user limit, then the byte budget), each to what the
/// previous ones kept; an image goes if any rule says so, reported with
/// the first rule that did.
pub struct Planner {
    max_age_ms: u64,
    per_user_limit: usize,
    now: u64,
    per_user: HashMap<UserId, usize>,
    kept_bytes: u64,
    cap: Option<u64>,
    /// Bytes that may stay so free space reaches the floor.
    free_budget: Option<u64>,
    /// Once the budget cuts one image, every older one goes too: the budget
    /// evicts strictly by last request, never filling gaps with older ones.
    cut: Option<Reason>,
}

impl Planner {
    /// `total_bytes`: everything stored now. `free_bytes`: free space where
    /// it lives, when the backend can tell.
    pub fn new(rules: &Rules, now: u64, total_bytes: u64, free_bytes: Option<u64>) -> Planner {
        let deficit = free_bytes
            .filter(|_| rules.min_free_bytes > 0)
            .map(|free| rules.min_free_bytes.saturating_sub(free));
        Planner {
            max_age_ms: u64::try_from(rules.max_age.as_millis()).unwrap_or(u64::MAX),
            per_user_limit: rules.per_user_limit,
            now,
            per_user: HashMap::new(),
            kept_bytes: 0,
            cap: rules.max_bytes,
            free_budget: deficit
                .filter(|d| *d > 0)
                .map(|d| total_bytes.saturating_sub(d)),
            cut: None,
        }
    }

    pub fn decide(&mut self, c: &Candidate) -> Option<Reason> {
        if self.now.saturating_sub(c.requested_at) >= self.max_age_ms {
            return Some(Reason::Expired);
        }
        if self.per_user_limit > 0 && c.trusted {
            let n = self.per_user.entry(c.key.user.clone()).or_default();
            *n += 1;
            if *n > self.per_user_limit {
                return Some(Reason::UserLimit);
            }
        }
        if let Some(reason) = self.cut {
            return Some(reason);
        }
        let kept = self.kept_bytes + c.size;
        if self.cap.is_some_and(|cap| kept > cap) {
            self.cut = Some(Reason::StorageCap);
        } else if self.free_budget.is_some_and(|b| kept > b) {
            self.cut = Some(Reason::MinFree);
        } else {
            self.kept_bytes = kept;
        }
        self.cut
    }
}

/// The whole plan over a set of rows, in any order.
pub fn plan(
    mut rows: Vec<Candidate>,
    now: u64,
    rules: &Rules,
    free_bytes: Option<u64>,
) -> Vec<(Candidate, Reason)> {
    sort_newest_first(&mut rows);
    let total = rows.iter().map(|r| r.size).sum();
    let mut planner = Planner::new(rules, now, total, free_bytes);
    rows.into_iter()
        .filter_map(|r| planner.decide(&r).map(|reason| (r, reason)))
        .collect()
}

/// The order the planner expects, as the database walks it: newest request
/// first, ties by key.
pub fn sort_newest_first(rows: &mut [Candidate]) {
    rows.sort_by(|a, b| {
        b.requested_at
            .cmp(&a.requested_at)
            .then_with(|| a.key.user.cmp(&b.key.user))
            .then_with(|| a.key.id.cmp(&b.key.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ImageId;

    fn row(user: &str, n: u32, size: u64, accessed: u64) -> Candidate {
        Candidate {
            key: ImageKey::new(
                UserId::parse(user).unwrap(),
                ImageId::for_source(&n.to_string()),
            ),
            size,
            requested_at: accessed,
            trusted: true,
        }
    }

    fn rules() -> Rules {
        Rules {
            max_age: Duration::from_secs(100),
            per_user_limit: 2,
            max_bytes: None,
            min_free_bytes: 0,
        }
    }

    #[test]
    fn retention_by_last_request() {
        let rows = vec![row("a", 1, 10, 1_000), row("a", 2, 10, 150_000)];
        let out = plan(rows, 200_000, &rules(), None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Reason::Expired);
        assert_eq!(out[0].0.requested_at, 1_000);
    }

    #[test]
    fn user_limit_evicts_least_recently_requested() {
        // Image 1 is the oldest stored but the most recently requested.
        let rows = vec![
            row("a", 1, 10, 190_000),
            row("a", 2, 10, 150_000),
            row("a", 3, 10, 160_000),
            row("b", 4, 10, 100_500),
        ];
        let out = plan(rows, 200_000, &rules(), None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Reason::UserLimit);
        assert_eq!(out[0].0.key.id, ImageId::for_source("2"));
    }

    #[test]
    fn finding_01_untrusted_images_are_never_evicted_by_the_user_limit() {
        let claimed = |n, at| Candidate {
            trusted: false,
            ..row("a", n, 10, at)
        };
        // Two trusted images fill the limit; three claimed ones are neither
        // counted nor evicted, however recently they were requested.
        let rows = vec![
            claimed(1, 199_000),
            claimed(2, 198_000),
            row("a", 3, 10, 197_000),
            claimed(4, 196_000),
            row("a", 5, 10, 195_000),
            row("a", 6, 10, 194_000),
        ];
        let out = plan(rows, 200_000, &rules(), None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.key.id, ImageId::for_source("6"));
        assert_eq!(out[0].1, Reason::UserLimit);
    }

    #[test]
    fn the_default_floor_is_a_share_of_the_volume_with_a_ceiling() {
        assert_eq!(free_floor(None, Some(500_000_000)), 25_000_000);
        assert_eq!(free_floor(None, Some(250 << 30)), 1 << 30);
        assert_eq!(free_floor(None, None), 0);
        assert_eq!(free_floor(Some(0), Some(250 << 30)), 0);
        assert_eq!(free_floor(Some(7), None), 7);
    }

    #[test]
    fn bytes_to_free_takes_the_larger_deficit() {
        let mut r = rules();
        r.max_bytes = Some(100);
        r.min_free_bytes = 50;
        assert_eq!(bytes_to_free(&r, 90, Some(60)), 0);
        assert_eq!(bytes_to_free(&r, 130, Some(60)), 30);
        assert_eq!(bytes_to_free(&r, 90, Some(10)), 40);
        assert_eq!(bytes_to_free(&r, 130, None), 30);
    }

    #[test]
    fn storage_cap_and_min_free() {
        let mut r = rules();
        r.per_user_limit = 0;
        r.max_bytes = Some(25);
        let rows = vec![
            row("a", 1, 10, 199_000),
            row("b", 2, 10, 198_000),
            row("c", 3, 10, 197_000),
        ];
        let out = plan(rows.clone(), 200_000, &r, None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Reason::StorageCap);
        assert_eq!(out[0].0.key.id, ImageId::for_source("3"));

        r.max_bytes = None;
        r.min_free_bytes = 100;
        let out = plan(rows, 200_000, &r, Some(85));
        assert_eq!(
            out.iter().map(|d| d.1).collect::<Vec<_>>(),
            vec![Reason::MinFree, Reason::MinFree]
        );
    }

    #[test]
    fn the_budget_cuts_by_age_without_filling_gaps() {
        let mut r = rules();
        r.per_user_limit = 0;
        r.max_bytes = Some(100);
        // 60 + 50 > 100: the 50 goes, and so does the older 5 that would fit.
        let rows = vec![
            row("a", 1, 60, 199_000),
            row("a", 2, 50, 198_000),
            row("a", 3, 5, 197_000),
        ];
        let out = plan(rows, 200_000, &r, None);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|d| d.1 == Reason::StorageCap));
    }

    #[test]
    fn expired_images_count_toward_free_space() {
        let mut r = rules();
        r.per_user_limit = 0;
        r.min_free_bytes = 100;
        // Free 80, floor 100: 20 to free, and the expired image frees 30.
        let rows = vec![row("a", 1, 50, 199_000), row("a", 2, 30, 1_000)];
        let out = plan(rows, 200_000, &r, Some(80));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Reason::Expired);
    }
}
