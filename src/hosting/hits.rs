//! Requests for hosted images, counted in memory and written to the
//! database in batches: serving never writes a row.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::ImageKey;
use crate::repo::Hit;

#[derive(Default)]
pub struct Hits {
    map: Mutex<HashMap<ImageKey, (u64, u64)>>,
}

impl Hits {
    pub fn record(&self, key: &ImageKey, now: u64) {
        let mut map = super::lock(&self.map);
        match map.get_mut(key) {
            Some((last, count)) => {
                *last = (*last).max(now);
                *count += 1;
            }
            None => {
                map.insert(key.clone(), (now, 1));
            }
        }
    }

    /// Everything recorded since the last take.
    pub fn take(&self) -> Vec<Hit> {
        let map = std::mem::take(&mut *super::lock(&self.map));
        map.into_iter()
            .map(|(key, (last_ms, count))| Hit {
                key,
                last_ms,
                count,
            })
            .collect()
    }

    /// Takes only one user's hits: they must be in the database before that
    /// user's limit is judged.
    pub fn take_user(&self, user: &crate::ids::UserId) -> Vec<Hit> {
        let mut map = super::lock(&self.map);
        let keys: Vec<ImageKey> = map.keys().filter(|k| &k.user == user).cloned().collect();
        keys.into_iter()
            .filter_map(|key| {
                map.remove(&key).map(|(last_ms, count)| Hit {
                    key,
                    last_ms,
                    count,
                })
            })
            .collect()
    }

    /// Puts back hits that could not be written, for the next flush.
    pub fn restore(&self, hits: Vec<Hit>) {
        let mut map = super::lock(&self.map);
        for h in hits {
            let e = map.entry(h.key).or_insert((0, 0));
            e.0 = e.0.max(h.last_ms);
            e.1 += h.count;
        }
    }

    /// Forgets an image's hits (it was deleted).
    pub fn forget(&self, key: &ImageKey) {
        super::lock(&self.map).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ImageId, UserId};

    #[test]
    fn batches_and_restores() {
        let h = Hits::default();
        let k = ImageKey::new(UserId::parse("u").unwrap(), ImageId::for_source("x"));
        h.record(&k, 5);
        h.record(&k, 3);
        let taken = h.take();
        assert_eq!(
            taken,
            vec![Hit {
                key: k.clone(),
                last_ms: 5,
                count: 2
            }]
        );
        assert!(h.take().is_empty());
        h.record(&k, 9);
        h.restore(taken);
        assert_eq!(
            h.take(),
            vec![Hit {
                key: k,
                last_ms: 9,
                count: 3
            }]
        );
    }
}
