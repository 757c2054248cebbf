//! Latency recording and the report: what was asked, how long it took, the latency
//! distribution and the errors by kind, as text for people (close to etcd's `benchmark`
//! summary) or JSON for scripts.
//!
//! Each worker records into its own [`Recorder`]; recorders are merged once the phase ends, so
//! workers never contend on a shared histogram.

use super::cpu::ClientCpu;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Largest latency the histogram can hold, in microseconds (10 minutes); longer ones are
/// clamped to it rather than dropped.
const MAX_LATENCY_US: u64 = 600_000_000;
/// Significant decimal digits kept by the histogram: 3 gives 0.1% resolution.
const HISTOGRAM_SIGFIG: u8 = 3;
/// Rows in the printed histogram, as in etcd's report.
const HISTOGRAM_BUCKETS: usize = 10;
/// Width of the longest bar in the printed histogram.
const HISTOGRAM_BAR_WIDTH: u64 = 40;
/// Error messages longer than this are cut so that one odd message cannot flood the report.
const MAX_ERROR_KIND_LEN: usize = 160;

/// Latencies and errors of one worker (or, after merging, of a phase).
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latencies of successful requests, in microseconds.
    hist: Histogram<u64>,
    /// Failed requests by kind (gRPC code and message).
    errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        let hist = match Histogram::new_with_bounds(1, MAX_LATENCY_US, HISTOGRAM_SIGFIG) {
            Ok(h) => h,
            Err(e) => panic!("invariant: constant histogram bounds are valid ({e:?})"),
        };
        Recorder {
            hist,
            errors: BTreeMap::new(),
        }
    }

    /// Records one success that took `latency`.
    pub fn ok(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .max(1);
        self.hist.saturating_record(us.min(MAX_LATENCY_US));
    }

    /// Records one failure of the given kind.
    pub fn error(&mut self, kind: impl Into<String>) {
        let mut kind: String = kind.into();
        if kind.len() > MAX_ERROR_KIND_LEN {
            let mut cut = MAX_ERROR_KIND_LEN;
            while !kind.is_char_boundary(cut) {
                cut -= 1;
            }
            kind.truncate(cut);
            kind.push_str("...");
        }
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    /// Records a call's outcome: its latency if it succeeded, its failure if not.
    pub fn outcome(&mut self, result: &Result<(), tonic::Status>, latency: Duration) {
        match result {
            Ok(()) => self.ok(latency),
            Err(status) => self.status(status),
        }
    }

    /// Records a failed gRPC call.
    pub fn status(&mut self, status: &tonic::Status) {
        self.error(error_kind(status));
    }

    /// Successful requests recorded.
    pub fn ok_count(&self) -> u64 {
        self.hist.len()
    }

    /// Failed requests recorded.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other`'s samples and errors to this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms share bounds, so adding cannot fail; saturating keeps that true even
        // if a caller built one differently.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += n;
        }
    }

    /// One line of a timeline: the samples of the interval that ended `t` after the phase
    /// began.
    pub fn interval(&self, phase: &str, t: Duration) -> IntervalReport {
        let ok = self.ok_count();
        let at = |q: f64| (ok > 0).then(|| ms(self.hist.value_at_quantile(q)));
        IntervalReport {
            phase: phase.to_string(),
            t_secs: t.as_secs_f64(),
            unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            ok,
            errors: self.error_count(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: (ok > 0).then(|| ms(self.hist.max())),
        }
    }

    /// The phase report for these samples over `duration`.
    pub fn report(&self, name: &str, unit: &str, duration: Duration) -> PhaseReport {
        let ok = self.ok_count();
        let errors = self.error_count();
        let secs = duration.as_secs_f64();
        let latency_ms = (ok > 0).then(|| LatencySummary {
            mean: self.hist.mean() / 1000.0,
            stddev: self.hist.stdev() / 1000.0,
            min: ms(self.hist.min()),
            p50: ms(self.hist.value_at_quantile(0.50)),
            p90: ms(self.hist.value_at_quantile(0.90)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            p999: ms(self.hist.value_at_quantile(0.999)),
            max: ms(self.hist.max()),
        });
        PhaseReport {
            name: name.to_string(),
            unit: unit.to_string(),
            total: ok + errors,
            ok,
            errors,
            duration_secs: secs,
            per_sec: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            latency_ms,
            histogram: self.buckets(),
            errors_by_kind: self.errors.clone(),
        }
    }

    /// Ten equal-width buckets between the fastest and the slowest sample, as etcd prints them.
    fn buckets(&self) -> Vec<Bucket> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        let lo = self.hist.min();
        let hi = self.hist.max();
        let width = ((hi - lo) / HISTOGRAM_BUCKETS as u64).max(1);
        let mut counts = vec![0u64; HISTOGRAM_BUCKETS];
        for v in self.hist.iter_recorded() {
            let value = self.hist.highest_equivalent(v.value_iterated_to()).min(hi);
            let idx = usize::try_from((value.saturating_sub(lo)) / width)
                .unwrap_or(HISTOGRAM_BUCKETS - 1)
                .min(HISTOGRAM_BUCKETS - 1);
            if let Some(c) = counts.get_mut(idx) {
                *c += v.count_at_value();
            }
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, count)| {
                let upper = if i + 1 == HISTOGRAM_BUCKETS {
                    hi
                } else {
                    lo + width * (i as u64 + 1)
                };
                Bucket {
                    upper_ms: ms(upper),
                    count,
                }
            })
            .collect()
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A gRPC failure as an error kind: code and message, which is what tells etcd's errors apart
/// (`Unavailable: etcdserver: no leader`, `DeadlineExceeded: ...`).
pub fn error_kind(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// The requests of one interval of a request loop (`--interval-ms`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IntervalReport {
    /// The phase the interval belongs to.
    pub phase: String,
    /// When the interval ended, in seconds since the phase began.
    pub t_secs: f64,
    /// When the interval ended, in seconds since the Unix epoch (to line it up with the
    /// servers' logs).
    pub unix_secs: f64,
    /// Requests answered successfully in the interval.
    pub ok: u64,
    /// Requests failed in the interval.
    pub errors: u64,
    /// Median latency of the interval's successful requests (none when there was none).
    pub p50_ms: Option<f64>,
    /// 99th percentile, as `p50_ms`.
    pub p99_ms: Option<f64>,
    /// Slowest, as `p50_ms`.
    pub max_ms: Option<f64>,
}

/// Latency percentiles of one phase, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Fastest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// One row of the latency histogram: samples at or below `upper_ms` (and above the row before).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    /// Upper edge in milliseconds.
    pub upper_ms: f64,
    /// Samples in this bucket.
    pub count: u64,
}

