//! UCUM canonical units for quantity search (FHIR R4 search.html §3.1.1.4.10 "quantity":
//! servers MAY compare quantities in canonical units; UCUM is <https://ucum.org/ucum>).
//!
//! [`canonical`] turns `(value, UCUM code)` into `(value, canonical unit)` so that `5.4 mg/dL`
//! and `54 mg/L` index to the same `0.054 g/L`. The server calls it on stored quantities (at
//! write time, [`super::IndexValue::Quantity::canonical`]) and on search values alike, so any
//! two units this module knows compare as long as they have the same dimension.
//!
//! # What is covered
//!
//! A deliberately small table of the units seen in clinical data:
//!
//! * metric atoms, with all the SI prefixes `Y Z E P T G M k h da d c m u n p f a z y`
//!   (UCUM Table 1): `g`, `L`/`l`, `m`, `s`, `mol`, `eq`, `Pa`, `K`, `m[Hg]` (so `mm[Hg]`,
//!   `cm[H2O]` is not covered), `U` (enzyme unit = µmol/min);
//! * non-metric atoms (no prefix): `min`, `h`, `d`, `wk`, `mo` (mean Julian month, 30.4375 d),
//!   `a` (Julian year, 365.25 d), `[lb_av]`, `[oz_av]`, `[in_i]`, `[ft_i]`, `%`;
//! * the whole units `Cel` and `[degF]` (offset scales: canonical `Cel`, not combinable);
//! * numeric factors `10*n`/`10^n` and plain integers, annotations `{…}` (which count as 1),
//!   products `.`, quotients `/` (left-associative, a leading `/` allowed), parentheses and
//!   integer exponents (`m2`, `s-1`).
//!
//! Arbitrary units (`[IU]`, `[arb'U]`) and anything else not in the table give `None`: the
//! server then compares on the code as written.
//!
//! # Canonical form
//!
//! Base units `g`, `mol`, `eq`, `Pa`, `mm[Hg]`, `K`, `m`, `L`, `s` (volume is kept as `L`
//! rather than UCUM's `m3`: a length cubed, `m3`/`cm3`/`mm3`, is rewritten to litres). The
//! canonical code lists the positive exponents joined by `.`, then `/` and each negative one:
//! `g/L`, `mol/L`, `/L` (for `10*3/uL`), `m/s2`, `g/m2`; `1` when dimensionless. Powers of ten
//! are carried exactly and applied once, so `1 mg/dL` is exactly `0.01 g/L`.
//!
//! # Why not a crate
//!
//! Checked (2026-11): `ucum` 0.1.0 (2020, partial, unmaintained), `ucum-units` 0.1.0 (new,
//! single author) and `octofhir-ucum-core` (young, fast-moving 0.x API). None is a
//! well-established dependency yet, and quantity search needs only this canonicalisation of
//! common units, which is part of FHIR's core search semantics; so it is implemented here in
//! ~300 lines with tests. Swap in a full UCUM library if the table proves too small.

/// The canonical base units, in the order they are written.
const BASES: [&str; 9] = ["g", "mol", "eq", "Pa", "mm[Hg]", "K", "m", "L", "s"];
const G: usize = 0;
const MOL: usize = 1;
const EQ: usize = 2;
const PA: usize = 3;
const MMHG: usize = 4;
const KELVIN: usize = 5;
const M: usize = 6;
const L: usize = 7;
const S: usize = 8;

/// A value scale and dimension: `mantissa × 10^exp10` base units with exponents `dims`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Unit {
    mantissa: f64,
    exp10: i32,
    dims: [i8; 9],
}

impl Unit {
    const ONE: Unit = Unit {
        mantissa: 1.0,
        exp10: 0,
        dims: [0; 9],
    };

    fn base(i: usize, exp10: i32, mantissa: f64) -> Unit {
        let mut dims = [0; 9];
        dims[i] = 1;
        Unit {
            mantissa,
            exp10,
            dims,
        }
    }

