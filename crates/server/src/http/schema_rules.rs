//! What each field and query parameter accepts, stated in the OpenAPI document: name and
//! duration patterns, free-text character classes and lengths, enums, required reasons. The
//! rules themselves live in `pedm-core` (its validators, with the patterns of
//! [`pedm_core::syntax`] checked against them); this table only publishes them, so that a
//! client generated from the document, or schemathesis, knows what the server will take.
//!
//! What a schema cannot state (a Cedar policy that does not parse, a task template naming an
//! unknown parameter, a duration beyond a role's maximum) is answered with 422.

use pedm_core::ssh;
use pedm_core::syntax::{
    DURATION, EMAIL, LIFETIME, LINE, LOOPBACK_REDIRECT, MAX_COMMENT_CHARS, MAX_LINE_CHARS, NAME,
    OPTIONAL_LINE, PARAM_NAME, SCOPE_ITEM, TEXT, UNRESERVED,
};
use serde_json::{Value, json};

/// What a string accepts.
#[derive(Clone, Copy)]
enum Rule {
    Name,
    Duration,
    Lifetime,
    /// Optional one line of free text, at most this many characters (blank means absent).
    OptionalLine(usize),
    /// Required one line of free text.
    Line(usize),
    /// Required free text that may span lines.
    Text(usize),
    /// A window start: a duration back from now or an RFC 3339 time.
    Since,
    /// An RFC 3339 time.
    Time,
    /// URL-safe characters (RFC 3986 unreserved), between these lengths.
    Unreserved(usize, usize),
    /// Any string of this many characters.
    Length(usize, usize),
    /// The CLI's loopback redirect for single sign-on.
    LoopbackRedirect,
    /// A mail address.
    Email,
    /// A mail address, or empty (to remove it).
    EmailOrEmpty,
    /// One of these values.
    OneOf(&'static [&'static str]),
    /// The schema of this component (an enum the document already has).
    Component(&'static str),
}

impl Rule {
    fn schema(self) -> Value {
        match self {
            Rule::Name => json!({"type": "string", "pattern": NAME}),
            Rule::Duration => json!({"type": "string", "pattern": DURATION}),
            Rule::Lifetime => json!({"type": "string", "pattern": LIFETIME}),
            Rule::OptionalLine(max) => {
                json!({"type": "string", "pattern": OPTIONAL_LINE, "maxLength": max})
            }
            Rule::Line(max) => {
                json!({"type": "string", "pattern": LINE, "minLength": 1, "maxLength": max})
            }
            Rule::Text(max) => {
                json!({"type": "string", "pattern": TEXT, "minLength": 1, "maxLength": max})
            }
            Rule::Since => json!({"anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": DURATION},
                {"type": "string", "maxLength": 0, "description": "empty: the default"},
            ]}),
            Rule::Time => json!({"type": "string", "format": "date-time"}),
            Rule::Unreserved(min, max) => json!({
                "type": "string", "pattern": UNRESERVED, "minLength": min, "maxLength": max,
            }),
            Rule::Length(min, max) => {
                json!({"type": "string", "minLength": min, "maxLength": max})
            }
            Rule::LoopbackRedirect => json!({"type": "string", "pattern": LOOPBACK_REDIRECT}),
            Rule::Email => json!({"type": "string", "pattern": EMAIL, "maxLength": 254}),
            Rule::EmailOrEmpty => json!({"anyOf": [
                {"type": "string", "pattern": EMAIL, "maxLength": 254},
                {"type": "string", "maxLength": 0, "description": "empty: remove the address"},
            ]}),
            Rule::OneOf(values) => json!({"type": "string", "enum": values}),
            Rule::Component(name) => json!({"$ref": format!("#/components/schemas/{name}")}),
        }
    }

    /// The schema of an optional field: the rule's, or null.
    fn nullable(self) -> Value {
        json!({"anyOf": [self.schema(), {"type": "null"}]})
    }
}

const EXPORT_FORMATS: &[&str] = &["jsonl", "csv", "ocsf"];
/// An absolute path without control characters (a `..` component is refused with 422).
const WATCH_PATH: &str = r"^/[^\u0000-\u001F\u007F-\u009F]*$";

