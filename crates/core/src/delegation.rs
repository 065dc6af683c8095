//! Tasks and delegations: plain data and the pure rules on it.
//!
//! A **task** ([`TaskDef`]) is an admin-defined privileged operation: a command template
//! (`argv`, absolute program path first, and an optional fixed `stdin`) with typed parameters.
//! A parameter appears as `{name}` inside an argv element and is substituted into that one
//! element; there is no shell and no other interpolation (`{{` and `}}` are literal braces).
//! [`TaskDef::render`] checks the values (unknown or missing parameters, kind, pattern as a full
//! match, protected values, a leading `-`, control characters, length) and builds the argv and
//! stdin: the server uses it to check a run, and the host agent to run one.
//!
//! A **delegation** ([`Delegation`]) lets a user or a group run some tasks and/or be granted
//! some roles without approvers, on a scope of targets (names or label selectors), until a
//! deadline; with `redelegate` its delegate may pass on a subset of it (never more). The rules
//! that need the store live in `service::delegation`; what can be decided on the data alone is
//! here (scope matching and containment, liveness).

use crate::model::Target;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use uuid::Uuid;

/// The id of a delegation.
pub type DelegationId = Uuid;

/// Longest value a parameter may take when its definition says nothing.
pub const DEFAULT_MAX_LEN: u32 = 256;
/// Longest value any parameter may take.
pub const MAX_PARAM_LEN: u32 = 4096;
const MAX_PARAMS: usize = 32;
const MAX_ARGV: usize = 64;
const MAX_ELEMENT_BYTES: usize = 4096;
const MAX_STDIN_BYTES: usize = 64 * 1024;
const MAX_TEXT: usize = 500;
/// Compiled size limit of one parameter pattern (the `regex` crate matches in linear time;
/// this bounds memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

// ------------------------------------------------------------------------------ tasks

/// What kind of value a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    #[default]
    String,
    /// A decimal integer (`i64`).
    Integer,
    /// One of `values`.
    Enum,
}

/// One typed parameter of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskParam {
    /// `[a-z_][a-z0-9_]*`, referenced as `{name}` in the template.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub kind: ParamKind,
    /// The allowed values of an `enum` parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// A regular expression (`regex` crate syntax) the whole value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Values refused whatever the pattern says (compared ignoring ASCII case), e.g. `root`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<String>,
    /// Longest value in characters (default 256, at most 4096).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::syntax::whole_number"
    )]
    pub max_len: Option<u32>,
    /// Default true. An optional parameter may only be a whole argv element, which is left
    /// out when the parameter is not given.
    #[serde(default = "yes")]
    pub required: bool,
    /// Never logged or audited (e.g. a new password); allowed only in `stdin` (an argv is
    /// visible to every local user).
    #[serde(default)]
    pub secret: bool,
    /// Accept values starting with `-` (refused by default: they could be read as options).
    #[serde(default)]
    pub allow_leading_dash: bool,
}

fn yes() -> bool {
    true
}

fn default_run_as() -> String {
    "root".into()
}

/// A privileged operation with validated parameters, run on a host by its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The targets the task applies to: names (`web1`) and label selectors (`env=prod`,
    /// `env=prod,team=web`: every label must match).
    pub targets: Vec<String>,
    /// The account the command runs as (default `root`).
    #[serde(default = "default_run_as")]
    pub run_as: String,
    /// The command template: absolute program path first (no parameter in it), then the
    /// arguments, where `{name}` stands for a parameter's value.
    pub argv: Vec<String>,
    /// A fixed input template written to the command's stdin, e.g. `"{user}:{password}\n"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default)]
    pub params: Vec<TaskParam>,
    /// Set by the server when the task is defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defined_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defined_at: Option<Timestamp>,
}

/// A task ready to run: the exact argv (program first) and stdin. Never passed to a shell.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedTask {
    pub argv: Vec<String>,
    /// May hold secret values: never log it.
    pub stdin: Option<String>,
}

