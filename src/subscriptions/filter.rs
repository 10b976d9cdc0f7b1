//! `allow` and `filter` rules of one subscription field (CEL, compiled once
//! at start-up), plus the default argument rule of SPEC section 3.
//!
//! A run-time evaluation error makes the event "not matching" (and the
//! subscriber "not allowed"); it is logged at most once a minute per field,
//! because one bad expression would otherwise log once per event (see
//! [`crate::log`]).

use std::cell::OnceCell;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::objects::{Key, Map as CelMap};
use cel::{Context, Env, Program, Value as CelValue};
use serde_json::{Map, Value};

use crate::config::SubscriptionConfig;
use crate::log::LogLimit;
use crate::subscriptions::references::Reads;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(
        "subscriptions field {field:?}: {key} expression is invalid at line {line}, column {column}: {message}"
    )]
    Compile {
        field: String,
        key: String,
        line: isize,
        column: isize,
        message: String,
    },
}

/// One compiled expression with its source (for logs).
struct Rule {
    program: Program,
    source: String,
    uses_claims: bool,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("source", &self.source)
            .finish()
    }
}

/// The compiled rules of one subscription field. A configuration reload
/// swaps the expressions in place, so live subscriptions follow them.
#[derive(Debug, Default)]
pub struct FieldRules {
    field: String,
    compiled: ArcSwap<Compiled>,
    log_limit: LogLimit,
}

#[derive(Debug, Default)]
struct Compiled {
    filter: Option<Rule>,
    allow: Option<Rule>,
}

impl Compiled {
    fn new(config: &SubscriptionConfig) -> Result<Self, FilterError> {
        let field = &config.field;
        let rule = |key, source: &Option<String>| {
            source
                .as_deref()
                .map(|s| compile(field, key, s))
                .transpose()
        };
        Ok(Self {
            filter: rule("filter", &config.filter)?,
            allow: rule("allow", &config.allow)?,
        })
    }

    fn uses_claims(&self) -> bool {
        self.filter.as_ref().is_some_and(|r| r.uses_claims)
    }
}

/// Why new rules were not applied to a running field.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error(transparent)]
    Invalid(#[from] FilterError),
    /// Subscriptions are grouped by claims only when the filter reads them:
    /// live groups cannot be regrouped.
    #[error(
        "subscriptions field {field:?}: the new filter {change} `claims`; this takes effect after a restart"
    )]
    ClaimsUsage { field: String, change: &'static str },
}

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

fn compile(field: &str, key: &str, source: &str) -> Result<Rule, FilterError> {
    let program = env().compile(source).map_err(|errs| {
        let first = errs.errors.first();
        FilterError::Compile {
            field: field.to_owned(),
            key: key.to_owned(),
            line: first.map_or(0, |e| e.pos.0),
            column: first.map_or(0, |e| e.pos.1),
            message: first.map_or_else(|| errs.to_string(), |e| e.msg.clone()),
        }
    })?;
    let uses_claims = program.references().has_variable("claims");
    Ok(Rule {
        program,
        source: source.to_owned(),
        uses_claims,
    })
}

/// A CEL expression computing a value (enrichment arguments, `share_by`),
/// compiled once at start-up.
#[derive(Debug)]
pub struct Expression(Rule);

impl Expression {
    /// Compiles `source`, the value of config key `key` of `field`.
    pub fn compile(field: &str, key: &str, source: &str) -> Result<Self, FilterError> {
        compile(field, key, source).map(Self)
    }

    pub fn source(&self) -> &str {
        &self.0.source
    }

    pub fn uses_claims(&self) -> bool {
        self.0.uses_claims
    }

    /// The variables and `args` fields the expression reads.
    pub fn reads(&self) -> Reads {
        let env = env();
        Reads::of(self.0.program.expression(), &|name| {
            env.types().find_type(name).is_some()
        })
    }

