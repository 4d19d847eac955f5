//! Residency by jurisdiction: from the regions' countries and a request's
//! rules (its model's and its caller's), the regions it may be sent to.

use nusa_registry::Residency;
use nusa_spill::RegionSet;

/// One residency rule, a model's or a caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule<'a> {
    Any,
    Local,
    /// Regions in one of these countries (ISO 3166-1 alpha-2); never a
    /// region that declares no country.
    Countries(&'a [String]),
}

impl<'a> Rule<'a> {
    pub(crate) fn of_model(residency: &'a Residency) -> Rule<'a> {
        match residency {
            Residency::Any => Rule::Any,
            Residency::Local => Rule::Local,
            Residency::Countries(codes) => Rule::Countries(codes),
        }
    }

    /// A caller's rule as keys store it: `["any"]`, `["local"]` or country
    /// codes. Anything else (an empty list, a mix) is read as a list of
    /// countries, which no region's code matches but the listed ones: it
    /// fails closed.
    pub(crate) fn of_caller(codes: &'a [String]) -> Rule<'a> {
        match codes {
            [one] if one.eq_ignore_ascii_case("any") => Rule::Any,
            [one] if one.eq_ignore_ascii_case("local") => Rule::Local,
            codes => Rule::Countries(codes),
        }
    }

    fn allows(self, country: Option<&str>) -> bool {
        match (self, country) {
            (Rule::Any, _) => true,
            (Rule::Local, _) | (Rule::Countries(_), None) => false,
            (Rule::Countries(codes), Some(c)) => codes.iter().any(|x| x.eq_ignore_ascii_case(c)),
        }
    }
}

/// The regions' countries, index-aligned with the spill core's regions.
pub(crate) struct Countries {
    countries: Vec<Option<String>>,
    all: RegionSet,
}

impl Countries {
    pub(crate) fn new(countries: impl IntoIterator<Item = Option<String>>) -> Countries {
        let countries: Vec<_> = countries.into_iter().collect();
        Countries {
            all: RegionSet::first(countries.len()),
            countries,
        }
    }

    pub(crate) fn of(&self, region: usize) -> Option<&str> {
        self.countries.get(region)?.as_deref()
    }

    /// The regions both rules allow. Allocates nothing: the common case
    /// (both "any") is the set made at start, others one pass over the
    /// regions comparing two-letter codes.
    pub(crate) fn allowed(&self, model: Rule<'_>, caller: Rule<'_>) -> RegionSet {
        match (model, caller) {
            (Rule::Any, Rule::Any) => self.all,
            (Rule::Local, _) | (_, Rule::Local) => RegionSet::NONE,
            _ => RegionSet::from_fn(self.countries.len(), |i| {
                let country = self.countries[i].as_deref();
                model.allows(country) && caller.allows(country)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_intersection_of_model_and_caller() {
        // Regions: 0 in SG, 1 in ID, 2 undeclared, 3 in ID.
        let regions = Countries::new([
            Some("SG".into()),
            Some("ID".into()),
            None,
            Some("ID".into()),
        ]);
        let any = Residency::Any;
        let local = Residency::Local;
        let id = Residency::Countries(codes(&["ID"]));
        let sg_id = Residency::Countries(codes(&["SG", "ID"]));
        let set = |model: &Residency, caller: Option<&[String]>| {
            regions
                .allowed(
                    Rule::of_model(model),
                    caller.map_or(Rule::Any, Rule::of_caller),
                )
                .bits()
        };
        assert_eq!(
            set(&any, None),
            0b1111,
            "undeclared regions take 'any' only"
        );
        assert_eq!(set(&local, None), 0);
        assert_eq!(set(&id, None), 0b1010);
        assert_eq!(set(&sg_id, None), 0b1011);
        let caller_any = codes(&["any"]);
        let caller_local = codes(&["local"]);
        let caller_sg = codes(&["sg"]);
        let caller_none: Vec<String> = Vec::new();
        assert_eq!(set(&any, Some(&caller_any)), 0b1111);
        assert_eq!(set(&id, Some(&caller_any)), 0b1010);
        assert_eq!(set(&any, Some(&caller_local)), 0);
        assert_eq!(
            set(&any, Some(&caller_sg)),
            0b0001,
            "codes match in any case"
        );
        assert_eq!(set(&sg_id, Some(&caller_sg)), 0b0001);
        assert_eq!(set(&id, Some(&caller_sg)), 0, "disjoint: nowhere");
        assert_eq!(
            set(&any, Some(&caller_none)),
            0,
            "an empty list fails closed"
        );
        assert_eq!(regions.of(0), Some("SG"));
        assert_eq!(regions.of(2), None);
        assert_eq!(regions.of(9), None);
    }

    #[test]
    fn no_regions_no_set() {
        let regions = Countries::new([]);
        assert!(regions.allowed(Rule::Any, Rule::Any).is_empty());
    }
}