impl fmt::Debug for RenderedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedTask")
            .field("argv", &self.argv)
            .field("stdin", &self.stdin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a task definition or a run's parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// A parameter value (or name) is refused; `param` names it.
    #[error("parameter {param}: {reason}")]
    Param { param: String, reason: String },
    /// The definition itself is wrong; `field` names the part (`argv[0]`, `params[1].pattern`).
    #[error("task {field}: {reason}")]
    Definition { field: String, reason: String },
}

impl TaskError {
    fn param(param: &str, reason: impl Into<String>) -> Self {
        TaskError::Param {
            param: if valid_param_name(param) {
                param.to_string()
            } else {
                format!("{param:?}")
            },
            reason: reason.into(),
        }
    }

    fn def(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TaskError::Definition {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<TaskError> for crate::Error {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Param { param, reason } => {
                crate::Error::unprocessable(format!("parameter {param}"), reason)
            }
            TaskError::Definition { field, reason } => {
                crate::Error::unprocessable(format!("task {field}"), reason)
            }
        }
    }
}

pub(crate) fn valid_param_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Characters refused in any parameter value: control characters (newline, tab, NUL,
/// escape...), Unicode line separators and direction overrides (they make a value read
/// differently than it is).
fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Param(String),
}

/// Splits a template into literal text and `{name}` references.
fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = vec![];
    let mut lit = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err("has an unclosed '{' (write {{ for a literal brace)".into());
                        }
                    }
                }
                if !valid_param_name(&name) {
                    return Err(format!(
                        "{{{name}}} is not a parameter reference (names are lowercase letters, \
                         digits and '_'; write {{{{ for a literal brace)"
                    ));
                }
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(Piece::Param(name));
            }
            '}' => return Err("has an unmatched '}' (write }} for a literal brace)".into()),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

fn compile_pattern(p: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{p})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("does not compile: {e}"))
}

fn check_text(field: &str, v: &Option<String>) -> Result<(), TaskError> {
    if let Some(v) = v
        && (v.chars().count() > MAX_TEXT || v.chars().any(|c| c.is_control()))
    {
        return Err(TaskError::def(
            field,
            format!("must be at most {MAX_TEXT} printable characters"),
        ));
    }
    Ok(())
}