    fn mul(self, o: Unit) -> Option<Unit> {
        let mut dims = self.dims;
        for (d, e) in dims.iter_mut().zip(o.dims) {
            *d = d.checked_add(e)?;
        }
        Some(Unit {
            mantissa: self.mantissa * o.mantissa,
            exp10: self.exp10.checked_add(o.exp10)?,
            dims,
        })
    }

    fn pow(self, n: i32) -> Option<Unit> {
        let mut dims = self.dims;
        for d in &mut dims {
            *d = i8::try_from(i32::from(*d).checked_mul(n)?).ok()?;
        }
        Some(Unit {
            mantissa: self.mantissa.powi(n),
            exp10: self.exp10.checked_mul(n)?,
            dims,
        })
    }
}

/// UCUM Table 1 prefixes: symbol and power of ten. `da` comes first so it wins over `d`.
const PREFIXES: [(&str, i32); 20] = [
    ("da", 1),
    ("Y", 24),
    ("Z", 21),
    ("E", 18),
    ("P", 15),
    ("T", 12),
    ("G", 9),
    ("M", 6),
    ("k", 3),
    ("h", 2),
    ("d", -1),
    ("c", -2),
    ("m", -3),
    ("u", -6),
    ("n", -9),
    ("p", -12),
    ("f", -15),
    ("a", -18),
    ("z", -21),
    ("y", -24),
];

/// An atom: `(unit, metric)`; metric atoms take prefixes.
fn atom(symbol: &str) -> Option<(Unit, bool)> {
    let u = match symbol {
        "g" => (Unit::base(G, 0, 1.0), true),
        "L" | "l" => (Unit::base(L, 0, 1.0), true),
        "m" => (Unit::base(M, 0, 1.0), true),
        "s" => (Unit::base(S, 0, 1.0), true),
        "mol" => (Unit::base(MOL, 0, 1.0), true),
        "eq" => (Unit::base(EQ, 0, 1.0), true),
        "Pa" => (Unit::base(PA, 0, 1.0), true),
        "K" => (Unit::base(KELVIN, 0, 1.0), true),
        // m[Hg] is the metric atom; mm[Hg] = 10^-3 m[Hg] is the canonical base.
        "m[Hg]" => (Unit::base(MMHG, 3, 1.0), true),
        // U = umol/min (UCUM Table 18).
        "U" => {
            let mut u = Unit::base(MOL, -6, 1.0 / 60.0);
            u.dims[S] = -1;
            (u, true)
        }
        "min" => (Unit::base(S, 0, 60.0), false),
        "h" => (Unit::base(S, 0, 3600.0), false),
        "d" => (Unit::base(S, 0, 86_400.0), false),
        "wk" => (Unit::base(S, 0, 604_800.0), false),
        "mo" => (Unit::base(S, 0, 2_629_800.0), false),
        "a" => (Unit::base(S, 0, 31_557_600.0), false),
        "[lb_av]" => (Unit::base(G, 0, 453.592_37), false),
        "[oz_av]" => (Unit::base(G, 0, 28.349_523_125), false),
        "[in_i]" => (Unit::base(M, -4, 254.0), false),
        "[ft_i]" => (Unit::base(M, -4, 3048.0), false),
        "%" => (
            Unit {
                exp10: -2,
                ..Unit::ONE
            },
            false,
        ),
        _ => return None,
    };
    Some(u)
}

/// Resolves a simple-unit symbol: an atom, or a prefix and a metric atom.
fn simple_unit(symbol: &str) -> Option<Unit> {
    if let Some((u, _)) = atom(symbol) {
        return Some(u);
    }
    for (p, e) in PREFIXES {
        if let Some(rest) = symbol.strip_prefix(p)
            && let Some((u, true)) = atom(rest)
        {
            return Some(Unit {
                exp10: u.exp10 + e,
                ..u
            });
        }
    }
    None
}

