//! SCIM discovery (RFC 7644 §4): what pedm's SCIM endpoint supports, its resource types and
//! the schemas of the attributes it keeps. Clients (and `scim2 test`) read these to learn
//! which attributes are writable.

use super::{MAX_PAGE, SResult, Scim, ScimErr, ok};
use axum::extract::Path;
use axum::response::Response;
use pedm_api::scim::*;
use pedm_core::scim::ScimError;
use serde_json::{Value, json};

const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RT_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

pub(super) async fn service_provider_config(Scim(_): Scim) -> SResult<Response> {
    ok(json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/pedm/pedm#scim-provisioning",
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_PAGE },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": false },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A SCIM token from `pedm scim token create NAME`",
            "primary": true,
        }],
        "meta": { "resourceType": "ServiceProviderConfig",
                  "location": "/scim/v2/ServiceProviderConfig" },
    }))
}

fn resource_type_docs() -> Vec<Value> {
    vec![
        json!({
            "schemas": [RT_SCHEMA], "id": "User", "name": "User", "endpoint": "/Users",
            "description": "pedm users (never administrators)", "schema": USER_SCHEMA,
            "schemaExtensions": [],
            "meta": { "resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/User" },
        }),
        json!({
            "schemas": [RT_SCHEMA], "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "pedm groups, as Cedar policies name them", "schema": GROUP_SCHEMA,
            "schemaExtensions": [],
            "meta": { "resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/Group" },
        }),
    ]
}

fn attr(name: &str, ty: &str, required: bool, mutability: &str, uniqueness: &str) -> Value {
    json!({
        "name": name, "type": ty, "multiValued": false, "description": name,
        "required": required, "caseExact": false, "mutability": mutability,
        "returned": "default", "uniqueness": uniqueness,
    })
}

fn refs(name: &str, mutability: &str, ref_type: &str) -> Value {
    json!({
        "name": name, "type": "complex", "multiValued": true, "description": name,
        "required": false, "mutability": mutability, "returned": "default",
        "uniqueness": "none",
        "subAttributes": [
            {
                "name": "value", "type": "string", "multiValued": false,
                "description": "id", "required": false, "caseExact": false,
                "mutability": "immutable", "returned": "default", "uniqueness": "none",
            },
            {
                "name": "$ref", "type": "reference", "referenceTypes": [ref_type],
                "multiValued": false, "description": "URI", "required": false,
                "caseExact": false, "mutability": "immutable", "returned": "default",
                "uniqueness": "none",
            },
        ],
    })
}

fn schema_docs() -> Vec<Value> {
    vec![
        json!({
            "schemas": [SCHEMA_SCHEMA], "id": USER_SCHEMA, "name": "User",
            "description": "A pedm user",
            "attributes": [
                attr("userName", "string", true, "immutable", "server"),
                attr("displayName", "string", false, "readWrite", "none"),
                attr("active", "boolean", false, "readWrite", "none"),
                refs("groups", "readOnly", "Group"),
            ],
            "meta": { "resourceType": "Schema", "location": format!("/scim/v2/Schemas/{USER_SCHEMA}") },
        }),
        json!({
            "schemas": [SCHEMA_SCHEMA], "id": GROUP_SCHEMA, "name": "Group",
            "description": "A pedm group",
            "attributes": [
                attr("displayName", "string", true, "immutable", "server"),
                refs("members", "readWrite", "User"),
            ],
            "meta": { "resourceType": "Schema", "location": format!("/scim/v2/Schemas/{GROUP_SCHEMA}") },
        }),
    ]
}

fn list_of(items: Vec<Value>) -> SResult<Response> {
    ok(json!({
        "schemas": [LIST_SCHEMA], "totalResults": items.len(), "startIndex": 1,
        "itemsPerPage": items.len(), "Resources": items,
    }))
}

pub(super) async fn resource_types(Scim(_): Scim) -> SResult<Response> {
    list_of(resource_type_docs())
}

pub(super) async fn resource_type(Scim(_): Scim, Path(id): Path<String>) -> SResult<Response> {
    match resource_type_docs()
        .into_iter()
        .find(|r| r["id"] == id.as_str())
    {
        Some(r) => ok(r),
        None => Err(ScimErr(ScimError::NotFound(format!("ResourceType {id}")))),
    }
}

pub(super) async fn schemas(Scim(_): Scim) -> SResult<Response> {
    list_of(schema_docs())
}

pub(super) async fn schema(Scim(_): Scim, Path(id): Path<String>) -> SResult<Response> {
    match schema_docs().into_iter().find(|r| r["id"] == id.as_str()) {
        Some(r) => ok(r),
        None => Err(ScimErr(ScimError::NotFound(format!("Schema {id}")))),
    }
}
