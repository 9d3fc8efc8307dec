//! The FHIR R4 (4.0.1) type and element registry.
//!
//! Built from the bundled table `profiles/r4-elements.json`, which
//! `examples/gen_r4_elements.rs` extracts from the StructureDefinition snapshots of
//! `profiles-resources.json` and `profiles-types.json` (FHIR R4 structuredefinition.html,
//! elementdefinition.html). The table holds, for the 146 concrete resource types, the
//! abstract `Resource`/`DomainResource` and the 41 complex datatypes (datatypes.html), every
//! element path with its cardinality, type codes (all the allowed types of a choice element
//! `value[x]`), summary/modifier flags and `contentReference`.
//!
//! [`R4Registry::get`] parses it once (a few milliseconds) and is then lock-free.

use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// FxHash (rustc's hasher): the maps are built from the bundled table, so the keys are not
/// attacker-chosen, and lookups of element names are on the validation hot path.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The bundled element table (see the module documentation).
const ELEMENTS_JSON: &str = include_str!("../../profiles/r4-elements.json");

/// What a StructureDefinition describes (StructureDefinition.kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeKind {
    /// A resource (`kind = resource`), concrete or abstract (`Resource`, `DomainResource`).
    Resource,
    /// A complex datatype (`kind = complex-type`): `HumanName`, `Quantity`, `Element`...
    ComplexType,
}

/// One allowed type of an element (ElementDefinition.type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementType {
    code: Box<str>,
    targets: Vec<Box<str>>,
}

impl ElementType {
    /// The type code: a primitive (`date`), complex (`HumanName`) or resource type name,
    /// or `BackboneElement`/`Element` for elements whose children are defined inline.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// For `Reference` and `canonical`: the allowed target types (`Patient`, `Group`...),
    /// from ElementDefinition.type.targetProfile. Empty for other types and for "any".
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| &**t)
    }

    /// Whether the code names a primitive type (FHIR primitive type names start lowercase).
    pub fn is_primitive(&self) -> bool {
        self.code.starts_with(|c: char| c.is_ascii_lowercase())
    }
}

/// Cardinality and types of one element (a row of ElementDefinition in a snapshot).
#[derive(Debug, Clone)]
pub struct ElementInfo {
    path: Box<str>,
    min: u32,
    max: Option<u32>,
    types: Vec<ElementType>,
    summary: bool,
    modifier: bool,
    content_reference: Option<Box<str>>,
}

impl ElementInfo {
    /// Full element path, e.g. `Observation.component.value[x]`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Last path segment, e.g. `value[x]`.
    pub fn name(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }

    /// Minimum cardinality (ElementDefinition.min).
    pub fn min(&self) -> u32 {
        self.min
    }

    /// Maximum cardinality: `Some(n)`, or `None` for `*`.
    pub fn max(&self) -> Option<u32> {
        self.max
    }

    /// The maximum as written in the definition: `"1"`, `"*"`, `"0"`.
    pub fn max_str(&self) -> String {
        self.max.map_or_else(|| "*".to_string(), |m| m.to_string())
    }

    /// Whether the element repeats (max > 1): a JSON array in FHIR JSON (json.html).
    pub fn is_array(&self) -> bool {
        self.max.is_none_or(|m| m > 1)
    }

    /// Whether the element is required (min >= 1).
    pub fn is_required(&self) -> bool {
        self.min >= 1
    }

    /// Whether this is a choice element (`value[x]`).
    pub fn is_choice(&self) -> bool {
        self.path.ends_with("[x]")
    }

    /// The allowed types; empty for elements defined by `contentReference`.
    pub fn types(&self) -> &[ElementType] {
        &self.types
    }

    /// ElementDefinition.isSummary.
    pub fn is_summary(&self) -> bool {
        self.summary
    }

    /// ElementDefinition.isModifier.
    pub fn is_modifier(&self) -> bool {
        self.modifier
    }

    /// ElementDefinition.contentReference, e.g. `#Questionnaire.item`.
    pub fn content_reference(&self) -> Option<&str> {
        self.content_reference.as_deref()
    }
}

