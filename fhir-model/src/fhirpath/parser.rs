//! Lexer and recursive-descent parser for FHIRPath (N1 grammar, <http://hl7.org/fhirpath/N1/>
//! §"Appendix A – Formal Specifications", operator precedence from §6 "Operations").
//!
//! The parser produces an [`Expr`] tree in which function names are resolved to [`Func`]
//! at parse time (unknown functions and wrong arities are syntax errors), so evaluation
//! never looks at names again except for element names.

use super::FhirPathError;
use super::value::{Dec, Quantity};

/// A type specifier of `is`/`as`/`ofType` (FHIRPath §6.3 "Types"): optional namespace
/// (`FHIR`, `System`) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeSpec {
    pub(crate) namespace: Option<Box<str>>,
    pub(crate) name: Box<str>,
}

/// A literal (FHIRPath §4.1 "Literals").
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Boolean(bool),
    String(Box<str>),
    Integer(i64),
    Decimal(Dec),
    /// Date text without the `@` (`2014-01`).
    Date(Box<str>),
    /// DateTime text without the `@` (`2014-01-01T10`, may end with `T`).
    DateTime(Box<str>),
    /// Time text without the `@T` (`10:30`).
    Time(Box<str>),
    Quantity(Quantity),
}

/// Binary operators (FHIRPath §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

/// The functions the engine knows (FHIRPath §5, FHIR R4 fhirpath.html §"Additional
/// functions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Empty,
    Exists,
    All,
    AllTrue,
    AnyTrue,
    AllFalse,
    AnyFalse,
    SubsetOf,
    SupersetOf,
    Count,
    Distinct,
    IsDistinct,
    Where,
    Select,
    Repeat,
    OfType,
    Single,
    First,
    Last,
    Tail,
    Skip,
    Take,
    Intersect,
    Exclude,
    Union,
    Combine,
    Iif,
    ToBoolean,
    ConvertsToBoolean,
    ToInteger,
    ConvertsToInteger,
    ToDecimal,
    ConvertsToDecimal,
    ToString,
    ConvertsToString,
    ToDate,
    ConvertsToDate,
    ToDateTime,
    ConvertsToDateTime,
    ToTime,
    ConvertsToTime,
    ToQuantity,
    ConvertsToQuantity,
    IndexOf,
    Substring,
    StartsWith,
    EndsWith,
    Contains,
    Upper,
    Lower,
    Replace,
    Matches,
    MatchesFull,
    ReplaceMatches,
    Length,
    ToChars,
    Trim,
    Split,
    Join,
    Encode,
    Decode,
    Escape,
    Unescape,
    Abs,
    Ceiling,
    Exp,
    Floor,
    Ln,
    Log,
    Power,
    Round,
    Sqrt,
    Truncate,
    Now,
    Today,
    TimeOfDay,
    Children,
    Descendants,
    Trace,
    Aggregate,
    Type,
    Not,
    Is,
    As,
    Extension,
    Resolve,
    HasValue,
    GetValue,
    Precision,
    LowBoundary,
    HighBoundary,
    Comparable,
    Sort,
    ConformsTo,
    MemberOf,
    Subsumes,
    SubsumedBy,
    HtmlChecks,
}