    /// The value over `event` with a group's `args` and `claims`.
    pub fn eval_event(&self, event: &PreparedEvent<'_>, vars: &GroupVars) -> Result<Value, String> {
        let mut ctx = event.scope().new_inner_scope();
        ctx.set_variable_resolver(vars);
        json(self.0.program.execute(&ctx))
    }

    /// The value over the given variables (a trigger's `args`, `result`
    /// and `claims`).
    pub fn eval_with(&self, vars: &[(&str, &Value)]) -> Result<Value, String> {
        let mut ctx = Context::with_env(env());
        for (name, value) in vars {
            ctx.add_variable_from_value(*name, to_cel(value));
        }
        json(self.0.program.execute(&ctx))
    }

    /// The value over one subscriber's `claims` and `args`.
    pub fn eval(&self, claims: &Value, args: &Map<String, Value>) -> Result<Value, String> {
        let mut ctx = Context::with_env(env());
        ctx.add_variable_from_value("claims", to_cel(claims));
        ctx.add_variable_from_value("args", map_to_cel(args));
        json(self.0.program.execute(&ctx))
    }
}

fn json(result: cel::ResolveResult) -> Result<Value, String> {
    let value = result.map_err(|e| e.to_string())?;
    value.json().map_err(|e| e.to_string())
}

/// A JSON value as a CEL value (integers as `int`, or `uint` past `i64`).
pub fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                CelValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                CelValue::UInt(u)
            } else {
                CelValue::Float(n.as_f64().unwrap_or_default())
            }
        }
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(m) => map_to_cel(m),
    }
}

fn map_to_cel(m: &Map<String, Value>) -> CelValue {
    let map: std::collections::HashMap<Key, CelValue> = m
        .iter()
        .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
        .collect();
    CelValue::Map(CelMap { map: Arc::new(map) })
}

/// An event converted to CEL at most once, however many subscriptions'
/// filters are evaluated against it.
pub struct PreparedEvent<'e> {
    raw: &'e Value,
    /// The root scope binding `event`, built at the first CEL evaluation:
    /// binding a value copies it whole, so it is done once per event and
    /// each evaluation only adds its small `args`/`claims` in a child scope.
    scope: OnceCell<Context<'static, 'static>>,
}

impl<'e> PreparedEvent<'e> {
    pub fn new(raw: &'e Value) -> Self {
        Self {
            raw,
            scope: OnceCell::new(),
        }
    }

    pub fn raw(&self) -> &'e Value {
        self.raw
    }

    fn scope(&self) -> &Context<'static, 'static> {
        self.scope.get_or_init(|| {
            let mut ctx = Context::with_env(env());
            ctx.add_variable_from_value("event", to_cel(self.raw));
            ctx
        })
    }
}

/// A group's `args` and `claims` as CEL values, converted once when the
/// group forms: an evaluation only borrows them.
pub struct GroupVars {
    args: Box<dyn Val>,
    claims: Box<dyn Val>,
}

impl std::fmt::Debug for GroupVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupVars").finish_non_exhaustive()
    }
}

impl GroupVars {
    pub fn new(args: &Map<String, Value>, claims: &Value) -> Self {
        let val = |v: CelValue| -> Box<dyn Val> {
            v.try_into()
                .expect("JSON converts to CEL values without opaque types")
        };
        Self {
            args: val(map_to_cel(args)),
            claims: val(to_cel(claims)),
        }
    }
}

impl VariableResolver for GroupVars {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "args" => Some(CowVal::Borrowed(self.args.as_ref())),
            "claims" => Some(CowVal::Borrowed(self.claims.as_ref())),
            _ => None,
        }
    }
}

impl FieldRules {
    /// Compiles the field's `filter` and `allow` expressions.
    pub fn compile(config: &SubscriptionConfig) -> Result<Self, FilterError> {
        Ok(Self {
            field: config.field.clone(),
            compiled: ArcSwap::from_pointee(Compiled::new(config)?),
            ..Self::default()
        })
    }

