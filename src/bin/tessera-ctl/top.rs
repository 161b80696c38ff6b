//! `tessera-ctl top`: a terminal view of the stores, refreshed every interval — per store its
//! requests per second, errors per second, request latency p99 (from the histogram's buckets
//! over the interval), regions, leaders and free disk, read from each store's `/metrics`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::admin::{endpoints, http_get, Endpoints};

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Milliseconds between two frames
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Print this many frames, then exit [default: until interrupted]
    #[arg(long)]
    iterations: Option<u64>,
}

/// What one scrape of a store says.
#[derive(Clone, Debug, Default)]
struct Sample {
    store_id: String,
    requests: f64,
    errors: f64,
    /// Cumulative request counts by latency bucket bound, over every request type.
    buckets: BTreeMap<u64, f64>,
    regions: f64,
    leaders: f64,
    disk_free: f64,
    disk_full: bool,
}

/// The labels and value of a sample line `name{labels} value`, if it is one of `name`.
fn sample_of<'a>(line: &'a str, name: &str) -> Option<(&'a str, f64)> {
    let rest = line.strip_prefix(name)?;
    let (labels, value) = match rest.strip_prefix('{') {
        Some(r) => r.split_once("} ")?,
        None => ("", rest.strip_prefix(' ')?),
    };
    Some((labels, value.trim().parse().ok()?))
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels
        .split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\"")?.strip_suffix('"'))
}

/// Parses the metrics `top` shows out of a store's `/metrics` text.
fn parse(text: &str) -> Sample {
    let mut s = Sample::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((labels, v)) = sample_of(line, "tessera_requests_total") {
            s.requests += v;
            if label(labels, "result") != Some("ok") {
                s.errors += v;
            }
            if let Some(id) = label(labels, "store_id") {
                s.store_id = id.to_string();
            }
        } else if let Some((labels, v)) = sample_of(line, "tessera_request_duration_seconds_bucket")
        {
            // Bounds in nanoseconds, so they order and add up as integers.
            let le = match label(labels, "le") {
                Some("+Inf") => u64::MAX,
                Some(b) => b.parse::<f64>().map_or(u64::MAX, |b| (b * 1e9) as u64),
                None => continue,
            };
            *s.buckets.entry(le).or_default() += v;
        } else if let Some((_, v)) = sample_of(line, "tessera_regions") {
            s.regions = v;
        } else if let Some((_, v)) = sample_of(line, "tessera_region_leaders") {
            s.leaders = v;
        } else if let Some((_, v)) = sample_of(line, "tessera_disk_available_bytes") {
            s.disk_free = v;
        } else if let Some((_, v)) = sample_of(line, "tessera_disk_full") {
            s.disk_full = v > 0.0;
        }
    }
    s
}

/// The p99 bound of the requests between `before` and `now`, if any came.
fn p99(before: &Sample, now: &Sample) -> Option<u64> {
    let delta: Vec<(u64, f64)> = now
        .buckets
        .iter()
        .map(|(le, n)| (*le, n - before.buckets.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, n)| *n >= 0.99 * total)
        .map(|(le, _)| *le)
}

fn show_latency(le: Option<u64>) -> String {
    match le {
        None => "-".to_string(),
        Some(u64::MAX) => ">6.6s".to_string(),
        Some(ns) if ns < 1_000_000 => format!("<={:.0}us", ns as f64 / 1e3),
        Some(ns) => format!("<={:.2}ms", ns as f64 / 1e6),
    }
}

/// One frame: a header and a line per endpoint.
fn frame(addrs: &[String], before: &[Option<Sample>], now: &[Option<Sample>], secs: f64) -> String {
    let mut out = format!(
        "{:<6} {:<22} {:>10} {:>8} {:>11} {:>7} {:>7} {:>10}\n",
        "STORE", "ENDPOINT", "QPS", "ERR/S", "P99", "REGIONS", "LEADERS", "DISK_FREE"
    );
    for (i, addr) in addrs.iter().enumerate() {
        let (Some(b), Some(n)) = (&before[i], &now[i]) else {
            out.push_str(&format!("{:<6} {addr:<22} unreachable\n", "-"));
            continue;
        };
        let disk = format!(
            "{:.1}GiB{}",
            n.disk_free / 1024f64.powi(3),
            if n.disk_full { "!" } else { "" }
        );
        out.push_str(&format!(
            "{:<6} {addr:<22} {:>10.1} {:>8.1} {:>11} {:>7} {:>7} {:>10}\n",
            n.store_id,
            (n.requests - b.requests).max(0.0) / secs,
            (n.errors - b.errors).max(0.0) / secs,
            show_latency(p99(b, n)),
            n.regions,
            n.leaders,
            disk
        ));
    }
    out
}

fn scrape(addrs: &[String]) -> Vec<Option<Sample>> {
    addrs
        .iter()
        .map(|a| match http_get(a, "/metrics") {
            Ok((200, body)) => Some(parse(&body)),
            _ => None,
        })
        .collect()
}

/// Runs `top`.
pub fn run(args: &TopArgs, scheduler: &str) -> Result<u8, String> {
    let addrs = endpoints(&args.endpoints, scheduler)?;
    if addrs.is_empty() {
        return Err("no endpoint to watch".to_string());
    }
    let interval = Duration::from_millis(args.interval_ms.max(100));
    let clear = std::io::stdout().is_terminal();
    let mut before = scrape(&addrs);
    let mut at = Instant::now();
    let mut shown = 0;
    while args.iterations.is_none_or(|n| shown < n) {
        std::thread::sleep(interval);
        let now = scrape(&addrs);
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        println!("{}", frame(&addrs, &before, &now, secs));
        before = now;
        shown += 1;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_shows_rates_and_the_p99_bucket_1() {
        let at = |n: f64, slow: f64| {
            format!(
                "# TYPE tessera_requests_total counter\n\
                 tessera_requests_total{{result=\"ok\",store_id=\"4\",type=\"raw_put\"}} {n}\n\
                 tessera_requests_total{{result=\"error\",store_id=\"4\",type=\"raw_put\"}} 1\n\
                 tessera_request_duration_seconds_bucket{{store_id=\"4\",type=\"raw_put\",le=\"0.001\"}} {}\n\
                 tessera_request_duration_seconds_bucket{{store_id=\"4\",type=\"raw_put\",le=\"0.004\"}} {}\n\
                 tessera_request_duration_seconds_bucket{{store_id=\"4\",type=\"raw_put\",le=\"+Inf\"}} {}\n\
                 tessera_regions{{store_id=\"4\"}} 3\ntessera_region_leaders{{store_id=\"4\"}} 2\n\
                 tessera_disk_available_bytes{{store_id=\"4\"}} 2147483648\ntessera_disk_full{{store_id=\"4\"}} 0\n",
                n + 1.0 - slow,
                n + 1.0,
                n + 1.0
            )
        };
        let before = parse(&at(100.0, 0.0));
        // 200 more requests in 2 s, 10 of them slow: the p99 is in the slow bucket.
        let now = parse(&at(300.0, 10.0));
        let f = frame(&["h:1".to_string()], &[Some(before)], &[Some(now)], 2.0);
        let row = f.lines().nth(1).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            ["4", "h:1", "100.0", "0.0", "<=4.00ms", "3", "2", "2.0GiB"],
            "{f}"
        );
        let gone = frame(&["h:1".to_string()], &[None], &[None], 1.0);
        assert!(gone.contains("unreachable"), "{gone}");
    }
}
