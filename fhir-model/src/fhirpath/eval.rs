//! The tree-walking evaluator (FHIRPath §3 "Path selection", §5 "Functions", §6
//! "Operations"; FHIR R4 fhirpath.html for `extension()`, `resolve()` and the FHIR types).

use super::parser::{Arg, BinOp, Expr, Func, Literal, TypeSpec};
use super::value::{Dec, PartialDt, Prec, Quantity, calendar_unit, ucum_canonical};
use super::{FhirPathError, Node, Sys, Ty};
use crate::registry::{Child, R4Registry, TypeDefinition};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

type R<T> = Result<T, FhirPathError>;
type Coll<'a> = Vec<Node<'a>>;

/// Variables in scope (FHIRPath §5.1.x iteration variables, §7 environment variables).
#[derive(Clone, Copy)]
struct Ctx<'a, 'e> {
    resource: &'e Node<'a>,
    context: &'e Node<'a>,
    this: Option<&'e Node<'a>>,
    index: Option<usize>,
    total: Option<&'e Node<'a>>,
}

fn err<T>(msg: impl Into<String>) -> R<T> {
    Err(FhirPathError::eval(msg))
}

/// The root node for a resource, typed by its `resourceType`.
pub(crate) fn root_node(resource: &Value) -> Node<'_> {
    let ty = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .and_then(resource_ty)
        .unwrap_or(Ty::Unknown);
    Node {
        value: Cow::Borrowed(resource),
        ty,
        ext: None,
    }
}

fn resource_ty(name: &str) -> Option<Ty> {
    let td = R4Registry::get().type_definition(name)?;
    Some(Ty::Fhir {
        name: td.name(),
        def: Some((td, 0)),
    })
}

pub(crate) fn evaluate<'a>(expr: &Expr, resource: &Node<'a>, context: &Node<'a>) -> R<Coll<'a>> {
    let ctx = Ctx {
        resource,
        context,
        this: Some(context),
        index: None,
        total: None,
    };
    eval(expr, std::slice::from_ref(context), ctx)
}

// ---------------------------------------------------------------------------------------
// Constructors of System values.

fn boolean<'a>(b: bool) -> Node<'a> {
    Node::sys(Value::Bool(b), Sys::Boolean)
}

fn string<'a>(s: impl Into<String>) -> Node<'a> {
    Node::sys(Value::String(s.into()), Sys::String)
}

fn integer<'a>(i: i64) -> Node<'a> {
    Node::sys(Value::Number(i.into()), Sys::Integer)
}

fn dec_number(d: Dec) -> Value {
    match d.to_string().parse::<Number>() {
        Ok(n) => Value::Number(n),
        Err(_) => Value::Null,
    }
}

fn decimal<'a>(d: Dec) -> Node<'a> {
    Node::sys(dec_number(d), Sys::Decimal)
}

fn quantity<'a>(q: &Quantity) -> Node<'a> {
    let mut m = Map::new();
    m.insert("value".into(), dec_number(q.value));
    m.insert("unit".into(), Value::String(q.unit.to_string()));
    Node::sys(Value::Object(m), Sys::Quantity)
}

fn date_node<'a>(d: PartialDt) -> Node<'a> {
    let s = if d.is_time {
        Sys::Time
    } else if d.is_datetime {
        Sys::DateTime
    } else {
        Sys::Date
    };
    Node::sys(Value::String(d.to_string()), s)
}

fn literal<'a>(l: &Literal) -> R<Node<'a>> {
    Ok(match l {
        Literal::Boolean(b) => boolean(*b),
        Literal::String(s) => string(&**s),
        Literal::Integer(i) => integer(*i),
        Literal::Decimal(d) => decimal(*d),
        Literal::Date(d) => Node::sys(Value::String(d.to_string()), Sys::Date),
        Literal::DateTime(d) => Node::sys(
            Value::String(d.trim_end_matches('T').to_string()),
            Sys::DateTime,
        ),
        Literal::Time(t) => Node::sys(Value::String(t.to_string()), Sys::Time),
        Literal::Quantity(q) => quantity(q),
    })
}

// ---------------------------------------------------------------------------------------
// Scalars: the System-type view of a node (FHIRPath §2.1, FHIR R4 fhirpath.html §"Types").

#[derive(Debug, Clone)]
enum Sc<'v> {
    B(bool),
    S(&'v str),
    I(i64),
    D(Dec),
    Date(PartialDt),
    Time(PartialDt),
    Q(Quantity),
    Obj,
}

fn num_text(n: &Number) -> &str {
    n.as_str()
}

fn json_number(n: &Number) -> Option<Sc<'static>> {
    let t = num_text(n);
    if !t.contains(['.', 'e', 'E'])
        && let Ok(i) = t.parse::<i64>()
    {
        return Some(Sc::I(i));
    }
    Dec::parse(t).map(Sc::D)
}

fn json_quantity(v: &Value) -> Option<Quantity> {
    let value = match v.get("value")? {
        Value::Number(n) => Dec::parse(num_text(n))?,
        _ => return None,
    };
    let ucum = v.get("system").and_then(Value::as_str) == Some("http://unitsofmeasure.org");
    let unit = if ucum {
        v.get("code").and_then(Value::as_str)
    } else {
        None
    }
    .or_else(|| v.get("unit").and_then(Value::as_str))
    .or_else(|| v.get("code").and_then(Value::as_str))
    .unwrap_or("1");
    Some(Quantity {
        value,
        unit: unit.into(),
    })
}

fn is_quantity_type(name: &str) -> bool {
    matches!(
        name,
        "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "SimpleQuantity" | "MoneyQuantity"
    )
}

fn scalar<'v>(n: &'v Node<'_>) -> Option<Sc<'v>> {
    let v: &'v Value = &n.value;
    match n.ty {
        Ty::Sys(s) => match (s, v) {
            (Sys::Boolean, Value::Bool(b)) => Some(Sc::B(*b)),
            (Sys::String, Value::String(s)) => Some(Sc::S(s)),
            (Sys::Integer | Sys::Decimal, Value::Number(x)) => {
                json_number(x).map(|sc| match (s, sc) {
                    (Sys::Decimal, Sc::I(i)) => Sc::D(Dec::from_i64(i)),
                    (_, other) => other,
                })
            }
            (Sys::Date, Value::String(s)) => PartialDt::parse_date(s).map(Sc::Date),
            (Sys::DateTime, Value::String(s)) => PartialDt::parse_datetime(s).map(Sc::Date),
            (Sys::Time, Value::String(s)) => PartialDt::parse_time(s).map(Sc::Time),
            (Sys::Quantity, _) => json_quantity(v).map(Sc::Q),
            _ => None,
        },
        Ty::Fhir { name, .. } => match (name, v) {
            (_, Value::Null) => None,
            ("boolean", Value::Bool(b)) => Some(Sc::B(*b)),
            ("integer" | "positiveInt" | "unsignedInt", Value::Number(x)) => json_number(x),
            ("decimal", Value::Number(x)) => json_number(x).map(|sc| match sc {
                Sc::I(i) => Sc::D(Dec::from_i64(i)),
                other => other,
            }),
            ("date", Value::String(s)) => PartialDt::parse_date(s).map(Sc::Date),
            ("dateTime" | "instant", Value::String(s)) => {
                PartialDt::parse_datetime(s).map(Sc::Date)
            }
            ("time", Value::String(s)) => PartialDt::parse_time(s).map(Sc::Time),
            (q, Value::Object(_)) if is_quantity_type(q) => json_quantity(v).map(Sc::Q),
            (_, other) => json_scalar(other),
        },
        Ty::Unknown => json_scalar(v),
    }
}

fn json_scalar(v: &Value) -> Option<Sc<'_>> {
    match v {
        Value::Bool(b) => Some(Sc::B(*b)),
        Value::String(s) => Some(Sc::S(s)),
        Value::Number(n) => json_number(n),
        Value::Object(_) | Value::Array(_) => Some(Sc::Obj),
        Value::Null => None,
    }
}

/// A node converted to its System value (used for output of `getValue()` and conversions).
fn sc_node<'a>(sc: &Sc<'_>) -> Option<Node<'a>> {
    Some(match sc {
        Sc::B(b) => boolean(*b),
        Sc::S(s) => string(*s),
        Sc::I(i) => integer(*i),
        Sc::D(d) => decimal(*d),
        Sc::Date(d) | Sc::Time(d) => date_node(*d),
        Sc::Q(q) => quantity(q),
        Sc::Obj => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Navigation.

/// Type of a child element: fixed, or a resource typed by its `resourceType`.
fn fix_ty(ty: Ty, v: &Value) -> Ty {
    match ty {
        Ty::Fhir {
            name: "Resource" | "DomainResource",
            ..
        }
        | Ty::Unknown => v
            .get("resourceType")
            .and_then(Value::as_str)
            .and_then(resource_ty)
            .unwrap_or(ty),
        _ => ty,
    }
}

fn code_ty(code: &'static str) -> Ty {
    match R4Registry::get().type_definition(code) {
        Some(td) => Ty::Fhir {
            name: td.name(),
            def: Some((td, 0)),
        },
        None => Ty::Fhir {
            name: code,
            def: None,
        },
    }
}

fn elem_ty(td: &'static TypeDefinition, c: Child) -> Ty {
    let e = c.element();
    let info = td.element_at(e);
    if let Some(n) = td.node_of(e) {
        let name = info.types().first().map_or("BackboneElement", |t| t.code());
        return Ty::Fhir {
            name,
            def: Some((td, n)),
        };
    }
    let code = match c {
        Child::Choice { type_index, .. } => info.types().get(type_index as usize),
        _ if info.types().len() == 1 => info.types().first(),
        _ => None,
    };
    code.map_or(Ty::Unknown, |t| code_ty(t.code()))
}

/// Calls `f` with `prefix + name + suffix` built on the stack when short.
fn with_affix<T>(prefix: &str, name: &str, suffix: &str, f: impl FnOnce(&str) -> T) -> T {
    let len = prefix.len() + name.len() + suffix.len();
    if len <= 96 {
        let mut buf = [0u8; 96];
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()..prefix.len() + name.len()].copy_from_slice(name.as_bytes());
        buf[prefix.len() + name.len()..len].copy_from_slice(suffix.as_bytes());
        match std::str::from_utf8(&buf[..len]) {
            Ok(s) => f(s),
            Err(_) => f(&format!("{prefix}{name}{suffix}")),
        }
    } else {
        f(&format!("{prefix}{name}{suffix}"))
    }
}

fn get_child<'a>(parent: &Node<'a>, key: &str) -> Option<Cow<'a, Value>> {
    match &parent.value {
        Cow::Borrowed(v) => v.get(key).map(Cow::Borrowed),
        Cow::Owned(v) => v.get(key).cloned().map(Cow::Owned),
    }
}