/// Recursive-descent parser over the UCUM grammar subset described in the module docs.
struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// term := ['/'] component (('.' | '/') component)*
    fn term(&mut self) -> Option<Unit> {
        let mut acc = if self.peek() == Some(b'/') {
            self.i += 1;
            self.component()?.pow(-1)?
        } else {
            self.component()?
        };
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.i += 1;
                    acc = acc.mul(self.component()?)?;
                }
                Some(b'/') => {
                    self.i += 1;
                    acc = acc.mul(self.component()?.pow(-1)?)?;
                }
                _ => return Some(acc),
            }
        }
    }

    /// component := '(' term ')' | annotation | factor | symbol [exponent] [annotation]
    fn component(&mut self) -> Option<Unit> {
        match self.peek()? {
            b'(' => {
                self.i += 1;
                let u = self.term()?;
                (self.peek() == Some(b')')).then_some(())?;
                self.i += 1;
                self.annotation()?;
                Some(u)
            }
            b'{' => {
                self.annotation()?;
                Some(Unit::ONE)
            }
            b'0'..=b'9' => {
                let n = self.integer()?;
                let u = if n == 10 && matches!(self.peek(), Some(b'*' | b'^')) {
                    self.i += 1;
                    let e = self.signed()?;
                    Unit {
                        exp10: e,
                        ..Unit::ONE
                    }
                } else {
                    Unit {
                        mantissa: n as f64,
                        ..Unit::ONE
                    }
                };
                self.annotation()?;
                Some(u)
            }
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    match c {
                        b'[' => {
                            while self.peek().is_some_and(|c| c != b']') {
                                self.i += 1;
                            }
                            self.peek()?;
                            self.i += 1;
                        }
                        b'.' | b'/' | b'(' | b')' | b'{' | b'+' | b'-' | b'0'..=b'9' => break,
                        _ => self.i += 1,
                    }
                }
                let symbol = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
                let mut u = simple_unit(symbol)?;
                if matches!(self.peek(), Some(b'+' | b'-' | b'0'..=b'9')) {
                    u = u.pow(self.signed()?)?;
                }
                self.annotation()?;
                Some(u)
            }
        }
    }

    /// Skips an optional `{…}` annotation; `None` when it is not closed.
    fn annotation(&mut self) -> Option<()> {
        if self.peek() == Some(b'{') {
            while self.peek().is_some_and(|c| c != b'}') {
                self.i += 1;
            }
            self.peek()?;
            self.i += 1;
        }
        Some(())
    }

    fn integer(&mut self) -> Option<i64> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(self.b.get(start..self.i)?)
            .ok()?
            .parse()
            .ok()
    }

    fn signed(&mut self) -> Option<i32> {
        let neg = match self.peek() {
            Some(b'-') => {
                self.i += 1;
                true
            }
            Some(b'+') => {
                self.i += 1;
                false
            }
            _ => false,
        };
        let n = i32::try_from(self.integer()?).ok()?;
        Some(if neg { -n } else { n })
    }
}

/// Converts `value` in the UCUM unit `unit_code` (case-sensitive UCUM, e.g. `mg/dL`,
/// `10*3/uL`, `mm[Hg]`, `kg/m2`) to its canonical unit (module docs): returns
/// `(canonical value, canonical code)`, e.g. `canonical(5.4, "mg/dL") == Some((0.054, "g/L"))`,
/// `canonical(37.0, "Cel") == Some((37.0, "Cel"))`, or `None` when the code is not in the
/// table or not valid UCUM, or the result is not finite.
///
/// Source: UCUM (unitsofmeasure.org) Tables 1–18; FHIR R4 search.html §3.1.1.4.10.
pub fn canonical(value: f64, unit_code: &str) -> Option<(f64, String)> {
    let code = unit_code.trim();
    match code {
        "Cel" => return Some((value, "Cel".to_string())),
        "[degF]" => return Some(((value - 32.0) * 5.0 / 9.0, "Cel".to_string())),
        "" => return None,
        _ => {}
    }
    let mut p = Parser {
        b: code.as_bytes(),
        i: 0,
    };
    let mut u = p.term()?;
    if p.i != code.len() {
        return None;
    }
    // Lengths cubed are volumes: m3 = 10^3 L.
    let m = u.dims[M];
    if m != 0 && m % 3 == 0 {
        let k = m / 3;
        u.dims[M] = 0;
        u.dims[L] = u.dims[L].checked_add(k)?;
        u.exp10 = u.exp10.checked_add(3 * i32::from(k))?;
    }
    let scaled = value * u.mantissa;
    let v = if u.exp10 >= 0 {
        scaled * 10f64.powi(u.exp10)
    } else {
        scaled / 10f64.powi(-u.exp10)
    };
    v.is_finite().then(|| (v, unit_string(&u.dims)))
}

