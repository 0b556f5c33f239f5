//! The report lines every run prints in the same shape, whatever drove the
//! database (HTTP clients or the raw-SQL baseline), so that one script can
//! parse both and put them side by side: `latency` and `movements`.
//!
//! Integer arithmetic throughout (the workspace denies float casts):
//! microseconds are shown as milliseconds with two decimals, rates are
//! whole units per second.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The largest latency a histogram records exactly; beyond it, values are
/// clamped (a minute is far past any request timeout here).
const LATENCY_MAX_US: u64 = 60_000_000;

/// A histogram of microseconds, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Records one latency, clamped into the histogram's range so that an
/// outlier never panics a run that already finished its work.
pub(crate) fn record_latency(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_MAX_US);
    histogram.record(us).expect("clamped into range");
}

/// Milliseconds of a run, at least 1 so rates never divide by zero.
pub(crate) fn elapsed_ms(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Whole events per second.
pub(crate) fn per_second(count: u64, elapsed_ms: u64) -> u64 {
    count.saturating_mul(1000) / elapsed_ms.max(1)
}

/// Microseconds as milliseconds with two decimals: `1234` → `1.23`.
pub(crate) fn ms(us: u64) -> String {
    format!("{}.{:02}", us / 1000, (us % 1000) / 10)
}

/// `latency    p50 … ms   p99 … ms   max … ms`.
pub(crate) fn latency_line(histogram: &Histogram<u64>) -> String {
    format!(
        "latency    p50 {} ms   p99 {} ms   max {} ms",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max())
    )
}

/// `movements  N  (R movements/s)`: money movements (acknowledged top-ups,
/// confirmed payments, committed raw payments), the unit the raw baseline
/// and Tally are compared in.
pub(crate) fn movements_line(count: u64, elapsed_ms: u64) -> String {
    format!("movements  {count}  ({} movements/s)", per_second(count, elapsed_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_have_two_decimals_and_truncate() {
        assert_eq!(ms(0), "0.00");
        assert_eq!(ms(1_234), "1.23");
        assert_eq!(ms(1_239), "1.23");
        assert_eq!(ms(50_070), "50.07");
    }

    #[test]
    fn rates_are_per_second_of_the_elapsed_time() {
        assert_eq!(per_second(12_000, 15_000), 800);
        assert_eq!(per_second(5, 0), 5_000, "a zero duration counts as 1 ms");
        assert_eq!(movements_line(1_500, 1_000), "movements  1500  (1500 movements/s)");
    }

    #[test]
    fn latencies_beyond_the_range_are_clamped_not_lost() {
        let mut h = histogram();
        record_latency(&mut h, Duration::from_secs(3_600));
        record_latency(&mut h, Duration::ZERO);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= LATENCY_MAX_US && h.max() <= LATENCY_MAX_US + LATENCY_MAX_US / 1000);
        assert_eq!(h.min(), 1);
    }
}
