#!/usr/bin/env python3
"""Drives the Azure stand-in (crates/provision/tests/support/azure_standin.rs) with
Microsoft's official client, azure-mgmt-authorization, so a stand-in that drifts from the
real Resource Manager API fails. The stand-in exists because Azure's APIs cannot run on
this machine.

usage: azure_check.py URL CA_FILE SUBSCRIPTION
environment: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET (a client the stand-in
knows: the token comes from its Entra ID token endpoint) and AZURE_PRINCIPAL_ID (a user in
its directory). Exits non-zero on the first mismatch.
"""

import os
import sys
import time
import uuid

import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


class StaticCredential:
    """A credential handing out one token (azure-identity is not installed)."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    url, ca_file, subscription = sys.argv[1:]
    os.environ["REQUESTS_CA_BUNDLE"] = ca_file
    tenant = os.environ["AZURE_TENANT_ID"]
    principal = os.environ["AZURE_PRINCIPAL_ID"]

    r = requests.post(
        f"{url}/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": os.environ["AZURE_CLIENT_ID"],
            "client_secret": os.environ["AZURE_CLIENT_SECRET"],
            "scope": f"{url}/.default",
        },
        verify=ca_file,
        timeout=10,
    )
    if r.status_code != 200 or r.json().get("token_type") != "Bearer":
        fail(f"token endpoint answered {r.status_code} {r.text}")
    token = r.json()["access_token"]

    client = AuthorizationManagementClient(
        credential=StaticCredential(token), subscription_id=subscription, base_url=url
    )
    scope = f"/subscriptions/{subscription}"
    role_id = f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    name = str(uuid.uuid4())
    params = RoleAssignmentCreateParameters(
        role_definition_id=role_id, principal_id=principal, principal_type="User"
    )

    created = client.role_assignments.create(scope, name, params)
    print(f"created {created.name} {created.role_definition_id} for {created.principal_id}")
    if created.name != name or created.principal_id != principal:
        fail(f"create answered {created}")
    if created.scope.lower() != scope.lower() or created.principal_type != "User":
        fail(f"create answered scope {created.scope}, type {created.principal_type}")

    try:
        client.role_assignments.create(scope, str(uuid.uuid4()), params)
        fail("a duplicate assignment was created")
    except HttpResponseError as e:
        if e.status_code != 409 or e.error is None or e.error.code != "RoleAssignmentExists":
            fail(f"a duplicate answered {e.status_code} {e.error and e.error.code}")
        print(f"duplicate refused: {e.error.code}")

    listed = list(client.role_assignments.list_for_scope(scope, filter="atScope()"))
    names = [a.name for a in listed]
    print(f"listed {len(listed)} assignments at {scope}")
    if name not in names:
        fail(f"{name} not listed: {names}")
    if len(names) != len(set(names)):
        fail(f"pages repeat assignments: {names}")

    got = client.role_assignments.get(scope, name)
    if got.id != f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}":
        fail(f"get answered id {got.id}")

    deleted = client.role_assignments.delete(scope, name)
    if deleted is None or deleted.name != name:
        fail(f"delete answered {deleted}")
    again = client.role_assignments.delete(scope, name)
    if again is not None:
        fail(f"deleting again answered {again}")
    print(f"deleted {name}")
    try:
        client.role_assignments.get(scope, name)
        fail("a deleted assignment is still there")
    except ResourceNotFoundError as e:
        print(f"gone: {e.error.code if e.error else e.status_code}")

    stranger = AuthorizationManagementClient(
        credential=StaticCredential("not-a-token"), subscription_id=subscription, base_url=url
    )
    try:
        list(stranger.role_assignments.list_for_scope(scope))
        fail("an unknown token was accepted")
    except ClientAuthenticationError as e:
        print(f"unknown token refused: {e.status_code}")
    print("OK")


if __name__ == "__main__":
    main()
