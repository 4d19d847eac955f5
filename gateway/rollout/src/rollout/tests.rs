//! Rollouts under simulated time: a stream of keyed requests routed with
//! `arm()`, outcomes by arm, and `poll()` whenever a check is due.

use std::collections::BTreeMap;

use nusa_tensor::{DataType, Tensor};

use super::*;
use crate::plan::Split;
use crate::shadow::compare;
use crate::Saved;

const STABLE: u64 = 41;
const CANDIDATE: u64 = 42;

struct Sim {
    r: Rollout,
    now: u64,
    /// Requests so far; also the per-request key when `clients` is `None`.
    n: u64,
    rps: u64,
    /// Keys cycle over this many clients (`Split::Key`).
    clients: Option<u64>,
    decisions: Vec<(u64, Decision)>,
    /// Requests per step and arm: `[stable, candidate]`.
    served: BTreeMap<usize, [u64; 2]>,
    /// Candidate requests in the window at each decision.
    evidence: Vec<u64>,
}

impl Sim {
    fn new(plan: Plan) -> Sim {
        Sim {
            r: Rollout::start(STABLE, CANDIDATE, plan, 0).expect("valid plan"),
            now: 0,
            n: 0,
            rps: 100,
            clients: Some(10_000),
            decisions: Vec::new(),
            served: BTreeMap::new(),
            evidence: Vec::new(),
        }
    }

    /// `secs` of traffic, or until the rollout ends. `serve` gives each
    /// request's outcome from its arm and number.
    fn run(&mut self, secs: u64, mut serve: impl FnMut(&mut Rollout, Arm, u64) -> Outcome) {
        let end = self.now + secs * 1000;
        let gap = 1000 / self.rps;
        while self.now < end && self.r.phase() == &Phase::Running {
            self.now += gap;
            let key = match self.clients {
                Some(c) => format!("client-{}", self.n % c),
                None => self.n.to_string(),
            };
            let arm = self.r.arm(key.as_bytes());
            let served = self.served.entry(self.r.step()).or_default();
            served[usize::from(arm == Arm::Candidate)] += 1;
            let outcome = serve(&mut self.r, arm, self.n);
            self.r.record(arm, outcome);
            self.n += 1;
            if self.now >= self.r.next_check_ms() {
                let before = self.r.candidate_window.requests;
                if let Some(d) = self.r.poll(self.now) {
                    self.decisions.push((self.now, d));
                    self.evidence.push(before);
                }
            }
        }
    }

    fn decisions(&self) -> Vec<Decision> {
        self.decisions.iter().map(|(_, d)| d.clone()).collect()
    }

    /// The candidate's share of each step stayed at its percent (the split
    /// is by hash, so the share scatters around it: half a point).
    fn assert_shares(&self) {
        for (&step, &[stable, candidate]) in &self.served {
            let share = 100.0 * candidate as f64 / (stable + candidate) as f64;
            let percent = f64::from(self.r.plan().steps[step]);
            assert!(
                share <= percent + 0.5,
                "step {step}: {share:.2}% on the candidate at {percent}%"
            );
        }
    }
}

/// Compute time in µs around `base`, spread over ±10%.
fn jitter(base: u64, n: u64) -> u64 {
    base - base / 10 + (n.wrapping_mul(7919) % (base / 5))
}

fn healthy(_: &mut Rollout, _: Arm, n: u64) -> Outcome {
    if n % 1000 == 999 {
        Outcome::failed()
    } else {
        Outcome::ok(jitter(10_000, n))
    }
}

