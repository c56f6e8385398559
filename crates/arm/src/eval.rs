//! Evaluation of expressions and of whole JSON values inside a [`Scope`].
//!
//! An expression either yields a value or stops with [`Stop`]: `Unresolved` when the value only
//! exists at deployment time, `Error` when the template is wrong. Stops propagate up to the
//! JSON string that held the expression, which becomes the unresolved marker and gets one
//! located [`Problem`]. Values that already hold a marker (a variable built from `reference()`)
//! stop silently: their cause was reported where they were defined.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::functions;
use crate::parser::{self, Expr, SyntaxError};
use crate::scope::{Env, FuncDef, Param, Scope, Slot, VarDef};
use crate::util::{
    clip, contains_marker, copy_entries, get_ci, is_marker, map_get_ci, marker, ptr_join, too_big,
    type_name, val_ci, why_of,
};
use crate::{Options, Problem, Severity};

/// Recursion budget shared by JSON nesting, expression nesting, variable and parameter chains,
/// user functions and nested deployments. Real templates use well under 100.
pub(crate) const MAX_DEPTH: usize = 320;

/// ARM's own limit on the count of one copy loop.
pub(crate) const MAX_LOOP: usize = 800;

/// Total copy iterations (resources, properties, variables) one expansion may produce.
pub(crate) const MAX_COPIES: usize = 10_000;

/// State shared by one whole expansion: options, problems, and the recursion and copy budgets.
pub(crate) struct Ctx<'a> {
    pub options: &'a Options,
    problems: RefCell<Vec<Problem>>,
    seen: RefCell<HashSet<Problem>>,
    budget: Cell<usize>,
    budget_reported: Cell<bool>,
    depth: Cell<usize>,
    quiet: Cell<usize>,
}

/// Gives back one unit of the recursion budget when dropped.
pub(crate) struct DepthGuard<'c>(&'c Cell<usize>);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl<'a> Ctx<'a> {
    pub fn new(options: &'a Options) -> Self {
        Ctx {
            options,
            problems: RefCell::new(Vec::new()),
            seen: RefCell::new(HashSet::new()),
            budget: Cell::new(MAX_COPIES),
            budget_reported: Cell::new(false),
            depth: Cell::new(0),
            quiet: Cell::new(0),
        }
    }

    /// Records a problem once (loops would otherwise repeat it per iteration). Problems from a
    /// linked file name it first.
    pub fn report(&self, file: Option<&str>, severity: Severity, pointer: &str, message: String) {
        if self.quiet.get() > 0 {
            return;
        }
        let message = match file {
            Some(f) => format!("in linked template '{f}': {message}"),
            None => message,
        };
        let problem = Problem {
            severity,
            pointer: pointer.to_string(),
            message,
        };
        if self.seen.borrow_mut().insert(problem.clone()) {
            self.problems.borrow_mut().push(problem);
        }
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems.into_inner()
    }

    /// Takes one unit of the recursion budget; `None` when it is spent.
    pub fn enter(&self) -> Option<DepthGuard<'_>> {
        let d = self.depth.get();
        if d >= MAX_DEPTH {
            return None;
        }
        self.depth.set(d + 1);
        Some(DepthGuard(&self.depth))
    }

    /// Runs `f` without recording problems (speculative evaluation).
    pub fn quietly<T>(&self, f: impl FnOnce() -> T) -> T {
        self.quiet.set(self.quiet.get() + 1);
        let out = f();
        self.quiet.set(self.quiet.get().saturating_sub(1));
        out
    }

    /// Grants up to `wanted` copy iterations from the expansion-wide budget.
    pub fn take_budget(&self, wanted: usize, file: Option<&str>, pointer: &str) -> usize {
        let left = self.budget.get();
        let granted = wanted.min(left);
        self.budget.set(left - granted);
        if granted < wanted && !self.budget_reported.get() {
            self.budget_reported.set(true);
            self.report(
                file,
                Severity::Error,
                pointer,
                format!(
                    "expansion stopped: more than {MAX_COPIES} copy-loop iterations in one template"
                ),
            );
        }
        granted
    }
}