/// `(component, property, rule)`: fields of request bodies (an optional field also takes null
/// where the document says so).
fn fields(max_justification: usize) -> Vec<(&'static str, &'static str, Rule)> {
    use Rule::*;
    vec![
        ("CreateUser", "name", Name),
        ("CreateUser", "display_name", OptionalLine(200)),
        ("CreateUser", "email", Email),
        ("UpdateUser", "email", EmailOrEmpty),
        ("CreateGroup", "name", Name),
        ("CreateGroup", "description", OptionalLine(500)),
        ("CreateToken", "user", Name),
        ("CreateToken", "description", OptionalLine(200)),
        ("CreateToken", "expires_in", Lifetime),
        ("CreateTarget", "name", Name),
        ("CreateTarget", "description", OptionalLine(500)),
        ("CreateRole", "name", Name),
        ("CreateRole", "description", OptionalLine(500)),
        ("CreateRole", "max_duration", Duration),
        ("UpdateRole", "description", OptionalLine(500)),
        ("UpdateRole", "max_duration", Duration),
        ("CreateRole", "run_as", Name),
        ("SshAccess", "force_command", Line(ssh::MAX_FORCE_COMMAND)),
        (
            "IssueSshCertificate",
            "public_key",
            Line(ssh::MAX_PUBLIC_KEY),
        ),
        ("SignHostKey", "public_key", Line(ssh::MAX_PUBLIC_KEY)),
        ("SignHostKey", "validity", Duration),
        ("CreateRequest", "target", Name),
        ("CreateRequest", "role", Name),
        ("CreateRequest", "duration", Duration),
        ("CreateRequest", "justification", Text(max_justification)),
        ("CreateRequest", "task", OptionalLine(MAX_LINE_CHARS)),
        ("CreateRequest", "ticket", OptionalLine(MAX_LINE_CHARS)),
        ("CreateRequest", "start", Time),
        ("ExtendGrant", "by", Duration),
        ("ExtendGrant", "justification", Text(max_justification)),
        ("ExtendGrant", "ticket", OptionalLine(MAX_LINE_CHARS)),
        ("Decide", "comment", OptionalLine(MAX_COMMENT_CHARS)),
        ("DecideProposal", "comment", OptionalLine(MAX_COMMENT_CHARS)),
        ("Reason", "reason", OptionalLine(500)),
        ("ApplyPolicies", "comment", OptionalLine(500)),
        ("PolicySource", "name", Line(200)),
        ("SimulatePolicies", "since", Since),
        ("CreateDelegation", "user", Name),
        ("CreateDelegation", "group", Name),
        ("CreateDelegation", "expires_in", Duration),
        ("CreateDelegation", "reason", OptionalLine(500)),
        ("DelegateGrant", "to", Name),
        ("DelegateGrant", "duration", Duration),
        ("DelegateGrant", "reason", OptionalLine(500)),
        ("CheckTask", "target", Name),
        ("TaskDef", "name", Name),
        ("TaskDef", "run_as", Name),
        ("TaskDef", "description", OptionalLine(500)),
        ("CreateExternalUser", "name", Name),
        ("CreateScimToken", "name", Name),
        ("CreateLock", "user", Name),
        ("CreateLock", "host", Name),
        ("CreateLock", "duration", Duration),
        ("CreateLock", "reason", Line(500)),
        ("SubjectAct", "user", Name),
        ("SubjectAct", "reason", Line(500)),
        ("ReleaseHold", "user", Name),
        ("KillSession", "reason", Line(500)),
        ("StartReview", "name", Name),
        ("StartReview", "due", Duration),
        ("StartReview", "reviewers", Name),
        ("StartReview", "escalate_to", Name),
        ("DecideItem", "comment", Line(1000)),
        ("CreateExternalUser", "display_name", OptionalLine(200)),
        ("CreateExternalUser", "sponsor", Name),
        ("CreateExternalUser", "expires", Duration),
        ("ExtendExternalUser", "expires", Duration),
        ("SsoStart", "provider", Name),
        ("SsoStart", "redirect_uri", LoopbackRedirect),
        ("SsoStart", "state", Unreserved(32, 128)),
        ("SsoStart", "code_challenge", Unreserved(43, 43)),
        ("SsoFinish", "state", Length(0, 128)),
        ("SsoFinish", "code", Length(1, 2048)),
        ("SsoFinish", "code_verifier", Unreserved(43, 128)),
        ("SsoDeviceStart", "provider", Name),
        ("SsoDevicePoll", "handle", Unreserved(1, 128)),
        ("SlackLink", "code", Length(1, 256)),
        ("EnrollDevice", "name", Line(64)),
        ("Posture", "os", Line(pedm_core::workload::MAX_CLAIM_CHARS)),
        (
            "Posture",
            "os_version",
            Line(pedm_core::workload::MAX_CLAIM_CHARS),
        ),
    ]
}