    /// Swaps in the expressions of `config` (a reload). Evaluations already
    /// running finish with the old ones.
    pub fn replace(&self, config: &SubscriptionConfig) -> Result<(), ReplaceError> {
        let new = Compiled::new(config)?;
        let reads_claims = new.uses_claims();
        if reads_claims != self.uses_claims() {
            return Err(ReplaceError::ClaimsUsage {
                field: self.field.clone(),
                change: if reads_claims {
                    "starts reading"
                } else {
                    "stops reading"
                },
            });
        }
        self.compiled.store(Arc::new(new));
        Ok(())
    }

    /// Whether a client with `claims` may subscribe with `args`.
    pub fn allows(&self, claims: &Value, args: &Map<String, Value>) -> bool {
        let compiled = self.compiled.load();
        let Some(rule) = &compiled.allow else {
            return true;
        };
        let mut ctx = Context::with_env(env());
        ctx.add_variable_from_value("claims", to_cel(claims));
        ctx.add_variable_from_value("args", map_to_cel(args));
        self.truthy("allow", rule, rule.program.execute(&ctx))
    }

    /// Whether an `allow` expression is set.
    pub fn has_allow(&self) -> bool {
        self.compiled.load().allow.is_some()
    }

    /// Whether the filter reads `claims` (then subscribers with different
    /// claims cannot share one evaluation).
    pub fn uses_claims(&self) -> bool {
        self.compiled.load().uses_claims()
    }

    /// Whether `event` reaches a subscription with `args` and `claims`.
    pub fn matches(&self, event: &Value, args: &Map<String, Value>, claims: &Value) -> bool {
        let vars = GroupVars::new(args, claims);
        self.matches_prepared(&PreparedEvent::new(event), args, &vars)
    }

    /// [`Self::matches`] for an event shared by several evaluations, with
    /// the group's variables converted once (`args` is still read raw by
    /// the default rule).
    pub fn matches_prepared(
        &self,
        event: &PreparedEvent<'_>,
        args: &Map<String, Value>,
        vars: &GroupVars,
    ) -> bool {
        let compiled = self.compiled.load();
        let Some(rule) = &compiled.filter else {
            return default_rule(event.raw, args);
        };
        let mut ctx = event.scope().new_inner_scope();
        ctx.set_variable_resolver(vars);
        self.truthy("filter", rule, rule.program.execute(&ctx))
    }

    fn truthy(&self, key: &str, rule: &Rule, result: cel::ResolveResult) -> bool {
        match result {
            Ok(CelValue::Bool(b)) => b,
            Ok(other) => {
                self.log_failure(key, rule, &format!("evaluated to {other:?}, not a bool"));
                false
            }
            Err(e) => {
                self.log_failure(key, rule, &e.to_string());
                false
            }
        }
    }

    fn log_failure(&self, key: &str, rule: &Rule, message: &str) {
        let Some(suppressed) = self.log_limit.admit() else {
            return;
        };
        tracing::warn!(
            field = %self.field,
            key,
            expression = %rule.source,
            suppressed,
            "{key} expression failed ({message}); counted as not matching"
        );
    }
}

