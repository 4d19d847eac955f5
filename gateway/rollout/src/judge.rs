//! One check's verdict from the step's windows and the baseline: wait for
//! evidence, pass, or fail with the figures and thresholds that failed.

use crate::plan::Plan;
use crate::window::{Figures, ShadowWindow};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Too few requests or comparisons; says how many more.
    Wait(String),
    /// Every check passed; the figures they saw.
    Pass(String),
    /// The failing checks, with figures and thresholds.
    Fail(String),
}

/// What a check looks at.
pub(crate) struct Evidence<'a> {
    pub(crate) stable: Figures,
    pub(crate) candidate: Figures,
    pub(crate) shadow: &'a ShadowWindow,
    /// Whether the shadow check applies: shadow mode below 100%. At 100%
    /// nothing is stable-served, so there is nothing to copy; the earlier
    /// steps' comparisons have passed.
    pub(crate) shadow_judged: bool,
}

/// Judges `ev`, first making the stable window the baseline when it has
/// enough requests (the last such window stays the baseline: at 100% the
/// stable arm gets no traffic).
pub(crate) fn judge(plan: &Plan, ev: &Evidence<'_>, baseline: &mut Option<Figures>) -> Verdict {
    let min = plan.min_requests;
    if ev.stable.requests >= min {
        *baseline = Some(ev.stable.clone());
    }
    let mut short = Vec::new();
    if baseline.is_none() {
        short.push(format!(
            "stable has {} of the {min} requests a baseline needs ({} more)",
            ev.stable.requests,
            min - ev.stable.requests
        ));
    }
    if ev.candidate.requests < min {
        short.push(format!(
            "candidate has {} of the {min} requests a check needs ({} more)",
            ev.candidate.requests,
            min - ev.candidate.requests
        ));
    }
    if ev.shadow_judged && ev.shadow.compared < min {
        short.push(format!(
            "shadow has {} of the {min} comparisons a check needs ({} more)",
            ev.shadow.compared,
            min - ev.shadow.compared
        ));
    }
    let Some(base) = baseline.as_ref() else {
        return Verdict::Wait(short.join("; "));
    };
    if !short.is_empty() {
        return Verdict::Wait(short.join("; "));
    }

    let (c, mut failed, mut passed) = (&ev.candidate, Vec::new(), Vec::new());
    let errors = format!(
        "error rate {} on {} requests against stable {} on {} (allowed +{})",
        pct(c.error_rate()),
        c.requests,
        pct(base.error_rate()),
        base.requests,
        pct(plan.max_error_rate)
    );
    if c.error_rate() > base.error_rate() + plan.max_error_rate {
        failed.push(errors);
    } else {
        passed.push(errors);
    }

    // Latency only against stable requests of the same window: a kept
    // baseline (the 100% step) ran under another share of the load, and
    // compute time under load is not comparable across loads.
    let same_window = ev.stable.requests >= min;
    if !same_window {
        passed.push("p99 not compared: no stable requests in this window".into());
    }
    if let (true, Some(cp), Some(bp)) = (same_window, c.p99_us, base.p99_us) {
        // Beyond doubt: the candidate's p99 is at least `c_low` and the
        // stable one's at most `b_high` (one-sided 95% bounds from the
        // samples), so a few outliers in a small window do not roll back.
        let c_low = c.p99_low_us.unwrap_or(cp);
        let b_high = base.p99_high_us.unwrap_or(bp);
        let allowed = b_high as f64 * plan.max_p99_ratio;
        let text = format!(
            "p99 compute {} (at least {}) on {} timed requests against stable {} (at most {}) on {} (allowed x{} = {})",
            ms(cp as f64),
            ms(c_low as f64),
            c.timed,
            ms(bp as f64),
            ms(b_high as f64),
            base.timed,
            plan.max_p99_ratio,
            ms(allowed)
        );
        if c_low as f64 > allowed {
            failed.push(text);
        } else {
            passed.push(text);
        }
    }

    if ev.shadow_judged {
        let s = ev.shadow;
        let agreement = s.agreement().unwrap_or(0.0);
        let mut text = format!(
            "shadow agreement {} on {} comparisons (required {}; max abs diff {:.3e}, max rel diff {:.3e})",
            pct(agreement),
            s.compared,
            pct(plan.min_agreement),
            s.max_abs,
            s.max_rel
        );
        if agreement < plan.min_agreement {
            if let Some(first) = &s.first_disagreement {
                text.push_str(&format!("; first disagreement: {first}"));
            }
            failed.push(text);
        } else {
            passed.push(text);
        }
    }

    if failed.is_empty() {
        Verdict::Pass(passed.join("; "))
    } else {
        Verdict::Fail(failed.join("; "))
    }
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn ms(us: f64) -> String {
    format!("{:.1} ms", us / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(requests: u64, errors: u64, p99_us: Option<u64>) -> Figures {
        Figures {
            requests,
            errors,
            timed: if p99_us.is_some() { requests } else { 0 },
            p99_us,
            p99_low_us: p99_us,
            p99_high_us: p99_us,
        }
    }

    fn run(stable: Figures, candidate: Figures, baseline: &mut Option<Figures>) -> Verdict {
        let plan = Plan::default();
        let shadow = ShadowWindow::default();
        let ev = Evidence {
            stable,
            candidate,
            shadow: &shadow,
            shadow_judged: false,
        };
        judge(&plan, &ev, baseline)
    }

    #[test]
    fn error_rate_at_the_threshold_passes() {
        let mut base = None;
        // 1.0% against 0.0% with +1.0% allowed.
        let v = run(figs(1000, 0, None), figs(100, 1, None), &mut base);
        assert!(matches!(v, Verdict::Pass(_)), "{v:?}");
        let v = run(figs(1000, 0, None), figs(100, 2, None), &mut base);
        assert_eq!(
            v,
            Verdict::Fail(
                "error rate 2.0% on 100 requests against stable 0.0% on 1000 (allowed +1.0%)"
                    .into()
            )
        );
    }

    #[test]
    fn latency_needs_samples_on_both_sides() {
        let mut base = None;
        let v = run(figs(1000, 0, None), figs(100, 0, Some(90_000)), &mut base);
        assert!(matches!(v, Verdict::Pass(_)), "{v:?}");
        let v = run(
            figs(1000, 0, Some(10_000)),
            figs(100, 0, Some(15_000)),
            &mut base,
        );
        assert!(matches!(v, Verdict::Pass(_)), "{v:?}");
        let v = run(
            figs(1000, 0, Some(10_000)),
            figs(100, 0, Some(15_001)),
            &mut base,
        );
        assert_eq!(
            v,
            Verdict::Fail("p99 compute 15.0 ms (at least 15.0 ms) on 100 timed requests against stable 10.0 ms (at most 10.0 ms) on 1000 (allowed x1.5 = 15.0 ms)".into())
        );
    }

    #[test]
    fn baseline_is_kept_from_an_earlier_window() {
        let mut base = None;
        let v = run(figs(99, 0, None), figs(500, 0, None), &mut base);
        assert_eq!(
            v,
            Verdict::Wait("stable has 99 of the 100 requests a baseline needs (1 more)".into())
        );
        let v = run(figs(100, 0, None), figs(5, 0, None), &mut base);
        assert_eq!(
            v,
            Verdict::Wait("candidate has 5 of the 100 requests a check needs (95 more)".into())
        );
        assert_eq!(base, Some(figs(100, 0, None)));
        // Too few stable requests now, but the baseline stands.
        let v = run(figs(0, 0, None), figs(100, 1, None), &mut base);
        assert!(matches!(v, Verdict::Pass(_)), "{v:?}");
        assert_eq!(base, Some(figs(100, 0, None)));
    }

    #[test]
    fn latency_is_compared_only_within_one_window() {
        // A kept baseline judges errors, not latency: it ran under another
        // share of the load.
        let mut base = Some(figs(1000, 0, Some(10_000)));
        let v = run(figs(0, 0, None), figs(100, 0, Some(40_000)), &mut base);
        let Verdict::Pass(text) = v else {
            panic!("{v:?}")
        };
        assert!(text.contains("p99 not compared"), "{text}");
        let v = run(figs(0, 0, None), figs(100, 5, Some(40_000)), &mut base);
        assert!(
            matches!(&v, Verdict::Fail(t) if t.starts_with("error rate 5.0%")),
            "{v:?}"
        );
        // Outliers of a small window are not enough: the bounds decide.
        let mut c = figs(100, 0, Some(40_000));
        c.p99_low_us = Some(14_000);
        let v = run(figs(1000, 0, Some(10_000)), c, &mut base);
        assert!(matches!(v, Verdict::Pass(_)), "{v:?}");
        // With stable requests in the window, the same figures fail.
        let v = run(
            figs(100, 0, Some(10_000)),
            figs(100, 0, Some(40_000)),
            &mut base,
        );
        assert!(
            matches!(&v, Verdict::Fail(t) if t.starts_with("p99 compute")),
            "{v:?}"
        );
    }
}