/// Why an expression has no value.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Known only at deployment time, and why. `report`: not yet reported (it is reported as a
    /// warning where the expression stands); false when the cause was reported where it arose
    /// (a parameter without a value) or the value came from a marker.
    Unresolved { why: String, report: bool },
    /// The template is wrong; reported as an error.
    Error(String),
}

pub(crate) type R<T> = Result<T, Stop>;

pub(crate) fn err<T>(msg: impl Into<String>) -> R<T> {
    Err(Stop::Error(msg.into()))
}

/// A marker value stops evaluation (its cause was reported where it was made).
pub(crate) fn resolved(v: Value) -> R<Value> {
    if is_marker(&v) {
        Err(from_marker(&v))
    } else {
        Ok(v)
    }
}

/// The stop for a value that is or holds a marker: its cause, already reported.
pub(crate) fn from_marker(v: &Value) -> Stop {
    Stop::Unresolved {
        why: why_of(v).unwrap_or("an unresolved value").to_string(),
        report: false,
    }
}

/// A value known only at deployment time, reported where the expression stands.
pub(crate) fn unresolved(why: String) -> Stop {
    Stop::Unresolved { why, report: true }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopKind {
    Resource,
    Property,
    Variable,
}

/// One active copy loop; frames link outwards so nested loops can be found by name.
pub(crate) struct LoopFrame<'l> {
    pub name: String,
    pub index: i64,
    pub kind: LoopKind,
    pub parent: Loops<'l>,
}

/// The active copy loops, innermost first.
#[derive(Clone, Copy, Default)]
pub(crate) struct Loops<'l>(pub Option<&'l LoopFrame<'l>>);

impl<'l> Loops<'l> {
    fn frames(self) -> impl Iterator<Item = &'l LoopFrame<'l>> {
        std::iter::successors(self.0, |f| f.parent.0)
    }

    /// `copyIndex(name)` finds the loop by name; `copyIndex()` the innermost resource loop
    /// (ARM's rule inside property loops), else the innermost loop.
    pub fn find(self, name: Option<&str>) -> Option<i64> {
        match name {
            Some(n) => self
                .frames()
                .find(|f| f.name.eq_ignore_ascii_case(n))
                .map(|f| f.index),
            None => self
                .frames()
                .find(|f| f.kind == LoopKind::Resource)
                .or_else(|| self.frames().next())
                .map(|f| f.index),
        }
    }

    pub fn resource_index(self) -> Option<i64> {
        self.frames()
            .find(|f| f.kind == LoopKind::Resource)
            .map(|f| f.index)
    }
}

/// A copy loop's count.
pub(crate) enum Count {
    N(usize),
    /// Not known offline: the count as written, and why it is unknown.
    Unresolved(String, String),
    /// Wrong (already reported).
    Invalid,
}

/// Evaluates expressions of one scope.
pub(crate) struct Eval<'a> {
    pub ctx: &'a Ctx<'a>,
    pub scope: &'a Scope<'a>,
}

impl<'a> Eval<'a> {
    pub fn new(ctx: &'a Ctx<'a>, scope: &'a Scope<'a>) -> Self {
        Eval { ctx, scope }
    }

    pub fn report(&self, severity: Severity, pointer: &str, message: String) {
        self.ctx
            .report(self.scope.file.as_deref(), severity, pointer, message);
    }

