//! Read access to segments for the mappers: unescaped, trimmed leaf values, with the HL7 null
//! (`""`) and empty values both read as absent, so a mapper never sees an empty string.

use crate::message::{Component, Field, Message, Repetition, Segment};

/// A segment together with its message (needed to unescape leaves).
#[derive(Clone, Copy)]
pub(crate) struct Seg<'m> {
    pub(crate) msg: &'m Message,
    pub(crate) seg: &'m Segment,
}

/// One repetition of a field, or a component read as a data type of its own (subcomponents
/// then act as components, e.g. CX-4 as HD).
#[derive(Clone, Copy)]
pub(crate) struct Rep<'m> {
    msg: &'m Message,
    kind: RepKind<'m>,
}

#[derive(Clone, Copy)]
enum RepKind<'m> {
    Rep(&'m Repetition),
    Comp(&'m Component),
}

fn clean(msg: &Message, raw: &str) -> Option<String> {
    if raw.is_empty() || raw == "\"\"" {
        return None;
    }
    let text = msg.unescape(raw);
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

impl<'m> Seg<'m> {
    /// Wraps a segment of `msg`.
    pub(crate) fn new(msg: &'m Message, seg: &'m Segment) -> Seg<'m> {
        Seg { msg, seg }
    }

    /// The segment ID (`PID`).
    pub(crate) fn id(&self) -> &'m str {
        self.seg.id()
    }

    fn field(&self, n: usize) -> Option<&'m Field> {
        self.seg.field(n)
    }

    /// The non-empty repetitions of field `n`.
    pub(crate) fn reps(&self, n: usize) -> Vec<Rep<'m>> {
        let msg = self.msg;
        self.field(n)
            .map(|f| {
                f.repetitions()
                    .iter()
                    .filter(|r| !r.is_empty())
                    .map(|r| Rep {
                        msg,
                        kind: RepKind::Rep(r),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first non-empty repetition of field `n`.
    pub(crate) fn rep(&self, n: usize) -> Option<Rep<'m>> {
        self.reps(n).into_iter().next()
    }

    /// Field `n`, first repetition, component 1, subcomponent 1.
    pub(crate) fn v(&self, n: usize) -> Option<String> {
        self.rep(n).and_then(|r| r.c(1))
    }

    /// Field `n`, first repetition, component `c`, subcomponent 1.
    pub(crate) fn vc(&self, n: usize, c: usize) -> Option<String> {
        self.rep(n).and_then(|r| r.c(c))
    }

    /// Every non-empty repetition of field `n` as text (component 1 ... joined with `^`
    /// removed: the whole repetition, unescaped, component separators kept as spaces).
    pub(crate) fn texts(&self, n: usize) -> Vec<String> {
        self.reps(n).iter().filter_map(|r| r.text()).collect()
    }

    /// Location text of field `n` of this segment (`OBX-5`).
    pub(crate) fn loc(&self, n: usize) -> String {
        format!("{}-{}", self.id(), n)
    }
}

impl<'m> Rep<'m> {
    /// Component `n`, subcomponent 1.
    pub(crate) fn c(&self, n: usize) -> Option<String> {
        self.s(n, 1)
    }

    /// Component `n`, subcomponent `s` (for a component read as a type: its subcomponent
    /// `n`, `s` must be 1).
    pub(crate) fn s(&self, n: usize, s: usize) -> Option<String> {
        match self.kind {
            RepKind::Rep(r) => clean(self.msg, r.component(n)?.subcomponent(s)?),
            RepKind::Comp(c) if s == 1 => clean(self.msg, c.subcomponent(n)?),
            RepKind::Comp(_) => None,
        }
    }

    /// Component `n` read as a data type of its own (its subcomponents become components).
    pub(crate) fn sub(&self, n: usize) -> Option<Rep<'m>> {
        match self.kind {
            RepKind::Rep(r) => {
                let c = r.component(n)?;
                (!c.is_empty()).then_some(Rep {
                    msg: self.msg,
                    kind: RepKind::Comp(c),
                })
            }
            RepKind::Comp(_) => None,
        }
    }

    /// The whole repetition as text: non-empty components joined by `sep`.
    pub(crate) fn joined(&self, sep: &str) -> Option<String> {
        let parts: Vec<String> = match self.kind {
            RepKind::Rep(r) => (1..=r.components().len())
                .filter_map(|i| self.c(i))
                .collect(),
            RepKind::Comp(c) => (1..=c.subcomponents().len())
                .filter_map(|i| self.c(i))
                .collect(),
        };
        (!parts.is_empty()).then(|| parts.join(sep))
    }

    /// The repetition as text with every component kept in place, separated by `^`
    /// (for free text that may itself contain component separators).
    pub(crate) fn text(&self) -> Option<String> {
        let RepKind::Rep(r) = self.kind else {
            return self.c(1);
        };
        let d = self.msg.delimiters();
        let raw = r.to_er7(d);
        clean(self.msg, &raw)
    }
}

/// Every segment of the message, wrapped.
pub(crate) fn segments(msg: &Message) -> Vec<Seg<'_>> {
    msg.segments().iter().map(|s| Seg::new(msg, s)).collect()
}
