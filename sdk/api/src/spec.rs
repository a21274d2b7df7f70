//! Method descriptions generated next to each jsonrpsee trait, and the strict params check
//! that runs before any handler.
//!
//! Every method of the API is declared once with [`crate::namespace!`]; that declaration
//! yields the jsonrpsee trait (server and client) *and* a [`MethodSpec`] table. The table
//! drives the OpenRPC document, and [`normalize_params`], which the server runs on every
//! request: it accepts positional or named params, rejects unknown or ill-typed ones with a
//! message naming the field, and rewrites params into the named form the handler decodes.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// One parameter of a method.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// Wire name (snake_case; lowerCamelCase is accepted as an alias).
    pub name: &'static str,
    /// JSON schema of the parameter type.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Decodes a value as the parameter type, reporting the JSON path of the first error,
    /// and returns its canonical form (the decoded value encoded again).
    pub check: fn(Value) -> Result<Value, FieldError>,
}

impl ParamSpec {
    /// A parameter may be omitted when its type accepts `null` (an `Option`).
    pub fn is_required(&self) -> bool {
        (self.check)(Value::Null).is_err()
    }
}

/// Whether a method answers once or opens a subscription.
#[derive(Debug, Clone, Copy)]
pub enum MethodKind {
    /// A plain call with one result.
    Call,
    /// A WebSocket subscription: the result is a subscription id, then notifications.
    Subscription {
        /// Method name of the notifications (same as the subscription's name).
        notification: &'static str,
        /// Full name of the method that ends the subscription.
        unsubscribe: &'static str,
    },
}

/// One API method, as declared in its namespace.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// Full method name, e.g. `system.ping`.
    pub name: &'static str,
    /// Call or subscription.
    pub kind: MethodKind,
    /// The doc comment of the declaration.
    pub doc: &'static str,
    /// Parameters in positional order.
    pub params: &'static [ParamSpec],
    /// Schema of the result (of each notification item, for subscriptions).
    pub result: fn(&mut SchemaGenerator) -> Schema,
}

/// A parameter value that does not decode as its declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path inside the parameter (`.` separated, empty for the parameter itself).
    pub path: String,
    /// What serde said.
    pub message: String,
}

/// Why the params of a request were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// Params were neither an array, an object nor absent.
    #[error("invalid params for {method}: params must be an array or an object")]
    NotStructured {
        /// The method called.
        method: &'static str,
    },
    /// Params were not valid JSON at all (the server normally catches this first).
    #[error("invalid params for {method}: {message}")]
    Malformed {
        /// The method called.
        method: &'static str,
        /// The parser's message.
        message: String,
    },
    /// More positional params than the method takes.
    #[error("invalid params for {method}: takes at most {max} params, got {got}")]
    TooMany {
        /// The method called.
        method: &'static str,
        /// How many it takes.
        max: usize,
        /// How many were sent.
        got: usize,
    },
    /// A named param the method does not have.
    #[error("invalid params for {method}: unknown param `{name}`{expected}")]
    Unknown {
        /// The method called.
        method: &'static str,
        /// The unknown name.
        name: String,
        /// The list of accepted names, pre-formatted.
        expected: String,
    },
    /// A required param is absent.
    #[error("invalid params for {method}: missing param `{name}`")]
    Missing {
        /// The method called.
        method: &'static str,
        /// The missing param.
        name: &'static str,
    },
    /// A param (or a field inside it) has the wrong type or value.
    #[error("invalid params for {method}: `{field}`: {message}")]
    Invalid {
        /// The method called.
        method: &'static str,
        /// `param` or `param.inner.path`.
        field: String,
        /// What was wrong.
        message: String,
    },
}

impl ParamsError {
    /// The parameter at fault, when there is one.
    pub fn field(&self) -> Option<String> {
        match self {
            ParamsError::Unknown { name, .. } => Some(name.clone()),
            ParamsError::Missing { name, .. } => Some((*name).to_owned()),
            ParamsError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        }
    }
}

