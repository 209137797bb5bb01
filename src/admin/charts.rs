//! The overview's charts: hosted-image requests per second by tier and
//! downloads by outcome over the last 15 minutes, from the process's own
//! counters (the Prometheus counters in [`crate::metrics`], read in
//! process) sampled every 10 s. No Prometheus server is needed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// 15 minutes of 10-second samples.
pub const WINDOW: usize = 90;

pub const TIERS: [&str; 4] = ["memory", "disk", "pending", "miss"];
pub const OUTCOMES: [&str; 4] = ["ok", "retry", "failed", "rejected"];

type Counts = [u64; 4];

#[derive(Default)]
pub struct Charts {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<(Instant, Counts, Counts)>,
    /// Requests per second by tier, one entry per sample.
    tiers: VecDeque<[f64; 4]>,
    /// Downloads by outcome per sample (10 s).
    downloads: VecDeque<[f64; 4]>,
}

fn push(ring: &mut VecDeque<[f64; 4]>, v: [f64; 4]) {
    if ring.len() == WINDOW {
        ring.pop_front();
    }
    ring.push_back(v);
}

impl Charts {
    /// Adds one sample of the running totals, taken at `at`. The first
    /// only sets the baseline.
    pub fn record(&self, at: Instant, tiers: Counts, outcomes: Counts) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((then, t0, o0)) = s.last {
            let secs = at.saturating_duration_since(then).as_secs_f64().max(0.001);
            let rate = std::array::from_fn(|i| tiers[i].saturating_sub(t0[i]) as f64 / secs);
            let count = std::array::from_fn(|i| outcomes[i].saturating_sub(o0[i]) as f64);
            push(&mut s.tiers, rate);
            push(&mut s.downloads, count);
        }
        s.last = Some((at, tiers, outcomes));
    }

    /// (requests per second by tier, downloads per sample by outcome),
    /// oldest first.
    pub fn snapshot(&self) -> (Vec<[f64; 4]>, Vec<[f64; 4]>) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (
            s.tiers.iter().copied().collect(),
            s.downloads.iter().copied().collect(),
        )
    }
}

fn read_counters() -> (Counts, Counts) {
    let m = metrics::get();
    let tiers = TIERS.map(|t| m.hosted_requests.with_label_values(&[t]).get());
    let outcomes = OUTCOMES.map(|o| m.downloads.with_label_values(&[o]).get());
    (tiers, outcomes)
}

pub async fn run_sampler(ctx: Arc<super::Ctx>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let (tiers, outcomes) = read_counters();
        ctx.charts.record(Instant::now(), tiers, outcomes);
    }
}

/// A chart as the template draws it: numbers only, in SVG user units.
pub struct ChartView {
    pub title: &'static str,
    pub unit: &'static str,
    pub width: u32,
    pub height: u32,
    /// The plot area's left, top, right and bottom edges.
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub y_max: String,
    pub y_mid: String,
    pub mid_y: u32,
    pub series: Vec<SeriesView>,
    pub samples: usize,
    /// Width of the part of the window before the first sample (the
    /// process is younger than 15 minutes); 0 once the window is full.
    pub nodata_w: u32,
    pub nodata_mid: u32,
}

pub struct SeriesView {
    pub name: &'static str,
    /// CSS class giving its colour.
    pub class: String,
    /// `x,y x,y ...`
    pub points: String,
    pub latest: String,
    pub total: String,
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v` (at least 1).
pub fn nice_max(v: f64) -> f64 {
    let v = v.max(1.0);
    let mut p = 1.0;
    while p * 10.0 < v {
        p *= 10.0;
    }
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const W: u32 = 560;
const H: u32 = 150;
const LEFT: u32 = 40;
const TOP: u32 = 10;
const RIGHT: u32 = W - 8;
const BOTTOM: u32 = H - 22;

/// Lays out up to [`WINDOW`] samples, newest at the right edge, so the
/// time axis is always 15 minutes wide.
pub fn chart(
    title: &'static str,
    unit: &'static str,
    names: [&'static str; 4],
    samples: &[[f64; 4]],
    total_is_sum: bool,
) -> ChartView {
    let peak = samples.iter().flatten().copied().fold(0.0, f64::max);
    let max = nice_max(peak);
    let step = f64::from(RIGHT - LEFT) / (WINDOW - 1) as f64;
    let first = WINDOW.saturating_sub(samples.len());
    let series = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let points = samples
                .iter()
                .enumerate()
                .map(|(n, s)| {
                    let x = f64::from(LEFT) + (first + n) as f64 * step;
                    let y = f64::from(BOTTOM) - s[i] / max * f64::from(BOTTOM - TOP);
                    format!("{x:.1},{y:.1}")
                })
                .collect::<Vec<_>>()
                .join(" ");
            let latest = samples.last().map_or(0.0, |s| s[i]);
            let total: f64 = if total_is_sum {
                samples.iter().map(|s| s[i]).sum()
            } else {
                samples.iter().map(|s| s[i]).fold(0.0, f64::max)
            };
            SeriesView {
                name,
                class: format!("s{i}"),
                points,
                latest: num(latest),
                total: num(total),
            }
        })
        .collect();
    ChartView {
        title,
        unit,
        width: W,
        height: H,
        left: LEFT,
        top: TOP,
        right: RIGHT,
        bottom: BOTTOM,
        y_max: num(max),
        y_mid: num(max / 2.0),
        mid_y: (TOP + BOTTOM) / 2,
        series,
        samples: samples.len(),
        nodata_w: (first as f64 * step) as u32,
        nodata_mid: LEFT + (first as f64 * step / 2.0) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_rates_and_counts() {
        let c = Charts::default();
        let t0 = Instant::now();
        c.record(t0, [0; 4], [0; 4]);
        assert!(c.snapshot().0.is_empty(), "the first sample is a baseline");
        c.record(t0 + Duration::from_secs(10), [50, 10, 0, 0], [3, 0, 1, 0]);
        let (tiers, downloads) = c.snapshot();
        assert_eq!(tiers, vec![[5.0, 1.0, 0.0, 0.0]]);
        assert_eq!(downloads, vec![[3.0, 0.0, 1.0, 0.0]]);
        for i in 0..200u64 {
            c.record(t0 + Duration::from_secs(20 + i * 10), [60 + i; 4], [4; 4]);
        }
        assert_eq!(c.snapshot().0.len(), WINDOW, "15 minutes kept");
    }

    #[test]
    fn axes_are_nice_and_points_end_at_the_right() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(1.2), 2.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(430.0), 500.0);
        let v = chart(
            "t",
            "u",
            TIERS,
            &[[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]],
            false,
        );
        assert_eq!(v.y_max, "2");
        let last = v.series[0].points.split(' ').next_back().unwrap();
        assert_eq!(last, format!("{RIGHT}.0,{TOP}.0"));
        assert_eq!(v.series[0].total, "2", "peak");
        let empty = chart("t", "u", OUTCOMES, &[], true);
        assert!(empty.series.iter().all(|s| s.points.is_empty()));
    }
}
