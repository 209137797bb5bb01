//! Which hosted URLs a response may carry. A hosted URL leaves the proxy
//! only when its row is committed (pending or stored), so a crash at any
//! later point still finds it; everything else keeps its original URL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::FutureExt;

use super::download::Job;
use super::Hosting;
use crate::clock::{ms, now_ms, rfc3339};
use crate::config::{PersistMode, SigningConfig};
use crate::ids::{ImageId, ImageKey, Owner, UserId};
use crate::image_format::Format;
use crate::metrics;
use crate::repo::{HandOut, ImageRecord, ImageState, NewImage};
use crate::rewrite::Replacement;
use crate::sources::Source;
use crate::store::ImageMeta;

/// What happens to one source of the response.
enum Plan {
    Ready(Replacement),
    Wait(Job),
    HandOutPending(ImageKey),
    Keep,
}

/// Each distinct source of a response once, with the key it is hosted under.
pub(super) fn keyed(
    user: &UserId,
    sources: Vec<(String, Source)>,
) -> Vec<(String, Source, ImageKey)> {
    let mut seen = HashSet::new();
    sources
        .into_iter()
        .filter(|(v, _)| seen.insert(v.clone()))
        .map(|(v, s)| {
            let key = ImageKey::new(user.clone(), ImageId::for_source(&v));
            (v, s, key)
        })
        .collect()
}

/// The rows a hand-out commits: URL sources only (a `data:` URI carries its
/// bytes, so there is nothing to download again after a crash).
pub(super) fn new_images(keyed: &[(String, Source, ImageKey)]) -> Vec<NewImage> {
    keyed
        .iter()
        .filter(|(_, s, _)| matches!(s, Source::Url(_)))
        .map(|(v, _, k)| NewImage {
            key: k.clone(),
            source_url: v.clone(),
            format: guess_format(v),
        })
        .collect()
}

impl Hosting {
    /// Hosts the sources of one response. Returns a replacement for every
    /// source whose hosted URL is safe to hand out; the rest keep theirs.
    pub async fn host_sources(
        self: &Arc<Self>,
        owner: &Owner,
        sources: Vec<(String, Source)>,
        prediction_id: Option<String>,
        base: &str,
    ) -> HashMap<String, Replacement> {
        let now = now_ms();
        let keyed = keyed(&owner.user, sources);
        let urls = Urls {
            base,
            signing: &self.cfg.signing,
        };
        let rows = self
            .commit_rows(&keyed, &prediction_id, owner.trusted, now)
            .await;
        let mut out = HashMap::new();
        let mut waits = Vec::new();
        for (value, source, key) in keyed {
            let job = Job {
                key: key.clone(),
                source: value.clone(),
                prediction_id: prediction_id.clone(),
                handed_out_at: now,
                trusted: owner.trusted,
            };
            match self.plan_one(&source, rows.get(&value), job, &urls) {
                Plan::Ready(r) => {
                    out.insert(value, r);
                }
                Plan::Wait(job) => waits.push((value, job.key.clone(), self.ensure(job))),
                Plan::HandOutPending(key) => {
                    out.insert(value.clone(), pending_replacement(&urls, &key, &value, now));
                }
                Plan::Keep => {}
            }
        }
        let all = futures::future::join_all(waits.iter().map(|w| w.2.clone()));
        let _ = tokio::time::timeout(self.cfg.persist.timeout, all).await;
        for (value, key, fut) in waits {
            match fut.now_or_never() {
                Some(Ok(meta)) => {
                    out.insert(value, replacement(&urls, &meta));
                }
                Some(Err(_)) => {}
                // Still downloading after the timeout: the row is committed,
                // so the hosted URL will work; hand it out.
                None if rows.contains_key(&value) => {
                    out.insert(value.clone(), pending_replacement(&urls, &key, &value, now));
                }
                None => {}
            }
        }
        metrics::get()
            .rewritten_urls
            .with_label_values(&["hosted"])
            .inc_by(out.len() as u64);
        out
    }

