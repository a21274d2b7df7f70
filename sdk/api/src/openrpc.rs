//! The OpenRPC 1.3 document served by `rpc.discover`, generated from the method specs and
//! the serde types' JSON schemas (schemars), never written by hand.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::error::ErrorKind;
use crate::spec::{MethodKind, MethodSpec};

/// Name of the discovery method (served by berthd, listed in the document).
pub const DISCOVER_METHOD: &str = "rpc.discover";

fn summary_of(doc: &str) -> String {
    doc.lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn method_object(
    spec: &MethodSpec,
    generator: &mut schemars::SchemaGenerator,
) -> Map<String, Value> {
    let params: Vec<Value> = spec
        .params
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "required": p.is_required(),
                "schema": (p.schema)(generator),
            })
        })
        .collect();
    let item = (spec.result)(generator);
    let mut m = Map::new();
    m.insert("name".into(), json!(spec.name));
    m.insert("summary".into(), json!(summary_of(spec.doc)));
    m.insert(
        "description".into(),
        json!(
            spec.doc
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
        ),
    );
    m.insert("paramStructure".into(), json!("either"));
    m.insert("params".into(), Value::Array(params));
    match spec.kind {
        MethodKind::Call => {
            m.insert("result".into(), json!({ "name": "result", "schema": item }));
        }
        MethodKind::Subscription {
            notification,
            unsubscribe,
        } => {
            m.insert(
                "result".into(),
                json!({ "name": "subscription", "schema": { "type": ["string", "integer"] } }),
            );
            m.insert(
                "x-subscription".into(),
                json!({ "notification": notification, "unsubscribe": unsubscribe, "item": item }),
            );
        }
    }
    m
}

/// Builds the OpenRPC document for `methods` (normally [`crate::all_methods`]).
pub fn document(methods: &[&MethodSpec], server_version: &str) -> Value {
    let mut generator = SchemaSettings::draft07()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut list: Vec<Value> = methods
        .iter()
        .map(|spec| Value::Object(method_object(spec, &mut generator)))
        .collect();
    list.push(json!({
        "name": DISCOVER_METHOD,
        "summary": "This document.",
        "params": [],
        "result": { "name": "OpenRPC document", "schema": { "type": "object" } },
    }));
    let errors: Vec<Value> = ErrorKind::ALL
        .iter()
        .map(|k| json!({ "code": k.code(), "message": k.as_str() }))
        .collect();
    json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "berth engine API",
            "version": crate::API_VERSION,
            "x-server-version": server_version,
            "description": "JSON-RPC 2.0 over HTTP (POST /) and WebSocket (same path) on berthd's \
                Unix socket or TCP listener. Errors carry data {kind, field?}.",
        },
        "methods": list,
        "components": {
            "schemas": generator.take_definitions(true),
            "x-error-codes": errors,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document(&crate::all_methods(), "test");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = piece.split('"').next().unwrap();
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {target}"));
            assert!(schemas.contains_key(name), "dangling $ref {target}");
        }
        assert!(schemas.contains_key("SystemInfo"));
    }

    #[test]
    fn lists_every_method_once_with_params() {
        let doc = document(&crate::all_methods(), "test");
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        for spec in crate::all_methods() {
            assert_eq!(names.iter().filter(|n| **n == spec.name).count(), 1);
        }
        let hb = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "system.heartbeat")
            .unwrap();
        assert_eq!(hb["params"][0]["name"], "interval_ms");
        assert_eq!(hb["params"][0]["required"], false);
        assert_eq!(
            hb["x-subscription"]["unsubscribe"],
            "system.heartbeat_unsubscribe"
        );
    }
}