impl Func {
    /// Name lookup with the allowed argument counts (min, max).
    fn lookup(name: &str) -> Option<(Func, usize, usize)> {
        use Func::*;
        Some(match name {
            "empty" => (Empty, 0, 0),
            "exists" => (Exists, 0, 1),
            "all" => (All, 1, 1),
            "allTrue" => (AllTrue, 0, 0),
            "anyTrue" => (AnyTrue, 0, 0),
            "allFalse" => (AllFalse, 0, 0),
            "anyFalse" => (AnyFalse, 0, 0),
            "subsetOf" => (SubsetOf, 1, 1),
            "supersetOf" => (SupersetOf, 1, 1),
            "count" => (Count, 0, 0),
            "distinct" => (Distinct, 0, 0),
            "isDistinct" => (IsDistinct, 0, 0),
            "where" => (Where, 1, 1),
            "select" => (Select, 1, 1),
            "repeat" => (Repeat, 1, 1),
            "ofType" => (OfType, 1, 1),
            "single" => (Single, 0, 0),
            "first" => (First, 0, 0),
            "last" => (Last, 0, 0),
            "tail" => (Tail, 0, 0),
            "skip" => (Skip, 1, 1),
            "take" => (Take, 1, 1),
            "intersect" => (Intersect, 1, 1),
            "exclude" => (Exclude, 1, 1),
            "union" => (Union, 1, 1),
            "combine" => (Combine, 1, 1),
            "iif" => (Iif, 2, 3),
            "toBoolean" => (ToBoolean, 0, 0),
            "convertsToBoolean" => (ConvertsToBoolean, 0, 0),
            "toInteger" => (ToInteger, 0, 0),
            "convertsToInteger" => (ConvertsToInteger, 0, 0),
            "toDecimal" => (ToDecimal, 0, 0),
            "convertsToDecimal" => (ConvertsToDecimal, 0, 0),
            "toString" => (ToString, 0, 0),
            "convertsToString" => (ConvertsToString, 0, 0),
            "toDate" => (ToDate, 0, 0),
            "convertsToDate" => (ConvertsToDate, 0, 0),
            "toDateTime" => (ToDateTime, 0, 0),
            "convertsToDateTime" => (ConvertsToDateTime, 0, 0),
            "toTime" => (ToTime, 0, 0),
            "convertsToTime" => (ConvertsToTime, 0, 0),
            "toQuantity" => (ToQuantity, 0, 1),
            "convertsToQuantity" => (ConvertsToQuantity, 0, 1),
            "indexOf" => (IndexOf, 1, 1),
            "substring" => (Substring, 1, 2),
            "startsWith" => (StartsWith, 1, 1),
            "endsWith" => (EndsWith, 1, 1),
            "contains" => (Contains, 1, 1),
            "upper" => (Upper, 0, 0),
            "lower" => (Lower, 0, 0),
            "replace" => (Replace, 2, 2),
            "matches" => (Matches, 1, 2),
            "matchesFull" => (MatchesFull, 1, 2),
            "replaceMatches" => (ReplaceMatches, 2, 3),
            "length" => (Length, 0, 0),
            "toChars" => (ToChars, 0, 0),
            "trim" => (Trim, 0, 0),
            "split" => (Split, 1, 1),
            "join" => (Join, 0, 1),
            "encode" => (Encode, 1, 1),
            "decode" => (Decode, 1, 1),
            "escape" => (Escape, 1, 1),
            "unescape" => (Unescape, 1, 1),
            "abs" => (Abs, 0, 0),
            "ceiling" => (Ceiling, 0, 0),
            "exp" => (Exp, 0, 0),
            "floor" => (Floor, 0, 0),
            "ln" => (Ln, 0, 0),
            "log" => (Log, 1, 1),
            "power" => (Power, 1, 1),
            "round" => (Round, 0, 1),
            "sqrt" => (Sqrt, 0, 0),
            "truncate" => (Truncate, 0, 0),
            "now" => (Now, 0, 0),
            "today" => (Today, 0, 0),
            "timeOfDay" => (TimeOfDay, 0, 0),
            "children" => (Children, 0, 0),
            "descendants" => (Descendants, 0, 0),
            "trace" => (Trace, 1, 2),
            "aggregate" => (Aggregate, 1, 2),
            "type" => (Type, 0, 0),
            "not" => (Not, 0, 0),
            "is" => (Is, 1, 1),
            "as" => (As, 1, 1),
            "extension" => (Extension, 1, 1),
            "resolve" => (Resolve, 0, 0),
            "hasValue" => (HasValue, 0, 0),
            "getValue" => (GetValue, 0, 0),
            "precision" => (Precision, 0, 0),
            "lowBoundary" => (LowBoundary, 0, 1),
            "highBoundary" => (HighBoundary, 0, 1),
            "comparable" => (Comparable, 1, 1),
            "sort" => (Sort, 0, usize::MAX),
            "conformsTo" => (ConformsTo, 1, 1),
            "memberOf" => (MemberOf, 1, 1),
            "subsumes" => (Subsumes, 1, 1),
            "subsumedBy" => (SubsumedBy, 1, 1),
            "htmlChecks" | "htmlchecks" => (HtmlChecks, 0, 0),
            _ => return None,
        })
    }
}