/// Without `filter`: a non-null argument must equal the payload field of the
/// same name, or contain it when the argument is a list and the field is
/// not. Arguments the payload has no field for do not filter (defaults such
/// as `limit: Int = 10` are not event attributes).
pub fn default_rule(event: &Value, args: &Map<String, Value>) -> bool {
    args.iter().all(|(name, arg)| match (arg, event.get(name)) {
        (Value::Null, _) | (_, None) => true,
        (Value::Array(list), Some(v)) if !v.is_array() => list.contains(v),
        (arg, Some(v)) => arg == v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(filter: Option<&str>, allow: Option<&str>) -> FieldRules {
        let config = SubscriptionConfig {
            field: "incidentUpdated".into(),
            topic: None,
            filter: filter.map(str::to_owned),
            allow: allow.map(str::to_owned),
            resolve: None,
        };
        FieldRules::compile(&config).unwrap()
    }

    fn args(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn default_rule_is_equality_or_membership() {
        let r = rules(None, None);
        let ev = json!({"id": "42", "severity": "P1"});
        assert!(r.matches(&ev, &args(json!({"id": "42"})), &json!({})));
        assert!(!r.matches(&ev, &args(json!({"id": "7"})), &json!({})));
        assert!(r.matches(&ev, &args(json!({"id": null})), &json!({})));
        assert!(r.matches(&ev, &args(json!({"severity": ["P1", "P2"]})), &json!({})));
        assert!(!r.matches(&ev, &args(json!({"severity": ["P3"]})), &json!({})));
        assert!(r.matches(&ev, &args(json!({"limit": 10})), &json!({})));
    }

    #[test]
    fn cel_filter_sees_event_args_and_claims() {
        let r = rules(
            Some("args.severities == null || event.severity in args.severities"),
            None,
        );
        assert!(!r.uses_claims());
        let ev = json!({"severity": "P1"});
        assert!(r.matches(&ev, &args(json!({"severities": null})), &json!({})));
        assert!(r.matches(&ev, &args(json!({"severities": ["P1"]})), &json!({})));
        assert!(!r.matches(&ev, &args(json!({"severities": ["P2"]})), &json!({})));
        let r = rules(Some("event.team == claims.team"), None);
        assert!(r.uses_claims());
        assert!(r.matches(
            &json!({"team": "a"}),
            &args(json!({})),
            &json!({"team": "a"})
        ));
        assert!(!r.matches(
            &json!({"team": "a"}),
            &args(json!({})),
            &json!({"team": "b"})
        ));
    }

    #[test]
    fn runtime_errors_do_not_match() {
        let r = rules(Some("event.missing.deeper == 1"), None);
        assert!(!r.matches(&json!({}), &args(json!({})), &json!({})));
        assert!(!r.matches(&json!({}), &args(json!({})), &json!({})));
        let r = rules(Some("event.count"), None);
        assert!(!r.matches(&json!({"count": 3}), &args(json!({})), &json!({})));
    }

    #[test]
    fn allow_reads_claims() {
        let r = rules(None, Some("'ops' in claims.roles"));
        assert!(r.allows(&json!({"roles": ["ops"]}), &args(json!({}))));
        assert!(!r.allows(&json!({"roles": ["dev"]}), &args(json!({}))));
        assert!(!r.allows(&json!({}), &args(json!({}))));
        assert!(rules(None, None).allows(&json!({}), &args(json!({}))));
    }

    #[test]
    fn replace_swaps_expressions_but_not_claims_usage() {
        let r = rules(Some("event.n > 1"), None);
        let ev = json!({"n": 2});
        assert!(r.matches(&ev, &args(json!({})), &json!({})));
        let config = |filter: &str| SubscriptionConfig {
            field: "incidentUpdated".into(),
            topic: None,
            filter: Some(filter.into()),
            allow: Some("false".into()),
            resolve: None,
        };
        r.replace(&config("event.n > 5")).unwrap();
        assert!(!r.matches(&ev, &args(json!({})), &json!({})));
        assert!(!r.allows(&json!({}), &args(json!({}))));
        let err = r.replace(&config("event.n > claims.n")).unwrap_err();
        assert!(matches!(err, ReplaceError::ClaimsUsage { .. }), "{err}");
        assert!(matches!(
            r.replace(&config("event.n >")).unwrap_err(),
            ReplaceError::Invalid(_)
        ));
        // Refused replacements leave the rules as they were.
        assert!(r.matches(&json!({"n": 6}), &args(json!({})), &json!({})));
    }

    #[test]
    fn bad_expressions_name_field_key_and_position() {
        let config = SubscriptionConfig {
            field: "incidentUpdated".into(),
            topic: None,
            filter: Some("event.severity ==".into()),
            allow: None,
            resolve: None,
        };
        let err = FieldRules::compile(&config).unwrap_err();
        let FilterError::Compile { field, key, .. } = &err;
        assert_eq!(field, "incidentUpdated");
        assert_eq!(*key, "filter");
        assert!(err.to_string().contains("line"), "{err}");
    }
}