/// What a JSON property name of an object resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Child {
    /// A plain element (index into [`TypeDefinition::elements`]).
    Element(u32),
    /// One concrete form of a choice element: `valueQuantity` is element `value[x]` with
    /// type number `type_index`.
    Choice { element: u32, type_index: u16 },
    /// The definition name of a choice element (`value[x]`): a path, never a JSON name.
    ChoiceBase(u32),
}

impl Child {
    pub(crate) fn element(self) -> u32 {
        match self {
            Child::Element(e) | Child::ChoiceBase(e) | Child::Choice { element: e, .. } => e,
        }
    }
}

/// Children of one object: the type root or an inline (backbone) element.
#[derive(Debug, Default)]
pub(crate) struct Node {
    children: FxMap<Box<str>, Child>,
    /// Elements with min >= 1.
    pub(crate) required: Vec<u32>,
}

/// A resource type or complex datatype with its snapshot elements.
#[derive(Debug)]
pub struct TypeDefinition {
    name: Box<str>,
    kind: TypeKind,
    is_abstract: bool,
    base: Option<Box<str>>,
    elements: Vec<ElementInfo>,
    by_path: FxMap<Box<str>, u32>,
    /// `nodes[0]` is the type root; others belong to inline elements.
    nodes: Vec<Node>,
    /// For each element, the node holding its children (own or via contentReference).
    node_of: Vec<Option<u32>>,
}

impl TypeDefinition {
    /// The type name, e.g. `Patient`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resource or complex datatype.
    pub fn kind(&self) -> TypeKind {
        self.kind
    }

    /// Whether the type is abstract (`Resource`, `DomainResource`, `Element`...).
    pub fn is_abstract(&self) -> bool {
        self.is_abstract
    }

    /// The base type name (`DomainResource` for `Patient`), if any.
    pub fn base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// All elements in snapshot order (the root element itself is not included).
    pub fn elements(&self) -> &[ElementInfo] {
        &self.elements
    }

    /// The element at a path relative to this type (`name`, `contact.name`, `value[x]`);
    /// does not cross into datatypes: see [`R4Registry::element`] for that.
    pub fn own_element(&self, rel_path: &str) -> Option<&ElementInfo> {
        self.by_path
            .get(rel_path)
            .map(|&i| &self.elements[i as usize])
    }

    pub(crate) fn element_at(&self, index: u32) -> &ElementInfo {
        &self.elements[index as usize]
    }

    pub(crate) fn node(&self, node: u32) -> &Node {
        &self.nodes[node as usize]
    }

    /// Resolves a JSON property name (`valueQuantity`, `birthDate`) within `node`.
    pub(crate) fn child(&self, node: u32, name: &str) -> Option<Child> {
        self.nodes
            .get(node as usize)
            .and_then(|n| n.children.get(name).copied())
    }

    /// The node holding the children of an inline element, if any.
    pub(crate) fn node_of(&self, element: u32) -> Option<u32> {
        self.node_of.get(element as usize).copied().flatten()
    }
}

/// The FHIR R4 type registry. Obtain it with [`R4Registry::get`].
#[derive(Debug)]
pub struct R4Registry {
    types: Vec<TypeDefinition>,
    by_name: FxMap<Box<str>, u32>,
    /// Indices of the concrete resource types, sorted by name.
    resources: Vec<u32>,
    primitives: Vec<Box<str>>,
}

#[derive(Deserialize)]
struct RawTable {
    #[serde(rename = "primitiveTypes")]
    primitive_types: Vec<String>,
    types: Vec<RawType>,
}

/// One element row: path, min, max, types, flags, contentReference.
type RawElement = (String, u32, String, Vec<String>, String, Option<String>);

#[derive(Deserialize)]
struct RawType {
    name: String,
    kind: String,
    #[serde(rename = "abstract")]
    is_abstract: bool,
    base: Option<String>,
    elements: Vec<RawElement>,
}

static REGISTRY: OnceLock<R4Registry> = OnceLock::new();