/// The outcome of one phase of a run (a run has one phase per kind of operation it times).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseReport {
    /// What was timed: `put`, `range`, `watch-create`, `events`, ...
    pub name: String,
    /// What one unit is (`requests`, `watchers`, `events`), so `per_sec` reads right.
    pub unit: String,
    /// Units attempted: `ok + errors`.
    pub total: u64,
    /// Units that succeeded.
    pub ok: u64,
    /// Units that failed.
    pub errors: u64,
    /// Wall-clock length of the phase.
    pub duration_secs: f64,
    /// Successful units per second over the phase.
    pub per_sec: f64,
    /// Latency of successful units; absent when none succeeded.
    pub latency_ms: Option<LatencySummary>,
    /// Latency histogram in ten equal-width buckets.
    pub histogram: Vec<Bucket>,
    /// Failures by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    /// The subcommand (`put`, `range`, ...).
    pub command: String,
    /// Endpoints the run connected to (after `--target-leader`).
    pub endpoints: Vec<String>,
    /// gRPC connections.
    pub conns: usize,
    /// Concurrent workers.
    pub clients: usize,
    /// Phases in the order they ran.
    pub phases: Vec<PhaseReport>,
    /// CPU the benchmark client itself used during the run.
    pub client_cpu: ClientCpu,
    /// Remarks on how to read this run (e.g. how many events beat their put's acknowledgement).
    pub notes: Vec<String>,
}

impl RunReport {
    /// The report as people read it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} against {} ({} conns, {} clients)",
            self.command,
            self.endpoints.join(","),
            self.conns,
            self.clients
        );
        for phase in &self.phases {
            phase.write_text(&mut out);
        }
        let cpu = &self.client_cpu;
        let _ = writeln!(
            out,
            "\nClient CPU: user {:.2}s + sys {:.2}s over {:.2}s wall = {:.1}% of one core",
            cpu.user_secs, cpu.system_secs, cpu.wall_secs, cpu.percent_of_one_core
        );
        for note in &self.notes {
            let _ = writeln!(out, "Note: {note}");
        }
        out
    }
}

