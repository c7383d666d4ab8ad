//! `GET /api/v1/openapi.json`: `docs/openapi.json`, embedded and checked against the routing table.

/// The document, served as is.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;
    use crate::api::routes::ROUTES;

    fn described() -> BTreeSet<(String, String)> {
        let doc: Value = serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    fn routed() -> BTreeSet<(String, String)> {
        ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect()
    }

    #[test]
    fn every_route_is_described() {
        let described = described();
        for route in routed() {
            assert!(
                described.contains(&route),
                "{route:?} is not in docs/openapi.json"
            );
        }
    }

    #[test]
    fn every_described_operation_is_routed() {
        let routed = routed();
        for pair in described() {
            assert!(
                routed.contains(&pair),
                "{pair:?} is described but not routed"
            );
        }
    }

    #[test]
    fn every_operation_has_an_id_summary_and_responses_and_refs_resolve() {
        let doc: Value = serde_json::from_str(DOCUMENT).unwrap();
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()));
                assert!(op["summary"].is_string());
                assert!(!op["responses"].as_object().unwrap().is_empty());
            }
        }
        // Every `$ref` points at something the document defines.
        fn refs<'a>(node: &'a Value, out: &mut Vec<&'a str>) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        out.push(target);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut targets = Vec::new();
        refs(&doc, &mut targets);
        assert!(!targets.is_empty());
        for target in targets {
            let pointer = target.strip_prefix('#').expect("local $ref");
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
        }
    }
}