#[test]
fn failing_candidate_rolls_back_at_the_first_check_with_evidence() {
    let mut sim = Sim::new(Plan {
        max_failed_checks: 1,
        ..Plan::default()
    });
    let mut candidate_n = 0u64;
    sim.run(3600, |r, arm, n| match arm {
        Arm::Stable => healthy(r, arm, n),
        Arm::Candidate => {
            candidate_n += 1;
            if candidate_n % 5 == 0 {
                Outcome::failed()
            } else {
                Outcome::ok(jitter(10_000, n))
            }
        }
    });
    let decisions = sim.decisions();
    let (last, waits) = decisions.split_last().expect("decisions");
    // Every check before had too few candidate requests.
    assert!(waits.iter().all(|d| matches!(d, Decision::Wait { .. })));
    assert!(sim.evidence[..waits.len()].iter().all(|&n| n < 100));
    assert!(sim.evidence[waits.len()] >= 100);
    let Decision::Rollback { reason } = last else {
        panic!("{last:?}")
    };
    let rate: f64 = reason
        .strip_prefix("error rate ")
        .and_then(|r| r.split_once('%'))
        .and_then(|(r, _)| r.parse().ok())
        .unwrap_or_default();
    assert!((18.0..=22.0).contains(&rate), "{reason}");
    assert!(
        reason.contains("against stable 0.1% on") && reason.ends_with("(allowed +1.0%)"),
        "{reason}"
    );
    assert_eq!(
        sim.r.phase(),
        &Phase::RolledBack {
            reason: reason.clone()
        }
    );
    assert_eq!(sim.r.step(), 0);
    sim.assert_shares();
    assert_eq!(sim.r.percent(), 0);
    assert!((0..1000).all(|i| sim.r.arm(format!("client-{i}").as_bytes()) == Arm::Stable));
}

#[test]
fn slow_candidate_rolls_back_on_p99() {
    let mut sim = Sim::new(Plan::default());
    sim.run(3600, |r, arm, n| match arm {
        Arm::Stable => healthy(r, arm, n),
        Arm::Candidate => Outcome::ok(jitter(30_000, n)),
    });
    let decisions = sim.decisions();
    let failed: Vec<_> = decisions
        .iter()
        .filter(|d| !matches!(d, Decision::Wait { .. }))
        .collect();
    let [Decision::CheckFailed {
        detail,
        failed_checks: 1,
    }, Decision::Rollback { reason }] = failed[..]
    else {
        panic!("{decisions:?}")
    };
    for text in [detail, reason] {
        assert!(text.starts_with("p99 compute 3"), "{text}");
        assert!(text.contains("against stable 1"), "{text}");
        assert!(text.contains("(allowed x1.5 = 1"), "{text}");
    }
    sim.assert_shares();
}

/// A classifier's scores for input `n`: class `n % 4` wins.
fn scores(n: u64, wrong: bool) -> Vec<Tensor> {
    let mut v = [0.1f32, 0.2, 0.3, 0.4];
    v.rotate_left((n % 4) as usize);
    if wrong {
        v.rotate_left(1);
    }
    vec![Tensor {
        name: "probs".into(),
        datatype: DataType::Fp32,
        shape: vec![1, 4],
        data: v
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    }]
}

/// Serves stable requests and, for sampled ones, compares the candidate's
/// outputs; `wrong(n)`: the candidate's answer for input `n` is wrong.
fn shadowed(wrong: impl Fn(u64) -> bool) -> impl FnMut(&mut Rollout, Arm, u64) -> Outcome {
    move |r, arm, n| {
        if arm == Arm::Stable && r.shadow(n) {
            let (atol, rtol) = (r.plan().shadow_atol, r.plan().shadow_rtol);
            let result = compare(&scores(n, false), &scores(n, wrong(n)), atol, rtol);
            r.record_shadow(&result);
        }
        Outcome::ok(jitter(10_000, n))
    }
}

fn shadow_plan() -> Plan {
    Plan {
        shadow: true,
        shadow_sample: 0.5,
        ..Plan::default()
    }
}