fn get_ext<'a>(parent: &Node<'a>, key: &str) -> Option<&'a Value> {
    match &parent.value {
        Cow::Borrowed(v) if v.is_object() => with_affix("_", key, "", |k| v.get(k)),
        _ => None,
    }
}

/// Pushes the value (flattening arrays, pairing with `_name` siblings).
fn push_values<'a>(
    out: &mut Coll<'a>,
    value: Option<Cow<'a, Value>>,
    ext: Option<&'a Value>,
    ty: Ty,
) {
    match value {
        Some(Cow::Borrowed(Value::Array(items))) => {
            let exts = ext.and_then(Value::as_array);
            for (i, v) in items.iter().enumerate() {
                let e = exts.and_then(|x| x.get(i)).filter(|x| !x.is_null());
                if v.is_null() && e.is_none() {
                    continue;
                }
                out.push(Node {
                    ty: fix_ty(ty, v),
                    value: Cow::Borrowed(v),
                    ext: e,
                });
            }
        }
        Some(Cow::Owned(Value::Array(items))) => {
            for v in items {
                if v.is_null() {
                    continue;
                }
                out.push(Node {
                    ty: fix_ty(ty, &v),
                    value: Cow::Owned(v),
                    ext: None,
                });
            }
        }
        Some(v) => {
            if v.is_null() && ext.is_none() {
                return;
            }
            out.push(Node {
                ty: fix_ty(ty, &v),
                value: v,
                ext,
            });
        }
        None => {
            // A primitive with only extensions.
            match ext {
                Some(Value::Array(exts)) => {
                    for e in exts.iter().filter(|e| !e.is_null()) {
                        out.push(Node {
                            ty,
                            value: Cow::Owned(Value::Null),
                            ext: Some(e),
                        });
                    }
                }
                Some(e) => out.push(Node {
                    ty,
                    value: Cow::Owned(Value::Null),
                    ext: Some(e),
                }),
                None => {}
            }
        }
    }
}

fn is_type_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
}

/// Member navigation `item.name` (FHIRPath §3; FHIR choice types fhirpath.html).
fn navigate<'a>(item: &Node<'a>, name: &str, out: &mut Coll<'a>) {
    if is_type_name(name)
        && let Some(tn) = item.type_name()
        && (tn == name || (fhir_is(tn, name) && R4Registry::get().type_definition(name).is_some()))
    {
        out.push(item.clone());
        return;
    }
    // Primitive: navigate into its `_name` sibling (id, extension).
    if !item.value.is_object() {
        if let Some(ext) = item.ext {
            let el = R4Registry::get().type_definition("Element");
            let ty = el
                .and_then(|td| td.child(0, name).map(|c| elem_ty(td, c)))
                .unwrap_or(Ty::Unknown);
            push_values(out, ext.get(name).map(Cow::Borrowed), None, ty);
        }
        return;
    }
    let def = match item.ty {
        Ty::Fhir { def, .. } => def,
        _ => None,
    };
    if let Some((td, node)) = def {
        if let Some(c) = td.child(node, name) {
            let ty = elem_ty(td, c);
            let is_prim = matches!(ty, Ty::Fhir { def: None, .. });
            let ext = if is_prim { get_ext(item, name) } else { None };
            push_values(out, get_child(item, name), ext, ty);
            return;
        }
        // Choice element: `value` finds `valueQuantity` etc.
        if let Some(Child::ChoiceBase(e)) = with_affix("", name, "[x]", |k| td.child(node, k)) {
            let before = out.len();
            let Some(obj) = item.value.as_object() else {
                return;
            };
            for k in obj.keys() {
                if k.len() > name.len()
                    && k.starts_with(name)
                    && let Some(c @ Child::Choice { element, .. }) = td.child(node, k)
                    && element == e
                {
                    let ty = elem_ty(td, c);
                    let ext = get_ext(item, k);
                    push_values(out, get_child(item, k), ext, ty);
                }
            }
            // Only the `_valueDate` form present (a primitive with extensions only).
            if out.len() == before
                && let Cow::Borrowed(Value::Object(bo)) = &item.value
            {
                for (k, v) in bo {
                    if let Some(base) = k.strip_prefix('_')
                        && base.len() > name.len()
                        && base.starts_with(name)
                        && !bo.contains_key(base)
                        && let Some(c @ Child::Choice { element, .. }) = td.child(node, base)
                        && element == e
                    {
                        push_values(out, None, Some(v), elem_ty(td, c));
                    }
                }
            }
            return;
        }
        // Unknown to the registry: fall through to plain JSON navigation.
    }
    let before = out.len();
    let ext = get_ext(item, name);
    push_values(out, get_child(item, name), ext, Ty::Unknown);
    if out.len() == before {
        // Untyped choice element: `value` -> `valueQuantity`, typed from the suffix.
        if let Some(obj) = item.value.as_object() {
            for k in obj.keys() {
                if let Some(suffix) = k.strip_prefix(name)
                    && suffix.starts_with(|c: char| c.is_ascii_uppercase())
                    && let Some(ty) = suffix_ty(suffix)
                {
                    let ext = get_ext(item, k);
                    push_values(out, get_child(item, k), ext, ty);
                }
            }
        }
    }
}

/// The type named by a choice suffix (`Quantity`, `DateTime` -> `dateTime`).
fn suffix_ty(suffix: &str) -> Option<Ty> {
    let reg = R4Registry::get();
    if let Some(td) = reg.type_definition(suffix) {
        return Some(Ty::Fhir {
            name: td.name(),
            def: Some((td, 0)),
        });
    }
    reg.primitive_types()
        .find(|p| {
            p.len() == suffix.len()
                && p[1..] == suffix[1..]
                && p.as_bytes()[0].eq_ignore_ascii_case(&suffix.as_bytes()[0])
        })
        .map(|p| Ty::Fhir { name: p, def: None })
}

/// All children of a node (FHIRPath §5.8 `children()`).
fn children<'a>(item: &Node<'a>, out: &mut Coll<'a>) {
    if let Some(obj) = item.value.as_object() {
        let keys: Vec<String> = obj
            .keys()
            .filter(|k| *k != "resourceType")
            .map(|k| match k.strip_prefix('_') {
                Some(b) if !obj.contains_key(b) => b.to_string(),
                _ => k.clone(),
            })
            .filter(|k| !k.starts_with('_'))
            .collect();
        for k in keys {
            // Navigate by the exact JSON name so choice forms keep their type.
            let def = match item.ty {
                Ty::Fhir { def, .. } => def,
                _ => None,
            };
            match def.and_then(|(td, node)| td.child(node, &k).map(|c| (td, c))) {
                Some((td, c)) => {
                    let ty = elem_ty(td, c);
                    let ext = get_ext(item, &k);
                    push_values(out, get_child(item, &k), ext, ty);
                }
                None => {
                    let ext = get_ext(item, &k);
                    push_values(out, get_child(item, &k), ext, Ty::Unknown);
                }
            }
        }
    } else if let Some(Value::Object(e)) = item.ext {
        for k in e.keys() {
            navigate(item, k, out);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Types (FHIRPath §6.3, FHIR R4 fhirpath.html §"Types").

/// Whether FHIR type `actual` is `wanted` or derives from it (StructureDefinition
/// baseDefinition chain; for primitives the R4 specialisations of `uri` and `integer`).
fn fhir_is(actual: &str, wanted: &str) -> bool {
    if actual == wanted {
        return true;
    }
    if matches!(
        (actual, wanted),
        ("url" | "canonical" | "oid" | "uuid", "uri") | ("positiveInt" | "unsignedInt", "integer")
    ) {
        return true;
    }
    let reg = R4Registry::get();
    let mut cur = reg.type_definition(actual);
    let mut guard = 0;
    while let Some(td) = cur {
        match td.base() {
            Some(b) if b == wanted => return true,
            Some(b) => cur = reg.type_definition(b),
            None => break,
        }
        guard += 1;
        if guard > 10 {
            break;
        }
    }
    false
}

/// `is` (FHIRPath §6.3.1). Unlike `as`/`ofType`, `is` also accepts the string
/// specialisations `code`, `id` and `markdown` as `string`: the R4 suite expects
/// `Patient.gender.is(string)` but an empty `Patient.gender.as(string)`.
fn type_is(n: &Node<'_>, ts: &TypeSpec) -> bool {
    if let Ty::Fhir {
        name: "code" | "id" | "markdown",
        ..
    } = n.ty
        && &*ts.name == "string"
        && ts.namespace.as_deref() != Some("System")
    {
        return true;
    }
    type_matches(n, ts)
}

fn type_matches(n: &Node<'_>, ts: &TypeSpec) -> bool {
    let ns = ts.namespace.as_deref();
    let want = &*ts.name;
    match n.ty {
        Ty::Sys(s) => ns != Some("FHIR") && s.name() == want,
        Ty::Fhir { name, .. } => ns != Some("System") && fhir_is(name, want),
        Ty::Unknown => match n.value.get("resourceType").and_then(Value::as_str) {
            Some(rt) => ns != Some("System") && fhir_is(rt, want),
            None => {
                ns != Some("FHIR")
                    && match json_scalar(&n.value) {
                        Some(Sc::B(_)) => want == "Boolean",
                        Some(Sc::S(_)) => want == "String",
                        Some(Sc::I(_)) => want == "Integer",
                        Some(Sc::D(_)) => want == "Decimal",
                        _ => false,
                    }
            }
        },
    }
}

fn type_info<'a>(n: &Node<'_>) -> Node<'a> {
    let (ns, name) = match n.ty {
        Ty::Sys(s) => ("System", s.name().to_string()),
        Ty::Fhir { name, .. } => ("FHIR", name.to_string()),
        Ty::Unknown => match n.value.get("resourceType").and_then(Value::as_str) {
            Some(rt) => ("FHIR", rt.to_string()),
            None => (
                "System",
                match json_scalar(&n.value) {
                    Some(Sc::B(_)) => "Boolean",
                    Some(Sc::S(_)) => "String",
                    Some(Sc::I(_)) => "Integer",
                    Some(Sc::D(_)) => "Decimal",
                    _ => "Any",
                }
                .to_string(),
            ),
        },
    };
    let mut m = Map::new();
    m.insert("namespace".into(), Value::String(ns.into()));
    m.insert("name".into(), Value::String(name));
    Node {
        value: Cow::Owned(Value::Object(m)),
        ty: Ty::Unknown,
        ext: None,
    }
}