impl R4Registry {
    /// The process-wide registry, parsed from the bundled table on first use.
    ///
    /// # Panics
    /// Only if the table compiled into the binary is malformed, which the crate's tests
    /// rule out.
    pub fn get() -> &'static R4Registry {
        REGISTRY.get_or_init(|| {
            Self::from_json(ELEMENTS_JSON).expect("bundled profiles/r4-elements.json is valid")
        })
    }

    /// Parses a table in the format written by `examples/gen_r4_elements.rs`.
    ///
    /// # Errors
    /// A description of the first malformed part of the table.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawTable = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut types = Vec::with_capacity(raw.types.len());
        for t in raw.types {
            types.push(build_type(t)?);
        }
        types.sort_by(|a, b| a.name.cmp(&b.name));
        let by_name: FxMap<Box<str>, u32> = types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i as u32))
            .collect();
        let resources = types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.kind == TypeKind::Resource && !t.is_abstract)
            .map(|(i, _)| i as u32)
            .collect();
        let mut primitives: Vec<Box<str>> =
            raw.primitive_types.into_iter().map(Into::into).collect();
        primitives.sort();
        Ok(R4Registry {
            types,
            by_name,
            resources,
            primitives,
        })
    }

    /// The 146 concrete R4 resource type names, sorted (resourcelist.html).
    pub fn resource_types(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.resources
            .iter()
            .map(|&i| &*self.types[i as usize].name)
    }

    /// Whether `name` is a concrete R4 resource type (`Patient`: yes; `Resource`,
    /// `DomainResource`, `HumanName`, `patient`: no).
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.type_definition(name)
            .is_some_and(|t| t.kind == TypeKind::Resource && !t.is_abstract)
    }

    /// Whether `name` is one of the 20 primitive types (`date`, `string`, `xhtml`...).
    pub fn is_primitive_type(&self, name: &str) -> bool {
        self.primitives
            .binary_search_by(|p| (**p).cmp(name))
            .is_ok()
    }

    /// The primitive type names, sorted.
    pub fn primitive_types(&self) -> impl Iterator<Item = &str> {
        self.primitives.iter().map(|p| &**p)
    }

    /// A resource type or complex datatype (including the abstract `Resource`,
    /// `DomainResource`, `Element`, `BackboneElement`) by name.
    pub fn type_definition(&self, name: &str) -> Option<&TypeDefinition> {
        self.by_name.get(name).map(|&i| &self.types[i as usize])
    }

    /// All type definitions (resources and complex datatypes), sorted by name.
    pub fn type_definitions(&self) -> impl Iterator<Item = &TypeDefinition> {
        self.types.iter()
    }

    /// Whether `type_name` has an element at `path`; see [`R4Registry::element`].
    pub fn has_element(&self, type_name: &str, path: &str) -> bool {
        self.element(type_name, path).is_some()
    }

    /// The element at a dotted `path` relative to `type_name`.
    ///
    /// Segments may be element names (`value[x]`), JSON names of a choice (`valueQuantity`,
    /// resolving to `value[x]`), and may continue into complex datatypes and
    /// `contentReference`s: `("Patient", "name.given")` gives `HumanName.given`,
    /// `("Observation", "valueQuantity.unit")` gives `Quantity.unit`,
    /// `("Questionnaire", "item.item.linkId")` gives `Questionnaire.item.linkId`.
    /// `None` for unknown types or paths.
    pub fn element(&self, type_name: &str, path: &str) -> Option<&ElementInfo> {
        let mut td = self.type_definition(type_name)?;
        let mut node = 0u32;
        let mut segments = path.split('.').peekable();
        while let Some(seg) = segments.next() {
            let child = td.child(node, seg)?;
            let info = td.element_at(child.element());
            if segments.peek().is_none() {
                return Some(info);
            }
            // Descend.
            if let Some(n) = td.node_of(child.element()) {
                node = n;
                continue;
            }
            let code = match child {
                Child::Choice { type_index, .. } => info.types.get(type_index as usize)?.code(),
                _ if info.types.len() == 1 => info.types[0].code(),
                _ => return None,
            };
            td = self.type_definition(code)?;
            if td.kind != TypeKind::ComplexType {
                return None;
            }
            node = 0;
        }
        None
    }
}