#[test]
fn shadow_candidate_with_other_outputs_rolls_back_on_agreement() {
    let mut sim = Sim::new(shadow_plan());
    sim.run(3600, shadowed(|n| n % 4 == 1));
    let Some((_, Decision::Rollback { reason })) = sim.decisions.last() else {
        panic!("{:?}", sim.decisions)
    };
    assert!(reason.starts_with("shadow agreement 7"), "{reason}");
    assert!(reason.contains("(required 99.0%;"), "{reason}");
    assert!(
        reason.contains("first disagreement: output 'probs'")
            && reason.contains("argmax differs in 1 of 1 rows"),
        "{reason}"
    );
    // Errors and latency were fine: only the shadow check failed.
    assert!(!reason.contains("error rate"), "{reason}");
    let report = sim.r.report();
    let shadow = report.shadow.expect("shadow mode");
    assert!(shadow.compared >= 100 && shadow.agreeing < shadow.compared);
}

#[test]
fn shadow_waits_for_comparisons() {
    let mut sim = Sim::new(Plan {
        shadow_sample: 0.0005,
        ..shadow_plan()
    });
    sim.run(900, shadowed(|_| false));
    assert_eq!(sim.r.step(), 0);
    let Some((_, Decision::Wait { detail })) = sim.decisions.last() else {
        panic!("{:?}", sim.decisions)
    };
    assert!(
        detail.starts_with("shadow has ") && detail.contains("comparisons a check needs"),
        "{detail}"
    );
}

#[test]
fn good_candidate_advances_through_every_step_and_is_promoted() {
    let mut sim = Sim::new(Plan::default());
    let mut checked_at_100 = false;
    while sim.r.phase() == &Phase::Running && sim.now < 3600 * 1000 {
        sim.run(1, healthy);
        let report = sim.r.report();
        if report.percent == 100 && sim.r.phase() == &Phase::Running {
            // Nothing is stable-served; the 50% step's last window judges.
            assert_eq!(report.arms.stable.requests, 0);
            let at_50 = sim.served[&3][0];
            assert_eq!(report.baseline.map(|b| b.requests), Some(at_50));
            checked_at_100 |= report.last_check.is_some_and(|c| c.starts_with("passed: "));
        }
    }
    assert!(checked_at_100);
    let steps: Vec<_> = sim
        .decisions
        .iter()
        .filter(|(_, d)| !matches!(d, Decision::Wait { .. }))
        .collect();
    let want = [
        Decision::Advance {
            step: 1,
            percent: 5,
        },
        Decision::Advance {
            step: 2,
            percent: 25,
        },
        Decision::Advance {
            step: 3,
            percent: 50,
        },
        Decision::Advance {
            step: 4,
            percent: 100,
        },
        Decision::Promote,
    ];
    assert_eq!(
        steps.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        want
    );
    // Each step lasted at least step_s, and ended at its first check after.
    let mut started = 0;
    for (at, _) in &steps {
        assert!(*at >= started + 300_000, "{at} after {started}");
        assert!(
            *at < started + 300_000 + 30_000 + 10,
            "{at} after {started}"
        );
        started = *at;
    }
    assert_eq!(sim.r.phase(), &Phase::Promoted);
    assert_eq!(sim.r.percent(), 100);
    assert!((0..1000).all(|i| sim.r.arm(format!("client-{i}").as_bytes()) == Arm::Candidate));
    sim.assert_shares();
    assert_eq!(sim.r.failed_checks, 0);
}

#[test]
fn shadow_mode_is_promoted_without_copies_at_100() {
    let mut sim = Sim::new(shadow_plan());
    sim.clients = None; // Split::Request: a key per request.
    sim.r.plan.split = Split::Request;
    sim.run(3600, shadowed(|_| false));
    assert_eq!(
        sim.decisions.last().map(|(_, d)| d),
        Some(&Decision::Promote)
    );
    sim.assert_shares();
}

/// A rollout at `now = 0` with a small plan, to drive by hand.
fn manual(plan: Plan) -> Rollout {
    Rollout::start(STABLE, CANDIDATE, plan, 0).expect("valid plan")
}

fn small() -> Plan {
    Plan {
        steps: vec![50, 100],
        step_s: 120,
        check_s: 30,
        ..Plan::default()
    }
}