impl TaskDef {
    fn param_def(&self, name: &str) -> Option<&TaskParam> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Checks the definition: names, targets, the program path (absolute, fixed), every
    /// `{x}` naming a declared parameter and every parameter used, patterns that compile,
    /// secret parameters only in stdin, optional parameters only as whole argv elements.
    pub fn validate(&self) -> Result<(), TaskError> {
        crate::model::validate_name("task", &self.name)
            .map_err(|e| TaskError::def("name", e.to_string()))?;
        check_text("description", &self.description)?;
        parse_scope(&self.targets).map_err(|e| TaskError::def("targets", e.to_string()))?;
        crate::model::validate_name("run_as", &self.run_as)
            .map_err(|e| TaskError::def("run_as", e.to_string()))?;

        if self.params.len() > MAX_PARAMS {
            return Err(TaskError::def(
                "params",
                format!("at most {MAX_PARAMS} parameters"),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.params.iter().enumerate() {
            let f = |what: &str| format!("params[{i}].{what}");
            if !valid_param_name(&p.name) {
                return Err(TaskError::def(
                    f("name"),
                    format!(
                        "{:?} is not a valid parameter name: lowercase letters, digits and '_', \
                         not starting with a digit",
                        p.name
                    ),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(TaskError::def(
                    f("name"),
                    format!("parameter {} is declared twice", p.name),
                ));
            }
            check_text(&f("description"), &p.description)?;
            match (p.kind, p.values.is_empty()) {
                (ParamKind::Enum, true) => {
                    return Err(TaskError::def(
                        f("values"),
                        "an enum parameter needs its values",
                    ));
                }
                (ParamKind::String | ParamKind::Integer, false) => {
                    return Err(TaskError::def(
                        f("values"),
                        "only an enum parameter has values",
                    ));
                }
                _ => {}
            }
            for v in p.values.iter().chain(&p.protected) {
                if v.is_empty() || v.chars().any(forbidden_char) || v.len() > MAX_TEXT {
                    return Err(TaskError::def(
                        f("values"),
                        format!(
                            "{v:?} is not a usable value (empty, too long or control characters)"
                        ),
                    ));
                }
            }
            if let Some(pat) = &p.pattern {
                compile_pattern(pat).map_err(|e| TaskError::def(f("pattern"), e))?;
            }
            if let Some(n) = p.max_len
                && !(1..=MAX_PARAM_LEN).contains(&n)
            {
                return Err(TaskError::def(
                    f("max_len"),
                    format!("must be between 1 and {MAX_PARAM_LEN}"),
                ));
            }
        }

        if self.argv.is_empty() || self.argv.len() > MAX_ARGV {
            return Err(TaskError::def(
                "argv",
                format!("needs the program and at most {} arguments", MAX_ARGV - 1),
            ));
        }
        let program = &self.argv[0];
        if !program.starts_with('/') {
            return Err(TaskError::def(
                "argv[0]",
                format!("{program:?} is not an absolute path: the program must be fixed"),
            ));
        }
        let mut used = BTreeSet::new();
        for (i, el) in self.argv.iter().enumerate() {
            let field = format!("argv[{i}]");
            if el.len() > MAX_ELEMENT_BYTES || el.chars().any(forbidden_char) {
                return Err(TaskError::def(
                    field,
                    format!("must be at most {MAX_ELEMENT_BYTES} bytes without control characters"),
                ));
            }
            let pieces = parse_template(el).map_err(|e| TaskError::def(&field, e))?;
            for piece in &pieces {
                let Piece::Param(name) = piece else { continue };
                let Some(p) = self.param_def(name) else {
                    return Err(TaskError::def(
                        field,
                        format!("{{{name}}} names no declared parameter"),
                    ));
                };
                if i == 0 {
                    return Err(TaskError::def(
                        field,
                        "the program path may not contain a parameter",
                    ));
                }
                if p.secret {
                    return Err(TaskError::def(
                        field,
                        format!(
                            "secret parameter {name} may only appear in stdin (an argv is visible \
                             to every user of the host)"
                        ),
                    ));
                }
                if !p.required && pieces.len() != 1 {
                    return Err(TaskError::def(
                        field,
                        format!("optional parameter {name} may only be a whole argument"),
                    ));
                }
                used.insert(name.clone());
            }
        }
        if let Some(stdin) = &self.stdin {
            if stdin.len() > MAX_STDIN_BYTES || stdin.contains('\0') {
                return Err(TaskError::def(
                    "stdin",
                    format!("must be at most {MAX_STDIN_BYTES} bytes without NUL"),
                ));
            }
            for piece in parse_template(stdin).map_err(|e| TaskError::def("stdin", e))? {
                let Piece::Param(name) = piece else { continue };
                let Some(p) = self.param_def(&name) else {
                    return Err(TaskError::def(
                        "stdin",
                        format!("{{{name}}} names no declared parameter"),
                    ));
                };
                if !p.required {
                    return Err(TaskError::def(
                        "stdin",
                        format!("optional parameter {name} may not appear in stdin"),
                    ));
                }
                used.insert(name);
            }
        }
        if let Some(p) = self.params.iter().find(|p| !used.contains(&p.name)) {
            return Err(TaskError::def(
                "params",
                format!("parameter {} is declared but used nowhere", p.name),
            ));
        }
        Ok(())
    }

    /// Checks the values and builds the command. Every refusal names the parameter and why;
    /// the value of a secret parameter is never part of an error.
    pub fn render(&self, params: &BTreeMap<String, String>) -> Result<RenderedTask, TaskError> {
        self.validate()?;
        for name in params.keys() {
            if self.param_def(name).is_none() {
                let takes: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                return Err(TaskError::param(
                    name,
                    format!(
                        "is not a parameter of task {} (it takes: {})",
                        self.name,
                        if takes.is_empty() {
                            "none".to_string()
                        } else {
                            takes.join(", ")
                        }
                    ),
                ));
            }
        }
        for p in &self.params {
            match params.get(&p.name) {
                None if p.required => return Err(TaskError::param(&p.name, "is required")),
                None => {}
                Some(v) => self
                    .check_value(p, v)
                    .map_err(|why| TaskError::param(&p.name, why))?,
            }
        }
        let fill = |pieces: Vec<Piece>| -> String {
            pieces
                .into_iter()
                .map(|piece| match piece {
                    Piece::Lit(s) => s,
                    Piece::Param(n) => params.get(&n).cloned().unwrap_or_default(),
                })
                .collect()
        };
        let mut argv = Vec::with_capacity(self.argv.len());
        for el in &self.argv {
            let pieces = parse_template(el).map_err(|e| TaskError::def("argv", e))?;
            if let [Piece::Param(n)] = pieces.as_slice()
                && !params.contains_key(n)
            {
                // An optional parameter not given: its argument is left out.
                continue;
            }
            argv.push(fill(pieces));
        }
        let stdin = match &self.stdin {
            Some(t) => Some(fill(
                parse_template(t).map_err(|e| TaskError::def("stdin", e))?,
            )),
            None => None,
        };
        Ok(RenderedTask { argv, stdin })
    }

    fn check_value(&self, p: &TaskParam, v: &str) -> Result<(), String> {
        let shown = if p.secret {
            "the value".to_string()
        } else {
            format!("{v:?}")
        };
        if v.is_empty() {
            return Err("is empty".into());
        }
        if v.chars().any(forbidden_char) {
            return Err(
                "contains a control character (newline, tab, NUL, escape or a Unicode line or \
                 direction mark)"
                    .into(),
            );
        }
        let max = p.max_len.unwrap_or(DEFAULT_MAX_LEN).min(MAX_PARAM_LEN) as usize;
        let len = v.chars().count();
        if len > max {
            return Err(format!(
                "is {len} characters long, more than the {max} allowed"
            ));
        }
        if v.starts_with('-') && !p.allow_leading_dash {
            return Err(format!(
                "{shown} starts with '-': {} could read it as an option",
                self.argv[0]
            ));
        }
        match p.kind {
            ParamKind::String => {}
            ParamKind::Integer => {
                if v.parse::<i64>().is_err() {
                    return Err(format!("{shown} is not an integer"));
                }
            }
            ParamKind::Enum => {
                if !p.values.iter().any(|x| x == v) {
                    return Err(format!("{shown} is not one of: {}", p.values.join(", ")));
                }
            }
        }
        if let Some(pat) = &p.pattern {
            let re = compile_pattern(pat)?;
            if !re.is_match(v) {
                return Err(format!("{shown} does not match the pattern {pat}"));
            }
        }
        if p.protected.iter().any(|x| x.eq_ignore_ascii_case(v)) {
            return Err(format!(
                "{shown} is protected: task {} may not be run on it",
                self.name
            ));
        }
        Ok(())
    }

    /// The parameters as they may be logged and audited: secret values replaced.
    pub fn redacted(&self, params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        params
            .iter()
            .map(|(k, v)| {
                let secret = self.param_def(k).is_none_or(|p| p.secret);
                (
                    k.clone(),
                    if secret {
                        "<redacted>".into()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    }

    /// Whether the task applies to `target` (its `targets` name it or select it by label).
    pub fn applies_to(&self, target: &Target) -> bool {
        parse_scope(&self.targets).is_ok_and(|s| scope_matches(&s, target))
    }
}

// ------------------------------------------------------------------------------ scope

/// One entry of a scope: a target name, or a label selector (every label must match).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScopeItem {
    Target(String),
    Labels(BTreeMap<String, String>),
}

impl ScopeItem {
    /// `web1`, `env=prod` or `env=prod,team=web`.
    pub fn parse(s: &str) -> Result<ScopeItem, ScopeError> {
        let syntax = ScopeError::Syntax;
        if !s.contains('=') {
            crate::model::validate_name("target", s).map_err(|e| syntax(e.to_string()))?;
            return Ok(ScopeItem::Target(s.to_string()));
        }
        let mut labels = BTreeMap::new();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| syntax(format!("{part:?} in {s:?} is not KEY=VALUE")))?;
            crate::model::validate_name("label key", k).map_err(|e| syntax(e.to_string()))?;
            if v.chars().count() > 128 || v.chars().any(|c| c.is_control()) {
                return Err(syntax(format!(
                    "value of label {k} in {s:?} must be at most 128 printable characters"
                )));
            }
            if labels.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ScopeError::Contradiction(format!(
                    "label {k} appears twice in {s:?}"
                )));
            }
        }
        Ok(ScopeItem::Labels(labels))
    }

    pub fn matches(&self, t: &Target) -> bool {
        match self {
            ScopeItem::Target(n) => *n == t.name,
            ScopeItem::Labels(want) => want.iter().all(|(k, v)| t.labels.get(k) == Some(v)),
        }
    }
}

impl fmt::Display for ScopeItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeItem::Target(n) => f.write_str(n),
            ScopeItem::Labels(l) => {
                let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// Parses a non-empty scope of at most 100 entries.
/// Most entries a scope may have.
pub const MAX_SCOPE_ITEMS: usize = 100;

/// Why a scope was refused: its syntax (what the API contract states), or a selector that is
/// well-formed but contradicts itself (one label asked for twice).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Contradiction(String),
}

pub fn parse_scope(items: &[String]) -> Result<Vec<ScopeItem>, ScopeError> {
    if items.is_empty() {
        return Err(ScopeError::Syntax(
            "needs at least one target name or label selector (env=prod)".into(),
        ));
    }
    if items.len() > MAX_SCOPE_ITEMS {
        return Err(ScopeError::Syntax(format!(
            "has more than {MAX_SCOPE_ITEMS} entries"
        )));
    }
    items.iter().map(|s| ScopeItem::parse(s)).collect()
}

pub fn scope_matches(scope: &[ScopeItem], t: &Target) -> bool {
    scope.iter().any(|i| i.matches(t))
}

/// The entries of `child` that are not within `parent`: a target name is within a parent
/// entry naming it or selecting it by its labels; a label selector is within a parent
/// selector that asks for a subset of its labels (so every target it can ever match, the
/// parent matches too).
pub fn scope_excess(
    parent: &[ScopeItem],
    child: &[ScopeItem],
    target: impl Fn(&str) -> Option<Target>,
) -> Vec<ScopeItem> {
    child
        .iter()
        .filter(|c| {
            let covered = match c {
                ScopeItem::Target(n) => {
                    let t = target(n);
                    parent.iter().any(|p| match p {
                        ScopeItem::Target(pn) => pn == n,
                        ScopeItem::Labels(_) => t.as_ref().is_some_and(|t| p.matches(t)),
                    })
                }
                ScopeItem::Labels(cl) => parent.iter().any(|p| match p {
                    ScopeItem::Labels(pl) => pl.iter().all(|(k, v)| cl.get(k) == Some(v)),
                    ScopeItem::Target(_) => false,
                }),
            };
            !covered
        })
        .cloned()
        .collect()
}

// ------------------------------------------------------------------------------ delegations

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DelegateKind {
    User,
    Group,
}

/// Who a delegation is for: one user or every member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delegatee {
    pub kind: DelegateKind,
    pub name: String,
}

impl Delegatee {
    /// Whether `user` (a member of `groups`) is this delegate.
    pub fn covers(&self, user: &str, groups: &[String]) -> bool {
        match self.kind {
            DelegateKind::User => self.name == user,
            DelegateKind::Group => groups.contains(&self.name),
        }
    }
}

impl fmt::Display for Delegatee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DelegateKind::User => write!(f, "user {}", self.name),
            DelegateKind::Group => write!(f, "group {}", self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DelegationState {
    #[default]
    Active,
    Expired,
    Revoked,
}

impl DelegationState {
    pub fn as_str(self) -> &'static str {
        match self {
            DelegationState::Active => "active",
            DelegationState::Expired => "expired",
            DelegationState::Revoked => "revoked",
        }
    }
}

impl fmt::Display for DelegationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delegator lets a delegate run `tasks` and be granted `roles` without approvers, on the
/// targets of `scope`, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delegation {
    pub id: Uuid,
    /// The delegation this one was passed on from (re-delegation).
    pub parent: Option<Uuid>,
    pub delegator: String,
    pub delegate: Delegatee,
    /// Task names.
    pub tasks: Vec<String>,
    /// Role names, on whichever targets of the scope have them.
    pub roles: Vec<String>,
    /// Target names and label selectors.
    pub scope: Vec<String>,
    pub expires_at: Timestamp,
    /// The delegate may pass on a subset.
    pub redelegate: bool,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    /// As of the moment it was read.
    #[serde(default)]
    pub state: DelegationState,
}

impl Delegation {
    /// Not revoked and not past its deadline.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    pub fn state_at(&self, now: Timestamp) -> DelegationState {
        if self.revoked_at.is_some() {
            DelegationState::Revoked
        } else if now >= self.expires_at {
            DelegationState::Expired
        } else {
            DelegationState::Active
        }
    }

    /// The same, with `state` as of `now`.
    pub fn at(mut self, now: Timestamp) -> Self {
        self.state = self.state_at(now);
        self
    }

    /// Whether `target` is within the scope.
    pub fn in_scope(&self, target: &Target) -> bool {
        parse_scope(&self.scope).is_ok_and(|s| scope_matches(&s, target))
    }
}

/// Where a grant came from when it was not approved the usual way: a delegation that
/// pre-approved it, or the grant it was handed on from (peer delegation; it ends with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantLink {
    pub grant_id: Uuid,
    pub delegation: Option<Uuid>,
    pub parent_grant: Option<Uuid>,
}