    /// Evaluates every expression string inside `v`. Objects with a `copy` array of
    /// `{name, count, input}` entries build those array properties (property copy, FMT-5).
    pub fn json(&self, v: &Value, ptr: &str, loops: Loops<'_>) -> Value {
        let Some(_guard) = self.ctx.enter() else {
            self.report(
                Severity::Error,
                ptr,
                "value is nested too deeply to expand".into(),
            );
            return marker(
                "<nested too deeply>",
                "the value is nested too deeply to expand",
            );
        };
        match v {
            Value::String(s) => self.string(s, ptr, loops),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.json(x, &ptr_join(ptr, &i.to_string()), loops))
                    .collect(),
            ),
            Value::Object(m) if !is_marker(v) => self.object(m, ptr, loops),
            other => other.clone(),
        }
    }

    fn object(&self, m: &Map<String, Value>, ptr: &str, loops: Loops<'_>) -> Value {
        let copy = map_get_ci(m, "copy").and_then(|(k, v)| Some((k, copy_entries(v)?)));
        let copy_names: Vec<String> = copy
            .as_ref()
            .map(|(_, entries)| entries.iter().map(|(n, _)| n.to_lowercase()).collect())
            .unwrap_or_default();
        let mut out = Map::new();
        for (key, value) in m {
            let key_ptr = ptr_join(ptr, key);
            match &copy {
                Some((copy_key, entries)) if *copy_key == key => {
                    for (k, (name, entry)) in entries.iter().enumerate() {
                        let entry_ptr = ptr_join(&key_ptr, &k.to_string());
                        let built = self.property_copy(name, entry, &entry_ptr, loops);
                        out.insert((*name).to_string(), built);
                    }
                }
                _ if !copy_names.is_empty() && copy_names.contains(&key.to_lowercase()) => self.report(
                    Severity::Error,
                    &key_ptr,
                    format!(
                        "property '{key}' is written literally and also built by a copy loop; the copy loop is used"
                    ),
                ),
                _ => {
                    out.insert(key.clone(), self.json(value, &key_ptr, loops));
                }
            }
        }
        Value::Object(out)
    }

    fn property_copy(&self, name: &str, entry: &Value, ptr: &str, loops: Loops<'_>) -> Value {
        self.copy_array(name, entry, ptr, loops, LoopKind::Property)
    }

    /// Builds the array of a property or variable copy loop.
    fn copy_array(
        &self,
        name: &str,
        entry: &Value,
        ptr: &str,
        loops: Loops<'_>,
        kind: LoopKind,
    ) -> Value {
        let what = match kind {
            LoopKind::Variable => "variable",
            _ => "property",
        };
        let n = match self.copy_count(entry, ptr, loops, name) {
            Count::N(n) => n,
            Count::Unresolved(text, why) => {
                self.report(
                    Severity::Warning,
                    ptr,
                    format!(
                        "count of copy loop '{name}' cannot be evaluated offline ({}); {what} '{name}' is unresolved",
                        clip(&text)
                    ),
                );
                return marker(
                    &text,
                    &format!("the count of copy loop '{name}' is unknown: {why}"),
                );
            }
            Count::Invalid => {
                return marker(
                    &format!("copy loop '{name}'"),
                    &format!("copy loop '{name}' is invalid"),
                )
            }
        };
        let Some((input_key, input)) = get_ci(entry, "input") else {
            return Value::Array(Vec::new());
        };
        let input_ptr = ptr_join(ptr, input_key);
        let n = self.ctx.take_budget(n, self.scope.file.as_deref(), ptr);
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            let frame = LoopFrame {
                name: name.to_string(),
                index: i64::try_from(i).unwrap_or(i64::MAX),
                kind,
                parent: loops,
            };
            items.push(self.json(input, &input_ptr, Loops(Some(&frame))));
        }
        Value::Array(items)
    }

    /// Evaluates the `count` of a copy object (`ptr` points at the object).
    pub fn copy_count(&self, entry: &Value, ptr: &str, loops: Loops<'_>, name: &str) -> Count {
        let Some((count_key, raw)) = get_ci(entry, "count") else {
            self.report(
                Severity::Error,
                ptr,
                format!("copy loop '{name}' has no count"),
            );
            return Count::Invalid;
        };
        let count_ptr = ptr_join(ptr, count_key);
        let value = self.json(raw, &count_ptr, loops);
        let n = match &value {
            v if is_marker(v) => {
                let text = raw
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| raw.to_string());
                let why = why_of(v).unwrap_or("an unresolved value").to_string();
                return Count::Unresolved(text, why);
            }
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            self.report(
                Severity::Error,
                &count_ptr,
                format!(
                    "count of copy loop '{name}' must be an integer, found {}",
                    type_name(&value)
                ),
            );
            return Count::Invalid;
        };
        if n < 0 {
            self.report(
                Severity::Error,
                &count_ptr,
                format!("count of copy loop '{name}' is negative ({n})"),
            );
            return Count::Invalid;
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > MAX_LOOP {
            self.report(
                Severity::Error,
                &count_ptr,
                format!(
                    "count of copy loop '{name}' is {n}, above ARM's limit of {MAX_LOOP}; only {MAX_LOOP} are expanded"
                ),
            );
            return Count::N(MAX_LOOP);
        }
        Count::N(n)
    }

    /// Evaluates one JSON string: an expression `[...]`, an escaped literal `[[...]`, or plain
    /// text.
    pub fn string(&self, s: &str, ptr: &str, loops: Loops<'_>) -> Value {
        if !(s.starts_with('[') && s.ends_with(']') && s.len() >= 2) {
            return Value::String(s.to_string());
        }
        if s.starts_with("[[") {
            return Value::String(s[1..].to_string());
        }
        let expr = match parser::parse(&s[1..s.len() - 1]) {
            Ok(e) => e,
            Err(e) => return self.failed(s, ptr, Stop::Error(format!("invalid expression: {e}"))),
        };
        match self.expr(&expr, loops) {
            Ok(v) => v,
            Err(stop) => self.failed(s, ptr, stop),
        }
    }

    /// Reports why the expression string `s` has no value and returns its marker.
    #[inline(never)]
    fn failed(&self, s: &str, ptr: &str, stop: Stop) -> Value {
        match stop {
            Stop::Unresolved { why, report } => {
                if report {
                    self.report(
                        Severity::Warning,
                        ptr,
                        format!("{} is unresolved: {why}", clip(s)),
                    );
                }
                marker(s, &why)
            }
            Stop::Error(e) => {
                self.report(Severity::Error, ptr, format!("{}: {e}", clip(s)));
                marker(s, &format!("the expression is invalid: {e}"))
            }
        }
    }

    // The functions on the recursive path (expr, call, call_builtin, member_expr, index_expr)
    // keep their frames small and leave formatting to separate functions: debug builds give
    // every local of a function its own stack slot, and nesting depth multiplies the frame.

    pub fn expr(&self, e: &Expr, loops: Loops<'_>) -> R<Value> {
        let Some(_guard) = self.ctx.enter() else {
            return Err(too_deep());
        };
        let v = match e {
            Expr::Call { name, args } => self.call(name, args, loops)?,
            Expr::Member {
                target,
                name,
                optional,
            } => self.member_expr(target, name, *optional, loops)?,
            Expr::Index {
                target,
                index,
                optional,
            } => self.index_expr(target, index, *optional, loops)?,
            Expr::Str(s) => Value::String(s.clone()),
            Expr::Int(i) => Value::from(*i),
            Expr::Bool(b) => Value::Bool(*b),
            Expr::Null => Value::Null,
        };
        resolved(v)
    }

    fn member_expr(&self, target: &Expr, name: &str, optional: bool, loops: Loops<'_>) -> R<Value> {
        let t = self.expr(target, loops)?;
        member(t, name, optional)
    }

    fn index_expr(
        &self,
        target: &Expr,
        index: &Expr,
        optional: bool,
        loops: Loops<'_>,
    ) -> R<Value> {
        let t = self.expr(target, loops)?;
        let i = self.expr(index, loops)?;
        index_value(t, &i, optional)
    }

    fn call(&self, name: &str, args: &[Expr], loops: Loops<'_>) -> R<Value> {
        let lname = name.to_ascii_lowercase();
        match lname.as_str() {
            "parameters" => self.parameters_call(name, args, loops),
            "variables" => self.variables_call(name, args, loops),
            "copyindex" => self.copy_index(args, loops),
            "if" => self.if_call(args, loops),
            "and" | "or" => self.logical(&lname, args, loops),
            "coalesce" => self.coalesce(args, loops),
            // Before the arguments: a lambda's body refers to variables that only the lambda binds.
            "map" | "filter" | "reduce" | "sort" | "toobject" | "lambda" | "lambdavariables" => {
                Err(unresolved(format!(
                    "{name}() takes a lambda, which is not evaluated offline"
                )))
            }
            _ => self.call_builtin(&lname, name, args, loops),
        }
    }

    fn parameters_call(&self, name: &str, args: &[Expr], loops: Loops<'_>) -> R<Value> {
        let n = self.name_arg(name, args, loops)?;
        self.parameter(&n)
    }

    fn variables_call(&self, name: &str, args: &[Expr], loops: Loops<'_>) -> R<Value> {
        let n = self.name_arg(name, args, loops)?;
        self.variable(&n)
    }

    /// `if` evaluates only the chosen branch, so `if(false, reference(..), 'x')` is `'x'`.
    fn if_call(&self, args: &[Expr], loops: Loops<'_>) -> R<Value> {
        let [cond, yes, no] = args else {
            return Err(arity_error("if", 3, args.len()));
        };
        match self.expr(cond, loops)? {
            Value::Bool(true) => self.expr(yes, loops),
            Value::Bool(false) => self.expr(no, loops),
            other => Err(type_error("the condition of if()", "a bool", &other)),
        }
    }

    fn coalesce(&self, args: &[Expr], loops: Loops<'_>) -> R<Value> {
        for a in args {
            let v = self.expr(a, loops)?;
            if !v.is_null() {
                return Ok(v);
            }
        }
        Ok(Value::Null)
    }

    fn call_builtin(&self, lname: &str, name: &str, args: &[Expr], loops: Loops<'_>) -> R<Value> {
        if let Some(reason) = functions::deployment_time(lname) {
            return Err(deployment_time_stop(name, reason));
        }
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(self.expr(a, loops)?);
        }
        self.apply(lname, name, values)
    }

    /// Runs a function on its evaluated arguments (not on the recursive path).
    #[inline(never)]
    fn apply(&self, lname: &str, name: &str, values: Vec<Value>) -> R<Value> {
        if !functions::keeps_markers(lname) {
            if let Some(v) = values.iter().find(|v| contains_marker(v)) {
                return Err(from_marker(v));
            }
        }
        let v = if lname.contains('.') {
            self.user_function(name, lname, values)?
        } else {
            functions::call(lname, name, values, &self.scope.env)?
        };
        if too_big(&v) {
            return err(format!(
                "{name}() builds a value larger than the expansion limit"
            ));
        }
        Ok(v)
    }

    /// `and`/`or` decide as soon as one argument decides, so an unresolved argument after a
    /// deciding one does not make the result unresolved.
    fn logical(&self, lname: &str, args: &[Expr], loops: Loops<'_>) -> R<Value> {
        let deciding = lname == "or";
        if args.is_empty() {
            return Err(arity_error(lname, 2, 0));
        }
        let mut pending = None;
        for a in args {
            match self.expr(a, loops) {
                Ok(Value::Bool(b)) if b == deciding => return Ok(Value::Bool(b)),
                Ok(Value::Bool(_)) => {}
                Ok(other) => return Err(type_error("an argument of and()/or()", "a bool", &other)),
                Err(stop @ Stop::Unresolved { .. }) => {
                    if pending.is_none() {
                        pending = Some(stop);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match pending {
            Some(stop) => Err(stop),
            None => Ok(Value::Bool(!deciding)),
        }
    }

    fn name_arg(&self, name: &str, args: &[Expr], loops: Loops<'_>) -> R<String> {
        let [arg] = args else {
            return Err(arity_error(name, 1, args.len()));
        };
        match self.expr(arg, loops)? {
            Value::String(s) => Ok(s),
            other => Err(type_error(
                "the argument of parameters()/variables()",
                "a string",
                &other,
            )),
        }
    }

    fn copy_index(&self, args: &[Expr], loops: Loops<'_>) -> R<Value> {
        if args.len() > 2 {
            return err("copyIndex() takes at most 2 arguments (loop name, offset)");
        }
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(self.expr(a, loops)?);
        }
        copy_index_of(&values, loops)
    }

    /// `parameters(name)`: the given value, else the (lazily evaluated) `defaultValue`.
    fn parameter(&self, name: &str) -> R<Value> {
        let key = name.to_lowercase();
        let Some(p) = self.scope.params.get(&key) else {
            return err(format!("parameter '{name}' is not declared"));
        };
        if self.scope.blank_missing && key.starts_with("_artifactslocation") {
            return Ok(Value::String(String::new()));
        }
        if let Some(v) = &p.supplied {
            return resolved(v.clone());
        }
        match self.scope.param_slots.borrow().get(&key) {
            Some(Slot::Busy) => {
                return err(format!(
                    "the default value of parameter '{}' refers to itself",
                    p.name
                ))
            }
            Some(Slot::Done(v)) => {
                return v.clone().map_or_else(|| Err(no_value(&p.name)), resolved)
            }
            None => {}
        }
        let result = match get_ci(p.def, "defaultValue") {
            Some((default_key, default)) => {
                let Some(_guard) = self.ctx.enter() else {
                    return err("parameters and variables are nested too deeply");
                };
                self.scope
                    .param_slots
                    .borrow_mut()
                    .insert(key.clone(), Slot::Busy);
                Some(self.json(default, &ptr_join(&p.ptr, default_key), Loops::default()))
            }
            None if self.scope.blank_missing => Some(Value::String(String::new())),
            None => {
                self.report(
                    Severity::Warning,
                    &p.ptr,
                    format!(
                        "parameter '{}' has no value (none given and no defaultValue); expressions that use it are unresolved",
                        p.name
                    ),
                );
                None
            }
        };
        self.scope
            .param_slots
            .borrow_mut()
            .insert(key, Slot::Done(result.clone()));
        result.map_or_else(|| Err(no_value(&p.name)), resolved)
    }

    /// `variables(name)`, evaluated on first use.
    fn variable(&self, name: &str) -> R<Value> {
        if self.scope.in_function {
            return err("variables() cannot be used inside a user-defined function");
        }
        let key = name.to_lowercase();
        let Some(def) = self.scope.vars.get(&key) else {
            return err(format!("variable '{name}' is not defined"));
        };
        match self.scope.var_slots.borrow().get(&key) {
            Some(Slot::Busy) => return err(format!("variable '{name}' refers to itself")),
            Some(Slot::Done(v)) => {
                return v
                    .clone()
                    .map_or_else(|| Err(from_marker(&Value::Null)), resolved)
            }
            None => {}
        }
        let Some(_guard) = self.ctx.enter() else {
            return err("parameters and variables are nested too deeply");
        };
        self.scope
            .var_slots
            .borrow_mut()
            .insert(key.clone(), Slot::Busy);
        let v = match def {
            VarDef::Plain { value, ptr } => self.json(value, ptr, Loops::default()),
            VarDef::Copy { entry, ptr, name } => {
                self.copy_array(name, entry, ptr, Loops::default(), LoopKind::Variable)
            }
        };
        self.scope
            .var_slots
            .borrow_mut()
            .insert(key, Slot::Done(Some(v.clone())));
        resolved(v)
    }

    /// Calls a template's user-defined function `namespace.member`.
    fn user_function(&self, name: &str, lname: &str, args: Vec<Value>) -> R<Value> {
        let Some(def) = self.scope.funcs.get(lname) else {
            return Err(unresolved(format!(
                "function '{name}' is neither built in nor defined by the template"
            )));
        };
        if self.scope.in_function {
            return err("a user-defined function cannot call another user-defined function");
        }
        self.call_user_function(def, args)
    }

    fn call_user_function(&self, def: &FuncDef<'a>, args: Vec<Value>) -> R<Value> {
        let declared: &[Value] = match get_ci(def.def, "parameters") {
            Some((_, Value::Array(p))) => p,
            _ => &[],
        };
        if declared.len() != args.len() {
            return err(format!(
                "{}() takes {} argument(s), {} given",
                def.name,
                declared.len(),
                args.len()
            ));
        }
        let params_key = get_ci(def.def, "parameters")
            .map(|(k, _)| k.as_str())
            .unwrap_or("parameters");
        let params_ptr = ptr_join(&def.ptr, params_key);
        let mut params = HashMap::new();
        for (i, (pdef, value)) in declared.iter().zip(args).enumerate() {
            let Some(pname) = val_ci(pdef, "name").and_then(Value::as_str) else {
                return err(format!("parameter {i} of {}() has no name", def.name));
            };
            params.insert(
                pname.to_lowercase(),
                Param {
                    name: pname.to_string(),
                    ptr: ptr_join(&params_ptr, &i.to_string()),
                    def: pdef,
                    supplied: Some(value),
                },
            );
        }
        let Some((output_key, output)) = get_ci(def.def, "output") else {
            return err(format!("user function {}() has no output", def.name));
        };
        let Some((value_key, body)) = get_ci(output, "value") else {
            return err(format!("user function {}() has no output value", def.name));
        };
        let Some(_guard) = self.ctx.enter() else {
            return err("user functions are nested too deeply");
        };
        let fscope = self.scope.for_function(params);
        let inner = Eval {
            ctx: self.ctx,
            scope: &fscope,
        };
        let body_ptr = ptr_join(&ptr_join(&def.ptr, output_key), value_key);
        resolved(inner.json(body, &body_ptr, Loops::default()))
    }
}

/// `copyIndex(name?, offset?)` once its arguments are evaluated.
#[inline(never)]
fn copy_index_of(values: &[Value], loops: Loops<'_>) -> R<Value> {
    let (name, offset) = match values {
        [] => (None, 0),
        [Value::String(n)] => (Some(n.as_str()), 0),
        [Value::Number(o)] => (None, int_of(o)?),
        [Value::String(n), Value::Number(o)] => (Some(n.as_str()), int_of(o)?),
        _ => return err("copyIndex() takes an optional loop name and an optional integer offset"),
    };
    let index = loops.find(name).ok_or_else(|| {
        Stop::Error(match name {
            Some(n) => format!("copyIndex('{n}') is used outside a copy loop named '{n}'"),
            None => "copyIndex() is used outside a copy loop".to_string(),
        })
    })?;
    index
        .checked_add(offset)
        .map(Value::from)
        .ok_or_else(|| Stop::Error("copyIndex() offset overflows".into()))
}

#[inline(never)]
fn too_deep() -> Stop {
    Stop::Error("expressions and variables are nested too deeply".into())
}

#[inline(never)]
fn arity_error(func: &str, want: usize, found: usize) -> Stop {
    Stop::Error(format!("{func}() takes {want} arguments, {found} given"))
}

#[inline(never)]
fn type_error(what: &str, want: &str, found: &Value) -> Stop {
    Stop::Error(format!("{what} must be {want}, found {}", type_name(found)))
}

/// A parameter without a value: reported once where it is declared, so not again here.
#[inline(never)]
fn no_value(param: &str) -> Stop {
    Stop::Unresolved {
        why: format!("parameter '{param}' has no value (none given and no defaultValue)"),
        report: false,
    }
}

#[inline(never)]
fn deployment_time_stop(name: &str, reason: &str) -> Stop {
    unresolved(format!("{name}() {reason}"))
}

fn int_of(n: &serde_json::Number) -> R<i64> {
    n.as_i64()
        .ok_or_else(|| Stop::Error(format!("{n} is not an integer in range")))
}

/// `value.name`: property names match case-insensitively, like every ARM property.
fn member(target: Value, name: &str, optional: bool) -> R<Value> {
    match target {
        Value::Object(mut m) => {
            let key = map_get_ci(&m, name).map(|(k, _)| k.clone());
            match key.and_then(|k| m.remove(&k)) {
                Some(v) => Ok(v),
                None if optional => Ok(Value::Null),
                None => {
                    let mut known: Vec<&str> = m.keys().map(String::as_str).take(12).collect();
                    known.sort_unstable();
                    err(format!(
                        "the object has no property '{name}' (it has: {})",
                        known.join(", ")
                    ))
                }
            }
        }
        Value::Null if optional => Ok(Value::Null),
        other => err(format!(
            "cannot read property '{name}' of a {}",
            type_name(&other)
        )),
    }
}

/// `value[index]`: arrays by integer, objects by (case-insensitive) key.
fn index_value(target: Value, index: &Value, optional: bool) -> R<Value> {
    match (target, index) {
        (Value::Array(mut items), Value::Number(n)) => {
            let len = items.len();
            match n.as_i64().and_then(|i| usize::try_from(i).ok()) {
                Some(i) if i < len => Ok(items.swap_remove(i)),
                _ if optional => Ok(Value::Null),
                _ => err(format!("index {n} is outside the array (length {len})")),
            }
        }
        (Value::Object(m), Value::String(k)) => member(Value::Object(m), k, optional),
        (Value::Null, _) if optional => Ok(Value::Null),
        (t, i) => err(format!(
            "cannot index a {} with a {}",
            type_name(&t),
            type_name(i)
        )),
    }
}

impl Env {
    pub fn root(options: &Options) -> Env {
        Env {
            subscription_id: options.subscription_id.clone(),
            resource_group: options.resource_group.clone(),
            location: options.location.clone(),
            deployment_name: "palisade-deployment".to_string(),
            management_group: "palisade-management-group".to_string(),
        }
    }
}

/// Why [`crate::evaluate_standalone`] gave no value. Values only known at deployment time are not
/// errors: they come back as the unresolved marker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The text between the brackets is not an expression; `expression` is the (clipped) text.
    #[error("{expression}: invalid expression: {error}")]
    Syntax {
        expression: String,
        error: SyntaxError,
    },
    /// A well-formed expression that ARM would reject (types, arity, undeclared parameters, ..):
    /// the first error reported, with the expression text in front.
    #[error("{0}")]
    Invalid(String),
}

/// See [`crate::evaluate_standalone`].
pub(crate) fn evaluate_standalone(text: &str) -> Result<Value, EvalError> {
    // Parsed here as well as in `Eval::string` so that a syntax error keeps its structure instead
    // of arriving as a problem's text.
    if text.len() >= 2 && text.starts_with('[') && text.ends_with(']') && !text.starts_with("[[") {
        if let Err(error) = parser::parse(&text[1..text.len() - 1]) {
            return Err(EvalError::Syntax {
                expression: clip(text),
                error,
            });
        }
    }
    let options = Options::default();
    let ctx = Ctx::new(&options);
    let empty = Value::Object(Map::new());
    let value = {
        let scope =
            Scope::from_template(&ctx, &empty, "", Env::root(&options), None, HashMap::new());
        Eval::new(&ctx, &scope).string(text, "", Loops::default())
    };
    match ctx
        .into_problems()
        .into_iter()
        .find(|p| p.severity == Severity::Error)
    {
        Some(p) => Err(EvalError::Invalid(p.message)),
        None => Ok(value),
    }
}