    fn plan_one(
        self: &Arc<Self>,
        source: &Source,
        row: Option<&ImageRecord>,
        job: Job,
        urls: &Urls,
    ) -> Plan {
        if matches!(source, Source::Data) {
            // Its bytes are the source: stored before its URL leaves.
            return Plan::Wait(job);
        }
        let Some(row) = row else {
            return Plan::Keep;
        };
        if let Some(meta) = row.stored_meta() {
            return Plan::Ready(replacement(urls, &meta));
        }
        debug_assert_eq!(row.state, ImageState::Pending);
        match self.cfg.persist.mode {
            PersistMode::BeforeResponse => Plan::Wait(job),
            PersistMode::Background => {
                let key = job.key.clone();
                drop(self.ensure(job));
                Plan::HandOutPending(key)
            }
            PersistMode::OnFirstHit => Plan::HandOutPending(job.key),
        }
    }

    /// Commits the rows of every URL source in one transaction. The
    /// returned map holds the rows that were committed, by source; if the
    /// database cannot be written, it is empty and nothing is handed out
    /// but images that are stored by the time this response waits.
    async fn commit_rows(
        &self,
        keyed: &[(String, Source, ImageKey)],
        prediction_id: &Option<String>,
        trusted: bool,
        now: u64,
    ) -> HashMap<String, ImageRecord> {
        let images = new_images(keyed);
        if images.is_empty() {
            return HashMap::new();
        }
        let persist = &self.cfg.persist;
        let lazy = persist.mode == PersistMode::OnFirstHit;
        let batch = HandOut {
            images,
            prediction_id: prediction_id.clone(),
            now,
            owner: (!lazy).then(|| self.replica_id.clone()),
            lease_until: now + self.lease_ms(),
            due_at: match (lazy, persist.first_hit_deadline) {
                (false, _) => now,
                (true, Some(d)) => now + ms(d),
                (true, None) => u64::MAX / 2,
            },
            trusted,
        };
        match self.repo.hand_out(&batch).await {
            Ok(rows) => {
                let by_key: HashMap<&ImageKey, &str> =
                    keyed.iter().map(|(v, _, k)| (k, v.as_str())).collect();
                rows.into_iter()
                    .filter_map(|r| by_key.get(&r.key).map(|v| (v.to_string(), r)))
                    .collect()
            }
            Err(e) => {
                metrics::get()
                    .storage_errors
                    .with_label_values(&["database"])
                    .inc();
                tracing::error!(error = %e, "could not commit hosted URLs; original URLs kept");
                HashMap::new()
            }
        }
    }

    /// How long a lease lasts: half the takeover promise, so a dead
    /// replica's downloads are claimed with time to spare.
    pub(super) fn lease_ms(&self) -> u64 {
        ms(self.cfg.persist.lease) / 2
    }
}

/// Where hosted URLs are made: the base, and the signing settings.
pub struct Urls<'a> {
    pub base: &'a str,
    pub signing: &'a SigningConfig,
}

impl Urls<'_> {
    fn hosted(&self, key: &ImageKey, format: Format, now: u64) -> String {
        let path = key.hosted_path(format);
        crate::signing::hosted_url(self.signing, self.base, &path, &[], now / 1000)
    }
}

pub(super) fn replacement(urls: &Urls, meta: &ImageMeta) -> Replacement {
    Replacement {
        hosted_url: urls.hosted(&meta.key, meta.format, now_ms()),
        size_bytes: Some(meta.size),
        hosted_at: rfc3339(meta.created_at),
    }
}

/// Before the bytes arrive the format is unknown, so the source URL's
/// extension is a guess. Serving looks images up by id, so a wrong guess
/// still serves the right bytes with the right Content-Type.
pub(super) fn pending_replacement(
    urls: &Urls,
    key: &ImageKey,
    source: &str,
    now: u64,
) -> Replacement {
    Replacement {
        hosted_url: urls.hosted(key, guess_format(source), now),
        size_bytes: None,
        hosted_at: rfc3339(now),
    }
}

pub fn guess_format(source: &str) -> Format {
    let path = source.split(['?', '#']).next().unwrap_or("");
    path.rsplit_once('.')
        .and_then(|(_, ext)| Format::from_ext(&ext.to_ascii_lowercase()))
        .unwrap_or(Format::Png)
}
