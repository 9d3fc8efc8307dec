//! UCUM canonical units for quantity search (FHIR R4 search.html §3.1.1.4.10 "quantity":
//! servers MAY compare quantities in canonical units; UCUM is <https://ucum.org/ucum>).
//!
//! [`canonical`] turns `(value, UCUM code)` into `(value, canonical unit)` so that `5.4 mg/dL`
//! and `54 mg/L` index to the same canonical quantity. The server calls it on stored
//! quantities (at write time, [`super::IndexValue::Quantity::canonical`]) and on search values
//! alike, so any two units with the same dimension compare.
//!
//! The conversion itself is the `octofhir-ucum` crate's (`get_canonical_units`: the full UCUM
//! essence table, prefixes, products, quotients, exponents, annotations, and temperatures
//! with their offset), as recorded in `shared/design/crate-notes.md`. Canonical codes are
//! UCUM's base units: `g`, `m`, `s`, `K`, `C`, `cd`, `rad` and arbitrary atoms (`[IU]`), e.g.
//! `mg/dL` → `g.m-3`, `mmol/L` → `m-3` (UCUM defines the mole as a number), `Cel` → `K`.
//! Units on non-linear scales (`[pH]`, `B`) and invalid codes give `None`: the server then
//! compares on the code as written.

/// Converts `value` in the UCUM unit `unit_code` (case-sensitive UCUM, e.g. `mg/dL`,
/// `10*3/uL`, `mm[Hg]`, `kg/m2`) to UCUM canonical units: `(canonical value, canonical
/// code)`; `None` when the code is empty, not valid UCUM, on a non-linear scale, or the
/// result is not finite.
///
/// Source: UCUM (unitsofmeasure.org) §§ 2–4 (canonical form = the base units the unit is
/// defined from); FHIR R4 search.html §3.1.1.4.10.
pub fn canonical(value: f64, unit_code: &str) -> Option<(f64, String)> {
    let code = unit_code.trim();
    if code.is_empty() {
        return None;
    }
    let c = octofhir_ucum::get_canonical_units(code).ok()?;
    let v = value * c.factor.to_f64() + c.offset.to_f64();
    v.is_finite().then_some((v, c.unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
    }

    /// Both quantities have the same canonical unit and value.
    fn same(a: (f64, &str), b: (f64, &str)) {
        let ca = canonical(a.0, a.1).unwrap_or_else(|| panic!("{} not converted", a.1));
        let cb = canonical(b.0, b.1).unwrap_or_else(|| panic!("{} not converted", b.1));
        assert_eq!(ca.1, cb.1, "{} vs {}", a.1, b.1);
        assert!(close(ca.0, cb.0), "{a:?} = {ca:?} but {b:?} = {cb:?}");
    }

    #[test]
    fn prefixed_mass_and_volume_units_share_a_canonical_form() {
        same((1500.0, "mg"), (1.5, "g"));
        same((2.0, "kg"), (2000.0, "g"));
        same((5.4, "mg/dL"), (54.0, "mg/L"));
        same((140.0, "mmol/L"), (0.14, "mol/L"));
        same((1.0, "mL"), (1.0, "cm3"));
        assert_eq!(canonical(2.0, "kg").map(|c| c.1), Some("g".to_string()));
    }

    #[test]
    fn counts_time_length_and_pressure_units() {
        same((4.5, "10*3/uL"), (4.5e9, "/L"));
        same((72.0, "/min"), (1.2, "/s"));
        same((72.0, "{beats}/min"), (72.0, "/min"));
        same((1.0, "wk"), (7.0, "d"));
        same((12.0, "[in_i]"), (1.0, "[ft_i]"));
        same((10.0, "[lb_av]"), (4535.9237, "g"));
        // UCUM: m[Hg] = 133.3220 kPa, so 1 mm[Hg] = 133.322 Pa.
        same((1.0, "mm[Hg]"), (133.322, "Pa"));
    }

    #[test]
    fn temperatures_convert_with_their_offset() {
        same((37.0, "Cel"), (310.15, "K"));
        same((98.6, "[degF]"), (37.0, "Cel"));
    }

    #[test]
    fn invalid_units_give_none() {
        for u in ["xyz", "mg/", "(mg", "", "  "] {
            assert_eq!(canonical(1.0, u), None, "{u}");
        }
    }
}