/// A function argument: an expression, or for `ofType`/`is`/`as` a type specifier.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Expr(Expr),
    /// `sort(x desc)`: expression plus descending flag.
    Sort(Expr, bool),
}

/// The expression tree.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    /// `{}`.
    Empty,
    Literal(Literal),
    /// `%name` (FHIRPath §7 "Environment variables").
    Env(Box<str>),
    This,
    Index,
    Total,
    /// A member access on the input (or the focus when `None`).
    Member(Option<Box<Expr>>, Box<str>),
    /// A function call on the input (or the focus when `None`).
    Call(Option<Box<Expr>>, Func, Vec<Arg>, Option<TypeSpec>),
    Indexer(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Is(Box<Expr>, TypeSpec),
    As(Box<Expr>, TypeSpec),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A backtick-delimited identifier: never a keyword.
    Quoted(String),
    Str(String),
    Num(String),
    Date(String),
    DateTime(String),
    Time(String),
    Env(String),
    Special(&'static str),
    Eof,
}

fn syntax(pos: usize, msg: impl Into<String>) -> FhirPathError {
    FhirPathError::Parse {
        position: pos,
        message: msg.into(),
    }
}

struct Lexer<'s> {
    src: &'s str,
    bytes: &'s [u8],
    pos: usize,
}

impl<'s> Lexer<'s> {
    fn skip_ws(&mut self) -> Result<(), FhirPathError> {
        loop {
            while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            let rest = &self.bytes[self.pos..];
            if rest.starts_with(b"//") {
                while self.pos < self.bytes.len() && self.bytes[self.pos] != b'\n' {
                    self.pos += 1;
                }
            } else if rest.starts_with(b"/*") {
                match self.src[self.pos + 2..].find("*/") {
                    Some(end) => self.pos += 2 + end + 2,
                    None => return Err(syntax(self.pos, "unterminated comment")),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, FhirPathError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(syntax(start, "unterminated string"));
            };
            if b == quote {
                self.pos += 1;
                return Ok(out);
            }
            if b == b'\\' {
                let Some(&e) = self.bytes.get(self.pos + 1) else {
                    return Err(syntax(self.pos, "bad escape"));
                };
                self.pos += 2;
                match e {
                    b'\'' => out.push('\''),
                    b'"' => out.push('"'),
                    b'`' => out.push('`'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let hex = self
                            .src
                            .get(self.pos..self.pos + 4)
                            .ok_or_else(|| syntax(self.pos, "bad unicode escape"))?;
                        let code = u32::from_str_radix(hex, 16)
                            .map_err(|_| syntax(self.pos, "bad unicode escape"))?;
                        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        self.pos += 4;
                    }
                    _ => return Err(syntax(self.pos - 2, "bad escape")),
                }
                continue;
            }
            let ch = self.src[self.pos..]
                .chars()
                .next()
                .ok_or_else(|| syntax(self.pos, "bad character"))?;
            out.push(ch);
            self.pos += ch.len_utf8();
        }
    }

    /// Date/time literal after `@` (FHIRPath §4.1.4): the longest run of date-time
    /// characters, then classified.
    fn datetime(&mut self) -> Result<Tok, FhirPathError> {
        let start = self.pos;
        self.pos += 1;
        let is_dt =
            |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'.' | b'T' | b'Z' | b'+');
        while self.pos < self.bytes.len() && is_dt(self.bytes[self.pos]) {
            // A '.' must be followed by a digit (else it's member access).
            if self.bytes[self.pos] == b'.'
                && !self.bytes.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
            {
                break;
            }
            // '+'/'-' after the date part that is not a timezone: stop if not followed by digit.
            if matches!(self.bytes[self.pos], b'+' | b'-')
                && !self.bytes.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
            {
                break;
            }
            self.pos += 1;
        }
        let text = &self.src[start + 1..self.pos];
        if let Some(t) = text.strip_prefix('T') {
            if !super::value::valid_time(t) {
                return Err(syntax(start, "bad time literal"));
            }
            return Ok(Tok::Time(t.to_string()));
        }
        if text.contains('T') {
            if !super::value::valid_datetime(text) {
                return Err(syntax(start, "bad dateTime literal"));
            }
            Ok(Tok::DateTime(text.to_string()))
        } else {
            if !super::value::valid_date(text) {
                return Err(syntax(start, "bad date literal"));
            }
            Ok(Tok::Date(text.to_string()))
        }
    }

