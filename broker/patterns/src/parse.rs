//! JSON to [`Conjunction`]: the pattern syntax, every check that can
//! refuse a pattern, and the error's path and reason. The syntax and its
//! refusals follow EventBridge's and aws/event-ruler's (`JsonRuleCompiler`).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::cidr::Cidr;
use crate::error::PatternError;
use crate::limits::Limits;
use crate::pattern::{Conjunction, FieldPattern};
use crate::value::{AnythingBut, Bound, Literal, Number, Range, ValuePattern, fold};
use crate::wildcard::Wildcard;

/// The operator names: field names a `$or` branch may not use, because
/// there they would most likely be a misplaced operator.
const OPERATORS: [&str; 8] = [
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
];

const OR: &str = "$or";

pub(crate) fn parse(value: &Value, limits: &Limits) -> Result<Conjunction, PatternError> {
    let Value::Object(map) = value else {
        return Err(PatternError::invalid(
            "",
            format!("a pattern is a JSON object, not {}", kind(value)),
        ));
    };
    let mut parser = Parser {
        limits,
        values: 0,
        keys: BTreeSet::new(),
    };
    parser.object(map, &Where::root(), 1, false)
}

/// Where the parser is: the event path its fields extend, and the path
/// errors name (the event path with `$or[i]` segments).
struct Where {
    event: String,
    shown: String,
}

impl Where {
    fn root() -> Where {
        Where {
            event: String::new(),
            shown: String::new(),
        }
    }

    fn key(&self, key: &str) -> Where {
        Where {
            event: join(&self.event, key),
            shown: join(&self.shown, key),
        }
    }