#[derive(Debug, Clone, Default)]
pub struct DelegationFilter {
    /// Only delegations not revoked and not expired at this moment.
    pub live_at: Option<Timestamp>,
    /// Only those passed on from this one.
    pub parent: Option<Uuid>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct GrantLinkFilter {
    pub delegation: Option<Uuid>,
    pub parent_grant: Option<Uuid>,
}

/// Row changes about tasks and delegations (see [`crate::store::Write::Delegation`]).
#[derive(Debug, Clone)]
pub enum DelegationWrite {
    /// Stores a task definition. Without `replace` fails with AlreadyExists if the name is
    /// taken; with it, replaces the definition (or creates it).
    DefineTask { task: TaskDef, replace: bool },
    /// Fails with AlreadyExists if the id is taken, NotFound if the parent is absent.
    Insert(Delegation),
    /// Fails with Conflict if already revoked, NotFound if absent.
    Revoke {
        id: Uuid,
        at: Timestamp,
        by: String,
        reason: String,
    },
    /// Fails with AlreadyExists if the grant has a link already, NotFound if the grant, the
    /// delegation or the parent grant is absent.
    LinkGrant(GrantLink),
}

// ------------------------------------------------------------------------------ agent snapshot

/// A live delegation that lets people run a task on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDelegation {
    pub delegation: Uuid,
    pub delegate: Delegatee,
    /// The users it covers now (the user, or the group's members), disabled users left out.
    pub users: Vec<String>,
    /// The earliest deadline along its chain of delegations.
    pub expires_at: Timestamp,
}