// ---------------------------------------------------------------------------------------
// Equality, equivalence and ordering (FHIRPath §6.1, §6.2).

fn norm_cal(u: &str) -> &str {
    match u {
        "week" | "weeks" => "wk",
        "day" | "days" => "d",
        "hour" | "hours" => "h",
        "minute" | "minutes" => "min",
        "second" | "seconds" => "s",
        "millisecond" | "milliseconds" => "ms",
        "year" | "years" => "year",
        "month" | "months" => "month",
        other => other,
    }
}

/// Compares two quantities; `None` when not comparable.
fn qty_cmp(a: &Quantity, b: &Quantity) -> Option<Ordering> {
    let (ua, ub) = (norm_cal(&a.unit), norm_cal(&b.unit));
    if ua == ub {
        return Some(a.value.cmp(b.value));
    }
    if matches!(ua, "year" | "month") || matches!(ub, "year" | "month") {
        return None;
    }
    let (fa, da) = ucum_canonical(ua)?;
    let (fb, db) = ucum_canonical(ub)?;
    if da != db {
        return None;
    }
    let (x, y) = (a.value.to_f64() * fa, b.value.to_f64() * fb);
    let tol = 1e-9 * x.abs().max(y.abs());
    if (x - y).abs() <= tol {
        Some(Ordering::Equal)
    } else {
        x.partial_cmp(&y)
    }
}

fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (Dec::parse(x.as_str()), Dec::parse(y.as_str())) {
                (Some(p), Some(q)) => p.cmp(q) == Ordering::Equal,
                _ => x == y,
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equal(v, w))
        }
        _ => a == b,
    }
}

/// `=` on single items: `None` is the empty result.
fn item_equal(a: &Node<'_>, b: &Node<'_>) -> Option<bool> {
    let (sa, sb) = (scalar(a)?, scalar(b)?);
    Some(match (sa, sb) {
        (Sc::S(x), Sc::S(y)) => x == y,
        (Sc::B(x), Sc::B(y)) => x == y,
        (Sc::I(x), Sc::I(y)) => x == y,
        (Sc::I(x), Sc::D(y)) | (Sc::D(y), Sc::I(x)) => Dec::from_i64(x).cmp(y) == Ordering::Equal,
        (Sc::D(x), Sc::D(y)) => x.cmp(y) == Ordering::Equal,
        (Sc::Date(x), Sc::Date(y)) | (Sc::Time(x), Sc::Time(y)) => {
            return x.compare(y).map(|o| o == Ordering::Equal);
        }
        (Sc::S(s), Sc::Date(d)) | (Sc::Date(d), Sc::S(s)) => {
            let p = PartialDt::parse_datetime(s)?;
            return p.compare(d).map(|o| o == Ordering::Equal);
        }
        (Sc::Q(x), Sc::Q(y)) => {
            return qty_cmp(&x, &y).map(|o| o == Ordering::Equal).or(
                if calendar_mismatch(&x, &y) {
                    None
                } else {
                    Some(false)
                },
            );
        }
        (Sc::Obj, Sc::Obj) => json_equal(&a.value, &b.value),
        _ => false,
    })
}

fn calendar_mismatch(a: &Quantity, b: &Quantity) -> bool {
    let cal = |u: &str| matches!(norm_cal(u), "year" | "month" | "a" | "mo");
    cal(&a.unit) && cal(&b.unit)
}

fn norm_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `~` on single items (FHIRPath §6.1.3).
fn item_equiv(a: &Node<'_>, b: &Node<'_>) -> bool {
    let (Some(sa), Some(sb)) = (scalar(a), scalar(b)) else {
        return false;
    };
    match (sa, sb) {
        (Sc::S(x), Sc::S(y)) => norm_ws(x) == norm_ws(y),
        (Sc::I(x), Sc::I(y)) => x == y,
        (Sc::I(x), Sc::D(y)) | (Sc::D(y), Sc::I(x)) => dec_equiv(Dec::from_i64(x), y),
        (Sc::D(x), Sc::D(y)) => dec_equiv(x, y),
        (Sc::B(x), Sc::B(y)) => x == y,
        (Sc::Date(x), Sc::Date(y)) | (Sc::Time(x), Sc::Time(y)) => {
            x.compare(y) == Some(Ordering::Equal)
        }
        (Sc::Q(x), Sc::Q(y)) => {
            let (ux, uy) = (norm_cal(&x.unit), norm_cal(&y.unit));
            let (xx, yy) = (
                Quantity {
                    value: x.value,
                    unit: (if ux == "year" {
                        "a"
                    } else if ux == "month" {
                        "mo"
                    } else {
                        ux
                    })
                    .into(),
                },
                Quantity {
                    value: y.value,
                    unit: (if uy == "year" {
                        "a"
                    } else if uy == "month" {
                        "mo"
                    } else {
                        uy
                    })
                    .into(),
                },
            );
            match (ucum_canonical(&xx.unit), ucum_canonical(&yy.unit)) {
                (Some((fx, dx)), Some((fy, dy))) if dx == dy => {
                    let s = x.value.scale.min(y.value.scale);
                    let (p, q) = (xx.value.to_f64() * fx, yy.value.to_f64() * fy);
                    // Compare at the least precise operand's precision, in the first unit.
                    let q_in_x = q / fx;
                    let pd = Dec::from_f64(p / fx).map(|d| d.round_to(s));
                    let qd = Dec::from_f64(q_in_x).map(|d| d.round_to(s));
                    pd.zip(qd).is_some_and(|(m, n)| m.cmp(n) == Ordering::Equal)
                }
                _ => qty_cmp(&xx, &yy) == Some(Ordering::Equal),
            }
        }
        (Sc::Obj, Sc::Obj) => coll_equiv_json(&a.value, &b.value),
        _ => false,
    }
}

fn coll_equiv_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => norm_ws(x) == norm_ws(y),
        (Value::Object(x), Value::Object(y)) => {
            let keys = |m: &Map<String, Value>| m.keys().filter(|k| *k != "id").count();
            keys(x) == keys(y)
                && x.iter()
                    .filter(|(k, _)| *k != "id")
                    .all(|(k, v)| y.get(k).is_some_and(|w| coll_equiv_json(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| coll_equiv_json(v, w))
        }
        _ => json_equal(a, b),
    }
}

fn dec_equiv(a: Dec, b: Dec) -> bool {
    let s = a.normalize().scale.min(b.normalize().scale);
    a.round_to(s).cmp(b.round_to(s)) == Ordering::Equal
}

/// Ordering for `<` etc.: `Ok(None)` is empty, `Err` for incomparable types.
fn item_cmp(a: &Node<'_>, b: &Node<'_>) -> R<Option<Ordering>> {
    let (Some(sa), Some(sb)) = (scalar(a), scalar(b)) else {
        return Ok(None);
    };
    Ok(match (sa, sb) {
        (Sc::S(x), Sc::S(y)) => Some(x.cmp(y)),
        (Sc::I(x), Sc::I(y)) => Some(x.cmp(&y)),
        (Sc::I(x), Sc::D(y)) => Some(Dec::from_i64(x).cmp(y)),
        (Sc::D(x), Sc::I(y)) => Some(x.cmp(Dec::from_i64(y))),
        (Sc::D(x), Sc::D(y)) => Some(x.cmp(y)),
        (Sc::Date(x), Sc::Date(y)) | (Sc::Time(x), Sc::Time(y)) => x.compare(y),
        (Sc::S(s), Sc::Date(d)) => PartialDt::parse_datetime(s).and_then(|p| p.compare(d)),
        (Sc::Date(d), Sc::S(s)) => PartialDt::parse_datetime(s).and_then(|p| d.compare(p)),
        (Sc::Q(x), Sc::Q(y)) => match qty_cmp(&x, &y) {
            Some(o) => Some(o),
            None => return err("quantities with incompatible units"),
        },
        (x, y) => return err(format!("cannot compare {x:?} with {y:?}")),
    })
}

// ---------------------------------------------------------------------------------------
// Helpers on collections.

fn singleton<'c, 'a>(c: &'c [Node<'a>], what: &str) -> R<Option<&'c Node<'a>>> {
    match c.len() {
        0 => Ok(None),
        1 => Ok(c.first()),
        n => err(format!("{what}: expected a single item, got {n}")),
    }
}

/// Singleton evaluation as Boolean (FHIRPath §4.5): empty is `None`.
fn to_bool3(c: &[Node<'_>]) -> R<Option<bool>> {
    match singleton(c, "boolean")? {
        None => Ok(None),
        Some(n) => match &*n.value {
            Value::Bool(b) => Ok(Some(*b)),
            _ => Ok(Some(true)),
        },
    }
}

fn bool_coll<'a>(b: Option<bool>) -> Coll<'a> {
    b.map(boolean).into_iter().collect()
}

fn contains_item(c: &[Node<'_>], n: &Node<'_>) -> bool {
    c.iter().any(|x| item_equal(x, n) == Some(true))
}

fn distinct<'a>(c: Coll<'a>) -> Coll<'a> {
    let mut out: Coll<'a> = Vec::with_capacity(c.len());
    for n in c {
        if !contains_item(&out, &n) {
            out.push(n);
        }
    }
    out
}