    fn next(&mut self) -> Result<(usize, Tok), FhirPathError> {
        self.skip_ws()?;
        let start = self.pos;
        let Some(&b) = self.bytes.get(self.pos) else {
            return Ok((start, Tok::Eof));
        };
        let tok = match b {
            b'\'' => Tok::Str(self.string(b'\'')?),
            b'`' => Tok::Quoted(self.string(b'`')?),
            b'@' => self.datetime()?,
            b'%' => {
                self.pos += 1;
                match self.bytes.get(self.pos) {
                    Some(b'`') => Tok::Env(self.string(b'`')?),
                    Some(b'\'') => Tok::Env(self.string(b'\'')?),
                    _ => {
                        let s = self.pos;
                        while self.pos < self.bytes.len()
                            && (self.bytes[self.pos].is_ascii_alphanumeric()
                                || matches!(self.bytes[self.pos], b'_' | b'-'))
                        {
                            self.pos += 1;
                        }
                        if s == self.pos {
                            return Err(syntax(start, "bad environment variable"));
                        }
                        Tok::Env(self.src[s..self.pos].to_string())
                    }
                }
            }
            b'0'..=b'9' => {
                while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                if self.bytes.get(self.pos) == Some(&b'.')
                    && self.bytes.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
                {
                    self.pos += 1;
                    while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_digit() {
                        self.pos += 1;
                    }
                } else if self.bytes.get(self.pos) == Some(&b'L') {
                    // Long literal (FHIRPath 2.0 §4.1.3): treat as Integer.
                    let t = self.src[start..self.pos].to_string();
                    self.pos += 1;
                    return Ok((start, Tok::Num(t)));
                }
                Tok::Num(self.src[start..self.pos].to_string())
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'_' => {
                while self.pos < self.bytes.len()
                    && (self.bytes[self.pos].is_ascii_alphanumeric()
                        || self.bytes[self.pos] == b'_')
                {
                    self.pos += 1;
                }
                Tok::Ident(self.src[start..self.pos].to_string())
            }
            b'$' => {
                self.pos += 1;
                while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_alphabetic() {
                    self.pos += 1;
                }
                match &self.src[start..self.pos] {
                    "$this" => Tok::Special("$this"),
                    "$index" => Tok::Special("$index"),
                    "$total" => Tok::Special("$total"),
                    other => return Err(syntax(start, format!("unknown {other}"))),
                }
            }
            _ => {
                const OPS: [&str; 22] = [
                    "<=", ">=", "!=", "!~", "(", ")", "[", "]", "{", "}", ".", ",", "+", "-", "*",
                    "/", "&", "|", "<", ">", "=", "~",
                ];
                let rest = &self.src[self.pos..];
                match OPS.iter().find(|op| rest.starts_with(**op)) {
                    Some(op) => {
                        self.pos += op.len();
                        Tok::Special(op)
                    }
                    None => return Err(syntax(start, "unexpected character")),
                }
            }
        };
        Ok((start, tok))
    }
}

pub(crate) fn parse(src: &str) -> Result<Expr, FhirPathError> {
    let mut lexer = Lexer {
        src,
        bytes: src.as_bytes(),
        pos: 0,
    };
    let mut toks = Vec::new();
    loop {
        let (p, t) = lexer.next()?;
        let eof = t == Tok::Eof;
        toks.push((p, t));
        if eof {
            break;
        }
    }
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
    };
    let e = p.expr(0)?;
    if p.peek() != &Tok::Eof {
        return Err(syntax(p.pos(), "unexpected token"));
    }
    Ok(e)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    i: usize,
    /// Nesting depth, bounded so hostile input cannot overflow the stack.
    depth: u32,
}