/// A task that applies to a host, with the delegations that allow running it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostTask {
    pub task: TaskDef,
    pub delegations: Vec<TaskDelegation>,
}

impl HostTask {
    /// The delegation that lets `user` run the task at `now` (the one lasting longest).
    pub fn allowed_for(&self, user: &str, now: Timestamp) -> Option<Uuid> {
        self.delegations
            .iter()
            .filter(|d| now < d.expires_at && d.users.iter().any(|u| u == user))
            .max_by_key(|d| d.expires_at)
            .map(|d| d.delegation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset_password() -> TaskDef {
        serde_json::from_value(serde_json::json!({
            "name": "reset-password",
            "targets": ["env=prod"],
            "argv": ["/usr/sbin/chpasswd"],
            "stdin": "{user}:{password}\n",
            "params": [
                {"name": "user", "pattern": "[a-z_][a-z0-9_-]*", "max_len": 32,
                 "protected": ["root", "admin"]},
                {"name": "password", "secret": true, "max_len": 128},
            ],
        }))
        .unwrap()
    }

    fn p(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_stdin_and_argv() {
        let t = reset_password();
        t.validate().unwrap();
        assert_eq!(t.run_as, "root");
        let r = t
            .render(&p(&[("user", "bob"), ("password", "s3cret!")]))
            .unwrap();
        assert_eq!(r.argv, vec!["/usr/sbin/chpasswd"]);
        assert_eq!(r.stdin.as_deref(), Some("bob:s3cret!\n"));
        assert!(!format!("{r:?}").contains("s3cret"));
        assert_eq!(
            t.redacted(&p(&[("user", "bob"), ("password", "x")]))["password"],
            "<redacted>"
        );
    }

    #[test]
    fn refuses_bad_values_naming_the_parameter() {
        let t = reset_password();
        let cases = [
            (
                p(&[("user", "-oProxyCommand"), ("password", "x")]),
                "user",
                "'-'",
            ),
            (
                p(&[("user", "root"), ("password", "x")]),
                "user",
                "protected",
            ),
            (
                p(&[("user", "bob; rm -rf /"), ("password", "x")]),
                "user",
                "pattern",
            ),
            (
                p(&[("user", "bob\nroot"), ("password", "x")]),
                "user",
                "control",
            ),
            (
                p(&[("user", "bob"), ("password", "a\nroot:x")]),
                "password",
                "control",
            ),
            (
                p(&[("user", "bob\0"), ("password", "x")]),
                "user",
                "control",
            ),
            (
                p(&[("user", &"a".repeat(33)), ("password", "x")]),
                "user",
                "33 characters",
            ),
            (p(&[("user", "bob")]), "password", "required"),
            (
                p(&[("user", "bob"), ("password", "x"), ("shell", "y")]),
                "shell",
                "not a parameter",
            ),
            (p(&[("user", ""), ("password", "x")]), "user", "empty"),
        ];
        for (params, name, why) in cases {
            let e = t.render(&params).expect_err(why);
            let TaskError::Param { param, reason } = &e else {
                panic!("{e}")
            };
            assert_eq!(param, name, "{e}");
            assert!(reason.contains(why), "{e}");
        }
        // A secret value never shows in an error.
        let e = t
            .render(&p(&[("user", "bob"), ("password", "-hunter2")]))
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn substitutes_inside_one_element_only() {
        let t: TaskDef = serde_json::from_value(serde_json::json!({
            "name": "restart",
            "targets": ["web1"],
            "argv": ["/bin/systemctl", "restart", "{unit}.service", "{{literal}}", "{flag}"],
            "params": [
                {"name": "unit", "kind": "enum", "values": ["nginx", "php-fpm"]},
                {"name": "flag", "required": false, "allow_leading_dash": true,
                 "kind": "enum", "values": ["--no-block"]},
            ],
        }))
        .unwrap();
        let r = t.render(&p(&[("unit", "nginx")])).unwrap();
        assert_eq!(
            r.argv,
            vec!["/bin/systemctl", "restart", "nginx.service", "{literal}"]
        );
        let r = t
            .render(&p(&[("unit", "php-fpm"), ("flag", "--no-block")]))
            .unwrap();
        assert_eq!(r.argv.len(), 5);
        assert!(t.render(&p(&[("unit", "sshd")])).is_err());
    }

    #[test]
    fn integers() {
        let t: TaskDef = serde_json::from_value(serde_json::json!({
            "name": "nice", "targets": ["web1"], "argv": ["/usr/bin/renice", "-n", "{n}"],
            "params": [{"name": "n", "kind": "integer"}],
        }))
        .unwrap();
        assert!(t.render(&p(&[("n", "10")])).is_ok());
        assert!(t.render(&p(&[("n", "ten")])).is_err());
        assert!(t.render(&p(&[("n", "-5")])).is_err());
    }

    #[test]
    fn definitions_are_checked() {
        let base = reset_password();
        let bad = |f: &dyn Fn(&mut TaskDef), field: &str| {
            let mut t = base.clone();
            f(&mut t);
            match t.validate() {
                Err(TaskError::Definition { field: got, .. }) => {
                    assert!(got.starts_with(field), "{got} vs {field}")
                }
                other => panic!("{field}: {other:?}"),
            }
        };
        bad(&|t| t.argv[0] = "chpasswd".into(), "argv[0]");
        bad(&|t| t.argv[0] = "/bin/{user}".into(), "argv[0]");
        bad(&|t| t.argv.push("{nobody}".into()), "argv[1]");
        bad(&|t| t.argv.push("{password}".into()), "argv[1]");
        bad(&|t| t.argv.push("{unclosed".into()), "argv[1]");
        bad(&|t| t.argv.push("stray}".into()), "argv[1]");
        bad(
            &|t| t.params[0].pattern = Some("(".into()),
            "params[0].pattern",
        );
        bad(&|t| t.params[0].name = "User".into(), "params[0].name");
        bad(&|t| t.stdin = Some("{user}\n".into()), "params");
        bad(&|t| t.argv.clear(), "argv");
        bad(&|t| t.targets.clear(), "targets");
        bad(&|t| t.params[0].kind = ParamKind::Enum, "params[0].values");
        bad(&|t| t.params[0].max_len = Some(0), "params[0].max_len");
        bad(&|t| t.name = "bad name".into(), "name");
    }

    fn target(name: &str, labels: &[(&str, &str)]) -> Target {
        Target {
            name: name.into(),
            kind: crate::model::TargetKind::Host,
            description: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn scopes() {
        let web1 = target("web1", &[("env", "prod"), ("team", "web")]);
        let s = |v: &[&str]| parse_scope(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let prod = s(&["env=prod"]).unwrap();
        assert!(scope_matches(&prod, &web1));
        assert!(!scope_matches(&s(&["env=staging"]).unwrap(), &web1));
        assert!(scope_matches(&s(&["db1", "web1"]).unwrap(), &web1));
        assert!(scope_matches(&s(&["env=prod,team=web"]).unwrap(), &web1));
        assert!(!scope_matches(&s(&["env=prod,team=db"]).unwrap(), &web1));
        assert!(s(&[]).is_err());
        assert!(s(&["bad name"]).is_err());
        assert!(s(&["env"]).is_ok());

        let lookup = |n: &str| (n == "web1").then(|| web1.clone());
        let narrower = s(&["web1", "env=prod,team=web"]).unwrap();
        assert!(scope_excess(&prod, &narrower, lookup).is_empty());
        let wider = s(&["env=staging", "web2", "team=web"]).unwrap();
        assert_eq!(scope_excess(&prod, &wider, lookup).len(), 3);
        assert_eq!(
            scope_excess(&s(&["web1"]).unwrap(), &prod, lookup),
            prod.clone()
        );
    }
}
