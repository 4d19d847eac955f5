//! Daily budgets: today's spend per key and per region that has a budget,
//! the 80% and 100% crossings (each once per day), and whether spilling
//! is still allowed.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::config::{Action, Budget, Budgets};
use super::usage::NO_KEY;

/// Whose budget.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", content = "name", rename_all = "lowercase")]
pub enum Scope {
    /// An API key, by name (`-`: requests without a key).
    Key(String),
    /// A region, by name: the money of the requests it answered.
    Region(String),
}

impl Scope {
    /// The `scope` label: `key` or `region`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Key(_) => "key",
            Scope::Region(_) => "region",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Scope::Key(n) | Scope::Region(n) => n,
        }
    }
}

/// A budget's spend reached a threshold today, for the first time today.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Crossing {
    #[serde(flatten)]
    pub scope: Scope,
    /// 80 or 100 (percent).
    pub threshold: u8,
    pub day: u64,
    pub spent: f64,
    pub budget: f64,
    /// What the budget does at 100% (at 80% it only alerts).
    pub action: Action,
}

/// One budget today, for `nusactl cost` and the gauges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    #[serde(flatten)]
    pub scope: Scope,
    pub day: u64,
    pub daily: f64,
    pub spent: f64,
    /// `spent / daily`.
    pub ratio: f64,
    pub action: Action,
    /// The highest threshold crossed today: 0, 80 or 100.
    pub reached: u8,
    /// Spilling stopped for the rest of the day (`stop-spill` at 100%).
    pub spill_stopped: bool,
}

/// One budget's day.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct DaySpend {
    pub day: u64,
    pub spent: f64,
    pub warned: bool,
    pub reached: bool,
}

impl DaySpend {
    /// The spend as of `day`: nothing yet if the saved day is older.
    fn on(&self, day: u64) -> DaySpend {
        if day > self.day {
            DaySpend {
                day,
                ..DaySpend::default()
            }
        } else {
            *self
        }
    }
}

/// Spend of the budgets configured now; names without a budget have no
/// entry, so the book is as small as the configuration.
#[derive(Clone, Debug, Default)]
pub(super) struct BudgetBook {
    pub keys: HashMap<String, DaySpend>,
    pub regions: HashMap<String, DaySpend>,
}

impl BudgetBook {
    pub(super) fn charge_key(
        &mut self,
        budgets: &Budgets,
        name: &str,
        money: f64,
        day: u64,
        out: &mut Vec<Crossing>,
    ) -> Option<f64> {
        let budget = budgets.keys.get(name)?;
        let state = entry(&mut self.keys, name);
        Some(charge(state, budget, money, day, out, || {
            Scope::Key(name.to_string())
        }))
    }

    pub(super) fn charge_region(
        &mut self,
        budgets: &Budgets,
        name: &str,
        money: f64,
        day: u64,
        out: &mut Vec<Crossing>,
    ) -> Option<f64> {
        let budget = budgets.regions.get(name)?;
        let state = entry(&mut self.regions, name);
        Some(charge(state, budget, money, day, out, || {
            Scope::Region(name.to_string())
        }))
    }
}

fn entry<'m>(map: &'m mut HashMap<String, DaySpend>, name: &str) -> &'m mut DaySpend {
    // Looked up by &str first: the String is made once per budget only.
    if !map.contains_key(name) {
        map.insert(name.to_string(), DaySpend::default());
    }
    map.get_mut(name).expect("inserted above")
}

/// Adds `money` to the budget's day. A later day starts from nothing; an
/// earlier one (the driver's clock went back) counts in the current day,
/// so no crossing is ever reported twice for one day.
fn charge(
    state: &mut DaySpend,
    budget: &Budget,
    money: f64,
    day: u64,
    out: &mut Vec<Crossing>,
    scope: impl Fn() -> Scope,
) -> f64 {
    *state = state.on(day);
    state.spent += money;
    let crossing = |threshold: u8, state: &DaySpend| Crossing {
        scope: scope(),
        threshold,
        day: state.day,
        spent: state.spent,
        budget: budget.daily,
        action: budget.action,
    };
    if !state.warned && state.spent >= 0.8 * budget.daily {
        state.warned = true;
        out.push(crossing(80, state));
    }
    if !state.reached && state.spent >= budget.daily {
        state.reached = true;
        out.push(crossing(100, state));
    }
    state.spent / budget.daily
}

impl BudgetBook {
    /// The book under new budgets (a configuration reload): spend of names
    /// that no longer have a budget is dropped; for the others, today's
    /// spend stays and the 80% and 100% marks are those of the new
    /// amounts (a raised budget lets spilling resume, a lowered one stops
    /// it). A new budget counts from now on.
    pub(super) fn rebase(&mut self, budgets: &Budgets) {
        let rebase = |book: &mut HashMap<String, DaySpend>,
                      of: &std::collections::BTreeMap<String, Budget>| {
            book.retain(|name, spend| match of.get(name) {
                Some(b) => {
                    spend.warned = spend.spent >= 0.8 * b.daily;
                    spend.reached = spend.spent >= b.daily;
                    true
                }
                None => false,
            });
        };
        rebase(&mut self.keys, &budgets.keys);
        rebase(&mut self.regions, &budgets.regions);
    }

    /// Every budget of `budgets` on `day`, keys then regions, by name.
    pub(crate) fn state(&self, budgets: &Budgets, day: u64) -> Vec<BudgetStatus> {
        let keys = budgets.keys.iter().map(|(name, budget)| {
            let spend = self.keys.get(name).copied().unwrap_or_default();
            status(Scope::Key(name.clone()), budget, spend, day)
        });
        let regions = budgets.regions.iter().map(|(name, budget)| {
            let spend = self.regions.get(name).copied().unwrap_or_default();
            status(Scope::Region(name.clone()), budget, spend, day)
        });
        keys.chain(regions).collect()
    }

    /// Whether a request of `key` may be sent to `region` on `day`: not
    /// once a `stop-spill` budget of either reached 100% that day.
    pub(crate) fn may_spill(
        &self,
        budgets: &Budgets,
        key: Option<&str>,
        region: &str,
        day: u64,
    ) -> bool {
        let key = key.unwrap_or(NO_KEY);
        !(stopped(budgets.keys.get(key), self.keys.get(key), day)
            || stopped(budgets.regions.get(region), self.regions.get(region), day))
    }
}

fn stopped(budget: Option<&Budget>, spend: Option<&DaySpend>, day: u64) -> bool {
    match (budget, spend) {
        (Some(b), Some(s)) => b.action == Action::StopSpill && s.reached && s.day >= day,
        _ => false,
    }
}

fn status(scope: Scope, budget: &Budget, spend: DaySpend, day: u64) -> BudgetStatus {
    let today = if spend.day >= day {
        // An earlier day than the book's is its current one, as in
        // charge() and may_spill().
        spend
    } else {
        DaySpend {
            day,
            ..DaySpend::default()
        }
    };
    let reached = if today.reached {
        100
    } else if today.warned {
        80
    } else {
        0
    };
    BudgetStatus {
        scope,
        day,
        daily: budget.daily,
        spent: today.spent,
        ratio: today.spent / budget.daily,
        action: budget.action,
        reached,
        spill_stopped: today.reached && budget.action == Action::StopSpill,
    }
}