fn str_arg(c: &[Node<'_>], what: &str) -> R<Option<String>> {
    match singleton(c, what)? {
        None => Ok(None),
        Some(n) => match scalar(n) {
            Some(Sc::S(s)) => Ok(Some(s.to_string())),
            None => Ok(None),
            _ => err(format!("{what}: expected a string")),
        },
    }
}

fn int_arg(c: &[Node<'_>], what: &str) -> R<Option<i64>> {
    match singleton(c, what)? {
        None => Ok(None),
        Some(n) => match scalar(n) {
            Some(Sc::I(i)) => Ok(Some(i)),
            None => Ok(None),
            _ => err(format!("{what}: expected an integer")),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Conversions (FHIRPath §5.5).

fn to_string_sc(sc: &Sc<'_>) -> Option<String> {
    Some(match sc {
        Sc::S(s) => (*s).to_string(),
        Sc::B(b) => b.to_string(),
        Sc::I(i) => i.to_string(),
        Sc::D(d) => d.to_string(),
        Sc::Date(d) | Sc::Time(d) => d.to_string(),
        Sc::Q(q) => {
            if calendar_word(&q.unit) {
                format!("{} {}", q.value, q.unit)
            } else {
                format!("{} '{}'", q.value, q.unit)
            }
        }
        Sc::Obj => return None,
    })
}

fn calendar_word(u: &str) -> bool {
    calendar_unit(u).is_some() && u.len() > 3 && u != "mo"
        || matches!(u, "year" | "day" | "week" | "hour")
}

fn to_string_node(n: &Node<'_>) -> Option<String> {
    let sc = scalar(n)?;
    // Dates keep their original text form.
    match (&sc, &*n.value) {
        (Sc::Date(_) | Sc::Time(_), Value::String(s)) => Some(s.clone()),
        (Sc::D(_), Value::Number(x)) => Some(x.as_str().to_string()),
        _ => to_string_sc(&sc),
    }
}

fn parse_quantity_str(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let (num, rest) = match s.find(' ') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let value = Dec::parse(num)?;
    if num.starts_with('+') && num.len() > 1 {
        // allowed
    }
    let unit = if rest.is_empty() {
        "1".to_string()
    } else if let Some(u) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        u.to_string()
    } else if calendar_unit(rest).is_some() && rest.len() > 3
        || matches!(rest, "year" | "day" | "week" | "hour")
    {
        rest.to_string()
    } else {
        return None;
    };
    Some(Quantity {
        value,
        unit: unit.into(),
    })
}

fn convert<'a>(f: Func, n: &Node<'a>) -> R<Option<Node<'a>>> {
    let Some(sc) = scalar(n) else {
        return Ok(None);
    };
    Ok(match f {
        Func::ToBoolean => match sc {
            Sc::B(b) => Some(boolean(b)),
            Sc::I(1) => Some(boolean(true)),
            Sc::I(0) => Some(boolean(false)),
            Sc::D(d) if d.cmp(Dec::from_i64(1)) == Ordering::Equal => Some(boolean(true)),
            Sc::D(d) if d.cmp(Dec::from_i64(0)) == Ordering::Equal => Some(boolean(false)),
            Sc::S(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(boolean(true)),
                "false" | "f" | "no" | "n" | "0" | "0.0" => Some(boolean(false)),
                _ => None,
            },
            _ => None,
        },
        Func::ToInteger => match sc {
            Sc::I(i) => Some(integer(i)),
            Sc::B(b) => Some(integer(i64::from(b))),
            Sc::S(s) => {
                let t = s.strip_prefix('+').unwrap_or(s);
                if !t.is_empty()
                    && t.trim_start_matches('-')
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                {
                    s.parse::<i64>().ok().map(integer)
                } else {
                    None
                }
            }
            _ => None,
        },
        Func::ToDecimal => match sc {
            Sc::I(i) => Some(decimal(Dec::from_i64(i))),
            Sc::D(d) => Some(decimal(d)),
            Sc::B(b) => Some(decimal(Dec::from_i64(i64::from(b)))),
            Sc::S(s) => Dec::parse(s)
                .filter(|_| !s.contains(['e', 'E']))
                .map(decimal),
            _ => None,
        },
        Func::ToString => to_string_node(n).map(string),
        Func::ToDate => match sc {
            Sc::Date(d) => {
                let mut d = d;
                d.is_datetime = false;
                if d.prec > Prec::Day {
                    d.prec = Prec::Day;
                    d.tz = None;
                }
                Some(date_node(d))
            }
            Sc::S(s) => PartialDt::parse_date(s).map(date_node),
            _ => None,
        },
        Func::ToDateTime => match sc {
            Sc::Date(mut d) => {
                d.is_datetime = true;
                Some(date_node(d))
            }
            Sc::S(s) => PartialDt::parse_datetime(s).map(date_node),
            _ => None,
        },
        Func::ToTime => match sc {
            Sc::Time(d) => Some(date_node(d)),
            Sc::S(s) => PartialDt::parse_time(s).map(date_node),
            _ => None,
        },
        Func::ToQuantity => match sc {
            Sc::Q(q) => Some(quantity(&q)),
            Sc::I(i) => Some(quantity(&Quantity {
                value: Dec::from_i64(i),
                unit: "1".into(),
            })),
            Sc::D(d) => Some(quantity(&Quantity {
                value: d,
                unit: "1".into(),
            })),
            Sc::B(b) => Some(quantity(&Quantity {
                value: Dec::from_i64(i64::from(b)),
                unit: "1".into(),
            })),
            Sc::S(s) => parse_quantity_str(s).map(|q| quantity(&q)),
            _ => None,
        },
        _ => None,
    })
}

fn converts_target(f: Func) -> Func {
    match f {
        Func::ConvertsToBoolean => Func::ToBoolean,
        Func::ConvertsToInteger => Func::ToInteger,
        Func::ConvertsToDecimal => Func::ToDecimal,
        Func::ConvertsToString => Func::ToString,
        Func::ConvertsToDate => Func::ToDate,
        Func::ConvertsToDateTime => Func::ToDateTime,
        Func::ConvertsToTime => Func::ToTime,
        _ => Func::ToQuantity,
    }
}

// ---------------------------------------------------------------------------------------
// Arithmetic (FHIRPath §6.6).

fn num_of(sc: &Sc<'_>) -> Option<Dec> {
    match sc {
        Sc::I(i) => Some(Dec::from_i64(*i)),
        Sc::D(d) => Some(*d),
        _ => None,
    }
}

fn unit_mul(a: &str, b: &str, div: bool) -> String {
    let (a, b) = (norm_cal(a), norm_cal(b));
    match (a, b, div) {
        ("1", "1", _) => "1".into(),
        (x, "1", _) => x.into(),
        ("1", y, false) => y.into(),
        ("1", y, true) => format!("1/{y}"),
        (x, y, true) if x == y => "1".into(),
        (x, y, false) => format!("{x}.{y}"),
        (x, y, true) => format!("{x}/{y}"),
    }
}

fn arith<'a>(op: BinOp, a: &Node<'_>, b: &Node<'_>) -> R<Option<Node<'a>>> {
    let (Some(sa), Some(sb)) = (scalar(a), scalar(b)) else {
        return Ok(None);
    };
    let overflow = || FhirPathError::eval("arithmetic overflow");
    Ok(match (op, &sa, &sb) {
        (BinOp::Add, Sc::S(x), Sc::S(y)) => Some(string(format!("{x}{y}"))),
        (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Mod, Sc::I(x), Sc::I(y)) => {
            let r = match op {
                BinOp::Add => x.checked_add(*y),
                BinOp::Sub => x.checked_sub(*y),
                BinOp::Mul => x.checked_mul(*y),
                _ => {
                    if *y == 0 {
                        return Ok(None);
                    }
                    x.checked_rem(*y)
                }
            };
            Some(integer(r.ok_or_else(overflow)?))
        }
        (BinOp::IntDiv, Sc::I(x), Sc::I(y)) => {
            if *y == 0 {
                return Ok(None);
            }
            Some(integer(x.checked_div(*y).ok_or_else(overflow)?))
        }
        (BinOp::Add | BinOp::Sub, Sc::Date(d), Sc::Q(q)) => {
            let amount = if op == BinOp::Sub {
                q.value.neg()
            } else {
                q.value
            };
            // UCUM 'a' and 'mo' are not calendar durations (§6.6.2): an error, like
            // non-time units.
            if calendar_unit(&q.unit).is_none() || matches!(&*q.unit, "a" | "mo") {
                return err(format!("cannot add '{}' to a date", q.unit));
            }
            let r = d
                .add(&amount, &q.unit)
                .ok_or_else(|| FhirPathError::eval("date arithmetic"))?;
            Some(date_node(r))
        }
        (BinOp::Add | BinOp::Sub, Sc::Time(d), Sc::Q(q)) => {
            let amount = if op == BinOp::Sub {
                q.value.neg()
            } else {
                q.value
            };
            d.add(&amount, &q.unit).map(date_node)
        }
        (BinOp::Add | BinOp::Sub, Sc::Q(x), Sc::Q(y)) => {
            let y_val = if norm_cal(&x.unit) == norm_cal(&y.unit) {
                Some(y.value)
            } else {
                match (ucum_canonical(&x.unit), ucum_canonical(&y.unit)) {
                    (Some((fx, dx)), Some((fy, dy))) if dx == dy => {
                        Dec::from_f64(y.value.to_f64() * fy / fx)
                    }
                    _ => None,
                }
            };
            match y_val {
                Some(v) => {
                    let r = if op == BinOp::Add {
                        x.value.add(v)
                    } else {
                        x.value.sub(v)
                    };
                    r.map(|value| {
                        quantity(&Quantity {
                            value,
                            unit: x.unit.clone(),
                        })
                    })
                }
                None => None,
            }
        }
        (BinOp::Mul | BinOp::Div, Sc::Q(x), Sc::Q(y)) => {
            let v = if op == BinOp::Mul {
                x.value.mul(y.value)
            } else {
                x.value.div(y.value)
            };
            v.map(|value| {
                quantity(&Quantity {
                    value,
                    unit: unit_mul(&x.unit, &y.unit, op == BinOp::Div).into(),
                })
            })
        }
        (BinOp::Mul | BinOp::Div, Sc::Q(x), n) if num_of(n).is_some() => {
            let k = num_of(n).ok_or_else(overflow)?;
            let v = if op == BinOp::Mul {
                x.value.mul(k)
            } else {
                x.value.div(k)
            };
            v.map(|value| {
                quantity(&Quantity {
                    value,
                    unit: x.unit.clone(),
                })
            })
        }
        (BinOp::Mul, n, Sc::Q(y)) if num_of(n).is_some() => {
            let k = num_of(n).ok_or_else(overflow)?;
            k.mul(y.value).map(|value| {
                quantity(&Quantity {
                    value,
                    unit: y.unit.clone(),
                })
            })
        }
        (_, x, y) => {
            let (Some(p), Some(q)) = (num_of(x), num_of(y)) else {
                return err(format!("cannot apply {op:?} to {x:?} and {y:?}"));
            };
            match op {
                BinOp::Add => Some(decimal(p.add(q).ok_or_else(overflow)?)),
                BinOp::Sub => Some(decimal(p.sub(q).ok_or_else(overflow)?)),
                BinOp::Mul => Some(decimal(p.mul(q).ok_or_else(overflow)?)),
                BinOp::Div => p.div(q).map(decimal),
                BinOp::IntDiv => p
                    .div(q)
                    .map(|d| integer(i64::try_from(d.trunc()).unwrap_or(i64::MAX))),
                BinOp::Mod => {
                    if q.mant == 0 {
                        return Ok(None);
                    }
                    let t = p.div(q).map(|d| Dec::from_i128(d.trunc()));
                    t.and_then(|t| q.mul(t)).and_then(|m| p.sub(m)).map(decimal)
                }
                _ => None,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// resolve() (FHIR R4 fhirpath.html §"resolve").

fn resolve_stub<'a>(n: &Node<'_>) -> Option<Node<'a>> {
    let reference = match &*n.value {
        Value::Object(o) => o.get("reference")?.as_str()?,
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let path = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let path = path.split(['?', '|']).next().unwrap_or(path);
    let mut segs = path.rsplit('/');
    let id = segs.next()?;
    let ty = segs.next()?;
    let reg = R4Registry::get();
    if !reg.is_resource_type(ty) || id.is_empty() {
        return None;
    }
    let t = resource_ty(ty)?;
    let mut m = Map::new();
    m.insert("resourceType".into(), Value::String(ty.to_string()));
    m.insert("id".into(), Value::String(id.to_string()));
    Some(Node {
        value: Cow::Owned(Value::Object(m)),
        ty: t,
        ext: None,
    })
}

// ---------------------------------------------------------------------------------------
// The evaluator.

fn eval<'a>(expr: &Expr, focus: &[Node<'a>], ctx: Ctx<'a, '_>) -> R<Coll<'a>> {
    match expr {
        Expr::Empty => Ok(Vec::new()),
        Expr::Literal(l) => Ok(vec![literal(l)?]),
        Expr::Env(name) => env_var(name, ctx),
        Expr::This => Ok(ctx
            .this
            .map(|t| vec![t.clone()])
            .unwrap_or_else(|| focus.to_vec())),
        Expr::Index => Ok(ctx
            .index
            .map(|i| vec![integer(i as i64)])
            .unwrap_or_default()),
        Expr::Total => Ok(ctx.total.map(|t| vec![t.clone()]).unwrap_or_default()),
        Expr::Member(input, name) => {
            let owned;
            let inp: &[Node<'a>] = match input {
                Some(e) => {
                    owned = eval(e, focus, ctx)?;
                    &owned
                }
                None => focus,
            };
            let mut out = Vec::new();
            for item in inp {
                navigate(item, name, &mut out);
            }
            Ok(out)
        }
        Expr::Call(input, f, args, ts) => {
            let owned;
            let inp: &[Node<'a>] = match input {
                Some(e) => {
                    owned = eval(e, focus, ctx)?;
                    &owned
                }
                None => focus,
            };
            call(*f, inp, args, ts.as_ref(), focus, ctx, input.is_some())
        }
        Expr::Indexer(e, idx) => {
            let c = eval(e, focus, ctx)?;
            let i = eval(idx, focus, ctx)?;
            match int_arg(&i, "indexer")? {
                Some(i) if i >= 0 => Ok(c.into_iter().nth(i as usize).into_iter().collect()),
                _ => Ok(Vec::new()),
            }
        }
        Expr::Neg(e) => {
            let c = eval(e, focus, ctx)?;
            let Some(n) = singleton(&c, "unary minus")? else {
                return Ok(Vec::new());
            };
            Ok(match scalar(n) {
                Some(Sc::I(i)) => vec![integer(
                    i.checked_neg()
                        .ok_or_else(|| FhirPathError::eval("integer overflow"))?,
                )],
                Some(Sc::D(d)) => vec![decimal(d.neg())],
                Some(Sc::Q(q)) => vec![quantity(&Quantity {
                    value: q.value.neg(),
                    unit: q.unit,
                })],
                None => Vec::new(),
                _ => return err("unary minus on a non-number"),
            })
        }
        Expr::Is(e, ts) => {
            let c = eval(e, focus, ctx)?;
            match singleton(&c, "is")? {
                None => Ok(Vec::new()),
                Some(n) => Ok(vec![boolean(type_is(n, ts))]),
            }
        }
        Expr::As(e, ts) => {
            let c = eval(e, focus, ctx)?;
            Ok(c.into_iter().filter(|n| type_matches(n, ts)).collect())
        }
        Expr::Binary(op, l, r) => binary(*op, l, r, focus, ctx),
    }
}

fn env_var<'a>(name: &str, ctx: Ctx<'a, '_>) -> R<Coll<'a>> {
    Ok(match name {
        "resource" | "rootResource" => vec![ctx.resource.clone()],
        "context" => vec![ctx.context.clone()],
        "ucum" => vec![string("http://unitsofmeasure.org")],
        "sct" => vec![string("http://snomed.info/sct")],
        "loinc" => vec![string("http://loinc.org")],
        _ => {
            if let Some(vs) = name.strip_prefix("vs-") {
                vec![string(format!("http://hl7.org/fhir/ValueSet/{vs}"))]
            } else if let Some(ext) = name.strip_prefix("ext-") {
                vec![string(format!(
                    "http://hl7.org/fhir/StructureDefinition/{ext}"
                ))]
            } else {
                return err(format!("undefined environment variable %{name}"));
            }
        }
    })
}

fn binary<'a>(op: BinOp, l: &Expr, r: &Expr, focus: &[Node<'a>], ctx: Ctx<'a, '_>) -> R<Coll<'a>> {
    let a = eval(l, focus, ctx)?;
    // Short-circuit the boolean operators where the spec allows (§6.5).
    match op {
        BinOp::And if to_bool3(&a)? == Some(false) => return Ok(vec![boolean(false)]),
        BinOp::Or if to_bool3(&a)? == Some(true) => return Ok(vec![boolean(true)]),
        BinOp::Implies if to_bool3(&a)? == Some(false) => return Ok(vec![boolean(true)]),
        _ => {}
    }
    let b = eval(r, focus, ctx)?;
    match op {
        BinOp::Union => {
            let mut all = a;
            all.extend(b);
            Ok(distinct(all))
        }
        BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
            let (x, y) = (to_bool3(&a)?, to_bool3(&b)?);
            Ok(bool_coll(match op {
                BinOp::And => match (x, y) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                BinOp::Or => match (x, y) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                BinOp::Xor => x.zip(y).map(|(p, q)| p != q),
                _ => match (x, y) {
                    (Some(false), _) | (_, Some(true)) => Some(true),
                    (Some(true), Some(false)) => Some(false),
                    _ => None,
                },
            }))
        }
        BinOp::Eq | BinOp::Ne => {
            if a.is_empty() || b.is_empty() {
                return Ok(Vec::new());
            }
            let eq = if a.len() != b.len() {
                Some(false)
            } else {
                let mut res = Some(true);
                for (x, y) in a.iter().zip(&b) {
                    match item_equal(x, y) {
                        Some(true) => {}
                        Some(false) => {
                            res = Some(false);
                            break;
                        }
                        None => res = None,
                    }
                }
                res
            };
            Ok(bool_coll(if op == BinOp::Ne { eq.map(|e| !e) } else { eq }))
        }
        BinOp::Equiv | BinOp::NotEquiv => {
            let eq = a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| item_equiv(x, y)));
            Ok(vec![boolean(if op == BinOp::NotEquiv { !eq } else { eq })])
        }
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let (Some(x), Some(y)) = (singleton(&a, "comparison")?, singleton(&b, "comparison")?)
            else {
                return Ok(Vec::new());
            };
            let o = item_cmp(x, y)?;
            Ok(bool_coll(o.map(|o| match op {
                BinOp::Lt => o == Ordering::Less,
                BinOp::Gt => o == Ordering::Greater,
                BinOp::Le => o != Ordering::Greater,
                _ => o != Ordering::Less,
            })))
        }
        BinOp::In | BinOp::Contains => {
            let (item, coll) = if op == BinOp::In { (&a, &b) } else { (&b, &a) };
            match singleton(item, "membership")? {
                None => Ok(Vec::new()),
                Some(n) => Ok(vec![boolean(contains_item(coll, n))]),
            }
        }
        BinOp::Concat => {
            let s = |c: &[Node<'_>]| -> R<String> {
                Ok(match singleton(c, "&")? {
                    None => String::new(),
                    Some(n) => to_string_node(n).unwrap_or_default(),
                })
            };
            Ok(vec![string(s(&a)? + &s(&b)?)])
        }
        _ => {
            let (Some(x), Some(y)) = (singleton(&a, "arithmetic")?, singleton(&b, "arithmetic")?)
            else {
                return Ok(Vec::new());
            };
            Ok(arith(op, x, y)?.into_iter().collect())
        }
    }
}