/// `(path, query parameter, rule)`.
const PARAMS: &[(&str, &str, Rule)] = &[
    ("/api/v1/requests", "since", Rule::Time),
    ("/api/v1/requests", "state", Rule::Component("RequestState")),
    ("/api/v1/grants", "state", Rule::Component("GrantState")),
    ("/api/v1/audit/events", "since", Rule::Time),
    ("/api/v1/audit/events", "until", Rule::Time),
    (
        "/api/v1/audit/export",
        "format",
        Rule::OneOf(EXPORT_FORMATS),
    ),
    ("/api/v1/reports/elevations", "since", Rule::Since),
    (
        "/api/v1/policies/suggestions/commands",
        "since",
        Rule::Since,
    ),
    (
        "/api/v1/policies/suggestions/commands",
        "target",
        Rule::Name,
    ),
    ("/api/v1/policies/suggestions/commands", "role", Rule::Name),
    ("/api/v1/reports/external", "since", Rule::Since),
    ("/api/v1/privacy/subjects/{user}", "user", Rule::Name),
    ("/api/v1/audit/archive", "before", Rule::Time),
];

/// `(path, body property, rule)`: operations whose shared body type has a field that this
/// operation requires (a reason to revoke, a comment to deny).
const REQUIRED_IN: &[(&str, &str, Rule)] = &[
    (
        "/api/v1/requests/{id}/deny",
        "comment",
        Rule::Line(MAX_COMMENT_CHARS),
    ),
    ("/api/v1/requests/{id}/review", "comment", Rule::Line(2000)),
    (
        "/api/v1/policies/proposals/{id}/reject",
        "comment",
        Rule::Line(MAX_COMMENT_CHARS),
    ),
    ("/api/v1/grants/{id}/revoke", "reason", Rule::Line(500)),
    ("/api/v1/delegations/{id}/revoke", "reason", Rule::Line(500)),
];