impl PhaseReport {
    fn write_text(&self, out: &mut String) {
        let _ = writeln!(out, "\n{} summary:", self.name);
        let _ = writeln!(
            out,
            "  Total:\t{} {} ({} ok, {} failed)",
            self.total, self.unit, self.ok, self.errors
        );
        let _ = writeln!(out, "  Duration:\t{:.4} secs.", self.duration_secs);
        let _ = writeln!(
            out,
            "  {}/sec:\t{:.2}",
            capitalise(&self.unit),
            self.per_sec
        );
        if let Some(l) = &self.latency_ms {
            let _ = writeln!(out, "\n  Latency (ms):");
            let _ = writeln!(
                out,
                "    mean {:.3}, stddev {:.3}, min {:.3}",
                l.mean, l.stddev, l.min
            );
            let _ = writeln!(out, "    p50\t{:.3}", l.p50);
            let _ = writeln!(out, "    p90\t{:.3}", l.p90);
            let _ = writeln!(out, "    p99\t{:.3}", l.p99);
            let _ = writeln!(out, "    p99.9\t{:.3}", l.p999);
            let _ = writeln!(out, "    max\t{:.3}", l.max);
        }
        if !self.histogram.is_empty() {
            let _ = writeln!(out, "\n  Response time histogram (ms):");
            let peak = self
                .histogram
                .iter()
                .map(|b| b.count)
                .max()
                .unwrap_or(0)
                .max(1);
            for b in &self.histogram {
                let bar =
                    "∎".repeat(usize::try_from(b.count * HISTOGRAM_BAR_WIDTH / peak).unwrap_or(0));
                let _ = writeln!(out, "    {:>10.3} [{}]\t|{}", b.upper_ms, b.count, bar);
            }
        }
        if !self.errors_by_kind.is_empty() {
            let _ = writeln!(out, "\n  Error distribution:");
            for (kind, n) in &self.errors_by_kind {
                let _ = writeln!(out, "    [{n}]\t{kind}");
            }
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_counts_follow_the_samples() {
        let mut r = Recorder::new();
        for ms_ in 1..=1000u64 {
            r.ok(Duration::from_millis(ms_));
        }
        r.error("Unavailable: etcdserver: no leader");
        r.error("Unavailable: etcdserver: no leader");
        let p = r.report("put", "requests", Duration::from_secs(2));
        assert_eq!(p.ok, 1000);
        assert_eq!(p.errors, 2);
        assert_eq!(p.total, 1002);
        assert!((p.per_sec - 500.0).abs() < 1e-9);
        let l = p.latency_ms.expect("latency");
        assert!((l.p50 - 500.0).abs() < 1.0, "p50 {}", l.p50);
        assert!((l.p99 - 990.0).abs() < 1.5, "p99 {}", l.p99);
        assert!((l.max - 1000.0).abs() < 1.0, "max {}", l.max);
        assert_eq!(
            p.errors_by_kind.get("Unavailable: etcdserver: no leader"),
            Some(&2)
        );
        assert_eq!(p.histogram.len(), HISTOGRAM_BUCKETS);
        assert_eq!(p.histogram.iter().map(|b| b.count).sum::<u64>(), 1000);
    }

    #[test]
    fn an_interval_reports_its_own_samples() {
        let mut r = Recorder::new();
        let empty = r.interval("put", Duration::from_secs(1));
        assert_eq!(
            (empty.ok, empty.errors, empty.p50_ms, empty.p99_ms),
            (0, 0, None, None)
        );
        for ms_ in 1..=100u64 {
            r.ok(Duration::from_millis(ms_));
        }
        r.error("Unavailable: etcdserver: no leader");
        let i = r.interval("put", Duration::from_millis(2500));
        assert_eq!((i.phase.as_str(), i.ok, i.errors), ("put", 100, 1));
        assert!((i.t_secs - 2.5).abs() < 1e-9);
        let (p50, p99, max) = (
            i.p50_ms.expect("p50"),
            i.p99_ms.expect("p99"),
            i.max_ms.expect("max"),
        );
        assert!((p50 - 50.0).abs() < 0.5, "p50 {p50}");
        assert!((p99 - 99.0).abs() < 0.5, "p99 {p99}");
        assert!((max - 100.0).abs() < 0.5, "max {max}");
    }

    #[test]
    fn merge_adds_samples_and_errors() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.ok(Duration::from_micros(100));
        b.ok(Duration::from_micros(300));
        b.error("x");
        a.merge(&b);
        assert_eq!(a.ok_count(), 2);
        assert_eq!(a.error_count(), 1);
    }

    #[test]
    fn empty_phase_has_no_latency_and_zero_rate() {
        let p = Recorder::new().report("range", "requests", Duration::ZERO);
        assert_eq!(p.latency_ms, None);
        assert!(p.histogram.is_empty());
        assert_eq!(p.per_sec, 0.0);
    }

    #[test]
    fn text_report_names_every_figure() {
        let mut r = Recorder::new();
        r.ok(Duration::from_millis(2));
        r.error("Unavailable: etcdserver: no leader");
        let report = RunReport {
            command: "put".into(),
            endpoints: vec!["http://127.0.0.1:2379".into()],
            conns: 1,
            clients: 2,
            phases: vec![r.report("put", "requests", Duration::from_secs(1))],
            client_cpu: ClientCpu {
                user_secs: 0.5,
                system_secs: 0.25,
                wall_secs: 1.0,
                percent_of_one_core: 75.0,
            },
            notes: vec!["a note".into()],
        };
        let text = report.to_text();
        for needle in [
            "put against http://127.0.0.1:2379 (1 conns, 2 clients)",
            "2 requests (1 ok, 1 failed)",
            "Requests/sec:\t1.00",
            "p99.9",
            "Response time histogram (ms):",
            "[1]\tUnavailable: etcdserver: no leader",
            "= 75.0% of one core",
            "Note: a note",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn long_error_kinds_are_cut() {
        let mut r = Recorder::new();
        r.error("é".repeat(500));
        let kind = r.errors.keys().next().expect("one kind");
        assert!(kind.len() <= MAX_ERROR_KIND_LEN + 3);
    }
}