/// Writes base exponents as a UCUM code (module docs, "Canonical form").
fn unit_string(dims: &[i8; 9]) -> String {
    let mut out = String::new();
    for (name, &d) in BASES.iter().zip(dims) {
        if d > 0 {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
            if d != 1 {
                out.push_str(&d.to_string());
            }
        }
    }
    let numerator_empty = out.is_empty();
    for (name, &d) in BASES.iter().zip(dims) {
        if d < 0 {
            out.push('/');
            out.push_str(name);
            if d != -1 {
                out.push_str(&(-d).to_string());
            }
        }
    }
    if numerator_empty && out.is_empty() {
        out.push('1');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::canonical;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
    }

    fn check(value: f64, unit: &str, want: f64, want_unit: &str) {
        let (v, u) = canonical(value, unit).unwrap_or_else(|| panic!("{unit} not converted"));
        assert_eq!(u, want_unit, "{unit}");
        assert!(close(v, want), "{value} {unit} = {v}, want {want}");
    }

    #[test]
    fn prefixed_mass_and_volume_units_share_a_canonical_form() {
        check(5.4, "mg/dL", 0.054, "g/L");
        check(54.0, "mg/L", 0.054, "g/L");
        assert_eq!(canonical(1.0, "mg/dL"), Some((0.01, "g/L".to_string())));
        check(2.0, "kg", 2000.0, "g");
        check(1.0, "ug", 1e-6, "g");
        check(140.0, "mmol/L", 0.14, "mol/L");
        check(1.0, "dag", 10.0, "g");
        check(1.0, "mL", 1e-3, "L");
        check(1.0, "cm3", 1e-3, "L");
        check(1.0, "meq/L", 1e-3, "eq/L");
    }

    #[test]
    fn counts_per_volume_use_powers_of_ten() {
        check(4.5, "10*3/uL", 4.5e9, "/L");
        check(4.5, "10^3/uL", 4.5e9, "/L");
        check(5.0, "10*12/L", 5e12, "/L");
        check(200.0, "10*3/mm3", 2e11, "/L");
    }

    #[test]
    fn time_length_mass_and_pressure_units() {
        check(72.0, "/min", 1.2, "/s");
        check(72.0, "{beats}/min", 1.2, "/s");
        check(2.0, "h", 7200.0, "s");
        check(1.0, "wk", 604_800.0, "s");
        check(1.0, "a", 31_557_600.0, "s");
        check(10.0, "[lb_av]", 4535.9237, "g");
        check(12.0, "[in_i]", 0.3048, "m");
        check(1.0, "[ft_i]", 0.3048, "m");
        check(120.0, "mm[Hg]", 120.0, "mm[Hg]");
        check(1.0, "cm[Hg]", 10.0, "mm[Hg]");
        check(1.0, "kPa", 1000.0, "Pa");
        check(25.0, "kg/m2", 25_000.0, "g/m2");
        check(9.8, "m/s2", 9.8, "m/s2");
        check(50.0, "%", 0.5, "1");
        check(3.0, "{score}", 3.0, "1");
        check(1.0, "U/L", 1e-6 / 60.0, "mol/L/s");
        check(1.0, "mg/(kg.d)", 1e-6 / 86_400.0, "/s");
    }

    #[test]
    fn temperatures_are_kept_on_the_celsius_scale() {
        check(37.0, "Cel", 37.0, "Cel");
        check(98.6, "[degF]", 37.0, "Cel");
    }

    #[test]
    fn unknown_or_arbitrary_units_give_none() {
        for u in [
            "[IU]",
            "[IU]/L",
            "xyz",
            "mg/",
            "(mg",
            "{unclosed",
            "",
            "kCel",
        ] {
            assert_eq!(canonical(1.0, u), None, "{u}");
        }
    }
}