/// Rules across fields, and of arrays and maps, as `(pointer, key, value)` set in the document.
fn structure() -> Vec<(&'static str, &'static str, Value)> {
    let name = Rule::Name.schema();
    let target = "/components/schemas/CreateTarget/properties/labels";
    let task_param = "/components/schemas/TaskParam/properties";
    let limits = "/components/schemas/SessionLimits/properties";
    let watch_path = json!({"type": "string", "pattern": WATCH_PATH,
        "maxLength": pedm_core::model::MAX_WATCH_PATH_LEN});
    use pedm_core::model::SessionLimits as L;
    vec![
        // Pruning starts at the first event.
        (
            "/components/schemas/PruneAudit/properties",
            "through",
            json!({"type": "integer", "minimum": 1, "maximum": 9_007_199_254_740_991i64}),
        ),
        (
            "/components/schemas/PruneAudit/properties",
            "archive_sha256",
            json!({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
        ),
        // Resource limits within what a host can enforce.
        (
            limits,
            "memory_bytes",
            json!({"type": ["integer", "null"],
            "minimum": L::MIN_MEMORY_BYTES, "maximum": L::MAX_MEMORY_BYTES}),
        ),
        (
            limits,
            "pids",
            json!({"type": ["integer", "null"], "minimum": 1, "maximum": L::MAX_PIDS}),
        ),
        (
            limits,
            "cpu_percent",
            json!({"type": ["integer", "null"],
            "minimum": 1, "maximum": L::MAX_CPU_PERCENT}),
        ),
        // A host certificate names 1 to 32 hosts, as clients type them.
        (
            "/components/schemas/SignHostKey/properties/principals",
            "items",
            json!({"type": "string", "pattern": ssh::HOST_NAME}),
        ),
        (
            "/components/schemas/SignHostKey/properties/principals",
            "minItems",
            json!(1),
        ),
        (
            "/components/schemas/SignHostKey/properties/principals",
            "maxItems",
            json!(ssh::MAX_HOST_PRINCIPALS),
        ),
        // Watched paths: absolute, a bounded number.
        (
            "/components/schemas/CreateRole/properties/watch_paths",
            "items",
            watch_path.clone(),
        ),
        (
            "/components/schemas/CreateRole/properties/watch_paths",
            "maxItems",
            json!(pedm_core::model::MAX_WATCH_PATHS),
        ),
        (
            "/components/schemas/UpdateRole/properties/watch_paths",
            "items",
            watch_path,
        ),
        (
            "/components/schemas/UpdateRole/properties/watch_paths",
            "maxItems",
            json!(pedm_core::model::MAX_WATCH_PATHS),
        ),
        // A lock stops exactly one user or host.
        (
            "/components/schemas/CreateLock",
            "oneOf",
            json!([
                {"required": ["user"], "properties": {"user": name}},
                {"required": ["host"], "properties": {"host": name}},
            ]),
        ),
        // A delegation goes to exactly one user or group, for at least one task or role.
        (
            "/components/schemas/CreateDelegation",
            "allOf",
            json!([
                {"oneOf": [
                    {"required": ["user"], "properties": {"user": name}},
                    {"required": ["group"], "properties": {"group": name}},
                ]},
                {"oneOf": [
                    {"required": ["expires_at"], "properties": {"expires_at": {"type": "string"}}},
                    {"required": ["expires_in"], "properties": {"expires_in": {"type": "string"}}},
                ]},
                {"anyOf": [
                    {"required": ["tasks"], "properties": {"tasks": {"minItems": 1}}},
                    {"required": ["roles"], "properties": {"roles": {"minItems": 1}}},
                ]},
            ]),
        ),
        (
            "/components/schemas/StartReview/properties/targets",
            "items",
            json!({"type": "string", "pattern": SCOPE_ITEM}),
        ),
        (
            "/components/schemas/StartReview/properties/targets",
            "maxItems",
            json!(pedm_core::delegation::MAX_SCOPE_ITEMS),
        ),
        (
            "/components/schemas/StartReview/properties/unused_days",
            "minimum",
            json!(1),
        ),
        (
            "/components/schemas/StartReview/properties/unused_days",
            "maximum",
            json!(3650),
        ),
        (
            "/components/schemas/CreateDelegation/properties/tasks",
            "items",
            name.clone(),
        ),
        (
            "/components/schemas/CreateDelegation/properties/roles",
            "items",
            name.clone(),
        ),
        (
            "/components/schemas/CreateDelegation/properties/scope",
            "items",
            json!({"type": "string", "pattern": SCOPE_ITEM}),
        ),
        (
            "/components/schemas/CreateDelegation/properties/scope",
            "minItems",
            json!(1),
        ),
        (
            "/components/schemas/CreateDelegation/properties/scope",
            "maxItems",
            json!(pedm_core::delegation::MAX_SCOPE_ITEMS),
        ),
        (
            "/components/schemas/ApplyPolicies/properties/sources",
            "minItems",
            json!(1),
        ),
        (
            "/components/schemas/SimulatePolicies/properties/sources",
            "minItems",
            json!(1),
        ),
        (target, "propertyNames", name.clone()),
        (
            target,
            "additionalProperties",
            json!({"type": "string", "pattern": OPTIONAL_LINE, "maxLength": 128}),
        ),
        (
            task_param,
            "name",
            json!({"type": "string", "pattern": PARAM_NAME}),
        ),
        (
            task_param,
            "max_len",
            json!({"anyOf": [
                {"type": "integer", "minimum": 1, "maximum": pedm_core::delegation::MAX_PARAM_LEN},
                {"type": "null"},
            ]}),
        ),
    ]
}

/// Writes the rules into the document (`doc` is the serialised OpenAPI document).
pub fn apply(doc: &mut Value, max_justification: usize) {
    for (pointer, key, value) in structure() {
        let Some(slot) = doc.pointer_mut(pointer).and_then(Value::as_object_mut) else {
            panic!("schema rule names {pointer}, which the document lacks");
        };
        slot.insert(key.to_string(), value);
    }
    for (component, property, rule) in fields(max_justification) {
        let Some(slot) = doc.pointer_mut(&format!(
            "/components/schemas/{component}/properties/{property}"
        )) else {
            panic!("schema rule names {component}.{property}, which the document lacks");
        };
        let description = slot.get("description").cloned();
        let nullable = slot["type"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "null"));
        *slot = if nullable {
            rule.nullable()
        } else {
            rule.schema()
        };
        if let Some(d) = description {
            slot["description"] = d;
        }
    }
    // Counts are read as u32: say so rather than int32.
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for op in paths.values_mut().filter_map(|p| p.get_mut("get")) {
            let params = op.get_mut("parameters").and_then(Value::as_array_mut);
            for p in params
                .into_iter()
                .flatten()
                .filter(|p| p["name"] == "limit")
            {
                p["schema"] = json!({"type": "integer", "minimum": 0, "maximum": u32::MAX});
            }
        }
    }
    for (path, name, rule) in PARAMS {
        let params = doc
            .pointer_mut(&format!("/paths/{}/get/parameters", escape(path)))
            .and_then(Value::as_array_mut);
        let Some(param) = params.and_then(|ps| ps.iter_mut().find(|p| p["name"] == *name)) else {
            panic!("schema rule names parameter {name} of {path}, which the document lacks");
        };
        param["schema"] = rule.schema();
    }
    for (path, property, rule) in REQUIRED_IN {
        let Some(content) = doc.pointer_mut(&format!(
            "/paths/{}/post/requestBody/content/application~1json",
            escape(path)
        )) else {
            panic!("schema rule names the body of {path}, which the document lacks");
        };
        content["schema"] = json!({
            "type": "object",
            "properties": {*property: rule.schema()},
            "required": [property],
            "additionalProperties": false,
        });
        if let Some(body) = doc.pointer_mut(&format!("/paths/{}/post/requestBody", escape(path))) {
            body["required"] = json!(true);
        }
    }
}

/// A path as one JSON-pointer token.
fn escape(path: &str) -> String {
    path.replace('~', "~0").replace('/', "~1")
}