fn feed(r: &mut Rollout, arm: Arm, ok: u64, failed: u64) {
    for i in 0..ok {
        r.record(arm, Outcome::ok(10_000 + i % 100));
    }
    for _ in 0..failed {
        r.record(arm, Outcome::failed());
    }
}

#[test]
fn waits_for_evidence_even_when_the_step_is_over() {
    let mut r = manual(small());
    assert_eq!(r.poll(29_999), None);
    assert_eq!(
        r.poll(30_000),
        Some(Decision::Wait {
            detail: "stable has 0 of the 100 requests a baseline needs (100 more); candidate has 0 of the 100 requests a check needs (100 more)".into()
        })
    );
    feed(&mut r, Arm::Stable, 500, 0);
    feed(&mut r, Arm::Candidate, 60, 0);
    let d = r.poll(10 * 60_000);
    assert_eq!(
        d,
        Some(Decision::Wait {
            detail: "candidate has 60 of the 100 requests a check needs (40 more)".into()
        })
    );
    assert_eq!(r.step(), 0);
    feed(&mut r, Arm::Candidate, 40, 0);
    assert_eq!(
        r.poll(r.next_check_ms()),
        Some(Decision::Advance {
            step: 1,
            percent: 100
        })
    );
}

#[test]
fn check_failed_then_recovery_and_failures_count_over_the_rollout() {
    let mut r = manual(small());
    feed(&mut r, Arm::Stable, 200, 0);
    feed(&mut r, Arm::Candidate, 95, 5);
    assert_eq!(
        r.poll(30_000),
        Some(Decision::CheckFailed {
            detail: "error rate 5.0% on 100 requests against stable 0.0% on 200 (allowed +1.0%)"
                .into(),
            failed_checks: 1
        })
    );
    assert_eq!(r.phase(), &Phase::Running);
    // More good requests dilute the burst: 5 of 500 is 1.0%.
    feed(&mut r, Arm::Stable, 400, 0);
    feed(&mut r, Arm::Candidate, 400, 0);
    assert_eq!(r.poll(60_000), None);
    assert!(r
        .report()
        .last_check
        .is_some_and(|c| c.starts_with("passed: error rate 1.0% on 500 requests")));
    assert_eq!(r.poll(90_000), None);
    assert_eq!(
        r.poll(120_000),
        Some(Decision::Advance {
            step: 1,
            percent: 100
        })
    );
    assert_eq!(r.report().failed_checks, 1);
    // Windows restarted; the baseline stays. One more failure is the second.
    assert_eq!(r.report().arms.candidate.requests, 0);
    feed(&mut r, Arm::Candidate, 90, 10);
    let Some(Decision::Rollback { reason }) = r.poll(150_000) else {
        panic!("{:?}", r.report())
    };
    assert_eq!(
        reason,
        "error rate 10.0% on 100 requests against stable 0.0% on 600 (allowed +1.0%)"
    );
    assert_eq!(r.report().failed_checks, 2);
    assert!(r
        .report()
        .last_check
        .is_some_and(|c| c.starts_with("failed (2 of 2), rolled back: error rate 10.0%")));
    assert_eq!(r.poll(180_000), None);
}

#[test]
fn several_failing_checks_are_named_together() {
    let mut r = manual(Plan {
        max_failed_checks: 1,
        ..small()
    });
    feed(&mut r, Arm::Stable, 200, 0);
    for _ in 0..100 {
        r.record(Arm::Candidate, Outcome::ok(50_000));
    }
    feed(&mut r, Arm::Candidate, 0, 50);
    let Some(Decision::Rollback { reason }) = r.poll(30_000) else {
        panic!()
    };
    let (errors, p99) = reason.split_once("; ").unwrap_or_default();
    assert!(
        errors.starts_with("error rate 33.3% on 150 requests"),
        "{reason}"
    );
    assert!(p99.starts_with("p99 compute 50."), "{reason}");
}

