//! Benchmarks the variants core (src/variants) on real files. Driven by
//! `benches/variants/run.sh`; each mode prints one JSON line.
//!
//! ```text
//! cargo run --release --example variant_bench -- throughput IMG W FORMAT THREADS SECONDS
//! cargo run --release --example variant_bench -- rss IMG W FORMAT CONCURRENCY
//! cargo run --release --example variant_bench -- encode IMG W FORMAT RUNS
//! cargo run --release --example variant_bench -- store IMG webp|avif QUALITY OUT
//! ```
//!
//! - `throughput`: THREADS threads each make variants back to back for
//!   SECONDS; prints variants per second and the median latency.
//! - `rss`: CONCURRENCY threads start one make each at the same instant
//!   (a barrier); prints the peak RSS of the process (VmHWM) before and
//!   after, i.e. what that many simultaneous makes cost.
//! - `encode`: median wall time of RUNS makes (used for AVIF).
//! - `store`: `convert_for_store` of IMG, written to OUT.
use permaproxy::image_format::sniff;
use permaproxy::variants::transcode::estimate_memory;
use permaproxy::variants::{
    convert_for_store, dimensions, make_variant, Limits, Resolved, StoreFormat, VariantSpec,
};
use std::sync::{Arc, Barrier};

// The allocator the server uses, so peak RSS is the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

const WIDTHS: &[u32] = &[64, 128, 256, 512, 1024, 2048];

fn resolved(input: &[u8], w: &str, format: &str) -> Resolved {
    let spec = VariantSpec::parse(&format!("w={w}&format={format}"), WIDTHS)
        .expect("query")
        .expect("a variant");
    let (ow, oh) = dimensions(input).expect("dimensions");
    spec.resolve(None, sniff(input).expect("format"), ow, oh)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system, all threads) used by this process so far,
/// from /proc/self/stat (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name; utime and stime
    // are fields 14 and 15 of the whole line, 12 and 13 after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    let mode = arg(0);
    let input = Arc::new(std::fs::read(arg(1)).expect("read IMG"));
    let limits = Limits::default();
    match mode {
        "throughput" => {
            let r = resolved(&input, arg(2), arg(3));
            let threads: usize = arg(4).parse().unwrap_or_else(|_| usage());
            let secs: f64 = arg(5).parse().unwrap_or_else(|_| usage());
            // Warm up once (page-in, lazy statics).
            let out = make_variant(&input, &r, &limits).expect("variant");
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let start = Instant::now();
            let cpu_start = cpu_seconds();
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let input = input.clone();
                    std::thread::spawn(move || {
                        let mut lat = Vec::new();
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            make_variant(&input, &r, &limits).expect("variant");
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        lat
                    })
                })
                .collect();
            let lat: Vec<f64> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect();
            let elapsed = start.elapsed().as_secs_f64();
            let cpu_ms = (cpu_seconds() - cpu_start) * 1000.0 / lat.len().max(1) as f64;
            println!(
                "{{\"peer\":\"permaproxy\",\"mode\":\"throughput\",\"workers\":{threads},\"n\":{},\"per_sec\":{:.2},\"median_ms\":{:.2},\"cpu_ms_per_variant\":{cpu_ms:.2},\"out_bytes\":{},\"out\":\"{}x{} {}\"}}",
                lat.len(),
                lat.len() as f64 / elapsed,
                median(lat),
                out.bytes.len(),
                out.width,
                out.height,
                out.format.ext()
            );
        }
        "rss" => {
            let r = resolved(&input, arg(2), arg(3));
            let n: usize = arg(4).parse().unwrap_or_else(|_| usage());
            let before = vm_hwm_kib();
            let barrier = Arc::new(Barrier::new(n));
            let t = Instant::now();
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let (input, barrier) = (input.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        make_variant(&input, &r, &limits)
                            .expect("variant")
                            .bytes
                            .len()
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("thread");
            }
            let estimate = estimate_memory(
                dimensions(&input).expect("dimensions"),
                (r.width, r.height),
                r.format,
            );
            println!(
                "{{\"peer\":\"permaproxy\",\"mode\":\"rss\",\"concurrency\":{n},\"out\":\"{}x{} {}\",\"hwm_before_kib\":{before},\"hwm_after_kib\":{},\"estimate_per_make_kib\":{},\"wall_ms\":{:.0}}}",
                r.width,
                r.height,
                r.format.ext(),
                vm_hwm_kib(),
                estimate / 1024,
                t.elapsed().as_secs_f64() * 1000.0
            );
        }
        "encode" => {
            let r = resolved(&input, arg(2), arg(3));
            let runs: usize = arg(4).parse().unwrap_or_else(|_| usage());
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..runs {
                let t = Instant::now();
                size = make_variant(&input, &r, &limits)
                    .expect("variant")
                    .bytes
                    .len();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            println!(
                "{{\"mode\":\"encode\",\"w\":{},\"h\":{},\"format\":\"{}\",\"runs\":{runs},\"median_ms\":{:.1},\"min_ms\":{:.1},\"bytes\":{size}}}",
                r.width,
                r.height,
                r.format.ext(),
                median(times.clone()),
                times.iter().copied().fold(f64::INFINITY, f64::min)
            );
        }
        "store" => {
            let target: StoreFormat = arg(2).parse().unwrap_or_else(|_| usage());
            let q: u8 = arg(3).parse().unwrap_or_else(|_| usage());
            let t = Instant::now();
            let out = convert_for_store(&input, target, q, &limits).expect("convert");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            std::fs::write(arg(4), &out.bytes).expect("write OUT");
            println!(
                "{{\"mode\":\"store\",\"format\":\"{}\",\"in_bytes\":{},\"out_bytes\":{},\"ms\":{ms:.1}}}",
                out.format.ext(),
                input.len(),
                out.bytes.len()
            );
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: see the header of examples/variant_bench.rs");
    std::process::exit(2)
}
