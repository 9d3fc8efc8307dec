//! Generates `profiles/r4-elements.json`, the compact element table behind
//! `fhir_model::registry::R4Registry`.
//!
//! ```text
//! cargo run -p fhir-model --example gen_r4_elements -- <definitions dir> <output file>
//! # e.g.
//! cargo run -p fhir-model --example gen_r4_elements -- \
//!     ../shared/testdata/fhir-r4-definitions profiles/r4-elements.json
//! ```
//!
//! Input: `profiles-types.json` and `profiles-resources.json` from the FHIR R4 (4.0.1)
//! definitions (Bundles of StructureDefinition, `hl7.fhir.r4.core`). Only the `snapshot` of
//! each StructureDefinition with `derivation = specialization` (or the abstract roots
//! `Element`, `Resource`) and `kind` in `primitive-type`, `complex-type`, `resource` is read;
//! constraint profiles (`SimpleQuantity`, `MoneyQuantity`) and the logical `MetadataResource`
//! are skipped.
//!
//! Output (UTF-8 JSON, one element per line so diffs stay readable):
//!
//! ```text
//! {
//!   "format": "mediflow-r4-elements/1",
//!   "fhirVersion": "4.0.1",
//!   "columns": ["path", "min", "max", "types", "flags", "contentReference"],
//!   "primitiveTypes": ["base64Binary", ...],
//!   "types": [
//!     {"name": "Address", "kind": "complex-type", "abstract": false, "base": "Element",
//!      "elements": [
//!       ["id", 0, "1", ["string"], "", null],
//!       ...
//!     ]},
//!     ...
//!   ]
//! }
//! ```
//!
//! * `path` is the element path without the type name (`name.given`, `value[x]`).
//! * `types` are type codes; `Reference`/`canonical` with target profiles are written
//!   `Reference(Patient|Group)`. FHIRPath system types (`http://hl7.org/fhirpath/System.String`)
//!   are replaced by the FHIR type in their `structuredefinition-fhir-type` extension, and a
//!   resource's top-level `id` is written `id` (R4 json.html, the schema's `Resource.id`).
//! * `flags`: `S` when `isSummary`, `M` when `isModifier`.
//! * `contentReference` is e.g. `#Questionnaire.item` for `Questionnaire.item.item`.
//!
//! The test `elements_file_matches_definitions` in `fhir-model/tests/` regenerates the table
//! with [`generate`] and compares it with the committed file.

use serde_json::Value;
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

const FHIR_TYPE_EXT: &str = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type";
const SD_PREFIX: &str = "http://hl7.org/fhir/StructureDefinition/";

/// Reads the two definition Bundles from `defs_dir` and returns the JSON text of the table.
pub fn generate(defs_dir: &Path) -> Result<String, Box<dyn Error>> {
    let mut primitives = Vec::new();
    let mut types = Vec::new();
    for file in ["profiles-types.json", "profiles-resources.json"] {
        let text = std::fs::read_to_string(defs_dir.join(file))
            .map_err(|e| format!("reading {}: {e}", defs_dir.join(file).display()))?;
        let bundle: Value = serde_json::from_str(&text)?;
        let entries = bundle["entry"].as_array().ok_or("Bundle without entry")?;
        for entry in entries {
            let sd = &entry["resource"];
            if sd["resourceType"] != "StructureDefinition" {
                continue;
            }
            let name = sd["name"]
                .as_str()
                .ok_or("StructureDefinition without name")?;
            let kind = sd["kind"].as_str().unwrap_or_default();
            let is_abstract = sd["abstract"].as_bool().unwrap_or(false);
            let derivation = sd["derivation"].as_str();
            if derivation == Some("constraint") || kind == "logical" {
                continue;
            }
            match kind {
                "primitive-type" => primitives.push(name.to_string()),
                "complex-type" | "resource" => {
                    types.push(type_entry(sd, name, kind, is_abstract)?);
                }
                _ => {}
            }
        }
    }
    primitives.sort();
    types.sort_by(|a, b| a.0.cmp(&b.0));

    let mut out = String::new();
    out.push_str("{\n  \"format\": \"mediflow-r4-elements/1\",\n");
    out.push_str("  \"fhirVersion\": \"4.0.1\",\n");
    out.push_str("  \"generator\": \"fhir-model/examples/gen_r4_elements.rs\",\n");
    out.push_str(
        "  \"columns\": [\"path\", \"min\", \"max\", \"types\", \"flags\", \"contentReference\"],\n",
    );
    writeln!(
        out,
        "  \"primitiveTypes\": {},",
        serde_json::to_string(&primitives)?
    )?;
    out.push_str("  \"types\": [\n");
    for (i, (_, text)) in types.iter().enumerate() {
        out.push_str(text);
        out.push_str(if i + 1 < types.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ]\n}\n");
    Ok(out)
}