#[test]
fn checks_are_due_on_the_steps_grid() {
    let mut r = manual(small());
    assert_eq!(r.next_check_ms(), 30_000);
    // A late poll runs the due check; the next is the grid point after it.
    assert!(r.poll(71_000).is_some());
    assert_eq!(r.next_check_ms(), 90_000);
    feed(&mut r, Arm::Stable, 100, 0);
    feed(&mut r, Arm::Candidate, 100, 0);
    assert_eq!(
        r.poll(125_000),
        Some(Decision::Advance {
            step: 1,
            percent: 100
        })
    );
    assert_eq!(r.next_check_ms(), 155_000);
    assert_eq!(r.report().step_started_ms, 125_000);
    assert_eq!(r.report().step_ends_ms, 245_000);
}

#[test]
fn operator_abort_and_promote() {
    let mut r = manual(small());
    assert_eq!((r.percent(), r.step()), (50, 0));
    let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
    let on = keys
        .iter()
        .filter(|k| r.arm(k.as_bytes()) == Arm::Candidate)
        .count();
    assert!((150..=250).contains(&on), "{on}");
    assert!(r.abort("operator: bad outputs reported"));
    assert_eq!(
        r.phase(),
        &Phase::RolledBack {
            reason: "operator: bad outputs reported".into()
        }
    );
    assert_eq!(r.percent(), 0);
    assert!(keys.iter().all(|k| r.arm(k.as_bytes()) == Arm::Stable));
    assert!(!r.abort("again"));
    assert!(!r.promote());
    assert!(!r.shadow(0));
    // Nothing counts or decides once rolled back.
    feed(&mut r, Arm::Candidate, 500, 500);
    assert_eq!(r.report().arms.candidate.requests, 0);
    assert_eq!(r.poll(u64::MAX), None);
    assert_eq!(r.report().next_check_ms, None);

    let mut r = manual(small());
    assert!(r.promote());
    assert_eq!(r.phase(), &Phase::Promoted);
    assert_eq!(r.percent(), 100);
    assert!(keys.iter().all(|k| r.arm(k.as_bytes()) == Arm::Candidate));
    assert!(!r.promote());
    assert!(!r.abort("late"));
    assert_eq!(r.poll(u64::MAX), None);
}

#[test]
fn shadow_draws_follow_the_sample() {
    let r = manual(Plan {
        shadow: true,
        shadow_sample: 0.25,
        ..small()
    });
    let copied = (0..40_000u64).filter(|&d| r.shadow(d)).count();
    assert!((9_500..=10_500).contains(&copied), "{copied}");
    assert_eq!(r.shadow(12345), r.shadow(12345));
    let all = manual(Plan {
        shadow: true,
        shadow_sample: 1.0,
        ..small()
    });
    assert!((0..1000).all(|d| all.shadow(d)));
    assert!(!manual(small()).shadow(1));
}

/// A rollout at step 1 of 3, one failed check, a baseline, saved at 400 s.
fn advanced() -> Rollout {
    let mut r = manual(Plan {
        steps: vec![10, 50, 100],
        ..small()
    });
    feed(&mut r, Arm::Stable, 300, 0);
    feed(&mut r, Arm::Candidate, 90, 10);
    assert!(matches!(r.poll(30_000), Some(Decision::CheckFailed { .. })));
    feed(&mut r, Arm::Candidate, 900, 0);
    assert!(matches!(
        r.poll(120_000),
        Some(Decision::Advance { step: 1, .. })
    ));
    r
}