fn arg_expr(args: &[Arg], i: usize) -> R<&Expr> {
    match args.get(i) {
        Some(Arg::Expr(e) | Arg::Sort(e, _)) => Ok(e),
        None => err("missing argument"),
    }
}

/// Evaluates a lambda argument for one item (`$this`, `$index`).
fn lambda<'a>(e: &Expr, item: &Node<'a>, i: usize, ctx: Ctx<'a, '_>) -> R<Coll<'a>> {
    let c = Ctx {
        this: Some(item),
        index: Some(i),
        ..ctx
    };
    eval(e, std::slice::from_ref(item), c)
}

fn lambda_bool<'a>(e: &Expr, item: &Node<'a>, i: usize, ctx: Ctx<'a, '_>) -> R<Option<bool>> {
    let r = lambda(e, item, i, ctx)?;
    to_bool3(&r)
}

fn math1<'a>(inp: &[Node<'a>], f: impl Fn(Sc<'_>) -> R<Option<Node<'a>>>) -> R<Coll<'a>> {
    match singleton(inp, "math")? {
        None => Ok(Vec::new()),
        Some(n) => match scalar(n) {
            None => Ok(Vec::new()),
            Some(sc) => Ok(f(sc)?.into_iter().collect()),
        },
    }
}

fn f64_dec<'a>(x: f64) -> Option<Node<'a>> {
    if x.is_finite() {
        Dec::from_f64(x).map(|d| decimal(d.round_to(16).normalize()))
    } else {
        None
    }
}