    fn branch(&self, i: usize) -> Where {
        Where {
            event: self.event.clone(),
            shown: join(&self.shown, &format!("{OR}[{i}]")),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

struct Parser<'l> {
    limits: &'l Limits,
    /// Values counted so far.
    values: usize,
    /// Top-level keys seen so far.
    keys: BTreeSet<String>,
}

impl Parser<'_> {
    fn object(
        &mut self,
        map: &Map<String, Value>,
        at: &Where,
        depth: usize,
        in_or: bool,
    ) -> Result<Conjunction, PatternError> {
        if map.is_empty() {
            return Err(PatternError::invalid(
                &at.shown,
                "empty objects are not allowed in a pattern",
            ));
        }
        let mut conjunction = Conjunction::default();
        for (key, value) in map {
            if key == OR {
                conjunction.ors.push(self.or(value, at, depth)?);
                continue;
            }
            let here = at.key(key);
            if in_or && OPERATORS.contains(&key.as_str()) {
                return Err(PatternError::invalid(
                    &here.shown,
                    format!(
                        "\"{key}\" is an operator, not a field name: an operator goes in a \
                         field's value list, as in {{\"field\": [{{\"{key}\": ...}}]}}"
                    ),
                ));
            }
            if at.event.is_empty() {
                self.keys.insert(key.clone());
                if self.keys.len() > self.limits.max_keys {
                    return Err(PatternError::too_complex(
                        &here.shown,
                        format!("more than {} top-level keys", self.limits.max_keys),
                    ));
                }
            }
            match value {
                Value::Object(inner) => {
                    if depth >= self.limits.max_depth {
                        return Err(PatternError::too_complex(
                            &here.shown,
                            if self.limits.max_depth == 1 {
                                "nested objects are not allowed here".to_owned()
                            } else {
                                format!("nested more than {} levels deep", self.limits.max_depth)
                            },
                        ));
                    }
                    let nested = self.object(inner, &here, depth + 1, false)?;
                    conjunction.fields.extend(nested.fields);
                    conjunction.ors.extend(nested.ors);
                }
                Value::Array(items) => {
                    let values = self.list(items, &here)?;
                    conjunction.fields.push(FieldPattern {
                        path: here.event,
                        values,
                    });
                }
                other => {
                    return Err(PatternError::invalid(
                        &here.shown,
                        format!(
                            "a field's pattern is a list of values or a nested object, not {}",
                            kind(other)
                        ),
                    ));
                }
            }
        }
        Ok(conjunction)
    }

    fn or(
        &mut self,
        value: &Value,
        at: &Where,
        depth: usize,
    ) -> Result<Vec<Conjunction>, PatternError> {
        let shown = join(&at.shown, OR);
        let Value::Array(branches) = value else {
            return Err(PatternError::invalid(
                &shown,
                format!("$or takes a list of patterns, not {}", kind(value)),
            ));
        };
        if branches.len() < 2 {
            return Err(PatternError::invalid(
                &shown,
                "$or needs at least two patterns to choose from",
            ));
        }
        let mut out = Vec::with_capacity(branches.len());
        for (i, branch) in branches.iter().enumerate() {
            let here = at.branch(i);
            let Value::Object(map) = branch else {
                return Err(PatternError::invalid(
                    &here.shown,
                    format!("each $or branch is a pattern object, not {}", kind(branch)),
                ));
            };
            out.push(self.object(map, &here, depth, true)?);
        }
        Ok(out)
    }

    fn count(&mut self, n: usize, at: &Where) -> Result<(), PatternError> {
        self.values += n;
        if self.values > self.limits.max_values {
            return Err(PatternError::too_complex(
                &at.shown,
                format!(
                    "the pattern lists more than {} values",
                    self.limits.max_values
                ),
            ));
        }
        Ok(())
    }

    fn list(&mut self, items: &[Value], at: &Where) -> Result<Vec<ValuePattern>, PatternError> {
        if items.is_empty() {
            return Err(PatternError::invalid(
                &at.shown,
                "empty value lists are not allowed (they would match nothing)",
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let value = match item {
                Value::Object(op) => self.operator(op, at)?,
                Value::Array(_) => {
                    return Err(PatternError::invalid(
                        &at.shown,
                        "a value list holds values and operators, not lists",
                    ));
                }
                scalar => {
                    self.count(1, at)?;
                    ValuePattern::Exact(literal(scalar, at)?)
                }
            };
            out.push(value);
        }
        Ok(out)
    }

    fn operator(
        &mut self,
        op: &Map<String, Value>,
        at: &Where,
    ) -> Result<ValuePattern, PatternError> {
        let (name, arg) = single(op, at, "an operator")?;
        let bad = |reason: &str| PatternError::invalid(&at.shown, format!("{name}: {reason}"));
        let pattern = match name {
            "prefix" | "suffix" => {
                let is_prefix = name == "prefix";
                match arg {
                    Value::String(s) if is_prefix => ValuePattern::Prefix(s.clone()),
                    Value::String(s) => ValuePattern::Suffix(s.clone()),
                    Value::Object(inner) => {
                        let (inner_name, inner_arg) = single(inner, at, name)?;
                        match (inner_name, inner_arg) {
                            ("equals-ignore-case", Value::String(s)) if is_prefix => {
                                ValuePattern::PrefixIgnoreCase(fold(s))
                            }
                            ("equals-ignore-case", Value::String(s)) => {
                                ValuePattern::SuffixIgnoreCase(fold(s))
                            }
                            _ => {
                                return Err(bad(
                                    "takes a string or {\"equals-ignore-case\": \"string\"}",
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(bad(
                            "takes a string or {\"equals-ignore-case\": \"string\"}",
                        ));
                    }
                }
            }
            "equals-ignore-case" => match arg {
                Value::String(s) => ValuePattern::EqualsIgnoreCase(fold(s)),
                _ => return Err(bad("takes a string")),
            },
            "wildcard" => match arg {
                Value::String(s) => {
                    ValuePattern::Wildcard(Wildcard::parse(s).map_err(|e| bad(&e))?)
                }
                _ => return Err(bad("takes a string")),
            },
            "numeric" => numeric(arg, at)?,
            "exists" => match arg {
                Value::Bool(b) => ValuePattern::Exists(*b),
                _ => return Err(bad("takes true or false")),
            },
            "cidr" => match arg {
                Value::String(s) => ValuePattern::Cidr(Cidr::parse(s).map_err(|e| bad(&e))?),
                _ => return Err(bad("takes a string such as \"10.0.0.0/24\"")),
            },
            "anything-but" => {
                let list = anything_but(arg, at)?;
                self.count(list.len(), at)?;
                return Ok(ValuePattern::AnythingBut(list));
            }
            other => {
                return Err(PatternError::invalid(
                    &at.shown,
                    format!(
                        "unknown operator \"{other}\" (known: exists, prefix, suffix, \
                         equals-ignore-case, wildcard, anything-but, numeric, cidr)"
                    ),
                ));
            }
        };
        self.count(1, at)?;
        Ok(pattern)
    }
}

/// The one key of an operator object.
fn single<'m>(
    op: &'m Map<String, Value>,
    at: &Where,
    what: &str,
) -> Result<(&'m str, &'m Value), PatternError> {
    let mut entries = op.iter();
    match (entries.next(), entries.next()) {
        (Some((name, arg)), None) => Ok((name.as_str(), arg)),
        _ => Err(PatternError::invalid(
            &at.shown,
            format!(
                "{what} is an object with exactly one key, this has {}",
                op.len()
            ),
        )),
    }
}

fn literal(value: &Value, at: &Where) -> Result<Literal, PatternError> {
    Ok(match value {
        Value::String(s) => Literal::String(s.clone()),
        Value::Number(n) => Literal::Number(number(n, at)?),
        Value::Bool(b) => Literal::Bool(*b),
        Value::Null => Literal::Null,
        other => {
            return Err(PatternError::invalid(
                &at.shown,
                format!("expected a value, not {}", kind(other)),
            ));
        }
    })
}

fn number(n: &serde_json::Number, at: &Where) -> Result<Number, PatternError> {
    n.as_f64()
        .and_then(Number::new)
        .ok_or_else(|| PatternError::invalid(&at.shown, format!("{n} is not a usable number")))
}

fn anything_but(arg: &Value, at: &Where) -> Result<AnythingBut, PatternError> {
    let bad = |reason: String| PatternError::invalid(&at.shown, format!("anything-but: {reason}"));
    match arg {
        Value::String(s) => Ok(AnythingBut::Strings(vec![s.clone()])),
        Value::Number(n) => Ok(AnythingBut::Numbers(vec![number(n, at)?])),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(bad("the list is empty".to_owned()));
            }
            if items.iter().all(Value::is_string) {
                Ok(AnythingBut::Strings(strings(items)))
            } else if items.iter().all(Value::is_number) {
                let numbers = items
                    .iter()
                    .filter_map(Value::as_number)
                    .map(|n| number(n, at))
                    .collect::<Result<_, _>>()?;
                Ok(AnythingBut::Numbers(numbers))
            } else {
                Err(bad(
                    "a list must be all strings or all numbers (no booleans, null or objects)"
                        .to_owned(),
                ))
            }
        }
        Value::Object(inner) => {
            let (name, inner_arg) = single(inner, at, "anything-but's operator")?;
            let make: fn(Vec<String>) -> Result<AnythingBut, String> = match name {
                "prefix" => |list| Ok(AnythingBut::Prefixes(list)),
                "suffix" => |list| Ok(AnythingBut::Suffixes(list)),
                "equals-ignore-case" => |list| {
                    Ok(AnythingBut::IgnoreCase(
                        list.iter().map(|s| fold(s)).collect(),
                    ))
                },
                "wildcard" => |list| {
                    list.iter()
                        .map(|s| Wildcard::parse(s))
                        .collect::<Result<_, _>>()
                        .map(AnythingBut::Wildcards)
                },
                other => {
                    return Err(bad(format!(
                        "\"{other}\" cannot go in anything-but (prefix, suffix, \
                         equals-ignore-case and wildcard can)"
                    )));
                }
            };
            match inner_arg {
                Value::String(s) => make(vec![s.clone()]).map_err(bad),
                Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
                    make(strings(items)).map_err(bad)
                }
                _ => Err(bad(format!(
                    "{name} takes a string or a non-empty list of strings"
                ))),
            }
        }
        other => Err(bad(format!(
            "takes a string, a number, a list of either, or an object with \
             prefix, suffix, equals-ignore-case or wildcard, not {}",
            kind(other)
        ))),
    }
}

fn strings(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

const NUMERIC_FORM: &str = "numeric takes [\"=\", n], or one or two of \
    [\">\" or \">=\", n] and [\"<\" or \"<=\", n], e.g. [\">\", 0, \"<=\", 5]";

fn numeric(arg: &Value, at: &Where) -> Result<ValuePattern, PatternError> {
    let bad = |reason: &str| PatternError::invalid(&at.shown, format!("{NUMERIC_FORM}: {reason}"));
    let Value::Array(items) = arg else {
        return Err(bad(&format!("got {}", kind(arg))));
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(bad(&format!("got {} elements", items.len())));
    }
    let mut range = Range {
        lower: None,
        upper: None,
    };
    for pair in items.chunks(2) {
        let Value::String(op) = &pair[0] else {
            return Err(bad(&format!("expected an operator, got {}", pair[0])));
        };
        let Value::Number(n) = &pair[1] else {
            return Err(bad(&format!(
                "the value after \"{op}\" must be a JSON number, got {}",
                pair[1]
            )));
        };
        let value = number(n, at)?;
        let (slot, inclusive) = match op.as_str() {
            "=" if items.len() == 2 => {
                return Ok(ValuePattern::Exact(Literal::Number(value)));
            }
            "=" => return Err(bad("\"=\" cannot be combined with a bound")),
            ">" => (&mut range.lower, false),
            ">=" => (&mut range.lower, true),
            "<" => (&mut range.upper, false),
            "<=" => (&mut range.upper, true),
            other => return Err(bad(&format!("unknown operator \"{other}\""))),
        };
        if slot.is_some() {
            return Err(bad(&format!(
                "two {} bounds",
                if op.starts_with('>') {
                    "lower"
                } else {
                    "upper"
                }
            )));
        }
        *slot = Some(Bound { value, inclusive });
    }
    if let (Some(lower), Some(upper)) = (range.lower, range.upper)
        && lower.value >= upper.value
    {
        return Err(bad("the lower bound must be below the upper bound"));
    }
    Ok(ValuePattern::Numeric(range))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