/// Maximum depth of the expression tree (nesting plus operator and path chains), so that
/// hostile input can overflow neither the parser's nor the evaluator's stack (checked in a
/// 2 MiB test thread, unoptimised). All R4 SearchParameter expressions fit well within it.
const MAX_DEPTH: u32 = 200;

const UNIT_WORDS: [&str; 16] = [
    "year",
    "years",
    "month",
    "months",
    "week",
    "weeks",
    "day",
    "days",
    "hour",
    "hours",
    "minute",
    "minutes",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
];

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.i).map_or(&Tok::Eof, |t| &t.1)
    }
    fn peek_at(&self, k: usize) -> &Tok {
        self.toks.get(self.i + k).map_or(&Tok::Eof, |t| &t.1)
    }
    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(0, |t| t.0)
    }
    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        self.i += 1;
        t
    }
    fn is_special(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Special(x) if *x == s)
    }
    fn is_word(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Ident(x) if x == s)
    }
    fn expect(&mut self, s: &str) -> Result<(), FhirPathError> {
        if self.is_special(s) {
            self.i += 1;
            Ok(())
        } else {
            Err(syntax(self.pos(), format!("expected '{s}'")))
        }
    }

    /// The binary operator at the cursor with its precedence level (higher binds tighter).
    fn binop(&self) -> Option<(BinOp, u8)> {
        Some(match self.peek() {
            Tok::Special(s) => match *s {
                "*" => (BinOp::Mul, 9),
                "/" => (BinOp::Div, 9),
                "+" => (BinOp::Add, 8),
                "-" => (BinOp::Sub, 8),
                "&" => (BinOp::Concat, 8),
                "|" => (BinOp::Union, 6),
                "<" => (BinOp::Lt, 5),
                ">" => (BinOp::Gt, 5),
                "<=" => (BinOp::Le, 5),
                ">=" => (BinOp::Ge, 5),
                "=" => (BinOp::Eq, 4),
                "!=" => (BinOp::Ne, 4),
                "~" => (BinOp::Equiv, 4),
                "!~" => (BinOp::NotEquiv, 4),
                _ => return None,
            },
            Tok::Ident(w) => match w.as_str() {
                "div" => (BinOp::IntDiv, 9),
                "mod" => (BinOp::Mod, 9),
                "in" => (BinOp::In, 3),
                "contains" => (BinOp::Contains, 3),
                "and" => (BinOp::And, 2),
                "or" => (BinOp::Or, 1),
                "xor" => (BinOp::Xor, 1),
                "implies" => (BinOp::Implies, 0),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Precedence climbing; `is`/`as` sit at level 7 (between additive and union).
    /// One more level of tree depth (see [`MAX_DEPTH`]).
    fn deeper(&mut self) -> Result<(), FhirPathError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(syntax(self.pos(), "expression nested too deeply"));
        }
        Ok(())
    }

    fn expr(&mut self, min: u8) -> Result<Expr, FhirPathError> {
        let base = self.depth;
        self.deeper()?;
        let mut lhs = self.unary()?;
        loop {
            self.deeper()?;
            if min <= 7 && (self.is_word("is") || self.is_word("as")) {
                let is = self.is_word("is");
                self.i += 1;
                let ts = self.type_spec()?;
                lhs = if is {
                    Expr::Is(Box::new(lhs), ts)
                } else {
                    Expr::As(Box::new(lhs), ts)
                };
                continue;
            }
            let Some((op, prec)) = self.binop() else {
                break;
            };
            if prec < min {
                break;
            }
            self.i += 1;
            let rhs = self.expr(prec + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth = base;
        Ok(lhs)
    }

    /// A type specifier, checked against the System types and the R4 registry
    /// (FHIRPath §6.3: an unknown type is an error).
    fn type_spec(&mut self) -> Result<TypeSpec, FhirPathError> {
        let pos = self.pos();
        let ts = self.type_spec_raw()?;
        let reg = crate::registry::R4Registry::get();
        let system = matches!(
            &*ts.name,
            "Boolean"
                | "String"
                | "Integer"
                | "Decimal"
                | "Date"
                | "DateTime"
                | "Time"
                | "Quantity"
        );
        let fhir = reg.type_definition(&ts.name).is_some() || reg.is_primitive_type(&ts.name);
        let known = match ts.namespace.as_deref() {
            None => system || fhir,
            Some("System") => true,
            Some("FHIR") => fhir,
            Some(_) => false,
        };
        if !known {
            return Err(syntax(pos, format!("unknown type {}", ts.name)));
        }
        Ok(ts)
    }

    fn type_spec_raw(&mut self) -> Result<TypeSpec, FhirPathError> {
        let first = self.ident()?;
        if self.is_special(".")
            && let Tok::Ident(_) | Tok::Quoted(_) = self.peek_at(1)
        {
            self.i += 1;
            let name = self.ident()?;
            return Ok(TypeSpec {
                namespace: Some(first.into()),
                name: name.into(),
            });
        }
        Ok(TypeSpec {
            namespace: None,
            name: first.into(),
        })
    }

    fn ident(&mut self) -> Result<String, FhirPathError> {
        match self.bump() {
            Tok::Ident(s) | Tok::Quoted(s) => Ok(s),
            _ => {
                self.i -= 1;
                Err(syntax(self.pos(), "expected identifier"))
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, FhirPathError> {
        let base = self.depth;
        self.deeper()?;
        let r = self.unary_inner();
        self.depth = base;
        r
    }

    fn unary_inner(&mut self) -> Result<Expr, FhirPathError> {
        if self.is_special("-") {
            self.i += 1;
            let e = self.unary()?;
            return Ok(match e {
                Expr::Literal(Literal::Integer(i)) => Expr::Literal(Literal::Integer(-i)),
                Expr::Literal(Literal::Decimal(d)) => Expr::Literal(Literal::Decimal(d.neg())),
                Expr::Literal(Literal::Quantity(q)) => Expr::Literal(Literal::Quantity(Quantity {
                    value: q.value.neg(),
                    unit: q.unit,
                })),
                other => Expr::Neg(Box::new(other)),
            });
        }
        if self.is_special("+") {
            self.i += 1;
            return self.unary();
        }
        let mut e = self.term()?;
        loop {
            self.deeper()?;
            if self.is_special(".") {
                self.i += 1;
                e = self.invocation(Some(e))?;
            } else if self.is_special("[") {
                self.i += 1;
                let idx = self.expr(0)?;
                self.expect("]")?;
                e = Expr::Indexer(Box::new(e), Box::new(idx));
            } else {
                break;
            }
        }
        Ok(e)
    }

    fn invocation(&mut self, input: Option<Expr>) -> Result<Expr, FhirPathError> {
        let pos = self.pos();
        let input = input.map(Box::new);
        match self.bump() {
            Tok::Ident(name) if self.is_special("(") => {
                self.i += 1;
                let (f, min, max) = Func::lookup(&name)
                    .ok_or_else(|| syntax(pos, format!("unknown function {name}()")))?;
                let mut args = Vec::new();
                let mut type_arg = None;
                if !self.is_special(")") {
                    loop {
                        if matches!(f, Func::OfType | Func::Is | Func::As) && type_arg.is_none() {
                            type_arg = Some(self.type_spec()?);
                        } else {
                            let e = self.expr(0)?;
                            if f == Func::Sort {
                                if let Expr::Neg(inner) = e {
                                    // `sort(-x)`: descending, also for strings.
                                    args.push(Arg::Sort(*inner, true));
                                } else if let Expr::Literal(
                                    Literal::Integer(_) | Literal::Decimal(_),
                                ) = e
                                {
                                    args.push(Arg::Expr(e));
                                } else if self.is_word("asc") || self.is_word("desc") {
                                    let desc = self.is_word("desc");
                                    self.i += 1;
                                    args.push(Arg::Sort(e, desc));
                                } else {
                                    args.push(Arg::Expr(e));
                                }
                            } else {
                                args.push(Arg::Expr(e));
                            }
                        }
                        if self.is_special(",") {
                            self.i += 1;
                            continue;
                        }
                        break;
                    }
                }
                self.expect(")")?;
                let n = args.len() + usize::from(type_arg.is_some());
                if n < min || n > max {
                    return Err(syntax(
                        pos,
                        format!("wrong number of arguments to {name}()"),
                    ));
                }
                Ok(Expr::Call(input, f, args, type_arg))
            }
            Tok::Ident(name) | Tok::Quoted(name) => Ok(Expr::Member(input, name.into())),
            Tok::Special("$this") if input.is_none() => Ok(Expr::This),
            Tok::Special("$index") if input.is_none() => Ok(Expr::Index),
            Tok::Special("$total") if input.is_none() => Ok(Expr::Total),
            _ => Err(syntax(pos, "expected member or function")),
        }
    }

    fn term(&mut self) -> Result<Expr, FhirPathError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Num(n) => {
                self.i += 1;
                // Quantity literal: number followed by a unit string or calendar word.
                let unit = match self.peek() {
                    Tok::Str(u) => Some(u.clone()),
                    Tok::Ident(w) if UNIT_WORDS.contains(&w.as_str()) => Some(w.clone()),
                    _ => None,
                };
                let value = Dec::parse(&n).ok_or_else(|| syntax(pos, "bad number"))?;
                if let Some(unit) = unit {
                    self.i += 1;
                    return Ok(Expr::Literal(Literal::Quantity(Quantity {
                        value,
                        unit: unit.into(),
                    })));
                }
                if n.contains('.') {
                    Ok(Expr::Literal(Literal::Decimal(value)))
                } else {
                    let i: i64 = n.parse().map_err(|_| syntax(pos, "integer overflow"))?;
                    Ok(Expr::Literal(Literal::Integer(i)))
                }
            }
            Tok::Str(s) => {
                self.i += 1;
                Ok(Expr::Literal(Literal::String(s.into())))
            }
            Tok::Date(d) => {
                self.i += 1;
                Ok(Expr::Literal(Literal::Date(d.into())))
            }
            Tok::DateTime(d) => {
                self.i += 1;
                Ok(Expr::Literal(Literal::DateTime(d.into())))
            }
            Tok::Time(t) => {
                self.i += 1;
                Ok(Expr::Literal(Literal::Time(t.into())))
            }
            Tok::Env(name) => {
                self.i += 1;
                Ok(Expr::Env(name.into()))
            }
            Tok::Special("(") => {
                self.i += 1;
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Special("{") => {
                self.i += 1;
                self.expect("}")?;
                Ok(Expr::Empty)
            }
            Tok::Ident(w)
                if (w == "true" || w == "false")
                    && !matches!(self.peek_at(1), Tok::Special("(")) =>
            {
                self.i += 1;
                Ok(Expr::Literal(Literal::Boolean(w == "true")))
            }
            Tok::Ident(_) | Tok::Quoted(_) | Tok::Special("$this" | "$index" | "$total") => {
                self.invocation(None)
            }
            Tok::Eof => Err(syntax(pos, "unexpected end of expression")),
            _ => Err(syntax(pos, "unexpected token")),
        }
    }
}