fn string_fn<'a>(inp: &[Node<'a>]) -> R<Option<String>> {
    match singleton(inp, "string function")? {
        None => Ok(None),
        Some(n) => match scalar(n) {
            Some(Sc::S(s)) => Ok(Some(s.to_string())),
            None => Ok(None),
            Some(other) => match to_string_sc(&other) {
                Some(s) => Ok(Some(s)),
                None => err("string function on a non-string"),
            },
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn call<'a>(
    f: Func,
    inp: &[Node<'a>],
    args: &[Arg],
    ts: Option<&TypeSpec>,
    focus: &[Node<'a>],
    ctx: Ctx<'a, '_>,
    has_input: bool,
) -> R<Coll<'a>> {
    // Non-lambda arguments are evaluated against the invocation's focus.
    let arg = |i: usize| -> R<Coll<'a>> { eval(arg_expr(args, i)?, focus, ctx) };
    let one = |b: bool| Ok(vec![boolean(b)]);
    match f {
        Func::Empty => one(inp.is_empty()),
        Func::Exists => {
            if args.is_empty() {
                return one(!inp.is_empty());
            }
            let e = arg_expr(args, 0)?;
            for (i, n) in inp.iter().enumerate() {
                if lambda_bool(e, n, i, ctx)? == Some(true) {
                    return one(true);
                }
            }
            one(false)
        }
        Func::All => {
            let e = arg_expr(args, 0)?;
            for (i, n) in inp.iter().enumerate() {
                if lambda_bool(e, n, i, ctx)? != Some(true) {
                    return one(false);
                }
            }
            one(true)
        }
        Func::AllTrue | Func::AnyTrue | Func::AllFalse | Func::AnyFalse => {
            let mut bools = Vec::with_capacity(inp.len());
            for n in inp {
                match &*n.value {
                    Value::Bool(b) => bools.push(*b),
                    _ => return err("allTrue/anyTrue... on a non-boolean"),
                }
            }
            one(match f {
                Func::AllTrue => bools.iter().all(|b| *b),
                Func::AnyTrue => bools.iter().any(|b| *b),
                Func::AllFalse => bools.iter().all(|b| !*b),
                _ => bools.iter().any(|b| !*b),
            })
        }
        Func::SubsetOf | Func::SupersetOf => {
            let other = arg(0)?;
            let (small, big) = if f == Func::SubsetOf {
                (inp, &other[..])
            } else {
                (&other[..], inp)
            };
            one(small.iter().all(|n| contains_item(big, n)))
        }
        Func::Count => Ok(vec![integer(inp.len() as i64)]),
        Func::Distinct => Ok(distinct(inp.to_vec())),
        Func::IsDistinct => one(distinct(inp.to_vec()).len() == inp.len()),
        Func::Where => {
            let e = arg_expr(args, 0)?;
            let mut out = Vec::new();
            for (i, n) in inp.iter().enumerate() {
                if lambda_bool(e, n, i, ctx)? == Some(true) {
                    out.push(n.clone());
                }
            }
            Ok(out)
        }
        Func::Select => {
            let e = arg_expr(args, 0)?;
            let mut out = Vec::new();
            for (i, n) in inp.iter().enumerate() {
                out.extend(lambda(e, n, i, ctx)?);
            }
            Ok(out)
        }
        Func::Repeat => {
            let e = arg_expr(args, 0)?;
            let mut out: Coll<'a> = Vec::new();
            let mut queue: Coll<'a> = inp.to_vec();
            let mut rounds = 0;
            while !queue.is_empty() && rounds < 1000 {
                rounds += 1;
                let mut next = Vec::new();
                for (i, n) in queue.iter().enumerate() {
                    for r in lambda(e, n, i, ctx)? {
                        if !out.iter().any(|o| same_node(o, &r)) {
                            out.push(r.clone());
                            next.push(r);
                        }
                    }
                }
                queue = next;
            }
            Ok(out)
        }
        Func::OfType | Func::As => {
            let ts = ts.ok_or_else(|| FhirPathError::eval("missing type"))?;
            Ok(inp
                .iter()
                .filter(|n| type_matches(n, ts))
                .cloned()
                .collect())
        }
        Func::Is => {
            let ts = ts.ok_or_else(|| FhirPathError::eval("missing type"))?;
            match singleton(inp, "is()")? {
                None => Ok(Vec::new()),
                Some(n) => one(type_is(n, ts)),
            }
        }
        Func::Single => match inp.len() {
            0 => Ok(Vec::new()),
            1 => Ok(inp.to_vec()),
            _ => err("single(): more than one item"),
        },
        Func::First => Ok(inp.first().cloned().into_iter().collect()),
        Func::Last => Ok(inp.last().cloned().into_iter().collect()),
        Func::Tail => Ok(inp.iter().skip(1).cloned().collect()),
        Func::Skip | Func::Take => {
            let n = int_arg(&arg(0)?, "skip/take")?.unwrap_or(0).max(0) as usize;
            Ok(if f == Func::Skip {
                inp.iter().skip(n).cloned().collect()
            } else {
                inp.iter().take(n).cloned().collect()
            })
        }
        Func::Intersect => {
            let other = arg(0)?;
            Ok(distinct(
                inp.iter()
                    .filter(|n| contains_item(&other, n))
                    .cloned()
                    .collect(),
            ))
        }
        Func::Exclude => {
            let other = arg(0)?;
            Ok(inp
                .iter()
                .filter(|n| !contains_item(&other, n))
                .cloned()
                .collect())
        }
        Func::Union => {
            let mut all = inp.to_vec();
            all.extend(arg(0)?);
            Ok(distinct(all))
        }
        Func::Combine => {
            let mut all = inp.to_vec();
            all.extend(arg(0)?);
            Ok(all)
        }
        Func::Iif => {
            if has_input && inp.len() > 1 {
                return err("iif(): input has more than one item");
            }
            let (fc, this) = if has_input {
                (inp, inp.first())
            } else {
                (focus, ctx.this)
            };
            let c2 = Ctx {
                this: this.or(ctx.this),
                ..ctx
            };
            let cond = eval(arg_expr(args, 0)?, fc, c2)?;
            let cond = match cond.len() {
                0 => None,
                1 => match &*cond[0].value {
                    Value::Bool(b) => Some(*b),
                    _ => return err("iif(): criterion is not a boolean"),
                },
                _ => return err("iif(): criterion has more than one item"),
            };
            if cond == Some(true) {
                eval(arg_expr(args, 1)?, fc, c2)
            } else if args.len() > 2 {
                eval(arg_expr(args, 2)?, fc, c2)
            } else {
                Ok(Vec::new())
            }
        }
        Func::ToBoolean
        | Func::ToInteger
        | Func::ToDecimal
        | Func::ToString
        | Func::ToDate
        | Func::ToDateTime
        | Func::ToTime
        | Func::ToQuantity => match singleton(inp, "conversion")? {
            None => Ok(Vec::new()),
            Some(n) => {
                let r = convert(f, n)?;
                if f == Func::ToQuantity && !args.is_empty() {
                    // Unit conversion: only identical units are supported.
                    let u = str_arg(&arg(0)?, "toQuantity")?;
                    return Ok(r
                        .filter(|q| {
                            json_quantity(&q.value).is_some_and(|q| Some(&*q.unit) == u.as_deref())
                        })
                        .into_iter()
                        .collect());
                }
                Ok(r.into_iter().collect())
            }
        },
        Func::ConvertsToBoolean
        | Func::ConvertsToInteger
        | Func::ConvertsToDecimal
        | Func::ConvertsToString
        | Func::ConvertsToDate
        | Func::ConvertsToDateTime
        | Func::ConvertsToTime
        | Func::ConvertsToQuantity => match singleton(inp, "conversion")? {
            None => Ok(Vec::new()),
            Some(n) => one(convert(converts_target(f), n)?.is_some()),
        },
        Func::IndexOf => {
            let (Some(s), Some(sub)) = (string_fn(inp)?, str_arg(&arg(0)?, "indexOf")?) else {
                return Ok(Vec::new());
            };
            let idx = s.find(&sub).map_or(-1, |b| s[..b].chars().count() as i64);
            Ok(vec![integer(idx)])
        }
        Func::Substring => {
            let Some(s) = string_fn(inp)? else {
                return Ok(Vec::new());
            };
            let Some(start) = int_arg(&arg(0)?, "substring")? else {
                return Ok(Vec::new());
            };
            let chars: Vec<char> = s.chars().collect();
            if start < 0 || start as usize >= chars.len() {
                return Ok(Vec::new());
            }
            let len = if args.len() > 1 {
                match int_arg(&arg(1)?, "substring")? {
                    Some(l) => l.max(0) as usize,
                    None => chars.len(),
                }
            } else {
                chars.len()
            };
            let start = start as usize;
            let end = start.saturating_add(len).min(chars.len());
            Ok(vec![string(chars[start..end].iter().collect::<String>())])
        }
        Func::StartsWith | Func::EndsWith | Func::Contains => {
            let (Some(s), Some(x)) = (string_fn(inp)?, str_arg(&arg(0)?, "string function")?)
            else {
                return Ok(Vec::new());
            };
            one(match f {
                Func::StartsWith => s.starts_with(&x),
                Func::EndsWith => s.ends_with(&x),
                _ => s.contains(&x),
            })
        }
        Func::Upper | Func::Lower | Func::Trim | Func::Length | Func::ToChars => {
            let Some(s) = string_fn(inp)? else {
                return Ok(Vec::new());
            };
            Ok(match f {
                Func::Upper => vec![string(s.to_uppercase())],
                Func::Lower => vec![string(s.to_lowercase())],
                Func::Trim => vec![string(s.trim())],
                Func::Length => vec![integer(s.chars().count() as i64)],
                _ => s.chars().map(|c| string(c.to_string())).collect(),
            })
        }
        Func::Replace => {
            let (Some(s), Some(p), Some(r)) = (
                string_fn(inp)?,
                str_arg(&arg(0)?, "replace")?,
                str_arg(&arg(1)?, "replace")?,
            ) else {
                return Ok(Vec::new());
            };
            if p.is_empty() {
                // Inserts the substitution between every character (§5.6.8).
                let mut out = r.clone();
                for c in s.chars() {
                    out.push(c);
                    out.push_str(&r);
                }
                return Ok(vec![string(out)]);
            }
            Ok(vec![string(s.replace(&p, &r))])
        }
        Func::Matches | Func::MatchesFull | Func::ReplaceMatches => {
            let Some(s) = string_fn(inp)? else {
                return Ok(Vec::new());
            };
            let Some(pat) = str_arg(&arg(0)?, "regex")? else {
                return Ok(Vec::new());
            };
            if pat.is_empty() && f == Func::ReplaceMatches {
                // An empty pattern matches nothing useful: the input is returned (§5.6.10).
                return Ok(vec![string(s)]);
            }
            let pat = if f == Func::MatchesFull {
                format!("^(?:{pat})$")
            } else {
                pat
            };
            let re = regex::RegexBuilder::new(&pat)
                .dot_matches_new_line(true)
                .build()
                .map_err(|e| FhirPathError::eval(format!("bad regex: {e}")))?;
            if f == Func::ReplaceMatches {
                let Some(sub) = str_arg(&arg(1)?, "replaceMatches")? else {
                    return Ok(Vec::new());
                };
                return Ok(vec![string(re.replace_all(&s, sub.as_str()).into_owned())]);
            }
            one(re.is_match(&s))
        }
        Func::Split => {
            let (Some(s), Some(sep)) = (string_fn(inp)?, str_arg(&arg(0)?, "split")?) else {
                return Ok(Vec::new());
            };
            Ok(s.split(sep.as_str()).map(string).collect())
        }
        Func::Join => {
            let sep = if args.is_empty() {
                Some(String::new())
            } else {
                str_arg(&arg(0)?, "join")?
            };
            let sep = sep.unwrap_or_default();
            let parts: Vec<String> = inp.iter().filter_map(to_string_node).collect();
            Ok(vec![string(parts.join(&sep))])
        }
        Func::Encode | Func::Decode | Func::Escape | Func::Unescape => {
            let (Some(s), Some(kind)) = (string_fn(inp)?, str_arg(&arg(0)?, "encoding")?) else {
                return Ok(Vec::new());
            };
            Ok(codec(f, &s, &kind).map(string).into_iter().collect())
        }
        Func::Abs => math1(inp, |sc| {
            Ok(match sc {
                Sc::I(i) => i.checked_abs().map(integer),
                Sc::D(d) => Some(decimal(d.abs())),
                Sc::Q(q) => Some(quantity(&Quantity {
                    value: q.value.abs(),
                    unit: q.unit,
                })),
                _ => return err("abs(): not a number"),
            })
        }),
        Func::Ceiling | Func::Floor | Func::Truncate => math1(inp, |sc| {
            Ok(match sc {
                Sc::I(i) => Some(integer(i)),
                Sc::D(d) => {
                    let v = match f {
                        Func::Ceiling => d.ceil(),
                        Func::Floor => d.floor(),
                        _ => d.trunc(),
                    };
                    i64::try_from(v).ok().map(integer)
                }
                _ => return err("not a number"),
            })
        }),
        Func::Exp | Func::Ln | Func::Sqrt => math1(inp, |sc| {
            let Some(x) = num_of(&sc) else {
                return err("not a number");
            };
            let x = x.to_f64();
            Ok(f64_dec(match f {
                Func::Exp => x.exp(),
                Func::Ln => x.ln(),
                _ => x.sqrt(),
            }))
        }),
        Func::Log | Func::Power => {
            let base = arg(0)?;
            let Some(b) = singleton(&base, "math")?.and_then(scalar) else {
                return Ok(Vec::new());
            };
            math1(inp, |sc| {
                let (Some(x), Some(y)) = (num_of(&sc), num_of(&b)) else {
                    return err("not a number");
                };
                if f == Func::Log {
                    return Ok(f64_dec(x.to_f64().ln() / y.to_f64().ln()));
                }
                if let (Sc::I(i), Sc::I(p)) = (&sc, &b)
                    && *p >= 0
                {
                    return Ok(u32::try_from(*p)
                        .ok()
                        .and_then(|p| i.checked_pow(p))
                        .map(integer));
                }
                if y.is_integer() && y.trunc() >= 0 {
                    let mut r = Dec::from_i64(1);
                    for _ in 0..y.trunc().min(1000) {
                        r = match r.mul(x) {
                            Some(v) => v,
                            None => return Ok(None),
                        };
                    }
                    return Ok(Some(decimal(r)));
                }
                Ok(f64_dec(x.to_f64().powf(y.to_f64())))
            })
        }
        Func::Round => {
            let prec = if args.is_empty() {
                Some(0)
            } else {
                int_arg(&arg(0)?, "round")?
            };
            let Some(prec) = prec else {
                return Ok(Vec::new());
            };
            if prec < 0 {
                return err("round(): negative precision");
            }
            math1(inp, |sc| {
                let Some(x) = num_of(&sc) else {
                    return err("not a number");
                };
                Ok(Some(decimal(x.round_to(prec as u32))))
            })
        }
        Func::Now | Func::Today | Func::TimeOfDay => {
            let now = chrono::Local::now();
            Ok(vec![match f {
                Func::Now => Node::sys(
                    Value::String(now.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()),
                    Sys::DateTime,
                ),
                Func::Today => {
                    Node::sys(Value::String(now.format("%Y-%m-%d").to_string()), Sys::Date)
                }
                _ => Node::sys(
                    Value::String(now.format("%H:%M:%S%.3f").to_string()),
                    Sys::Time,
                ),
            }])
        }
        Func::Children => {
            let mut out = Vec::new();
            for n in inp {
                children(n, &mut out);
            }
            Ok(out)
        }
        Func::Descendants => {
            let mut out = Vec::new();
            let mut queue = inp.to_vec();
            let mut depth = 0;
            while !queue.is_empty() && depth < 100 {
                depth += 1;
                let mut next = Vec::new();
                for n in &queue {
                    children(n, &mut next);
                }
                out.extend(next.iter().cloned());
                queue = next;
            }
            Ok(out)
        }
        Func::Trace => Ok(inp.to_vec()),
        Func::Aggregate => {
            let e = arg_expr(args, 0)?;
            let mut total: Coll<'a> = if args.len() > 1 { arg(1)? } else { Vec::new() };
            for (i, n) in inp.iter().enumerate() {
                let t = total.first().cloned();
                let c = Ctx {
                    this: Some(n),
                    index: Some(i),
                    total: t.as_ref(),
                    ..ctx
                };
                total = eval(e, std::slice::from_ref(n), c)?;
            }
            Ok(total)
        }
        Func::Type => Ok(inp.iter().map(type_info).collect()),
        Func::Not => match to_bool3(inp)? {
            None => Ok(Vec::new()),
            Some(b) => one(!b),
        },
        Func::Extension => {
            let Some(url) = str_arg(&arg(0)?, "extension")? else {
                return Ok(Vec::new());
            };
            let mut exts = Vec::new();
            for n in inp {
                navigate(n, "extension", &mut exts);
            }
            Ok(exts
                .into_iter()
                .filter(|e| e.value.get("url").and_then(Value::as_str) == Some(url.as_str()))
                .collect())
        }
        Func::Resolve => Ok(inp.iter().filter_map(resolve_stub).collect()),
        Func::HasValue => one(inp.len() == 1
            && matches!(inp[0].ty, Ty::Fhir { def: None, .. } | Ty::Sys(_))
            && !inp[0].value.is_null()),
        Func::GetValue => match singleton(inp, "getValue")? {
            Some(n) if matches!(n.ty, Ty::Fhir { def: None, .. }) => {
                Ok(scalar(n).and_then(|s| sc_node(&s)).into_iter().collect())
            }
            _ => Ok(Vec::new()),
        },
        Func::Precision => math1(inp, |sc| {
            Ok(match sc {
                Sc::D(d) => Some(integer(i64::from(d.scale))),
                Sc::I(_) => Some(integer(0)),
                Sc::Date(d) => Some(integer(match d.prec {
                    Prec::Year => 4,
                    Prec::Month => 6,
                    Prec::Day => 8,
                    Prec::Hour => 10,
                    Prec::Minute => 12,
                    Prec::Second => 14,
                    Prec::Millis => 17,
                })),
                Sc::Time(d) => Some(integer(match d.prec {
                    Prec::Hour => 2,
                    Prec::Minute => 4,
                    Prec::Second => 6,
                    _ => 9,
                })),
                _ => None,
            })
        }),
        Func::Comparable => {
            let other = arg(0)?;
            let (Some(a), Some(b)) = (
                singleton(inp, "comparable")?,
                singleton(&other, "comparable")?,
            ) else {
                return Ok(Vec::new());
            };
            match (scalar(a), scalar(b)) {
                (Some(Sc::Q(x)), Some(Sc::Q(y))) => one(qty_cmp(&x, &y).is_some()),
                _ => Ok(Vec::new()),
            }
        }
        Func::Sort => {
            let mut keyed: Vec<(Vec<Coll<'a>>, Node<'a>)> = Vec::with_capacity(inp.len());
            for (i, n) in inp.iter().enumerate() {
                let mut keys = Vec::new();
                for a in args {
                    let e = match a {
                        Arg::Expr(e) | Arg::Sort(e, _) => e,
                    };
                    keys.push(lambda(e, n, i, ctx)?);
                }
                keyed.push((keys, n.clone()));
            }
            let desc: Vec<bool> = args
                .iter()
                .map(|a| matches!(a, Arg::Sort(_, true)))
                .collect();
            let mut failed = false;
            keyed.sort_by(|(ka, na), (kb, nb)| {
                if args.is_empty() {
                    return item_cmp(na, nb).ok().flatten().unwrap_or(Ordering::Equal);
                }
                for (k, (x, y)) in ka.iter().zip(kb).enumerate() {
                    // Empty keys sort first in either direction.
                    let o = match (x.first(), y.first()) {
                        (None, None) => Ordering::Equal,
                        (None, Some(_)) => return Ordering::Less,
                        (Some(_), None) => return Ordering::Greater,
                        (Some(p), Some(q)) => match item_cmp(p, q) {
                            Ok(o) => o.unwrap_or(Ordering::Equal),
                            Err(_) => {
                                failed = true;
                                Ordering::Equal
                            }
                        },
                    };
                    let o = if desc[k] { o.reverse() } else { o };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            });
            if failed {
                return err("sort(): incomparable keys");
            }
            Ok(keyed.into_iter().map(|(_, n)| n).collect())
        }
        Func::LowBoundary | Func::HighBoundary => {
            let prec = if args.is_empty() {
                None
            } else {
                int_arg(&arg(0)?, "boundary")?
            };
            match singleton(inp, "boundary")? {
                None => Ok(Vec::new()),
                Some(n) => Ok(boundary(n, prec, f == Func::HighBoundary)
                    .into_iter()
                    .collect()),
            }
        }
        Func::ConformsTo => {
            // Only the core resource StructureDefinitions: profiles need a validator.
            let Some(url) = str_arg(&arg(0)?, "conformsTo")? else {
                return Ok(Vec::new());
            };
            let Some(t) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") else {
                return err(format!("conformsTo({url}): profiles are not supported"));
            };
            if R4Registry::get().type_definition(t).is_none() {
                return err(format!("conformsTo({url}): unknown type"));
            }
            let ts = TypeSpec {
                namespace: Some("FHIR".into()),
                name: t.into(),
            };
            match singleton(inp, "conformsTo")? {
                None => Ok(Vec::new()),
                Some(n) => one(type_matches(n, &ts)),
            }
        }
        Func::MemberOf | Func::Subsumes | Func::SubsumedBy => {
            err(format!("{f:?}() needs a terminology/validation service"))
        }
        Func::HtmlChecks => one(true),
    }
}

fn same_node(a: &Node<'_>, b: &Node<'_>) -> bool {
    match (&a.value, &b.value) {
        (Cow::Borrowed(x), Cow::Borrowed(y)) => std::ptr::eq(*x, *y),
        _ => item_equal(a, b) == Some(true),
    }
}

/// `lowBoundary()`/`highBoundary()` (FHIRPath 2.0 §5.x, for decimals and dates).
fn boundary<'a>(n: &Node<'_>, prec: Option<i64>, high: bool) -> Option<Node<'a>> {
    match scalar(n)? {
        Sc::I(i) => boundary_dec(Dec::from_i64(i), prec.unwrap_or(8), high).map(decimal),
        Sc::D(d) => boundary_dec(d, prec.unwrap_or(8), high).map(decimal),
        Sc::Q(q) => boundary_dec(q.value, prec.unwrap_or(8), high).map(|value| {
            quantity(&Quantity {
                value,
                unit: q.unit,
            })
        }),
        Sc::Date(d) => {
            let mut out = d;
            // An hour-only time is not a valid FHIR time: read `T08` as `T08:00`.
            if out.prec == Prec::Hour {
                out.prec = Prec::Minute;
            }
            let target = match prec {
                None => {
                    if d.is_datetime {
                        Prec::Millis
                    } else {
                        Prec::Day
                    }
                }
                Some(4) => Prec::Year,
                Some(6) => Prec::Month,
                Some(8) => Prec::Day,
                Some(10) => Prec::Hour,
                Some(12) => Prec::Minute,
                Some(14) => Prec::Second,
                Some(17) => Prec::Millis,
                _ => return None,
            };
            let lim: [i32; 7] = if high {
                let last = last_day_of(out.c[0], out.c[1]);
                [out.c[0], 12, last, 23, 59, 59, 999]
            } else {
                [out.c[0], 1, 1, 0, 0, 0, 0]
            };
            for (i, l) in lim.iter().enumerate().skip(1) {
                if i > out.prec as usize {
                    out.c[i] = *l;
                    if high && i == 2 {
                        out.c[2] = last_day_of(out.c[0], out.c[1]);
                    }
                }
            }
            if target >= Prec::Hour && d.is_datetime && out.tz.is_none() {
                out.tz = Some(if high { -12 * 60 } else { 14 * 60 });
            }
            out.prec = target;
            if target >= Prec::Hour {
                out.is_datetime = true;
            }
            Some(date_node(out))
        }
        Sc::Time(t) => {
            let mut out = t;
            let target = match prec {
                None | Some(9) => Prec::Millis,
                Some(2) => Prec::Hour,
                Some(4) => Prec::Minute,
                Some(6) => Prec::Second,
                _ => return None,
            };
            let lim = if high {
                [0, 0, 0, 59, 59, 59, 999]
            } else {
                [0; 7]
            };
            for (i, l) in lim.iter().enumerate().skip(3) {
                if i > out.prec as usize {
                    out.c[i] = *l;
                }
            }
            out.prec = target;
            Some(date_node(out))
        }
        _ => None,
    }
}

fn last_day_of(y: i32, m: i32) -> i32 {
    let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    match (
        chrono::NaiveDate::from_ymd_opt(y, m as u32, 1),
        chrono::NaiveDate::from_ymd_opt(next.0, next.1 as u32, 1),
    ) {
        (Some(a), Some(b)) => (b - a).num_days() as i32,
        _ => 31,
    }
}

fn boundary_dec(d: Dec, prec: i64, high: bool) -> Option<Dec> {
    if !(0..=28).contains(&prec) {
        return None;
    }
    let prec = prec as u32;
    // Half a unit in the last written digit.
    let half = Dec {
        mant: 5,
        scale: d.scale + 1,
    };
    let v = if d.mant < 0 {
        if high { d.add(half)? } else { d.sub(half)? }
    } else if high {
        d.add(half)?
    } else {
        d.sub(half)?
    };
    if prec < v.scale {
        let p = 10i128.checked_pow(v.scale - prec)?;
        // A value with no digit at the requested precision has boundary 0 (the suite's
        // `0.0034.highBoundary(1)` is 0.0); otherwise up for high, down for low.
        if d.abs().cmp(Dec {
            mant: 1,
            scale: prec,
        }) == std::cmp::Ordering::Less
        {
            return Some(Dec {
                mant: 0,
                scale: prec,
            });
        }
        let q = v.mant.div_euclid(p);
        let exact = v.mant.rem_euclid(p) == 0;
        let q = if high && !exact { q + 1 } else { q };
        return Some(Dec {
            mant: q,
            scale: prec,
        });
    }
    Some(Dec {
        mant: v.mant.checked_mul(10i128.checked_pow(prec - v.scale)?)?,
        scale: prec,
    })
}

fn codec(f: Func, s: &str, kind: &str) -> Option<String> {
    match (f, kind) {
        (Func::Encode, "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
        (Func::Decode, "hex") => {
            let bytes: Option<Vec<u8>> = (0..s.len())
                .step_by(2)
                .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            String::from_utf8(bytes?).ok()
        }
        (Func::Encode, "base64" | "urlbase64") => Some(base64::Engine::encode(
            &b64_engine(kind == "urlbase64"),
            s.as_bytes(),
        )),
        (Func::Decode, "base64" | "urlbase64") => {
            String::from_utf8(base64::Engine::decode(&b64_engine(kind == "urlbase64"), s).ok()?)
                .ok()
        }
        (Func::Escape, "html") => Some(
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;"),
        ),
        (Func::Unescape, "html") => Some(
            s.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&"),
        ),
        (Func::Escape, "json") => {
            let q = serde_json::to_string(s).ok()?;
            Some(q[1..q.len() - 1].to_string())
        }
        (Func::Unescape, "json") => {
            let mut out = String::with_capacity(s.len());
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => out.push(other),
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// The base64 alphabet of FHIRPath `encode`/`decode` (`base64` or `urlbase64`, RFC 4648 §4
/// and §5), with padding written and optional on input.
fn b64_engine(url: bool) -> base64::engine::GeneralPurpose {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    if url {
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
    } else {
        GeneralPurpose::new(&base64::alphabet::STANDARD, config)
    }
}
