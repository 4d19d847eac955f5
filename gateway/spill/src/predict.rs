//! Predicting the local wait.

use crate::Micros;

/// Moving estimates of batch service time by batch size.
///
/// Sizes are grouped in powers of two (1, 2, 3-4, 5-8, ...); within a
/// group the estimate scales with rows, since compute on CPUs and GPUs grows
/// close to linearly inside such a range. An unseen group borrows the
/// nearest seen one, scaled by rows.
#[derive(Clone, Debug)]
pub struct ServiceTimes {
    /// Per group: (EWMA of microseconds per batch, EWMA of rows per batch).
    groups: Vec<Option<(f64, f64)>>,
    alpha: f64,
}

impl Default for ServiceTimes {
    fn default() -> ServiceTimes {
        ServiceTimes::new(0.2)
    }
}

impl ServiceTimes {
    /// `alpha` is the weight of a new observation (0..=1).
    pub fn new(alpha: f64) -> ServiceTimes {
        ServiceTimes {
            groups: vec![None; 17],
            alpha: alpha.clamp(0.01, 1.0),
        }
    }

    fn group(rows: usize) -> usize {
        (usize::BITS - rows.max(1).saturating_sub(1).leading_zeros()).min(16) as usize
    }

    pub fn observe(&mut self, rows: usize, took: Micros) {
        let g = Self::group(rows);
        let (t, r) = (took as f64, rows.max(1) as f64);
        self.groups[g] = Some(match self.groups[g] {
            None => (t, r),
            Some((et, er)) => (et + self.alpha * (t - et), er + self.alpha * (r - er)),
        });
    }

    /// Estimated time for a batch of `rows`; `None` before any batch ran.
    pub fn estimate(&self, rows: usize) -> Option<Micros> {
        let g = Self::group(rows);
        let nearest = (0..self.groups.len())
            .filter_map(|i| self.groups[i].map(|v| (i.abs_diff(g), v)))
            .min_by_key(|(d, _)| *d)?;
        let (t, r) = nearest.1;
        Some((t * rows.max(1) as f64 / r.max(1.0)).round() as Micros)
    }
}

/// The local queue as the scheduler last published it.
#[derive(Clone, Debug, Default)]
pub struct QueueView {
    /// Rows of each queued request, oldest first (priority order is not
    /// modelled: a new request of default priority waits behind all of them).
    pub queued_rows: Vec<usize>,
    /// For each instance, when its running batch started and its rows;
    /// `None` when idle.
    pub running: Vec<Option<(Micros, usize)>>,
    /// 0: no batching.
    pub max_batch_size: usize,
    pub max_queue_delay_us: u64,
}

/// When a new request of `rows` would be answered if queued locally now, as
/// a duration from `now`. `None` when there is no estimate yet (no batch has
/// run): the caller should then serve locally and learn.
pub fn predict_wait(
    view: &QueueView,
    service: &ServiceTimes,
    rows: usize,
    now: Micros,
) -> Option<Micros> {
    let instances = view.running.len().max(1);
    // When each instance will be free.
    let mut free: Vec<Micros> = (0..instances)
        .map(|i| match view.running.get(i).copied().flatten() {
            None => Some(now),
            Some((started, r)) => service.estimate(r).map(|t| (started + t).max(now)),
        })
        .collect::<Option<_>>()?;
    // The queue and the new request, cut into batches in order.
    let mut batches: Vec<usize> = Vec::new();
    let all = view
        .queued_rows
        .iter()
        .copied()
        .chain(std::iter::once(rows));
    if view.max_batch_size == 0 {
        batches.extend(all);
    } else {
        let mut current = 0;
        for r in all {
            if current > 0 && current + r > view.max_batch_size {
                batches.push(current);
                current = 0;
            }
            current += r;
        }
        batches.push(current);
    }
    let mut done = now;
    let last = batches.len() - 1;
    for (i, b) in batches.iter().enumerate() {
        let (slot, &at) = free.iter().enumerate().min_by_key(|(_, &t)| t)?;
        let mut start = at;
        // A last batch that is not full waits for the window to close
        // (unless an instance is busy longer than that anyway).
        if i == last
            && view.max_batch_size > 0
            && *b < view.max_batch_size
            && view.max_queue_delay_us > 0
        {
            start = start.max(now + view.max_queue_delay_us);
        }
        let end = start + service.estimate(*b)?;
        free[slot] = end;
        done = end;
    }
    Some(done - now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learnt(per_row: Micros, fixed: Micros) -> ServiceTimes {
        let mut s = ServiceTimes::new(1.0);
        for rows in [1, 2, 4, 8, 16, 32] {
            s.observe(rows, fixed + per_row * rows as u64);
        }
        s
    }

    #[test]
    fn estimates_scale_within_a_group_and_borrow_across() {
        let mut s = ServiceTimes::new(0.5);
        assert_eq!(s.estimate(4), None);
        s.observe(4, 400);
        assert_eq!(s.estimate(4), Some(400));
        assert_eq!(s.estimate(3), Some(300), "same group, scaled by rows");
        assert_eq!(
            s.estimate(16),
            Some(1600),
            "borrowed from the nearest group"
        );
        s.observe(4, 600);
        assert_eq!(s.estimate(4), Some(500), "EWMA with alpha 0.5");
    }

    #[test]
    fn idle_box_waits_only_for_compute() {
        let s = learnt(100, 0);
        let view = QueueView {
            running: vec![None],
            max_batch_size: 8,
            ..QueueView::default()
        };
        assert_eq!(predict_wait(&view, &s, 2, 1_000), Some(200));
    }

    #[test]
    fn queue_ahead_is_cut_into_batches_across_instances() {
        let s = learnt(100, 0);
        // 24 rows queued ahead in 1-row requests, batches of 8, one instance
        // busy until 500 (started at 0 with 8 rows = 800us), one idle.
        let view = QueueView {
            queued_rows: vec![1; 24],
            running: vec![Some((0, 8)), None],
            max_batch_size: 8,
            max_queue_delay_us: 0,
        };
        // Batches: 8, 8, 8, 1 (ours). Instance 1 free at 300 (now), instance 0
        // at 800. 8 on #1: 300..1100; 8 on #0: 800..1600; 8 on #1: 1100..1900;
        // ours (1 row) on #0: 1600..1700.
        assert_eq!(predict_wait(&view, &s, 1, 300), Some(1_400));
    }

    #[test]
    fn partial_last_batch_waits_for_the_window() {
        let s = learnt(100, 0);
        let view = QueueView {
            running: vec![None],
            max_batch_size: 8,
            max_queue_delay_us: 500,
            ..QueueView::default()
        };
        assert_eq!(predict_wait(&view, &s, 1, 0), Some(600));
        assert_eq!(
            predict_wait(&view, &s, 8, 0),
            Some(800),
            "a full batch goes at once"
        );
    }

    #[test]
    fn no_batching_runs_requests_one_by_one() {
        let s = learnt(100, 50);
        let view = QueueView {
            queued_rows: vec![2, 2],
            running: vec![None],
            max_batch_size: 0,
            max_queue_delay_us: 0,
        };
        // 2 rows: 250 each; three of them back to back.
        assert_eq!(predict_wait(&view, &s, 2, 0), Some(750));
    }

    #[test]
    fn no_estimate_before_the_first_batch() {
        let view = QueueView {
            running: vec![None],
            ..QueueView::default()
        };
        assert_eq!(predict_wait(&view, &ServiceTimes::default(), 1, 0), None);
    }
}
