//! Generates `profiles/r4-search-params.json`, the compact SearchParameter and compartment
//! table behind `fhir_model::search::SearchParamRegistry`.
//!
//! ```text
//! cargo run -p fhir-model --example gen_r4_search_params -- <definitions dir> <output file>
//! # e.g.
//! cargo run -p fhir-model --example gen_r4_search_params -- \
//!     ../shared/testdata/fhir-r4-definitions profiles/r4-search-params.json
//! ```
//!
//! Input: `search-parameters.json` (Bundle of the 1,375 R4 SearchParameters,
//! searchparameter-registry.html) and `profiles-resources.json` (for the five
//! CompartmentDefinitions: Patient, Encounter, RelatedPerson, Practitioner, Device;
//! compartmentdefinition.html) from the FHIR R4 (4.0.1) definitions.
//!
//! Output (UTF-8 JSON, one parameter per line so diffs stay readable):
//!
//! ```text
//! {
//!   "format": "mediflow-r4-search-params/1",
//!   "fhirVersion": "4.0.1",
//!   "generator": "fhir-model/examples/gen_r4_search_params.rs",
//!   "params": [
//!     {"code": "name", "base": ["Patient"], "type": "string", "expression": "Patient.name",
//!      "url": "http://hl7.org/fhir/SearchParameter/Patient-name", "description": "..."},
//!     {"code": "code-value-quantity", "base": ["Observation"], "type": "composite",
//!      "expression": "Observation", "components": [
//!        {"code": "code", "type": "token", "expression": "code"},
//!        {"code": "value-quantity", "type": "quantity", "expression": "value.as(Quantity)"}],
//!      ...},
//!     ...
//!   ],
//!   "compartments": {
//!     "Patient": {"Account": ["subject"], "ActivityDefinition": [], ...},
//!     ...
//!   }
//! }
//! ```
//!
//! * Parameters keep the order of the input Bundle. Keys, in this order and only when
//!   present in the definition: `code`, `base`, `type`, `expression`, `target`,
//!   `components`, `modifier`, `comparator`, `multipleOr`, `multipleAnd`, `url`,
//!   `description`.
//! * `components`: each `SearchParameter.component` with its `definition` canonical resolved
//!   to the referenced parameter's `code` and `type`, and the component's own (relative)
//!   `expression`.
//! * `compartments`: compartment type (CompartmentDefinition.code) → resource type →
//!   `CompartmentDefinition.resource.param` as written (`[]` when the resource type is not in
//!   the compartment; the compartment's own type has the special `{def}`).
//!
//! The test `search_params_file_matches_definitions` in `fhir-model/tests/` regenerates the
//! table with [`generate`] and compares it with the committed file.

use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

fn read_bundle(defs_dir: &Path, file: &str) -> Result<Value, Box<dyn Error>> {
    let path = defs_dir.join(file);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn entries(bundle: &Value) -> Result<impl Iterator<Item = &Value>, Box<dyn Error>> {
    let entries = bundle["entry"].as_array().ok_or("Bundle without entry")?;
    Ok(entries.iter().map(|e| &e["resource"]))
}

/// Reads the definition Bundles from `defs_dir` and returns the JSON text of the table.
pub fn generate(defs_dir: &Path) -> Result<String, Box<dyn Error>> {
    let params = read_bundle(defs_dir, "search-parameters.json")?;
    let resources = read_bundle(defs_dir, "profiles-resources.json")?;

    let mut by_url: HashMap<&str, &Value> = HashMap::new();
    for sp in entries(&params)? {
        if sp["resourceType"] == "SearchParameter"
            && let Some(url) = sp["url"].as_str()
        {
            by_url.insert(url, sp);
        }
    }

    let mut lines = Vec::new();
    for sp in entries(&params)? {
        if sp["resourceType"] != "SearchParameter" {
            continue;
        }
        let code = sp["code"].as_str().ok_or("SearchParameter without code")?;
        let mut out = Map::new();
        out.insert("code".into(), json!(code));
        out.insert("base".into(), sp["base"].clone());
        out.insert("type".into(), sp["type"].clone());
        for key in ["expression", "target"] {
            if let Some(v) = sp.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
        if let Some(components) = sp["component"].as_array() {
            let mut list = Vec::new();
            for c in components {
                let def = c["definition"]
                    .as_str()
                    .ok_or_else(|| format!("{code}: component without definition"))?;
                let target = by_url
                    .get(def)
                    .ok_or_else(|| format!("{code}: component {def} not found"))?;
                list.push(json!({
                    "code": target["code"],
                    "type": target["type"],
                    "expression": c["expression"],
                }));
            }
            out.insert("components".into(), Value::Array(list));
        }
        for key in [
            "modifier",
            "comparator",
            "multipleOr",
            "multipleAnd",
            "url",
            "description",
        ] {
            if let Some(v) = sp.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
        lines.push(format!(
            "    {}",
            serde_json::to_string(&Value::Object(out))?
        ));
    }

    let mut compartments = Vec::new();
    for cd in entries(&resources)? {
        if cd["resourceType"] != "CompartmentDefinition" {
            continue;
        }
        let code = cd["code"]
            .as_str()
            .ok_or("CompartmentDefinition without code")?;
        let mut map = Map::new();
        for r in cd["resource"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let rt = r["code"]
                .as_str()
                .ok_or("compartment resource without code")?;
            map.insert(rt.into(), r.get("param").cloned().unwrap_or(json!([])));
        }
        compartments.push((
            code.to_string(),
            serde_json::to_string(&Value::Object(map))?,
        ));
    }
    compartments.sort();

    let mut out = String::new();
    out.push_str("{\n  \"format\": \"mediflow-r4-search-params/1\",\n");
    out.push_str("  \"fhirVersion\": \"4.0.1\",\n");
    out.push_str("  \"generator\": \"fhir-model/examples/gen_r4_search_params.rs\",\n");
    out.push_str("  \"params\": [\n");
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ],\n  \"compartments\": {\n");
    for (i, (code, text)) in compartments.iter().enumerate() {
        let sep = if i + 1 < compartments.len() { "," } else { "" };
        writeln!(out, "    {}: {text}{sep}", serde_json::to_string(code)?)?;
    }
    out.push_str("  }\n}\n");
    Ok(out)
}

#[allow(dead_code)] // `main` is unused when a test includes this file as a module.
fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [defs, out] = args.as_slice() else {
        return Err("usage: gen_r4_search_params <definitions dir> <output file>".into());
    };
    let text = generate(Path::new(defs))?;
    std::fs::write(out, &text)?;
    eprintln!("wrote {} ({} bytes)", out, text.len());
    Ok(())
}