/// Decodes `value` as `T`, keeping the path of the first failing field, and encodes the
/// result again: fields `T` ignores are gone and defaults are filled in, so what an
/// authorization policy is shown is exactly what the handler will decode.
pub fn check_as<T: DeserializeOwned + Serialize>(value: Value) -> Result<Value, FieldError> {
    let decoded = serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        FieldError {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })?;
    serde_json::to_value(&decoded).map_err(|e| FieldError {
        path: String::new(),
        message: e.to_string(),
    })
}

/// A JSON value parsed like `serde_json::Value`, except that an object with the same key twice
/// is an error instead of keeping the last one: two readers of such a text (a policy and a
/// handler, say) could otherwise disagree on what it says.
struct StrictJson(Value);

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictJson(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Parses JSON text, refusing objects with a repeated key.
pub fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<StrictJson>(text).map(|s| s.0)
}

/// The schema of `T`, registered with the generator so that named types become references.
pub fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks `raw` against the method's declared params and returns them as a named object.
///
/// The returned object holds every param under its canonical name, in canonical form (see
/// [`check_as`]; an omitted optional param is `null`), so the handler decodes exactly what
/// was checked, and an authorization policy sees the same. An object with a key given twice
/// is refused.
pub fn normalize_params(
    spec: &MethodSpec,
    raw: Option<&RawValue>,
) -> Result<Map<String, Value>, ParamsError> {
    let method = spec.name;
    let parsed: Value = match raw {
        None => Value::Null,
        Some(raw) => parse_strict(raw.get()).map_err(|e| ParamsError::Malformed {
            method,
            message: e.to_string(),
        })?,
    };
    let mut given = Map::new();
    match parsed {
        Value::Null => {}
        Value::Array(items) => {
            if items.len() > spec.params.len() {
                return Err(ParamsError::TooMany {
                    method,
                    max: spec.params.len(),
                    got: items.len(),
                });
            }
            for (param, value) in spec.params.iter().zip(items) {
                given.insert(param.name.to_owned(), value);
            }
        }
        Value::Object(object) => {
            for (key, value) in object {
                let param = spec
                    .params
                    .iter()
                    .find(|p| p.name == key || lower_camel(p.name) == key);
                match param {
                    Some(p) => {
                        if given.insert(p.name.to_owned(), value).is_some() {
                            return Err(ParamsError::Malformed {
                                method,
                                message: format!(
                                    "param `{}` is given twice (as {} and {})",
                                    p.name,
                                    p.name,
                                    lower_camel(p.name)
                                ),
                            });
                        }
                    }
                    None => {
                        let names: Vec<_> = spec.params.iter().map(|p| p.name).collect();
                        let expected = if names.is_empty() {
                            " (this method takes no params)".to_owned()
                        } else {
                            format!(" (expected one of: {})", names.join(", "))
                        };
                        return Err(ParamsError::Unknown {
                            method,
                            name: key,
                            expected,
                        });
                    }
                }
            }
        }
        _ => return Err(ParamsError::NotStructured { method }),
    }
    for param in spec.params {
        let value = given.remove(param.name);
        let absent = value.is_none();
        match (param.check)(value.unwrap_or(Value::Null)) {
            Ok(canonical) => {
                given.insert(param.name.to_owned(), canonical);
            }
            Err(e) => {
                if absent {
                    return Err(ParamsError::Missing {
                        method,
                        name: param.name,
                    });
                }
                let field = if e.path.is_empty() {
                    param.name.to_owned()
                } else {
                    format!("{}.{}", param.name, e.path)
                };
                return Err(ParamsError::Invalid {
                    method,
                    field,
                    message: e.message,
                });
            }
        }
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limits {
        memory: u64,
        #[serde(default)]
        cpus: Option<f64>,
    }

    const PARAMS: &[ParamSpec] = &[
        ParamSpec {
            name: "name",
            schema: schema_of::<String>,
            check: check_as::<String>,
        },
        ParamSpec {
            name: "resource_limits",
            schema: schema_of::<Option<Limits>>,
            check: check_as::<Option<Limits>>,
        },
    ];

    const SPEC: MethodSpec = MethodSpec {
        name: "test.method",
        kind: MethodKind::Call,
        doc: "",
        params: PARAMS,
        result: schema_of::<()>,
    };

    fn run(json: &str) -> Result<Map<String, Value>, ParamsError> {
        let raw = RawValue::from_string(json.to_owned()).unwrap();
        normalize_params(&SPEC, Some(&raw))
    }

    #[test]
    fn positional_and_named_normalize_alike() {
        let a = run(r#"["x", {"memory": 5}]"#).unwrap();
        let b = run(r#"{"name": "x", "resourceLimits": {"memory": 5}}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["name"], "x");
        assert_eq!(run(r#"["x"]"#).unwrap()["resource_limits"], Value::Null);
        // Canonical form: defaults filled in.
        assert_eq!(a["resource_limits"]["cpus"], Value::Null);
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        let e = run(r#"{"name": "x", "name": "y"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key `name`"), "{e}");
        let e = run(r#"{"name": "x", "resource_limits": {"memory": 1, "memory": 2}}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key `memory`"), "{e}");
        let e = run(r#"{"resource_limits": null, "resourceLimits": {"memory": 1}, "name": "x"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        assert_eq!(
            parse_strict(r#"[{"a": 1}, {"a": 2}, 1.5, null, true]"#).unwrap(),
            serde_json::json!([{"a": 1}, {"a": 2}, 1.5, null, true])
        );
    }

    #[test]
    fn optional_and_required() {
        assert!(PARAMS[0].is_required());
        assert!(!PARAMS[1].is_required());
        let e = run("{}").unwrap_err();
        assert_eq!(e.field().as_deref(), Some("name"));
        assert!(e.to_string().contains("missing param `name`"), "{e}");
    }

    #[test]
    fn names_the_bad_field_deep_inside() {
        let e = run(r#"{"name": "x", "resource_limits": {"memory": "lots"}}"#).unwrap_err();
        assert_eq!(e.field().as_deref(), Some("resource_limits.memory"));
        assert!(
            e.to_string()
                .contains("`resource_limits.memory`: invalid type"),
            "{e}"
        );
        let e = run(r#"{"name": 5}"#).unwrap_err();
        assert_eq!(e.field().as_deref(), Some("name"));
        let e = run(r#"{"name": "x", "resource_limits": {"memroy": 1}}"#).unwrap_err();
        assert!(e.to_string().contains("memroy"), "{e}");
    }

    #[test]
    fn refuses_unknown_extra_and_scalar_params() {
        let e = run(r#"{"name": "x", "nmae": 1}"#).unwrap_err();
        assert!(
            matches!(e, ParamsError::Unknown { ref name, .. } if name == "nmae"),
            "{e}"
        );
        let e = run(r#"["x", null, 3]"#).unwrap_err();
        assert!(
            matches!(e, ParamsError::TooMany { max: 2, got: 3, .. }),
            "{e}"
        );
        let e = run(r#""x""#).unwrap_err();
        assert!(matches!(e, ParamsError::NotStructured { .. }), "{e}");
    }

    #[test]
    fn absent_params_are_fine_for_methods_without_params() {
        let spec = MethodSpec {
            params: &[],
            ..SPEC
        };
        assert!(normalize_params(&spec, None).unwrap().is_empty());
        let raw = RawValue::from_string("[]".into()).unwrap();
        assert!(normalize_params(&spec, Some(&raw)).unwrap().is_empty());
        let raw = RawValue::from_string(r#"{"x":1}"#.into()).unwrap();
        let e = normalize_params(&spec, Some(&raw)).unwrap_err();
        assert!(e.to_string().contains("takes no params"), "{e}");
    }
}