/// One type as JSON text (header line, one line per element).
fn type_entry(
    sd: &Value,
    name: &str,
    kind: &str,
    is_abstract: bool,
) -> Result<(String, String), Box<dyn Error>> {
    let base = sd["baseDefinition"]
        .as_str()
        .map(|b| b.trim_start_matches(SD_PREFIX).to_string());
    let elements = sd["snapshot"]["element"]
        .as_array()
        .ok_or_else(|| format!("{name}: no snapshot"))?;
    let mut rows = Vec::new();
    let prefix = format!("{name}.");
    for el in elements {
        let path = el["path"].as_str().ok_or("element without path")?;
        let Some(rel) = path.strip_prefix(&prefix) else {
            continue; // the root element
        };
        let min = el["min"].as_u64().unwrap_or(0);
        let max = el["max"].as_str().unwrap_or("*");
        let mut codes = Vec::new();
        for t in el["type"].as_array().map(Vec::as_slice).unwrap_or_default() {
            codes.push(type_code(t, kind, rel)?);
        }
        let mut flags = String::new();
        if el["isSummary"].as_bool() == Some(true) {
            flags.push('S');
        }
        if el["isModifier"].as_bool() == Some(true) {
            flags.push('M');
        }
        let row = serde_json::json!([rel, min, max, codes, flags, el.get("contentReference")]);
        rows.push(format!("      {}", serde_json::to_string(&row)?));
    }
    let header = serde_json::json!({
        "name": name, "kind": kind, "abstract": is_abstract, "base": base
    });
    let header = serde_json::to_string(&header)?;
    // Re-open the header object to append the element array.
    let header = header.trim_end_matches('}');
    let text = format!(
        "    {header},\"elements\": [\n{}\n    ]}}",
        rows.join(",\n")
    );
    Ok((name.to_string(), text))
}

/// The type code of one `ElementDefinition.type`, with target profiles folded in.
fn type_code(t: &Value, kind: &str, rel_path: &str) -> Result<String, Box<dyn Error>> {
    let code = t["code"].as_str().ok_or("type without code")?;
    let mut code = if code.starts_with("http://hl7.org/fhirpath/System.") {
        let ext = t["extension"]
            .as_array()
            .and_then(|exts| exts.iter().find(|e| e["url"] == FHIR_TYPE_EXT))
            .and_then(|e| e["valueUrl"].as_str().or(e["valueUri"].as_str()))
            .ok_or_else(|| format!("{rel_path}: system type without fhir-type extension"))?;
        ext.to_string()
    } else {
        code.to_string()
    };
    if kind == "resource" && rel_path == "id" {
        code = "id".to_string();
    }
    if let Some(targets) = t["targetProfile"].as_array() {
        let names: Vec<&str> = targets
            .iter()
            .filter_map(Value::as_str)
            .map(|p| p.trim_start_matches(SD_PREFIX))
            .collect();
        if !names.is_empty() {
            code = format!("{code}({})", names.join("|"));
        }
    }
    Ok(code)
}

#[allow(dead_code)] // `main` is unused when a test includes this file as a module.
fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [defs, out] = args.as_slice() else {
        return Err("usage: gen_r4_elements <definitions dir> <output file>".into());
    };
    let text = generate(Path::new(defs))?;
    std::fs::write(out, &text)?;
    eprintln!("wrote {} ({} bytes)", out, text.len());
    Ok(())
}