#[test]
fn saved_round_trips_through_json() {
    let r = advanced();
    let saved = r.saved(130_000);
    let json = serde_json::to_string(&saved).unwrap_or_default();
    assert!(
        json.starts_with(r#"{"format":1,"stable":41,"candidate":42,"#),
        "{json}"
    );
    assert!(json.contains(r#""phase":{"state":"running"}"#), "{json}");
    let back: Saved = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back, saved);
    assert_eq!(back.failed_checks, 1);
    assert_eq!(back.baseline.as_ref().map(|b| b.requests), Some(300));

    let rolled: Saved = serde_json::from_str(
        &serde_json::to_string(&Saved {
            phase: Phase::RolledBack {
                reason: "p99".into(),
            },
            ..saved.clone()
        })
        .unwrap_or_default(),
    )
    .expect("reads back");
    let r = Rollout::resume(rolled, 140_000);
    assert_eq!(r.percent(), 0);
    assert_eq!(r.arm(b"x"), Arm::Stable);

    let newer = json.replacen(r#""format":1"#, r#""format":2"#, 1);
    let e = serde_json::from_str::<Saved>(&newer)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.starts_with("rollout state format 2 is not the format this nusad reads (1)"),
        "{e}"
    );
}

#[test]
fn resume_after_a_short_outage_keeps_the_step_start() {
    let r = advanced();
    let saved = r.saved(130_000);
    // Down 100 s of a 120 s step.
    let r = Rollout::resume(saved, 230_000);
    assert_eq!(r.step(), 1);
    assert_eq!(r.report().step_started_ms, 120_000);
    assert_eq!(r.report().failed_checks, 1);
    assert_eq!(r.report().arms.stable.requests, 0);
    assert!(r.report().baseline.is_some());
    // On the grid (120 s + k * 30 s), no earlier than now + 30 s.
    assert_eq!(r.next_check_ms(), 270_000);
}

#[test]
fn resume_after_a_long_outage_restarts_the_step() {
    let saved = advanced().saved(130_000);
    let mut r = Rollout::resume(saved, 130_000 + 121_000);
    assert_eq!(r.report().step_started_ms, 251_000);
    assert_eq!(r.next_check_ms(), 281_000);
    // The saved baseline judges: no stable requests since the restart.
    feed(&mut r, Arm::Candidate, 100, 0);
    assert_eq!(r.poll(281_000), None);
    assert_eq!(
        r.poll(371_000),
        Some(Decision::Advance {
            step: 2,
            percent: 100
        })
    );
}

#[test]
fn time_going_backwards_does_not_panic() {
    let saved = advanced().saved(130_000);
    // Resumed with a clock an hour behind: the step restarts at "now".
    let mut r = Rollout::resume(saved.clone(), 5_000);
    assert_eq!(r.report().step_started_ms, 5_000);
    assert_eq!(r.next_check_ms(), 35_000);
    feed(&mut r, Arm::Stable, 100, 0);
    feed(&mut r, Arm::Candidate, 100, 0);
    assert_eq!(r.poll(0), None);
    assert_eq!(r.report().step_started_ms, 0);
    assert_eq!(r.poll(30_000), None);
    assert_eq!(
        r.poll(120_000),
        Some(Decision::Advance {
            step: 2,
            percent: 100
        })
    );

    // The clock jumps back while running: checks go on from the new time.
    let mut r = advanced();
    assert_eq!(r.next_check_ms(), 150_000);
    assert_eq!(r.poll(20_000), None);
    assert_eq!(r.next_check_ms(), 50_000);
    // And forwards past everything.
    feed(&mut r, Arm::Candidate, 100, 0);
    assert!(r.poll(u64::MAX).is_some());
    let _ = r.report();
    let _ = Rollout::resume(r.saved(0), u64::MAX);
    let _ = Rollout::resume(
        Saved {
            saved_at_ms: u64::MAX,
            step_started_ms: u64::MAX,
            ..r.saved(0)
        },
        0,
    );
}

#[test]
fn a_broken_saved_state_resumes_rolled_back() {
    let saved = advanced().saved(130_000);
    let r = Rollout::resume(
        Saved {
            step: 7,
            ..saved.clone()
        },
        130_000,
    );
    assert_eq!(
        r.phase(),
        &Phase::RolledBack {
            reason: "the saved rollout state cannot resume: step 7 is past the plan's 3 steps"
                .into()
        }
    );
    assert_eq!(r.percent(), 0);
    let mut plan = saved.plan.clone();
    plan.steps = vec![];
    let r = Rollout::resume(Saved { plan, ..saved }, 130_000);
    assert_eq!(r.arm(b"k"), Arm::Stable);
    assert!(
        matches!(r.phase(), Phase::RolledBack { reason } if reason.ends_with("rollout.steps must not be empty"))
    );
}

#[test]
fn report_serializes_for_the_cli() {
    let mut r = manual(Plan {
        shadow: true,
        ..small()
    });
    feed(&mut r, Arm::Stable, 99, 1);
    feed(&mut r, Arm::Candidate, 10, 0);
    r.record_shadow(&crate::ShadowResult::candidate_failed("oom"));
    assert!(r.poll(30_000).is_some());
    let report = r.report();
    let json = serde_json::to_value(&report).unwrap_or_default();
    assert_eq!(json["phase"], serde_json::json!({"state": "running"}));
    assert_eq!(json["split"], "key");
    assert_eq!(json["percent"], 50);
    assert_eq!(json["steps"], serde_json::json!([50, 100]));
    assert_eq!(json["arms"]["stable"]["requests"], 100);
    assert_eq!(json["arms"]["stable"]["error_rate"], 0.01);
    // 10.000..=10.009 ms: the bucket 9.984..=10.239 ms holds the p99.
    assert_eq!(json["arms"]["candidate"]["p99_ms"], 10.239);
    assert_eq!(json["baseline"]["requests"], 100);
    assert_eq!(json["shadow"]["compared"], 1);
    assert_eq!(json["shadow"]["agreement"], 0.0);
    assert_eq!(json["next_check_ms"], 60_000);
    assert_eq!(json["plan"]["min_requests"], 100);
    assert!(json["last_check"]
        .as_str()
        .is_some_and(|s| s.starts_with("waiting: candidate has 10 of")));
    let back: crate::Report = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, report);
    // Without shadow mode there is no shadow section.
    assert_eq!(manual(small()).report().shadow, None);
}

/// Shadow copies counted as the driver counts them: a comparison, and a
/// candidate request with its compute time.
fn shadowed_and_timed(
    wrong: impl Fn(u64) -> bool,
) -> impl FnMut(&mut Rollout, Arm, u64) -> Outcome {
    move |r, arm, n| {
        if arm == Arm::Stable && r.shadow(n) {
            let (atol, rtol) = (r.plan().shadow_atol, r.plan().shadow_rtol);
            let result = compare(&scores(n, false), &scores(n, wrong(n)), atol, rtol);
            r.record_shadow(&result);
            r.record(Arm::Candidate, Outcome::ok(jitter(10_000, n)));
        }
        Outcome::ok(jitter(10_000, n))
    }
}

#[test]
fn a_zero_step_in_shadow_mode_shows_no_client_the_candidate() {
    let plan = Plan {
        steps: vec![0, 50, 100],
        ..shadow_plan()
    };
    // A wrong candidate is rolled back at 0%: no request was routed to it.
    let mut sim = Sim::new(plan.clone());
    sim.run(3600, shadowed_and_timed(|n| n % 4 == 1));
    let Some((_, Decision::Rollback { reason })) = sim.decisions.last() else {
        panic!("{:?}", sim.decisions)
    };
    assert!(reason.starts_with("shadow agreement"), "{reason}");
    assert_eq!(sim.served.keys().copied().collect::<Vec<_>>(), vec![0]);
    assert_eq!(
        sim.served[&0][1], 0,
        "a request was routed to the candidate at 0%"
    );
    // A good one passes the 0% step on its shadow copies alone.
    let mut sim = Sim::new(plan);
    sim.run(3600, shadowed_and_timed(|_| false));
    assert_eq!(sim.served[&0][1], 0);
    assert_eq!(
        sim.decisions()
            .into_iter()
            .find(|d| !matches!(d, Decision::Wait { .. })),
        Some(Decision::Advance {
            step: 1,
            percent: 50
        })
    );
}