fn parse_max(max: &str) -> Result<Option<u32>, String> {
    if max == "*" {
        Ok(None)
    } else {
        max.parse()
            .map(Some)
            .map_err(|_| format!("bad max cardinality {max:?}"))
    }
}

fn parse_type(code: &str) -> ElementType {
    match code.split_once('(') {
        Some((base, rest)) => ElementType {
            code: base.into(),
            targets: rest
                .trim_end_matches(')')
                .split('|')
                .filter(|t| !t.is_empty())
                .map(Into::into)
                .collect(),
        },
        None => ElementType {
            code: code.into(),
            targets: Vec::new(),
        },
    }
}

/// Uppercases the first character: `dateTime` -> `DateTime` (choice JSON names, json.html).
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn build_type(raw: RawType) -> Result<TypeDefinition, String> {
    let kind = match raw.kind.as_str() {
        "resource" => TypeKind::Resource,
        "complex-type" => TypeKind::ComplexType,
        other => return Err(format!("{}: unknown kind {other:?}", raw.name)),
    };
    let mut elements = Vec::with_capacity(raw.elements.len());
    let mut by_path = FxMap::default();
    let mut nodes = vec![Node::default()];
    let mut node_of: Vec<Option<u32>> = Vec::with_capacity(raw.elements.len());
    for (index, (rel, min, max, types, flags, content_ref)) in raw.elements.into_iter().enumerate()
    {
        let index = index as u32;
        let info = ElementInfo {
            path: format!("{}.{rel}", raw.name).into(),
            min,
            max: parse_max(&max).map_err(|e| format!("{}.{rel}: {e}", raw.name))?,
            types: types.iter().map(|t| parse_type(t)).collect(),
            summary: flags.contains('S'),
            modifier: flags.contains('M'),
            content_reference: content_ref.map(Into::into),
        };
        // Attach to the parent node, creating the parent's node on its first child.
        let (parent_node, name) = match rel.rsplit_once('.') {
            None => (0u32, rel.as_str()),
            Some((parent, name)) => {
                let &p = by_path
                    .get(parent)
                    .ok_or_else(|| format!("{}.{rel}: parent not defined first", raw.name))?;
                let n = match node_of[p as usize] {
                    Some(n) => n,
                    None => {
                        nodes.push(Node::default());
                        let n = (nodes.len() - 1) as u32;
                        node_of[p as usize] = Some(n);
                        n
                    }
                };
                (n, name)
            }
        };
        let node = &mut nodes[parent_node as usize];
        if let Some(base) = name.strip_suffix("[x]") {
            node.children.insert(name.into(), Child::ChoiceBase(index));
            for (ti, t) in info.types.iter().enumerate() {
                let json_name = format!("{base}{}", capitalize(t.code()));
                let child = Child::Choice {
                    element: index,
                    type_index: ti as u16,
                };
                node.children.insert(json_name.into(), child);
            }
        } else {
            node.children.insert(name.into(), Child::Element(index));
        }
        if info.min >= 1 {
            node.required.push(index);
        }
        by_path.insert(Box::<str>::from(rel.as_str()), index);
        elements.push(info);
        node_of.push(None);
    }
    // Resolve contentReference (`#Questionnaire.item`) to the referenced element's node.
    let prefix = format!("#{}.", raw.name);
    for (i, el) in elements.iter().enumerate() {
        if let Some(target) = el.content_reference.as_deref() {
            let rel = target
                .strip_prefix(&prefix)
                .ok_or_else(|| format!("{}: foreign contentReference {target}", el.path))?;
            let &t = by_path
                .get(rel)
                .ok_or_else(|| format!("{}: unknown contentReference {target}", el.path))?;
            node_of[i] = node_of[t as usize];
        }
    }
    Ok(TypeDefinition {
        name: raw.name.into(),
        kind,
        is_abstract: raw.is_abstract,
        base: raw.base.map(Into::into),
        elements,
        by_path,
        nodes,
        node_of,
    })
}
